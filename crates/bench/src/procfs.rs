//! This process's and its children's cost, read from `/proc` (Linux): CPU times and memory.

use std::path::Path;
use std::time::Duration;

use crate::{BenchError, io_error};

/// Clock ticks per second of `/proc/*/stat` CPU times: USER_HZ, fixed at 100 by the Linux ABI
/// on every architecture this program builds for.
const USER_HZ: u64 = 100;

/// Fields of `/proc/<pid>/stat` after the command name, as numbers (0 where not numeric).
fn stat_fields(path: &str) -> Result<Vec<u64>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(io_error(format!("reading {path}")))?;
    let after = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| BenchError::Unexpected(format!("{path}: no command name")))?;
    Ok(after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect())
}

fn ticks(t: u64) -> Duration {
    Duration::from_millis(t.saturating_mul(1_000 / USER_HZ))
}

/// CPU time (user + system) of this process's children that have been waited for.
pub(crate) fn children_cpu() -> Result<Duration, BenchError> {
    // Fields 16 and 17 (cutime, cstime) of stat(5); the list starts at field 3.
    let f = stat_fields("/proc/self/stat")?;
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    Ok(ticks(get(13) + get(14)))
}

/// CPU time of this process so far: user + system, and system alone.
pub(crate) fn own_cpu() -> Result<(Duration, Duration), BenchError> {
    // Fields 14 and 15 (utime, stime) of stat(5).
    let f = stat_fields("/proc/self/stat")?;
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    Ok((ticks(get(11) + get(12)), ticks(get(12))))
}

/// A `kB` line of a `/proc/*/status` file.
pub(crate) fn status_kib(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
