//! Durable rollout state: the trait the engine persists through (one write per step carrying
//! the state and its new events), the `rollouts.steerer.dev` custom-resource implementation,
//! the reader of the ConfigMap records of earlier versions (migrated at start-up) and an
//! in-memory store for tests. Stores keep only the newest events of each rollout
//! (`events::DEFAULT_EVENT_LIMIT` unless configured), so a record stays small.

pub mod configmap;
pub mod crd;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod prune;
pub mod schema;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::domain::{Rollout, RolloutEvent};

/// Errors reading or writing rollout state. Clone (a failed step's error is kept and
/// reported again), so the causes are shared rather than flattened into text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A request to the Kubernetes API failed or was refused.
    #[error("failed to {action} rollout {id}: {source}")]
    Api {
        action: &'static str,
        id: String,
        #[source]
        source: Arc<kube::Error>,
    },
    /// The store cannot take requests now (the in-memory store of tests, told to fail).
    #[error("failed to {action} rollout {id}: {reason}")]
    Unavailable {
        action: &'static str,
        id: String,
        reason: String,
    },
    /// A rollout or its events could not be written as JSON.
    #[error("failed to encode rollout {id}: {source}")]
    Encode {
        id: String,
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// Someone else wrote the rollout since it was read: this server no longer owns it.
    #[error(
        "rollout {id} was changed by another writer (stored sequence {stored}, expected {expected})"
    )]
    Conflict {
        id: String,
        stored: u64,
        expected: u64,
    },
    /// A rollout with this id is stored already (an earlier create landed).
    #[error("rollout {id} is stored already")]
    AlreadyExists { id: String },
    /// A stored record lacks a part every record has.
    #[error("stored rollout {name} is unreadable: no {missing}")]
    Incomplete { name: String, missing: &'static str },
    /// A stored record's state or events are not what this version reads.
    #[error("stored rollout {name} is unreadable: {source}")]
    Corrupt {
        name: String,
        #[source]
        source: Arc<serde_json::Error>,
    },
}

impl StoreError {
    /// A failed Kubernetes API request on rollout `id`.
    pub fn api(action: &'static str, id: impl Into<String>, source: kube::Error) -> Self {
        StoreError::Api {
            action,
            id: id.into(),
            source: Arc::new(source),
        }
    }
}

/// A stored rollout with its kept event log (the newest events, in sequence order).
pub type Stored = (Rollout, Vec<RolloutEvent>);

/// Which stored rollouts a listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this namespace (`None` = every served namespace).
    pub namespace: Option<String>,
    /// Only rollouts of this GA Deployment.
    pub target: Option<String>,
}

impl Filter {
    /// Whether a rollout passes the filter.
    pub fn matches(&self, rollout: &Rollout) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| rollout.namespace == ns)
            && self.target.as_deref().is_none_or(|t| rollout.target == t)
    }
}

/// Rollout state and event logs.
pub trait Store: Send + Sync {
    /// Every stored rollout that has not finished, with its kept event log: what a server
    /// resumes.
    fn load_active(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>>;

    /// The stored rollouts the filter selects, state only (no events), in no order.
    fn list<'a>(&'a self, filter: &'a Filter) -> BoxFuture<'a, Result<Vec<Rollout>, StoreError>>;

    /// One stored rollout with its kept event log; `None` when it is not stored.
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, StoreError>>;

    /// One stored rollout found by id alone, in any served namespace.
    fn find<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Stored>, StoreError>>;

    /// Stores a new rollout with its first events; `AlreadyExists` when its id is taken.
    fn create<'a>(
        &'a self,
        rollout: &'a Rollout,
        events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores the rollout's new state and appends its new events, in one write conditional
    /// on the stored state being the one this server last wrote or read, dropping the oldest
    /// events past the store's limit.
    fn append<'a>(
        &'a self,
        rollout: &'a Rollout,
        events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Deletes a finished rollout's record (pruning); `false` when it was not stored.
    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventKind, Phase};
    use crate::store::memory::MemoryStore;
    use chrono::Utc;

    fn rollout(last_sequence: u64) -> Rollout {
        Rollout::test()
            .in_phase(Phase::Progressing)
            .at_weight(10)
            .at_sequence(last_sequence)
            .prepared()
    }

    fn events(from: u64, to: u64) -> Vec<RolloutEvent> {
        (from..=to)
            .map(|sequence| RolloutEvent {
                rollout_id: "r1".into(),
                sequence,
                time: Utc::now(),
                kind: EventKind::CheckNoData,
                phase: Phase::Progressing,
                canary_weight: 10,
                success_rate: None,
                request_rate: None,
                failed_checks: 0,
                message: format!("event {sequence}"),
                latency_p99_ms: None,
                failed: Default::default(),
                checks: Vec::new(),
            })
            .collect()
    }

    #[tokio::test]
    async fn the_store_keeps_the_newest_events_with_their_sequences() {
        let store = MemoryStore::with_event_limit(4);
        store.create(&rollout(3), &events(1, 3)).await.unwrap();
        store.append(&rollout(6), &events(4, 6)).await.unwrap();
        let (stored, kept) = store.get("r1").unwrap();
        assert_eq!(stored.last_sequence, 6);
        let sequences: Vec<u64> = kept.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, vec![3, 4, 5, 6]);
        // Appends still follow the last sequence, not the number of events kept.
        store.append(&rollout(7), &events(7, 7)).await.unwrap();
        let (_, kept) = store.get("r1").unwrap();
        assert_eq!(kept.first().unwrap().sequence, 4);
        assert_eq!(kept.last().unwrap().message, "event 7");
        assert!(matches!(
            store.append(&rollout(9), &events(9, 9)).await,
            Err(StoreError::Conflict { .. })
        ));
    }

    #[tokio::test]
    async fn a_first_write_longer_than_the_limit_keeps_its_newest_events() {
        let store = MemoryStore::with_event_limit(2);
        store.create(&rollout(5), &events(1, 5)).await.unwrap();
        let (_, kept) = store.get("r1").unwrap();
        assert_eq!(
            kept.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            vec![4, 5]
        );
    }
}
