//! The route of a rollout: the object that splits its traffic between GA and canary, named by
//! kind and name: an Istio VirtualService, or a Gateway API HTTPRoute or GRPCRoute; a router
//! per kind moves its weights.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A kind of route steerer can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouteKind {
    /// An Istio `networking.istio.io` VirtualService.
    VirtualService,
    /// A Gateway API `gateway.networking.k8s.io/v1` HTTPRoute.
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    /// A Gateway API `gateway.networking.k8s.io/v1` GRPCRoute.
    #[serde(rename = "GRPCRoute")]
    GrpcRoute,
}

impl RouteKind {
    /// Every supported kind.
    pub const ALL: [RouteKind; 3] = [
        RouteKind::VirtualService,
        RouteKind::HttpRoute,
        RouteKind::GrpcRoute,
    ];

    /// The Kubernetes kind, as people and the API say it: `VirtualService`.
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::VirtualService => "VirtualService",
            RouteKind::HttpRoute => "HTTPRoute",
            RouteKind::GrpcRoute => "GRPCRoute",
        }
    }

    /// The API group and plural resource name: `("gateway.networking.k8s.io", "httproutes")`.
    pub fn resource(self) -> (&'static str, &'static str) {
        match self {
            RouteKind::VirtualService => ("networking.istio.io", "virtualservices"),
            RouteKind::HttpRoute => ("gateway.networking.k8s.io", "httproutes"),
            RouteKind::GrpcRoute => ("gateway.networking.k8s.io", "grpcroutes"),
        }
    }

    /// The name of the CRD that defines the kind: `httproutes.gateway.networking.k8s.io`.
    pub fn crd(self) -> String {
        let (group, plural) = self.resource();
        format!("{plural}.{group}")
    }

    /// The kind named `name`, in any letter case (`VirtualService`, `virtualservice`).
    pub fn parse(name: &str) -> Option<RouteKind> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }

    /// The supported kinds, as a list for messages: `VirtualService`.
    pub fn supported() -> String {
        Self::ALL.map(RouteKind::name).join(", ")
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The route of a rollout. Stored (flattened into the rollout's record) as `route` and, for
/// a VirtualService, also as the `virtual_service` name records had before routes had
/// kinds: older records load, and older servers read new ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Stored", into = "Stored")]
pub struct RouteRef {
    pub kind: RouteKind,
    pub name: String,
}

impl RouteRef {
    /// The VirtualService named `name`.
    pub fn virtual_service(name: impl Into<String>) -> Self {
        Self {
            kind: RouteKind::VirtualService,
            name: name.into(),
        }
    }

    /// "VirtualService NAMESPACE/NAME", as messages say it.
    pub fn in_namespace(&self, namespace: &str) -> String {
        format!("{} {namespace}/{}", self.kind, self.name)
    }

    /// `virtualservice/NAME`, as kubectl names an object.
    pub fn slashed(&self) -> String {
        format!("{}/{}", self.kind.name().to_ascii_lowercase(), self.name)
    }
}

/// "VirtualService NAME", as messages say it.
impl fmt::Display for RouteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// A route as records store it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    route: Option<Plain>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    virtual_service: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plain {
    kind: RouteKind,
    name: String,
}

impl TryFrom<Stored> for RouteRef {
    type Error = String;

    fn try_from(stored: Stored) -> Result<Self, Self::Error> {
        match (stored.route, stored.virtual_service) {
            (Some(Plain { kind, name }), _) => Ok(RouteRef { kind, name }),
            (None, Some(name)) => Ok(RouteRef::virtual_service(name)),
            (None, None) => Err("a rollout record without a route".to_owned()),
        }
    }
}

impl From<RouteRef> for Stored {
    fn from(route: RouteRef) -> Self {
        let virtual_service = (route.kind == RouteKind::VirtualService).then(|| route.name.clone());
        Stored {
            route: Some(Plain {
                kind: route.kind,
                name: route.name,
            }),
            virtual_service,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_as_kubernetes_names_them_in_any_case() {
        assert_eq!(
            RouteKind::parse("virtualservice"),
            Some(RouteKind::VirtualService)
        );
        assert_eq!(
            RouteKind::parse("VirtualService"),
            Some(RouteKind::VirtualService)
        );
        assert_eq!(RouteKind::parse("httproute"), Some(RouteKind::HttpRoute));
        assert_eq!(RouteKind::parse("GRPCRoute"), Some(RouteKind::GrpcRoute));
        assert_eq!(RouteKind::parse("Ingress"), None);
        assert_eq!(
            RouteKind::supported(),
            "VirtualService, HTTPRoute, GRPCRoute"
        );
        assert_eq!(
            RouteKind::GrpcRoute.crd(),
            "grpcroutes.gateway.networking.k8s.io"
        );
        assert_eq!(
            serde_json::to_value(RouteKind::HttpRoute).unwrap(),
            "HTTPRoute"
        );
        let route = RouteRef::virtual_service("checkout");
        assert_eq!(route.to_string(), "VirtualService checkout");
        assert_eq!(route.slashed(), "virtualservice/checkout");
    }

    #[test]
    fn a_rollout_stored_before_routes_had_kinds_loads_and_new_records_keep_its_field() {
        let rollout = crate::domain::Rollout::test();
        let mut stored = serde_json::to_value(&rollout).unwrap();
        assert_eq!(stored["virtual_service"], "podinfo");
        assert_eq!(
            stored["route"],
            serde_json::json!({"kind": "VirtualService", "name": "podinfo"})
        );
        let state = stored.as_object_mut().unwrap();
        state.remove("route");
        let old: crate::domain::Rollout = serde_json::from_value(stored).unwrap();
        assert_eq!(old.route, RouteRef::virtual_service("podinfo"));
        assert_eq!(old, rollout);
    }

    #[test]
    fn a_record_without_a_route_does_not_load() {
        let mut stored = serde_json::to_value(crate::domain::Rollout::test()).unwrap();
        let state = stored.as_object_mut().unwrap();
        state.remove("route");
        state.remove("virtual_service");
        let loaded = serde_json::from_value::<crate::domain::Rollout>(stored);
        assert!(loaded.is_err(), "{loaded:?}");
    }
}
