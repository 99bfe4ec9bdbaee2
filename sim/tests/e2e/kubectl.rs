//! The real kubectl (`$KUBECTL`, which tests/run.sh points at Debian's `kubernetes-client`) against the simulator, through the
//! kubeconfig it writes, on the manifests in `artifacts/`.

use std::path::{Path, PathBuf};

use crate::support::{artifacts, start};
use serde_json::Value;
use steerer_sim::{GroupResource, Sim};

/// The kubectl to run: `$KUBECTL`, else `kubectl` on PATH.
pub(crate) fn kubectl_bin() -> PathBuf {
    std::env::var_os("KUBECTL")
        .filter(|k| !k.is_empty())
        .map_or_else(|| PathBuf::from("kubectl"), PathBuf::from)
}

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn new(sim: &Sim, dir: &Path) -> Self {
        let kubeconfig = dir.join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        Self {
            kubeconfig,
            cache: dir.join("cache"),
        }
    }

    /// Runs kubectl and returns its stdout, failing the test (with stderr) if it fails.
    async fn run(&self, args: &[&str]) -> String {
        let kubectl = kubectl_bin();
        let output = tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): set KUBECTL to a kubectl (tests/run.sh does)",
                    kubectl.display()
                )
            });
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "kubectl {} failed: {}\n{stdout}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

fn path(p: PathBuf) -> String {
    p.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn kubectl_creates_reads_patches_scales_and_deletes_the_artifacts() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl::new(&sim, dir.path());
    let store = &sim.world().store;
    let deployments = GroupResource::new("apps", "deployments");
    let virtualservices = GroupResource::new("networking.istio.io", "virtualservices");

    // api-resources: discovery names every built-in with its scope and short names.
    let out = kubectl.run(&["api-resources", "--no-headers"]).await;
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for expected in [
        vec!["serviceaccounts", "sa", "v1", "true", "ServiceAccount"],
        vec!["deployments", "deploy", "apps/v1", "true", "Deployment"],
        vec![
            "poddisruptionbudgets",
            "pdb",
            "policy/v1",
            "true",
            "PodDisruptionBudget",
        ],
        vec!["roles", "rbac.authorization.k8s.io/v1", "true", "Role"],
        vec![
            "rolebindings",
            "rbac.authorization.k8s.io/v1",
            "true",
            "RoleBinding",
        ],
        vec![
            "clusterroles",
            "rbac.authorization.k8s.io/v1",
            "false",
            "ClusterRole",
        ],
        vec![
            "clusterrolebindings",
            "rbac.authorization.k8s.io/v1",
            "false",
            "ClusterRoleBinding",
        ],
    ] {
        assert!(rows.contains(&expected), "{expected:?} missing from\n{out}");
    }

    // create -f, with kubectl's client-side validation on (the default).
    let out = kubectl
        .run(&["create", "-f", &path(artifacts().join("istio"))])
        .await;
    assert!(
        out.contains("virtualservices.networking.istio.io created"),
        "{out}"
    );
    kubectl
        .run(&["create", "-f", &path(artifacts().join("namespace"))])
        .await;
    let out = kubectl
        .run(&["create", "-f", &path(artifacts().join("workloads"))])
        .await;
    assert!(out.contains("deployment.apps/podinfo created"), "{out}");
    assert!(
        out.contains("virtualservice.networking.istio.io/podinfo created"),
        "{out}"
    );

    // get -o json.
    let out = kubectl
        .run(&["get", "deployments", "-n", "test", "-o", "json"])
        .await;
    let list: Value = serde_json::from_str(&out).unwrap();
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, vec!["podinfo", "podinfo-canary"]);
    let out = kubectl
        .run(&["get", "vs", "podinfo", "-n", "test", "-o", "json"])
        .await;
    let vs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(vs["spec"]["hosts"][0], "podinfo");

    // get as a table.
    let out = kubectl.run(&["get", "deployments", "-n", "test"]).await;
    let header = out.lines().next().unwrap();
    for column in ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] {
        assert!(header.contains(column), "{out}");
    }
    assert!(out.contains("podinfo-canary"), "{out}");

    // patch --type=merge on the VirtualService weights.
    kubectl
        .run(&[
            "patch", "virtualservice", "podinfo", "-n", "test", "--type=merge", "-p",
            r#"{"spec":{"http":[{"route":[{"destination":{"host":"podinfo"},"weight":80},{"destination":{"host":"podinfo-canary"},"weight":20}]}]}}"#,
        ])
        .await;
    let vs = store.get(&virtualservices, "test", "podinfo").unwrap();
    assert_eq!(vs["spec"]["http"][0]["route"][1]["weight"], 20);

    // patch (strategic merge, kubectl's default) of one container's image.
    kubectl
        .run(&[
            "patch", "deployment", "podinfo", "-n", "test", "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"podinfo","image":"ghcr.io/stefanprodan/podinfo:6.0.1"}]}}}}"#,
        ])
        .await;
    let deploy = store.get(&deployments, "test", "podinfo").unwrap();
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "ghcr.io/stefanprodan/podinfo:6.0.1");
    assert_eq!(
        container["command"][0], "./podinfo",
        "strategic merge kept the other fields"
    );

    // scale.
    let out = kubectl
        .run(&[
            "scale",
            "deployment",
            "podinfo",
            "-n",
            "test",
            "--replicas=3",
        ])
        .await;
    assert!(out.contains("scaled"), "{out}");
    let deploy = store.get(&deployments, "test", "podinfo").unwrap();
    assert_eq!(deploy["spec"]["replicas"], 3);

    // delete.
    let vs_file = artifacts()
        .join("workloads")
        .join("podinfo-virtualservice.yaml");
    kubectl.run(&["delete", "-f", &path(vs_file)]).await;
    assert!(store.get(&virtualservices, "test", "podinfo").is_err());
    kubectl
        .run(&["delete", "deployment", "podinfo-canary", "-n", "test"])
        .await;
    assert!(store.get(&deployments, "test", "podinfo-canary").is_err());
    kubectl.run(&["delete", "namespace", "test"]).await;
    assert!(
        store.get(&deployments, "test", "podinfo").is_err(),
        "the namespace took its objects"
    );
}
