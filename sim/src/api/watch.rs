//! Watches: a newline-delimited stream of ADDED/MODIFIED/DELETED events from a
//! resourceVersion, BOOKMARKs when asked, an `ERROR` event with a 410 Expired `Status` when the
//! version is compacted, `timeoutSeconds`, and the end of the stream when the client lags
//! behind the change feed or the watches are dropped, so that it re-lists instead of silently
//! missing events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::encode::{Versioned, watch_event};
use super::params::{parse_rv_param, selectors};
use super::{ApiState, Output, ResourceRequest, stream_response, table};
use crate::error::ApiError;
use crate::faults::ClientId;
use crate::resources::ResourceDef;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, ChangeType, GroupResource, WatchStart};
use crate::world::World;

/// How often a watch that asked for bookmarks gets one.
pub(crate) const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// What one watch sends.
struct Filter {
    gr: GroupResource,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    api_version: String,
    kind: String,
    /// `Some(includeObject)` when the client asked for Tables (`kubectl get -w`).
    table: Option<(Arc<ResourceDef>, Option<String>)>,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.fields.matches(obj) && self.labels.matches(obj)
    }

    /// The event line for a change, if the watch sees it. An object entering the selectors is
    /// ADDED, one leaving them is DELETED, as kube-apiserver reports them.
    fn event_for(&self, change: &Change) -> Option<Bytes> {
        if change.gr != self.gr
            || self
                .namespace
                .as_deref()
                .is_some_and(|ns| ns != change.namespace)
        {
            return None;
        }
        let now = self.matches(&change.object);
        let before = change.previous.as_deref().map(|p| self.matches(p));
        let kind = match change.change {
            ChangeType::Added => now.then_some("ADDED"),
            ChangeType::Modified => match (before.unwrap_or(now), now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
            ChangeType::Deleted => (now || before == Some(true)).then_some("DELETED"),
        }?;
        if let Some((def, include)) = &self.table {
            let rv = change
                .object
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            let table = table::table(
                def,
                &[&change.object],
                json!({"resourceVersion": rv}),
                include.as_deref(),
            );
            return Some(Bytes::from(watch_event(kind, &table)));
        }
        Some(Bytes::from(watch_event(
            kind,
            &Versioned {
                obj: &change.object,
                api_version: &self.api_version,
                kind: &self.kind,
            },
        )))
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut object = json!({
            "kind": self.kind,
            "apiVersion": self.api_version,
            "metadata": {"resourceVersion": rv.to_string()},
        });
        if initial_events_end {
            object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        Bytes::from(watch_event("BOOKMARK", &object))
    }
}

fn flag(req: &ResourceRequest, key: &str) -> bool {
    matches!(req.param(key), Some("true" | "1"))
}

/// Starts a watch and answers with its stream.
pub(crate) fn watch(state: &ApiState, req: ResourceRequest) -> Result<Response, ApiError> {
    // Subscribed before the change feed: a drop after this point always ends this watch.
    let drops = state.world.faults.watch_drops();
    let (labels, fields) = selectors(&req)?;
    let since = parse_rv_param(&req)?;
    let bookmarks = flag(&req, "allowWatchBookmarks");
    let send_initial = flag(&req, "sendInitialEvents");
    let timeout = match req.param("timeoutSeconds") {
        None | Some("") => None,
        Some(t) => Some(t.parse::<u64>().map_err(|e| {
            ApiError::bad_request(format!("timeoutSeconds: Invalid value: \"{t}\": {e}"))
        })?),
    };
    let filter = Filter {
        gr: req.gr(),
        namespace: req.namespace.clone(),
        labels,
        fields,
        api_version: req.api_version.clone(),
        kind: req.def.kind.clone(),
        table: (req.output == Output::Table).then(|| {
            (
                Arc::clone(&req.def),
                req.param("includeObject").map(str::to_owned),
            )
        }),
    };
    let since = if send_initial { None } else { since };
    let start = match state
        .world
        .store
        .watch(&filter.gr, filter.namespace.as_deref(), since)
    {
        Ok(start) => start,
        Err(e) if e.code == 410 => {
            // What kube-apiserver does: 200, then one ERROR event carrying the 410 Status.
            let line = Bytes::from(watch_event("ERROR", &e.to_status()));
            let stream = futures::stream::once(async move { Ok::<_, Infallible>(line) });
            return Ok(stream_response(Body::from_stream(stream)));
        }
        Err(e) => return Err(e),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let task = WatchTask {
        filter,
        tx,
        bookmarks,
        send_initial,
        deadline: timeout.map(|t| Instant::now() + Duration::from_secs(t)),
        shutdown: state.shutdown.clone(),
        drops,
        world: Arc::clone(&state.world),
        client: req.client.clone(),
    };
    tokio::spawn(task.run(start));
    let stream = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(stream_response(Body::from_stream(stream)))
}

struct WatchTask {
    filter: Filter,
    tx: mpsc::Sender<Bytes>,
    bookmarks: bool,
    send_initial: bool,
    deadline: Option<Instant>,
    shutdown: tokio_util::sync::CancellationToken,
    drops: tokio::sync::watch::Receiver<u64>,
    world: Arc<World>,
    /// Whose watch it is: a held client gets no event until its hold ends.
    client: ClientId,
}

impl WatchTask {
    async fn run(mut self, start: WatchStart) {
        let WatchStart {
            initial,
            mut rx,
            rv,
        } = start;
        for change in &initial {
            if let Some(line) = self.filter.event_for(change)
                && !self.deliver(line).await
            {
                return;
            }
        }
        if self.send_initial && !self.deliver(self.filter.bookmark(rv, true)).await {
            return;
        }
        // Every change up to `last_rv` has been seen (sent or filtered out), so a bookmark at
        // it never lets a client skip an event.
        let mut last_rv = rv;
        let mut ticker =
            tokio::time::interval_at(Instant::now() + BOOKMARK_INTERVAL, BOOKMARK_INTERVAL);
        let deadline = self.deadline;
        let timeout = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timeout);
        loop {
            let line = tokio::select! {
                // A drop or shutdown wins over pending events: "drop every watch now" must not
                // deliver changes committed after it.
                biased;
                () = self.shutdown.cancelled() => break,
                changed = self.drops.changed() => {
                    let _ = changed;
                    break;
                }
                () = &mut timeout => break,
                () = self.tx.closed() => break,
                msg = rx.recv() => match msg {
                    Ok(change) => {
                        last_rv = change.rv;
                        match self.filter.event_for(&change) {
                            Some(line) => line,
                            None => continue,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "a watch fell behind the change feed; ending it");
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = ticker.tick(), if self.bookmarks => self.filter.bookmark(last_rv, false),
            };
            if !self.deliver(line).await {
                break;
            }
        }
    }

    /// Sends one line once the client is not held (events queue up behind a partition and
    /// arrive when it heals). False when the watch is over: the client left or the server is
    /// stopping.
    async fn deliver(&self, line: Bytes) -> bool {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => return false,
            () = self.world.faults.wait_client(&self.client) => {}
        }
        self.tx.send(line).await.is_ok()
    }
}
