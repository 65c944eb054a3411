//! What the keeper remembers of each credential between cycles (the journal stores it; `status`
//! and the planner read it).

use super::classify::FailureClass;
use jiff::Timestamp;

/// The last outcome of a credential, as `status` and the planner read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutcome {
    /// The class of the last failure; `None` after a success.
    pub class: Option<FailureClass>,
    /// The last failure's message, for `status`.
    pub message: Option<String>,
    /// When it was recorded.
    pub at: Timestamp,
    /// The refresh row's `sys_mod_count` at that time.
    pub refresh_mod_count: u64,
    /// When the keeper last refreshed it successfully.
    pub last_success: Option<Timestamp>,
}

/// One credential's outcome of a cycle, to be remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// The refresh row's sys_id.
    pub credential: String,
    /// The registry's name.
    pub registry: String,
    /// The failure class; `None` is a success.
    pub class: Option<FailureClass>,
    /// The failure's message.
    pub message: Option<String>,
    /// The refresh row's `sys_mod_count` at that time.
    pub refresh_mod_count: u64,
}
