//! The hostile-input suite: a provider or an instance that answers the worst it can. Each test
//! asserts what must happen — the one credential fails, or the answer is cut to size, or the
//! odd row is ignored — and that no secret shows in anything the keeper leaves for people: the
//! log at trace level, stdout, `status --format json`, the journal's outcome table and last
//! errors, and the events on the instance.
//!
//! Elsewhere: duplicate entity names and a `token_url` moved between cycles in `routes`.

use crate::support::{Bed, another_host, registry_override};
use sn_oauth_keeper::domain::answer::MAX_ACCESS_LIFETIME;
use sn_oauth_keeper::domain::report::OutcomeKind;
use sn_oauth_keeper::engine::Mode;
use sn_oauth_keeper::journal::Journal;
use sn_oauth_keeper_sim::{CredentialSpec, Estate, Fault, FaultTarget, ProviderKind, RegistrySpec};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One due credential per provider id, each under its own registry (named as the provider),
/// all at strict rotating providers (a token used twice revokes its family).
fn estate(seed: u64, providers: &[&str]) -> Estate {
    let mut estate = Estate::empty(seed).with_user_time_zone("UTC");
    for id in providers {
        let reg = estate.add_registry(
            RegistrySpec::new(id, ProviderKind::RotatingReuseDetection).provider_id(id),
        );
        estate
            .add_credential(CredentialSpec::new(&reg, format!("{id} credential")).access_missing());
    }
    estate
}

fn provider(id: &str) -> FaultTarget {
    FaultTarget::Provider(id.to_string())
}

/// What a run left for people to read.
struct Left {
    /// `once`'s exit code.
    code: Option<i32>,
    /// Everything together: both runs' stdout and stderr, the journal's outcome messages and
    /// last errors, the events' text.
    text: String,
}

/// Runs `once` (log at trace, `[report]` on) and `status --format json`, and gathers what they
/// left.
async fn run_once(bed: &Bed, extra_config: &str, env: &[(&str, &str)], log_format: &str) -> Left {
    let config = bed.config_file(&format!("{extra_config}\n[report]\n"));
    let config = config.to_str().unwrap();
    let mut text = String::new();
    let once = bed
        .run_binary_with(
            &[
                "once",
                "--log-level",
                "trace",
                "--log-format",
                log_format,
                "--config",
                config,
            ],
            env,
        )
        .await;
    let status = bed
        .run_binary_with(&["status", "--format", "json", "--config", config], env)
        .await;
    for out in [&once, &status] {
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    if let Some(journal) = Journal::open_read_only(&bed.dir.path().join("state")).unwrap() {
        for outcome in journal.outcomes().unwrap().values() {
            text.push_str(outcome.message.as_deref().unwrap_or(""));
        }
        for pending in journal.summaries().unwrap() {
            text.push_str(pending.last_error.as_deref().unwrap_or(""));
        }
    }
    for event in bed.sim.rows("em_event") {
        text.push_str(&event["description"]);
        text.push_str(&event["additional_info"]);
    }
    Left {
        code: once.status.code(),
        text,
    }
}

/// Every secret in play: the password, the journal key, every client secret, every token
/// seeded and every token the instance holds now, and `extra`.
fn assert_no_secret(bed: &Bed, left: &Left, extra: &[&str]) {
    let mut secrets: Vec<String> = vec![bed.sim.password().to_string(), bed.key_hex()];
    for c in &bed.seeded {
        secrets.push(c.refresh_token.clone());
        secrets.extend(c.access_token.clone());
        secrets.extend(
            bed.sim
                .decrypted("oauth_entity", &c.registry, "client_secret"),
        );
    }
    for row in bed.sim.rows("oauth_credential") {
        secrets.extend(
            bed.sim
                .decrypted("oauth_credential", &row["sys_id"], "token_received")
                .filter(|t| !t.is_empty()),
        );
    }
    // Every token the keeper tried to write, stored or not.
    for request in bed.sim.requests() {
        if let Ok(body) = serde_json::from_str::<serde_json::Value>(&request.body)
            && let Some(token) = body["token_received"].as_str()
        {
            secrets.push(token.to_string());
        }
    }
    secrets.extend(extra.iter().map(|s| (*s).to_string()));
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        // Not even the start of one: a cut must not leave a prefix behind.
        let start = &secret[..12.min(secret.len())];
        assert!(
            !left.text.contains(start),
            "a secret leaked ({start}…):\n{}",
            left.text
        );
    }
}

#[tokio::test]
async fn a_provider_that_echoes_every_secret_leaves_none_anywhere() {
    let bed = Bed::start(estate(91, &["okta", "auth0"])).await;
    // The keeper holds auth0's secret and sends it in a Basic header; okta's comes from the
    // companion, in the body.
    let auth0 = &bed.seeded[1];
    let secret = bed
        .sim
        .decrypted("oauth_entity", &auth0.registry, "client_secret")
        .unwrap();
    for id in ["okta", "auth0"] {
        bed.sim.inject(Fault::echo_request(provider(id), 400));
    }
    let config = format!(
        "[[registry]]\nname = \"auth0\"\nclient_auth = \"basic\"\nclient_secret_env = \"AUTH0_SECRET\"\ntoken_url = \"{}\"\n",
        bed.token_url_of(&auth0.registry)
    );
    let left = run_once(&bed, &config, &[("AUTH0_SECRET", &secret)], "json").await;
    assert_eq!(left.code, Some(1), "{}", left.text);
    assert!(
        left.text.contains("[REDACTED]"),
        "the echoes were seen: {}",
        left.text
    );
    assert_eq!(bed.token_requests().len(), 2, "a refusal is not retried");
    assert_no_secret(&bed, &left, &[&secret]);
}

#[tokio::test]
async fn an_instance_that_echoes_a_written_token_leaves_it_nowhere() {
    let bed = Bed::start(estate(92, &["okta"])).await;
    bed.sim
        .inject(Fault::echo_request(FaultTarget::TableApi, 400).method("POST"));
    let left = run_once(&bed, "", &[], "json").await;
    assert_eq!(left.code, Some(1), "{}", left.text);
    // The rotated token waits in the journal for the next cycle: the write failed.
    let journal = Journal::open_read_only(&bed.dir.path().join("state"))
        .unwrap()
        .unwrap();
    assert_eq!(journal.summaries().unwrap().len(), 1);
    assert!(
        left.text.contains("[REDACTED]"),
        "the echo was seen: {}",
        left.text
    );
    assert_no_secret(&bed, &left, &[]);
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let (attacker, base) = another_host().await;
    let elsewhere = format!("{base}/oauth2/okta/token");
    let bed = Bed::start(estate(93, &["okta", "auth0"])).await;
    bed.sim
        .inject(Fault::custom(provider("okta"), 302, "").header("Location", &elsewhere));
    bed.sim
        .inject(Fault::custom(provider("auth0"), 307, "").header("Location", &elsewhere));
    let left = run_once(&bed, "", &[], "json").await;
    assert_eq!(left.code, Some(1), "{}", left.text);
    assert!(attacker.requests().is_empty(), "{:?}", attacker.requests());
    assert_eq!(bed.token_requests().len(), 2);
    // Nothing was processed: the seeded tokens still work.
    for c in &bed.seeded {
        assert!(bed.sim.provider_valid(&c.provider, &c.refresh_token));
    }
    assert_no_secret(&bed, &left, &[]);
}

/// `depth` nested arrays: more than any JSON parser should follow.
fn json_bomb(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn huge_undecodable_and_deeply_nested_answers_fail_only_their_credential() {
    let bed = Bed::start(estate(94, &["huge", "bytes", "bomb", "fine"])).await;
    let ten_mb = vec![b'x'; 10 * 1024 * 1024];
    bed.sim.inject(Fault::bytes(
        provider("huge"),
        200,
        "application/json",
        ten_mb,
    ));
    bed.sim.inject(Fault::bytes(
        provider("bytes"),
        200,
        "application/json",
        vec![b'{', 0xff, 0xfe, b':', 0xc3, b'}'],
    ));
    bed.sim
        .inject(Fault::custom(provider("bomb"), 200, &json_bomb(100_000)));
    let left = run_once(&bed, "", &[], "json").await;
    assert_eq!(left.code, Some(1), "{}", left.text);
    let journal = Journal::open_read_only(&bed.dir.path().join("state"))
        .unwrap()
        .unwrap();
    let outcomes = journal.outcomes().unwrap();
    for c in &bed.seeded {
        let failed = outcomes[&c.refresh_sys_id].class.is_some();
        assert_eq!(
            failed,
            c.provider != "fine",
            "{}: {:?}",
            c.provider,
            outcomes[&c.refresh_sys_id]
        );
        // Nothing reached a provider that answered oddly: its token still works.
        assert!(bed.sim.provider_valid(&c.provider, &c.refresh_token) || c.provider == "fine");
    }
    // An odd answer may be a lost one: one retry with the same token, never more.
    assert_eq!(bed.sim.token_requests("huge"), 2);
    assert_no_secret(&bed, &left, &[]);
}

#[tokio::test]
async fn a_deeply_nested_answer_from_the_instance_is_an_unreadable_answer() {
    let bed = Bed::start(estate(95, &["okta"])).await;
    bed.sim.inject(Fault::custom(
        FaultTarget::Companion,
        200,
        &json_bomb(100_000),
    ));
    let left = run_once(&bed, "", &[], "json").await;
    assert_eq!(left.code, Some(1), "{}", left.text);
    assert!(left.text.contains("companion"), "{}", left.text);
    assert!(bed.token_requests().is_empty());
    assert_no_secret(&bed, &left, &[]);
}

#[tokio::test]
async fn an_absurd_expires_in_is_cut_to_a_year() {
    let bed = Bed::start(estate(96, &["okta"])).await;
    bed.sim.inject(
        Fault::custom(
            provider("okta"),
            200,
            r#"{"access_token":"at-for-ever-and-ever","token_type":"Bearer","expires_in":1e30}"#,
        )
        .times(1),
    );
    let keeper = bed.keeper_with(bed.settings());
    let report = keeper
        .cycle(Mode::Apply, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.count(OutcomeKind::Refreshed), 1, "{report:?}");
    let expires = report.credentials[0].access_expires.unwrap();
    let limit = bed.sim.now() + MAX_ACCESS_LIFETIME + Duration::from_secs(60);
    assert!(expires <= limit, "{expires}");
    let integer = r#"{"access_token":"at-2","expires_in":1000000000000000000000000000000}"#;
    bed.sim
        .inject(Fault::custom(provider("okta"), 200, integer).times(1));
    bed.expire_access_rows();
    let report = keeper
        .cycle(Mode::Apply, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.count(OutcomeKind::Refreshed), 1, "{report:?}");
    assert!(report.credentials[0].access_expires.unwrap() <= limit);
}

#[tokio::test]
async fn names_with_escapes_reach_no_terminal_and_no_log_line_raw() {
    let bed = Bed::start(estate(97, &["okta"])).await;
    let c = &bed.seeded[0];
    let hostile = "\u{1b}]0;owned\u{7}\u{1b}[2JMailbox\r\n{\"level\":\"ERROR\",\"message\":\"forged\"}\u{9b}31m";
    bed.sim
        .set_row_field("oauth_credential", &c.refresh_sys_id, "name", hostile);
    bed.sim
        .set_row_field("oauth_entity", &c.registry, "name", hostile);
    for format in ["pretty", "json"] {
        let left = run_once(&bed, "", &[], format).await;
        assert_eq!(left.code, Some(0), "{}", left.text);
        for raw in ['\u{1b}', '\r', '\u{7}', '\u{9b}'] {
            assert!(
                !left.text.contains(raw),
                "{format}: {raw:?} in {}",
                left.text
            );
        }
        assert!(
            !left
                .text
                .lines()
                .any(|l| l.starts_with("{\"level\":\"ERROR\",\"message\":\"forged")),
            "{format}: a forged log line: {}",
            left.text
        );
        assert!(left.text.contains("Mailbox"), "{}", left.text);
        assert_no_secret(&bed, &left, &[]);
        // The next run finds the credential fresh: age its access row.
        bed.expire_access_rows();
    }
}

#[tokio::test]
async fn rows_whose_ids_are_not_sys_ids_are_ignored() {
    let bed = Bed::start(estate(98, &["okta"])).await;
    let c = &bed.seeded[0];
    let traversal = "../../../sys_user/6816f79cc0a8016401c5a33be04be441";
    for bad in [traversal, "a,b", "0123456789abcdef0123456789abcdeX"] {
        bed.sim.insert_row(
            "oauth_credential",
            &[
                ("sys_id", bad),
                ("type", "refresh_token"),
                ("peer", c.registry.as_str()),
                (
                    "oauth_requestor_profile",
                    "ffffffffffffffffffffffffffffffff",
                ),
                ("name", "planted"),
                ("expires", "2031-01-01 00:00:00"),
            ],
        );
    }
    let left = run_once(&bed, "", &[], "json").await;
    assert_eq!(left.code, Some(0), "{}", left.text);
    assert!(left.text.contains("instance.bad_row"), "{}", left.text);
    for r in bed.sim.requests() {
        let asked = format!("{}?{}", r.path, r.query);
        assert!(
            !asked.contains("6816f79cc0a8016401c5a33be04be441")
                && !asked.contains("a%2Cb")
                && !asked.contains("abcdeX"),
            "{asked}"
        );
    }
    assert_no_secret(&bed, &left, &[]);
}

#[tokio::test]
async fn a_token_url_moved_mid_cycle_changes_nothing_for_a_pinned_registry() {
    let (attacker, base) = another_host().await;
    let elsewhere = format!("{base}/oauth2/okta/token");
    let bed = Bed::start(estate(99, &["okta"])).await;
    let c = bed.seeded[0].clone();
    let secret = bed
        .sim
        .decrypted("oauth_entity", &c.registry, "client_secret")
        .unwrap();
    let mut settings = bed.settings();
    settings.registries.push(registry_override(
        "okta",
        Some(&secret),
        Some(bed.token_url_of(&c.registry)),
    ));
    // The companion is slow: the token_url moves after discovery, before the token request.
    bed.sim
        .inject(Fault::delay(FaultTarget::Companion, Duration::from_millis(300)).times(1));
    let keeper = bed.keeper_with(settings);
    let cycle = tokio::spawn(async move {
        keeper
            .cycle(Mode::Apply, &CancellationToken::new())
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    bed.sim
        .set_row_field("oauth_entity", &c.registry, "token_url", &elsewhere);
    let report = cycle.await.unwrap();
    assert_eq!(report.count(OutcomeKind::Refreshed), 1, "{report:?}");
    assert!(attacker.requests().is_empty());
}

#[tokio::test]
async fn duplicate_entity_names_hold_back_with_both_sys_ids_and_no_secret() {
    let mut estate = estate(100, &["okta"]);
    let twin = estate.add_registry(
        RegistrySpec::new("okta", ProviderKind::RotatingReuseDetection).provider_id("twin"),
    );
    estate.add_credential(CredentialSpec::new(&twin, "twin credential").access_missing());
    let bed = Bed::start(estate).await;
    let secret = bed
        .sim
        .decrypted("oauth_entity", &bed.seeded[0].registry, "client_secret")
        .unwrap();
    let config = format!(
        "[[registry]]\nname = \"okta\"\nclient_secret_env = \"OKTA_SECRET\"\ntoken_url = \"{}\"\n",
        bed.token_url_of(&bed.seeded[0].registry)
    );
    let left = run_once(&bed, &config, &[("OKTA_SECRET", &secret)], "json").await;
    assert_eq!(left.code, Some(1), "{}", left.text);
    for c in &bed.seeded {
        assert!(left.text.contains(&c.registry), "{}", left.text);
    }
    assert!(bed.token_requests().is_empty());
    assert_no_secret(&bed, &left, &[&secret]);
}
