//! What reaches ServiceNow: the encryption flag, `expires` in UTC whatever the user's time zone,
//! and complete discovery across short pages.

use crate::support::Bed;
use sn_oauth_keeper::domain::report::{Outcome, OutcomeKind};
use sn_oauth_keeper::domain::time::{format_sn_utc, parse_sn_datetime};
use sn_oauth_keeper_sim::{CredentialSpec, Estate, ProviderKind, RegistrySpec};

#[tokio::test]
async fn tokens_are_only_ever_written_with_the_encryption_flag() {
    let bed = Bed::start(Estate::demo(5)).await;
    let report = bed.cycle().await;
    assert!(report.count(OutcomeKind::Refreshed) > 10);
    let writes = bed.writes();
    assert!(!writes.is_empty());
    for w in &writes {
        if w.body.contains("token_received") {
            assert!(
                w.query.contains("sysparm_input_display_value=true"),
                "a token was written without the encryption flag: {} {}?{}",
                w.method,
                w.path,
                w.query
            );
        }
    }
    for row in bed.sim.rows("oauth_credential") {
        let written_by_keeper =
            row.get("sys_updated_by").map(String::as_str) == Some(bed.sim.username());
        if written_by_keeper {
            assert!(
                bed.sim
                    .decrypted("oauth_credential", &row["sys_id"], "token_received")
                    .is_some(),
                "row {} holds an undecryptable token",
                row["sys_id"]
            );
        }
    }
}

async fn expiry_lands_in_utc(time_zone: &str, system_tz: &str, expect_corrections: bool) {
    let bed = Bed::start(
        Estate::demo(9)
            .with_user_time_zone(time_zone)
            .with_system_time_zone(system_tz),
    )
    .await;
    let report = bed.cycle().await;
    let mut checked = 0;
    for c in &report.credentials {
        if !matches!(c.outcome, Outcome::Refreshed { .. }) {
            continue;
        }
        let intended = c.access_expires.expect("an expiry was written");
        let seeded = bed
            .seeded
            .iter()
            .find(|s| s.refresh_sys_id == c.sys_id)
            .expect("seeded");
        let row = bed
            .sim
            .rows("oauth_credential")
            .into_iter()
            .find(|r| {
                r.get("type").map(String::as_str) == Some("access_token")
                    && r.get("oauth_requestor_profile") == Some(&seeded.requestor_profile)
            })
            .expect("access row");
        assert_eq!(
            parse_sn_datetime(&row["expires"]).unwrap(),
            Some(intended),
            "user tz {time_zone:?}: stored {} for intended {}",
            row["expires"],
            format_sn_utc(intended)
        );
        checked += 1;
    }
    assert!(checked > 10, "{checked}");
    let corrections = bed
        .writes()
        .iter()
        .filter(|w| w.query.contains("sysparm_input_display_value=false"))
        .count();
    assert_eq!(
        corrections > 0,
        expect_corrections,
        "corrective PATCHes: {corrections}"
    );
}

#[tokio::test]
async fn expires_is_right_in_utc_for_a_utc_user() {
    expiry_lands_in_utc("UTC", "UTC", false).await;
}

#[tokio::test]
async fn expires_is_right_in_utc_for_a_los_angeles_user() {
    expiry_lands_in_utc("America/Los_Angeles", "UTC", false).await;
}

#[tokio::test]
async fn expires_is_right_in_utc_for_a_kolkata_user() {
    expiry_lands_in_utc("Asia/Kolkata", "UTC", false).await;
}

#[tokio::test]
async fn an_unknown_system_default_zone_is_detected_and_corrected() {
    expiry_lands_in_utc("", "Asia/Kolkata", true).await;
}

#[tokio::test]
async fn short_pages_miss_nothing() {
    // The simulator returns at most 3 rows of each 7-row window, as an instance does when ACLs
    // filter rows after `sysparm_limit`: a client that stops on the first short page sees 3 rows.
    let mut estate = Estate::empty(21).with_max_page_rows(3);
    let reg = estate
        .add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike).provider_id("entra"));
    for i in 0..23 {
        let spec = CredentialSpec::new(&reg, format!("cred {i:02}"));
        let spec = if i % 2 == 0 {
            spec.access_missing()
        } else {
            spec
        };
        estate.add_credential(spec);
    }
    let bed = Bed::start(estate).await;
    let mut rows = bed.sim.rows("oauth_credential");
    rows.sort_by(|a, b| a["sys_id"].cmp(&b["sys_id"]));
    let visible_refresh_rows: std::collections::BTreeSet<String> = rows
        .chunks(7)
        .flat_map(|window| window.iter().take(3))
        .filter(|r| r["type"] == "refresh_token")
        .map(|r| r["sys_id"].clone())
        .collect();
    assert!(visible_refresh_rows.len() > 3);
    let mut settings = bed.settings();
    settings.instance.page_size = 7;
    let report = bed.cycle_with(settings).await;
    let discovered: std::collections::BTreeSet<String> = report
        .credentials
        .iter()
        .map(|c| c.sys_id.clone())
        .collect();
    assert_eq!(
        discovered, visible_refresh_rows,
        "every visible credential discovered"
    );
    let pages = bed
        .sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "GET"
                && r.path.ends_with("/table/oauth_credential")
                && r.query.contains("typeIN")
        })
        .count();
    assert_eq!(
        pages,
        rows.len().div_ceil(7),
        "one GET per window, none after the last"
    );
}
