//! Whole cycles driven through time the test controls: the keeper, its journal and its
//! adapters read a `ManualClock`, so a credential falls due, a parked registry's hourly probe
//! comes round and a journal record ages without any waiting.

use crate::support::Bed;
use sn_oauth_keeper::clock::{Clock, ManualClock, SharedClock, SystemClock};
use sn_oauth_keeper::domain::report::OutcomeKind;
use sn_oauth_keeper::engine::{Keeper, Mode};
use sn_oauth_keeper::journal::Journal;
use sn_oauth_keeper_sim::{CredentialSpec, Estate, ProviderKind, RegistrySpec};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const HOUR: Duration = Duration::from_secs(3_600);

fn keeper_on(
    bed: &Bed,
    clock: &Arc<ManualClock>,
    settings: sn_oauth_keeper::config::Settings,
) -> Keeper {
    let shared: SharedClock = clock.clone();
    let journal = Journal::open(&settings.state.dir, Some(&bed.key))
        .unwrap()
        .with_clock(Arc::clone(&shared));
    Keeper::new(Arc::new(settings), Some(Arc::new(journal)))
        .unwrap()
        .with_clock(shared)
}

#[tokio::test]
async fn credentials_fall_due_as_the_clock_moves() {
    let mut estate = Estate::empty(301).with_user_time_zone("UTC");
    let reg = estate.add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike));
    for i in 0..3 {
        estate.add_credential(
            CredentialSpec::new(&reg, format!("mailbox {i}"))
                .access_expires_in(jiff::SignedDuration::from_hours(2)),
        );
    }
    let bed = Bed::start(estate).await;
    let clock = ManualClock::new(SystemClock.now());
    let keeper = keeper_on(&bed, &clock, bed.settings());
    let stop = CancellationToken::new();

    let fresh = keeper.cycle(Mode::Apply, &stop).await.unwrap();
    assert_eq!(fresh.count(OutcomeKind::Skipped), 3, "{fresh:?}");
    assert!(bed.token_requests().is_empty());

    // 1 h 55 min later the access tokens expire within the 10-minute lead time.
    clock.advance(HOUR + Duration::from_secs(55 * 60));
    let due = keeper.cycle(Mode::Apply, &stop).await.unwrap();
    assert_eq!(due.count(OutcomeKind::Refreshed), 3, "{due:?}");
    assert_eq!(bed.token_requests().len(), 3);
    for line in &due.credentials {
        let expires = line.access_expires.expect("written");
        // Entra-like lifetimes are 60–90 minutes: counted from the system clock the expiry
        // would already lie 25 minutes or more behind the keeper's.
        assert!(
            expires > clock.now() + jiff::SignedDuration::from_mins(59),
            "the new expiry counts from the keeper's clock: {expires} vs {}",
            clock.now()
        );
    }
    assert_eq!(due.started, clock.now(), "the report is dated by the clock");
}

#[tokio::test]
async fn a_parked_registry_is_probed_after_an_hour_of_keeper_time() {
    let mut estate = Estate::empty(302).with_user_time_zone("UTC");
    let reg = estate.add_registry(
        RegistrySpec::new("Legacy", ProviderKind::EntraLike)
            .provider_id("legacy")
            .wrong_stored_secret("wrong-secret-value"),
    );
    for i in 0..2 {
        estate.add_credential(CredentialSpec::new(&reg, format!("c{i}")).access_missing());
    }
    let bed = Bed::start(estate).await;
    let clock = ManualClock::new(SystemClock.now());
    let mut settings = bed.settings();
    settings.refresh.concurrency = 1;
    let keeper = keeper_on(&bed, &clock, settings);
    let stop = CancellationToken::new();

    let first = keeper.cycle(Mode::Apply, &stop).await.unwrap();
    assert_eq!(first.count(OutcomeKind::Failed), 1);
    assert_eq!(bed.sim.token_requests("legacy"), 1);

    clock.advance(Duration::from_secs(59 * 60));
    keeper.cycle(Mode::Apply, &stop).await.unwrap();
    assert_eq!(
        bed.sim.token_requests("legacy"),
        1,
        "parked: not asked again"
    );

    clock.advance(Duration::from_secs(60));
    let probe = keeper.cycle(Mode::Apply, &stop).await.unwrap();
    assert_eq!(
        bed.sim.token_requests("legacy"),
        2,
        "one probe after an hour"
    );
    assert_eq!(probe.count(OutcomeKind::Failed), 1);
    assert_eq!(probe.count(OutcomeKind::Blocked), 1);
}
