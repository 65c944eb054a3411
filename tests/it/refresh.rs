//! Each credential state ends as it should.

use crate::support::Bed;
use sn_oauth_keeper::clock::{Clock, SystemClock};
use sn_oauth_keeper::domain::classify::FailureClass;
use sn_oauth_keeper::domain::report::Outcome;
use sn_oauth_keeper_sim::{Estate, SeededCredential};

fn urlencoded(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn outcome_of<'a>(
    report: &'a sn_oauth_keeper::domain::report::CycleReport,
    c: &SeededCredential,
) -> &'a Outcome {
    &report
        .credentials
        .iter()
        .find(|r| r.sys_id == c.refresh_sys_id)
        .unwrap_or_else(|| panic!("{} not in the report", c.name))
        .outcome
}

#[tokio::test]
async fn every_demo_state_ends_as_it_should() {
    let bed = Bed::start(Estate::demo(7)).await;
    let report = bed.cycle().await;
    let token_bodies: Vec<String> = bed.token_requests().into_iter().map(|r| r.body).collect();
    let writes = bed.writes();
    let sim = &bed.sim;
    let mut seen_labels = std::collections::BTreeSet::new();
    for c in &bed.seeded {
        seen_labels.insert(c.label.clone());
        let asked = token_bodies
            .iter()
            .filter(|b| b.contains(&format!("refresh_token={}", urlencoded(&c.refresh_token))))
            .count();
        let touched = writes.iter().any(|w| {
            w.path.ends_with(&c.refresh_sys_id)
                || c.access_sys_id
                    .as_ref()
                    .is_some_and(|a| w.path.ends_with(a.as_str()))
        });
        match c.label.as_str() {
            "client_credentials registry" => {
                assert!(
                    report
                        .credentials
                        .iter()
                        .all(|r| r.sys_id != c.refresh_sys_id)
                );
                assert_eq!(asked, 0);
            }
            "fresh" => {
                assert_eq!(outcome_of(&report, c), &Outcome::Skipped, "{}", c.name);
                assert_eq!(asked, 0, "fresh {} got a token request", c.name);
                assert!(!touched, "fresh {} was written", c.name);
            }
            "stale" | "access expired" | "idle (85 days)" | "access row missing" => {
                let Outcome::Refreshed {
                    rotated,
                    created_access_row,
                } = outcome_of(&report, c)
                else {
                    panic!(
                        "{} ({}) not refreshed: {:?}",
                        c.name,
                        c.label,
                        outcome_of(&report, c)
                    );
                };
                assert_eq!(asked, 1, "{} asked {asked} times", c.name);
                assert_eq!(
                    *created_access_row,
                    c.label == "access row missing",
                    "{}",
                    c.name
                );
                let refresh_now = sim
                    .decrypted("oauth_credential", &c.refresh_sys_id, "token_received")
                    .expect("refresh token readable");
                assert!(
                    sim.provider_valid(&c.provider, &refresh_now),
                    "{}: stored refresh token must work",
                    c.name
                );
                assert_eq!(*rotated, refresh_now != c.refresh_token, "{}", c.name);
                let access_rows: Vec<_> = sim
                    .rows("oauth_credential")
                    .into_iter()
                    .filter(|r| {
                        r.get("type").map(String::as_str) == Some("access_token")
                            && r.get("oauth_requestor_profile") == Some(&c.requestor_profile)
                            && r.get("peer") == Some(&c.registry)
                    })
                    .collect();
                assert_eq!(access_rows.len(), 1, "{}: exactly one access row", c.name);
                let row = &access_rows[0];
                let id = &row["sys_id"];
                let token = sim
                    .decrypted("oauth_credential", id, "token_received")
                    .expect("access token decrypts");
                assert_ne!(
                    Some(&token),
                    c.access_token.as_ref(),
                    "{}: a new access token",
                    c.name
                );
                let expires = sn_oauth_keeper::domain::time::parse_sn_datetime(&row["expires"])
                    .unwrap()
                    .unwrap();
                assert!(
                    expires > SystemClock.now() + jiff::SignedDuration::from_mins(30),
                    "{}: expires {expires}",
                    c.name
                );
            }
            "revoked at provider" => {
                assert!(
                    matches!(
                        outcome_of(&report, c),
                        Outcome::Failed {
                            class: FailureClass::NeedsReauth,
                            ..
                        }
                    ),
                    "{}: {:?}",
                    c.name,
                    outcome_of(&report, c)
                );
                assert!(!touched);
            }
            "wrong client secret" => {
                // The first credential of the registry finds out; the registry is parked and
                // the others are not sent.
                assert!(
                    matches!(
                        outcome_of(&report, c),
                        Outcome::Failed {
                            class: FailureClass::Configuration,
                            ..
                        } | Outcome::Blocked { .. }
                    ),
                    "{}: {:?}",
                    c.name,
                    outcome_of(&report, c)
                );
                assert!(!touched);
            }
            "refresh row expired" => {
                assert!(matches!(outcome_of(&report, c), Outcome::Blocked { .. }));
                assert_eq!(asked, 0);
            }
            other => panic!("unexpected demo label {other}"),
        }
    }
    for label in [
        "fresh",
        "stale",
        "access row missing",
        "access expired",
        "idle (85 days)",
        "revoked at provider",
        "wrong client secret",
    ] {
        assert!(seen_labels.contains(label), "the demo lacks {label}");
    }
    assert!(bed.seeded.len() >= 20);

    // Second cycle: nothing is due but what needs a person; dead tokens are not hammered.
    bed.sim.clear_requests();
    let second = bed.cycle().await;
    for c in &bed.seeded {
        if c.label == "client_credentials registry" {
            continue;
        }
        let o = outcome_of(&second, c);
        match c.label.as_str() {
            "revoked at provider" | "refresh row expired" => {
                assert!(matches!(o, Outcome::Blocked { .. }), "{}: {o:?}", c.name)
            }
            "wrong client secret" => {
                assert!(
                    matches!(o, Outcome::Blocked { .. }),
                    "parked registry: {o:?}"
                )
            }
            _ => assert_eq!(o, &Outcome::Skipped, "{} on the second cycle", c.name),
        }
    }
    let wrong_secret: Vec<_> = bed
        .seeded
        .iter()
        .filter(|c| c.label == "wrong client secret")
        .collect();
    let configuration_failures = wrong_secret
        .iter()
        .filter(|c| {
            matches!(
                outcome_of(&report, c),
                Outcome::Failed {
                    class: FailureClass::Configuration,
                    ..
                }
            )
        })
        .count();
    assert!(
        configuration_failures >= 1,
        "the misconfigured registry was found out"
    );
    assert!(
        bed.token_requests().is_empty(),
        "nothing is asked again: dead tokens and the parked registry wait for a person"
    );
}

#[tokio::test]
async fn a_reauthorised_credential_is_picked_up_again() {
    let bed = Bed::start(Estate::demo(11)).await;
    let revoked = bed
        .seeded
        .iter()
        .find(|c| c.label == "revoked at provider" && c.provider == "entra")
        .expect("seeded")
        .clone();
    bed.cycle().await;
    let parked = bed.cycle().await;
    assert!(matches!(
        parked
            .credentials
            .iter()
            .find(|r| r.sys_id == revoked.refresh_sys_id)
            .map(|r| &r.outcome),
        Some(Outcome::Blocked { .. })
    ));
    // Someone re-authorises: ServiceNow stores a new refresh token in the same row (the
    // simulated provider learns it through a fresh credential of the same registry).
    let fresh_token = bed
        .seeded
        .iter()
        .find(|c| c.label == "fresh" && c.provider == "entra")
        .expect("fresh")
        .refresh_token
        .clone();
    bed.sim.set_encrypted_field(
        "oauth_credential",
        &revoked.refresh_sys_id,
        "token_received",
        &fresh_token,
    );
    let report = bed.cycle().await;
    let outcome = &report
        .credentials
        .iter()
        .find(|r| r.sys_id == revoked.refresh_sys_id)
        .expect("present")
        .outcome;
    assert!(matches!(outcome, Outcome::Refreshed { .. }), "{outcome:?}");
}
