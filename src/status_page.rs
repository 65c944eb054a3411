//! The status page of the admin port (`GET /` on `server.listen`): the estate as the daemon's
//! last cycle left it, for people (server-rendered HTML) and scripts (the `status --format json`
//! document). Pure: the daemon gathers a [`PageView`], this module parses the query and renders.
//!
//! The HTML works without JavaScript and without any external asset (inline CSS only, pinned by
//! its hash in the `Content-Security-Policy`), so it is readable air-gapped and on a phone (the
//! tables become cards on narrow screens). Every state is a word with an icon, never a colour
//! alone. Every string that comes from the instance or the journal goes through [`escape`].
//! Nothing secret reaches it: cycle reports, lease views and journal summaries hold none.

use crate::domain::actor::{Actor, who_must_act};
use crate::domain::plan::State;
use crate::domain::report::{CredentialReport, CycleReport, LeaseStatus};
use crate::domain::time::{format_sn_utc, human_duration, relative};
use crate::journal::Summary;
use crate::report::{StatusDocument, by_registry, status_document};
use jiff::Timestamp;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// The page reloads itself (meta refresh) at most this often…
pub const MIN_RELOAD: Duration = Duration::from_secs(5);
/// …and at least this often, whatever `refresh.interval` is.
pub const MAX_RELOAD: Duration = Duration::from_secs(60);

/// Escapes text for HTML element content and quoted attribute values: `&`, `<`, `>`, `"` and
/// `'` become character references, everything else stays as it is.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a request asks the page to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageFormat {
    /// The HTML page (the default).
    #[default]
    Html,
    /// The `status --format json` document (`?format=json`).
    Json,
}

/// Which credentials to show: each list is "any of these" (empty: all), and a credential must
/// match both lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `state=` values as given: state labels, compared loosely (any case; `-`, `_` and spaces
    /// alike; "authorization" or "authorisation").
    pub states: Vec<String>,
    /// `registry=` values as given: a registry's name (any case) or sys_id; a value that names
    /// none is split at its commas.
    pub registries: Vec<String>,
}

/// A parsed query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageQuery {
    /// HTML or JSON.
    pub format: PageFormat,
    /// The credential filter.
    pub filter: Filter,
    /// Parameters the page does not know, by name (the page says it ignored them).
    pub ignored: Vec<String>,
}

/// A query the page refuses (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `format` is neither `html` nor `json`.
    #[error("format must be html or json, not {0:?}")]
    Format(String),
}

/// Splits one parameter value into its comma-separated parts, trimmed, empty ones dropped.
fn parts(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|p| !p.is_empty())
}

impl PageQuery {
    /// Parses a raw query string (`application/x-www-form-urlencoded`, without the `?`).
    /// `state` and `registry` may repeat and each value may list several, comma-separated;
    /// empty values (what the page's own form sends for "any") filter nothing.
    pub fn parse(raw: &str) -> Result<PageQuery, QueryError> {
        let mut query = PageQuery::default();
        for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            match key.as_ref() {
                "format" => {
                    query.format = match value.trim().to_ascii_lowercase().as_str() {
                        "" | "html" => PageFormat::Html,
                        "json" => PageFormat::Json,
                        _ => return Err(QueryError::Format(value.chars().take(40).collect())),
                    }
                }
                "state" => query
                    .filter
                    .states
                    .extend(parts(&value).map(str::to_string)),
                // A registry's name may hold a comma: the whole value is kept, and split only
                // when matching finds no registry by that whole name.
                "registry" if !value.trim().is_empty() => {
                    query.filter.registries.push(value.trim().to_string());
                }
                "registry" => {}
                other => {
                    let name: String = other.chars().take(40).collect();
                    if !query.ignored.contains(&name) {
                        query.ignored.push(name);
                    }
                }
            }
        }
        Ok(query)
    }
}

/// A state label or filter value compared loosely: any case, `-` and `_` as spaces, runs of
/// spaces as one, and the American "authorization" as "authorisation". So `needs_re-authorization`
/// and `Needs re authorisation` both find "needs re-authorisation", `missing_access_token`
/// finds "missing access token".
fn fold(text: &str) -> String {
    text.to_lowercase()
        .replace(['-', '_'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("authoriz", "authoris")
}

/// The credentials a filter lets through, and what the page must say about the filter.
#[derive(Debug)]
pub struct Filtered<'a> {
    /// The matching credentials, by registry then name.
    pub credentials: Vec<&'a CredentialReport>,
    /// Values that matched no state or registry at all, each as a sentence.
    pub unknown: Vec<String>,
}

impl Filter {
    /// Whether it lets everything through.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.registries.is_empty()
    }

    /// The filter as a query string (`state=…&registry=…`; empty for none), for links that keep
    /// it.
    fn to_query(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for state in &self.states {
            query.append_pair("state", state);
        }
        for registry in &self.registries {
            query.append_pair("registry", registry);
        }
        query.finish()
    }

    /// The states asked for, and a sentence per value that names none.
    fn states(&self) -> (Vec<State>, Vec<String>) {
        let mut states = Vec::new();
        let mut unknown = Vec::new();
        for value in &self.states {
            match State::ALL.iter().find(|s| fold(s.label()) == fold(value)) {
                Some(state) => states.push(*state),
                None => unknown.push(format!(
                    "no state is called \"{value}\" (the states are: {})",
                    State::ALL.map(State::label).join(", ")
                )),
            }
        }
        (states, unknown)
    }

    /// The sys_ids of the registries asked for (a name may belong to several), and a sentence
    /// per value that names none in `report`.
    fn registries<'r>(&self, report: &'r CycleReport) -> (Vec<&'r str>, Vec<String>) {
        let matching = |v: &str| -> Vec<&'r str> {
            report
                .credentials
                .iter()
                .filter(|c| c.registry.to_lowercase() == v.to_lowercase() || c.registry_id == v)
                .map(|c| c.registry_id.as_str())
                .collect()
        };
        let mut ids = Vec::new();
        let mut unknown = Vec::new();
        for value in &self.registries {
            let whole = matching(value);
            if !whole.is_empty() {
                ids.extend(whole);
                continue;
            }
            for part in parts(value) {
                let found = matching(part);
                if found.is_empty() {
                    unknown.push(format!(
                        "no credential of the last cycle belongs to a registry called \"{part}\" (by name or sys_id)"
                    ));
                }
                ids.extend(found);
            }
        }
        (ids, unknown)
    }

    /// Applies the filter to a cycle's credentials: a value that names nothing matches nothing
    /// (so a filter of only such values shows an empty list) and is reported in `unknown`.
    pub fn apply<'a>(&self, report: &'a CycleReport) -> Filtered<'a> {
        let (states, mut unknown) = self.states();
        let (registries, unknown_registries) = self.registries(report);
        unknown.extend(unknown_registries);
        let credentials = by_registry(report)
            .into_iter()
            .filter(|c| {
                self.states.is_empty() || states.contains(&c.assessment_after(report.started).state)
            })
            .filter(|c| self.registries.is_empty() || registries.contains(&c.registry_id.as_str()))
            .collect();
        Filtered {
            credentials,
            unknown,
        }
    }
}

/// The `status --format json` document of `report`, with only the credentials `filter` lets
/// through (its `summary` counts those).
pub fn filtered_document(report: &CycleReport, filter: &Filter) -> StatusDocument {
    if filter.is_empty() {
        return status_document(report);
    }
    let kept: Vec<CredentialReport> = filter
        .apply(report)
        .credentials
        .into_iter()
        .cloned()
        .collect();
    status_document(&CycleReport {
        credentials: kept,
        ..report.clone()
    })
}

/// Everything the page shows, gathered by the daemon at the request.
#[derive(Debug, Clone)]
pub struct PageView {
    /// When the page is rendered.
    pub now: Timestamp,
    /// The last successful cycle's report (`None` before the first).
    pub report: Option<Arc<CycleReport>>,
    /// When the cycle in progress started, if one is running.
    pub cycle_running_since: Option<Timestamp>,
    /// When the last cycle (of any result) ended.
    pub last_finished: Option<Timestamp>,
    /// Why the last cycle failed, if it did (secret-free).
    pub last_error: Option<String>,
    /// When the next cycle starts (`None` while one runs).
    pub next_cycle: Option<Timestamp>,
    /// Whether a stop signal arrived: no new cycle starts.
    pub stopping: bool,
    /// The instance's lease as this keeper sees it now (`None`: this keeper has no lease).
    pub lease: Option<LeaseStatus>,
    /// The journal's pending records, or why they could not be read.
    pub pending: Result<Vec<Summary>, String>,
    /// How often the page reloads itself.
    pub reload: Duration,
}

impl PageView {
    /// The name of the credential whose refresh row is `sys_id`, if the last cycle saw it.
    fn credential_name(&self, sys_id: &str) -> Option<&str> {
        self.report
            .as_ref()?
            .credentials
            .iter()
            .find(|c| c.sys_id == sys_id)
            .map(|c| c.name.as_str())
    }
}

/// How often the page reloads itself for a keeper whose cycles run every `interval`.
pub fn reload_every(interval: Duration) -> Duration {
    interval.clamp(MIN_RELOAD, MAX_RELOAD)
}

/// The page's style sheet; its hash goes into the `Content-Security-Policy`, which allows no
/// other style, script or asset.
const STYLE: &str = "\
:root{font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;font-size:15px;line-height:1.4;color:#1b1f24;background:#fff}\
body{margin:0 auto;padding:1rem;max-width:110rem}\
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.6rem 0 .5rem}\
p,dl{margin:.4rem 0}small,.muted{color:#57606a}code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}\
.facts{display:flex;flex-wrap:wrap;gap:.4rem 1.6rem}.facts div{min-width:14rem}.facts dt{font-weight:600}.facts dd{margin:0}\
.counts{display:flex;flex-wrap:wrap;gap:.5rem;padding:0;list-style:none}\
.counts a{display:inline-block;padding:.25rem .6rem;border:1px solid #d0d7de;border-radius:1rem;text-decoration:none;color:inherit}\
form{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end;margin:.8rem 0}label{display:flex;flex-direction:column;font-size:.9rem}\
select,button{font:inherit;padding:.3rem}\
.note{border-left:4px solid #9a6700;background:#fff8c5;padding:.4rem .7rem}\
.alert{border-left:4px solid #cf222e;background:#ffebe9;padding:.4rem .7rem}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;padding:.45rem .5rem;border-bottom:1px solid #d0d7de}\
th{background:#f6f8fa;font-size:.9rem}td.name strong{word-break:break-word}\
tr.act td:first-child{border-left:5px solid #cf222e}tr.wait td:first-child{border-left:5px solid #9a6700}tr.ok td:first-child{border-left:5px solid #1a7f37}\
.state{white-space:nowrap;font-weight:600}.act .state{color:#cf222e}.wait .state{color:#9a6700}.ok .state{color:#1a7f37}\
.who{font-weight:600}\
@media (max-width:52rem){\
table.cards thead{display:none}table.cards,table.cards tbody,table.cards tr,table.cards td{display:block;width:auto}\
table.cards tr{border:1px solid #d0d7de;border-radius:.4rem;margin:.6rem 0;padding:.3rem .6rem}\
table.cards td{border:none;padding:.2rem 0}table.cards td:first-child{border-left:none!important}\
tr.act{border-left:6px solid #cf222e!important}tr.wait{border-left:6px solid #9a6700!important}tr.ok{border-left:6px solid #1a7f37!important}\
table.cards td[data-label]::before{content:attr(data-label);display:block;font-size:.8rem;color:#57606a}\
}";

/// The `Content-Security-Policy` of the HTML page: nothing but the page's own style sheet, and
/// the form submitting to the page itself.
pub fn content_security_policy() -> &'static str {
    static POLICY: LazyLock<String> = LazyLock::new(|| {
        use base64::Engine as _;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        )
    });
    &POLICY
}

/// How a state reads: an icon, its words, and the row's class (the colour, never alone).
fn state_badge(state: State) -> (&'static str, &'static str) {
    match state {
        State::Fresh => ("✓", "ok"),
        State::Due | State::MissingAccessToken => ("↻", "wait"),
        State::RefreshTokenExpiring => ("⚠", "wait"),
        State::NeedsReauth => ("✗", "act"),
    }
}

/// A row's class: red when a person must act, amber while a keeper is on it or the state is not
/// yet fresh, green when all is well.
fn row_class(state: State, actor: &Actor) -> &'static str {
    if actor.is_person() {
        "act"
    } else if *actor != Actor::Nobody {
        "wait"
    } else {
        state_badge(state).1
    }
}

/// A time as UTC and relative to `now`, or a dash.
fn when(now: Timestamp, at: Option<Timestamp>) -> String {
    match at {
        Some(t) => format!(
            "{} UTC <small>({})</small>",
            format_sn_utc(t),
            relative(now, t)
        ),
        None => "—".to_string(),
    }
}

/// A link to the page with one filter (values are URL-encoded, then HTML-escaped).
fn filter_link(key: &str, value: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    escape(&format!("?{key}={encoded}"))
}

/// Renders the HTML page.
pub fn html(view: &PageView, query: &PageQuery) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta http-equiv=\"refresh\" content=\"{}\">\n<meta name=\"robots\" content=\"noindex\">\n\
<title>sn-oauth-keeper status</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        view.reload.as_secs()
    );
    // The JSON link keeps the filter: it serves the credentials the page shows.
    let filter = query.filter.to_query();
    let json_link = if filter.is_empty() {
        "api/status".to_string()
    } else {
        format!("api/status?{filter}")
    };
    let _ = writeln!(
        out,
        "<header>\n<h1>sn-oauth-keeper status</h1>\n<p class=\"muted\">{} UTC · version {} · this page reloads every {} s · <a href=\"{}\">JSON</a></p>\n</header>",
        format_sn_utc(view.now),
        env!("CARGO_PKG_VERSION"),
        view.reload.as_secs(),
        escape(&json_link)
    );
    cycles_section(&mut out, view);
    match &view.report {
        Some(report) => credentials_section(&mut out, view.now, report, query),
        None => out.push_str(
            "<h2 id=\"credentials\">Credentials</h2>\n<p class=\"note\">No cycle has finished yet: the credentials appear after the first one.</p>\n",
        ),
    }
    journal_section(&mut out, view);
    lease_section(&mut out, view);
    out.push_str("</body>\n</html>\n");
    out
}

fn fact(out: &mut String, term: &str, value: &str) {
    let _ = write!(out, "<div><dt>{term}</dt><dd>{value}</dd></div>");
}

/// The last and next cycle.
fn cycles_section(out: &mut String, view: &PageView) {
    let now = view.now;
    out.push_str("<section aria-label=\"cycles\">\n<dl class=\"facts\">");
    let last = match &view.report {
        Some(r) => format!(
            "{} <small>took {}</small>",
            when(now, Some(r.started)),
            human_duration(r.duration)
        ),
        None => "none yet".to_string(),
    };
    fact(out, "Last successful cycle started", &last);
    if let Some(since) = view.cycle_running_since {
        fact(out, "Cycle running since", &when(now, Some(since)));
    }
    let next = match (view.stopping, view.next_cycle) {
        (true, _) => "none: the keeper is stopping".to_string(),
        (false, Some(at)) => when(now, Some(at)),
        (false, None) => "after the cycle in progress".to_string(),
    };
    fact(out, "Next cycle", &next);
    out.push_str("</dl>\n");
    if let Some(error) = &view.last_error {
        let _ = writeln!(
            out,
            "<p class=\"alert\" role=\"alert\"><strong>✗ The last cycle failed</strong> ({}): {}. The credentials below are as the last successful cycle left them.</p>",
            when(now, view.last_finished),
            escape(error)
        );
    }
    out.push_str("</section>\n");
}

/// The filter form, the counts and the credential table.
fn credentials_section(out: &mut String, now: Timestamp, report: &CycleReport, query: &PageQuery) {
    let filtered = query.filter.apply(report);
    let _ = writeln!(
        out,
        "<h2 id=\"credentials\">Credentials <small>as of the cycle of {} UTC</small></h2>",
        format_sn_utc(report.started)
    );
    out.push_str("<ul class=\"counts\" aria-label=\"credentials by state\">");
    for state in State::ALL {
        let n = report
            .credentials
            .iter()
            .filter(|c| c.assessment_after(report.started).state == state)
            .count();
        if n > 0 {
            let (icon, _) = state_badge(state);
            let _ = write!(
                out,
                "<li><a href=\"{}\">{icon} {n} {}</a></li>",
                filter_link("state", state.label()),
                state.label()
            );
        }
    }
    let persons = report
        .credentials
        .iter()
        .filter(|c| who_must_act(&c.outcome).is_person())
        .count();
    let _ = writeln!(
        out,
        "<li>{} credentials · {persons} need a person</li></ul>",
        report.credentials.len()
    );
    filter_form(out, report, query);
    let ignored = query.ignored.iter().map(|k| {
        format!("the parameter \"{k}\" is not a filter and was ignored (the filters are state and registry)")
    });
    for sentence in filtered.unknown.iter().cloned().chain(ignored) {
        let _ = writeln!(out, "<p class=\"note\">{}.</p>", escape(&sentence));
    }
    if filtered.credentials.is_empty() {
        out.push_str("<p class=\"note\">No credential matches this filter. <a href=\"?\">Show all</a>.</p>\n");
        return;
    }
    if !query.filter.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"muted\">Showing {} of {} credentials. <a href=\"?\">Show all</a>.</p>",
            filtered.credentials.len(),
            report.credentials.len()
        );
    }
    out.push_str(
        "<table class=\"cards\">\n<thead><tr><th scope=\"col\">Credential</th><th scope=\"col\">Registry</th><th scope=\"col\">State</th><th scope=\"col\">Access token expires</th><th scope=\"col\">Refresh token expires</th><th scope=\"col\">Last error and what to do</th><th scope=\"col\">Who must act</th></tr></thead>\n<tbody>\n",
    );
    for c in filtered.credentials {
        credential_row(out, now, report.started, c);
    }
    out.push_str("</tbody>\n</table>\n");
}

fn filter_form(out: &mut String, report: &CycleReport, query: &PageQuery) {
    let chosen = |list: &[String], value: &str| list.iter().any(|v| fold(v) == fold(value));
    out.push_str(
        "<form method=\"get\"><label>State <select name=\"state\"><option value=\"\">any</option>",
    );
    for state in State::ALL {
        let _ = write!(
            out,
            "<option{}>{}</option>",
            if chosen(&query.filter.states, state.label()) {
                " selected"
            } else {
                ""
            },
            state.label()
        );
    }
    out.push_str("</select></label><label>Registry <select name=\"registry\"><option value=\"\">any</option>");
    let mut registries: Vec<&str> = report
        .credentials
        .iter()
        .map(|c| c.registry.as_str())
        .collect();
    registries.sort_unstable();
    registries.dedup();
    for registry in registries {
        let _ = write!(
            out,
            "<option{}>{}</option>",
            if chosen(&query.filter.registries, registry) {
                " selected"
            } else {
                ""
            },
            escape(registry)
        );
    }
    out.push_str("</select></label><button type=\"submit\">Filter</button></form>\n");
}

fn credential_row(out: &mut String, now: Timestamp, cycle: Timestamp, c: &CredentialReport) {
    let after = c.assessment_after(cycle);
    let state = after.state;
    let actor = who_must_act(&c.outcome);
    let (icon, _) = state_badge(state);
    let who = match &actor {
        Actor::OtherKeeper(holder) => format!(
            "{} <small>waiting for keeper <code>{}</code>'s journal</small>",
            escape(actor.role()),
            escape(holder)
        ),
        _ => escape(actor.role()),
    };
    let _ = writeln!(
        out,
        "<tr class=\"{}\"><td class=\"name\" data-label=\"Credential\"><strong>{}</strong><br><small><code>{}</code></small></td>\
<td data-label=\"Registry\"><a href=\"{}\">{}</a></td>\
<td data-label=\"State\"><span class=\"state\">{icon} {}</span><br><small>{}; last cycle: {}</small></td>\
<td data-label=\"Access token expires\">{}</td><td data-label=\"Refresh token expires\">{}</td>\
<td data-label=\"Last error and what to do\">{}</td><td data-label=\"Who must act\" class=\"who\">{who}</td></tr>",
        row_class(state, &actor),
        escape(&c.name),
        escape(&c.sys_id),
        filter_link("registry", &c.registry),
        escape(&c.registry),
        state.label(),
        escape(&after.reason.to_string()),
        c.outcome.label(),
        when(now, c.access_expires),
        when(now, c.refresh_expires),
        c.last_error
            .as_deref()
            .map_or_else(|| "—".to_string(), escape),
    );
}

/// The journal's pending records: answers that have not provably reached ServiceNow.
fn journal_section(out: &mut String, view: &PageView) {
    out.push_str("<h2 id=\"journal\">Journal</h2>\n");
    let pending = match &view.pending {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(
                out,
                "<p class=\"alert\">✗ The journal's pending records cannot be read: {}</p>",
                escape(e)
            );
            return;
        }
    };
    if pending.is_empty() {
        out.push_str("<p>✓ No answer is pending: every token the keeper obtained is held by ServiceNow.</p>\n");
        return;
    }
    let _ = writeln!(
        out,
        "<p>{} answer(s) wait to be delivered to ServiceNow; the keeper delivers them again each cycle and never refreshes their credentials meanwhile.</p>",
        pending.len()
    );
    out.push_str("<table class=\"cards\">\n<thead><tr><th scope=\"col\">Record</th><th scope=\"col\">Credential</th><th scope=\"col\">Registry</th><th scope=\"col\">Journaled</th><th scope=\"col\">Attempts</th><th scope=\"col\">Refresh token delivered</th><th scope=\"col\">Last delivery error</th><th scope=\"col\">Sealed with key</th></tr></thead>\n<tbody>\n");
    for record in pending {
        let credential = match view.credential_name(&record.credential) {
            Some(name) => format!(
                "<strong>{}</strong><br><small><code>{}</code></small>",
                escape(name),
                escape(&record.credential)
            ),
            None => format!("<code>{}</code>", escape(&record.credential)),
        };
        let _ = writeln!(
            out,
            "<tr class=\"wait\"><td data-label=\"Record\"><code>{}</code></td><td data-label=\"Credential\">{credential}</td>\
<td data-label=\"Registry\">{}</td><td data-label=\"Journaled\">{}</td><td data-label=\"Attempts\">{}</td>\
<td data-label=\"Refresh token delivered\">{}</td><td data-label=\"Last delivery error\">{}</td><td data-label=\"Sealed with key\"><code>{}</code></td></tr>",
            escape(&record.id),
            escape(&record.registry),
            when(view.now, Some(record.created_at)),
            record.attempts,
            if record.refresh_delivered {
                "yes"
            } else {
                "not yet"
            },
            record
                .last_error
                .as_deref()
                .map_or_else(|| "—".to_string(), escape),
            escape(&record.key_id),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

/// The instance's keeper lease: who holds it, for how long, and what waits for another keeper.
fn lease_section(out: &mut String, view: &PageView) {
    out.push_str("<h2 id=\"lease\">Lease</h2>\n");
    let Some(lease) = &view.lease else {
        out.push_str("<p class=\"muted\">This keeper takes no lease on the instance.</p>\n");
        return;
    };
    out.push_str("<dl class=\"facts\">");
    let holder = match (&lease.holder, &lease.problem) {
        (Some(holder), _) => format!(
            "<code>{}</code> — {}",
            escape(holder),
            if lease.this_keeper {
                "✓ this keeper"
            } else {
                "another keeper (this one is on standby)"
            }
        ),
        (None, Some(problem)) => format!("unknown: {}", escape(problem)),
        (None, None) => "nobody: the next keeper to run takes it".to_string(),
    };
    fact(out, "Held by", &holder);
    if let Some(pid) = lease.pid {
        fact(out, "Process", &pid.to_string());
    }
    if let Some(left) = lease.expires_in {
        fact(out, "Time left", &human_duration(left));
    }
    if let Some(fence) = lease.fence {
        fact(out, "Fence", &fence.to_string());
    }
    out.push_str("</dl>\n");
    if lease.claimed_elsewhere.is_empty() {
        out.push_str("<p>No credential waits for another keeper's journal.</p>\n");
        return;
    }
    let _ = writeln!(
        out,
        "<p>{} credential(s) wait for another keeper's journal: that keeper may hold their only valid refresh token, so this one leaves them alone until it delivers, or until an operator drops the claims of a keeper that is gone for good (<code>sn-oauth-keeper lease drop-claims --holder …</code>).</p>\n<ul>",
        lease.claimed_elsewhere.len()
    );
    for (sys_id, holder) in &lease.claimed_elsewhere {
        let _ = writeln!(
            out,
            "<li><strong>{}</strong> <small><code>{}</code></small> — keeper <code>{}</code></li>",
            escape(view.credential_name(sys_id).unwrap_or(sys_id)),
            escape(sys_id),
            escape(holder)
        );
    }
    out.push_str("</ul>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::classify::FailureClass;
    use crate::domain::plan::{Action, Assessment, Reason};
    use crate::domain::report::{Hold, Outcome};
    use proptest::prelude::*;

    const T0: i64 = 1_800_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(T0 + secs).unwrap()
    }

    fn credential(
        id: &str,
        name: &str,
        registry: &str,
        state: State,
        outcome: Outcome,
    ) -> CredentialReport {
        CredentialReport {
            sys_id: id.into(),
            name: name.into(),
            registry: registry.into(),
            registry_id: format!("reg-{registry}"),
            requestor_profile: "prof".into(),
            assessment: Assessment {
                state,
                reason: Reason::MissingAccessToken,
                action: Action::Skip,
            },
            last_error: outcome.message().map(str::to_string),
            outcome,
            access_expires: Some(at(3_600)),
            refresh_expires: None,
            last_success: None,
            last_used: None,
        }
    }

    fn report() -> CycleReport {
        CycleReport {
            started: at(0),
            duration: Duration::from_millis(1_200),
            rows: 6,
            credentials: vec![
                credential("c1", "Mailbox", "Graph", State::Fresh, Outcome::Skipped),
                credential(
                    "c2",
                    "<script>alert(1)</script>",
                    "Graph",
                    State::NeedsReauth,
                    Outcome::Blocked {
                        hold: Hold::Person(FailureClass::NeedsReauth),
                        message: "re-authorise with Get OAuth Token on Graph".into(),
                    },
                ),
                credential(
                    "c3",
                    "Okta sync",
                    "Okta, Inc.",
                    State::Due,
                    Outcome::Failed {
                        class: FailureClass::Transient,
                        message: "the provider is failing".into(),
                    },
                ),
            ],
            lease: None,
        }
    }

    fn view(report: Option<CycleReport>) -> PageView {
        PageView {
            now: at(30),
            report: report.map(Arc::new),
            cycle_running_since: None,
            last_finished: Some(at(2)),
            last_error: None,
            next_cycle: Some(at(180)),
            stopping: false,
            lease: None,
            pending: Ok(Vec::new()),
            reload: Duration::from_secs(60),
        }
    }

    fn names(filtered: &Filtered<'_>) -> Vec<String> {
        filtered
            .credentials
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    fn query(raw: &str) -> PageQuery {
        PageQuery::parse(raw).unwrap()
    }

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain text — ünïcode"), "plain text — ünïcode");
    }

    proptest! {
        /// Whatever the text, its escape holds no character that can open a tag, close an
        /// attribute or start a reference other than its own, and reading the references back
        /// gives the text.
        #[test]
        fn escaped_text_is_inert_and_reversible(text in any::<String>()) {
            let escaped = escape(&text);
            prop_assert!(!escaped.contains(['<', '>', '"', '\'']));
            for (i, _) in escaped.match_indices('&') {
                let rest = &escaped[i..];
                prop_assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|r| rest.starts_with(r)),
                    "stray & in {escaped:?}"
                );
            }
            let back = escaped
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&");
            prop_assert_eq!(back, text);
        }

        /// Any query string parses (or is refused for its format) without panicking, and every
        /// state and registry value given comes back.
        #[test]
        fn any_query_parses(raw in ".{0,80}", state in "[a-z _-]{1,20}", registry in "[^,&=#]{1,20}") {
            let _ = PageQuery::parse(&raw);
            let encoded = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            let q = PageQuery::parse(&format!("state={}&registry={}", encoded(&state), encoded(&registry))).unwrap();
            if !state.trim().is_empty() {
                prop_assert_eq!(q.filter.states, vec![state.trim().to_string()]);
            }
            if !registry.trim().is_empty() {
                prop_assert_eq!(q.filter.registries, vec![registry.trim().to_string()]);
            }
        }
    }

    #[test]
    fn filters_repeat_or_list_values_and_combine() {
        let report = report();
        let repeated = query("state=fresh&state=due").filter.apply(&report);
        let listed = query("state=fresh,due").filter.apply(&report);
        assert_eq!(names(&repeated), ["Mailbox", "Okta sync"]);
        assert_eq!(names(&listed), names(&repeated));
        let both = query("state=fresh,due&registry=graph")
            .filter
            .apply(&report);
        assert_eq!(names(&both), ["Mailbox"]);
        assert!(both.unknown.is_empty());
        // The page's JSON link keeps the filter.
        let html = html(
            &view(Some(report.clone())),
            &query("state=fresh,due&registry=Okta%2C+Inc.&colour=red"),
        );
        assert!(
            html.contains(
                "href=\"api/status?state=fresh&amp;state=due&amp;registry=Okta%2C+Inc.\""
            ),
            "{html}"
        );
        // A registry whose name holds a comma is found by its whole name, or by its sys_id.
        let comma = query("registry=Okta%2C+Inc.").filter.apply(&report);
        assert_eq!(names(&comma), ["Okta sync"]);
        let by_id = query("registry=reg-Graph").filter.apply(&report);
        assert_eq!(by_id.credentials.len(), 2);
        // The form's "any" sends empty values: they filter nothing.
        let any = query("state=&registry=");
        assert!(any.filter.is_empty());
        assert_eq!(any.filter.apply(&report).credentials.len(), 3);
    }

    #[test]
    fn state_values_are_compared_loosely() {
        let report = report();
        for value in [
            "needs+re-authorisation",
            "Needs_Re-Authorization",
            "needs%20re%20authorisation",
        ] {
            let f = query(&format!("state={value}")).filter.apply(&report);
            assert_eq!(names(&f), ["<script>alert(1)</script>"], "{value}");
        }
    }

    #[test]
    fn unknown_values_match_nothing_and_say_so() {
        let report = report();
        let f = query("state=broken").filter.apply(&report);
        assert!(f.credentials.is_empty());
        assert_eq!(f.unknown.len(), 1);
        assert!(f.unknown[0].contains("\"broken\""), "{:?}", f.unknown);
        assert!(
            f.unknown[0].contains("needs re-authorisation"),
            "lists the states"
        );
        let mixed = query("registry=Graph,Nowhere").filter.apply(&report);
        assert_eq!(mixed.credentials.len(), 2, "the known part still matches");
        assert!(
            mixed.unknown[0].contains("\"Nowhere\""),
            "{:?}",
            mixed.unknown
        );

        let html = html(
            &view(Some(report.clone())),
            &query("state=broken&colour=red"),
        );
        assert!(html.contains("No credential matches this filter"), "{html}");
        assert!(
            html.contains("no state is called &quot;broken&quot;"),
            "{html}"
        );
        assert!(
            html.contains("the parameter &quot;colour&quot; is not a filter"),
            "{html}"
        );
    }

    #[test]
    fn only_html_and_json_are_formats() {
        assert_eq!(query("format=json").format, PageFormat::Json);
        assert_eq!(query("format=HTML").format, PageFormat::Html);
        assert_eq!(query("").format, PageFormat::Html);
        assert_eq!(
            PageQuery::parse("format=xml"),
            Err(QueryError::Format("xml".into()))
        );
    }

    #[test]
    fn the_json_counts_what_the_filter_keeps() {
        let report = report();
        let all = serde_json::to_value(filtered_document(&report, &Filter::default())).unwrap();
        assert_eq!(
            all,
            serde_json::to_value(status_document(&report)).unwrap(),
            "unfiltered, it is the status document"
        );
        let due =
            serde_json::to_value(filtered_document(&report, &query("state=due").filter)).unwrap();
        assert_eq!(due["credentials"].as_array().unwrap().len(), 1);
        assert_eq!(due["summary"], serde_json::json!({"due": 1}));
        assert_eq!(due["generated_at"], all["generated_at"]);
    }

    #[test]
    fn the_page_escapes_instance_text_and_names_who_must_act() {
        let html = html(&view(Some(report())), &PageQuery::default());
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("Okta, Inc."));
        assert!(html.contains(FailureClass::NeedsReauth.who_acts()));
        assert!(html.contains("nobody yet (the keeper retries)"));
        assert!(
            html.contains("<tr class=\"act\">"),
            "a person must act: red"
        );
        assert!(
            html.contains("✗ needs re-authorisation"),
            "a word and an icon, not only colour"
        );
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"60\">"));
        assert!(html.contains("name=\"viewport\""));
        assert!(
            html.contains("href=\"?registry=Okta%2C+Inc.\""),
            "filter links are encoded"
        );
    }

    #[test]
    fn before_the_first_cycle_the_page_says_so() {
        let html = html(&view(None), &PageQuery::default());
        assert!(html.contains("No cycle has finished yet"), "{html}");
        assert!(html.contains("No answer is pending"));
    }

    #[test]
    fn a_failed_cycle_shows_above_the_last_good_one() {
        let mut v = view(Some(report()));
        v.last_error = Some("cannot reach the instance <down>".into());
        let html = html(&v, &PageQuery::default());
        assert!(html.contains("The last cycle failed"));
        assert!(html.contains("cannot reach the instance &lt;down&gt;"));
    }

    #[test]
    fn pending_records_and_the_lease_are_listed() {
        let mut v = view(Some(report()));
        v.pending = Ok(vec![Summary {
            id: "rec-1".into(),
            credential: "c1".into(),
            registry: "Graph".into(),
            created_at: at(-60),
            attempts: 2,
            refresh_delivered: false,
            last_error: Some("HTTP 403 <forbidden>".into()),
            key_id: "a1b2c3".into(),
        }]);
        v.lease = Some(LeaseStatus {
            holder: Some("host-b/var/lib/keeper".into()),
            this_keeper: false,
            pid: Some(4242),
            expires_in: Some(Duration::from_secs(75)),
            fence: Some(9),
            claimed_elsewhere: [("c3".to_string(), "host-b/var/lib/keeper".to_string())].into(),
            problem: None,
        });
        let html = html(&v, &PageQuery::default());
        assert!(html.contains("1 answer(s) wait"), "{html}");
        assert!(html.contains("rec-1"));
        assert!(
            html.contains("<strong>Mailbox</strong>"),
            "named by the report"
        );
        assert!(html.contains("HTTP 403 &lt;forbidden&gt;"));
        assert!(html.contains("another keeper (this one is on standby)"));
        assert!(html.contains("4242"));
        assert!(html.contains("75s"));
        assert!(html.contains("<strong>Okta sync</strong> <small><code>c3</code></small> — keeper <code>host-b/var/lib/keeper</code>"));
    }

    #[test]
    fn the_reload_follows_the_interval_within_bounds() {
        assert_eq!(reload_every(Duration::from_secs(1)), MIN_RELOAD);
        assert_eq!(
            reload_every(Duration::from_secs(20)),
            Duration::from_secs(20)
        );
        assert_eq!(reload_every(Duration::from_secs(3_600)), MAX_RELOAD);
    }

    #[test]
    fn the_policy_pins_the_style_sheet() {
        use base64::Engine as _;
        let policy = content_security_policy();
        assert!(policy.starts_with("default-src 'none'; style-src 'sha256-"));
        let hash = policy
            .split("'sha256-")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap();
        let digest = base64::engine::general_purpose::STANDARD
            .decode(hash)
            .unwrap();
        assert_eq!(digest.len(), 32);
    }
}
