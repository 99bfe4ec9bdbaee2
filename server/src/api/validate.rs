//! Request validation: every name, weight, duration and threshold is checked here, before
//! anything reaches Kubernetes or PromQL.

use std::collections::BTreeMap;
use std::time::Duration;

use steerer::names::LabelProblem;
use steerer::v1 as pb;

use crate::domain::judging::DEFAULT_WEBHOOK_TIMEOUT;
use crate::domain::{
    AnalysisSettings, BaselineMode, BaselineSettings, MatchValue, Matched, MetricCheck,
    RequestMatch, RouteKind, RouteRef, SessionAffinity, Strategy, StrategyRequest, Webhook,
    WebhookKind,
};
use crate::metrics::templates::MetricTemplates;
use crate::webhooks::AllowList;

/// A rejected field, for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_FAILED_CHECKS: u32 = 1000;
const MAX_REQUEST_RATE: f64 = 1e9;
/// Metric checks per rollout (each adds a query per check and a line to every check event).
pub const MAX_METRIC_CHECKS: usize = 10;
/// Webhooks per rollout.
pub const MAX_WEBHOOKS: usize = 10;
const MAX_METADATA_ENTRIES: usize = 20;
const MAX_METADATA_CHARS: usize = 256;
const MAX_URL_CHARS: usize = 2048;
const MIN_WEBHOOK_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// A DNS-1123 label: 1..=63 of `a-z`, `0-9`, `-`, starting and ending alphanumeric. Every
/// namespace, Deployment, Service, VirtualService and container name must be one; that is also
/// what makes them safe inside a PromQL string.
pub fn dns1123_label(field: &str, value: &str) -> Result<(), Invalid> {
    let problem = match steerer::names::dns1123_label(value) {
        Ok(()) => return Ok(()),
        Err(problem) => problem,
    };
    Err(Invalid(match problem {
        LabelProblem::Empty => format!("{field} is required"),
        LabelProblem::TooLong => format!(
            "{field} is {} characters long; a DNS-1123 label has at most 63",
            value.chars().count()
        ),
        LabelProblem::BadChar(_) | LabelProblem::BadEnds => {
            let shown = value
                .chars()
                .take(64)
                .collect::<String>()
                .escape_debug()
                .to_string();
            format!(
                "{field} \"{shown}\" is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
            )
        }
    }))
}

/// An optional DNS-1123 label (empty = use the default).
pub fn optional_label(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        Ok(())
    } else {
        dns1123_label(field, value)
    }
}

/// The route a start names: `route`, or its alias `virtual_service` (a VirtualService by
/// name); `None` when neither names one (the server finds it). A kind steerer cannot drive, a
/// name that is no DNS-1123 label, or the two naming different routes is invalid.
pub fn route(
    route: Option<&pb::RouteRef>,
    virtual_service: &str,
) -> Result<Option<RouteRef>, Invalid> {
    optional_label("virtual_service", virtual_service)?;
    let alias = (!virtual_service.is_empty()).then(|| RouteRef::virtual_service(virtual_service));
    let Some(given) = route.filter(|r| !r.kind.is_empty() || !r.name.is_empty()) else {
        return Ok(alias);
    };
    let kind = RouteKind::parse(&given.kind).ok_or_else(|| {
        Invalid(if given.kind.is_empty() {
            format!(
                "route.kind is required (supported: {})",
                RouteKind::supported()
            )
        } else {
            format!(
                "route.kind {:?} is not supported (supported: {})",
                given.kind,
                RouteKind::supported()
            )
        })
    })?;
    dns1123_label("route.name", &given.name)?;
    let named = RouteRef {
        kind,
        name: given.name.clone(),
    };
    match alias {
        Some(alias) if alias != named => Err(Invalid(format!(
            "virtual_service {:?} and route {} name different routes; give one of them",
            alias.name,
            named.slashed()
        ))),
        _ => Ok(Some(named)),
    }
}

/// The observer a start names: `None` when empty (the server's default); a name that is none
/// of `metrics::observer::OBSERVERS` is invalid, naming the known ones.
pub fn observer(name: &str) -> Result<Option<String>, Invalid> {
    if name.is_empty() {
        return Ok(None);
    }
    match crate::metrics::observer::by_name(name) {
        Some(observer) => Ok(Some(observer.name().to_owned())),
        None => Err(Invalid(format!(
            "observer {name:?} is not known (known: {})",
            crate::metrics::observer::names().join(", ")
        ))),
    }
}

/// The canary's name: the one given, else the default `TARGET-canary`, which must itself be a
/// DNS-1123 label (a target of more than 56 characters has no valid default).
pub fn canary(target: &str, canary: &str) -> Result<(), Invalid> {
    if canary.is_empty() {
        dns1123_label(
            "canary (default TARGET-canary; name it explicitly)",
            &format!("{target}-canary"),
        )
    } else {
        dns1123_label("canary", canary)
    }
}

/// A container image reference: registry/path:tag@digest characters only.
pub fn image(container: &str, value: &str) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.len() <= 512
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | ':' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "image for container {container} \"{}\" is not a valid image reference",
            value.chars().take(80).collect::<String>().escape_debug()
        )))
    }
}

/// Container name -> image.
pub fn images(
    images: &std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, Invalid> {
    let mut out = BTreeMap::new();
    for (container, reference) in images {
        dns1123_label("images container name", container)?;
        image(container, reference)?;
        out.insert(container.clone(), reference.clone());
    }
    Ok(out)
}

/// A rollout id or request id: 1..=128 of letters, digits, `-`, `_`, `.`, `:`.
pub fn token(field: &str, value: &str, required: bool) -> Result<(), Invalid> {
    if value.is_empty() {
        return if required {
            Err(Invalid(format!("{field} is required")))
        } else {
            Ok(())
        };
    }
    if value.len() > 128
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(Invalid(format!(
            "{field} must be 1 to 128 letters, digits, '-', '_', '.' or ':'"
        )));
    }
    Ok(())
}

/// A free-text reason: at most 1024 characters, no control characters.
pub fn reason(value: &str) -> Result<(), Invalid> {
    if value.chars().count() > 1024 || value.chars().any(char::is_control) {
        return Err(Invalid(
            "reason must be at most 1024 characters without control characters".into(),
        ));
    }
    Ok(())
}

fn duration(field: &str, value: &prost_types::Duration) -> Result<Duration, Invalid> {
    if value.seconds < 0 || value.nanos < 0 || value.nanos >= 1_000_000_000 {
        return Err(Invalid(format!("{field} must be a positive duration")));
    }
    Duration::try_from(*value).map_err(|_| Invalid(format!("{field} is out of range")))
}

/// The request's analysis settings with `defaults` filled in, each in range.
pub fn analysis(
    request: Option<&pb::Analysis>,
    defaults: &AnalysisSettings,
) -> Result<AnalysisSettings, Invalid> {
    let mut s = defaults.clone();
    let Some(a) = request else {
        return Ok(s);
    };
    if let Strategy::Canary {
        step_weight,
        max_weight,
    } = &mut s.strategy
    {
        if let Some(v) = a.step_weight {
            *step_weight = v;
        }
        if let Some(v) = a.max_weight {
            *max_weight = v;
        }
    }
    if let Some(v) = &a.interval {
        s.interval = duration("analysis.interval", v)?;
    }
    if let Some(v) = a.success_rate_threshold {
        s.success_rate_threshold = v;
    }
    if let Some(v) = a.max_failed_checks {
        s.max_failed_checks = v;
    }
    if let Some(v) = &a.progress_deadline {
        s.progress_deadline = duration("analysis.progress_deadline", v)?;
    }
    if let Some(v) = a.min_request_rate {
        s.min_request_rate = v;
    }
    if let Some(v) = a.max_latency_p99_ms {
        s.max_latency_p99_ms = Some(v);
    }
    s.require_approval = s.require_approval || a.require_approval;
    if let Some(b) = &a.baseline {
        s.baseline = Some(Box::new(baseline(b, a)?));
        // Guard rails only when the request sets them: the server's defaults do not apply.
        if a.max_latency_p99_ms.is_none() {
            s.max_latency_p99_ms = None;
        }
    }
    check_analysis(&s)?;
    Ok(s)
}

/// The request's baseline with defaults filled in, each in range.
fn baseline(b: &pb::Baseline, a: &pb::Analysis) -> Result<BaselineSettings, Invalid> {
    let mode = match pb::BaselineMode::try_from(b.mode) {
        Ok(pb::BaselineMode::Ga) => BaselineMode::Ga,
        Ok(pb::BaselineMode::Deployment) => {
            return Err(Invalid(
                "analysis.baseline.mode BASELINE_MODE_DEPLOYMENT is not available on this server yet; use BASELINE_MODE_GA".to_owned(),
            ));
        }
        _ => {
            return Err(Invalid(format!(
                "analysis.baseline.mode {} must be BASELINE_MODE_GA or BASELINE_MODE_DEPLOYMENT",
                b.mode
            )));
        }
    };
    let mut s = BaselineSettings::ga();
    s.mode = mode;
    s.success_rate_guard = a.success_rate_threshold.is_some();
    if let Some(v) = b.confidence {
        s.confidence = v;
    }
    if let Some(v) = b.max_error_rate_increase {
        s.max_error_rate_increase = v;
    }
    if let Some(v) = b.max_latency_increase {
        s.max_latency_increase = v;
    }
    if let Some(v) = b.min_requests {
        s.min_requests = v;
    }
    Ok(s)
}

/// Largest tolerated relative slowdown (ten times slower).
const MAX_LATENCY_INCREASE: f64 = 10.0;
/// Largest number of requests per side a check may wait for.
const MAX_MIN_REQUESTS: u32 = 1_000_000;

/// Range checks of baseline settings against the rest of the analysis: both sides must keep
/// traffic at every weight the rollout reaches.
fn check_baseline(b: &BaselineSettings, max_weight: u32) -> Result<(), Invalid> {
    match b.mode {
        BaselineMode::Ga if max_weight >= 100 => {
            return Err(Invalid(format!(
                "analysis.max_weight {max_weight} must be below 100 with a GA baseline: GA needs traffic to be compared with"
            )));
        }
        BaselineMode::Deployment if max_weight > 50 => {
            return Err(Invalid(format!(
                "analysis.max_weight {max_weight} must be at most 50 with a baseline Deployment: it gets as much traffic as the canary"
            )));
        }
        _ => {}
    }
    if !(b.confidence.is_finite() && b.confidence > 0.0 && b.confidence < 1.0) {
        return Err(Invalid(format!(
            "analysis.baseline.confidence {} must lie strictly between 0 and 1",
            b.confidence
        )));
    }
    if !(b.max_error_rate_increase.is_finite()
        && (0.0..=100.0).contains(&b.max_error_rate_increase))
    {
        return Err(Invalid(format!(
            "analysis.baseline.max_error_rate_increase {} must be percentage points between 0 and 100",
            b.max_error_rate_increase
        )));
    }
    if !(b.max_latency_increase.is_finite()
        && (0.0..=MAX_LATENCY_INCREASE).contains(&b.max_latency_increase))
    {
        return Err(Invalid(format!(
            "analysis.baseline.max_latency_increase {} must be a relative slowdown between 0 and {MAX_LATENCY_INCREASE}",
            b.max_latency_increase
        )));
    }
    if !(1..=MAX_MIN_REQUESTS).contains(&b.min_requests) {
        return Err(Invalid(format!(
            "analysis.baseline.min_requests {} must be between 1 and {MAX_MIN_REQUESTS}",
            b.min_requests
        )));
    }
    Ok(())
}

/// The request's metric checks and webhooks, into `settings`: every template one the server
/// knows, every bound a finite number, every webhook named, typed, timed and sent only to a
/// host `allow` allows.
pub fn judged_on(
    request: Option<&pb::Analysis>,
    settings: &mut AnalysisSettings,
    templates: &MetricTemplates,
    allow: &AllowList,
) -> Result<(), Invalid> {
    let Some(a) = request else {
        return Ok(());
    };
    if !a.metrics.is_empty() {
        settings.metrics = metric_checks(&a.metrics, templates)?;
    }
    if !a.webhooks.is_empty() {
        settings.webhooks = webhooks(&a.webhooks, allow)?;
    }
    Ok(())
}

/// Metric checks: at most `MAX_METRIC_CHECKS`, each naming a known template with at least
/// one finite bound, `min <= max`.
pub fn metric_checks(
    checks: &[pb::MetricCheck],
    templates: &MetricTemplates,
) -> Result<Vec<MetricCheck>, Invalid> {
    if checks.len() > MAX_METRIC_CHECKS {
        return Err(Invalid(format!(
            "analysis.metrics has {} checks; at most {MAX_METRIC_CHECKS}",
            checks.len()
        )));
    }
    checks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let field = format!("analysis.metrics[{i}]");
            dns1123_label(&format!("{field}.template"), &c.template)?;
            if !templates.contains(&c.template) {
                let known = templates.names();
                return Err(Invalid(format!(
                    "{field}.template {:?} is not a metric template this server knows ({})",
                    c.template,
                    if known.is_empty() {
                        "it has none: see --metric-templates".to_owned()
                    } else {
                        format!("it knows {}", known.join(", "))
                    }
                )));
            }
            for (bound, value) in [("min", c.min), ("max", c.max)] {
                if let Some(v) = value
                    && !v.is_finite()
                {
                    return Err(Invalid(format!(
                        "{field}.{bound} {v} must be a finite number"
                    )));
                }
            }
            match (c.min, c.max) {
                (None, None) => Err(Invalid(format!(
                    "{field} ({}) needs a bound: min, max or both",
                    c.template
                ))),
                (Some(min), Some(max)) if min > max => Err(Invalid(format!(
                    "{field} ({}) has min {min} above max {max}",
                    c.template
                ))),
                _ => Ok(MetricCheck {
                    template: c.template.clone(),
                    min: c.min,
                    max: c.max,
                }),
            }
        })
        .collect()
}

/// Webhooks: at most `MAX_WEBHOOKS`, names unique DNS-1123 labels, a type, an http(s) URL
/// whose host `allow` allows, a timeout of 100ms to 5m (default 10s), bounded metadata.
pub fn webhooks(hooks: &[pb::Webhook], allow: &AllowList) -> Result<Vec<Webhook>, Invalid> {
    if hooks.len() > MAX_WEBHOOKS {
        return Err(Invalid(format!(
            "analysis.webhooks has {} webhooks; at most {MAX_WEBHOOKS}",
            hooks.len()
        )));
    }
    let mut out: Vec<Webhook> = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        let field = format!("analysis.webhooks[{i}]");
        dns1123_label(&format!("{field}.name"), &h.name)?;
        if out.iter().any(|w| w.name == h.name) {
            return Err(Invalid(format!(
                "{field}.name {:?} is used twice; webhook names must be unique",
                h.name
            )));
        }
        let field = format!("{field} ({})", h.name);
        let kind = match pb::WebhookType::try_from(h.r#type) {
            Ok(pb::WebhookType::ConfirmRollout) => WebhookKind::ConfirmRollout,
            Ok(pb::WebhookType::PreRollout) => WebhookKind::PreRollout,
            Ok(pb::WebhookType::Rollout) => WebhookKind::Rollout,
            Ok(pb::WebhookType::ConfirmPromotion) => WebhookKind::ConfirmPromotion,
            Ok(pb::WebhookType::PostRollout) => WebhookKind::PostRollout,
            Ok(pb::WebhookType::Rollback) => WebhookKind::Rollback,
            Ok(pb::WebhookType::Unspecified) | Err(_) => {
                return Err(Invalid(format!(
                    "{field}: type {} is not a webhook type (CONFIRM_ROLLOUT, PRE_ROLLOUT, ROLLOUT, CONFIRM_PROMOTION, POST_ROLLOUT or ROLLBACK)",
                    h.r#type
                )));
            }
        };
        if h.url.chars().count() > MAX_URL_CHARS {
            return Err(Invalid(format!(
                "{field}: url is longer than {MAX_URL_CHARS} characters"
            )));
        }
        allow
            .check(&h.url)
            .map_err(|refused| Invalid(format!("{field}: {refused}")))?;
        let timeout = match &h.timeout {
            Some(t) => duration(&format!("{field}.timeout"), t)?,
            None => DEFAULT_WEBHOOK_TIMEOUT,
        };
        if !(MIN_WEBHOOK_TIMEOUT..=MAX_WEBHOOK_TIMEOUT).contains(&timeout) {
            return Err(Invalid(format!(
                "{field}: timeout {} must be between 100ms and 5m",
                humantime::format_duration(timeout)
            )));
        }
        if h.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(Invalid(format!(
                "{field}: metadata has {} entries; at most {MAX_METADATA_ENTRIES}",
                h.metadata.len()
            )));
        }
        for (key, value) in &h.metadata {
            if key.is_empty()
                || key.chars().count() > MAX_METADATA_CHARS
                || value.chars().count() > MAX_METADATA_CHARS
                || key.chars().chain(value.chars()).any(char::is_control)
            {
                return Err(Invalid(format!(
                    "{field}: metadata keys and values must be at most {MAX_METADATA_CHARS} characters without control characters, keys not empty"
                )));
            }
        }
        out.push(Webhook {
            name: h.name.clone(),
            kind,
            url: h.url.clone(),
            timeout,
            metadata: h.metadata.clone().into_iter().collect(),
        });
    }
    Ok(out)
}

/// Range checks of analysis settings (also applied to the server's defaults).
pub fn check_analysis(s: &AnalysisSettings) -> Result<(), Invalid> {
    if let Strategy::Canary {
        step_weight,
        max_weight,
    } = s.strategy
    {
        if !(1..=100).contains(&step_weight) {
            return Err(Invalid(format!(
                "analysis.step_weight {step_weight} must be between 1 and 100"
            )));
        }
        if !(1..=100).contains(&max_weight) {
            return Err(Invalid(format!(
                "analysis.max_weight {max_weight} must be between 1 and 100"
            )));
        }
        if step_weight > max_weight {
            return Err(Invalid(format!(
                "analysis.step_weight {step_weight} must not exceed analysis.max_weight {max_weight}"
            )));
        }
    }
    if s.interval < MIN_INTERVAL || s.interval > MAX_INTERVAL {
        return Err(Invalid(format!(
            "analysis.interval {:?} must be between 100ms and 24h",
            s.interval
        )));
    }
    if s.progress_deadline < Duration::from_secs(1) || s.progress_deadline > MAX_DEADLINE {
        return Err(Invalid(format!(
            "analysis.progress_deadline {:?} must be between 1s and 7 days",
            s.progress_deadline
        )));
    }
    if !s.success_rate_threshold.is_finite() || !(0.0..=100.0).contains(&s.success_rate_threshold) {
        return Err(Invalid(format!(
            "analysis.success_rate_threshold {} must be a percentage between 0 and 100",
            s.success_rate_threshold
        )));
    }
    if !(1..=MAX_FAILED_CHECKS).contains(&s.max_failed_checks) {
        return Err(Invalid(format!(
            "analysis.max_failed_checks {} must be between 1 and {MAX_FAILED_CHECKS}",
            s.max_failed_checks
        )));
    }
    if !s.min_request_rate.is_finite() || !(0.0..=MAX_REQUEST_RATE).contains(&s.min_request_rate) {
        return Err(Invalid(format!(
            "analysis.min_request_rate {} must be a finite rate of at least 0",
            s.min_request_rate
        )));
    }
    if let Some(max) = s.max_latency_p99_ms
        && !(max.is_finite() && max > 0.0)
    {
        return Err(Invalid(format!(
            "analysis.max_latency_p99_ms {max} must be a finite number of milliseconds above 0"
        )));
    }
    if let Some(b) = &s.baseline {
        // The most of all traffic the canary takes: an A/B test leaves GA every request that
        // matches none of its entries, so GA always has traffic to be compared with.
        let peak = match s.strategy {
            Strategy::Canary { max_weight, .. } => max_weight,
            Strategy::AbTest { .. } => 0,
            // Its last check has all the traffic on the canary.
            Strategy::BlueGreen { .. } => 100,
        };
        check_baseline(b, peak)?;
    }
    Ok(())
}

/// Request matches per A/B test.
pub const MAX_MATCHES: usize = 10;
/// Longest header or cookie name, value or regex in a request match.
const MAX_MATCH_BYTES: usize = 256;
/// Passed checks an A/B test or blue/green rollout needs when the request says nothing.
pub const DEFAULT_ITERATIONS: u32 = 10;
const MAX_ITERATIONS: u32 = 1000;
/// The longest cookie lifetime browsers keep (RFC 6265bis caps Max-Age at 400 days).
const MAX_COOKIE_AGE: Duration = Duration::from_secs(400 * 24 * 3600);

/// The strategy a start asks for and the routing it adds, each field checked against the
/// strategy it belongs to: `match` only with an A/B test (which needs one), session affinity
/// only with a canary, mirroring not with an A/B test, `iterations` not with a canary (which
/// counts steps), `step_weight`/`max_weight` only with a canary.
pub fn strategy(request: Option<&pb::Analysis>) -> Result<StrategyRequest, Invalid> {
    let none = pb::Analysis::default();
    let a = request.unwrap_or(&none);
    let kind = pb::Strategy::try_from(a.strategy).map_err(|_| {
        Invalid(format!(
            "analysis.strategy {} is not a strategy",
            a.strategy
        ))
    })?;
    if let Some(n) = a.iterations
        && !(1..=MAX_ITERATIONS).contains(&n)
    {
        return Err(Invalid(format!(
            "analysis.iterations {n} must be between 1 and {MAX_ITERATIONS}"
        )));
    }
    if let Some(n) = a.mirror_weight
        && !(1..=100).contains(&n)
    {
        return Err(Invalid(format!(
            "analysis.mirror_weight {n} must be a percentage between 1 and 100"
        )));
    }
    let name = kind.as_str_name();
    let not_with = |field: &str| Invalid(format!("analysis.{field} cannot be used with {name}"));
    let iterations = a.iterations.unwrap_or(DEFAULT_ITERATIONS);
    match kind {
        pb::Strategy::Unspecified | pb::Strategy::Canary => {
            if a.iterations.is_some() {
                return Err(Invalid(format!(
                    "analysis.iterations cannot be used with {}: a canary is promoted at \
                     max_weight, not after a number of checks",
                    pb::Strategy::Canary.as_str_name()
                )));
            }
            if !a.r#match.is_empty() {
                return Err(Invalid(format!(
                    "analysis.match cannot be used with {}: only {} routes by match",
                    pb::Strategy::Canary.as_str_name(),
                    pb::Strategy::AbTest.as_str_name()
                )));
            }
            Ok(StrategyRequest::Canary {
                mirror_weight: a.mirror_weight,
                session_affinity: a
                    .session_affinity
                    .as_ref()
                    .map(session_affinity)
                    .transpose()?,
            })
        }
        pb::Strategy::AbTest => {
            if a.r#match.is_empty() {
                return Err(Invalid(format!(
                    "{name} needs at least one analysis.match (header:NAME=VALUE or \
                     cookie:NAME=VALUE) saying which requests go to the canary"
                )));
            }
            if a.mirror_weight.is_some() {
                return Err(not_with("mirror_weight"));
            }
            if a.session_affinity.is_some() {
                return Err(not_with("session_affinity"));
            }
            weights_unused(a, name)?;
            if a.r#match.len() > MAX_MATCHES {
                return Err(Invalid(format!(
                    "analysis.match has {} entries; at most {MAX_MATCHES}",
                    a.r#match.len()
                )));
            }
            let matches = a
                .r#match
                .iter()
                .enumerate()
                .map(|(i, m)| request_match(i, m))
                .collect::<Result<_, _>>()?;
            Ok(StrategyRequest::AbTest {
                iterations,
                matches,
            })
        }
        pb::Strategy::BlueGreen => {
            if !a.r#match.is_empty() {
                return Err(not_with("match"));
            }
            if a.session_affinity.is_some() {
                return Err(not_with("session_affinity"));
            }
            if a.baseline.is_some() {
                return Err(Invalid(format!(
                    "analysis.baseline cannot be used with {name}: all traffic moves to the canary at once, leaving no baseline traffic to compare it with"
                )));
            }
            weights_unused(a, name)?;
            Ok(StrategyRequest::BlueGreen {
                iterations,
                mirror_weight: a.mirror_weight,
            })
        }
    }
}

/// Weights steer a canary only; given with another strategy they would be silently ignored.
fn weights_unused(a: &pb::Analysis, name: &str) -> Result<(), Invalid> {
    for (field, given) in [
        ("step_weight", a.step_weight.is_some()),
        ("max_weight", a.max_weight.is_some()),
    ] {
        if given {
            return Err(Invalid(format!(
                "analysis.{field} cannot be used with {name}: it moves traffic by \
                 analysis.iterations passing checks, not by weight steps"
            )));
        }
    }
    Ok(())
}

/// One entry of `analysis.match`: exactly one of header or cookie, named by an RFC 7230
/// token, and exactly one of exact, prefix or regex.
fn request_match(index: usize, m: &pb::RequestMatch) -> Result<RequestMatch, Invalid> {
    let field = format!("analysis.match[{index}]");
    let on = match (m.header.is_empty(), m.cookie.is_empty()) {
        (false, true) => {
            http_token(&format!("{field}.header"), &m.header)?;
            Matched::Header(m.header.clone())
        }
        (true, false) => {
            http_token(&format!("{field}.cookie"), &m.cookie)?;
            Matched::Cookie(m.cookie.clone())
        }
        _ => {
            return Err(Invalid(format!(
                "{field} needs exactly one of header or cookie"
            )));
        }
    };
    let given = [
        ("exact", &m.exact),
        ("prefix", &m.prefix),
        ("regex", &m.regex),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect::<Vec<_>>();
    let [(how, value)] = given[..] else {
        return Err(Invalid(format!(
            "{field} needs exactly one of exact, prefix or regex"
        )));
    };
    let field = format!("{field}.{how}");
    if value.len() > MAX_MATCH_BYTES {
        return Err(Invalid(format!(
            "{field} is {} bytes long; at most {MAX_MATCH_BYTES}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    let value = match how {
        "regex" => {
            re2(&field, value)?;
            MatchValue::Regex(value.clone())
        }
        _ => {
            if matches!(on, Matched::Cookie(_))
                && let Some(c) = value
                    .chars()
                    .find(|c| c.is_whitespace() || matches!(c, '"' | ',' | ';' | '\\'))
            {
                return Err(Invalid(format!(
                    "{field} {value:?} holds {c:?}, which a cookie value cannot (RFC 6265)"
                )));
            }
            if how == "exact" {
                MatchValue::Exact(value.clone())
            } else {
                MatchValue::Prefix(value.clone())
            }
        }
    };
    Ok(RequestMatch { on, value })
}

/// A header or cookie name: an RFC 7230 token (letters, digits and ! # $ % & ' * + - . ^ _ `
/// | ~) of at most 256 bytes.
pub fn http_token(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid(format!("{field} is required")));
    }
    if value.len() > MAX_MATCH_BYTES {
        return Err(Invalid(format!(
            "{field} is {} bytes long; at most {MAX_MATCH_BYTES}",
            value.len()
        )));
    }
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !value.chars().all(tchar) {
        return Err(Invalid(format!(
            "{field} {:?} is not an RFC 7230 token (letters, digits and !#$%&'*+-.^_`|~)",
            value.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// A regex RE2 accepts, checked with the parser of the `regex` crate, whose syntax is RE2's
/// (no look-around, no backreferences): the meshes that match with it (Envoy) use RE2.
fn re2(field: &str, value: &str) -> Result<(), Invalid> {
    let refused = |why: String| Invalid(format!("{field} is not an RE2 regular expression: {why}"));
    match regex_syntax::Parser::new().parse(value) {
        Ok(_) => Ok(()),
        Err(regex_syntax::Error::Parse(e)) => Err(refused(e.kind().to_string())),
        Err(regex_syntax::Error::Translate(e)) => Err(refused(e.kind().to_string())),
        Err(e) => Err(refused(e.to_string())),
    }
}

/// Session affinity: a cookie name that is an RFC 7230 token, and a lifetime of 1s to 400
/// days when one is given.
fn session_affinity(s: &pb::SessionAffinity) -> Result<SessionAffinity, Invalid> {
    http_token("analysis.session_affinity.cookie_name", &s.cookie_name)?;
    let max_age = match &s.max_age {
        None => None,
        Some(age) => {
            let age = duration("analysis.session_affinity.max_age", age)?;
            if age < Duration::from_secs(1) || age > MAX_COOKIE_AGE {
                return Err(Invalid(format!(
                    "analysis.session_affinity.max_age {age:?} must be between 1s and 400 days"
                )));
            }
            Some(age)
        }
    };
    Ok(SessionAffinity {
        cookie_name: s.cookie_name.clone(),
        max_age,
    })
}

/// Rollouts per ListRollouts page when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest ListRollouts page.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A ListRollouts page size: 0 = `DEFAULT_PAGE_SIZE`, at most `MAX_PAGE_SIZE`.
pub fn page_size(value: u32) -> Result<usize, Invalid> {
    match value {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(Invalid(format!(
            "page_size must be at most {MAX_PAGE_SIZE}, got {n}"
        ))),
        n => Ok(n as usize),
    }
}

/// The phases a ListRollouts request filters on.
pub fn phases(values: &[i32]) -> Result<Vec<crate::domain::Phase>, Invalid> {
    use crate::domain::Phase;
    values
        .iter()
        .map(|&v| match pb::Phase::try_from(v) {
            Ok(pb::Phase::Pending) => Ok(Phase::Pending),
            Ok(pb::Phase::Progressing) => Ok(Phase::Progressing),
            Ok(pb::Phase::Paused) => Ok(Phase::Paused),
            Ok(pb::Phase::Promoting) => Ok(Phase::Promoting),
            Ok(pb::Phase::Succeeded) => Ok(Phase::Succeeded),
            Ok(pb::Phase::RollingBack) => Ok(Phase::RollingBack),
            Ok(pb::Phase::RolledBack) => Ok(Phase::RolledBack),
            Ok(pb::Phase::Aborted) => Ok(Phase::Aborted),
            Ok(pb::Phase::Failed) => Ok(Phase::Failed),
            Ok(pb::Phase::Unspecified) | Err(_) => {
                Err(Invalid(format!("phases: {v} is not a phase")))
            }
        })
        .collect()
}

const PAGE_TOKEN_PREFIX: &str = "p1 ";

/// The opaque token of the page after `cursor`.
pub fn encode_page_token(cursor: &crate::engine::Cursor) -> String {
    let plain = format!(
        "{PAGE_TOKEN_PREFIX}{} {}",
        cursor
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        cursor.id
    );
    hex::encode(plain)
}

/// Reads a page token (empty = the first page).
pub fn page_token(token: &str) -> Result<Option<crate::engine::Cursor>, Invalid> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Invalid("page_token is not a token this server issued".into());
    if token.len() > 256 {
        return Err(bad());
    }
    let plain = hex::decode(token).map_err(|_| bad())?;
    let plain = String::from_utf8(plain).map_err(|_| bad())?;
    let rest = plain.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(bad)?;
    let (time, id) = rest.split_once(' ').ok_or_else(bad)?;
    let created_at = chrono::DateTime::parse_from_rfc3339(time)
        .map_err(|_| bad())?
        .with_timezone(&chrono::Utc);
    token_field(id).map_err(|_| bad())?;
    Ok(Some(crate::engine::Cursor {
        created_at,
        id: id.to_owned(),
    }))
}

fn token_field(id: &str) -> Result<(), Invalid> {
    token("id", id, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_too_long_for_its_default_canary_name_needs_an_explicit_one() {
        let target = "a".repeat(57);
        assert!(canary(&target, "").is_err());
        assert_eq!(canary(&target, "short-canary"), Ok(()));
        assert_eq!(canary(&"a".repeat(56), ""), Ok(()));
    }

    #[test]
    fn good_labels_pass() {
        for name in ["podinfo", "podinfo-canary", "a", "x1-2y", &"a".repeat(63)] {
            assert_eq!(dns1123_label("target", name), Ok(()), "{name}");
        }
    }

    #[test]
    fn hostile_labels_are_rejected() {
        for name in [
            "",
            "Podinfo",
            "pod\"info",
            "pod}info",
            "pod=~info",
            "pod\ninfo",
            "-podinfo",
            "podinfo-",
            "pod.info",
            "pod info",
            &"a".repeat(300),
        ] {
            assert!(dns1123_label("target", name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn long_name_error_says_why() {
        let err = dns1123_label("target", &"a".repeat(300)).unwrap_err();
        assert!(err.0.contains("300 characters"), "{err}");
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let d = AnalysisSettings::default();
        let a = pb::Analysis {
            step_weight: Some(25),
            ..Default::default()
        };
        let s = analysis(Some(&a), &d).unwrap();
        assert_eq!(
            s.strategy,
            Strategy::Canary {
                step_weight: 25,
                max_weight: 100
            }
        );
        assert_eq!(s.interval, d.interval);
    }

    fn with_baseline(max_weight: u32, baseline: pb::Baseline) -> pb::Analysis {
        pb::Analysis {
            max_weight: Some(max_weight),
            baseline: Some(baseline),
            ..Default::default()
        }
    }

    fn ga_baseline() -> pb::Baseline {
        pb::Baseline {
            mode: pb::BaselineMode::Ga as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_baseline_gets_its_defaults_and_drops_the_servers_absolute_bounds() {
        let d = AnalysisSettings {
            max_latency_p99_ms: Some(500.0),
            ..AnalysisSettings::default()
        };
        let s = analysis(Some(&with_baseline(50, ga_baseline())), &d).unwrap();
        let b = s.baseline.expect("a baseline");
        assert_eq!(b.mode, BaselineMode::Ga);
        assert_eq!(b.confidence, 0.99);
        assert_eq!(b.max_error_rate_increase, 0.5);
        assert_eq!(b.max_latency_increase, 0.2);
        assert_eq!(b.min_requests, 200);
        assert!(!b.success_rate_guard);
        assert_eq!(s.max_latency_p99_ms, None);
        // Bounds the request sets stay, as guard rails.
        let a = pb::Analysis {
            success_rate_threshold: Some(90.0),
            max_latency_p99_ms: Some(800.0),
            ..with_baseline(50, ga_baseline())
        };
        let s = analysis(Some(&a), &d).unwrap();
        assert!(s.baseline.unwrap().success_rate_guard);
        assert_eq!(s.success_rate_threshold, 90.0);
        assert_eq!(s.max_latency_p99_ms, Some(800.0));
        // Without a baseline nothing changes.
        let s = analysis(Some(&pb::Analysis::default()), &d).unwrap();
        assert_eq!(s.baseline, None);
        assert_eq!(s.max_latency_p99_ms, Some(500.0));
    }

    #[test]
    fn a_baseline_that_could_not_be_judged_or_is_out_of_range_is_refused_saying_why() {
        let d = AnalysisSettings::default();
        let cases = [
            (with_baseline(100, ga_baseline()), "must be below 100"),
            (
                with_baseline(
                    50,
                    pb::Baseline {
                        mode: 0,
                        ..Default::default()
                    },
                ),
                "BASELINE_MODE_GA",
            ),
            (
                with_baseline(
                    50,
                    pb::Baseline {
                        mode: pb::BaselineMode::Deployment as i32,
                        ..Default::default()
                    },
                ),
                "not available",
            ),
            (
                with_baseline(
                    50,
                    pb::Baseline {
                        confidence: Some(1.0),
                        ..ga_baseline()
                    },
                ),
                "strictly between 0 and 1",
            ),
            (
                with_baseline(
                    50,
                    pb::Baseline {
                        confidence: Some(f64::NAN),
                        ..ga_baseline()
                    },
                ),
                "confidence",
            ),
            (
                with_baseline(
                    50,
                    pb::Baseline {
                        max_error_rate_increase: Some(-0.1),
                        ..ga_baseline()
                    },
                ),
                "max_error_rate_increase",
            ),
            (
                with_baseline(
                    50,
                    pb::Baseline {
                        max_latency_increase: Some(f64::INFINITY),
                        ..ga_baseline()
                    },
                ),
                "max_latency_increase",
            ),
            (
                with_baseline(
                    50,
                    pb::Baseline {
                        min_requests: Some(0),
                        ..ga_baseline()
                    },
                ),
                "min_requests",
            ),
        ];
        for (a, says) in cases {
            let err = analysis(Some(&a), &d).unwrap_err();
            assert!(err.0.contains(says), "{err} should say {says}");
        }
    }

    #[test]
    fn out_of_range_analysis_is_rejected() {
        let d = AnalysisSettings::default();
        let cases = [
            pb::Analysis {
                step_weight: Some(0),
                ..Default::default()
            },
            pb::Analysis {
                step_weight: Some(101),
                ..Default::default()
            },
            pb::Analysis {
                step_weight: Some(50),
                max_weight: Some(40),
                ..Default::default()
            },
            pb::Analysis {
                success_rate_threshold: Some(f64::NAN),
                ..Default::default()
            },
            pb::Analysis {
                success_rate_threshold: Some(f64::INFINITY),
                ..Default::default()
            },
            pb::Analysis {
                success_rate_threshold: Some(100.5),
                ..Default::default()
            },
            pb::Analysis {
                min_request_rate: Some(-1.0),
                ..Default::default()
            },
            pb::Analysis {
                max_failed_checks: Some(0),
                ..Default::default()
            },
            pb::Analysis {
                max_latency_p99_ms: Some(0.0),
                ..Default::default()
            },
            pb::Analysis {
                max_latency_p99_ms: Some(-5.0),
                ..Default::default()
            },
            pb::Analysis {
                max_latency_p99_ms: Some(f64::NAN),
                ..Default::default()
            },
            pb::Analysis {
                max_latency_p99_ms: Some(f64::INFINITY),
                ..Default::default()
            },
            pb::Analysis {
                interval: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..Default::default()
            },
            pb::Analysis {
                interval: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 0,
                }),
                ..Default::default()
            },
            pb::Analysis {
                progress_deadline: Some(prost_types::Duration {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                ..Default::default()
            },
        ];
        for case in cases {
            assert!(analysis(Some(&case), &d).is_err(), "{case:?}");
        }
    }

    #[test]
    fn a_latency_ceiling_is_taken_when_set_and_absent_by_default() {
        let d = AnalysisSettings::default();
        let s = analysis(Some(&pb::Analysis::default()), &d).unwrap();
        assert_eq!(s.max_latency_p99_ms, None);
        let a = pb::Analysis {
            max_latency_p99_ms: Some(200.0),
            ..Default::default()
        };
        assert_eq!(
            analysis(Some(&a), &d).unwrap().max_latency_p99_ms,
            Some(200.0)
        );
    }

    fn known() -> (MetricTemplates, AllowList) {
        use crate::metrics::templates::Template;
        let templates = MetricTemplates::from_map(
            [(
                "request-rate".to_owned(),
                Template::parse("request-rate", "sum(rate(x[{{ interval }}]))").unwrap(),
            )]
            .into(),
        );
        (
            templates,
            AllowList::parse(&["hooks.example".to_owned()]).unwrap(),
        )
    }

    fn hook(name: &str, kind: pb::WebhookType, url: &str) -> pb::Webhook {
        pb::Webhook {
            name: name.into(),
            r#type: kind as i32,
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn metric_checks_and_webhooks_are_taken_with_their_defaults() {
        let (templates, allow) = known();
        let request = pb::Analysis {
            metrics: vec![pb::MetricCheck {
                template: "request-rate".into(),
                min: Some(1.0),
                max: None,
            }],
            webhooks: vec![hook(
                "gate",
                pb::WebhookType::ConfirmPromotion,
                "http://hooks.example/gate",
            )],
            require_approval: true,
            ..Default::default()
        };
        let mut s = analysis(Some(&request), &AnalysisSettings::default()).unwrap();
        judged_on(Some(&request), &mut s, &templates, &allow).unwrap();
        assert!(s.require_approval);
        assert_eq!(s.metrics[0].min, Some(1.0));
        assert_eq!(s.webhooks[0].kind, WebhookKind::ConfirmPromotion);
        assert_eq!(s.webhooks[0].timeout, DEFAULT_WEBHOOK_TIMEOUT);
    }

    #[test]
    fn unknown_templates_bad_bounds_and_disallowed_or_bad_webhooks_are_refused_saying_why() {
        let (templates, allow) = known();
        let metric = |template: &str, min, max| pb::Analysis {
            metrics: vec![pb::MetricCheck {
                template: template.into(),
                min,
                max,
            }],
            ..Default::default()
        };
        let hooks = |hooks: Vec<pb::Webhook>| pb::Analysis {
            webhooks: hooks,
            ..Default::default()
        };
        let timed = |seconds| pb::Webhook {
            timeout: Some(prost_types::Duration { seconds, nanos: 0 }),
            ..hook("slow", pb::WebhookType::Rollout, "http://hooks.example/")
        };
        let url = "http://hooks.example/x";
        for (request, says) in [
            (
                metric("error-rate", Some(1.0), None),
                "not a metric template this server knows (it knows request-rate)",
            ),
            (metric("request-rate", None, None), "needs a bound"),
            (metric("request-rate", Some(2.0), Some(1.0)), "above max"),
            (metric("request-rate", Some(f64::NAN), None), "finite"),
            (metric("Request_Rate", Some(1.0), None), "DNS-1123"),
            (
                hooks(vec![hook(
                    "gate",
                    pb::WebhookType::Rollout,
                    "http://evil.example/",
                )]),
                "url host evil.example:80 is not allowed",
            ),
            (
                hooks(vec![hook(
                    "gate",
                    pb::WebhookType::Rollout,
                    "gopher://hooks.example/",
                )]),
                "http:// or https://",
            ),
            (
                hooks(vec![hook("gate", pb::WebhookType::Unspecified, url)]),
                "not a webhook type",
            ),
            (
                hooks(vec![
                    hook("a", pb::WebhookType::Rollout, url),
                    hook("a", pb::WebhookType::Rollback, url),
                ]),
                "used twice",
            ),
            (
                hooks(vec![hook("", pb::WebhookType::Rollout, url)]),
                "required",
            ),
            (hooks(vec![timed(0)]), "between 100ms and 5m"),
            (hooks(vec![timed(301)]), "between 100ms and 5m"),
        ] {
            let mut s = AnalysisSettings::default();
            let error = judged_on(Some(&request), &mut s, &templates, &allow).unwrap_err();
            assert!(error.0.contains(says), "{says}: {error}");
        }
        let nothing_allowed = judged_on(
            Some(&hooks(vec![hook("gate", pb::WebhookType::Rollout, url)])),
            &mut AnalysisSettings::default(),
            &templates,
            &AllowList::default(),
        )
        .unwrap_err();
        assert!(
            nothing_allowed.0.contains("allows no webhook host"),
            "{nothing_allowed}"
        );
    }

    fn header(name: &str, exact: &str) -> pb::RequestMatch {
        pb::RequestMatch {
            header: name.into(),
            exact: exact.into(),
            ..Default::default()
        }
    }

    fn ab(matches: Vec<pb::RequestMatch>) -> pb::Analysis {
        pb::Analysis {
            strategy: pb::Strategy::AbTest as i32,
            r#match: matches,
            ..Default::default()
        }
    }

    #[test]
    fn each_strategy_is_taken_with_its_defaults() {
        assert_eq!(
            strategy(None),
            Ok(StrategyRequest::Canary {
                mirror_weight: None,
                session_affinity: None
            })
        );
        assert_eq!(strategy(None).unwrap().unsupported(), None);
        let cookie = pb::RequestMatch {
            cookie: "plan".into(),
            regex: "gold|platinum".into(),
            ..Default::default()
        };
        assert_eq!(
            strategy(Some(&ab(vec![header("x-cohort", "beta"), cookie]))),
            Ok(StrategyRequest::AbTest {
                iterations: DEFAULT_ITERATIONS,
                matches: vec![
                    RequestMatch {
                        on: Matched::Header("x-cohort".into()),
                        value: MatchValue::Exact("beta".into()),
                    },
                    RequestMatch {
                        on: Matched::Cookie("plan".into()),
                        value: MatchValue::Regex("gold|platinum".into()),
                    },
                ],
            })
        );
        let blue_green = pb::Analysis {
            strategy: pb::Strategy::BlueGreen as i32,
            iterations: Some(1000),
            mirror_weight: Some(100),
            ..Default::default()
        };
        assert_eq!(
            strategy(Some(&blue_green)),
            Ok(StrategyRequest::BlueGreen {
                iterations: 1000,
                mirror_weight: Some(100)
            })
        );
        let sticky = pb::Analysis {
            strategy: pb::Strategy::Canary as i32,
            session_affinity: Some(pb::SessionAffinity {
                cookie_name: "canary-user".into(),
                max_age: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
            }),
            ..Default::default()
        };
        assert_eq!(
            strategy(Some(&sticky)),
            Ok(StrategyRequest::Canary {
                mirror_weight: None,
                session_affinity: Some(SessionAffinity {
                    cookie_name: "canary-user".into(),
                    max_age: Some(Duration::from_secs(3600)),
                }),
            })
        );
    }

    #[test]
    fn strategies_this_server_cannot_route_yet_say_so() {
        let a_b = strategy(Some(&ab(vec![header("x-cohort", "beta")]))).unwrap();
        assert_eq!(a_b.unsupported(), None, "an A/B test runs");
        assert!(matches!(
            a_b.strategy(&Strategy::default()),
            Strategy::AbTest { iterations: 10, ref matches } if matches.len() == 1
        ));
        let blue_green = strategy(Some(&pb::Analysis {
            strategy: pb::Strategy::BlueGreen as i32,
            iterations: Some(4),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(blue_green.unsupported(), None, "blue/green runs");
        assert_eq!(
            blue_green.strategy(&Strategy::default()),
            Strategy::BlueGreen { iterations: 4 }
        );
        for (request, says) in [
            (
                pb::Analysis {
                    strategy: pb::Strategy::BlueGreen as i32,
                    mirror_weight: Some(50),
                    ..Default::default()
                },
                "mirror_weight",
            ),
            (
                pb::Analysis {
                    mirror_weight: Some(10),
                    ..Default::default()
                },
                "mirror_weight",
            ),
            (
                pb::Analysis {
                    session_affinity: Some(pb::SessionAffinity {
                        cookie_name: "c".into(),
                        max_age: None,
                    }),
                    ..Default::default()
                },
                "session_affinity",
            ),
        ] {
            let why = strategy(Some(&request)).unwrap().unsupported().unwrap();
            assert!(why.contains(says), "{says}: {why}");
            assert!(why.contains("not implemented"), "{why}");
        }
    }

    #[test]
    fn every_strategy_field_out_of_place_or_out_of_range_is_refused_saying_why() {
        let long = "a".repeat(257);
        let with = |f: fn(&mut pb::Analysis)| {
            let mut a = ab(vec![header("x-cohort", "beta")]);
            f(&mut a);
            a
        };
        let blue_green = |f: fn(&mut pb::Analysis)| {
            let mut a = pb::Analysis {
                strategy: pb::Strategy::BlueGreen as i32,
                ..Default::default()
            };
            f(&mut a);
            a
        };
        let affinity = |name: &str, seconds: i64| {
            Some(pb::SessionAffinity {
                cookie_name: name.into(),
                max_age: Some(prost_types::Duration { seconds, nanos: 0 }),
            })
        };
        let cases: Vec<(pb::Analysis, &str)> = vec![
            (ab(vec![]), "needs at least one analysis.match"),
            (
                blue_green(|a| a.r#match = vec![header("x-cohort", "beta")]),
                "analysis.match cannot be used with STRATEGY_BLUE_GREEN",
            ),
            (
                blue_green(|a| {
                    a.session_affinity = Some(pb::SessionAffinity {
                        cookie_name: "c".into(),
                        max_age: None,
                    })
                }),
                "analysis.session_affinity cannot be used with STRATEGY_BLUE_GREEN",
            ),
            (
                with(|a| {
                    a.session_affinity = Some(pb::SessionAffinity {
                        cookie_name: "c".into(),
                        max_age: None,
                    })
                }),
                "analysis.session_affinity cannot be used with STRATEGY_AB_TEST",
            ),
            (
                pb::Analysis {
                    r#match: vec![header("x-cohort", "beta")],
                    ..Default::default()
                },
                "analysis.match cannot be used with STRATEGY_CANARY",
            ),
            (
                ab(vec![header("x cohort", "beta")]),
                "analysis.match[0].header \"x cohort\" is not an RFC 7230 token",
            ),
            (ab(vec![header(":authority", "x")]), "RFC 7230 token"),
            (ab(vec![header("x-é", "x")]), "RFC 7230 token"),
            (
                ab(vec![
                    header("x-cohort", "beta"),
                    pb::RequestMatch {
                        cookie: "pl;an".into(),
                        exact: "gold".into(),
                        ..Default::default()
                    },
                ]),
                "analysis.match[1].cookie",
            ),
            (ab(vec![header(&long, "x")]), "257 bytes long; at most 256"),
            (
                ab(vec![header("x-cohort", &long)]),
                "analysis.match[0].exact is 257 bytes long; at most 256",
            ),
            (
                ab(vec![pb::RequestMatch {
                    header: "x".into(),
                    regex: format!("{long}*"),
                    ..Default::default()
                }]),
                "analysis.match[0].regex is 258 bytes long",
            ),
            (
                ab(vec![pb::RequestMatch {
                    header: "x".into(),
                    regex: "(beta".into(),
                    ..Default::default()
                }]),
                "analysis.match[0].regex is not an RE2 regular expression: unclosed group",
            ),
            (
                ab(vec![pb::RequestMatch {
                    header: "x".into(),
                    regex: "beta(?=x)".into(),
                    ..Default::default()
                }]),
                "look-around",
            ),
            (
                ab(vec![pb::RequestMatch {
                    header: "x".into(),
                    regex: r"(a)\1".into(),
                    ..Default::default()
                }]),
                "not an RE2 regular expression",
            ),
            (
                ab(vec![header("x-cohort", "be\r\nta")]),
                "control characters",
            ),
            (
                ab(vec![pb::RequestMatch {
                    cookie: "plan".into(),
                    exact: "gold; admin=1".into(),
                    ..Default::default()
                }]),
                "which a cookie value cannot",
            ),
            (
                ab(vec![pb::RequestMatch {
                    header: "x".into(),
                    cookie: "y".into(),
                    exact: "z".into(),
                    ..Default::default()
                }]),
                "exactly one of header or cookie",
            ),
            (
                ab(vec![pb::RequestMatch {
                    exact: "z".into(),
                    ..Default::default()
                }]),
                "exactly one of header or cookie",
            ),
            (
                ab(vec![pb::RequestMatch {
                    header: "x".into(),
                    exact: "z".into(),
                    prefix: "z".into(),
                    ..Default::default()
                }]),
                "exactly one of exact, prefix or regex",
            ),
            (
                ab(vec![header("x", "")]),
                "exactly one of exact, prefix or regex",
            ),
            (
                ab(vec![header("x", "y"); MAX_MATCHES + 1]),
                "11 entries; at most 10",
            ),
            (
                with(|a| a.mirror_weight = Some(10)),
                "analysis.mirror_weight cannot be used with STRATEGY_AB_TEST",
            ),
            (
                pb::Analysis {
                    mirror_weight: Some(0),
                    ..Default::default()
                },
                "analysis.mirror_weight 0 must be a percentage between 1 and 100",
            ),
            (
                blue_green(|a| a.mirror_weight = Some(101)),
                "analysis.mirror_weight 101",
            ),
            (
                with(|a| a.iterations = Some(1001)),
                "analysis.iterations 1001 must be between 1 and 1000",
            ),
            (
                blue_green(|a| a.iterations = Some(0)),
                "analysis.iterations 0",
            ),
            (
                pb::Analysis {
                    iterations: Some(5),
                    ..Default::default()
                },
                "analysis.iterations cannot be used with STRATEGY_CANARY",
            ),
            (
                with(|a| a.step_weight = Some(10)),
                "analysis.step_weight cannot be used with STRATEGY_AB_TEST",
            ),
            (
                blue_green(|a| a.baseline = Some(pb::Baseline::default())),
                "analysis.baseline cannot be used with STRATEGY_BLUE_GREEN",
            ),
            (
                blue_green(|a| a.max_weight = Some(50)),
                "analysis.max_weight cannot be used with STRATEGY_BLUE_GREEN",
            ),
            (
                pb::Analysis {
                    strategy: 7,
                    ..Default::default()
                },
                "analysis.strategy 7 is not a strategy",
            ),
            (
                pb::Analysis {
                    session_affinity: affinity("", 60),
                    ..Default::default()
                },
                "analysis.session_affinity.cookie_name is required",
            ),
            (
                pb::Analysis {
                    session_affinity: affinity("a=b", 60),
                    ..Default::default()
                },
                "RFC 7230 token",
            ),
            (
                pb::Analysis {
                    session_affinity: affinity("c", 0),
                    ..Default::default()
                },
                "between 1s and 400 days",
            ),
            (
                pb::Analysis {
                    session_affinity: affinity("c", 401 * 24 * 3600),
                    ..Default::default()
                },
                "between 1s and 400 days",
            ),
            (
                pb::Analysis {
                    session_affinity: affinity("c", -5),
                    ..Default::default()
                },
                "positive duration",
            ),
        ];
        for (request, says) in cases {
            let error = strategy(Some(&request)).unwrap_err();
            assert!(error.0.contains(says), "{says}: {error}");
        }
    }

    #[test]
    fn a_regex_of_exactly_256_bytes_and_rfc_7230_punctuation_in_names_are_accepted() {
        let regex = format!("{}.*", "a".repeat(254));
        let request = ab(vec![
            pb::RequestMatch {
                header: "x".into(),
                regex,
                ..Default::default()
            },
            header("x-a!#$%&'*+.^_`|~1", "v"),
        ]);
        assert!(strategy(Some(&request)).is_ok());
    }

    #[test]
    fn an_observer_is_a_known_name_or_empty_for_the_default() {
        assert_eq!(observer(""), Ok(None));
        assert_eq!(observer("istio"), Ok(Some("istio".to_owned())));
        assert_eq!(observer("linkerd"), Ok(Some("linkerd".to_owned())));
        assert_eq!(
            observer("Linkerd"),
            Err(Invalid(
                "observer \"Linkerd\" is not known (known: istio, linkerd)".into()
            ))
        );
        assert!(observer("istio ").is_err());
    }

    #[test]
    fn images_are_checked() {
        let mut m = std::collections::HashMap::new();
        m.insert(
            "app".to_owned(),
            "ghcr.io/stefanprodan/podinfo:6.1.0".to_owned(),
        );
        assert!(images(&m).is_ok());
        m.insert("app".to_owned(), "bad image\n".to_owned());
        assert!(images(&m).is_err());
        let mut m = std::collections::HashMap::new();
        m.insert("Bad_Name".to_owned(), "x:1".to_owned());
        assert!(images(&m).is_err());
    }

    fn route_ref(kind: &str, name: &str) -> pb::RouteRef {
        pb::RouteRef {
            kind: kind.into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_route_is_named_by_route_or_by_its_virtual_service_alias() {
        assert_eq!(route(None, ""), Ok(None));
        assert_eq!(
            route(None, "checkout"),
            Ok(Some(RouteRef::virtual_service("checkout")))
        );
        assert_eq!(
            route(Some(&route_ref("VirtualService", "checkout")), ""),
            Ok(Some(RouteRef::virtual_service("checkout")))
        );
        assert_eq!(
            route(Some(&route_ref("virtualservice", "checkout")), "checkout"),
            Ok(Some(RouteRef::virtual_service("checkout")))
        );
        // An empty message is no route at all.
        assert_eq!(
            route(Some(&route_ref("", "")), "cart"),
            Ok(Some(RouteRef::virtual_service("cart")))
        );
    }

    #[test]
    fn a_route_and_an_alias_naming_different_routes_or_an_unknown_kind_are_invalid() {
        assert_eq!(
            route(Some(&route_ref("VirtualService", "checkout")), "cart"),
            Err(Invalid(
                "virtual_service \"cart\" and route virtualservice/checkout name different routes; give one of them".into()
            ))
        );
        assert_eq!(
            route(Some(&route_ref("Ingress", "checkout")), ""),
            Err(Invalid(
                "route.kind \"Ingress\" is not supported (supported: VirtualService, HTTPRoute, GRPCRoute)".into()
            ))
        );
        assert_eq!(
            route(Some(&route_ref("", "checkout")), ""),
            Err(Invalid(
                "route.kind is required (supported: VirtualService, HTTPRoute, GRPCRoute)".into()
            ))
        );
        assert_eq!(
            route(Some(&route_ref("grpcroute", "checkout")), ""),
            Ok(Some(RouteRef {
                kind: RouteKind::GrpcRoute,
                name: "checkout".into()
            }))
        );
        assert_eq!(
            route(Some(&route_ref("HTTPRoute", "checkout")), "checkout"),
            Err(Invalid(
                "virtual_service \"checkout\" and route httproute/checkout name different routes; give one of them".into()
            ))
        );
        assert!(route(Some(&route_ref("VirtualService", "Not_A_Label")), "").is_err());
        assert!(route(Some(&route_ref("VirtualService", "")), "").is_err());
        assert!(route(None, "Not_A_Label").is_err());
    }
}
