//! Parking, recovery, and other writers of the same credential.

use crate::support::Bed;
use sn_oauth_keeper::domain::classify::FailureClass;
use sn_oauth_keeper::domain::report::{Outcome, OutcomeKind};
use sn_oauth_keeper::engine::Mode;
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, Fault, FaultTarget, ProviderKind, RegistrySpec, Simulator, Target,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_configuration_error_parks_the_registry_once_and_a_fix_unparks_it() {
    let mut estate = Estate::empty(91).with_user_time_zone("UTC");
    let spec = RegistrySpec::new("Legacy", ProviderKind::EntraLike)
        .provider_id("legacy")
        .wrong_stored_secret("wrong-secret-value");
    let reg = estate.add_registry(spec);
    let good_secret = estate.registries()[0].client_secret.clone();
    for i in 0..3 {
        estate.add_credential(CredentialSpec::new(&reg, format!("c{i}")).access_missing());
    }
    let bed = Bed::start(estate).await;
    let mut settings = bed.settings();
    settings.refresh.concurrency = 1;
    let keeper = bed.keeper_with(settings);
    let stop = CancellationToken::new();
    let first = keeper.cycle(Mode::Apply, &stop).await.unwrap();
    assert_eq!(
        first.count(OutcomeKind::Failed),
        1,
        "one credential finds out"
    );
    assert_eq!(
        first.count(OutcomeKind::Blocked),
        2,
        "the others are not sent"
    );
    assert_eq!(bed.sim.token_requests("legacy"), 1);
    let second = keeper.cycle(Mode::Apply, &stop).await.unwrap();
    assert_eq!(second.count(OutcomeKind::Blocked), 3);
    assert_eq!(
        bed.sim.token_requests("legacy"),
        1,
        "a parked registry is not asked again"
    );
    // The admin fixes the secret in the Application Registry.
    let reg_id = bed
        .sim
        .rows("oauth_entity")
        .into_iter()
        .find(|r| r["name"] == "Legacy")
        .unwrap()["sys_id"]
        .clone();
    bed.sim
        .set_encrypted_field("oauth_entity", &reg_id, "client_secret", &good_secret);
    let third = keeper.cycle(Mode::Apply, &stop).await.unwrap();
    assert_eq!(
        third.count(OutcomeKind::Refreshed),
        3,
        "{:?}",
        third
            .credentials
            .iter()
            .map(|c| &c.outcome)
            .collect::<Vec<_>>()
    );
}

/// Waits until the simulator has received a token request (held there by a delay fault), so a
/// test can act as another writer while the keeper's request is on its way.
async fn token_request_in_flight(sim: &Simulator) {
    for _ in 0..500 {
        if sim
            .requests()
            .iter()
            .any(|r| matches!(r.target, Target::Provider(_)))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no token request reached the simulator");
}

#[tokio::test]
async fn an_invalid_grant_rereads_the_token_before_parking() {
    // Someone re-authorises while the keeper's request with the old token is on its way.
    let mut estate = Estate::empty(92).with_user_time_zone("UTC");
    let reg = estate
        .add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("entra"));
    let due = estate.add_credential(CredentialSpec::new(&reg, "due").access_missing());
    let spare = estate.add_credential(CredentialSpec::new(&reg, "spare"));
    let bed = Bed::start(estate).await;
    bed.sim.inject(
        Fault::delay(
            FaultTarget::Provider("entra".into()),
            Duration::from_secs(2),
        )
        .times(1),
    );
    let keeper = bed.keeper_with(bed.settings());
    let sim = bed.sim.clone();
    let (old, new, row) = (
        due.refresh_token.clone(),
        spare.refresh_token.clone(),
        due.refresh_sys_id.clone(),
    );
    let other_writer = tokio::spawn(async move {
        token_request_in_flight(&sim).await;
        sim.set_encrypted_field("oauth_credential", &row, "token_received", &new);
        sim.revoke_refresh_token("entra", &old);
    });
    let report = keeper
        .cycle(Mode::Apply, &CancellationToken::new())
        .await
        .unwrap();
    other_writer.await.unwrap();
    let o = &report
        .credentials
        .iter()
        .find(|c| c.sys_id == due.refresh_sys_id)
        .unwrap()
        .outcome;
    assert!(matches!(o, Outcome::Refreshed { .. }), "{o:?}");
    assert_eq!(bed.sim.token_requests("entra"), 2);
}

#[tokio::test]
async fn a_parked_credential_recovers_by_itself_after_reauthorisation() {
    let mut estate = Estate::empty(93).with_user_time_zone("UTC");
    let reg = estate.add_registry(
        RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
    );
    let dead = estate.add_credential(CredentialSpec::new(&reg, "dead").access_missing().revoked());
    let spare = estate.add_credential(CredentialSpec::new(&reg, "spare"));
    let bed = Bed::start(estate).await;
    let keeper = bed.keeper_with(bed.settings());
    let stop = CancellationToken::new();
    let first = keeper.cycle(Mode::Apply, &stop).await.unwrap();
    let find = |r: &sn_oauth_keeper::domain::report::CycleReport| {
        r.credentials
            .iter()
            .find(|c| c.sys_id == dead.refresh_sys_id)
            .unwrap()
            .outcome
            .clone()
    };
    assert!(matches!(
        find(&first),
        Outcome::Failed {
            class: FailureClass::NeedsReauth,
            ..
        }
    ));
    let asked = bed.sim.token_requests("okta");
    for _ in 0..3 {
        let again = keeper.cycle(Mode::Apply, &stop).await.unwrap();
        assert!(matches!(find(&again), Outcome::Blocked { .. }));
    }
    assert_eq!(bed.sim.token_requests("okta"), asked, "no hammering");
    // A person re-authorises: a new grant lands in the same row.
    bed.sim.set_encrypted_field(
        "oauth_credential",
        &dead.refresh_sys_id,
        "token_received",
        &spare.refresh_token,
    );
    let healed = keeper.cycle(Mode::Apply, &stop).await.unwrap();
    assert!(
        matches!(find(&healed), Outcome::Refreshed { .. }),
        "{:?}",
        find(&healed)
    );
}

async fn concurrent_writer(change_token: bool) {
    let mut estate = Estate::empty(94).with_user_time_zone("UTC");
    let reg = estate
        .add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("entra"));
    let c = estate.add_credential(CredentialSpec::new(&reg, "shared").access_missing());
    let other = estate.add_credential(CredentialSpec::new(&reg, "other"));
    let bed = Bed::start(estate).await;
    bed.sim.inject(
        Fault::delay(
            FaultTarget::Provider("entra".into()),
            Duration::from_secs(2),
        )
        .times(1),
    );
    let keeper = bed.keeper_with(bed.settings());
    let sim = bed.sim.clone();
    let (row, theirs) = (c.refresh_sys_id.clone(), other.refresh_token.clone());
    let writer = tokio::spawn(async move {
        token_request_in_flight(&sim).await;
        if change_token {
            // A re-authorisation stores another token.
            sim.set_encrypted_field("oauth_credential", &row, "token_received", &theirs);
        } else {
            // Someone edits another field only.
            sim.set_row_field("oauth_credential", &row, "scopes", "changed by an admin");
        }
    });
    let report = keeper
        .cycle(Mode::Apply, &CancellationToken::new())
        .await
        .unwrap();
    writer.await.unwrap();
    assert!(matches!(
        report
            .credentials
            .iter()
            .find(|r| r.sys_id == c.refresh_sys_id)
            .unwrap()
            .outcome,
        Outcome::Refreshed { .. }
    ));
    let stored = bed
        .sim
        .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
        .unwrap();
    if change_token {
        assert_eq!(
            stored, other.refresh_token,
            "the other writer's newer token is kept"
        );
    } else {
        assert_ne!(stored, c.refresh_token, "the rotated token is stored");
    }
    assert!(bed.sim.provider_valid("entra", &stored));
}

#[tokio::test]
async fn another_writers_new_token_is_not_overwritten() {
    concurrent_writer(true).await;
}

#[tokio::test]
async fn another_writers_unrelated_edit_does_not_stop_the_rotation_from_landing() {
    concurrent_writer(false).await;
}
