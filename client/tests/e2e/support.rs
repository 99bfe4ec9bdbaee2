//! An in-process fake steerer server for the SDK and CLI tests: scripted rollouts and events,
//! scripted stream failures, a restart on the same port, and a record of what clients sent.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steerer_client::proto::rollout_service_server::{RolloutService, RolloutServiceServer};
use steerer_client::proto::{
    AbortRolloutRequest, Analysis, EventType, GetRolloutRequest, ListRolloutsRequest,
    ListRolloutsResponse, PauseRolloutRequest, Phase, PromoteRolloutRequest, ResumeRolloutRequest,
    Rollout, RolloutEvent, StartRolloutRequest, WatchRolloutRequest,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status};

/// What one `WatchRollout` call does; calls take the next step of the plan, and behave
/// normally (send everything from `from_sequence`, then end) once the plan is used up.
#[derive(Clone, Debug)]
pub enum WatchStep {
    /// Send this many events, then fail the stream with the status.
    FailAfter(usize, Status),
    /// Send this many events, then hold the stream open until the server restarts.
    HangAfter(usize),
    /// Send this many events, then end the stream cleanly without the terminal event.
    EndAfter(usize),
    /// Start this many events before the requested one (resending what the client has), then
    /// behave normally.
    ReplayEarlier(u64),
    /// Refuse the call with the status.
    Refuse(Status),
}

/// A scripted rollout: its final state and its complete event history.
#[derive(Clone, Debug)]
pub struct Script {
    pub rollout: Rollout,
    pub events: Vec<RolloutEvent>,
}

#[derive(Default)]
pub struct FakeState {
    scripts: Mutex<BTreeMap<String, Script>>,
    plan: Mutex<VecDeque<WatchStep>>,
    /// `(rollout id, from_sequence)` of every WatchRollout call, in order.
    pub watch_calls: Mutex<Vec<(String, u64)>>,
    /// The `authorization` header of every call, in order.
    pub authorizations: Mutex<Vec<Option<String>>>,
    pub starts: Mutex<Vec<StartRolloutRequest>>,
    /// Events the fake has handed to a stream (across all calls).
    pub events_sent: Mutex<usize>,
    /// When set, calls without `authorization: Bearer TOKEN` get UNAUTHENTICATED.
    pub required_token: Mutex<Option<String>>,
    /// When set, StartRollout fails with this status.
    pub start_error: Mutex<Option<Status>>,
    restarts: Mutex<Option<watch::Sender<u64>>>,
}

impl FakeState {
    pub fn add(&self, script: Script) {
        self.scripts
            .lock()
            .unwrap()
            .insert(script.rollout.id.clone(), script);
    }

    pub fn plan(&self, steps: impl IntoIterator<Item = WatchStep>) {
        self.plan.lock().unwrap().extend(steps);
    }

    pub fn watch_froms(&self) -> Vec<u64> {
        self.watch_calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, from)| *from)
            .collect()
    }

    pub fn events_sent(&self) -> usize {
        *self.events_sent.lock().unwrap()
    }

    fn restart_signal(&self) -> watch::Receiver<u64> {
        self.restarts
            .lock()
            .unwrap()
            .get_or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn check_auth<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.authorizations.lock().unwrap().push(header.clone());
        match self.required_token.lock().unwrap().as_ref() {
            Some(token) if header.as_deref() != Some(&format!("Bearer {token}")) => {
                Err(Status::unauthenticated("a valid bearer token is required"))
            }
            _ => Ok(()),
        }
    }

    fn find(&self, id: &str) -> Result<Script, Status> {
        self.scripts
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("rollout \"{id}\" not found")))
    }

    fn set_phase(&self, id: &str, phase: Phase, message: &str) -> Result<Rollout, Status> {
        let mut scripts = self.scripts.lock().unwrap();
        let script = scripts
            .get_mut(id)
            .ok_or_else(|| Status::not_found(format!("rollout \"{id}\" not found")))?;
        script.rollout.phase = phase as i32;
        script.rollout.message = message.to_string();
        Ok(script.rollout.clone())
    }
}

struct Service(Arc<FakeState>);

#[tonic::async_trait]
impl RolloutService for Service {
    async fn start_rollout(
        &self,
        request: Request<StartRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        self.0.check_auth(&request)?;
        let request = request.into_inner();
        self.0.starts.lock().unwrap().push(request.clone());
        if let Some(status) = self.0.start_error.lock().unwrap().clone() {
            return Err(status);
        }
        let scripts = self.0.scripts.lock().unwrap();
        let script = scripts
            .values()
            .find(|s| {
                s.rollout.namespace == request.namespace && s.rollout.target == request.target
            })
            .ok_or_else(|| {
                Status::not_found(format!(
                    "deployment {}/{} not found",
                    request.namespace, request.target
                ))
            })?;
        // The rollout as it looks right after the start.
        let mut rollout = script.rollout.clone();
        rollout.phase = Phase::Pending as i32;
        rollout.canary_weight = 0;
        rollout.failed_checks = 0;
        rollout.message = "preparing the canary".into();
        Ok(Response::new(rollout))
    }

    async fn get_rollout(
        &self,
        request: Request<GetRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        self.0.check_auth(&request)?;
        Ok(Response::new(
            self.0.find(&request.into_inner().id)?.rollout,
        ))
    }

    async fn list_rollouts(
        &self,
        request: Request<ListRolloutsRequest>,
    ) -> Result<Response<ListRolloutsResponse>, Status> {
        self.0.check_auth(&request)?;
        let request = request.into_inner();
        let rollouts = self
            .0
            .scripts
            .lock()
            .unwrap()
            .values()
            .map(|s| s.rollout.clone())
            .filter(|r| request.namespace.is_empty() || r.namespace == request.namespace)
            .filter(|r| !request.active_only || !steerer_client::is_terminal_phase(r.phase()))
            .collect();
        Ok(Response::new(ListRolloutsResponse {
            rollouts,
            next_page_token: String::new(),
        }))
    }

    type WatchRolloutStream = ReceiverStream<Result<RolloutEvent, Status>>;

    async fn watch_rollout(
        &self,
        request: Request<WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        self.0.check_auth(&request)?;
        let request = request.into_inner();
        self.0
            .watch_calls
            .lock()
            .unwrap()
            .push((request.id.clone(), request.from_sequence));
        let script = self.0.find(&request.id)?;
        let step = self.0.plan.lock().unwrap().pop_front();
        let mut from = request.from_sequence.max(1);
        let mut limit = None;
        let mut ending = Ending::Complete;
        match step {
            Some(WatchStep::Refuse(status)) => return Err(status),
            Some(WatchStep::FailAfter(n, status)) => {
                limit = Some(n);
                ending = Ending::Fail(status);
            }
            Some(WatchStep::HangAfter(n)) => {
                limit = Some(n);
                ending = Ending::Hang;
            }
            Some(WatchStep::EndAfter(n)) => {
                limit = Some(n);
                ending = Ending::Close;
            }
            Some(WatchStep::ReplayEarlier(back)) => from = from.saturating_sub(back).max(1),
            None => {}
        }
        let events: Vec<_> = script
            .events
            .into_iter()
            .filter(|e| e.sequence >= from)
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        let (tx, rx) = mpsc::channel(4);
        let state = self.0.clone();
        let mut restarts = state.restart_signal();
        tokio::spawn(async move {
            for event in events {
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
                *state.events_sent.lock().unwrap() += 1;
            }
            match ending {
                Ending::Complete | Ending::Close => {}
                Ending::Fail(status) => {
                    let _ = tx.send(Err(status)).await;
                }
                Ending::Hang => {
                    // Held open until the server goes down, like a live stream of a rollout
                    // that is waiting for its next step.
                    let _ = restarts.changed().await;
                    let _ = tx
                        .send(Err(Status::unavailable("server shutting down")))
                        .await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn abort_rollout(
        &self,
        request: Request<AbortRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        self.0.check_auth(&request)?;
        let request = request.into_inner();
        let reason = if request.reason.is_empty() {
            "aborted".to_string()
        } else {
            format!("aborted: {}", request.reason)
        };
        let mut rollout = self.0.set_phase(&request.id, Phase::Aborted, &reason)?;
        rollout.canary_weight = 0;
        Ok(Response::new(rollout))
    }

    async fn pause_rollout(
        &self,
        request: Request<PauseRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        self.0.check_auth(&request)?;
        let request = request.into_inner();
        let script = self.0.find(&request.id)?;
        if steerer_client::is_terminal_phase(script.rollout.phase()) {
            return Err(Status::failed_precondition(format!(
                "rollout \"{}\" has already ended",
                request.id
            )));
        }
        let rollout = self
            .0
            .set_phase(&request.id, Phase::Paused, &request.reason)?;
        Ok(Response::new(rollout))
    }

    async fn resume_rollout(
        &self,
        request: Request<ResumeRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        self.0.check_auth(&request)?;
        let id = request.into_inner().id;
        Ok(Response::new(self.0.set_phase(
            &id,
            Phase::Progressing,
            "resumed",
        )?))
    }

    async fn promote_rollout(
        &self,
        request: Request<PromoteRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        self.0.check_auth(&request)?;
        let id = request.into_inner().id;
        Ok(Response::new(self.0.set_phase(
            &id,
            Phase::Promoting,
            "promoting on request",
        )?))
    }

    async fn get_server_info(
        &self,
        request: Request<steerer_client::proto::GetServerInfoRequest>,
    ) -> Result<Response<steerer_client::proto::ServerInfo>, Status> {
        self.0.check_auth(&request)?;
        Ok(Response::new(steerer_client::proto::ServerInfo {
            version: "9.9.9".into(),
            commit: "fake".into(),
            leader: String::new(),
            route_kinds: vec!["HTTPRoute".into()],
            observers: vec!["linkerd".into()],
            auth: "tokens".into(),
        }))
    }
}

enum Ending {
    Complete,
    Close,
    Fail(Status),
    Hang,
}

/// A running fake server.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub async fn start(state: Arc<FakeState>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, state, None)
    }

    /// Serves over TLS with `tls` (for example a server identity and a client CA).
    pub async fn start_tls(state: Arc<FakeState>, tls: ServerTlsConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, state, Some(tls))
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(listener: TcpListener, state: Arc<FakeState>, tls: Option<ServerTlsConfig>) -> Self {
        let addr = listener.local_addr().unwrap();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let service = RolloutServiceServer::new(Service(state.clone()));
        let task = tokio::spawn(async move {
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                builder = builder.tls_config(tls).unwrap();
            }
            builder
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            state,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Stops serving: held-open streams fail with UNAVAILABLE, the listener closes, and new
    /// connections are refused until [`start_again`](Self::start_again).
    pub async fn stop(&mut self) {
        if let Some(tx) = self.state.restarts.lock().unwrap().as_ref() {
            tx.send_modify(|generation| *generation += 1);
        }
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            // Graceful shutdown waits for connections to go idle; a client that keeps one
            // open must not stall the test.
            if tokio::time::timeout(Duration::from_secs(5), &mut Box::pin(task))
                .await
                .is_err()
            {
                panic!("the fake server did not shut down");
            }
        }
    }

    /// Serves again on the same address with the same state.
    pub async fn start_again(&mut self) {
        let listener = bind_again(self.addr).await;
        let mut restarted = Self::serve(listener, self.state.clone(), None);
        self.shutdown = restarted.shutdown.take();
        self.task = restarted.task.take();
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `addr` again, retrying briefly: the old listener's socket may take a moment to go.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(err) if tokio::time::Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("cannot bind {addr} again: {err}"),
        }
    }
}

/// Builds a scripted rollout whose events are `steps` (type, phase after, weight), numbered
/// from 1; the rollout's final state follows the last event.
pub fn script(
    id: &str,
    namespace: &str,
    target: &str,
    steps: &[(EventType, Phase, u32)],
    final_message: &str,
) -> Script {
    let events: Vec<RolloutEvent> = steps
        .iter()
        .enumerate()
        .map(|(i, (event_type, phase, weight))| RolloutEvent {
            rollout_id: id.to_string(),
            sequence: i as u64 + 1,
            time: Some(prost_types::Timestamp {
                seconds: 1_795_687_200 + i as i64,
                nanos: 0,
            }),
            r#type: *event_type as i32,
            phase: *phase as i32,
            canary_weight: *weight,
            success_rate: matches!(event_type, EventType::CheckPassed | EventType::CheckFailed)
                .then_some(if *event_type == EventType::CheckPassed {
                    99.9
                } else {
                    80.0
                }),
            request_rate: None,
            failed_checks: 0,
            message: format!("{} at {weight}%", event_type.as_str_name()),
            ..Default::default()
        })
        .collect();
    let last = events.last().cloned().unwrap_or_default();
    Script {
        rollout: Rollout {
            id: id.to_string(),
            namespace: namespace.to_string(),
            target: target.to_string(),
            canary: format!("{target}-canary"),
            virtual_service: target.to_string(),
            phase: last.phase,
            canary_weight: last.canary_weight,
            analysis: Some(Analysis {
                step_weight: Some(25),
                max_weight: Some(100),
                max_failed_checks: Some(2),
                ..Default::default()
            }),
            message: final_message.to_string(),
            last_sequence: events.len() as u64,
            ..Default::default()
        },
        events,
    }
}

/// A canary that passes every check and is promoted: 12 events.
pub fn good_rollout(id: &str, namespace: &str, target: &str) -> Script {
    use EventType as E;
    use Phase as P;
    let mut steps = vec![(E::Started, P::Pending, 0), (E::Preparing, P::Pending, 0)];
    for weight in [25, 50, 75] {
        steps.push((E::WeightChanged, P::Progressing, weight));
        steps.push((E::CheckPassed, P::Progressing, weight));
    }
    steps.extend([
        (E::WeightChanged, P::Progressing, 100),
        (E::Promoting, P::Promoting, 100),
        (E::Promoted, P::Promoting, 0),
        (E::Succeeded, P::Succeeded, 0),
    ]);
    script(id, namespace, target, &steps, "canary promoted")
}

/// A canary that fails its checks and is rolled back: 8 events.
pub fn bad_rollout(id: &str, namespace: &str, target: &str) -> Script {
    use EventType as E;
    use Phase as P;
    script(
        id,
        namespace,
        target,
        &[
            (E::Started, P::Pending, 0),
            (E::WeightChanged, P::Progressing, 25),
            (E::CheckFailed, P::Progressing, 25),
            (E::Halted, P::Progressing, 25),
            (E::CheckFailed, P::Progressing, 25),
            (E::RollingBack, P::RollingBack, 0),
            (E::RolledBack, P::RolledBack, 0),
        ],
        "success rate 80.0% below 99% for 2 checks",
    )
}
