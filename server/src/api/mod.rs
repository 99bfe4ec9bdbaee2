//! The gRPC surface: the `steerer.v1.RolloutService` implementation, validation and
//! conversion, behind the authorization layer (`auth`). The only module that knows tonic and
//! the generated types.

pub mod access;
pub mod audit;
pub mod auth;
pub mod convert;
pub mod encoded;
pub mod forward;
pub mod info;
pub mod kubeauth;
pub mod limits;
#[cfg(test)]
mod proptests;
pub mod service;
pub mod validate;
pub mod watch;

use std::sync::Arc;

use service::rollout_service_server::RolloutService;
use steerer::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::engine::{Command, ListQuery, StartRequest, Supervisor};
use crate::store::Filter;
use crate::telemetry::Telemetry;
use encoded::EncodedEvent;
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
    /// Caps on open watch streams.
    limits: Arc<limits::Limits>,
    /// Where mutating calls are recorded.
    audit: Arc<audit::Audit>,
    /// What GetServerInfo tells besides the build and the leader.
    facts: info::Facts,
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
            limits: Arc::new(limits::Limits::new(limits::LimitsConfig::default())),
            audit: Arc::default(),
            facts: info::Facts::default(),
        }
    }

    /// Answers GetServerInfo with `facts`.
    pub fn with_facts(mut self, facts: info::Facts) -> Self {
        self.facts = facts;
        self
    }

    /// Caps open watch streams with `limits` (shared with the authentication layer).
    pub fn with_limits(mut self, limits: Arc<limits::Limits>) -> Self {
        self.limits = limits;
        self
    }

    /// Records mutating calls in `audit`.
    pub fn with_audit(mut self, audit: Arc<audit::Audit>) -> Self {
        self.audit = audit;
        self
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

    /// The namespace of an existing rollout (NOT_FOUND for an unknown id).
    async fn namespace_of(&self, rollout: &str) -> Result<crate::domain::Rollout, Status> {
        self.supervisor.get(rollout).await.map_err(convert::status)
    }

    /// Records a mutating call's outcome and passes it on.
    fn audited<T>(
        &self,
        access: &access::Access,
        rpc: &'static str,
        (namespace, target, rollout): (&str, &str, &str),
        answer: Result<Response<T>, Status>,
        rollout_of: impl Fn(&T) -> (String, String),
    ) -> Result<Response<T>, Status> {
        let (outcome, message, rollout, target) = match &answer {
            Ok(response) => {
                let (id, target) = rollout_of(response.get_ref());
                ("OK".to_owned(), String::new(), id, target)
            }
            Err(status) => (
                audit::code_name(status.code()).to_owned(),
                status.message().to_owned(),
                rollout.to_owned(),
                target.to_owned(),
            ),
        };
        self.audit.record(&audit::Entry {
            time: chrono::Utc::now(),
            caller: access.caller().user.clone(),
            rpc,
            namespace: namespace.to_owned(),
            target,
            rollout,
            outcome,
            message,
        });
        answer
    }

    /// An operator's command: the rollout's namespace is authorized for `verb`, then the
    /// command goes to the leader (forwarded when this replica follows) and is audited.
    async fn run_command<T>(
        &self,
        request: Request<T>,
        rpc: &'static str,
        verb: access::Verb,
        rollout: &str,
        command: Command,
        forward: impl AsyncFnOnce(
            &forward::Forwarder,
            Request<T>,
        ) -> Result<Response<pb::Rollout>, Status>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let access = access::of(&request)?;
        id(rollout)?;
        let found = self.namespace_of(rollout).await?;
        let place = (found.namespace.as_str(), found.target.as_str(), rollout);
        if let Err(status) = access.require(verb, &found.namespace).await {
            return self.audited(&access, rpc, place, Err(status), summary);
        }
        let answer = match self.follower() {
            Some(leader) => forward(leader, request).await,
            None => self
                .supervisor
                .command_by(rollout, command, Some(access.caller().user.clone()))
                .await
                .map(|r| Response::new(convert::rollout(&r)))
                .map_err(convert::status),
        };
        self.audited(&access, rpc, place, answer, summary)
    }
}

fn summary(r: &pb::Rollout) -> (String, String) {
    (r.id.clone(), r.target.clone())
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
        let access = access::of(&request)?;
        let r = request.get_ref();
        validate::dns1123_label("namespace", &r.namespace).map_err(invalid)?;
        validate::dns1123_label("target", &r.target).map_err(invalid)?;
        validate::canary(&r.target, &r.canary).map_err(invalid)?;
        let route = validate::route(r.route.as_ref(), &r.virtual_service).map_err(invalid)?;
        let observer = validate::observer(&r.observer).map_err(invalid)?;
        validate::token("request_id", &r.request_id, false).map_err(invalid)?;
        let images = validate::images(&r.images).map_err(invalid)?;
        // The strategy first: its refusals say more than the settings they make meaningless.
        let strategy = validate::strategy(r.analysis.as_ref()).map_err(invalid)?;
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
        analysis.strategy = strategy.strategy(&analysis.strategy);
        if r.canary_replicas.is_some_and(|n| n == 0 || n > 1000) {
            return Err(Status::invalid_argument(
                "canary_replicas must be between 1 and 1000",
            ));
        }
        // A valid request for traffic this server cannot route yet is refused whole, never
        // run as a plain canary.
        if let Some(unsupported) = strategy.unsupported() {
            return Err(Status::unimplemented(unsupported));
        }
        let (namespace, target) = (r.namespace.clone(), r.target.clone());
        let place = (namespace.as_str(), target.as_str(), "");
        if let Err(status) = access.require(access::Verb::Start, &namespace).await {
            return self.audited(&access, "StartRollout", place, Err(status), summary);
        }
        self.served(&namespace)?;
        if let Some(leader) = self.follower() {
            let answer = leader.start(request).await;
            return self.audited(&access, "StartRollout", place, answer, summary);
        }
        let r = request.into_inner();
        let started = self
            .supervisor
            .start(StartRequest {
                namespace: r.namespace,
                target: r.target,
                canary: r.canary,
                route,
                observer,
                images,
                analysis,
                request_id: r.request_id,
                canary_replicas: r.canary_replicas,
                created_by: access.caller().user.clone(),
            })
            .await
            .map(|r| Response::new(convert::rollout(&r)))
            .map_err(convert::status);
        self.audited(&access, "StartRollout", place, started, summary)
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let access = access::of(&request)?;
        let r = request.into_inner();
        id(&r.id)?;
        let rollout = self.namespace_of(&r.id).await?;
        access
            .require(access::Verb::Get, &rollout.namespace)
            .await?;
        Ok(Response::new(convert::rollout(&rollout)))
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        let access = access::of(&request)?;
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
        let everywhere = match &query.filter.namespace {
            Some(namespace) => {
                access.require(access::Verb::List, namespace).await?;
                true
            }
            None => access.allows(access::Verb::List, "").await?,
        };
        let mut listed = self
            .supervisor
            .listed(&query)
            .await
            .map_err(convert::status)?;
        if !everywhere {
            // Across namespaces, a caller who may not list everywhere sees the namespaces it
            // may list in.
            let mut namespaces: Vec<String> = listed.iter().map(|r| r.namespace.clone()).collect();
            namespaces.sort();
            namespaces.dedup();
            let mut visible = Vec::new();
            for namespace in namespaces {
                if access.allows(access::Verb::List, &namespace).await? {
                    visible.push(namespace);
                }
            }
            listed.retain(|r| visible.contains(&r.namespace));
        }
        let page = crate::engine::supervisor::page(listed, &query);
        Ok(Response::new(pb::ListRolloutsResponse {
            rollouts: page.rollouts.iter().map(convert::rollout).collect(),
            next_page_token: page
                .next
                .as_ref()
                .map(validate::encode_page_token)
                .unwrap_or_default(),
        }))
    }

    /// Each event is converted and encoded once, by the first stream that sends it; every
    /// other stream sends the same bytes.
    type WatchRolloutStream = ReceiverStream<Result<EncodedEvent, Status>>;

    async fn watch_rollout(
        &self,
        request: Request<pb::WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        let access = access::of(&request)?;
        let r = request.into_inner();
        id(&r.id)?;
        let rollout = self.namespace_of(&r.id).await?;
        access
            .require(access::Verb::Watch, &rollout.namespace)
            .await?;
        let permit = self.limits.open_watch(&access.caller().user)?;
        let mut source =
            watch::EventSource::open(self.supervisor.clone(), &r.id, r.from_sequence).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let draining = self.draining.clone();
        // Dropped with the task, however it ends: drained, client gone, or an error sent.
        let open = self.telemetry.watch_stream();
        let slow_reader = self.limits.config().slow_reader;
        tokio::spawn(async move {
            let _open = open;
            let _permit = permit;
            loop {
                let event = tokio::select! {
                    _ = draining.cancelled() => break,
                    _ = tx.closed() => break,
                    event = source.next() => event,
                };
                let (answer, sequence) = match event {
                    None => break,
                    Some(Ok(event)) => (Ok(EncodedEvent::of(&event)), event.sequence),
                    Some(Err(status)) => (Err(status), 0),
                };
                let failed = answer.is_err();
                match tokio::time::timeout(slow_reader, tx.send(answer)).await {
                    Ok(Ok(())) if !failed => {}
                    Ok(_) => break,
                    Err(_) => {
                        // The client has read nothing for a while: the server buffers no
                        // more for it. What it has not read yet is followed by where to
                        // resume.
                        let ended = Status::resource_exhausted(format!(
                            "the client read too slowly; watch again with from_sequence {sequence}"
                        ));
                        let _ = tokio::time::timeout(slow_reader, tx.send(Err(ended))).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn abort_rollout(
        &self,
        request: Request<pb::AbortRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref().clone();
        validate::reason(&r.reason).map_err(invalid)?;
        let command = Command::Abort { reason: r.reason };
        self.run_command(
            request,
            "AbortRollout",
            access::Verb::Abort,
            &r.id,
            command,
            async |leader, request| leader.abort(request).await,
        )
        .await
    }

    async fn pause_rollout(
        &self,
        request: Request<pb::PauseRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref().clone();
        validate::reason(&r.reason).map_err(invalid)?;
        let command = Command::Pause { reason: r.reason };
        self.run_command(
            request,
            "PauseRollout",
            access::Verb::Pause,
            &r.id,
            command,
            async |leader, request| leader.pause(request).await,
        )
        .await
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::ResumeRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let id = request.get_ref().id.clone();
        self.run_command(
            request,
            "ResumeRollout",
            access::Verb::Resume,
            &id,
            Command::Resume,
            async |leader, request| leader.resume(request).await,
        )
        .await
    }

    async fn promote_rollout(
        &self,
        request: Request<pb::PromoteRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let id = request.get_ref().id.clone();
        self.run_command(
            request,
            "PromoteRollout",
            access::Verb::Promote,
            &id,
            Command::Promote,
            async |leader, request| leader.promote(request).await,
        )
        .await
    }

    /// Answered by the replica that receives it, follower or leader: every field is this
    /// replica's own (its build, its view of the Lease), and a follower must answer while no
    /// replica leads, when there is nobody to forward to.
    async fn get_server_info(
        &self,
        request: Request<pb::GetServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfo>, Status> {
        let access = access::of(&request)?;
        access.caller_suffices();
        let leading = match &self.forward {
            Some(forwarder) => info::Leading::Elected(forwarder.leader()),
            None => info::Leading::Alone,
        };
        Ok(Response::new(info::server_info(&self.facts, &leading)))
    }
}
