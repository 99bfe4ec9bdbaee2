//! steerer's own metrics (`--metrics-listen`): a rollout promoted on the cluster shows on the
//! server's `/metrics` as checks by result, a rollout finished by phase, Kubernetes API
//! requests by verb and code, gRPC calls by method and code (a NOT_FOUND included), and the
//! open-watch gauge back at 0 once the watch ends; a real Prometheus scrapes the same endpoint
//! and answers every query of the Grafana dashboard in `artifacts/`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{GA, Harness, NS, Options};
use steerer::v1::{Analysis, EventType, GetRolloutRequest, Phase};
use steerer_server::telemetry::CONTENT_TYPE;
use steerer_sim::prometheus::{Prometheus, PrometheusConfig};

/// The value of the series written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// The sum of every series of `name` whose labels contain all of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let (series, v) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            (rest.is_empty() || rest.starts_with('{')).then_some(())?;
            labels
                .iter()
                .all(|l| rest.contains(l))
                .then(|| v.parse::<f64>().unwrap())
        })
        .sum()
}

async fn scrape(addr: SocketAddr) -> String {
    let answer = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], CONTENT_TYPE);
    let text = answer.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_rollout_shows_in_the_servers_own_metrics() {
    let mut options = Options::default();
    options.server.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let mut h = Harness::start_with(options).await;

    let missing = h
        .client
        .get_rollout(GetRolloutRequest {
            id: "no-such-rollout".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // The server binds /metrics before it serves gRPC, so once a call has been answered the
    // address is known.
    let addr = h.config.telemetry.metrics_addr().unwrap();

    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(50),
            ..Default::default()
        }))
        .await;
    let during = scrape(addr).await;
    assert_eq!(sum(&during, "steerer_rollouts", &[]), 1.0, "{during}");
    assert!(
        value(
            &during,
            &format!("steerer_canary_weight{{namespace=\"{NS}\",target=\"{GA}\"}}")
        )
        .is_some(),
        "{during}"
    );

    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(90))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);

    // The watch's producer ends with the stream; give the gauge a moment to follow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = scrape(addr).await;
        if value(&text, "steerer_watch_streams") == Some(0.0) {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watch gauge stays up:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let passed = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckPassed)
        .count();
    assert!(passed > 0);
    assert_eq!(
        value(&text, "steerer_checks_total{result=\"passed\"}"),
        Some(passed as f64),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "steerer_rollouts_finished_total{phase=\"succeeded\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sum(&text, "steerer_rollouts", &[]), 0.0, "{text}");
    assert_eq!(sum(&text, "steerer_canary_weight", &[]), 0.0);
    assert!(
        !text.contains("steerer_canary_weight{"),
        "a finished rollout leaves the per-target gauges:\n{text}"
    );
    assert_eq!(value(&text, "steerer_leader"), Some(1.0));
    assert!(
        value(&text, "steerer_prometheus_query_duration_seconds_count").unwrap() > 0.0,
        "{text}"
    );

    // Kubernetes: the watch caches list and watch, the steps patch the VirtualService, the
    // state is written and Events created.
    for verb in ["list", "watch", "patch", "create"] {
        assert!(
            sum(
                &text,
                "steerer_kubernetes_requests_total",
                &[&format!("verb=\"{verb}\"")]
            ) > 0.0,
            "no {verb} counted:\n{text}"
        );
    }
    assert!(
        sum(
            &text,
            "steerer_kubernetes_requests_total",
            &["verb=\"patch\"", "code=\"200\""]
        ) > 0.0,
        "{text}"
    );

    // gRPC, by method and code: the NOT_FOUND above, the start, the polls, the watch that
    // ended with its stream.
    for (method, code, at_least) in [
        ("GetRollout", "NOT_FOUND", 1.0),
        ("GetRollout", "OK", 1.0),
        ("StartRollout", "OK", 1.0),
        ("WatchRollout", "OK", 1.0),
    ] {
        let series = format!("steerer_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}}");
        assert!(
            value(&text, &series).is_some_and(|v| v >= at_least),
            "{series} missing or below {at_least}:\n{text}"
        );
    }
    assert_eq!(
        value(
            &text,
            "steerer_grpc_requests_total{method=\"GetRollout\",code=\"NOT_FOUND\"}"
        ),
        Some(1.0)
    );

    // A real Prometheus accepts the exposition and sees the same counts.
    let prometheus = Prometheus::start(PrometheusConfig::new(vec![addr], Duration::from_secs(1)))
        .await
        .unwrap();
    let finished = prometheus
        .query("steerer_rollouts_finished_total{phase=\"succeeded\"}")
        .await
        .unwrap();
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0].value, 1.0);
    let not_found = prometheus
        .query("steerer_grpc_requests_total{method=\"GetRollout\",code=\"NOT_FOUND\"}")
        .await
        .unwrap();
    assert_eq!(not_found.len(), 1, "{not_found:?}");
    assert_eq!(not_found[0].value, 1.0);
    let verbs = prometheus
        .query("sum by (verb) (steerer_kubernetes_requests_total)")
        .await
        .unwrap();
    assert!(
        verbs
            .iter()
            .any(|s| s.labels.get("verb").map(String::as_str) == Some("watch")),
        "{verbs:?}"
    );

    // Every query of the Grafana dashboard is valid PromQL over these series, and the leader
    // filter the rollout panels use keeps this (leading) replica's series.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            crate::common::artifacts().join("steerer/grafana/steerer-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$__rate_interval", "1m");
            let answer = prometheus.query(&expr).await;
            assert!(answer.is_ok(), "{}: {expr}: {answer:?}", panel["title"]);
            if panel["title"] == "Active rollouts" || panel["title"] == "Leader per pod" {
                assert_eq!(answer.unwrap().len(), 1, "{}: {expr}", panel["title"]);
            }
            queries += 1;
        }
    }
    assert!(queries >= 10);
    drop(prometheus);

    h.server.take().unwrap().stop().await.unwrap();
    assert!(
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .is_err(),
        "/metrics stops with the server"
    );
}
