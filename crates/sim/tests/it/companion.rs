//! The companion Scripted REST API: what the shared contract cases cannot show, with the
//! simulator's seeded estates and its Table API.
#![allow(clippy::unwrap_used)]

use super::support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sn_oauth_keeper_sim::{COMPANION_ASSIGNABLE_BY, COMPANION_REFUSED_EVENT, Estate, Simulator};

#[tokio::test]
async fn returns_decrypted_secrets_of_refresh_rows_only() {
    let estate = Estate::demo(41);
    let creds = estate.credentials().to_vec();
    let regs = estate.registries().to_vec();
    let sim = start(estate).await;
    let with_access = creds.iter().find(|c| c.access_sys_id.is_some()).unwrap();
    let wrong = creds
        .iter()
        .find(|c| c.label == "wrong client secret")
        .unwrap();
    let ids = [
        creds[0].refresh_sys_id.as_str(),
        with_access.access_sys_id.as_deref().unwrap(),
        "0123456789abcdef0123456789abcdef",
        wrong.refresh_sys_id.as_str(),
    ];
    let resp = get(
        &sim,
        &format!(
            "{}/secrets?sys_id={}&include=client_secret",
            sim.companion_path(),
            ids.join(",")
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "content-type").unwrap(),
        "application/json;charset=UTF-8"
    );
    let body = json(resp).await;
    let secret_of = |reg: &str| regs.iter().find(|r| r.sys_id == reg).unwrap();
    let wrong_reg = secret_of(&wrong.registry);
    assert_eq!(
        body,
        json!({"result": [
            {"sys_id": creds[0].refresh_sys_id, "refresh_token": creds[0].refresh_token, "client_secret": secret_of(&creds[0].registry).client_secret},
            {"sys_id": wrong.refresh_sys_id, "refresh_token": wrong.refresh_token, "client_secret": wrong_reg.stored_client_secret.clone().unwrap()},
        ]})
    );
    // Without include=client_secret the secret stays on the instance.
    let resp = get(
        &sim,
        &format!(
            "{}/secrets?sys_id={}",
            sim.companion_path(),
            creds[0].refresh_sys_id
        ),
    )
    .await;
    assert_eq!(
        json(resp).await,
        json!({"result": [{"sys_id": creds[0].refresh_sys_id, "refresh_token": creds[0].refresh_token}]})
    );
    // Repeated parameters work too, duplicates collapse.
    let resp = get(
        &sim,
        &format!(
            "{}/secrets?sys_id={}&sys_id={}",
            sim.companion_path(),
            creds[1].refresh_sys_id,
            creds[1].refresh_sys_id
        ),
    )
    .await;
    assert_eq!(json(resp).await["result"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn at_most_100_ids_and_a_role() {
    let estate = Estate::demo(42);
    let first = estate.credentials()[0].refresh_sys_id.clone();
    let sim = start(estate).await;
    let mut ids: Vec<String> = (0..99).map(|i| format!("{i:032x}")).collect();
    ids.push(first);
    let resp = get(
        &sim,
        &format!("{}/secrets?sys_id={}", sim.companion_path(), ids.join(",")),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json(resp).await["result"].as_array().unwrap().len(), 1);
    ids.push(format!("{:032x}", 1000));
    let resp = get(
        &sim,
        &format!("{}/secrets?sys_id={}", sim.companion_path(), ids.join(",")),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = json(resp).await;
    assert_eq!(body["status"], "failure");
    assert!(body["error"]["message"].is_string());
    let resp = get(&sim, &format!("{}/secrets", sim.companion_path())).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = get(&sim, &format!("{}/other", sim.companion_path())).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    sim.set_user_roles(&["oauth_admin"]);
    let resp = get(&sim, &format!("{}/secrets?sys_id=x", sim.companion_path())).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"message":"Insufficient rights to query records","detail":"The caller lacks role snok_oauth_keeper"},"status":"failure"}"#
    );
    let sim = start(Estate::demo(42).with_user_roles(&["admin"])).await;
    let resp = get(&sim, &format!("{}/secrets?sys_id=x", sim.companion_path())).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

/// SHA-256 of a token, lowercase hex, computed the way a client would (not with the
/// simulator's code).
fn sha256_hex(token: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `token` into a row's `token_received` through the Table API, with or without
/// `sysparm_input_display_value=true`.
async fn write_token(sim: &Simulator, row: &str, token: &str, input_display_value: bool) {
    let flag = if input_display_value {
        "?sysparm_input_display_value=true"
    } else {
        ""
    };
    let resp = req(
        sim,
        Method::PATCH,
        &format!("/api/now/table/oauth_credential/{row}{flag}"),
    )
    .json(&json!({"token_received": token}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// `POST /verify` of (row, token) pairs; the answer's body.
async fn verify(sim: &Simulator, asked: &[(&str, &str)]) -> Value {
    let tokens: Vec<Value> = asked
        .iter()
        .map(|(row, token)| json!({"sys_id": row, "sha256": sha256_hex(token)}))
        .collect();
    let resp = req(
        sim,
        Method::POST,
        &format!("{}/verify", sim.companion_path()),
    )
    .json(&json!({ "tokens": tokens }))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    json(resp).await
}

#[tokio::test]
async fn verify_proves_what_a_table_api_write_stored() {
    let estate = Estate::demo(43);
    let cred = estate
        .credentials()
        .iter()
        .find(|c| c.access_sys_id.is_some())
        .unwrap()
        .clone();
    let access = cred.access_sys_id.clone().unwrap();
    let sim = start(estate).await;
    let written = "at-written-by-the-keeper-0f1e2d3c";
    let asked = [
        (access.as_str(), written),
        (cred.refresh_sys_id.as_str(), cred.refresh_token.as_str()),
    ];
    // A write with sysparm_input_display_value=true stores the token encrypted: it verifies.
    write_token(&sim, &access, written, true).await;
    let body = verify(&sim, &asked).await;
    assert_eq!(
        body,
        json!({"result": [
            {"sys_id": access, "match": true},
            {"sys_id": cred.refresh_sys_id, "match": true},
        ]})
    );
    assert!(
        !body.to_string().contains(&cred.refresh_token),
        "never a token"
    );
    // Without the flag the instance stores it as is: it does not decrypt, so nothing matches.
    write_token(&sim, &access, written, false).await;
    assert_eq!(
        verify(&sim, &asked).await["result"][0]["match"],
        json!(false)
    );
}

#[tokio::test]
async fn a_half_prepared_instance_refuses_the_keeper_until_security_admin_finishes() {
    let estate = Estate::demo(48)
        .with_companion_allowed_user("")
        .with_companion_role_assignable_by("");
    let id = estate.credentials()[0].refresh_sys_id.clone();
    let sim = start(estate).await;
    let secrets = format!("{}/secrets?sys_id={id}", sim.companion_path());
    let resp = get(&sim, &secrets).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json(resp).await["error"]["message"],
        "Companion allowed user not set"
    );
    sim.set_companion_allowed_user(sim.username());
    let resp = get(&sim, &secrets).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json(resp).await["error"]["message"],
        "Companion role not locked down"
    );
    sim.set_companion_role_assignable_by(COMPANION_ASSIGNABLE_BY);
    assert_eq!(get(&sim, &secrets).await.status(), StatusCode::OK);
    let events: Vec<(String, String)> = sim
        .companion_events()
        .into_iter()
        .map(|e| (e.name, e.parm2))
        .collect();
    assert_eq!(
        events,
        [
            (
                COMPANION_REFUSED_EVENT.to_owned(),
                "GET /secrets no_allowed_user".to_owned()
            ),
            (
                COMPANION_REFUSED_EVENT.to_owned(),
                "GET /secrets role_not_locked".to_owned()
            ),
        ]
    );
}
