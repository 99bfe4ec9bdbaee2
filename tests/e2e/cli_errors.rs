//! The `steerer` CLI's exit codes and error sentences against the real server: bad flags and
//! bad names exit 2 (caught locally, or by the server as INVALID_ARGUMENT), unknown rollouts
//! and Deployments exit 4, a second rollout of a busy target exits 1, an unreachable server 3.

use crate::cli_support::{json_lines, run, stderr, stdout};
use crate::common::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_has_its_exit_code_and_a_sentence() {
    let h = Harness::start().await;
    let addr = h.addr();

    // Caught by the CLI before any call: usage errors from clap and the name checks.
    let local: [&[&str]; 6] = [
        &["start", "podinfo"],
        &["start", "test/Bad_Name"],
        &["start", "test/podinfo", "--max-weight", "101"],
        &["start", "test/podinfo", "--interval", "often"],
        &["start", "test/podinfo", "--image", "podinfo"],
        &["watch"],
    ];
    for args in local {
        let out = run(addr, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("error: "),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = run(addr, &["start", "podinfo"]).await;
    assert!(
        stderr(&out).contains("expected NAMESPACE/TARGET"),
        "{}",
        stderr(&out)
    );
    let out = run(addr, &["start", "test/Bad_Name"]).await;
    assert!(
        stderr(&out).contains("\"Bad_Name\" is not valid"),
        "{}",
        stderr(&out)
    );

    // Caught by the server: step above max is INVALID_ARGUMENT, also exit 2.
    let out = run(
        addr,
        &[
            "start",
            "test/podinfo",
            "--step-weight",
            "50",
            "--max-weight",
            "20",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: invalid request: "),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("Status {"),
        "a debug dump: {}",
        stderr(&out)
    );

    // Unknown rollout and unknown Deployment: exit 4 with the server's reason.
    let out = run(addr, &["get", "no-such-rollout"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-rollout"), "{}", stderr(&out));
    let out = run(addr, &["watch", "no-such-rollout", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(json_lines(&out)[0]["code"], "NOT_FOUND");
    let out = run(addr, &["start", "test/missing"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));

    // A second rollout of a busy target: ALREADY_EXISTS naming the active one, exit 1.
    let out = run(
        addr,
        &["start", "test/podinfo", "--interval", "5s", "-o", "json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let active = json_lines(&out)[0]["id"].as_str().unwrap().to_string();
    let out = run(addr, &["start", "test/podinfo"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&active), "{}", stderr(&out));
    let out = run(addr, &["abort", &active]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("aborted rollout"), "{}", stdout(&out));

    // Nobody listening: exit 3, naming the address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let out = run(nowhere, &["list"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: cannot reach the steerer server at http://{nowhere}"
        )),
        "{}",
        stderr(&out)
    );
}
