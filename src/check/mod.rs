//! `check`: the pre-flight checklist. Each step verifies one step of the runbook in
//! `migrations-docs/README.md` on the live instance and, when it fails, names that runbook step
//! and the fix. Nothing here changes a real credential: the write probe is a PATCH that sets a
//! field to the value it already has, on a row the keeper itself created, and is verified to
//! have changed nothing.

use crate::config::{Env, InstanceAuthSettings, InstanceGrant, Settings};
use crate::domain::credential::pair;
use crate::domain::endpoint::Routes;
use crate::servicenow::transcript::Recorder;
use crate::servicenow::{CREDENTIAL_FIELDS, Instance, RetryPolicy, SnError};
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

mod companion;
mod local;
pub mod round_trip;
mod user;

use companion::{companion_step, decrypt_step, lease_step, verify_endpoint_step};
use local::{pending_records_step, state_dir_step};
use user::{date_format_step, time_zone_step, web_service_access_step};

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
