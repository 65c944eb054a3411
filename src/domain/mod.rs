//! The pure core: no network, no disk, no clock, no runtime. Everything here takes `now` as an
//! argument so that it can be tested exhaustively; the engine does the I/O around it.
//!
//! - [`credential`]: `oauth_credential` rows and how they pair into credentials.
//! - [`plan`]: one credential's state and whether to refresh it, and why.
//! - [`cycle`]: a whole cycle's decisions — what to refresh, what to hold back, which journaled
//!   answer updates which row — and its settlement into a report, a history and notices.
//! - [`park`]: registries parked after a configuration error, and when they are tried again.
//! - [`answer`]: the lifetimes a token answer implies.
//! - [`classify`]: what a provider's error means and who must act.
//! - [`actor`]: who must act on a credential, from what its last cycle did.
//! - [`guidance`]: the sentence that tells that person what to do.
//! - [`report`]: outcomes and cycle reports.
//! - [`scrub`]: secrets removed from text the keeper keeps, control characters from text it
//!   shows.
//! - [`history`]: what is remembered of each credential between cycles.
//! - [`lease`]: the instance-wide keeper lease: renewal, the margin before a token request,
//!   holder ids, stale claims.
//! - [`deadline`]: when a refresh token dies.
//! - [`endpoint`]: where a registry's token requests may go — pinned, well-known, or held back —
//!   and which `[[registry]]` applies to which registry.
//! - [`time`]: ServiceNow date-times and durations.

pub mod actor;
pub mod answer;
pub mod classify;
pub mod credential;
pub mod cycle;
pub mod deadline;
pub mod endpoint;
pub mod guidance;
pub mod history;
pub mod lease;
pub mod park;
pub mod plan;
pub mod report;
pub mod scrub;
pub mod time;
