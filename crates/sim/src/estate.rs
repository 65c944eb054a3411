//! What the simulator is seeded with: registries (oauth_entity + provider app), credentials
//! (refresh row, optional access row, requestor profile) and the integration user. Everything is
//! drawn from one seeded RNG so a given seed always yields the same sys_ids and tokens; only
//! timestamps depend on when the simulator starts (they are relative to "now").

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use crate::cipher::Cipher;
use crate::datetime;
use crate::db::{Db, Row};
use crate::instance::InstanceSide;
use crate::provider::{ClientReg, Provider};
use crate::state::{State, UserAccount, new_guid, new_sys_id};

/// The sys_id every instance gives its `admin` user.
pub const ADMIN_SYS_ID: &str = "6816f79cc0a8016401c5a33be04be441";

/// How a provider treats refresh tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    /// Microsoft Entra ID: rotates on every use, old tokens stay valid; 90-day inactivity window.
    EntraLike,
    /// Okta/Auth0 strict rotation: reuse of a rotated token revokes the whole family.
    RotatingReuseDetection,
    /// Google-like: never rotates; the same token keeps working.
    NonRotating,
}

impl ProviderKind {
    /// The scopes a credential of this kind gets when its spec leaves them empty.
    pub fn default_scopes(self) -> &'static str {
        match self {
            ProviderKind::EntraLike => "https://graph.microsoft.com/.default offline_access",
            ProviderKind::RotatingReuseDetection => "openid profile offline_access okta.users.read",
            ProviderKind::NonRotating => "https://www.googleapis.com/auth/gmail.send",
        }
    }
}

/// How the token endpoint encodes `expires_in`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExpiresInFormat {
    /// A JSON number (RFC 6749).
    #[default]
    Number,
    /// A JSON string, as Entra v1 and ADFS send it.
    String,
    /// Absent, as Salesforce answers.
    Missing,
}

/// Which Microsoft Entra ID token endpoint a registry's token URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntraEndpoint {
    /// `/{tenant}/oauth2/token`: takes `resource` (the App ID URI), answers `expires_in` and
    /// `expires_on` as strings.
    V1,
    /// `/{tenant}/oauth2/v2.0/token`: takes `scope`, refuses `resource` (AADSTS901002).
    V2,
}

/// What to seed for one application registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySpec {
    /// `oauth_entity.name`.
    pub name: String,
    /// Provider behaviour.
    pub provider: ProviderKind,
    /// Provider id (URL slug, `Target::Provider` string); derived from `name` when `None`.
    /// Registries naming the same id share one provider (several apps of one tenant).
    pub provider_id: Option<String>,
    /// Client id; generated when empty.
    pub client_id: String,
    /// The secret the provider accepts; generated when empty.
    pub client_secret: String,
    /// What `oauth_entity.client_secret` holds if it differs from `client_secret`.
    pub stored_client_secret: Option<String>,
    /// Lifetime of issued access tokens.
    pub access_token_lifetime_secs: u64,
    /// How `expires_in` is sent.
    pub expires_in_format: ExpiresInFormat,
    /// `oauth_entity.default_grant_type`.
    pub default_grant_type: String,
    /// `oauth_entity.token_url` when it points elsewhere than the simulator (a real
    /// authorization server on loopback); the simulated provider then never sees a request.
    pub token_url: Option<String>,
    /// Serve the token endpoint at Entra's paths, with the provider id as the tenant segment
    /// (`/{id}/oauth2/token` or `/{id}/oauth2/v2.0/token`), instead of `/oauth2/{id}/token`.
    pub entra_endpoint: Option<EntraEndpoint>,
    /// A certificate (PEM) registered for the application: the provider then also accepts
    /// `private_key_jwt` client assertions signed with its key, as Entra does for certificate
    /// credentials.
    pub certificate_pem: Option<String>,
}

impl RegistrySpec {
    /// A registry with generated client credentials and the usual defaults.
    pub fn new(name: &str, provider: ProviderKind) -> RegistrySpec {
        RegistrySpec {
            name: name.to_owned(),
            provider,
            provider_id: None,
            client_id: String::new(),
            client_secret: String::new(),
            stored_client_secret: None,
            access_token_lifetime_secs: 3600,
            expires_in_format: ExpiresInFormat::Number,
            default_grant_type: "authorization_code".to_owned(),
            token_url: None,
            entra_endpoint: None,
            certificate_pem: None,
        }
    }

    /// Registers a certificate (PEM) for the application: client assertions signed with its key
    /// are accepted.
    #[must_use]
    pub fn certificate(mut self, pem: &str) -> RegistrySpec {
        self.certificate_pem = Some(pem.to_owned());
        self
    }

    /// Points `oauth_entity.token_url` at another server.
    #[must_use]
    pub fn token_url(mut self, url: &str) -> RegistrySpec {
        self.token_url = Some(url.to_owned());
        self
    }

    /// Sets the client id the provider knows the application by.
    #[must_use]
    pub fn client_id(mut self, client_id: &str) -> RegistrySpec {
        client_id.clone_into(&mut self.client_id);
        self
    }

    /// Sets the client secret the provider accepts (and `oauth_entity` stores).
    #[must_use]
    pub fn client_secret(mut self, secret: &str) -> RegistrySpec {
        secret.clone_into(&mut self.client_secret);
        self
    }

    /// Serves the token endpoint at an Entra v1 or v2 path (the provider id is the tenant).
    #[must_use]
    pub fn entra_endpoint(mut self, endpoint: EntraEndpoint) -> RegistrySpec {
        self.entra_endpoint = Some(endpoint);
        self
    }

    /// Sets the provider id.
    #[must_use]
    pub fn provider_id(mut self, id: &str) -> RegistrySpec {
        self.provider_id = Some(id.to_owned());
        self
    }

    /// Stores a secret in `oauth_entity` that the provider does not accept.
    #[must_use]
    pub fn wrong_stored_secret(mut self, stored: &str) -> RegistrySpec {
        self.stored_client_secret = Some(stored.to_owned());
        self
    }

    /// Sets the `expires_in` encoding.
    #[must_use]
    pub fn expires_in_format(mut self, format: ExpiresInFormat) -> RegistrySpec {
        self.expires_in_format = format;
        self
    }
}

/// The access-token row of a seeded credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessSpec {
    /// No access-token row.
    Missing,
    /// An access-token row expiring this far from now (negative = already expired).
    ExpiresIn(SignedDuration),
}

/// What to seed for one refresh-token credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialSpec {
    /// `oauth_entity` sys_id (from [`Estate::add_registry`]).
    pub registry: String,
    /// `oauth_credential.name`.
    pub name: String,
    /// `oauth_credential.scopes`; the provider kind's default when empty.
    pub scopes: String,
    /// The access-token row.
    pub access: AccessSpec,
    /// How long ago the refresh row was last written — also when the provider last saw the
    /// token used (drives the inactivity window).
    pub refresh_last_updated_ago: SignedDuration,
    /// `expires` of the refresh row, relative to now.
    pub refresh_expires_in: SignedDuration,
    /// Whether the user has revoked the grant at the provider.
    pub revoked_at_provider: bool,
    /// `oauth_requestor_profile.requestor_context`.
    pub requestor_context: String,
    /// Display label of the state (`SeededCredential::label`); derived when `None`.
    pub label: Option<String>,
    /// The refresh token to seed, e.g. one a real authorization server minted; generated when
    /// `None`.
    pub refresh_token: Option<String>,
}

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

impl CredentialSpec {
    /// A fresh credential: access row valid for ~55 minutes, refresh row written 5 minutes ago.
    pub fn new(registry: impl Into<String>, name: impl Into<String>) -> CredentialSpec {
        CredentialSpec {
            registry: registry.into(),
            name: name.into(),
            scopes: String::new(),
            access: AccessSpec::ExpiresIn(secs(55 * 60)),
            refresh_last_updated_ago: secs(5 * 60),
            refresh_expires_in: secs(90 * DAY),
            revoked_at_provider: false,
            requestor_context: "oauth_2_0_credentials".to_owned(),
            label: None,
            refresh_token: None,
        }
    }

    /// Seeds this refresh token instead of a generated one.
    #[must_use]
    pub fn refresh_token(mut self, token: &str) -> CredentialSpec {
        self.refresh_token = Some(token.to_owned());
        self
    }

    /// Sets the scopes.
    #[must_use]
    pub fn scopes(mut self, scopes: &str) -> CredentialSpec {
        self.scopes = scopes.to_owned();
        self
    }

    /// No access-token row.
    #[must_use]
    pub fn access_missing(mut self) -> CredentialSpec {
        self.access = AccessSpec::Missing;
        self
    }

    /// Access row expiring in `d` (negative = expired).
    #[must_use]
    pub fn access_expires_in(mut self, d: SignedDuration) -> CredentialSpec {
        self.access = AccessSpec::ExpiresIn(d);
        self
    }

    /// Refresh row (and provider last use) `d` ago.
    #[must_use]
    pub fn refresh_last_updated_ago(mut self, d: SignedDuration) -> CredentialSpec {
        self.refresh_last_updated_ago = d;
        self
    }

    /// Refresh row `expires` in `d`.
    #[must_use]
    pub fn refresh_expires_in(mut self, d: SignedDuration) -> CredentialSpec {
        self.refresh_expires_in = d;
        self
    }

    /// Revoked at the provider.
    #[must_use]
    pub fn revoked(mut self) -> CredentialSpec {
        self.revoked_at_provider = true;
        self
    }

    /// Sets the display label.
    #[must_use]
    pub fn label(mut self, label: &str) -> CredentialSpec {
        self.label = Some(label.to_owned());
        self
    }
}

/// A registry as seeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeededRegistry {
    /// `oauth_entity` sys_id.
    pub sys_id: String,
    /// Its default `oauth_entity_profile` sys_id.
    pub entity_profile: String,
    /// `oauth_entity.name`.
    pub name: String,
    /// Provider id (token URL slug).
    pub provider_id: String,
    /// Provider behaviour.
    pub kind: ProviderKind,
    /// Client id.
    pub client_id: String,
    /// The secret the provider accepts.
    pub client_secret: String,
    /// What `oauth_entity.client_secret` holds when it is wrong.
    pub stored_client_secret: Option<String>,
    /// Access-token lifetime.
    pub access_token_lifetime_secs: u64,
    /// `expires_in` encoding.
    pub expires_in_format: ExpiresInFormat,
    /// `oauth_entity.default_grant_type`.
    pub default_grant_type: String,
    /// `oauth_entity.token_url` when it points elsewhere than the simulator.
    pub token_url: Option<String>,
    /// The Entra path the simulator serves the token endpoint at, if any.
    pub entra_endpoint: Option<EntraEndpoint>,
    /// The application's certificate (PEM), if it has one.
    pub certificate_pem: Option<String>,
}

impl SeededRegistry {
    /// `oauth_entity.token_url` for a simulator serving at `base_url`.
    pub fn token_url_at(&self, base_url: &str) -> String {
        if let Some(url) = &self.token_url {
            return url.clone();
        }
        match self.entra_endpoint {
            None => format!("{base_url}/oauth2/{}/token", self.provider_id),
            Some(EntraEndpoint::V1) => format!("{base_url}/{}/oauth2/token", self.provider_id),
            Some(EntraEndpoint::V2) => {
                format!("{base_url}/{}/oauth2/v2.0/token", self.provider_id)
            }
        }
    }
}

/// A credential as seeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeededCredential {
    /// sys_id of the `refresh_token` row.
    pub refresh_sys_id: String,
    /// sys_id of the `access_token` row, if one was seeded.
    pub access_sys_id: Option<String>,
    /// `oauth_entity` sys_id (`peer`).
    pub registry: String,
    /// `oauth_requestor_profile` sys_id.
    pub requestor_profile: String,
    /// `oauth_requestor_profile.requestor_id` (the owner record).
    pub requestor_id: String,
    /// Provider id.
    pub provider: String,
    /// `oauth_credential.name`.
    pub name: String,
    /// `oauth_credential.scopes`.
    pub scopes: String,
    /// The plaintext refresh token seeded.
    pub refresh_token: String,
    /// The plaintext access token seeded, if any.
    pub access_token: Option<String>,
    /// State label for display ("fresh", "stale", "access row missing", ...).
    pub label: String,
}

#[derive(Clone, Debug)]
struct CredentialPlan {
    access: AccessSpec,
    refresh_last_updated_ago: SignedDuration,
    refresh_expires_in: SignedDuration,
    revoked: bool,
    requestor_context: String,
}

/// A value of a row seeded as-is (not a credential).
#[derive(Clone, Debug)]
enum Planned {
    Raw(String),
    Encrypted(String),
    /// A date-time relative to the start instant.
    At(SignedDuration),
}

#[derive(Clone, Debug)]
struct PlannedRow {
    table: &'static str,
    fields: Vec<(&'static str, Planned)>,
}

#[derive(Clone, Debug)]
struct UserPlan {
    sys_id: String,
    user_name: String,
    password: String,
    roles: Vec<String>,
    time_zone: String,
    date_format: String,
    web_service_access_only: bool,
}

/// The seed of a simulated instance.
#[derive(Clone, Debug)]
pub struct Estate {
    rng: fastrand::Rng,
    cipher_key: u64,
    user: UserPlan,
    system_tz: String,
    max_page_rows: Option<usize>,
    registries: Vec<SeededRegistry>,
    credentials: Vec<SeededCredential>,
    plans: Vec<CredentialPlan>,
    extra_rows: Vec<PlannedRow>,
    instance: InstanceSide,
    companion_path: String,
}

/// The roles the integration user has unless told otherwise.
pub const DEFAULT_USER_ROLES: &[&str] = &[
    "oauth_admin",
    crate::companion::COMPANION_ROLE,
    "evt_mgmt_integration",
];

impl Estate {
    /// Only the users (`admin` and the integration user), no registries or credentials.
    pub fn empty(seed: u64) -> Estate {
        let mut rng = fastrand::Rng::with_seed(seed);
        let cipher_key = rng.u64(..);
        let sys_id = new_sys_id(&mut rng);
        let password: String = std::iter::repeat_with(|| rng.alphanumeric())
            .take(24)
            .collect();
        Estate {
            rng,
            cipher_key,
            user: UserPlan {
                sys_id,
                user_name: "svc_oauth_keeper".to_owned(),
                password,
                roles: DEFAULT_USER_ROLES.iter().map(|r| (*r).to_owned()).collect(),
                time_zone: String::new(),
                date_format: String::new(),
                web_service_access_only: true,
            },
            system_tz: "UTC".to_owned(),
            max_page_rows: None,
            registries: Vec::new(),
            credentials: Vec::new(),
            plans: Vec::new(),
            extra_rows: Vec::new(),
            instance: InstanceSide::default(),
            companion_path: crate::COMPANION_PATH.to_owned(),
        }
    }

    /// The instance without the companion: the update set was never committed (or was backed
    /// out), so its path answers like any unknown `/api/` path.
    #[must_use]
    pub fn without_companion(mut self) -> Estate {
        self.instance.companion_installed = false;
        self
    }

    /// Serves the companion at another base path, as when the instance gave the Scripted REST
    /// API its own company-code namespace.
    #[must_use]
    pub fn with_companion_path(mut self, path: &str) -> Estate {
        path.clone_into(&mut self.companion_path);
        self
    }

    /// The companion's base path this estate serves it at.
    pub fn companion_path(&self) -> &str {
        &self.companion_path
    }

    /// Removes one of the update set's record ACLs (`name` as `oauth_entity.token_url`,
    /// `operation` as `read`), as if it were deleted or inactive.
    #[must_use]
    pub fn without_acl(mut self, name: &str, operation: &str) -> Estate {
        self.instance
            .acls
            .remove(&(name.to_owned(), operation.to_owned()));
        self
    }

    /// Clears a table's "Allow access to this table via web services" box.
    #[must_use]
    pub fn with_table_closed_to_web_services(mut self, table: &str) -> Estate {
        self.instance
            .closed_to_web_services
            .insert(table.to_owned());
        self
    }

    /// Registers an OAuth API endpoint for external clients on the instance, for
    /// `auth = "oauth"`.
    #[must_use]
    pub fn with_instance_oauth_client(mut self, client_id: &str, client_secret: &str) -> Estate {
        self.instance
            .oauth
            .clients
            .push((client_id.to_owned(), client_secret.to_owned()));
        self
    }

    /// Sets `glide.oauth.inbound.ropc.grant_type.disabled=true`: the password grant is refused.
    #[must_use]
    pub fn with_password_grant_disabled(mut self) -> Estate {
        self.instance.oauth.ropc_disabled = true;
        self
    }

    /// Sets the lifespan of the access tokens the instance issues (default 1800 s).
    #[must_use]
    pub fn with_instance_token_lifespan(mut self, secs: i64) -> Estate {
        self.instance.oauth.access_lifespan_secs = secs;
        self
    }

    /// Sets the integration user's `sys_user.time_zone` (IANA name; empty = system default).
    #[must_use]
    pub fn with_user_time_zone(mut self, tz: &str) -> Estate {
        tz.clone_into(&mut self.user.time_zone);
        self
    }

    /// Sets the integration user's `sys_user.date_format` (`dd-MM-yyyy`, `MM/dd/yyyy`, ...;
    /// empty = system default `yyyy-MM-dd`).
    #[must_use]
    pub fn with_user_date_format(mut self, format: &str) -> Estate {
        format.clone_into(&mut self.user.date_format);
        self
    }

    /// Sets the system time zone users without one get (default `UTC`).
    #[must_use]
    pub fn with_system_time_zone(mut self, tz: &str) -> Estate {
        tz.clone_into(&mut self.system_tz);
        self
    }

    /// Replaces the integration user's roles.
    #[must_use]
    pub fn with_user_roles(mut self, roles: &[&str]) -> Estate {
        self.user.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        self
    }

    /// Sets the integration user's password.
    #[must_use]
    pub fn with_user_password(mut self, password: &str) -> Estate {
        password.clone_into(&mut self.user.password);
        self
    }

    /// Sets `sys_user.web_service_access_only`; without it (and without role
    /// `snc_basic_auth_api_access`) the basic-auth restriction rejects the user.
    #[must_use]
    pub fn with_web_service_access_only(mut self, wsao: bool) -> Estate {
        self.user.web_service_access_only = wsao;
        self
    }

    /// Caps rows per page below `sysparm_limit`, as ACL filtering after the limit does; the
    /// `Link` and `X-Total-Count` headers still describe `sysparm_limit` paging.
    #[must_use]
    pub fn with_max_page_rows(mut self, n: usize) -> Estate {
        self.max_page_rows = Some(n);
        self
    }

    /// Seeded registries.
    pub fn registries(&self) -> &[SeededRegistry] {
        &self.registries
    }

    /// Seeded credentials.
    pub fn credentials(&self) -> &[SeededCredential] {
        &self.credentials
    }

    /// The integration user's sys_id.
    pub fn user_sys_id(&self) -> &str {
        &self.user.sys_id
    }

    fn sys_id(&mut self) -> String {
        new_sys_id(&mut self.rng)
    }

    fn guid(&mut self) -> String {
        new_guid(&mut self.rng)
    }

    fn token(&mut self, prefix: &str) -> String {
        let hex: String = (0..48)
            .map(|_| char::from_digit(self.rng.u32(..16), 16).unwrap_or('0'))
            .collect();
        format!("{prefix}-{hex}")
    }

    fn slug(&self, name: &str) -> String {
        let mut slug = String::new();
        for ch in name.chars() {
            if ch.is_ascii_alphanumeric() {
                slug.push(ch.to_ascii_lowercase());
            } else if !slug.ends_with('-') && !slug.is_empty() {
                slug.push('-');
            }
        }
        let base: String = slug.trim_end_matches('-').chars().take(24).collect();
        let base = if base.is_empty() {
            "provider".to_owned()
        } else {
            base
        };
        let taken = |id: &str| self.registries.iter().any(|r| r.provider_id == id);
        if !taken(&base) {
            return base;
        }
        (2..)
            .map(|n| format!("{base}-{n}"))
            .find(|id| !taken(id))
            .unwrap_or(base)
    }

    /// Adds a registry; returns its `oauth_entity` sys_id.
    pub fn add_registry(&mut self, spec: RegistrySpec) -> String {
        let sys_id = self.sys_id();
        let entity_profile = self.sys_id();
        let client_id = if spec.client_id.is_empty() {
            self.guid()
        } else {
            spec.client_id
        };
        let client_secret = if spec.client_secret.is_empty() {
            let body: String = std::iter::repeat_with(|| self.rng.alphanumeric())
                .take(37)
                .collect();
            format!("Q8~{body}")
        } else {
            spec.client_secret
        };
        let provider_id = match spec.provider_id {
            Some(id) => id,
            None => self.slug(&spec.name),
        };
        self.registries.push(SeededRegistry {
            sys_id: sys_id.clone(),
            entity_profile,
            name: spec.name,
            provider_id,
            kind: spec.provider,
            client_id,
            client_secret,
            stored_client_secret: spec.stored_client_secret,
            access_token_lifetime_secs: spec.access_token_lifetime_secs,
            expires_in_format: spec.expires_in_format,
            default_grant_type: spec.default_grant_type,
            token_url: spec.token_url,
            entra_endpoint: spec.entra_endpoint,
            certificate_pem: spec.certificate_pem,
        });
        sys_id
    }

    /// Adds a credential. A spec naming an unknown registry still seeds rows (with a dangling
    /// `peer`), and its token is known to no provider.
    pub fn add_credential(&mut self, spec: CredentialSpec) -> SeededCredential {
        let registry = self
            .registries
            .iter()
            .find(|r| r.sys_id == spec.registry)
            .cloned();
        let refresh_sys_id = self.sys_id();
        let requestor_profile = self.sys_id();
        let requestor_id = self.sys_id();
        let refresh_token = match spec.refresh_token {
            Some(token) => token,
            None => self.token("rt"),
        };
        let (access_sys_id, access_token) = match spec.access {
            AccessSpec::Missing => (None, None),
            AccessSpec::ExpiresIn(_) => (Some(self.sys_id()), Some(self.token("at"))),
        };
        let scopes = if spec.scopes.is_empty() {
            registry
                .as_ref()
                .map(|r| r.kind.default_scopes().to_owned())
                .unwrap_or_default()
        } else {
            spec.scopes
        };
        let label = spec.label.unwrap_or_else(|| {
            derive_label(
                &spec.access,
                spec.revoked_at_provider,
                spec.refresh_last_updated_ago,
            )
        });
        let seeded = SeededCredential {
            refresh_sys_id,
            access_sys_id,
            registry: spec.registry,
            requestor_profile,
            requestor_id,
            provider: registry.map(|r| r.provider_id).unwrap_or_default(),
            name: spec.name,
            scopes,
            refresh_token,
            access_token,
            label,
        };
        self.credentials.push(seeded.clone());
        self.plans.push(CredentialPlan {
            access: spec.access,
            refresh_last_updated_ago: spec.refresh_last_updated_ago,
            refresh_expires_in: spec.refresh_expires_in,
            revoked: spec.revoked_at_provider,
            requestor_context: spec.requestor_context,
        });
        seeded
    }

    /// The demo estate: 24 live refresh-token credentials over six provider registries
    /// (Entra-like v2 and v1-style with string `expires_in`, Okta-like strict rotation,
    /// Google-like and Salesforce-like (no `expires_in`) non-rotating, and an Entra app whose
    /// stored secret is wrong) in every state, plus rows discovery must skip: a refresh row
    /// the instance considers expired, a refresh row on a client-credentials registry, and an
    /// access token the instance issued for itself (no requestor profile).
    pub fn demo(seed: u64) -> Estate {
        let mut estate = Estate::empty(seed);
        let entra = estate.add_registry(
            RegistrySpec::new("Microsoft Entra ID (Graph mail)", ProviderKind::EntraLike)
                .provider_id("entra"),
        );
        let okta = estate.add_registry(
            RegistrySpec::new("Okta Workforce", ProviderKind::RotatingReuseDetection)
                .provider_id("okta"),
        );
        let google = estate.add_registry(
            RegistrySpec::new("Google Workspace", ProviderKind::NonRotating).provider_id("google"),
        );
        let entra_v1 = estate.add_registry(
            RegistrySpec::new(
                "Microsoft Entra ID v1 (SharePoint)",
                ProviderKind::EntraLike,
            )
            .provider_id("entra-v1")
            .expires_in_format(ExpiresInFormat::String),
        );
        let salesforce = estate.add_registry(
            RegistrySpec::new("Salesforce Connected App", ProviderKind::NonRotating)
                .provider_id("salesforce")
                .expires_in_format(ExpiresInFormat::Missing),
        );
        let legacy = estate.add_registry(
            RegistrySpec::new("Entra Legacy Mail App", ProviderKind::EntraLike)
                .provider_id("entra-legacy")
                .wrong_stored_secret("Q8~expired-secret-rotated-in-azure-last-year"),
        );
        let mut cc = RegistrySpec::new(
            "Azure Monitor (client credentials)",
            ProviderKind::EntraLike,
        )
        .provider_id("azure-monitor");
        cc.default_grant_type = "client_credentials".to_owned();
        let client_credentials = estate.add_registry(cc);

        let fresh = |reg: &str, name: &str| CredentialSpec::new(reg, name).label("fresh");
        let stale = |reg: &str, name: &str| {
            CredentialSpec::new(reg, name)
                .access_expires_in(secs(3 * 60))
                .refresh_last_updated_ago(secs(57 * 60))
                .label("stale")
        };
        let missing = |reg: &str, name: &str| {
            CredentialSpec::new(reg, name)
                .access_missing()
                .refresh_last_updated_ago(secs(2 * DAY))
                .label("access row missing")
        };
        let expired = |reg: &str, name: &str| {
            CredentialSpec::new(reg, name)
                .access_expires_in(secs(-2 * HOUR))
                .refresh_last_updated_ago(secs(3 * HOUR))
                .label("access expired")
        };
        let idle = |reg: &str, name: &str| {
            CredentialSpec::new(reg, name)
                .access_expires_in(secs(-(85 * DAY - HOUR)))
                .refresh_last_updated_ago(secs(85 * DAY))
                .refresh_expires_in(secs(5 * DAY))
                .label("idle (85 days)")
        };
        let revoked = |reg: &str, name: &str| {
            CredentialSpec::new(reg, name)
                .access_expires_in(secs(-30 * 60))
                .refresh_last_updated_ago(secs(DAY))
                .revoked()
                .label("revoked at provider")
        };

        let specs = vec![
            fresh(&entra, "Mailbox helpdesk@contoso.com"),
            fresh(&entra, "Mailbox hr@contoso.com"),
            stale(&entra, "Mailbox it-alerts@contoso.com"),
            missing(&entra, "SharePoint sync (Graph spoke)"),
            expired(&entra, "Teams notifications"),
            idle(&entra, "Mailbox archive@contoso.com"),
            revoked(&entra, "Mailbox former.employee@contoso.com"),
            fresh(&okta, "Okta user sync"),
            stale(&okta, "Okta group import"),
            missing(&okta, "Okta SCIM bridge"),
            expired(&okta, "Okta MFA audit"),
            revoked(&okta, "Okta legacy connector"),
            fresh(&google, "Gmail relay noreply@example.org"),
            stale(&google, "Gmail relay alerts@example.org"),
            missing(&google, "Google Drive attachments"),
            expired(&google, "Google Calendar sync"),
            idle(&google, "Gmail relay quarterly@example.org"),
            revoked(&google, "Gmail relay intern@example.org"),
            stale(&entra_v1, "SharePoint document library")
                .scopes("https://contoso.sharepoint.com/.default offline_access"),
            expired(&entra_v1, "SharePoint intranet news")
                .scopes("https://contoso.sharepoint.com/.default offline_access"),
            stale(&salesforce, "Salesforce case bridge").scopes("api refresh_token"),
            missing(&salesforce, "Salesforce account sync").scopes("api refresh_token"),
            stale(&legacy, "Mailbox legacy-support@contoso.com").label("wrong client secret"),
            missing(&legacy, "Mailbox legacy-billing@contoso.com").label("wrong client secret"),
            CredentialSpec::new(&entra, "Mailbox closed@contoso.com")
                .access_missing()
                .refresh_last_updated_ago(secs(120 * DAY))
                .refresh_expires_in(secs(-30 * DAY))
                .label("refresh row expired"),
        ];
        for spec in specs {
            estate.add_credential(spec);
        }
        // A refresh row left behind on a client-credentials registry: discovery should skip
        // registries whose grant type never uses refresh tokens.
        estate.add_credential(
            CredentialSpec::new(&client_credentials, "Azure Monitor leftover")
                .scopes("https://monitor.azure.com/.default")
                .access_expires_in(secs(20 * 60))
                .label("client_credentials registry"),
        );
        estate.add_instance_issued_token();
        estate
    }

    /// An OAuth client registry where the instance is the server, plus an access token the
    /// instance issued for itself (no requestor profile, no `token_received`).
    fn add_instance_issued_token(&mut self) {
        let entity = self.sys_id();
        let row = self.sys_id();
        self.extra_rows.push(PlannedRow {
            table: "oauth_entity",
            fields: vec![
                ("sys_id", Planned::Raw(entity.clone())),
                ("name", Planned::Raw("ServiceNow Mobile App".to_owned())),
                ("client_id", Planned::Raw(new_sys_id(&mut self.rng))),
                (
                    "client_secret",
                    Planned::Encrypted("mobile-app-secret".to_owned()),
                ),
                ("type", Planned::Raw("client".to_owned())),
                ("default_grant_type", Planned::Raw("password".to_owned())),
                ("active", Planned::Raw("true".to_owned())),
            ],
        });
        self.extra_rows.push(PlannedRow {
            table: "oauth_credential",
            fields: vec![
                ("sys_id", Planned::Raw(row)),
                ("type", Planned::Raw("access_token".to_owned())),
                ("peer", Planned::Raw(entity)),
                ("user", Planned::Raw(ADMIN_SYS_ID.to_owned())),
                ("scopes", Planned::Raw("useraccount".to_owned())),
                ("expires", Planned::At(secs(20 * 60))),
                ("sys_created_on", Planned::At(secs(-10 * 60))),
                ("sys_updated_on", Planned::At(secs(-10 * 60))),
            ],
        });
    }

    /// Turns the plan into a running instance's state.
    pub(crate) fn materialize(self, now: Timestamp, base_url: &str) -> State {
        let Estate {
            rng,
            cipher_key,
            user,
            system_tz,
            max_page_rows,
            registries,
            credentials,
            plans,
            extra_rows,
            instance,
            companion_path: _,
        } = self;
        let mut seeder = Seeder {
            db: Db::new(),
            rng,
            cipher: Cipher::new(cipher_key),
            now,
        };
        seeder.seed_users(&user);
        let mut providers: BTreeMap<String, Provider> = BTreeMap::new();
        for reg in &registries {
            seeder.seed_registry(reg, base_url);
            let provider = providers
                .entry(reg.provider_id.clone())
                .or_insert_with(|| Provider::new(&reg.provider_id, reg.kind));
            provider.add_client(
                &reg.client_id,
                ClientReg {
                    secret: reg.client_secret.clone(),
                    access_lifetime_secs: reg.access_token_lifetime_secs,
                    expires_in_format: reg.expires_in_format,
                    certificate_der: reg.certificate_pem.as_deref().and_then(|pem| {
                        use rustls_pki_types::pem::PemObject;
                        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                            .ok()
                            .map(|der| der.as_ref().to_vec())
                    }),
                },
            );
        }
        for (cred, plan) in credentials.iter().zip(&plans) {
            let registry = registries.iter().find(|r| r.sys_id == cred.registry);
            seeder.seed_credential(cred, plan, registry);
            if let Some(reg) = registry
                && let Some(provider) = providers.get_mut(&reg.provider_id)
            {
                let last_used = now
                    .checked_sub(plan.refresh_last_updated_ago)
                    .unwrap_or(now)
                    .as_second();
                provider.seed_token(
                    &cred.refresh_token,
                    &reg.client_id,
                    &cred.scopes,
                    last_used,
                    plan.revoked,
                );
            }
        }
        for row in extra_rows {
            seeder.seed_planned(row);
        }
        let Seeder {
            db, rng, cipher, ..
        } = seeder;
        State {
            db,
            rng,
            cipher,
            providers,
            faults: Vec::new(),
            log: Vec::new(),
            next_seq: 0,
            user: UserAccount {
                sys_id: user.sys_id,
                password: user.password,
                roles: user.roles,
            },
            system_tz,
            max_page_rows,
            clock_offset: SignedDuration::ZERO,
            instance,
        }
    }

    pub(crate) fn user_credentials(&self) -> (String, String) {
        (self.user.user_name.clone(), self.user.password.clone())
    }
}

fn derive_label(access: &AccessSpec, revoked: bool, ago: SignedDuration) -> String {
    if revoked {
        return "revoked at provider".to_owned();
    }
    if ago >= secs(60 * DAY) {
        return "idle".to_owned();
    }
    match access {
        AccessSpec::Missing => "access row missing".to_owned(),
        AccessSpec::ExpiresIn(d) if d.is_negative() => "access expired".to_owned(),
        AccessSpec::ExpiresIn(d) if *d <= secs(5 * 60) => "stale".to_owned(),
        AccessSpec::ExpiresIn(_) => "fresh".to_owned(),
    }
}

struct Seeder {
    db: Db,
    rng: fastrand::Rng,
    cipher: Cipher,
    now: Timestamp,
}

impl Seeder {
    fn at(&self, offset: SignedDuration) -> String {
        datetime::format_utc(self.now.checked_add(offset).unwrap_or(self.now))
    }

    fn encrypt(&mut self, plain: &str) -> String {
        let nonce = self.rng.u32(..);
        self.cipher.encrypt(plain, nonce)
    }

    /// Inserts a row with system columns stamped `created_ago`/`updated_ago` before now.
    fn insert(
        &mut self,
        table: &str,
        fields: Vec<(&str, String)>,
        created_ago: SignedDuration,
        updated_ago: SignedDuration,
        mod_count: u32,
    ) {
        let mut row: Row = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        row.insert("sys_created_on".to_owned(), self.at(-created_ago));
        row.insert("sys_updated_on".to_owned(), self.at(-updated_ago));
        row.insert("sys_created_by".to_owned(), "system".to_owned());
        row.insert("sys_updated_by".to_owned(), "system".to_owned());
        row.insert("sys_mod_count".to_owned(), mod_count.to_string());
        self.db.insert(table, row);
    }

    fn seed_users(&mut self, user: &UserPlan) {
        let long_ago = secs(400 * DAY);
        self.insert(
            "sys_user",
            vec![
                ("sys_id", ADMIN_SYS_ID.to_owned()),
                ("user_name", "admin".to_owned()),
                ("name", "System Administrator".to_owned()),
                ("email", "admin@example.com".to_owned()),
                ("active", "true".to_owned()),
                ("web_service_access_only", "false".to_owned()),
            ],
            long_ago,
            long_ago,
            12,
        );
        self.insert(
            "sys_user",
            vec![
                ("sys_id", user.sys_id.clone()),
                ("user_name", user.user_name.clone()),
                ("name", "OAuth Keeper Service".to_owned()),
                ("email", "svc_oauth_keeper@example.com".to_owned()),
                ("time_zone", user.time_zone.clone()),
                ("date_format", user.date_format.clone()),
                ("active", "true".to_owned()),
                (
                    "web_service_access_only",
                    user.web_service_access_only.to_string(),
                ),
            ],
            secs(30 * DAY),
            secs(30 * DAY),
            1,
        );
    }

    fn seed_registry(&mut self, reg: &SeededRegistry, base_url: &str) {
        let stored = reg
            .stored_client_secret
            .clone()
            .unwrap_or_else(|| reg.client_secret.clone());
        let secret = self.encrypt(&stored);
        let age = secs(200 * DAY);
        self.insert(
            "oauth_entity",
            vec![
                ("sys_id", reg.sys_id.clone()),
                ("name", reg.name.clone()),
                ("client_id", reg.client_id.clone()),
                ("client_secret", secret),
                ("token_url", reg.token_url_at(base_url)),
                ("default_grant_type", reg.default_grant_type.clone()),
                ("type", "oauth_provider".to_owned()),
                ("active", "true".to_owned()),
            ],
            age,
            secs(20 * DAY),
            3,
        );
        self.insert(
            "oauth_entity_profile",
            vec![
                ("sys_id", reg.entity_profile.clone()),
                ("name", format!("{} default_profile", reg.name)),
                ("oauth_entity", reg.sys_id.clone()),
                ("grant_type", reg.default_grant_type.clone()),
                ("default", "true".to_owned()),
            ],
            age,
            age,
            0,
        );
    }

    fn seed_credential(
        &mut self,
        cred: &SeededCredential,
        plan: &CredentialPlan,
        registry: Option<&SeededRegistry>,
    ) {
        let updated_ago = plan.refresh_last_updated_ago;
        let created_ago = updated_ago + secs(30 * DAY);
        self.insert(
            "oauth_requestor_profile",
            vec![
                ("sys_id", cred.requestor_profile.clone()),
                ("requestor_id", cred.requestor_id.clone()),
                ("requestor_context", plan.requestor_context.clone()),
                (
                    "oauth_entity_profile",
                    registry
                        .map(|r| r.entity_profile.clone())
                        .unwrap_or_default(),
                ),
            ],
            created_ago,
            created_ago,
            0,
        );
        let token = self.encrypt(&cred.refresh_token);
        let common = |this: &Self| {
            vec![
                ("peer", cred.registry.clone()),
                ("oauth_requestor_profile", cred.requestor_profile.clone()),
                ("user", ADMIN_SYS_ID.to_owned()),
                ("scopes", cred.scopes.clone()),
                ("name", cred.name.clone()),
                ("expires", this.at(plan.refresh_expires_in)),
            ]
        };
        let mut fields = common(self);
        fields.extend([
            ("sys_id", cred.refresh_sys_id.clone()),
            ("type", "refresh_token".to_owned()),
            ("token_received", token),
        ]);
        self.insert("oauth_credential", fields, created_ago, updated_ago, 4);
        if let (Some(id), Some(access), AccessSpec::ExpiresIn(expires_in)) =
            (&cred.access_sys_id, &cred.access_token, &plan.access)
        {
            let lifetime = registry.map_or(3600, |r| r.access_token_lifetime_secs);
            let lifetime = secs(i64::try_from(lifetime).unwrap_or(3600));
            // The access row was last written when its token was issued.
            let issued_ago = lifetime - *expires_in;
            let token = self.encrypt(access);
            let mut fields = common(self);
            fields.retain(|(k, _)| *k != "expires");
            fields.extend([
                ("sys_id", id.clone()),
                ("type", "access_token".to_owned()),
                ("token_received", token),
                ("expires", self.at(*expires_in)),
            ]);
            self.insert("oauth_credential", fields, created_ago, issued_ago, 4);
        }
    }

    fn seed_planned(&mut self, row: PlannedRow) {
        let mut fields = Vec::new();
        let mut created = SignedDuration::ZERO;
        let mut updated = SignedDuration::ZERO;
        for (column, value) in row.fields {
            match (column, value) {
                ("sys_created_on", Planned::At(d)) => created = -d,
                ("sys_updated_on", Planned::At(d)) => updated = -d,
                (column, Planned::Raw(v)) => fields.push((column, v)),
                (column, Planned::Encrypted(v)) => fields.push((column, self.encrypt(&v))),
                (column, Planned::At(d)) => fields.push((column, self.at(d))),
            }
        }
        self.insert(row.table, fields, created, updated, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_deterministic_and_complete() {
        let a = Estate::demo(7);
        let b = Estate::demo(7);
        assert_eq!(a.credentials(), b.credentials());
        assert_eq!(a.registries(), b.registries());
        assert_ne!(Estate::demo(8).credentials(), a.credentials());
        assert!(a.credentials().len() >= 20);
        for label in [
            "fresh",
            "stale",
            "access row missing",
            "access expired",
            "idle (85 days)",
            "revoked at provider",
            "wrong client secret",
        ] {
            assert!(
                a.credentials().iter().any(|c| c.label == label),
                "missing {label}"
            );
        }
        for cred in a.credentials() {
            assert_eq!(cred.refresh_sys_id.len(), 32);
            assert!(
                cred.refresh_sys_id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
    }

    #[test]
    fn labels_derive_from_state() {
        assert_eq!(
            derive_label(&AccessSpec::Missing, false, secs(60)),
            "access row missing"
        );
        assert_eq!(
            derive_label(&AccessSpec::ExpiresIn(secs(120)), false, secs(60)),
            "stale"
        );
        assert_eq!(
            derive_label(&AccessSpec::ExpiresIn(secs(-1)), false, secs(60)),
            "access expired"
        );
        assert_eq!(
            derive_label(&AccessSpec::ExpiresIn(secs(3000)), true, secs(60)),
            "revoked at provider"
        );
    }
}
