//! The authentication and authorization part of the conformance script: ServiceAccounts, a
//! Role with steerer's custom verbs on `steerer.dev` rollouts, RoleBindings and
//! ClusterRoleBindings, TokenRequests (default and other audience, bad lifetimes),
//! TokenReviews (valid, other audience, garbage, a deleted and a recreated ServiceAccount),
//! SubjectAccessReviews (allowed, denied, another namespace, cluster-wide list, a group
//! subject, wildcards, a subresource by name, `system:masters`, a missing role, a URL) and the
//! "self" reviews, as the admin, impersonating and with a service account's own token.
//!
//! Tokens and uids differ between the substrates by nature: answers keep what a client acts on
//! (codes, `authenticated`, user names, groups, audiences, reasons and error strings), with the
//! uids of the step replaced by names. kube-apiserver remembers a successful review for 10 s
//! and reads ServiceAccounts from an informer that lags a little, so a token is reviewed for
//! the first time only after its ServiceAccount is gone and the informer has seen it go.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{JSON, Substrate, call};

/// The namespaces of this script (the main script deletes its own at the end).
const NS: &str = "conformance-auth";
const OTHER: &str = "conformance-auth-other";
const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

/// An answer with `uids` replaced by their names, so that it compares across substrates.
fn without_uids(value: Value, uids: &[(&str, &str)]) -> Value {
    let mut text = value.to_string();
    for (uid, name) in uids {
        if !uid.is_empty() {
            text = text.replace(uid, name);
        }
    }
    serde_json::from_str(&text).unwrap()
}

/// A failed request as a client reads it: code, reason, message and the causes.
fn failure(status: u16, body: &Value) -> Value {
    json!({"http": status, "code": body["code"], "reason": body["reason"],
           "message": body["message"], "causes": body["details"]["causes"]})
}

/// The claims of a JWT.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap_or("");
    URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

fn token_request(spec: Value) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
}

fn token_review(token: &str, audiences: Option<&[&str]>) -> Value {
    let mut spec = json!({"token": token});
    if let Some(audiences) = audiences {
        spec["audiences"] = json!(audiences);
    }
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec})
}

fn rollouts(verb: &str, namespace: &str) -> Value {
    json!({"group": "steerer.dev", "resource": "rollouts", "verb": verb, "namespace": namespace})
}

fn service_account_groups(namespace: &str) -> Value {
    json!([
        "system:serviceaccounts",
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated"
    ])
}

/// `spec` of a SubjectAccessReview for a service account of `NS`.
fn as_service_account(name: &str, attributes: Value) -> Value {
    json!({"user": format!("system:serviceaccount:{NS}:{name}"),
           "groups": service_account_groups(NS), "resourceAttributes": attributes})
}

/// A review's decision as a client reads it.
fn decision(status: u16, body: &Value) -> Value {
    if status != 201 {
        return failure(status, body);
    }
    json!({"http": status, "allowed": body["status"]["allowed"],
           "denied": body["status"]["denied"], "reason": body["status"]["reason"]})
}

/// A TokenReview's answer as a client reads it: who, with which groups and for which
/// audiences, or the error; whether the uid is the ServiceAccount's and the credential id the
/// token's `jti`.
fn review_of(status: u16, body: &Value, token: &str, uid: &str) -> Value {
    if status != 201 {
        return failure(status, body);
    }
    let s = &body["status"];
    let jti = claims(token)["jti"].as_str().unwrap_or("").to_owned();
    let extra = &s["user"]["extra"];
    json!({
        "http": status,
        "authenticated": s["authenticated"],
        "username": s["user"]["username"],
        "uid is the ServiceAccount's": s["user"]["uid"] == uid,
        "groups": s["user"]["groups"],
        "extra keys": extra.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()),
        "credential id is the token's": extra["authentication.kubernetes.io/credential-id"]
            == json!([format!("JTI={jti}")]),
        "audiences": s["audiences"],
        "error": s["error"],
    })
}

async fn create(client: &kube::Client, path: &str, body: Value) -> (u16, Value) {
    call(client, "POST", path, JSON, Some(body)).await
}

/// Creates a ServiceAccount in `NS` and returns its uid.
async fn service_account(client: &kube::Client, name: &str) -> (u16, String) {
    let (status, body) = create(
        client,
        &format!("/api/v1/namespaces/{NS}/serviceaccounts"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
    )
    .await;
    (
        status,
        body["metadata"]["uid"].as_str().unwrap_or("").to_owned(),
    )
}

/// A request with extra headers (impersonation), as the given client.
async fn call_with(
    client: &kube::Client,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Value) {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("Content-Type", JSON)
        .header("Accept", JSON);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// RBAC objects: a Role with steerer's verbs bound to a ServiceAccount, a viewer ClusterRole
/// bound to a group and a ServiceAccount cluster-wide, an operator ClusterRole of wildcards
/// bound to a user in one namespace, a binding to a missing Role and a URL rule.
async fn rbac_objects(client: &kube::Client, steps: &mut Vec<(&'static str, Value)>) {
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name}, "rules": rules})
    };
    let cluster_role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name}, "rules": rules})
    };
    let binding = |kind: &str, name: &str, role_kind: &str, role: &str, subjects: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
               "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                           "name": role},
               "subjects": subjects})
    };
    let objects = [
        (
            format!("{RBAC}/namespaces/{NS}/roles"),
            role(
                "steerer-ci",
                json!([
                    {"apiGroups": ["steerer.dev"], "resources": ["rollouts"],
                     "verbs": ["start", "get", "watch"]},
                    {"apiGroups": ["steerer.dev"], "resources": ["rollouts/status"],
                     "verbs": ["get"], "resourceNames": ["web"]},
                ]),
            ),
        ),
        (
            format!("{RBAC}/namespaces/{NS}/rolebindings"),
            binding(
                "RoleBinding",
                "ci",
                "Role",
                "steerer-ci",
                json!([{"kind": "ServiceAccount", "name": "deployer"}]),
            ),
        ),
        (
            format!("{RBAC}/clusterroles"),
            cluster_role(
                "conformance-steerer-viewer",
                json!([{"apiGroups": ["steerer.dev"], "resources": ["rollouts"],
                        "verbs": ["get", "list", "watch"]}]),
            ),
        ),
        (
            format!("{RBAC}/clusterrolebindings"),
            binding(
                "ClusterRoleBinding",
                "conformance-steerer-viewers",
                "ClusterRole",
                "conformance-steerer-viewer",
                json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                        "name": "conformance-viewers"},
                       {"kind": "ServiceAccount", "name": "viewer", "namespace": NS}]),
            ),
        ),
        (
            format!("{RBAC}/clusterroles"),
            cluster_role(
                "conformance-steerer-operator",
                json!([{"apiGroups": ["steerer.dev"], "resources": ["*"], "verbs": ["*"]}]),
            ),
        ),
        (
            format!("{RBAC}/namespaces/{OTHER}/rolebindings"),
            binding(
                "RoleBinding",
                "operators",
                "ClusterRole",
                "conformance-steerer-operator",
                json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                        "name": "alice"}]),
            ),
        ),
        (
            format!("{RBAC}/namespaces/{NS}/rolebindings"),
            binding(
                "RoleBinding",
                "dangling",
                "Role",
                "missing",
                json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                        "name": "dan"}]),
            ),
        ),
        (
            format!("{RBAC}/clusterroles"),
            cluster_role(
                "conformance-urls",
                json!([{"nonResourceURLs": ["/steerer/*", "/steerer-health"],
                        "verbs": ["get"]}]),
            ),
        ),
        (
            format!("{RBAC}/clusterrolebindings"),
            binding(
                "ClusterRoleBinding",
                "conformance-urls",
                "ClusterRole",
                "conformance-urls",
                json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                        "name": "bob"}]),
            ),
        ),
    ];
    let mut codes = Vec::new();
    for (path, body) in objects {
        codes.push(create(client, &path, body).await.0);
    }
    steps.push(("auth: create RBAC objects", json!(codes)));
}

/// TokenRequests and TokenReviews.
async fn tokens(substrate: &Substrate, deployer_uid: &str, steps: &mut Vec<(&'static str, Value)>) {
    let client = &substrate.client;
    let sas = format!("/api/v1/namespaces/{NS}/serviceaccounts");
    let reviews = "/apis/authentication.k8s.io/v1/tokenreviews";
    let uids = [(deployer_uid, "DEPLOYER-UID")];

    // The default audience and lifetime.
    let (status, body) = create(
        client,
        &format!("{sas}/deployer/token"),
        token_request(json!({})),
    )
    .await;
    let default_token = body["status"]["token"].as_str().unwrap_or("").to_owned();
    let c = claims(&default_token);
    let keys: Vec<String> = c
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    steps.push((
        "auth: token request with defaults",
        without_uids(
            json!({
                "http": status, "kind": body["kind"], "apiVersion": body["apiVersion"],
                "metadata": {"name": body["metadata"]["name"],
                             "namespace": body["metadata"]["namespace"],
                             "uid": body["metadata"]["uid"]},
                "spec": body["spec"],
                "owners": super::owners(&body),
                "has expirationTimestamp": body["status"]["expirationTimestamp"].is_string(),
                "token parts": default_token.split('.').count(),
                "claim names": keys,
                "aud": c["aud"], "iss": c["iss"], "sub": c["sub"],
                "kubernetes.io": c["kubernetes.io"],
                "lifetime": c["exp"].as_i64().zip(c["iat"].as_i64()).map(|(e, i)| e - i),
                "nbf is iat": c["nbf"] == c["iat"],
            }),
            &uids,
        ),
    ));
    // Another audience, the shortest lifetime.
    let (status, body) = create(
        client,
        &format!("{sas}/deployer/token"),
        token_request(json!({"audiences": ["steerer"], "expirationSeconds": 600})),
    )
    .await;
    let steerer_token = body["status"]["token"].as_str().unwrap_or("").to_owned();
    let c = claims(&steerer_token);
    steps.push((
        "auth: token request for another audience",
        json!({"http": status, "spec": body["spec"], "aud": c["aud"],
               "lifetime": c["exp"].as_i64().zip(c["iat"].as_i64()).map(|(e, i)| e - i)}),
    ));
    for (step, seconds) in [
        ("auth: token request for 60 s", json!(60)),
        ("auth: token request for 0 s", json!(0)),
        ("auth: token request for 2^33 s", json!(1_u64 << 33)),
    ] {
        let (status, body) = create(
            client,
            &format!("{sas}/deployer/token"),
            token_request(json!({"expirationSeconds": seconds})),
        )
        .await;
        steps.push((step, failure(status, &body)));
    }
    let (status, body) = create(
        client,
        &format!("{sas}/missing/token"),
        token_request(json!({})),
    )
    .await;
    steps.push((
        "auth: token request for a missing service account",
        failure(status, &body),
    ));
    let (status, body) = create(
        client,
        &format!("{sas}/deployer/token"),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "metadata": {"name": "someone-else"}, "spec": {}}),
    )
    .await;
    steps.push((
        "auth: token request naming another service account",
        failure(status, &body),
    ));

    // Reviews.
    let review = |token: &str, audiences: Option<&[&str]>| {
        let body = token_review(token, audiences);
        async move { create(client, reviews, body).await }
    };
    let (status, body) = review(&default_token, None).await;
    steps.push((
        "auth: review a valid token",
        review_of(status, &body, &default_token, deployer_uid),
    ));
    let (status, body) = review(&default_token, Some(&["steerer"])).await;
    steps.push((
        "auth: review a token for an audience it lacks",
        review_of(status, &body, &default_token, deployer_uid),
    ));
    let (status, body) = review(&steerer_token, None).await;
    steps.push((
        "auth: review another audience's token for the API audience",
        review_of(status, &body, &steerer_token, deployer_uid),
    ));
    let (status, body) = review(&steerer_token, Some(&["other", "steerer"])).await;
    steps.push((
        "auth: review another audience's token for that audience",
        review_of(status, &body, &steerer_token, deployer_uid),
    ));
    let (status, body) = review("garbage", None).await;
    steps.push((
        "auth: review a garbage token",
        review_of(status, &body, "garbage", deployer_uid),
    ));
    let (status, body) = review("", None).await;
    steps.push(("auth: review an empty token", failure(status, &body)));

    // A deleted, then recreated ServiceAccount. kube-apiserver reads ServiceAccounts from an
    // informer, which lags a little behind: wait until it has seen each change (polling with
    // audiences of their own, so that no success is cached for the recorded review).
    let api_audience = claims(&default_token)["aud"][0]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let settled = |token: String, done: fn(&Value) -> bool| {
        let api_audience = api_audience.clone();
        async move {
            let started = std::time::Instant::now();
            for i in 0.. {
                let poll = format!("poll-{i}");
                let audiences = [api_audience.as_str(), poll.as_str()];
                let (_, body) =
                    create(client, reviews, token_review(&token, Some(&audiences))).await;
                if done(&body["status"]) || started.elapsed() > std::time::Duration::from_secs(30) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    let (_, old_uid) = service_account(client, "recreated").await;
    let (_, body) = create(
        client,
        &format!("{sas}/recreated/token"),
        token_request(json!({})),
    )
    .await;
    let orphan = body["status"]["token"].as_str().unwrap_or("").to_owned();
    let (status, _) = call(client, "DELETE", &format!("{sas}/recreated"), JSON, None).await;
    steps.push(("auth: delete a service account", json!({"http": status})));
    settled(orphan.clone(), |s| s["authenticated"] != true).await;
    let (status, body) = review(&orphan, None).await;
    steps.push((
        "auth: review the token of a deleted service account",
        review_of(status, &body, &orphan, &old_uid),
    ));
    let (_, new_uid) = service_account(client, "recreated").await;
    settled(orphan.clone(), |s| {
        !s["error"].as_str().unwrap_or("").contains("not found")
    })
    .await;
    let (status, body) = review(&orphan, None).await;
    steps.push((
        "auth: review the token of a recreated service account",
        without_uids(
            review_of(status, &body, &orphan, &old_uid),
            &[(&new_uid, "NEW-UID"), (&old_uid, "OLD-UID")],
        ),
    ));

    // The deployer's own token as a client's credentials: who am I, and may I?
    let mut config = substrate.config.clone();
    config.auth_info.token = Some(default_token.clone().into());
    let as_deployer = kube::Client::try_from(config).unwrap();
    let (status, body) = create(
        &as_deployer,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )
    .await;
    let user = &body["status"]["userInfo"];
    steps.push((
        "auth: self subject review with a service account token",
        json!({"http": status, "username": user["username"], "groups": user["groups"],
               "uid is the ServiceAccount's": user["uid"] == deployer_uid}),
    ));
    for (step, verb) in [
        (
            "auth: self access review with a service account token, allowed",
            "start",
        ),
        (
            "auth: self access review with a service account token, denied",
            "abort",
        ),
    ] {
        let (status, body) = create(
            &as_deployer,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                   "spec": {"resourceAttributes": rollouts(verb, NS)}}),
        )
        .await;
        steps.push((step, decision(status, &body)));
    }
}

/// SubjectAccessReviews, a LocalSubjectAccessReview and the admin's self reviews.
async fn access_reviews(client: &kube::Client, steps: &mut Vec<(&'static str, Value)>) {
    let sar = |spec: Value| {
        let body = json!({"apiVersion": "authorization.k8s.io/v1",
                          "kind": "SubjectAccessReview", "spec": spec});
        async move {
            create(
                client,
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                body,
            )
            .await
        }
    };
    let url = |user: &str, path: &str| json!({"user": user, "nonResourceAttributes": {"path": path, "verb": "get"}});
    let status_of = |name: &str| {
        json!({"group": "steerer.dev", "resource": "rollouts", "subresource": "status",
               "verb": "get", "namespace": NS, "name": name})
    };
    let cases: Vec<(&'static str, Value)> = vec![
        (
            "auth: access review, a custom verb the role grants",
            as_service_account("deployer", rollouts("start", NS)),
        ),
        (
            "auth: access review, a custom verb the role lacks",
            as_service_account("deployer", rollouts("abort", NS)),
        ),
        (
            "auth: access review, another namespace",
            as_service_account("deployer", rollouts("start", OTHER)),
        ),
        (
            "auth: access review, list in every namespace by a cluster binding",
            as_service_account("viewer", rollouts("list", "")),
        ),
        (
            "auth: access review, list in every namespace without one",
            as_service_account("deployer", rollouts("list", "")),
        ),
        (
            "auth: access review, a group subject",
            json!({"user": "carol", "groups": ["conformance-viewers"],
                "resourceAttributes": rollouts("watch", OTHER)}),
        ),
        (
            "auth: access review, a cluster role of wildcards bound in a namespace",
            json!({"user": "alice", "resourceAttributes": rollouts("promote", OTHER)}),
        ),
        (
            "auth: access review, that cluster role elsewhere",
            json!({"user": "alice", "resourceAttributes": rollouts("promote", NS)}),
        ),
        (
            "auth: access review, a subresource by name",
            as_service_account("deployer", status_of("web")),
        ),
        (
            "auth: access review, a subresource by another name",
            as_service_account("deployer", status_of("api")),
        ),
        (
            "auth: access review, system:masters",
            json!({"user": "root", "groups": ["system:masters"],
                "resourceAttributes": rollouts("abort", NS)}),
        ),
        (
            "auth: access review, a binding to a missing role",
            json!({"user": "dan", "resourceAttributes": rollouts("get", NS)}),
        ),
        (
            "auth: access review, a URL by prefix",
            url("bob", "/steerer/metrics"),
        ),
        (
            "auth: access review, a URL by name",
            url("bob", "/steerer-health"),
        ),
        (
            "auth: access review, a URL not granted",
            url("bob", "/steerer"),
        ),
        (
            "auth: access review without a subject",
            json!({"resourceAttributes": rollouts("get", NS)}),
        ),
        (
            "auth: access review without attributes",
            json!({"user": "alice"}),
        ),
    ];
    for (step, spec) in cases {
        let (status, body) = sar(spec).await;
        steps.push((step, decision(status, &body)));
    }
    let (status, body) = create(
        client,
        &format!("/apis/authorization.k8s.io/v1/namespaces/{NS}/localsubjectaccessreviews"),
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
               "spec": as_service_account("deployer", rollouts("start", NS))}),
    )
    .await;
    steps.push(("auth: local access review", decision(status, &body)));
    let (status, body) = create(
        client,
        &format!("/apis/authorization.k8s.io/v1/namespaces/{NS}/localsubjectaccessreviews"),
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
               "spec": as_service_account("deployer", rollouts("start", OTHER))}),
    )
    .await;
    steps.push((
        "auth: local access review of another namespace",
        decision(status, &body),
    ));

    // The admin, as itself and impersonating the deployer.
    let self_review = json!({"apiVersion": "authorization.k8s.io/v1",
                             "kind": "SelfSubjectAccessReview",
                             "spec": {"resourceAttributes": rollouts("start", NS)}});
    let ssar = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let (status, body) = create(client, ssar, self_review.clone()).await;
    steps.push((
        "auth: self access review as the admin",
        decision(status, &body),
    ));
    let deployer = format!("system:serviceaccount:{NS}:deployer");
    for (step, verb) in [
        ("auth: self access review impersonating, allowed", "start"),
        ("auth: self access review impersonating, denied", "abort"),
    ] {
        let mut body = self_review.clone();
        body["spec"]["resourceAttributes"]["verb"] = json!(verb);
        let (status, body) = call_with(
            client,
            ssar,
            &[("Impersonate-User", deployer.as_str())],
            body,
        )
        .await;
        steps.push((step, decision(status, &body)));
    }
    let (status, body) = call_with(
        client,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &[("Impersonate-User", deployer.as_str())],
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )
    .await;
    steps.push((
        "auth: self subject review impersonating",
        json!({"http": status, "userInfo": body["status"]["userInfo"]}),
    ));
    let (status, body) = create(
        client,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )
    .await;
    steps.push((
        "auth: self subject review as the admin",
        json!({"http": status, "userInfo": body["status"]["userInfo"]}),
    ));
}

/// Discovery of what this script uses: the TokenRequest subresource and the review resources.
async fn discovery(client: &kube::Client, steps: &mut Vec<(&'static str, Value)>) {
    let (_, core) = call(client, "GET", "/api/v1", JSON, None).await;
    let token: Vec<&Value> = core["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter(|r| r["name"] == "serviceaccounts/token")
                .collect()
        })
        .unwrap_or_default();
    steps.push(("auth: discovery of serviceaccounts/token", json!(token)));
    for (step, path, names) in [
        (
            "auth: discovery of authentication.k8s.io",
            "/apis/authentication.k8s.io/v1",
            &["tokenreviews", "selfsubjectreviews"][..],
        ),
        (
            "auth: discovery of authorization.k8s.io",
            "/apis/authorization.k8s.io/v1",
            &[
                "subjectaccessreviews",
                "selfsubjectaccessreviews",
                "localsubjectaccessreviews",
            ][..],
        ),
    ] {
        let (_, list) = call(client, "GET", path, JSON, None).await;
        let mut found: Vec<Value> = list["resources"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| names.iter().any(|n| r["name"] == *n))
            .map(|r| json!([r["name"], r["namespaced"], r["kind"], r["verbs"]]))
            .collect();
        found.sort_by_key(Value::to_string);
        steps.push((step, json!(found)));
    }
}

/// Plays the authentication and authorization script against one substrate.
pub(super) async fn script(substrate: &Substrate) -> Vec<(&'static str, Value)> {
    let client = &substrate.client;
    let mut steps = Vec::new();
    let mut codes = Vec::new();
    for ns in [NS, OTHER] {
        let (status, _) = create(
            client,
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
        codes.push(status);
    }
    let (status, deployer_uid) = service_account(client, "deployer").await;
    codes.push(status);
    let (status, _) = service_account(client, "viewer").await;
    codes.push(status);
    steps.push(("auth: create namespaces and service accounts", json!(codes)));
    rbac_objects(client, &mut steps).await;
    tokens(substrate, &deployer_uid, &mut steps).await;
    access_reviews(client, &mut steps).await;
    discovery(client, &mut steps).await;
    steps
}
