//! The daemon: cycles, endpoints, graceful stop.

use crate::support::Bed;
use sn_oauth_keeper::sim::{CredentialSpec, Estate, ProviderKind, RegistrySpec};
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

#[tokio::test]
async fn run_serves_health_and_metrics_and_stops_on_sigterm() {
    let mut estate = Estate::empty(41).with_user_time_zone("UTC");
    let reg = estate
        .add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("entra"));
    estate.add_credential(CredentialSpec::new(&reg, "Mailbox").access_missing());
    let bed = Bed::start(estate).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = bed.config_file(&format!(
        "[refresh]\ninterval = \"1s\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("SN_PASSWORD", bed.sim.password())
        .env("SN_OAUTH_KEEPER_KEY", bed.key_hex())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = None;
    for _ in 0..100 {
        if let Some((200, body)) = get(&format!("{base}/readyz")).await {
            ready = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = ready.expect("ready within 10 s");
    assert!(ready.contains("\"ready\":true"), "{ready}");
    let (status, health) = get(&format!("{base}/healthz")).await.unwrap();
    assert_eq!(status, 200, "{health}");
    let (_, metrics) = get(&format!("{base}/metrics")).await.unwrap();
    assert!(
        metrics.contains("sn_oauth_keeper_cycles_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sn_oauth_keeper_journal_pending 0"),
        "{metrics}"
    );
    // A second cycle has run after the interval.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("stops")
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.matches("cycle.finished").count() >= 2, "{log}");
    assert!(log.contains("daemon.stopped"), "{log}");
}
