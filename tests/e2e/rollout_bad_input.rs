//! Bad input gets a clear status and changes nothing: invalid names and settings
//! (INVALID_ARGUMENT), unknown objects (NOT_FOUND), a VirtualService that does not split
//! between the two Services (FAILED_PRECONDITION), a second active rollout (ALREADY_EXISTS),
//! a route and its `virtual_service` alias naming different routes (INVALID_ARGUMENT).

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{GA, Harness, NS, Options, test_server_config, virtual_services};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use steerer::v1::{
    AbortRolloutRequest, Analysis, GetRolloutRequest, ListRolloutsRequest, RouteRef,
    StartRolloutRequest, WatchRolloutRequest,
};
use tonic::Code;

/// Checks every 30 s: a rollout that stays put while a test looks at it.
fn slow() -> Analysis {
    Analysis {
        interval: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// Aborts rollout `id` and waits until it has ended.
async fn abort_and_wait(h: &mut Harness, id: &str) {
    h.client
        .abort_rollout(AbortRolloutRequest {
            id: id.to_owned(),
            reason: String::new(),
        })
        .await
        .unwrap();
    h.wait_until(id, Duration::from_secs(10), |r| {
        crate::common::is_terminal(r.phase())
    })
    .await;
}

fn route(kind: &str, name: &str) -> RouteRef {
    RouteRef {
        kind: kind.into(),
        name: name.into(),
    }
}

/// resourceVersions of everything a start could touch.
/// The server lists no rollout at all.
pub async fn assert_no_rollouts(h: &mut Harness) {
    let listed = h
        .client
        .list_rollouts(ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.rollouts.is_empty(), "{:?}", listed.rollouts);
}

async fn snapshot(h: &Harness) -> Vec<String> {
    let mut out = Vec::new();
    for d in Api::<Deployment>::namespaced(h.kube.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        out.push(format!("{:?}", d.metadata.resource_version));
    }
    for vs in virtual_services(&h.kube)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        out.push(format!("{:?}", vs.metadata.resource_version));
    }
    out
}

fn analysis(f: impl FnOnce(&mut Analysis)) -> Analysis {
    let mut a = Analysis::default();
    f(&mut a);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_change_nothing() {
    let mut h = Harness::start().await;
    // A VirtualService that routes to GA only.
    let other: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "ga-only", "namespace": NS},
        "spec": {"hosts": ["ga-only"], "http": [{"route": [{"destination": {"host": GA}, "weight": 100}]}]}
    }))
    .unwrap();
    virtual_services(&h.kube)
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let before = snapshot(&h).await;

    let base = StartRolloutRequest {
        namespace: NS.into(),
        target: GA.into(),
        ..Default::default()
    };
    let with = |f: &dyn Fn(&mut StartRolloutRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let cases: Vec<(&str, StartRolloutRequest, Code, &str)> = vec![
        (
            "upper-case namespace",
            with(&|r| r.namespace = "Test".into()),
            Code::InvalidArgument,
            "namespace",
        ),
        (
            "quote",
            with(&|r| r.target = "pod\"info".into()),
            Code::InvalidArgument,
            "DNS-1123",
        ),
        (
            "brace",
            with(&|r| r.target = "pod}info".into()),
            Code::InvalidArgument,
            "DNS-1123",
        ),
        (
            "regex match",
            with(&|r| r.target = "pod=~info".into()),
            Code::InvalidArgument,
            "DNS-1123",
        ),
        (
            "newline",
            with(&|r| r.canary = "pod\ninfo".into()),
            Code::InvalidArgument,
            "canary",
        ),
        (
            "300 characters",
            with(&|r| r.target = "a".repeat(300)),
            Code::InvalidArgument,
            "300 characters",
        ),
        (
            "empty target",
            with(&|r| r.target = String::new()),
            Code::InvalidArgument,
            "target is required",
        ),
        (
            "step 0",
            with(&|r| r.analysis = Some(analysis(|a| a.step_weight = Some(0)))),
            Code::InvalidArgument,
            "step_weight",
        ),
        (
            "step 101",
            with(&|r| r.analysis = Some(analysis(|a| a.step_weight = Some(101)))),
            Code::InvalidArgument,
            "step_weight",
        ),
        (
            "step above max",
            with(&|r| {
                r.analysis = Some(analysis(|a| {
                    a.step_weight = Some(60);
                    a.max_weight = Some(50);
                }))
            }),
            Code::InvalidArgument,
            "must not exceed",
        ),
        (
            "NaN threshold",
            with(&|r| r.analysis = Some(analysis(|a| a.success_rate_threshold = Some(f64::NAN)))),
            Code::InvalidArgument,
            "success_rate_threshold",
        ),
        (
            "threshold above 100",
            with(&|r| r.analysis = Some(analysis(|a| a.success_rate_threshold = Some(101.0)))),
            Code::InvalidArgument,
            "success_rate_threshold",
        ),
        (
            "negative interval",
            with(&|r| {
                r.analysis = Some(analysis(|a| {
                    a.interval = Some(prost_types::Duration {
                        seconds: -5,
                        nanos: 0,
                    })
                }))
            }),
            Code::InvalidArgument,
            "interval",
        ),
        (
            "infinite min rate",
            with(&|r| r.analysis = Some(analysis(|a| a.min_request_rate = Some(f64::INFINITY)))),
            Code::InvalidArgument,
            "min_request_rate",
        ),
        (
            "bad image",
            with(&|r| r.images = HashMap::from([("podinfo".into(), "x y\n".into())])),
            Code::InvalidArgument,
            "image",
        ),
        (
            "unknown deployment",
            with(&|r| r.target = "nope".into()),
            Code::NotFound,
            "deployment test/nope not found",
        ),
        (
            "unknown canary",
            with(&|r| r.canary = "nope-canary".into()),
            Code::NotFound,
            "test/nope-canary",
        ),
        (
            "unknown virtual service",
            with(&|r| r.virtual_service = "missing".into()),
            Code::NotFound,
            "VirtualService test/missing",
        ),
        (
            "VS without canary",
            with(&|r| r.virtual_service = "ga-only".into()),
            Code::FailedPrecondition,
            "no destination for the canary Service podinfo-canary",
        ),
        (
            "unknown container",
            with(&|r| r.images = HashMap::from([("sidecar".into(), "x:1".into())])),
            Code::FailedPrecondition,
            "no container named sidecar",
        ),
        (
            "route and alias naming different routes",
            with(&|r| {
                r.route = Some(route("VirtualService", GA));
                r.virtual_service = "ga-only".into();
            }),
            Code::InvalidArgument,
            "virtual_service \"ga-only\" and route virtualservice/podinfo name different routes",
        ),
        (
            "route of a kind steerer cannot drive",
            with(&|r| r.route = Some(route("Ingress", GA))),
            Code::InvalidArgument,
            "route.kind \"Ingress\" is not supported (supported: VirtualService, HTTPRoute, GRPCRoute)",
        ),
        (
            "unknown Gateway API route",
            with(&|r| r.route = Some(route("HTTPRoute", "missing"))),
            Code::NotFound,
            "HTTPRoute test/missing not found",
        ),
        (
            "unknown route",
            with(&|r| r.route = Some(route("VirtualService", "missing"))),
            Code::NotFound,
            "VirtualService test/missing",
        ),
    ];
    for (name, request, code, says) in cases {
        let status = h.client.start_rollout(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{name}: {}", status.message());
        assert!(
            status.message().contains(says),
            "{name}: {:?} does not say {says:?}",
            status.message()
        );
    }
    assert_eq!(
        snapshot(&h).await,
        before,
        "a rejected request changed the cluster"
    );
    assert_no_rollouts(&mut h).await;

    for (status, code) in [
        (
            h.client
                .get_rollout(GetRolloutRequest { id: "nope".into() })
                .await
                .unwrap_err(),
            Code::NotFound,
        ),
        (
            h.client
                .get_rollout(GetRolloutRequest { id: "a\"b".into() })
                .await
                .unwrap_err(),
            Code::InvalidArgument,
        ),
        (
            h.client
                .watch_rollout(WatchRolloutRequest {
                    id: "nope".into(),
                    from_sequence: 0,
                })
                .await
                .unwrap_err(),
            Code::NotFound,
        ),
        (
            h.client
                .abort_rollout(AbortRolloutRequest {
                    id: String::new(),
                    reason: String::new(),
                })
                .await
                .unwrap_err(),
            Code::InvalidArgument,
        ),
    ] {
        assert_eq!(status.code(), code, "{}", status.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_active_rollout_is_refused_and_request_id_returns_the_first() {
    let mut h = Harness::start().await;
    let slow = slow();
    let mut first = h.request(slow.clone());
    first.request_id = "ci-build-42".into();
    let started = h.start_rollout(first.clone()).await;
    let again = h.start_rollout(first).await;
    assert_eq!(again.id, started.id);

    let status = h.client.start_rollout(h.request(slow)).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains(&started.id),
        "{}",
        status.message()
    );
    let listed = h
        .client
        .list_rollouts(ListRolloutsRequest {
            namespace: NS.into(),
            active_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.rollouts.len(), 1);

    abort_and_wait(&mut h, &started.id).await;
    assert_eq!(h.weights().await, (100, 0));
}

/// A start names its route by kind and name (or by the `virtual_service` alias, or not at
/// all), and every rollout the server returns says its route, also when it was found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_named_by_kind_and_name_starts_and_every_rollout_says_its_route() {
    let mut h = Harness::start().await;
    let slow = slow();
    for (how, request) in [
        ("found", h.request(slow.clone())),
        (
            "by route",
            StartRolloutRequest {
                route: Some(route("VirtualService", GA)),
                ..h.request(slow.clone())
            },
        ),
        (
            "by route and alias alike",
            StartRolloutRequest {
                route: Some(route("virtualservice", GA)),
                virtual_service: GA.into(),
                ..h.request(slow.clone())
            },
        ),
    ] {
        let started = h.start_rollout(request).await;
        assert_eq!(started.route, Some(route("VirtualService", GA)), "{how}");
        assert_eq!(started.virtual_service, GA, "{how}");
        let got = h
            .client
            .get_rollout(GetRolloutRequest {
                id: started.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.route, Some(route("VirtualService", GA)), "{how}");
        abort_and_wait(&mut h, &started.id).await;
    }
    assert_eq!(h.weights().await, (100, 0));
}

/// A request over `--max-request-bytes` is refused before it is decoded and changes nothing;
/// the server goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_size_limit_is_refused_and_changes_nothing() {
    let mut server = test_server_config();
    server.max_request_bytes = 1024;
    let mut h = Harness::start_with(Options {
        server,
        ..Options::default()
    })
    .await;
    let before = snapshot(&h).await;
    let oversized = StartRolloutRequest {
        namespace: NS.into(),
        target: GA.into(),
        images: HashMap::from([(
            "podinfo".to_owned(),
            format!("ghcr.io/{}:1", "x".repeat(4096)),
        )]),
        ..Default::default()
    };
    let status = h.client.start_rollout(oversized).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("1024"), "{}", status.message());
    assert_no_rollouts(&mut h).await;
    assert_eq!(snapshot(&h).await, before);
}
