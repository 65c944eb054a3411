//! Transcripts (`check --record DIR`, `once --record DIR`): a recording holds no secret the
//! simulator knows, and every committed transcript under `tests/transcripts/<source>/<name>/`
//! replays — each answer decodes with the keeper's decoders, and a simulator seeded with the
//! rows the transcript shows answers the same requests the same way (same status, same error
//! kind, same paging headers, same decoded rows and bodies; timestamps the simulator stamps
//! itself and the sys_ids of rows created during the run are normalised).
//!
//! `tests/transcripts/sim/` is what the simulator produces today. Set
//! `SN_OAUTH_KEEPER_UPDATE_TRANSCRIPTS=1` to rewrite it from a fresh recording. A recording from
//! a real instance goes beside it as `tests/transcripts/<instance kind>/<name>/` and is replayed
//! the same way.

use crate::support::Bed;
use reqwest::Method;
use serde_json::{Value, json};
use sn_oauth_keeper::servicenow::transcript::{
    Exchange, INSTANCE_PLACEHOLDER, RecordedResponse, decode_answer, read_transcript,
};
use sn_oauth_keeper_sim::{CredentialSpec, Estate, ProviderKind, RegistrySpec, Simulator};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The user placeholder of the integration user in every recording.
const RECORDED_USER: &str = "<user-1>";

/// Timestamps the simulator stamps itself when it writes: normalised before comparing.
const STAMPED: &[&str] = &["sys_updated_on", "sys_created_on", "peer.sys_updated_on"];

fn transcripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts")
}

fn recorded_estate() -> Estate {
    let mut estate = Estate::empty(21).with_user_time_zone("Europe/Berlin");
    let entra = estate
        .add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("entra"));
    let okta = estate.add_registry(
        RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
    );
    estate.add_credential(CredentialSpec::new(&entra, "fresh mail"));
    estate.add_credential(CredentialSpec::new(&entra, "missing access").access_missing());
    estate.add_credential(
        CredentialSpec::new(&okta, "expiring")
            .access_expires_in(jiff::SignedDuration::from_secs(60)),
    );
    estate
}

/// Every file's text under `dir`.
fn texts(dir: &Path) -> Vec<(PathBuf, String)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

#[tokio::test]
async fn recordings_hold_no_secret_the_simulator_knows() {
    let estate = recorded_estate();
    let registries = estate.registries().to_vec();
    let bed = Bed::start(estate).await;
    let config = bed.config_file("");
    let config = config.to_str().unwrap();
    let record = bed.dir.path().join("recordings");
    let (check_dir, once_dir) = (record.join("check"), record.join("once"));
    let record_with = |command: &'static str, dir: &Path| {
        let args = [
            command,
            "--config",
            config,
            "--record",
            dir.to_str().unwrap(),
        ]
        .map(str::to_owned);
        let bed = &bed;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bed.run_binary(&args).await
        }
    };
    let out = record_with("check", &check_dir).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = record_with("once", &once_dir).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A folder that already holds a recording is refused before anything is sent.
    let out = record_with("check", &check_dir).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));

    let sim = &bed.sim;
    let base = sim.base_url();
    let mut secrets: Vec<String> = vec![
        sim.password().to_owned(),
        sim.username().to_owned(),
        base.trim_start_matches("http://").to_owned(),
    ];
    secrets.extend(bed.seeded.iter().map(|c| c.refresh_token.clone()));
    secrets.extend(registries.iter().map(|r| r.client_secret.clone()));
    for row in sim.rows("oauth_credential") {
        let id = &row["sys_id"];
        secrets.extend(sim.decrypted("oauth_credential", id, "token_received"));
        secrets.push(row["token_received"].clone());
    }
    secrets.retain(|s| s.len() >= 8);
    let files: Vec<(PathBuf, String)> = [&check_dir, &once_dir]
        .iter()
        .flat_map(|d| texts(d))
        .collect();
    assert!(files.len() > 6, "every exchange is recorded");
    // Nor a fingerprint of one: `/verify` digests stand for the placeholders'.
    let digests: Vec<String> = secrets
        .iter()
        .map(|s| {
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect();
    for (path, text) in &files {
        for secret in secrets.iter().chain(&digests) {
            assert!(
                !text.contains(secret.as_str()),
                "{} holds a secret the simulator knows, or its digest",
                path.display()
            );
        }
    }
    assert!(
        files.iter().any(|(_, text)| text.contains("\"sha256\"")),
        "a /verify call is recorded"
    );
    let all: String = files.iter().map(|(_, t)| t.as_str()).collect();
    for placeholder in ["<secret-", RECORDED_USER, INSTANCE_PLACEHOLDER] {
        assert!(all.contains(placeholder), "{placeholder} stands in");
    }
    // The write that carried a new token kept its placeholder, not the token.
    assert!(all.contains("\"token_received\": \"<secret-"));

    if std::env::var_os("SN_OAUTH_KEEPER_UPDATE_TRANSCRIPTS").is_some() {
        for (from, name) in [(&check_dir, "check"), (&once_dir, "once")] {
            let to = transcripts().join("sim").join(name);
            let _ = std::fs::remove_dir_all(&to);
            std::fs::create_dir_all(&to).unwrap();
            for (path, text) in texts(from) {
                std::fs::write(to.join(path.file_name().unwrap()), text).unwrap();
            }
        }
    }
}

/// Sets a password2 column without moving the row's version, as the transcript saw it.
fn set_secret(sim: &Simulator, table: &str, sys_id: &str, column: &str, value: &str) {
    let Some(before) = sim.row(table, sys_id) else {
        return;
    };
    sim.set_encrypted_field(table, sys_id, column, value);
    for system in ["sys_mod_count", "sys_updated_on", "sys_updated_by"] {
        sim.set_row_field(table, sys_id, system, &before[system]);
    }
}

/// A simulator holding the rows, users and secrets a transcript shows, as they were first seen.
async fn simulator_for(exchanges: &[Exchange]) -> Simulator {
    let ok_rows = |e: &Exchange| -> Vec<serde_json::Map<String, Value>> {
        if e.request.method != "GET" || e.response.status != 200 {
            return Vec::new();
        }
        match &e.response.body["result"] {
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_object().cloned())
                .collect(),
            Value::Object(one) => vec![one.clone()],
            _ => Vec::new(),
        }
    };
    let table_of = |e: &Exchange| {
        e.request
            .path
            .split("/table/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .map(str::to_owned)
    };
    let user = exchanges
        .iter()
        .filter(|e| table_of(e).as_deref() == Some("sys_user"))
        .flat_map(ok_rows)
        .find(|row| row.get("user_name").and_then(Value::as_str) == Some(RECORDED_USER));
    let text = |row: &serde_json::Map<String, Value>, key: &str| {
        row.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut estate = Estate::empty(1);
    if let Some(user) = &user {
        estate = estate
            .with_user_identity(&text(user, "sys_id"), RECORDED_USER)
            .with_user_time_zone(&text(user, "time_zone"))
            .with_user_date_format(&text(user, "date_format"));
    } else {
        estate = estate.with_user_identity("0000000000000000000000000000000a", RECORDED_USER);
    }
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), estate)
        .await
        .unwrap();
    let created: Vec<String> = exchanges
        .iter()
        .filter(|e| e.request.method == "POST")
        .filter_map(|e| {
            e.response.body["result"]["sys_id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    // Each row as first seen, field by field, from the reads before the run wrote it.
    let mut credentials: Vec<BTreeMap<String, String>> = Vec::new();
    let mut registries: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut written: Vec<String> = created.clone();
    for exchange in exchanges {
        if table_of(exchange).as_deref() != Some("oauth_credential") {
            continue;
        }
        if exchange.request.method != "GET" {
            written.extend(exchange.request.path.rsplit('/').next().map(str::to_owned));
        }
        for row in ok_rows(exchange) {
            let id = text(&row, "sys_id");
            if id.is_empty() || written.contains(&id) {
                continue;
            }
            let position = match credentials.iter().position(|r| r["sys_id"] == id) {
                Some(p) => p,
                None => {
                    credentials.push(BTreeMap::new());
                    credentials.len() - 1
                }
            };
            let peer = text(&row, "peer");
            for (key, value) in &row {
                let value = value.as_str().unwrap_or("").to_owned();
                match key.split_once('.') {
                    Some(("peer", column)) if !peer.is_empty() => {
                        registries
                            .entry(peer.clone())
                            .or_default()
                            .entry(column.to_owned())
                            .or_insert(value);
                    }
                    Some(_) => {}
                    None => {
                        credentials[position].entry(key.clone()).or_insert(value);
                    }
                }
            }
        }
    }
    for (sys_id, fields) in &registries {
        let mut row: Vec<(&str, &str)> = vec![("sys_id", sys_id.as_str())];
        row.extend(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        sim.insert_row("oauth_entity", &row);
    }
    // The requestor profiles the rows reference exist on the instance: a row created with one
    // keeps it only if it does.
    let profiles: BTreeSet<&str> = credentials
        .iter()
        .filter_map(|fields| fields.get("oauth_requestor_profile"))
        .map(String::as_str)
        .filter(|id| !id.is_empty())
        .collect();
    for sys_id in profiles {
        sim.insert_row("oauth_requestor_profile", &[("sys_id", sys_id)]);
    }
    for fields in &credentials {
        let row: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        sim.insert_row("oauth_credential", &row);
    }
    for exchange in exchanges
        .iter()
        .filter(|e| e.request.path.ends_with("/secrets"))
    {
        let Some(items) = exchange.response.body["result"].as_array() else {
            continue;
        };
        for item in items {
            let id = item["sys_id"].as_str().unwrap_or("");
            if let Some(token) = item["refresh_token"].as_str() {
                set_secret(&sim, "oauth_credential", id, "token_received", token);
            }
            let peer = sim.row("oauth_credential", id).map(|r| r["peer"].clone());
            if let (Some(secret), Some(peer)) = (item["client_secret"].as_str(), peer) {
                set_secret(&sim, "oauth_entity", &peer, "client_secret", secret);
            }
        }
    }
    sim
}

/// Replaces `from` by `to` in every string of `value`.
fn substitute(value: &mut Value, map: &HashMap<String, String>) {
    match value {
        Value::String(s) => {
            for (from, to) in map {
                *s = s.replace(from.as_str(), to);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, map)),
        Value::Object(o) => o.values_mut().for_each(|v| substitute(v, map)),
        _ => {}
    }
}

/// The timestamps the simulator stamps itself, set to one fixed value at any depth.
fn unstamp(value: &mut Value) {
    match value {
        Value::Object(o) => {
            for (key, v) in o.iter_mut() {
                if STAMPED.contains(&key.as_str()) && v.as_str().is_some_and(|s| !s.is_empty()) {
                    *v = json!("2000-01-01 00:00:00");
                } else {
                    unstamp(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unstamp),
        _ => {}
    }
}

fn decoded(exchange: &Exchange) -> Value {
    let mut exchange = exchange.clone();
    unstamp(&mut exchange.response.body);
    // Without ORDERBY the Table API promises no order (a real instance answers in whatever
    // order its database gives): compare such lists as sets.
    let ordered = exchange
        .request
        .query
        .iter()
        .any(|(k, v)| k == "sysparm_query" && v.contains("ORDERBY"));
    if !ordered && let Some(Value::Array(rows)) = exchange.response.body.get_mut("result") {
        rows.sort_by_key(|row| row["sys_id"].as_str().unwrap_or_default().to_owned());
    }
    decode_answer(&exchange)
}

/// Replays one transcript against a simulator seeded from it; the first difference fails.
async fn replay(dir: &Path) {
    let exchanges = read_transcript(dir).unwrap();
    assert!(!exchanges.is_empty(), "{}: no exchange", dir.display());
    for (i, exchange) in exchanges.iter().enumerate() {
        assert_eq!(
            decode_answer(exchange)
                .get("undecodable")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            0,
            "{} #{}: rows the keeper's decoders drop",
            dir.display(),
            i + 1
        );
    }
    let sim = simulator_for(&exchanges).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // Recorded sys_id → the simulator's, for rows created during the run, and back.
    let mut to_sim: HashMap<String, String> = HashMap::new();
    let mut to_recorded: HashMap<String, String> =
        [(sim.base_url(), INSTANCE_PLACEHOLDER.to_owned())].into();
    for (i, recorded) in exchanges.iter().enumerate() {
        let mut request = recorded.request.clone();
        for (from, to) in &to_sim {
            request.path = request.path.replace(from.as_str(), to);
        }
        let mut body = request.body.clone();
        if let Some(body) = &mut body {
            substitute(body, &to_sim);
        }
        let method = Method::from_bytes(request.method.as_bytes()).unwrap();
        let mut call = http
            .request(method, format!("{}{}", sim.base_url(), request.path))
            .query(&request.query)
            .basic_auth(sim.username(), Some(sim.password()))
            .header("Accept", "application/json");
        if let Some(body) = &body {
            call = call.json(body);
        }
        let resp = call.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers: BTreeMap<String, String> = ["content-type", "x-total-count", "link"]
            .iter()
            .filter_map(|h| {
                resp.headers()
                    .get(*h)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| ((*h).to_owned(), v.to_owned()))
            })
            .collect();
        let bytes = resp.bytes().await.unwrap();
        let mut answer: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        if recorded.request.method == "POST"
            && let (Some(ours), Some(theirs)) = (
                answer["result"]["sys_id"].as_str(),
                recorded.response.body["result"]["sys_id"].as_str(),
            )
        {
            to_sim.insert(theirs.to_owned(), ours.to_owned());
            to_recorded.insert(ours.to_owned(), theirs.to_owned());
        }
        substitute(&mut answer, &to_recorded);
        let mut headers = headers;
        for value in headers.values_mut() {
            *value = value.replace(&sim.base_url(), INSTANCE_PLACEHOLDER);
        }
        let simulated = Exchange {
            request: recorded.request.clone(),
            response: RecordedResponse {
                status,
                headers,
                body: answer,
            },
        };
        assert_eq!(
            decoded(&simulated),
            decoded(recorded),
            "{} #{}: {} {} answers differently in the simulator (left) and the transcript (right)",
            dir.display(),
            i + 1,
            recorded.request.method,
            recorded.request.path
        );
    }
}

#[tokio::test]
async fn committed_transcripts_replay_against_the_decoders_and_the_simulator() {
    let mut replayed = Vec::new();
    for source in std::fs::read_dir(transcripts()).unwrap() {
        let source = source.unwrap().path();
        if !source.is_dir() {
            continue;
        }
        for transcript in std::fs::read_dir(&source).unwrap() {
            let dir = transcript.unwrap().path();
            if dir.is_dir() {
                replay(&dir).await;
                replayed.push(dir);
            }
        }
    }
    for name in ["sim/check", "sim/once"] {
        assert!(
            replayed.iter().any(|d| d.ends_with(name)),
            "tests/transcripts/{name} replayed"
        );
    }
}
