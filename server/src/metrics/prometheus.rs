//! The Prometheus query backend: its HTTP API (timeouts, parsing), and the grouping of the
//! analysis queries an observer (`metrics::observer`) writes. One grouped query per metric
//! serves every rollout: the success and request rates of all workloads come back in one
//! query, and the p99 latencies in a second made only when a rollout checks latency, each
//! shared by all the drivers that ask within a short freshness window. Each rollout is
//! judged by its own observer: a grouped query is one observer's, shared only by the
//! rollouts judged by it. The workloads
//! reported at all (what `StartRollout` checks first) come from one grouped query too,
//! shared for longer. Metric templates are the exception: each is the operator's own query
//! for one rollout, run as it is for every check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::Deserialize;
use tracing::Instrument;

use super::observer::{Observer, WorkloadLabels};
use super::{Coverage, Metrics, MetricsError};
use crate::domain::{BaselineSample, Sample, SideCounts};
use crate::telemetry::Telemetry;

type Table = HashMap<(String, String), f64>;
type Batch = Shared<BoxFuture<'static, Result<Arc<(Table, Table)>, MetricsError>>>;
type TableBatch = Shared<BoxFuture<'static, Result<Arc<Table>, MetricsError>>>;
/// Shared answers by (observer, window or lookback seconds).
type Batches<B> = Mutex<HashMap<(&'static str, u64), (Instant, B)>>;
/// One series of an answer: its labels, (namespace, workload) and value.
type Found = (HashMap<String, String>, (String, String), f64);

/// How long one answer to "which workloads reported at all" serves the starts that follow.
/// A workload missing from it is asked about on its own, so a stale answer can only say yes
/// to a workload that did report within the lookback.
const COVERAGE_FRESHNESS: Duration = Duration::from_secs(10);

/// Canary metrics from Prometheus, from the series each rollout's observer names.
pub struct PrometheusMetrics {
    api: QueryApi,
    observers: Vec<Arc<dyn Observer>>,
    namespaces: Vec<String>,
    freshness: Duration,
    batches: Batches<Batch>,
    latency_batches: Batches<TableBatch>,
    coverage_batches: Batches<TableBatch>,
}

impl PrometheusMetrics {
    /// `base` is Prometheus's URL (`http://host:9090`); `observers` write the queries, each
    /// those of the rollouts that name it;
    /// `namespaces` (validated DNS-1123 labels, empty = all) narrows the grouped queries;
    /// results younger than `freshness` are shared between rollouts.
    pub fn new(
        base: &str,
        timeout: Duration,
        observers: Vec<Arc<dyn Observer>>,
        namespaces: Vec<String>,
        freshness: Duration,
    ) -> Result<Self, MetricsError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| MetricsError::Client {
                source: Arc::new(e),
            })?;
        Ok(Self {
            api: QueryApi {
                http,
                url: format!("{}/api/v1/query", base.trim_end_matches('/')),
                timeout,
                telemetry: None,
            },
            observers,
            namespaces,
            freshness,
            batches: Mutex::new(HashMap::new()),
            latency_batches: Mutex::new(HashMap::new()),
            coverage_batches: Mutex::new(HashMap::new()),
        })
    }

    /// Times every query in `telemetry` and counts the failed ones.
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.api.telemetry = Some(telemetry);
        self
    }

    /// The observer named `name`, of those this backend was given.
    fn observer(&self, name: &str) -> Result<&dyn Observer, MetricsError> {
        self.observers
            .iter()
            .find(|o| o.name() == name)
            .map(|o| o.as_ref())
            .ok_or_else(|| MetricsError::UnknownObserver(name.to_owned()))
    }

    fn batch(&self, observer: &dyn Observer, window: Duration) -> Batch {
        let key = (observer.name(), window_secs(window));
        shared(&self.batches, key, self.freshness, |secs| {
            self.fetch(observer, secs)
        })
    }

    fn latency_batch(&self, observer: &dyn Observer, window: Duration) -> TableBatch {
        let key = (observer.name(), window_secs(window));
        shared(&self.latency_batches, key, self.freshness, |secs| {
            self.fetch_latency(observer, secs)
        })
    }

    fn fetch_latency(&self, observer: &dyn Observer, window_secs: u64) -> TableBatch {
        let api = self.api.clone();
        let promql = observer.latency_p99(window_secs, &self.namespaces);
        let labels = observer.labels();
        let at = evaluation_time(SystemTime::now());
        async move {
            let parse = |body: &str| parse_latency_vector(body, labels);
            Ok(Arc::new(api.run(&promql, &at, parse).await?))
        }
        .boxed()
        .shared()
    }

    fn fetch(&self, observer: &dyn Observer, window_secs: u64) -> Batch {
        let api = self.api.clone();
        // One query for both rates, so both are evaluated at the same instant: evaluated
        // apart, a scrape landing in between could make the non-5xx rate exceed the total (a
        // success rate over 100%).
        let promql = rates_query(observer, window_secs, &self.namespaces);
        let labels = observer.labels();
        let at = evaluation_time(SystemTime::now());
        async move {
            let parse = |body: &str| parse_rates(body, labels);
            Ok(Arc::new(api.run(&promql, &at, parse).await?))
        }
        .boxed()
        .shared()
    }

    /// Every workload of the served namespaces with a request series in the lookback.
    fn reported(&self, observer: &dyn Observer, lookback: Duration) -> TableBatch {
        shared(
            &self.coverage_batches,
            (observer.name(), window_secs(lookback)),
            COVERAGE_FRESHNESS,
            |secs| {
                let api = self.api.clone();
                let promql = observer.reported(&self.namespaces, secs);
                let labels = observer.labels();
                let at = evaluation_time(SystemTime::now());
                async move {
                    let parse = |body: &str| parse_vector(body, labels);
                    Ok(Arc::new(api.run(&promql, &at, parse).await?))
                }
                .boxed()
                .shared()
            },
        )
    }

    /// Whether the grouped answer can speak for `namespace`: it covers the served namespaces.
    fn serves(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }
}

impl Metrics for PrometheusMetrics {
    fn coverage<'a>(
        &'a self,
        observer: &'a str,
        namespace: &'a str,
        workloads: &'a [String],
        lookback: Duration,
    ) -> BoxFuture<'a, Result<Coverage, MetricsError>> {
        Box::pin(async move {
            let observer = self.observer(observer)?;
            // The starts of the same few seconds share one grouped answer; a workload it does
            // not list (new since, or the answer failed) is asked about on its own.
            if self.serves(namespace)
                && let Ok(all) = self.reported(observer, lookback).await
            {
                let reported = reported_in(&all, namespace, workloads);
                if !reported.is_empty() {
                    return Ok(Coverage {
                        reported,
                        scraping: true,
                    });
                }
            }
            let at = evaluation_time(SystemTime::now());
            let promql = observer.reported_of(namespace, workloads, window_secs(lookback));
            let labels = observer.labels();
            let found = self
                .api
                .run(&promql, &at, |body| parse_vector(body, labels))
                .await?;
            let reported = reported_in(&found, namespace, workloads);
            if !reported.is_empty() {
                return Ok(Coverage {
                    reported,
                    scraping: true,
                });
            }
            // Nothing for these workloads: is that because Prometheus has scraped nothing yet?
            let scraped = self.api.run("count(up)", &at, result_count).await?;
            Ok(Coverage {
                reported,
                scraping: scraped > 0,
            })
        })
    }

    fn sample<'a>(
        &'a self,
        observer: &'a str,
        namespace: &'a str,
        workload: &'a str,
        window: Duration,
        latency: bool,
    ) -> BoxFuture<'a, Result<Sample, MetricsError>> {
        let observer = match self.observer(observer) {
            Ok(observer) => observer,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let batch = self.batch(observer, window);
        let latency_batch = latency.then(|| self.latency_batch(observer, window));
        Box::pin(async move {
            let key = (namespace.to_owned(), workload.to_owned());
            let latencies = async {
                match latency_batch {
                    Some(batch) => batch.await.map(Some),
                    None => Ok(None),
                }
            };
            let (tables, latencies) = futures::try_join!(batch, latencies)?;
            Ok(Sample {
                latency_p99_ms: latencies.and_then(|t| t.get(&key).copied()),
                ..sample_from(tables.0.get(&key).copied(), tables.1.get(&key).copied())
            })
        })
    }

    fn baseline_sample<'a>(
        &'a self,
        observer: &'a str,
        namespace: &'a str,
        canary: &'a str,
        baseline: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<BaselineSample, MetricsError>> {
        Box::pin(async move {
            // Not grouped with other rollouts: each rollout's window starts when its own
            // analysis did. Two queries a check, both evaluated at the same instant.
            let observer = self.observer(observer)?;
            let workloads = [baseline.to_owned(), canary.to_owned()];
            let secs = window_secs(window);
            let requests_query = counts_query(observer, namespace, &workloads, secs);
            let latency_query = observer.latency_buckets(namespace, &workloads, secs);
            let at = evaluation_time(SystemTime::now());
            let labels = observer.labels();
            let (counts, buckets) = futures::try_join!(
                self.api
                    .run(&requests_query, &at, |body| series_of(body, labels)),
                self.api
                    .run(&latency_query, &at, |body| series_of(body, labels)),
            )?;
            let side = |workload: &str| side_counts(namespace, workload, &counts, &buckets);
            Ok(BaselineSample {
                canary: side(canary),
                baseline: side(baseline),
                requests_query,
                latency_query,
            })
        })
    }

    fn value<'a>(&'a self, promql: &'a str) -> BoxFuture<'a, Result<Option<f64>, MetricsError>> {
        value_of(&self.api, promql)
    }
}

/// The label of a [`counts_query`] answer saying which count a series is.
const COUNT_LABEL: &str = "steerer_count";

/// The requests and the failed requests of `workloads` over the trailing window in one query
/// (so both are evaluated at the same instant), labelled `steerer_count="requests"` and
/// `steerer_count="failures"`.
pub fn counts_query(
    observer: &dyn Observer,
    namespace: &str,
    workloads: &[String],
    window_secs: u64,
) -> String {
    let part = |failed_only: bool, name: &str| {
        format!(
            "label_replace({}, \"{COUNT_LABEL}\", \"{name}\", \"\", \"\")",
            observer.request_increase(namespace, workloads, window_secs, failed_only)
        )
    };
    format!("{} or {}", part(false, "requests"), part(true, "failures"))
}

/// One side's counts out of the answers of [`counts_query`] and of the bucket query. Values
/// that are not finite counts are left out (a missing side counts zero: no data).
fn side_counts(namespace: &str, workload: &str, counts: &[Found], buckets: &[Found]) -> SideCounts {
    let mine = |key: &(String, String)| key.0 == namespace && key.1 == workload;
    let mut side = SideCounts::default();
    for (labels, key, value) in counts {
        if !mine(key) || !value.is_finite() || *value < 0.0 {
            continue;
        }
        match labels.get(COUNT_LABEL).map(String::as_str) {
            Some("requests") => side.requests = *value,
            Some("failures") => side.failures = *value,
            _ => {}
        }
    }
    side.buckets = buckets
        .iter()
        .filter(|(_, key, value)| mine(key) && value.is_finite() && *value >= 0.0)
        .filter_map(|(labels, _, value)| {
            let le = labels.get("le")?.parse::<f64>().ok()?;
            (!le.is_nan()).then_some((le, *value))
        })
        .collect();
    side
}

/// What a check reads of an operator's query: one number, or nothing.
fn value_of(api: &QueryApi, promql: &str) -> BoxFuture<'static, Result<Option<f64>, MetricsError>> {
    let api = api.clone();
    let promql = promql.to_owned();
    let at = evaluation_time(SystemTime::now());
    async move { api.run(&promql, &at, parse_single).await }.boxed()
}

/// The batch of `key` (an observer and a number of seconds) younger than `freshness`, or a
/// new one from `fetch` (given the seconds).
fn shared<B: Clone>(
    batches: &Batches<B>,
    key: (&'static str, u64),
    freshness: Duration,
    fetch: impl FnOnce(u64) -> B,
) -> B {
    let now = Instant::now();
    let Ok(mut batches) = batches.lock() else {
        return fetch(key.1);
    };
    if let Some((started, batch)) = batches.get(&key)
        && now.duration_since(*started) < freshness
    {
        return batch.clone();
    }
    let batch = fetch(key.1);
    batches.insert(key, (now, batch.clone()));
    batch
}

/// A Prometheus `time` parameter: Unix seconds with millisecond precision.
pub fn evaluation_time(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    format!("{}.{:03}", since.as_secs(), since.subsec_millis())
}

/// Whole seconds of a query window, at least 1.
pub fn window_secs(window: Duration) -> u64 {
    window.as_secs_f64().ceil().max(1.0) as u64
}

/// The label of a [`rates_query`] answer saying which rate a series is.
const RATE_LABEL: &str = "steerer_rate";

/// Both rates of every workload in one query: the rates of requests that did not fail
/// labelled `steerer_rate="ok"`, the total rates `steerer_rate="total"`.
pub fn rates_query(observer: &dyn Observer, window_secs: u64, namespaces: &[String]) -> String {
    let part = |ok_only: bool, name: &str| {
        format!(
            "label_replace({}, \"{RATE_LABEL}\", \"{name}\", \"\", \"\")",
            observer.request_rates(window_secs, namespaces, ok_only)
        )
    };
    format!("{} or {}", part(true, "ok"), part(false, "total"))
}

/// Turns the non-5xx and total request rates of one workload into a sample: no total (or no
/// traffic) is no data; a missing non-5xx series with traffic means every request failed.
pub fn sample_from(ok: Option<f64>, total: Option<f64>) -> Sample {
    match total {
        Some(total) if total.is_finite() && total > 0.0 => {
            let ok = ok.unwrap_or(0.0);
            Sample {
                success_rate: Some(ok / total * 100.0),
                request_rate: Some(total),
                latency_p99_ms: None,
            }
        }
        Some(total) if total.is_finite() => Sample {
            success_rate: None,
            request_rate: Some(total),
            latency_p99_ms: None,
        },
        _ => Sample::default(),
    }
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: HashMap<String, String>,
    value: (serde_json::Value, String),
}

/// The workloads of `namespace` that `table` has a series for, in the order given.
fn reported_in(table: &Table, namespace: &str, workloads: &[String]) -> Vec<String> {
    workloads
        .iter()
        .filter(|w| table.contains_key(&(namespace.to_owned(), (*w).clone())))
        .cloned()
        .collect()
}

/// Parses an instant-vector response into (namespace, workload) -> value, the workload named
/// by `labels`, dropping NaN and infinite values (no data, never a pass).
pub fn parse_vector(body: &str, labels: WorkloadLabels) -> Result<Table, MetricsError> {
    parse_table(body, labels, |v| v.is_finite())
}

/// Parses a [`rates_query`] answer into its tables of requests that did not fail and of all
/// requests, dropping NaN and infinite values.
pub fn parse_rates(body: &str, labels: WorkloadLabels) -> Result<(Table, Table), MetricsError> {
    let (mut ok, mut total) = (Table::new(), Table::new());
    for (labels, key, value) in series_of(body, labels)? {
        if !value.is_finite() {
            continue;
        }
        match labels.get(RATE_LABEL).map(String::as_str) {
            Some("ok") => ok.insert(key, value),
            Some("total") => total.insert(key, value),
            _ => continue,
        };
    }
    Ok((ok, total))
}

/// Parses a latency answer: NaN (no requests in the window) is no data, but an infinite
/// p99 (the quantile fell in the `+Inf` bucket) is kept, so the check fails on it.
pub fn parse_latency_vector(body: &str, labels: WorkloadLabels) -> Result<Table, MetricsError> {
    parse_table(body, labels, |v| !v.is_nan())
}

fn parse_table(
    body: &str,
    labels: WorkloadLabels,
    keep: fn(&f64) -> bool,
) -> Result<Table, MetricsError> {
    Ok(series_of(body, labels)?
        .into_iter()
        .filter(|(_, _, value)| keep(value))
        .map(|(_, key, value)| (key, value))
        .collect())
}

/// The series of an instant-vector answer that name a namespace and a workload (by
/// `labels`): their labels, (namespace, workload) and value. Values that are not numbers are
/// left out.
fn series_of(body: &str, labels: WorkloadLabels) -> Result<Vec<Found>, MetricsError> {
    let response: Response = read(body)?;
    if response.status != "success" {
        return Err(MetricsError::Query(
            response.error.unwrap_or_else(|| response.status.clone()),
        ));
    }
    let data = response
        .data
        .ok_or_else(|| MetricsError::Response("no data".into()))?;
    if data.result_type != "vector" {
        return Err(MetricsError::Response(format!(
            "expected a vector, got {}",
            data.result_type
        )));
    }
    let mut found = Vec::with_capacity(data.result.len());
    for series in data.result {
        let (Some(ns), Some(wl)) = (
            series.metric.get(labels.namespace),
            series.metric.get(labels.workload),
        ) else {
            continue;
        };
        if let Ok(value) = series.value.1.parse::<f64>() {
            let key = (ns.clone(), wl.clone());
            found.push((series.metric, key, value));
        }
    }
    Ok(found)
}

#[derive(Deserialize)]
struct AnyResponse {
    status: String,
    #[serde(default)]
    data: Option<AnyData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct AnyData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// Parses the answer to an operator's query, which must yield one number: a scalar, or a
/// vector of at most one sample. An empty vector or NaN is no number (`None`: no data);
/// infinities are kept, so the check fails on them.
pub fn parse_single(body: &str) -> Result<Option<f64>, MetricsError> {
    let response: AnyResponse = read(body)?;
    if response.status != "success" {
        return Err(MetricsError::Query(
            response.error.unwrap_or_else(|| response.status.clone()),
        ));
    }
    let data = response
        .data
        .ok_or_else(|| MetricsError::Response("no data".into()))?;
    let sample = match data.result_type.as_str() {
        "scalar" => data.result,
        "vector" => {
            let series = data.result.as_array().cloned().unwrap_or_default();
            match series.as_slice() {
                [] => return Ok(None),
                [one] => one.get("value").cloned().unwrap_or_default(),
                many => {
                    return Err(MetricsError::Response(format!(
                        "the query yields {} series; a metric template must yield one number (aggregate it, e.g. with sum)",
                        many.len()
                    )));
                }
            }
        }
        other => {
            return Err(MetricsError::Response(format!(
                "the query yields a {other}; a metric template must yield one number"
            )));
        }
    };
    let value = sample
        .get(1)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| MetricsError::Response(format!("unreadable sample {sample}")))?
        .parse::<f64>()
        .map_err(|e| MetricsError::Value {
            source: Arc::new(e),
        })?;
    Ok((!value.is_nan()).then_some(value))
}

/// The number of results of an instant query.
fn result_count(body: &str) -> Result<usize, MetricsError> {
    let response: Response = read(body)?;
    if response.status != "success" {
        return Err(MetricsError::Query(
            response.error.unwrap_or_else(|| response.status.clone()),
        ));
    }
    Ok(response.data.map_or(0, |d| d.result.len()))
}

/// An answer's JSON, read as `T`.
fn read<'a, T: Deserialize<'a>>(body: &'a str) -> Result<T, MetricsError> {
    serde_json::from_str(body).map_err(|e| MetricsError::Unreadable {
        source: Arc::new(e),
    })
}

/// Prometheus's instant-query endpoint, with the telemetry that times each query.
#[derive(Clone)]
struct QueryApi {
    http: reqwest::Client,
    /// `…/api/v1/query`.
    url: String,
    timeout: Duration,
    telemetry: Option<Telemetry>,
}

impl QueryApi {
    /// Runs an instant query and reads its answer with `parse`: one query for the telemetry,
    /// failed if either the request or the answer did.
    async fn run<T>(
        &self,
        promql: &str,
        at: &str,
        parse: impl FnOnce(&str) -> Result<T, MetricsError>,
    ) -> Result<T, MetricsError> {
        let started = Instant::now();
        // A child of the step that asked first (a grouped answer serves the others too).
        let span = tracing::debug_span!("prometheus", query = promql);
        let result = query_body(&self.http, &self.url, promql, at, self.timeout)
            .instrument(span)
            .await
            .and_then(|body| parse(&body));
        if let Some(telemetry) = &self.telemetry {
            telemetry.observe_prometheus_query(started.elapsed(), result.as_ref().err());
        }
        result
    }
}

/// Runs an instant query and returns the answer's body (a Prometheus error answer included).
async fn query_body(
    http: &reqwest::Client,
    url: &str,
    promql: &str,
    at: &str,
    timeout: Duration,
) -> Result<String, MetricsError> {
    let response = http
        .get(url)
        .query(&[("query", promql), ("time", at)])
        .send()
        .await
        .map_err(|e| transport(e, timeout))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| transport(e, timeout))?;
    if !status.is_success() && !body.contains("\"status\"") {
        return Err(MetricsError::Query(format!("HTTP {status}")));
    }
    Ok(body)
}

/// A request that failed on the way: a timeout, or the cause kept.
fn transport(error: reqwest::Error, timeout: Duration) -> MetricsError {
    if error.is_timeout() {
        MetricsError::Timeout(timeout)
    } else {
        MetricsError::Http {
            source: Arc::new(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::observer::istio::Istio;
    use crate::metrics::observer::linkerd::Linkerd;

    const ISTIO: WorkloadLabels = WorkloadLabels {
        namespace: "destination_workload_namespace",
        workload: "destination_workload",
    };

    /// Metrics over Istio's and Linkerd's series from the Prometheus at `base`.
    fn istio_metrics(
        base: &str,
        timeout: Duration,
        namespaces: Vec<String>,
        freshness: Duration,
    ) -> PrometheusMetrics {
        let observers: Vec<Arc<dyn Observer>> = vec![Arc::new(Istio), Arc::new(Linkerd)];
        PrometheusMetrics::new(base, timeout, observers, namespaces, freshness).unwrap()
    }

    #[test]
    fn baseline_counts_come_from_one_valid_query_and_split_by_side() {
        let w = ["podinfo".to_owned(), "podinfo-canary".to_owned()];
        for observer in [&Istio as &dyn Observer, &Linkerd] {
            let q = counts_query(observer, "test", &w, 120);
            promql_parser::parser::parse(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(q.contains("[120s]") && q.contains("increase("), "{q}");
        }
        let counts = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"destination_workload_namespace":"test","destination_workload":"podinfo","steerer_count":"requests"},"value":[1,"6000.4"]},
            {"metric":{"destination_workload_namespace":"test","destination_workload":"podinfo","steerer_count":"failures"},"value":[1,"12"]},
            {"metric":{"destination_workload_namespace":"test","destination_workload":"podinfo-canary","steerer_count":"requests"},"value":[1,"2000"]},
            {"metric":{"destination_workload_namespace":"other","destination_workload":"podinfo-canary","steerer_count":"failures"},"value":[1,"99"]}
        ]}}"#;
        let buckets = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"le":"100","destination_workload_namespace":"test","destination_workload":"podinfo-canary"},"value":[1,"1500"]},
            {"metric":{"le":"+Inf","destination_workload_namespace":"test","destination_workload":"podinfo-canary"},"value":[1,"2000"]},
            {"metric":{"le":"50","destination_workload_namespace":"test","destination_workload":"podinfo-canary"},"value":[1,"NaN"]}
        ]}}"#;
        let counts = series_of(counts, ISTIO).unwrap();
        let buckets = series_of(buckets, ISTIO).unwrap();
        let ga = side_counts("test", "podinfo", &counts, &buckets);
        assert_eq!((ga.requests, ga.failures), (6000.4, 12.0));
        assert!(ga.buckets.is_empty());
        let canary = side_counts("test", "podinfo-canary", &counts, &buckets);
        // Another namespace's failures are not the canary's; a NaN bucket is left out.
        assert_eq!((canary.requests, canary.failures), (2000.0, 0.0));
        assert_eq!(canary.buckets.len(), 2);
        assert!(canary.buckets.contains(&(f64::INFINITY, 2000.0)));
    }

    #[test]
    fn latency_vector_drops_nan_but_keeps_inf_so_the_check_fails() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"destination_workload_namespace":"test","destination_workload":"a"},"value":[1,"47.5"]},
            {"metric":{"destination_workload_namespace":"test","destination_workload":"b"},"value":[1,"NaN"]},
            {"metric":{"destination_workload_namespace":"test","destination_workload":"c"},"value":[1,"+Inf"]}
        ]}}"#;
        let t = parse_latency_vector(body, ISTIO).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[&("test".to_owned(), "a".to_owned())], 47.5);
        assert!(t[&("test".to_owned(), "c".to_owned())].is_infinite());
    }

    /// A Prometheus stand-in answering every instant query with two workloads' values (p99s
    /// for latency queries), recording each query it was asked.
    async fn fake_prometheus() -> (String, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let latency = line.contains("histogram_quantile");
                    let rates = line.contains("label_replace");
                    log.lock().unwrap().push(line);
                    let series = |extra: &str, a: &str, b: &str| {
                        format!(
                            r#"{{"metric":{{"destination_workload_namespace":"test","destination_workload":"a"{extra}}},"value":[1,"{a}"]}},
                            {{"metric":{{"destination_workload_namespace":"test","destination_workload":"b"{extra}}},"value":[1,"{b}"]}}"#
                        )
                    };
                    let result = if latency {
                        series("", "47.5", "936")
                    } else if rates {
                        // a: 9 of 10 requests succeed; b: 10 of 10.
                        format!(
                            "{},{}",
                            series(r#","steerer_rate":"ok""#, "9", "10"),
                            series(r#","steerer_rate":"total""#, "10", "10")
                        )
                    } else {
                        series("", "1", "1")
                    };
                    let body = format!(
                        r#"{{"status":"success","data":{{"resultType":"vector","result":[{result}]}}}}"#
                    );
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        (base, seen)
    }

    #[tokio::test]
    async fn one_grouped_latency_query_serves_every_rollout_that_asks_and_none_is_made_otherwise() {
        let (base, seen) = fake_prometheus().await;
        let metrics = istio_metrics(
            &base,
            Duration::from_secs(5),
            vec!["test".into()],
            Duration::from_secs(60),
        );
        let window = Duration::from_secs(30);
        let plain = metrics
            .sample("istio", "test", "a", window, false)
            .await
            .unwrap();
        assert_eq!(plain.latency_p99_ms, None);
        assert_eq!(plain.success_rate, Some(90.0));
        assert_eq!(plain.request_rate, Some(10.0));
        let latency_queries = || {
            seen.lock()
                .unwrap()
                .iter()
                .filter(|q| q.contains("histogram_quantile"))
                .count()
        };
        assert_eq!(latency_queries(), 0, "no rollout asked for latency");

        let (a, b) = futures::join!(
            metrics.sample("istio", "test", "a", window, true),
            metrics.sample("istio", "test", "b", window, true)
        );
        assert_eq!(a.unwrap().latency_p99_ms, Some(47.5));
        assert_eq!(b.unwrap().latency_p99_ms, Some(936.0));
        let c = metrics
            .sample("istio", "test", "c", window, true)
            .await
            .unwrap();
        assert_eq!(c.latency_p99_ms, None, "no series: no data");
        assert_eq!(latency_queries(), 1, "{:?}", seen.lock().unwrap());
        // The success and request rates: still their one grouped query, shared by all.
        assert_eq!(seen.lock().unwrap().len(), 2, "{:?}", seen.lock().unwrap());
    }

    #[tokio::test]
    async fn rollouts_of_different_observers_never_share_a_query() {
        let (base, seen) = fake_prometheus().await;
        let metrics = istio_metrics(
            &base,
            Duration::from_secs(5),
            vec!["test".into()],
            Duration::from_secs(60),
        );
        let window = Duration::from_secs(30);
        let (istio, linkerd, istio_again) = futures::join!(
            metrics.sample("istio", "test", "a", window, true),
            metrics.sample("linkerd", "test", "a", window, true),
            metrics.sample("istio", "test", "b", window, true),
        );
        assert_eq!(istio.unwrap().success_rate, Some(90.0));
        assert_eq!(istio_again.unwrap().success_rate, Some(100.0));
        // The stand-in answers with Istio's labels only: nothing names a Linkerd deployment.
        assert_eq!(linkerd.unwrap(), Sample::default());
        let asked = seen.lock().unwrap().clone();
        assert_eq!(
            asked.len(),
            4,
            "rates and latency, once per observer: {asked:?}"
        );
        let of = |metric: &str| asked.iter().filter(|q| q.contains(metric)).count();
        assert_eq!(of("istio_requests_total"), 1, "{asked:?}");
        assert_eq!(
            of("istio_request_duration_milliseconds_bucket"),
            1,
            "{asked:?}"
        );
        assert_eq!(of("response_total"), 1, "{asked:?}");
        assert_eq!(of("response_latency_ms_bucket"), 1, "{asked:?}");
        assert!(
            asked
                .iter()
                .all(|q| !(q.contains("istio_") && q.contains("response_total"))),
            "{asked:?}"
        );
    }

    #[tokio::test]
    async fn an_unknown_observer_is_an_error_and_asks_nothing() {
        let (base, seen) = fake_prometheus().await;
        let metrics = istio_metrics(&base, Duration::from_secs(5), vec![], Duration::ZERO);
        let window = Duration::from_secs(30);
        let sample = metrics.sample("kuma", "test", "a", window, true).await;
        assert!(
            matches!(&sample, Err(MetricsError::UnknownObserver(name)) if name == "kuma"),
            "{sample:?}"
        );
        let coverage = metrics
            .coverage("kuma", "test", &["a".into()], window)
            .await;
        assert!(
            matches!(&coverage, Err(MetricsError::UnknownObserver(_))),
            "{coverage:?}"
        );
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_query_is_a_prometheus_span_inside_the_step_that_asked() {
        use crate::telemetry::logs::capture::{Parents, parents};
        let seen = Parents::default();
        let _spans = tracing::subscriber::set_default(parents(&seen));
        let (base, _) = fake_prometheus().await;
        let metrics = istio_metrics(&base, Duration::from_secs(5), vec![], Duration::ZERO);
        metrics
            .sample("istio", "test", "a", Duration::from_secs(30), false)
            .instrument(tracing::info_span!("step"))
            .await
            .unwrap();
        let queries: Vec<_> = seen
            .seen()
            .into_iter()
            .filter(|(name, _)| name == "prometheus")
            .collect();
        assert_eq!(
            queries,
            [("prometheus".to_owned(), Some("step".to_owned()))],
            "{:?}",
            seen.seen()
        );
    }

    #[tokio::test]
    async fn starts_share_one_answer_on_reported_workloads_and_ask_alone_about_the_others() {
        let (base, seen) = fake_prometheus().await;
        let metrics = istio_metrics(
            &base,
            Duration::from_secs(5),
            vec!["test".into()],
            Duration::ZERO,
        );
        let hour = Duration::from_secs(3600);
        let ab = ["a".to_owned(), "a-canary".to_owned()];
        let first = metrics.coverage("istio", "test", &ab, hour).await.unwrap();
        assert_eq!(first.reported, ["a"]);
        let b = ["b".to_owned(), "b-canary".to_owned()];
        assert_eq!(
            metrics
                .coverage("istio", "test", &b, hour)
                .await
                .unwrap()
                .reported,
            ["b"]
        );
        let grouped = |seen: &Arc<Mutex<Vec<String>>>| {
            seen.lock()
                .unwrap()
                .iter()
                .filter(|q| q.contains("group+by") || q.contains("group%20by"))
                .count()
        };
        assert_eq!(seen.lock().unwrap().len(), 1, "{:?}", seen.lock().unwrap());
        assert_eq!(grouped(&seen), 1, "{:?}", seen.lock().unwrap());
        // Not in the shared answer: asked about by name (the fake answers a and b again, so
        // c is not reported), then whether Prometheus scrapes anything at all.
        let c = ["c".to_owned(), "c-canary".to_owned()];
        let none = metrics.coverage("istio", "test", &c, hour).await.unwrap();
        assert!(none.reported.is_empty());
        assert!(none.scraping);
        let asked = seen.lock().unwrap().clone();
        assert_eq!(asked.len(), 3, "{asked:?}");
        assert!(asked[1].contains("c-canary"), "{asked:?}");
        // A namespace the server does not serve is never answered from the shared answer.
        let other = metrics.coverage("istio", "prod", &ab, hour).await.unwrap();
        assert!(other.reported.is_empty());
        assert_eq!(seen.lock().unwrap().len(), 5);
    }

    #[test]
    fn one_query_carries_both_rates_told_apart_by_a_label() {
        let q = rates_query(&Istio, 10, &["test".into()]);
        assert_eq!(
            q,
            format!(
                "label_replace({}, \"steerer_rate\", \"ok\", \"\", \"\") or label_replace({}, \"steerer_rate\", \"total\", \"\", \"\")",
                Istio.request_rates(10, &["test".into()], true),
                Istio.request_rates(10, &["test".into()], false)
            )
        );
        promql_parser::parser::parse(&q).unwrap();
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"destination_workload_namespace":"test","destination_workload":"a","steerer_rate":"ok"},"value":[1,"9"]},
            {"metric":{"destination_workload_namespace":"test","destination_workload":"a","steerer_rate":"total"},"value":[1,"10"]},
            {"metric":{"destination_workload_namespace":"test","destination_workload":"b","steerer_rate":"total"},"value":[1,"NaN"]},
            {"metric":{"destination_workload_namespace":"test","destination_workload":"c"},"value":[1,"3"]}
        ]}}"#;
        let (ok, total) = parse_rates(body, ISTIO).unwrap();
        let a = ("test".to_owned(), "a".to_owned());
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[&a], 9.0);
        assert_eq!(total.len(), 1, "NaN and unlabelled series are left out");
        assert_eq!(total[&a], 10.0);
        assert!(parse_rates(r#"{"status":"error","error":"bad"}"#, ISTIO).is_err());
    }

    #[tokio::test]
    async fn with_telemetry_every_query_is_timed_and_a_failed_one_counted_by_reason() {
        let (base, _) = fake_prometheus().await;
        let telemetry = Telemetry::default();
        let metrics = istio_metrics(&base, Duration::from_secs(5), vec![], Duration::ZERO)
            .with_telemetry(telemetry.clone());
        metrics
            .sample("istio", "test", "a", Duration::from_secs(30), false)
            .await
            .unwrap();
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let down = istio_metrics(&closed, Duration::from_secs(1), vec![], Duration::ZERO)
            .with_telemetry(telemetry.clone());
        let failed = down
            .coverage("istio", "test", &["a".to_owned()], Duration::from_secs(60))
            .await;
        assert!(
            matches!(failed, Err(MetricsError::Http { .. })),
            "{failed:?}"
        );
        // The cause is kept, not flattened into text.
        let failed = failed.unwrap_err();
        let cause = std::error::Error::source(&failed).expect("a cause");
        assert!(
            cause.downcast_ref::<Arc<reqwest::Error>>().is_some(),
            "{cause:?}"
        );
        // One query for the sample; the coverage tried the shared answer, then the workload
        // by name: both failed.
        let text = telemetry.encode().unwrap();
        assert!(
            text.contains("steerer_prometheus_query_duration_seconds_count 3\n"),
            "{text}"
        );
        assert!(text.contains("steerer_prometheus_query_errors_total{reason=\"query\"} 2\n"));
        assert!(text.contains("steerer_prometheus_query_errors_total{reason=\"timeout\"} 0\n"));
    }

    #[test]
    fn a_template_answer_is_one_number_or_nothing() {
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"12.5"]}}"#;
        assert_eq!(parse_single(scalar).unwrap(), Some(12.5));
        let one = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}"#;
        assert_eq!(parse_single(one).unwrap(), Some(0.25));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_single(empty).unwrap(), None);
        let nan = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        assert_eq!(parse_single(nan).unwrap(), None);
        let inf = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#;
        assert!(parse_single(inf).unwrap().unwrap().is_infinite());
        let two = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        let error = parse_single(two).unwrap_err().to_string();
        assert!(error.contains("yields 2 series"), "{error}");
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_single(matrix).is_err());
        let refused = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(matches!(parse_single(refused), Err(MetricsError::Query(m)) if m == "parse error"));
    }

    #[tokio::test]
    async fn a_template_query_is_sent_as_it_is() {
        let (base, seen) = fake_prometheus().await;
        let metrics = istio_metrics(&base, Duration::from_secs(5), vec![], Duration::ZERO);
        let error = metrics
            .value("sum by (x) (up{job=\"a\"})")
            .await
            .unwrap_err();
        // The stand-in answers every query with two series: too many for a template.
        assert!(error.to_string().contains("yields 2 series"), "{error}");
        let asked = seen.lock().unwrap().clone();
        assert_eq!(asked.len(), 1);
        assert!(asked[0].contains("query=sum+by+%28x%29"), "{asked:?}");
    }

    #[test]
    fn result_count_counts_results_and_reports_errors() {
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(result_count(empty).unwrap(), 0);
        let one = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"3"]}]}}"#;
        assert_eq!(result_count(one).unwrap(), 1);
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(result_count(error).is_err());
    }

    #[test]
    fn evaluation_time_is_unix_seconds_with_millis() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_042);
        assert_eq!(evaluation_time(at), "1700000000.042");
    }

    #[test]
    fn window_rounds_up_to_whole_seconds() {
        assert_eq!(window_secs(Duration::from_millis(1500)), 2);
        assert_eq!(window_secs(Duration::from_millis(10)), 1);
        assert_eq!(window_secs(Duration::from_secs(60)), 60);
    }

    #[test]
    fn vector_parses_and_drops_nan_and_inf() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"destination_workload_namespace":"test","destination_workload":"a"},"value":[1,"2.5"]},
            {"metric":{"destination_workload_namespace":"test","destination_workload":"b"},"value":[1,"NaN"]},
            {"metric":{"destination_workload_namespace":"test","destination_workload":"c"},"value":[1,"+Inf"]}
        ]}}"#;
        let t = parse_vector(body, ISTIO).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[&("test".to_owned(), "a".to_owned())], 2.5);
    }

    #[test]
    fn error_response_is_an_error() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(
            matches!(parse_vector(body, ISTIO), Err(MetricsError::Query(m)) if m == "parse error")
        );
        let garbled = parse_vector("{", ISTIO).unwrap_err();
        assert!(
            matches!(garbled, MetricsError::Unreadable { .. }),
            "{garbled:?}"
        );
        assert!(std::error::Error::source(&garbled).is_some());
    }

    #[test]
    fn samples_treat_missing_total_as_no_data_and_missing_ok_as_all_failed() {
        assert_eq!(sample_from(Some(1.0), None), Sample::default());
        assert_eq!(
            sample_from(None, Some(4.0)),
            Sample {
                success_rate: Some(0.0),
                request_rate: Some(4.0),
                latency_p99_ms: None,
            }
        );
        assert_eq!(sample_from(Some(3.0), Some(4.0)).success_rate, Some(75.0));
        assert_eq!(sample_from(Some(0.0), Some(0.0)).success_rate, None);
    }
}
