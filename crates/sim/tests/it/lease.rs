//! The companion's lease under concurrent callers, over real sockets: whatever order the
//! simultaneous requests of two keepers (and readers of `GET /lease`) arrive in, exactly one
//! holds the lease, fences only rise, a refused keeper changes nothing, and a reader sees the
//! lease and the claims as they stand between two calls. Also what tests of the keeper use:
//! reading the lease, its holder's pid and its claims, and expiring it without waiting.

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

async fn lease_status(sim: &Simulator) -> Value {
    let resp = get(sim, &format!("{}/lease", sim.companion_path())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    json(resp).await
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
        let mut reads = JoinSet::new();
        for i in 0..40 {
            let keeper = sim.clone();
            let holder = keepers[i % 2];
            let body = json!({"holder": holder, "ttl_seconds": 60, "claims": [id(i % 7), id(100 + i % 3)]});
            calls.spawn(async move { (holder, post_lease(&keeper, body).await) });
            if i % 4 == 0 {
                let reader = sim.clone();
                reads.spawn(async move { lease_status(&reader).await });
            }
        }
        let answers = calls.join_all().await;
        let reads = reads.join_all().await;
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
        for read in &reads {
            // Before the winner's call: no one holds it, at the last round's fence; after: the
            // winner at this round's. Never a credential listed twice.
            let result = &read["result"];
            if result["holder"].is_null() {
                assert_eq!(result["fence"], json!(round - 1), "round {round}: {read}");
                assert_eq!(result["expires_in"], json!(0));
            } else {
                assert_eq!(result["holder"], json!(winner), "round {round}: {read}");
                assert_eq!(result["fence"], json!(round));
            }
            let mut listed: Vec<&str> = read["claims"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["sys_id"].as_str().unwrap())
                .collect();
            let all = listed.len();
            listed.sort_unstable();
            listed.dedup();
            assert_eq!(listed.len(), all, "round {round}: {read}");
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

#[tokio::test]
async fn keeper_tests_read_the_lease_and_its_pid_as_get_lease_answers_them() {
    let sim = start(Estate::empty(48)).await;
    let (status, _) = post_lease(
        &sim,
        json!({"holder": "keeper-a", "ttl_seconds": 60, "claims": [id(1)], "pid": 4242}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let lease = sim.companion_lease().unwrap();
    assert_eq!(lease.pid, Some(4242));
    assert_eq!(
        lease_status(&sim).await,
        json!({
            "result": {"holder": "keeper-a", "fence": 1, "expires_in": 60, "pid": 4242},
            "claims": [{"holder": "keeper-a", "sys_id": id(1)}],
        })
    );
    // HEAD is GET without a body, as for every GET of the instance.
    let resp = req(
        &sim,
        Method::HEAD,
        &format!("{}/lease", sim.companion_path()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_eq!(
        sim.companion_lease(),
        Some(lease),
        "reading changes nothing"
    );

    sim.expire_companion_lease();
    assert_eq!(
        lease_status(&sim).await["result"],
        json!({"holder": null, "fence": 1, "expires_in": 0, "pid": null})
    );
    // A new holder without a pid stores none.
    let (status, _) = post_lease(&sim, json!({"holder": "keeper-b", "ttl_seconds": 60})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.companion_lease().unwrap().pid, None);
}

#[tokio::test]
async fn a_companion_from_before_lease_status_lacks_it_and_ignores_a_pid() {
    let sim = start(Estate::empty(49).with_companion_before_lease_status()).await;
    let resp = get(&sim, &format!("{}/lease", sim.companion_path())).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json(resp).await["error"]["message"],
        "Requested URI does not represent any resource"
    );
    assert!(sim.companion_audit().is_empty(), "no script ran");
    // Even a pid that is no pid: a key it does not know.
    let (status, _) = post_lease(
        &sim,
        json!({"holder": "keeper-a", "ttl_seconds": 60, "pid": "4242"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post_lease(
        &sim,
        json!({"holder": "keeper-a", "ttl_seconds": 60, "pid": 4242}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.companion_lease().unwrap().pid, None);
    let (status, body) = post_lease(&sim, json!({"holder": "keeper-b", "ttl_seconds": 60})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["error"]["detail"],
        "Another keeper holds the lease for 60 more second(s); only one keeper may work on an \
         instance. Retry after it expires or is released."
    );
}
