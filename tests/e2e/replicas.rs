//! Several replicas with leader election (`--leader-elect`): exactly one executes rollouts,
//! every replica serves reads and forwards starts and commands to the leader, and when the
//! leader dies another takes over and finishes the rollout, while a client watching through
//! the replicas gets every event once, in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{GA, Harness, NS, ServerHandle, connect, start_server};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use steerer::v1::rollout_service_client::RolloutServiceClient;
use steerer::v1::{
    AbortRolloutRequest, Analysis, GetRolloutRequest, ListRolloutsRequest, Phase, Rollout,
    RolloutEvent, WatchRolloutRequest,
};
use steerer_server::leader::LeaderConfig;
use steerer_server::telemetry::Telemetry;
use steerer_sim::faults::ClientMatch;
use tokio::sync::mpsc;
use tonic::transport::Channel;

fn seconds(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

/// Replicas by identity, each with a Kubernetes client whose User-Agent is its identity (so
/// the simulator can cut one off) and metrics of its own.
struct Replicas {
    servers: BTreeMap<String, ServerHandle>,
    telemetry: BTreeMap<String, Telemetry>,
}

impl Replicas {
    async fn start(h: &mut Harness, n: usize) -> Replicas {
        // The harness's own server would drive rollouts beside the replicas: stop it.
        if let Some(server) = h.server.take() {
            server.stop().await.unwrap();
        }
        let mut servers = BTreeMap::new();
        let mut telemetry = BTreeMap::new();
        for i in 0..n {
            let identity = format!("replica-{i}");
            let mut config = h.config.clone();
            config.leader = Some(LeaderConfig {
                namespace: NS.into(),
                lease_name: "steerer".into(),
                identity: identity.clone(),
                advertise_address: None,
                lease_duration: Duration::from_secs(4),
                renew_before: Duration::from_secs(2),
            });
            let replica_telemetry = Telemetry::default();
            config.telemetry = replica_telemetry.clone();
            config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
            let mut kube_config = h.kube_config.clone();
            kube_config
                .headers
                .push((http::header::USER_AGENT, identity.parse().unwrap()));
            servers.insert(identity.clone(), start_server(config, kube_config).await);
            telemetry.insert(identity, replica_telemetry);
        }
        Replicas { servers, telemetry }
    }

    /// Whether a replica's own metrics say it leads.
    async fn says_it_leads(&self, identity: &str) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let addr = loop {
            if let Some(addr) = self.telemetry[identity].metrics_addr() {
                break addr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no metrics endpoint"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("steerer_leader "))
            .unwrap_or_else(|| panic!("no steerer_leader in\n{text}"));
        line.ends_with(" 1")
    }

    fn addr(&self, identity: &str) -> SocketAddr {
        self.servers[identity].addr
    }

    async fn client(&self, identity: &str) -> RolloutServiceClient<Channel> {
        connect(self.addr(identity)).await
    }

    /// Waits until a live replica other than `not` holds the lease; returns its identity.
    async fn leader(&self, h: &Harness, not: Option<&str>) -> String {
        let leases: Api<Lease> = Api::namespaced(h.kube.clone(), NS);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Elected, and its address published for the others.
            let holder = leases.get_opt("steerer").await.unwrap().and_then(|l| {
                let published = l
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(steerer_server::leader::IDENTITY_ANNOTATION).cloned());
                l.spec?
                    .holder_identity
                    .filter(|h| Some(h) == published.as_ref())
            });
            if let Some(holder) = holder
                && self.servers.contains_key(&holder)
                && Some(holder.as_str()) != not
            {
                return holder;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no live replica took the lease"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A live replica that is not `leader`.
    fn follower(&self, leader: &str) -> String {
        self.servers
            .keys()
            .find(|k| k.as_str() != leader)
            .cloned()
            .unwrap()
    }

    /// Kills a replica as `kill -9` would: no lease release, no drain.
    async fn kill(&mut self, identity: &str) {
        if let Some(server) = self.servers.remove(identity) {
            server.kill().await;
        }
    }
}

/// Watches a rollout to its end through the live replicas, resuming from the next sequence on
/// another replica whenever the one it watches through dies.
fn watch_through_replicas(
    id: String,
    mut addrs: mpsc::UnboundedReceiver<SocketAddr>,
) -> tokio::task::JoinHandle<Vec<RolloutEvent>> {
    tokio::spawn(async move {
        let mut events: Vec<RolloutEvent> = Vec::new();
        let mut addr = addrs.recv().await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watch never ended"
            );
            let from = events.last().map_or(0, |e| e.sequence + 1);
            let stream = match connect_quietly(addr).await {
                Some(mut client) => client
                    .watch_rollout(WatchRolloutRequest {
                        id: id.clone(),
                        from_sequence: from,
                    })
                    .await
                    .ok()
                    .map(tonic::Response::into_inner),
                None => None,
            };
            if let Some(mut stream) = stream {
                while let Ok(Some(event)) = stream.message().await {
                    let terminal = matches!(
                        event.phase(),
                        Phase::Succeeded | Phase::RolledBack | Phase::Aborted | Phase::Failed
                    );
                    events.push(event);
                    if terminal {
                        return events;
                    }
                }
            }
            // The replica went away (or refused): carry on through the next one offered.
            while let Ok(next) = addrs.try_recv() {
                addr = next;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn connect_quietly(addr: SocketAddr) -> Option<RolloutServiceClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    Some(RolloutServiceClient::new(channel))
}

/// StartRollout as a client through a Service would call it: UNAVAILABLE (an election under
/// way, or the replicas not yet aware of its outcome) is tried again.
async fn start(
    client: &mut RolloutServiceClient<Channel>,
    request: steerer::v1::StartRolloutRequest,
) -> Result<Rollout, tonic::Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.start_rollout(request.clone()).await {
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            answer => return answer.map(tonic::Response::into_inner),
        }
    }
}

async fn get(client: &mut RolloutServiceClient<Channel>, id: &str) -> Rollout {
    client
        .get_rollout(GetRolloutRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn wait_until(
    client: &mut RolloutServiceClient<Channel>,
    id: &str,
    f: impl Fn(&Rollout) -> bool,
) -> Rollout {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = get(client, id).await;
        if f(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout {id} stuck in {:?} at {}: {}",
            r.phase(),
            r.canary_weight,
            r.message
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_twice_mid_rollout_the_rollout_still_promotes_and_the_watch_misses_nothing()
 {
    let mut h = Harness::start().await;
    let mut replicas = Replicas::start(&mut h, 3).await;
    let first = replicas.leader(&h, None).await;
    let watched = replicas.follower(&first);

    // Started through a follower, which forwards it to the leader.
    let mut through = replicas.client(&watched).await;
    let started = start(
        &mut through,
        h.request(Analysis {
            step_weight: Some(20),
            interval: Some(seconds(1)),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let (addrs, offered) = mpsc::unbounded_channel();
    addrs.send(replicas.addr(&watched)).unwrap();
    let watch = watch_through_replicas(started.id.clone(), offered);

    let mut leader = first;
    let mut weight = 0;
    for _ in 0..2 {
        let survivor = replicas.follower(&leader);
        let mut client = replicas.client(&survivor).await;
        weight = wait_until(&mut client, &started.id, |r| r.canary_weight > weight)
            .await
            .canary_weight;
        replicas.kill(&leader).await;
        addrs.send(replicas.addr(&survivor)).unwrap();
        let next = replicas.leader(&h, Some(&leader)).await;
        assert_ne!(next, leader);
        leader = next;
    }
    let mut last = replicas.client(&leader).await;
    let done = wait_until(&mut last, &started.id, |r| {
        matches!(
            r.phase(),
            Phase::Succeeded | Phase::RolledBack | Phase::Aborted | Phase::Failed
        )
    })
    .await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert_eq!(h.weights().await, (100, 0));

    let events = watch.await.unwrap();
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=done.last_sequence).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(events.last().unwrap().phase(), Phase::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_start_and_abort_to_the_leader_and_serves_reads_itself() {
    let mut h = Harness::start().await;
    let replicas = Replicas::start(&mut h, 2).await;
    let leader = replicas.leader(&h, None).await;
    let follower = replicas.follower(&leader);
    let mut via_follower = replicas.client(&follower).await;
    let mut via_leader = replicas.client(&leader).await;

    let mut request = h.request(Analysis {
        interval: Some(seconds(30)),
        ..Default::default()
    });
    request.request_id = "release-7".into();
    let started = start(&mut via_follower, request.clone()).await.unwrap();
    // The same request through the other replica is the same rollout; a second start for the
    // target is refused by the leader, whichever replica it reaches.
    let again = start(&mut via_leader, request).await.unwrap();
    assert_eq!(again.id, started.id);
    let refused = start(&mut via_follower, h.request(Analysis::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");

    // The follower serves reads from the records it follows.
    let seen = wait_until(&mut via_follower, &started.id, |r| {
        r.phase() == Phase::Progressing
    })
    .await;
    assert_eq!(seen.target, GA);
    let listed = via_follower
        .list_rollouts(ListRolloutsRequest {
            namespace: NS.into(),
            active_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.rollouts.len(), 1);

    let aborted = via_follower
        .abort_rollout(AbortRolloutRequest {
            id: started.id.clone(),
            reason: "withdrawn".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(aborted.phase(), Phase::Progressing);
    let done = wait_until(&mut via_follower, &started.id, |r| {
        r.phase() == Phase::Aborted
    })
    .await;
    assert!(done.message.contains("withdrawn"), "{}", done.message);
    assert_eq!(h.weights().await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_leading_before_another_takes_over() {
    let mut h = Harness::start().await;
    let world = h.sim().world().clone();
    let faults = &world.faults;
    let replicas = Replicas::start(&mut h, 3).await;
    let cut_off = replicas.leader(&h, None).await;
    let watcher = replicas.follower(&cut_off);
    let mut client = replicas.client(&watcher).await;
    let weights = crate::rollout_faults::WeightLog::start(&h).await;
    let started = start(
        &mut client,
        h.request(Analysis {
            step_weight: Some(20),
            interval: Some(seconds(1)),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    wait_until(&mut client, &started.id, |r| r.canary_weight >= 20).await;
    assert!(replicas.says_it_leads(&cut_off).await);

    // A network partition: the leader's requests (renewals, writes, watches) wait.
    let held = ClientMatch::UserAgent(cut_off.clone());
    faults.hold_client(held.clone(), Duration::MAX);
    let next = replicas.leader(&h, Some(&cut_off)).await;
    assert!(
        !replicas.says_it_leads(&cut_off).await,
        "the cut-off leader still leads while {next} holds the lease"
    );
    let done = wait_until(&mut client, &started.id, |r| {
        matches!(
            r.phase(),
            Phase::Succeeded | Phase::RolledBack | Phase::Aborted | Phase::Failed
        )
    })
    .await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);

    // The partition heals: whatever the old leader had on the wire is refused (every write
    // is conditional on what it read), so nothing moves back.
    faults.release_client(&held);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = get(&mut client, &started.id).await;
    assert_eq!(after.phase(), Phase::Succeeded);
    assert_eq!(after.last_sequence, done.last_sequence);
    assert_eq!(h.weights().await, (100, 0));
    let seen = weights.canary_weights();
    assert!(
        seen.windows(2).all(|w| w[1] > w[0] || w[1] == 0),
        "canary weights only ever rose, then went to 0: {seen:?}"
    );
    let events =
        crate::common::collect_events(&mut client, &started.id, 0, Duration::from_secs(5)).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=done.last_sequence).collect::<Vec<_>>());
}
