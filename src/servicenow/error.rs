//! What can go wrong talking to the instance, and how an answer becomes JSON or a typed error.

use crate::domain::scrub::Scrubber;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

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
        "the instance refused the OAuth token request at /oauth_token.do ({0}); check instance.client_id and its secret, and that the instance allows the grant (client_credentials: glide.oauth.inbound.client.credential.grant_type.enabled = true and an OAuth Application User on the client; password: glide.oauth.inbound.ropc.grant_type.disabled not true)"
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
    pub(super) fn is_safe_to_resend(&self) -> bool {
        matches!(self, SnError::Unreachable(_))
            || matches!(self, SnError::Status { status: 429, .. })
    }

    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            SnError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the instance says no such API or resource exists: a 404, or the platform's `400
    /// Requested URI does not represent any resource` (an older companion without the
    /// endpoint, or one under another base path).
    pub fn endpoint_missing(&self) -> bool {
        match self {
            SnError::NotFound(_) => true,
            SnError::Status {
                status: 400 | 405,
                message,
                ..
            } => message.contains("does not represent any resource"),
            _ => false,
        }
    }

    /// Why, in fixed words per kind: what `/readyz` says, which must never repeat the
    /// instance's own text (an answer may carry anything).
    pub fn reason(&self) -> &'static str {
        match self {
            SnError::Unreachable(_) => "the instance is unreachable",
            SnError::NoAnswer(_) => "the instance did not answer in time",
            SnError::Unauthorized(_) => "the instance refused the service account",
            SnError::TokenRefused(_) => {
                "the instance's OAuth server refused the keeper's token request"
            }
            SnError::Forbidden(_) => "the service account lacks a role or an ACL",
            SnError::NotFound(_) => "a table or the companion was not found on the instance",
            SnError::Html(_) => {
                "the instance answered with an HTML page (hibernating, maintenance or a login page)"
            }
            SnError::Cancelled => "the instance cancelled a transaction (maximum execution time)",
            SnError::Malformed(_) => "the instance's answer was unreadable",
            SnError::Status { .. } => "the instance answered with an error status",
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

/// Longest ServiceNow error text kept (`message: detail`).
const MAX_MESSAGE: usize = 300;

/// Turns a response into JSON or a typed error. Pure, so every odd answer ServiceNow gives can be
/// tested without a socket. Nothing is accepted from a body that did not parse; the error text
/// kept goes through `scrubber` (what the request carried) whole, before it is cut.
pub(super) fn interpret(
    status: StatusCode,
    content_type: &str,
    body: &[u8],
    retry_after: Option<Duration>,
    scrubber: &Scrubber,
) -> Result<Value, SnError> {
    // A DELETE's answer: no body at all, by design.
    if status == StatusCode::NO_CONTENT {
        return Ok(Value::Object(serde_json::Map::new()));
    }
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
    let message = parsed
        .ok()
        .map(|v| error_message(&v, scrubber))
        .unwrap_or_else(|| {
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

/// `error.message` and `error.detail` of a ServiceNow error envelope (detail may be `null`),
/// scrubbed and cut.
fn error_message(v: &Value, scrubber: &Scrubber) -> String {
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
    scrubber.clean(&text, MAX_MESSAGE)
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
            &Scrubber::new(),
        )
    }

    #[test]
    fn odd_answers_are_typed_errors() {
        assert!(matches!(
            interpret(
                StatusCode::OK,
                "text/html",
                b"<html>Instance Hibernating</html>",
                None,
                &Scrubber::new(),
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
            &Scrubber::new(),
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
            &Scrubber::new(),
        );
        assert!(
            matches!(forbidden, Err(SnError::Forbidden(m)) if m == "Insufficient rights to query records")
        );
        let limited = interpret(
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            br#"{"error":{"message":"Rate limit exceeded","detail":"x"},"status":"failure"}"#,
            Some(Duration::from_secs(3)),
            &Scrubber::new(),
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
    fn echoed_request_secrets_and_controls_are_not_kept() {
        let scrubber = Scrubber::new().secret("written-token-value");
        let body = format!(
            r#"{{"error":{{"message":"\u001b[2JInvalid value\r\n{}","detail":"token written-token-value rejected"}},"status":"failure"}}"#,
            "x".repeat(270)
        );
        let e = interpret(
            StatusCode::BAD_REQUEST,
            "application/json",
            body.as_bytes(),
            None,
            &scrubber,
        )
        .unwrap_err();
        let SnError::Status { message, .. } = &e else {
            panic!("{e:?}")
        };
        assert!(
            !message.contains("written-token") && !message.contains('\u{1b}'),
            "{message}"
        );
        assert!(
            !message.contains('\n') && message.starts_with("Invalid value"),
            "{message}"
        );
        assert!(message.chars().count() <= MAX_MESSAGE);
    }

    proptest! {
        #[test]
        fn interpret_never_panics(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..200), html in any::<bool>()) {
            let ct = if html { "text/html" } else { "application/json" };
            let status = StatusCode::from_u16(status).unwrap();
            let _ = interpret(status, ct, &body, None, &Scrubber::new());
        }

    }
}
