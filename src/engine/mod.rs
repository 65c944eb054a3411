//! The driver of a cycle: fetch → plan → run each credential's transaction with I/O → settle.
//! What to do is decided by the pure core ([`crate::domain::cycle`]); how a refresh moves
//! through its states is fixed by their types ([`crate::transaction`]); this module only does
//! the I/O in between, and logs.
//!
//! - `refresh`: the refreshes of a cycle: secrets in companion batches, at most
//!   `concurrency` in flight, each credential from [`Intent`](crate::transaction::Intent) to
//!   [`Obtained`](crate::transaction::Obtained) (token request with its retry rules).
//! - `deliver`: from `Obtained` to `Released`: writes, verification, the journal's release;
//!   and the re-delivery of answers an earlier run left in the journal.
//! - `routes`: what is said about registries' routes ([`crate::domain::endpoint`]): a moved
//!   pinned `token_url`, a registry held back — once per change.

mod deliver;
mod lease;
mod refresh;
mod routes;

use crate::clock::{SharedClock, SystemClock};
use crate::config::Settings;
use crate::domain::classify::FailureClass;
use crate::domain::credential::{Credential, pair};
use crate::domain::cycle::{CycleFacts, Knowledge, Notice, plan, settle};
use crate::domain::endpoint::Routes;
use crate::domain::park::{Parking, RegistryPark};
use crate::domain::plan::{Action, State};
use crate::domain::report::{CycleReport, OutcomeKind, Settled};
use crate::events::{EventReporter, StateChange};
use crate::journal::{Journal, JournalError};
use crate::lease::LeaseKeeper;
use crate::oauth::TokenClient;
use crate::observe::Observer;
use crate::pacing::{HostLimits, cycle_budget};
use crate::servicenow::{Instance, RetryPolicy, SnError};
use crate::transaction::{CrashPoint, Transition};
use lease::LeaseTerms;
use secrecy::ExposeSecret;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

pub use crate::domain::cycle::Mode;

/// A failure that stops the whole cycle.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// The instance could not be read.
    #[error(transparent)]
    Instance(#[from] SnError),
    /// The journal failed (it fails closed: no refresh without it).
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl CycleError {
    /// Whether this means the instance is unusable for the account (exit code 3).
    pub fn instance_unusable(&self) -> bool {
        matches!(self, CycleError::Instance(e) if e.instance_unusable())
    }

    /// Why, in fixed words per kind (never text from the instance): what `/readyz` says.
    pub fn reason(&self) -> &'static str {
        match self {
            CycleError::Instance(e) => e.reason(),
            CycleError::Journal(_) => "the journal failed (the log names the error)",
        }
    }
}

/// What one cycle knows beyond the planner's verdicts, shared by its refresh tasks.
#[derive(Debug, Default)]
struct CycleContext {
    /// Where each registry's token requests go (the one place the token URL is chosen).
    routes: Routes,
    /// Credentials whose last refresh was sent and never concluded (the process died).
    interrupted: HashMap<String, jiff::Timestamp>,
    /// Registries parked for a configuration error (grows and shrinks during the cycle).
    parking: Mutex<Parking>,
    /// Each credential's failure class before this cycle: a state change is a class that
    /// differs from it.
    previous: HashMap<String, FailureClass>,
    /// The journal failed to commit this cycle: no further refresh starts.
    journal_failed: std::sync::atomic::AtomicBool,
}

impl CycleContext {
    fn parking(&self) -> std::sync::MutexGuard<'_, Parking> {
        // Parking holds plain data: still consistent after a panic elsewhere.
        self.parking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The refresher: an instance client, a token client and (to apply) the journal.
#[derive(Clone)]
pub struct Keeper {
    settings: Arc<Settings>,
    instance: Instance,
    tokens: TokenClient,
    journal: Option<Arc<Journal>>,
    hosts: Arc<HostLimits>,
    /// Credentials being refreshed right now: single flight, even if two cycles overlapped.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// Told how the refreshes of a cycle progress (a terminal progress bar).
    observer: Observer,
    /// Where state changes are reported on the instance (`[report]`).
    events: Option<EventReporter>,
    clock: SharedClock,
    /// Fault-injection tests stop the keeper dead at a transition (see [`CrashPoint`]).
    crash: Option<CrashPoint>,
    /// The instance-wide lease, for a keeper that writes (one with a journal).
    lease: Option<Arc<LeaseKeeper>>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Keeper {
    /// Builds a keeper on the system clock. `journal` is required to apply, optional for dry
    /// runs and status (then read-only, for outcomes).
    pub fn new(settings: Arc<Settings>, journal: Option<Arc<Journal>>) -> Result<Keeper, SnError> {
        let instance = Instance::new(&settings.instance, RetryPolicy::default())?;
        let loopback = instance
            .base()
            .host_str()
            .is_some_and(crate::config::is_loopback_host);
        let tokens = TokenClient::new(settings.refresh.timeout, loopback)
            .map_err(|e| SnError::Unreachable(crate::wire::describe_transport(&e)))?;
        let mut keeper = Keeper {
            hosts: Arc::new(HostLimits::new(settings.refresh.per_host_concurrency)),
            settings,
            instance,
            tokens,
            journal,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            observer: Observer::none(),
            events: None,
            clock: SystemClock::shared(),
            crash: None,
            lease: None,
        };
        keeper.rewire();
        Ok(keeper)
    }

    /// Reports every HTTP exchange (instance and token endpoints) and the progress of each
    /// cycle's refreshes to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Keeper {
        self.instance.set_observer(observer.clone());
        self.tokens.set_observer(observer.clone());
        self.observer = observer;
        self.rewire();
        self
    }

    /// Takes every time reading (cycle timestamps, the planner's `now`, token requests, retry
    /// waits given as dates, events) from `clock`. The journal has its own
    /// ([`Journal::with_clock`]).
    pub fn with_clock(mut self, clock: SharedClock) -> Keeper {
        self.instance.set_clock(Arc::clone(&clock));
        self.tokens.set_clock(Arc::clone(&clock));
        self.clock = clock;
        self.rewire();
        self
    }

    /// Records every exchange with the instance into `recorder` (`once --record DIR`).
    pub fn with_recorder(
        mut self,
        recorder: Arc<crate::servicenow::transcript::Recorder>,
    ) -> Keeper {
        self.instance.set_recorder(recorder);
        self.rewire();
        self
    }

    /// Retries calls to the instance as `retry` says (the default waits up to 20 s between
    /// attempts; fault-injection tests and benchmarks want milliseconds).
    pub fn with_instance_retry(mut self, retry: RetryPolicy) -> Keeper {
        self.instance.set_retry_policy(retry);
        self.rewire();
        self
    }

    /// Stops at the transitions `crash` picks, for ever, as a process killed there would: for
    /// fault-injection tests, which then drop the cycle and start a new keeper on the journal.
    pub fn with_crash_point(mut self, crash: CrashPoint) -> Keeper {
        self.crash = Some(crash);
        self
    }

    /// Passes a transition of `credential`'s refresh (or never returns, if a test's crash
    /// point says the keeper dies here).
    async fn reached(&self, credential: &str, transition: Transition) {
        if let Some(crash) = &self.crash
            && crash(credential, transition)
        {
            std::future::pending::<()>().await;
        }
    }

    /// The event reporter and the lease work through the instance client and the clock: give
    /// them the current ones (at build time: a new lease starts with nothing held).
    fn rewire(&mut self) {
        self.events = self.settings.report.clone().map(|r| {
            EventReporter::new(self.instance.clone(), r).with_clock(Arc::clone(&self.clock))
        });
        self.lease = self.journal.as_ref().map(|journal| {
            Arc::new(LeaseKeeper::new(
                self.instance.clone(),
                journal,
                &self.settings,
                Arc::clone(&self.clock),
            ))
        });
    }

    /// The instance-wide lease of a keeper that writes: the daemon renews it between cycles and
    /// releases it on a clean stop; `once` releases it when it exits.
    pub fn lease(&self) -> Option<&Arc<LeaseKeeper>> {
        self.lease.as_ref()
    }

    /// The instance client.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The journal, when this keeper writes.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref()
    }

    /// Runs one cycle. `stop` is checked between credentials only: a refresh that started is
    /// always finished, so a shutdown never falls between the provider's answer and the journal.
    pub async fn cycle(
        &self,
        mode: Mode,
        stop: &CancellationToken,
    ) -> Result<CycleReport, CycleError> {
        let started = self.clock.now();
        let began = self.clock.monotonic();
        self.instance.budget().reset(cycle_budget(0));
        let rows = self.instance.list_credentials().await?;
        let row_count = rows.len();
        let estate = pair(rows);
        for old in &estate.superseded {
            tracing::debug!(event = "credential.superseded", credential = %old.sys_id, registry = %old.registry.name, "a newer refresh row exists for the same profile and registry; ignoring this one");
        }
        let history = self.history();
        let outcomes = match &history {
            Some(j) => j.outcomes()?,
            None => HashMap::new(),
        };
        let now = self.clock.now();
        let by_id: HashMap<&str, &Credential> =
            estate.credentials.iter().map(|c| (c.id(), c)).collect();
        let parked = match (&history, &self.journal) {
            (Some(j), Some(_)) => j.parked_registries()?,
            // A read-only history that cannot tell parks means none are known.
            (Some(j), None) => j.parked_registries().unwrap_or_default(),
            (None, _) => HashMap::new(),
        };
        let routes = Routes::plan(
            &self.settings.registry_rules(),
            estate.credentials.iter().map(|c| &*c.refresh.registry),
        );
        if mode == Mode::Apply {
            self.announce_routes(&routes).await;
        }
        let context = Arc::new(CycleContext {
            routes,
            interrupted: match (&self.journal, mode) {
                (Some(j), Mode::Apply) => j.interrupted()?,
                _ => HashMap::new(),
            },
            parking: Mutex::new(Parking::new(parked, started)),
            previous: outcomes
                .iter()
                .filter_map(|(id, o)| o.class.map(|c| (id.clone(), c)))
                .collect(),
            journal_failed: std::sync::atomic::AtomicBool::new(false),
        });

        // 1. Answers an earlier run left in the journal go first: their credentials are held
        //    until ServiceNow has them.
        let mut results: HashMap<String, Settled> = HashMap::new();
        let mut held: HashSet<String> = HashSet::new();
        let mut terms = LeaseTerms::free();
        match (mode, &self.journal) {
            (Mode::Apply, Some(journal)) => {
                let records = journal.pending()?;
                if let Some(lease) = &self.lease {
                    // Claimed first: what waits in the journal, and what a crash interrupted.
                    terms = self
                        .lease_terms(lease, journal, journal.own_claims()?, &by_id)
                        .await;
                }
                // Delivering its own answers needs no lease: nobody else touches what it claims.
                let (redelivered, waiting) =
                    self.redeliver_all(journal, records, &by_id, stop).await;
                self.settle_claims(journal, &redelivered);
                held.extend(waiting);
                results.extend(redelivered);
            }
            _ => {
                if mode == Mode::DryRun {
                    terms = self.observed_terms(history.as_deref()).await;
                }
                let summaries = match &history {
                    Some(j) => j.summaries()?,
                    None => Vec::new(),
                };
                for summary in summaries {
                    held.insert(summary.credential.clone());
                    results.insert(
                        summary.credential,
                        crate::domain::report::Outcome::WouldRedeliver.into(),
                    );
                }
            }
        }

        // 2. Plan.
        let policy = self.settings.refresh.policy();
        let known = Knowledge {
            now,
            policy: &policy,
            history: &outcomes,
            held: &held,
            claimed_elsewhere: &terms.claimed_elsewhere,
            refresh_refused: terms.refused.as_deref(),
            routes: &context.routes,
            mode,
        };
        let planned = plan(&estate.credentials, &known, &mut context.parking(), |c| {
            self.fingerprint(c)
        });
        results.extend(planned.settled);

        // 3. Refresh.
        if mode == Mode::Apply {
            let due: Vec<&Credential> = planned
                .due
                .iter()
                .map(|&i| &estate.credentials[i])
                .collect();
            self.instance.budget().reset(cycle_budget(due.len()));
            results.extend(self.refresh_all(&due, stop, &context).await?);
            if let Some(lease) = &self.lease {
                // The claims the cycle let go reach the instance now, not a third of a lease
                // later.
                lease.ensure().await;
            }
        }

        // 4. Settle.
        let settlement = settle(CycleFacts {
            credentials: &estate.credentials,
            verdicts: planned.verdicts,
            results,
            history: &outcomes,
            mode,
            started,
            now,
            duration: self.clock.monotonic() - began,
            rows: row_count,
        });
        for notice in settlement.notices {
            self.announce(notice).await;
        }
        if let Some(journal) = &self.journal
            && mode == Mode::Apply
            && !settlement.remember.is_empty()
            && let Err(e) = journal.record_outcomes(settlement.remember).await
        {
            tracing::warn!(event = "journal.outcome_failed", error = %e, "could not remember the cycle's outcomes");
        }
        let mut report = settlement.report;
        report.lease = match (&self.lease, mode) {
            (Some(lease), Mode::Apply) => Some(lease.status()),
            _ => terms.seen,
        };
        log_cycle(&report, mode);
        Ok(report)
    }

    /// The planner's view without acting: what `status` shows.
    pub async fn survey(&self) -> Result<CycleReport, CycleError> {
        let never = CancellationToken::new();
        self.cycle(Mode::DryRun, &never).await
    }

    /// What identifies the configuration a registry failed with: the registry row's last update
    /// in ServiceNow, its token URL, and the keeper's overrides for it — the client secret only
    /// as a digest keyed with the journal key, so nothing on disk reveals it. When it changes,
    /// a parked registry is tried again. `None` when no journal key is at hand (read-only runs).
    fn fingerprint(&self, c: &Credential) -> Option<String> {
        let overrides = self
            .settings
            .registry(&c.refresh.registry.name, &c.refresh.registry.sys_id);
        let secret = overrides
            .and_then(|o| o.client_secret.as_ref())
            .map(|s| s.expose_secret().as_bytes().to_vec())
            .unwrap_or_default();
        let secret_digest = self.journal.as_ref()?.keyed_digest(&secret)?;
        Some(format!(
            "{}|{}|{}|{:?}|{:?}|{}|{}|{}",
            c.refresh.registry.updated,
            c.refresh.registry.token_url,
            overrides.and_then(|o| o.scope.as_deref()).unwrap_or(""),
            overrides.map(|o| o.client_auth),
            overrides.and_then(|o| o.kind),
            overrides.and_then(|o| o.resource.as_deref()).unwrap_or(""),
            overrides
                .and_then(|o| o.assertion_key.as_ref())
                .map_or("", |k| k.thumbprint_s256()),
            secret_digest,
        ))
    }

    /// The journal a cycle reads its history from: the keeper's own, or — for dry runs and
    /// `status`, which must not take the lock of a running daemon — the state directory's
    /// journal opened read-only, once per cycle. `None` when there is none yet.
    fn history(&self) -> Option<Arc<Journal>> {
        if let Some(j) = &self.journal {
            return Some(Arc::clone(j));
        }
        match Journal::open_read_only(&self.settings.state.dir) {
            Ok(j) => j.map(Arc::new),
            Err(e) => {
                tracing::debug!(event = "journal.unreadable", error = %e, "no outcome history");
                None
            }
        }
    }

    /// Logs a notice of the settlement and reports it on the instance.
    async fn announce(&self, notice: Notice) {
        match notice {
            Notice::Recovered {
                credential,
                name,
                registry,
                previous,
            } => {
                tracing::info!(
                    event = "credential.recovered",
                    credential = %credential,
                    registry = %registry,
                    previous_class = previous.label(),
                    "credential works again"
                );
                self.report(StateChange::CredentialRecovered {
                    credential,
                    name,
                    registry,
                })
                .await;
            }
            Notice::RefreshRowExpired {
                credential,
                name,
                registry,
                guidance,
            } => {
                tracing::warn!(event = "credential.needs_reauth", credential = %credential, registry = %registry, class = "needs_reauth", who = FailureClass::NeedsReauth.who_acts(), guidance = %guidance, "refresh row expired");
                self.report(StateChange::CredentialFailing {
                    credential,
                    name,
                    registry,
                    class: FailureClass::NeedsReauth,
                    guidance,
                })
                .await;
            }
        }
    }

    async fn report(&self, change: StateChange) {
        if let Some(events) = &self.events {
            events.emit(change).await;
        }
    }

    /// Parks the credential's registry after a configuration error, saying so once.
    async fn park(&self, c: &Credential, guidance: &str, context: &CycleContext) {
        let registry = &c.refresh.registry;
        let Some(fingerprint) = self.fingerprint(c) else {
            return;
        };
        let park = RegistryPark {
            registry: registry.sys_id.clone(),
            name: crate::domain::guidance::registry_label(c),
            class: FailureClass::Configuration,
            message: guidance.to_string(),
            fingerprint,
            at: self.clock.now(),
        };
        let newly = context.parking().park(park.clone());
        if let Some(journal) = &self.journal
            && let Err(e) = journal.park_registry(&park).await
        {
            tracing::warn!(event = "journal.write_failed", registry = %park.name, error = %e, "could not persist the registry's parking");
        }
        if newly {
            tracing::warn!(
                event = "registry.parked",
                registry = %park.name,
                registry_sys_id = %park.registry,
                class = "configuration",
                who = FailureClass::Configuration.who_acts(),
                guidance = %park.message,
                probe_after = %crate::domain::time::human_duration(crate::domain::park::PARK_PROBE),
                "registry parked: its credentials are not refreshed until its configuration changes"
            );
            self.report(StateChange::RegistryParked {
                registry_id: park.registry.clone(),
                registry: park.name.clone(),
                guidance: park.message.clone(),
            })
            .await;
        }
    }

    /// Unparks a registry one of whose credentials just got an answer.
    async fn unpark(&self, journal: &Journal, context: &CycleContext, registry: &str) {
        let Some(park) = context.parking().unpark(registry) else {
            return;
        };
        if let Err(e) = journal.unpark_registry(&park.registry).await {
            tracing::warn!(event = "journal.write_failed", registry = %park.name, error = %e, "could not clear the registry's parking");
        }
        tracing::info!(event = "registry.recovered", registry = %park.name, registry_sys_id = %park.registry, "registry works again");
        self.report(StateChange::RegistryRecovered {
            registry_id: park.registry.clone(),
            registry: park.name.clone(),
        })
        .await;
    }
}

fn log_cycle(report: &CycleReport, mode: Mode) {
    let due = report
        .credentials
        .iter()
        .filter(|c| c.assessment.action != Action::Skip || c.outcome.kind() != OutcomeKind::Skipped)
        .count();
    let needs_reauth = report
        .credentials
        .iter()
        .filter(|c| c.assessment.state == State::NeedsReauth)
        .count();
    tracing::info!(
        event = "cycle.finished",
        dry_run = mode == Mode::DryRun,
        rows = report.rows,
        credentials = report.credentials.len(),
        due,
        refreshed = report.count(OutcomeKind::Refreshed),
        redelivered = report.count(OutcomeKind::Redelivered),
        failed = report.count(OutcomeKind::Failed),
        blocked = report.count(OutcomeKind::Blocked),
        needs_reauth,
        duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
        "cycle finished"
    );
}
