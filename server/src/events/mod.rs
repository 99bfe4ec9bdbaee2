//! The events hub: each rollout's event log (sequence 1, 2, 3 … with no gaps) and live fan-out
//! to watchers. A subscription replays the log from a sequence, then follows live, with no gap
//! and no duplicate, and ends after the terminal event.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::domain::RolloutEvent;

/// Live events buffered per rollout before a slow watcher falls back to the log.
const LIVE_BUFFER: usize = 256;

/// Errors publishing events.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("event {got} of rollout {id} does not follow {last}")]
    OutOfOrder { id: String, last: u64, got: u64 },
}

struct Topic {
    log: Vec<RolloutEvent>,
    live: broadcast::Sender<RolloutEvent>,
}

impl Topic {
    fn new() -> Self {
        Self {
            log: Vec::new(),
            live: broadcast::channel(LIVE_BUFFER).0,
        }
    }

    fn last_sequence(&self) -> u64 {
        self.log.last().map(|e| e.sequence).unwrap_or(0)
    }

    fn since(&self, from: u64) -> VecDeque<RolloutEvent> {
        // Sequences start at 1 with no gaps, so the event with sequence n sits at index n - 1.
        let start = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
        self.log.iter().skip(start).cloned().collect()
    }
}

/// Every rollout's events.
#[derive(Default, Clone)]
pub struct Hub {
    topics: Arc<Mutex<HashMap<String, Topic>>>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes events already persisted. Each must carry the next sequence of its rollout.
    pub fn publish(&self, events: &[RolloutEvent]) -> Result<(), HubError> {
        let Ok(mut topics) = self.topics.lock() else {
            return Ok(());
        };
        for event in events {
            let topic = topics
                .entry(event.rollout_id.clone())
                .or_insert_with(Topic::new);
            let last = topic.last_sequence();
            if event.sequence <= last {
                continue;
            }
            if event.sequence != last + 1 {
                return Err(HubError::OutOfOrder {
                    id: event.rollout_id.clone(),
                    last,
                    got: event.sequence,
                });
            }
            topic.log.push(event.clone());
            // No receivers is fine: nobody is watching.
            let _ = topic.live.send(event.clone());
        }
        Ok(())
    }

    /// Follows a rollout's events from `from` (0 or 1 = the start). `None` when the hub has
    /// never seen the rollout.
    pub fn subscribe(&self, id: &str, from: u64) -> Option<Subscription> {
        let topics = self.topics.lock().ok()?;
        let topic = topics.get(id)?;
        // Subscribing and copying the backlog under one lock: nothing published in between
        // can be missed.
        Some(Subscription {
            id: id.to_owned(),
            hub: self.clone(),
            live: topic.live.subscribe(),
            backlog: topic.since(from),
            next: from.max(1),
            done: false,
        })
    }

    /// The rollout's events from `from`.
    pub fn since(&self, id: &str, from: u64) -> Vec<RolloutEvent> {
        self.topics
            .lock()
            .ok()
            .and_then(|t| t.get(id).map(|t| t.since(from).into()))
            .unwrap_or_default()
    }

    /// Registers a rollout with no events yet (so it can be watched before its first event).
    pub fn register(&self, id: &str) {
        if let Ok(mut topics) = self.topics.lock() {
            topics.entry(id.to_owned()).or_insert_with(Topic::new);
        }
    }
}

/// One watcher's view of a rollout's events.
pub struct Subscription {
    id: String,
    hub: Hub,
    live: broadcast::Receiver<RolloutEvent>,
    backlog: VecDeque<RolloutEvent>,
    next: u64,
    done: bool,
}

impl Subscription {
    /// The next event in sequence order; `None` after the terminal event.
    pub async fn next(&mut self) -> Option<RolloutEvent> {
        loop {
            if self.done {
                return None;
            }
            let event = match self.backlog.pop_front() {
                Some(event) => event,
                None => match self.live.recv().await {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow for the live buffer: catch up from the log.
                        self.backlog = self.hub.since(&self.id, self.next).into();
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            if event.sequence < self.next {
                continue;
            }
            self.next = event.sequence + 1;
            if event.phase.is_terminal() {
                self.done = true;
            }
            return Some(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventKind, Phase};

    fn event(seq: u64, phase: Phase) -> RolloutEvent {
        RolloutEvent {
            rollout_id: "r1".into(),
            sequence: seq,
            time: chrono::Utc::now(),
            kind: EventKind::WeightChanged,
            phase,
            canary_weight: 0,
            success_rate: None,
            request_rate: None,
            failed_checks: 0,
            message: String::new(),
        }
    }

    #[tokio::test]
    async fn subscriber_gets_backlog_then_live_without_duplicates() {
        let hub = Hub::new();
        hub.publish(&[event(1, Phase::Pending), event(2, Phase::Progressing)])
            .unwrap();
        let mut sub = hub.subscribe("r1", 2).unwrap();
        hub.publish(&[event(2, Phase::Progressing), event(3, Phase::Progressing)])
            .unwrap();
        hub.publish(&[event(4, Phase::Succeeded)]).unwrap();
        let mut seen = Vec::new();
        while let Some(e) = sub.next().await {
            seen.push(e.sequence);
        }
        assert_eq!(seen, vec![2, 3, 4]);
    }

    #[test]
    fn gaps_are_refused() {
        let hub = Hub::new();
        hub.publish(&[event(1, Phase::Pending)]).unwrap();
        assert!(hub.publish(&[event(3, Phase::Pending)]).is_err());
        assert_eq!(hub.since("r1", 0).len(), 1);
    }

    #[tokio::test]
    async fn slow_subscriber_catches_up_from_the_log() {
        let hub = Hub::new();
        hub.publish(&[event(1, Phase::Pending)]).unwrap();
        let mut sub = hub.subscribe("r1", 0).unwrap();
        let many: Vec<_> = (2..=(LIVE_BUFFER as u64 + 50))
            .map(|s| event(s, Phase::Progressing))
            .collect();
        hub.publish(&many).unwrap();
        let last = LIVE_BUFFER as u64 + 51;
        hub.publish(&[event(last, Phase::Aborted)]).unwrap();
        let mut expected = 1;
        while let Some(e) = sub.next().await {
            assert_eq!(e.sequence, expected);
            expected += 1;
        }
        assert_eq!(expected, last + 1);
    }

    #[test]
    fn unknown_rollout_has_no_subscription() {
        assert!(Hub::new().subscribe("nope", 0).is_none());
    }
}
