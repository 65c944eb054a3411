//! What a cycle did: one [`Outcome`] per credential, settled into a [`CycleReport`].

use super::classify::FailureClass;
use super::plan::{Action, Assessment, Reason, State};
use jiff::Timestamp;
use std::time::Duration;

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
    /// It needs refreshing but is held back: a person must act first, or another keeper has it.
    Blocked {
        /// What holds it back, as far as who must act cares.
        hold: Hold,
        /// Why, and what to do.
        message: String,
    },
    /// Shutdown arrived before its turn; it is retried next time.
    Deferred,
}

/// What holds back a credential that needs refreshing: it decides who must act
/// ([`super::actor::who_must_act`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// A person must act first; the class says who: a dead refresh token (needs re-authorisation,
    /// needs user action) or a registry that is incomplete or parked after a configuration error.
    Person(FailureClass),
    /// Another keeper claims it (its holder id): that keeper's journal may hold the only valid
    /// refresh token.
    ClaimedBy(String),
    /// This keeper does not hold the instance's lease, or lost it during the cycle: the keeper
    /// holding it refreshes the credential.
    NoLease,
}

/// The kind of an [`Outcome`], without its details: what tables, logs and metrics count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// [`Outcome::Skipped`].
    Skipped,
    /// [`Outcome::WouldRefresh`].
    WouldRefresh,
    /// [`Outcome::WouldRedeliver`].
    WouldRedeliver,
    /// [`Outcome::Refreshed`].
    Refreshed,
    /// [`Outcome::Redelivered`].
    Redelivered,
    /// [`Outcome::Failed`].
    Failed,
    /// [`Outcome::Blocked`].
    Blocked,
    /// [`Outcome::Deferred`].
    Deferred,
}

impl OutcomeKind {
    /// The words tables and `status` show.
    pub fn label(self) -> &'static str {
        match self {
            OutcomeKind::Skipped => "skipped",
            OutcomeKind::WouldRefresh => "would refresh",
            OutcomeKind::WouldRedeliver => "would re-deliver",
            OutcomeKind::Refreshed => "refreshed",
            OutcomeKind::Redelivered => "re-delivered",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Blocked => "blocked",
            OutcomeKind::Deferred => "deferred",
        }
    }

    /// The `outcome` label of `sn_oauth_keeper_refreshes_total`, for the kinds that are refresh
    /// attempts; `None` for the others (nothing was due, a person must act first, or shutdown
    /// came).
    pub fn metric_label(self) -> Option<&'static str> {
        match self {
            OutcomeKind::Refreshed => Some("refreshed"),
            OutcomeKind::Redelivered => Some("redelivered"),
            OutcomeKind::Failed => Some("failed"),
            _ => None,
        }
    }
}

impl Outcome {
    /// Whether this counts against exit code 0.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed { .. } | Outcome::Blocked { .. })
    }

    /// Whether a token reached ServiceNow (refreshed now, or re-delivered from the journal).
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Refreshed { .. } | Outcome::Redelivered)
    }

    /// Its kind.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Skipped => OutcomeKind::Skipped,
            Outcome::WouldRefresh => OutcomeKind::WouldRefresh,
            Outcome::WouldRedeliver => OutcomeKind::WouldRedeliver,
            Outcome::Refreshed { .. } => OutcomeKind::Refreshed,
            Outcome::Redelivered => OutcomeKind::Redelivered,
            Outcome::Failed { .. } => OutcomeKind::Failed,
            Outcome::Blocked { .. } => OutcomeKind::Blocked,
            Outcome::Deferred => OutcomeKind::Deferred,
        }
    }

    /// A short label for tables and logs.
    pub fn label(&self) -> &'static str {
        self.kind().label()
    }

    /// The failure's message, if it is one.
    pub fn message(&self) -> Option<&str> {
        match self {
            Outcome::Failed { message, .. } | Outcome::Blocked { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// What a cycle settled for one credential: its outcome, and the access and refresh expiries it
/// wrote (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// What happened.
    pub outcome: Outcome,
    /// The access token's expiry as written.
    pub access_expires: Option<Timestamp>,
    /// The refresh row's expiry as written (only when the rotated token was stored).
    pub refresh_expires: Option<Timestamp>,
}

impl Settled {
    /// An outcome that wrote nothing.
    pub fn only(outcome: Outcome) -> Settled {
        Settled {
            outcome,
            access_expires: None,
            refresh_expires: None,
        }
    }
}

impl From<Outcome> for Settled {
    fn from(outcome: Outcome) -> Settled {
        Settled::only(outcome)
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
    /// The planner's verdict before the cycle acted ([`CredentialReport::assessment_after`]:
    /// once it acted).
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
    /// The instance's keeper lease as the cycle saw it; `None` where no lease was asked for
    /// (a keeper that writes nothing and could not be told, or one built without a journal
    /// whose cycle did not read it).
    pub lease: Option<LeaseStatus>,
}

/// The instance's keeper lease, as a cycle saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseStatus {
    /// Who holds it; `None` when nobody does, or it could not be read (`problem`).
    pub holder: Option<String>,
    /// Whether the holder is this keeper (its host and journal).
    pub this_keeper: bool,
    /// The holder's process id, when known.
    pub pid: Option<u64>,
    /// How long the holder's lease had left when last asked.
    pub expires_in: Option<Duration>,
    /// The lease's fence, when known.
    pub fence: Option<u64>,
    /// Credentials other keepers claim: refresh row sys_id → holder id. This keeper leaves
    /// them alone ("waiting for keeper X's journal").
    pub claimed_elsewhere: std::collections::BTreeMap<String, String>,
    /// Why the lease could not be read or taken (secret-free).
    pub problem: Option<String>,
}

impl CredentialReport {
    /// Its verdict once the cycle acted (the planner judged it before acting): refreshed or
    /// re-delivered this cycle, it is fresh, its access token valid for as long as was written;
    /// refused by the provider for a dead refresh token or a user action, it needs
    /// re-authorisation now, as the next cycle's planner will say. A page, a gauge or an alert
    /// should not wait a cycle to learn either. Otherwise the planner's verdict stands. `now` is
    /// the cycle's start.
    pub fn assessment_after(&self, now: Timestamp) -> Assessment {
        match &self.outcome {
            Outcome::Refreshed { .. } | Outcome::Redelivered => Assessment {
                state: State::Fresh,
                reason: Reason::AccessValid(self.access_expires.map_or(Duration::ZERO, |e| {
                    Duration::from_secs(
                        u64::try_from(e.as_second().saturating_sub(now.as_second())).unwrap_or(0),
                    )
                })),
                action: Action::Skip,
            },
            Outcome::Failed { class, .. } if class.parks_credential() => Assessment {
                state: State::NeedsReauth,
                reason: Reason::Parked(*class),
                action: Action::Blocked,
            },
            _ => self.assessment.clone(),
        }
    }
}

impl CycleReport {
    /// Credentials that failed or are blocked.
    pub fn failures(&self) -> usize {
        self.credentials
            .iter()
            .filter(|c| c.outcome.is_failure())
            .count()
    }

    /// Count of credentials with an outcome of this kind.
    pub fn count(&self, kind: OutcomeKind) -> usize {
        self.credentials
            .iter()
            .filter(|c| c.outcome.kind() == kind)
            .count()
    }
}

/// Reports for the tests of this module and of what renders reports.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// `secs` after a fixed instant.
    pub(crate) fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// The credential "Mailbox" of registry "Graph", due (its access token expiring), after a
    /// cycle that ended in `outcome`.
    pub(crate) fn due(outcome: Outcome) -> CredentialReport {
        CredentialReport {
            sys_id: "r1".into(),
            name: "Mailbox".into(),
            registry: "Graph".into(),
            registry_id: "e1".into(),
            requestor_profile: "p1".into(),
            assessment: Assessment {
                state: State::Due,
                reason: Reason::AccessExpiring(Duration::from_secs(120)),
                action: Action::Refresh,
            },
            outcome,
            access_expires: Some(at(3_600)),
            refresh_expires: None,
            last_error: None,
            last_success: None,
            last_used: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{at, due};
    use super::*;

    #[test]
    fn a_refreshed_credential_is_fresh_once_the_cycle_acted() {
        for outcome in [
            Outcome::Refreshed {
                rotated: true,
                created_access_row: false,
            },
            Outcome::Redelivered,
        ] {
            let after = due(outcome).assessment_after(at(0));
            assert_eq!(after.state, State::Fresh);
            assert_eq!(
                after.reason,
                Reason::AccessValid(Duration::from_secs(3_600))
            );
            assert_eq!(after.action, Action::Skip);
        }
    }

    #[test]
    fn a_dead_refresh_token_needs_reauthorisation_at_once_and_a_passing_failure_stays_due() {
        let dead = due(Outcome::Failed {
            class: FailureClass::NeedsReauth,
            message: "invalid_grant".into(),
        })
        .assessment_after(at(0));
        assert_eq!(
            (dead.state, dead.action),
            (State::NeedsReauth, Action::Blocked)
        );
        assert_eq!(dead.reason, Reason::Parked(FailureClass::NeedsReauth));
        let passing = due(Outcome::Failed {
            class: FailureClass::Transient,
            message: "503".into(),
        });
        assert_eq!(passing.assessment_after(at(0)), passing.assessment);
        let dry = due(Outcome::WouldRefresh);
        assert_eq!(
            dry.assessment_after(at(0)),
            dry.assessment,
            "a survey is as planned"
        );
    }
}
