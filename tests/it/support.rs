//! The test bed.

use secrecy::SecretString;
use serde_json::Value;
use sn_oauth_keeper::config::{
    DEFAULT_EXPIRES_IN, DEFAULT_REFRESH_LIFETIME, RegistrySettings, ReportSettings, Settings,
};
use sn_oauth_keeper::domain::report::CycleReport;
use sn_oauth_keeper::engine::{Keeper, Mode};
use sn_oauth_keeper::journal::Journal;
use sn_oauth_keeper::journal::JournalKey;
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, ProviderKind, RecordedRequest, RegistrySpec, SeededCredential,
    Simulator, Target,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// A running simulator with a state directory and a journal key.
pub struct Bed {
    pub sim: Simulator,
    pub dir: tempfile::TempDir,
    pub key: JournalKey,
    pub seeded: Vec<SeededCredential>,
}

impl Bed {
    pub async fn start(estate: Estate) -> Bed {
        let seeded = estate.credentials().to_vec();
        let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), estate)
            .await
            .expect("simulator starts");
        Bed {
            sim,
            dir: tempfile::tempdir().expect("tempdir"),
            key: JournalKey::random().expect("key"),
            seeded,
        }
    }

    pub fn settings(&self) -> Settings {
        Settings::local(
            &self.sim.base_url(),
            self.sim.username(),
            self.sim.password(),
            self.sim.companion_path(),
            self.dir.path().join("state"),
            self.key.clone(),
        )
        .expect("settings")
    }

    /// A keeper with its own journal (dropping it releases the journal's lock).
    pub fn keeper_with(&self, settings: Settings) -> Keeper {
        let journal = Journal::open(&settings.state.dir, Some(&self.key)).expect("journal opens");
        Keeper::new(Arc::new(settings), Some(Arc::new(journal))).expect("keeper")
    }

    pub async fn cycle(&self) -> CycleReport {
        self.cycle_with(self.settings()).await
    }

    pub async fn cycle_with(&self, settings: Settings) -> CycleReport {
        let keeper = self.keeper_with(settings);
        keeper
            .cycle(Mode::Apply, &CancellationToken::new())
            .await
            .expect("cycle runs")
    }

    /// Writes a config file for the binary; secrets go through the environment.
    pub fn config_file(&self, extra: &str) -> PathBuf {
        self.config_file_at("keeper.toml", &self.dir.path().join("state"), extra)
    }

    /// Writes the config file of a second keeper beside the first: `<name>.toml`, with a state
    /// directory (and so a journal) of its own.
    pub fn config_file_named(&self, name: &str, extra: &str) -> PathBuf {
        let state = self.dir.path().join(name).join("state");
        self.config_file_at(&format!("{name}.toml"), &state, extra)
    }

    fn config_file_at(&self, file: &str, state: &Path, extra: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        let text = format!(
            "[instance]\nurl = \"{}\"\nusername = \"{}\"\npassword_env = \"SN_PASSWORD\"\ncompanion_path = \"{}\"\n\n[state]\ndir = \"{}\"\nkey_env = \"SN_OAUTH_KEEPER_KEY\"\n{extra}",
            self.sim.base_url(),
            self.sim.username(),
            self.sim.companion_path(),
            state.display()
        );
        std::fs::write(&path, text).expect("config written");
        path
    }

    pub fn key_hex(&self) -> String {
        self.key
            .bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Runs the real binary with the bed's secrets in its environment.
    pub async fn run_binary(&self, args: &[&str]) -> std::process::Output {
        self.run_binary_with(args, &[]).await
    }

    /// Runs the real binary with the bed's secrets and `env` in its environment.
    pub async fn run_binary_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Output {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"));
        cmd.args(args)
            .env("SN_PASSWORD", self.sim.password())
            .env("SN_OAUTH_KEEPER_KEY", self.key_hex())
            .envs(env.iter().copied())
            .env_remove("SN_OAUTH_KEEPER_CONFIG")
            .env_remove("SN_OAUTH_KEEPER_LOG_LEVEL")
            .stdin(std::process::Stdio::null());
        cmd.output().await.expect("binary runs")
    }

    /// The `token_url` the simulator's registry has, to pin it in a config.
    pub fn token_url_of(&self, registry: &str) -> url::Url {
        let row = self
            .sim
            .row("oauth_entity", registry)
            .expect("registry row");
        url::Url::parse(&row["token_url"]).expect("a token URL")
    }

    /// Makes every access row expired, so the next cycle refreshes its credential.
    pub fn expire_access_rows(&self) {
        for row in self.sim.rows("oauth_credential") {
            if row["type"] == "access_token" {
                self.sim.set_row_field(
                    "oauth_credential",
                    &row["sys_id"],
                    "expires",
                    "2020-01-01 00:00:00",
                );
            }
        }
    }

    /// The document `status --config CONFIG --format json` prints; the command must exit 0.
    pub async fn status_json(&self, config: &Path) -> Value {
        let out = self
            .run_binary(&[
                "status",
                "--config",
                config.to_str().expect("a UTF-8 path"),
                "--format",
                "json",
            ])
            .await;
        let printed = || {
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        assert_eq!(out.status.code(), Some(0), "{}", printed());
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", printed()))
    }

    /// Requests that wrote to oauth_credential.
    pub fn writes(&self) -> Vec<RecordedRequest> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.target == Target::TableApi && r.method != "GET")
            .collect()
    }

    pub fn token_requests(&self) -> Vec<RecordedRequest> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| matches!(r.target, Target::Provider(_)))
            .collect()
    }
}

/// A `[[registry]]` as a config would give it: a client secret held by the keeper, and a
/// pinned token endpoint; every other key at its default.
pub fn registry_override(
    name: &str,
    client_secret: Option<&str>,
    token_url: Option<url::Url>,
) -> RegistrySettings {
    RegistrySettings {
        name: name.to_string(),
        client_secret: client_secret.map(|s| SecretString::from(s.to_string())),
        scope: None,
        client_auth: Default::default(),
        default_expires_in: DEFAULT_EXPIRES_IN,
        refresh_token_lifetime: DEFAULT_REFRESH_LIFETIME,
        kind: None,
        resource: None,
        assertion_key: None,
        token_url,
    }
}

/// Another host: a second simulator that only takes note of what reaches it, and its base URL
/// spelt with `localhost` (the bed's instance is `127.0.0.1`).
pub async fn another_host() -> (Simulator, String) {
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), Estate::empty(2))
        .await
        .expect("simulator starts");
    let base = sim.base_url().replace("127.0.0.1", "localhost");
    (sim, base)
}

/// Turns `[report]` on: status events go to the simulated instance's `em_event`.
pub fn report_to_instance(settings: &mut Settings) {
    settings.report = Some(ReportSettings {
        table: "em_event".into(),
        source: "sn-oauth-keeper".into(),
        node: "test-keeper".into(),
    });
}

/// One due credential at a strict rotating provider (reusing a rotated refresh token there
/// revokes the whole family): stale, or without an access row.
pub fn strict_estate(seed: u64, access_missing: bool) -> (Estate, SeededCredential) {
    let mut estate = Estate::empty(seed).with_user_time_zone("UTC");
    let reg = estate.add_registry(
        RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
    );
    let spec = CredentialSpec::new(&reg, "Okta sync");
    let spec = if access_missing {
        spec.access_missing()
    } else {
        spec.access_expires_in(jiff::SignedDuration::from_mins(2))
    };
    let seeded = estate.add_credential(spec);
    (estate, seeded)
}

/// The real binary's `simulate` on a free loopback port, killed on drop.
#[cfg(feature = "sim")]
pub struct Simulate {
    /// Held so the process dies with this value (`kill_on_drop`).
    _child: tokio::process::Child,
    pub url: String,
    pub username: String,
    pub password: String,
}

#[cfg(feature = "sim")]
impl Simulate {
    /// Starts `simulate --seed SEED` and reads its first two lines, which say where it listens
    /// and who the integration user is (scripts and tests depend on both).
    pub async fn start(seed: u64) -> Simulate {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"))
            .args([
                "simulate",
                "--listen",
                "127.0.0.1:0",
                "--seed",
                &seed.to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("simulate starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut next = async || {
            tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
                .await
                .expect("simulate prints within 30 s")
                .expect("stdout readable")
                .expect("a line")
        };
        let first = next().await;
        let url = first
            .strip_prefix("simulated ServiceNow instance listening on ")
            .unwrap_or_else(|| panic!("first line names the URL: {first:?}"))
            .to_owned();
        let second = next().await;
        let (username, password) = second
            .strip_prefix("integration user: ")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|rest| rest.split_once(" (password: "))
            .unwrap_or_else(|| panic!("second line names the user: {second:?}"));
        let (username, password) = (username.to_owned(), password.to_owned());
        // The rest of stdout is not read: drain it so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Simulate {
            _child: child,
            url,
            username,
            password,
        }
    }
}

/// FNV-1a: names a cache folder after the exact inputs of an install, so changed inputs install
/// anew.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A tool installed for the tests under the target directory, once per version of its inputs:
/// `install` fills the folder `CARGO_TARGET_TMPDIR/{name}-{hash of inputs}`, under a file lock so
/// concurrent test processes install it once (the others wait, then reuse it). Returns the
/// folder; a failed install leaves no marker, so the next run tries again.
pub fn install_once(
    name: &str,
    inputs: &[u8],
    install: impl FnOnce(&std::path::Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{:016x}", fnv(inputs)));
    let done = cache.join(".installed");
    if done.exists() {
        return Ok(cache);
    }
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let lock_file = std::fs::File::create(cache.with_extension("lock"))
        .map_err(|e| format!("lock file: {e}"))?;
    lock_file.lock().map_err(|e| format!("lock: {e}"))?;
    if done.exists() {
        return Ok(cache);
    }
    install(&cache)?;
    std::fs::write(&done, b"").map_err(|e| e.to_string())?;
    Ok(cache)
}

/// Generous bound for anything a daemon should do "soon"; never a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The real binary running `run`, with its stderr (JSON log lines) collected as they come.
pub struct Running {
    pub child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The admin server's base URL.
    pub base: String,
}

impl Running {
    pub async fn start(bed: &Bed, config: &Path, password: &str) -> Running {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("SN_PASSWORD", password)
            .env("SN_OAUTH_KEEPER_KEY", bed.key_hex())
            .env_remove("SN_OAUTH_KEEPER_LOG_LEVEL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        {
            let lines = Arc::clone(&lines);
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut running = Running {
            child,
            lines,
            base: String::new(),
        };
        let started = running.wait_for("daemon.started").await;
        running.base = format!("http://{}", started["listen"].as_str().unwrap());
        running
    }

    pub fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect()
    }

    pub fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|e| e["event"] == event).count()
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until the n-th (1-based) line with this event exists, and returns it.
    pub async fn wait_for_nth(&self, event: &str, n: usize) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(found) = self
                .events()
                .into_iter()
                .filter(|e| e["event"] == event)
                .nth(n - 1)
            {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {event} #{n} in:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_for(&self, event: &str) -> Value {
        self.wait_for_nth(event, 1).await
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub async fn exit_code(mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the daemon stops")
            .unwrap();
        // Let the reader drain what the process wrote last.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status.code(), self.log())
    }
}
