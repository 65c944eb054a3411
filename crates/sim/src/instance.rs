//! The instance-side setup the runbook in `migrations-docs/` creates, and its absence: the ACLs
//! the update set grants to the keeper's role, whether the companion is installed, the scratch
//! registry of `check --round-trip`, the tables' "Allow access to this table via web services"
//! box, and the instance's own OAuth server (`POST /oauth_token.do`) for `auth = "oauth"`.
//!
//! ACL semantics follow servicenow.md §3.10 and the platform's documented rules where known:
//! the out-of-box roles (`admin`, `oauth_admin`) see everything; the keeper's role sees a table
//! only through a table-level ACL of the operation, and a field only through a field-level ACL
//! (system columns come with the row). Fields a caller may not read are left out of answers;
//! fields it may not write are dropped from a write without an error (inferred, see
//! `migrations-docs/README.md`).

use std::collections::BTreeSet;

use serde_json::json;

use crate::companion::lease::LeaseBook;
use crate::companion::{ASSIGNABLE_BY, COMPANION_ROLE, CompanionEvent};
use crate::db::Row;
use crate::schema::{self, Kind, TableSchema};
use crate::server::{Incoming, SimResponse};
use crate::state::{State, new_sys_id};

/// The record ACLs the update set creates, as (name, operation); each grants
/// [`COMPANION_ROLE`]. `migrations-docs/README.md` lists the same set (a test compares them).
pub const COMPANION_RECORD_ACLS: &[(&str, &str)] = &[
    ("oauth_credential", "read"),
    ("oauth_credential.type", "read"),
    ("oauth_credential.peer", "read"),
    ("oauth_credential.oauth_requestor_profile", "read"),
    ("oauth_credential.user", "read"),
    ("oauth_credential.scopes", "read"),
    ("oauth_credential.expires", "read"),
    ("oauth_credential.name", "read"),
    ("oauth_entity", "read"),
    ("oauth_entity.name", "read"),
    ("oauth_entity.client_id", "read"),
    ("oauth_entity.token_url", "read"),
    ("oauth_entity.default_grant_type", "read"),
    ("oauth_credential", "write"),
    ("oauth_credential.token_received", "write"),
    ("oauth_credential.expires", "write"),
    ("oauth_credential", "create"),
    ("oauth_credential.type", "create"),
    ("oauth_credential.peer", "create"),
    ("oauth_credential.oauth_requestor_profile", "create"),
    ("oauth_credential.user", "create"),
    ("oauth_credential.scopes", "create"),
    ("oauth_credential.name", "create"),
    ("oauth_credential.token_received", "create"),
    ("oauth_credential.expires", "create"),
    // Scripted: only rows the integration user created (see `row_deletable`).
    ("oauth_credential", "delete"),
];

/// Name of the scratch Application Registry the update set creates for `check --round-trip`.
pub const ROUND_TRIP_REGISTRY_NAME: &str = "sn-oauth-keeper round-trip";

/// The scratch registry's sys_id: the one the update set gives it, the same on every instance.
pub const ROUND_TRIP_REGISTRY_SYS_ID: &str = "3c889a9f2782cafc66792318abbf4b78";

/// The scratch registry's token URL, in the reserved `.invalid` domain: it resolves nowhere.
pub const ROUND_TRIP_TOKEN_URL: &str = "https://round-trip.invalid/oauth_token";

/// The instance's default access-token lifespan for its OAuth clients (1800 s).
pub const DEFAULT_ACCESS_LIFESPAN_SECS: i64 = 1_800;

/// The instance's default refresh-token lifespan (100 days).
pub const DEFAULT_REFRESH_LIFESPAN_SECS: i64 = 100 * 86_400;

/// What the caller may do with a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// An out-of-box role: every field.
    Full,
    /// The keeper's role through the update set's ACLs: the fields those ACLs name.
    Granted,
    /// Nothing.
    Denied,
}

/// One token the instance's OAuth server issued.
#[derive(Clone, Debug)]
pub(crate) struct Issued {
    pub token: String,
    pub expires: i64,
}

/// An OAuth API endpoint for external clients (an `oauth_entity` of type client).
#[derive(Clone, Debug)]
pub(crate) struct OAuthClient {
    pub id: String,
    pub secret: String,
    /// The "OAuth Application User" field: whom a client-credentials token acts as.
    pub application_user: Option<String>,
}

/// The instance's OAuth server (the instance as the authorization server).
#[derive(Clone, Debug)]
pub(crate) struct OAuthServer {
    /// Registered OAuth API endpoints for external clients.
    pub clients: Vec<OAuthClient>,
    /// `glide.oauth.inbound.ropc.grant_type.disabled`.
    pub ropc_disabled: bool,
    /// `glide.oauth.inbound.client.credential.grant_type.enabled` (false unless created).
    pub client_credentials_enabled: bool,
    pub access_lifespan_secs: i64,
    pub refresh_lifespan_secs: i64,
    pub access: Vec<Issued>,
    pub refresh: Vec<Issued>,
    /// `grant_type` of every token request, in order.
    pub grants: Vec<String>,
}

impl Default for OAuthServer {
    fn default() -> Self {
        OAuthServer {
            clients: Vec::new(),
            ropc_disabled: false,
            client_credentials_enabled: false,
            access_lifespan_secs: DEFAULT_ACCESS_LIFESPAN_SECS,
            refresh_lifespan_secs: DEFAULT_REFRESH_LIFESPAN_SECS,
            access: Vec::new(),
            refresh: Vec::new(),
            grants: Vec::new(),
        }
    }
}

/// The instance-side setup.
#[derive(Clone, Debug)]
pub(crate) struct InstanceSide {
    /// The update set's record ACLs still present, as (name, operation).
    pub acls: BTreeSet<(String, String)>,
    /// Whether the companion Scripted REST API exists.
    pub companion_installed: bool,
    /// Whether the companion has `GET /lease` and stores a lease's pid (false: the update set
    /// from before them).
    pub companion_lease_status: bool,
    /// Tables whose "Allow access to this table via web services" box is cleared.
    pub closed_to_web_services: BTreeSet<String>,
    pub oauth: OAuthServer,
    /// The companion's audit lines (the system log, source [`crate::companion::AUDIT_SOURCE`]).
    pub audit: Vec<String>,
    /// Fields the integration user may not write, as (table, column), whatever its roles: a
    /// field-level write ACL that denies it (tests set these through
    /// [`crate::Simulator::deny_field_write`]).
    pub denied_field_writes: BTreeSet<(String, String)>,
    /// How this instance differs from what the keeper believes (`check --round-trip`'s
    /// counter-examples), in the order set.
    pub quirks: Vec<crate::InstanceQuirk>,
    /// The companion's lease table: one keeper per instance, and its claims.
    pub lease: LeaseBook,
    /// System property `snok.oauth_keeper.allowed_user`: the one user the companion answers.
    pub allowed_user: String,
    /// The name of the role in the companion role's *Assignable by* field (`""` for none).
    pub role_assignable_by: String,
    /// The events the companion queued, oldest first.
    pub events: Vec<CompanionEvent>,
}

impl Default for InstanceSide {
    fn default() -> Self {
        InstanceSide {
            acls: COMPANION_RECORD_ACLS
                .iter()
                .map(|(n, o)| ((*n).to_owned(), (*o).to_owned()))
                .collect(),
            companion_installed: true,
            companion_lease_status: true,
            closed_to_web_services: BTreeSet::new(),
            oauth: OAuthServer::default(),
            audit: Vec::new(),
            denied_field_writes: BTreeSet::new(),
            quirks: Vec::new(),
            lease: LeaseBook::default(),
            // The runbook's state once done; `Estate::empty` names its integration user here.
            allowed_user: String::new(),
            role_assignable_by: ASSIGNABLE_BY.to_owned(),
            events: Vec::new(),
        }
    }
}

impl InstanceSide {
    fn has_acl(&self, name: &str, operation: &str) -> bool {
        self.acls.iter().any(|(n, o)| n == name && o == operation)
    }

    /// Whether a field-level ACL denies writing `column` of `table` (on update and on insert).
    fn field_write_denied(&self, table: &str, column: &str, operation: &str) -> bool {
        matches!(operation, "write" | "create")
            && self
                .denied_field_writes
                .iter()
                .any(|(t, c)| t == table && c == column)
    }
}

/// The out-of-box roles that pass a table's ACLs for `operation`.
fn oob_roles(schema: &TableSchema, operation: &str) -> &'static [&'static str] {
    if operation == "read" {
        schema.read_roles
    } else {
        schema.write_roles
    }
}

/// What the integration user may do with `schema` for `operation` (`read`, `write`, `create`,
/// `delete`).
pub(crate) fn table_access(st: &State, schema: &TableSchema, operation: &str) -> Access {
    if st.has_any_role(oob_roles(schema, operation)) {
        Access::Full
    } else if st.has_role(COMPANION_ROLE) && st.instance.has_acl(schema.name, operation) {
        Access::Granted
    } else {
        Access::Denied
    }
}

/// Whether the integration user may `operation` the column `column` of `schema`.
pub(crate) fn column_allowed(
    st: &State,
    schema: &TableSchema,
    column: &str,
    operation: &str,
) -> bool {
    if st
        .instance
        .field_write_denied(schema.name, column, operation)
    {
        return false;
    }
    match table_access(st, schema, operation) {
        Access::Full => true,
        Access::Denied => false,
        Access::Granted => {
            schema::is_system_column(column)
                || st
                    .instance
                    .has_acl(&format!("{}.{column}", schema.name), operation)
        }
    }
}

/// Whether the integration user may delete `row` of `schema`: an out-of-box role any row; the
/// keeper's role, through the update set's scripted delete ACL, only a row it created itself.
pub(crate) fn row_deletable(st: &State, schema: &TableSchema, row: &Row) -> bool {
    match table_access(st, schema, "delete") {
        Access::Full => true,
        Access::Granted => row.get("sys_created_by") == Some(&st.user_name()),
        Access::Denied => false,
    }
}

/// Whether a possibly dot-walked field (`peer.token_url`) is readable: every column on the way,
/// and every table the walk enters.
pub(crate) fn path_readable(st: &State, schema: &'static TableSchema, path: &str) -> bool {
    let mut table = schema;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        if !column_allowed(st, table, segment, "read") {
            return false;
        }
        if segments.peek().is_some() {
            match table.column(segment) {
                Some(Kind::Reference(target)) => match schema::table(target) {
                    Some(next) => table = next,
                    None => return false,
                },
                _ => return false,
            }
        }
    }
    true
}

/// The access token of a bearer header, if the instance issued it and it has not expired.
pub(crate) fn bearer_valid(st: &State, token: &str) -> bool {
    let now = st.now().as_second();
    st.instance
        .oauth
        .access
        .iter()
        .any(|t| t.token == token && t.expires > now)
}

/// `POST /oauth_token.do`: the password, refresh-token and client-credentials grants for the
/// integration user, as servicenow.md §3.9 describes them (form-encoded only; every refusal is
/// the same 401). Client credentials, as from Washington DC: only with
/// `glide.oauth.inbound.client.credential.grant_type.enabled` and an OAuth Application User on
/// the client, as whom the token acts; access token only.
pub(crate) fn token_endpoint(st: &mut State, req: &Incoming) -> SimResponse {
    let field = |name: &str| req.form_field(name);
    let grant = field("grant_type");
    st.instance.oauth.grants.push(grant.clone());
    let form_encoded = req.header("content-type").is_some_and(|c| {
        c.to_ascii_lowercase()
            .contains("application/x-www-form-urlencoded")
    });
    let client = st
        .instance
        .oauth
        .clients
        .iter()
        .find(|c| c.id == field("client_id") && c.secret == field("client_secret"))
        .cloned();
    let Some(client) = client.filter(|_| req.method.eq_ignore_ascii_case("POST") && form_encoded)
    else {
        return denied();
    };
    let now = st.now().as_second();
    let user_ok = |st: &State| {
        st.user_row()
            .is_some_and(|r| r.get("active").map(String::as_str) == Some("true"))
    };
    let issue_refresh = match grant.as_str() {
        "password" => {
            let accepted = !st.instance.oauth.ropc_disabled
                && user_ok(st)
                && field("username") == *st.user_name()
                && field("password") == st.user.password;
            if !accepted {
                return denied();
            }
            true
        }
        "client_credentials" => {
            let accepted = st.instance.oauth.client_credentials_enabled
                && user_ok(st)
                && client.application_user.as_deref() == Some(st.user_name().as_str());
            if !accepted {
                return denied();
            }
            false
        }
        "refresh_token" => {
            let presented = field("refresh_token");
            let known = st
                .instance
                .oauth
                .refresh
                .iter()
                .any(|t| t.token == presented && t.expires > now);
            if !known || !user_ok(st) {
                return denied();
            }
            false
        }
        _ => return denied(),
    };
    let access = token(st);
    let lifespan = st.instance.oauth.access_lifespan_secs;
    st.instance.oauth.access.push(Issued {
        token: access.clone(),
        expires: now + lifespan,
    });
    let mut body = json!({
        "scope": "useraccount",
        "token_type": "Bearer",
        "expires_in": lifespan - 1,
        "access_token": access,
    });
    if issue_refresh {
        let refresh = token(st);
        let refresh_expires = now + st.instance.oauth.refresh_lifespan_secs;
        st.instance.oauth.refresh.push(Issued {
            token: refresh.clone(),
            expires: refresh_expires,
        });
        body["refresh_token"] = json!(refresh);
    }
    SimResponse {
        status: 200,
        headers: vec![(
            "Content-Type".to_owned(),
            "application/json;charset=UTF-8".to_owned(),
        )],
        body: body.to_string().into_bytes(),
    }
}

/// The one refusal the instance's token endpoint gives for a bad client, user, password, grant
/// or refresh token (servicenow.md §3.7).
fn denied() -> SimResponse {
    SimResponse {
        status: 401,
        headers: vec![(
            "Content-Type".to_owned(),
            "application/json;charset=UTF-8".to_owned(),
        )],
        body: br#"{"error_description":"access_denied","error":"server_error"}"#.to_vec(),
    }
}

/// 86 URL-safe characters, the shape of the instance's tokens.
fn token(st: &mut State) -> String {
    let mut out = String::new();
    while out.len() < 86 {
        out.push_str(&new_sys_id(&mut st.rng));
    }
    out.truncate(86);
    out
}
