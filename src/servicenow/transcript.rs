//! Transcripts: what the instance answered, recorded by `check --record DIR` and
//! `once --record DIR` so a user can attach it to a bug report, and replayed by the test suite
//! against the keeper's decoders and against the simulator.
//!
//! One file per exchange, `DIR/0001.json`, `DIR/0002.json`, … in the order sent: the request
//! (method, path below the instance URL, query pairs, JSON body) and the answer (status, the
//! headers the keeper reads, the body). Before anything is written every secret is replaced by a
//! stable placeholder, the same value by the same placeholder throughout one recording:
//! tokens, secrets and passwords (`<secret-N>`: any value of a field named like one, and the
//! integration user's password wherever it appears; a `/verify` digest of one becomes the
//! digest of its placeholder), user names (`<user-N>`: `user_name`,
//! `sys_created_by`, `sys_updated_by`, the integration user's name anywhere, `<user-1>`), and
//! the instance's URL and host (`https://instance.invalid`). Exchanges with the instance's own
//! `/oauth_token.do` (`auth = "oauth"`) are never recorded.

use super::companion::sha256_hex;
use super::decode::decode_credential_row;
use super::error::interpret;
use super::table::CREDENTIAL_FIELDS;
use crate::domain::scrub::Scrubber;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use url::Url;

/// What stands for the instance's URL in a transcript.
pub const INSTANCE_PLACEHOLDER: &str = "https://instance.invalid";

/// Fields whose values are tokens, secrets or passwords.
const SECRET_FIELDS: &[&str] = &[
    "token_received",
    "token",
    "refresh_token",
    "access_token",
    "client_secret",
    "password",
];

/// Fields whose values are user names.
const USER_FIELDS: &[&str] = &["user_name", "sys_created_by", "sys_updated_by"];

/// The answer headers a transcript keeps: those the keeper reads, and the one that says why a
/// call was refused.
const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "x-total-count",
    "link",
    "location",
    "retry-after",
    "www-authenticate",
];

/// Why a recording cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// The folder exists and holds files: a recording never mixes with another.
    #[error("--record: {0} is not empty; give a new or empty folder")]
    NotEmpty(PathBuf),
    /// The folder cannot be created or read.
    #[error("--record: {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A transcript file does not parse (replay).
    #[error("{path}: not a transcript exchange: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// One recorded request and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// What the keeper sent.
    pub request: RecordedRequest,
    /// What the instance answered.
    pub response: RecordedResponse,
}

/// A request as a transcript keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// `GET`, `PATCH`, …
    pub method: String,
    /// The path below the instance URL, e.g. `/api/now/table/oauth_credential`.
    pub path: String,
    /// Query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The JSON body, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// An answer as a transcript keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedResponse {
    /// HTTP status.
    pub status: u16,
    /// The headers the keeper reads (lowercase names).
    pub headers: BTreeMap<String, String>,
    /// The body: JSON when it parses, else the text.
    pub body: Value,
}

impl RecordedResponse {
    /// The header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body's bytes as the instance sent them (as far as the transcript keeps them).
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Value::String(text) if !self.is_json() => text.clone().into_bytes(),
            Value::Null if !self.is_json() => Vec::new(),
            other => other.to_string().into_bytes(),
        }
    }

    fn is_json(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().contains("json"))
    }
}

/// Replaces secrets with stable placeholders (see the module docs).
struct Redactor {
    /// Known literal → placeholder, longest first when applied.
    literals: Vec<(String, String)>,
    secrets: HashMap<String, String>,
    users: HashMap<String, String>,
}

impl Redactor {
    fn new(base: &Url, username: &str, secrets: &[&SecretString]) -> Redactor {
        let origin = base.origin().ascii_serialization();
        let mut redactor = Redactor {
            literals: vec![(origin, INSTANCE_PLACEHOLDER.to_string())],
            secrets: HashMap::new(),
            users: HashMap::new(),
        };
        if let Some(host) = base.host_str() {
            redactor
                .literals
                .push((host.to_string(), "instance.invalid".to_string()));
        }
        for secret in secrets {
            redactor.placeholder_for(secret.expose_secret(), true);
        }
        redactor.placeholder_for(username, false);
        redactor
    }

    /// The placeholder of `value` (a new one the first time), remembered as a literal so it is
    /// also replaced wherever else it appears.
    fn placeholder_for(&mut self, value: &str, secret: bool) -> String {
        let (map, prefix) = if secret {
            (&mut self.secrets, "secret")
        } else {
            (&mut self.users, "user")
        };
        if let Some(known) = map.get(value) {
            return known.clone();
        }
        let placeholder = format!("<{prefix}-{}>", map.len() + 1);
        map.insert(value.to_string(), placeholder.clone());
        if !value.is_empty() {
            self.literals.push((value.to_string(), placeholder.clone()));
            if secret {
                // A `/verify` digest of the secret becomes the digest of its placeholder: no
                // fingerprint of a token leaves, and a replay that wrote the placeholder
                // verifies it as the instance verified the token.
                self.literals
                    .push((sha256_hex(value), sha256_hex(&placeholder)));
            }
            self.literals
                .sort_by_key(|(literal, _)| std::cmp::Reverse(literal.len()));
        }
        placeholder
    }

    /// Replaces values of secret and user fields, at any depth, by their placeholders.
    fn fields(&mut self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    let leaf = key.rsplit('.').next().unwrap_or(key);
                    let secret = SECRET_FIELDS.contains(&leaf);
                    let user = USER_FIELDS.contains(&leaf);
                    match v {
                        Value::String(s) if (secret || user) && !s.is_empty() => {
                            *s = self.placeholder_for(s, secret);
                        }
                        _ => self.fields(v),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.fields(v)),
            _ => {}
        }
    }

    /// Replaces every known literal in every string.
    fn literals_in(&self, text: &str) -> String {
        self.literals
            .iter()
            .fold(text.to_string(), |t, (literal, placeholder)| {
                t.replace(literal.as_str(), placeholder)
            })
    }

    fn strings(&self, value: &mut Value) {
        match value {
            Value::String(s) => *s = self.literals_in(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.strings(v)),
            Value::Object(map) => {
                let redacted: Map<String, Value> = std::mem::take(map)
                    .into_iter()
                    .map(|(k, mut v)| {
                        self.strings(&mut v);
                        (self.literals_in(&k), v)
                    })
                    .collect();
                *map = redacted;
            }
            _ => {}
        }
    }

    fn exchange(&mut self, exchange: &mut Exchange) {
        if let Some(body) = &mut exchange.request.body {
            self.fields(body);
        }
        for (key, value) in &mut exchange.request.query {
            if SECRET_FIELDS.contains(&key.as_str()) {
                *value = self.placeholder_for(value, true);
            }
        }
        self.fields(&mut exchange.response.body);
        let mut whole = serde_json::to_value(&*exchange).unwrap_or(Value::Null);
        self.strings(&mut whole);
        if let Ok(redacted) = serde_json::from_value(whole) {
            *exchange = redacted;
        }
    }
}

/// Records every exchange with the instance into a folder (see the module docs).
pub struct Recorder {
    dir: PathBuf,
    base_path: String,
    next: AtomicU32,
    redactor: Mutex<Redactor>,
    warned: AtomicBool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Starts a recording into `dir` (created if missing, mode 0700; it must be empty) of the
    /// exchanges with the instance at `base` as `username`; `secrets` (the instance credentials
    /// of the config) become placeholders wherever they appear.
    pub fn create(
        dir: &Path,
        base: &Url,
        username: &str,
        secrets: &[&SecretString],
    ) -> Result<Recorder, TranscriptError> {
        let io = |source| TranscriptError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io)?;
        if std::fs::read_dir(dir).map_err(io)?.next().is_some() {
            return Err(TranscriptError::NotEmpty(dir.to_path_buf()));
        }
        Ok(Recorder {
            dir: dir.to_path_buf(),
            base_path: base.path().trim_end_matches('/').to_string(),
            next: AtomicU32::new(1),
            redactor: Mutex::new(Redactor::new(base, username, secrets)),
            warned: AtomicBool::new(false),
        })
    }

    /// Records one exchange. A file that cannot be written is warned about once; the run goes
    /// on.
    pub(super) fn record(
        &self,
        method: &str,
        url: &Url,
        body: Option<&Value>,
        status: StatusCode,
        headers: &HeaderMap,
        answer: &[u8],
    ) {
        let path = url.path();
        let mut exchange = Exchange {
            request: RecordedRequest {
                method: method.to_string(),
                path: path
                    .strip_prefix(&self.base_path)
                    .unwrap_or(path)
                    .to_string(),
                query: url
                    .query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
                body: body.cloned(),
            },
            response: RecordedResponse {
                status: status.as_u16(),
                headers: KEPT_HEADERS
                    .iter()
                    .filter_map(|name| {
                        let values: Vec<&str> = headers
                            .get_all(*name)
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .collect();
                        (!values.is_empty()).then(|| ((*name).to_string(), values.join(",")))
                    })
                    .collect(),
                body: serde_json::from_slice(answer).unwrap_or_else(|_| {
                    if answer.is_empty() {
                        Value::Null
                    } else {
                        Value::String(String::from_utf8_lossy(answer).into_owned())
                    }
                }),
            },
        };
        self.redactor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .exchange(&mut exchange);
        let file = self.dir.join(format!(
            "{:04}.json",
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        let written = serde_json::to_vec_pretty(&exchange)
            .map_err(std::io::Error::other)
            .and_then(|text| std::fs::write(&file, text));
        if let Err(e) = written
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(event = "transcript.unwritable", file = %file.display(), error = %e, "cannot write to the recording; the run goes on without it");
        }
    }
}

/// Reads the exchanges of a transcript folder, in order.
pub fn read_transcript(dir: &Path) -> Result<Vec<Exchange>, TranscriptError> {
    let io = |source| TranscriptError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read(&path).map_err(|source| TranscriptError::Io {
                path: path.clone(),
                source,
            })?;
            serde_json::from_slice(&text)
                .map_err(|source| TranscriptError::Unreadable { path, source })
        })
        .collect()
}

/// What the keeper's decoders make of a recorded answer, as JSON to compare: the status, the
/// error the keeper would raise (its kind), the paging headers it reads, and the decoded rows of
/// a discovery page (every row must decode: `undecodable` counts those that did not) or the
/// answer's body.
pub fn decode_answer(exchange: &Exchange) -> Value {
    let response = &exchange.response;
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response.header("content-type").unwrap_or("");
    let mut out = json!({
        "status": response.status,
        "total": response.header("x-total-count").and_then(|t| t.trim().parse::<u64>().ok()),
        "next": response.header("link").and_then(crate::wire::next_link).is_some(),
    });
    match interpret(
        status,
        &content_type.to_ascii_lowercase(),
        &response.body_bytes(),
        None,
        &Scrubber::new(),
    ) {
        Err(e) => out["error"] = json!(error_kind(&e)),
        Ok(body) => {
            let discovery = exchange.request.method == "GET"
                && exchange.request.path.ends_with("/table/oauth_credential")
                && exchange
                    .request
                    .query
                    .iter()
                    .any(|(k, v)| k == "sysparm_fields" && v == CREDENTIAL_FIELDS);
            match body.get("result") {
                Some(Value::Array(items)) if discovery => {
                    let rows: Vec<String> = items
                        .iter()
                        .filter_map(decode_credential_row)
                        .map(|row| format!("{row:?}"))
                        .collect();
                    out["undecodable"] = json!(items.len() - rows.len());
                    out["rows"] = json!(rows);
                }
                _ => out["body"] = body,
            }
        }
    }
    out
}

/// The kind of an error, without its wording.
fn error_kind(e: &super::SnError) -> String {
    use super::SnError as E;
    match e {
        E::Unreachable(_) => "unreachable".into(),
        E::NoAnswer(_) => "no answer".into(),
        E::Unauthorized(_) => "unauthorized".into(),
        E::TokenRefused(_) => "token refused".into(),
        E::Forbidden(_) => "forbidden".into(),
        E::NotFound(_) => "not found".into(),
        E::Html(status) => format!("html {status}"),
        E::Cancelled => "cancelled".into(),
        E::Malformed(_) => "malformed".into(),
        E::Status { status, .. } => format!("status {status}"),
    }
}
