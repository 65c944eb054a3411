//! The refresh planner: for each credential, its state and whether to refresh it now, and why.

use super::classify::FailureClass;
use super::credential::Credential;
use super::time::{add, human_duration, sub};
use jiff::Timestamp;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// How often a credential whose refresh-token row nears its `expires` is retried when the provider
/// does not renew it: a refresh only extends that row when the provider rotates the token.
pub const REFRESH_EXPIRY_RETRY: Duration = Duration::from_secs(86_400);

/// The thresholds the planner applies (from `[refresh]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Refresh access tokens that expire sooner than this.
    pub lead_time: Duration,
    /// Refresh anyway when no token was minted from the refresh token for longer than this, so
    /// provider inactivity limits (Entra: 90 days) never lapse.
    pub keepalive: Duration,
}

/// The state of a credential as `status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum State {
    /// The access token is valid for longer than the lead time.
    #[serde(rename = "fresh")]
    Fresh,
    /// The access token expired or expires within the lead time.
    #[serde(rename = "due")]
    Due,
    /// No access-token row exists.
    #[serde(rename = "missing access token")]
    MissingAccessToken,
    /// The refresh token idles towards its inactivity limit or its row nears `expires`.
    #[serde(rename = "refresh token expiring")]
    RefreshTokenExpiring,
    /// The refresh token is dead; only a person can re-authorise.
    #[serde(rename = "needs re-authorisation")]
    NeedsReauth,
}

impl State {
    /// Every state, from the best to the worst.
    pub const ALL: [State; 5] = [
        State::Fresh,
        State::Due,
        State::MissingAccessToken,
        State::RefreshTokenExpiring,
        State::NeedsReauth,
    ];

    /// The contract's wording.
    pub fn label(self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Due => "due",
            State::MissingAccessToken => "missing access token",
            State::RefreshTokenExpiring => "refresh token expiring",
            State::NeedsReauth => "needs re-authorisation",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a credential is in its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The access token is valid for this long, beyond the lead time.
    AccessValid(Duration),
    /// No access-token row.
    MissingAccessToken,
    /// The access row has no `expires`.
    AccessWithoutExpiry,
    /// The access token expired this long ago.
    AccessExpired(Duration),
    /// The access token expires in this long, within the lead time.
    AccessExpiring(Duration),
    /// No token was minted from the refresh token for this long (beyond the keepalive).
    Idle(Duration),
    /// The refresh row's `expires` is this close.
    RefreshExpiring(Duration),
    /// The refresh row's `expires` has passed.
    RefreshExpired(Duration),
    /// An earlier refresh failed with a class that needs a person; the refresh row has not
    /// changed since.
    Parked(FailureClass),
    /// The row does not say where or as whom to refresh (empty token URL or client id).
    RegistryIncomplete,
}

impl Reason {
    /// The class of failure a credential the planner blocks for this reason stands for: who
    /// must act before it can be refreshed. An incomplete registry is a configuration error; a
    /// parked credential keeps the class it failed with; a dead refresh row (the only other
    /// reason the planner blocks for) needs re-authorisation.
    pub fn blocking_class(&self) -> FailureClass {
        match self {
            Reason::RegistryIncomplete => FailureClass::Configuration,
            Reason::Parked(class) => *class,
            _ => FailureClass::NeedsReauth,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::AccessValid(d) => write!(f, "access token valid for {}", human_duration(*d)),
            Reason::MissingAccessToken => f.write_str("no access-token row"),
            Reason::AccessWithoutExpiry => f.write_str("access-token row has no expiry"),
            Reason::AccessExpired(d) => {
                write!(f, "access token expired {} ago", human_duration(*d))
            }
            Reason::AccessExpiring(d) => {
                write!(f, "access token expires in {}", human_duration(*d))
            }
            Reason::Idle(d) => write!(
                f,
                "refresh token unused for {} (keepalive)",
                human_duration(*d)
            ),
            Reason::RefreshExpiring(d) => {
                write!(f, "refresh-token row expires in {}", human_duration(*d))
            }
            Reason::RefreshExpired(d) => {
                write!(f, "refresh-token row expired {} ago", human_duration(*d))
            }
            Reason::Parked(class) => {
                let why = match class {
                    FailureClass::NeedsReauth => "the provider no longer accepts its refresh token",
                    FailureClass::NeedsUserAction => {
                        "the provider asks for user or admin action (consent, MFA, a password change)"
                    }
                    other => other.label(),
                };
                write!(
                    f,
                    "last refresh failed: {why}; waiting for the credential to be re-authorised"
                )
            }
            Reason::RegistryIncomplete => {
                f.write_str("Application Registry has no token_url or client_id")
            }
        }
    }
}

/// What the keeper should do with a credential this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do.
    Skip,
    /// Refresh it now.
    Refresh,
    /// It needs refreshing but cannot be: a person must act. Counts as a failure.
    Blocked,
}

/// The planner's verdict on one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The state to report.
    pub state: State,
    /// Why.
    pub reason: Reason,
    /// What to do now.
    pub action: Action,
}

/// What the keeper remembers of a credential's last failure (from the outcome store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    /// The class of the last failure.
    pub class: FailureClass,
    /// The refresh row's `sys_mod_count` when it failed: once it moves, someone re-authorised.
    pub refresh_mod_count: u64,
}

/// Decides state and action for one credential at `now`.
pub fn assess(
    credential: &Credential,
    now: Timestamp,
    policy: &Policy,
    remembered: Option<&Remembered>,
) -> Assessment {
    let blocked = |state, reason| Assessment {
        state,
        reason,
        action: Action::Blocked,
    };
    let refresh = &credential.refresh;
    if let Some(expires) = refresh.expires
        && expires <= now
    {
        return blocked(
            State::NeedsReauth,
            Reason::RefreshExpired(span(expires, now)),
        );
    }
    if let Some(memory) = remembered
        && memory.class.parks_credential()
        && memory.refresh_mod_count == refresh.mod_count
    {
        return blocked(State::NeedsReauth, Reason::Parked(memory.class));
    }
    if refresh.registry.token_url.trim().is_empty() || refresh.registry.client_id.trim().is_empty()
    {
        return blocked(State::Due, Reason::RegistryIncomplete);
    }
    // What the access token needs, and what the refresh token needs; the state reports the more
    // urgent of the two (a refresh token about to die outranks an expired access token), and
    // the credential is refreshed when either asks for it.
    let access_need = match &credential.access {
        None => Some((State::MissingAccessToken, Reason::MissingAccessToken)),
        Some(access) => match access.expires {
            None => Some((State::Due, Reason::AccessWithoutExpiry)),
            Some(e) if e <= now => Some((State::Due, Reason::AccessExpired(span(e, now)))),
            Some(e) if e < add(now, policy.lead_time) => {
                Some((State::Due, Reason::AccessExpiring(span(now, e))))
            }
            Some(_) => None,
        },
    };
    let last_used = credential.last_used();
    let idle = last_used.filter(|used| *used < sub(now, policy.keepalive));
    let refresh_need = if let Some(used) = idle {
        Some((Reason::Idle(span(used, now)), true))
    } else if let Some(expires) = refresh.expires
        && expires < add(now, policy.keepalive)
    {
        let recently_tried = last_used.is_some_and(|u| u >= sub(now, REFRESH_EXPIRY_RETRY));
        Some((Reason::RefreshExpiring(span(now, expires)), !recently_tried))
    } else {
        None
    };
    let refresh_wanted = refresh_need.as_ref().is_some_and(|(_, wanted)| *wanted);
    let action = if access_need.is_some() || refresh_wanted {
        Action::Refresh
    } else {
        Action::Skip
    };
    match (refresh_need, access_need) {
        (Some((reason, _)), _) => Assessment {
            state: State::RefreshTokenExpiring,
            reason,
            action,
        },
        (None, Some((state, reason))) => Assessment {
            state,
            reason,
            action,
        },
        (None, None) => Assessment {
            state: State::Fresh,
            reason: Reason::AccessValid(
                credential
                    .access
                    .as_ref()
                    .and_then(|a| a.expires)
                    .map_or(Duration::ZERO, |e| span(now, e)),
            ),
            action,
        },
    }
}

/// `to - from` as an unsigned duration (zero when negative).
fn span(from: Timestamp, to: Timestamp) -> Duration {
    let secs = to.as_second().saturating_sub(from.as_second());
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credential::tests::row;
    use crate::domain::credential::{Credential, TokenType};
    use proptest::prelude::*;

    const NOW: i64 = 2_000_000_000;
    const POLICY: Policy = Policy {
        lead_time: Duration::from_secs(600),
        keepalive: Duration::from_secs(7 * 86_400),
    };

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn credential(access_expires: Option<Option<i64>>, refresh_expires: Option<i64>) -> Credential {
        let mut refresh = row("r1", TokenType::Refresh, "p", "e", refresh_expires);
        refresh.updated = Some(ts(NOW - 3_600));
        let access = access_expires.map(|e| {
            let mut a = row("a1", TokenType::Access, "p", "e", e);
            a.updated = Some(ts(NOW - 600));
            a
        });
        Credential { refresh, access }
    }

    fn now() -> Timestamp {
        ts(NOW)
    }

    #[test]
    fn a_parked_credential_says_why_in_words() {
        for class in [FailureClass::NeedsReauth, FailureClass::NeedsUserAction] {
            let said = Reason::Parked(class).to_string();
            assert!(!said.contains(class.label()), "{said}");
            assert!(said.contains("the provider"), "{said}");
        }
    }

    #[test]
    fn fresh_credentials_are_left_alone() {
        let a = assess(
            &credential(Some(Some(NOW + 3_600)), Some(NOW + 90 * 86_400)),
            now(),
            &POLICY,
            None,
        );
        assert_eq!(a.state, State::Fresh);
        assert_eq!(a.action, Action::Skip);
    }

    #[test]
    fn missing_expired_and_expiring_access_tokens_are_due() {
        let missing = assess(&credential(None, None), now(), &POLICY, None);
        assert_eq!(
            (missing.state, missing.action),
            (State::MissingAccessToken, Action::Refresh)
        );
        let expired = assess(&credential(Some(Some(NOW - 5)), None), now(), &POLICY, None);
        assert_eq!(
            (expired.state, expired.action),
            (State::Due, Action::Refresh)
        );
        assert_eq!(
            expired.reason,
            Reason::AccessExpired(Duration::from_secs(5))
        );
        let expiring = assess(
            &credential(Some(Some(NOW + 599)), None),
            now(),
            &POLICY,
            None,
        );
        assert_eq!(
            (expiring.state, expiring.action),
            (State::Due, Action::Refresh)
        );
        let no_expiry = assess(&credential(Some(None), None), now(), &POLICY, None);
        assert_eq!(no_expiry.action, Action::Refresh);
    }

    #[test]
    fn idle_refresh_tokens_are_kept_alive() {
        let mut c = credential(Some(Some(NOW + 30 * 86_400)), None);
        c.refresh.updated = Some(ts(NOW - 85 * 86_400));
        if let Some(a) = c.access.as_mut() {
            a.updated = Some(ts(NOW - 85 * 86_400));
        }
        let a = assess(&c, now(), &POLICY, None);
        assert_eq!(
            (a.state, a.action),
            (State::RefreshTokenExpiring, Action::Refresh)
        );
        assert!(matches!(a.reason, Reason::Idle(_)));
    }

    #[test]
    fn refresh_row_expiry_is_retried_at_most_daily() {
        let c = credential(Some(Some(NOW + 30 * 86_400)), Some(NOW + 2 * 86_400));
        let a = assess(&c, now(), &POLICY, None);
        assert_eq!(a.state, State::RefreshTokenExpiring);
        assert_eq!(a.action, Action::Skip, "used 10 minutes ago");
        let mut old = c.clone();
        old.refresh.updated = Some(ts(NOW - 2 * 86_400));
        if let Some(acc) = old.access.as_mut() {
            acc.updated = Some(ts(NOW - 2 * 86_400));
        }
        assert_eq!(assess(&old, now(), &POLICY, None).action, Action::Refresh);
    }

    #[test]
    fn expired_refresh_rows_and_parked_credentials_need_a_person() {
        let dead = assess(&credential(None, Some(NOW - 10)), now(), &POLICY, None);
        assert_eq!(
            (dead.state, dead.action),
            (State::NeedsReauth, Action::Blocked)
        );
        assert_eq!(dead.reason.blocking_class(), FailureClass::NeedsReauth);
        let memory = Remembered {
            class: FailureClass::NeedsReauth,
            refresh_mod_count: 0,
        };
        let parked = assess(&credential(None, None), now(), &POLICY, Some(&memory));
        assert_eq!(
            (parked.state, parked.action),
            (State::NeedsReauth, Action::Blocked)
        );
        let consent = Remembered {
            class: FailureClass::NeedsUserAction,
            ..memory
        };
        let waiting = assess(&credential(None, None), now(), &POLICY, Some(&consent));
        assert_eq!(
            waiting.reason.blocking_class(),
            FailureClass::NeedsUserAction,
            "a parked credential keeps its class"
        );
        let moved = Remembered {
            refresh_mod_count: 7,
            ..memory
        };
        let retried = assess(&credential(None, None), now(), &POLICY, Some(&moved));
        assert_eq!(retried.action, Action::Refresh, "re-authorised since");
        let transient = Remembered {
            class: FailureClass::Transient,
            refresh_mod_count: 0,
        };
        assert_eq!(
            assess(&credential(None, None), now(), &POLICY, Some(&transient)).action,
            Action::Refresh
        );
    }

    #[test]
    fn incomplete_registry_is_blocked() {
        let mut c = credential(None, None);
        std::sync::Arc::make_mut(&mut c.refresh.registry)
            .token_url
            .clear();
        let a = assess(&c, now(), &POLICY, None);
        assert_eq!(a.action, Action::Blocked);
        assert_eq!(a.reason.blocking_class(), FailureClass::Configuration);
    }

    proptest! {
        /// Whatever the timestamps, an access token that is missing or expires within the lead
        /// time is refreshed unless a person must act first; and nothing valid beyond both
        /// thresholds is ever refreshed.
        #[test]
        fn planner_invariants(
            access in proptest::option::of(proptest::option::of(-200_000i64..2_000_000)),
            refresh_exp in proptest::option::of(-200_000i64..20_000_000),
            refresh_age in 0i64..20_000_000,
            access_age in 0i64..20_000_000,
            lead in 0u64..100_000,
            keepalive in 1u64..10_000_000,
        ) {
            let policy = Policy { lead_time: Duration::from_secs(lead), keepalive: Duration::from_secs(keepalive) };
            let mut c = credential(access.map(|a| a.map(|d| NOW + d)), refresh_exp.map(|d| NOW + d));
            c.refresh.updated = Some(ts(NOW - refresh_age));
            if let Some(a) = c.access.as_mut() { a.updated = Some(ts(NOW - access_age)); }
            let verdict = assess(&c, now(), &policy, None);
            let refresh_dead = refresh_exp.is_some_and(|d| d <= 0);
            if refresh_dead {
                prop_assert_eq!(verdict.action, Action::Blocked);
            } else {
                let access_needs = match access {
                    None | Some(None) => true,
                    Some(Some(d)) => d < i64::try_from(lead).unwrap(),
                };
                if access_needs {
                    prop_assert_eq!(verdict.action, Action::Refresh);
                }
                let idle = refresh_age.min(access.map_or(refresh_age, |_| access_age)) > i64::try_from(keepalive).unwrap();
                let refresh_far = refresh_exp.is_none_or(|d| d >= i64::try_from(keepalive).unwrap());
                if !access_needs && !idle && refresh_far {
                    prop_assert_eq!(verdict.action, Action::Skip);
                    prop_assert_eq!(verdict.state, State::Fresh);
                }
            }
        }
    }
}
