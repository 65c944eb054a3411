//! What the simulator is seeded with: registries (oauth_entity + provider app), credentials
//! (refresh row, optional access row, requestor profile) and the integration user. Everything is
//! drawn from one seeded RNG so a given seed always yields the same sys_ids and tokens; only
//! timestamps depend on when the simulator starts (they are relative to "now").
//!
//! [`Estate`] is the plan and its builder; `spec` holds what a test asks for and what it gets
//! back, `demo` the estate of the `demo` command, `seed` turns a plan into a running instance's
//! state.

mod demo;
mod seed;
mod spec;

use jiff::SignedDuration;

use crate::instance::{InstanceSide, OAuthClient};
use crate::state::{new_guid, new_sys_id};

pub use spec::{
    AccessSpec, CredentialSpec, EntraEndpoint, ExpiresInFormat, ProviderKind, RegistrySpec,
    SeededCredential, SeededRegistry,
};

/// The sys_id every instance gives its `admin` user.
pub const ADMIN_SYS_ID: &str = "6816f79cc0a8016401c5a33be04be441";

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// A whole number of seconds as a duration (the specs and the demo count in seconds).
fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

/// What seeding a credential needs beyond its [`SeededCredential`]: times and states relative
/// to the start instant.
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

/// A row seeded as-is, column by column.
#[derive(Clone, Debug)]
struct PlannedRow {
    table: &'static str,
    fields: Vec<(&'static str, Planned)>,
}

/// The integration user to seed.
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
        let user_name = "svc_oauth_keeper".to_owned();
        let mut instance = InstanceSide::default();
        instance.allowed_user.clone_from(&user_name);
        Estate {
            rng,
            cipher_key,
            user: UserPlan {
                sys_id,
                user_name,
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
            instance,
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

    /// The companion as its update set was before `GET /lease` and the lease's `pid`: `GET
    /// /lease` answers like any unknown resource, and `POST /lease` ignores a `pid` as it ignores
    /// every key it does not know (stores none, never names one in a `409`).
    #[must_use]
    pub fn with_companion_before_lease_status(mut self) -> Estate {
        self.instance.companion_lease_status = false;
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

    /// Sets system property `snok.oauth_keeper.allowed_user` (default: the integration user;
    /// empty refuses everyone).
    #[must_use]
    pub fn with_companion_allowed_user(mut self, user_name: &str) -> Estate {
        user_name.clone_into(&mut self.instance.allowed_user);
        self
    }

    /// Sets the role named in the companion role's *Assignable by* field (default
    /// `security_admin`; anything else, or `""`, and the companion refuses every call).
    #[must_use]
    pub fn with_companion_role_assignable_by(mut self, role: &str) -> Estate {
        role.clone_into(&mut self.instance.role_assignable_by);
        self
    }

    /// Adds the update set's scratch Application Registry of `check --round-trip`
    /// ([`ROUND_TRIP_REGISTRY_NAME`](crate::ROUND_TRIP_REGISTRY_NAME), under the sys_id the update
    /// set gives it): no client secret, a token URL that resolves nowhere. Left out unless asked
    /// for, so estates hold only the registries a test seeds.
    #[must_use]
    pub fn with_round_trip_registry(mut self) -> Estate {
        let fields = [
            ("sys_id", crate::ROUND_TRIP_REGISTRY_SYS_ID),
            ("name", crate::ROUND_TRIP_REGISTRY_NAME),
            ("client_id", "sn-oauth-keeper-round-trip"),
            ("client_secret", ""),
            ("token_url", crate::ROUND_TRIP_TOKEN_URL),
            ("type", "oauth_provider"),
            ("default_grant_type", "client_credentials"),
            ("active", "true"),
        ];
        self.extra_rows.push(PlannedRow {
            table: "oauth_entity",
            fields: fields
                .into_iter()
                .map(|(column, value)| (column, Planned::Raw(value.to_owned())))
                .collect(),
        });
        self
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
        self.instance.oauth.clients.push(OAuthClient {
            id: client_id.to_owned(),
            secret: client_secret.to_owned(),
            application_user: None,
        });
        self
    }

    /// Allows the client-credentials grant for `client_id` (registered with
    /// [`Estate::with_instance_oauth_client`]): creates
    /// `glide.oauth.inbound.client.credential.grant_type.enabled = true` and makes the
    /// integration user the client's OAuth Application User.
    #[must_use]
    pub fn with_client_credentials_grant(mut self, client_id: &str) -> Estate {
        self.instance.oauth.client_credentials_enabled = true;
        let user = self.user.user_name.clone();
        for client in self
            .instance
            .oauth
            .clients
            .iter_mut()
            .filter(|c| c.id == client_id)
        {
            client.application_user = Some(user.clone());
        }
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

    /// Gives the integration user this sys_id and `user_name` (a replayed transcript names its
    /// user by a placeholder).
    #[must_use]
    pub fn with_user_identity(mut self, sys_id: &str, user_name: &str) -> Estate {
        // The companion's allowed user follows the integration user it named.
        if self.instance.allowed_user == self.user.user_name {
            user_name.clone_into(&mut self.instance.allowed_user);
        }
        sys_id.clone_into(&mut self.user.sys_id);
        user_name.clone_into(&mut self.user.user_name);
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

    /// The integration user's `user_name` and password.
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

#[cfg(test)]
mod tests {
    use super::*;

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
