//! The `run` daemon: a cycle every `refresh.interval` (never two at once), the admin endpoints
//! `/` (the status page, [`crate::status_page`]), `/api/status`, `/metrics`, `/healthz` and
//! `/readyz`, and the signals of a service manager.
//!
//! - SIGTERM or SIGINT: no new refresh starts; the refreshes in flight finish, bounded by
//!   `refresh.shutdown_grace`; then the keeper exits 0. A second signal, or the end of the grace
//!   period, abandons what is still in flight (exit 1, `daemon.grace_exceeded`).
//! - SIGHUP: the config file is read again. An invalid file is rejected with a log line naming
//!   the first key at fault and listing every problem, and the running config stays. A valid one takes effect from the next cycle, except
//!   `state.*` and `server.listen`, which hold an open journal and a bound socket: changing
//!   them needs a restart, and a reload that changes them says so.

mod admin;

pub use admin::{
    AdminState, Health, MIN_STALENESS, STALE_AFTER_INTERVALS, StatusBoard, Verdict, admin_router,
};

use crate::clock::{SharedClock, SystemClock};
use crate::config::{ConfigError, Settings};
use crate::domain::report::CycleReport;
use crate::engine::{CycleError, Keeper, Mode};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::servicenow::SnError;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The lease task never asks the instance more often than this.
const MIN_LEASE_WAIT: Duration = Duration::from_millis(200);

/// Resolves when SIGTERM or SIGINT arrives (`once` and `simulate` use it).
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

/// How the outside world steers a running daemon: the service manager's signals, or a test.
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// Cancelled by the first SIGTERM/SIGINT: start nothing new, finish what is in flight.
    pub stop: CancellationToken,
    /// Cancelled by a second SIGTERM/SIGINT: abandon what is in flight now.
    pub force: CancellationToken,
    /// Notified by SIGHUP: read the config again.
    pub reload: Arc<Notify>,
}

impl Control {
    /// Wires SIGTERM, SIGINT and SIGHUP to a new [`Control`] (SIGHUP on Unix only).
    pub fn from_signals() -> std::io::Result<Control> {
        let control = Control::default();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            let mut hup = signal(SignalKind::hangup())?;
            let c = control.clone();
            tokio::spawn(async move {
                loop {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                        _ = hup.recv() => {
                            tracing::info!(event = "config.reload_requested", signal = "SIGHUP", "reading the config again");
                            c.reload.notify_one();
                            continue;
                        }
                    };
                    if c.stop.is_cancelled() {
                        tracing::warn!(
                            event = "daemon.forced",
                            signal = name,
                            "second stop signal: abandoning the refreshes in flight"
                        );
                        c.force.cancel();
                        return;
                    }
                    tracing::info!(
                        event = "daemon.stopping",
                        signal = name,
                        "stop signal: finishing the refreshes in flight"
                    );
                    c.stop.cancel();
                }
            });
        }
        #[cfg(not(unix))]
        {
            let c = control.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!(
                    event = "daemon.stopping",
                    signal = "ctrl-c",
                    "stop signal: finishing the refreshes in flight"
                );
                c.stop.cancel();
                let _ = tokio::signal::ctrl_c().await;
                c.force.cancel();
            });
        }
        Ok(control)
    }
}

/// Reads the config again (SIGHUP): the same file, validated the same way as at start.
pub type Reloader = Box<dyn Fn() -> Result<Settings, ConfigError> + Send + Sync>;

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every refresh in flight finished.
    Clean,
    /// The grace period ran out (or a second signal came) with work in flight.
    Abandoned,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The HTTP clients could not be built.
    #[error("cannot build the HTTP clients: {0}")]
    Clients(#[from] SnError),
    /// The admin server failed.
    #[error("admin server: {0}")]
    Serve(#[from] std::io::Error),
}

/// What the loop needs besides the settings.
pub struct Daemon {
    settings: Arc<Settings>,
    journal: Arc<Journal>,
    reloader: Reloader,
    metrics: Arc<Metrics>,
    clock: SharedClock,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("source", &self.settings.source)
            .finish_non_exhaustive()
    }
}

/// The settings that hold something a running process cannot let go of.
fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.state.dir != new.state.dir {
        keys.push("state.dir");
    }
    if old.state.key != new.state.key {
        keys.push("state.key_env/state.key_file");
    }
    if old.server.listen != new.server.listen {
        keys.push("server.listen");
    }
    keys
}

enum CycleEnd {
    Done(Result<CycleReport, CycleError>),
    Abandoned,
}

impl Daemon {
    /// A daemon over an opened journal; `reloader` reads the config file again on SIGHUP.
    pub fn new(settings: Arc<Settings>, journal: Arc<Journal>, reloader: Reloader) -> Daemon {
        Daemon {
            settings,
            journal,
            reloader,
            metrics: Arc::new(Metrics::new()),
            clock: SystemClock::shared(),
        }
    }

    /// Reads every time from `clock`: cycles, health, metrics (the journal has its own).
    pub fn with_clock(mut self, clock: SharedClock) -> Daemon {
        self.metrics = Arc::new(Metrics::with_clock(Arc::clone(&clock)));
        self.clock = clock;
        self
    }

    fn keeper(&self, settings: Arc<Settings>) -> Result<Keeper, SnError> {
        let observer = Observer::new(Arc::clone(&self.metrics) as Arc<dyn crate::observe::Observe>);
        Ok(Keeper::new(settings, Some(Arc::clone(&self.journal)))?
            .with_clock(Arc::clone(&self.clock))
            .with_observer(observer))
    }

    /// Applies a SIGHUP: a valid new config replaces the keeper for the next cycle; an invalid
    /// one is logged and ignored.
    fn reload(&mut self, keeper: &mut Keeper) {
        let mut new = match (self.reloader)() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(event = "config.reload_rejected", key = e.key().unwrap_or(""), error = %e, "the new config is invalid; the running config stays");
                return;
            }
        };
        let pinned = restart_only_changes(&self.settings, &new);
        if !pinned.is_empty() {
            tracing::warn!(event = "config.restart_required", keys = %pinned.join(", "), "these settings take effect only after a restart; their running values stay");
        }
        new.state = self.settings.state.clone();
        new.server = self.settings.server;
        let new = Arc::new(new);
        match self.keeper(Arc::clone(&new)) {
            Ok(k) => {
                *keeper = k;
                self.settings = new;
                tracing::info!(
                    event = "config.reloaded",
                    interval_s = self.settings.refresh.interval.as_secs(),
                    lead_time_s = self.settings.refresh.lead_time.as_secs(),
                    concurrency = self.settings.refresh.concurrency,
                    registries = self.settings.registries.len(),
                    "new config in force from the next cycle"
                );
            }
            Err(e) => {
                tracing::error!(event = "config.reload_rejected", key = "instance", error = %e, "cannot build clients from the new config; the running config stays");
            }
        }
    }

    /// One cycle; once `stop` is cancelled it gets `shutdown_grace` to finish (or until
    /// `force`). Dropping the cycle's future aborts its refresh tasks: only then is work lost,
    /// and the journal's intent records tell the next start about it.
    async fn bounded_cycle(&self, keeper: &Keeper, control: &Control) -> CycleEnd {
        let cycle = keeper.cycle(Mode::Apply, &control.stop);
        tokio::pin!(cycle);
        tokio::select! {
            biased;
            r = &mut cycle => return CycleEnd::Done(r),
            _ = control.stop.cancelled() => {}
        }
        let grace = self.settings.refresh.shutdown_grace;
        tokio::select! {
            biased;
            r = &mut cycle => CycleEnd::Done(r),
            _ = tokio::time::sleep(grace) => CycleEnd::Abandoned,
            _ = control.force.cancelled() => CycleEnd::Abandoned,
        }
    }

    fn observe_journal(&self) {
        let pending = self.journal.pending_count().unwrap_or(0);
        let oldest = self
            .journal
            .summaries()
            .ok()
            .and_then(|s| s.into_iter().next())
            .map(|s| s.created_at);
        self.metrics.observe_journal(pending, oldest);
    }

    /// Runs cycles until `control.stop`, serving the admin endpoints on `listener` until the
    /// last cycle ended.
    pub async fn run(
        mut self,
        listener: TcpListener,
        control: Control,
    ) -> Result<Stopped, DaemonError> {
        let mut keeper = self.keeper(Arc::clone(&self.settings))?;
        self.metrics
            .observe_interval(self.settings.refresh.interval);
        let mut lease_task = self.keep_lease(&keeper);
        let health = Arc::new(Mutex::new(Health::new(
            self.clock.now(),
            self.settings.refresh.interval,
        )));
        let board = Arc::new(Mutex::new(StatusBoard {
            lease: keeper.lease().cloned(),
            ..StatusBoard::default()
        }));
        let state = AdminState {
            metrics: Arc::clone(&self.metrics),
            health: Arc::clone(&health),
            journal: Arc::clone(&self.journal),
            clock: Arc::clone(&self.clock),
            board: Arc::clone(&board),
        };
        let listen = listener.local_addr()?;
        // The admin server outlives the stop signal: during the grace period /readyz says
        // "shutting down" and the last metrics can still be scraped.
        let server_stop = CancellationToken::new();
        let server = {
            let stop = server_stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, admin_router(state))
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            })
        };
        {
            let health = Arc::clone(&health);
            let stop = control.stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                if let Ok(mut h) = health.lock() {
                    h.stopping = true;
                }
            });
        }
        tracing::info!(
            event = "daemon.started",
            listen = %listen,
            interval_s = self.settings.refresh.interval.as_secs(),
            shutdown_grace_s = self.settings.refresh.shutdown_grace.as_secs(),
            version = env!("CARGO_PKG_VERSION"),
            "keeper started"
        );
        self.observe_journal();
        let mut stopped = Stopped::Clean;
        loop {
            if let Ok(mut h) = health.lock() {
                h.cycle_started = Some(self.clock.now());
            }
            if let Ok(mut b) = board.lock() {
                b.next_cycle = None;
            }
            let began = self.clock.monotonic();
            let end = self.bounded_cycle(&keeper, &control).await;
            let finished = self.clock.now();
            match end {
                CycleEnd::Abandoned => {
                    tracing::error!(
                        event = "daemon.grace_exceeded",
                        grace_s = self.settings.refresh.shutdown_grace.as_secs(),
                        "refreshes still in flight at the end of the grace period were abandoned; the journal tells the next start about them"
                    );
                    stopped = Stopped::Abandoned;
                    break;
                }
                CycleEnd::Done(Ok(report)) => {
                    self.metrics
                        .observe_cycle(&report, &self.settings, finished);
                    if let Ok(mut h) = health.lock() {
                        h.cycle_started = None;
                        h.last_finished = Some(finished);
                        h.last_success = Some(finished);
                        h.last_error = None;
                        h.last_error_instance = false;
                    }
                    if let Ok(mut b) = board.lock() {
                        b.report = Some(Arc::new(report));
                    }
                }
                CycleEnd::Done(Err(e)) => {
                    self.metrics
                        .observe_cycle_failure(&e, self.clock.monotonic() - began);
                    let instance = matches!(e, CycleError::Instance(_));
                    tracing::error!(event = "cycle.failed", error = %e, instance_unusable = e.instance_unusable(), "cycle failed");
                    if let Ok(mut h) = health.lock() {
                        h.cycle_started = None;
                        h.last_finished = Some(finished);
                        h.last_error = Some(e.reason());
                        h.last_error_instance = instance;
                    }
                }
            }
            if let Some(lease) = keeper.lease() {
                self.metrics.observe_lease(&lease.snapshot());
            }
            // A real write each cycle, so /readyz knows the disk still takes one.
            if let Err(e) = self.journal.heartbeat().await {
                tracing::error!(event = "journal.write_failed", error = %e, "the journal's heartbeat write failed");
            }
            self.observe_journal();
            if control.stop.is_cancelled() {
                break;
            }
            let mut next = self.next_cycle_at(began);
            self.post_next_cycle(&board, next);
            loop {
                tokio::select! {
                    _ = control.stop.cancelled() => break,
                    _ = tokio::time::sleep_until(next) => break,
                    _ = control.reload.notified() => {
                        self.reload(&mut keeper);
                        // The new keeper's lease renews the same one (same holder id).
                        lease_task.abort();
                        lease_task = self.keep_lease(&keeper);
                        self.metrics.observe_interval(self.settings.refresh.interval);
                        if let Ok(mut h) = health.lock() {
                            h.interval = self.settings.refresh.interval;
                        }
                        next = next.min(self.next_cycle_at(began));
                        if let Ok(mut b) = board.lock() {
                            b.lease = keeper.lease().cloned();
                        }
                        self.post_next_cycle(&board, next);
                    }
                }
            }
            if control.stop.is_cancelled() {
                break;
            }
        }
        lease_task.abort();
        if let Some(lease) = keeper.lease() {
            if stopped == Stopped::Clean {
                // Nothing is in flight: a standby may take over at once.
                lease.release().await;
            } else {
                tracing::warn!(
                    event = "lease.left_to_lapse",
                    ttl_s = self.settings.lease.ttl.as_secs(),
                    "refreshes were abandoned: the lease is not released but lapses by itself; this keeper's claims stay until its journal delivers"
                );
            }
            self.metrics.observe_lease(&lease.snapshot());
        }
        tracing::info!(
            event = "daemon.stopped",
            clean = stopped == Stopped::Clean,
            "keeper stopped"
        );
        server_stop.cancel();
        match server.await {
            Ok(r) => r?,
            Err(e) => return Err(DaemonError::Serve(std::io::Error::other(e))),
        }
        Ok(stopped)
    }

    /// Tells the status page when the next cycle starts: `next` is on tokio's clock, the page
    /// shows wall time.
    fn post_next_cycle(&self, board: &Mutex<StatusBoard>, next: tokio::time::Instant) {
        let wait = next.saturating_duration_since(tokio::time::Instant::now());
        let at = self
            .clock
            .now()
            .checked_add(wait)
            .unwrap_or_else(|_| self.clock.now());
        if let Ok(mut b) = board.lock() {
            b.next_cycle = Some(at);
        }
    }

    /// The task that keeps the lease between (and during) cycles: it renews it at a third of its
    /// life, and a standby asks again soon after the holder's lease would lapse. A keeper
    /// without a lease (none without a journal) gets a task that ends at once.
    fn keep_lease(&self, keeper: &Keeper) -> tokio::task::JoinHandle<()> {
        let lease = keeper.lease().cloned();
        let metrics = Arc::clone(&self.metrics);
        tokio::spawn(async move {
            let Some(lease) = lease else {
                return;
            };
            loop {
                tokio::time::sleep(lease.next_call_in().max(MIN_LEASE_WAIT)).await;
                lease.ensure().await;
                metrics.observe_lease(&lease.snapshot());
            }
        })
    }

    /// When the next cycle starts: an interval after the last one started, plus a little
    /// jitter so a fleet of keepers does not hit shared endpoints in lockstep. A cycle longer
    /// than the interval is followed by the next one at once: cycles never overlap, because
    /// this loop runs them one after the other.
    fn next_cycle_at(&self, last_start: tokio::time::Instant) -> tokio::time::Instant {
        let interval = self.settings.refresh.interval;
        let spread = u64::try_from(interval.as_millis() / 20)
            .unwrap_or(u64::MAX)
            .max(1);
        let due = last_start + interval + Duration::from_millis(fastrand::u64(0..=spread));
        // `due` is on the keeper's clock; the sleep is on tokio's.
        tokio::time::Instant::now() + due.saturating_duration_since(self.clock.monotonic())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_key_source_or_listener_needs_a_restart() {
        let key = crate::journal::JournalKey::random().unwrap();
        let old = Settings::local(
            "http://127.0.0.1:1",
            "u",
            "p",
            "/api/x",
            "/tmp/s".into(),
            key.clone(),
        )
        .unwrap();
        let mut same = old.clone();
        same.state.key = crate::config::KeySource::Inline(key);
        assert!(restart_only_changes(&old, &same).is_empty());
        let mut new = old.clone();
        new.state.key =
            crate::config::KeySource::Inline(crate::journal::JournalKey::random().unwrap());
        new.server.listen = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            restart_only_changes(&old, &new),
            ["state.key_env/state.key_file", "server.listen"]
        );
    }
}
