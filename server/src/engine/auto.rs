//! Auto mode: GA Deployments labelled `steerer.dev/rollout=enabled` get a rollout when their
//! canary's pod template changes to a revision neither GA runs nor a rollout already covered.

use std::collections::HashMap;
use std::sync::Arc;

use super::decide;
use super::{EngineError, StartRequest, Supervisor};

/// The label that opts a GA Deployment into auto mode.
pub const AUTO_LABEL: (&str, &str) = ("steerer.dev/rollout", "enabled");

/// Looks for new canary revisions until `stop`.
pub async fn run(
    supervisor: Arc<Supervisor>,
    workloads: Arc<dyn crate::workloads::Workloads>,
    namespaces: Vec<String>,
    stop: tokio_util::sync::CancellationToken,
) {
    let every = supervisor.config().auto_interval;
    let mut seen = Seen::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        scan(&supervisor, workloads.as_ref(), &namespaces, &mut seen).await;
    }
}

/// The canary revision of each labelled GA that a rollout already covers (or that auto mode
/// decided not to roll out), so a scan reads the store only when a canary changes.
#[derive(Debug, Default)]
pub struct Seen(HashMap<(String, String), String>);

/// One pass: starts a rollout for each labelled GA whose canary has a new revision.
pub async fn scan(
    supervisor: &Supervisor,
    workloads: &dyn crate::workloads::Workloads,
    namespaces: &[String],
    seen: &mut Seen,
) {
    let labelled = workloads.labelled(AUTO_LABEL.0, AUTO_LABEL.1);
    // Forget GAs that are gone or no longer labelled, so the map stays as small as the set.
    seen.0.retain(|(ns, name), _| {
        labelled
            .iter()
            .any(|ga| &ga.namespace == ns && &ga.name == name)
    });
    for ga in labelled {
        if !namespaces.is_empty() && !namespaces.contains(&ga.namespace) {
            continue;
        }
        let canary_name = format!("{}-canary", ga.name);
        let Some(canary) = workloads.deployment(&ga.namespace, &canary_name) else {
            continue;
        };
        if supervisor.active_for(&ga.namespace, &ga.name).is_some() {
            continue;
        }
        let revision = canary.revision();
        let key = (ga.namespace.clone(), ga.name.clone());
        if seen.0.get(&key) == Some(&revision) || decide::ga_runs_canary(&ga, &canary) {
            continue;
        }
        match supervisor.latest_for(&ga.namespace, &ga.name).await {
            Ok(Some(last)) if last.revision == revision => {
                seen.0.insert(key, revision);
                continue;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(namespace = %ga.namespace, target = %ga.name, %error, "auto mode could not read the target's rollouts");
                continue;
            }
        }
        let request = StartRequest {
            namespace: ga.namespace.clone(),
            target: ga.name.clone(),
            canary: canary_name,
            analysis: supervisor.config().defaults.clone(),
            request_id: format!("auto-{}-{}-{revision}", ga.namespace, ga.name),
            ..Default::default()
        };
        match supervisor.start(request).await {
            Ok(rollout) => {
                tracing::info!(
                    rollout = %rollout.id,
                    namespace = %ga.namespace,
                    target = %ga.name,
                    %revision,
                    "auto mode started a rollout for a new canary revision"
                );
                seen.0.insert(key, revision);
            }
            Err(EngineError::AlreadyActive(_)) => {}
            Err(error) => tracing::warn!(
                namespace = %ga.namespace,
                target = %ga.name,
                %error,
                "auto mode could not start a rollout"
            ),
        }
    }
}
