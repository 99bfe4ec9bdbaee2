//! Which finished rollout records to delete: all but the newest `retain_per_target` of each
//! target, and every one finished longer than `retain_for` ago. Unfinished rollouts are never
//! pruned.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::Rollout;

/// How many finished records to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Newest finished rollouts kept per target (namespace and GA Deployment).
    pub per_target: usize,
    /// Finished rollouts older than this are deleted whatever their rank.
    pub max_age: Duration,
}

/// Default of [`Retention::per_target`].
pub const DEFAULT_RETAIN_PER_TARGET: usize = 10;
/// Default of [`Retention::max_age`]: 30 days.
pub const DEFAULT_RETAIN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for Retention {
    fn default() -> Self {
        Self {
            per_target: DEFAULT_RETAIN_PER_TARGET,
            max_age: DEFAULT_RETAIN_FOR,
        }
    }
}

/// When a record finished (its last update for records without a finish time).
fn finished(rollout: &Rollout) -> DateTime<Utc> {
    rollout.finished_at.unwrap_or(rollout.updated_at)
}

/// The (namespace, id) of each record to delete.
pub fn select(
    records: &[Rollout],
    retention: Retention,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let oldest_kept = chrono::Duration::from_std(retention.max_age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age));
    let mut by_target: HashMap<(&str, &str), Vec<&Rollout>> = HashMap::new();
    for r in records.iter().filter(|r| r.phase.is_terminal()) {
        by_target
            .entry((r.namespace.as_str(), r.target.as_str()))
            .or_default()
            .push(r);
    }
    let mut doomed = Vec::new();
    for (_, mut finished_rollouts) in by_target {
        finished_rollouts.sort_by(|a, b| finished(b).cmp(&finished(a)).then(b.id.cmp(&a.id)));
        for (rank, r) in finished_rollouts.into_iter().enumerate() {
            let too_old = oldest_kept.is_some_and(|limit| finished(r) < limit);
            if rank >= retention.per_target || too_old {
                doomed.push((r.namespace.clone(), r.id.clone()));
            }
        }
    }
    doomed.sort();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Phase;

    fn record(id: &str, target: &str, phase: Phase, finished_days_ago: i64) -> Rollout {
        let now = Utc::now();
        let mut r = Rollout::test().named(id).of(target).in_phase(phase);
        let at = now - chrono::Duration::days(finished_days_ago);
        r.updated_at = at;
        r.finished_at = phase.is_terminal().then_some(at);
        r
    }

    fn ids(doomed: &[(String, String)]) -> Vec<&str> {
        doomed.iter().map(|(_, id)| id.as_str()).collect()
    }

    #[test]
    fn keeps_the_newest_per_target_and_nothing_too_old() {
        let records = vec![
            record("a1", "a", Phase::Succeeded, 1),
            record("a2", "a", Phase::Aborted, 2),
            record("a3", "a", Phase::RolledBack, 3),
            record("a4", "a", Phase::Progressing, 50),
            record("b1", "b", Phase::Succeeded, 40),
            record("b2", "b", Phase::Failed, 5),
        ];
        let retention = Retention {
            per_target: 2,
            max_age: Duration::from_secs(30 * 24 * 3600),
        };
        // a3 is third newest of a; b1 finished 40 days ago; a4 is active, however old.
        assert_eq!(ids(&select(&records, retention, Utc::now())), ["a3", "b1"]);
    }

    #[test]
    fn retaining_none_deletes_every_finished_record() {
        let records = vec![
            record("a1", "a", Phase::Succeeded, 0),
            record("a2", "a", Phase::Pending, 0),
        ];
        let retention = Retention {
            per_target: 0,
            ..Retention::default()
        };
        assert_eq!(ids(&select(&records, retention, Utc::now())), ["a1"]);
    }
}
