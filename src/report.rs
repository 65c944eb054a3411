//! Renderings of the estate for people (aligned tables) and scripts (JSON). No secret ever
//! reaches these types: they are built from cycle reports, which hold none.

use crate::domain::report::{
    CredentialReport, CycleReport, Hold, LeaseStatus, Outcome, OutcomeKind,
};
use crate::domain::scrub::printable;
use crate::domain::time::{format_sn_utc, relative};
use crate::journal::Summary;
use jiff::Timestamp;
use serde::Serialize;

/// One `status` row in JSON.
#[derive(Debug, Serialize)]
pub struct StatusRow {
    /// The refresh row's sys_id.
    pub sys_id: String,
    /// The credential's name.
    pub name: String,
    /// The Application Registry's name.
    pub registry: String,
    /// The Application Registry's sys_id.
    pub registry_sys_id: String,
    /// The requestor profile's sys_id.
    pub requestor_profile: String,
    /// fresh / due / missing access token / refresh token expiring / needs re-authorisation.
    pub state: String,
    /// Why, in words.
    pub reason: String,
    /// Whether the next cycle refreshes it.
    pub due: bool,
    /// Access-token expiry (UTC, `YYYY-MM-DD HH:MM:SS`), if any.
    pub access_expires: Option<String>,
    /// Refresh-token row expiry (UTC), if any.
    pub refresh_expires: Option<String>,
    /// The last failure the keeper remembers, if any.
    pub last_error: Option<String>,
    /// When the keeper last refreshed it (UTC), if ever.
    pub last_refreshed: Option<String>,
    /// The keeper whose journal it waits for: that keeper claims it, so no other refreshes it.
    pub waiting_for: Option<String>,
}

/// The instance's keeper lease in `status --format json`.
#[derive(Debug, Serialize)]
pub struct LeaseDocument {
    /// Who holds it (`null`: nobody, or it could not be read).
    pub holder: Option<String>,
    /// Whether the holder is this keeper (this host, this state directory's journal).
    pub this_keeper: bool,
    /// The holder's process id, when the instance knows it.
    pub pid: Option<u64>,
    /// Seconds the holder's lease had left when read.
    pub expires_in_s: Option<u64>,
    /// The lease's fence: it grows by one with each new holder.
    pub fence: Option<u64>,
    /// How many credentials other keepers claim (they wait for those keepers' journals).
    pub claimed_elsewhere: usize,
    /// Why the lease could not be read.
    pub problem: Option<String>,
}

/// The `status --format json` document.
#[derive(Debug, Serialize)]
pub struct StatusDocument {
    /// When the report was made (UTC).
    pub generated_at: String,
    /// Counts by state.
    pub summary: std::collections::BTreeMap<String, usize>,
    /// One row per refresh-token credential.
    pub credentials: Vec<StatusRow>,
    /// The instance's keeper lease (`null` when it was not read).
    pub lease: Option<LeaseDocument>,
}

/// Builds the JSON status document.
pub fn status_document(report: &CycleReport) -> StatusDocument {
    let mut summary = std::collections::BTreeMap::new();
    let credentials = report
        .credentials
        .iter()
        .map(|c| {
            // A daemon's report is of a cycle that acted: its rows say where each credential
            // stands after it, as a `status` run just then would.
            let after = c.assessment_after(report.started);
            *summary.entry(after.state.label().to_string()).or_insert(0) += 1;
            StatusRow {
                sys_id: c.sys_id.clone(),
                name: c.name.clone(),
                registry: c.registry.clone(),
                registry_sys_id: c.registry_id.clone(),
                requestor_profile: c.requestor_profile.clone(),
                state: after.state.label().to_string(),
                reason: after.reason.to_string(),
                due: after.action == crate::domain::plan::Action::Refresh,
                access_expires: c.access_expires.map(format_sn_utc),
                refresh_expires: c.refresh_expires.map(format_sn_utc),
                last_error: c.last_error.clone(),
                last_refreshed: c.last_success.map(format_sn_utc),
                waiting_for: report
                    .lease
                    .as_ref()
                    .and_then(|l| l.claimed_elsewhere.get(&c.sys_id).cloned()),
            }
        })
        .collect();
    StatusDocument {
        generated_at: format_sn_utc(report.started),
        summary,
        credentials,
        lease: report.lease.as_ref().map(|l| LeaseDocument {
            holder: l.holder.clone(),
            this_keeper: l.this_keeper,
            pid: l.pid,
            expires_in_s: l.expires_in.map(|d| d.as_secs()),
            fence: l.fence,
            claimed_elsewhere: l.claimed_elsewhere.len(),
            problem: l.problem.clone(),
        }),
    }
}

/// One line on the instance's keeper lease: who holds it, for how long, what waits.
pub fn lease_line(lease: &LeaseStatus) -> String {
    let held = match (&lease.holder, &lease.problem) {
        (Some(holder), _) => format!(
            "held by keeper {holder}{}{}{}",
            if lease.this_keeper {
                " (this keeper)"
            } else {
                ""
            },
            lease
                .pid
                .map(|p| format!(", process {p}"))
                .unwrap_or_default(),
            lease
                .expires_in
                .map(|d| format!(", {} s left", d.as_secs()))
                .unwrap_or_default(),
        ),
        (None, Some(problem)) => format!("unknown: {problem}"),
        (None, None) => "free: the next keeper to run takes it".to_string(),
    };
    let waiting = match lease.claimed_elsewhere.len() {
        0 => String::new(),
        n => format!("; {n} credential(s) wait for another keeper's journal"),
    };
    format!("lease: {held}{waiting}\n")
}

/// Renders rows as an aligned table with a header line.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    table_painted(headers, rows, |_, _| None)
}

/// An ANSI SGR sequence (e.g. `"1"` bold, `"31"` red) that [`table_painted`] wraps a cell in.
pub type Paint = Option<&'static str>;

/// Whether tables written to stdout may be coloured: only on a terminal, never with `NO_COLOR`
/// set (no-color.org) or on a `dumb` terminal. Pipes and files always get plain text.
pub fn colour_stdout() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// Like [`table`], with `paint(row, column)` choosing a colour per cell (`row` is `None` for
/// the header). Widths are measured on the plain text, so colour never breaks the alignment.
pub fn table_painted(
    headers: &[&str],
    rows: &[Vec<String>],
    paint: impl Fn(Option<usize>, usize) -> Paint,
) -> String {
    // Whatever a cell holds (a name from the instance, an error text), a terminal shows it and
    // obeys nothing in it.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |row: Option<usize>, cells: Vec<&str>| {
        let mut out = String::new();
        let last = cells.iter().rposition(|c| !c.is_empty()).unwrap_or(0);
        for (i, cell) in cells.iter().enumerate().take(last + 1) {
            match paint(row, i).filter(|_| !cell.is_empty()) {
                Some(sgr) => out.push_str(&format!("\x1b[{sgr}m{cell}\x1b[0m")),
                None => out.push_str(cell),
            }
            if i < last {
                let width = widths.get(i).copied().unwrap_or(0);
                out.push_str(&" ".repeat(width.saturating_sub(cell.chars().count()) + 2));
            }
        }
        out
    };
    let mut out = line(None, headers.to_vec());
    out.push('\n');
    for (r, row) in rows.iter().enumerate() {
        out.push_str(&line(Some(r), row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

fn when(now: Timestamp, ts: Option<Timestamp>) -> String {
    match ts {
        Some(t) => relative(now, t),
        None => "—".to_string(),
    }
}

/// Credentials in reading order for people: by registry, then name.
pub(crate) fn by_registry(report: &CycleReport) -> Vec<&CredentialReport> {
    let mut list: Vec<&CredentialReport> = report.credentials.iter().collect();
    list.sort_by(|a, b| (&a.registry, &a.name, &a.sys_id).cmp(&(&b.registry, &b.name, &b.sys_id)));
    list
}

/// The `status` table.
pub fn status_table(report: &CycleReport) -> String {
    status_table_painted(report, false)
}

/// The colour of a credential state: red when a person must act, yellow when the keeper is on
/// it, green when all is well.
fn state_paint(state: crate::domain::plan::State) -> Paint {
    use crate::domain::plan::State;
    match state {
        State::Fresh => Some("32"),
        State::Due | State::MissingAccessToken | State::RefreshTokenExpiring => Some("33"),
        State::NeedsReauth => Some("1;31"),
    }
}

/// The `status` table, with bold headers, coloured states and red errors when `colour` is
/// set (see [`colour_stdout`]).
pub fn status_table_painted(report: &CycleReport, colour: bool) -> String {
    let now = report.started;
    let listed = by_registry(report);
    let states: Vec<_> = listed.iter().map(|c| c.assessment.state).collect();
    let rows: Vec<Vec<String>> = listed
        .into_iter()
        .map(|c| {
            vec![
                short(&c.name, 28),
                short(&c.sys_id, 8),
                short(&c.registry, 24),
                short(&c.requestor_profile, 8),
                c.assessment.state.label().to_string(),
                when(now, c.access_expires),
                when(now, c.refresh_expires),
                c.last_error
                    .as_deref()
                    .map(|e| short(e, 60))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = table_painted(
        &[
            "CREDENTIAL",
            "SYS_ID",
            "REGISTRY",
            "PROFILE",
            "STATE",
            "ACCESS EXPIRES",
            "REFRESH EXPIRES",
            "LAST ERROR",
        ],
        &rows,
        |row, column| match (colour, row, column) {
            (false, _, _) => None,
            (true, None, _) => Some("1"),
            (true, Some(r), 4) => states.get(r).and_then(|s| state_paint(*s)),
            (true, Some(_), 7) => Some("31"),
            _ => None,
        },
    );
    out.push_str(&summary_line(report));
    if let Some(lease) = &report.lease {
        out.push_str(&lease_line(lease));
    }
    out
}

/// A one-line count of states.
pub fn summary_line(report: &CycleReport) -> String {
    let doc = status_document(report);
    let parts: Vec<String> = doc
        .summary
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    format!(
        "{} credentials: {}\n",
        report.credentials.len(),
        parts.join(", ")
    )
}

fn outcome_cell(c: &CredentialReport) -> String {
    match &c.outcome {
        Outcome::Refreshed {
            rotated,
            created_access_row,
        } => {
            let mut s = "refreshed".to_string();
            if *created_access_row {
                s.push_str(", access row created");
            }
            if *rotated {
                s.push_str(", refresh token rotated");
            }
            s
        }
        Outcome::Failed { class, message } => format!("FAILED ({class}): {}", short(message, 90)),
        Outcome::Blocked {
            hold: Hold::Person(_),
            message,
        } => format!("needs a person: {}", short(message, 90)),
        Outcome::Blocked { message, .. } => {
            format!("left to another keeper: {}", short(message, 90))
        }
        other => other.label().to_string(),
    }
}

/// The "before" table of `demo` and `once --dry-run`: state and reason per credential.
pub fn plan_table(report: &CycleReport) -> String {
    let now = report.started;
    let rows: Vec<Vec<String>> = by_registry(report)
        .into_iter()
        .map(|c| {
            vec![
                short(&c.name, 32),
                short(&c.registry, 26),
                c.assessment.state.label().to_string(),
                when(now, c.access_expires),
                c.assessment.reason.to_string(),
            ]
        })
        .collect();
    table(
        &["CREDENTIAL", "REGISTRY", "STATE", "ACCESS EXPIRES", "WHY"],
        &rows,
    )
}

/// The table of what a cycle did.
pub fn outcome_table(report: &CycleReport) -> String {
    let now = report.started;
    let rows: Vec<Vec<String>> = by_registry(report)
        .into_iter()
        .map(|c| {
            vec![
                short(&c.name, 32),
                short(&c.registry, 26),
                when(now, c.access_expires),
                outcome_cell(c),
            ]
        })
        .collect();
    table(
        &[
            "CREDENTIAL",
            "REGISTRY",
            "ACCESS EXPIRES",
            "WHAT THE KEEPER DID",
        ],
        &rows,
    )
}

/// `once`'s table: [`outcome_table`] of the credentials the cycle acted on (every outcome but
/// skipped); nothing when it acted on none.
pub fn acted_table(report: &CycleReport) -> String {
    let acted: Vec<CredentialReport> = report
        .credentials
        .iter()
        .filter(|c| c.outcome != Outcome::Skipped)
        .cloned()
        .collect();
    if acted.is_empty() {
        return String::new();
    }
    outcome_table(&CycleReport {
        credentials: acted,
        ..report.clone()
    })
}

/// A closing summary of a cycle.
pub fn cycle_summary(report: &CycleReport) -> String {
    let for_another_keeper = report
        .credentials
        .iter()
        .filter(|c| {
            matches!(
                &c.outcome,
                Outcome::Blocked { hold, .. } if !matches!(hold, Hold::Person(_))
            )
        })
        .count();
    let elsewhere = if for_another_keeper > 0 {
        format!(", {for_another_keeper} left to another keeper")
    } else {
        String::new()
    };
    format!(
        "{} rows read, {} credentials: {} refreshed, {} re-delivered, {} failed, {} need a person{elsewhere}, {} left alone ({} ms)\n",
        report.rows,
        report.credentials.len(),
        report.count(OutcomeKind::Refreshed),
        report.count(OutcomeKind::Redelivered),
        report.count(OutcomeKind::Failed),
        report.count(OutcomeKind::Blocked) - for_another_keeper,
        report.count(OutcomeKind::Skipped),
        report.duration.as_millis()
    )
}

/// `once --dry-run`: what would be refreshed and why.
pub fn dry_run_table(report: &CycleReport) -> String {
    let now = report.started;
    let rows: Vec<Vec<String>> = by_registry(report)
        .into_iter()
        .filter(|c| c.outcome != Outcome::Skipped)
        .map(|c| {
            vec![
                short(&c.name, 32),
                short(&c.sys_id, 8),
                short(&c.registry, 26),
                c.outcome.label().to_string(),
                when(now, c.access_expires),
                match &c.outcome {
                    Outcome::Blocked { message, .. } => short(message, 90),
                    _ => c.assessment.reason.to_string(),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        return format!(
            "nothing is due ({} credentials, all fresh)\n",
            report.credentials.len()
        );
    }
    table(
        &[
            "CREDENTIAL",
            "SYS_ID",
            "REGISTRY",
            "ACTION",
            "ACCESS EXPIRES",
            "WHY",
        ],
        &rows,
    )
}

/// One line of `journal list`: a pending record, and whether the configured key opens it. As
/// JSON, the summary's fields are its own (`journal list --format json`).
#[derive(Debug, Serialize)]
pub struct JournalEntry {
    /// The record as the journal lists it: ids, registry, age, attempts — never a token.
    #[serde(flatten)]
    pub summary: Summary,
    /// `None` when no key is configured (the list needs none).
    pub opens: Option<bool>,
    /// Why it does not open.
    pub problem: Option<String>,
}

/// The `journal list` table, ages relative to `now`; for an empty journal, the sentence that
/// says every answer arrived.
pub fn journal_table(entries: &[JournalEntry], now: Timestamp) -> String {
    if entries.is_empty() {
        return "the journal is empty: every token answer reached ServiceNow\n".to_string();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|l| {
            let s = &l.summary;
            let age = relative(now, s.created_at);
            let opens = match (l.opens, &l.problem) {
                (Some(true), _) => "yes".to_string(),
                (Some(false), Some(problem)) => format!("NO: {problem}"),
                (Some(false), None) => "NO".to_string(),
                (None, _) => "? (no key)".to_string(),
            };
            vec![
                s.id.clone(),
                s.credential.clone(),
                s.registry.clone(),
                age,
                s.attempts.to_string(),
                if s.refresh_delivered { "yes" } else { "no" }.to_string(),
                opens,
                s.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "RECORD",
            "CREDENTIAL",
            "REGISTRY",
            "JOURNALED",
            "ATTEMPTS",
            "REFRESH ROW WRITTEN",
            "OPENS",
            "LAST ERROR",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::report::fixtures::{at, due};
    use std::time::Duration;

    fn pending(id: &str, opens: Option<bool>, problem: Option<&str>) -> JournalEntry {
        JournalEntry {
            summary: Summary {
                id: id.into(),
                credential: format!("cred-{id}"),
                registry: "Graph".into(),
                created_at: at(0),
                attempts: 2,
                refresh_delivered: opens.is_none(),
                last_error: problem.map(|_| "HTTP 503".to_string()),
                key_id: "k1".into(),
            },
            opens,
            problem: problem.map(str::to_string),
        }
    }

    #[test]
    fn the_journal_table_says_whether_each_record_opens() {
        let entries = [
            pending("j1", Some(true), None),
            pending("j2", Some(false), Some("sealed with key k2")),
            pending("j3", Some(false), None),
            pending("j4", None, None),
        ];
        assert_eq!(
            journal_table(&entries, at(7_200)),
            "RECORD  CREDENTIAL  REGISTRY  JOURNALED  ATTEMPTS  REFRESH ROW WRITTEN  OPENS                   LAST ERROR\n\
             j1      cred-j1     Graph     2h ago     2         no                   yes\n\
             j2      cred-j2     Graph     2h ago     2         no                   NO: sealed with key k2  HTTP 503\n\
             j3      cred-j3     Graph     2h ago     2         no                   NO\n\
             j4      cred-j4     Graph     2h ago     2         yes                  ? (no key)\n"
        );
        assert_eq!(
            journal_table(&[], at(0)),
            "the journal is empty: every token answer reached ServiceNow\n"
        );
    }

    #[test]
    fn a_journal_entry_in_json_carries_the_summary_fields_beside_its_own() {
        let json =
            serde_json::to_value(pending("j2", Some(false), Some("sealed with key k2"))).unwrap();
        assert_eq!(json["id"], "j2");
        assert_eq!(json["credential"], "cred-j2");
        assert_eq!(json["key_id"], "k1");
        assert_eq!(json["opens"], false);
        assert_eq!(json["problem"], "sealed with key k2");
        assert!(json.get("summary").is_none(), "{json}");
    }

    #[test]
    fn the_acted_table_leaves_out_what_the_cycle_skipped() {
        let mut report = CycleReport {
            started: at(0),
            duration: Duration::from_millis(900),
            rows: 4,
            credentials: vec![
                due(Outcome::Skipped),
                due(Outcome::Refreshed {
                    rotated: true,
                    created_access_row: false,
                }),
            ],
            lease: None,
        };
        assert_eq!(
            acted_table(&report),
            "CREDENTIAL  REGISTRY  ACCESS EXPIRES  WHAT THE KEEPER DID\n\
             Mailbox     Graph     in 60m          refreshed, refresh token rotated\n"
        );
        report.credentials.truncate(1);
        assert_eq!(acted_table(&report), "");
    }

    #[test]
    fn held_back_credentials_say_who_they_wait_for() {
        let blocked = |hold: Hold, message: &str| {
            due(Outcome::Blocked {
                hold,
                message: message.into(),
            })
        };
        let report = CycleReport {
            started: at(0),
            duration: Duration::from_millis(900),
            rows: 6,
            credentials: vec![
                blocked(
                    Hold::Person(crate::domain::classify::FailureClass::NeedsReauth),
                    "re-authorise it",
                ),
                blocked(
                    Hold::ClaimedBy("vm/j1".into()),
                    "waiting for keeper vm/j1's journal",
                ),
                blocked(Hold::NoLease, "the lease is held by keeper vm/j2"),
            ],
            lease: None,
        };
        let table = acted_table(&report);
        assert!(table.contains("needs a person: re-authorise it"), "{table}");
        assert!(
            table.contains("left to another keeper: waiting for keeper vm/j1's journal"),
            "{table}"
        );
        assert!(
            table.contains("left to another keeper: the lease is held by keeper vm/j2"),
            "{table}"
        );
        let summary = cycle_summary(&report);
        assert!(
            summary.contains("0 failed, 1 need a person, 2 left to another keeper, 0 left alone"),
            "{summary}"
        );
        let alone = CycleReport {
            credentials: vec![due(Outcome::Skipped)],
            ..report
        };
        assert!(
            !cycle_summary(&alone).contains("another keeper"),
            "{}",
            cycle_summary(&alone)
        );
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz\n");
    }

    #[test]
    fn colour_wraps_cells_without_moving_columns() {
        let rows = vec![
            vec!["a".to_string(), "fresh".to_string(), "x".to_string()],
            vec!["bbb".to_string(), "due".to_string(), String::new()],
        ];
        let plain = table(&["N", "STATE", "E"], &rows);
        let painted = table_painted(&["N", "STATE", "E"], &rows, |row, col| match (row, col) {
            (None, _) => Some("1"),
            (Some(_), 1) => Some("32"),
            _ => None,
        });
        assert_ne!(plain, painted);
        let stripped = painted
            .replace("\x1b[1m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
        assert!(painted.contains("\x1b[32mfresh\x1b[0m  x"), "{painted:?}");
    }

    #[test]
    fn a_cell_cannot_command_the_terminal() {
        let t = table(
            &["NAME", "X"],
            &[vec![
                "\x1b]0;owned\x07Mail\x1b[2J\r\nbox".into(),
                "y".into(),
            ]],
        );
        assert_eq!(t, "NAME       X\nMail  box  y\n");
    }

    #[test]
    fn shortening_keeps_width() {
        assert_eq!(short("abcdef", 4), "abc…");
        assert_eq!(short("abc", 4), "abc");
    }
}
