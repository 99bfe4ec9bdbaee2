//! The `steerer` CLI as a CI gate against the real server, the simulated cluster and a real
//! Prometheus: a good canary exits 0, a bad one exits 1, and `-o json` is one parseable object
//! per line.

use std::time::Duration;

use crate::cli_support::{events, json_lines, run, sequences, stderr, stdout};
use crate::common::{CANARY, GA, Harness, image, replicas};
use serde_json::json;
use steerer::v1::Phase;

const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.1.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_wait_exits_zero_when_a_healthy_canary_is_promoted() {
    let mut h = Harness::start().await;

    let out = run(
        h.addr(),
        &[
            "start",
            "test/podinfo",
            "--image",
            &format!("podinfo={NEW_IMAGE}"),
            "--step-weight",
            "25",
            "--interval",
            "1s",
            "--request-id",
            "ci-run-1",
            "--wait",
        ],
    )
    .await;

    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        stderr(&out),
        stdout(&out)
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("started rollout "), "{text}");
    let weights: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("  WEIGHT_CHANGED  "))
        .map(|l| l.split("  ").nth(2).unwrap())
        .collect();
    assert_eq!(
        weights,
        ["weight=25", "weight=50", "weight=75", "weight=100"],
        "{text}"
    );
    // Plain lines start with an RFC 3339 UTC timestamp.
    assert!(
        lines[1].len() > 20 && lines[1].as_bytes()[19] == b'Z',
        "{text}"
    );
    let last = lines.last().unwrap();
    assert!(last.contains(" promoted (SUCCEEDED)"), "{text}");

    let id = lines[0].split_whitespace().nth(2).unwrap();
    let done = h.get(id).await;
    assert_eq!(done.phase(), Phase::Succeeded);
    assert_eq!(done.request_id, "ci-run-1");
    assert_eq!(image(&h.deployment(GA).await), NEW_IMAGE);
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_wait_exits_one_with_json_lines_when_a_failing_canary_is_rolled_back() {
    let mut h = Harness::start().await;
    h.annotate_template(CANARY, json!({"sim.steerer.dev/error-rate": "0.3"}))
        .await;

    let out = run(
        h.addr(),
        &[
            "start",
            "test/podinfo",
            "--step-weight",
            "20",
            "--interval",
            "1s",
            "--threshold",
            "95",
            "--max-failed-checks",
            "2",
            "--wait",
            "-o",
            "json",
        ],
    )
    .await;

    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}\nstdout: {}",
        stderr(&out),
        stdout(&out)
    );
    let records = json_lines(&out);
    assert_eq!(records[0]["kind"], "rollout");
    assert_eq!(records[0]["namespace"], "test");
    assert_eq!(records[0]["target"], "podinfo");
    let id = records[0]["id"].as_str().unwrap().to_string();

    let events = events(&records);
    let done = h.get(&id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert_eq!(
        sequences(&events),
        (1..=done.last_sequence).collect::<Vec<_>>()
    );
    assert_eq!(events[0]["type"], "STARTED");
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "CHECK_FAILED")
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed[0]["success_rate"].as_f64().unwrap() < 95.0);
    assert_eq!(events.last().unwrap()["type"], "ROLLED_BACK");

    let outcome = records.last().unwrap();
    assert_eq!(outcome["kind"], "outcome");
    assert_eq!(outcome["phase"], "ROLLED_BACK");
    assert_eq!(outcome["succeeded"], false);
    assert_eq!(outcome["exit_code"], 1);
    assert_eq!(outcome["message"], done.message);
    assert_eq!(h.weights().await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_get_and_abort_drive_a_live_rollout() {
    let mut h = Harness::start().await;
    // Slow steps keep the rollout in progress while the commands run.
    let out = run(
        h.addr(),
        &[
            "start",
            "test/podinfo",
            "--step-weight",
            "10",
            "--interval",
            "5s",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = json_lines(&out)[0]["id"].as_str().unwrap().to_string();

    let out = run(h.addr(), &["list", "--active", "-n", "test", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = json_lines(&out);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());

    let out = run(h.addr(), &["get", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("target:         test/podinfo"),
        "{}",
        stdout(&out)
    );

    let out = run(h.addr(), &["abort", &id, "--reason", "release cancelled"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    h.wait_for_phase(&id, Phase::Aborted, Duration::from_secs(30))
        .await;
    assert_eq!(h.weights().await, (100, 0));

    // Following an aborted rollout is a failed gate.
    let out = run(h.addr(), &["watch", &id, "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let records = json_lines(&out);
    assert_eq!(events(&records).last().unwrap()["type"], "ABORTED");
    assert_eq!(records.last().unwrap()["phase"], "ABORTED");

    let out = run(h.addr(), &["list", "--active", "-o", "json"]).await;
    assert!(json_lines(&out).is_empty(), "{}", stdout(&out));
}
