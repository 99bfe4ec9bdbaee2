//! An in-memory store for engine tests: counts writes and can be made to fail.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{Filter, Store, StoreError, Stored};
use crate::domain::{Rollout, RolloutEvent};
use crate::events::DEFAULT_EVENT_LIMIT;

/// Rollouts held in memory.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    rollouts: BTreeMap<String, Stored>,
    writes: usize,
    fail: bool,
    lose_create_answers: bool,
    /// Events kept per rollout (`None` = `DEFAULT_EVENT_LIMIT`).
    limit: Option<usize>,
}

impl MemoryStore {
    /// A store keeping the newest `limit` events of each rollout.
    pub fn with_event_limit(limit: usize) -> Self {
        let store = Self::default();
        if let Ok(mut s) = store.state.lock() {
            s.limit = Some(limit.max(1));
        }
        store
    }

    /// Writes made so far.
    pub fn writes(&self) -> usize {
        self.state.lock().map(|s| s.writes).unwrap_or(0)
    }

    /// The stored copy of a rollout.
    pub fn get(&self, id: &str) -> Option<(Rollout, Vec<RolloutEvent>)> {
        self.state.lock().ok()?.rollouts.get(id).cloned()
    }

    /// Makes writes fail.
    pub fn fail_writes(&self, fail: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.fail = fail;
        }
    }

    /// Makes creates land but answer with an error, as when the answer is lost on the way.
    pub fn lose_create_answers(&self, lose: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.lose_create_answers = lose;
        }
    }

    /// Rollouts stored.
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.rollouts.len()).unwrap_or(0)
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces a stored rollout behind the engine's back, as another writer would.
    pub fn overwrite(&self, rollout: &Rollout, events: &[RolloutEvent]) {
        if let Ok(mut s) = self.state.lock() {
            s.rollouts
                .insert(rollout.id.clone(), (rollout.clone(), events.to_vec()));
        }
    }

    fn write(
        &self,
        rollout: &Rollout,
        events: &[RolloutEvent],
        create: bool,
    ) -> Result<(), StoreError> {
        let mut s = self.state.lock().map_err(|_| StoreError::Unavailable {
            action: "write",
            id: rollout.id.clone(),
            reason: "poisoned".into(),
        })?;
        if s.fail {
            return Err(StoreError::Unavailable {
                action: "write",
                id: rollout.id.clone(),
                reason: "store unavailable".into(),
            });
        }
        s.writes += 1;
        let limit = s.limit.unwrap_or(DEFAULT_EVENT_LIMIT);
        if create {
            if s.rollouts.contains_key(&rollout.id) {
                return Err(StoreError::AlreadyExists {
                    id: rollout.id.clone(),
                });
            }
            let kept = &events[events.len().saturating_sub(limit)..];
            s.rollouts
                .insert(rollout.id.clone(), (rollout.clone(), kept.to_vec()));
            if s.lose_create_answers {
                return Err(StoreError::Unavailable {
                    action: "create",
                    id: rollout.id.clone(),
                    reason: "connection reset before the answer".into(),
                });
            }
            return Ok(());
        }
        let entry = s
            .rollouts
            .get_mut(&rollout.id)
            .ok_or_else(|| StoreError::Unavailable {
                action: "update",
                id: rollout.id.clone(),
                reason: "not found".into(),
            })?;
        let expected = rollout.last_sequence - events.len() as u64;
        if entry.0.last_sequence != expected {
            return Err(StoreError::Conflict {
                id: rollout.id.clone(),
                stored: entry.0.last_sequence,
                expected,
            });
        }
        entry.0 = rollout.clone();
        entry.1.extend_from_slice(events);
        let excess = entry.1.len().saturating_sub(limit);
        entry.1.drain(..excess);
        Ok(())
    }
}

impl Store for MemoryStore {
    fn load_active(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        let active = self
            .state
            .lock()
            .map(|s| {
                s.rollouts
                    .values()
                    .filter(|(r, _)| !r.phase.is_terminal())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(async move { Ok(active) })
    }

    fn list<'a>(&'a self, filter: &'a Filter) -> BoxFuture<'a, Result<Vec<Rollout>, StoreError>> {
        let listed = self
            .state
            .lock()
            .map(|s| {
                s.rollouts
                    .values()
                    .filter(|(r, _)| filter.matches(r))
                    .map(|(r, _)| r.clone())
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(async move { Ok(listed) })
    }

    fn get<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        let found = self.get(id).filter(|(r, _)| r.namespace == namespace);
        Box::pin(async move { Ok(found) })
    }

    fn find<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        let found = self.get(id);
        Box::pin(async move { Ok(found) })
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let deleted = self
            .state
            .lock()
            .map(|mut s| {
                let stored = s
                    .rollouts
                    .get(id)
                    .is_some_and(|(r, _)| r.namespace == namespace);
                if stored {
                    s.rollouts.remove(id);
                }
                stored
            })
            .unwrap_or(false);
        Box::pin(async move { Ok(deleted) })
    }

    fn create<'a>(
        &'a self,
        rollout: &'a Rollout,
        events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self.write(rollout, events, true);
        Box::pin(async move { result })
    }

    fn append<'a>(
        &'a self,
        rollout: &'a Rollout,
        events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self.write(rollout, events, false);
        Box::pin(async move { result })
    }
}
