//! Secrets go only where they are pinned: a pinned registry ignores the instance's `token_url`
//! (and says so once per change), a secret the keeper holds never goes to a host nobody
//! pinned, and a secret the instance hands out follows the instance.

use crate::support::{Bed, another_host, registry_override, report_to_instance};
use sn_oauth_keeper::domain::report::{Outcome, OutcomeKind};
use sn_oauth_keeper::engine::Mode;
use sn_oauth_keeper_sim::{CredentialSpec, Estate, ProviderKind, RegistrySpec, Simulator};
use tokio_util::sync::CancellationToken;

/// One due credential of registry "Graph" at an Entra-like provider, and the client secret
/// that provider accepts.
fn graph_estate(seed: u64) -> (Estate, String) {
    let mut estate = Estate::empty(seed).with_user_time_zone("UTC");
    let reg = estate.add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike));
    estate.add_credential(CredentialSpec::new(&reg, "Mailbox").access_missing());
    let secret = estate.registries()[0].client_secret.clone();
    (estate, secret)
}

/// Another host's token URL, and the simulator behind it.
async fn elsewhere() -> (Simulator, String) {
    let (sim, base) = another_host().await;
    (sim, format!("{base}/oauth2/entra/token"))
}

#[tokio::test]
async fn a_pinned_registry_refreshes_where_pinned_and_says_once_that_the_instance_moved() {
    let (estate, secret) = graph_estate(61);
    let bed = Bed::start(estate).await;
    let (attacker, moved_to) = elsewhere().await;
    let registry = bed.seeded[0].registry.clone();
    let pin = bed.token_url_of(&registry);
    bed.sim
        .set_row_field("oauth_entity", &registry, "token_url", &moved_to);
    let mut settings = bed.settings();
    settings
        .registries
        .push(registry_override("Graph", Some(&secret), Some(pin.clone())));
    report_to_instance(&mut settings);
    let keeper = bed.keeper_with(settings);
    let stop = CancellationToken::new();

    let first = keeper.cycle(Mode::Apply, &stop).await.unwrap();
    assert_eq!(first.count(OutcomeKind::Refreshed), 1, "{first:?}");
    assert!(attacker.requests().is_empty(), "{:?}", attacker.requests());
    assert_eq!(bed.token_requests().len(), 1, "to the pinned endpoint");
    let moved_events = |bed: &Bed| {
        bed.sim
            .rows("em_event")
            .into_iter()
            .filter(|e| e["message_key"].ends_with(":token_url_moved"))
            .collect::<Vec<_>>()
    };
    let events = moved_events(&bed);
    assert_eq!(events.len(), 1, "{events:#?}");
    let port = |url: &str| {
        url.rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    let description = &events[0]["description"];
    assert!(
        description.contains(&format!("localhost:{}", port(&moved_to)))
            && description.contains(&format!("127.0.0.1:{}", port(pin.as_str()))),
        "{description}"
    );

    // The next cycles say nothing new while nothing changes; the credential is refreshed again
    // at the pin when due.
    bed.expire_access_rows();
    let again = keeper.cycle(Mode::Apply, &stop).await.unwrap();
    assert_eq!(again.count(OutcomeKind::Refreshed), 1, "{again:?}");
    assert!(attacker.requests().is_empty());
    assert_eq!(moved_events(&bed).len(), 1, "said once per change");

    // Back at the pin: the alert is cleared, once.
    bed.sim
        .set_row_field("oauth_entity", &registry, "token_url", pin.as_str());
    keeper.cycle(Mode::Apply, &stop).await.unwrap();
    keeper.cycle(Mode::Apply, &stop).await.unwrap();
    let events = moved_events(&bed);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[1]["severity"], "0");
}

#[tokio::test]
async fn a_keeper_held_secret_goes_nowhere_unpinned_and_once_exits_1() {
    let (estate, secret) = graph_estate(62);
    let bed = Bed::start(estate).await;
    let (attacker, moved_to) = elsewhere().await;
    let provider_url = bed.token_url_of(&bed.seeded[0].registry);
    let config =
        bed.config_file("[[registry]]\nname = \"Graph\"\nclient_secret_env = \"GRAPH_SECRET\"\n");
    let config = config.to_str().unwrap();
    let env = [("GRAPH_SECRET", secret.as_str())];
    // The simulator's own provider, then another host: neither is pinned nor well-known.
    for step in 0..2 {
        if step == 1 {
            bed.sim.set_row_field(
                "oauth_entity",
                &bed.seeded[0].registry,
                "token_url",
                &moved_to,
            );
        }
        let out = bed
            .run_binary_with(&["once", "--config", config], &env)
            .await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains("held back") && text.contains("token_url"),
            "{text}"
        );
        assert!(!text.contains(&secret), "the secret leaked: {text}");
    }
    assert!(
        bed.token_requests().is_empty(),
        "{:?}",
        bed.token_requests()
    );
    assert!(attacker.requests().is_empty(), "{:?}", attacker.requests());
    // `status` shows why, without asking anyone for anything.
    let status = bed
        .run_binary_with(&["status", "--format", "json", "--config", config], &env)
        .await;
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let outcome = doc["credentials"][0].to_string();
    assert!(outcome.contains("held back"), "{doc:#}");

    // Pinned, the same secret refreshes.
    let pinned = bed.config_file(&format!(
        "[[registry]]\nname = \"Graph\"\nclient_secret_env = \"GRAPH_SECRET\"\ntoken_url = \"{provider_url}\"\n"
    ));
    let out = bed
        .run_binary_with(&["once", "--config", pinned.to_str().unwrap()], &env)
        .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(attacker.requests().is_empty());
}

#[tokio::test]
async fn a_pin_that_is_not_https_refuses_the_config() {
    let (estate, secret) = graph_estate(63);
    let bed = Bed::start(estate).await;
    let config = bed.config_file(
        "[[registry]]\nname = \"Graph\"\nclient_secret_env = \"GRAPH_SECRET\"\ntoken_url = \"http://idp.example/token\"\n",
    );
    let out = bed
        .run_binary_with(
            &["once", "--config", config.to_str().unwrap()],
            &[("GRAPH_SECRET", &secret)],
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("registry[0].token_url"));
    assert!(bed.sim.requests().is_empty(), "nothing was asked of anyone");
}

#[tokio::test]
async fn a_secret_the_instance_hands_out_follows_the_instance() {
    let (estate, _) = graph_estate(64);
    let bed = Bed::start(estate).await;
    // A scope override only: the secret still comes from the companion.
    let mut settings = bed.settings();
    let mut scoped = registry_override("Graph", None, None);
    scoped.scope = Some("offline_access".into());
    settings.registries.push(scoped);
    let report = bed.cycle_with(settings).await;
    assert_eq!(report.count(OutcomeKind::Refreshed), 1, "{report:?}");
    assert!(
        report
            .credentials
            .iter()
            .all(|c| !matches!(c.outcome, Outcome::Blocked { .. }))
    );
}

#[tokio::test]
async fn check_reports_each_registry_pin_state() {
    let mut estate = Estate::empty(65).with_user_time_zone("UTC");
    for name in ["Pinned", "Held", "Companion"] {
        let reg = estate.add_registry(RegistrySpec::new(name, ProviderKind::EntraLike));
        estate.add_credential(CredentialSpec::new(&reg, name).access_missing());
    }
    let bed = Bed::start(estate).await;
    let mut settings = bed.settings();
    let pinned = bed.token_url_of(&bed.seeded[0].registry);
    settings.registries = vec![
        registry_override("Pinned", Some("s3cret-one"), Some(pinned)),
        registry_override("Held", Some("s3cret-two"), None),
        registry_override("Nowhere", None, None),
    ];
    let env = std::collections::HashMap::<String, String>::new();
    let list = sn_oauth_keeper::check::run(&settings, &env).await;
    let step = list.step("token endpoints").expect("the step ran");
    assert_eq!(
        step.verdict,
        sn_oauth_keeper::check::Verdict::Fail,
        "{}",
        list.render()
    );
    for expected in [
        "Pinned: pinned to 127.0.0.1:",
        "Held: held back",
        "Companion: instance-supplied secret (127.0.0.1:",
        "[[registry]] Nowhere: matches no Application Registry",
    ] {
        assert!(
            step.detail.contains(expected),
            "{expected}: {}",
            step.detail
        );
    }
    assert_eq!(list.exit_code(), 1);
}

#[tokio::test]
async fn a_name_two_registries_share_holds_both_back_naming_their_sys_ids() {
    // An admin on the instance creates a second "Graph" pointing elsewhere.
    let mut estate = Estate::empty(66).with_user_time_zone("UTC");
    let real = estate.add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike));
    let twin = estate
        .add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("twin"));
    estate.add_credential(CredentialSpec::new(&real, "Mailbox").access_missing());
    estate.add_credential(CredentialSpec::new(&twin, "Decoy").access_missing());
    let secret = estate.registries()[0].client_secret.clone();
    let bed = Bed::start(estate).await;
    let (real_id, twin_id) = (
        bed.seeded[0].registry.clone(),
        bed.seeded[1].registry.clone(),
    );
    let pin = bed.token_url_of(&real_id);
    let mut settings = bed.settings();
    settings
        .registries
        .push(registry_override("Graph", Some(&secret), Some(pin.clone())));
    let report = bed.cycle_with(settings).await;
    assert_eq!(report.count(OutcomeKind::Blocked), 2, "{report:?}");
    for c in &report.credentials {
        let Outcome::Blocked { message, .. } = &c.outcome else {
            panic!("{c:?}")
        };
        assert!(
            message.contains(&real_id) && message.contains(&twin_id),
            "{message}"
        );
    }
    assert!(
        bed.token_requests().is_empty(),
        "{:?}",
        bed.token_requests()
    );

    // Named by its sys_id, the real one is refreshed; the twin takes the instance's secret and
    // endpoint like any registry the config does not name.
    let mut settings = bed.settings();
    settings
        .registries
        .push(registry_override(&real_id, Some(&secret), Some(pin)));
    let report = bed.cycle_with(settings).await;
    assert_eq!(report.count(OutcomeKind::Refreshed), 2, "{report:?}");
    let to_twin: Vec<_> = bed
        .token_requests()
        .into_iter()
        .filter(|r| r.path.contains("/twin/"))
        .collect();
    assert_eq!(to_twin.len(), 1, "{to_twin:?}");
    assert!(
        !to_twin[0].body.contains(&secret),
        "the keeper's secret went to the twin"
    );
}
