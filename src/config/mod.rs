//! Configuration: a TOML file, validated into [`Settings`].
//!
//! Every error names the file and the key (`config.toml: refresh.lead_time: invalid duration …`),
//! and every problem of a file is reported at once, one per line.
//! Secrets never come from the command line: passwords and keys are read from the environment
//! variable or the file the config names.
//!
//! No message shows a value that could be a secret pasted in the wrong place: a file that is
//! not TOML is reported by line and column, never with the line's text; unknown keys are named,
//! their values never even kept; a `…_env` value is shown only when it looks like a variable's
//! name, an instance URL only once it carries no credentials, query or fragment. Values of keys
//! that cannot hold a secret (durations, numbers, choices, addresses, paths) are quoted.
//!
//! Map of the module:
//! - `raw`: the serde shapes of the TOML, before any validation;
//! - `parse`: raw shapes into [`Settings`], and the URL rules ([`parse_instance_url`],
//!   [`parse_token_url`], [`is_loopback_host`]); its `registry` checks the `[[registry]]`
//!   tables;
//! - `settings`: the validated types the rest of the keeper reads;
//! - `secrets`: where secrets and the journal key come from ([`Env`], [`KeySource`],
//!   [`crate::journal::JournalKey`], `${VAR}` in paths).

mod parse;
mod raw;
mod secrets;
mod settings;

pub use parse::{is_loopback_host, parse_instance_url, parse_token_url};
pub use secrets::{Env, KeySource, ProcessEnv, expand_path};
pub use settings::{
    ClientAuth, DEFAULT_COMPANION_PATH, DEFAULT_EXPIRES_IN, DEFAULT_REFRESH_LIFETIME,
    InstanceAuthSettings, InstanceGrant, InstanceSettings, LeaseSettings, RefreshSettings,
    RegistrySettings, ReportSettings, ServerSettings, Settings, StateSettings, TokenEndpointKind,
};

use std::path::Path;

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "SN_OAUTH_KEEPER_CONFIG";

/// A configuration error. `Display` gives one line per problem, each naming the file and the
/// key: `keeper.toml: refresh.lead_time: invalid duration "soon" …`.
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
    /// The file is not TOML at all, so none of its keys could be checked. Says where and what,
    /// never the text there: the line may hold a secret pasted in the wrong place.
    #[error("{file}: {}not valid TOML: {message}", at(*.position))]
    Syntax {
        /// The config file.
        file: String,
        /// Line and column, both from 1; `None` when the parser could not say.
        position: Option<(usize, usize)>,
        /// What is wrong, in toml's words (a description, never text from the file).
        message: String,
    },
    /// Keys are unknown, missing, of the wrong type, bad or in conflict: every one of them.
    #[error("{}", lines(.file, .problems))]
    Invalid {
        /// The config file (or, for a key source on the command line, the options).
        file: String,
        /// At least one problem, in the order of the reference: the file's unknown tables
        /// first, then `[instance]`, `[refresh]`, `[state]`, `[server]`, each `[[registry]]`
        /// and `[report]`, each table's unknown keys before its values.
        problems: Vec<Problem>,
    },
}

/// One thing wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `refresh.lead_time` or `registry[2].client_auth`; a table's name
    /// (`instance`) when the table itself is wrong or missing.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn at(position: Option<(usize, usize)>) -> String {
    position.map_or_else(String::new, |(line, column)| {
        format!("line {line}, column {column}: ")
    })
}

fn lines(file: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{file}: {}: {}", p.key, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// An error about one key.
    pub fn invalid(file: &str, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_string(),
            problems: vec![Problem {
                key: key.to_string(),
                message: message.into(),
            }],
        }
    }

    /// The key of the first problem, which a log event can carry as a field; `None` when the
    /// file could not be found, read or parsed.
    pub fn key(&self) -> Option<&str> {
        self.problems().first().map(|p| p.key.as_str())
    }

    /// Every problem, in order; empty when the file could not be found, read or parsed.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
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

/// Validates config text; `file` is only used in messages. Every problem of the file is
/// reported, not only the first; a file that is not TOML at all is one error.
pub fn parse(text: &str, file: &str, env: &dyn Env) -> Result<Settings, ConfigError> {
    // toml's Display quotes the offending line; only its description and position are used.
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        position: e.span().map(|span| line_and_column(text, span.start)),
        message: e.message().trim_end().replace('\n', " "),
    })?;
    parse::settings(raw, file, env).map_err(|problems| ConfigError::Invalid {
        file: file.to_string(),
        problems,
    })
}

/// The line and column (both from 1, the column in characters) of a byte offset into `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    text.char_indices()
        .take_while(|(i, _)| *i < offset)
        .fold((1, 1), |(line, column), (_, c)| {
            if c == '\n' {
                (line + 1, 1)
            } else {
                (line, column + 1)
            }
        })
}

#[cfg(test)]
mod tests;
