//! Verification: the step between "the instance answered the writes" and "the journal may let
//! the answer go". A [`Verified`] is made only here, from a [`Written`] whose receipts show that
//! every row the answer needs holds what was sent; the journal releases a record only for a
//! `Verified`.

use super::client::Instance;
use super::rows::{RefreshRow, RefreshRowReceipt, RowReceipt};
use crate::journal::{Custody, Obtained};
use jiff::Timestamp;
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
}

/// The fourth state: ServiceNow provably holds the answer. What the cycle reports of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    custody: Custody,
    credential: String,
    /// The refresh row holds the rotated token (now or from an earlier attempt).
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
}

/// A write that does not prove the answer stored: the answer stays in custody.
#[derive(Debug)]
pub struct Unverified {
    /// The answer, back to its keeper.
    pub obtained: Obtained,
    /// What did not match, secret-free.
    pub reason: String,
}

impl Instance {
    /// Checks the receipts of an answer's writes against the answer: the access row was written
    /// (or created) with the access token's expiry, and the refresh row holds the rotated token
    /// with its expiry — unless the answer did not rotate, or a newer token from someone else
    /// is kept. Receipts of other rows than the answer's prove nothing.
    pub async fn verify(&self, written: Written) -> Result<Verified, Unverified> {
        let Written {
            obtained,
            refresh,
            access,
        } = written;
        let d = obtained.delivery();
        let mut mismatch = Vec::new();
        let expected_access = d.access_row.as_deref();
        if access.sys_id().is_empty()
            || (!access.created() && expected_access != Some(access.sys_id()))
        {
            mismatch.push(format!(
                "the access-token write answered for row {:?}, not the credential's",
                access.sys_id()
            ));
        }
        if access.expires() != Some(d.access_expires) {
            mismatch.push("the access row's expires is not what was written".to_string());
        }
        let refresh_expires = match (refresh.state(), &d.rotated) {
            (RefreshRow::NotRotated, None) | (RefreshRow::KeptNewer, Some(_)) => None,
            (RefreshRow::WrittenEarlier, Some(r)) if obtained.refresh_row_written() => {
                Some(r.expires)
            }
            (RefreshRow::Written(receipt), Some(r)) => {
                if receipt.sys_id() != d.credential {
                    mismatch.push("the refresh-token write answered for another row".to_string());
                }
                if receipt.expires() != Some(r.expires) {
                    mismatch.push("the refresh row's expires is not what was written".to_string());
                }
                Some(r.expires)
            }
            (state, rotated) => {
                mismatch.push(format!(
                    "the refresh row's receipt ({state:?}) does not fit the answer (rotated: {})",
                    rotated.is_some()
                ));
                None
            }
        };
        if !mismatch.is_empty() {
            return Err(Unverified {
                obtained,
                reason: mismatch.join("; "),
            });
        }
        Ok(Verified {
            custody: obtained.custody().clone(),
            credential: d.credential.clone(),
            rotated_stored: refresh.holds_rotated(),
            created_access_row: access.created(),
            access_expires: d.access_expires,
            refresh_expires,
        })
    }
}
