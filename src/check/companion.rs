//! The companion's steps: it answers (role, allowed user, lock-down), decrypts a refresh token,
//! proves writes through `/verify`, and shows who holds the keeper lease. `run_with` skips all
//! but the first when the companion does not answer.

use super::{KEEPER_ROLE, Step, Verdict, pass, runbook, skipped, step, text};
use crate::config::Settings;
use crate::journal::Journal;
use crate::servicenow::{Instance, SnError};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

/// Whether the companion answers at `instance.companion_path` and lets the integration user in.
pub(super) async fn companion_step(instance: &Instance, settings: &Settings) -> Step {
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
pub(super) async fn decrypt_step(instance: &Instance, rows: Option<&[Map<String, Value>]>) -> Step {
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
pub(super) async fn verify_endpoint_step(instance: &Instance) -> Step {
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
pub(super) async fn lease_step(instance: &Instance, settings: &Settings) -> Step {
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
