//! The instance side of the runbook (`migrations-docs/README.md`): `check` names each missing
//! step and its fix; the documented role alone is enough for a full cycle; `check` changes
//! nothing; the client secret is asked for only when the config has none; and
//! `auth = "oauth"` works through the instance's own `/oauth_token.do`.

use crate::support::Bed;
use jiff::SignedDuration;
use secrecy::SecretString;
use sn_oauth_keeper::check::{self, Checklist, Verdict};
use sn_oauth_keeper::config::{
    DEFAULT_COMPANION_PATH, InstanceAuthSettings, InstanceGrant, RegistrySettings, Settings,
};
use sn_oauth_keeper::domain::report::OutcomeKind;
use sn_oauth_keeper::servicenow::{Instance, RetryPolicy, SnError};
use sn_oauth_keeper_sim::{
    COMPANION_RECORD_ACLS, COMPANION_ROLE, CredentialSpec, Estate, ProviderKind, RegistrySpec,
    Target,
};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

const CLIENT_ID: &str = "keeper-instance-client";
const CLIENT_SECRET: &str = "instance-client-secret-5e1d7c";

/// A prepared instance as the runbook leaves it: the update set committed, a Web Service Access
/// Only user with only the keeper's role, time zone UTC, and one credential without an access
/// row (so the first cycle creates one).
fn prepared() -> Estate {
    let mut estate = Estate::empty(51)
        .with_user_roles(&[COMPANION_ROLE])
        .with_user_time_zone("UTC")
        .with_instance_oauth_client(CLIENT_ID, CLIENT_SECRET);
    let reg = estate.add_registry(RegistrySpec::new(
        "Microsoft Graph",
        ProviderKind::EntraLike,
    ));
    estate.add_credential(CredentialSpec::new(&reg, "SharePoint spoke").access_missing());
    estate
}

async fn check_with(settings: &Settings) -> Checklist {
    check::run(settings, &HashMap::<String, String>::new()).await
}

fn verdict<'a>(list: &'a Checklist, name: &str) -> &'a check::Step {
    list.step(name)
        .unwrap_or_else(|| panic!("no step {name}: {}", list.render()))
}

/// `settings` signing in through the instance's OAuth client with `grant`.
fn oauth_with(mut settings: Settings, secret: &str, grant: InstanceGrant) -> Settings {
    settings.instance.auth = InstanceAuthSettings::OAuth {
        client_id: CLIENT_ID.to_string(),
        client_secret: SecretString::from(secret.to_string()),
        grant,
    };
    settings
}

/// `settings` signing in with the (deprecated) password grant, with the bed's password.
fn oauth(settings: Settings, secret: &str) -> Settings {
    let InstanceAuthSettings::Basic { password } = settings.instance.auth.clone() else {
        panic!("the bed signs in with Basic")
    };
    oauth_with(settings, secret, InstanceGrant::Password { password })
}

/// Inserts an access row as if the keeper had created it earlier, so the write probe has a
/// row of its own to work on.
fn keeper_row(bed: &Bed) -> String {
    let refresh = &bed.seeded[0];
    bed.sim.insert_row(
        "oauth_credential",
        &[
            ("type", "access_token"),
            ("peer", refresh.registry.as_str()),
            (
                "oauth_requestor_profile",
                refresh.requestor_profile.as_str(),
            ),
            ("user", ""),
            ("scopes", "x"),
            ("name", "keeper-made"),
            ("token_received", ""),
            ("expires", "2031-01-01 00:00:00"),
            ("sys_created_by", bed.sim.username()),
        ],
    )
}

#[tokio::test]
async fn the_role_alone_runs_a_cycle_and_check_then_passes_without_changing_anything() {
    let bed = Bed::start(prepared()).await;
    let first = check_with(&bed.settings()).await;
    assert_eq!(first.exit_code(), 0, "{}", first.render());
    assert_eq!(
        verdict(&first, "write oauth_credential").verdict,
        Verdict::Warn
    );

    // Least privilege: the documented role, and nothing else, refreshes and creates the row.
    let report = bed.cycle().await;
    assert_eq!(report.count(OutcomeKind::Refreshed), 1, "{report:?}");
    assert!(
        bed.sim
            .rows("oauth_credential")
            .iter()
            .any(|r| r["type"] == "access_token" && r["sys_created_by"] == bed.sim.username()),
        "the keeper created the access row"
    );

    let before = bed.sim.rows("oauth_credential");
    bed.sim.clear_requests();
    let list = check_with(&bed.settings()).await;
    assert_eq!(list.exit_code(), 0, "{}", list.render());
    // Everything passes but the round trip, which only `check --round-trip` runs.
    for step in list.steps.iter().filter(|s| s.name != "round trip") {
        assert_eq!(step.verdict, Verdict::Pass, "{}", list.render());
    }
    assert_eq!(
        bed.sim.rows("oauth_credential"),
        before,
        "check changed a credential row"
    );
    // `/verify` is a POST that reads: the probe of an id that cannot exist changes nothing.
    let writes: Vec<_> = bed
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && !r.path.ends_with("/verify"))
        .collect();
    assert_eq!(
        writes.len(),
        1,
        "only the no-change probe writes: {writes:?}"
    );
    assert_eq!(writes[0].method, "PATCH");
    assert!(
        writes[0]
            .query
            .contains("sysparm_input_display_value=false")
    );
    assert!(writes[0].body.contains("expires") && !writes[0].body.contains("token_received"));
}

#[tokio::test]
async fn the_client_secret_is_asked_for_only_when_the_config_has_none() {
    let companion_queries = |bed: &Bed| -> Vec<String> {
        bed.sim
            .requests()
            .into_iter()
            .filter(|r| r.target == Target::Companion && r.path.ends_with("/secrets"))
            .map(|r| r.query)
            .collect()
    };
    let bed = Bed::start(prepared()).await;
    assert_eq!(bed.cycle().await.count(OutcomeKind::Refreshed), 1);
    let asked = companion_queries(&bed);
    assert_eq!(asked.len(), 1);
    assert!(asked[0].contains("include=client_secret"), "{asked:?}");

    let bed = Bed::start(prepared()).await;
    let secret = bed
        .sim
        .decrypted("oauth_entity", &bed.seeded[0].registry, "client_secret");
    let mut settings = bed.settings();
    settings.registries.push(RegistrySettings {
        name: "Microsoft Graph".into(),
        client_secret: secret.map(SecretString::from),
        scope: None,
        client_auth: Default::default(),
        default_expires_in: Duration::from_secs(3_600),
        refresh_token_lifetime: Duration::from_secs(90 * 86_400),
        kind: None,
        resource: None,
        assertion_key: None,
        // A secret held in the config goes only to a pinned endpoint (the simulator is none of
        // the well-known hosts).
        token_url: Some(bed.token_url_of(&bed.seeded[0].registry)),
    });
    assert_eq!(
        bed.cycle_with(settings).await.count(OutcomeKind::Refreshed),
        1
    );
    let asked = companion_queries(&bed);
    assert_eq!(asked.len(), 1);
    assert!(!asked[0].contains("include"), "{asked:?}");
}

/// Expected outcome of `check` on an instance that misses one runbook step.
struct Missing {
    what: &'static str,
    estate: Estate,
    step: &'static str,
    verdict: Verdict,
    runbook: Option<u8>,
    says: &'static str,
    exit: i32,
}

#[tokio::test]
async fn check_names_each_missing_runbook_step_and_its_fix() {
    let cases = vec![
        Missing {
            what: "basic auth blocked: neither WSAO nor snc_basic_auth_api_access",
            estate: prepared().with_web_service_access_only(false),
            step: "authentication",
            verdict: Verdict::Fail,
            runbook: Some(3),
            says: "Web service access only",
            exit: 3,
        },
        Missing {
            what: "basic auth allowed by role, but the user is interactive",
            estate: prepared()
                .with_web_service_access_only(false)
                .with_user_roles(&[COMPANION_ROLE, "snc_basic_auth_api_access"]),
            step: "web service access only",
            verdict: Verdict::Warn,
            runbook: Some(3),
            says: "Web service access only",
            exit: 0,
        },
        Missing {
            what: "the role is not granted",
            estate: prepared().with_user_roles(&["itil"]),
            step: "read oauth_credential",
            verdict: Verdict::Fail,
            runbook: Some(2),
            says: COMPANION_ROLE,
            exit: 1,
        },
        Missing {
            what: "the companion's allowed user is not set",
            estate: prepared().with_companion_allowed_user(""),
            step: "companion",
            verdict: Verdict::Fail,
            runbook: Some(3),
            says: "snok.oauth_keeper.allowed_user",
            exit: 1,
        },
        Missing {
            what: "the companion's role can be granted by anyone who can grant roles",
            estate: prepared().with_companion_role_assignable_by(""),
            step: "companion",
            verdict: Verdict::Fail,
            runbook: Some(3),
            says: "Assignable by = security_admin",
            exit: 1,
        },
        Missing {
            what: "the table is closed to web services",
            estate: prepared().with_table_closed_to_web_services("oauth_credential"),
            step: "read oauth_credential",
            verdict: Verdict::Fail,
            runbook: Some(5),
            says: "Allow access to this table via web services",
            exit: 1,
        },
        Missing {
            what: "a registry field ACL is missing",
            estate: prepared().without_acl("oauth_entity.token_url", "read"),
            step: "read fields",
            verdict: Verdict::Fail,
            runbook: Some(2),
            says: "oauth_entity.token_url (read)",
            exit: 1,
        },
        Missing {
            what: "a credential field ACL is missing",
            estate: prepared().without_acl("oauth_credential.expires", "read"),
            step: "read fields",
            verdict: Verdict::Fail,
            runbook: Some(2),
            says: "oauth_credential.expires (read)",
            exit: 1,
        },
        Missing {
            what: "the registry table ACL is missing",
            estate: prepared().without_acl("oauth_entity", "read"),
            step: "read fields",
            verdict: Verdict::Fail,
            runbook: Some(2),
            says: "oauth_entity.name (read)",
            exit: 1,
        },
        Missing {
            what: "the table write ACL is missing",
            estate: prepared().without_acl("oauth_credential", "write"),
            step: "write oauth_credential",
            verdict: Verdict::Fail,
            runbook: Some(2),
            says: "write ACL",
            exit: 1,
        },
        Missing {
            what: "the update set is not committed",
            estate: prepared().without_companion(),
            step: "companion",
            verdict: Verdict::Fail,
            runbook: Some(2),
            says: "Base API path",
            exit: 1,
        },
        Missing {
            what: "the API came out under the instance's company-code namespace",
            estate: prepared().with_companion_path("/api/acme/oauth_keeper"),
            step: "companion",
            verdict: Verdict::Fail,
            runbook: Some(2),
            says: "instance.companion_path",
            exit: 1,
        },
        Missing {
            what: "table rights through oauth_admin, but not the companion's role",
            estate: prepared().with_user_roles(&["oauth_admin"]),
            step: "companion",
            verdict: Verdict::Fail,
            runbook: Some(3),
            says: COMPANION_ROLE,
            exit: 1,
        },
        Missing {
            what: "no time zone",
            estate: prepared().with_user_time_zone(""),
            step: "time zone",
            verdict: Verdict::Warn,
            runbook: Some(3),
            says: "UTC",
            exit: 0,
        },
        Missing {
            what: "an odd date format",
            estate: prepared().with_user_date_format("dd-MM-yyyy"),
            step: "date format",
            verdict: Verdict::Warn,
            runbook: Some(3),
            says: "yyyy-MM-dd",
            exit: 0,
        },
    ];
    for case in cases {
        let bed = Bed::start(case.estate).await;
        keeper_row(&bed);
        // The keeper's default path is where the update set puts the companion.
        let mut settings = bed.settings();
        settings.instance.companion_path = DEFAULT_COMPANION_PATH.to_string();
        let list = check_with(&settings).await;
        let step = verdict(&list, case.step);
        let shown = list.render();
        assert_eq!(step.verdict, case.verdict, "{}: {shown}", case.what);
        assert_eq!(step.runbook, case.runbook, "{}: {shown}", case.what);
        let text = format!("{} {}", step.detail, step.fix.clone().unwrap_or_default());
        assert!(text.contains(case.says), "{}: {shown}", case.what);
        assert_eq!(list.exit_code(), case.exit, "{}: {shown}", case.what);
        if case.exit != 3 {
            // Every other step still ran: one missing step never hides another.
            assert!(list.step("time zone").is_some(), "{}: {shown}", case.what);
        }
    }
}

#[tokio::test]
async fn check_names_a_wrong_password_and_a_token_that_does_not_decrypt() {
    let bed = Bed::start(prepared()).await;
    let mut settings = bed.settings();
    settings.instance.auth = InstanceAuthSettings::Basic {
        password: SecretString::from("not-the-password".to_string()),
    };
    let list = check_with(&settings).await;
    let step = verdict(&list, "authentication");
    assert_eq!(step.verdict, Verdict::Fail);
    assert!(step.fix.as_deref().unwrap_or("").contains("password"));
    assert_eq!(list.exit_code(), 3);

    let bed = Bed::start(prepared()).await;
    bed.sim.set_row_field(
        "oauth_credential",
        &bed.seeded[0].refresh_sys_id,
        "token_received",
        "not-a-ciphertext",
    );
    let list = check_with(&bed.settings()).await;
    assert_eq!(
        verdict(&list, "companion decrypts").verdict,
        Verdict::Warn,
        "{}",
        list.render()
    );
}

#[tokio::test]
async fn the_binary_check_prints_the_runbook_step_and_exits_1() {
    let bed = Bed::start(prepared().without_companion()).await;
    let config = bed.config_file("");
    let out = bed
        .run_binary(&["check", "--config", config.to_str().unwrap()])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("[FAIL] companion"), "{stdout}");
    assert!(stdout.contains("fix (runbook step 2)"), "{stdout}");
    let json = bed
        .run_binary(&[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--format",
            "json",
        ])
        .await;
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON checklist");
    let companion = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "companion")
        .unwrap();
    assert_eq!(companion["verdict"], "fail");
    assert_eq!(companion["runbook"], 2);
}

#[tokio::test]
async fn oauth_refreshes_where_basic_auth_is_blocked() {
    // An interactive user without snc_basic_auth_api_access: Basic is refused, the bearer
    // token is not subject to the restriction.
    let bed = Bed::start(prepared().with_web_service_access_only(false)).await;
    let settings = oauth(bed.settings(), CLIENT_SECRET);
    let report = bed.cycle_with(settings.clone()).await;
    assert_eq!(report.count(OutcomeKind::Refreshed), 1, "{report:?}");
    assert_eq!(
        bed.sim.instance_token_grants(),
        ["password"],
        "one token, reused"
    );
    for r in bed.sim.requests() {
        if matches!(r.target, Target::TableApi | Target::Companion) {
            assert_eq!(
                r.header("authorization"),
                Some("Bearer <redacted>"),
                "{r:?}"
            );
        }
    }
    let list = check_with(&settings).await;
    assert_eq!(verdict(&list, "authentication").verdict, Verdict::Pass);
    assert_eq!(
        verdict(&list, "web service access only").verdict,
        Verdict::Warn
    );
    assert_eq!(list.exit_code(), 0, "{}", list.render());
}

#[tokio::test]
async fn an_expired_instance_token_is_renewed_with_the_refresh_grant_then_the_password() {
    let bed = Bed::start(prepared()).await;
    let settings = oauth(bed.settings(), CLIENT_SECRET);
    let instance = Instance::new(&settings.instance, RetryPolicy::default()).unwrap();
    instance.integration_user().await.unwrap();
    instance.integration_user().await.unwrap();
    assert_eq!(bed.sim.instance_token_grants(), ["password"]);
    // The instance's clock runs past the access token: it refuses it, the keeper renews it
    // with the refresh token (no password sent) and the call goes through.
    bed.sim.advance_time(SignedDuration::from_hours(1));
    instance.integration_user().await.unwrap();
    assert_eq!(
        bed.sim.instance_token_grants(),
        ["password", "refresh_token"]
    );
    // Past the refresh token's 100 days the password grant takes over.
    bed.sim.advance_time(SignedDuration::from_hours(101 * 24));
    instance.integration_user().await.unwrap();
    assert_eq!(
        bed.sim.instance_token_grants(),
        ["password", "refresh_token", "refresh_token", "password"]
    );
}

#[tokio::test]
async fn a_refused_password_grant_is_named_with_its_fix() {
    for (estate, secret) in [
        (prepared().with_password_grant_disabled(), CLIENT_SECRET),
        (prepared(), "wrong-client-secret"),
    ] {
        let bed = Bed::start(estate).await;
        let settings = oauth(bed.settings(), secret);
        let instance = Instance::new(&settings.instance, RetryPolicy::default()).unwrap();
        let err = instance.integration_user().await.unwrap_err();
        assert!(matches!(err, SnError::TokenRefused(_)), "{err:?}");
        assert!(err.instance_unusable());
        let list = check_with(&settings).await;
        let step = verdict(&list, "authentication");
        assert_eq!(step.verdict, Verdict::Fail);
        assert_eq!(step.runbook, Some(4));
        assert!(step.detail.contains("/oauth_token.do"), "{}", list.render());
        assert!(
            step.fix.as_deref().unwrap_or("").contains("ropc"),
            "{}",
            list.render()
        );
        assert_eq!(list.exit_code(), 3);
    }
}

/// The binary's combined output of `args` with the bed's secrets and the instance client's
/// secret in its environment.
async fn run_with_client_secret(bed: &Bed, args: &[&str]) -> (Option<i32>, String) {
    let out = bed
        .run_binary_with(args, &[("SN_CLIENT_SECRET", CLIENT_SECRET)])
        .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn the_binary_with_client_credentials_refreshes_and_prints_no_instance_secret() {
    let bed = Bed::start(
        prepared()
            .with_web_service_access_only(false)
            .with_client_credentials_grant(CLIENT_ID),
    )
    .await;
    let config = bed.config_file("");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "password_env = \"SN_PASSWORD\"",
        &format!("auth = \"oauth\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"SN_CLIENT_SECRET\""),
    );
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();
    let mut output = String::new();
    for args in [
        vec![
            "once",
            "--log-level",
            "trace",
            "--log-format",
            "json",
            "--config",
            config,
        ],
        vec!["check", "--log-level", "trace", "--config", config],
    ] {
        let (code, text) = run_with_client_secret(&bed, &args).await;
        assert_eq!(code, Some(0), "{args:?}: {text}");
        assert!(!text.contains("instance.password_grant"), "{text}");
        output.push_str(&text);
    }
    assert!(
        bed.sim
            .instance_token_grants()
            .iter()
            .all(|g| g == "client_credentials"),
        "{:?}",
        bed.sim.instance_token_grants()
    );
    let tokens = bed.sim.instance_tokens();
    assert!(tokens.len() >= 2, "both runs obtained tokens");
    for secret in tokens.iter().map(String::as_str).chain([CLIENT_SECRET]) {
        assert!(!output.contains(secret), "an instance secret leaked");
    }
}

#[tokio::test]
async fn the_password_grant_must_be_chosen_and_is_warned_about_at_every_start() {
    let bed = Bed::start(prepared()).await;
    let config = bed.config_file("");
    let oauth_keys = format!(
        "auth = \"oauth\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"SN_CLIENT_SECRET\""
    );
    // A config from before client credentials: refused, naming the key and both fixes.
    let old = std::fs::read_to_string(&config).unwrap().replace(
        "password_env = \"SN_PASSWORD\"",
        &format!("password_env = \"SN_PASSWORD\"\n{oauth_keys}"),
    );
    std::fs::write(&config, &old).unwrap();
    let path = config.to_str().unwrap();
    let (code, text) = run_with_client_secret(&bed, &["once", "--config", path]).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("instance.oauth_grant")
            && text.contains("oauth_grant = \"client_credentials\"")
            && text.contains("oauth_grant = \"password\""),
        "{text}"
    );
    assert!(bed.sim.requests().is_empty(), "refused before any call");
    // Chosen explicitly, it works, with a warning at every start.
    std::fs::write(
        &config,
        old.replace(
            "auth = \"oauth\"",
            "auth = \"oauth\"\noauth_grant = \"password\"",
        ),
    )
    .unwrap();
    for command in ["once", "check"] {
        let (code, text) = run_with_client_secret(&bed, &[command, "--config", path]).await;
        assert_eq!(code, Some(0), "{command}: {text}");
        assert!(
            text.contains("instance.password_grant") && text.contains("RFC 9700"),
            "{command}: {text}"
        );
        assert!(!text.contains(CLIENT_SECRET) && !text.contains(bed.sim.password()));
    }
}

#[tokio::test]
async fn a_refused_client_credentials_grant_is_named_with_its_fix() {
    // The property is not created (its default is false), or the client has no OAuth
    // Application User.
    for estate in [
        prepared(),
        prepared().with_client_credentials_grant("another-client"),
    ] {
        let bed = Bed::start(estate).await;
        let settings = oauth_with(
            bed.settings(),
            CLIENT_SECRET,
            InstanceGrant::ClientCredentials,
        );
        let list = check_with(&settings).await;
        let step = verdict(&list, "authentication");
        assert_eq!(step.verdict, Verdict::Fail, "{}", list.render());
        assert_eq!(step.runbook, Some(4));
        let fix = step.fix.as_deref().unwrap_or("");
        assert!(
            fix.contains("glide.oauth.inbound.client.credential.grant_type.enabled")
                && fix.contains("Washington DC")
                && fix.contains(bed.sim.username()),
            "{}",
            list.render()
        );
        assert_eq!(list.exit_code(), 3);
        assert_eq!(bed.sim.instance_token_grants(), ["client_credentials"]);
    }
}

#[test]
fn the_documented_acls_are_the_ones_the_simulator_grants() {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations-docs/README.md"
    ))
    .expect("migrations-docs/README.md");
    let start = readme.find("<!-- acls:begin -->").expect("acl table start");
    let end = readme.find("<!-- acls:end -->").expect("acl table end");
    let documented: BTreeSet<(String, String)> = readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // | `name` | operation | type | ...
            (cells.get(3) == Some(&"record"))
                .then(|| (cells[1].trim_matches('`').to_string(), cells[2].to_string()))
        })
        .collect();
    let granted: BTreeSet<(String, String)> = COMPANION_RECORD_ACLS
        .iter()
        .map(|(n, o)| ((*n).to_string(), (*o).to_string()))
        .collect();
    assert_eq!(documented, granted);
}

#[tokio::test]
async fn the_instance_token_endpoint_answers_as_documented() {
    let bed = Bed::start(prepared()).await;
    let url = format!("{}/oauth_token.do", bed.sim.base_url());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let password = bed.sim.password().to_string();
    let form = |grant: &'static str, extra: Vec<(&'static str, String)>| {
        let mut f = vec![
            ("grant_type", grant.to_string()),
            ("client_id", CLIENT_ID.to_string()),
            ("client_secret", CLIENT_SECRET.to_string()),
        ];
        f.extend(extra);
        f
    };
    let resp = client
        .post(&url)
        .form(&form(
            "password",
            vec![
                ("username", bed.sim.username().to_string()),
                ("password", password.clone()),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1799);
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let access = body["access_token"].as_str().unwrap().to_string();
    // The access token opens the Table API.
    let table = client
        .get(format!(
            "{}/api/now/table/sys_user?sysparm_limit=1",
            bed.sim.base_url()
        ))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(table.status(), 200);
    // The refresh grant answers with an access token only.
    let resp = client
        .post(&url)
        .form(&form("refresh_token", vec![("refresh_token", refresh)]))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["access_token"].is_string() && body.get("refresh_token").is_none());
    // Every refusal is the same 401: a wrong password, a JSON body, an unknown grant.
    let refusals = [
        client.post(&url).form(&form(
            "password",
            vec![
                ("username", bed.sim.username().to_string()),
                ("password", "wrong".to_string()),
            ],
        )),
        client
            .post(&url)
            .json(&serde_json::json!({"grant_type": "password"})),
        // Client credentials while glide.oauth.inbound.client.credential.grant_type.enabled
        // is not created (false).
        client.post(&url).form(&form("client_credentials", vec![])),
    ];
    for request in refusals {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.text().await.unwrap(),
            r#"{"error_description":"access_denied","error":"server_error"}"#
        );
    }
    // Neither the password nor the client secret is kept in the request log.
    for r in bed.sim.requests() {
        assert!(!r.body.contains(&password) && !r.body.contains(CLIENT_SECRET));
    }

    // With the property and the OAuth Application User: an access token, no refresh token.
    let bed = Bed::start(prepared().with_client_credentials_grant(CLIENT_ID)).await;
    let url = format!("{}/oauth_token.do", bed.sim.base_url());
    let resp = client
        .post(&url)
        .form(&form("client_credentials", vec![]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["access_token"].is_string() && body.get("refresh_token").is_none());
    assert_eq!(body["expires_in"], 1799);
}
