//! The validated settings: what the rest of the keeper reads, one type per section of the file.

use super::parse::parse_instance_url;
use super::secrets::KeySource;
use crate::client_auth::AssertionKey;
use crate::domain::endpoint::{Family, RegistryRule};
use crate::domain::plan::Policy;
use crate::journal::JournalKey;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// `instance.companion_path` when the config does not say: the path the update set in
/// `migrations-docs/` creates (a global-scope Scripted REST API with namespace `snok` and API ID
/// `oauth_keeper`).
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
    /// `[lease]`: the instance-wide keeper lease.
    pub lease: LeaseSettings,
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

/// The keys a `[report]` table leaves out. Without the table there is no reporting at all.
impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            table: "em_event".into(),
            source: "sn-oauth-keeper".into(),
            node: "sn-oauth-keeper".into(),
        }
    }
}

/// `[instance]`.
#[derive(Debug, Clone)]
pub struct InstanceSettings {
    /// Base URL, without a trailing slash.
    pub url: Url,
    /// The integration user (with the client-credentials grant: the OAuth client's OAuth
    /// Application User, whom the token acts as).
    pub username: String,
    /// The companion's path, e.g. `/api/snok/oauth_keeper`.
    pub companion_path: String,
    /// Total deadline of one HTTP call to the instance.
    pub timeout: Duration,
    /// Rows per Table API page (`sysparm_limit`).
    pub page_size: usize,
    /// How every call proves who the integration user is.
    pub auth: InstanceAuthSettings,
}

impl InstanceSettings {
    /// `instance.timeout` when the config does not say.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// `instance.page_size` when the config does not say.
    pub const DEFAULT_PAGE_SIZE: usize = 1_000;

    /// Every secret the keeper holds for the instance: the password, or the OAuth client's
    /// secret (and the password with the password grant).
    pub fn secrets(&self) -> Vec<&SecretString> {
        match &self.auth {
            InstanceAuthSettings::Basic { password } => vec![password],
            InstanceAuthSettings::OAuth {
                client_secret,
                grant: InstanceGrant::ClientCredentials,
                ..
            } => vec![client_secret],
            InstanceAuthSettings::OAuth {
                client_secret,
                grant: InstanceGrant::Password { password },
                ..
            } => vec![client_secret, password],
        }
    }
}

/// `instance.auth`: how the keeper authenticates to the instance.
#[derive(Debug, Clone)]
pub enum InstanceAuthSettings {
    /// HTTP Basic with the username and password on every call. Subject to the 2026 Basic-auth
    /// restriction: the user must be Web Service Access Only (or hold
    /// `snc_basic_auth_api_access`).
    Basic {
        /// The integration user's password.
        password: SecretString,
    },
    /// A bearer token from the instance's `/oauth_token.do`, so no call but the token request
    /// carries a credential.
    OAuth {
        /// `instance.client_id`: the OAuth API endpoint's client id (System OAuth > Application
        /// Registry).
        client_id: String,
        /// Its client secret.
        client_secret: SecretString,
        /// `instance.oauth_grant`: how the token is obtained.
        grant: InstanceGrant,
    },
}

/// `instance.oauth_grant`: the grant the keeper asks the instance's OAuth server for.
#[derive(Debug, Clone)]
pub enum InstanceGrant {
    /// `client_credentials` (the default): the client id and secret alone; the token acts as
    /// the client's OAuth Application User. Needs Washington DC or later with
    /// `glide.oauth.inbound.client.credential.grant_type.enabled = true`.
    ClientCredentials,
    /// `password`: the resource owner password grant, renewed with the refresh-token grant.
    /// RFC 9700 says it MUST NOT be used; kept only behind an explicit setting, warned about
    /// at every start.
    Password {
        /// The integration user's password.
        password: SecretString,
    },
}

/// `[refresh]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshSettings {
    /// Between cycles of `run`.
    pub interval: Duration,
    /// Refresh access tokens expiring sooner than this.
    pub lead_time: Duration,
    /// Refresh anyway when the refresh token was last used longer ago than this.
    pub keepalive: Duration,
    /// Refreshes in flight at once.
    pub concurrency: usize,
    /// Token requests in flight at once to any one token endpoint host (unset in the file: the
    /// same as `concurrency`).
    pub per_host_concurrency: usize,
    /// Total deadline of one token request.
    pub timeout: Duration,
    /// `run`: how long SIGTERM/SIGINT wait for the refreshes in flight before the keeper exits
    /// anyway. Longer than one refresh (its token request with retries and its write-back).
    pub shutdown_grace: Duration,
}

/// Every `[refresh]` key the config leaves out.
impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            interval: Duration::from_secs(3 * 60),
            lead_time: Duration::from_secs(10 * 60),
            keepalive: Duration::from_secs(7 * 86_400),
            concurrency: 8,
            per_host_concurrency: 8,
            timeout: Duration::from_secs(30),
            // Three token attempts at the 30 s deadline, the backoff between them, and the
            // write-back.
            shutdown_grace: Duration::from_secs(90),
        }
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// The directory of the journal.
    pub dir: PathBuf,
    /// The journal key's source.
    pub key: KeySource,
}

/// Every `[state]` key the config leaves out: the packages' state directory, the key in
/// `SN_OAUTH_KEEPER_KEY`.
impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            dir: PathBuf::from("/var/lib/sn-oauth-keeper"),
            key: KeySource::default(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// Where `run` serves `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
}

/// `server.listen` when the config does not say: loopback only, so the endpoints reach beyond
/// the machine only when a config asks for it.
impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `[lease]`: one keeper per instance, enforced by the instance (the companion's `/lease`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The lease's life; renewed at a third of it. Longer than 1.5 × `refresh.timeout`, so that
    /// a renewed lease always leaves more than one token request's deadline.
    pub ttl: Duration,
}

/// `lease.ttl = "60s"`.
impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            ttl: Duration::from_secs(60),
        }
    }
}

impl LeaseSettings {
    /// The shortest `lease.ttl`.
    pub const MIN_TTL: Duration = Duration::from_secs(10);
    /// The longest `lease.ttl`.
    pub const MAX_TTL: Duration = Duration::from_secs(600);
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
    /// `token_url`: the pinned token endpoint. When set, every token request of the registry
    /// goes there, whatever the instance's `oauth_entity.token_url` says.
    pub token_url: Option<Url>,
}

impl RegistrySettings {
    /// What routing needs to know of it: the pin, whether the keeper holds the client's
    /// secret or key itself, and which hosts its `kind` allows.
    pub fn rule(&self) -> RegistryRule {
        RegistryRule {
            name: self.name.clone(),
            pin: self.token_url.clone(),
            keeper_secret: self.client_secret.is_some() || self.assertion_key.is_some(),
            family: match self.kind {
                Some(TokenEndpointKind::EntraV1 | TokenEndpointKind::EntraV2) => Family::Entra,
                Some(TokenEndpointKind::Generic) | None => Family::Any,
            },
        }
    }
}

/// `registry[].default_expires_in` when the config does not say, and for a registry without a
/// `[[registry]]` entry.
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3_600);
/// `registry[].refresh_token_lifetime` when the config does not say, and for a registry without
/// a `[[registry]]` entry: Entra's inactivity window, the refresh row's new `expires` after a
/// rotation when the provider does not say.
pub const DEFAULT_REFRESH_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

impl Settings {
    /// The overrides for a registry: the `[[registry]]` named by its sys_id, else the one named
    /// by its name. (Which registries share a name only the estate knows: the routes of a
    /// cycle, [`crate::domain::endpoint::Routes`], hold those back.)
    pub fn registry(&self, name: &str, sys_id: &str) -> Option<&RegistrySettings> {
        self.registries
            .iter()
            .find(|r| r.name == sys_id)
            .or_else(|| self.registries.iter().find(|r| r.name == name))
    }

    /// Every `[[registry]]` as routing reads it, in file order.
    pub fn registry_rules(&self) -> Vec<RegistryRule> {
        self.registries.iter().map(RegistrySettings::rule).collect()
    }
}

impl Settings {
    /// Settings for a local instance (the simulator) with the defaults of a config file
    /// everywhere else, but for the admin server, which gets any free loopback port: what `demo`
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
                companion_path: companion_path.to_string(),
                timeout: InstanceSettings::DEFAULT_TIMEOUT,
                page_size: InstanceSettings::DEFAULT_PAGE_SIZE,
                auth: InstanceAuthSettings::Basic {
                    password: SecretString::from(password.to_string()),
                },
            },
            refresh: RefreshSettings::default(),
            state: StateSettings {
                dir: state_dir,
                key: KeySource::Inline(key),
            },
            server: ServerSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            lease: LeaseSettings::default(),
            registries: Vec::new(),
            report: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_settings_take_the_defaults_of_a_config_file() {
        let key = JournalKey::random().unwrap();
        let s = Settings::local(
            "http://127.0.0.1:8080",
            "u",
            "p",
            "/api/x",
            "/tmp/s".into(),
            key,
        )
        .unwrap();
        assert_eq!(s.refresh, RefreshSettings::default());
        assert_eq!(s.instance.timeout, InstanceSettings::DEFAULT_TIMEOUT);
        assert_eq!(s.instance.page_size, InstanceSettings::DEFAULT_PAGE_SIZE);
        assert!(matches!(
            s.instance.auth,
            InstanceAuthSettings::Basic { .. }
        ));
        assert_eq!(s.server.listen.port(), 0, "any free port, never 9464");
    }
}
