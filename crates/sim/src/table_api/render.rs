//! Rows as the Table API returns them: values, display values or both
//! (`sysparm_display_value`), reference links, `sysparm_fields` less the fields ACLs hide, and a
//! fast path that writes plain pages straight to JSON.

use serde_json::{Map, Value, json};

use super::{Ctx, DisplayMode};
use crate::db::Row;
use crate::instance;
use crate::schema::Kind;
use crate::state::State;

/// What rendering rows needs that does not depend on the row, worked out once per answer (a
/// page renders up to thousands of rows).
pub(super) struct RenderPlan {
    tz: jiff::tz::TimeZone,
    date_format: String,
    /// The requested fields the caller's ACLs let it read, in the order asked.
    fields: Vec<String>,
}

impl RenderPlan {
    pub(super) fn new(st: &State, ctx: &Ctx) -> RenderPlan {
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
pub(super) fn render(st: &State, ctx: &Ctx, row: &Row) -> Value {
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
pub(super) fn page_body(st: &State, ctx: &Ctx, rows: &[&Row], plan: &RenderPlan) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
