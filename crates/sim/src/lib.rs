//! sn-oauth-keeper-sim: an in-process emulation of a ServiceNow instance (Table API plus the
//! companion Scripted REST API) and of the OAuth token endpoints of several provider kinds,
//! served over a real socket, with fault injection and a request log. The keeper's `demo` and
//! `simulate` commands run against it, its integration tests use it as their test bed, and the
//! benchmark measures the keeper on it.
//!
//! It imports nothing of the keeper (no crate of the workspace): it verifies `private_key_jwt`
//! client assertions, lays out GUIDs and encrypts password2 values with its own code, so a
//! misconception of the keeper's cannot pass on both sides.
//!
//! It follows the facts in `servicenow.md` §3 and `providers.md` rather than what a client
//! happens to expect: password2 columns come back as ciphertext, `sysparm_input_display_value`
//! shifts date-times into the user's zone, `Link` headers carry the real quirks, providers
//! rotate (or not) and detect reuse like the services they stand for.
//!
//! Writes follow what the platform does rather than what would be convenient to test:
//! - a field the integration user may not write (a field-level write ACL, or
//!   [`Simulator::deny_field_write`]) is skipped silently; the other fields are stored and the
//!   answer is still 200 (201 for a POST) with the record as stored — a write's status never
//!   proves a field landed;
//! - under `sysparm_input_display_value=true` a reference field takes the display value of the
//!   referenced row (its display field) and stores that row's sys_id (documented); a sys_id of
//!   an existing row is kept as is (believed, not documented: `check --round-trip` proves it on
//!   a real instance); anything else is stored empty;
//! - `sysparm_suppress_pagination_header=true` drops `Link` only: `X-Total-Count` stays, as
//!   PySNC, which pages by it, needs.
//!
//! Map: [`estate`] (what is seeded), `server` (socket, pipeline), `answer` (authentication,
//! headers and errors every instance answer shares), `table_api`, `companion`,
//! `provider` (token endpoints), [`fault`] (injection), `query` (encoded queries), `db` /
//! `schema` (storage), `datetime`, `cipher` (the stand-in for instance encryption), `instance`
//! (the runbook's instance-side setup: the companion's ACLs, web-service access, and the
//! instance's own `/oauth_token.do`), `clock` (the one place the real clock is read).

mod answer;
mod cipher;
mod clock;
mod companion;
mod datetime;
mod db;
pub mod estate;
pub mod fault;
mod instance;
mod provider;
mod query;
mod schema;
mod server;
mod state;
mod table_api;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use jiff::SignedDuration;
use tokio::sync::watch;

pub use companion::lease::{
    CompanionLease, LeaseClaim, MAX_CLAIMS as COMPANION_MAX_CLAIMS,
    MAX_HOLDER_CHARS as COMPANION_MAX_HOLDER_CHARS, MAX_TTL_SECS as COMPANION_MAX_LEASE_TTL_SECS,
    MIN_TTL_SECS as COMPANION_MIN_LEASE_TTL_SECS,
};
pub use companion::{
    ALLOWED_USER_PROPERTY as COMPANION_ALLOWED_USER_PROPERTY,
    ASSIGNABLE_BY as COMPANION_ASSIGNABLE_BY, AUDIT_SOURCE as COMPANION_AUDIT_SOURCE,
    COMPANION_ROLE, CompanionEvent, MAX_IDS as COMPANION_MAX_IDS,
    MAX_TOKENS as COMPANION_MAX_TOKENS, REFUSED_EVENT as COMPANION_REFUSED_EVENT,
};
pub use estate::{
    ADMIN_SYS_ID, AccessSpec, CredentialSpec, DEFAULT_USER_ROLES, EntraEndpoint, Estate,
    ExpiresInFormat, ProviderKind, RegistrySpec, SeededCredential, SeededRegistry,
};
pub use fault::{Fault, FaultAction, FaultTarget};
pub use instance::{
    COMPANION_RECORD_ACLS, ROUND_TRIP_REGISTRY_NAME, ROUND_TRIP_REGISTRY_SYS_ID,
    ROUND_TRIP_TOKEN_URL,
};

use crate::fault::FaultSlot;
use crate::server::{ConnAddr, SimListener};
use crate::state::Shared;

/// Path of the companion Scripted REST API, as the update set in `migrations-docs/` creates it:
/// a global-scope API with namespace `snok` and API ID `oauth_keeper`.
pub const COMPANION_PATH: &str = "/api/snok/oauth_keeper";

/// Path of the instance's own OAuth token endpoint.
pub const INSTANCE_TOKEN_PATH: &str = "/oauth_token.do";

/// A way a real instance might differ from what the keeper believes about writes with
/// `sysparm_input_display_value=true` (the inferred facts of `migrations-docs/README.md`):
/// switched on with [`Simulator::add_quirk`], each one is a counter-example that
/// `check --round-trip` must catch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceQuirk {
    /// A reference sent as a sys_id is stored empty (only display values resolve).
    ReferencesStoredEmpty,
    /// A password2 value is stored as sent, unencrypted.
    TokensStoredUnencrypted,
    /// Date-times are read in this zone (IANA name), not the integration user's.
    DatesReadInZone(String),
}

/// Which part of the simulator served a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The Table API.
    TableApi,
    /// The companion Scripted REST API.
    Companion,
    /// The instance's own OAuth token endpoint (`/oauth_token.do`).
    InstanceOAuth,
    /// A provider's token endpoint (by provider id).
    Provider(String),
    /// Anything else.
    Other,
}

/// One request as the simulator received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw, undecoded query string.
    pub query: String,
    /// Request headers (lowercase names); the `Authorization` value keeps only its scheme
    /// (`Basic <redacted>`). The body of a `/oauth_token.do` request is `<redacted>` too.
    pub headers: Vec<(String, String)>,
    /// Body as text (lossy UTF-8).
    pub body: String,
    /// Status answered; `0` when the connection was dropped or the request is still in flight.
    pub status: u16,
    /// Which part of the simulator it went to.
    pub target: Target,
    /// When it arrived (the real clock, not shifted by [`Simulator::advance_time`]): tests read
    /// the waits between retries from these.
    pub at: jiff::Timestamp,
}

impl RecordedRequest {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running simulator. Cheap to clone; serving stops on [`Simulator::shutdown`] or when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Simulator {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    username: String,
    password: String,
    stop: watch::Sender<bool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        stop(&self.shared, &self.stop);
    }
}

fn stop(shared: &Shared, sender: &watch::Sender<bool>) {
    sender.send_replace(true);
    server::kill_all(shared);
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("base_url", &self.handle.shared.base_url)
            .field("username", &self.handle.username)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Binds `listen` (e.g. `127.0.0.1:0`), seeds the estate and serves in a background task.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn start(listen: SocketAddr, estate: Estate) -> std::io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let mut local = listener.local_addr()?;
        // A wildcard bind is reached through loopback.
        if local.ip().is_unspecified() {
            local.set_ip(if local.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let base_url = format!("http://{local}");
        let (username, password) = estate.user_credentials();
        let companion_path = estate.companion_path().to_owned();
        let state = estate.materialize(clock::wall_now(), &base_url);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            base_url,
            companion_path,
            conns: Mutex::new(Vec::new()),
        });
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let app =
            server::router(Arc::clone(&shared)).into_make_service_with_connect_info::<ConnAddr>();
        let sim_listener = SimListener {
            inner: listener,
            shared: Arc::clone(&shared),
        };
        tokio::spawn(async move {
            let signal = async move {
                // Resolves on shutdown, and also when the sender is gone.
                let _ = stop_rx.wait_for(|stopped| *stopped).await;
            };
            if let Err(err) = axum::serve(sim_listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::warn!(error = %err, "simulator server stopped with an error");
            }
        });
        Ok(Simulator {
            handle: Arc::new(Handle {
                shared,
                username,
                password,
                stop: stop_tx,
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The instance URL, `http://127.0.0.1:PORT` (no trailing slash); token URLs live on it too.
    pub fn base_url(&self) -> String {
        self.shared().base_url.clone()
    }

    /// The integration user's `user_name`.
    pub fn username(&self) -> &str {
        &self.handle.username
    }

    /// The integration user's `sys_user` sys_id.
    pub fn user_sys_id(&self) -> String {
        self.shared().lock().user.sys_id.clone()
    }

    /// The integration user's password.
    pub fn password(&self) -> &str {
        &self.handle.password
    }

    /// Path of the companion Scripted REST API.
    pub fn companion_path(&self) -> &str {
        &self.shared().companion_path
    }

    /// The companion's audit lines so far (what the instance's system log holds under source
    /// [`COMPANION_AUDIT_SOURCE`]), oldest first.
    pub fn companion_audit(&self) -> Vec<String> {
        self.shared().lock().instance.audit.clone()
    }

    /// The events the companion queued (one per refused call), oldest first.
    pub fn companion_events(&self) -> Vec<CompanionEvent> {
        self.shared().lock().instance.events.clone()
    }

    /// Sets system property `snok.oauth_keeper.allowed_user`: the one user the companion answers
    /// (empty refuses everyone).
    pub fn set_companion_allowed_user(&self, user_name: &str) {
        user_name.clone_into(&mut self.shared().lock().instance.allowed_user);
    }

    /// Sets the role named in the companion role's *Assignable by* field; anything but
    /// [`COMPANION_ASSIGNABLE_BY`] and the companion refuses every call.
    pub fn set_companion_role_assignable_by(&self, role: &str) {
        role.clone_into(&mut self.shared().lock().instance.role_assignable_by);
    }

    /// The companion's lease as the instance stores it (`None` before the first lease ever); it
    /// is held while `expires_at` is after [`Simulator::now`].
    pub fn companion_lease(&self) -> Option<CompanionLease> {
        self.shared().lock().instance.lease.view()
    }

    /// Every claim keepers hold through the companion's lease, by holder then sys_id.
    pub fn companion_lease_claims(&self) -> Vec<LeaseClaim> {
        self.shared().lock().instance.lease.claims()
    }

    /// Expires the companion's lease now, as if its holder stopped renewing it: the next
    /// `POST /lease` acquires it with the next fence. Claims stay.
    pub fn expire_companion_lease(&self) {
        let mut st = self.shared().lock();
        let now = st.now().as_millisecond();
        st.instance.lease.expire(now);
    }

    /// The `grant_type` of every request to `/oauth_token.do`, in order.
    pub fn instance_token_grants(&self) -> Vec<String> {
        self.shared().lock().instance.oauth.grants.clone()
    }

    /// Every access and refresh token the instance's OAuth server issued (for leak checks).
    pub fn instance_tokens(&self) -> Vec<String> {
        let st = self.shared().lock();
        st.instance
            .oauth
            .access
            .iter()
            .chain(&st.instance.oauth.refresh)
            .map(|t| t.token.clone())
            .collect()
    }

    /// Sets `sys_user.web_service_access_only` of the integration user.
    pub fn set_user_web_service_access_only(&self, wsao: bool) {
        let mut st = self.shared().lock();
        let user = st.user.sys_id.clone();
        st.write_field(
            "sys_user",
            &user,
            "web_service_access_only",
            wsao.to_string(),
        );
    }

    /// The token endpoint URL of a provider.
    pub fn token_url(&self, provider: &str) -> String {
        format!("{}/oauth2/{provider}/token", self.shared().base_url)
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared()
            .lock()
            .log
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared().lock().log.clear();
    }

    /// All rows of a table as stored (raw database values), in insertion order; empty for an
    /// unknown table.
    pub fn rows(&self, table: &str) -> Vec<BTreeMap<String, String>> {
        self.shared()
            .lock()
            .db
            .rows(table)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// One stored row.
    pub fn row(&self, table: &str, sys_id: &str) -> Option<BTreeMap<String, String>> {
        self.shared().lock().db.get(table, sys_id).cloned()
    }

    /// Decrypts a stored password2 value as the instance would; `None` when the row or column
    /// is missing or the stored value is not a proper ciphertext (e.g. written without
    /// `sysparm_input_display_value=true`).
    pub fn decrypted(&self, table: &str, sys_id: &str, column: &str) -> Option<String> {
        let st = self.shared().lock();
        let stored = st.db.get(table, sys_id)?.get(column)?;
        st.decrypt(stored)
    }

    /// Adds a fault rule (checked after the earlier ones).
    pub fn inject(&self, fault: Fault) {
        self.shared().lock().faults.push(FaultSlot::new(fault));
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared().lock().faults.clear();
    }

    /// Sets the integration user's `sys_user.time_zone` (IANA name; empty = system default).
    pub fn set_user_time_zone(&self, tz: &str) {
        let mut st = self.shared().lock();
        let user = st.user.sys_id.clone();
        st.write_field("sys_user", &user, "time_zone", tz.to_owned());
    }

    /// Denies the integration user writing `column` of `table`, whatever its roles, as a
    /// field-level write ACL does: PATCH, PUT and POST skip the field silently, store the other
    /// fields and answer 200 (201) with the record as stored.
    pub fn deny_field_write(&self, table: &str, column: &str) {
        self.shared()
            .lock()
            .instance
            .denied_field_writes
            .insert((table.to_owned(), column.to_owned()));
    }

    /// Lifts a [`Simulator::deny_field_write`].
    pub fn allow_field_write(&self, table: &str, column: &str) {
        self.shared()
            .lock()
            .instance
            .denied_field_writes
            .remove(&(table.to_owned(), column.to_owned()));
    }

    /// Makes this instance differ from the keeper's beliefs as `quirk` says, from now on.
    pub fn add_quirk(&self, quirk: InstanceQuirk) {
        self.shared().lock().instance.quirks.push(quirk);
    }

    /// Replaces the integration user's roles.
    pub fn set_user_roles(&self, roles: &[&str]) {
        self.shared().lock().user.roles = roles.iter().map(|r| (*r).to_owned()).collect();
    }

    /// Whether `provider` would currently accept `refresh_token`.
    pub fn provider_valid(&self, provider: &str, refresh_token: &str) -> bool {
        let st = self.shared().lock();
        let now = st.now().as_second();
        st.providers
            .get(provider)
            .is_some_and(|p| p.is_valid(refresh_token, now))
    }

    /// Token POSTs `provider` received (including ones a fault intercepted).
    pub fn token_requests(&self, provider: &str) -> usize {
        self.shared()
            .lock()
            .providers
            .get(provider)
            .map_or(0, |p| p.token_requests)
    }

    /// Every refresh token `provider` was presented by an authenticated client, in arrival
    /// order (faulted requests are not among them: a fault answers before the provider sees
    /// the request).
    pub fn presented_refresh_tokens(&self, provider: &str) -> Vec<String> {
        self.shared()
            .lock()
            .providers
            .get(provider)
            .map_or_else(Vec::new, |p| p.presented.clone())
    }

    /// How many grants (token families) `provider` has revoked: by the user, or by reuse
    /// detection.
    pub fn revoked_grants(&self, provider: &str) -> usize {
        self.shared()
            .lock()
            .providers
            .get(provider)
            .map_or(0, |p| p.revoked_families())
    }

    /// Stops serving: no new connections, in-flight ones are cut.
    pub fn shutdown(&self) {
        stop(&self.handle.shared, &self.handle.stop);
    }

    /// Revokes the grant of `refresh_token` at `provider`, as the user revoking access does
    /// (every token of the family stops working).
    pub fn revoke_refresh_token(&self, provider: &str, refresh_token: &str) {
        let mut st = self.shared().lock();
        let now = st.now().as_second();
        if let Some(p) = st.providers.get_mut(provider) {
            p.revoke(refresh_token, now);
        }
    }

    /// A direct database write, as another writer would make it: bumps `sys_mod_count` and
    /// `sys_updated_on` (unless the column itself is a `sys_` column, which is written as is).
    pub fn set_row_field(&self, table: &str, sys_id: &str, column: &str, raw_value: &str) {
        self.shared()
            .lock()
            .write_field(table, sys_id, column, raw_value.to_owned());
    }

    /// Stores `plaintext` encrypted in a password2 column (a direct write, like
    /// [`Simulator::set_row_field`]).
    pub fn set_encrypted_field(&self, table: &str, sys_id: &str, column: &str, plaintext: &str) {
        let mut st = self.shared().lock();
        let stored = st.encrypt(plaintext);
        st.write_field(table, sys_id, column, stored);
    }

    /// Inserts a row directly (another writer); returns its sys_id. Unknown columns are
    /// dropped; system columns are stamped unless given.
    pub fn insert_row(&self, table: &str, fields: &[(&str, &str)]) -> String {
        let mut st = self.shared().lock();
        let sys_id = st.new_sys_id();
        let now = st.now_db();
        let mut row: BTreeMap<String, String> = [
            ("sys_id", sys_id.as_str()),
            ("sys_created_on", now.as_str()),
            ("sys_updated_on", now.as_str()),
            ("sys_created_by", "system"),
            ("sys_updated_by", "system"),
            ("sys_mod_count", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        row.extend(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let id = row.get("sys_id").cloned().unwrap_or(sys_id);
        st.db.insert(table, row);
        id
    }

    /// Deletes a row directly (e.g. the "Clean Expired OAuth Credentials" job); whether it
    /// existed.
    pub fn delete_row(&self, table: &str, sys_id: &str) -> bool {
        self.shared().lock().db.delete(table, sys_id)
    }

    /// Moves the simulator's clock (database timestamps, expiry and provider inactivity
    /// checks) forward by `by`, cumulatively, so tests can age tokens without sleeping.
    pub fn advance_time(&self, by: SignedDuration) {
        let mut st = self.shared().lock();
        st.clock_offset = st.clock_offset.saturating_add(by);
    }

    /// The simulator's current time (wall clock plus [`Simulator::advance_time`] offsets).
    pub fn now(&self) -> jiff::Timestamp {
        self.shared().lock().now()
    }
}
