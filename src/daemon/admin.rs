//! The admin endpoints on `server.listen`: `/` (the status page, [`crate::status_page`]) and
//! `/api/status` (its JSON), `/metrics`, `/healthz` and `/readyz`, and the facts behind them that
//! the loop keeps up to date ([`Health`], [`StatusBoard`]).

use crate::clock::SharedClock;
use crate::domain::report::CycleReport;
use crate::journal::{Journal, WriteOutcome};
use crate::lease::LeaseKeeper;
use crate::metrics::Metrics;
use crate::status_page::{self, MAX_RELOAD, PageFormat, PageQuery, PageView, QueryError};
use axum::Router;
use axum::extract::{RawQuery, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Readiness fails when the last successful cycle ended longer ago than this many intervals.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// The staleness limit never drops below this, so short test intervals do not flap.
pub const MIN_STALENESS: Duration = Duration::from_secs(60);

/// What the daemon learned about its own cycles: the facts behind `/healthz` and `/readyz`.
/// The verdicts are pure functions of these facts and the time, so their semantics are tested
/// without waiting for anything.
#[derive(Debug, Clone)]
pub struct Health {
    /// When the daemon started.
    pub started: Timestamp,
    /// `refresh.interval` in force.
    pub interval: Duration,
    /// When the cycle in progress started, if one is.
    pub cycle_started: Option<Timestamp>,
    /// When the last cycle (of any result) ended.
    pub last_finished: Option<Timestamp>,
    /// When the last successful cycle ended.
    pub last_success: Option<Timestamp>,
    /// Why the last cycle failed, if it did: a fixed reason per kind of error
    /// ([`crate::engine::CycleError::reason`]), never the instance's own text.
    pub last_error: Option<&'static str>,
    /// Whether that failure was the instance's (unreachable, refusing, not JSON).
    pub last_error_instance: bool,
    /// Whether a stop signal arrived.
    pub stopping: bool,
}

/// An endpoint's answer: whether all is well, and a JSON body that says why.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// 200 when true, 503 when false.
    pub ok: bool,
    /// The facts and reasons.
    pub body: Value,
}

fn ago(now: Timestamp, then: Option<Timestamp>) -> Value {
    then.map_or(Value::Null, |t| {
        json!((now.as_second() - t.as_second()).max(0))
    })
}

impl Health {
    /// Facts of a daemon that has just started.
    pub fn new(started: Timestamp, interval: Duration) -> Health {
        Health {
            started,
            interval,
            cycle_started: None,
            last_finished: None,
            last_success: None,
            last_error: None,
            last_error_instance: false,
            stopping: false,
        }
    }

    /// How old the last successful cycle may be before the keeper is not ready.
    pub fn staleness_limit(&self) -> Duration {
        (self.interval * STALE_AFTER_INTERVALS).max(MIN_STALENESS)
    }

    /// `/healthz`: the process works — it serves HTTP and its loop runs. Deliberately
    /// independent of the instance and the providers: a restart cannot fix an outage elsewhere
    /// and would only interrupt refreshes, so a liveness probe must not fail on one.
    pub fn liveness(&self, now: Timestamp) -> Verdict {
        Verdict {
            ok: true,
            body: json!({
                "status": if self.stopping { "stopping" } else { "ok" },
                "uptime_s": ago(now, Some(self.started)),
                "cycle_running_s": ago(now, self.cycle_started),
                "last_cycle_finished_s_ago": ago(now, self.last_finished),
            }),
        }
    }

    /// `/readyz`: the keeper does its job — the last cycle reached the instance, a cycle
    /// succeeded recently (within [`Health::staleness_limit`]), the journal's last real write
    /// reached the disk (`journal`; `None` before the first), and no stop is under way.
    pub fn readiness(&self, now: Timestamp, journal: Option<&WriteOutcome>) -> Verdict {
        let journal_writable = journal.is_none_or(|w| w.error.is_none());
        let mut reasons: Vec<String> = Vec::new();
        if self.stopping {
            reasons.push("shutting down: finishing the refreshes in flight".into());
        }
        match (self.last_finished, &self.last_error) {
            (None, _) => reasons.push("no cycle has finished yet".into()),
            (Some(_), Some(error)) if self.last_error_instance => reasons.push(format!(
                "the last cycle did not reach the instance: {error}"
            )),
            (Some(_), Some(error)) => reasons.push(format!("the last cycle failed: {error}")),
            (Some(_), None) => {}
        }
        let limit = self.staleness_limit();
        if let Some(success) = self.last_success {
            let age = now.as_second() - success.as_second();
            if age > i64::try_from(limit.as_secs()).unwrap_or(i64::MAX) {
                reasons.push(format!(
                    "the last successful cycle ended {age} s ago, more than {} s ({STALE_AFTER_INTERVALS} intervals)",
                    limit.as_secs()
                ));
            }
        } else if self.last_finished.is_some()
            && now.as_second() - self.started.as_second()
                > i64::try_from(limit.as_secs()).unwrap_or(i64::MAX)
        {
            reasons.push(format!(
                "no cycle has succeeded in the {} s since the start",
                now.as_second() - self.started.as_second()
            ));
        }
        if let Some(failed) = journal.filter(|w| w.error.is_some()) {
            reasons.push(format!(
                "the journal is not writable: its last write, {} s ago, failed (full disk or I/O error?); no refresh starts until it commits",
                now.as_second() - failed.at.as_second()
            ));
        }
        let ok = reasons.is_empty();
        Verdict {
            ok,
            body: json!({
                "ready": ok,
                "reasons": reasons,
                "instance_reachable": self.last_finished.is_some() && !(self.last_error.is_some() && self.last_error_instance),
                "journal_writable": journal_writable,
                "last_success_s_ago": ago(now, self.last_success),
                "staleness_limit_s": limit.as_secs(),
            }),
        }
    }
}

/// What the status page shows beyond the health facts, kept up to date by the loop.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    /// The last successful cycle's report.
    pub report: Option<Arc<CycleReport>>,
    /// When the next cycle starts.
    pub next_cycle: Option<Timestamp>,
    /// The keeper's lease, read live at each request (`None`: no lease).
    pub lease: Option<Arc<LeaseKeeper>>,
}

/// Shared state of the admin endpoints.
#[derive(Clone)]
pub struct AdminState {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The facts behind the health verdicts.
    pub health: Arc<Mutex<Health>>,
    /// The journal (for its writability).
    pub journal: Arc<Journal>,
    /// What the verdicts measure ages against.
    pub clock: SharedClock,
    /// What the status page shows.
    pub board: Arc<Mutex<StatusBoard>>,
}

/// The admin router: `/` (the status page; `?format=json` for its JSON), `/api/status` (the
/// JSON), `/metrics`, `/healthz`, `/readyz`. Other paths answer 404, other methods 405.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/api/status", get(status_api))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        "not found: the admin port serves /, /api/status, /metrics, /healthz and /readyz\n",
    )
}

/// Headers every status answer carries: never cached (it changes each cycle), never sniffed.
const STATUS_HEADERS: [(header::HeaderName, &str); 3] = [
    (header::CACHE_CONTROL, "no-store"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// What the status page shows, gathered now: the board, the health facts, the live lease and
/// the journal's pending records (read off the runtime's threads: it is a database query).
async fn page_view(state: &AdminState) -> PageView {
    let board = state.board.lock().map(|b| b.clone()).unwrap_or_default();
    let health = facts(state);
    let journal = Arc::clone(&state.journal);
    let pending = match tokio::task::spawn_blocking(move || journal.summaries()).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    PageView {
        now: state.clock.now(),
        report: board.report,
        cycle_running_since: health.as_ref().and_then(|h| h.cycle_started),
        last_finished: health.as_ref().and_then(|h| h.last_finished),
        last_error: health
            .as_ref()
            .and_then(|h| h.last_error.map(str::to_owned)),
        next_cycle: board.next_cycle,
        stopping: health.as_ref().is_some_and(|h| h.stopping),
        lease: board.lease.map(|l| l.status()),
        pending,
        reload: status_page::reload_every(health.map_or(MAX_RELOAD, |h| h.interval)),
    }
}

/// The 400 that refuses a status request's query.
fn refuse(error: &QueryError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        STATUS_HEADERS,
        format!("{error}\n"),
    )
        .into_response()
}

async fn status_page(AxumState(state): AxumState<AdminState>, RawQuery(raw): RawQuery) -> Response {
    let query = match PageQuery::parse(raw.as_deref().unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return refuse(&e),
    };
    match query.format {
        PageFormat::Json => status_json(&state, &query),
        PageFormat::Html => {
            let view = page_view(&state).await;
            (
                STATUS_HEADERS,
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        status_page::content_security_policy(),
                    ),
                ],
                status_page::html(&view, &query),
            )
                .into_response()
        }
    }
}

/// `/api/status`: always JSON, whatever `format` says (it must still be html or json).
async fn status_api(AxumState(state): AxumState<AdminState>, RawQuery(raw): RawQuery) -> Response {
    match PageQuery::parse(raw.as_deref().unwrap_or_default()) {
        Ok(query) => status_json(&state, &query),
        Err(e) => refuse(&e),
    }
}

/// The `status --format json` document of the last successful cycle, filtered as asked; 503
/// before the first cycle has finished.
fn status_json(state: &AdminState, query: &PageQuery) -> Response {
    let report = state.board.lock().ok().and_then(|b| b.report.clone());
    match report {
        Some(report) => (
            STATUS_HEADERS,
            axum::Json(status_page::filtered_document(&report, &query.filter)),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            STATUS_HEADERS,
            axum::Json(json!({"error": "no cycle has finished yet"})),
        )
            .into_response(),
    }
}

async fn metrics(AxumState(state): AxumState<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

fn respond(verdict: Verdict) -> impl IntoResponse {
    let status = if verdict.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(verdict.body))
}

fn facts(state: &AdminState) -> Option<Health> {
    state.health.lock().ok().map(|h| h.clone())
}

async fn healthz(AxumState(state): AxumState<AdminState>) -> impl IntoResponse {
    let verdict = match facts(&state) {
        Some(h) => h.liveness(state.clock.now()),
        None => Verdict {
            ok: false,
            body: json!({"status": "broken", "reason": "the daemon's state is poisoned"}),
        },
    };
    respond(verdict)
}

async fn readyz(AxumState(state): AxumState<AdminState>) -> impl IntoResponse {
    // The journal's last real write, not a probe that writes nothing: every cycle writes at
    // least its heartbeat.
    let last_write = state.journal.last_write();
    let verdict = match facts(&state) {
        Some(h) => h.readiness(state.clock.now(), last_write.as_ref()),
        None => Verdict {
            ok: false,
            body: json!({"ready": false, "reasons": ["the daemon's state is poisoned"]}),
        },
    };
    respond(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn health() -> Health {
        Health::new(at(0), Duration::from_secs(180))
    }

    fn reasons(v: &Verdict) -> String {
        v.body["reasons"].to_string()
    }

    #[test]
    fn not_ready_before_the_first_cycle_and_ready_after_a_good_one() {
        let mut h = health();
        let v = h.readiness(at(5), None);
        assert!(!v.ok);
        assert!(reasons(&v).contains("no cycle has finished yet"), "{v:?}");
        h.last_finished = Some(at(10));
        h.last_success = Some(at(10));
        let v = h.readiness(at(20), None);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.body["reasons"], json!([]));
        assert_eq!(v.body["last_success_s_ago"], json!(10));
    }

    #[test]
    fn an_unreachable_instance_makes_the_keeper_unready_with_the_reason() {
        let mut h = health();
        h.last_finished = Some(at(10));
        h.last_success = Some(at(5));
        h.last_error = Some("the instance is unreachable");
        h.last_error_instance = true;
        let v = h.readiness(at(20), None);
        assert!(!v.ok);
        assert!(reasons(&v).contains("did not reach the instance"), "{v:?}");
        assert_eq!(v.body["instance_reachable"], json!(false));
    }

    #[test]
    fn a_stale_last_success_makes_the_keeper_unready() {
        let mut h = health();
        h.last_finished = Some(at(0));
        h.last_success = Some(at(0));
        // 3 intervals of 180 s.
        assert!(h.readiness(at(540), None).ok);
        let v = h.readiness(at(541), None);
        assert!(!v.ok);
        assert!(reasons(&v).contains("more than 540 s"), "{v:?}");
        // A keeper that never succeeded is stale once the limit has passed since its start.
        let mut never = health();
        never.last_finished = Some(at(500));
        never.last_error = Some("the journal failed");
        let v = never.readiness(at(600), None);
        assert!(reasons(&v).contains("no cycle has succeeded"), "{v:?}");
        assert!(reasons(&v).contains("the last cycle failed"), "{v:?}");
    }

    #[test]
    fn short_intervals_keep_a_floor_of_staleness() {
        let h = Health::new(at(0), Duration::from_secs(1));
        assert_eq!(h.staleness_limit(), MIN_STALENESS);
    }

    #[test]
    fn an_unwritable_journal_or_a_stop_makes_the_keeper_unready() {
        let mut h = health();
        h.last_finished = Some(at(10));
        h.last_success = Some(at(10));
        let failed = WriteOutcome {
            at: at(15),
            error: Some("disk full".into()),
        };
        let v = h.readiness(at(20), Some(&failed));
        assert!(!v.ok);
        assert!(reasons(&v).contains("journal is not writable"), "{v:?}");
        assert!(
            !reasons(&v).contains("disk full"),
            "no raw error text: {v:?}"
        );
        let recovered = WriteOutcome {
            at: at(18),
            error: None,
        };
        assert!(h.readiness(at(20), Some(&recovered)).ok);
        h.stopping = true;
        let v = h.readiness(at(20), None);
        assert!(reasons(&v).contains("shutting down"), "{v:?}");
    }

    #[test]
    fn liveness_does_not_depend_on_the_instance() {
        let mut h = health();
        h.last_finished = Some(at(10));
        h.last_error = Some("the instance is unreachable");
        h.last_error_instance = true;
        h.cycle_started = Some(at(15));
        let v = h.liveness(at(20));
        assert!(v.ok);
        assert_eq!(v.body["status"], json!("ok"));
        assert_eq!(v.body["cycle_running_s"], json!(5));
        h.stopping = true;
        assert_eq!(h.liveness(at(20)).body["status"], json!("stopping"));
    }
}
