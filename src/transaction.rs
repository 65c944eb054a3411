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

/// A point between two states of a credential's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// The intent is journaled; the token request is not sent yet.
    Intent,
    /// The answer is in custody (journaled and fsynced); nothing is written yet.
    Obtained,
    /// The refresh row holds the rotated token; the access row is not written yet.
    RefreshRowWritten,
    /// Every write is answered; not verified yet.
    Written,
    /// Verified; the record is not released yet.
    Verified,
    /// The record is released.
    Released,
}

impl Transition {
    /// Every transition, in the order a refresh passes them.
    pub const ALL: [Transition; 6] = [
        Transition::Intent,
        Transition::Obtained,
        Transition::RefreshRowWritten,
        Transition::Written,
        Transition::Verified,
        Transition::Released,
    ];
}

/// Where a fault-injection test stops a keeper dead: asked at every transition of every
/// credential (the refresh row's sys_id), it answers whether the process "dies" there — the
/// keeper then never moves again, and the test drops it as a crash would. A keeper without one
/// never stops.
pub type CrashPoint = std::sync::Arc<dyn Fn(&str, Transition) -> bool + Send + Sync>;
