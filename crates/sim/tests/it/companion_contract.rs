//! The companion's shared contract cases (`tests/contract/companion.json`) against the
//! simulator. The Node test in `tests/companion/` runs the same cases against the real resource
//! script, `migrations-docs/companion/secrets.js`, so the two cannot drift apart.

use reqwest::StatusCode;
use serde_json::Value;
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

/// Seeds the fixture rows with their fixed sys_ids; `{"encrypted": x}` is stored encrypted.
fn seed(sim: &Simulator, doc: &Value) {
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
}

fn query_of(case: &Value) -> String {
    match case["repeat_ids"].as_u64() {
        Some(n) => {
            let ids: Vec<String> = (0..n).map(|i| format!("{i:032x}")).collect();
            format!("sys_id={}", ids.join(","))
        }
        None => case["query"].as_str().expect("query").to_string(),
    }
}

#[tokio::test]
async fn the_simulator_answers_every_shared_contract_case() {
    let doc = cases();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), Estate::empty(9))
        .await
        .expect("simulator starts");
    assert_eq!(sim.username(), doc["user_name"].as_str().unwrap());
    assert_eq!(
        COMPANION_AUDIT_SOURCE,
        doc["audit_source"].as_str().unwrap()
    );
    seed(&sim, &doc);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let secrets: Vec<&str> = doc["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let roles: Vec<&str> = case
            .get("roles")
            .unwrap_or(&doc["default_roles"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        sim.set_user_roles(&roles);
        let before = sim.companion_audit().len();
        let url = format!(
            "{}{}/secrets?{}",
            sim.base_url(),
            sim.companion_path(),
            query_of(case)
        );
        let resp = client
            .get(url)
            .basic_auth(sim.username(), Some(sim.password()))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(
            status,
            StatusCode::from_u16(u16::try_from(case["status"].as_u64().unwrap()).unwrap()).unwrap(),
            "{name}"
        );
        assert_eq!(body, case["body"], "{name}");
        let audit = sim.companion_audit();
        assert_eq!(audit.len(), before + 1, "{name}: one audit line per call");
        let line = &audit[before];
        assert_eq!(line, case["audit"].as_str().unwrap(), "{name}");
        for secret in &secrets {
            assert!(!line.contains(secret), "{name}: a secret in the audit line");
        }
    }
}

#[tokio::test]
async fn the_platform_refuses_unauthenticated_calls_before_the_script() {
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), Estate::empty(9))
        .await
        .expect("simulator starts");
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!(
            "{}{}/secrets?sys_id=00000000000000000000000000000000",
            sim.base_url(),
            sim.companion_path()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}"#
    );
    assert!(sim.companion_audit().is_empty(), "the script never ran");
}
