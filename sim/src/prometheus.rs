//! Starts a real Prometheus (the Debian package `prometheus`) scraping the simulator's
//! metrics, for tests and the demo, and queries it. Every query it answers is written to its
//! query log, so tests can check what was asked. The process dies with the handle.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long Prometheus may take to become ready and scrape every target once.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 5;

/// What to start.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    /// Addresses serving `/metrics` (job `istio-mesh`).
    pub targets: Vec<SocketAddr>,
    /// Scrape and rule-evaluation interval.
    pub scrape_interval: Duration,
    /// The `prometheus` binary; otherwise `$PROMETHEUS_BIN`, otherwise `prometheus` on `PATH`.
    pub binary: Option<PathBuf>,
}

impl PrometheusConfig {
    /// Scrapes `targets` every `scrape_interval` with the binary found on the machine.
    pub fn new(targets: Vec<SocketAddr>, scrape_interval: Duration) -> Self {
        Self {
            targets,
            scrape_interval,
            binary: None,
        }
    }
}

/// Failures starting or querying Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// No binary to run.
    #[error(
        "the prometheus binary was not found ({0}); install it with `apt-get install prometheus` or set PROMETHEUS_BIN"
    )]
    NotInstalled(String),
    /// Setting up its directory or starting the process failed.
    #[error("failed to start prometheus: {0}")]
    Io(#[from] std::io::Error),
    /// It exited or never became ready.
    #[error("prometheus did not start: {message}; its log ends with:\n{log}")]
    Start {
        /// What went wrong.
        message: String,
        /// The tail of its log.
        log: String,
    },
    /// An HTTP request to it failed.
    #[error("request to prometheus failed: {0}")]
    Http(#[from] reqwest::Error),
    /// It answered a query with an error.
    #[error("prometheus query {query:?} failed: {error_type}: {error}")]
    Query {
        /// The PromQL.
        query: String,
        /// `errorType` of the answer.
        error_type: String,
        /// `error` of the answer.
        error: String,
    },
    /// It answered something this client does not understand.
    #[error("unexpected answer from prometheus: {0}")]
    Decode(String),
}

/// One element of an instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series labels (empty for a scalar result).
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A running Prometheus. Dropping it kills the process and removes its data.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    http: reqwest::Client,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port and waits until it is ready and has scraped
    /// every target successfully once.
    pub async fn start(config: PrometheusConfig) -> Result<Prometheus, PrometheusError> {
        let binary = find_binary(config.binary.as_deref())?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let mut prometheus = Self::spawn(&binary, &config, http.clone())?;
            match prometheus.wait_ready().await {
                Ok(()) => {
                    prometheus.wait_first_scrape(config.targets.len()).await?;
                    return Ok(prometheus);
                }
                // Most likely another process took the port between the probe and the bind;
                // dropping this attempt kills it.
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| PrometheusError::Start {
            message: "no attempt made".into(),
            log: String::new(),
        }))
    }

    fn spawn(
        binary: &Path,
        config: &PrometheusConfig,
        http: reqwest::Client,
    ) -> Result<Prometheus, PrometheusError> {
        let dir = tempfile::Builder::new()
            .prefix("steerer-prometheus-")
            .tempdir()?;
        let config_path = dir.path().join("prometheus.yml");
        let query_log = dir.path().join(QUERY_LOG);
        std::fs::write(&config_path, render_config(config, &query_log))?;
        let addr = free_port()?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Prometheus {
            child,
            addr,
            http,
            dir,
        })
    }

    /// Base URL of its HTTP API (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every query answered so far, oldest first, as its query log records them (the tests'
    /// own queries included).
    pub fn queries(&self) -> Result<Vec<String>, PrometheusError> {
        let log = match std::fs::read_to_string(self.dir.path().join(QUERY_LOG)) {
            Ok(log) => log,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(parse_query_log(&log))
    }

    /// Runs an instant query (`/api/v1/query`) and returns its vector (or scalar) result.
    pub async fn query(&self, query: &str) -> Result<Vec<Sample>, PrometheusError> {
        let answer: Value = self
            .http
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", query)])
            .send()
            .await?
            .json()
            .await?;
        parse_query_answer(query, &answer)
    }

    async fn wait_ready(&mut self) -> Result<(), PrometheusError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(self.start_error(format!("it exited with {status}")));
            }
            if let Ok(resp) = self
                .http
                .get(format!("{}/-/ready", self.url()))
                .send()
                .await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.start_error(format!(
                    "/-/ready did not answer 200 within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_first_scrape(&mut self, targets: usize) -> Result<(), PrometheusError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(samples) = self.query("up{job=\"istio-mesh\"}").await
                && samples.len() == targets
                && samples.iter().all(|s| s.value == 1.0)
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(self.start_error(format!("it exited with {status}")));
            }
            if Instant::now() > deadline {
                return Err(self.start_error(format!(
                    "not every target was scraped successfully within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn start_error(&self, message: String) -> PrometheusError {
        let log =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        PrometheusError::Start {
            message,
            log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The binary to run: the configured one, `$PROMETHEUS_BIN`, or `prometheus` on `PATH`.
fn find_binary(configured: Option<&Path>) -> Result<PathBuf, PrometheusError> {
    if let Some(path) = configured {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(PrometheusError::NotInstalled(format!(
                "{} does not exist",
                path.display()
            )))
        };
    }
    if let Some(path) = std::env::var_os("PROMETHEUS_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(PrometheusError::NotInstalled(format!(
                "PROMETHEUS_BIN={} does not exist",
                path.display()
            )))
        };
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| PrometheusError::NotInstalled("no `prometheus` on PATH".into()))
}

/// A loopback port nobody listens on right now.
fn free_port() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.local_addr()
}

/// Prometheus durations: whole milliseconds (`1500ms`), at least one.
fn duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// The query log's file name in Prometheus's directory.
const QUERY_LOG: &str = "queries.log";

/// The PromQL of each line of a query log (JSON lines with `params.query`); a line being
/// written or of another shape is skipped.
fn parse_query_log(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|entry| {
            entry
                .pointer("/params/query")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

fn render_config(config: &PrometheusConfig, query_log: &Path) -> String {
    let targets: Vec<String> = config.targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  evaluation_interval: {interval}\n  query_log_file: {query_log:?}\nscrape_configs:\n  - job_name: istio-mesh\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{targets}]\n",
        interval = duration(config.scrape_interval),
        targets = targets.join(", ")
    )
}

fn parse_value(value: &Value) -> Result<f64, PrometheusError> {
    let text = value
        .get(1)
        .and_then(Value::as_str)
        .ok_or_else(|| PrometheusError::Decode(format!("sample value {value}")))?;
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        other => other
            .parse()
            .map_err(|_| PrometheusError::Decode(format!("sample value {other:?}"))),
    }
}

fn parse_query_answer(query: &str, answer: &Value) -> Result<Vec<Sample>, PrometheusError> {
    if answer.get("status").and_then(Value::as_str) != Some("success") {
        let text = |field: &str| {
            answer
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        return Err(PrometheusError::Query {
            query: query.to_owned(),
            error_type: text("errorType"),
            error: text("error"),
        });
    }
    let data = answer
        .get("data")
        .ok_or_else(|| PrometheusError::Decode("no data".into()))?;
    match data.get("resultType").and_then(Value::as_str) {
        Some("vector") => data
            .get("result")
            .and_then(Value::as_array)
            .ok_or_else(|| PrometheusError::Decode("vector without result".into()))?
            .iter()
            .map(|item| {
                let labels = item
                    .get("metric")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = parse_value(item.get("value").unwrap_or(&Value::Null))?;
                Ok(Sample { labels, value })
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample {
            labels: BTreeMap::new(),
            value: parse_value(data.get("result").unwrap_or(&Value::Null))?,
        }]),
        other => Err(PrometheusError::Decode(format!(
            "result type {other:?} (only instant vectors and scalars are supported)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_scrapes_every_target_at_the_interval() {
        let config = PrometheusConfig::new(
            vec!["127.0.0.1:9000".parse().unwrap()],
            Duration::from_secs(1),
        );
        let yaml = render_config(&config, Path::new("/tmp/p/queries.log"));
        assert!(yaml.contains("scrape_interval: 1000ms"));
        assert!(yaml.contains("query_log_file: \"/tmp/p/queries.log\"\n"));
        assert!(yaml.contains("job_name: istio-mesh"));
        assert!(yaml.contains("targets: [\"127.0.0.1:9000\"]"));
    }

    #[test]
    fn the_query_log_yields_each_query_and_skips_a_partial_line() {
        let log = concat!(
            r#"{"params":{"end":"2026-01-01T00:00:00Z","query":"sum(rate(response_total[30s]))","start":"2026-01-01T00:00:00Z","step":0},"stats":{},"ts":"2026-01-01T00:00:00Z"}"#,
            "\n",
            r#"{"params":{"query":"up"}}"#,
            "\n",
            r#"{"params":{"query":"#,
        );
        assert_eq!(
            parse_query_log(log),
            ["sum(rate(response_total[30s]))", "up"]
        );
    }

    #[test]
    fn vector_answers_become_samples_and_errors_become_errors() {
        let answer = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"destination_workload": "podinfo"}, "value": [1.0, "0.8"]},
            {"metric": {}, "value": [1.0, "NaN"]},
        ]}});
        let samples = parse_query_answer("q", &answer).unwrap();
        assert_eq!(samples[0].labels["destination_workload"], "podinfo");
        assert_eq!(samples[0].value, 0.8);
        assert!(samples[1].value.is_nan());
        let failed = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        assert!(matches!(
            parse_query_answer("q", &failed),
            Err(PrometheusError::Query { .. })
        ));
    }

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let err = find_binary(Some(Path::new("/nonexistent/prometheus"))).unwrap_err();
        assert!(err.to_string().contains("apt-get install prometheus"));
    }
}
