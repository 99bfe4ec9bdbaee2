//! The events hub: the newest events of each active rollout (sequence 1, 2, 3 … with no gaps)
//! and live fan-out to watchers. A subscription replays the kept events from a sequence, then
//! follows live, with no gap and no duplicate, and ends after the terminal event. The hub
//! keeps few events per rollout and forgets a rollout once it finishes, so its memory follows
//! the active rollouts only: asking for an older event is an error naming the oldest kept
//! (the API layer then reads the store, which keeps more), never a silent gap.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::domain::RolloutEvent;

/// Live events buffered per rollout before a slow watcher falls back to the log (a broadcast
/// channel allocates all its slots up front).
const LIVE_BUFFER: usize = 16;
/// Events a store keeps per rollout unless configured otherwise.
pub const DEFAULT_EVENT_LIMIT: usize = 200;
/// Events the hub keeps in memory per active rollout unless configured otherwise.
pub const DEFAULT_MEMORY_EVENTS: usize = 16;

/// Errors publishing events.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("event {got} of rollout {id} does not follow {last}")]
    OutOfOrder { id: String, last: u64, got: u64 },
}

/// Why a rollout's events cannot be followed from a sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The hub has never seen the rollout.
    #[error("rollout {0} not found")]
    NotFound(String),
    /// The events asked for are older than the oldest kept.
    #[error(
        "rollout {id}: event {requested} is no longer kept; the oldest available is sequence {oldest} (ask for {oldest}, or 0 for the oldest kept)"
    )]
    Dropped {
        id: String,
        requested: u64,
        oldest: u64,
    },
}

/// A published event as the hub shares it with every subscriber: the event, and its encoding
/// for the wire, made by the first watcher that sends it and reused by all the others.
#[derive(Debug)]
pub struct SharedEvent {
    event: RolloutEvent,
    encoded: OnceLock<Bytes>,
}

impl SharedEvent {
    /// An event nobody has encoded yet.
    pub fn new(event: RolloutEvent) -> Self {
        Self {
            event,
            encoded: OnceLock::new(),
        }
    }

    /// The event.
    pub fn event(&self) -> &RolloutEvent {
        &self.event
    }

    /// The event's encoding: `encode` runs for the first caller only; every later one (on
    /// any thread) gets the same bytes.
    pub fn encoded(&self, encode: impl FnOnce(&RolloutEvent) -> Bytes) -> Bytes {
        self.encoded.get_or_init(|| encode(&self.event)).clone()
    }
}

impl Deref for SharedEvent {
    type Target = RolloutEvent;

    fn deref(&self) -> &RolloutEvent {
        &self.event
    }
}

struct Topic {
    /// The newest events, in sequence order with no gaps.
    /// Shared by every subscriber: fan-out copies a pointer, not the event.
    log: VecDeque<Arc<SharedEvent>>,
    live: broadcast::Sender<Arc<SharedEvent>>,
}

impl Topic {
    fn new() -> Self {
        Self {
            log: VecDeque::new(),
            live: broadcast::channel(LIVE_BUFFER).0,
        }
    }

    fn last_sequence(&self) -> u64 {
        self.log.back().map(|e| e.sequence).unwrap_or(0)
    }

    /// The oldest sequence a watcher can still get (the next one when nothing is kept yet).
    fn oldest(&self) -> u64 {
        self.log.front().map_or(1, |e| e.sequence)
    }

    /// The kept events from `from` (0 = the oldest kept); `Err(oldest)` when `from` is older.
    fn since(&self, from: u64) -> Result<VecDeque<Arc<SharedEvent>>, u64> {
        let oldest = self.oldest();
        if from != 0 && from < oldest {
            return Err(oldest);
        }
        // No gaps: the event with sequence n sits at index n - oldest.
        let start = usize::try_from(from.max(oldest) - oldest).unwrap_or(usize::MAX);
        Ok(self.log.iter().skip(start).cloned().collect())
    }
}

type SharedTopic = Arc<Mutex<Topic>>;

/// Every rollout's events.
#[derive(Clone)]
pub struct Hub {
    topics: Arc<Mutex<HashMap<String, SharedTopic>>>,
    /// Events kept per rollout.
    limit: usize,
}

impl Default for Hub {
    fn default() -> Self {
        Self::with_limit(DEFAULT_EVENT_LIMIT)
    }
}

impl Hub {
    /// An empty hub keeping `DEFAULT_EVENT_LIMIT` events per rollout (the tests' hub; the
    /// server keeps `DEFAULT_MEMORY_EVENTS`).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty hub keeping the newest `limit` events of each rollout (at least one).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            topics: Arc::default(),
            limit: limit.max(1),
        }
    }

    /// Events kept per rollout.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Publishes events already persisted. Each must carry the next sequence of its rollout;
    /// the first one of a rollout the hub holds no events of may start anywhere (a log
    /// restored from a store that already dropped its oldest events).
    pub fn publish(&self, events: &[RolloutEvent]) -> Result<(), HubError> {
        let Ok(mut topics) = self.topics.lock() else {
            return Ok(());
        };
        for event in events {
            let shared = topics
                .entry(event.rollout_id.clone())
                .or_insert_with(|| Arc::new(Mutex::new(Topic::new())))
                .clone();
            let Ok(mut topic) = shared.lock() else {
                continue;
            };
            let last = topic.last_sequence();
            if event.sequence <= last {
                continue;
            }
            if last != 0 && event.sequence != last + 1 {
                return Err(HubError::OutOfOrder {
                    id: event.rollout_id.clone(),
                    last,
                    got: event.sequence,
                });
            }
            let event = Arc::new(SharedEvent::new(event.clone()));
            topic.log.push_back(event.clone());
            while topic.log.len() > self.limit {
                topic.log.pop_front();
            }
            // No receivers is fine: nobody is watching.
            let _ = topic.live.send(event);
        }
        Ok(())
    }

    fn topic(&self, id: &str) -> Result<SharedTopic, WatchError> {
        let topics = self
            .topics
            .lock()
            .map_err(|_| WatchError::NotFound(id.to_owned()))?;
        topics
            .get(id)
            .cloned()
            .ok_or_else(|| WatchError::NotFound(id.to_owned()))
    }

    /// Forgets a rollout (it finished): its events leave memory. Open subscriptions keep
    /// what they need to reach the end.
    pub fn forget(&self, id: &str) {
        if let Ok(mut topics) = self.topics.lock() {
            topics.remove(id);
        }
    }

    /// Whether the hub holds a rollout.
    pub fn contains(&self, id: &str) -> bool {
        self.topics.lock().is_ok_and(|t| t.contains_key(id))
    }

    /// Follows a rollout's events from `from` (0 = the oldest kept).
    pub fn subscribe(&self, id: &str, from: u64) -> Result<Subscription, WatchError> {
        let shared = self.topic(id)?;
        let topic = shared
            .lock()
            .map_err(|_| WatchError::NotFound(id.to_owned()))?;
        // Subscribing and copying the backlog under one lock: nothing published in between
        // can be missed.
        let backlog = topic.since(from).map_err(|oldest| WatchError::Dropped {
            id: id.to_owned(),
            requested: from,
            oldest,
        })?;
        Ok(Subscription {
            id: id.to_owned(),
            topic: shared.clone(),
            live: topic.live.subscribe(),
            next: from.max(topic.oldest()),
            backlog,
            done: false,
        })
    }

    /// The rollout's kept events from `from` (0 = the oldest kept).
    pub fn since(&self, id: &str, from: u64) -> Result<Vec<RolloutEvent>, WatchError> {
        Ok(since(id, &self.topic(id)?, from)?
            .into_iter()
            .map(|e| e.event().clone())
            .collect())
    }

    /// Registers a rollout with no events yet (so it can be watched before its first event).
    pub fn register(&self, id: &str) {
        if let Ok(mut topics) = self.topics.lock() {
            topics
                .entry(id.to_owned())
                .or_insert_with(|| Arc::new(Mutex::new(Topic::new())));
        }
    }
}

fn since(
    id: &str,
    topic: &SharedTopic,
    from: u64,
) -> Result<VecDeque<Arc<SharedEvent>>, WatchError> {
    let topic = topic
        .lock()
        .map_err(|_| WatchError::NotFound(id.to_owned()))?;
    topic.since(from).map_err(|oldest| WatchError::Dropped {
        id: id.to_owned(),
        requested: from,
        oldest,
    })
}

/// One watcher's view of a rollout's events.
pub struct Subscription {
    id: String,
    topic: SharedTopic,
    live: broadcast::Receiver<Arc<SharedEvent>>,
    backlog: VecDeque<Arc<SharedEvent>>,
    next: u64,
    done: bool,
}

impl Subscription {
    /// The next event in sequence order; `None` after the terminal event. An error (then
    /// `None`) when the watcher fell so far behind that the events it needs next were
    /// dropped from the log.
    pub async fn next(&mut self) -> Option<Result<Arc<SharedEvent>, WatchError>> {
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
                        match since(&self.id, &self.topic, self.next) {
                            Ok(backlog) => self.backlog = backlog,
                            Err(error) => {
                                self.done = true;
                                return Some(Err(error));
                            }
                        }
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
            return Some(Ok(event));
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
            latency_p99_ms: None,
            failed: Default::default(),
            checks: Vec::new(),
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
            seen.push(e.unwrap().sequence);
        }
        assert_eq!(seen, vec![2, 3, 4]);
    }

    #[test]
    fn gaps_are_refused() {
        let hub = Hub::new();
        hub.publish(&[event(1, Phase::Pending)]).unwrap();
        assert!(hub.publish(&[event(3, Phase::Pending)]).is_err());
        assert_eq!(hub.since("r1", 0).unwrap().len(), 1);
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
            assert_eq!(e.unwrap().sequence, expected);
            expected += 1;
        }
        assert_eq!(expected, last + 1);
    }

    #[test]
    fn unknown_rollout_has_no_subscription() {
        assert_eq!(
            Hub::new().subscribe("nope", 0).err(),
            Some(WatchError::NotFound("nope".into()))
        );
    }

    fn run(from: u64, to: u64) -> Vec<RolloutEvent> {
        (from..=to).map(|s| event(s, Phase::Progressing)).collect()
    }

    fn sequences(events: &[RolloutEvent]) -> Vec<u64> {
        events.iter().map(|e| e.sequence).collect()
    }

    #[test]
    fn only_the_newest_events_are_kept_and_sequences_do_not_change() {
        let hub = Hub::with_limit(5);
        hub.publish(&run(1, 8)).unwrap();
        assert_eq!(sequences(&hub.since("r1", 0).unwrap()), vec![4, 5, 6, 7, 8]);
        assert_eq!(sequences(&hub.since("r1", 6).unwrap()), vec![6, 7, 8]);
        hub.publish(&run(9, 9)).unwrap();
        assert_eq!(sequences(&hub.since("r1", 0).unwrap()), vec![5, 6, 7, 8, 9]);
        // The next sequence still has to follow the last, dropped events or not.
        assert!(hub.publish(&[event(11, Phase::Progressing)]).is_err());
    }

    #[test]
    fn asking_for_a_dropped_event_names_the_oldest_kept() {
        let hub = Hub::with_limit(3);
        hub.publish(&run(1, 10)).unwrap();
        let error = hub.subscribe("r1", 7).err().unwrap();
        assert_eq!(
            error,
            WatchError::Dropped {
                id: "r1".into(),
                requested: 7,
                oldest: 8
            }
        );
        assert!(error.to_string().contains("oldest available is sequence 8"));
        assert!(hub.subscribe("r1", 1).is_err());
        assert!(hub.subscribe("r1", 8).is_ok());
        assert!(hub.subscribe("r1", 0).is_ok());
    }

    #[tokio::test]
    async fn from_zero_replays_from_the_oldest_kept_then_follows_live() {
        let hub = Hub::with_limit(3);
        hub.publish(&run(1, 10)).unwrap();
        let mut sub = hub.subscribe("r1", 0).unwrap();
        hub.publish(&[event(11, Phase::Succeeded)]).unwrap();
        let mut seen = Vec::new();
        while let Some(e) = sub.next().await {
            seen.push(e.unwrap().sequence);
        }
        assert_eq!(seen, vec![8, 9, 10, 11]);
    }

    #[test]
    fn a_log_restored_without_its_oldest_events_starts_where_it_starts() {
        let hub = Hub::with_limit(100);
        hub.register("r1");
        hub.publish(&run(41, 45)).unwrap();
        assert_eq!(
            sequences(&hub.since("r1", 0).unwrap()),
            vec![41, 42, 43, 44, 45]
        );
        assert!(matches!(
            hub.subscribe("r1", 40),
            Err(WatchError::Dropped { oldest: 41, .. })
        ));
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_the_kept_log_gets_an_error_not_a_gap() {
        let hub = Hub::with_limit(10);
        hub.publish(&run(1, 1)).unwrap();
        let mut sub = hub.subscribe("r1", 0).unwrap();
        assert_eq!(sub.next().await.unwrap().unwrap().sequence, 1);
        // More than the live buffer and the kept log while the watcher reads nothing.
        hub.publish(&run(2, LIVE_BUFFER as u64 + 20)).unwrap();
        let error = sub.next().await.unwrap().err().unwrap();
        assert!(matches!(error, WatchError::Dropped { requested: 2, .. }));
        assert!(sub.next().await.is_none());
    }
}
