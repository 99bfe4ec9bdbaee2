//! Repeats recorded sparingly: the same outcome of a check at the same weight (no data for one
//! reason, a pass while a promotion waits) is recorded a few times, then once per quiet window,
//! so a long outage or a long wait cannot grow the event log without bound.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{QuietRepeats, Rollout};

/// Consecutive checks with the same outcome recorded in full before their repeats are
/// recorded only once per `quiet_window`.
pub const REPEATS_IN_FULL: u32 = 3;

/// Shortest time between two recorded repeats of the same outcome.
pub const MIN_QUIET: Duration = Duration::from_secs(60);

/// Time between two recorded repeats of the same outcome: ten intervals, at least a minute.
/// A long outage then adds a few events an hour, not one per interval.
pub fn quiet_window(state: &Rollout) -> Duration {
    (state.analysis.interval * 10).max(MIN_QUIET)
}

/// One more check whose outcome is `key` at the rollout's weight: whether it is recorded, and
/// the record of repeats the next state keeps (every check counts, recorded or not).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Repeat {
    /// The earlier checks with this outcome at this weight, if the last one had it.
    earlier: Option<QuietRepeats>,
    /// Checks in a row with this outcome, this one included.
    pub(super) in_a_row: u32,
    /// Whether this one is recorded as an event.
    pub(super) recorded: bool,
    key: String,
    weight: u32,
    now: DateTime<Utc>,
}

impl Repeat {
    /// The check at `now` with outcome `key`: recorded when it is the first of its kind, one
    /// of the first `REPEATS_IN_FULL`, or a quiet window after the last recorded one.
    pub(super) fn of(state: &Rollout, key: &str, now: DateTime<Utc>) -> Self {
        let earlier = state
            .quiet
            .as_ref()
            .filter(|q| q.key == key && q.weight == state.canary_weight)
            .cloned();
        let in_a_row = earlier.as_ref().map_or(1, |q| q.in_a_row + 1);
        let recorded = earlier.as_ref().is_none_or(|q| {
            in_a_row <= REPEATS_IN_FULL
                || (now - q.recorded_at).to_std().unwrap_or(Duration::ZERO) >= quiet_window(state)
        });
        Self {
            earlier,
            in_a_row,
            recorded,
            key: key.to_owned(),
            weight: state.canary_weight,
            now,
        }
    }

    /// Recorded whatever the count says (the last one before a rollback, say).
    pub(super) fn recorded_anyway(mut self, always: bool) -> Self {
        self.recorded |= always;
        self
    }

    /// How many repeats since the last recorded one were not recorded, and when that one was;
    /// `None` when none were left out (or this one is not recorded).
    pub(super) fn left_out(&self) -> Option<(u32, DateTime<Utc>)> {
        self.earlier
            .as_ref()
            .filter(|q| self.recorded && q.unrecorded > 0)
            .map(|q| (q.unrecorded, q.recorded_at))
    }

    /// The record of repeats after this check.
    pub(super) fn after(&self) -> QuietRepeats {
        match (&self.earlier, self.recorded) {
            (Some(q), false) => QuietRepeats {
                in_a_row: self.in_a_row,
                unrecorded: q.unrecorded + 1,
                ..q.clone()
            },
            _ => QuietRepeats {
                key: self.key.clone(),
                weight: self.weight,
                recorded_at: self.now,
                in_a_row: self.in_a_row,
                unrecorded: 0,
            },
        }
    }
}

#[cfg(test)]
#[path = "quiet_tests.rs"]
mod tests;
