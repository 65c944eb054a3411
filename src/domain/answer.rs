//! The lifetimes a token answer implies: when the new access token expires, and until when the
//! refresh row is good after a rotation.

use super::time::add;
use jiff::Timestamp;
use std::time::Duration;

/// What a token answer says about lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnswerTimes {
    /// `expires_in`.
    pub expires_in: Option<Duration>,
    /// `expires_on` (Entra v1).
    pub expires_on: Option<Timestamp>,
    /// `refresh_token_expires_in`.
    pub refresh_expires_in: Option<Duration>,
    /// Whether the answer carried a new refresh token.
    pub rotated: bool,
}

/// What to assume where the answer is silent (`[[registry]]` settings or their defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Access-token lifetime without `expires_in` and `expires_on`.
    pub default_expires_in: Duration,
    /// Refresh-token lifetime without `refresh_token_expires_in`.
    pub refresh_token_lifetime: Duration,
}

/// The longest access-token lifetime an answer is believed: beyond it (an `expires_in` of
/// 10^30, an `expires_on` in the year 9999) the answer is cut to it, so a hostile or broken
/// provider cannot make the keeper leave a credential alone for ever.
pub const MAX_ACCESS_LIFETIME: Duration = Duration::from_secs(366 * 86_400);

/// The longest refresh-token lifetime an answer is believed (the longest any provider documents
/// is five years).
pub const MAX_REFRESH_LIFETIME: Duration = Duration::from_secs(5 * 366 * 86_400);

/// When the answer's tokens expire, received at `now`: the access token's expiry, and the
/// refresh row's new expiry when the token rotated, each at most [`MAX_ACCESS_LIFETIME`] and
/// [`MAX_REFRESH_LIFETIME`] away. Whole seconds: ServiceNow keeps nothing finer, and whole
/// seconds let the keeper compare what the instance stored with what it meant.
pub fn expiries(
    answer: AnswerTimes,
    now: Timestamp,
    lifetimes: Lifetimes,
) -> (Timestamp, Option<Timestamp>) {
    let now = whole_seconds(now);
    let access = match (answer.expires_in, answer.expires_on) {
        (Some(d), _) => add(now, d),
        (None, Some(on)) => whole_seconds(on),
        (None, None) => add(now, lifetimes.default_expires_in),
    }
    .min(add(now, MAX_ACCESS_LIFETIME));
    let refresh_lifetime = answer
        .refresh_expires_in
        .unwrap_or(lifetimes.refresh_token_lifetime)
        .min(MAX_REFRESH_LIFETIME);
    (access, answer.rotated.then(|| add(now, refresh_lifetime)))
}

/// `ts` without its fraction of a second.
pub fn whole_seconds(ts: Timestamp) -> Timestamp {
    Timestamp::from_second(ts.as_second()).unwrap_or(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_follow_the_answer_then_the_defaults() {
        let now = Timestamp::from_second(1_000).unwrap() + jiff::SignedDuration::from_millis(700);
        let lifetimes = Lifetimes {
            default_expires_in: Duration::from_secs(3_600),
            refresh_token_lifetime: Duration::from_secs(86_400),
        };
        let at = |s| Timestamp::from_second(s).unwrap();
        let plain = AnswerTimes::default();
        assert_eq!(expiries(plain, now, lifetimes), (at(4_600), None));
        let v1 = AnswerTimes {
            expires_on: Some(at(9_000)),
            rotated: true,
            ..plain
        };
        assert_eq!(expiries(v1, now, lifetimes), (at(9_000), Some(at(87_400))));
        let full = AnswerTimes {
            expires_in: Some(Duration::from_secs(60)),
            expires_on: Some(at(9_000)),
            refresh_expires_in: Some(Duration::from_secs(10)),
            rotated: true,
        };
        assert_eq!(expiries(full, now, lifetimes), (at(1_060), Some(at(1_010))));
    }

    #[test]
    fn absurd_lifetimes_are_cut_to_the_believable() {
        let now = Timestamp::from_second(1_000).unwrap();
        let lifetimes = Lifetimes {
            default_expires_in: Duration::from_secs(3_600),
            refresh_token_lifetime: Duration::from_secs(86_400),
        };
        let forever = AnswerTimes {
            expires_in: Some(Duration::from_secs(u64::MAX)),
            refresh_expires_in: Some(Duration::from_secs(u64::MAX)),
            rotated: true,
            ..AnswerTimes::default()
        };
        let (access, refresh) = expiries(forever, now, lifetimes);
        assert_eq!(access, add(now, MAX_ACCESS_LIFETIME));
        assert_eq!(refresh, Some(add(now, MAX_REFRESH_LIFETIME)));
        let year_9999 = AnswerTimes {
            expires_on: Some(Timestamp::MAX),
            ..AnswerTimes::default()
        };
        assert_eq!(
            expiries(year_9999, now, lifetimes).0,
            add(now, MAX_ACCESS_LIFETIME)
        );
    }
}
