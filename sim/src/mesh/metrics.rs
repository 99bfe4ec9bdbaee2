//! The mesh's request metrics, rendered in the Prometheus text format: Istio's
//! `istio_requests_total` and `istio_request_duration_milliseconds` histogram, and for the
//! same requests Linkerd's inbound `response_total` and `response_latency_ms` histogram, so
//! either observer can judge any workload. Counters only grow while the process lives.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

/// Istio's default bucket boundaries for request durations, in milliseconds.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The Linkerd proxy's bucket boundaries for response latencies, in milliseconds.
pub const LINKERD_LATENCY_BUCKETS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// Which proxy reports a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reporter {
    /// The client side (the ingress gateway).
    Source,
    /// The server side (the workload's sidecar).
    Destination,
}

impl Reporter {
    fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }

    /// Sidecars talk mTLS to each other; the gateway's own view of it is `unknown`.
    fn security_policy(self) -> &'static str {
        match self {
            Reporter::Source => "unknown",
            Reporter::Destination => "mutual_tls",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    labels: u32,
    reporter: Reporter,
    code: u16,
    flags: &'static str,
}

#[derive(Debug, Clone, Default)]
struct Series {
    count: u64,
    buckets: [u64; DURATION_BUCKETS.len()],
    sum: f64,
}

/// A Linkerd inbound latency histogram.
#[derive(Debug, Clone, Default)]
struct Latencies {
    count: u64,
    buckets: [u64; LINKERD_LATENCY_BUCKETS.len()],
    sum: f64,
}

/// Every series recorded so far.
#[derive(Debug, Default)]
pub struct Metrics {
    series: HashMap<SeriesKey, Series>,
    label_ids: HashMap<Arc<str>, u32>,
    label_sets: Vec<Arc<str>>,
    /// The Linkerd workload (an index of `inbound_sets`) of each Istio label set.
    inbound_of: Vec<u32>,
    inbound_ids: HashMap<Arc<str>, u32>,
    /// Linkerd's `direction="inbound",namespace=…,deployment=…` label sets. Several Istio
    /// label sets (one workload behind several Services) share one: Linkerd's proxy counts
    /// a workload's requests whichever Service they came through.
    inbound_sets: Vec<Arc<str>>,
    /// Inbound responses by (Linkerd workload, status code).
    responses: HashMap<(u32, u16), u64>,
    latencies: HashMap<u32, Latencies>,
}

impl Metrics {
    /// The id of a label set (source, destination and protocol labels), for [`Self::record`].
    pub fn intern(&mut self, labels: &Arc<str>) -> u32 {
        if let Some(id) = self.label_ids.get(labels) {
            return *id;
        }
        let id = u32::try_from(self.label_sets.len()).unwrap_or(u32::MAX);
        self.label_sets.push(Arc::clone(labels));
        self.label_ids.insert(Arc::clone(labels), id);
        let inbound: Arc<str> = Arc::from(inbound_labels(labels));
        let inbound_id = match self.inbound_ids.get(&inbound) {
            Some(id) => *id,
            None => {
                let id = u32::try_from(self.inbound_sets.len()).unwrap_or(u32::MAX);
                self.inbound_sets.push(Arc::clone(&inbound));
                self.inbound_ids.insert(inbound, id);
                id
            }
        };
        self.inbound_of.push(inbound_id);
        id
    }

    /// Records one request against an interned label set.
    pub fn record(
        &mut self,
        reporter: Reporter,
        labels: u32,
        code: u16,
        flags: &'static str,
        latency_ms: f64,
    ) {
        let key = SeriesKey {
            labels,
            reporter,
            code,
            flags,
        };
        let series = self.series.entry(key).or_default();
        series.count += 1;
        series.sum += latency_ms;
        if let Some(i) = DURATION_BUCKETS.iter().position(|le| latency_ms <= *le) {
            series.buckets[i] += 1;
        }
        // Linkerd's inbound proxy sits where Istio's destination sidecar does.
        if reporter == Reporter::Destination
            && let Some(inbound) = usize::try_from(labels)
                .ok()
                .and_then(|i| self.inbound_of.get(i))
                .copied()
        {
            *self.responses.entry((inbound, code)).or_default() += 1;
            let histogram = self.latencies.entry(inbound).or_default();
            histogram.count += 1;
            histogram.sum += latency_ms;
            if let Some(i) = LINKERD_LATENCY_BUCKETS
                .iter()
                .position(|le| latency_ms <= *le)
            {
                histogram.buckets[i] += 1;
            }
        }
    }

    /// Number of series (each counter has a histogram of the same labels).
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The Prometheus text exposition of every series, in a stable order.
    pub fn render(&self) -> String {
        let empty: Arc<str> = Arc::from("");
        let labels_of = |key: &SeriesKey| {
            usize::try_from(key.labels)
                .ok()
                .and_then(|i| self.label_sets.get(i))
                .unwrap_or(&empty)
        };
        let mut keys: Vec<&SeriesKey> = self.series.keys().collect();
        // Label sets are numbered in the order they first appeared, so this order is stable.
        keys.sort_by_key(|k| (k.labels, k.reporter, k.code, k.flags));
        let mut out = String::with_capacity(keys.len() * 4096);
        let label_set = |key: &SeriesKey| {
            format!(
                "reporter=\"{}\",{},response_code=\"{}\",grpc_response_status=\"\",response_flags=\"{}\",connection_security_policy=\"{}\"",
                key.reporter.as_str(),
                labels_of(key),
                key.code,
                key.flags,
                key.reporter.security_policy()
            )
        };
        let labels: Vec<String> = keys.iter().map(|k| label_set(k)).collect();
        out.push_str("# TYPE istio_requests_total counter\n");
        for (key, labels) in keys.iter().zip(&labels) {
            let _ = writeln!(
                out,
                "istio_requests_total{{{labels}}} {}",
                self.series[*key].count
            );
        }
        out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
        for (key, labels) in keys.iter().zip(&labels) {
            let series = &self.series[*key];
            let mut cumulative = 0;
            for (le, n) in DURATION_BUCKETS.iter().zip(series.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "istio_request_duration_milliseconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_bucket{{{labels},le=\"+Inf\"}} {}",
                series.count
            );
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_sum{{{labels}}} {}",
                series.sum
            );
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_count{{{labels}}} {}",
                series.count
            );
        }
        self.render_linkerd(&mut out);
        out
    }

    /// Linkerd's inbound series, after Istio's.
    fn render_linkerd(&self, out: &mut String) {
        let empty: Arc<str> = Arc::from("");
        let labels_of = |id: u32| {
            usize::try_from(id)
                .ok()
                .and_then(|i| self.inbound_sets.get(i))
                .unwrap_or(&empty)
        };
        let mut responses: Vec<(&(u32, u16), &u64)> = self.responses.iter().collect();
        responses.sort_by_key(|(key, _)| **key);
        out.push_str("# TYPE response_total counter\n");
        for ((id, code), count) in responses {
            // Linkerd's default classifier: an HTTP 5xx is a failure.
            let classification = if *code >= 500 { "failure" } else { "success" };
            let _ = writeln!(
                out,
                "response_total{{{},classification=\"{classification}\",status_code=\"{code}\"}} {count}",
                labels_of(*id)
            );
        }
        let mut latencies: Vec<(&u32, &Latencies)> = self.latencies.iter().collect();
        latencies.sort_by_key(|(id, _)| **id);
        out.push_str("# TYPE response_latency_ms histogram\n");
        for (id, histogram) in latencies {
            let labels = labels_of(*id);
            let mut cumulative = 0;
            for (le, n) in LINKERD_LATENCY_BUCKETS.iter().zip(histogram.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "response_latency_ms_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "response_latency_ms_bucket{{{labels},le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(out, "response_latency_ms_sum{{{labels}}} {}", histogram.sum);
            let _ = writeln!(
                out,
                "response_latency_ms_count{{{labels}}} {}",
                histogram.count
            );
        }
    }
}

/// Linkerd's labels of the workload an Istio label set names: the destination workload's
/// namespace and Deployment, as its inbound proxy reports them.
fn inbound_labels(istio: &str) -> String {
    format!(
        "direction=\"inbound\",namespace=\"{}\",deployment=\"{}\"",
        label_value(istio, "destination_workload_namespace").unwrap_or_default(),
        label_value(istio, "destination_workload").unwrap_or_default()
    )
}

/// The value of label `name` in a rendered label set, still escaped (it is rendered again
/// as it is).
fn label_value<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = labels;
    loop {
        let start = rest.find(name)?;
        let before = &rest[..start];
        let after = &rest[start + name.len()..];
        // A whole label name: at the start or after a comma, followed by `="`.
        if (before.is_empty() || before.ends_with(','))
            && let Some(value) = after.strip_prefix("=\"")
        {
            let mut escaped = false;
            for (i, c) in value.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => return Some(&value[..i]),
                    _ => escaped = false,
                }
            }
            return None;
        }
        rest = &rest[start + name.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let mut metrics = Metrics::default();
        let labels = metrics.intern(&Arc::from("destination_workload=\"web\""));
        metrics.record(Reporter::Destination, labels, 200, "-", 3.0);
        metrics.record(Reporter::Destination, labels, 200, "-", 40.0);
        let text = metrics.render();
        assert!(text.contains("istio_requests_total{reporter=\"destination\",destination_workload=\"web\",response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"} 2"));
        assert!(text.contains(",le=\"1\"} 0\n"));
        assert!(text.contains(",le=\"5\"} 1\n"));
        assert!(text.contains(",le=\"50\"} 2\n"));
        assert!(text.contains(",le=\"+Inf\"} 2\n"));
        assert!(text.contains("istio_request_duration_milliseconds_sum{reporter=\"destination\",destination_workload=\"web\",response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"} 43\n"));
    }

    #[test]
    fn linkerd_counts_the_same_inbound_requests_once_per_deployment_and_code() {
        let mut metrics = Metrics::default();
        // One Deployment behind two Services: two Istio label sets, one Linkerd workload.
        let a = metrics.intern(&Arc::from(
            "destination_workload=\"web\",destination_workload_namespace=\"shop\",destination_service_name=\"web\"",
        ));
        let b = metrics.intern(&Arc::from(
            "destination_workload=\"web\",destination_workload_namespace=\"shop\",destination_service_name=\"web-alt\"",
        ));
        metrics.record(Reporter::Destination, a, 200, "-", 3.0);
        metrics.record(Reporter::Destination, b, 200, "-", 40.0);
        metrics.record(Reporter::Destination, a, 503, "-", 7.0);
        // The gateway's view is outbound: Linkerd's inbound series leave it out.
        metrics.record(Reporter::Source, a, 200, "-", 3.5);
        let text = metrics.render();
        let labels = "direction=\"inbound\",namespace=\"shop\",deployment=\"web\"";
        assert!(
            text.contains(&format!(
                "response_total{{{labels},classification=\"success\",status_code=\"200\"}} 2\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "response_total{{{labels},classification=\"failure\",status_code=\"503\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "response_latency_ms_bucket{{{labels},le=\"3\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "response_latency_ms_bucket{{{labels},le=\"10\"}} 2\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "response_latency_ms_bucket{{{labels},le=\"50\"}} 3\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "response_latency_ms_bucket{{{labels},le=\"+Inf\"}} 3\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("response_latency_ms_sum{{{labels}}} 50\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("response_latency_ms_count{{{labels}}} 3\n")),
            "{text}"
        );
        assert_eq!(text.matches("response_total{").count(), 2, "{text}");
    }

    #[test]
    fn a_label_value_is_read_whole_and_by_its_whole_name() {
        let labels = r#"destination_workload_namespace="shop",destination_workload="a\"b",x="1""#;
        assert_eq!(label_value(labels, "destination_workload"), Some(r#"a\"b"#));
        assert_eq!(
            label_value(labels, "destination_workload_namespace"),
            Some("shop")
        );
        assert_eq!(label_value(labels, "workload"), None);
        assert_eq!(label_value(labels, "y"), None);
    }
}
