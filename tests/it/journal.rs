//! Never lose a token: answers the instance did not take stay in the journal and reach
//! ServiceNow on the next cycle, before any new refresh of that credential.

use crate::support::{Bed, strict_estate};
use sn_oauth_keeper::domain::classify::FailureClass;
use sn_oauth_keeper::domain::report::Outcome;
use sn_oauth_keeper::journal::Journal;
use sn_oauth_keeper_sim::{
    CredentialSpec, Estate, Fault, FaultTarget, ProviderKind, RegistrySpec, SeededCredential,
    Target,
};

async fn strict_bed(access_missing: bool) -> (Bed, SeededCredential) {
    let (estate, seeded) = strict_estate(31, access_missing);
    (Bed::start(estate).await, seeded)
}

fn outcome(report: &sn_oauth_keeper::domain::report::CycleReport) -> Outcome {
    report.credentials[0].outcome.clone()
}

fn pending(bed: &Bed) -> usize {
    Journal::open_read_only(&bed.dir.path().join("state"))
        .unwrap()
        .map_or(0, |j| j.pending_count().unwrap())
}

#[tokio::test]
async fn a_rotated_token_the_instance_refused_is_redelivered_next_cycle() {
    let (bed, c) = strict_bed(false).await;
    bed.sim
        .inject(Fault::status(FaultTarget::TableApi, 403).method("PATCH"));
    let first = bed.cycle().await;
    assert!(
        matches!(
            outcome(&first),
            Outcome::Failed {
                class: FailureClass::Instance,
                ..
            }
        ),
        "{:?}",
        outcome(&first)
    );
    assert!(
        !bed.sim.provider_valid("okta", &c.refresh_token),
        "the provider consumed the old token"
    );
    assert_eq!(pending(&bed), 1, "the rotated token waits in the journal");

    bed.sim.clear_faults();
    bed.sim.clear_requests();
    let second = bed.cycle().await;
    assert_eq!(outcome(&second), Outcome::Redelivered);
    assert!(
        bed.token_requests().is_empty(),
        "no new refresh before the journaled answer was delivered"
    );
    let stored = bed
        .sim
        .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
        .unwrap();
    assert!(
        bed.sim.provider_valid("okta", &stored),
        "the token in ServiceNow works at the provider"
    );
    assert_eq!(pending(&bed), 0);

    // And it keeps working: the next refresh uses it.
    let mut settings = bed.settings();
    settings.refresh.lead_time = std::time::Duration::from_secs(7_200);
    let third = bed.cycle_with(settings).await;
    assert!(
        matches!(outcome(&third), Outcome::Refreshed { rotated: true, .. }),
        "{:?}",
        outcome(&third)
    );
}

#[tokio::test]
async fn an_interrupted_post_does_not_create_a_second_access_row() {
    let (bed, c) = strict_bed(true).await;
    // The instance creates the row but the answer never arrives.
    bed.sim.inject(
        Fault::drop_after_processing(FaultTarget::TableApi)
            .method("POST")
            .times(1),
    );
    let first = bed.cycle().await;
    assert!(
        matches!(outcome(&first), Outcome::Failed { .. }),
        "{:?}",
        outcome(&first)
    );
    assert_eq!(pending(&bed), 1);
    let second = bed.cycle().await;
    assert_eq!(outcome(&second), Outcome::Redelivered);
    let access_rows = bed
        .sim
        .rows("oauth_credential")
        .into_iter()
        .filter(|r| {
            r["type"] == "access_token" && r["oauth_requestor_profile"] == c.requestor_profile
        })
        .count();
    assert_eq!(access_rows, 1);
    let stored = bed
        .sim
        .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
        .unwrap();
    assert!(bed.sim.provider_valid("okta", &stored));
}

#[tokio::test]
async fn a_lost_provider_answer_is_retried_once_with_the_same_token() {
    let mut estate = Estate::empty(32).with_user_time_zone("UTC");
    let reg = estate
        .add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("entra"));
    let c = estate.add_credential(CredentialSpec::new(&reg, "Mailbox").access_missing());
    let bed = Bed::start(estate).await;
    bed.sim
        .inject(Fault::drop_after_processing(FaultTarget::Provider("entra".into())).times(1));
    let report = bed.cycle().await;
    assert!(
        matches!(outcome(&report), Outcome::Refreshed { .. }),
        "{:?}",
        outcome(&report)
    );
    assert_eq!(bed.sim.token_requests("entra"), 2);
    let bodies: Vec<String> = bed.token_requests().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies[0], bodies[1],
        "the retry sends the same refresh token"
    );
    let stored = bed
        .sim
        .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
        .unwrap();
    assert!(bed.sim.provider_valid("entra", &stored));
}

#[tokio::test]
async fn instance_throttling_is_waited_out() {
    let (bed, _) = strict_bed(false).await;
    bed.sim.inject(
        Fault::retry_after(FaultTarget::TableApi, 429, 1)
            .method("GET")
            .times(1),
    );
    let report = bed.cycle().await;
    assert!(
        matches!(outcome(&report), Outcome::Refreshed { .. }),
        "{:?}",
        outcome(&report)
    );
    let gets: Vec<_> = bed
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.target == Target::TableApi && r.method == "GET")
        .collect();
    assert!(gets.len() >= 2);
    assert_eq!(gets[0].status, 429);
    let waited = gets[1].at.duration_since(gets[0].at);
    assert!(
        waited >= jiff::SignedDuration::from_secs(1),
        "the retry came {waited} after a Retry-After: 1"
    );
}

#[tokio::test]
async fn a_second_keeper_on_the_same_state_directory_is_refused() {
    let (bed, _) = strict_bed(false).await;
    let _first = bed.keeper_with(bed.settings());
    let config = bed.config_file("");
    let out = bed
        .run_binary(&["once", "--config", config.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another sn-oauth-keeper is running"));
}

#[tokio::test]
async fn rekey_moves_pending_records_to_a_new_key() {
    let (bed, c) = strict_bed(false).await;
    bed.sim
        .inject(Fault::status(FaultTarget::TableApi, 403).method("PATCH"));
    let config = bed.config_file("");
    let path = config.to_str().unwrap();
    let out = bed.run_binary(&["once", "--config", path]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(pending(&bed), 1);
    bed.sim.clear_faults();

    let list = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let before = list(
        &bed.run_binary(&["journal", "list", "--config", path, "--format", "json"])
            .await,
    );
    let new_key = "ab".repeat(32);
    let rekey = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"))
        .args([
            "journal",
            "rekey",
            "--config",
            path,
            "--new-key-env",
            "NEW_JOURNAL_KEY",
        ])
        .env("SN_PASSWORD", bed.sim.password())
        .env("SN_OAUTH_KEEPER_KEY", bed.key_hex())
        .env("NEW_JOURNAL_KEY", &new_key)
        .output()
        .await
        .unwrap();
    assert_eq!(
        rekey.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rekey.stderr)
    );
    let after = list(
        &bed.run_binary(&["journal", "list", "--config", path, "--format", "json"])
            .await,
    );
    assert_ne!(before[0]["key_id"], after[0]["key_id"]);
    assert_eq!(before[0]["id"], after[0]["id"]);
    assert!(after[0].get("refresh_token").is_none());

    // The old key no longer opens the record: fail closed, nothing discarded.
    let old = bed.run_binary(&["once", "--config", path]).await;
    assert_eq!(old.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&old.stderr).contains("sealed with key id"));
    assert_eq!(pending(&bed), 1);

    let with_new = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"))
        .args(["once", "--config", path])
        .env("SN_PASSWORD", bed.sim.password())
        .env("SN_OAUTH_KEEPER_KEY", &new_key)
        .output()
        .await
        .unwrap();
    assert_eq!(
        with_new.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&with_new.stderr)
    );
    assert_eq!(pending(&bed), 0);
    let stored = bed
        .sim
        .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
        .unwrap();
    assert!(bed.sim.provider_valid("okta", &stored));
}

#[tokio::test]
async fn a_missing_key_with_pending_records_is_a_hard_error() {
    let (bed, _) = strict_bed(false).await;
    bed.sim
        .inject(Fault::status(FaultTarget::TableApi, 403).method("PATCH"));
    let config = bed.config_file("");
    let path = config.to_str().unwrap();
    bed.run_binary(&["once", "--config", path]).await;
    assert_eq!(pending(&bed), 1);
    let no_key = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper"))
        .args(["once", "--config", path])
        .env("SN_PASSWORD", bed.sim.password())
        .env_remove("SN_OAUTH_KEEPER_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(no_key.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("state.key_env"));
    assert_eq!(pending(&bed), 1, "nothing discarded");
}

/// A second connection to the journal's database, as a failing disk or a full one would look to
/// the keeper: every insert of `tables` fails.
fn refuse_inserts(bed: &Bed, tables: &[&str]) {
    let db =
        rusqlite::Connection::open(bed.dir.path().join("state").join("journal.sqlite3")).unwrap();
    for table in tables {
        db.execute_batch(&format!(
            "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;"
        ))
        .unwrap();
    }
}

fn accept_inserts(bed: &Bed, tables: &[&str]) {
    let db =
        rusqlite::Connection::open(bed.dir.path().join("state").join("journal.sqlite3")).unwrap();
    for table in tables {
        db.execute_batch(&format!("DROP TRIGGER refuse_{table};"))
            .unwrap();
    }
}

#[tokio::test]
async fn a_journal_that_cannot_commit_starts_no_new_refresh_and_delivers_what_is_in_hand() {
    let mut estate = Estate::empty(37).with_user_time_zone("UTC");
    let reg = estate.add_registry(
        RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
    );
    let seeded: Vec<SeededCredential> = (0..3)
        .map(|i| estate.add_credential(CredentialSpec::new(&reg, format!("c{i}")).access_missing()))
        .collect();
    let bed = Bed::start(estate).await;
    let mut settings = bed.settings();
    settings.refresh.concurrency = 1;
    let keeper = bed.keeper_with(settings);
    refuse_inserts(&bed, &["pending", "outcome"]);
    let report = keeper
        .cycle(
            sn_oauth_keeper::engine::Mode::Apply,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        bed.token_requests().len(),
        1,
        "after the first commit failed, no other token was asked for"
    );
    let refreshed: Vec<_> = report
        .credentials
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Refreshed { .. }))
        .collect();
    assert_eq!(
        refreshed.len(),
        1,
        "the answer in hand was delivered: {report:?}"
    );
    let delivered = seeded
        .iter()
        .find(|c| c.refresh_sys_id == refreshed[0].sys_id)
        .unwrap();
    let stored = bed
        .sim
        .decrypted(
            "oauth_credential",
            &delivered.refresh_sys_id,
            "token_received",
        )
        .unwrap();
    assert!(bed.sim.provider_valid("okta", &stored), "and it works");
    for line in report
        .credentials
        .iter()
        .filter(|c| c.sys_id != delivered.refresh_sys_id)
    {
        assert!(
            matches!(&line.outcome, Outcome::Failed { message, .. } if message.contains("journal is not writable")),
            "{:?}",
            line.outcome
        );
    }
    let journal = keeper.journal().unwrap();
    assert!(
        journal.last_write().unwrap().error.is_some(),
        "readiness sees the last real write fail"
    );

    accept_inserts(&bed, &["pending", "outcome"]);
    let again = keeper
        .cycle(
            sn_oauth_keeper::engine::Mode::Apply,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(again.failures(), 0, "{again:?}");
    assert!(journal.last_write().unwrap().error.is_none());
}

#[tokio::test]
async fn one_unreadable_record_holds_back_only_its_own_credential() {
    let mut estate = Estate::empty(38).with_user_time_zone("UTC");
    let reg = estate.add_registry(
        RegistrySpec::new("Okta", ProviderKind::RotatingReuseDetection).provider_id("okta"),
    );
    let a = estate.add_credential(CredentialSpec::new(&reg, "a").access_missing());
    let b = estate.add_credential(CredentialSpec::new(&reg, "b").access_missing());
    let bed = Bed::start(estate).await;
    bed.sim
        .inject(Fault::status(FaultTarget::TableApi, 403).method("POST"));
    bed.cycle().await;
    assert_eq!(pending(&bed), 2, "both answers wait");
    let db =
        rusqlite::Connection::open(bed.dir.path().join("state").join("journal.sqlite3")).unwrap();
    db.execute(
        "UPDATE pending SET sealed = x'00' WHERE credential = ?1",
        [&b.refresh_sys_id],
    )
    .unwrap();
    drop(db);
    bed.sim.clear_faults();
    bed.sim.clear_requests();
    let report = bed.cycle().await;
    let line = |id: &str| report.credentials.iter().find(|c| c.sys_id == id).unwrap();
    assert_eq!(line(&a.refresh_sys_id).outcome, Outcome::Redelivered);
    assert!(
        matches!(&line(&b.refresh_sys_id).outcome, Outcome::Failed { message, .. } if message.contains("does not open")),
        "{:?}",
        line(&b.refresh_sys_id).outcome
    );
    assert!(
        bed.token_requests().is_empty(),
        "b is held back, not refreshed again"
    );
    assert_eq!(pending(&bed), 1, "b's record is kept, never discarded");

    let config = bed.config_file("");
    let list = bed
        .run_binary(&["journal", "list", "--config", config.to_str().unwrap()])
        .await;
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(&b.refresh_sys_id) && listed.contains("NO:"),
        "{listed}"
    );
    let check = bed
        .run_binary(&[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--format",
            "json",
        ])
        .await;
    let doc: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "journal records")
        .unwrap();
    assert_eq!(step["verdict"], "fail", "{step}");
}

/// Plants a pending record as the keeper sealed them before it derived its keys (format v1):
/// under the journal key itself, with the v1 associated data and key id. Its answer carries
/// the seeded refresh token (still valid at the provider) and `access_token`.
fn plant_record_sealed_before_derivation(bed: &Bed, c: &SeededCredential, access_token: &str) {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};
    let state = bed.dir.path().join("state");
    // The keeper lays out the schema.
    drop(Journal::open(&state, Some(&bed.key)).unwrap());
    let cipher = XChaCha20Poly1305::new(bed.key.bytes().into());
    let tag = cipher
        .encrypt(
            &XNonce::default(),
            Payload {
                msg: b"",
                aad: b"sn-oauth-keeper key id",
            },
        )
        .unwrap();
    let key_id: String = tag.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let id = "0123456789abcdef0123456789abcdef";
    let now = bed.sim.now().as_second();
    let plaintext = serde_json::json!({
        "access_token": access_token,
        "refresh_token": c.refresh_token,
        "previous_refresh_token": c.refresh_token,
        "access_expires": now + 3_600,
        "refresh_expires": now + 90 * 86_400,
        "access_row": c.access_sys_id,
        "template": {
            "requestor_profile": c.requestor_profile,
            "peer": c.registry,
            "user": "",
            "scopes": c.scopes,
            "name": c.name,
        },
    })
    .to_string();
    let nonce = [9u8; 24];
    let aad = format!("sn-oauth-keeper/journal/v1/{id}/{}", c.refresh_sys_id);
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext.as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    let mod_count: i64 =
        bed.sim.row("oauth_credential", &c.refresh_sys_id).unwrap()["sys_mod_count"]
            .parse()
            .unwrap();
    let db = rusqlite::Connection::open(state.join(sn_oauth_keeper::journal::DB_FILE)).unwrap();
    db.execute(
        "INSERT INTO pending (id, credential, registry, created_at, key_id, nonce, sealed, refresh_mod_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![id, c.refresh_sys_id, "Okta", now, key_id, nonce.to_vec(), sealed, mod_count],
    )
    .unwrap();
}

#[tokio::test]
async fn a_record_sealed_before_keys_were_derived_is_delivered_after_the_upgrade() {
    let (bed, c) = strict_bed(false).await;
    plant_record_sealed_before_derivation(&bed, &c, "at-sealed-before-the-upgrade");
    let report = bed.cycle().await;
    assert_eq!(outcome(&report), Outcome::Redelivered, "{report:?}");
    assert_eq!(pending(&bed), 0);
    let access = c.access_sys_id.as_deref().unwrap();
    assert_eq!(
        bed.sim
            .decrypted("oauth_credential", access, "token_received")
            .as_deref(),
        Some("at-sealed-before-the-upgrade")
    );
}

#[tokio::test]
async fn rekey_with_the_same_key_moves_old_records_to_the_derived_keys() {
    let (bed, c) = strict_bed(false).await;
    plant_record_sealed_before_derivation(&bed, &c, "at-sealed-before-the-upgrade");
    let config = bed.config_file("");
    let path = config.to_str().unwrap();
    let key_ids = |out: std::process::Output| -> Vec<String> {
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        list.as_array()
            .unwrap()
            .iter()
            .map(|r| r["key_id"].as_str().unwrap().to_string())
            .collect()
    };
    let list = ["journal", "list", "--config", path, "--format", "json"];
    let before = key_ids(bed.run_binary(&list).await);
    assert!(!before[0].starts_with("v2:"), "{before:?}");
    let rekey = bed
        .run_binary(&[
            "journal",
            "rekey",
            "--config",
            path,
            "--new-key-env",
            "SN_OAUTH_KEEPER_KEY",
        ])
        .await;
    assert_eq!(rekey.status.code(), Some(0), "{rekey:?}");
    let after = key_ids(bed.run_binary(&list).await);
    assert!(after[0].starts_with("v2:"), "{after:?}");
    let out = bed.run_binary(&["once", "--config", path]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(pending(&bed), 0);
}
