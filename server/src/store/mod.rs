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
    #[error("stored rollout {name} is unreadable: {message}")]
    Corrupt { name: String, message: String },
}

/// A stored rollout with its full event log.
pub type Stored = (Rollout, Vec<RolloutEvent>);

/// Rollout state and event logs.
pub trait Store: Send + Sync {
    /// Every stored rollout with its full event log.
    fn load(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>>;

    /// Stores a new rollout with its first events.
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
