//! What `GetServerInfo` answers: the build (version and commit), the leader this replica
//! knows of, the route kinds and observers it can drive, and how callers authenticate.

use steerer::v1 as pb;

use crate::leader::Leader;

/// The release of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit of this build (short hash), `unknown` when built outside a checkout.
pub const COMMIT: &str = env!("STEERER_COMMIT");

/// The parts of the answer fixed at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Route kinds the cluster serves and the server drives.
    pub route_kinds: Vec<String>,
    /// Observers a rollout may name.
    pub observers: Vec<String>,
    /// `none`, `tokens` or `kubernetes`.
    pub auth: String,
}

/// Who leads, as a replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leading {
    /// No leader election: this server executes every rollout.
    Alone,
    /// The Lease's holder, if any replica holds it.
    Elected(Option<Leader>),
}

impl Leading {
    /// The `leader` field: `this server`, `IDENTITY at ADDRESS` (the address once the leader
    /// published it), or empty while no replica leads.
    pub fn describe(&self) -> String {
        match self {
            Leading::Alone => "this server".to_owned(),
            Leading::Elected(None) => String::new(),
            Leading::Elected(Some(leader)) => match &leader.address {
                Some(address) => format!("{} at {address}", leader.identity),
                None => leader.identity.clone(),
            },
        }
    }
}

/// The answer of this server.
pub fn server_info(facts: &Facts, leading: &Leading) -> pb::ServerInfo {
    pb::ServerInfo {
        version: VERSION.to_owned(),
        commit: COMMIT.to_owned(),
        leader: leading.describe(),
        route_kinds: facts.route_kinds.clone(),
        observers: facts.observers.clone(),
        auth: facts.auth.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_is_named_by_identity_and_address_as_far_as_the_lease_says() {
        assert_eq!(Leading::Alone.describe(), "this server");
        assert_eq!(Leading::Elected(None).describe(), "");
        let mut leader = Leader {
            identity: "steerer-0".into(),
            address: None,
        };
        assert_eq!(
            Leading::Elected(Some(leader.clone())).describe(),
            "steerer-0"
        );
        leader.address = Some("10.0.0.7:50051".into());
        assert_eq!(
            Leading::Elected(Some(leader)).describe(),
            "steerer-0 at 10.0.0.7:50051"
        );
    }

    #[test]
    fn the_answer_carries_the_build_and_the_facts() {
        let facts = Facts {
            route_kinds: vec!["VirtualService".into()],
            observers: vec!["istio".into(), "linkerd".into()],
            auth: "tokens".into(),
        };
        let info = server_info(&facts, &Leading::Alone);
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(!info.commit.is_empty());
        assert_eq!(info.route_kinds, ["VirtualService"]);
        assert_eq!(info.observers, ["istio", "linkerd"]);
        assert_eq!(info.auth, "tokens");
        assert_eq!(info.leader, "this server");
    }
}
