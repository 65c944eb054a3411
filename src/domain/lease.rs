//! The keeper lease's rules, on a monotonic clock (times are offsets from any fixed origin):
//! when to renew, whether a token request may still start, and when another keeper's claim has
//! gone stale. The lease itself is on the instance (the companion's `/lease`).

use std::time::Duration;

/// The most characters a holder id may have (the companion's limit).
pub const MAX_HOLDER_CHARS: usize = 100;

/// This keeper's hold on the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenure {
    /// The lease's fence when taken or last renewed.
    pub fence: u64,
    /// When the request that took or renewed it was sent: the instance started counting its
    /// life no earlier, so counting from here never overstates what is left.
    pub sent_at: Duration,
    /// Its life.
    pub ttl: Duration,
}

impl Tenure {
    /// When it runs out.
    pub fn expires_at(&self) -> Duration {
        self.sent_at.saturating_add(self.ttl)
    }

    /// How long it has left at `now`.
    pub fn left(&self, now: Duration) -> Duration {
        self.expires_at().saturating_sub(now)
    }

    /// Whether to renew at `now`: once a third of its life has passed.
    pub fn renewal_due(&self, now: Duration) -> bool {
        now >= self.sent_at.saturating_add(self.ttl / 3)
    }

    /// Whether a token request may start at `now`: more than `need` (the request's deadline)
    /// must be left, so a keeper paused past its lease (GC, VM migration, SIGSTOP) wakes up and
    /// stops instead of spending a token the next holder may have spent already.
    pub fn allows_request(&self, now: Duration, need: Duration) -> bool {
        self.left(now) > need
    }
}

/// The holder id of a keeper: its host and its journal's identity — nothing that changes with
/// the process, so a keeper restarted on the same journal renews its predecessor's lease and
/// owns its claims. Control characters are dropped and the host shortened so the id fits
/// [`MAX_HOLDER_CHARS`].
pub fn holder_id(host: &str, journal: &str) -> String {
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).collect() };
    let journal = clean(journal);
    let room = MAX_HOLDER_CHARS.saturating_sub(journal.chars().count() + 1);
    let host: String = clean(host).trim().chars().take(room).collect();
    let host = if host.is_empty() {
        "unknown-host".chars().take(room).collect()
    } else {
        host
    };
    format!("{host}/{journal}")
}

/// Whether `other` is a twin of the keeper `own`: another holder id with the same journal
/// identity (the part after the last `/`). One journal under two host names is a renamed host
/// (a pod or container named anew) or a copied state directory.
pub fn is_twin(own: &str, other: &str) -> bool {
    let journal = |id: &str| id.rsplit_once('/').map(|(_, j)| j.to_owned());
    own != other && journal(own).is_some() && journal(own) == journal(other)
}

/// Whether another keeper's claim on a credential has gone stale: its refresh row changed
/// (`sys_mod_count` moved) since this keeper first saw the claim. Nobody but that keeper's own
/// delivery touches a claimed credential; a change is a re-authorisation or the instance's own
/// refresh — after which the claim protects nothing — or that keeper's delivery, after which
/// the row holds its token anyway.
pub fn claim_is_stale(first_seen_mod_count: u64, current_mod_count: u64) -> bool {
    current_mod_count != first_seen_mod_count
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_twin_shares_the_journal_under_another_host_name() {
        let own = holder_id("keeper-0", "j-1234");
        assert!(is_twin(&own, &holder_id("keeper-7f9c", "j-1234")));
        assert!(!is_twin(&own, &own));
        assert!(!is_twin(&own, &holder_id("keeper-0", "j-5678")));
        assert!(!is_twin(&own, "no-journal-part"));
        assert!(!is_twin("no-journal-part", "other"));
    }

    #[test]
    fn a_lease_is_renewed_at_a_third_and_guards_each_request_with_a_margin() {
        let t = Tenure {
            fence: 3,
            sent_at: S(100),
            ttl: S(60),
        };
        assert!(!t.renewal_due(S(119)));
        assert!(t.renewal_due(S(120)));
        assert_eq!(t.left(S(130)), S(30));
        assert!(t.allows_request(S(129), S(30)));
        assert!(
            !t.allows_request(S(130), S(30)),
            "exactly the deadline is not enough"
        );
        assert!(!t.allows_request(S(500), S(30)), "woken up long after");
    }

    #[test]
    fn holder_ids_are_stable_clean_and_short() {
        assert_eq!(holder_id("keeper-1", "0a1b"), "keeper-1/0a1b");
        assert_eq!(holder_id(" \u{1b}[31mhost\n", "j"), "[31mhost/j");
        assert_eq!(holder_id("", "j"), "unknown-host/j");
        let long = holder_id(&"h".repeat(300), &"j".repeat(32));
        assert_eq!(long.chars().count(), MAX_HOLDER_CHARS);
        assert!(long.ends_with(&"j".repeat(32)));
    }

    proptest! {
        #[test]
        fn a_renewed_lease_always_leaves_the_margin(
            ttl_s in 16u64..600,
            timeout_s in 1u64..400,
            elapsed_ms in 0u64..600_000,
        ) {
            // Config refuses ttl <= 1.5 × timeout; renewing at a third leaves two thirds.
            prop_assume!(ttl_s * 2 > timeout_s * 3);
            let t = Tenure { fence: 1, sent_at: Duration::ZERO, ttl: S(ttl_s) };
            let now = Duration::from_millis(elapsed_ms);
            if !t.renewal_due(now) {
                prop_assert!(t.allows_request(now, S(timeout_s)));
            }
        }
    }
}
