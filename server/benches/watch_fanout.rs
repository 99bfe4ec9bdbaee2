//! Benchmark: M open WatchRollout streams on a few rollouts. The server (over counting
//! in-memory adapters) runs in this process; the watchers run in a child process (this same
//! binary with `--watch-client`), so the server's resident memory and CPU are its own. Each
//! step of a rollout commits events; the latency is from an event's `time` (stamped when the
//! step is decided, before it is acted on and persisted) to its receipt by a watcher.
//!
//! `cargo bench -p steerer-server --bench watch_fanout [-- M]`; settings by environment:
//! `STEERER_BENCH_STREAMS` (10000), `STEERER_BENCH_WATCHED_ROLLOUTS` (10),
//! `STEERER_BENCH_CONNECTIONS` (8), `STEERER_BENCH_INTERVAL_MS` (1000),
//! `STEERER_BENCH_WINDOW_SECS` (20), `STEERER_BENCH_STAGGER` (1: the rollouts' steps are
//! spread over the interval; 0: they all step at once, so every watcher's events come in
//! one burst), `STEERER_BENCH_CHECK_TICK` (0: off; 5 as the server's default lines every
//! rollout's steps up on shared ticks, so the events of all ten come within the tick's slack).

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use common::*;
use steerer::v1::rollout_service_client::RolloutServiceClient;
use steerer::v1::{GetRolloutRequest, WatchRolloutRequest};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const CLIENT_FLAG: &str = "--watch-client";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(i) = args.iter().position(|a| a == CLIENT_FLAG) {
        return runtime.block_on(client_main(&args[i + 1..]));
    }
    let streams = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or_else(|| env_or("STEERER_BENCH_STREAMS", 10_000));
    let settings = Settings {
        streams,
        rollouts: env_or("STEERER_BENCH_WATCHED_ROLLOUTS", 10usize).max(1),
        connections: env_or("STEERER_BENCH_CONNECTIONS", 8usize).max(1),
        interval: Duration::from_millis(env_or("STEERER_BENCH_INTERVAL_MS", 1000)),
        window: Duration::from_secs_f64(env_or("STEERER_BENCH_WINDOW_SECS", 20.0)),
        stagger: env_or("STEERER_BENCH_STAGGER", 1u8) != 0,
    };
    runtime.block_on(server_main(settings))
}

struct Settings {
    streams: usize,
    rollouts: usize,
    connections: usize,
    interval: Duration,
    window: Duration,
    stagger: bool,
}

async fn server_main(s: Settings) -> anyhow::Result<()> {
    print_header(
        "watch_fanout",
        &[
            ("streams", s.streams.to_string()),
            ("rollouts watched", s.rollouts.to_string()),
            ("HTTP/2 connections", s.connections.to_string()),
            ("step interval", format!("{:?}", s.interval)),
            ("window", format!("{:?}", s.window)),
            ("steps staggered over the interval", s.stagger.to_string()),
        ],
    );
    let world = World::with_targets(s.rollouts);
    let server = Server::start(&world).await?;
    let client = connect(server.addr).await?;
    // One percent per step: the rollouts keep stepping (and committing events) throughout.
    // Staggered, their steps spread over the interval; unstaggered, they all step at once
    // and every watcher gets its events in the same burst (the worst case).
    let mut ids = Vec::with_capacity(s.rollouts);
    for i in 0..s.rollouts {
        let request = start_request(&target(i), s.interval, 1, 5);
        ids.push(client.clone().start_rollout(request).await?.into_inner().id);
        if s.stagger {
            tokio::time::sleep(s.interval / u32::try_from(s.rollouts).unwrap_or(1)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib()?;

    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg(CLIENT_FLAG)
        .arg(server.addr.to_string())
        .arg(s.streams.to_string())
        .arg(s.connections.to_string())
        .arg(s.window.as_secs_f64().to_string())
        .args(&ids)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no child stdout")?;
    let mut lines = BufReader::new(stdout).lines();

    let opening = Instant::now();
    let mut cpu_start = None;
    let mut rss_open = None;
    let mut report = Vec::new();
    let deadline = Instant::now() + s.window + Duration::from_secs(120);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .context("watch client did not finish in time")??;
        let Some(line) = line else { break };
        if let Some(open) = line.strip_prefix("OPEN ") {
            let rss = rss_kib()?;
            rss_open = Some(rss);
            cpu_start = Some((cpu_time()?, Instant::now()));
            println!(
                "{open} streams open after {:.2?}; server RSS {:.1} -> {:.1} MiB",
                opening.elapsed(),
                mib(rss_before),
                mib(rss)
            );
        } else {
            report.push(line);
        }
    }
    let status = child.wait().await?;
    let (cpu0, t0) = cpu_start.context("the watch client never opened its streams")?;
    let cpu = (cpu_time()? - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    if !status.success() {
        bail!("watch client failed ({status}): {}", report.join("\n"));
    }
    let steps = world.router.writes.load(Ordering::Relaxed);
    println!(
        "results ({} streams on {} connections, load average {}):",
        s.streams,
        s.connections,
        loadavg()
    );
    for line in &report {
        println!("  {line}");
    }
    if let Some(rss_open) = rss_open {
        let per_stream = rss_open.saturating_sub(rss_before) as f64 / s.streams.max(1) as f64;
        println!(
            "  server memory per open stream: {per_stream:.2} KiB; target < 64 KiB: {}",
            verdict(per_stream < 64.0)
        );
    }
    println!("  server CPU while streaming: {cpu:.3} of a core ({steps} steps committed in all)");
    server.stop().await;
    Ok(())
}

/// The watchers: opens the streams, says `OPEN n`, then records latencies for the window and
/// prints the summary lines.
async fn client_main(args: &[String]) -> anyhow::Result<()> {
    let [addr, streams, connections, window, ids @ ..] = args else {
        bail!("usage: {CLIENT_FLAG} ADDR STREAMS CONNECTIONS WINDOW_SECS ID...");
    };
    let addr = addr.parse()?;
    let streams: usize = streams.parse()?;
    let connections: usize = connections.parse()?;
    let window = Duration::from_secs_f64(window.parse()?);
    if ids.is_empty() {
        bail!("no rollout ids");
    }
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(connect(addr).await?);
    }
    let opened = Arc::new(AtomicUsize::new(0));
    // Events committed before this instant (nanoseconds since the epoch) are not measured:
    // it is set once every stream is open.
    let start = Arc::new(AtomicI64::new(i64::MAX));
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let client = clients[i % clients.len()].clone();
        let id = ids[i % ids.len()].clone();
        tasks.push(tokio::spawn(watch(
            client,
            id,
            opened.clone(),
            start.clone(),
            stop.clone(),
        )));
    }
    let open_deadline = Instant::now() + Duration::from_secs(60);
    while opened.load(Ordering::Relaxed) < streams {
        if Instant::now() > open_deadline {
            bail!(
                "only {} of {streams} streams opened within 60s (a per-connection stream limit?)",
                opened.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.store(
        Utc::now().timestamp_nanos_opt().unwrap_or(0),
        Ordering::Relaxed,
    );
    println!("OPEN {streams}");
    let cpu0 = cpu_time()?;
    tokio::time::sleep(window).await;
    stop.cancel();
    let client_cpu = (cpu_time()? - cpu0).as_secs_f64() / window.as_secs_f64();
    let mut latencies = Vec::new();
    let mut per_stream = Vec::with_capacity(streams);
    let mut failures = Vec::new();
    for task in tasks {
        match task.await? {
            Ok(l) => {
                per_stream.push(l.len());
                latencies.extend(l);
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    latencies.sort_by(f64::total_cmp);
    let fewest = per_stream.iter().min().copied().unwrap_or(0);
    let most = per_stream.iter().max().copied().unwrap_or(0);
    println!(
        "events received in {window:?}: {} ({fewest}..={most} per stream), streams failed: {}{}",
        latencies.len(),
        failures.len(),
        failures
            .first()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
    let p99 = percentile(&latencies, 99.0);
    println!(
        "commit-to-client latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; target p99 < 50 ms: {}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        p99,
        latencies.last().copied().unwrap_or(f64::NAN),
        verdict(p99 < 50.0)
    );
    println!("watch client process CPU (same machine): {client_cpu:.3} of a core");
    Ok(())
}

/// One watcher: follows a rollout from its next event and returns the latencies (ms) of
/// the events committed inside the window.
async fn watch(
    mut client: RolloutServiceClient<Channel>,
    id: String,
    opened: Arc<AtomicUsize>,
    start: Arc<AtomicI64>,
    stop: CancellationToken,
) -> anyhow::Result<Vec<f64>> {
    let from = client
        .get_rollout(GetRolloutRequest { id: id.clone() })
        .await?
        .into_inner()
        .last_sequence
        + 1;
    let mut stream = client
        .watch_rollout(WatchRolloutRequest {
            id,
            from_sequence: from,
        })
        .await?
        .into_inner();
    opened.fetch_add(1, Ordering::Relaxed);
    let mut latencies = Vec::new();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = stream.message() => message,
        };
        let Some(event) = message? else { break };
        let now = Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let Some(time) = event.time else { continue };
        let committed = time.seconds * 1_000_000_000 + i64::from(time.nanos);
        if committed >= start.load(Ordering::Relaxed) {
            latencies.push((now - committed) as f64 / 1e6);
        }
    }
    Ok(latencies)
}
