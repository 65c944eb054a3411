//! The validated settings: what the rest of the keeper reads, one type per section of the file.

use super::parse::parse_instance_url;
use super::secrets::{JournalKey, KeySource};
use crate::client_auth::AssertionKey;
use crate::domain::plan::Policy;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The companion's default path: the one the update set in `migrations-docs/` creates (a
/// global-scope Scripted REST API with namespace `snok` and API ID `oauth_keeper`).
pub const DEFAULT_COMPANION_PATH: &str = "/api/snok/oauth_keeper";

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `client_secret` in the form body (`client_secret_post`).
    #[default]
    Post,
    /// HTTP Basic with form-urlencoded id and secret (`client_secret_basic`, RFC 6749 §2.3.1).
    Basic,
    /// A JWT signed with the registry's private key (`private_key_jwt`, RFC 7523): Entra
    /// certificate credentials. No client secret is sent or needed.
    PrivateKeyJwt,
}

/// What kind of token endpoint a registry talks to; it decides which request parameters carry
/// the wanted access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpointKind {
    /// Microsoft Entra ID v2.0 (`…/{tenant}/oauth2/v2.0/token`): `scope` is always sent, never
    /// `resource` (Entra v2 refuses it, AADSTS901002).
    EntraV2,
    /// Microsoft Entra ID v1 (`…/{tenant}/oauth2/token`): `resource` (the App ID URI) instead of
    /// `scope`.
    EntraV1,
    /// Any RFC 6749 server: `scope` when known, and `resource` (RFC 8707) when configured.
    Generic,
}

impl TokenEndpointKind {
    /// The config spelling (`entra_v2`, `entra_v1`, `generic`).
    pub fn as_str(self) -> &'static str {
        match self {
            TokenEndpointKind::EntraV2 => "entra_v2",
            TokenEndpointKind::EntraV1 => "entra_v1",
            TokenEndpointKind::Generic => "generic",
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file the settings came from (for messages), or a label such as `<demo>`.
    pub source: String,
    /// `[instance]`.
    pub instance: InstanceSettings,
    /// `[refresh]`.
    pub refresh: RefreshSettings,
    /// `[state]`.
    pub state: StateSettings,
    /// `[server]`.
    pub server: ServerSettings,
    /// `[[registry]]`, in file order.
    pub registries: Vec<RegistrySettings>,
    /// `[report]`: status events on the instance; `None` when the table is absent.
    pub report: Option<ReportSettings>,
}

/// `[report]`: where state changes are reported on the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSettings {
    /// The table events are created in (`em_event`, Event Management).
    pub table: String,
    /// The events' `source`.
    pub source: String,
    /// The events' `node`: which keeper reports (e.g. the host it runs on).
    pub node: String,
}

/// `[instance]`.
#[derive(Debug, Clone)]
pub struct InstanceSettings {
    /// Base URL, without a trailing slash.
    pub url: Url,
    /// The integration user.
    pub username: String,
    /// Its password.
    pub password: SecretString,
    /// The companion's path, e.g. `/api/snok/oauth_keeper`.
    pub companion_path: String,
    /// Total deadline of one HTTP call to the instance.
    pub timeout: Duration,
    /// Rows per Table API page (`sysparm_limit`).
    pub page_size: usize,
    /// How every call proves who the integration user is.
    pub auth: InstanceAuthSettings,
}

/// `instance.auth`: how the keeper authenticates to the instance.
#[derive(Debug, Clone, Default)]
pub enum InstanceAuthSettings {
    /// HTTP Basic with the username and password on every call. Subject to the 2026 Basic-auth
    /// restriction: the user must be Web Service Access Only (or hold
    /// `snc_basic_auth_api_access`).
    #[default]
    Basic,
    /// A bearer token from the instance's `/oauth_token.do` (password grant, renewed with the
    /// refresh-token grant), so no call but the token request carries the password.
    OAuth {
        /// `instance.client_id`: the OAuth API endpoint's client id (System OAuth > Application
        /// Registry).
        client_id: String,
        /// Its client secret.
        client_secret: SecretString,
    },
}

/// `[refresh]`.
#[derive(Debug, Clone, Copy)]
pub struct RefreshSettings {
    /// Between cycles of `run`.
    pub interval: Duration,
    /// Refresh access tokens expiring sooner than this.
    pub lead_time: Duration,
    /// Refresh anyway when the refresh token was last used longer ago than this.
    pub keepalive: Duration,
    /// Refreshes in flight at once.
    pub concurrency: usize,
    /// Token requests in flight at once to any one token endpoint host.
    pub per_host_concurrency: usize,
    /// Total deadline of one token request.
    pub timeout: Duration,
    /// `run`: how long SIGTERM/SIGINT wait for the refreshes in flight before the keeper exits
    /// anyway. Longer than one refresh (its token request with retries and its write-back).
    pub shutdown_grace: Duration,
}

impl RefreshSettings {
    /// The planner's thresholds.
    pub fn policy(&self) -> Policy {
        Policy {
            lead_time: self.lead_time,
            keepalive: self.keepalive,
        }
    }
}

/// `[state]`.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// The directory of the journal.
    pub dir: PathBuf,
    /// The journal key's source.
    pub key: KeySource,
}

/// `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// Where `run` serves `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
}

/// `[[registry]]`: per Application Registry overrides.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// The `oauth_entity` name or sys_id it applies to.
    pub name: String,
    /// A client secret to use instead of the companion's.
    pub client_secret: Option<SecretString>,
    /// The scope to send instead of the refresh row's `scopes`.
    pub scope: Option<String>,
    /// How to authenticate at the token endpoint.
    pub client_auth: ClientAuth,
    /// Access-token lifetime assumed when the provider sends neither `expires_in` nor
    /// `expires_on` (Salesforce).
    pub default_expires_in: Duration,
    /// Refresh-token lifetime written to a rotated refresh row when the provider does not say
    /// (`refresh_token_expires_in`).
    pub refresh_token_lifetime: Duration,
    /// The token endpoint's kind when the config says it; `None`: detected from the token URL
    /// ([`crate::oauth::detect_kind`]).
    pub kind: Option<TokenEndpointKind>,
    /// The `resource` to ask for: Entra v1's App ID URI, or an RFC 8707 resource indicator.
    pub resource: Option<String>,
    /// The signing key and certificate of `client_auth = "private_key_jwt"`, read at load.
    pub assertion_key: Option<Arc<AssertionKey>>,
}

/// `refresh.shutdown_grace` when the config does not say: three token attempts at the default
/// 30 s deadline, the backoff between them, and the write-back.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(90);

/// Defaults for a registry without a `[[registry]]` entry.
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3_600);
/// Entra's inactivity window: the refresh row's new `expires` after a rotation when the provider
/// does not say.
pub const DEFAULT_REFRESH_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

impl Settings {
    /// The overrides for a registry, matched by name or sys_id.
    pub fn registry(&self, name: &str, sys_id: &str) -> Option<&RegistrySettings> {
        self.registries
            .iter()
            .find(|r| r.name == sys_id || r.name == name)
    }
}

impl Settings {
    /// Settings for a local instance (the simulator) with defaults everywhere else: what `demo`
    /// and the tests use. `url` must be a loopback or https URL.
    pub fn local(
        url: &str,
        username: &str,
        password: &str,
        companion_path: &str,
        state_dir: PathBuf,
        key: JournalKey,
    ) -> Result<Settings, String> {
        Ok(Settings {
            source: "<local>".into(),
            instance: InstanceSettings {
                url: parse_instance_url(url)?,
                username: username.to_string(),
                password: SecretString::from(password.to_string()),
                companion_path: companion_path.to_string(),
                timeout: Duration::from_secs(10),
                page_size: 1_000,
                auth: InstanceAuthSettings::Basic,
            },
            refresh: RefreshSettings {
                interval: Duration::from_secs(180),
                lead_time: Duration::from_secs(600),
                keepalive: Duration::from_secs(7 * 86_400),
                concurrency: 8,
                per_host_concurrency: 4,
                timeout: Duration::from_secs(10),
                shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            },
            state: StateSettings {
                dir: state_dir,
                key: KeySource::Inline(key),
            },
            server: ServerSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            registries: Vec::new(),
            report: None,
        })
    }
}
