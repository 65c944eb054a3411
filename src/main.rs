//! The command-line edge: parses arguments, loads config, maps every outcome to an exit code.
//!
//! Exit codes of `once` and `check`: 0 all due credentials refreshed (or none due); 1 at least
//! one could not be refreshed or written; 2 bad config or usage; 3 the instance is unreachable
//! or refuses the service account.

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use sn_oauth_keeper::clock::{Clock, SystemClock};
use sn_oauth_keeper::config::{self, ConfigError, ProcessEnv, Settings};
use sn_oauth_keeper::domain::guidance;
use sn_oauth_keeper::engine::{CycleError, Keeper, Mode};
use sn_oauth_keeper::journal::{Journal, JournalError};
use sn_oauth_keeper::observe::Observer;
use sn_oauth_keeper::progress::Terminal;
use sn_oauth_keeper::servicenow::scratch::SCRATCH_REGISTRY;
use sn_oauth_keeper::servicenow::transcript::Recorder;
use sn_oauth_keeper::telemetry::{self, LogFormat, LogLevel};
use sn_oauth_keeper::{check, daemon, report};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
// `demo` and `simulate` (feature `sim`, on by default; a production build leaves it out).
#[cfg(feature = "sim")]
use {
    sn_oauth_keeper::journal::JournalKey,
    sn_oauth_keeper_sim::{Estate, Simulator, Target},
    std::net::SocketAddr,
};

const EXIT_FAILURES: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_INSTANCE: u8 = 3;

/// The `demo` line of `--help`'s examples, in builds that have the command.
#[cfg(feature = "sim")]
macro_rules! demo_example {
    () => {
        "  sn-oauth-keeper demo                          see it work against the built-in simulator\n"
    };
}
#[cfg(not(feature = "sim"))]
macro_rules! demo_example {
    () => {
        ""
    };
}

/// What `--help` teaches after the options: examples, exit codes, environment, files.
const LONG_HELP: &str = concat!(
    "Examples:\n",
    demo_example!(),
    "  sn-oauth-keeper check --config keeper.toml    pre-flight: instance, rights, companion, key
  sn-oauth-keeper once --dry-run                what would be refreshed, and why (no change)
  sn-oauth-keeper once                          one refresh cycle, then exit (cron, CI)
  sn-oauth-keeper run                           the daemon (systemd, Docker, Kubernetes)
  sn-oauth-keeper status --format json | jq '.credentials[] | select(.due)'
  sn-oauth-keeper journal list                  token answers not yet confirmed by ServiceNow
  sn-oauth-keeper completions bash > /etc/bash_completion.d/sn-oauth-keeper
  sn-oauth-keeper man > /usr/local/share/man/man1/sn-oauth-keeper.1

Exit codes:
  0  every due credential was refreshed (or none was due); check: nothing failed;
     run: stopped cleanly on SIGTERM/SIGINT
  1  at least one credential could not be refreshed or written; check: a step failed;
     run: the shutdown grace period ran out with refreshes in flight
  2  bad config or usage
  3  the instance is unreachable or refuses the service account

Environment:
  SN_OAUTH_KEEPER_CONFIG      the config file when --config is not given
  SN_OAUTH_KEEPER_LOG_LEVEL   error, warn, info (default), debug or trace
  SN_OAUTH_KEEPER_KEY         the journal key, unless state.key_env/state.key_file say otherwise
  NO_COLOR                    never colour tables, even on a terminal
  Secrets (password, client secrets, journal key) come from the variables or files the config
  names, never from the command line. Paths in the config may use ${VAR}, e.g.
  ${CREDENTIALS_DIRECTORY}/sn_password under systemd.

Signals (run):
  SIGTERM, SIGINT  finish the refreshes in flight (refresh.shutdown_grace), then exit 0;
                   a second one exits at once
  SIGHUP           read the config again; an invalid one is rejected, the running one stays

Logs go to stderr (JSON unless stdout is a terminal); tables and JSON reports to stdout."
);

/// The description of a build without `demo`: the doc comment of [`Cli`] less its last sentence.
#[cfg(not(feature = "sim"))]
const LONG_ABOUT_WITHOUT_DEMO: &str = "Keeps the OAuth credentials of a ServiceNow instance alive.

Reads oauth_credential through the Table API, refreshes the refresh-token credentials whose access
token is missing, expired or expiring soon (or idle too long) at the provider's token endpoint, and
writes the new access token and any rotated refresh token back.";

/// Keeps the OAuth credentials of a ServiceNow instance alive.
///
/// Reads oauth_credential through the Table API, refreshes the refresh-token credentials whose
/// access token is missing, expired or expiring soon (or idle too long) at the provider's token
/// endpoint, and writes the new access token and any rotated refresh token back. Start with
/// `sn-oauth-keeper demo`, which needs nothing but this binary.
#[derive(Debug, Parser)]
#[command(
    name = "sn-oauth-keeper",
    version,
    propagate_version = true,
    after_help = "Run with --help for examples, exit codes, environment variables and signals.",
    after_long_help = LONG_HELP
)]
#[cfg_attr(not(feature = "sim"), command(long_about = LONG_ABOUT_WITHOUT_DEMO))]
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
    #[cfg(feature = "sim")]
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
        /// Record what the instance answered into this new or empty folder, every secret,
        /// user name and the instance's host replaced by placeholders (safe for a bug report).
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
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
        /// Record what the instance answered into this new or empty folder, every secret,
        /// user name and the instance's host replaced by placeholders (safe for a bug report).
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
        /// Prove the whole write path on a scratch credential of the keeper's own (created,
        /// read back, verified through the companion, deleted). Run it before the first refresh.
        #[arg(long)]
        round_trip: bool,
        /// The registry scratch rows go under (one that is never refreshed).
        #[arg(long, value_name = "NAME", requires = "round_trip", default_value = SCRATCH_REGISTRY)]
        round_trip_registry: String,
    },
    /// Run the simulator alone (a ServiceNow instance with companion and OAuth providers).
    #[cfg(feature = "sim")]
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
    /// The instance's keeper lease: who holds it, and the claims of keepers gone for good.
    Lease {
        #[command(subcommand)]
        action: LeaseCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: `sn-oauth-keeper man | man -l -`.
    Man,
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// What is pending: ids, registry, age, attempts — never a token.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Re-seal every pending record under a new key (stop the daemon first). The current key
    /// comes from the config; the new one from an environment variable or a file — never from
    /// the command line. Afterwards, point state.key_env / state.key_file at the new key. The
    /// same key again re-seals records of an older format in the current one.
    Rekey {
        /// Environment variable holding the new key (64 hex characters or base64 of 32 bytes).
        #[arg(
            long,
            value_name = "VAR",
            conflicts_with = "new_key_file",
            required_unless_present = "new_key_file"
        )]
        new_key_env: Option<String>,
        /// File holding the new key.
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum LeaseCommand {
    /// Drop every claim of a keeper whose journal is lost for good, so the credentials it
    /// claimed are refreshed again. Never for a keeper that may come back: its journal may
    /// hold the only valid refresh tokens of those credentials.
    DropClaims {
        /// The gone keeper's holder id (as `status` and the logs name it).
        #[arg(long, value_name = "ID")]
        holder: String,
        /// Do not ask for confirmation (scripts).
        #[arg(long)]
        yes: bool,
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
        #[cfg(feature = "sim")]
        Command::Demo { .. } => LogLevel::Error,
        _ => LogLevel::Info,
    };
    // Generated from the CLI definition itself; they need neither logs nor a runtime.
    match cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(
                shell,
                &mut command,
                "sn-oauth-keeper",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the man page: {e}");
                    ExitCode::from(EXIT_FAILURES)
                }
            };
        }
        _ => {}
    }
    // Logs and the progress bar share stderr through one writer, so neither garbles the other.
    let terminal = Terminal::stderr();
    telemetry::init(
        cli.log_format.unwrap_or_else(LogFormat::detect),
        cli.log_level.unwrap_or(default_level),
        terminal.clone(),
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
    match runtime.block_on(dispatch(cli, terminal)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURES)
        }
    }
}

async fn dispatch(cli: Cli, terminal: Terminal) -> anyhow::Result<u8> {
    match cli.command {
        #[cfg(feature = "sim")]
        Command::Demo { seed } => demo(seed, terminal).await,
        #[cfg(feature = "sim")]
        Command::Simulate { listen, seed } => simulate(listen, seed).await,
        Command::Once { dry_run, record } => {
            with_settings(cli.config, |s| once(s, dry_run, record, terminal)).await
        }
        // Handled in `main`, before logging starts.
        Command::Completions { .. } | Command::Man => Ok(0),
        Command::Run => {
            let path = cli.config.clone();
            with_settings(cli.config, |s| run(s, path)).await
        }
        Command::Status { format } => with_settings(cli.config, |s| status(s, format)).await,
        Command::Check {
            format,
            record,
            round_trip,
            round_trip_registry,
        } => {
            let round_trip = round_trip.then_some(round_trip_registry);
            with_settings(cli.config, |s| check_cmd(s, format, record, round_trip)).await
        }
        Command::Lease {
            action: LeaseCommand::DropClaims { holder, yes },
        } => with_settings(cli.config, |s| lease_drop_claims(s, holder, yes)).await,
        Command::Journal {
            action: JournalCommand::List { format },
        } => with_settings(cli.config, |s| journal_list(s, format)).await,
        Command::Journal {
            action:
                JournalCommand::Rekey {
                    new_key_env,
                    new_key_file,
                },
        } => {
            let source = match (new_key_env, new_key_file) {
                (Some(var), _) => config::KeySource::Env(var),
                (None, Some(path)) => config::KeySource::File(path),
                (None, None) => return Ok(EXIT_CONFIG),
            };
            with_settings(cli.config, |s| journal_rekey(s, source)).await
        }
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
            // One line per problem, each on its own `error:` line.
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
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

/// Starts the recording `--record DIR` asks for; a folder that cannot hold it is bad usage.
fn recorder(settings: &Settings, dir: Option<PathBuf>) -> Result<Option<Arc<Recorder>>, u8> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    match Recorder::create(
        &dir,
        &settings.instance.url,
        &settings.instance.username,
        &settings.instance.secrets(),
    ) {
        Ok(r) => Ok(Some(Arc::new(r))),
        Err(e) => {
            eprintln!("error: {e}");
            Err(EXIT_CONFIG)
        }
    }
}

async fn once(
    settings: Settings,
    dry_run: bool,
    record: Option<PathBuf>,
    terminal: Terminal,
) -> anyhow::Result<u8> {
    let recorder = match recorder(&settings, record) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let settings = Arc::new(settings);
    let journal = if dry_run {
        None
    } else {
        match open_journal(&settings) {
            Ok(j) => Some(j),
            Err(code) => return Ok(code),
        }
    };
    let mut keeper = Keeper::new(Arc::clone(&settings), journal)
        .context("building the HTTP clients")?
        .with_observer(Observer::new(Arc::new(terminal)));
    if let Some(recorder) = recorder {
        keeper = keeper.with_recorder(recorder);
    }
    let mode = if dry_run { Mode::DryRun } else { Mode::Apply };
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        daemon::shutdown_signal().await;
        signal_stop.cancel();
    });
    let cycle = keeper.cycle(mode, &stop).await;
    // Why the lease was not this keeper's, if it was not: said after the report.
    let refusal = keeper.lease().and_then(|lease| lease.refusal());
    if let Some(lease) = keeper.lease() {
        // So that `once` after `once` (or a daemon's standby) never waits for it to lapse.
        lease.release().await;
    }
    let report = match cycle {
        Ok(r) => r,
        Err(e) => return Ok(cycle_exit(&e)),
    };
    if dry_run {
        print!("{}", report::dry_run_table(&report));
    } else {
        print!("{}", report::acted_table(&report));
        print!("{}", report::cycle_summary(&report));
    }
    if let Some(reason) = refusal {
        let reason = reason.trim_end_matches('.');
        eprintln!("error: {reason}; without the lease this keeper starts no token request");
        return Ok(EXIT_FAILURES);
    }
    Ok(if report.failures() > 0 {
        EXIT_FAILURES
    } else {
        0
    })
}

async fn run(settings: Settings, path: Option<PathBuf>) -> anyhow::Result<u8> {
    let settings = Arc::new(settings);
    let journal = match open_journal(&settings) {
        Ok(j) => j,
        Err(code) => return Ok(code),
    };
    let listener = tokio::net::TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {}", settings.server.listen))?;
    // Installed before the first cycle, so a signal never falls back to the default action.
    let control = daemon::Control::from_signals().context("installing the signal handlers")?;
    let reloader: daemon::Reloader = Box::new(move || match &path {
        Some(p) => config::load(p, &ProcessEnv),
        None => Err(ConfigError::NoConfigFile),
    });
    let stopped = daemon::Daemon::new(settings, journal, reloader)
        .run(listener, control)
        .await?;
    Ok(match stopped {
        daemon::Stopped::Clean => 0,
        daemon::Stopped::Abandoned => EXIT_FAILURES,
    })
}

async fn status(settings: Settings, format: Format) -> anyhow::Result<u8> {
    let keeper = Keeper::new(Arc::new(settings), None).context("building the HTTP clients")?;
    let report = match keeper.survey().await {
        Ok(r) => r,
        Err(e) => return Ok(cycle_exit(&e)),
    };
    match format {
        Format::Table => print!(
            "{}",
            report::status_table_painted(&report, report::colour_stdout())
        ),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report::status_document(&report))?
        ),
    }
    Ok(0)
}

async fn check_cmd(
    settings: Settings,
    format: Format,
    record: Option<PathBuf>,
    round_trip: Option<String>,
) -> anyhow::Result<u8> {
    let recorder = match recorder(&settings, record) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let checklist = check::run_with(
        &settings,
        &ProcessEnv,
        &check::CheckOptions {
            recorder,
            round_trip,
        },
    )
    .await;
    match format {
        Format::Table => print!("{}", checklist.render()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&checklist)?),
    }
    Ok(u8::try_from(checklist.exit_code()).unwrap_or(EXIT_FAILURES))
}

async fn journal_list(settings: Settings, format: Format) -> anyhow::Result<u8> {
    let journal = match Journal::open_read_only(&settings.state.dir) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_FAILURES);
        }
    };
    let key = settings
        .state
        .key
        .resolve(&settings.source, &ProcessEnv)
        .ok();
    let mut listed = Vec::new();
    if let Some(journal) = &journal {
        match key.map(|k| journal.records_open_with(&k)) {
            Some(checked) => {
                for record in checked? {
                    listed.push(report::JournalEntry {
                        summary: record.summary,
                        opens: Some(record.opens.is_ok()),
                        problem: record.opens.err().map(|e| e.to_string()),
                    });
                }
            }
            None => {
                for summary in journal.summaries()? {
                    listed.push(report::JournalEntry {
                        summary,
                        opens: None,
                        problem: None,
                    });
                }
            }
        }
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&listed)?),
        Format::Table => print!("{}", report::journal_table(&listed, SystemClock.now())),
    }
    Ok(0)
}

async fn lease_drop_claims(settings: Settings, holder: String, yes: bool) -> anyhow::Result<u8> {
    let keeper = Keeper::new(Arc::new(settings), None).context("building the HTTP clients")?;
    let instance = keeper.instance();
    let view = match instance.read_lease().await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: cannot read the lease: {e}");
            return Ok(if e.instance_unusable() {
                EXIT_INSTANCE
            } else {
                EXIT_FAILURES
            });
        }
    };
    let claimed: Vec<String> = view
        .claims
        .iter()
        .filter(|c| c.holder == holder)
        .map(|c| c.sys_id.clone())
        .collect();
    if claimed.is_empty() {
        println!("keeper {holder} claims no credential: nothing to drop");
        return Ok(0);
    }
    if view.holder.as_deref() == Some(holder.as_str()) {
        let refusal = guidance::drop_claims_of_live_holder(&holder, view.expires_in);
        eprintln!("error: {refusal}");
        return Ok(EXIT_FAILURES);
    }
    eprintln!("warning: {}", guidance::dropping_claims(&holder, &claimed));
    eprintln!("warning: {}", guidance::drop_claims_risk(&holder));
    if !yes {
        use std::io::{BufRead, IsTerminal};
        if !std::io::stdin().is_terminal() {
            eprintln!("error: not a terminal: pass --yes to drop the claims without asking");
            return Ok(EXIT_CONFIG);
        }
        eprint!("type the holder id to drop its claims: ");
        let mut typed = String::new();
        std::io::stdin().lock().read_line(&mut typed)?;
        if typed.trim() != holder {
            eprintln!("error: not confirmed: nothing was dropped");
            return Ok(EXIT_FAILURES);
        }
    }
    if let Err(e) = instance.drop_claims(&holder, &claimed).await {
        eprintln!("error: dropping the claims failed: {e}");
        return Ok(EXIT_FAILURES);
    }
    tracing::warn!(event = "lease.claims_dropped", other = %holder, credentials = %claimed.join(","), "an operator dropped another keeper's claims");
    println!(
        "dropped keeper {holder}'s claims on {} credential(s)",
        claimed.len()
    );
    Ok(0)
}

async fn journal_rekey(settings: Settings, new_key: config::KeySource) -> anyhow::Result<u8> {
    let new_key = match new_key.resolve("--new-key-env/--new-key-file", &ProcessEnv) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_CONFIG);
        }
    };
    let journal = match open_journal(&settings) {
        Ok(j) => j,
        Err(code) => return Ok(code),
    };
    let count = journal.rekey(&new_key).context("re-sealing the journal")?;
    let reopened = Journal::open_read_only(&settings.state.dir)?;
    let key_id = reopened
        .as_ref()
        .and_then(|j| j.summaries().ok())
        .and_then(|s| s.first().map(|r| r.key_id.clone()))
        .unwrap_or_else(|| "(no records)".to_string());
    println!(
        "re-sealed {count} pending record(s) under the new key (key id {key_id}); now point state.key_env or state.key_file at the new key"
    );
    Ok(0)
}

#[cfg(feature = "sim")]
async fn demo(seed: u64, terminal: Terminal) -> anyhow::Result<u8> {
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
    let result = demo_cycle(&sim, Arc::new(settings), &key, terminal).await;
    sim.shutdown();
    let _ = std::fs::remove_dir_all(&state_dir);
    result
}

#[cfg(feature = "sim")]
async fn demo_cycle(
    sim: &Simulator,
    settings: Arc<Settings>,
    key: &JournalKey,
    terminal: Terminal,
) -> anyhow::Result<u8> {
    let journal = Arc::new(Journal::open(&settings.state.dir, Some(key))?);
    let keeper = Keeper::new(Arc::clone(&settings), Some(journal))
        .context("building the HTTP clients")?
        .with_observer(Observer::new(Arc::new(terminal)));
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

#[cfg(feature = "sim")]
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
