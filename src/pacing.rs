//! Pacing: exponential backoff with full jitter, a retry budget per cycle, and per-host caps on
//! requests in flight, so one dead or slow endpoint can neither stall a cycle nor be flooded.
//!
//! Retries are executed by `backon` (the often-named `backoff` crate is unmaintained,
//! RUSTSEC-2025-0012); what is retried, and how often, is decided here and by the callers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(max, base · 2ⁿ)]` (the AWS architecture blog's "full jitter"), which spreads
/// retries of many clients best. Iterates `times` delays, then ends.
#[derive(Debug, Clone, Copy)]
pub struct FullJitter {
    /// The ceiling of the first delay.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
    /// How many delays (retries) to give.
    pub times: u32,
    attempt: u32,
}

impl FullJitter {
    /// A backoff of `times` retries.
    pub fn new(base: Duration, max: Duration, times: u32) -> FullJitter {
        FullJitter {
            base,
            max,
            times,
            attempt: 0,
        }
    }

    /// The ceiling of the delay before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        self.base.saturating_mul(factor).min(self.max)
    }
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempt >= self.times {
            return None;
        }
        let ceiling = self.ceiling(self.attempt);
        self.attempt += 1;
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(fastrand::u64(0..=millis)))
    }
}

/// How many retries a cycle may spend in all. Shared by every call of the cycle, so a dead
/// provider or a struggling instance cannot stall the cycle for everyone else: once it is
/// spent, failures fail at once and wait for the next cycle.
#[derive(Debug)]
pub struct RetryBudget {
    remaining: AtomicU32,
}

impl RetryBudget {
    /// A budget of `retries`.
    pub fn new(retries: u32) -> RetryBudget {
        RetryBudget {
            remaining: AtomicU32::new(retries),
        }
    }

    /// Refills the budget (at the head of a cycle).
    pub fn reset(&self, retries: u32) {
        self.remaining.store(retries, Ordering::Relaxed);
    }

    /// Takes one retry; `false` once the budget is spent.
    pub fn try_take(&self) -> bool {
        self.remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Retries left.
    pub fn remaining(&self) -> u32 {
        self.remaining.load(Ordering::Relaxed)
    }
}

/// The retry budget of a cycle that refreshes `due` credentials: a few retries for the
/// instance, plus two per due credential.
pub fn cycle_budget(due: usize) -> u32 {
    u32::try_from(due.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .saturating_add(8)
}

/// At most `per_host` requests in flight to any one host, so one registry cannot flood its
/// token endpoint however many credentials it has.
#[derive(Debug)]
pub struct HostLimits {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostLimits {
    /// Caps of `per_host` requests per host.
    pub fn new(per_host: usize) -> HostLimits {
        HostLimits {
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a slot on the host of `url` (the whole string when it has no host).
    pub async fn acquire(&self, url: &str) -> Option<OwnedSemaphorePermit> {
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
            })
            .unwrap_or_else(|| url.to_string());
        let semaphore = {
            let mut hosts = self.hosts.lock().ok()?;
            Arc::clone(
                hosts
                    .entry(host)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_host))),
            )
        };
        semaphore.acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn budget_is_shared_and_runs_out() {
        let budget = RetryBudget::new(2);
        assert!(budget.try_take());
        assert!(budget.try_take());
        assert!(!budget.try_take());
        budget.reset(1);
        assert_eq!(budget.remaining(), 1);
    }

    #[tokio::test]
    async fn hosts_are_capped_separately() {
        let limits = HostLimits::new(1);
        let a = limits.acquire("https://a.example/token").await;
        assert!(a.is_some());
        let b = limits.acquire("https://b.example/token").await;
        assert!(b.is_some(), "another host has its own slot");
        let again = tokio::time::timeout(
            Duration::from_millis(50),
            limits.acquire("https://a.example/other"),
        )
        .await;
        assert!(again.is_err(), "the same host waits for its slot");
        drop(a);
        assert!(limits.acquire("https://a.example/token").await.is_some());
    }

    proptest! {
        #[test]
        fn delays_stay_under_their_ceiling(base in 1u64..1_000, max in 1u64..100_000, times in 0u32..12) {
            let backoff = FullJitter::new(Duration::from_millis(base), Duration::from_millis(max), times);
            let delays: Vec<Duration> = backoff.collect();
            prop_assert_eq!(delays.len(), times as usize);
            for (i, d) in delays.iter().enumerate() {
                prop_assert!(*d <= backoff.ceiling(u32::try_from(i).unwrap()));
                prop_assert!(*d <= Duration::from_millis(max));
            }
        }
    }
}
