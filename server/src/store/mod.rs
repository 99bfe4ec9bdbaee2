//! Durable rollout state: the trait the engine persists through (one write per step carrying
//! the state and its new events), a ConfigMap implementation and an in-memory one.

pub mod configmap;
pub mod memory;

use futures::future::BoxFuture;

use crate::domain::{Rollout, RolloutEvent};

/// Errors reading or writing rollout state.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("failed to {action} rollout {id}: {message}")]
    Api {
        action: &'static str,
        id: String,
        message: String,
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
    #[error("stored rollout {name} is unreadable: {message}")]
    Corrupt { name: String, message: String },
}

/// A stored rollout with its full event log.
pub type Stored = (Rollout, Vec<RolloutEvent>);

/// Rollout state and event logs.
pub trait Store: Send + Sync {
    /// Every stored rollout with its full event log.
    fn load(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>>;

    /// One stored rollout with its full event log; `None` when it is not stored. The default
    /// loads everything; stores override it with a single read.
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .load()
                .await?
                .into_iter()
                .find(|(r, _)| r.namespace == namespace && r.id == id))
        })
    }

    /// Stores a new rollout with its first events; `AlreadyExists` when its id is taken.
    fn create<'a>(
        &'a self,
        rollout: &'a Rollout,
        events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores the rollout's new state and appends its new events, in one write.
    fn append<'a>(
        &'a self,
        rollout: &'a Rollout,
        events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}
