//! Where a registry's token requests may go. Instance data (`oauth_entity.token_url`) must not
//! decide where a secret the keeper holds itself is sent: anyone with admin rights on the
//! instance could point it at their own host.
//!
//! - A `[[registry]]` with `token_url` is **pinned**: its requests go there and nowhere else;
//!   an instance `token_url` that differs is reported ([`Moved`]), never followed.
//! - A secret or signing key the keeper holds itself (`client_secret_env`/`_file`,
//!   `private_key_file`) goes, without a pin, only to a **well-known provider host** over https
//!   ([`WELL_KNOWN`]; a registry whose `kind` is Entra only to Entra's hosts). Anything else
//!   holds the registry back ([`HeldBack`]) until the config pins its `token_url`.
//! - A secret the instance itself hands out (through the companion) follows the instance's
//!   `token_url`: whoever can change that registry can read that secret on the instance anyway.
//!
//! Host rules are exact: a host is well-known when it equals a listed host, or — for providers
//! that give each tenant a host — ends in `.` plus the listed suffix with at least one label
//! before it (`acme.okta.com`, never `evil-okta.com` nor `okta.com.evil.example`). The host is
//! compared as the URL parser leaves it: lower case, internationalised names in punycode
//! (`xn--…`), so a look-alike spelling never matches. A trailing dot, a port other than 443,
//! user info, an IP address or plain `http://` is never well-known.

use super::credential::Registry;
use std::collections::{BTreeMap, HashMap};
use url::{Host, Url};

/// How a provider's token endpoint hosts are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRule {
    /// Exactly this host.
    Exact(&'static str),
    /// Any host ending in `.` and this suffix, with at least one label before it: the providers
    /// that give every tenant its own host.
    Tenant(&'static str),
}

/// A provider whose token endpoints count as well-known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WellKnown {
    /// The provider, as messages and `check` name it.
    pub provider: &'static str,
    /// Which of its hosts.
    pub rule: HostRule,
    /// Whether it is one of Microsoft Entra ID's hosts (the only ones an Entra `kind` allows).
    pub entra: bool,
}

const fn exact(provider: &'static str, host: &'static str) -> WellKnown {
    WellKnown {
        provider,
        rule: HostRule::Exact(host),
        entra: false,
    }
}

const fn tenant(provider: &'static str, suffix: &'static str) -> WellKnown {
    WellKnown {
        provider,
        rule: HostRule::Tenant(suffix),
        entra: false,
    }
}

const fn entra(rule: HostRule) -> WellKnown {
    WellKnown {
        provider: "Microsoft Entra ID",
        rule,
        entra: true,
    }
}

/// The well-known token endpoint hosts: where a keeper-held secret may go without a pin. Every
/// one is operated by the provider itself (a tenant cannot run code that reads the request).
pub const WELL_KNOWN: &[WellKnown] = &[
    // Entra ID: the global cloud and the national clouds (US Government, China operated by
    // 21Vianet, the retired Germany cloud), B2C and External ID tenants.
    entra(HostRule::Exact("login.microsoftonline.com")),
    entra(HostRule::Exact("login.microsoft.com")),
    entra(HostRule::Exact("login.windows.net")),
    entra(HostRule::Exact("login.microsoftonline.us")),
    entra(HostRule::Exact("login.chinacloudapi.cn")),
    entra(HostRule::Exact("login.partner.microsoftonline.cn")),
    entra(HostRule::Exact("login.microsoftonline.de")),
    entra(HostRule::Tenant("b2clogin.com")),
    entra(HostRule::Tenant("ciamlogin.com")),
    exact("Google", "oauth2.googleapis.com"),
    exact("Google", "accounts.google.com"),
    exact("Google", "www.googleapis.com"),
    tenant("Okta", "okta.com"),
    tenant("Okta", "oktapreview.com"),
    tenant("Okta", "okta-emea.com"),
    tenant("Auth0", "auth0.com"),
    exact("Salesforce", "login.salesforce.com"),
    exact("Salesforce", "test.salesforce.com"),
    tenant("Salesforce", "my.salesforce.com"),
    exact("GitHub", "github.com"),
    exact("Atlassian", "auth.atlassian.com"),
    exact("Zoom", "zoom.us"),
    exact("Xero", "identity.xero.com"),
    exact("DocuSign", "account.docusign.com"),
    exact("DocuSign", "account-d.docusign.com"),
];

/// Which hosts count as well-known for one registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// Any of [`WELL_KNOWN`].
    #[default]
    Any,
    /// Only Microsoft Entra ID's (the registry's `kind` is `entra_v1` or `entra_v2`).
    Entra,
}

impl WellKnown {
    fn matches(&self, host: &str) -> bool {
        match self.rule {
            HostRule::Exact(h) => host == h,
            HostRule::Tenant(suffix) => host
                .strip_suffix(suffix)
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|tenant| !tenant.is_empty() && !tenant.ends_with('.')),
        }
    }
}

/// Whether `host` (lower case, as a URL parser gives it) is one of Microsoft Entra ID's token
/// endpoint hosts.
pub fn is_entra_host(host: &str) -> bool {
    WELL_KNOWN.iter().any(|w| w.entra && w.matches(host))
}

/// The provider whose well-known token endpoint `url` is, if it is one for `family`: https on
/// the default port, no user info, a domain (not an address) without a trailing dot, matching a
/// rule of [`WELL_KNOWN`]. Pure.
pub fn well_known_provider(url: &Url, family: Family) -> Option<&'static str> {
    if url.scheme() != "https"
        || !url.username().is_empty()
        || url.password().is_some()
        || url.port().is_some_and(|p| p != 443)
    {
        return None;
    }
    let Some(Host::Domain(host)) = url.host() else {
        return None;
    };
    if host.ends_with('.') {
        return None;
    }
    WELL_KNOWN
        .iter()
        .filter(|w| family == Family::Any || w.entra)
        .find(|w| w.matches(host))
        .map(|w| w.provider)
}

/// `host[:port]` of a URL as messages name it (never its user info, path or query).
pub fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// What the keeper's config says about one registry, as routing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRule {
    /// `[[registry]] name`: the entity's sys_id or its name.
    pub name: String,
    /// `token_url`: the pin.
    pub pin: Option<Url>,
    /// Whether the keeper holds the registry's client secret or signing key itself (its
    /// config), rather than taking the instance's.
    pub keeper_secret: bool,
    /// Which hosts count as well-known for it.
    pub family: Family,
}

/// Why the token requests of a registry may go where they go: the registry's pin state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Custody {
    /// To the config's `token_url`, whatever the instance says.
    Pinned,
    /// To the instance's `token_url`, a well-known host of this provider: the keeper's secret
    /// may go there.
    WellKnown(&'static str),
    /// To the instance's `token_url`, with a secret the instance itself hands out.
    InstanceSupplied,
}

impl Custody {
    /// How `check` and logs name it.
    pub fn label(self) -> &'static str {
        match self {
            Custody::Pinned => "pinned",
            Custody::WellKnown(_) => "well-known host",
            Custody::InstanceSupplied => "instance-supplied secret",
        }
    }
}

/// The instance's `token_url` of a pinned registry differs from the pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// `host[:port]` of the pin.
    pub pinned: String,
    /// `host[:port]` of the instance's `token_url` (`(none)` when empty, `(not a URL)`).
    pub instance: String,
    /// The instance's `token_url` as read: what "once per change" compares.
    pub instance_url: String,
}

/// Where a registry's token requests go, and why they may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The token endpoint.
    pub url: String,
    /// Why the keeper's secrets may go there.
    pub custody: Custody,
    /// The `[[registry]]` that applies (an index into the config's registries).
    pub rule: Option<usize>,
    /// The instance names another `token_url` than the pin.
    pub moved: Option<Moved>,
}

/// Why a registry's credentials are not refreshed at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldBack {
    /// The keeper holds the secret, nothing pins `token_url`, and the instance's is not a
    /// well-known host.
    Unpinned {
        /// `host[:port]` of the instance's `token_url` (or why there is none).
        host: String,
        /// The `[[registry]]` that supplies the secret.
        rule: usize,
        /// Whether only Entra's hosts were allowed (an Entra `kind`).
        entra_only: bool,
    },
    /// A `[[registry]] name` names two or more registries of the instance.
    AmbiguousName {
        /// The name.
        name: String,
        /// Every registry of the instance with it, sorted.
        sys_ids: Vec<String>,
    },
}

impl HeldBack {
    /// What is wrong and how to fix it, secret-free.
    pub fn message(&self, registry: &str) -> String {
        match self {
            HeldBack::Unpinned {
                host, entra_only, ..
            } => format!(
                "held back: the keeper holds {registry}'s client secret or signing key, and the instance's token_url host {host} is neither pinned nor {}; pin the endpoint in the keeper's config ([[registry]] token_url = \"https://…\") if {host} is right",
                if *entra_only {
                    "a Microsoft Entra ID host (its kind is entra)"
                } else {
                    "a well-known provider host"
                }
            ),
            HeldBack::AmbiguousName { name, sys_ids } => format!(
                "held back: [[registry]] name = \"{name}\" matches {} Application Registries ({}); name the one meant by its sys_id instead",
                sys_ids.len(),
                sys_ids.join(", ")
            ),
        }
    }

    /// A short label for logs and events.
    pub fn label(&self) -> &'static str {
        match self {
            HeldBack::Unpinned { .. } => "unpinned",
            HeldBack::AmbiguousName { .. } => "ambiguous_name",
        }
    }
}

/// The route of one registry: where its requests go, or why none does.
pub type Verdict = Result<Route, HeldBack>;

/// Decides the route of one registry from its rule (if the config has one) and the instance's
/// `token_url`. Pure.
pub fn route(rule: Option<(usize, &RegistryRule)>, instance_url: &str) -> Verdict {
    let parsed = Url::parse(instance_url.trim()).ok();
    let describe = || match &parsed {
        Some(url) => authority(url),
        None if instance_url.trim().is_empty() => "(none)".to_string(),
        None => "(not a URL)".to_string(),
    };
    let Some((index, rule)) = rule else {
        return Ok(Route {
            url: instance_url.to_string(),
            custody: Custody::InstanceSupplied,
            rule: None,
            moved: None,
        });
    };
    if let Some(pin) = &rule.pin {
        let moved = (parsed.as_ref() != Some(pin)).then(|| Moved {
            pinned: authority(pin),
            instance: describe(),
            instance_url: instance_url.to_string(),
        });
        return Ok(Route {
            url: pin.to_string(),
            custody: Custody::Pinned,
            rule: Some(index),
            moved,
        });
    }
    if !rule.keeper_secret {
        return Ok(Route {
            url: instance_url.to_string(),
            custody: Custody::InstanceSupplied,
            rule: Some(index),
            moved: None,
        });
    }
    match parsed
        .as_ref()
        .and_then(|url| well_known_provider(url, rule.family))
    {
        Some(provider) => Ok(Route {
            url: instance_url.to_string(),
            custody: Custody::WellKnown(provider),
            rule: Some(index),
            moved: None,
        }),
        None => Err(HeldBack::Unpinned {
            host: describe(),
            rule: index,
            entra_only: rule.family == Family::Entra,
        }),
    }
}

/// One registry's route, with the name it is shown by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRoute {
    /// The registry's sys_id.
    pub sys_id: String,
    /// Its name, or its sys_id when the name is unreadable.
    pub name: String,
    /// Where its requests go, or why they may not.
    pub verdict: Verdict,
}

impl RegistryRoute {
    /// Its pin state in words, as `check` shows it: `pinned to …`, `well-known host (…)`,
    /// `instance-supplied secret (…)` or `held back: …`.
    pub fn describe(&self) -> String {
        let host = |url: &str| {
            Url::parse(url.trim())
                .map(|u| authority(&u))
                .unwrap_or_else(|_| "no usable token_url".to_string())
        };
        match &self.verdict {
            Ok(route) => match (route.custody, &route.moved) {
                (Custody::Pinned, None) => format!("pinned to {}", host(&route.url)),
                (Custody::Pinned, Some(m)) => format!(
                    "pinned to {}; the instance's token_url points at {}, which is ignored",
                    m.pinned, m.instance
                ),
                (Custody::WellKnown(provider), _) => {
                    format!("well-known host ({provider}, {})", host(&route.url))
                }
                (Custody::InstanceSupplied, _) => {
                    format!("instance-supplied secret ({})", host(&route.url))
                }
            },
            Err(held) => held.message(&self.name),
        }
    }
}

/// The routes of every registry of an estate, by registry sys_id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    by_registry: BTreeMap<String, RegistryRoute>,
}

impl Routes {
    /// The routes of `registries` (each once, whatever the order) under `rules` (the config's
    /// `[[registry]]` tables, in file order). A rule applies to a registry named by its sys_id,
    /// or by its name when exactly one registry of the estate has that name; a name two
    /// registries share holds both back. Pure.
    pub fn plan<'a>(
        rules: &[RegistryRule],
        registries: impl IntoIterator<Item = &'a Registry>,
    ) -> Routes {
        let mut distinct: BTreeMap<&str, &Registry> = BTreeMap::new();
        for r in registries {
            distinct.entry(r.sys_id.as_str()).or_insert(r);
        }
        let mut by_name: HashMap<&str, Vec<&str>> = HashMap::new();
        for r in distinct.values() {
            by_name.entry(r.name.as_str()).or_default().push(&r.sys_id);
        }
        let by_registry = distinct
            .values()
            .map(|r| {
                let by_id = rules.iter().position(|rule| rule.name == r.sys_id);
                let by_name_rule = rules.iter().position(|rule| rule.name == r.name);
                let verdict = match (by_id, by_name_rule) {
                    (Some(i), _) => route(Some((i, &rules[i])), &r.token_url),
                    (None, Some(i)) => match by_name.get(r.name.as_str()) {
                        Some(ids) if ids.len() > 1 => Err(HeldBack::AmbiguousName {
                            name: r.name.clone(),
                            sys_ids: ids.iter().map(|id| (*id).to_string()).collect(),
                        }),
                        _ => route(Some((i, &rules[i])), &r.token_url),
                    },
                    (None, None) => route(None, &r.token_url),
                };
                let name = if r.name.is_empty() {
                    &r.sys_id
                } else {
                    &r.name
                };
                let entry = RegistryRoute {
                    sys_id: r.sys_id.clone(),
                    name: name.clone(),
                    verdict,
                };
                (r.sys_id.clone(), entry)
            })
            .collect();
        Routes { by_registry }
    }

    /// The verdict for a registry; `None` for one not in the estate the routes were planned on.
    pub fn get(&self, registry: &str) -> Option<&Verdict> {
        self.by_registry.get(registry).map(|r| &r.verdict)
    }

    /// Every registry's route, in sys_id order.
    pub fn iter(&self) -> impl Iterator<Item = &RegistryRoute> {
        self.by_registry.values()
    }

    /// What is worth saying about the routes now: each pinned registry whose instance
    /// `token_url` differs from the pin, each registry held back.
    pub fn notices(&self) -> Vec<RouteNotice> {
        self.iter()
            .filter_map(|r| {
                let (topic, said) = match &r.verdict {
                    Ok(Route { moved: Some(m), .. }) => {
                        (Topic::TokenUrlMoved, m.instance_url.clone())
                    }
                    Ok(_) => return None,
                    Err(held) => (Topic::HeldBack, held.message(&r.name)),
                };
                Some(RouteNotice {
                    registry: r.sys_id.clone(),
                    name: r.name.clone(),
                    topic,
                    said,
                    verdict: r.verdict.clone(),
                })
            })
            .collect()
    }
}

/// What a route notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// A pinned registry's instance `token_url` differs from the pin.
    TokenUrlMoved,
    /// A registry is held back.
    HeldBack,
}

impl Topic {
    /// How the journal, logs and event keys name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::TokenUrlMoved => "token_url_moved",
            Topic::HeldBack => "held_back",
        }
    }

    /// The topic a stored name stands for.
    pub fn parse(text: &str) -> Option<Topic> {
        [Topic::TokenUrlMoved, Topic::HeldBack]
            .into_iter()
            .find(|t| t.as_str() == text)
    }
}

/// Something said about a registry's route, once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteNotice {
    /// The registry's sys_id.
    pub registry: String,
    /// The name it is shown by.
    pub name: String,
    /// What it is about.
    pub topic: Topic,
    /// What is said: a new value is a change worth saying again (the instance's `token_url`
    /// for a move, the message for a hold).
    pub said: String,
    /// The route it is about: a [`Route`] with [`Route::moved`] for
    /// [`Topic::TokenUrlMoved`], a [`HeldBack`] for [`Topic::HeldBack`].
    pub verdict: Verdict,
}

/// What changed since the notices last said (`said`: by registry and topic, what was said): the
/// notices to say, and the (registry, topic) pairs of `said` that no longer hold for a registry
/// of `routes`. Registries absent from `routes` keep what was said of them. Pure.
pub fn notice_changes(
    routes: &Routes,
    said: &HashMap<(String, Topic), String>,
) -> (Vec<RouteNotice>, Vec<(String, Topic)>) {
    let now = routes.notices();
    let new = now
        .iter()
        .filter(|n| said.get(&(n.registry.clone(), n.topic)) != Some(&n.said))
        .cloned()
        .collect();
    let mut ended: Vec<(String, Topic)> = said
        .keys()
        .filter(|(registry, topic)| {
            routes.get(registry).is_some()
                && !now
                    .iter()
                    .any(|n| &n.registry == registry && n.topic == *topic)
        })
        .cloned()
        .collect();
    ended.sort();
    (new, ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn known(text: &str) -> Option<&'static str> {
        Url::parse(text)
            .ok()
            .and_then(|u| well_known_provider(&u, Family::Any))
    }

    #[test]
    fn the_well_known_hosts_and_only_they() {
        for (text, provider) in [
            (
                "https://login.microsoftonline.com/t/oauth2/v2.0/token",
                "Microsoft Entra ID",
            ),
            (
                "https://LOGIN.MicrosoftOnline.COM/t/oauth2/token",
                "Microsoft Entra ID",
            ),
            (
                "https://login.microsoftonline.com:443/t/oauth2/token",
                "Microsoft Entra ID",
            ),
            (
                "https://contoso.b2clogin.com/contoso.onmicrosoft.com/b2c_1/oauth2/v2.0/token",
                "Microsoft Entra ID",
            ),
            ("https://oauth2.googleapis.com/token", "Google"),
            ("https://dev-123.okta.com/oauth2/default/v1/token", "Okta"),
            ("https://acme.okta-emea.com/oauth2/v1/token", "Okta"),
            ("https://acme.us.auth0.com/oauth/token", "Auth0"),
            (
                "https://acme--dev.sandbox.my.salesforce.com/services/oauth2/token",
                "Salesforce",
            ),
            (
                "https://login.salesforce.com/services/oauth2/token",
                "Salesforce",
            ),
            ("https://github.com/login/oauth/access_token", "GitHub"),
        ] {
            assert_eq!(known(text), Some(provider), "{text}");
        }
        for text in [
            // Suffix tricks.
            "https://evil-okta.com/token",
            "https://okta.com/token",
            "https://.okta.com/token",
            "https://acme.okta.com.evil.example/token",
            "https://login.microsoftonline.com.evil.example/t/oauth2/token",
            "https://xlogin.microsoftonline.com/t/oauth2/token",
            "https://my.salesforce.com/services/oauth2/token",
            "https://evilmy.salesforce.com/services/oauth2/token",
            "https://auth0.com.evil.example/oauth/token",
            // Trailing dot, port, scheme, user info, addresses.
            "https://login.microsoftonline.com./t/oauth2/token",
            "https://acme.okta.com./token",
            "https://login.microsoftonline.com:8443/t/oauth2/token",
            "http://login.microsoftonline.com/t/oauth2/token",
            "https://user:pw@login.microsoftonline.com/t/oauth2/token",
            "https://login.microsoftonline.com@evil.example/t/oauth2/token",
            "https://20.190.151.0/t/oauth2/token",
            "https://[::1]/token",
            "https://localhost/token",
            // A Cyrillic о: punycode, not Entra.
            "https://lоgin.microsoftonline.com/t/oauth2/token",
            "https://acme.service-now.com/oauth_token.do",
        ] {
            assert_eq!(known(text), None, "{text}");
        }
    }

    #[test]
    fn an_entra_kind_allows_only_entra_hosts() {
        let google = url("https://oauth2.googleapis.com/token");
        assert_eq!(well_known_provider(&google, Family::Entra), None);
        let entra = url("https://login.microsoftonline.us/t/oauth2/v2.0/token");
        assert_eq!(
            well_known_provider(&entra, Family::Entra),
            Some("Microsoft Entra ID")
        );
    }

    fn rule(pin: Option<&str>, keeper_secret: bool) -> RegistryRule {
        RegistryRule {
            name: "Graph".into(),
            pin: pin.map(url),
            keeper_secret,
            family: Family::Any,
        }
    }

    #[test]
    fn a_pin_wins_and_a_moved_instance_url_is_named() {
        let pinned = rule(
            Some("https://login.microsoftonline.com/t/oauth2/v2.0/token"),
            true,
        );
        let same = route(
            Some((0, &pinned)),
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        )
        .unwrap();
        assert_eq!(same.custody, Custody::Pinned);
        assert_eq!(same.moved, None);
        let moved = route(Some((0, &pinned)), "https://evil.example:8443/steal").unwrap();
        assert_eq!(
            moved.url,
            "https://login.microsoftonline.com/t/oauth2/v2.0/token"
        );
        let m = moved.moved.unwrap();
        assert_eq!(m.pinned, "login.microsoftonline.com");
        assert_eq!(m.instance, "evil.example:8443");
        // A pin holds whatever the secret's origin.
        let instance_secret = rule(Some("http://127.0.0.1:9/token"), false);
        let r = route(Some((0, &instance_secret)), "").unwrap();
        assert_eq!(r.url, "http://127.0.0.1:9/token");
        assert_eq!(r.moved.unwrap().instance, "(none)");
    }

    #[test]
    fn a_keeper_secret_goes_only_to_a_well_known_host_unless_pinned() {
        let held = rule(None, true);
        let ok = route(Some((3, &held)), "https://acme.okta.com/oauth2/v1/token").unwrap();
        assert_eq!(ok.custody, Custody::WellKnown("Okta"));
        assert_eq!(ok.rule, Some(3));
        for instance in [
            "https://evil.example/token",
            "http://127.0.0.1:9/token",
            "not a url",
            "",
        ] {
            let verdict = route(Some((3, &held)), instance);
            assert!(
                matches!(verdict, Err(HeldBack::Unpinned { rule: 3, .. })),
                "{instance}: {verdict:?}"
            );
        }
        let message = route(Some((0, &held)), "https://evil.example/x")
            .unwrap_err()
            .message("Graph");
        assert!(
            message.contains("evil.example") && message.contains("token_url"),
            "{message}"
        );
    }

    #[test]
    fn an_instance_secret_follows_the_instance() {
        for r in [
            route(None, "https://anywhere.example/token"),
            route(
                Some((0, &rule(None, false))),
                "https://anywhere.example/token",
            ),
        ] {
            let r = r.unwrap();
            assert_eq!(r.custody, Custody::InstanceSupplied);
            assert_eq!(r.url, "https://anywhere.example/token");
        }
    }

    fn registry(sys_id: &str, name: &str, token_url: &str) -> Arc<Registry> {
        Arc::new(Registry {
            sys_id: sys_id.into(),
            name: name.into(),
            token_url: token_url.into(),
            ..Registry::default()
        })
    }

    #[test]
    fn rules_bind_by_sys_id_or_by_a_name_only_one_registry_has() {
        let a = registry("a".repeat(32).as_str(), "Graph", "https://evil.example/a");
        let b = registry("b".repeat(32).as_str(), "Graph", "https://evil.example/b");
        let c = registry("c".repeat(32).as_str(), "Okta", "https://acme.okta.com/t");
        let by_id = RegistryRule {
            name: "a".repeat(32),
            ..rule(
                Some("https://login.microsoftonline.com/t/oauth2/v2.0/token"),
                true,
            )
        };
        let by_name = RegistryRule {
            name: "Graph".into(),
            ..rule(None, true)
        };
        let okta = RegistryRule {
            name: "Okta".into(),
            ..rule(None, true)
        };
        let rules = [by_id, by_name, okta];
        let routes = Routes::plan(&rules, [&*a, &*b, &*c, &*a]);
        assert_eq!(routes.iter().count(), 3);
        assert_eq!(routes.iter().next().map(|r| r.name.as_str()), Some("Graph"));
        let a_route = routes.get(&a.sys_id).unwrap().as_ref().unwrap();
        assert_eq!((a_route.rule, a_route.custody), (Some(0), Custody::Pinned));
        match routes.get(&b.sys_id).unwrap() {
            Err(HeldBack::AmbiguousName { name, sys_ids }) => {
                assert_eq!(name, "Graph");
                assert_eq!(sys_ids, &vec![a.sys_id.clone(), b.sys_id.clone()]);
            }
            other => panic!("{other:?}"),
        }
        let c_route = routes.get(&c.sys_id).unwrap().as_ref().unwrap();
        assert_eq!(c_route.rule, Some(2));
        assert_eq!(routes.get("unknown"), None);
    }

    #[test]
    fn each_pin_state_is_described_with_its_host() {
        let rules = [
            RegistryRule {
                name: "Pinned".into(),
                ..rule(
                    Some("https://login.microsoftonline.com/t/oauth2/v2.0/token"),
                    true,
                )
            },
            RegistryRule {
                name: "Known".into(),
                ..rule(None, true)
            },
            RegistryRule {
                name: "Held".into(),
                ..rule(None, true)
            },
        ];
        let registries = [
            registry(&"a".repeat(32), "Pinned", "https://evil.example/t"),
            registry(&"b".repeat(32), "Known", "https://acme.okta.com/t"),
            registry(&"c".repeat(32), "Held", "https://evil.example/t"),
            registry(&"d".repeat(32), "", "https://idp.example:8443/t"),
        ];
        let routes = Routes::plan(&rules, registries.iter().map(|r| &**r));
        let said: Vec<String> = routes.iter().map(RegistryRoute::describe).collect();
        assert_eq!(
            said[0],
            "pinned to login.microsoftonline.com; the instance's token_url points at evil.example, which is ignored"
        );
        assert_eq!(said[1], "well-known host (Okta, acme.okta.com)");
        assert!(said[2].starts_with("held back:") && said[2].contains("evil.example"));
        assert_eq!(said[3], "instance-supplied secret (idp.example:8443)");
        assert_eq!(routes.iter().nth(3).unwrap().name, "d".repeat(32));
    }

    #[test]
    fn notices_are_said_once_per_change_and_ended_when_they_no_longer_hold() {
        let pin = rule(
            Some("https://login.microsoftonline.com/t/oauth2/v2.0/token"),
            true,
        );
        let rules = [RegistryRule {
            name: "Graph".into(),
            ..pin
        }];
        let at = |url: &str| {
            let graph = registry(&"a".repeat(32), "Graph", url);
            Routes::plan(&rules, [&*graph])
        };
        let moved = at("https://evil.example/a");
        let (new, ended) = notice_changes(&moved, &HashMap::new());
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].topic, Topic::TokenUrlMoved);
        assert!(ended.is_empty());
        let said: HashMap<(String, Topic), String> = new
            .iter()
            .map(|n| ((n.registry.clone(), n.topic), n.said.clone()))
            .collect();
        assert_eq!(
            notice_changes(&moved, &said),
            (Vec::new(), Vec::new()),
            "said already"
        );
        let again = notice_changes(&at("https://evil.example/b"), &said);
        assert_eq!(again.0.len(), 1, "moved elsewhere: said again");
        let back = notice_changes(
            &at("https://login.microsoftonline.com/t/oauth2/v2.0/token"),
            &said,
        );
        assert_eq!(
            back,
            (Vec::new(), vec![("a".repeat(32), Topic::TokenUrlMoved)])
        );
        assert_eq!(
            notice_changes(&Routes::default(), &said),
            (Vec::new(), Vec::new()),
            "a registry not seen keeps its notice"
        );
        assert_eq!(
            Topic::parse(Topic::HeldBack.as_str()),
            Some(Topic::HeldBack)
        );
    }

    proptest! {
        #[test]
        fn a_host_is_well_known_only_by_an_exact_rule(
            label in "[a-z0-9-]{1,12}",
            glue in prop::sample::select(vec!["", "-", ".", "x"]),
            known_index in 0..WELL_KNOWN.len(),
            tail in prop::sample::select(vec!["", ".", ".evil.example", "x"]),
        ) {
            let base = match WELL_KNOWN[known_index].rule {
                HostRule::Exact(h) | HostRule::Tenant(h) => h,
            };
            // Not a punycode label, which the parser would have to decode.
            prop_assume!(!label.starts_with("xn--"));
            let host = format!("{label}{glue}{base}{tail}");
            let verdict = known(&format!("https://{host}/token"));
            // Only a tenant's own label before a tenant suffix: no other glue, nothing after.
            let tenant = matches!(WELL_KNOWN[known_index].rule, HostRule::Tenant(_));
            let expected = tail.is_empty() && glue == "." && tenant;
            prop_assert_eq!(verdict.is_some(), expected, "{}", host);
        }

        #[test]
        fn ports_user_info_and_case_are_judged_on_the_parsed_url(
            known_index in 0..WELL_KNOWN.len(),
            port in prop::option::of(1u16..),
            user in prop::option::of("[a-z]{1,6}"),
            upper in any::<bool>(),
        ) {
            let host = match WELL_KNOWN[known_index].rule {
                HostRule::Exact(h) => h.to_string(),
                HostRule::Tenant(s) => format!("tenant.{s}"),
            };
            let host = if upper { host.to_ascii_uppercase() } else { host };
            let user_part = user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
            let port_part = port.map(|p| format!(":{p}")).unwrap_or_default();
            let text = format!("https://{user_part}{host}{port_part}/token");
            let expected = user.is_none() && port.is_none_or(|p| p == 443);
            prop_assert_eq!(known(&text).is_some(), expected, "{}", text);
        }

        #[test]
        fn any_unicode_look_alike_is_not_well_known(
            known_index in 0..WELL_KNOWN.len(),
            at in any::<prop::sample::Index>(),
            // Cyrillic look-alikes (which IDNA keeps, unlike compatibility forms it maps).
            with in prop::sample::select(vec!['о', 'і', 'ѕ', 'е', 'а']),
        ) {
            // A tenant's own label may be anything: the look-alike goes into the provider's part.
            let (host, own) = match WELL_KNOWN[known_index].rule {
                HostRule::Exact(h) => (h.to_string(), 0),
                HostRule::Tenant(s) => (format!("tenant.{s}"), "tenant.".len()),
            };
            let mut chars: Vec<char> = host.chars().collect();
            let i = own + at.index(chars.len() - own);
            prop_assume!(chars[i] != '.');
            chars[i] = with;
            let spoofed: String = chars.into_iter().collect();
            prop_assert_eq!(known(&format!("https://{spoofed}/token")), None, "{}", spoofed);
        }
    }
}
