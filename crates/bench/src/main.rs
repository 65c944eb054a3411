//! sn-oauth-keeper-bench: the keeper measured against its cost floor.
//!
//! Run it from anywhere in the workspace; it rewrites `BENCHMARKS.md` at the workspace root,
//! `tests/bench/wall-time.svg` and `tests/bench/results.json` (a few minutes on two cores):
//!
//! ```sh
//! cargo run --release --locked -p sn-oauth-keeper-bench
//! cargo run --release --locked -p sn-oauth-keeper-bench -- --help     # sizes, concurrency, latencies
//! cargo run --locked -p sn-oauth-keeper-bench -- --smoke              # seconds; what the tests run
//! ```
//!
//! A keeper runs beside a production instance whose API calls are rate-limited and shared, so
//! its cost is mostly calls and waiting, and both have a floor that can be computed
//! ([`floor`]). For each estate size (R `oauth_credential` rows, D of them due) and concurrency
//! C, the harness starts the simulator in this process with latency injected per target (the
//! instance: Table API and companion; the provider's token endpoint), seeds the estate, and
//! spawns the keeper as a process of its own ([`runs`]): this binary's hidden `once` command,
//! which builds the keeper from a config file exactly as `sn-oauth-keeper once --config …` does
//! ([`child`]), so the wall time, CPU time and peak RSS it reports are the keeper's alone.
//! Calls are counted by kind from the simulator's request log and compared with the floor; an
//! idle cycle and a long run of idle cycles (memory must not grow with the number of cycles) go
//! through the hidden `cycles` command, which runs the real engine cycle after cycle in one
//! process.
//!
//! The harness writes its [`report`] and a plot drawn here ([`plot`], no plotting dependency).
//! It reports targets, it never asserts on time: the only hard failures are a keeper that does
//! not finish its work.
//!
//! It uses the keeper's library (without the keeper's default features, so building both in
//! one invocation never puts the simulator into the keeper's binary) through one module,
//! [`keeper`], and the simulator (`sn-oauth-keeper-sim`).

mod child;
mod clock;
mod floor;
mod keeper;
mod plot;
mod procfs;
mod report;
mod runs;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::clock::Stopwatch;
use crate::floor::{WRITES_PER_REFRESH, Waits};
use crate::keeper::{DEFAULT_PAGE_SIZE, KeeperError};
use crate::report::{
    Report, check_targets, machine, notes, render_markdown, render_tables, write_outputs,
};
use crate::runs::{Measured, measure};

/// Measures sn-oauth-keeper against its cost floor (calls and waiting) on the simulator and
/// writes BENCHMARKS.md with a plot. Needs no config; use a release build.
#[derive(Debug, Parser)]
#[command(
    name = "sn-oauth-keeper-bench",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
    #[command(subcommand)]
    child: Option<Child>,
}

/// The keeper processes the benchmark spawns of this binary; not for people, so hidden.
#[derive(Debug, Subcommand)]
enum Child {
    /// One apply cycle of the keeper built from FILE, as `sn-oauth-keeper once` runs it.
    #[command(hide = true)]
    Once {
        /// The keeper's config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// N apply cycles back to back in one process, a JSON sample on stdout after each: the
    /// benchmark's idle-cycle and memory probe.
    #[command(hide = true)]
    Cycles {
        /// The keeper's config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// How many cycles.
        #[arg(long)]
        cycles: usize,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.child {
        None => run(cli.args).await,
        Some(Child::Once { config }) => child::once(&config).await,
        Some(Child::Cycles { config, cycles }) => child::cycles(&config, cycles).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root this binary was built from: where `BENCHMARKS.md` and `tests/bench/`
/// live, and the checkout whose commit the report names.
pub(crate) fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The benchmark's arguments.
#[derive(Debug, Clone, clap::Args)]
struct BenchArgs {
    /// A small, fast run (seconds) that CI uses so the harness cannot rot. Writes files only
    /// when --out is given.
    #[arg(long)]
    smoke: bool,
    /// Estates as ROWS:DUE pairs: oauth_credential rows (a refresh row and an access row per
    /// credential, so even) and due credentials [default: 100:10,1000:100,10000:1000,50000:10000].
    #[arg(long, value_delimiter = ',', value_parser = parse_size, value_name = "ROWS:DUE,…")]
    sizes: Option<Vec<Size>>,
    /// Concurrency values: refresh.concurrency, with every other setting at the keeper's default
    /// (so refresh.per_host_concurrency follows it) [default: 1,8,32].
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
    /// Directory to write BENCHMARKS.md and tests/bench/ into [default: the workspace root this
    /// binary was built from; with --smoke, nothing is written].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Profiling: run each keeper under this command, e.g. "valgrind --tool=callgrind" (the
    /// numbers then describe the wrapper, not the keeper).
    #[arg(long, hide = true, value_name = "COMMAND")]
    wrap: Option<String>,
    /// Profiling: keep the scratch directory (configs, keeper logs, each run's calls in
    /// requests.jsonl) and say where it is.
    #[arg(long, hide = true)]
    keep_scratch: bool,
}

/// One estate: R rows, D of them due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Size {
    /// `oauth_credential` rows.
    pub(crate) rows: usize,
    /// Due credentials.
    pub(crate) due: usize,
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
    keeper::parse_duration(text)
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
    /// The keeper could not be built or failed a whole cycle (in a keeper process).
    #[error(transparent)]
    Engine(#[from] KeeperError),
}

/// Maps an I/O error to [`BenchError::Io`], saying what was being done.
pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |e| BenchError::Io {
        what,
        reason: e.to_string(),
    }
}

/// The plan after defaults.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    pub(crate) smoke: bool,
    pub(crate) sizes: Vec<Size>,
    pub(crate) concurrency: Vec<usize>,
    pub(crate) provider_latency_ms: u64,
    pub(crate) instance_latency_ms: u64,
    pub(crate) idle_cycles: usize,
    pub(crate) idle_rows: usize,
    pub(crate) idle_samples: usize,
    pub(crate) max_floor_s: f64,
    pub(crate) page_size: usize,
    pub(crate) writes_per_refresh: usize,
    #[serde(skip)]
    pub(crate) out: Option<PathBuf>,
    #[serde(skip)]
    pub(crate) lp: Duration,
    #[serde(skip)]
    pub(crate) li: Duration,
    #[serde(skip)]
    pub(crate) max_floor: Duration,
    #[serde(skip)]
    pub(crate) wrap: Vec<String>,
    #[serde(skip)]
    pub(crate) keep_scratch: bool,
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
            page_size: DEFAULT_PAGE_SIZE,
            writes_per_refresh: WRITES_PER_REFRESH,
            out: match args.out {
                Some(dir) => Some(dir),
                None if smoke => None,
                None => Some(workspace_root()),
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

    /// The waits of a run at concurrency `c`, for its wall-time floor.
    pub(crate) fn waits(&self, c: usize) -> Waits {
        Waits {
            provider: self.lp,
            instance: self.li,
            concurrency: c,
            page_size: self.page_size,
        }
    }
}

/// Whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the benchmark; 0 when every keeper run did its work (targets are reported, not exit
/// codes).
pub(crate) async fn run(args: BenchArgs) -> Result<u8, BenchError> {
    let keep_scratch = args.keep_scratch;
    let plan = Plan::from_args(args)?;
    if cfg!(debug_assertions) && !plan.smoke {
        eprintln!(
            "bench: this is a debug build; for real numbers use `cargo run --release --locked -p sn-oauth-keeper-bench`"
        );
    }
    let scratch = tempfile_dir()?;
    let started = Stopwatch::start();
    let result = measure(&plan, &scratch.0).await;
    if keep_scratch {
        eprintln!("bench: scratch kept at {}", scratch.0.display());
        std::mem::forget(scratch);
    } else {
        drop(scratch);
    }
    let Measured {
        runs,
        skipped,
        idle,
        memory,
    } = result?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
