//! The steps on the integration user's own `sys_user` record: Web Service Access Only, its
//! time zone and its date format, which decide how Basic auth and `expires` behave.

use super::{Step, Verdict, pass, runbook, skipped, step};
use serde_json::{Map, Value};

/// `sys_user.web_service_access_only`: whether Basic auth survives the 2026 restriction, and
/// whether the account can log in interactively.
pub(super) fn web_service_access_step(user: Option<&Map<String, Value>>, oauth: bool) -> Step {
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

/// The integration user's time zone: UTC is best; a known zone works; none or an unknown one
/// leaves each write to be verified and corrected.
pub(super) fn time_zone_step(time_zone: &str) -> Step {
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

/// The integration user's date format, in which display-value writes of `expires` are read.
pub(super) fn date_format_step(date_format: &str) -> Step {
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
