//! Istio's request metrics: `istio_requests_total` and the
//! `istio_request_duration_milliseconds` histogram, per series, rendered in the Prometheus
//! text format. Counters only grow while the process lives.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

/// Istio's default bucket boundaries for request durations, in milliseconds.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
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

/// Every series recorded so far.
#[derive(Debug, Default)]
pub struct Metrics {
    series: HashMap<SeriesKey, Series>,
    label_ids: HashMap<Arc<str>, u32>,
    label_sets: Vec<Arc<str>>,
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
        out
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
}
