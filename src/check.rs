//! `check`: the pre-flight checklist. Each step says what it verified or, on failure, what to fix.
//! Nothing here changes a real credential.

use crate::config::{Env, Settings};
use crate::servicenow::{CREDENTIAL_FIELDS, Instance, RetryPolicy, SnError};
use serde::Serialize;
use serde_json::{Map, Value};

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

    /// The checklist as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            let mark = match step.verdict {
                Verdict::Pass => "ok  ",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
            };
            out.push_str(&format!("[{mark}] {}: {}\n", step.name, step.detail));
            if let Some(fix) = &step.fix {
                out.push_str(&format!("       fix: {fix}\n"));
            }
        }
        out
    }
}

fn step(
    name: &'static str,
    verdict: Verdict,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Step {
    Step {
        name,
        verdict,
        detail: detail.into(),
        fix,
    }
}

/// Runs every step against the live instance.
pub async fn run(settings: &Settings, env: &dyn Env) -> Checklist {
    let mut steps = vec![step(
        "config",
        Verdict::Pass,
        format!("{} is valid", settings.source),
        None,
    )];
    match settings.state.key.resolve(&settings.source, env) {
        Ok(_) => steps.push(step("journal key", Verdict::Pass, "the journal key is readable and 32 bytes long", None)),
        Err(e) => steps.push(step(
            "journal key",
            Verdict::Fail,
            e.to_string(),
            Some("provide a 32-byte key, e.g. `openssl rand -hex 32`, through state.key_env or state.key_file".into()),
        )),
    }
    steps.push(state_dir_step(settings));

    let instance = match Instance::new(
        &settings.instance,
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
    ) {
        Ok(i) => i,
        Err(e) => {
            steps.push(step("reachability", Verdict::Fail, e.to_string(), None));
            return Checklist {
                steps,
                instance_refused: true,
            };
        }
    };
    let user = match instance.integration_user().await {
        Ok(user) => {
            steps.push(step(
                "reachability",
                Verdict::Pass,
                format!("{} answers", settings.instance.url),
                None,
            ));
            steps.push(step(
                "authentication",
                Verdict::Pass,
                format!("signed in as {}", settings.instance.username),
                None,
            ));
            Some(user)
        }
        Err(e @ (SnError::Unreachable(_) | SnError::NoAnswer(_))) => {
            steps.push(step(
                "reachability",
                Verdict::Fail,
                e.to_string(),
                Some("check instance.url, DNS, proxy settings (HTTPS_PROXY) and firewalls".into()),
            ));
            return Checklist {
                steps,
                instance_refused: true,
            };
        }
        Err(e @ SnError::Html(_)) => {
            steps.push(step("reachability", Verdict::Fail, e.to_string(), Some("wake the instance (a hibernating developer instance) or check that instance.url points at the instance itself".into())));
            return Checklist {
                steps,
                instance_refused: true,
            };
        }
        Err(e @ SnError::Unauthorized(_)) => {
            steps.push(step(
                "reachability",
                Verdict::Pass,
                format!("{} answers", settings.instance.url),
                None,
            ));
            steps.push(step("authentication", Verdict::Fail, e.to_string(), Some("check the password; with the 2026 Basic-auth restriction, make the user Web Service Access Only or grant snc_basic_auth_api_access".into())));
            return Checklist {
                steps,
                instance_refused: true,
            };
        }
        Err(e) => {
            steps.push(step(
                "reachability",
                Verdict::Pass,
                format!("{} answers", settings.instance.url),
                None,
            ));
            steps.push(step(
                "authentication",
                Verdict::Warn,
                format!("signed in, but the user record is not readable: {e}"),
                Some("grant read on sys_user (time_zone) to the integration user".into()),
            ));
            None
        }
    };

    let rows = match instance
        .sample(
            "oauth_credential",
            "typeINaccess_token,refresh_token",
            CREDENTIAL_FIELDS,
            20,
        )
        .await
    {
        Ok(rows) => {
            steps.push(step(
                "read oauth_credential",
                Verdict::Pass,
                format!("{} row(s) readable in a sample", rows.len()),
                None,
            ));
            rows
        }
        Err(e) => {
            let refused = e.instance_unusable();
            steps.push(step("read oauth_credential", Verdict::Fail, e.to_string(), Some("grant the integration user read on oauth_credential (a role with a table ACL), and tick \"Allow access to this table via web services\"".into())));
            return Checklist {
                steps,
                instance_refused: refused,
            };
        }
    };
    steps.push(fields_step(&rows));
    steps.push(write_step(&instance, settings).await);
    steps.push(match instance.probe_companion().await {
        Ok(()) => step("companion", Verdict::Pass, format!("{} answers and the role is granted", settings.instance.companion_path), None),
        Err(e @ SnError::NotFound(_)) => step("companion", Verdict::Fail, e.to_string(), Some(format!("install the companion from migrations-docs/ or fix instance.companion_path (now {})", settings.instance.companion_path))),
        Err(e @ SnError::Forbidden(_)) => step("companion", Verdict::Fail, e.to_string(), Some("grant the integration user the companion's role".into())),
        Err(e) => step("companion", Verdict::Fail, e.to_string(), None),
    });
    if let Some(user) = user {
        steps.push(time_zone_step(&user.time_zone));
    }
    Checklist {
        steps,
        instance_refused: false,
    }
}

fn state_dir_step(settings: &Settings) -> Step {
    let dir = &settings.state.dir;
    if dir.is_dir() {
        let probe = dir.join(".check-write");
        match std::fs::write(&probe, b"") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                step(
                    "state directory",
                    Verdict::Pass,
                    format!("{} is writable", dir.display()),
                    None,
                )
            }
            Err(e) => step(
                "state directory",
                Verdict::Fail,
                format!("{} is not writable: {e}", dir.display()),
                Some("give the keeper's user write access to state.dir".into()),
            ),
        }
    } else {
        match dir
            .parent()
            .filter(|p| p.as_os_str().is_empty() || p.is_dir())
        {
            Some(_) => step(
                "state directory",
                Verdict::Pass,
                format!("{} will be created on first run", dir.display()),
                None,
            ),
            None => step(
                "state directory",
                Verdict::Fail,
                format!("{} and its parent do not exist", dir.display()),
                Some("create state.dir (mode 0700) for the keeper's user".into()),
            ),
        }
    }
}

fn fields_step(rows: &[Map<String, Value>]) -> Step {
    let Some(first) = rows.first() else {
        return step(
            "read fields",
            Verdict::Warn,
            "no oauth_credential rows to inspect yet",
            Some("authorise at least one OAuth credential, then run check again".into()),
        );
    };
    let missing: Vec<&str> = [
        "type",
        "expires",
        "peer",
        "oauth_requestor_profile",
        "sys_mod_count",
        "peer.token_url",
        "peer.client_id",
    ]
    .into_iter()
    .filter(|f| !first.contains_key(*f))
    .collect();
    if !missing.is_empty() {
        return step(
            "read fields",
            Verdict::Fail,
            format!(
                "fields hidden from the integration user: {}",
                missing.join(", ")
            ),
            Some("grant field-level read on those oauth_credential and oauth_entity fields".into()),
        );
    }
    let refresh_rows: Vec<&Map<String, Value>> = rows
        .iter()
        .filter(|r| r.get("type").and_then(Value::as_str) == Some("refresh_token"))
        .collect();
    let unreadable_registry = refresh_rows.iter().any(|r| {
        let peer = r.get("peer").and_then(Value::as_str).unwrap_or("");
        let url = r
            .get("peer.token_url")
            .and_then(Value::as_str)
            .unwrap_or("");
        !peer.is_empty() && url.is_empty()
    });
    if unreadable_registry {
        return step(
            "read fields",
            Verdict::Fail,
            "oauth_entity.token_url reads empty through peer",
            Some(
                "grant read on oauth_entity (name, client_id, token_url) to the integration user"
                    .into(),
            ),
        );
    }
    step(
        "read fields",
        Verdict::Pass,
        "credential and registry fields are readable",
        None,
    )
}

/// Proves write rights without changing anything: a PATCH that sets `scopes` to its current value
/// on an access row the keeper itself created.
async fn write_step(instance: &Instance, settings: &Settings) -> Step {
    let query = format!(
        "type=access_token^sys_created_by={}",
        settings.instance.username
    );
    let rows = match instance
        .sample("oauth_credential", &query, "sys_id,scopes", 1)
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            return step(
                "write oauth_credential",
                Verdict::Warn,
                format!("could not look for a row to probe: {e}"),
                None,
            );
        }
    };
    let Some(row) = rows.first() else {
        return step("write oauth_credential", Verdict::Warn, "not verified: no access row created by the keeper yet (the first refresh will prove it)", Some("grant write on oauth_credential (token_received, expires) and create on oauth_credential".into()));
    };
    let sys_id = row
        .get("sys_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let scopes = row
        .get("scopes")
        .cloned()
        .unwrap_or(Value::String(String::new()));
    let mut fields = Map::new();
    fields.insert("scopes".into(), scopes);
    match instance.patch_credential(&sys_id, fields, false).await {
        Ok(_) => step("write oauth_credential", Verdict::Pass, "a no-change PATCH on a keeper-created row succeeded", None),
        Err(e) => step("write oauth_credential", Verdict::Fail, e.to_string(), Some("grant write on oauth_credential (token_received, expires, scopes) to the integration user".into())),
    }
}

fn time_zone_step(time_zone: &str) -> Step {
    match time_zone {
        "" => step(
            "time zone",
            Verdict::Warn,
            "the integration user has no time zone (the system default applies); the keeper verifies each write and corrects it with a second PATCH if needed",
            Some("set the integration user's time zone to UTC".into()),
        ),
        "UTC" | "GMT" | "Etc/UTC" | "Etc/GMT" => step(
            "time zone",
            Verdict::Pass,
            format!("the integration user's time zone is {time_zone}"),
            None,
        ),
        other => match jiff::tz::TimeZone::get(other) {
            Ok(_) => step(
                "time zone",
                Verdict::Pass,
                format!(
                    "the integration user's time zone is {other}; the keeper converts expiry times to it"
                ),
                None,
            ),
            Err(_) => step(
                "time zone",
                Verdict::Warn,
                format!(
                    "unknown time zone {other:?}; the keeper will verify and correct each write"
                ),
                Some("set the integration user's time zone to UTC".into()),
            ),
        },
    }
}
