//! `check --round-trip`: before the first real refresh, the keeper proves its whole write path
//! on a scratch credential of its own (see [`crate::servicenow::scratch`]). It creates an access
//! row under a registry that is never refreshed, exactly as it creates a real one (display-value
//! input, `expires` in the integration user's zone), reads it back and asks the companion about
//! it, then deletes it — also when a step failed. Each belief the keeper's writes rest on is one
//! step with its verdict and fix.

use super::{KEEPER_ROLE, Step, Verdict, runbook, skipped, step};
use crate::clock::{Clock, SystemClock};
use crate::domain::time::format_sn_utc;
use crate::servicenow::scratch::{SCRATCH_NAME_PREFIX, ScratchRow, ScratchWrite};
use crate::servicenow::{Instance, SnError, TokenDigest};
use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use secrecy::{ExposeSecret, SecretString};

/// The steps in order, by name (also what `check` without `--round-trip` lists as unproven).
pub const ROUND_TRIP_STEPS: &[&str] = &[
    LEFTOVERS, REGISTRY, CREATE, REFERENCES, EXPIRES, ENCRYPTED, VERIFIES, DELETE,
];

const LEFTOVERS: &str = "round trip: leftovers";
const REGISTRY: &str = "round trip: scratch registry";
const CREATE: &str = "round trip: create";
const REFERENCES: &str = "round trip: references";
const EXPIRES: &str = "round trip: expires in UTC";
const ENCRYPTED: &str = "round trip: stored encrypted";
const VERIFIES: &str = "round trip: companion verifies";
const DELETE: &str = "round trip: delete";

/// What to tell when a belief proves wrong and only the keeper's authors can fix it.
const REPORT: &str = "do not run the keeper against this instance yet; report it with the transcript of `sn-oauth-keeper check --round-trip --record DIR` (it holds no secret)";

/// The step `check` shows instead when the round trip was not asked for.
pub fn unproven() -> Step {
    step(
        "round trip",
        Verdict::Warn,
        "not run: on this instance it is still unproven that references sent as sys_ids are stored, that expires lands right in UTC, that tokens are stored encrypted and that the companion reads them back",
        Some("run `sn-oauth-keeper check --round-trip` before the first refresh".into()),
        Some(runbook::FIRST_RUN),
    )
}

/// Runs the round trip under the registry called `registry` as the user `user_sys_id`.
pub async fn run(instance: &Instance, registry: &str, user_sys_id: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    match instance.scratch_leftovers().await {
        Ok(ids) if ids.is_empty() => steps.push(super::pass(
            LEFTOVERS,
            "no scratch row left by an earlier run",
        )),
        Ok(ids) => {
            let mut failed = None;
            for id in &ids {
                if let Err(e) = instance.delete_credential(id).await {
                    failed = Some((id.clone(), e));
                    break;
                }
            }
            steps.push(match failed {
                None => super::pass(
                    LEFTOVERS,
                    format!(
                        "removed {} scratch row(s) an earlier run left: {}",
                        ids.len(),
                        ids.join(", ")
                    ),
                ),
                Some((id, e)) => delete_failed(LEFTOVERS, &id, &e),
            });
        }
        Err(e) => steps.push(step(
            LEFTOVERS,
            Verdict::Fail,
            format!("cannot look for scratch rows: {e}"),
            None,
            Some(runbook::UPDATE_SET),
        )),
    }
    let peer = match instance.registry_id(registry).await {
        Ok(Some(id)) => {
            steps.push(super::pass(
                REGISTRY,
                format!("scratch rows go under the registry {registry} ({id})"),
            ));
            id
        }
        outcome => {
            let found = match outcome {
                Err(e) => e.to_string(),
                _ => format!("no registry named {registry:?} is readable"),
            };
            steps.push(step(
                REGISTRY,
                Verdict::Fail,
                found,
                Some(format!("import the current update set, which provides the registry {:?} (no secret, a token URL that resolves nowhere), or name a registry that is never refreshed with --round-trip-registry", crate::servicenow::scratch::SCRATCH_REGISTRY)),
                Some(runbook::UPDATE_SET),
            ));
            return skip_rest(steps, "there is no scratch registry");
        }
    };
    let token = match scratch_token() {
        Ok(t) => t,
        Err(e) => {
            steps.push(step(
                CREATE,
                Verdict::Fail,
                format!("no randomness for the scratch token: {e}"),
                None,
                None,
            ));
            return skip_rest(steps, "no scratch token");
        }
    };
    let now = SystemClock.now();
    // Whole seconds: the instance stores no fraction.
    let expires = Timestamp::from_second(now.as_second() + 3600).unwrap_or(now);
    let name = format!("{SCRATCH_NAME_PREFIX} {}", format_sn_utc(now));
    let write = ScratchWrite {
        peer: &peer,
        user: user_sys_id,
        token: &token,
        expires,
        name: &name,
    };
    let sys_id = match instance.create_scratch(&write).await {
        Ok(id) => {
            steps.push(super::pass(
                CREATE,
                format!("created the scratch access row {id} under {registry}"),
            ));
            id
        }
        Err(e) => {
            let fix = matches!(e, SnError::Forbidden(_)).then(|| {
                format!("the update set's create ACLs on oauth_credential (table and fields) must grant role {KEEPER_ROLE}")
            });
            steps.push(step(
                CREATE,
                Verdict::Fail,
                e.to_string(),
                fix,
                Some(runbook::UPDATE_SET),
            ));
            return skip_rest(steps, "the scratch row was not created");
        }
    };
    match instance.read_scratch(&sys_id).await {
        Ok(row) => {
            steps.push(references_step(&row, &peer, user_sys_id));
            steps.push(expires_step(&row, expires));
            steps.push(encrypted_step(&row, &token));
        }
        Err(e) => {
            for name in [REFERENCES, EXPIRES, ENCRYPTED] {
                steps.push(step(
                    name,
                    Verdict::Fail,
                    format!("the scratch row {sys_id} cannot be read back: {e}"),
                    None,
                    Some(runbook::UPDATE_SET),
                ));
            }
        }
    }
    steps.push(verify_step(instance, &sys_id, &token).await);
    steps.push(match instance.delete_credential(&sys_id).await {
        Ok(()) => super::pass(DELETE, format!("deleted the scratch row {sys_id}")),
        Err(e) => delete_failed(DELETE, &sys_id, &e),
    });
    steps
}

fn skip_rest(mut steps: Vec<Step>, because: &str) -> Vec<Step> {
    for name in ROUND_TRIP_STEPS {
        if !steps.iter().any(|s| s.name == *name) {
            steps.push(skipped(name, because));
        }
    }
    steps
}

fn delete_failed(name: &'static str, sys_id: &str, e: &SnError) -> Step {
    let acl = matches!(e, SnError::Forbidden(_)).then_some(format!(
        "; the current update set's delete ACL on oauth_credential (rows the keeper created) must grant role {KEEPER_ROLE}"
    ));
    step(
        name,
        Verdict::Fail,
        format!("the scratch row {sys_id} could not be deleted: {e}"),
        Some(format!(
            "delete it by hand (System OAuth > Manage Tokens) or let the next `check --round-trip` remove it{}",
            acl.unwrap_or_default()
        )),
        Some(runbook::UPDATE_SET),
    )
}

/// 32 random bytes, base64url: a token no provider ever issued.
fn scratch_token() -> Result<SecretString, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(SecretString::from(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ))
}

fn references_step(row: &ScratchRow, peer: &str, user: &str) -> Step {
    let wrong: Vec<String> = [("peer", &row.peer, peer), ("user", &row.user, user)]
        .iter()
        .filter(|(_, stored, sent)| stored.as_str() != *sent)
        .map(|(field, stored, sent)| format!("{field} sent {sent}, stored {stored:?}"))
        .collect();
    if wrong.is_empty() {
        return super::pass(
            REFERENCES,
            "peer and user hold the sys_ids sent with sysparm_input_display_value=true (oauth_requestor_profile is written the same way; the scratch row leaves it empty so no integration can pick up its token)",
        );
    }
    step(
        REFERENCES,
        Verdict::Fail,
        format!(
            "the instance does not store sys_ids sent to reference fields with sysparm_input_display_value=true: {}; access rows the keeper creates would be detached from their credential",
            wrong.join("; ")
        ),
        Some(REPORT.into()),
        None,
    )
}

fn expires_step(row: &ScratchRow, sent: Timestamp) -> Step {
    match row.expires {
        Some(stored) if stored == sent => super::pass(
            EXPIRES,
            format!(
                "expires was written in the integration user's zone and stored as {} UTC",
                format_sn_utc(sent)
            ),
        ),
        stored => {
            let shown = stored.map_or_else(
                || "nothing".to_string(),
                |s| format!("{} UTC", format_sn_utc(s)),
            );
            let off = stored.map(|s| SignedDuration::from_secs(s.as_second() - sent.as_second()));
            step(
                EXPIRES,
                Verdict::Fail,
                format!(
                    "expires was meant as {} UTC but stored as {shown}{}: the instance reads display-value date-times in another zone or format than the integration user's record says",
                    format_sn_utc(sent),
                    off.map(|d| format!(" ({d:#} off)")).unwrap_or_default()
                ),
                Some("set the integration user's time zone to UTC and clear its date format; until then the keeper corrects every write with a second PATCH".into()),
                Some(runbook::USER),
            )
        }
    }
}

fn encrypted_step(row: &ScratchRow, token: &SecretString) -> Step {
    match row.token_received.as_deref() {
        None => super::pass(
            ENCRYPTED,
            "token_received is hidden from the integration user (no read ACL, as intended); the companion step proves what was stored",
        ),
        Some(stored) if stored == token.expose_secret() => step(
            ENCRYPTED,
            Verdict::Fail,
            "token_received reads back as the plaintext sent: sysparm_input_display_value=true did not encrypt it",
            Some(REPORT.into()),
            None,
        ),
        Some("") => step(
            ENCRYPTED,
            Verdict::Fail,
            "token_received was not stored (the write was accepted without it)",
            Some(format!(
                "the update set's create and write ACLs on oauth_credential.token_received must grant role {KEEPER_ROLE}"
            )),
            Some(runbook::UPDATE_SET),
        ),
        Some(_) => super::pass(
            ENCRYPTED,
            "token_received is stored, and not as the plaintext sent",
        ),
    }
}

async fn verify_step(instance: &Instance, sys_id: &str, token: &SecretString) -> Step {
    match instance
        .verify_tokens(&[TokenDigest::of(sys_id, token)])
        .await
    {
        Ok(found) => match found.get(sys_id) {
            Some(true) => super::pass(
                VERIFIES,
                "the companion decrypted the scratch token and it is the one written",
            ),
            Some(false) => step(
                VERIFIES,
                Verdict::Fail,
                "the companion read back another token than the one written (or none it could decrypt): what the Table API stores is not what the keeper sent",
                Some(REPORT.into()),
                None,
            ),
            None => step(
                VERIFIES,
                Verdict::Fail,
                format!("the companion does not know the scratch row {sys_id}"),
                Some(REPORT.into()),
                None,
            ),
        },
        Err(e @ SnError::NotFound(_)) | Err(e @ SnError::Status { status: 400, .. }) => step(
            VERIFIES,
            Verdict::Fail,
            format!("the companion has no /verify resource: {e}"),
            Some("update the companion: import the current update set".into()),
            Some(runbook::UPDATE_SET),
        ),
        Err(e) => step(
            VERIFIES,
            Verdict::Fail,
            e.to_string(),
            None,
            Some(runbook::UPDATE_SET),
        ),
    }
}
