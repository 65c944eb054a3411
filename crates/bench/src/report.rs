//! What a run of the benchmark reports: the targets and whether they were met, the machine,
//! the tables (on stdout and in `BENCHMARKS.md`) and `tests/bench/results.json`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::clock::wall_now;
use crate::floor::VERSION_READ_IDS;
use crate::plot::svg_plot;
use crate::runs::{IdleResult, MemoryResult, RSS_POLL, RunResult, Skipped, kib_to_mib};
use crate::{BenchError, Plan, io_error, millis, workspace_root};
use sn_oauth_keeper_sim::{COMPANION_MAX_IDS, COMPANION_MAX_TOKENS};

/// RSS growth over the second half of the idle cycles above which memory counts as growing.
/// Caches (SQLite's page cache, allocator arenas, connection buffers) fill up over the first
/// cycles and then stay; a leak keeps growing with every cycle, so the second half shows it:
/// 256 KiB over 500 cycles is half a KiB per cycle.
const GROWTH_TOLERANCE_KIB: i64 = 256;

/// The named runs of the call- and wall-time-ratio targets: D values …
const TARGET_DUE: [usize; 2] = [1_000, 10_000];

/// … at these concurrencies.
const TARGET_CONCURRENCY: [usize; 2] = [8, 32];

/// Largest call ratio the target allows at the named runs.
const CALL_TARGET_RATIO: f64 = 1.02;

/// Largest wall-time ratio the target allows at the named runs.
const WALL_TARGET_RATIO: f64 = 1.2;

/// Largest peak RSS the target allows at R = 50,000, KiB.
const RSS_TARGET_KIB: u64 = 64 * 1024;

/// Most CPU an idle cycle at R = 10,000 may take, ms.
const IDLE_CPU_TARGET_MS: f64 = 50.0;

/// One target and whether it was met.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TargetCheck {
    pub(crate) target: String,
    pub(crate) measured: String,
    /// `None` when no run of this plan measures it.
    pub(crate) met: Option<bool>,
}

/// Where the numbers come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) memory: String,
    pub(crate) kernel: String,
    pub(crate) build: String,
    pub(crate) version: String,
    pub(crate) commit: String,
    pub(crate) date: String,
}

/// Everything one bench run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) plan: Plan,
    pub(crate) runs: Vec<RunResult>,
    pub(crate) skipped: Vec<Skipped>,
    pub(crate) idle: Vec<IdleResult>,
    pub(crate) memory: MemoryResult,
    pub(crate) targets: Vec<TargetCheck>,
    pub(crate) total_s: f64,
}

/// Whether a ratio target names this run (it is never skipped).
pub(crate) fn target_run(due: usize, concurrency: usize) -> bool {
    TARGET_DUE.contains(&due) && TARGET_CONCURRENCY.contains(&concurrency)
}

/// Each target with what was measured and whether it was met.
pub(crate) fn check_targets(
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
    for d in TARGET_DUE {
        for c in TARGET_CONCURRENCY {
            let run = runs.iter().find(|r| r.due == d && r.concurrency == c);
            let measured = |describe: fn(&RunResult) -> String| {
                run.map_or_else(|| "not in this run".into(), describe)
            };
            targets.push(TargetCheck {
                target: format!(
                    "call ratio ≤ {CALL_TARGET_RATIO} at D = {} with C = {c}",
                    group(d)
                ),
                measured: measured(|r| {
                    let extra = r.calls.total() as f64 - r.call_floor.total() as f64;
                    format!(
                        "{:.3} ({} calls against {}; {:+.3} per refresh)",
                        r.call_ratio,
                        group(r.calls.total()),
                        group(r.call_floor.total()),
                        extra / r.due.max(1) as f64
                    )
                }),
                met: run.map(|r| r.call_ratio <= CALL_TARGET_RATIO),
            });
            targets.push(TargetCheck {
                target: format!(
                    "wall-time ratio ≤ {WALL_TARGET_RATIO} at D = {} with C = {c}",
                    group(d)
                ),
                measured: measured(|r| {
                    format!(
                        "{:.3} ({:.2} s against {:.2} s; {:+.2} ms per refresh)",
                        r.wall_ratio, r.wall_s, r.floor_s, r.overhead_ms_per_refresh
                    )
                }),
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
pub(crate) fn group(n: usize) -> String {
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

/// The machine, build and commit the numbers come from.
pub(crate) fn machine() -> Machine {
    let memory = first_line_value("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib as f64 / 1_048_576.0),
        );
    // The measured code is the checkout this binary was built from, wherever it is run.
    let root = workspace_root();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
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
        date: wall_now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// `tests/bench/notes.md` beside the outputs, if present: the analysis kept across
/// regenerations.
pub(crate) fn notes(out: Option<&Path>) -> Option<String> {
    let path = out?.join("tests/bench/notes.md");
    std::fs::read_to_string(path)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// A Markdown table of numbers (right-aligned).
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
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
const RUN_COLUMNS: [&str; 13] = [
    "R",
    "D",
    "C",
    "wall",
    "wall floor",
    "bound",
    "wall ratio",
    "overhead / refresh",
    "calls",
    "call floor",
    "call ratio",
    "peak RSS",
    "CPU",
];

/// The column headers of the calls-by-kind table, in the order of [`crate::floor::Calls::kinds`].
const KIND_COLUMNS: [&str; 12] = [
    "R",
    "D",
    "C",
    "discovery",
    "user",
    "secrets",
    "verify",
    "token",
    "write",
    "race check",
    "lease",
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

/// The three result tables (runs, calls by kind, idle cycle), for stdout and the Markdown.
pub(crate) fn render_tables(report: &Report) -> String {
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
                r.bound.clone(),
                format!("{:.3}", r.wall_ratio),
                if r.due == 0 {
                    "–".into()
                } else {
                    format!("{:+.2} ms", r.overhead_ms_per_refresh)
                },
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

/// `BENCHMARKS.md`: how to reproduce, machine, method, results, targets, and the hand-written
/// analysis (`notes`) when there is one.
pub(crate) fn render_markdown(report: &Report, notes: Option<&str>) -> String {
    let p = &report.plan;
    let m = &report.machine;
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `sn-oauth-keeper-bench` (`crates/bench/`) — do not edit by hand; the \
         analysis below comes from \
         [`tests/bench/notes.md`](tests/bench/notes.md). The keeper is measured against the cost \
         floor of a cycle (issue 6): the calls it cannot avoid and the waiting they imply.\n"
    );
    let _ = writeln!(md, "## Reproduce\n");
    let _ = writeln!(
        md,
        "```sh\ncargo run --release --locked -p sn-oauth-keeper-bench\n```\n\nOne command, about \
         {:.0} minutes on the machine below; it rewrites this file, `tests/bench/wall-time.svg` \
         and `tests/bench/results.json`. `--smoke` is the seconds-long version CI runs \
         (`crates/bench/tests/smoke.rs`); `--help` lists the knobs (sizes, concurrency, \
         latencies).\n",
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
         - **Keeper.** Each run spawns the keeper as a process of its own: the bench binary's \
         hidden `once --config …`, which builds the keeper from its config file as \
         `sn-oauth-keeper once --config …` does (the keeper's library, JSON logs on stderr; it \
         only leaves out printing the closing table) and runs one cycle, \
         with the instance password and the journal key in its environment. Every setting but \
         `refresh.concurrency` = C is the keeper's default: `refresh.per_host_concurrency` is \
         unset, so it follows C (every token request goes to one host, as in an Entra-only \
         estate), and `instance.page_size` is {page}. Each run gets a fresh simulator and state \
         directory.\n\
         - **Wall time** is from spawning the keeper to its exit (process start, journal \
         creation and exit included). **CPU** is its user + system time (the bench's \
         reaped-children time before and after). **Peak RSS** is its `VmHWM`, sampled every \
         {poll} ms while it runs.\n\
         - **Call floor.** What a correct keeper cannot avoid in a cycle that refreshes D of R \
         rows and writes W = k·D rows, derived from the rules, not from the keeper's own \
         constants: \
         ceil(R / {page}) discovery reads (every row must be read, a page a call) \
         + 1 `sys_user` read (the integration user's time zone: a token write with display-value \
         input reads `expires` in it; once per process, before its first write, so an idle \
         cycle's floor leaves it out) \
         + ceil(D / {ids}) companion `/secrets` calls (only the companion hands out refresh \
         tokens, at most {ids} rows a call) \
         + D token requests \
         + W writes (the Table API writes one record a call) \
         + ceil(D / {versions}) race-check reads (a rotated refresh token must not overwrite a row \
         someone else re-authorised since discovery, and the Table API has no conditional write, \
         so a read of each row's version, `sys_mod_count` and `sys_updated_by`, before its write \
         is unavoidable; a `sys_idIN` list read carries {versions} sys_ids in its URL, about \
         3.3 KB, the most one read can carry sensibly) \
         + ceil(W / {tokens}) companion `/verify` calls (a 200 does not prove a write: a field \
         ACL or a business rule can discard it silently; only `/verify` proves it, one SHA-256 \
         digest per row written, at most {tokens} rows a call) \
         + 3 + ceil(D / {ids}) lease calls (`once` takes the instance's lease for its cycle — \
         its answer names the credentials other keepers claim, which the plan leaves alone — \
         claims each batch of refresh tokens before its token requests, withdraws the claims \
         once the answers are verified, and releases the lease when it exits, so `once` after \
         `once` never waits). Calls are counted by kind from \
         the simulator's request log (discovery: list reads of `oauth_credential` by `typeIN`; \
         race check: list reads by `sys_idIN`; lease: `/lease` and `/lease/claims`; anything \
         unexpected is `other`); a cell shows \
         `actual / floor` in bold where they differ.\n\
         - **Wall-time floor.** The dependencies no keeper can avoid: discovery pages one after \
         the other, P = ceil(R / {page}) of them (P·Li); one companion call before the first \
         token request (Li); the lease taken before the plan and the first batch claimed before \
         its first token request (2·Li; later batches can be claimed while earlier requests are \
         in flight); D token requests with at most C in flight; an answer's rows are \
         written only after its token answer and then its version read (Li; a read before the \
         answer would miss a re-authorisation during the token request); W writes with at most \
         C in flight; a verification (Li) after the writes it proves; the claims withdrawn and \
         the lease released at the end (2·Li). After the fixed \
         P·Li + 3·Li and before the final 2·Li, the floor is the larger of two pipelines: **tokens** — ceil(D / C)·Lp, then \
         the last answer's version read, its k writes (ceil(k / C)·Li) and its verification: \
         ceil(D / C)·Lp + (2 + ceil(k / C))·Li; **writes** — the first answer (Lp) and its \
         version read (Li), then ceil(W / C)·Li, then the last verification (Li): \
         Lp + (2 + ceil(W / C))·Li. The `sys_user` read and later companion calls can overlap \
         other work, so they are in neither. This bounds every keeper; one that also keeps to \
         the call floor reads versions {versions} answers at a time, so its first write waits \
         for {versions} answers, not one: ceil({versions} / C)·Lp instead of Lp, a fill of up to \
         (ceil({versions} / C) − 1)·Lp that the floor does not grant. The `bound` column names \
         the larger pipeline; **overhead / refresh** is (wall − floor) / D. Runs whose floor \
         exceeds {maxf:.0} s \
         (serial refreshes at large D) are skipped, except the runs a target names.\n\
         - **Idle cycle**: right after its first run, each estate goes through {samples} cycles \
         of the real engine in one keeper process (the bench binary's hidden `cycles` command, \
         the same `Keeper::cycle` as `once` and `run`); CPU and wall time are per cycle with the first \
         (warm-up) cycle left out. Its floor is the discovery GETs alone, and the lease: taken \
         at the first cycle, renewed each third of its life (the bench's keepers run with \
         `[lease] ttl` = 10 min, so a renewal falls every 200 s).\n\
         - **Memory**: {cycles} idle cycles back to back in one keeper process over \
         {rows} rows, without injected latency (a leak per cycle shows at any size; this keeps \
         the check to seconds); `VmRSS` after selected cycles. Caches (SQLite's page cache, \
         allocator arenas, connection buffers) fill during the first cycles and then stay, while \
         a leak keeps growing, so the verdict is on the growth over the second half.\n\
         - **Machine.** The simulator shares the machine's cores with the keeper, and the \
         machine may be shared with other work: wall times move between runs, by a few per cent \
         on a quiet machine and by tens of per cent at C = 32 on a busy one, where the keeper \
         and the simulator wait for a core; calls do not move at all.\n",
        k = p.writes_per_refresh,
        li = p.instance_latency_ms,
        lp = p.provider_latency_ms,
        page = p.page_size,
        poll = millis(RSS_POLL),
        ids = COMPANION_MAX_IDS,
        tokens = COMPANION_MAX_TOKENS,
        versions = VERSION_READ_IDS,
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
         Peak RSS {:.1} MiB; {:.1} ms CPU and {:.1} calls per cycle (floor {:.1}).\n",
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

/// Writes `BENCHMARKS.md`, `tests/bench/wall-time.svg` and `tests/bench/results.json` under
/// `out`.
pub(crate) fn write_outputs(out: &Path, report: &Report, markdown: &str) -> Result<(), BenchError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(50_000), "50,000");
        assert_eq!(group(100), "100");
    }
}
