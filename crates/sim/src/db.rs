//! The simulated database: rows as raw (stored) string values, per table, in insertion order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::tz::TimeZone;

use crate::datetime;
use crate::schema::{self, Kind, TableSchema};

/// One stored row: column name → raw database value (references hold the bare sys_id).
pub(crate) type Row = BTreeMap<String, String>;

/// All tables of the instance.
#[derive(Debug, Default)]
pub(crate) struct Db {
    tables: BTreeMap<&'static str, Vec<Row>>,
    /// Per table, each sys_id → the position of its first row, so lookups by sys_id stay cheap
    /// at benchmark sizes (tens of thousands of rows). A hit is checked against the row (a
    /// caller of `get_mut` may have changed the row's sys_id); anything else falls back to a
    /// scan, so the index can only ever speed a lookup up, never change its answer.
    index: HashMap<&'static str, HashMap<String, usize>>,
    /// Bumped by every change (insert, delete, any mutable access to a row).
    generation: u64,
    /// The last list query's matching rows (positions, in order) and the generation they were
    /// computed at: paging re-runs the same query once per page, and at benchmark sizes
    /// filtering and sorting every row for every page would dominate the simulator's time.
    matches: Option<(String, u64, Arc<Vec<usize>>)>,
}

/// A dot-walked field resolved against one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub kind: Kind,
    pub raw: String,
}

impl Db {
    /// An empty database with every emulated table present.
    pub(crate) fn new() -> Self {
        Self {
            tables: schema::TABLES
                .iter()
                .map(|t| (t.name, Vec::new()))
                .collect(),
            index: HashMap::new(),
            generation: 0,
            matches: None,
        }
    }

    /// The positions a list query matched, if `key` (table and parsed query) was the last one
    /// asked and nothing changed since.
    pub(crate) fn cached_matches(&self, key: &str) -> Option<Arc<Vec<usize>>> {
        match &self.matches {
            Some((k, generation, positions)) if k == key && *generation == self.generation => {
                Some(Arc::clone(positions))
            }
            _ => None,
        }
    }

    /// Remembers a list query's matching positions for the next page.
    pub(crate) fn remember_matches(&mut self, key: String, positions: Arc<Vec<usize>>) {
        self.matches = Some((key, self.generation, positions));
    }

    /// Where the first row with `sys_id` is, through the index or else by a scan.
    fn position(&self, table: &str, sys_id: &str) -> Option<usize> {
        let rows = self.tables.get(table)?;
        let matches = |r: &Row| r.get("sys_id").is_some_and(|id| id == sys_id);
        if let Some(&pos) = self.index.get(table).and_then(|ix| ix.get(sys_id))
            && rows.get(pos).is_some_and(matches)
        {
            return Some(pos);
        }
        rows.iter().position(matches)
    }

    /// Rebuilds a table's index after rows moved (a delete).
    fn reindex(&mut self, table: &'static str) {
        let mut ix = HashMap::new();
        for (pos, row) in self.tables.get(table).into_iter().flatten().enumerate() {
            if let Some(id) = row.get("sys_id") {
                ix.entry(id.clone()).or_insert(pos);
            }
        }
        self.index.insert(table, ix);
    }

    /// Rows of a table, `None` for an unknown table.
    pub(crate) fn rows(&self, table: &str) -> Option<&[Row]> {
        self.tables.get(table).map(Vec::as_slice)
    }

    pub(crate) fn get(&self, table: &str, sys_id: &str) -> Option<&Row> {
        let pos = self.position(table, sys_id)?;
        self.tables.get(table)?.get(pos)
    }

    pub(crate) fn get_mut(&mut self, table: &str, sys_id: &str) -> Option<&mut Row> {
        let pos = self.position(table, sys_id)?;
        self.generation += 1;
        self.tables.get_mut(table)?.get_mut(pos)
    }

    /// Inserts a row, giving every column of the table a value (empty when not set) so rows
    /// always carry the full column set, as a database record does.
    pub(crate) fn insert(&mut self, table: &str, mut row: Row) -> bool {
        let Some(schema) = schema::table(table) else {
            return false;
        };
        for column in schema.all_columns() {
            row.entry(column.name.to_owned()).or_default();
        }
        row.retain(|k, _| schema.column(k).is_some());
        self.generation += 1;
        match self.tables.get_mut(schema.name) {
            Some(rows) => {
                let id = row.get("sys_id").cloned();
                rows.push(row);
                let pos = rows.len() - 1;
                if let Some(id) = id {
                    self.index
                        .entry(schema.name)
                        .or_default()
                        .entry(id)
                        .or_insert(pos);
                }
                true
            }
            None => false,
        }
    }

    pub(crate) fn delete(&mut self, table: &str, sys_id: &str) -> bool {
        let Some(schema) = schema::table(table) else {
            return false;
        };
        let Some(rows) = self.tables.get_mut(schema.name) else {
            return false;
        };
        let before = rows.len();
        rows.retain(|r| r.get("sys_id").is_none_or(|id| id != sys_id));
        let deleted = rows.len() != before;
        if deleted {
            self.generation += 1;
            self.reindex(schema.name);
        }
        deleted
    }

    /// Resolves a (possibly dot-walked) field of `row`. A broken or empty reference along the
    /// way yields an empty value of the final column's type, like a NULL join.
    pub(crate) fn resolve(
        &self,
        schema: &'static TableSchema,
        row: &Row,
        path: &str,
    ) -> Option<Resolved> {
        let kind = schema.resolve_path(path)?;
        let mut current_schema = schema;
        let mut current_row = Some(row);
        let mut segments = path.split('.').peekable();
        while let Some(segment) = segments.next() {
            let raw = current_row
                .and_then(|r| r.get(segment))
                .cloned()
                .unwrap_or_default();
            if segments.peek().is_none() {
                return Some(Resolved { kind, raw });
            }
            let Some(Kind::Reference(target)) = current_schema.column(segment) else {
                return None;
            };
            current_schema = schema::table(target)?;
            current_row = if raw.is_empty() {
                None
            } else {
                self.get(target, &raw)
            };
        }
        None
    }

    /// The display value of a reference: the display field of the referenced row.
    pub(crate) fn reference_display(&self, target: &str, sys_id: &str) -> String {
        let Some(schema) = schema::table(target) else {
            return String::new();
        };
        self.get(target, sys_id)
            .and_then(|r| r.get(schema.display_field))
            .cloned()
            .unwrap_or_default()
    }

    /// Finds the sys_id of the row whose display field equals `display` (how reference input
    /// given as a display value is resolved).
    pub(crate) fn find_by_display(&self, target: &str, display: &str) -> Option<String> {
        let schema = schema::table(target)?;
        self.rows(target)?
            .iter()
            .find(|r| r.get(schema.display_field).is_some_and(|v| v == display))
            .and_then(|r| r.get("sys_id").cloned())
    }

    /// The display value of a stored value for a user.
    pub(crate) fn display_value(
        &self,
        kind: Kind,
        raw: &str,
        tz: &TimeZone,
        date_format: &str,
    ) -> String {
        match kind {
            Kind::DateTime => datetime::to_display(raw, tz, date_format),
            Kind::Choice(choices) => choices
                .iter()
                .find(|(value, _)| *value == raw)
                .map_or_else(|| raw.to_owned(), |(_, label)| (*label).to_owned()),
            Kind::Reference(target) if !raw.is_empty() => self.reference_display(target, raw),
            Kind::Integer => group_thousands(raw),
            Kind::Reference(_) | Kind::SysId | Kind::Text | Kind::Password2 | Kind::Boolean => {
                raw.to_owned()
            }
        }
    }
}

/// `12345` → `12,345`, the platform's integer display form.
fn group_thousands(raw: &str) -> String {
    let (sign, digits) = raw.strip_prefix('-').map_or(("", raw), |d| ("-", d));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return raw.to_owned();
    }
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands() {
        assert_eq!(group_thousands("0"), "0");
        assert_eq!(group_thousands("1234567"), "1,234,567");
        assert_eq!(group_thousands("-1000"), "-1,000");
        assert_eq!(group_thousands("abc"), "abc");
    }

    #[test]
    fn resolve_walks_and_tolerates_broken_refs() {
        let mut db = Db::new();
        let entity: Row = [("sys_id", "e1"), ("name", "Entra")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        db.insert("oauth_entity", entity);
        let cred: Row = [("sys_id", "c1"), ("peer", "e1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        db.insert("oauth_credential", cred);
        let schema = schema::table("oauth_credential").map(|s| {
            let row = db
                .get("oauth_credential", "c1")
                .cloned()
                .unwrap_or_default();
            (
                db.resolve(s, &row, "peer.name"),
                db.resolve(s, &row, "user.name"),
                db.resolve(s, &row, "bogus"),
            )
        });
        let (name, user, bogus) = schema.unwrap_or((None, None, None));
        assert_eq!(name.map(|r| r.raw).as_deref(), Some("Entra"));
        assert_eq!(user.map(|r| r.raw).as_deref(), Some(""));
        assert_eq!(bogus, None);
    }
}
