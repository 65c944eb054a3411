//! SIGKILL the real binary at each point of a refresh; after a restart every rotated refresh
//! token reaches ServiceNow and works at a provider that consumed the old one.

use crate::support::{Bed, strict_estate};
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, Fault, FaultTarget, ProviderKind, RegistrySpec, SeededCredential,
    Target,
};
use std::time::Duration;

/// Starts `once` as a child, waits until the simulator sees a request matching `point` still in
/// flight (or answered, for `answered`), then kills the child with SIGKILL.
async fn kill_at(
    bed: &Bed,
    config: &std::path::Path,
    point: impl Fn(&sn_oauth_keeper_sim::RecordedRequest) -> bool,
) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"))
        .args(["once", "--config", config.to_str().unwrap()])
        .env("SN_PASSWORD", bed.sim.password())
        .env("SN_OAUTH_KEEPER_KEY", bed.key_hex())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut reached = false;
    for _ in 0..300 {
        if bed.sim.requests().iter().any(&point) {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reached, "the keeper never reached the kill point");
    child.start_kill().unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "killed, not finished");
}

async fn restart_and_finish(bed: &Bed, config: &std::path::Path) -> String {
    bed.sim.clear_faults();
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    text
}

fn assert_token_works(bed: &Bed, c: &SeededCredential) {
    let stored = bed
        .sim
        .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
        .expect("a token in ServiceNow");
    assert_ne!(
        stored, c.refresh_token,
        "{}: the rotated token reached ServiceNow",
        c.name
    );
    assert!(
        bed.sim.provider_valid(&c.provider, &stored),
        "{}: the stored token works",
        c.name
    );
    assert!(
        !bed.sim.provider_valid(&c.provider, &c.refresh_token),
        "{}: the provider consumed the old one",
        c.name
    );
    let access_rows = bed
        .sim
        .rows("oauth_credential")
        .into_iter()
        .filter(|r| {
            r["type"] == "access_token" && r["oauth_requestor_profile"] == c.requestor_profile
        })
        .count();
    assert_eq!(access_rows, 1, "{}: exactly one access row", c.name);
}

#[tokio::test]
async fn killed_after_the_provider_answered() {
    let (estate, c) = strict_estate(61, false);
    let bed = Bed::start(estate).await;
    let config = bed.config_file("");
    bed.sim
        .inject(Fault::delay(FaultTarget::TableApi, Duration::from_secs(30)).method("PATCH"));
    kill_at(&bed, &config, |r| {
        matches!(r.target, Target::Provider(_)) && r.status == 200
    })
    .await;
    restart_and_finish(&bed, &config).await;
    assert_token_works(&bed, &c);
}

#[tokio::test]
async fn killed_during_the_patch_of_the_refresh_row() {
    let (estate, c) = strict_estate(61, false);
    let bed = Bed::start(estate).await;
    let config = bed.config_file("");
    bed.sim.inject(
        Fault::delay(FaultTarget::TableApi, Duration::from_secs(30))
            .method("PATCH")
            .path(&c.refresh_sys_id),
    );
    kill_at(&bed, &config, |r| {
        r.method == "PATCH" && r.path.ends_with(&c.refresh_sys_id)
    })
    .await;
    let log = restart_and_finish(&bed, &config).await;
    assert!(log.contains("journal.redelivered"), "{log}");
    assert_token_works(&bed, &c);
}

#[tokio::test]
async fn killed_during_the_post_of_a_new_access_row() {
    let (estate, c) = strict_estate(61, true);
    let bed = Bed::start(estate).await;
    let config = bed.config_file("");
    bed.sim
        .inject(Fault::delay(FaultTarget::TableApi, Duration::from_secs(30)).method("POST"));
    kill_at(&bed, &config, |r| {
        r.method == "POST" && r.target == Target::TableApi
    })
    .await;
    restart_and_finish(&bed, &config).await;
    assert_token_works(&bed, &c);
}

#[tokio::test]
async fn killed_between_two_credentials() {
    // Credentials are refreshed in sys_id order: pick a seed where the strict provider's
    // credential comes first, so the kill lands after its answer was journaled and before the
    // second's arrived (a batch's answers are written together, after its token requests).
    let (estate, first, second) = (60..200)
        .find_map(|seed| {
            let mut estate = Estate::empty(seed).with_user_time_zone("UTC");
            let okta = estate.add_registry(
                RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
            );
            let entra = estate.add_registry(
                RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("entra"),
            );
            let first = estate.add_credential(CredentialSpec::new(&okta, "first").access_missing());
            let second =
                estate.add_credential(CredentialSpec::new(&entra, "second").access_missing());
            (first.refresh_sys_id < second.refresh_sys_id).then_some((estate, first, second))
        })
        .expect("a seed with the strict credential first");
    let bed = Bed::start(estate).await;
    let config = bed.config_file("[refresh]\nconcurrency = 1\n");
    // The second credential's token request hangs; the first is done by then.
    bed.sim.inject(Fault::delay(
        FaultTarget::Provider("entra".into()),
        Duration::from_secs(30),
    ));
    kill_at(&bed, &config, |r| {
        r.target == Target::Provider("entra".into())
    })
    .await;
    let journal =
        sn_oauth_keeper::journal::Journal::open(&bed.dir.path().join("state"), Some(&bed.key))
            .unwrap();
    let journaled: Vec<String> = journal
        .pending()
        .unwrap()
        .into_iter()
        .map(|record| record.unwrap())
        .filter(|o| o.credential() == first.refresh_sys_id)
        .filter_map(|o| {
            o.delivery()
                .rotated
                .as_ref()
                .map(|r| secrecy::ExposeSecret::expose_secret(&r.token).to_string())
        })
        .collect();
    assert!(
        journaled.iter().any(|t| bed.sim.provider_valid("okta", t)),
        "the first credential's rotated token was in the journal at the kill"
    );
    drop(journal);
    restart_and_finish(&bed, &config).await;
    assert_token_works(&bed, &first);
    let second_stored = bed
        .sim
        .decrypted("oauth_credential", &second.refresh_sys_id, "token_received")
        .unwrap();
    assert!(bed.sim.provider_valid("entra", &second_stored));
}
