//! The simulator's own contract tests, over real sockets: it must behave like a real instance
//! and real providers for the keeper's tests to mean anything.
//!
//! - `support`: starting a simulator, an HTTP client, request and answer helpers.
//! - `table_api`: the Table API's parameters, value shapes, paging, writes and errors.
//! - `companion`: the companion Scripted REST API against seeded estates and Table API writes.
//! - `providers`: the token endpoints of the three provider kinds: rotation, reuse detection,
//!   client authentication, Entra's v1 and v2 paths.
//! - `faults`: fault injection (statuses, delays, dropped connections, odd bodies).
//! - `lease`: the companion's lease under concurrent keepers, and the test hooks on it.
//! - `update_set`: what the update set sets up beyond the companion (the scoped delete ACL, the
//!   scratch registry of `check --round-trip`).
//! - `companion_contract`: the companion's shared contract cases (also run against the real
//!   script under Node) against the simulator.

// Helpers shared by tests panic on the unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod companion;
mod companion_contract;
mod faults;
mod lease;
mod providers;
mod support;
mod table_api;
mod update_set;
