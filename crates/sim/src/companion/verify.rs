//! `POST {companion_path}/verify` with `{"tokens":[{"sys_id","sha256"}]}` (1 to [`MAX_TOKENS`]
//! entries) → `{"result":[{"sys_id","match"}]}`: for each `oauth_credential` row asked about
//! (refresh or access row), whether its decrypted `token_received` hashes to the digest sent.
//! Never a token; unknown ids and ids that are not sys_ids are left out. As
//! `migrations-docs/companion/verify.js`, with the simulator's own SHA-256.

use std::collections::HashMap;

use aws_lc_rs::digest;
use serde_json::{Value, json};

use super::{Call, MAX_TOKENS, decrypted, is_sys_id, json_object};
use crate::server::{Incoming, SimResponse};

/// The detail of a body that is not `{"tokens":[…]}` with 1 to 100 entries.
const SHAPE: &str =
    r#"Send {"tokens":[{"sys_id":"<32 hex>","sha256":"<64 hex>"}]} with 1 to 100 entries"#;

pub(super) fn answer(call: &mut Call<'_>, req: &Incoming) -> SimResponse {
    let body = json_object(req);
    let tokens = body
        .as_ref()
        .and_then(|b| b.get("tokens"))
        .and_then(Value::as_array)
        .filter(|tokens| !tokens.is_empty());
    let Some(tokens) = tokens else {
        return malformed(call, SHAPE);
    };
    if tokens.len() > MAX_TOKENS {
        let detail = format!(
            "At most {MAX_TOKENS} tokens per request, got {}",
            tokens.len()
        );
        return call.refuse(400, "Too many tokens", &detail, "too_many_tokens");
    }
    // The digest asked for each sys_id, in the order first asked; a sys_id repeated with the
    // same digest is asked once, with another digest the request is ambiguous.
    let mut order: Vec<&str> = Vec::new();
    let mut digests: HashMap<&str, String> = HashMap::new();
    for (i, entry) in tokens.iter().enumerate() {
        let Some(entry) = entry.as_object() else {
            let detail = format!(
                r#"tokens[{i}] must be an object {{"sys_id":"<32 hex>","sha256":"<64 hex>"}}"#
            );
            return malformed(call, &detail);
        };
        let Some(id) = entry.get("sys_id").and_then(Value::as_str) else {
            return malformed(call, &format!("tokens[{i}].sys_id must be a string"));
        };
        let Some(sent) = entry
            .get("sha256")
            .and_then(Value::as_str)
            .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return malformed(
                call,
                &format!("tokens[{i}].sha256 must be 64 hexadecimal digits"),
            );
        };
        let sent = sent.to_ascii_lowercase();
        match digests.get(id) {
            None => {
                digests.insert(id, sent);
                order.push(id);
            }
            Some(earlier) if *earlier != sent => {
                let detail = format!("tokens[{i}] repeats sys_id {id} with another sha256");
                return malformed(call, &detail);
            }
            Some(_) => {}
        }
    }
    let mut result = Vec::new();
    let mut answered: Vec<&str> = Vec::new();
    let mut matched = 0;
    for id in &order {
        if !is_sys_id(id) || call.st.db.get("oauth_credential", id).is_none() {
            continue;
        }
        // A row whose token does not decrypt (empty, or not stored encrypted) matches nothing.
        let matches = decrypted(call.st, "oauth_credential", id, "token_received")
            .is_some_and(|token| sha256_hex(&token) == digests[id]);
        matched += usize::from(matches);
        result.push(json!({ "sys_id": id, "match": matches }));
        answered.push(id);
    }
    let line = format!(
        "requested={} answered={} matched={matched} ids={}",
        order.len(),
        answered.len(),
        answered.join(",")
    );
    call.audit(&line);
    call.send(200, &json!({ "result": result }))
}

fn malformed(call: &mut Call<'_>, detail: &str) -> SimResponse {
    call.refuse(400, "Invalid request body", detail, "bad_body")
}

/// SHA-256 of the token's UTF-8 bytes, lowercase hex.
fn sha256_hex(token: &str) -> String {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_lowercase_hex_of_the_utf8_bytes() {
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // The UTF-8 bytes (c3 a9), not UTF-16 or Latin-1.
        assert_eq!(
            sha256_hex("é"),
            "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c"
        );
    }
}
