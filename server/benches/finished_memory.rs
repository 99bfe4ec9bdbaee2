//! Benchmark: resident memory of one server process across many finished rollouts. Each
//! rollout is started and aborted through the gRPC API (the whole server over counting
//! in-memory adapters whose store keeps nothing, as the real store keeps records in the API
//! server), spread over a set of targets; the process's RSS is sampled every
//! `STEERER_BENCH_SAMPLE` finished rollouts. A server that keeps finished rollouts grows with
//! their number; one that lets them go stays flat.
//!
//! `cargo bench -p steerer-server --bench finished_memory [-- N]`; settings by environment:
//! `STEERER_BENCH_FINISHED` (10000), `STEERER_BENCH_TARGETS` (50), `STEERER_BENCH_SAMPLE` (1000).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::*;
use steerer::v1::AbortRolloutRequest;

fn main() -> anyhow::Result<()> {
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or_else(|| env_or("STEERER_BENCH_FINISHED", 10_000));
    let targets = env_or("STEERER_BENCH_TARGETS", 50usize).max(1);
    let sample = env_or("STEERER_BENCH_SAMPLE", 1000usize).max(1);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(n, targets, sample))
}

async fn run(n: usize, targets: usize, sample: usize) -> anyhow::Result<()> {
    print_header(
        "finished_memory",
        &[
            ("finished rollouts", n.to_string()),
            ("targets", targets.to_string()),
            ("sample every", sample.to_string()),
        ],
    );
    let world = World::with_targets(targets);
    let server = Server::start(&world).await?;
    let client = connect(server.addr).await?;
    let idle = rss_kib()?;
    println!("  RSS idle: {:.1} MiB", mib(idle));
    let finished = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let mut samples: Vec<(usize, u64)> = Vec::new();
    let mut workers = tokio::task::JoinSet::new();
    for t in 0..targets {
        let mut client = client.clone();
        let finished = finished.clone();
        let count = n / targets + usize::from(t < n % targets);
        workers.spawn(async move {
            for _ in 0..count {
                let request = start_request(&target(t), std::time::Duration::from_secs(60), 10, 3);
                let id = client.start_rollout(request).await?.into_inner().id;
                client
                    .abort_rollout(AbortRolloutRequest {
                        id,
                        reason: "benchmark".into(),
                    })
                    .await?;
                finished.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    let mut next = sample;
    while next <= n {
        while finished.load(Ordering::Relaxed) < next {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if workers.is_empty() {
                break;
            }
            if let Some(result) = workers.try_join_next() {
                result??;
            }
        }
        samples.push((next, rss_kib()?));
        next += sample;
    }
    while let Some(result) = workers.join_next().await {
        result??;
    }
    let elapsed = began.elapsed();
    println!("  finished   RSS (MiB)");
    for (done, rss) in &samples {
        println!("  {done:>8}   {:>8.1}", mib(*rss));
    }
    let growth = |from: &(usize, u64), to: &(usize, u64)| {
        let kib = to.1 as f64 - from.1 as f64;
        (kib / 1024.0, kib * 1024.0 / (to.0 - from.0).max(1) as f64)
    };
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let (mib_all, per_all) = growth(first, last);
        println!(
            "  growth from {} to {} finished: {mib_all:.1} MiB ({per_all:.0} bytes per finished rollout, allocator warm-up included)",
            first.0, last.0
        );
        // The second half: the allocator's arenas and the runtime have reached their size.
        let middle = &samples[samples.len() / 2];
        let (mib_half, per_half) = growth(middle, last);
        println!(
            "  growth over the second half ({} to {}): {mib_half:.1} MiB ({per_half:.0} bytes per finished rollout); flat (< 64 bytes each): {}",
            middle.0,
            last.0,
            verdict(per_half < 64.0)
        );
    }
    println!(
        "  {} rollouts started and aborted in {:.1} s ({:.0}/s); store writes {}",
        n,
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64().max(1e-9),
        world.store.writes.load(Ordering::Relaxed) + world.store.creates.load(Ordering::Relaxed)
    );
    println!("  peak RSS: {:.1} MiB", mib(peak_rss_kib()?));
    server.stop().await;
    Ok(())
}
