//! What a test asks the estate for (`RegistrySpec`, `CredentialSpec` and the kinds they name)
//! and what it gets back once seeded (`SeededRegistry`, `SeededCredential`).

use jiff::SignedDuration;

use super::{DAY, secs};

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
    /// `oauth_entity` sys_id (from [`Estate::add_registry`](super::Estate::add_registry)).
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
