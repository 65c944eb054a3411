//! The REST Table API (`/api/now[/v1|/v2]/table/{table}[/{sys_id}]`), following the
//! instance's semantics for parameters, value shapes, paging headers, status codes and error
//! envelopes (servicenow.md §3). Reads are served here; `render` shapes rows, `write` serves
//! POST, PUT/PATCH and DELETE.

mod render;
mod write;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::answer::{authenticate, error, instance_headers};
use crate::db::Row;
use crate::instance::{self, Access};
use crate::query::{Condition, EvalCtx, Op, Query, ScriptCtx};
use crate::schema::{self, TableSchema};
use crate::server::{Incoming, Param, SimResponse};
use crate::state::{Shared, State};
use render::{RenderPlan, page_body, render};
use write::{create, delete, update};

/// Default `sysparm_limit`.
const DEFAULT_LIMIT: usize = 10_000;

const NOT_FOUND_DETAIL: &str = "Record doesn't exist or ACL restricts the record retrieval";

/// Serves one Table API request.
pub(crate) fn handle(shared: &Shared, req: &Incoming) -> SimResponse {
    let mut st = shared.lock();
    if let Err(resp) = authenticate(&mut st, req) {
        return resp;
    }
    let Some(route) = Route::parse(&req.path) else {
        return error(
            &mut st,
            400,
            "Requested URI does not represent any resource",
            None,
        );
    };
    let Some(schema) = schema::table(route.table) else {
        let message = format!("Invalid table {}", route.table);
        let detail = format!("Table {} does not exist", route.table);
        return error(&mut st, 400, &message, Some(&detail));
    };
    let method = effective_method(req);
    let ctx = Ctx {
        schema,
        version: route.version,
        base: shared.base_url.clone(),
        opts: Options::from_request(req),
    };
    // The table's "Allow access to this table via web services" box is checked before any ACL.
    if st.instance.closed_to_web_services.contains(schema.name) {
        return error(
            &mut st,
            403,
            "User Not Authorized",
            Some("Failed API level ACL Validation"),
        );
    }
    let operation = match method.as_str() {
        "GET" | "HEAD" => "read",
        "POST" => "create",
        "DELETE" => "delete",
        _ => "write",
    };
    if instance::table_access(&st, schema, operation) == Access::Denied {
        return match method.as_str() {
            "POST" => acl_denied(&mut st, "Insert"),
            "PUT" | "PATCH" => acl_denied(&mut st, "Update"),
            "DELETE" => acl_denied(&mut st, "Delete"),
            _ => error(&mut st, 403, "Insufficient rights to query records", None),
        };
    }
    let resp = match (method.as_str(), route.sys_id) {
        ("GET" | "HEAD", None) => list(&mut st, &ctx, req),
        ("POST", None) => create(&mut st, &ctx, req),
        ("GET" | "HEAD", Some(id)) => get(&mut st, &ctx, id),
        ("PUT" | "PATCH", Some(id)) => update(&mut st, &ctx, req, id),
        ("DELETE", Some(id)) => delete(&mut st, &ctx, id),
        _ => Err(error(
            &mut st,
            405,
            "Method not Supported",
            Some("Method not Supported"),
        )),
    };
    match resp {
        Ok(resp) | Err(resp) => resp,
    }
}

fn acl_denied(st: &mut State, operation: &str) -> SimResponse {
    let detail = format!("ACL Exception {operation} Failed due to security constraints");
    error(st, 403, "Operation Failed", Some(&detail))
}

fn not_found(st: &mut State) -> SimResponse {
    error(st, 404, "No Record found", Some(NOT_FOUND_DETAIL))
}

fn effective_method(req: &Incoming) -> String {
    let method = req.method.to_ascii_uppercase();
    if method == "POST"
        && let Some(over) = req.header("x-http-method-override")
    {
        return over.trim().to_ascii_uppercase();
    }
    method
}

struct Route<'a> {
    /// `""`, `"v1/"` or `"v2/"`: echoed in links.
    version: &'static str,
    table: &'a str,
    sys_id: Option<&'a str>,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Route<'a>> {
        let rest = path.strip_prefix("/api/now/")?;
        let (version, rest) = if let Some(r) = rest.strip_prefix("v1/") {
            ("v1/", r)
        } else if let Some(r) = rest.strip_prefix("v2/") {
            ("v2/", r)
        } else {
            ("", rest)
        };
        let rest = rest.strip_prefix("table/")?;
        let mut parts = rest.split('/');
        let table = parts.next().filter(|t| !t.is_empty())?;
        let sys_id = parts.next().filter(|s| !s.is_empty());
        if parts.any(|p| !p.is_empty()) {
            return None;
        }
        Some(Route {
            version,
            table,
            sys_id,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DisplayMode {
    Value,
    Display,
    All,
}

struct Options {
    display: DisplayMode,
    exclude_links: bool,
    fields: Option<Vec<String>>,
    input_display: bool,
    no_response_body: bool,
}

fn is_true(value: Option<String>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl Options {
    fn from_request(req: &Incoming) -> Options {
        let display = match req
            .param("sysparm_display_value")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            Some("true") => DisplayMode::Display,
            Some("all") => DisplayMode::All,
            _ => DisplayMode::Value,
        };
        let fields = req
            .param("sysparm_fields")
            .map(|f| {
                f.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|f| !f.is_empty());
        Options {
            display,
            exclude_links: is_true(req.param("sysparm_exclude_reference_link")),
            fields,
            input_display: is_true(req.param("sysparm_input_display_value")),
            no_response_body: req
                .header("x-no-response-body")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }
}

struct Ctx {
    schema: &'static TableSchema,
    version: &'static str,
    base: String,
    opts: Options,
}

impl Ctx {
    fn record_url(&self, table: &str, sys_id: &str) -> String {
        format!(
            "{}/api/now/{}table/{table}/{sys_id}",
            self.base, self.version
        )
    }
}

/// Builds a success answer; `X-no-response-body: true` only applies to writes.
fn respond(st: &mut State, ctx: &Ctx, status: u16, body: &Value, write: bool) -> SimResponse {
    let mut headers = instance_headers(st);
    let body = if write && ctx.opts.no_response_body {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    SimResponse {
        status,
        headers,
        body,
    }
}

type Outcome = Result<SimResponse, SimResponse>;

fn list(st: &mut State, ctx: &Ctx, req: &Incoming) -> Outcome {
    let params = req.params();
    let first = |key: &str| {
        params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.clone())
    };
    let limit = first("sysparm_limit")
        .and_then(|l| l.trim().parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(DEFAULT_LIMIT);
    let offset = first("sysparm_offset")
        .and_then(|o| o.trim().parse::<i64>().ok())
        .unwrap_or(0)
        .max(0);
    let offset = usize::try_from(offset).unwrap_or(0);

    let tz = st.user_tz();
    let date_format = st.user_date_format();
    let script = ScriptCtx {
        now: st.now(),
        tz: &tz,
        date_format: &date_format,
        user_id: &st.user.sys_id,
    };
    let mut query = first("sysparm_query")
        .map(|q| Query::parse(&q, ctx.schema, &script))
        .unwrap_or_default();
    // Name-value pairs (`?type=refresh_token`) filter like `=` but also accept display values.
    query.and_all(
        params
            .iter()
            .filter(|p| !p.key.starts_with("sysparm_") && ctx.schema.resolve_path(&p.key).is_some())
            .map(|p| Condition::new(p.key.clone(), Op::EqValueOrDisplay, p.value.clone()))
            .collect(),
    );
    // Paging asks the same query once per page: its matches are kept until the database
    // changes (the parsed query carries any `javascript:` value as evaluated now).
    let key = format!("{}\u{1f}{query:?}", ctx.schema.name);
    let positions = match st.db.cached_matches(&key) {
        Some(positions) => positions,
        None => {
            let eval = EvalCtx {
                db: &st.db,
                schema: ctx.schema,
                tz: &tz,
                date_format: &date_format,
            };
            let all = st.db.rows(ctx.schema.name).unwrap_or_default();
            let mut matched: Vec<usize> = all
                .iter()
                .enumerate()
                .filter(|(_, row)| query.matches(&eval, row))
                .map(|(pos, _)| pos)
                .collect();
            query.sort(&eval, &mut matched, |pos| &all[pos]);
            let matched = Arc::new(matched);
            st.db.remember_matches(key, Arc::clone(&matched));
            matched
        }
    };
    let all = st.db.rows(ctx.schema.name).unwrap_or_default();
    let total = positions.len();
    let page_cap = st.max_page_rows.unwrap_or(usize::MAX).min(limit);
    let page: Vec<&Row> = positions
        .iter()
        .skip(offset)
        .take(limit)
        .take(page_cap)
        .filter_map(|&pos| all.get(pos))
        .collect();

    let mut extra = vec![("X-Total-Count".to_owned(), total.to_string())];
    if !is_true(first("sysparm_suppress_pagination_header")) {
        extra.push((
            "Link".to_owned(),
            link_header(&ctx.base, &req.path, &params, limit, offset, total),
        ));
    }
    if ctx.version == "v1/" && page.is_empty() {
        let mut resp = error(
            st,
            404,
            "No Record found",
            Some("Records matching query not found. Check query parameter or offset parameter"),
        );
        resp.headers.extend(extra);
        return Err(resp);
    }
    let body = page_body(st, ctx, &page, &RenderPlan::new(st, ctx));
    let mut resp = SimResponse {
        status: 200,
        headers: instance_headers(st),
        body,
    };
    resp.headers.extend(extra);
    Ok(resp)
}

/// The `Link` header as modern instances send it: `first`, `prev` (even on the first page,
/// where its offset is negative), `next` (absent on the last page), `last`; no spaces; each URL
/// repeats the request's other parameters and ends `sysparm_limit=N&sysparm_offset=M`.
pub(crate) fn link_header(
    base: &str,
    path: &str,
    params: &[Param],
    limit: usize,
    offset: usize,
    total: usize,
) -> String {
    let others: String = params
        .iter()
        .filter(|p| p.key != "sysparm_limit" && p.key != "sysparm_offset")
        .map(|p| format!("{}&", p.raw))
        .collect();
    let url =
        |off: i128| format!("<{base}{path}?{others}sysparm_limit={limit}&sysparm_offset={off}>");
    let (limit_i, offset_i, total_i) = (limit as i128, offset as i128, total as i128);
    let last = if total == 0 {
        0
    } else {
        ((total_i - 1) / limit_i) * limit_i
    };
    let mut parts = vec![
        format!("{};rel=\"first\"", url(0)),
        format!("{};rel=\"prev\"", url(offset_i - limit_i)),
    ];
    if offset_i + limit_i < total_i {
        parts.push(format!("{};rel=\"next\"", url(offset_i + limit_i)));
    }
    parts.push(format!("{};rel=\"last\"", url(last)));
    parts.join(",")
}

fn get(st: &mut State, ctx: &Ctx, sys_id: &str) -> Outcome {
    read_one(st, ctx, sys_id, false)
}

fn read_one(st: &mut State, ctx: &Ctx, sys_id: &str, write: bool) -> Outcome {
    let Some(row) = st.db.get(ctx.schema.name, sys_id) else {
        return Err(not_found(st));
    };
    let body = json!({ "result": render(st, ctx, row) });
    Ok(respond(st, ctx, 200, &body, write))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Vec<Param> {
        Incoming {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            query: query.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
        .params()
    }

    #[test]
    fn link_header_matches_captured_instances() {
        // G6: limit 1, total 73, first page.
        let link = link_header(
            "https://i",
            "/api/now/table/incident",
            &params("sysparm_limit=1"),
            1,
            0,
            73,
        );
        assert_eq!(
            link,
            "<https://i/api/now/table/incident?sysparm_limit=1&sysparm_offset=0>;rel=\"first\",<https://i/api/now/table/incident?sysparm_limit=1&sysparm_offset=-1>;rel=\"prev\",<https://i/api/now/table/incident?sysparm_limit=1&sysparm_offset=1>;rel=\"next\",<https://i/api/now/table/incident?sysparm_limit=1&sysparm_offset=72>;rel=\"last\""
        );
        // G8: limit 10000, total 28124 → last 20000; last page has no next.
        let link = link_header(
            "h",
            "/p",
            &params("query=x&sysparm_offset=20000"),
            10_000,
            20_000,
            28_124,
        );
        assert!(
            link.contains("<h/p?query=x&sysparm_limit=10000&sysparm_offset=20000>;rel=\"last\"")
        );
        assert!(!link.contains("rel=\"next\""));
        assert!(link.contains("sysparm_offset=10000>;rel=\"prev\""));
    }

    proptest::proptest! {
        #[test]
        fn link_header_invariants(total in 0usize..5000, limit in 1usize..700, page in 0usize..20) {
            let offset = page * limit;
            let link = link_header("b", "/p", &[], limit, offset, total);
            let rels: Vec<&str> = link.split(',').map(|part| part.rsplit(";rel=").next().unwrap_or("")).collect();
            let has_next = offset + limit < total;
            let expected: Vec<&str> = if has_next {
                vec!["\"first\"", "\"prev\"", "\"next\"", "\"last\""]
            } else {
                vec!["\"first\"", "\"prev\"", "\"last\""]
            };
            proptest::prop_assert_eq!(rels, expected);
            let last = if total == 0 { 0 } else { (total - 1) / limit * limit };
            let want_last = format!("sysparm_limit={limit}&sysparm_offset={last}>;rel=\"last\"");
            proptest::prop_assert!(link.ends_with(&want_last));
            let prev = i128::try_from(offset).unwrap_or(0) - i128::try_from(limit).unwrap_or(0);
            let want_prev = format!("sysparm_offset={prev}>;rel=\"prev\"");
            proptest::prop_assert!(link.contains(&want_prev));
            proptest::prop_assert!(!link.contains(' '));
        }
    }

    #[test]
    fn routes() {
        let r = Route::parse("/api/now/v2/table/oauth_credential/abc");
        assert_eq!(
            r.map(|r| (r.version, r.table, r.sys_id)),
            Some(("v2/", "oauth_credential", Some("abc")))
        );
        let r = Route::parse("/api/now/table/oauth_credential/");
        assert_eq!(r.map(|r| (r.version, r.sys_id)), Some(("", None)));
        assert!(Route::parse("/api/now/table/a/b/c").is_none());
        assert!(Route::parse("/api/now/table/").is_none());
    }
}
