//! The mesh's Istio and Linkerd metrics as a real Prometheus (the `prometheus` package,
//! started by the test) scrapes them: success rates by workload, the same requests counted by
//! both, and request rates following the VirtualService weights.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use steerer_sim::controllers::deployment::deployments;
use steerer_sim::controllers::hpa::horizontal_pod_autoscalers;
use steerer_sim::mesh::{services, virtual_services};
use steerer_sim::prometheus::{Prometheus, PrometheusConfig};
use steerer_sim::store::{GroupResource, UpdateScope};
use steerer_sim::{Sim, SimConfig, Timing};

/// Creates the example workloads from `artifacts/workloads/` (podinfo's files) straight in
/// the store.
fn create_workloads(sim: &Sim) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts/workloads");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // podinfo's files; the Gateway API example has a folder of its own.
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let obj: Value = serde_yaml::from_str(&text).unwrap();
        let gr: GroupResource = match obj["kind"].as_str().unwrap() {
            "Deployment" => deployments(),
            "Service" => services(),
            "HorizontalPodAutoscaler" => horizontal_pod_autoscalers(),
            "VirtualService" => virtual_services(),
            other => panic!("unexpected kind {other}"),
        };
        sim.world().store.create(&gr, "test", obj).unwrap();
    }
}

fn update(sim: &Sim, gr: GroupResource, name: &str, f: impl FnOnce(&mut Value)) {
    sim.world()
        .store
        .update(&gr, "test", name, UpdateScope::Spec, |old| {
            let mut new = old.clone();
            f(&mut new);
            Ok(new)
        })
        .unwrap();
}

fn set_weights(sim: &Sim, primary: u64, canary: u64) {
    update(sim, virtual_services(), "podinfo", |vs| {
        vs["spec"]["http"][0]["route"][0]["weight"] = json!(primary);
        vs["spec"]["http"][0]["route"][1]["weight"] = json!(canary);
    });
}

/// The success-rate query of DESIGN.md.
fn success_rate(workload: &str) -> String {
    format!(
        r#"sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="test",destination_workload="{workload}",response_code!~"5.*"}}[5s]))
           /
           sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="test",destination_workload="{workload}"}}[5s]))"#
    )
}

/// The success rate from Linkerd's inbound series.
fn linkerd_success_rate(workload: &str) -> String {
    format!(
        r#"sum(rate(response_total{{direction="inbound",namespace="test",deployment="{workload}",classification!="failure"}}[5s]))
           /
           sum(rate(response_total{{direction="inbound",namespace="test",deployment="{workload}"}}[5s]))"#
    )
}

fn request_rate(workload: &str) -> String {
    format!(
        r#"sum(rate(istio_requests_total{{reporter="destination",destination_workload="{workload}"}}[5s]))"#
    )
}

async fn value(prometheus: &Prometheus, query: &str) -> Option<f64> {
    let samples = prometheus.query(query).await.unwrap();
    samples.first().map(|s| s.value).filter(|v| v.is_finite())
}

/// Polls until `accept` holds for the values of `queries`, failing after `within` with the
/// last values seen.
async fn eventually(
    prometheus: &Prometheus,
    queries: &[String],
    within: Duration,
    accept: impl Fn(&[f64]) -> bool,
) -> Vec<f64> {
    let deadline = Instant::now() + within;
    let mut last = Vec::new();
    loop {
        let mut values = Vec::new();
        for q in queries {
            match value(prometheus, q).await {
                Some(v) => values.push(v),
                None => break,
            }
        }
        if values.len() == queries.len() && accept(&values) {
            return values;
        }
        if !values.is_empty() {
            last = values;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; last values {last:?} for {queries:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn prometheus_sees_canary_errors_and_traffic_following_the_weights() {
    let sim = Sim::start(SimConfig {
        timing: Timing::fast(),
        request_rate: 200.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    create_workloads(&sim);
    update(&sim, deployments(), "podinfo-canary", |d| {
        d["spec"]["template"]["metadata"]["annotations"]["sim.steerer.dev/error-rate"] =
            json!("0.2");
    });
    set_weights(&sim, 50, 50);

    let prometheus = Prometheus::start(PrometheusConfig::new(
        vec![sim.metrics_addr()],
        Duration::from_secs(1),
    ))
    .await
    .unwrap();

    let rates = eventually(
        &prometheus,
        &[success_rate("podinfo-canary"), success_rate("podinfo")],
        Duration::from_secs(15),
        |v| (v[0] - 0.8).abs() < 0.03 && v[1] > 0.999,
    )
    .await;
    assert!(
        (rates[0] - 0.8).abs() < 0.03,
        "canary success rate {rates:?}"
    );
    let linkerd = eventually(
        &prometheus,
        &[
            linkerd_success_rate("podinfo-canary"),
            linkerd_success_rate("podinfo"),
        ],
        Duration::from_secs(15),
        |v| (v[0] - 0.8).abs() < 0.03 && v[1] > 0.999,
    )
    .await;
    assert!(
        (linkerd[0] - 0.8).abs() < 0.03,
        "Linkerd's canary success rate {linkerd:?}"
    );
    // One scrape of one page: both meshes' counters of the same requests are equal.
    for (istio, linkerd) in [
        (
            r#"sum(istio_requests_total{reporter="destination",destination_workload="podinfo-canary"})"#,
            r#"sum(response_total{direction="inbound",deployment="podinfo-canary"})"#,
        ),
        (
            r#"sum(istio_requests_total{reporter="destination",destination_workload="podinfo-canary",response_code=~"5.*"})"#,
            r#"sum(response_total{direction="inbound",deployment="podinfo-canary",classification="failure"})"#,
        ),
        (
            r#"sum(istio_request_duration_milliseconds_count{reporter="destination",destination_workload="podinfo"})"#,
            r#"sum(response_latency_ms_count{direction="inbound",deployment="podinfo"})"#,
        ),
    ] {
        let both = format!("({istio}) - ({linkerd})");
        let counted = value(&prometheus, istio).await;
        assert!(counted.is_some_and(|c| c > 0.0), "{istio}: {counted:?}");
        assert_eq!(value(&prometheus, &both).await, Some(0.0), "{both}");
    }

    set_weights(&sim, 90, 10);
    let rates = eventually(
        &prometheus,
        &[request_rate("podinfo"), request_rate("podinfo-canary")],
        Duration::from_secs(15),
        |v| (v[0] / v[1] - 9.0).abs() < 1.0,
    )
    .await;
    // 200 requests per second for the host, nine tenths of them to GA.
    assert!((rates[0] - 180.0).abs() < 25.0, "request rates {rates:?}");
}

#[tokio::test]
async fn destination_without_ready_pods_has_only_gateway_503s() {
    let sim = Sim::start(SimConfig {
        timing: Timing::fast(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    create_workloads(&sim);
    update(&sim, deployments(), "podinfo-canary", |d| {
        d["spec"]["template"]["metadata"]["annotations"]["sim.steerer.dev/ready"] = json!("false");
        d["spec"]["strategy"] = json!({"type": "Recreate"});
    });
    set_weights(&sim, 0, 100);

    let url = format!("http://{}/metrics", sim.metrics_addr());
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let resp = reqwest::get(&url).await.unwrap();
        assert_eq!(
            resp.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = resp.text().await.unwrap();
        if text.contains(r#"response_code="503""#) {
            break text;
        }
        assert!(Instant::now() < deadline, "no 503 series appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let gateway_503 = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains(r#"response_code="503""#))
        .unwrap();
    assert!(gateway_503.contains(r#"reporter="source""#));
    assert!(gateway_503.contains(r#"response_flags="UH""#));
    assert!(gateway_503.contains(r#"destination_workload="unknown""#));
    assert!(gateway_503.contains(r#"destination_service="podinfo-canary.test.svc.cluster.local""#));
    assert!(
        !text.lines().any(|l| l.contains(r#"reporter="destination""#)
            && l.contains(r#"destination_service_name="podinfo-canary""#)
            && l.contains(r#"response_code="503""#)),
        "the destination reports nothing it never received"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("response_total{")
                && l.contains(r#"deployment="podinfo-canary""#)),
        "Linkerd's inbound proxy counts nothing it never received"
    );
}
