//! HTTP details shared by the ServiceNow and token-endpoint adapters: capped body reads,
//! `Retry-After` and `X-RateLimit-Reset`, the `Link` header, and client construction.

use jiff::Timestamp;
use reqwest::header::HeaderMap;
use std::time::Duration;

/// The largest body the keeper reads from any peer; a bigger one is cut off and treated as
/// malformed, so a broken or hostile endpoint cannot exhaust memory.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The longest wait a `Retry-After` may impose on one retry.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// A body read that stopped early.
#[derive(Debug)]
pub enum BodyError {
    /// The connection failed while reading (reset, timeout).
    Transport(String),
    /// The body exceeded [`MAX_BODY`].
    TooLarge,
}

/// Reads a response body up to [`MAX_BODY`].
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    // Sized from Content-Length when the peer sends one (bounded by the cap), so a large page
    // is not grown by doubling.
    let expected = response
        .content_length()
        .map_or(0, |n| usize::try_from(n).unwrap_or(MAX_BODY).min(MAX_BODY));
    let mut body = Vec::with_capacity(expected);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(BodyError::Transport(describe_transport(&e))),
        }
    }
}

/// A reqwest error described without its URL: URLs can carry query data.
pub fn describe_transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "connection broke while reading the answer"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3), relative to `now`.
/// Clamped to [`MAX_RETRY_AFTER`]; garbage is `None`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let secs = when.as_second().saturating_sub(now.as_second());
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)).min(MAX_RETRY_AFTER))
}

/// The wait a response asks for: `Retry-After`, else ServiceNow's `X-RateLimit-Reset` (a UNIX
/// timestamp of the next window) when the response is a 429.
pub fn retry_after(headers: &HeaderMap, status: u16, now: Timestamp) -> Option<Duration> {
    if let Some(v) = headers.get("retry-after").and_then(|v| v.to_str().ok())
        && let Some(d) = parse_retry_after(v, now)
    {
        return Some(d);
    }
    if status == 429 {
        let reset = headers
            .get("x-ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())?;
        let secs = reset.saturating_sub(now.as_second());
        return Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)).min(MAX_RETRY_AFTER));
    }
    None
}

/// Finds the `rel="next"` target of an RFC 8288 `Link` header. Tolerates spaces, unquoted
/// relation values, several relations in one `rel`, and any order of entries.
pub fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let start = rest.find('<')?;
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let target = &after[..end];
        let params_start = &after[end + 1..];
        // Parameters run until the next entry, i.e. the next `<` (a comma cannot be trusted:
        // quoted values may contain one).
        let params_end = params_start.find('<').unwrap_or(params_start.len());
        let params = &params_start[..params_end];
        for param in params.split(';') {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if !name.trim().eq_ignore_ascii_case("rel") {
                continue;
            }
            let value = value.trim().trim_end_matches(',').trim().trim_matches('"');
            if value
                .split_ascii_whitespace()
                .any(|rel| rel.eq_ignore_ascii_case("next"))
            {
                return Some(target.trim().to_string());
            }
        }
        rest = &params_start[params_end..];
    }
}

/// 32 hex digits laid out as a GUID (`8-4-4-4-12`), as Entra uses for ids and `jti`s. Shorter
/// input is returned as is.
pub fn guid_layout(hex: &str) -> String {
    if hex.len() < 32 || !hex.is_ascii() {
        return hex.to_string();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A reqwest client with the deadlines the keeper needs and no redirects: a redirect would carry
/// credentials to wherever it points.
pub fn build_client(timeout: Duration, loopback: bool) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            env!("CARGO_PKG_NAME"),
            "/",
            env!("CARGO_PKG_VERSION")
        ));
    if loopback {
        // A proxy from the environment must never capture calls to the local simulator.
        builder = builder.no_proxy();
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_next_in_servicenow_links() {
        let h = r#"<https://x.service-now.com/api/now/table/incident?sysparm_limit=1&sysparm_offset=0>;rel="first",<https://x.service-now.com/api/now/table/incident?sysparm_limit=1&sysparm_offset=-1>;rel="prev",<https://x.service-now.com/api/now/table/incident?sysparm_limit=1&sysparm_offset=1>;rel="next",<https://x.service-now.com/api/now/table/incident?sysparm_limit=1&sysparm_offset=72>;rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some(
                "https://x.service-now.com/api/now/table/incident?sysparm_limit=1&sysparm_offset=1"
            )
        );
        let last_page = r#"<https://x/a?o=0>;rel="first",<https://x/a?o=1>;rel="prev",<https://x/a?o=2>;rel="last""#;
        assert_eq!(next_link(last_page), None);
        assert_eq!(
            next_link(r#"<https://x/a?o=1> ; rel = next , <https://x/b>; rel="last""#).as_deref(),
            Some("https://x/a?o=1")
        );
        assert_eq!(
            next_link(r#"<https://x/a>; rel="prev next""#).as_deref(),
            Some("https://x/a")
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = Timestamp::from_second(784_111_777).unwrap(); // 1994-11-06 08:49:37 UTC
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-reset", "784111787".parse().unwrap());
        assert_eq!(
            retry_after(&headers, 429, now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(retry_after(&headers, 503, now), None);
    }

    proptest! {
        #[test]
        fn link_parser_never_panics(s in ".{0,200}") {
            let _ = next_link(&s);
        }

        #[test]
        fn link_parser_finds_generated_next(offset in 0u32..100_000, before in 0usize..3) {
            let mut parts = vec![
                "<https://i/t?sysparm_offset=0>;rel=\"first\"".to_string(),
                "<https://i/t?sysparm_offset=-1>;rel=\"prev\"".to_string(),
                "<https://i/t?sysparm_offset=9>;rel=\"last\"".to_string(),
            ];
            parts.insert(before, format!("<https://i/t?sysparm_offset={offset}>;rel=\"next\""));
            let expected = format!("https://i/t?sysparm_offset={offset}");
            prop_assert_eq!(next_link(&parts.join(",")), Some(expected));
        }

        #[test]
        fn retry_after_never_panics(s in ".{0,60}") {
            let _ = parse_retry_after(&s, Timestamp::UNIX_EPOCH);
        }
    }
}
