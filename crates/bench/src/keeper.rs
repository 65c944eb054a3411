//! Everything the benchmark asks of the keeper's library, in one small module: the keeper's API
//! is being reshaped (its constructor is to take a clock, for one), and such a change should
//! touch this file alone.
//!
//! The keeper is built as `sn-oauth-keeper once` and `run` build it, from a config file with
//! its secrets in the environment and JSON logs on stderr, and no other way.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sn_oauth_keeper::config::{self, ProcessEnv};
use sn_oauth_keeper::domain::report::{Outcome, OutcomeKind};
use sn_oauth_keeper::engine::{Keeper, Mode};
use sn_oauth_keeper::journal::Journal;
use sn_oauth_keeper::journal::JournalKey;
use sn_oauth_keeper::telemetry::{self, LogFormat, LogLevel};
use tokio_util::sync::CancellationToken;

/// Rows per discovery page when the config does not say (`instance.page_size`): the runs keep
/// the keeper's default settings, and the floor counts pages at this size.
pub(crate) const DEFAULT_PAGE_SIZE: usize =
    sn_oauth_keeper::config::InstanceSettings::DEFAULT_PAGE_SIZE;

/// The keeper could not be built, or a cycle of it failed as a whole.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {reason}")]
pub(crate) struct KeeperError {
    /// What was being done.
    step: &'static str,
    /// The keeper's error, as it words it (never a secret).
    reason: String,
}

impl KeeperError {
    fn at(step: &'static str, error: impl std::fmt::Display) -> KeeperError {
        KeeperError {
            step,
            reason: error.to_string(),
        }
    }
}

/// A duration in the keeper's config syntax (`50ms`, `2s`, …), for the latency flags.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    sn_oauth_keeper::domain::time::parse_duration(text).map_err(|e| e.to_string())
}

/// A fresh random journal key, as the keeper reads it from its environment (64 hex digits).
pub(crate) fn new_journal_key_hex() -> Result<String, KeeperError> {
    let key = JournalKey::random().map_err(|e| KeeperError::at("generating a journal key", e))?;
    Ok(key.bytes().iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    }))
}

/// What one cycle did, as the benchmark counts it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CycleCount {
    /// Credentials the cycle acted on (refreshed, failed, blocked, …).
    pub(crate) acted: usize,
    /// Credentials refreshed.
    pub(crate) refreshed: usize,
    /// Credentials that failed or are blocked.
    pub(crate) failures: usize,
}

/// A keeper with its journal open, ready to run apply cycles.
pub(crate) struct Engine {
    keeper: Keeper,
    /// Never cancelled: a benchmark cycle runs to its end.
    stop: CancellationToken,
}

impl Engine {
    /// Logs as the keeper binary does when stdout is not a terminal (JSON lines on stderr, level
    /// `info`), reads `config` with its secrets from the environment, and opens the journal.
    pub(crate) fn open(config_file: &Path) -> Result<Engine, KeeperError> {
        telemetry::init(LogFormat::Json, LogLevel::Info, std::io::stderr);
        let settings = config::load(config_file, &ProcessEnv)
            .map_err(|e| KeeperError::at("reading the config", e))?;
        let key = settings
            .state
            .key
            .resolve(&settings.source, &ProcessEnv)
            .map_err(|e| KeeperError::at("reading the journal key", e))?;
        let journal = Journal::open(&settings.state.dir, Some(&key))
            .map_err(|e| KeeperError::at("opening the journal", e))?;
        let keeper = Keeper::new(Arc::new(settings), Some(Arc::new(journal)))
            .map_err(|e| KeeperError::at("building the keeper", e))?;
        Ok(Engine {
            keeper,
            stop: CancellationToken::new(),
        })
    }

    /// Releases the instance's lease, as `once` does when it exits.
    pub(crate) async fn release_lease(&self) {
        if let Some(lease) = self.keeper.lease() {
            lease.release().await;
        }
    }

    /// One apply cycle: discover, re-deliver, plan, refresh, write back.
    pub(crate) async fn cycle(&self) -> Result<CycleCount, KeeperError> {
        let report = self
            .keeper
            .cycle(Mode::Apply, &self.stop)
            .await
            .map_err(|e| KeeperError::at("running a cycle", e))?;
        Ok(CycleCount {
            acted: report
                .credentials
                .iter()
                .filter(|c| c.outcome != Outcome::Skipped)
                .count(),
            refreshed: report.count(OutcomeKind::Refreshed),
            failures: report.failures(),
        })
    }
}
