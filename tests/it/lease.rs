//! Two keepers on one instance, as the lease makes them: started together, one paused (SIGSTOP)
//! for longer than the lease while it holds answers ServiceNow has not confirmed, one killed,
//! and `once` started beside a running daemon. What counts is the provider's own record: no
//! refresh token is ever presented twice, no grant is revoked, every credential ends refreshed,
//! and the paused keeper's journal delivers what it held. And the claims of a keeper gone for
//! good, as `check`, `once` and `lease drop-claims` handle them.

use crate::oidc::{Server, assert_all_live, assert_no_reuse, grants, post_client, rotating_estate};
use crate::support::{Bed, PATIENCE, Running};
use serde_json::Value;
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, Fault, FaultTarget, ProviderKind, RegistrySpec, SeededCredential,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The lease's life in these tests: the shortest the config allows, so takeovers come soon.
const TTL: &str = "10s";

/// A daemon's config: cycles every second, token requests bounded well inside the lease.
fn daemon_config(bed: &Bed, name: &str) -> PathBuf {
    bed.config_file_named(
        name,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[refresh]\ninterval = \"1s\"\ntimeout = \"4s\"\nconcurrency = 2\n\n[lease]\nttl = \"{TTL}\"\n"
        ),
    )
}

/// Twelve credentials at a strict rotating provider (a rotated refresh token presented again
/// revokes the whole grant), all due.
fn strict_estate(seed: u64) -> (Estate, Vec<SeededCredential>) {
    let mut estate = Estate::empty(seed).with_user_time_zone("UTC");
    let reg = estate.add_registry(
        RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
    );
    let seeded = (0..12)
        .map(|i| {
            estate.add_credential(CredentialSpec::new(&reg, format!("Sync {i}")).access_missing())
        })
        .collect();
    (estate, seeded)
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The provider's own books, as the test reads them.
trait Books {
    /// Every refresh token (or its digest) presented to the provider, in order.
    async fn presented(&self) -> Vec<String>;
}

/// The simulator's strict rotating provider.
struct SimBooks<'a>(&'a Bed);

impl Books for SimBooks<'_> {
    async fn presented(&self) -> Vec<String> {
        self.0.sim.presented_refresh_tokens("okta")
    }
}

impl Books for Server {
    async fn presented(&self) -> Vec<String> {
        grants(&self.log().await)
            .into_iter()
            .filter(|g| g["grant_type"] == "refresh_token")
            .map(|g| g["refresh_token_sha256"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// No refresh token was presented twice.
async fn assert_each_presented_once(books: &impl Books) {
    let mut seen = HashSet::new();
    for token in books.presented().await {
        assert!(seen.insert(token), "a refresh token was presented twice");
    }
}

/// Makes every access token of these credentials expired, so the next cycle refreshes them.
fn expire_access(bed: &Bed, credentials: &[&SeededCredential]) {
    let past = bed
        .sim
        .now()
        .checked_sub(jiff::SignedDuration::from_hours(1))
        .unwrap()
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    let profiles: HashSet<&str> = credentials
        .iter()
        .map(|c| c.requestor_profile.as_str())
        .collect();
    for row in bed.sim.rows("oauth_credential") {
        if row.get("type").map(String::as_str) == Some("access_token")
            && row
                .get("oauth_requestor_profile")
                .is_some_and(|p| profiles.contains(p.as_str()))
        {
            bed.sim
                .set_row_field("oauth_credential", &row["sys_id"], "expires", &past);
        }
    }
}

fn holder_of(keeper: &Running) -> Option<String> {
    keeper
        .events()
        .iter()
        .rev()
        .find(|e| e["event"] == "lease.acquired")
        .and_then(|e| e["holder"].as_str().map(str::to_string))
}

async fn journal_list(bed: &Bed, config: &Path) -> Vec<Value> {
    let out = bed
        .run_binary(&[
            "journal",
            "list",
            "--format",
            "json",
            "--config",
            config.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn status(bed: &Bed, config: &Path) -> Value {
    let out = bed
        .run_binary(&[
            "status",
            "--format",
            "json",
            "--config",
            config.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn send_signal(keeper: &Running, name: &str) {
    let pid = keeper.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Every refresh token the provider saw, once; no grant revoked; every credential's stored
/// refresh token is the live one and its access row exists.
async fn assert_no_token_burned(bed: &Bed, seeded: &[SeededCredential]) {
    assert_each_presented_once(&SimBooks(bed)).await;
    assert_eq!(bed.sim.revoked_grants("okta"), 0, "a grant was revoked");
    for c in seeded {
        let stored = bed
            .sim
            .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
            .expect("a refresh token in ServiceNow");
        assert_ne!(stored, c.refresh_token, "{}: never refreshed", c.name);
        assert!(
            bed.sim.provider_valid("okta", &stored),
            "{}: the stored refresh token is not the live one",
            c.name
        );
    }
}

/// The scenario, at whichever provider `books` reads: two daemons started together; the holder
/// paused past its lease while it holds four answers ServiceNow refused; the other takes over
/// and leaves those four alone; `once` beside it is refused; the paused one wakes, delivers and
/// lets go; the holder refreshes everything; the holder is killed between cycles and the
/// survivor refreshes everything.
async fn two_keepers(bed: &Bed, seeded: &[SeededCredential], books: &impl Books) {
    let count = async || books.presented().await.len();
    // Four credentials' refresh rows refuse writes: their rotated tokens stay in the journal of
    // whichever keeper refreshes them, claimed, the only valid ones.
    let stuck: Vec<&SeededCredential> = seeded.iter().take(4).collect();
    for c in &stuck {
        bed.sim.inject(
            Fault::status(FaultTarget::TableApi, 503)
                .method("PATCH")
                .path(&c.refresh_sys_id),
        );
    }
    let (config_a, config_b) = (daemon_config(bed, "a"), daemon_config(bed, "b"));
    // Started together: exactly one of them takes the lease.
    let (a, b) = tokio::join!(
        Running::start(bed, &config_a, bed.sim.password()),
        Running::start(bed, &config_b, bed.sim.password())
    );
    eventually("one keeper holds the lease", async || {
        holder_of(&a).is_some() || holder_of(&b).is_some()
    })
    .await;
    let (active, active_config, standby, standby_config) = if holder_of(&a).is_some() {
        (a, config_a, b, config_b)
    } else {
        (b, config_b, a, config_a)
    };
    let active_id = holder_of(&active).unwrap();
    eventually("every credential was asked for once", async || {
        count().await == 12
    })
    .await;
    // Only the four stuck answers stay claimed: the others reached ServiceNow.
    let stuck_ids: HashSet<&str> = stuck.iter().map(|c| c.refresh_sys_id.as_str()).collect();
    eventually("only the four stuck answers stay claimed", async || {
        let claims = bed.sim.companion_lease_claims();
        claims.len() == 4
            && claims
                .iter()
                .all(|k| k.holder == active_id && stuck_ids.contains(k.sys_id.as_str()))
    })
    .await;
    assert!(holder_of(&standby).is_none(), "{}", standby.log());

    // The active keeper stops dead, holding the only valid tokens of four credentials; the
    // writes would work now.
    send_signal(&active, "STOP");
    bed.sim.clear_faults();
    let fresh: Vec<&SeededCredential> = seeded.iter().skip(4).collect();
    expire_access(bed, &fresh);
    eventually("the standby takes the lapsed lease over", async || {
        holder_of(&standby).is_some()
    })
    .await;
    let standby_id = holder_of(&standby).unwrap();
    assert_ne!(standby_id, active_id);
    eventually(
        "the new holder refreshes the eight unclaimed credentials",
        async || count().await >= 20,
    )
    .await;
    // A cycle later it still has not touched the four claimed ones: their tokens in
    // ServiceNow are spent, the live ones wait in the paused keeper's journal.
    let cycles = standby.count("cycle.finished");
    eventually("the new holder runs another cycle", async || {
        standby.count("cycle.finished") > cycles
    })
    .await;
    assert_eq!(count().await, 20, "a claimed credential was refreshed");
    // It leaves the four claimed ones alone, and says why.
    let report = status(bed, &standby_config).await;
    for c in &stuck {
        let row = report["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["sys_id"] == c.refresh_sys_id.as_str())
            .unwrap();
        assert_eq!(row["waiting_for"], active_id.as_str(), "{report:#}");
    }
    assert_eq!(report["lease"]["holder"], standby_id.as_str(), "{report:#}");

    // `once` beside the running daemon: refused, naming the holder and its process; nothing sent.
    let before = count().await;
    let once_config = bed.config_file_named(
        "laptop",
        &format!("[lease]\nttl = \"{TTL}\"\n[refresh]\ntimeout = \"4s\"\n"),
    );
    let out = bed
        .run_binary(&["once", "--config", once_config.to_str().unwrap()])
        .await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("the lease is held by keeper {standby_id}")),
        "{said}"
    );
    assert!(
        said.contains(&format!("(process {})", standby.child.id().unwrap())),
        "{said}"
    );
    assert_eq!(count().await, before, "the refused once asked for a token");

    // The paused keeper wakes up past its lease: it refreshes nothing, delivers its journal and
    // lets go of its claims.
    send_signal(&active, "CONT");
    eventually("the woken keeper's claims are released", async || {
        !bed.sim
            .companion_lease_claims()
            .iter()
            .any(|k| k.holder == active_id)
    })
    .await;
    assert!(journal_list(bed, &active_config).await.is_empty());
    assert_eq!(count().await, 20, "the woken keeper asked for a token");
    assert!(
        active.count("lease.lost") + active.count("lease.standby") > 0,
        "{}",
        active.log()
    );

    // The holder refreshes all twelve now — the four with the tokens the woken keeper delivered.
    let everything: Vec<&SeededCredential> = seeded.iter().collect();
    expire_access(bed, &everything);
    eventually("the holder refreshes all twelve", async || {
        count().await == 32
    })
    .await;

    // The holder dies between cycles; the other takes over and refreshes everything.
    let finished = standby.count("cycle.finished");
    eventually("the holder finishes a cycle", async || {
        standby.count("cycle.finished") > finished
    })
    .await;
    let mut standby = standby;
    standby.child.start_kill().unwrap();
    let _ = standby.child.wait().await;
    expire_access(bed, &everything);
    eventually(
        "the survivor takes over and refreshes all twelve",
        async || count().await == 44,
    )
    .await;

    send_signal(&active, "TERM");
    let (code, log) = active.exit_code().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("\"event\":\"lease.released\""), "{log}");
    assert_each_presented_once(books).await;
}

#[tokio::test]
async fn two_daemons_at_a_strict_rotating_provider_never_present_a_token_twice() {
    let (estate, seeded) = strict_estate(71);
    let bed = Bed::start(estate).await;
    two_keepers(&bed, &seeded, &SimBooks(&bed)).await;
    assert_no_token_burned(&bed, &seeded).await;
}

#[tokio::test]
async fn two_daemons_at_oidc_provider_never_present_a_token_twice() {
    let server = Server::start(&[post_client()], true).await;
    let (estate, seeded) = rotating_estate(&server, 12, 76).await;
    let seeded: Vec<SeededCredential> = seeded.into_iter().map(|(c, _, _)| c).collect();
    let bed = Bed::start(estate).await;
    two_keepers(&bed, &seeded, &server).await;
    assert_no_reuse(&server.log().await);
    let pairs: Vec<(&SeededCredential, &str)> = seeded.iter().map(|c| (c, "keeper-post")).collect();
    assert_all_live(&bed, &server, &pairs).await;
}

/// Takes the lease as keeper `holder` claiming `sys_ids`, and lets it go again: the claims
/// stay, as a keeper that stopped for good leaves them.
async fn claim_and_leave(bed: &Bed, holder: &str, sys_ids: &[&str]) {
    let lease = format!("{}{}/lease", bed.sim.base_url(), bed.sim.companion_path());
    let client = reqwest::Client::new();
    let taken = client
        .post(&lease)
        .basic_auth(bed.sim.username(), Some(bed.sim.password()))
        .json(&serde_json::json!({"holder": holder, "ttl_seconds": 60, "claims": sys_ids}))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 200, "{}", taken.text().await.unwrap());
    let released = client
        .delete(&lease)
        .query(&[("holder", holder)])
        .basic_auth(bed.sim.username(), Some(bed.sim.password()))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 204);
}

/// The holder id a `once` took the lease as, from its log.
fn holder_in(log: &str) -> String {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "lease.acquired")
        .and_then(|e| e["holder"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no lease.acquired in\n{log}"))
}

#[tokio::test]
async fn a_gone_keepers_claims_show_in_check_hold_their_credentials_and_drop_claims_frees_them() {
    let (estate, seeded) = strict_estate(71);
    let bed = Bed::start(estate).await;
    let config = bed.config_file("");
    let config = config.to_str().unwrap();
    let gone = "gone-host/j-00000000";
    claim_and_leave(&bed, gone, &[&seeded[0].refresh_sys_id]).await;

    // What `check` prints must say each of `expected`.
    let check_says = async |expected: &[&str]| {
        let out = bed.run_binary(&["check", "--config", config]).await;
        let said = String::from_utf8_lossy(&out.stdout);
        for words in expected {
            assert!(said.contains(words), "{words}: {said}");
        }
    };
    check_says(&[
        &format!("{gone} claims 1 credential(s)"),
        "lease drop-claims --holder",
    ])
    .await;

    // `once` refreshes the other eleven and leaves the claimed one, so it exits 1.
    let out = bed.run_binary(&["once", "--config", config]).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(bed.token_requests().len(), 11);
    let own = holder_in(&log);

    // Without a terminal and without --yes, nothing is dropped.
    let drop = ["lease", "drop-claims", "--holder", gone, "--config", config];
    let out = bed.run_binary(&drop).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("pass --yes"), "{said}");
    assert!(
        said.contains("may hold the only valid refresh tokens"),
        "{said}"
    );
    assert_eq!(bed.sim.companion_lease_claims().len(), 1);
    let succeeds = async |args: &[&str]| {
        let out = bed.run_binary(args).await;
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{said}");
    };
    succeeds(&[&drop[..], &["--yes"]].concat()).await;
    assert!(bed.sim.companion_lease_claims().is_empty());
    succeeds(&["once", "--config", config]).await;
    assert_eq!(bed.token_requests().len(), 12);

    // This keeper's journal under another host name: `check` and `once` say so, with both
    // possible causes; its claim stays, and holds its credential.
    let journal = own.rsplit_once('/').unwrap().1;
    let twin = format!("renamed-host/{journal}");
    claim_and_leave(&bed, &twin, &[&seeded[1].refresh_sys_id]).await;
    check_says(&[
        &format!("keeper {twin} names this keeper's journal"),
        "state directory was copied",
    ])
    .await;
    let out = bed.run_binary(&["once", "--config", config]).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("\"event\":\"lease.twin\""), "{log}");
    assert_eq!(bed.sim.companion_lease_claims().len(), 1);
}
