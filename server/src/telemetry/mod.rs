//! steerer's own metrics: the Prometheus registry and every `steerer_*` family in it, the
//! scrape-time collector of the rollouts this replica holds, the tower layers that count
//! Kubernetes API requests (`kubernetes`) and gRPC calls (`grpc`), the `/metrics`
//! endpoint (`endpoint`), and the server's log lines (`logs`).

pub mod endpoint;
pub mod grpc;
pub mod kubernetes;
pub mod logs;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub use endpoint::{CONTENT_TYPE, MetricsEndpoint};
pub use grpc::GrpcMetricsLayer;
pub use kubernetes::{KubeRequestsLayer, kube_client};

use crate::domain::{EventKind, Phase, Rollout, RolloutEvent};
use crate::metrics::MetricsError;

/// Upper bounds (seconds) of the Prometheus query latency buckets: a query takes milliseconds
/// when Prometheus is healthy and up to the query timeout when it is not.
const QUERY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The phases of an active rollout, each always present in `steerer_rollouts` (at 0 when no
/// rollout is in it), so a dashboard's series do not come and go.
const ACTIVE_PHASES: [Phase; 5] = [
    Phase::Pending,
    Phase::Progressing,
    Phase::Paused,
    Phase::Promoting,
    Phase::RollingBack,
];

/// Errors of the telemetry: building the instrumented Kubernetes client, serving `/metrics`.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("failed to build the Kubernetes client: {0}")]
    KubeClient(#[source] kube::Error),
    #[error("failed to listen for metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("failed to encode the metrics: {0}")]
    Encode(#[source] fmt::Error),
}

/// What the rollout gauges show of one rollout the server holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSummary {
    pub namespace: String,
    pub target: String,
    pub phase: Phase,
    pub canary_weight: u32,
    /// The success rate (percent) of the last check that had data.
    pub success_rate: Option<f64>,
}

impl RolloutSummary {
    pub fn of(rollout: &Rollout) -> Self {
        Self {
            namespace: rollout.namespace.clone(),
            target: rollout.target.clone(),
            phase: rollout.phase,
            canary_weight: rollout.canary_weight,
            success_rate: rollout
                .last_analysis
                .as_ref()
                .and_then(|a| a.sample.success_rate),
        }
    }
}

/// Lists the rollouts the server holds, at scrape time.
pub type RolloutsSource = Arc<dyn Fn() -> Vec<RolloutSummary> + Send + Sync>;

/// The label value of a phase: its name in snake case.
pub fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "pending",
        Phase::Progressing => "progressing",
        Phase::Paused => "paused",
        Phase::Promoting => "promoting",
        Phase::Succeeded => "succeeded",
        Phase::RollingBack => "rolling_back",
        Phase::RolledBack => "rolled_back",
        Phase::Aborted => "aborted",
        Phase::Failed => "failed",
    }
}

/// The `result` label of a check event; `None` for every other kind.
fn check_result(kind: EventKind) -> Option<&'static str> {
    match kind {
        EventKind::CheckPassed => Some("passed"),
        EventKind::CheckFailed => Some("failed"),
        EventKind::CheckNoData => Some("no_data"),
        _ => None,
    }
}

/// Whether an event ends its rollout.
fn is_ending(event: &RolloutEvent) -> bool {
    event.phase.is_terminal()
        && matches!(
            event.kind,
            EventKind::Succeeded | EventKind::RolledBack | EventKind::Aborted | EventKind::Failed
        )
}

/// The `reason` label of a failed Prometheus query.
fn query_error_reason(error: &MetricsError) -> &'static str {
    match error {
        MetricsError::Timeout(_) => "timeout",
        MetricsError::Client { .. }
        | MetricsError::Http { .. }
        | MetricsError::Query(_)
        | MetricsError::UnknownObserver(_) => "query",
        MetricsError::Unreadable { .. }
        | MetricsError::Value { .. }
        | MetricsError::Response(_) => "response",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubeLabels {
    verb: &'static str,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    method: &'static str,
    code: &'static str,
}

/// The server's metrics. Cheap to clone: clones share one registry.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    rollouts: Arc<RolloutsCollector>,
    finished: Family<PhaseLabels, Counter>,
    checks: Family<ResultLabels, Counter>,
    query_duration: Histogram,
    query_errors: Family<ReasonLabels, Counter>,
    kube_requests: Family<KubeLabels, Counter>,
    leader: Gauge,
    watch_streams: Gauge,
    grpc_requests: Family<GrpcLabels, Counter>,
    metrics_addr: Mutex<Option<SocketAddr>>,
}

impl Default for Inner {
    fn default() -> Self {
        // Series known in advance are created at zero, so rate() sees their first increase.
        let mut registry = Registry::with_prefix("steerer");
        let rollouts = Arc::new(RolloutsCollector::default());
        registry.register_collector(Box::new(rollouts.clone()));

        let finished = Family::<PhaseLabels, Counter>::default();
        for phase in Phase::TERMINAL {
            let _ = finished.get_or_create(&PhaseLabels {
                phase: phase_label(phase),
            });
        }
        registry.register(
            "rollouts_finished",
            "Rollouts this replica drove to their end, by terminal phase",
            finished.clone(),
        );
        let checks = Family::<ResultLabels, Counter>::default();
        for result in ["passed", "failed", "no_data"] {
            let _ = checks.get_or_create(&ResultLabels { result });
        }
        registry.register(
            "checks",
            "Canary checks recorded, by result (repeated no-data checks with the same reason are recorded sparingly)",
            checks.clone(),
        );
        let query_duration = Histogram::new(QUERY_BUCKETS);
        registry.register_with_unit(
            "prometheus_query_duration",
            "Duration of the Prometheus HTTP queries the analysis makes",
            Unit::Seconds,
            query_duration.clone(),
        );
        let query_errors = Family::<ReasonLabels, Counter>::default();
        for reason in ["timeout", "query", "response"] {
            let _ = query_errors.get_or_create(&ReasonLabels { reason });
        }
        registry.register(
            "prometheus_query_errors",
            "Failed Prometheus queries, by reason (timeout, query: transport, HTTP or PromQL error, response: an answer not understood)",
            query_errors.clone(),
        );
        let kube_requests = Family::<KubeLabels, Counter>::default();
        registry.register(
            "kubernetes_requests",
            "Requests to the Kubernetes API, by verb and HTTP status (error: no answer)",
            kube_requests.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica is the leader that drives rollouts, else 0",
            leader.clone(),
        );
        let watch_streams = Gauge::default();
        registry.register(
            "watch_streams",
            "Open WatchRollout streams",
            watch_streams.clone(),
        );
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "RolloutService calls, by method and gRPC status code, counted when the call (or its stream) ends",
            grpc_requests.clone(),
        );
        Self {
            registry,
            rollouts,
            finished,
            checks,
            query_duration,
            query_errors,
            kube_requests,
            leader,
            watch_streams,
            grpc_requests,
            metrics_addr: Mutex::new(None),
        }
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("metrics_addr", &self.metrics_addr())
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Sets where the rollout gauges come from, replacing any earlier source. Called at every
    /// scrape: it must be quick and must not block.
    pub fn set_rollouts_source(&self, source: RolloutsSource) {
        if let Ok(mut slot) = self.inner.rollouts.source.write() {
            *slot = Some(source);
        }
    }

    /// Counts the checks and the endings among events the engine just recorded.
    pub fn record_events(&self, events: &[RolloutEvent]) {
        for event in events {
            if let Some(result) = check_result(event.kind) {
                self.inner
                    .checks
                    .get_or_create(&ResultLabels { result })
                    .inc();
            }
            if is_ending(event) {
                self.inner
                    .finished
                    .get_or_create(&PhaseLabels {
                        phase: phase_label(event.phase),
                    })
                    .inc();
            }
        }
    }

    /// Records one Prometheus query: how long it took and, if it failed, why.
    pub fn observe_prometheus_query(&self, elapsed: Duration, error: Option<&MetricsError>) {
        self.inner.query_duration.observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            self.inner
                .query_errors
                .get_or_create(&ReasonLabels {
                    reason: query_error_reason(error),
                })
                .inc();
        }
    }

    /// Counts one Kubernetes API request.
    pub(crate) fn count_kube_request(&self, verb: &'static str, code: String) {
        self.inner
            .kube_requests
            .get_or_create(&KubeLabels { verb, code })
            .inc();
    }

    /// Counts one RolloutService call.
    pub(crate) fn count_grpc_call(&self, method: &'static str, code: &'static str) {
        self.inner
            .grpc_requests
            .get_or_create(&GrpcLabels { method, code })
            .inc();
    }

    /// Whether this replica leads (drives rollouts).
    pub fn set_leader(&self, leader: bool) {
        self.inner.leader.set(i64::from(leader));
    }

    /// Counts an open WatchRollout stream until the returned guard is dropped.
    pub fn watch_stream(&self) -> WatchStreamGuard {
        self.inner.watch_streams.inc();
        WatchStreamGuard {
            gauge: self.inner.watch_streams.clone(),
        }
    }

    /// The address `/metrics` is served on, once the server bound it.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.inner.metrics_addr.lock().ok().and_then(|a| *a)
    }

    pub(crate) fn set_metrics_addr(&self, addr: Option<SocketAddr>) {
        if let Ok(mut slot) = self.inner.metrics_addr.lock() {
            *slot = addr;
        }
    }

    /// Every family in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, TelemetryError> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .map_err(TelemetryError::Encode)?;
        Ok(out)
    }
}

/// An open WatchRollout stream: the gauge goes down when this is dropped, however the stream
/// ends.
#[derive(Debug)]
pub struct WatchStreamGuard {
    gauge: Gauge,
}

impl Drop for WatchStreamGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Encodes the rollout gauges from the registered source at each scrape, so a rollout that
/// ends (or a target whose rollouts this replica no longer holds) leaves the output.
#[derive(Default)]
struct RolloutsCollector {
    source: RwLock<Option<RolloutsSource>>,
}

impl fmt::Debug for RolloutsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RolloutsCollector").finish_non_exhaustive()
    }
}

impl Collector for RolloutsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let source = self.source.read().ok().and_then(|s| s.clone());
        let rollouts = source.map(|s| s()).unwrap_or_default();

        let mut by_phase: BTreeMap<&'static str, i64> =
            ACTIVE_PHASES.iter().map(|p| (phase_label(*p), 0)).collect();
        // One series per target: the supervisor holds at most one active rollout of a target,
        // and a duplicate series would make Prometheus reject the whole scrape.
        let mut by_target: BTreeMap<(&str, &str), &RolloutSummary> = BTreeMap::new();
        for rollout in rollouts.iter().filter(|r| !r.phase.is_terminal()) {
            *by_phase.entry(phase_label(rollout.phase)).or_default() += 1;
            by_target
                .entry((&rollout.namespace, &rollout.target))
                .or_insert(rollout);
        }

        // Help texts end with a full stop, as the registry writes those of registered metrics.
        let mut family = encoder.encode_descriptor(
            "rollouts",
            "Active rollouts this replica holds, by phase.",
            None,
            MetricType::Gauge,
        )?;
        for (phase, count) in by_phase {
            let labels = [("phase", phase)];
            ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "canary_weight",
            "Percent of the traffic on the canary, per target of an active rollout.",
            None,
            MetricType::Gauge,
        )?;
        for ((namespace, target), rollout) in &by_target {
            let labels = [("namespace", *namespace), ("target", *target)];
            ConstGauge::new(i64::from(rollout.canary_weight))
                .encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "canary_success_rate",
            "Success rate (percent) of the last check with data, per target of an active rollout.",
            None,
            MetricType::Gauge,
        )?;
        for ((namespace, target), rollout) in &by_target {
            if let Some(rate) = rollout.success_rate.filter(|r| r.is_finite()) {
                let labels = [("namespace", *namespace), ("target", *target)];
                ConstGauge::new(rate).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::Utc;

    fn summary(target: &str, phase: Phase, weight: u32, rate: Option<f64>) -> RolloutSummary {
        RolloutSummary {
            namespace: "test".into(),
            target: target.into(),
            phase,
            canary_weight: weight,
            success_rate: rate,
        }
    }

    fn event(kind: EventKind, phase: Phase) -> RolloutEvent {
        RolloutEvent {
            rollout_id: "r".into(),
            sequence: 1,
            time: Utc::now(),
            kind,
            phase,
            canary_weight: 0,
            success_rate: None,
            request_rate: None,
            failed_checks: 0,
            message: String::new(),
            latency_p99_ms: None,
            failed: Default::default(),
            checks: Vec::new(),
        }
    }

    /// The output lines starting with `prefix`, sorted (a family's series come in no
    /// particular order).
    fn samples(telemetry: &Telemetry, prefix: &str) -> Vec<String> {
        let mut lines: Vec<String> = telemetry
            .encode()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn a_fresh_registry_shows_every_fixed_series_at_zero_and_ends_with_eof() {
        let telemetry = Telemetry::default();
        let text = telemetry.encode().unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in [
            "steerer_rollouts{phase=\"progressing\"} 0",
            "steerer_rollouts_finished_total{phase=\"succeeded\"} 0",
            "steerer_checks_total{result=\"no_data\"} 0",
            "steerer_prometheus_query_errors_total{reason=\"timeout\"} 0",
            "steerer_prometheus_query_duration_seconds_count 0",
            "steerer_leader 0",
            "steerer_watch_streams 0",
            "# TYPE steerer_canary_weight gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn rollout_gauges_come_from_the_source_at_each_scrape_and_ended_rollouts_leave() {
        let telemetry = Telemetry::default();
        let held = Arc::new(Mutex::new(vec![
            summary("a", Phase::Progressing, 30, Some(99.5)),
            summary("b", Phase::Paused, 10, None),
            summary("c", Phase::Succeeded, 0, Some(100.0)),
        ]));
        let source = held.clone();
        telemetry.set_rollouts_source(Arc::new(move || source.lock().unwrap().clone()));
        assert_eq!(
            samples(&telemetry, "steerer_rollouts{"),
            [
                "steerer_rollouts{phase=\"paused\"} 1",
                "steerer_rollouts{phase=\"pending\"} 0",
                "steerer_rollouts{phase=\"progressing\"} 1",
                "steerer_rollouts{phase=\"promoting\"} 0",
                "steerer_rollouts{phase=\"rolling_back\"} 0",
            ]
        );
        assert_eq!(
            samples(&telemetry, "steerer_canary_weight{"),
            [
                "steerer_canary_weight{namespace=\"test\",target=\"a\"} 30",
                "steerer_canary_weight{namespace=\"test\",target=\"b\"} 10",
            ]
        );
        assert_eq!(
            samples(&telemetry, "steerer_canary_success_rate{"),
            ["steerer_canary_success_rate{namespace=\"test\",target=\"a\"} 99.5"]
        );

        *held.lock().unwrap() = vec![summary("a", Phase::Succeeded, 0, Some(99.9))];
        assert!(samples(&telemetry, "steerer_canary_weight{").is_empty());
        assert!(samples(&telemetry, "steerer_canary_success_rate{").is_empty());
        assert_eq!(
            samples(&telemetry, "steerer_rollouts{phase=\"progressing\"}"),
            ["steerer_rollouts{phase=\"progressing\"} 0"]
        );
    }

    #[test]
    fn two_active_rollouts_of_one_target_give_one_series() {
        let telemetry = Telemetry::default();
        telemetry.set_rollouts_source(Arc::new(|| {
            vec![
                summary("a", Phase::Progressing, 30, None),
                summary("a", Phase::Pending, 0, None),
            ]
        }));
        assert_eq!(samples(&telemetry, "steerer_canary_weight{").len(), 1);
    }

    #[test]
    fn events_count_checks_by_result_and_endings_by_phase() {
        let telemetry = Telemetry::default();
        telemetry.record_events(&[
            event(EventKind::CheckPassed, Phase::Progressing),
            event(EventKind::WeightChanged, Phase::Progressing),
            event(EventKind::CheckPassed, Phase::Progressing),
            event(EventKind::CheckNoData, Phase::Progressing),
        ]);
        telemetry.record_events(&[
            event(EventKind::CheckFailed, Phase::RollingBack),
            event(EventKind::RollingBack, Phase::RollingBack),
        ]);
        telemetry.record_events(&[event(EventKind::RolledBack, Phase::RolledBack)]);
        telemetry.record_events(&[event(EventKind::Promoted, Phase::Promoting)]);
        telemetry.record_events(&[event(EventKind::Succeeded, Phase::Succeeded)]);
        assert_eq!(
            samples(&telemetry, "steerer_checks_total"),
            [
                "steerer_checks_total{result=\"failed\"} 1",
                "steerer_checks_total{result=\"no_data\"} 1",
                "steerer_checks_total{result=\"passed\"} 2",
            ]
        );
        let finished = samples(&telemetry, "steerer_rollouts_finished_total");
        assert!(
            finished.contains(&"steerer_rollouts_finished_total{phase=\"rolled_back\"} 1".into())
        );
        assert!(
            finished.contains(&"steerer_rollouts_finished_total{phase=\"succeeded\"} 1".into())
        );
        assert!(finished.contains(&"steerer_rollouts_finished_total{phase=\"aborted\"} 0".into()));
    }

    #[test]
    fn prometheus_queries_are_timed_and_failures_counted_by_reason() {
        let telemetry = Telemetry::default();
        telemetry.observe_prometheus_query(Duration::from_millis(20), None);
        telemetry.observe_prometheus_query(
            Duration::from_secs(3),
            Some(&MetricsError::Timeout(Duration::from_secs(3))),
        );
        let text = telemetry.encode().unwrap();
        assert!(
            text.contains("steerer_prometheus_query_duration_seconds_count 2\n"),
            "{text}"
        );
        assert!(
            text.contains("steerer_prometheus_query_duration_seconds_bucket{le=\"0.025\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("steerer_prometheus_query_errors_total{reason=\"timeout\"} 1\n"));
        assert!(text.contains("steerer_prometheus_query_errors_total{reason=\"query\"} 0\n"));
    }

    #[test]
    fn the_watch_gauge_goes_down_when_a_guard_drops_and_leader_is_zero_or_one() {
        let telemetry = Telemetry::default();
        let one = telemetry.watch_stream();
        let two = telemetry.clone().watch_stream();
        assert_eq!(
            samples(&telemetry, "steerer_watch_streams"),
            ["steerer_watch_streams 2"]
        );
        drop(one);
        drop(two);
        assert_eq!(
            samples(&telemetry, "steerer_watch_streams"),
            ["steerer_watch_streams 0"]
        );
        telemetry.set_leader(true);
        assert_eq!(samples(&telemetry, "steerer_leader"), ["steerer_leader 1"]);
        telemetry.set_leader(false);
        assert_eq!(samples(&telemetry, "steerer_leader"), ["steerer_leader 0"]);
    }
}
