//! Benchmark: the Kubernetes API requests and Prometheus queries a rollout costs. The real
//! server (`serve`: watch caches, Istio router, Rollout records, Prometheus metrics) runs
//! against the simulated cluster with the example workloads and a real Prometheus scraping
//! its mesh; the simulator counts API requests by verb and resource, and Prometheus counts
//! the queries it answered (`prometheus_http_requests_total`).
//!
//! `cargo bench -p steerer-server --bench api_calls [-- K]` runs K rollouts at once (default
//! 1; targets beyond the first are copies of the example workload) of 10 steps each;
//! `STEERER_BENCH_API_INTERVAL_MS` (1000) sets the analysis interval.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::{env_or, loadavg, print_header, verdict};
use steerer::v1::{EventType, RolloutEvent, StartRolloutRequest, WatchRolloutRequest};
use steerer_server::ServerConfig;
use steerer_server::domain::{AnalysisSettings, Strategy};
use steerer_sim::prometheus::{Prometheus, PrometheusConfig};
use steerer_sim::{Sim, SimConfig, Timing};
use tokio::net::TcpListener;

const NS: &str = "test";

type Counts = BTreeMap<(String, String), u64>;

fn main() -> anyhow::Result<()> {
    let k = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or_else(|| env_or("STEERER_BENCH_API_ROLLOUTS", 1))
        .max(1);
    let interval = Duration::from_millis(env_or("STEERER_BENCH_API_INTERVAL_MS", 1000));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(k, interval))
}

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts")
}

/// Copies of the example workload named `podinfo1`, `podinfo2`, … in a scratch directory.
fn copies(k: usize) -> anyhow::Result<Option<PathBuf>> {
    if k < 2 {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("steerer-bench-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(artifacts().join("workloads"))? {
        let path = entry?.path();
        // The Gateway API example's folder is not podinfo's.
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .context("odd manifest name")?;
        for i in 1..k {
            let renamed = text
                .replace("podinfo", &format!("podinfo{i}"))
                .replace(&format!("stefanprodan/podinfo{i}"), "stefanprodan/podinfo");
            std::fs::write(dir.join(format!("{i}-{file}")), renamed)?;
        }
    }
    Ok(Some(dir))
}

fn targets(k: usize) -> Vec<String> {
    std::iter::once("podinfo".to_owned())
        .chain((1..k).map(|i| format!("podinfo{i}")))
        .collect()
}

/// Queries Prometheus has answered on `/api/v1/query`.
async fn prometheus_queries(http: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("prometheus_http_requests_total{")
                && l.contains("handler=\"/api/v1/query\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

#[derive(Clone)]
struct Snap {
    counts: Counts,
    queries: u64,
}

impl Snap {
    fn minus(&self, earlier: &Snap) -> Snap {
        let mut counts = Counts::new();
        for (key, n) in &self.counts {
            let d = n - earlier.counts.get(key).copied().unwrap_or(0);
            if d > 0 {
                counts.insert(key.clone(), d);
            }
        }
        Snap {
            counts,
            queries: self.queries - earlier.queries,
        }
    }

    fn total(&self, writes: bool) -> u64 {
        self.counts
            .iter()
            .filter(|((verb, _), _)| is_write(verb) == writes)
            .map(|(_, n)| n)
            .sum()
    }

    fn describe(&self, per: f64) -> String {
        if self.counts.is_empty() {
            return "none".into();
        }
        self.counts
            .iter()
            .map(|((verb, resource), n)| format!("{verb} {resource}: {:.2}", *n as f64 / per))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

async fn run(k: usize, interval: Duration) -> anyhow::Result<()> {
    print_header(
        "api_calls",
        &[
            ("rollouts at once", k.to_string()),
            ("steps per rollout", "10 (10% each)".into()),
            ("analysis interval", format!("{interval:?}")),
        ],
    );
    let extra = copies(k)?;
    let a = artifacts();
    let mut apply = vec![
        a.join("istio"),
        a.join("steerer/05-rollouts-crd.yaml"),
        a.join("namespace"),
        a.join("workloads"),
    ];
    apply.extend(extra.clone());
    let sim = Sim::start(SimConfig {
        timing: Timing::fast(),
        apply,
        request_rate: 100.0,
        ..SimConfig::default()
    })
    .await?;
    let prometheus = Prometheus::start(PrometheusConfig::new(
        vec![sim.metrics_addr()],
        Duration::from_secs(1),
    ))
    .await?;
    let kube = kube::Client::try_from(sim.kube_config().await?)?;
    let config = ServerConfig {
        prometheus_url: prometheus.url(),
        defaults: AnalysisSettings {
            strategy: Strategy::Canary {
                step_weight: 10,
                max_weight: 100,
            },
            interval,
            success_rate_threshold: 95.0,
            max_failed_checks: 3,
            progress_deadline: Duration::from_secs(60),
            min_request_rate: 0.5,
            ..Default::default()
        },
        metrics_window: Duration::from_secs(4).max(interval),
        metrics_timeout: Duration::from_secs(3),
        sync_timeout: Duration::from_secs(10),
        // The budget is per step; the scale-down after the last one needs no wait here.
        scale_down_delay: Duration::ZERO,
        ..ServerConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(steerer_server::serve(config, listener, kube, async move {
        let _ = stopped.await;
    }));
    let client = common::connect(addr).await?;
    let http = reqwest::Client::new();
    let snap = || {
        let http = http.clone();
        let url = prometheus.url();
        let counts = sim.faults().counts();
        async move {
            anyhow::Ok(Snap {
                counts,
                queries: prometheus_queries(&http, &url).await?,
            })
        }
    };

    // Let start-up lists and watches settle, then watch an idle server.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let startup = snap().await?;
    let idle = Duration::from_secs(3);
    tokio::time::sleep(idle).await;
    let idle_before = snap().await?.minus(&startup);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, RolloutEvent)>();
    for (i, target) in targets(k).into_iter().enumerate() {
        let rollout = client
            .clone()
            .start_rollout(StartRolloutRequest {
                namespace: NS.into(),
                target,
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut c = client.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stream = c
                .watch_rollout(WatchRolloutRequest {
                    id: rollout.id,
                    from_sequence: 0,
                })
                .await?
                .into_inner();
            while let Some(event) = stream.message().await? {
                if tx.send((i, event)).is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        });
    }
    drop(tx);

    let started = snap().await?;
    let mut timeline: Vec<(usize, RolloutEvent, Snap)> = Vec::new();
    let mut finished = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60) + interval * 30;
    while finished.len() < k {
        let Ok(Some((i, event))) = tokio::time::timeout_at(deadline.into(), rx.recv()).await else {
            bail!(
                "rollouts did not finish in time; last events: {:?}",
                timeline
                    .iter()
                    .rev()
                    .take(5)
                    .map(|(_, e, _)| e.message.clone())
                    .collect::<Vec<_>>()
            );
        };
        if event.phase().is_terminal() {
            finished.push((i, event.phase()));
        }
        timeline.push((i, event, snap().await?));
    }
    // Kubernetes Events are recorded off the step's path: let the last ones land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ended = snap().await?;
    tokio::time::sleep(idle).await;
    let idle_after = snap().await?.minus(&ended);

    let steps: Vec<usize> = timeline
        .iter()
        .enumerate()
        .filter(|(_, (_, e, _))| e.r#type() == EventType::WeightChanged && e.canary_weight > 0)
        .map(|(n, _)| n)
        .collect();
    let (Some(&first), Some(&last)) = (steps.first(), steps.last()) else {
        bail!("no weight steps happened: {finished:?}");
    };
    let analyses = timeline[first + 1..=last]
        .iter()
        .filter(|(_, e, _)| {
            matches!(
                e.r#type(),
                EventType::CheckPassed | EventType::CheckFailed | EventType::CheckNoData
            )
        })
        .count();
    let region_steps = steps.len() - 1;
    let region = timeline[last].2.minus(&timeline[first].2);

    println!(
        "results ({k} rollouts ended {:?}; load average {}):",
        finished
            .iter()
            .map(|(_, p)| p.as_str_name())
            .collect::<Vec<_>>(),
        loadavg()
    );
    println!(
        "  idle before any rollout ({idle:?}): {} requests [{}], {} Prometheus queries; target 0: {}",
        idle_before.total(true) + idle_before.total(false),
        idle_before.describe(1.0),
        idle_before.queries,
        verdict(idle_before.total(true) + idle_before.total(false) == 0)
    );
    println!(
        "  start and preparation (start to first step, all rollouts): [{}], {} Prometheus queries",
        timeline[first].2.minus(&started).describe(1.0),
        timeline[first].2.queries - started.queries
    );
    if k == 1 {
        println!("  per step (between consecutive weight changes):");
        for pair in steps.windows(2) {
            let d = timeline[pair[1]].2.minus(&timeline[pair[0]].2);
            let kinds: Vec<&str> = timeline[pair[0] + 1..=pair[1]]
                .iter()
                .map(|(_, e, _)| e.r#type().as_str_name().trim_start_matches("EVENT_TYPE_"))
                .collect();
            println!(
                "    -> {:>3}%: [{}], {} Prometheus queries; events {}",
                timeline[pair[1]].1.canary_weight,
                d.describe(1.0),
                d.queries,
                kinds.join(" ")
            );
        }
    }
    let per = region_steps.max(1) as f64;
    let vs_writes = region
        .counts
        .iter()
        .filter(|((v, r), _)| is_write(v) && r == "virtualservices")
        .map(|(_, n)| *n)
        .sum::<u64>() as f64
        / per;
    let state_writes = region
        .counts
        .iter()
        .filter(|((v, r), _)| is_write(v) && r == "rollouts/status")
        .map(|(_, n)| *n)
        .sum::<u64>() as f64
        / per;
    let reads = region.total(false) as f64 / per;
    println!(
        "  average over {region_steps} steps: [{}]",
        region.describe(per)
    );
    let other_writes = region.total(true) as f64 / per - vs_writes - state_writes;
    println!(
        "  per step: {vs_writes:.2} VirtualService writes + {state_writes:.2} state (Rollout status) writes, {reads:.2} reads; target 1 + 1 writes, 0 reads: {}",
        // With several rollouts, steps straddling the window's ends blur the count by one
        // per rollout.
        verdict({
            let slack = (k - 1) as f64 / per + 0.01;
            (vs_writes - 1.0).abs() < slack && (state_writes - 1.0).abs() < slack && reads == 0.0
        })
    );
    println!(
        "  per step besides: {other_writes:.2} other writes (Kubernetes Events: a create or a series patch per rollout event); with them {:.2} writes per step",
        region.total(true) as f64 / per
    );
    let per_tick = region.queries as f64 / analyses.max(1) as f64;
    println!(
        "  Prometheus: {} queries for {analyses} analysis checks ({per_tick:.2} per check, {:.2} per step); target one per metric per tick across all rollouts",
        region.queries,
        region.queries as f64 / per
    );
    println!(
        "  promotion (last step to the end): [{}], {} Prometheus queries",
        ended.minus(&timeline[last].2).describe(1.0),
        ended.queries - timeline[last].2.queries
    );
    let release = ended.minus(&started);
    let event_writes = |verb: &str| {
        release
            .counts
            .get(&(verb.to_owned(), "events".to_owned()))
            .copied()
            .unwrap_or(0) as f64
            / k as f64
    };
    println!(
        "  per rollout, start to end: [{}]; {:.2} requests, of which {:.2} Event writes ({:.2} creates, {:.2} patches of a series)",
        release.describe(k as f64),
        (release.total(true) + release.total(false)) as f64 / k as f64,
        event_writes("create") + event_writes("patch"),
        event_writes("create"),
        event_writes("patch")
    );
    println!(
        "  idle after the rollouts ended ({idle:?}): {} requests [{}], {} Prometheus queries; target 0: {}",
        idle_after.total(true) + idle_after.total(false),
        idle_after.describe(1.0),
        idle_after.queries,
        verdict(idle_after.total(true) + idle_after.total(false) == 0)
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    sim.shutdown().await;
    drop(prometheus);
    if let Some(dir) = extra {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}
