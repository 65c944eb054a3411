//! The companion Scripted REST API the keeper installs on the instance: the only way to read
//! password2 values in clear, since the Table API returns ciphertext. Contract (fixed):
//! `GET {companion_path}/secrets?sys_id=<id>[,<id>…]` (at most 100 ids) →
//! `{"result":[{"sys_id","refresh_token","client_secret"}]}` for `refresh_token` rows; unknown
//! ids and other rows are left out, and so is any value that does not decrypt.

use serde_json::{Map, Value, json};

use crate::sim::server::{Incoming, SimResponse};
use crate::sim::state::Shared;
use crate::sim::table_api::{authenticate, error, instance_headers};

/// Role the companion API requires.
pub const COMPANION_ROLE: &str = "x_snok.keeper";

/// Most ids one call may ask for.
pub const MAX_IDS: usize = 100;

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
    if resource != "/secrets" || !matches!(req.method.as_str(), "GET" | "HEAD") {
        return error(
            &mut st,
            400,
            "Requested URI does not represent any resource",
            None,
        );
    }
    if !st.has_role(COMPANION_ROLE) {
        return error(&mut st, 403, "Insufficient rights to query records", None);
    }
    let mut ids: Vec<String> = Vec::new();
    for param in req.params().into_iter().filter(|p| p.key == "sys_id") {
        for id in param
            .value
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
        {
            if !ids.iter().any(|known| known == id) {
                ids.push(id.to_owned());
            }
        }
    }
    if ids.is_empty() {
        return error(
            &mut st,
            400,
            "Missing parameter sys_id",
            Some("Provide one or more oauth_credential sys_ids as sys_id=<id>[,<id>...]"),
        );
    }
    if ids.len() > MAX_IDS {
        let detail = format!(
            "At most {MAX_IDS} sys_id values per request, got {}",
            ids.len()
        );
        return error(&mut st, 400, "Too many sys_ids", Some(&detail));
    }
    let mut result = Vec::new();
    for id in &ids {
        let Some(row) = st.db.get("oauth_credential", id) else {
            continue;
        };
        if row.get("type").map(String::as_str) != Some("refresh_token") {
            continue;
        }
        let mut entry = Map::new();
        entry.insert("sys_id".to_owned(), json!(id));
        if let Some(token) = row.get("token_received").and_then(|t| st.decrypt(t)) {
            entry.insert("refresh_token".to_owned(), json!(token));
        }
        let secret = row
            .get("peer")
            .and_then(|peer| st.db.get("oauth_entity", peer))
            .and_then(|entity| entity.get("client_secret"))
            .and_then(|s| st.decrypt(s));
        if let Some(secret) = secret {
            entry.insert("client_secret".to_owned(), json!(secret));
        }
        result.push(Value::Object(entry));
    }
    SimResponse {
        status: 200,
        headers: instance_headers(&mut st),
        body: json!({ "result": result }).to_string().into_bytes(),
    }
}
