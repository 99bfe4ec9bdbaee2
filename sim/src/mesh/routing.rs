//! The routing table the mesh computes from VirtualServices, Services and ReplicaSets on every
//! change, and the deterministic split of synthetic requests over it. Pure: no clock, no
//! store, so routing is tested without time.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::labels;
use super::traffic::Profile;

/// Every Service's `POST /sim/traffic` rules, by (namespace, name).
pub type TrafficProfiles = std::collections::BTreeMap<(String, String), Vec<Profile>>;

/// Pod-template annotation: fraction of requests a revision answers with a 5xx.
pub const ERROR_RATE_ANNOTATION: &str = "sim.steerer.dev/error-rate";
/// Pod-template annotation: mean latency of a revision in milliseconds.
pub const LATENCY_ANNOTATION: &str = "sim.steerer.dev/latency-ms";
/// Pod-template annotation: standard deviation of a revision's (log-normal) latency in
/// milliseconds, around its mean. Without it the spread is a fixed share of the mean.
pub const LATENCY_STDDEV_ANNOTATION: &str = "sim.steerer.dev/latency-stddev-ms";
/// VirtualService annotation: fraction of synthetic requests that carry the headers (and
/// query parameters) the VirtualService's match conditions ask for.
pub const HEADER_SHARE_ANNOTATION: &str = "sim.steerer.dev/header-share";
/// Mean latency when a revision does not set one.
pub const DEFAULT_LATENCY_MS: f64 = 20.0;

/// Every VirtualService host the mesh sends traffic to, with its routes resolved down to
/// ready pods.
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// One entry per (VirtualService, host).
    pub hosts: Vec<HostEntry>,
}

/// One host of one VirtualService.
#[derive(Debug, Clone)]
pub struct HostEntry {
    /// `namespace/virtualservice/host`: identifies the entry across rebuilds.
    pub key: String,
    /// Fraction of requests carrying the headers header matches ask for.
    pub header_share: f64,
    /// The route a request without headers takes (`None`: no route matches).
    pub plain_route: Option<usize>,
    /// The route a request carrying headers takes.
    pub tagged_route: Option<usize>,
    /// The host's Service's `POST /sim/traffic` rules, each with the route its requests take;
    /// when there are any, they replace the tagged share.
    pub profiles: Vec<ProfileRoute>,
    /// `spec.http[]` in order.
    pub routes: Vec<Route>,
}

/// A share of a host's requests carrying a profile's headers and cookies, and the route
/// they take.
#[derive(Debug, Clone)]
pub struct ProfileRoute {
    /// Fraction of the host's requests.
    pub share: f64,
    /// The first rule that matches them (`None`: no route matches).
    pub route: Option<usize>,
}

/// One `spec.http[]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// `route[]`: weighted destinations.
    pub destinations: Vec<Destination>,
    /// Their weights, in order.
    pub weights: Vec<u32>,
    /// `mirror` with `mirrorPercentage`: a copy of that share of the route's requests goes
    /// there too, and its answer is dropped.
    pub mirror: Option<Mirror>,
}

/// Where a route mirrors its requests.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub destination: Destination,
    /// Percent of the route's requests copied, 0..=100.
    pub percent: f64,
}

/// One weighted destination of a route.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Weight (a single destination without one gets 100).
    pub weight: u32,
    /// Labels of a source-side series for this destination when no workload answers
    /// (`destination_workload="unknown"`).
    pub unknown_labels: Arc<str>,
    /// Metrics id of `unknown_labels` (see [`Table::assign_series`]).
    pub unknown_series: u32,
    /// Where requests end up.
    pub target: Target,
    /// Ready pods of each endpoint, in order: how traffic is shared among them.
    pub ready_weights: Vec<u32>,
}

/// What a destination host resolves to.
#[derive(Debug, Clone)]
pub enum Target {
    /// No Service of that name: Envoy has no cluster for it (503, flag `NC`).
    NoCluster,
    /// The ready pods behind the Service, per Deployment revision; empty means 503 `UH`.
    Endpoints(Vec<Endpoint>),
}

/// The ready pods of one revision of one Deployment behind a Service.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Namespace of the Deployment.
    pub namespace: String,
    /// The Deployment (`destination_workload`).
    pub workload: String,
    /// The revision's pod-template hash.
    pub revision: String,
    /// Ready pods: traffic is shared in proportion.
    pub ready: u32,
    /// Fraction of 5xx answers, from the revision's template annotation.
    pub error_rate: f64,
    /// Mean latency in milliseconds.
    pub latency_ms: f64,
    /// Standard deviation of the latency in milliseconds; `None`: the default shape.
    pub latency_stddev_ms: Option<f64>,
    /// Rendered Istio labels of the series this endpoint reports, without reporter,
    /// response code and flags.
    pub labels: Arc<str>,
    /// Metrics id of `labels` (see [`Table::assign_series`]).
    pub series: u32,
    /// `namespace/workload/revision`: the key of this endpoint's error accumulator.
    pub key: String,
}

impl Table {
    /// Gives every label set of the table its metrics id, so recording a request hashes a
    /// number rather than a label string.
    pub fn assign_series(&mut self, intern: &mut dyn FnMut(&Arc<str>) -> u32) {
        for dest in self
            .hosts
            .iter_mut()
            .flat_map(|h| &mut h.routes)
            .flat_map(|r| {
                r.destinations
                    .iter_mut()
                    .chain(r.mirror.as_mut().map(|m| &mut m.destination))
            })
        {
            dest.unknown_series = intern(&dest.unknown_labels);
            if let Target::Endpoints(endpoints) = &mut dest.target {
                for ep in endpoints {
                    ep.series = intern(&ep.labels);
                }
            }
        }
    }
}

/// A ReplicaSet as the mesh sees it.
struct Revision<'a> {
    deployment: &'a str,
    hash: &'a str,
    ready: u32,
    labels: &'a serde_json::Map<String, Value>,
    annotations: Option<&'a serde_json::Map<String, Value>>,
    service_account: &'a str,
}

/// Computes the routing table. `default_header_share` applies to VirtualServices without the
/// `sim.steerer.dev/header-share` annotation; `traffic` gives each Service's requests their
/// headers and cookies.
pub fn build(
    virtual_services: &[Arc<Value>],
    services: &[Arc<Value>],
    replicasets: &[Arc<Value>],
    default_header_share: f64,
    traffic: &TrafficProfiles,
) -> Table {
    let empty = serde_json::Map::new();
    let mut services_by_key: HashMap<(&str, &str), &Value> = HashMap::new();
    for svc in services {
        if let (Some(ns), Some(name)) = (
            str_at(svc, "/metadata/namespace"),
            str_at(svc, "/metadata/name"),
        ) {
            services_by_key.insert((ns, name), svc);
        }
    }
    let mut revisions_by_ns: HashMap<&str, Vec<Revision<'_>>> = HashMap::new();
    for rs in replicasets {
        let Some(ns) = str_at(rs, "/metadata/namespace") else {
            continue;
        };
        let Some(deployment) = rs
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter().find(|r| {
                    r.get("kind").and_then(Value::as_str) == Some("Deployment")
                        && r.get("controller").and_then(Value::as_bool) == Some(true)
                })
            })
            .and_then(|r| r.get("name"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let ready = rs
            .pointer("/status/readyReplicas")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        revisions_by_ns.entry(ns).or_default().push(Revision {
            deployment,
            hash: str_at(rs, "/metadata/labels/pod-template-hash").unwrap_or_default(),
            ready,
            labels: rs
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object)
                .unwrap_or(&empty),
            annotations: rs
                .pointer("/spec/template/metadata/annotations")
                .and_then(Value::as_object),
            service_account: str_at(rs, "/spec/template/spec/serviceAccountName")
                .unwrap_or("default"),
        });
    }

    let mut hosts = Vec::new();
    for vs in virtual_services {
        let (Some(ns), Some(name)) = (
            str_at(vs, "/metadata/namespace"),
            str_at(vs, "/metadata/name"),
        ) else {
            continue;
        };
        let header_share = vs
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(HEADER_SHARE_ANNOTATION))
            .and_then(Value::as_str)
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite())
            .unwrap_or(default_header_share)
            .clamp(0.0, 1.0);
        let http = vs
            .pointer("/spec/http")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let routes: Vec<Route> = http
            .iter()
            .map(|rule| {
                let destinations = destinations(rule, ns, &services_by_key, &revisions_by_ns);
                Route {
                    weights: destinations.iter().map(|d| d.weight).collect(),
                    destinations,
                    mirror: mirror(rule, ns, &services_by_key, &revisions_by_ns),
                }
            })
            .collect();
        let plain_route = http.iter().position(|rule| rule_matches(rule, false));
        let tagged_route = http.iter().position(|rule| rule_matches(rule, true));
        for host in vs
            .pointer("/spec/hosts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let profiles = traffic_of(host, ns, http, traffic)
                .into_iter()
                .flatten()
                .map(|profile| ProfileRoute {
                    share: profile.share,
                    route: http
                        .iter()
                        .position(|rule| rule_takes(rule, &Request::Carrying(profile))),
                })
                .collect();
            hosts.push(HostEntry {
                key: format!("{ns}/{name}/{host}"),
                header_share,
                plain_route,
                tagged_route,
                profiles,
                routes: routes.clone(),
            });
        }
    }
    Table { hosts }
}

/// The `POST /sim/traffic` rules of a host's requests: those of the Service the host names,
/// else (a Gateway API hostname such as `podinfo.example.com` names none) those of the first
/// Service the routes send to that has any.
fn traffic_of<'a>(
    host: &str,
    ns: &str,
    http: &[Value],
    traffic: &'a TrafficProfiles,
) -> Option<&'a Vec<Profile>> {
    let (name, namespace) = resolve_host(host, ns);
    if let Some(rules) = traffic.get(&(namespace, name)) {
        return Some(rules);
    }
    http.iter()
        .filter_map(|rule| rule.get("route").and_then(Value::as_array))
        .flatten()
        .filter_map(|dest| dest.pointer("/destination/host").and_then(Value::as_str))
        .find_map(|dest| {
            let (name, namespace) = resolve_host(dest, ns);
            traffic.get(&(namespace, name))
        })
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn destinations(
    rule: &Value,
    vs_ns: &str,
    services: &HashMap<(&str, &str), &Value>,
    revisions: &HashMap<&str, Vec<Revision<'_>>>,
) -> Vec<Destination> {
    let route = rule
        .get("route")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let single = route.len() == 1;
    route
        .iter()
        .filter_map(|dest| {
            let host = dest.pointer("/destination/host").and_then(Value::as_str)?;
            let weight = dest
                .get("weight")
                .and_then(Value::as_u64)
                .and_then(|w| u32::try_from(w).ok())
                .unwrap_or(if single { 100 } else { 0 });
            Some(destination(host, weight, vs_ns, services, revisions))
        })
        .collect()
}

/// A rule's `mirror` (Istio's `mirrorPercentage` defaults to all requests).
fn mirror(
    rule: &Value,
    vs_ns: &str,
    services: &HashMap<(&str, &str), &Value>,
    revisions: &HashMap<&str, Vec<Revision<'_>>>,
) -> Option<Mirror> {
    let host = rule.pointer("/mirror/host").and_then(Value::as_str)?;
    let percent = rule
        .pointer("/mirrorPercentage/value")
        .and_then(Value::as_f64)
        .filter(|p| p.is_finite())
        .unwrap_or(100.0)
        .clamp(0.0, 100.0);
    Some(Mirror {
        destination: destination(host, 100, vs_ns, services, revisions),
        percent,
    })
}

/// One destination host with its weight, resolved to the ready pods behind its Service.
fn destination(
    host: &str,
    weight: u32,
    vs_ns: &str,
    services: &HashMap<(&str, &str), &Value>,
    revisions: &HashMap<&str, Vec<Revision<'_>>>,
) -> Destination {
    let (svc_name, svc_ns) = resolve_host(host, vs_ns);
    let service_host = format!("{svc_name}.{svc_ns}.svc.cluster.local");
    let service = services.get(&(svc_ns.as_str(), svc_name.as_str()));
    let target = match service {
        None => Target::NoCluster,
        Some(svc) => {
            let selector = svc.pointer("/spec/selector").and_then(Value::as_object);
            let endpoints = match selector {
                Some(selector) if !selector.is_empty() => revisions
                    .get(svc_ns.as_str())
                    .into_iter()
                    .flatten()
                    .filter(|rev| rev.ready > 0 && selects(selector, rev.labels))
                    .map(|rev| endpoint(rev, &svc_ns, &service_host, &svc_name))
                    .collect(),
                _ => Vec::new(),
            };
            Target::Endpoints(endpoints)
        }
    };
    let unknown_labels = labels::destination_labels(&labels::DestinationLabels {
        workload: "unknown",
        namespace: "unknown",
        principal: "unknown",
        app: "unknown",
        version: "unknown",
        canonical_service: "unknown",
        canonical_revision: "unknown",
        service_host: &service_host,
        service_name: if matches!(target, Target::NoCluster) {
            "unknown"
        } else {
            &svc_name
        },
        service_namespace: if matches!(target, Target::NoCluster) {
            "unknown"
        } else {
            &svc_ns
        },
    });
    let ready_weights = match &target {
        Target::Endpoints(endpoints) => endpoints.iter().map(|e| e.ready).collect(),
        Target::NoCluster => Vec::new(),
    };
    Destination {
        weight,
        unknown_labels: unknown_labels.into(),
        unknown_series: 0,
        target,
        ready_weights,
    }
}

fn selects(
    selector: &serde_json::Map<String, Value>,
    labels: &serde_json::Map<String, Value>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn endpoint(rev: &Revision<'_>, ns: &str, service_host: &str, service_name: &str) -> Endpoint {
    let annotation = |key: &str| {
        rev.annotations
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite())
    };
    let label = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| rev.labels.get(*k).and_then(Value::as_str))
    };
    let app = label(&["app", "app.kubernetes.io/name"]).unwrap_or("unknown");
    let version = label(&["version", "app.kubernetes.io/version"]).unwrap_or("unknown");
    let canonical_service = label(&[
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or(rev.deployment);
    let canonical_revision = label(&[
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or("latest");
    let principal = format!("spiffe://cluster.local/ns/{ns}/sa/{}", rev.service_account);
    let labels = labels::destination_labels(&labels::DestinationLabels {
        workload: rev.deployment,
        namespace: ns,
        principal: &principal,
        app,
        version,
        canonical_service,
        canonical_revision,
        service_host,
        service_name,
        service_namespace: ns,
    });
    Endpoint {
        namespace: ns.to_owned(),
        workload: rev.deployment.to_owned(),
        revision: rev.hash.to_owned(),
        ready: rev.ready,
        error_rate: annotation(ERROR_RATE_ANNOTATION)
            .unwrap_or(0.0)
            .clamp(0.0, 1.0),
        latency_ms: annotation(LATENCY_ANNOTATION)
            .filter(|l| *l >= 0.0)
            .unwrap_or(DEFAULT_LATENCY_MS),
        latency_stddev_ms: annotation(LATENCY_STDDEV_ANNOTATION).filter(|s| *s >= 0.0),
        labels: labels.into(),
        series: 0,
        key: format!("{ns}/{}/{}", rev.deployment, rev.hash),
    }
}

/// A destination host as Istio reads it: `svc` (the VirtualService's namespace), `svc.ns`,
/// `svc.ns.svc` or `svc.ns.svc.cluster.local`. Returns `(name, namespace)`.
pub fn resolve_host(host: &str, vs_ns: &str) -> (String, String) {
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [name] => ((*name).to_owned(), vs_ns.to_owned()),
        [name, ns] | [name, ns, "svc"] | [name, ns, "svc", "cluster", "local"] => {
            ((*name).to_owned(), (*ns).to_owned())
        }
        _ => (host.to_owned(), vs_ns.to_owned()),
    }
}

/// A synthetic request as route matches see it: every one is `GET /` from the ingress
/// gateway, with no headers, with every header the rule asks for ("tagged"), or with the
/// headers and cookies of a `POST /sim/traffic` rule.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Plain,
    Tagged,
    Carrying(&'a Profile),
}

/// Whether an `http[]` rule takes a synthetic request. Synthetic requests are `GET /` from
/// the ingress gateway; a "tagged" request also carries every header and query parameter the
/// rule asks for (and so fails `withoutHeaders`).
pub fn rule_matches(rule: &Value, tagged: bool) -> bool {
    rule_takes(
        rule,
        &if tagged {
            Request::Tagged
        } else {
            Request::Plain
        },
    )
}

/// Whether an `http[]` rule takes `request`.
pub fn rule_takes(rule: &Value, request: &Request<'_>) -> bool {
    let Some(matches) = rule.get("match").and_then(Value::as_array) else {
        return true;
    };
    matches.is_empty() || matches.iter().any(|m| request_matches(m, request))
}

fn request_matches(m: &Value, request: &Request<'_>) -> bool {
    let fields = |field: &str| {
        m.get(field)
            .and_then(Value::as_object)
            .filter(|o| !o.is_empty())
    };
    match request {
        Request::Plain => {
            if fields("headers").is_some() || fields("queryParams").is_some() {
                return false;
            }
        }
        Request::Tagged => {
            if fields("withoutHeaders").is_some() {
                return false;
            }
        }
        Request::Carrying(profile) => {
            // Profiles carry headers and cookies, never query parameters.
            if fields("queryParams").is_some() {
                return false;
            }
            let carries = |name: &str, matcher: &Value| {
                profile
                    .header(name)
                    .is_some_and(|value| string_matches(matcher, &value))
            };
            if let Some(headers) = fields("headers")
                && !headers.iter().all(|(name, matcher)| carries(name, matcher))
            {
                return false;
            }
            if let Some(without) = fields("withoutHeaders")
                && without.iter().any(|(name, matcher)| carries(name, matcher))
            {
                return false;
            }
        }
    }
    if let Some(uri) = m.get("uri")
        && !string_matches(uri, "/")
    {
        return false;
    }
    if let Some(method) = m.get("method")
        && !string_matches(method, "GET")
    {
        return false;
    }
    true
}

/// An Istio StringMatch against a value: `exact`, `prefix`, or `regex` matching the whole
/// value (RE2 syntax, as Envoy has it; a regex that does not compile matches nothing).
fn string_matches(matcher: &Value, value: &str) -> bool {
    if let Some(exact) = matcher.get("exact").and_then(Value::as_str) {
        return exact == value;
    }
    if let Some(prefix) = matcher.get("prefix").and_then(Value::as_str) {
        return value.starts_with(prefix);
    }
    if let Some(regex) = matcher.get("regex").and_then(Value::as_str) {
        return regex::Regex::new(&format!("^(?:{regex})$")).is_ok_and(|re| re.is_match(value));
    }
    true
}

/// Smooth weighted round-robin: picks in exact proportion to the weights, spread evenly, and
/// the same way every run.
#[derive(Debug, Default, Clone)]
pub struct WeightedRoundRobin {
    weights: Vec<u32>,
    current: Vec<i64>,
}

impl WeightedRoundRobin {
    /// Picks an index for `weights` (`None` when they are all zero). Starts afresh when the
    /// weights changed since the last pick.
    pub fn pick(&mut self, weights: &[u32]) -> Option<usize> {
        if self.weights != weights {
            self.weights = weights.to_vec();
            self.current = vec![0; weights.len()];
        }
        let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        for (c, w) in self.current.iter_mut().zip(weights) {
            *c += i64::from(*w);
        }
        let (best, _) = self
            .current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))?;
        self.current[best] -= total;
        Some(best)
    }
}

/// Traffic state of one host carried between ticks.
#[derive(Debug, Default, Clone)]
pub struct HostState {
    /// Fraction of a request not sent yet.
    pub pending: f64,
    tagged: f64,
    /// Fractions of a request not sent yet, per profile.
    profiles: Vec<f64>,
    /// Per route, then per destination of the route.
    routes: Vec<(WeightedRoundRobin, Vec<WeightedRoundRobin>)>,
    /// Per route: the fraction of a mirrored copy not sent yet, and how the copies share the
    /// mirror's pods.
    mirrors: Vec<(f64, WeightedRoundRobin)>,
}

/// Per-endpoint error accumulators, so a 0.2 error rate fails exactly one request in five.
#[derive(Debug, Default, Clone)]
pub struct ErrorState {
    acc: HashMap<String, (f64, u64)>,
}

/// What happened to one request.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// Metrics id of the series labels (without reporter, code, flags).
    pub series: u32,
    /// The endpoint that answered (`None`: the gateway answered by itself).
    pub endpoint: Option<&'a Endpoint>,
    /// HTTP status.
    pub code: u16,
    /// Envoy response flags (`-`, `UH`, `NC`).
    pub flags: &'static str,
    /// A mirrored copy: its destination served it, and nobody saw the answer.
    pub mirrored: bool,
}

impl HostState {
    /// Sends `count` requests through `entry`, calling `sink` for each. `error_override`
    /// replaces a Deployment's annotated error rate.
    pub fn send<'a>(
        &mut self,
        entry: &'a HostEntry,
        count: u64,
        errors: &mut ErrorState,
        error_override: &dyn Fn(&str, &str) -> Option<f64>,
        sink: &mut dyn FnMut(Outcome<'a>),
    ) {
        let mut classes = Vec::with_capacity(entry.profiles.len() + 2);
        let mut left = count;
        if entry.profiles.is_empty() {
            self.tagged += count as f64 * entry.header_share;
            let tagged = self.tagged.floor();
            self.tagged -= tagged;
            let tagged = (tagged as u64).min(left);
            left -= tagged;
            classes.push((entry.tagged_route, tagged));
        } else {
            if self.profiles.len() != entry.profiles.len() {
                self.profiles = vec![0.0; entry.profiles.len()];
            }
            for (profile, pending) in entry.profiles.iter().zip(&mut self.profiles) {
                *pending += count as f64 * profile.share;
                let n = pending.floor();
                *pending -= n;
                let n = (n as u64).min(left);
                left -= n;
                classes.push((profile.route, n));
            }
        }
        classes.push((entry.plain_route, left));
        if self.mirrors.len() < entry.routes.len() {
            self.mirrors
                .resize_with(entry.routes.len(), Default::default);
        }
        for (route, n) in classes {
            let Some(route_index) = route else {
                continue;
            };
            let Some(route) = entry.routes.get(route_index) else {
                continue;
            };
            if self.routes.len() < entry.routes.len() {
                self.routes
                    .resize_with(entry.routes.len(), Default::default);
            }
            let (route_rr, endpoint_rrs) = &mut self.routes[route_index];
            if endpoint_rrs.len() != route.destinations.len() {
                endpoint_rrs.resize_with(route.destinations.len(), Default::default);
            }
            let (mirror_pending, mirror_rr) = &mut self.mirrors[route_index];
            for _ in 0..n {
                if let Some(mirror) = &route.mirror {
                    *mirror_pending += mirror.percent / 100.0;
                    if *mirror_pending >= 1.0 - 1e-9 {
                        *mirror_pending -= 1.0;
                        // A copy nobody can serve is dropped without a trace, as Envoy does.
                        if let Target::Endpoints(endpoints) = &mirror.destination.target
                            && let Some(i) = mirror_rr.pick(&mirror.destination.ready_weights)
                        {
                            let ep = &endpoints[i];
                            let rate = error_override(&ep.namespace, &ep.workload)
                                .unwrap_or(ep.error_rate);
                            sink(Outcome {
                                series: ep.series,
                                endpoint: Some(ep),
                                code: errors.answer(ep, rate),
                                flags: "-",
                                mirrored: true,
                            });
                        }
                    }
                }
                let Some(dest_index) = route_rr.pick(&route.weights) else {
                    break;
                };
                let dest = &route.destinations[dest_index];
                let endpoints = match &dest.target {
                    Target::NoCluster => {
                        sink(Outcome {
                            series: dest.unknown_series,
                            endpoint: None,
                            code: 503,
                            flags: "NC",
                            mirrored: false,
                        });
                        continue;
                    }
                    Target::Endpoints(endpoints) => endpoints,
                };
                let Some(ep_index) = endpoint_rrs[dest_index].pick(&dest.ready_weights) else {
                    sink(Outcome {
                        series: dest.unknown_series,
                        endpoint: None,
                        code: 503,
                        flags: "UH",
                        mirrored: false,
                    });
                    continue;
                };
                let ep = &endpoints[ep_index];
                let rate = error_override(&ep.namespace, &ep.workload).unwrap_or(ep.error_rate);
                let code = errors.answer(ep, rate);
                sink(Outcome {
                    series: ep.series,
                    endpoint: Some(ep),
                    code,
                    flags: "-",
                    mirrored: false,
                });
            }
        }
    }
}

impl ErrorState {
    /// The status code of the endpoint's next answer: errors in exact proportion to `rate`,
    /// three in four of them 500 and one in four 503.
    fn answer(&mut self, ep: &Endpoint, rate: f64) -> u16 {
        if rate <= 0.0 {
            return 200;
        }
        let (acc, failures) = match self.acc.get_mut(&ep.key) {
            Some(state) => state,
            None => self.acc.entry(ep.key.clone()).or_default(),
        };
        *acc += rate.clamp(0.0, 1.0);
        if *acc >= 1.0 - 1e-9 {
            *acc -= 1.0;
            *failures += 1;
            if *failures % 4 == 0 { 503 } else { 500 }
        } else {
            200
        }
    }

    /// Forgets endpoints that are gone.
    pub fn retain(&mut self, keep: &std::collections::HashSet<String>) {
        self.acc.retain(|k, _| keep.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arc(v: Value) -> Arc<Value> {
        Arc::new(v)
    }

    fn service(name: &str) -> Arc<Value> {
        arc(json!({"metadata": {"name": name, "namespace": "test"},
                   "spec": {"selector": {"app": name}}}))
    }

    fn replicaset(deployment: &str, hash: &str, ready: u64, annotations: Value) -> Arc<Value> {
        arc(json!({
            "metadata": {"name": format!("{deployment}-{hash}"), "namespace": "test",
                         "labels": {"app": deployment, "pod-template-hash": hash},
                         "ownerReferences": [{"kind": "Deployment", "name": deployment, "controller": true}]},
            "spec": {"template": {"metadata": {"labels": {"app": deployment, "pod-template-hash": hash},
                                               "annotations": annotations}}},
            "status": {"readyReplicas": ready},
        }))
    }

    fn split_vs(primary: u64, canary: u64) -> Arc<Value> {
        arc(json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"hosts": ["podinfo"], "http": [{"route": [
                {"destination": {"host": "podinfo"}, "weight": primary},
                {"destination": {"host": "podinfo-canary.test.svc.cluster.local"}, "weight": canary},
            ]}]},
        }))
    }

    /// Sends `n` requests and counts them by (workload or "unknown", code, flags).
    fn send(
        table: &Table,
        n: u64,
        overrides: &dyn Fn(&str, &str) -> Option<f64>,
    ) -> HashMap<(String, u16, &'static str), u64> {
        let mut counts = HashMap::new();
        let mut state = HostState::default();
        let mut errors = ErrorState::default();
        state.send(&table.hosts[0], n, &mut errors, overrides, &mut |o| {
            let workload = o
                .endpoint
                .map_or("unknown".to_owned(), |e| e.workload.clone());
            *counts.entry((workload, o.code, o.flags)).or_default() += 1;
        });
        counts
    }

    fn no_override(_: &str, _: &str) -> Option<f64> {
        None
    }

    #[test]
    fn requests_split_exactly_by_route_weight() {
        let table = build(
            &[split_vs(90, 10)],
            &[service("podinfo"), service("podinfo-canary")],
            &[
                replicaset("podinfo", "a", 2, json!({})),
                replicaset("podinfo-canary", "b", 1, json!({})),
            ],
            0.1,
            &TrafficProfiles::new(),
        );
        let counts = send(&table, 1000, &no_override);
        assert_eq!(counts[&("podinfo".to_owned(), 200, "-")], 900);
        assert_eq!(counts[&("podinfo-canary".to_owned(), 200, "-")], 100);
    }

    #[test]
    fn header_match_takes_the_tagged_share_only() {
        let vs = arc(json!({
            "metadata": {"name": "podinfo", "namespace": "test",
                         "annotations": {HEADER_SHARE_ANNOTATION: "0.25"}},
            "spec": {"hosts": ["podinfo"], "http": [
                {"match": [{"headers": {"x-canary": {"exact": "insider"}}}],
                 "route": [{"destination": {"host": "podinfo-canary"}}]},
                {"route": [{"destination": {"host": "podinfo"}}]},
            ]},
        }));
        let table = build(
            &[vs],
            &[service("podinfo"), service("podinfo-canary")],
            &[
                replicaset("podinfo", "a", 2, json!({})),
                replicaset("podinfo-canary", "b", 1, json!({})),
            ],
            0.1,
            &TrafficProfiles::new(),
        );
        let counts = send(&table, 400, &no_override);
        assert_eq!(counts[&("podinfo-canary".to_owned(), 200, "-")], 100);
        assert_eq!(counts[&("podinfo".to_owned(), 200, "-")], 300);
    }

    #[test]
    fn destination_without_ready_pods_answers_503_from_the_gateway() {
        let table = build(
            &[split_vs(50, 50)],
            &[service("podinfo"), service("podinfo-canary")],
            &[
                replicaset("podinfo", "a", 2, json!({})),
                replicaset("podinfo-canary", "b", 0, json!({})),
            ],
            0.1,
            &TrafficProfiles::new(),
        );
        let counts = send(&table, 100, &no_override);
        assert_eq!(counts[&("unknown".to_owned(), 503, "UH")], 50);
        assert_eq!(counts[&("podinfo".to_owned(), 200, "-")], 50);
    }

    #[test]
    fn destination_without_a_service_answers_503_no_cluster() {
        let table = build(
            &[split_vs(0, 100)],
            &[service("podinfo")],
            &[],
            0.1,
            &TrafficProfiles::new(),
        );
        let counts = send(&table, 10, &no_override);
        assert_eq!(counts[&("unknown".to_owned(), 503, "NC")], 10);
    }

    /// The p99 of `latencies` as Prometheus's `histogram_quantile` reads it from the
    /// exported buckets: linear within the bucket the rank falls in.
    fn histogram_p99(latencies: &[f64]) -> f64 {
        let rank = 0.99 * latencies.len() as f64;
        let (mut below, mut lower) = (0.0, 0.0);
        for le in super::super::metrics::DURATION_BUCKETS {
            let count = latencies.iter().filter(|l| **l <= le).count() as f64;
            if count >= rank {
                return lower + (le - lower) * (rank - below) / (count - below);
            }
            (below, lower) = (count, le);
        }
        f64::INFINITY
    }

    #[test]
    fn the_latency_annotation_drives_the_histogram_p99() {
        for (annotated, low, high) in [("400", 500.0, 2500.0), ("20", 10.0, 100.0)] {
            let table = build(
                &[split_vs(0, 100)],
                &[service("podinfo-canary")],
                &[replicaset(
                    "podinfo-canary",
                    "b",
                    1,
                    json!({LATENCY_ANNOTATION: annotated}),
                )],
                0.1,
                &TrafficProfiles::new(),
            );
            let mut rng = rand::rng();
            let mut latencies = Vec::new();
            let mut state = HostState::default();
            let mut errors = ErrorState::default();
            state.send(&table.hosts[0], 5000, &mut errors, &no_override, &mut |o| {
                if let Some(ep) = o.endpoint {
                    latencies.push(super::super::sample_latency(
                        &mut rng,
                        ep.latency_ms,
                        ep.latency_stddev_ms,
                    ));
                }
            });
            assert_eq!(latencies.len(), 5000);
            let p99 = histogram_p99(&latencies);
            assert!(
                (low..=high).contains(&p99),
                "latency-ms {annotated}: p99 {p99}"
            );
        }
    }

    #[test]
    fn the_stddev_annotation_widens_the_spread_around_the_same_mean() {
        let sampled = |annotations: serde_json::Value| {
            let table = build(
                &[split_vs(0, 100)],
                &[service("podinfo-canary")],
                &[replicaset("podinfo-canary", "b", 1, annotations)],
                0.1,
                &TrafficProfiles::new(),
            );
            let mut rng = rand::rng();
            let mut latencies = Vec::new();
            let mut state = HostState::default();
            let mut errors = ErrorState::default();
            state.send(
                &table.hosts[0],
                20000,
                &mut errors,
                &no_override,
                &mut |o| {
                    if let Some(ep) = o.endpoint {
                        latencies.push(super::super::sample_latency(
                            &mut rng,
                            ep.latency_ms,
                            ep.latency_stddev_ms,
                        ));
                    }
                },
            );
            let n = latencies.len() as f64;
            let mean = latencies.iter().sum::<f64>() / n;
            let sd = (latencies.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n).sqrt();
            (mean, sd)
        };
        let (mean, sd) = sampled(json!({LATENCY_ANNOTATION: "50", LATENCY_STDDEV_ANNOTATION: "5"}));
        assert!(
            (mean - 50.0).abs() < 1.5 && (sd - 5.0).abs() < 1.0,
            "{mean} {sd}"
        );
        let (mean, sd) =
            sampled(json!({LATENCY_ANNOTATION: "50", LATENCY_STDDEV_ANNOTATION: "50"}));
        assert!(
            (mean - 50.0).abs() < 4.0 && (sd - 50.0).abs() < 15.0,
            "{mean} {sd}"
        );
        // Without it, today's shape: a spread of about 0.4 of the mean.
        let (mean, sd) = sampled(json!({LATENCY_ANNOTATION: "50"}));
        assert!(
            (mean - 50.0).abs() < 2.0 && (sd - 20.8).abs() < 3.0,
            "{mean} {sd}"
        );
    }

    #[test]
    fn error_rate_follows_each_revision_and_the_runtime_override() {
        // A rolling update in progress: two revisions of the canary, one ready pod each.
        let table = build(
            &[split_vs(0, 100)],
            &[service("podinfo-canary")],
            &[
                replicaset("podinfo-canary", "old", 1, json!({})),
                replicaset(
                    "podinfo-canary",
                    "new",
                    1,
                    json!({ERROR_RATE_ANNOTATION: "0.5"}),
                ),
            ],
            0.1,
            &TrafficProfiles::new(),
        );
        let counts = send(&table, 1000, &no_override);
        let errors: u64 = counts
            .iter()
            .filter(|((_, code, _), _)| *code >= 500)
            .map(|(_, n)| n)
            .sum();
        // Half the traffic reaches the new revision, which fails half of it.
        assert_eq!(errors, 250);
        assert_eq!(counts[&("podinfo-canary".to_owned(), 200, "-")], 750);

        let counts = send(&table, 100, &|_, workload| {
            (workload == "podinfo-canary").then_some(0.0)
        });
        assert_eq!(counts[&("podinfo-canary".to_owned(), 200, "-")], 100);
    }

    fn profile(share: f64, headers: &[(&str, &str)], cookies: &[(&str, &str)]) -> Profile {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Profile {
            share,
            headers: map(headers),
            cookies: map(cookies),
        }
    }

    fn workloads() -> (Vec<Arc<Value>>, Vec<Arc<Value>>) {
        (
            vec![service("podinfo"), service("podinfo-canary")],
            vec![
                replicaset("podinfo", "a", 2, json!({})),
                replicaset("podinfo-canary", "b", 1, json!({})),
            ],
        )
    }

    #[test]
    fn requests_carrying_a_rules_headers_or_cookies_take_the_routes_matching_them() {
        let vs = arc(json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"hosts": ["podinfo"], "http": [
                {"match": [{"headers": {"x-cohort": {"exact": "beta"}}},
                           {"headers": {"cookie": {"regex": "^(.*?;\\s*)?plan=gold(;.*)?$"}}}],
                 "route": [{"destination": {"host": "podinfo-canary"}}]},
                {"match": [{"headers": {"user-agent": {"prefix": "Mobile"}},
                            "withoutHeaders": {"x-cohort": {"regex": "al.*"}}}],
                 "route": [{"destination": {"host": "podinfo-canary"}}]},
                {"route": [{"destination": {"host": "podinfo"}}]},
            ]},
        }));
        let (services, replicasets) = workloads();
        let traffic: TrafficProfiles = [(
            ("test".to_owned(), "podinfo".to_owned()),
            vec![
                profile(0.3, &[("x-cohort", "beta")], &[]),
                profile(0.2, &[], &[("session", "1"), ("plan", "gold")]),
                profile(
                    0.1,
                    &[("x-cohort", "alpha"), ("user-agent", "Mobile/1")],
                    &[],
                ),
                profile(0.1, &[("user-agent", "Mobile/2")], &[]),
                profile(0.1, &[("x-cohort", "beta2")], &[("plan", "golden")]),
            ],
        )]
        .into();
        let table = build(&[vs], &services, &replicasets, 0.1, &traffic);
        let routes: Vec<_> = table.hosts[0].profiles.iter().map(|p| p.route).collect();
        assert_eq!(routes, [Some(0), Some(0), Some(2), Some(1), Some(2)]);
        let counts = send(&table, 1000, &no_override);
        // 0.3 + 0.2 + 0.1 to the canary; the rest (and none of the old tagged share) to GA.
        assert_eq!(counts[&("podinfo-canary".to_owned(), 200, "-")], 600);
        assert_eq!(counts[&("podinfo".to_owned(), 200, "-")], 400);
        // Another Service's rules change nothing here.
        let elsewhere: TrafficProfiles = [(
            ("test".to_owned(), "cart".to_owned()),
            vec![profile(1.0, &[("x-cohort", "beta")], &[])],
        )]
        .into();
        let table = build(
            &[split_vs(100, 0)],
            &services,
            &replicasets,
            0.0,
            &elsewhere,
        );
        assert!(table.hosts[0].profiles.is_empty());
        // A host that names no Service (a Gateway API hostname) takes the rules of the
        // Services it routes to.
        let mut hostname = (*split_vs(100, 0)).clone();
        hostname["spec"]["hosts"] = json!(["podinfo.example.com"]);
        let table = build(&[arc(hostname)], &services, &replicasets, 0.0, &traffic);
        assert_eq!(table.hosts[0].profiles.len(), 5);
    }

    #[test]
    fn a_mirror_serves_and_reports_a_copy_of_its_share_of_the_routes_requests() {
        let vs = arc(json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"hosts": ["podinfo"], "http": [
                {"route": [{"destination": {"host": "podinfo"}}],
                 "mirror": {"host": "podinfo-canary.test.svc.cluster.local"},
                 "mirrorPercentage": {"value": 25.0}},
            ]},
        }));
        let (services, replicasets) = workloads();
        let table = build(&[vs], &services, &replicasets, 0.1, &TrafficProfiles::new());
        let mut state = HostState::default();
        let mut errors = ErrorState::default();
        let mut seen: HashMap<(String, bool), u64> = HashMap::new();
        state.send(&table.hosts[0], 1000, &mut errors, &no_override, &mut |o| {
            let workload = o
                .endpoint
                .map_or("unknown".to_owned(), |e| e.workload.clone());
            *seen.entry((workload, o.mirrored)).or_default() += 1;
        });
        assert_eq!(seen[&("podinfo".to_owned(), false)], 1000);
        assert_eq!(seen[&("podinfo-canary".to_owned(), true)], 250);
        assert_eq!(seen.len(), 2, "{seen:?}");
        // Without mirrorPercentage, Istio mirrors every request.
        let all = arc(json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"hosts": ["podinfo"], "http": [
                {"route": [{"destination": {"host": "podinfo"}}],
                 "mirror": {"host": "podinfo-canary"}},
            ]},
        }));
        let table = build(
            &[all],
            &services,
            &replicasets,
            0.1,
            &TrafficProfiles::new(),
        );
        assert_eq!(
            table.hosts[0].routes[0].mirror.as_ref().unwrap().percent,
            100.0
        );
    }

    #[test]
    fn hosts_resolve_in_every_istio_form() {
        assert_eq!(resolve_host("svc", "ns"), ("svc".into(), "ns".into()));
        assert_eq!(
            resolve_host("svc.other", "ns"),
            ("svc".into(), "other".into())
        );
        assert_eq!(
            resolve_host("svc.other.svc.cluster.local", "ns"),
            ("svc".into(), "other".into())
        );
    }

    #[test]
    fn uri_and_method_matches_see_a_get_of_the_root() {
        assert!(rule_matches(
            &json!({"match": [{"uri": {"prefix": "/"}}]}),
            false
        ));
        assert!(!rule_matches(
            &json!({"match": [{"uri": {"exact": "/api"}}]}),
            false
        ));
        assert!(!rule_matches(
            &json!({"match": [{"method": {"exact": "POST"}}]}),
            true
        ));
        assert!(rule_matches(
            &json!({"match": [{"withoutHeaders": {"x": {"exact": "y"}}}]}),
            false
        ));
        assert!(!rule_matches(
            &json!({"match": [{"withoutHeaders": {"x": {"exact": "y"}}}]}),
            true
        ));
    }
}
