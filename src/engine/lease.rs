//! The lease in a cycle: taken (or renewed) before anything is refreshed, with the claims this
//! keeper must keep (answers waiting in its journal, refreshes a crash interrupted); the other
//! keepers' claims, less the stale ones; and the claims a batch's results let go.

use super::Keeper;
use crate::domain::credential::Credential;
use crate::domain::lease::claim_is_stale;
use crate::domain::report::LeaseStatus;
use crate::domain::report::Settled;
use crate::journal::Journal;
use crate::lease::{LeaseKeeper, own_holder_id};
use crate::servicenow::lease::Claim;
use std::collections::HashMap;

/// What the lease allows a cycle.
pub(super) struct LeaseTerms {
    /// Why nothing may be refreshed (`None`: refreshes may start).
    pub refused: Option<String>,
    /// The credentials other keepers claim, stale claims left out: sys_id → holder.
    pub claimed_elsewhere: HashMap<String, String>,
    /// The lease as read, for the report of a cycle that only looks (`status`, dry runs).
    pub seen: Option<LeaseStatus>,
}

impl LeaseTerms {
    /// A keeper without a lease to keep.
    pub(super) fn free() -> LeaseTerms {
        LeaseTerms {
            refused: None,
            claimed_elsewhere: HashMap::new(),
            seen: None,
        }
    }
}

impl Keeper {
    /// Takes or renews the lease at the head of a cycle, keeping `own` claimed, and works out
    /// which other keepers' claims still stand: a claim whose credential changed since this
    /// keeper first saw it is stale (a re-authorisation, or that keeper's own delivery), and
    /// is dropped on the instance.
    pub(super) async fn lease_terms(
        &self,
        lease: &LeaseKeeper,
        journal: &Journal,
        own: Vec<String>,
        estate: &HashMap<&str, &Credential>,
    ) -> LeaseTerms {
        lease.keep_claimed(own);
        let standing = lease.ensure().await;
        let claimed = lease.claimed_elsewhere();
        let seen = journal.foreign_claims_seen().unwrap_or_else(|e| {
            tracing::warn!(event = "journal.read_failed", error = %e, "could not read the claims seen before; counting from now");
            HashMap::new()
        });
        let mut kept = HashMap::new();
        let mut remember = HashMap::new();
        let mut stale = Vec::new();
        for (sys_id, holder) in claimed {
            let now = estate.get(sys_id.as_str()).map(|c| c.refresh.mod_count);
            let first = seen
                .get(&sys_id)
                .filter(|(h, _)| *h == holder)
                .map(|(_, m)| *m);
            match (first, now) {
                (Some(first), Some(now)) if claim_is_stale(first, now) => {
                    stale.push(Claim { holder, sys_id });
                }
                (first, now) => {
                    if let Some(m) = first.or(now) {
                        remember.insert(sys_id.clone(), (holder.clone(), m));
                    }
                    kept.insert(sys_id, holder);
                }
            }
        }
        if let Err(e) = journal.note_foreign_claims(remember).await {
            tracing::warn!(event = "journal.write_failed", error = %e, "could not remember the other keepers' claims");
        }
        if standing.held() && !stale.is_empty() {
            lease.drop_stale_claims(&stale).await;
        }
        LeaseTerms {
            refused: standing.reason(),
            claimed_elsewhere: kept,
            seen: None,
        }
    }

    /// The lease as the instance has it, read without taking it, for a cycle that only looks
    /// (`status`, `once --dry-run`): it shows who holds it, and which credentials wait for
    /// another keeper's journal. A lease that cannot be read is a note in the report, not a
    /// failure: looking needs no lease.
    pub(super) async fn observed_terms(&self, history: Option<&Journal>) -> LeaseTerms {
        let own = history.map(own_holder_id);
        let status = match self.instance.read_lease().await {
            Ok(view) => {
                let this_keeper = view.holder.is_some() && view.holder == own;
                LeaseStatus {
                    this_keeper,
                    pid: view.pid.filter(|_| view.holder.is_some()),
                    expires_in: view.holder.as_ref().map(|_| view.expires_in),
                    holder: view.holder,
                    fence: Some(view.fence),
                    claimed_elsewhere: view
                        .claims
                        .into_iter()
                        .filter(|c| Some(&c.holder) != own.as_ref())
                        .map(|c| (c.sys_id, c.holder))
                        .collect(),
                    problem: None,
                }
            }
            Err(e) => LeaseStatus {
                problem: Some(if e.endpoint_missing() {
                    format!(
                        "the companion has no /lease endpoint ({e}): update the companion from migrations-docs/ (runbook step 2); until then the keeper refreshes nothing"
                    )
                } else {
                    format!("the lease could not be read: {e}")
                }),
                ..LeaseStatus::default()
            },
        };
        LeaseTerms {
            refused: None,
            claimed_elsewhere: status
                .claimed_elsewhere
                .iter()
                .map(|(id, holder)| (id.clone(), holder.clone()))
                .collect(),
            seen: Some(status),
        }
    }

    /// Lets go of the claims a batch no longer needs: answers verified in ServiceNow, and
    /// credentials whose token was never spent (nothing waits for them in the journal).
    pub(super) fn settle_claims(&self, journal: &Journal, settled: &[(String, Settled)]) {
        let Some(lease) = &self.lease else {
            return;
        };
        let done: Vec<&String> = settled
            .iter()
            .filter(|(id, s)| s.outcome.is_success() || !journal.has_pending(id).unwrap_or(true))
            .map(|(id, _)| id)
            .collect();
        lease.unclaim(done);
    }
}
