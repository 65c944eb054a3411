//! Where secrets and the journal key come from: environment variables and files named by the
//! config (never the config itself, never the command line), and `${VAR}` in the paths to them.

use super::ConfigError;
use crate::journal::JournalKey;
use secrecy::SecretString;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

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

/// Where the journal key comes from; resolved only by commands that write the journal, so
/// `status` and `check` work without it. Two sources are equal when they name the same
/// variable or file, or hold the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable holding the key (64 hex characters or base64 of 32 bytes).
    Env(String),
    /// A file holding the key (raw 32 bytes, 64 hex characters, or base64).
    File(PathBuf),
    /// A key given in-process (the demo).
    Inline(JournalKey),
}

/// `state.key_env = "SN_OAUTH_KEEPER_KEY"`: where the key is when the config names no source.
impl Default for KeySource {
    fn default() -> Self {
        KeySource::Env("SN_OAUTH_KEEPER_KEY".into())
    }
}

impl KeySource {
    /// Reads the key. The error names the key of the config that points to it.
    pub fn resolve(&self, source: &str, env: &dyn Env) -> Result<JournalKey, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::invalid(source, key, message);
        match self {
            KeySource::Inline(key) => Ok(key.clone()),
            KeySource::Env(var) => {
                // Wiped once decoded, whatever the outcome.
                let value = env
                    .var(var)
                    .map(Zeroizing::new)
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| invalid("state.key_env", unset(var)))?;
                // The variable is set, so `var` is a real variable's name, not a pasted key.
                JournalKey::decode(value.as_bytes())
                    .map_err(|m| invalid("state.key_env", format!("{var}: {m}")))
            }
            KeySource::File(path) => {
                let raw = std::fs::read(path).map(Zeroizing::new).map_err(|e| {
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

/// The secret in the environment variable `var`; an unset or empty one is an error.
pub(super) fn env_secret(var: &str, env: &dyn Env) -> Result<SecretString, String> {
    env.var(var)
        .filter(|v| !v.is_empty())
        .map(SecretString::from)
        .ok_or_else(|| unset(var))
}

/// Whether `name` looks like an environment variable's name: ASCII letters, digits and `_`, not
/// starting with a digit. Only such a value of a `…_env` key is ever shown in a message; any
/// other may be the secret itself, pasted where the variable's name belongs.
fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why the variable a `…_env` key names gives nothing, naming it only when it looks like a name.
fn unset(var: &str) -> String {
    if is_variable_name(var) {
        format!("environment variable {var} is not set or empty")
    } else {
        "does not name a set environment variable; it takes the variable's name (letters, digits and _), never the secret itself".into()
    }
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

pub(super) fn read_secret_file(path: &Path) -> Result<SecretString, String> {
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

    #[test]
    fn key_sources_compare_by_what_they_name_and_inline_keys_by_their_bytes() {
        let env = |v: &str| KeySource::Env(v.into());
        let file = |p: &str| KeySource::File(PathBuf::from(p));
        assert_eq!(env("SN_OAUTH_KEEPER_KEY"), env("SN_OAUTH_KEEPER_KEY"));
        assert_ne!(env("SN_OAUTH_KEEPER_KEY"), env("OTHER_KEY"));
        assert_eq!(file("/run/k"), file("/run/k"));
        assert_ne!(file("/run/k"), file("/run/j"));
        assert_ne!(env("k"), file("k"));
        let key = JournalKey::random().unwrap();
        let mut flipped = *key.bytes();
        flipped[31] ^= 1;
        let other = JournalKey::decode(&flipped).unwrap();
        assert_eq!(
            KeySource::Inline(key.clone()),
            KeySource::Inline(key.clone())
        );
        assert_ne!(KeySource::Inline(key.clone()), KeySource::Inline(other));
        assert_ne!(KeySource::Inline(key), env("SN_OAUTH_KEEPER_KEY"));
    }
}
