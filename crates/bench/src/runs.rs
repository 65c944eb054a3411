//! The runs: a simulator seeded and slowed down per estate, the keeper spawned against it (the
//! hidden `once` and `cycles` commands of this binary), and what each run cost.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, Fault, FaultTarget, ProviderKind, RecordedRequest, RegistrySpec,
    Simulator,
};

use crate::child::CycleSample;
use crate::clock::Stopwatch;
use crate::floor::{Calls, WallFloor, kind_of, overhead_ms_per_refresh, pages, ratio};

/// `[lease] ttl` of the bench's keepers: the longest the keeper accepts.
const LEASE_TTL: Duration = Duration::from_secs(600);
use crate::keeper::new_journal_key_hex;
use crate::procfs::{children_cpu, status_kib};
use crate::report::target_run;
use crate::{BenchError, Plan, Size, io_error};

/// The provider id (token URL slug) of the bench's registry.
const PROVIDER: &str = "entra";

/// How often a running keeper's `VmHWM` is sampled. It is a high-water mark, so only growth in
/// the last interval before exit could be missed.
pub(crate) const RSS_POLL: Duration = Duration::from_millis(2);

/// One measured refresh run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunResult {
    pub(crate) rows: usize,
    pub(crate) due: usize,
    pub(crate) concurrency: usize,
    pub(crate) wall_s: f64,
    /// The wall-time floor: the larger of the two pipelines below.
    pub(crate) floor_s: f64,
    /// The floor's pipeline when the token requests bound the cycle.
    pub(crate) token_bound_s: f64,
    /// The floor's pipeline when the writes bound the cycle.
    pub(crate) write_bound_s: f64,
    /// `tokens` or `writes`: which pipeline the floor is.
    pub(crate) bound: String,
    pub(crate) wall_ratio: f64,
    /// (wall − floor) / D, in ms: what each refresh costs above the floor.
    pub(crate) overhead_ms_per_refresh: f64,
    pub(crate) calls: Calls,
    pub(crate) call_floor: Calls,
    pub(crate) call_ratio: f64,
    /// Whether every kind of call matched its floor exactly.
    pub(crate) calls_at_floor: bool,
    pub(crate) peak_rss_kib: u64,
    pub(crate) cpu_s: f64,
    /// Calls answered with other than 2xx (should be 0).
    pub(crate) failed_calls: usize,
}

/// A run left out because its floor exceeds `--max-floor`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Skipped {
    pub(crate) rows: usize,
    pub(crate) due: usize,
    pub(crate) concurrency: usize,
    pub(crate) floor_s: f64,
}

/// Idle cycles of one estate, in one keeper process, right after its refresh run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IdleResult {
    pub(crate) rows: usize,
    pub(crate) cycles: usize,
    pub(crate) calls: Calls,
    pub(crate) call_floor: Calls,
    pub(crate) call_ratio: f64,
    pub(crate) calls_at_floor: bool,
    /// CPU per cycle (user + system), the first (warm-up) cycle left out.
    pub(crate) cpu_ms_per_cycle: f64,
    /// Of which system time.
    pub(crate) sys_ms_per_cycle: f64,
    pub(crate) wall_ms_per_cycle: f64,
    pub(crate) wall_floor_ms: f64,
}

/// The memory check: many idle cycles in one process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MemoryResult {
    pub(crate) rows: usize,
    pub(crate) cycles: usize,
    /// (cycle, VmRSS KiB after it).
    pub(crate) rss_kib: Vec<(usize, u64)>,
    /// VmHWM at the end.
    pub(crate) peak_rss_kib: u64,
    /// VmRSS after the last cycle minus after the 10th.
    pub(crate) growth_kib: i64,
    /// VmRSS after the last cycle minus after the middle one: what a leak would show.
    pub(crate) second_half_growth_kib: i64,
    pub(crate) cpu_ms_per_cycle: f64,
    pub(crate) calls_per_cycle: f64,
    pub(crate) call_floor_per_cycle: f64,
}

/// KiB as MiB.
pub(crate) fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A seeded simulator with latency, a state directory, a journal key and a config file.
struct Bed {
    sim: Simulator,
    config: PathBuf,
    key_hex: String,
    exe: PathBuf,
    dir: PathBuf,
    wrap: Vec<String>,
}

impl Bed {
    async fn start(
        plan: &Plan,
        size: Size,
        seed: u64,
        dir: &Path,
        concurrency: usize,
    ) -> Result<Bed, BenchError> {
        std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
        let estate = estate(size, seed);
        let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), estate)
            .await
            .map_err(io_error("starting the simulator"))?;
        inject_latency(&sim, plan.lp, plan.li);
        let state = dir.join("state");
        let config = dir.join("keeper.toml");
        // Everything but the concurrency and the lease's life at the keeper's defaults:
        // `instance.page_size` (the floor counts pages at the default) and
        // `refresh.per_host_concurrency`, which follows `concurrency` — every token request of
        // the bench goes to one host. The longest lease renews every 200 s, so the idle runs'
        // renewals are whole and few (`Calls::lease_of_idle_cycles`).
        let text = format!(
            "[instance]\nurl = \"{}\"\nusername = \"{}\"\npassword_env = \"SN_PASSWORD\"\ncompanion_path = \"{}\"\n\n[refresh]\nconcurrency = {concurrency}\n\n[lease]\nttl = \"{}s\"\n\n[state]\ndir = \"{}\"\nkey_env = \"SN_OAUTH_KEEPER_KEY\"\n",
            sim.base_url(),
            sim.username(),
            sim.companion_path(),
            LEASE_TTL.as_secs(),
            state.display()
        );
        std::fs::write(&config, text).map_err(io_error("writing the keeper's config"))?;
        let key_hex = new_journal_key_hex()?;
        Ok(Bed {
            sim,
            config,
            key_hex,
            // The keeper runs as this binary's hidden `once` and `cycles` commands.
            exe: std::env::current_exe().map_err(io_error("locating this executable"))?,
            dir: dir.to_path_buf(),
            wrap: plan.wrap.clone(),
        })
    }

    /// The keeper as a child: config by path, secrets in its environment only.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match self.wrap.split_first() {
            Some((program, wrap_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrap_args).arg(&self.exe);
                cmd
            }
            None => Command::new(&self.exe),
        };
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env("SN_PASSWORD", self.sim.password())
            .env("SN_OAUTH_KEEPER_KEY", &self.key_hex)
            .env_remove("SN_OAUTH_KEEPER_CONFIG")
            .env_remove("SN_OAUTH_KEEPER_LOG_LEVEL")
            .stdin(Stdio::null());
        cmd
    }
}

/// R rows: R/2 credentials of one Entra-like registry, each a refresh row and an access row;
/// the first D have an expired access token, the others a fresh one (55 minutes left, refresh
/// token used 5 minutes ago). The integration user's time zone is UTC, so no write needs a
/// correcting second PATCH.
pub(crate) fn estate(size: Size, seed: u64) -> Estate {
    let mut estate = Estate::empty(seed).with_user_time_zone("UTC");
    let registry = estate.add_registry(
        RegistrySpec::new("Microsoft Entra ID (bench)", ProviderKind::EntraLike)
            .provider_id(PROVIDER),
    );
    for i in 0..size.rows / 2 {
        let spec = CredentialSpec::new(&registry, format!("Mailbox bench-{i}@contoso.com"));
        let spec = if i < size.due {
            spec.access_expires_in(jiff::SignedDuration::from_hours(-1))
                .refresh_last_updated_ago(jiff::SignedDuration::from_hours(2))
        } else {
            spec
        };
        estate.add_credential(spec);
    }
    estate
}

fn inject_latency(sim: &Simulator, lp: Duration, li: Duration) {
    if !li.is_zero() {
        sim.inject(Fault::delay(FaultTarget::TableApi, li));
        sim.inject(Fault::delay(FaultTarget::Companion, li));
    }
    if !lp.is_zero() {
        sim.inject(Fault::delay(FaultTarget::Provider(PROVIDER.to_owned()), lp));
    }
}

/// What a finished child cost.
struct ChildCost {
    status: ExitStatus,
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// Runs a child to its end, sampling its `VmHWM`; its CPU time is this process's reaped-children
/// CPU before and after (the children run one at a time).
async fn run_child(mut cmd: Command, dir: &Path, label: &str) -> Result<ChildCost, BenchError> {
    let stdout = dir.join(format!("{label}.stdout"));
    let stderr = dir.join(format!("{label}.stderr"));
    let out = std::fs::File::create(&stdout).map_err(io_error("creating the child's stdout"))?;
    let err = std::fs::File::create(&stderr).map_err(io_error("creating the child's stderr"))?;
    cmd.stdout(out).stderr(err);
    let label = label.to_owned();
    tokio::task::spawn_blocking(move || {
        let cpu_before = children_cpu()?;
        let started = Stopwatch::start();
        let mut child = cmd
            .spawn()
            .map_err(io_error(format!("starting the keeper ({label})")))?;
        let status_path = PathBuf::from(format!("/proc/{}/status", child.id()));
        let mut peak = 0u64;
        let status = loop {
            if let Some(kib) = status_kib(&status_path, "VmHWM:") {
                peak = peak.max(kib);
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(RSS_POLL),
                Err(e) => return Err(io_error(format!("waiting for the keeper ({label})"))(e)),
            }
        };
        let wall = started.elapsed();
        let cpu = children_cpu()?.saturating_sub(cpu_before);
        Ok(ChildCost {
            status,
            wall,
            cpu,
            peak_rss_kib: peak,
            stdout,
            stderr,
        })
    })
    .await
    .map_err(|e| BenchError::Unexpected(format!("the child's watcher failed: {e}")))?
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

async fn refresh_run(
    bed: &Bed,
    plan: &Plan,
    size: Size,
    c: usize,
    floor: WallFloor,
) -> Result<RunResult, BenchError> {
    bed.sim.clear_requests();
    let cost = run_child(bed.command(&["once"]), &bed.dir, "once").await?;
    if !cost.status.success() {
        return Err(BenchError::Keeper {
            what: format!(
                "`once` at R={} D={} C={c} did not refresh every due credential",
                size.rows, size.due
            ),
            status: cost.status.to_string(),
            log_tail: log_tail(&cost.stderr),
        });
    }
    let log = bed.sim.requests();
    if plan.keep_scratch {
        write_timeline(&bed.dir, &log)?;
    }
    let calls = Calls::count(&log);
    let call_floor = Calls::floor(size.rows, size.due, plan.page_size);
    let failed_calls = log
        .iter()
        .filter(|r| !(200..300).contains(&r.status))
        .count();
    let wall_s = cost.wall.as_secs_f64();
    let floor_s = floor.floor().as_secs_f64();
    Ok(RunResult {
        rows: size.rows,
        due: size.due,
        concurrency: c,
        wall_s,
        floor_s,
        token_bound_s: floor.token_bound.as_secs_f64(),
        write_bound_s: floor.write_bound.as_secs_f64(),
        bound: floor.bound().to_owned(),
        wall_ratio: ratio(wall_s, floor_s),
        overhead_ms_per_refresh: overhead_ms_per_refresh(wall_s, floor_s, size.due),
        call_ratio: ratio(calls.total() as f64, call_floor.total() as f64),
        calls_at_floor: calls == call_floor,
        calls,
        call_floor,
        peak_rss_kib: cost.peak_rss_kib,
        cpu_s: cost.cpu.as_secs_f64(),
        failed_calls,
    })
}

/// Profiling (`--keep-scratch`): the run's calls in the order they arrived, beside the keeper's
/// log, as `requests.jsonl` — one `{"ms", "kind", "status"}` a line, `ms` since the first call —
/// to see where a run waits (a gap in the writes, a batch boundary). No path, no body.
fn write_timeline(dir: &Path, log: &[RecordedRequest]) -> Result<(), BenchError> {
    let Some(first) = log.first().map(|r| r.at) else {
        return Ok(());
    };
    let mut lines = String::new();
    for r in log {
        let ms = r.at.duration_since(first).as_secs_f64() * 1_000.0;
        let line = serde_json::json!({
            "ms": (ms * 10.0).round() / 10.0,
            "kind": kind_of(r),
            "status": r.status,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    std::fs::write(dir.join("requests.jsonl"), lines).map_err(io_error("writing requests.jsonl"))
}

/// Runs the hidden `cycles` command and reads its samples.
async fn cycles_child(
    bed: &Bed,
    n: usize,
    label: &str,
) -> Result<(Vec<CycleSample>, ChildCost), BenchError> {
    let cycles = n.to_string();
    let cost = run_child(
        bed.command(&["cycles", "--cycles", &cycles]),
        &bed.dir,
        label,
    )
    .await?;
    if !cost.status.success() {
        return Err(BenchError::Keeper {
            what: format!("`cycles` ({label}) failed"),
            status: cost.status.to_string(),
            log_tail: log_tail(&cost.stderr),
        });
    }
    let file = std::fs::File::open(&cost.stdout).map_err(io_error("reading the samples"))?;
    let mut samples = Vec::with_capacity(n);
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io_error("reading the samples"))?;
        let sample: CycleSample = serde_json::from_str(&line).map_err(|e| {
            BenchError::Unexpected(format!("`cycles` printed an unreadable sample: {e}"))
        })?;
        samples.push(sample);
    }
    if samples.len() != n {
        return Err(BenchError::Unexpected(format!(
            "`cycles` ({label}) reported {} of {n} cycles",
            samples.len()
        )));
    }
    if let Some(busy) = samples.iter().find(|s| s.acted > 0 || s.failures > 0) {
        return Err(BenchError::Unexpected(format!(
            "idle cycle {} of {label} was not idle: it acted on {} credential(s)",
            busy.cycle, busy.acted
        )));
    }
    Ok((samples, cost))
}

/// Per cycle over cycles `from+1 ..= last` (cycle `from` and earlier left out as warm-up).
#[derive(Debug, Clone, Copy, Default)]
struct PerCycle {
    cpu_ms: f64,
    sys_ms: f64,
    wall_ms: f64,
}

fn per_cycle(samples: &[CycleSample], from: usize) -> PerCycle {
    let (Some(first), Some(last)) = (samples.get(from - 1), samples.last()) else {
        return PerCycle::default();
    };
    let n = (last.cycle - first.cycle).max(1) as f64;
    PerCycle {
        cpu_ms: last.cpu_us.saturating_sub(first.cpu_us) as f64 / 1_000.0 / n,
        sys_ms: last.sys_us.saturating_sub(first.sys_us) as f64 / 1_000.0 / n,
        wall_ms: samples[from..]
            .iter()
            .map(|s| s.wall_us as f64 / 1_000.0)
            .sum::<f64>()
            / n,
    }
}

/// The wall time of a child's cycles, together.
fn elapsed(samples: &[CycleSample]) -> Duration {
    Duration::from_micros(samples.iter().map(|s| s.wall_us).sum())
}

async fn idle_run(bed: &Bed, plan: &Plan, size: Size) -> Result<IdleResult, BenchError> {
    bed.sim.clear_requests();
    let n = plan.idle_samples;
    let (samples, _) = cycles_child(bed, n, "idle").await?;
    let calls = Calls::count(&bed.sim.requests());
    let call_floor = Calls {
        discovery: pages(size.rows, plan.page_size) * n,
        lease: Calls::lease_of_idle_cycles(elapsed(&samples), LEASE_TTL),
        ..Calls::default()
    };
    let per = per_cycle(&samples, 1);
    Ok(IdleResult {
        rows: size.rows,
        cycles: n,
        call_ratio: ratio(calls.total() as f64, call_floor.total() as f64),
        calls_at_floor: calls == call_floor,
        calls,
        call_floor,
        cpu_ms_per_cycle: per.cpu_ms,
        sys_ms_per_cycle: per.sys_ms,
        wall_ms_per_cycle: per.wall_ms,
        wall_floor_ms: WallFloor::of(Size { due: 0, ..size }, plan.waits(1))
            .floor()
            .as_secs_f64()
            * 1_000.0,
    })
}

/// The memory check: `idle_cycles` idle cycles over `idle_rows` rows in one keeper process,
/// without injected latency (memory does not depend on waiting, and 1,000 cycles of paged
/// discovery at 30 ms a page would take minutes).
async fn memory_run(plan: &Plan, scratch: &Path) -> Result<MemoryResult, BenchError> {
    let size = Size {
        rows: plan.idle_rows,
        due: 0,
    };
    let dir = scratch.join("memory");
    let quiet = Plan {
        lp: Duration::ZERO,
        li: Duration::ZERO,
        ..plan.clone()
    };
    let bed = Bed::start(&quiet, size, 99, &dir, 8).await?;
    eprintln!(
        "bench: memory: {} idle cycles over {} rows in one keeper process…",
        plan.idle_cycles, plan.idle_rows
    );
    let (samples, cost) = cycles_child(&bed, plan.idle_cycles, "memory").await?;
    let calls = Calls::count(&bed.sim.requests());
    bed.sim.shutdown();
    let at = |cycle: usize| {
        samples
            .get(cycle.saturating_sub(1))
            .map_or(0, |s: &CycleSample| s.rss_kib)
    };
    let n = plan.idle_cycles;
    let mut checkpoints: Vec<usize> = vec![1, 10, n / 10, n / 4, n / 2, 3 * n / 4, n];
    checkpoints.retain(|c| *c >= 1);
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let rss_kib: Vec<(usize, u64)> = checkpoints.iter().map(|&c| (c, at(c))).collect();
    let signed = |kib: u64| i64::try_from(kib).unwrap_or(i64::MAX);
    let growth_kib = signed(at(n)) - signed(at(10));
    let second_half_growth_kib = signed(at(n)) - signed(at(n / 2));
    let cpu_ms = per_cycle(&samples, 1).cpu_ms;
    let result = MemoryResult {
        rows: size.rows,
        cycles: n,
        rss_kib,
        peak_rss_kib: samples.last().map_or(cost.peak_rss_kib, |s| s.hwm_kib),
        growth_kib,
        second_half_growth_kib,
        cpu_ms_per_cycle: cpu_ms,
        calls_per_cycle: calls.total() as f64 / n as f64,
        call_floor_per_cycle: (pages(size.rows, plan.page_size) * n
            + Calls::lease_of_idle_cycles(elapsed(&samples), LEASE_TTL))
            as f64
            / n as f64,
    };
    eprintln!(
        "bench:   RSS {:.1} MiB after cycle 10, {:.1} after cycle {}, {:.1} after cycle {n} ({:+} KiB over the second half)",
        kib_to_mib(at(10)),
        kib_to_mib(at(n / 2)),
        n / 2,
        kib_to_mib(at(n)),
        second_half_growth_kib
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result)
}

/// Everything a plan's runs measured.
pub(crate) struct Measured {
    /// The refresh runs.
    pub(crate) runs: Vec<RunResult>,
    /// The runs left out for their floor.
    pub(crate) skipped: Vec<Skipped>,
    /// Each estate's idle cycles.
    pub(crate) idle: Vec<IdleResult>,
    /// The memory check.
    pub(crate) memory: MemoryResult,
}

/// Every run of the plan: a refresh run per estate and concurrency (unless skipped), an idle
/// run per estate, then the memory run.
pub(crate) async fn measure(plan: &Plan, scratch: &Path) -> Result<Measured, BenchError> {
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut idle = Vec::new();
    for (i, size) in plan.sizes.iter().enumerate() {
        let mut idle_measured = false;
        for &c in &plan.concurrency {
            let floor = WallFloor::of(*size, plan.waits(c));
            if floor.floor() > plan.max_floor && !target_run(size.due, c) {
                eprintln!(
                    "bench: R={} D={} C={c}: skipped, its floor {:.0} s exceeds --max-floor",
                    size.rows,
                    size.due,
                    floor.floor().as_secs_f64()
                );
                skipped.push(Skipped {
                    rows: size.rows,
                    due: size.due,
                    concurrency: c,
                    floor_s: floor.floor().as_secs_f64(),
                });
                continue;
            }
            let dir = scratch.join(format!("r{}-d{}-c{c}", size.rows, size.due));
            let seed = 1_000 + u64::try_from(i).unwrap_or(0);
            let bed = Bed::start(plan, *size, seed, &dir, c).await?;
            eprintln!(
                "bench: R={} D={} C={c}: refreshing (floor {:.2} s, {}-bound)…",
                size.rows,
                size.due,
                floor.floor().as_secs_f64(),
                floor.bound()
            );
            let run = refresh_run(&bed, plan, *size, c, floor).await?;
            eprintln!(
                "bench:   wall {:.2} s (×{:.3}, {:+.2} ms per refresh), calls {}/{}, peak RSS {:.1} MiB, CPU {:.2} s",
                run.wall_s,
                run.wall_ratio,
                run.overhead_ms_per_refresh,
                run.calls.total(),
                run.call_floor.total(),
                kib_to_mib(run.peak_rss_kib),
                run.cpu_s
            );
            runs.push(run);
            if !idle_measured {
                idle_measured = true;
                let result = idle_run(&bed, plan, *size).await?;
                eprintln!(
                    "bench:   idle cycle: {:.1} calls, {:.1} ms CPU ({:.1} system), {:.0} ms wall",
                    result.calls.total() as f64 / result.cycles as f64,
                    result.cpu_ms_per_cycle,
                    result.sys_ms_per_cycle,
                    result.wall_ms_per_cycle
                );
                idle.push(result);
            }
            bed.sim.shutdown();
            if !plan.keep_scratch {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        if !idle_measured {
            // Every concurrency was skipped: still measure this estate's idle cycle.
            let dir = scratch.join(format!("r{}-idle", size.rows));
            let bed = Bed::start(plan, Size { due: 0, ..*size }, 7, &dir, 1).await?;
            idle.push(idle_run(&bed, plan, *size).await?);
            bed.sim.shutdown();
        }
    }
    let memory = memory_run(plan, scratch).await?;
    Ok(Measured {
        runs,
        skipped,
        idle,
        memory,
    })
}
