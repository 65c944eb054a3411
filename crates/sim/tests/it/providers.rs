//! Token endpoints of the three provider kinds over real sockets: rotation, reuse detection,
//! non-rotation, client authentication and error bodies.
#![allow(clippy::unwrap_used)]

use super::support::*;
use base64::Engine as _;
use jiff::SignedDuration;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, ExpiresInFormat, ProviderKind, RegistrySpec, SeededCredential,
    SeededRegistry, Simulator,
};

struct Fixture {
    sim: Simulator,
    reg: SeededRegistry,
    cred: SeededCredential,
}

async fn fixture(spec: RegistrySpec, cred: impl FnOnce(String) -> CredentialSpec) -> Fixture {
    let mut estate = Estate::empty(21);
    let reg_id = estate.add_registry(spec);
    let cred = estate.add_credential(cred(reg_id));
    let reg = estate.registries()[0].clone();
    Fixture {
        sim: start(estate).await,
        reg,
        cred,
    }
}

async fn refresh(f: &Fixture, refresh_token: &str) -> Response {
    refresh_with(
        f,
        &[
            ("refresh_token", refresh_token),
            ("client_secret", &f.reg.client_secret),
        ],
    )
    .await
}

async fn refresh_with(f: &Fixture, extra: &[(&str, &str)]) -> Response {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("client_id", f.reg.client_id.as_str()),
    ];
    form.extend_from_slice(extra);
    client()
        .post(f.sim.token_url(&f.reg.provider_id))
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn ok_body(resp: Response) -> Value {
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(header(&resp, "pragma").as_deref(), Some("no-cache"));
    json(resp).await
}

#[tokio::test]
async fn entra_rotates_and_keeps_old_tokens_valid() {
    let f = fixture(RegistrySpec::new("Entra", ProviderKind::EntraLike), |r| {
        CredentialSpec::new(r, "c")
    })
    .await;
    let body = ok_body(refresh(&f, &f.cred.refresh_token).await).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], json!(3599));
    assert_eq!(body["ext_expires_in"], json!(3599));
    assert_eq!(body["scope"], f.cred.scopes.as_str());
    assert!(body["access_token"].as_str().unwrap().starts_with("at-"));
    let new_rt = body["refresh_token"].as_str().unwrap().to_owned();
    assert!(new_rt.starts_with("rt-") && new_rt != f.cred.refresh_token);
    assert!(f.sim.provider_valid(&f.reg.provider_id, &new_rt));
    assert!(
        f.sim
            .provider_valid(&f.reg.provider_id, &f.cred.refresh_token)
    );
    // The old token still works (Entra does not revoke on rotation).
    let again = ok_body(refresh(&f, &f.cred.refresh_token).await).await;
    assert!(again["refresh_token"].is_string());
    assert!(f.sim.provider_valid(&f.reg.provider_id, &new_rt));
    assert_eq!(f.sim.token_requests(&f.reg.provider_id), 2);
    // A narrower scope is fine; one never granted is not.
    let narrow = ok_body(
        refresh_with(
            &f,
            &[
                ("refresh_token", &new_rt),
                ("client_secret", &f.reg.client_secret),
                ("scope", "offline_access"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(narrow["scope"], "offline_access");
    let resp = refresh_with(
        &f,
        &[
            ("refresh_token", &new_rt),
            ("client_secret", &f.reg.client_secret),
            ("scope", "Mail.Send"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(resp).await["error"], "invalid_scope");

    // Revocation by the user kills the whole grant: AADSTS50173.
    f.sim
        .revoke_refresh_token(&f.reg.provider_id, &f.cred.refresh_token);
    assert!(!f.sim.provider_valid(&f.reg.provider_id, &new_rt));
    let resp = refresh(&f, &new_rt).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err = json(resp).await;
    assert_eq!(err["error"], "invalid_grant");
    assert_eq!(err["error_codes"], json!([50173]));
    let description = err["error_description"].as_str().unwrap();
    assert!(description.starts_with("AADSTS50173: "));
    assert!(description.contains("\r\nTrace ID: "));
    for key in ["trace_id", "correlation_id", "timestamp"] {
        assert!(err[key].is_string(), "{key}");
    }
}

#[tokio::test]
async fn entra_inactive_tokens_die_after_90_days() {
    let f = fixture(RegistrySpec::new("Entra", ProviderKind::EntraLike), |r| {
        CredentialSpec::new(r, "idle").refresh_last_updated_ago(SignedDuration::from_hours(85 * 24))
    })
    .await;
    assert!(
        f.sim
            .provider_valid(&f.reg.provider_id, &f.cred.refresh_token)
    );
    f.sim.advance_time(SignedDuration::from_hours(6 * 24));
    assert!(
        !f.sim
            .provider_valid(&f.reg.provider_id, &f.cred.refresh_token)
    );
    let resp = refresh(&f, &f.cred.refresh_token).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err = json(resp).await;
    assert_eq!(err["error"], "invalid_grant");
    assert_eq!(err["error_codes"], json!([700082]));
}

#[tokio::test]
async fn entra_client_errors() {
    let f = fixture(RegistrySpec::new("Entra", ProviderKind::EntraLike), |r| {
        CredentialSpec::new(r, "c")
    })
    .await;
    let rt = f.cred.refresh_token.as_str();
    let resp = refresh_with(&f, &[("refresh_token", rt), ("client_secret", "wrong")]).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let err = json(resp).await;
    assert_eq!(err["error"], "invalid_client");
    assert_eq!(err["error_codes"], json!([7000215]));
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: Invalid client secret provided.")
    );
    let resp = refresh_with(&f, &[("refresh_token", rt)]).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(resp).await["error"], "invalid_client");
    let resp = client()
        .post(f.sim.token_url(&f.reg.provider_id))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "00000000-0000-0000-0000-000000000000"),
            ("client_secret", "x"),
            ("refresh_token", rt),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err = json(resp).await;
    assert_eq!(
        (err["error"].as_str(), err["error_codes"].clone()),
        (Some("unauthorized_client"), json!([700016]))
    );
    let resp = client()
        .post(f.sim.token_url(&f.reg.provider_id))
        .form(&[
            ("grant_type", "password"),
            ("client_id", f.reg.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(resp).await["error"], "unsupported_grant_type");
    let resp = refresh_with(
        &f,
        &[
            ("refresh_token", "rt-never-issued"),
            ("client_secret", &f.reg.client_secret),
        ],
    )
    .await;
    assert_eq!(json(resp).await["error"], "invalid_grant");
    // None of this consumed the token.
    assert!(f.sim.provider_valid(&f.reg.provider_id, rt));
}

#[tokio::test]
async fn client_secret_basic_is_form_urlencoded() {
    let mut spec = RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection);
    spec.client_id = "app id/1".to_owned();
    spec.client_secret = "s+cr:t/x%".to_owned();
    let f = fixture(spec, |r| CredentialSpec::new(r, "c")).await;
    let encode = |s: &str| enc(s);
    let basic = |id: &str, secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    let post = |auth: String, rt: String| {
        client()
            .post(f.sim.token_url(&f.reg.provider_id))
            .header("authorization", auth)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
            ])
            .send()
    };
    // Raw (unencoded) credentials are wrong per RFC 6749 §2.3.1: `+` decodes to a space.
    let resp = post(
        basic(&f.reg.client_id, &f.reg.client_secret),
        f.cred.refresh_token.clone(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&resp, "www-authenticate").is_some());
    assert_eq!(json(resp).await["error"], "invalid_client");
    let resp = post(
        basic(&encode(&f.reg.client_id), &encode(&f.reg.client_secret)),
        f.cred.refresh_token.clone(),
    )
    .await
    .unwrap();
    let body = ok_body(resp).await;
    assert!(body["refresh_token"].is_string());
    assert!(body.get("ext_expires_in").is_none());
}

#[tokio::test]
async fn strict_rotation_detects_reuse_and_kills_the_family() {
    let f = fixture(
        RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection),
        |r| CredentialSpec::new(r, "c"),
    )
    .await;
    let old = f.cred.refresh_token.clone();
    let body = ok_body(refresh(&f, &old).await).await;
    let newest = body["refresh_token"].as_str().unwrap().to_owned();
    assert!(!f.sim.provider_valid(&f.reg.provider_id, &old));
    assert!(f.sim.provider_valid(&f.reg.provider_id, &newest));
    let resp = refresh(&f, &old).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json(resp).await,
        json!({"error": "invalid_grant", "error_description": "The refresh token is invalid or expired."})
    );
    assert!(!f.sim.provider_valid(&f.reg.provider_id, &newest));
    let resp = refresh(&f, &newest).await;
    assert_eq!(json(resp).await["error"], "invalid_grant");
    assert_eq!(f.sim.token_requests(&f.reg.provider_id), 3);
}

#[tokio::test]
async fn non_rotating_keeps_the_same_token() {
    let f = fixture(
        RegistrySpec::new("Google", ProviderKind::NonRotating),
        |r| CredentialSpec::new(r, "c"),
    )
    .await;
    for _ in 0..2 {
        let body = ok_body(refresh(&f, &f.cred.refresh_token).await).await;
        assert!(body.get("refresh_token").is_none());
        assert!(body.get("ext_expires_in").is_none());
        assert_eq!(body["expires_in"], json!(3599));
    }
    assert!(
        f.sim
            .provider_valid(&f.reg.provider_id, &f.cred.refresh_token)
    );
    f.sim
        .revoke_refresh_token(&f.reg.provider_id, &f.cred.refresh_token);
    let resp = refresh(&f, &f.cred.refresh_token).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#
    );
}

#[tokio::test]
async fn expires_in_formats_and_seeded_revocation() {
    let f = fixture(
        RegistrySpec::new("Entra v1", ProviderKind::EntraLike)
            .expires_in_format(ExpiresInFormat::String),
        |r| CredentialSpec::new(r, "c"),
    )
    .await;
    let body = ok_body(refresh(&f, &f.cred.refresh_token).await).await;
    assert_eq!(body["expires_in"], json!("3599"));
    assert_eq!(body["ext_expires_in"], json!("3599"));

    let f = fixture(
        RegistrySpec::new("Salesforce", ProviderKind::NonRotating)
            .expires_in_format(ExpiresInFormat::Missing),
        |r| CredentialSpec::new(r, "c").revoked(),
    )
    .await;
    assert!(
        !f.sim
            .provider_valid(&f.reg.provider_id, &f.cred.refresh_token)
    );
    let resp = refresh(&f, &f.cred.refresh_token).await;
    assert_eq!(json(resp).await["error"], "invalid_grant");

    let mut spec = RegistrySpec::new("Short", ProviderKind::NonRotating)
        .expires_in_format(ExpiresInFormat::Missing);
    spec.access_token_lifetime_secs = 600;
    let f = fixture(spec, |r| CredentialSpec::new(r, "c")).await;
    let body = ok_body(refresh(&f, &f.cred.refresh_token).await).await;
    assert!(body.get("expires_in").is_none());
}

#[tokio::test]
async fn demo_estate_is_consistent_with_its_providers() {
    let estate = Estate::demo(33);
    let creds = estate.credentials().to_vec();
    let regs = estate.registries().to_vec();
    let sim = start(estate).await;
    for cred in &creds {
        let valid = sim.provider_valid(&cred.provider, &cred.refresh_token);
        // The instance-expired row was also unused for 120 days: dead at Entra too.
        let dead = cred.label == "revoked at provider" || cred.label == "refresh row expired";
        assert_eq!(valid, !dead, "{}", cred.label);
        assert_eq!(
            sim.decrypted("oauth_credential", &cred.refresh_sys_id, "token_received")
                .as_deref(),
            Some(cred.refresh_token.as_str())
        );
        let reg = regs.iter().find(|r| r.sys_id == cred.registry).unwrap();
        let stored_secret = sim
            .decrypted("oauth_entity", &reg.sys_id, "client_secret")
            .unwrap();
        assert_eq!(
            stored_secret == reg.client_secret,
            cred.label != "wrong client secret"
        );
        let row = sim.row("oauth_entity", &reg.sys_id).unwrap();
        assert_eq!(row["token_url"], sim.token_url(&reg.provider_id));
        if let Some(access) = &cred.access_sys_id {
            let access_row = sim.row("oauth_credential", access).unwrap();
            let refresh_row = sim.row("oauth_credential", &cred.refresh_sys_id).unwrap();
            for col in ["peer", "oauth_requestor_profile", "user", "scopes", "name"] {
                assert_eq!(access_row[col], refresh_row[col], "{col}");
            }
            assert_eq!(access_row["type"], "access_token");
        }
    }
    // The idle ones are five days from the Entra limit.
    let idle = creds
        .iter()
        .find(|c| c.label.starts_with("idle") && c.provider == "entra")
        .unwrap();
    sim.advance_time(SignedDuration::from_hours(5 * 24 + 1));
    assert!(!sim.provider_valid("entra", &idle.refresh_token));
}
