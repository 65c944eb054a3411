//! The command-line edge: parses arguments, loads config, maps every outcome to an exit code.
//!
//! Exit codes of `once` and `check`: 0 all due credentials refreshed (or none due); 1 at least
//! one could not be refreshed or written; 2 bad config or usage; 3 the instance is unreachable
//! or refuses the service account.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sn_oauth_keeper::config::{self, ConfigError, JournalKey, ProcessEnv, Settings};
use sn_oauth_keeper::engine::{CycleError, Keeper, Mode};
use sn_oauth_keeper::journal::{Journal, JournalError};
use sn_oauth_keeper::sim::{Estate, Simulator, Target};
use sn_oauth_keeper::telemetry::{self, LogFormat, LogLevel};
use sn_oauth_keeper::{check, daemon, report};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const EXIT_FAILURES: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_INSTANCE: u8 = 3;

/// Keeps the OAuth credentials of a ServiceNow instance alive.
///
/// Reads oauth_credential through the Table API, refreshes the refresh-token credentials whose
/// access token is missing, expired or expiring soon (or idle too long) at the provider's token
/// endpoint, and writes the new access token and any rotated refresh token back. Start with
/// `sn-oauth-keeper demo`, which needs nothing but this binary.
#[derive(Debug, Parser)]
#[command(name = "sn-oauth-keeper", version, propagate_version = true)]
struct Cli {
    /// The TOML config file (else $SN_OAUTH_KEEPER_CONFIG).
    #[arg(long, global = true, value_name = "FILE", env = config::CONFIG_ENV)]
    config: Option<PathBuf>,
    /// Log line format; json when stdout is not a terminal. Logs go to stderr.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// This program's log level (dependencies stay at warn).
    #[arg(long, global = true, value_enum, env = "SN_OAUTH_KEEPER_LOG_LEVEL")]
    log_level: Option<LogLevel>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the keeper against the built-in simulator and show what it does. Needs no config.
    Demo {
        /// Seed of the simulated estate.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// One refresh cycle, then exit (0 ok, 1 failures, 2 config, 3 instance unusable).
    Once {
        /// No token request and no write: print what would be refreshed and why.
        #[arg(long)]
        dry_run: bool,
    },
    /// The daemon: a cycle every refresh.interval, /metrics /healthz /readyz on server.listen.
    Run,
    /// Read-only report: one row per refresh-token credential.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Pre-flight checklist; each failure comes with its fix.
    Check {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run the simulator alone (a ServiceNow instance with companion and OAuth providers).
    Simulate {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Seed of the simulated estate.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Inspect the journal of undelivered token answers.
    Journal {
        #[command(subcommand)]
        action: JournalCommand,
    },
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// What is pending: ids, registry, age, attempts — never a token.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        // The demo's tables already show every failure; its log stays quiet unless asked.
        Command::Demo { .. } => LogLevel::Error,
        _ => LogLevel::Info,
    };
    telemetry::init(
        cli.log_format.unwrap_or_else(LogFormat::detect),
        cli.log_level.unwrap_or(default_level),
        std::io::stderr,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURES);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURES)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Demo { seed } => demo(seed).await,
        Command::Simulate { listen, seed } => simulate(listen, seed).await,
        Command::Once { dry_run } => with_settings(cli.config, |s| once(s, dry_run)).await,
        Command::Run => with_settings(cli.config, run).await,
        Command::Status { format } => with_settings(cli.config, |s| status(s, format)).await,
        Command::Check { format } => with_settings(cli.config, |s| check_cmd(s, format)).await,
        Command::Journal {
            action: JournalCommand::List { format },
        } => with_settings(cli.config, |s| journal_list(s, format)).await,
    }
}

async fn with_settings<F, Fut>(path: Option<PathBuf>, f: F) -> anyhow::Result<u8>
where
    F: FnOnce(Settings) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u8>>,
{
    let loaded = match path {
        Some(p) => config::load(&p, &ProcessEnv),
        None => Err(ConfigError::NoConfigFile),
    };
    match loaded {
        Ok(settings) => f(settings).await,
        Err(e) => {
            eprintln!("error: {e}");
            Ok(EXIT_CONFIG)
        }
    }
}

/// Opens the journal for writing, mapping its failures to exit codes.
fn open_journal(settings: &Settings) -> Result<Arc<Journal>, u8> {
    let key = match settings.state.key.resolve(&settings.source, &ProcessEnv) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_CONFIG);
        }
    };
    match Journal::open(&settings.state.dir, Some(&key)) {
        Ok(j) => Ok(Arc::new(j)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(match e {
                JournalError::KeyMissing(_) => EXIT_CONFIG,
                _ => EXIT_FAILURES,
            })
        }
    }
}

fn cycle_exit(e: &CycleError) -> u8 {
    eprintln!("error: {e}");
    if e.instance_unusable() {
        EXIT_INSTANCE
    } else {
        EXIT_FAILURES
    }
}

async fn once(settings: Settings, dry_run: bool) -> anyhow::Result<u8> {
    let settings = Arc::new(settings);
    let journal = if dry_run {
        None
    } else {
        match open_journal(&settings) {
            Ok(j) => Some(j),
            Err(code) => return Ok(code),
        }
    };
    let keeper =
        Keeper::new(Arc::clone(&settings), journal).context("building the HTTP clients")?;
    let mode = if dry_run { Mode::DryRun } else { Mode::Apply };
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        daemon::shutdown_signal().await;
        signal_stop.cancel();
    });
    let report = match keeper.cycle(mode, &stop).await {
        Ok(r) => r,
        Err(e) => return Ok(cycle_exit(&e)),
    };
    if dry_run {
        print!("{}", report::dry_run_table(&report));
    } else {
        let acted: Vec<_> = report
            .credentials
            .iter()
            .filter(|c| c.outcome != sn_oauth_keeper::engine::Outcome::Skipped)
            .cloned()
            .collect();
        if !acted.is_empty() {
            let shown = sn_oauth_keeper::engine::CycleReport {
                credentials: acted,
                ..report.clone()
            };
            print!("{}", report::outcome_table(&shown));
        }
        print!("{}", report::cycle_summary(&report));
    }
    Ok(if report.failures() > 0 {
        EXIT_FAILURES
    } else {
        0
    })
}

async fn run(settings: Settings) -> anyhow::Result<u8> {
    let settings = Arc::new(settings);
    let journal = match open_journal(&settings) {
        Ok(j) => j,
        Err(code) => return Ok(code),
    };
    let keeper =
        Keeper::new(Arc::clone(&settings), Some(journal)).context("building the HTTP clients")?;
    let listener = tokio::net::TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {}", settings.server.listen))?;
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        daemon::shutdown_signal().await;
        tracing::info!(
            event = "daemon.stopping",
            "signal received; finishing the refreshes in flight"
        );
        signal_stop.cancel();
    });
    daemon::run(keeper, settings.refresh.interval, listener, stop)
        .await
        .context("admin server")?;
    Ok(0)
}

async fn status(settings: Settings, format: Format) -> anyhow::Result<u8> {
    let keeper = Keeper::new(Arc::new(settings), None).context("building the HTTP clients")?;
    let report = match keeper.survey().await {
        Ok(r) => r,
        Err(e) => return Ok(cycle_exit(&e)),
    };
    match format {
        Format::Table => print!("{}", report::status_table(&report)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report::status_document(&report))?
        ),
    }
    Ok(0)
}

async fn check_cmd(settings: Settings, format: Format) -> anyhow::Result<u8> {
    let checklist = check::run(&settings, &ProcessEnv).await;
    match format {
        Format::Table => print!("{}", checklist.render()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&checklist)?),
    }
    Ok(u8::try_from(checklist.exit_code()).unwrap_or(EXIT_FAILURES))
}

async fn journal_list(settings: Settings, format: Format) -> anyhow::Result<u8> {
    let summaries = match Journal::open_read_only(&settings.state.dir) {
        Ok(Some(j)) => j.summaries()?,
        Ok(None) => Vec::new(),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_FAILURES);
        }
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&summaries)?),
        Format::Table => {
            if summaries.is_empty() {
                println!("the journal is empty: every token answer reached ServiceNow");
            } else {
                let now = jiff::Timestamp::now();
                let rows: Vec<Vec<String>> = summaries
                    .iter()
                    .map(|s| {
                        let age = sn_oauth_keeper::domain::time::parse_sn_datetime(&s.created_at)
                            .ok()
                            .flatten()
                            .map(|t| sn_oauth_keeper::domain::time::relative(now, t))
                            .unwrap_or_default();
                        vec![
                            s.id.clone(),
                            s.credential.clone(),
                            s.registry.clone(),
                            age,
                            s.attempts.to_string(),
                            if s.refresh_delivered { "yes" } else { "no" }.to_string(),
                            s.last_error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    report::table(
                        &[
                            "RECORD",
                            "CREDENTIAL",
                            "REGISTRY",
                            "JOURNALED",
                            "ATTEMPTS",
                            "REFRESH ROW WRITTEN",
                            "LAST ERROR"
                        ],
                        &rows
                    )
                );
            }
        }
    }
    Ok(0)
}

async fn demo(seed: u64) -> anyhow::Result<u8> {
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), Estate::demo(seed))
        .await
        .context("starting the simulator")?;
    let state_dir = std::env::temp_dir().join(format!(
        "sn-oauth-keeper-demo-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let key = JournalKey::random().map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let settings = Settings::local(
        &sim.base_url(),
        sim.username(),
        sim.password(),
        sim.companion_path(),
        state_dir.clone(),
        key.clone(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let result = demo_cycle(&sim, Arc::new(settings), &key).await;
    sim.shutdown();
    let _ = std::fs::remove_dir_all(&state_dir);
    result
}

async fn demo_cycle(
    sim: &Simulator,
    settings: Arc<Settings>,
    key: &JournalKey,
) -> anyhow::Result<u8> {
    let journal = Arc::new(Journal::open(&settings.state.dir, Some(key))?);
    let keeper =
        Keeper::new(Arc::clone(&settings), Some(journal)).context("building the HTTP clients")?;
    println!(
        "sn-oauth-keeper demo: a simulated ServiceNow instance at {}",
        sim.base_url()
    );
    println!(
        "(Table API, companion and three OAuth providers: Entra-like, rotating with reuse detection, non-rotating)\n"
    );
    let before = keeper.survey().await?;
    println!("BEFORE — what the keeper finds");
    print!("{}", report::plan_table(&before));
    print!("{}", report::summary_line(&before));
    sim.clear_requests();
    let stop = CancellationToken::new();
    let cycle = keeper.cycle(Mode::Apply, &stop).await?;
    let calls = sim.requests();
    println!("\nONE CYCLE — what the keeper did");
    print!("{}", report::outcome_table(&cycle));
    print!("{}", report::cycle_summary(&cycle));
    let count = |f: &dyn Fn(&Target) -> bool| calls.iter().filter(|r| f(&r.target)).count();
    let table_gets = calls
        .iter()
        .filter(|r| r.target == Target::TableApi && r.method == "GET")
        .count();
    let writes = calls
        .iter()
        .filter(|r| r.target == Target::TableApi && r.method != "GET")
        .count();
    println!(
        "calls: {} Table API reads, {} companion, {} token requests, {} writes",
        table_gets,
        count(&|t| *t == Target::Companion),
        count(&|t| matches!(t, Target::Provider(_))),
        writes
    );
    let after = keeper.survey().await?;
    println!("\nAFTER — the estate now");
    print!("{}", report::plan_table(&after));
    print!("{}", report::summary_line(&after));
    Ok(0)
}

async fn simulate(listen: SocketAddr, seed: u64) -> anyhow::Result<u8> {
    let sim = Simulator::start(listen, Estate::demo(seed))
        .await
        .with_context(|| format!("--listen: cannot listen on {listen}"))?;
    println!(
        "simulated ServiceNow instance listening on {}",
        sim.base_url()
    );
    println!(
        "integration user: {} (password: {})",
        sim.username(),
        sim.password()
    );
    println!(
        "companion: {}{}/secrets?sys_id=…",
        sim.base_url(),
        sim.companion_path()
    );
    println!(
        "\na config for it (export SN_PASSWORD={} SN_OAUTH_KEEPER_KEY=$(openssl rand -hex 32)):\n",
        sim.password()
    );
    println!(
        "[instance]\nurl = \"{}\"\nusername = \"{}\"\npassword_env = \"SN_PASSWORD\"\ncompanion_path = \"{}\"\n\n[state]\ndir = \"./keeper-state\"\nkey_env = \"SN_OAUTH_KEEPER_KEY\"\n",
        sim.base_url(),
        sim.username(),
        sim.companion_path()
    );
    println!("press Ctrl-C to stop");
    daemon::shutdown_signal().await;
    sim.shutdown();
    Ok(0)
}
