//! Operating the binary: `--help` that teaches, completions and a man page generated from the
//! CLI, colour and the progress bar only on a terminal, and the shipped deploy configs.

use crate::support::Bed;
use sn_oauth_keeper::config;
use sn_oauth_keeper_sim::{CredentialSpec, Estate, ProviderKind, RegistrySpec};
use std::collections::HashMap;
use std::path::Path;

fn binary() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"));
    cmd.env_remove("SN_OAUTH_KEEPER_CONFIG")
        .env_remove("SN_OAUTH_KEEPER_LOG_LEVEL")
        .stdin(std::process::Stdio::null());
    cmd
}

fn stdout_of(args: &[&str]) -> String {
    let out = binary().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_teaches_examples_exit_codes_environment_and_signals() {
    let help = stdout_of(&["--help"]);
    for needle in [
        "Examples:",
        "Exit codes:",
        "3  the instance is unreachable",
        "SN_OAUTH_KEEPER_CONFIG",
        "SN_OAUTH_KEEPER_LOG_LEVEL",
        "NO_COLOR",
        "SIGHUP",
        "completions",
        "man",
    ] {
        assert!(help.contains(needle), "{needle} not in --help:\n{help}");
    }
    let short = stdout_of(&["-h"]);
    assert!(short.contains("--help for examples, exit codes"), "{short}");
}

#[test]
fn completions_are_generated_for_every_shell_and_know_every_command() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout_of(&["completions", shell]);
        for command in ["once", "status", "check", "journal", "completions"] {
            assert!(script.contains(command), "{shell}: {command} missing");
        }
    }
    // The bash script is valid bash (parsed, not run).
    let script = stdout_of(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sn-oauth-keeper.bash");
    std::fs::write(&path, script).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{syntax:?}");
    let usage = binary().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        usage.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn the_man_page_is_well_formed_roff() {
    let page = stdout_of(&["man"]);
    for section in [
        ".TH sn-oauth-keeper 1",
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
        "Exit codes:",
        ".SH VERSION",
    ] {
        assert!(page.contains(section), "{section} missing:\n{page}");
    }
    // groff (shipped with man-db) renders it without warnings.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sn-oauth-keeper.1");
    std::fs::write(&path, &page).unwrap();
    let rendered = std::process::Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l"])
        .arg(&path)
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
        .expect("man-db is installed");
    assert!(rendered.status.success(), "{rendered:?}");
    let stderr = String::from_utf8_lossy(&rendered.stderr);
    assert!(stderr.trim().is_empty(), "groff warnings: {stderr}");
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("Exit codes"), "{text}");
}

fn many_due(n: usize) -> Estate {
    let mut estate = Estate::empty(9).with_user_time_zone("UTC");
    let reg = estate
        .add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("entra"));
    for i in 0..n {
        estate.add_credential(CredentialSpec::new(&reg, format!("due {i}")).access_missing());
    }
    estate.add_credential(
        CredentialSpec::new(&reg, "Expired")
            .refresh_expires_in(jiff::SignedDuration::from_hours(-1)),
    );
    estate
}

/// Runs the binary on a pseudo-terminal (util-linux `script`), as a person at a terminal would;
/// returns everything the terminal showed (stdout and stderr).
async fn on_a_terminal(bed: &Bed, args: &[&str], no_color: bool) -> String {
    let mut line = shell_quote(env!("CARGO_BIN_EXE_sn-oauth-keeper"));
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env("SN_PASSWORD", bed.sim.password())
        .env("SN_OAUTH_KEEPER_KEY", bed.key_hex())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("SN_OAUTH_KEEPER_CONFIG")
        .env_remove("SN_OAUTH_KEEPER_LOG_LEVEL")
        .stdin(std::process::Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd.output().await.expect("util-linux script runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[tokio::test]
async fn colour_and_progress_only_on_a_terminal() {
    let bed = Bed::start(many_due(12)).await;
    let config = bed.config_file("");
    let path = config.to_str().unwrap();

    // Piped: plain text, no escape sequence, no carriage return, anywhere.
    let status = bed
        .run_binary(&["status", "--config", path, "--log-level", "debug"])
        .await;
    assert_eq!(status.status.code(), Some(0));
    let status_text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status_text.contains("needs re-authorisation"),
        "{status_text}"
    );
    for out in [&status.stdout, &status.stderr] {
        assert!(
            !out.contains(&0x1b) && !out.contains(&b'\r'),
            "{}",
            String::from_utf8_lossy(out)
        );
    }
    // On a terminal: bold headers and coloured states.
    let tty = on_a_terminal(&bed, &["status", "--config", path], false).await;
    assert!(tty.contains("\x1b[1mCREDENTIAL"), "{tty:?}");
    assert!(
        tty.contains("\x1b[1;31mneeds re-authorisation\x1b[0m"),
        "{tty:?}"
    );
    // JSON is for scripts: never coloured, even on a terminal.
    let json = on_a_terminal(
        &bed,
        &[
            "status",
            "--config",
            path,
            "--format",
            "json",
            "--log-level",
            "error",
        ],
        false,
    )
    .await;
    assert!(json.contains("\"credentials\""), "{json:?}");
    assert!(!json.contains('\x1b'), "{json:?}");
    // NO_COLOR wins on a terminal too.
    let plain = on_a_terminal(
        &bed,
        &["status", "--config", path, "--log-level", "error"],
        true,
    )
    .await;
    assert!(plain.contains("CREDENTIAL"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");

    // `once` over 12 due credentials: a progress bar on a terminal's stderr...
    let tty = on_a_terminal(&bed, &["once", "--config", path], false).await;
    assert!(tty.contains("refreshing ["), "{tty:?}");
    assert!(tty.contains(" 12/12 "), "{tty:?}");
    // ...and none in a pipe, where stderr holds JSON log lines only.
    let bed = Bed::start(many_due(12)).await;
    let config = bed.config_file("");
    let once = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    let stderr = String::from_utf8_lossy(&once.stderr);
    assert!(stderr.contains("credential.refreshed"), "{stderr}");
    assert!(!stderr.contains("refreshing ["), "{stderr}");
    for line in stderr.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a clean JSON line: {line:?}"
        );
    }
}

/// The configs shipped in deploy/ parse as the keeper would read them where they are deployed:
/// systemd (with its credential and state directories), Docker and Kubernetes (secrets mounted
/// at /run/secrets/sn-oauth-keeper).
#[test]
fn the_shipped_deploy_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("sn_password"), "pw\n").unwrap();
    std::fs::write(secrets.join("journal_key"), "ab".repeat(32)).unwrap();
    let env: HashMap<String, String> = HashMap::from([
        (
            "CREDENTIALS_DIRECTORY".to_string(),
            secrets.display().to_string(),
        ),
        (
            "STATE_DIRECTORY".to_string(),
            dir.path().join("state").display().to_string(),
        ),
    ]);
    let relocate = |text: &str| {
        text.replace(
            "/run/secrets/sn-oauth-keeper",
            &secrets.display().to_string(),
        )
    };

    let systemd = std::fs::read_to_string(root.join("deploy/systemd/config.toml")).unwrap();
    let s = config::parse(&systemd, "systemd/config.toml", &env).unwrap();
    assert_eq!(s.state.dir, dir.path().join("state"));
    assert!(s.state.key.resolve(&s.source, &env).is_ok());
    assert!(
        s.refresh.shutdown_grace.as_secs() < 120,
        "below the unit's TimeoutStopSec"
    );
    let unit =
        std::fs::read_to_string(root.join("deploy/systemd/sn-oauth-keeper.service")).unwrap();
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=sn-oauth-keeper",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "LoadCredential=sn_password:",
        "LoadCredential=journal_key:",
        "TimeoutStopSec=120",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(directive), "{directive} missing in the unit");
    }

    assert!(s.server.listen.ip().is_loopback(), "systemd: loopback");
    let example = std::fs::read_to_string(root.join("deploy/config.example.toml")).unwrap();
    assert!(
        example.contains("listen = \"127.0.0.1:9464\""),
        "the example binds loopback"
    );

    // Containers bind all interfaces deliberately, each with what keeps the port closed: the
    // loopback publish of the documented `docker run`, the NetworkPolicy in Kubernetes.
    let docker = std::fs::read_to_string(root.join("deploy/docker/config.toml")).unwrap();
    let s = config::parse(&relocate(&docker), "docker/config.toml", &env).unwrap();
    assert!(s.state.key.resolve(&s.source, &env).is_ok());
    assert_eq!(s.server.listen.port(), 9464);
    assert!(s.server.listen.ip().is_unspecified() && docker.contains("Deliberately"));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("-p 127.0.0.1:9464:9464"));

    // The ConfigMap's config.toml block (YAML literal, indented by four spaces).
    let configmap = std::fs::read_to_string(root.join("deploy/kubernetes/configmap.yaml")).unwrap();
    let block: String = configmap
        .lines()
        .skip_while(|l| !l.contains("config.toml: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let s = config::parse(&relocate(&block), "configmap.yaml", &env).unwrap();
    assert!(s.server.listen.ip().is_unspecified() && block.contains("Deliberately"));
    let policy =
        std::fs::read_to_string(root.join("deploy/kubernetes/networkpolicy.yaml")).unwrap();
    assert!(
        policy.contains("namespaceSelector")
            && policy.contains("kubernetes.io/metadata.name: monitoring"),
        "only the monitoring namespace may scrape"
    );
    let deployment =
        std::fs::read_to_string(root.join("deploy/kubernetes/deployment.yaml")).unwrap();
    assert!(deployment.contains("terminationGracePeriodSeconds: 120"));
    assert!(
        s.refresh.shutdown_grace.as_secs() < 120,
        "shorter than terminationGracePeriodSeconds"
    );
    assert_eq!(s.state.dir, Path::new("/var/lib/sn-oauth-keeper"));
    assert!(deployment.contains("mountPath: /var/lib/sn-oauth-keeper"));
    assert!(deployment.contains("mountPath: /run/secrets/sn-oauth-keeper"));
    // The holder id on the lease is the host name and the journal's identity: a new pod of the
    // Deployment must have its predecessor's host name, or it takes its own journal's claims
    // for another keeper's.
    assert!(deployment.contains("hostname: sn-oauth-keeper"));
}
