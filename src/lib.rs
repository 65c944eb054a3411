//! sn-oauth-keeper keeps the third-party OAuth credentials of a ServiceNow instance alive.
//!
//! Map of the crate:
//! - [`config`]: the TOML configuration, validated into [`config::Settings`]; every error names
//!   the file and the key, all of a file's errors are reported together, and none shows a value
//!   that could be a secret.
//! - [`domain`]: the pure, I/O-free core. It pairs `oauth_credential` rows into credentials,
//!   decides which are due and why ([`domain::plan`]), parses ServiceNow date-times and
//!   durations ([`domain::time`]) and classifies provider failures ([`domain::classify`]).
//! - [`servicenow`]: the Table API and companion adapter (paging, writes, error bodies).
//! - [`oauth`]: the token-endpoint adapter (request building and lenient response parsing).
//! - [`client_auth`]: `private_key_jwt` client assertions (RFC 7523) signed with the
//!   registry's certificate key, as Entra certificate credentials need them.
//! - [`pacing`]: backoff with full jitter, the per-cycle retry budget, per-host caps.
//! - [`journal`]: the encrypted, durable journal of token answers not yet confirmed by
//!   ServiceNow, and the per-credential outcome store read by `status`.
//! - [`engine`]: one refresh cycle — discover, re-deliver, plan, refresh, write back.
//! - [`events`]: state changes reported on the instance as Event Management events.
//! - [`report`]: human and JSON renderings of a cycle or of the estate.
//! - [`daemon`]: the `run` loop: cycles, signals (stop with a grace period, reload on SIGHUP),
//!   and the admin endpoints `/metrics`, `/healthz` and `/readyz` with their semantics.
//! - [`metrics`]: the Prometheus metrics (prometheus-client), per credential values computed at
//!   scrape time.
//! - [`observe`]: the hooks through which the adapters report HTTP exchanges and the engine its
//!   progress, to metrics or a progress bar.
//! - [`progress`]: the terminal progress bar of a cycle (stderr, terminals only), sharing the
//!   line with log output.
//! - [`check`]: the pre-flight checklist.
//! - [`telemetry`]: structured logging.
//! - [`wire`]: HTTP details shared by the adapters (capped bodies, `Retry-After`, `Link`).
#![forbid(unsafe_code)]

pub mod check;
pub mod client_auth;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod engine;
pub mod events;
pub mod journal;
pub mod metrics;
pub mod oauth;
pub mod observe;
pub mod pacing;
pub mod progress;
pub mod report;
pub mod servicenow;
pub mod telemetry;
pub mod transaction;
pub mod wire;
