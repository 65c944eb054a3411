//! The cost floor of a cycle: the calls it cannot avoid and the waiting they imply, and the
//! calls the simulator's request log shows, by kind.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sn_oauth_keeper_sim::{RecordedRequest, Target};

use crate::Size;
use crate::keeper::COMPANION_BATCH;

/// Rows per Table API page: the keeper's default `instance.page_size`, set explicitly.
pub(crate) const PAGE_SIZE: usize = 1_000;

/// Writes per refreshed credential. The bench's provider rotates the refresh token on every
/// use (Entra-like), so each refresh PATCHes the refresh row and the access row.
pub(crate) const WRITES_PER_REFRESH: usize = 2;

/// Single-row reads per refreshed credential: the engine's documented race check reads the
/// refresh row's version (`sys_mod_count`, `sys_updated_by`) before overwriting it with a rotated
/// token (`Keeper::safe_to_overwrite_refresh_row`); every bench refresh rotates.
const RACE_CHECKS_PER_REFRESH: usize = 1;

/// Calls by kind, as counted in the simulator's request log (or as the floor allows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Calls {
    /// Paged `GET oauth_credential` (discovery).
    pub(crate) discovery: usize,
    /// `GET sys_user` (the integration user's time zone, once per process before a write).
    pub(crate) user: usize,
    /// Companion calls (secrets, up to 100 credentials each).
    pub(crate) companion: usize,
    /// Token requests.
    pub(crate) token: usize,
    /// Table API writes (PATCH, PUT, POST, DELETE).
    pub(crate) write: usize,
    /// Single-row `GET`s of the Table API: the race check's re-read.
    pub(crate) reread: usize,
    /// Anything else.
    pub(crate) other: usize,
}

impl Calls {
    /// Calls of every kind.
    pub(crate) fn total(&self) -> usize {
        self.discovery
            + self.user
            + self.companion
            + self.token
            + self.write
            + self.reread
            + self.other
    }

    /// The calls of a request log, by kind.
    pub(crate) fn count(log: &[RecordedRequest]) -> Calls {
        let mut calls = Calls::default();
        for r in log {
            let read =
                r.method.eq_ignore_ascii_case("GET") || r.method.eq_ignore_ascii_case("HEAD");
            match &r.target {
                Target::TableApi if read => {
                    let rest = r
                        .path
                        .split_once("/table/")
                        .map_or("", |(_, rest)| rest)
                        .trim_end_matches('/');
                    match rest.split_once('/') {
                        Some(_) => calls.reread += 1,
                        None if rest == "oauth_credential" => calls.discovery += 1,
                        None if rest == "sys_user" => calls.user += 1,
                        None => calls.other += 1,
                    }
                }
                Target::TableApi => calls.write += 1,
                Target::Companion => calls.companion += 1,
                Target::Provider(_) if r.method.eq_ignore_ascii_case("POST") => calls.token += 1,
                _ => calls.other += 1,
            }
        }
        calls
    }

    /// The floor of one cycle that refreshes `due` of `rows` rows, in a fresh keeper process.
    pub(crate) fn floor(rows: usize, due: usize) -> Calls {
        Calls {
            discovery: pages(rows),
            user: usize::from(due > 0),
            companion: due.div_ceil(COMPANION_BATCH),
            token: due,
            write: WRITES_PER_REFRESH * due,
            reread: RACE_CHECKS_PER_REFRESH * due,
            other: 0,
        }
    }

    /// Each kind with its count, in the tables' column order.
    pub(crate) fn kinds(&self) -> [(&'static str, usize); 7] {
        [
            ("discovery", self.discovery),
            ("user", self.user),
            ("companion", self.companion),
            ("token", self.token),
            ("write", self.write),
            ("reread", self.reread),
            ("other", self.other),
        ]
    }
}

/// Discovery pages for `rows` rows (an empty table still takes one).
pub(crate) fn pages(rows: usize) -> usize {
    rows.div_ceil(PAGE_SIZE).max(1)
}

/// The wall-time floor of one cycle: discovery pages one after the other, one companion call
/// before the first token request, then ceil(D/C) rounds of a token request, the race check's
/// read and k writes, one after the other.
pub(crate) fn wall_floor(size: Size, c: usize, lp: Duration, li: Duration) -> Duration {
    let discovery = li * u32::try_from(pages(size.rows)).unwrap_or(u32::MAX);
    if size.due == 0 {
        return discovery;
    }
    let rounds = u32::try_from(size.due.div_ceil(c)).unwrap_or(u32::MAX);
    let instance_calls = WRITES_PER_REFRESH + RACE_CHECKS_PER_REFRESH;
    let per_round = lp + li * u32::try_from(instance_calls).unwrap_or(u32::MAX);
    discovery + li + per_round * rounds
}

/// `actual / floor`; 1 when both are zero, infinite when only the floor is.
pub(crate) fn ratio(actual: f64, floor: f64) -> f64 {
    if floor > 0.0 {
        actual / floor
    } else if actual == 0.0 {
        1.0
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_follow_the_formula() {
        let f = Calls::floor(50_000, 10_000);
        assert_eq!(f.discovery, 50);
        assert_eq!(f.user, 1);
        assert_eq!(f.companion, 100);
        assert_eq!(f.token, 10_000);
        assert_eq!(f.write, 20_000);
        assert_eq!(f.reread, 10_000);
        assert_eq!(Calls::floor(100, 0).total(), 1);
        let w = wall_floor(
            Size {
                rows: 10_000,
                due: 1_000,
            },
            8,
            Duration::from_millis(50),
            Duration::from_millis(30),
        );
        // 10 pages + 1 companion call, then 125 rounds of 50 + (1 + 2)·30 ms.
        assert_eq!(w, Duration::from_millis(10 * 30 + 30 + 125 * 140));
    }

    #[test]
    fn ratios_handle_zero_floors() {
        assert_eq!(ratio(0.0, 0.0), 1.0);
        assert!(ratio(1.0, 0.0).is_infinite());
        assert_eq!(ratio(3.0, 2.0), 1.5);
    }
}
