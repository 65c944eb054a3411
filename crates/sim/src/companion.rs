//! The companion Scripted REST API the keeper installs on the instance: the only way to read
//! password2 values in clear, since the Table API returns ciphertext. It answers exactly as
//! `migrations-docs/companion/secrets.js` does (the shared cases in
//! `tests/contract/companion.json` hold both to it):
//! `GET {companion_path}/secrets?sys_id=<id>[,<id>…][&include=client_secret]` (at most 100 ids)
//! → `{"result":[{"sys_id","refresh_token"[,"client_secret"]}]}` for `refresh_token` rows whose
//! token decrypts, in the order asked; anything else is left out. One audit line per call.

use serde_json::{Map, Value, json};

use crate::answer::{authenticate, error, instance_headers};
use crate::server::{Incoming, SimResponse};
use crate::state::{Shared, State};

/// Role the companion API requires (created by the update set in `migrations-docs/`).
pub const COMPANION_ROLE: &str = "snok_oauth_keeper";

/// Most ids one call may ask for.
pub const MAX_IDS: usize = 100;

/// The `source` of the companion's audit lines in the instance's system log.
pub const AUDIT_SOURCE: &str = "sn-oauth-keeper companion";

pub(crate) fn handle(shared: &Shared, req: &Incoming) -> SimResponse {
    let mut st = shared.lock();
    if let Err(resp) = authenticate(&mut st, req) {
        return resp;
    }
    let resource = req
        .path
        .strip_prefix(shared.companion_path.as_str())
        .unwrap_or_default()
        .trim_end_matches('/');
    // Without the update set there is no such API: the instance answers as for any unknown
    // `/api/` path.
    if !st.instance.companion_installed
        || resource != "/secrets"
        || !matches!(req.method.as_str(), "GET" | "HEAD")
    {
        return error(
            &mut st,
            400,
            "Requested URI does not represent any resource",
            None,
        );
    }
    if !st.has_role(COMPANION_ROLE) {
        let detail = format!("The caller lacks role {COMPANION_ROLE}");
        return refuse(
            &mut st,
            403,
            "Insufficient rights to query records",
            &detail,
            "no_role",
        );
    }
    let includes = values(req, "include");
    if includes.iter().any(|i| i != "client_secret") {
        return refuse(
            &mut st,
            400,
            "Invalid parameter include",
            "include accepts only client_secret",
            "bad_include",
        );
    }
    let with_secret = !includes.is_empty();
    let mut ids: Vec<String> = Vec::new();
    for id in values(req, "sys_id") {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return refuse(
            &mut st,
            400,
            "Missing parameter sys_id",
            "Provide one or more oauth_credential sys_ids as sys_id=<id>[,<id>...]",
            "no_ids",
        );
    }
    if ids.len() > MAX_IDS {
        let detail = format!(
            "At most {MAX_IDS} sys_id values per request, got {}",
            ids.len()
        );
        return refuse(&mut st, 400, "Too many sys_ids", &detail, "too_many_ids");
    }
    let mut result = Vec::new();
    let mut answered: Vec<&str> = Vec::new();
    for id in &ids {
        if !is_sys_id(id) {
            continue;
        }
        let Some(row) = st.db.get("oauth_credential", id) else {
            continue;
        };
        if row.get("type").map(String::as_str) != Some("refresh_token") {
            continue;
        }
        let Some(token) = row
            .get("token_received")
            .and_then(|t| st.decrypt(t))
            .filter(|t| !t.is_empty())
        else {
            continue;
        };
        let mut entry = Map::new();
        entry.insert("sys_id".to_owned(), json!(id));
        entry.insert("refresh_token".to_owned(), json!(token));
        if with_secret {
            let secret = row
                .get("peer")
                .and_then(|peer| st.db.get("oauth_entity", peer))
                .and_then(|entity| entity.get("client_secret"))
                .and_then(|s| st.decrypt(s))
                .filter(|s| !s.is_empty());
            if let Some(secret) = secret {
                entry.insert("client_secret".to_owned(), json!(secret));
            }
        }
        result.push(Value::Object(entry));
        answered.push(id);
    }
    let line = format!(
        "requested={} returned={} client_secret={} ids={}",
        ids.len(),
        answered.len(),
        if with_secret { "yes" } else { "no" },
        answered.join(",")
    );
    audit(&mut st, &line);
    SimResponse {
        status: 200,
        headers: instance_headers(&mut st),
        body: json!({ "result": result }).to_string().into_bytes(),
    }
}

/// An error the script itself writes (same envelope as the Table API), after its audit line.
fn refuse(st: &mut State, status: u16, message: &str, detail: &str, why: &str) -> SimResponse {
    audit(st, &format!("refused={why}"));
    error(st, status, message, Some(detail))
}

fn audit(st: &mut State, text: &str) {
    let user = st.user_name();
    st.instance.audit.push(format!("user={user} {text}"));
}

/// Every value of a repeated or comma-separated parameter, trimmed, without empties.
fn values(req: &Incoming, key: &str) -> Vec<String> {
    req.params()
        .into_iter()
        .filter(|p| p.key == key)
        .flat_map(|p| {
            p.value
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A platform sys_id: 32 lowercase hex digits.
fn is_sys_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
