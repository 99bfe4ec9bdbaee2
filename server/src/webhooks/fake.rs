//! In-memory webhooks for engine tests: an answer set per hook name, and every call recorded.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{Payload, Webhooks};
use crate::domain::{HookOutcome, Webhook};

/// Answers set by the test; a hook without one answers 200.
#[derive(Default)]
pub struct FakeWebhooks {
    answers: Mutex<HashMap<String, HookOutcome>>,
    calls: Mutex<Vec<Payload>>,
    /// Hooks that never answer (their timeout is the caller's business).
    hanging: Mutex<HashSet<String>>,
}

impl FakeWebhooks {
    /// Sets what the hook named `name` answers from now on.
    pub fn answer(&self, name: &str, outcome: HookOutcome) {
        if let Ok(mut answers) = self.answers.lock() {
            answers.insert(name.to_owned(), outcome);
        }
    }

    /// Makes the hook named `name` never answer.
    pub fn hang(&self, name: &str) {
        if let Ok(mut hanging) = self.hanging.lock() {
            hanging.insert(name.to_owned());
        }
    }

    /// An HTTP answer with this status.
    pub fn status(status: u16) -> HookOutcome {
        HookOutcome::Answered {
            status,
            body: String::new(),
        }
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Payload> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Webhooks for FakeWebhooks {
    fn call<'a>(&'a self, hook: &'a Webhook, payload: &'a Payload) -> BoxFuture<'a, HookOutcome> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(payload.clone());
        }
        let answer = self
            .answers
            .lock()
            .ok()
            .and_then(|a| a.get(&hook.name).cloned())
            .unwrap_or_else(|| Self::status(200));
        let hangs = self
            .hanging
            .lock()
            .is_ok_and(|hanging| hanging.contains(&hook.name));
        Box::pin(async move {
            if hangs {
                std::future::pending::<()>().await;
            }
            answer
        })
    }
}
