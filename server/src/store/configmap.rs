//! The rollout records of earlier versions: one ConfigMap per rollout, labelled
//! `app.kubernetes.io/managed-by=steerer`, holding the state (`rollout.json`) and the event
//! log (`events.jsonl`, one event per line). Read once at start-up to carry unfinished
//! rollouts over to custom resources (`store::crd::migrate`), then deleted.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

use super::{StoreError, Stored};
use crate::domain::{Rollout, RolloutEvent};

/// Label every stored rollout carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "steerer");
const STATE_KEY: &str = "rollout.json";
const EVENTS_KEY: &str = "events.jsonl";

/// The ConfigMap name of a rollout.
pub fn configmap_name(id: &str) -> String {
    format!("steerer-rollout-{id}")
}

/// The ConfigMap records in the served namespaces (empty = all).
pub struct LegacyRecords {
    client: Client,
    namespaces: Vec<String>,
}

impl LegacyRecords {
    /// The records of the served namespaces (empty = all).
    pub fn new(client: Client, namespaces: Vec<String>) -> Self {
        Self { client, namespaces }
    }

    /// Every record: its ConfigMap's name and namespace, and the rollout it holds (`None`
    /// when it cannot be read; it is deleted all the same, with a warning).
    pub async fn list(&self) -> Result<Vec<(String, String, Option<Stored>)>, StoreError> {
        let apis: Vec<Api<ConfigMap>> = if self.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.namespaces
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect()
        };
        let params = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let mut out = Vec::new();
        for api in apis {
            let list = api
                .list(&params)
                .await
                .map_err(|e| StoreError::api("list ConfigMap records of", "*", e))?;
            for cm in list.items {
                let name = cm.name_any();
                let record = decode(&cm)
                    .and_then(|(rollout, log)| Ok((rollout, parse_events(&name, &log)?)));
                let record = match record {
                    Ok(record) => Some(record),
                    Err(error) => {
                        tracing::warn!(%error, "an unreadable ConfigMap record cannot be carried over");
                        None
                    }
                };
                out.push((name, cm.namespace().unwrap_or_default(), record));
            }
        }
        Ok(out)
    }

    /// Deletes a record once carried over.
    pub async fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        match Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(StoreError::api("delete the ConfigMap record of", name, e)),
        }
    }
}

/// The ConfigMap an earlier version stored a rollout in (for tests of the migration).
pub fn legacy_configmap(
    rollout: &Rollout,
    events: &[RolloutEvent],
) -> Result<ConfigMap, StoreError> {
    let encode = |e: serde_json::Error| StoreError::Encode {
        id: rollout.id.clone(),
        source: Arc::new(e),
    };
    let mut log = String::new();
    for event in events {
        log.push_str(&serde_json::to_string(event).map_err(encode)?);
        log.push('\n');
    }
    Ok(ConfigMap {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(configmap_name(&rollout.id)),
            namespace: Some(rollout.namespace.clone()),
            labels: Some(
                [(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(
            [
                (
                    STATE_KEY.to_owned(),
                    serde_json::to_string_pretty(rollout).map_err(encode)?,
                ),
                (EVENTS_KEY.to_owned(), log),
            ]
            .into_iter()
            .collect(),
        ),
        ..Default::default()
    })
}

/// Reads a stored rollout and its raw event log.
fn decode(cm: &ConfigMap) -> Result<(Rollout, String), StoreError> {
    let name = cm.name_any();
    let missing = |missing: &'static str| StoreError::Incomplete {
        name: name.clone(),
        missing,
    };
    let data = cm.data.as_ref().ok_or_else(|| missing("data"))?;
    let state = data.get(STATE_KEY).ok_or_else(|| missing(STATE_KEY))?;
    let rollout: Rollout = serde_json::from_str(state).map_err(|e| StoreError::Corrupt {
        name: name.clone(),
        source: Arc::new(e),
    })?;
    Ok((rollout, data.get(EVENTS_KEY).cloned().unwrap_or_default()))
}

fn parse_events(name: &str, log: &str) -> Result<Vec<RolloutEvent>, StoreError> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| StoreError::Corrupt {
                name: name.to_owned(),
                source: Arc::new(e),
            })
        })
        .collect()
}
