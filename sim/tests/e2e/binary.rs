//! The `steerer-sim` binary's start-up contract: the address lines on stdout, the kubeconfig
//! file, `--apply`, and a clean exit on SIGTERM.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn binary_prints_its_addresses_serves_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts");
    let mut child = Command::new(env!("CARGO_BIN_EXE_steerer-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--fast",
        ])
        .arg("--write-kubeconfig")
        .arg(&kubeconfig)
        .arg("--apply")
        .arg(artifacts.join("istio"))
        .arg("--apply")
        .arg(artifacts.join("namespace"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    let api = next().await;
    let metrics = next().await;
    let written = next().await;
    let api = api.strip_prefix("api: ").unwrap().to_owned();
    assert!(api.starts_with("http://127.0.0.1:"), "{api}");
    assert!(metrics.starts_with("metrics: http://127.0.0.1:") && metrics.ends_with("/metrics"));
    assert_eq!(written, format!("kubeconfig: {}", kubeconfig.display()));
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains(&format!("server: {api}")), "{text}");

    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{api}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let version: Value = http
        .get(format!("{api}/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["gitVersion"], "v1.33.0");
    // --apply created the namespace and served the CRDs.
    let ns = http
        .get(format!("{api}/api/v1/namespaces/test"))
        .send()
        .await
        .unwrap();
    assert_eq!(ns.status(), 200);
    let vs = http
        .get(format!(
            "{api}/apis/networking.istio.io/v1/namespaces/test/virtualservices"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(vs.status(), 200);

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
