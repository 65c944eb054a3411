//! Time, injected. Nothing else in the keeper reads a clock: `clippy.toml` bans
//! `jiff::Timestamp::now` and `std::time::Instant::now` everywhere but here, so a test can drive
//! whole cycles through time it controls (a credential falls due, a parked registry's probe
//! comes round, a journal record ages) without waiting.

use jiff::Timestamp;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the keeper learns the time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Wall-clock time: what ServiceNow's `expires`, providers' lifetimes and the journal's
    /// timestamps are in.
    fn now(&self) -> Timestamp;

    /// Monotonic time for durations and deadlines. Tokio's, so that tests with paused time
    /// move it too.
    fn monotonic(&self) -> tokio::time::Instant;
}

/// The clock every component of one keeper shares.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    // The one place wall time is read.
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn monotonic(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
}

/// A clock a test sets by hand: wall time stands still until [`ManualClock::advance`] or
/// [`ManualClock::set`] moves it; monotonic time is tokio's (so paused time moves it) plus every
/// advance, so deadlines measured on it see the jump too.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<ManualState>,
}

#[derive(Debug, Clone, Copy)]
struct ManualState {
    wall: Timestamp,
    advanced: Duration,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            state: Mutex::new(ManualState {
                wall: start,
                advanced: Duration::ZERO,
            }),
        })
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut state = self.lock();
        let step = jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX);
        state.wall = state.wall.saturating_add(step).unwrap_or(state.wall);
        state.advanced = state.advanced.saturating_add(by);
    }

    /// Sets wall time (monotonic time never goes back).
    pub fn set(&self, wall: Timestamp) {
        self.lock().wall = wall;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualState> {
        // A panic while holding this lock leaves a plain value behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.lock().wall
    }

    fn monotonic(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.lock().advanced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_manual_clock_moves_only_when_told() {
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let clock = ManualClock::new(start);
        let before = clock.monotonic();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now().as_second(), 1_800_000_090);
        assert_eq!(clock.monotonic() - before, Duration::from_secs(90));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(clock.monotonic() - before, Duration::from_secs(100));
        assert_eq!(
            clock.now().as_second(),
            1_800_000_090,
            "wall time stood still"
        );
    }
}
