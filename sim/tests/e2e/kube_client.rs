//! kube-rs against the simulator through its kubeconfig: typed CRUD and every patch type,
//! conflicts, scale, pagination, CRDs and dynamic objects, discovery, and watchers that keep a
//! correct view across 410 Gone and dropped watches.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{artifacts, client, config_map, deployment, eventually, start};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Discovery, ResourceExt};
use serde_json::{Value, json};

fn api_error(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("expected an API error, got {other}"),
    }
}

async fn json_patch(client: &Client, path: &str, ops: Value) -> Result<Deployment, kube::Error> {
    let req = http::Request::patch(path)
        .header("Content-Type", "application/json-patch+json")
        .body(serde_json::to_vec(&ops).unwrap())
        .unwrap();
    client.request::<Deployment>(req).await
}

#[tokio::test]
async fn typed_deployment_crud_and_every_patch_type_work() {
    let sim = start().await;
    let client = client(&sim).await;
    let api: Api<Deployment> = Api::default_namespaced(client.clone());

    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment("web")).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());
    assert_eq!(
        created
            .spec
            .as_ref()
            .unwrap()
            .strategy
            .as_ref()
            .unwrap()
            .type_
            .as_deref(),
        Some("RollingUpdate")
    );

    let listed = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(
        api.list(&ListParams::default().labels("app=other"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Replace with the current resourceVersion.
    let mut current = api.get("web").await.unwrap();
    current.spec.as_mut().unwrap().replicas = Some(2);
    let replaced = api
        .replace("web", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(replaced.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(replaced.metadata.generation, Some(2));

    // Merge patch: maps merge, lists are replaced.
    let merged = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.labels().get("team").map(String::as_str), Some("a"));
    assert_eq!(merged.labels().get("app").map(String::as_str), Some("web"));

    // Strategic merge: containers merge by name, env by name.
    let strategic = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]},
            ]}}}})),
        )
        .await
        .unwrap();
    let containers = &strategic
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers;
    assert_eq!(
        containers.len(),
        2,
        "strategic merge kept the other container"
    );
    assert_eq!(containers[0].image.as_deref(), Some("app:2"));
    assert_eq!(containers[0].env.as_ref().unwrap().len(), 2);
    assert_eq!(containers[1].image.as_deref(), Some("proxy:1"));

    // JSON patch with a passing test, then with a failing one (422 Invalid, nothing changed).
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    let patched = json_patch(
        &client,
        path,
        json!([{"op": "test", "path": "/spec/replicas", "value": 2},
               {"op": "replace", "path": "/spec/replicas", "value": 3}]),
    )
    .await
    .unwrap();
    assert_eq!(patched.spec.as_ref().unwrap().replicas, Some(3));
    let err = json_patch(
        &client,
        path,
        json!([{"op": "test", "path": "/spec/replicas", "value": 99},
               {"op": "replace", "path": "/spec/replicas", "value": 0}]),
    )
    .await
    .unwrap_err();
    assert_eq!(api_error(err), (422, "Invalid".to_owned()));
    assert_eq!(
        api.get("web").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );

    // Server-side apply: a new field, then another manager refused, then forcing.
    let applied = api
        .patch(
            "web",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                 "metadata": {"name": "web", "annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        applied.annotations().get("a").map(String::as_str),
        Some("b")
    );
    let managers: Vec<(String, String)> = applied
        .managed_fields()
        .iter()
        .map(|e| {
            (
                e.manager.clone().unwrap_or_default(),
                e.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("test".into(), "Apply".into())),
        "{managers:?}"
    );
    let other = Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                    "metadata": {"name": "web", "annotations": {"a": "c"}}}));
    let err = api
        .patch("web", &PatchParams::apply("other"), &other)
        .await
        .unwrap_err();
    assert_eq!(api_error(err), (409, "Conflict".to_owned()));
    let forced = api
        .patch("web", &PatchParams::apply("other").force(), &other)
        .await
        .unwrap();
    assert_eq!(forced.annotations().get("a").map(String::as_str), Some("c"));

    // Scale subresource.
    let scale = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(5));
    assert_eq!(
        api.get_scale("web")
            .await
            .unwrap()
            .status
            .unwrap()
            .selector
            .as_deref(),
        Some("app=web")
    );
    assert_eq!(
        api.get("web").await.unwrap().spec.unwrap().replicas,
        Some(5)
    );

    let deleted = api.delete("web", &DeleteParams::default()).await.unwrap();
    assert!(deleted.left().is_some(), "the deleted object comes back");
    assert_eq!(api_error(api.get("web").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn stale_replace_gets_conflict() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&sim).await);
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(config_map("c")).unwrap(),
        )
        .await
        .unwrap();
    let mut first = created.clone();
    first.data = Some([("k".to_owned(), "first".to_owned())].into());
    api.replace("c", &PostParams::default(), &first)
        .await
        .unwrap();
    let mut stale = created;
    stale.data = Some([("k".to_owned(), "stale".to_owned())].into());
    let err = api
        .replace("c", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(api_error(err), (409, "Conflict".to_owned()));
    assert_eq!(api.get("c").await.unwrap().data.unwrap()["k"], "first");
}

#[tokio::test]
async fn forced_conflict_fault_fails_the_next_write_once() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&sim).await);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(config_map("c")).unwrap(),
    )
    .await
    .unwrap();
    sim.faults()
        .conflict_next_write("configmaps", "default", "c");
    let patch = Patch::Merge(json!({"data": {"k": "2"}}));
    let err = api
        .patch("c", &PatchParams::default(), &patch)
        .await
        .unwrap_err();
    assert_eq!(api_error(err), (409, "Conflict".to_owned()));
    let ok = api
        .patch("c", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(ok.data.unwrap()["k"], "2");
}

#[tokio::test]
async fn paginated_lists_return_every_object_once() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&sim).await);
    for i in 0..7 {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(config_map(&format!("c{i}"))).unwrap(),
        )
        .await
        .unwrap();
    }
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = api.list(&params).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().map(ResourceExt::name_any));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
}

async fn create_istio_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in ["virtualservice-crd.yaml", "destinationrule-crd.yaml"] {
        let text = std::fs::read_to_string(artifacts().join("istio").join(file)).unwrap();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
}

#[tokio::test]
async fn virtual_services_are_served_in_every_version_once_the_istio_crds_exist() {
    let sim = start().await;
    let client = client(&sim).await;
    let gvk = |v: &str| GroupVersionKind::gvk("networking.istio.io", v, "VirtualService");
    let v1 = ApiResource::from_gvk(&gvk("v1"));
    let vs_v1: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &v1);
    assert_eq!(
        api_error(vs_v1.list(&ListParams::default()).await.unwrap_err()).0,
        404
    );

    create_istio_crds(&client).await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (resource, caps) = discovery.resolve_gvk(&gvk("v1")).unwrap();
    assert_eq!(resource.plural, "virtualservices");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(discovery.resolve_gvk(&gvk("v1beta1")).is_some());
    assert!(
        discovery
            .resolve_gvk(&GroupVersionKind::gvk(
                "networking.istio.io",
                "v1",
                "DestinationRule"
            ))
            .is_some()
    );

    let beta = ApiResource::from_gvk(&gvk("v1beta1"));
    let vs_beta: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &beta);
    let mut obj = DynamicObject::new("web", &beta).within("default");
    obj.data = json!({"spec": {"hosts": ["web"], "http": [{"route": [
        {"destination": {"host": "web"}, "weight": 100},
        {"destination": {"host": "web-canary"}, "weight": 0},
    ]}]}});
    vs_beta.create(&PostParams::default(), &obj).await.unwrap();

    // Stored once, served in the requested version.
    let read = vs_v1.get("web").await.unwrap();
    assert_eq!(
        read.types.as_ref().unwrap().api_version,
        "networking.istio.io/v1"
    );
    let patched = vs_v1
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"http": [{"route": [
                {"destination": {"host": "web"}, "weight": 90},
                {"destination": {"host": "web-canary"}, "weight": 10},
            ]}]}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["http"][0]["route"][1]["weight"], 10);
    assert_eq!(
        vs_beta.get("web").await.unwrap().data["spec"]["http"][0]["route"][1]["weight"],
        10
    );

    // Custom resources take no strategic merge patch, like kube-apiserver.
    let err = vs_v1
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(err), (415, "UnsupportedMediaType".to_owned()));

    // Deleting the CRD stops serving the resource and removes its objects.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete(
        "virtualservices.networking.istio.io",
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    assert_eq!(api_error(vs_v1.get("web").await.unwrap_err()).0, 404);
    let discovery = Discovery::new(client).run().await.unwrap();
    assert!(discovery.resolve_gvk(&gvk("v1")).is_none());
}

#[tokio::test]
async fn aggregated_discovery_lists_builtin_and_crd_resources() {
    let sim = start().await;
    let client = client(&sim).await;
    create_istio_crds(&client).await;
    let discovery = Discovery::new(client).run_aggregated().await.unwrap();
    let deploy = discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .unwrap();
    assert_eq!(deploy.0.plural, "deployments");
    assert!(
        deploy
            .1
            .subresources
            .iter()
            .any(|(r, _)| r.plural == "deployments/scale" || r.plural == "scale")
    );
    assert!(
        discovery
            .resolve_gvk(&GroupVersionKind::gvk(
                "networking.istio.io",
                "v1beta1",
                "VirtualService"
            ))
            .is_some()
    );
}

#[tokio::test]
async fn watcher_keeps_a_correct_view_across_gone_and_dropped_watches() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&sim).await);
    for name in ["a", "b", "c"] {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(config_map(name)).unwrap(),
        )
        .await
        .unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(stream.for_each(|_| futures::future::ready(())));

    let view = || {
        let reader = reader.clone();
        move || {
            let names: BTreeSet<String> = reader.state().iter().map(|o| o.name_any()).collect();
            let data: Vec<String> = reader
                .state()
                .iter()
                .filter_map(|o| o.data.as_ref().and_then(|d| d.get("k").cloned()))
                .collect();
            (names, data)
        }
    };
    let names_are = |want: &'static [&'static str]| {
        let view = view();
        move || {
            let (names, _) = view();
            let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
            futures::future::ready((names == want).then_some(()))
        }
    };
    eventually(
        Duration::from_secs(5),
        "the initial list",
        names_are(&["a", "b", "c"]),
    )
    .await;
    let faults = sim.faults();
    // The watch request is subscribed by the time it is counted (one thread, no await between).
    eventually(Duration::from_secs(5), "the first watch", || {
        futures::future::ready((faults.count("watch", "configmaps") >= 1).then_some(()))
    })
    .await;
    let lists_before = faults.count("list", "configmaps");

    // The watch is dropped, and while the API holds the re-watch, objects change and the log
    // is compacted past the watcher's version: the re-watch gets 410 and the watcher re-lists.
    faults.hold_for(Duration::from_millis(300));
    faults.drop_watches();
    let store = &sim.world().store;
    let configmaps = steerer_sim::GroupResource::new("", "configmaps");
    store
        .create(&configmaps, "default", config_map("d"))
        .unwrap();
    store.delete(&configmaps, "default", "a", None).unwrap();
    store.compact();
    eventually(
        Duration::from_secs(5),
        "the view after 410",
        names_are(&["b", "c", "d"]),
    )
    .await;
    assert!(
        faults.count("list", "configmaps") > lists_before,
        "the watcher re-listed"
    );

    // A dropped watch alone resumes from the last resourceVersion: no re-list, no lost event.
    eventually(Duration::from_secs(5), "a new watch", || {
        futures::future::ready((faults.count("watch", "configmaps") >= 2).then_some(()))
    })
    .await;
    let lists_before = faults.count("list", "configmaps");
    let watches_before = faults.count("watch", "configmaps");
    faults.drop_watches();
    api.create(
        &PostParams::default(),
        &serde_json::from_value(config_map("e")).unwrap(),
    )
    .await
    .unwrap();
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    eventually(
        Duration::from_secs(5),
        "the view after a dropped watch",
        names_are(&["b", "c", "d", "e"]),
    )
    .await;
    let view = view();
    eventually(Duration::from_secs(5), "the modified object", || {
        futures::future::ready(view().1.contains(&"changed".to_owned()).then_some(()))
    })
    .await;
    assert!(faults.count("watch", "configmaps") > watches_before);
    assert_eq!(
        faults.count("list", "configmaps"),
        lists_before,
        "resumed without a re-list"
    );
    task.abort();
}
