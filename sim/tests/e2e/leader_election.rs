//! Leader election with kube-lease-manager (what the steerer server elects its leader with)
//! against the simulator and against a real kube-apiserver: three replicas share one Lease, the
//! leader is killed twice (its manager dropped without releasing the Lease), and a sampler
//! checks every 20 ms that at most one live replica believes it leads, that the Lease only
//! ever names a live replica as its new holder, and that a new leader takes over within the
//! lease duration and a few seconds. Its safety rests on server-side apply: a replica acquires
//! a free Lease with an Apply, and a second replica's Apply is refused with 409 Conflict. On
//! the simulator one replica's Lease writes go through a slow link, which without field
//! ownership lets two replicas lead at once. A last test shows what a partition of the leader
//! does.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use steerer_sim::control_plane::{self, ControlPlane};
use steerer_sim::faults::{ClientMatch, Scope, Verb};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const LEASE: &str = "steerer-leader";
const NAMESPACE: &str = "default";
/// Lease duration and renewal grace, in seconds.
const DURATION: u64 = 2;
const GRACE: u64 = 1;
const SAMPLE: Duration = Duration::from_millis(20);
/// How long after a kill a new leader must be in place: the dead leader's lease runs out
/// (at most `DURATION`), the others release it and wait up to a second before acquiring it,
/// through a slow link for one of them.
const TAKEOVER: Duration = Duration::from_secs(DURATION + 4);
/// Added latency of one replica's Lease writes on the simulator.
const SLOW_LINK: Duration = Duration::from_millis(300);
/// How long a leader leads before it is killed: at least one renewal.
const REIGN: Duration = Duration::from_millis(2_500);

type ManagerTask =
    JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>;

struct Replica {
    identity: String,
    leading: watch::Receiver<bool>,
    task: ManagerTask,
    alive: bool,
}

/// What the sampler saw.
#[derive(Default)]
struct Record {
    /// Moments at which more than one live replica said it leads.
    overlaps: Vec<String>,
    /// Holders the Lease changed to, with whether that replica was alive then.
    holders: Vec<(String, bool)>,
    /// Time from each kill to the next leader.
    takeovers: Vec<Duration>,
}

/// One replica's LeaseManager, with a client of its own (told apart by its User-Agent).
async fn manager(config: &kube::Config, identity: &str) -> kube_lease_manager::LeaseManager {
    let mut config = config.clone();
    config.headers.push((
        http::header::USER_AGENT,
        format!("{identity}/1.0").parse().unwrap(),
    ));
    let client = kube::Client::try_from(config).unwrap();
    LeaseManagerBuilder::new(client, LEASE)
        .with_namespace(NAMESPACE)
        .with_parameters(LeaseParams::new(identity, DURATION, GRACE))
        .build()
        .await
        .unwrap()
}

/// Three replicas, started together as the pods of one Deployment are: all find the Lease
/// free and apply at once, and only one Apply may win.
async fn start_replicas(config: &kube::Config) -> Vec<Replica> {
    let identities = ["replica-a", "replica-b", "replica-c"];
    let mut managers = Vec::new();
    for identity in identities {
        managers.push(manager(config, identity).await);
    }
    let mut replicas = Vec::new();
    for (manager, identity) in managers.into_iter().zip(identities) {
        let (leading, task) = manager.watch().await;
        replicas.push(Replica {
            identity: identity.to_owned(),
            leading,
            task,
            alive: true,
        });
    }
    replicas
}

struct Sampler {
    lease: Api<Lease>,
    holder: Option<String>,
    record: Record,
    started: Instant,
}

impl Sampler {
    /// A sampler reading the Lease through a client of its own.
    fn new(config: &kube::Config) -> Self {
        let observer = kube::Client::try_from(config.clone()).unwrap();
        Self {
            lease: Api::namespaced(observer, NAMESPACE),
            holder: None,
            record: Record::default(),
            started: Instant::now(),
        }
    }

    /// One sample: who says it leads (the one live leader, if exactly one), and who the Lease
    /// names.
    async fn sample(&mut self, replicas: &[Replica]) -> Option<usize> {
        let leaders: Vec<usize> = replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.alive && *r.leading.borrow())
            .map(|(i, _)| i)
            .collect();
        if leaders.len() > 1 {
            let names: Vec<&str> = leaders
                .iter()
                .map(|i| replicas[*i].identity.as_str())
                .collect();
            self.record.overlaps.push(format!(
                "{:?}: {} lead together",
                self.started.elapsed(),
                names.join(" and ")
            ));
        }
        let holder = self
            .lease
            .get(LEASE)
            .await
            .ok()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        if holder != self.holder {
            if let Some(new) = &holder {
                let alive = replicas.iter().any(|r| r.alive && &r.identity == new);
                self.record.holders.push((new.clone(), alive));
            }
            self.holder = holder;
        }
        match leaders.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// Samples until one live replica leads; panics after `limit`.
    async fn until_leader(&mut self, replicas: &[Replica], limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            if let Some(leader) = self.sample(replicas).await {
                return leader;
            }
            assert!(
                start.elapsed() < limit,
                "no leader within {limit:?}, {:?} into the run (holders so far: {:?})",
                self.started.elapsed(),
                self.record.holders
            );
            tokio::time::sleep(SAMPLE).await;
        }
    }

    /// Samples for `period`.
    async fn for_a_while(&mut self, replicas: &[Replica], period: Duration) {
        let until = Instant::now() + period;
        while Instant::now() < until {
            self.sample(replicas).await;
            tokio::time::sleep(SAMPLE).await;
        }
    }
}

/// Three replicas, the leader killed twice; returns what the sampler saw.
async fn elect_and_kill_twice(config: kube::Config) -> Record {
    let mut replicas = start_replicas(&config).await;
    let mut sampler = Sampler::new(&config);
    let mut leader = sampler.until_leader(&replicas, TAKEOVER).await;
    for _ in 0..2 {
        sampler.for_a_while(&replicas, REIGN).await;
        // Killed: the manager's task ends where it is, without releasing the Lease.
        replicas[leader].task.abort();
        replicas[leader].alive = false;
        let killed = Instant::now();
        let next = sampler.until_leader(&replicas, TAKEOVER).await;
        sampler.record.takeovers.push(killed.elapsed());
        assert_ne!(next, leader);
        leader = next;
    }
    sampler.for_a_while(&replicas, REIGN).await;
    for replica in &replicas {
        replica.task.abort();
    }
    sampler.record
}

fn check(record: &Record) {
    eprintln!(
        "holders {:?}, takeovers {:?}",
        record.holders, record.takeovers
    );
    assert!(
        record.overlaps.is_empty(),
        "two replicas led at once:\n{}",
        record.overlaps.join("\n")
    );
    assert!(
        record.holders.iter().all(|(_, alive)| *alive),
        "the Lease went to a dead replica: {:?}",
        record.holders
    );
    // The first holder, then one per kill.
    assert!(record.holders.len() >= 3, "{:?}", record.holders);
    assert_eq!(record.takeovers.len(), 2);
    assert!(
        record.takeovers.iter().all(|t| *t < TAKEOVER),
        "{:?}",
        record.takeovers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_at_a_time_and_a_live_one_takes_over_on_the_simulator() {
    let sim = crate::support::start().await;
    // One replica on a slow link: its writes to the Lease land 300 ms after it read the Lease,
    // long after a faster replica acquired it and checked that it did. Only field ownership
    // then keeps the slow replica's Apply from taking the Lease as well.
    sim.faults().delay_requests(
        SLOW_LINK,
        Scope::verb(Verb::Patch)
            .resource("leases")
            .client(ClientMatch::UserAgent("replica-b".into())),
    );
    let record = elect_and_kill_twice(sim.kube_config().await.unwrap()).await;
    check(&record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_at_a_time_and_a_live_one_takes_over_on_kube_apiserver() {
    let cluster =
        tokio::task::spawn_blocking(|| ControlPlane::start(&control_plane::Options::default()))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
    let record = elect_and_kill_twice(cluster.kube_config().await.unwrap()).await;
    drop(cluster);
    check(&record);
}

/// What kube-lease-manager 0.13.1 does when the leader is cut off from the API server (its
/// requests held, as behind a network partition): it goes on saying it leads for the whole
/// partition, since it has no deadline of its own for a renewal, while another replica takes
/// the expired Lease over, so two replicas lead at once; once the partition heals the old
/// leader learns it lost. A server electing its leader with it must stop acting as leader by
/// itself when renewals stop succeeding. (Its queued renewal, written with the renewTime of
/// before the partition, can also make the new holder's Lease look expired, so the old leader
/// may release it and lead again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_goes_on_leading_while_another_takes_over() {
    const PARTITION: Duration = Duration::from_secs(5);
    let sim = crate::support::start().await;
    let config = sim.kube_config().await.unwrap();
    let replicas = start_replicas(&config).await;
    let mut sampler = Sampler::new(&config);
    let leader = sampler.until_leader(&replicas, TAKEOVER).await;
    sampler.for_a_while(&replicas, REIGN).await;
    let cut_off = ClientMatch::UserAgent(replicas[leader].identity.clone());
    sim.faults().hold_client(cut_off.clone(), Duration::MAX);
    sampler.for_a_while(&replicas, PARTITION).await;
    assert!(
        *replicas[leader].leading.borrow(),
        "the cut-off leader stepped down by itself"
    );
    assert!(
        !sampler.record.overlaps.is_empty(),
        "no other replica took over during the partition (holders {:?})",
        sampler.record.holders
    );
    let other = sampler
        .record
        .holders
        .iter()
        .any(|(h, _)| *h != replicas[leader].identity);
    assert!(
        other,
        "the Lease never changed hands: {:?}",
        sampler.record.holders
    );

    // Once the partition heals, the replicas settle on one leader again.
    sim.faults().release_client(&cut_off);
    sampler.for_a_while(&replicas, TAKEOVER).await;
    sampler.record.overlaps.clear();
    sampler.for_a_while(&replicas, REIGN).await;
    assert!(
        sampler.record.overlaps.is_empty(),
        "{:?}",
        sampler.record.overlaps
    );
    assert!(
        sampler.sample(&replicas).await.is_some(),
        "no single leader after the partition healed"
    );
    for replica in &replicas {
        replica.task.abort();
    }
}
