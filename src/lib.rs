//! sn-oauth-keeper keeps the third-party OAuth credentials of a ServiceNow instance alive.
//!
//! Map of the crate:
//! - [`config`]: the TOML configuration, validated into [`config::Settings`]; every error names
//!   the file and the key.
//! - [`domain`]: the pure, I/O-free core. It pairs `oauth_credential` rows into credentials,
//!   decides which are due and why ([`domain::plan`]), parses ServiceNow date-times and
//!   durations ([`domain::time`]) and classifies provider failures ([`domain::classify`]).
//! - [`servicenow`]: the Table API and companion adapter (paging, writes, error bodies).
//! - [`oauth`]: the token-endpoint adapter (request building and lenient response parsing).
//! - [`journal`]: the encrypted, durable journal of token answers not yet confirmed by
//!   ServiceNow, and the per-credential outcome store read by `status`.
//! - [`engine`]: one refresh cycle — discover, re-deliver, plan, refresh, write back.
//! - [`report`]: human and JSON renderings of a cycle or of the estate.
//! - [`daemon`]: the `run` loop with `/metrics`, `/healthz` and `/readyz`.
//! - [`check`]: the pre-flight checklist.
//! - [`sim`]: the built-in ServiceNow + OAuth provider simulator used by `demo`, `simulate`
//!   and the tests.
//! - [`telemetry`]: structured logging.
//! - [`wire`]: HTTP details shared by the adapters (capped bodies, `Retry-After`, `Link`).
#![forbid(unsafe_code)]

pub mod check;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod engine;
pub mod journal;
pub mod oauth;
pub mod report;
pub mod servicenow;
pub mod sim;
pub mod telemetry;
pub mod wire;
