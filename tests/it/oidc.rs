//! The keeper against a real, independent authorization server: `oidc-provider` (the
//! OpenID-certified Node.js server, `tests/oidc/`), started on loopback by each test.
//!
//! The test mints refresh tokens through the server's own models (no browser), seeds the
//! simulator's ServiceNow side with them — registries whose `token_url` points at the server —
//! and runs the real binary. What the server saw comes from its own event log (`/_admin/log`),
//! and every access token the keeper stored is checked at the server's introspection endpoint.
//!
//! Set-up happens here, on first use: `npm ci` of `tests/oidc/package-lock.json` into a cache
//! folder under the target directory, once per lockfile, guarded by a file lock against
//! concurrent test processes. Without Node.js 20+ and npm, or when the install fails, these tests
//! fail with a message that says so; they are never skipped.

use crate::support::{Bed, install_once};
use serde_json::{Value, json};
use sn_oauth_keeper::domain::report::OutcomeKind;
use sn_oauth_keeper::engine::Mode;
use sn_oauth_keeper::journal::JournalKey;
use sn_oauth_keeper::journal::{Journal, JournalError};
use sn_oauth_keeper_sim::{CredentialSpec, Estate, ProviderKind, RegistrySpec, SeededCredential};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// The nasty secret of the `client_secret_basic` client: every character RFC 6749 §2.3.1's
/// form-encoding exists for.
const NASTY_SECRET: &str = "s3cr+t/with=all:the%bad~chars and spaces";
const POST_SECRET: &str = "post-client-secret-8d0c";
const INTROSPECTOR_SECRET: &str = "introspector-secret-51a2";
const FULL_SCOPE: &str = "openid offline_access api:read api:write";
const API: &str = "https://api.example.com/";
const OTHER_API: &str = "https://other.example.com/";

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn keys() -> PathBuf {
    manifest().join("tests/oidc/keys")
}

/// The `node_modules` folder holding oidc-provider: installed on first use, then reused.
fn node_modules() -> PathBuf {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match INSTALLED.get_or_init(install) {
        Ok(path) => path.clone(),
        Err(why) => panic!("{why}"),
    }
}

fn install() -> Result<PathBuf, String> {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| {
            format!(
                "the oidc-provider tests need Node.js 20 or newer and npm on PATH, and `node` cannot be run ({e}); install Node.js 20 or newer with npm"
            )
        })?;
    let version = String::from_utf8_lossy(&node.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if !node.status.success() || major < 20 {
        return Err(format!(
            "the oidc-provider tests need Node.js 20 or newer; `node --version` said {version:?}"
        ));
    }
    let source = manifest().join("tests/oidc");
    let lock = std::fs::read(source.join("package-lock.json"))
        .map_err(|e| format!("tests/oidc/package-lock.json: {e}"))?;
    let package = std::fs::read(source.join("package.json"))
        .map_err(|e| format!("tests/oidc/package.json: {e}"))?;
    let mut both = lock.clone();
    both.extend_from_slice(&package);
    let cache = install_once("oidc-provider", &both, |cache| {
        std::fs::write(cache.join("package.json"), &package).map_err(|e| e.to_string())?;
        std::fs::write(cache.join("package-lock.json"), &lock).map_err(|e| e.to_string())?;
        let npm = std::process::Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--loglevel=error",
            ])
            .current_dir(cache)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!(
                    "the oidc-provider tests need npm on PATH to install tests/oidc/package-lock.json, and `npm` cannot be run ({e})"
                )
            })?;
        if !npm.status.success() {
            return Err(format!(
                "`npm ci` of tests/oidc/package-lock.json into {} failed ({}); the oidc-provider tests cannot run without it:\n{}",
                cache.display(),
                npm.status,
                String::from_utf8_lossy(&npm.stderr)
            ));
        }
        if !cache
            .join("node_modules/oidc-provider/package.json")
            .exists()
        {
            return Err(format!(
                "`npm ci` finished but {} holds no oidc-provider",
                cache.join("node_modules").display()
            ));
        }
        Ok(())
    })?;
    Ok(cache.join("node_modules"))
}

/// A client registered at the server.
pub(crate) struct Client {
    id: &'static str,
    metadata: Value,
}

pub(crate) fn post_client() -> Client {
    Client {
        id: "keeper-post",
        metadata: json!({
            "client_id": "keeper-post",
            "client_secret": POST_SECRET,
            "token_endpoint_auth_method": "client_secret_post",
        }),
    }
}

fn basic_client() -> Client {
    Client {
        id: "keeper basic+client",
        metadata: json!({
            "client_id": "keeper basic+client",
            "client_secret": NASTY_SECRET,
            "token_endpoint_auth_method": "client_secret_basic",
        }),
    }
}

fn jwt_client(id: &'static str, alg: &str, cert: &str) -> Client {
    let pem = std::fs::read_to_string(keys().join(cert)).unwrap();
    Client {
        id,
        metadata: json!({
            "client_id": id,
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": alg,
            "certificate_pem": pem,
        }),
    }
}

/// oidc-provider on loopback, killed on drop (and exiting by itself when its stdin closes).
pub(crate) struct Server {
    child: tokio::process::Child,
    issuer: String,
    token_endpoint: String,
    admin_token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    pub(crate) async fn start(clients: &[Client], rotate: bool) -> Server {
        let modules = node_modules();
        let dir = tempfile::tempdir().unwrap();
        let admin_token = format!("admin-{:016x}", fastrand::u64(..));
        let mut registered: Vec<Value> = clients.iter().map(|c| c.metadata.clone()).collect();
        registered.push(json!({
            "client_id": "introspector",
            "client_secret": INTROSPECTOR_SECRET,
            "token_endpoint_auth_method": "client_secret_basic",
        }));
        let config = json!({
            "admin_token": admin_token,
            "rotate": rotate,
            "access_ttl": 3600,
            "refresh_ttl": 14 * 86_400,
            "clients": registered,
            "resources": { API: "api:read api:write", OTHER_API: "api:read" },
        });
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let stderr_path = dir.path().join("stderr.txt");
        let mut child = tokio::process::Command::new("node")
            .arg(manifest().join("tests/oidc/server.mjs"))
            .arg(&config_path)
            .env("OIDC_PROVIDER_MODULES", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts the oidc-provider server");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let Some(first) = first else {
            panic!(
                "oidc-provider did not start:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        };
        // Keep the pipe open and drained for whatever else comes.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ready: Value = serde_json::from_str(&first).unwrap();
        Server {
            child,
            issuer: ready["issuer"].as_str().unwrap().to_string(),
            token_endpoint: ready["token_endpoint"].as_str().unwrap().to_string(),
            admin_token,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            _dir: dir,
        }
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/_admin/{path}", self.issuer))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "admin {path}: {response:?}");
        response.json().await.unwrap()
    }

    /// Mints a refresh token as a code exchange would: a grant with `scope` (and resource
    /// scopes), and a refresh token of it. Returns (refresh token, grant id).
    async fn mint(&self, client: &str, scope: &str, resources: Value) -> (String, String) {
        let minted = self
            .admin(
                "mint",
                json!({ "client_id": client, "scope": scope, "resources": resources }),
            )
            .await;
        (
            minted["refresh_token"].as_str().unwrap().to_string(),
            minted["grant_id"].as_str().unwrap().to_string(),
        )
    }

    pub(crate) async fn log(&self) -> Vec<Value> {
        self.http
            .get(format!("{}/_admin/log", self.issuer))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn token_state(&self, refresh_token: &str) -> Value {
        self.admin("state", json!({ "refresh_token": refresh_token }))
            .await
    }

    /// The server's introspection endpoint on `token`.
    async fn introspect(&self, token: &str) -> Value {
        self.http
            .post(format!("{}/token/introspection", self.issuer))
            .basic_auth("introspector", Some(INTROSPECTOR_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A refresh request straight to the server, as a careless second client would send it.
    async fn refresh_directly(&self, client: &str, secret: &str, refresh_token: &str) -> Value {
        self.http
            .post(&self.token_endpoint)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client),
                ("client_secret", secret),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            // What the server said is the first thing to read when a test here fails.
            let said = std::fs::read_to_string(self._dir.path().join("stderr.txt"));
            eprintln!("oidc-provider's stderr:\n{}", said.unwrap_or_default());
        }
    }
}

/// Token endpoint requests in the server's log (not the revocation events).
pub(crate) fn grants(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|e| e.get("grant_type").is_some())
        .collect()
}

/// Fails if the server ever saw a consumed refresh token again or revoked a grant.
pub(crate) fn assert_no_reuse(log: &[Value]) {
    let reuse: Vec<&Value> = log
        .iter()
        .filter(|e| {
            e["event"] == "grant.revoked" || e["error_detail"] == "refresh token already used"
        })
        .collect();
    assert!(
        reuse.is_empty(),
        "the server detected refresh-token reuse: {reuse:#?}"
    );
}

/// The plaintext tokens ServiceNow holds for a credential: (refresh token, access token).
fn stored(bed: &Bed, c: &SeededCredential) -> (String, Option<String>) {
    let refresh = bed
        .sim
        .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
        .expect("refresh row readable");
    let mut access: Vec<String> = bed
        .sim
        .rows("oauth_credential")
        .into_iter()
        .filter(|r| {
            r.get("type").map(String::as_str) == Some("access_token")
                && r.get("oauth_requestor_profile") == Some(&c.requestor_profile)
        })
        .filter_map(|r| r.get("sys_id").cloned())
        .filter_map(|id| bed.sim.decrypted("oauth_credential", &id, "token_received"))
        .collect();
    assert!(
        access.len() <= 1,
        "{}: {} access rows",
        c.name,
        access.len()
    );
    (refresh, access.pop())
}

/// Every access token ServiceNow holds is active at the server, for the right client; every
/// refresh token it holds is the live one of its family. Returns the introspection answers.
pub(crate) async fn assert_all_live(
    bed: &Bed,
    server: &Server,
    clients: &[(&SeededCredential, &str)],
) -> Vec<Value> {
    let mut answers = Vec::new();
    for (c, client) in clients {
        let (refresh, access) = stored(bed, c);
        let state = server.token_state(&refresh).await;
        assert_eq!(state["found"], true, "{}: {state}", c.name);
        assert_eq!(
            state["consumed"], false,
            "{}: stored refresh token was consumed",
            c.name
        );
        assert_eq!(state["grant"], true, "{}: grant gone", c.name);
        let access = access.unwrap_or_else(|| panic!("{}: no access token stored", c.name));
        let answer = server.introspect(&access).await;
        assert_eq!(answer["active"], true, "{}: {answer}", c.name);
        assert_eq!(answer["client_id"], *client, "{}: {answer}", c.name);
        answers.push(answer);
    }
    answers
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn registry(name: &str, client: &str, secret: &str, server: &Server) -> RegistrySpec {
    RegistrySpec::new(name, ProviderKind::RotatingReuseDetection)
        .provider_id("oidc-provider")
        .client_id(client)
        .client_secret(secret)
        .token_url(&server.token_endpoint)
}

/// A registry signing with the keeper's own key: pinned to the server's token endpoint, the
/// only place that key signs for.
fn key_config(name: &str, alg: &str, key: &str, cert: &str, server: &Server) -> String {
    format!(
        "[[registry]]\nname = \"{name}\"\nclient_auth = \"private_key_jwt\"\njwt_alg = \"{alg}\"\nprivate_key_file = \"{}\"\ncertificate_file = \"{}\"\ntoken_url = \"{}\"\n\n",
        keys().join(key).display(),
        keys().join(cert).display(),
        server.token_endpoint
    )
}

#[tokio::test]
async fn every_client_authentication_refreshes_at_a_real_server() {
    let clients = [
        post_client(),
        basic_client(),
        jwt_client("keeper-ps256", "PS256", "client-a.cert.pem"),
        jwt_client("keeper-rs256", "RS256", "client-b.cert.pem"),
    ];
    let server = Server::start(&clients, true).await;
    let mut estate = Estate::empty(71).with_user_time_zone("UTC");
    let regs = [
        (
            "Post app",
            registry("Post app", "keeper-post", POST_SECRET, &server),
        ),
        // ServiceNow stores the nasty secret; the companion hands it out; Basic carries it.
        (
            "Basic app",
            registry("Basic app", "keeper basic+client", NASTY_SECRET, &server),
        ),
        // Certificate apps: what the instance stores as a secret is never used.
        (
            "PS256 app",
            registry("PS256 app", "keeper-ps256", "unused-stored-secret", &server),
        ),
        (
            "RS256 app",
            registry("RS256 app", "keeper-rs256", "unused-stored-secret", &server),
        ),
    ];
    let mut seeded = Vec::new();
    for (i, (_, spec)) in regs.into_iter().enumerate() {
        let client = clients[i].id;
        let reg = estate.add_registry(spec);
        for (n, missing) in [(0, true), (1, false)] {
            let (rt, _) = server.mint(client, FULL_SCOPE, json!({})).await;
            let spec = CredentialSpec::new(&reg, format!("{client} #{n}"))
                .scopes(FULL_SCOPE)
                .refresh_token(&rt);
            let spec = if missing {
                spec.access_missing()
            } else {
                spec.access_expires_in(jiff::SignedDuration::from_secs(-60))
            };
            seeded.push((estate.add_credential(spec), client, rt));
        }
    }
    let bed = Bed::start(estate).await;
    let config = bed.config_file(&format!(
        "[[registry]]\nname = \"Basic app\"\nclient_auth = \"basic\"\n\n{}{}",
        key_config(
            "PS256 app",
            "PS256",
            "client-a.key.pem",
            "client-a.cert.pem",
            &server,
        ),
        // A PKCS#1 key file ("BEGIN RSA PRIVATE KEY") works as well as PKCS#8.
        key_config(
            "RS256 app",
            "RS256",
            "client-b.pkcs1.key.pem",
            "client-b.cert.pem",
            &server,
        ),
    ));
    let out = bed
        .run_binary(&[
            "once",
            "--config",
            config.to_str().unwrap(),
            "--log-level",
            "trace",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("8 refreshed"),
        "{}",
        text(&out)
    );

    let log = server.log().await;
    assert_no_reuse(&log);
    let grants = grants(&log);
    assert_eq!(grants.len(), 8, "one request per credential: {grants:#?}");
    assert!(grants.iter().all(|g| g["ok"] == true), "{grants:#?}");
    let by_client = |id: &str| -> Vec<&Value> {
        grants
            .iter()
            .copied()
            .filter(|g| g["client_id"] == id)
            .collect()
    };
    for g in by_client("keeper-post") {
        assert_eq!(g["auth_method"], "client_secret_post");
        assert!(
            g["params"]
                .as_array()
                .unwrap()
                .contains(&json!("client_secret"))
        );
    }
    for g in by_client("keeper basic+client") {
        assert_eq!(g["auth_method"], "client_secret_basic");
        assert_eq!(g["basic_auth"], true);
        assert!(
            !g["params"]
                .as_array()
                .unwrap()
                .contains(&json!("client_secret"))
        );
    }
    let thumbprint = |cert: &str| {
        use base64::Engine;
        let pem = std::fs::read_to_string(keys().join(cert)).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    };
    let mut jtis = HashSet::new();
    for (client, alg, cert, legacy) in [
        ("keeper-ps256", "PS256", "client-a.cert.pem", false),
        ("keeper-rs256", "RS256", "client-b.cert.pem", true),
    ] {
        let seen = by_client(client);
        assert_eq!(seen.len(), 2);
        for g in seen {
            assert_eq!(g["auth_method"], "private_key_jwt");
            let params = g["params"].as_array().unwrap();
            assert!(!params.contains(&json!("client_secret")), "{g}");
            let header = &g["assertion"]["header"];
            let claims = &g["assertion"]["claims"];
            assert_eq!(header["alg"], alg);
            assert_eq!(header["typ"], "JWT");
            assert_eq!(header["x5t#S256"], thumbprint(cert).as_str());
            assert_eq!(header.get("x5t").is_some(), legacy, "{header}");
            assert_eq!(claims["aud"], server.token_endpoint.as_str());
            assert_eq!(claims["iss"], client);
            assert_eq!(claims["sub"], client);
            let exp = claims["exp"].as_i64().unwrap();
            let iat = claims["iat"].as_i64().unwrap();
            assert_eq!(exp - iat, 300, "a five-minute assertion");
            assert!(claims["nbf"].as_i64().unwrap() <= iat);
            assert!(jtis.insert(claims["jti"].as_str().unwrap().to_string()));
        }
    }

    // Everything stored is live at the server; the minted tokens were all rotated away.
    let pairs: Vec<(&SeededCredential, &str)> = seeded.iter().map(|(c, id, _)| (c, *id)).collect();
    assert_all_live(&bed, &server, &pairs).await;
    for (c, _, minted) in &seeded {
        assert_ne!(
            &stored(&bed, c).0,
            minted,
            "{}: rotated token not written",
            c.name
        );
        assert_eq!(server.token_state(minted).await["consumed"], true);
    }

    // Nothing secret reached the output, even at trace: not the tokens, not the nasty secret,
    // not a JWT (a client assertion or an ID token), not a line of a private key.
    let output = text(&out);
    let mut secrets: Vec<String> = vec![NASTY_SECRET.into(), POST_SECRET.into()];
    for (c, _, minted) in &seeded {
        let (refresh, access) = stored(&bed, c);
        secrets.extend([minted.clone(), refresh]);
        secrets.extend(access);
    }
    for secret in &secrets {
        assert!(!output.contains(secret.as_str()), "a secret in the output");
    }
    assert!(!output.contains("eyJ"), "a JWT in the output");
    for key in ["client-a.key.pem", "client-b.pkcs1.key.pem"] {
        let pem = std::fs::read_to_string(keys().join(key)).unwrap();
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!output.contains(line), "private key material in the output");
        }
    }
}

/// One registry at the server with `n` credentials, each with its own grant.
pub(crate) async fn rotating_estate(
    server: &Server,
    n: usize,
    seed: u64,
) -> (Estate, Vec<(SeededCredential, String, String)>) {
    let mut estate = Estate::empty(seed).with_user_time_zone("UTC");
    let reg = estate.add_registry(registry("Rotating app", "keeper-post", POST_SECRET, server));
    let mut seeded = Vec::new();
    for i in 0..n {
        let (rt, grant) = server.mint("keeper-post", FULL_SCOPE, json!({})).await;
        let c = estate.add_credential(
            CredentialSpec::new(&reg, format!("credential {i}"))
                .scopes(FULL_SCOPE)
                .access_missing()
                .refresh_token(&rt),
        );
        seeded.push((c, rt, grant));
    }
    (estate, seeded)
}

/// `lead_time` beyond the server's access-token lifetime: every cycle refreshes everything, so
/// every cycle rotates every refresh token.
const EVERY_CYCLE: &str = "[refresh]\nlead_time = \"2h\"\ninterval = \"1s\"\n\n";

#[tokio::test]
async fn rotation_with_reuse_detection_is_never_tripped_and_really_revokes_the_family() {
    let server = Server::start(&[post_client()], true).await;
    let (estate, seeded) = rotating_estate(&server, 3, 72).await;
    let bed = Bed::start(estate).await;
    let config = bed.config_file(EVERY_CYCLE);
    for round in 1..=4 {
        let out = bed
            .run_binary(&["once", "--config", config.to_str().unwrap()])
            .await;
        assert_eq!(out.status.code(), Some(0), "round {round}: {}", text(&out));
    }
    let log = server.log().await;
    assert_no_reuse(&log);
    assert_eq!(grants(&log).len(), 12, "3 credentials × 4 rounds");
    let pairs: Vec<(&SeededCredential, &str)> =
        seeded.iter().map(|(c, _, _)| (c, "keeper-post")).collect();
    assert_all_live(&bed, &server, &pairs).await;
    for (c, _, _) in &seeded {
        let (refresh, _) = stored(&bed, c);
        assert_eq!(
            server.token_state(&refresh).await["rotations"],
            4,
            "{}",
            c.name
        );
    }

    // The server's reuse detection is real: presenting a consumed token (here the minted one,
    // as a careless second client would) revokes the whole family, the keeper's newest token
    // included — and the keeper then reports the credential as needing re-authorisation.
    let (victim, minted, _) = &seeded[0];
    let answer = server
        .refresh_directly("keeper-post", POST_SECRET, minted)
        .await;
    assert_eq!(answer["error"], "invalid_grant", "{answer}");
    let log = server.log().await;
    assert!(
        log.iter().any(|e| e["event"] == "grant.revoked"),
        "{log:#?}"
    );
    let (newest, _) = stored(&bed, victim);
    assert_eq!(
        server.token_state(&newest).await["found"],
        false,
        "the family is gone"
    );

    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = bed.status_json(&config).await;
    let states: Vec<(String, String)> = doc["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["sys_id"].as_str().unwrap().to_string(),
                c["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (c, _, _) in &seeded {
        let state = &states
            .iter()
            .find(|(id, _)| id == &c.refresh_sys_id)
            .unwrap()
            .1;
        if c.refresh_sys_id == victim.refresh_sys_id {
            assert_eq!(state, "needs re-authorisation", "{doc:#}");
        } else {
            assert_ne!(state, "needs re-authorisation", "{doc:#}");
        }
    }
    // The other credentials are unharmed.
    let pairs: Vec<(&SeededCredential, &str)> = seeded[1..]
        .iter()
        .map(|(c, _, _)| (c, "keeper-post"))
        .collect();
    assert_all_live(&bed, &server, &pairs).await;
}

#[tokio::test]
async fn overlapping_cycles_and_a_second_keeper_never_reuse_a_token() {
    let server = Server::start(&[post_client()], true).await;
    let (estate, seeded) = rotating_estate(&server, 4, 73).await;
    let bed = Bed::start(estate).await;

    // Two cycles of one keeper at once: each credential is refreshed by one of them only.
    let mut settings = bed.settings();
    settings.refresh.lead_time = Duration::from_secs(2 * 3600);
    let keeper = Arc::new(bed.keeper_with(settings.clone()));
    let stop = CancellationToken::new();
    let (a, b) = tokio::join!(
        keeper.cycle(Mode::Apply, &stop),
        keeper.cycle(Mode::Apply, &stop)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.count(OutcomeKind::Refreshed) + b.count(OutcomeKind::Refreshed),
        4
    );
    // A second keeper on the same state directory is refused by the journal's lock.
    assert!(matches!(
        Journal::open(&settings.state.dir, Some(&JournalKey::random().unwrap())),
        Err(JournalError::Locked(_))
    ));
    drop(keeper);
    assert_no_reuse(&server.log().await);

    // The real daemon, cycling every second and rotating every token each cycle, while a
    // second binary is started on the same state directory.
    let config = bed.config_file(&format!(
        "{EVERY_CYCLE}[server]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("SN_PASSWORD", bed.sim.password())
        .env("SN_OAUTH_KEEPER_KEY", bed.key_hex())
        .env_remove("SN_OAUTH_KEEPER_LOG_LEVEL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = daemon.stderr.take().unwrap();
    let collected = Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let collected = Arc::clone(&collected);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        })
    };
    // Three daemon cycles' worth of rotations (4 from the in-process cycles before).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut second_tried = false;
    loop {
        let done = grants(&server.log().await).len();
        if done >= 4 + 3 * 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon did not cycle: {done} grants\n{}",
            collected.lock().unwrap()
        );
        if done >= 4 + 4 && !second_tried {
            second_tried = true;
            let second = bed
                .run_binary(&["once", "--config", config.to_str().unwrap()])
                .await;
            assert_ne!(second.status.code(), Some(0), "{}", text(&second));
            assert!(
                text(&second).contains("another sn-oauth-keeper is running"),
                "{}",
                text(&second)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = daemon.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        second_tried,
        "the second keeper was started while the daemon ran"
    );
    let status = tokio::time::timeout(Duration::from_secs(60), daemon.wait())
        .await
        .expect("the daemon stops")
        .unwrap();
    let _ = reader.await;
    assert_eq!(status.code(), Some(0), "{}", collected.lock().unwrap());
    let log = server.log().await;
    assert_no_reuse(&log);
    assert!(grants(&log).iter().all(|g| g["ok"] == true), "{log:#?}");
    let pairs: Vec<(&SeededCredential, &str)> =
        seeded.iter().map(|(c, _, _)| (c, "keeper-post")).collect();
    assert_all_live(&bed, &server, &pairs).await;
}

#[tokio::test]
async fn a_scope_subset_is_granted_and_the_refresh_token_keeps_the_whole_grant() {
    let server = Server::start(&[post_client()], true).await;
    let mut estate = Estate::empty(74).with_user_time_zone("UTC");
    let reg = estate.add_registry(registry("Subset app", "keeper-post", POST_SECRET, &server));
    let (rt, _) = server.mint("keeper-post", FULL_SCOPE, json!({})).await;
    let c = estate.add_credential(
        CredentialSpec::new(&reg, "narrow")
            .scopes(FULL_SCOPE)
            .access_missing()
            .refresh_token(&rt),
    );
    let bed = Bed::start(estate).await;
    let config =
        bed.config_file("[[registry]]\nname = \"Subset app\"\nscope = \"openid api:read\"\n");
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = server.log().await;
    let g = grants(&log);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0]["scope"], "openid api:read");
    assert_eq!(g[0]["scope_granted"], "openid api:read");
    let answers = assert_all_live(&bed, &server, &[(&c, "keeper-post")]).await;
    assert_eq!(answers[0]["scope"], "openid api:read", "{}", answers[0]);
    let (refresh, _) = stored(&bed, &c);
    assert_eq!(server.token_state(&refresh).await["scope"], FULL_SCOPE);
}

#[tokio::test]
async fn an_expired_or_revoked_grant_needs_reauthorisation_and_is_left_alone() {
    let server = Server::start(&[post_client()], true).await;
    let (estate, seeded) = rotating_estate(&server, 3, 75).await;
    let (expired, expired_rt, _) = &seeded[0];
    let (revoked, _, revoked_grant) = &seeded[1];
    server
        .admin("expire", json!({ "refresh_token": expired_rt }))
        .await;
    server
        .admin("revoke", json!({ "grant_id": revoked_grant }))
        .await;
    let bed = Bed::start(estate).await;
    let config = bed.config_file("");
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = server.log().await;
    let failed: Vec<&Value> = grants(&log)
        .into_iter()
        .filter(|g| g["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 2, "one request each, no retry loop: {log:#?}");
    assert!(
        failed.iter().all(|g| g["error"] == "invalid_grant"),
        "{failed:#?}"
    );
    let doc = bed.status_json(&config).await;
    let state_of = |c: &SeededCredential| {
        doc["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["sys_id"] == c.refresh_sys_id.as_str())
            .map(|r| r["state"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(state_of(expired), "needs re-authorisation", "{doc:#}");
    assert_eq!(state_of(revoked), "needs re-authorisation", "{doc:#}");
    assert_eq!(state_of(&seeded[2].0), "fresh", "{doc:#}");
    // The next cycle does not ask again for tokens the server declared dead.
    let before = grants(&server.log().await).len();
    let again = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(
        grants(&server.log().await).len(),
        before,
        "{}",
        text(&again)
    );
    assert_all_live(&bed, &server, &[(&seeded[2].0, "keeper-post")]).await;
}

#[tokio::test]
async fn entra_v1_asks_by_resource_and_v2_by_scope_at_a_real_server() {
    let server = Server::start(&[post_client()], true).await;
    let mut estate = Estate::empty(76).with_user_time_zone("UTC");
    let v1 = estate.add_registry(registry("V1 app", "keeper-post", POST_SECRET, &server));
    let v2 = estate.add_registry(registry("V2 app", "keeper-post", POST_SECRET, &server));
    // Two resources in one grant: the server issues nothing unless told which one.
    let (rt1, _) = server
        .mint(
            "keeper-post",
            "offline_access",
            json!({ API: "api:read api:write", OTHER_API: "api:read" }),
        )
        .await;
    let c1 = estate.add_credential(
        CredentialSpec::new(&v1, "v1 credential")
            .scopes("offline_access")
            .access_missing()
            .refresh_token(&rt1),
    );
    let (rt2, _) = server.mint("keeper-post", FULL_SCOPE, json!({})).await;
    let c2 = estate.add_credential(
        CredentialSpec::new(&v2, "v2 credential")
            .scopes(FULL_SCOPE)
            .access_missing()
            .refresh_token(&rt2),
    );
    let bed = Bed::start(estate).await;
    // The host (127.0.0.1) does not say Entra: the config does.
    let config = bed.config_file(&format!(
        "[[registry]]\nname = \"V1 app\"\nkind = \"entra_v1\"\nresource = \"{API}\"\n\n[[registry]]\nname = \"V2 app\"\nkind = \"entra_v2\"\n"
    ));
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = server.log().await;
    let g = grants(&log);
    assert_eq!(g.len(), 2, "{log:#?}");
    let v1_request = g
        .iter()
        .find(|r| r["resource"] == API)
        .expect("v1 sent resource");
    assert_eq!(v1_request["scope"], Value::Null, "v1 sends no scope");
    let v2_request = g.iter().find(|r| r["resource"].is_null()).unwrap();
    assert_eq!(v2_request["scope"], FULL_SCOPE, "v2 always sends the scope");
    let answers =
        assert_all_live(&bed, &server, &[(&c1, "keeper-post"), (&c2, "keeper-post")]).await;
    assert_eq!(answers[0]["aud"], API, "{}", answers[0]);
    assert_eq!(answers[0]["scope"], "api:read api:write", "{}", answers[0]);
}

/// Verified write-back at a real server with rotation and reuse detection: while the instance
/// discards the keeper's writes of `token_received` (a field-level write ACL), the rotated tokens
/// wait in the journal and nothing is spent again; once the writes stick, the journal delivers
/// them, and the server's own books show no token presented twice and the stored ones live.
#[tokio::test]
async fn a_discarded_token_write_spends_nothing_and_is_delivered_once_it_sticks() {
    let server = Server::start(&[post_client()], true).await;
    let (estate, seeded) = rotating_estate(&server, 2, 74).await;
    let bed = Bed::start(estate).await;
    let config = bed.config_file(EVERY_CYCLE);
    let args = ["once", "--config", config.to_str().unwrap()];
    let once = || bed.run_binary(&args);
    bed.sim
        .deny_field_write("oauth_credential", "token_received");
    for run in 1..=2 {
        let out = once().await;
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(1), "run {run}: {shown}");
        assert!(shown.contains("write_not_stored"), "run {run}: {shown}");
    }
    assert_eq!(
        grants(&server.log().await).len(),
        2,
        "one refresh per credential; the second run spent no token"
    );
    bed.sim
        .allow_field_write("oauth_credential", "token_received");
    let out = once().await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = server.log().await;
    assert_eq!(
        grants(&log).len(),
        2,
        "delivered from the journal, not refreshed"
    );
    assert_no_reuse(&log);
    let pairs: Vec<(&SeededCredential, &str)> =
        seeded.iter().map(|(c, _, _)| (c, "keeper-post")).collect();
    assert_all_live(&bed, &server, &pairs).await;
}
