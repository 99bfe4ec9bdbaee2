//! Service-account tokens and access reviews on the simulator: the real kubectl's `create
//! token` and `auth can-i` (SelfSubjectAccessReviews, impersonating the service account),
//! kube-rs's typed TokenReview and SubjectAccessReview (what steerer sends), and expiry, which
//! only the simulator can show in a short test (its admin endpoint issues tokens of any
//! lifetime; kube-apiserver's shortest is 10 minutes).

use std::path::PathBuf;
use std::process::Output;

use k8s_openapi::api::authentication::v1::{
    SelfSubjectReview, TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use steerer_sim::Sim;

use crate::kubectl::kubectl_bin;
use crate::support::{artifacts, client, start};

const NS: &str = "ci";

/// A namespace, two ServiceAccounts, a Role with steerer's CI verbs bound to `deployer`, and
/// a viewer ClusterRole bound to `viewer` everywhere.
const RBAC: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: ci}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: deployer, namespace: ci}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: viewer, namespace: ci}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: steerer-ci, namespace: ci}
rules:
- apiGroups: [steerer.dev]
  resources: [rollouts]
  verbs: [start, get, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: deployer, namespace: ci}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: steerer-ci}
subjects:
- {kind: ServiceAccount, name: deployer}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: steerer-viewer}
rules:
- apiGroups: [steerer.dev]
  resources: [rollouts]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: steerer-viewers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: steerer-viewer}
subjects:
- {kind: ServiceAccount, name: viewer, namespace: ci}
"#;

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    async fn output(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(kubectl_bin())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run kubectl ({e}): set KUBECTL to a kubectl"))
    }

    /// stdout of a command that must succeed.
    async fn run(&self, args: &[&str]) -> String {
        let out = self.output(args).await;
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `kubectl auth can-i ARGS`: its answer and exit code (0 for yes, 1 for no).
    async fn can_i(&self, args: &[&str]) -> (String, Option<i32>) {
        let out = self.output(&[&["auth", "can-i"], args].concat()).await;
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            out.status.code(),
        )
    }
}

/// `create token` came with kubectl 1.24, `auth whoami` with 1.28.
async fn require_kubectl_1_28(kubectl: &Kubectl) {
    let version = kubectl.run(&["version", "--client", "-o", "json"]).await;
    let version: Value = serde_json::from_str(&version).unwrap_or(Value::Null);
    let minor: u32 = version["clientVersion"]["minor"]
        .as_str()
        .unwrap_or("0")
        .trim_end_matches('+')
        .parse()
        .unwrap_or(0);
    assert!(
        minor >= 28,
        "this test needs kubectl >= 1.28 (create token, auth whoami), not {}: tests/run.sh sets \
         KUBECTL to the one tests/cluster/build.sh builds",
        version["clientVersion"]["gitVersion"]
    );
}

async fn setup(sim: &Sim, dir: &std::path::Path) -> Kubectl {
    let kubeconfig = dir.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let kubectl = Kubectl {
        kubeconfig,
        cache: dir.join("cache"),
    };
    // With the Rollout CRD served, kubectl maps `rollouts.steerer.dev` to its group.
    let crd = artifacts().join("steerer/05-rollouts-crd.yaml");
    kubectl.run(&["apply", "-f", crd.to_str().unwrap()]).await;
    let rbac = dir.join("rbac.yaml");
    std::fs::write(&rbac, RBAC).unwrap();
    kubectl.run(&["apply", "-f", rbac.to_str().unwrap()]).await;
    kubectl
}

async fn review(client: &kube::Client, token: &str, audiences: Option<Vec<String>>) -> Value {
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences,
        },
        ..Default::default()
    };
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    serde_json::to_value(answer.status.unwrap()).unwrap()
}

#[tokio::test]
async fn kubectl_creates_tokens_and_asks_what_a_service_account_may_do() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubectl = setup(&sim, dir.path()).await;
    require_kubectl_1_28(&kubectl).await;
    let client = client(&sim).await;

    // `kubectl create token`: the default audience, another one, and a lifetime too short.
    let token = kubectl
        .run(&["create", "token", "deployer", "-n", NS])
        .await;
    let status = review(&client, &token, None).await;
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(
        status["user"]["username"],
        "system:serviceaccount:ci:deployer"
    );
    assert_eq!(
        status["user"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:ci",
            "system:authenticated"
        ])
    );
    assert_eq!(
        status["audiences"],
        json!(["https://kubernetes.default.svc"])
    );
    let steerer = kubectl
        .run(&[
            "create",
            "token",
            "deployer",
            "-n",
            NS,
            "--audience",
            "steerer",
            "--duration",
            "15m",
        ])
        .await;
    let status = review(&client, &steerer, Some(vec!["steerer".into()])).await;
    assert_eq!(status["audiences"], json!(["steerer"]), "{status}");
    let status = review(&client, &steerer, None).await;
    assert_eq!(
        status["error"],
        "[invalid bearer token, token audiences [\"steerer\"] is invalid for the target \
         audiences [\"https://kubernetes.default.svc\"]]"
    );
    let short = kubectl
        .output(&["create", "token", "deployer", "-n", NS, "--duration", "5m"])
        .await;
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr)
            .contains("may not specify a duration less than 10 minutes"),
        "{short:?}"
    );
    let missing = kubectl
        .output(&["create", "token", "nobody", "-n", NS])
        .await;
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("serviceaccounts \"nobody\" not found"),
        "{missing:?}"
    );

    // `kubectl auth can-i --as=...`: a SelfSubjectAccessReview, impersonating.
    let deployer = "--as=system:serviceaccount:ci:deployer";
    let viewer = "--as=system:serviceaccount:ci:viewer";
    for (args, answer) in [
        (
            vec![deployer, "start", "rollouts.steerer.dev", "-n", NS],
            "yes",
        ),
        (
            vec![deployer, "watch", "rollouts.steerer.dev", "-n", NS],
            "yes",
        ),
        (
            vec![deployer, "abort", "rollouts.steerer.dev", "-n", NS],
            "no",
        ),
        (
            vec![deployer, "start", "rollouts.steerer.dev", "-n", "default"],
            "no",
        ),
        (vec![deployer, "list", "rollouts.steerer.dev", "-A"], "no"),
        (vec![viewer, "list", "rollouts.steerer.dev", "-A"], "yes"),
        (
            vec![viewer, "promote", "rollouts.steerer.dev", "-n", NS],
            "no",
        ),
        (vec!["start", "rollouts.steerer.dev", "-n", NS], "yes"),
    ] {
        let (out, code) = kubectl.can_i(&args).await;
        assert_eq!(out, answer, "kubectl auth can-i {}", args.join(" "));
        assert_eq!(code, Some(if answer == "yes" { 0 } else { 1 }));
    }
    let whoami = kubectl
        .run(&["auth", "whoami", deployer, "-o", "json"])
        .await;
    let whoami: Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        "system:serviceaccount:ci:deployer"
    );

    // A SubjectAccessReview through `kubectl create -f`, read back with -o json.
    let sar = dir.path().join("sar.json");
    std::fs::write(
        &sar,
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
               "spec": {"user": "system:serviceaccount:ci:deployer",
                        "resourceAttributes": {"group": "steerer.dev", "resource": "rollouts",
                                               "verb": "start", "namespace": NS}}})
        .to_string(),
    )
    .unwrap();
    let out = kubectl
        .run(&["create", "-f", sar.to_str().unwrap(), "-o", "json"])
        .await;
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["status"]["allowed"], true, "{answer}");
    assert_eq!(
        answer["status"]["reason"],
        "RBAC: allowed by RoleBinding \"deployer/ci\" of Role \"steerer-ci\" to ServiceAccount \
         \"deployer/ci\""
    );
}

#[tokio::test]
async fn kube_rs_typed_reviews_answer_as_steerer_expects() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    setup(&sim, dir.path()).await;
    let client = client(&sim).await;

    // A TokenRequest through the `token` subresource, typed.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["steerer".into()],
            expiration_seconds: Some(900),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued: TokenRequest = accounts
        .create_subresource("token", "deployer", &PostParams::default(), &request)
        .await
        .unwrap();
    let status = issued.status.unwrap();
    let status = review(&client, &status.token, Some(vec!["steerer".into()])).await;
    assert_eq!(status["authenticated"], true, "{status}");

    // A SubjectAccessReview per verb, as steerer's authorization layer sends them.
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let ask = |verb: &str, namespace: &str| SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some("system:serviceaccount:ci:deployer".into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:ci".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some("steerer.dev".into()),
                resource: Some("rollouts".into()),
                verb: Some(verb.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    for (verb, namespace, allowed) in [
        ("start", NS, true),
        ("get", NS, true),
        ("watch", NS, true),
        ("list", NS, false),
        ("abort", NS, false),
        ("pause", NS, false),
        ("resume", NS, false),
        ("promote", NS, false),
        ("start", "default", false),
        ("list", "", false),
    ] {
        let answer = reviews
            .create(&PostParams::default(), &ask(verb, namespace))
            .await
            .unwrap();
        assert_eq!(
            answer.status.unwrap().allowed,
            allowed,
            "{verb} in {namespace:?}"
        );
    }
}

#[tokio::test]
async fn an_expired_token_fails_review_after_a_minute_of_leeway() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    setup(&sim, dir.path()).await;
    let client = client(&sim).await;

    // Expired 2 minutes ago: refused. Expired 30 s ago: still inside kube-apiserver's leeway.
    let expired = sim.issue_token(NS, "deployer", &[], -120).unwrap();
    let status = review(&client, &expired, None).await;
    assert_eq!(
        status["error"],
        "[invalid bearer token, service account token has expired]"
    );
    assert!(status.get("authenticated").is_none(), "{status}");
    let lenient = sim.issue_token(NS, "deployer", &[], -30).unwrap();
    assert_eq!(review(&client, &lenient, None).await["authenticated"], true);

    // A request carrying a token the simulator issued but that no longer authenticates is
    // refused where the caller matters (the "self" reviews), as kube-apiserver refuses it.
    let mut config = sim.kube_config().await.unwrap();
    config.auth_info.token = Some(expired.clone().into());
    let as_expired: Api<SelfSubjectReview> = Api::all(kube::Client::try_from(config).unwrap());
    match as_expired
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401, "{status:?}"),
        other => panic!("an expired token's request answered {other:?}"),
    }

    // The same through the admin endpoint, for scripts.
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("http://{}/sim/token", sim.api_addr()))
        .json(&json!({"namespace": NS, "serviceAccount": "deployer",
                      "audiences": ["steerer"], "expirationSeconds": -61}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["token"].as_str().unwrap();
    assert!(answer["expirationTimestamp"].is_string(), "{answer}");
    let status = review(&client, token, Some(vec!["steerer".into()])).await;
    assert_eq!(
        status["error"],
        "[invalid bearer token, service account token has expired]"
    );
    let missing = http
        .post(format!("http://{}/sim/token", sim.api_addr()))
        .json(&json!({"namespace": NS, "serviceAccount": "nobody", "expirationSeconds": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
