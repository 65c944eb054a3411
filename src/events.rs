//! Status where admins look: on every state change of a credential (needs re-authorisation,
//! needs user action, configuration error, recovered) the keeper creates an Event Management
//! event (`em_event`) on the instance, so the admin's usual alert, notification and incident rules
//! fire. Events carry a stable `message_key` per credential (or registry), so a "recovered" event
//! with severity 0 (Clear) closes the alert the failure opened.

use crate::clock::{SharedClock, SystemClock};
use crate::config::ReportSettings;
use crate::domain::classify::FailureClass;
use crate::domain::endpoint::Topic;
use crate::domain::time::format_sn_utc;
use crate::servicenow::{Instance, SnError};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

/// A change worth telling the instance about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// A credential started failing with a class that needs a person.
    CredentialFailing {
        /// The refresh row's sys_id.
        credential: String,
        /// The credential's name.
        name: String,
        /// The registry's name.
        registry: String,
        /// Why it fails.
        class: FailureClass,
        /// What to do.
        guidance: String,
    },
    /// A credential that was failing works again.
    CredentialRecovered {
        /// The refresh row's sys_id.
        credential: String,
        /// The credential's name.
        name: String,
        /// The registry's name.
        registry: String,
    },
    /// A registry was parked for a configuration error.
    RegistryParked {
        /// The registry's sys_id.
        registry_id: String,
        /// Its name.
        registry: String,
        /// What to do.
        guidance: String,
    },
    /// A parked registry works again.
    RegistryRecovered {
        /// The registry's sys_id.
        registry_id: String,
        /// Its name.
        registry: String,
    },
    /// A pinned registry's `token_url` on the instance differs from the pin (the keeper keeps
    /// to the pin).
    TokenUrlMoved {
        /// The registry's sys_id.
        registry_id: String,
        /// Its name.
        registry: String,
        /// `host[:port]` of the pin.
        pinned: String,
        /// `host[:port]` of the instance's `token_url`.
        instance: String,
    },
    /// A registry's credentials are held back: no token request is sent for them.
    RegistryHeldBack {
        /// The registry's sys_id.
        registry_id: String,
        /// Its name.
        registry: String,
        /// Why, and what to do.
        guidance: String,
    },
    /// A route notice no longer holds (the `token_url` matches the pin again, the registry is
    /// no longer held back).
    RouteNoticeEnded {
        /// The registry's sys_id.
        registry_id: String,
        /// Its name.
        registry: String,
        /// What had been said.
        topic: Topic,
    },
}

/// The `em_event` fields for a change. Pure; the field meanings follow Event Management:
/// `severity` 1 critical … 4 warning, 0 clear; `message_key` groups events into one alert.
pub fn event_fields(
    change: &StateChange,
    settings: &ReportSettings,
    now: Timestamp,
) -> Map<String, Value> {
    let (resource, key, severity, metric, description, info) = match change {
        StateChange::CredentialFailing {
            credential,
            name,
            registry,
            class,
            guidance,
        } => (
            credential.clone(),
            format!("sn-oauth-keeper:credential:{credential}"),
            match class {
                FailureClass::NeedsReauth => "2",
                _ => "3",
            },
            class.label(),
            format!(
                "OAuth credential \"{name}\" ({registry}) {}: {guidance}",
                match class {
                    FailureClass::NeedsReauth => "needs re-authorisation",
                    FailureClass::NeedsUserAction => "needs user or admin action",
                    _ => "fails",
                }
            ),
            json!({"credential": credential, "name": name, "registry": registry, "class": class.label(), "who": class.who_acts()}),
        ),
        StateChange::CredentialRecovered {
            credential,
            name,
            registry,
        } => (
            credential.clone(),
            format!("sn-oauth-keeper:credential:{credential}"),
            "0",
            "recovered",
            format!("OAuth credential \"{name}\" ({registry}) works again"),
            json!({"credential": credential, "name": name, "registry": registry, "class": "recovered"}),
        ),
        StateChange::RegistryParked {
            registry_id,
            registry,
            guidance,
        } => (
            registry_id.clone(),
            format!("sn-oauth-keeper:registry:{registry_id}"),
            "2",
            FailureClass::Configuration.label(),
            format!(
                "Application Registry \"{registry}\" is misconfigured; its credentials are not refreshed: {guidance}"
            ),
            json!({"registry_sys_id": registry_id, "registry": registry, "class": "configuration", "who": FailureClass::Configuration.who_acts()}),
        ),
        StateChange::RegistryRecovered {
            registry_id,
            registry,
        } => (
            registry_id.clone(),
            format!("sn-oauth-keeper:registry:{registry_id}"),
            "0",
            "recovered",
            format!("Application Registry \"{registry}\" works again"),
            json!({"registry_sys_id": registry_id, "registry": registry, "class": "recovered"}),
        ),
        StateChange::TokenUrlMoved {
            registry_id,
            registry,
            pinned,
            instance,
        } => (
            registry_id.clone(),
            route_key(registry_id, Topic::TokenUrlMoved),
            "4",
            Topic::TokenUrlMoved.as_str(),
            format!(
                "Application Registry \"{registry}\": its token_url now points at {instance}; the keeper keeps sending its token requests to the pinned {pinned}. If the change is wanted, change the pin in the keeper's config; if not, someone with admin rights changed the registry"
            ),
            json!({"registry_sys_id": registry_id, "registry": registry, "pinned_host": pinned, "instance_host": instance}),
        ),
        StateChange::RegistryHeldBack {
            registry_id,
            registry,
            guidance,
        } => (
            registry_id.clone(),
            route_key(registry_id, Topic::HeldBack),
            "2",
            Topic::HeldBack.as_str(),
            format!(
                "Application Registry \"{registry}\": its credentials are not refreshed ({guidance})"
            ),
            json!({"registry_sys_id": registry_id, "registry": registry, "class": "configuration", "who": FailureClass::Configuration.who_acts()}),
        ),
        StateChange::RouteNoticeEnded {
            registry_id,
            registry,
            topic,
        } => (
            registry_id.clone(),
            route_key(registry_id, *topic),
            "0",
            "recovered",
            format!(
                "Application Registry \"{registry}\": {}",
                match topic {
                    Topic::TokenUrlMoved => "its token_url matches the keeper's pin again",
                    Topic::HeldBack => "no longer held back",
                }
            ),
            json!({"registry_sys_id": registry_id, "registry": registry, "class": "recovered"}),
        ),
    };
    let mut fields = Map::new();
    fields.insert("source".into(), Value::from(settings.source.clone()));
    fields.insert("event_class".into(), Value::from("sn-oauth-keeper"));
    fields.insert("node".into(), Value::from(settings.node.clone()));
    fields.insert("type".into(), Value::from("OAuth credential"));
    fields.insert("resource".into(), Value::from(resource));
    fields.insert("metric_name".into(), Value::from(metric));
    fields.insert("message_key".into(), Value::from(key));
    fields.insert("severity".into(), Value::from(severity));
    fields.insert("description".into(), Value::from(description));
    fields.insert("additional_info".into(), Value::from(info.to_string()));
    fields.insert("time_of_event".into(), Value::from(format_sn_utc(now)));
    fields
}

/// The `message_key` of a registry's route notices: one alert per registry and topic, which
/// [`StateChange::RouteNoticeEnded`] closes.
fn route_key(registry_id: &str, topic: Topic) -> String {
    format!("sn-oauth-keeper:registry:{registry_id}:{}", topic.as_str())
}

/// Creates the events on the instance.
#[derive(Debug, Clone)]
pub struct EventReporter {
    instance: Instance,
    settings: ReportSettings,
    clock: SharedClock,
}

impl EventReporter {
    /// A reporter writing through `instance`.
    pub fn new(instance: Instance, settings: ReportSettings) -> EventReporter {
        EventReporter {
            instance,
            settings,
            clock: SystemClock::shared(),
        }
    }

    /// The reporter, with `time_of_event` read from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> EventReporter {
        self.clock = clock;
        self
    }

    /// Creates the event; a failure is logged and never fails the cycle.
    pub async fn emit(&self, change: StateChange) {
        let fields = event_fields(&change, &self.settings, self.clock.now());
        match self
            .instance
            .create_event(&self.settings.table, fields)
            .await
        {
            Ok(()) => {
                tracing::debug!(event = "report.event_created", change = ?change, "event created on the instance")
            }
            Err(e) => report_failure(&e),
        }
    }
}

fn report_failure(e: &SnError) {
    tracing::warn!(
        event = "report.failed",
        error = %e,
        "could not create the status event on the instance (the integration user needs role evt_mgmt_integration)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ReportSettings {
        ReportSettings {
            table: "em_event".into(),
            source: "sn-oauth-keeper".into(),
            node: "keeper-1".into(),
        }
    }

    #[test]
    fn failure_and_recovery_share_a_message_key() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let failing = event_fields(
            &StateChange::CredentialFailing {
                credential: "c1".into(),
                name: "Mailbox".into(),
                registry: "Graph".into(),
                class: FailureClass::NeedsReauth,
                guidance: "re-authorise".into(),
            },
            &settings(),
            now,
        );
        let recovered = event_fields(
            &StateChange::CredentialRecovered {
                credential: "c1".into(),
                name: "Mailbox".into(),
                registry: "Graph".into(),
            },
            &settings(),
            now,
        );
        assert_eq!(failing["message_key"], recovered["message_key"]);
        assert_eq!(failing["severity"], "2");
        assert_eq!(recovered["severity"], "0");
        assert_eq!(failing["resource"], "c1");
        assert!(
            failing["description"]
                .as_str()
                .unwrap()
                .contains("needs re-authorisation")
        );
        let info: Value =
            serde_json::from_str(failing["additional_info"].as_str().unwrap()).unwrap();
        assert_eq!(info["class"], "needs_reauth");
    }

    #[test]
    fn a_route_notice_and_its_end_share_a_message_key_per_topic() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let moved = event_fields(
            &StateChange::TokenUrlMoved {
                registry_id: "e1".into(),
                registry: "Graph".into(),
                pinned: "login.microsoftonline.com".into(),
                instance: "evil.example".into(),
            },
            &settings(),
            now,
        );
        let ended = event_fields(
            &StateChange::RouteNoticeEnded {
                registry_id: "e1".into(),
                registry: "Graph".into(),
                topic: Topic::TokenUrlMoved,
            },
            &settings(),
            now,
        );
        let held = event_fields(
            &StateChange::RegistryHeldBack {
                registry_id: "e1".into(),
                registry: "Graph".into(),
                guidance: "pin it".into(),
            },
            &settings(),
            now,
        );
        assert_eq!(moved["message_key"], ended["message_key"]);
        assert_ne!(moved["message_key"], held["message_key"]);
        assert_eq!(ended["severity"], "0");
        let text = moved["description"].as_str().unwrap();
        assert!(text.contains("evil.example") && text.contains("login.microsoftonline.com"));
    }
}
