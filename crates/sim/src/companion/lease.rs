//! One keeper per instance: the lease and the claims, as `migrations-docs/companion/lease.js`,
//! `lease-release.js`, `claims-release.js` and the script include `SnokOAuthKeeperLease` keep
//! them in their table.
//!
//! - `POST {companion_path}/lease` `{"holder","ttl_seconds"[,"claims"][,"pid"]}` → `200
//!   {"result":{"holder","fence","ttl_seconds"},"claims":[…]}` when the caller holds the lease
//!   after the call (acquired: previous fence + 1, the first ever 1; renewed while unexpired:
//!   fence unchanged), else `409` with the holder and `expires_in` (its `detail` names the
//!   holder's process id when known). Holding it, `claims` replaces the caller's claim set, less
//!   the ids other holders claim, and `pid` is stored with the lease (a renewal without one keeps
//!   the stored one, an acquisition without one stores none). Every answer lists the claims of
//!   every other holder.
//! - `GET {companion_path}/lease` → `200 {"result":{"holder","fence","expires_in","pid"},
//!   "claims":[…]}`: who holds the lease (`null` when no one), with every holder's claims;
//!   changes nothing.
//! - `DELETE {companion_path}/lease?holder=` → `204`, releasing it if that holder holds it.
//! - `DELETE {companion_path}/lease/claims?holder=&sys_id=…` → `204`, dropping those claims.
//!
//! The whole request runs under the simulator's one state lock, the counterpart of the script's
//! GlideMutex section, so concurrent callers never interleave. Time is the simulator's clock
//! (`Simulator::advance_time` moves it).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Call, is_sys_id, json_object};
use crate::answer::instance_headers;
use crate::server::{Incoming, SimResponse};

/// Most characters (Unicode code points) of a holder id.
pub const MAX_HOLDER_CHARS: usize = 100;

/// Shortest lease a caller may ask for, in seconds.
pub const MIN_TTL_SECS: i64 = 10;

/// Longest lease a caller may ask for, in seconds.
pub const MAX_TTL_SECS: i64 = 600;

/// Most claims one request may carry (and most ids one claims release may name).
pub const MAX_CLAIMS: usize = 1_000;

/// What a refused holder id is told.
const HOLDER_RULE: &str =
    "holder must be a string of 1 to 100 characters without control characters";

/// What a refused process id is told: every OS's pids fit in an unsigned 32-bit number.
const PID_RULE: &str = "pid must be a whole number from 1 to 4294967295";

/// The lease as the instance stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompanionLease {
    /// Who holds (or last held) it.
    pub holder: String,
    /// Its fence: 1 for the first holder ever, one more on every new acquisition.
    pub fence: u64,
    /// When it expires (or expired, or was released).
    pub expires_at: Timestamp,
    /// The process id its holder gave (informational), if it gave one.
    pub pid: Option<u32>,
}

/// A keeper's claim on a credential (its refresh row's sys_id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseClaim {
    /// The holder id that claims it.
    pub holder: String,
    /// The refresh row's sys_id.
    pub sys_id: String,
}

/// The lease and the claims: the rows of the companion's lease table.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseBook {
    lease: Option<Stored>,
    /// Claims by sys_id: a credential has at most one claimant.
    claims: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
struct Stored {
    holder: String,
    fence: u64,
    expires_ms: i64,
    pid: Option<u32>,
}

impl Stored {
    /// The time it has left, in whole seconds rounded up: 1 while even a millisecond is left.
    fn expires_in(&self, now_ms: i64) -> i64 {
        (self.expires_ms - now_ms + 999) / 1000
    }
}

/// What `GET /lease` reads: the lease as it stands (holder and pid `None` while no one holds it).
#[derive(Debug)]
struct Status {
    holder: Option<String>,
    /// The last fence; 0 before the first lease ever.
    fence: u64,
    /// 0 while no one holds it.
    expires_in: i64,
    pid: Option<u32>,
}

/// What a lease request came to.
#[derive(Debug, PartialEq, Eq)]
enum Acquired {
    /// The caller holds the lease.
    Held {
        renewed: bool,
        fence: u64,
        /// How many of the claims sent it holds, when it sent claims.
        claimed: Option<usize>,
    },
    /// Another holder's lease has not expired.
    HeldByOther {
        holder: String,
        expires_in: i64,
        pid: Option<u32>,
    },
}

impl LeaseBook {
    fn live(&self, now_ms: i64) -> Option<&Stored> {
        self.lease.as_ref().filter(|l| l.expires_ms > now_ms)
    }

    /// Acquires or renews the lease for `holder`; holding it, `claims` (when sent) becomes its
    /// claim set and `pid` is stored (a renewal without one keeps the stored one, an
    /// acquisition without one stores none).
    fn acquire(
        &mut self,
        holder: &str,
        ttl_secs: i64,
        claims: Option<&[String]>,
        pid: Option<u32>,
        now_ms: i64,
    ) -> Acquired {
        let (renewed, fence, pid) = match (self.live(now_ms), &self.lease) {
            (Some(live), _) if live.holder != holder => {
                return Acquired::HeldByOther {
                    holder: live.holder.clone(),
                    expires_in: live.expires_in(now_ms),
                    pid: live.pid,
                };
            }
            (Some(live), _) => (true, live.fence, pid.or(live.pid)),
            // After an expiry or a release even the same holder acquires anew.
            (None, Some(lapsed)) => (false, lapsed.fence + 1, pid),
            (None, None) => (false, 1, pid),
        };
        self.lease = Some(Stored {
            holder: holder.to_owned(),
            fence,
            expires_ms: now_ms + ttl_secs * 1000,
            pid,
        });
        let claimed = claims.map(|ids| self.replace_claims(holder, ids));
        Acquired::Held {
            renewed,
            fence,
            claimed,
        }
    }

    /// Makes `ids` the claim set of `holder`, less what other holders claim; how many it holds.
    fn replace_claims(&mut self, holder: &str, ids: &[String]) -> usize {
        self.claims.retain(|_, claimant| claimant != holder);
        let mut held = 0;
        for id in ids {
            if !self.claims.contains_key(id) {
                self.claims.insert(id.clone(), holder.to_owned());
                held += 1;
            }
        }
        held
    }

    /// Releases the lease if `holder` holds it; whether it did.
    fn release(&mut self, holder: &str, now_ms: i64) -> bool {
        match self.lease.as_mut() {
            Some(lease) if lease.holder == holder && lease.expires_ms > now_ms => {
                lease.expires_ms = now_ms;
                true
            }
            _ => false,
        }
    }

    /// Removes the claims of `holder` on `ids`; how many there were.
    fn drop_claims(&mut self, holder: &str, ids: &[String]) -> usize {
        let before = self.claims.len();
        self.claims
            .retain(|id, claimant| claimant != holder || !ids.contains(id));
        before - self.claims.len()
    }

    /// The lease as it stands at `now_ms`, changing nothing.
    fn status(&self, now_ms: i64) -> Status {
        let fence = self.lease.as_ref().map_or(0, |l| l.fence);
        match self.live(now_ms) {
            Some(live) => Status {
                holder: Some(live.holder.clone()),
                fence,
                expires_in: live.expires_in(now_ms),
                pid: live.pid,
            },
            None => Status {
                holder: None,
                fence,
                expires_in: 0,
                pid: None,
            },
        }
    }

    /// Every claim, in the order the answers list them: by holder, then sys_id.
    fn all_claims(&self) -> Vec<LeaseClaim> {
        let mut out: Vec<LeaseClaim> = self
            .claims
            .iter()
            .map(|(sys_id, holder)| LeaseClaim {
                holder: holder.clone(),
                sys_id: sys_id.clone(),
            })
            .collect();
        out.sort_by(by_holder_then_id);
        out
    }

    /// The lease as stored, if there ever was one.
    pub(crate) fn view(&self) -> Option<CompanionLease> {
        self.lease.as_ref().map(|l| CompanionLease {
            holder: l.holder.clone(),
            fence: l.fence,
            expires_at: Timestamp::from_millisecond(l.expires_ms).unwrap_or(Timestamp::MIN),
            pid: l.pid,
        })
    }

    /// Every claim, by holder then sys_id.
    pub(crate) fn claims(&self) -> Vec<LeaseClaim> {
        self.all_claims()
    }

    /// Expires the lease now, as if its time ran out; the next acquisition gets the next fence.
    pub(crate) fn expire(&mut self, now_ms: i64) {
        if let Some(lease) = self.lease.as_mut() {
            lease.expires_ms = lease.expires_ms.min(now_ms);
        }
    }
}

/// The order of the script's sort: holder, then sys_id, by UTF-16 code units (JavaScript's
/// string order, which differs from UTF-8 byte order past U+FFFF).
fn by_holder_then_id(a: &LeaseClaim, b: &LeaseClaim) -> Ordering {
    a.holder
        .encode_utf16()
        .cmp(b.holder.encode_utf16())
        .then_with(|| a.sys_id.cmp(&b.sys_id))
}

/// A holder id: 1 to 100 Unicode code points, none of them a control character (C0, DEL, C1)
/// or a line or paragraph separator.
fn is_holder(value: &str) -> bool {
    let count = value.chars().count();
    (1..=MAX_HOLDER_CHARS).contains(&count)
        && !value
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

/// How a holder appears in an audit line: JSON-quoted, as the script's `JSON.stringify`.
fn quoted(holder: &str) -> String {
    Value::from(holder).to_string()
}

fn claims_json(claims: impl IntoIterator<Item = LeaseClaim>) -> Value {
    claims
        .into_iter()
        .map(|c| json!({"holder": c.holder, "sys_id": c.sys_id}))
        .collect()
}

fn no_content(call: &mut Call<'_>) -> SimResponse {
    let mut headers = instance_headers(call.st);
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
    SimResponse {
        status: 204,
        headers,
        body: Vec::new(),
    }
}

/// `POST /lease`.
pub(super) fn acquire(call: &mut Call<'_>, req: &Incoming) -> SimResponse {
    let Some(body) = json_object(req) else {
        return call.refuse(
            400,
            "Invalid request body",
            r#"Send {"holder":"<id>","ttl_seconds":<10 to 600>[,"claims":["<sys_id>",...]]}"#,
            "bad_body",
        );
    };
    let Some(holder) = body
        .get("holder")
        .and_then(Value::as_str)
        .filter(|h| is_holder(h))
    else {
        return call.refuse(400, "Invalid parameter holder", HOLDER_RULE, "bad_holder");
    };
    let ttl = body
        .get("ttl_seconds")
        .and_then(|t| whole_number(t, MIN_TTL_SECS as f64..=MAX_TTL_SECS as f64));
    let Some(ttl) = ttl else {
        let detail =
            format!("ttl_seconds must be a whole number from {MIN_TTL_SECS} to {MAX_TTL_SECS}");
        return call.refuse(400, "Invalid parameter ttl_seconds", &detail, "bad_ttl");
    };
    // Whole and within 10..=600: exact as an integer.
    let ttl = ttl as i64;
    let claims = match body.get("claims") {
        None => None,
        Some(claims) => match claims_of(call, claims) {
            Ok(ids) => Some(ids),
            Err(refused) => return refused,
        },
    };
    // A companion from before the pid ignores it, as it ignores every key it does not know.
    let sent_pid = body
        .get("pid")
        .filter(|_| call.st.instance.companion_lease_status);
    let pid = match sent_pid {
        None => None,
        Some(pid) => match whole_number(pid, 1.0..=f64::from(u32::MAX)) {
            // Whole and within 1..=u32::MAX: exact as a u32.
            Some(pid) => Some(pid as u32),
            None => return call.refuse(400, "Invalid parameter pid", PID_RULE, "bad_pid"),
        },
    };
    let now_ms = call.st.now().as_millisecond();
    let book = &mut call.st.instance.lease;
    let acquired = book.acquire(holder, ttl, claims.as_deref(), pid, now_ms);
    let others = book.all_claims().into_iter().filter(|c| c.holder != holder);
    let others = claims_json(others);
    match acquired {
        Acquired::HeldByOther {
            holder: other,
            expires_in,
            pid: other_pid,
        } => {
            call.audit(&format!(
                "holder={} outcome=held_by_other other={} expires_in={expires_in}",
                quoted(holder),
                quoted(&other)
            ));
            let who = match other_pid {
                Some(other_pid) => format!("Another keeper (process {other_pid})"),
                None => "Another keeper".to_owned(),
            };
            let detail = format!(
                "{who} holds the lease for {expires_in} more second(s); only one keeper may work \
                 on an instance. Retry after it expires or is released."
            );
            let body = json!({
                "error": {"message": "Lease held by another keeper", "detail": detail},
                "status": "failure",
                "result": {"holder": other, "expires_in": expires_in},
                "claims": others,
            });
            call.send(409, &body)
        }
        Acquired::Held {
            renewed,
            fence,
            claimed,
        } => {
            let claimed = match (claimed, &claims) {
                (Some(held), Some(sent)) => format!(" claims={held}/{}", sent.len()),
                _ => String::new(),
            };
            let pid = pid.map(|pid| format!(" pid={pid}")).unwrap_or_default();
            call.audit(&format!(
                "holder={} outcome={} fence={fence} ttl_seconds={ttl}{claimed}{pid}",
                quoted(holder),
                if renewed { "renewed" } else { "acquired" },
            ));
            let body = json!({
                "result": {"holder": holder, "fence": fence, "ttl_seconds": ttl},
                "claims": others,
            });
            call.send(200, &body)
        }
    }
}

/// A JSON number that is whole and within `range` (`60.0` counts, `"60"` does not).
fn whole_number(value: &Value, range: RangeInclusive<f64>) -> Option<f64> {
    value
        .as_f64()
        .filter(|n| n.is_finite() && n.fract() == 0.0 && range.contains(n))
}

/// `GET /lease`: takes nothing (query parameters are ignored) and changes nothing.
pub(super) fn status(call: &mut Call<'_>) -> SimResponse {
    let now_ms = call.st.now().as_millisecond();
    let book = &call.st.instance.lease;
    let status = book.status(now_ms);
    let claims = book.all_claims();
    call.audit(&format!(
        "holder={} fence={} expires_in={} claims={}",
        status
            .holder
            .as_deref()
            .map_or_else(|| "null".to_owned(), quoted),
        status.fence,
        status.expires_in,
        claims.len()
    ));
    let body = json!({
        "result": {
            "holder": status.holder,
            "fence": status.fence,
            "expires_in": status.expires_in,
            "pid": status.pid,
        },
        "claims": claims_json(claims),
    });
    call.send(200, &body)
}

/// The `claims` of a lease request: an array of at most [`MAX_CLAIMS`] sys_ids, as sent.
fn claims_of(call: &mut Call<'_>, claims: &Value) -> Result<Vec<String>, SimResponse> {
    let Some(claims) = claims.as_array() else {
        return Err(call.refuse(
            400,
            "Invalid parameter claims",
            "claims must be an array of oauth_credential sys_ids (32 lowercase hex digits)",
            "bad_claims",
        ));
    };
    if claims.len() > MAX_CLAIMS {
        let detail = format!(
            "At most {MAX_CLAIMS} claims per request, got {}",
            claims.len()
        );
        return Err(call.refuse(400, "Too many claims", &detail, "too_many_claims"));
    }
    claims
        .iter()
        .enumerate()
        .map(
            |(i, claim)| match claim.as_str().filter(|id| is_sys_id(id)) {
                Some(id) => Ok(id.to_owned()),
                None => {
                    let detail = format!(
                        "claims[{i}] is not an oauth_credential sys_id (32 lowercase hex digits)"
                    );
                    Err(call.refuse(400, "Invalid parameter claims", &detail, "bad_claims"))
                }
            },
        )
        .collect()
}

/// The one `holder` query parameter of a DELETE, or the refusal.
fn holder_param(call: &mut Call<'_>, req: &Incoming) -> Result<String, SimResponse> {
    let given: Vec<String> = req
        .params()
        .into_iter()
        .filter(|p| p.key == "holder")
        .map(|p| p.value)
        .collect();
    match given.as_slice() {
        [] => Err(call.refuse(
            400,
            "Missing parameter holder",
            "Provide holder=<id>",
            "no_holder",
        )),
        [one] if one.is_empty() => Err(call.refuse(
            400,
            "Missing parameter holder",
            "Provide holder=<id>",
            "no_holder",
        )),
        [one] if is_holder(one) => Ok(one.clone()),
        [_] => Err(call.refuse(400, "Invalid parameter holder", HOLDER_RULE, "bad_holder")),
        _ => Err(call.refuse(
            400,
            "Invalid parameter holder",
            "Provide holder=<id> once",
            "bad_holder",
        )),
    }
}

/// `DELETE /lease`.
pub(super) fn release(call: &mut Call<'_>, req: &Incoming) -> SimResponse {
    let holder = match holder_param(call, req) {
        Ok(holder) => holder,
        Err(refused) => return refused,
    };
    let now_ms = call.st.now().as_millisecond();
    let released = call.st.instance.lease.release(&holder, now_ms);
    call.audit(&format!(
        "holder={} outcome={}",
        quoted(&holder),
        if released { "released" } else { "not_held" }
    ));
    no_content(call)
}

/// `DELETE /lease/claims`.
pub(super) fn release_claims(call: &mut Call<'_>, req: &Incoming) -> SimResponse {
    let holder = match holder_param(call, req) {
        Ok(holder) => holder,
        Err(refused) => return refused,
    };
    let ids = match call.requested_ids(req, MAX_CLAIMS) {
        Ok(ids) => ids,
        Err(refused) => return refused,
    };
    if !ids.iter().all(|id| is_sys_id(id)) {
        return call.refuse(
            400,
            "Invalid parameter sys_id",
            "sys_id accepts only oauth_credential sys_ids (32 lowercase hex digits)",
            "bad_ids",
        );
    }
    let removed = call.st.instance.lease.drop_claims(&holder, &ids);
    call.audit(&format!(
        "holder={} requested={} removed={removed}",
        quoted(&holder),
        ids.len()
    ));
    no_content(call)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const HOLDERS: [&str; 3] = ["keeper-a", "keeper-b", "keeper-c"];

    fn id(n: u8) -> String {
        format!("{n:032x}")
    }

    #[derive(Clone, Debug)]
    enum Op {
        Acquire {
            holder: usize,
            ttl: i64,
            claims: Option<Vec<u8>>,
            pid: Option<u32>,
        },
        Advance(i64),
        Release(usize),
        DropClaims(usize, Vec<u8>),
        Expire,
    }

    fn op() -> impl Strategy<Value = Op> {
        let ids = || proptest::collection::vec(0u8..8, 0..6);
        prop_oneof![
            4 => (
                0..3usize,
                MIN_TTL_SECS..=MAX_TTL_SECS,
                proptest::option::of(ids()),
                proptest::option::of(1u32..),
            )
                .prop_map(|(holder, ttl, claims, pid)| Op::Acquire { holder, ttl, claims, pid }),
            3 => (0i64..700_000).prop_map(Op::Advance),
            1 => (0..3usize).prop_map(Op::Release),
            1 => (0..3usize, ids()).prop_map(|(h, ids)| Op::DropClaims(h, ids)),
            1 => Just(Op::Expire),
        ]
    }

    fn claims_of(book: &LeaseBook, holder: &str) -> BTreeSet<String> {
        book.claims()
            .into_iter()
            .filter(|c| c.holder == holder)
            .map(|c| c.sys_id)
            .collect()
    }

    proptest! {
        /// Whatever keepers do, in any order and at any time: one holder at a time, a fence
        /// that never goes back and moves exactly on each new acquisition, a refused caller
        /// changes nothing, a credential has at most one claimant, the stored pid is the last
        /// one the holder sent since it acquired the lease, and the status reads all of it.
        #[test]
        fn one_holder_and_rising_fences(ops in proptest::collection::vec(op(), 1..60)) {
            let mut book = LeaseBook::default();
            let mut now: i64 = 1_700_000_000_000;
            let mut fence = 0;
            for op in ops {
                let before = book.clone();
                match op {
                    Op::Acquire { holder, ttl, claims, pid } => {
                        let holder = HOLDERS[holder];
                        let ids: Option<Vec<String>> = claims.map(|c| c.into_iter().map(id).collect());
                        let live = before.live(now).map(|l| (l.holder.clone(), l.expires_ms, l.pid));
                        match book.acquire(holder, ttl, ids.as_deref(), pid, now) {
                            Acquired::HeldByOther { holder: other, expires_in, pid: other_pid } => {
                                let (live_holder, expires, live_pid) = live.clone().unwrap();
                                prop_assert_eq!(&other, &live_holder);
                                prop_assert_eq!(other_pid, live_pid);
                                prop_assert_ne!(other.as_str(), holder);
                                prop_assert_eq!(expires_in, (expires - now + 999) / 1000);
                                prop_assert!((1..=MAX_TTL_SECS).contains(&expires_in));
                                prop_assert_eq!(book.claims(), before.claims());
                                prop_assert_eq!(book.view(), before.view());
                            }
                            Acquired::Held { renewed, fence: got, claimed } => {
                                prop_assert_eq!(renewed, live.is_some());
                                if renewed {
                                    prop_assert_eq!(got, fence);
                                } else {
                                    prop_assert_eq!(got, fence + 1);
                                }
                                fence = got;
                                let view = book.view().unwrap();
                                prop_assert_eq!(view.holder.as_str(), holder);
                                let kept = live.and_then(|(_, _, stored)| stored);
                                prop_assert_eq!(view.pid, if renewed { pid.or(kept) } else { pid });
                                prop_assert_eq!(view.expires_at.as_millisecond(), now + ttl * 1000);
                                let others: BTreeSet<String> = before
                                    .claims()
                                    .into_iter()
                                    .filter(|c| c.holder != holder)
                                    .map(|c| c.sys_id)
                                    .collect();
                                match ids {
                                    Some(ids) => {
                                        let wanted: BTreeSet<String> =
                                            ids.into_iter().filter(|i| !others.contains(i)).collect();
                                        prop_assert_eq!(claimed, Some(wanted.len()));
                                        prop_assert_eq!(claims_of(&book, holder), wanted);
                                    }
                                    None => {
                                        prop_assert_eq!(claimed, None);
                                        prop_assert_eq!(claims_of(&book, holder), claims_of(&before, holder));
                                    }
                                }
                                for other in HOLDERS.iter().filter(|h| **h != holder) {
                                    prop_assert_eq!(claims_of(&book, other), claims_of(&before, other));
                                }
                            }
                        }
                    }
                    Op::Advance(ms) => now += ms,
                    Op::Release(holder) => {
                        let holder = HOLDERS[holder];
                        let held = before.live(now).is_some_and(|l| l.holder == holder);
                        prop_assert_eq!(book.release(holder, now), held);
                        prop_assert!(book.live(now).is_none() || !held);
                        prop_assert_eq!(book.claims(), before.claims());
                    }
                    Op::DropClaims(holder, ids) => {
                        let holder = HOLDERS[holder];
                        let ids: Vec<String> = ids.into_iter().map(id).collect();
                        let mine = claims_of(&before, holder);
                        let expected = mine.iter().filter(|c| ids.contains(c)).count();
                        prop_assert_eq!(book.drop_claims(holder, &ids), expected);
                        prop_assert!(claims_of(&book, holder).iter().all(|c| !ids.contains(c)));
                    }
                    Op::Expire => {
                        book.expire(now);
                        prop_assert!(book.live(now).is_none());
                        prop_assert_eq!(book.view().map(|v| v.fence), before.view().map(|v| v.fence));
                    }
                }
                // The status reads the lease as stored, and reading it changes nothing.
                let read = book.clone();
                let status = book.status(now);
                prop_assert_eq!(book.view(), read.view());
                prop_assert_eq!(status.fence, book.view().map_or(0, |v| v.fence));
                match book.view().filter(|v| v.expires_at.as_millisecond() > now) {
                    Some(live) => {
                        prop_assert_eq!(status.holder.as_deref(), Some(live.holder.as_str()));
                        prop_assert_eq!(status.pid, live.pid);
                        prop_assert!((1..=MAX_TTL_SECS).contains(&status.expires_in));
                    }
                    None => {
                        prop_assert_eq!((status.holder, status.expires_in, status.pid), (None, 0, None));
                    }
                }
                // A credential has one claimant at most (the book is keyed by sys_id), and
                // the listing is in the script's order.
                let listed = book.claims();
                let mut sorted = listed.clone();
                sorted.sort_by(by_holder_then_id);
                prop_assert_eq!(listed, sorted);
            }
        }
    }

    #[test]
    fn holder_ids_count_code_points_and_refuse_control_characters() {
        assert!(is_holder("keeper-a"));
        assert!(is_holder(&"😀".repeat(100)));
        assert!(!is_holder(&"😀".repeat(101)));
        assert!(!is_holder(""));
        for bad in [
            "a\u{0}",
            "a\nb",
            "a\u{7f}",
            "a\u{85}",
            "a\u{2028}",
            "a\u{2029}",
        ] {
            assert!(!is_holder(bad), "{bad:?}");
        }
        assert!(is_holder("a \"quoted\" \\ keeper"));
        assert_eq!(quoted("a \"q\" \\ k"), r#""a \"q\" \\ k""#);
    }

    #[test]
    fn claims_sort_as_javascript_strings_do() {
        // U+FF5E (one UTF-16 unit, 0xFF5E) sorts after U+1F600 (surrogates 0xD83D 0xDE00) in
        // JavaScript, though its UTF-8 bytes sort first.
        let bmp = LeaseClaim {
            holder: "\u{ff5e}".to_owned(),
            sys_id: id(1),
        };
        let astral = LeaseClaim {
            holder: "\u{1f600}".to_owned(),
            sys_id: id(1),
        };
        assert_eq!(by_holder_then_id(&astral, &bmp), Ordering::Less);
        assert!(bmp.holder < astral.holder, "UTF-8 order differs");
    }
}
