//! The journal: a durable, encrypted record of every token answer until ServiceNow has
//! confirmed the write, plus the per-credential outcome store that `status` reads.
//!
//! A rotated refresh token exists nowhere but in the keeper's hands until the instance confirms
//! the write, so it is committed here first (SQLite, WAL, `synchronous=FULL`: the commit is on
//! disk when `record` returns), and removed only after the write is confirmed. Each record is
//! sealed with XChaCha20-Poly1305 under the configured key, with the record id and credential as
//! associated data so a sealed record cannot be moved to another row. One process per state
//! directory: an exclusive lock on `journal.lock`.

use crate::config::JournalKey;
use crate::domain::classify::FailureClass;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

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

/// The fields a newly created access-token row gets, copied from the refresh row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTemplate {
    /// `oauth_requestor_profile`.
    pub requestor_profile: String,
    /// `peer`.
    pub peer: String,
    /// `user`.
    pub user: String,
    /// `scopes`.
    pub scopes: String,
    /// `name`.
    pub name: String,
}

/// A token answer on its way to ServiceNow.
pub struct Delivery {
    /// The refresh row's sys_id.
    pub credential: String,
    /// The registry's name (for `journal list` and logs).
    pub registry: String,
    /// The new access token.
    pub access_token: SecretString,
    /// The rotated refresh token, if the provider rotated it.
    pub refresh_token: Option<SecretString>,
    /// The refresh token the request used: the race check compares it with what the row holds
    /// before overwriting a row someone else wrote meanwhile.
    pub previous_refresh_token: Option<SecretString>,
    /// When the access token expires.
    pub access_expires: Timestamp,
    /// When the rotated refresh token expires.
    pub refresh_expires: Option<Timestamp>,
    /// The access row to PATCH; `None` means create one.
    pub access_row: Option<String>,
    /// What a created access row carries.
    pub template: AccessTemplate,
    /// The refresh row's `sys_mod_count` when it was refreshed: the race check compares it with
    /// the row's count right before overwriting it.
    pub refresh_mod_count: u64,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("credential", &self.credential)
            .field("registry", &self.registry)
            .field("rotated", &self.refresh_token.is_some())
            .field("access_row", &self.access_row)
            .finish_non_exhaustive()
    }
}

/// The sealed part of a record. Only this one type ever serializes token values.
#[derive(Serialize, Deserialize)]
struct Sealed {
    access_token: String,
    refresh_token: Option<String>,
    #[serde(default)]
    previous_refresh_token: Option<String>,
    access_expires: i64,
    refresh_expires: Option<i64>,
    access_row: Option<String>,
    template: AccessTemplate,
}

/// A pending record, decrypted.
#[derive(Debug)]
pub struct Pending {
    /// Record id.
    pub id: String,
    /// What to deliver.
    pub delivery: Delivery,
    /// Whether the refresh row already holds the rotated token.
    pub refresh_delivered: bool,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When the answer was journaled.
    pub created_at: Timestamp,
}

/// What `journal list` shows: never a token.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Record id.
    pub id: String,
    /// The refresh row's sys_id.
    pub credential: String,
    /// The registry's name.
    pub registry: String,
    /// When the answer was journaled (UTC).
    pub created_at: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Whether the refresh row already holds the rotated token.
    pub refresh_delivered: bool,
    /// The last delivery error.
    pub last_error: Option<String>,
    /// The key the record is sealed with.
    pub key_id: String,
}

/// The last outcome of a credential, as `status` and the planner read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutcome {
    /// The class of the last failure; `None` after a success.
    pub class: Option<FailureClass>,
    /// The last failure's message, for `status`.
    pub message: Option<String>,
    /// When it was recorded.
    pub at: Timestamp,
    /// The refresh row's `sys_mod_count` at that time.
    pub refresh_mod_count: u64,
    /// When the keeper last refreshed it successfully.
    pub last_success: Option<Timestamp>,
}

/// One credential's outcome, to be stored with [`Journal::record_outcomes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// The refresh row's sys_id.
    pub credential: String,
    /// The registry's name.
    pub registry: String,
    /// The failure class; `None` is a success.
    pub class: Option<FailureClass>,
    /// The failure's message.
    pub message: Option<String>,
    /// The refresh row's `sys_mod_count` at that time.
    pub refresh_mod_count: u64,
}

/// A registry parked after a configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryPark {
    /// The registry's sys_id.
    pub registry: String,
    /// Its name.
    pub name: String,
    /// The class of the failure (configuration).
    pub class: FailureClass,
    /// What failed and what to do.
    pub message: String,
    /// The configuration that failed: when it changes, the registry is tried again.
    pub fingerprint: String,
    /// When it was parked.
    pub at: Timestamp,
}

struct Sealer {
    aead: XChaCha20Poly1305,
    key_id: String,
    /// For digests of configuration secrets (a parked registry's fingerprint): keyed, so a
    /// digest on disk reveals nothing about a low-entropy secret without the key.
    digest_key: aws_lc_rs::hmac::Key,
}

impl Sealer {
    fn new(key: &JournalKey) -> Sealer {
        let aead = XChaCha20Poly1305::new(key.bytes().into());
        // A key id that identifies the key without revealing it: the tag of an empty message
        // under a fixed nonce.
        let tag = aead
            .encrypt(
                &XNonce::default(),
                Payload {
                    msg: b"",
                    aad: b"sn-oauth-keeper key id",
                },
            )
            .unwrap_or_default();
        let key_id = tag.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let digest_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.bytes());
        Sealer {
            aead,
            key_id,
            digest_key,
        }
    }

    /// Seals a delivery for record `id`: a fresh random nonce and the ciphertext, bound to the
    /// record and its credential. The one place token values are serialized.
    fn seal(&self, id: &str, delivery: &Delivery) -> Result<([u8; 24], Vec<u8>), JournalError> {
        let exposed = |t: &Option<SecretString>| t.as_ref().map(|t| t.expose_secret().to_string());
        let sealed = Sealed {
            access_token: delivery.access_token.expose_secret().to_string(),
            refresh_token: exposed(&delivery.refresh_token),
            previous_refresh_token: exposed(&delivery.previous_refresh_token),
            access_expires: delivery.access_expires.as_second(),
            refresh_expires: delivery.refresh_expires.map(|t| t.as_second()),
            access_row: delivery.access_row.clone(),
            template: delivery.template.clone(),
        };
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&sealed).map_err(|e| JournalError::Db(e.to_string()))?,
        );
        drop(Zeroizing::new(sealed.access_token));
        drop(sealed.refresh_token.map(Zeroizing::new));
        drop(sealed.previous_refresh_token.map(Zeroizing::new));
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| JournalError::Db(format!("no randomness: {e}")))?;
        let aad = Sealer::aad(id, &delivery.credential);
        let ciphertext = self
            .aead
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext.as_slice(),
                    aad: &aad,
                },
            )
            .map_err(|_| JournalError::Db("sealing failed".into()))?;
        Ok((nonce, ciphertext))
    }

    fn aad(id: &str, credential: &str) -> Vec<u8> {
        format!("sn-oauth-keeper/journal/v1/{id}/{credential}").into_bytes()
    }
}

/// The journal of one state directory.
pub struct Journal {
    conn: Arc<Mutex<Connection>>,
    sealer: Option<Arc<Sealer>>,
    dir: PathBuf,
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
    refresh_mod_count INTEGER NOT NULL DEFAULT 0
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

/// Stores a credential's outcome; a success (`?7`) also moves `last_success`.
const OUTCOME_UPSERT: &str = "INSERT INTO outcome (credential, registry, class, message, at, refresh_mod_count, last_success)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN ?7 THEN ?5 ELSE NULL END)
     ON CONFLICT(credential) DO UPDATE SET registry = ?2, class = ?3, message = ?4, at = ?5,
       refresh_mod_count = ?6, last_success = CASE WHEN ?7 THEN ?5 ELSE last_success END";

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
        conn.execute_batch(SCHEMA)?;
        let journal = Journal {
            conn: Arc::new(Mutex::new(conn)),
            sealer: key.map(|k| Arc::new(Sealer::new(k))),
            dir: dir.to_path_buf(),
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
        Ok(Some(Journal {
            conn: Arc::new(Mutex::new(conn)),
            sealer: None,
            dir: dir.to_path_buf(),
            _lock: None,
        }))
    }

    /// The id of the configured key, if any.
    pub fn key_id(&self) -> Option<&str> {
        self.sealer.as_deref().map(|s| s.key_id.as_str())
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

    /// Runs a blocking journal operation off the async runtime's worker threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| JournalError::Db("journal connection poisoned by a panic".into()))?;
            f(&guard)
        })
        .await
        .map_err(|e| JournalError::Db(format!("journal task failed: {e}")))?
    }

    /// An HMAC-SHA256 of `data` under the journal key, hex; `None` without a key.
    pub fn keyed_digest(&self, data: &[u8]) -> Option<String> {
        let sealer = self.sealer.as_deref()?;
        let tag = aws_lc_rs::hmac::sign(&sealer.digest_key, data);
        Some(tag.as_ref().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Number of undelivered records.
    pub fn pending_count(&self) -> Result<usize, JournalError> {
        self.with_conn(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM pending", [], |r| r.get(0))?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    /// Commits a token answer durably. When this returns, the answer survives a crash.
    pub async fn record(
        &self,
        delivery: &Delivery,
        now: Timestamp,
    ) -> Result<String, JournalError> {
        let sealer = self.sealer.clone().ok_or(JournalError::KeyMissing(0))?;
        let id = random_id().map_err(|e| JournalError::Db(format!("no randomness: {e}")))?;
        let (nonce_bytes, ciphertext) = sealer.seal(&id, delivery)?;
        let (credential, registry, key_id, rid) = (
            delivery.credential.clone(),
            delivery.registry.clone(),
            sealer.key_id.clone(),
            id.clone(),
        );
        let mod_count = i64::try_from(delivery.refresh_mod_count).unwrap_or(i64::MAX);
        self.blocking(move |c| {
            // One transaction: the answer is recorded and the intent cleared together.
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO pending (id, credential, registry, created_at, key_id, nonce, sealed, refresh_mod_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![rid, credential, registry, now.as_second(), key_id, nonce_bytes.to_vec(), ciphertext, mod_count],
            )?;
            tx.execute("DELETE FROM intent WHERE credential = ?1", params![credential])?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        Ok(id)
    }

    /// Notes that the refresh row now holds the rotated token.
    pub async fn mark_refresh_delivered(&self, id: &str) -> Result<(), JournalError> {
        let id = id.to_string();
        self.blocking(move |c| {
            c.execute(
                "UPDATE pending SET refresh_delivered = 1 WHERE id = ?1",
                params![id],
            )?;
            Ok(())
        })
        .await
    }

    /// Notes a failed delivery attempt.
    pub async fn note_failure(&self, id: &str, error: &str) -> Result<(), JournalError> {
        let (id, error) = (id.to_string(), error.chars().take(300).collect::<String>());
        self.blocking(move |c| {
            c.execute(
                "UPDATE pending SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![id, error],
            )?;
            Ok(())
        })
        .await
    }

    /// Removes a record once ServiceNow confirmed every write.
    pub async fn complete(&self, id: &str) -> Result<(), JournalError> {
        let id = id.to_string();
        self.blocking(move |c| {
            c.execute("DELETE FROM pending WHERE id = ?1", params![id])?;
            Ok(())
        })
        .await
    }

    /// Every pending record, decrypted, oldest first.
    pub fn pending(&self) -> Result<Vec<Pending>, JournalError> {
        let rows = self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT id, credential, registry, created_at, attempts, refresh_delivered, key_id, nonce, sealed, refresh_mod_count FROM pending ORDER BY created_at, id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, Vec<u8>>(7)?,
                        r.get::<_, Vec<u8>>(8)?,
                        r.get::<_, i64>(9)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sealer = self
            .sealer
            .as_deref()
            .ok_or(JournalError::KeyMissing(rows.len()))?;
        let mut out = Vec::with_capacity(rows.len());
        for (
            id,
            credential,
            registry,
            created,
            attempts,
            delivered,
            key_id,
            nonce,
            sealed,
            mod_count,
        ) in rows
        {
            if key_id != sealer.key_id {
                return Err(JournalError::WrongKey {
                    id,
                    found: key_id,
                    configured: sealer.key_id.clone(),
                });
            }
            let nonce: [u8; 24] = nonce
                .as_slice()
                .try_into()
                .map_err(|_| JournalError::Corrupt(id.clone()))?;
            let aad = Sealer::aad(&id, &credential);
            let plaintext = Zeroizing::new(
                sealer
                    .aead
                    .decrypt(
                        &XNonce::from(nonce),
                        Payload {
                            msg: &sealed,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| JournalError::Corrupt(id.clone()))?,
            );
            let inner: Sealed = serde_json::from_slice(&plaintext)
                .map_err(|_| JournalError::Corrupt(id.clone()))?;
            let ts = |s: i64| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
            out.push(Pending {
                delivery: Delivery {
                    credential,
                    registry,
                    access_token: SecretString::from(inner.access_token),
                    refresh_token: inner.refresh_token.map(SecretString::from),
                    previous_refresh_token: inner.previous_refresh_token.map(SecretString::from),
                    access_expires: ts(inner.access_expires),
                    refresh_expires: inner.refresh_expires.map(ts),
                    access_row: inner.access_row,
                    template: inner.template,
                    refresh_mod_count: u64::try_from(mod_count).unwrap_or(0),
                },
                id,
                refresh_delivered: delivered != 0,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                created_at: ts(created),
            });
        }
        Ok(out)
    }

    /// What is pending, without decrypting anything.
    pub fn summaries(&self) -> Result<Vec<Summary>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT id, credential, registry, created_at, attempts, refresh_delivered, last_error, key_id FROM pending ORDER BY created_at, id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    let created: i64 = r.get(3)?;
                    Ok(Summary {
                        id: r.get(0)?,
                        credential: r.get(1)?,
                        registry: r.get(2)?,
                        created_at: Timestamp::from_second(created)
                            .map(crate::domain::time::format_sn_utc)
                            .unwrap_or_default(),
                        attempts: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
                        refresh_delivered: r.get::<_, i64>(5)? != 0,
                        last_error: r.get(6)?,
                        key_id: r.get(7)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Remembers a credential's outcome: `class = None` is a success.
    pub async fn record_outcome(
        &self,
        credential: &str,
        registry: &str,
        class: Option<FailureClass>,
        message: Option<&str>,
        refresh_mod_count: u64,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        let (credential, registry) = (credential.to_string(), registry.to_string());
        let class = class.map(FailureClass::label);
        let message = message.map(|m| m.chars().take(500).collect::<String>());
        let mod_count = i64::try_from(refresh_mod_count).unwrap_or(i64::MAX);
        self.blocking(move |c| {
            let success = class.is_none();
            c.execute(
                OUTCOME_UPSERT,
                params![
                    credential,
                    registry,
                    class,
                    message,
                    now.as_second(),
                    mod_count,
                    success
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Remembers many outcomes in one transaction (one fsync for a whole cycle).
    pub async fn record_outcomes(
        &self,
        records: Vec<OutcomeRecord>,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        self.blocking(move |c| {
            let tx = c.unchecked_transaction()?;
            for r in &records {
                let mod_count = i64::try_from(r.refresh_mod_count).unwrap_or(i64::MAX);
                let message = r
                    .message
                    .as_ref()
                    .map(|m| m.chars().take(500).collect::<String>());
                tx.execute(
                    OUTCOME_UPSERT,
                    params![
                        r.credential,
                        r.registry,
                        r.class.map(FailureClass::label),
                        message,
                        now.as_second(),
                        mod_count,
                        r.class.is_none()
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Every remembered outcome, by credential.
    pub fn outcomes(&self) -> Result<HashMap<String, StoredOutcome>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT credential, class, message, at, refresh_mod_count, last_success FROM outcome",
            )?;
            let ts = |s: i64| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
            let rows = stmt
                .query_map([], |r| {
                    let class: Option<String> = r.get(1)?;
                    Ok((
                        r.get::<_, String>(0)?,
                        StoredOutcome {
                            class: class.as_deref().and_then(FailureClass::from_label),
                            message: r.get(2)?,
                            at: ts(r.get(3)?),
                            refresh_mod_count: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                            last_success: r.get::<_, Option<i64>>(5)?.map(ts),
                        },
                    ))
                })?
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(rows)
        })
    }

    /// Notes that a token request for `credential` is about to be sent. If the process dies
    /// before the answer is journaled, the next start knows the refresh token may have been
    /// consumed (see [`Journal::interrupted`]).
    pub async fn begin_refresh(
        &self,
        credential: &str,
        registry: &str,
        now: Timestamp,
    ) -> Result<(), JournalError> {
        let (credential, registry) = (credential.to_string(), registry.to_string());
        self.blocking(move |c| {
            c.execute(
                "INSERT INTO intent (credential, registry, started_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(credential) DO NOTHING",
                params![credential, registry, now.as_second()],
            )?;
            Ok(())
        })
        .await
    }

    /// Clears the intent of a refresh that ended without an answer to journal (a definite error).
    pub async fn end_refresh(&self, credential: &str) -> Result<(), JournalError> {
        let credential = credential.to_string();
        self.blocking(move |c| {
            c.execute(
                "DELETE FROM intent WHERE credential = ?1",
                params![credential],
            )?;
            Ok(())
        })
        .await
    }

    /// Refreshes that were sent and never concluded: the process died in between. Their
    /// credentials' refresh tokens may have been consumed by the provider.
    pub fn interrupted(&self) -> Result<HashMap<String, Timestamp>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare("SELECT credential, started_at FROM intent")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Timestamp::from_second(r.get(1)?).unwrap_or(Timestamp::UNIX_EPOCH),
                    ))
                })?
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(rows)
        })
    }

    /// Parks a registry after a configuration error, with the fingerprint of the configuration
    /// that failed: it stays parked until that fingerprint changes.
    pub async fn park_registry(&self, park: &RegistryPark) -> Result<(), JournalError> {
        let p = park.clone();
        self.blocking(move |c| {
            c.execute(
                "INSERT INTO registry_park (registry, name, class, message, fingerprint, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(registry) DO UPDATE SET name = ?2, class = ?3, message = ?4, fingerprint = ?5, at = ?6",
                params![p.registry, p.name, p.class.label(), p.message, p.fingerprint, p.at.as_second()],
            )?;
            Ok(())
        })
        .await
    }

    /// Unparks a registry.
    pub async fn unpark_registry(&self, registry: &str) -> Result<(), JournalError> {
        let registry = registry.to_string();
        self.blocking(move |c| {
            c.execute(
                "DELETE FROM registry_park WHERE registry = ?1",
                params![registry],
            )?;
            Ok(())
        })
        .await
    }

    /// Every parked registry, by sys_id.
    pub fn parked_registries(&self) -> Result<HashMap<String, RegistryPark>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT registry, name, class, message, fingerprint, at FROM registry_park",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    let class: String = r.get(2)?;
                    Ok(RegistryPark {
                        registry: r.get(0)?,
                        name: r.get(1)?,
                        class: FailureClass::from_label(&class)
                            .unwrap_or(FailureClass::Configuration),
                        message: r.get(3)?,
                        fingerprint: r.get(4)?,
                        at: Timestamp::from_second(r.get(5)?).unwrap_or(Timestamp::UNIX_EPOCH),
                    })
                })?
                .filter_map(Result::ok)
                .map(|p| (p.registry.clone(), p))
                .collect();
            Ok(rows)
        })
    }

    /// Re-seals every pending record under `new_key`, in one transaction: either all records
    /// move to the new key or none does. Returns how many were re-sealed.
    pub fn rekey(&self, new_key: &JournalKey) -> Result<usize, JournalError> {
        let pending = self.pending()?;
        let sealer = Sealer::new(new_key);
        let mut resealed = Vec::with_capacity(pending.len());
        for p in &pending {
            let (nonce_bytes, ciphertext) = sealer.seal(&p.id, &p.delivery)?;
            resealed.push((p.id.clone(), nonce_bytes.to_vec(), ciphertext));
        }
        let key_id = sealer.key_id.clone();
        self.with_conn(|c| {
            let tx = c.unchecked_transaction()?;
            for (id, nonce, sealed) in &resealed {
                tx.execute(
                    "UPDATE pending SET key_id = ?2, nonce = ?3, sealed = ?4 WHERE id = ?1",
                    params![id, key_id, nonce, sealed],
                )?;
            }
            tx.commit()?;
            Ok(())
        })?;
        Ok(resealed.len())
    }

    /// Whether the journal can be written (for `/readyz`).
    pub fn writable(&self) -> bool {
        self.with_conn(|c| {
            c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
            Ok(())
        })
        .is_ok()
    }

    /// Whether a record is pending for this credential.
    pub fn has_pending(&self, credential: &str) -> Result<bool, JournalError> {
        self.with_conn(|c| {
            Ok(c.query_row(
                "SELECT 1 FROM pending WHERE credential = ?1 LIMIT 1",
                params![credential],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
    }
}

fn random_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(credential: &str) -> Delivery {
        Delivery {
            credential: credential.into(),
            registry: "Graph".into(),
            access_token: SecretString::from("at-secret-value"),
            refresh_token: Some(SecretString::from("rt-secret-value")),
            previous_refresh_token: Some(SecretString::from("rt-old-secret-value")),
            access_expires: Timestamp::from_second(2_000_000_000).unwrap(),
            refresh_expires: Some(Timestamp::from_second(2_100_000_000).unwrap()),
            access_row: None,
            template: AccessTemplate {
                requestor_profile: "p".into(),
                peer: "e".into(),
                user: "u".into(),
                scopes: "s".into(),
                name: "n".into(),
            },
            refresh_mod_count: 3,
        }
    }

    #[tokio::test]
    async fn records_survive_reopen_and_are_encrypted_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let key = JournalKey::random().unwrap();
        let now = Timestamp::from_second(1_900_000_000).unwrap();
        {
            let j = Journal::open(dir.path(), Some(&key)).unwrap();
            let id = j.record(&delivery("r1"), now).await.unwrap();
            j.mark_refresh_delivered(&id).await.unwrap();
            j.note_failure(&id, "HTTP 503").await.unwrap();
            assert!(j.has_pending("r1").unwrap());
        }
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("rt-secret-value") && !text.contains("at-secret-value"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DB_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let j = Journal::open(dir.path(), Some(&key)).unwrap();
        let pending = j.pending().unwrap();
        assert_eq!(pending.len(), 1);
        let p = &pending[0];
        assert!(p.refresh_delivered);
        assert_eq!(p.attempts, 1);
        assert_eq!(
            p.delivery
                .refresh_token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            Some("rt-secret-value".to_string())
        );
        assert_eq!(
            j.summaries().unwrap()[0].last_error.as_deref(),
            Some("HTTP 503")
        );
        j.complete(&p.id).await.unwrap();
        assert_eq!(j.pending_count().unwrap(), 0);
    }

    #[tokio::test]
    async fn fails_closed_without_or_with_the_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = JournalKey::random().unwrap();
        {
            let j = Journal::open(dir.path(), Some(&key)).unwrap();
            j.record(&delivery("r1"), Timestamp::UNIX_EPOCH)
                .await
                .unwrap();
        }
        assert!(matches!(
            Journal::open(dir.path(), None),
            Err(JournalError::KeyMissing(1))
        ));
        let other = JournalKey::random().unwrap();
        let j = Journal::open(dir.path(), Some(&other)).unwrap();
        assert!(matches!(j.pending(), Err(JournalError::WrongKey { .. })));
    }

    #[tokio::test]
    async fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = JournalKey::random().unwrap();
        let _first = Journal::open(dir.path(), Some(&key)).unwrap();
        assert!(matches!(
            Journal::open(dir.path(), Some(&key)),
            Err(JournalError::Locked(_))
        ));
        assert!(Journal::open_read_only(dir.path()).unwrap().is_some());
    }

    #[tokio::test]
    async fn a_moved_record_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let key = JournalKey::random().unwrap();
        let j = Journal::open(dir.path(), Some(&key)).unwrap();
        j.record(&delivery("r1"), Timestamp::UNIX_EPOCH)
            .await
            .unwrap();
        j.with_conn(|c| {
            c.execute("UPDATE pending SET credential = 'r2'", [])?;
            Ok(())
        })
        .unwrap();
        assert!(matches!(j.pending(), Err(JournalError::Corrupt(_))));
    }

    #[tokio::test]
    async fn outcomes_remember_failures_and_successes() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), Some(&JournalKey::random().unwrap())).unwrap();
        let t1 = Timestamp::from_second(100).unwrap();
        j.record_outcome("r1", "G", None, None, 1, t1)
            .await
            .unwrap();
        let t2 = Timestamp::from_second(200).unwrap();
        j.record_outcome(
            "r1",
            "G",
            Some(FailureClass::NeedsReauth),
            Some("invalid_grant"),
            2,
            t2,
        )
        .await
        .unwrap();
        let o = &j.outcomes().unwrap()["r1"];
        assert_eq!(o.class, Some(FailureClass::NeedsReauth));
        assert_eq!(o.last_success, Some(t1));
        assert_eq!(o.refresh_mod_count, 2);
    }
}
