//! The status page on the admin port (`GET /`, `/api/status`): the real binary's `run` on the
//! simulator, over plain HTTP (filters, escaping, the JSON against `status --format json`,
//! 404/405, no secret) and in a real browser (Debian's headless Chromium: every credential's
//! name is text, no injected element exists, and the screenshot the docs show).

use crate::support::{Bed, PATIENCE, Running};
use jiff::SignedDuration;
use serde_json::Value;
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, Fault, FaultTarget, ProviderKind, RegistrySpec, SeededCredential,
    SeededRegistry,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Credential names the instance may hold that must stay text on the page.
const HOSTILE_NAMES: [&str; 2] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(2)>",
];

/// A registry name that must stay text on the page.
const HOSTILE_REGISTRY: &str = "Partner \"apps\" <b>&</b> co";

/// A client secret and a refresh token the page must never show.
const KNOWN_SECRET: &str = "Q8~status-page-client-secret-never-shown";
const KNOWN_REFRESH_TOKEN: &str = "rt-status-page-refresh-token-never-shown";

/// An estate in every state the page shows: fresh, refreshed, a dead refresh token (revoked,
/// and a refresh row past its expiry), a registry with a wrong client secret, an answer that
/// stays in the journal because its write is refused, and hostile names.
struct PageEstate {
    estate: Estate,
    registries: Vec<SeededRegistry>,
    /// The credential whose write-back the instance refuses.
    undelivered: SeededCredential,
}

fn page_estate(seed: u64) -> PageEstate {
    let mut estate = Estate::empty(seed).with_user_time_zone("UTC");
    let graph = estate.add_registry(
        RegistrySpec::new("Microsoft Entra ID (Graph)", ProviderKind::EntraLike)
            .provider_id("entra"),
    );
    let okta = estate.add_registry(
        RegistrySpec::new("Okta Workforce", ProviderKind::RotatingReuseDetection)
            .provider_id("okta"),
    );
    let legacy = estate.add_registry(
        RegistrySpec::new("Entra Legacy Mail App", ProviderKind::EntraLike)
            .provider_id("entra-legacy")
            .wrong_stored_secret("Q8~expired-secret-rotated-last-year"),
    );
    let partner = estate.add_registry(
        RegistrySpec::new(HOSTILE_REGISTRY, ProviderKind::NonRotating)
            .provider_id("partner")
            .client_secret(KNOWN_SECRET),
    );
    let stale = |reg: &str, name: &str| {
        CredentialSpec::new(reg, name).access_expires_in(SignedDuration::from_mins(3))
    };
    for spec in [
        CredentialSpec::new(&graph, "Mailbox helpdesk@contoso.com"),
        CredentialSpec::new(&graph, "SharePoint sync").access_missing(),
        CredentialSpec::new(&graph, "Mailbox former.employee@contoso.com")
            .access_expires_in(SignedDuration::from_mins(-30))
            .revoked(),
        CredentialSpec::new(&graph, "Mailbox closed@contoso.com")
            .access_missing()
            .refresh_last_updated_ago(SignedDuration::from_hours(120 * 24))
            .refresh_expires_in(SignedDuration::from_hours(-30 * 24)),
        CredentialSpec::new(&okta, "Okta user sync"),
        stale(&okta, HOSTILE_NAMES[0]),
        stale(&legacy, "Mailbox legacy-support@contoso.com"),
        stale(&partner, HOSTILE_NAMES[1]).refresh_token(KNOWN_REFRESH_TOKEN),
    ] {
        estate.add_credential(spec);
    }
    let undelivered = estate.add_credential(stale(&graph, "Teams notifications"));
    PageEstate {
        registries: estate.registries().to_vec(),
        estate,
        undelivered,
    }
}

/// The bed and a daemon that has finished its first cycle, with one answer left in its journal.
async fn daemon_on(seed: u64) -> (Bed, Running, PageEstate) {
    let page = page_estate(seed);
    let bed = Bed::start(page.estate.clone()).await;
    // The instance refuses the writes of one credential: its answer stays in the journal.
    let access_row = page.undelivered.access_sys_id.clone().unwrap();
    bed.sim.inject(
        Fault::status(FaultTarget::TableApi, 403)
            .method("PATCH")
            .path(&access_row),
    );
    let config =
        bed.config_file("[server]\nlisten = \"127.0.0.1:0\"\n\n[refresh]\ninterval = \"1h\"\n");
    let daemon = Running::start(&bed, &config, bed.sim.password()).await;
    daemon.wait_for("cycle.finished").await;
    (bed, daemon, page)
}

async fn get(url: &str) -> (u16, Vec<(String, String)>, String) {
    send(reqwest::Method::GET, url).await
}

async fn send(method: reqwest::Method, url: &str) -> (u16, Vec<(String, String)>, String) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .request(method, url)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    (status, headers, response.text().await.unwrap())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Credential names in a `status` JSON document, sorted.
fn names(doc: &Value) -> Vec<String> {
    let mut names: Vec<String> = doc["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The keys of a JSON object.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn the_page_filters_escapes_and_serves_what_status_serves() {
    let (bed, daemon, page) = daemon_on(71).await;
    let base = &daemon.base;

    let (status, headers, html) = get(&format!("{base}/")).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        header(&headers, "content-security-policy")
            .is_some_and(|p| p.starts_with("default-src 'none'")),
        "{headers:?}"
    );
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    for name in HOSTILE_NAMES {
        assert!(!html.contains(name), "{name} unescaped");
    }
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
    assert!(html.contains("Partner &quot;apps&quot; &lt;b&gt;&amp;&lt;/b&gt; co"));
    assert!(!html.contains("<script") && !html.contains("<img") && !html.contains("<b>"));
    for expected in [
        "Mailbox helpdesk@contoso.com",
        "Teams notifications",
        "✗ needs re-authorisation",
        "ServiceNow admin (re-authorise the credential)",
        "ServiceNow admin (Application Registry) or IdP admin",
        "ServiceNow admin (integration user rights, instance health)",
        "1 answer(s) wait to be delivered",
        "✓ this keeper",
        "Next cycle",
    ] {
        assert!(html.contains(expected), "{expected} missing in:\n{html}");
    }

    // Filters: repeated or comma-separated, by state and registry; the page's own form sends
    // empty values for "any".
    let (_, _, reauth) = get(&format!("{base}/?state=needs+re-authorisation&registry=")).await;
    assert!(reauth.contains("Mailbox closed@contoso.com"), "{reauth}");
    assert!(!reauth.contains("Okta user sync"), "{reauth}");
    let (_, _, okta) = get(&format!("{base}/?registry=okta+workforce&state=fresh,due")).await;
    assert!(
        okta.contains("Okta user sync") && !okta.contains("Mailbox helpdesk"),
        "{okta}"
    );
    let (status, _, unknown) = get(&format!("{base}/?state=sleeping")).await;
    assert_eq!(status, 200);
    assert!(
        unknown.contains("No credential matches this filter"),
        "{unknown}"
    );
    assert!(
        unknown.contains("no state is called &quot;sleeping&quot;"),
        "{unknown}"
    );

    // The JSON: `/?format=json` and `/api/status` serve the document `status --format json`
    // prints, as of the daemon's last cycle, with the same filters.
    let (status, headers, json) = get(&format!("{base}/?format=json")).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let served: Value = serde_json::from_str(&json).unwrap();
    let (_, _, api) = get(&format!("{base}/api/status")).await;
    assert_eq!(serde_json::from_str::<Value>(&api).unwrap(), served);
    let config = bed.dir.path().join("keeper.toml");
    let printed = bed.status_json(&config).await;
    assert_eq!(keys(&served), keys(&printed));
    assert_eq!(names(&served), names(&printed));
    let row_keys = |doc: &Value| -> BTreeSet<BTreeSet<String>> {
        doc["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(keys)
            .collect()
    };
    assert_eq!(row_keys(&served), row_keys(&printed));
    assert_eq!(keys(&served["lease"]), keys(&printed["lease"]));
    // Rows say where each credential stands after the cycle, as `status` says it now: what the
    // daemon refreshed is fresh in both.
    let state_of = |doc: &Value, sys_id: &Value| {
        doc["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| &c["sys_id"] == sys_id)
            .map(|c| c["state"].clone())
    };
    let fresh: Vec<&Value> = served["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "fresh")
        .collect();
    assert!(fresh.len() >= 4, "refreshed ones count as fresh: {served}");
    for row in fresh {
        assert_eq!(
            state_of(&printed, &row["sys_id"]),
            Some(Value::from("fresh")),
            "{}",
            row["name"]
        );
    }
    assert_eq!(
        served["lease"]["this_keeper"], true,
        "the daemon holds the lease"
    );
    assert_eq!(
        served["credentials"].as_array().unwrap().len(),
        page.estate.credentials().len()
    );
    let (_, _, reauth) = get(&format!("{base}/api/status?state=needs_re-authorisation")).await;
    let reauth: Value = serde_json::from_str(&reauth).unwrap();
    // The refresh row past its expiry, and the grant the provider refused this cycle.
    assert_eq!(
        names(&reauth),
        [
            "Mailbox closed@contoso.com",
            "Mailbox former.employee@contoso.com"
        ],
        "filtered like the page"
    );
    assert_eq!(
        reauth["summary"],
        serde_json::json!({"needs re-authorisation": 2})
    );
    assert_eq!(reauth["generated_at"], served["generated_at"]);

    // Other paths, methods and formats.
    let (status, _, _) = get(&format!("{base}/status.html")).await;
    assert_eq!(status, 404);
    let (status, headers, _) = send(reqwest::Method::POST, &format!("{base}/")).await;
    assert_eq!(status, 405);
    assert!(
        header(&headers, "allow").is_some_and(|a| a.contains("GET")),
        "{headers:?}"
    );
    let (status, _, _) = send(reqwest::Method::DELETE, &format!("{base}/api/status")).await;
    assert_eq!(status, 405);
    let (status, _, body) = get(&format!("{base}/?format=xml")).await;
    assert_eq!(status, 400);
    assert!(body.contains("format must be html or json"), "{body}");

    daemon.signal("TERM");
    let (code, log) = daemon.exit_code().await;
    assert_eq!(code, Some(0), "{log}");
}

/// Every secret the simulator knows or the keeper sent: the integration user's password, the
/// journal key, client secrets, and every refresh and access token seeded, stored, presented
/// at a token endpoint or carried by a write (the refused write's tokens live only in the
/// journal and in that request).
fn secrets(bed: &Bed, registries: &[SeededRegistry]) -> Vec<String> {
    let sim = &bed.sim;
    let mut secrets = vec![
        sim.password().to_string(),
        bed.key_hex(),
        KNOWN_SECRET.to_string(),
        KNOWN_REFRESH_TOKEN.to_string(),
    ];
    secrets.extend(registries.iter().map(|r| r.client_secret.clone()));
    for c in &bed.seeded {
        secrets.push(c.refresh_token.clone());
        secrets.extend(c.access_token.clone());
    }
    for row in sim.rows("oauth_credential") {
        secrets.extend(sim.decrypted("oauth_credential", &row["sys_id"], "token_received"));
    }
    for r in registries {
        secrets.extend(sim.presented_refresh_tokens(&r.provider_id));
    }
    for request in bed.writes() {
        if let Ok(body) = serde_json::from_str::<Value>(&request.body)
            && let Some(token) = body["token_received"].as_str()
        {
            secrets.push(token.to_string());
        }
    }
    secrets.retain(|s| s.len() >= 8);
    secrets
}

#[tokio::test]
async fn nothing_secret_reaches_the_page_or_its_json() {
    let (bed, daemon, page) = daemon_on(72).await;
    let mut served = String::new();
    for path in ["/", "/?format=json", "/api/status", "/?state=due"] {
        let (status, _, body) = get(&format!("{}{path}", daemon.base)).await;
        assert_eq!(status, 200, "{path}: {body}");
        served.push_str(&body);
    }
    let refused: Vec<_> = bed
        .writes()
        .into_iter()
        .filter(|w| w.status == 403)
        .collect();
    assert!(
        !refused.is_empty(),
        "the undelivered answer's write was refused"
    );
    let secrets = secrets(&bed, &page.registries);
    assert!(secrets.len() > 20, "{}", secrets.len());
    for secret in &secrets {
        assert!(
            !served.contains(secret.as_str()),
            "a secret ({} chars) reached the status page",
            secret.len()
        );
    }
}

/// Debian's Chromium, or a clear failure: the test does not skip silently.
fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the status page's browser test needs Debian's Chromium: apt-get install -y chromium (.ci/run installs it when missing)"
        )
    })
}

/// Runs headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=…`) and returns
/// its stdout and stderr.
async fn headless(url: &str, args: &[&str], profile: &Path) -> (String, String) {
    let mut command = tokio::process::Command::new(chromium());
    command
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-proxy-server",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--enable-logging=stderr",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("Chromium finishes within the patience")
        .expect("Chromium runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "Chromium failed: {stderr}");
    (stdout, stderr)
}

/// Text as an HTML serializer writes it into a text node.
fn as_text_node(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A PNG's width and height, from its header.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test]
async fn a_real_browser_renders_every_name_as_text() {
    let (_bed, daemon, page) = daemon_on(73).await;
    let url = format!("{}/", daemon.base);
    let scratch = tempfile::tempdir().unwrap();
    let (dom, log) = headless(&url, &["--dump-dom"], &scratch.path().join("profile")).await;

    assert!(dom.contains("sn-oauth-keeper status"), "{dom}");
    for c in page.estate.credentials() {
        assert!(
            dom.contains(&format!("<strong>{}</strong>", as_text_node(&c.name))),
            "{} is not text in the rendered page",
            c.name
        );
    }
    // The page has no script, image or <b> of its own: any in the DOM was injected.
    for element in ["<script", "<img", "<b>", "onerror=\""] {
        assert!(
            !dom.contains(element),
            "{element} in the rendered DOM:\n{dom}"
        );
    }
    assert!(
        !log.contains("Content Security Policy"),
        "the browser refused part of the page:\n{log}"
    );

    // The screenshots the docs show: the whole page on a desktop, and on a phone (cards).
    for (file, size) in [
        ("status-page.png", "1400,1720"),
        ("status-page-phone.png", "412,2400"),
    ] {
        let shot = scratch.path().join(file);
        headless(
            &url,
            &[
                &format!("--screenshot={}", shot.display()),
                &format!("--window-size={size}"),
            ],
            &scratch.path().join("profile"),
        )
        .await;
        let png = std::fs::read(&shot).expect("Chromium wrote the screenshot");
        let (width, _) = png_size(&png);
        assert_eq!(width.to_string(), size.split(',').next().unwrap());
        if std::env::var_os("SN_OAUTH_KEEPER_UPDATE_SCREENSHOT").is_some() {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::write(docs.join(file), &png).unwrap();
        }
    }
}

#[tokio::test]
async fn a_standby_names_the_lease_holder_and_what_waits_for_its_journal() {
    let (bed, holder, page) = daemon_on(74).await;
    let config = bed.config_file_named(
        "standby",
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[refresh]\ninterval = \"1h\"\n",
    );
    let standby = Running::start(&bed, &config, bed.sim.password()).await;
    standby.wait_for("cycle.finished").await;

    let (_, _, own) = get(&format!("{}/api/status", holder.base)).await;
    let holder_id = serde_json::from_str::<Value>(&own).unwrap()["lease"]["holder"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, html) = get(&format!("{}/", standby.base)).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(&format!(
            "<code>{holder_id}</code> — another keeper (this one is on standby)"
        )),
        "{html}"
    );
    assert!(html.contains("Time left"), "{html}");
    assert!(
        html.contains("1 credential(s) wait for another keeper's journal"),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            "<strong>{}</strong> <small><code>{}</code></small> — keeper <code>{holder_id}</code>",
            page.undelivered.name, page.undelivered.refresh_sys_id
        )),
        "{html}"
    );
    assert!(
        html.contains("nobody here (the keeper holding the lease refreshes it)"),
        "{html}"
    );
    let (_, _, json) = get(&format!("{}/api/status", standby.base)).await;
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["lease"]["this_keeper"], false);
    let waiting = json["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["sys_id"] == page.undelivered.refresh_sys_id.as_str())
        .unwrap();
    assert_eq!(waiting["waiting_for"], holder_id.as_str());
}

#[tokio::test]
async fn before_the_first_cycle_the_page_says_so_and_the_json_waits() {
    let page = page_estate(75);
    let bed = Bed::start(page.estate).await;
    // The first cycle's first read hangs a while: the page is asked meanwhile.
    bed.sim.inject(
        Fault::delay(FaultTarget::TableApi, std::time::Duration::from_secs(3))
            .method("GET")
            .times(1),
    );
    let config =
        bed.config_file("[server]\nlisten = \"127.0.0.1:0\"\n\n[refresh]\ninterval = \"1h\"\n");
    let daemon = Running::start(&bed, &config, bed.sim.password()).await;
    // The loop marks the cycle as running just after it says it started.
    let html = loop {
        let (status, _, html) = get(&format!("{}/", daemon.base)).await;
        assert_eq!(status, 200, "{html}");
        assert_eq!(
            daemon.count("cycle.finished"),
            0,
            "the first cycle ended too soon"
        );
        if html.contains("Cycle running since") {
            break html;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(html.contains("No cycle has finished yet"), "{html}");
    assert!(html.contains("after the cycle in progress"), "{html}");
    let (status, headers, json) = get(&format!("{}/api/status", daemon.base)).await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&json).unwrap()["error"],
        "no cycle has finished yet"
    );
    daemon.wait_for("cycle.finished").await;
    let (status, _, _) = get(&format!("{}/?format=json", daemon.base)).await;
    assert_eq!(status, 200);
}
