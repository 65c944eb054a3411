//! `GET {companion_path}/secrets?sys_id=<id>[,<id>…][&include=client_secret]` (at most
//! [`MAX_IDS`] ids) → `{"result":[{"sys_id","refresh_token"[,"client_secret"]}]}` for
//! `refresh_token` rows whose token decrypts, in the order asked; anything else is left out.
//! As `migrations-docs/companion/secrets.js`.

use serde_json::{Map, Value, json};

use super::{Call, MAX_IDS, decrypted, is_sys_id, values};
use crate::server::{Incoming, SimResponse};

pub(super) fn answer(call: &mut Call<'_>, req: &Incoming) -> SimResponse {
    let includes = values(req, "include");
    if includes.iter().any(|i| i != "client_secret") {
        return call.refuse(
            400,
            "Invalid parameter include",
            "include accepts only client_secret",
            "bad_include",
        );
    }
    let with_secret = !includes.is_empty();
    let ids = match call.requested_ids(req, MAX_IDS) {
        Ok(ids) => ids,
        Err(refused) => return refused,
    };
    let mut result = Vec::new();
    let mut answered: Vec<&str> = Vec::new();
    for id in &ids {
        if !is_sys_id(id) {
            continue;
        }
        let st = &*call.st;
        let Some(row) = st.db.get("oauth_credential", id) else {
            continue;
        };
        if row.get("type").map(String::as_str) != Some("refresh_token") {
            continue;
        }
        let Some(token) = decrypted(st, "oauth_credential", id, "token_received") else {
            continue;
        };
        let mut entry = Map::new();
        entry.insert("sys_id".to_owned(), json!(id));
        entry.insert("refresh_token".to_owned(), json!(token));
        if with_secret {
            let secret = row
                .get("peer")
                .and_then(|peer| decrypted(st, "oauth_entity", peer, "client_secret"));
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
    call.audit(&line);
    call.send(200, &json!({ "result": result }))
}
