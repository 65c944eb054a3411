//! A cycle's decisions, from what was read to what is reported: which credentials to refresh
//! and which to hold back ([`plan`]), which journaled answer updates which access row
//! ([`adopt_access_row`]), and what the cycle's results mean for the report, the outcome history
//! and the people who must act ([`settle`]). The engine does the I/O in between.

use super::classify::FailureClass;
use super::credential::Credential;
use super::endpoint::Routes;
use super::guidance::{self, registry_label};
use super::history::{OutcomeRecord, StoredOutcome};
use super::park::Parking;
use super::plan::{Action, Assessment, Policy, Reason, Remembered, assess};
use super::report::{CredentialReport, CycleReport, Hold, Outcome, Settled};
use jiff::Timestamp;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Whether a cycle may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refresh and write.
    Apply,
    /// No token request and no write: report what would be refreshed and why.
    DryRun,
}

/// What the planner decided for a cycle.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The verdict on every credential, in the estate's order.
    pub verdicts: Vec<Assessment>,
    /// The credentials to refresh now (indices into the estate), in the estate's order.
    pub due: Vec<usize>,
    /// What is already settled without a token request (held back by a parked registry; in a
    /// dry run, every due credential), by credential.
    pub settled: HashMap<String, Settled>,
}

/// What the planner knows besides the estate.
#[derive(Debug, Clone, Copy)]
pub struct Knowledge<'a> {
    /// When the estate is judged.
    pub now: Timestamp,
    /// The thresholds (`[refresh]`).
    pub policy: &'a Policy,
    /// Each credential's remembered outcome.
    pub history: &'a HashMap<String, StoredOutcome>,
    /// Credentials with an answer waiting in the journal.
    pub held: &'a HashSet<String>,
    /// Credentials another keeper claims (sys_id → its holder id): its journal may hold their
    /// only valid refresh token.
    pub claimed_elsewhere: &'a HashMap<String, String>,
    /// Why no refresh may start this cycle (the lease is held by another keeper, or cannot be
    /// had); `None` when refreshes may start.
    pub refresh_refused: Option<&'a str>,
    /// Where each registry's token requests may go, or why they may not.
    pub routes: &'a Routes,
    /// Whether the cycle applies changes.
    pub mode: Mode,
}

/// Decides the cycle: each credential's verdict at `now`, then which of those due are refreshed.
/// A credential in `held` has an answer waiting in the journal and is never refreshed again
/// before that answer reached ServiceNow (at a rotating provider the journaled token is the only
/// valid one); nor is one another keeper claims (its journal may hold that token). A due
/// credential of a registry whose route is held back (an unpinned endpoint for a keeper-held
/// secret, an ambiguous name) is blocked, in a dry run too. A due credential of a parked
/// registry is held back unless its configuration changed (`fingerprint`) or the registry's
/// probe is due; and none is refreshed while the lease is not this keeper's
/// (`refresh_refused`).
pub fn plan(
    credentials: &[Credential],
    known: &Knowledge<'_>,
    parking: &mut Parking,
    fingerprint: impl Fn(&Credential) -> Option<String>,
) -> Plan {
    let Knowledge {
        now,
        policy,
        history,
        held,
        claimed_elsewhere,
        refresh_refused,
        routes,
        mode,
    } = *known;
    let verdicts: Vec<Assessment> = credentials
        .iter()
        .map(|c| {
            let remembered = history.get(c.id()).and_then(|o| {
                o.class.map(|class| Remembered {
                    class,
                    refresh_mod_count: o.refresh_mod_count,
                })
            });
            assess(c, now, policy, remembered.as_ref())
        })
        .collect();
    let mut due = Vec::new();
    let mut settled = HashMap::new();
    for (i, (c, verdict)) in credentials.iter().zip(&verdicts).enumerate() {
        if verdict.action != Action::Refresh || held.contains(c.id()) {
            continue;
        }
        if let Some(holder) = claimed_elsewhere.get(c.id()) {
            let message = guidance::claimed_elsewhere(holder);
            settled.insert(
                c.id().to_string(),
                Settled::only(Outcome::Blocked {
                    hold: Hold::ClaimedBy(holder.clone()),
                    message,
                }),
            );
            continue;
        }
        let registry = &c.refresh.registry.sys_id;
        if let Some(Err(held_back)) = routes.get(registry) {
            let message = held_back.message(&registry_label(c));
            settled.insert(
                c.id().to_string(),
                Settled::only(Outcome::Blocked {
                    hold: Hold::Person(FailureClass::Configuration),
                    message,
                }),
            );
            continue;
        }
        if let Some(blocked) = parking.holds_back(registry, fingerprint(c).as_deref(), now) {
            settled.insert(c.id().to_string(), Settled::only(blocked));
            continue;
        }
        if let (Some(reason), Mode::Apply) = (refresh_refused, mode) {
            let message = reason.to_string();
            settled.insert(
                c.id().to_string(),
                Settled::only(Outcome::Blocked {
                    hold: Hold::NoLease,
                    message,
                }),
            );
            continue;
        }
        match mode {
            Mode::Apply => due.push(i),
            Mode::DryRun => {
                settled.insert(c.id().to_string(), Settled::only(Outcome::WouldRefresh));
            }
        }
    }
    Plan {
        verdicts,
        due,
        settled,
    }
}

/// The access row a journaled answer updates. An answer journaled without an access row meant
/// "create one"; if a row for the credential was written after the answer was journaled, it is
/// the one an interrupted POST created, and is updated instead of creating a second one.
pub fn adopt_access_row(
    journaled: Option<&str>,
    journaled_at: Timestamp,
    current: Option<&Credential>,
) -> Option<String> {
    if let Some(row) = journaled {
        return Some(row.to_string());
    }
    let access = current?.access.as_ref()?;
    access
        .updated
        .is_some_and(|updated| updated >= journaled_at)
        .then(|| access.sys_id.clone())
}

/// Something a person may need to hear about, found while settling a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A credential that had failed works again.
    Recovered {
        /// The refresh row's sys_id.
        credential: String,
        /// The credential's name.
        name: String,
        /// The registry's name.
        registry: String,
        /// How it had failed.
        previous: FailureClass,
    },
    /// A credential's refresh row expired: it needs re-authorisation (said once).
    RefreshRowExpired {
        /// The refresh row's sys_id.
        credential: String,
        /// The credential's name.
        name: String,
        /// The registry's name.
        registry: String,
        /// What to do.
        guidance: String,
    },
}

/// What a cycle amounts to.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// The report, one line per credential.
    pub report: CycleReport,
    /// The outcomes to remember (all in one journal transaction).
    pub remember: Vec<OutcomeRecord>,
    /// What to log and report on the instance.
    pub notices: Vec<Notice>,
}

/// What the cycle knew and did, for [`settle`].
#[derive(Debug)]
pub struct CycleFacts<'a> {
    /// The credentials, in the estate's order.
    pub credentials: &'a [Credential],
    /// The planner's verdicts, in the same order.
    pub verdicts: Vec<Assessment>,
    /// What each credential's refresh or re-delivery settled (credentials not here were not
    /// acted on).
    pub results: HashMap<String, Settled>,
    /// Each credential's remembered outcome before the cycle.
    pub history: &'a HashMap<String, StoredOutcome>,
    /// Whether the cycle applied changes.
    pub mode: Mode,
    /// When the cycle started, when it judged the estate, and how long it took.
    pub started: Timestamp,
    /// When the planner judged the estate.
    pub now: Timestamp,
    /// How long the cycle took.
    pub duration: Duration,
    /// `oauth_credential` rows read.
    pub rows: usize,
}

/// Settles a cycle: each credential's outcome (a result, or its blocked verdict, or skipped),
/// what to remember of it and who must hear about what.
pub fn settle(facts: CycleFacts<'_>) -> Settlement {
    let CycleFacts {
        credentials,
        verdicts,
        mut results,
        history,
        mode,
        started,
        now,
        duration,
        rows,
    } = facts;
    let mut lines = Vec::with_capacity(credentials.len());
    let mut remember = Vec::new();
    let mut notices = Vec::new();
    for (c, verdict) in credentials.iter().zip(verdicts) {
        let registry = registry_label(c);
        let settled = results.remove(c.id()).unwrap_or_else(|| {
            Settled::only(match verdict.action {
                Action::Blocked => Outcome::Blocked {
                    hold: Hold::Person(verdict.reason.blocking_class()),
                    message: guidance::blocked(&verdict.reason, &registry),
                },
                _ => Outcome::Skipped,
            })
        });
        let memory = history.get(c.id());
        if mode == Mode::Apply {
            let record = |class: Option<FailureClass>, message: Option<String>| OutcomeRecord {
                credential: c.id().to_string(),
                registry: registry.clone(),
                class,
                message,
                refresh_mod_count: c.refresh.mod_count,
            };
            match &settled.outcome {
                outcome if outcome.is_success() => {
                    remember.push(record(None, None));
                    if let Some(previous) = memory.and_then(|m| m.class) {
                        notices.push(Notice::Recovered {
                            credential: c.id().to_string(),
                            name: c.refresh.name.clone(),
                            registry: registry.clone(),
                            previous,
                        });
                    }
                }
                Outcome::Failed { class, message } => {
                    remember.push(record(Some(*class), Some(message.clone())));
                }
                Outcome::Blocked { message, .. }
                    if matches!(verdict.reason, Reason::RefreshExpired(_))
                        && memory.and_then(|m| m.class) != Some(FailureClass::NeedsReauth) =>
                {
                    remember.push(record(
                        Some(FailureClass::NeedsReauth),
                        Some(message.clone()),
                    ));
                    notices.push(Notice::RefreshRowExpired {
                        credential: c.id().to_string(),
                        name: c.refresh.name.clone(),
                        registry: registry.clone(),
                        guidance: message.clone(),
                    });
                }
                _ => {}
            }
        }
        let success = settled.outcome.is_success();
        let last_error = match settled.outcome.message() {
            Some(message) => Some(message.to_string()),
            None if success => None,
            None => memory.and_then(|m| m.message.clone()),
        };
        lines.push(CredentialReport {
            sys_id: c.id().to_string(),
            name: c.refresh.name.clone(),
            registry,
            registry_id: c.refresh.registry.sys_id.clone(),
            requestor_profile: c.refresh.requestor_profile.clone(),
            access_expires: settled
                .access_expires
                .or_else(|| c.access.as_ref().and_then(|a| a.expires)),
            refresh_expires: settled.refresh_expires.or(c.refresh.expires),
            assessment: verdict,
            last_error,
            last_success: if success {
                Some(now)
            } else {
                memory.and_then(|m| m.last_success)
            },
            last_used: if success { Some(now) } else { c.last_used() },
            outcome: settled.outcome,
        });
    }
    Settlement {
        report: CycleReport {
            started,
            duration,
            rows,
            credentials: lines,
            lease: None,
        },
        remember,
        notices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credential::{CredentialRow, Registry, TokenType};
    use crate::domain::park::RegistryPark;
    use std::sync::Arc;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn credential(id: &str, access_expires: Option<i64>) -> Credential {
        let registry = Arc::new(Registry {
            sys_id: "e1".into(),
            name: "Graph".into(),
            client_id: "cid".into(),
            token_url: "https://login.example/token".into(),
            ..Registry::default()
        });
        let row = |sys_id: &str, token_type, expires: Option<i64>| CredentialRow {
            sys_id: sys_id.into(),
            token_type,
            requestor_profile: format!("p-{id}"),
            user: "u".into(),
            scopes: "s".into(),
            name: format!("{id} name"),
            expires: expires.map(at),
            updated: Some(at(900_000)),
            mod_count: 1,
            registry: Arc::clone(&registry),
        };
        Credential {
            refresh: row(id, TokenType::Refresh, None),
            access: access_expires.map(|e| row(&format!("a-{id}"), TokenType::Access, Some(e))),
        }
    }

    fn policy() -> Policy {
        Policy {
            lead_time: Duration::from_secs(600),
            keepalive: Duration::from_secs(7 * 86_400),
        }
    }

    #[test]
    fn held_credentials_wait_and_parked_registries_hold_back() {
        let now = at(1_000_000);
        let estate = vec![
            credential("r1", None),
            credential("r2", Some(1_000_100)),
            credential("r3", Some(2_000_000)),
        ];
        let held = HashSet::from(["r1".to_string()]);
        let mut parking = Parking::default();
        let history = HashMap::new();
        let policy = policy();
        let nobody_else = HashMap::new();
        let routes = Routes::default();
        let known = Knowledge {
            now,
            policy: &policy,
            history: &history,
            held: &held,
            claimed_elsewhere: &nobody_else,
            refresh_refused: None,
            routes: &routes,
            mode: Mode::Apply,
        };
        let p = plan(&estate, &known, &mut parking, |_| None);
        assert_eq!(p.due, vec![1], "r1 held, r3 fresh");
        let mut parking = Parking::new(
            HashMap::from([(
                "e1".to_string(),
                RegistryPark {
                    registry: "e1".into(),
                    name: "Graph".into(),
                    class: FailureClass::Configuration,
                    message: "bad secret".into(),
                    fingerprint: "f".into(),
                    at: now,
                },
            )]),
            now,
        );
        let nobody = HashSet::new();
        let known = Knowledge {
            held: &nobody,
            mode: Mode::DryRun,
            ..known
        };
        let p = plan(&estate, &known, &mut parking, |_| Some("f".into()));
        assert!(p.due.is_empty());
        assert!(matches!(
            p.settled["r1"].outcome,
            Outcome::Blocked {
                hold: Hold::Person(FailureClass::Configuration),
                ..
            }
        ));
        assert!(!p.settled.contains_key("r3"));

        let claimed = HashMap::from([("r2".to_string(), "other/keeper".to_string())]);
        let known = Knowledge {
            claimed_elsewhere: &claimed,
            mode: Mode::Apply,
            ..known
        };
        let p = plan(&estate, &known, &mut Parking::default(), |_| None);
        assert!(
            p.due.iter().all(|&i| estate[i].id() != "r2"),
            "claimed elsewhere"
        );
        assert!(
            matches!(&p.settled["r2"].outcome, Outcome::Blocked { hold: Hold::ClaimedBy(holder), message } if holder == "other/keeper" && message.contains("other/keeper"))
        );
        let known = Knowledge {
            refresh_refused: Some("the lease is held by keeper x"),
            ..known
        };
        let p = plan(&estate, &known, &mut Parking::default(), |_| None);
        assert!(p.due.is_empty(), "without the lease nothing is refreshed");
        assert!(
            matches!(&p.settled["r1"].outcome, Outcome::Blocked { hold: Hold::NoLease, message } if message.contains("lease"))
        );
    }

    #[test]
    fn a_held_back_registry_blocks_its_due_credentials_in_every_mode() {
        use crate::domain::endpoint::{Family, RegistryRule};
        let now = at(1_000_000);
        let estate = vec![credential("r1", None), credential("r2", Some(2_000_000))];
        // The keeper holds Graph's secret; the instance's token_url is no well-known host.
        let rules = [RegistryRule {
            name: "Graph".into(),
            pin: None,
            keeper_secret: true,
            family: Family::Any,
        }];
        let routes = Routes::plan(&rules, estate.iter().map(|c| &*c.refresh.registry));
        let (history, held, policy) = (HashMap::new(), HashSet::new(), policy());
        let nobody_else = HashMap::new();
        for mode in [Mode::Apply, Mode::DryRun] {
            let known = Knowledge {
                now,
                policy: &policy,
                history: &history,
                held: &held,
                claimed_elsewhere: &nobody_else,
                refresh_refused: None,
                routes: &routes,
                mode,
            };
            let p = plan(&estate, &known, &mut Parking::default(), |_| None);
            assert!(p.due.is_empty(), "{mode:?}");
            match &p.settled["r1"].outcome {
                Outcome::Blocked {
                    hold: Hold::Person(FailureClass::Configuration),
                    message,
                } => {
                    assert!(message.contains("login.example"), "{message}");
                }
                other => panic!("{other:?}"),
            }
            assert!(!p.settled.contains_key("r2"), "not due: nothing to block");
        }
    }

    #[test]
    fn an_interrupted_post_is_adopted_not_repeated() {
        let c = credential("r1", Some(5));
        assert_eq!(
            adopt_access_row(Some("x"), at(0), Some(&c)).as_deref(),
            Some("x")
        );
        assert_eq!(
            adopt_access_row(None, at(900_000), Some(&c)).as_deref(),
            Some("a-r1")
        );
        assert_eq!(adopt_access_row(None, at(900_001), Some(&c)), None);
        assert_eq!(adopt_access_row(None, at(0), None), None);
    }

    #[test]
    fn settling_remembers_failures_and_notices_recoveries() {
        let estate = vec![credential("r1", Some(5)), credential("r2", Some(5))];
        let history = HashMap::from([(
            "r1".to_string(),
            StoredOutcome {
                class: Some(FailureClass::Transient),
                message: Some("boom".into()),
                at: at(1),
                refresh_mod_count: 1,
                last_success: Some(at(0)),
            },
        )]);
        let verdicts = estate
            .iter()
            .map(|c| assess(c, at(1_000_000), &policy(), None))
            .collect();
        let results = HashMap::from([
            (
                "r1".to_string(),
                Settled::only(Outcome::Refreshed {
                    rotated: true,
                    created_access_row: false,
                }),
            ),
            (
                "r2".to_string(),
                Settled::only(Outcome::Failed {
                    class: FailureClass::Throttled,
                    message: "slow down".into(),
                }),
            ),
        ]);
        let s = settle(CycleFacts {
            credentials: &estate,
            verdicts,
            results,
            history: &history,
            mode: Mode::Apply,
            started: at(999_999),
            now: at(1_000_000),
            duration: Duration::from_secs(1),
            rows: 4,
        });
        assert_eq!(s.remember.len(), 2);
        assert_eq!(s.remember[1].class, Some(FailureClass::Throttled));
        assert!(matches!(
            &s.notices[..],
            [Notice::Recovered {
                previous: FailureClass::Transient,
                ..
            }]
        ));
        assert_eq!(s.report.credentials[0].last_error, None);
        assert_eq!(s.report.credentials[0].last_success, Some(at(1_000_000)));
        assert_eq!(
            s.report.credentials[1].last_error.as_deref(),
            Some("slow down")
        );
    }
}
