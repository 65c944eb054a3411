//! Who must act on a credential: derived from what its last cycle did, so that logs, events and
//! the status page name the same person for the same failure.

use super::classify::FailureClass;
use super::report::{Hold, Outcome};

/// Who must act before a credential is well again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Nobody: nothing is wrong, or the keeper refreshes it this cycle or the next.
    Nobody,
    /// Nobody yet: the failure passes by itself (throttling, an outage, a shutdown) and the
    /// keeper tries again next cycle.
    KeeperRetries,
    /// Someone who can consent at the provider re-authorises the credential in ServiceNow
    /// (Get OAuth Token): its refresh token is dead.
    Reauthoriser,
    /// The end user or the identity provider's admin: MFA, consent, conditional access.
    ProviderUser,
    /// Whoever configures the Application Registry in ServiceNow or the app at the identity
    /// provider: a wrong client secret or id, scope or token URL.
    RegistryAdmin,
    /// The ServiceNow admin: the integration user's rights or the instance's health.
    InstanceAdmin,
    /// The ServiceNow admin: a field ACL, data policy or business rule discards the keeper's
    /// writes.
    WriteRulesAdmin,
    /// The keeper that claims the credential (its holder id): it delivers the answer in its
    /// journal; if it is gone for good, an operator drops its claims.
    OtherKeeper(String),
    /// The keeper that holds the instance's lease refreshes it; nobody here.
    LeaseHolder,
}

impl Actor {
    /// Who must act after a failure of this class.
    pub fn for_class(class: FailureClass) -> Actor {
        match class {
            FailureClass::NeedsReauth => Actor::Reauthoriser,
            FailureClass::NeedsUserAction => Actor::ProviderUser,
            FailureClass::Configuration => Actor::RegistryAdmin,
            FailureClass::Throttled | FailureClass::Transient => Actor::KeeperRetries,
            FailureClass::Instance => Actor::InstanceAdmin,
            FailureClass::WriteNotStored => Actor::WriteRulesAdmin,
        }
    }

    /// Who, in words (the `who` of logs and events, the "who must act" of the status page).
    pub fn role(&self) -> &'static str {
        match self {
            Actor::Nobody => "nobody",
            Actor::KeeperRetries => "nobody yet (the keeper retries)",
            Actor::Reauthoriser => "ServiceNow admin (re-authorise the credential)",
            Actor::ProviderUser => "the end user or the identity-provider admin",
            Actor::RegistryAdmin => "ServiceNow admin (Application Registry) or IdP admin",
            Actor::InstanceAdmin => "ServiceNow admin (integration user rights, instance health)",
            Actor::WriteRulesAdmin => {
                "ServiceNow admin (field ACLs, data policies and business rules on oauth_credential)"
            }
            Actor::OtherKeeper(_) => {
                "the keeper that claims it (an operator, if that keeper is gone for good)"
            }
            Actor::LeaseHolder => "nobody here (the keeper holding the lease refreshes it)",
        }
    }

    /// Whether a person must do something (as opposed to waiting for a keeper).
    pub fn is_person(&self) -> bool {
        matches!(
            self,
            Actor::Reauthoriser
                | Actor::ProviderUser
                | Actor::RegistryAdmin
                | Actor::InstanceAdmin
                | Actor::WriteRulesAdmin
        )
    }
}

/// Who must act on a credential whose last cycle ended with `outcome`.
pub fn who_must_act(outcome: &Outcome) -> Actor {
    match outcome {
        Outcome::Failed { class, .. } => Actor::for_class(*class),
        Outcome::Blocked { hold, .. } => match hold {
            Hold::Person(class) => Actor::for_class(*class),
            Hold::ClaimedBy(holder) => Actor::OtherKeeper(holder.clone()),
            Hold::NoLease => Actor::LeaseHolder,
        },
        Outcome::Deferred => Actor::KeeperRetries,
        Outcome::Skipped
        | Outcome::WouldRefresh
        | Outcome::WouldRedeliver
        | Outcome::Refreshed { .. }
        | Outcome::Redelivered => Actor::Nobody,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(class: FailureClass) -> Outcome {
        Outcome::Failed {
            class,
            message: "m".into(),
        }
    }

    fn blocked(hold: Hold) -> Outcome {
        Outcome::Blocked {
            hold,
            message: "m".into(),
        }
    }

    #[test]
    fn a_dead_refresh_token_needs_whoever_can_reauthorise() {
        assert_eq!(
            who_must_act(&failed(FailureClass::NeedsReauth)),
            Actor::Reauthoriser
        );
        assert_eq!(
            who_must_act(&blocked(Hold::Person(FailureClass::NeedsReauth))),
            Actor::Reauthoriser
        );
        assert!(Actor::Reauthoriser.is_person());
    }

    #[test]
    fn configuration_goes_to_the_registry_and_instance_faults_to_servicenow() {
        assert_eq!(
            who_must_act(&failed(FailureClass::Configuration)),
            Actor::RegistryAdmin
        );
        assert_eq!(
            who_must_act(&blocked(Hold::Person(FailureClass::Configuration))),
            Actor::RegistryAdmin
        );
        assert_eq!(
            who_must_act(&failed(FailureClass::Instance)),
            Actor::InstanceAdmin
        );
        assert_eq!(
            who_must_act(&failed(FailureClass::WriteNotStored)),
            Actor::WriteRulesAdmin
        );
        assert_eq!(
            who_must_act(&failed(FailureClass::NeedsUserAction)),
            Actor::ProviderUser
        );
    }

    #[test]
    fn passing_failures_and_other_keepers_need_no_person() {
        for outcome in [
            failed(FailureClass::Throttled),
            failed(FailureClass::Transient),
            Outcome::Deferred,
        ] {
            let actor = who_must_act(&outcome);
            assert_eq!(actor, Actor::KeeperRetries, "{outcome:?}");
            assert!(!actor.is_person());
        }
        let claimed = who_must_act(&blocked(Hold::ClaimedBy("host/state".into())));
        assert_eq!(claimed, Actor::OtherKeeper("host/state".into()));
        assert!(!claimed.is_person());
        let standby = who_must_act(&blocked(Hold::NoLease));
        assert_eq!(standby, Actor::LeaseHolder);
        assert!(!standby.is_person());
    }

    #[test]
    fn success_and_nothing_to_do_need_nobody() {
        for outcome in [
            Outcome::Skipped,
            Outcome::WouldRefresh,
            Outcome::WouldRedeliver,
            Outcome::Redelivered,
            Outcome::Refreshed {
                rotated: true,
                created_access_row: false,
            },
        ] {
            assert_eq!(who_must_act(&outcome), Actor::Nobody, "{outcome:?}");
        }
    }

    #[test]
    fn every_class_names_someone() {
        for class in FailureClass::ALL {
            let actor = Actor::for_class(class);
            assert_ne!(actor, Actor::Nobody, "{class}");
            assert_ne!(actor.role(), Actor::Nobody.role(), "{class}");
        }
    }
}
