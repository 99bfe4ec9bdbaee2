//! The Istio router: VirtualServices, whose `http[]` routes split traffic by the weights of
//! their destinations, driven by a [`PatchRouter`] over the rules in [`split`].

use std::sync::Arc;

use serde_json::Value;

pub mod split;

use super::patched::{PatchRouter, Rules, Split};
use super::{KindRouter, RequestMatch, RouteKind, RouterContext, RouterError};

/// The rules of VirtualServices.
pub struct VirtualServices;

/// The one instance the router holds.
pub static VIRTUAL_SERVICES: VirtualServices = VirtualServices;

impl Rules for VirtualServices {
    fn find_splits(
        &self,
        name: &str,
        spec: &Value,
        namespace: &str,
        ga: &str,
        canary: &str,
    ) -> Result<Vec<Split>, RouterError> {
        split::find_splits(name, spec, namespace, ga, canary)
    }

    fn sends_to_both(&self, spec: &Value, namespace: &str, ga: &str, canary: &str) -> bool {
        split::routes_to_both(spec, namespace, ga, canary)
    }

    fn fingerprint(&self, spec: &Value, splits: &[Split]) -> String {
        split::route_fingerprint(spec, splits)
    }

    fn weight_patch(
        &self,
        splits: &[Split],
        spec: &Value,
        resource_version: Option<&str>,
        canary_weight: u32,
    ) -> Option<Value> {
        split::weight_patch(splits, spec, resource_version, canary_weight)
    }

    fn rules_key(&self) -> &'static str {
        "http"
    }

    fn ab_rule(&self, spec: &Value, split: &Split, matches: &[RequestMatch], name: &str) -> Value {
        split::ab_rule(spec, split, matches, name)
    }
}

/// The factory's start of the VirtualService router. Istio is the default mesh: the server
/// needs its CRD, at the configured version of `networking.istio.io`.
pub fn start(context: &RouterContext<'_>) -> Arc<dyn KindRouter> {
    Arc::new(PatchRouter::start(
        RouteKind::VirtualService,
        &VIRTUAL_SERVICES,
        context.istio_api_version,
        context,
        true,
    ))
}
