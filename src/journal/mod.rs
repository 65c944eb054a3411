//! The journal: a durable, encrypted record of every token answer until ServiceNow has
//! confirmed the write, plus what the keeper remembers between cycles.
//!
//! A rotated refresh token exists nowhere but in the keeper's hands until the instance confirms
//! the write, so it is committed here first (SQLite, WAL, `synchronous=FULL`: the commit is on
//! disk when it returns), and removed only after the write is verified. One process per state
//! directory: an exclusive lock on `journal.lock`.
//!
//! - [`outbox`]: the refresh transaction's journaled states ([`Intent`], [`Obtained`],
//!   [`Released`]) and the records behind them.
//! - [`seal`]: the journal key, how a record's tokens are encrypted under it, and the key's
//!   identity.
//! - [`history`]: outcomes per credential, parked registries, and what was said about
//!   registries' routes.

mod group;
pub mod history;
pub mod outbox;
pub mod seal;

pub use outbox::{AccessTemplate, Custody, Delivery, Intent, Obtained, Released, Rotated, Summary};
pub use outbox::{BadRecord, RecordCheck};
pub use seal::JournalKey;

use crate::clock::{SharedClock, SystemClock};
use group::GroupCommit;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use seal::Sealer;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The database file inside the state directory.
pub const DB_FILE: &str = "journal.sqlite3";
/// The lock file inside the state directory.
pub const LOCK_FILE: &str = "journal.lock";

/// A journal failure.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another keeper holds the state directory.
    #[error(
        "another sn-oauth-keeper is running with state directory {0} (its lock file is held); stop it first"
    )]
    Locked(PathBuf),
    /// A file system error.
    #[error("state directory {path}: {reason}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        reason: String,
    },
    /// An SQLite error.
    #[error("journal database: {0}")]
    Db(String),
    /// Records are pending and no key was given: refusing to continue (fail closed).
    #[error(
        "the journal holds {0} undelivered token answer(s) but no journal key was configured; set the key (state.key_env / state.key_file) — the records are never discarded"
    )]
    KeyMissing(usize),
    /// The journal was opened without a key, and an operation that seals or opens records
    /// was asked of it.
    #[error(
        "the journal was opened without a key (state.key_env / state.key_file): it cannot seal or open token answers"
    )]
    NoKey,
    /// A record was sealed with another key.
    #[error(
        "journal record {id} was sealed with key id {found}, the configured key has id {configured}; configure the key the record was written with"
    )]
    WrongKey {
        /// The record.
        id: String,
        /// Its key id.
        found: String,
        /// The configured key's id.
        configured: String,
    },
    /// A record does not open under its key (tampered or corrupted).
    #[error("journal record {0} does not decrypt (corrupted or tampered)")]
    Corrupt(String),
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        JournalError::Db(e.to_string())
    }
}

/// The journal of one state directory.
pub struct Journal {
    conn: Arc<Mutex<Connection>>,
    /// The writes waiting for their group's commit, and how the last group ended.
    writes: Arc<GroupCommit>,
    /// This journal's identity: random, made once with the journal, kept for its life.
    identity: String,
    sealer: Option<Arc<Sealer>>,
    dir: PathBuf,
    clock: SharedClock,
    // Held for the process lifetime: dropping it releases the lock.
    _lock: Option<File>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pending (
    id TEXT PRIMARY KEY,
    credential TEXT NOT NULL,
    registry TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    refresh_delivered INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    key_id TEXT NOT NULL,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL,
    refresh_mod_count INTEGER NOT NULL DEFAULT 0,
    created_access_row TEXT
);
CREATE INDEX IF NOT EXISTS pending_by_credential ON pending(credential);
CREATE TABLE IF NOT EXISTS intent (
    credential TEXT PRIMARY KEY,
    registry TEXT NOT NULL,
    started_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_park (
    registry TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    class TEXT NOT NULL,
    message TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS foreign_claim (
    credential TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    mod_count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS route_notice (
    registry TEXT NOT NULL,
    topic TEXT NOT NULL,
    said TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (registry, topic)
);
CREATE TABLE IF NOT EXISTS outcome (
    credential TEXT PRIMARY KEY,
    registry TEXT NOT NULL,
    class TEXT,
    message TEXT,
    at INTEGER NOT NULL,
    refresh_mod_count INTEGER NOT NULL,
    last_success INTEGER
);
";

fn io_err(path: &Path, e: impl fmt::Display) -> JournalError {
    JournalError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl Journal {
    /// Opens (creating if needed) the journal of `dir` for writing, taking the directory's lock.
    /// Without a key it opens only if nothing is pending.
    pub fn open(dir: &Path, key: Option<&JournalKey>) -> Result<Journal, JournalError> {
        create_private_dir(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path, e)),
        }
        let db_path = dir.join(DB_FILE);
        create_private_file(&db_path)?;
        let conn = Connection::open(&db_path)?;
        // Wait for a reader (a concurrent `status`) rather than fail with "database is locked".
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(JournalError::Db(format!(
                "journal_mode is {mode}, expected wal"
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL;")?;
        let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        if sync != 2 {
            return Err(JournalError::Db(format!(
                "synchronous is {sync}, expected FULL (2)"
            )));
        }
        // Overwritten pages are zeroed, so a rekey or a released record leaves no readable
        // ciphertext behind in the file's free pages.
        conn.execute_batch("PRAGMA secure_delete=ON;")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let identity = journal_identity(&conn)?;
        let journal = Journal {
            conn: Arc::new(Mutex::new(conn)),
            writes: Arc::new(GroupCommit::new()),
            identity,
            sealer: key.map(Sealer::new).transpose()?.map(Arc::new),
            dir: dir.to_path_buf(),
            clock: SystemClock::shared(),
            _lock: Some(lock),
        };
        if journal.sealer.is_none() {
            let n = journal.pending_count()?;
            if n > 0 {
                return Err(JournalError::KeyMissing(n));
            }
        }
        Ok(journal)
    }

    /// Opens an existing journal read-only, without the lock (for `status` and `journal list`
    /// while a daemon runs). `None` when the directory holds no journal yet.
    pub fn open_read_only(dir: &Path) -> Result<Option<Journal>, JournalError> {
        let db_path = dir.join(DB_FILE);
        if !db_path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &db_path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA busy_timeout=5000;")?;
        // A journal written before identities existed has none yet; its first writable open
        // gives it one.
        let identity = conn
            .query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| {
                r.get(0)
            })
            .unwrap_or_default();
        Ok(Some(Journal {
            conn: Arc::new(Mutex::new(conn)),
            writes: Arc::new(GroupCommit::new()),
            identity,
            sealer: None,
            dir: dir.to_path_buf(),
            clock: SystemClock::shared(),
            _lock: None,
        }))
    }

    /// The journal, with its timestamps taken from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Journal {
        self.clock = clock;
        self
    }

    /// The journal's identity: made once, with the journal, and kept for its life. With the
    /// host name it makes the keeper's holder id of the instance-wide lease, which must not
    /// change with the process.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id of the configured key, if any.
    pub fn key_id(&self) -> Option<&str> {
        self.sealer.as_deref().map(Sealer::key_id)
    }

    /// An HMAC-SHA256 of `data` under the journal key, hex; `None` without a key.
    pub fn keyed_digest(&self, data: &[u8]) -> Option<String> {
        self.sealer.as_deref().map(|s| s.keyed_digest(data))
    }

    fn sealer(&self) -> Result<Arc<Sealer>, JournalError> {
        self.sealer.clone().ok_or(JournalError::NoKey)
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let guard = self
            .conn
            .lock()
            .map_err(|_| JournalError::Db("journal connection poisoned by a panic".into()))?;
        f(&guard)
    }

    /// A write, off the async runtime's worker threads, committed with whatever other writes
    /// are queued at the same moment (see [`group`]): `f` runs in its own savepoint — all its
    /// statements land or none does — and this returns `Ok` only once the commit that holds
    /// them is on disk. How each group ends is remembered for `/readyz` (a real write, not a
    /// probe that writes nothing).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        self.writes.write(&self.conn, &self.clock, f).await
    }

    /// The outcome of the last real write; `None` before the first.
    pub fn last_write(&self) -> Option<WriteOutcome> {
        self.writes.last()
    }

    /// A real, fsynced write that changes nothing but its own timestamp: once per cycle, so
    /// `/readyz` learns of a full disk or a failing device even when no token moved.
    pub async fn heartbeat(&self) -> Result<(), JournalError> {
        let now = self.clock.now().as_second();
        self.write(move |c| {
            c.execute(
                "INSERT INTO heartbeat (id, at) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET at = ?1",
                rusqlite::params![now],
            )?;
            Ok(())
        })
        .await
    }
}

/// How the journal's last real write went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// When it was attempted.
    pub at: jiff::Timestamp,
    /// Why it failed; `None` when it reached the disk.
    pub error: Option<String>,
}

/// The journal's identity, made on its first writable open.
fn journal_identity(conn: &Connection) -> Result<String, JournalError> {
    let existing: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(identity) = existing {
        return Ok(identity);
    }
    let identity =
        outbox::random_id().map_err(|e| JournalError::Db(format!("no randomness: {e}")))?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('identity', ?1)",
        rusqlite::params![identity],
    )?;
    Ok(identity)
}

/// Brings a journal written by an earlier version up to this schema, without touching its
/// records.
fn migrate(conn: &Connection) -> Result<(), JournalError> {
    let has_column = conn
        .prepare("SELECT 1 FROM pragma_table_info('pending') WHERE name = 'created_access_row'")?
        .exists([])?;
    if !has_column {
        conn.execute_batch("ALTER TABLE pending ADD COLUMN created_access_row TEXT;")?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), JournalError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| io_err(dir, e))
}

/// Creates the database file 0600 before SQLite opens it; SQLite gives its WAL and shared-memory
/// files the same permissions.
fn create_private_file(path: &Path) -> Result<(), JournalError> {
    if path.exists() {
        return Ok(());
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}
