//! The ServiceNow adapter. Every ServiceNow field name and JSON shape the keeper knows lives
//! here, nowhere else.
//!
//! - [`client`]: the [`Instance`] client: authentication, retries, capped bodies.
//! - [`auth`]: how the keeper proves who it is (Basic, or bearer tokens from the instance's
//!   `/oauth_token.do`).
//! - [`table`]: Table API reads (discovery, the integration user, row versions, samples,
//!   events).
//! - [`companion`]: the companion Scripted REST API (decrypted secrets, `/verify`).
//! - [`lease`]: the companion's keeper lease and claims.
//! - [`rows`]: writes of `oauth_credential` rows, each answered with a receipt.
//! - [`scratch`]: the scratch credential `check --round-trip` writes, reads back and deletes.
//! - [`verify`]: whether the receipts prove an answer stored ([`Written`] → [`Verified`]).
//! - [`decode`]: decoding rows from answers.
//! - [`error`]: [`SnError`] and how an answer becomes JSON or an error.
//! - [`transcript`]: recordings of what the instance answered (`--record`), secrets replaced,
//!   and what the keeper's decoders make of them (replayed by the tests).

pub mod auth;
pub mod client;
pub mod companion;
pub mod decode;
pub mod error;
pub mod lease;
pub mod rows;
pub mod scratch;
pub mod table;
pub mod transcript;
pub mod verify;

pub use client::{Instance, RetryPolicy};
pub use companion::{
    COMPANION_BATCH, COMPANION_INCLUDE, COMPANION_INCLUDE_SECRET, CompanionSecrets, SecretRequest,
    TokenDigest, VERIFY_BATCH,
};
pub use decode::{decode_credential_row, field};
pub use error::SnError;
pub use rows::{RaceVerdict, RefreshRowReceipt, RowReceipt, Zone};
pub use table::{CREDENTIAL_FIELDS, IntegrationUser, RowVersion};
pub use verify::{NotProven, Unverified, Verified, Written};
