//! The mesh apart from the simulated API (`steerer-sim mesh`), run against a simulator through
//! its kubeconfig as it would run against a real kube-apiserver: traffic follows the
//! VirtualService weights, pod-template annotations and `/sim/error-rate` set the 5xx rate,
//! `/sim/load` drives an HPA through the API, and pods that are not ready get no traffic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use steerer_sim::mesh::cluster::{Scope, virtual_service_resource};
use steerer_sim::mesh::standalone::{MeshConfig, StandaloneMesh};
use steerer_sim::{Sim, SimConfig, Timing};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const NS: &str = "test";

fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts")
}

/// A simulator with the example workloads, sending its own traffic too.
async fn start_sim() -> Sim {
    Sim::start(SimConfig {
        timing: Timing::fast(),
        request_rate: 200.0,
        apply: vec![
            artifacts().join("istio"),
            artifacts().join("namespace"),
            artifacts().join("workloads"),
        ],
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// One `istio_requests_total` series, by the labels the assertions look at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Series {
    reporter: String,
    workload: String,
    service: String,
    code: String,
    flags: String,
}

/// Parses `k="v",k2="v2"` (values may hold escaped quotes and backslashes).
fn parse_labels(text: &str) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    let mut rest = text;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim_start_matches(',').to_owned();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len() - eq - 2;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(match next {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name, value);
        rest = &rest[(eq + 2 + end + 1).min(rest.len())..];
    }
    labels
}

/// The `istio_requests_total` counters of a `/metrics` page.
async fn scrape(addr: SocketAddr) -> HashMap<Series, f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("istio_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").unwrap();
        let labels = parse_labels(labels);
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        out.insert(
            Series {
                reporter: get("reporter"),
                workload: get("destination_workload"),
                service: get("destination_service_name"),
                code: get("response_code"),
                flags: get("response_flags"),
            },
            value.parse().unwrap(),
        );
    }
    out
}

/// Requests per series during a window of `length`.
struct Window(HashMap<Series, f64>);

impl Window {
    async fn measure(addr: SocketAddr, length: Duration) -> Window {
        let before = scrape(addr).await;
        tokio::time::sleep(length).await;
        let after = scrape(addr).await;
        Window(
            after
                .into_iter()
                .map(|(k, v)| {
                    let delta = v - before.get(&k).copied().unwrap_or(0.0);
                    (k, delta)
                })
                .collect(),
        )
    }

    fn sum(&self, keep: impl Fn(&Series) -> bool) -> f64 {
        self.0.iter().filter(|(s, _)| keep(s)).map(|(_, n)| n).sum()
    }

    /// Requests a workload's sidecars answered (reporter="destination").
    fn answered(&self, workload: &str) -> f64 {
        self.sum(|s| s.reporter == "destination" && s.workload == workload)
    }

    /// Of those, the 5xx.
    fn failed(&self, workload: &str) -> f64 {
        self.sum(|s| {
            s.reporter == "destination" && s.workload == workload && s.code.starts_with('5')
        })
    }

    fn canary_share(&self) -> Option<f64> {
        let total = self.answered("podinfo") + self.answered("podinfo-canary");
        (total > 0.0).then(|| self.answered("podinfo-canary") / total)
    }

    fn canary_error_share(&self) -> Option<f64> {
        let answered = self.answered("podinfo-canary");
        (answered > 0.0).then(|| self.failed("podinfo-canary") / answered)
    }
}

/// Measures windows until `accept` holds, failing after `within` with what was last seen.
async fn eventually(
    addr: SocketAddr,
    what: &str,
    within: Duration,
    accept: impl Fn(&Window) -> bool,
) -> Window {
    let deadline = Instant::now() + within;
    loop {
        let window = Window::measure(addr, Duration::from_millis(1500)).await;
        if accept(&window) {
            return window;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last window: {:?}",
            window.0
        );
    }
}

async fn patch_vs_weights(client: &kube::Client, primary: u32, canary: u32) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &virtual_service_resource("v1"));
    let patch = json!({"spec": {"http": [{"route": [
        {"destination": {"host": "podinfo"}, "weight": primary},
        {"destination": {"host": "podinfo-canary"}, "weight": canary},
    ]}]}});
    api.patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn patch_canary(client: &kube::Client, patch: Value) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    api.patch(
        "podinfo-canary",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

fn near(value: Option<f64>, expected: f64, tolerance: f64) -> bool {
    value.is_some_and(|v| (v - expected).abs() <= tolerance)
}

#[tokio::test]
async fn standalone_mesh_follows_weights_error_rates_load_and_readiness_through_the_api() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let mesh = StandaloneMesh::start(MeshConfig {
        kubeconfig: Some(kubeconfig),
        request_rate: 200.0,
        hpa_sync: Duration::from_millis(300),
        scope: Scope::default(),
        ..MeshConfig::default()
    })
    .await
    .unwrap();
    let addr = mesh.metrics_addr();
    let client = kube::Client::try_from(sim.kube_config().await.unwrap()).unwrap();
    let wait = Duration::from_secs(30);

    // The artifact's 100/0 split: everything to GA.
    eventually(addr, "all traffic on GA", wait, |w| {
        w.answered("podinfo") > 100.0 && w.canary_share() == Some(0.0)
    })
    .await;

    patch_vs_weights(&client, 70, 30).await;
    eventually(addr, "a 30% canary share", wait, |w| {
        near(w.canary_share(), 0.3, 0.04)
    })
    .await;

    // A bad version: its pod template says half its answers are 5xx.
    patch_canary(
        &client,
        json!({"spec": {"template": {"metadata": {"annotations": {
            "sim.steerer.dev/error-rate": "0.5"}}}}}),
    )
    .await;
    let window = eventually(addr, "half the canary's answers failing", wait, |w| {
        near(w.canary_error_share(), 0.5, 0.04)
    })
    .await;
    assert_eq!(window.failed("podinfo"), 0.0, "GA has no 5xx");
    let series = scrape(addr).await;
    for code in ["500", "503"] {
        assert!(
            series.keys().any(|s| s.reporter == "destination"
                && s.workload == "podinfo-canary"
                && s.code == code
                && s.flags == "-"),
            "no {code} series for the canary: {series:?}"
        );
    }

    // The run-time override, and back to the annotation.
    let body = json!({"namespace": NS, "deployment": "podinfo-canary", "rate": 0.1});
    assert_eq!(post(addr, "/sim/error-rate", body).await, 200);
    eventually(addr, "a 10% canary error rate", wait, |w| {
        near(w.canary_error_share(), 0.1, 0.04)
    })
    .await;
    let body = json!({"namespace": NS, "deployment": "podinfo-canary", "rate": null});
    assert_eq!(post(addr, "/sim/error-rate", body).await, 200);
    eventually(addr, "the annotated error rate again", wait, |w| {
        near(w.canary_error_share(), 0.5, 0.04)
    })
    .await;
    let bad = json!({"namespace": NS, "deployment": "podinfo-canary", "rate": 2});
    assert_eq!(post(addr, "/sim/error-rate", bad).await, 400);

    // Twice the target load: the HPA (min 2, max 4) scales the canary through the API.
    let body = json!({"namespace": NS, "hpa": "podinfo-canary", "load": 2.0});
    assert_eq!(post(addr, "/sim/load", body).await, 200);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + wait;
    loop {
        let replicas = deployments
            .get("podinfo-canary")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas);
        let desired = hpas
            .get("podinfo-canary")
            .await
            .unwrap()
            .status
            .map(|s| s.desired_replicas);
        if replicas == Some(4) && desired == Some(4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "canary not scaled to 4: replicas {replicas:?}, HPA desired {desired:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = json!({"namespace": NS, "hpa": "podinfo-canary", "load": 1.0});
    assert_eq!(post(addr, "/sim/load", body).await, 200);

    // A version whose pods never become ready: no sidecar of the canary answers anything,
    // the gateway answers the canary's share with 503 UH, GA keeps its own share.
    patch_canary(
        &client,
        json!({"spec": {
            "strategy": {"type": "Recreate", "rollingUpdate": null},
            "template": {"metadata": {"annotations": {"sim.steerer.dev/ready": "false"}}},
        }}),
    )
    .await;
    eventually(addr, "no traffic to unready canary pods", wait, |w| {
        let gateway_503 = w.sum(|s| {
            s.reporter == "source"
                && s.workload == "unknown"
                && s.service == "podinfo-canary"
                && s.code == "503"
                && s.flags == "UH"
        });
        let ga = w.answered("podinfo");
        w.answered("podinfo-canary") == 0.0
            && gateway_503 > 0.0
            && (gateway_503 / (gateway_503 + ga) - 0.3).abs() <= 0.04
    })
    .await;

    mesh.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn mesh_command_prints_its_address_serves_its_controls_and_exits_on_sigterm() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_steerer-sim"))
        .arg("mesh")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--metrics-listen", "127.0.0.1:0", "--request-rate", "100"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line.strip_prefix("metrics: ").unwrap().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{line}"
    );
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();

    eventually(addr, "GA traffic", Duration::from_secs(30), |w| {
        w.answered("podinfo") > 0.0
    })
    .await;
    let help = reqwest::get(format!("http://{addr}/sim")).await.unwrap();
    assert_eq!(help.status(), 200);
    let bad = json!({"namespace": NS, "hpa": "podinfo-canary", "load": -1});
    assert_eq!(post(addr, "/sim/load", bad).await, 400);
    let body = json!({"namespace": NS, "deployment": "podinfo", "rate": 1.0});
    assert_eq!(post(addr, "/sim/error-rate", body).await, 200);
    eventually(
        addr,
        "GA failing every request",
        Duration::from_secs(30),
        |w| w.answered("podinfo") > 0.0 && w.failed("podinfo") == w.answered("podinfo"),
    )
    .await;

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
    sim.shutdown().await;
}

#[tokio::test]
async fn mesh_command_names_a_virtual_service_version_the_server_does_not_serve() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_steerer-sim"))
        .arg("mesh")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--virtual-service-version", "v9"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("virtualservices.networking.istio.io/v9"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    sim.shutdown().await;
}

/// Replaces the example VirtualService's routes.
async fn set_vs_http(client: &kube::Client, http: Value) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &virtual_service_resource("v1"));
    let patch = json!({"spec": {"http": http}});
    api.patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn standalone_mesh_routes_a_shares_headers_and_cookies_by_match_and_mirrors_a_share() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let mesh = StandaloneMesh::start(MeshConfig {
        kubeconfig: Some(kubeconfig),
        request_rate: 200.0,
        scope: Scope::default(),
        ..MeshConfig::default()
    })
    .await
    .unwrap();
    let addr = mesh.metrics_addr();
    let client = kube::Client::try_from(sim.kube_config().await.unwrap()).unwrap();
    let wait = Duration::from_secs(30);
    let canary = json!([{"destination": {"host": "podinfo-canary"}}]);
    let ga = json!([{"destination": {"host": "podinfo"}}]);

    // An A/B route: a header, or a cookie (matched on the cookie header, as Istio does).
    set_vs_http(
        &client,
        json!([
            {"match": [{"headers": {"x-cohort": {"exact": "beta"}}},
                       {"headers": {"cookie": {"regex": "^(.*?;\\s*)?plan=gold(;.*)?$"}}}],
             "route": canary},
            {"route": ga},
        ]),
    )
    .await;
    let rule = json!({"namespace": NS, "service": "podinfo", "share": 0.3,
                      "headers": {"X-Cohort": "beta"}});
    assert_eq!(post(addr, "/sim/traffic", rule).await, 200);
    eventually(addr, "the header's 30% on the canary", wait, |w| {
        near(w.canary_share(), 0.3, 0.04)
    })
    .await;
    let rules = json!({"namespace": NS, "service": "podinfo", "share": 0.2,
                       "cookies": {"plan": "gold", "session": "42"}});
    assert_eq!(post(addr, "/sim/traffic", rules).await, 200);
    let other = json!({"namespace": NS, "service": "podinfo", "share": 0.2,
                       "cookies": {"plan": "golden"}});
    assert_eq!(post(addr, "/sim/traffic", other).await, 200);
    eventually(addr, "header and cookie, 50% on the canary", wait, |w| {
        near(w.canary_share(), 0.5, 0.04)
    })
    .await;
    // Shares past all requests, and names that are no HTTP token, change nothing.
    let over = json!({"namespace": NS, "service": "podinfo", "share": 0.5});
    assert_eq!(post(addr, "/sim/traffic", over).await, 400);
    let bad = json!({"namespace": NS, "service": "podinfo", "share": 0.1,
                     "headers": {"x cohort": "beta"}});
    assert_eq!(post(addr, "/sim/traffic", bad).await, 400);
    let clear = json!({"namespace": NS, "service": "podinfo", "clear": true});
    assert_eq!(post(addr, "/sim/traffic", clear).await, 200);

    // Mirroring: GA answers every request, and the canary serves a copy of a quarter of them,
    // which only its own sidecar reports.
    set_vs_http(
        &client,
        json!([{"route": ga, "mirror": {"host": "podinfo-canary"},
                "mirrorPercentage": {"value": 25.0}}]),
    )
    .await;
    let window = eventually(addr, "a quarter of GA's requests mirrored", wait, |w| {
        let ga = w.answered("podinfo");
        ga > 100.0 && (w.answered("podinfo-canary") / ga - 0.25).abs() <= 0.03
    })
    .await;
    let seen_by_gateway = window.sum(|s| s.reporter == "source" && s.workload == "podinfo-canary");
    assert_eq!(seen_by_gateway, 0.0, "the caller never sees the copy");

    mesh.shutdown().await;
    sim.shutdown().await;
}

/// The simulator's own mesh, driven through its API address: an HTTPRoute (whose hostname
/// names no Service) routes the share of `podinfo`'s requests that carries a header matching
/// its regular expression to the canary, and its RequestMirror filter copies a share of the
/// rest to the canary too.
#[tokio::test]
async fn the_simulators_api_takes_traffic_rules_for_an_httproutes_header_match_and_mirror() {
    let workloads: Vec<PathBuf> = std::fs::read_dir(artifacts().join("workloads"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| !path.ends_with("podinfo-virtualservice.yaml"))
        .collect();
    let mut apply = vec![
        artifacts().join("gateway-api"),
        artifacts().join("namespace"),
    ];
    apply.extend(workloads);
    let sim = Sim::start(SimConfig {
        timing: Timing::fast(),
        request_rate: 200.0,
        apply,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let client = kube::Client::try_from(sim.kube_config().await.unwrap()).unwrap();
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client,
        NS,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            "httproutes",
        ),
    );
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "hostnames": ["podinfo.example.com"],
            "rules": [
                {"matches": [{"headers": [{"type": "RegularExpression", "name": "X-Cohort",
                                           "value": "beta|gamma"}]}],
                 "backendRefs": [{"name": "podinfo-canary", "port": 9898}]},
                {"backendRefs": [{"name": "podinfo", "port": 9898}],
                 "filters": [{"type": "RequestMirror", "requestMirror": {
                     "backendRef": {"name": "podinfo-canary", "port": 9898}, "percent": 50}}]},
            ],
        },
    }))
    .unwrap();
    routes
        .create(&kube::api::PostParams::default(), &route)
        .await
        .unwrap();
    let api = sim.api_addr();
    let addr = sim.metrics_addr();
    let wait = Duration::from_secs(30);
    for (share, cohort) in [(0.2, "beta"), (0.1, "gamma"), (0.1, "delta")] {
        let rule = json!({"namespace": NS, "service": "podinfo", "share": share,
                          "headers": {"x-cohort": cohort}});
        assert_eq!(post(api, "/sim/traffic", rule).await, 200);
    }
    // Of every 100 requests, 30 match and go to the canary; the other 70 go to GA, which
    // mirrors 35 of them to the canary: the canary serves 65, the gateway sees it answer 30.
    eventually(
        addr,
        "matches and mirrored copies on the canary",
        wait,
        |w| {
            let ga = w.answered("podinfo");
            let canary = w.answered("podinfo-canary");
            let routed = w.sum(|s| s.reporter == "source" && s.workload == "podinfo-canary");
            ga > 100.0
                && (canary / ga - 65.0 / 70.0).abs() <= 0.08
                && (routed / ga - 30.0 / 70.0).abs() <= 0.05
        },
    )
    .await;
    let over = json!({"namespace": NS, "service": "podinfo", "share": 0.8});
    assert_eq!(post(api, "/sim/traffic", over).await, 400);
    sim.shutdown().await;
}
