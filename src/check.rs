//! `check`: the pre-flight checklist. Each step verifies one step of the runbook in
//! `migrations-docs/README.md` on the live instance and, when it fails, names that runbook step
//! and the fix. Nothing here changes a real credential: the write probe is a PATCH that sets a
//! field to the value it already has, on a row the keeper itself created, and is verified to
//! have changed nothing.

use crate::config::{Env, InstanceAuthSettings, InstanceGrant, Settings};
use crate::domain::credential::pair;
use crate::domain::endpoint::Routes;
use crate::journal::Journal;
use crate::servicenow::transcript::Recorder;
use crate::servicenow::{CREDENTIAL_FIELDS, Instance, RetryPolicy, SnError};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// The role the update set creates and the integration user must hold.
pub const KEEPER_ROLE: &str = "snok_oauth_keeper";

/// The verdict of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Verified.
    Pass,
    /// Works, but worth a look.
    Warn,
    /// Broken: the keeper cannot work until it is fixed.
    Fail,
    /// Not checked, because a step it depends on failed.
    Skip,
}

/// One checklist step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What was checked.
    pub name: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// How to fix it (failures and warnings).
    pub fix: Option<String>,
    /// The step of the runbook in `migrations-docs/README.md` that sets this up.
    pub runbook: Option<u8>,
}

/// The whole checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Checklist {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Whether the instance was unreachable or refused the account.
    pub instance_refused: bool,
}

impl Checklist {
    /// 0 when nothing failed; 3 when the instance is unreachable or refuses the account; 1
    /// otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.instance_refused {
            3
        } else if self.steps.iter().any(|s| s.verdict == Verdict::Fail) {
            1
        } else {
            0
        }
    }

    /// The step called `name`, if it ran.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The checklist as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            let mark = match step.verdict {
                Verdict::Pass => "ok  ",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            };
            out.push_str(&format!("[{mark}] {}: {}\n", step.name, step.detail));
            if let Some(fix) = &step.fix {
                match step.runbook {
                    Some(n) => out.push_str(&format!("       fix (runbook step {n}): {fix}\n")),
                    None => out.push_str(&format!("       fix: {fix}\n")),
                }
            }
        }
        out
    }
}

/// Runbook steps of `migrations-docs/README.md`, by number.
mod runbook {
    /// Import and commit the update set.
    pub const UPDATE_SET: u8 = 2;
    /// Create the integration user (Web Service Access Only, role, time zone).
    pub const USER: u8 = 3;
    /// Register the instance OAuth client (`auth = "oauth"` only).
    pub const OAUTH_CLIENT: u8 = 4;
    /// The tables' web-service access.
    pub const WEB_SERVICES: u8 = 5;
    /// Configure the keeper.
    pub const CONFIG: u8 = 6;
    /// The first run, which starts with `check --round-trip`.
    pub const FIRST_RUN: u8 = 8;
}

fn step(
    name: &'static str,
    verdict: Verdict,
    detail: impl Into<String>,
    fix: Option<String>,
    runbook: Option<u8>,
) -> Step {
    Step {
        name,
        verdict,
        detail: detail.into(),
        fix,
        runbook,
    }
}

fn pass(name: &'static str, detail: impl Into<String>) -> Step {
    step(name, Verdict::Pass, detail, None, None)
}

fn skipped(name: &'static str, because: &str) -> Step {
    step(
        name,
        Verdict::Skip,
        format!("not checked: {because}"),
        None,
        None,
    )
}

pub mod round_trip;

/// How `check` runs beyond the config.
#[derive(Debug, Default)]
pub struct CheckOptions {
    /// Records every exchange with the instance (`check --record DIR`).
    pub recorder: Option<Arc<Recorder>>,
    /// Runs the round trip on a scratch credential under the registry of this name
    /// (`check --round-trip`); `None` lists the round trip's beliefs as unproven.
    pub round_trip: Option<String>,
}

/// Runs every step against the live instance.
pub async fn run(settings: &Settings, env: &dyn Env) -> Checklist {
    run_with(settings, env, &CheckOptions::default()).await
}

/// [`run`], as `options` say.
pub async fn run_with(settings: &Settings, env: &dyn Env, options: &CheckOptions) -> Checklist {
    let mut steps = vec![pass("config", format!("{} is valid", settings.source))];
    match settings.state.key.resolve(&settings.source, env) {
        Ok(_) => steps.push(pass(
            "journal key",
            "the journal key is readable and 32 bytes long",
        )),
        Err(e) => steps.push(step(
            "journal key",
            Verdict::Fail,
            e.to_string(),
            Some("provide a 32-byte key, e.g. `openssl rand -hex 32`, through state.key_env or state.key_file".into()),
            Some(runbook::CONFIG),
        )),
    }
    steps.push(state_dir_step(settings));
    steps.push(pending_records_step(settings, env));

    let instance = match Instance::new(
        &settings.instance,
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
    ) {
        Ok(mut i) => {
            if let Some(recorder) = &options.recorder {
                i.set_recorder(Arc::clone(recorder));
            }
            i
        }
        Err(e) => {
            steps.push(step(
                "reachability",
                Verdict::Fail,
                e.to_string(),
                None,
                Some(runbook::CONFIG),
            ));
            return Checklist {
                steps,
                instance_refused: true,
            };
        }
    };
    let oauth = matches!(settings.instance.auth, InstanceAuthSettings::OAuth { .. });
    let user_query = format!("user_name={}", settings.instance.username);
    let user = match instance
        .sample(
            "sys_user",
            &user_query,
            "sys_id,user_name,web_service_access_only,time_zone,date_format",
            1,
        )
        .await
    {
        Ok(rows) => {
            steps.push(pass(
                "reachability",
                format!("{} answers", settings.instance.url),
            ));
            steps.push(pass(
                "authentication",
                format!(
                    "signed in as {} with {}",
                    settings.instance.username,
                    if oauth {
                        "a bearer token from /oauth_token.do"
                    } else {
                        "Basic auth"
                    }
                ),
            ));
            rows.into_iter().next()
        }
        Err(e @ (SnError::Unreachable(_) | SnError::NoAnswer(_))) => {
            steps.push(step(
                "reachability",
                Verdict::Fail,
                e.to_string(),
                Some("check instance.url, DNS, proxy settings (HTTPS_PROXY) and firewalls".into()),
                Some(runbook::CONFIG),
            ));
            return Checklist {
                steps,
                instance_refused: true,
            };
        }
        Err(e @ SnError::Html(_)) => {
            steps.push(step("reachability", Verdict::Fail, e.to_string(), Some("wake the instance (a hibernating developer instance) or check that instance.url points at the instance itself".into()), Some(runbook::CONFIG)));
            return Checklist {
                steps,
                instance_refused: true,
            };
        }
        Err(e @ (SnError::Unauthorized(_) | SnError::TokenRefused(_))) => {
            steps.push(pass(
                "reachability",
                format!("{} answers", settings.instance.url),
            ));
            let (fix, runbook) = match (&e, &settings.instance.auth) {
                (
                    SnError::TokenRefused(_),
                    InstanceAuthSettings::OAuth {
                        grant: InstanceGrant::Password { .. },
                        ..
                    },
                ) => (
                    format!(
                        "check instance.client_id and its secret against System OAuth > Application Registry, the password of {}, and that the password grant is allowed (glide.oauth.inbound.ropc.grant_type.disabled not true) — better, switch to oauth_grant = \"client_credentials\"",
                        settings.instance.username
                    ),
                    runbook::OAUTH_CLIENT,
                ),
                (SnError::TokenRefused(_), _) => (
                    format!(
                        "check instance.client_id and its secret against System OAuth > Application Registry, that the system property glide.oauth.inbound.client.credential.grant_type.enabled is true (ServiceNow Washington DC or later), and that the client's OAuth Application User is {}, active",
                        settings.instance.username
                    ),
                    runbook::OAUTH_CLIENT,
                ),
                (_, InstanceAuthSettings::OAuth { .. }) => (
                    "the instance refused the bearer token it issued itself: check that the OAuth client's user is active and that com.snc.platform.security.oauth.is.active is true".to_string(),
                    runbook::OAUTH_CLIENT,
                ),
                (_, InstanceAuthSettings::Basic { .. }) => (
                    format!(
                        "either the password of {} is wrong, or the 2026 Basic-auth restriction blocks it: tick Web service access only on the user (or grant snc_basic_auth_api_access), or switch to instance.auth = \"oauth\"",
                        settings.instance.username
                    ),
                    runbook::USER,
                ),
            };
            steps.push(step(
                "authentication",
                Verdict::Fail,
                e.to_string(),
                Some(fix),
                Some(runbook),
            ));
            return Checklist {
                steps,
                instance_refused: true,
            };
        }
        Err(e) => {
            steps.push(pass(
                "reachability",
                format!("{} answers", settings.instance.url),
            ));
            steps.push(step(
                "authentication",
                Verdict::Warn,
                format!("signed in, but the user record is not readable: {e}"),
                Some("let the integration user read its own sys_user record (time_zone, date_format, web_service_access_only)".into()),
                Some(runbook::USER),
            ));
            None
        }
    };
    steps.push(web_service_access_step(user.as_ref(), oauth));

    let rows = match instance
        .sample(
            "oauth_credential",
            "typeINaccess_token,refresh_token^ORDERBYDESCtype",
            CREDENTIAL_FIELDS,
            20,
        )
        .await
    {
        Ok(rows) => {
            steps.push(pass(
                "read oauth_credential",
                format!("{} row(s) readable in a sample", rows.len()),
            ));
            Some(rows)
        }
        Err(e) => {
            let closed = matches!(&e, SnError::Forbidden(m) if m.contains("API level ACL"));
            let (fix, book) = if closed {
                ("tick \"Allow access to this table via web services\" on the oauth_credential table (System Definition > Tables)".to_string(), runbook::WEB_SERVICES)
            } else {
                (
                    format!(
                        "commit the update set, which creates the read ACLs on oauth_credential, and grant the integration user role {KEEPER_ROLE} (runbook step {})",
                        runbook::USER
                    ),
                    runbook::UPDATE_SET,
                )
            };
            steps.push(step(
                "read oauth_credential",
                Verdict::Fail,
                e.to_string(),
                Some(fix),
                Some(book),
            ));
            None
        }
    };
    match &rows {
        Some(rows) => {
            steps.push(fields_step(rows));
            steps.push(routes_step(&instance, settings).await);
            steps.push(write_step(&instance, settings).await);
        }
        None => {
            steps.push(skipped("read fields", "oauth_credential is not readable"));
            steps.push(skipped(
                "token endpoints",
                "oauth_credential is not readable",
            ));
            steps.push(skipped(
                "write oauth_credential",
                "oauth_credential is not readable",
            ));
        }
    }
    let companion = companion_step(&instance, settings).await;
    let companion_ok = companion.verdict == Verdict::Pass;
    steps.push(companion);
    steps.push(if companion_ok {
        decrypt_step(&instance, rows.as_deref()).await
    } else {
        skipped("companion decrypts", "the companion does not answer")
    });
    steps.push(if companion_ok {
        verify_endpoint_step(&instance).await
    } else {
        skipped("companion verifies", "the companion does not answer")
    });
    steps.push(if companion_ok {
        lease_step(&instance, settings).await
    } else {
        skipped("lease", "the companion does not answer")
    });
    match &user {
        Some(user) => {
            steps.push(time_zone_step(&text(user, "time_zone")));
            steps.push(date_format_step(&text(user, "date_format")));
        }
        None => {
            steps.push(skipped("time zone", "the user record is not readable"));
            steps.push(skipped("date format", "the user record is not readable"));
        }
    }
    match (&options.round_trip, &user) {
        (None, _) => steps.push(round_trip::unproven()),
        (Some(registry), Some(user)) => {
            steps.extend(round_trip::run(&instance, registry, &text(user, "sys_id")).await);
        }
        (Some(_), None) => steps.extend(round_trip::ROUND_TRIP_STEPS.iter().map(|name| {
            skipped(
                name,
                "the integration user's record (its sys_id) is not readable",
            )
        })),
    }
    Checklist {
        steps,
        instance_refused: false,
    }
}

fn text(row: &Map<String, Value>, field: &str) -> String {
    row.get(field)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn state_dir_step(settings: &Settings) -> Step {
    let dir = &settings.state.dir;
    if dir.is_dir() {
        let probe = dir.join(".check-write");
        match std::fs::write(&probe, b"") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                pass("state directory", format!("{} is writable", dir.display()))
            }
            Err(e) => step(
                "state directory",
                Verdict::Fail,
                format!("{} is not writable: {e}", dir.display()),
                Some("give the keeper's user write access to state.dir".into()),
                Some(runbook::CONFIG),
            ),
        }
    } else {
        match dir
            .parent()
            .filter(|p| p.as_os_str().is_empty() || p.is_dir())
        {
            Some(_) => pass(
                "state directory",
                format!("{} will be created on first run", dir.display()),
            ),
            None => step(
                "state directory",
                Verdict::Fail,
                format!("{} and its parent do not exist", dir.display()),
                Some("create state.dir (mode 0700) for the keeper's user".into()),
                Some(runbook::CONFIG),
            ),
        }
    }
}

/// `sys_user.web_service_access_only`: whether Basic auth survives the 2026 restriction, and
/// whether the account can log in interactively.
fn web_service_access_step(user: Option<&Map<String, Value>>, oauth: bool) -> Step {
    let name = "web service access only";
    let Some(value) = user.and_then(|u| u.get("web_service_access_only").and_then(Value::as_str))
    else {
        return skipped(name, "sys_user.web_service_access_only is not readable");
    };
    if value == "true" {
        return pass(
            name,
            "the user is Web Service Access Only: it cannot log in interactively, and Basic auth stays allowed under the 2026 Basic-auth restriction",
        );
    }
    let detail = if oauth {
        "the user is not Web Service Access Only: anyone with its password can log in to the UI"
    } else {
        "Basic auth works today, but the user is not Web Service Access Only: once the instance enforces the 2026 Basic-auth restriction the keeper is locked out unless the user holds snc_basic_auth_api_access"
    };
    step(
        name,
        Verdict::Warn,
        detail,
        Some("tick \"Web service access only\" on the integration user".into()),
        Some(runbook::USER),
    )
}

/// The ACL that makes a discovery field readable.
fn acl_of(field: &str) -> String {
    match field.split_once('.') {
        Some(("peer", column)) if column.starts_with("sys_") => "oauth_entity (read)".to_string(),
        Some(("peer", column)) => format!("oauth_entity.{column} (read)"),
        _ if field.starts_with("sys_") => "oauth_credential (read)".to_string(),
        _ => format!("oauth_credential.{field} (read)"),
    }
}

fn fields_step(rows: &[Map<String, Value>]) -> Step {
    let name = "read fields";
    if rows.is_empty() {
        return step(
            name,
            Verdict::Warn,
            "no oauth_credential rows to inspect yet",
            Some("authorise at least one OAuth credential, then run check again".into()),
            None,
        );
    }
    let with_peer = rows.iter().any(|r| {
        r.get("peer")
            .and_then(Value::as_str)
            .is_some_and(|p| !p.is_empty())
    });
    // The Table API leaves out the fields the caller's ACLs hide; a dot-walk through an empty
    // reference proves nothing, so `peer.*` is judged only when some row has a peer.
    let hidden: Vec<&str> = CREDENTIAL_FIELDS
        .split(',')
        .filter(|f| with_peer || !f.starts_with("peer."))
        .filter(|f| !rows.iter().any(|r| r.contains_key(*f)))
        .collect();
    if !hidden.is_empty() {
        let mut acls: Vec<String> = hidden.iter().map(|f| acl_of(f)).collect();
        acls.dedup();
        return step(
            name,
            Verdict::Fail,
            format!(
                "fields hidden from the integration user: {}",
                hidden.join(", ")
            ),
            Some(format!(
                "the update set's ACLs for them are missing or inactive: {} for role {KEEPER_ROLE}",
                acls.join(", ")
            )),
            Some(runbook::UPDATE_SET),
        );
    }
    let unreadable_registry = rows.iter().any(|r| {
        let peer = r.get("peer").and_then(Value::as_str).unwrap_or("");
        let url = r
            .get("peer.token_url")
            .and_then(Value::as_str)
            .unwrap_or("");
        r.get("type").and_then(Value::as_str) == Some("refresh_token")
            && !peer.is_empty()
            && url.is_empty()
    });
    if unreadable_registry {
        return step(
            name,
            Verdict::Fail,
            "oauth_entity.token_url reads empty through peer",
            Some(format!(
                "the update set's read ACLs on oauth_entity (name, client_id, token_url, default_grant_type) must grant role {KEEPER_ROLE}"
            )),
            Some(runbook::UPDATE_SET),
        );
    }
    pass(name, "credential and registry fields are readable")
}

/// Each registry's pin state — pinned, well-known host, instance-supplied secret, or held back
/// — as the next cycle would route it, and the `[[registry]]` tables that match no registry.
async fn routes_step(instance: &Instance, settings: &Settings) -> Step {
    let name = "token endpoints";
    let rows = match instance.list_credentials().await {
        Ok(rows) => rows,
        Err(e) => {
            return step(
                name,
                Verdict::Warn,
                format!("could not read the registries: {e}"),
                None,
                None,
            );
        }
    };
    let estate = pair(rows);
    let routes = Routes::plan(
        &settings.registry_rules(),
        estate.credentials.iter().map(|c| &*c.refresh.registry),
    );
    let mut lines: Vec<String> = routes
        .iter()
        .map(|r| format!("{}: {}", r.name, r.describe()))
        .collect();
    let unmatched: Vec<&str> = settings
        .registries
        .iter()
        .map(|r| r.name.as_str())
        .filter(|n| !routes.iter().any(|r| r.sys_id == *n || r.name == *n))
        .collect();
    for n in &unmatched {
        lines.push(format!(
            "[[registry]] {n}: matches no Application Registry with a refresh-token credential"
        ));
    }
    let held = routes.iter().any(|r| r.verdict.is_err());
    let moved = routes
        .iter()
        .any(|r| matches!(&r.verdict, Ok(route) if route.moved.is_some()));
    let detail = if lines.is_empty() {
        "no registry has a refresh-token credential yet".to_string()
    } else {
        lines.join("\n       ")
    };
    if held {
        step(
            name,
            Verdict::Fail,
            detail,
            Some("a secret the keeper holds goes only to a pinned token_url or a well-known provider host: pin the right endpoint with [[registry]] token_url, or name an ambiguous registry by its sys_id".into()),
            Some(runbook::CONFIG),
        )
    } else if moved || !unmatched.is_empty() {
        step(
            name,
            Verdict::Warn,
            detail,
            Some("check who changed the registry's token_url on the instance, and that each [[registry]] name is spelled as in the Application Registry".into()),
            Some(runbook::CONFIG),
        )
    } else {
        pass(name, detail)
    }
}

/// Proves write rights without changing anything: a PATCH that sets `expires` to the value it
/// already has (as UTC, without display-value input) on an access row the keeper itself
/// created, then a read that confirms `sys_mod_count` did not move.
async fn write_step(instance: &Instance, settings: &Settings) -> Step {
    let name = "write oauth_credential";
    let query = format!(
        "type=access_token^sys_created_by={}^ORDERBYDESCsys_created_on",
        settings.instance.username
    );
    let fields = "sys_id,expires,sys_mod_count";
    let rows = match instance.sample("oauth_credential", &query, fields, 1).await {
        Ok(rows) => rows,
        Err(e) => {
            return step(
                name,
                Verdict::Warn,
                format!("could not look for a row to probe: {e}"),
                None,
                None,
            );
        }
    };
    let Some(row) = rows.first() else {
        return step(
            name,
            Verdict::Warn,
            "not verified yet: no access row created by the keeper (the first refresh of a credential without an access row proves create and write)",
            Some(format!(
                "make sure the update set's write and create ACLs on oauth_credential grant role {KEEPER_ROLE}"
            )),
            Some(runbook::UPDATE_SET),
        );
    };
    let sys_id = text(row, "sys_id");
    let before = text(row, "sys_mod_count");
    if let Err(e) = instance
        .rewrite_expires(&sys_id, &text(row, "expires"))
        .await
    {
        let forbidden = matches!(e, SnError::Forbidden(_));
        return step(
            name,
            Verdict::Fail,
            e.to_string(),
            Some(if forbidden {
                format!(
                    "the update set's write ACL on oauth_credential (table, token_received, expires) must grant role {KEEPER_ROLE}"
                )
            } else {
                "see the error; the write was a no-change PATCH".to_string()
            }),
            Some(runbook::UPDATE_SET),
        );
    }
    let after = instance
        .sample("oauth_credential", &format!("sys_id={sys_id}"), fields, 1)
        .await
        .ok()
        .and_then(|rows| rows.first().map(|r| text(r, "sys_mod_count")));
    match after {
        Some(after) if after == before => pass(
            name,
            format!(
                "a no-change PATCH of expires on {sys_id}, an access row the keeper created, was accepted and changed nothing (sys_mod_count {after}); creating that row proved create rights"
            ),
        ),
        Some(after) => step(
            name,
            Verdict::Warn,
            format!(
                "the no-change PATCH on {sys_id} was accepted but sys_mod_count moved from {before} to {after} (a business rule wrote the row)"
            ),
            None,
            None,
        ),
        None => step(
            name,
            Verdict::Warn,
            format!(
                "the no-change PATCH on {sys_id} was accepted, but the row could not be read back"
            ),
            None,
            None,
        ),
    }
}

async fn companion_step(instance: &Instance, settings: &Settings) -> Step {
    let name = "companion";
    let path = &settings.instance.companion_path;
    match instance.probe_companion().await {
        Ok(()) => pass(
            name,
            format!("{path} answers and role {KEEPER_ROLE} is granted"),
        ),
        Err(e @ (SnError::NotFound(_) | SnError::Status { status: 400, .. })) => step(
            name,
            Verdict::Fail,
            format!("no Scripted REST API answers at {path}: {e}"),
            Some(format!(
                "commit the update set; if it is committed, open System Web Services > Scripted REST APIs > OAuth Keeper Companion and set instance.companion_path to its Base API path (now {path})"
            )),
            Some(runbook::UPDATE_SET),
        ),
        Err(e @ SnError::Forbidden(_)) => {
            let fix = companion_refusal_fix(&e.to_string(), &settings.instance.username);
            step(
                name,
                Verdict::Fail,
                e.to_string(),
                Some(fix),
                Some(runbook::USER),
            )
        }
        Err(e) => step(
            name,
            Verdict::Fail,
            e.to_string(),
            None,
            Some(runbook::UPDATE_SET),
        ),
    }
}

/// What to do about the companion's refusal: the role, the allowed-user property, or the role's
/// lock-down (the companion's fixed 403 messages, `migrations-docs/README.md`).
fn companion_refusal_fix(refusal: &str, username: &str) -> String {
    if refusal.contains("allowed user not set") {
        format!(
            "as security_admin, set system property snok.oauth_keeper.allowed_user to {username} (the companion answers nobody until it is set)"
        )
    } else if refusal.contains("not the companion's allowed user") {
        format!(
            "the companion answers only the user named in system property snok.oauth_keeper.allowed_user: as security_admin, set it to {username}, or configure the keeper with that user"
        )
    } else if refusal.contains("role not locked down") {
        format!(
            "as security_admin, set Assignable by = security_admin on role {KEEPER_ROLE} (the companion refuses every call until only security_admin can grant it)"
        )
    } else {
        format!("grant the integration user role {KEEPER_ROLE}")
    }
}

/// Asks the companion for one real refresh token (never a client secret), which proves that
/// `getDecryptedValue()` reads `token_received` on this instance. The token is dropped unseen.
async fn decrypt_step(instance: &Instance, rows: Option<&[Map<String, Value>]>) -> Step {
    let name = "companion decrypts";
    let Some(id) = rows.and_then(|rows| {
        rows.iter()
            .find(|r| r.get("type").and_then(Value::as_str) == Some("refresh_token"))
            .map(|r| text(r, "sys_id"))
    }) else {
        return skipped(name, "no refresh-token row to try");
    };
    match instance.fetch_secrets(std::slice::from_ref(&id)).await {
        Ok(found) => match found.get(&id) {
            Some(secrets) if !secrets.refresh_token.expose_secret().is_empty() => pass(
                name,
                format!("the companion decrypted the refresh token of {id}"),
            ),
            _ => step(
                name,
                Verdict::Warn,
                format!("the companion left {id} out: its token_received did not decrypt"),
                Some("re-authorise that credential (Get OAuth Token); if every credential fails this way, report it: the instance's encryption of token_received differs from what the companion expects".into()),
                None,
            ),
        },
        Err(e) => step(name, Verdict::Fail, e.to_string(), None, Some(runbook::UPDATE_SET)),
    }
}

/// The keeper releases an answer only when the companion's `/verify` proves it stored: without
/// the endpoint (an older companion) every refreshed answer would stay in the journal.
async fn verify_endpoint_step(instance: &Instance) -> Step {
    let name = "companion verifies";
    match instance.probe_verify().await {
        Ok(()) => pass(name, "POST /verify answers: writes can be proven"),
        Err(e) if e.endpoint_missing() => step(
            name,
            Verdict::Fail,
            format!("the companion has no /verify endpoint: {e}"),
            Some("update the companion from migrations-docs/ (import the current update set): without /verify no write can be proven, and every refreshed answer stays in the journal".into()),
            Some(runbook::UPDATE_SET),
        ),
        Err(e) => step(name, Verdict::Fail, e.to_string(), None, Some(runbook::UPDATE_SET)),
    }
}

/// Who holds the instance's keeper lease, and whose claims keep credentials waiting. Reads
/// only: `check` never takes the lease.
async fn lease_step(instance: &Instance, settings: &Settings) -> Step {
    let name = "lease";
    let view = match instance.read_lease().await {
        Ok(view) => view,
        Err(e) if e.endpoint_missing() => return step(
            name,
            Verdict::Fail,
            format!("the companion has no /lease endpoint: {e}"),
            Some("update the companion from migrations-docs/ (import the current update set): without the lease the keeper refreshes nothing, so that two keepers can never spend one refresh token".into()),
            Some(runbook::UPDATE_SET),
        ),
        Err(e) => return step(name, Verdict::Fail, e.to_string(), None, Some(runbook::UPDATE_SET)),
    };
    // This machine's keeper, when its journal exists: "(this keeper)" beside its id.
    let own = Journal::open_read_only(&settings.state.dir)
        .ok()
        .flatten()
        .map(|journal| crate::lease::own_holder_id(&journal));
    let mine = |holder: &str| {
        if own.as_deref() == Some(holder) {
            " (this keeper)"
        } else {
            ""
        }
    };
    let held = match &view.holder {
        Some(holder) => format!(
            "held by keeper {holder}{}{} for {} more second(s), fence {}",
            mine(holder),
            view.pid
                .map(|p| format!(", process {p}"))
                .unwrap_or_default(),
            view.expires_in.as_secs(),
            view.fence
        ),
        None if view.fence == 0 => "never taken yet: the first keeper to run takes it".into(),
        None => format!(
            "free (the last holder's lease, fence {}, ended): the next keeper to run takes it",
            view.fence
        ),
    };
    let mut by_holder: std::collections::BTreeMap<&str, usize> = Default::default();
    for claim in &view.claims {
        *by_holder.entry(claim.holder.as_str()).or_default() += 1;
    }
    // Claims of a keeper that does not hold the lease keep their credentials from every other
    // keeper: right while it delivers its journal, wrong once it is gone for good.
    let idle: Vec<String> = by_holder
        .iter()
        .filter(|(holder, _)| view.holder.as_deref() != Some(**holder))
        .map(|(holder, n)| format!("{holder}{} claims {n} credential(s)", mine(holder)))
        .collect();
    let claims = match by_holder.values().sum::<usize>() {
        0 => "no credential is claimed".to_string(),
        n => format!("{n} credential(s) claimed by {} keeper(s)", by_holder.len()),
    };
    // This keeper's journal under another host name: a renamed host or a copied state
    // directory, and only the operator can tell which.
    let twin = own.as_deref().and_then(|own| {
        view.holder
            .as_deref()
            .into_iter()
            .chain(by_holder.keys().copied())
            .find(|other| crate::domain::lease::is_twin(own, other))
            .map(str::to_owned)
    });
    if let Some(twin) = twin {
        step(
            name,
            Verdict::Warn,
            format!("{held}; {claims}; keeper {twin} names this keeper's journal"),
            Some(crate::domain::guidance::lease_twin(&twin)),
            None,
        )
    } else if idle.is_empty() {
        pass(name, format!("{held}; {claims}"))
    } else {
        step(
            name,
            Verdict::Warn,
            format!("{held}; {claims}; without the lease: {}", idle.join("; ")),
            Some("a keeper without the lease keeps its claims until its journal delivers them (start it again, or let it run); if a keeper is gone for good with its journal, `sn-oauth-keeper lease drop-claims --holder <id>` frees its credentials".into()),
            None,
        )
    }
}

/// Whether the configured key opens every answer waiting in the journal: a record sealed with
/// another key holds back its credential until the right key is configured.
fn pending_records_step(settings: &Settings, env: &dyn Env) -> Step {
    let name = "journal records";
    let journal = match Journal::open_read_only(&settings.state.dir) {
        Ok(Some(journal)) => journal,
        Ok(None) => return pass(name, "no journal yet"),
        Err(e) => {
            return step(
                name,
                Verdict::Fail,
                e.to_string(),
                None,
                Some(runbook::CONFIG),
            );
        }
    };
    let Ok(key) = settings.state.key.resolve(&settings.source, env) else {
        return skipped(name, "the journal key is not readable");
    };
    match journal.records_open_with(&key) {
        Ok(records) if records.is_empty() => pass(name, "nothing pending"),
        Ok(records) => {
            let unreadable: Vec<String> = records
                .iter()
                .filter_map(|r| {
                    r.opens
                        .as_ref()
                        .err()
                        .map(|e| format!("{} ({}): {e}", r.summary.id, r.summary.credential))
                })
                .collect();
            if unreadable.is_empty() {
                pass(
                    name,
                    format!(
                        "the configured key opens all {} pending record(s)",
                        records.len()
                    ),
                )
            } else {
                step(
                    name,
                    Verdict::Fail,
                    format!(
                        "{} of {} pending record(s) do not open with the configured key: {}",
                        unreadable.len(),
                        records.len(),
                        unreadable.join("; ")
                    ),
                    Some("configure the key these records were sealed with (their key id is shown); records are never discarded, and their credentials are not refreshed until they open".into()),
                    Some(runbook::CONFIG),
                )
            }
        }
        Err(e) => step(
            name,
            Verdict::Fail,
            e.to_string(),
            None,
            Some(runbook::CONFIG),
        ),
    }
}

fn time_zone_step(time_zone: &str) -> Step {
    let name = "time zone";
    let fix = Some("set the integration user's time zone to UTC".to_string());
    match time_zone {
        "" => step(
            name,
            Verdict::Warn,
            "the integration user has no time zone (the system default applies); the keeper verifies each write and corrects it with a second PATCH if needed",
            fix,
            Some(runbook::USER),
        ),
        "UTC" | "GMT" | "Etc/UTC" | "Etc/GMT" => pass(
            name,
            format!("the integration user's time zone is {time_zone}"),
        ),
        other => match jiff::tz::TimeZone::get(other) {
            Ok(_) => pass(
                name,
                format!(
                    "the integration user's time zone is {other}; the keeper converts expiry times to it"
                ),
            ),
            Err(_) => step(
                name,
                Verdict::Warn,
                format!(
                    "unknown time zone {other:?}; the keeper will verify and correct each write"
                ),
                fix,
                Some(runbook::USER),
            ),
        },
    }
}

fn date_format_step(date_format: &str) -> Step {
    let name = "date format";
    match date_format {
        "" | "yyyy-MM-dd" => pass(
            name,
            "the integration user reads and writes dates as yyyy-MM-dd (the system default)",
        ),
        other => step(
            name,
            Verdict::Warn,
            format!(
                "the integration user's date format is {other:?}: display-value writes of expires are read in it, so the keeper verifies and corrects each write"
            ),
            Some("clear the integration user's date format (system default yyyy-MM-dd)".into()),
            Some(runbook::USER),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_discovery_field_maps_to_the_acl_that_grants_it() {
        assert_eq!(acl_of("expires"), "oauth_credential.expires (read)");
        assert_eq!(acl_of("peer.token_url"), "oauth_entity.token_url (read)");
        assert_eq!(acl_of("peer.sys_updated_on"), "oauth_entity (read)");
        assert_eq!(acl_of("sys_mod_count"), "oauth_credential (read)");
    }

    #[test]
    fn exit_codes() {
        let ok = Checklist {
            steps: vec![pass("a", "x"), skipped("b", "y")],
            instance_refused: false,
        };
        assert_eq!(ok.exit_code(), 0);
        let failed = Checklist {
            steps: vec![step("a", Verdict::Fail, "x", None, Some(2))],
            instance_refused: false,
        };
        assert_eq!(failed.exit_code(), 1);
        assert!(failed.render().contains("[FAIL] a: x"));
        let refused = Checklist {
            steps: Vec::new(),
            instance_refused: true,
        };
        assert_eq!(refused.exit_code(), 3);
    }
}
