//! When a refresh token dies: the sooner of its row's `expires` and its provider's inactivity
//! limit (last use + the refresh-token lifetime; Entra: 90 days).

use super::time::add;
use jiff::Timestamp;
use std::time::Duration;

/// The refresh token's deadline, from what ServiceNow shows: the row's `expires` and the last
/// time a token was minted from it. `None` when neither is known.
pub fn refresh_token_deadline(
    row_expires: Option<Timestamp>,
    last_used: Option<Timestamp>,
    lifetime: Duration,
) -> Option<Timestamp> {
    let inactivity = last_used.map(|used| add(used, lifetime));
    match (row_expires, inactivity) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sooner_of_row_expiry_and_inactivity_limit() {
        let t = |s| Timestamp::from_second(s).unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(refresh_token_deadline(None, None, day), None);
        assert_eq!(refresh_token_deadline(Some(t(10)), None, day), Some(t(10)));
        assert_eq!(
            refresh_token_deadline(None, Some(t(0)), day),
            Some(t(86_400))
        );
        assert_eq!(
            refresh_token_deadline(Some(t(90_000)), Some(t(0)), day),
            Some(t(86_400))
        );
        assert_eq!(
            refresh_token_deadline(Some(t(5)), Some(t(0)), day),
            Some(t(5))
        );
    }
}
