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
//!
//! `steerer-sim mesh --kubeconfig FILE` runs the Istio data plane alone against any API
//! server; it prints `metrics: http://127.0.0.1:PORT/metrics` the same way once serving.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use steerer_sim::mesh::cluster::{DEFAULT_VIRTUAL_SERVICE_VERSION, Scope};
use steerer_sim::mesh::standalone::{MeshConfig, StandaloneMesh};
use steerer_sim::{Sim, SimConfig, Timing};

/// A simulated Kubernetes API server with Deployment/HPA controllers and an Istio data plane.
#[derive(Debug, Parser)]
#[command(name = "steerer-sim", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
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
    /// The `iss` of the service-account tokens the TokenRequest API signs.
    #[arg(long, default_value = steerer_sim::world::DEFAULT_SERVICE_ACCOUNT_ISSUER)]
    service_account_issuer: String,
    /// The API server's audiences, comma-separated: the default audience of a TokenRequest and
    /// what a TokenReview without audiences checks (default: the issuer).
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run only the Istio data plane, against any API server (a real kube-apiserver or a
    /// simulator): it watches VirtualServices, Services and ReplicaSets, sends synthetic
    /// traffic by the route weights to ready pods and serves `/metrics`, `/sim/error-rate`
    /// and `/sim/load` on --metrics-listen.
    Mesh(MeshArgs),
}

#[derive(Debug, clap::Args)]
struct MeshArgs {
    /// Kubeconfig of the API server (default: $KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Address of `/metrics` and `/sim/*` (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics_listen: SocketAddr,
    /// Synthetic requests per second per VirtualService host.
    #[arg(long, default_value_t = 50.0)]
    request_rate: f64,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// The networking.istio.io API version of VirtualServices to watch.
    #[arg(long, alias = "vs-version", default_value = DEFAULT_VIRTUAL_SERVICE_VERSION)]
    virtual_service_version: String,
    /// How often HPAs given a load with `/sim/load` are synced (e.g. `2s`).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    hpa_sync: Duration,
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
    match args.command {
        Some(Command::Mesh(mesh)) => run_mesh(mesh).await,
        None => run_sim(args).await,
    }
}

/// `steerer-sim mesh`: the data plane alone, until SIGINT or SIGTERM.
async fn run_mesh(args: MeshArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.request_rate.is_finite() && args.request_rate >= 0.0,
        "--request-rate must be a number >= 0"
    );
    anyhow::ensure!(!args.hpa_sync.is_zero(), "--hpa-sync must be above zero");
    let config = MeshConfig {
        kubeconfig: args.kubeconfig,
        metrics_listen: args.metrics_listen,
        request_rate: args.request_rate,
        scope: Scope {
            namespace: args.namespace,
            virtual_service_version: args.virtual_service_version,
        },
        hpa_sync: args.hpa_sync,
        ..MeshConfig::default()
    };
    let mesh = StandaloneMesh::start(config)
        .await
        .context("starting the mesh")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "metrics: http://{}/metrics", mesh.metrics_addr())?;
    out.flush()?;
    drop(out);
    shutdown_signal().await?;
    tracing::info!("shutting down");
    if tokio::time::timeout(Duration::from_secs(5), mesh.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop within 5 s");
    }
    Ok(())
}

/// `steerer-sim` with no subcommand: the whole simulated cluster.
async fn run_sim(args: Args) -> anyhow::Result<()> {
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
        service_account_issuer: args.service_account_issuer,
        api_audiences: args.api_audiences,
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
