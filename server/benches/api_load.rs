//! Benchmark: the gRPC API under load from ghz, a real gRPC load tool (Go module
//! github.com/bojand/ghz, built into the project's cache by `tests/versus/build-ghz.sh`; it
//! finds the methods through server reflection). The whole server runs in this process over
//! counting in-memory adapters, with N active rollouts; ghz runs as a child process. It
//! measures GetRollout and ListRollouts (a page of 100 active rollouts) throughput and
//! latency, and StartRollout from concurrent callers for one target, where exactly one may win
//! and the others must get ALREADY_EXISTS.
//!
//! `GHZ=PATH cargo bench -p steerer-server --bench api_load [-- N]` (default: ghz from
//! `tests/versus/build-ghz.sh`); settings by environment: `STEERER_BENCH_ROLLOUTS` (1000),
//! `STEERER_BENCH_GHZ_REQUESTS` (20000), `STEERER_BENCH_GHZ_CONCURRENCY` (50).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use common::*;
use serde_json::Value;

fn main() -> anyhow::Result<()> {
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or_else(|| env_or("STEERER_BENCH_ROLLOUTS", 1000));
    let requests = env_or("STEERER_BENCH_GHZ_REQUESTS", 20_000usize);
    let concurrency = env_or("STEERER_BENCH_GHZ_CONCURRENCY", 50usize);
    let ghz = ghz()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(ghz, n, requests, concurrency))
}

/// `$GHZ`, else the one `tests/versus/build-ghz.sh` put in the cache.
fn ghz() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("GHZ") {
        return Ok(path.into());
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/versus/build-ghz.sh");
    let out = std::process::Command::new("bash")
        .arg(root)
        .output()
        .context("running tests/versus/build-ghz.sh")?;
    if !out.status.success() {
        bail!(
            "tests/versus/build-ghz.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("GHZ="))
        .map(PathBuf::from)
        .context("tests/versus/build-ghz.sh printed no GHZ= line")
}

/// Runs ghz and returns its JSON report.
async fn load(
    ghz: &PathBuf,
    addr: std::net::SocketAddr,
    call: &str,
    data: &Value,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let out = tokio::process::Command::new(ghz)
        .args([
            "--insecure",
            "--format",
            "json",
            "--call",
            &format!("steerer.v1.RolloutService/{call}"),
            "-d",
            &data.to_string(),
            "-n",
            &requests.to_string(),
            "-c",
            &concurrency.to_string(),
            &addr.to_string(),
        ])
        .output()
        .await
        .with_context(|| format!("running {}", ghz.display()))?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "ghz answered no JSON report: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn percentile_ms(report: &Value, p: u64) -> f64 {
    report["latencyDistribution"]
        .as_array()
        .and_then(|d| d.iter().find(|x| x["percentage"].as_u64() == Some(p)))
        .and_then(|x| x["latency"].as_f64())
        .map_or(f64::NAN, |ns| ns / 1e6)
}

fn describe(name: &str, report: &Value) {
    println!(
        "  {name}: {:.0} calls/s, p50 {:.2} ms, p99 {:.2} ms, codes {}",
        report["rps"].as_f64().unwrap_or(f64::NAN),
        percentile_ms(report, 50),
        percentile_ms(report, 99),
        report["statusCodeDistribution"]
    );
}

async fn run(ghz: PathBuf, n: usize, requests: usize, concurrency: usize) -> anyhow::Result<()> {
    print_header(
        "api_load",
        &[
            ("active rollouts", n.to_string()),
            ("ghz requests per run", requests.to_string()),
            ("ghz concurrency", concurrency.to_string()),
        ],
    );
    // One target more than there are rollouts: the one concurrent starts race for.
    let world = World::with_targets(n + 1);
    let server = Server::start(&world).await?;
    let client = connect(server.addr).await?;
    let ids = start_rollouts(&client, n, 50, |i| {
        start_request(&target(i), Duration::from_secs(3600), 10, 3)
    })
    .await?;
    let get = load(
        &ghz,
        server.addr,
        "GetRollout",
        &serde_json::json!({"id": ids.first().cloned().unwrap_or_default()}),
        requests,
        concurrency,
    )
    .await?;
    describe("GetRollout", &get);
    let list = load(
        &ghz,
        server.addr,
        "ListRollouts",
        &serde_json::json!({"activeOnly": true, "pageSize": 100}),
        requests / 10,
        concurrency,
    )
    .await?;
    describe("ListRollouts (a page of 100 of the active rollouts)", &list);
    let race = load(
        &ghz,
        server.addr,
        "StartRollout",
        &serde_json::json!({
            "namespace": NS,
            "target": target(n),
            "analysis": {"interval": "3600s"},
        }),
        concurrency * 4,
        concurrency,
    )
    .await?;
    describe("StartRollout, one target, concurrent callers", &race);
    let codes = &race["statusCodeDistribution"];
    let won = codes["OK"].as_u64().unwrap_or(0);
    let refused = codes["AlreadyExists"].as_u64().unwrap_or(0);
    println!(
        "  concurrent starts: {won} won, {refused} got ALREADY_EXISTS of {}; exactly one winner: {}",
        concurrency * 4,
        verdict(won == 1 && won + refused == (concurrency * 4) as u64)
    );
    server.stop().await;
    Ok(())
}
