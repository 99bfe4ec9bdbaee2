//! Server-side authentication and TLS: bearer tokens (full and read-only) checked on every
//! `RolloutService` call while health stays open, TLS verified against the test CA, and mutual
//! TLS refusing clients without a certificate. Exercised through the generated client, the
//! SDK and the `steerer` CLI binary.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{Harness, Options, test_server_config};
use steerer::v1::{AbortRolloutRequest, ListRolloutsRequest, StartRolloutRequest};
use steerer_client::{Client, ClientError};
use steerer_server::TlsFiles;
use tonic::Code;

const WRITER: &str = "ci-token-7f3a";
const READER: &str = "dashboard-token-19c2";

fn tls_dir() -> PathBuf {
    crate::common::artifacts()
        .parent()
        .unwrap()
        .join("tests/fixtures/tls")
}

fn tls_file(name: &str) -> String {
    tls_dir().join(name).display().to_string()
}

struct Tokens {
    dir: tempfile::TempDir,
    write: PathBuf,
    read_only: PathBuf,
}

fn token_files() -> Tokens {
    let dir = tempfile::tempdir().unwrap();
    let write = dir.path().join("tokens");
    let read_only = dir.path().join("read-only-tokens");
    std::fs::write(&write, format!("# CI pipelines\n{WRITER}\n")).unwrap();
    std::fs::write(&read_only, format!("{READER}\n")).unwrap();
    Tokens {
        dir,
        write,
        read_only,
    }
}

async fn harness_with_tokens(tokens: &Tokens) -> Harness {
    let mut server = test_server_config();
    server.token_file = Some(tokens.write.clone());
    server.read_only_token_file = Some(tokens.read_only.clone());
    Harness::start_with(Options {
        server,
        ..Options::default()
    })
    .await
}

fn start_request() -> StartRolloutRequest {
    StartRolloutRequest {
        namespace: crate::common::NS.into(),
        target: crate::common::GA.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_unauthenticated_and_health_stays_open() {
    let tokens = token_files();
    let mut h = harness_with_tokens(&tokens).await;

    let status = h
        .client
        .list_rollouts(ListRolloutsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    let status = h.client.start_rollout(start_request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");

    let wrong = Client::builder(format!("http://{}", h.addr()))
        .bearer_token("not-a-token")
        .connect()
        .await
        .unwrap();
    let err = wrong
        .list(ListRolloutsRequest::default(), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Unauthenticated { .. }),
        "{err:?}"
    );

    // Probes need no token.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", h.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "steerer.v1.RolloutService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    // Nothing was started by the refused calls.
    let writer = Client::builder(format!("http://{}", h.addr()))
        .bearer_token(WRITER)
        .connect()
        .await
        .unwrap();
    assert!(
        writer
            .list(ListRolloutsRequest::default(), 0)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_token_starts_a_rollout_and_a_read_only_token_may_only_read() {
    let tokens = token_files();
    let h = harness_with_tokens(&tokens).await;
    let endpoint = format!("http://{}", h.addr());

    let reader = Client::builder(&endpoint)
        .bearer_token(READER)
        .connect()
        .await
        .unwrap();
    let err = reader.start(start_request()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::PermissionDenied { .. }),
        "{err:?}"
    );

    let writer = Client::builder(&endpoint)
        .bearer_token(WRITER)
        .connect()
        .await
        .unwrap();
    let started = writer.start(start_request()).await.unwrap();
    // A read-only token reads…
    assert_eq!(reader.get(&started.id).await.unwrap().id, started.id);
    let mut events = reader.watch(&started.id);
    let first = futures::StreamExt::next(&mut events)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.sequence, 1);
    // …but cannot abort.
    let mut raw = h.client.clone();
    let mut abort = tonic::Request::new(AbortRolloutRequest {
        id: started.id.clone(),
        reason: "read-only".into(),
    });
    abort
        .metadata_mut()
        .insert("authorization", format!("Bearer {READER}").parse().unwrap());
    let status = raw.abort_rollout(abort).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    assert!(status.message().contains("read-only"), "{status}");

    let aborted = writer.abort(&started.id, "done").await.unwrap();
    assert_eq!(aborted.phase(), steerer::v1::Phase::Aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exits_4_without_the_right_token_and_0_with_it() {
    let tokens = token_files();
    let h = harness_with_tokens(&tokens).await;
    let addr = h.addr();

    let none = crate::cli_support::run(addr, &["list"]).await;
    assert_eq!(
        none.status.code(),
        Some(4),
        "{}",
        crate::cli_support::stderr(&none)
    );
    let wrong = crate::cli_support::run(addr, &["list", "--token", "nope"]).await;
    assert_eq!(
        wrong.status.code(),
        Some(4),
        "{}",
        crate::cli_support::stderr(&wrong)
    );
    let right = crate::cli_support::run(addr, &["list", "--token", WRITER]).await;
    assert_eq!(
        right.status.code(),
        Some(0),
        "{}",
        crate::cli_support::stderr(&right)
    );
    // The client's token file holds one token, unlike the server's list.
    let token_file = tokens.dir.path().join("ci-token");
    std::fs::write(&token_file, format!("{WRITER}\n")).unwrap();
    let token_file = token_file.display().to_string();
    let from_file = crate::cli_support::run(addr, &["list", "--token-file", &token_file]).await;
    assert_eq!(
        from_file.status.code(),
        Some(0),
        "{}",
        crate::cli_support::stderr(&from_file)
    );
    let read_only_start =
        crate::cli_support::run(addr, &["start", "test/podinfo", "--token", READER]).await;
    assert_eq!(
        read_only_start.status.code(),
        Some(4),
        "{}",
        crate::cli_support::stderr(&read_only_start)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_token_file_takes_effect_without_a_restart() {
    let tokens = token_files();
    let h = harness_with_tokens(&tokens).await;
    let endpoint = format!("http://{}", h.addr());
    std::fs::write(&tokens.write, "rotated-token\n").unwrap();
    let rotated = Client::builder(&endpoint)
        .bearer_token("rotated-token")
        .connect()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rotated
        .list(ListRolloutsRequest::default(), 0)
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated token was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old = Client::builder(&endpoint)
        .bearer_token(WRITER)
        .connect()
        .await
        .unwrap();
    let err = old
        .list(ListRolloutsRequest::default(), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Unauthenticated { .. }),
        "{err:?}"
    );
}

async fn tls_harness(mutual: bool) -> Harness {
    let mut server = test_server_config();
    server.tls = Some(TlsFiles {
        cert: tls_dir().join("server.pem"),
        key: tls_dir().join("server.key"),
        client_ca: mutual.then(|| tls_dir().join("ca.pem")),
    });
    Harness::start_with(Options {
        server,
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_works_with_the_ca_and_fails_without_it() {
    let h = tls_harness(false).await;
    let endpoint = format!("https://{}", h.addr());
    let trusted = Client::builder(&endpoint)
        .ca_certificate_file(tls_dir().join("ca.pem"))
        .connect()
        .await
        .unwrap();
    assert!(
        trusted
            .list(ListRolloutsRequest::default(), 0)
            .await
            .unwrap()
            .is_empty()
    );
    let untrusted = match Client::builder(&endpoint).lazy(true).connect().await {
        Ok(client) => client.list(ListRolloutsRequest::default(), 0).await.err(),
        Err(err) => Some(err),
    };
    assert!(untrusted.is_some(), "a client without the CA got through");

    let ok = crate::cli_support::run(
        h.addr(),
        &[
            "list",
            "--server",
            &endpoint,
            "--ca-cert",
            &tls_file("ca.pem"),
        ],
    )
    .await;
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        crate::cli_support::stderr(&ok)
    );
    let refused = crate::cli_support::run(h.addr(), &["list", "--server", &endpoint]).await;
    assert_ne!(refused.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let h = tls_harness(true).await;
    let endpoint = format!("https://{}", h.addr());
    let anonymous = match Client::builder(&endpoint)
        .ca_certificate_file(tls_dir().join("ca.pem"))
        .lazy(true)
        .connect()
        .await
    {
        Ok(client) => client.list(ListRolloutsRequest::default(), 0).await.err(),
        Err(err) => Some(err),
    };
    assert!(
        anonymous.is_some(),
        "a client without a certificate got through"
    );

    let identified = Client::builder(&endpoint)
        .ca_certificate_file(tls_dir().join("ca.pem"))
        .client_identity_files(tls_dir().join("client.pem"), tls_dir().join("client.key"))
        .connect()
        .await
        .unwrap();
    assert!(
        identified
            .list(ListRolloutsRequest::default(), 0)
            .await
            .unwrap()
            .is_empty()
    );

    let ca = tls_file("ca.pem");
    let ok = crate::cli_support::run(
        h.addr(),
        &[
            "list",
            "--server",
            &endpoint,
            "--ca-cert",
            &ca,
            "--client-cert",
            &tls_file("client.pem"),
            "--client-key",
            &tls_file("client.key"),
        ],
    )
    .await;
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        crate::cli_support::stderr(&ok)
    );
    let refused =
        crate::cli_support::run(h.addr(), &["list", "--server", &endpoint, "--ca-cert", &ca]).await;
    assert_ne!(refused.status.code(), Some(0));
}
