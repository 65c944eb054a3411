//! The daemon as a service manager runs it: the real binary, its endpoints and their semantics,
//! its signals (SIGTERM with a grace period, SIGHUP reload) and its log volume.

use crate::support::{Bed, PATIENCE, Running};
use serde_json::Value;
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, Fault, FaultTarget, ProviderKind, RegistrySpec, Target,
};
use std::time::Duration;

async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .ok()?
        .get(url)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

fn graph_estate(seed: u64) -> (Estate, String) {
    let mut estate = Estate::empty(seed).with_user_time_zone("UTC");
    let reg = estate
        .add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("entra"));
    (estate, reg)
}

fn listen_anywhere(extra: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{extra}")
}

#[tokio::test]
async fn run_serves_health_and_metrics_and_stops_on_sigterm() {
    let (mut estate, reg) = graph_estate(41);
    let mailbox = estate.add_credential(CredentialSpec::new(&reg, "Mailbox").access_missing());
    estate.add_credential(CredentialSpec::new(&reg, "Calendar"));
    let bed = Bed::start(estate).await;
    let config = bed.config_file(&listen_anywhere("[refresh]\ninterval = \"1s\"\n"));
    let daemon = Running::start(&bed, &config, bed.sim.password()).await;
    daemon.wait_for("cycle.finished").await;

    let (status, ready) = get(&format!("{}/readyz", daemon.base)).await.unwrap();
    assert_eq!(status, 200, "{ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["reasons"], serde_json::json!([]));
    assert_eq!(ready["journal_writable"], true);
    let (status, health) = get(&format!("{}/healthz", daemon.base)).await.unwrap();
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        serde_json::from_str::<Value>(&health).unwrap()["status"],
        "ok"
    );

    let (_, metrics) = get(&format!("{}/metrics", daemon.base)).await.unwrap();
    for family in [
        "sn_oauth_keeper_cycles_total{result=\"ok\"}",
        "sn_oauth_keeper_journal_pending 0",
        "sn_oauth_keeper_instance_reachable 1",
        "sn_oauth_keeper_credentials{state=\"fresh\"}",
        &format!(
            "sn_oauth_keeper_refreshes_total{{registry=\"{reg}\",outcome=\"refreshed\",class=\"none\"}} 1"
        ),
        &format!(
            "sn_oauth_keeper_access_token_expiry_seconds{{credential=\"{}\",registry=\"{reg}\"}}",
            mailbox.refresh_sys_id
        ),
        "sn_oauth_keeper_refresh_token_expiry_seconds{",
        "sn_oauth_keeper_last_refresh_age_seconds{",
        "sn_oauth_keeper_credential_state{",
        "sn_oauth_keeper_http_requests_total{peer=\"instance\",endpoint=\"table/oauth_credential\",method=\"GET\",status=\"200\"}",
        "sn_oauth_keeper_http_requests_total{peer=\"instance\",endpoint=\"companion/secrets\",method=\"GET\",status=\"200\"}",
        "sn_oauth_keeper_http_requests_total{peer=\"token_endpoint\",endpoint=\"127.0.0.1:",
        "sn_oauth_keeper_http_request_duration_seconds_bucket{",
        "sn_oauth_keeper_cycle_duration_seconds_count",
        "sn_oauth_keeper_journal_oldest_pending_age_seconds 0",
    ] {
        assert!(metrics.contains(family), "{family} missing in:\n{metrics}");
    }
    // Bounded labels only: no URL, no query, no credential name, no secret.
    for leak in ["http://", "sysparm", "Mailbox", "Graph", bed.sim.password()] {
        assert!(!metrics.contains(leak), "{leak} in:\n{metrics}");
    }
    for row in bed.sim.rows("oauth_credential") {
        if let Some(token) = bed
            .sim
            .decrypted("oauth_credential", &row["sys_id"], "token_received")
            .filter(|t| !t.is_empty())
        {
            assert!(!metrics.contains(&token), "a token in the metrics");
        }
    }

    // A second cycle runs after the interval.
    daemon.wait_for_nth("cycle.finished", 2).await;
    daemon.signal("TERM");
    let (code, log) = daemon.exit_code().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("\"event\":\"daemon.stopping\""), "{log}");
    assert!(log.contains("\"event\":\"daemon.stopped\""), "{log}");
    assert!(log.contains("\"clean\":true"), "{log}");
}

#[tokio::test]
async fn sigterm_lets_the_refresh_in_flight_finish() {
    let (mut estate, reg) = graph_estate(42);
    let due = estate.add_credential(CredentialSpec::new(&reg, "Mailbox").access_missing());
    let bed = Bed::start(estate).await;
    bed.sim.inject(Fault::delay(
        FaultTarget::Provider("entra".into()),
        Duration::from_secs(2),
    ));
    let config = bed.config_file(&listen_anywhere(""));
    let daemon = Running::start(&bed, &config, bed.sim.password()).await;
    // Wait until the token request is on its way, then stop.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while bed.token_requests().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.signal("TERM");
    let (code, log) = daemon.exit_code().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("\"event\":\"credential.refreshed\""), "{log}");
    assert!(log.contains("\"clean\":true"), "{log}");
    // The answer reached ServiceNow: the access row exists now.
    let created = bed
        .writes()
        .into_iter()
        .filter(|w| w.method == "POST")
        .count();
    assert_eq!(created, 1, "{log}");
    let access_rows = bed
        .sim
        .rows("oauth_credential")
        .into_iter()
        .filter(|r| r["type"] == "access_token" && r["peer"] == reg)
        .count();
    assert_eq!(access_rows, 1, "{}", due.refresh_sys_id);
}

#[tokio::test]
async fn the_grace_period_bounds_a_stuck_refresh_and_a_second_signal_does_not_wait() {
    for second_signal in [false, true] {
        let (mut estate, reg) = graph_estate(43);
        estate.add_credential(CredentialSpec::new(&reg, "Mailbox").access_missing());
        let bed = Bed::start(estate).await;
        bed.sim.inject(Fault::delay(
            FaultTarget::Provider("entra".into()),
            Duration::from_secs(120),
        ));
        let grace = if second_signal { "60s" } else { "1s" };
        let config = bed.config_file(&listen_anywhere(&format!(
            "[refresh]\nshutdown_grace = \"{grace}\"\ntimeout = \"5m\"\n[lease]\nttl = \"10m\"\n"
        )));
        let daemon = Running::start(&bed, &config, bed.sim.password()).await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while bed.token_requests().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "{}", daemon.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        daemon.signal("TERM");
        if second_signal {
            daemon.wait_for("daemon.stopping").await;
            // During the grace period the endpoints still answer, and readiness says why not.
            let (status, ready) = get(&format!("{}/readyz", daemon.base)).await.unwrap();
            assert_eq!(status, 503, "{ready}");
            assert!(ready.contains("shutting down"), "{ready}");
            daemon.signal("INT");
        }
        let (code, log) = daemon.exit_code().await;
        assert_eq!(code, Some(1), "{log}");
        assert!(log.contains("\"event\":\"daemon.grace_exceeded\""), "{log}");
        assert!(log.contains("\"clean\":false"), "{log}");
        assert_eq!(
            log.contains("\"event\":\"daemon.forced\""),
            second_signal,
            "{log}"
        );
    }
}

#[tokio::test]
async fn sighup_rejects_an_invalid_config_and_applies_a_valid_one() {
    let (mut estate, reg) = graph_estate(44);
    // Valid for 30 more minutes: not due with a 10-minute lead time, due with a 1-hour one.
    estate.add_credential(
        CredentialSpec::new(&reg, "Mailbox").access_expires_in(jiff::SignedDuration::from_mins(30)),
    );
    let bed = Bed::start(estate).await;
    let config = bed.config_file(&listen_anywhere(
        "[refresh]\ninterval = \"1s\"\nlead_time = \"10m\"\n",
    ));
    let daemon = Running::start(&bed, &config, bed.sim.password()).await;
    daemon.wait_for("cycle.finished").await;

    bed.config_file(&listen_anywhere(
        "[refresh]\ninterval = \"1s\"\nlead_time = \"soon\"\n",
    ));
    daemon.signal("HUP");
    let rejected = daemon.wait_for("config.reload_rejected").await;
    assert_eq!(rejected["key"], "refresh.lead_time", "{rejected}");
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("keeper.toml: refresh.lead_time"),
        "{rejected}"
    );
    // Still running on the old config: more cycles, nothing refreshed.
    let seen = daemon.count("cycle.finished");
    daemon.wait_for_nth("cycle.finished", seen + 2).await;
    assert!(bed.token_requests().is_empty(), "{}", daemon.log());

    // A valid config that changes server.listen too: the lead time applies from the next
    // cycle, the listener stays until a restart.
    bed.config_file(
        &listen_anywhere("[refresh]\ninterval = \"1s\"\nlead_time = \"1h\"\n")
            .replace("127.0.0.1:0", "127.0.0.1:1"),
    );
    daemon.signal("HUP");
    daemon.wait_for("config.reloaded").await;
    let pinned = daemon.wait_for("config.restart_required").await;
    assert!(
        pinned["keys"].as_str().unwrap().contains("server.listen"),
        "{pinned}"
    );
    daemon.wait_for("credential.refreshed").await;
    let (status, _) = get(&format!("{}/healthz", daemon.base)).await.unwrap();
    assert_eq!(status, 200, "the admin server kept its address");
    daemon.signal("TERM");
    let (code, log) = daemon.exit_code().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn a_rejected_reload_names_the_first_key_and_lists_every_problem() {
    let (mut estate, reg) = graph_estate(47);
    estate.add_credential(CredentialSpec::new(&reg, "Mailbox"));
    let bed = Bed::start(estate).await;
    let config = bed.config_file(&listen_anywhere("[refresh]\ninterval = \"1s\"\n"));
    let daemon = Running::start(&bed, &config, bed.sim.password()).await;
    daemon.wait_for("cycle.finished").await;

    // Several problems, one of them an unknown key holding something secret-looking.
    let secret = "hunter2-Pasted-S3cret";
    bed.config_file(&listen_anywhere(&format!(
        "[refresh]\ninterval = \"1s\"\nlead_time = \"soon\"\nconcurrency = 0\ncuncurrency = 2\ntoken = \"{secret}\"\n",
    )));
    daemon.signal("HUP");
    let rejected = daemon.wait_for("config.reload_rejected").await;
    assert_eq!(rejected["key"], "refresh.cuncurrency", "{rejected}");
    let error = rejected["error"].as_str().unwrap();
    let keys = [
        "refresh.cuncurrency",
        "refresh.token",
        "refresh.lead_time",
        "refresh.concurrency",
    ];
    assert_eq!(error.lines().count(), keys.len(), "{rejected}");
    for (line, key) in error.lines().zip(keys) {
        assert!(
            line.contains(&format!("keeper.toml: {key}: ")),
            "{rejected}"
        );
    }

    // A file that is not TOML, on a line holding the same value: where and what, not the text.
    bed.config_file(&listen_anywhere(&format!(
        "[refresh]\ninterval = \"1s\"\npassword = {secret}\n"
    )));
    daemon.signal("HUP");
    let rejected = daemon.wait_for_nth("config.reload_rejected", 2).await;
    let error = rejected["error"].as_str().unwrap();
    assert!(error.contains("not valid TOML"), "{rejected}");
    assert!(error.contains("line "), "{rejected}");
    assert!(!daemon.log().contains("hunter2"), "{}", daemon.log());
    // The running config stays.
    let seen = daemon.count("cycle.finished");
    daemon.wait_for_nth("cycle.finished", seen + 1).await;
    daemon.signal("TERM");
    let (code, log) = daemon.exit_code().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn an_idle_cycle_costs_one_log_line_at_info() {
    let (mut estate, reg) = graph_estate(45);
    for i in 0..12 {
        estate.add_credential(CredentialSpec::new(&reg, format!("fresh {i}")));
    }
    // One that needs a person: reported by status and metrics, not logged every cycle.
    estate.add_credential(
        CredentialSpec::new(&reg, "Expired")
            .refresh_expires_in(jiff::SignedDuration::from_hours(-1)),
    );
    let bed = Bed::start(estate).await;
    let config = bed.config_file(&listen_anywhere("[refresh]\ninterval = \"1s\"\n"));
    let daemon = Running::start(&bed, &config, bed.sim.password()).await;
    daemon.wait_for_nth("cycle.finished", 4).await;
    daemon.signal("TERM");
    let events: Vec<String> = daemon
        .events()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_string())
        .collect();
    let (code, log) = daemon.exit_code().await;
    assert_eq!(code, Some(0), "{log}");
    // The first cycle may report what it found (the credential that needs a person, once);
    // every cycle after it finds nothing new and must cost exactly its cycle.finished line.
    let first = events.iter().position(|e| e == "cycle.finished").unwrap();
    let later = &events[first + 1..];
    let cycles = later.iter().filter(|e| *e == "cycle.finished").count();
    let other: Vec<&String> = later
        .iter()
        .filter(|e| *e != "cycle.finished" && !e.starts_with("daemon."))
        .collect();
    assert!(cycles >= 3, "{log}");
    assert!(
        other.is_empty(),
        "an idle cycle logged more than cycle.finished: {other:?}\n{log}"
    );
}

#[tokio::test]
async fn readiness_says_why_when_the_instance_refuses_and_liveness_stays_up() {
    let (mut estate, reg) = graph_estate(46);
    estate.add_credential(CredentialSpec::new(&reg, "Mailbox"));
    let bed = Bed::start(estate).await;
    let config = bed.config_file(&listen_anywhere("[refresh]\ninterval = \"1s\"\n"));
    let daemon = Running::start(&bed, &config, "not-the-password").await;
    let failed = daemon.wait_for("cycle.failed").await;
    assert_eq!(failed["instance_unusable"], true, "{failed}");
    let (status, ready) = get(&format!("{}/readyz", daemon.base)).await.unwrap();
    assert_eq!(status, 503, "{ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["instance_reachable"], false);
    let reasons = ready["reasons"].to_string();
    assert!(
        reasons.contains("did not reach the instance")
            && reasons.contains("refused the service account"),
        "{reasons}"
    );
    // A fixed reason per kind of error: nothing of what the instance said.
    for echoed in [
        "not-the-password",
        "HTTP",
        "User Not Authenticated",
        "Required to provide",
    ] {
        assert!(!reasons.contains(echoed), "{echoed}: {reasons}");
    }
    let (status, _) = get(&format!("{}/healthz", daemon.base)).await.unwrap();
    assert_eq!(status, 200, "an outage elsewhere never fails liveness");
    let (_, metrics) = get(&format!("{}/metrics", daemon.base)).await.unwrap();
    assert!(
        metrics.contains("sn_oauth_keeper_instance_reachable 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sn_oauth_keeper_cycles_total{result=\"instance_error\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "sn_oauth_keeper_http_requests_total{peer=\"instance\",endpoint=\"table/oauth_credential\",method=\"GET\",status=\"401\"}"
        ),
        "{metrics}"
    );
    // The daemon keeps trying every interval rather than giving up.
    assert!(
        bed.sim
            .requests()
            .iter()
            .any(|r| r.target == Target::TableApi),
        "the keeper kept trying"
    );
    daemon.signal("TERM");
    let (code, log) = daemon.exit_code().await;
    assert_eq!(code, Some(0), "{log}");
}
