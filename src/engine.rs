//! One refresh cycle: discover, re-deliver what the journal holds, plan, refresh, write back.
//!
//! The order of work for a refresh is fixed by the product's invariant — a token the provider
//! handed out is never lost: journal the intent → token request → journal the answer (fsync) →
//! PATCH the refresh row when the token rotated (after checking nobody else wrote it meanwhile)
//! → write the access row → remove the journal record. A credential with an undelivered answer
//! is never refreshed again before that answer reached ServiceNow: with a rotating provider the
//! journaled refresh token is the only valid one.

use crate::config::{ClientAuth, RegistrySettings, Settings};
use crate::domain::classify::{FailureClass, provider_guidance};
use crate::domain::credential::{Credential, pair};
use crate::domain::plan::{Action, Assessment, Reason, Remembered, State, assess};
use crate::domain::time::{
    add, format_sn_in_zone, format_sn_utc, human_duration, parse_sn_datetime,
};
use crate::events::{EventReporter, StateChange};
use crate::journal::{
    AccessTemplate, Delivery, Journal, JournalError, OutcomeRecord, Pending, RegistryPark,
    StoredOutcome,
};
use crate::oauth::{RefreshRequest, TokenClient, TokenError, TokenSet};
use crate::observe::Observer;
use crate::pacing::{FullJitter, HostLimits, cycle_budget};
use crate::servicenow::{
    COMPANION_BATCH, CompanionSecrets, Instance, RetryPolicy, SecretRequest, SnError,
};
use backon::Retryable;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Retries of one token request when the provider throttles or fails transiently (a lost answer
/// gets its own single retry on top).
const TOKEN_RETRIES: u32 = 2;
/// Ceiling of the first backoff between token attempts, and the largest one.
const TOKEN_BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(10));
/// How long a registry parked for a configuration error waits before one of its credentials is
/// tried again, in case the fix happened where the keeper cannot see it (at the provider).
const PARK_PROBE: Duration = Duration::from_secs(3_600);
/// Largest `Retry-After` honoured inside a cycle; longer waits defer to the next cycle.
const TOKEN_MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// What a cycle settled for one credential: its outcome, and the access and refresh expiries it
/// wrote (if any).
type Settled = (Outcome, Option<Timestamp>, Option<Timestamp>);

/// Whether a cycle may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refresh and write.
    Apply,
    /// No token request and no write: report what would be refreshed and why.
    DryRun,
}

/// What happened to one credential in a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due.
    Skipped,
    /// `--dry-run`: it would have been refreshed.
    WouldRefresh,
    /// `--dry-run`: a journaled answer would have been re-delivered.
    WouldRedeliver,
    /// Refreshed and written back.
    Refreshed {
        /// The provider rotated the refresh token (and the refresh row was updated).
        rotated: bool,
        /// The access row was missing and has been created.
        created_access_row: bool,
    },
    /// A journaled answer from an earlier run reached ServiceNow.
    Redelivered,
    /// Refresh or write failed.
    Failed {
        /// What kind of failure.
        class: FailureClass,
        /// What happened and what to do, secret-free.
        message: String,
    },
    /// It needs refreshing but a person must act first.
    Blocked {
        /// Why, and what to do.
        message: String,
    },
    /// Shutdown arrived before its turn; it is retried next time.
    Deferred,
}

impl Outcome {
    /// Whether this counts against exit code 0.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed { .. } | Outcome::Blocked { .. })
    }

    /// A short label for tables, logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Skipped => "skipped",
            Outcome::WouldRefresh => "would refresh",
            Outcome::WouldRedeliver => "would re-deliver",
            Outcome::Refreshed { .. } => "refreshed",
            Outcome::Redelivered => "re-delivered",
            Outcome::Failed { .. } => "failed",
            Outcome::Blocked { .. } => "blocked",
            Outcome::Deferred => "deferred",
        }
    }
}

/// One credential's line in a cycle report.
#[derive(Debug, Clone)]
pub struct CredentialReport {
    /// The refresh row's sys_id.
    pub sys_id: String,
    /// The credential's `name`.
    pub name: String,
    /// The registry's name (or sys_id when the name is unreadable).
    pub registry: String,
    /// The registry's sys_id.
    pub registry_id: String,
    /// The requestor profile's sys_id.
    pub requestor_profile: String,
    /// The planner's verdict before the cycle acted.
    pub assessment: Assessment,
    /// What the cycle did.
    pub outcome: Outcome,
    /// Access-token expiry after the cycle (as written, or as found).
    pub access_expires: Option<Timestamp>,
    /// Refresh-token row expiry after the cycle.
    pub refresh_expires: Option<Timestamp>,
    /// The last failure remembered for it (for `status`).
    pub last_error: Option<String>,
    /// When it was last refreshed by the keeper.
    pub last_success: Option<Timestamp>,
    /// When a token was last minted from the refresh token, as far as the instance shows it (or
    /// now, when this cycle refreshed it): where provider inactivity limits count from.
    pub last_used: Option<Timestamp>,
}

/// The result of a cycle.
#[derive(Debug, Clone)]
pub struct CycleReport {
    /// When the cycle started.
    pub started: Timestamp,
    /// How long it took.
    pub duration: Duration,
    /// `oauth_credential` rows read.
    pub rows: usize,
    /// One entry per credential, ordered by sys_id.
    pub credentials: Vec<CredentialReport>,
}

impl CycleReport {
    /// Credentials that failed or are blocked.
    pub fn failures(&self) -> usize {
        self.credentials
            .iter()
            .filter(|c| c.outcome.is_failure())
            .count()
    }

    /// Count of credentials with the given outcome label.
    pub fn count(&self, label: &str) -> usize {
        self.credentials
            .iter()
            .filter(|c| c.outcome.label() == label)
            .count()
    }
}

/// A failure that stops the whole cycle.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// The instance could not be read.
    #[error("{0}")]
    Instance(#[from] SnError),
    /// The journal failed (it fails closed: no refresh without it).
    #[error("{0}")]
    Journal(#[from] JournalError),
}

impl CycleError {
    /// Whether this means the instance is unusable for the account (exit code 3).
    pub fn instance_unusable(&self) -> bool {
        matches!(self, CycleError::Instance(e) if e.instance_unusable())
    }
}

/// The integration user's time zone as the keeper learned it.
#[derive(Debug, Clone)]
struct Zone {
    tz: TimeZone,
    /// Whether it is the user's own, or assumed because the user's was empty or unknown.
    known: bool,
}

/// What one cycle knows beyond the planner's verdicts, shared by its refresh tasks.
#[derive(Debug, Default)]
struct CycleContext {
    /// When the cycle started: registries parked since then block the rest of the cycle.
    started: Timestamp,
    /// Credentials whose last refresh was sent and never concluded (the process died).
    interrupted: HashMap<String, Timestamp>,
    /// Registries parked for a configuration error, by sys_id (grows during the cycle).
    parked: Mutex<HashMap<String, RegistryPark>>,
    /// Each credential's failure class before this cycle: a state change is a class that
    /// differs from it.
    previous: HashMap<String, FailureClass>,
}

impl CycleContext {
    fn parked(&self, registry: &str) -> Option<RegistryPark> {
        self.parked.lock().ok()?.get(registry).cloned()
    }
}

/// The refresher: an instance client, a token client and (to apply) the journal.
#[derive(Clone)]
pub struct Keeper {
    settings: Arc<Settings>,
    instance: Instance,
    tokens: TokenClient,
    journal: Option<Arc<Journal>>,
    zone: Arc<tokio::sync::OnceCell<Zone>>,
    zone_warned: Arc<AtomicBool>,
    hosts: Arc<HostLimits>,
    /// Credentials being refreshed right now: single flight, even if two cycles overlapped.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// Told how the refreshes of a cycle progress (a terminal progress bar).
    observer: Observer,
    /// Where state changes are reported on the instance (`[report]`).
    events: Option<EventReporter>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Marks a credential in flight for as long as it lives.
struct FlightGuard {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.id);
        }
    }
}

impl Keeper {
    /// Builds a keeper. `journal` is required to apply, optional for dry runs and status
    /// (then read-only, for outcomes).
    pub fn new(settings: Arc<Settings>, journal: Option<Arc<Journal>>) -> Result<Keeper, SnError> {
        let instance = Instance::new(&settings.instance, RetryPolicy::default())?;
        let loopback = instance
            .base()
            .host_str()
            .is_some_and(crate::config::is_loopback_host);
        let tokens = TokenClient::new(settings.refresh.timeout, loopback)
            .map_err(|e| SnError::Unreachable(crate::wire::describe_transport(&e)))?;
        let events = settings
            .report
            .clone()
            .map(|r| EventReporter::new(instance.clone(), r));
        Ok(Keeper {
            hosts: Arc::new(HostLimits::new(settings.refresh.per_host_concurrency)),
            settings,
            instance,
            tokens,
            journal,
            zone: Arc::new(tokio::sync::OnceCell::new()),
            zone_warned: Arc::new(AtomicBool::new(false)),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            observer: Observer::none(),
            events,
        })
    }

    /// Reports every HTTP exchange (instance and token endpoints) and the progress of each
    /// cycle's refreshes to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Keeper {
        self.instance.set_observer(observer.clone());
        self.tokens.set_observer(observer.clone());
        self.observer = observer;
        // The event reporter writes through the instance client: give it the observed one.
        self.events = self
            .settings
            .report
            .clone()
            .map(|r| EventReporter::new(self.instance.clone(), r));
        self
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
        let started = Timestamp::now();
        let clock = tokio::time::Instant::now();
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
        let now = Timestamp::now();
        let policy = self.settings.refresh.policy();
        let by_id: HashMap<&str, &Credential> =
            estate.credentials.iter().map(|c| (c.id(), c)).collect();
        let context = Arc::new(CycleContext {
            started,
            interrupted: match (&self.journal, mode) {
                (Some(j), Mode::Apply) => j.interrupted()?,
                _ => HashMap::new(),
            },
            parked: Mutex::new(match (&history, &self.journal) {
                (Some(j), Some(_)) => j.parked_registries()?,
                // A read-only history that cannot tell parks means none are known.
                (Some(j), None) => j.parked_registries().unwrap_or_default(),
                (None, _) => HashMap::new(),
            }),
            previous: outcomes
                .iter()
                .filter_map(|(id, o)| o.class.map(|c| (id.clone(), c)))
                .collect(),
        });

        let mut results: HashMap<String, Settled> = HashMap::new();

        // 1. Re-deliver journaled answers before any new refresh of their credential.
        let mut held: HashSet<String> = HashSet::new();
        match (mode, &self.journal) {
            (Mode::Apply, Some(journal)) => {
                let pending = journal.pending()?;
                for p in pending {
                    held.insert(p.delivery.credential.clone());
                    if stop.is_cancelled() {
                        continue;
                    }
                    let current = by_id.get(p.delivery.credential.as_str()).copied();
                    let outcome = self.redeliver(journal, p, current).await;
                    let cred = outcome.0.clone();
                    results.insert(cred, (outcome.1, outcome.2, outcome.3));
                }
            }
            _ => {
                let summaries = match &history {
                    Some(j) => j.summaries()?,
                    None => Vec::new(),
                };
                for summary in summaries {
                    held.insert(summary.credential.clone());
                    results.insert(summary.credential, (Outcome::WouldRedeliver, None, None));
                }
            }
        }

        // 2. Plan.
        let mut verdicts = Vec::with_capacity(estate.credentials.len());
        for c in &estate.credentials {
            let remembered = outcomes.get(c.id()).and_then(|o| {
                o.class.map(|class| Remembered {
                    class,
                    refresh_mod_count: o.refresh_mod_count,
                })
            });
            verdicts.push(assess(c, now, &policy, remembered.as_ref()));
        }
        let mut due: Vec<&Credential> = Vec::new();
        let mut probed: HashSet<String> = HashSet::new();
        for (c, verdict) in estate.credentials.iter().zip(&verdicts) {
            if verdict.action != Action::Refresh || held.contains(c.id()) {
                continue;
            }
            // A registry parked for a configuration error is not asked again until its
            // configuration changed; after a while one credential probes it.
            if let Some(park) = context.parked(&c.refresh.registry.sys_id) {
                // Without a key (a dry run) the configuration cannot be compared: still parked.
                let unchanged = self
                    .fingerprint(c)
                    .is_none_or(|fingerprint| fingerprint == park.fingerprint);
                let probe_due = now.as_second() - park.at.as_second()
                    >= i64::try_from(PARK_PROBE.as_secs()).unwrap_or(i64::MAX);
                if unchanged && !(probe_due && probed.insert(park.registry.clone())) {
                    results.insert(c.id().to_string(), (park.blocked(), None, None));
                    continue;
                }
            }
            due.push(c);
        }

        // 3. Refresh.
        match mode {
            Mode::DryRun => {
                for c in &due {
                    results.insert(c.id().to_string(), (Outcome::WouldRefresh, None, None));
                }
            }
            Mode::Apply => {
                self.instance.budget().reset(cycle_budget(due.len()));
                let refreshed = self.refresh_all(&due, stop, &context).await?;
                results.extend(refreshed);
            }
        }

        // 4. Report, and remember outcomes.
        let mut credentials = Vec::with_capacity(estate.credentials.len());
        let mut remembered = Vec::new();
        for (c, verdict) in estate.credentials.iter().zip(verdicts) {
            let (outcome, access_after, refresh_after) = match results.remove(c.id()) {
                Some(r) => r,
                None if verdict.action == Action::Blocked => (
                    Outcome::Blocked {
                        message: blocked_message(&verdict.reason, c),
                    },
                    None,
                    None,
                ),
                None => (Outcome::Skipped, None, None),
            };
            let memory = outcomes.get(c.id());
            if mode == Mode::Apply {
                remembered.extend(self.remember(c, &outcome, memory).await);
                if let (Reason::RefreshExpired(_), Outcome::Blocked { message }) =
                    (&verdict.reason, &outcome)
                {
                    self.expired_refresh_row(c, message, memory).await;
                }
            }
            let last_error = match &outcome {
                Outcome::Failed { message, .. } | Outcome::Blocked { message } => {
                    Some(message.clone())
                }
                Outcome::Refreshed { .. } | Outcome::Redelivered => None,
                _ => memory.and_then(|m| m.message.clone()),
            };
            let last_success = match &outcome {
                Outcome::Refreshed { .. } | Outcome::Redelivered => Some(now),
                _ => memory.and_then(|m| m.last_success),
            };
            let last_used = match &outcome {
                Outcome::Refreshed { .. } | Outcome::Redelivered => Some(now),
                _ => c.last_used(),
            };
            credentials.push(CredentialReport {
                last_used,
                sys_id: c.id().to_string(),
                name: c.refresh.name.clone(),
                registry: registry_label(c),
                registry_id: c.refresh.registry.sys_id.clone(),
                requestor_profile: c.refresh.requestor_profile.clone(),
                access_expires: access_after.or_else(|| c.access.as_ref().and_then(|a| a.expires)),
                refresh_expires: refresh_after.or(c.refresh.expires),
                assessment: verdict,
                outcome,
                last_error,
                last_success,
            });
        }
        if let Some(journal) = &self.journal
            && !remembered.is_empty()
            && let Err(e) = journal.record_outcomes(remembered, Timestamp::now()).await
        {
            tracing::warn!(event = "journal.outcome_failed", error = %e, "could not remember the cycle's outcomes");
        }
        let report = CycleReport {
            started,
            duration: clock.elapsed(),
            rows: row_count,
            credentials,
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

    /// Logs and reports a recovery, and returns the outcome to store (all of a cycle's outcomes
    /// are stored in one transaction: one fsync per cycle, not per credential).
    async fn remember(
        &self,
        c: &Credential,
        outcome: &Outcome,
        before: Option<&StoredOutcome>,
    ) -> Option<OutcomeRecord> {
        self.journal.as_ref()?;
        let (class, message) = match outcome {
            Outcome::Refreshed { .. } | Outcome::Redelivered => (None, None),
            Outcome::Failed { class, message } => (Some(*class), Some(message.clone())),
            _ => return None,
        };
        if class.is_none()
            && let Some(previous) = before.and_then(|b| b.class)
        {
            tracing::info!(
                event = "credential.recovered",
                credential = %c.id(),
                registry = %registry_label(c),
                previous_class = previous.label(),
                "credential works again"
            );
            self.report(StateChange::CredentialRecovered {
                credential: c.id().to_string(),
                name: c.refresh.name.clone(),
                registry: registry_label(c),
            })
            .await;
        }
        Some(OutcomeRecord {
            credential: c.id().to_string(),
            registry: registry_label(c),
            class,
            message,
            refresh_mod_count: c.refresh.mod_count,
        })
    }

    /// A refresh row past its `expires` needs re-authorisation: remembered (and reported) once.
    async fn expired_refresh_row(
        &self,
        c: &Credential,
        message: &str,
        before: Option<&StoredOutcome>,
    ) {
        if before.and_then(|b| b.class) == Some(FailureClass::NeedsReauth) {
            return;
        }
        if let Some(journal) = &self.journal
            && let Err(e) = journal
                .record_outcome(
                    c.id(),
                    &registry_label(c),
                    Some(FailureClass::NeedsReauth),
                    Some(message),
                    c.refresh.mod_count,
                    Timestamp::now(),
                )
                .await
        {
            tracing::warn!(event = "journal.outcome_failed", credential = %c.id(), error = %e, "could not remember the outcome");
        }
        tracing::warn!(event = "credential.needs_reauth", credential = %c.id(), registry = %registry_label(c), class = "needs_reauth", who = FailureClass::NeedsReauth.who_acts(), guidance = %message, "refresh row expired");
        self.report(StateChange::CredentialFailing {
            credential: c.id().to_string(),
            name: c.refresh.name.clone(),
            registry: registry_label(c),
            class: FailureClass::NeedsReauth,
            guidance: message.to_string(),
        })
        .await;
    }

    async fn report(&self, change: StateChange) {
        if let Some(events) = &self.events {
            events.emit(change).await;
        }
    }

    /// Refreshes the due credentials with at most `concurrency` in flight (and at most
    /// `per_host_concurrency` per token endpoint host).
    async fn refresh_all(
        &self,
        due: &[&Credential],
        stop: &CancellationToken,
        context: &Arc<CycleContext>,
    ) -> Result<HashMap<String, Settled>, CycleError> {
        let mut results = HashMap::new();
        if due.is_empty() {
            return Ok(results);
        }
        let journal = self.journal.clone().ok_or(JournalError::KeyMissing(0))?;
        let failed = |message: String| {
            (
                Outcome::Failed {
                    class: FailureClass::Instance,
                    message,
                },
                None,
                None,
            )
        };
        // Secrets come in companion batches of 100; the next batch is fetched while the current
        // one refreshes, so the companion's latency is paid once, not once per batch.
        let batches: Vec<Vec<SecretRequest>> = due
            .chunks(COMPANION_BATCH)
            .map(|chunk| chunk.iter().map(|c| self.secret_request(c)).collect())
            .collect();
        let fetch = |requests: Vec<SecretRequest>| {
            let instance = self.instance.clone();
            tokio::spawn(async move { instance.fetch_secrets_for(&requests).await })
        };
        let mut pending_batches = batches.into_iter();
        let mut next = pending_batches.next().map(fetch);
        // Permits are taken before a task is spawned: at most `concurrency` refreshes exist at
        // once, so memory does not grow with the number of due credentials.
        let semaphore = Arc::new(tokio::sync::Semaphore::new(
            self.settings.refresh.concurrency,
        ));
        let mut tasks = tokio::task::JoinSet::new();
        self.observer.refreshes_started(due.len());
        for chunk in due.chunks(COMPANION_BATCH) {
            let fetched = match next.take() {
                Some(handle) => handle.await.unwrap_or_else(|e| {
                    Err(SnError::Malformed(format!("companion task failed: {e}")))
                }),
                None => Ok(HashMap::new()),
            };
            next = pending_batches.next().map(fetch);
            let mut secrets = match fetched {
                Ok(s) => s,
                Err(e) => {
                    let message = companion_message(&e);
                    tracing::error!(event = "companion.failed", error = %e, guidance = %message, "the companion did not hand out secrets");
                    for c in chunk {
                        results.insert(c.id().to_string(), failed(message.clone()));
                        self.observer.refresh_finished();
                    }
                    continue;
                }
            };
            for c in chunk {
                let id = c.id().to_string();
                let Some(secret) = secrets.remove(&id) else {
                    let message = "the companion returned no refresh token for this credential (token_received empty or not decryptable): re-authorise it with Get OAuth Token".to_string();
                    tracing::warn!(event = "credential.failed", credential = %id, registry = %registry_label(c), class = "instance", guidance = %message, "no refresh token");
                    results.insert(id, failed(message));
                    self.observer.refresh_finished();
                    continue;
                };
                let Ok(permit) = Arc::clone(&semaphore).acquire_owned().await else {
                    results.insert(id, (Outcome::Deferred, None, None));
                    continue;
                };
                // Collect what finished meanwhile, so results do not wait in the set.
                while let Some(joined) = tasks.try_join_next() {
                    self.collect(joined, &mut results);
                }
                let keeper = self.clone();
                let credential = (*c).clone();
                let stop = stop.clone();
                let journal = Arc::clone(&journal);
                let context = Arc::clone(context);
                tasks.spawn(async move {
                    let _permit = permit;
                    let id = credential.id().to_string();
                    // Checked only before starting: once the token request is out, the refresh
                    // runs to its end.
                    if stop.is_cancelled() {
                        return (id, (Outcome::Deferred, None, None));
                    }
                    // A registry parked by a credential that failed earlier in this cycle.
                    if let Some(park) = context.parked(&credential.refresh.registry.sys_id)
                        && park.at >= context.started
                        && keeper.fingerprint(&credential).as_deref()
                            == Some(park.fingerprint.as_str())
                    {
                        return (id, (park.blocked(), None, None));
                    }
                    let result = keeper
                        .refresh_one(&journal, &credential, secret, &context)
                        .await;
                    (id, result)
                });
            }
        }
        while let Some(joined) = tasks.join_next().await {
            self.collect(joined, &mut results);
        }
        self.observer.refreshes_ended();
        Ok(results)
    }

    /// What to ask the companion for a credential: its refresh token, and the registry's client
    /// secret only where the config supplies none and the client authenticates with a secret.
    fn secret_request(&self, c: &Credential) -> SecretRequest {
        SecretRequest {
            sys_id: c.id().to_string(),
            client_secret: self
                .settings
                .registry(&c.refresh.registry.name, &c.refresh.registry.sys_id)
                .is_none_or(|o| {
                    o.client_secret.is_none() && o.client_auth != ClientAuth::PrivateKeyJwt
                }),
        }
    }

    fn collect(
        &self,
        joined: Result<(String, Settled), tokio::task::JoinError>,
        results: &mut HashMap<String, Settled>,
    ) {
        self.observer.refresh_finished();
        match joined {
            Ok((id, result)) => {
                results.insert(id, result);
            }
            Err(e) => {
                tracing::error!(event = "credential.task_failed", error = %e, "a refresh task ended abnormally");
            }
        }
    }

    fn enter_flight(&self, id: &str) -> Option<FlightGuard> {
        let mut set = self.in_flight.lock().ok()?;
        if !set.insert(id.to_string()) {
            return None;
        }
        Some(FlightGuard {
            set: Arc::clone(&self.in_flight),
            id: id.to_string(),
        })
    }

    async fn refresh_one(
        &self,
        journal: &Journal,
        c: &Credential,
        secrets: CompanionSecrets,
        context: &CycleContext,
    ) -> Settled {
        let Some(_flight) = self.enter_flight(c.id()) else {
            tracing::debug!(event = "credential.in_flight", credential = %c.id(), "already being refreshed; skipping");
            return (Outcome::Deferred, None, None);
        };
        let registry = registry_label(c);
        let overrides = self
            .settings
            .registry(&c.refresh.registry.name, &c.refresh.registry.sys_id);
        let client_secret = overrides
            .and_then(|o| o.client_secret.clone())
            .or(secrets.client_secret);
        let scope = overrides
            .and_then(|o| o.scope.clone())
            .or_else(|| Some(c.refresh.scopes.clone()).filter(|s| !s.trim().is_empty()));
        let mut refresh_token = secrets.refresh_token;
        if let Err(e) = journal
            .begin_refresh(c.id(), &registry, Timestamp::now())
            .await
        {
            // Without the intent on disk a crash could leave a consumed token unexplained: do
            // not send the request.
            tracing::error!(event = "journal.write_failed", credential = %c.id(), error = %e, "could not journal the refresh intent; not refreshing");
            return (
                Outcome::Failed {
                    class: FailureClass::Transient,
                    message: format!("the journal is not writable ({e}); nothing was sent"),
                },
                None,
                None,
            );
        }
        let mut retried_with_newer = false;
        let set = loop {
            let request = RefreshRequest {
                token_url: &c.refresh.registry.token_url,
                client_id: &c.refresh.registry.client_id,
                client_secret: client_secret.as_ref(),
                refresh_token: &refresh_token,
                scope: scope.as_deref(),
                client_auth: overrides.map(|o| o.client_auth).unwrap_or_default(),
                registry: overrides,
            };
            match self.request_token(&request, c).await {
                Ok(set) => break set,
                Err(e) => {
                    // Before declaring the token dead, look whether someone else rotated it:
                    // then the instance holds a newer one.
                    if e.class() == FailureClass::NeedsReauth && !retried_with_newer {
                        retried_with_newer = true;
                        if let Some(newer) = self.newer_refresh_token(c, &refresh_token).await {
                            tracing::info!(event = "credential.rotated_elsewhere", credential = %c.id(), registry = %registry, "the refresh token changed in ServiceNow meanwhile; retrying with the new one");
                            refresh_token = newer;
                            continue;
                        }
                    }
                    if let Err(je) = journal.end_refresh(c.id()).await {
                        tracing::warn!(event = "journal.write_failed", credential = %c.id(), error = %je, "could not clear the refresh intent");
                    }
                    return (self.token_failure(c, &e, context).await, None, None);
                }
            }
        };
        let now = Timestamp::now();
        let mut delivery = delivery_for(c, set, now, overrides);
        delivery.previous_refresh_token = Some(refresh_token);
        let (access_expires, refresh_expires) = (delivery.access_expires, delivery.refresh_expires);
        let rotated = delivery.refresh_token.is_some();
        let id = match journal.record(&delivery, now).await {
            Ok(id) => Some(id),
            Err(e) => {
                // The answer exists only in memory now: deliver it anyway rather than drop it.
                tracing::error!(event = "journal.write_failed", credential = %c.id(), registry = %registry, error = %e, "could not journal a token answer; delivering it without a journal record");
                None
            }
        };
        if let Some(park) = context.parked(&c.refresh.registry.sys_id) {
            self.unpark(journal, context, &park).await;
        }
        let pending = Pending {
            id: id.clone().unwrap_or_default(),
            delivery,
            refresh_delivered: false,
            attempts: 0,
            created_at: now,
        };
        match self.deliver(journal, &pending, id.is_some()).await {
            Ok(written) => {
                tracing::info!(
                    event = "credential.refreshed",
                    credential = %c.id(),
                    registry = %registry,
                    rotated,
                    created_access_row = written.created_access_row,
                    access_expires = %format_sn_utc(access_expires),
                    "credential refreshed"
                );
                (
                    Outcome::Refreshed {
                        rotated: rotated && written.refresh_row_written,
                        created_access_row: written.created_access_row,
                    },
                    Some(access_expires),
                    if rotated && written.refresh_row_written {
                        refresh_expires
                    } else {
                        None
                    },
                )
            }
            Err(e) => {
                let message = format!(
                    "refreshed at the provider, but writing to ServiceNow failed: {e}; the answer is kept in the journal and re-delivered next cycle"
                );
                tracing::error!(event = "credential.write_failed", credential = %c.id(), registry = %registry, class = "instance", error = %e, "write-back failed; answer kept in the journal");
                (
                    Outcome::Failed {
                        class: FailureClass::Instance,
                        message,
                    },
                    None,
                    None,
                )
            }
        }
    }

    /// The refresh token the instance holds now, if it differs from `used`.
    async fn newer_refresh_token(
        &self,
        c: &Credential,
        used: &SecretString,
    ) -> Option<SecretString> {
        let mut again = self
            .instance
            .fetch_secrets(&[c.id().to_string()])
            .await
            .ok()?;
        let current = again.remove(c.id())?.refresh_token;
        (current.expose_secret() != used.expose_secret()).then_some(current)
    }

    /// The token request with its retry rules: a throttled or failing provider is retried with
    /// full-jitter backoff (honouring `Retry-After`, drawing on the cycle's retry budget); a lost
    /// answer is retried once with the same refresh token, then the credential waits for the
    /// next cycle.
    async fn request_token(
        &self,
        request: &RefreshRequest<'_>,
        c: &Credential,
    ) -> Result<TokenSet, TokenError> {
        let _host = self.hosts.acquire(request.token_url).await;
        let lost_retried = AtomicBool::new(false);
        let transient_retries = AtomicU32::new(0);
        let budget = self.instance.budget();
        (|| self.tokens.refresh(request))
            .retry(FullJitter::new(
                TOKEN_BACKOFF.0,
                TOKEN_BACKOFF.1,
                TOKEN_RETRIES + 1,
            ))
            .when(|e: &TokenError| {
                if e.answer_lost() {
                    return !lost_retried.swap(true, Ordering::Relaxed);
                }
                e.retry_now()
                    && e.retry_after().is_none_or(|d| d <= TOKEN_MAX_RETRY_AFTER)
                    && transient_retries.fetch_add(1, Ordering::Relaxed) < TOKEN_RETRIES
                    && budget.try_take()
            })
            .adjust(|e: &TokenError, proposed| {
                // `None` (attempts exhausted) stays `None`; a Retry-After only lengthens a wait.
                proposed.map(|d| e.retry_after().map_or(d, |ra| ra.max(d)))
            })
            .notify(|e: &TokenError, delay| {
                let event = if e.answer_lost() {
                    "credential.answer_lost"
                } else {
                    "credential.retry"
                };
                tracing::warn!(
                    event,
                    credential = %c.id(),
                    registry = %registry_label(c),
                    error = %e,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "retrying the token request with the same refresh token"
                );
            })
            .await
    }

    async fn token_failure(
        &self,
        c: &Credential,
        e: &TokenError,
        context: &CycleContext,
    ) -> Outcome {
        let class = e.class();
        let registry = registry_label(c);
        let mut guidance = match e {
            TokenError::Rejected(p) => provider_guidance(&p.code, &registry),
            TokenError::BadUrl(_) => {
                format!("fix the token_url of the Application Registry {registry}")
            }
            TokenError::LostAnswer(_) | TokenError::Malformed(_) => "the provider's answer was lost twice; the keeper retries next cycle (if the provider rotated the token meanwhile, re-authorise)".to_string(),
            TokenError::Unreachable(_) => format!(
                "the token endpoint of {registry} is unreachable; the keeper retries next cycle"
            ),
            TokenError::Http { .. } => match class {
                FailureClass::Throttled | FailureClass::Transient => {
                    "the provider is failing or throttling; the keeper retries next cycle".to_string()
                }
                _ => format!(
                    "the token endpoint of {registry} answered without an OAuth error: check its token_url"
                ),
            },
        };
        let mut event = match class {
            FailureClass::NeedsReauth => "credential.needs_reauth",
            _ => "credential.failed",
        };
        if class == FailureClass::NeedsReauth
            && let Some(when) = context.interrupted.get(c.id())
        {
            event = "credential.lost_rotation";
            guidance = format!(
                "a refresh sent at {} by a keeper that was then killed was answered with a rotated token that never arrived; the provider no longer accepts the old one: re-authorise with Get OAuth Token on {registry}",
                format_sn_utc(*when)
            );
        }
        let (trace_id, correlation_id, description) = match e {
            TokenError::Rejected(p) => (
                p.trace_id.clone().unwrap_or_default(),
                p.correlation_id.clone().unwrap_or_default(),
                p.description.clone(),
            ),
            _ => Default::default(),
        };
        tracing::warn!(
            event,
            credential = %c.id(),
            registry = %registry,
            class = class.label(),
            who = class.who_acts(),
            guidance = %guidance,
            error = %e,
            description = %description,
            trace_id = %trace_id,
            correlation_id = %correlation_id,
            "refresh failed"
        );
        if class == FailureClass::Configuration {
            self.park(c, &guidance, context).await;
        } else if class.parks_credential() && context.previous.get(c.id()) != Some(&class) {
            self.report(StateChange::CredentialFailing {
                credential: c.id().to_string(),
                name: c.refresh.name.clone(),
                registry,
                class,
                guidance: guidance.clone(),
            })
            .await;
        }
        Outcome::Failed {
            class,
            message: format!("{guidance} ({e})"),
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
            name: registry_label(c),
            class: FailureClass::Configuration,
            message: guidance.to_string(),
            fingerprint,
            at: Timestamp::now(),
        };
        let newly = match context.parked.lock() {
            Ok(mut parked) => {
                let known = parked.get(&park.registry).is_some_and(|p| {
                    p.fingerprint == park.fingerprint && p.message == park.message
                });
                parked.insert(park.registry.clone(), park.clone());
                !known
            }
            Err(_) => true,
        };
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
                probe_after = %human_duration(PARK_PROBE),
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

    async fn unpark(&self, journal: &Journal, context: &CycleContext, park: &RegistryPark) {
        if let Ok(mut parked) = context.parked.lock() {
            parked.remove(&park.registry);
        }
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

    /// Re-delivers a journaled answer. When the journal holds no access row and a row for the
    /// credential was written after the answer was journaled, that row is the one an interrupted
    /// POST created: it is updated instead of creating a second one.
    async fn redeliver(
        &self,
        journal: &Journal,
        mut p: Pending,
        current: Option<&Credential>,
    ) -> (String, Outcome, Option<Timestamp>, Option<Timestamp>) {
        let credential = p.delivery.credential.clone();
        if p.delivery.access_row.is_none()
            && let Some(access) = current.and_then(|c| c.access.as_ref())
            && access.updated.is_some_and(|u| u >= p.created_at)
        {
            p.delivery.access_row = Some(access.sys_id.clone());
        }
        let (access_expires, refresh_expires) =
            (p.delivery.access_expires, p.delivery.refresh_expires);
        match self.deliver(journal, &p, true).await {
            Ok(_) => {
                tracing::info!(event = "journal.redelivered", credential = %credential, registry = %p.delivery.registry, record = %p.id, attempts = p.attempts + 1, "journaled answer delivered to ServiceNow");
                (
                    credential,
                    Outcome::Redelivered,
                    Some(access_expires),
                    refresh_expires,
                )
            }
            Err(e) => {
                tracing::error!(event = "journal.redelivery_failed", credential = %credential, registry = %p.delivery.registry, record = %p.id, error = %e, "journaled answer still not delivered");
                (
                    credential,
                    Outcome::Failed {
                        class: FailureClass::Instance,
                        message: format!(
                            "a journaled token answer could not be written to ServiceNow: {e}; it stays in the journal"
                        ),
                    },
                    None,
                    None,
                )
            }
        }
    }

    /// Writes an answer to ServiceNow in the invariant's order. `journaled` says whether `p.id`
    /// is a journal record to update.
    async fn deliver(
        &self,
        journal: &Journal,
        p: &Pending,
        journaled: bool,
    ) -> Result<Written, SnError> {
        let result = self.write_back(journal, p, journaled).await;
        if journaled {
            let bookkeeping = match &result {
                Ok(_) => journal.complete(&p.id).await,
                Err(e) => journal.note_failure(&p.id, &e.to_string()).await,
            };
            if let Err(e) = bookkeeping {
                tracing::error!(event = "journal.write_failed", credential = %p.delivery.credential, error = %e, "could not update the journal record");
            }
        }
        result
    }

    async fn write_back(
        &self,
        journal: &Journal,
        p: &Pending,
        journaled: bool,
    ) -> Result<Written, SnError> {
        let d = &p.delivery;
        let mut written = Written {
            refresh_row_written: p.refresh_delivered,
            created_access_row: false,
        };
        if let (Some(rt), false) = (&d.refresh_token, p.refresh_delivered) {
            if self.safe_to_overwrite_refresh_row(d).await? {
                let expires = d.refresh_expires.unwrap_or_else(|| {
                    add(
                        whole_seconds(Timestamp::now()),
                        crate::config::DEFAULT_REFRESH_LIFETIME,
                    )
                });
                self.write_token(Some(&d.credential), rt, expires, None)
                    .await?;
                written.refresh_row_written = true;
            }
            if journaled && let Err(e) = journal.mark_refresh_delivered(&p.id).await {
                tracing::error!(event = "journal.write_failed", credential = %d.credential, error = %e, "could not note the refresh-row delivery");
            }
        }
        if let Some(row) = &d.access_row {
            match self
                .write_token(Some(row), &d.access_token, d.access_expires, None)
                .await
            {
                Ok(()) => return Ok(written),
                // The access row vanished meanwhile (the instance's cleanup job deletes expired
                // rows): create a new one.
                Err(SnError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.write_token(None, &d.access_token, d.access_expires, Some(&d.template))
            .await?;
        written.created_access_row = true;
        Ok(written)
    }

    /// The race check before overwriting a refresh row: ServiceNow itself (an integration using
    /// the credential) or a person re-authorising may have written the row since discovery.
    /// If the row moved and the last writer is not the keeper, the row's token decides: if it is
    /// still the one the keeper used, only other fields changed and the rotated token must be
    /// stored (the old one may be dead at a rotating provider); if it is another token, the
    /// other writer's token is newer (a re-authorisation or the instance's own refresh) and is
    /// kept.
    async fn safe_to_overwrite_refresh_row(&self, d: &Delivery) -> Result<bool, SnError> {
        let version = self.instance.credential_version(&d.credential).await?;
        let ours = version.updated_by == self.settings.instance.username;
        if version.mod_count == d.refresh_mod_count || ours {
            return Ok(true);
        }
        let mut current = self
            .instance
            .fetch_secrets(std::slice::from_ref(&d.credential))
            .await?;
        let row_token = current.remove(&d.credential).map(|s| s.refresh_token);
        let unchanged = match (&row_token, &d.previous_refresh_token) {
            (Some(row), Some(used)) => row.expose_secret() == used.expose_secret(),
            (None, _) => true,
            (Some(_), None) => false,
        };
        tracing::warn!(
            event = "credential.concurrent_writer",
            credential = %d.credential,
            registry = %d.registry,
            writer = %version.updated_by,
            kept = if unchanged { "ours" } else { "theirs" },
            "the refresh row was written by someone else since the keeper read it"
        );
        Ok(unchanged)
    }

    /// PATCHes (`row = Some`) or creates (`template = Some`) a token row, then makes sure
    /// `expires` landed right in UTC whatever the integration user's time zone.
    async fn write_token(
        &self,
        row: Option<&str>,
        token: &SecretString,
        expires: Timestamp,
        template: Option<&AccessTemplate>,
    ) -> Result<(), SnError> {
        let zone = self.zone().await;
        let mut fields = Map::new();
        if let Some(t) = template {
            fields.insert("type".into(), Value::from("access_token"));
            fields.insert("peer".into(), Value::from(t.peer.clone()));
            fields.insert(
                "oauth_requestor_profile".into(),
                Value::from(t.requestor_profile.clone()),
            );
            fields.insert("user".into(), Value::from(t.user.clone()));
            fields.insert("scopes".into(), Value::from(t.scopes.clone()));
            fields.insert("name".into(), Value::from(t.name.clone()));
        }
        fields.insert("token_received".into(), Value::from(token.expose_secret()));
        fields.insert(
            "expires".into(),
            Value::from(format_sn_in_zone(expires, &zone.tz)),
        );
        let record = match row {
            Some(id) => self.instance.patch_credential(id, fields, true).await?,
            None => self.instance.insert_credential(fields).await?,
        };
        let stored = record
            .get("expires")
            .and_then(Value::as_str)
            .and_then(|v| parse_sn_datetime(v).ok().flatten());
        if stored != Some(expires) {
            let id = match row {
                Some(id) => id.to_string(),
                None => crate::servicenow::field(&Value::Object(record.clone()), "sys_id"),
            };
            if id.is_empty() {
                return Err(SnError::Malformed("created row without sys_id".into()));
            }
            if !self.zone_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    event = "instance.time_zone_mismatch",
                    time_zone = %zone.tz.iana_name().unwrap_or("unknown"),
                    known = zone.known,
                    "the instance stored another expiry than intended (integration user's time zone or date format differs); correcting each write with a second PATCH — set the integration user's time zone to UTC to avoid it"
                );
            }
            let mut fix = Map::new();
            fix.insert("expires".into(), Value::from(format_sn_utc(expires)));
            self.instance.patch_credential(&id, fix, false).await?;
        }
        Ok(())
    }

    /// The integration user's time zone, learned once (concurrent refreshes share one lookup).
    /// Unknown or empty falls back to UTC; `write_token` verifies every write anyway.
    async fn zone(&self) -> Zone {
        self.zone
            .get_or_init(|| async {
                match self.instance.integration_user().await {
                    Ok(user) if !user.time_zone.is_empty() => {
                        match TimeZone::get(&user.time_zone) {
                            Ok(tz) => Zone { tz, known: true },
                            Err(_) => {
                                tracing::warn!(event = "instance.time_zone_unknown", time_zone = %user.time_zone, "unknown time zone name; assuming UTC and verifying every write");
                                Zone {
                                    tz: TimeZone::UTC,
                                    known: false,
                                }
                            }
                        }
                    }
                    Ok(_) => Zone {
                        tz: TimeZone::UTC,
                        known: false,
                    },
                    Err(e) => {
                        tracing::warn!(event = "instance.user_unreadable", error = %e, "cannot read the integration user's time zone; assuming UTC and verifying every write");
                        Zone {
                            tz: TimeZone::UTC,
                            known: false,
                        }
                    }
                }
            })
            .await
            .clone()
    }
}

impl RegistryPark {
    /// The outcome of a credential not sent because its registry is parked.
    fn blocked(&self) -> Outcome {
        Outcome::Blocked {
            message: format!(
                "registry {} is parked after a configuration error: {}",
                self.name, self.message
            ),
        }
    }
}

/// What a delivery wrote.
#[derive(Debug, Clone, Copy)]
struct Written {
    /// The refresh row holds the rotated token (now or from an earlier attempt).
    refresh_row_written: bool,
    /// A missing access row was created.
    created_access_row: bool,
}

/// Builds what will be journaled and written from a token answer.
fn delivery_for(
    c: &Credential,
    set: TokenSet,
    now: Timestamp,
    overrides: Option<&RegistrySettings>,
) -> Delivery {
    let default_expires =
        overrides.map_or(crate::config::DEFAULT_EXPIRES_IN, |o| o.default_expires_in);
    // ServiceNow keeps whole seconds: computing in whole seconds lets the keeper compare what
    // the instance stored with what it meant.
    let now = whole_seconds(now);
    let access_expires = match (set.expires_in, set.expires_on) {
        (Some(d), _) => add(now, d),
        (None, Some(on)) => whole_seconds(on),
        (None, None) => add(now, default_expires),
    };
    let refresh_lifetime = set.refresh_expires_in.unwrap_or_else(|| {
        overrides.map_or(crate::config::DEFAULT_REFRESH_LIFETIME, |o| {
            o.refresh_token_lifetime
        })
    });
    let refresh_expires = set
        .refresh_token
        .as_ref()
        .map(|_| add(now, refresh_lifetime));
    Delivery {
        credential: c.id().to_string(),
        registry: registry_label(c),
        access_token: set.access_token,
        refresh_token: set.refresh_token,
        previous_refresh_token: None,
        access_expires,
        refresh_expires,
        access_row: c.access.as_ref().map(|a| a.sys_id.clone()),
        template: AccessTemplate {
            requestor_profile: c.refresh.requestor_profile.clone(),
            peer: c.refresh.registry.sys_id.clone(),
            user: c.refresh.user.clone(),
            scopes: c.refresh.scopes.clone(),
            name: c.refresh.name.clone(),
        },
        refresh_mod_count: c.refresh.mod_count,
    }
}

fn whole_seconds(ts: Timestamp) -> Timestamp {
    Timestamp::from_second(ts.as_second()).unwrap_or(ts)
}

fn registry_label(c: &Credential) -> String {
    if c.refresh.registry.name.is_empty() {
        c.refresh.registry.sys_id.clone()
    } else {
        c.refresh.registry.name.clone()
    }
}

fn blocked_message(reason: &Reason, c: &Credential) -> String {
    let registry = registry_label(c);
    match reason {
        Reason::RegistryIncomplete => format!(
            "{reason}: complete the Application Registry {registry} (token_url, client_id) or check that the integration user can read oauth_entity"
        ),
        _ => format!("{reason}: re-authorise with Get OAuth Token on {registry}"),
    }
}

fn companion_message(e: &SnError) -> String {
    match e {
        SnError::NotFound(_) => format!(
            "the companion is not installed at instance.companion_path ({e}): install it from migrations-docs/"
        ),
        SnError::Forbidden(_) => format!(
            "the integration user may not call the companion ({e}): grant it the companion's role"
        ),
        other => format!("the companion failed: {other}"),
    }
}

fn log_cycle(report: &CycleReport, mode: Mode) {
    let due = report
        .credentials
        .iter()
        .filter(|c| c.assessment.action != Action::Skip || c.outcome != Outcome::Skipped)
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
        refreshed = report.count("refreshed"),
        redelivered = report.count("re-delivered"),
        failed = report.count("failed"),
        blocked = report.count("blocked"),
        needs_reauth,
        duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
        "cycle finished"
    );
}
