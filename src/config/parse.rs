//! Validation: the raw TOML shapes into [`Settings`], each error naming the file and the key.

use super::ConfigError;
use super::raw::RawConfig;
use super::secrets::{Env, KeySource, expand_path, read_secret_file};
use super::settings::{
    ClientAuth, DEFAULT_COMPANION_PATH, DEFAULT_EXPIRES_IN, DEFAULT_REFRESH_LIFETIME,
    InstanceAuthSettings, InstanceSettings, RefreshSettings, RegistrySettings, ReportSettings,
    ServerSettings, Settings, StateSettings, TokenEndpointKind,
};
use crate::client_auth::{AssertionKey, JwtAlg, KeyError};
use crate::domain::time::parse_duration;
use secrecy::SecretString;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Validates the raw shapes of a file; `file` is only used in messages.
pub(super) fn settings(raw: RawConfig, file: &str, env: &dyn Env) -> Result<Settings, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: file.to_string(),
        key: key.to_string(),
        message,
    };
    let duration = |key: &str, value: Option<&String>, default: Duration, min: Duration| {
        let Some(text) = value else {
            return Ok(default);
        };
        let d = parse_duration(text).map_err(|e| invalid(key, e.to_string()))?;
        if d < min {
            return Err(invalid(
                key,
                format!("{text:?} is too short (at least {}s)", min.as_secs()),
            ));
        }
        Ok(d)
    };

    let inst = raw
        .instance
        .ok_or_else(|| invalid("instance", "the [instance] table is required".into()))?;
    let url_text = inst.url.ok_or_else(|| {
        invalid(
            "instance.url",
            "required (e.g. \"https://acme.service-now.com\")".into(),
        )
    })?;
    let url = parse_instance_url(&url_text).map_err(|m| invalid("instance.url", m))?;
    let username = inst
        .username
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| {
            invalid(
                "instance.username",
                "required: the integration user's user_name".into(),
            )
        })?;
    let password = match (inst.password_env, inst.password_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "instance.password_env",
                "set either password_env or password_file, not both".into(),
            ));
        }
        (None, None) => {
            return Err(invalid(
                "instance.password_env",
                "required: the environment variable holding the password (or password_file)".into(),
            ));
        }
        (Some(var), None) => env
            .var(&var)
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
            .ok_or_else(|| {
                invalid(
                    "instance.password_env",
                    format!("environment variable {var} is not set or empty"),
                )
            })?,
        (None, Some(path)) => expand_path(&path, env)
            .and_then(|p| read_secret_file(&p))
            .map_err(|m| invalid("instance.password_file", m))?,
    };
    let companion_path = inst
        .companion_path
        .unwrap_or_else(|| DEFAULT_COMPANION_PATH.to_string());
    if !companion_path.starts_with('/') || companion_path.contains(['?', '#', ' ']) {
        return Err(invalid(
            "instance.companion_path",
            format!(
                "{companion_path:?} must be a path starting with '/', e.g. \"/api/snok/oauth_keeper\""
            ),
        ));
    }
    let companion_path = companion_path.trim_end_matches('/').to_string();
    let timeout = duration(
        "instance.timeout",
        inst.timeout.as_ref(),
        InstanceSettings::DEFAULT_TIMEOUT,
        Duration::from_secs(1),
    )?;
    let page_size = match inst.page_size {
        None => InstanceSettings::DEFAULT_PAGE_SIZE,
        Some(n) if (1..=10_000).contains(&n) => {
            usize::try_from(n).unwrap_or(InstanceSettings::DEFAULT_PAGE_SIZE)
        }
        Some(n) => {
            return Err(invalid(
                "instance.page_size",
                format!("{n} is out of range (1 to 10000)"),
            ));
        }
    };
    let auth = parse_instance_auth(
        inst.auth.as_deref(),
        inst.client_id,
        inst.client_secret_env,
        inst.client_secret_file,
        env,
    )
    .map_err(|(key, message)| invalid(key, message))?;

    let r = raw.refresh;
    let defaults = RefreshSettings::default();
    let concurrency = match r.concurrency {
        None => defaults.concurrency,
        Some(n) if (1..=256).contains(&n) => usize::try_from(n).unwrap_or(defaults.concurrency),
        Some(n) => {
            return Err(invalid(
                "refresh.concurrency",
                format!("{n} is out of range (1 to 256)"),
            ));
        }
    };
    let per_host_concurrency = match r.per_host_concurrency {
        None => defaults.per_host_concurrency,
        Some(n) if (1..=256).contains(&n) => {
            usize::try_from(n).unwrap_or(defaults.per_host_concurrency)
        }
        Some(n) => {
            return Err(invalid(
                "refresh.per_host_concurrency",
                format!("{n} is out of range (1 to 256)"),
            ));
        }
    };
    let refresh = RefreshSettings {
        interval: duration(
            "refresh.interval",
            r.interval.as_ref(),
            defaults.interval,
            Duration::from_secs(1),
        )?,
        lead_time: duration(
            "refresh.lead_time",
            r.lead_time.as_ref(),
            defaults.lead_time,
            Duration::ZERO,
        )?,
        keepalive: duration(
            "refresh.keepalive",
            r.keepalive.as_ref(),
            defaults.keepalive,
            Duration::from_secs(60),
        )?,
        concurrency,
        per_host_concurrency,
        timeout: duration(
            "refresh.timeout",
            r.timeout.as_ref(),
            defaults.timeout,
            Duration::from_secs(1),
        )?,
        shutdown_grace: duration(
            "refresh.shutdown_grace",
            r.shutdown_grace.as_ref(),
            defaults.shutdown_grace,
            Duration::from_secs(1),
        )?,
    };

    let key = match (raw.state.key_env, raw.state.key_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "state.key_env",
                "set either key_env or key_file, not both".into(),
            ));
        }
        (Some(var), None) => KeySource::Env(var),
        (None, Some(path)) => {
            KeySource::File(expand_path(&path, env).map_err(|m| invalid("state.key_file", m))?)
        }
        (None, None) => KeySource::default(),
    };
    let state = StateSettings {
        dir: match raw.state.dir {
            Some(dir) => expand_path(&dir, env).map_err(|m| invalid("state.dir", m))?,
            None => StateSettings::default().dir,
        },
        key,
    };
    let listen = match raw.server.listen {
        None => ServerSettings::default().listen,
        Some(text) => text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "server.listen",
                format!("{text:?} is not an address:port (e.g. \"127.0.0.1:9464\")"),
            )
        })?,
    };

    let mut registries = Vec::new();
    for (i, reg) in raw.registry.into_iter().enumerate() {
        let key = |k: &str| format!("registry[{i}].{k}");
        let name = reg.name.filter(|n| !n.trim().is_empty()).ok_or_else(|| {
            invalid(
                &key("name"),
                "required: the oauth_entity name or sys_id".into(),
            )
        })?;
        let secret_key = if reg.client_secret_env.is_some() {
            Some("client_secret_env")
        } else if reg.client_secret_file.is_some() {
            Some("client_secret_file")
        } else {
            None
        };
        let client_secret = match (reg.client_secret_env, reg.client_secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &key("client_secret_env"),
                    "set either client_secret_env or client_secret_file, not both".into(),
                ));
            }
            (Some(var), None) => Some(
                env.var(&var)
                    .filter(|v| !v.is_empty())
                    .map(SecretString::from)
                    .ok_or_else(|| {
                        invalid(
                            &key("client_secret_env"),
                            format!("environment variable {var} is not set or empty"),
                        )
                    })?,
            ),
            (None, Some(path)) => Some(
                expand_path(&path, env)
                    .and_then(|p| read_secret_file(&p))
                    .map_err(|m| invalid(&key("client_secret_file"), m))?,
            ),
            (None, None) => None,
        };
        let client_auth = match reg.client_auth.as_deref() {
            None | Some("post") | Some("client_secret_post") => ClientAuth::Post,
            Some("basic") | Some("client_secret_basic") => ClientAuth::Basic,
            Some("private_key_jwt") => ClientAuth::PrivateKeyJwt,
            Some(other) => {
                return Err(invalid(
                    &key("client_auth"),
                    format!("{other:?} is not one of \"post\", \"basic\", \"private_key_jwt\""),
                ));
            }
        };
        let assertion_key = registry_assertion_key(
            client_auth,
            secret_key,
            reg.private_key_file,
            reg.certificate_file,
            reg.jwt_alg.as_deref(),
            env,
        )
        .map_err(|(k, message)| invalid(&key(k), message))?;
        let scope = reg.scope.filter(|s| !s.trim().is_empty());
        let resource = reg.resource.filter(|s| !s.trim().is_empty());
        let kind = registry_kind(reg.kind.as_deref(), scope.is_some(), resource.is_some())
            .map_err(|(k, message)| invalid(&key(k), message))?;
        registries.push(RegistrySettings {
            default_expires_in: duration(
                &key("default_expires_in"),
                reg.default_expires_in.as_ref(),
                DEFAULT_EXPIRES_IN,
                Duration::from_secs(60),
            )?,
            refresh_token_lifetime: duration(
                &key("refresh_token_lifetime"),
                reg.refresh_token_lifetime.as_ref(),
                DEFAULT_REFRESH_LIFETIME,
                Duration::from_secs(3_600),
            )?,
            name,
            client_secret,
            scope,
            client_auth,
            kind,
            resource,
            assertion_key,
        });
    }

    let report = match raw.report {
        None => None,
        Some(r) => {
            let defaults = ReportSettings::default();
            let table = r.table.unwrap_or_else(|| defaults.table.clone());
            if table != defaults.table {
                return Err(invalid(
                    "report.table",
                    format!("{table:?} is not supported; use \"em_event\" (Event Management)"),
                ));
            }
            let text = |key: &str, value: Option<String>, default: String| {
                let v = value.unwrap_or(default);
                if v.trim().is_empty() || v.len() > 100 {
                    Err(invalid(key, "must be 1 to 100 characters".into()))
                } else {
                    Ok(v)
                }
            };
            Some(ReportSettings {
                table,
                source: text("report.source", r.source, defaults.source)?,
                node: text("report.node", r.node, defaults.node)?,
            })
        }
    };
    Ok(Settings {
        source: file.to_string(),
        instance: InstanceSettings {
            url,
            username,
            password,
            companion_path,
            timeout,
            page_size,
            auth,
        },
        refresh,
        state,
        server: ServerSettings { listen },
        registries,
        report,
    })
}

/// The signing key of a `private_key_jwt` registry, read now so a bad file stops the start;
/// keys of that method on another one are a mistake worth naming. An error names the key at
/// fault (relative to the registry).
fn registry_assertion_key(
    client_auth: ClientAuth,
    secret_key: Option<&'static str>,
    private_key_file: Option<PathBuf>,
    certificate_file: Option<PathBuf>,
    jwt_alg: Option<&str>,
    env: &dyn Env,
) -> Result<Option<Arc<AssertionKey>>, (&'static str, String)> {
    if client_auth != ClientAuth::PrivateKeyJwt {
        let stray = [
            ("private_key_file", private_key_file.is_some()),
            ("certificate_file", certificate_file.is_some()),
            ("jwt_alg", jwt_alg.is_some()),
        ];
        if let Some((k, _)) = stray.iter().find(|(_, set)| *set) {
            return Err((
                *k,
                "only used with client_auth = \"private_key_jwt\"; remove it or set client_auth"
                    .into(),
            ));
        }
        return Ok(None);
    }
    if let Some(secret_key) = secret_key {
        return Err((
            secret_key,
            "a client secret is not used with client_auth = \"private_key_jwt\" (the certificate's key signs instead); remove it".into(),
        ));
    }
    let alg = match jwt_alg {
        None => JwtAlg::default(),
        Some(text) => JwtAlg::parse(text).ok_or((
            "jwt_alg",
            format!("{text:?} is not one of \"PS256\", \"RS256\""),
        ))?,
    };
    let key_file = private_key_file.ok_or((
        "private_key_file",
        "required with client_auth = \"private_key_jwt\": the PEM file of the certificate's private key".to_string(),
    ))?;
    let certificate_file = certificate_file.ok_or((
        "certificate_file",
        "required with client_auth = \"private_key_jwt\": the PEM file of the certificate registered at the provider".to_string(),
    ))?;
    let key_file = expand_path(&key_file, env).map_err(|m| ("private_key_file", m))?;
    let certificate_file =
        expand_path(&certificate_file, env).map_err(|m| ("certificate_file", m))?;
    let key = AssertionKey::load(&key_file, &certificate_file, alg).map_err(|e| {
        let k = match e {
            KeyError::ReadCertificate { .. } | KeyError::NoCertificate { .. } => "certificate_file",
            _ => "private_key_file",
        };
        (k, e.to_string())
    })?;
    Ok(Some(Arc::new(key)))
}

/// `registry[].kind`, checked against the keys the kind does not take.
fn registry_kind(
    kind: Option<&str>,
    has_scope: bool,
    has_resource: bool,
) -> Result<Option<TokenEndpointKind>, (&'static str, String)> {
    let kind = match kind {
        None => return Ok(None),
        Some("entra_v2") => TokenEndpointKind::EntraV2,
        Some("entra_v1") => TokenEndpointKind::EntraV1,
        Some("generic") => TokenEndpointKind::Generic,
        Some(other) => {
            return Err((
                "kind",
                format!("{other:?} is not one of \"entra_v2\", \"entra_v1\", \"generic\""),
            ));
        }
    };
    match kind {
        TokenEndpointKind::EntraV2 if has_resource => Err((
            "resource",
            "Entra v2 endpoints refuse `resource` (AADSTS901002); name the resource in `scope`, e.g. \"https://graph.microsoft.com/.default offline_access\"".into(),
        )),
        TokenEndpointKind::EntraV1 if has_scope => Err((
            "scope",
            "Entra v1 endpoints take `resource` (the App ID URI), not `scope`; set resource = \"https://graph.microsoft.com\" instead".into(),
        )),
        _ => Ok(Some(kind)),
    }
}

/// `instance.auth` and the keys that go with it; an error names the key at fault.
fn parse_instance_auth(
    auth: Option<&str>,
    client_id: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    env: &dyn Env,
) -> Result<InstanceAuthSettings, (&'static str, String)> {
    match auth.unwrap_or("basic") {
        "basic" => {
            // Keys of the other mode are a mistake worth naming, not something to ignore.
            if client_id.is_some() || secret_env.is_some() || secret_file.is_some() {
                let key = if client_id.is_some() {
                    "instance.client_id"
                } else if secret_env.is_some() {
                    "instance.client_secret_env"
                } else {
                    "instance.client_secret_file"
                };
                return Err((
                    key,
                    "only used with auth = \"oauth\"; remove it or set instance.auth = \"oauth\""
                        .into(),
                ));
            }
            Ok(InstanceAuthSettings::Basic)
        }
        "oauth" => {
            let client_id = client_id.filter(|c| !c.trim().is_empty()).ok_or((
                "instance.client_id",
                "required with auth = \"oauth\": the client id of the instance's OAuth API endpoint (System OAuth > Application Registry)".to_string(),
            ))?;
            let client_secret = match (secret_env, secret_file) {
                (Some(_), Some(_)) => {
                    return Err((
                        "instance.client_secret_env",
                        "set either client_secret_env or client_secret_file, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err((
                        "instance.client_secret_env",
                        "required with auth = \"oauth\": the environment variable holding the client secret (or client_secret_file)".into(),
                    ));
                }
                (Some(var), None) => env
                    .var(&var)
                    .filter(|v| !v.is_empty())
                    .map(SecretString::from)
                    .ok_or((
                        "instance.client_secret_env",
                        format!("environment variable {var} is not set or empty"),
                    ))?,
                (None, Some(path)) => expand_path(&path, env)
                    .and_then(|p| read_secret_file(&p))
                    .map_err(|m| ("instance.client_secret_file", m))?,
            };
            Ok(InstanceAuthSettings::OAuth {
                client_id,
                client_secret,
            })
        }
        other => Err((
            "instance.auth",
            format!("{other:?} is not one of \"basic\", \"oauth\""),
        )),
    }
}

/// Accepts `https://host[:port]` for any host, `http://` only for loopback hosts (the simulator,
/// a local tunnel): Basic credentials must never cross a network in clear.
pub fn parse_instance_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use username and password_env".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not have a query or fragment"));
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
    let mut url = url;
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
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
