//! The test bed.

use secrecy::SecretString;
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
use std::path::PathBuf;
use std::sync::Arc;
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
        let path = self.dir.path().join("keeper.toml");
        let text = format!(
            "[instance]\nurl = \"{}\"\nusername = \"{}\"\npassword_env = \"SN_PASSWORD\"\ncompanion_path = \"{}\"\n\n[state]\ndir = \"{}\"\nkey_env = \"SN_OAUTH_KEEPER_KEY\"\n{extra}",
            self.sim.base_url(),
            self.sim.username(),
            self.sim.companion_path(),
            self.dir.path().join("state").display()
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
