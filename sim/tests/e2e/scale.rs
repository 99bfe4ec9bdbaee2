//! The simulator at the scale the issue asks for: 2,000 objects and 200 open watches, every
//! watch seeing every change.

use std::time::Duration;

use crate::support::{config_map, start};
use serde_json::Value;
use steerer_sim::GroupResource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_watches_over_two_thousand_objects_see_every_change() {
    let sim = start().await;
    let base = format!("http://{}", sim.api_addr());
    let store = &sim.world().store;
    let configmaps = GroupResource::new("", "configmaps");
    for i in 0..2000 {
        store
            .create(&configmaps, "default", config_map(&format!("c{i:04}")))
            .unwrap();
    }
    let http = reqwest::Client::new();

    // A paginated list, as kube-rs's watcher pages it.
    let mut seen = 0;
    let mut url = format!("{base}/api/v1/namespaces/default/configmaps?limit=500");
    loop {
        let page: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        seen += page["items"].as_array().unwrap().len();
        match page["metadata"]["continue"].as_str() {
            Some(token) => {
                url = format!(
                    "{base}/api/v1/namespaces/default/configmaps?limit=500&continue={token}"
                );
            }
            None => break,
        }
    }
    assert_eq!(seen, 2000);

    let rv = store.current_rv();
    let mut watches = Vec::new();
    for _ in 0..200 {
        let response = http
            .get(format!(
                "{base}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        watches.push(response);
    }
    const CHANGES: usize = 100;
    for i in 0..CHANGES {
        let name = format!("c{i:04}");
        store
            .update(
                &configmaps,
                "default",
                &name,
                steerer_sim::store::UpdateScope::All,
                |old| {
                    let mut new = old.clone();
                    new["data"]["k"] = serde_json::json!(format!("v{i}"));
                    Ok(new)
                },
            )
            .unwrap();
    }
    let readers: Vec<_> = watches
        .into_iter()
        .map(|mut response| {
            tokio::spawn(async move {
                let mut lines = 0;
                while lines < CHANGES {
                    let chunk = response
                        .chunk()
                        .await
                        .unwrap()
                        .expect("the watch ended early");
                    lines += chunk.iter().filter(|b| **b == b'\n').count();
                }
                lines
            })
        })
        .collect();
    let all = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(readers))
        .await
        .expect("every watch got every change in time");
    for lines in all {
        assert_eq!(lines.unwrap(), CHANGES);
    }
}
