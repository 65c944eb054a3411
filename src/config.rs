//! Configuration: a TOML file, validated into [`Settings`].
//!
//! Every error names the file and the key (`config.toml: refresh.lead_time: invalid duration …`).
//! Secrets never come from the command line: passwords and keys are read from the environment
//! variable or the file the config names.

use crate::client_auth::{AssertionKey, JwtAlg, KeyError};
use crate::domain::plan::Policy;
use crate::domain::time::parse_duration;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "SN_OAUTH_KEEPER_CONFIG";

/// The companion's default path: the one the update set in `migrations-docs/` creates (a
/// global-scope Scripted REST API with namespace `snok` and API ID `oauth_keeper`).
pub const DEFAULT_COMPANION_PATH: &str = "/api/snok/oauth_keeper";

/// A configuration error; `Display` names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No config file was given.
    #[error("no config file: pass --config FILE or set {CONFIG_ENV}")]
    NoConfigFile,
    /// The file could not be read.
    #[error("{file}: cannot read: {reason}")]
    Unreadable {
        /// The config file.
        file: String,
        /// The I/O error.
        reason: String,
    },
    /// The TOML is malformed or has an unknown key (toml's message names it, with line and column).
    #[error("{file}: {message}")]
    Syntax {
        /// The config file.
        file: String,
        /// toml's message.
        message: String,
    },
    /// A key has a bad or missing value.
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The config file.
        file: String,
        /// The dotted key, e.g. `refresh.lead_time` or `registry[2].client_auth`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Where environment variables come from; tests pass a map instead of touching the process
/// environment (which is `unsafe` to mutate in edition 2024).
pub trait Env {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

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

/// Where the journal key comes from; resolved only by commands that write the journal, so
/// `status` and `check` work without it.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// An environment variable holding the key (64 hex characters or base64 of 32 bytes).
    Env(String),
    /// A file holding the key (raw 32 bytes, 64 hex characters, or base64).
    File(PathBuf),
    /// A key given in-process (the demo).
    Inline(JournalKey),
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

/// A 32-byte journal key.
pub struct JournalKey(SecretBox<[u8; 32]>);

impl Clone for JournalKey {
    fn clone(&self) -> Self {
        JournalKey(SecretBox::new(Box::new(*self.0.expose_secret())))
    }
}

impl fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JournalKey([REDACTED])")
    }
}

impl JournalKey {
    /// A fresh random key (the demo's).
    pub fn random() -> Result<JournalKey, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(JournalKey(SecretBox::new(Box::new(bytes))))
    }

    /// Decodes 64 hex characters, base64 (standard or URL-safe, padded or not) of 32 bytes, or,
    /// from a file, exactly 32 raw bytes. Surrounding whitespace is ignored.
    pub fn decode(raw: &[u8]) -> Result<JournalKey, String> {
        use base64::Engine;
        let text = std::str::from_utf8(raw).map(str::trim).unwrap_or("");
        let mut bytes = [0u8; 32];
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
                let pair = std::str::from_utf8(chunk).map_err(|_| "bad hex".to_string())?;
                bytes[i] = u8::from_str_radix(pair, 16).map_err(|_| "bad hex".to_string())?;
            }
            return Ok(JournalKey(SecretBox::new(Box::new(bytes))));
        }
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for engine in engines {
            if let Ok(decoded) = engine.decode(text)
                && decoded.len() == 32
            {
                bytes.copy_from_slice(&decoded);
                return Ok(JournalKey(SecretBox::new(Box::new(bytes))));
            }
        }
        if raw.len() == 32 {
            bytes.copy_from_slice(raw);
            return Ok(JournalKey(SecretBox::new(Box::new(bytes))));
        }
        Err(
            "the key must be 32 bytes: 64 hex characters or base64 (e.g. `openssl rand -hex 32`)"
                .into(),
        )
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl KeySource {
    /// Reads the key. The error names the key of the config that points to it.
    pub fn resolve(&self, source: &str, env: &dyn Env) -> Result<JournalKey, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: source.to_string(),
            key: key.to_string(),
            message,
        };
        match self {
            KeySource::Inline(key) => Ok(key.clone()),
            KeySource::Env(var) => {
                let value = env
                    .var(var)
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| {
                        invalid(
                            "state.key_env",
                            format!("environment variable {var} is not set or empty"),
                        )
                    })?;
                JournalKey::decode(value.as_bytes())
                    .map_err(|m| invalid("state.key_env", format!("{var}: {m}")))
            }
            KeySource::File(path) => {
                let raw = std::fs::read(path).map_err(|e| {
                    invalid(
                        "state.key_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                JournalKey::decode(&raw)
                    .map_err(|m| invalid("state.key_file", format!("{}: {m}", path.display())))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    instance: Option<RawInstance>,
    #[serde(default)]
    refresh: RawRefresh,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    registry: Vec<RawRegistry>,
    report: Option<RawReport>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    table: Option<String>,
    source: Option<String>,
    node: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    url: Option<String>,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    companion_path: Option<String>,
    timeout: Option<String>,
    page_size: Option<i64>,
    auth: Option<String>,
    client_id: Option<String>,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefresh {
    interval: Option<String>,
    lead_time: Option<String>,
    keepalive: Option<String>,
    concurrency: Option<i64>,
    per_host_concurrency: Option<i64>,
    timeout: Option<String>,
    shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<PathBuf>,
    key_env: Option<String>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    name: Option<String>,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    scope: Option<String>,
    client_auth: Option<String>,
    default_expires_in: Option<String>,
    refresh_token_lifetime: Option<String>,
    private_key_file: Option<PathBuf>,
    certificate_file: Option<PathBuf>,
    jwt_alg: Option<String>,
    kind: Option<String>,
    resource: Option<String>,
}

/// Loads and validates a config file.
pub fn load(path: &Path, env: &dyn Env) -> Result<Settings, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    parse(&text, &file, env)
}

/// Validates config text; `file` is only used in messages.
pub fn parse(text: &str, file: &str, env: &dyn Env) -> Result<Settings, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        message: e.to_string().trim_end().replace('\n', " "),
    })?;
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: file.to_string(),
        key: key.to_string(),
        message,
    };
    let duration = |key: &str, value: Option<&String>, default: &str, min: Duration| {
        let text = value.map_or(default, String::as_str);
        let d = parse_duration(text).map_err(|e| invalid(key, e.to_string()))?;
        if d < min {
            return Err(invalid(
                key,
                format!("{text:?} is too short (at least {}s)", min.as_secs()),
            ));
        }
        Ok(d)
    };

    let inst = raw
        .instance
        .ok_or_else(|| invalid("instance", "the [instance] table is required".into()))?;
    let url_text = inst.url.ok_or_else(|| {
        invalid(
            "instance.url",
            "required (e.g. \"https://acme.service-now.com\")".into(),
        )
    })?;
    let url = parse_instance_url(&url_text).map_err(|m| invalid("instance.url", m))?;
    let username = inst
        .username
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| {
            invalid(
                "instance.username",
                "required: the integration user's user_name".into(),
            )
        })?;
    let password = match (inst.password_env, inst.password_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "instance.password_env",
                "set either password_env or password_file, not both".into(),
            ));
        }
        (None, None) => {
            return Err(invalid(
                "instance.password_env",
                "required: the environment variable holding the password (or password_file)".into(),
            ));
        }
        (Some(var), None) => env
            .var(&var)
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
            .ok_or_else(|| {
                invalid(
                    "instance.password_env",
                    format!("environment variable {var} is not set or empty"),
                )
            })?,
        (None, Some(path)) => expand_path(&path, env)
            .and_then(|p| read_secret_file(&p))
            .map_err(|m| invalid("instance.password_file", m))?,
    };
    let companion_path = inst
        .companion_path
        .unwrap_or_else(|| DEFAULT_COMPANION_PATH.to_string());
    if !companion_path.starts_with('/') || companion_path.contains(['?', '#', ' ']) {
        return Err(invalid(
            "instance.companion_path",
            format!(
                "{companion_path:?} must be a path starting with '/', e.g. \"/api/snok/oauth_keeper\""
            ),
        ));
    }
    let companion_path = companion_path.trim_end_matches('/').to_string();
    let timeout = duration(
        "instance.timeout",
        inst.timeout.as_ref(),
        "30s",
        Duration::from_secs(1),
    )?;
    let page_size = match inst.page_size {
        None => 1_000,
        Some(n) if (1..=10_000).contains(&n) => usize::try_from(n).unwrap_or(1_000),
        Some(n) => {
            return Err(invalid(
                "instance.page_size",
                format!("{n} is out of range (1 to 10000)"),
            ));
        }
    };
    let auth = parse_instance_auth(
        inst.auth.as_deref(),
        inst.client_id,
        inst.client_secret_env,
        inst.client_secret_file,
        env,
    )
    .map_err(|(key, message)| invalid(key, message))?;

    let r = raw.refresh;
    let concurrency = match r.concurrency {
        None => 8,
        Some(n) if (1..=256).contains(&n) => usize::try_from(n).unwrap_or(8),
        Some(n) => {
            return Err(invalid(
                "refresh.concurrency",
                format!("{n} is out of range (1 to 256)"),
            ));
        }
    };
    let per_host_concurrency = match r.per_host_concurrency {
        None => 4,
        Some(n) if (1..=256).contains(&n) => usize::try_from(n).unwrap_or(4),
        Some(n) => {
            return Err(invalid(
                "refresh.per_host_concurrency",
                format!("{n} is out of range (1 to 256)"),
            ));
        }
    };
    let refresh = RefreshSettings {
        interval: duration(
            "refresh.interval",
            r.interval.as_ref(),
            "3m",
            Duration::from_secs(1),
        )?,
        lead_time: duration(
            "refresh.lead_time",
            r.lead_time.as_ref(),
            "10m",
            Duration::ZERO,
        )?,
        keepalive: duration(
            "refresh.keepalive",
            r.keepalive.as_ref(),
            "7d",
            Duration::from_secs(60),
        )?,
        concurrency,
        per_host_concurrency,
        timeout: duration(
            "refresh.timeout",
            r.timeout.as_ref(),
            "30s",
            Duration::from_secs(1),
        )?,
        shutdown_grace: duration(
            "refresh.shutdown_grace",
            r.shutdown_grace.as_ref(),
            "90s",
            Duration::from_secs(1),
        )?,
    };

    let key = match (raw.state.key_env, raw.state.key_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "state.key_env",
                "set either key_env or key_file, not both".into(),
            ));
        }
        (Some(var), None) => KeySource::Env(var),
        (None, Some(path)) => {
            KeySource::File(expand_path(&path, env).map_err(|m| invalid("state.key_file", m))?)
        }
        (None, None) => KeySource::Env("SN_OAUTH_KEEPER_KEY".into()),
    };
    let state = StateSettings {
        dir: match raw.state.dir {
            Some(dir) => expand_path(&dir, env).map_err(|m| invalid("state.dir", m))?,
            None => PathBuf::from("/var/lib/sn-oauth-keeper"),
        },
        key,
    };
    let listen_text = raw.server.listen.unwrap_or_else(|| "127.0.0.1:9464".into());
    let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
        invalid(
            "server.listen",
            format!("{listen_text:?} is not an address:port (e.g. \"127.0.0.1:9464\")"),
        )
    })?;

    let mut registries = Vec::new();
    for (i, reg) in raw.registry.into_iter().enumerate() {
        let key = |k: &str| format!("registry[{i}].{k}");
        let name = reg.name.filter(|n| !n.trim().is_empty()).ok_or_else(|| {
            invalid(
                &key("name"),
                "required: the oauth_entity name or sys_id".into(),
            )
        })?;
        let secret_key = if reg.client_secret_env.is_some() {
            Some("client_secret_env")
        } else if reg.client_secret_file.is_some() {
            Some("client_secret_file")
        } else {
            None
        };
        let client_secret = match (reg.client_secret_env, reg.client_secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &key("client_secret_env"),
                    "set either client_secret_env or client_secret_file, not both".into(),
                ));
            }
            (Some(var), None) => Some(
                env.var(&var)
                    .filter(|v| !v.is_empty())
                    .map(SecretString::from)
                    .ok_or_else(|| {
                        invalid(
                            &key("client_secret_env"),
                            format!("environment variable {var} is not set or empty"),
                        )
                    })?,
            ),
            (None, Some(path)) => Some(
                expand_path(&path, env)
                    .and_then(|p| read_secret_file(&p))
                    .map_err(|m| invalid(&key("client_secret_file"), m))?,
            ),
            (None, None) => None,
        };
        let client_auth = match reg.client_auth.as_deref() {
            None | Some("post") | Some("client_secret_post") => ClientAuth::Post,
            Some("basic") | Some("client_secret_basic") => ClientAuth::Basic,
            Some("private_key_jwt") => ClientAuth::PrivateKeyJwt,
            Some(other) => {
                return Err(invalid(
                    &key("client_auth"),
                    format!("{other:?} is not one of \"post\", \"basic\", \"private_key_jwt\""),
                ));
            }
        };
        let assertion_key = registry_assertion_key(
            client_auth,
            secret_key,
            reg.private_key_file,
            reg.certificate_file,
            reg.jwt_alg.as_deref(),
            env,
        )
        .map_err(|(k, message)| invalid(&key(k), message))?;
        let scope = reg.scope.filter(|s| !s.trim().is_empty());
        let resource = reg.resource.filter(|s| !s.trim().is_empty());
        let kind = registry_kind(reg.kind.as_deref(), scope.is_some(), resource.is_some())
            .map_err(|(k, message)| invalid(&key(k), message))?;
        registries.push(RegistrySettings {
            default_expires_in: duration(
                &key("default_expires_in"),
                reg.default_expires_in.as_ref(),
                "1h",
                Duration::from_secs(60),
            )?,
            refresh_token_lifetime: duration(
                &key("refresh_token_lifetime"),
                reg.refresh_token_lifetime.as_ref(),
                "90d",
                Duration::from_secs(3_600),
            )?,
            name,
            client_secret,
            scope,
            client_auth,
            kind,
            resource,
            assertion_key,
        });
    }

    let report = match raw.report {
        None => None,
        Some(r) => {
            let table = r.table.unwrap_or_else(|| "em_event".to_string());
            if table != "em_event" {
                return Err(invalid(
                    "report.table",
                    format!("{table:?} is not supported; use \"em_event\" (Event Management)"),
                ));
            }
            let text = |key: &str, value: Option<String>, default: &str| {
                let v = value.unwrap_or_else(|| default.to_string());
                if v.trim().is_empty() || v.len() > 100 {
                    Err(invalid(key, "must be 1 to 100 characters".into()))
                } else {
                    Ok(v)
                }
            };
            Some(ReportSettings {
                table,
                source: text("report.source", r.source, "sn-oauth-keeper")?,
                node: text("report.node", r.node, "sn-oauth-keeper")?,
            })
        }
    };
    Ok(Settings {
        source: file.to_string(),
        instance: InstanceSettings {
            url,
            username,
            password,
            companion_path,
            timeout,
            page_size,
            auth,
        },
        refresh,
        state,
        server: ServerSettings { listen },
        registries,
        report,
    })
}

/// The signing key of a `private_key_jwt` registry, read now so a bad file stops the start;
/// keys of that method on another one are a mistake worth naming. An error names the key at
/// fault (relative to the registry).
fn registry_assertion_key(
    client_auth: ClientAuth,
    secret_key: Option<&'static str>,
    private_key_file: Option<PathBuf>,
    certificate_file: Option<PathBuf>,
    jwt_alg: Option<&str>,
    env: &dyn Env,
) -> Result<Option<Arc<AssertionKey>>, (&'static str, String)> {
    if client_auth != ClientAuth::PrivateKeyJwt {
        let stray = [
            ("private_key_file", private_key_file.is_some()),
            ("certificate_file", certificate_file.is_some()),
            ("jwt_alg", jwt_alg.is_some()),
        ];
        if let Some((k, _)) = stray.iter().find(|(_, set)| *set) {
            return Err((
                *k,
                "only used with client_auth = \"private_key_jwt\"; remove it or set client_auth"
                    .into(),
            ));
        }
        return Ok(None);
    }
    if let Some(secret_key) = secret_key {
        return Err((
            secret_key,
            "a client secret is not used with client_auth = \"private_key_jwt\" (the certificate's key signs instead); remove it".into(),
        ));
    }
    let alg = match jwt_alg {
        None => JwtAlg::default(),
        Some(text) => JwtAlg::parse(text).ok_or((
            "jwt_alg",
            format!("{text:?} is not one of \"PS256\", \"RS256\""),
        ))?,
    };
    let key_file = private_key_file.ok_or((
        "private_key_file",
        "required with client_auth = \"private_key_jwt\": the PEM file of the certificate's private key".to_string(),
    ))?;
    let certificate_file = certificate_file.ok_or((
        "certificate_file",
        "required with client_auth = \"private_key_jwt\": the PEM file of the certificate registered at the provider".to_string(),
    ))?;
    let key_file = expand_path(&key_file, env).map_err(|m| ("private_key_file", m))?;
    let certificate_file =
        expand_path(&certificate_file, env).map_err(|m| ("certificate_file", m))?;
    let key = AssertionKey::load(&key_file, &certificate_file, alg).map_err(|e| {
        let k = match e {
            KeyError::ReadCertificate { .. } | KeyError::NoCertificate { .. } => "certificate_file",
            _ => "private_key_file",
        };
        (k, e.to_string())
    })?;
    Ok(Some(Arc::new(key)))
}

/// `registry[].kind`, checked against the keys the kind does not take.
fn registry_kind(
    kind: Option<&str>,
    has_scope: bool,
    has_resource: bool,
) -> Result<Option<TokenEndpointKind>, (&'static str, String)> {
    let kind = match kind {
        None => return Ok(None),
        Some("entra_v2") => TokenEndpointKind::EntraV2,
        Some("entra_v1") => TokenEndpointKind::EntraV1,
        Some("generic") => TokenEndpointKind::Generic,
        Some(other) => {
            return Err((
                "kind",
                format!("{other:?} is not one of \"entra_v2\", \"entra_v1\", \"generic\""),
            ));
        }
    };
    match kind {
        TokenEndpointKind::EntraV2 if has_resource => Err((
            "resource",
            "Entra v2 endpoints refuse `resource` (AADSTS901002); name the resource in `scope`, e.g. \"https://graph.microsoft.com/.default offline_access\"".into(),
        )),
        TokenEndpointKind::EntraV1 if has_scope => Err((
            "scope",
            "Entra v1 endpoints take `resource` (the App ID URI), not `scope`; set resource = \"https://graph.microsoft.com\" instead".into(),
        )),
        _ => Ok(Some(kind)),
    }
}

/// `instance.auth` and the keys that go with it; an error names the key at fault.
fn parse_instance_auth(
    auth: Option<&str>,
    client_id: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    env: &dyn Env,
) -> Result<InstanceAuthSettings, (&'static str, String)> {
    match auth.unwrap_or("basic") {
        "basic" => {
            // Keys of the other mode are a mistake worth naming, not something to ignore.
            if client_id.is_some() || secret_env.is_some() || secret_file.is_some() {
                let key = if client_id.is_some() {
                    "instance.client_id"
                } else if secret_env.is_some() {
                    "instance.client_secret_env"
                } else {
                    "instance.client_secret_file"
                };
                return Err((
                    key,
                    "only used with auth = \"oauth\"; remove it or set instance.auth = \"oauth\""
                        .into(),
                ));
            }
            Ok(InstanceAuthSettings::Basic)
        }
        "oauth" => {
            let client_id = client_id.filter(|c| !c.trim().is_empty()).ok_or((
                "instance.client_id",
                "required with auth = \"oauth\": the client id of the instance's OAuth API endpoint (System OAuth > Application Registry)".to_string(),
            ))?;
            let client_secret = match (secret_env, secret_file) {
                (Some(_), Some(_)) => {
                    return Err((
                        "instance.client_secret_env",
                        "set either client_secret_env or client_secret_file, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err((
                        "instance.client_secret_env",
                        "required with auth = \"oauth\": the environment variable holding the client secret (or client_secret_file)".into(),
                    ));
                }
                (Some(var), None) => env
                    .var(&var)
                    .filter(|v| !v.is_empty())
                    .map(SecretString::from)
                    .ok_or((
                        "instance.client_secret_env",
                        format!("environment variable {var} is not set or empty"),
                    ))?,
                (None, Some(path)) => expand_path(&path, env)
                    .and_then(|p| read_secret_file(&p))
                    .map_err(|m| ("instance.client_secret_file", m))?,
            };
            Ok(InstanceAuthSettings::OAuth {
                client_id,
                client_secret,
            })
        }
        other => Err((
            "instance.auth",
            format!("{other:?} is not one of \"basic\", \"oauth\""),
        )),
    }
}

/// Accepts `https://host[:port]` for any host, `http://` only for loopback hosts (the simulator,
/// a local tunnel): Basic credentials must never cross a network in clear.
pub fn parse_instance_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use username and password_env".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("{text:?} has no host"))?
        .to_string();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => {
            return Err(format!(
                "{text:?}: http:// is accepted only for loopback hosts; use https://"
            ));
        }
        other => {
            return Err(format!(
                "{text:?}: unsupported scheme {other:?}; use https://"
            ));
        }
    }
    let mut url = url;
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Expands `${NAME}` in a path-valued key from the environment, so a config can point into
/// directories only known at start: systemd's `${CREDENTIALS_DIRECTORY}` (`LoadCredential=`),
/// `${STATE_DIRECTORY}`. Only the braced form is expanded; any other `$` is kept. An unset or
/// empty variable is an error rather than a path that silently lands in `/`.
pub fn expand_path(path: &Path, env: &dyn Env) -> Result<PathBuf, String> {
    let Some(text) = path.to_str() else {
        // Not UTF-8: it cannot hold a `${NAME}` we wrote, keep it as it is.
        return Ok(path.to_path_buf());
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{text:?}: unclosed ${{ (write ${{NAME}})"))?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{text:?}: ${{{name}}} is not a variable name (letters, digits, _)"
            ));
        }
        let value = env.var(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            let hint = if name == "CREDENTIALS_DIRECTORY" {
                " (systemd sets it for units with LoadCredential=)"
            } else {
                ""
            };
            format!("{text:?}: environment variable {name} is not set or empty{hint}")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(PathBuf::from(out))
}

fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(SecretString::from(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[instance]
url = "https://acme.service-now.com/"
username = "svc_oauth_keeper"
password_env = "SN_PASSWORD"
companion_path = "/api/x_acme/oauth_keeper"

[refresh]
interval = "3m"
lead_time = "10m"
keepalive = "7d"
concurrency = 8

[state]
dir = "/var/lib/sn-oauth-keeper"
key_env = "SN_OAUTH_KEEPER_KEY"

[server]
listen = "127.0.0.1:9464"

[[registry]]
name = "SharePoint Online"
client_secret_env = "SP_CLIENT_SECRET"
scope = "https://contoso.sharepoint.com/.default offline_access"
client_auth = "post"
"#;

    fn env() -> HashMap<String, String> {
        HashMap::from([
            ("SN_PASSWORD".to_string(), "hunter2-password".to_string()),
            (
                "SP_CLIENT_SECRET".to_string(),
                "sp-secret-value".to_string(),
            ),
        ])
    }

    fn error_of(text: &str) -> String {
        match parse(text, "keeper.toml", &env()) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_contract_example_parses() {
        let s = parse(GOOD, "keeper.toml", &env()).unwrap();
        assert_eq!(s.instance.url.as_str(), "https://acme.service-now.com/");
        assert_eq!(s.refresh.interval, Duration::from_secs(180));
        assert_eq!(s.refresh.keepalive, Duration::from_secs(7 * 86_400));
        assert_eq!(s.registries[0].client_auth, ClientAuth::Post);
        assert!(s.registry("SharePoint Online", "x").is_some());
        assert_eq!(s.instance.password.expose_secret(), "hunter2-password");
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let s = parse(GOOD, "keeper.toml", &env()).unwrap();
        let dump = format!("{s:?}");
        assert!(!dump.contains("hunter2-password"));
        assert!(!dump.contains("sp-secret-value"));
        let key = JournalKey::random().unwrap();
        assert_eq!(format!("{key:?}"), "JournalKey([REDACTED])");
    }

    #[test]
    fn every_bad_value_names_its_key_and_file() {
        let cases = [
            (
                GOOD.replace("lead_time = \"10m\"", "lead_time = \"ten\""),
                "refresh.lead_time",
            ),
            (
                GOOD.replace("interval = \"3m\"", "interval = \"3\""),
                "refresh.interval",
            ),
            (
                GOOD.replace("keepalive = \"7d\"", "keepalive = \"1s\""),
                "refresh.keepalive",
            ),
            (
                GOOD.replace("concurrency = 8", "concurrency = 0"),
                "refresh.concurrency",
            ),
            (GOOD.replace("https://acme", "http://acme"), "instance.url"),
            (
                GOOD.replace("https://acme.service-now.com/", "not a url"),
                "instance.url",
            ),
            (
                GOOD.replace("SN_PASSWORD", "MISSING_VAR"),
                "instance.password_env",
            ),
            (
                GOOD.replace("username = \"svc_oauth_keeper\"", "username = \"\""),
                "instance.username",
            ),
            (
                GOOD.replace("/api/x_acme/oauth_keeper", "api/x"),
                "instance.companion_path",
            ),
            (GOOD.replace("127.0.0.1:9464", "localhost"), "server.listen"),
            (
                GOOD.replace("client_auth = \"post\"", "client_auth = \"jwt\""),
                "registry[0].client_auth",
            ),
            (
                GOOD.replace("SP_CLIENT_SECRET", "NOPE"),
                "registry[0].client_secret_env",
            ),
            (
                GOOD.replace("name = \"SharePoint Online\"", ""),
                "registry[0].name",
            ),
            (
                GOOD.replace("concurrency = 8", "concurrency = 8\ncuncurrency = 2"),
                "cuncurrency",
            ),
            (
                GOOD.replace("concurrency = 8", "concurrency = \"eight\""),
                "concurrency",
            ),
        ];
        let more = [
            (
                GOOD.replace(
                    "concurrency = 8",
                    "concurrency = 8\nper_host_concurrency = 999",
                ),
                "refresh.per_host_concurrency",
            ),
            (
                format!("{GOOD}\n[report]\ntable = \"sysevent\"\n"),
                "report.table",
            ),
            (
                format!("{GOOD}\n[report]\nsource = \"\"\n"),
                "report.source",
            ),
            (format!("{GOOD}\n[report]\nsevrity = 1\n"), "sevrity"),
            (
                GOOD.replace(
                    "password_env = \"SN_PASSWORD\"",
                    "password_env = \"SN_PASSWORD\"\ntimeout = \"0s\"",
                ),
                "instance.timeout",
            ),
            (
                GOOD.replace(
                    "password_env = \"SN_PASSWORD\"",
                    "password_env = \"SN_PASSWORD\"\npage_size = 20000",
                ),
                "instance.page_size",
            ),
            (
                GOOD.replace(
                    "password_env = \"SN_PASSWORD\"",
                    "password_file = \"/nonexistent/pw\"",
                ),
                "instance.password_file",
            ),
            (
                GOOD.replace(
                    "password_env = \"SN_PASSWORD\"",
                    "password_env = \"SN_PASSWORD\"\npassword_file = \"/x\"",
                ),
                "instance.password_env",
            ),
            (
                GOOD.replace("concurrency = 8", "concurrency = 8\ntimeout = \"forever\""),
                "refresh.timeout",
            ),
            (
                GOOD.replace(
                    "key_env = \"SN_OAUTH_KEEPER_KEY\"",
                    "key_env = \"K\"\nkey_file = \"/k\"",
                ),
                "state.key_env",
            ),
            (
                GOOD.replace(
                    "client_auth = \"post\"",
                    "client_auth = \"post\"\ndefault_expires_in = \"1\"",
                ),
                "registry[0].default_expires_in",
            ),
            (
                GOOD.replace(
                    "client_auth = \"post\"",
                    "client_auth = \"post\"\nrefresh_token_lifetime = \"5m\"",
                ),
                "registry[0].refresh_token_lifetime",
            ),
            (
                GOOD.replace(
                    "client_secret_env = \"SP_CLIENT_SECRET\"",
                    "client_secret_file = \"/nonexistent/s\"",
                ),
                "registry[0].client_secret_file",
            ),
            (
                GOOD.replace("url = \"https://acme.service-now.com/\"\n", ""),
                "instance.url",
            ),
            (
                GOOD.replace("listen = \"127.0.0.1:9464\"", "listen = 9464"),
                "listen",
            ),
        ];
        for (text, key) in cases.into_iter().chain(more) {
            let msg = error_of(&text);
            assert!(msg.contains(key), "{key} not in: {msg}");
            assert!(msg.starts_with("keeper.toml"), "{msg}");
        }
    }

    fn keys_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/keys")
    }

    fn jwt_registry(extra: &str) -> String {
        let dir = keys_dir();
        GOOD.replace(
            "client_secret_env = \"SP_CLIENT_SECRET\"\nscope = \"https://contoso.sharepoint.com/.default offline_access\"\nclient_auth = \"post\"",
            &format!(
                "client_auth = \"private_key_jwt\"\nprivate_key_file = \"{}\"\ncertificate_file = \"{}\"\n{extra}",
                dir.join("client-a.key.pem").display(),
                dir.join("client-a.cert.pem").display()
            ),
        )
    }

    #[test]
    fn private_key_jwt_reads_its_key_at_load_and_names_every_bad_key() {
        let s = parse(&jwt_registry(""), "keeper.toml", &env()).unwrap();
        let reg = &s.registries[0];
        assert_eq!(reg.client_auth, ClientAuth::PrivateKeyJwt);
        let key = reg.assertion_key.as_ref().expect("key loaded");
        assert_eq!(key.alg(), JwtAlg::Ps256, "PS256 unless told");
        let pem = std::fs::read_to_string(keys_dir().join("client-a.key.pem")).unwrap();
        let dump = format!("{s:?}");
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!dump.contains(line), "key material in Debug");
        }
        let rs = parse(&jwt_registry("jwt_alg = \"RS256\""), "keeper.toml", &env()).unwrap();
        assert_eq!(
            rs.registries[0].assertion_key.as_ref().unwrap().alg(),
            JwtAlg::Rs256
        );

        let dir = keys_dir();
        let a_key = dir.join("client-a.key.pem").display().to_string();
        let a_cert = dir.join("client-a.cert.pem").display().to_string();
        let b_cert = dir.join("client-b.cert.pem").display().to_string();
        let cases = [
            (jwt_registry("jwt_alg = \"HS256\""), "registry[0].jwt_alg"),
            (
                jwt_registry("").replace(&format!("private_key_file = \"{a_key}\"\n"), ""),
                "registry[0].private_key_file",
            ),
            (
                jwt_registry("").replace(&format!("certificate_file = \"{a_cert}\"\n"), ""),
                "registry[0].certificate_file",
            ),
            (
                jwt_registry("").replace(&a_key, "/nonexistent/key.pem"),
                "registry[0].private_key_file",
            ),
            (
                jwt_registry("").replace(&a_cert, "/nonexistent/cert.pem"),
                "registry[0].certificate_file",
            ),
            (
                jwt_registry("").replace(&a_key, &a_cert),
                "registry[0].private_key_file",
            ),
            (
                jwt_registry("").replace(&a_cert, &a_key),
                "registry[0].certificate_file",
            ),
            (
                jwt_registry("").replace(&a_cert, &b_cert),
                "registry[0].private_key_file",
            ),
            (
                jwt_registry("client_secret_env = \"SP_CLIENT_SECRET\""),
                "registry[0].client_secret_env",
            ),
            (
                GOOD.replace(
                    "client_auth = \"post\"",
                    &format!("client_auth = \"post\"\nprivate_key_file = \"{a_key}\""),
                ),
                "registry[0].private_key_file",
            ),
            (
                GOOD.replace(
                    "client_auth = \"post\"",
                    "client_auth = \"basic\"\njwt_alg = \"PS256\"",
                ),
                "registry[0].jwt_alg",
            ),
        ];
        for (text, key) in cases {
            let msg = error_of(&text);
            assert!(msg.contains(key), "{key} not in: {msg}");
            for line in pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!msg.contains(line), "key material in: {msg}");
            }
        }
        let mismatch = error_of(&jwt_registry("").replace(&a_cert, &b_cert));
        assert!(mismatch.contains("does not belong"), "{mismatch}");
    }

    #[test]
    fn kind_and_resource_are_checked_together() {
        let with = |extra: &str| {
            GOOD.replace(
                "client_auth = \"post\"",
                &format!("client_auth = \"post\"\n{extra}"),
            )
        };
        let s = parse(&with("kind = \"entra_v2\""), "keeper.toml", &env()).unwrap();
        assert_eq!(s.registries[0].kind, Some(TokenEndpointKind::EntraV2));
        assert_eq!(
            parse(GOOD, "keeper.toml", &env()).unwrap().registries[0].kind,
            None
        );
        let generic = parse(
            &with("kind = \"generic\"\nresource = \"https://api.example.com/\""),
            "keeper.toml",
            &env(),
        )
        .unwrap();
        assert_eq!(
            generic.registries[0].resource.as_deref(),
            Some("https://api.example.com/")
        );
        let v1 = parse(
            &GOOD
                .replace("scope = \"https://contoso.sharepoint.com/.default offline_access\"\n", "")
                .replace("client_auth = \"post\"", "client_auth = \"post\"\nkind = \"entra_v1\"\nresource = \"https://contoso.sharepoint.com\""),
            "keeper.toml",
            &env(),
        )
        .unwrap();
        assert_eq!(v1.registries[0].kind, Some(TokenEndpointKind::EntraV1));
        for (text, key) in [
            (with("kind = \"entra\""), "registry[0].kind"),
            (
                with("kind = \"entra_v2\"\nresource = \"https://graph.microsoft.com\""),
                "registry[0].resource",
            ),
            (with("kind = \"entra_v1\""), "registry[0].scope"),
        ] {
            let msg = error_of(&text);
            assert!(msg.contains(key), "{key} not in: {msg}");
        }
    }

    #[test]
    fn loopback_http_is_accepted() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            assert!(parse_instance_url(ok).is_ok(), "{ok}");
        }
        assert!(parse_instance_url("https://u:p@acme.service-now.com").is_err());
    }

    #[test]
    fn instance_auth_defaults_to_basic_and_oauth_needs_its_keys() {
        let basic = parse(GOOD, "keeper.toml", &env()).unwrap();
        assert!(matches!(basic.instance.auth, InstanceAuthSettings::Basic));
        let oauth_text = GOOD.replace(
            "password_env = \"SN_PASSWORD\"",
            "password_env = \"SN_PASSWORD\"\nauth = \"oauth\"\nclient_id = \"keeper-client\"\nclient_secret_env = \"SN_CLIENT_SECRET\"",
        );
        let mut vars = env();
        vars.insert("SN_CLIENT_SECRET".into(), "instance-client-secret".into());
        let oauth = parse(&oauth_text, "keeper.toml", &vars).unwrap();
        match &oauth.instance.auth {
            InstanceAuthSettings::OAuth {
                client_id,
                client_secret,
            } => {
                assert_eq!(client_id, "keeper-client");
                assert_eq!(client_secret.expose_secret(), "instance-client-secret");
            }
            InstanceAuthSettings::Basic => panic!("oauth expected"),
        }
        assert!(!format!("{oauth:?}").contains("instance-client-secret"));
        let cases = [
            (
                oauth_text.replace("auth = \"oauth\"", "auth = \"kerberos\""),
                "instance.auth",
            ),
            (
                oauth_text.replace("client_id = \"keeper-client\"\n", ""),
                "instance.client_id",
            ),
            (
                oauth_text.replace("client_secret_env = \"SN_CLIENT_SECRET\"", ""),
                "instance.client_secret_env",
            ),
            (
                oauth_text.replace("auth = \"oauth\"\n", ""),
                "instance.client_id",
            ),
            (
                oauth_text.replace(
                    "client_secret_env = \"SN_CLIENT_SECRET\"",
                    "client_secret_file = \"/nonexistent/secret\"",
                ),
                "instance.client_secret_file",
            ),
        ];
        for (text, key) in cases {
            let msg = match parse(&text, "keeper.toml", &vars) {
                Ok(_) => panic!("accepted: {text}"),
                Err(e) => e.to_string(),
            };
            assert!(msg.contains(key), "{key} not in: {msg}");
        }
        // A missing variable names the key, not the secret.
        let msg = error_of(&oauth_text);
        assert!(msg.contains("instance.client_secret_env"), "{msg}");
    }

    #[test]
    fn shutdown_grace_has_a_default_and_names_its_key() {
        let s = parse(GOOD, "keeper.toml", &env()).unwrap();
        assert_eq!(s.refresh.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        let set = GOOD.replace(
            "concurrency = 8",
            "concurrency = 8\nshutdown_grace = \"2m\"",
        );
        let s = parse(&set, "keeper.toml", &env()).unwrap();
        assert_eq!(s.refresh.shutdown_grace, Duration::from_secs(120));
        for bad in ["\"soon\"", "\"0s\""] {
            let text = GOOD.replace(
                "concurrency = 8",
                &format!("concurrency = 8\nshutdown_grace = {bad}"),
            );
            let msg = error_of(&text);
            assert!(msg.contains("refresh.shutdown_grace"), "{msg}");
        }
    }

    #[test]
    fn credential_paths_expand_braced_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sn_password"), "from-a-credential\n").unwrap();
        let mut vars = env();
        vars.insert(
            "CREDENTIALS_DIRECTORY".into(),
            dir.path().display().to_string(),
        );
        let text = GOOD
            .replace(
                "password_env = \"SN_PASSWORD\"",
                "password_file = \"${CREDENTIALS_DIRECTORY}/sn_password\"",
            )
            .replace(
                "key_env = \"SN_OAUTH_KEEPER_KEY\"",
                "key_file = \"${CREDENTIALS_DIRECTORY}/journal_key\"",
            )
            .replace(
                "dir = \"/var/lib/sn-oauth-keeper\"",
                "dir = \"${CREDENTIALS_DIRECTORY}/state$1\"",
            );
        let s = parse(&text, "keeper.toml", &vars).unwrap();
        assert_eq!(s.instance.password.expose_secret(), "from-a-credential");
        assert_eq!(s.state.dir, dir.path().join("state$1"), "a bare $ stays");
        match &s.state.key {
            KeySource::File(p) => assert_eq!(p, &dir.path().join("journal_key")),
            other => panic!("{other:?}"),
        }
        // Unset, unclosed or malformed references name the key and never become a path.
        let unset = parse(&text, "keeper.toml", &env()).unwrap_err().to_string();
        assert!(
            unset.contains("instance.password_file") && unset.contains("CREDENTIALS_DIRECTORY"),
            "{unset}"
        );
        for bad in ["${CREDENTIALS_DIRECTORY/x", "${}/x", "${A-B}/x"] {
            let text = GOOD.replace(
                "dir = \"/var/lib/sn-oauth-keeper\"",
                &format!("dir = \"{bad}\""),
            );
            let msg = error_of(&text);
            assert!(msg.contains("state.dir"), "{msg}");
        }
    }

    #[test]
    fn keys_decode_in_hex_base64_and_raw() {
        let hex = "00".repeat(31) + "ff";
        assert_eq!(
            JournalKey::decode(hex.as_bytes()).unwrap().bytes()[31],
            0xff
        );
        let b64 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=";
        assert_eq!(JournalKey::decode(b64.as_bytes()).unwrap().bytes()[31], 1);
        assert!(JournalKey::decode(&[7u8; 32]).is_ok());
        assert!(JournalKey::decode(b"short").is_err());
        let missing = KeySource::Env("NOPE".into()).resolve("k.toml", &env());
        assert!(missing.unwrap_err().to_string().contains("state.key_env"));
    }
}
