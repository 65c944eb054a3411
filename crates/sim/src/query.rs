//! Encoded queries (`sysparm_query`): parsing into OR-of-AND groups, evaluation against stored
//! rows, and ordering. Invalid parts (unknown fields, terms without an operator) are dropped,
//! which is the instance's default (`glide.invalid_query.returns_no_rows=false`).

use std::cmp::Ordering;

use jiff::{SignedDuration, Timestamp, ToSpan as _, tz::TimeZone};

use crate::datetime;
use crate::db::{Db, Resolved, Row};
use crate::schema::{Kind, TableSchema};

/// A comparison operator of the encoded-query language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Like,
    NotLike,
    StartsWith,
    EndsWith,
    IsEmpty,
    IsNotEmpty,
    Anything,
    EmptyString,
    Lt,
    Le,
    Gt,
    Ge,
    Between,
    SameAs,
    NSameAs,
    /// Name-value filter (`?peer=Entra`): matches the stored value or the display value.
    EqValueOrDisplay,
}

/// Operators, longer spellings before their prefixes.
const OPERATORS: &[(&str, Op)] = &[
    ("NOT LIKE", Op::NotLike),
    ("NOT IN", Op::NotIn),
    ("ISNOTEMPTY", Op::IsNotEmpty),
    ("ISEMPTY", Op::IsEmpty),
    ("STARTSWITH", Op::StartsWith),
    ("ENDSWITH", Op::EndsWith),
    ("EMPTYSTRING", Op::EmptyString),
    ("ANYTHING", Op::Anything),
    ("BETWEEN", Op::Between),
    ("NSAMEAS", Op::NSameAs),
    ("SAMEAS", Op::SameAs),
    ("LIKE", Op::Like),
    ("IN", Op::In),
    ("!=", Op::Ne),
    ("<=", Op::Le),
    (">=", Op::Ge),
    ("=", Op::Eq),
    ("<", Op::Lt),
    (">", Op::Gt),
];

/// One condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Condition {
    pub field: String,
    pub op: Op,
    pub value: String,
    /// For `IN` and `NOT IN`: the listed values, sorted, so that each row is checked with a
    /// binary search instead of splitting the list again. A race-check read lists 100 sys_ids
    /// and a benchmark table holds tens of thousands of rows; the scan runs under the
    /// simulator's lock, so its cost delays every other request.
    listed: Vec<String>,
}

impl Condition {
    /// A condition on `field`.
    pub(crate) fn new(field: String, op: Op, value: String) -> Condition {
        let listed = match op {
            Op::In | Op::NotIn => {
                let mut listed: Vec<String> = value.split(',').map(str::to_owned).collect();
                listed.sort_unstable();
                listed.dedup();
                listed
            }
            _ => Vec::new(),
        };
        Condition {
            field,
            op,
            value,
            listed,
        }
    }

    /// Whether `raw` is one of the values an `IN` or `NOT IN` lists.
    fn lists(&self, raw: &str) -> bool {
        self.listed
            .binary_search_by(|v| v.as_str().cmp(raw))
            .is_ok()
    }
}

/// A parsed query: groups joined by `^NQ` (OR), each a list of clauses joined by `^` (AND),
/// each clause a list of conditions joined by `^OR`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Query {
    groups: Vec<Vec<Vec<Condition>>>,
    order: Vec<(String, bool)>,
}

/// What `javascript:` values may refer to.
pub(crate) struct ScriptCtx<'a> {
    pub now: Timestamp,
    pub tz: &'a TimeZone,
    pub date_format: &'a str,
    pub user_id: &'a str,
}

/// What evaluation needs beyond the row.
pub(crate) struct EvalCtx<'a> {
    pub db: &'a Db,
    pub schema: &'static TableSchema,
    pub tz: &'a TimeZone,
    pub date_format: &'a str,
}

impl Query {
    /// Parses an encoded query for `schema`'s table.
    pub(crate) fn parse(
        encoded: &str,
        schema: &'static TableSchema,
        script: &ScriptCtx<'_>,
    ) -> Query {
        let mut query = Query::default();
        let mut group: Vec<Vec<Condition>> = Vec::new();
        for segment in split_terms(encoded) {
            if let Some(field) = segment.strip_prefix("ORDERBYDESC") {
                if schema.resolve_path(field).is_some() {
                    query.order.push((field.to_owned(), true));
                }
                continue;
            }
            if let Some(field) = segment.strip_prefix("ORDERBY") {
                if schema.resolve_path(field).is_some() {
                    query.order.push((field.to_owned(), false));
                }
                continue;
            }
            if segment == "EQ" || segment.is_empty() {
                continue;
            }
            let (term, joiner) = if let Some(rest) = segment.strip_prefix("NQ") {
                if !group.is_empty() {
                    query.groups.push(std::mem::take(&mut group));
                }
                (rest, Joiner::And)
            } else if let Some(rest) = segment.strip_prefix("OR") {
                (rest, Joiner::Or)
            } else {
                (segment.as_str(), Joiner::And)
            };
            let Some(condition) = parse_condition(term, schema, script) else {
                continue;
            };
            match (joiner, group.last_mut()) {
                (Joiner::Or, Some(clause)) => clause.push(condition),
                _ => group.push(vec![condition]),
            }
        }
        if !group.is_empty() {
            query.groups.push(group);
        }
        query
    }

    /// ANDs extra conditions (name-value filters) onto every group.
    pub(crate) fn and_all(&mut self, conditions: Vec<Condition>) {
        if conditions.is_empty() {
            return;
        }
        if self.groups.is_empty() {
            self.groups.push(Vec::new());
        }
        for group in &mut self.groups {
            group.extend(conditions.iter().cloned().map(|c| vec![c]));
        }
    }

    pub(crate) fn matches(&self, ctx: &EvalCtx<'_>, row: &Row) -> bool {
        self.groups.is_empty()
            || self.groups.iter().any(|group| {
                group
                    .iter()
                    .all(|clause| clause.iter().any(|c| eval(ctx, row, c)))
            })
    }

    /// Sorts `items` (rows, or anything `row_of` maps to a row) in place by the
    /// `ORDERBY`/`ORDERBYDESC` terms, stable, so insertion order breaks ties. Each row's sort
    /// values are resolved once, not at every comparison: tens of thousands of rows are sorted
    /// this way.
    pub(crate) fn sort<'r, T: Copy>(
        &self,
        ctx: &EvalCtx<'_>,
        items: &mut [T],
        row_of: impl Fn(T) -> &'r Row,
    ) {
        if self.order.is_empty() {
            return;
        }
        let mut keyed: Vec<(Vec<Option<Resolved>>, T)> = items
            .iter()
            .map(|&item| {
                let row = row_of(item);
                let keys = self
                    .order
                    .iter()
                    .map(|(field, _)| ctx.db.resolve(ctx.schema, row, field))
                    .collect();
                (keys, item)
            })
            .collect();
        keyed.sort_by(|(a, _), (b, _)| {
            for ((va, vb), (_, desc)) in a.iter().zip(b).zip(&self.order) {
                let ordering = match (va, vb) {
                    (Some(va), Some(vb)) => sort_cmp(va.kind, &va.raw, &vb.raw),
                    _ => Ordering::Equal,
                };
                let ordering = if *desc { ordering.reverse() } else { ordering };
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            Ordering::Equal
        });
        for (slot, (_, item)) in items.iter_mut().zip(keyed) {
            *slot = item;
        }
    }
}

#[derive(Clone, Copy)]
enum Joiner {
    And,
    Or,
}

/// Splits on `^`, with `^^` standing for a literal caret.
fn split_terms(encoded: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut chars = encoded.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '^' {
            if chars.peek() == Some(&'^') {
                chars.next();
                current.push('^');
            } else {
                terms.push(std::mem::take(&mut current));
            }
        } else {
            current.push(ch);
        }
    }
    terms.push(current);
    terms
}

fn parse_condition(
    term: &str,
    schema: &'static TableSchema,
    script: &ScriptCtx<'_>,
) -> Option<Condition> {
    for (idx, ch) in term.char_indices().skip(1) {
        let rest = &term[idx..];
        if let Some((spelling, op)) = OPERATORS.iter().find(|(s, _)| rest.starts_with(s)) {
            let field = &term[..idx];
            schema.resolve_path(field)?;
            let raw_value = &rest[spelling.len()..];
            let value = match op {
                Op::Between => raw_value
                    .split_once('@')
                    .map(|(a, b)| format!("{}@{}", eval_script(a, script), eval_script(b, script)))
                    .unwrap_or_default(),
                Op::SameAs | Op::NSameAs => raw_value.to_owned(),
                _ => eval_script(raw_value, script),
            };
            return Some(Condition::new(field.to_owned(), *op, value));
        }
        if !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '.') {
            return None;
        }
    }
    None
}

/// Evaluates the small whitelist of `javascript:gs.*()` values the simulator understands;
/// anything else evaluates to empty, as a failing script does on the instance.
fn eval_script(value: &str, ctx: &ScriptCtx<'_>) -> String {
    let Some(script) = value.strip_prefix("javascript:") else {
        return value.to_owned();
    };
    let script = script.trim().trim_end_matches(';').trim();
    let Some(call) = script.strip_prefix("gs.") else {
        return String::new();
    };
    let Some((name, args)) = call.split_once('(') else {
        return String::new();
    };
    let args: Vec<String> = args
        .trim_end_matches(')')
        .split(',')
        .map(|a| a.trim().trim_matches(|c| c == '\'' || c == '"').to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    let n = args
        .first()
        .and_then(|a| a.parse::<i64>().ok())
        .unwrap_or(0);
    let utc = |ts: Option<Timestamp>| ts.map(datetime::format_utc).unwrap_or_default();
    let ago = |secs: i64| utc(ctx.now.checked_sub(SignedDuration::from_secs(secs)).ok());
    let day_edge = |days: i64, end: bool| {
        let local = ctx.tz.to_datetime(ctx.now).date();
        let Ok(day) = local.checked_sub(days.days()) else {
            return String::new();
        };
        let time = if end {
            jiff::civil::time(23, 59, 59, 0)
        } else {
            jiff::civil::Time::midnight()
        };
        utc(ctx.tz.to_timestamp(day.to_datetime(time)).ok())
    };
    match name {
        "nowDateTime" => ctx
            .tz
            .to_datetime(ctx.now)
            .strftime(&format!(
                "{} %H:%M:%S",
                datetime::date_pattern(ctx.date_format)
            ))
            .to_string(),
        "nowNoTZ" => utc(Some(ctx.now)),
        "minutesAgo" => ago(n.saturating_mul(60)),
        "hoursAgo" => ago(n.saturating_mul(3600)),
        "daysAgo" => ago(n.saturating_mul(86_400)),
        "daysAgoStart" => day_edge(n, false),
        "daysAgoEnd" => day_edge(n, true),
        "beginningOfToday" => day_edge(0, false),
        "endOfToday" => day_edge(0, true),
        "dateGenerate" => {
            let date = args.first().map(String::as_str).unwrap_or_default();
            let time = match args.get(1).map(String::as_str) {
                Some("start") | None => "00:00:00",
                Some("end") => "23:59:59",
                Some(t) => t,
            };
            utc(datetime::from_display(
                &format!("{date} {time}"),
                ctx.tz,
                "",
            ))
        }
        "getUserID" => ctx.user_id.to_owned(),
        _ => String::new(),
    }
}

fn eval(ctx: &EvalCtx<'_>, row: &Row, cond: &Condition) -> bool {
    let Some(resolved) = ctx.db.resolve(ctx.schema, row, &cond.field) else {
        return true;
    };
    let (kind, raw) = (resolved.kind, resolved.raw.as_str());
    let value = cond.value.as_str();
    match cond.op {
        Op::Eq => raw == value,
        Op::Ne => raw != value,
        Op::EqValueOrDisplay => {
            raw == value || ctx.db.display_value(kind, raw, ctx.tz, ctx.date_format) == value
        }
        Op::In => cond.lists(raw),
        Op::NotIn => !cond.lists(raw),
        Op::Like => contains_ci(raw, value),
        Op::NotLike => !contains_ci(raw, value),
        Op::StartsWith => raw.to_lowercase().starts_with(&value.to_lowercase()),
        Op::EndsWith => raw.to_lowercase().ends_with(&value.to_lowercase()),
        Op::IsEmpty | Op::EmptyString => raw.is_empty(),
        Op::IsNotEmpty => !raw.is_empty(),
        Op::Anything => true,
        Op::Lt => compare(kind, raw, value) == Some(Ordering::Less),
        Op::Le => matches!(
            compare(kind, raw, value),
            Some(Ordering::Less | Ordering::Equal)
        ),
        Op::Gt => compare(kind, raw, value) == Some(Ordering::Greater),
        Op::Ge => matches!(
            compare(kind, raw, value),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        Op::Between => value.split_once('@').is_some_and(|(low, high)| {
            matches!(
                compare(kind, raw, low),
                Some(Ordering::Greater | Ordering::Equal)
            ) && matches!(
                compare(kind, raw, high),
                Some(Ordering::Less | Ordering::Equal)
            )
        }),
        Op::SameAs | Op::NSameAs => {
            let other = ctx
                .db
                .resolve(ctx.schema, row, value)
                .map(|r| r.raw)
                .unwrap_or_default();
            (raw == other) == (cond.op == Op::SameAs)
        }
    }
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Typed comparison of a stored value with a query literal; `None` when either side is empty
/// or unparsable (a NULL compares false in SQL).
fn compare(kind: Kind, raw: &str, literal: &str) -> Option<Ordering> {
    if raw.is_empty() || literal.is_empty() {
        return None;
    }
    match kind {
        Kind::DateTime => Some(datetime::parse_utc(raw)?.cmp(&datetime::parse_utc(literal)?)),
        Kind::Integer => Some(raw.parse::<i64>().ok()?.cmp(&literal.parse::<i64>().ok()?)),
        _ => Some(raw.cmp(literal)),
    }
}

/// Ordering for `ORDERBY`: empty values first, as NULLs sort first ascending.
fn sort_cmp(kind: Kind, a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => compare(kind, a, b).unwrap_or_else(|| a.cmp(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema;

    fn cred_schema() -> &'static TableSchema {
        schema::table("oauth_credential").unwrap_or(&schema::TABLES[0])
    }

    fn parse(q: &str) -> Query {
        let tz = TimeZone::UTC;
        let ctx = ScriptCtx {
            now: Timestamp::UNIX_EPOCH,
            tz: &tz,
            date_format: "",
            user_id: "u1",
        };
        Query::parse(q, cred_schema(), &ctx)
    }

    #[test]
    fn splits_or_and_nq_and_orderby() {
        let q = parse(
            "type=refresh_token^expires>2026-07-01 10:00:00^ORexpiresISEMPTY^NQnameLIKEfoo^ORDERBYDESCexpires^ORDERBYname",
        );
        assert_eq!(q.groups.len(), 2);
        assert_eq!(q.groups[0].len(), 2);
        assert_eq!(q.groups[0][1].len(), 2);
        assert_eq!(q.groups[0][1][1].op, Op::IsEmpty);
        assert_eq!(q.groups[1][0][0].op, Op::Like);
        assert_eq!(
            q.order,
            vec![("expires".to_owned(), true), ("name".to_owned(), false)]
        );
    }

    #[test]
    fn drops_unknown_fields_and_operatorless_terms() {
        let q = parse("bogus=1^name^type!=access_token^peer.nameSTARTSWITHEn");
        assert_eq!(q.groups.len(), 1);
        assert_eq!(q.groups[0].len(), 2);
        assert_eq!(q.groups[0][0][0].op, Op::Ne);
        assert_eq!(q.groups[0][1][0].field, "peer.name");
    }

    #[test]
    fn operators_parse() {
        for (q, op, value) in [
            ("sys_idINa,b", Op::In, "a,b"),
            ("sys_idNOT INa,b", Op::NotIn, "a,b"),
            ("nameNOT LIKEx", Op::NotLike, "x"),
            ("sys_mod_count>=3", Op::Ge, "3"),
            ("sys_mod_count<=3", Op::Le, "3"),
            ("nameENDSWITHx", Op::EndsWith, "x"),
            ("expiresISNOTEMPTY", Op::IsNotEmpty, ""),
            ("name=a=b", Op::Eq, "a=b"),
            ("user=javascript:gs.getUserID()", Op::Eq, "u1"),
            (
                "expires<javascript:gs.minutesAgo(-60)",
                Op::Lt,
                "1970-01-01 01:00:00",
            ),
        ] {
            let parsed = parse(q);
            let c = &parsed.groups[0][0][0];
            assert_eq!((c.op, c.value.as_str()), (op, value), "{q}");
        }
    }

    #[test]
    fn in_lists_match_each_listed_value_exactly() {
        let q = parse("sys_idINc,a,,b,a");
        let c = &q.groups[0][0][0];
        for (raw, listed) in [
            ("a", true),
            ("b", true),
            ("c", true),
            // An empty item lists the empty value, as splitting the list does.
            ("", true),
            ("ab", false),
            ("a,b", false),
        ] {
            assert_eq!(c.lists(raw), listed, "{raw:?}");
        }
        assert!(!parse("sys_idINa,b").groups[0][0][0].lists(""));
        assert_eq!(parse("sys_idNOT INa,b").groups[0][0][0].listed, ["a", "b"]);
    }

    #[test]
    fn caret_escape() {
        assert_eq!(split_terms("name=a^^b^type=x"), vec!["name=a^b", "type=x"]);
    }

    #[test]
    fn typed_compare() {
        assert_eq!(compare(Kind::Integer, "10", "9"), Some(Ordering::Greater));
        assert_eq!(compare(Kind::Text, "10", "9"), Some(Ordering::Less));
        assert_eq!(
            compare(Kind::DateTime, "2026-07-01 10:00:00", "2026-07-01"),
            Some(Ordering::Greater)
        );
        assert_eq!(compare(Kind::DateTime, "", "2026-07-01"), None);
        assert_eq!(compare(Kind::DateTime, "2026-07-01 10:00:00", "soon"), None);
    }
}
