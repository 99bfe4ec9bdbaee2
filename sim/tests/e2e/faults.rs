//! Fault injection and request counting, through the library API and the `/sim` admin
//! endpoints, and the watch stream's bookmarks, timeout and drop.

use std::time::{Duration, Instant};

use crate::support::{config_map, start};
use serde_json::{Value, json};
use steerer_sim::faults::{Failure, Scope, Verb};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn a_fraction_of_matching_requests_fail_and_every_request_is_counted() {
    let sim = start().await;
    let base = format!("http://{}", sim.api_addr());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}{CMS}"))
        .json(&config_map("c"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let faults = sim.faults();
    faults.reset_counts();
    faults.fail_requests(
        0.5,
        Failure::TooManyRequests,
        Scope::verb(Verb::List).resource("configmaps"),
    );

    let mut failed = 0;
    for _ in 0..200 {
        let r = http.get(format!("{base}{CMS}")).send().await.unwrap();
        match r.status().as_u16() {
            200 => {}
            429 => {
                let status: Value = r.json().await.unwrap();
                assert_eq!(status["reason"], "TooManyRequests");
                failed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // Binomial(200, 0.5): outside 60..=140 has a probability far below 1e-9.
    assert!((60..=140).contains(&failed), "{failed} of 200 failed");
    // Gets are outside the scope and never fail.
    for _ in 0..20 {
        assert_eq!(
            http.get(format!("{base}{CMS}/c"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    // Discovery is neither faulted nor counted.
    assert_eq!(
        http.get(format!("{base}/api/v1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    assert_eq!(faults.count("list", "configmaps"), 200);
    assert_eq!(faults.count("get", "configmaps"), 20);
    assert_eq!(faults.total(), 220);
    assert_eq!(faults.injected("list", "configmaps"), failed);
    assert_eq!(faults.injected_total(), failed);

    let counts: Value = http
        .get(format!("{base}/sim/counts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counts["total"], 220);
    assert!(
        counts["counts"]
            .as_array()
            .unwrap()
            .contains(&json!({"verb": "list", "resource": "configmaps", "count": 200}))
    );
    faults.clear();
    faults.reset_counts();
    assert_eq!(
        http.get(format!("{base}{CMS}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(faults.count("list", "configmaps"), 1);
}

#[tokio::test]
async fn admin_endpoints_drive_faults_and_counters() {
    let sim = start().await;
    let base = format!("http://{}", sim.api_addr());
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}/sim/{path}")).json(&body).send();

    let r = post(
        "faults",
        json!({"verb": "create", "resource": "configmaps", "errorRate": 1.0, "errorCode": 500}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}{CMS}"))
        .json(&config_map("c"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "InternalError");
    assert_eq!(
        http.delete(format!("{base}/sim/faults"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http
        .post(format!("{base}{CMS}"))
        .json(&config_map("c"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Latency: every get takes 150 ms longer.
    post("faults", json!({"verb": "get", "latencyMs": 150}))
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        http.get(format!("{base}{CMS}/c"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    http.delete(format!("{base}/sim/faults"))
        .send()
        .await
        .unwrap();

    // A forced conflict, once.
    post(
        "conflict",
        json!({"resource": "configmaps", "namespace": "default", "name": "c"}),
    )
    .await
    .unwrap();
    let patch = |v: &'static str| {
        http.patch(format!("{base}{CMS}/c"))
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"data": {"k": v}}).to_string())
            .send()
    };
    assert_eq!(patch("1").await.unwrap().status(), 409);
    assert_eq!(patch("2").await.unwrap().status(), 200);

    // Hold: requests wait until the hold is over.
    post("hold", json!({"ms": 300})).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        http.get(format!("{base}{CMS}/c"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(250));

    // Bad admin input is a 400 Status, unknown admin paths a 404.
    let r = post("faults", json!({"errorRate": 3.0})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{base}/sim/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Compaction makes older versions expire.
    let r: Value = post("compact", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["compactedResourceVersion"].is_string());
    assert_eq!(post("reset-counts", json!({})).await.unwrap().status(), 200);
    assert_eq!(sim.faults().total(), 0);
}

/// Reads watch events until `stop` says so or `timeout` passes; returns them and whether the
/// stream ended.
async fn read_events(
    response: reqwest::Response,
    timeout: Duration,
    mut stop: impl FnMut(&[Value]) -> bool,
) -> (Vec<Value>, bool) {
    let mut response = response;
    let mut buffer = Vec::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => return (events, false),
            Ok(Ok(None)) => return (events, true),
            Ok(Err(e)) => panic!("watch stream failed: {e}"),
            Ok(Ok(Some(chunk))) => {
                buffer.extend_from_slice(&chunk);
                while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=pos).collect();
                    events.push(serde_json::from_slice(&line).unwrap());
                }
                if stop(&events) {
                    return (events, false);
                }
            }
        }
    }
}

#[tokio::test]
async fn watches_send_events_bookmarks_and_end_on_timeout_or_drop() {
    let sim = start().await;
    let base = format!("http://{}", sim.api_addr());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}{CMS}"))
        .json(&config_map("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // From scratch: ADDED for what exists, then changes, then a bookmark at the latest version.
    let watch = http
        .get(format!(
            "{base}{CMS}?watch=1&allowWatchBookmarks=true&labelSelector=app%3Dtest"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let creator = {
        let http = http.clone();
        let base = base.clone();
        tokio::spawn(async move {
            http.post(format!("{base}{CMS}"))
                .json(&config_map("b"))
                .send()
                .await
                .unwrap();
            http.delete(format!("{base}{CMS}/a")).send().await.unwrap();
        })
    };
    let (events, _) = read_events(watch, Duration::from_secs(5), |evs| {
        evs.iter().any(|e| e["type"] == "BOOKMARK") && evs.len() >= 3
    })
    .await;
    creator.await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..3], &["ADDED", "ADDED", "DELETED"], "{events:?}");
    let bookmark = events.iter().find(|e| e["type"] == "BOOKMARK").unwrap();
    assert_eq!(bookmark["object"]["kind"], "ConfigMap");
    let last_rv: u64 = events[2]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let bookmark_rv: u64 = bookmark["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bookmark_rv >= last_rv);

    // timeoutSeconds ends the stream.
    let started = Instant::now();
    let watch = http
        .get(format!(
            "{base}{CMS}?watch=true&timeoutSeconds=1&resourceVersion={last_rv}"
        ))
        .send()
        .await
        .unwrap();
    let (events, ended) = read_events(watch, Duration::from_secs(5), |_| false).await;
    assert!(ended && events.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Dropping watches ends open streams at once.
    let watch = http
        .get(format!("{base}{CMS}?watch=true&resourceVersion={last_rv}"))
        .send()
        .await
        .unwrap();
    // The response head arrives once the watch is subscribed to the change feed.
    assert_eq!(watch.status(), 200);
    let r = http
        .post(format!("{base}/sim/drop-watches"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, ended) = read_events(watch, Duration::from_secs(5), |_| false).await;
    assert!(ended, "the watch ended when watches were dropped");
}

/// A kube-rs client that sends `user_agent` with every request, as a replica of a server under
/// test would be told apart.
async fn client_as(sim: &steerer_sim::Sim, user_agent: &str) -> kube::Client {
    let mut config = sim.kube_config().await.unwrap();
    config
        .headers
        .push((http::header::USER_AGENT, user_agent.parse().unwrap()));
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn a_held_client_waits_and_hears_nothing_until_released_while_others_are_served() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams, WatchEvent, WatchParams};
    use steerer_sim::faults::ClientMatch;

    let sim = start().await;
    let a: Api<ConfigMap> = Api::default_namespaced(client_as(&sim, "replica-a/1.0").await);
    let b: Api<ConfigMap> = Api::default_namespaced(client_as(&sim, "replica-b/1.0").await);
    let rv = sim.world().store.current_rv().to_string();
    let mut a_events = a.watch(&WatchParams::default(), &rv).await.unwrap().boxed();

    let replica_a = ClientMatch::UserAgent("replica-a".into());
    sim.faults().hold_client(replica_a.clone(), Duration::MAX);
    // The other replica is served as usual while the first is cut off.
    let created = tokio::time::timeout(
        Duration::from_secs(2),
        b.create(
            &PostParams::default(),
            &serde_json::from_value(config_map("x")).unwrap(),
        ),
    )
    .await
    .expect("the other client is not held")
    .unwrap();
    let a_get = tokio::spawn(async move { a.get("x").await });
    let quiet = tokio::time::timeout(Duration::from_millis(500), a_events.next()).await;
    assert!(quiet.is_err(), "a held client's watch delivered {quiet:?}");
    assert!(!a_get.is_finished(), "a held client's request was answered");
    assert_eq!(sim.faults().held_clients().len(), 1);

    sim.faults().release_client(&replica_a);
    let got = tokio::time::timeout(Duration::from_secs(2), a_get)
        .await
        .expect("the held request is served after the release")
        .unwrap()
        .unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    match tokio::time::timeout(Duration::from_secs(2), a_events.next()).await {
        Ok(Some(Ok(WatchEvent::Added(cm)))) => assert_eq!(cm.metadata.name.as_deref(), Some("x")),
        other => panic!("expected the queued ADDED event, got {other:?}"),
    }
}

#[tokio::test]
async fn clients_are_held_by_bearer_token_for_a_while_and_through_the_admin_endpoints() {
    use steerer_sim::faults::ClientMatch;

    let sim = start().await;
    let base = format!("http://{}", sim.api_addr());
    let http = reqwest::Client::new();
    let get_as = |token: &str| http.get(format!("{base}{CMS}")).bearer_auth(token).send();

    // A timed hold ends by itself.
    sim.faults().hold_client(
        ClientMatch::BearerToken("held".into()),
        Duration::from_millis(400),
    );
    let started = Instant::now();
    assert_eq!(get_as("free").await.unwrap().status(), 200);
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(get_as("held").await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(350));

    // A kube-rs client carries a token of its own in its Config.
    let mut config = sim.kube_config().await.unwrap();
    config.auth_info.token = Some("replica-t".to_owned().into());
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::default_namespaced(kube::Client::try_from(config).unwrap());
    sim.faults().hold_client(
        ClientMatch::BearerToken("replica-t".into()),
        Duration::from_millis(400),
    );
    let started = Instant::now();
    api.list(&Default::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(350));

    // The same through /sim: hold until released, listed in /sim/faults.
    let post = |path: &str, body: Value| http.post(format!("{base}/sim/{path}")).json(&body).send();
    let r = post("hold-client", json!({"userAgent": "script"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let faults: Value = http
        .get(format!("{base}/sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["clientHolds"][0]["userAgent"], "script");
    let held = tokio::spawn(
        http.get(format!("{base}{CMS}"))
            .header("User-Agent", "script/1")
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished());
    let r = post("release-client", json!({"userAgent": "script"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = tokio::time::timeout(Duration::from_secs(2), held)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = post("hold-client", json!({"userAgent": "a", "bearerToken": "b"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
