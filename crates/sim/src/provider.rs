//! OAuth 2.0 token endpoints (refresh grant only) of three provider behaviours: Entra-like
//! (rotate, old tokens stay valid), strict rotation with reuse detection (Okta/Auth0), and
//! non-rotating (Google). Each provider tracks every refresh token it issued, its family (one
//! user grant) and its last use.
//!
//! A provider is reached at `/oauth2/{id}/token`, or at Entra's own paths with the id as the
//! tenant: `/{id}/oauth2/v2.0/token` (v2: `scope` required, `resource` refused with AADSTS901002)
//! and `/{id}/oauth2/token` (v1: `resource` required and checked against the grant's scopes,
//! `scope` ignored; every number in the answer a string, plus `expires_on` and `resource`).

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value, json};

use crate::estate::{EntraEndpoint, ExpiresInFormat, ProviderKind};
use crate::server::{Incoming, SimResponse};
use crate::state::new_guid;

const DAY: i64 = 86_400;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client (application) registered at a provider.
#[derive(Clone, Debug)]
pub(crate) struct ClientReg {
    pub secret: String,
    pub access_lifetime_secs: u64,
    pub expires_in_format: ExpiresInFormat,
    /// The registered certificate (DER): `private_key_jwt` assertions signed with its key are
    /// accepted.
    pub certificate_der: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
struct RefreshToken {
    client_id: String,
    family: usize,
    scopes: String,
    issued_at: i64,
    last_used: i64,
    /// Superseded by a newer token of the family.
    rotated: bool,
}

#[derive(Clone, Debug, Default)]
struct Family {
    /// When the grant was revoked (by the user or by reuse detection).
    revoked_at: Option<i64>,
}

/// One provider's token endpoint and token store.
#[derive(Debug)]
pub(crate) struct Provider {
    id: String,
    kind: ProviderKind,
    clients: BTreeMap<String, ClientReg>,
    tokens: HashMap<String, RefreshToken>,
    families: Vec<Family>,
    /// The `jti` of every client assertion accepted: one is never accepted twice.
    seen_jtis: HashSet<String>,
    /// Token POSTs received (faulted ones included).
    pub token_requests: usize,
    /// Every refresh token presented by an authenticated client, in arrival order: the
    /// provider's own record of who spent what.
    pub presented: Vec<String>,
}

/// Why a token request fails.
enum Failure {
    NotPost(String),
    MissingParam(&'static str),
    UnsupportedGrant(String),
    ConflictingAuth,
    UnknownClient(String),
    MissingSecret,
    MalformedBasic,
    BadSecret(String),
    UnknownToken,
    WrongClient,
    Revoked {
        issued_at: i64,
        revoked_at: i64,
    },
    Idle {
        issued_at: i64,
    },
    ReuseDetected,
    InvalidScope(String),
    /// `resource` sent to an Entra v2 endpoint.
    ResourceOnV2,
    /// An Entra v1 `resource` the grant does not cover.
    UnknownResource(String),
    /// A `private_key_jwt` client assertion refused (AADSTS code, Entra's text).
    BadAssertion {
        code: u32,
        text: &'static str,
    },
}

/// The Entra endpoint a request path names: `/{tenant}/oauth2/token` (v1) or
/// `/{tenant}/oauth2/v2.0/token` (v2); `None` for the simulator's own `/oauth2/{id}/token`.
fn entra_endpoint(path: &str) -> Option<EntraEndpoint> {
    if path.starts_with("/oauth2/") {
        None
    } else if path.ends_with("/oauth2/v2.0/token") {
        Some(EntraEndpoint::V2)
    } else if path.ends_with("/oauth2/token") {
        Some(EntraEndpoint::V1)
    } else {
        None
    }
}

/// The resources (App ID URIs) a v2-style scope list covers: each URI-shaped scope without its
/// permission (`https://graph.microsoft.com/.default` covers `https://graph.microsoft.com`).
fn granted_resources(scopes: &str) -> Vec<String> {
    scopes
        .split_whitespace()
        .filter_map(|scope| {
            let (scheme, rest) = scope.split_once("://")?;
            let host_and_path = match rest.rfind('/') {
                Some(slash) if slash > 0 => &rest[..slash],
                _ => rest,
            };
            Some(format!("{scheme}://{host_and_path}"))
        })
        .collect()
}

impl Provider {
    pub(crate) fn new(id: &str, kind: ProviderKind) -> Self {
        Self {
            id: id.to_owned(),
            kind,
            clients: BTreeMap::new(),
            tokens: HashMap::new(),
            families: Vec::new(),
            seen_jtis: HashSet::new(),
            token_requests: 0,
            presented: Vec::new(),
        }
    }

    pub(crate) fn add_client(&mut self, client_id: &str, reg: ClientReg) {
        self.clients.insert(client_id.to_owned(), reg);
    }

    fn idle_limit(&self) -> i64 {
        match self.kind {
            ProviderKind::EntraLike | ProviderKind::RotatingReuseDetection => 90 * DAY,
            ProviderKind::NonRotating => 180 * DAY,
        }
    }

    /// Registers a token issued before the simulator started, as a new family.
    pub(crate) fn seed_token(
        &mut self,
        token: &str,
        client_id: &str,
        scopes: &str,
        last_used: i64,
        revoked: bool,
    ) {
        self.families.push(Family {
            revoked_at: revoked.then_some(last_used),
        });
        self.tokens.insert(
            token.to_owned(),
            RefreshToken {
                client_id: client_id.to_owned(),
                family: self.families.len() - 1,
                scopes: scopes.to_owned(),
                issued_at: last_used,
                last_used,
                rotated: false,
            },
        );
    }

    /// How many families (grants) are revoked.
    pub(crate) fn revoked_families(&self) -> usize {
        self.families
            .iter()
            .filter(|f| f.revoked_at.is_some())
            .count()
    }

    /// Whether `token` would be accepted now (for its own client).
    pub(crate) fn is_valid(&self, token: &str, now: i64) -> bool {
        self.check(token, None, now).is_ok()
    }

    /// Revokes the grant `token` belongs to, as a user revoking the app's access does.
    pub(crate) fn revoke(&mut self, token: &str, now: i64) -> bool {
        let Some(family) = self.tokens.get(token).map(|t| t.family) else {
            return false;
        };
        if let Some(f) = self.families.get_mut(family) {
            f.revoked_at.get_or_insert(now);
        }
        true
    }

    fn check(
        &self,
        token: &str,
        client_id: Option<&str>,
        now: i64,
    ) -> Result<&RefreshToken, Failure> {
        let rt = self.tokens.get(token).ok_or(Failure::UnknownToken)?;
        if client_id.is_some_and(|c| c != rt.client_id) {
            return Err(Failure::WrongClient);
        }
        if let Some(revoked_at) = self.families.get(rt.family).and_then(|f| f.revoked_at) {
            return Err(Failure::Revoked {
                issued_at: rt.issued_at,
                revoked_at,
            });
        }
        if now - rt.last_used > self.idle_limit() {
            return Err(Failure::Idle {
                issued_at: rt.issued_at,
            });
        }
        if self.kind == ProviderKind::RotatingReuseDetection && rt.rotated {
            return Err(Failure::ReuseDetected);
        }
        Ok(rt)
    }

    /// Serves `POST /oauth2/<id>/token`.
    pub(crate) fn token_endpoint(
        &mut self,
        req: &Incoming,
        now: Timestamp,
        rng: &mut fastrand::Rng,
    ) -> SimResponse {
        let basic = req.header("authorization").is_some_and(is_basic);
        match self.refresh(req, now.as_second(), rng) {
            Ok(body) => token_response(200, &Value::Object(body), &[]),
            Err(failure) => self.error_response(failure, basic, now, rng),
        }
    }

    fn refresh(
        &mut self,
        req: &Incoming,
        now: i64,
        rng: &mut fastrand::Rng,
    ) -> Result<Map<String, Value>, Failure> {
        if !req.method.eq_ignore_ascii_case("POST") {
            return Err(Failure::NotPost(req.method.clone()));
        }
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(&req.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let field = |name: &str| form.get(name).filter(|v| !v.is_empty()).cloned();
        let grant_type = field("grant_type").ok_or(Failure::MissingParam("grant_type"))?;
        if grant_type != "refresh_token" {
            return Err(Failure::UnsupportedGrant(grant_type));
        }
        // Entra's two endpoints ask for access differently: v2 by `scope` (refusing
        // `resource`), v1 by `resource` (ignoring `scope`).
        let endpoint = entra_endpoint(&req.path);
        match endpoint {
            Some(EntraEndpoint::V2) => {
                if field("resource").is_some() {
                    return Err(Failure::ResourceOnV2);
                }
                if field("scope").is_none() {
                    return Err(Failure::MissingParam("scope"));
                }
            }
            Some(EntraEndpoint::V1) if field("resource").is_none() => {
                return Err(Failure::MissingParam("resource"));
            }
            Some(EntraEndpoint::V1) | None => {}
        }
        // Client authentication: client_secret_basic (RFC 6749 §2.3.1: both parts are
        // form-urlencoded before base64) or client_secret_post, never both.
        let basic = match req.header("authorization") {
            Some(header) if is_basic(header) => {
                Some(parse_basic(header).ok_or(Failure::MalformedBasic)?)
            }
            _ => None,
        };
        // Or private_key_jwt (RFC 7523), as Entra certificate credentials: a signed assertion
        // instead of any secret.
        let client_id = if let Some(assertion) = field("client_assertion") {
            if basic.is_some() || field("client_secret").is_some() {
                return Err(Failure::ConflictingAuth);
            }
            if field("client_assertion_type").as_deref() != Some(JWT_BEARER_ASSERTION) {
                return Err(Failure::MissingParam("client_assertion_type"));
            }
            self.verify_assertion(&assertion, field("client_id").as_deref(), &req.path, now)?
        } else {
            let (client_id, secret) = match basic {
                Some((id, secret)) => {
                    if field("client_secret").is_some() {
                        return Err(Failure::ConflictingAuth);
                    }
                    if field("client_id").is_some_and(|form_id| form_id != id) {
                        return Err(Failure::ConflictingAuth);
                    }
                    (id, Some(secret))
                }
                None => (
                    field("client_id").ok_or(Failure::MissingParam("client_id"))?,
                    field("client_secret"),
                ),
            };
            let client = self
                .clients
                .get(&client_id)
                .ok_or_else(|| Failure::UnknownClient(client_id.clone()))?;
            match secret {
                None => return Err(Failure::MissingSecret),
                Some(s) if s != client.secret => return Err(Failure::BadSecret(client_id)),
                Some(_) => {}
            }
            client_id
        };
        let client = self
            .clients
            .get(&client_id)
            .cloned()
            .ok_or_else(|| Failure::UnknownClient(client_id.clone()))?;
        let presented = field("refresh_token").ok_or(Failure::MissingParam("refresh_token"))?;
        self.presented.push(presented.clone());
        let rt = match self.check(&presented, Some(&client_id), now) {
            Ok(rt) => rt.clone(),
            Err(Failure::ReuseDetected) => {
                // Reuse of a rotated token: the whole family dies, the newest token included.
                if let Some(family) = self.tokens.get(&presented).map(|t| t.family)
                    && let Some(f) = self.families.get_mut(family)
                {
                    f.revoked_at = Some(now);
                }
                return Err(Failure::ReuseDetected);
            }
            Err(e) => return Err(e),
        };
        if endpoint == Some(EntraEndpoint::V1)
            && let Some(resource) = field("resource")
        {
            let granted = granted_resources(&rt.scopes);
            let wanted = resource.trim_end_matches('/');
            if !granted.is_empty() && !granted.iter().any(|g| g.trim_end_matches('/') == wanted) {
                return Err(Failure::UnknownResource(resource));
            }
        }
        let scope = match field("scope") {
            _ if endpoint == Some(EntraEndpoint::V1) => "user_impersonation".to_owned(),
            Some(requested) => {
                let granted: Vec<&str> = rt.scopes.split_whitespace().collect();
                if let Some(bad) = requested.split_whitespace().find(|s| !granted.contains(s)) {
                    return Err(Failure::InvalidScope(bad.to_owned()));
                }
                requested
            }
            None => rt.scopes.clone(),
        };

        let mut body = Map::new();
        body.insert("token_type".to_owned(), json!("Bearer"));
        body.insert("scope".to_owned(), json!(scope));
        let lifetime = client.access_lifetime_secs.saturating_sub(1);
        // Entra v1 answers every number as a string, and adds `expires_on` and `resource`.
        let format = if endpoint == Some(EntraEndpoint::V1) {
            ExpiresInFormat::String
        } else {
            client.expires_in_format
        };
        let expires = match format {
            ExpiresInFormat::Number => Some(json!(lifetime)),
            ExpiresInFormat::String => Some(json!(lifetime.to_string())),
            ExpiresInFormat::Missing => None,
        };
        if let Some(expires) = expires {
            if self.kind == ProviderKind::EntraLike {
                body.insert("ext_expires_in".to_owned(), expires.clone());
            }
            body.insert("expires_in".to_owned(), expires);
        }
        if endpoint == Some(EntraEndpoint::V1) {
            let lifetime = i64::try_from(lifetime).unwrap_or(i64::MAX);
            body.insert(
                "expires_on".to_owned(),
                json!(now.saturating_add(lifetime).to_string()),
            );
            body.insert("not_before".to_owned(), json!(now.to_string()));
            if let Some(resource) = field("resource") {
                body.insert("resource".to_owned(), json!(resource));
            }
        }
        body.insert("access_token".to_owned(), json!(opaque(rng, "at")));
        if let Some(old) = self.tokens.get_mut(&presented) {
            old.last_used = now;
        }
        if self.kind != ProviderKind::NonRotating {
            let new_token = opaque(rng, "rt");
            if let Some(old) = self.tokens.get_mut(&presented) {
                old.rotated = true;
            }
            self.tokens.insert(
                new_token.clone(),
                RefreshToken {
                    client_id,
                    family: rt.family,
                    scopes: rt.scopes,
                    issued_at: now,
                    last_used: now,
                    rotated: false,
                },
            );
            body.insert("refresh_token".to_owned(), json!(new_token));
        }
        Ok(body)
    }

    /// Checks a client assertion as Entra does for a certificate credential: the certificate
    /// named by `x5t#S256` (or the legacy `x5t`) is the application's, the PS256 or RS256
    /// signature verifies with its key, `iss` = `sub` = the client, `aud` is this token
    /// endpoint, it has not expired, and its `jti` was never seen. Returns the client id.
    fn verify_assertion(
        &mut self,
        jwt: &str,
        form_client_id: Option<&str>,
        path: &str,
        now: i64,
    ) -> Result<String, Failure> {
        let bad = |code, text| Failure::BadAssertion { code, text };
        let parts: Vec<&str> = jwt.split('.').collect();
        let [header, claims, sig] = parts[..] else {
            return Err(bad(50012, "The client assertion is not a signed JWT."));
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        };
        let (Some(header_json), Some(claims_json), Ok(signature_bytes)) =
            (decode(header), decode(claims), URL_SAFE_NO_PAD.decode(sig))
        else {
            return Err(bad(50012, "The client assertion is not a signed JWT."));
        };
        let sub = claims_json["sub"].as_str().unwrap_or_default().to_owned();
        if sub.is_empty() || claims_json["iss"].as_str() != Some(sub.as_str()) {
            return Err(bad(
                50012,
                "The client assertion's iss and sub must both be the client id.",
            ));
        }
        if form_client_id.is_some_and(|id| id != sub) {
            return Err(Failure::ConflictingAuth);
        }
        let client = self
            .clients
            .get(&sub)
            .ok_or_else(|| Failure::UnknownClient(sub.clone()))?;
        let Some(cert) = client.certificate_der.clone() else {
            return Err(bad(
                700027,
                "Client assertion failed signature validation. No certificate is registered for the application.",
            ));
        };
        let b64 = |d: digest::Digest| URL_SAFE_NO_PAD.encode(d);
        let named = header_json["x5t#S256"].as_str()
            == Some(b64(digest::digest(&digest::SHA256, &cert)).as_str())
            || header_json["x5t"].as_str()
                == Some(b64(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &cert)).as_str());
        if !named {
            return Err(bad(
                700027,
                "Client assertion failed signature validation. The key was not found.",
            ));
        }
        let algorithm = match header_json["alg"].as_str() {
            Some("PS256") => webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            Some("RS256") => webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            _ => {
                return Err(bad(
                    700027,
                    "Client assertion failed signature validation. The algorithm is not supported.",
                ));
            }
        };
        // The certificate's key, found by a full X.509 parser (webpki), checks the signature.
        let cert = CertificateDer::from(cert);
        let signed = format!("{header}.{claims}");
        let verified = webpki::EndEntityCert::try_from(&cert)
            .and_then(|cert| cert.verify_signature(algorithm, signed.as_bytes(), &signature_bytes));
        if verified.is_err() {
            return Err(bad(700027, "Client assertion failed signature validation."));
        }
        let audience_path = claims_json["aud"]
            .as_str()
            .and_then(|aud| url::Url::parse(aud).ok())
            .map(|aud| aud.path().to_owned());
        if audience_path.as_deref() != Some(path) {
            return Err(bad(
                50012,
                "The client assertion's audience claim does not match the token endpoint.",
            ));
        }
        if claims_json["exp"].as_i64().is_none_or(|exp| exp <= now) {
            return Err(bad(50012, "The client assertion has expired."));
        }
        if claims_json["nbf"]
            .as_i64()
            .is_some_and(|nbf| nbf > now + 300)
        {
            return Err(bad(50012, "The client assertion is not yet valid."));
        }
        let jti = claims_json["jti"].as_str().unwrap_or_default();
        if jti.is_empty() || !self.seen_jtis.insert(jti.to_owned()) {
            return Err(bad(
                50012,
                "The client assertion's jti is missing or has been used before.",
            ));
        }
        Ok(sub)
    }

    fn error_response(
        &self,
        failure: Failure,
        basic_used: bool,
        now: Timestamp,
        rng: &mut fastrand::Rng,
    ) -> SimResponse {
        let (status, error, code, entra_text, generic_text) = describe(&failure, self.kind);
        let mut headers = Vec::new();
        if status == 401 && basic_used {
            headers.push((
                "WWW-Authenticate".to_owned(),
                format!("Basic realm=\"{}\"", self.id),
            ));
        }
        let body = match self.kind {
            ProviderKind::EntraLike => {
                let trace = new_guid(rng);
                let correlation = new_guid(rng);
                let stamp = format!("{}Z", crate::datetime::format_utc(now));
                json!({
                    "error": error,
                    "error_description": format!(
                        "AADSTS{code}: {entra_text}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {stamp}"
                    ),
                    "error_codes": [code],
                    "timestamp": stamp,
                    "trace_id": trace,
                    "correlation_id": correlation,
                    "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
                })
            }
            ProviderKind::RotatingReuseDetection | ProviderKind::NonRotating => json!({
                "error": error,
                "error_description": generic_text,
            }),
        };
        token_response(status, &body, &headers)
    }
}

/// (status, error, AADSTS code, Entra text, text of the other providers).
fn describe(failure: &Failure, kind: ProviderKind) -> (u16, &'static str, u32, String, String) {
    let google = kind == ProviderKind::NonRotating;
    let revoked_generic = if google {
        "Token has been expired or revoked."
    } else {
        "The refresh token is invalid or expired."
    };
    match failure {
        Failure::NotPost(method) => (
            400,
            "invalid_request",
            900561,
            format!("The endpoint only accepts POST requests. Received a {method} request."),
            "The token endpoint only accepts POST requests.".to_owned(),
        ),
        Failure::MissingParam(param) => (
            400,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
            format!("The request is missing a required parameter: {param}."),
        ),
        Failure::UnsupportedGrant(grant) => (
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
            format!("The authorization grant type is not supported by the authorization server: {grant}."),
        ),
        Failure::ConflictingAuth => (
            400,
            "invalid_request",
            9002313,
            "Invalid request. Request is malformed or invalid.".to_owned(),
            "Cannot use more than one client authentication method.".to_owned(),
        ),
        Failure::UnknownClient(client_id) => (
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory 'Contoso'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
            if google {
                "The OAuth client was not found.".to_owned()
            } else {
                "Invalid value for 'client_id' parameter.".to_owned()
            },
        ),
        Failure::MissingSecret => (
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".to_owned(),
            "Client authentication failed. Either the client or the client credentials are invalid.".to_owned(),
        ),
        Failure::MalformedBasic => (
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. The client credentials in the Authorization header could not be decoded.".to_owned(),
            "Client authentication failed. Either the client or the client credentials are invalid.".to_owned(),
        ),
        Failure::BadSecret(client_id) => (
            401,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
            if google {
                "Unauthorized".to_owned()
            } else {
                "The client secret supplied for a confidential client is invalid.".to_owned()
            },
        ),
        Failure::UnknownToken => (
            400,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.".to_owned(),
            revoked_generic.to_owned(),
        ),
        Failure::WrongClient => (
            400,
            "invalid_grant",
            70000,
            "Provided grant is invalid or malformed.".to_owned(),
            revoked_generic.to_owned(),
        ),
        Failure::Revoked {
            issued_at,
            revoked_at,
        } => (
            400,
            "invalid_grant",
            50173,
            format!(
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '{}' and the TokensValidFrom date (before which tokens are not valid) for this user is '{}'.",
                iso(*issued_at),
                iso(*revoked_at)
            ),
            revoked_generic.to_owned(),
        ),
        Failure::Idle { issued_at } => (
            400,
            "invalid_grant",
            700082,
            format!(
                "The refresh token has expired due to inactivity. The token was issued on {} and was inactive for 90.00:00:00.",
                iso(*issued_at)
            ),
            revoked_generic.to_owned(),
        ),
        Failure::ReuseDetected => (
            400,
            "invalid_grant",
            70000,
            "Provided grant is invalid or malformed.".to_owned(),
            revoked_generic.to_owned(),
        ),
        Failure::ResourceOnV2 => (
            400,
            "invalid_request",
            901002,
            "The 'resource' request parameter is not supported.".to_owned(),
            "The 'resource' request parameter is not supported.".to_owned(),
        ),
        Failure::UnknownResource(resource) => (
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named Contoso. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
            format!("The resource {resource} is not covered by the grant."),
        ),
        Failure::BadAssertion { code, text } => (
            401,
            "invalid_client",
            *code,
            (*text).to_owned(),
            "Client authentication failed: the client assertion is invalid.".to_owned(),
        ),
        Failure::InvalidScope(scope) => (
            400,
            "invalid_scope",
            70011,
            format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
            format!("The requested scope is invalid, unknown, or malformed: {scope}."),
        ),
    }
}

fn iso(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn token_response(status: u16, body: &Value, extra: &[(String, String)]) -> SimResponse {
    let mut headers = vec![
        (
            "Content-Type".to_owned(),
            "application/json; charset=utf-8".to_owned(),
        ),
        ("Cache-Control".to_owned(), "no-store".to_owned()),
        ("Pragma".to_owned(), "no-cache".to_owned()),
    ];
    headers.extend_from_slice(extra);
    SimResponse {
        status,
        headers,
        body: body.to_string().into_bytes(),
    }
}

fn is_basic(header: &str) -> bool {
    header
        .trim()
        .split_once(' ')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
}

/// `id:secret` from a Basic header, each part form-urldecoded (RFC 6749 §2.3.1).
fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// application/x-www-form-urlencoded decoding of one value (`+` = space, `%XX`).
fn form_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn opaque(rng: &mut fastrand::Rng, prefix: &str) -> String {
    let hex: String = (0..48)
        .map(|_| char::from_digit(rng.u32(..16), 16).unwrap_or('0'))
        .collect();
    format!("{prefix}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!("Basic {}", STANDARD.encode("my%20app:s%2Bcr%3At+x"));
        assert_eq!(
            parse_basic(&header),
            Some(("my app".to_owned(), "s+cr:t x".to_owned()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(form_decode("%zz"), None);
    }

    const CERT_A: &str = include_str!("../../../tests/oidc/keys/client-a.cert.pem");
    const KEY_A: &[u8] = include_bytes!("../../../tests/oidc/keys/client-a.key.pem");

    /// Signs client assertions for these tests with the simulator's own few lines (not the
    /// keeper's signer, which the simulator is there to check).
    struct TestSigner {
        key: aws_lc_rs::signature::RsaKeyPair,
        x5t_s256: String,
    }

    impl TestSigner {
        fn client_a() -> TestSigner {
            use rustls_pki_types::PrivateKeyDer;
            use rustls_pki_types::pem::PemObject;
            let Ok(PrivateKeyDer::Pkcs8(der)) = PrivateKeyDer::from_pem_slice(KEY_A) else {
                panic!("client-a's key is a PKCS#8 PEM");
            };
            let cert = CertificateDer::from_pem_slice(CERT_A.as_bytes()).unwrap();
            TestSigner {
                key: aws_lc_rs::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap(),
                x5t_s256: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &cert)),
            }
        }

        /// A signed assertion of `client` for the token endpoint `aud`, issued at `now`.
        fn assertion(&self, alg: &str, client: &str, aud: &str, now: i64, jti: &str) -> String {
            use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaEncoding};
            let header = json!({"alg": alg, "typ": "JWT", "x5t#S256": self.x5t_s256});
            let claims = json!({
                "aud": aud, "iss": client, "sub": client, "jti": jti,
                "iat": now, "nbf": now - 30, "exp": now + 300,
            });
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let encoding: &'static dyn RsaEncoding = match alg {
                "PS256" => &RSA_PSS_SHA256,
                _ => &RSA_PKCS1_SHA256,
            };
            let mut signature = vec![0; self.key.public_modulus_len()];
            let rng = aws_lc_rs::rand::SystemRandom::new();
            self.key
                .sign(encoding, &rng, input.as_bytes(), &mut signature)
                .unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
        }
    }

    #[test]
    fn client_assertions_are_checked_like_entra_checks_them() {
        use rustls_pki_types::pem::PemObject;
        let signer = TestSigner::client_a();
        let mut p = Provider::new("t", ProviderKind::EntraLike);
        p.add_client(
            "app",
            ClientReg {
                secret: String::new(),
                access_lifetime_secs: 3600,
                expires_in_format: ExpiresInFormat::Number,
                certificate_der: CertificateDer::from_pem_slice(CERT_A.as_bytes())
                    .ok()
                    .map(|d| d.as_ref().to_vec()),
            },
        );
        let now = 1_800_000_000;
        let path = "/t/oauth2/v2.0/token";
        let aud = "http://127.0.0.1:1/t/oauth2/v2.0/token";
        let code = |r: Result<String, Failure>| match r {
            Ok(_) => 0,
            Err(Failure::BadAssertion { code, .. }) => code,
            Err(_) => 1,
        };
        for alg in ["PS256", "RS256"] {
            let jwt = signer.assertion(alg, "app", aud, now, &format!("{alg}-1"));
            assert_eq!(code(p.verify_assertion(&jwt, Some("app"), path, now)), 0);
            assert_eq!(
                code(p.verify_assertion(&jwt, None, path, now)),
                50012,
                "a jti is accepted once"
            );
            // Another assertion's header and claims under this one's signature.
            let fresh = signer.assertion(alg, "app", aud, now, &format!("{alg}-2"));
            let (head, _) = fresh.rsplit_once('.').unwrap();
            let (_, sig) = jwt.rsplit_once('.').unwrap();
            assert_eq!(
                code(p.verify_assertion(&format!("{head}.{sig}"), None, path, now)),
                700027
            );
        }
        let other_aud = signer.assertion(
            "PS256",
            "app",
            "http://127.0.0.1:1/other/oauth2/v2.0/token",
            now,
            "other-aud",
        );
        assert_eq!(code(p.verify_assertion(&other_aud, None, path, now)), 50012);
        let late = signer.assertion("PS256", "app", aud, now, "late");
        assert_eq!(
            code(p.verify_assertion(&late, None, path, now + 301)),
            50012,
            "expired after five minutes"
        );
    }

    #[test]
    fn entra_paths_and_resources() {
        assert_eq!(
            entra_endpoint("/common/oauth2/token"),
            Some(EntraEndpoint::V1)
        );
        assert_eq!(
            entra_endpoint("/organizations/oauth2/v2.0/token"),
            Some(EntraEndpoint::V2)
        );
        assert_eq!(entra_endpoint("/oauth2/entra/token"), None);
        assert_eq!(
            granted_resources("https://contoso.sharepoint.com/.default offline_access api://x/y"),
            vec![
                "https://contoso.sharepoint.com".to_owned(),
                "api://x".to_owned()
            ]
        );
    }

    #[test]
    fn validity_tracks_rotation_per_kind() {
        let now = 1_000_000_000;
        for (kind, old_still_valid) in [
            (ProviderKind::EntraLike, true),
            (ProviderKind::RotatingReuseDetection, false),
        ] {
            let mut p = Provider::new("p", kind);
            p.seed_token("rt-1", "c", "a b", now, false);
            if let Some(t) = p.tokens.get_mut("rt-1") {
                t.rotated = true;
            }
            assert_eq!(p.is_valid("rt-1", now), old_still_valid);
        }
        let mut p = Provider::new("p", ProviderKind::NonRotating);
        p.seed_token("rt-1", "c", "a", now - 170 * DAY, false);
        assert!(p.is_valid("rt-1", now));
        assert!(!p.is_valid("rt-1", now + 11 * DAY));
        assert!(p.revoke("rt-1", now));
        assert!(!p.is_valid("rt-1", now));
        assert!(!p.revoke("nope", now));
    }
}
