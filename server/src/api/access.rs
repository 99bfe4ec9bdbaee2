//! Who is calling and what they may do. The authentication layer (`auth`) establishes the
//! [`Caller`] and hands each call an [`Access`]; a handler must obtain a decision from it (for
//! its verb and the namespace it acts in) before acting, and a call whose handler answered
//! without one is refused by the layer: authorization is denied by default.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use tonic::{Request, Status};

/// What a call does to rollouts: the verb checked on `steerer.dev/rollouts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Start,
    Get,
    List,
    Watch,
    Abort,
    Pause,
    Resume,
    Promote,
}

impl Verb {
    /// The verb of a `steerer.v1.RolloutService` method; `None` for a method nobody
    /// classified, which is denied to everyone.
    pub fn of_method(method: &str) -> Option<Verb> {
        Some(match method {
            "StartRollout" => Verb::Start,
            "GetRollout" => Verb::Get,
            "ListRollouts" => Verb::List,
            "WatchRollout" => Verb::Watch,
            "AbortRollout" => Verb::Abort,
            "PauseRollout" => Verb::Pause,
            "ResumeRollout" => Verb::Resume,
            "PromoteRollout" => Verb::Promote,
            _ => return None,
        })
    }

    /// The verb as Kubernetes RBAC names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Abort => "abort",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Promote => "promote",
        }
    }

    /// Whether the call changes a rollout.
    pub fn is_mutating(self) -> bool {
        !matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// What a method of the service needs before it acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A verb on `steerer.dev/rollouts`, which the handler must have decided.
    Verb(Verb),
    /// An authenticated caller and nothing more: the answer says nothing about any rollout
    /// (`GetServerInfo`).
    Caller,
}

impl Need {
    /// What a `steerer.v1.RolloutService` method needs; `None` for a method nobody
    /// classified, which is denied to everyone.
    pub fn of_method(method: &str) -> Option<Need> {
        match method {
            "GetServerInfo" => Some(Need::Caller),
            _ => Verb::of_method(method).map(Need::Verb),
        }
    }

    /// Whether the call changes a rollout.
    pub fn is_mutating(self) -> bool {
        matches!(self, Need::Verb(verb) if verb.is_mutating())
    }

    /// The RBAC verb, or `authenticated` for a method that needs none.
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Verb(verb) => verb.as_str(),
            Need::Caller => "authenticated",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The user name (`system:serviceaccount:NS:NAME`, a certificate's CN, `token:…` for a
    /// token-file token, `anonymous` without authentication).
    pub user: String,
    pub groups: Vec<String>,
}

/// The user name of every caller of a server without authentication.
pub const ANONYMOUS: &str = "anonymous";

impl Caller {
    /// The caller of a server without authentication.
    pub fn anonymous() -> Self {
        Caller {
            user: ANONYMOUS.into(),
            groups: Vec::new(),
        }
    }
}

/// Decides whether a caller may use a verb in a namespace (`""` = every namespace).
/// `Err` when no decision can be had (the API server does not answer): never a pass.
pub trait Authorizer: Send + Sync {
    fn allows<'a>(
        &'a self,
        caller: &'a Caller,
        verb: Verb,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<bool, Status>>;
}

/// Allows everything the authentication layer let through (token files decide by the token's
/// kind in the layer; without authentication everything is open).
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn allows<'a>(
        &'a self,
        _caller: &'a Caller,
        _verb: Verb,
        _namespace: &'a str,
    ) -> BoxFuture<'a, Result<bool, Status>> {
        Box::pin(async { Ok(true) })
    }
}

/// One call's caller and the means to authorize it.
#[derive(Clone)]
pub struct Access {
    caller: Arc<Caller>,
    authorizer: Arc<dyn Authorizer>,
    decided: Arc<AtomicBool>,
}

impl Access {
    pub fn new(caller: Caller, authorizer: Arc<dyn Authorizer>) -> Self {
        Self {
            caller: Arc::new(caller),
            authorizer,
            decided: Arc::default(),
        }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Whether the caller may use `verb` in `namespace` (`""` = every namespace). Counts as the
    /// call's authorization decision.
    pub async fn allows(&self, verb: Verb, namespace: &str) -> Result<bool, Status> {
        let allowed = self
            .authorizer
            .allows(&self.caller, verb, namespace)
            .await?;
        self.decided.store(true, Ordering::Release);
        Ok(allowed)
    }

    /// Refuses the call with PERMISSION_DENIED unless the caller may use `verb` in `namespace`.
    pub async fn require(&self, verb: Verb, namespace: &str) -> Result<(), Status> {
        if self.allows(verb, namespace).await? {
            return Ok(());
        }
        let place = if namespace.is_empty() {
            "in every namespace".to_owned()
        } else {
            format!("in namespace {namespace}")
        };
        Err(Status::permission_denied(format!(
            "{} may not {} rollouts.steerer.dev {place}",
            self.caller.user,
            verb.as_str()
        )))
    }

    /// Decides a call that needs only an authenticated caller (see [`Need::Caller`]): the
    /// layer authenticated it before the handler ran.
    pub fn caller_suffices(&self) {
        self.decided.store(true, Ordering::Release);
    }

    /// Whether a decision was obtained.
    pub(crate) fn decided(&self) -> bool {
        self.decided.load(Ordering::Acquire)
    }
}

/// The call's [`Access`], which the authentication layer put there; a call without one (a
/// service not behind the layer) is refused.
pub fn of<T>(request: &Request<T>) -> Result<Access, Status> {
    request
        .extensions()
        .get::<Access>()
        .cloned()
        .ok_or_else(|| Status::permission_denied("this call was not authenticated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Only(&'static str, Verb);

    impl Authorizer for Only {
        fn allows<'a>(
            &'a self,
            _caller: &'a Caller,
            verb: Verb,
            namespace: &'a str,
        ) -> BoxFuture<'a, Result<bool, Status>> {
            let ok = namespace == self.0 && verb == self.1;
            Box::pin(async move { Ok(ok) })
        }
    }

    #[test]
    fn every_method_has_its_verb_and_others_have_none() {
        for (method, verb) in [
            ("StartRollout", "start"),
            ("GetRollout", "get"),
            ("ListRollouts", "list"),
            ("WatchRollout", "watch"),
            ("AbortRollout", "abort"),
            ("PauseRollout", "pause"),
            ("ResumeRollout", "resume"),
            ("PromoteRollout", "promote"),
        ] {
            assert_eq!(Verb::of_method(method).unwrap().as_str(), verb);
        }
        assert!(Verb::of_method("DeleteEverything").is_none());
        assert!(Verb::of_method("GetServerInfo").is_none());
    }

    #[test]
    fn server_info_needs_only_a_caller_and_every_rollout_method_keeps_its_verb() {
        assert_eq!(Need::of_method("GetServerInfo"), Some(Need::Caller));
        assert!(!Need::Caller.is_mutating());
        assert_eq!(
            Need::of_method("AbortRollout"),
            Some(Need::Verb(Verb::Abort))
        );
        assert!(Need::of_method("AbortRollout").unwrap().is_mutating());
        assert!(Need::of_method("DeleteEverything").is_none());
    }

    #[test]
    fn a_call_needing_only_a_caller_counts_as_decided_once_the_handler_says_so() {
        let access = Access::new(Caller::anonymous(), Arc::new(AllowAll));
        assert!(!access.decided());
        access.caller_suffices();
        assert!(access.decided());
    }

    #[tokio::test]
    async fn a_refusal_names_the_caller_the_verb_and_the_namespace_and_counts_as_decided() {
        let access = Access::new(
            Caller {
                user: "system:serviceaccount:ci:deployer".into(),
                groups: vec![],
            },
            Arc::new(Only("payments", Verb::Start)),
        );
        assert!(!access.decided());
        assert!(access.require(Verb::Start, "payments").await.is_ok());
        let refused = access.require(Verb::Abort, "checkout").await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            refused.message(),
            "system:serviceaccount:ci:deployer may not abort rollouts.steerer.dev in namespace checkout"
        );
        assert!(access.decided());
    }
}
