//! The benchmark's one reading of the real clock. Measuring real time is its purpose, so it
//! is the one exception to the workspace's rule that time is injected, and it is made here.

use std::time::{Duration, Instant};

use jiff::Timestamp;

/// Real time elapsed since it was started.
pub(crate) struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts measuring now.
    // A benchmark measures wall time; there is no injected clock to ask.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn start() -> Stopwatch {
        Stopwatch(Instant::now())
    }

    /// Real time since [`Stopwatch::start`].
    pub(crate) fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// The wall clock now: the date a report was made.
// The report says when the numbers were taken; there is no injected clock to ask.
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_now() -> Timestamp {
    Timestamp::now()
}
