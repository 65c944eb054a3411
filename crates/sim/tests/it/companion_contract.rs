//! The companion's shared contract cases (`tests/contract/companion.json`) against the
//! simulator. The Node test in `tests/companion/` runs the same cases against the real scripts
//! in `migrations-docs/companion/`, so the two cannot drift apart.

use jiff::SignedDuration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sn_oauth_keeper_sim::{COMPANION_AUDIT_SOURCE, Estate, Simulator};
use std::net::SocketAddr;

fn cases() -> Value {
    // The cases live at the workspace root, beside the Node test that shares them.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/contract/companion.json"
    );
    let text = std::fs::read_to_string(path).expect("contract cases readable");
    serde_json::from_str(&text).expect("contract cases are JSON")
}

/// A simulator seeded with the fixture rows under their fixed sys_ids; `{"encrypted": x}` is
/// stored encrypted.
async fn seeded(doc: &Value) -> Simulator {
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), Estate::empty(9))
        .await
        .expect("simulator starts");
    for table in ["oauth_entity", "oauth_credential"] {
        for row in doc["fixture"][table].as_array().expect("fixture rows") {
            let row = row.as_object().expect("fixture row");
            let plain: Vec<(&str, &str)> = row
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect();
            let id = sim.insert_row(table, &plain);
            for (column, value) in row {
                if let Some(secret) = value.get("encrypted").and_then(Value::as_str) {
                    sim.set_encrypted_field(table, &id, column, secret);
                }
            }
        }
    }
    sim
}

/// The n-th generated sys_id: 32 hex digits that name no fixture row.
fn generated_id(n: u64) -> String {
    format!("{n:032x}")
}

/// A contract request's query and raw body, generators expanded.
fn query_and_body(request: &Value) -> (String, Option<String>) {
    let mut query = request["query"].as_str().unwrap_or_default().to_string();
    if let Some(n) = request["query_ids"].as_u64() {
        let ids: Vec<String> = (0..n).map(generated_id).collect();
        let ids = format!("sys_id={}", ids.join(","));
        query = if query.is_empty() {
            ids
        } else {
            format!("{query}&{ids}")
        };
    }
    let mut body = request.get("body").cloned();
    if let Some(n) = request["body_tokens"].as_u64() {
        let tokens: Vec<Value> = (0..n)
            .map(|i| json!({"sys_id": generated_id(i), "sha256": "0".repeat(64)}))
            .collect();
        body = Some(json!({ "tokens": tokens }));
    }
    if let Some(n) = request["body_claims"].as_u64() {
        let claims: Vec<String> = (0..n).map(generated_id).collect();
        body.get_or_insert_with(|| json!({}))["claims"] = json!(claims);
    }
    let text = match request["body_text"].as_str() {
        Some(text) => Some(text.to_string()),
        None => body.map(|b| b.to_string()),
    };
    (query, text)
}

#[tokio::test]
async fn the_simulator_answers_every_shared_contract_case() {
    let doc = cases();
    let secrets: Vec<&str> = doc["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= 50);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        // Each case starts from the fixture, on an instance of its own.
        let sim = seeded(&doc).await;
        assert_eq!(sim.username(), doc["user_name"].as_str().unwrap());
        assert_eq!(
            COMPANION_AUDIT_SOURCE,
            doc["audit_source"].as_str().unwrap()
        );
        let roles: Vec<&str> = case
            .get("roles")
            .unwrap_or(&doc["default_roles"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        sim.set_user_roles(&roles);
        let setting = |key: &str| {
            case["instance"]
                .get(key)
                .unwrap_or(&doc["instance"][key])
                .as_str()
                .unwrap()
                .to_string()
        };
        sim.set_companion_allowed_user(&setting("allowed_user"));
        sim.set_companion_role_assignable_by(&setting("role_assignable_by"));
        for (n, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
            if let Some(seconds) = step["advance_seconds"].as_i64() {
                sim.advance_time(SignedDuration::from_secs(seconds));
                continue;
            }
            let request = &step["request"];
            let method =
                Method::from_bytes(request["method"].as_str().unwrap().as_bytes()).unwrap();
            let (query, body) = query_and_body(request);
            let url = format!(
                "{}{}{}?{query}",
                sim.base_url(),
                sim.companion_path(),
                request["path"].as_str().unwrap()
            );
            let before = sim.companion_audit().len();
            let events_before = sim.companion_events().len();
            let mut call = client
                .request(method, url)
                .basic_auth(sim.username(), Some(sim.password()));
            if let Some(body) = body {
                call = call.header("content-type", "application/json").body(body);
            }
            let resp = call.send().await.unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            let expected = u16::try_from(step["status"].as_u64().unwrap()).unwrap();
            assert_eq!(
                status,
                StatusCode::from_u16(expected).unwrap(),
                "{name}, step {n}"
            );
            if step["body"].is_null() {
                assert_eq!(text, "", "{name}, step {n}: no body");
            } else {
                let body: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(body, step["body"], "{name}, step {n}");
            }
            let audit = sim.companion_audit();
            assert_eq!(
                audit.len(),
                before + 1,
                "{name}, step {n}: one audit line per call"
            );
            let line = &audit[before];
            assert_eq!(line, step["audit"].as_str().unwrap(), "{name}, step {n}");
            let queued: Vec<Value> = sim.companion_events()[events_before..]
                .iter()
                .map(|e| {
                    assert_eq!(
                        e.record,
                        sim.user_sys_id(),
                        "{name}: on the caller's record"
                    );
                    json!({"name": e.name, "parm1": e.parm1, "parm2": e.parm2})
                })
                .collect();
            let expected: Vec<Value> = match step.get("event") {
                Some(event) => {
                    let mut event = event.clone();
                    event["name"] = doc["event_name"].clone();
                    vec![event]
                }
                None => Vec::new(),
            };
            assert_eq!(queued, expected, "{name}, step {n}: the refused-call event");
            for secret in &secrets {
                assert!(!line.contains(secret), "{name}: a secret in the audit line");
                assert!(
                    !Value::from(queued.clone()).to_string().contains(secret),
                    "{name}: a secret in an event"
                );
                if request["path"] != "/secrets" {
                    assert!(
                        !text.contains(secret),
                        "{name}: only /secrets answers a secret"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn the_platform_refuses_unauthenticated_calls_before_the_script() {
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), Estate::empty(9))
        .await
        .expect("simulator starts");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (method, resource) in [
        (Method::GET, "/secrets"),
        (Method::POST, "/verify"),
        (Method::POST, "/lease"),
        (Method::GET, "/lease"),
        (Method::DELETE, "/lease"),
        (Method::DELETE, "/lease/claims"),
    ] {
        let resp = client
            .request(
                method,
                format!(
                    "{}{}{resource}?sys_id=00000000000000000000000000000000",
                    sim.base_url(),
                    sim.companion_path()
                ),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{resource}");
        assert_eq!(
            resp.text().await.unwrap(),
            r#"{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}"#
        );
    }
    assert!(sim.companion_audit().is_empty(), "the script never ran");
}
