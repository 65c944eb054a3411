//! The companion's lease under concurrent callers, over real sockets: whatever order the
//! simultaneous requests of two keepers arrive in, exactly one holds the lease, fences only
//! rise, and a refused keeper changes nothing. Also what tests of the keeper use: reading the
//! lease and its claims, and expiring it without waiting.

use super::support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sn_oauth_keeper_sim::{Estate, LeaseClaim, Simulator};
use tokio::task::JoinSet;

fn id(n: usize) -> String {
    format!("{n:032x}")
}

async fn post_lease(sim: &Simulator, body: Value) -> (StatusCode, Value) {
    let resp = req(
        sim,
        Method::POST,
        &format!("{}/lease", sim.companion_path()),
    )
    .json(&body)
    .send()
    .await
    .unwrap();
    (resp.status(), json(resp).await)
}

fn claims_of(sim: &Simulator, holder: &str) -> Vec<LeaseClaim> {
    sim.companion_lease_claims()
        .into_iter()
        .filter(|c| c.holder == holder)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_keepers_calling_at_once_exactly_one_holds_the_lease() {
    let sim = start(Estate::empty(46)).await;
    let keepers = ["keeper-a", "keeper-b"];
    for round in 1..=5u64 {
        let claims_before: Vec<Vec<LeaseClaim>> =
            keepers.iter().map(|k| claims_of(&sim, k)).collect();
        let mut calls = JoinSet::new();
        for i in 0..40 {
            let sim = sim.clone();
            let holder = keepers[i % 2];
            let body = json!({"holder": holder, "ttl_seconds": 60, "claims": [id(i % 7), id(100 + i % 3)]});
            calls.spawn(async move { (holder, post_lease(&sim, body).await) });
        }
        let answers = calls.join_all().await;
        let winners: Vec<&str> = answers
            .iter()
            .filter(|(_, (status, _))| *status == StatusCode::OK)
            .map(|(holder, _)| *holder)
            .collect();
        assert!(
            !winners.is_empty(),
            "round {round}: someone holds the lease"
        );
        let winner = winners[0];
        assert!(
            winners.iter().all(|w| *w == winner),
            "round {round}: one holder"
        );
        for (holder, (status, body)) in &answers {
            if *holder == winner {
                assert_eq!(*status, StatusCode::OK);
                assert_eq!(body["result"]["fence"], json!(round), "fences rise by one");
            } else {
                assert_eq!(*status, StatusCode::CONFLICT);
                assert_eq!(body["result"]["holder"], json!(winner));
            }
        }
        let lease = sim.companion_lease().unwrap();
        assert_eq!((lease.holder.as_str(), lease.fence), (winner, round));
        assert!(lease.expires_at > sim.now());
        // The refused keeper's claims are as they were; no credential has two claimants.
        let loser = keepers.iter().position(|k| *k != winner).unwrap();
        assert_eq!(claims_of(&sim, keepers[loser]), claims_before[loser]);
        let mut ids: Vec<String> = sim
            .companion_lease_claims()
            .into_iter()
            .map(|c| c.sys_id)
            .collect();
        let all = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all);
        sim.expire_companion_lease();
        assert!(sim.companion_lease().unwrap().expires_at <= sim.now());
    }
}

#[tokio::test]
async fn a_keeper_test_can_expire_the_lease_without_waiting() {
    let sim = start(Estate::empty(47)).await;
    assert_eq!(sim.companion_lease(), None, "no lease before the first");
    let (status, _) = post_lease(
        &sim,
        json!({"holder": "keeper-a", "ttl_seconds": 600, "claims": [id(1)]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post_lease(&sim, json!({"holder": "keeper-b", "ttl_seconds": 60})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["result"]["expires_in"], json!(600));
    // The lease's time is the simulator's clock.
    sim.advance_time(jiff::SignedDuration::from_secs(300));
    let (_, body) = post_lease(&sim, json!({"holder": "keeper-b", "ttl_seconds": 60})).await;
    assert_eq!(body["result"]["expires_in"], json!(300));
    sim.expire_companion_lease();
    let (status, body) = post_lease(&sim, json!({"holder": "keeper-b", "ttl_seconds": 60})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["fence"], json!(2));
    assert_eq!(
        body["claims"],
        json!([{"holder": "keeper-a", "sys_id": id(1)}]),
        "claims outlive the lease"
    );
    assert_eq!(
        sim.companion_lease_claims(),
        vec![LeaseClaim {
            holder: "keeper-a".to_owned(),
            sys_id: id(1)
        }]
    );
}
