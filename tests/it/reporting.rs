//! `[report]`: one Event Management event per state change, never one per cycle.

use crate::support::{Bed, report_to_instance};
use sn_oauth_keeper::engine::Mode;
use sn_oauth_keeper_sim::Estate;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn one_event_per_state_change() {
    let bed = Bed::start(Estate::demo(12)).await;
    let mut settings = bed.settings();
    report_to_instance(&mut settings);
    let keeper = bed.keeper_with(settings);
    let stop = CancellationToken::new();
    for _ in 0..3 {
        keeper.cycle(Mode::Apply, &stop).await.unwrap();
    }
    let events = bed.sim.rows("em_event");
    let revoked = bed
        .seeded
        .iter()
        .filter(|c| c.label == "revoked at provider")
        .count();
    let expired = bed
        .seeded
        .iter()
        .filter(|c| c.label == "refresh row expired")
        .count();
    let misconfigured_registries = 1;
    assert_eq!(
        events.len(),
        revoked + expired + misconfigured_registries,
        "{events:#?}"
    );
    for e in &events {
        assert_eq!(e["source"], "sn-oauth-keeper");
        assert_eq!(e["node"], "test-keeper");
        assert!(e["message_key"].starts_with("sn-oauth-keeper:"));
        assert_ne!(e["severity"], "0");
        assert!(!e["description"].is_empty());
    }
    let keys: std::collections::BTreeSet<&String> =
        events.iter().map(|e| &e["message_key"]).collect();
    assert_eq!(
        keys.len(),
        events.len(),
        "one alert per credential or registry"
    );

    // Someone re-authorises a revoked credential: one clearing event with the same key.
    let revoked_one = bed
        .seeded
        .iter()
        .find(|c| c.label == "revoked at provider" && c.provider == "entra")
        .unwrap();
    let spare = bed
        .seeded
        .iter()
        .find(|c| c.label == "fresh" && c.provider == "entra")
        .unwrap();
    bed.sim.set_encrypted_field(
        "oauth_credential",
        &revoked_one.refresh_sys_id,
        "token_received",
        &spare.refresh_token,
    );
    keeper.cycle(Mode::Apply, &stop).await.unwrap();
    keeper.cycle(Mode::Apply, &stop).await.unwrap();
    let after = bed.sim.rows("em_event");
    assert_eq!(after.len(), events.len() + 1);
    let clear = after
        .iter()
        .find(|e| e["severity"] == "0")
        .expect("a clearing event");
    assert_eq!(clear["resource"], revoked_one.refresh_sys_id);
    assert!(keys.contains(&clear["message_key"]));
}
