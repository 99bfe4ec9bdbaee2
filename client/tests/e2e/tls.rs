//! TLS and mutual TLS: the SDK and the CLI verify the server against a given CA, present a
//! client certificate, and honour a server-name override.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::{FakeServer, FakeState, good_rollout};
use steerer_client::{Client, ClientError};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// A fake server with the `steerer.test` certificate that requires a client certificate
/// signed by the test CA.
async fn mtls_server() -> FakeServer {
    let state = Arc::new(FakeState::default());
    state.add(good_rollout("r-1", "shop", "checkout"));
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("server.pem"), read("server.key")))
        .client_ca_root(Certificate::from_pem(read("ca.pem")));
    FakeServer::start_tls(state, tls).await
}

fn https(server: &FakeServer) -> String {
    format!("https://{}", server.addr)
}

#[tokio::test]
async fn mutual_tls_with_the_ca_and_a_client_certificate_works() {
    let server = mtls_server().await;

    let client = Client::builder(https(&server))
        .ca_certificate_file(fixture("ca.pem"))
        .client_identity_files(fixture("client.pem"), fixture("client.key"))
        .connect()
        .await
        .unwrap();

    assert_eq!(client.get("r-1").await.unwrap().id, "r-1");
}

#[tokio::test]
async fn the_server_name_can_be_overridden() {
    let server = mtls_server().await;
    let builder = Client::builder(https(&server))
        .ca_certificate_pem(read("ca.pem"))
        .client_identity_pem(read("client.pem"), read("client.key"));

    let client = builder
        .clone()
        .tls_server_name("steerer.test")
        .connect()
        .await
        .unwrap();
    assert_eq!(client.get("r-1").await.unwrap().id, "r-1");

    let err = builder
        .tls_server_name("someone-else.test")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("not valid for name \"someone-else.test\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_outside_the_trusted_ca_is_refused() {
    let server = mtls_server().await;

    // The client certificate is not a CA: nothing the server presents chains to it.
    let result = Client::builder(https(&server))
        .ca_certificate_pem(read("client.pem"))
        .client_identity_pem(read("client.pem"), read("client.key"))
        .connect()
        .await;

    let err = result.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn without_a_client_certificate_the_call_is_refused() {
    let server = mtls_server().await;

    let result = async {
        let client = Client::builder(https(&server))
            .ca_certificate_pem(read("ca.pem"))
            .connect()
            .await?;
        client.get("r-1").await
    }
    .await;

    let err = result.unwrap_err();
    assert!(err.message().contains("CertificateRequired"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_mutual_tls() {
    let server = mtls_server().await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_steerer"));
    command.env_remove("STEERER_TOKEN").args([
        "--server",
        &https(&server),
        "--ca-cert",
        fixture("ca.pem").to_str().unwrap(),
        "--client-cert",
        fixture("client.pem").to_str().unwrap(),
        "--client-key",
        fixture("client.key").to_str().unwrap(),
        "--tls-server-name",
        "steerer.test",
        "get",
        "r-1",
        "-o",
        "json",
    ]);

    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rollout: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rollout["id"], "r-1");
}
