//! Microsoft Entra ID's two token endpoints in the simulator, driven by the real binary: v2
//! (`/{tenant}/oauth2/v2.0/token`, asks by `scope`, refuses `resource`) and v1
//! (`/{tenant}/oauth2/token`, asks by `resource`, answers numbers as strings), with tenant ids,
//! `organizations` and `common` in the path, and certificate credentials (`private_key_jwt`)
//! checked as Entra checks them. The simulator runs on loopback, so the config says the kind;
//! detection from Entra's public and sovereign-cloud hosts is unit-tested in `oauth.rs`.

use crate::support::Bed;
use jiff::{SignedDuration, Timestamp};
use sn_oauth_keeper::clock::{Clock, SystemClock};
use sn_oauth_keeper::domain::time::parse_sn_datetime;
use sn_oauth_keeper_sim::{
    CredentialSpec, EntraEndpoint, Estate, Fault, FaultTarget, ProviderKind, RecordedRequest,
    RegistrySpec, SeededCredential, Target,
};
use std::path::PathBuf;

const TENANT: &str = "0b5e1f4c-8d2a-4c55-9d0e-6a1f2c3d4e5f";

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn form(r: &RecordedRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(r.body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param(r: &RecordedRequest, key: &str) -> Option<String> {
    form(r).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn requests_to(bed: &Bed, tenant: &str) -> Vec<RecordedRequest> {
    bed.sim
        .requests()
        .into_iter()
        .filter(|r| r.target == Target::Provider(tenant.to_string()))
        .collect()
}

/// The access row's `expires` for a credential, as stored.
fn access_expires(bed: &Bed, c: &SeededCredential) -> Timestamp {
    bed.sim
        .rows("oauth_credential")
        .into_iter()
        .find(|r| {
            r.get("type").map(String::as_str) == Some("access_token")
                && r.get("oauth_requestor_profile") == Some(&c.requestor_profile)
        })
        .and_then(|r| r.get("expires").cloned())
        .and_then(|e| parse_sn_datetime(&e).ok().flatten())
        .unwrap_or_else(|| panic!("{}: no access row", c.name))
}

struct Estates {
    estate: Estate,
    v2: SeededCredential,
    v1_derived: SeededCredential,
    v1_configured: SeededCredential,
}

fn entra_estate() -> Estates {
    let mut estate = Estate::empty(81).with_user_time_zone("UTC");
    let graph = estate.add_registry(
        RegistrySpec::new("Graph v2", ProviderKind::EntraLike)
            .provider_id(TENANT)
            .entra_endpoint(EntraEndpoint::V2),
    );
    let sharepoint = estate.add_registry(
        RegistrySpec::new("SharePoint v1", ProviderKind::EntraLike)
            .provider_id("organizations")
            .entra_endpoint(EntraEndpoint::V1),
    );
    let mail = estate.add_registry(
        RegistrySpec::new("Mail v1", ProviderKind::EntraLike)
            .provider_id("common")
            .entra_endpoint(EntraEndpoint::V1),
    );
    let v2 = estate.add_credential(
        CredentialSpec::new(&graph, "graph mailbox")
            .scopes("https://graph.microsoft.com/.default offline_access")
            .access_missing(),
    );
    let v1_derived = estate.add_credential(
        CredentialSpec::new(&sharepoint, "sharepoint library")
            .scopes("https://contoso.sharepoint.com/.default offline_access")
            .access_expires_in(SignedDuration::from_secs(-60)),
    );
    let v1_configured = estate.add_credential(
        CredentialSpec::new(&mail, "mail relay")
            .scopes("offline_access https://graph.microsoft.com/Mail.Send")
            .access_missing(),
    );
    Estates {
        estate,
        v2,
        v1_derived,
        v1_configured,
    }
}

const KINDS: &str = "[[registry]]\nname = \"Graph v2\"\nkind = \"entra_v2\"\n\n[[registry]]\nname = \"SharePoint v1\"\nkind = \"entra_v1\"\n\n[[registry]]\nname = \"Mail v1\"\nkind = \"entra_v1\"\nresource = \"https://graph.microsoft.com\"\n";

#[tokio::test]
async fn v2_is_asked_by_scope_and_v1_by_resource_whatever_the_tenant() {
    let Estates {
        estate,
        v2,
        v1_derived,
        v1_configured,
    } = entra_estate();
    let bed = Bed::start(estate).await;
    let config = bed.config_file(KINDS);
    let started = SystemClock.now();
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let graph = requests_to(&bed, TENANT);
    assert_eq!(graph.len(), 1);
    assert_eq!(graph[0].path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(
        param(&graph[0], "scope").as_deref(),
        Some("https://graph.microsoft.com/.default offline_access")
    );
    assert_eq!(param(&graph[0], "resource"), None);

    let sharepoint = requests_to(&bed, "organizations");
    assert_eq!(sharepoint.len(), 1);
    assert_eq!(sharepoint[0].path, "/organizations/oauth2/token");
    assert_eq!(
        param(&sharepoint[0], "resource").as_deref(),
        Some("https://contoso.sharepoint.com"),
        "derived from the scope"
    );
    assert_eq!(param(&sharepoint[0], "scope"), None);

    let mail = requests_to(&bed, "common");
    assert_eq!(mail.len(), 1);
    assert_eq!(
        param(&mail[0], "resource").as_deref(),
        Some("https://graph.microsoft.com"),
        "as configured"
    );

    // Entra v1 answers `expires_in` and `expires_on` as strings; the access rows say one hour.
    for c in [&v2, &v1_derived, &v1_configured] {
        let expires = access_expires(&bed, c);
        let ahead = expires.duration_since(started);
        assert!(
            ahead > SignedDuration::from_secs(50 * 60)
                && ahead < SignedDuration::from_secs(61 * 60),
            "{}: expires {expires}",
            c.name
        );
        let refresh = bed
            .sim
            .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
            .unwrap();
        assert_ne!(refresh, c.refresh_token, "{}: Entra rotates", c.name);
        assert!(bed.sim.provider_valid(&c.provider, &refresh), "{}", c.name);
    }
}

#[tokio::test]
async fn without_the_kind_a_loopback_v1_endpoint_misses_its_resource() {
    let Estates { estate, .. } = entra_estate();
    let bed = Bed::start(estate).await;
    // No `kind`: 127.0.0.1 is no Entra host, so every endpoint is treated as generic — the v1
    // endpoints get `scope` and no `resource`, and say so; v2 still gets its scope.
    let config = bed.config_file("");
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let sharepoint = requests_to(&bed, "organizations");
    assert_eq!(sharepoint.len(), 1, "a configuration error is not retried");
    assert_eq!(sharepoint[0].status, 400);
    assert_eq!(param(&sharepoint[0], "resource"), None);
    let log = text(&out);
    assert!(log.contains("AADSTS900144"), "{log}");
    assert_eq!(requests_to(&bed, TENANT)[0].status, 200);
}

#[tokio::test]
async fn a_v2_endpoint_refuses_a_resource_and_the_config_refuses_it_first() {
    let Estates { estate, .. } = entra_estate();
    let bed = Bed::start(estate).await;
    // Told it is v2, the config will not take a resource at all.
    let config = bed.config_file(
        "[[registry]]\nname = \"Graph v2\"\nkind = \"entra_v2\"\nresource = \"https://graph.microsoft.com\"\n",
    );
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("registry[0].resource"),
        "{}",
        text(&out)
    );
    // As a generic server it gets the resource it is given, and Entra's answer says why not.
    let config = bed.config_file(
        "[[registry]]\nname = \"Graph v2\"\nkind = \"generic\"\nresource = \"https://graph.microsoft.com\"\n",
    );
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let graph = requests_to(&bed, TENANT);
    assert_eq!(graph.len(), 1);
    assert_eq!(graph[0].status, 400);
    assert!(text(&out).contains("AADSTS901002"), "{}", text(&out));
}

fn keys() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/keys")
}

fn claims_of(r: &RecordedRequest) -> serde_json::Value {
    use base64::Engine;
    let jwt = param(r, "client_assertion").expect("an assertion was sent");
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A v2 app with certificate A registered, and a keeper config signing with `key`/`cert`.
async fn certificate_bed(key: &str, cert: &str) -> (Bed, PathBuf) {
    let mut estate = Estate::empty(82).with_user_time_zone("UTC");
    let certificate = std::fs::read_to_string(keys().join("client-a.cert.pem")).unwrap();
    let graph = estate.add_registry(
        RegistrySpec::new("Graph certificate app", ProviderKind::EntraLike)
            .provider_id(TENANT)
            .entra_endpoint(EntraEndpoint::V2)
            .certificate(&certificate),
    );
    let seeded = estate.add_credential(
        CredentialSpec::new(&graph, "graph via certificate")
            .scopes("https://graph.microsoft.com/.default offline_access")
            .access_missing(),
    );
    let bed = Bed::start(estate).await;
    // The signing key is the keeper's own: it signs only for a pinned endpoint.
    let config = bed.config_file(&format!(
        "[[registry]]\nname = \"Graph certificate app\"\nkind = \"entra_v2\"\nclient_auth = \"private_key_jwt\"\nprivate_key_file = \"{}\"\ncertificate_file = \"{}\"\ntoken_url = \"{}\"\n",
        keys().join(key).display(),
        keys().join(cert).display(),
        bed.token_url_of(&seeded.registry)
    ));
    (bed, config)
}

#[tokio::test]
async fn a_certificate_credential_signs_a_fresh_assertion_for_every_attempt() {
    let (bed, config) = certificate_bed("client-a.key.pem", "client-a.cert.pem").await;
    // The first attempt meets an outage; the retry must not replay the first assertion.
    bed.sim
        .inject(Fault::status(FaultTarget::Provider(TENANT.to_string()), 503).times(1));
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let sent = requests_to(&bed, TENANT);
    assert_eq!(
        sent.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 200]
    );
    let (first, second) = (claims_of(&sent[0]), claims_of(&sent[1]));
    assert_ne!(first["jti"], second["jti"], "one assertion per request");
    for r in &sent {
        assert_eq!(
            param(r, "client_secret"),
            None,
            "no secret with a certificate"
        );
        assert_eq!(
            param(r, "client_assertion_type").as_deref(),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        let claims = claims_of(r);
        assert_eq!(
            claims["aud"],
            format!("{}/{TENANT}/oauth2/v2.0/token", bed.sim.base_url()).as_str()
        );
        assert_eq!(claims["iss"], claims["sub"]);
    }
}

#[tokio::test]
async fn a_key_the_app_does_not_know_is_a_configuration_error() {
    // Certificate B's key signs, but the app registered certificate A.
    let (bed, config) = certificate_bed("client-b.pkcs1.key.pem", "client-b.cert.pem").await;
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let sent = requests_to(&bed, TENANT);
    assert_eq!(sent.len(), 1, "a configuration error is not retried");
    assert_eq!(sent[0].status, 401);
    let log = text(&out);
    assert!(
        log.contains("invalid_client") && log.contains("AADSTS700027"),
        "{log}"
    );
    // The key file's content never shows.
    let pem = std::fs::read_to_string(keys().join("client-b.pkcs1.key.pem")).unwrap();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "key material in the output");
    }
}
