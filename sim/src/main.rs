//! The `steerer-sim` binary: a simulated Kubernetes cluster with an Istio mesh, served on
//! loopback until SIGINT or SIGTERM.
//!
//! Start-up contract (scripts rely on it): these lines go to stdout, flushed, once serving:
//!
//! ```text
//! api: http://127.0.0.1:PORT
//! metrics: http://127.0.0.1:PORT/metrics
//! kubeconfig: FILE            (only with --write-kubeconfig)
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use steerer_sim::{Sim, SimConfig, Timing};

/// A simulated Kubernetes API server with Deployment/HPA controllers and an Istio data plane.
#[derive(Debug, Parser)]
#[command(name = "steerer-sim", version)]
struct Args {
    /// Kubernetes API address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address of the Istio metrics endpoint `/metrics` (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics_listen: SocketAddr,
    /// Write a kubeconfig pointing at the simulator to this file.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Manifests (file or directory) to create at start-up; repeatable.
    #[arg(long)]
    apply: Vec<PathBuf>,
    /// Synthetic requests per second per VirtualService host.
    #[arg(long)]
    request_rate: Option<f64>,
    /// Time a pod takes to start (e.g. `2s`, `200ms`).
    #[arg(long, value_parser = parse_duration)]
    pod_startup: Option<Duration>,
    /// How often HPAs recompute their replicas (e.g. `2s`).
    #[arg(long, value_parser = parse_duration)]
    hpa_sync: Option<Duration>,
    /// Test timing: rolling updates and HPA reactions in about a second.
    #[arg(long)]
    fast: bool,
}

/// Parses `250ms`, `2s`, `1.5s`, `1m` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 200ms, 2s, 1m"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        other => return Err(format!("invalid duration unit {other:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut timing = if args.fast {
        Timing::fast()
    } else {
        Timing::default()
    };
    if let Some(d) = args.pod_startup {
        timing.pod_startup = d;
    }
    if let Some(d) = args.hpa_sync {
        timing.hpa_sync = d;
    }
    let mut config = SimConfig {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        apply: args.apply,
        timing,
        ..SimConfig::default()
    };
    if let Some(rate) = args.request_rate {
        anyhow::ensure!(
            rate.is_finite() && rate >= 0.0,
            "--request-rate must be a number >= 0"
        );
        config.request_rate = rate;
    }
    let sim = Sim::start(config).await.context("starting the simulator")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "api: http://{}", sim.api_addr())?;
    writeln!(out, "metrics: http://{}/metrics", sim.metrics_addr())?;
    if let Some(path) = &args.write_kubeconfig {
        sim.write_kubeconfig(path)
            .with_context(|| format!("writing the kubeconfig to {}", path.display()))?;
        writeln!(out, "kubeconfig: {}", path.display())?;
    }
    out.flush()?;
    drop(out);
    tracing::info!(api = %sim.api_addr(), metrics = %sim.metrics_addr(), "serving");
    shutdown_signal().await?;
    tracing::info!("shutting down");
    if tokio::time::timeout(Duration::from_secs(5), sim.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop within 5 s");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
