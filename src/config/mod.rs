//! Configuration: a TOML file, validated into [`Settings`].
//!
//! Every error names the file and the key (`config.toml: refresh.lead_time: invalid duration …`).
//! Secrets never come from the command line: passwords and keys are read from the environment
//! variable or the file the config names.
//!
//! Map of the module:
//! - `raw`: the serde shapes of the TOML, before any validation;
//! - `parse`: raw shapes into [`Settings`], and the URL rules ([`parse_instance_url`],
//!   [`is_loopback_host`]);
//! - `settings`: the validated types the rest of the keeper reads;
//! - `secrets`: where secrets and the journal key come from ([`Env`], [`KeySource`],
//!   [`JournalKey`], `${VAR}` in paths).

mod parse;
mod raw;
mod secrets;
mod settings;

pub use parse::{is_loopback_host, parse_instance_url};
pub use secrets::{Env, JournalKey, KeySource, ProcessEnv, expand_path};
pub use settings::{
    ClientAuth, DEFAULT_COMPANION_PATH, DEFAULT_EXPIRES_IN, DEFAULT_REFRESH_LIFETIME,
    InstanceAuthSettings, InstanceSettings, RefreshSettings, RegistrySettings, ReportSettings,
    ServerSettings, Settings, StateSettings, TokenEndpointKind,
};

use std::path::Path;

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "SN_OAUTH_KEEPER_CONFIG";

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
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        message: e.to_string().trim_end().replace('\n', " "),
    })?;
    parse::settings(raw, file, env)
}

#[cfg(test)]
mod tests;
