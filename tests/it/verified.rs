//! Verified write-back: an answer leaves the journal only when ServiceNow provably holds it.
//! A 200 is no proof — a field-level ACL, a data policy or a business rule can discard the
//! integration user's write of `token_received` (or a new row's references) and the instance
//! still answers 200. Each test runs the real binary three times: while the instance discards
//! the write (exit 1, the answer stays journaled), again with the cause still there (no token
//! is spent), and after the fix (exit 0, every row holds the provider's latest tokens, with no
//! new token request).

use crate::support::{Bed, strict_estate};
use secrecy::ExposeSecret;
use sn_oauth_keeper::journal::Journal;
use sn_oauth_keeper_sim::{Fault, FaultTarget, SeededCredential};
use std::path::Path;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The answer the journal holds for `c`: (access token, rotated refresh token).
fn journaled(bed: &Bed, c: &SeededCredential) -> (String, String) {
    let journal = Journal::open(&bed.dir.path().join("state"), Some(&bed.key)).unwrap();
    let pending = journal.pending().unwrap();
    assert_eq!(pending.len(), 1, "one answer waits");
    let obtained = pending[0].as_ref().expect("the record opens");
    assert_eq!(obtained.credential(), c.refresh_sys_id);
    let d = obtained.delivery();
    let rotated = d.rotated.as_ref().expect("the strict provider rotates");
    (
        d.access_token.expose_secret().to_string(),
        rotated.token.expose_secret().to_string(),
    )
}

/// The tokens ServiceNow's rows hold for `c`: (access rows' tokens, refresh row's token).
fn stored(bed: &Bed, c: &SeededCredential) -> (Vec<String>, String) {
    let refresh = bed
        .sim
        .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
        .unwrap_or_default();
    let access = bed
        .sim
        .rows("oauth_credential")
        .into_iter()
        .filter(|r| {
            r["type"] == "access_token" && r["oauth_requestor_profile"] == c.requestor_profile
        })
        .filter_map(|r| {
            bed.sim
                .decrypted("oauth_credential", &r["sys_id"], "token_received")
        })
        .collect();
    (access, refresh)
}

fn on_disk_nowhere(dir: &Path, secret: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "a token in clear on disk"
        );
    }
}

/// Run 1 while the instance discards the write, run 2 with the cause still there, `fix`, run 3.
async fn three_runs(bed: &Bed, c: &SeededCredential, fix: impl FnOnce(), expect: &str) {
    let config = bed.config_file("");
    let args = ["once", "--config", config.to_str().unwrap()];
    let once = || bed.run_binary(&args);

    let first = once().await;
    let first_text = text(&first);
    assert_eq!(first.status.code(), Some(1), "{first_text}");
    assert!(first_text.contains("write_not_stored"), "{first_text}");
    assert!(first_text.contains(expect), "{first_text}");
    assert_eq!(bed.sim.token_requests(&c.provider), 1);
    let (access, refresh) = journaled(bed, c);
    assert!(
        bed.sim.provider_valid(&c.provider, &refresh),
        "the journal holds the live refresh token"
    );
    on_disk_nowhere(&bed.dir.path().join("state"), &refresh);
    on_disk_nowhere(&bed.dir.path().join("state"), &access);

    let second = once().await;
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert_eq!(
        bed.sim.token_requests(&c.provider),
        1,
        "while the answer waits, no token is spent"
    );

    fix();
    let third = once().await;
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    assert_eq!(
        bed.sim.token_requests(&c.provider),
        1,
        "delivered from the journal"
    );
    let (access_rows, refresh_row) = stored(bed, c);
    assert_eq!(
        refresh_row, refresh,
        "the refresh row holds the latest token"
    );
    assert!(bed.sim.provider_valid(&c.provider, &refresh_row));
    assert_eq!(
        access_rows,
        vec![access],
        "one access row, the latest token"
    );
    let journal = Journal::open(&bed.dir.path().join("state"), Some(&bed.key)).unwrap();
    assert_eq!(journal.pending_count().unwrap(), 0, "the journal drained");
}

#[tokio::test]
async fn a_token_write_a_field_acl_discards_stays_journaled_until_it_sticks() {
    let (estate, c) = strict_estate(401, false);
    let bed = Bed::start(estate).await;
    bed.sim
        .deny_field_write("oauth_credential", "token_received");
    three_runs(
        &bed,
        &c,
        || {
            bed.sim
                .allow_field_write("oauth_credential", "token_received")
        },
        "field ACL",
    )
    .await;
}

#[tokio::test]
async fn a_dropped_access_row_write_stays_journaled_until_it_sticks() {
    let (estate, c) = strict_estate(402, false);
    let bed = Bed::start(estate).await;
    let access = c.access_sys_id.clone().expect("an access row");
    // A business rule on the access row throws the token away; the refresh row is fine.
    bed.sim.inject(
        Fault::discard_fields(FaultTarget::TableApi, &["token_received"])
            .method("PATCH")
            .path(&access),
    );
    three_runs(&bed, &c, || bed.sim.clear_faults(), "token_received").await;
}

#[tokio::test]
async fn a_created_row_with_wrong_references_stays_journaled_until_repaired() {
    let (estate, c) = strict_estate(403, true);
    let bed = Bed::start(estate).await;
    // The new access row's peer is not stored: the POST's answer shows it, the repair PATCH is
    // discarded too.
    bed.sim.deny_field_write("oauth_credential", "peer");
    three_runs(
        &bed,
        &c,
        || bed.sim.allow_field_write("oauth_credential", "peer"),
        "peer",
    )
    .await;
    let access_rows: Vec<_> = bed
        .sim
        .rows("oauth_credential")
        .into_iter()
        .filter(|r| r["type"] == "access_token")
        .collect();
    assert_eq!(access_rows.len(), 1, "no second row was created");
    assert_eq!(
        access_rows[0]["peer"], c.registry,
        "the reference was repaired"
    );
}

#[tokio::test]
async fn a_repairable_reference_is_repaired_at_once() {
    let (estate, c) = strict_estate(404, true);
    let bed = Bed::start(estate).await;
    // The POST loses the peer (a data policy on insert), the repair PATCH keeps it.
    bed.sim.inject(
        Fault::discard_fields(FaultTarget::TableApi, &["peer"])
            .method("POST")
            .times(1),
    );
    let report = bed.cycle().await;
    assert_eq!(report.failures(), 0, "{report:?}");
    let access_rows: Vec<_> = bed
        .sim
        .rows("oauth_credential")
        .into_iter()
        .filter(|r| r["type"] == "access_token")
        .collect();
    assert_eq!(access_rows.len(), 1);
    assert_eq!(access_rows[0]["peer"], c.registry);
    let repairs = bed
        .writes()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.query.contains("sysparm_input_display_value=false"))
        .count();
    assert_eq!(
        repairs, 1,
        "one repair PATCH of the references as database values"
    );
}
