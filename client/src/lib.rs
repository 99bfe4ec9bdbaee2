//! Client SDK for steerer: start, follow, steer and abort canary rollouts from CI jobs, bots
//! and tools.
//!
//! The types are the contract's own ([`proto`], generated from `proto/steerer/v1`), so what
//! the server documents is what a caller gets; errors are the typed [`ClientError`], carrying
//! the server's reason.
//!
//! - [`Client`] has one method per RPC: [`start`](Client::start), [`get`](Client::get),
//!   [`list`](Client::list), [`abort`](Client::abort), [`pause`](Client::pause),
//!   [`resume`](Client::resume), [`promote`](Client::promote) and [`watch`](Client::watch).
//! - [`Client::watch`] returns a [`WatchStream`] that survives transport errors and server
//!   restarts: it reconnects with capped, jittered exponential backoff and resumes after the
//!   last event it delivered, so every event arrives exactly once, in order, and the stream
//!   ends after the terminal event.
//! - [`Client::wait`] follows a rollout to the end and returns its [`Outcome`].
//! - [`ClientBuilder`] sets TLS (CA, client certificate, server name), credentials (a bearer
//!   token, or any [`AuthProvider`] such as a refreshing token) and timeouts.
//!   [`Client::connect`] connects eagerly; [`ClientBuilder::lazy`] defers it to the first call.
//!
//! # A CI gate
//!
//! Start a rollout with the image the pipeline just built, follow it, and fail the job unless
//! the canary is promoted (`examples/ci_gate.rs`):
//!
//! ```no_run
//! use steerer_client::proto::StartRolloutRequest;
//! use steerer_client::Client;
//!
//! # async fn gate() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder("http://steerer.deploy:50051")
//!     .bearer_token(std::env::var("STEERER_TOKEN")?)
//!     .connect()
//!     .await?;
//! let rollout = client
//!     .start(StartRolloutRequest {
//!         namespace: "shop".into(),
//!         target: "checkout".into(),
//!         images: [("app".into(), std::env::var("IMAGE")?)].into(),
//!         // The same pipeline run retried gets the same rollout, not a second one.
//!         request_id: std::env::var("CI_PIPELINE_ID")?,
//!         ..Default::default()
//!     })
//!     .await?;
//! let outcome = client
//!     .wait_with(&rollout.id, 0, |event| {
//!         println!("{:?} weight={}% {}", event.r#type(), event.canary_weight, event.message)
//!     })
//!     .await?;
//! if !outcome.succeeded() {
//!     eprintln!("canary {:?}: {}", outcome.phase, outcome.message);
//!     std::process::exit(1);
//! }
//! # Ok(()) }
//! ```
//!
//! # A chat bot following a stream
//!
//! A [`WatchStream`] can stay open for the whole rollout; a server restart in between only
//! delays events, it never repeats or loses one (`examples/chat_bot.rs`):
//!
//! ```no_run
//! use futures::StreamExt;
//! use steerer_client::proto::EventType;
//!
//! # async fn bot(client: steerer_client::Client) -> Result<(), steerer_client::ClientError> {
//! let mut events = client.watch("r-7f3c");
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     match event.r#type() {
//!         EventType::WeightChanged => post(&format!("canary at {}%", event.canary_weight)),
//!         EventType::Halted | EventType::CheckFailed => post(&format!("⚠ {}", event.message)),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! # fn post(_: &str) {}
//! ```
//!
//! # Abort on a signal
//!
//! A deploy job that is cancelled should take its canary down with it
//! (`examples/abort_on_signal.rs`):
//!
//! ```no_run
//! # async fn job(client: steerer_client::Client, id: String) -> Result<(), steerer_client::ClientError> {
//! tokio::select! {
//!     outcome = client.wait(&id) => println!("ended {:?}", outcome?.phase),
//!     _ = tokio::signal::ctrl_c() => {
//!         let rollout = client.abort(&id, "deploy job cancelled").await?;
//!         println!("aborted; traffic on GA ({}% canary)", rollout.canary_weight);
//!     }
//! }
//! # Ok(()) }
//! ```

mod auth;
mod client;
mod error;
mod reconnect;
mod watch;

/// The `steerer.v1` contract: request, response and event messages, enums, and the generated
/// client and server stubs.
pub use steerer::v1 as proto;

/// The release of this client.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this client was built from (short hash), `unknown` outside a checkout.
pub const COMMIT: &str = env!("STEERER_COMMIT");

pub use auth::{AuthError, AuthFuture, AuthProvider, SharedToken, StaticToken};
pub use client::{Client, ClientBuilder, DEFAULT_ENDPOINT};
pub use error::{ClientError, code_name};
pub use reconnect::ReconnectPolicy;
pub use watch::{Outcome, WatchStream, is_terminal_event, is_terminal_phase};
