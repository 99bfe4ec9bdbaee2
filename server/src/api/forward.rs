//! Forwarding of mutating calls (start, abort, pause, resume, promote) that reach a replica
//! which does not lead: the call goes on to the leader at the address it published, with the
//! caller's metadata (its credentials included), and the leader's answer comes back as it is.
//! A forwarded call is never forwarded again.

use std::sync::Mutex;

use steerer::v1 as pb;
use steerer::v1::rollout_service_client::RolloutServiceClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::leader::Leadership;

/// Metadata key marking a call forwarded by another replica.
pub const FORWARDED: &str = "x-steerer-forwarded";

/// Sends calls on to the leader.
pub struct Forwarder {
    leadership: watch::Receiver<Leadership>,
    /// The leader's address and a channel to it.
    channel: Mutex<Option<(String, Channel)>>,
}

impl Forwarder {
    /// A forwarder following the election.
    pub fn new(leadership: watch::Receiver<Leadership>) -> Self {
        Self {
            leadership,
            channel: Mutex::new(None),
        }
    }

    /// Whether this replica leads (calls are then served here).
    pub fn leading(&self) -> bool {
        self.leadership.borrow().leading
    }

    /// The replica holding the Lease, as the election last saw it.
    pub fn leader(&self) -> Option<crate::leader::Leader> {
        self.leadership.borrow().leader.clone()
    }

    fn client<T>(&self, request: &Request<T>) -> Result<RolloutServiceClient<Channel>, Status> {
        if request.metadata().contains_key(FORWARDED) {
            return Err(Status::unavailable(
                "the replica this call was forwarded to no longer leads; try again",
            ));
        }
        let leader = self.leadership.borrow().leader.clone();
        let Some(address) = leader.and_then(|l| l.address) else {
            return Err(Status::unavailable(
                "no steerer replica leads right now (an election is under way); try again",
            ));
        };
        let mut cached = self
            .channel
            .lock()
            .map_err(|_| Status::internal("forwarding lock poisoned"))?;
        if let Some((known, channel)) = cached.as_ref()
            && *known == address
        {
            return Ok(RolloutServiceClient::new(channel.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}")).map_err(|e| {
            Status::internal(format!("the leader's address {address} is unusable: {e}"))
        })?;
        let channel = endpoint.connect_lazy();
        *cached = Some((address, channel.clone()));
        Ok(RolloutServiceClient::new(channel))
    }

    /// StartRollout on the leader.
    pub async fn start(
        &self,
        request: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let mut client = self.client(&request)?;
        client.start_rollout(forwarded(request)).await
    }

    /// AbortRollout on the leader.
    pub async fn abort(
        &self,
        request: Request<pb::AbortRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let mut client = self.client(&request)?;
        client.abort_rollout(forwarded(request)).await
    }

    /// PauseRollout on the leader.
    pub async fn pause(
        &self,
        request: Request<pb::PauseRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let mut client = self.client(&request)?;
        client.pause_rollout(forwarded(request)).await
    }

    /// ResumeRollout on the leader.
    pub async fn resume(
        &self,
        request: Request<pb::ResumeRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let mut client = self.client(&request)?;
        client.resume_rollout(forwarded(request)).await
    }

    /// PromoteRollout on the leader.
    pub async fn promote(
        &self,
        request: Request<pb::PromoteRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let mut client = self.client(&request)?;
        client.promote_rollout(forwarded(request)).await
    }
}

/// The same call, marked as forwarded.
fn forwarded<T>(request: Request<T>) -> Request<T> {
    let (mut metadata, _, message) = request.into_parts();
    metadata.insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    Request::from_parts(metadata, tonic::Extensions::default(), message)
}
