//! The REST Table API (`/api/now[/v1|/v2]/table/{table}[/{sys_id}]`), following the
//! instance's semantics for parameters, value shapes, paging headers, status codes and error
//! envelopes (servicenow.md §3).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::datetime;
use crate::db::Row;
use crate::instance::{self, Access};
use crate::query::{Condition, EvalCtx, Op, Query, ScriptCtx};
use crate::schema::{self, Kind, TableSchema};
use crate::server::{Incoming, Param, SimResponse};
use crate::state::{Shared, State, bump};

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

/// Checks Basic credentials against the integration user, including the 2026 basic-auth
/// restriction (web-service-access-only users or role `snc_basic_auth_api_access`).
pub(crate) fn authenticate(st: &mut State, req: &Incoming) -> Result<(), SimResponse> {
    // A bearer token the instance's own OAuth server issued; the Basic-auth restriction does
    // not apply to it.
    if let Some(token) = req
        .header("authorization")
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        && instance::bearer_valid(st, token)
        && st
            .user_row()
            .is_some_and(|r| r.get("active").map(String::as_str) == Some("true"))
    {
        return Ok(());
    }
    let presented = req.header("authorization").and_then(parse_basic);
    let user = st.user_row();
    let field = |name: &str| user.and_then(|r| r.get(name)).map(String::as_str);
    let accepted = presented.is_some_and(|(name, password)| {
        field("user_name") == Some(name.as_str())
            && password == st.user.password
            && field("active") == Some("true")
            && (field("web_service_access_only") == Some("true")
                || st.has_role("snc_basic_auth_api_access"))
    });
    if accepted {
        return Ok(());
    }
    let mut resp = error(
        st,
        401,
        "User Not Authenticated",
        Some("Required to provide Auth information"),
    );
    resp.headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("X-Is-Logged-In"));
    resp.headers
        .push(("X-Is-Logged-In".to_owned(), "false".to_owned()));
    resp.headers.push((
        "WWW-Authenticate".to_owned(),
        "BASIC realm=\"Service-now\"".to_owned(),
    ));
    Err(resp)
}

fn parse_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Headers every instance answer carries.
pub(crate) fn instance_headers(st: &mut State) -> Vec<(String, String)> {
    [
        ("Content-Type", "application/json;charset=UTF-8".to_owned()),
        ("X-Is-Logged-In", "true".to_owned()),
        ("X-Transaction-ID", st.transaction_id()),
        ("Pragma", "no-store,no-cache".to_owned()),
        (
            "Cache-control",
            "no-cache,no-store,must-revalidate,max-age=-1".to_owned(),
        ),
        ("Expires", "0".to_owned()),
        ("Server", "ServiceNow".to_owned()),
        (
            "Strict-Transport-Security",
            "max-age=63072000; includeSubDomains".to_owned(),
        ),
        ("X-Content-Type-Options", "nosniff".to_owned()),
        (
            "Server-Timing",
            "sem_wait;dur=0, sesh_wait;dur=0".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The instance's error envelope, key order as the instance writes it (`message` before
/// `detail`), so bodies compare byte for byte.
pub(crate) fn error(
    st: &mut State,
    status: u16,
    message: &str,
    detail: Option<&str>,
) -> SimResponse {
    let detail = detail.map_or_else(|| "null".to_owned(), |d| Value::from(d).to_string());
    let body = format!(
        r#"{{"error":{{"message":{},"detail":{detail}}},"status":"failure"}}"#,
        Value::from(message)
    );
    SimResponse {
        status,
        headers: instance_headers(st),
        body: body.into_bytes(),
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

/// What rendering rows needs that does not depend on the row, worked out once per answer (a
/// page renders up to thousands of rows).
struct RenderPlan {
    tz: jiff::tz::TimeZone,
    date_format: String,
    /// The requested fields the caller's ACLs let it read, in the order asked.
    fields: Vec<String>,
}

impl RenderPlan {
    fn new(st: &State, ctx: &Ctx) -> RenderPlan {
        let fields: Vec<String> = match &ctx.opts.fields {
            Some(fields) => fields.clone(),
            None => ctx
                .schema
                .all_columns()
                .map(|c| c.name.to_owned())
                .collect(),
        };
        RenderPlan {
            tz: st.user_tz(),
            date_format: st.user_date_format(),
            // Fields the caller's ACLs hide are left out of the answer.
            fields: fields
                .into_iter()
                .filter(|field| instance::path_readable(st, ctx.schema, field))
                .collect(),
        }
    }
}

/// Renders a row as the Table API returns it.
fn render(st: &State, ctx: &Ctx, row: &Row) -> Value {
    render_with(st, ctx, row, &RenderPlan::new(st, ctx))
}

fn render_with(st: &State, ctx: &Ctx, row: &Row, plan: &RenderPlan) -> Value {
    let (tz, date_format) = (&plan.tz, &plan.date_format);
    let mut out = Map::new();
    for field in &plan.fields {
        let Some(resolved) = st.db.resolve(ctx.schema, row, field) else {
            continue;
        };
        let raw = resolved.raw;
        let display = || st.db.display_value(resolved.kind, &raw, tz, date_format);
        let link = match resolved.kind {
            Kind::Reference(target) if !raw.is_empty() && !ctx.opts.exclude_links => {
                Some(ctx.record_url(target, &raw))
            }
            _ => None,
        };
        let is_reference = matches!(resolved.kind, Kind::Reference(_));
        let value = match (ctx.opts.display, link) {
            (DisplayMode::Value, Some(link)) => json!({"link": link, "value": raw}),
            (DisplayMode::Value, None) => json!(raw),
            (DisplayMode::Display, Some(link)) => json!({"display_value": display(), "link": link}),
            (DisplayMode::Display, None) => json!(display()),
            (DisplayMode::All, Some(link)) => {
                json!({"display_value": display(), "link": link, "value": raw})
            }
            (DisplayMode::All, None) if is_reference && raw.is_empty() => {
                json!({"display_value": "", "value": ""})
            }
            (DisplayMode::All, None) => json!({"display_value": display(), "value": raw}),
        };
        out.insert(field.clone(), value);
    }
    Value::Object(out)
}

/// Writes a page of rows as `{"result":[…]}`, byte for byte what serialising the rendered JSON
/// values gives (keys in the map's sorted order), but without building them when every value is
/// a plain string (`sysparm_display_value=false` without reference links): how discovery reads.
fn page_body(st: &State, ctx: &Ctx, rows: &[&Row], plan: &RenderPlan) -> Vec<u8> {
    let plain = ctx.opts.display == DisplayMode::Value && ctx.opts.exclude_links;
    if !plain {
        let page: Vec<Value> = rows
            .iter()
            .map(|row| render_with(st, ctx, row, plan))
            .collect();
        return json!({ "result": page }).to_string().into_bytes();
    }
    let mut fields: Vec<&str> = plan.fields.iter().map(String::as_str).collect();
    fields.sort_unstable();
    fields.dedup();
    let mut body = Vec::with_capacity(64 + rows.len() * 64 * fields.len());
    body.extend_from_slice(b"{\"result\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let pairs = fields
            .iter()
            .filter_map(|f| st.db.resolve(ctx.schema, row, f).map(|r| (*f, r.raw)));
        write_plain_object(&mut body, pairs);
    }
    body.extend_from_slice(b"]}");
    body
}

/// A JSON object of string values, keys already sorted and unique.
fn write_plain_object<'k>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'k str, String)>) {
    out.push(b'{');
    for (i, (key, value)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing strings into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, &value);
    }
    out.push(b'}');
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
            .map(|p| Condition {
                field: p.key.clone(),
                op: Op::EqValueOrDisplay,
                value: p.value.clone(),
            })
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

fn parse_body(st: &mut State, req: &Incoming) -> Result<Map<String, Value>, SimResponse> {
    if let Some(content_type) = req.header("content-type")
        && !content_type.to_ascii_lowercase().contains("json")
    {
        return Err(error(
            st,
            415,
            "Unsupported Media Type",
            Some("The simulator only accepts application/json request bodies"),
        ));
    }
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let invalid = |st: &mut State| {
        error(
            st,
            400,
            "Exception while reading request",
            Some("The payload is not valid JSON."),
        )
    };
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        // POST/PUT/PATCH take one record; further records are ignored.
        Ok(Value::Array(items)) => match items.into_iter().next() {
            Some(Value::Object(map)) => Ok(map),
            _ => Err(invalid(st)),
        },
        _ => Err(invalid(st)),
    }
}

fn input_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Object(o) => o.get("value").and_then(input_string),
        Value::Array(_) => None,
    }
}

/// Converts body fields to stored values. `sys_*` and unknown fields are ignored. With
/// `sysparm_input_display_value=true` password2 values are encrypted, date-times are read in
/// the user's zone and format, and choice/reference values may be display values; without it
/// values are stored as given. An unparsable date-time is stored empty (the platform drops
/// values it cannot parse rather than rejecting the request).
fn convert_inputs(
    st: &mut State,
    schema: &TableSchema,
    body: &Map<String, Value>,
    input_display: bool,
    operation: &str,
) -> Vec<(String, String)> {
    let tz = st.user_tz();
    let date_format = st.user_date_format();
    let mut out = Vec::new();
    for (name, value) in body {
        let Some(kind) = schema.column(name) else {
            continue;
        };
        if schema::is_system_column(name) {
            continue;
        }
        // A field the caller may not write is dropped without an error (inferred).
        if !instance::column_allowed(st, schema, name, operation) {
            continue;
        }
        let Some(input) = input_string(value) else {
            continue;
        };
        let stored = match kind {
            Kind::Password2 if input_display && !input.is_empty() => st.encrypt(&input),
            Kind::DateTime if input.trim().is_empty() => String::new(),
            Kind::DateTime if input_display => datetime::from_display(&input, &tz, &date_format)
                .map(datetime::format_utc)
                .unwrap_or_default(),
            Kind::DateTime => datetime::parse_utc(&input)
                .map(datetime::format_utc)
                .unwrap_or_default(),
            Kind::Boolean => {
                let lower = input.trim().to_ascii_lowercase();
                (matches!(lower.as_str(), "true" | "1" | "yes")).to_string()
            }
            Kind::Integer => input
                .trim()
                .parse::<i64>()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            Kind::Choice(choices) if input_display => choices
                .iter()
                .find(|(_, label)| *label == input)
                .map_or(input, |(value, _)| (*value).to_owned()),
            Kind::Reference(target)
                if input_display && !input.is_empty() && st.db.get(target, &input).is_none() =>
            {
                st.db.find_by_display(target, &input).unwrap_or(input)
            }
            Kind::Password2 | Kind::Choice(_) | Kind::Reference(_) | Kind::Text | Kind::SysId => {
                input
            }
        };
        out.push((name.clone(), stored));
    }
    out
}

fn create(st: &mut State, ctx: &Ctx, req: &Incoming) -> Outcome {
    let body = parse_body(st, req)?;
    let mut row: Row = ctx
        .schema
        .defaults
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    row.extend(convert_inputs(
        st,
        ctx.schema,
        &body,
        ctx.opts.input_display,
        "create",
    ));
    let sys_id = insert_new(st, ctx.schema.name, row);
    if ctx.schema.name == "oauth_entity" {
        create_default_profile(st, &sys_id);
    }
    let Some(row) = st.db.get(ctx.schema.name, &sys_id) else {
        return Err(error(st, 500, "Insert failed", None));
    };
    let body = json!({ "result": render(st, ctx, row) });
    let mut resp = respond(st, ctx, 201, &body, true);
    resp.headers.push((
        "Location".to_owned(),
        ctx.record_url(ctx.schema.name, &sys_id),
    ));
    Ok(resp)
}

/// Inserts with fresh system columns; returns the new sys_id.
fn insert_new(st: &mut State, table: &str, mut row: Row) -> String {
    let sys_id = st.new_sys_id();
    let now = st.now_db();
    let user = st.user_name();
    row.insert("sys_id".to_owned(), sys_id.clone());
    row.insert("sys_created_on".to_owned(), now.clone());
    row.insert("sys_updated_on".to_owned(), now);
    row.insert("sys_created_by".to_owned(), user.clone());
    row.insert("sys_updated_by".to_owned(), user);
    row.insert("sys_mod_count".to_owned(), "0".to_owned());
    st.db.insert(table, row);
    sys_id
}

/// The platform's business rule: a new application registry gets a default entity profile.
fn create_default_profile(st: &mut State, entity: &str) {
    let Some(row) = st.db.get("oauth_entity", entity) else {
        return;
    };
    let name = row.get("name").cloned().unwrap_or_default();
    let grant = row
        .get("default_grant_type")
        .filter(|g| !g.is_empty())
        .cloned()
        .unwrap_or_else(|| "authorization_code".to_owned());
    let profile: Row = [
        ("name", format!("{name} default_profile")),
        ("oauth_entity", entity.to_owned()),
        ("grant_type", grant),
        ("default", "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    insert_new(st, "oauth_entity_profile", profile);
}

/// PUT and PATCH: partial update. Only a real change writes the row (and bumps
/// `sys_mod_count`/`sys_updated_on`), as a GlideRecord update with no changed field is skipped.
fn update(st: &mut State, ctx: &Ctx, req: &Incoming, sys_id: &str) -> Outcome {
    let body = parse_body(st, req)?;
    if st.db.get(ctx.schema.name, sys_id).is_none() {
        return Err(not_found(st));
    }
    let changes = convert_inputs(st, ctx.schema, &body, ctx.opts.input_display, "write");
    let now = st.now_db();
    let user = st.user_name();
    if let Some(row) = st.db.get_mut(ctx.schema.name, sys_id) {
        let mut changed = false;
        for (column, value) in changes {
            if row.get(&column) != Some(&value) {
                row.insert(column, value);
                changed = true;
            }
        }
        if changed {
            bump(row, &now, &user);
        }
    }
    read_one(st, ctx, sys_id, true)
}

fn delete(st: &mut State, ctx: &Ctx, sys_id: &str) -> Outcome {
    if !st.db.delete(ctx.schema.name, sys_id) {
        return Err(not_found(st));
    }
    let mut headers = instance_headers(st);
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
    Ok(SimResponse {
        status: 204,
        headers,
        body: Vec::new(),
    })
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

    proptest::proptest! {
        #[test]
        fn plain_objects_serialise_as_json_values_do(
            pairs in proptest::collection::vec(("[a-z_.]{1,6}", "\\PC{0,8}|[\"\\\\\u{0}-\u{1f}\u{7f}-\u{a0}]{0,4}"), 0..8)
        ) {
            let mut map = Map::new();
            for (k, v) in &pairs {
                map.insert(k.clone(), Value::from(v.clone()));
            }
            let expected = serde_json::to_vec(&Value::Object(map.clone())).unwrap_or_default();
            let mut out = Vec::new();
            write_plain_object(
                &mut out,
                map.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default().to_owned())),
            );
            proptest::prop_assert_eq!(out, expected);
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
