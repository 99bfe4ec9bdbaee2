//! Istio's observer: a workload's requests, failures (5xx responses) and latency from the
//! series its destination sidecars report, `istio_requests_total` and
//! `istio_request_duration_milliseconds`.

use std::sync::Arc;

use super::{Observer, WorkloadLabels, promql_string, regex_escape};

/// The name operators pick it by.
pub const NAME: &str = "istio";

/// Istio's standard metrics, as reported by the workload's own (destination) sidecar.
#[derive(Debug, Clone, Copy, Default)]
pub struct Istio;

/// The factory's constructor.
pub fn observer() -> Arc<dyn Observer> {
    Arc::new(Istio)
}

const LABELS: WorkloadLabels = WorkloadLabels {
    namespace: "destination_workload_namespace",
    workload: "destination_workload",
};

/// The destination-reported selector of the served namespaces (`namespaces` must be validated
/// DNS-1123 labels; empty = all).
fn served_selector(namespaces: &[String]) -> String {
    let mut selector = String::from("reporter=\"destination\"");
    if !namespaces.is_empty() {
        selector.push_str(",destination_workload_namespace=~");
        selector.push_str(&promql_string(&namespaces.join("|")));
    }
    selector
}

/// The destination-reported selector of `workloads` (validated names) of `namespace`.
fn workloads_selector(namespace: &str, workloads: &[String]) -> String {
    let alternatives: Vec<String> = workloads.iter().map(|w| regex_escape(w)).collect();
    format!(
        "reporter=\"destination\",destination_workload_namespace={},destination_workload=~{}",
        promql_string(namespace),
        promql_string(&alternatives.join("|"))
    )
}

impl Observer for Istio {
    fn name(&self) -> &'static str {
        NAME
    }

    fn labels(&self) -> WorkloadLabels {
        LABELS
    }

    fn requests_series(&self) -> &'static str {
        "istio_requests_total series (reporter=\"destination\")"
    }

    fn request_rates(&self, window_secs: u64, namespaces: &[String], ok_only: bool) -> String {
        let mut selector = served_selector(namespaces);
        if ok_only {
            selector.push_str(",response_code!~\"5.*\"");
        }
        format!(
            "sum by (destination_workload_namespace, destination_workload) (rate(istio_requests_total{{{selector}}}[{window_secs}s]))"
        )
    }

    fn latency_p99(&self, window_secs: u64, namespaces: &[String]) -> String {
        let selector = served_selector(namespaces);
        format!(
            "histogram_quantile(0.99, sum by (le, destination_workload_namespace, destination_workload) (rate(istio_request_duration_milliseconds_bucket{{{selector}}}[{window_secs}s])))"
        )
    }

    fn request_increase(
        &self,
        namespace: &str,
        workloads: &[String],
        window_secs: u64,
        failed_only: bool,
    ) -> String {
        let failed = if failed_only {
            ",response_code=~\"5.*\""
        } else {
            ""
        };
        format!(
            "sum by (destination_workload_namespace, destination_workload) (increase(istio_requests_total{{{}{failed}}}[{window_secs}s]))",
            workloads_selector(namespace, workloads)
        )
    }

    fn latency_buckets(&self, namespace: &str, workloads: &[String], window_secs: u64) -> String {
        format!(
            "sum by (le, destination_workload_namespace, destination_workload) (increase(istio_request_duration_milliseconds_bucket{{{}}}[{window_secs}s]))",
            workloads_selector(namespace, workloads)
        )
    }

    fn reported(&self, namespaces: &[String], lookback_secs: u64) -> String {
        format!(
            "group by (destination_workload_namespace, destination_workload) (last_over_time(istio_requests_total{{{}}}[{lookback_secs}s]))",
            served_selector(namespaces)
        )
    }

    fn reported_of(&self, namespace: &str, workloads: &[String], lookback_secs: u64) -> String {
        let alternatives: Vec<String> = workloads.iter().map(|w| regex_escape(w)).collect();
        format!(
            "group by (destination_workload_namespace, destination_workload) (last_over_time(istio_requests_total{{reporter=\"destination\",destination_workload_namespace={},destination_workload=~{}}}[{lookback_secs}s]))",
            promql_string(namespace),
            promql_string(&alternatives.join("|"))
        )
    }
}

/// The success-rate query of one workload (the original design's), for people checking a
/// rollout's numbers by hand. `namespace` and `workload` must be validated names.
pub fn success_rate_query(namespace: &str, workload: &str, window_secs: u64) -> String {
    let labels = format!(
        "reporter=\"destination\",destination_workload_namespace={},destination_workload={}",
        promql_string(namespace),
        promql_string(workload)
    );
    format!(
        "sum(rate(istio_requests_total{{{labels},response_code!~\"5.*\"}}[{window_secs}s])) / sum(rate(istio_requests_total{{{labels}}}[{window_secs}s]))"
    )
}

/// The p99 latency query of one workload, for people checking a rollout's numbers by hand.
/// `namespace` and `workload` must be validated names.
pub fn latency_query(namespace: &str, workload: &str, window_secs: u64) -> String {
    format!(
        "histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_workload_namespace={},destination_workload={}}}[{window_secs}s])))",
        promql_string(namespace),
        promql_string(workload)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_rates_filter_served_namespaces_and_5xx() {
        let q = Istio.request_rates(5, &["test".into(), "prod".into()], true);
        assert_eq!(
            q,
            "sum by (destination_workload_namespace, destination_workload) (rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=~\"test|prod\",response_code!~\"5.*\"}[5s]))"
        );
        let q = Istio.request_rates(60, &[], false);
        assert!(q.contains("{reporter=\"destination\"}[60s]"));
    }

    #[test]
    fn latency_takes_the_destination_p99_per_workload() {
        let q = Istio.latency_p99(30, &["test".into(), "prod".into()]);
        assert_eq!(
            q,
            "histogram_quantile(0.99, sum by (le, destination_workload_namespace, destination_workload) (rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\",destination_workload_namespace=~\"test|prod\"}[30s])))"
        );
        let q = Istio.latency_p99(60, &[]);
        assert!(q.contains("_bucket{reporter=\"destination\"}[60s]"), "{q}");
    }

    #[test]
    fn reported_asks_for_every_served_workload() {
        let q = Istio.reported(&["test".into(), "prod".into()], 3600);
        assert_eq!(
            q,
            "group by (destination_workload_namespace, destination_workload) (last_over_time(istio_requests_total{reporter=\"destination\",destination_workload_namespace=~\"test|prod\"}[3600s]))"
        );
    }

    #[test]
    fn reported_of_asks_for_the_workloads_by_exact_name_over_the_lookback() {
        let q = Istio.reported_of("test", &["podinfo".into(), "podinfo-canary".into()], 3600);
        assert_eq!(
            q,
            "group by (destination_workload_namespace, destination_workload) (last_over_time(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo|podinfo-canary\"}[3600s]))"
        );
        // Never valid names, but escaped all the same: a regex cannot widen the match.
        let q = Istio.reported_of("test", &["a.b|c".into()], 60);
        assert!(q.contains(r#"destination_workload=~"a\\.b\\|c""#), "{q}");
    }

    #[test]
    fn counts_are_increases_of_the_named_workloads_and_failures_are_5xx() {
        let w = ["podinfo".to_owned(), "podinfo-canary".to_owned()];
        assert_eq!(
            Istio.request_increase("test", &w, 90, true),
            "sum by (destination_workload_namespace, destination_workload) (increase(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo|podinfo-canary\",response_code=~\"5.*\"}[90s]))"
        );
        assert!(
            !Istio
                .request_increase("test", &w, 90, false)
                .contains("response_code")
        );
        assert_eq!(
            Istio.latency_buckets("test", &w, 90),
            "sum by (le, destination_workload_namespace, destination_workload) (increase(istio_request_duration_milliseconds_bucket{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo|podinfo-canary\"}[90s]))"
        );
    }

    #[test]
    fn queries_by_hand_quote_values() {
        let q = success_rate_query("test", "podinfo-canary", 60);
        assert!(q.contains("destination_workload=\"podinfo-canary\""));
        assert!(q.contains("destination_workload_namespace=\"test\""));
        let q = latency_query("test", "podinfo-canary", 60);
        assert_eq!(
            q,
            "histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=\"podinfo-canary\"}[60s])))"
        );
    }
}
