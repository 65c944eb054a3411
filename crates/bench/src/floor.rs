//! The cost floor of a cycle — the calls a correct keeper cannot avoid and the waiting they
//! imply — and the calls the simulator's request log shows, by kind.
//!
//! The floor is derived from the rules a correct keeper must follow, never from the keeper's
//! own constants: from what the instance and the companion accept in one call, from the
//! guarantee (a rotated refresh token must not overwrite a row someone else re-authorised, and
//! leaves the journal only once ServiceNow provably holds it), and from the configured limits
//! on calls in flight. Comparing the keeper with it is the point of the benchmark.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sn_oauth_keeper_sim::{COMPANION_MAX_IDS, COMPANION_MAX_TOKENS, RecordedRequest, Target};

use crate::Size;

/// Rows written per refreshed credential. The bench's provider rotates the refresh token on
/// every use (Entra-like), so a refresh must store two tokens: the rotated refresh token in the
/// refresh row and the access token in the access row. Two rows, two writes: the Table API
/// writes one record a call.
pub(crate) const WRITES_PER_REFRESH: usize = 2;

/// Most rows one version read (`GET oauth_credential?sysparm_query=sys_idIN…`) carries. The
/// sys_ids travel in the URL, 33 characters each with its comma: 100 of them make a query of
/// about 3.3 KB, safely under the 8 KB that proxies and servers commonly accept for a request
/// line; more is not something a keeper can count on.
pub(crate) const VERSION_READ_IDS: usize = 100;

/// Calls by kind, as counted in the simulator's request log (or as the floor allows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Calls {
    /// Paged list `GET`s of `oauth_credential` by type (discovery).
    pub(crate) discovery: usize,
    /// `GET sys_user` (the integration user's time zone, once per process before a write).
    pub(crate) user: usize,
    /// Companion `GET /secrets` (refresh tokens and client secrets, up to 100 rows each).
    pub(crate) secrets: usize,
    /// Companion `POST /verify` (proof that rows hold what was written, up to 100 rows each).
    pub(crate) verify: usize,
    /// Token requests.
    pub(crate) token: usize,
    /// Table API writes of `oauth_credential` (PATCH, PUT, POST, DELETE).
    pub(crate) write: usize,
    /// The race check's version reads: list `GET`s of `oauth_credential` by `sys_idIN…`.
    pub(crate) reread: usize,
    /// Companion calls of the instance-wide lease (`/lease`, `/lease/claims`): taken, claims
    /// sent, released.
    pub(crate) lease: usize,
    /// Anything else.
    pub(crate) other: usize,
}

/// What one recorded request was, for [`Calls::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Discovery,
    User,
    Secrets,
    Verify,
    Token,
    Write,
    Reread,
    Lease,
    Other,
}

impl Kind {
    /// Its name: the field of [`Calls`] it counts in.
    fn label(self) -> &'static str {
        match self {
            Kind::Discovery => "discovery",
            Kind::User => "user",
            Kind::Secrets => "secrets",
            Kind::Verify => "verify",
            Kind::Token => "token",
            Kind::Write => "write",
            Kind::Reread => "reread",
            Kind::Lease => "lease",
            Kind::Other => "other",
        }
    }

    fn of(r: &RecordedRequest) -> Kind {
        let read = r.method.eq_ignore_ascii_case("GET") || r.method.eq_ignore_ascii_case("HEAD");
        match &r.target {
            Target::TableApi => {
                let table = r
                    .path
                    .split_once("/table/")
                    .map_or("", |(_, rest)| rest)
                    .trim_end_matches('/');
                match (table, read) {
                    ("oauth_credential", true) => {
                        // `sys_idIN` and `typeIN` are letters and `_`, which form encoding
                        // leaves as they are: the raw query shows them.
                        let query = query_param(&r.query, "sysparm_query").unwrap_or("");
                        if query.starts_with("sys_idIN") {
                            Kind::Reread
                        } else if query.starts_with("typeIN") {
                            Kind::Discovery
                        } else {
                            Kind::Other
                        }
                    }
                    ("sys_user", true) => Kind::User,
                    (t, false) if t == "oauth_credential" || t.starts_with("oauth_credential/") => {
                        Kind::Write
                    }
                    _ => Kind::Other,
                }
            }
            Target::Companion if read && r.path.ends_with("/secrets") => Kind::Secrets,
            Target::Companion
                if r.path.ends_with("/lease") || r.path.ends_with("/lease/claims") =>
            {
                Kind::Lease
            }
            Target::Companion
                if r.method.eq_ignore_ascii_case("POST") && r.path.ends_with("/verify") =>
            {
                Kind::Verify
            }
            Target::Provider(_) if r.method.eq_ignore_ascii_case("POST") => Kind::Token,
            _ => Kind::Other,
        }
    }
}

/// The kind of one recorded request, as [`Calls`] names it.
pub(crate) fn kind_of(r: &RecordedRequest) -> &'static str {
    Kind::of(r).label()
}

/// The raw value of the first `key=` parameter of a query string.
fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

impl Calls {
    /// Calls of every kind.
    pub(crate) fn total(&self) -> usize {
        self.kinds().iter().map(|(_, n)| n).sum()
    }

    /// The calls of a request log, by kind.
    pub(crate) fn count(log: &[RecordedRequest]) -> Calls {
        let mut calls = Calls::default();
        for r in log {
            let slot = match Kind::of(r) {
                Kind::Discovery => &mut calls.discovery,
                Kind::User => &mut calls.user,
                Kind::Secrets => &mut calls.secrets,
                Kind::Verify => &mut calls.verify,
                Kind::Token => &mut calls.token,
                Kind::Write => &mut calls.write,
                Kind::Reread => &mut calls.reread,
                Kind::Lease => &mut calls.lease,
                Kind::Other => &mut calls.other,
            };
            *slot += 1;
        }
        calls
    }

    /// The calls a correct keeper cannot avoid in one cycle of a fresh process that refreshes
    /// `due` of `rows` rows at a page size of `page_size`, every refresh rotating the refresh
    /// token:
    ///
    /// - discovery: every row must be read, `page_size` a call;
    /// - user: the integration user's time zone, once before the first write (a token write
    ///   with display-value input reads `expires` in that zone);
    /// - secrets: every due credential's refresh token, which only the companion hands out, at
    ///   most [`COMPANION_MAX_IDS`] a call;
    /// - token: one request per due credential;
    /// - write: [`WRITES_PER_REFRESH`] rows per refresh;
    /// - reread: a rotated token must not overwrite a row someone else re-authorised since
    ///   discovery, and the Table API has no conditional write, so each row's version is read
    ///   before its write — [`VERSION_READ_IDS`] rows a read;
    /// - verify: only the companion's `/verify` proves a write (a 200 does not: a field ACL or
    ///   a business rule can discard it silently), one digest per row written, at most
    ///   [`COMPANION_MAX_TOKENS`] a call;
    /// - lease: `once` takes the instance's lease for its cycle (one call, whose answer also
    ///   names the credentials other keepers claim, which the plan must leave alone) and
    ///   releases it when it exits (one call, so `once` after `once` never waits); with
    ///   refreshes, each credential is claimed before its token request — a batch of
    ///   [`COMPANION_MAX_IDS`] whose refresh tokens came in one `/secrets` call is one claim
    ///   call — and the claims go once the answers are verified, before the release (which
    ///   leaves claims standing): one more call.
    pub(crate) fn floor(rows: usize, due: usize, page_size: usize) -> Calls {
        let writes = WRITES_PER_REFRESH * due;
        Calls {
            discovery: pages(rows, page_size),
            user: usize::from(due > 0),
            secrets: due.div_ceil(COMPANION_MAX_IDS),
            verify: writes.div_ceil(COMPANION_MAX_TOKENS),
            token: due,
            write: writes,
            reread: due.div_ceil(VERSION_READ_IDS),
            lease: if due == 0 {
                2
            } else {
                3 + due.div_ceil(COMPANION_MAX_IDS)
            },
            other: 0,
        }
    }

    /// The lease calls of back-to-back idle cycles in one process that took `elapsed` in all,
    /// with a lease of `ttl`: taken at the first cycle, then renewed each time a
    /// third of its life has passed (the renewal the lease's contract asks for); never
    /// released (the process is stopped, not shut down).
    pub(crate) fn lease_of_idle_cycles(elapsed: Duration, ttl: Duration) -> usize {
        let third = (ttl / 3).as_millis().max(1);
        1 + usize::try_from(elapsed.as_millis() / third).unwrap_or(usize::MAX)
    }

    /// Each kind with its count, in the tables' column order.
    pub(crate) fn kinds(&self) -> [(&'static str, usize); 9] {
        [
            ("discovery", self.discovery),
            ("user", self.user),
            ("secrets", self.secrets),
            ("verify", self.verify),
            ("token", self.token),
            ("write", self.write),
            ("reread", self.reread),
            ("lease", self.lease),
            ("other", self.other),
        ]
    }
}

/// Discovery pages for `rows` rows at `page_size` rows a page (an empty table still takes one).
pub(crate) fn pages(rows: usize, page_size: usize) -> usize {
    rows.div_ceil(page_size.max(1)).max(1)
}

/// The waits a cycle is made of: Lp for a token request, Li for a call to the instance (Table
/// API or companion), and the configured concurrency C.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waits {
    /// Lp: one token request.
    pub(crate) provider: Duration,
    /// Li: one call to the instance.
    pub(crate) instance: Duration,
    /// C: `refresh.concurrency`, the most token requests and the most writes in flight.
    pub(crate) concurrency: usize,
    /// Rows per discovery page.
    pub(crate) page_size: usize,
}

/// The wall-time floor of one cycle, and the two pipelines it is the larger of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WallFloor {
    /// When the token requests bound the cycle.
    pub(crate) token_bound: Duration,
    /// When the writes bound the cycle.
    pub(crate) write_bound: Duration,
}

impl WallFloor {
    /// The least time a correct keeper can take for one cycle that refreshes `size.due` of
    /// `size.rows` rows, from the dependencies no keeper can avoid:
    ///
    /// - discovery pages one after the other (each page's link names the next): P·Li, with
    ///   P = ceil(R / page size);
    /// - one companion call before the first token request (its refresh token comes from
    ///   there): Li. Later companion calls can overlap the token requests;
    /// - D token requests with at most C in flight: ceil(D / C)·Lp;
    /// - an answer's rows are written only after its token answer and its version read (Li):
    ///   the read must follow the answer, or a re-authorisation during the token request would
    ///   go unseen;
    /// - W = k·D writes with at most C in flight: ceil(W / C)·Li;
    /// - a verification (Li) follows the writes it proves;
    /// - the lease (`once`): taken before the plan (its answer names what other keepers
    ///   claim), the first batch claimed before its first token request (later batches can be
    ///   claimed while earlier requests are in flight), the claims withdrawn after the last
    ///   verification and the lease released: 4·Li, two ahead and two behind.
    ///
    /// So after the fixed P·Li + 3·Li, either the token requests bound the cycle —
    /// ceil(D / C)·Lp, then the last answer's version read, its k writes (ceil(k / C)·Li) and
    /// its verification — or the writes do: the first answer's Lp and version read, then
    /// ceil(W / C)·Li, then the last write's verification; then the lease's 2·Li. The `sys_user` read can overlap
    /// discovery, so it is in neither. An idle cycle (D = 0) is its discovery alone.
    pub(crate) fn of(size: Size, waits: Waits) -> WallFloor {
        let times = |n: usize, d: Duration| d * u32::try_from(n).unwrap_or(u32::MAX);
        let (lp, li, c) = (waits.provider, waits.instance, waits.concurrency.max(1));
        let discovery = times(pages(size.rows, waits.page_size), li);
        if size.due == 0 {
            return WallFloor {
                token_bound: discovery,
                write_bound: discovery,
            };
        }
        let fixed = discovery + 3 * li;
        let lease_after = 2 * li;
        let writes = WRITES_PER_REFRESH * size.due;
        let token_bound = fixed
            + times(size.due.div_ceil(c), lp)
            + li
            + times(WRITES_PER_REFRESH.div_ceil(c), li)
            + li
            + lease_after;
        let write_bound = fixed + lp + li + times(writes.div_ceil(c), li) + li + lease_after;
        WallFloor {
            token_bound,
            write_bound,
        }
    }

    /// The floor: the larger of the two pipelines.
    pub(crate) fn floor(&self) -> Duration {
        self.token_bound.max(self.write_bound)
    }

    /// Which pipeline bounds the cycle.
    pub(crate) fn bound(&self) -> &'static str {
        if self.write_bound > self.token_bound {
            "writes"
        } else {
            "tokens"
        }
    }
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

/// (wall − floor) / D in ms: what each refresh cost above the floor (0 when D is 0).
pub(crate) fn overhead_ms_per_refresh(wall_s: f64, floor_s: f64, due: usize) -> f64 {
    if due == 0 {
        0.0
    } else {
        (wall_s - floor_s) * 1_000.0 / due as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn waits(c: usize) -> Waits {
        Waits {
            provider: ms(50),
            instance: ms(30),
            concurrency: c,
            page_size: 1_000,
        }
    }

    fn size(rows: usize, due: usize) -> Size {
        Size { rows, due }
    }

    #[test]
    fn call_floor_follows_the_rules() {
        let f = Calls::floor(50_000, 10_000, 1_000);
        assert_eq!(
            f,
            Calls {
                discovery: 50,
                user: 1,
                secrets: 100,
                verify: 200,
                token: 10_000,
                write: 20_000,
                reread: 100,
                lease: 103,
                other: 0,
            }
        );
        assert_eq!(f.total(), 30_554);
        // The formula at D = 1,000: ⌈R/page⌉ + ⌈D/100⌉ + D + W + ⌈D/100⌉ + ⌈W/100⌉,
        // and the user read; and the lease: taken, a claim per batch, claims withdrawn, released.
        assert_eq!(
            Calls::floor(10_000, 1_000, 1_000).total(),
            10 + 10 + 1_000 + 2_000 + 10 + 20 + 1 + (3 + 10)
        );
        // Partial batches round up; 60 answers write 120 rows: two /verify calls.
        let small = Calls::floor(200, 60, 1_000);
        assert_eq!((small.secrets, small.reread, small.verify), (1, 1, 2));
        // An idle `once` reads its pages, and takes and releases the lease.
        assert_eq!(
            Calls::floor(2_500, 0, 1_000),
            Calls {
                discovery: 3,
                lease: 2,
                ..Calls::default()
            }
        );
        // Idle cycles in one process: the lease once, then a renewal each third of its life.
        let ttl = Duration::from_secs(600);
        assert_eq!(Calls::lease_of_idle_cycles(Duration::ZERO, ttl), 1);
        assert_eq!(
            Calls::lease_of_idle_cycles(Duration::from_secs(199), ttl),
            1
        );
        assert_eq!(
            Calls::lease_of_idle_cycles(Duration::from_secs(200), ttl),
            2
        );
        assert_eq!(pages(0, 1_000), 1);
    }

    #[test]
    fn the_write_bound_pipeline_bounds_the_named_sizes() {
        // D = 1,000, C = 8: 10 pages + 1 companion call + the lease taken and the first batch
        // claimed = 390 ms; writes: 50 + 30, then 2,000 / 8 = 250 rounds of 30 ms, then 30 —
        // then the claims withdrawn and the lease released, 60: 8,060 ms; tokens: 125 rounds of
        // 50 ms, then 30 + 30 + 30, then 60 — 6,790 ms.
        let f = WallFloor::of(size(10_000, 1_000), waits(8));
        assert_eq!(f.write_bound, ms(390 + 80 + 7_500 + 30 + 60));
        assert_eq!(f.token_bound, ms(390 + 6_250 + 90 + 60));
        assert_eq!((f.floor(), f.bound()), (ms(8_060), "writes"));
        // D = 10,000, C = 32: 50 pages; writes 625 rounds; tokens 313 rounds.
        let f = WallFloor::of(size(50_000, 10_000), waits(32));
        assert_eq!(f.write_bound, ms(1_590 + 80 + 18_750 + 30 + 60));
        assert_eq!(f.token_bound, ms(1_590 + 15_650 + 90 + 60));
        assert_eq!(f.floor(), ms(20_510));
    }

    #[test]
    fn slow_providers_make_the_token_requests_bound() {
        // Lp = 200 ms: 1,000 / 32 = 32 rounds of 200 ms outlast 63 rounds of 30 ms.
        let slow = Waits {
            provider: ms(200),
            ..waits(32)
        };
        let f = WallFloor::of(size(10_000, 1_000), slow);
        assert_eq!(f.token_bound, ms(390 + 6_400 + 90 + 60));
        assert_eq!(f.write_bound, ms(390 + 230 + 1_890 + 30 + 60));
        assert_eq!((f.floor(), f.bound()), (ms(6_940), "tokens"));
    }

    #[test]
    fn one_at_a_time_the_last_answer_writes_its_rows_in_turn() {
        // C = 1: the last answer's two writes cannot overlap.
        let f = WallFloor::of(size(100, 10), waits(1));
        assert_eq!(f.token_bound, ms(120 + 500 + 30 + 60 + 30 + 60));
        assert_eq!(f.write_bound, ms(120 + 80 + 600 + 30 + 60));
    }

    #[test]
    fn an_idle_cycle_is_its_discovery() {
        let f = WallFloor::of(size(10_000, 0), waits(8));
        assert_eq!((f.token_bound, f.write_bound), (ms(300), ms(300)));
    }

    #[test]
    fn ratios_handle_zero_floors() {
        assert_eq!(ratio(0.0, 0.0), 1.0);
        assert!(ratio(1.0, 0.0).is_infinite());
        assert_eq!(ratio(3.0, 2.0), 1.5);
    }

    #[test]
    fn overhead_is_per_refresh_in_milliseconds() {
        // 9.5 s against a floor of 7.5 s over 1,000 refreshes: 2 ms each.
        assert!((overhead_ms_per_refresh(9.5, 7.5, 1_000) - 2.0).abs() < 1e-9);
        assert_eq!(overhead_ms_per_refresh(0.4, 0.3, 0), 0.0);
    }

    fn request(method: &str, path: &str, query: &str, target: Target) -> RecordedRequest {
        RecordedRequest {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: Vec::new(),
            body: String::new(),
            status: 200,
            target,
            at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn requests_are_counted_by_kind() {
        let table = "/api/now/table/oauth_credential";
        let row = "/api/now/table/oauth_credential/0123";
        let log = [
            request(
                "GET",
                table,
                "sysparm_query=typeINaccess_token%2Crefresh_token%5EORDERBYsys_id&sysparm_limit=1000",
                Target::TableApi,
            ),
            request(
                "GET",
                table,
                "sysparm_query=sys_idIN0123%2C4567&sysparm_fields=sys_id",
                Target::TableApi,
            ),
            request("GET", row, "", Target::TableApi),
            request("GET", table, "", Target::TableApi),
            request(
                "GET",
                "/api/now/table/sys_user",
                "sysparm_query=user_name%3Dkeeper",
                Target::TableApi,
            ),
            request("PATCH", row, "", Target::TableApi),
            request("POST", table, "", Target::TableApi),
            request("POST", "/api/now/table/em_event", "", Target::TableApi),
            request(
                "GET",
                "/api/snok/oauth_keeper/secrets",
                "sys_id=0123",
                Target::Companion,
            ),
            request(
                "POST",
                "/api/snok/oauth_keeper/verify",
                "",
                Target::Companion,
            ),
            request(
                "GET",
                "/api/snok/oauth_keeper/verify",
                "",
                Target::Companion,
            ),
            request(
                "POST",
                "/api/snok/oauth_keeper/lease",
                "",
                Target::Companion,
            ),
            request(
                "DELETE",
                "/api/snok/oauth_keeper/lease/claims",
                "holder=h&sys_id=0123",
                Target::Companion,
            ),
            request("POST", "/entra/token", "", Target::Provider("entra".into())),
            request("POST", "/oauth_token.do", "", Target::InstanceOAuth),
        ];
        assert_eq!(
            Calls::count(&log),
            Calls {
                discovery: 1,
                user: 1,
                secrets: 1,
                verify: 1,
                token: 1,
                write: 2,
                reread: 1,
                lease: 2,
                // A single-row read, an unfiltered list, an event, a GET of /verify and the
                // instance's own token endpoint.
                other: 5,
            }
        );
    }
}
