//! A ReplicaSet as the controller simulates it: its revision, template and pods, each pod an
//! instant at which it becomes ready.

use std::time::{Duration, Instant};

use serde_json::Value;

/// One ReplicaSet of a Deployment and its simulated pods.
#[derive(Debug, Clone)]
pub(super) struct ReplicaSet {
    pub(super) name: String,
    pub(super) hash: String,
    pub(super) revision: u64,
    /// The Deployment's pod template with the `pod-template-hash` label added.
    pub(super) template: Value,
    pub(super) never_ready: bool,
    /// One entry per pod: when it becomes ready (`None`: never). Kept sorted so the pods to
    /// remove first (never ready, then the youngest) are at the end.
    pub(super) pods: Vec<Option<Instant>>,
    /// The object last written to the store, to write only on change.
    pub(super) written: Option<Value>,
}

impl ReplicaSet {
    pub(super) fn len(&self) -> i64 {
        i64::try_from(self.pods.len()).unwrap_or(i64::MAX)
    }

    pub(super) fn ready(&self, now: Instant) -> i64 {
        count(self.pods.iter().filter(|p| p.is_some_and(|at| at <= now)))
    }

    pub(super) fn available(&self, now: Instant, min_ready: Duration) -> i64 {
        count(
            self.pods
                .iter()
                .filter(|p| p.is_some_and(|at| at + min_ready <= now)),
        )
    }

    pub(super) fn scale_up(&mut self, n: i64, now: Instant, startup: Duration) {
        for _ in 0..n {
            self.pods.push(if self.never_ready {
                None
            } else {
                Some(now + startup)
            });
        }
        self.sort_pods();
    }

    pub(super) fn scale_down(&mut self, n: i64) {
        let keep = self.len().saturating_sub(n).max(0);
        self.pods.truncate(usize::try_from(keep).unwrap_or(0));
    }

    /// Removes up to `n` pods that are not available; returns how many went.
    pub(super) fn remove_unavailable(&mut self, n: i64, now: Instant, min_ready: Duration) -> i64 {
        let mut removed = 0;
        self.pods.retain(|p| {
            let available = p.is_some_and(|at| at + min_ready <= now);
            if !available && removed < n {
                removed += 1;
                false
            } else {
                true
            }
        });
        removed
    }

    pub(super) fn sort_pods(&mut self) {
        self.pods.sort_by_key(|p| match p {
            Some(at) => (0, Some(*at)),
            None => (1, None),
        });
    }
}

pub(super) fn count<T>(iter: impl Iterator<Item = T>) -> i64 {
    i64::try_from(iter.count()).unwrap_or(i64::MAX)
}
