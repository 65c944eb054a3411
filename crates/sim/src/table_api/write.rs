//! The Table API's writes (POST, PUT/PATCH, DELETE): the instance's conversion of input values
//! (`sysparm_input_display_value`), its system columns, and the business rule that gives a new
//! application registry its default profile.

use serde_json::{Map, Value, json};

use super::render::render;
use super::{Ctx, Outcome, acl_denied, not_found, read_one, respond};
use crate::InstanceQuirk;
use crate::answer::{error, instance_headers};
use crate::datetime;
use crate::db::Row;
use crate::instance;
use crate::schema::{self, Kind, TableSchema};
use crate::server::{Incoming, SimResponse};
use crate::state::{State, bump};

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

/// Converts body fields to stored values. `sys_*` and unknown fields are ignored, and so are
/// fields a field-level ACL denies writing (silently: the request still succeeds). With
/// `sysparm_input_display_value=true` password2 values are encrypted, date-times are read in
/// the user's zone and format, and choice/reference values may be display values (see
/// [`reference_input`]); without it values are stored as given. An unparsable date-time is
/// stored empty (the platform drops values it cannot parse rather than rejecting the request).
fn convert_inputs(
    st: &mut State,
    schema: &TableSchema,
    body: &Map<String, Value>,
    input_display: bool,
    operation: &str,
) -> Vec<(String, String)> {
    let quirks = st.instance.quirks.clone();
    let quirk = |q: &InstanceQuirk| quirks.contains(q);
    let tz = quirks
        .iter()
        .find_map(|q| match q {
            InstanceQuirk::DatesReadInZone(zone) => Some(datetime::resolve_tz(zone, "UTC")),
            _ => None,
        })
        .unwrap_or_else(|| st.user_tz());
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
            Kind::Password2
                if input_display
                    && !input.is_empty()
                    && !quirk(&InstanceQuirk::TokensStoredUnencrypted) =>
            {
                st.encrypt(&input)
            }
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
            Kind::Reference(target) if input_display && !input.is_empty() => reference_input(
                st,
                target,
                input,
                quirk(&InstanceQuirk::ReferencesStoredEmpty),
            ),
            Kind::Password2 | Kind::Choice(_) | Kind::Reference(_) | Kind::Text | Kind::SysId => {
                input
            }
        };
        out.push((name.clone(), stored));
    }
    out
}

/// A reference value sent with `sysparm_input_display_value=true`, as the platform's
/// `setDisplayValue()` of a reference treats it: the display value of a row of `target` (its
/// display field, e.g. an `oauth_entity`'s `name`) is stored as that row's sys_id, as the Table
/// API FAQ (KB0534905) documents. A sys_id of an existing row is kept as is: that is believed,
/// not documented (the platform falls back to a sys_id when no display value matches), and
/// every keeper write of `peer`, `oauth_requestor_profile` and `user` depends on it —
/// `check --round-trip` proves it on a real instance. The simulator takes the sys_id before
/// looking for a display value, which differs only if some row's display value is another
/// row's sys_id. A value that matches neither is stored empty (believed: the platform does not
/// store a reference it cannot resolve from a display value).
/// [`InstanceQuirk::ReferencesStoredEmpty`] (`ids_unresolved`) takes display values only.
fn reference_input(st: &State, target: &str, input: String, ids_unresolved: bool) -> String {
    if !ids_unresolved && st.db.get(target, &input).is_some() {
        return input;
    }
    st.db.find_by_display(target, &input).unwrap_or_default()
}

pub(super) fn create(st: &mut State, ctx: &Ctx, req: &Incoming) -> Outcome {
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
pub(super) fn update(st: &mut State, ctx: &Ctx, req: &Incoming, sys_id: &str) -> Outcome {
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

pub(super) fn delete(st: &mut State, ctx: &Ctx, sys_id: &str) -> Outcome {
    // A row-level ACL that refuses the row: the platform's 403, the row stays.
    if st
        .db
        .get(ctx.schema.name, sys_id)
        .is_some_and(|row| !instance::row_deletable(st, ctx.schema, row))
    {
        return Err(acl_denied(st, "Delete"));
    }
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
