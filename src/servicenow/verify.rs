//! Verification: the step between "the instance answered the writes" and "the journal may let
//! the answer go". A 200 is not proof: a field ACL, a data policy or a business rule can discard
//! a write to `token_received` and the instance still answers 200. So every row an answer wrote
//! is checked through the companion's `/verify` (the SHA-256 of what the row decrypts to, never
//! the token), batched across credentials. A [`Verified`] is made only here, when every row the
//! answer needs holds what was sent; the journal releases a record only for a `Verified`.

use super::client::Instance;
use super::companion::TokenDigest;
use super::error::SnError;
use super::rows::{RefreshRow, RefreshRowReceipt, RowReceipt};
use crate::journal::{Custody, Obtained};
use jiff::Timestamp;
use std::collections::HashMap;
use std::fmt;

/// The third state: the writes of an answer were answered by the instance.
pub struct Written {
    obtained: Obtained,
    refresh: RefreshRowReceipt,
    access: RowReceipt,
}

impl fmt::Debug for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Written")
            .field("obtained", &self.obtained)
            .field("refresh", &self.refresh)
            .field("access", &self.access)
            .finish()
    }
}

impl Written {
    /// An answer with the receipts of its writes.
    pub fn new(obtained: Obtained, refresh: RefreshRowReceipt, access: RowReceipt) -> Written {
        Written {
            obtained,
            refresh,
            access,
        }
    }

    /// The answer.
    pub fn obtained(&self) -> &Obtained {
        &self.obtained
    }

    /// The rows whose stored token must match what was written: the access row, and the
    /// refresh row when the rotated token was written to it.
    fn digests(&self) -> Vec<TokenDigest> {
        let mut rows = vec![self.access.digest().clone()];
        if let RefreshRow::Written(receipt) = self.refresh.state() {
            rows.push(receipt.digest().clone());
        }
        rows
    }

    /// What the receipts themselves show is wrong (rows other than the answer's, expiries the
    /// instance did not store, references a created row does not hold): empty when they fit.
    fn receipt_mismatches(&self) -> Vec<String> {
        let d = self.obtained.delivery();
        let access = &self.access;
        let mut mismatch = Vec::new();
        if access.sys_id().is_empty()
            || (!access.created() && d.access_row.as_deref() != Some(access.sys_id()))
        {
            mismatch.push(format!(
                "the access-token write answered for row {:?}, not the credential's",
                access.sys_id()
            ));
        }
        if access.expires() != Some(d.access_expires) {
            mismatch.push("the access row's expires is not what was written".to_string());
        }
        if !access.wrong_references().is_empty() {
            mismatch.push(format!(
                "the created access row does not hold the {} sent, even after a repair",
                access.wrong_references().join(", ")
            ));
        }
        match (self.refresh.state(), &d.rotated) {
            (RefreshRow::NotRotated, None) | (RefreshRow::KeptNewer, Some(_)) => {}
            (RefreshRow::Written(receipt), Some(r)) => {
                if receipt.sys_id() != d.credential {
                    mismatch.push("the refresh-token write answered for another row".to_string());
                }
                if receipt.expires() != Some(r.expires) {
                    mismatch.push("the refresh row's expires is not what was written".to_string());
                }
            }
            (state, rotated) => mismatch.push(format!(
                "the refresh row's receipt ({state:?}) does not fit the answer (rotated: {})",
                rotated.is_some()
            )),
        }
        mismatch
    }
}

/// The fourth state: ServiceNow provably holds the answer. What the cycle reports of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    custody: Custody,
    credential: String,
    registry: String,
    /// The refresh row holds the rotated token.
    pub rotated_stored: bool,
    /// The access row was created by this delivery.
    pub created_access_row: bool,
    /// The access token's expiry, as stored.
    pub access_expires: Timestamp,
    /// The refresh row's expiry, as stored, when it holds the rotated token.
    pub refresh_expires: Option<Timestamp>,
}

impl Verified {
    /// The journal record this verifies, if the answer was journaled.
    pub fn record(&self) -> Option<&str> {
        match &self.custody {
            Custody::Journaled(id) => Some(id),
            Custody::InMemory => None,
        }
    }

    /// The refresh row's sys_id.
    pub fn credential(&self) -> &str {
        &self.credential
    }

    /// The registry's name.
    pub fn registry(&self) -> &str {
        &self.registry
    }
}

/// Why an answer is not proven stored.
#[derive(Debug, Clone)]
pub enum NotProven {
    /// The instance answered, and what it stores is not what was written: a field ACL, data
    /// policy or business rule discards the integration user's writes (secret-free details).
    NotStored(String),
    /// The proof could not be asked for (the companion failed or lacks `/verify`).
    Unconfirmed(SnError),
}

impl fmt::Display for NotProven {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotProven::NotStored(why) => {
                write!(f, "ServiceNow did not store what was written: {why}")
            }
            NotProven::Unconfirmed(e) => write!(
                f,
                "the companion could not confirm what ServiceNow stored ({e})"
            ),
        }
    }
}

/// A write that does not prove the answer stored: the answer stays in custody.
#[derive(Debug)]
pub struct Unverified {
    /// The answer, back to its keeper.
    pub obtained: Box<Obtained>,
    /// Why.
    pub reason: NotProven,
}

impl Instance {
    /// Verifies a batch of answers: their receipts must fit them, and every row they wrote must
    /// decrypt to what was written (`/verify`, 100 rows a call across the batch). One result
    /// per answer, in order.
    pub async fn verify(&self, batch: Vec<Written>) -> Vec<Result<Verified, Unverified>> {
        let digests: Vec<TokenDigest> = batch.iter().flat_map(Written::digests).collect();
        let matches = if digests.is_empty() {
            Ok(HashMap::new())
        } else {
            self.verify_tokens(&digests).await
        };
        batch
            .into_iter()
            .map(|written| match &matches {
                Ok(matches) => judge(written, matches),
                Err(e) => Err(Unverified {
                    obtained: Box::new(written.obtained),
                    reason: NotProven::Unconfirmed(e.clone()),
                }),
            })
            .collect()
    }
}

/// One answer's verdict, from its receipts and the companion's matches.
fn judge(written: Written, matches: &HashMap<String, bool>) -> Result<Verified, Unverified> {
    let mut mismatch = written.receipt_mismatches();
    for digest in written.digests() {
        match matches.get(&digest.sys_id) {
            Some(true) => {}
            Some(false) => mismatch.push(format!(
                "row {} does not hold the token written (token_received)",
                digest.sys_id
            )),
            None => mismatch.push(format!(
                "row {} is not there to hold the token written",
                digest.sys_id
            )),
        }
    }
    let Written {
        obtained,
        refresh,
        access,
    } = written;
    if !mismatch.is_empty() {
        return Err(Unverified {
            obtained: Box::new(obtained),
            reason: NotProven::NotStored(mismatch.join("; ")),
        });
    }
    let d = obtained.delivery();
    Ok(Verified {
        custody: obtained.custody().clone(),
        credential: d.credential.clone(),
        registry: d.registry.clone(),
        rotated_stored: refresh.holds_rotated(),
        created_access_row: access.created(),
        access_expires: d.access_expires,
        refresh_expires: d
            .rotated
            .as_ref()
            .filter(|_| refresh.holds_rotated())
            .map(|r| r.expires),
    })
}
