//! The refresh transaction as a stateful property: random instance faults (errors, throttling,
//! refused connections, answers lost after the instance processed the write, cut bodies, HTML
//! pages, writes whose `token_received` a business rule throws away while the instance answers
//! 200) and a crash after any transition of any credential, step after step, each step a new
//! keeper on the same journal — replayed against the provider's own books.
//!
//! Invariants after every step: every refresh token the (strict, rotating, reuse-detecting)
//! provider still accepts is stored in ServiceNow or sealed in the journal, and no refresh
//! token was ever presented to the provider twice. After a last, fault-free step: the journal
//! is empty and every credential's refresh row holds its family's live token.

use crate::support::Bed;
use proptest::prelude::*;
use secrecy::ExposeSecret;
use sn_oauth_keeper::config::Settings;
use sn_oauth_keeper::engine::{Keeper, Mode};
use sn_oauth_keeper::journal::{Journal, JournalError};
use sn_oauth_keeper::servicenow::RetryPolicy;
use sn_oauth_keeper::transaction::Transition;
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, Fault, FaultTarget, ProviderKind, RegistrySpec, SeededCredential,
    Target,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CREDENTIALS: usize = 3;

/// One misbehaviour of the instance's Table API.
#[derive(Debug, Clone, Copy)]
enum InstanceFault {
    /// 503 with ServiceNow's envelope.
    Unavailable,
    /// 429 with `Retry-After: 0`.
    Throttled,
    /// The connection is refused; nothing processed.
    Refused,
    /// Processed, then the answer is lost.
    LostAnswer,
    /// Processed, then half the body.
    Truncated,
    /// A maintenance page.
    Html,
    /// Processed without its `token_received` (a data policy or business rule throws it away),
    /// answered 200.
    DiscardsToken,
}

/// One process run: faults for its cycle, and perhaps a crash.
#[derive(Debug, Clone)]
struct Step {
    faults: Vec<(InstanceFault, &'static str, usize)>,
    crash: Option<(Transition, usize)>,
}

fn step() -> impl Strategy<Value = Step> {
    let fault = (
        prop_oneof![
            Just(InstanceFault::Unavailable),
            Just(InstanceFault::Throttled),
            Just(InstanceFault::Refused),
            Just(InstanceFault::LostAnswer),
            Just(InstanceFault::Truncated),
            Just(InstanceFault::Html),
            Just(InstanceFault::DiscardsToken),
        ],
        prop_oneof![Just("PATCH"), Just("POST"), Just("GET")],
        1usize..3,
    );
    (
        proptest::collection::vec(fault, 0..3),
        proptest::option::weighted(
            0.7,
            (
                proptest::sample::select(Transition::ALL.to_vec()),
                0..CREDENTIALS,
            ),
        ),
    )
        .prop_map(|(faults, crash)| Step { faults, crash })
}

fn sim_fault(kind: InstanceFault, method: &str, times: usize) -> Fault {
    let target = FaultTarget::TableApi;
    let fault = match kind {
        InstanceFault::Unavailable => Fault::status(target, 503),
        InstanceFault::Throttled => Fault::retry_after(target, 429, 0),
        InstanceFault::Refused => Fault::drop_connection(target),
        InstanceFault::LostAnswer => Fault::drop_after_processing(target),
        InstanceFault::Truncated => {
            Fault::new(target, sn_oauth_keeper_sim::FaultAction::TruncatedJson)
        }
        InstanceFault::Html => Fault::new(target, sn_oauth_keeper_sim::FaultAction::HtmlPage),
        InstanceFault::DiscardsToken => Fault::discard_fields(target, &["token_received"]),
    };
    fault.method(method).times(times)
}

struct World {
    bed: Bed,
    seeded: Vec<SeededCredential>,
}

impl World {
    async fn start(seed: u64) -> World {
        let mut estate = Estate::empty(seed).with_user_time_zone("UTC");
        let reg = estate.add_registry(
            RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
        );
        let mut seeded = Vec::new();
        for i in 0..CREDENTIALS {
            let spec = CredentialSpec::new(&reg, format!("c{i}"));
            let spec = if i == 0 {
                spec.access_missing()
            } else {
                spec.access_expires_in(jiff::SignedDuration::from_mins(2))
            };
            seeded.push(estate.add_credential(spec));
        }
        World {
            bed: Bed::start(estate).await,
            seeded,
        }
    }

    fn settings(&self) -> Settings {
        let mut settings = self.bed.settings();
        // Every credential is due every cycle: each step rotates every token again.
        settings.refresh.lead_time = Duration::from_secs(86_400);
        settings.refresh.concurrency = 1;
        settings
    }

    /// A new process: the journal reopened (once the crashed keeper's last handles are gone).
    async fn journal(&self, settings: &Settings) -> Journal {
        for _ in 0..200 {
            match Journal::open(&settings.state.dir, Some(&self.bed.key)) {
                Err(JournalError::Locked(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
                other => return other.expect("journal opens"),
            }
        }
        panic!("the crashed keeper never let go of its journal");
    }

    /// Runs one step; returns whether the keeper crashed.
    async fn run(&self, step: &Step) -> bool {
        self.bed.sim.clear_faults();
        for (kind, method, times) in &step.faults {
            self.bed.sim.inject(sim_fault(*kind, method, *times));
        }
        let settings = self.settings();
        let journal = Arc::new(self.journal(&settings).await);
        let crashed = Arc::new(AtomicBool::new(false));
        let dead = Arc::new(tokio::sync::Notify::new());
        let mut keeper = Keeper::new(Arc::new(settings), Some(journal))
            .unwrap()
            .with_instance_retry(RetryPolicy {
                attempts: 3,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            });
        if let Some((transition, index)) = step.crash {
            let credential = self.seeded[index].refresh_sys_id.clone();
            let (crashed, dead) = (Arc::clone(&crashed), Arc::clone(&dead));
            keeper = keeper.with_crash_point(Arc::new(move |id, t| {
                let dies =
                    id == credential && t == transition && !crashed.swap(true, Ordering::SeqCst);
                if dies {
                    dead.notify_one();
                }
                dies
            }));
        }
        let stop = CancellationToken::new();
        tokio::select! {
            // A cycle may fail as a whole (discovery refused): that is an outcome, not a bug.
            _ = keeper.cycle(Mode::Apply, &stop) => {}
            () = dead.notified() => {}
        }
        crashed.load(Ordering::SeqCst)
    }

    /// Every refresh token the provider was sent, in order.
    fn presented(&self) -> Vec<String> {
        self.bed
            .sim
            .requests()
            .into_iter()
            .filter(|r| matches!(r.target, Target::Provider(_)))
            .filter_map(|r| {
                url::form_urlencoded::parse(r.body.as_bytes())
                    .find(|(k, _)| k == "refresh_token")
                    .map(|(_, v)| v.into_owned())
            })
            .collect()
    }

    async fn check(&self, context: &str) {
        let presented = self.presented();
        let unique: HashSet<&String> = presented.iter().collect();
        assert_eq!(
            unique.len(),
            presented.len(),
            "{context}: a refresh token was presented to the provider twice"
        );
        let settings = self.settings();
        let journal = self.journal(&settings).await;
        let journaled: Vec<(String, String)> = journal
            .pending()
            .expect("the journal opens")
            .iter()
            .map(|record| record.as_ref().expect("every record opens"))
            .filter_map(|o| {
                let rotated = o.delivery().rotated.as_ref()?;
                Some((
                    o.credential().to_string(),
                    rotated.token.expose_secret().to_string(),
                ))
            })
            .collect();
        for c in &self.seeded {
            let stored = self
                .bed
                .sim
                .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
                .unwrap_or_default();
            let in_servicenow = self.bed.sim.provider_valid(&c.provider, &stored);
            let in_journal = journaled.iter().any(|(id, token)| {
                *id == c.refresh_sys_id && self.bed.sim.provider_valid(&c.provider, token)
            });
            assert!(
                in_servicenow || in_journal,
                "{context}: {}'s live refresh token is neither in ServiceNow nor in the journal",
                c.name
            );
        }
    }
}

fn run_case(seed: u64, steps: &[Step]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let world = World::start(seed).await;
        for (i, step) in steps.iter().enumerate() {
            let crashed = world.run(step).await;
            world
                .check(&format!("after step {i} {step:?} (crashed: {crashed})"))
                .await;
        }
        // The cause goes away: everything is delivered and nothing stays behind.
        let clean = Step {
            faults: Vec::new(),
            crash: None,
        };
        world.run(&clean).await;
        world.check("after the clean step").await;
        let journal = world.journal(&world.settings()).await;
        assert_eq!(journal.pending_count().unwrap(), 0, "the journal drained");
        for c in &world.seeded {
            let stored = world
                .bed
                .sim
                .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
                .unwrap_or_default();
            assert!(
                world.bed.sim.provider_valid(&c.provider, &stored),
                "{}: ServiceNow holds the live token",
                c.name
            );
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn every_live_token_is_in_servicenow_or_the_journal_and_none_is_sent_twice(
        seed in 0u64..1_000,
        steps in proptest::collection::vec(step(), 1..5),
    ) {
        run_case(seed, &steps);
    }
}

/// Each transition crashed at once, deterministically (the property test samples them).
#[test]
fn a_crash_after_every_transition_loses_nothing() {
    for (i, transition) in Transition::ALL.iter().enumerate() {
        let steps = [
            Step {
                faults: Vec::new(),
                crash: Some((*transition, i % CREDENTIALS)),
            },
            Step {
                faults: vec![(InstanceFault::LostAnswer, "POST", 1)],
                crash: Some((*transition, 0)),
            },
        ];
        run_case(500 + i as u64, &steps);
    }
}
