//! The `steerer` binary against the fake server: exit codes, output formats and error
//! sentences, as a CI job sees them.

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{FakeServer, FakeState, WatchStep, bad_rollout, good_rollout};
use tonic::Status;

/// Runs the binary off the async runtime so the in-process fake server keeps serving.
async fn steerer(server: Option<&FakeServer>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_steerer"));
    command
        .args(args)
        .env_remove("STEERER_TOKEN")
        .env_remove("STEERER_SERVER");
    if let Some(server) = server {
        command.env("STEERER_SERVER", server.endpoint());
    }
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
        })
        .collect()
}

async fn fake() -> FakeServer {
    let state = Arc::new(FakeState::default());
    state.add(good_rollout("r-good", "shop", "checkout"));
    state.add(bad_rollout("r-bad", "shop", "cart"));
    FakeServer::start(state).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_wait_exits_zero_when_the_canary_is_promoted() {
    let server = fake().await;

    let out = steerer(
        Some(&server),
        &[
            "start",
            "shop/checkout",
            "--image",
            "app=img:2",
            "--interval",
            "1s",
            "--wait",
        ],
    )
    .await;

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<_> = text.lines().collect();
    assert!(
        lines[0].starts_with("started rollout r-good of shop/checkout"),
        "{text}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("  WEIGHT_CHANGED  "))
            .count(),
        4,
        "{text}"
    );
    assert!(
        lines[1].starts_with("2026-11-26T10:00:00Z  STARTED  weight=0"),
        "{text}"
    );
    assert_eq!(
        *lines.last().unwrap(),
        "rollout r-good promoted (SUCCEEDED): canary promoted"
    );
    let starts = server.state.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 1);
    assert_eq!(
        starts[0].images.get("app").map(String::as_str),
        Some("img:2")
    );
    assert_eq!(
        starts[0].analysis.as_ref().unwrap().interval,
        Some(prost_types::Duration {
            seconds: 1,
            nanos: 0
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_wait_exits_one_when_the_canary_is_rolled_back() {
    let server = fake().await;

    let out = steerer(
        Some(&server),
        &["start", "shop/cart", "--wait", "-o", "json"],
    )
    .await;

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let records = json_lines(&out);
    assert_eq!(records[0]["kind"], "rollout");
    assert_eq!(records[0]["id"], "r-bad");
    let events: Vec<_> = records.iter().filter(|r| r["kind"] == "event").collect();
    let sequences: Vec<_> = events
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=7).collect::<Vec<_>>());
    assert_eq!(events[2]["type"], "CHECK_FAILED");
    assert_eq!(events[2]["success_rate"], 80.0);
    let outcome = records.last().unwrap();
    assert_eq!(outcome["kind"], "outcome");
    assert_eq!(outcome["phase"], "ROLLED_BACK");
    assert_eq!(outcome["succeeded"], false);
    assert_eq!(outcome["exit_code"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_going_across_a_server_restart() {
    let mut server = fake().await;
    server.state.plan([WatchStep::HangAfter(5)]);
    let endpoint = server.endpoint();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_steerer"))
        .args(["--server", &endpoint, "watch", "r-good", "-o", "json"])
        .env_remove("STEERER_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.state.events_sent() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watch never got going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    server.restart().await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sequences: Vec<_> = json_lines(&out)
        .iter()
        .filter(|r| r["kind"] == "event")
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=12).collect::<Vec<_>>());
    assert_eq!(server.state.watch_froms(), [0, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_rollout_exits_four_with_the_servers_sentence() {
    let server = fake().await;

    for command in [["get", "nope"], ["watch", "nope"], ["abort", "nope"]] {
        let out = steerer(Some(&server), &command).await;
        assert_eq!(out.status.code(), Some(4), "{command:?}");
        assert_eq!(
            stderr(&out),
            "error: rollout \"nope\" not found\n",
            "{command:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_exits_three() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");

    let out = steerer(None, &["--server", &server, "get", "r-1"]).await;

    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: cannot reach the steerer server at {server}: "
        )),
        "{err}"
    );
    assert!(!err.contains("Status {"), "a debug dump leaked: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_bad_flags_exit_two_before_calling_the_server() {
    let server = fake().await;

    let cases: [&[&str]; 6] = [
        &["start", "foo"],
        &["start", "shop/Bad_Name"],
        &["start", "shop/checkout", "--step-weight", "0"],
        &["start", "shop/checkout", "--interval", "soon"],
        &["start", "shop/checkout", "--image", "no-equals-sign"],
        &["list", "--bogus"],
    ];
    for args in cases {
        let out = steerer(Some(&server), args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("error: "),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = steerer(Some(&server), &["start", "foo"]).await;
    assert!(
        stderr(&out).contains("expected NAMESPACE/TARGET"),
        "{}",
        stderr(&out)
    );
    let out = steerer(Some(&server), &["start", "shop/Bad_Name"]).await;
    assert!(
        stderr(&out).contains("\"Bad_Name\" is not valid"),
        "{}",
        stderr(&out)
    );
    assert!(server.state.starts.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refusals_map_to_their_exit_codes() {
    let server = fake().await;

    *server.state.start_error.lock().unwrap() = Some(Status::invalid_argument(
        "max_weight 30 is below step_weight 40",
    ));
    let out = steerer(Some(&server), &["start", "shop/checkout"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: invalid request: max_weight 30 is below step_weight 40\n"
    );

    *server.state.start_error.lock().unwrap() = Some(Status::already_exists(
        "shop/checkout already has an active rollout r-good",
    ));
    let out = steerer(Some(&server), &["start", "shop/checkout", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let records = json_lines(&out);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["kind"], "error");
    assert_eq!(records[0]["code"], "ALREADY_EXISTS");
    assert_eq!(records[0]["exit_code"], 1);

    let out = steerer(Some(&server), &["pause", "r-bad"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: rollout \"r-bad\" has already ended\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_and_a_missing_one_exits_four() {
    let server = fake().await;
    *server.state.required_token.lock().unwrap() = Some("s3cret".into());

    let out = steerer(Some(&server), &["get", "r-good"]).await;
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).starts_with("error: not authenticated: "),
        "{}",
        stderr(&out)
    );

    let out = steerer(Some(&server), &["--token", "s3cret", "get", "r-good"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("phase:          SUCCEEDED"),
        "{}",
        stdout(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "s3cret\n").unwrap();
    let out = steerer(
        Some(&server),
        &[
            "--token-file",
            path.to_str().unwrap(),
            "get",
            "r-good",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&out)[0]["phase"], "SUCCEEDED");
    assert_eq!(
        server
            .state
            .authorizations
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .as_deref(),
        Some("Bearer s3cret")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_control_commands_print_one_record_per_line() {
    let server = fake().await;

    let out = steerer(Some(&server), &["list", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ids: Vec<_> = json_lines(&out).iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, ["r-bad", "r-good"]);

    let out = steerer(Some(&server), &["list"]).await;
    let text = stdout(&out);
    assert!(text.starts_with("ID "), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");

    let out = steerer(Some(&server), &["abort", "r-good", "--reason", "bad build"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "aborted rollout r-good of shop/checkout via virtualservice/checkout: ABORTED at 0% canary — aborted: bad build\n"
    );

    let out = steerer(Some(&server), &["list", "--active", "-o", "json"]).await;
    assert!(json_lines(&out).is_empty(), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_the_exit_codes() {
    let out = steerer(None, &["--help"]).await;
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(
        help.contains("4  NOT_FOUND, UNAUTHENTICATED or PERMISSION_DENIED"),
        "{help}"
    );
}

#[tokio::test]
async fn version_shows_the_client_then_the_server_and_a_refused_token_exits_4_after_the_client() {
    let state = Arc::new(FakeState::default());
    *state.required_token.lock().unwrap() = Some("s3cret".into());
    let server = FakeServer::start(state.clone()).await;
    let client = format!(
        "client  {} (commit {})\n",
        env!("CARGO_PKG_VERSION"),
        steerer_client::COMMIT
    );

    let ok = steerer(Some(&server), &["--token", "s3cret", "version"]).await;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(
        stdout(&ok),
        format!(
            "{client}server  9.9.9 (commit fake)\n  leader       none (an election is under way)\n  \
             route kinds  HTTPRoute\n  observers    linkerd\n  auth         tokens\n"
        )
    );

    let refused = steerer(Some(&server), &["version"]).await;
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert_eq!(stdout(&refused), client, "the client's version comes first");
    assert!(
        stderr(&refused).starts_with("error: "),
        "{}",
        stderr(&refused)
    );
}
