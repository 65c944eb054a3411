//! What the update set in `migrations-docs/` sets up beyond the companion, as the simulator
//! models it: the delete ACL scoped to the rows the keeper created, and the scratch registry of
//! `check --round-trip` (compared with the update set's XML itself).

use super::support::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sn_oauth_keeper_sim::{
    COMPANION_ROLE, Estate, ROUND_TRIP_REGISTRY_NAME, ROUND_TRIP_REGISTRY_SYS_ID,
    ROUND_TRIP_TOKEN_URL,
};

#[tokio::test]
async fn the_keepers_role_deletes_only_rows_it_created() {
    let estate = Estate::demo(44).with_user_roles(&[COMPANION_ROLE]);
    let seeded = estate.credentials()[0].refresh_sys_id.clone();
    let sim = start(estate).await;
    let resp = req(&sim, Method::POST, "/api/now/table/oauth_credential")
        .json(&json!({"type": "access_token", "name": "scratch"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let scratch = json(resp).await["result"]["sys_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sim.row("oauth_credential", &scratch).unwrap()["sys_created_by"],
        sim.username()
    );

    // A row of the instance's integrations: the row ACL refuses it, and it stays.
    let path = format!("/api/now/table/oauth_credential/{seeded}");
    let resp = req(&sim, Method::DELETE, &path).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json(resp).await,
        json!({"error": {"message": "Operation Failed", "detail": "ACL Exception Delete Failed due to security constraints"}, "status": "failure"})
    );
    assert!(sim.row("oauth_credential", &seeded).is_some());

    // Its own scratch row goes.
    let path = format!("/api/now/table/oauth_credential/{scratch}");
    let resp = req(&sim, Method::DELETE, &path).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(sim.row("oauth_credential", &scratch).is_none());

    // Without the update set's delete ACL the role deletes nothing.
    let estate = Estate::demo(44)
        .with_user_roles(&[COMPANION_ROLE])
        .without_acl("oauth_credential", "delete");
    let sim = start(estate).await;
    let resp = req(&sim, Method::POST, "/api/now/table/oauth_credential")
        .json(&json!({"type": "access_token"}))
        .send()
        .await
        .unwrap();
    let own = json(resp).await["result"]["sys_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/now/table/oauth_credential/{own}");
    let resp = req(&sim, Method::DELETE, &path).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_scratch_registry_is_the_update_sets() {
    let xml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations-docs/update-set/sn-oauth-keeper-companion.xml"
    ))
    .expect("the update set");
    // Payloads are escaped XML inside the update set's XML.
    let field = |name: &str, value: &str| format!("&lt;{name}&gt;{value}&lt;/{name}&gt;");
    assert!(xml.contains(&format!(
        "<name>oauth_entity_{ROUND_TRIP_REGISTRY_SYS_ID}</name>"
    )));
    for (name, value) in [
        ("sys_id", ROUND_TRIP_REGISTRY_SYS_ID),
        ("name", ROUND_TRIP_REGISTRY_NAME),
        ("token_url", ROUND_TRIP_TOKEN_URL),
    ] {
        assert!(xml.contains(&field(name, value)), "{name} differs");
    }

    let sim = start(
        Estate::empty(45)
            .with_user_roles(&[COMPANION_ROLE])
            .with_round_trip_registry(),
    )
    .await;
    let resp = get(
        &sim,
        &format!(
            "/api/now/table/oauth_entity/{ROUND_TRIP_REGISTRY_SYS_ID}?sysparm_fields=name,token_url,default_grant_type"
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        json(resp).await["result"],
        json!({"name": ROUND_TRIP_REGISTRY_NAME, "token_url": ROUND_TRIP_TOKEN_URL, "default_grant_type": "client_credentials"})
    );
    let row = sim.row("oauth_entity", ROUND_TRIP_REGISTRY_SYS_ID).unwrap();
    assert_eq!(row.get("client_secret").map(String::as_str), Some(""));
}
