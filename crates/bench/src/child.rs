//! The keeper processes a run spawns: the bench binary's hidden `once` and `cycles` commands.
//! Each is a process of its own, so the wall time, CPU time and memory the parent measures are
//! the keeper's alone; the simulator runs in the parent.

use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::clock::Stopwatch;
use crate::keeper::Engine;
use crate::procfs::{own_cpu, status_kib};
use crate::{BenchError, io_error};

/// What `cycles` prints after each cycle (one JSON object per line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CycleSample {
    /// 1-based cycle number.
    pub(crate) cycle: usize,
    /// The cycle's wall time.
    pub(crate) wall_us: u64,
    /// This process's CPU time (user + system) after the cycle.
    pub(crate) cpu_us: u64,
    /// Of which system time.
    pub(crate) sys_us: u64,
    /// VmRSS after the cycle.
    pub(crate) rss_kib: u64,
    /// VmHWM after the cycle.
    pub(crate) hwm_kib: u64,
    /// Credentials the cycle acted on (refreshed, failed, blocked, …).
    pub(crate) acted: usize,
    /// Credentials refreshed.
    pub(crate) refreshed: usize,
    /// Credentials that failed or are blocked.
    pub(crate) failures: usize,
}

/// The hidden `once` command: one apply cycle, as `sn-oauth-keeper once --config …` runs it;
/// 0 when every due credential was refreshed, 1 otherwise (the keeper's exit codes).
pub(crate) async fn once(config: &Path) -> Result<u8, BenchError> {
    let engine = Engine::open(config)?;
    let count = engine.cycle().await;
    // `once` releases the lease when it exits, whatever the cycle did.
    engine.release_lease().await;
    Ok(u8::from(count?.failures > 0))
}

/// The hidden `cycles` command: `n` apply cycles of the real engine back to back in this
/// process, a [`CycleSample`] line on stdout after each.
pub(crate) async fn cycles(config: &Path, n: usize) -> Result<u8, BenchError> {
    let engine = Engine::open(config)?;
    let stdout = std::io::stdout();
    for cycle in 1..=n {
        let clock = Stopwatch::start();
        let count = engine.cycle().await?;
        let wall = clock.elapsed();
        let status = Path::new("/proc/self/status");
        let (cpu, sys) = own_cpu()?;
        let sample = CycleSample {
            cycle,
            wall_us: u64::try_from(wall.as_micros()).unwrap_or(u64::MAX),
            cpu_us: u64::try_from(cpu.as_micros()).unwrap_or(u64::MAX),
            sys_us: u64::try_from(sys.as_micros()).unwrap_or(u64::MAX),
            rss_kib: status_kib(status, "VmRSS:").unwrap_or(0),
            hwm_kib: status_kib(status, "VmHWM:").unwrap_or(0),
            acted: count.acted,
            refreshed: count.refreshed,
            failures: count.failures,
        };
        let line = serde_json::to_string(&sample)
            .map_err(|e| BenchError::Unexpected(format!("encoding a sample: {e}")))?;
        let mut lock = stdout.lock();
        writeln!(lock, "{line}").map_err(io_error("writing a sample"))?;
        lock.flush().map_err(io_error("writing a sample"))?;
    }
    Ok(0)
}
