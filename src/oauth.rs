//! The token-endpoint adapter: one `refresh_token` grant, built and parsed by pure functions and
//! sent by a thin reqwest call. Hand-rolled rather than the `oauth2` crate: it must accept
//! `expires_in` as a string, form-encoded and HTTP-200 error answers, keep the HTTP headers
//! (`Retry-After`), and never keep a raw body that may hold tokens.

use crate::client_auth::{ASSERTION_TYPE, AssertionError};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{ClientAuth, RegistrySettings, TokenEndpointKind, is_loopback_host};
use crate::domain::classify::{FailureClass, ProviderErrorCode, classify_provider};
use crate::domain::endpoint::is_entra_host;
use crate::domain::guidance::TokenFailure;
use crate::domain::scrub::Scrubber;
use crate::observe::{Observer, Peer, token_endpoint};
use crate::pacing::{FullJitter, RetryBudget};
use crate::wire::{self, BodyError};
use backon::Retryable;
use base64::Engine;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// What the keeper sends for one refresh.
pub struct RefreshRequest<'a> {
    /// The registry's token endpoint.
    pub token_url: &'a str,
    /// The registry's client id.
    pub client_id: &'a str,
    /// The client secret, when the client is confidential.
    pub client_secret: Option<&'a SecretString>,
    /// The refresh token.
    pub refresh_token: &'a SecretString,
    /// The scope, always sent when known (Entra v2 needs it).
    pub scope: Option<&'a str>,
    /// How the client authenticates.
    pub client_auth: ClientAuth,
    /// The keeper's `[[registry]]` overrides, if any: the endpoint's kind, the `resource`, and
    /// the signing key of `private_key_jwt`.
    pub registry: Option<&'a RegistrySettings>,
}

impl RefreshRequest<'_> {
    /// The endpoint's kind: as configured, else as the token URL says.
    pub fn kind(&self) -> TokenEndpointKind {
        self.registry
            .and_then(|r| r.kind)
            .unwrap_or_else(|| detect_kind(self.token_url))
    }
}

/// The kind of a token endpoint, from its URL: an Entra host with `…/oauth2/v2.0/token` is v2,
/// with `…/oauth2/token` v1, whatever the tenant segment before it (a tenant id, a domain,
/// `organizations`, `common`, `consumers`, a B2C policy). Anything else is generic; a config
/// tells the kind where the host does not (a proxy, a test server). Pure.
pub fn detect_kind(token_url: &str) -> TokenEndpointKind {
    let Ok(url) = url::Url::parse(token_url.trim()) else {
        return TokenEndpointKind::Generic;
    };
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    if !is_entra_host(&host) {
        return TokenEndpointKind::Generic;
    }
    let path = url.path().trim_end_matches('/').to_ascii_lowercase();
    if path.ends_with("/oauth2/v2.0/token") {
        TokenEndpointKind::EntraV2
    } else if path.ends_with("/oauth2/token") {
        TokenEndpointKind::EntraV1
    } else {
        TokenEndpointKind::Generic
    }
}

/// Entra v1's `resource` from a v2-style scope when the config names none: the App ID URI is
/// the first URI-shaped scope without its last path segment (the permission or `.default`), so
/// `https://contoso.sharepoint.com/.default` asks for `https://contoso.sharepoint.com`. Pure.
pub fn resource_from_scope(scope: &str) -> Option<String> {
    let first = scope.split_whitespace().find(|s| s.contains("://"))?;
    let (scheme, rest) = first.split_once("://")?;
    let resource = match rest.rfind('/') {
        Some(slash) if slash > 0 => &rest[..slash],
        _ => rest,
    };
    (!resource.is_empty()).then(|| format!("{scheme}://{resource}"))
}

/// Retries of one token request when the provider throttles or fails transiently (a lost answer
/// gets its own single retry on top).
const TOKEN_RETRIES: u32 = 2;
/// Ceiling of the first backoff between token attempts, and the largest one.
const TOKEN_BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(10));
/// Largest `Retry-After` honoured inside a cycle; longer waits defer to the next cycle.
const TOKEN_MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A token endpoint's successful answer.
pub struct TokenSet {
    /// The new access token.
    pub access_token: SecretString,
    /// The new refresh token, when the provider rotated it; `None` means keep the old one.
    pub refresh_token: Option<SecretString>,
    /// `expires_in`, from a number or a string.
    pub expires_in: Option<Duration>,
    /// `expires_on` (Entra v1), epoch seconds.
    pub expires_on: Option<Timestamp>,
    /// `refresh_token_expires_in` (GitHub and others).
    pub refresh_expires_in: Option<Duration>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[REDACTED]")
            .field("rotated", &self.refresh_token.is_some())
            .field("expires_in", &self.expires_in)
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// An OAuth error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// What classification reads.
    pub code: ProviderErrorCode,
    /// `error_description`, shortened and with any secret we sent removed.
    pub description: String,
    /// Entra's `trace_id`, kept for support tickets.
    pub trace_id: Option<String>,
    /// Entra's `correlation_id`.
    pub correlation_id: Option<String>,
    /// How long the provider asked us to wait.
    pub retry_after: Option<Duration>,
}

/// A failed refresh at the token endpoint. No variant holds a response body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The provider answered with an OAuth error.
    #[error("provider answered HTTP {} {}{}", .0.code.status, if .0.code.error.is_empty() { "without an error code" } else { .0.code.error.as_str() }, codes_suffix(&.0.code.error_codes))]
    Rejected(Box<ProviderError>),
    /// A non-OAuth error answer (a plain-text 429, an HTML 502 from a gateway).
    #[error("provider answered HTTP {status} without an OAuth error body")]
    Http {
        /// HTTP status.
        status: u16,
        /// How long the provider asked us to wait.
        retry_after: Option<Duration>,
    },
    /// No connection could be made: the request was surely not processed.
    #[error("cannot reach the token endpoint: {0}")]
    Unreachable(String),
    /// The request was sent but the answer was lost (timeout, reset): the provider may have
    /// consumed and rotated the refresh token.
    #[error("the token endpoint's answer was lost: {0}")]
    LostAnswer(String),
    /// A success status whose body did not parse; as dangerous as a lost answer.
    #[error("unreadable answer from the token endpoint: {0}")]
    Malformed(String),
    /// The token URL is not acceptable (http:// to a non-loopback host, unparseable).
    #[error("token_url rejected: {0}")]
    BadUrl(String),
}

fn codes_suffix(codes: &[u64]) -> String {
    match codes.first() {
        Some(c) => format!(" (AADSTS{c})"),
        None => String::new(),
    }
}

impl TokenError {
    /// The failure class.
    pub fn class(&self) -> FailureClass {
        match self {
            TokenError::Rejected(e) => classify_provider(&e.code),
            TokenError::Http { status: 429, .. } => FailureClass::Throttled,
            TokenError::Http { status, .. } if *status >= 500 => FailureClass::Transient,
            TokenError::Http { .. } | TokenError::BadUrl(_) => FailureClass::Configuration,
            TokenError::Unreachable(_) | TokenError::LostAnswer(_) | TokenError::Malformed(_) => {
                FailureClass::Transient
            }
        }
    }

    /// Whether the provider may have consumed the refresh token without us seeing the answer.
    pub fn answer_lost(&self) -> bool {
        matches!(self, TokenError::LostAnswer(_) | TokenError::Malformed(_))
    }

    /// Whether sending the same request again is safe and may succeed: the provider refused it
    /// before using the token (throttling, outage, unreachable).
    pub fn retry_now(&self) -> bool {
        match self {
            TokenError::Unreachable(_) => true,
            TokenError::Http { status, .. } => *status == 429 || *status >= 500,
            TokenError::Rejected(e) => {
                matches!(
                    classify_provider(&e.code),
                    FailureClass::Transient | FailureClass::Throttled
                ) && e.code.status != 200
            }
            _ => false,
        }
    }

    /// How the request failed, as far as guidance cares.
    pub fn failure(&self) -> TokenFailure<'_> {
        match self {
            TokenError::Rejected(p) => TokenFailure::Rejected(&p.code),
            TokenError::BadUrl(_) => TokenFailure::BadUrl,
            TokenError::LostAnswer(_) | TokenError::Malformed(_) => TokenFailure::Lost,
            TokenError::Unreachable(_) => TokenFailure::Unreachable,
            TokenError::Http { .. } => TokenFailure::Http,
        }
    }

    /// The wait the provider asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Rejected(e) => e.retry_after,
            TokenError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The token endpoint client.
#[derive(Clone, Debug)]
pub struct TokenClient {
    http: reqwest::Client,
    /// Where assertion timestamps and `Retry-After` dates come from.
    clock: SharedClock,
    /// Told about every request (metrics); see [`TokenClient::set_observer`].
    observer: Observer,
}

impl TokenClient {
    /// A client with a total deadline per request.
    pub fn new(timeout: Duration, loopback: bool) -> Result<TokenClient, reqwest::Error> {
        Ok(TokenClient {
            http: wire::build_client(timeout, loopback)?,
            clock: SystemClock::shared(),
            observer: Observer::none(),
        })
    }

    /// Reads the time from `clock` from now on.
    pub fn set_clock(&mut self, clock: SharedClock) {
        self.clock = clock;
    }

    /// Reports every request from now on to `observer` (endpoint host, status, duration).
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = observer;
    }

    /// Sends a refresh request with its retry rules: a throttled or failing provider is retried
    /// with full-jitter backoff (honouring `Retry-After`, drawing on `budget`); a lost answer is
    /// retried once with the same refresh token, then the credential waits for the next cycle.
    /// `on_retry` hears of each retry and its delay.
    pub async fn refresh_with_retries(
        &self,
        request: &RefreshRequest<'_>,
        budget: &RetryBudget,
        on_retry: impl Fn(&TokenError, Duration),
    ) -> Result<TokenSet, TokenError> {
        let lost_retried = AtomicBool::new(false);
        let transient_retries = AtomicU32::new(0);
        (|| self.refresh(request))
            .retry(FullJitter::new(
                TOKEN_BACKOFF.0,
                TOKEN_BACKOFF.1,
                TOKEN_RETRIES + 1,
            ))
            .when(|e: &TokenError| {
                if e.answer_lost() {
                    return !lost_retried.swap(true, Ordering::Relaxed);
                }
                e.retry_now()
                    && e.retry_after().is_none_or(|d| d <= TOKEN_MAX_RETRY_AFTER)
                    && transient_retries.fetch_add(1, Ordering::Relaxed) < TOKEN_RETRIES
                    && budget.try_take()
            })
            .adjust(|e: &TokenError, proposed| {
                // `None` (attempts exhausted) stays `None`; a Retry-After only lengthens a wait.
                proposed.map(|d| e.retry_after().map_or(d, |ra| ra.max(d)))
            })
            .notify(|e: &TokenError, delay| on_retry(e, delay))
            .await
    }

    /// Sends one refresh request. Never retries by itself: whether a retry is safe depends on
    /// the outcome, which the caller decides with [`TokenError::retry_now`] and
    /// [`TokenError::answer_lost`].
    pub async fn refresh(&self, request: &RefreshRequest<'_>) -> Result<TokenSet, TokenError> {
        let url = check_token_url(request.token_url)?;
        let endpoint = token_endpoint(&url);
        // Built for every attempt: a client assertion is good for one request only.
        let (form, basic) = build_form(request, self.clock.now())
            .map_err(|e| TokenError::Unreachable(format!("{e}; nothing was sent")))?;
        let mut builder = self
            .http
            .post(url)
            .header("Accept", "application/json")
            .form(&form);
        if let Some(header) = basic {
            let mut value = reqwest::header::HeaderValue::from_str(&header).map_err(|_| {
                TokenError::BadUrl("client id or secret cannot form a header".into())
            })?;
            value.set_sensitive(true);
            builder = builder.header(reqwest::header::AUTHORIZATION, value);
        }
        let mut probe = self.observer.probe(Peer::TokenEndpoint, endpoint, "POST");
        let response = builder.send().await.map_err(|e| {
            if e.is_connect() {
                TokenError::Unreachable(wire::describe_transport(&e))
            } else {
                TokenError::LostAnswer(wire::describe_transport(&e))
            }
        })?;
        let status = response.status().as_u16();
        probe.status(status);
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let retry_after = wire::retry_after(&headers, status, self.clock.now());
        let body = wire::read_capped(response).await.map_err(|e| match e {
            BodyError::Transport(t) => TokenError::LostAnswer(t),
            BodyError::TooLarge => {
                TokenError::Malformed(format!("answer larger than {} bytes", wire::MAX_BODY))
            }
        })?;
        let scrubber = scrubber_of(request, &form);
        parse_token_response(status, &content_type, &body, retry_after, &scrubber)
    }
}

/// Every secret one request carried, in the forms a provider may echo them in: the refresh
/// token, the client secret (and its `Basic` credential), the client assertion.
fn scrubber_of(request: &RefreshRequest<'_>, form: &[(&'static str, String)]) -> Scrubber {
    let mut scrubber = Scrubber::new().secret(request.refresh_token.expose_secret());
    if let Some(secret) = request.client_secret {
        scrubber = scrubber
            .secret(secret.expose_secret())
            .basic(request.client_id, secret.expose_secret());
    }
    if let Some((_, assertion)) = form.iter().find(|(k, _)| *k == "client_assertion") {
        scrubber = scrubber.secret(assertion);
    }
    scrubber
}

/// Only https token endpoints, except on loopback: the refresh token and client secret travel in
/// the body.
fn check_token_url(text: &str) -> Result<url::Url, TokenError> {
    let url = url::Url::parse(text.trim())
        .map_err(|_| TokenError::BadUrl("token_url is not a URL".into()))?;
    let host = url.host_str().unwrap_or("");
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_host(host) => Ok(url),
        _ => Err(TokenError::BadUrl(format!(
            "token_url must be https:// (got {}://{host})",
            url.scheme()
        ))),
    }
}

/// A form body and, for `client_secret_basic`, the Authorization header value.
pub type TokenForm = (Vec<(&'static str, String)>, Option<String>);

/// The form body and, for `client_secret_basic`, the Authorization header value. Pure but for
/// the random `jti` of a `private_key_jwt` assertion, signed for `now`.
///
/// Which parameters ask for access depends on the endpoint's kind: Entra v1 gets `resource`
/// (configured, else derived from the scope) and no `scope`; Entra v2 and generic servers get
/// `scope` whenever it is known, and `resource` only when the config names one.
pub fn build_form(
    request: &RefreshRequest<'_>,
    now: Timestamp,
) -> Result<TokenForm, AssertionError> {
    let mut form = vec![
        ("grant_type", "refresh_token".to_string()),
        (
            "refresh_token",
            request.refresh_token.expose_secret().to_string(),
        ),
        ("client_id", request.client_id.to_string()),
    ];
    let scope = request.scope.filter(|s| !s.trim().is_empty());
    let configured_resource = request.registry.and_then(|r| r.resource.clone());
    match request.kind() {
        TokenEndpointKind::EntraV1 => {
            if let Some(resource) =
                configured_resource.or_else(|| scope.and_then(resource_from_scope))
            {
                form.push(("resource", resource));
            }
        }
        TokenEndpointKind::EntraV2 | TokenEndpointKind::Generic => {
            if let Some(scope) = scope {
                form.push(("scope", scope.to_string()));
            }
            if let Some(resource) = configured_resource {
                form.push(("resource", resource));
            }
        }
    }
    let mut basic = None;
    match (request.client_auth, request.client_secret) {
        (ClientAuth::PrivateKeyJwt, _) => {
            // RFC 7521 §4.2: client_id may go along when it matches the assertion's `sub`;
            // Entra wants it. Without a key (only possible outside the config) nothing
            // authenticates the client, and the provider's invalid_client says so.
            if let Some(key) = request.registry.and_then(|r| r.assertion_key.as_ref()) {
                let assertion = key.assertion(request.client_id, request.token_url.trim(), now)?;
                form.push(("client_assertion_type", ASSERTION_TYPE.to_string()));
                form.push(("client_assertion", assertion.expose_secret().to_string()));
            }
        }
        (ClientAuth::Post, Some(secret)) => {
            form.push(("client_secret", secret.expose_secret().to_string()));
        }
        (ClientAuth::Basic, Some(secret)) => {
            // RFC 6749 §2.3.1: each part form-urlencoded before joining and base64.
            let id: String =
                url::form_urlencoded::byte_serialize(request.client_id.as_bytes()).collect();
            let pw: String =
                url::form_urlencoded::byte_serialize(secret.expose_secret().as_bytes()).collect();
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{pw}"));
            basic = Some(format!("Basic {encoded}"));
        }
        (ClientAuth::Post | ClientAuth::Basic, None) => {}
    }
    Ok((form, basic))
}

/// Longest `error` code kept.
const MAX_CODE: usize = 64;
/// Longest `error_description` kept (its first line).
const MAX_DESCRIPTION: usize = 300;

/// Parses a token endpoint answer leniently: JSON or form-encoded, `expires_in` as number or
/// string, HTTP-200 error bodies. Every text field kept (`error`, `error_description`,
/// `suberror`, `trace_id`, `correlation_id`) goes through `scrubber` whole before it is cut,
/// and comes out printable. Pure.
pub fn parse_token_response(
    status: u16,
    content_type: &str,
    body: &[u8],
    retry_after: Option<Duration>,
    scrubber: &Scrubber,
) -> Result<TokenSet, TokenError> {
    let fields = decode_fields(content_type, body);
    let success = (200..300).contains(&status);
    let Some(fields) = fields else {
        return Err(if success {
            TokenError::Malformed(format!(
                "{} bytes that are neither JSON nor a form",
                body.len()
            ))
        } else {
            TokenError::Http {
                status,
                retry_after,
            }
        });
    };
    let text = |k: &str| match fields.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(error) = text("error") {
        let error_codes = match fields.get("error_codes") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .collect(),
            _ => Vec::new(),
        };
        let kept = |k: &str| text(k).map(|t| scrubber.clean(&t, MAX_CODE));
        return Err(TokenError::Rejected(Box::new(ProviderError {
            code: ProviderErrorCode {
                status,
                error: scrubber.clean(&error, MAX_CODE),
                error_codes,
                suberror: kept("suberror"),
            },
            description: scrubber.clean_line(
                &text("error_description").unwrap_or_default(),
                MAX_DESCRIPTION,
            ),
            trace_id: kept("trace_id"),
            correlation_id: kept("correlation_id"),
            retry_after,
        })));
    }
    if !success {
        return Err(TokenError::Http {
            status,
            retry_after,
        });
    }
    let Some(access_token) = text("access_token") else {
        return Err(TokenError::Malformed(
            "no access_token in a success answer".into(),
        ));
    };
    let seconds = |k: &str| {
        text(k).and_then(|v| {
            let v = v.trim();
            v.parse::<u64>().ok().or_else(|| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
        })
    };
    Ok(TokenSet {
        access_token: SecretString::from(access_token),
        refresh_token: text("refresh_token").map(SecretString::from),
        expires_in: seconds("expires_in").map(Duration::from_secs),
        expires_on: seconds("expires_on")
            .and_then(|s| i64::try_from(s).ok())
            .and_then(|s| Timestamp::from_second(s).ok()),
        refresh_expires_in: seconds("refresh_token_expires_in").map(Duration::from_secs),
    })
}

/// Top-level fields of a JSON object or a form-encoded body.
fn decode_fields(content_type: &str, body: &[u8]) -> Option<HashMap<String, Value>> {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        return Some(map.into_iter().collect());
    }
    let text = std::str::from_utf8(body).ok()?.trim();
    let form_like = content_type.contains("x-www-form-urlencoded")
        || (!text.is_empty() && !text.starts_with(['{', '[', '<']) && text.contains('='));
    if !form_like {
        return None;
    }
    let map: HashMap<String, Value> = url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    (!map.is_empty()).then_some(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A fixed moment for assertions' timestamps.
    fn at_noon() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn parse(status: u16, ct: &str, body: &str) -> Result<TokenSet, TokenError> {
        let scrubber = Scrubber::new().secret("rt-secret-1234");
        parse_token_response(status, ct, body.as_bytes(), None, &scrubber)
    }

    #[test]
    fn lenient_success_shapes() {
        let entra = parse(200, "application/json", r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"at1","refresh_token":"rt2"}"#).unwrap();
        assert_eq!(entra.expires_in, Some(Duration::from_secs(3599)));
        assert!(entra.refresh_token.is_some());
        let v1 = parse(
            200,
            "application/json",
            r#"{"expires_in":"3600","expires_on":"1460404526","access_token":"at1"}"#,
        )
        .unwrap();
        assert_eq!(v1.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(v1.expires_on.map(|t| t.as_second()), Some(1_460_404_526));
        assert!(
            v1.refresh_token.is_none(),
            "no refresh_token = keep the old one"
        );
        let salesforce = parse(
            200,
            "application/json",
            r#"{"access_token":"at1","instance_url":"x","issued_at":"1"}"#,
        )
        .unwrap();
        assert_eq!(salesforce.expires_in, None);
        let github = parse(200, "application/x-www-form-urlencoded", "access_token=ghu_1&expires_in=28800&refresh_token=ghr_2&refresh_token_expires_in=15897600&token_type=bearer").unwrap();
        assert_eq!(
            github.refresh_expires_in,
            Some(Duration::from_secs(15_897_600))
        );
        let empty_rt = parse(
            200,
            "application/json",
            r#"{"access_token":"a","refresh_token":""}"#,
        )
        .unwrap();
        assert!(
            empty_rt.refresh_token.is_none(),
            "an empty refresh_token never blanks the stored one"
        );
    }

    #[test]
    fn errors_are_classified_and_scrubbed() {
        let e = parse(400, "application/json", r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity. rt-secret-1234\r\nTrace ID: x","error_codes":[700082],"trace_id":"t-1","correlation_id":"c-1"}"#).unwrap_err();
        assert_eq!(e.class(), FailureClass::NeedsReauth);
        match &e {
            TokenError::Rejected(p) => {
                assert_eq!(p.code.error_codes, vec![700082]);
                assert!(!p.description.contains("rt-secret-1234"));
                assert!(!p.description.contains("Trace ID"));
                assert_eq!(p.trace_id.as_deref(), Some("t-1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("AADSTS700082"));
        let gh = parse(200, "application/json", r#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired."}"#).unwrap_err();
        assert_eq!(gh.class(), FailureClass::NeedsReauth);
        assert!(!gh.retry_now());
        let plain429 = parse(429, "text/plain", "Too Many Requests").unwrap_err();
        assert!(matches!(plain429, TokenError::Http { status: 429, .. }));
        assert!(plain429.retry_now());
        assert_eq!(plain429.class(), FailureClass::Throttled);
        let garbage = parse(200, "application/json", "{\"access_tok").unwrap_err();
        assert!(garbage.answer_lost());
        let missing = parse(200, "application/json", r#"{"token_type":"Bearer"}"#).unwrap_err();
        assert!(matches!(missing, TokenError::Malformed(_)));
        let loop_detected = parse(
            400,
            "application/json",
            r#"{"error":"invalid_grant","error_codes":[50196]}"#,
        )
        .unwrap_err();
        assert_eq!(loop_detected.class(), FailureClass::Throttled);
    }

    #[test]
    fn an_echoed_secret_leaves_no_trace_in_any_kept_field() {
        let long = format!("{}rt-secret-1234", "x".repeat(295));
        let body = serde_json::json!({
            "error": "rt-secret-1234",
            "error_description": long,
            "suberror": "rt-secret-1234",
            "trace_id": "p%40ss%3Aw+rd%2Fx",
            "correlation_id": "\u{1b}[31mrt-secret-1234",
        });
        let scrubber = Scrubber::new()
            .secret("rt-secret-1234")
            .secret("p@ss:w rd/x");
        let e = parse_token_response(
            400,
            "application/json",
            body.to_string().as_bytes(),
            None,
            &scrubber,
        )
        .unwrap_err();
        let TokenError::Rejected(p) = &e else {
            panic!("{e:?}")
        };
        let kept = format!("{p:?} {e}");
        assert!(
            !kept.contains("rt-secret") && !kept.contains("p%40ss"),
            "{kept}"
        );
        assert!(!kept.contains('\u{1b}'), "{kept}");
        assert!(p.description.chars().count() <= MAX_DESCRIPTION);
    }

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let rt = SecretString::from("rt");
        let secret = SecretString::from("p@ss:w rd");
        let req = RefreshRequest {
            token_url: "https://idp/token",
            client_id: "my id",
            client_secret: Some(&secret),
            refresh_token: &rt,
            scope: Some("offline_access"),
            client_auth: ClientAuth::Basic,
            registry: None,
        };
        let (form, basic) = build_form(&req, at_noon()).unwrap();
        assert!(form.iter().all(|(k, _)| *k != "client_secret"));
        assert!(
            form.iter()
                .any(|(k, v)| *k == "scope" && v == "offline_access")
        );
        let header = basic.unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.trim_start_matches("Basic "))
            .unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "my+id:p%40ss%3Aw+rd");
        let post = RefreshRequest {
            client_auth: ClientAuth::Post,
            ..req
        };
        let (form, basic) = build_form(&post, at_noon()).unwrap();
        assert!(basic.is_none());
        assert!(
            form.iter()
                .any(|(k, v)| *k == "client_secret" && v == "p@ss:w rd")
        );
    }

    fn registry(kind: Option<TokenEndpointKind>, resource: Option<&str>) -> RegistrySettings {
        RegistrySettings {
            name: "r".into(),
            client_secret: None,
            scope: None,
            client_auth: ClientAuth::Post,
            default_expires_in: Duration::from_secs(3600),
            refresh_token_lifetime: Duration::from_secs(86_400),
            kind,
            resource: resource.map(str::to_string),
            assertion_key: None,
            token_url: None,
        }
    }

    fn form_of(req: &RefreshRequest<'_>) -> Vec<(&'static str, String)> {
        build_form(req, at_noon()).unwrap().0
    }

    fn value<'f>(form: &'f [(&'static str, String)], key: &str) -> Option<&'f str> {
        form.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_kind_comes_from_the_host_and_path_whatever_the_tenant() {
        use TokenEndpointKind::*;
        for (url, kind) in [
            (
                "https://login.microsoftonline.com/0b5e1f4c-8d2a-4c55-9d0e-6a1f2c3d4e5f/oauth2/v2.0/token",
                EntraV2,
            ),
            (
                "https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
                EntraV2,
            ),
            (
                "https://login.microsoftonline.com/common/oauth2/v2.0/token",
                EntraV2,
            ),
            (
                "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/token",
                EntraV1,
            ),
            (
                "https://login.microsoftonline.com/common/oauth2/token/",
                EntraV1,
            ),
            (
                "https://LOGIN.MicrosoftOnline.com/common/OAuth2/Token",
                EntraV1,
            ),
            (
                "https://login.microsoftonline.us/tenant/oauth2/v2.0/token",
                EntraV2,
            ),
            (
                "https://login.chinacloudapi.cn/tenant/oauth2/token",
                EntraV1,
            ),
            (
                "https://login.partner.microsoftonline.cn/tenant/oauth2/v2.0/token",
                EntraV2,
            ),
            (
                "https://login.microsoftonline.de/tenant/oauth2/token",
                EntraV1,
            ),
            ("https://login.windows.net/tenant/oauth2/token", EntraV1),
            (
                "https://contoso.b2clogin.com/contoso.onmicrosoft.com/b2c_1_signin/oauth2/v2.0/token",
                EntraV2,
            ),
            (
                "https://contoso.ciamlogin.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
                EntraV2,
            ),
            ("https://login.microsoftonline.com/tenant/saml2", Generic),
            ("https://oauth2.googleapis.com/token", Generic),
            ("https://acme.okta.com/oauth2/default/v1/token", Generic),
            (
                "https://evil.example/login.microsoftonline.com/oauth2/v2.0/token",
                Generic,
            ),
            (
                "https://login.microsoftonline.com.evil.example/t/oauth2/v2.0/token",
                Generic,
            ),
            ("http://127.0.0.1:9/t/oauth2/v2.0/token", Generic),
            ("not a url", Generic),
        ] {
            assert_eq!(detect_kind(url), kind, "{url}");
        }
    }

    #[test]
    fn v1_resource_is_configured_or_derived_from_the_scope() {
        assert_eq!(
            resource_from_scope("https://contoso.sharepoint.com/.default offline_access")
                .as_deref(),
            Some("https://contoso.sharepoint.com")
        );
        assert_eq!(
            resource_from_scope("offline_access https://graph.microsoft.com/Mail.Send").as_deref(),
            Some("https://graph.microsoft.com")
        );
        assert_eq!(
            resource_from_scope("api://4f1c/user_impersonation").as_deref(),
            Some("api://4f1c")
        );
        assert_eq!(
            resource_from_scope("https://contoso.com/api/.default").as_deref(),
            Some("https://contoso.com/api")
        );
        assert_eq!(
            resource_from_scope("https://graph.microsoft.com").as_deref(),
            Some("https://graph.microsoft.com")
        );
        assert_eq!(resource_from_scope("openid offline_access"), None);
    }

    #[test]
    fn each_kind_asks_for_access_its_own_way() {
        let rt = SecretString::from("rt");
        let base = RefreshRequest {
            token_url: "https://login.microsoftonline.com/common/oauth2/token",
            client_id: "c",
            client_secret: None,
            refresh_token: &rt,
            scope: Some("https://contoso.sharepoint.com/.default offline_access"),
            client_auth: ClientAuth::Post,
            registry: None,
        };
        // Detected v1: resource derived from the scope, no scope.
        let form = form_of(&base);
        assert_eq!(
            value(&form, "resource"),
            Some("https://contoso.sharepoint.com")
        );
        assert_eq!(value(&form, "scope"), None);
        // Configured v1 resource wins.
        let v1 = registry(None, Some("https://graph.microsoft.com"));
        let form = form_of(&RefreshRequest {
            registry: Some(&v1),
            ..base
        });
        assert_eq!(
            value(&form, "resource"),
            Some("https://graph.microsoft.com")
        );
        // v2: scope, never a derived resource.
        let v2 = RefreshRequest {
            token_url: "https://login.microsoftonline.us/organizations/oauth2/v2.0/token",
            ..base
        };
        let form = form_of(&v2);
        assert_eq!(
            value(&form, "scope"),
            Some("https://contoso.sharepoint.com/.default offline_access")
        );
        assert_eq!(value(&form, "resource"), None);
        // The config tells the kind where the host does not.
        let told = registry(
            Some(TokenEndpointKind::EntraV1),
            Some("https://api.example/"),
        );
        let local = RefreshRequest {
            token_url: "http://127.0.0.1:9/token",
            registry: Some(&told),
            ..base
        };
        assert_eq!(local.kind(), TokenEndpointKind::EntraV1);
        let form = form_of(&local);
        assert_eq!(value(&form, "resource"), Some("https://api.example/"));
        assert_eq!(value(&form, "scope"), None);
        // Generic: scope, plus an RFC 8707 resource only when configured.
        let generic = registry(
            Some(TokenEndpointKind::Generic),
            Some("https://api.example/"),
        );
        let form = form_of(&RefreshRequest {
            registry: Some(&generic),
            ..local
        });
        assert_eq!(value(&form, "scope"), base.scope);
        assert_eq!(value(&form, "resource"), Some("https://api.example/"));
        let form = form_of(&RefreshRequest {
            token_url: "https://idp.example/token",
            ..base
        });
        assert_eq!(value(&form, "resource"), None);
    }

    #[test]
    fn private_key_jwt_sends_a_fresh_assertion_and_no_secret() {
        use crate::client_auth::{AssertionKey, JwtAlg};
        let key = AssertionKey::from_pem(
            include_bytes!("../tests/oidc/keys/client-a.key.pem"),
            "a.key",
            include_bytes!("../tests/oidc/keys/client-a.cert.pem"),
            "a.crt",
            JwtAlg::Ps256,
        )
        .unwrap();
        let mut reg = registry(None, None);
        reg.client_auth = ClientAuth::PrivateKeyJwt;
        reg.assertion_key = Some(std::sync::Arc::new(key));
        let rt = SecretString::from("rt");
        let stray_secret = SecretString::from("companion-secret");
        let req = RefreshRequest {
            token_url: " https://login.microsoftonline.com/t/oauth2/v2.0/token ",
            client_id: "app-1",
            client_secret: Some(&stray_secret),
            refresh_token: &rt,
            scope: Some("offline_access"),
            client_auth: ClientAuth::PrivateKeyJwt,
            registry: Some(&reg),
        };
        let (form, basic) = build_form(&req, at_noon()).unwrap();
        assert!(basic.is_none());
        assert_eq!(
            value(&form, "client_secret"),
            None,
            "the companion's secret stays home"
        );
        assert_eq!(value(&form, "client_id"), Some("app-1"));
        assert_eq!(
            value(&form, "client_assertion_type"),
            Some(crate::client_auth::ASSERTION_TYPE)
        );
        let first = value(&form, "client_assertion").unwrap().to_string();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(first.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            claims["aud"],
            "https://login.microsoftonline.com/t/oauth2/v2.0/token"
        );
        let again = form_of(&req);
        assert_ne!(
            value(&again, "client_assertion"),
            Some(first.as_str()),
            "one assertion per request"
        );
        // Without a key nothing authenticates the client (the provider says invalid_client).
        let keyless = registry(None, None);
        let form = form_of(&RefreshRequest {
            registry: Some(&keyless),
            ..req
        });
        assert_eq!(value(&form, "client_assertion"), None);
        assert_eq!(value(&form, "client_secret"), None);
    }

    #[test]
    fn token_urls_must_be_https_off_loopback() {
        assert!(check_token_url("https://login.microsoftonline.com/t/oauth2/v2.0/token").is_ok());
        assert!(check_token_url("http://127.0.0.1:9/token").is_ok());
        assert!(check_token_url("http://idp.example/token").is_err());
        assert!(check_token_url("ftp://x").is_err());
    }

    #[test]
    fn debug_of_a_token_set_is_redacted() {
        let set = parse(
            200,
            "application/json",
            r#"{"access_token":"at-visible","refresh_token":"rt-visible","expires_in":1}"#,
        )
        .unwrap();
        let dump = format!("{set:?}");
        assert!(!dump.contains("at-visible") && !dump.contains("rt-visible"));
    }

    proptest! {
        #[test]
        fn parser_never_panics(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..300), json in any::<bool>()) {
            let ct = if json { "application/json" } else { "application/x-www-form-urlencoded" };
            let _ = parse_token_response(status, ct, &body, None, &Scrubber::new());
        }

        #[test]
        fn expires_in_number_or_string(n in 0u64..10_000_000, as_string in any::<bool>()) {
            let value = if as_string { format!("\"{n}\"") } else { n.to_string() };
            let body = format!(r#"{{"access_token":"a","expires_in":{value}}}"#);
            let set = parse_token_response(200, "application/json", body.as_bytes(), None, &Scrubber::new()).unwrap();
            prop_assert_eq!(set.expires_in, Some(Duration::from_secs(n)));
        }
    }
}
