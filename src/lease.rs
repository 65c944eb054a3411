//! The keeper's side of the instance-wide lease: one keeper per instance, enforced by the
//! instance (the companion's `/lease`), not by a local lock.
//!
//! A keeper takes the lease before a cycle refreshes anything, renews it at a third of its life
//! (`run`: a task of its own), and releases it on a clean stop or when `once` exits. Before each
//! token request it checks, on a monotonic clock, that the lease has more than one request's
//! deadline left — a keeper paused past its lease wakes up and stops. It claims each credential
//! before its token request and keeps the claim while the answer waits in its journal, so a
//! keeper that takes over never presents a refresh token another keeper already spent. Without
//! the lease a keeper still delivers its own journaled answers (nobody else touches credentials
//! it claims), and nothing else.

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::domain::guidance;
use crate::domain::lease::{Tenure, holder_id, is_twin};
use crate::domain::report::LeaseStatus;
use crate::journal::Journal;
use crate::servicenow::lease::{Claim, LeaseAnswer, MAX_CLAIMS};
use crate::servicenow::{Instance, SnError};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// How soon a keeper asks again when the instance did not answer a lease call.
const RETRY_UNAVAILABLE: Duration = Duration::from_secs(10);

/// Where a keeper stands with the lease.
#[derive(Debug, Clone)]
pub enum Standing {
    /// It holds the lease.
    Held {
        /// The lease's fence.
        fence: u64,
    },
    /// Another keeper holds it.
    HeldElsewhere(Refusal),
    /// The lease could not be asked for (the instance failed, or the companion has no
    /// `/lease`: then [`SnError::endpoint_missing`]).
    Unavailable(SnError),
}

impl Standing {
    /// Whether this keeper holds the lease.
    pub fn held(&self) -> bool {
        matches!(self, Standing::Held { .. })
    }

    /// Who or what keeps the lease from this keeper, without the time left; `None` when it
    /// holds it.
    fn cause(&self) -> Option<String> {
        match self {
            Standing::Held { .. } => None,
            Standing::HeldElsewhere(r) => Some(format!("held by {}", r.holder)),
            Standing::Unavailable(e) => Some(e.to_string()),
        }
    }

    /// Why this keeper does not refresh, in a sentence with the fix; `None` when it holds the
    /// lease.
    pub fn reason(&self) -> Option<String> {
        match self {
            Standing::Held { .. } => None,
            // The companion's words name the holder's process and how long it has left.
            Standing::HeldElsewhere(r) if !r.detail.is_empty() => Some(format!(
                "the lease is held by keeper {}: {}",
                r.holder, r.detail
            )),
            Standing::HeldElsewhere(r) => Some(format!(
                "the lease is held by keeper {} for {} more second(s)",
                r.holder,
                r.expires_in.as_secs()
            )),
            Standing::Unavailable(e) if e.endpoint_missing() => Some(format!(
                "the companion has no /lease endpoint ({e}): update the companion from migrations-docs/ (runbook step 2); until then the keeper refreshes nothing, so two keepers can never spend one token"
            )),
            Standing::Unavailable(e) => Some(format!(
                "the lease could not be taken from the companion (its /lease): {e}"
            )),
        }
    }
}

/// Another keeper's hold on the lease, as the instance answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Its holder id.
    pub holder: String,
    /// How long its lease has left.
    pub expires_in: Duration,
    /// The companion's words (they name the holder's process when it told the instance).
    pub detail: String,
}

#[derive(Debug, Default)]
struct State {
    tenure: Option<Tenure>,
    /// This keeper's claim set, as it will send it next.
    claims: BTreeSet<String>,
    /// Whether `claims` changed since the instance last got them.
    claims_dirty: bool,
    /// Claims let go since the instance last got the whole set: a keeper without the lease
    /// cannot replace its set, so it removes these one by one.
    dropped: BTreeSet<String>,
    /// The other holders' claims, as last answered.
    others: Vec<Claim>,
    /// The last fence this keeper held.
    last_fence: Option<u64>,
    /// Why this keeper does not hold the lease, as last answered (`None`: it does, or it has
    /// not asked yet).
    refusal: Option<String>,
    /// What `refusal` is about, without the seconds left: logs say only what changed.
    refusal_cause: Option<String>,
    /// The other keeper that held the lease at the last answer, if one did.
    elsewhere: Option<Refusal>,
    /// When to call the instance next while the lease is not held: a standby asks again soon
    /// after the holder's lease would lapse.
    retry_at: Duration,
    /// Whether the claim set outgrew what one call carries (logged once).
    overflowing: bool,
    /// Twins already warned about (see [`crate::domain::lease::is_twin`]): once each.
    twins_warned: BTreeSet<String>,
}

/// What [`LeaseKeeper::claim`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimResult {
    /// Claimed, and the lease is held: the token requests may start.
    Claimed,
    /// The lease is not held (another keeper has it, or the instance did not answer).
    LeaseNotHeld,
    /// The claims would outgrow what one lease call carries ([`MAX_CLAIMS`]): the answers
    /// waiting in the journal must reach ServiceNow first.
    Full,
}

/// A keeper's hold on the lease.
#[derive(Debug)]
pub struct LeaseKeeper {
    instance: Instance,
    holder: String,
    pid: u32,
    ttl: Duration,
    /// What a token request needs left: its deadline (`refresh.timeout`).
    margin: Duration,
    clock: SharedClock,
    origin: tokio::time::Instant,
    state: Mutex<State>,
    /// One lease call at a time: answers are applied in the order they were asked.
    calls: tokio::sync::Mutex<()>,
}

/// What the metrics show of this keeper's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSnapshot {
    /// This keeper's holder id.
    pub holder: String,
    /// Whether it holds the lease now (by its own monotonic clock).
    pub held: bool,
    /// The fence it holds (or last held).
    pub fence: Option<u64>,
    /// How many credentials it claims.
    pub claims: usize,
}

impl LeaseKeeper {
    /// The lease of the keeper with `journal`, on `instance`. It starts out claiming what the
    /// journal may hold the only valid token of, so even its first call keeps those claims.
    pub fn new(
        instance: Instance,
        journal: &Journal,
        settings: &Settings,
        clock: SharedClock,
    ) -> LeaseKeeper {
        let claims = journal.own_claims().unwrap_or_else(|e| {
            // The cycle reads the journal again and fails loudly; the claims follow then.
            tracing::warn!(event = "journal.read_failed", error = %e, "could not read which credentials the journal holds");
            Vec::new()
        });
        let state = State {
            claims_dirty: !claims.is_empty(),
            claims: claims.into_iter().collect(),
            ..State::default()
        };
        LeaseKeeper {
            instance,
            holder: own_holder_id(journal),
            pid: std::process::id(),
            ttl: settings.lease.ttl,
            margin: settings.refresh.timeout,
            origin: clock.monotonic(),
            clock,
            state: Mutex::new(state),
            calls: tokio::sync::Mutex::new(()),
        }
    }

    /// This keeper's holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn now(&self) -> Duration {
        self.clock.monotonic().duration_since(self.origin)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data: still consistent after a panic elsewhere.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes or renews the lease, sending the claim set when it changed (or when taking it).
    pub async fn renew(&self) -> Standing {
        let _one = self.calls.lock().await;
        let (claims, send_claims) = {
            let mut state = self.state();
            let over = state.claims.len() > MAX_CLAIMS;
            if over && !state.overflowing {
                // Only a journal from before the lease existed can hold this many answers:
                // `claim` never lets the set grow past the limit.
                tracing::error!(event = "lease.claims_overflow", holder = %self.holder, claims = state.claims.len(), limit = MAX_CLAIMS, "more credentials wait in the journal than one lease call can claim: the first {MAX_CLAIMS} are claimed; let the journal drain (journal list) before running a second keeper");
            }
            state.overflowing = over;
            let claims: Vec<String> = state.claims.iter().take(MAX_CLAIMS).cloned().collect();
            (claims, state.claims_dirty || state.tenure.is_none())
        };
        let sent_at = self.now();
        let answer = self
            .instance
            .take_lease(
                &self.holder,
                self.ttl,
                self.pid,
                send_claims.then_some(claims.as_slice()),
            )
            .await;
        let (standing, dropped) = {
            let mut state = self.state();
            let standing = match answer {
                Ok(LeaseAnswer::Held { fence, others }) => {
                    if state.last_fence != Some(fence) {
                        tracing::info!(event = "lease.acquired", holder = %self.holder, pid = self.pid, fence, ttl_s = self.ttl.as_secs(), "this keeper holds the instance's lease");
                    }
                    state.tenure = Some(Tenure {
                        fence,
                        sent_at,
                        ttl: self.ttl,
                    });
                    state.last_fence = Some(fence);
                    if send_claims {
                        state.claims_dirty = false;
                        state.dropped.clear();
                    }
                    state.others = others;
                    state.elsewhere = None;
                    state.retry_at = sent_at.saturating_add(self.ttl / 3);
                    Standing::Held { fence }
                }
                Ok(LeaseAnswer::HeldElsewhere {
                    holder,
                    expires_in,
                    detail,
                    others,
                }) => {
                    if state.tenure.take().is_some() {
                        tracing::warn!(event = "lease.lost", holder = %self.holder, other = %holder, expires_in_s = expires_in.as_secs(), "another keeper holds the lease now: this keeper refreshes nothing until it gets it back");
                    }
                    state.others = others;
                    // A standby asks again just after the holder's lease would lapse.
                    state.retry_at = self.now().saturating_add(
                        expires_in
                            .saturating_add(Duration::from_secs(1))
                            .min(self.ttl / 3),
                    );
                    let refusal = Refusal {
                        holder,
                        expires_in,
                        detail,
                    };
                    state.elsewhere = Some(refusal.clone());
                    Standing::HeldElsewhere(refusal)
                }
                Err(e) => {
                    // A lease this keeper cannot renew runs out on its own clock: `may_request`
                    // stops new token requests when too little is left.
                    state.retry_at = self
                        .now()
                        .saturating_add(RETRY_UNAVAILABLE.min(self.ttl / 3));
                    state.elsewhere = None;
                    Standing::Unavailable(e)
                }
            };
            let twins: BTreeSet<String> = state
                .others
                .iter()
                .map(|c| c.holder.as_str())
                .chain(state.elsewhere.as_ref().map(|r| r.holder.as_str()))
                .filter(|other| is_twin(&self.holder, other))
                .map(str::to_owned)
                .collect();
            for twin in twins {
                if state.twins_warned.insert(twin.clone()) {
                    tracing::warn!(event = "lease.twin", holder = %self.holder, twin = %twin, guidance = %guidance::lease_twin(&twin), "another keeper id names this keeper's journal");
                }
            }
            let refusal = standing.reason();
            // Said once per cause: the seconds left change with every call.
            let cause = standing.cause();
            if let Some(said) = &refusal
                && state.refusal_cause != cause
            {
                tracing::warn!(event = "lease.standby", holder = %self.holder, pid = self.pid, reason = %said, "this keeper is a standby: it delivers its own journaled answers and refreshes nothing");
            }
            state.refusal = refusal;
            state.refusal_cause = cause;
            let dropped: Vec<String> = if standing.held() {
                Vec::new()
            } else {
                state.dropped.iter().cloned().collect()
            };
            (standing, dropped)
        };
        if !dropped.is_empty() {
            // Without the lease its set cannot be replaced: the settled claims go one by one,
            // so the holder may refresh those credentials again.
            match self.instance.drop_claims(&self.holder, &dropped).await {
                Ok(()) => {
                    tracing::info!(event = "lease.claims_released", holder = %self.holder, credentials = dropped.len(), "claims on credentials whose answers reached ServiceNow released without the lease");
                    let mut state = self.state();
                    for id in &dropped {
                        state.dropped.remove(id);
                    }
                }
                Err(e) => {
                    tracing::warn!(event = "lease.claims_release_failed", holder = %self.holder, error = %e, "could not release settled claims; retried with the next lease call");
                }
            }
        }
        standing
    }

    /// Takes or renews the lease when this keeper does not hold it, a third of its life has
    /// passed, or its claims changed since the instance last got them.
    pub async fn ensure(&self) -> Standing {
        let fresh = {
            let state = self.state();
            state
                .tenure
                .filter(|t| !t.renewal_due(self.now()) && !state.claims_dirty)
        };
        match fresh {
            Some(t) => Standing::Held { fence: t.fence },
            None => self.renew().await,
        }
    }

    /// Adds `ids` to this keeper's claims and tells the instance, before their token requests.
    /// Unless [`ClaimResult::Claimed`], no request may start (and the caller unclaims `ids`).
    pub async fn claim(&self, ids: &[String]) -> ClaimResult {
        {
            let mut state = self.state();
            let fresh = ids.iter().filter(|id| !state.claims.contains(*id)).count();
            if state.claims.len() + fresh > MAX_CLAIMS {
                return ClaimResult::Full;
            }
            if fresh > 0 {
                for id in ids {
                    state.dropped.remove(id);
                    state.claims.insert(id.clone());
                }
                state.claims_dirty = true;
            }
        }
        if self.ensure().await.held() {
            ClaimResult::Claimed
        } else {
            ClaimResult::LeaseNotHeld
        }
    }

    /// Keeps `ids` claimed (answers waiting in the journal, refreshes interrupted by a crash),
    /// without asking the instance yet.
    pub fn keep_claimed(&self, ids: impl IntoIterator<Item = String>) {
        let mut state = self.state();
        let before = state.claims.len();
        for id in ids {
            state.dropped.remove(&id);
            state.claims.insert(id);
        }
        if state.claims.len() != before {
            state.claims_dirty = true;
        }
    }

    /// Drops the claims on `ids` (answers verified in ServiceNow, or requests never sent); the
    /// instance learns it with the next lease call (a replaced set while this keeper holds the
    /// lease, a removal otherwise).
    pub fn unclaim<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let mut state = self.state();
        for id in ids {
            if state.claims.remove(id) {
                state.claims_dirty = true;
                state.dropped.insert(id.clone());
            }
        }
    }

    /// Whether a token request may start now: the lease is held with more than the request's
    /// deadline left, on this keeper's monotonic clock.
    pub fn may_request(&self) -> bool {
        self.state()
            .tenure
            .is_some_and(|t| t.allows_request(self.now(), self.margin))
    }

    /// How long until the instance should be asked again: the renewal at a third of the
    /// lease's life while it is held; otherwise soon after the holder's lease would lapse (a
    /// standby), or a little later when the instance did not answer. The daemon's lease task
    /// sleeps this long.
    pub fn next_call_in(&self) -> Duration {
        self.state().retry_at.saturating_sub(self.now())
    }

    /// Why this keeper does not hold the lease, as the instance last answered; `None` when it
    /// holds it or has not asked yet.
    pub fn refusal(&self) -> Option<String> {
        self.state().refusal.clone()
    }

    /// The credentials other keepers claim: sys_id → holder.
    pub fn claimed_elsewhere(&self) -> HashMap<String, String> {
        self.state()
            .others
            .iter()
            .map(|c| (c.sys_id.clone(), c.holder.clone()))
            .collect()
    }

    /// Drops another keeper's stale claims (its credential was re-authorised since), as the
    /// holder of the lease.
    pub async fn drop_stale_claims(&self, stale: &[Claim]) {
        let mut by_holder: HashMap<&str, Vec<String>> = HashMap::new();
        for c in stale {
            by_holder
                .entry(c.holder.as_str())
                .or_default()
                .push(c.sys_id.clone());
        }
        for (holder, ids) in by_holder {
            match self.instance.drop_claims(holder, &ids).await {
                Ok(()) => {
                    tracing::info!(event = "lease.stale_claims_dropped", other = %holder, credentials = %ids.join(","), "another keeper's claims were stale (the credentials changed since): dropped");
                    let mut state = self.state();
                    state
                        .others
                        .retain(|c| c.holder != holder || !ids.contains(&c.sys_id));
                }
                Err(e) => {
                    tracing::warn!(event = "lease.claims_drop_failed", other = %holder, error = %e, "could not drop another keeper's stale claims");
                }
            }
        }
    }

    /// Releases the lease (its claims stay on the instance: answers may still wait in the
    /// journal). A failure is logged: the lease then lapses by itself.
    pub async fn release(&self) {
        let _one = self.calls.lock().await;
        let held = self.state().tenure.take().is_some();
        if !held {
            return;
        }
        match self.instance.release_lease(&self.holder).await {
            Ok(()) => {
                tracing::info!(event = "lease.released", holder = %self.holder, "the lease is released")
            }
            Err(e) => {
                tracing::warn!(event = "lease.release_failed", holder = %self.holder, error = %e, "could not release the lease; it lapses by itself")
            }
        }
    }

    /// The lease as this keeper last saw it, for the cycle's report.
    pub fn status(&self) -> LeaseStatus {
        let now = self.now();
        let state = self.state();
        let held = state.tenure.filter(|t| t.left(now) > Duration::ZERO);
        let (holder, pid, expires_in) = match (held, &state.elsewhere) {
            (Some(t), _) => (
                Some(self.holder.clone()),
                Some(u64::from(self.pid)),
                Some(t.left(now)),
            ),
            (None, Some(other)) => (Some(other.holder.clone()), None, Some(other.expires_in)),
            (None, None) => (None, None, None),
        };
        LeaseStatus {
            this_keeper: held.is_some(),
            holder,
            pid,
            expires_in,
            fence: held.map(|t| t.fence),
            claimed_elsewhere: state
                .others
                .iter()
                .map(|c| (c.sys_id.clone(), c.holder.clone()))
                .collect(),
            problem: if held.is_none() && state.elsewhere.is_none() {
                state.refusal.clone()
            } else {
                None
            },
        }
    }

    /// What the metrics show.
    pub fn snapshot(&self) -> LeaseSnapshot {
        let now = self.now();
        let state = self.state();
        LeaseSnapshot {
            holder: self.holder.clone(),
            held: state.tenure.is_some_and(|t| t.left(now) > Duration::ZERO),
            fence: state.last_fence,
            claims: state.claims.len(),
        }
    }
}

/// The holder id of this machine's keeper with `journal`.
pub fn own_holder_id(journal: &Journal) -> String {
    holder_id(&host_name(), journal.identity())
}

/// This machine's name: the kernel's, else `/etc/hostname`, else `$HOSTNAME`; empty when none
/// says (the holder id then says `unknown-host`).
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_string())
        .find(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}
