//! Parking: a registry whose refreshes fail for a configuration error (a wrong client secret, an
//! unknown client) is not asked again for each of its credentials, nor every cycle — that only
//! burns the provider's rate limit and floods the logs. It waits until its configuration changes
//! (the registry row in ServiceNow, or the keeper's overrides for it), and one credential probes
//! it now and then in case the fix happened where the keeper cannot see it (at the provider).

use super::classify::FailureClass;
use super::report::{Hold, Outcome};
use jiff::Timestamp;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How long a parked registry waits before one of its credentials is tried again.
pub const PARK_PROBE: Duration = Duration::from_secs(3_600);

/// A registry parked after a configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryPark {
    /// The registry's sys_id.
    pub registry: String,
    /// Its name.
    pub name: String,
    /// The class of the failure (configuration).
    pub class: FailureClass,
    /// What failed and what to do.
    pub message: String,
    /// The configuration that failed: when it changes, the registry is tried again.
    pub fingerprint: String,
    /// When it was parked.
    pub at: Timestamp,
}

impl RegistryPark {
    /// The outcome of a credential not sent because its registry is parked.
    pub fn blocked(&self) -> Outcome {
        Outcome::Blocked {
            hold: Hold::Person(self.class),
            message: format!(
                "registry {} is parked after a configuration error: {}",
                self.name, self.message
            ),
        }
    }
}

/// The parked registries one cycle knows, with the rules that hold credentials back. Shared by
/// the cycle's refreshes: a registry parked by one credential's failure holds back the others
/// still to come in the same cycle.
#[derive(Debug, Clone, Default)]
pub struct Parking {
    parked: HashMap<String, RegistryPark>,
    /// Registries one credential has already probed this cycle.
    probed: HashSet<String>,
    /// When the cycle started: parks from before it are probed, parks from during it are not.
    started: Option<Timestamp>,
}

impl Parking {
    /// The parks known at the start of a cycle that started at `started`.
    pub fn new(parked: HashMap<String, RegistryPark>, started: Timestamp) -> Parking {
        Parking {
            parked,
            probed: HashSet::new(),
            started: Some(started),
        }
    }

    /// The park of a registry, if any.
    pub fn get(&self, registry: &str) -> Option<&RegistryPark> {
        self.parked.get(registry)
    }

    /// At planning: whether a due credential of `registry` is held back. `fingerprint` is the
    /// registry's configuration now (`None` when it cannot be computed, e.g. without the journal
    /// key: then the registry counts as unchanged). A changed configuration lets it through; so
    /// does one probe per registry once [`PARK_PROBE`] has passed since it was parked.
    pub fn holds_back(
        &mut self,
        registry: &str,
        fingerprint: Option<&str>,
        now: Timestamp,
    ) -> Option<Outcome> {
        let park = self.parked.get(registry)?;
        let unchanged = fingerprint.is_none_or(|f| f == park.fingerprint);
        let probe_due = now.as_second().saturating_sub(park.at.as_second())
            >= i64::try_from(PARK_PROBE.as_secs()).unwrap_or(i64::MAX);
        if !unchanged || (probe_due && self.probed.insert(registry.to_string())) {
            return None;
        }
        Some(park.blocked())
    }

    /// During the refreshes: whether a registry parked earlier in this same cycle (by another
    /// credential's configuration error) holds this credential back — unless the configuration
    /// changed in between.
    pub fn parked_this_cycle(&self, registry: &str, fingerprint: Option<&str>) -> Option<Outcome> {
        let park = self.parked.get(registry)?;
        let this_cycle = self.started.is_none_or(|s| park.at >= s);
        (this_cycle && fingerprint == Some(park.fingerprint.as_str())).then(|| park.blocked())
    }

    /// Parks a registry. Returns whether that is news worth saying (it was not parked, or was
    /// parked for another configuration or reason).
    pub fn park(&mut self, park: RegistryPark) -> bool {
        let known = self
            .parked
            .get(&park.registry)
            .is_some_and(|p| p.fingerprint == park.fingerprint && p.message == park.message);
        self.parked.insert(park.registry.clone(), park);
        !known
    }

    /// Unparks a registry after a success; returns the park that ended.
    pub fn unpark(&mut self, registry: &str) -> Option<RegistryPark> {
        self.parked.remove(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn park(registry: &str, fingerprint: &str, when: i64) -> RegistryPark {
        RegistryPark {
            registry: registry.into(),
            name: format!("{registry} name"),
            class: FailureClass::Configuration,
            message: "wrong secret".into(),
            fingerprint: fingerprint.into(),
            at: at(when),
        }
    }

    #[test]
    fn a_parked_registry_waits_for_a_change_or_one_probe_an_hour() {
        let parked = HashMap::from([("e1".to_string(), park("e1", "f1", 1_000))]);
        let mut parking = Parking::new(parked, at(2_000));
        assert!(parking.holds_back("e1", Some("f1"), at(2_000)).is_some());
        assert!(
            parking.holds_back("e1", None, at(2_000)).is_some(),
            "unknown = unchanged"
        );
        assert!(
            parking.holds_back("e1", Some("f2"), at(2_000)).is_none(),
            "changed"
        );
        assert!(
            parking.holds_back("e2", Some("f1"), at(2_000)).is_none(),
            "not parked"
        );
        let later = at(1_000 + 3_600);
        assert!(
            parking.holds_back("e1", Some("f1"), later).is_none(),
            "the probe"
        );
        assert!(
            parking.holds_back("e1", Some("f1"), later).is_some(),
            "one probe only"
        );
    }

    #[test]
    fn a_park_from_this_cycle_holds_back_the_rest_of_it() {
        let mut parking = Parking::new(HashMap::new(), at(2_000));
        assert!(parking.park(park("e1", "f1", 2_001)));
        assert!(!parking.park(park("e1", "f1", 2_002)), "said once");
        assert!(parking.parked_this_cycle("e1", Some("f1")).is_some());
        assert!(parking.parked_this_cycle("e1", Some("f2")).is_none());
        let old = Parking::new(
            HashMap::from([("e1".to_string(), park("e1", "f1", 1_000))]),
            at(2_000),
        );
        assert!(old.parked_this_cycle("e1", Some("f1")).is_none());
        assert!(parking.unpark("e1").is_some());
        assert!(parking.get("e1").is_none());
    }
}
