//! One integration-test binary. Every test runs the real keeper (in-process engine or the real
//! binary as a child process) against the built-in simulator over loopback sockets.
//!
//! - `support`: the test bed (simulator + settings + journal) and helpers.
//! - `refresh`: each credential state ends as it should; what is and is not written.
//! - `writes`: encryption flag, time zones, paging.
//! - `cli`: the binary's commands, exit codes, dry run, and secrets in output.
//! - `journal`: re-delivery of answers the instance did not take; lost answers; one keeper per state dir.
//! - `daemon`: `run` with its endpoints and a graceful stop on SIGTERM.
//! - `sim`: the simulator's own contract tests (Table API, companion, providers, faults).

// Helpers shared by tests panic on the unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod daemon;
mod journal;
mod refresh;
mod sim;
mod support;
mod writes;
