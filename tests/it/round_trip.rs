//! `check --round-trip`: the keeper's whole write path proved on a scratch credential of its
//! own. It passes against the plain simulator, and each wrong belief — switched on as an
//! [`InstanceQuirk`] — fails its own step with its own fix; the scratch row is always deleted,
//! and a leftover of a crashed run is removed by the next one.

use crate::support::Bed;
use sn_oauth_keeper::check::{self, CheckOptions, Checklist, Verdict};
use sn_oauth_keeper::servicenow::scratch::{SCRATCH_NAME_PREFIX, SCRATCH_REGISTRY};
use sn_oauth_keeper_sim::{
    COMPANION_ROLE, CredentialSpec, Estate, Fault, FaultTarget, InstanceQuirk, ProviderKind,
    RegistrySpec,
};
use std::collections::HashMap;

const STEPS: &[&str] = check::round_trip::ROUND_TRIP_STEPS;

/// An instance as the runbook leaves it, with the update set's scratch registry, the user in
/// Berlin (so `expires` is written in a zone other than UTC).
fn estate() -> Estate {
    let mut estate = Estate::empty(61).with_user_time_zone("Europe/Berlin");
    let graph = estate.add_registry(RegistrySpec::new("Graph", ProviderKind::EntraLike));
    estate.add_credential(CredentialSpec::new(&graph, "mail"));
    estate.add_registry(RegistrySpec::new(
        SCRATCH_REGISTRY,
        ProviderKind::NonRotating,
    ));
    estate
}

async fn round_trip(bed: &Bed) -> Checklist {
    check::run_with(
        &bed.settings(),
        &HashMap::<String, String>::new(),
        &CheckOptions {
            recorder: None,
            round_trip: Some(SCRATCH_REGISTRY.to_owned()),
        },
    )
    .await
}

fn scratch_rows(bed: &Bed) -> usize {
    bed.sim
        .rows("oauth_credential")
        .iter()
        .filter(|r| r["name"].starts_with(SCRATCH_NAME_PREFIX))
        .count()
}

#[tokio::test]
async fn the_round_trip_passes_on_the_plain_simulator_and_leaves_nothing() {
    let bed = Bed::start(estate()).await;
    let before = bed.sim.rows("oauth_credential");
    let list = round_trip(&bed).await;
    for name in STEPS {
        let step = list
            .step(name)
            .unwrap_or_else(|| panic!("{name}: {}", list.render()));
        assert_eq!(step.verdict, Verdict::Pass, "{}", list.render());
    }
    assert_eq!(list.exit_code(), 0, "{}", list.render());
    assert_eq!(
        bed.sim.rows("oauth_credential"),
        before,
        "the scratch row is gone"
    );
    assert!(list.step("round trip").is_none());
}

#[tokio::test]
async fn without_round_trip_check_names_what_is_unproven() {
    let bed = Bed::start(estate()).await;
    let list = check::run(&bed.settings(), &HashMap::<String, String>::new()).await;
    let step = list.step("round trip").expect("the unproven step");
    assert_eq!(step.verdict, Verdict::Warn);
    for belief in ["references", "expires", "encrypted", "companion"] {
        assert!(step.detail.contains(belief), "{}", step.detail);
    }
    assert!(
        step.fix
            .as_deref()
            .unwrap_or("")
            .contains("check --round-trip")
    );
    assert!(STEPS.iter().all(|name| list.step(name).is_none()));
}

#[tokio::test]
async fn each_wrong_belief_fails_its_own_step_with_its_fix() {
    let cases = [
        (
            InstanceQuirk::ReferencesStoredEmpty,
            "round trip: references",
            "report it",
        ),
        (
            InstanceQuirk::TokensStoredUnencrypted,
            "round trip: stored encrypted",
            "report it",
        ),
        (
            InstanceQuirk::DatesReadInZone("America/New_York".into()),
            "round trip: expires in UTC",
            "time zone to UTC",
        ),
    ];
    for (quirk, failing, fix) in cases {
        let bed = Bed::start(estate()).await;
        bed.sim.add_quirk(quirk.clone());
        let list = round_trip(&bed).await;
        let shown = list.render();
        assert_eq!(list.exit_code(), 1, "{quirk:?}: {shown}");
        let step = list.step(failing).unwrap();
        assert_eq!(step.verdict, Verdict::Fail, "{quirk:?}: {shown}");
        assert!(
            step.fix.as_deref().unwrap_or("").contains(fix),
            "{quirk:?}: {shown}"
        );
        // Only the belief that is wrong fails (a token stored in clear does not decrypt, so the
        // companion cannot verify it either).
        for name in STEPS {
            let expected = if *name == failing
                || (quirk == InstanceQuirk::TokensStoredUnencrypted
                    && *name == "round trip: companion verifies")
            {
                Verdict::Fail
            } else {
                Verdict::Pass
            };
            assert_eq!(
                list.step(name).map(|s| s.verdict),
                Some(expected),
                "{quirk:?} {name}: {shown}"
            );
        }
        assert_eq!(
            scratch_rows(&bed),
            0,
            "{quirk:?}: the scratch row is deleted after a failure"
        );
    }
}

#[tokio::test]
async fn a_leftover_of_a_crashed_run_is_removed_and_a_missing_registry_named() {
    let bed = Bed::start(estate()).await;
    let leftover = bed.sim.insert_row(
        "oauth_credential",
        &[
            ("type", "access_token"),
            (
                "name",
                &format!("{SCRATCH_NAME_PREFIX} 2026-01-01 00:00:00"),
            ),
            ("sys_created_by", bed.sim.username()),
        ],
    );
    // A row of the same name someone else made is not the keeper's.
    let foreign = bed.sim.insert_row(
        "oauth_credential",
        &[
            ("type", "access_token"),
            ("name", &format!("{SCRATCH_NAME_PREFIX} by hand")),
            ("sys_created_by", "admin"),
        ],
    );
    let list = round_trip(&bed).await;
    let step = list.step("round trip: leftovers").unwrap();
    assert_eq!(step.verdict, Verdict::Pass, "{}", list.render());
    assert!(step.detail.contains(&leftover), "{}", step.detail);
    assert!(bed.sim.row("oauth_credential", &leftover).is_none());
    assert!(bed.sim.row("oauth_credential", &foreign).is_some());

    let bed = Bed::start(Estate::empty(62)).await;
    let list = round_trip(&bed).await;
    let step = list.step("round trip: scratch registry").unwrap();
    assert_eq!(step.verdict, Verdict::Fail, "{}", list.render());
    assert!(step.fix.as_deref().unwrap_or("").contains("update set"));
    assert_eq!(
        list.step("round trip: create").map(|s| s.verdict),
        Some(Verdict::Skip)
    );
    assert_eq!(list.exit_code(), 1);
}

#[tokio::test]
async fn the_binary_runs_the_round_trip() {
    let bed = Bed::start(estate()).await;
    let config = bed.config_file("");
    let run = async |expected: i32| {
        let out = bed
            .run_binary(&[
                "check",
                "--config",
                config.to_str().unwrap(),
                "--round-trip",
            ])
            .await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(expected), "{stdout}");
        stdout
    };
    let stdout = run(0).await;
    assert!(
        stdout.contains("[ok  ] round trip: companion verifies"),
        "{stdout}"
    );
    bed.sim.add_quirk(InstanceQuirk::ReferencesStoredEmpty);
    let stdout = run(1).await;
    assert!(stdout.contains("[FAIL] round trip: references"), "{stdout}");
    // --round-trip-registry needs --round-trip.
    let out = bed
        .run_binary(&[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--round-trip-registry",
            "x",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn an_older_companion_and_a_refused_delete_are_named_with_their_fixes() {
    // A companion from before /verify answers like any unknown resource of the API.
    let bed = Bed::start(estate()).await;
    bed.sim.inject(
        Fault::custom(
            FaultTarget::Companion,
            400,
            r#"{"error":{"message":"Requested URI does not represent any resource","detail":null},"status":"failure"}"#,
        )
        .path("/verify"),
    );
    let list = round_trip(&bed).await;
    let step = list.step("round trip: companion verifies").unwrap();
    assert_eq!(step.verdict, Verdict::Fail, "{}", list.render());
    assert!(
        step.fix
            .as_deref()
            .unwrap_or("")
            .contains("update the companion")
    );
    assert_eq!(scratch_rows(&bed), 0);

    // The documented role without the update set's delete ACL: the row stays, and says so;
    // the next round trip with the ACL back removes it as a leftover.
    let bed = Bed::start(
        estate()
            .with_user_roles(&[COMPANION_ROLE])
            .without_acl("oauth_credential", "delete"),
    )
    .await;
    let list = round_trip(&bed).await;
    let step = list.step("round trip: delete").unwrap();
    assert_eq!(step.verdict, Verdict::Fail, "{}", list.render());
    assert!(
        step.fix.as_deref().unwrap_or("").contains("delete ACL"),
        "{}",
        list.render()
    );
    assert_eq!(list.exit_code(), 1);
    assert_eq!(scratch_rows(&bed), 1);
    bed.sim.set_user_roles(&[COMPANION_ROLE, "oauth_admin"]);
    let list = round_trip(&bed).await;
    assert!(
        list.step("round trip: leftovers")
            .unwrap()
            .detail
            .contains("removed 1"),
        "{}",
        list.render()
    );
    assert_eq!(list.exit_code(), 0, "{}", list.render());
    assert_eq!(scratch_rows(&bed), 0);
}
