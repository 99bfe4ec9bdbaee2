//! Malformed and refused requests, each answered with the `Status` kube-apiserver gives (code
//! and reason), on a connection that stays usable.

use crate::support::{config_map, deployment, start};
use reqwest::Method;
use serde_json::{Value, json};

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    content_type: &'static str,
    accept: Option<&'static str>,
    body: String,
    code: u16,
    reason: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    content_type: &'static str,
    body: impl Into<String>,
    code: u16,
    reason: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        content_type,
        accept: None,
        body: body.into(),
        code,
        reason,
    }
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";

#[tokio::test]
async fn malformed_requests_get_the_kube_apiserver_status() {
    let sim = start().await;
    let base = format!("http://{}", sim.api_addr());
    let http = reqwest::Client::new();
    let send = |method: Method, path: &str, ct: &str, body: String| {
        http.request(method, format!("{base}{path}"))
            .header("Content-Type", ct)
            .body(body)
            .send()
    };
    // Fixtures: a ConfigMap, a Deployment and the VirtualService CRD with one object.
    let created: Value = send(Method::POST, CMS, JSON, config_map("c").to_string())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stale_rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = send(
        Method::PATCH,
        &format!("{CMS}/c"),
        MERGE,
        r#"{"data":{"k":"2"}}"#.into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = send(Method::POST, DEPLOYS, JSON, deployment("web").to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let crd =
        std::fs::read_to_string(crate::support::artifacts().join("istio/virtualservice-crd.yaml"))
            .unwrap();
    let r = send(
        Method::POST,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/yaml",
        crd,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                    "metadata": {"name": "vs"}, "spec": {"hosts": ["web"]}});
    let r = send(
        Method::POST,
        "/apis/networking.istio.io/v1/namespaces/default/virtualservices",
        JSON,
        vs.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);

    let mut stale = created.clone();
    stale["data"]["k"] = json!("stale");
    let mut bad_selector = deployment("bad");
    bad_selector["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let mut negative = deployment("neg");
    negative["spec"]["replicas"] = json!(-1);
    let mut no_selector = deployment("nosel");
    no_selector["spec"]
        .as_object_mut()
        .unwrap()
        .remove("selector");
    let cases = vec![
        case(
            "malformed JSON",
            Method::POST,
            CMS,
            JSON,
            "{\"kind\": ",
            400,
            "BadRequest",
        ),
        case(
            "a body that is not an object",
            Method::POST,
            CMS,
            JSON,
            "[1, 2]",
            400,
            "BadRequest",
        ),
        case(
            "an unsupported body type",
            Method::POST,
            CMS,
            "text/plain",
            config_map("x").to_string(),
            415,
            "UnsupportedMediaType",
        ),
        case(
            "a patch sent as plain JSON",
            Method::PATCH,
            format!("{CMS}/c"),
            JSON,
            "{}",
            415,
            "UnsupportedMediaType",
        ),
        case(
            "an unknown resource",
            Method::GET,
            "/apis/apps/v1/namespaces/default/widgets",
            JSON,
            "",
            404,
            "NotFound",
        ),
        case(
            "an unknown group",
            Method::GET,
            "/apis/nope.example.com/v1/namespaces/default/things",
            JSON,
            "",
            404,
            "NotFound",
        ),
        case(
            "an unknown version",
            Method::GET,
            "/apis/apps/v9/namespaces/default/deployments",
            JSON,
            "",
            404,
            "NotFound",
        ),
        case(
            "a missing object",
            Method::GET,
            format!("{CMS}/missing"),
            JSON,
            "",
            404,
            "NotFound",
        ),
        case(
            "a namespace that does not exist",
            Method::POST,
            "/api/v1/namespaces/nowhere/configmaps",
            JSON,
            config_map("x")
                .to_string()
                .replace("\"default\"", "\"nowhere\""),
            404,
            "NotFound",
        ),
        case(
            "a kind that does not match the URL",
            Method::POST,
            CMS,
            JSON,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}).to_string(),
            400,
            "BadRequest",
        ),
        case(
            "an apiVersion that does not match the URL",
            Method::POST,
            CMS,
            JSON,
            json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
                .to_string(),
            400,
            "BadRequest",
        ),
        case(
            "a namespace that does not match the URL",
            Method::POST,
            CMS,
            JSON,
            json!({"metadata": {"name": "x", "namespace": "other"}}).to_string(),
            400,
            "BadRequest",
        ),
        case(
            "a missing name",
            Method::POST,
            CMS,
            JSON,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}).to_string(),
            422,
            "Invalid",
        ),
        case(
            "an invalid name",
            Method::POST,
            CMS,
            JSON,
            json!({"metadata": {"name": "Not_Valid"}}).to_string(),
            422,
            "Invalid",
        ),
        case(
            "a duplicate name",
            Method::POST,
            CMS,
            JSON,
            config_map("c").to_string(),
            409,
            "AlreadyExists",
        ),
        case(
            "a name that does not match the URL",
            Method::PUT,
            format!("{CMS}/c"),
            JSON,
            config_map("d").to_string(),
            400,
            "BadRequest",
        ),
        case(
            "a stale resourceVersion",
            Method::PUT,
            format!("{CMS}/c"),
            JSON,
            stale.to_string(),
            409,
            "Conflict",
        ),
        case(
            "a JSON patch that is not a list",
            Method::PATCH,
            format!("{CMS}/c"),
            JSON_PATCH,
            r#"{"op": "add"}"#,
            400,
            "BadRequest",
        ),
        case(
            "a JSON patch with an unknown op",
            Method::PATCH,
            format!("{CMS}/c"),
            JSON_PATCH,
            r#"[{"op": "frobnicate", "path": "/data/k"}]"#,
            422,
            "Invalid",
        ),
        case(
            "a JSON patch whose test fails",
            Method::PATCH,
            format!("{CMS}/c"),
            JSON_PATCH,
            r#"[{"op": "test", "path": "/data/k", "value": "nope"}]"#,
            422,
            "Invalid",
        ),
        case(
            "a JSON patch of a missing path",
            Method::PATCH,
            format!("{CMS}/c"),
            JSON_PATCH,
            r#"[{"op": "replace", "path": "/spec/nothing", "value": 1}]"#,
            422,
            "Invalid",
        ),
        case(
            "a malformed merge patch",
            Method::PATCH,
            format!("{CMS}/c"),
            MERGE,
            "{",
            400,
            "BadRequest",
        ),
        case(
            "a merge patch carrying a stale resourceVersion",
            Method::PATCH,
            format!("{CMS}/c"),
            MERGE,
            json!({"metadata": {"resourceVersion": stale_rv}}).to_string(),
            409,
            "Conflict",
        ),
        case(
            "a strategic merge patch of a custom resource",
            Method::PATCH,
            "/apis/networking.istio.io/v1/namespaces/default/virtualservices/vs",
            STRATEGIC,
            "{}",
            415,
            "UnsupportedMediaType",
        ),
        case(
            "a malformed label selector",
            Method::GET,
            format!("{CMS}?labelSelector=app%20in%20a"),
            JSON,
            "",
            400,
            "BadRequest",
        ),
        case(
            "an unsupported field selector",
            Method::GET,
            format!("{CMS}?fieldSelector=spec.foo%3D1"),
            JSON,
            "",
            400,
            "BadRequest",
        ),
        case(
            "a non-numeric resourceVersion",
            Method::GET,
            format!("{CMS}?resourceVersion=abc"),
            JSON,
            "",
            400,
            "BadRequest",
        ),
        case(
            "a non-numeric resourceVersion on a watch",
            Method::GET,
            format!("{CMS}?watch=1&resourceVersion=abc"),
            JSON,
            "",
            400,
            "BadRequest",
        ),
        case(
            "a malformed continue token",
            Method::GET,
            format!("{CMS}?limit=1&continue=zzz"),
            JSON,
            "",
            400,
            "BadRequest",
        ),
        case(
            "a Deployment whose selector misses its template",
            Method::POST,
            DEPLOYS,
            JSON,
            bad_selector.to_string(),
            422,
            "Invalid",
        ),
        case(
            "a Deployment with negative replicas",
            Method::POST,
            DEPLOYS,
            JSON,
            negative.to_string(),
            422,
            "Invalid",
        ),
        case(
            "a Deployment without a selector",
            Method::POST,
            DEPLOYS,
            JSON,
            no_selector.to_string(),
            422,
            "Invalid",
        ),
        case(
            "a Scale with negative replicas",
            Method::PATCH,
            format!("{DEPLOYS}/web/scale"),
            MERGE,
            r#"{"spec": {"replicas": -2}}"#,
            422,
            "Invalid",
        ),
        case(
            "a change of an immutable selector",
            Method::PATCH,
            format!("{DEPLOYS}/web"),
            MERGE,
            r#"{"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}}}}"#,
            422,
            "Invalid",
        ),
        case(
            "PUT on a collection",
            Method::PUT,
            CMS,
            JSON,
            "{}",
            405,
            "MethodNotAllowed",
        ),
        case(
            "POST on an object",
            Method::POST,
            format!("{CMS}/c"),
            JSON,
            "{}",
            405,
            "MethodNotAllowed",
        ),
        case(
            "create outside a namespace",
            Method::POST,
            "/api/v1/configmaps",
            JSON,
            config_map("x").to_string(),
            405,
            "MethodNotAllowed",
        ),
        case(
            "an unknown subresource",
            Method::GET,
            format!("{CMS}/c/status"),
            JSON,
            "",
            404,
            "NotFound",
        ),
        case(
            "malformed DeleteOptions",
            Method::DELETE,
            format!("{CMS}/c"),
            JSON,
            "{",
            400,
            "BadRequest",
        ),
        case(
            "a stale delete precondition",
            Method::DELETE,
            format!("{CMS}/c"),
            JSON,
            json!({"preconditions": {"resourceVersion": stale_rv}}).to_string(),
            409,
            "Conflict",
        ),
        case(
            "deleting the default namespace",
            Method::DELETE,
            "/api/v1/namespaces/default",
            JSON,
            "",
            403,
            "Forbidden",
        ),
        case(
            "a fieldManager-less apply",
            Method::PATCH,
            format!("{CMS}/c"),
            "application/apply-patch+yaml",
            "data: {k: v}",
            422,
            "Invalid",
        ),
        Case {
            accept: Some("text/html"),
            ..case(
                "an Accept the server cannot produce",
                Method::GET,
                format!("{CMS}/c"),
                JSON,
                "",
                406,
                "NotAcceptable",
            )
        },
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let mut request = http
            .request(c.method.clone(), format!("{base}{}", c.path))
            .header("Content-Type", c.content_type)
            .body(c.body.clone());
        if let Some(accept) = c.accept {
            request = request.header("Accept", accept);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.what));
        let code = response.status().as_u16();
        let status: Value = response.json().await.unwrap_or(Value::Null);
        let ok = code == c.code
            && status["kind"] == "Status"
            && status["code"] == c.code
            && status["reason"] == c.reason
            && status["status"] == "Failure";
        if !ok {
            failures.push(format!(
                "{}: expected {} {}, got {code} {status}",
                c.what, c.code, c.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing the table sent changed the ConfigMap.
    let now: Value = http
        .get(format!("{base}{CMS}/c"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["data"]["k"], "2");
}

#[tokio::test]
async fn watch_from_a_compacted_version_answers_an_expired_error_event() {
    let sim = start().await;
    let base = format!("http://{}", sim.api_addr());
    let http = reqwest::Client::new();
    for name in ["a", "b"] {
        let r = http
            .post(format!("{base}{CMS}"))
            .json(&config_map(name))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    sim.world().store.compact();
    let response = http
        .get(format!("{base}{CMS}?watch=true&resourceVersion=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let event: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["kind"], "Status");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
}
