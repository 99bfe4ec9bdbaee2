//! Webhooks as Flagger users know them, against a small HTTP server in the test that checks
//! every body's HMAC-SHA256 signature: confirm-rollout holds the start, pre-rollout fails
//! checks before traffic moves, rollout hooks that time out or cannot be reached fail checks,
//! a rollback hook's yes rolls back at once, confirm-promotion holds at the maximum weight,
//! post-rollout hears the outcome; a URL the server does not allow is refused and nothing
//! changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use steerer::v1::{
    Analysis, EventType, ListRolloutsRequest, Phase, RolloutEvent, Webhook, WebhookType,
};

use crate::common::{CANARY, GA, Harness, NS, Options, events_until, replicas, types};

const SECRET: &[u8] = b"webhook-secret-for-tests";

/// A call the hook server got.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    body: Value,
}

#[derive(Default)]
struct Received {
    /// Status per path (200 when unset).
    answers: HashMap<String, u16>,
    calls: Vec<Call>,
    /// Calls whose signature did not match the body (answered 401).
    bad_signatures: usize,
}

/// The webhook receiver: records every call, answers 401 to one not signed with `SECRET`,
/// otherwise the status set for its path (200 by default, with a reason in the body when it
/// is not 2xx); `/slow…` answers only after an hour.
struct HookServer {
    base: String,
    received: Arc<Mutex<Received>>,
}

impl HookServer {
    async fn start() -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let state = received.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let path = uri.path().to_owned();
                let signature = headers
                    .get("x-steerer-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
                mac.update(&body);
                let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                let status = {
                    let mut r = state.lock().unwrap();
                    if signature != expected {
                        r.bad_signatures += 1;
                        return (StatusCode::UNAUTHORIZED, "bad signature".to_owned());
                    }
                    r.calls.push(Call {
                        path: path.clone(),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    r.answers.get(&path).copied().unwrap_or(200)
                };
                if path.starts_with("/slow") {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let status = StatusCode::from_u16(status).unwrap();
                let reason = if status.is_success() {
                    String::new()
                } else {
                    format!("{path} says no")
                };
                (status, reason)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, received }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn answer(&self, path: &str, status: u16) {
        self.received
            .lock()
            .unwrap()
            .answers
            .insert(path.to_owned(), status);
    }

    fn calls(&self, path: &str) -> Vec<Call> {
        self.received
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    fn all_calls(&self) -> usize {
        self.received.lock().unwrap().calls.len()
    }

    fn bad_signatures(&self) -> usize {
        self.received.lock().unwrap().bad_signatures
    }
}

/// A harness whose server allows webhooks to 127.0.0.1 and signs them with `SECRET` (the
/// directory holding the secret must outlive it).
async fn start(dir: &std::path::Path) -> Harness {
    let secret = dir.join("webhook-secret");
    std::fs::write(&secret, [SECRET, b"\n"].concat()).unwrap();
    let mut options = Options::default();
    options.server.webhook_allow = vec!["127.0.0.1".into()];
    options.server.webhook_secret_file = Some(secret);
    Harness::start_with(options).await
}

fn hook(name: &str, kind: WebhookType, url: String) -> Webhook {
    Webhook {
        name: name.into(),
        r#type: kind as i32,
        url,
        ..Default::default()
    }
}

fn hooked(step_weight: u32, webhooks: Vec<Webhook>) -> Analysis {
    Analysis {
        step_weight: Some(step_weight),
        webhooks,
        ..Default::default()
    }
}

/// The events of a type.
fn of(events: &[RolloutEvent], kind: EventType) -> Vec<&RolloutEvent> {
    events.iter().filter(|e| e.r#type() == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_rollout_holds_the_start_until_yes_and_post_rollout_hears_the_promotion() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = HookServer::start().await;
    hooks.answer("/approve", 403);
    let mut h = start(dir.path()).await;
    let started = h
        .start_rollout(h.request(hooked(
            50,
            vec![
                hook(
                    "approve",
                    WebhookType::ConfirmRollout,
                    hooks.url("/approve"),
                ),
                hook("notify", WebhookType::PostRollout, hooks.url("/notify")),
            ],
        )))
        .await;
    let waiting = h
        .wait_until(&started.id, Duration::from_secs(30), |r| {
            r.waiting_for == "confirm-rollout webhook approve (HTTP 403: /approve says no)"
        })
        .await;
    assert_eq!(waiting.phase(), Phase::Pending);
    assert_eq!(waiting.canary_weight, 0);
    assert_eq!(h.weights().await, (100, 0), "no traffic moved");
    let asked = hooks.calls("/approve");
    assert_eq!(asked[0].body["type"], "CONFIRM_ROLLOUT");
    assert_eq!(asked[0].body["phase"], "PENDING");
    assert_eq!(asked[0].body["namespace"], NS);
    assert_eq!(asked[0].body["target"], GA);
    assert_eq!(asked[0].body["canary"], CANARY);
    assert_eq!(asked[0].body["rolloutId"], started.id.as_str());

    hooks.answer("/approve", 200);
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(90))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let halted = of(&events, EventType::Halted);
    assert!(
        halted.iter().any(|e| e
            .message
            .contains("waiting for confirm-rollout webhook approve")),
        "{:#?}",
        types(&events)
    );
    let webhook_events = of(&events, EventType::Webhook);
    assert_eq!(webhook_events.len(), 2, "{:#?}", types(&events));
    assert!(
        webhook_events[0]
            .message
            .starts_with("confirm-rollout: approve answered HTTP 200"),
        "{}",
        webhook_events[0].message
    );
    assert_eq!(
        webhook_events[1].message,
        "post-rollout webhooks called: notify answered HTTP 200"
    );
    assert_eq!(webhook_events[1].checks[0].name, "notify");
    assert!(webhook_events[1].checks[0].passed);
    // The post-rollout webhook is called once, with the outcome, before the rollout ends.
    let notified = hooks.calls("/notify");
    assert_eq!(notified.len(), 1, "{notified:?}");
    assert_eq!(notified[0].body["type"], "POST_ROLLOUT");
    assert_eq!(notified[0].body["phase"], "SUCCEEDED");
    assert_eq!(events.last().unwrap().r#type(), EventType::Succeeded);
    assert_eq!(done.waiting_for, "");
    assert_eq!(
        hooks.bad_signatures(),
        0,
        "every body was signed with the secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_rollout_refusal_fails_a_check_before_traffic_moves_and_a_yes_lets_it_go() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = HookServer::start().await;
    hooks.answer("/load", 500);
    let mut h = start(dir.path()).await;
    let mut load = hook("load", WebhookType::PreRollout, hooks.url("/load"));
    load.metadata = [(
        "cmd".to_owned(),
        "hey -z 1m http://podinfo-canary".to_owned(),
    )]
    .into();
    let analysis = Analysis {
        max_failed_checks: Some(5),
        ..hooked(50, vec![load])
    };
    let started = h.start_rollout(h.request(analysis)).await;
    let first = events_until(
        &mut h.client,
        &started.id,
        0,
        Duration::from_secs(60),
        |e| e.r#type() == EventType::CheckFailed,
    )
    .await;
    let failed = first.last().unwrap();
    assert_eq!(failed.phase(), Phase::Pending);
    assert_eq!(failed.canary_weight, 0);
    assert_eq!(failed.failed_metrics, ["load"]);
    assert_eq!(failed.checks[0].detail, "HTTP 500: /load says no");
    assert!(
        failed
            .message
            .starts_with("pre-rollout check failed: webhook load: HTTP 500"),
        "{}",
        failed.message
    );
    assert_eq!(
        h.weights().await,
        (100, 0),
        "no traffic before the load test passes"
    );
    let call = &hooks.calls("/load")[0];
    assert_eq!(call.body["type"], "PRE_ROLLOUT");
    assert_eq!(
        call.body["metadata"]["cmd"],
        "hey -z 1m http://podinfo-canary"
    );

    hooks.answer("/load", 200);
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(90))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let passed = of(&events, EventType::CheckPassed);
    assert!(
        passed[0]
            .message
            .starts_with("pre-rollout check passed: webhook load: HTTP 200"),
        "{}",
        passed[0].message
    );
    // Once passed, never called again.
    let calls = hooks.calls("/load").len();
    assert_eq!(
        calls,
        of(&events, EventType::CheckFailed).len() + 1,
        "one call per pre-rollout check"
    );
    assert_eq!(hooks.bad_signatures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_webhooks_that_time_out_or_cannot_be_reached_fail_checks_until_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = HookServer::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/smoke", listener.local_addr().unwrap())
    };
    let mut h = start(dir.path()).await;
    let ga_before = h.deployment(GA).await;
    let mut slow = hook("slow", WebhookType::Rollout, hooks.url("/slow"));
    slow.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 300_000_000,
    });
    let analysis = Analysis {
        max_failed_checks: Some(2),
        ..hooked(
            50,
            vec![slow, hook("refusing", WebhookType::Rollout, closed)],
        )
    };
    let started = h.start_rollout(h.request(analysis)).await;
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(90))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    let failed = of(&events, EventType::CheckFailed);
    assert_eq!(failed.len(), 2, "{:#?}", types(&events));
    for e in failed {
        assert_eq!(e.failed_metrics, ["slow", "refusing"], "{}", e.message);
        let detail = |name: &str| {
            e.checks
                .iter()
                .find(|c| c.name == name)
                .map(|c| (c.passed, c.detail.clone()))
                .unwrap()
        };
        assert_eq!(detail("slow"), (false, "timed out after 300ms".to_owned()));
        let (passed, why) = detail("refusing");
        assert!(!passed && why.starts_with("could not connect"), "{why}");
        assert!(detail("success_rate").0, "the canary itself was fine");
    }
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(
        h.deployment(GA).await.spec.as_ref().unwrap().template,
        ga_before.spec.as_ref().unwrap().template,
        "GA untouched"
    );
    assert_eq!(replicas(&h.deployment(CANARY).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_webhook_saying_yes_rolls_back_at_once_while_a_rollout_webhook_passes() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = HookServer::start().await;
    hooks.answer("/kill", 404);
    let mut h = start(dir.path()).await;
    let started = h
        .start_rollout(h.request(hooked(
            20,
            vec![
                hook("smoke", WebhookType::Rollout, hooks.url("/smoke")),
                hook("kill", WebhookType::Rollback, hooks.url("/kill")),
            ],
        )))
        .await;
    let before = events_until(
        &mut h.client,
        &started.id,
        0,
        Duration::from_secs(60),
        |e| e.r#type() == EventType::WeightChanged && e.canary_weight >= 40,
    )
    .await;
    for passed in of(&before, EventType::CheckPassed) {
        let smoke = passed.checks.iter().find(|c| c.name == "smoke").unwrap();
        assert!(smoke.passed && smoke.detail == "HTTP 200", "{smoke:?}");
        assert!(passed.message.contains("webhook smoke: HTTP 200"));
    }
    assert_eq!(hooks.calls("/kill")[0].body["phase"], "PROGRESSING");
    hooks.answer("/kill", 200);
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert!(
        done.message
            .contains("rolled back: rollback webhook kill answered HTTP 200"),
        "{}",
        done.message
    );
    assert!(
        of(&events, EventType::CheckFailed).is_empty(),
        "no check failed"
    );
    let rolling_back = of(&events, EventType::RollingBack);
    assert_eq!(rolling_back[0].checks[0].name, "kill");
    assert!(rolling_back[0].checks[0].passed);
    assert_eq!(h.weights().await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_promotion_holds_at_the_maximum_weight_with_checks_going_on_until_yes() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = HookServer::start().await;
    hooks.answer("/gate", 403);
    let mut h = start(dir.path()).await;
    let started = h
        .start_rollout(h.request(hooked(
            50,
            vec![hook(
                "gate",
                WebhookType::ConfirmPromotion,
                hooks.url("/gate"),
            )],
        )))
        .await;
    let held = h
        .wait_until(&started.id, Duration::from_secs(60), |r| {
            r.waiting_for == "confirm-promotion webhook gate (HTTP 403: /gate says no)"
        })
        .await;
    assert_eq!(held.phase(), Phase::Progressing);
    assert_eq!(held.canary_weight, 100);
    assert_eq!(
        held.message,
        "halted: waiting for confirm-promotion webhook gate (HTTP 403: /gate says no)"
    );
    // Checks go on while it holds: the gate is asked again with the next one.
    let asked = hooks.calls("/gate").len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hooks.calls("/gate").len() <= asked {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no check while held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.get(&started.id).await.phase(), Phase::Progressing);

    hooks.answer("/gate", 200);
    let events = h
        .watch_to_end(&started.id, 0, Duration::from_secs(60))
        .await;
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let halted = of(&events, EventType::Halted);
    assert_eq!(
        halted
            .iter()
            .filter(|e| e.message.contains("confirm-promotion webhook gate"))
            .count(),
        1,
        "the wait is announced once: {:#?}",
        types(&events)
    );
    let promoting = of(&events, EventType::Promoting);
    assert!(
        promoting[0]
            .message
            .contains("confirm-promotion said yes (gate answered HTTP 200)"),
        "{}",
        promoting[0].message
    );
    assert_eq!(hooks.calls("/gate")[0].body["canaryWeight"], 100);
    assert_eq!(hooks.bad_signatures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_the_server_does_not_allow_is_invalid_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = HookServer::start().await;
    let mut h = start(dir.path()).await;
    let weights = h.weights().await;
    let canary_before = h.deployment(CANARY).await;
    for (url, says) in [
        ("http://example.invalid/approve".to_owned(), "not allowed"),
        (
            hooks.url("/approve").replace("127.0.0.1", "localhost"),
            "not allowed",
        ),
        ("ftp://127.0.0.1/approve".to_owned(), "http:// or https://"),
        ("http//127.0.0.1/approve".to_owned(), "not a URL"),
        (
            hooks.url("/approve").replace("http://", "http://user:pw@"),
            "user info",
        ),
    ] {
        let error = h
            .client
            .start_rollout(h.request(hooked(
                50,
                vec![hook("approve", WebhookType::ConfirmRollout, url.clone())],
            )))
            .await
            .unwrap_err();
        assert_eq!(
            error.code(),
            tonic::Code::InvalidArgument,
            "{url}: {error:?}"
        );
        assert!(
            error.message().contains("analysis.webhooks[0] (approve)")
                && error.message().contains(says),
            "{url}: {}",
            error.message()
        );
    }
    let listed = h
        .client
        .list_rollouts(ListRolloutsRequest {
            namespace: NS.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.rollouts.is_empty(), "{:?}", listed.rollouts);
    assert_eq!(h.weights().await, weights);
    assert_eq!(
        h.deployment(CANARY).await.spec,
        canary_before.spec,
        "canary untouched"
    );
    assert_eq!(hooks.all_calls(), 0, "no webhook was called");
}
