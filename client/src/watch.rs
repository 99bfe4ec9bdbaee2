//! Following a rollout: [`Client::watch`] and [`Client::wait`], the resuming [`WatchStream`]
//! they return, and the [`Outcome`] of `wait`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::BoxStream;
use steerer::v1::{EventType, Phase, Rollout, RolloutEvent};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::ClientError;

/// Whether a rollout in `phase` has ended (succeeded, rolled back, aborted or failed).
pub fn is_terminal_phase(phase: Phase) -> bool {
    phase.is_terminal()
}

/// Whether an event of this type is the last one a rollout emits.
pub fn is_terminal_event(event_type: EventType) -> bool {
    matches!(
        event_type,
        EventType::Succeeded | EventType::RolledBack | EventType::Aborted | EventType::Failed
    )
}

/// The events of one rollout, in order, each exactly once, across reconnects.
///
/// - When the stream breaks (transport error, server restart, a retryable status such as
///   `UNAVAILABLE` or `INTERNAL`, or the server ending the stream before the rollout finished),
///   it reconnects following the client's [`ReconnectPolicy`] and asks for the events after the
///   last one it delivered (`from_sequence = last + 1`).
/// - Events the server sends again (sequence at or below the last delivered) are dropped.
/// - It ends (`None`) right after the terminal event (`SUCCEEDED`, `ROLLED_BACK`, `ABORTED`,
///   `FAILED`), or when the server ends the stream of a rollout whose phase is terminal.
/// - A non-retryable error (`NOT_FOUND`, `INVALID_ARGUMENT`, `UNAUTHENTICATED`,
///   `PERMISSION_DENIED`, ...) or a policy that gives up ends it with that error as the last
///   item.
///
/// Nothing happens until the stream is polled.
pub struct WatchStream {
    inner: BoxStream<'static, Result<RolloutEvent, ClientError>>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchStream(..)")
    }
}

/// The `from_sequence` that resumes after `last_delivered`: 0 (the oldest event the server
/// keeps) when nothing was delivered yet, so a server that trimmed a long log still answers.
fn resume_from(last_delivered: u64) -> u64 {
    if last_delivered == 0 {
        0
    } else {
        last_delivered + 1
    }
}

impl WatchStream {
    pub(crate) fn new(client: Client, id: String, from_sequence: u64) -> Self {
        let state = Follower {
            client,
            id,
            last_delivered: from_sequence.saturating_sub(1),
            stream: None,
            opened_at: Instant::now(),
            failures: 0,
            outage_since: None,
            last_error: None,
            last_phase_terminal: false,
            done: false,
        };
        let inner = futures::stream::unfold(state, |mut state| async move {
            let item = state.next_item().await;
            item.map(|item| (item, state))
        });
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl Stream for WatchStream {
    type Item = Result<RolloutEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The resume state of one watch.
struct Follower {
    client: Client,
    id: String,
    last_delivered: u64,
    stream: Option<tonic::Streaming<RolloutEvent>>,
    opened_at: Instant,
    /// Consecutive failed attempts since the last sign of health.
    failures: u32,
    outage_since: Option<Instant>,
    last_error: Option<ClientError>,
    last_phase_terminal: bool,
    done: bool,
}

impl Follower {
    async fn next_item(&mut self) -> Option<Result<RolloutEvent, ClientError>> {
        loop {
            if self.done {
                return None;
            }
            if self.stream.is_none() {
                if let Err(err) = self.reconnect().await {
                    self.done = true;
                    return Some(Err(err));
                }
                continue;
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.message().await {
                Ok(Some(event)) => {
                    if event.sequence <= self.last_delivered {
                        tracing::debug!(
                            rollout = %self.id,
                            sequence = event.sequence,
                            "dropping an event delivered before"
                        );
                        continue;
                    }
                    // A server keeps a bounded log: the first event of a fresh watch may be
                    // later than 1.
                    if self.last_delivered > 0 && event.sequence != self.last_delivered + 1 {
                        tracing::warn!(
                            rollout = %self.id,
                            expected = self.last_delivered + 1,
                            got = event.sequence,
                            "event sequence skipped ahead"
                        );
                    }
                    self.last_delivered = event.sequence;
                    self.failures = 0;
                    self.outage_since = None;
                    self.last_error = None;
                    self.last_phase_terminal = is_terminal_phase(event.phase());
                    if is_terminal_event(event.r#type()) {
                        self.done = true;
                        self.stream = None;
                    }
                    return Some(Ok(event));
                }
                Ok(None) => {
                    self.stream = None;
                    if self.last_phase_terminal {
                        self.done = true;
                        return None;
                    }
                    // The server closed the stream without a terminal event: it is draining
                    // for a restart, or the rollout had already ended before `from_sequence`.
                    match self.client.get(self.id.clone()).await {
                        Ok(rollout)
                            if is_terminal_phase(rollout.phase())
                                && rollout.last_sequence <= self.last_delivered =>
                        {
                            self.done = true;
                            return None;
                        }
                        Ok(_) => self.record_failure(
                            ClientError::Unavailable {
                                message:
                                    "the server ended the event stream before the rollout finished"
                                        .into(),
                            },
                            true,
                        ),
                        Err(err) if !err.is_retryable() => {
                            self.done = true;
                            return Some(Err(err));
                        }
                        Err(err) => self.record_failure(err, true),
                    }
                }
                Err(status) => {
                    self.stream = None;
                    let err = ClientError::from(status);
                    if !err.is_retryable() {
                        self.done = true;
                        return Some(Err(err));
                    }
                    tracing::debug!(rollout = %self.id, error = %err, "event stream broke");
                    self.record_failure(err, true);
                }
            }
        }
    }

    /// Waits out the backoff (after a failure) and opens a stream from the event after the
    /// last delivered one. Returns the error that ends the watch, if any.
    async fn reconnect(&mut self) -> Result<(), ClientError> {
        let policy = self.client.reconnect_policy().clone();
        if self.failures > 0 {
            let outage = self
                .outage_since
                .map(|since| since.elapsed())
                .unwrap_or_default();
            if policy.gives_up(self.failures, outage) {
                return Err(self.last_error.take().unwrap_or(ClientError::Unavailable {
                    message: "gave up reconnecting".into(),
                }));
            }
            let delay = policy.delay(self.failures);
            tracing::debug!(
                rollout = %self.id,
                attempt = self.failures,
                delay_ms = delay.as_millis() as u64,
                "reconnecting the event stream"
            );
            tokio::time::sleep(delay).await;
        }
        match self
            .client
            .open_watch(&self.id, resume_from(self.last_delivered))
            .await
        {
            Ok(stream) => {
                self.stream = Some(stream);
                self.opened_at = Instant::now();
                Ok(())
            }
            Err(err) if err.is_retryable() => {
                self.record_failure(err, false);
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Counts a failed attempt. `after_stream` says the failure ended an open stream (rather
    /// than an attempt to open one).
    fn record_failure(&mut self, err: ClientError, after_stream: bool) {
        let policy = self.client.reconnect_policy();
        // A stream that stayed up for a while was healthy: this is a fresh outage, not one
        // more failure of the last.
        if after_stream && self.opened_at.elapsed() >= policy.max_backoff {
            self.failures = 0;
            self.outage_since = None;
        }
        self.failures += 1;
        self.outage_since.get_or_insert_with(Instant::now);
        self.last_error = Some(err);
    }
}

impl Client {
    /// Follows a rollout's events from the start (`WatchRollout`), across reconnects, until
    /// the terminal event. See [`WatchStream`] for the guarantees.
    ///
    /// ```no_run
    /// # async fn demo(client: steerer_client::Client) -> Result<(), steerer_client::ClientError> {
    /// use futures::StreamExt;
    ///
    /// let mut events = client.watch("r-7f3c");
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("#{} {:?} weight={}", event.sequence, event.r#type(), event.canary_weight);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch(&self, id: impl Into<String>) -> WatchStream {
        self.watch_from(id, 0)
    }

    /// Like [`watch`](Self::watch), starting at event `from_sequence` (0 or 1 = the first).
    pub fn watch_from(&self, id: impl Into<String>, from_sequence: u64) -> WatchStream {
        WatchStream::new(self.clone(), id.into(), from_sequence)
    }

    /// Follows a rollout to its end and returns how it ended.
    ///
    /// ```no_run
    /// # async fn demo(client: steerer_client::Client) -> Result<(), steerer_client::ClientError> {
    /// let outcome = client.wait("r-7f3c").await?;
    /// if !outcome.succeeded() {
    ///     eprintln!("canary not promoted: {}", outcome.message);
    ///     std::process::exit(1);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self, id: impl Into<String>) -> Result<Outcome, ClientError> {
        self.wait_with(id, 0, |_| {}).await
    }

    /// Like [`wait`](Self::wait), starting at event `from_sequence` and handing every event to
    /// `on_event` as it arrives (to print progress, post to chat, ...).
    pub async fn wait_with(
        &self,
        id: impl Into<String>,
        from_sequence: u64,
        on_event: impl FnMut(&RolloutEvent),
    ) -> Result<Outcome, ClientError> {
        wait_with(self, id.into(), from_sequence, on_event).await
    }
}

/// How a rollout ended, as [`Client::wait`](crate::Client::wait) reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The terminal phase: `Succeeded`, `RolledBack`, `Aborted` or `Failed`.
    pub phase: Phase,
    /// Why it ended, for a person.
    pub message: String,
    /// The rollout as the server holds it after the end.
    pub rollout: Rollout,
    /// The last event delivered (the terminal one), if any event was delivered.
    pub last_event: Option<RolloutEvent>,
}

impl Outcome {
    /// Whether the canary was promoted.
    pub fn succeeded(&self) -> bool {
        self.phase == Phase::Succeeded
    }
}

pub(crate) async fn wait_with(
    client: &Client,
    id: String,
    from_sequence: u64,
    mut on_event: impl FnMut(&RolloutEvent),
) -> Result<Outcome, ClientError> {
    use futures::StreamExt;

    let mut events = client.watch_from(id.clone(), from_sequence);
    let mut last_event = None;
    while let Some(event) = events.next().await {
        let event = event?;
        on_event(&event);
        last_event = Some(event);
    }
    let rollout = get_with_retry(client, &id).await?;
    let phase = match &last_event {
        Some(event) if is_terminal_phase(event.phase()) && !is_terminal_phase(rollout.phase()) => {
            event.phase()
        }
        _ => rollout.phase(),
    };
    let message = if rollout.message.is_empty() {
        last_event
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default()
    } else {
        rollout.message.clone()
    };
    Ok(Outcome {
        phase,
        message,
        rollout,
        last_event,
    })
}

/// `GetRollout`, retried under the client's reconnect policy: the final read after a watch
/// should not fail a CI job because the server restarted at that moment.
async fn get_with_retry(client: &Client, id: &str) -> Result<Rollout, ClientError> {
    let policy = client.reconnect_policy().clone();
    let started = Instant::now();
    let mut failures = 0u32;
    loop {
        match client.get(id.to_string()).await {
            Ok(rollout) => return Ok(rollout),
            Err(err) if err.is_retryable() => {
                failures += 1;
                if policy.gives_up(failures, started.elapsed()) {
                    return Err(err);
                }
                tokio::time::sleep(policy.delay(failures)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::reconnect::ReconnectPolicy;

    #[test]
    fn backoff_grows_geometrically_up_to_the_cap() {
        let policy = ReconnectPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            ..ReconnectPolicy::default()
        };
        let delays: Vec<_> = (1..=6).map(|n| policy.base_delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.base_delay(10_000), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_base_delay() {
        let policy = ReconnectPolicy::default();
        for failures in 1..=8 {
            let base = policy.base_delay(failures);
            for _ in 0..50 {
                let delay = policy.delay(failures);
                assert!(delay <= base && delay >= base / 2, "{delay:?} vs {base:?}");
            }
        }
    }

    #[test]
    fn the_policy_gives_up_after_max_attempts_or_max_outage() {
        let policy = ReconnectPolicy {
            max_attempts: Some(3),
            max_outage: Some(Duration::from_secs(10)),
            ..ReconnectPolicy::default()
        };
        assert!(!policy.gives_up(3, Duration::from_secs(1)));
        assert!(policy.gives_up(4, Duration::from_secs(1)));
        assert!(policy.gives_up(1, Duration::from_secs(10)));
        assert!(ReconnectPolicy::never().gives_up(1, Duration::ZERO));
        let unlimited = ReconnectPolicy {
            max_attempts: None,
            max_outage: None,
            ..ReconnectPolicy::default()
        };
        assert!(!unlimited.gives_up(u32::MAX, Duration::from_secs(86_400)));
    }

    #[test]
    fn terminal_phases_and_events_are_the_four_endings() {
        let phases = [
            Phase::Succeeded,
            Phase::RolledBack,
            Phase::Aborted,
            Phase::Failed,
        ];
        for phase in phases {
            assert!(is_terminal_phase(phase));
        }
        for phase in [
            Phase::Pending,
            Phase::Progressing,
            Phase::Paused,
            Phase::Promoting,
            Phase::RollingBack,
        ] {
            assert!(!is_terminal_phase(phase));
        }
        assert!(is_terminal_event(EventType::RolledBack));
        assert!(!is_terminal_event(EventType::Promoted));
        assert!(!is_terminal_event(EventType::RollingBack));
    }

    #[test]
    fn a_fresh_watch_asks_for_the_oldest_kept_event_and_a_resumed_one_for_the_next() {
        assert_eq!(resume_from(0), 0);
        assert_eq!(resume_from(7), 8);
    }
}
