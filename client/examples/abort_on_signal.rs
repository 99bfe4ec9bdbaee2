//! A deploy job that takes its canary down with it when it is cancelled: follow the rollout,
//! and abort it on Ctrl-C or SIGTERM (what CI runners send a cancelled job).
//!
//! ```text
//! cargo run -p steerer-client --example abort_on_signal -- r-7f3c
//! ```

use std::process::ExitCode;

use steerer_client::{Client, ClientError};

#[tokio::main]
async fn main() -> ExitCode {
    let Some(id) = std::env::args().nth(1) else {
        eprintln!("usage: abort_on_signal ROLLOUT_ID");
        return ExitCode::from(2);
    };
    match run(&id).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(1)
        }
    }
}

async fn run(id: &str) -> Result<ExitCode, ClientError> {
    let server = std::env::var("STEERER_SERVER")
        .unwrap_or_else(|_| steerer_client::DEFAULT_ENDPOINT.to_string());
    let client = Client::builder(server)
        .bearer_token(std::env::var("STEERER_TOKEN").unwrap_or_default())
        .connect()
        .await?;

    tokio::select! {
        outcome = client.wait(id) => {
            let outcome = outcome?;
            println!("rollout {id} ended {:?}: {}", outcome.phase, outcome.message);
            Ok(if outcome.succeeded() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        signal = cancelled() => {
            // Abort is idempotent: if the rollout ended meanwhile, this changes nothing.
            let rollout = client.abort(id, format!("deploy job cancelled ({signal})")).await?;
            println!(
                "rollout {id} aborted on {signal}: {:?}, canary at {}%",
                rollout.phase(),
                rollout.canary_weight
            );
            Ok(ExitCode::from(130))
        }
    }
}

/// Resolves with the name of the first cancellation signal.
async fn cancelled() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
