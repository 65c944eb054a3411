//! What every answer of the instance shares, whichever API serves it: authenticating the
//! integration user (Basic with the 2026 restriction, or a bearer token of the instance's own
//! OAuth server), the headers every answer carries, and the error envelope.

use serde_json::Value;

use crate::instance;
use crate::server::{Incoming, SimResponse};
use crate::state::State;

/// Checks Basic credentials against the integration user, including the 2026 basic-auth
/// restriction (web-service-access-only users or role `snc_basic_auth_api_access`).
pub(crate) fn authenticate(st: &mut State, req: &Incoming) -> Result<(), SimResponse> {
    // A bearer token the instance's own OAuth server issued; the Basic-auth restriction does
    // not apply to it.
    if let Some(token) = req
        .header("authorization")
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        && instance::bearer_valid(st, token)
        && st
            .user_row()
            .is_some_and(|r| r.get("active").map(String::as_str) == Some("true"))
    {
        return Ok(());
    }
    let presented = req.header("authorization").and_then(parse_basic);
    let user = st.user_row();
    let field = |name: &str| user.and_then(|r| r.get(name)).map(String::as_str);
    let accepted = presented.is_some_and(|(name, password)| {
        field("user_name") == Some(name.as_str())
            && password == st.user.password
            && field("active") == Some("true")
            && (field("web_service_access_only") == Some("true")
                || st.has_role("snc_basic_auth_api_access"))
    });
    if accepted {
        return Ok(());
    }
    let mut resp = error(
        st,
        401,
        "User Not Authenticated",
        Some("Required to provide Auth information"),
    );
    resp.headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("X-Is-Logged-In"));
    resp.headers
        .push(("X-Is-Logged-In".to_owned(), "false".to_owned()));
    resp.headers.push((
        "WWW-Authenticate".to_owned(),
        "BASIC realm=\"Service-now\"".to_owned(),
    ));
    Err(resp)
}

fn parse_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Headers every instance answer carries.
pub(crate) fn instance_headers(st: &mut State) -> Vec<(String, String)> {
    [
        ("Content-Type", "application/json;charset=UTF-8".to_owned()),
        ("X-Is-Logged-In", "true".to_owned()),
        ("X-Transaction-ID", st.transaction_id()),
        ("Pragma", "no-store,no-cache".to_owned()),
        (
            "Cache-control",
            "no-cache,no-store,must-revalidate,max-age=-1".to_owned(),
        ),
        ("Expires", "0".to_owned()),
        ("Server", "ServiceNow".to_owned()),
        (
            "Strict-Transport-Security",
            "max-age=63072000; includeSubDomains".to_owned(),
        ),
        ("X-Content-Type-Options", "nosniff".to_owned()),
        (
            "Server-Timing",
            "sem_wait;dur=0, sesh_wait;dur=0".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The instance's error envelope, key order as the instance writes it (`message` before
/// `detail`), so bodies compare byte for byte.
pub(crate) fn error(
    st: &mut State,
    status: u16,
    message: &str,
    detail: Option<&str>,
) -> SimResponse {
    let detail = detail.map_or_else(|| "null".to_owned(), |d| Value::from(d).to_string());
    let body = format!(
        r#"{{"error":{{"message":{},"detail":{detail}}},"status":"failure"}}"#,
        Value::from(message)
    );
    SimResponse {
        status,
        headers: instance_headers(st),
        body: body.into_bytes(),
    }
}
