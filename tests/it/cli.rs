//! The binary: commands, exit codes, dry run, and no secret in any output.

use crate::support::Bed;
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, Fault, FaultTarget, ProviderKind, RegistrySpec, Target,
};

fn healthy_estate() -> Estate {
    let mut estate = Estate::empty(3).with_user_time_zone("UTC");
    let reg = estate
        .add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("entra"));
    estate.add_credential(CredentialSpec::new(&reg, "fresh one"));
    estate.add_credential(CredentialSpec::new(&reg, "missing one").access_missing());
    estate
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn once_exits_0_when_everything_due_was_refreshed() {
    let bed = Bed::start(healthy_estate()).await;
    let config = bed.config_file("");
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 refreshed"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn once_exits_1_when_a_credential_fails() {
    let bed = Bed::start(Estate::demo(2)).await;
    let config = bed.config_file("");
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[tokio::test]
async fn bad_config_exits_2_and_names_the_key() {
    let bed = Bed::start(healthy_estate()).await;
    let config = bed.config_file("[refresh]\nlead_time = \"soon\"\n");
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refresh.lead_time") && err.contains("keeper.toml"),
        "{err}"
    );
    let none = bed.run_binary(&["once"]).await;
    assert_eq!(none.status.code(), Some(2), "no config at all");
    let usage = bed.run_binary(&["once", "--frobnicate"]).await;
    assert_eq!(usage.status.code(), Some(2), "usage error");
}

#[tokio::test]
async fn a_bad_config_lists_every_problem_one_line_each() {
    let bed = Bed::start(healthy_estate()).await;
    let config = bed.config_file(
        "[refresh]\nlead_time = \"soon\"\nconcurrency = 0\ncuncurrency = 2\n\n[server]\nlisten = 9464\n",
    );
    for command in ["once", "check"] {
        let out = bed
            .run_binary(&[command, "--config", config.to_str().unwrap()])
            .await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        let keys = [
            "refresh.cuncurrency",
            "refresh.lead_time",
            "refresh.concurrency",
            "server.listen",
        ];
        assert_eq!(errors.len(), keys.len(), "{command}: {stderr}");
        for (line, key) in errors.iter().zip(keys) {
            assert!(
                line.contains(&format!("keeper.toml: {key}: ")),
                "{command}: {line}"
            );
        }
    }
}

#[tokio::test]
async fn a_secret_pasted_into_a_broken_config_is_never_shown() {
    let bed = Bed::start(healthy_estate()).await;
    let secret = "hunter2-Pasted-S3cret";
    // The bed's config has nine lines before these; the value starts in column 12.
    for (extra, expected) in [
        (
            format!("[refresh]\npassword = {secret}\n"),
            "keeper.toml: line 11, column 12: not valid TOML: ",
        ),
        (
            format!("[refresh]\npassword = \"{secret}\"\n"),
            "keeper.toml: refresh.password: unknown key",
        ),
    ] {
        let config = bed.config_file(&extra);
        for command in ["once", "check"] {
            let out = bed
                .run_binary(&[command, "--config", config.to_str().unwrap()])
                .await;
            assert_eq!(out.status.code(), Some(2), "{}", text(&out));
            let all = text(&out);
            assert!(all.contains(expected), "{command}: {all}");
            assert!(!all.contains("hunter2"), "{command}: {all}");
        }
    }
}

#[tokio::test]
async fn an_unusable_instance_exits_3() {
    let bed = Bed::start(healthy_estate()).await;
    let config = bed.config_file("");
    let path = config.to_str().unwrap();
    // Wrong password.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"));
    cmd.args(["once", "--config", path])
        .env("SN_PASSWORD", "not-the-password")
        .env("SN_OAUTH_KEEPER_KEY", bed.key_hex());
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // An HTML page instead of JSON (hibernating instance).
    bed.sim.inject(Fault::html_page(FaultTarget::TableApi));
    let out = bed.run_binary(&["once", "--config", path]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTML"));
    bed.sim.clear_faults();
    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let text_cfg = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&bed.sim.base_url(), &format!("http://127.0.0.1:{port}"));
    std::fs::write(&config, text_cfg).unwrap();
    let out = bed.run_binary(&["once", "--config", path]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[tokio::test]
async fn dry_run_writes_nothing_and_says_why() {
    let bed = Bed::start(Estate::demo(4)).await;
    let config = bed.config_file("");
    bed.sim.clear_requests();
    let out = bed
        .run_binary(&["once", "--dry-run", "--config", config.to_str().unwrap()])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("would refresh"), "{stdout}");
    assert!(stdout.contains("no access-token row"), "{stdout}");
    let requests = bed.sim.requests();
    assert!(
        requests.iter().all(|r| r.method == "GET"),
        "a dry run wrote"
    );
    // It reads who holds the lease (to show which credentials wait for another keeper), and
    // asks the companion nothing else.
    assert!(
        requests.iter().all(|r| r.target == Target::TableApi
            || (r.target == Target::Companion && r.path.ends_with("/lease"))),
        "a dry run asked the companion for secrets, or a provider"
    );
    assert!(
        !bed.dir
            .path()
            .join("state")
            .join("journal.sqlite3")
            .exists()
    );
}

#[tokio::test]
async fn no_secret_in_any_output_at_the_most_verbose_level() {
    let bed = Bed::start(Estate::demo(6)).await;
    let config = bed.config_file("");
    let path = config.to_str().unwrap();
    let mut output = String::new();
    for args in [
        vec![
            "once",
            "--config",
            path,
            "--log-level",
            "trace",
            "--log-format",
            "json",
        ],
        vec![
            "once",
            "--config",
            path,
            "--log-level",
            "trace",
            "--log-format",
            "pretty",
        ],
        vec![
            "status",
            "--config",
            path,
            "--format",
            "json",
            "--log-level",
            "trace",
        ],
        vec!["status", "--config", path, "--log-level", "trace"],
        vec!["check", "--config", path, "--log-level", "trace"],
        vec!["journal", "list", "--config", path, "--format", "json"],
    ] {
        let out = bed.run_binary(&args).await;
        output.push_str(&text(&out));
    }
    assert!(output.contains("credential.refreshed"), "the run did log");
    let mut secrets: Vec<String> = vec![bed.sim.password().to_string(), bed.key_hex()];
    for c in &bed.seeded {
        secrets.push(c.refresh_token.clone());
        secrets.extend(c.access_token.clone());
    }
    for row in bed.sim.rows("oauth_credential") {
        secrets.extend(
            bed.sim
                .decrypted("oauth_credential", &row["sys_id"], "token_received"),
        );
    }
    for row in bed.sim.rows("oauth_entity") {
        secrets.extend(
            bed.sim
                .decrypted("oauth_entity", &row["sys_id"], "client_secret"),
        );
    }
    assert!(secrets.len() > 40);
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(
            !output.contains(secret.as_str()),
            "a secret leaked into the output"
        );
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_level_and_event() {
    let bed = Bed::start(healthy_estate()).await;
    let config = bed.config_file("");
    let out = bed
        .run_binary(&[
            "once",
            "--config",
            config.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut refreshed = 0;
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
        assert!(v.get("event").is_some(), "{line}");
        if v["event"] == "credential.refreshed" {
            assert!(
                v.get("credential").is_some() && v.get("registry").is_some(),
                "{line}"
            );
            refreshed += 1;
        }
    }
    assert_eq!(refreshed, 1);
}

#[tokio::test]
async fn status_reports_every_credential() {
    let bed = Bed::start(Estate::demo(8)).await;
    let config = bed.config_file("");
    let doc = bed.status_json(&config).await;
    let rows = doc["credentials"].as_array().expect("credentials");
    let expected = bed
        .seeded
        .iter()
        .filter(|c| c.label != "client_credentials registry")
        .count();
    assert_eq!(rows.len(), expected);
    let states: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r["state"].as_str()).collect();
    for s in [
        "fresh",
        "due",
        "missing access token",
        "refresh token expiring",
        "needs re-authorisation",
    ] {
        assert!(states.contains(s), "no {s} in {states:?}");
    }
    for r in rows {
        assert!(r["registry"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(
            r["requestor_profile"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
    }
    assert!(bed.writes().is_empty(), "status wrote");
    let table = bed
        .run_binary(&["status", "--config", config.to_str().unwrap()])
        .await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("CREDENTIAL"), "{table}");
}

#[tokio::test]
async fn check_passes_on_a_prepared_instance_and_names_a_missing_companion() {
    let bed = Bed::start(healthy_estate()).await;
    let config = bed.config_file("");
    let before = bed
        .run_binary(&["check", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(before.status.code(), Some(0), "{}", text(&before));
    assert!(String::from_utf8_lossy(&before.stdout).contains("[warn] write oauth_credential"));
    // After a first refresh the keeper owns a row on which it can prove write rights.
    let once = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(once.status.code(), Some(0), "{}", text(&once));
    let mod_counts: Vec<String> = bed
        .sim
        .rows("oauth_credential")
        .into_iter()
        .map(|r| r["sys_mod_count"].clone())
        .collect();
    let out = bed
        .run_binary(&["check", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after: Vec<String> = bed
        .sim
        .rows("oauth_credential")
        .into_iter()
        .map(|r| r["sys_mod_count"].clone())
        .collect();
    assert_eq!(mod_counts, after, "check changed a credential");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in [
        "config",
        "journal key",
        "state directory",
        "reachability",
        "authentication",
        "read oauth_credential",
        "read fields",
        "write oauth_credential",
        "companion",
        "time zone",
    ] {
        assert!(
            stdout.contains(&format!("[ok  ] {step}")),
            "{step}: {stdout}"
        );
    }
    let broken = std::fs::read_to_string(&config)
        .unwrap()
        .replace(bed.sim.companion_path(), "/api/x_other/keeper");
    std::fs::write(&config, broken).unwrap();
    let out = bed
        .run_binary(&["check", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[FAIL] companion"));
}

// `demo` exists in builds with the simulator (feature `sim`, on by default).
#[cfg(feature = "sim")]
#[tokio::test]
async fn demo_runs_and_exits_0() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"))
        .arg("demo")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("BEFORE") && stdout.contains("AFTER"),
        "{stdout}"
    );
    assert!(stdout.contains("access row created"), "{stdout}");
}

#[cfg(feature = "sim")]
#[tokio::test]
async fn simulate_says_where_it_listens_and_who_signs_in_first() {
    let simulate = crate::support::Simulate::start(1).await;
    assert!(
        simulate.url.starts_with("http://127.0.0.1:"),
        "{}",
        simulate.url
    );
    assert_eq!(simulate.username, "svc_oauth_keeper");
    let answer = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!(
            "{}/api/now/table/sys_user?sysparm_limit=1",
            simulate.url
        ))
        .basic_auth(&simulate.username, Some(&simulate.password))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}
