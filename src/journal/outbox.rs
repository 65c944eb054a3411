//! The outbox: the journaled states of a refresh. Only this module makes an [`Intent`] (before
//! a token request is sent) and an [`Obtained`] (the provider's answer, committed and fsynced
//! before anything else happens to it — or, on a crash, read back from disk); only a
//! [`Verified`] write releases a record. See [`crate::transaction`] for the whole transaction.

use super::group::savepoint;
use super::seal::{Envelope, JournalKey, Sealer};
use super::{Journal, JournalError};
use crate::servicenow::Verified;
use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

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

/// A refresh token the provider rotated, with the expiry its row gets.
pub struct Rotated {
    /// The new refresh token.
    pub token: SecretString,
    /// When it expires (the refresh row's new `expires`).
    pub expires: Timestamp,
}

/// A token answer on its way to ServiceNow.
pub struct Delivery {
    /// The refresh row's sys_id.
    pub credential: String,
    /// The registry's name (for `journal list` and logs).
    pub registry: String,
    /// The new access token.
    pub access_token: SecretString,
    /// The rotated refresh token and its row's new expiry, if the provider rotated it.
    pub rotated: Option<Rotated>,
    /// The refresh token the request used: the race check compares it with what the row holds
    /// before overwriting a row someone else wrote meanwhile.
    pub previous_refresh_token: Option<SecretString>,
    /// When the access token expires.
    pub access_expires: Timestamp,
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
            .field("rotated", &self.rotated.is_some())
            .field("access_row", &self.access_row)
            .finish_non_exhaustive()
    }
}

/// The first state: the journal knows a token request for this credential is about to be sent.
/// If the process dies before the answer is journaled, the next start knows the refresh token
/// may have been consumed ([`Journal::interrupted`]).
#[derive(Debug)]
#[must_use = "an intent ends with Journal::obtain (an answer) or Journal::abandon (none)"]
pub struct Intent {
    credential: String,
    registry: String,
}

impl Intent {
    /// The refresh row's sys_id.
    pub fn credential(&self) -> &str {
        &self.credential
    }
}

/// Where an obtained answer is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Custody {
    /// Committed and fsynced as this journal record.
    Journaled(String),
    /// The journal could not commit it: it exists only in memory and is delivered at once.
    InMemory,
}

/// The second state: a provider's answer in the keeper's custody. Made only by
/// [`Journal::obtain`] (a fresh answer) and [`Journal::pending`] (an answer journaled by an
/// earlier run); ServiceNow's write methods take it by reference.
pub struct Obtained {
    custody: Custody,
    delivery: Delivery,
    refresh_row_written: bool,
    access_row_created: bool,
    attempts: u32,
    created_at: Timestamp,
}

impl fmt::Debug for Obtained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Obtained")
            .field("custody", &self.custody)
            .field("delivery", &self.delivery)
            .field("refresh_row_written", &self.refresh_row_written)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Obtained {
    /// Where it is kept.
    pub fn custody(&self) -> &Custody {
        &self.custody
    }

    /// Its journal record, when it has one.
    pub fn record(&self) -> Option<&str> {
        match &self.custody {
            Custody::Journaled(id) => Some(id),
            Custody::InMemory => None,
        }
    }

    /// What to deliver.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// The refresh row's sys_id.
    pub fn credential(&self) -> &str {
        &self.delivery.credential
    }

    /// Whether an earlier attempt's write of the rotated refresh token was answered (for
    /// `journal list`: only a verification proves the row holds it, so a re-delivery writes it
    /// again).
    pub fn refresh_row_written(&self) -> bool {
        self.refresh_row_written
    }

    /// Whether the access row the delivery targets was created by an earlier attempt of this
    /// answer (so its references are the keeper's to check).
    pub fn access_row_created(&self) -> bool {
        self.access_row_created
    }

    /// Delivery attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the answer was journaled.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// Points the delivery at an existing access row (see
    /// [`crate::domain::cycle::adopt_access_row`]).
    pub fn target_access_row(&mut self, row: Option<String>) {
        self.delivery.access_row = row;
    }
}

/// The last state: the record is gone; the answer is in ServiceNow, verified.
#[derive(Debug)]
pub struct Released {
    record: Option<String>,
}

impl Released {
    /// The journal record that was removed (`None` for an answer that was never journaled).
    pub fn record(&self) -> Option<&str> {
        self.record.as_deref()
    }
}

/// A pending record that does not open: it holds back its credential (which is never refreshed
/// meanwhile) and is reported; it is never discarded.
#[derive(Debug)]
pub struct BadRecord {
    /// Record id.
    pub id: String,
    /// The refresh row's sys_id.
    pub credential: String,
    /// The registry's name.
    pub registry: String,
    /// Why it does not open ([`JournalError::WrongKey`] or [`JournalError::Corrupt`]).
    pub error: JournalError,
}

/// Whether a key opens one pending record.
#[derive(Debug)]
pub struct RecordCheck {
    /// The record, as `journal list` shows it.
    pub summary: Summary,
    /// `Ok` when the key opens it; else why not ([`JournalError::WrongKey`] names the key id
    /// it was sealed with, [`JournalError::Corrupt`] a record that opens under no key).
    pub opens: Result<(), JournalError>,
}

/// A pending row as stored, still sealed.
struct SealedRecord {
    /// What `journal list` shows of it.
    summary: Summary,
    nonce: Vec<u8>,
    sealed: Vec<u8>,
    refresh_mod_count: u64,
    created_access_row: Option<String>,
}

impl SealedRecord {
    /// The answer sealed in it, if `sealer` opens it.
    fn open(&self, sealer: &Sealer) -> Result<Delivery, JournalError> {
        let envelope = Envelope {
            id: &self.summary.id,
            credential: &self.summary.credential,
            registry: &self.summary.registry,
            refresh_mod_count: self.refresh_mod_count,
        };
        sealer.open(&envelope, &self.summary.key_id, &self.nonce, &self.sealed)
    }

    fn bad(&self, error: JournalError) -> Box<BadRecord> {
        Box::new(BadRecord {
            id: self.summary.id.clone(),
            credential: self.summary.credential.clone(),
            registry: self.summary.registry.clone(),
            error,
        })
    }
}

/// The columns of a [`Summary`], in the order [`summary_of`] reads them.
const SUMMARY_COLUMNS: &str =
    "id, credential, registry, created_at, attempts, refresh_delivered, last_error, key_id";

/// The [`Summary`] in a row that starts with [`SUMMARY_COLUMNS`].
fn summary_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Summary> {
    Ok(Summary {
        id: r.get(0)?,
        credential: r.get(1)?,
        registry: r.get(2)?,
        created_at: timestamp(r.get(3)?),
        attempts: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
        refresh_delivered: r.get::<_, i64>(5)? != 0,
        last_error: r.get(6)?,
        key_id: r.get(7)?,
    })
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
    /// When the answer was journaled.
    #[serde(serialize_with = "crate::domain::time::serialize_sn_utc")]
    pub created_at: Timestamp,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Whether the refresh row already holds the rotated token.
    pub refresh_delivered: bool,
    /// The last delivery error.
    pub last_error: Option<String>,
    /// The key the record is sealed with.
    pub key_id: String,
}

fn timestamp(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Journal {
    /// Journals the intent to send a token request for `credential`.
    pub async fn begin(&self, credential: &str, registry: &str) -> Result<Intent, JournalError> {
        let intent = Intent {
            credential: credential.to_string(),
            registry: registry.to_string(),
        };
        let (credential, registry, now) = (
            intent.credential.clone(),
            intent.registry.clone(),
            self.clock.now().as_second(),
        );
        self.write(move |c| {
            c.execute(
                "INSERT INTO intent (credential, registry, started_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(credential) DO NOTHING",
                params![credential, registry, now],
            )?;
            Ok(())
        })
        .await?;
        Ok(intent)
    }

    /// Ends an intent without an answer: the request failed definitely (nothing to journal).
    pub async fn abandon(&self, intent: Intent) -> Result<(), JournalError> {
        let credential = intent.credential;
        self.write(move |c| {
            c.execute(
                "DELETE FROM intent WHERE credential = ?1",
                params![credential],
            )?;
            Ok(())
        })
        .await
    }

    /// Takes a provider's answer into custody: sealed and committed in one transaction with the
    /// end of its intent, on disk when this returns. When the journal cannot commit (a full
    /// disk, an I/O error), the answer is still handed back — in memory only, with the error —
    /// so that it is delivered at once rather than lost.
    pub async fn obtain(
        &self,
        intent: Intent,
        delivery: Delivery,
    ) -> (Obtained, Option<JournalError>) {
        let created_at = self.clock.now();
        let committed = self.commit(&intent, &delivery, created_at).await;
        let (custody, error) = match committed {
            Ok(id) => (Custody::Journaled(id), None),
            Err(e) => (Custody::InMemory, Some(e)),
        };
        let obtained = Obtained {
            custody,
            delivery,
            refresh_row_written: false,
            access_row_created: false,
            attempts: 0,
            created_at,
        };
        (obtained, error)
    }

    async fn commit(
        &self,
        intent: &Intent,
        delivery: &Delivery,
        now: Timestamp,
    ) -> Result<String, JournalError> {
        let sealer = self.sealer()?;
        let id = random_id().map_err(|e| JournalError::Db(format!("no randomness: {e}")))?;
        let (nonce_bytes, ciphertext) = sealer.seal(&id, delivery)?;
        let (credential, registry, key_id, rid) = (
            intent.credential.clone(),
            delivery.registry.clone(),
            sealer.key_id().to_string(),
            id.clone(),
        );
        let mod_count = i64::try_from(delivery.refresh_mod_count).unwrap_or(i64::MAX);
        // One write: the answer is recorded and the intent cleared together.
        self.write(move |c| {
            c.execute(
                "INSERT INTO pending (id, credential, registry, created_at, key_id, nonce, sealed, refresh_mod_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![rid, credential, registry, now.as_second(), key_id, nonce_bytes.to_vec(), ciphertext, mod_count],
            )?;
            c.execute("DELETE FROM intent WHERE credential = ?1", params![credential])?;
            Ok(())
        })
        .await?;
        Ok(id)
    }

    /// Notes that the instance answered the write of the rotated token to the refresh row (what
    /// `journal list` shows; it proves nothing until verified).
    pub async fn note_refresh_row_written(
        &self,
        obtained: &mut Obtained,
    ) -> Result<(), JournalError> {
        obtained.refresh_row_written = true;
        let Some(id) = obtained.record().map(str::to_string) else {
            return Ok(());
        };
        self.write(move |c| {
            c.execute(
                "UPDATE pending SET refresh_delivered = 1 WHERE id = ?1",
                params![id],
            )?;
            Ok(())
        })
        .await
    }

    /// Notes the access row a delivery created, so a later attempt updates that row instead of
    /// creating another (the sys_id is no secret: it is kept beside the sealed record).
    pub async fn note_access_row_created(
        &self,
        obtained: &mut Obtained,
        sys_id: &str,
    ) -> Result<(), JournalError> {
        obtained.delivery.access_row = Some(sys_id.to_string());
        obtained.access_row_created = true;
        let Some(id) = obtained.record().map(str::to_string) else {
            return Ok(());
        };
        let row = sys_id.to_string();
        self.write(move |c| {
            c.execute(
                "UPDATE pending SET created_access_row = ?2 WHERE id = ?1",
                params![id, row],
            )?;
            Ok(())
        })
        .await
    }

    /// Notes a failed delivery attempt (the record stays for the next cycle).
    pub async fn note_failure(
        &self,
        obtained: &mut Obtained,
        error: &str,
    ) -> Result<(), JournalError> {
        obtained.attempts = obtained.attempts.saturating_add(1);
        let Some(id) = obtained.record().map(str::to_string) else {
            return Ok(());
        };
        let error = error.chars().take(300).collect::<String>();
        self.write(move |c| {
            c.execute(
                "UPDATE pending SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![id, error],
            )?;
            Ok(())
        })
        .await
    }

    /// The last state: removes the record of an answer ServiceNow provably holds.
    pub async fn release(&self, verified: Verified) -> Result<Released, JournalError> {
        let record = verified.record().map(str::to_string);
        if let Some(id) = record.clone() {
            self.write(move |c| {
                c.execute("DELETE FROM pending WHERE id = ?1", params![id])?;
                Ok(())
            })
            .await?;
        }
        Ok(Released { record })
    }

    /// Number of undelivered records.
    pub fn pending_count(&self) -> Result<usize, JournalError> {
        self.with_conn(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM pending", [], |r| r.get(0))?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    /// The credentials this journal may hold the only valid refresh token of: an answer waits
    /// for ServiceNow, or a refresh was sent and never concluded. The keeper claims them on the
    /// instance's lease until they are settled.
    pub fn own_claims(&self) -> Result<Vec<String>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT credential FROM pending UNION SELECT credential FROM intent ORDER BY 1",
            )?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Every pending answer, decrypted, oldest first: what a restart resumes from. A record
    /// that does not open (sealed with another key, corrupted) is returned as a [`BadRecord`]:
    /// it holds back its own credential, not the others. Fails as a whole only when the
    /// database cannot be read, or records are pending and no key was configured.
    pub fn pending(&self) -> Result<Vec<Result<Obtained, Box<BadRecord>>>, JournalError> {
        let rows = self.sealed_records()?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sealer = self
            .sealer
            .as_deref()
            .ok_or(JournalError::KeyMissing(rows.len()))?;
        Ok(rows
            .into_iter()
            .map(|record| {
                let mut delivery = record.open(sealer).map_err(|error| record.bad(error))?;
                let access_row_created = record.created_access_row.is_some();
                if let Some(row) = record.created_access_row {
                    // An earlier attempt created the access row: update it, never create a
                    // second one.
                    delivery.access_row = Some(row);
                }
                Ok(Obtained {
                    custody: Custody::Journaled(record.summary.id),
                    delivery,
                    refresh_row_written: record.summary.refresh_delivered,
                    access_row_created,
                    attempts: record.summary.attempts,
                    created_at: record.summary.created_at,
                })
            })
            .collect())
    }

    /// Whether `key` opens each pending record (for `check`, `journal list` and before a
    /// rekey); needs no lock, so it works beside a running daemon on a read-only journal.
    pub fn records_open_with(&self, key: &JournalKey) -> Result<Vec<RecordCheck>, JournalError> {
        let sealer = Sealer::new(key)?;
        Ok(self
            .sealed_records()?
            .into_iter()
            .map(|record| RecordCheck {
                opens: record.open(&sealer).map(|_| ()),
                summary: record.summary,
            })
            .collect())
    }

    fn sealed_records(&self) -> Result<Vec<SealedRecord>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {SUMMARY_COLUMNS}, nonce, sealed, refresh_mod_count, created_access_row FROM pending ORDER BY created_at, id"
            ))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(SealedRecord {
                        summary: summary_of(r)?,
                        nonce: r.get(8)?,
                        sealed: r.get(9)?,
                        refresh_mod_count: u64::try_from(r.get::<_, i64>(10)?).unwrap_or(0),
                        created_access_row: r.get(11)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// What is pending, without decrypting anything.
    pub fn summaries(&self) -> Result<Vec<Summary>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM pending ORDER BY created_at, id"
            ))?;
            let rows = stmt
                .query_map([], summary_of)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
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

    /// Refreshes that were sent and never concluded: the process died in between. Their
    /// credentials' refresh tokens may have been consumed by the provider.
    pub fn interrupted(&self) -> Result<HashMap<String, Timestamp>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare("SELECT credential, started_at FROM intent")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, timestamp(r.get(1)?))))?
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(rows)
        })
    }

    /// Re-seals every pending record under `new_key`, in one transaction: either all records
    /// move to the new key or none does — and a record the configured key cannot open stops
    /// it, named, before anything changes. Afterwards nothing stays readable under the old key:
    /// overwritten pages are zeroed (`secure_delete`), the write-ahead log is checkpointed and
    /// truncated, and the file is vacuumed. Returns how many records were re-sealed.
    pub fn rekey(&self, new_key: &JournalKey) -> Result<usize, JournalError> {
        let mut pending = Vec::new();
        for record in self.pending()? {
            pending.push(record.map_err(|bad| bad.error)?);
        }
        let sealer = Sealer::new(new_key)?;
        let mut resealed = Vec::with_capacity(pending.len());
        for p in &pending {
            let Some(id) = p.record() else { continue };
            let (nonce_bytes, ciphertext) = sealer.seal(id, &p.delivery)?;
            resealed.push((id.to_string(), nonce_bytes.to_vec(), ciphertext));
        }
        let key_id = sealer.key_id().to_string();
        self.with_conn(|c| {
            savepoint(c, |c| {
                for (id, nonce, sealed) in &resealed {
                    c.execute(
                        "UPDATE pending SET key_id = ?2, nonce = ?3, sealed = ?4 WHERE id = ?1",
                        params![id, key_id, nonce, sealed],
                    )?;
                }
                Ok(())
            })?;
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")?;
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(())
        })?;
        Ok(resealed.len())
    }
}

pub(super) fn random_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::journal::DB_FILE;
    use crate::journal::JournalKey;
    use secrecy::ExposeSecret;

    pub(crate) fn delivery(credential: &str) -> Delivery {
        Delivery {
            credential: credential.into(),
            registry: "Graph".into(),
            access_token: SecretString::from("at-secret-value"),
            rotated: Some(Rotated {
                token: SecretString::from("rt-secret-value"),
                expires: Timestamp::from_second(2_100_000_000).unwrap(),
            }),
            previous_refresh_token: Some(SecretString::from("rt-old-secret-value")),
            access_expires: Timestamp::from_second(2_000_000_000).unwrap(),
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

    async fn journaled(j: &Journal, credential: &str) -> Obtained {
        let intent = j.begin(credential, "Graph").await.unwrap();
        let (obtained, error) = j.obtain(intent, delivery(credential)).await;
        assert!(error.is_none());
        obtained
    }

    #[tokio::test]
    async fn records_survive_reopen_and_are_encrypted_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let key = JournalKey::random().unwrap();
        {
            let j = Journal::open(dir.path(), Some(&key)).unwrap();
            let mut obtained = journaled(&j, "r1").await;
            assert!(obtained.record().is_some());
            j.note_refresh_row_written(&mut obtained).await.unwrap();
            j.note_failure(&mut obtained, "HTTP 503").await.unwrap();
            assert!(j.has_pending("r1").unwrap());
            assert!(
                j.interrupted().unwrap().is_empty(),
                "the answer ended the intent"
            );
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
        let p = pending[0].as_ref().unwrap();
        assert!(p.refresh_row_written());
        assert_eq!(p.attempts(), 1);
        assert_eq!(
            p.delivery()
                .rotated
                .as_ref()
                .map(|r| r.token.expose_secret().to_string()),
            Some("rt-secret-value".to_string())
        );
        assert_eq!(
            j.summaries().unwrap()[0].last_error.as_deref(),
            Some("HTTP 503")
        );
    }

    #[tokio::test]
    async fn an_intent_without_an_answer_is_remembered_until_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), Some(&JournalKey::random().unwrap())).unwrap();
        let intent = j.begin("r1", "Graph").await.unwrap();
        assert!(j.interrupted().unwrap().contains_key("r1"));
        j.abandon(intent).await.unwrap();
        assert!(j.interrupted().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_answer_the_journal_cannot_commit_stays_in_memory_custody() {
        let dir = tempfile::tempdir().unwrap();
        // Opened without a key: nothing can be sealed.
        let j = Journal::open(dir.path(), None).unwrap();
        let intent = j.begin("r1", "Graph").await.unwrap();
        let (obtained, error) = j.obtain(intent, delivery("r1")).await;
        assert!(matches!(error, Some(JournalError::NoKey)));
        assert_eq!(obtained.custody(), &Custody::InMemory);
        assert!(
            obtained.delivery().rotated.is_some(),
            "the token is still in hand"
        );
        assert_eq!(j.pending_count().unwrap(), 0);
    }

    #[tokio::test]
    async fn fails_closed_without_or_with_the_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = JournalKey::random().unwrap();
        {
            let j = Journal::open(dir.path(), Some(&key)).unwrap();
            journaled(&j, "r1").await;
        }
        assert!(matches!(
            Journal::open(dir.path(), None),
            Err(JournalError::KeyMissing(1))
        ));
        let other = JournalKey::random().unwrap();
        let j = Journal::open(dir.path(), Some(&other)).unwrap();
        let pending = j.pending().unwrap();
        let bad = pending[0].as_ref().expect_err("sealed with another key");
        assert!(matches!(bad.error, JournalError::WrongKey { .. }));
        assert_eq!(bad.credential, "r1");
        assert!(
            j.rekey(&other).is_err(),
            "a rekey cannot strand a record it cannot open"
        );
        let checked = j.records_open_with(&key).unwrap();
        assert!(checked[0].opens.is_ok(), "the right key is told apart");
        let checked = j.records_open_with(&other).unwrap();
        assert!(matches!(
            checked[0].opens,
            Err(JournalError::WrongKey { .. })
        ));
    }

    #[tokio::test]
    async fn one_bad_record_holds_back_only_its_own_credential() {
        let dir = tempfile::tempdir().unwrap();
        let key = JournalKey::random().unwrap();
        let j = Journal::open(dir.path(), Some(&key)).unwrap();
        journaled(&j, "r1").await;
        journaled(&j, "r2").await;
        j.with_conn(|c| {
            c.execute(
                "UPDATE pending SET sealed = x'00' WHERE credential = 'r1'",
                [],
            )?;
            Ok(())
        })
        .unwrap();
        let pending = j.pending().unwrap();
        let (good, bad): (Vec<_>, Vec<_>) = pending.iter().partition(|r| r.is_ok());
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(good[0].as_ref().unwrap().credential(), "r2");
    }

    #[tokio::test]
    async fn a_created_access_row_is_remembered_for_the_next_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let key = JournalKey::random().unwrap();
        let j = Journal::open(dir.path(), Some(&key)).unwrap();
        let mut obtained = journaled(&j, "r1").await;
        j.note_access_row_created(&mut obtained, "a1")
            .await
            .unwrap();
        let pending = j.pending().unwrap();
        let again = pending[0].as_ref().unwrap();
        assert_eq!(again.delivery().access_row.as_deref(), Some("a1"));
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
        journaled(&j, "r1").await;
        j.with_conn(|c| {
            c.execute("UPDATE pending SET credential = 'r2'", [])?;
            Ok(())
        })
        .unwrap();
        let pending = j.pending().unwrap();
        assert!(matches!(
            pending[0].as_ref().map_err(|bad| &bad.error),
            Err(JournalError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn rekeying_moves_every_record_to_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (JournalKey::random().unwrap(), JournalKey::random().unwrap());
        {
            let j = Journal::open(dir.path(), Some(&old)).unwrap();
            journaled(&j, "r1").await;
            journaled(&j, "r2").await;
            assert_eq!(j.rekey(&new).unwrap(), 2);
        }
        let j = Journal::open(dir.path(), Some(&new)).unwrap();
        assert_eq!(j.pending().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn nothing_stays_readable_under_the_old_key_after_a_rekey() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (JournalKey::random().unwrap(), JournalKey::random().unwrap());
        let j = Journal::open(dir.path(), Some(&old)).unwrap();
        journaled(&j, "r1").await;
        let sealed: Vec<u8> = j
            .with_conn(|c| Ok(c.query_row("SELECT sealed FROM pending", [], |r| r.get(0))?))
            .unwrap();
        j.rekey(&new).unwrap();
        // Still open, as a daemon's would be: nothing may wait for a checkpoint at close.
        let needle = &sealed[..32];
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the old ciphertext is still in the files"
            );
        }
        drop(j);
    }
}
