//! One integration-test binary. Every test runs the real keeper (in-process engine or the real
//! binary as a child process) against the simulator (`sn-oauth-keeper-sim`, `crates/sim/`)
//! over loopback sockets. The simulator's own contract tests live in `crates/sim/tests/`, the
//! benchmark's smoke test in `crates/bench/tests/`.
//!
//! - `support`: the test bed (simulator + settings + journal) and helpers.
//! - `refresh`: each credential state ends as it should; what is and is not written.
//! - `writes`: encryption flag, time zones, paging.
//! - `cli`: the binary's commands, exit codes, dry run, and secrets in output.
//! - `journal`: re-delivery of answers the instance did not take; lost answers; one keeper per state dir.
//! - `daemon`: `run` as a service manager runs it: endpoints and their semantics, SIGTERM with
//!   a grace period, SIGHUP reload, one log line per idle cycle.
//! - `docs`: the documentation holds together — every relative link and anchor resolves, the
//!   metrics sample and table are what `/metrics` serves.
//! - `ops`: `--help`, completions, the man page, colour and progress only on a terminal, and the
//!   configs shipped in `deploy/`.
//! - `lease`: two keepers on one instance (chaos): started together, one paused past the lease
//!   while it holds unconfirmed answers, one killed, `once` beside a daemon — against the
//!   simulator's strict rotating provider and oidc-provider; no token is ever presented twice.
//!   And a keeper gone for good: `check` names its claims, they hold their credentials, `lease
//!   drop-claims` frees them; a keeper id naming this keeper's journal is called out.
//! - `kill`: SIGKILL the real binary at each point of a refresh; nothing is lost after a restart.
//! - `faults`: the fault suite — every odd answer of the instance and the providers.
//! - `hostile`: the hostile-input suite — echoed secrets, redirects, huge, undecodable and
//!   nested answers, absurd lifetimes, escapes in names, ids that are not ids, a token_url
//!   moved mid-cycle, duplicate names — and no secret in anything the keeper leaves.
//! - `races`: registry parking, re-authorisation, other writers of the same row.
//! - `round_trip`: `check --round-trip` passes on the simulator, and each wrong belief about
//!   writes (a simulator quirk) fails its own step with its fix; nothing is left behind.
//! - `reporting`: `[report]` events on the instance, one per state change.
//! - `routes`: secrets go only where they are pinned — a moved instance `token_url` is ignored
//!   and said once, an unpinned keeper-held secret holds its registry back.
//! - `standby`: two keepers on one instance, active and standby: the standby refreshes nothing
//!   until the holder stops, then takes over; no token is presented twice.
//! - `instance`: the instance side of the runbook — `check` names each missing step; least
//!   privilege; `auth = "oauth"` through the instance's `/oauth_token.do`.
//! - `entra`: Entra v1 and v2 endpoints in the simulator (scope or resource; tenant ids,
//!   `organizations`, `common`), the kind told by the config; certificate credentials.
//! - `oidc`: the real binary against a real authorization server (oidc-provider, installed by
//!   the test itself): every client authentication, rotation with reuse detection, scope
//!   subsets, dead grants, introspection of every stored token.
//! - `pysnc`: ServiceNow's own Python client (PySNC, installed by the test itself) against the
//!   real `simulate` binary: paging, encoded queries, dot-walks, display values, `get()`, a
//!   401 and writes, each compared with what the simulator's raw API says.
//! - `status_page`: the admin port's status page and its JSON over HTTP (filters, escaping,
//!   `status --format json`'s document, no secret) and in headless Chromium (names stay text;
//!   the screenshots in `docs/img/`).
//! - `time`: whole cycles driven through a manual clock (credentials falling due, a parked
//!   registry's hourly probe) without waiting.
//! - `transcripts`: `--record` hides every secret; committed transcripts replay against the
//!   keeper's decoders and a simulator seeded from them.
//! - `transaction`: the refresh transaction as a stateful property — random instance faults and
//!   a crash after any transition, against the provider's own books.

// Helpers shared by tests panic on the unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod daemon;
mod docs;
mod entra;
mod faults;
mod hostile;
mod instance;
mod journal;
mod kill;
mod lease;
mod oidc;
mod ops;
#[cfg(feature = "sim")]
mod pysnc;
mod races;
mod refresh;
mod reporting;
mod round_trip;
mod routes;
mod standby;
mod status_page;
mod support;
mod time;
mod transaction;
mod transcripts;
mod verified;
mod writes;
