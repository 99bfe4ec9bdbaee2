//! The rollout strategies (rolling update and recreate) as passes over the simulated pods.

use std::time::{Duration, Instant};

use super::pods::ReplicaSet;
use super::spec::{Spec, Strategy};

/// One pass of the rollout strategy over the ReplicaSets; returns whether anything changed.
pub(super) fn step(
    sets: &mut [ReplicaSet],
    new: usize,
    spec: &Spec,
    now: Instant,
    startup: Duration,
) -> bool {
    let total: i64 = sets.iter().map(ReplicaSet::len).sum();
    let old_total = total - sets[new].len();
    let before: Vec<i64> = sets.iter().map(ReplicaSet::len).collect();
    match spec.strategy {
        Strategy::Recreate => {
            if old_total > 0 {
                for (i, set) in sets.iter_mut().enumerate() {
                    if i != new {
                        set.pods.clear();
                    }
                }
            } else if sets[new].len() < spec.replicas {
                let n = spec.replicas - sets[new].len();
                sets[new].scale_up(n, now, startup);
            } else if sets[new].len() > spec.replicas {
                let n = sets[new].len() - spec.replicas;
                sets[new].scale_down(n);
            }
        }
        Strategy::RollingUpdate { surge, unavailable } => {
            let max_total = spec.replicas + surge;
            // A scale-down in the middle of a rollout: old pods go first.
            if total > max_total {
                let mut excess = total - max_total;
                for (_, set) in oldest_first(sets, new) {
                    let n = excess.min(set.len());
                    set.scale_down(n);
                    excess -= n;
                }
            }
            let total: i64 = sets.iter().map(ReplicaSet::len).sum();
            let new_len = sets[new].len();
            if new_len > spec.replicas {
                sets[new].scale_down(new_len - spec.replicas);
            } else if new_len < spec.replicas && total < max_total {
                let n = (max_total - total).min(spec.replicas - new_len);
                sets[new].scale_up(n, now, startup);
            }
            let old_total: i64 = sets
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != new)
                .map(|(_, s)| s.len())
                .sum();
            if old_total > 0 {
                let all_total: i64 = sets.iter().map(ReplicaSet::len).sum();
                let min_available = spec.replicas - unavailable;
                let new_unavailable = sets[new].len() - sets[new].available(now, spec.min_ready);
                let mut max_scaled_down = all_total - min_available - new_unavailable;
                // Old pods that are not available cost nothing to remove.
                if max_scaled_down > 0 {
                    for (_, set) in oldest_first(sets, new) {
                        if max_scaled_down <= 0 {
                            break;
                        }
                        max_scaled_down -=
                            set.remove_unavailable(max_scaled_down, now, spec.min_ready);
                    }
                }
                let available: i64 = sets.iter().map(|s| s.available(now, spec.min_ready)).sum();
                let mut scale_down = available - min_available;
                if scale_down > 0 {
                    for (_, set) in oldest_first(sets, new) {
                        if scale_down <= 0 {
                            break;
                        }
                        let n = scale_down.min(set.len());
                        set.scale_down(n);
                        scale_down -= n;
                    }
                }
            }
        }
    }
    let after: Vec<i64> = sets.iter().map(ReplicaSet::len).collect();
    before != after
}

/// The ReplicaSets other than `new`, oldest revision first.
fn oldest_first(sets: &mut [ReplicaSet], new: usize) -> Vec<(usize, &mut ReplicaSet)> {
    let mut old: Vec<(usize, &mut ReplicaSet)> = sets
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != new)
        .collect();
    old.sort_by_key(|(_, s)| s.revision);
    old
}
