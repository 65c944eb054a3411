//! What a failure means and who must act on it.
//!
//! Classification is on the OAuth `error` code, never on `error_description` (Microsoft: "Never
//! use this field to react to an error"); Entra's `error_codes` (AADSTS numbers) only refine an
//! error into a more precise class and message.

use super::actor::Actor;
use serde::Serialize;
use std::fmt;

/// The class of a failed refresh; it decides what the keeper does next and who must act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The refresh token is dead (revoked, expired, idle too long): someone must re-authorise.
    NeedsReauth,
    /// A user or an administrator must act at the provider (MFA, consent, conditional access).
    NeedsUserAction,
    /// Our configuration is wrong (client secret, client id, scope, token URL). The refresh token
    /// is kept.
    Configuration,
    /// The provider is throttling us. Try again later.
    Throttled,
    /// A passing failure (5xx, timeout, unreachable). Try again later.
    Transient,
    /// The instance refused or failed a read or write the keeper needed.
    Instance,
    /// The instance answered a write but does not store what was written (a field ACL, a data
    /// policy or a business rule discards the integration user's writes to `token_received`,
    /// or a created row's references). The answer stays journaled.
    WriteNotStored,
}

impl FailureClass {
    /// Every class.
    pub const ALL: [FailureClass; 7] = [
        FailureClass::NeedsReauth,
        FailureClass::NeedsUserAction,
        FailureClass::Configuration,
        FailureClass::Throttled,
        FailureClass::Transient,
        FailureClass::Instance,
        FailureClass::WriteNotStored,
    ];

    /// The stable label used in logs, metrics, status and the journal.
    pub fn label(self) -> &'static str {
        match self {
            FailureClass::NeedsReauth => "needs_reauth",
            FailureClass::NeedsUserAction => "needs_user_action",
            FailureClass::Configuration => "configuration",
            FailureClass::Throttled => "throttled",
            FailureClass::Transient => "transient",
            FailureClass::Instance => "instance",
            FailureClass::WriteNotStored => "write_not_stored",
        }
    }

    /// Parses [`FailureClass::label`] back (for the outcome store).
    pub fn from_label(label: &str) -> Option<FailureClass> {
        FailureClass::ALL.into_iter().find(|c| c.label() == label)
    }

    /// Whether a credential that failed this way should wait for someone to change it in
    /// ServiceNow (re-authorise) before the keeper tries again: retrying a dead refresh token
    /// every cycle only burns the provider's rate limit.
    pub fn parks_credential(self) -> bool {
        matches!(
            self,
            FailureClass::NeedsReauth | FailureClass::NeedsUserAction
        )
    }

    /// Who has to act, in words ([`Actor::role`] of [`Actor::for_class`]).
    pub fn who_acts(self) -> &'static str {
        Actor::for_class(self).role()
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The parts of a provider's error answer that classification looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderErrorCode {
    /// HTTP status of the answer.
    pub status: u16,
    /// The OAuth `error` (e.g. `invalid_grant`); empty when the body carried none.
    pub error: String,
    /// Entra's `error_codes` (AADSTS numbers).
    pub error_codes: Vec<u64>,
    /// Entra's `suberror`, when present.
    pub suberror: Option<String>,
}

/// Classifies a provider error answer.
pub fn classify_provider(e: &ProviderErrorCode) -> FailureClass {
    // Entra's refinement first: some `invalid_grant` answers are not revocations.
    for code in &e.error_codes {
        if let Some(class) = entra_class(*code) {
            return class;
        }
    }
    match e.error.as_str() {
        "invalid_grant" | "bad_refresh_token" => match e.suberror.as_deref() {
            Some(
                "basic_action"
                | "additional_action"
                | "consent_required"
                | "message_only"
                | "user_password_expired",
            ) => FailureClass::NeedsUserAction,
            _ => FailureClass::NeedsReauth,
        },
        "interaction_required" | "login_required" => FailureClass::NeedsReauth,
        "consent_required" => FailureClass::NeedsUserAction,
        "invalid_client"
        | "unauthorized_client"
        | "invalid_scope"
        | "invalid_request"
        | "unsupported_grant_type"
        | "invalid_resource"
        | "access_denied" => FailureClass::Configuration,
        "slow_down" => FailureClass::Throttled,
        "temporarily_unavailable" | "server_error" => FailureClass::Transient,
        _ => match e.status {
            429 => FailureClass::Throttled,
            500..=599 => FailureClass::Transient,
            401 | 403 => FailureClass::Configuration,
            _ => FailureClass::Configuration,
        },
    }
}

/// Entra AADSTS codes whose meaning differs from, or sharpens, their `error` (providers.md §1.7).
fn entra_class(code: u64) -> Option<FailureClass> {
    Some(match code {
        50196 | 90055 => FailureClass::Throttled,
        50033 | 90024 | 90006 | 90033 | 90090 | 90091 | 50087 | 70012 | 80005 | 40010 | 50000 => {
            FailureClass::Transient
        }
        700082 | 700084 | 50173 | 70043 | 50089 | 70000 | 70008 => FailureClass::NeedsReauth,
        50076 | 50079 | 50074 | 50078 | 65001 | 53003 | 53000 | 53001 | 53002 | 530032 | 530035
        | 50057 | 50055 | 50144 | 50053 => FailureClass::NeedsUserAction,
        7000215 | 7000222 | 7000218 | 700025 | 700027 | 50012 | 700030 | 700016 | 7000112
        | 70001 | 90002 | 90009 | 70011 | 700022 | 700023 | 28002 | 500011 | 50001 | 650056
        | 650057 | 900144 | 90014 | 9002313 | 90023 | 50126 => FailureClass::Configuration,
        _ => return None,
    })
}

/// A sentence an admin can act on, for a provider error. `registry` is the Application
/// Registry's name.
pub fn provider_guidance(e: &ProviderErrorCode, registry: &str) -> String {
    let code = e.error_codes.first().copied();
    match code {
        Some(700082) => format!(
            "refresh token idle for more than 90 days: re-authorise with Get OAuth Token on {registry}"
        ),
        Some(50173) => format!(
            "the grant was revoked (password change or admin revoke): re-authorise with Get OAuth Token on {registry}"
        ),
        Some(70043) => format!(
            "a Conditional Access sign-in frequency policy expired the session: re-authorise with Get OAuth Token on {registry}"
        ),
        Some(7000215) => format!(
            "the client secret of {registry} is wrong: put the current secret in the Application Registry (or the keeper's client_secret_env)"
        ),
        Some(7000222) => format!(
            "the client secret of {registry} has expired: create a new secret in Entra and update the Application Registry"
        ),
        Some(700016) => format!(
            "the application (client_id) of {registry} was not found in the tenant: check client_id and the token URL's tenant"
        ),
        Some(65001) => format!(
            "consent is missing or was revoked: the user or an Entra admin must grant consent, then re-authorise {registry}"
        ),
        Some(50076 | 50079 | 50074 | 50078) => format!(
            "multi-factor authentication is required: the user must sign in again and re-authorise {registry}"
        ),
        Some(53003 | 53000 | 53001 | 53002 | 530032 | 530035) => {
            "blocked by a Conditional Access policy: an Entra admin must allow this application"
                .to_string()
        }
        Some(50196) => {
            "Entra detected a request loop and is throttling: the keeper backs off".to_string()
        }
        Some(90009) => format!(
            "Entra needs an explicit resource scope: set `scope` for {registry} in the keeper config"
        ),
        Some(70011) => format!(
            "the scope sent for {registry} is invalid: fix `scope` in the keeper config or the row's scopes"
        ),
        _ => match classify_provider(e) {
            FailureClass::NeedsReauth => format!(
                "the refresh token is no longer valid ({}): re-authorise with Get OAuth Token on {registry}",
                e.error
            ),
            FailureClass::NeedsUserAction => format!(
                "the provider requires user or admin action ({}), then re-authorise {registry}",
                e.error
            ),
            FailureClass::Configuration => match e.error.as_str() {
                "invalid_client" => format!(
                    "the provider rejected the client credentials of {registry}: check client_id and client secret"
                ),
                "unauthorized_client" => format!(
                    "the client of {registry} is not allowed to use refresh tokens or is unknown to the provider"
                ),
                "invalid_scope" => {
                    format!("the scope sent for {registry} was rejected: fix `scope`")
                }
                other => format!(
                    "the provider rejected the request ({}): check the configuration of {registry}",
                    if other.is_empty() {
                        "no error code"
                    } else {
                        other
                    }
                ),
            },
            FailureClass::Throttled => {
                "the provider is throttling requests: the keeper backs off".to_string()
            }
            // A provider's answer never classifies as an instance write failure.
            FailureClass::Transient | FailureClass::Instance | FailureClass::WriteNotStored => {
                "the provider failed temporarily: the keeper retries next cycle".to_string()
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(status: u16, error: &str, codes: &[u64]) -> ProviderErrorCode {
        ProviderErrorCode {
            status,
            error: error.into(),
            error_codes: codes.to_vec(),
            suberror: None,
        }
    }

    #[test]
    fn rfc_6749_codes() {
        assert_eq!(
            classify_provider(&err(400, "invalid_grant", &[])),
            FailureClass::NeedsReauth
        );
        assert_eq!(
            classify_provider(&err(400, "interaction_required", &[])),
            FailureClass::NeedsReauth
        );
        for config in [
            "invalid_client",
            "unauthorized_client",
            "invalid_scope",
            "invalid_request",
        ] {
            assert_eq!(
                classify_provider(&err(400, config, &[])),
                FailureClass::Configuration
            );
        }
        assert_eq!(
            classify_provider(&err(503, "temporarily_unavailable", &[])),
            FailureClass::Transient
        );
        assert_eq!(
            classify_provider(&err(429, "", &[])),
            FailureClass::Throttled
        );
        assert_eq!(
            classify_provider(&err(502, "", &[])),
            FailureClass::Transient
        );
    }

    #[test]
    fn entra_loop_detection_is_throttling_not_revocation() {
        assert_eq!(
            classify_provider(&err(400, "invalid_grant", &[50196])),
            FailureClass::Throttled
        );
        assert_eq!(
            classify_provider(&err(400, "invalid_grant", &[700082])),
            FailureClass::NeedsReauth
        );
        assert_eq!(
            classify_provider(&err(400, "invalid_grant", &[50076])),
            FailureClass::NeedsUserAction
        );
        assert_eq!(
            classify_provider(&err(401, "invalid_client", &[7000215])),
            FailureClass::Configuration
        );
    }

    #[test]
    fn auth0_403_invalid_grant_is_reauth() {
        assert_eq!(
            classify_provider(&err(403, "invalid_grant", &[])),
            FailureClass::NeedsReauth
        );
    }

    #[test]
    fn guidance_names_the_registry() {
        let g = provider_guidance(&err(400, "invalid_grant", &[700082]), "SharePoint Online");
        assert!(
            g.contains("90 days") && g.contains("SharePoint Online"),
            "{g}"
        );
    }

    #[test]
    fn labels_round_trip() {
        for c in FailureClass::ALL {
            assert_eq!(FailureClass::from_label(c.label()), Some(c));
        }
    }

    proptest! {
        #[test]
        fn classification_is_total(status in 0u16..1000, error in "[a-z_]{0,24}", codes in proptest::collection::vec(0u64..10_000_000, 0..3)) {
            let e = ProviderErrorCode { status, error, error_codes: codes, suberror: None };
            let _ = classify_provider(&e);
            prop_assert!(!provider_guidance(&e, "R").is_empty());
        }
    }
}
