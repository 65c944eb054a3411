//! ServiceNow's own Python client, PySNC, against the real `simulate` binary: a client written
//! for real instances must see in the simulator what the simulator's raw Table API says. PySNC
//! pages with `sysparm_suppress_pagination_header=true` and counts on `X-Total-Count`, reads
//! every field as `{display_value, value}`, builds its own encoded queries and treats 401 and
//! 404 its own way; where it and the simulator disagree, the simulator is wrong until proven
//! otherwise.
//!
//! `tests/pysnc/drive.py` runs the scenarios with PySNC and reports what it saw; each test asks
//! the raw API the same question and compares. PySNC comes from PyPI, pinned exactly with its
//! dependencies in `tests/pysnc/requirements.txt`, installed (wheels only) into a venv under
//! the target directory once per version of that file, guarded by a file lock against
//! concurrent test processes. Without Python 3 with `venv` and `pip`, or without PyPI, these
//! tests fail with a message that says so; they are never skipped.

use crate::support::{Simulate, install_once};
use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use sn_oauth_keeper::clock::{Clock, SystemClock};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use tokio::io::AsyncWriteExt;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python with PySNC: installed on first use, then reused.
fn python() -> PathBuf {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match INSTALLED.get_or_init(install) {
        Ok(path) => path.clone(),
        Err(why) => panic!("{why}"),
    }
}

fn install() -> Result<PathBuf, String> {
    let requirements = manifest().join("tests/pysnc/requirements.txt");
    let pins =
        std::fs::read(&requirements).map_err(|e| format!("{}: {e}", requirements.display()))?;
    let venv = install_once("pysnc", &pins, |cache| {
        let venv = cache.join("venv");
        let created = std::process::Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!(
                    "the PySNC tests need Python 3 on PATH (as python3), and it cannot be run ({e}); install python3 with its venv module (Debian: python3 python3-venv)"
                )
            })?;
        if !created.status.success() {
            return Err(format!(
                "`python3 -m venv` failed ({}); the PySNC tests need Python 3 with venv and pip (Debian: python3-venv):\n{}",
                created.status,
                String::from_utf8_lossy(&created.stderr)
            ));
        }
        let pip = std::process::Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--only-binary=:all:",
                "--requirement",
            ])
            .arg(&requirements)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("the venv's python cannot be run ({e})"))?;
        if !pip.status.success() {
            return Err(format!(
                "`pip install -r tests/pysnc/requirements.txt` into {} failed ({}); the PySNC tests need PyPI (or a mirror pip is configured for):\n{}",
                venv.display(),
                pip.status,
                String::from_utf8_lossy(&pip.stderr)
            ));
        }
        Ok(())
    })?;
    Ok(venv.join("venv/bin/python"))
}

/// Runs `scenarios` through PySNC against `sim`; what PySNC saw, by scenario name.
async fn drive(sim: &Simulate, scenarios: Vec<Value>) -> Map<String, Value> {
    let plan = json!({
        "url": sim.url,
        "user": sim.username,
        "password": sim.password,
        "scenarios": scenarios,
    });
    let mut child = tokio::process::Command::new(python())
        .arg(manifest().join("tests/pysnc/drive.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the venv's python runs");
    let mut stdin = child.stdin.take().expect("stdin piped");
    stdin
        .write_all(plan.to_string().as_bytes())
        .await
        .expect("plan written");
    drop(stdin);
    let out = child.wait_with_output().await.expect("drive.py finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drive.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("drive.py printed no JSON ({e}): {stdout}"));
    let Value::Object(seen) = seen else {
        panic!("drive.py printed no object: {stdout}");
    };
    for (name, result) in &seen {
        if let Some(error) = result.get("error")
            && !name.starts_with("error:")
        {
            panic!("PySNC failed in {name}: {error} {}", result["message"]);
        }
    }
    seen
}

/// A value as PySNC's GlideElement exposes it, `[get_value(), get_display_value()]`: from
/// `{value, display_value}` it keeps the display value only when it differs from the value, and
/// falls back to the other where one is missing (or, for the display value, empty).
fn pair(raw: &Value) -> Value {
    let Value::Object(o) = raw else {
        return json!([raw, raw]);
    };
    let value = o.get("value");
    let display = o.get("display_value").filter(|d| Some(*d) != value);
    let shown = display.filter(|d| d.as_str().is_some_and(|d| !d.is_empty()));
    json!([value.or(display), shown.or(value)])
}

fn pairs(row: &Value) -> Value {
    Value::Object(
        row.as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), pair(v))).collect())
            .unwrap_or_default(),
    )
}

/// The raw Table API, asked directly.
struct Raw<'a> {
    sim: &'a Simulate,
    http: reqwest::Client,
}

impl Raw<'_> {
    fn new(sim: &Simulate) -> Raw<'_> {
        Raw {
            sim,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.sim.url))
            .query(params)
            .basic_auth(&self.sim.username, Some(&self.sim.password))
            .send()
            .await
            .unwrap()
    }

    /// Every row of one unpaged list answer, as pairs, and its `X-Total-Count`.
    async fn list(
        &self,
        table: &str,
        query: &str,
        fields: Option<&str>,
        display: &str,
    ) -> (Vec<Value>, usize) {
        let mut params = vec![
            ("sysparm_query", query),
            ("sysparm_display_value", display),
            ("sysparm_exclude_reference_link", "true"),
        ];
        if let Some(fields) = fields {
            params.push(("sysparm_fields", fields));
        }
        let resp = self.get(&format!("/api/now/table/{table}"), &params).await;
        assert_eq!(resp.status(), StatusCode::OK, "{table}?{query}");
        let total = resp
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("X-Total-Count");
        let body: Value = resp.json().await.unwrap();
        let rows = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(pairs)
            .collect();
        (rows, total)
    }

    /// One record by sys_id, as pairs; `None` on 404.
    async fn record(&self, table: &str, sys_id: &str) -> Option<Value> {
        let resp = self
            .get(
                &format!("/api/now/table/{table}/{sys_id}"),
                &[
                    ("sysparm_display_value", "all"),
                    ("sysparm_exclude_reference_link", "true"),
                ],
            )
            .await;
        match resp.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some(pairs(&resp.json::<Value>().await.unwrap()["result"])),
            other => panic!("GET {table}/{sys_id}: {other}"),
        }
    }
}

/// A query scenario on `oauth_credential` unless `spec` names another table.
fn query(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["name"] = json!(name);
    spec["kind"] = json!("query");
    if spec.get("table").is_none() {
        spec["table"] = json!("oauth_credential");
    }
    spec
}

/// Compares a PySNC query with the raw API asked the encoded query PySNC sent, in one page.
async fn same_as_raw(raw: &Raw<'_>, spec: &Value, seen: &Value) -> Vec<Value> {
    let name = spec["name"].as_str().unwrap();
    let table = spec["table"].as_str().unwrap();
    let query = seen["encoded_query"].as_str().unwrap();
    // PySNC always asks for sys_id first when it limits the fields.
    let fields = spec["fields"].as_array().map(|fields| {
        let mut names: Vec<&str> = fields.iter().filter_map(Value::as_str).collect();
        if !names.contains(&"sys_id") {
            names.insert(0, "sys_id");
        }
        names.join(",")
    });
    let display = match &spec["display_value"] {
        Value::Bool(true) => "true",
        Value::Bool(false) => "false",
        _ => "all",
    };
    let (rows, total) = raw.list(table, query, fields.as_deref(), display).await;
    let limit = spec["limit"].as_u64().map(|l| l as usize);
    let expected: Vec<Value> = rows.into_iter().take(limit.unwrap_or(usize::MAX)).collect();
    let got = seen["rows"].as_array().unwrap();
    assert_eq!(
        seen["row_count"].as_u64().map(|c| c as usize),
        Some(total),
        "{name}: get_row_count() is X-Total-Count"
    );
    assert_eq!(
        got.len(),
        expected.len(),
        "{name}: rows PySNC paged through"
    );
    for (i, (got, expected)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(got, expected, "{name}: row {i} ({query})");
    }
    expected
}

fn at(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

#[tokio::test]
async fn pysnc_reads_what_the_raw_api_says() {
    let sim = Simulate::start(7).await;
    let raw = Raw::new(&sim);
    let now = SystemClock.now();
    let (from, to) = (
        at(now - SignedDuration::from_hours(1)),
        at(now + SignedDuration::from_hours(48)),
    );
    let (all, total) = raw
        .list("oauth_credential", "ORDERBYsys_id", Some("sys_id"), "false")
        .await;
    assert!(total > 20, "the demo estate has enough rows to page");
    let some_id = all[3]["sys_id"][0].as_str().unwrap().to_owned();
    let mut specs = Vec::new();
    // Paging: every batch size sees every row once, in order, counted by X-Total-Count.
    for batch in [1, 2, 7, 100] {
        specs.push(query(
            &format!("paging by {batch}"),
            json!({"batch_size": batch, "fields": ["name", "type", "expires"]}),
        ));
    }
    specs.push(query(
        "paging under a limit",
        json!({"batch_size": 4, "limit": 9, "fields": ["name"]}),
    ));
    // Encoded queries.
    specs.extend([
        query(
            "or",
            json!({"batch_size": 3, "encoded_query": "peer.name=Okta Workforce^ORpeer.name=Google Workspace", "fields": ["name", "peer"]}),
        ),
        query(
            "new query",
            json!({"batch_size": 3, "encoded_query": "type=access_token^expires<javascript:gs.minutesAgo(0)^NQtype=refresh_token^peer.nameSTARTSWITHMicrosoft", "fields": ["name", "type", "expires"]}),
        ),
        query(
            "order by",
            json!({"batch_size": 5, "encoded_query": "type=refresh_token", "order_by": "name", "fields": ["name"]}),
        ),
        query(
            "order by desc",
            json!({"batch_size": 5, "encoded_query": "type=access_token", "order_by_desc": "expires", "fields": ["expires"]}),
        ),
        query(
            "date range",
            json!({"batch_size": 2, "encoded_query": format!("expiresBETWEEN{from}@{to}"), "fields": ["expires"]}),
        ),
        query(
            "date comparison",
            json!({"batch_size": 2, "encoded_query": format!("expires>={from}^expires<{to}^type=access_token"), "fields": ["expires"]}),
        ),
        query(
            "is empty",
            json!({"batch_size": 2, "encoded_query": "oauth_requestor_profileISEMPTY", "fields": ["name", "type"]}),
        ),
        query(
            "query builder",
            json!({"batch_size": 3, "conditions": [
                ["query", "type", "=", "access_token"],
                ["or", "type", "=", "refresh_token"],
                ["not_null", "oauth_requestor_profile"],
                ["query", "name", "STARTSWITH", "Okta"],
            ], "fields": ["name", "type"]}),
        ),
        query(
            "null builder",
            json!({"batch_size": 3, "conditions": [["null", "oauth_requestor_profile"]], "fields": ["name"]}),
        ),
    ]);
    // Dot-walks, in fields and through PySNC's attribute access.
    specs.push(query(
        "dot-walks",
        json!({
            "batch_size": 6,
            "encoded_query": "type=refresh_token",
            "fields": ["name", "peer", "peer.name", "peer.token_url", "oauth_requestor_profile.requestor_id"],
            "attrs": [["peer", "name"], ["peer", "token_url"]],
        }),
    ));
    // Display values: both (PySNC's default), display only, value only, every field.
    for (name, display) in [
        ("display all", json!("all")),
        ("display true", json!(true)),
        ("display false", json!(false)),
    ] {
        specs.push(query(
            name,
            json!({"batch_size": 10, "display_value": display, "fields": ["name", "type", "peer", "expires", "sys_mod_count", "user"]}),
        ));
    }
    specs.push(query("every field", json!({"batch_size": 25})));
    let mut gets = vec![
        json!({"name": "get", "kind": "get", "table": "oauth_credential", "sys_id": some_id}),
        json!({"name": "get missing", "kind": "get", "table": "oauth_credential", "sys_id": "00000000000000000000000000000000"}),
        json!({"name": "get by field", "kind": "get", "table": "sys_user", "field": "user_name", "value": sim.username}),
        json!({"name": "error: 401", "kind": "query", "table": "oauth_credential", "password": "not-the-password"}),
    ];
    specs.append(&mut gets);

    let seen = drive(&sim, specs.clone()).await;
    for spec in specs
        .iter()
        .filter(|s| s["kind"] == "query" && s["password"].is_null())
    {
        let name = spec["name"].as_str().unwrap();
        let rows = same_as_raw(&raw, spec, &seen[name]).await;
        // Each query must select something, and the filtered ones not everything: else the
        // comparison proves nothing.
        assert!(!rows.is_empty(), "{name} selects no row");
        if spec.get("encoded_query").is_some() || spec.get("conditions").is_some() {
            assert!(rows.len() < total, "{name} selects every row");
        }
    }
    let paged: Vec<&Value> = seen["paging by 1"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["sys_id"][0])
        .collect();
    let ids: Vec<&Value> = all.iter().map(|r| &r["sys_id"][0]).collect();
    assert_eq!(paged, ids, "batch size 1 pages through every row in order");
    assert!(
        seen["paging under a limit"]["rows"]
            .as_array()
            .unwrap()
            .len()
            == 9
    );
    let dot = &seen["dot-walks"];
    for (row, attrs) in dot["rows"]
        .as_array()
        .unwrap()
        .iter()
        .zip(dot["attrs"].as_array().unwrap())
    {
        assert_eq!(attrs[0], row["peer.name"][0], "gr.peer.name");
        assert_eq!(attrs[1], row["peer.token_url"][0], "gr.peer.token_url");
    }

    assert_eq!(seen["get"]["found"], true);
    assert_eq!(
        Some(seen["get"]["row"].clone()),
        raw.record("oauth_credential", &some_id).await,
        "get(sys_id)"
    );
    assert_eq!(seen["get missing"], json!({"found": false, "row": null}));
    assert_eq!(seen["get by field"]["found"], true);
    assert_eq!(
        seen["get by field"]["row"]["user_name"][0],
        sim.username.as_str()
    );
    assert_eq!(
        seen["error: 401"]["error"], "AuthenticationException",
        "{}",
        seen["error: 401"]
    );
}

#[tokio::test]
async fn pysnc_writes_round_trip() {
    let sim = Simulate::start(8).await;
    let raw = Raw::new(&sim);
    let (rows, _) = raw
        .list(
            "oauth_credential",
            "type=access_token^ORDERBYsys_id",
            Some("sys_id"),
            "false",
        )
        .await;
    let id = rows[0]["sys_id"][0].as_str().unwrap().to_owned();
    let before = raw.record("oauth_credential", &id).await.unwrap();

    let seen = drive(
        &sim,
        vec![
            json!({"name": "update", "kind": "update", "table": "oauth_credential", "sys_id": id, "values": {"scopes": "pysnc round trip"}}),
            json!({"name": "insert", "kind": "insert", "table": "oauth_credential", "values": {"name": "made by PySNC", "type": "access_token", "scopes": "one two"}}),
        ],
    )
    .await;
    assert_eq!(seen["update"]["returned"], id.as_str());
    let after = raw.record("oauth_credential", &id).await.unwrap();
    assert_eq!(
        seen["update"]["row"], after,
        "update() answers the record as stored"
    );
    assert_eq!(after["scopes"][0], "pysnc round trip");
    let count = |row: &Value| {
        row["sys_mod_count"][0]
            .as_str()
            .and_then(|c| c.parse::<u64>().ok())
    };
    assert_eq!(count(&after), count(&before).map(|c| c + 1));

    let created = seen["insert"]["sys_id"].as_str().unwrap().to_owned();
    let row = raw.record("oauth_credential", &created).await.unwrap();
    assert_eq!(
        (&row["name"][0], &row["type"][0], &row["type"][1]),
        (
            &json!("made by PySNC"),
            &json!("access_token"),
            &json!("Access Token")
        )
    );
    let seen = drive(
        &sim,
        vec![json!({"name": "delete", "kind": "delete", "table": "oauth_credential", "sys_id": created})],
    )
    .await;
    assert_eq!(seen["delete"]["deleted"], true);
    assert_eq!(raw.record("oauth_credential", &created).await, None);
}
