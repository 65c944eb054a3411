//! `sn-oauth-keeper-bench --smoke`: the benchmark harness runs end to end at a small size, so it
//! cannot rot. Calls are behaviour and are checked exactly; time is not (that is what the full
//! benchmark reports, never asserts).

// A test panics on the unexpected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

/// Every column the report's tables must have.
const COLUMNS: &[&str] = &[
    "| R | D | C | wall | wall floor | bound | wall ratio | overhead / refresh | calls | call floor | call ratio | peak RSS | CPU |",
    "| R | D | C | discovery | user | secrets | verify | token | write | race check | lease | other |",
    "| R | idle calls / cycle | idle call floor | idle call ratio | idle CPU / cycle | idle wall / cycle | idle wall floor |",
];

/// The kinds of call counted against the floor.
const KINDS: &[&str] = &[
    "discovery",
    "user",
    "secrets",
    "verify",
    "token",
    "write",
    "reread",
    "lease",
    "other",
];

/// The smoke plan's estates, (R, D), with every kind of call a cycle of each must make, in the
/// order of [`KINDS`]: one page, the user's time zone, one `/secrets` call, a `/verify` call per
/// 100 rows written (two per refresh), the token requests, the writes, one batched
/// race-check read, and the lease: taken, the batch claimed, the claims withdrawn, released.
const EXPECTED: &[((u64, u64), [u64; 9])] = &[
    ((40, 10), [1, 1, 1, 1, 10, 20, 1, 4, 0]),
    ((200, 60), [1, 1, 1, 2, 60, 120, 1, 4, 0]),
];

#[tokio::test]
async fn the_smoke_benchmark_runs_every_cycle_at_the_call_floor() {
    let out = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sn-oauth-keeper-bench"))
        .args(["--smoke", "--out"])
        .arg(out.path())
        .env_remove("SN_OAUTH_KEEPER_CONFIG")
        .env_remove("SN_OAUTH_KEEPER_LOG_LEVEL")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    let markdown = std::fs::read_to_string(out.path().join("BENCHMARKS.md")).unwrap();
    for columns in COLUMNS {
        assert!(markdown.contains(columns), "missing {columns}:\n{markdown}");
        assert!(
            stdout.contains(columns),
            "stdout lacks {columns}:\n{stdout}"
        );
    }
    for section in [
        "## Reproduce",
        "## Machine",
        "## Method",
        "## Targets",
        "wall-time.svg",
    ] {
        assert!(markdown.contains(section), "missing {section}:\n{markdown}");
    }

    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("tests/bench/results.json")).unwrap(),
    )
    .unwrap();
    let runs = results["runs"].as_array().unwrap();
    // The smoke plan: two estates at two concurrencies, none skipped.
    assert_eq!(runs.len(), 4, "{results:#}");
    for run in runs {
        let estate = (run["rows"].as_u64().unwrap(), run["due"].as_u64().unwrap());
        let (_, expected) = EXPECTED
            .iter()
            .find(|(e, _)| *e == estate)
            .unwrap_or_else(|| panic!("an estate outside the smoke plan: {run:#}"));
        for (kind, count) in KINDS.iter().zip(expected) {
            assert_eq!(run["calls"][kind].as_u64(), Some(*count), "{kind}: {run:#}");
            assert_eq!(
                run["call_floor"][kind].as_u64(),
                Some(*count),
                "{kind}: {run:#}"
            );
        }
        assert_eq!(run["call_ratio"].as_f64(), Some(1.0), "{run:#}");
        assert_eq!(run["calls_at_floor"], Value::Bool(true), "{run:#}");
        assert_eq!(run["failed_calls"].as_u64(), Some(0), "{run:#}");
        let due = run["due"].as_u64().unwrap();
        assert_eq!(run["calls"]["token"].as_u64(), Some(due), "{run:#}");
        assert!(run["wall_s"].as_f64().unwrap() > 0.0, "{run:#}");
        let floor = run["floor_s"].as_f64().unwrap();
        assert!(floor > 0.0, "{run:#}");
        assert_eq!(
            Some(floor),
            run["token_bound_s"]
                .as_f64()
                .zip(run["write_bound_s"].as_f64())
                .map(|(t, w)| t.max(w)),
            "{run:#}"
        );
        assert!(run["peak_rss_kib"].as_u64().unwrap() > 0, "{run:#}");
    }
    let idle = results["idle"].as_array().unwrap();
    assert_eq!(idle.len(), 2, "{results:#}");
    for estate in idle {
        // An idle cycle reads its pages and nothing else.
        assert_eq!(estate["calls_at_floor"], Value::Bool(true), "{estate:#}");
        assert_eq!(estate["calls"]["token"].as_u64(), Some(0), "{estate:#}");
        assert_eq!(estate["calls"]["write"].as_u64(), Some(0), "{estate:#}");
    }
    let memory = &results["memory"];
    assert_eq!(memory["cycles"].as_u64(), Some(30), "{memory:#}");
    assert!(
        !memory["rss_kib"].as_array().unwrap().is_empty(),
        "{memory:#}"
    );
    assert_eq!(
        memory["calls_per_cycle"].as_f64(),
        memory["call_floor_per_cycle"].as_f64(),
        "{memory:#}"
    );
    assert!(results["targets"].as_array().is_some_and(|t| !t.is_empty()));

    let svg = std::fs::read_to_string(out.path().join("tests/bench/wall-time.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    // A measured line and a floor line per concurrency.
    assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
}
