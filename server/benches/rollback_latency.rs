//! Benchmark: server time from a failing evaluation to traffic back on GA. F rollouts (1 s
//! interval, one failed check rolls back) run among B healthy background rollouts (10 s
//! interval) on the whole server over counting in-memory adapters; then every F canary
//! starts failing. The figure is, per rollout, the time from the metrics answer that failed
//! the check to the VirtualService write routing 0% to the canary, both stamped by the
//! adapters.
//!
//! `cargo bench -p steerer-server --bench rollback_latency [-- F]`; settings by environment:
//! `STEERER_BENCH_ROLLBACKS` (50), `STEERER_BENCH_BACKGROUND` (1000).

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use common::*;

fn main() -> anyhow::Result<()> {
    let failing = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or_else(|| env_or("STEERER_BENCH_ROLLBACKS", 50))
        .max(1);
    let background = env_or("STEERER_BENCH_BACKGROUND", 1000usize);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(failing, background))
}

async fn run(failing: usize, background: usize) -> anyhow::Result<()> {
    print_header(
        "rollback_latency",
        &[
            ("rolled-back rollouts", failing.to_string()),
            ("healthy background rollouts", background.to_string()),
        ],
    );
    let world = World::with_targets(failing + background);
    let server = Server::start(&world).await?;
    let client = connect(server.addr).await?;
    // Targets 0..failing fail later; the rest stay healthy.
    start_rollouts(&client, failing + background, 16, |i| {
        if i < failing {
            start_request(&target(i), Duration::from_secs(1), 1, 1)
        } else {
            start_request(&target(i), Duration::from_secs(10), 1, 5)
        }
    })
    .await?;
    // Past the readiness poll every rollout has taken its first step.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    world.router.record.store(true, Ordering::Relaxed);
    world.metrics.record.store(true, Ordering::Relaxed);
    let breach = Instant::now();
    for i in 0..failing {
        world.metrics.fail(&format!("{}-canary", target(i)));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let back_on_ga: HashMap<String, Instant> = loop {
        let done: HashMap<String, Instant> = world
            .router
            .log()
            .into_iter()
            .filter(|w| w.weight == 0)
            .map(|w| (w.virtual_service, w.at))
            .collect();
        if (0..failing).all(|i| done.contains_key(&target(i))) {
            break done;
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {failing} rollouts routed back to GA within 30s",
                done.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let queries = world.metrics.log();

    let mut server_time = Vec::new();
    let mut since_breach = Vec::new();
    for i in 0..failing {
        let t = target(i);
        let canary = format!("{t}-canary");
        let Some(&write) = back_on_ga.get(&t) else {
            continue;
        };
        let evaluated = queries
            .iter()
            .filter(|q| q.failing && q.workload == canary && q.at <= write)
            .map(|q| q.at)
            .max();
        if let Some(evaluated) = evaluated {
            server_time.push((write - evaluated).as_secs_f64() * 1000.0);
        }
        since_breach.push((write - breach).as_secs_f64() * 1000.0);
    }
    server_time.sort_by(f64::total_cmp);
    since_breach.sort_by(f64::total_cmp);
    let p99 = percentile(&server_time, 99.0);
    println!(
        "results ({} rollbacks among {background} active rollouts; load average {}):",
        server_time.len(),
        loadavg()
    );
    println!(
        "  failing evaluation -> VirtualService back on GA: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; target < 1 s: {}",
        percentile(&server_time, 50.0),
        p99,
        server_time.last().copied().unwrap_or(f64::NAN),
        verdict(server_time.last().is_some_and(|m| *m < 1000.0))
    );
    println!(
        "  breach -> back on GA, including the wait for the next check (1 s interval): p50 {:.0} ms, max {:.0} ms",
        percentile(&since_breach, 50.0),
        since_breach.last().copied().unwrap_or(f64::NAN)
    );
    server.stop().await;
    Ok(())
}
