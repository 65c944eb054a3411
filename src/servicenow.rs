//! The ServiceNow adapter: Table API reads and writes of `oauth_credential`, the integration
//! user's record, and the companion that hands out decrypted secrets.

use crate::config::{InstanceAuthSettings, InstanceSettings, is_loopback_host};
use crate::domain::credential::{CredentialRow, Registry, TokenType};
use crate::domain::time::parse_sn_datetime;
use crate::instance_auth::TokenSource;
use crate::observe::{Observer, Peer, instance_endpoint};
use crate::pacing::{FullJitter, RetryBudget};
use crate::wire::{self, BodyError};
use backon::Retryable;
use jiff::Timestamp;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The columns discovery reads: the row itself and its registry, dot-walked through `peer`.
pub const CREDENTIAL_FIELDS: &str = "sys_id,type,peer,oauth_requestor_profile,user,scopes,expires,name,sys_updated_on,sys_mod_count,peer.name,peer.client_id,peer.token_url,peer.default_grant_type,peer.sys_updated_on";

/// The companion's limit of sys_ids per call.
pub const COMPANION_BATCH: usize = 100;

/// Most rows discovery reserves room for up front, whatever `X-Total-Count` says.
const MAX_RESERVED_ROWS: usize = 1_000_000;

/// A failed call to the instance.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnError {
    /// No connection could be made (DNS, refused, TLS).
    #[error("cannot reach the instance: {0}")]
    Unreachable(String),
    /// The request was sent but no complete answer came back (timeout, reset).
    #[error("no answer from the instance: {0}")]
    NoAnswer(String),
    /// 401: the instance refused the service account.
    #[error(
        "the instance refused the service account (HTTP 401: {0}); check instance.username, the password, and whether Basic auth is allowed for this user (Web Service Access Only)"
    )]
    Unauthorized(String),
    /// The instance's `/oauth_token.do` refused the keeper's token request (`auth = "oauth"`).
    #[error(
        "the instance refused the OAuth token request at /oauth_token.do ({0}); check instance.client_id, the client secret, instance.username and the password, and that the password grant is allowed (glide.oauth.inbound.ropc.grant_type.disabled must not be true)"
    )]
    TokenRefused(String),
    /// 403: the account lacks a role or an ACL.
    #[error("insufficient rights (HTTP 403: {0})")]
    Forbidden(String),
    /// 404.
    #[error("not found (HTTP 404: {0})")]
    NotFound(String),
    /// An HTML page instead of JSON: a hibernating instance, a login or maintenance page.
    #[error(
        "the instance answered HTTP {0} with an HTML page instead of JSON (hibernating, maintenance, or a login page in front of it)"
    )]
    Html(u16),
    /// The instance cancelled the transaction (quota rule: maximum execution time exceeded).
    #[error(
        "the instance cancelled the transaction (maximum execution time exceeded); try a smaller instance.page_size"
    )]
    Cancelled,
    /// The answer did not parse (truncated, garbage, too large). Nothing is done on its strength.
    #[error("unreadable answer from the instance: {0}")]
    Malformed(String),
    /// Any other error status.
    #[error("the instance answered HTTP {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The ServiceNow error message and detail.
        message: String,
        /// How long the instance asked us to wait.
        retry_after: Option<Duration>,
    },
}

impl SnError {
    /// Whether the instance as a whole is unusable for this account (exit code 3): unreachable,
    /// refusing the account, or not speaking JSON.
    pub fn instance_unusable(&self) -> bool {
        matches!(
            self,
            SnError::Unreachable(_)
                | SnError::NoAnswer(_)
                | SnError::Unauthorized(_)
                | SnError::TokenRefused(_)
                | SnError::Forbidden(_)
                | SnError::Html(_)
        )
    }

    /// Whether trying the same idempotent call again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SnError::Unreachable(_)
            | SnError::NoAnswer(_)
            | SnError::Html(_)
            | SnError::Cancelled
            | SnError::Malformed(_) => true,
            SnError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// Whether a non-idempotent call (POST) may be sent again: only when the instance surely did
    /// not process it.
    fn is_safe_to_resend(&self) -> bool {
        matches!(self, SnError::Unreachable(_))
            || matches!(self, SnError::Status { status: 429, .. })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            SnError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short, stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SnError::Unreachable(_) => "unreachable",
            SnError::NoAnswer(_) => "no_answer",
            SnError::Unauthorized(_) => "unauthorized",
            SnError::TokenRefused(_) => "token_refused",
            SnError::Forbidden(_) => "forbidden",
            SnError::NotFound(_) => "not_found",
            SnError::Html(_) => "html",
            SnError::Cancelled => "cancelled",
            SnError::Malformed(_) => "malformed",
            SnError::Status { .. } => "status",
        }
    }
}

/// The companion's query parameter that asks for more than the refresh token.
pub const COMPANION_INCLUDE: &str = "include";

/// The value of [`COMPANION_INCLUDE`] that asks for the registry's client secret.
pub const COMPANION_INCLUDE_SECRET: &str = "client_secret";

/// One refresh row whose secrets the keeper needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRequest {
    /// The refresh row's sys_id.
    pub sys_id: String,
    /// Whether the registry's client secret is needed too (the config supplies none).
    pub client_secret: bool,
}

/// Secrets the companion hands out for one refresh row.
pub struct CompanionSecrets {
    /// The decrypted refresh token.
    pub refresh_token: SecretString,
    /// The registry's decrypted client secret, when the instance has one.
    pub client_secret: Option<SecretString>,
}

impl fmt::Debug for CompanionSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CompanionSecrets([REDACTED])")
    }
}

/// The integration user's `sys_user` record, as far as the keeper needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrationUser {
    /// `sys_id`.
    pub sys_id: String,
    /// `time_zone`: empty means the instance's system default.
    pub time_zone: String,
    /// `date_format`: empty means the system default.
    pub date_format: String,
}

/// The version of a row, as the race check reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowVersion {
    /// `sys_mod_count`.
    pub mod_count: u64,
    /// `sys_updated_by`: the user name of the last writer.
    pub updated_by: String,
}

/// How many times and how patiently calls to the instance are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, first included.
    pub attempts: usize,
    /// First backoff delay.
    pub min_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
        }
    }
}

/// What proves the integration user on every call (`instance.auth`).
#[derive(Clone)]
enum Credentials {
    /// HTTP Basic with this password.
    Basic(SecretString),
    /// Bearer tokens from the instance's `/oauth_token.do`, shared by every clone.
    Bearer(Arc<TokenSource>),
}

/// The credential of one attempt.
enum Authorization<'a> {
    Basic(&'a SecretString),
    Bearer(&'a SecretString),
}

/// A decoded JSON answer with what the keeper reads from its headers.
struct Answer {
    body: Value,
    /// The decoded rows of a credential page read with [`Decode::CredentialPage`] whose body
    /// took the typed fast path; `None` otherwise (then `body` holds the answer).
    rows: Option<Vec<CredentialRow>>,
    total_count: Option<usize>,
    next: Option<String>,
}

/// How an answer's body is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// Into a JSON value, checked by [`interpret`].
    Json,
    /// A page of `oauth_credential` rows: straight into [`CredentialRow`]s when the body is an
    /// ordinary page, else as [`Decode::Json`]. Discovery reads every row of the estate each
    /// cycle, and building a JSON value per row first cost more than everything else a cycle
    /// does.
    CredentialPage,
}

/// The Table API + companion client.
#[derive(Clone)]
pub struct Instance {
    http: reqwest::Client,
    base: Url,
    username: String,
    credentials: Credentials,
    companion_path: String,
    page_size: usize,
    retry: RetryPolicy,
    /// Shared with the engine, which refills it at the head of every cycle.
    budget: Arc<RetryBudget>,
    /// Told about every request (metrics); see [`Instance::set_observer`].
    observer: Observer,
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("base", &self.base.as_str())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Builds the client from `[instance]`.
    pub fn new(settings: &InstanceSettings, retry: RetryPolicy) -> Result<Instance, SnError> {
        let loopback = settings.url.host_str().is_some_and(is_loopback_host);
        let http = wire::build_client(settings.timeout, loopback)
            .map_err(|e| SnError::Unreachable(wire::describe_transport(&e)))?;
        Ok(Instance {
            http,
            base: settings.url.clone(),
            username: settings.username.clone(),
            credentials: match &settings.auth {
                InstanceAuthSettings::Basic => Credentials::Basic(settings.password.clone()),
                InstanceAuthSettings::OAuth {
                    client_id,
                    client_secret,
                } => Credentials::Bearer(Arc::new(TokenSource::new(
                    &settings.url,
                    client_id.clone(),
                    client_secret.clone(),
                    settings.username.clone(),
                    settings.password.clone(),
                ))),
            },
            companion_path: settings.companion_path.clone(),
            page_size: settings.page_size,
            retry,
            budget: Arc::new(RetryBudget::new(u32::MAX)),
            observer: Observer::none(),
        })
    }

    /// Reports every request from now on to `observer` (method, endpoint id, status, duration).
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = observer;
    }

    /// The retry budget every call of this client draws from.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// The instance's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}{}", self.base.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }

    fn table_url(&self, table: &str, sys_id: Option<&str>) -> Url {
        match sys_id {
            Some(id) => self.url(&format!("/api/now/table/{table}/{id}")),
            None => self.url(&format!("/api/now/table/{table}")),
        }
    }

    /// Reads every `oauth_credential` row of type access or refresh token, following
    /// `Link: rel="next"` (a page may be short while more rows exist: paging never stops on a
    /// short page).
    pub async fn list_credentials(&self) -> Result<Vec<CredentialRow>, SnError> {
        let mut url = self.table_url("oauth_credential", None);
        url.query_pairs_mut()
            .append_pair(
                "sysparm_query",
                "typeINaccess_token,refresh_token^ORDERBYsys_id",
            )
            .append_pair("sysparm_fields", CREDENTIAL_FIELDS)
            .append_pair("sysparm_display_value", "false")
            .append_pair("sysparm_exclude_reference_link", "true")
            .append_pair("sysparm_limit", &self.page_size.to_string())
            .append_pair("sysparm_offset", "0");
        let mut rows = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut offset = 0usize;
        loop {
            if !seen.insert(url.to_string()) {
                return Err(SnError::Malformed(
                    "the Link header points back to a page already read".into(),
                ));
            }
            let answer = self
                .call_as(Method::GET, url.clone(), None, true, Decode::CredentialPage)
                .await?;
            if rows.is_empty()
                && let Some(total) = answer.total_count
            {
                // One allocation for the whole estate instead of doubling through it; bounded,
                // so a wrong header cannot make the keeper reserve gigabytes.
                rows.reserve_exact(total.min(MAX_RESERVED_ROWS));
            }
            let page_len = match answer.rows {
                Some(decoded) => {
                    let len = decoded.len();
                    rows.extend(decoded);
                    len
                }
                None => match answer.body.get("result") {
                    Some(Value::Array(items)) => {
                        rows.extend(items.iter().filter_map(decode_credential_row));
                        items.len()
                    }
                    _ => {
                        return Err(SnError::Malformed(
                            "list answer without a result array".into(),
                        ));
                    }
                },
            };
            let next = match answer.next {
                Some(link) => Some(self.same_origin(&link)?),
                // No Link header (a one-page answer, or pagination headers suppressed): fall
                // back to X-Total-Count so a short page never ends paging early.
                None => match answer.total_count {
                    Some(total) if offset + self.page_size < total => {
                        let mut next = url.clone();
                        set_offset(&mut next, offset + self.page_size);
                        Some(next)
                    }
                    _ => None,
                },
            };
            match next {
                Some(next) => {
                    offset = offset_of(&next).unwrap_or(offset + page_len.max(1));
                    url = next;
                }
                None => return Ok(rows),
            }
        }
    }

    /// Follows a `Link` target on our own origin: the host the instance names may differ behind a
    /// proxy, and credentials must never go to another host.
    fn same_origin(&self, link: &str) -> Result<Url, SnError> {
        let target = Url::parse(link)
            .or_else(|_| self.base.join(link))
            .map_err(|_| SnError::Malformed("unparseable Link header target".into()))?;
        let mut url = self.base.clone();
        url.set_path(target.path());
        url.set_query(target.query());
        Ok(url)
    }

    /// Asks the companion for the refresh tokens of refresh rows, never for a client secret.
    pub async fn fetch_secrets(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, CompanionSecrets>, SnError> {
        let requests: Vec<SecretRequest> = ids
            .iter()
            .map(|id| SecretRequest {
                sys_id: id.clone(),
                client_secret: false,
            })
            .collect();
        self.fetch_secrets_for(&requests).await
    }

    /// Asks the companion for the refresh token of each refresh row, and for the registry's
    /// client secret only where [`SecretRequest::client_secret`] says the config has none
    /// (`include=client_secret`), in batches of at most 100. Ids the companion leaves out are
    /// absent from the map.
    pub async fn fetch_secrets_for(
        &self,
        requests: &[SecretRequest],
    ) -> Result<HashMap<String, CompanionSecrets>, SnError> {
        let mut out = HashMap::new();
        for with_secret in [false, true] {
            let ids: Vec<&str> = requests
                .iter()
                .filter(|r| r.client_secret == with_secret)
                .map(|r| r.sys_id.as_str())
                .collect();
            for batch in ids.chunks(COMPANION_BATCH) {
                let mut url = self.url(&format!("{}/secrets", self.companion_path));
                url.query_pairs_mut()
                    .append_pair("sys_id", &batch.join(","));
                if with_secret {
                    url.query_pairs_mut()
                        .append_pair(COMPANION_INCLUDE, COMPANION_INCLUDE_SECRET);
                }
                let answer = self.call(Method::GET, url, None, true).await?;
                let Some(Value::Array(items)) = answer.body.get("result") else {
                    return Err(SnError::Malformed(
                        "companion answer without a result array".into(),
                    ));
                };
                for item in items {
                    let Some(sys_id) = item.get("sys_id").and_then(Value::as_str) else {
                        continue;
                    };
                    if !batch.contains(&sys_id) {
                        continue;
                    }
                    let Some(refresh) = item
                        .get("refresh_token")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    else {
                        continue;
                    };
                    // A secret the keeper did not ask for is not kept.
                    let client_secret = item
                        .get("client_secret")
                        .and_then(Value::as_str)
                        .filter(|s| with_secret && !s.is_empty())
                        .map(|s| SecretString::from(s.to_string()));
                    out.insert(
                        sys_id.to_string(),
                        CompanionSecrets {
                            refresh_token: SecretString::from(refresh.to_string()),
                            client_secret,
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// Proves the companion is installed and our role is granted without asking for any real
    /// secret: an id that cannot exist must come back as an empty list.
    pub async fn probe_companion(&self) -> Result<(), SnError> {
        let mut url = self.url(&format!("{}/secrets", self.companion_path));
        url.query_pairs_mut()
            .append_pair("sys_id", "00000000000000000000000000000000");
        let answer = self.call(Method::GET, url, None, true).await?;
        match answer.body.get("result") {
            Some(Value::Array(_)) => Ok(()),
            _ => Err(SnError::Malformed(
                "companion answer without a result array".into(),
            )),
        }
    }

    /// Reads the integration user's record.
    pub async fn integration_user(&self) -> Result<IntegrationUser, SnError> {
        let mut url = self.table_url("sys_user", None);
        url.query_pairs_mut()
            .append_pair("sysparm_query", &format!("user_name={}", self.username))
            .append_pair("sysparm_fields", "sys_id,user_name,time_zone,date_format")
            .append_pair("sysparm_display_value", "false")
            .append_pair("sysparm_limit", "1");
        let answer = self.call(Method::GET, url, None, true).await?;
        let Some(first) = answer
            .body
            .get("result")
            .and_then(Value::as_array)
            .and_then(|rows| rows.first())
        else {
            return Err(SnError::NotFound(format!(
                "no sys_user with user_name {} is readable",
                self.username
            )));
        };
        Ok(IntegrationUser {
            sys_id: field(first, "sys_id"),
            time_zone: field(first, "time_zone"),
            date_format: field(first, "date_format"),
        })
    }

    /// Reads what the race check needs of one `oauth_credential` row: who wrote it last and how
    /// often it was written.
    pub async fn credential_version(&self, sys_id: &str) -> Result<RowVersion, SnError> {
        let mut url = self.table_url("oauth_credential", Some(sys_id));
        url.query_pairs_mut()
            .append_pair(
                "sysparm_fields",
                "sys_id,sys_mod_count,sys_updated_by,sys_updated_on",
            )
            .append_pair("sysparm_display_value", "false");
        let answer = self.call(Method::GET, url, None, true).await?;
        let record = record_of(answer.body)?;
        let record = Value::Object(record);
        Ok(RowVersion {
            mod_count: field(&record, "sys_mod_count").trim().parse().unwrap_or(0),
            updated_by: field(&record, "sys_updated_by"),
        })
    }

    /// Reads up to `limit` rows of a table with the given fields (used by `check`).
    pub async fn sample(
        &self,
        table: &str,
        query: &str,
        fields: &str,
        limit: usize,
    ) -> Result<Vec<Map<String, Value>>, SnError> {
        let mut url = self.table_url(table, None);
        url.query_pairs_mut()
            .append_pair("sysparm_query", query)
            .append_pair("sysparm_fields", fields)
            .append_pair("sysparm_display_value", "false")
            .append_pair("sysparm_exclude_reference_link", "true")
            .append_pair("sysparm_limit", &limit.to_string());
        let answer = self.call(Method::GET, url, None, true).await?;
        match answer.body.get("result") {
            Some(Value::Array(items)) => Ok(items
                .iter()
                .filter_map(|v| v.as_object().cloned())
                .collect()),
            _ => Err(SnError::Malformed(
                "list answer without a result array".into(),
            )),
        }
    }

    /// PATCHes an `oauth_credential` row. `display_values` sends
    /// `sysparm_input_display_value=true`, without which an encrypted column is stored unusable;
    /// it also makes the instance read date-times in the user's time zone. Returns the record.
    pub async fn patch_credential(
        &self,
        sys_id: &str,
        fields: Map<String, Value>,
        display_values: bool,
    ) -> Result<Map<String, Value>, SnError> {
        let mut url = self.table_url("oauth_credential", Some(sys_id));
        write_params(&mut url, display_values);
        let answer = self
            .call(Method::PATCH, url, Some(Value::Object(fields)), true)
            .await?;
        record_of(answer.body)
    }

    /// Creates an `oauth_credential` row (always with display-value input: it carries a token).
    /// Returns the record.
    pub async fn insert_credential(
        &self,
        fields: Map<String, Value>,
    ) -> Result<Map<String, Value>, SnError> {
        let mut url = self.table_url("oauth_credential", None);
        write_params(&mut url, true);
        let answer = self
            .call(Method::POST, url, Some(Value::Object(fields)), false)
            .await?;
        record_of(answer.body)
    }

    /// Creates a status event row (`[report]`). Not retried beyond what is safe for a POST: a
    /// duplicate event would open a duplicate alert.
    pub async fn create_event(
        &self,
        table: &str,
        fields: Map<String, Value>,
    ) -> Result<(), SnError> {
        let mut url = self.table_url(table, None);
        url.query_pairs_mut()
            .append_pair("sysparm_fields", "sys_id")
            .append_pair("sysparm_exclude_reference_link", "true");
        self.call(Method::POST, url, Some(Value::Object(fields)), false)
            .await
            .map(|_| ())
    }

    /// One call with retries: idempotent calls on any retryable failure, others only when the
    /// instance surely did not process them.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        idempotent: bool,
    ) -> Result<Answer, SnError> {
        self.call_as(method, url, body, idempotent, Decode::Json)
            .await
    }

    /// [`Instance::call`], decoding the answer as `decode` says.
    async fn call_as(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        idempotent: bool,
        decode: Decode,
    ) -> Result<Answer, SnError> {
        let policy = self.retry;
        let attempt = || self.attempt_authorized(method.clone(), url.clone(), body.clone(), decode);
        attempt
            .retry(FullJitter::new(
                policy.min_delay,
                policy.max_delay,
                u32::try_from(policy.attempts.saturating_sub(1)).unwrap_or(0),
            ))
            .when(move |e: &SnError| {
                let worth_it = if idempotent {
                    e.is_retryable()
                } else {
                    e.is_safe_to_resend()
                };
                worth_it && self.budget.try_take()
            })
            .adjust(|e: &SnError, proposed| {
                // Keep `None` (attempts exhausted) as is: a Retry-After must not extend the
                // number of attempts.
                proposed.map(|d| e.retry_after().map_or(d, |ra| ra.max(d)))
            })
            .notify(|e: &SnError, delay| {
                tracing::debug!(
                    event = "instance.retry",
                    error = %e,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "retrying a call to the instance"
                );
            })
            .await
    }

    /// One attempt with credentials. A bearer token the instance refuses (revoked, or expired
    /// by the instance's clock before ours) is renewed and the request sent once more: a 401
    /// means the instance did not process it, so even a POST is safe to resend.
    async fn attempt_authorized(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        decode: Decode,
    ) -> Result<Answer, SnError> {
        match &self.credentials {
            Credentials::Basic(password) => {
                self.attempt(method, url, body, Authorization::Basic(password), decode)
                    .await
            }
            Credentials::Bearer(source) => {
                let token = source.bearer(&self.http).await?;
                match self
                    .attempt(
                        method.clone(),
                        url.clone(),
                        body.clone(),
                        Authorization::Bearer(&token),
                        decode,
                    )
                    .await
                {
                    Err(SnError::Unauthorized(_)) => {
                        source.invalidate(&token).await;
                        let renewed = source.bearer(&self.http).await?;
                        self.attempt(method, url, body, Authorization::Bearer(&renewed), decode)
                            .await
                    }
                    other => other,
                }
            }
        }
    }

    async fn attempt(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        authorization: Authorization<'_>,
        decode: Decode,
    ) -> Result<Answer, SnError> {
        let endpoint = instance_endpoint(url.path(), self.base.path(), &self.companion_path);
        let mut probe = self
            .observer
            .probe(Peer::Instance, endpoint, method.as_str());
        let mut request = self
            .http
            .request(method, url)
            .header("Accept", "application/json");
        request = match authorization {
            Authorization::Basic(password) => {
                request.basic_auth(&self.username, Some(password.expose_secret()))
            }
            Authorization::Bearer(token) => request.bearer_auth(token.expose_secret()),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                SnError::Unreachable(wire::describe_transport(&e))
            } else {
                SnError::NoAnswer(wire::describe_transport(&e))
            }
        })?;
        let status = response.status();
        probe.status(status.as_u16());
        let headers = response.headers().clone();
        let body = wire::read_capped(response).await.map_err(|e| match e {
            BodyError::Transport(t) => SnError::NoAnswer(t),
            BodyError::TooLarge => {
                SnError::Malformed(format!("answer larger than {} bytes", wire::MAX_BODY))
            }
        })?;
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let retry_after = wire::retry_after(&headers, status.as_u16(), Timestamp::now());
        let fast = match decode {
            Decode::CredentialPage => credential_page(status, &content_type, &body),
            Decode::Json => None,
        };
        let (body, rows) = match fast {
            Some(rows) => (Value::Null, Some(rows)),
            None => (interpret(status, &content_type, &body, retry_after)?, None),
        };
        let total_count = headers
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let next = headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(wire::next_link);
        Ok(Answer {
            body,
            rows,
            total_count,
            next,
        })
    }
}

/// Turns a response into JSON or a typed error. Pure, so every odd answer ServiceNow gives can be
/// tested without a socket. Nothing is accepted from a body that did not parse.
fn interpret(
    status: StatusCode,
    content_type: &str,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<Value, SnError> {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    let looks_html =
        content_type.contains("html") || trimmed.starts_with('<') && !content_type.contains("json");
    if looks_html {
        return Err(SnError::Html(status.as_u16()));
    }
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    let cancelled =
        text.contains("Transaction cancelled") && text.contains("maximum execution time");
    if status.is_success() {
        let value = match parsed {
            Ok(v) => v,
            Err(_) if cancelled => return Err(SnError::Cancelled),
            Err(e) if body.is_empty() => {
                return Err(SnError::Malformed(format!("empty answer ({e})")));
            }
            Err(e) => {
                return Err(SnError::Malformed(format!(
                    "truncated or invalid JSON ({} bytes, {})",
                    body.len(),
                    e.classify_label()
                )));
            }
        };
        if cancelled && value.get("error").is_some() {
            return Err(SnError::Cancelled);
        }
        if value.get("result").is_none() {
            return Err(SnError::Malformed("JSON answer without result".into()));
        }
        return Ok(value);
    }
    let message = parsed.ok().map(|v| error_message(&v)).unwrap_or_else(|| {
        if cancelled {
            "Transaction cancelled: maximum execution time exceeded".into()
        } else {
            format!("non-JSON error body ({} bytes)", body.len())
        }
    });
    Err(match status.as_u16() {
        401 => SnError::Unauthorized(message),
        403 => SnError::Forbidden(message),
        404 => SnError::NotFound(message),
        code => SnError::Status {
            status: code,
            message,
            retry_after,
        },
    })
}

/// Avoids echoing serde's message, which can quote a fragment of the body.
trait ClassifyLabel {
    fn classify_label(&self) -> &'static str;
}

impl ClassifyLabel for serde_json::Error {
    fn classify_label(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "ends early",
        }
    }
}

/// `error.message` and `error.detail` of a ServiceNow error envelope (detail may be `null`).
fn error_message(v: &Value) -> String {
    let error = v.get("error");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let detail = error
        .and_then(|e| e.get("detail"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let text = match (message.is_empty(), detail.is_empty()) {
        (true, true) => "no error message".to_string(),
        (false, true) => message.to_string(),
        (true, false) => detail.to_string(),
        (false, false) => format!("{message}: {detail}"),
    };
    text.chars().take(300).collect()
}

fn write_params(url: &mut Url, display_values: bool) {
    url.query_pairs_mut()
        .append_pair(
            "sysparm_input_display_value",
            if display_values { "true" } else { "false" },
        )
        .append_pair("sysparm_display_value", "false")
        .append_pair("sysparm_exclude_reference_link", "true")
        .append_pair(
            "sysparm_fields",
            "sys_id,type,expires,sys_mod_count,sys_updated_on",
        );
}

fn record_of(body: Value) -> Result<Map<String, Value>, SnError> {
    match body {
        Value::Object(mut map) => match map.remove("result") {
            Some(Value::Object(record)) => Ok(record),
            _ => Err(SnError::Malformed(
                "write answer without a result record".into(),
            )),
        },
        _ => Err(SnError::Malformed("write answer is not an object".into())),
    }
}

fn set_offset(url: &mut Url, offset: usize) {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "sysparm_offset")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut q = url.query_pairs_mut();
    q.clear();
    for (k, v) in pairs {
        q.append_pair(&k, &v);
    }
    q.append_pair("sysparm_offset", &offset.to_string());
}

fn offset_of(url: &Url) -> Option<usize> {
    url.query_pairs()
        .find(|(k, _)| k == "sysparm_offset")
        .and_then(|(_, v)| v.parse().ok())
}

/// A string field, or the `value` of a reference object.
pub fn field(row: &Value, name: &str) -> String {
    match row.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// Decodes one row; rows of other types are skipped. A bad date-time is logged and read as
/// empty, so one odd row cannot fail the run.
pub fn decode_credential_row(row: &Value) -> Option<CredentialRow> {
    // Only objects are rows (a derived struct would also accept an array, positionally).
    if !row.is_object() {
        return None;
    }
    WireRow::deserialize(row)
        .ok()?
        .into_row(&mut Registries::default())
}

/// The typed fast path of a credential page: the rows of an ordinary successful JSON page, or
/// `None` for anything else (an error status, HTML, a cancellation envelope, no `result`
/// array, a row that is not an object, a repeated key), which [`interpret`] and
/// [`decode_credential_row`] then handle exactly as for any answer.
fn credential_page(
    status: StatusCode,
    content_type: &str,
    body: &[u8],
) -> Option<Vec<CredentialRow>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if !status.is_success() || content_type.contains("html") || first == Some(&b'<') {
        return None;
    }
    // One UTF-8 check of the whole body is cheaper than serde's per string; a body that is not
    // UTF-8 takes the general path.
    let text = std::str::from_utf8(body).ok()?;
    let page: WirePage<'_> = serde_json::from_str(text).ok()?;
    if page.error {
        return None;
    }
    let mut registries = Registries::default();
    Some(
        page.result?
            .into_iter()
            .filter_map(|WireObject(row)| row.into_row(&mut registries))
            .collect(),
    )
}

/// The registries of one page, so that its rows share one [`Registry`] per registry instead
/// of each holding six copies of the same strings (at 50,000 rows, a third of the estate's
/// memory).
#[derive(Default)]
struct Registries {
    by_peer: HashMap<String, Vec<Arc<Registry>>>,
    /// The last one handed out: consecutive rows usually share it.
    last: Option<Arc<Registry>>,
}

impl Registries {
    fn get(&mut self, row: &WireRow<'_>) -> Arc<Registry> {
        let same = |r: &Registry| {
            r.sys_id == row.peer.0
                && r.name == row.peer_name.0
                && r.client_id == row.peer_client_id.0
                && r.token_url == row.peer_token_url.0
                && r.default_grant_type == row.peer_default_grant_type.0
                && r.updated == row.peer_sys_updated_on.0
        };
        if let Some(r) = self.last.as_ref().filter(|r| same(r)) {
            return Arc::clone(r);
        }
        if let Some(r) = self
            .by_peer
            .get(&*row.peer.0)
            .and_then(|known| known.iter().find(|r| same(r)))
        {
            self.last = Some(Arc::clone(r));
            return Arc::clone(r);
        }
        let registry = Arc::new(Registry {
            sys_id: row.peer.0.to_string(),
            name: row.peer_name.0.to_string(),
            client_id: row.peer_client_id.0.to_string(),
            token_url: row.peer_token_url.0.to_string(),
            default_grant_type: row.peer_default_grant_type.0.to_string(),
            updated: row.peer_sys_updated_on.0.to_string(),
        });
        self.by_peer
            .entry(registry.sys_id.clone())
            .or_default()
            .push(Arc::clone(&registry));
        self.last = Some(Arc::clone(&registry));
        registry
    }
}

/// A list answer as the fast path reads it.
#[derive(Deserialize)]
struct WirePage<'a> {
    #[serde(default, borrow)]
    result: Option<Vec<WireObject<'a>>>,
    /// Whether the body has an `error` member (a cancelled transaction's envelope).
    #[serde(default, deserialize_with = "present")]
    error: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// A row that must be a JSON object.
struct WireObject<'a>(WireRow<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for WireObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = WireObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an oauth_credential row object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<WireObject<'de>, A::Error> {
                WireRow::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(WireObject)
            }
        }
        d.deserialize_map(ObjectOnly)
    }
}

/// The columns of [`CREDENTIAL_FIELDS`] as sent, borrowed from the body where possible; a
/// missing one reads as empty.
#[derive(Deserialize)]
struct WireRow<'a> {
    #[serde(default, borrow)]
    sys_id: Text<'a>,
    #[serde(default, borrow, rename = "type")]
    token_type: Text<'a>,
    #[serde(default, borrow)]
    peer: Text<'a>,
    #[serde(default, borrow)]
    oauth_requestor_profile: Text<'a>,
    #[serde(default, borrow)]
    user: Text<'a>,
    #[serde(default, borrow)]
    scopes: Text<'a>,
    #[serde(default, borrow)]
    expires: Text<'a>,
    #[serde(default, borrow)]
    name: Text<'a>,
    #[serde(default, borrow)]
    sys_updated_on: Text<'a>,
    #[serde(default, borrow)]
    sys_mod_count: Text<'a>,
    #[serde(default, borrow, rename = "peer.name")]
    peer_name: Text<'a>,
    #[serde(default, borrow, rename = "peer.client_id")]
    peer_client_id: Text<'a>,
    #[serde(default, borrow, rename = "peer.token_url")]
    peer_token_url: Text<'a>,
    #[serde(default, borrow, rename = "peer.default_grant_type")]
    peer_default_grant_type: Text<'a>,
    #[serde(default, borrow, rename = "peer.sys_updated_on")]
    peer_sys_updated_on: Text<'a>,
}

impl WireRow<'_> {
    fn into_row(self, registries: &mut Registries) -> Option<CredentialRow> {
        let token_type = match &*self.token_type.0 {
            "access_token" => TokenType::Access,
            "refresh_token" => TokenType::Refresh,
            _ => return None,
        };
        if self.sys_id.0.is_empty() {
            return None;
        }
        let registry = registries.get(&self);
        let sys_id = self.sys_id.0.into_owned();
        let date = |name: &str, value: &str| match parse_sn_datetime(value) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(event = "instance.bad_value", credential = %sys_id, column = name, error = %e, "ignoring an unreadable date-time");
                None
            }
        };
        let expires = date("expires", &self.expires.0);
        let updated = date("sys_updated_on", &self.sys_updated_on.0);
        Some(CredentialRow {
            token_type,
            requestor_profile: self.oauth_requestor_profile.0.into_owned(),
            user: self.user.0.into_owned(),
            scopes: self.scopes.0.into_owned(),
            name: self.name.0.into_owned(),
            expires,
            updated,
            mod_count: self.sys_mod_count.0.trim().parse().unwrap_or(0),
            registry,
            sys_id,
        })
    }
}

/// One column's value read as [`field`] reads it: a string as is, a reference object's string
/// `value`, a number or boolean as text, anything else empty.
#[derive(Default)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(serde_json::Number::from(v).to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(serde_json::Number::from(v).to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(
                    serde_json::Number::from_f64(v).map_or_else(String::new, |n| n.to_string()),
                )))
            }
            fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                Ok(Text::default())
            }
            fn visit_none<E>(self) -> Result<Text<'de>, E> {
                Ok(Text::default())
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Text<'de>, D::Error> {
                Text::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Text<'de>, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Text::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Text<'de>, A::Error> {
                // A reference object: its `value` when that is a string (the last one wins, as
                // in a JSON value).
                let mut value = Cow::Borrowed("");
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "value" {
                        value = match map.next_value::<Value>()? {
                            Value::String(s) => Cow::Owned(s),
                            _ => Cow::Borrowed(""),
                        };
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Text(value))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(body: &str) -> Result<Value, SnError> {
        interpret(
            StatusCode::OK,
            "application/json;charset=UTF-8",
            body.as_bytes(),
            None,
        )
    }

    #[test]
    fn odd_answers_are_typed_errors() {
        assert!(matches!(
            interpret(
                StatusCode::OK,
                "text/html",
                b"<html>Instance Hibernating</html>",
                None
            ),
            Err(SnError::Html(200))
        ));
        assert!(matches!(
            ok(r#"{"result":[{"sys_id":"a"#),
            Err(SnError::Malformed(_))
        ));
        assert!(matches!(
            ok(
                r#"{"result":[{"sys_id":"a"}],"error":{"message":"Transaction cancelled: maximum execution time exceeded","detail":"Transaction cancelled: maximum execution time exceeded Check logs"},"status":"failure"}"#
            ),
            Err(SnError::Cancelled)
        ));
        assert!(matches!(
            ok(
                r#"{"result":[{"sys_id":"a"},"error":{"message":"Transaction cancelled: maximum execution time exceeded""#
            ),
            Err(SnError::Cancelled)
        ));
        assert!(matches!(ok("not json"), Err(SnError::Malformed(_))));
        assert!(matches!(ok(""), Err(SnError::Malformed(_))));
        let unauthorized = interpret(
            StatusCode::UNAUTHORIZED,
            "application/json",
            br#"{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}"#,
            None,
        );
        match unauthorized {
            Err(SnError::Unauthorized(m)) => assert!(m.contains("User Not Authenticated")),
            other => panic!("{other:?}"),
        }
        let forbidden = interpret(
            StatusCode::FORBIDDEN,
            "application/json",
            br#"{"error":{"message":"Insufficient rights to query records","detail":null},"status":"failure"}"#,
            None,
        );
        assert!(
            matches!(forbidden, Err(SnError::Forbidden(m)) if m == "Insufficient rights to query records")
        );
        let limited = interpret(
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            br#"{"error":{"message":"Rate limit exceeded","detail":"x"},"status":"failure"}"#,
            Some(Duration::from_secs(3)),
        );
        assert!(matches!(
            limited,
            Err(SnError::Status {
                status: 429,
                retry_after: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn decodes_rows_with_references_and_dot_walks() {
        let v: Value = serde_json::from_str(
            r#"{"sys_id":"r1","type":"refresh_token","peer":{"link":"x","value":"e1"},"oauth_requestor_profile":"p1","user":"","scopes":"a b","expires":"2026-07-01 10:00:00","name":"n","sys_updated_on":"bad","sys_mod_count":"3","peer.name":"Graph","peer.client_id":"cid","peer.token_url":"https://t"}"#,
        )
        .unwrap();
        let row = decode_credential_row(&v).unwrap();
        assert_eq!(row.registry.sys_id, "e1");
        assert_eq!(row.registry.name, "Graph");
        assert_eq!(row.mod_count, 3);
        assert!(row.expires.is_some());
        assert!(row.updated.is_none());
        let other: Value = serde_json::from_str(r#"{"sys_id":"x","type":"code"}"#).unwrap();
        assert!(decode_credential_row(&other).is_none());
    }

    proptest! {
        #[test]
        fn interpret_never_panics(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..200), html in any::<bool>()) {
            let ct = if html { "text/html" } else { "application/json" };
            let status = StatusCode::from_u16(status).unwrap();
            let _ = interpret(status, ct, &body, None);
        }

        #[test]
        fn row_decoder_never_panics(json in "\\{(\"[a-z_.]{1,12}\":\"[ -~]{0,20}\",?){0,8}\\}") {
            if let Ok(v) = serde_json::from_str::<Value>(&json) {
                let _ = decode_credential_row(&v);
            }
        }

        #[test]
        fn typed_decoding_reads_rows_as_field_does(row in wire_row()) {
            prop_assert_eq!(decode_credential_row(&row), decode_by_field(&row));
        }

        #[test]
        fn the_page_fast_path_agrees_with_the_value_path(rows in proptest::collection::vec(wire_row(), 0..6)) {
            let body = serde_json::json!({ "result": rows }).to_string();
            let fast = credential_page(StatusCode::OK, "application/json;charset=UTF-8", body.as_bytes());
            // The old path: the same bytes through a JSON value.
            let parsed: Value = serde_json::from_str(&body).unwrap();
            let slow: Vec<CredentialRow> = parsed["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(decode_credential_row)
                .collect();
            prop_assert_eq!(fast, Some(slow));
        }
    }

    /// The decoder as it was before the typed fast path: the reference the typed one must match.
    fn decode_by_field(row: &Value) -> Option<CredentialRow> {
        let token_type = match field(row, "type").as_str() {
            "access_token" => TokenType::Access,
            "refresh_token" => TokenType::Refresh,
            _ => return None,
        };
        let sys_id = field(row, "sys_id");
        if sys_id.is_empty() {
            return None;
        }
        let date = |name: &str| parse_sn_datetime(&field(row, name)).ok().flatten();
        Some(CredentialRow {
            token_type,
            requestor_profile: field(row, "oauth_requestor_profile"),
            user: field(row, "user"),
            scopes: field(row, "scopes"),
            name: field(row, "name"),
            expires: date("expires"),
            updated: date("sys_updated_on"),
            mod_count: field(row, "sys_mod_count").trim().parse().unwrap_or(0),
            registry: Arc::new(Registry {
                sys_id: field(row, "peer"),
                name: field(row, "peer.name"),
                client_id: field(row, "peer.client_id"),
                token_url: field(row, "peer.token_url"),
                default_grant_type: field(row, "peer.default_grant_type"),
                updated: field(row, "peer.sys_updated_on"),
            }),
            sys_id,
        })
    }

    /// A column value of any JSON shape the instance (or a proxy) might send.
    fn wire_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => "[a-z0-9_ :.-]{0,12}".prop_map(Value::from),
            1 => Just(Value::from("2026-07-01 10:00:00")),
            1 => Just(Value::from("refresh_token")),
            1 => Just(Value::from("access_token")),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => (-1e6f64..1e6).prop_map(Value::from),
            1 => any::<bool>().prop_map(Value::from),
            1 => Just(Value::Null),
            1 => proptest::collection::vec(any::<u8>().prop_map(Value::from), 0..3).prop_map(Value::Array),
            1 => ("[a-z]{0,6}", any::<bool>()).prop_map(|(v, as_string)| {
                if as_string {
                    serde_json::json!({ "link": "https://i/x", "value": v })
                } else {
                    serde_json::json!({ "value": 7, "link": v })
                }
            }),
        ]
    }

    /// A row object: some of the discovery columns, plus an unknown one now and then.
    fn wire_row() -> impl Strategy<Value = Value> {
        let columns: Vec<&'static str> = CREDENTIAL_FIELDS.split(',').chain(["other"]).collect();
        proptest::collection::vec((proptest::sample::select(columns), wire_value()), 0..18)
            .prop_map(|pairs| {
                let mut map = Map::new();
                map.insert("sys_id".into(), Value::from("r1"));
                map.insert("type".into(), Value::from("refresh_token"));
                for (k, v) in pairs {
                    map.insert(k.to_string(), v);
                }
                Value::Object(map)
            })
    }

    #[test]
    fn odd_pages_leave_the_fast_path() {
        let ok = |body: &str| credential_page(StatusCode::OK, "application/json", body.as_bytes());
        assert_eq!(ok(r#"{"result":[]}"#), Some(Vec::new()));
        // A row that is not an object, a cancellation envelope, no result, repeated keys, HTML.
        assert_eq!(ok(r#"{"result":["x"]}"#), None);
        assert_eq!(ok(r#"{"result":[[1,2]]}"#), None);
        assert_eq!(
            ok(r#"{"result":[],"error":{"message":"Transaction cancelled"}}"#),
            None
        );
        assert_eq!(ok(r#"{"result":[],"error":null}"#), None);
        assert_eq!(ok(r#"{"status":"ok"}"#), None);
        assert_eq!(ok(r#"{"result":[{"sys_id":"a","sys_id":"b"}]}"#), None);
        assert_eq!(ok(" <html></html>"), None);
        assert_eq!(
            credential_page(StatusCode::OK, "text/html", br#"{"result":[]}"#),
            None
        );
        assert_eq!(
            credential_page(
                StatusCode::FORBIDDEN,
                "application/json",
                br#"{"result":[]}"#
            ),
            None
        );
        // An array row is no row, on both paths.
        assert!(decode_credential_row(&serde_json::json!(["r1", "refresh_token"])).is_none());
    }
}
