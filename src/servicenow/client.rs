//! The instance client: authentication on every call, retries with backoff and a budget,
//! capped bodies, and the decoding of every answer into JSON or a typed [`SnError`].

use super::auth::TokenSource;
use super::decode::credential_page;
use super::error::{SnError, interpret};
use super::transcript::Recorder;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{InstanceAuthSettings, InstanceGrant, InstanceSettings, is_loopback_host};
use crate::domain::credential::CredentialRow;
use crate::domain::scrub::Scrubber;
use crate::observe::{Observer, Peer, instance_endpoint};
use crate::pacing::{FullJitter, RetryBudget};
use crate::wire::{self, BodyError};
use backon::Retryable;
use base64::Engine;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The encrypted column a write puts a token in (`oauth_credential.token_received`).
pub(super) const TOKEN_COLUMN: &str = "token_received";

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
pub(super) struct Answer {
    /// The HTTP status (a success, or a [`Decode::Conflict`] answer's 409).
    pub(super) status: u16,
    pub(super) body: Value,
    /// The decoded rows of a credential page read with [`Decode::CredentialPage`] whose body
    /// took the typed fast path; `None` otherwise (then `body` holds the answer).
    pub(super) rows: Option<Vec<CredentialRow>>,
    pub(super) total_count: Option<usize>,
    pub(super) next: Option<String>,
}

/// How an answer's body is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decode {
    /// Into a JSON value, checked by [`interpret`].
    Json,
    /// A page of `oauth_credential` rows: straight into [`CredentialRow`]s when the body is an
    /// ordinary page, else as [`Decode::Json`]. Discovery reads every row of the estate each
    /// cycle, and building a JSON value per row first cost more than everything else a cycle
    /// does.
    CredentialPage,
    /// Into a JSON value, where a `409` whose body carries a `result` is an answer too: the
    /// companion's "lease held by another keeper".
    Conflict,
}

/// The Table API + companion client.
#[derive(Clone)]
pub struct Instance {
    http: reqwest::Client,
    pub(super) base: Url,
    pub(super) username: String,
    credentials: Credentials,
    pub(super) companion_path: String,
    pub(super) page_size: usize,
    retry: RetryPolicy,
    /// Shared with the engine, which refills it at the head of every cycle.
    pub(super) budget: Arc<RetryBudget>,
    /// Told about every request (metrics); see [`Instance::set_observer`].
    pub(super) observer: Observer,
    /// The integration user's time zone, read once (see [`Instance::zone`]).
    pub(super) zone: Arc<tokio::sync::OnceCell<super::rows::Zone>>,
    /// Whether the time-zone mismatch has been said (it is said once per client).
    pub(super) zone_warned: Arc<std::sync::atomic::AtomicBool>,
    /// Where `Retry-After` dates are measured from.
    clock: SharedClock,
    /// Where every exchange is recorded (`--record`); `None`, the usual case, costs one check.
    recorder: Option<Arc<Recorder>>,
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
                InstanceAuthSettings::Basic { password } => Credentials::Basic(password.clone()),
                InstanceAuthSettings::OAuth {
                    client_id,
                    client_secret,
                    grant,
                } => {
                    if matches!(grant, InstanceGrant::Password { .. }) {
                        tracing::warn!(
                            event = "instance.password_grant",
                            "instance.oauth_grant = \"password\": the keeper signs in to the instance with the resource owner password grant, which RFC 9700 forbids; switch to oauth_grant = \"client_credentials\" (ServiceNow Washington DC or later)"
                        );
                    }
                    Credentials::Bearer(Arc::new(TokenSource::new(
                        &settings.url,
                        client_id.clone(),
                        client_secret.clone(),
                        settings.username.clone(),
                        grant.clone(),
                    )))
                }
            },
            companion_path: settings.companion_path.clone(),
            page_size: settings.page_size,
            retry,
            budget: Arc::new(RetryBudget::new(u32::MAX)),
            observer: Observer::none(),
            zone: Arc::new(tokio::sync::OnceCell::new()),
            zone_warned: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            clock: SystemClock::shared(),
            recorder: None,
        })
    }

    /// Records every exchange with the instance from now on (`--record DIR`).
    pub fn set_recorder(&mut self, recorder: Arc<Recorder>) {
        self.recorder = Some(recorder);
    }

    /// Retries calls as `retry` says from now on.
    pub fn set_retry_policy(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    /// Reports every request from now on to `observer` (method, endpoint id, status, duration).
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = observer;
    }

    /// Reads the time from `clock` from now on.
    pub fn set_clock(&mut self, clock: SharedClock) {
        self.clock = clock;
    }

    /// The retry budget every call of this client draws from.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// The instance's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    pub(super) fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}{}", self.base.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }

    pub(super) fn table_url(&self, table: &str, sys_id: Option<&str>) -> Url {
        match sys_id {
            Some(id) => self.url(&format!("/api/now/table/{table}/{id}")),
            None => self.url(&format!("/api/now/table/{table}")),
        }
    }

    /// One call with retries: idempotent calls on any retryable failure, others only when the
    /// instance surely did not process them.
    pub(super) async fn call(
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
    pub(super) async fn call_as(
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

    /// What one request carries that an error answer must not repeat: the password (also as
    /// the `Basic` credential it went out in) or the bearer token, and a token being written.
    fn scrubber_of(&self, authorization: &Authorization<'_>, body: Option<&Value>) -> Scrubber {
        let scrubber = match authorization {
            Authorization::Basic(password) => {
                let pair = format!("{}:{}", self.username, password.expose_secret());
                Scrubber::new()
                    .secret(password.expose_secret())
                    .literal(&base64::engine::general_purpose::STANDARD.encode(pair))
            }
            Authorization::Bearer(token) => Scrubber::new().secret(token.expose_secret()),
        };
        match body
            .and_then(|b| b.get(TOKEN_COLUMN))
            .and_then(Value::as_str)
        {
            Some(token) => scrubber.secret(token),
            None => scrubber,
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
        let recorded = self
            .recorder
            .as_ref()
            .map(|_| (method.clone(), url.clone()));
        let scrubber = self.scrubber_of(&authorization, body.as_ref());
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
        if let Some(body) = &body {
            request = request.json(body);
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
        let body_bytes = wire::read_capped(response).await.map_err(|e| match e {
            BodyError::Transport(t) => SnError::NoAnswer(t),
            BodyError::TooLarge => {
                SnError::Malformed(format!("answer larger than {} bytes", wire::MAX_BODY))
            }
        })?;
        if let (Some(recorder), Some((method, url))) = (&self.recorder, &recorded) {
            recorder.record(
                method.as_str(),
                url,
                body.as_ref(),
                status,
                &headers,
                &body_bytes,
            );
        }
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let retry_after = wire::retry_after(&headers, status.as_u16(), self.clock.now());
        let fast = match decode {
            Decode::CredentialPage => credential_page(status, &content_type, &body_bytes),
            Decode::Json | Decode::Conflict => None,
        };
        let conflict = (decode == Decode::Conflict && status == StatusCode::CONFLICT)
            .then(|| serde_json::from_slice::<Value>(&body_bytes).ok())
            .flatten()
            .filter(|v| v.get("result").is_some());
        let (body, rows) = match (fast, conflict) {
            (Some(rows), _) => (Value::Null, Some(rows)),
            (None, Some(answer)) => (answer, None),
            (None, None) => (
                interpret(status, &content_type, &body_bytes, retry_after, &scrubber)?,
                None,
            ),
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
            status: status.as_u16(),
            body,
            rows,
            total_count,
            next,
        })
    }
}
