//! Rollout state in ConfigMaps: one per rollout in the rollout's namespace, labelled
//! `app.kubernetes.io/managed-by=steerer`, holding the state (`rollout.json`) and the event
//! log (`events.jsonl`, one event per line, the newest `event_limit` only: a ConfigMap holds
//! at most 1 MiB). Every write is a replace guarded by the resourceVersion.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};

use super::{Store, StoreError, Stored};
use crate::domain::{Rollout, RolloutEvent};
use crate::events::DEFAULT_EVENT_LIMIT;

/// Label every stored rollout carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "steerer");
const STATE_KEY: &str = "rollout.json";
const EVENTS_KEY: &str = "events.jsonl";

/// The ConfigMap name of a rollout.
pub fn configmap_name(id: &str) -> String {
    format!("steerer-rollout-{id}")
}

/// Rollouts stored in ConfigMaps.
pub struct ConfigMapStore {
    client: Client,
    namespaces: Vec<String>,
    /// Per rollout id: the resourceVersion last written or read and the serialized log.
    known: Mutex<HashMap<String, (String, String)>>,
    /// Events kept per rollout.
    event_limit: usize,
}

impl ConfigMapStore {
    /// A store reading the served namespaces (empty = all).
    pub fn new(client: Client, namespaces: Vec<String>) -> Self {
        Self {
            client,
            namespaces,
            known: Mutex::new(HashMap::new()),
            event_limit: DEFAULT_EVENT_LIMIT,
        }
    }

    /// Keeps the newest `limit` events of each rollout (at least one) instead of
    /// `DEFAULT_EVENT_LIMIT`.
    pub fn with_event_limit(mut self, limit: usize) -> Self {
        self.event_limit = limit.max(1);
        self
    }

    fn api(&self, namespace: &str) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn remember(&self, id: &str, resource_version: String, log: String) {
        if let Ok(mut known) = self.known.lock() {
            known.insert(id.to_owned(), (resource_version, log));
        }
    }

    fn known(&self, id: &str) -> Option<(String, String)> {
        self.known.lock().ok()?.get(id).cloned()
    }

    async fn write(&self, rollout: &Rollout, events: &[RolloutEvent]) -> Result<(), StoreError> {
        let api = self.api(&rollout.namespace);
        let name = configmap_name(&rollout.id);
        let api_error = |action: &'static str, e: kube::Error| StoreError::Api {
            action,
            id: rollout.id.clone(),
            message: e.to_string(),
        };
        let (mut rv, mut log) = match self.known(&rollout.id) {
            Some(k) => k,
            None => {
                let cm = api.get(&name).await.map_err(|e| api_error("read", e))?;
                let (_, log) = decode(&cm)?;
                (cm.resource_version().unwrap_or_default(), log)
            }
        };
        let expected = rollout.last_sequence - events.len() as u64;
        for attempt in 0..2 {
            let mut new_log = log.clone();
            new_log.push_str(&encode_events(events, &rollout.id)?);
            let new_log = newest_lines(&new_log, self.event_limit).to_owned();
            let mut cm = configmap(rollout, new_log.clone())?;
            cm.metadata.resource_version = Some(rv.clone());
            match api.replace(&name, &PostParams::default(), &cm).await {
                Ok(written) => {
                    self.remember(
                        &rollout.id,
                        written.resource_version().unwrap_or_default(),
                        new_log,
                    );
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.is_conflict() && attempt == 0 => {
                    // Our resourceVersion is stale; carry on only if nobody appended since.
                    let fresh = api.get(&name).await.map_err(|e| api_error("read", e))?;
                    let (stored, fresh_log) = decode(&fresh)?;
                    if stored == *rollout && fresh_log == new_log {
                        // An earlier attempt whose answer was lost (a timeout, a 5xx after
                        // the write) did land: this write is already done.
                        self.remember(
                            &rollout.id,
                            fresh.resource_version().unwrap_or_default(),
                            fresh_log,
                        );
                        return Ok(());
                    }
                    if stored.last_sequence != expected {
                        return Err(StoreError::Conflict {
                            id: rollout.id.clone(),
                            stored: stored.last_sequence,
                            expected,
                        });
                    }
                    rv = fresh.resource_version().unwrap_or_default();
                    log = fresh_log;
                }
                Err(e) => return Err(api_error("update", e)),
            }
        }
        Err(StoreError::Conflict {
            id: rollout.id.clone(),
            stored: 0,
            expected,
        })
    }
}

fn encode_events(events: &[RolloutEvent], id: &str) -> Result<String, StoreError> {
    let mut out = String::new();
    for event in events {
        let line = serde_json::to_string(event).map_err(|e| StoreError::Api {
            action: "encode",
            id: id.to_owned(),
            message: e.to_string(),
        })?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

fn configmap(rollout: &Rollout, log: String) -> Result<ConfigMap, StoreError> {
    let state = serde_json::to_string_pretty(rollout).map_err(|e| StoreError::Api {
        action: "encode",
        id: rollout.id.clone(),
        message: e.to_string(),
    })?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(configmap_name(&rollout.id)),
            namespace: Some(rollout.namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                ("steerer.dev/target".to_owned(), rollout.target.clone()),
                (
                    "steerer.dev/phase".to_owned(),
                    format!("{:?}", rollout.phase),
                ),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (STATE_KEY.to_owned(), state),
            (EVENTS_KEY.to_owned(), log),
        ])),
        ..Default::default()
    })
}

/// Reads a stored rollout and its raw event log.
fn decode(cm: &ConfigMap) -> Result<(Rollout, String), StoreError> {
    let name = cm.name_any();
    let corrupt = |message: String| StoreError::Corrupt {
        name: name.clone(),
        message,
    };
    let data = cm.data.as_ref().ok_or_else(|| corrupt("no data".into()))?;
    let state = data
        .get(STATE_KEY)
        .ok_or_else(|| corrupt(format!("no {STATE_KEY}")))?;
    let rollout: Rollout = serde_json::from_str(state).map_err(|e| corrupt(e.to_string()))?;
    Ok((rollout, data.get(EVENTS_KEY).cloned().unwrap_or_default()))
}

fn parse_events(name: &str, log: &str) -> Result<Vec<RolloutEvent>, StoreError> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| StoreError::Corrupt {
                name: name.to_owned(),
                message: e.to_string(),
            })
        })
        .collect()
}

impl Store for ConfigMapStore {
    fn load(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        Box::pin(async move {
            let apis: Vec<Api<ConfigMap>> = if self.namespaces.is_empty() {
                vec![Api::all(self.client.clone())]
            } else {
                self.namespaces.iter().map(|ns| self.api(ns)).collect()
            };
            let params =
                ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
            let mut out = Vec::new();
            for api in apis {
                let list = api.list(&params).await.map_err(|e| StoreError::Api {
                    action: "list",
                    id: "*".into(),
                    message: e.to_string(),
                })?;
                for cm in list.items {
                    let name = cm.name_any();
                    let (rollout, log) = match decode(&cm) {
                        Ok(decoded) => decoded,
                        Err(error) => {
                            tracing::warn!(%error, "skipping unreadable stored rollout");
                            continue;
                        }
                    };
                    let events = parse_events(&name, &log)?;
                    self.remember(&rollout.id, cm.resource_version().unwrap_or_default(), log);
                    out.push((rollout, events));
                }
            }
            Ok(out)
        })
    }

    fn get<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        Box::pin(async move {
            let name = configmap_name(id);
            let Some(cm) =
                self.api(namespace)
                    .get_opt(&name)
                    .await
                    .map_err(|e| StoreError::Api {
                        action: "read",
                        id: id.to_owned(),
                        message: e.to_string(),
                    })?
            else {
                return Ok(None);
            };
            let (rollout, log) = decode(&cm)?;
            let events = parse_events(&name, &log)?;
            self.remember(&rollout.id, cm.resource_version().unwrap_or_default(), log);
            Ok(Some((rollout, events)))
        })
    }

    fn create<'a>(
        &'a self,
        rollout: &'a Rollout,
        events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let log = encode_events(events, &rollout.id)?;
            let log = newest_lines(&log, self.event_limit).to_owned();
            let cm = configmap(rollout, log.clone())?;
            let written = self
                .api(&rollout.namespace)
                .create(&PostParams::default(), &cm)
                .await
                .map_err(|e| match e {
                    kube::Error::Api(status) if status.is_already_exists() => {
                        StoreError::AlreadyExists {
                            id: rollout.id.clone(),
                        }
                    }
                    e => StoreError::Api {
                        action: "create",
                        id: rollout.id.clone(),
                        message: e.to_string(),
                    },
                })?;
            self.remember(
                &rollout.id,
                written.resource_version().unwrap_or_default(),
                log,
            );
            Ok(())
        })
    }

    fn append<'a>(
        &'a self,
        rollout: &'a Rollout,
        events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.write(rollout, events))
    }
}

/// The part of a JSON-lines event log holding its newest `limit` lines.
pub fn newest_lines(log: &str, limit: usize) -> &str {
    let lines = log.lines().filter(|l| !l.trim().is_empty()).count();
    let mut drop = lines.saturating_sub(limit);
    let mut start = 0;
    for line in log.split_inclusive('\n') {
        let blank = line.trim().is_empty();
        if drop == 0 && !blank {
            break;
        }
        start += line.len();
        if !blank {
            drop -= 1;
        }
    }
    &log[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_lines_keeps_the_last_lines_whole() {
        let log = "{\"s\":1}\n{\"s\":2}\n{\"s\":3}\n";
        assert_eq!(newest_lines(log, 2), "{\"s\":2}\n{\"s\":3}\n");
        assert_eq!(newest_lines(log, 3), log);
        assert_eq!(newest_lines(log, 10), log);
        assert_eq!(newest_lines(log, 1), "{\"s\":3}\n");
        assert_eq!(newest_lines("", 1), "");
        // Blank lines do not count as events.
        assert_eq!(newest_lines("a\n\nb\nc\n", 2), "b\nc\n");
    }
}
