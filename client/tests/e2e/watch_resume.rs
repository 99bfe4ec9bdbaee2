//! The resuming watch against a fake server that breaks its streams: every event arrives
//! exactly once, in order, across failures and restarts.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{FakeServer, FakeState, WatchStep, bad_rollout, good_rollout};
use futures::StreamExt;
use steerer_client::proto::Phase;
use steerer_client::{Client, ClientError, ReconnectPolicy, SharedToken};
use tonic::Status;

fn fast_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        multiplier: 2.0,
        max_attempts: Some(50),
        max_outage: Some(Duration::from_secs(10)),
    }
}

async fn client_for(server: &FakeServer) -> Client {
    Client::builder(server.endpoint())
        .reconnect_policy(fast_policy())
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

async fn collect(client: &Client, id: &str) -> Vec<Result<u64, ClientError>> {
    tokio::time::timeout(
        Duration::from_secs(20),
        client
            .watch(id)
            .map(|item| item.map(|e| e.sequence))
            .collect::<Vec<_>>(),
    )
    .await
    .expect("the watch did not end")
}

fn sequences(items: Vec<Result<u64, ClientError>>) -> Vec<u64> {
    items.into_iter().map(Result::unwrap).collect()
}

#[tokio::test]
async fn every_event_arrives_once_across_unavailable_and_internal_failures() {
    let state = Arc::new(FakeState::default());
    state.add(good_rollout("r-1", "shop", "checkout"));
    state.plan([
        WatchStep::FailAfter(3, Status::unavailable("leader moved")),
        WatchStep::FailAfter(4, Status::internal("stream reset")),
    ]);
    let server = FakeServer::start(state.clone()).await;
    let client = client_for(&server).await;

    let got = sequences(collect(&client, "r-1").await);

    assert_eq!(got, (1..=12).collect::<Vec<_>>());
    assert_eq!(state.watch_froms(), [0, 4, 8]);
}

#[tokio::test]
async fn events_the_server_sends_again_are_dropped() {
    let state = Arc::new(FakeState::default());
    state.add(good_rollout("r-1", "shop", "checkout"));
    state.plan([
        WatchStep::FailAfter(5, Status::unavailable("restarting")),
        WatchStep::ReplayEarlier(3),
    ]);
    let server = FakeServer::start(state.clone()).await;
    let client = client_for(&server).await;

    let got = sequences(collect(&client, "r-1").await);

    assert_eq!(got, (1..=12).collect::<Vec<_>>());
    assert_eq!(state.watch_froms(), [0, 6]);
    // The server really did resend 3, 4 and 5: 5 + 10 events went out for 12 delivered.
    assert_eq!(state.events_sent(), 15);
}

#[tokio::test]
async fn a_watch_resumes_after_a_server_restart_on_the_same_port() {
    let state = Arc::new(FakeState::default());
    state.add(good_rollout("r-1", "shop", "checkout"));
    state.plan([WatchStep::HangAfter(4)]);
    let mut server = FakeServer::start(state.clone()).await;
    let client = client_for(&server).await;

    let mut events = client.watch("r-1");
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(events.next().await.unwrap().unwrap().sequence);
    }
    // Down long enough for at least one refused reconnect, then back on the same address.
    server.stop().await;
    let refused_while_down = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
    assert!(
        refused_while_down.is_err(),
        "an event arrived while the server was down"
    );
    server.start_again().await;
    let rest = tokio::time::timeout(
        Duration::from_secs(10),
        events.map(|e| e.unwrap().sequence).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    got.extend(rest);

    assert_eq!(got, (1..=12).collect::<Vec<_>>());
    assert_eq!(state.watch_froms(), [0, 5]);
}

#[tokio::test]
async fn a_stream_closed_before_the_end_is_resumed() {
    let state = Arc::new(FakeState::default());
    state.add(bad_rollout("r-2", "shop", "cart"));
    state.plan([WatchStep::EndAfter(2), WatchStep::EndAfter(0)]);
    let server = FakeServer::start(state.clone()).await;
    let client = client_for(&server).await;

    let got = sequences(collect(&client, "r-2").await);

    assert_eq!(got, (1..=7).collect::<Vec<_>>());
    assert_eq!(state.watch_froms(), [0, 3, 3]);
}

#[tokio::test]
async fn a_missing_rollout_ends_the_stream_with_not_found() {
    let state = Arc::new(FakeState::default());
    let server = FakeServer::start(state.clone()).await;
    let client = client_for(&server).await;

    let items = collect(&client, "nope").await;

    assert_eq!(items.len(), 1);
    let err = items.into_iter().next().unwrap().unwrap_err();
    assert_eq!(
        err,
        ClientError::NotFound {
            message: "rollout \"nope\" not found".into()
        }
    );
    assert_eq!(state.watch_froms(), [0], "NOT_FOUND must not be retried");
}

#[tokio::test]
async fn permission_denied_mid_watch_ends_it_after_the_events_so_far() {
    let state = Arc::new(FakeState::default());
    state.add(good_rollout("r-1", "shop", "checkout"));
    state.plan([
        WatchStep::FailAfter(2, Status::unavailable("restarting")),
        WatchStep::Refuse(Status::permission_denied("token revoked")),
    ]);
    let server = FakeServer::start(state.clone()).await;
    let client = client_for(&server).await;

    let items = collect(&client, "r-1").await;

    assert_eq!(items.len(), 3);
    assert_eq!(items[0], Ok(1));
    assert_eq!(items[1], Ok(2));
    assert!(
        matches!(&items[2], Err(ClientError::PermissionDenied { message }) if message == "token revoked")
    );
}

#[tokio::test]
async fn the_watch_gives_up_after_the_configured_attempts() {
    let state = Arc::new(FakeState::default());
    state.add(good_rollout("r-1", "shop", "checkout"));
    state.plan([WatchStep::HangAfter(1)]);
    let mut server = FakeServer::start(state.clone()).await;
    let client = client_for(&server)
        .await
        .with_reconnect_policy(ReconnectPolicy {
            max_attempts: Some(3),
            ..fast_policy()
        });

    let mut events = client.watch("r-1");
    assert_eq!(events.next().await.unwrap().unwrap().sequence, 1);
    server.stop().await;
    let last = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the watch kept retrying")
        .unwrap();

    let err = last.unwrap_err();
    assert!(err.is_retryable(), "gave up with {err:?}");
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn watching_a_finished_rollout_from_past_its_end_ends_without_events() {
    let state = Arc::new(FakeState::default());
    state.add(bad_rollout("r-2", "shop", "cart"));
    let server = FakeServer::start(state.clone()).await;
    let client = client_for(&server).await;

    let items: Vec<_> = tokio::time::timeout(
        Duration::from_secs(5),
        client.watch_from("r-2", 8).collect::<Vec<_>>(),
    )
    .await
    .unwrap();

    assert!(items.is_empty(), "{items:?}");
    assert_eq!(state.watch_froms(), [8]);
}

#[tokio::test]
async fn wait_reports_the_terminal_phase_and_the_servers_reason() {
    let state = Arc::new(FakeState::default());
    state.add(bad_rollout("r-2", "shop", "cart"));
    state.plan([WatchStep::FailAfter(3, Status::unavailable("restarting"))]);
    let server = FakeServer::start(state.clone()).await;
    let client = client_for(&server).await;

    let mut seen = Vec::new();
    let outcome = client
        .wait_with("r-2", 0, |e| seen.push(e.sequence))
        .await
        .unwrap();

    assert_eq!(seen, (1..=7).collect::<Vec<_>>());
    assert_eq!(outcome.phase, Phase::RolledBack);
    assert!(!outcome.succeeded());
    assert_eq!(outcome.message, "success rate 80.0% below 99% for 2 checks");
    assert_eq!(outcome.last_event.unwrap().sequence, 7);

    state.add(good_rollout("r-1", "shop", "checkout"));
    assert!(client.wait("r-1").await.unwrap().succeeded());
}

#[tokio::test]
async fn every_reconnect_asks_the_auth_provider_again() {
    let state = Arc::new(FakeState::default());
    state.add(good_rollout("r-1", "shop", "checkout"));
    state.plan([WatchStep::HangAfter(2)]);
    let mut server = FakeServer::start(state.clone()).await;
    let token = SharedToken::new("first");
    let client = Client::builder(server.endpoint())
        .auth(token.clone())
        .reconnect_policy(fast_policy())
        .connect()
        .await
        .unwrap();

    let mut events = client.watch("r-1");
    events.next().await.unwrap().unwrap();
    events.next().await.unwrap().unwrap();
    token.set("second");
    server.restart().await;
    let rest: Vec<_> = events.map(|e| e.unwrap().sequence).collect().await;

    assert_eq!(rest, (3..=12).collect::<Vec<_>>());
    let headers = state.authorizations.lock().unwrap().clone();
    assert_eq!(headers.first().unwrap().as_deref(), Some("Bearer first"));
    assert_eq!(headers.last().unwrap().as_deref(), Some("Bearer second"));
}

#[tokio::test]
async fn unary_calls_map_statuses_to_typed_errors() {
    let state = Arc::new(FakeState::default());
    state.add(good_rollout("r-1", "shop", "checkout"));
    *state.required_token.lock().unwrap() = Some("s3cret".into());
    let server = FakeServer::start(state.clone()).await;

    let anonymous = client_for(&server).await;
    let err = anonymous.get("r-1").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Unauthenticated { .. }),
        "{err:?}"
    );

    let client = Client::builder(server.endpoint())
        .bearer_token("s3cret")
        .connect()
        .await
        .unwrap();
    assert_eq!(client.get("r-1").await.unwrap().id, "r-1");
    let err = client.get("r-9").await.unwrap_err();
    assert_eq!(err.to_string(), "rollout \"r-9\" not found");
    *state.start_error.lock().unwrap() = Some(Status::already_exists(
        "shop/checkout already has active rollout r-1",
    ));
    let err = client
        .start(steerer_client::proto::StartRolloutRequest {
            namespace: "shop".into(),
            target: "checkout".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::AlreadyExists { .. }), "{err:?}");
    let aborted = client.abort("r-1", "bad build").await.unwrap();
    assert_eq!(aborted.phase(), Phase::Aborted);
    assert_eq!(client.list(Default::default(), 0).await.unwrap().len(), 1);
}
