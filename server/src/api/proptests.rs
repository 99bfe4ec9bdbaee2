//! Property tests over the request surface: arbitrary StartRollout requests never panic, never
//! reach Kubernetes unless valid, and every name that reaches a PromQL query or a patch is a
//! DNS-1123 label (nothing that could close a quote or a selector).

use std::sync::Arc;
use std::time::Duration;

use super::service::rollout_service_server::RolloutService;
use proptest::prelude::*;
use steerer::v1 as pb;
use tokio_util::sync::CancellationToken;

use super::access::{Access, AllowAll, Caller};
use super::{Api, validate};
use crate::engine::{EngineConfig, Ports, Supervisor};
use crate::events::Hub;
use crate::metrics::fake::FakeMetrics;
use crate::router::fake::FakeRouter;
use crate::store::memory::MemoryStore;
use crate::workloads::fake::FakeWorkloads;

/// A DNS-1123 label, checked independently of the validator.
fn is_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A name: mostly one the fakes know or a plausible label, sometimes anything at all.
fn name(known: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(known.to_owned()),
        2 => "[a-z][a-z0-9-]{0,12}",
        2 => ".{0,70}",
        1 => Just(String::new()),
        1 => Just(format!("{known}\"}} or vector(1) #")),
    ]
}

fn duration() -> impl Strategy<Value = Option<prost_types::Duration>> {
    prop_oneof![
        Just(None),
        (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| Some(prost_types::Duration { seconds, nanos })),
        (0i64..120).prop_map(|seconds| Some(prost_types::Duration { seconds, nanos: 0 })),
    ]
}

fn analysis() -> impl Strategy<Value = Option<pb::Analysis>> {
    let numbers = (
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<f64>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<f64>()),
        proptest::option::of(any::<f64>()),
    );
    proptest::option::of((numbers, duration(), duration()).prop_map(
        |((step, max, threshold, failed, rate, latency), interval, deadline)| pb::Analysis {
            step_weight: step,
            max_weight: max,
            interval,
            success_rate_threshold: threshold,
            max_failed_checks: failed,
            progress_deadline: deadline,
            min_request_rate: rate,
            max_latency_p99_ms: latency,
            ..Default::default()
        },
    ))
}

fn request() -> impl Strategy<Value = pb::StartRolloutRequest> {
    (
        name("test"),
        name("podinfo"),
        prop_oneof![Just(String::new()), name("podinfo-canary")],
        prop_oneof![Just(String::new()), name("podinfo")],
        proptest::collection::btree_map(name("app"), ".{0,40}", 0..3),
        analysis(),
        prop_oneof![Just(String::new()), ".{0,80}"],
        proptest::option::of(any::<u32>()),
        proptest::option::of(
            (
                prop_oneof![
                    Just("VirtualService".to_owned()),
                    Just("virtualservice".to_owned()),
                    ".{0,20}"
                ],
                name("podinfo"),
            )
                .prop_map(|(kind, name)| pb::RouteRef { kind, name }),
        ),
        prop_oneof![
            Just(String::new()),
            Just("istio".to_owned()),
            Just("linkerd".to_owned()),
            ".{0,12}"
        ],
    )
        .prop_map(
            |(
                namespace,
                target,
                canary,
                virtual_service,
                images,
                analysis,
                request_id,
                replicas,
                route,
                observer,
            )| {
                pb::StartRolloutRequest {
                    namespace,
                    target,
                    canary,
                    virtual_service,
                    images: images.into_iter().collect(),
                    analysis,
                    request_id,
                    canary_replicas: replicas,
                    route,
                    observer,
                }
            },
        )
}

struct World {
    workloads: Arc<FakeWorkloads>,
    router: Arc<FakeRouter>,
    store: Arc<MemoryStore>,
    api: Api,
}

/// The fakes of a test world: GA podinfo (2 replicas) and its canary (1) in namespace `test`,
/// both at podinfo:1, a VirtualService splitting traffic between them, healthy metrics.
pub(crate) struct Fakes {
    pub workloads: Arc<FakeWorkloads>,
    pub router: Arc<FakeRouter>,
    pub store: Arc<MemoryStore>,
    pub ports: Ports,
}

pub(crate) fn fakes() -> Fakes {
    let workloads = Arc::new(FakeWorkloads::default());
    workloads.put(FakeWorkloads::settled("test", "podinfo", 2, "podinfo:1"));
    workloads.put(FakeWorkloads::settled(
        "test",
        "podinfo-canary",
        1,
        "podinfo:1",
    ));
    let router = Arc::new(FakeRouter::default());
    router.add("test", "podinfo", "podinfo", "podinfo-canary", 0);
    let metrics = Arc::new(FakeMetrics::default());
    metrics.set("test", "podinfo-canary", FakeMetrics::healthy(100.0, 50.0));
    metrics.set("test", "podinfo", FakeMetrics::healthy(100.0, 50.0));
    let store = Arc::new(MemoryStore::default());
    let ports = Ports {
        workloads: workloads.clone(),
        router: router.clone(),
        metrics,
        store: store.clone(),
        hub: Hub::new(),
        telemetry: Default::default(),
        changes: None,
        webhooks: Arc::new(crate::webhooks::fake::FakeWebhooks::default()),
    };
    Fakes {
        workloads,
        router,
        store,
        ports,
    }
}

fn world() -> World {
    let Fakes {
        workloads,
        router,
        store,
        ports,
    } = fakes();
    let supervisor = Arc::new(Supervisor::new(
        ports,
        EngineConfig {
            // Nothing moves during the test: the first step is an hour away.
            defaults: crate::domain::AnalysisSettings {
                interval: Duration::from_secs(3600),
                ..Default::default()
            },
            ..EngineConfig::default()
        },
    ));
    let api = Api::new(supervisor, Vec::new(), CancellationToken::new());
    World {
        workloads,
        router,
        store,
        api,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_start_requests_never_panic_and_only_valid_ones_change_anything(r in request()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let w = world();
        let mut call = tonic::Request::new(r.clone());
        call.extensions_mut().insert(Access::new(Caller::anonymous(), Arc::new(AllowAll)));
        let answer = runtime.block_on(w.api.start_rollout(call));
        let changed = !w.store.is_empty() || !w.router.writes().is_empty() || !w.workloads.calls().is_empty();
        match &answer {
            Ok(_) => {
                // Only well-formed names get this far: nothing that could break out of a
                // PromQL selector or a JSON-patch path.
                prop_assert!(is_label(&r.namespace) && is_label(&r.target), "{r:?}");
                prop_assert!(r.canary.is_empty() || is_label(&r.canary));
                prop_assert!(r.virtual_service.is_empty() || is_label(&r.virtual_service));
                if let Some(route) = &r.route {
                    prop_assert!(route.kind.eq_ignore_ascii_case("VirtualService"), "{r:?}");
                    prop_assert!(is_label(&route.name), "{r:?}");
                    prop_assert!(r.virtual_service.is_empty() || r.virtual_service == route.name);
                }
                prop_assert!(r.images.keys().all(|k| is_label(k)));
                prop_assert!(["", "istio", "linkerd"].contains(&r.observer.as_str()), "{r:?}");
                prop_assert_eq!(w.store.len(), 1);
            }
            Err(status) => {
                prop_assert!(!changed, "a refused start ({status:?}) changed something: {r:?}");
                if status.code() == tonic::Code::InvalidArgument {
                    prop_assert!(!status.message().is_empty());
                }
            }
        }
    }

    #[test]
    fn a_name_the_validator_accepts_cannot_leave_a_quoted_selector(s in ".{0,80}") {
        if validate::dns1123_label("name", &s).is_ok() {
            prop_assert!(is_label(&s), "{s:?}");
            let forbidden = ['"', '\\', '{', '}', '/', '~', '\n'];
            prop_assert!(!s.contains(forbidden), "{:?}", s);
        }
    }
}

/// The world above does start a valid request, so the property's Ok branch is reachable.
#[test]
fn a_valid_request_starts_in_this_world() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let w = world();
    let mut call = tonic::Request::new(pb::StartRolloutRequest {
        namespace: "test".into(),
        target: "podinfo".into(),
        ..Default::default()
    });
    call.extensions_mut()
        .insert(Access::new(Caller::anonymous(), Arc::new(AllowAll)));
    let started = runtime.block_on(w.api.start_rollout(call));
    assert!(started.is_ok(), "{started:?}");
    assert_eq!(w.store.len(), 1);
}
