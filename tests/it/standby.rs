//! Two keepers on one instance, as the two-replica deployment runs them (a journal each, the
//! same config otherwise): the one that holds the lease refreshes, the other is a ready standby
//! that refreshes nothing, and takes over when the holder stops — with no refresh token ever
//! presented twice at a provider that revokes the whole grant on reuse.

use crate::support::{Bed, Running};
use serde_json::Value;
use sn_oauth_keeper_sim::{CredentialSpec, Estate, ProviderKind, RegistrySpec};
use std::collections::HashSet;

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of an unlabelled sample in a `/metrics` scrape.
async fn sample(daemon: &Running, name: &str) -> String {
    let (_, metrics) = get(&format!("{}/metrics", daemon.base)).await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        .to_string()
}

#[tokio::test]
async fn a_standby_refreshes_nothing_until_the_holder_stops_then_takes_over() {
    let mut estate = Estate::empty(73).with_user_time_zone("UTC");
    let okta = estate.add_registry(
        RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
    );
    for name in ["Directory sync", "Group import", "SCIM bridge"] {
        estate.add_credential(CredentialSpec::new(&okta, name));
    }
    let bed = Bed::start(estate).await;
    // Every credential is due every cycle (a lead time longer than an access token lives): a
    // standby that refreshed would present tokens the holder has spent.
    let config = "[server]\nlisten = \"127.0.0.1:0\"\n[refresh]\ninterval = \"1s\"\nlead_time = \"2h\"\ntimeout = \"5s\"\n[lease]\nttl = \"10s\"\n";
    let password = bed.sim.password();
    let active = Running::start(&bed, &bed.config_file_named("active", config), password).await;
    let acquired = active.wait_for("lease.acquired").await;
    let standby = Running::start(&bed, &bed.config_file_named("standby", config), password).await;
    let refusal = standby.wait_for("lease.standby").await;
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap()
            .contains(acquired["holder"].as_str().unwrap()),
        "the standby names the holder: {refusal}"
    );
    standby.wait_for("cycle.finished").await;
    // The holder keeps refreshing while the standby cycles beside it.
    let seen = active.count("cycle.finished");
    active.wait_for_nth("cycle.finished", seen + 2).await;

    let (status, ready) = get(&format!("{}/readyz", standby.base)).await;
    assert_eq!(status, 200, "a standby is ready: {ready}");
    assert_eq!(sample(&standby, "sn_oauth_keeper_lease_held").await, "0");
    assert_eq!(sample(&active, "sn_oauth_keeper_lease_held").await, "1");
    assert_eq!(
        standby.count("credential.refreshed"),
        0,
        "{}",
        standby.log()
    );
    assert!(
        active.count("credential.refreshed") >= 6,
        "{}",
        active.log()
    );

    active.signal("TERM");
    let (code, log) = active.exit_code().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("\"lease.released\""), "{log}");

    let taken = standby.wait_for("lease.acquired").await;
    assert_eq!(
        taken["fence"].as_u64(),
        acquired["fence"].as_u64().map(|f| f + 1),
        "a new holder: the fence moves on"
    );
    standby.wait_for("credential.refreshed").await;
    // The lease's metrics are observed when a cycle ends, after its refreshes are logged.
    let finished = standby.count("cycle.finished");
    standby.wait_for_nth("cycle.finished", finished + 1).await;
    assert_eq!(
        sample(&standby, "sn_oauth_keeper_lease_takeovers_total").await,
        "1"
    );

    let presented = bed.sim.presented_refresh_tokens("okta");
    let unique: HashSet<&String> = presented.iter().collect();
    assert_eq!(
        unique.len(),
        presented.len(),
        "a refresh token presented twice"
    );
    assert_eq!(bed.sim.revoked_grants("okta"), 0);
    let events: Vec<Value> = standby.events();
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "credential.needs_reauth"),
        "{}",
        standby.log()
    );
}
