//! Benchmark: N concurrent active rollouts on one server process (the whole gRPC server over
//! counting in-memory adapters, started through the real client), measured over a steady
//! window: CPU as a fraction of a core, resident memory idle and per rollout, and adapter
//! writes per step.
//!
//! `cargo bench -p steerer-server --bench rollouts [-- N]`; settings by environment:
//! `STEERER_BENCH_ROLLOUTS` (1000), `STEERER_BENCH_INTERVAL_SECS` (10),
//! `STEERER_BENCH_WINDOW_SECS` (60).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use steerer::v1::ListRolloutsRequest;

fn main() -> anyhow::Result<()> {
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or_else(|| env_or("STEERER_BENCH_ROLLOUTS", 1000));
    let interval = Duration::from_secs_f64(env_or("STEERER_BENCH_INTERVAL_SECS", 10.0));
    let window = Duration::from_secs_f64(env_or("STEERER_BENCH_WINDOW_SECS", 60.0));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(n, interval, window))
}

async fn run(n: usize, interval: Duration, window: Duration) -> anyhow::Result<()> {
    print_header(
        "rollouts",
        &[
            ("rollouts", n.to_string()),
            ("interval", format!("{interval:?}")),
            ("window", format!("{window:?}")),
        ],
    );
    let world = World::with_targets(n);
    let server = Server::start(&world).await?;
    let client = connect(server.addr).await?;
    client
        .clone()
        .list_rollouts(ListRolloutsRequest::default())
        .await?;

    // Idle: the server up with its client connected, no rollouts.
    let idle_window = Duration::from_secs(3);
    let cpu0 = cpu_time()?;
    tokio::time::sleep(idle_window).await;
    let idle_cpu = (cpu_time()? - cpu0).as_secs_f64() / idle_window.as_secs_f64();
    let idle_rss = rss_kib()?;

    let started = Instant::now();
    let ids = start_rollouts(&client, n, 16, |i| {
        start_request(&target(i), interval, 1, 5)
    })
    .await?;
    let start_time = started.elapsed();
    println!(
        "started {} rollouts in {:.2?} ({:.0}/s); load average {}",
        ids.len(),
        start_time,
        ids.len() as f64 / start_time.as_secs_f64(),
        loadavg()
    );

    // Every rollout takes its first step within the readiness poll, then one per interval.
    tokio::time::sleep(interval + Duration::from_secs(1)).await;

    let before = Snapshot::take(&world)?;
    let rss_start = rss_kib()?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = t0.elapsed();
    let after = Snapshot::take(&world)?;
    let rss_end = rss_kib()?;

    let active = client
        .clone()
        .list_rollouts(ListRolloutsRequest {
            active_only: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .rollouts
        .len();

    let cpu = (after.cpu - before.cpu).as_secs_f64() / elapsed.as_secs_f64();
    let steps = after.router_writes - before.router_writes;
    let per_step = |x: u64| x as f64 / steps.max(1) as f64;
    let expected_steps = n as f64 * elapsed.as_secs_f64() / interval.as_secs_f64();
    let per_rollout_kib = (rss_end.saturating_sub(idle_rss)) as f64 / n.max(1) as f64;
    let per_rollout_start_kib = (rss_start.saturating_sub(idle_rss)) as f64 / n.max(1) as f64;

    println!(
        "results ({n} rollouts, {active} still active at the end, load average {}):",
        loadavg()
    );
    println!(
        "  CPU over {:.1?}: {:.3} of a core ({:.1} ms per step); target < 0.5 core: {}",
        elapsed,
        cpu,
        (after.cpu - before.cpu).as_secs_f64() * 1000.0 / steps.max(1) as f64,
        verdict(cpu < 0.5)
    );
    println!("  CPU idle (no rollouts): {idle_cpu:.4} of a core");
    println!(
        "  steps in window: {steps} (expected about {expected_steps:.0}, one per rollout per interval)"
    );
    println!(
        "  per step: {:.2} router (VirtualService) writes, {:.2} state writes, {:.2} metrics queries, {:.2} Kubernetes Events, {:.2} Deployment writes",
        per_step(steps),
        per_step(after.store_writes - before.store_writes),
        per_step(after.queries - before.queries),
        per_step(after.events - before.events),
        per_step(after.workload_writes - before.workload_writes),
    );
    println!(
        "  memory idle: {:.1} MiB RSS (whole process: server, runtime, client, adapters); target < 30 MiB: {}",
        mib(idle_rss),
        verdict(mib(idle_rss) < 30.0)
    );
    println!(
        "  memory per rollout: {:.1} KiB at the end of the window ({:.1} KiB at its start; RSS {:.1} -> {:.1} MiB); target < 20 KiB: {}",
        per_rollout_kib,
        per_rollout_start_kib,
        mib(rss_start),
        mib(rss_end),
        verdict(per_rollout_kib < 20.0)
    );
    if steps > 0 {
        println!(
            "  memory growth during the window: {:.0} bytes per step",
            (rss_end as f64 - rss_start as f64) * 1024.0 / steps as f64
        );
    }
    println!("  peak RSS: {:.1} MiB", mib(peak_rss_kib()?));
    println!(
        "  inline sizes: Rollout {} B, RolloutEvent {} B (every buffered or logged event costs at least this)",
        std::mem::size_of::<steerer_server::domain::Rollout>(),
        std::mem::size_of::<steerer_server::domain::RolloutEvent>()
    );
    server.stop().await;
    Ok(())
}

struct Snapshot {
    cpu: Duration,
    router_writes: u64,
    store_writes: u64,
    queries: u64,
    events: u64,
    workload_writes: u64,
}

impl Snapshot {
    fn take(world: &World) -> anyhow::Result<Self> {
        Ok(Self {
            cpu: cpu_time()?,
            router_writes: world.router.writes.load(Ordering::Relaxed),
            store_writes: world.store.writes.load(Ordering::Relaxed),
            queries: world.metrics.queries.load(Ordering::Relaxed),
            events: world.workloads.events.load(Ordering::Relaxed),
            workload_writes: world.workloads.writes.load(Ordering::Relaxed),
        })
    }
}
