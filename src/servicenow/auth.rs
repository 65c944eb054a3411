//! How the keeper proves who it is to the instance: HTTP Basic on every call, or a bearer token
//! from the instance's own OAuth server (`POST /oauth_token.do`).
//!
//! OAuth uses the client-credentials grant by default: the client id and secret alone, the
//! token acting as the client's OAuth Application User (ServiceNow Washington DC and later, with
//! `glide.oauth.inbound.client.credential.grant_type.enabled`), so the token carries that
//! user's roles and ACLs exactly as Basic would, and no password exists. It is requested again
//! shortly before it expires. The password grant (which RFC 9700 forbids) is kept only behind
//! `instance.oauth_grant = "password"`: renewed with the refresh-token grant, so the password
//! only travels when there is no usable refresh token. Tokens live in redacting types and are
//! never logged.

use super::error::SnError;
use crate::config::InstanceGrant;
use crate::domain::scrub::Scrubber;
use crate::wire::{self, BodyError};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::fmt;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

/// The path of the instance's token endpoint.
pub const TOKEN_PATH: &str = "/oauth_token.do";

/// Access-token lifetime assumed when the answer has no `expires_in` (the instance default,
/// 1800 s).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(1_800);

/// Renew at most this long before expiry.
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// Whether a token with `remaining` of its `lifetime` left should be renewed before use: within
/// a minute of expiry, or within the last quarter of a short lifetime. Pure, so the policy is
/// tested without waiting.
pub fn renewal_due(remaining: Duration, lifetime: Duration) -> bool {
    remaining <= MAX_MARGIN.min(lifetime / 4)
}

/// A token the instance issued, held until it is due (`Debug` shows no token: `SecretString`
/// redacts itself).
#[derive(Debug)]
struct Held {
    access: SecretString,
    refresh: Option<SecretString>,
    obtained: Instant,
    lifetime: Duration,
}

impl Held {
    fn due(&self, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.obtained);
        renewal_due(self.lifetime.saturating_sub(age), self.lifetime)
    }
}

/// The grant of one token request.
enum Grant<'a> {
    ClientCredentials,
    Password(&'a SecretString),
    Refresh(&'a SecretString),
}

impl Grant<'_> {
    /// Its `grant_type`.
    fn name(&self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::Password(_) => "password",
            Grant::Refresh(_) => "refresh_token",
        }
    }
}

/// Obtains and renews bearer tokens for the integration user.
pub struct TokenSource {
    token_url: Url,
    client_id: String,
    client_secret: SecretString,
    username: String,
    grant: InstanceGrant,
    held: Mutex<Option<Held>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source for the instance at `base` (no token is requested until the first call).
    pub fn new(
        base: &Url,
        client_id: String,
        client_secret: SecretString,
        username: String,
        grant: InstanceGrant,
    ) -> TokenSource {
        let mut token_url = base.clone();
        let path = format!("{}{TOKEN_PATH}", base.path().trim_end_matches('/'));
        token_url.set_path(&path);
        TokenSource {
            token_url,
            client_id,
            client_secret,
            username,
            grant,
            held: Mutex::new(None),
        }
    }

    /// A bearer token that is not due for renewal, renewing it first when needed: with the
    /// client-credentials grant; or, under the password grant, with the refresh-token grant
    /// when there is a refresh token, else (or when that fails) with the password grant.
    ///
    /// # Errors
    ///
    /// [`SnError::TokenRefused`] when the instance refuses the grant; transport and status
    /// errors as for any other call.
    pub async fn bearer(&self, http: &reqwest::Client) -> Result<SecretString, SnError> {
        let mut held = self.held.lock().await;
        let now = Instant::now();
        if let Some(h) = held.as_ref()
            && !h.due(now)
        {
            return Ok(h.access.clone());
        }
        let previous_refresh = held.as_ref().and_then(|h| h.refresh.clone());
        let mut renewed = None;
        if let Some(refresh) = &previous_refresh {
            match self.request(http, Grant::Refresh(refresh)).await {
                Ok(token) => renewed = Some(token),
                Err(e) => {
                    tracing::debug!(event = "instance.token_refresh_failed", error = %e, "renewing the instance token with the refresh grant failed; using the password grant");
                }
            }
        }
        let first = match &self.grant {
            InstanceGrant::ClientCredentials => Grant::ClientCredentials,
            InstanceGrant::Password { password } => Grant::Password(password),
        };
        let mut token = match renewed {
            Some(token) => token,
            None => self.request(http, first).await?,
        };
        // The refresh grant answers with an access token only: the refresh token stays valid.
        if token.refresh.is_none() {
            token.refresh = previous_refresh;
        }
        let access = token.access.clone();
        *held = Some(token);
        Ok(access)
    }

    /// Forgets `used` after the instance refused it (revoked, or expired early by the
    /// instance's clock), so the next [`TokenSource::bearer`] renews it.
    pub async fn invalidate(&self, used: &SecretString) {
        let mut held = self.held.lock().await;
        if let Some(h) = held.as_mut()
            && h.access.expose_secret() == used.expose_secret()
        {
            // Keep the refresh token: renewal tries it first.
            h.lifetime = Duration::ZERO;
        }
    }

    async fn request(&self, http: &reqwest::Client, grant: Grant<'_>) -> Result<Held, SnError> {
        let grant_name = grant.name();
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", grant_name),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
        ];
        let mut scrubber = Scrubber::new().secret(self.client_secret.expose_secret());
        match &grant {
            Grant::ClientCredentials => {}
            Grant::Password(password) => {
                form.extend([
                    ("username", self.username.as_str()),
                    ("password", password.expose_secret()),
                ]);
                scrubber = scrubber.secret(password.expose_secret());
            }
            Grant::Refresh(refresh) => {
                form.push(("refresh_token", refresh.expose_secret()));
                scrubber = scrubber.secret(refresh.expose_secret());
            }
        }
        let obtained = Instant::now();
        let response = http
            .post(self.token_url.clone())
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    SnError::Unreachable(wire::describe_transport(&e))
                } else {
                    SnError::NoAnswer(wire::describe_transport(&e))
                }
            })?;
        let status = response.status();
        let html = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("html"));
        let body = wire::read_capped(response).await.map_err(|e| match e {
            BodyError::Transport(t) => SnError::NoAnswer(t),
            BodyError::TooLarge => {
                SnError::Malformed(format!("token answer larger than {} bytes", wire::MAX_BODY))
            }
        })?;
        if html {
            return Err(SnError::Html(status.as_u16()));
        }
        parse_token_answer(status, &body, grant_name, obtained, &scrubber)
    }
}

/// Longest error text of a refused token request kept (`error, error_description`).
const MAX_SAID: usize = 120;

/// Reads the token endpoint's answer. Pure apart from the `obtained` instant, so every answer
/// shape is tested without a socket; of an error body only `error` and `error_description` are
/// kept, through `scrubber` (what the request carried), then cut.
fn parse_token_answer(
    status: StatusCode,
    body: &[u8],
    grant: &str,
    obtained: Instant,
    scrubber: &Scrubber,
) -> Result<Held, SnError> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if !status.is_success() {
        let code = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let description = parsed
            .as_ref()
            .and_then(|v| v.get("error_description"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let joined = [code, description]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let said = scrubber.clean(&joined, MAX_SAID);
        return match status.as_u16() {
            400 | 401 | 403 => Err(SnError::TokenRefused(format!(
                "HTTP {} to the {grant} grant{}",
                status.as_u16(),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            ))),
            code => Err(SnError::Status {
                status: code,
                message: format!("the token endpoint answered the {grant} grant with an error"),
                retry_after: None,
            }),
        };
    }
    let Some(value) = parsed else {
        return Err(SnError::Malformed("token answer is not JSON".into()));
    };
    let access = value
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| SnError::Malformed("token answer without access_token".into()))?;
    let refresh = value
        .get("refresh_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| SecretString::from(t.to_string()));
    let lifetime = match value.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs),
        Some(Value::String(s)) => s.trim().parse().ok().map(Duration::from_secs),
        _ => None,
    }
    .unwrap_or(DEFAULT_LIFETIME);
    Ok(Held {
        access: SecretString::from(access.to_string()),
        refresh,
        obtained,
        lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_in_the_last_minute_or_the_last_quarter_of_a_short_lifetime() {
        let half_hour = Duration::from_secs(1_800);
        assert!(!renewal_due(Duration::from_secs(61), half_hour));
        assert!(renewal_due(Duration::from_secs(60), half_hour));
        assert!(renewal_due(Duration::ZERO, half_hour));
        let short = Duration::from_secs(40);
        assert!(!renewal_due(Duration::from_secs(11), short));
        assert!(renewal_due(Duration::from_secs(10), short));
        assert!(renewal_due(Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn reads_the_documented_answer_and_lenient_variants() {
        let now = Instant::now();
        let ok = parse_token_answer(
            StatusCode::OK,
            br#"{"scope":"useraccount","token_type":"Bearer","expires_in":1799,"refresh_token":"rt-1","access_token":"at-1"}"#,
            "password",
            now,
            &Scrubber::new(),
        )
        .unwrap();
        assert_eq!(ok.access.expose_secret(), "at-1");
        assert_eq!(ok.refresh.as_ref().map(|r| r.expose_secret()), Some("rt-1"));
        assert_eq!(ok.lifetime, Duration::from_secs(1_799));
        let refreshed = parse_token_answer(
            StatusCode::OK,
            br#"{"access_token":"at-2","expires_in":"600"}"#,
            "refresh_token",
            now,
            &Scrubber::new(),
        )
        .unwrap();
        assert!(refreshed.refresh.is_none());
        assert_eq!(refreshed.lifetime, Duration::from_secs(600));
        let bare = parse_token_answer(
            StatusCode::OK,
            br#"{"access_token":"at-3"}"#,
            "x",
            now,
            &Scrubber::new(),
        )
        .unwrap();
        assert_eq!(bare.lifetime, DEFAULT_LIFETIME);
        assert!(matches!(
            parse_token_answer(StatusCode::OK, b"{}", "x", now, &Scrubber::new()),
            Err(SnError::Malformed(_))
        ));
        assert!(matches!(
            parse_token_answer(StatusCode::OK, b"<html>", "x", now, &Scrubber::new()),
            Err(SnError::Malformed(_))
        ));
    }

    #[test]
    fn refusals_are_typed_and_carry_no_body_beyond_the_codes() {
        let now = Instant::now();
        let refused = parse_token_answer(
            StatusCode::UNAUTHORIZED,
            br#"{"error_description":"access_denied","error":"server_error"}"#,
            "password",
            now,
            &Scrubber::new(),
        );
        match refused {
            Err(SnError::TokenRefused(m)) => {
                assert!(m.contains("401") && m.contains("server_error"), "{m}");
                assert!(m.contains("password grant"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_token_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                b"",
                "password",
                now,
                &Scrubber::new()
            ),
            Err(SnError::Status { status: 503, .. })
        ));
    }

    #[test]
    fn debug_shows_no_secret() {
        let base = Url::parse("https://acme.service-now.com").unwrap();
        let source = TokenSource::new(
            &base,
            "cid".into(),
            SecretString::from("client-secret-value".to_string()),
            "svc".into(),
            InstanceGrant::Password {
                password: SecretString::from("password-value".to_string()),
            },
        );
        let dump = format!("{source:?}");
        assert!(dump.contains("https://acme.service-now.com/oauth_token.do"));
        assert!(!dump.contains("client-secret-value") && !dump.contains("password-value"));
    }
}
