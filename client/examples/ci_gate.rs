//! A CI gate: start a canary of the image the pipeline built, follow it, and fail the job
//! unless it is promoted.
//!
//! ```text
//! STEERER_SERVER=http://steerer.deploy:50051 STEERER_TOKEN=... \
//!   cargo run -p steerer-client --example ci_gate -- shop/checkout app=registry.example/checkout:1.4.2
//! ```

use std::process::ExitCode;
use std::time::Duration;

use steerer_client::proto::{Analysis, StartRolloutRequest};
use steerer_client::{Client, ClientError};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(image)) = (args.next(), args.next()) else {
        eprintln!("usage: ci_gate NAMESPACE/TARGET CONTAINER=IMAGE");
        return ExitCode::from(2);
    };
    match gate(&target, &image).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(if err.is_retryable() { 3 } else { 2 })
        }
    }
}

/// Returns whether the canary was promoted.
async fn gate(target: &str, image: &str) -> Result<bool, ClientError> {
    let (namespace, name) = target.split_once('/').unwrap_or(("default", target));
    let (container, image) = image.split_once('=').unwrap_or(("app", image));

    let server = std::env::var("STEERER_SERVER")
        .unwrap_or_else(|_| steerer_client::DEFAULT_ENDPOINT.to_string());
    let client = Client::builder(server)
        .bearer_token(std::env::var("STEERER_TOKEN").unwrap_or_default())
        .timeout(Duration::from_secs(15))
        .connect()
        .await?;

    let rollout = client
        .start(StartRolloutRequest {
            namespace: namespace.into(),
            target: name.into(),
            images: [(container.to_string(), image.to_string())].into(),
            analysis: Some(Analysis {
                step_weight: Some(20),
                success_rate_threshold: Some(99.0),
                ..Default::default()
            }),
            // A retried pipeline run gets its rollout back instead of starting a second one.
            request_id: std::env::var("CI_PIPELINE_ID").unwrap_or_default(),
            ..Default::default()
        })
        .await?;
    println!("rollout {} started for {target}", rollout.id);

    let outcome = client
        .wait_with(&rollout.id, 0, |event| {
            println!(
                "#{:<3} {:<16} weight={:>3}%  {}",
                event.sequence,
                event
                    .r#type()
                    .as_str_name()
                    .trim_start_matches("EVENT_TYPE_"),
                event.canary_weight,
                event.message
            );
        })
        .await?;
    println!(
        "rollout {} ended {:?}: {}",
        outcome.rollout.id, outcome.phase, outcome.message
    );
    Ok(outcome.succeeded())
}
