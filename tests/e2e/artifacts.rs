//! Every manifest in `artifacts/`, applied to an empty cluster (either substrate) with the real kubectl
//! exactly as README.md tells a user to (Istio's and the Gateway API's CRDs, the `test`
//! namespace, the podinfo workloads with their VirtualService, the backend workloads with their
//! HTTPRoute, then steerer's own installation), is accepted, stored as written and idempotent
//! under a second `kubectl apply`; a changed manifest goes through kubectl's strategic merge
//! patch; and two rollouts then promote a new image on the workloads kubectl created, one
//! through each example's route.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{
    CANARY, Cluster, GA, NS, Options, connect, image, replicas, start_server, test_server_config,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use steerer::v1::{Analysis, GetRolloutRequest, Phase, StartRolloutRequest};
use steerer_sim::prometheus::{Prometheus, PrometheusConfig};

const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.1.0";
/// The Gateway API example's GA Deployment (and Service, and HTTPRoute).
const BACKEND: &str = "backend";

/// The kubectl to run: `$KUBECTL` (tests/run.sh sets it to the one in the project's tool cache),
/// else `kubectl` on PATH.
fn kubectl_bin() -> PathBuf {
    std::env::var_os("KUBECTL")
        .filter(|k| !k.is_empty())
        .map_or_else(|| PathBuf::from("kubectl"), PathBuf::from)
}

/// The real kubectl, pointed at the simulator by the kubeconfig it wrote, run from the
/// repository root so that the README's relative paths work.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn new(cluster: &Cluster, dir: &Path) -> Self {
        let kubeconfig = dir.join("kubeconfig");
        cluster.write_kubeconfig(&kubeconfig);
        Self {
            kubeconfig,
            cache: dir.join("kube-cache"),
        }
    }

    /// Runs kubectl and returns its stdout, failing the test (with stderr) if it fails.
    async fn run(&self, args: &[&str]) -> String {
        let kubectl = kubectl_bin();
        let output = tokio::process::Command::new(&kubectl)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); set KUBECTL to a kubectl (tests/run.sh does)",
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

    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.run(&args).await).unwrap()
    }

    /// The objects of a manifest file as kubectl reads them, without asking the cluster to
    /// store anything (one JSON document per object).
    async fn parse(&self, file: &str) -> Vec<Value> {
        let out = self
            .run(&["create", "--dry-run=client", "-o", "json", "-f", file])
            .await;
        serde_json::Deserializer::from_str(&out)
            .into_iter::<Value>()
            .map(Result::unwrap)
            .collect()
    }
}

/// The `kubectl apply` output lines, as (object, action).
fn applied(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|line| {
            let (object, action) = line.rsplit_once(' ').unwrap();
            (object.to_owned(), action.to_owned())
        })
        .collect()
}

fn objects(out: &str, action: &str) -> Vec<String> {
    let all = applied(out);
    assert!(
        all.iter().all(|(_, a)| a == action),
        "expected every object {action}:\n{out}"
    );
    let mut names: Vec<String> = all.into_iter().map(|(o, _)| o).collect();
    names.sort_unstable();
    names
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    names.sort_unstable();
    names
}

/// The README's install commands, in order, with the objects each creates.
const APPLIES: [(&str, &[&str]); 6] = [
    (
        "artifacts/istio/",
        &[
            "customresourcedefinition.apiextensions.k8s.io/destinationrules.networking.istio.io",
            "customresourcedefinition.apiextensions.k8s.io/virtualservices.networking.istio.io",
        ],
    ),
    (
        "artifacts/gateway-api/",
        &[
            "customresourcedefinition.apiextensions.k8s.io/grpcroutes.gateway.networking.k8s.io",
            "customresourcedefinition.apiextensions.k8s.io/httproutes.gateway.networking.k8s.io",
        ],
    ),
    ("./artifacts/namespace/", &["namespace/test"]),
    (
        "./artifacts/workloads/",
        &[
            "deployment.apps/podinfo",
            "deployment.apps/podinfo-canary",
            "horizontalpodautoscaler.autoscaling/podinfo-canary",
            "service/podinfo",
            "service/podinfo-canary",
            "virtualservice.networking.istio.io/podinfo",
        ],
    ),
    (
        "./artifacts/workloads/gateway-api/",
        &[
            "deployment.apps/backend",
            "deployment.apps/backend-canary",
            "service/backend",
            "service/backend-canary",
            "httproute.gateway.networking.k8s.io/backend",
        ],
    ),
    (
        "artifacts/steerer/",
        &[
            "customresourcedefinition.apiextensions.k8s.io/rollouts.steerer.dev",
            "namespace/steerer-system",
            "serviceaccount/steerer",
            "clusterrole.rbac.authorization.k8s.io/steerer",
            "clusterrole.rbac.authorization.k8s.io/steerer-ci",
            "clusterrole.rbac.authorization.k8s.io/steerer-operator",
            "clusterrole.rbac.authorization.k8s.io/steerer-viewer",
            "clusterrolebinding.rbac.authorization.k8s.io/steerer",
            "role.rbac.authorization.k8s.io/steerer-leader-election",
            "rolebinding.rbac.authorization.k8s.io/steerer-leader-election",
            "deployment.apps/steerer",
            "service/steerer",
            "poddisruptionbudget.policy/steerer",
        ],
    ),
];

/// Whether the cluster lets steerer's ServiceAccount `verb` `resource` of `group` in the
/// namespace `NS`, by a SubjectAccessReview.
async fn steerer_may(kube: &Client, group: &str, resource: &str, verb: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some("system:serviceaccount:steerer-system:steerer".into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:steerer-system".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                verb: Some(verb.into()),
                namespace: Some(NS.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(kube.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_every_artifact_to_an_empty_cluster_and_a_rollout_promotes_on_them() {
    let cluster = Cluster::start(&Options {
        apply: vec![],
        ..Options::default()
    })
    .await;
    let kube_config = cluster.kube_config().await;
    let kube = Client::try_from(kube_config.clone()).unwrap();
    assert!(
        Api::<Deployment>::all(kube.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the cluster starts with no Deployment"
    );
    let prometheus = Prometheus::start(PrometheusConfig::new(
        vec![cluster.metrics_addr()],
        Duration::from_secs(1),
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl::new(&cluster, dir.path());

    for (path, expected) in APPLIES {
        let out = kubectl.run(&["apply", "-f", path]).await;
        // A real control plane comes with Istio's and the Gateway API's CRDs installed
        // (tests/cluster/up.sh applies these same files), as a cluster with a mesh does.
        let crds = ["artifacts/istio/", "artifacts/gateway-api/"];
        let action = if matches!(cluster, Cluster::Real { .. }) && crds.contains(&path) {
            "unchanged"
        } else {
            "created"
        };
        assert_eq!(objects(&out, action), sorted(expected), "apply -f {path}");
    }

    // kubectl get shows what was applied.
    let out = kubectl
        .run(&["get", "crd,ns,clusterrole,clusterrolebinding", "-o", "name"])
        .await;
    for name in [
        "customresourcedefinition.apiextensions.k8s.io/virtualservices.networking.istio.io",
        "customresourcedefinition.apiextensions.k8s.io/destinationrules.networking.istio.io",
        "namespace/test",
        "namespace/steerer-system",
        "clusterrole.rbac.authorization.k8s.io/steerer",
        "clusterrolebinding.rbac.authorization.k8s.io/steerer",
    ] {
        assert!(out.lines().any(|l| l == name), "{name} missing from\n{out}");
    }
    let out = kubectl
        .run(&["get", "deploy,svc,hpa,vs,httproute", "-n", NS, "-o", "name"])
        .await;
    assert_eq!(
        sorted(&out.lines().collect::<Vec<_>>()),
        sorted(&[APPLIES[3].1, APPLIES[4].1].concat()),
        "{out}"
    );

    let out = kubectl
        .run(&["get", "sa,deploy,svc", "-n", "steerer-system", "-o", "name"])
        .await;
    for name in [
        "serviceaccount/steerer",
        "deployment.apps/steerer",
        "service/steerer",
    ] {
        assert!(out.lines().any(|l| l == name), "{name} missing from\n{out}");
    }
    let out = kubectl
        .run(&["get", "clusterrolebinding", "steerer", "-o", "wide"])
        .await;
    assert!(out.contains("ClusterRole/steerer"), "{out}");
    assert!(out.contains("steerer-system/steerer"), "{out}");

    // The RBAC objects are stored as written: same rules, same role reference and subjects.
    let written = kubectl.parse("artifacts/steerer/20-rbac.yaml").await;
    let role = kubectl.json(&["get", "clusterrole", "steerer"]).await;
    let written_role = written.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
    assert_eq!(role["rules"], written_role["rules"]);
    assert_eq!(
        role["rules"][0],
        json!({"apiGroups": ["apps"], "resources": ["deployments"],
               "verbs": ["list", "watch", "patch"]})
    );
    let rule_for = |rules: &Value, resource: &str| {
        rules
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resources"][0] == resource)
            .cloned()
            .unwrap_or_else(|| panic!("no rule for {resource} in {rules}"))
    };
    assert_eq!(
        rule_for(&role["rules"], "rollouts"),
        json!({"apiGroups": ["steerer.dev"], "resources": ["rollouts", "rollouts/status"],
               "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]})
    );
    assert_eq!(
        rule_for(&role["rules"], "httproutes"),
        json!({"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes", "grpcroutes"],
               "verbs": ["get", "list", "watch", "patch"]}),
        "Gateway API routes are read, watched and patched (their weights), nothing more"
    );
    assert_eq!(
        rule_for(&role["rules"], "configmaps")["verbs"],
        json!(["get", "list", "delete"]),
        "ConfigMaps are only read and deleted, to migrate records of earlier versions"
    );
    assert_eq!(
        rule_for(&role["rules"], "events"),
        json!({"apiGroups": ["events.k8s.io"], "resources": ["events"],
               "verbs": ["create", "patch"]}),
        "Events are written through events.k8s.io only: created, and patched for a series"
    );
    // As the cluster evaluates the binding: the server's account may create and patch
    // events.k8s.io Events in a served namespace, and nothing else on Events.
    for (group, verb, allowed) in [
        ("events.k8s.io", "create", true),
        ("events.k8s.io", "patch", true),
        ("events.k8s.io", "update", false),
        ("events.k8s.io", "delete", false),
        ("", "create", false),
    ] {
        assert_eq!(
            steerer_may(&kube, group, "events", verb).await,
            allowed,
            "{verb} events in group {group:?}"
        );
    }
    // Leader election: a Role on Leases in the server's own namespace, bound to its account.
    let leases = kubectl
        .json(&[
            "get",
            "role",
            "steerer-leader-election",
            "-n",
            "steerer-system",
        ])
        .await;
    assert_eq!(
        leases["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["get", "list", "watch", "create", "update", "patch"]}])
    );
    let lease_binding = kubectl
        .json(&[
            "get",
            "rolebinding",
            "steerer-leader-election",
            "-n",
            "steerer-system",
        ])
        .await;
    assert_eq!(
        lease_binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
               "name": "steerer-leader-election"})
    );
    assert_eq!(
        lease_binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "steerer", "namespace": "steerer-system"}])
    );
    let binding = kubectl
        .json(&["get", "clusterrolebinding", "steerer"])
        .await;
    let written_binding = written
        .iter()
        .find(|o| o["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(binding["roleRef"], written_binding["roleRef"]);
    assert_eq!(binding["subjects"], written_binding["subjects"]);
    assert!(
        binding["metadata"].get("namespace").is_none(),
        "cluster-scoped"
    );
    let account = kubectl
        .json(&["get", "sa", "steerer", "-n", "steerer-system"])
        .await;
    assert_eq!(
        account["metadata"]["labels"]["app.kubernetes.io/name"],
        "steerer"
    );

    // The server's Deployment keeps its probes, limits and service account.
    let server = kubectl
        .json(&["get", "deploy", "steerer", "-n", "steerer-system"])
        .await;
    let pod = &server["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "steerer");
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["grpc"]["port"], 50051);
    assert_eq!(container["livenessProbe"]["grpc"]["port"], 50051);
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    // Three replicas electing a leader, replaced one at a time, spread over nodes, each
    // serving its metrics where the scrape annotations say.
    assert_eq!(server["spec"]["replicas"], 3);
    assert_eq!(server["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        server["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for arg in [
        "--leader-elect",
        "--lease-namespace=steerer-system",
        "--identity=$(POD_NAME)",
        "--advertise-address=$(POD_IP):50051",
        "--metrics-listen=0.0.0.0:9102",
    ] {
        assert!(args.contains(&arg), "{arg} missing from {args:?}");
    }
    let env = container["env"].as_array().unwrap();
    for (name, field) in [("POD_NAME", "metadata.name"), ("POD_IP", "status.podIP")] {
        assert!(
            env.iter()
                .any(|e| e["name"] == name && e["valueFrom"]["fieldRef"]["fieldPath"] == field),
            "{name} from {field} missing from {env:?}"
        );
    }
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics" && p["containerPort"] == 9102),
        "{}",
        container["ports"]
    );
    let annotations = &server["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9102");
    assert!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            .is_array()
    );
    let budget = kubectl
        .json(&["get", "pdb", "steerer", "-n", "steerer-system"])
        .await;
    assert_eq!(budget["apiVersion"], "policy/v1");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "steerer"
    );

    // A second apply of the same files changes nothing. kubectl always sends a
    // PodDisruptionBudget's selector (its patch strategy is replace), and a custom resource's
    // lists whole when the stored object differs from the file (a real API server fills in the
    // HTTPRoute's defaults: a backendRef's weight, group and kind, a rule's path match), so
    // against a real API server it says those were "configured": the server stores nothing new
    // all the same.
    let resends: [(&str, [&str; 5]); 2] = [
        (
            "poddisruptionbudget.policy/steerer",
            ["get", "pdb", "steerer", "-n", "steerer-system"],
        ),
        (
            "httproute.gateway.networking.k8s.io/backend",
            ["get", "httproute", BACKEND, "-n", NS],
        ),
    ];
    let versions = async || {
        let mut versions = Vec::new();
        for (_, get) in &resends {
            versions.push(kubectl.json(get).await["metadata"]["resourceVersion"].clone());
        }
        versions
    };
    let versions_before = versions().await;
    for (path, expected) in APPLIES {
        let mut out = kubectl.run(&["apply", "-f", path]).await;
        for (object, _) in &resends {
            out = out.replace(
                &format!("{object} configured"),
                &format!("{object} unchanged"),
            );
        }
        assert_eq!(
            objects(&out, "unchanged"),
            sorted(expected),
            "apply -f {path}"
        );
    }
    assert_eq!(
        versions().await,
        versions_before,
        "the budget or the HTTPRoute was rewritten"
    );

    // A changed manifest is applied as a strategic merge patch: the container merges by name,
    // the rules list is replaced.
    // The simulator also counts the patches kubectl sent.
    let patches = || match &cluster {
        Cluster::Sim(sim) => Some(sim.faults().count("patch", "deployments")),
        Cluster::Real { .. } => None,
    };
    let patches_before = patches();
    let edited = dir.path().join("steerer");
    std::fs::create_dir(&edited).unwrap();
    let artifacts = crate::common::artifacts().join("steerer");
    let deployment = std::fs::read_to_string(artifacts.join("30-deployment.yaml")).unwrap();
    assert!(deployment.contains("cpu: 50m"));
    std::fs::write(
        edited.join("30-deployment.yaml"),
        deployment.replace("cpu: 50m", "cpu: 100m"),
    )
    .unwrap();
    let rbac = std::fs::read_to_string(artifacts.join("20-rbac.yaml")).unwrap();
    // The only rule with exactly these verbs is the one on Events.
    assert_eq!(rbac.matches(r#"verbs: ["create", "patch"]"#).count(), 1);
    std::fs::write(
        edited.join("20-rbac.yaml"),
        rbac.replace(
            r#"verbs: ["create", "patch"]"#,
            r#"verbs: ["create", "patch", "get"]"#,
        ),
    )
    .unwrap();
    let out = kubectl
        .run(&["apply", "-f", edited.to_str().unwrap()])
        .await;
    let actions: HashMap<String, String> = applied(&out).into_iter().collect();
    assert_eq!(actions["deployment.apps/steerer"], "configured", "{out}");
    assert_eq!(
        actions["clusterrole.rbac.authorization.k8s.io/steerer"], "configured",
        "{out}"
    );
    assert_eq!(
        actions["clusterrolebinding.rbac.authorization.k8s.io/steerer"], "unchanged",
        "{out}"
    );
    if let (Some(before), Some(after)) = (patches_before, patches()) {
        assert!(after > before);
    }
    let server = kubectl
        .json(&["get", "deploy", "steerer", "-n", "steerer-system"])
        .await;
    let container = &server["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["requests"]["cpu"], "100m");
    assert_eq!(container["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(container["readinessProbe"]["grpc"]["port"], 50051);
    let role = kubectl.json(&["get", "clusterrole", "steerer"]).await;
    assert_eq!(
        role["rules"].as_array().unwrap().len(),
        written_role["rules"].as_array().unwrap().len()
    );
    assert_eq!(
        rule_for(&role["rules"], "events")["verbs"],
        json!(["create", "patch", "get"])
    );
    // And back to the repository's version.
    let out = kubectl.run(&["apply", "-f", "artifacts/steerer/"]).await;
    let actions: HashMap<String, String> = applied(&out).into_iter().collect();
    assert_eq!(actions["deployment.apps/steerer"], "configured", "{out}");
    let role = kubectl.json(&["get", "clusterrole", "steerer"]).await;
    assert_eq!(role["rules"], written_role["rules"]);

    // The server, started against the cluster kubectl set up, promotes a new image on each
    // example at once: podinfo through its VirtualService, backend through its HTTPRoute,
    // which the start names neither of (steerer finds each).
    crate::common::wait_for_series(&prometheus, GA).await;
    crate::common::wait_for_series(&prometheus, BACKEND).await;
    let mut config = test_server_config();
    config.prometheus_url = prometheus.url();
    let server = start_server(config, kube_config).await;
    let mut client = connect(server.addr).await;
    // The HTTPRoute as stored (with the API server's defaults), to compare after its rollout.
    let stored_route = kubectl.json(&["get", "httproute", BACKEND, "-n", NS]).await;
    let mut started = Vec::new();
    for (target, container) in [(GA, "podinfo"), (BACKEND, "backend")] {
        let rollout = client
            .start_rollout(StartRolloutRequest {
                namespace: NS.into(),
                target: target.into(),
                images: HashMap::from([(container.to_owned(), NEW_IMAGE.to_owned())]),
                analysis: Some(Analysis {
                    step_weight: Some(50),
                    interval: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        started.push(rollout);
    }
    let found: Vec<(String, String)> = started
        .iter()
        .map(|r| {
            let route = r.route.clone().unwrap();
            (route.kind, route.name)
        })
        .collect();
    assert_eq!(
        found,
        [
            ("VirtualService".to_owned(), GA.to_owned()),
            ("HTTPRoute".to_owned(), BACKEND.to_owned())
        ]
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    for rollout in &started {
        let done = loop {
            let r = client
                .get_rollout(GetRolloutRequest {
                    id: rollout.id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            if crate::common::is_terminal(r.phase()) {
                break r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rollout of {} still {:?} at weight {}: {}",
                r.target,
                r.phase(),
                r.canary_weight,
                r.message
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            done.phase(),
            Phase::Succeeded,
            "{}: {}",
            done.target,
            done.message
        );
    }

    let apps = Api::<Deployment>::namespaced(kube.clone(), NS);
    for (ga, canary) in [(GA, CANARY), (BACKEND, "backend-canary")] {
        assert_eq!(image(&apps.get(ga).await.unwrap()), NEW_IMAGE, "{ga}");
        assert_eq!(replicas(&apps.get(canary).await.unwrap()), 0, "{canary}");
    }
    let vs = crate::common::virtual_services(&kube)
        .get(GA)
        .await
        .unwrap();
    let route = &vs.data["spec"]["http"][0]["route"];
    assert_eq!(route[0]["destination"]["host"], GA);
    assert_eq!(route[0]["weight"], 100);
    assert_eq!(route[1]["weight"].as_u64().unwrap_or(0), 0);
    // The HTTPRoute is back on GA, and but for the split's two weights it is as it was.
    let mut http_route = kubectl.json(&["get", "httproute", BACKEND, "-n", NS]).await;
    let split = &mut http_route["spec"]["rules"][1]["backendRefs"];
    assert_eq!(split[0]["name"], BACKEND);
    assert_eq!(split[0]["weight"], 100);
    assert_eq!(split[1]["weight"], 0);
    let mut stored_route = stored_route;
    for route in [&mut http_route, &mut stored_route] {
        for backend in route["spec"]["rules"][1]["backendRefs"]
            .as_array_mut()
            .unwrap()
        {
            backend.as_object_mut().unwrap().remove("weight");
        }
    }
    assert_eq!(http_route["spec"], stored_route["spec"]);
    for field in ["labels", "annotations"] {
        assert_eq!(
            http_route["metadata"][field], stored_route["metadata"][field],
            "{field}"
        );
    }
    for (ga, container) in [(GA, "podinfo"), (BACKEND, "backend")] {
        let out = kubectl
            .run(&[
                "get",
                "deploy",
                ga,
                "-n",
                NS,
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ])
            .await;
        assert_eq!(out, NEW_IMAGE, "{ga}'s container {container}");
    }
    server.stop().await.unwrap();
}

/// Runs `steerer-server` against the cluster until it exits (at most a minute), with
/// backtraces asked for: none may show.
async fn server_exit(cluster: &Cluster, dir: &Path) -> std::process::Output {
    let kubeconfig = dir.join("server-kubeconfig");
    cluster.write_kubeconfig(&kubeconfig);
    let run = tokio::process::Command::new(crate::cli_support::server_bin())
        .args(["--listen", "127.0.0.1:0"])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_BACKTRACE", "1")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the server kept running without its CRD")
        .unwrap()
}

/// The server's one line on stderr, after checking the exit code and that nothing else (no
/// backtrace, no panic) was written there.
fn one_line(output: &std::process::Output) -> String {
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let lower = stderr.to_lowercase();
    assert!(
        !lower.contains("backtrace") && !lower.contains("panic"),
        "{stderr}"
    );
    assert!(stderr.contains("rollouts.steerer.dev"), "{stderr}");
    assert!(
        stderr.contains("kubectl apply -f artifacts/steerer/05-rollouts-crd.yaml"),
        "{stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_with_one_line_on_a_cluster_without_the_rollout_crd_or_with_an_old_one() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let cluster = Cluster::start(&Options {
        apply: vec![],
        ..Options::default()
    })
    .await;
    let kube = Client::try_from(cluster.kube_config().await).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let missing = one_line(&server_exit(&cluster, dir.path()).await);
    assert!(missing.contains("is not installed"), "{missing}");

    // The CRD of before routes had kinds: no spec.route, which the API server would prune.
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/steerer/05-rollouts-crd.yaml"),
    )
    .unwrap();
    let mut old: Value = serde_yaml::from_str(&shipped).unwrap();
    old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("route");
    let old: CustomResourceDefinition = serde_json::from_value(old).unwrap();
    Api::<CustomResourceDefinition>::all(kube.clone())
        .create(&PostParams::default(), &old)
        .await
        .unwrap();
    let outdated = one_line(&server_exit(&cluster, dir.path()).await);
    assert!(
        outdated.contains("older than this server (its v1alpha1 schema has no spec.route)"),
        "{outdated}"
    );
}
