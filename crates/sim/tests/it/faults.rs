//! Every fault action as a reqwest client sees it, plus the request log and shutdown.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, Fault, FaultAction, FaultTarget, ProviderKind, RegistrySpec,
    SeededCredential, SeededRegistry, Simulator, Target,
};

async fn okta() -> (Simulator, SeededRegistry, SeededCredential) {
    let mut estate = Estate::empty(51);
    let reg = estate.add_registry(
        RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
    );
    let cred = estate.add_credential(CredentialSpec::new(reg, "c"));
    let reg = estate.registries()[0].clone();
    (start(estate).await, reg, cred)
}

fn refresh_form<'a>(reg: &'a SeededRegistry, rt: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("grant_type", "refresh_token"),
        ("client_id", reg.client_id.as_str()),
        ("client_secret", reg.client_secret.as_str()),
        ("refresh_token", rt),
    ]
}

#[tokio::test]
async fn status_faults_fire_in_order_and_run_out() {
    let sim = start(Estate::demo(52)).await;
    sim.inject(Fault::retry_after(FaultTarget::TableApi, 429, 7).times(1));
    sim.inject(Fault::status(FaultTarget::TableApi, 503).method("PATCH"));
    sim.inject(Fault::custom(FaultTarget::Any, 502, "<html>Bad gateway</html>").path("/nowhere"));
    let resp = get(&sim, "/api/now/table/oauth_credential").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "retry-after").as_deref(), Some("7"));
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"message":"Rate limit exceeded","detail":"Rate limit of 100 requests per hour for Table API exceeded"},"status":"failure"}"#
    );
    assert_eq!(
        get(&sim, "/api/now/table/oauth_credential").await.status(),
        StatusCode::OK
    );
    let resp = req(&sim, Method::PATCH, "/api/now/table/oauth_credential/x")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(resp).await["status"], "failure");
    let resp = get(&sim, "/nowhere").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        header(&resp, "content-type").unwrap(),
        "text/plain;charset=UTF-8"
    );
    sim.clear_faults();
    let resp = req(&sim, Method::PATCH, "/api/now/table/oauth_credential/x")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Provider defaults: 429 as plain text, 5xx as temporarily_unavailable.
    sim.inject(Fault::retry_after(FaultTarget::Provider("entra".to_owned()), 429, 60).times(1));
    sim.inject(Fault::status(FaultTarget::Provider("entra".to_owned()), 503).times(1));
    let resp = client()
        .post(sim.token_url("entra"))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "retry-after").as_deref(), Some("60"));
    assert_eq!(resp.text().await.unwrap(), "Too Many Requests");
    let resp = client()
        .post(sim.token_url("entra"))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(json(resp).await["error"], "temporarily_unavailable");
    assert_eq!(sim.token_requests("entra"), 2);
}

#[tokio::test]
async fn delay_then_serve() {
    let sim = start(Estate::empty(53)).await;
    sim.inject(Fault::delay(FaultTarget::TableApi, Duration::from_millis(300)).times(1));
    let started = tokio::time::Instant::now();
    let resp = get(&sim, "/api/now/table/sys_user").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status(), StatusCode::OK);
    // A client timeout shorter than the delay sees a timeout.
    sim.inject(Fault::delay(FaultTarget::TableApi, Duration::from_millis(500)).times(1));
    let err = client()
        .get(format!("{}/api/now/table/sys_user", sim.base_url()))
        .basic_auth(sim.username(), Some(sim.password()))
        .timeout(Duration::from_millis(100))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
}

#[tokio::test]
async fn drop_connection_does_not_process() {
    let estate = Estate::demo(54);
    let cred = estate.credentials()[0].clone();
    let sim = start(estate).await;
    sim.inject(
        Fault::drop_connection(FaultTarget::TableApi)
            .method("PATCH")
            .times(1),
    );
    let http = client();
    let url = format!(
        "{}/api/now/table/oauth_credential/{}",
        sim.base_url(),
        cred.refresh_sys_id
    );
    // Warm the pool so the drop happens on a reused keep-alive connection.
    let warm = http
        .get(&url)
        .basic_auth(sim.username(), Some(sim.password()))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), StatusCode::OK);
    warm.bytes().await.unwrap();
    let err = http
        .patch(&url)
        .basic_auth(sim.username(), Some(sim.password()))
        .json(&json!({"name": "changed"}))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    // hyper reports IncompleteMessage: the connection closed before any response byte.
    assert!(err.is_request(), "{err:?}");
    assert_eq!(
        sim.row("oauth_credential", &cred.refresh_sys_id).unwrap()["name"],
        cred.name.as_str()
    );
    let last = sim.requests().pop().unwrap();
    assert_eq!((last.method.as_str(), last.status), ("PATCH", 0));
    // The same client keeps working afterwards.
    let resp = http
        .get(&url)
        .basic_auth(sim.username(), Some(sim.password()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn drop_after_processing_loses_the_rotated_token() {
    let (sim, reg, cred) = okta().await;
    sim.inject(Fault::drop_after_processing(FaultTarget::Provider("okta".to_owned())).times(1));
    let err = client()
        .post(sim.token_url("okta"))
        .form(&refresh_form(&reg, &cred.refresh_token))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    // The provider rotated: the presented token is spent, and its successor was never seen.
    assert!(!sim.provider_valid("okta", &cred.refresh_token));
    assert_eq!(sim.token_requests("okta"), 1);
    // Retrying with the old token is reuse: the whole family dies.
    let resp = client()
        .post(sim.token_url("okta"))
        .form(&refresh_form(&reg, &cred.refresh_token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(resp).await["error"], "invalid_grant");
    assert_eq!(sim.token_requests("okta"), 2);

    // On the Table API the write happened although the client saw no answer.
    let estate = Estate::demo(55);
    let cred = estate.credentials()[0].clone();
    let sim = start(estate).await;
    sim.inject(Fault::drop_after_processing(FaultTarget::TableApi).method("PATCH"));
    let err = req(
        &sim,
        Method::PATCH,
        &format!("/api/now/table/oauth_credential/{}", cred.refresh_sys_id),
    )
    .json(&json!({"name": "changed"}))
    .send()
    .await
    .unwrap_err();
    assert!(!err.is_timeout());
    assert_eq!(
        sim.row("oauth_credential", &cred.refresh_sys_id).unwrap()["name"],
        "changed"
    );
}

#[tokio::test]
async fn html_garbage_truncated_and_cancelled_bodies() {
    let (sim, reg, cred) = okta().await;
    sim.inject(Fault::html_page(FaultTarget::TableApi).times(1));
    let resp = get(&sim, "/api/now/table/oauth_credential").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        header(&resp, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Instance Hibernating page")
    );

    sim.inject(Fault::garbage(FaultTarget::Companion).times(1));
    let resp = get(
        &sim,
        &format!(
            "{}/secrets?sys_id={}",
            sim.companion_path(),
            cred.refresh_sys_id
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        header(&resp, "content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert!(serde_json::from_str::<Value>(&resp.text().await.unwrap()).is_err());

    // Truncated provider answer: processed (rotated), body cut in half.
    sim.inject(Fault::truncated_json(FaultTarget::Provider("okta".to_owned())).times(1));
    let resp = client()
        .post(sim.token_url("okta"))
        .form(&refresh_form(&reg, &cred.refresh_token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with('{') && serde_json::from_str::<Value>(&text).is_err(),
        "{text}"
    );
    assert!(!sim.provider_valid("okta", &cred.refresh_token));

    sim.inject(Fault::transaction_cancelled(FaultTarget::TableApi).times(1));
    let resp = get(&sim, "/api/now/table/oauth_credential").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["result"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["error"]["message"],
        "Transaction cancelled: maximum execution time exceeded"
    );
    assert_eq!(body["status"], "failure");
}

#[tokio::test]
async fn request_log_redacts_and_classifies() {
    let (sim, reg, cred) = okta().await;
    get(
        &sim,
        "/api/now/table/oauth_credential?sysparm_query=type%3Drefresh_token&sysparm_limit=5",
    )
    .await;
    get(
        &sim,
        &format!(
            "{}/secrets?sys_id={}",
            sim.companion_path(),
            cred.refresh_sys_id
        ),
    )
    .await;
    client()
        .post(sim.token_url("okta"))
        .form(&refresh_form(&reg, &cred.refresh_token))
        .send()
        .await
        .unwrap();
    client()
        .get(format!("{}/favicon.ico", sim.base_url()))
        .send()
        .await
        .unwrap();
    let log = sim.requests();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0].target, Target::TableApi);
    assert_eq!(
        log[0].query,
        "sysparm_query=type%3Drefresh_token&sysparm_limit=5"
    );
    assert_eq!(log[0].header("authorization"), Some("Basic <redacted>"));
    assert_eq!(log[0].status, 200);
    assert_eq!(log[1].target, Target::Companion);
    assert_eq!(log[2].target, Target::Provider("okta".to_owned()));
    assert_eq!(log[2].method, "POST");
    assert!(log[2].body.contains("grant_type=refresh_token"));
    assert_eq!(log[3].target, Target::Other);
    assert_eq!(log[3].status, 404);
    assert!(
        log.iter()
            .all(|r| !format!("{r:?}").contains(sim.password()))
    );
    sim.clear_requests();
    assert!(sim.requests().is_empty());
    // Faulted actions are logged with what the client got.
    sim.inject(
        Fault::new(
            FaultTarget::Any,
            FaultAction::Status {
                status: 418,
                body: String::new(),
                headers: vec![],
            },
        )
        .times(1),
    );
    get(&sim, "/api/now/table/sys_user").await;
    assert_eq!(sim.requests()[0].status, 418);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sim = start(Estate::empty(56)).await;
    let http = client();
    let url = format!("{}/api/now/table/sys_user", sim.base_url());
    assert!(
        http.get(&url)
            .basic_auth(sim.username(), Some(sim.password()))
            .send()
            .await
            .is_ok()
    );
    sim.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(client().get(&url).send().await.is_err());
    // Dropping the last handle stops it as well.
    let sim = start(Estate::empty(57)).await;
    let url = format!("{}/api/now/table/sys_user", sim.base_url());
    drop(sim);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(client().get(&url).send().await.is_err());
}

#[tokio::test]
async fn byte_faults_send_exactly_their_bytes() {
    let (sim, reg, cred) = okta().await;
    let bytes = vec![0xff, 0xfe, b'{', b'"', 0xc3];
    sim.inject(
        Fault::bytes(
            FaultTarget::Provider("okta".to_owned()),
            200,
            "application/json",
            bytes.clone(),
        )
        .times(1),
    );
    let resp = client()
        .post(sim.token_url("okta"))
        .form(&refresh_form(&reg, &cred.refresh_token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes);
    assert!(
        sim.provider_valid("okta", &cred.refresh_token),
        "not processed"
    );
}

#[tokio::test]
async fn echo_faults_repeat_the_request_in_every_error_field_after_padding() {
    let (sim, reg, cred) = okta().await;
    sim.inject(Fault::echo_request(
        FaultTarget::Provider("okta".to_owned()),
        400,
    ));
    let resp = client()
        .post(sim.token_url("okta"))
        .basic_auth("id", Some("basic-secret"))
        .form(&refresh_form(&reg, &cred.refresh_token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = json(resp).await;
    assert_eq!(body["error"], cred.refresh_token.as_str());
    let description = body["error_description"].as_str().unwrap();
    assert_eq!(description.find(&cred.refresh_token), Some(290));
    assert_eq!(body["suberror"], reg.client_secret.as_str());
    assert!(
        body["trace_id"]
            .as_str()
            .unwrap()
            .contains("grant_type=refresh_token")
    );
    assert!(
        body["correlation_id"]
            .as_str()
            .unwrap()
            .starts_with("Basic ")
    );

    // The instance's envelope echoes the token a write carried.
    sim.inject(Fault::echo_request(FaultTarget::TableApi, 400).method("PATCH"));
    let resp = req(&sim, Method::PATCH, "/api/now/table/oauth_credential/x")
        .json(&json!({"token_received": "written-token"}))
        .send()
        .await
        .unwrap();
    let body = json(resp).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(message.find("written-token"), Some(290));
    assert!(
        body["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("written-token")
    );
}
