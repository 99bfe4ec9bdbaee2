//! Follows the rollout records through a watch, on every replica of an elected deployment:
//! the state of each active rollout is kept and its new events go to this replica's hub, so
//! any replica answers GetRollout, ListRollouts and WatchRollout for rollouts another replica
//! drives. A rollout that finishes (or whose record is deleted) leaves memory.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::engine::Supervisor;
use crate::store::crd;

/// Watches the records of the served namespaces (empty = all) until `stop`; `synced` fires once
/// the initial listing has been taken in.
pub async fn run(
    client: Client,
    namespaces: Vec<String>,
    supervisor: Arc<Supervisor>,
    synced: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let config =
        watcher::Config::default().labels(&format!("{}={}", crd::MANAGED_BY.0, crd::MANAGED_BY.1));
    let apis: Vec<Api<DynamicObject>> = if namespaces.is_empty() {
        vec![Api::all_with(client, &crd::api_resource())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced_with(client.clone(), ns, &crd::api_resource()))
            .collect()
    };
    let mut pending_syncs = apis.len();
    let mut synced = Some(synced);
    let mut events = futures::stream::select_all(
        apis.into_iter()
            .map(|api| watcher(api, config.clone()).boxed()),
    );
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            Some(Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object))) => {
                if let Some((rollout, events)) = crd::decode_record(&object) {
                    supervisor.follow(rollout, events);
                }
            }
            Some(Ok(watcher::Event::Delete(object))) => supervisor.unfollow(&object.name_any()),
            Some(Ok(watcher::Event::InitDone)) => {
                pending_syncs = pending_syncs.saturating_sub(1);
                if pending_syncs == 0
                    && let Some(synced) = synced.take()
                {
                    let _ = synced.send(());
                }
            }
            Some(Ok(watcher::Event::Init)) => {}
            Some(Err(error)) => {
                tracing::warn!(%error, "watching rollout records failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            None => return,
        }
    }
}
