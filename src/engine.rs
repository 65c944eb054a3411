//! One refresh cycle: discover, re-deliver what the journal holds, plan, refresh, write back.
//!
//! The order of work for a refresh is fixed by the product's invariant — a token the provider
//! handed out is never lost: token request → journal the answer (fsync) → PATCH the refresh row
//! when the token rotated → write the access row → remove the journal record. A credential with
//! an undelivered answer is never refreshed again before that answer reached ServiceNow: with a
//! rotating provider the journaled refresh token is the only valid one.

use crate::config::{RegistrySettings, Settings};
use crate::domain::classify::{FailureClass, provider_guidance};
use crate::domain::credential::{Credential, pair};
use crate::domain::plan::{Action, Assessment, Reason, Remembered, State, assess};
use crate::domain::time::{add, format_sn_in_zone, format_sn_utc, parse_sn_datetime};
use crate::journal::{AccessTemplate, Delivery, Journal, JournalError, Pending, StoredOutcome};
use crate::oauth::{RefreshRequest, TokenClient, TokenError, TokenSet};
use crate::servicenow::{CompanionSecrets, Instance, RetryPolicy, SnError};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Attempts of one token request when the provider throttles or fails transiently.
const TOKEN_ATTEMPTS: u32 = 3;
/// Largest backoff between token attempts.
const TOKEN_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Largest `Retry-After` honoured inside a cycle; longer waits defer to the next cycle.
const TOKEN_MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

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

/// The refresher: an instance client, a token client and (to apply) the journal.
#[derive(Clone)]
pub struct Keeper {
    settings: Arc<Settings>,
    instance: Instance,
    tokens: TokenClient,
    journal: Option<Arc<Journal>>,
    zone: Arc<tokio::sync::OnceCell<Zone>>,
    zone_warned: Arc<AtomicBool>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
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
            .is_some_and(|h| crate::config::parse_instance_url(&format!("http://{h}")).is_ok());
        let tokens = TokenClient::new(settings.refresh.timeout, loopback)
            .map_err(|e| SnError::Unreachable(crate::wire::describe_transport(&e)))?;
        Ok(Keeper {
            settings,
            instance,
            tokens,
            journal,
            zone: Arc::new(tokio::sync::OnceCell::new()),
            zone_warned: Arc::new(AtomicBool::new(false)),
        })
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
        let rows = self.instance.list_credentials().await?;
        let row_count = rows.len();
        let estate = pair(rows);
        for old in &estate.superseded {
            tracing::debug!(event = "credential.superseded", credential = %old.sys_id, registry = %old.registry.name, "a newer refresh row exists for the same profile and registry; ignoring this one");
        }
        let outcomes = self.outcomes()?;
        let now = Timestamp::now();
        let policy = self.settings.refresh.policy();
        let by_id: HashMap<&str, &Credential> =
            estate.credentials.iter().map(|c| (c.id(), c)).collect();

        let mut results: HashMap<String, (Outcome, Option<Timestamp>, Option<Timestamp>)> =
            HashMap::new();

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
                for summary in self.pending_summaries()? {
                    held.insert(summary.clone());
                    results.insert(summary, (Outcome::WouldRedeliver, None, None));
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
        let due: Vec<&Credential> = estate
            .credentials
            .iter()
            .zip(&verdicts)
            .filter(|(c, v)| v.action == Action::Refresh && !held.contains(c.id()))
            .map(|(c, _)| c)
            .collect();

        // 3. Refresh.
        match mode {
            Mode::DryRun => {
                for c in &due {
                    results.insert(c.id().to_string(), (Outcome::WouldRefresh, None, None));
                }
            }
            Mode::Apply => {
                let refreshed = self.refresh_all(&due, stop).await?;
                results.extend(refreshed);
            }
        }

        // 4. Report, and remember outcomes.
        let mut credentials = Vec::with_capacity(estate.credentials.len());
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
                self.remember(c, &outcome).await;
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
            credentials.push(CredentialReport {
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

    fn outcomes(&self) -> Result<HashMap<String, StoredOutcome>, JournalError> {
        match &self.journal {
            Some(j) => j.outcomes(),
            None => match Journal::open_read_only(&self.settings.state.dir) {
                Ok(Some(j)) => j.outcomes(),
                Ok(None) => Ok(HashMap::new()),
                Err(e) => {
                    tracing::debug!(event = "journal.unreadable", error = %e, "no outcome history");
                    Ok(HashMap::new())
                }
            },
        }
    }

    fn pending_summaries(&self) -> Result<Vec<String>, JournalError> {
        let summaries = match &self.journal {
            Some(j) => j.summaries()?,
            None => match Journal::open_read_only(&self.settings.state.dir) {
                Ok(Some(j)) => j.summaries()?,
                _ => Vec::new(),
            },
        };
        Ok(summaries.into_iter().map(|s| s.credential).collect())
    }

    async fn remember(&self, c: &Credential, outcome: &Outcome) {
        let Some(journal) = &self.journal else { return };
        let (class, message) = match outcome {
            Outcome::Refreshed { .. } | Outcome::Redelivered => (None, None),
            Outcome::Failed { class, message } => (Some(*class), Some(message.as_str())),
            _ => return,
        };
        if let Err(e) = journal
            .record_outcome(
                c.id(),
                &registry_label(c),
                class,
                message,
                c.refresh.mod_count,
                Timestamp::now(),
            )
            .await
        {
            tracing::warn!(event = "journal.outcome_failed", credential = %c.id(), error = %e, "could not remember the outcome");
        }
    }

    /// Refreshes the due credentials with at most `concurrency` in flight.
    async fn refresh_all(
        &self,
        due: &[&Credential],
        stop: &CancellationToken,
    ) -> Result<HashMap<String, (Outcome, Option<Timestamp>, Option<Timestamp>)>, CycleError> {
        let mut results = HashMap::new();
        if due.is_empty() {
            return Ok(results);
        }
        let journal = self.journal.clone().ok_or(JournalError::KeyMissing(0))?;
        let ids: Vec<String> = due.iter().map(|c| c.id().to_string()).collect();
        let mut secrets = match self.instance.fetch_secrets(&ids).await {
            Ok(s) => s,
            Err(e) => {
                let message = companion_message(&e);
                tracing::error!(event = "companion.failed", error = %e, guidance = %message, "the companion did not hand out secrets");
                for c in due {
                    results.insert(
                        c.id().to_string(),
                        (
                            Outcome::Failed {
                                class: FailureClass::Instance,
                                message: message.clone(),
                            },
                            None,
                            None,
                        ),
                    );
                }
                return Ok(results);
            }
        };
        let semaphore = Arc::new(tokio::sync::Semaphore::new(
            self.settings.refresh.concurrency,
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for c in due {
            let id = c.id().to_string();
            let Some(secret) = secrets.remove(&id) else {
                let message = "the companion returned no refresh token for this credential (token_received empty or not decryptable): re-authorise it with Get OAuth Token".to_string();
                tracing::warn!(event = "credential.failed", credential = %id, registry = %registry_label(c), class = "instance", guidance = %message, "no refresh token");
                results.insert(
                    id,
                    (
                        Outcome::Failed {
                            class: FailureClass::Instance,
                            message,
                        },
                        None,
                        None,
                    ),
                );
                continue;
            };
            let keeper = self.clone();
            let credential = (*c).clone();
            let semaphore = Arc::clone(&semaphore);
            let stop = stop.clone();
            let journal = Arc::clone(&journal);
            tasks.spawn(async move {
                let Ok(_permit) = semaphore.acquire_owned().await else {
                    return (credential.id().to_string(), (Outcome::Deferred, None, None));
                };
                // Checked only before starting: once the token request is out, the refresh
                // runs to its end.
                if stop.is_cancelled() {
                    return (credential.id().to_string(), (Outcome::Deferred, None, None));
                }
                let result = keeper.refresh_one(&journal, &credential, secret).await;
                (credential.id().to_string(), result)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((id, result)) => {
                    results.insert(id, result);
                }
                Err(e) => {
                    tracing::error!(event = "credential.task_failed", error = %e, "a refresh task ended abnormally");
                }
            }
        }
        Ok(results)
    }

    async fn refresh_one(
        &self,
        journal: &Journal,
        c: &Credential,
        secrets: CompanionSecrets,
    ) -> (Outcome, Option<Timestamp>, Option<Timestamp>) {
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
        let request = RefreshRequest {
            token_url: &c.refresh.registry.token_url,
            client_id: &c.refresh.registry.client_id,
            client_secret: client_secret.as_ref(),
            refresh_token: &secrets.refresh_token,
            scope: scope.as_deref(),
            client_auth: overrides.map(|o| o.client_auth).unwrap_or_default(),
        };
        let set = match self.request_token(&request, c).await {
            Ok(set) => set,
            Err(e) => return (self.token_failure(c, &e), None, None),
        };
        let now = Timestamp::now();
        let delivery = delivery_for(c, set, now, overrides);
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
        let pending = Pending {
            id: id.clone().unwrap_or_default(),
            delivery,
            refresh_delivered: false,
            attempts: 0,
            created_at: now,
        };
        match self.deliver(journal, &pending, id.is_some()).await {
            Ok(created) => {
                tracing::info!(
                    event = "credential.refreshed",
                    credential = %c.id(),
                    registry = %registry,
                    rotated,
                    created_access_row = created,
                    access_expires = %format_sn_utc(access_expires),
                    "credential refreshed"
                );
                (
                    Outcome::Refreshed {
                        rotated,
                        created_access_row: created,
                    },
                    Some(access_expires),
                    if rotated { refresh_expires } else { None },
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

    /// The token request with its retry rules: a throttled or failing provider is retried with
    /// backoff (honouring `Retry-After`); a lost answer is retried once with the same refresh
    /// token, then the credential waits for the next cycle.
    async fn request_token(
        &self,
        request: &RefreshRequest<'_>,
        c: &Credential,
    ) -> Result<TokenSet, TokenError> {
        let mut attempt = 0u32;
        let mut lost_once = false;
        loop {
            attempt += 1;
            let error = match self.tokens.refresh(request).await {
                Ok(set) => return Ok(set),
                Err(e) => e,
            };
            if error.answer_lost() && !lost_once {
                lost_once = true;
                tracing::warn!(event = "credential.answer_lost", credential = %c.id(), registry = %registry_label(c), error = %error, "token answer lost; retrying once with the same refresh token");
                continue;
            }
            if !error.retry_now() || attempt >= TOKEN_ATTEMPTS {
                return Err(error);
            }
            let wanted = error.retry_after();
            if wanted.is_some_and(|d| d > TOKEN_MAX_RETRY_AFTER) {
                return Err(error);
            }
            let ceiling = Duration::from_millis(200 * 2u64.pow(attempt)).min(TOKEN_MAX_BACKOFF);
            let jitter = Duration::from_millis(fastrand::u64(
                0..=u64::try_from(ceiling.as_millis()).unwrap_or(0),
            ));
            let delay = wanted.map_or(jitter, |w| w.max(jitter));
            tracing::debug!(event = "credential.retry", credential = %c.id(), error = %error, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(0), "retrying the token request");
            tokio::time::sleep(delay).await;
        }
    }

    fn token_failure(&self, c: &Credential, e: &TokenError) -> Outcome {
        let class = e.class();
        let registry = registry_label(c);
        let guidance = match e {
            TokenError::Rejected(p) => provider_guidance(&p.code, &registry),
            TokenError::BadUrl(_) => format!("fix the token_url of the Application Registry {registry}"),
            TokenError::LostAnswer(_) | TokenError::Malformed(_) => "the provider's answer was lost twice; the keeper retries next cycle (if the provider rotated the token meanwhile, re-authorise)".to_string(),
            TokenError::Unreachable(_) => format!("the token endpoint of {registry} is unreachable; the keeper retries next cycle"),
            TokenError::Http { .. } => match class {
                FailureClass::Throttled | FailureClass::Transient => "the provider is failing or throttling; the keeper retries next cycle".to_string(),
                _ => format!("the token endpoint of {registry} answered without an OAuth error: check its token_url"),
            },
        };
        let (trace_id, correlation_id, description) = match e {
            TokenError::Rejected(p) => (
                p.trace_id.clone().unwrap_or_default(),
                p.correlation_id.clone().unwrap_or_default(),
                p.description.clone(),
            ),
            _ => Default::default(),
        };
        let event = if class == FailureClass::NeedsReauth {
            "credential.needs_reauth"
        } else {
            "credential.failed"
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
        Outcome::Failed {
            class,
            message: format!("{guidance} ({e})"),
        }
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

    /// Writes an answer to ServiceNow in the invariant's order; returns whether an access row
    /// was created. `journaled` says whether `p.id` is a journal record to update.
    async fn deliver(
        &self,
        journal: &Journal,
        p: &Pending,
        journaled: bool,
    ) -> Result<bool, SnError> {
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
    ) -> Result<bool, SnError> {
        let d = &p.delivery;
        if let (Some(rt), false) = (&d.refresh_token, p.refresh_delivered) {
            let expires = d.refresh_expires.unwrap_or_else(|| {
                add(
                    whole_seconds(Timestamp::now()),
                    crate::config::DEFAULT_REFRESH_LIFETIME,
                )
            });
            self.write_token(Some(&d.credential), rt, expires, None)
                .await?;
            if journaled && let Err(e) = journal.mark_refresh_delivered(&p.id).await {
                tracing::error!(event = "journal.write_failed", credential = %d.credential, error = %e, "could not note the refresh-row delivery");
            }
        }
        if let Some(row) = &d.access_row {
            match self
                .write_token(Some(row), &d.access_token, d.access_expires, None)
                .await
            {
                Ok(()) => return Ok(false),
                // The access row vanished meanwhile (the instance's cleanup job deletes expired
                // rows): create a new one.
                Err(SnError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.write_token(None, &d.access_token, d.access_expires, Some(&d.template))
            .await?;
        Ok(true)
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
                    Ok(user) if !user.time_zone.is_empty() => match TimeZone::get(&user.time_zone) {
                        Ok(tz) => Zone { tz, known: true },
                        Err(_) => {
                            tracing::warn!(event = "instance.time_zone_unknown", time_zone = %user.time_zone, "unknown time zone name; assuming UTC and verifying every write");
                            Zone { tz: TimeZone::UTC, known: false }
                        }
                    },
                    Ok(_) => Zone { tz: TimeZone::UTC, known: false },
                    Err(e) => {
                        tracing::warn!(event = "instance.user_unreadable", error = %e, "cannot read the integration user's time zone; assuming UTC and verifying every write");
                        Zone { tz: TimeZone::UTC, known: false }
                    }
                }
            })
            .await
            .clone()
    }
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
