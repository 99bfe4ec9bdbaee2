//! What the CLI prints: the stable JSON records, the timestamped text lines, and the live
//! progress bar shown on a terminal.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use steerer::format::number;
use steerer_client::Outcome;
use steerer_client::proto::{
    Analysis, AnalysisResult, CheckKind, CheckResult, EventType, Phase, Rollout, RolloutEvent,
    WebhookType,
};

use super::exit::CliError;

/// `PHASE_ROLLED_BACK` → `ROLLED_BACK`.
pub fn phase_name(phase: Phase) -> &'static str {
    let name = phase.as_str_name();
    name.strip_prefix("PHASE_").unwrap_or(name)
}

/// `EVENT_TYPE_WEIGHT_CHANGED` → `WEIGHT_CHANGED`.
pub fn event_type_name(event_type: EventType) -> &'static str {
    let name = event_type.as_str_name();
    name.strip_prefix("EVENT_TYPE_").unwrap_or(name)
}

/// RFC 3339 in UTC to the second (`2026-11-26T10:00:01Z`); `None` for a missing or
/// out-of-range timestamp.
pub fn format_time(time: Option<&prost_types::Timestamp>) -> Option<String> {
    let time = time?;
    let nanos = u32::try_from(time.nanos).ok()?;
    DateTime::<Utc>::from_timestamp(time.seconds, nanos)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn seconds(duration: Option<&prost_types::Duration>) -> Option<f64> {
    duration.map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

fn human_seconds(duration: Option<&prost_types::Duration>) -> Option<String> {
    let d = Duration::try_from(*duration?).ok()?;
    Some(humantime::format_duration(d).to_string())
}

/// One rollout, as `get`, `list`, `start` and the control commands print it with `-o json`.
#[derive(Debug, Serialize)]
pub struct JsonRollout {
    pub kind: &'static str,
    pub id: String,
    pub namespace: String,
    pub target: String,
    pub canary: String,
    /// The route that splits the traffic, as `virtualservice/NAME`.
    pub route: String,
    /// The route's name when it is a VirtualService, as before routes had kinds.
    pub virtual_service: String,
    /// Whose series judge the canary (empty from a server without observers).
    pub observer: String,
    pub revision: String,
    pub phase: &'static str,
    pub canary_weight: u32,
    pub failed_checks: u32,
    pub analysis: Option<JsonAnalysis>,
    pub last_analysis: Option<JsonAnalysisResult>,
    pub message: String,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub finished_at: Option<String>,
    pub last_sequence: u64,
    pub request_id: String,
    pub images: BTreeMap<String, String>,
    /// What the rollout holds for (empty: nothing), e.g. "approval: call PromoteRollout".
    pub waiting_for: String,
}

#[derive(Debug, Serialize)]
pub struct JsonAnalysis {
    pub step_weight: Option<u32>,
    pub max_weight: Option<u32>,
    pub interval_seconds: Option<f64>,
    pub success_rate_threshold: Option<f64>,
    pub max_failed_checks: Option<u32>,
    pub progress_deadline_seconds: Option<f64>,
    pub min_request_rate: Option<f64>,
    pub max_latency_p99_ms: Option<f64>,
    pub metrics: Vec<JsonMetricCheck>,
    pub webhooks: Vec<JsonWebhook>,
    pub require_approval: bool,
    pub baseline: Option<JsonBaseline>,
}

/// The baseline the canary is judged against.
#[derive(Debug, Serialize)]
pub struct JsonBaseline {
    /// `GA` or `DEPLOYMENT`.
    pub mode: &'static str,
    pub confidence: Option<f64>,
    pub max_error_rate_increase: Option<f64>,
    pub max_latency_increase: Option<f64>,
    pub min_requests: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct JsonMetricCheck {
    pub template: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct JsonWebhook {
    pub name: String,
    /// `CONFIRM_ROLLOUT`, `PRE_ROLLOUT`, `ROLLOUT`, `CONFIRM_PROMOTION`, `POST_ROLLOUT`,
    /// `ROLLBACK`.
    #[serde(rename = "type")]
    pub webhook_type: &'static str,
    pub url: String,
    pub timeout_seconds: Option<f64>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct JsonAnalysisResult {
    pub success_rate: Option<f64>,
    pub request_rate: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub failed_metrics: Vec<String>,
    pub checks: Vec<JsonCheck>,
    pub time: Option<String>,
}

/// One value of a check against its bound, or one webhook's answer.
#[derive(Debug, Serialize)]
pub struct JsonCheck {
    pub name: String,
    /// `SUCCESS_RATE`, `LATENCY`, `METRIC` or `WEBHOOK`.
    pub kind: &'static str,
    pub value: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub passed: bool,
    pub detail: String,
    /// Against a baseline: the same metric there, the p-value, the effect and its interval,
    /// and the query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect_low: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect_high: Option<f64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub query: String,
}

/// One event, as `watch` and `start --wait` print it with `-o json`.
#[derive(Debug, Serialize)]
pub struct JsonEvent {
    pub kind: &'static str,
    pub rollout_id: String,
    pub sequence: u64,
    pub time: Option<String>,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub phase: &'static str,
    pub canary_weight: u32,
    pub success_rate: Option<f64>,
    pub request_rate: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub failed_metrics: Vec<String>,
    pub checks: Vec<JsonCheck>,
    pub failed_checks: u32,
    pub message: String,
}

/// The last line of `watch` and `start --wait` with `-o json`.
#[derive(Debug, Serialize)]
pub struct JsonOutcome {
    pub kind: &'static str,
    pub rollout_id: String,
    pub phase: &'static str,
    pub succeeded: bool,
    pub canary_weight: u32,
    pub message: String,
    pub exit_code: u8,
}

/// A failed command with `-o json`.
#[derive(Debug, Serialize)]
pub struct JsonError {
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub exit_code: u8,
}

/// `steerer version -o json`: this client's line.
#[derive(Debug, Serialize)]
pub struct JsonVersion {
    pub kind: &'static str,
    pub version: &'static str,
    pub commit: &'static str,
}

impl JsonVersion {
    pub fn client() -> Self {
        Self {
            kind: "client",
            version: steerer_client::VERSION,
            commit: steerer_client::COMMIT,
        }
    }
}

/// `steerer version -o json`: the server's line.
#[derive(Debug, Serialize)]
pub struct JsonServerInfo {
    pub kind: &'static str,
    pub version: String,
    pub commit: String,
    pub leader: String,
    pub route_kinds: Vec<String>,
    pub observers: Vec<String>,
    pub auth: String,
}

impl From<&steerer_client::proto::ServerInfo> for JsonServerInfo {
    fn from(info: &steerer_client::proto::ServerInfo) -> Self {
        Self {
            kind: "server",
            version: info.version.clone(),
            commit: info.commit.clone(),
            leader: info.leader.clone(),
            route_kinds: info.route_kinds.clone(),
            observers: info.observers.clone(),
            auth: info.auth.clone(),
        }
    }
}

/// `steerer version`: this client's line.
pub fn client_version() -> String {
    format!(
        "client  {} (commit {})",
        steerer_client::VERSION,
        steerer_client::COMMIT
    )
}

/// `steerer version`: what the server says of itself.
pub fn server_info(info: &steerer_client::proto::ServerInfo) -> String {
    let or_none = |values: &[String]| match values.is_empty() {
        true => "none".to_owned(),
        false => values.join(", "),
    };
    let leader = match info.leader.as_str() {
        "" => "none (an election is under way)",
        leader => leader,
    };
    format!(
        "server  {} (commit {})\n  leader       {leader}\n  route kinds  {}\n  observers    {}\n  auth         {}\n",
        info.version,
        info.commit,
        or_none(&info.route_kinds),
        or_none(&info.observers),
        info.auth,
    )
}

impl From<&Analysis> for JsonAnalysis {
    fn from(a: &Analysis) -> Self {
        Self {
            step_weight: a.step_weight,
            max_weight: a.max_weight,
            interval_seconds: seconds(a.interval.as_ref()),
            success_rate_threshold: a.success_rate_threshold,
            max_failed_checks: a.max_failed_checks,
            progress_deadline_seconds: seconds(a.progress_deadline.as_ref()),
            min_request_rate: a.min_request_rate,
            max_latency_p99_ms: a.max_latency_p99_ms,
            metrics: a
                .metrics
                .iter()
                .map(|m| JsonMetricCheck {
                    template: m.template.clone(),
                    min: m.min,
                    max: m.max,
                })
                .collect(),
            webhooks: a
                .webhooks
                .iter()
                .map(|w| JsonWebhook {
                    name: w.name.clone(),
                    webhook_type: webhook_type_name(w.r#type()),
                    url: w.url.clone(),
                    timeout_seconds: seconds(w.timeout.as_ref()),
                    metadata: w.metadata.clone().into_iter().collect(),
                })
                .collect(),
            require_approval: a.require_approval,
            baseline: a.baseline.as_ref().map(|b| JsonBaseline {
                mode: baseline_mode_name(b.mode()),
                confidence: b.confidence,
                max_error_rate_increase: b.max_error_rate_increase,
                max_latency_increase: b.max_latency_increase,
                min_requests: b.min_requests,
            }),
        }
    }
}

/// `BASELINE_MODE_GA` → `GA`.
pub fn baseline_mode_name(m: steerer::v1::BaselineMode) -> &'static str {
    match m {
        steerer::v1::BaselineMode::Ga => "GA",
        steerer::v1::BaselineMode::Deployment => "DEPLOYMENT",
        steerer::v1::BaselineMode::Unspecified => "UNSPECIFIED",
    }
}

impl From<&CheckResult> for JsonCheck {
    fn from(c: &CheckResult) -> Self {
        Self {
            name: c.name.clone(),
            kind: check_kind_name(c.kind()),
            value: c.value,
            min: c.min,
            max: c.max,
            passed: c.passed,
            detail: c.detail.clone(),
            baseline_value: c.baseline_value,
            p_value: c.p_value,
            effect: c.effect,
            effect_low: c.effect_low,
            effect_high: c.effect_high,
            query: c.query.clone(),
        }
    }
}

/// `WEBHOOK_TYPE_PRE_ROLLOUT` → `PRE_ROLLOUT`.
pub fn webhook_type_name(t: WebhookType) -> &'static str {
    let name = t.as_str_name();
    name.strip_prefix("WEBHOOK_TYPE_").unwrap_or(name)
}

/// `CHECK_KIND_METRIC` → `METRIC`.
pub fn check_kind_name(k: CheckKind) -> &'static str {
    let name = k.as_str_name();
    name.strip_prefix("CHECK_KIND_").unwrap_or(name)
}

/// One check for `get`: `error-ratio: 0.2 (max 0.01) FAILED (metric error-ratio 0.2 above
/// max 0.01)`, `smoke: passed (HTTP 200)`, `latency_p99_ms: (max 200) no data (…)`.
pub fn check_line(c: &CheckResult) -> String {
    // Against a baseline the detail says it all: both values, the effect, its interval, p.
    if c.p_value.is_some() && !c.detail.is_empty() {
        return format!("{}: {}", c.name, c.detail);
    }
    let mut line = format!("{}:", c.name);
    match (c.kind(), c.value) {
        (CheckKind::SuccessRate, Some(v)) => line.push_str(&format!(" {}", percent(v))),
        (CheckKind::Latency, Some(v)) => line.push_str(&format!(" {v:.1}ms")),
        (_, Some(v)) => line.push_str(&format!(" {}", number(v))),
        (_, None) => {}
    }
    match (c.min, c.max) {
        (Some(min), Some(max)) => {
            line.push_str(&format!(" (min {}, max {})", number(min), number(max)));
        }
        (Some(min), None) => line.push_str(&format!(" (min {})", number(min))),
        (None, Some(max)) => line.push_str(&format!(" (max {})", number(max))),
        (None, None) => {}
    }
    line.push(' ');
    line.push_str(verdict(c));
    if !c.detail.is_empty() && (c.kind() == CheckKind::Webhook || !c.passed) {
        line.push_str(&format!(" ({})", c.detail));
    }
    line
}

/// `passed`, `FAILED`, or `no data` (not passed, nothing measured, not a webhook).
fn verdict(c: &CheckResult) -> &'static str {
    if c.passed {
        "passed"
    } else if c.value.is_none() && c.kind() != CheckKind::Webhook {
        "no data"
    } else {
        "FAILED"
    }
}

/// The checks of an event line: `checks=[success_rate 99.9% ok, error-ratio 0.2 FAILED, …]`.
fn checks_field(checks: &[CheckResult]) -> String {
    let items: Vec<String> = checks
        .iter()
        .map(|c| {
            let value = match (c.kind(), c.value) {
                // Against a baseline: the canary's value and the baseline's.
                (_, Some(v)) if c.p_value.is_some() => {
                    let unit = |v: f64| {
                        if c.name == "latency_shift" {
                            format!("{v:.0}ms")
                        } else {
                            format!("{v:.1}%")
                        }
                    };
                    let baseline = c.baseline_value.map(unit).unwrap_or_else(|| "?".into());
                    format!(" {} vs {baseline}", unit(v))
                }
                (CheckKind::SuccessRate, Some(v)) => format!(" {}", percent(v)),
                (CheckKind::Latency, Some(v)) => format!(" {v:.1}ms"),
                (_, Some(v)) => format!(" {}", number(v)),
                (CheckKind::Webhook, None) => format!(" {}", c.detail),
                (_, None) => String::new(),
            };
            let verdict = match verdict(c) {
                "passed" => "ok",
                "no data" => "no-data",
                other => other,
            };
            format!("{}{value} {verdict}", c.name)
        })
        .collect();
    format!("checks=[{}]", items.join(", "))
}

impl From<&AnalysisResult> for JsonAnalysisResult {
    fn from(r: &AnalysisResult) -> Self {
        Self {
            success_rate: r.success_rate,
            request_rate: r.request_rate,
            latency_p99_ms: r.latency_p99_ms,
            failed_metrics: r.failed_metrics.clone(),
            checks: r.checks.iter().map(JsonCheck::from).collect(),
            time: format_time(r.time.as_ref()),
        }
    }
}

impl From<&Rollout> for JsonRollout {
    fn from(r: &Rollout) -> Self {
        Self {
            kind: "rollout",
            id: r.id.clone(),
            namespace: r.namespace.clone(),
            target: r.target.clone(),
            canary: r.canary.clone(),
            route: route(r),
            virtual_service: r.virtual_service.clone(),
            observer: r.observer.clone(),
            revision: r.revision.clone(),
            phase: phase_name(r.phase()),
            canary_weight: r.canary_weight,
            failed_checks: r.failed_checks,
            analysis: r.analysis.as_ref().map(JsonAnalysis::from),
            last_analysis: r.last_analysis.as_ref().map(JsonAnalysisResult::from),
            message: r.message.clone(),
            created_at: format_time(r.created_at.as_ref()),
            updated_at: format_time(r.updated_at.as_ref()),
            finished_at: format_time(r.finished_at.as_ref()),
            last_sequence: r.last_sequence,
            request_id: r.request_id.clone(),
            images: r.images.clone().into_iter().collect(),
            waiting_for: r.waiting_for.clone(),
        }
    }
}

impl From<&RolloutEvent> for JsonEvent {
    fn from(e: &RolloutEvent) -> Self {
        Self {
            kind: "event",
            rollout_id: e.rollout_id.clone(),
            sequence: e.sequence,
            time: format_time(e.time.as_ref()),
            event_type: event_type_name(e.r#type()),
            phase: phase_name(e.phase()),
            canary_weight: e.canary_weight,
            success_rate: e.success_rate,
            request_rate: e.request_rate,
            latency_p99_ms: e.latency_p99_ms,
            failed_metrics: e.failed_metrics.clone(),
            checks: e.checks.iter().map(JsonCheck::from).collect(),
            failed_checks: e.failed_checks,
            message: e.message.clone(),
        }
    }
}

impl JsonOutcome {
    pub fn new(outcome: &Outcome, exit_code: u8) -> Self {
        Self {
            kind: "outcome",
            rollout_id: outcome.rollout.id.clone(),
            phase: phase_name(outcome.phase),
            succeeded: outcome.succeeded(),
            canary_weight: outcome.rollout.canary_weight,
            message: outcome.message.clone(),
            exit_code,
        }
    }
}

fn percent(value: f64) -> String {
    // One decimal, without rounding 99.96 up to a misleading "100.0".
    let truncated = (value * 10.0).floor() / 10.0;
    format!("{truncated:.1}%")
}

/// One event as a plain line:
/// `2026-11-26T10:00:01Z  CHECK_PASSED  weight=20  success=99.9%  p99=47.5ms  rate=12.5/s  failed=0  phase=PROGRESSING  message`
/// (`p99` only when the rollout checks latency), then on check and webhook events
/// `checks=[…]`: every value against its verdict.
pub fn event_line(event: &RolloutEvent) -> String {
    let time = format_time(event.time.as_ref())
        .unwrap_or_else(|| Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
    let mut line = format!(
        "{time}  {}  weight={}",
        event_type_name(event.r#type()),
        event.canary_weight
    );
    if let Some(rate) = event.success_rate {
        line.push_str(&format!("  success={}", percent(rate)));
    }
    if let Some(p99) = event.latency_p99_ms {
        line.push_str(&format!("  p99={p99:.1}ms"));
    }
    if let Some(rate) = event.request_rate {
        line.push_str(&format!("  rate={rate:.1}/s"));
    }
    line.push_str(&format!(
        "  failed={}  phase={}",
        event.failed_checks,
        phase_name(event.phase())
    ));
    if !event.checks.is_empty() {
        line.push_str("  ");
        line.push_str(&checks_field(&event.checks));
    }
    if !event.message.is_empty() {
        line.push_str("  ");
        line.push_str(&event.message);
    }
    line
}

/// The route of a rollout as kubectl names objects, `virtualservice/NAME`; from its
/// `virtual_service` when a server that predates route kinds sent no `route`.
pub fn route(r: &Rollout) -> String {
    match &r.route {
        Some(route) if !route.name.is_empty() => {
            format!("{}/{}", route.kind.to_ascii_lowercase(), route.name)
        }
        _ if !r.virtual_service.is_empty() => format!("virtualservice/{}", r.virtual_service),
        _ => String::new(),
    }
}

/// A rollout as `key: value` lines for `get`.
pub fn rollout_details(r: &Rollout) -> String {
    let mut out = String::new();
    let mut field = |key: &str, value: String| {
        if !value.is_empty() {
            out.push_str(&format!("{key:<16}{value}\n"));
        }
    };
    field("id:", r.id.clone());
    field("target:", format!("{}/{}", r.namespace, r.target));
    field("canary:", r.canary.clone());
    field("route:", route(r));
    field("observer:", r.observer.clone());
    field("revision:", r.revision.clone());
    field("phase:", phase_name(r.phase()).to_string());
    field("canary weight:", format!("{}%", r.canary_weight));
    let max_failed = r
        .analysis
        .as_ref()
        .and_then(|a| a.max_failed_checks)
        .map(|m| format!("/{m}"))
        .unwrap_or_default();
    field("failed checks:", format!("{}{max_failed}", r.failed_checks));
    if let Some(a) = &r.analysis {
        let mut parts = Vec::new();
        if let Some(step) = a.step_weight {
            parts.push(format!("step {step}%"));
        }
        if let Some(max) = a.max_weight {
            parts.push(format!("max {max}%"));
        }
        if let Some(interval) = human_seconds(a.interval.as_ref()) {
            parts.push(format!("every {interval}"));
        }
        if let Some(threshold) = a.success_rate_threshold {
            parts.push(format!("success >= {threshold}%"));
        }
        if let Some(deadline) = human_seconds(a.progress_deadline.as_ref()) {
            parts.push(format!("deadline {deadline}"));
        }
        if let Some(rate) = a.min_request_rate {
            parts.push(format!("min {rate} req/s"));
        }
        if let Some(max) = a.max_latency_p99_ms {
            parts.push(format!("p99 <= {max}ms"));
        }
        for m in &a.metrics {
            let bounds = match (m.min, m.max) {
                (Some(min), Some(max)) => format!("in [{}, {}]", number(min), number(max)),
                (Some(min), None) => format!(">= {}", number(min)),
                (None, Some(max)) => format!("<= {}", number(max)),
                (None, None) => String::new(),
            };
            parts.push(format!("{} {bounds}", m.template));
        }
        if a.require_approval {
            parts.push("promotion needs approval".to_owned());
        }
        field("analysis:", parts.join(", "));
        if let Some(b) = &a.baseline {
            let mut parts = vec![baseline_mode_name(b.mode()).to_ascii_lowercase()];
            if let Some(c) = b.confidence {
                parts.push(format!("confidence {}%", number(c * 100.0)));
            }
            if let Some(e) = b.max_error_rate_increase {
                parts.push(format!("errors up to +{} pts", number(e)));
            }
            if let Some(l) = b.max_latency_increase {
                parts.push(format!("latency up to +{}%", number(l * 100.0)));
            }
            if let Some(n) = b.min_requests {
                parts.push(format!("{n} requests per side before judging"));
            }
            field("baseline:", parts.join(", "));
        }
        for w in &a.webhooks {
            field(
                "webhook:",
                format!(
                    "{} ({}) {}",
                    w.name,
                    webhook_type_name(w.r#type())
                        .to_ascii_lowercase()
                        .replace('_', "-"),
                    w.url
                ),
            );
        }
    }
    if let Some(last) = &r.last_analysis {
        let success = last
            .success_rate
            .map(percent)
            .unwrap_or_else(|| "no data".into());
        let rate = last
            .request_rate
            .map(|r| format!(" at {r:.1} req/s"))
            .unwrap_or_default();
        let p99 = last
            .latency_p99_ms
            .map(|p| format!(", p99 {p:.1}ms"))
            .unwrap_or_default();
        let failed = if last.failed_metrics.is_empty() {
            String::new()
        } else {
            format!(" (failed: {})", last.failed_metrics.join(", "))
        };
        field("last check:", format!("{success}{p99}{rate}{failed}"));
        for check in &last.checks {
            field("", format!("  {}", check_line(check)));
        }
    }
    let mut images: Vec<_> = r.images.iter().collect();
    images.sort();
    field(
        "images:",
        images
            .iter()
            .map(|(c, i)| format!("{c}={i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if !r.waiting_for.is_empty() {
        let how = if r.waiting_for.starts_with("approval") {
            format!(" (steerer promote {})", r.id)
        } else {
            String::new()
        };
        field("waiting for:", format!("{}{how}", r.waiting_for));
    }
    field("message:", r.message.clone());
    field(
        "created:",
        format_time(r.created_at.as_ref()).unwrap_or_default(),
    );
    field(
        "updated:",
        format_time(r.updated_at.as_ref()).unwrap_or_default(),
    );
    field(
        "finished:",
        format_time(r.finished_at.as_ref()).unwrap_or_default(),
    );
    field("request id:", r.request_id.clone());
    field("last event:", r.last_sequence.to_string());
    out
}

/// Rollouts as an aligned table for `list`.
pub fn rollout_table(rollouts: &[Rollout]) -> String {
    let header = [
        "ID", "TARGET", "PHASE", "WEIGHT", "FAILED", "UPDATED", "MESSAGE",
    ];
    let rows: Vec<[String; 7]> = rollouts
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                format!("{}/{}", r.namespace, r.target),
                phase_name(r.phase()).to_string(),
                format!("{}%", r.canary_weight),
                r.failed_checks.to_string(),
                format_time(r.updated_at.as_ref()).unwrap_or_else(|| "-".into()),
                r.message.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[String]| {
        let last = cells.len() - 1;
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&header.map(String::from));
    for row in &rows {
        push_row(row);
    }
    out
}

/// A one-line summary for the control commands and `start`.
pub fn rollout_summary(verb: &str, r: &Rollout) -> String {
    let mut line = format!("{verb} rollout {} of {}/{}", r.id, r.namespace, r.target);
    let route = route(r);
    if !route.is_empty() {
        line.push_str(&format!(" via {route}"));
    }
    line.push_str(&format!(
        ": {} at {}% canary",
        phase_name(r.phase()),
        r.canary_weight
    ));
    if !r.message.is_empty() {
        line.push_str(" — ");
        line.push_str(&r.message);
    }
    line
}

/// The final line of a followed rollout.
pub fn outcome_line(outcome: &Outcome) -> String {
    let verdict = if outcome.succeeded() {
        "promoted"
    } else {
        "not promoted"
    };
    let mut line = format!(
        "rollout {} {} ({})",
        outcome.rollout.id,
        verdict,
        phase_name(outcome.phase)
    );
    if !outcome.message.is_empty() {
        line.push_str(": ");
        line.push_str(&outcome.message);
    }
    line
}

/// Where results go: JSON lines, plain lines, or plain lines under a live progress bar.
pub enum Printer {
    Json,
    Lines,
    Progress(Box<ProgressView>),
}

impl Printer {
    /// JSON for `-o json`; otherwise a progress bar when `progress` (stdout is a terminal)
    /// and plain lines when not.
    pub fn new(json: bool, progress: bool) -> Self {
        if json {
            Self::Json
        } else if progress {
            Self::Progress(Box::default())
        } else {
            Self::Lines
        }
    }

    pub fn json<T: Serialize>(value: &T) -> Result<(), CliError> {
        let line =
            serde_json::to_string(value).map_err(|e| CliError::Output(std::io::Error::other(e)))?;
        write_line(&line)
    }

    pub fn rollout(&self, text: &str, rollout: &Rollout) -> Result<(), CliError> {
        match self {
            Self::Json => Self::json(&JsonRollout::from(rollout)),
            Self::Lines | Self::Progress(_) => write_line(text.trim_end_matches('\n')),
        }
    }

    /// Prepares the progress bar for `rollout` before its events arrive.
    pub fn begin(&mut self, rollout: &Rollout) {
        if let Self::Progress(view) = self {
            view.begin(rollout);
        }
    }

    pub fn event(&mut self, event: &RolloutEvent) -> Result<(), CliError> {
        match self {
            Self::Json => Self::json(&JsonEvent::from(event)),
            Self::Lines => write_line(&event_line(event)),
            Self::Progress(view) => {
                view.event(event);
                Ok(())
            }
        }
    }

    pub fn outcome(&mut self, outcome: &Outcome, exit_code: u8) -> Result<(), CliError> {
        match self {
            Self::Json => Self::json(&JsonOutcome::new(outcome, exit_code)),
            Self::Lines => write_line(&outcome_line(outcome)),
            Self::Progress(view) => {
                view.finish(outcome);
                Ok(())
            }
        }
    }

    /// Takes the progress bar off the screen before an error is printed.
    pub fn abandon(&mut self) {
        if let Self::Progress(view) = self {
            view.bar.abandon();
        }
    }
}

/// Writes one line to stdout. A closed pipe (`steerer list | head -1`) is not an error worth
/// a message, so it ends the process quietly with success.
pub fn write_line(line: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

/// The live view on a terminal: a bar of the canary weight (0..100) with the step, phase,
/// success rate, failed checks and the latest halt reason; every event is also printed above
/// the bar so the history stays on screen.
pub struct ProgressView {
    bar: ProgressBar,
    step_weight: Option<u32>,
    max_weight: u32,
    max_failed_checks: Option<u32>,
    halts: u32,
}

impl Default for ProgressView {
    fn default() -> Self {
        let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stdout());
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:.bold} [{bar:30.cyan/blue}] {pos:>3}%  {wide_msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(250));
        Self {
            bar,
            step_weight: None,
            max_weight: 100,
            max_failed_checks: None,
            halts: 0,
        }
    }
}

impl ProgressView {
    fn begin(&mut self, rollout: &Rollout) {
        if let Some(analysis) = &rollout.analysis {
            self.step_weight = analysis.step_weight.filter(|s| *s > 0);
            self.max_weight = analysis.max_weight.unwrap_or(100).max(1);
            self.max_failed_checks = analysis.max_failed_checks;
        }
        self.bar.set_prefix(format!(
            "{} {}/{}",
            rollout.id, rollout.namespace, rollout.target
        ));
        self.bar
            .set_position(bar_position(rollout.phase(), rollout.canary_weight));
        self.bar.set_message(phase_name(rollout.phase()));
    }

    fn event(&mut self, event: &RolloutEvent) {
        self.bar.println(event_line(event));
        if event.r#type() == EventType::Halted {
            self.halts += 1;
        }
        self.bar
            .set_position(bar_position(event.phase(), event.canary_weight));
        self.bar.set_message(self.status(event));
    }

    fn status(&self, event: &RolloutEvent) -> String {
        let mut parts = Vec::new();
        if let Some(step) = self.step_weight {
            let total = self.max_weight.div_ceil(step);
            let weight =
                u32::try_from(bar_position(event.phase(), event.canary_weight)).unwrap_or(100);
            let current = weight.div_ceil(step).min(total);
            parts.push(format!("step {current}/{total}"));
        }
        parts.push(phase_name(event.phase()).to_string());
        if let Some(rate) = event.success_rate {
            parts.push(format!("success {}", percent(rate)));
        }
        let failed = match self.max_failed_checks {
            Some(max) => format!("failed {}/{max}", event.failed_checks),
            None => format!("failed {}", event.failed_checks),
        };
        parts.push(failed);
        if self.halts > 0 {
            parts.push(format!("halts {}", self.halts));
        }
        if matches!(event.r#type(), EventType::Halted | EventType::Paused)
            && !event.message.is_empty()
        {
            parts.push(event.message.clone());
        }
        parts.join(" · ")
    }

    fn finish(&mut self, outcome: &Outcome) {
        if outcome.succeeded() {
            self.bar.finish_with_message(outcome_line(outcome));
        } else {
            // Leave the bar where the canary got to, not at a misleading 100%.
            self.bar.abandon_with_message(outcome_line(outcome));
        }
    }
}

/// Where the bar stands: the canary weight while it is analysed; full once promotion starts,
/// although the canary's own weight then falls back to zero as GA takes over its template.
fn bar_position(phase: Phase, canary_weight: u32) -> u64 {
    match phase {
        Phase::Promoting | Phase::Succeeded => 100,
        _ => u64::from(canary_weight.min(100)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_info_lists_each_fact_on_its_own_line_and_says_when_nobody_leads() {
        let mut info = steerer_client::proto::ServerInfo {
            version: "0.1.0".into(),
            commit: "abc1234".into(),
            leader: "steerer-0 at 10.0.0.7:50051".into(),
            route_kinds: vec!["VirtualService".into(), "HTTPRoute".into()],
            observers: vec!["istio".into()],
            auth: "kubernetes".into(),
        };
        assert_eq!(
            server_info(&info),
            "server  0.1.0 (commit abc1234)\n  leader       steerer-0 at 10.0.0.7:50051\n  route kinds  VirtualService, HTTPRoute\n  observers    istio\n  auth         kubernetes\n"
        );
        info.leader.clear();
        info.route_kinds.clear();
        let text = server_info(&info);
        assert!(
            text.contains("leader       none (an election is under way)"),
            "{text}"
        );
        assert!(text.contains("route kinds  none"), "{text}");
        assert!(client_version().starts_with(&format!("client  {}", env!("CARGO_PKG_VERSION"))));
    }

    fn event() -> RolloutEvent {
        RolloutEvent {
            rollout_id: "r-1".into(),
            sequence: 3,
            time: Some(prost_types::Timestamp {
                seconds: 1_795_687_201,
                nanos: 0,
            }),
            r#type: EventType::WeightChanged as i32,
            phase: Phase::Progressing as i32,
            canary_weight: 20,
            success_rate: Some(99.94),
            request_rate: Some(12.5),
            failed_checks: 0,
            message: "weight 10% -> 20%".into(),
            ..Default::default()
        }
    }

    #[test]
    fn enum_names_drop_their_prefix() {
        assert_eq!(phase_name(Phase::RolledBack), "ROLLED_BACK");
        assert_eq!(event_type_name(EventType::WeightChanged), "WEIGHT_CHANGED");
        assert_eq!(event_type_name(EventType::CheckNoData), "CHECK_NO_DATA");
    }

    #[test]
    fn an_event_line_is_timestamped_and_carries_the_numbers() {
        assert_eq!(
            event_line(&event()),
            "2026-11-26T10:00:01Z  WEIGHT_CHANGED  weight=20  success=99.9%  rate=12.5/s  \
             failed=0  phase=PROGRESSING  weight 10% -> 20%"
        );
    }

    #[test]
    fn a_check_event_line_shows_the_latency_when_the_rollout_checks_it() {
        let failed = RolloutEvent {
            r#type: EventType::CheckFailed as i32,
            success_rate: Some(100.0),
            latency_p99_ms: Some(936.24),
            failed_metrics: vec!["latency_p99_ms".into()],
            failed_checks: 1,
            message: "check failed".into(),
            ..event()
        };
        assert_eq!(
            event_line(&failed),
            "2026-11-26T10:00:01Z  CHECK_FAILED  weight=20  success=100.0%  p99=936.2ms  \
             rate=12.5/s  failed=1  phase=PROGRESSING  check failed"
        );
        let value = serde_json::to_value(JsonEvent::from(&failed)).unwrap();
        assert_eq!(value["latency_p99_ms"], 936.24);
        assert_eq!(value["failed_metrics"][0], "latency_p99_ms");
    }

    fn result(kind: CheckKind, name: &str, value: Option<f64>, passed: bool) -> CheckResult {
        CheckResult {
            name: name.into(),
            kind: kind as i32,
            value,
            passed,
            ..Default::default()
        }
    }

    #[test]
    fn checks_against_a_baseline_show_both_sides_the_interval_and_p() {
        let phrase = "errors 2.9% vs 0.0% baseline (+2.9 pts, 99% CI +1.8..+4.6, p<0.0001) FAILED";
        let errors = CheckResult {
            baseline_value: Some(0.0),
            p_value: Some(1e-6),
            effect: Some(2.9),
            effect_low: Some(1.8),
            effect_high: Some(4.6),
            query: "increase(x[60s])".into(),
            detail: phrase.into(),
            ..result(CheckKind::SuccessRate, "error_rate", Some(2.9), false)
        };
        assert_eq!(check_line(&errors), format!("error_rate: {phrase}"));
        assert_eq!(
            checks_field(std::slice::from_ref(&errors)),
            "checks=[error_rate 2.9% vs 0.0% FAILED]"
        );
        let json = serde_json::to_value(JsonCheck::from(&errors)).unwrap();
        assert_eq!(json["baseline_value"], 0.0);
        assert_eq!(json["effect_low"], 1.8);
        assert_eq!(json["query"], "increase(x[60s])");
        // A check without a baseline carries none of those fields.
        let plain = JsonCheck::from(&result(
            CheckKind::SuccessRate,
            "success_rate",
            Some(99.0),
            true,
        ));
        let plain = serde_json::to_value(plain).unwrap();
        assert!(plain.get("p_value").is_none() && plain.get("query").is_none());
    }

    #[test]
    fn check_events_show_every_value_with_its_verdict_in_lines_and_json() {
        let failed = RolloutEvent {
            r#type: EventType::CheckFailed as i32,
            failed_metrics: vec!["error-ratio".into(), "smoke".into()],
            checks: vec![
                CheckResult {
                    min: Some(95.0),
                    ..result(CheckKind::SuccessRate, "success_rate", Some(99.94), true)
                },
                CheckResult {
                    max: Some(0.01),
                    detail: "metric error-ratio 0.2 above max 0.01".into(),
                    ..result(CheckKind::Metric, "error-ratio", Some(0.2), false)
                },
                CheckResult {
                    detail: "no data for metric queue".into(),
                    ..result(CheckKind::Metric, "queue", None, false)
                },
                CheckResult {
                    detail: "HTTP 500".into(),
                    ..result(CheckKind::Webhook, "smoke", None, false)
                },
            ],
            message: "check failed".into(),
            ..event()
        };
        let line = event_line(&failed);
        assert!(
            line.contains(
                "checks=[success_rate 99.9% ok, error-ratio 0.2 FAILED, queue no-data, smoke HTTP 500 FAILED]  check failed"
            ),
            "{line}"
        );
        let value = serde_json::to_value(JsonEvent::from(&failed)).unwrap();
        assert_eq!(value["checks"][1]["name"], "error-ratio");
        assert_eq!(value["checks"][1]["kind"], "METRIC");
        assert_eq!(value["checks"][1]["max"], 0.01);
        assert_eq!(value["checks"][1]["passed"], false);
        assert_eq!(value["checks"][3]["detail"], "HTTP 500");
        assert_eq!(value["failed_metrics"][1], "smoke");
        // Events without checks say nothing of them.
        assert!(!event_line(&event()).contains("checks="));
    }

    #[test]
    fn get_lists_each_check_and_what_the_rollout_waits_for() {
        let rollout = Rollout {
            id: "r-1".into(),
            namespace: "shop".into(),
            target: "checkout".into(),
            phase: Phase::Progressing as i32,
            waiting_for: "approval: call PromoteRollout".into(),
            analysis: Some(Analysis {
                metrics: vec![steerer_client::proto::MetricCheck {
                    template: "request-rate".into(),
                    min: Some(1.0),
                    max: None,
                }],
                webhooks: vec![steerer_client::proto::Webhook {
                    name: "gate".into(),
                    r#type: WebhookType::ConfirmPromotion as i32,
                    url: "http://hooks.example/gate".into(),
                    ..Default::default()
                }],
                require_approval: true,
                ..Default::default()
            }),
            last_analysis: Some(AnalysisResult {
                success_rate: Some(100.0),
                checks: vec![
                    CheckResult {
                        min: Some(1.0),
                        ..result(CheckKind::Metric, "request-rate", Some(12.5), true)
                    },
                    CheckResult {
                        detail: "HTTP 200".into(),
                        ..result(CheckKind::Webhook, "gate", None, true)
                    },
                    CheckResult {
                        max: Some(200.0),
                        detail: "no canary latency in the metrics".into(),
                        ..result(CheckKind::Latency, "latency_p99_ms", None, false)
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = rollout_details(&rollout);
        for expected in [
            "request-rate >= 1, promotion needs approval",
            "webhook:        gate (confirm-promotion) http://hooks.example/gate",
            "  request-rate: 12.5 (min 1) passed",
            "  gate: passed (HTTP 200)",
            "  latency_p99_ms: (max 200) no data (no canary latency in the metrics)",
            "waiting for:    approval: call PromoteRollout (steerer promote r-1)",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
        let value = serde_json::to_value(JsonRollout::from(&rollout)).unwrap();
        assert_eq!(value["waiting_for"], "approval: call PromoteRollout");
        assert_eq!(value["analysis"]["require_approval"], true);
        assert_eq!(
            value["analysis"]["webhooks"][0]["type"],
            "CONFIRM_PROMOTION"
        );
        assert_eq!(value["last_analysis"]["checks"][0]["value"], 12.5);
    }

    #[test]
    fn a_success_rate_just_under_100_is_not_shown_as_100() {
        assert_eq!(percent(99.96), "99.9%");
        assert_eq!(percent(100.0), "100.0%");
    }

    #[test]
    fn json_events_use_snake_case_fields_and_bare_enum_names() {
        let value = serde_json::to_value(JsonEvent::from(&event())).unwrap();
        assert_eq!(value["kind"], "event");
        assert_eq!(value["type"], "WEIGHT_CHANGED");
        assert_eq!(value["phase"], "PROGRESSING");
        assert_eq!(value["canary_weight"], 20);
        assert_eq!(value["sequence"], 3);
        assert_eq!(value["time"], "2026-11-26T10:00:01Z");
        assert_eq!(value["success_rate"], 99.94);
    }

    #[test]
    fn json_rollouts_carry_settings_in_seconds() {
        let rollout = Rollout {
            id: "r-1".into(),
            namespace: "shop".into(),
            target: "checkout".into(),
            phase: Phase::Succeeded as i32,
            analysis: Some(Analysis {
                step_weight: Some(10),
                interval: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 500_000_000,
                }),
                ..Default::default()
            }),
            images: [("app".to_string(), "img:2".to_string())].into(),
            ..Default::default()
        };
        let value = serde_json::to_value(JsonRollout::from(&rollout)).unwrap();
        assert_eq!(value["kind"], "rollout");
        assert_eq!(value["phase"], "SUCCEEDED");
        assert_eq!(value["analysis"]["interval_seconds"], 1.5);
        assert_eq!(value["images"]["app"], "img:2");
        assert!(value["finished_at"].is_null());
    }

    #[test]
    fn the_table_aligns_columns() {
        let rollouts = [
            Rollout {
                id: "r-1".into(),
                namespace: "shop".into(),
                target: "checkout".into(),
                phase: Phase::Progressing as i32,
                canary_weight: 30,
                ..Default::default()
            },
            Rollout {
                id: "r-20".into(),
                namespace: "shop".into(),
                target: "cart".into(),
                phase: Phase::Succeeded as i32,
                ..Default::default()
            },
        ];
        let table = rollout_table(&rollouts);
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        let column = lines[0].find("PHASE").unwrap();
        assert_eq!(lines[1].find("PROGRESSING"), Some(column));
        assert_eq!(lines[2].find("SUCCEEDED"), Some(column));
    }

    #[test]
    fn the_bar_is_full_once_promotion_starts() {
        assert_eq!(bar_position(Phase::Progressing, 30), 30);
        assert_eq!(bar_position(Phase::Promoting, 0), 100);
        assert_eq!(bar_position(Phase::Succeeded, 0), 100);
        assert_eq!(bar_position(Phase::RolledBack, 0), 0);
    }

    #[test]
    fn the_progress_status_counts_steps_and_halts() {
        let mut view = ProgressView {
            bar: ProgressBar::hidden(),
            step_weight: Some(10),
            max_weight: 50,
            max_failed_checks: Some(5),
            halts: 0,
        };
        let mut halted = event();
        halted.r#type = EventType::Halted as i32;
        halted.message = "canary has unhealthy pods".into();
        view.event(&halted);
        let status = view.status(&halted);
        assert!(status.starts_with("step 2/5 · PROGRESSING"), "{status}");
        assert!(status.contains("failed 0/5"), "{status}");
        assert!(status.contains("halts 1"), "{status}");
        assert!(status.ends_with("canary has unhealthy pods"), "{status}");
    }

    #[test]
    fn get_shows_the_route_as_kubectl_names_it_also_from_a_server_without_route_kinds() {
        let with_route = Rollout {
            id: "r1".into(),
            virtual_service: "checkout".into(),
            route: Some(steerer_client::proto::RouteRef {
                kind: "VirtualService".into(),
                name: "checkout".into(),
            }),
            ..Default::default()
        };
        assert!(
            rollout_details(&with_route).contains("route:          virtualservice/checkout\n"),
            "{}",
            rollout_details(&with_route)
        );
        let older = Rollout {
            route: None,
            ..with_route
        };
        assert_eq!(route(&older), "virtualservice/checkout");
        assert_eq!(JsonRollout::from(&older).route, "virtualservice/checkout");
        assert_eq!(route(&Rollout::default()), "");
        let grpc = Rollout {
            id: "r1".into(),
            namespace: "shop".into(),
            target: "cart".into(),
            route: Some(steerer_client::proto::RouteRef {
                kind: "GRPCRoute".into(),
                name: "cart".into(),
            }),
            ..Rollout::default()
        };
        assert!(
            rollout_summary("started", &grpc)
                .starts_with("started rollout r1 of shop/cart via grpcroute/cart: "),
            "{}",
            rollout_summary("started", &grpc)
        );
    }

    #[test]
    fn get_shows_the_observer_and_leaves_it_out_when_the_server_sends_none() {
        let linkerd = Rollout {
            id: "r1".into(),
            observer: "linkerd".into(),
            ..Default::default()
        };
        assert!(
            rollout_details(&linkerd).contains("observer:       linkerd\n"),
            "{}",
            rollout_details(&linkerd)
        );
        assert_eq!(JsonRollout::from(&linkerd).observer, "linkerd");
        assert!(!rollout_details(&Rollout::default()).contains("observer:"));
    }
}
