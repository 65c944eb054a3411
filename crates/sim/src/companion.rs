//! The companion Scripted REST API the keeper installs on the instance: the only way to read
//! password2 values in clear, since the Table API returns ciphertext. It answers exactly as the
//! scripts in `migrations-docs/companion/` do (the shared cases in
//! `tests/contract/companion.json` hold both to it): one module per resource ([`secrets`],
//! [`verify`], the [`lease`] and its claims), and here what they share as the script include
//! `SnokOAuthKeeperCompanion` does — routing, who may call (the role, the one allowed user, the
//! role assignable only by `security_admin`), the one audit line per call and the event of every
//! refused one, the answer and the error envelope.

pub(crate) mod lease;
mod secrets;
mod verify;

use serde_json::{Map, Value};

use crate::answer::{authenticate, error, instance_headers};
use crate::server::{Incoming, SimResponse};
use crate::state::{Shared, State};

/// Role the companion API requires (created by the update set in `migrations-docs/`).
pub const COMPANION_ROLE: &str = "snok_oauth_keeper";

/// Most ids one `GET /secrets` may ask for.
pub const MAX_IDS: usize = 100;

/// Most tokens one `POST /verify` may ask about.
pub const MAX_TOKENS: usize = 100;

/// The `source` of the companion's audit lines in the instance's system log.
pub const AUDIT_SOURCE: &str = "sn-oauth-keeper companion";

/// The system property naming the one user the companion answers; empty refuses everyone.
pub const ALLOWED_USER_PROPERTY: &str = "snok.oauth_keeper.allowed_user";

/// The role that alone may assign [`COMPANION_ROLE`] for the companion to answer.
pub const ASSIGNABLE_BY: &str = "security_admin";

/// The event every refused call queues (registered by the update set).
pub const REFUSED_EVENT: &str = "snok.oauth_keeper.refused";

/// An event the companion queued (`gs.eventQueue`), as the instance's event log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompanionEvent {
    /// The event's name: [`REFUSED_EVENT`].
    pub name: String,
    /// The sys_id of the record it is queued on: the caller's `sys_user` row.
    pub record: String,
    /// The caller's `user_name`.
    pub parm1: String,
    /// The resource and the reason, e.g. `GET /secrets not_allowed_user`.
    pub parm2: String,
}

/// A resource of the companion, as the update set's `sys_ws_operation` records define them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resource {
    Secrets,
    Verify,
    Lease,
    LeaseStatus,
    LeaseRelease,
    ClaimsRelease,
}

impl Resource {
    /// The resource a method and a path under the companion's base path name, if any.
    fn route(method: &str, path: &str) -> Option<Resource> {
        match (method, path) {
            // HEAD is GET without a body, as the platform serves it.
            ("GET" | "HEAD", "/secrets") => Some(Resource::Secrets),
            ("POST", "/verify") => Some(Resource::Verify),
            ("POST", "/lease") => Some(Resource::Lease),
            ("GET" | "HEAD", "/lease") => Some(Resource::LeaseStatus),
            ("DELETE", "/lease") => Some(Resource::LeaseRelease),
            ("DELETE", "/lease/claims") => Some(Resource::ClaimsRelease),
            _ => None,
        }
    }

    /// How the audit line names it.
    fn label(self) -> &'static str {
        match self {
            Resource::Secrets => "GET /secrets",
            Resource::Verify => "POST /verify",
            Resource::Lease => "POST /lease",
            Resource::LeaseStatus => "GET /lease",
            Resource::LeaseRelease => "DELETE /lease",
            Resource::ClaimsRelease => "DELETE /lease/claims",
        }
    }
}

pub(crate) fn handle(shared: &Shared, req: &Incoming) -> SimResponse {
    let mut st = shared.lock();
    if let Err(resp) = authenticate(&mut st, req) {
        return resp;
    }
    let path = req
        .path
        .strip_prefix(shared.companion_path.as_str())
        .unwrap_or_default()
        .trim_end_matches('/');
    let resource = Resource::route(&req.method.to_ascii_uppercase(), path).filter(|resource| {
        *resource != Resource::LeaseStatus || st.instance.companion_lease_status
    });
    // Without the update set there is no such API (and an older one lacks the newer resources):
    // the instance answers as for any unknown `/api/` path.
    let Some(resource) = resource.filter(|_| st.instance.companion_installed) else {
        return error(
            &mut st,
            400,
            "Requested URI does not represent any resource",
            None,
        );
    };
    let mut call = Call {
        st: &mut st,
        resource,
    };
    if let Err(refused) = call.admit() {
        return refused;
    }
    match resource {
        Resource::Secrets => secrets::answer(&mut call, req),
        Resource::Verify => verify::answer(&mut call, req),
        Resource::Lease => lease::acquire(&mut call, req),
        Resource::LeaseStatus => lease::status(&mut call),
        Resource::LeaseRelease => lease::release(&mut call, req),
        Resource::ClaimsRelease => lease::release_claims(&mut call, req),
    }
}

/// One call of one resource: what the script include gives every resource script.
struct Call<'a> {
    st: &'a mut State,
    resource: Resource,
}

impl Call<'_> {
    /// Refuses the call (403) unless the caller may use the companion; checked before anything
    /// else, so a caller who may not learns nothing about its parameters, and in this order, so
    /// only the allowed user learns how the instance is set up: the role, the allowed user, the
    /// role assignable only by `security_admin`.
    fn admit(&mut self) -> Result<(), SimResponse> {
        if !self.st.has_role(COMPANION_ROLE) {
            let detail = format!("The caller lacks role {COMPANION_ROLE}");
            return Err(self.refuse(
                403,
                "Insufficient rights to query records",
                &detail,
                "no_role",
            ));
        }
        let allowed = self.st.instance.allowed_user.clone();
        if allowed.is_empty() {
            let detail = format!(
                "System property {ALLOWED_USER_PROPERTY} is empty: as security_admin, set it to \
                 the integration user's User ID (user_name)"
            );
            return Err(self.refuse(
                403,
                "Companion allowed user not set",
                &detail,
                "no_allowed_user",
            ));
        }
        if allowed != self.st.user_name() {
            let detail = format!(
                "Only the user named in system property {ALLOWED_USER_PROPERTY} may call the \
                 companion"
            );
            return Err(self.refuse(
                403,
                "Caller is not the companion's allowed user",
                &detail,
                "not_allowed_user",
            ));
        }
        if self.st.instance.role_assignable_by != ASSIGNABLE_BY {
            let detail = format!(
                "Role {COMPANION_ROLE} must be assignable only by {ASSIGNABLE_BY}: as \
                 {ASSIGNABLE_BY}, set its Assignable by field to {ASSIGNABLE_BY}"
            );
            return Err(self.refuse(
                403,
                "Companion role not locked down",
                &detail,
                "role_not_locked",
            ));
        }
        Ok(())
    }

    /// The call's one audit line.
    fn audit(&mut self, text: &str) {
        let user = self.st.user_name();
        let line = format!("user={user} {} {text}", self.resource.label());
        self.st.instance.audit.push(line);
    }

    /// A refusal in the instance's error envelope, after its audit line and its event.
    fn refuse(&mut self, status: u16, message: &str, detail: &str, why: &str) -> SimResponse {
        self.audit(&format!("refused={why}"));
        let event = CompanionEvent {
            name: REFUSED_EVENT.to_owned(),
            record: self.st.user.sys_id.clone(),
            parm1: self.st.user_name(),
            parm2: format!("{} {why}", self.resource.label()),
        };
        self.st.instance.events.push(event);
        error(self.st, status, message, Some(detail))
    }

    /// The distinct `sys_id` query parameter values (comma-separated or repeated), or the
    /// refusal (400) when there are none or more than `max`.
    fn requested_ids(&mut self, req: &Incoming, max: usize) -> Result<Vec<String>, SimResponse> {
        let mut ids: Vec<String> = Vec::new();
        for id in values(req, "sys_id") {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Err(self.refuse(
                400,
                "Missing parameter sys_id",
                "Provide one or more oauth_credential sys_ids as sys_id=<id>[,<id>...]",
                "no_ids",
            ));
        }
        if ids.len() > max {
            let detail = format!("At most {max} sys_id values per request, got {}", ids.len());
            return Err(self.refuse(400, "Too many sys_ids", &detail, "too_many_ids"));
        }
        Ok(ids)
    }

    /// A JSON answer.
    fn send(&mut self, status: u16, body: &Value) -> SimResponse {
        SimResponse {
            status,
            headers: instance_headers(self.st),
            body: body.to_string().into_bytes(),
        }
    }
}

/// Every value of a repeated or comma-separated query parameter, trimmed, without empties.
fn values(req: &Incoming, key: &str) -> Vec<String> {
    req.params()
        .into_iter()
        .filter(|p| p.key == key)
        .flat_map(|p| {
            p.value
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The request body as a JSON object; `None` when it is not one.
fn json_object(req: &Incoming) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&req.body) {
        Ok(Value::Object(object)) => Some(object),
        _ => None,
    }
}

/// A platform sys_id: 32 lowercase hex digits.
fn is_sys_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The clear text of a row's encrypted column; `None` when it is empty or does not decrypt.
fn decrypted(st: &State, table: &str, sys_id: &str, column: &str) -> Option<String> {
    st.db
        .get(table, sys_id)?
        .get(column)
        .and_then(|stored| st.decrypt(stored))
        .filter(|clear| !clear.is_empty())
}
