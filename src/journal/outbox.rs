//! The outbox: the journaled states of a refresh. Only this module makes an [`Intent`] (before
//! a token request is sent) and an [`Obtained`] (the provider's answer, committed and fsynced
//! before anything else happens to it — or, on a crash, read back from disk); only a
//! [`Verified`] write releases a record. See [`crate::transaction`] for the whole transaction.

use super::seal::Envelope;
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

    /// Whether an earlier attempt already stored the rotated refresh token in its row.
    pub fn refresh_row_written(&self) -> bool {
        self.refresh_row_written
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
        self.blocking(move |c| {
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
        self.blocking(move |c| {
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

    /// Notes that the refresh row now holds the rotated token, so a later attempt does not
    /// write it again.
    pub async fn note_refresh_row_written(
        &self,
        obtained: &mut Obtained,
    ) -> Result<(), JournalError> {
        obtained.refresh_row_written = true;
        let Some(id) = obtained.record().map(str::to_string) else {
            return Ok(());
        };
        self.blocking(move |c| {
            c.execute(
                "UPDATE pending SET refresh_delivered = 1 WHERE id = ?1",
                params![id],
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
        self.blocking(move |c| {
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
            self.blocking(move |c| {
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

    /// Every pending answer, decrypted, oldest first: what a restart resumes from.
    pub fn pending(&self) -> Result<Vec<Obtained>, JournalError> {
        type Row = (
            String,
            String,
            String,
            i64,
            i64,
            i64,
            String,
            Vec<u8>,
            Vec<u8>,
            i64,
        );
        let rows: Vec<Row> = self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT id, credential, registry, created_at, attempts, refresh_delivered, key_id, nonce, sealed, refresh_mod_count FROM pending ORDER BY created_at, id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
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
        for (id, credential, registry, created, attempts, delivered, key_id, nonce, sealed, mods) in
            rows
        {
            let envelope = Envelope {
                id: &id,
                credential: &credential,
                registry: &registry,
                refresh_mod_count: u64::try_from(mods).unwrap_or(0),
            };
            let delivery = sealer.open(&envelope, &key_id, &nonce, &sealed)?;
            out.push(Obtained {
                custody: Custody::Journaled(id),
                delivery,
                refresh_row_written: delivered != 0,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                created_at: timestamp(created),
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
                })?
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
    /// move to the new key or none does. Returns how many were re-sealed.
    pub fn rekey(&self, new_key: &crate::journal::JournalKey) -> Result<usize, JournalError> {
        let pending = self.pending()?;
        let sealer = super::seal::Sealer::new(new_key)?;
        let mut resealed = Vec::with_capacity(pending.len());
        for p in &pending {
            let Some(id) = p.record() else { continue };
            let (nonce_bytes, ciphertext) = sealer.seal(id, &p.delivery)?;
            resealed.push((id.to_string(), nonce_bytes.to_vec(), ciphertext));
        }
        let key_id = sealer.key_id().to_string();
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
}

fn random_id() -> Result<String, getrandom::Error> {
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
        let p = &pending[0];
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
        journaled(&j, "r1").await;
        j.with_conn(|c| {
            c.execute("UPDATE pending SET credential = 'r2'", [])?;
            Ok(())
        })
        .unwrap();
        assert!(matches!(j.pending(), Err(JournalError::Corrupt(_))));
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
}
