//! What to tell the person who must act: one sentence per failure, naming the credential's
//! registry and the fix, and the warnings of a command that can cost a grant (`lease
//! drop-claims`). Secret-free by construction: only codes, names and the adapters'
//! already-redacted error text go in.

use super::classify::{FailureClass, ProviderErrorCode, provider_guidance};
use super::credential::Credential;
use super::plan::Reason;
use super::time::format_sn_utc;
use jiff::Timestamp;
use std::time::Duration;

/// The name a credential's registry is shown by: its name, or its sys_id when the name is
/// unreadable.
pub fn registry_label(c: &Credential) -> String {
    if c.refresh.registry.name.is_empty() {
        c.refresh.registry.sys_id.clone()
    } else {
        c.refresh.registry.name.clone()
    }
}

/// Why a credential the planner blocks cannot be refreshed, and what to do.
pub fn blocked(reason: &Reason, registry: &str) -> String {
    match reason {
        Reason::RegistryIncomplete => format!(
            "{reason}: complete the Application Registry {registry} (token_url, client_id) or check that the integration user can read oauth_entity"
        ),
        _ => format!("{reason}: re-authorise with Get OAuth Token on {registry}"),
    }
}

/// How the companion failed to hand out secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompanionFailure {
    /// It is not at `instance.companion_path` (404).
    NotInstalled,
    /// The integration user may not call it (403).
    NotAllowed,
    /// Anything else.
    Other,
}

/// What to do when the companion failed; `error` is the adapter's (secret-free) description.
pub fn companion(failure: CompanionFailure, error: &str) -> String {
    match failure {
        CompanionFailure::NotInstalled => format!(
            "the companion is not installed at instance.companion_path ({error}): install it from migrations-docs/"
        ),
        CompanionFailure::NotAllowed => format!(
            "the integration user may not call the companion ({error}): grant it the companion's role"
        ),
        CompanionFailure::Other => format!("the companion failed: {error}"),
    }
}

/// The companion answered, but without a refresh token for the credential.
pub const NO_REFRESH_TOKEN: &str = "the companion returned no refresh token for this credential (token_received empty or not decryptable): re-authorise it with Get OAuth Token";

/// The journal could not record the intent, so nothing was sent.
pub fn journal_unwritable(error: &str) -> String {
    format!("the journal is not writable ({error}); nothing was sent")
}

/// A fresh answer could not be written to ServiceNow.
pub fn write_failed(error: &str) -> String {
    format!(
        "refreshed at the provider, but writing to ServiceNow failed: {error}; the answer is kept in the journal and re-delivered next cycle"
    )
}

/// A journaled answer still could not be written.
pub fn redelivery_failed(error: &str) -> String {
    format!(
        "a journaled token answer could not be written to ServiceNow: {error}; it stays in the journal"
    )
}

/// The runbook section for writes the instance answers but does not keep.
pub const WRITE_NOT_STORED_RUNBOOK: &str = "migrations-docs/README.md#writes-that-do-not-stick";

/// ServiceNow answered the writes of an answer but does not store what was written; `why` says
/// which rows and fields (secret-free).
pub fn write_not_stored(why: &str) -> String {
    format!(
        "ServiceNow answered the writes but does not store what was written ({why}): a field ACL, data policy or business rule discards the integration user's writes to oauth_credential.token_received (or resets the new row's peer, oauth_requestor_profile or user). Check the write ACLs on oauth_credential.token_received, data policies and business rules on oauth_credential (runbook: {WRITE_NOT_STORED_RUNBOOK}). The answer stays in the journal and is delivered again each cycle, with no new token request, until it sticks"
    )
}

/// The companion could not say what ServiceNow stores; `error` is the adapter's description.
pub fn unverifiable(error: &str, missing_endpoint: bool) -> String {
    if missing_endpoint {
        format!(
            "the companion has no /verify endpoint ({error}): update the companion from migrations-docs/ (runbook step 2); the answer stays in the journal until a write can be verified"
        )
    } else {
        format!(
            "the companion could not confirm what ServiceNow stored ({error}); the answer stays in the journal and is delivered again next cycle"
        )
    }
}

/// A journal record that does not open holds back its credential.
pub fn unreadable_record(record: &str, error: &str) -> String {
    format!(
        "journal record {record} does not open ({error}); its credential is not refreshed until it does — configure the key it was sealed with (state.key_env / state.key_file), then `sn-oauth-keeper journal list` shows it readable. It is never discarded"
    )
}

/// Another keeper claims a due credential: its journal may hold the only valid refresh token.
pub fn claimed_elsewhere(holder: &str) -> String {
    format!(
        "waiting for keeper {holder}'s journal: it claims this credential, so it may hold the only valid refresh token (refreshing with the old one would burn the grant at a rotating provider); it is left alone until that keeper delivers and drops the claim, the credential is re-authorised, or an operator drops the claims of a keeper that is gone for good (`sn-oauth-keeper lease drop-claims --holder {holder}`)"
    )
}

/// What to do about a twin: a keeper whose holder id names this keeper's journal under another
/// host name.
pub fn lease_twin(twin: &str) -> String {
    format!(
        "keeper {twin} uses this keeper's journal identity under another host name: either this host was renamed (a pod or container named anew: give it a fixed host name, as the shipped manifests do) — then its claims are this keeper's own, and `sn-oauth-keeper lease drop-claims --holder {twin}` frees those credentials once this keeper has delivered its journal — or the state directory was copied to a second keeper, which breaks the lease's guarantee: stop one of them and give the other a new state directory"
    )
}

/// Why `lease drop-claims` refuses the claims of `holder`: it holds the lease, with `expires_in`
/// left, so it is alive.
pub fn drop_claims_of_live_holder(holder: &str, expires_in: Duration) -> String {
    format!(
        "keeper {holder} holds the lease now ({} more second(s)): it is alive, and its claims are its own to drop; stop it first, or let it deliver its journal",
        expires_in.as_secs()
    )
}

/// What `lease drop-claims` is about to drop: `holder`'s claims on the credentials `claimed`
/// (their sys_ids).
pub fn dropping_claims(holder: &str, claimed: &[String]) -> String {
    format!(
        "dropping keeper {holder}'s claims on {} credential(s): {}",
        claimed.len(),
        claimed.join(", ")
    )
}

/// What dropping `holder`'s claims risks, said before the operator confirms it.
pub fn drop_claims_risk(holder: &str) -> String {
    format!(
        "the next keeper refreshes them with the refresh tokens ServiceNow holds. If {holder}'s journal still exists it may hold the only valid refresh tokens of these credentials: at a provider that rotates them, the old ones are then refused and the grants revoked. Drop the claims only when that keeper's state directory (or its key) is lost for good."
    )
}

/// How a token request failed, as far as guidance cares.
#[derive(Debug, Clone, Copy)]
pub enum TokenFailure<'a> {
    /// The provider answered with an OAuth error.
    Rejected(&'a ProviderErrorCode),
    /// The token URL was refused before sending.
    BadUrl,
    /// The answer was lost or unreadable (twice).
    Lost,
    /// The endpoint could not be reached.
    Unreachable,
    /// A non-OAuth error status.
    Http,
}

/// What to do about a failed token request of class `class` at `registry`.
pub fn token(failure: TokenFailure<'_>, class: FailureClass, registry: &str) -> String {
    match failure {
        TokenFailure::Rejected(code) => provider_guidance(code, registry),
        TokenFailure::BadUrl => {
            format!("fix the token_url of the Application Registry {registry}")
        }
        TokenFailure::Lost => "the provider's answer was lost twice; the keeper retries next cycle (if the provider rotated the token meanwhile, re-authorise)".to_string(),
        TokenFailure::Unreachable => format!(
            "the token endpoint of {registry} is unreachable; the keeper retries next cycle"
        ),
        TokenFailure::Http => match class {
            FailureClass::Throttled | FailureClass::Transient => {
                "the provider is failing or throttling; the keeper retries next cycle".to_string()
            }
            _ => format!(
                "the token endpoint of {registry} answered without an OAuth error: check its token_url"
            ),
        },
    }
}

/// A refresh token the provider no longer accepts after a refresh sent at `sent` by a keeper
/// that was killed before the rotated answer arrived.
pub fn lost_rotation(sent: Timestamp, registry: &str) -> String {
    format!(
        "a refresh sent at {} by a keeper that was then killed was answered with a rotated token that never arrived; the provider no longer accepts the old one: re-authorise with Get OAuth Token on {registry}",
        format_sn_utc(sent)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_claims_names_the_keeper_and_its_credentials() {
        assert_eq!(
            drop_claims_of_live_holder("host-a:1f2e", Duration::from_secs(42)),
            "keeper host-a:1f2e holds the lease now (42 more second(s)): it is alive, and its claims are its own to drop; stop it first, or let it deliver its journal"
        );
        assert_eq!(
            dropping_claims("host-a:1f2e", &["c1".to_string(), "c2".to_string()]),
            "dropping keeper host-a:1f2e's claims on 2 credential(s): c1, c2"
        );
        let risk = drop_claims_risk("host-a:1f2e");
        assert!(
            risk.contains("If host-a:1f2e's journal still exists"),
            "{risk}"
        );
        assert!(risk.ends_with("is lost for good."), "{risk}");
    }
}
