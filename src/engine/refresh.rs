//! The refreshes of a cycle. Secrets come from the companion in batches of 100 (the next batch
//! is fetched while the current one refreshes); at most `concurrency` refreshes are in flight,
//! at most `per_host_concurrency` token requests per host. Each credential runs from its
//! journaled [`Intent`] to an [`Obtained`] answer, which [`super::deliver`] takes on.

use super::deliver::Origin;
use super::{CycleContext, Keeper};
use crate::config::{ClientAuth, RegistrySettings};
use crate::domain::answer::{AnswerTimes, Lifetimes, expiries};
use crate::domain::classify::FailureClass;
use crate::domain::credential::Credential;
use crate::domain::guidance::{self, CompanionFailure, registry_label};
use crate::domain::report::{Hold, Outcome, Settled};
use crate::events::StateChange;
use crate::journal::{AccessTemplate, Delivery, Journal, JournalError, Obtained, Rotated};
use crate::lease::ClaimResult;
use crate::oauth::{RefreshRequest, TokenError, TokenSet};
use crate::servicenow::{COMPANION_BATCH, CompanionSecrets, SecretRequest, SnError};
use crate::transaction::Transition;
use secrecy::{ExposeSecret, SecretString};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Batches of the cycle in hand at once: collecting their answers or being delivered. A batch
/// is delivered only once all its answers are in (one version read and one verification per
/// 100, for the calls' sake), so the writes run dry at each batch boundary unless the next
/// batch is complete by then: with one batch collecting, one waiting and one writing, the
/// writes always have a batch ready while the token requests go on. At most this many × 100
/// answers wait in memory.
const BATCHES_IN_HAND: usize = 3;

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

/// How a credential's token request ended.
enum TokenEnd {
    /// Nothing to deliver: a failure, a park, a stop.
    Settled(Settled),
    /// An answer in custody, with the single flight that holds until it is delivered.
    Obtained(Box<Obtained>, FlightGuard),
}

/// A credential not refreshed because this keeper's lease is gone or too short for a request.
fn lease_lost() -> Outcome {
    Outcome::Blocked {
        hold: Hold::NoLease,
        message: "not refreshed: this keeper's lease on the instance is gone or has less than one token request's deadline left (another keeper may hold it now); nothing was sent".to_string(),
    }
}

/// A credential whose claim the lease refused: not refreshed now.
fn not_claimed(refusal: ClaimResult) -> Settled {
    match refusal {
        ClaimResult::Full => Settled::only(Outcome::Deferred),
        ClaimResult::Claimed | ClaimResult::LeaseNotHeld => Settled::only(lease_lost()),
    }
}

/// A credential not refreshed because the journal cannot commit.
fn journal_down() -> Outcome {
    Outcome::Failed {
        class: FailureClass::Transient,
        message: guidance::journal_unwritable("an earlier commit failed this cycle"),
    }
}

fn instance_failure(message: String) -> Settled {
    Settled::only(Outcome::Failed {
        class: FailureClass::Instance,
        message,
    })
}

impl Keeper {
    /// Refreshes the due credentials: token requests with at most `concurrency` in flight (and
    /// at most `per_host_concurrency` per token endpoint host), each answer taken into custody;
    /// then, per companion batch of 100, the answers are delivered together (one batched race
    /// check, the writes, one batched verification) while the next batch's token requests go
    /// on. When the journal cannot commit, no further refresh starts this cycle: what is in
    /// hand is delivered, nothing new is asked for.
    pub(super) async fn refresh_all(
        &self,
        due: &[&Credential],
        stop: &CancellationToken,
        context: &Arc<CycleContext>,
    ) -> Result<HashMap<String, Settled>, JournalError> {
        let mut results = HashMap::new();
        if due.is_empty() {
            return Ok(results);
        }
        let journal = self.journal.clone().ok_or(JournalError::NoKey)?;
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
        // Permits are taken before a task is spawned: at most `concurrency` token requests
        // exist at once, so memory does not grow with the number of due credentials.
        let semaphore = Arc::new(tokio::sync::Semaphore::new(
            self.settings.refresh.concurrency,
        ));
        let writes = self.write_limit();
        // At most BATCHES_IN_HAND batches collect their answers or are delivered at once.
        let mut deliveries: tokio::task::JoinSet<Vec<(String, Settled)>> =
            tokio::task::JoinSet::new();
        // Owned by the cycle: dropping the cycle (a crash test, a forced stop) aborts them.
        let mut requests = tokio::task::JoinSet::new();
        self.observer.refreshes_started(due.len());
        for chunk in due.chunks(COMPANION_BATCH) {
            while deliveries.len() >= BATCHES_IN_HAND {
                if let Some(joined) = deliveries.join_next().await {
                    self.collect_batch(joined, &mut results);
                }
            }
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
                    let failure = match &e {
                        e if e.endpoint_missing() => CompanionFailure::NotInstalled,
                        SnError::Forbidden(_) => CompanionFailure::NotAllowed,
                        _ => CompanionFailure::Other,
                    };
                    let message = guidance::companion(failure, &e.to_string());
                    tracing::error!(event = "companion.failed", error = %e, guidance = %message, "the companion did not hand out secrets");
                    for c in chunk {
                        results.insert(c.id().to_string(), instance_failure(message.clone()));
                        self.observer.refresh_finished();
                    }
                    continue;
                }
            };
            let (answers, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
            // The batch is claimed in one lease call just before its first token request: a
            // keeper that takes over never presents a token this one may have spent. Claiming
            // in smaller waves would cost a serial lease call per wave and spare nothing: a
            // keeper that dies mid-batch has claims to drop either way (its restart replaces
            // them with what its journal holds; a keeper gone for good needs `lease
            // drop-claims`).
            let mut claimed_until = 0;
            let mut refused: Option<ClaimResult> = None;
            for (i, c) in chunk.iter().enumerate() {
                let id = c.id().to_string();
                if context.journal_failed.load(Ordering::SeqCst) {
                    results.insert(id, Settled::only(journal_down()));
                    self.observer.refresh_finished();
                    continue;
                }
                if let Some(refusal) = refused {
                    results.insert(id, not_claimed(refusal));
                    self.observer.refresh_finished();
                    continue;
                }
                let Some(secret) = secrets.remove(&id) else {
                    tracing::warn!(event = "credential.failed", credential = %id, registry = %registry_label(c), class = "instance", guidance = %guidance::NO_REFRESH_TOKEN, "no refresh token");
                    results.insert(id, instance_failure(guidance::NO_REFRESH_TOKEN.to_string()));
                    self.observer.refresh_finished();
                    continue;
                };
                let Ok(permit) = Arc::clone(&semaphore).acquire_owned().await else {
                    results.insert(id, Settled::only(Outcome::Deferred));
                    continue;
                };
                if let Some(lease) = &self.lease
                    && i >= claimed_until
                {
                    let unsent: Vec<(usize, String)> = chunk
                        .iter()
                        .enumerate()
                        .skip(i)
                        .filter(|(j, c)| *j == i || secrets.contains_key(c.id()))
                        .map(|(j, c)| (j, c.id().to_string()))
                        .collect();
                    claimed_until = unsent.last().map_or(i, |(j, _)| j + 1);
                    let ids: Vec<String> = unsent.into_iter().map(|(_, id)| id).collect();
                    let claim = lease.claim(&ids).await;
                    if claim != ClaimResult::Claimed {
                        // None of them is sent: nothing to keep claimed.
                        lease.unclaim(&ids);
                        if claim == ClaimResult::Full {
                            tracing::warn!(
                                event = "lease.claims_full",
                                "the lease's claim set is full (answers wait in the journal): the rest of this batch waits for the next cycle"
                            );
                        }
                        refused = Some(claim);
                        results.insert(id, not_claimed(claim));
                        self.observer.refresh_finished();
                        continue;
                    }
                }
                let (keeper, credential, stop, journal, context, answers) = (
                    self.clone(),
                    (*c).clone(),
                    stop.clone(),
                    Arc::clone(&journal),
                    Arc::clone(context),
                    answers.clone(),
                );
                while requests.try_join_next().is_some() {}
                requests.spawn(async move {
                    let _permit = permit;
                    let end = keeper
                        .start_refresh(&journal, &credential, secret, &stop, &context)
                        .await;
                    // The receiver lives until every sender is gone.
                    let _ = answers.send((credential.id().to_string(), end));
                });
            }
            drop(answers);
            let (keeper, journal, writes) =
                (self.clone(), Arc::clone(&journal), Arc::clone(&writes));
            deliveries.spawn(async move {
                let mut settled = Vec::new();
                let mut obtained = Vec::new();
                let mut flights = Vec::new();
                while let Some((id, end)) = arrivals.recv().await {
                    match end {
                        TokenEnd::Settled(s) => settled.push((id, s)),
                        TokenEnd::Obtained(answer, flight) => {
                            obtained.push(*answer);
                            flights.push(flight);
                        }
                    }
                }
                settled.extend(
                    keeper
                        .deliver_batch(&journal, obtained, Origin::Fresh, &writes)
                        .await,
                );
                keeper.settle_claims(&journal, &settled);
                // Single flight holds until the answer is delivered (or kept).
                drop(flights);
                settled
            });
        }
        while requests.join_next().await.is_some() {}
        while let Some(joined) = deliveries.join_next().await {
            self.collect_batch(joined, &mut results);
        }
        self.observer.refreshes_ended();
        Ok(results)
    }

    fn collect_batch(
        &self,
        joined: Result<Vec<(String, Settled)>, tokio::task::JoinError>,
        results: &mut HashMap<String, Settled>,
    ) {
        match joined {
            Ok(batch) => {
                for (id, settled) in batch {
                    self.observer.refresh_finished();
                    results.insert(id, settled);
                }
            }
            Err(e) => {
                tracing::error!(event = "credential.task_failed", error = %e, "a delivery task ended abnormally; its answers stay in the journal");
            }
        }
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

    /// One credential's refresh up to custody: Intent → token request → Obtained. The single
    /// flight holds on with the answer until it is delivered.
    async fn start_refresh(
        &self,
        journal: &Journal,
        c: &Credential,
        secrets: CompanionSecrets,
        stop: &CancellationToken,
        context: &CycleContext,
    ) -> TokenEnd {
        // Checked only before starting: once the token request is out, the refresh runs to
        // its end.
        if stop.is_cancelled() {
            return TokenEnd::Settled(Settled::only(Outcome::Deferred));
        }
        // A registry parked by a credential that failed earlier in this cycle.
        let fingerprint = self.fingerprint(c);
        if let Some(blocked) = context
            .parking()
            .parked_this_cycle(&c.refresh.registry.sys_id, fingerprint.as_deref())
        {
            return TokenEnd::Settled(Settled::only(blocked));
        }
        // The journal failed for another credential meanwhile: nothing new is asked for.
        if context.journal_failed.load(Ordering::SeqCst) {
            return TokenEnd::Settled(Settled::only(journal_down()));
        }
        // The lease must outlive this request: a keeper paused past it (GC, VM migration,
        // SIGSTOP) stops here instead of spending a token the next holder may have spent.
        if let Some(lease) = &self.lease
            && !lease.may_request()
        {
            return TokenEnd::Settled(Settled::only(lease_lost()));
        }
        let Some(flight) = self.enter_flight(c.id()) else {
            tracing::debug!(event = "credential.in_flight", credential = %c.id(), "already being refreshed; skipping");
            return TokenEnd::Settled(Settled::only(Outcome::Deferred));
        };
        let registry = registry_label(c);
        // The planner let through only credentials of registries with a route.
        let Some(Ok(route)) = context.routes.get(&c.refresh.registry.sys_id) else {
            return TokenEnd::Settled(Settled::only(Outcome::Blocked {
                hold: Hold::Person(FailureClass::Configuration),
                message: format!("registry {registry} has no token endpoint route"),
            }));
        };
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
        let intent = match journal.begin(c.id(), &registry).await {
            Ok(intent) => intent,
            Err(e) => {
                // Without the intent on disk a crash could leave a consumed token unexplained:
                // do not send the request — and start no other this cycle.
                context.journal_failed.store(true, Ordering::SeqCst);
                tracing::error!(event = "journal.write_failed", credential = %c.id(), error = %e, "could not journal the refresh intent; not refreshing");
                return TokenEnd::Settled(Settled::only(Outcome::Failed {
                    class: FailureClass::Transient,
                    message: guidance::journal_unwritable(&e.to_string()),
                }));
            }
        };
        self.reached(c.id(), Transition::Intent).await;
        let mut retried_with_newer = false;
        let set = loop {
            let request = RefreshRequest {
                token_url: &route.url,
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
                    if let Err(je) = journal.abandon(intent).await {
                        tracing::warn!(event = "journal.write_failed", credential = %c.id(), error = %je, "could not clear the refresh intent");
                    }
                    return TokenEnd::Settled(Settled::only(
                        self.token_failure(c, &e, context).await,
                    ));
                }
            }
        };
        let delivery = self.delivery_for(c, set, refresh_token, overrides);
        let (obtained, journal_error) = journal.obtain(intent, delivery).await;
        if let Some(e) = journal_error {
            // The answer exists only in memory now: it is delivered with its batch rather than
            // dropped — and no other refresh starts this cycle.
            context.journal_failed.store(true, Ordering::SeqCst);
            tracing::error!(event = "journal.write_failed", credential = %c.id(), registry = %registry, error = %e, "could not journal a token answer; delivering it without a journal record and starting no other refresh this cycle");
        }
        self.reached(c.id(), Transition::Obtained).await;
        self.unpark(journal, context, &c.refresh.registry.sys_id)
            .await;
        TokenEnd::Obtained(Box::new(obtained), flight)
    }

    /// What will be journaled and written from a token answer.
    fn delivery_for(
        &self,
        c: &Credential,
        set: TokenSet,
        used: SecretString,
        overrides: Option<&RegistrySettings>,
    ) -> Delivery {
        let lifetimes = Lifetimes {
            default_expires_in: overrides
                .map_or(crate::config::DEFAULT_EXPIRES_IN, |o| o.default_expires_in),
            refresh_token_lifetime: overrides
                .map_or(crate::config::DEFAULT_REFRESH_LIFETIME, |o| {
                    o.refresh_token_lifetime
                }),
        };
        let times = AnswerTimes {
            expires_in: set.expires_in,
            expires_on: set.expires_on,
            refresh_expires_in: set.refresh_expires_in,
            rotated: set.refresh_token.is_some(),
        };
        let (access_expires, refresh_expires) = expiries(times, self.clock.now(), lifetimes);
        Delivery {
            credential: c.id().to_string(),
            registry: registry_label(c),
            access_token: set.access_token,
            rotated: set
                .refresh_token
                .zip(refresh_expires)
                .map(|(token, expires)| Rotated { token, expires }),
            previous_refresh_token: Some(used),
            access_expires,
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

    /// The token request, within the per-host cap, with the client's retry rules drawing on the
    /// cycle's retry budget; every retry is logged.
    async fn request_token(
        &self,
        request: &RefreshRequest<'_>,
        c: &Credential,
    ) -> Result<TokenSet, TokenError> {
        let _host = self.hosts.acquire(request.token_url).await;
        self.tokens
            .refresh_with_retries(request, self.instance.budget(), |e, delay| {
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

    /// A token request that failed for good this cycle: logged with its guidance; a
    /// configuration error parks the registry; a failure that needs a person is reported on the
    /// instance when it is new.
    async fn token_failure(
        &self,
        c: &Credential,
        e: &TokenError,
        context: &CycleContext,
    ) -> Outcome {
        let class = e.class();
        let registry = registry_label(c);
        let mut advice = guidance::token(e.failure(), class, &registry);
        let mut event = match class {
            FailureClass::NeedsReauth => "credential.needs_reauth",
            _ => "credential.failed",
        };
        if class == FailureClass::NeedsReauth
            && let Some(when) = context.interrupted.get(c.id())
        {
            event = "credential.lost_rotation";
            advice = guidance::lost_rotation(*when, &registry);
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
            guidance = %advice,
            error = %e,
            description = %description,
            trace_id = %trace_id,
            correlation_id = %correlation_id,
            "refresh failed"
        );
        if class == FailureClass::Configuration {
            self.park(c, &advice, context).await;
        } else if class.parks_credential() && context.previous.get(c.id()) != Some(&class) {
            self.report(StateChange::CredentialFailing {
                credential: c.id().to_string(),
                name: c.refresh.name.clone(),
                registry,
                class,
                guidance: advice.clone(),
            })
            .await;
        }
        Outcome::Failed {
            class,
            message: format!("{advice} ({e})"),
        }
    }
}
