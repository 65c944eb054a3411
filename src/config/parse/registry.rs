//! `[[registry]]`: each Application Registry's client secret or signing key, pin and token
//! request settings, and the check that no two tables name one registry.

use super::{MINUTE, Problems, STRING, dotted, duration_at_least, parse_token_url};
use crate::client_auth::{AssertionKey, JwtAlg, KeyError};
use crate::config::raw::{Field, RawRegistry};
use crate::config::secrets::{Env, expand_path};
use crate::config::settings::{
    ClientAuth, DEFAULT_EXPIRES_IN, DEFAULT_REFRESH_LIFETIME, RegistrySettings, TokenEndpointKind,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3_600);

/// Every `[[registry]]` table, each checked whatever the others hold, and no name twice.
pub(super) fn registries(
    p: &mut Problems,
    raw: Option<Field<Vec<RawRegistry>>>,
    env: &dyn Env,
) -> Option<Vec<RegistrySettings>> {
    let raw = p
        .take("registry", raw, "an array of tables ([[registry]])")?
        .unwrap_or_default();
    // Every registry is checked before any is judged: collecting straight into an Option
    // would stop at the first bad one.
    let checked: Vec<Option<RegistrySettings>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, registry)| self::registry(p, &format!("registry[{i}]"), registry, env))
        .collect();
    // Two tables for one name: which secret and pin would apply is anyone's guess.
    for (j, later) in checked.iter().enumerate() {
        let Some(later) = later else { continue };
        if let Some(i) = checked[..j]
            .iter()
            .position(|earlier| earlier.as_ref().is_some_and(|e| e.name == later.name))
        {
            p.push(
                &format!("registry[{j}].name"),
                format!(
                    "registry[{i}] has the same name: configure each Application Registry once"
                ),
            );
        }
    }
    checked.into_iter().collect()
}

/// One `[[registry]]`; `table` is its key prefix, `registry[2]`.
fn registry(
    p: &mut Problems,
    table: &str,
    r: RawRegistry,
    env: &dyn Env,
) -> Option<RegistrySettings> {
    let key = |name: &str| dotted(table, name);
    p.unknown(table, &r.unknown, RawRegistry::KEYS);
    let name = p.required_text(
        &key("name"),
        r.name,
        "required: the oauth_entity name or sys_id",
    );
    let client_auth = p.optional(
        &key("client_auth"),
        r.client_auth,
        STRING,
        ClientAuth::default(),
        |word| match word.as_str() {
            "post" | "client_secret_post" => Ok(ClientAuth::Post),
            "basic" | "client_secret_basic" => Ok(ClientAuth::Basic),
            "private_key_jwt" => Ok(ClientAuth::PrivateKeyJwt),
            other => Err(format!(
                "{other:?} is not one of \"post\", \"basic\", \"private_key_jwt\""
            )),
        },
    );
    let signs = client_auth == Some(ClientAuth::PrivateKeyJwt);
    let client_secret = if signs {
        // Not read: with a signing key, a secret is a mistake to name, not a variable to need.
        p.unused(
            table,
            &[
                ("client_secret_env", r.client_secret_env.is_some()),
                ("client_secret_file", r.client_secret_file.is_some()),
            ],
            "a client secret is not used with client_auth = \"private_key_jwt\" (the certificate's key signs instead); remove it",
        );
        Some(None)
    } else {
        p.secret(
            env,
            (&key("client_secret_env"), &key("client_secret_file")),
            r.client_secret_env,
            r.client_secret_file,
        )
    };
    let assertion_key = match client_auth {
        Some(ClientAuth::PrivateKeyJwt) => assertion_key(
            p,
            table,
            r.private_key_file,
            r.certificate_file,
            r.jwt_alg,
            env,
        )
        .map(Some),
        Some(_) => {
            // Keys of private_key_jwt on another method are a mistake worth naming.
            p.unused(
                table,
                &[
                    ("private_key_file", r.private_key_file.is_some()),
                    ("certificate_file", r.certificate_file.is_some()),
                    ("jwt_alg", r.jwt_alg.is_some()),
                ],
                "only used with client_auth = \"private_key_jwt\"; remove it or set client_auth",
            );
            Some(None)
        }
        // The bad client_auth is reported; the keys that go with it cannot be judged.
        None => Some(None),
    };
    let token_url = p.optional(&key("token_url"), r.token_url, STRING, None, |text| {
        parse_token_url(&text).map(Some)
    });
    let scope = p.optional(&key("scope"), r.scope, STRING, None, unless_blank);
    let resource = p.optional(&key("resource"), r.resource, STRING, None, unless_blank);
    let kind = p.optional(&key("kind"), r.kind, STRING, None, |word| {
        match word.as_str() {
            "entra_v2" => Ok(TokenEndpointKind::EntraV2),
            "entra_v1" => Ok(TokenEndpointKind::EntraV1),
            "generic" => Ok(TokenEndpointKind::Generic),
            other => Err(format!(
                "{other:?} is not one of \"entra_v2\", \"entra_v1\", \"generic\""
            )),
        }
        .map(Some)
    });
    match (kind, &scope, &resource) {
        (Some(Some(TokenEndpointKind::EntraV2)), _, Some(Some(_))) => p.push(
            &key("resource"),
            "Entra v2 endpoints refuse `resource` (AADSTS901002); name the resource in `scope`, e.g. \"https://graph.microsoft.com/.default offline_access\"",
        ),
        (Some(Some(TokenEndpointKind::EntraV1)), Some(Some(_)), _) => p.push(
            &key("scope"),
            "Entra v1 endpoints take `resource` (the App ID URI), not `scope`; set resource = \"https://graph.microsoft.com\" instead",
        ),
        _ => {}
    }
    let default_expires_in = p.optional(
        &key("default_expires_in"),
        r.default_expires_in,
        STRING,
        DEFAULT_EXPIRES_IN,
        |text| duration_at_least(text, MINUTE),
    );
    let refresh_token_lifetime = p.optional(
        &key("refresh_token_lifetime"),
        r.refresh_token_lifetime,
        STRING,
        DEFAULT_REFRESH_LIFETIME,
        |text| duration_at_least(text, HOUR),
    );
    Some(RegistrySettings {
        name: name?,
        client_secret: client_secret?,
        scope: scope?,
        client_auth: client_auth?,
        default_expires_in: default_expires_in?,
        refresh_token_lifetime: refresh_token_lifetime?,
        kind: kind?,
        resource: resource?,
        assertion_key: assertion_key?,
        token_url: token_url?,
    })
}

/// The signing key of a `private_key_jwt` registry, read now so a bad file stops the start
/// (and a SIGHUP), not a refresh.
fn assertion_key(
    p: &mut Problems,
    table: &str,
    key_file: Option<Field<PathBuf>>,
    certificate_file: Option<Field<PathBuf>>,
    jwt_alg: Option<Field<String>>,
    env: &dyn Env,
) -> Option<Arc<AssertionKey>> {
    let key = |name: &str| dotted(table, name);
    let alg = p.optional(
        &key("jwt_alg"),
        jwt_alg,
        STRING,
        JwtAlg::default(),
        |text| {
            JwtAlg::parse(&text)
                .ok_or_else(|| format!("{text:?} is not one of \"PS256\", \"RS256\""))
        },
    );
    let key_file = p.required(
        &key("private_key_file"),
        key_file,
        STRING,
        "required with client_auth = \"private_key_jwt\": the PEM file of the certificate's private key",
        |path| expand_path(&path, env),
    );
    let certificate_file = p.required(
        &key("certificate_file"),
        certificate_file,
        STRING,
        "required with client_auth = \"private_key_jwt\": the PEM file of the certificate registered at the provider",
        |path| expand_path(&path, env),
    );
    match AssertionKey::load(&key_file?, &certificate_file?, alg?) {
        Ok(loaded) => Some(Arc::new(loaded)),
        Err(e) => {
            let k = match e {
                KeyError::ReadCertificate { .. } | KeyError::NoCertificate { .. } => {
                    "certificate_file"
                }
                _ => "private_key_file",
            };
            p.push(&key(k), e.to_string());
            None
        }
    }
}

/// A text that counts as left out when blank.
fn unless_blank(text: String) -> Result<Option<String>, String> {
    Ok(Some(text).filter(|t| !t.trim().is_empty()))
}
