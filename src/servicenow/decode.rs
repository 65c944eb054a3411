//! Decoding `oauth_credential` rows: a typed fast path for discovery pages that borrows from the
//! body, and the general path through a JSON value; both read a column as [`field`] does.

use crate::domain::credential::{CredentialRow, Registry, TokenType, is_sys_id};
use crate::domain::scrub::printable;
use crate::domain::time::parse_sn_datetime;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A string field, or the `value` of a reference object.
pub fn field(row: &Value, name: &str) -> String {
    match row.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// Decodes one row; rows of other types, and rows whose `sys_id` or `peer` is not an id, are
/// skipped. A bad date-time is logged and read as empty, so one odd row cannot fail the run.
/// Names come out [`printable`]: they reach terminals and log lines.
pub fn decode_credential_row(row: &Value) -> Option<CredentialRow> {
    // Only objects are rows (a derived struct would also accept an array, positionally).
    if !row.is_object() {
        return None;
    }
    WireRow::deserialize(row)
        .ok()?
        .into_row(&mut Registries::default())
}

/// The typed fast path of a credential page: the rows of an ordinary successful JSON page, or
/// `None` for anything else (an error status, HTML, a cancellation envelope, no `result`
/// array, a row that is not an object, a repeated key), which [`interpret`] and
/// [`decode_credential_row`] then handle exactly as for any answer.
pub(super) fn credential_page(
    status: StatusCode,
    content_type: &str,
    body: &[u8],
) -> Option<Vec<CredentialRow>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if !status.is_success() || content_type.contains("html") || first == Some(&b'<') {
        return None;
    }
    // One UTF-8 check of the whole body is cheaper than serde's per string; a body that is not
    // UTF-8 takes the general path.
    let text = std::str::from_utf8(body).ok()?;
    let page: WirePage<'_> = serde_json::from_str(text).ok()?;
    if page.error {
        return None;
    }
    let mut registries = Registries::default();
    Some(
        page.result?
            .into_iter()
            .filter_map(|WireObject(row)| row.into_row(&mut registries))
            .collect(),
    )
}

/// The registries of one page, so that its rows share one [`Registry`] per registry instead
/// of each holding six copies of the same strings (at 50,000 rows, a third of the estate's
/// memory).
#[derive(Default)]
struct Registries {
    by_peer: HashMap<String, Vec<Arc<Registry>>>,
    /// The last one handed out: consecutive rows usually share it.
    last: Option<Arc<Registry>>,
}

impl Registries {
    fn get(&mut self, row: &WireRow<'_>) -> Arc<Registry> {
        let name = printable(&row.peer_name.0);
        let same = |r: &Registry| {
            r.sys_id == row.peer.0
                && r.name == name
                && r.client_id == row.peer_client_id.0
                && r.token_url == row.peer_token_url.0
                && r.default_grant_type == row.peer_default_grant_type.0
                && r.updated == row.peer_sys_updated_on.0
        };
        if let Some(r) = self.last.as_ref().filter(|r| same(r)) {
            return Arc::clone(r);
        }
        if let Some(r) = self
            .by_peer
            .get(&*row.peer.0)
            .and_then(|known| known.iter().find(|r| same(r)))
        {
            self.last = Some(Arc::clone(r));
            return Arc::clone(r);
        }
        let registry = Arc::new(Registry {
            sys_id: row.peer.0.to_string(),
            name: name.to_string(),
            client_id: row.peer_client_id.0.to_string(),
            token_url: row.peer_token_url.0.to_string(),
            default_grant_type: row.peer_default_grant_type.0.to_string(),
            updated: row.peer_sys_updated_on.0.to_string(),
        });
        self.by_peer
            .entry(registry.sys_id.clone())
            .or_default()
            .push(Arc::clone(&registry));
        self.last = Some(Arc::clone(&registry));
        registry
    }
}

/// A list answer as the fast path reads it.
#[derive(Deserialize)]
struct WirePage<'a> {
    #[serde(default, borrow)]
    result: Option<Vec<WireObject<'a>>>,
    /// Whether the body has an `error` member (a cancelled transaction's envelope).
    #[serde(default, deserialize_with = "present")]
    error: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// A row that must be a JSON object.
struct WireObject<'a>(WireRow<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for WireObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = WireObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an oauth_credential row object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<WireObject<'de>, A::Error> {
                WireRow::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(WireObject)
            }
        }
        d.deserialize_map(ObjectOnly)
    }
}

/// The columns of [`CREDENTIAL_FIELDS`] as sent, borrowed from the body where possible; a
/// missing one reads as empty.
#[derive(Deserialize)]
struct WireRow<'a> {
    #[serde(default, borrow)]
    sys_id: Text<'a>,
    #[serde(default, borrow, rename = "type")]
    token_type: Text<'a>,
    #[serde(default, borrow)]
    peer: Text<'a>,
    #[serde(default, borrow)]
    oauth_requestor_profile: Text<'a>,
    #[serde(default, borrow)]
    user: Text<'a>,
    #[serde(default, borrow)]
    scopes: Text<'a>,
    #[serde(default, borrow)]
    expires: Text<'a>,
    #[serde(default, borrow)]
    name: Text<'a>,
    #[serde(default, borrow)]
    sys_updated_on: Text<'a>,
    #[serde(default, borrow)]
    sys_mod_count: Text<'a>,
    #[serde(default, borrow, rename = "peer.name")]
    peer_name: Text<'a>,
    #[serde(default, borrow, rename = "peer.client_id")]
    peer_client_id: Text<'a>,
    #[serde(default, borrow, rename = "peer.token_url")]
    peer_token_url: Text<'a>,
    #[serde(default, borrow, rename = "peer.default_grant_type")]
    peer_default_grant_type: Text<'a>,
    #[serde(default, borrow, rename = "peer.sys_updated_on")]
    peer_sys_updated_on: Text<'a>,
}

impl WireRow<'_> {
    fn into_row(self, registries: &mut Registries) -> Option<CredentialRow> {
        let token_type = match &*self.token_type.0 {
            "access_token" => TokenType::Access,
            "refresh_token" => TokenType::Refresh,
            _ => return None,
        };
        if self.sys_id.0.is_empty() {
            return None;
        }
        // Both end up in URLs and queries (`…/oauth_credential/{sys_id}`, the companion's
        // comma-separated list): anything but an id is refused, not escaped.
        if !is_sys_id(&self.sys_id.0) || !(self.peer.0.is_empty() || is_sys_id(&self.peer.0)) {
            tracing::warn!(
                event = "instance.bad_row",
                sys_id = %printable(&self.sys_id.0.chars().take(40).collect::<String>()),
                "ignoring an oauth_credential row whose sys_id or peer is not a 32-character hexadecimal id"
            );
            return None;
        }
        let registry = registries.get(&self);
        let sys_id = self.sys_id.0.into_owned();
        let date = |name: &str, value: &str| match parse_sn_datetime(value) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(event = "instance.bad_value", credential = %sys_id, column = name, error = %e, "ignoring an unreadable date-time");
                None
            }
        };
        let expires = date("expires", &self.expires.0);
        let updated = date("sys_updated_on", &self.sys_updated_on.0);
        Some(CredentialRow {
            token_type,
            requestor_profile: self.oauth_requestor_profile.0.into_owned(),
            user: self.user.0.into_owned(),
            scopes: self.scopes.0.into_owned(),
            name: printable(&self.name.0).into_owned(),
            expires,
            updated,
            mod_count: self.sys_mod_count.0.trim().parse().unwrap_or(0),
            registry,
            sys_id,
        })
    }
}

/// One column's value read as [`field`] reads it: a string as is, a reference object's string
/// `value`, a number or boolean as text, anything else empty.
#[derive(Default)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(serde_json::Number::from(v).to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(serde_json::Number::from(v).to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(
                    serde_json::Number::from_f64(v).map_or_else(String::new, |n| n.to_string()),
                )))
            }
            fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                Ok(Text::default())
            }
            fn visit_none<E>(self) -> Result<Text<'de>, E> {
                Ok(Text::default())
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Text<'de>, D::Error> {
                Text::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Text<'de>, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Text::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Text<'de>, A::Error> {
                // A reference object: its `value` when that is a string (the last one wins, as
                // in a JSON value).
                let mut value = Cow::Borrowed("");
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "value" {
                        value = match map.next_value::<Value>()? {
                            Value::String(s) => Cow::Owned(s),
                            _ => Cow::Borrowed(""),
                        };
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Text(value))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicenow::table::CREDENTIAL_FIELDS;
    use proptest::prelude::*;
    use serde_json::Map;

    #[test]
    fn decodes_rows_with_references_and_dot_walks() {
        let v: Value = serde_json::from_str(
            r#"{"sys_id":"0a1b2c3d4e5f60718293a4b5c6d7e8f9","type":"refresh_token","peer":{"link":"x","value":"e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1"},"oauth_requestor_profile":"p1","user":"","scopes":"a b","expires":"2026-07-01 10:00:00","name":"n","sys_updated_on":"bad","sys_mod_count":"3","peer.name":"Graph","peer.client_id":"cid","peer.token_url":"https://t"}"#,
        )
        .unwrap();
        let row = decode_credential_row(&v).unwrap();
        assert_eq!(row.registry.sys_id, "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1");
        assert_eq!(row.registry.name, "Graph");
        assert_eq!(row.mod_count, 3);
        assert!(row.expires.is_some());
        assert!(row.updated.is_none());
        let other: Value = serde_json::from_str(r#"{"sys_id":"x","type":"code"}"#).unwrap();
        assert!(decode_credential_row(&other).is_none());
    }

    proptest! {
        #[test]
        fn row_decoder_never_panics(json in "\\{(\"[a-z_.]{1,12}\":\"[ -~]{0,20}\",?){0,8}\\}") {
            if let Ok(v) = serde_json::from_str::<Value>(&json) {
                let _ = decode_credential_row(&v);
            }
        }

        #[test]
        fn typed_decoding_reads_rows_as_field_does(row in wire_row()) {
            prop_assert_eq!(decode_credential_row(&row), decode_by_field(&row));
        }

        #[test]
        fn the_page_fast_path_agrees_with_the_value_path(rows in proptest::collection::vec(wire_row(), 0..6)) {
            let body = serde_json::json!({ "result": rows }).to_string();
            let fast = credential_page(StatusCode::OK, "application/json;charset=UTF-8", body.as_bytes());
            // The old path: the same bytes through a JSON value.
            let parsed: Value = serde_json::from_str(&body).unwrap();
            let slow: Vec<CredentialRow> = parsed["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(decode_credential_row)
                .collect();
            prop_assert_eq!(fast, Some(slow));
        }
    }

    /// A row's sys_id in the generated rows.
    const ROW_ID: &str = "00112233445566778899aabbccddeeff";

    /// The decoder as it was before the typed fast path: the reference the typed one must match.
    fn decode_by_field(row: &Value) -> Option<CredentialRow> {
        let token_type = match field(row, "type").as_str() {
            "access_token" => TokenType::Access,
            "refresh_token" => TokenType::Refresh,
            _ => return None,
        };
        let sys_id = field(row, "sys_id");
        let peer = field(row, "peer");
        if !is_sys_id(&sys_id) || !(peer.is_empty() || is_sys_id(&peer)) {
            return None;
        }
        let date = |name: &str| parse_sn_datetime(&field(row, name)).ok().flatten();
        Some(CredentialRow {
            token_type,
            requestor_profile: field(row, "oauth_requestor_profile"),
            user: field(row, "user"),
            scopes: field(row, "scopes"),
            name: printable(&field(row, "name")).into_owned(),
            expires: date("expires"),
            updated: date("sys_updated_on"),
            mod_count: field(row, "sys_mod_count").trim().parse().unwrap_or(0),
            registry: Arc::new(Registry {
                sys_id: peer,
                name: printable(&field(row, "peer.name")).into_owned(),
                client_id: field(row, "peer.client_id"),
                token_url: field(row, "peer.token_url"),
                default_grant_type: field(row, "peer.default_grant_type"),
                updated: field(row, "peer.sys_updated_on"),
            }),
            sys_id,
        })
    }

    /// A column value of any JSON shape the instance (or a proxy) might send.
    fn wire_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => "[a-z0-9_ :.-]{0,12}".prop_map(Value::from),
            2 => "[0-9a-f]{32}".prop_map(Value::from),
            1 => "[a-z\u{1b}\u{9b}\r\n\\[]{0,12}".prop_map(Value::from),
            1 => Just(Value::from("2026-07-01 10:00:00")),
            1 => Just(Value::from("refresh_token")),
            1 => Just(Value::from("access_token")),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => (-1e6f64..1e6).prop_map(Value::from),
            1 => any::<bool>().prop_map(Value::from),
            1 => Just(Value::Null),
            1 => proptest::collection::vec(any::<u8>().prop_map(Value::from), 0..3).prop_map(Value::Array),
            1 => ("[a-z]{0,6}", any::<bool>()).prop_map(|(v, as_string)| {
                if as_string {
                    serde_json::json!({ "link": "https://i/x", "value": v })
                } else {
                    serde_json::json!({ "value": 7, "link": v })
                }
            }),
        ]
    }

    /// A row object: some of the discovery columns, plus an unknown one now and then.
    fn wire_row() -> impl Strategy<Value = Value> {
        let columns: Vec<&'static str> = CREDENTIAL_FIELDS.split(',').chain(["other"]).collect();
        proptest::collection::vec((proptest::sample::select(columns), wire_value()), 0..18)
            .prop_map(|pairs| {
                let mut map = Map::new();
                map.insert("sys_id".into(), Value::from(ROW_ID));
                map.insert("type".into(), Value::from("refresh_token"));
                for (k, v) in pairs {
                    map.insert(k.to_string(), v);
                }
                Value::Object(map)
            })
    }

    #[test]
    fn rows_without_proper_ids_are_ignored_and_names_made_printable() {
        let row = |sys_id: &str, peer: &str| {
            serde_json::json!({"sys_id": sys_id, "type": "refresh_token", "peer": peer,
                "name": "\u{1b}[2JMail\r\nbox", "peer.name": "Gra\u{9b}31mph"})
        };
        let good = decode_credential_row(&row(ROW_ID, "")).unwrap();
        assert_eq!(good.name, "Mail  box");
        assert_eq!(good.registry.name, "Graph");
        for (sys_id, peer) in [
            ("../sys_user/0", ""),
            ("00112233445566778899aabbccddeef", ""),
            ("00112233445566778899aabbccddeeff0", ""),
            ("00112233445566778899aabbccddeefg", ""),
            ("a,b", ""),
            (ROW_ID, "x?sysparm_query=1"),
        ] {
            assert!(
                decode_credential_row(&row(sys_id, peer)).is_none(),
                "{sys_id} {peer}"
            );
        }
        let page = serde_json::json!({"result": [row("bad", ""), row(ROW_ID, "")]}).to_string();
        let rows = credential_page(StatusCode::OK, "application/json", page.as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn odd_pages_leave_the_fast_path() {
        let ok = |body: &str| credential_page(StatusCode::OK, "application/json", body.as_bytes());
        assert_eq!(ok(r#"{"result":[]}"#), Some(Vec::new()));
        // A row that is not an object, a cancellation envelope, no result, repeated keys, HTML.
        assert_eq!(ok(r#"{"result":["x"]}"#), None);
        assert_eq!(ok(r#"{"result":[[1,2]]}"#), None);
        assert_eq!(
            ok(r#"{"result":[],"error":{"message":"Transaction cancelled"}}"#),
            None
        );
        assert_eq!(ok(r#"{"result":[],"error":null}"#), None);
        assert_eq!(ok(r#"{"status":"ok"}"#), None);
        assert_eq!(ok(r#"{"result":[{"sys_id":"a","sys_id":"b"}]}"#), None);
        assert_eq!(ok(" <html></html>"), None);
        assert_eq!(
            credential_page(StatusCode::OK, "text/html", br#"{"result":[]}"#),
            None
        );
        assert_eq!(
            credential_page(
                StatusCode::FORBIDDEN,
                "application/json",
                br#"{"result":[]}"#
            ),
            None
        );
        // An array row is no row, on both paths.
        assert!(decode_credential_row(&serde_json::json!([ROW_ID, "refresh_token"])).is_none());
    }
}
