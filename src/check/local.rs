//! The steps on this machine, before the instance is asked anything: the state directory is
//! writable, and the configured key opens every record waiting in the journal.

use super::{Step, Verdict, pass, runbook, skipped, step};
use crate::config::{Env, Settings};
use crate::journal::Journal;

/// Whether `state.dir` is writable, or can be created on the first run.
pub(super) fn state_dir_step(settings: &Settings) -> Step {
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

/// Whether the configured key opens every answer waiting in the journal: a record sealed with
/// another key holds back its credential until the right key is configured.
pub(super) fn pending_records_step(settings: &Settings, env: &dyn Env) -> Step {
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
