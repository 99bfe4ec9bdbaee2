//! Leader election over a `coordination.k8s.io` Lease: the lease itself is taken and renewed
//! by `kube-lease-manager`; this module watches the Lease to know who leads and where to reach
//! them (the leader writes its address into an annotation), and keeps the fence: a replica
//! counts as leading only while the renewal it last saw leaves more than a margin before the
//! lease could expire, so a leader cut off from the API server stops writing before another
//! replica may take over.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Annotation on the Lease holding the leader's address for other replicas.
pub const ADDRESS_ANNOTATION: &str = "steerer.dev/leader-address";
/// Annotation naming whose address [`ADDRESS_ANNOTATION`] is.
pub const IDENTITY_ANNOTATION: &str = "steerer.dev/leader-identity";

/// Leader election settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Where the other replicas reach this one (`host:port`); `None` = the listener's address.
    pub advertise_address: Option<String>,
    /// How long a lease lasts without renewal (whole seconds, at least 2).
    pub lease_duration: Duration,
    /// How long before expiry the leader renews (whole seconds, at least 1, less than the
    /// duration).
    pub renew_before: Duration,
}

/// Default lease duration.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default renewal margin.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(5);

impl LeaderConfig {
    /// Checks the durations.
    pub fn validate(&self) -> Result<(), String> {
        let whole = |d: Duration| d.subsec_nanos() == 0;
        if !whole(self.lease_duration) || !whole(self.renew_before) {
            return Err("lease duration and renewal margin are whole seconds".into());
        }
        if self.lease_duration < Duration::from_secs(2) {
            return Err("the lease duration must be at least 2s".into());
        }
        if self.renew_before.is_zero() || self.renew_before >= self.lease_duration {
            return Err(
                "the renewal margin must be at least 1s and less than the lease duration".into(),
            );
        }
        if self.identity.is_empty() || self.lease_name.is_empty() || self.namespace.is_empty() {
            return Err("leader election needs an identity, a lease name and a namespace".into());
        }
        Ok(())
    }

    /// How long before the lease could expire the leader stops writing: half the renewal
    /// margin, so a renewal on time always lands before the fence closes.
    pub fn fence_margin(&self) -> Duration {
        self.renew_before / 2
    }
}

/// The replica that holds the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub identity: String,
    /// Its address, once it has published one.
    pub address: Option<String>,
}

/// What this replica knows about the election.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leadership {
    /// This replica leads and may write.
    pub leading: bool,
    /// The holder of the lease, if any.
    pub leader: Option<Leader>,
}

/// Errors starting the election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("leader election: {0}")]
    Config(String),
}

/// A running election.
pub struct Election {
    state: watch::Receiver<Leadership>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What the Lease said when last seen.
#[derive(Debug, Default)]
struct Seen {
    holder: Option<String>,
    /// When the holder's lease ends, by this process's clock (renewTime + duration).
    expires: Option<Instant>,
    annotations: BTreeMap<String, String>,
}

impl Election {
    /// Joins the election as `config.identity`, advertising `address`.
    pub async fn start(
        client: Client,
        config: LeaderConfig,
        address: String,
    ) -> Result<Election, LeaderError> {
        config.validate().map_err(LeaderError::Config)?;
        let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(config.lease_duration.as_secs())
            .with_grace(config.renew_before.as_secs())
            .build()
            .await?;
        let (claimed, manager_task) = manager.watch().await;
        let (state_tx, state) = watch::channel(Leadership::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            client,
            config,
            address,
            claimed,
            manager_task,
            state_tx,
            stop.clone(),
        ));
        Ok(Election { state, stop, task })
    }

    /// Follows what this replica knows about the election.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.state.clone()
    }

    /// Leaves the election, releasing the lease if this replica holds it, so another takes
    /// over at once rather than after the lease expires.
    pub async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            tracing::warn!("leader election did not stop in time");
        }
    }
}

/// Publishes this replica's address on the Lease it just took.
async fn advertise(api: &Api<Lease>, config: &LeaderConfig, address: &str) {
    let patch = json!({"metadata": {"annotations": {
        ADDRESS_ANNOTATION: address,
        IDENTITY_ANNOTATION: config.identity,
    }}});
    if let Err(error) = api
        .patch(
            &config.lease_name,
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        tracing::warn!(%error, "could not publish this replica's address on the lease");
    }
}

fn seen(lease: &Lease) -> Seen {
    let spec = lease.spec.clone().unwrap_or_default();
    let expires = match (spec.renew_time, spec.lease_duration_seconds) {
        (Some(renew), Some(seconds)) => {
            let renew: std::time::SystemTime = renew.0.into();
            let renew = chrono::DateTime::<Utc>::from(renew);
            let left = renew + chrono::Duration::seconds(i64::from(seconds)) - Utc::now();
            Some(match left.to_std() {
                Ok(left) => Instant::now() + left,
                Err(_) => Instant::now(),
            })
        }
        _ => None,
    };
    Seen {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        expires,
        annotations: lease.annotations().clone(),
    }
}

/// The election loop: follows the lease manager's verdict and the Lease itself, and publishes
/// the leadership with its fence.
async fn run(
    client: Client,
    config: LeaderConfig,
    address: String,
    mut claimed: watch::Receiver<bool>,
    manager_task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
    state: watch::Sender<Leadership>,
    stop: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut leases = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut lease = Seen::default();
    let mut holds = *claimed.borrow();
    let margin = config.fence_margin();
    loop {
        let fence = lease
            .expires
            .filter(|_| lease.holder.as_deref() == Some(config.identity.as_str()))
            .and_then(|e| e.checked_sub(margin));
        let leading = holds && fence.is_some_and(|f| Instant::now() < f);
        let leader = lease.holder.clone().map(|identity| Leader {
            address: (lease.annotations.get(IDENTITY_ANNOTATION) == Some(&identity))
                .then(|| lease.annotations.get(ADDRESS_ANNOTATION).cloned())
                .flatten(),
            identity,
        });
        let next = Leadership { leading, leader };
        state.send_if_modified(|current| {
            if *current == next {
                return false;
            }
            tracing::info!(leading = next.leading, leader = ?next.leader, "leadership changed");
            *current = next.clone();
            true
        });
        let wake = fence
            .filter(|_| leading)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = claimed.changed() => {
                if changed.is_err() {
                    tracing::error!("the lease manager stopped; this replica no longer takes part in the election");
                    state.send_modify(|s| s.leading = false);
                    // Without a manager nothing renews: wait for the end.
                    stop.cancelled().await;
                    break;
                }
                holds = *claimed.borrow();
                if holds {
                    advertise(&api, &config, &address).await;
                }
            }
            event = leases.next() => match event {
                Some(Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l))) if l.name_any() == config.lease_name => {
                    lease = seen(&l);
                }
                Some(Ok(watcher::Event::Delete(l))) if l.name_any() == config.lease_name => {
                    lease = Seen::default();
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, "watching the lease failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None => break,
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    state.send_modify(|s| s.leading = false);
    // Dropping the receiver makes the manager release the lease if it holds it.
    drop(claimed);
    match tokio::time::timeout(Duration::from_secs(5), manager_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("left the leader election"),
        Ok(Ok(Err(error))) => tracing::warn!(%error, "releasing the lease failed"),
        Ok(Err(error)) => tracing::warn!(%error, "the lease manager task failed"),
        Err(_) => tracing::warn!("releasing the lease timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaderConfig {
        LeaderConfig {
            namespace: "steerer-system".into(),
            lease_name: "steerer".into(),
            identity: "steerer-0".into(),
            advertise_address: None,
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_before: DEFAULT_RENEW_BEFORE,
        }
    }

    #[test]
    fn the_fence_closes_after_a_renewal_on_time_would_have_landed() {
        let c = config();
        assert!(c.validate().is_ok());
        // Renewal 5 s before expiry; writes stop 2.5 s before expiry.
        assert_eq!(c.fence_margin(), Duration::from_millis(2500));
        assert!(c.fence_margin() < c.renew_before);
    }

    #[test]
    fn bad_durations_are_refused() {
        for (duration, before) in [(1, 0), (15, 15), (15, 0), (15, 20)] {
            let c = LeaderConfig {
                lease_duration: Duration::from_secs(duration),
                renew_before: Duration::from_secs(before),
                ..config()
            };
            assert!(c.validate().is_err(), "{duration} {before}");
        }
        let fractional = LeaderConfig {
            lease_duration: Duration::from_millis(2500),
            ..config()
        };
        assert!(fractional.validate().is_err());
    }
}
