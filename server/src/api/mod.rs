//! The gRPC surface: the `steerer.v1.RolloutService` implementation, validation and
//! conversion, behind the authorization layer (`auth`). The only module that knows tonic and
//! the generated types.

pub mod auth;
pub mod convert;
pub mod forward;
pub mod validate;
pub mod watch;

use std::sync::Arc;

use steerer::v1 as pb;
use steerer::v1::rollout_service_server::RolloutService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::engine::{Command, ListQuery, StartRequest, Supervisor};
use crate::store::Filter;
use crate::telemetry::Telemetry;
use validate::Invalid;

/// Events buffered per WatchRollout stream before the producer waits for the client.
const STREAM_BUFFER: usize = 64;

/// The RolloutService over the engine.
pub struct Api {
    supervisor: Arc<Supervisor>,
    namespaces: Vec<String>,
    /// Cancelled at shutdown: open watches end cleanly.
    draining: CancellationToken,
    /// With leader election: sends mutating calls on to the leader when this replica
    /// follows.
    forward: Option<forward::Forwarder>,
    /// Counts the open watch streams.
    telemetry: Telemetry,
}

impl Api {
    /// A service serving `namespaces` (empty = all). Calls are authorized before they get
    /// here, by [`auth::AuthLayer`].
    pub fn new(
        supervisor: Arc<Supervisor>,
        namespaces: Vec<String>,
        draining: CancellationToken,
    ) -> Self {
        Self {
            supervisor,
            namespaces,
            draining,
            forward: None,
            telemetry: Telemetry::default(),
        }
    }

    /// Forwards mutating calls to the leader while this replica does not lead.
    pub fn with_forwarding(mut self, forwarder: forward::Forwarder) -> Self {
        self.forward = Some(forwarder);
        self
    }

    /// The forwarder, when this replica follows.
    fn follower(&self) -> Option<&forward::Forwarder> {
        self.forward.as_ref().filter(|f| !f.leading())
    }

    /// Counts open watch streams in `telemetry` rather than in a registry of its own.
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    fn served(&self, namespace: &str) -> Result<(), Status> {
        if self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "namespace {namespace} is not served by this server"
            )))
        }
    }

    /// Validates the id, hands an operator's command to the rollout's driver and answers with
    /// the rollout as the command left it.
    async fn run_command(
        &self,
        rollout: &str,
        command: Command,
    ) -> Result<Response<pb::Rollout>, Status> {
        id(rollout)?;
        let rollout = self
            .supervisor
            .command(rollout, command)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::rollout(&rollout)))
    }
}

fn invalid(e: Invalid) -> Status {
    Status::invalid_argument(e.0)
}

fn id(value: &str) -> Result<(), Status> {
    validate::token("id", value, true).map_err(invalid)
}

#[tonic::async_trait]
impl RolloutService for Api {
    async fn start_rollout(
        &self,
        request: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        if let Some(leader) = self.follower() {
            return leader.start(request).await;
        }
        let r = request.into_inner();
        validate::dns1123_label("namespace", &r.namespace).map_err(invalid)?;
        validate::dns1123_label("target", &r.target).map_err(invalid)?;
        validate::canary(&r.target, &r.canary).map_err(invalid)?;
        validate::optional_label("virtual_service", &r.virtual_service).map_err(invalid)?;
        validate::token("request_id", &r.request_id, false).map_err(invalid)?;
        let images = validate::images(&r.images).map_err(invalid)?;
        let config = self.supervisor.config();
        let mut analysis =
            validate::analysis(r.analysis.as_ref(), &config.defaults).map_err(invalid)?;
        validate::judged_on(
            r.analysis.as_ref(),
            &mut analysis,
            &config.templates,
            &config.webhook_allow,
        )
        .map_err(invalid)?;
        if r.canary_replicas.is_some_and(|n| n == 0 || n > 1000) {
            return Err(Status::invalid_argument(
                "canary_replicas must be between 1 and 1000",
            ));
        }
        self.served(&r.namespace)?;
        let started = self
            .supervisor
            .start(StartRequest {
                namespace: r.namespace,
                target: r.target,
                canary: r.canary,
                virtual_service: r.virtual_service,
                images,
                analysis,
                request_id: r.request_id,
                canary_replicas: r.canary_replicas,
            })
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::rollout(&started)))
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.into_inner();
        id(&r.id)?;
        let rollout = self.supervisor.get(&r.id).await.map_err(convert::status)?;
        Ok(Response::new(convert::rollout(&rollout)))
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        let r = request.into_inner();
        validate::optional_label("namespace", &r.namespace).map_err(invalid)?;
        validate::optional_label("target", &r.target).map_err(invalid)?;
        let page_size = validate::page_size(r.page_size).map_err(invalid)?;
        let phases = validate::phases(&r.phases).map_err(invalid)?;
        let after = validate::page_token(&r.page_token).map_err(invalid)?;
        if !r.namespace.is_empty() {
            self.served(&r.namespace)?;
        }
        let query = ListQuery {
            filter: Filter {
                namespace: (!r.namespace.is_empty()).then_some(r.namespace),
                target: (!r.target.is_empty()).then_some(r.target),
            },
            phases,
            active_only: r.active_only,
            page_size,
            after,
        };
        let page = self
            .supervisor
            .list(&query)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::ListRolloutsResponse {
            rollouts: page.rollouts.iter().map(convert::rollout).collect(),
            next_page_token: page
                .next
                .as_ref()
                .map(validate::encode_page_token)
                .unwrap_or_default(),
        }))
    }

    type WatchRolloutStream = ReceiverStream<Result<pb::RolloutEvent, Status>>;

    async fn watch_rollout(
        &self,
        request: Request<pb::WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        let r = request.into_inner();
        id(&r.id)?;
        let mut source =
            watch::EventSource::open(self.supervisor.clone(), &r.id, r.from_sequence).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let draining = self.draining.clone();
        // Dropped with the task, however it ends: drained, client gone, or an error sent.
        let open = self.telemetry.watch_stream();
        tokio::spawn(async move {
            let _open = open;
            loop {
                let event = tokio::select! {
                    _ = draining.cancelled() => break,
                    _ = tx.closed() => break,
                    event = source.next() => event,
                };
                let answer = match event {
                    None => break,
                    Some(event) => event.map(|e| convert::event(&e)),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn abort_rollout(
        &self,
        request: Request<pb::AbortRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        if let Some(leader) = self.follower() {
            return leader.abort(request).await;
        }
        let r = request.into_inner();
        validate::reason(&r.reason).map_err(invalid)?;
        self.run_command(&r.id, Command::Abort { reason: r.reason })
            .await
    }

    async fn pause_rollout(
        &self,
        request: Request<pb::PauseRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        if let Some(leader) = self.follower() {
            return leader.pause(request).await;
        }
        let r = request.into_inner();
        validate::reason(&r.reason).map_err(invalid)?;
        self.run_command(&r.id, Command::Pause { reason: r.reason })
            .await
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::ResumeRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        if let Some(leader) = self.follower() {
            return leader.resume(request).await;
        }
        let r = request.into_inner();
        self.run_command(&r.id, Command::Resume).await
    }

    async fn promote_rollout(
        &self,
        request: Request<pb::PromoteRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        if let Some(leader) = self.follower() {
            return leader.promote(request).await;
        }
        let r = request.into_inner();
        self.run_command(&r.id, Command::Promote).await
    }
}
