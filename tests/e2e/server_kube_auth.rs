//! `--auth kubernetes`: callers are the cluster's own (service-account tokens from the
//! TokenRequest API `kubectl create token` uses), checked with TokenReviews, and every call is
//! authorized with a SubjectAccessReview against the RBAC the cluster holds (the example
//! ClusterRoles of `artifacts/steerer/25-user-roles.yaml`, bound per namespace). Who did what
//! is recorded in the rollout, its events and the audit log.

use std::time::Duration;

use crate::common::{CANARY, Harness, NS, Options};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{Api, PostParams};
use serde_json::json;
use steerer::v1::rollout_service_client::RolloutServiceClient;
use steerer::v1::{
    AbortRolloutRequest, Analysis, GetRolloutRequest, ListRolloutsRequest, Phase,
    WatchRolloutRequest,
};
use steerer_server::api::kubeauth::KubeAuthConfig;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds the caller's bearer token to each request.
type Interceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

type Client = RolloutServiceClient<InterceptedService<Channel, Interceptor>>;

/// A client presenting `token` (or none).
async fn client_with(h: &Harness, token: Option<String>) -> Client {
    let channel = Channel::from_shared(format!("http://{}", h.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let interceptor: Interceptor = Box::new(move |mut request: tonic::Request<()>| {
        if let Some(token) = &token {
            let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    });
    RolloutServiceClient::with_interceptor(channel, interceptor)
}

/// The example ClusterRoles, as shipped.
async fn apply_example_roles(h: &Harness) {
    let text =
        std::fs::read_to_string(crate::common::artifacts().join("steerer/25-user-roles.yaml"))
            .unwrap();
    let roles: Api<ClusterRole> = Api::all(h.kube.clone());
    for document in serde_yaml::Deserializer::from_str(&text) {
        let role: ClusterRole = serde::Deserialize::deserialize(document).unwrap();
        roles.create(&PostParams::default(), &role).await.unwrap();
    }
}

/// A ServiceAccount in the test namespace bound to one of the example ClusterRoles (or to
/// none), and a token for it.
async fn account(h: &Harness, name: &str, role: Option<&str>, audience: Option<&str>) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(h.kube.clone(), NS);
    if accounts.get_opt(name).await.unwrap().is_none() {
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        accounts.create(&PostParams::default(), &sa).await.unwrap();
        if let Some(role) = role {
            let binding: RoleBinding = serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-{role}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NS}],
            }))
            .unwrap();
            Api::<RoleBinding>::namespaced(h.kube.clone(), NS)
                .create(&PostParams::default(), &binding)
                .await
                .unwrap();
        }
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_owned()]).unwrap_or_default(),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

fn options(audit: &std::path::Path) -> Options {
    let mut options = Options::default();
    options.server.kubernetes_auth = Some(KubeAuthConfig {
        audiences: Vec::new(),
        cache_ttl: Duration::from_secs(2),
    });
    options.server.audit_log = Some(audit.to_owned());
    options
}

fn seconds(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

/// Waits until RBAC objects just created take effect (a real API server's authorizer reads
/// them from a cache).
async fn until_allowed(client: &mut Client, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .get_rollout(GetRolloutRequest { id: id.into() })
            .await
        {
            Err(status)
                if status.code() == tonic::Code::PermissionDenied
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_account_may_do_what_its_role_grants_and_the_audit_log_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let h = Harness::start_with(options(&audit)).await;
    apply_example_roles(&h).await;
    let ci = account(&h, "deployer", Some("steerer-ci"), None).await;
    let viewer = account(&h, "dashboard", Some("steerer-viewer"), None).await;
    let operator = account(&h, "oncall", Some("steerer-operator"), None).await;
    let outsider = account(&h, "stranger", None, None).await;
    let other_audience = account(&h, "deployer", None, Some("not-steerer")).await;

    // CI starts a rollout (a real API server may take a moment to see the new bindings).
    let mut ci_client = client_with(&h, Some(ci)).await;
    let request = h.request(Analysis {
        interval: Some(seconds(30)),
        ..Default::default()
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let started = loop {
        match ci_client.start_rollout(request.clone()).await {
            Ok(started) => break started.into_inner(),
            Err(status)
                if status.code() == tonic::Code::PermissionDenied
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    assert_eq!(
        started.created_by,
        format!("system:serviceaccount:{NS}:deployer")
    );
    ci_client
        .watch_rollout(WatchRolloutRequest {
            id: started.id.clone(),
            from_sequence: 0,
        })
        .await
        .unwrap();
    let refused = ci_client
        .abort_rollout(AbortRolloutRequest {
            id: started.id.clone(),
            reason: "not mine to abort".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        refused.message(),
        format!(
            "system:serviceaccount:{NS}:deployer may not abort rollouts.steerer.dev in namespace {NS}"
        )
    );
    let refused = ci_client
        .list_rollouts(ListRolloutsRequest {
            namespace: NS.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // The viewer reads but changes nothing; across namespaces it sees only its own.
    let mut viewer_client = client_with(&h, Some(viewer)).await;
    until_allowed(&mut viewer_client, &started.id).await;
    let listed = viewer_client
        .list_rollouts(ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.rollouts.len(), 1);
    let refused = viewer_client
        .start_rollout(request.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("may not start"),
        "{}",
        refused.message()
    );

    // A stranger may not even look; no token, a bad one, or one for another audience are
    // not callers at all.
    let mut stranger = client_with(&h, Some(outsider)).await;
    let refused = stranger
        .get_rollout(GetRolloutRequest {
            id: started.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let stranger_list = stranger
        .list_rollouts(ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        stranger_list.rollouts.is_empty(),
        "a caller sees only namespaces it may list"
    );
    // Server information needs a caller the cluster knows, and no verb.
    let info = stranger
        .get_server_info(steerer::v1::GetServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.auth, "kubernetes");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    for token in [None, Some("not-a-token".to_owned()), Some(other_audience)] {
        let mut anonymous = client_with(&h, token).await;
        let refused = anonymous
            .get_rollout(GetRolloutRequest {
                id: started.id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        let refused = anonymous
            .get_server_info(steerer::v1::GetServerInfoRequest {})
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    }

    // The operator aborts; the event says who.
    let mut oncall = client_with(&h, Some(operator)).await;
    until_allowed(&mut oncall, &started.id).await;
    oncall
        .abort_rollout(AbortRolloutRequest {
            id: started.id.clone(),
            reason: "bad dashboard".into(),
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let done = loop {
        let r = oncall
            .get_rollout(GetRolloutRequest {
                id: started.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if r.phase() == Phase::Aborted || tokio::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done.phase(), Phase::Aborted);
    let by = format!("(by system:serviceaccount:{NS}:oncall)");
    let mut stream = oncall
        .watch_rollout(WatchRolloutRequest {
            id: started.id.clone(),
            from_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
    {
        events.push(event);
    }
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("bad dashboard") && e.message.contains(&by)),
        "{:?}",
        events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    let _ = CANARY;

    // One audit line per mutating call, refused ones included.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["caller"].as_str().unwrap().to_owned(),
                l["rpc"].as_str().unwrap().to_owned(),
                l["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let deployer = format!("system:serviceaccount:{NS}:deployer");
    let oncall_user = format!("system:serviceaccount:{NS}:oncall");
    for expected in [
        (deployer.clone(), "StartRollout", "OK"),
        (deployer.clone(), "AbortRollout", "PERMISSION_DENIED"),
        (
            format!("system:serviceaccount:{NS}:dashboard"),
            "StartRollout",
            "PERMISSION_DENIED",
        ),
        (oncall_user.clone(), "AbortRollout", "OK"),
    ] {
        assert!(
            seen.contains(&(
                expected.0.clone(),
                expected.1.to_owned(),
                expected.2.to_owned()
            )),
            "{expected:?} not in {seen:?}"
        );
    }
    let abort_ok = lines
        .iter()
        .find(|l| l["rpc"] == "AbortRollout" && l["outcome"] == "OK")
        .unwrap();
    assert_eq!(abort_ok["namespace"], NS);
    assert_eq!(abort_ok["target"], crate::common::GA);
    assert_eq!(abort_ok["rollout"], started.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_an_unanswering_api_server_and_a_stream_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(&dir.path().join("audit.jsonl"));
    options.server.limits.watches_per_caller = 1;
    let h = Harness::start_with(options).await;
    apply_example_roles(&h).await;
    let token = account(&h, "oncall", Some("steerer-operator"), None).await;
    let sim = h.sim();

    // Expired a while ago: never a caller.
    let expired = sim.issue_token(NS, "oncall", &[], -120).unwrap();
    let refused = client_with(&h, Some(expired))
        .await
        .list_rollouts(ListRolloutsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let mut client = client_with(&h, Some(token.clone())).await;
    let started = client
        .start_rollout(h.request(Analysis {
            interval: Some(seconds(30)),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    // One open watch per caller: the second is refused until the first ends.
    let first = client
        .watch_rollout(WatchRolloutRequest {
            id: started.id.clone(),
            from_sequence: 0,
        })
        .await
        .unwrap();
    let refused = client
        .watch_rollout(WatchRolloutRequest {
            id: started.id.clone(),
            from_sequence: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client
            .watch_rollout(WatchRolloutRequest {
                id: started.id.clone(),
                from_sequence: 0,
            })
            .await
        {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the cap never freed up"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    // The API server cannot answer reviews: fail closed, never a pass. (The cached answers
    // expire first.)
    sim.faults().fail_requests(
        1.0,
        steerer_sim::faults::Failure::InternalError,
        steerer_sim::faults::Scope::any().resource("subjectaccessreviews"),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = client
        .get_rollout(GetRolloutRequest {
            id: started.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    sim.faults().clear();
    let fresh = client_with(&h, Some(token))
        .await
        .get_rollout(GetRolloutRequest {
            id: started.id.clone(),
        })
        .await;
    assert!(fresh.is_ok(), "{fresh:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_the_caller_by_its_common_name() {
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(&dir.path().join("audit.jsonl"));
    options.server.tls = Some(steerer_server::TlsFiles {
        cert: tls.join("server.pem"),
        key: tls.join("server.key"),
        client_ca: Some(tls.join("ca.pem")),
    });
    let h = Harness::start_with(options).await;
    apply_example_roles(&h).await;
    // The fixture's client certificate says CN=ci-pipeline.
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "ci-pipeline-deploys"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "steerer-ci"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ci-pipeline"}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(h.kube.clone(), NS)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let endpoint = format!("https://{}", h.addr());
    let pipeline = steerer_client::Client::builder(&endpoint)
        .ca_certificate_file(tls.join("ca.pem"))
        .client_identity_files(tls.join("client.pem"), tls.join("client.key"))
        .connect()
        .await
        .unwrap();
    let request = h.request(Analysis {
        interval: Some(seconds(30)),
        ..Default::default()
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let started = loop {
        match pipeline.start(request.clone()).await {
            Ok(started) => break started,
            Err(error) if tokio::time::Instant::now() < deadline => {
                assert!(error.to_string().contains("may not start"), "{error}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(error) => panic!("{error}"),
        }
    };
    assert_eq!(started.created_by, "ci-pipeline");
    let refused = pipeline
        .abort(&started.id, "not mine".to_owned())
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains(&format!(
            "ci-pipeline may not abort rollouts.steerer.dev in namespace {NS}"
        )),
        "{refused}"
    );
    // Without a certificate or a token the TLS connection is accepted, the call is not.
    let anonymous = steerer_client::Client::builder(&endpoint)
        .ca_certificate_file(tls.join("ca.pem"))
        .connect()
        .await
        .unwrap();
    let refused = anonymous.get(&started.id).await.unwrap_err();
    assert!(
        matches!(refused, steerer_client::ClientError::Unauthenticated { .. }),
        "{refused:?}"
    );
}
