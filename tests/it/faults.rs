//! The fault suite: the instance and the providers misbehave in every way the field has seen;
//! nothing is lost and the run goes on.

use crate::support::Bed;
use sn_oauth_keeper::domain::classify::FailureClass;
use sn_oauth_keeper::domain::report::{CycleReport, Outcome, OutcomeKind};
use sn_oauth_keeper::engine::{Keeper, Mode};
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, ExpiresInFormat, Fault, FaultTarget, ProviderKind, RegistrySpec,
    SeededCredential,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Two registries: a strict rotating one and an Entra-like one, two due credentials each.
fn estate(seed: u64) -> (Estate, Vec<SeededCredential>) {
    let mut estate = Estate::empty(seed).with_user_time_zone("UTC");
    let okta = estate.add_registry(
        RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
    );
    let entra = estate.add_registry(
        RegistrySpec::new("Graph", ProviderKind::EntraLike)
            .provider_id("entra")
            .expires_in_format(ExpiresInFormat::String),
    );
    let seeded = vec![
        estate.add_credential(CredentialSpec::new(&okta, "okta missing").access_missing()),
        estate.add_credential(
            CredentialSpec::new(&okta, "okta stale")
                .access_expires_in(jiff::SignedDuration::from_mins(2)),
        ),
        estate.add_credential(CredentialSpec::new(&entra, "entra missing").access_missing()),
        estate.add_credential(
            CredentialSpec::new(&entra, "entra expired")
                .access_expires_in(jiff::SignedDuration::from_mins(-5)),
        ),
    ];
    (estate, seeded)
}

fn outcome<'a>(report: &'a CycleReport, c: &SeededCredential) -> &'a Outcome {
    &report
        .credentials
        .iter()
        .find(|r| r.sys_id == c.refresh_sys_id)
        .expect("in report")
        .outcome
}

/// Nothing lost: after faults clear, one more cycle leaves every credential with a working
/// refresh token in ServiceNow and exactly one fresh access row.
async fn nothing_lost(bed: &Bed, seeded: &[SeededCredential]) {
    bed.sim.clear_faults();
    let report = bed.cycle().await;
    for c in seeded {
        let o = outcome(&report, c);
        assert!(
            matches!(
                o,
                Outcome::Skipped | Outcome::Refreshed { .. } | Outcome::Redelivered
            ),
            "{}: {o:?}",
            c.name
        );
        let stored = bed
            .sim
            .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
            .unwrap();
        assert!(
            bed.sim.provider_valid(&c.provider, &stored),
            "{}: the refresh token in ServiceNow works",
            c.name
        );
        let access: Vec<_> = bed
            .sim
            .rows("oauth_credential")
            .into_iter()
            .filter(|r| {
                r["type"] == "access_token" && r["oauth_requestor_profile"] == c.requestor_profile
            })
            .collect();
        assert_eq!(access.len(), 1, "{}: one access row", c.name);
    }
    let second = bed.cycle().await;
    assert_eq!(
        second.count(OutcomeKind::Skipped),
        seeded.len(),
        "all fresh afterwards"
    );
}

async fn with_instance_fault(fault: Fault, seed: u64) {
    let (estate, seeded) = estate(seed);
    let bed = Bed::start(estate).await;
    bed.sim.inject(fault);
    let mut settings = bed.settings();
    settings.instance.timeout = Duration::from_secs(2);
    let keeper = bed.keeper_with(settings);
    let result = keeper.cycle(Mode::Apply, &CancellationToken::new()).await;
    drop(keeper);
    if let Ok(report) = &result {
        assert_eq!(report.credentials.len(), seeded.len());
    }
    nothing_lost(&bed, &seeded).await;
}

#[tokio::test]
async fn instance_429_with_retry_after() {
    with_instance_fault(
        Fault::retry_after(FaultTarget::TableApi, 429, 1).times(2),
        71,
    )
    .await;
}

#[tokio::test]
async fn instance_503_on_writes() {
    with_instance_fault(
        Fault::status(FaultTarget::TableApi, 503)
            .method("PATCH")
            .times(3),
        72,
    )
    .await;
}

#[tokio::test]
async fn instance_html_page() {
    with_instance_fault(Fault::html_page(FaultTarget::TableApi).times(1), 73).await;
}

#[tokio::test]
async fn instance_html_page_on_every_write() {
    with_instance_fault(Fault::html_page(FaultTarget::TableApi).method("PATCH"), 74).await;
}

#[tokio::test]
async fn instance_truncated_json() {
    with_instance_fault(Fault::truncated_json(FaultTarget::TableApi).times(2), 75).await;
}

#[tokio::test]
async fn instance_transaction_cancelled() {
    with_instance_fault(
        Fault::transaction_cancelled(FaultTarget::TableApi)
            .method("GET")
            .times(1),
        76,
    )
    .await;
}

#[tokio::test]
async fn instance_timeouts() {
    with_instance_fault(
        Fault::delay(FaultTarget::TableApi, Duration::from_secs(4)).times(2),
        77,
    )
    .await;
}

#[tokio::test]
async fn instance_dropped_connections() {
    with_instance_fault(Fault::drop_connection(FaultTarget::TableApi).times(3), 78).await;
}

#[tokio::test]
async fn instance_drops_answers_to_writes() {
    with_instance_fault(
        Fault::drop_after_processing(FaultTarget::TableApi).method("POST"),
        79,
    )
    .await;
}

#[tokio::test]
async fn companion_failure_fails_the_due_credentials_not_the_run() {
    with_instance_fault(Fault::status(FaultTarget::Companion, 500), 80).await;
}

async fn with_provider_fault(
    provider: &str,
    fault: FaultAction,
    expect: Option<FailureClass>,
    seed: u64,
) {
    let (estate, seeded) = estate(seed);
    let bed = Bed::start(estate).await;
    bed.sim
        .inject(Fault::new(FaultTarget::Provider(provider.into()), fault));
    let mut settings = bed.settings();
    settings.refresh.timeout = Duration::from_secs(2);
    let report = bed.cycle_with(settings).await;
    for c in &seeded {
        let o = outcome(&report, c);
        if c.provider == provider {
            match expect {
                Some(class) => assert!(
                    matches!(o, Outcome::Failed { class: got, .. } if *got == class),
                    "{}: {o:?}",
                    c.name
                ),
                None => assert!(matches!(o, Outcome::Refreshed { .. }), "{}: {o:?}", c.name),
            }
        } else {
            assert!(
                matches!(o, Outcome::Refreshed { .. }),
                "the other provider's {} goes on: {o:?}",
                c.name
            );
        }
    }
    if provider == "entra" {
        nothing_lost(&bed, &seeded).await;
    }
}

use sn_oauth_keeper_sim::{FaultAction, Target};

#[tokio::test]
async fn provider_429_is_retried_after_its_retry_after() {
    let (estate, seeded) = estate(81);
    let bed = Bed::start(estate).await;
    bed.sim
        .inject(Fault::retry_after(FaultTarget::Provider("okta".into()), 429, 1).times(2));
    let report = bed.cycle().await;
    for c in &seeded {
        assert!(
            matches!(outcome(&report, c), Outcome::Refreshed { .. }),
            "{}",
            c.name
        );
    }
    // Each throttled request's retry came no sooner than its Retry-After (1 s), by the
    // simulator's own arrival stamps.
    let attempts: Vec<_> = bed
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.target == Target::Provider("okta".into()))
        .collect();
    let throttled = attempts.iter().filter(|r| r.status == 429).count();
    assert_eq!(throttled, 2);
    for (i, request) in attempts.iter().enumerate().filter(|(_, r)| r.status == 429) {
        let retry = attempts[i + 1..]
            .iter()
            .find(|r| r.body == request.body)
            .expect("the same request again");
        let waited = retry.at.duration_since(request.at);
        assert!(
            waited >= jiff::SignedDuration::from_secs(1),
            "retried {waited} after Retry-After: 1"
        );
    }
    nothing_lost(&bed, &seeded).await;
}

#[tokio::test]
async fn a_failing_provider_is_retried_with_bounded_full_jitter_backoff() {
    let (estate, seeded) = estate(84);
    let bed = Bed::start(estate).await;
    bed.sim
        .inject(Fault::status(FaultTarget::Provider("okta".into()), 503).times(2));
    let mut settings = bed.settings();
    settings.refresh.concurrency = 1;
    let report = bed.cycle_with(settings).await;
    for c in &seeded {
        assert!(
            matches!(outcome(&report, c), Outcome::Refreshed { .. }),
            "{}",
            c.name
        );
    }
    let attempts: Vec<_> = bed
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.target == Target::Provider("okta".into()))
        .collect();
    // The first request failed twice: its waits stay under the backoff ceilings (250 ms, then
    // 500 ms: full jitter draws in [0, ceiling]); a little slack for scheduling.
    let first = &attempts[0];
    let same: Vec<_> = attempts.iter().filter(|r| r.body == first.body).collect();
    assert_eq!(same.len(), 3, "two failures, then the answer");
    let ceilings = [250, 500];
    for (pair, ceiling) in same.windows(2).zip(ceilings) {
        let waited = pair[1].at.duration_since(pair[0].at);
        assert!(
            waited <= jiff::SignedDuration::from_millis(ceiling + 200),
            "waited {waited}, more than the {ceiling} ms ceiling"
        );
    }
    nothing_lost(&bed, &seeded).await;
}

#[tokio::test]
async fn provider_5xx_without_end_is_transient_and_keeps_the_token() {
    let (estate, seeded) = estate(82);
    let bed = Bed::start(estate).await;
    bed.sim
        .inject(Fault::status(FaultTarget::Provider("okta".into()), 503));
    let report = bed.cycle().await;
    for c in seeded.iter().filter(|c| c.provider == "okta") {
        assert!(
            matches!(
                outcome(&report, c),
                Outcome::Failed {
                    class: FailureClass::Transient,
                    ..
                }
            ),
            "{}",
            c.name
        );
        assert!(
            bed.sim.provider_valid("okta", &c.refresh_token),
            "a refused request consumed nothing"
        );
    }
    nothing_lost(&bed, &seeded).await;
}

#[tokio::test]
async fn provider_timeouts() {
    with_provider_fault(
        "entra",
        FaultAction::Delay(Duration::from_secs(4)),
        Some(FailureClass::Transient),
        83,
    )
    .await;
}

#[tokio::test]
async fn provider_garbage_bodies() {
    with_provider_fault(
        "entra",
        FaultAction::Garbage,
        Some(FailureClass::Transient),
        84,
    )
    .await;
}

#[tokio::test]
async fn provider_huge_bodies_are_capped() {
    let huge = format!("{{\"access_token\":\"{}\"}}", "x".repeat(5 * 1024 * 1024));
    with_provider_fault(
        "entra",
        FaultAction::Status {
            status: 200,
            body: huge,
            headers: vec![("Content-Type".into(), "application/json".into())],
        },
        Some(FailureClass::Transient),
        85,
    )
    .await;
}

#[tokio::test]
async fn provider_lost_answer_after_rotation_at_entra_is_recovered_by_the_retry() {
    with_provider_fault(
        "entra",
        FaultAction::DropAfterProcessing,
        Some(FailureClass::Transient),
        86,
    )
    .await;
}

#[tokio::test]
async fn a_lost_answer_at_a_strict_provider_is_reported_as_needing_reauthorisation() {
    // The provider rotated and revoked the old token; the answer never arrived. Retrying once
    // with the same token trips reuse detection: the family is gone and a person must act.
    let (estate, seeded) = estate(87);
    let bed = Bed::start(estate).await;
    bed.sim
        .inject(Fault::drop_after_processing(FaultTarget::Provider("okta".into())).times(1));
    let mut settings = bed.settings();
    settings.refresh.concurrency = 1;
    let report = bed.cycle_with(settings).await;
    let failed: Vec<_> = seeded
        .iter()
        .filter(|c| {
            matches!(
                outcome(&report, c),
                Outcome::Failed {
                    class: FailureClass::NeedsReauth,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "exactly the credential whose answer was lost"
    );
    let others = seeded
        .iter()
        .filter(|c| !matches!(outcome(&report, c), Outcome::Failed { .. }))
        .count();
    assert_eq!(others, 3, "the run went on");
}

#[tokio::test]
async fn a_dead_provider_cannot_stall_the_cycle() {
    // Every request to the strict provider answers 503: the retry budget bounds the attempts.
    let mut estate = Estate::empty(88).with_user_time_zone("UTC");
    let okta = estate.add_registry(
        RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
    );
    for i in 0..20 {
        estate.add_credential(CredentialSpec::new(&okta, format!("c{i}")).access_missing());
    }
    let bed = Bed::start(estate).await;
    bed.sim
        .inject(Fault::status(FaultTarget::Provider("okta".into()), 503));
    let report = bed.cycle().await;
    assert_eq!(report.count(OutcomeKind::Failed), 20);
    let asked = bed.sim.token_requests("okta");
    // 20 first attempts + at most the cycle budget (8 + 2 per due credential) of retries.
    assert!(asked <= 20 + 8 + 40, "{asked} token requests");
}

#[tokio::test]
async fn per_host_caps_hold_under_concurrency() {
    let mut estate = Estate::empty(89).with_user_time_zone("UTC");
    let entra = estate
        .add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("entra"));
    for i in 0..12 {
        estate.add_credential(CredentialSpec::new(&entra, format!("c{i}")).access_missing());
    }
    let bed = Bed::start(estate).await;
    bed.sim.inject(Fault::delay(
        FaultTarget::Provider("entra".into()),
        Duration::from_millis(300),
    ));
    let mut settings = bed.settings();
    settings.refresh.concurrency = 12;
    settings.refresh.per_host_concurrency = 2;
    let keeper: Keeper = bed.keeper_with(settings);
    let sim = bed.sim.clone();
    let watcher = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..200 {
            let in_flight = sim
                .requests()
                .iter()
                .filter(|r| {
                    matches!(r.target, sn_oauth_keeper_sim::Target::Provider(_)) && r.status == 0
                })
                .count();
            peak = peak.max(in_flight);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak
    });
    let report = keeper
        .cycle(Mode::Apply, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.count(OutcomeKind::Refreshed), 12);
    let peak = watcher.await.unwrap();
    assert!(
        peak <= 2,
        "at most 2 requests in flight to one host, saw {peak}"
    );
    assert!(peak >= 1);
}
