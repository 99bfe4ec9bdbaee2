//! A deploy bot that keeps a rollout's event stream open and posts each step to chat.
//!
//! The stream survives server restarts and network blips: it reconnects and resumes after the
//! last event it delivered, so the channel never sees a step twice or misses one.
//!
//! ```text
//! cargo run -p steerer-client --example chat_bot -- r-7f3c
//! ```

use futures::StreamExt;
use steerer_client::proto::{EventType, RolloutEvent};
use steerer_client::{Client, ClientError, ReconnectPolicy};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let Some(id) = std::env::args().nth(1) else {
        eprintln!("usage: chat_bot ROLLOUT_ID");
        std::process::exit(2);
    };
    let server = std::env::var("STEERER_SERVER")
        .unwrap_or_else(|_| steerer_client::DEFAULT_ENDPOINT.to_string());
    let client = Client::builder(server)
        .bearer_token(std::env::var("STEERER_TOKEN").unwrap_or_default())
        // A bot can afford to wait out a long outage.
        .reconnect_policy(ReconnectPolicy {
            max_outage: None,
            ..ReconnectPolicy::default()
        })
        .connect()
        .await?;

    let mut events = client.watch(&id);
    while let Some(event) = events.next().await {
        if let Some(text) = chat_message(&event?) {
            post(&text).await;
        }
    }
    Ok(())
}

/// What the channel should read for an event, if anything: steps, trouble and the end.
fn chat_message(event: &RolloutEvent) -> Option<String> {
    let id = &event.rollout_id;
    let text = match event.r#type() {
        EventType::Started => format!("🚦 {id}: canary rollout started"),
        EventType::WeightChanged => format!("➡️ {id}: canary at {}%", event.canary_weight),
        EventType::CheckFailed => format!(
            "⚠️ {id}: check failed ({} failed so far): {}",
            event.failed_checks, event.message
        ),
        EventType::Halted => format!("⏸️ {id}: halted: {}", event.message),
        EventType::Paused => format!("⏸️ {id}: paused by an operator: {}", event.message),
        EventType::Succeeded => format!("✅ {id}: promoted"),
        EventType::RolledBack => format!("⏪ {id}: rolled back: {}", event.message),
        EventType::Aborted => format!("🛑 {id}: aborted: {}", event.message),
        EventType::Failed => format!("❌ {id}: failed: {}", event.message),
        _ => return None,
    };
    Some(text)
}

/// Stands in for the chat system's webhook.
async fn post(text: &str) {
    println!("{text}");
}
