//! Fault injection: rules that make the simulator misbehave the way real instances and
//! identity providers do (throttling, outages, hibernation, lost answers, cut bodies).

use std::time::Duration;

use crate::Target;

/// Which part of the simulator a fault applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// `/api/now[/v1|/v2]/table/...`
    TableApi,
    /// The companion Scripted REST API.
    Companion,
    /// The token endpoint of the provider with this id.
    Provider(String),
    /// Every request, including unrouted ones.
    Any,
}

/// What happens to a request a fault matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this status, body and extra headers instead of serving the request.
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body, sent verbatim.
        body: String,
        /// Extra headers (a `Content-Type` here overrides the guessed one).
        headers: Vec<(String, String)>,
    },
    /// Wait, then serve normally.
    Delay(Duration),
    /// Process the request without these fields of its JSON body, and answer as usual: a data
    /// policy or business rule that discards what the caller wrote, while the instance still
    /// answers 200.
    DiscardFields(Vec<String>),
    /// Close the connection without answering; the request is not processed.
    DropConnection,
    /// Process the request fully (state changes happen), then close the connection without
    /// answering: the "lost answer".
    DropAfterProcessing,
    /// 200 `text/html`: the page a hibernating developer instance serves.
    HtmlPage,
    /// 200 `application/json` whose body is not JSON.
    Garbage,
    /// Process the request, then send only the first half of the real body (invalid JSON).
    TruncatedJson,
    /// Process the request, then answer 200 with at most half of the result rows followed by
    /// the instance's quota-cancellation error tail ("Transaction cancelled: maximum execution
    /// time exceeded"), as an API_INT transaction cancelled mid-stream does.
    TransactionCancelled,
    /// Answer with these exact bytes (invalid UTF-8, a huge body) and content type.
    Bytes {
        /// HTTP status code.
        status: u16,
        /// Response body, sent as is.
        body: Vec<u8>,
        /// The `Content-Type`.
        content_type: String,
    },
    /// Answer with an error that repeats everything the request carried — its body (the form
    /// of a token request, the JSON of a write) and its `Authorization` header — in every text
    /// field of the error shape of the target: an OAuth error for a provider (`error`,
    /// `error_description`, `suberror`, `trace_id`, `correlation_id`), ServiceNow's envelope
    /// (`message`, `detail`) for the instance. The echoes start after 290 characters of
    /// padding, so whatever cuts the text at 300 cuts a secret in two.
    EchoRequest {
        /// HTTP status code.
        status: u16,
    },
}

/// One fault rule. Rules are checked in insertion order; the first live match wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Which requests the rule is for.
    pub target: FaultTarget,
    /// Only requests with this method (case-insensitive), if set.
    pub method: Option<String>,
    /// Only requests whose path contains this, if set.
    pub path_contains: Option<String>,
    /// How many requests it hits before it is spent; `None` = forever.
    pub times: Option<usize>,
    /// What it does.
    pub action: FaultAction,
}

/// The body of the instance's quota cancellation error envelope (K5).
pub const TRANSACTION_CANCELLED_ERROR: &str = r#""error":{"message":"Transaction cancelled: maximum execution time exceeded","detail":"Transaction cancelled: maximum execution time exceeded Check logs for error trace or enable glide.rest.debug property to verify REST request processing"},"status":"failure""#;

/// The page a hibernating developer instance answers every request with.
pub const HIBERNATING_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Instance Hibernating page</title></head>\n<body><div class=\"container\"><h1>Your instance is hibernating</h1><p>This developer instance is hibernating. Sign in to the developer portal to wake it up.</p><a href=\"https://developer.servicenow.com\">Wake up your instance</a></div></body></html>\n";

impl Fault {
    /// A rule that hits every matching request.
    pub fn new(target: FaultTarget, action: FaultAction) -> Fault {
        Fault {
            target,
            method: None,
            path_contains: None,
            times: None,
            action,
        }
    }

    /// Answers `status` with the body the real service sends for it (ServiceNow error envelope
    /// for the instance, OAuth error JSON or plain text for providers).
    pub fn status(target: FaultTarget, status: u16) -> Fault {
        let (body, headers) = default_body(&target, status);
        Fault::new(
            target,
            FaultAction::Status {
                status,
                body,
                headers,
            },
        )
    }

    /// Answers `status` (usually 429 or 503) with a `Retry-After: secs` header.
    pub fn retry_after(target: FaultTarget, status: u16, secs: u64) -> Fault {
        let mut fault = Fault::status(target, status);
        if let FaultAction::Status { headers, .. } = &mut fault.action {
            headers.push(("Retry-After".to_owned(), secs.to_string()));
        }
        fault
    }

    /// Answers with an explicit status and body.
    pub fn custom(target: FaultTarget, status: u16, body: &str) -> Fault {
        Fault::new(
            target,
            FaultAction::Status {
                status,
                body: body.to_owned(),
                headers: Vec::new(),
            },
        )
    }

    /// Processes matching requests without `fields` of their JSON bodies and answers as usual:
    /// what a data policy or business rule that throws a field away looks like to a client.
    pub fn discard_fields(target: FaultTarget, fields: &[&str]) -> Fault {
        Fault::new(
            target,
            FaultAction::DiscardFields(fields.iter().map(|f| (*f).to_owned()).collect()),
        )
    }

    /// Delays matching requests, then serves them.
    pub fn delay(target: FaultTarget, delay: Duration) -> Fault {
        Fault::new(target, FaultAction::Delay(delay))
    }

    /// Drops the connection before processing.
    pub fn drop_connection(target: FaultTarget) -> Fault {
        Fault::new(target, FaultAction::DropConnection)
    }

    /// Processes, then drops the connection (lost answer).
    pub fn drop_after_processing(target: FaultTarget) -> Fault {
        Fault::new(target, FaultAction::DropAfterProcessing)
    }

    /// Serves the hibernation page.
    pub fn html_page(target: FaultTarget) -> Fault {
        Fault::new(target, FaultAction::HtmlPage)
    }

    /// Serves a non-JSON body labelled JSON.
    pub fn garbage(target: FaultTarget) -> Fault {
        Fault::new(target, FaultAction::Garbage)
    }

    /// Serves half of the real body.
    pub fn truncated_json(target: FaultTarget) -> Fault {
        Fault::new(target, FaultAction::TruncatedJson)
    }

    /// Serves a partial result with the quota-cancellation tail.
    pub fn transaction_cancelled(target: FaultTarget) -> Fault {
        Fault::new(target, FaultAction::TransactionCancelled)
    }

    /// Answers with exact bytes.
    pub fn bytes(target: FaultTarget, status: u16, content_type: &str, body: Vec<u8>) -> Fault {
        Fault::new(
            target,
            FaultAction::Bytes {
                status,
                body,
                content_type: content_type.to_owned(),
            },
        )
    }

    /// Answers with an error echoing the request (see [`FaultAction::EchoRequest`]).
    pub fn echo_request(target: FaultTarget, status: u16) -> Fault {
        Fault::new(target, FaultAction::EchoRequest { status })
    }

    /// Limits the rule to `n` hits.
    #[must_use]
    pub fn times(mut self, n: usize) -> Fault {
        self.times = Some(n);
        self
    }

    /// Limits the rule to one method.
    #[must_use]
    pub fn method(mut self, method: &str) -> Fault {
        self.method = Some(method.to_owned());
        self
    }

    /// Limits the rule to paths containing `fragment`.
    #[must_use]
    pub fn path(mut self, fragment: &str) -> Fault {
        self.path_contains = Some(fragment.to_owned());
        self
    }

    /// Adds a response header to a `Status` rule (no effect on other actions).
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Fault {
        if let FaultAction::Status { headers, .. } = &mut self.action {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    fn applies_to(&self, target: &Target, method: &str, path: &str) -> bool {
        let target_ok = match (&self.target, target) {
            (FaultTarget::Any, _)
            | (FaultTarget::TableApi, Target::TableApi)
            | (FaultTarget::Companion, Target::Companion) => true,
            (FaultTarget::Provider(want), Target::Provider(got)) => want == got,
            _ => false,
        };
        target_ok
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }
}

fn default_body(target: &FaultTarget, status: u16) -> (String, Vec<(String, String)>) {
    let reason = reason_phrase(status);
    match target {
        FaultTarget::Provider(_) => match status {
            429 => ("Too Many Requests".to_owned(), Vec::new()),
            500..=599 => (
                r#"{"error":"temporarily_unavailable","error_description":"The service is temporarily unavailable. Please try again later."}"#.to_owned(),
                Vec::new(),
            ),
            _ => (
                format!(r#"{{"error":"server_error","error_description":"{reason}"}}"#),
                Vec::new(),
            ),
        },
        _ if status == 429 => (
            r#"{"error":{"message":"Rate limit exceeded","detail":"Rate limit of 100 requests per hour for Table API exceeded"},"status":"failure"}"#.to_owned(),
            vec![
                ("X-RateLimit-Limit".to_owned(), "100".to_owned()),
                ("X-RateLimit-Rule".to_owned(), "5aa7e7a1c3b7301047a6f2b3a0013174".to_owned()),
            ],
        ),
        _ => (
            format!(r#"{{"error":{{"message":"{reason}","detail":null}},"status":"failure"}}"#),
            Vec::new(),
        ),
    }
}

/// Canonical reason phrase, for default fault bodies.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// A fault rule and how often it has fired.
#[derive(Debug)]
pub(crate) struct FaultSlot {
    fault: Fault,
    hits: usize,
}

impl FaultSlot {
    pub(crate) fn new(fault: Fault) -> Self {
        Self { fault, hits: 0 }
    }
}

/// Finds the first live rule for a request and consumes one of its hits.
pub(crate) fn take(
    slots: &mut [FaultSlot],
    target: &Target,
    method: &str,
    path: &str,
) -> Option<FaultAction> {
    let slot = slots.iter_mut().find(|slot| {
        slot.fault.times.is_none_or(|n| slot.hits < n)
            && slot.fault.applies_to(target, method, path)
    })?;
    slot.hits += 1;
    Some(slot.fault.action.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_live_match_wins_and_times_run_out() {
        let mut slots = vec![
            FaultSlot::new(
                Fault::status(FaultTarget::TableApi, 503)
                    .times(1)
                    .method("patch"),
            ),
            FaultSlot::new(Fault::garbage(FaultTarget::Any).path("/oauth2/")),
        ];
        let t = Target::TableApi;
        assert!(take(&mut slots, &t, "GET", "/api/now/table/x").is_none());
        assert!(matches!(
            take(&mut slots, &t, "PATCH", "/api/now/table/x"),
            Some(FaultAction::Status { status: 503, .. })
        ));
        assert!(take(&mut slots, &t, "PATCH", "/api/now/table/x").is_none());
        let p = Target::Provider("entra".to_owned());
        assert_eq!(
            take(&mut slots, &p, "POST", "/oauth2/entra/token"),
            Some(FaultAction::Garbage)
        );
    }

    #[test]
    fn retry_after_sets_header() {
        let fault = Fault::retry_after(FaultTarget::TableApi, 429, 7);
        let FaultAction::Status { headers, body, .. } = fault.action else {
            panic!("not a status fault");
        };
        assert!(headers.contains(&("Retry-After".to_owned(), "7".to_owned())));
        assert!(body.contains("Rate limit exceeded"));
    }
}
