//! sn-oauth-keeper keeps the third-party OAuth credentials of a ServiceNow instance alive.
//!
//! # The house
//!
//! A cycle reads `oauth_credential` through the Table API, decides what to refresh, refreshes
//! at each provider's token endpoint and writes the tokens back — and a rotated refresh token
//! is in the journal before anything else happens to it and leaves it only when ServiceNow
//! provably holds it. The code is laid out around that one guarantee:
//!
//! - **The pure core decides** — [`domain`]: no network, no disk, no runtime, no clock. It pairs
//!   rows into credentials, decides where each registry's token requests may go (a pin, a
//!   well-known host, or nowhere: held back), plans a cycle (due, parked, probed, held for
//!   re-delivery), settles it into a report, a history and notices, classifies provider
//!   failures, words the guidance for whoever must act, and scrubs what peers echo.
//! - **The transaction is typed** — [`transaction`]: `Intent → Obtained → Written → Verified →
//!   Released`, each state made only by its owner (the journal, the ServiceNow adapter), so the
//!   compiler holds the order the guarantee needs.
//! - **The driver does** — [`engine`]: fetch → plan → run each credential's transaction with
//!   I/O → settle; it only drives and logs.
//! - **Adapters talk to the world**:
//!   - [`servicenow`]: the Table API and the companion; every ServiceNow field name and JSON
//!     shape lives there;
//!   - [`oauth`] and [`client_auth`]: token endpoints and `private_key_jwt` assertions;
//!   - [`journal`]: the encrypted, fsynced outbox of answers, their seal and key, and the
//!     history between cycles;
//!   - [`events`]: state changes as Event Management events on the instance.
//! - **One keeper per instance** — [`lease`]: the instance-wide lease (the companion's
//!   `/lease`), claims on credentials whose answers wait in a journal, the margin before each
//!   token request.
//! - **Time is injected** — [`clock`]: the one place that reads a clock; `clippy.toml` bans
//!   every other.
//! - **Running it** — [`daemon`] (the `run` loop, signals, admin endpoints), [`metrics`],
//!   [`observe`] (hooks from adapters to metrics and the progress bar), [`progress`],
//!   [`report`] (tables and JSON), [`status_page`] (the admin port's HTML page), [`check`] (the
//!   pre-flight checklist), [`telemetry`] (logs).
//! - **Shared plumbing** — [`config`] (the TOML file, validated into
//!   [`config::Settings`]; every error names its key, all at once), [`pacing`] (backoff,
//!   budgets, per-host caps), [`wire`] (capped bodies, `Retry-After`, `Link`).
//!
//! Outside this crate, in the same workspace: the simulator (`crates/sim`, a ServiceNow
//! instance, companion and OAuth providers that import nothing of the keeper — the `demo` and
//! `simulate` commands use it through the default `sim` feature), and the benchmark
//! (`crates/bench`).
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
pub mod lease;
pub mod metrics;
pub mod oauth;
pub mod observe;
pub mod pacing;
pub mod progress;
pub mod report;
pub mod servicenow;
pub mod status_page;
pub mod telemetry;
pub mod transaction;
pub mod wire;
