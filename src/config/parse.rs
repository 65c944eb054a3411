//! Validation: the raw shapes of a file into [`Settings`].
//!
//! Every key is checked whatever the others hold, and every problem is collected before any is
//! reported (linkerd's "parse every variable first, then report"): one run of `check` shows all
//! of a file's mistakes. A key that others depend on (`auth`, `client_auth`, `kind`) and holds
//! a bad value is reported alone, without guesses about the keys that go with it.

mod registry;

use super::Problem;
use super::raw::{
    Field, RawConfig, RawInstance, RawLease, RawRefresh, RawReport, RawServer, RawState, Unknown,
};
use super::secrets::{Env, KeySource, env_secret, expand_path, read_secret_file};
use super::settings::{
    DEFAULT_COMPANION_PATH, InstanceAuthSettings, InstanceGrant, InstanceSettings, LeaseSettings,
    RefreshSettings, ReportSettings, ServerSettings, Settings, StateSettings,
};
use crate::domain::time::parse_duration;
use registry::registries;
use secrecy::SecretString;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

const STRING: &str = "a string";
const INTEGER: &str = "an integer";
const TABLE: &str = "a table";
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// Validates the raw shapes of a file: its settings, or every problem it has. `file` becomes
/// [`Settings::source`].
pub(super) fn settings(
    raw: RawConfig,
    file: &str,
    env: &dyn Env,
) -> Result<Settings, Vec<Problem>> {
    let mut p = Problems::default();
    p.unknown("", &raw.unknown, RawConfig::KEYS);
    let instance = instance(&mut p, raw.instance, env);
    let refresh = refresh(&mut p, raw.refresh);
    let state = state(&mut p, raw.state, env);
    let server = server(&mut p, raw.server);
    let lease = lease(&mut p, raw.lease, refresh.as_ref());
    let registries = registries(&mut p, raw.registry, env);
    let report = report(&mut p, raw.report);
    match (instance, refresh, state, server, lease, registries, report) {
        (
            Some(instance),
            Some(refresh),
            Some(state),
            Some(server),
            Some(lease),
            Some(registries),
            Some(report),
        ) if p.0.is_empty() => Ok(Settings {
            source: file.to_string(),
            instance,
            refresh,
            state,
            server,
            lease,
            registries,
            report,
        }),
        // A table comes back as `None` only after recording why: the list is not empty.
        _ => Err(p.0),
    }
}

/// The problems found so far. Its methods check one key each and give its value, or `None`
/// after recording what is wrong with it; a table is complete only when every key is, but every
/// key is checked whatever happened to the others.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// `Ok`'s value; an `Err` is recorded under `key`.
    fn check<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(key, message)).ok()
    }

    /// The value of `key` when the file gives one of the wanted type, `Some(None)` when it
    /// gives none; `None` after recording a value of another type.
    fn take<T>(&mut self, key: &str, field: Option<Field<T>>, wanted: &str) -> Option<Option<T>> {
        match field {
            None => Some(None),
            Some(Field::Value(value)) => Some(Some(value)),
            Some(Field::WrongType(found)) => {
                self.push(key, format!("expected {wanted}, found {}", article(found)));
                None
            }
        }
    }

    /// An optional key: its value passed through `validate`, or `default` when the file leaves
    /// it out.
    fn optional<T, U>(
        &mut self,
        key: &str,
        field: Option<Field<T>>,
        wanted: &str,
        default: U,
        validate: impl FnOnce(T) -> Result<U, String>,
    ) -> Option<U> {
        match self.take(key, field, wanted)? {
            None => Some(default),
            Some(value) => self.check(key, validate(value)),
        }
    }

    /// A key the file must give: its value passed through `validate`; `missing` says what
    /// to set when the file leaves it out.
    fn required<T, U>(
        &mut self,
        key: &str,
        field: Option<Field<T>>,
        wanted: &str,
        missing: &str,
        validate: impl FnOnce(T) -> Result<U, String>,
    ) -> Option<U> {
        match self.take(key, field, wanted)? {
            None => {
                self.push(key, missing);
                None
            }
            Some(value) => self.check(key, validate(value)),
        }
    }

    /// A text the file must give, blank counting as left out.
    fn required_text(
        &mut self,
        key: &str,
        field: Option<Field<String>>,
        missing: &str,
    ) -> Option<String> {
        self.required(key, field, STRING, missing, |text| {
            if text.trim().is_empty() {
                Err(missing.to_string())
            } else {
                Ok(text)
            }
        })
    }

    /// A table of the file, or an empty one when the file leaves it out.
    fn table<T: Default>(&mut self, key: &str, field: Option<Field<T>>) -> Option<T> {
        self.take(key, field, TABLE).map(Option::unwrap_or_default)
    }

    /// A secret named by a pair of keys, a variable (`…_env`) or a file (`…_file`), read now;
    /// `Some(None)` when neither key is set.
    fn secret(
        &mut self,
        env: &dyn Env,
        (env_key, file_key): (&str, &str),
        var: Option<Field<String>>,
        path: Option<Field<PathBuf>>,
    ) -> Option<Option<SecretString>> {
        let var = self.take(env_key, var, STRING);
        let path = self.take(file_key, path, STRING);
        match (var?, path?) {
            (Some(_), Some(_)) => {
                self.push(
                    env_key,
                    format!(
                        "set either {} or {}, not both",
                        leaf(env_key),
                        leaf(file_key)
                    ),
                );
                None
            }
            (None, None) => Some(None),
            (Some(var), None) => self.check(env_key, env_secret(&var, env)).map(Some),
            (None, Some(path)) => self
                .check(
                    file_key,
                    expand_path(&path, env).and_then(|p| read_secret_file(&p)),
                )
                .map(Some),
        }
    }

    /// Every key of a table that it does not know: named, its value never shown.
    fn unknown(&mut self, table: &str, unknown: &Unknown, known: &[&str]) {
        for name in unknown.keys() {
            self.push(
                &dotted(table, &quoted_unless_bare(name)),
                format!("unknown key (known here: {})", known.join(", ")),
            );
        }
    }

    /// Names each of a table's `keys` that is set although nothing here uses it; whether none
    /// was.
    fn unused(&mut self, table: &str, keys: &[(&str, bool)], message: &str) -> bool {
        let set: Vec<&str> = keys
            .iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| *k)
            .collect();
        for name in &set {
            self.push(&dotted(table, name), message);
        }
        set.is_empty()
    }
}

/// `table.name`, or `name` for a key of the file itself.
fn dotted(table: &str, name: &str) -> String {
    if table.is_empty() {
        name.to_string()
    } else {
        format!("{table}.{name}")
    }
}

/// A TOML type name with its article: `an integer`, `a table`.
fn article(type_name: &str) -> String {
    let vowel = type_name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}

/// The last part of a dotted key: `password_env` of `instance.password_env`.
fn leaf(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// A key name as written in TOML: bare when it can be, quoted otherwise, so an odd name (with a
/// newline, say) cannot forge a line of the message.
fn quoted_unless_bare(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// A duration of at least `min`.
fn duration_at_least(text: String, min: Duration) -> Result<Duration, String> {
    let d = parse_duration(&text).map_err(|e| e.to_string())?;
    if d < min {
        return Err(format!(
            "{text:?} is too short (at least {}s)",
            min.as_secs()
        ));
    }
    Ok(d)
}

/// A count within `range`.
fn count_in(n: i64, range: RangeInclusive<i64>) -> Result<usize, String> {
    usize::try_from(n)
        .ok()
        .filter(|_| range.contains(&n))
        .ok_or_else(|| format!("{n} is out of range ({} to {})", range.start(), range.end()))
}

fn instance(
    p: &mut Problems,
    raw: Option<Field<RawInstance>>,
    env: &dyn Env,
) -> Option<InstanceSettings> {
    let Some(i) = p.take("instance", raw, TABLE)? else {
        p.push("instance", "the [instance] table is required");
        return None;
    };
    p.unknown("instance", &i.unknown, RawInstance::KEYS);
    let url = p.required(
        "instance.url",
        i.url,
        STRING,
        "required (e.g. \"https://acme.service-now.com\")",
        |text| parse_instance_url(&text),
    );
    let username = p.required_text(
        "instance.username",
        i.username,
        "required: the integration user's user_name",
    );
    // Right after the user, as the reference lists them: the password comes first.
    let auth = instance_auth(
        p,
        env,
        RawInstanceAuth {
            auth: i.auth,
            oauth_grant: i.oauth_grant,
            password_env: i.password_env,
            password_file: i.password_file,
            client_id: i.client_id,
            client_secret_env: i.client_secret_env,
            client_secret_file: i.client_secret_file,
        },
    );
    let companion_path = p.optional(
        "instance.companion_path",
        i.companion_path,
        STRING,
        DEFAULT_COMPANION_PATH.to_string(),
        |path| {
            // Not quoted: a query or fragment may hold a secret.
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                return Err("must be a path starting with '/', without '?', '#' or spaces, e.g. \"/api/snok/oauth_keeper\"".into());
            }
            Ok(path.trim_end_matches('/').to_string())
        },
    );
    let timeout = p.optional(
        "instance.timeout",
        i.timeout,
        STRING,
        InstanceSettings::DEFAULT_TIMEOUT,
        |text| duration_at_least(text, SECOND),
    );
    let page_size = p.optional(
        "instance.page_size",
        i.page_size,
        INTEGER,
        InstanceSettings::DEFAULT_PAGE_SIZE,
        |n| count_in(n, 1..=10_000),
    );
    Some(InstanceSettings {
        url: url?,
        username: username?,
        companion_path: companion_path?,
        timeout: timeout?,
        page_size: page_size?,
        auth: auth?,
    })
}

/// The keys of `[instance]` that say how the keeper signs in.
struct RawInstanceAuth {
    auth: Option<Field<String>>,
    oauth_grant: Option<Field<String>>,
    password_env: Option<Field<String>>,
    password_file: Option<Field<PathBuf>>,
    client_id: Option<Field<String>>,
    client_secret_env: Option<Field<String>>,
    client_secret_file: Option<Field<PathBuf>>,
}

/// The password keys of `[instance]`.
const PASSWORD_KEYS: (&str, &str) = ("instance.password_env", "instance.password_file");

/// `instance.auth`, `instance.oauth_grant` and the keys that go with them. The password is read
/// only where it is used (Basic, or the deprecated password grant); set anywhere else it is a
/// mistake worth naming.
fn instance_auth(
    p: &mut Problems,
    env: &dyn Env,
    raw: RawInstanceAuth,
) -> Option<InstanceAuthSettings> {
    // Left out, it is "basic".
    let oauth = p.optional(
        "instance.auth",
        raw.auth,
        STRING,
        false,
        |word| match word.as_str() {
            "basic" => Ok(false),
            "oauth" => Ok(true),
            other => Err(format!("{other:?} is not one of \"basic\", \"oauth\"")),
        },
    )?;
    let (password_env_set, password_file_set) =
        (raw.password_env.is_some(), raw.password_file.is_some());
    let password = |p: &mut Problems, missing: &str| {
        p.secret(env, PASSWORD_KEYS, raw.password_env, raw.password_file)
            .and_then(|password| {
                if password.is_none() {
                    p.push(PASSWORD_KEYS.0, missing);
                }
                password
            })
    };
    if !oauth {
        // Keys of the other mode are a mistake worth naming, not something to ignore.
        let clean = p.unused(
            "instance",
            &[
                ("oauth_grant", raw.oauth_grant.is_some()),
                ("client_id", raw.client_id.is_some()),
                ("client_secret_env", raw.client_secret_env.is_some()),
                ("client_secret_file", raw.client_secret_file.is_some()),
            ],
            "only used with auth = \"oauth\"; remove it or set instance.auth = \"oauth\"",
        );
        let password = password(
            p,
            "required: the environment variable holding the password (or password_file)",
        );
        return clean
            .then_some(password?)
            .map(|password| InstanceAuthSettings::Basic { password });
    }
    let grant = p.optional(
        "instance.oauth_grant",
        raw.oauth_grant,
        STRING,
        None,
        |word| match word.as_str() {
            "client_credentials" => Ok(Some(false)),
            "password" => Ok(Some(true)),
            other => Err(format!(
                "{other:?} is not one of \"client_credentials\", \"password\""
            )),
        },
    );
    let client_id = p.required_text(
        "instance.client_id",
        raw.client_id,
        "required with auth = \"oauth\": the client id of the instance's OAuth API endpoint (System OAuth > Application Registry)",
    );
    let client_secret = p
        .secret(
            env,
            ("instance.client_secret_env", "instance.client_secret_file"),
            raw.client_secret_env,
            raw.client_secret_file,
        )
        .and_then(|secret| {
            if secret.is_none() {
                p.push(
                    "instance.client_secret_env",
                    "required with auth = \"oauth\": the environment variable holding the client secret (or client_secret_file)",
                );
            }
            secret
        });
    let grant = match grant? {
        Some(true) => password(
            p,
            "required with oauth_grant = \"password\": the environment variable holding the password (or password_file)",
        )
        .map(|password| InstanceGrant::Password { password }),
        Some(false) => p
            .unused(
                "instance",
                &[
                    ("password_env", password_env_set),
                    ("password_file", password_file_set),
                ],
                "not used with the client-credentials grant: the token is issued for the OAuth client's OAuth Application User; remove it",
            )
            .then_some(InstanceGrant::ClientCredentials),
        // A config written for the password grant, from before client credentials: it must
        // choose, not silently switch.
        None if password_env_set || password_file_set => {
            p.push(
                "instance.oauth_grant",
                "auth = \"oauth\" uses the client-credentials grant unless oauth_grant says otherwise, and this config sets a password: either set oauth_grant = \"client_credentials\" and remove password_env/password_file (the instance needs glide.oauth.inbound.client.credential.grant_type.enabled = true and an OAuth Application User on the client; Washington DC or later), or keep the password grant with oauth_grant = \"password\" (RFC 9700 forbids it; warned at every start)",
            );
            None
        }
        None => Some(InstanceGrant::ClientCredentials),
    };
    Some(InstanceAuthSettings::OAuth {
        client_id: client_id?,
        client_secret: client_secret?,
        grant: grant?,
    })
}

fn refresh(p: &mut Problems, raw: Option<Field<RawRefresh>>) -> Option<RefreshSettings> {
    let r = p.table("refresh", raw)?;
    p.unknown("refresh", &r.unknown, RawRefresh::KEYS);
    let d = RefreshSettings::default();
    let mut duration = |key: &str, field, default, min| {
        p.optional(key, field, STRING, default, |text| {
            duration_at_least(text, min)
        })
    };
    let interval = duration("refresh.interval", r.interval, d.interval, SECOND);
    let lead_time = duration(
        "refresh.lead_time",
        r.lead_time,
        d.lead_time,
        Duration::ZERO,
    );
    let keepalive = duration("refresh.keepalive", r.keepalive, d.keepalive, MINUTE);
    let timeout = duration("refresh.timeout", r.timeout, d.timeout, SECOND);
    let shutdown_grace = duration(
        "refresh.shutdown_grace",
        r.shutdown_grace,
        d.shutdown_grace,
        SECOND,
    );
    let concurrency = p.optional(
        "refresh.concurrency",
        r.concurrency,
        INTEGER,
        d.concurrency,
        |n| count_in(n, 1..=256),
    );
    // Unset, one host may have every refresh in flight: an estate whose tokens all come from
    // one host (Entra) then runs at the configured concurrency, not at a per-host fraction.
    let per_host_concurrency = p.optional(
        "refresh.per_host_concurrency",
        r.per_host_concurrency,
        INTEGER,
        concurrency.unwrap_or(d.per_host_concurrency),
        |n| count_in(n, 1..=256),
    );
    Some(RefreshSettings {
        interval: interval?,
        lead_time: lead_time?,
        keepalive: keepalive?,
        concurrency: concurrency?,
        per_host_concurrency: per_host_concurrency?,
        timeout: timeout?,
        shutdown_grace: shutdown_grace?,
    })
}

fn state(p: &mut Problems, raw: Option<Field<RawState>>, env: &dyn Env) -> Option<StateSettings> {
    let s = p.table("state", raw)?;
    p.unknown("state", &s.unknown, RawState::KEYS);
    let d = StateSettings::default();
    let dir = p.optional("state.dir", s.dir, STRING, d.dir, |dir| {
        expand_path(&dir, env)
    });
    let key_env = p.take("state.key_env", s.key_env, STRING);
    let key_file = p.optional("state.key_file", s.key_file, STRING, None, |path| {
        expand_path(&path, env).map(Some)
    });
    // The key itself is read only by the commands that write the journal.
    let key = match (key_env?, key_file?) {
        (Some(_), Some(_)) => {
            p.push("state.key_env", "set either key_env or key_file, not both");
            None
        }
        (Some(var), None) => Some(KeySource::Env(var)),
        (None, Some(path)) => Some(KeySource::File(path)),
        (None, None) => Some(d.key),
    };
    Some(StateSettings {
        dir: dir?,
        key: key?,
    })
}

fn server(p: &mut Problems, raw: Option<Field<RawServer>>) -> Option<ServerSettings> {
    let s = p.table("server", raw)?;
    p.unknown("server", &s.unknown, RawServer::KEYS);
    let listen = p.optional(
        "server.listen",
        s.listen,
        STRING,
        ServerSettings::default().listen,
        |text| {
            text.parse::<SocketAddr>()
                .map_err(|_| format!("{text:?} is not an address:port (e.g. \"127.0.0.1:9464\")"))
        },
    );
    Some(ServerSettings { listen: listen? })
}

/// `[lease]`. The margin check before each token request needs the lease to outlive one: a
/// `ttl` of at most 1.5 × `refresh.timeout` is refused, naming both keys.
fn lease(
    p: &mut Problems,
    raw: Option<Field<RawLease>>,
    refresh: Option<&RefreshSettings>,
) -> Option<LeaseSettings> {
    let l = p.table("lease", raw)?;
    p.unknown("lease", &l.unknown, RawLease::KEYS);
    let ttl = p.optional(
        "lease.ttl",
        l.ttl,
        STRING,
        LeaseSettings::default().ttl,
        |text| {
            let d = parse_duration(&text).map_err(|e| e.to_string())?;
            if d < LeaseSettings::MIN_TTL || d > LeaseSettings::MAX_TTL {
                return Err(format!("{text:?} is out of range (10s to 10m)"));
            }
            Ok(d)
        },
    )?;
    if let Some(refresh) = refresh
        && ttl.as_millis() * 2 <= refresh.timeout.as_millis() * 3
    {
        p.push(
            "lease.ttl",
            format!(
                "must be more than 1.5 × refresh.timeout ({}s): a lease renewed at a third of its life must still outlive one token request (raise lease.ttl or lower refresh.timeout)",
                refresh.timeout.as_secs()
            ),
        );
        return None;
    }
    Some(LeaseSettings { ttl })
}

fn report(p: &mut Problems, raw: Option<Field<RawReport>>) -> Option<Option<ReportSettings>> {
    // Without the table, nothing is reported.
    let Some(r) = p.take("report", raw, TABLE)? else {
        return Some(None);
    };
    p.unknown("report", &r.unknown, RawReport::KEYS);
    let d = ReportSettings::default();
    let supported = d.table.clone();
    let table = p.optional("report.table", r.table, STRING, d.table, |table| {
        if table == supported {
            Ok(table)
        } else {
            Err(format!(
                "{table:?} is not supported; use \"em_event\" (Event Management)"
            ))
        }
    });
    let event_text = |text: String| {
        if text.trim().is_empty() || text.len() > 100 {
            Err("must be 1 to 100 characters".to_string())
        } else {
            Ok(text)
        }
    };
    let source = p.optional("report.source", r.source, STRING, d.source, event_text);
    let node = p.optional("report.node", r.node, STRING, d.node, event_text);
    Some(Some(ReportSettings {
        table: table?,
        source: source?,
        node: node?,
    }))
}

/// Accepts `https://host[:port]` for any host, `http://` only for loopback hosts (the simulator,
/// a local tunnel): Basic credentials must never cross a network in clear.
pub fn parse_instance_url(text: &str) -> Result<Url, String> {
    let mut url = secure_url(text, "use username and password_env")?;
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

/// A `[[registry]] token_url`: used exactly as written, `https://` (or `http://` on a loopback
/// host), without credentials, query or fragment.
pub fn parse_token_url(text: &str) -> Result<Url, String> {
    secure_url(
        text,
        "the client authenticates in the request body or header",
    )
}

/// A URL secrets may be sent to: no credentials, query or fragment; https, or http on a
/// loopback host. `credentials` says where credentials go instead.
fn secure_url(text: &str, credentials: &str) -> Result<Url, String> {
    // Until the URL is known to carry no credentials, query or fragment, no message quotes it:
    // any of them may hold a secret.
    let url = Url::parse(text.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("must not carry credentials; {credentials}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("{text:?} has no host"))?
        .to_string();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&host) => {}
        "http" => {
            return Err(format!(
                "{text:?}: http:// is accepted only for loopback hosts; use https://"
            ));
        }
        other => {
            return Err(format!(
                "{text:?}: unsupported scheme {other:?}; use https://"
            ));
        }
    }
    Ok(url)
}

/// Whether `host` — as [`Url::host_str`] gives it, IPv6 in brackets — is this machine's
/// loopback: `localhost` (any case), `127.0.0.0/8` or `::1`. These are the only hosts plain
/// `http://` may reach (the instance, a token endpoint): credentials never cross a network in
/// clear. Deliberately literal — no `*.localhost`, no IPv4-mapped `::ffff:127.0.0.1` — so the
/// answer never depends on a resolver.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()),
        None => host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    #[test]
    fn loopback_hosts_are_the_literal_ones() {
        for yes in [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "[::1]",
            "[0:0:0:0:0:0:0:1]",
        ] {
            assert!(is_loopback_host(yes), "{yes}");
        }
        for no in [
            "",
            "localhost.",
            "app.localhost",
            "localhost:8080",
            "128.0.0.1",
            "10.0.0.1",
            "0.0.0.0",
            "[127.0.0.1]",
            "[::1",
            "::1]",
            "[[::1]]",
            "[::ffff:127.0.0.1]",
            "acme.service-now.com",
        ] {
            assert!(!is_loopback_host(no), "{no}");
        }
    }

    proptest! {
        #[test]
        fn ipv4_is_loopback_exactly_in_127_slash_8(ip in any::<Ipv4Addr>()) {
            prop_assert_eq!(is_loopback_host(&ip.to_string()), ip.octets()[0] == 127);
        }

        #[test]
        fn ipv6_is_loopback_exactly_at_1_bracketed_or_not(ip in any::<Ipv6Addr>()) {
            let expected = ip == Ipv6Addr::LOCALHOST;
            prop_assert_eq!(is_loopback_host(&ip.to_string()), expected);
            prop_assert_eq!(is_loopback_host(&format!("[{ip}]")), expected);
        }

        #[test]
        fn a_parsed_url_host_gets_the_verdict_of_its_address(
            v4 in any::<Ipv4Addr>(),
            v6 in any::<Ipv6Addr>(),
            port in 1u16..,
        ) {
            // What the call sites pass: the host of an already parsed URL.
            for (text, expected) in [
                (format!("http://{v4}:{port}/x"), v4.is_loopback()),
                (format!("https://[{v6}]:{port}/x"), v6.is_loopback()),
            ] {
                let url = Url::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(url.host_str().is_some_and(is_loopback_host), expected);
            }
        }

        #[test]
        fn names_other_than_localhost_never_are(name in "[a-zA-Z0-9.-]{0,30}") {
            prop_assume!(!name.eq_ignore_ascii_case("localhost"));
            prop_assume!(name.parse::<IpAddr>().is_err());
            prop_assert!(!is_loopback_host(&name));
        }
    }
}
