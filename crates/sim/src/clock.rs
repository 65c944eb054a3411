//! The simulator's one reading of the real clock. Everything else asks [`wall_now`], mostly
//! through `State::now`, which adds the offset tests move with `Simulator::advance_time`.

use jiff::Timestamp;

/// The wall clock, now.
// The workspace bans reading the clock directly so that the keeper's time is injected. The
// simulator stands for servers elsewhere, whose clocks are real: its database stamps, token
// expiry and providers' inactivity windows follow real time (shifted by `advance_time`), so it
// reads the real clock, here and nowhere else.
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_now() -> Timestamp {
    Timestamp::now()
}
