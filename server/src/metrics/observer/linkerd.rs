//! Linkerd's observer: a workload's requests, failures (responses its proxy classifies as
//! failures) and latency from the series the workload's own (inbound) proxy reports,
//! `response_total` and `response_latency_ms`.

use std::sync::Arc;

use super::{Observer, WorkloadLabels, promql_string, regex_escape};

/// The name operators pick it by.
pub const NAME: &str = "linkerd";

/// Linkerd's proxy metrics, as reported by the proxy in front of the workload (inbound).
#[derive(Debug, Clone, Copy, Default)]
pub struct Linkerd;

/// The factory's constructor.
pub fn observer() -> Arc<dyn Observer> {
    Arc::new(Linkerd)
}

const LABELS: WorkloadLabels = WorkloadLabels {
    namespace: "namespace",
    workload: "deployment",
};

/// The inbound selector of the served namespaces (`namespaces` must be validated DNS-1123
/// labels; empty = all). Outbound series count the same requests a second time, from the
/// caller's side, so they are left out.
fn served_selector(namespaces: &[String]) -> String {
    let mut selector = String::from("direction=\"inbound\"");
    if !namespaces.is_empty() {
        selector.push_str(",namespace=~");
        selector.push_str(&promql_string(&namespaces.join("|")));
    }
    selector
}

/// The inbound selector of `workloads` (validated names) of `namespace`.
fn workloads_selector(namespace: &str, workloads: &[String]) -> String {
    let alternatives: Vec<String> = workloads.iter().map(|w| regex_escape(w)).collect();
    format!(
        "direction=\"inbound\",namespace={},deployment=~{}",
        promql_string(namespace),
        promql_string(&alternatives.join("|"))
    )
}

impl Observer for Linkerd {
    fn name(&self) -> &'static str {
        NAME
    }

    fn labels(&self) -> WorkloadLabels {
        LABELS
    }

    fn requests_series(&self) -> &'static str {
        "response_total series (direction=\"inbound\")"
    }

    fn request_rates(&self, window_secs: u64, namespaces: &[String], ok_only: bool) -> String {
        let mut selector = served_selector(namespaces);
        if ok_only {
            selector.push_str(",classification!=\"failure\"");
        }
        format!(
            "sum by (namespace, deployment) (rate(response_total{{{selector}}}[{window_secs}s]))"
        )
    }

    fn latency_p99(&self, window_secs: u64, namespaces: &[String]) -> String {
        let selector = served_selector(namespaces);
        format!(
            "histogram_quantile(0.99, sum by (le, namespace, deployment) (rate(response_latency_ms_bucket{{{selector}}}[{window_secs}s])))"
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
            ",classification=\"failure\""
        } else {
            ""
        };
        format!(
            "sum by (namespace, deployment) (increase(response_total{{{}{failed}}}[{window_secs}s]))",
            workloads_selector(namespace, workloads)
        )
    }

    fn latency_buckets(&self, namespace: &str, workloads: &[String], window_secs: u64) -> String {
        format!(
            "sum by (le, namespace, deployment) (increase(response_latency_ms_bucket{{{}}}[{window_secs}s]))",
            workloads_selector(namespace, workloads)
        )
    }

    fn reported(&self, namespaces: &[String], lookback_secs: u64) -> String {
        format!(
            "group by (namespace, deployment) (last_over_time(response_total{{{}}}[{lookback_secs}s]))",
            served_selector(namespaces)
        )
    }

    fn reported_of(&self, namespace: &str, workloads: &[String], lookback_secs: u64) -> String {
        let alternatives: Vec<String> = workloads.iter().map(|w| regex_escape(w)).collect();
        format!(
            "group by (namespace, deployment) (last_over_time(response_total{{direction=\"inbound\",namespace={},deployment=~{}}}[{lookback_secs}s]))",
            promql_string(namespace),
            promql_string(&alternatives.join("|"))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_rates_count_inbound_responses_and_leave_out_failures_when_ok_only() {
        let q = Linkerd.request_rates(5, &["test".into(), "prod".into()], true);
        assert_eq!(
            q,
            "sum by (namespace, deployment) (rate(response_total{direction=\"inbound\",namespace=~\"test|prod\",classification!=\"failure\"}[5s]))"
        );
        let q = Linkerd.request_rates(60, &[], false);
        assert_eq!(
            q,
            "sum by (namespace, deployment) (rate(response_total{direction=\"inbound\"}[60s]))"
        );
    }

    #[test]
    fn latency_takes_the_inbound_p99_per_deployment() {
        let q = Linkerd.latency_p99(30, &["test".into(), "prod".into()]);
        assert_eq!(
            q,
            "histogram_quantile(0.99, sum by (le, namespace, deployment) (rate(response_latency_ms_bucket{direction=\"inbound\",namespace=~\"test|prod\"}[30s])))"
        );
        let q = Linkerd.latency_p99(60, &[]);
        assert!(q.contains("_bucket{direction=\"inbound\"}[60s]"), "{q}");
    }

    #[test]
    fn reported_asks_for_every_served_deployment() {
        let q = Linkerd.reported(&["test".into(), "prod".into()], 3600);
        assert_eq!(
            q,
            "group by (namespace, deployment) (last_over_time(response_total{direction=\"inbound\",namespace=~\"test|prod\"}[3600s]))"
        );
    }

    #[test]
    fn reported_of_asks_for_the_deployments_by_exact_name_over_the_lookback() {
        let q = Linkerd.reported_of("test", &["podinfo".into(), "podinfo-canary".into()], 3600);
        assert_eq!(
            q,
            "group by (namespace, deployment) (last_over_time(response_total{direction=\"inbound\",namespace=\"test\",deployment=~\"podinfo|podinfo-canary\"}[3600s]))"
        );
        let q = Linkerd.reported_of("test", &["a.b|c".into()], 60);
        assert!(q.contains(r#"deployment=~"a\\.b\\|c""#), "{q}");
    }

    #[test]
    fn counts_are_inbound_increases_and_failures_are_classified_by_the_proxy() {
        let w = ["podinfo".to_owned(), "podinfo-canary".to_owned()];
        assert_eq!(
            Linkerd.request_increase("test", &w, 90, true),
            "sum by (namespace, deployment) (increase(response_total{direction=\"inbound\",namespace=\"test\",deployment=~\"podinfo|podinfo-canary\",classification=\"failure\"}[90s]))"
        );
        assert_eq!(
            Linkerd.latency_buckets("test", &w, 90),
            "sum by (le, namespace, deployment) (increase(response_latency_ms_bucket{direction=\"inbound\",namespace=\"test\",deployment=~\"podinfo|podinfo-canary\"}[90s]))"
        );
    }

    #[test]
    fn no_query_asks_for_istio_series() {
        let ns = ["test".to_owned()];
        for q in [
            Linkerd.request_rates(30, &ns, true),
            Linkerd.latency_p99(30, &ns),
            Linkerd.reported(&ns, 60),
            Linkerd.reported_of("test", &["a".into()], 60),
            Linkerd.request_increase("test", &["a".into()], 60, true),
            Linkerd.latency_buckets("test", &["a".into()], 60),
        ] {
            assert!(!q.contains("istio_"), "{q}");
        }
    }
}
