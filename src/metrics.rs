//! The daemon's Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! Labels are sys_ids, host names and fixed words — never names, messages or URLs — so the
//! number of series is bounded by the estate and no free text (or secret) can reach them.
//! Per-credential values that count down ("seconds until …") are computed at scrape time from
//! the timestamps the last cycle saw, so they are exact between cycles too.

use crate::clock::{SharedClock, SystemClock};
use crate::config::{DEFAULT_REFRESH_LIFETIME, Settings};
use crate::domain::deadline::refresh_token_deadline;
use crate::domain::plan::State;
use crate::domain::report::{CycleReport, Outcome};
use crate::engine::CycleError;
use crate::lease::LeaseSnapshot;
use crate::observe::{Exchange, Observe};
use jiff::Timestamp;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Bucket bounds of the HTTP latency histograms, in seconds: from a fast Table API read to the
/// default 30 s deadline.
const REQUEST_BUCKETS: [f64; 10] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Bucket bounds of the cycle duration histogram, in seconds: from an idle cycle to one over
/// thousands of credentials.
const CYCLE_BUCKETS: [f64; 11] = [
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// Every state a credential can be in, with its metric label.
const STATES: [(State, &str); 5] = [
    (State::Fresh, "fresh"),
    (State::Due, "due"),
    (State::MissingAccessToken, "missing_access_token"),
    (State::RefreshTokenExpiring, "refresh_token_expiring"),
    (State::NeedsReauth, "needs_reauth"),
];

/// The metric label of a credential state.
pub fn state_label(state: State) -> &'static str {
    STATES
        .iter()
        .find(|(s, _)| *s == state)
        .map_or("unknown", |(_, l)| l)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CycleLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    registry: String,
    outcome: &'static str,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    peer: &'static str,
    endpoint: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    peer: &'static str,
    endpoint: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credential: String,
    registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialStateLabels {
    credential: String,
    registry: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// What the last cycle saw of one credential: timestamps, so that scrape time can count down.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CredentialFacts {
    credential: String,
    registry: String,
    state: &'static str,
    access_expires: Option<Timestamp>,
    /// The sooner of the refresh row's `expires` and last use + the refresh-token lifetime.
    refresh_deadline: Option<Timestamp>,
    last_refresh: Option<Timestamp>,
}

/// The estate as of the last cycle, plus the journal's backlog.
#[derive(Debug, Default)]
struct Snapshot {
    credentials: Vec<CredentialFacts>,
    journal_oldest: Option<Timestamp>,
}

/// Encodes the per-credential gauges at scrape time.
struct EstateCollector {
    snapshot: Arc<Mutex<Snapshot>>,
    /// Read at scrape time.
    clock: SharedClock,
}

impl std::fmt::Debug for EstateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EstateCollector").finish_non_exhaustive()
    }
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_millisecond() - from.as_millisecond()) as f64 / 1000.0
}

impl EstateCollector {
    fn gauge_per_credential(
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        facts: &[CredentialFacts],
        value: impl Fn(&CredentialFacts) -> Option<f64>,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for f in facts {
            if let Some(v) = value(f) {
                let labels = CredentialLabels {
                    credential: f.credential.clone(),
                    registry: f.registry.clone(),
                };
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Collector for EstateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let now = self.clock.now();
        let (facts, oldest) = match self.snapshot.lock() {
            Ok(s) => (s.credentials.clone(), s.journal_oldest),
            Err(_) => return Ok(()),
        };
        let mut by_state: BTreeMap<&'static str, i64> =
            STATES.iter().map(|(_, label)| (*label, 0)).collect();
        for f in &facts {
            *by_state.entry(f.state).or_insert(0) += 1;
        }
        {
            let mut family = encoder.encode_descriptor(
                "credentials",
                "Refresh-token credentials by state after the last cycle.",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in &by_state {
                ConstGauge::new(*n).encode(family.encode_family(&StateLabels { state })?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "credential_state",
                "1 for the state each credential (refresh-row sys_id) is in after the last cycle.",
                None,
                MetricType::Gauge,
            )?;
            for f in &facts {
                let labels = CredentialStateLabels {
                    credential: f.credential.clone(),
                    registry: f.registry.clone(),
                    state: f.state,
                };
                ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Self::gauge_per_credential(
            &mut encoder,
            "access_token_expiry_seconds",
            "Seconds until the access token expires (negative: expired); absent without an access row.",
            &facts,
            |f| f.access_expires.map(|t| seconds_between(now, t)),
        )?;
        Self::gauge_per_credential(
            &mut encoder,
            "refresh_token_expiry_seconds",
            "Seconds until the refresh token's row expires or its inactivity limit (last use + refresh_token_lifetime) is reached, whichever is sooner.",
            &facts,
            |f| f.refresh_deadline.map(|t| seconds_between(now, t)),
        )?;
        Self::gauge_per_credential(
            &mut encoder,
            "last_refresh_age_seconds",
            "Seconds since a token was last minted from the refresh token (by the keeper or anyone).",
            &facts,
            |f| f.last_refresh.map(|t| seconds_between(t, now).max(0.0)),
        )?;
        let age = oldest.map_or(0.0, |t| seconds_between(t, now).max(0.0));
        ConstGauge::new(age).encode(encoder.encode_descriptor(
            "journal_oldest_pending_age_seconds",
            "Age of the oldest token answer not yet confirmed by ServiceNow (0: none pending).",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

/// The daemon's metrics. Cheap to share: every family is reference-counted inside.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    cycles: Family<CycleLabels, Counter>,
    cycle_duration: Histogram,
    refreshes: Family<RefreshLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<LatencyLabels, Histogram>,
    journal_pending: Gauge,
    instance_reachable: Gauge,
    last_success: Gauge<f64, AtomicU64>,
    interval: Gauge,
    lease_held: Gauge,
    lease_fence: Gauge,
    lease_takeovers: Counter,
    lease_last_held: Gauge<f64, AtomicU64>,
    /// The fence this keeper last held, to count takeovers (a new fence) across lease objects
    /// (a SIGHUP builds a new one, which renews the same fence).
    lease_fence_seen: Mutex<Option<u64>>,
    clock: SharedClock,
    snapshot: Arc<Mutex<Snapshot>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric; per-credential values count down on the wall clock.
    pub fn new() -> Metrics {
        Metrics::with_clock(SystemClock::shared())
    }

    /// Registers every metric with the clock scrapes read (tests pin it).
    pub fn with_clock(clock: SharedClock) -> Metrics {
        let mut registry = Registry::with_prefix("sn_oauth_keeper");
        registry.register(
            "build",
            "The keeper's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let cycles = Family::<CycleLabels, Counter>::default();
        registry.register(
            "cycles",
            "Refresh cycles, by result: ok, instance_error (the instance could not be read), journal_error",
            cycles.clone(),
        );
        let cycle_duration = Histogram::new(CYCLE_BUCKETS);
        registry.register(
            "cycle_duration_seconds",
            "Duration of refresh cycles",
            cycle_duration.clone(),
        );
        let refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "refreshes",
            "Refresh attempts by registry sys_id, outcome (refreshed, redelivered, failed) and failure class (none on success)",
            refreshes.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by peer (instance, token_endpoint), endpoint id, method and status (none: no answer)",
            requests.clone(),
        );
        let request_duration = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(REQUEST_BUCKETS)
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by peer, endpoint id and method, until the answer was read",
            request_duration.clone(),
        );
        let journal_pending = Gauge::default();
        registry.register(
            "journal_pending",
            "Token answers journaled but not yet confirmed by ServiceNow",
            journal_pending.clone(),
        );
        let instance_reachable = Gauge::default();
        registry.register(
            "instance_reachable",
            "1 when the last cycle could read the instance, 0 when it could not",
            instance_reachable.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_successful_cycle_timestamp_seconds",
            "UNIX time at which the last successful cycle ended",
            last_success.clone(),
        );
        let interval = Gauge::default();
        registry.register(
            "refresh_interval_seconds",
            "refresh.interval in force: the time between cycles",
            interval.clone(),
        );
        let lease_held = Gauge::default();
        registry.register(
            "lease_held",
            "1 while this keeper holds the instance's lease (it may refresh), 0 while it is a standby",
            lease_held.clone(),
        );
        let lease_fence = Gauge::default();
        registry.register(
            "lease_fence",
            "The fence of the lease this keeper holds or last held (0: never held); it grows by one with each new holder",
            lease_fence.clone(),
        );
        let lease_takeovers = Counter::default();
        registry.register(
            "lease_takeovers",
            "How often this keeper newly acquired the lease (at start, or taking over from another keeper)",
            lease_takeovers.clone(),
        );
        let lease_last_held = Gauge::<f64, AtomicU64>::default();
        lease_last_held.set(clock.now().as_millisecond() as f64 / 1000.0);
        registry.register(
            "lease_last_held_timestamp_seconds",
            "UNIX time at which this keeper last held the lease (its start time while it never has)",
            lease_last_held.clone(),
        );
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        registry.register_collector(Box::new(EstateCollector {
            snapshot: Arc::clone(&snapshot),
            clock: Arc::clone(&clock),
        }));
        Metrics {
            registry,
            cycles,
            cycle_duration,
            refreshes,
            requests,
            request_duration,
            journal_pending,
            instance_reachable,
            last_success,
            interval,
            lease_held,
            lease_fence,
            lease_takeovers,
            lease_last_held,
            lease_fence_seen: Mutex::new(None),
            clock,
            snapshot,
        }
    }

    /// Records `refresh.interval` in force (at start and after a reload).
    pub fn observe_interval(&self, interval: std::time::Duration) {
        self.interval
            .set(i64::try_from(interval.as_secs()).unwrap_or(i64::MAX));
    }

    /// Records where this keeper stands with the lease.
    pub fn observe_lease(&self, lease: &LeaseSnapshot) {
        self.lease_held.set(i64::from(lease.held));
        if let Some(fence) = lease.fence {
            self.lease_fence
                .set(i64::try_from(fence).unwrap_or(i64::MAX));
        }
        if lease.held {
            self.lease_last_held
                .set(self.clock.now().as_millisecond() as f64 / 1000.0);
            let mut seen = self
                .lease_fence_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *seen != lease.fence {
                self.lease_takeovers.inc();
                *seen = lease.fence;
            }
        }
    }

    /// Records a finished cycle: counters, durations and the per-credential facts.
    /// `settings` gives each registry's refresh-token lifetime (its inactivity limit).
    pub fn observe_cycle(&self, report: &CycleReport, settings: &Settings, finished: Timestamp) {
        self.cycles
            .get_or_create(&CycleLabels { result: "ok" })
            .inc();
        self.cycle_duration.observe(report.duration.as_secs_f64());
        self.instance_reachable.set(1);
        self.last_success
            .set(finished.as_millisecond() as f64 / 1000.0);
        let mut facts = Vec::with_capacity(report.credentials.len());
        for c in &report.credentials {
            let lifetime = settings
                .registry(&c.registry, &c.registry_id)
                .map_or(DEFAULT_REFRESH_LIFETIME, |r| r.refresh_token_lifetime);
            let refresh_deadline = refresh_token_deadline(c.refresh_expires, c.last_used, lifetime);
            facts.push(CredentialFacts {
                credential: c.sys_id.clone(),
                registry: c.registry_id.clone(),
                state: state_label(c.assessment_after(report.started).state),
                access_expires: c.access_expires,
                refresh_deadline,
                last_refresh: match (c.last_used, c.last_success) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                },
            });
            // Not attempts: nothing was due, a person must act first, or shutdown came.
            let Some(outcome) = c.outcome.kind().metric_label() else {
                continue;
            };
            let class = match &c.outcome {
                Outcome::Failed { class, .. } => class.label(),
                _ => "none",
            };
            self.refreshes
                .get_or_create(&RefreshLabels {
                    registry: c.registry_id.clone(),
                    outcome,
                    class,
                })
                .inc();
        }
        if let Ok(mut s) = self.snapshot.lock() {
            s.credentials = facts;
        }
    }

    /// Records a cycle that could not run. The per-credential facts of the last good cycle stay:
    /// they are still the best knowledge, and their countdowns go on.
    pub fn observe_cycle_failure(&self, error: &CycleError, duration: std::time::Duration) {
        let result = match error {
            CycleError::Instance(_) => "instance_error",
            _ => "journal_error",
        };
        self.cycles.get_or_create(&CycleLabels { result }).inc();
        self.cycle_duration.observe(duration.as_secs_f64());
        if matches!(error, CycleError::Instance(_)) {
            self.instance_reachable.set(0);
        }
    }

    /// Records the journal's backlog: how many answers wait, and since when the oldest.
    pub fn observe_journal(&self, pending: usize, oldest: Option<Timestamp>) {
        self.journal_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        if let Ok(mut s) = self.snapshot.lock() {
            s.journal_oldest = oldest;
        }
    }

    /// The exposition text (OpenMetrics), ending in `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Observe for Metrics {
    fn exchange(&self, e: &Exchange) {
        let status = e
            .status
            .map_or_else(|| "none".to_string(), |s| s.to_string());
        self.requests
            .get_or_create(&RequestLabels {
                peer: e.peer.label(),
                endpoint: e.endpoint.clone(),
                method: e.method.clone(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&LatencyLabels {
                peer: e.peer.label(),
                endpoint: e.endpoint.clone(),
                method: e.method.clone(),
            })
            .observe(e.duration.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Settings;
    use crate::domain::classify::FailureClass;
    use crate::domain::plan::{Action, Assessment, Reason};
    use crate::domain::report::{CredentialReport, Hold};
    use crate::journal::JournalKey;
    use crate::observe::Peer;
    use std::time::Duration;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    const T0: i64 = 1_800_000_000;

    fn credential(
        id: &str,
        state: State,
        outcome: Outcome,
        access: Option<i64>,
        refresh_row: Option<i64>,
        last_used: Option<i64>,
    ) -> CredentialReport {
        CredentialReport {
            sys_id: id.into(),
            name: format!("name with spaces {id}"),
            registry: "Graph".into(),
            registry_id: "reg0000000000000000000000000001".into(),
            requestor_profile: "prof".into(),
            assessment: Assessment {
                state,
                reason: Reason::MissingAccessToken,
                action: Action::Skip,
            },
            outcome,
            access_expires: access.map(|s| at(T0 + s)),
            refresh_expires: refresh_row.map(|s| at(T0 + s)),
            last_error: None,
            last_success: None,
            last_used: last_used.map(|s| at(T0 + s)),
        }
    }

    fn settings() -> Settings {
        Settings::local(
            "http://127.0.0.1:1",
            "u",
            "p",
            "/api/x",
            std::env::temp_dir(),
            JournalKey::random().unwrap(),
        )
        .unwrap()
    }

    /// The exposition with the samples of each family sorted: families keep the order they were
    /// registered in, but the series inside one come out of a hash map.
    fn sorted_samples(text: &str) -> String {
        let mut out = String::new();
        let mut samples: Vec<&str> = Vec::new();
        let flush = |samples: &mut Vec<&str>, out: &mut String| {
            samples.sort_unstable();
            for s in samples.drain(..) {
                out.push_str(s);
                out.push('\n');
            }
        };
        for line in text.lines() {
            if line.starts_with('#') {
                flush(&mut samples, &mut out);
                out.push_str(line);
                out.push('\n');
            } else {
                samples.push(line);
            }
        }
        flush(&mut samples, &mut out);
        out
    }

    /// The whole exposition after one cycle, byte for byte (series sorted within a family): names, help, types, labels and
    /// countdowns computed at scrape time (the clock stands 100 s after the cycle).
    #[test]
    fn exposition_snapshot() {
        let metrics = Metrics::with_clock(ManualClock::new(at(T0 + 100)));
        let report = CycleReport {
            started: at(T0),
            duration: Duration::from_millis(1_500),
            rows: 3,
            credentials: vec![
                credential(
                    "aaa",
                    State::Fresh,
                    Outcome::Refreshed {
                        rotated: true,
                        created_access_row: false,
                    },
                    Some(3_600),
                    Some(90 * 86_400),
                    Some(0),
                ),
                // Due before the cycle; the provider refused it during the cycle.
                credential(
                    "bbb",
                    State::Due,
                    Outcome::Failed {
                        class: FailureClass::NeedsReauth,
                        message: "invalid_grant: a message that must not become a label".into(),
                    },
                    Some(-60),
                    Some(86_400),
                    Some(-200 * 86_400),
                ),
                credential(
                    "ccc",
                    State::MissingAccessToken,
                    Outcome::Blocked {
                        hold: Hold::Person(FailureClass::Configuration),
                        message: "x".into(),
                    },
                    None,
                    None,
                    None,
                ),
            ],
            lease: None,
        };
        metrics.observe_cycle(&report, &settings(), at(T0 + 2));
        metrics.observe_journal(1, Some(at(T0 - 20)));
        metrics.observe_interval(Duration::from_secs(180));
        metrics.observe_lease(&LeaseSnapshot {
            holder: "host/journal".into(),
            held: true,
            fence: Some(7),
            claims: 0,
        });
        metrics.exchange(&Exchange {
            peer: Peer::Instance,
            endpoint: "table/oauth_credential".into(),
            method: "GET".into(),
            status: Some(200),
            duration: Duration::from_millis(40),
        });
        metrics.exchange(&Exchange {
            peer: Peer::TokenEndpoint,
            endpoint: "login.microsoftonline.com".into(),
            method: "POST".into(),
            status: None,
            duration: Duration::from_secs(3),
        });
        // The version is the one value a release changes on purpose.
        let text = sorted_samples(
            &metrics
                .render()
                .replace(env!("CARGO_PKG_VERSION"), "VERSION"),
        );
        let expected = include_str!("snapshots/metrics.txt");
        assert_eq!(text, expected, "exposition changed:\n{text}");
    }

    #[test]
    fn a_failed_cycle_is_counted_by_cause_and_keeps_the_estate() {
        let metrics = Metrics::with_clock(ManualClock::new(at(T0)));
        let error = CycleError::Instance(crate::servicenow::SnError::Unreachable("x".into()));
        metrics.observe_cycle_failure(&error, Duration::from_secs(1));
        let text = metrics.render();
        assert!(
            text.contains("sn_oauth_keeper_cycles_total{result=\"instance_error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sn_oauth_keeper_instance_reachable 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    /// Every metric the shipped alert rules and dashboard query exists in the exposition, so a
    /// renamed metric cannot silently blind an alert.
    #[test]
    fn alert_rules_and_dashboard_query_existing_metrics() {
        let exposition = include_str!("snapshots/metrics.txt");
        let known: std::collections::HashSet<String> = exposition
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_string)
            .collect();
        for (file, text) in [
            (
                "deploy/prometheus/alerts.yml",
                include_str!("../deploy/prometheus/alerts.yml"),
            ),
            (
                "deploy/grafana/sn-oauth-keeper.json",
                include_str!("../deploy/grafana/sn-oauth-keeper.json"),
            ),
        ] {
            let mut used = 0;
            for (i, _) in text.match_indices("sn_oauth_keeper_") {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                used += 1;
                assert!(
                    known.contains(&name),
                    "{file} queries unknown metric {name}"
                );
            }
            assert!(used > 3, "{file} queries almost nothing");
        }
    }
}
