//! Limits that keep one caller from hurting the others: a rate of mutating calls per caller
//! (a token bucket), and caps on open WatchRollout streams per caller and in total. Over a
//! limit, a call gets RESOURCE_EXHAUSTED.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;

use super::access::ANONYMOUS;

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Mutating calls (start, abort, pause, resume, promote) per caller per minute; a burst of
    /// as many is allowed. 0 = no limit.
    pub mutations_per_minute: u32,
    /// Open WatchRollout streams per caller.
    pub watches_per_caller: usize,
    /// Open WatchRollout streams in all.
    pub watches: usize,
    /// How long a WatchRollout stream may go unread with its buffer full before it ends
    /// (RESOURCE_EXHAUSTED, naming the sequence to resume from).
    pub slow_reader: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            mutations_per_minute: 60,
            watches_per_caller: 100,
            watches: 10_000,
            slow_reader: Duration::from_secs(30),
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Watches {
    total: usize,
    by_caller: HashMap<String, usize>,
}

/// The limits' state.
pub struct Limits {
    config: LimitsConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
    watches: Arc<Mutex<Watches>>,
}

/// An open stream's place under the caps, given back when dropped.
pub struct WatchPermit {
    caller: String,
    watches: Arc<Mutex<Watches>>,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        if let Ok(mut w) = self.watches.lock() {
            w.total = w.total.saturating_sub(1);
            if let Some(n) = w.by_caller.get_mut(&self.caller) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    w.by_caller.remove(&self.caller);
                }
            }
        }
    }
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            config,
            buckets: Mutex::default(),
            watches: Arc::default(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Takes one mutating call from the caller's allowance. Without authentication every
    /// caller is `anonymous`: there is no one to count per caller.
    pub fn take_mutation(&self, caller: &str) -> Result<(), Status> {
        let per_minute = self.config.mutations_per_minute;
        if per_minute == 0 || caller == ANONYMOUS {
            return Ok(());
        }
        let capacity = f64::from(per_minute);
        let rate = capacity / 60.0;
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| Status::internal("limits lock poisoned"))?;
        let now = Instant::now();
        // Buckets that have refilled tell nothing: drop them so the map stays small.
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() * rate < capacity);
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(capacity);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
            return Err(Status::resource_exhausted(format!(
                "{caller} made more than {per_minute} changing calls in a minute; try again in {}",
                humantime::format_duration(Duration::from_millis(wait.as_millis() as u64 + 1))
            )));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// A place for one more open stream of the caller.
    pub fn open_watch(&self, caller: &str) -> Result<WatchPermit, Status> {
        let mut w = self
            .watches
            .lock()
            .map_err(|_| Status::internal("limits lock poisoned"))?;
        if w.total >= self.config.watches {
            return Err(Status::resource_exhausted(format!(
                "the server has {} open watches, its limit; try again later",
                w.total
            )));
        }
        let mine = w.by_caller.get(caller).copied().unwrap_or(0);
        if mine >= self.config.watches_per_caller && caller != ANONYMOUS {
            return Err(Status::resource_exhausted(format!(
                "{caller} has {mine} open watches, the limit per caller; close one first"
            )));
        }
        w.total += 1;
        *w.by_caller.entry(caller.to_owned()).or_insert(0) += 1;
        Ok(WatchPermit {
            caller: caller.to_owned(),
            watches: self.watches.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_over_its_rate_is_refused_and_others_are_not() {
        let limits = Limits::new(LimitsConfig {
            mutations_per_minute: 3,
            ..LimitsConfig::default()
        });
        for _ in 0..3 {
            limits.take_mutation("ci").unwrap();
        }
        let refused = limits.take_mutation("ci").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("more than 3"),
            "{}",
            refused.message()
        );
        limits.take_mutation("operator").unwrap();
        // Without authentication there is no caller to limit.
        for _ in 0..10 {
            limits.take_mutation("anonymous").unwrap();
        }
    }

    #[test]
    fn watch_caps_per_caller_and_in_total_free_up_when_streams_end() {
        let limits = Limits::new(LimitsConfig {
            watches_per_caller: 2,
            watches: 3,
            ..LimitsConfig::default()
        });
        let a1 = limits.open_watch("a").unwrap();
        let _a2 = limits.open_watch("a").unwrap();
        assert_eq!(
            limits.open_watch("a").err().unwrap().code(),
            tonic::Code::ResourceExhausted
        );
        let _b1 = limits.open_watch("b").unwrap();
        assert!(limits.open_watch("c").is_err(), "the total cap");
        drop(a1);
        assert!(limits.open_watch("c").is_ok());
    }
}
