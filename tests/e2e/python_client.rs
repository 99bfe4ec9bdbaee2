//! The proto is a contract other languages can use: a Python client generated from `proto/`
//! with grpcio-tools (`tests/python/rollout.py`) runs a rollout to completion. Python 3 with
//! `grpcio` and `grpcio-tools` is required (tests/run.sh installs them); without it this test
//! fails.

use std::path::Path;
use std::process::Command;

use crate::common::{GA, Harness, image};
use serde_json::Value;
use steerer::v1::Phase;

const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.1.0";

/// `$STEERER_PYTHON` (tests/run.sh points it at a virtualenv with grpcio), else `python3`.
fn python() -> Command {
    let python = std::env::var_os("STEERER_PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into());
    let mut command = Command::new(python);
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

/// Generates the Python stubs for `proto/steerer/v1/rollout.proto` into `out`.
fn generate_stubs(out: &Path) {
    let check = python()
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .output()
        .unwrap_or_else(|e| panic!("python cannot be run: {e}"));
    assert!(
        check.status.success(),
        "python lacks grpcio/grpcio-tools ({}); set STEERER_PYTHON to a python that has \
         them (tests/run.sh does)",
        String::from_utf8_lossy(&check.stderr).trim()
    );
    let out_arg = out.to_str().unwrap();
    let generated = python()
        .args([
            "-m",
            "grpc_tools.protoc",
            "-I",
            "proto",
            &format!("--python_out={out_arg}"),
            &format!("--grpc_python_out={out_arg}"),
            "proto/steerer/v1/rollout.proto",
        ])
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "protoc failed: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    assert!(out.join("steerer/v1/rollout_pb2_grpc.py").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_runs_a_rollout_to_completion() {
    let stubs = tempfile::tempdir().unwrap();
    generate_stubs(stubs.path());
    let mut h = Harness::start().await;

    let mut command = python();
    command.args([
        "tests/python/rollout.py",
        "--stubs",
        stubs.path().to_str().unwrap(),
        "--server",
        &h.addr().to_string(),
        "--namespace",
        "test",
        "--target",
        "podinfo",
        "--image",
        &format!("podinfo={NEW_IMAGE}"),
        "--step-weight",
        "50",
        "--interval",
        "1",
        "--timeout",
        "120",
    ]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {stderr}\nstdout: {stdout}"
    );

    let records: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let started = &records[0];
    assert_eq!(started["kind"], "rollout");
    let id = started["id"].as_str().unwrap();
    let events: Vec<&Value> = records.iter().filter(|r| r["kind"] == "event").collect();
    let final_state = records.last().unwrap();
    assert_eq!(final_state["kind"], "final");
    assert_eq!(final_state["phase"], "PHASE_SUCCEEDED");

    let done = h.get(id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let sequences: Vec<u64> = events
        .iter()
        .map(|e| e["sequence"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(sequences, (1..=done.last_sequence).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["type"], "EVENT_TYPE_SUCCEEDED");
    assert_eq!(image(&h.deployment(GA).await), NEW_IMAGE);
}
