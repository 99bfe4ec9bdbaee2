//! Holds the simulator to a real kube-apiserver: one scripted sequence of API calls is played
//! against both (the real control plane from `tests/cluster/up.sh`), and what each answered is
//! compared step by step. Steps on which the simulator is known to differ are listed in
//! `KNOWN_DIFFERENCES` (and in the README's simulator section); they are asserted to still
//! differ, so the list cannot go stale.
//!
//! A second script ([`auth`]) holds the TokenRequest, TokenReview and access-review APIs to
//! kube-apiserver's answers, on the same two substrates. A third ([`kubectl`]) runs kubectl's
//! imperative commands, which send protobuf: with the project's kubectl (1.37) on both, and
//! with the machine's own kubectl on the simulator, held to the same answers.

mod auth;
mod kubectl;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::artifacts;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, WatchEvent, WatchParams};
use serde_json::{Value, json};
use steerer_sim::control_plane::{self, ControlPlane};
use steerer_sim::{Sim, SimConfig, Timing};

const NS: &str = "conformance";

/// Steps whose answers differ between the simulator and kube-apiserver, and why.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "delete namespace",
        "the simulator deletes a namespace at once; kube-apiserver marks it Terminating",
    ),
    (
        "kubectl create job",
        "the simulator serves no batch/v1 Jobs: kubectl reports that the server could not find \
         the requested resource (404); kube-apiserver creates the Job",
    ),
    (
        "an events.k8s.io event read through core/v1",
        "the simulator keeps events.k8s.io and core/v1 Events apart; kube-apiserver stores one \
         Event served by both APIs",
    ),
];

/// One substrate under test: a client, and how to make older resourceVersions unreachable.
struct Substrate {
    name: &'static str,
    client: kube::Client,
    /// What `client` was built from (for clients with other credentials).
    config: kube::Config,
    /// The same credentials as a kubeconfig file, for kubectl.
    kubeconfig: PathBuf,
    sim: Option<Sim>,
}

impl Substrate {
    /// Makes watches from resourceVersions read before now answer 410 Gone: the simulator
    /// compacts its log at once; kube-apiserver (started without its watch cache, so watches
    /// reach etcd) compacts etcd every `COMPACTION_SECS`, to the revision it saw at its
    /// previous compaction, so two intervals and a little later every earlier version is gone.
    async fn compact(&self) {
        match &self.sim {
            Some(sim) => sim.world().store.compact(),
            None => tokio::time::sleep(Duration::from_secs(2 * COMPACTION_SECS + 2)).await,
        }
    }
}

/// The real cluster's etcd compaction interval, in seconds.
const COMPACTION_SECS: u64 = 2;

/// What one request answered: its HTTP status and its body (JSON, or the text as a string).
async fn call(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<Value>,
) -> (u16, Value) {
    call_as(client, None, method, path, content_type, body).await
}

/// `call` with a User-Agent header (kube-rs sends none of its own).
async fn call_as(
    client: &kube::Client,
    user_agent: Option<&str>,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .header("Accept", "application/json");
    if let Some(user_agent) = user_agent {
        request = request.header("User-Agent", user_agent);
    }
    let request = request
        .body(kube::client::Body::from(
            body.map(|b| serde_json::to_vec(&b).unwrap())
                .unwrap_or_default(),
        ))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

/// The parts of an error answer a client acts on: code and reason.
fn error_of(status: u16, body: &Value) -> Value {
    json!({"http": status, "code": body["code"], "reason": body["reason"], "kind": body["kind"]})
}

/// An apply conflict as a client reads it: code, reason, message and the causes (field,
/// manager) in `details`, sorted (kube-apiserver lists the causes of one apply in no fixed
/// order).
fn conflict_of(status: u16, body: &Value) -> Value {
    let mut details = body["details"].clone();
    if let Some(causes) = details.get_mut("causes").and_then(Value::as_array_mut) {
        causes.sort_by_key(Value::to_string);
    }
    json!({"http": status, "code": body["code"], "reason": body["reason"],
           "message": body["message"], "details": details})
}

/// An object's `managedFields` without the times: manager, operation, apiVersion, subresource
/// and the fields each owns, sorted (kube-apiserver orders entries by time, to the second).
fn owners(body: &Value) -> Value {
    let mut entries: Vec<Value> = body["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            json!({"manager": e["manager"], "operation": e["operation"],
                   "apiVersion": e["apiVersion"], "subresource": e["subresource"],
                   "fieldsType": e["fieldsType"], "fieldsV1": e["fieldsV1"]})
        })
        .collect();
    entries.sort_by_key(Value::to_string);
    json!(entries)
}

fn config_map(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": NS, "labels": {"suite": "conformance"}},
           "data": {"k": value}})
}

fn deployment(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "app", "image": image},
                    {"name": "proxy", "image": "proxy:1"},
                ]},
            },
        },
    })
}

fn virtual_service(name: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"hosts": ["web"], "http": [{"route": [
            {"destination": {"host": "web"}, "weight": 100},
            {"destination": {"host": "web-canary"}, "weight": 0},
        ]}]},
    })
}

/// The names of the items of a list answer, in its order.
fn names_of(list: &Value) -> Vec<&Value> {
    list["items"]
        .as_array()
        .map(|items| items.iter().map(|i| &i["metadata"]["name"]).collect())
        .unwrap_or_default()
}

/// Polls `path` until `done` holds for its body, or panics after `limit`.
async fn until(client: &kube::Client, path: &str, limit: Duration, done: impl Fn(&Value) -> bool) {
    let start = Instant::now();
    loop {
        let (status, body) = call(client, "GET", path, JSON, None).await;
        if status == 200 && done(&body) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{path} did not reach the awaited state in {limit:?}; last answer {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deployment status reduced to what does not depend on timing or naming.
fn deployment_status(body: &Value) -> Value {
    let status = &body["status"];
    let mut conditions: Vec<Value> = status["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| json!([c["type"], c["status"], c["reason"]]))
        .collect();
    conditions.sort_by_key(|c| c.to_string());
    json!({
        "generation": body["metadata"]["generation"],
        "observedGeneration": status["observedGeneration"],
        "replicas": status["replicas"],
        "updatedReplicas": status["updatedReplicas"],
        "readyReplicas": status["readyReplicas"],
        "availableReplicas": status["availableReplicas"],
        "conditions": conditions,
    })
}

/// Server-side apply and field ownership: a first manager's apply, a second manager refused
/// (409) on a field the first owns, sharing a field by applying its value, taking fields over
/// with force, an apply that leaves fields out, and updates taking and removing fields. Then a
/// Lease the way kube-lease-manager holds one: acquired by apply, renewed and released by
/// strategic-merge patches under the same field manager.
async fn ssa_steps(client: &kube::Client, steps: &mut Vec<(&'static str, Value)>) {
    let cms = format!("/api/v1/namespaces/{NS}/configmaps");
    let applied = format!("{cms}/applied");
    let config = |data: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "applied", "namespace": NS}, "data": data})
    };
    let apply = |manager: &'static str, force: bool, data: Value| {
        let path = format!(
            "{applied}?fieldManager={manager}{}",
            if force { "&force=true" } else { "" }
        );
        let body = config(data);
        async move { call(client, "PATCH", &path, APPLY, Some(body)).await }
    };
    let ssa_result = |status: u16, body: &Value| json!({"http": status, "data": body["data"], "owners": owners(body)});

    let (status, body) = apply(
        "first",
        false,
        json!({"owner": "first", "shared": "x", "mine": "1"}),
    )
    .await;
    steps.push(("server-side apply creates", ssa_result(status, &body)));
    let (status, body) = apply("second", false, json!({"owner": "second"})).await;
    steps.push((
        "server-side apply by a second manager without force",
        conflict_of(status, &body),
    ));
    let (status, body) = apply("second", false, json!({"shared": "x"})).await;
    steps.push((
        "server-side apply of the same value shares the field",
        ssa_result(status, &body),
    ));
    let (status, body) = apply("second", true, json!({"owner": "second", "shared": "x"})).await;
    steps.push(("server-side apply forced", ssa_result(status, &body)));
    let (status, body) = apply("first", false, json!({"shared": "x"})).await;
    steps.push((
        "server-side apply leaving fields out",
        ssa_result(status, &body),
    ));
    let (status, body) = call(
        client,
        "PATCH",
        &format!("{applied}?fieldManager=editor"),
        MERGE,
        Some(json!({"data": {"shared": "y", "owner": null}})),
    )
    .await;
    steps.push((
        "merge patch of applied fields by another manager",
        ssa_result(status, &body),
    ));
    let (status, body) = apply("first", false, json!({"shared": "x"})).await;
    steps.push((
        "server-side apply of a field an update took over",
        conflict_of(status, &body),
    ));

    // A Lease, as kube-lease-manager uses one.
    let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
    let lease = format!("{leases}/leader");
    let (status, body) = call(
        client,
        "POST",
        &leases,
        JSON,
        Some(
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "leader"}}),
        ),
    )
    .await;
    steps.push((
        "create lease",
        json!({"http": status, "spec": body["spec"], "owners": owners(&body)}),
    ));
    let acquire = |identity: &'static str, time: &'static str| {
        let path = format!("{lease}?fieldManager=kube-lease-manager-{identity}");
        let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                          "spec": {"acquireTime": time, "renewTime": time,
                                   "holderIdentity": identity, "leaseDurationSeconds": 2}});
        async move { call(client, "PATCH", &path, APPLY, Some(body)).await }
    };
    let strategic = |identity: &'static str, spec: Value| {
        let path = format!("{lease}?fieldManager=kube-lease-manager-{identity}");
        let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": spec});
        async move { call(client, "PATCH", &path, STRATEGIC, Some(body)).await }
    };
    let lease_result = |status: u16, body: &Value| {
        json!({"http": status, "holder": body["spec"]["holderIdentity"],
               "spec": body["spec"], "owners": owners(body)})
    };
    let (status, body) = acquire("a", "2025-01-01T00:00:00.000000Z").await;
    steps.push(("lease acquired by apply", lease_result(status, &body)));
    let (status, body) = strategic("a", json!({"leaseTransitions": 1})).await;
    steps.push(("lease transitions counted", lease_result(status, &body)));
    let (status, body) = strategic(
        "a",
        json!({"renewTime": "2025-01-01T00:00:01.000000Z", "leaseDurationSeconds": 2}),
    )
    .await;
    steps.push(("lease renewed", lease_result(status, &body)));
    let (status, body) = acquire("b", "2025-01-01T00:00:02.000000Z").await;
    steps.push((
        "lease held by another: apply without force",
        conflict_of(status, &body),
    ));
    let (status, body) = strategic(
        "b",
        json!({"acquireTime": null, "renewTime": null, "holderIdentity": null,
               "leaseDurationSeconds": null}),
    )
    .await;
    steps.push(("expired lease released", lease_result(status, &body)));
    let (status, body) = acquire("b", "2025-01-01T00:00:05.000000Z").await;
    steps.push((
        "released lease acquired by another",
        lease_result(status, &body),
    ));
    let (status, body) = acquire("c", "2025-01-01T00:00:05.000000Z").await;
    steps.push((
        "lease acquired meanwhile: a third manager's apply",
        conflict_of(status, &body),
    ));
}

/// events.k8s.io Events the way kube's `Recorder` writes them: a create, then merge patches of
/// the whole Event carrying its series; a list by the object they regard; the writes
/// kube-apiserver refuses (no `eventTime`, a series of one, a changed note); and the Event
/// read through core/v1.
async fn event_steps(client: &kube::Client, steps: &mut Vec<(&'static str, Value)>) {
    let events = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "web.1", "namespace": NS},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                      "namespace": NS},
        "related": {"apiVersion": "steerer.dev/v1alpha1", "kind": "Rollout", "name": "r-1",
                    "namespace": NS},
        "reason": "WeightChanged", "action": "WeightChanged", "type": "Normal",
        "note": "rollout r-1: weight 10",
        "reportingController": "steerer", "reportingInstance": "steerer",
    });
    let summary = |status: u16, body: &Value| {
        json!({"http": status, "kind": body["kind"], "apiVersion": body["apiVersion"],
               "eventTime": body["eventTime"], "regarding": body["regarding"],
               "related": body["related"], "reason": body["reason"], "action": body["action"],
               "type": body["type"], "note": body["note"], "series": body["series"],
               "reportingController": body["reportingController"],
               "reportingInstance": body["reportingInstance"]})
    };
    let (status, body) = call(client, "POST", &events, JSON, Some(event.clone())).await;
    steps.push(("create an events.k8s.io event", summary(status, &body)));
    let one = format!("{events}/web.1");
    for (count, step) in [
        (2, "merge patch of an event with its series"),
        (3, "merge patch of an event's series again"),
    ] {
        let mut repeated = event.clone();
        repeated["series"] = json!({"count": count,
                                    "lastObservedTime": format!("2025-01-01T00:00:0{count}.000000Z")});
        let (status, body) = call(client, "PATCH", &one, MERGE, Some(repeated)).await;
        steps.push((step, summary(status, &body)));
    }
    let (status, body) = call(client, "GET", &one, JSON, None).await;
    steps.push(("get an event with a series", summary(status, &body)));
    let (status, body) = call(
        client,
        "GET",
        // By reason too: kube-controller-manager's Events about the Deployment are listed here
        // on kube-apiserver (see the known difference below).
        &format!("{events}?fieldSelector=regarding.name%3Dweb,reason%3DWeightChanged"),
        JSON,
        None,
    )
    .await;
    let names = names_of(&body);
    steps.push((
        "list events by the object they regard and their reason",
        json!({"http": status, "kind": body["kind"], "names": names}),
    ));

    let mut timeless = event.clone();
    timeless["metadata"]["name"] = json!("web.2");
    timeless.as_object_mut().unwrap().remove("eventTime");
    let (status, body) = call(client, "POST", &events, JSON, Some(timeless)).await;
    steps.push(("create an event without eventTime", error_of(status, &body)));
    let mut single = event.clone();
    single["metadata"]["name"] = json!("web.3");
    single["series"] = json!({"count": 1, "lastObservedTime": "2025-01-01T00:00:01.000000Z"});
    let (status, body) = call(client, "POST", &events, JSON, Some(single)).await;
    steps.push((
        "create an event with a series of one",
        error_of(status, &body),
    ));
    let (status, body) = call(
        client,
        "PATCH",
        &one,
        MERGE,
        Some(json!({"note": "rollout r-1: weight 20"})),
    )
    .await;
    steps.push(("merge patch of an event's note", error_of(status, &body)));

    let (status, body) = call(
        client,
        "GET",
        &format!("/api/v1/namespaces/{NS}/events/web.1"),
        JSON,
        None,
    )
    .await;
    steps.push((
        "an events.k8s.io event read through core/v1",
        json!({"http": status, "reason": body["reason"], "message": body["message"],
               "involvedObject": body["involvedObject"], "series": body["series"]}),
    ));
}

/// Plays the script against one substrate and returns (step, answer) pairs.
async fn script(substrate: &Substrate) -> Vec<(&'static str, Value)> {
    let client = &substrate.client;
    let mut steps: Vec<(&'static str, Value)> = Vec::new();
    let cms = format!("/api/v1/namespaces/{NS}/configmaps");
    let deployments = format!("/apis/apps/v1/namespaces/{NS}/deployments");
    let vss = format!("/apis/networking.istio.io/v1/namespaces/{NS}/virtualservices");

    let (status, body) = call(
        client,
        "POST",
        "/api/v1/namespaces",
        JSON,
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})),
    )
    .await;
    steps.push((
        "create namespace",
        json!({"http": status, "name": body["metadata"]["name"],
               "has uid": body["metadata"]["uid"].is_string(),
               "phase": body["status"]["phase"]}),
    ));

    // Create, create again, get, get a missing one.
    let (status, created) = call(client, "POST", &cms, JSON, Some(config_map("a", "1"))).await;
    steps.push((
        "create",
        json!({"http": status, "data": created["data"], "kind": created["kind"],
               "has resourceVersion": created["metadata"]["resourceVersion"].is_string(),
               "has creationTimestamp": created["metadata"]["creationTimestamp"].is_string()}),
    ));
    steps.push((
        "managedFields of a create without a User-Agent",
        owners(&created),
    ));
    let first_rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = call(client, "POST", &cms, JSON, Some(config_map("a", "1"))).await;
    steps.push(("create an existing name", error_of(status, &body)));
    let (status, body) = call(client, "GET", &format!("{cms}/a"), JSON, None).await;
    steps.push((
        "get",
        json!({"http": status, "data": body["data"],
               "same resourceVersion": body["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]}),
    ));
    let (status, body) = call(client, "GET", &format!("{cms}/missing"), JSON, None).await;
    steps.push(("get a missing object", error_of(status, &body)));

    // List by label.
    call(client, "POST", &cms, JSON, Some(config_map("b", "2"))).await;
    let (status, body) = call(
        client,
        "GET",
        &format!("{cms}?labelSelector=suite%3Dconformance"),
        JSON,
        None,
    )
    .await;
    let names = names_of(&body);
    steps.push((
        "list by label",
        json!({"http": status, "kind": body["kind"], "names": names,
               "has resourceVersion": body["metadata"]["resourceVersion"].is_string()}),
    ));

    // Watch from the version the first create returned: the second create, then a change.
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let params = WatchParams::default().labels("suite=conformance");
    let mut stream = api.watch(&params, &first_rv).await.unwrap().boxed();
    call(
        client,
        "PATCH",
        &format!("{cms}/a"),
        MERGE,
        Some(json!({"data": {"k": "changed"}})),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a watch event within 10 s")
            .expect("the watch stream ended")
            .unwrap();
        match event {
            WatchEvent::Added(cm) => seen.push(json!(["ADDED", cm.metadata.name])),
            WatchEvent::Modified(cm) => seen.push(json!(["MODIFIED", cm.metadata.name, cm.data])),
            WatchEvent::Deleted(cm) => seen.push(json!(["DELETED", cm.metadata.name])),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => seen.push(json!(["ERROR", e.code])),
        }
    }
    drop(stream);
    steps.push(("watch from a resourceVersion", json!(seen)));

    // Each patch type steerer and kubectl use.
    let (status, body) = call(
        client,
        "PATCH",
        &format!("{cms}/a"),
        MERGE,
        Some(json!({"data": {"k2": "v2"}})),
    )
    .await;
    steps.push(("merge patch", json!({"http": status, "data": body["data"]})));
    let (status, body) = call_as(
        client,
        Some("conformance-editor/1.0 (linux/amd64)"),
        "PATCH",
        &format!("{cms}/a"),
        MERGE,
        Some(json!({"data": {"k2": "by the editor"}})),
    )
    .await;
    steps.push((
        "managedFields of a patch by a client with a User-Agent",
        json!({"http": status, "owners": owners(&body)}),
    ));
    let (status, body) = call(
        client,
        "PATCH",
        &format!("{cms}/a"),
        JSON_PATCH,
        Some(json!([{"op": "replace", "path": "/data/k", "value": "v3"},
                    {"op": "remove", "path": "/data/k2"}])),
    )
    .await;
    steps.push(("json patch", json!({"http": status, "data": body["data"]})));
    let (status, body) = call(
        client,
        "PATCH",
        &format!("{cms}/a"),
        JSON_PATCH,
        Some(
            json!([{"op": "test", "path": "/data/k", "value": "not this"},
                    {"op": "replace", "path": "/data/k", "value": "never"}]),
        ),
    )
    .await;
    steps.push(("json patch with a failing test", error_of(status, &body)));
    let (_, body) = call(client, "GET", &format!("{cms}/a"), JSON, None).await;
    steps.push(("after the failed json patch", json!({"data": body["data"]})));

    ssa_steps(client, &mut steps).await;

    // A stale update: a replace carrying the first resourceVersion.
    let mut stale = config_map("a", "stale");
    stale["metadata"]["resourceVersion"] = json!(first_rv);
    let (status, body) = call(client, "PUT", &format!("{cms}/a"), JSON, Some(stale)).await;
    steps.push((
        "replace with a stale resourceVersion",
        error_of(status, &body),
    ));

    // A watch from a version that is gone.
    substrate.compact().await;
    let outcome = match api.watch(&params, "1").await {
        Err(kube::Error::Api(status)) => json!({"code": status.code, "reason": status.reason}),
        Err(other) => panic!("watch from version 1: {other}"),
        Ok(stream) => {
            let mut stream = stream.boxed();
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(Ok(WatchEvent::Error(e)))) => json!({"code": e.code, "reason": e.reason}),
                other => json!({"unexpected": format!("{other:?}")}),
            }
        }
    };
    steps.push(("watch from a compacted resourceVersion", outcome));

    // Deployment: strategic merge by container name, scale subresource, status through a
    // rolling update.
    let (status, _) = call(
        client,
        "POST",
        &deployments,
        JSON,
        Some(deployment("web", "app:1")),
    )
    .await;
    steps.push(("create deployment", json!({"http": status})));
    let web = format!("{deployments}/web");
    let available = |body: &Value| {
        let s = &body["status"];
        s["observedGeneration"] == body["metadata"]["generation"]
            && s["updatedReplicas"] == body["spec"]["replicas"]
            && s["availableReplicas"] == body["spec"]["replicas"]
            && s["replicas"] == body["spec"]["replicas"]
    };
    until(client, &web, Duration::from_secs(60), available).await;
    let (_, body) = call(client, "GET", &web, JSON, None).await;
    steps.push(("deployment available", deployment_status(&body)));
    let (status, body) = call(
        client,
        "PATCH",
        &web,
        STRATEGIC,
        Some(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "app:2"}]}}}})),
    )
    .await;
    let containers: Vec<Value> = body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!([c["name"], c["image"]]))
        .collect();
    steps.push((
        "strategic merge patch of one container",
        json!({"http": status, "containers": containers,
               "generation": body["metadata"]["generation"]}),
    ));
    until(client, &web, Duration::from_secs(60), available).await;
    let (_, body) = call(client, "GET", &web, JSON, None).await;
    steps.push((
        "deployment after a rolling update",
        deployment_status(&body),
    ));
    let (status, body) = call(client, "GET", &format!("{web}/scale"), JSON, None).await;
    steps.push((
        "get scale",
        json!({"http": status, "kind": body["kind"], "apiVersion": body["apiVersion"],
               "spec": body["spec"], "replicas": body["status"]["replicas"]}),
    ));
    let (status, body) = call(
        client,
        "PATCH",
        &format!("{web}/scale"),
        MERGE,
        Some(json!({"spec": {"replicas": 3}})),
    )
    .await;
    steps.push(("patch scale", json!({"http": status, "spec": body["spec"]})));
    until(client, &web, Duration::from_secs(60), available).await;
    let (_, body) = call(client, "GET", &web, JSON, None).await;
    steps.push(("deployment after scaling", deployment_status(&body)));

    // A custom resource: status subresource, generation, and a rejected object.
    let (status, body) = call(client, "POST", &vss, JSON, Some(virtual_service("web"))).await;
    steps.push((
        "create virtualservice",
        json!({"http": status, "generation": body["metadata"]["generation"],
               "owners": owners(&body)}),
    ));
    let vs = format!("{vss}/web");
    let (status, body) = call(
        client,
        "PATCH",
        &format!("{vs}/status"),
        MERGE,
        Some(json!({"status": {"observed": "x"}, "spec": {"hosts": ["ignored"]}})),
    )
    .await;
    steps.push((
        "patch status subresource",
        json!({"http": status, "status": body["status"], "hosts": body["spec"]["hosts"],
               "generation": body["metadata"]["generation"], "owners": owners(&body)}),
    ));
    let (status, body) = call(
        client,
        "PATCH",
        &vs,
        MERGE,
        Some(json!({"status": {"observed": "y"}, "metadata": {"labels": {"l": "1"}}})),
    )
    .await;
    steps.push((
        "status through the main resource is ignored",
        json!({"http": status, "status": body["status"],
               "generation": body["metadata"]["generation"], "owners": owners(&body)}),
    ));
    let (status, body) = call(
        client,
        "PATCH",
        &vs,
        MERGE,
        Some(json!({"spec": {"http": [{"route": [
            {"destination": {"host": "web"}, "weight": 90},
            {"destination": {"host": "web-canary"}, "weight": 10}]}]}})),
    )
    .await;
    steps.push((
        "spec change",
        json!({"http": status, "generation": body["metadata"]["generation"],
               "weights": [body["spec"]["http"][0]["route"][0]["weight"],
                           body["spec"]["http"][0]["route"][1]["weight"]]}),
    ));
    let mut bad = virtual_service("Bad_Name");
    bad["metadata"]["name"] = json!("Bad_Name");
    let (status, body) = call(client, "POST", &vss, JSON, Some(bad)).await;
    steps.push((
        "create a virtualservice with an invalid name",
        error_of(status, &body),
    ));
    let mut bad = virtual_service("kindless");
    bad["kind"] = json!("Gateway");
    let (status, body) = call(client, "POST", &vss, JSON, Some(bad)).await;
    steps.push((
        "create a virtualservice of the wrong kind",
        error_of(status, &body),
    ));

    event_steps(client, &mut steps).await;

    // Delete, then get.
    let (status, _) = call(client, "DELETE", &format!("{cms}/a"), JSON, None).await;
    steps.push(("delete", json!({"http": status})));
    let (status, body) = call(client, "GET", &format!("{cms}/a"), JSON, None).await;
    steps.push(("get after delete", error_of(status, &body)));
    let (status, body) = call(
        client,
        "DELETE",
        &format!("/api/v1/namespaces/{NS}"),
        JSON,
        None,
    )
    .await;
    steps.push((
        "delete namespace",
        json!({"http": status, "phase": body["status"]["phase"]}),
    ));
    steps
}

/// The steps on which `got` (from `substrate`) answered otherwise than kube-apiserver in
/// `expected`, and the known differences that no longer differ.
fn differences(
    expected: &[(&'static str, Value)],
    got: &[(&'static str, Value)],
    substrate: &str,
) -> Vec<String> {
    assert_eq!(
        expected.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>()
    );
    let mut report = Vec::new();
    for ((step, want), (_, have)) in expected.iter().zip(got) {
        let known = KNOWN_DIFFERENCES.iter().find(|(s, _)| s == step);
        match (want == have, known) {
            (true, None) | (false, Some(_)) => {}
            (false, None) => report.push(format!(
                "{step}:\n  kube-apiserver: {want}\n  {substrate}: {have}"
            )),
            (true, Some((_, why))) => report.push(format!(
                "{step}: listed as a known difference ({why}) but both answered {want}; \
                 remove it from KNOWN_DIFFERENCES and the README"
            )),
        }
    }
    report
}

/// The machine's own kubectl (`kubectl` on PATH, 1.33 on the machine it was last run on), other than the
/// project's: `STEERER_MACHINE_KUBECTL` names another.
fn machine_kubectl(project: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("STEERER_MACHINE_KUBECTL").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let project = project
        .canonicalize()
        .unwrap_or_else(|_| project.to_owned());
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("kubectl"))
        .find(|k| k.is_file() && k.canonicalize().is_ok_and(|k| k != project))
        .expect("no kubectl on PATH besides the project's: set STEERER_MACHINE_KUBECTL")
}

#[tokio::test]
async fn the_simulator_answers_the_script_as_kube_apiserver_does() {
    let real_cluster = tokio::task::spawn_blocking(|| {
        ControlPlane::start(&control_plane::Options {
            apiserver_args: format!(
                "--watch-cache=false --etcd-compaction-interval={COMPACTION_SECS}s"
            ),
            ..Default::default()
        })
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    let real_config = real_cluster.kube_config().await.unwrap();
    // The project's kubectl, built with the control plane.
    let project_kubectl = real_cluster.kubectl().to_owned();
    let real = Substrate {
        name: "kube-apiserver",
        client: kube::Client::try_from(real_config.clone()).unwrap(),
        config: real_config,
        kubeconfig: real_cluster.kubeconfig_path().to_owned(),
        sim: None,
    };
    let sim = Sim::start(SimConfig {
        timing: Timing::fast(),
        apply: vec![artifacts().join("istio")],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let sim_config = sim.kube_config().await.unwrap();
    let sim_dir = tempfile::tempdir().unwrap();
    let sim_kubeconfig = sim_dir.path().join("kubeconfig");
    sim.write_kubeconfig(&sim_kubeconfig).unwrap();
    let simulated = Substrate {
        name: "steerer-sim",
        client: kube::Client::try_from(sim_config.clone()).unwrap(),
        config: sim_config,
        kubeconfig: sim_kubeconfig,
        sim: Some(sim),
    };
    let machine_kubectl = machine_kubectl(&project_kubectl);

    let mut expected = script(&real).await;
    expected.extend(auth::script(&real).await);
    expected.extend(kubectl::undecodable(&real.client).await);
    let kubectl_expected = kubectl::script(&real, &project_kubectl).await;
    let mut got = script(&simulated).await;
    got.extend(auth::script(&simulated).await);
    got.extend(kubectl::undecodable(&simulated.client).await);
    got.extend(kubectl::script(&simulated, &project_kubectl).await);
    let machine_got = kubectl::script(&simulated, &machine_kubectl).await;
    expected.extend(kubectl_expected.iter().cloned());
    drop(real_cluster);

    let mut report = differences(&expected, &got, simulated.name);
    report.extend(differences(
        &kubectl_expected,
        &machine_got,
        &format!("steerer-sim with {}", machine_kubectl.display()),
    ));
    assert!(
        report.is_empty(),
        "the simulator and kube-apiserver differ:\n{}",
        report.join("\n")
    );
    if let Some(sim) = simulated.sim {
        sim.shutdown().await;
    }
}
