//! Metric templates on the mesh's own series, through a real Prometheus: a request-rate
//! template (`istio_requests_total` of the canary over the check's window) the canary meets is
//! promoted, one it cannot meet rolls it back naming the template; a request naming a template
//! the server does not know is INVALID_ARGUMENT and changes nothing; a template file with a
//! broken template stops the server at start-up, naming it.

use std::path::Path;
use std::time::Duration;

use steerer::v1::{Analysis, EventType, ListRolloutsRequest, MetricCheck, Phase};
use steerer_server::ServerError;

use crate::common::{CANARY, GA, Harness, NS, Options, replicas, types};

const TEMPLATES: &str = r#"# Operator-defined metric templates: name -> PromQL.
request-rate: |
  sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ canary }}"}[{{ interval }}]))
ga-request-rate: sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{namespace}}",destination_workload="{{target}}"}[{{interval}}]))
"#;

/// A harness whose server knows the templates above (the directory must outlive it).
async fn start(dir: &Path) -> Harness {
    let path = dir.join("templates.yaml");
    std::fs::write(&path, TEMPLATES).unwrap();
    let mut options = Options::default();
    options.server.metric_templates = Some(path);
    Harness::start_with(options).await
}

fn checked(template: &str, min: Option<f64>, max: Option<f64>) -> Analysis {
    Analysis {
        step_weight: Some(50),
        max_failed_checks: Some(2),
        metrics: vec![MetricCheck {
            template: template.into(),
            min,
            max,
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_meeting_its_request_rate_template_is_promoted_with_the_value_on_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(dir.path()).await;
    // 100 requests/s per host: at 50% the canary serves about 50/s, far above 1/s.
    let started = h
        .start_rollout(h.request(checked("request-rate", Some(1.0), None)))
        .await;
    let analysis = started.analysis.clone().unwrap();
    assert_eq!(analysis.metrics[0].template, "request-rate");
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let passed: Vec<_> = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckPassed)
        .collect();
    assert!(!passed.is_empty(), "{:#?}", types(&events));
    for e in passed {
        let check = e
            .checks
            .iter()
            .find(|c| c.name == "request-rate")
            .unwrap_or_else(|| panic!("no template in {:?}", e.checks));
        let value = check.value.expect("the template's value");
        assert!(value >= 1.0, "{value}");
        assert!(check.passed);
        assert_eq!(check.min, Some(1.0));
        assert!(
            e.message.contains("metric request-rate ") && e.message.contains(">= 1"),
            "{}",
            e.message
        );
    }
    assert_eq!(h.weights().await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_missing_its_template_bound_is_rolled_back_naming_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(dir.path()).await;
    let ga_before = h.deployment(GA).await;
    // No canary serves a million requests a second.
    let started = h
        .start_rollout(h.request(checked("request-rate", Some(1e6), None)))
        .await;
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert!(
        done.message.contains("2 failed checks")
            && done.message.contains("metric request-rate")
            && done.message.contains("below min 1000000"),
        "{}",
        done.message
    );
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckFailed)
        .collect();
    assert_eq!(failed.len(), 2, "{:#?}", types(&events));
    for e in &failed {
        assert_eq!(e.failed_metrics, ["request-rate"], "{}", e.message);
        let check = e.checks.iter().find(|c| c.name == "request-rate").unwrap();
        assert!(!check.passed);
        assert!(check.value.is_some_and(|v| v > 0.0 && v < 1e6), "{check:?}");
        // The success rate was fine: it passed in the same breakdown.
        let success = e.checks.iter().find(|c| c.name == "success_rate").unwrap();
        assert!(success.passed, "{success:?}");
    }
    let last = done.last_analysis.expect("last analysis");
    assert_eq!(last.failed_metrics, ["request-rate"]);
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(
        h.deployment(GA).await.spec.as_ref().unwrap().template,
        ga_before.spec.as_ref().unwrap().template,
        "GA untouched"
    );
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_template_is_invalid_and_changes_nothing_and_a_broken_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(dir.path()).await;
    let weights = h.weights().await;
    let error = h
        .client
        .start_rollout(h.request(checked("error-ratio", None, Some(0.01))))
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert!(
        error
            .message()
            .contains("\"error-ratio\" is not a metric template")
            && error.message().contains("ga-request-rate, request-rate"),
        "{}",
        error.message()
    );
    let listed = h
        .client
        .list_rollouts(ListRolloutsRequest {
            namespace: NS.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.rollouts.is_empty(), "{:?}", listed.rollouts);
    assert_eq!(h.weights().await, weights);

    // A second server with a template that is not PromQL does not start, and says which.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "fine: sum(up)\nbad-one: 'sum(rate(x[{{ interval }}])'\n",
    )
    .unwrap();
    let mut config = h.config.clone();
    config.metric_templates = Some(broken);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kube = kube::Client::try_from(h.kube_config.clone()).unwrap();
    let serving = steerer_server::serve(config, listener, kube, std::future::pending());
    // Bounded only so that a server that does start fails the test instead of hanging it.
    let refused = tokio::time::timeout(Duration::from_secs(60), serving).await;
    match refused.expect("the server started with a broken template") {
        Err(ServerError::Config(message)) => assert!(
            message.contains("metric template \"bad-one\"") && message.contains("PromQL"),
            "{message}"
        ),
        other => panic!("not refused for its template: {other:?}"),
    }
}
