//! The imperative kubectl commands, which send built-in kinds as protobuf: `create namespace`,
//! `create deployment`, `create service`, `create configmap`, `create secret`, `create job`,
//! `create token` (on the `default` ServiceAccount every namespace gets), `scale`, `set image`
//! and `rollout restart`, then what the objects they made read back as.
//!
//! Each step keeps what a user reads: kubectl's exit code and output, and the objects without
//! what differs by nature (uids, times, resourceVersions, cluster IPs, the token itself).
//! [`undecodable`] sends protobuf bodies that cannot be read, for kube-apiserver's 400s.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Substrate;

/// The namespace of this script; it is deleted at the end, so the script can run again.
const NS: &str = "conformance-kubectl";

/// What one kubectl run printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Exit code and output, as a step answer (the first line of stderr: the error).
    fn answer(&self) -> Value {
        json!({"exit": self.code, "stdout": self.stdout.trim(),
               "stderr": self.stderr.lines().next().unwrap_or_default()})
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "kubectl printed no JSON ({e}): {}{}",
                self.stdout, self.stderr
            )
        })
    }
}

async fn kubectl(substrate: &Substrate, kubectl: &Path, cache: &Path, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&substrate.kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl.display()));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `metadata` reduced to what both substrates set alike (`fields`: see [`managers`]).
fn meta(object: &Value, fields: bool) -> Value {
    let mut annotations = object["metadata"]["annotations"].clone();
    if let Some(map) = annotations.as_object_mut() {
        // A time: kept as "set".
        if map.contains_key("kubectl.kubernetes.io/restartedAt") {
            map.insert("kubectl.kubernetes.io/restartedAt".into(), json!("set"));
        }
    }
    json!({"name": object["metadata"]["name"], "labels": object["metadata"]["labels"],
           "annotations": annotations,
           "managers": managers(object, fields)})
}

/// Which of kubectl's managers wrote the object and how (`managedFields` entries without
/// times), sorted, with the fields each owns when `fields` (not for kinds with keyed lists,
/// which the simulator owns whole, as the README says). The simulated controllers record no
/// owner, so kube-controller-manager's entries are left out.
fn managers(object: &Value, fields: bool) -> Value {
    let mut entries: Vec<Value> = object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| {
            e["manager"]
                .as_str()
                .is_some_and(|m| m.starts_with("kubectl"))
        })
        .map(|e| {
            let owned = if fields {
                e["fieldsV1"].clone()
            } else {
                Value::Null
            };
            json!([e["manager"], e["operation"], e["subresource"], owned])
        })
        .collect();
    entries.sort_by_key(Value::to_string);
    json!(entries)
}

/// A Deployment's metadata and spec, with the restart time of its pod template kept as "set".
fn deployment(object: &Value) -> Value {
    let mut spec = object["spec"].clone();
    if let Some(annotations) = spec
        .pointer_mut("/template/metadata/annotations")
        .and_then(Value::as_object_mut)
        && annotations.contains_key("kubectl.kubernetes.io/restartedAt")
    {
        annotations.insert("kubectl.kubernetes.io/restartedAt".into(), json!("set"));
    }
    json!({"metadata": meta(object, false), "spec": spec})
}

/// A Service without the addresses the cluster picks.
fn service(object: &Value) -> Value {
    let mut spec = object["spec"].clone();
    if let Some(map) = spec.as_object_mut() {
        map.remove("clusterIP");
        map.remove("clusterIPs");
    }
    json!({"metadata": meta(object, false), "spec": spec})
}

/// A token as a client reads it: a JWT for the ServiceAccount.
fn token(run: &Run) -> Value {
    let token = run.stdout.trim();
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .unwrap_or(Value::Null);
    json!({"exit": run.code, "parts": token.split('.').count(), "sub": claims["sub"],
           "lifetime": claims["exp"].as_i64().zip(claims["iat"].as_i64()).map(|(e, i)| e - i),
           "stderr": run.stderr.lines().next().unwrap_or_default()})
}

/// Plays the commands with `kubectl_bin` against `substrate`.
pub(super) async fn script(
    substrate: &Substrate,
    kubectl_bin: &Path,
) -> Vec<(&'static str, Value)> {
    let cache = tempfile::tempdir().unwrap();
    let run = async |args: &[&str]| kubectl(substrate, kubectl_bin, cache.path(), args).await;
    let mut steps = Vec::new();

    steps.push((
        "kubectl create namespace",
        run(&["create", "namespace", NS]).await.answer(),
    ));
    // kube-controller-manager creates the namespace's `default` ServiceAccount shortly after.
    let start = Instant::now();
    let account = loop {
        let got = run(&["get", "serviceaccount", "default", "-n", NS, "-o", "name"]).await;
        if got.code == 0 || start.elapsed() > Duration::from_secs(30) {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    steps.push(("kubectl default service account", account.answer()));
    let created = [
        (
            "kubectl create deployment",
            vec![
                "create",
                "deployment",
                "web",
                "--image=app:1",
                "--replicas=2",
                "--port=80",
            ],
        ),
        (
            "kubectl create deployment with zero replicas",
            vec![
                "create",
                "deployment",
                "idle",
                "--image=app:1",
                "--replicas=0",
            ],
        ),
        (
            "kubectl create service",
            vec!["create", "service", "clusterip", "web", "--tcp=80:8080"],
        ),
        (
            "kubectl create configmap",
            vec![
                "create",
                "configmap",
                "settings",
                "--from-literal=mode=fast",
            ],
        ),
        (
            "kubectl create secret",
            vec![
                "create",
                "secret",
                "generic",
                "keys",
                "--from-literal=key=s3cr3t",
            ],
        ),
        (
            "kubectl create job",
            vec!["create", "job", "once", "--image=app:1"],
        ),
    ];
    for (step, args) in created {
        let mut args = args;
        args.extend(["-n", NS]);
        steps.push((step, run(&args).await.answer()));
    }
    steps.push((
        "kubectl create token",
        token(&run(&["create", "token", "default", "-n", NS, "--duration=10m"]).await),
    ));
    steps.push((
        "kubectl scale",
        run(&["scale", "deployment", "web", "--replicas=3", "-n", NS])
            .await
            .answer(),
    ));
    steps.push((
        "kubectl set image",
        run(&["set", "image", "deployment/web", "app=app:2", "-n", NS])
            .await
            .answer(),
    ));
    steps.push((
        "kubectl rollout restart",
        run(&["rollout", "restart", "deployment/web", "-n", NS])
            .await
            .answer(),
    ));

    // The revision annotation is the controller's: read once it has seen the last change.
    let start = Instant::now();
    loop {
        let web = run(&["get", "deployment", "web", "-n", NS, "-o", "json"])
            .await
            .json();
        let observed = web["status"]["observedGeneration"].as_i64();
        if observed.is_some() && observed == web["metadata"]["generation"].as_i64() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the Deployment controller never observed {}",
            web["metadata"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let get = async |what: &str| {
        let args = ["get", what, "-n", NS, "-o", "json", "--show-managed-fields"];
        run(&args).await.json()
    };
    steps.push(("kubectl get namespace", {
        let ns = run(&[
            "get",
            "namespace",
            NS,
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await
        .json();
        json!({"metadata": meta(&ns, true), "phase": ns["status"]["phase"]})
    }));
    steps.push((
        "kubectl get deployment",
        deployment(&get("deployment/web").await),
    ));
    steps.push((
        "kubectl get deployment with zero replicas",
        deployment(&get("deployment/idle").await),
    ));
    steps.push(("kubectl get service", service(&get("service/web").await)));
    let settings = get("configmap/settings").await;
    steps.push((
        "kubectl get configmap",
        json!({"metadata": meta(&settings, true), "data": settings["data"]}),
    ));
    let keys = get("secret/keys").await;
    steps.push((
        "kubectl get secret",
        json!({"metadata": meta(&keys, true), "data": keys["data"], "type": keys["type"]}),
    ));
    steps.push(("kubectl get service account", {
        let account = get("serviceaccount/default").await;
        json!({"metadata": meta(&account, true)})
    }));

    let deleted = run(&["delete", "namespace", NS, "--wait=false"]).await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    steps
}

/// One protobuf field of `number` holding `payload` (length-delimited).
fn field(number: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![number << 3 | 2, u8::try_from(payload.len()).unwrap()];
    out.extend_from_slice(payload);
    out
}

/// A protobuf body: the `k8s\0` envelope naming `api_version` and `kind` around `raw`.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
    [b"k8s\0".to_vec(), field(1, &type_meta), field(2, raw)].concat()
}

/// Protobuf bodies that cannot be read, sent to create a Namespace: what each answers.
pub(super) async fn undecodable(client: &kube::Client) -> Vec<(&'static str, Value)> {
    // An ObjectMeta whose `name` runs past the end of the message.
    let cut_meta = field(1, &[0x0a, 0x05, b'a', b'b']);
    let bodies: [(&'static str, Vec<u8>); 5] = [
        (
            "protobuf without the k8s prefix",
            b"{\"kind\": \"Namespace\"}".to_vec(),
        ),
        ("protobuf with only the prefix", b"k8s\0".to_vec()),
        ("protobuf envelope cut short", b"k8s\0\x0a\x05ab".to_vec()),
        (
            "protobuf object cut short",
            envelope("v1", "Namespace", &cut_meta),
        ),
        (
            "protobuf of an unknown kind",
            envelope("v1", "Nonexistent", &[]),
        ),
    ];
    let mut steps = Vec::new();
    for (step, body) in bodies {
        let request = http::Request::builder()
            .method("POST")
            .uri("/api/v1/namespaces")
            .header("Content-Type", "application/vnd.kubernetes.protobuf")
            .header("Accept", "application/json")
            .body(kube::client::Body::from(body))
            .unwrap();
        let response = client.send(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect_bytes().await.unwrap();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        steps.push((
            step,
            json!({"http": status, "reason": answer["reason"], "message": answer["message"]}),
        ));
    }
    steps
}
