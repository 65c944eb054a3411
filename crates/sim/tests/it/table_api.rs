//! The simulated Table API over real sockets: auth, errors, paging, queries, value shapes,
//! writes, password2 and time-zone semantics.
#![allow(clippy::unwrap_used)]

use super::support::*;
use jiff::SignedDuration;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sn_oauth_keeper_sim::{CredentialSpec, Estate, ProviderKind, RegistrySpec, Simulator};

const UNAUTHENTICATED: &str = r#"{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}"#;
const NOT_FOUND: &str = r#"{"error":{"message":"No Record found","detail":"Record doesn't exist or ACL restricts the record retrieval"},"status":"failure"}"#;

/// One Entra registry with `n` fresh credentials (each a refresh row plus an access row).
fn estate_with(n: usize) -> (Estate, String) {
    let mut estate = Estate::empty(11);
    let reg = estate
        .add_registry(RegistrySpec::new("Entra", ProviderKind::EntraLike).provider_id("entra"));
    for i in 0..n {
        estate.add_credential(CredentialSpec::new(&reg, format!("cred {i:02}")));
    }
    (estate, reg)
}

async fn refresh_ids(sim: &Simulator, query: &str) -> Vec<String> {
    let resp = get(
        sim,
        &format!(
            "/api/now/table/oauth_credential?sysparm_query={}&sysparm_fields=sys_id",
            enc(query)
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    result_rows(&json(resp).await)
        .iter()
        .map(|r| r["sys_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn names(sim: &Simulator, query: &str) -> Vec<String> {
    let resp = get(
        sim,
        &format!(
            "/api/now/table/oauth_credential?sysparm_query={}&sysparm_fields=name",
            enc(query)
        ),
    )
    .await;
    result_rows(&json(resp).await)
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn authentication_failures_have_the_exact_body() {
    let sim = start(Estate::demo(1)).await;
    let url = format!("{}/api/now/table/oauth_credential", sim.base_url());
    let none = client().get(&url).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&none, "www-authenticate").is_some());
    assert_eq!(
        header(&none, "content-type").unwrap(),
        "application/json;charset=UTF-8"
    );
    assert_eq!(none.text().await.unwrap(), UNAUTHENTICATED);
    let wrong = client()
        .get(&url)
        .basic_auth(sim.username(), Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.text().await.unwrap(), UNAUTHENTICATED);
    let bearer = client()
        .get(&url)
        .bearer_auth("at-123")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.text().await.unwrap(), UNAUTHENTICATED);
    // Same for the companion and unrouted API paths.
    let comp = client()
        .get(format!(
            "{}{}/secrets?sys_id=x",
            sim.base_url(),
            sim.companion_path()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(comp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(comp.text().await.unwrap(), UNAUTHENTICATED);

    // The basic-auth restriction: an interactive (non-WSAO) user without the role is refused.
    let sim = start(Estate::empty(1).with_web_service_access_only(false)).await;
    let resp = get(&sim, "/api/now/table/sys_user").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let sim = start(
        Estate::empty(1)
            .with_web_service_access_only(false)
            .with_user_roles(&["snc_basic_auth_api_access"]),
    )
    .await;
    assert_eq!(
        get(&sim, "/api/now/table/sys_user").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn error_envelopes_and_instance_headers() {
    let sim = start(Estate::demo(2)).await;
    let resp = get(&sim, "/api/now/table/sys_nonexistent").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"message":"Invalid table sys_nonexistent","detail":"Table sys_nonexistent does not exist"},"status":"failure"}"#
    );
    let resp = get(
        &sim,
        "/api/now/v2/table/oauth_credential/0123456789abcdef0123456789abcdef",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.text().await.unwrap(), NOT_FOUND);
    let resp = get(&sim, "/api/now/table/oauth_credential?sysparm_limit=1").await;
    assert_eq!(header(&resp, "server").unwrap(), "ServiceNow");
    assert_eq!(header(&resp, "x-transaction-id").unwrap().len(), 12);
    assert_eq!(
        header(&resp, "content-type").unwrap(),
        "application/json;charset=UTF-8"
    );
    let resp = get(&sim, "/api/now/stats/nothing").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Requested URI does not represent any resource")
    );
}

#[tokio::test]
async fn oauth_tables_need_oauth_admin_or_admin() {
    let sim = start(Estate::demo(3).with_user_roles(&["itil"])).await;
    let resp = get(&sim, "/api/now/table/oauth_credential").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"message":"Insufficient rights to query records","detail":null},"status":"failure"}"#
    );
    let patch = req(&sim, Method::PATCH, "/api/now/table/oauth_credential/abc")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::FORBIDDEN);
    assert!(
        patch
            .text()
            .await
            .unwrap()
            .contains("ACL Exception Update Failed due to security constraints")
    );
    // sys_user is readable by any authenticated user.
    assert_eq!(
        get(&sim, "/api/now/table/sys_user").await.status(),
        StatusCode::OK
    );
    sim.set_user_roles(&["admin"]);
    assert_eq!(
        get(&sim, "/api/now/table/oauth_credential").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn paging_headers_follow_the_instance() {
    let (estate, _) = estate_with(12);
    let sim = start(estate).await;
    let base = sim.base_url();
    let q = enc("type=refresh_token");
    let mut seen = Vec::new();
    for (offset, expect_rows, prev, next) in
        [(0, 5, -5, Some(5)), (5, 5, 0, Some(10)), (10, 2, 5, None)]
    {
        let path = format!(
            "/api/now/table/oauth_credential?sysparm_query={q}&sysparm_fields=sys_id&sysparm_limit=5&sysparm_offset={offset}"
        );
        let resp = get(&sim, &path).await;
        assert_eq!(header(&resp, "x-total-count").as_deref(), Some("12"));
        let link = header(&resp, "link").unwrap();
        let url = |off: i64| {
            format!(
                "<{base}/api/now/table/oauth_credential?sysparm_query={q}&sysparm_fields=sys_id&sysparm_limit=5&sysparm_offset={off}>"
            )
        };
        let mut expected = vec![
            format!("{};rel=\"first\"", url(0)),
            format!("{};rel=\"prev\"", url(prev)),
        ];
        if let Some(next) = next {
            expected.push(format!("{};rel=\"next\"", url(next)));
        }
        expected.push(format!("{};rel=\"last\"", url(10)));
        assert_eq!(link, expected.join(","));
        let rows = result_rows(&json(resp).await);
        assert_eq!(rows.len(), expect_rows);
        seen.extend(
            rows.iter()
                .map(|r| r["sys_id"].as_str().unwrap().to_owned()),
        );
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 12);

    // Default limit 10000, version echoed in links.
    let resp = get(
        &sim,
        "/api/now/v2/table/oauth_credential?sysparm_fields=sys_id",
    )
    .await;
    let link = header(&resp, "link").unwrap();
    assert!(link.starts_with(&format!("<{base}/api/now/v2/table/oauth_credential?sysparm_fields=sys_id&sysparm_limit=10000&sysparm_offset=0>;rel=\"first\"")));
    assert!(link.ends_with("sysparm_limit=10000&sysparm_offset=0>;rel=\"last\""));
    assert!(!link.contains("rel=\"next\""));
    assert_eq!(header(&resp, "x-total-count").as_deref(), Some("24"));

    // Suppressed Link still counts.
    let resp = get(
        &sim,
        "/api/now/table/oauth_credential?sysparm_suppress_pagination_header=true&sysparm_limit=2",
    )
    .await;
    assert!(header(&resp, "link").is_none());
    assert_eq!(header(&resp, "x-total-count").as_deref(), Some("24"));
}

#[tokio::test]
async fn empty_results_per_version() {
    let sim = start(Estate::empty(4)).await;
    let v1 = get(&sim, "/api/now/v1/table/oauth_credential").await;
    assert_eq!(v1.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&v1, "x-total-count").as_deref(), Some("0"));
    for path in [
        "/api/now/v2/table/oauth_credential",
        "/api/now/table/oauth_credential",
        "/api/now/table/em_event",
    ] {
        let resp = get(&sim, path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&resp, "x-total-count").as_deref(), Some("0"));
        assert_eq!(json(resp).await, json!({"result": []}));
    }
    // An offset past the end is empty too: 404 on v1.
    let (estate, _) = estate_with(2);
    let sim = start(estate).await;
    let resp = get(&sim, "/api/now/v1/table/oauth_credential?sysparm_offset=10").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn short_pages_still_announce_next() {
    let (estate, _) = estate_with(6);
    let sim = start(estate.with_max_page_rows(3)).await;
    let q = enc("type=refresh_token");
    let resp = get(
        &sim,
        &format!("/api/now/table/oauth_credential?sysparm_query={q}&sysparm_limit=5"),
    )
    .await;
    assert_eq!(header(&resp, "x-total-count").as_deref(), Some("6"));
    let link = header(&resp, "link").unwrap();
    assert!(
        link.contains("sysparm_limit=5&sysparm_offset=5>;rel=\"next\""),
        "{link}"
    );
    assert_eq!(result_rows(&json(resp).await).len(), 3);
    // Following `next` gets the sixth row; rows 4 and 5 are only reachable by smaller pages.
    let resp = get(
        &sim,
        &format!(
            "/api/now/table/oauth_credential?sysparm_query={q}&sysparm_limit=5&sysparm_offset=5"
        ),
    )
    .await;
    assert!(!header(&resp, "link").unwrap().contains("rel=\"next\""));
    assert_eq!(result_rows(&json(resp).await).len(), 1);
}

#[tokio::test]
async fn encoded_query_operators() {
    let estate = Estate::demo(5);
    let creds = estate.credentials().to_vec();
    let sim = start(estate).await;
    let refresh_count = refresh_ids(&sim, "type=refresh_token").await.len();
    assert_eq!(refresh_count, creds.len());
    // Unknown fields are ignored.
    assert_eq!(
        refresh_ids(&sim, "bogus_field=1^type=refresh_token")
            .await
            .len(),
        refresh_count
    );
    // ^OR binds to the previous condition.
    let two = names(
        &sim,
        "type=refresh_token^name=Okta user sync^ORname=Teams notifications",
    )
    .await;
    assert_eq!(two.len(), 2);
    // ^NQ ORs whole queries.
    let nq = names(
        &sim,
        "type=refresh_token^name=Okta user sync^NQtype=access_token^name=Teams notifications",
    )
    .await;
    assert_eq!(nq.len(), 2);
    // IN / NOT IN.
    let ids: Vec<&str> = creds
        .iter()
        .take(3)
        .map(|c| c.refresh_sys_id.as_str())
        .collect();
    let got = refresh_ids(&sim, &format!("sys_idIN{}", ids.join(","))).await;
    assert_eq!(got.len(), 3);
    let got = refresh_ids(
        &sim,
        &format!("type=refresh_token^sys_idNOT IN{}", ids.join(",")),
    )
    .await;
    assert_eq!(got.len(), refresh_count - 3);
    // ISEMPTY: the token the instance issued for itself has no requestor profile.
    assert_eq!(
        refresh_ids(&sim, "oauth_requestor_profileISEMPTY")
            .await
            .len(),
        1
    );
    assert_eq!(
        refresh_ids(&sim, "oauth_requestor_profileISNOTEMPTY^type=access_token")
            .await
            .len(),
        creds.iter().filter(|c| c.access_sys_id.is_some()).count()
    );
    // LIKE / STARTSWITH / != .
    assert_eq!(
        names(&sim, "type=refresh_token^nameLIKEgmail relay")
            .await
            .len(),
        4
    );
    assert_eq!(
        names(&sim, "type=refresh_token^nameSTARTSWITHOkta")
            .await
            .len(),
        5
    );
    assert_eq!(
        names(
            &sim,
            "type!=refresh_token^oauth_requestor_profileISNOTEMPTY"
        )
        .await
        .len(),
        creds.iter().filter(|c| c.access_sys_id.is_some()).count()
    );
    // Date-times compare as UTC.
    let soon = sim
        .now()
        .checked_add(SignedDuration::from_mins(10))
        .unwrap();
    let literal = soon.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let fresh = names(
        &sim,
        &format!("type=access_token^expires>{literal}^oauth_requestor_profileISNOTEMPTY"),
    )
    .await;
    let expected = creds
        .iter()
        .filter(|c| c.label == "fresh" || c.label == "client_credentials registry")
        .count();
    assert_eq!(fresh.len(), expected, "{fresh:?}");
    // The discovery query of servicenow.md §1.8, with javascript: and ^OR.
    let live = refresh_ids(
        &sim,
        "type=refresh_token^expires>javascript:gs.minutesAgo(0)^ORexpiresISEMPTY",
    )
    .await;
    assert_eq!(live.len(), refresh_count - 1);
    // Numeric compare on sys_mod_count (string compare would say "10" < "4").
    let id = &creds[0].refresh_sys_id;
    sim.set_row_field("oauth_credential", id, "sys_mod_count", "10");
    assert_eq!(refresh_ids(&sim, "sys_mod_count>4").await, vec![id.clone()]);
    // ORDERBYDESC.
    let resp = get(
        &sim,
        &format!(
            "/api/now/table/oauth_credential?sysparm_query={}&sysparm_fields=expires",
            enc("type=access_token^ORDERBYDESCexpires")
        ),
    )
    .await;
    let expires: Vec<String> = result_rows(&json(resp).await)
        .iter()
        .map(|r| r["expires"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = expires.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(expires, sorted);
    assert!(expires.len() > 5);
    // Dot-walking in the query.
    assert_eq!(
        names(&sim, "type=refresh_token^peer.name=Okta Workforce")
            .await
            .len(),
        5
    );
    assert_eq!(
        names(
            &sim,
            "type=refresh_token^peer.default_grant_type=client_credentials"
        )
        .await
        .len(),
        1
    );
}

#[tokio::test]
async fn name_value_filters_and_dot_walked_fields() {
    let estate = Estate::demo(6);
    let okta = estate
        .registries()
        .iter()
        .find(|r| r.provider_id == "okta")
        .unwrap()
        .clone();
    let sim = start(estate).await;
    // Name-value pairs accept display values of references.
    let resp = get(
        &sim,
        &format!(
            "/api/now/table/oauth_credential?type=refresh_token&peer={}&sysparm_fields=sys_id",
            enc("Okta Workforce")
        ),
    )
    .await;
    assert_eq!(result_rows(&json(resp).await).len(), 5);
    let fields = "sys_id,peer,peer.name,peer.client_id,peer.token_url,oauth_requestor_profile.requestor_id,oauth_requestor_profile.oauth_entity_profile,no_such_field";
    let resp = get(&sim, &format!("/api/now/table/oauth_credential?peer={}&type=refresh_token&sysparm_fields={fields}&sysparm_limit=1", okta.sys_id)).await;
    let row = result_rows(&json(resp).await).remove(0);
    let obj = row.as_object().unwrap();
    assert_eq!(obj.len(), 7);
    assert_eq!(row["peer.name"], "Okta Workforce");
    assert_eq!(row["peer.client_id"], okta.client_id.as_str());
    assert_eq!(
        row["peer.token_url"],
        format!("{}/oauth2/okta/token", sim.base_url()).as_str()
    );
    assert_eq!(row["peer"]["value"], okta.sys_id.as_str());
    // A dot-walked reference is itself a reference object.
    assert_eq!(
        row["oauth_requestor_profile.oauth_entity_profile"]["value"],
        okta.entity_profile.as_str()
    );
    assert!(
        row["oauth_requestor_profile.requestor_id"]
            .as_str()
            .unwrap()
            .len()
            == 32
    );
}

#[tokio::test]
async fn value_shapes_per_display_mode() {
    let estate = Estate::demo(7).with_user_time_zone("America/Los_Angeles");
    let cred = estate.credentials()[0].clone();
    let sim = start(estate).await;
    let base = sim.base_url();
    let row = sim.row("oauth_credential", &cred.refresh_sys_id).unwrap();
    let path = |params: &str| {
        format!(
            "/api/now/v2/table/oauth_credential/{}?{params}",
            cred.refresh_sys_id
        )
    };

    let plain = json(get(&sim, &path("")).await).await["result"].clone();
    assert_eq!(
        plain["peer"],
        json!({"link": format!("{base}/api/now/v2/table/oauth_entity/{}", cred.registry), "value": cred.registry})
    );
    assert_eq!(plain["type"], "refresh_token");
    assert_eq!(plain["expires"], row["expires"].as_str());
    assert_eq!(plain["sys_mod_count"], "4");
    assert!(
        plain["token_received"]
            .as_str()
            .unwrap()
            .starts_with("kmf:v1:")
    );
    assert_ne!(plain["token_received"], cred.refresh_token.as_str());

    let bare =
        json(get(&sim, &path("sysparm_exclude_reference_link=true")).await).await["result"].clone();
    assert_eq!(bare["peer"], cred.registry.as_str());

    let display =
        json(get(&sim, &path("sysparm_display_value=true")).await).await["result"].clone();
    assert_eq!(
        display["peer"]["display_value"],
        "Microsoft Entra ID (Graph mail)"
    );
    assert!(
        display["peer"]["link"]
            .as_str()
            .unwrap()
            .ends_with(&cred.registry)
    );
    assert_eq!(display["type"], "Refresh Token");
    // Display date-times are in the user's zone.
    let utc = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", &row["expires"]).unwrap();
    let la = jiff::tz::TimeZone::get("America/Los_Angeles").unwrap();
    let local = la.to_datetime(jiff::tz::TimeZone::UTC.to_timestamp(utc).unwrap());
    assert_eq!(
        display["expires"],
        local.strftime("%Y-%m-%d %H:%M:%S").to_string().as_str()
    );

    let all = json(get(&sim, &path("sysparm_display_value=all")).await).await["result"].clone();
    assert_eq!(
        all["type"],
        json!({"display_value": "Refresh Token", "value": "refresh_token"})
    );
    assert_eq!(all["peer"]["value"], cred.registry.as_str());
    assert_eq!(
        all["peer"]["display_value"],
        "Microsoft Entra ID (Graph mail)"
    );
    assert!(all["peer"]["link"].is_string());
    let all_bare = json(
        get(
            &sim,
            &path("sysparm_display_value=all&sysparm_exclude_reference_link=true"),
        )
        .await,
    )
    .await["result"]
        .clone();
    assert!(all_bare["peer"].get("link").is_none());

    // Empty references are "".
    let instance_token = json(
        get(
            &sim,
            "/api/now/table/oauth_credential?sysparm_query=oauth_requestor_profileISEMPTY",
        )
        .await,
    )
    .await;
    assert_eq!(
        result_rows(&instance_token)[0]["oauth_requestor_profile"],
        ""
    );
}

#[tokio::test]
async fn writes_post_patch_put_delete() {
    let (estate, reg) = estate_with(1);
    let sim = start(estate).await;
    let body = json!({
        "type": "access_token", "peer": reg, "name": "new", "scopes": "a b",
        "sys_id": "ffffffffffffffffffffffffffffffff", "sys_mod_count": "99", "sys_created_by": "mallory",
        "no_such_column": "ignored",
    });
    let resp = req(
        &sim,
        Method::POST,
        "/api/now/v2/table/oauth_credential?sysparm_exclude_reference_link=true",
    )
    .json(&body)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = header(&resp, "location").unwrap();
    let created = json(resp).await["result"].clone();
    let id = created["sys_id"].as_str().unwrap().to_owned();
    assert_ne!(id, "ffffffffffffffffffffffffffffffff");
    assert_eq!(id.len(), 32);
    assert_eq!(
        location,
        format!("{}/api/now/v2/table/oauth_credential/{id}", sim.base_url())
    );
    assert_eq!(created["sys_mod_count"], "0");
    assert_eq!(created["sys_created_by"], sim.username());
    assert_eq!(created["sys_updated_by"], sim.username());
    assert_eq!(created["peer"], reg.as_str());
    assert_eq!(created["sys_created_on"], created["sys_updated_on"]);
    assert!(created.get("no_such_column").is_none());
    assert!(created["token_received"] == "" && created["user"] == "");

    sim.advance_time(SignedDuration::from_secs(5));
    let resp = req(
        &sim,
        Method::PATCH,
        &format!(
            "/api/now/table/oauth_credential/{id}?sysparm_fields=name,sys_mod_count,sys_updated_on"
        ),
    )
    .json(&json!({"name": "renamed"}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let patched = json(resp).await["result"].clone();
    assert_eq!(patched.as_object().unwrap().len(), 3);
    assert_eq!(patched["sys_mod_count"], "1");
    assert_ne!(patched["sys_updated_on"], created["sys_updated_on"]);
    // No change, no write.
    let resp = req(
        &sim,
        Method::PATCH,
        &format!("/api/now/table/oauth_credential/{id}"),
    )
    .json(&json!({"name": "renamed"}))
    .send()
    .await
    .unwrap();
    assert_eq!(json(resp).await["result"]["sys_mod_count"], "1");
    // PUT is a partial update too.
    let resp = req(
        &sim,
        Method::PUT,
        &format!("/api/now/table/oauth_credential/{id}"),
    )
    .json(&json!({"scopes": "c"}))
    .send()
    .await
    .unwrap();
    let put = json(resp).await["result"].clone();
    assert_eq!(
        (
            put["scopes"].as_str(),
            put["name"].as_str(),
            put["sys_mod_count"].as_str()
        ),
        (Some("c"), Some("renamed"), Some("2"))
    );
    // Invalid JSON.
    let resp = req(
        &sim,
        Method::PATCH,
        &format!("/api/now/table/oauth_credential/{id}"),
    )
    .header("content-type", "application/json")
    .body("{nope")
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // PATCH of an unknown id.
    let resp = req(
        &sim,
        Method::PATCH,
        "/api/now/table/oauth_credential/00000000000000000000000000000000",
    )
    .json(&json!({}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.text().await.unwrap(), NOT_FOUND);
    // DELETE.
    let resp = req(
        &sim,
        Method::DELETE,
        &format!("/api/now/table/oauth_credential/{id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.text().await.unwrap().is_empty());
    assert_eq!(
        get(&sim, &format!("/api/now/table/oauth_credential/{id}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let resp = req(
        &sim,
        Method::DELETE,
        &format!("/api/now/table/oauth_credential/{id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // A new registry gets its default profile (platform business rule).
    let resp = req(&sim, Method::POST, "/api/now/table/oauth_entity?sysparm_input_display_value=true")
        .json(&json!({"name": "New App", "client_id": "abc", "client_secret": "s3cret", "token_url": "https://idp/token"}))
        .send()
        .await
        .unwrap();
    let entity = json(resp).await["result"]["sys_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sim.decrypted("oauth_entity", &entity, "client_secret")
            .as_deref(),
        Some("s3cret")
    );
    let profiles = sim.rows("oauth_entity_profile");
    assert!(
        profiles
            .iter()
            .any(|p| p["oauth_entity"] == entity && p["default"] == "true")
    );
}

#[tokio::test]
async fn password2_needs_input_display_value() {
    let (estate, reg) = estate_with(1);
    let cred = estate.credentials()[0].clone();
    let sim = start(estate).await;
    assert_eq!(
        sim.decrypted("oauth_credential", &cred.refresh_sys_id, "token_received")
            .as_deref(),
        Some(cred.refresh_token.as_str())
    );

    let path = format!("/api/now/table/oauth_credential/{}", cred.refresh_sys_id);
    let resp = req(
        &sim,
        Method::PATCH,
        &format!("{path}?sysparm_input_display_value=true"),
    )
    .json(&json!({"token_received": "rt-new-value"}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let returned = json(resp).await["result"]["token_received"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(returned.starts_with("kmf:v1:") && !returned.contains("rt-new-value"));
    let stored =
        sim.row("oauth_credential", &cred.refresh_sys_id).unwrap()["token_received"].clone();
    assert_eq!(stored, returned);
    assert_eq!(
        sim.decrypted("oauth_credential", &cred.refresh_sys_id, "token_received")
            .as_deref(),
        Some("rt-new-value")
    );

    // Without the flag the value is stored verbatim: the "malformed secret" trap.
    for flag in ["", "?sysparm_input_display_value=false"] {
        let resp = req(&sim, Method::PATCH, &format!("{path}{flag}"))
            .json(&json!({"token_received": "rt-plain"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            sim.row("oauth_credential", &cred.refresh_sys_id).unwrap()["token_received"],
            "rt-plain"
        );
        assert_eq!(
            sim.decrypted("oauth_credential", &cred.refresh_sys_id, "token_received"),
            None
        );
    }
    let resp = req(
        &sim,
        Method::PATCH,
        &format!("/api/now/table/oauth_entity/{reg}"),
    )
    .json(&json!({"client_secret": "plain-secret"}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(sim.decrypted("oauth_entity", &reg, "client_secret"), None);
    // The companion cannot return either value now: the row is left out.
    let resp = get(
        &sim,
        &format!(
            "{}/secrets?sys_id={}&include=client_secret",
            sim.companion_path(),
            cred.refresh_sys_id
        ),
    )
    .await;
    assert_eq!(json(resp).await, json!({"result": []}));
}

async fn patch_expires(sim: &Simulator, id: &str, flag: bool, value: &str) -> String {
    let q = if flag {
        "?sysparm_input_display_value=true"
    } else {
        ""
    };
    let resp = req(
        sim,
        Method::PATCH,
        &format!("/api/now/table/oauth_credential/{id}{q}"),
    )
    .json(&json!({"expires": value}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    sim.row("oauth_credential", id).unwrap()["expires"].clone()
}

#[tokio::test]
async fn input_display_value_shifts_date_times_into_the_user_zone() {
    let (estate, _) = estate_with(1);
    let id = estate.credentials()[0].refresh_sys_id.clone();
    let sim = start(estate.with_user_time_zone("America/Los_Angeles")).await;
    assert_eq!(
        patch_expires(&sim, &id, true, "2026-07-01 05:00:00").await,
        "2026-07-01 12:00:00"
    );
    assert_eq!(
        patch_expires(&sim, &id, false, "2026-07-01 05:00:00").await,
        "2026-07-01 05:00:00"
    );
    sim.set_user_time_zone("Asia/Kolkata");
    assert_eq!(
        patch_expires(&sim, &id, true, "2026-07-01 05:00:00").await,
        "2026-06-30 23:30:00"
    );
    // Empty zone = system default (UTC here).
    sim.set_user_time_zone("");
    assert_eq!(
        patch_expires(&sim, &id, true, "2026-07-01 05:00:00").await,
        "2026-07-01 05:00:00"
    );
    // Unparsable values are dropped (stored empty).
    assert_eq!(patch_expires(&sim, &id, true, "next tuesday").await, "");
    assert_eq!(
        patch_expires(&sim, &id, false, "2026-07-01T05:00:00Z").await,
        ""
    );

    // A configurable system zone and a user date format.
    let (estate, _) = estate_with(1);
    let id = estate.credentials()[0].refresh_sys_id.clone();
    let sim = start(
        estate
            .with_system_time_zone("Asia/Kolkata")
            .with_user_date_format("dd-MM-yyyy"),
    )
    .await;
    assert_eq!(
        patch_expires(&sim, &id, true, "01-07-2026 05:00:00").await,
        "2026-06-30 23:30:00"
    );
    let resp = get(
        &sim,
        &format!(
            "/api/now/table/oauth_credential/{id}?sysparm_display_value=true&sysparm_fields=expires"
        ),
    )
    .await;
    assert_eq!(json(resp).await["result"]["expires"], "01-07-2026 05:00:00");
}

#[tokio::test]
async fn other_writers_bump_the_row() {
    let (estate, _) = estate_with(1);
    let id = estate.credentials()[0].refresh_sys_id.clone();
    let sim = start(estate).await;
    let before = sim.row("oauth_credential", &id).unwrap();
    sim.set_row_field("oauth_credential", &id, "scopes", "x");
    let after = sim.row("oauth_credential", &id).unwrap();
    assert_eq!(after["sys_mod_count"], "5");
    assert_ne!(after["sys_updated_on"], before["sys_updated_on"]);
    sim.set_encrypted_field("oauth_credential", &id, "token_received", "rt-other");
    assert_eq!(
        sim.decrypted("oauth_credential", &id, "token_received")
            .as_deref(),
        Some("rt-other")
    );
    assert_eq!(
        sim.row("oauth_credential", &id).unwrap()["sys_mod_count"],
        "6"
    );
    let new_id = sim.insert_row("em_event", &[("source", "test")]);
    assert_eq!(sim.row("em_event", &new_id).unwrap()["source"], "test");
    assert!(sim.delete_row("em_event", &new_id));
    assert!(sim.rows("nope").is_empty());
}

#[tokio::test]
async fn head_and_method_override() {
    let (estate, _) = estate_with(2);
    let id = estate.credentials()[0].refresh_sys_id.clone();
    let sim = start(estate).await;
    let resp = req(&sim, Method::HEAD, "/api/now/table/oauth_credential")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-total-count").as_deref(), Some("4"));
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = req(
        &sim,
        Method::POST,
        &format!("/api/now/table/oauth_credential/{id}"),
    )
    .header("X-HTTP-Method-Override", "PATCH")
    .json(&json!({"name": "via override"}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        sim.row("oauth_credential", &id).unwrap()["name"],
        "via override"
    );
    // X-no-response-body suppresses write bodies only.
    let resp = req(
        &sim,
        Method::PATCH,
        &format!("/api/now/table/oauth_credential/{id}"),
    )
    .header("X-no-response-body", "true")
    .json(&json!({"name": "quiet"}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = req(
        &sim,
        Method::POST,
        &format!("/api/now/table/oauth_credential/{id}"),
    )
    .json(&json!({}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// A write of `fields` through `method` (with display-value input); the status and the record
/// answered.
async fn write(
    sim: &Simulator,
    method: Method,
    path: &str,
    fields: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let resp = req(
        sim,
        method,
        &format!("{path}?sysparm_input_display_value=true&sysparm_exclude_reference_link=true"),
    )
    .json(&fields)
    .send()
    .await
    .unwrap();
    let status = resp.status();
    (status, json(resp).await["result"].clone())
}

#[tokio::test]
async fn a_field_write_acl_skips_the_field_silently() {
    let (estate, reg) = estate_with(1);
    let cred = estate.credentials()[0].clone();
    let sim = start(estate).await;
    sim.deny_field_write("oauth_credential", "token_received");
    let row = format!("/api/now/table/oauth_credential/{}", cred.refresh_sys_id);
    let before = sim.row("oauth_credential", &cred.refresh_sys_id).unwrap();

    for (method, scopes) in [(Method::PATCH, "patched"), (Method::PUT, "put")] {
        let (status, record) = write(
            &sim,
            method.clone(),
            &row,
            json!({"token_received": "rt-denied", "scopes": scopes}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{method}");
        assert_eq!(
            record["scopes"], scopes,
            "{method}: the other field is written"
        );
        assert_eq!(
            record["token_received"], before["token_received"],
            "{method}: the answer shows the record as stored"
        );
        assert_eq!(
            sim.decrypted("oauth_credential", &cred.refresh_sys_id, "token_received")
                .as_deref(),
            Some(cred.refresh_token.as_str()),
            "{method}"
        );
    }

    let (status, created) = write(
        &sim,
        Method::POST,
        "/api/now/table/oauth_credential",
        json!({"type": "access_token", "peer": reg, "name": "denied", "token_received": "at-denied"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["sys_id"].as_str().unwrap().to_owned();
    let stored = sim.row("oauth_credential", &id).unwrap();
    assert_eq!(
        (stored["name"].as_str(), stored["peer"].as_str()),
        ("denied", reg.as_str())
    );
    assert_eq!(stored["token_received"], "");

    // Lifting the denial restores the write.
    sim.allow_field_write("oauth_credential", "token_received");
    let (status, _) = write(
        &sim,
        Method::PATCH,
        &row,
        json!({"token_received": "rt-allowed"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sim.decrypted("oauth_credential", &cred.refresh_sys_id, "token_received")
            .as_deref(),
        Some("rt-allowed")
    );
    // A field denied for writing stays readable.
    sim.deny_field_write("oauth_credential", "scopes");
    let resp = get(&sim, &format!("{row}?sysparm_fields=scopes")).await;
    assert_eq!(json(resp).await["result"]["scopes"], "put");
}

#[tokio::test]
async fn reference_input_takes_display_values_and_sys_ids() {
    let (estate, reg) = estate_with(1);
    let cred = estate.credentials()[0].clone();
    let user = estate.user_sys_id().to_owned();
    let sim = start(estate).await;
    let create = |fields: serde_json::Value| {
        let sim = sim.clone();
        async move {
            let (status, record) = write(
                &sim,
                Method::POST,
                "/api/now/table/oauth_credential",
                fields,
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
            let id = record["sys_id"].as_str().unwrap().to_owned();
            sim.row("oauth_credential", &id).unwrap()
        }
    };
    // Display values (the referenced rows' display fields) are stored as their sys_ids.
    let by_display = create(json!({
        "peer": "Entra", "oauth_requestor_profile": cred.requestor_id, "user": "OAuth Keeper Service",
    }))
    .await;
    assert_eq!(by_display["peer"], reg);
    assert_eq!(
        by_display["oauth_requestor_profile"],
        cred.requestor_profile
    );
    assert_eq!(by_display["user"], user);
    // Sys_ids of existing rows are kept.
    let by_id = create(json!({
        "peer": reg, "oauth_requestor_profile": cred.requestor_profile, "user": user,
    }))
    .await;
    assert_eq!(
        (
            by_id["peer"].as_str(),
            by_id["oauth_requestor_profile"].as_str(),
            by_id["user"].as_str()
        ),
        (reg.as_str(), cred.requestor_profile.as_str(), user.as_str())
    );
    // A value that resolves to no row is stored empty (`user` displays as sys_user.name, not
    // user_name); without display-value input it is stored as sent.
    let unknown =
        create(json!({"peer": "ffffffffffffffffffffffffffffffff", "user": "svc_oauth_keeper"}))
            .await;
    assert_eq!(
        (unknown["peer"].as_str(), unknown["user"].as_str()),
        ("", "")
    );
    let resp = req(&sim, Method::POST, "/api/now/table/oauth_credential")
        .json(&json!({"peer": "Entra"}))
        .send()
        .await
        .unwrap();
    let raw = json(resp).await["result"]["sys_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sim.row("oauth_credential", &raw).unwrap()["peer"], "Entra");
}
