//! The refresh of one credential as a typed transaction — the product's one guarantee, in
//! types the compiler checks:
//!
//! ```text
//!  Intent ──token request──▶ Obtained ──writes──▶ Written ──verify──▶ Verified ──▶ Released
//!  (journaled)              (journaled,          (the instance's    (stored ==      (record
//!                            fsynced)             receipts)          written)        removed)
//! ```
//!
//! - [`Intent`] is made only by [`Journal::begin`](crate::journal::Journal::begin), before the
//!   token request is sent: a crash after it tells the next start the refresh token may have
//!   been consumed.
//! - [`Obtained`] is made only by the journal: [`Journal::obtain`](crate::journal::Journal::obtain)
//!   commits a fresh answer (fsynced) — or, when the disk fails, hands it back in memory only so
//!   it is delivered at once — and [`Journal::pending`](crate::journal::Journal::pending) reads
//!   back what an earlier run left. The ServiceNow write methods take `&Obtained`.
//! - [`Written`] pairs an `Obtained` with the receipts the instance answered its writes with;
//!   receipts are made only by the ServiceNow adapter.
//! - [`Verified`] is made only by [`Instance::verify`](crate::servicenow::Instance::verify),
//!   when the receipts show the instance stores what was written; anything else gives the
//!   `Obtained` back ([`Unverified`]) and it stays journaled.
//! - [`Released`] is made only by [`Journal::release`](crate::journal::Journal::release), which
//!   takes a `Verified`: no other path removes a record.
//!
//! A crash after any transition resumes from the journal: an `Intent` without an answer is
//! reported if the next request meets `invalid_grant`; an `Obtained` (and a `Written` or
//! `Verified` whose record was not yet removed) is re-delivered at the head of the next cycle,
//! before the credential may be refreshed again.

pub use crate::journal::{Custody, Intent, Obtained, Released};
pub use crate::servicenow::{RefreshRowReceipt, RowReceipt, Unverified, Verified, Written};
