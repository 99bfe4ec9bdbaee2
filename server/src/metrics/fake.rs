//! In-memory metrics for engine tests: a settable sample per workload and a query counter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{Coverage, Metrics, MetricsError};
use crate::domain::{BaselineSample, Sample};

/// What a template query yields.
type Value = Result<Option<f64>, MetricsError>;

/// Samples set by the test.
#[derive(Default)]
pub struct FakeMetrics {
    samples: Mutex<HashMap<(String, String), Result<Sample, MetricsError>>>,
    queries: Mutex<usize>,
    /// What `coverage` answers; `None`: every workload asked about is reported.
    coverage: Mutex<Option<Result<Coverage, MetricsError>>>,
    /// What `value` answers for a query containing each fragment.
    values: Mutex<Vec<(String, Value)>>,
    /// What `baseline_sample` answers; `None`: no series for either side.
    baseline: Mutex<Option<Result<BaselineSample, MetricsError>>>,
    /// The windows `baseline_sample` was asked for, in order.
    baseline_windows: Mutex<Vec<Duration>>,
    /// Every query `value` was asked.
    asked: Mutex<Vec<String>>,
    /// The observer of every `sample` and `coverage` asked, in order.
    observers: Mutex<Vec<String>>,
}

impl FakeMetrics {
    /// Sets what `sample` returns for a workload.
    pub fn set(&self, namespace: &str, workload: &str, sample: Result<Sample, MetricsError>) {
        if let Ok(mut s) = self.samples.lock() {
            s.insert((namespace.to_owned(), workload.to_owned()), sample);
        }
    }

    /// A healthy sample: `success_rate` percent at `request_rate` per second.
    pub fn healthy(success_rate: f64, request_rate: f64) -> Result<Sample, MetricsError> {
        Ok(Sample {
            success_rate: Some(success_rate),
            request_rate: Some(request_rate),
            latency_p99_ms: None,
        })
    }

    /// Sets what `baseline_sample` answers.
    pub fn set_baseline(&self, sample: Result<BaselineSample, MetricsError>) {
        if let Ok(mut b) = self.baseline.lock() {
            *b = Some(sample);
        }
    }

    /// The windows `baseline_sample` was asked for, in order.
    pub fn baseline_windows(&self) -> Vec<Duration> {
        self.baseline_windows
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    }

    /// Sets what `coverage` answers (`None`: every workload is reported).
    pub fn set_coverage(&self, coverage: Option<Result<Coverage, MetricsError>>) {
        if let Ok(mut c) = self.coverage.lock() {
            *c = coverage;
        }
    }

    /// Sets what `value` answers for queries that contain `fragment` (the last one set
    /// wins); other queries yield nothing.
    pub fn set_value(&self, fragment: &str, value: Result<Option<f64>, MetricsError>) {
        if let Ok(mut v) = self.values.lock() {
            v.push((fragment.to_owned(), value));
        }
    }

    /// The queries `value` was asked, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// The observers `sample` and `coverage` were asked by, in order.
    pub fn observers(&self) -> Vec<String> {
        self.observers.lock().map(|o| o.clone()).unwrap_or_default()
    }

    fn note_observer(&self, observer: &str) {
        if let Ok(mut o) = self.observers.lock() {
            o.push(observer.to_owned());
        }
    }

    /// Queries made so far.
    pub fn queries(&self) -> usize {
        self.queries.lock().map(|q| *q).unwrap_or(0)
    }
}

impl Metrics for FakeMetrics {
    fn coverage<'a>(
        &'a self,
        observer: &'a str,
        _namespace: &'a str,
        workloads: &'a [String],
        _lookback: Duration,
    ) -> BoxFuture<'a, Result<Coverage, MetricsError>> {
        self.note_observer(observer);
        let set = self.coverage.lock().ok().and_then(|c| c.clone());
        let answer = set.unwrap_or_else(|| {
            Ok(Coverage {
                reported: workloads.to_vec(),
                scraping: true,
            })
        });
        Box::pin(async move { answer })
    }

    fn sample<'a>(
        &'a self,
        observer: &'a str,
        namespace: &'a str,
        workload: &'a str,
        _window: Duration,
        latency: bool,
    ) -> BoxFuture<'a, Result<Sample, MetricsError>> {
        self.note_observer(observer);
        if let Ok(mut q) = self.queries.lock() {
            *q += 1;
        }
        let result = self
            .samples
            .lock()
            .ok()
            .and_then(|s| s.get(&(namespace.to_owned(), workload.to_owned())).cloned())
            .unwrap_or(Ok(Sample::default()))
            // Like a provider, never measures the latency of a rollout that does not check it.
            .map(|s| Sample {
                latency_p99_ms: s.latency_p99_ms.filter(|_| latency),
                ..s
            });
        Box::pin(async move { result })
    }

    fn baseline_sample<'a>(
        &'a self,
        observer: &'a str,
        _namespace: &'a str,
        _canary: &'a str,
        _baseline: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<BaselineSample, MetricsError>> {
        self.note_observer(observer);
        if let Ok(mut w) = self.baseline_windows.lock() {
            w.push(window);
        }
        let answer = self
            .baseline
            .lock()
            .ok()
            .and_then(|b| b.clone())
            .unwrap_or_else(|| Ok(BaselineSample::default()));
        Box::pin(async move { answer })
    }

    fn value<'a>(&'a self, promql: &'a str) -> BoxFuture<'a, Result<Option<f64>, MetricsError>> {
        if let Ok(mut a) = self.asked.lock() {
            a.push(promql.to_owned());
        }
        let answer = self
            .values
            .lock()
            .ok()
            .and_then(|v| {
                v.iter()
                    .rev()
                    .find(|(fragment, _)| promql.contains(fragment.as_str()))
                    .map(|(_, value)| value.clone())
            })
            .unwrap_or(Ok(None));
        Box::pin(async move { answer })
    }
}
