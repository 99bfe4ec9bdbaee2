//! How a watch reconnects after its stream breaks: the backoff policy the client carries.

use std::time::Duration;

use rand::Rng;

/// How a [`WatchStream`] reconnects after its stream breaks.
///
/// Waits grow from `initial_backoff` by `multiplier` per consecutive failure up to
/// `max_backoff`, each randomised to between half and all of its value so that many watchers
/// cut off by one server restart do not reconnect in lockstep. The failure count resets once an
/// event arrives (or a stream stays open for `max_backoff`). The watch gives up, ending with the
/// last error, after `max_attempts` consecutive failed attempts or once the server has been
/// unreachable for `max_outage`, whichever comes first.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconnectPolicy {
    /// First wait after a failure. Default 200 ms.
    pub initial_backoff: Duration,
    /// Longest wait between attempts. Default 5 s.
    pub max_backoff: Duration,
    /// Growth factor per consecutive failure. Default 2.
    pub multiplier: f64,
    /// Consecutive failed attempts before giving up; `None` = no limit. Default `None`.
    pub max_attempts: Option<u32>,
    /// Longest outage (since the first failure without an event in between) before giving up;
    /// `None` = no limit. Default 5 min.
    pub max_outage: Option<Duration>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            max_attempts: None,
            max_outage: Some(Duration::from_secs(300)),
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect: the first broken stream ends the watch with its error.
    pub fn never() -> Self {
        Self {
            max_attempts: Some(0),
            ..Self::default()
        }
    }

    /// The un-randomised wait before reconnect attempt `failures` (1 = after the first
    /// failure).
    pub fn base_delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let factor = self.multiplier.max(1.0).powi(exponent);
        let millis =
            (self.initial_backoff.as_secs_f64() * factor).min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(millis.max(0.0))
    }

    /// The wait before reconnect attempt `failures`, with jitter: between half and all of
    /// [`base_delay`](Self::base_delay).
    pub fn delay(&self, failures: u32) -> Duration {
        let base = self.base_delay(failures);
        base.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    pub(crate) fn gives_up(&self, failures: u32, outage: Duration) -> bool {
        self.max_attempts.is_some_and(|max| failures > max)
            || self.max_outage.is_some_and(|max| outage >= max)
    }
}
