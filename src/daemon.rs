//! The `run` daemon: a cycle every `refresh.interval`, `/metrics`, `/healthz`, `/readyz`, and a
//! graceful stop on SIGTERM/SIGINT that never cuts a refresh in flight.

use crate::engine::{CycleError, CycleReport, Keeper, Mode, Outcome};
use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CycleLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    registry: String,
    outcome: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credential: String,
    registry: String,
}

/// The daemon's metrics. Labels are sys_ids and fixed words, never free text.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    cycles: Family<CycleLabels, Counter>,
    refreshes: Family<RefreshLabels, Counter>,
    states: Family<StateLabels, Gauge>,
    access_expiry: Family<CredentialLabels, Gauge<f64, AtomicU64>>,
    journal_pending: Gauge,
    last_cycle: Gauge<f64, AtomicU64>,
    cycle_duration: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sn_oauth_keeper");
        let cycles = Family::<CycleLabels, Counter>::default();
        registry.register("cycles", "Refresh cycles run, by result", cycles.clone());
        let refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "refreshes",
            "Refresh attempts by registry sys_id, outcome and failure class",
            refreshes.clone(),
        );
        let states = Family::<StateLabels, Gauge>::default();
        registry.register(
            "credentials",
            "Credentials by state after the last cycle",
            states.clone(),
        );
        let access_expiry = Family::<CredentialLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "access_token_expiry_seconds",
            "Seconds until the access token expires (negative: expired), per refresh-row sys_id",
            access_expiry.clone(),
        );
        let journal_pending = Gauge::default();
        registry.register(
            "journal_pending",
            "Token answers journaled but not yet confirmed by ServiceNow",
            journal_pending.clone(),
        );
        let last_cycle = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_successful_cycle_timestamp_seconds",
            "UNIX time of the last cycle that reached the instance",
            last_cycle.clone(),
        );
        let cycle_duration = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_cycle_duration_seconds",
            "Duration of the last cycle",
            cycle_duration.clone(),
        );
        Metrics {
            registry,
            cycles,
            refreshes,
            states,
            access_expiry,
            journal_pending,
            last_cycle,
            cycle_duration,
        }
    }

    /// Records a finished cycle.
    pub fn observe(&self, report: &CycleReport, journal_pending: usize) {
        self.cycles
            .get_or_create(&CycleLabels {
                result: "ok".into(),
            })
            .inc();
        self.last_cycle
            .set(report.started.as_millisecond() as f64 / 1000.0);
        self.cycle_duration.set(report.duration.as_secs_f64());
        self.journal_pending
            .set(i64::try_from(journal_pending).unwrap_or(i64::MAX));
        self.states.clear();
        self.access_expiry.clear();
        for c in &report.credentials {
            self.states
                .get_or_create(&StateLabels {
                    state: c.assessment.state.label().to_string(),
                })
                .inc();
            if let Some(expires) = c.access_expires {
                let secs = expires.as_second() - report.started.as_second();
                self.access_expiry
                    .get_or_create(&CredentialLabels {
                        credential: c.sys_id.clone(),
                        registry: c.registry_id.clone(),
                    })
                    .set(secs as f64);
            }
            let class = match &c.outcome {
                Outcome::Failed { class, .. } => class.label(),
                Outcome::Blocked { .. } => "blocked",
                _ => "",
            };
            if !matches!(c.outcome, Outcome::Skipped | Outcome::Deferred) {
                self.refreshes
                    .get_or_create(&RefreshLabels {
                        registry: c.registry_id.clone(),
                        outcome: c.outcome.label().replace(' ', "_").replace('-', ""),
                        class: class.to_string(),
                    })
                    .inc();
            }
        }
    }

    /// Records a cycle that could not run.
    pub fn observe_failure(&self) {
        self.cycles
            .get_or_create(&CycleLabels {
                result: "error".into(),
            })
            .inc();
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// Whether the last cycle reached the instance.
    pub instance_ok: bool,
    /// Why not, if not.
    pub instance_error: Option<String>,
    /// Whether a cycle has run at all.
    pub cycled: bool,
}

/// Shared state of the admin endpoints.
#[derive(Clone)]
pub struct AdminState {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The readiness facts.
    pub readiness: Arc<Mutex<Readiness>>,
    /// The keeper (for the journal's writability).
    pub keeper: Keeper,
}

/// The admin router: `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
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

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(AxumState(state): AxumState<AdminState>) -> impl IntoResponse {
    let readiness = state
        .readiness
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    let journal_ok = state.keeper.journal().is_some_and(|j| j.writable());
    let mut reasons = Vec::new();
    if !readiness.cycled {
        reasons.push("no cycle has finished yet".to_string());
    } else if !readiness.instance_ok {
        reasons.push(format!(
            "the last cycle did not reach the instance: {}",
            readiness.instance_error.unwrap_or_default()
        ));
    }
    if !journal_ok {
        reasons.push("the journal is not writable".to_string());
    }
    let ready = reasons.is_empty();
    let body = json!({
        "ready": ready,
        "instance_reachable": readiness.instance_ok,
        "journal_writable": journal_ok,
        "reasons": reasons,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Runs cycles until `stop` is cancelled, serving the admin endpoints on `listener`.
/// Returns after the cycle in progress (if any) finished its in-flight refreshes.
pub async fn run(
    keeper: Keeper,
    interval: Duration,
    listener: TcpListener,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Mutex::new(Readiness::default()));
    let state = AdminState {
        metrics: Arc::clone(&metrics),
        readiness: Arc::clone(&readiness),
        keeper: keeper.clone(),
    };
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, admin_router(state))
            .with_graceful_shutdown(server_stop.cancelled_owned())
            .await
    });
    tracing::info!(
        event = "daemon.started",
        interval_s = interval.as_secs(),
        "keeper started"
    );
    loop {
        let result = keeper.cycle(Mode::Apply, &stop).await;
        let pending = keeper
            .journal()
            .and_then(|j| j.pending_count().ok())
            .unwrap_or(0);
        match &result {
            Ok(report) => {
                metrics.observe(report, pending);
                if let Ok(mut r) = readiness.lock() {
                    *r = Readiness {
                        instance_ok: true,
                        instance_error: None,
                        cycled: true,
                    };
                }
            }
            Err(e) => {
                metrics.observe_failure();
                tracing::error!(event = "cycle.failed", error = %e, instance_unusable = e.instance_unusable(), "cycle failed");
                if let Ok(mut r) = readiness.lock() {
                    *r = Readiness {
                        instance_ok: !matches!(e, CycleError::Instance(_)),
                        instance_error: Some(e.to_string()),
                        cycled: true,
                    };
                }
            }
        }
        if stop.is_cancelled() {
            break;
        }
        // A little jitter so a fleet of keepers does not hit shared endpoints in lockstep.
        let jitter_ms = fastrand::u64(0..=(interval.as_millis() as u64 / 20).max(1));
        let wait = interval + Duration::from_millis(jitter_ms);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!(event = "daemon.stopped", "keeper stopped");
    match server.await {
        Ok(r) => r,
        Err(e) => Err(std::io::Error::other(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_are_prefixed() {
        let m = Metrics::new();
        m.observe_failure();
        let text = m.render();
        assert!(
            text.contains("sn_oauth_keeper_cycles_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(text.contains("# EOF"));
    }
}
