//! `sn-oauth-keeper bench`: the keeper measured against its cost floor.
//!
//! A keeper runs beside a production instance whose API calls are rate-limited and shared, so
//! its cost is mostly calls and waiting, and both have a floor that can be computed. For each
//! estate size (R `oauth_credential` rows, D of them due) and concurrency C, the harness starts
//! the simulator in this process with latency injected per target (the instance: Table API and
//! companion; the provider's token endpoint), seeds the estate, and spawns the keeper itself
//! (`once --config …`, secrets in the child's environment), so the wall time, CPU time and
//! peak RSS it reports are the keeper's alone. Calls are counted by kind from the simulator's
//! request log and compared with the floor; an idle cycle and a long run of idle cycles (memory
//! must not grow with the number of cycles) go through the hidden `bench-cycles` command, which
//! runs the real engine cycle after cycle in one process.
//!
//! The harness writes `BENCHMARKS.md`, `tests/bench/wall-time.svg` (drawn here, no plotting
//! dependency) and `tests/bench/results.json`. It reports targets, it never asserts on time:
//! the only hard failures are a keeper that does not finish its work.

use serde::{Deserialize, Serialize};
use sn_oauth_keeper::config::{JournalKey, Settings};
use sn_oauth_keeper::domain::time::parse_duration;
use sn_oauth_keeper::engine::{Keeper, Mode};
use sn_oauth_keeper::servicenow::COMPANION_BATCH;
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, Fault, FaultTarget, ProviderKind, RecordedRequest, RegistrySpec,
    Simulator, Target,
};
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Rows per Table API page: the keeper's default `instance.page_size`, set explicitly.
const PAGE_SIZE: usize = 1_000;
/// Writes per refreshed credential. The bench's provider rotates the refresh token on every
/// use (Entra-like), so each refresh PATCHes the refresh row and the access row.
const WRITES_PER_REFRESH: usize = 2;
/// Single-row reads per refreshed credential: the engine's documented race check reads the
/// refresh row's version (`sys_mod_count`, `sys_updated_by`) before overwriting it with a rotated
/// token (`Keeper::safe_to_overwrite_refresh_row`); every bench refresh rotates.
const RACE_CHECKS_PER_REFRESH: usize = 1;
/// The provider id (token URL slug) of the bench's registry.
const PROVIDER: &str = "entra";
/// Clock ticks per second of `/proc/*/stat` CPU times: USER_HZ, fixed at 100 by the Linux ABI
/// on every architecture this program builds for.
const USER_HZ: u64 = 100;
/// How often a running keeper's `VmHWM` is sampled. It is a high-water mark, so only growth in
/// the last interval before exit could be missed.
const RSS_POLL: Duration = Duration::from_millis(2);
/// RSS growth over the second half of the idle cycles above which memory counts as growing.
/// Caches (SQLite's page cache, allocator arenas, connection buffers) fill up over the first
/// cycles and then stay; a leak keeps growing with every cycle, so the second half shows it:
/// 256 KiB over 500 cycles is half a KiB per cycle.
const GROWTH_TOLERANCE_KIB: i64 = 256;
/// The wall-time target's runs: D values …
const WALL_TARGET_DUE: [usize; 2] = [1_000, 10_000];
/// … at these concurrencies.
const WALL_TARGET_CONCURRENCY: [usize; 2] = [8, 32];
/// Largest wall-time ratio the target allows.
const WALL_TARGET_RATIO: f64 = 1.2;
/// Largest peak RSS the target allows at R = 50,000, KiB.
const RSS_TARGET_KIB: u64 = 64 * 1024;
/// Most CPU an idle cycle at R = 10,000 may take, ms.
const IDLE_CPU_TARGET_MS: f64 = 50.0;

/// Arguments of `sn-oauth-keeper bench`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// A small, fast run (seconds) that CI uses so the harness cannot rot. Writes files only
    /// when --out is given.
    #[arg(long)]
    smoke: bool,
    /// Estates as ROWS:DUE pairs: oauth_credential rows (a refresh row and an access row per
    /// credential, so even) and due credentials [default: 100:10,1000:100,10000:1000,50000:10000].
    #[arg(long, value_delimiter = ',', value_parser = parse_size, value_name = "ROWS:DUE,…")]
    sizes: Option<Vec<Size>>,
    /// Concurrency values (refresh.concurrency and refresh.per_host_concurrency) [default: 1,8,32].
    #[arg(long, value_delimiter = ',', value_name = "C,…")]
    concurrency: Option<Vec<usize>>,
    /// Latency added to every token request [default: 50ms].
    #[arg(long, value_parser = parse_latency, value_name = "DURATION")]
    provider_latency: Option<Duration>,
    /// Latency added to every call to the instance: Table API and companion [default: 30ms].
    #[arg(long, value_parser = parse_latency, value_name = "DURATION")]
    instance_latency: Option<Duration>,
    /// Idle cycles run back to back in one keeper process for the memory check [default: 1000].
    #[arg(long, value_name = "N")]
    idle_cycles: Option<usize>,
    /// oauth_credential rows of the memory check's estate [default: 1000].
    #[arg(long, value_name = "ROWS")]
    idle_rows: Option<usize>,
    /// Skip runs whose wall-time floor exceeds this (serial runs at large D), except the runs a
    /// target names (D = 1,000 and 10,000 with C = 8 and 32) [default: 60s].
    #[arg(long, value_parser = parse_latency, value_name = "DURATION")]
    max_floor: Option<Duration>,
    /// Directory to write BENCHMARKS.md and tests/bench/ into [default: the current directory;
    /// with --smoke, nothing is written].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Profiling: run each keeper under this command, e.g. "valgrind --tool=callgrind" (the
    /// numbers then describe the wrapper, not the keeper).
    #[arg(long, hide = true, value_name = "COMMAND")]
    wrap: Option<String>,
    /// Profiling: keep the scratch directory (configs, keeper logs) and say where it is.
    #[arg(long, hide = true)]
    keep_scratch: bool,
}

/// One estate: R rows, D of them due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Size {
    /// `oauth_credential` rows.
    rows: usize,
    /// Due credentials.
    due: usize,
}

fn parse_size(text: &str) -> Result<Size, String> {
    let (rows, due) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected ROWS:DUE, e.g. 1000:100"))?;
    let number = |s: &str| {
        s.trim()
            .replace('_', "")
            .parse::<usize>()
            .map_err(|_| format!("{text:?}: {s:?} is not a count"))
    };
    let size = Size {
        rows: number(rows)?,
        due: number(due)?,
    };
    if size.rows == 0 || !size.rows.is_multiple_of(2) {
        return Err(format!(
            "{text:?}: rows must be even and positive (each credential is a refresh row and an access row)"
        ));
    }
    if size.due > size.rows / 2 {
        return Err(format!(
            "{text:?}: at most {} of {} rows' credentials can be due",
            size.rows / 2,
            size.rows
        ));
    }
    Ok(size)
}

fn parse_latency(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text).map_err(|e| e.to_string())
}

/// What went wrong in the harness itself (not a missed target).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// A file or process operation failed.
    #[error("{what}: {reason}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        reason: String,
    },
    /// A keeper run did not do its work; the tail of its log says why.
    #[error("{what} (exit status {status}); the keeper's log ends with:\n{log_tail}")]
    Keeper {
        /// Which run.
        what: String,
        /// Its exit status.
        status: String,
        /// The last lines of its stderr (the keeper never logs a secret).
        log_tail: String,
    },
    /// The keeper's cycles output did not parse, or a cycle did something unexpected.
    #[error("{0}")]
    Unexpected(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |e| BenchError::Io {
        what,
        reason: e.to_string(),
    }
}

/// The plan after defaults.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    smoke: bool,
    sizes: Vec<Size>,
    concurrency: Vec<usize>,
    provider_latency_ms: u64,
    instance_latency_ms: u64,
    idle_cycles: usize,
    idle_rows: usize,
    idle_samples: usize,
    max_floor_s: f64,
    page_size: usize,
    writes_per_refresh: usize,
    #[serde(skip)]
    out: Option<PathBuf>,
    #[serde(skip)]
    lp: Duration,
    #[serde(skip)]
    li: Duration,
    #[serde(skip)]
    max_floor: Duration,
    #[serde(skip)]
    wrap: Vec<String>,
    #[serde(skip)]
    keep_scratch: bool,
}

impl Plan {
    fn from_args(args: BenchArgs) -> Result<Plan, BenchError> {
        let smoke = args.smoke;
        let sizes = args.sizes.unwrap_or_else(|| {
            let pairs: &[(usize, usize)] = if smoke {
                &[(40, 10), (200, 60)]
            } else {
                &[(100, 10), (1_000, 100), (10_000, 1_000), (50_000, 10_000)]
            };
            pairs
                .iter()
                .map(|&(rows, due)| Size { rows, due })
                .collect()
        });
        let concurrency = args
            .concurrency
            .unwrap_or_else(|| if smoke { vec![1, 4] } else { vec![1, 8, 32] });
        if sizes.is_empty() || concurrency.is_empty() {
            return Err(BenchError::Usage(
                "--sizes and --concurrency need at least one value".into(),
            ));
        }
        if let Some(c) = concurrency.iter().find(|c| !(1..=256).contains(*c)) {
            return Err(BenchError::Usage(format!(
                "--concurrency {c}: the keeper accepts 1 to 256"
            )));
        }
        let lp = args.provider_latency.unwrap_or(if smoke {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(50)
        });
        let li = args.instance_latency.unwrap_or(if smoke {
            Duration::from_millis(3)
        } else {
            Duration::from_millis(30)
        });
        let idle_cycles = args.idle_cycles.unwrap_or(if smoke { 30 } else { 1_000 });
        let idle_rows = args.idle_rows.unwrap_or(if smoke { 200 } else { 1_000 });
        if idle_cycles < 11 {
            return Err(BenchError::Usage(
                "--idle-cycles must be at least 11 (growth is measured from the 10th cycle)".into(),
            ));
        }
        if idle_rows == 0 || !idle_rows.is_multiple_of(2) {
            return Err(BenchError::Usage(
                "--idle-rows must be even and positive".into(),
            ));
        }
        let max_floor = args.max_floor.unwrap_or(Duration::from_secs(60));
        Ok(Plan {
            smoke,
            sizes,
            concurrency,
            provider_latency_ms: millis(lp),
            instance_latency_ms: millis(li),
            idle_cycles,
            idle_rows,
            idle_samples: if smoke { 3 } else { 11 },
            max_floor_s: max_floor.as_secs_f64(),
            page_size: PAGE_SIZE,
            writes_per_refresh: WRITES_PER_REFRESH,
            out: match args.out {
                Some(dir) => Some(dir),
                None if smoke => None,
                None => Some(PathBuf::from(".")),
            },
            lp,
            li,
            max_floor,
            keep_scratch: args.keep_scratch,
            wrap: args
                .wrap
                .map(|w| w.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Calls by kind, as counted in the simulator's request log (or as the floor allows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Calls {
    /// Paged `GET oauth_credential` (discovery).
    discovery: usize,
    /// `GET sys_user` (the integration user's time zone, once per process before a write).
    user: usize,
    /// Companion calls (secrets, up to 100 credentials each).
    companion: usize,
    /// Token requests.
    token: usize,
    /// Table API writes (PATCH, PUT, POST, DELETE).
    write: usize,
    /// Single-row `GET`s of the Table API: the race check's re-read.
    reread: usize,
    /// Anything else.
    other: usize,
}

impl Calls {
    fn total(&self) -> usize {
        self.discovery
            + self.user
            + self.companion
            + self.token
            + self.write
            + self.reread
            + self.other
    }

    fn count(log: &[RecordedRequest]) -> Calls {
        let mut calls = Calls::default();
        for r in log {
            let read =
                r.method.eq_ignore_ascii_case("GET") || r.method.eq_ignore_ascii_case("HEAD");
            match &r.target {
                Target::TableApi if read => {
                    let rest = r
                        .path
                        .split_once("/table/")
                        .map_or("", |(_, rest)| rest)
                        .trim_end_matches('/');
                    match rest.split_once('/') {
                        Some(_) => calls.reread += 1,
                        None if rest == "oauth_credential" => calls.discovery += 1,
                        None if rest == "sys_user" => calls.user += 1,
                        None => calls.other += 1,
                    }
                }
                Target::TableApi => calls.write += 1,
                Target::Companion => calls.companion += 1,
                Target::Provider(_) if r.method.eq_ignore_ascii_case("POST") => calls.token += 1,
                _ => calls.other += 1,
            }
        }
        calls
    }

    /// The floor of one cycle that refreshes `due` of `rows` rows, in a fresh keeper process.
    fn floor(rows: usize, due: usize) -> Calls {
        Calls {
            discovery: pages(rows),
            user: usize::from(due > 0),
            companion: due.div_ceil(COMPANION_BATCH),
            token: due,
            write: WRITES_PER_REFRESH * due,
            reread: RACE_CHECKS_PER_REFRESH * due,
            other: 0,
        }
    }

    fn kinds(&self) -> [(&'static str, usize); 7] {
        [
            ("discovery", self.discovery),
            ("user", self.user),
            ("companion", self.companion),
            ("token", self.token),
            ("write", self.write),
            ("reread", self.reread),
            ("other", self.other),
        ]
    }
}

fn pages(rows: usize) -> usize {
    rows.div_ceil(PAGE_SIZE).max(1)
}

/// The wall-time floor of one cycle: discovery pages one after the other, one companion call
/// before the first token request, then ceil(D/C) rounds of a token request, the race check's
/// read and k writes, one after the other.
fn wall_floor(size: Size, c: usize, lp: Duration, li: Duration) -> Duration {
    let discovery = li * u32::try_from(pages(size.rows)).unwrap_or(u32::MAX);
    if size.due == 0 {
        return discovery;
    }
    let rounds = u32::try_from(size.due.div_ceil(c)).unwrap_or(u32::MAX);
    let instance_calls = WRITES_PER_REFRESH + RACE_CHECKS_PER_REFRESH;
    let per_round = lp + li * u32::try_from(instance_calls).unwrap_or(u32::MAX);
    discovery + li + per_round * rounds
}

fn ratio(actual: f64, floor: f64) -> f64 {
    if floor > 0.0 {
        actual / floor
    } else if actual == 0.0 {
        1.0
    } else {
        f64::INFINITY
    }
}

/// One measured refresh run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunResult {
    rows: usize,
    due: usize,
    concurrency: usize,
    wall_s: f64,
    floor_s: f64,
    wall_ratio: f64,
    calls: Calls,
    call_floor: Calls,
    call_ratio: f64,
    /// Whether every kind of call matched its floor exactly.
    calls_at_floor: bool,
    peak_rss_kib: u64,
    cpu_s: f64,
    /// Calls answered with other than 2xx (should be 0).
    failed_calls: usize,
}

/// A run left out because its floor exceeds `--max-floor`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Skipped {
    rows: usize,
    due: usize,
    concurrency: usize,
    floor_s: f64,
}

/// Idle cycles of one estate, in one keeper process, right after its refresh run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdleResult {
    rows: usize,
    cycles: usize,
    calls: Calls,
    call_floor: Calls,
    call_ratio: f64,
    calls_at_floor: bool,
    /// CPU per cycle (user + system), the first (warm-up) cycle left out.
    cpu_ms_per_cycle: f64,
    /// Of which system time.
    sys_ms_per_cycle: f64,
    wall_ms_per_cycle: f64,
    wall_floor_ms: f64,
}

/// The memory check: many idle cycles in one process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MemoryResult {
    rows: usize,
    cycles: usize,
    /// (cycle, VmRSS KiB after it).
    rss_kib: Vec<(usize, u64)>,
    /// VmHWM at the end.
    peak_rss_kib: u64,
    /// VmRSS after the last cycle minus after the 10th.
    growth_kib: i64,
    /// VmRSS after the last cycle minus after the middle one: what a leak would show.
    second_half_growth_kib: i64,
    cpu_ms_per_cycle: f64,
    calls_per_cycle: f64,
    call_floor_per_cycle: usize,
}

/// One target and whether it was met.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TargetCheck {
    target: String,
    measured: String,
    /// `None` when no run of this plan measures it.
    met: Option<bool>,
}

/// Where the numbers come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Machine {
    cpu: String,
    cores: usize,
    memory: String,
    kernel: String,
    build: String,
    version: String,
    commit: String,
    date: String,
}

/// Everything one bench run measured.
#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    plan: Plan,
    runs: Vec<RunResult>,
    skipped: Vec<Skipped>,
    idle: Vec<IdleResult>,
    memory: MemoryResult,
    targets: Vec<TargetCheck>,
    total_s: f64,
}

/// Runs the benchmark; 0 when every keeper run did its work (targets are reported, not exit
/// codes).
pub(crate) async fn run(args: BenchArgs) -> Result<u8, BenchError> {
    let keep_scratch = args.keep_scratch;
    let plan = Plan::from_args(args)?;
    if cfg!(debug_assertions) && !plan.smoke {
        eprintln!(
            "bench: this is a debug build; for real numbers use `cargo run --release --locked -- bench`"
        );
    }
    let scratch = tempfile_dir()?;
    let started = Instant::now();
    let result = measure(&plan, &scratch.0).await;
    if keep_scratch {
        eprintln!("bench: scratch kept at {}", scratch.0.display());
        std::mem::forget(scratch);
    } else {
        drop(scratch);
    }
    let (runs, skipped, idle, memory) = result?;
    let targets = check_targets(&plan, &runs, &idle, &memory);
    let report = Report {
        machine: machine(),
        plan,
        runs,
        skipped,
        idle,
        memory,
        targets,
        total_s: started.elapsed().as_secs_f64(),
    };
    let markdown = render_markdown(&report, notes(report.plan.out.as_deref()).as_deref());
    println!("{}", render_tables(&report));
    if let Some(out) = &report.plan.out {
        write_outputs(out, &report, &markdown)?;
        eprintln!(
            "bench: wrote {} and {}",
            out.join("BENCHMARKS.md").display(),
            out.join("tests/bench/wall-time.svg").display()
        );
    }
    Ok(0)
}

/// A scratch directory removed on drop (state directories, configs, keeper output).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<Scratch, BenchError> {
    let dir = std::env::temp_dir().join(format!(
        "sn-oauth-keeper-bench-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
    Ok(Scratch(dir))
}

type Measured = (Vec<RunResult>, Vec<Skipped>, Vec<IdleResult>, MemoryResult);

async fn measure(plan: &Plan, scratch: &Path) -> Result<Measured, BenchError> {
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut idle = Vec::new();
    for (i, size) in plan.sizes.iter().enumerate() {
        let mut idle_measured = false;
        for &c in &plan.concurrency {
            let floor = wall_floor(*size, c, plan.lp, plan.li);
            if floor > plan.max_floor && !target_run(size.due, c) {
                eprintln!(
                    "bench: R={} D={} C={c}: skipped, its floor {:.0} s exceeds --max-floor",
                    size.rows,
                    size.due,
                    floor.as_secs_f64()
                );
                skipped.push(Skipped {
                    rows: size.rows,
                    due: size.due,
                    concurrency: c,
                    floor_s: floor.as_secs_f64(),
                });
                continue;
            }
            let dir = scratch.join(format!("r{}-d{}-c{c}", size.rows, size.due));
            let seed = 1_000 + u64::try_from(i).unwrap_or(0);
            let bed = Bed::start(plan, *size, seed, &dir, c).await?;
            eprintln!(
                "bench: R={} D={} C={c}: refreshing (floor {:.2} s)…",
                size.rows,
                size.due,
                floor.as_secs_f64()
            );
            let run = refresh_run(&bed, *size, c, floor).await?;
            eprintln!(
                "bench:   wall {:.2} s (×{:.3}), calls {}/{}, peak RSS {:.1} MiB, CPU {:.2} s",
                run.wall_s,
                run.wall_ratio,
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
    Ok((runs, skipped, idle, memory))
}

/// Whether a wall-time target names this run (it is never skipped).
fn target_run(due: usize, concurrency: usize) -> bool {
    WALL_TARGET_DUE.contains(&due) && WALL_TARGET_CONCURRENCY.contains(&concurrency)
}

fn kib_to_mib(kib: u64) -> f64 {
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
        let text = format!(
            "[instance]\nurl = \"{}\"\nusername = \"{}\"\npassword_env = \"SN_PASSWORD\"\ncompanion_path = \"{}\"\npage_size = {PAGE_SIZE}\n\n[refresh]\nconcurrency = {concurrency}\nper_host_concurrency = {concurrency}\n\n[state]\ndir = \"{}\"\nkey_env = \"SN_OAUTH_KEEPER_KEY\"\n",
            sim.base_url(),
            sim.username(),
            sim.companion_path(),
            state.display()
        );
        std::fs::write(&config, text).map_err(io_error("writing the keeper's config"))?;
        let key = JournalKey::random().map_err(|e| BenchError::Io {
            what: "generating a journal key".into(),
            reason: e.to_string(),
        })?;
        let key_hex = key.bytes().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        Ok(Bed {
            sim,
            config,
            key_hex,
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
            .args(["--log-format", "json"])
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
fn estate(size: Size, seed: u64) -> Estate {
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
        let started = Instant::now();
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
fn children_cpu() -> Result<Duration, BenchError> {
    // Fields 16 and 17 (cutime, cstime) of stat(5); the list starts at field 3.
    let f = stat_fields("/proc/self/stat")?;
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    Ok(ticks(get(13) + get(14)))
}

/// CPU time of this process so far: user + system, and system alone.
fn own_cpu() -> Result<(Duration, Duration), BenchError> {
    // Fields 14 and 15 (utime, stime) of stat(5).
    let f = stat_fields("/proc/self/stat")?;
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    Ok((ticks(get(11) + get(12)), ticks(get(12))))
}

/// A `kB` line of a `/proc/*/status` file.
fn status_kib(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

async fn refresh_run(
    bed: &Bed,
    size: Size,
    c: usize,
    floor: Duration,
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
    let calls = Calls::count(&log);
    let call_floor = Calls::floor(size.rows, size.due);
    let failed_calls = log
        .iter()
        .filter(|r| !(200..300).contains(&r.status))
        .count();
    let wall_s = cost.wall.as_secs_f64();
    let floor_s = floor.as_secs_f64();
    Ok(RunResult {
        rows: size.rows,
        due: size.due,
        concurrency: c,
        wall_s,
        floor_s,
        wall_ratio: ratio(wall_s, floor_s),
        call_ratio: ratio(calls.total() as f64, call_floor.total() as f64),
        calls_at_floor: calls == call_floor,
        calls,
        call_floor,
        peak_rss_kib: cost.peak_rss_kib,
        cpu_s: cost.cpu.as_secs_f64(),
        failed_calls,
    })
}

/// What `bench-cycles` prints after each cycle (one JSON object per line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CycleSample {
    /// 1-based cycle number.
    cycle: usize,
    /// The cycle's wall time.
    wall_us: u64,
    /// This process's CPU time (user + system) after the cycle.
    cpu_us: u64,
    /// Of which system time.
    sys_us: u64,
    /// VmRSS after the cycle.
    rss_kib: u64,
    /// VmHWM after the cycle.
    hwm_kib: u64,
    /// Credentials the cycle acted on (refreshed, failed, blocked, …).
    acted: usize,
    /// Credentials refreshed.
    refreshed: usize,
    /// Credentials that failed or are blocked.
    failures: usize,
}

/// The hidden `bench-cycles` command: `n` apply cycles of the real engine back to back in this
/// process, a [`CycleSample`] line on stdout after each.
pub(crate) async fn cycles(settings: Settings, n: usize) -> Result<u8, BenchError> {
    let settings = Arc::new(settings);
    let journal = match crate::open_journal(&settings) {
        Ok(j) => j,
        Err(code) => return Ok(code),
    };
    let keeper = Keeper::new(Arc::clone(&settings), Some(journal))
        .map_err(|e| BenchError::Unexpected(format!("building the keeper: {e}")))?;
    let stop = CancellationToken::new();
    let stdout = std::io::stdout();
    for cycle in 1..=n {
        let clock = Instant::now();
        let report = match keeper.cycle(Mode::Apply, &stop).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cycle {cycle}: {e}");
                return Ok(1);
            }
        };
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
            acted: report
                .credentials
                .iter()
                .filter(|c| c.outcome != sn_oauth_keeper::engine::Outcome::Skipped)
                .count(),
            refreshed: report.count("refreshed"),
            failures: report.failures(),
        };
        let line = serde_json::to_string(&sample)
            .map_err(|e| BenchError::Unexpected(format!("encoding a sample: {e}")))?;
        let mut lock = stdout.lock();
        writeln!(lock, "{line}").map_err(io_error("writing a sample"))?;
        lock.flush().map_err(io_error("writing a sample"))?;
    }
    Ok(0)
}

/// Runs `bench-cycles` and reads its samples.
async fn cycles_child(
    bed: &Bed,
    n: usize,
    label: &str,
) -> Result<(Vec<CycleSample>, ChildCost), BenchError> {
    let cycles = n.to_string();
    let cost = run_child(
        bed.command(&["bench-cycles", "--cycles", &cycles]),
        &bed.dir,
        label,
    )
    .await?;
    if !cost.status.success() {
        return Err(BenchError::Keeper {
            what: format!("`bench-cycles` ({label}) failed"),
            status: cost.status.to_string(),
            log_tail: log_tail(&cost.stderr),
        });
    }
    let file = std::fs::File::open(&cost.stdout).map_err(io_error("reading the samples"))?;
    let mut samples = Vec::with_capacity(n);
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io_error("reading the samples"))?;
        let sample: CycleSample = serde_json::from_str(&line).map_err(|e| {
            BenchError::Unexpected(format!("bench-cycles printed an unreadable sample: {e}"))
        })?;
        samples.push(sample);
    }
    if samples.len() != n {
        return Err(BenchError::Unexpected(format!(
            "bench-cycles ({label}) reported {} of {n} cycles",
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

async fn idle_run(bed: &Bed, plan: &Plan, size: Size) -> Result<IdleResult, BenchError> {
    bed.sim.clear_requests();
    let n = plan.idle_samples;
    let (samples, _) = cycles_child(bed, n, "idle").await?;
    let calls = Calls::count(&bed.sim.requests());
    let one = Calls::floor(size.rows, 0);
    let call_floor = Calls {
        discovery: one.discovery * n,
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
        wall_floor_ms: wall_floor(Size { due: 0, ..size }, 1, plan.lp, plan.li).as_secs_f64()
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
        call_floor_per_cycle: pages(size.rows),
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

fn check_targets(
    plan: &Plan,
    runs: &[RunResult],
    idle: &[IdleResult],
    memory: &MemoryResult,
) -> Vec<TargetCheck> {
    let mut targets = Vec::new();
    let off: Vec<String> = runs
        .iter()
        .filter(|r| !r.calls_at_floor)
        .map(|r| format!("R={} D={} C={}", r.rows, r.due, r.concurrency))
        .chain(
            idle.iter()
                .filter(|i| !i.calls_at_floor)
                .map(|i| format!("idle R={}", i.rows)),
        )
        .collect();
    targets.push(TargetCheck {
        target: "call ratio exactly 1.0 (every kind at its floor), every run and idle cycle".into(),
        measured: if off.is_empty() {
            format!(
                "{} runs and {} idle estates at the floor",
                runs.len(),
                idle.len()
            )
        } else {
            format!("above the floor: {}", off.join(", "))
        },
        met: Some(off.is_empty()),
    });
    for d in WALL_TARGET_DUE {
        for c in WALL_TARGET_CONCURRENCY {
            let run = runs.iter().find(|r| r.due == d && r.concurrency == c);
            targets.push(TargetCheck {
                target: format!(
                    "wall-time ratio ≤ {WALL_TARGET_RATIO} at D = {} with C = {c}",
                    group(d)
                ),
                measured: run.map_or_else(
                    || "not in this run".into(),
                    |r| {
                        format!(
                            "{:.3} ({:.2} s against {:.2} s)",
                            r.wall_ratio, r.wall_s, r.floor_s
                        )
                    },
                ),
                met: run.map(|r| r.wall_ratio <= WALL_TARGET_RATIO),
            });
        }
    }
    let big: Vec<&RunResult> = runs.iter().filter(|r| r.rows == 50_000).collect();
    let peak = big.iter().map(|r| r.peak_rss_kib).max();
    targets.push(TargetCheck {
        target: "peak RSS ≤ 64 MiB at R = 50,000".into(),
        measured: peak.map_or_else(
            || "not in this run".into(),
            |p| format!("{:.1} MiB (largest of {} runs)", kib_to_mib(p), big.len()),
        ),
        met: peak.map(|p| p <= RSS_TARGET_KIB),
    });
    let idle10k = idle.iter().find(|i| i.rows == 10_000);
    targets.push(TargetCheck {
        target: "idle cycle at R = 10,000 under 50 ms of CPU".into(),
        measured: idle10k.map_or_else(
            || "not in this run".into(),
            |i| format!("{:.1} ms", i.cpu_ms_per_cycle),
        ),
        met: idle10k.map(|i| i.cpu_ms_per_cycle < IDLE_CPU_TARGET_MS),
    });
    targets.push(TargetCheck {
        target: format!(
            "memory does not grow with the number of cycles: ≤ {GROWTH_TOLERANCE_KIB} KiB over \
             the second half of {} idle cycles",
            group(plan.idle_cycles),
        ),
        measured: format!(
            "{:+} KiB over cycles {}–{} ({:+} KiB from cycle 10) at R = {}",
            memory.second_half_growth_kib,
            group(memory.cycles / 2),
            group(memory.cycles),
            memory.growth_kib,
            group(memory.rows)
        ),
        met: Some(memory.second_half_growth_kib <= GROWTH_TOLERANCE_KIB),
    });
    targets
}

/// `50000` → `50,000`.
fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn first_line_value(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    })
}

fn machine() -> Machine {
    let memory = first_line_value("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib as f64 / 1_048_576.0),
        );
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) => {
            // The harness's own outputs do not make the measured code dirty.
            let dirty = git(&[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)BENCHMARKS.md",
                ":(exclude)tests/bench",
            ])
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c} + uncommitted changes")
            } else {
                c
            }
        }
        None => "unknown".into(),
    };
    Machine {
        cpu: first_line_value("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into()),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        memory,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| format!("Linux {}", s.trim())),
        build: if cfg!(debug_assertions) {
            "debug (not representative)".into()
        } else {
            "release".into()
        },
        version: env!("CARGO_PKG_VERSION").into(),
        commit,
        date: jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
    }
}

/// `tests/bench/notes.md` beside the outputs, if present: the analysis kept across
/// regenerations.
fn notes(out: Option<&Path>) -> Option<String> {
    let path = out?.join("tests/bench/notes.md");
    std::fs::read_to_string(path)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// A Markdown table of numbers (right-aligned).
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    aligned_table(headers, rows, " ---: ")
}

/// A Markdown table of text (left-aligned).
fn text_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    aligned_table(headers, rows, " --- ")
}

fn aligned_table(headers: &[&str], rows: &[Vec<String>], rule: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        headers.iter().map(|_| rule).collect::<Vec<_>>().join("|")
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// The column headers of the run table (the smoke test checks them).
const RUN_COLUMNS: [&str; 11] = [
    "R",
    "D",
    "C",
    "wall",
    "wall floor",
    "wall ratio",
    "calls",
    "call floor",
    "call ratio",
    "peak RSS",
    "CPU",
];

/// The column headers of the calls-by-kind table.
const KIND_COLUMNS: [&str; 10] = [
    "R",
    "D",
    "C",
    "discovery",
    "user",
    "companion",
    "token",
    "write",
    "race check",
    "other",
];

/// The column headers of the idle table.
const IDLE_COLUMNS: [&str; 7] = [
    "R",
    "idle calls / cycle",
    "idle call floor",
    "idle call ratio",
    "idle CPU / cycle",
    "idle wall / cycle",
    "idle wall floor",
];

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1_000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn kind_cell(actual: usize, floor: usize) -> String {
    if actual == floor {
        group(actual)
    } else {
        format!("**{} / {}**", group(actual), group(floor))
    }
}

fn render_tables(report: &Report) -> String {
    let mut out = String::new();
    let runs: Vec<Vec<String>> = report
        .runs
        .iter()
        .map(|r| {
            vec![
                group(r.rows),
                group(r.due),
                r.concurrency.to_string(),
                secs(r.wall_s),
                secs(r.floor_s),
                format!("{:.3}", r.wall_ratio),
                group(r.calls.total()),
                group(r.call_floor.total()),
                format!("{:.3}", r.call_ratio),
                format!("{:.1} MiB", kib_to_mib(r.peak_rss_kib)),
                secs(r.cpu_s),
            ]
        })
        .collect();
    out.push_str(&table(&RUN_COLUMNS, &runs));
    out.push('\n');
    let kinds: Vec<Vec<String>> = report
        .runs
        .iter()
        .map(|r| {
            let mut row = vec![group(r.rows), group(r.due), r.concurrency.to_string()];
            row.extend(
                r.calls
                    .kinds()
                    .iter()
                    .zip(r.call_floor.kinds())
                    .map(|((_, a), (_, f))| kind_cell(*a, f)),
            );
            row
        })
        .collect();
    out.push_str(&table(&KIND_COLUMNS, &kinds));
    out.push('\n');
    let idle: Vec<Vec<String>> = report
        .idle
        .iter()
        .map(|i| {
            let n = i.cycles as f64;
            vec![
                group(i.rows),
                format!("{:.1}", i.calls.total() as f64 / n),
                format!("{:.1}", i.call_floor.total() as f64 / n),
                format!("{:.3}", i.call_ratio),
                format!(
                    "{:.1} ms (system {:.1})",
                    i.cpu_ms_per_cycle, i.sys_ms_per_cycle
                ),
                format!("{:.0} ms", i.wall_ms_per_cycle),
                format!("{:.0} ms", i.wall_floor_ms),
            ]
        })
        .collect();
    out.push_str(&table(&IDLE_COLUMNS, &idle));
    out
}

fn render_markdown(report: &Report, notes: Option<&str>) -> String {
    let p = &report.plan;
    let m = &report.machine;
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `sn-oauth-keeper bench` — do not edit by hand; the analysis below comes from \
         [`tests/bench/notes.md`](tests/bench/notes.md). The keeper is measured against the cost \
         floor of a cycle (issue 6): the calls it cannot avoid and the waiting they imply.\n"
    );
    let _ = writeln!(md, "## Reproduce\n");
    let _ = writeln!(
        md,
        "```sh\ncargo run --release --locked -- bench\n```\n\nOne command, about {:.0} minutes on \
         the machine below; it rewrites this file, `tests/bench/wall-time.svg` and \
         `tests/bench/results.json`. `--smoke` is the seconds-long version CI runs \
         (`tests/it/bench.rs`); `--help` lists the knobs (sizes, concurrency, latencies).\n",
        (report.total_s / 60.0).ceil()
    );
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(
        md,
        "| | |\n| --- | --- |\n| CPU | {} |\n| cores | {} |\n| memory | {} |\n| kernel | {} |\n| build | {} |\n| version | {} ({}) |\n| date | {} |\n| whole run | {:.0} s |\n",
        m.cpu, m.cores, m.memory, m.kernel, m.build, m.version, m.commit, m.date, report.total_s
    );
    let _ = writeln!(md, "## Method\n");
    let _ = writeln!(
        md,
        "- **Estate.** R `oauth_credential` rows are R/2 credentials of one Entra-like registry, \
         each a refresh row and an access row. D of them have an expired access token; the others \
         are fresh. The provider rotates the refresh token on every use, so a refresh costs \
         k = {k} writes (the refresh row and the access row). The integration user's time zone \
         is UTC (no correcting PATCH).\n\
         - **Latency.** The simulator runs in the bench process on loopback and delays every call \
         to the instance (Table API and companion) by Li = {li} ms and every token request by \
         Lp = {lp} ms, without serialising them (each delayed request waits on its own).\n\
         - **Keeper.** Each run spawns the keeper itself, `sn-oauth-keeper once --config …`, \
         with the instance password and the journal key in its environment, \
         `refresh.concurrency` = `refresh.per_host_concurrency` = C and \
         `instance.page_size` = {page}. Each run gets a fresh simulator and state directory.\n\
         - **Wall time** is from spawning the keeper to its exit (process start, journal \
         creation and exit included). **CPU** is its user + system time (the bench's \
         reaped-children time before and after). **Peak RSS** is its `VmHWM`, sampled every \
         {poll} ms while it runs.\n\
         - **Call floor** of a cycle that refreshes D of R rows: ceil(R / {page}) discovery GETs \
         + 1 `sys_user` GET + ceil(D / {batch}) companion calls + D token requests + D \
         race-check reads + k·D writes. The race check is documented in the engine \
         (`Keeper::safe_to_overwrite_refresh_row`): before a rotated refresh token overwrites the \
         refresh row, one single-row GET of its `sys_mod_count` and `sys_updated_by` makes sure \
         nobody re-authorised it since discovery; the Table API has no conditional write, so \
         the read is the price of that check and counts in the floor. \
         The `sys_user` read is the integration user's time zone, read once per process before \
         its first write (a daemon reads it once in its life; an idle cycle never does), so it \
         counts in the floor of a run and not in that of an idle cycle. Calls are counted by \
         kind from the simulator's request log; a cell shows `actual / floor` in bold where they \
         differ.\n\
         - **Wall-time floor**: ceil(R / {page})·Li (pages are sequential) + Li (the first \
         companion call precedes any token request) + ceil(D / C)·(Lp + (1 + k)·Li): a \
         refresh's token request, race-check read and writes happen one after the other. The \
         `sys_user` \
         read and later companion calls can overlap the refreshes, so they are not in it. Runs \
         whose floor exceeds {maxf:.0} s (serial refreshes at large D) are skipped, except the \
         runs a target names.\n\
         - **Idle cycle**: right after its first run, each estate goes through {samples} cycles \
         of the real engine in one keeper process (the hidden `bench-cycles` command, the same \
         `Keeper::cycle` as `once` and `run`); CPU and wall time are per cycle with the first \
         (warm-up) cycle left out. Its floor is the discovery GETs alone.\n\
         - **Memory**: {cycles} idle cycles back to back in one keeper process over \
         {rows} rows, without injected latency (a leak per cycle shows at any size; this keeps \
         the check to seconds); `VmRSS` after selected cycles. Caches (SQLite's page cache, \
         allocator arenas, connection buffers) fill during the first cycles and then stay, while \
         a leak keeps growing, so the verdict is on the growth over the second half.\n\
         - **Machine.** The simulator shares the machine's cores with the keeper, and the \
         machine may be shared with other work: wall times move by a few per cent between runs; \
         calls do not move at all.\n",
        k = p.writes_per_refresh,
        li = p.instance_latency_ms,
        lp = p.provider_latency_ms,
        page = p.page_size,
        poll = millis(RSS_POLL),
        batch = COMPANION_BATCH,
        maxf = p.max_floor_s,
        samples = p.idle_samples,
        cycles = group(p.idle_cycles),
        rows = group(p.idle_rows),
    );
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(md, "### Refresh runs\n");
    let tables = render_tables(report);
    let mut parts = tables.split("\n\n");
    let _ = writeln!(md, "{}\n", parts.next().unwrap_or_default().trim_end());
    let _ = writeln!(
        md,
        "![Wall time against D, measured and floor](tests/bench/wall-time.svg)\n"
    );
    let _ = writeln!(md, "### Calls by kind\n");
    let _ = writeln!(md, "{}\n", parts.next().unwrap_or_default().trim_end());
    let _ = writeln!(md, "### Idle cycle\n");
    let _ = writeln!(md, "{}\n", parts.next().unwrap_or_default().trim_end());
    let mem = &report.memory;
    let _ = writeln!(
        md,
        "### Memory over {} idle cycles (R = {})\n",
        group(mem.cycles),
        group(mem.rows)
    );
    let headers: Vec<String> = mem
        .rss_kib
        .iter()
        .map(|(c, _)| format!("after cycle {}", group(*c)))
        .collect();
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let row: Vec<String> = mem
        .rss_kib
        .iter()
        .map(|(_, kib)| format!("{:.1} MiB", kib_to_mib(*kib)))
        .collect();
    let _ = writeln!(md, "{}", table(&header_refs, &[row]));
    let _ = writeln!(
        md,
        "Growth from cycle 10 to {}: {:+} KiB; over the second half (cycles {}–{}): {:+} KiB. \
         Peak RSS {:.1} MiB; {:.1} ms CPU and {:.1} calls per cycle (floor {}).\n",
        group(mem.cycles),
        mem.growth_kib,
        group(mem.cycles / 2),
        group(mem.cycles),
        mem.second_half_growth_kib,
        kib_to_mib(mem.peak_rss_kib),
        mem.cpu_ms_per_cycle,
        mem.calls_per_cycle,
        mem.call_floor_per_cycle
    );
    if !report.skipped.is_empty() {
        let list: Vec<String> = report
            .skipped
            .iter()
            .map(|s| {
                format!(
                    "R = {}, D = {}, C = {} (floor {:.0} s)",
                    group(s.rows),
                    group(s.due),
                    s.concurrency,
                    s.floor_s
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "Skipped (floor above --max-floor): {}.\n",
            list.join("; ")
        );
    }
    let _ = writeln!(md, "## Targets\n");
    let rows: Vec<Vec<String>> = report
        .targets
        .iter()
        .map(|t| {
            vec![
                t.target.clone(),
                t.measured.clone(),
                match t.met {
                    Some(true) => "met".into(),
                    Some(false) => "**missed**".into(),
                    None => "not measured".into(),
                },
            ]
        })
        .collect();
    let _ = writeln!(
        md,
        "{}",
        text_table(&["target", "measured", "verdict"], &rows)
    );
    if let Some(notes) = notes {
        let _ = writeln!(md, "## Analysis\n");
        let _ = writeln!(md, "{}", notes.trim_end());
    }
    md
}

fn write_outputs(out: &Path, report: &Report, markdown: &str) -> Result<(), BenchError> {
    let bench_dir = out.join("tests").join("bench");
    std::fs::create_dir_all(&bench_dir)
        .map_err(io_error(format!("creating {}", bench_dir.display())))?;
    std::fs::write(out.join("BENCHMARKS.md"), markdown)
        .map_err(io_error("writing BENCHMARKS.md"))?;
    std::fs::write(bench_dir.join("wall-time.svg"), svg_plot(report))
        .map_err(io_error("writing wall-time.svg"))?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| BenchError::Unexpected(format!("encoding results.json: {e}")))?;
    std::fs::write(bench_dir.join("results.json"), json + "\n")
        .map_err(io_error("writing results.json"))?;
    Ok(())
}

/// Wall time against D on log–log axes: one colour per concurrency, measured as a solid line
/// with points, the floor as a dashed line.
fn svg_plot(report: &Report) -> String {
    const W: f64 = 760.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 170.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 60.0;
    const COLOURS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let runs = &report.runs;
    let values = || {
        runs.iter()
            .flat_map(|r| [r.wall_s, r.floor_s])
            .filter(|v| *v > 0.0)
    };
    let ds = || runs.iter().map(|r| r.due.max(1) as f64);
    let decade_floor = |v: f64| 10f64.powf(v.log10().floor());
    let decade_ceil = |v: f64| 10f64.powf(v.log10().ceil());
    let x_min = decade_floor(ds().fold(f64::INFINITY, f64::min).min(10.0));
    let mut x_max = decade_ceil(ds().fold(1.0, f64::max));
    if x_max <= x_min {
        x_max = x_min * 10.0;
    }
    let y_min = decade_floor(values().fold(f64::INFINITY, f64::min).min(0.1));
    let mut y_max = decade_ceil(values().fold(1.0, f64::max));
    if y_max <= y_min {
        y_max = y_min * 10.0;
    }
    let px = |d: f64| {
        LEFT + (d.log10() - x_min.log10()) / (x_max.log10() - x_min.log10()) * (W - LEFT - RIGHT)
    };
    let py = |s: f64| {
        H - BOTTOM
            - (s.log10() - y_min.log10()) / (y_max.log10() - y_min.log10()) * (H - TOP - BOTTOM)
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let mut sizes: Vec<(usize, usize)> = runs.iter().map(|r| (r.due, r.rows)).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let sizes: Vec<String> = sizes
        .iter()
        .map(|(due, rows)| format!("{}:{}", group(*rows), group(*due)))
        .collect();
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15">Wall time of one cycle against due credentials D</text>"#,
        (W - RIGHT + LEFT) / 2.0
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="34" text-anchor="middle" font-size="11" fill="#555">R:D = {} · Lp = {} ms · Li = {} ms</text>"##,
        (W - RIGHT + LEFT) / 2.0,
        sizes.join(", "),
        report.plan.provider_latency_ms,
        report.plan.instance_latency_ms
    );
    // Grid and ticks at every decade.
    let mut d = x_min;
    while d <= x_max * 1.000_1 {
        let x = px(d);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0,
            group(d.round() as usize)
        );
        d *= 10.0;
    }
    let mut s = y_min;
    while s <= y_max * 1.000_1 {
        let y = py(s);
        let label = if s < 1.0 {
            format!("{} ms", (s * 1_000.0).round())
        } else {
            format!("{} s", s.round())
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
        s *= 10.0;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">due credentials D (log)</text>"#,
        (W - RIGHT + LEFT) / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">wall time (log)</text>"#,
        (H - BOTTOM + TOP) / 2.0,
        (H - BOTTOM + TOP) / 2.0
    );
    let mut legend_y = TOP + 10.0;
    for (i, c) in report.plan.concurrency.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut series: Vec<&RunResult> = runs.iter().filter(|r| r.concurrency == *c).collect();
        if series.is_empty() {
            continue;
        }
        series.sort_by_key(|r| r.due);
        let line = |f: &dyn Fn(&RunResult) -> f64| {
            series
                .iter()
                .map(|r| format!("{:.1},{:.1}", px(r.due.max(1) as f64), py(f(r).max(y_min))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
            line(&|r| r.floor_s)
        );
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            line(&|r| r.wall_s)
        );
        for r in &series {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>D={} C={}: {:.2} s (floor {:.2} s)</title></circle>"#,
                px(r.due.max(1) as f64),
                py(r.wall_s.max(y_min)),
                r.due,
                r.concurrency,
                r.wall_s,
                r.floor_s
            );
        }
        let lx = W - RIGHT + 15.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">C = {c} measured</text>"#,
            lx + 24.0,
            lx + 30.0,
            legend_y + 4.0
        );
        legend_y += 18.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{}" y="{}">C = {c} floor</text>"#,
            lx + 24.0,
            lx + 30.0,
            legend_y + 4.0
        );
        legend_y += 24.0;
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_follow_the_formula() {
        let f = Calls::floor(50_000, 10_000);
        assert_eq!(f.discovery, 50);
        assert_eq!(f.user, 1);
        assert_eq!(f.companion, 100);
        assert_eq!(f.token, 10_000);
        assert_eq!(f.write, 20_000);
        assert_eq!(f.reread, 10_000);
        assert_eq!(Calls::floor(100, 0).total(), 1);
        let w = wall_floor(
            Size {
                rows: 10_000,
                due: 1_000,
            },
            8,
            Duration::from_millis(50),
            Duration::from_millis(30),
        );
        // 10 pages + 1 companion call, then 125 rounds of 50 + (1 + 2)·30 ms.
        assert_eq!(w, Duration::from_millis(10 * 30 + 30 + 125 * 140));
    }

    #[test]
    fn sizes_parse_and_validate() {
        assert_eq!(
            parse_size("10_000:1000"),
            Ok(Size {
                rows: 10_000,
                due: 1_000
            })
        );
        assert!(parse_size("101:10").is_err());
        assert!(parse_size("100:51").is_err());
        assert!(parse_size("100").is_err());
    }

    #[test]
    fn ratios_handle_zero_floors() {
        assert_eq!(ratio(0.0, 0.0), 1.0);
        assert!(ratio(1.0, 0.0).is_infinite());
        assert_eq!(ratio(3.0, 2.0), 1.5);
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(50_000), "50,000");
        assert_eq!(group(100), "100");
    }
}
