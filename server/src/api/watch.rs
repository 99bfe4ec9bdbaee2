//! The event source behind one WatchRollout stream: the hub's events of an active rollout,
//! and the store's log where the hub no longer has them (events older than it keeps, a
//! watcher that fell behind, a rollout that finished and left memory). Events come in
//! sequence order with no gap and no duplicate, and the stream ends after the terminal event.

use std::collections::VecDeque;
use std::sync::Arc;

use tonic::Status;

use crate::engine::Supervisor;
use crate::events::{SharedEvent, Subscription, WatchError};

/// Refills from the store in a row that brought no new event, after which the watch ends
/// with UNAVAILABLE rather than spinning.
const MAX_IDLE_REFILLS: u32 = 3;

/// One watcher's position in a rollout's events.
pub struct EventSource {
    id: String,
    supervisor: Arc<Supervisor>,
    /// The next sequence to deliver (0 = the oldest kept anywhere).
    next: u64,
    subscription: Option<Subscription>,
    /// Events read from the store, to deliver before following the hub again.
    stored: VecDeque<Arc<SharedEvent>>,
    idle_refills: u32,
    done: bool,
}

impl EventSource {
    /// Starts at `from` (0 = the oldest event kept). The first refill happens here, so an
    /// unknown rollout or a sequence no longer kept fails before the stream opens.
    pub async fn open(
        supervisor: Arc<Supervisor>,
        id: &str,
        from: u64,
    ) -> Result<EventSource, Status> {
        let mut source = EventSource {
            id: id.to_owned(),
            supervisor,
            next: from,
            subscription: None,
            stored: VecDeque::new(),
            idle_refills: 0,
            done: false,
        };
        source.refill().await?;
        Ok(source)
    }

    fn deliver(&mut self, event: Arc<SharedEvent>) -> Option<Result<Arc<SharedEvent>, Status>> {
        self.next = event.sequence + 1;
        self.idle_refills = 0;
        if event.phase.is_terminal() {
            self.done = true;
            self.subscription = None;
        }
        Some(Ok(event))
    }

    /// The next event; `None` after the terminal one (or when the server drains).
    pub async fn next(&mut self) -> Option<Result<Arc<SharedEvent>, Status>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.stored.pop_front() {
                if event.sequence >= self.next {
                    return self.deliver(event);
                }
                continue;
            }
            if let Some(subscription) = self.subscription.as_mut() {
                match subscription.next().await {
                    Some(Ok(event)) if event.sequence < self.next => continue,
                    Some(Ok(event)) => return self.deliver(event),
                    // Fell behind what the hub keeps, or the hub let the rollout go.
                    Some(Err(_)) | None => self.subscription = None,
                }
            }
            if let Err(status) = self.refill().await {
                self.done = true;
                return Some(Err(status));
            }
        }
    }

    /// Follows the hub from `next` if it still has that event, else reads the store's log.
    async fn refill(&mut self) -> Result<(), Status> {
        let hub = self.supervisor.hub();
        // Sequence 0 asks for the oldest event kept anywhere: the hub has it only if it
        // still holds the first.
        let from_hub = self.next.max(1);
        match hub.subscribe(&self.id, from_hub) {
            Ok(subscription) => {
                self.subscription = Some(subscription);
                return Ok(());
            }
            Err(WatchError::Dropped { .. } | WatchError::NotFound(_)) => {}
        }
        self.idle_refills += 1;
        if self.idle_refills > MAX_IDLE_REFILLS {
            return Err(Status::unavailable(format!(
                "rollout {}: its events could not be followed; watch again from sequence {}",
                self.id, self.next
            )));
        }
        let stored = self
            .supervisor
            .stored(&self.id)
            .await
            .map_err(crate::api::convert::status)?;
        let Some((rollout, events)) = stored else {
            return Err(Status::not_found(format!("rollout {} not found", self.id)));
        };
        let oldest = events
            .first()
            .map_or(rollout.last_sequence + 1, |e| e.sequence);
        if self.next != 0 && self.next < oldest {
            return Err(Status::out_of_range(
                WatchError::Dropped {
                    id: self.id.clone(),
                    requested: self.next,
                    oldest,
                }
                .to_string(),
            ));
        }
        self.stored = events
            .into_iter()
            .filter(|e| e.sequence >= self.next)
            .map(|e| Arc::new(SharedEvent::new(e)))
            .collect();
        if self.stored.is_empty() && !rollout.phase.is_terminal() && !hub.contains(&self.id) {
            // Stored as unfinished but not followed here (another server drives it, or it is
            // being resumed).
            return Err(Status::unavailable(format!(
                "rollout {} is not followed by this server right now; watch again from sequence {}",
                self.id, self.next
            )));
        }
        Ok(())
    }
}
