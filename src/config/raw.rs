//! The serde shapes of the TOML file, before any validation.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) instance: Option<RawInstance>,
    #[serde(default)]
    pub(super) refresh: RawRefresh,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) registry: Vec<RawRegistry>,
    pub(super) report: Option<RawReport>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReport {
    pub(super) table: Option<String>,
    pub(super) source: Option<String>,
    pub(super) node: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInstance {
    pub(super) url: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) companion_path: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) page_size: Option<i64>,
    pub(super) auth: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret_env: Option<String>,
    pub(super) client_secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRefresh {
    pub(super) interval: Option<String>,
    pub(super) lead_time: Option<String>,
    pub(super) keepalive: Option<String>,
    pub(super) concurrency: Option<i64>,
    pub(super) per_host_concurrency: Option<i64>,
    pub(super) timeout: Option<String>,
    pub(super) shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) dir: Option<PathBuf>,
    pub(super) key_env: Option<String>,
    pub(super) key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) name: Option<String>,
    pub(super) client_secret_env: Option<String>,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) scope: Option<String>,
    pub(super) client_auth: Option<String>,
    pub(super) default_expires_in: Option<String>,
    pub(super) refresh_token_lifetime: Option<String>,
    pub(super) private_key_file: Option<PathBuf>,
    pub(super) certificate_file: Option<PathBuf>,
    pub(super) jwt_alg: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) resource: Option<String>,
}
