//! The command line: clap definitions and the value parsers that reject bad names, images,
//! percentages and durations before anything is sent.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use steerer::names::LabelProblem;

/// Exit codes, shown under `--help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  the rollout was promoted, or the command succeeded
  1  the rollout ended rolled back, aborted or failed; or the server refused the operation
     in the rollout's current state (ALREADY_EXISTS, FAILED_PRECONDITION) or failed internally
  2  invalid usage (bad flags, bad names, unreadable files) or INVALID_ARGUMENT from the server
  3  the server is unreachable, UNAVAILABLE, or did not answer in time
  4  NOT_FOUND, UNAUTHENTICATED or PERMISSION_DENIED

`start --wait` and `watch` follow the rollout to its end and exit 0 only if it was promoted,
which makes either one a CI gate. A watch survives server restarts: it reconnects and resumes
after the last event it printed. STEERER_LOG=debug prints the client's own logs on stderr.";

/// Start, follow and steer canary rollouts of Kubernetes Deployments on a steerer server.
#[derive(Debug, Parser)]
#[command(name = "steerer", version = crate::cli::VERSION, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Server address (http://HOST:PORT, https://HOST:PORT or HOST:PORT).
    #[arg(
        long,
        global = true,
        env = "STEERER_SERVER",
        hide_env_values = true,
        default_value = steerer_client::DEFAULT_ENDPOINT
    )]
    pub server: String,

    /// Bearer token sent with every call.
    #[arg(
        long,
        global = true,
        env = "STEERER_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// File holding the bearer token (surrounding whitespace ignored).
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// CA certificate (PEM) to verify the server with; needs an https:// server.
    #[arg(long, global = true, value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS; needs --client-key.
    #[arg(long, global = true, value_name = "PATH", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// Client private key (PEM) for mutual TLS; needs --client-cert.
    #[arg(long, global = true, value_name = "PATH", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// Name to verify the server's certificate against, instead of the host in --server.
    #[arg(long, global = true, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Output: `text` (a progress bar on a terminal, timestamped lines otherwise) or `json`
    /// (one JSON object per line).
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// How long each call may take (for example 10s, 1m). Watching is not limited.
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        value_parser = parse_duration,
        default_value = "30s"
    )]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a canary rollout of NAMESPACE/TARGET (the GA Deployment).
    #[command(after_help = EXIT_CODES)]
    Start(Box<StartArgs>),
    /// Follow a rollout's events until it ends; exits 0 only if it was promoted.
    #[command(after_help = EXIT_CODES)]
    Watch(WatchArgs),
    /// Show one rollout.
    #[command(after_help = EXIT_CODES)]
    Get(IdArgs),
    /// List rollouts, newest first.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Abort a rollout: all traffic back on GA, the canary scaled down.
    #[command(after_help = EXIT_CODES)]
    Abort(ReasonArgs),
    /// Hold a rollout at its current weight.
    #[command(after_help = EXIT_CODES)]
    Pause(ReasonArgs),
    /// Continue a paused rollout.
    #[command(after_help = EXIT_CODES)]
    Resume(IdArgs),
    /// Skip the remaining analysis and promote the canary now.
    #[command(after_help = EXIT_CODES)]
    Promote(IdArgs),
    /// Show this client's version and the server's (version, commit, leader, route kinds,
    /// observers, authentication); exits 3 when the server cannot be reached.
    #[command(after_help = EXIT_CODES)]
    Version,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The GA Deployment, as NAMESPACE/NAME.
    #[arg(value_name = "NAMESPACE/TARGET", value_parser = parse_target)]
    pub target: Target,

    /// Canary Deployment (default: TARGET-canary).
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub canary: Option<String>,

    /// VirtualService that splits the traffic (the same as --route virtualservice/NAME).
    #[arg(long, value_name = "NAME", value_parser = parse_name, conflicts_with = "route")]
    pub virtual_service: Option<String>,

    /// The route that splits the traffic: virtualservice/NAME, httproute/NAME or
    /// grpcroute/NAME (default: the one route in the namespace sending traffic to both TARGET's
    /// and the canary's Services).
    #[arg(long, value_name = "KIND/NAME", value_parser = parse_route)]
    pub route: Option<RouteArg>,

    /// Whose series judge the canary: istio or linkerd (default: the server's --observer).
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub observer: Option<String>,

    /// Set a canary container's image before the analysis starts; repeatable.
    #[arg(long = "image", value_name = "CONTAINER=IMAGE", value_parser = parse_image)]
    pub images: Vec<(String, String)>,

    /// How traffic reaches the canary: canary (weight steps), ab (requests matching --match
    /// go to the canary) or blue-green (no live traffic until --iterations checks pass, then
    /// all of it). Default: canary.
    #[arg(long, value_name = "STRATEGY", value_enum)]
    pub strategy: Option<StrategyArg>,

    /// With --strategy ab, requests sent to the canary: header:NAME=VALUE, cookie:NAME=VALUE,
    /// NAME=~REGEX (RE2) or NAME^=PREFIX in place of NAME=VALUE; repeatable (any one matching
    /// is enough).
    #[arg(long = "match", value_name = "header|cookie:NAME=VALUE", value_parser = parse_match)]
    pub matches: Vec<steerer::v1::RequestMatch>,

    /// Passed checks before promotion with --strategy ab or blue-green, 1..=1000 (server
    /// default 10).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub iterations: Option<u32>,

    /// Percent of GA's requests also sent to the canary (answers discarded), 1..=100; with
    /// the canary and blue-green strategies.
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub mirror_weight: Option<u32>,

    /// Sticky canary: each client keeps reaching the version that first answered it, through
    /// cookie COOKIE (lasting MAX_AGE, e.g. 1h; default: the browser session).
    #[arg(long, value_name = "COOKIE[:MAX_AGE]", value_parser = parse_sticky)]
    pub sticky: Option<StickyArg>,

    /// Canary weight added per step, 1..=100 (server default 10).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub step_weight: Option<u32>,

    /// Weight at which the canary is promoted, 1..=100 (server default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_weight: Option<u32>,

    /// Time between analysis checks and weight steps, e.g. 30s, 1m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Minimum canary success rate in percent, 0..=100 (server default 99).
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub threshold: Option<f64>,

    /// Failed checks that roll the rollout back (server default 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failed_checks: Option<u32>,

    /// Longest time the rollout may stay halted before it is rolled back, e.g. 10m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub progress_deadline: Option<Duration>,

    /// Canary requests per second below which a check has no data (server default 1).
    #[arg(long, value_name = "RPS", value_parser = parse_rate)]
    pub min_request_rate: Option<f64>,

    /// Ceiling for the canary's p99 request duration in milliseconds (default: not checked).
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    pub max_latency_p99_ms: Option<f64>,

    /// Check an operator-defined metric template: TEMPLATE:MIN..MAX, either bound may be left
    /// out (request-rate:1.. , error-ratio:..0.01); repeatable.
    #[arg(long = "metric", value_name = "TEMPLATE:MIN..MAX", value_parser = parse_metric)]
    pub metrics: Vec<MetricArg>,

    /// Call a webhook: NAME=TYPE:URL, TYPE one of confirm-rollout, pre-rollout, rollout,
    /// confirm-promotion, post-rollout, rollback; repeatable. The server must allow the host.
    #[arg(long = "webhook", value_name = "NAME=TYPE:URL", value_parser = parse_webhook)]
    pub webhooks: Vec<WebhookArg>,

    /// How long every webhook has to answer (server default 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub webhook_timeout: Option<Duration>,

    /// Metadata sent in a webhook's body: NAME:KEY=VALUE; repeatable.
    #[arg(long = "webhook-metadata", value_name = "NAME:KEY=VALUE", value_parser = parse_webhook_metadata)]
    pub webhook_metadata: Vec<(String, String, String)>,

    /// Hold at the maximum weight (checks go on) until `steerer promote ID`.
    #[arg(long)]
    pub require_approval: bool,

    /// Judge the canary against a baseline running the old version at the same time: `ga`
    /// (GA's own pods; needs --max-weight below 100). --threshold and --max-latency-p99-ms
    /// then stay as guard rails only when given.
    #[arg(long, value_enum, value_name = "MODE")]
    pub baseline: Option<BaselineArg>,

    /// How sure the baseline judge must be before it fails a canary, e.g. 0.99 or 99%:
    /// identical versions are rolled back in at most 1 - confidence of rollouts (default 0.99).
    #[arg(long, value_name = "LEVEL", value_parser = parse_confidence, requires = "baseline")]
    pub confidence: Option<f64>,

    /// Percentage points of error rate above the baseline's tolerated (default 0.5).
    #[arg(long, value_name = "POINTS", value_parser = parse_percent, requires = "baseline")]
    pub max_error_increase: Option<f64>,

    /// Relative slowdown against the baseline tolerated, e.g. 0.2 or 20% (default 0.2).
    #[arg(long, value_name = "FRACTION", value_parser = parse_relative, requires = "baseline")]
    pub max_latency_increase: Option<f64>,

    /// Replicas for a canary that sits at zero (default: GA's replica count).
    #[arg(long, value_name = "N")]
    pub canary_replicas: Option<u32>,

    /// Idempotency key: starting again with the same key returns the same rollout.
    #[arg(long, value_name = "KEY")]
    pub request_id: Option<String>,

    /// Follow the rollout to its end; exit 0 only if it was promoted.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Rollout id.
    #[arg(value_parser = parse_id)]
    pub id: String,

    /// First event to show (1 = the first; default: all).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub from_sequence: u64,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// Rollout id.
    #[arg(value_parser = parse_id)]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ReasonArgs {
    /// Rollout id.
    #[arg(value_parser = parse_id)]
    pub id: String,

    /// Why, recorded on the rollout.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only rollouts in this namespace.
    #[arg(short, long, value_name = "NAMESPACE", value_parser = parse_name)]
    pub namespace: Option<String>,

    /// Only rollouts that have not ended.
    #[arg(long)]
    pub active: bool,

    /// Only rollouts of this GA Deployment.
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub target: Option<String>,

    /// Only rollouts in this phase; repeat for several.
    #[arg(long = "phase", value_name = "PHASE", value_parser = parse_phase)]
    pub phases: Vec<i32>,

    /// At most this many rollouts (0 = all, page after page).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub limit: usize,

    /// Rollouts asked for per call (1 to 1000; 0 = the server's default).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub page_size: u32,
}

/// A phase name as the CLI prints it (`rolled-back`, `ROLLED_BACK` and `PHASE_ROLLED_BACK`
/// are accepted).
pub fn parse_phase(value: &str) -> Result<i32, String> {
    let name = value.trim().to_ascii_uppercase().replace(['-', ' '], "_");
    let name = name.strip_prefix("PHASE_").unwrap_or(&name).to_owned();
    steerer::v1::Phase::from_str_name(&format!("PHASE_{name}"))
        .filter(|p| *p != steerer::v1::Phase::Unspecified)
        .map(|p| p as i32)
        .ok_or_else(|| {
            format!(
                "unknown phase {value:?}: one of pending, progressing, paused, promoting, succeeded, rolling-back, rolled-back, aborted, failed"
            )
        })
}

/// A GA Deployment: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
}

/// Why `name` is not a DNS-1123 label (what Kubernetes requires of namespaces, Services and,
/// here, Deployments), or `None` when it is one.
pub fn dns1123_label_problem(name: &str) -> Option<String> {
    let problem = steerer::names::dns1123_label(name).err()?;
    Some(match problem {
        LabelProblem::Empty => "must not be empty".into(),
        LabelProblem::TooLong => format!("is {} characters long; the limit is 63", name.len()),
        LabelProblem::BadChar(bad) => {
            format!("contains {bad:?}; only lower-case letters, digits and '-' are allowed")
        }
        LabelProblem::BadEnds => "must start and end with a letter or digit".into(),
    })
}

pub fn parse_name(value: &str) -> Result<String, String> {
    match dns1123_label_problem(value) {
        None => Ok(value.to_string()),
        Some(problem) => Err(format!("{value:?} is not a valid name: it {problem}")),
    }
}

/// A route named on the command line: its kind as the API spells it, and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteArg {
    pub kind: &'static str,
    pub name: String,
}

/// The route kinds `--route` takes, as the API spells them.
const ROUTE_KINDS: [&str; 3] = ["VirtualService", "HTTPRoute", "GRPCRoute"];

pub fn parse_route(value: &str) -> Result<RouteArg, String> {
    let kinds = || {
        ROUTE_KINDS
            .map(|k| format!("{}/NAME", k.to_ascii_lowercase()))
            .join(", ")
    };
    let Some((kind, name)) = value.split_once('/') else {
        return Err(format!("expected KIND/NAME ({}), got {value:?}", kinds()));
    };
    let Some(kind) = ROUTE_KINDS
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(kind))
    else {
        return Err(format!(
            "route kind {kind:?} is not supported (use {})",
            kinds()
        ));
    };
    Ok(RouteArg {
        kind,
        name: parse_name(name)?,
    })
}

pub fn parse_target(value: &str) -> Result<Target, String> {
    let Some((namespace, name)) = value.split_once('/') else {
        return Err(format!(
            "expected NAMESPACE/TARGET (for example shop/checkout), got {value:?}"
        ));
    };
    if let Some(problem) = dns1123_label_problem(namespace) {
        return Err(format!(
            "namespace {namespace:?} is not valid: it {problem}"
        ));
    }
    if let Some(problem) = dns1123_label_problem(name) {
        return Err(format!("target {name:?} is not valid: it {problem}"));
    }
    Ok(Target {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

pub fn parse_image(value: &str) -> Result<(String, String), String> {
    let Some((container, image)) = value.split_once('=') else {
        return Err(format!(
            "expected CONTAINER=IMAGE (for example app=registry.example/app:1.2), got {value:?}"
        ));
    };
    if let Some(problem) = dns1123_label_problem(container) {
        return Err(format!(
            "container name {container:?} is not valid: it {problem}"
        ));
    }
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return Err(format!(
            "image {image:?} for container {container:?} must be non-empty and without spaces"
        ));
    }
    Ok((container.to_string(), image.to_string()))
}

pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value.trim())
        .map_err(|e| format!("{value:?} is not a duration like 30s, 5m or 1h30m: {e}"))?;
    if duration.is_zero() {
        return Err("the duration must be longer than zero".into());
    }
    Ok(duration)
}

/// `--strategy`: how traffic reaches the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    Canary,
    Ab,
    BlueGreen,
}

impl StrategyArg {
    /// The protocol's value.
    pub fn proto(self) -> steerer::v1::Strategy {
        match self {
            StrategyArg::Canary => steerer::v1::Strategy::Canary,
            StrategyArg::Ab => steerer::v1::Strategy::AbTest,
            StrategyArg::BlueGreen => steerer::v1::Strategy::BlueGreen,
        }
    }
}

/// `--sticky COOKIE[:MAX_AGE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyArg {
    pub cookie: String,
    pub max_age: Option<Duration>,
}

/// Whether `name` is an RFC 7230 token, what header and cookie names must be.
fn http_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// `--match`: `header:NAME=VALUE` or `cookie:NAME=VALUE`, with `=~REGEX` or `^=PREFIX` in
/// place of `=VALUE`. The first `=` ends the name: a name cannot end in `^`, and an exact
/// value cannot start with `~` (match it with a regex). The server checks the rest (lengths,
/// RE2 syntax, cookie characters).
pub fn parse_match(value: &str) -> Result<steerer::v1::RequestMatch, String> {
    let usage = || {
        format!(
            "{value:?} is not header:NAME=VALUE or cookie:NAME=VALUE (or NAME=~REGEX, NAME^=PREFIX)"
        )
    };
    let (kind, rest) = value.split_once(':').ok_or_else(usage)?;
    let (name, operand) = rest.split_once('=').ok_or_else(usage)?;
    let mut m = steerer::v1::RequestMatch::default();
    let name = if let Some(name) = name.strip_suffix('^') {
        m.prefix = operand.to_owned();
        name
    } else if let Some(regex) = operand.strip_prefix('~') {
        m.regex = regex.to_owned();
        name
    } else {
        m.exact = operand.to_owned();
        name
    };
    if !http_token(name) {
        return Err(format!(
            "{name:?} in {value:?} is not a header or cookie name (an RFC 7230 token)"
        ));
    }
    if m.exact.is_empty() && m.prefix.is_empty() && m.regex.is_empty() {
        return Err(format!("{value:?} compares {name} with nothing"));
    }
    match kind.to_ascii_lowercase().as_str() {
        "header" => m.header = name.to_owned(),
        "cookie" => m.cookie = name.to_owned(),
        _ => return Err(usage()),
    }
    Ok(m)
}

/// `--sticky COOKIE[:MAX_AGE]`.
pub fn parse_sticky(value: &str) -> Result<StickyArg, String> {
    let (cookie, max_age) = match value.split_once(':') {
        Some((cookie, age)) => (cookie, Some(parse_duration(age)?)),
        None => (value, None),
    };
    if !http_token(cookie) {
        return Err(format!(
            "{cookie:?} is not a cookie name (an RFC 7230 token); expected COOKIE[:MAX_AGE]"
        ));
    }
    Ok(StickyArg {
        cookie: cookie.to_owned(),
        max_age,
    })
}

pub fn parse_percent(value: &str) -> Result<f64, String> {
    let number = value.trim().trim_end_matches('%');
    let pct: f64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a percentage like 99 or 99.5"))?;
    if !pct.is_finite() || !(0.0..=100.0).contains(&pct) {
        return Err(format!("{value:?} is outside 0..=100"));
    }
    Ok(pct)
}

/// Which baseline the canary is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BaselineArg {
    /// GA's own pods, over the same window.
    Ga,
    /// A TARGET-baseline Deployment from GA's template (where the server offers it).
    Deployment,
}

/// A confidence level strictly between 0 and 1: `0.99`, or a percentage `99%`.
pub fn parse_confidence(value: &str) -> Result<f64, String> {
    let text = value.trim();
    let level = match text.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("{value:?} is not a confidence like 0.99 or 99%"))?;
    if !(level.is_finite() && level > 0.0 && level < 1.0) {
        return Err(format!(
            "{value:?} must lie strictly between 0 and 1 (0% and 100%)"
        ));
    }
    Ok(level)
}

/// A relative change: `0.2`, or a percentage `20%`; 0..=10.
pub fn parse_relative(value: &str) -> Result<f64, String> {
    let text = value.trim();
    let relative = match text.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("{value:?} is not a fraction like 0.2 or 20%"))?;
    if !(relative.is_finite() && (0.0..=10.0).contains(&relative)) {
        return Err(format!("{value:?} must lie between 0 and 10 (1000%)"));
    }
    Ok(relative)
}

pub fn parse_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number of requests per second"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!("{value:?} must be zero or more"));
    }
    Ok(rate)
}

pub fn parse_millis(value: &str) -> Result<f64, String> {
    let ms: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number of milliseconds"))?;
    if !ms.is_finite() || ms <= 0.0 {
        return Err(format!("{value:?} must be more than zero"));
    }
    Ok(ms)
}

/// A metric check from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricArg {
    pub template: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// A webhook from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookArg {
    pub name: String,
    pub kind: steerer::v1::WebhookType,
    pub url: String,
}

/// `TEMPLATE:MIN..MAX`, either bound optional but not both.
pub fn parse_metric(value: &str) -> Result<MetricArg, String> {
    let usage = || {
        format!(
            "expected TEMPLATE:MIN..MAX with at least one bound (request-rate:1.. or error-ratio:..0.01), got {value:?}"
        )
    };
    let (template, range) = value.split_once(':').ok_or_else(usage)?;
    if let Some(problem) = dns1123_label_problem(template) {
        return Err(format!(
            "template name {template:?} is not valid: it {problem}"
        ));
    }
    let (min, max) = range.split_once("..").ok_or_else(usage)?;
    let bound = |text: &str| -> Result<Option<f64>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(format!("{text:?} in {value:?} is not a finite number")),
        }
    };
    let (min, max) = (bound(min)?, bound(max)?);
    match (min, max) {
        (None, None) => Err(usage()),
        (Some(lo), Some(hi)) if lo > hi => Err(format!("{value:?}: MIN is above MAX")),
        _ => Ok(MetricArg {
            template: template.to_owned(),
            min,
            max,
        }),
    }
}

/// `NAME=TYPE:URL`.
pub fn parse_webhook(value: &str) -> Result<WebhookArg, String> {
    let usage = || {
        format!(
            "expected NAME=TYPE:URL (load-test=pre-rollout:http://loadtester.test/), got {value:?}"
        )
    };
    let (name, rest) = value.split_once('=').ok_or_else(usage)?;
    if let Some(problem) = dns1123_label_problem(name) {
        return Err(format!("webhook name {name:?} is not valid: it {problem}"));
    }
    let (kind, url) = rest.split_once(':').ok_or_else(usage)?;
    use steerer::v1::WebhookType;
    let kind = match kind.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "confirm-rollout" => WebhookType::ConfirmRollout,
        "pre-rollout" => WebhookType::PreRollout,
        "rollout" => WebhookType::Rollout,
        "confirm-promotion" => WebhookType::ConfirmPromotion,
        "post-rollout" => WebhookType::PostRollout,
        "rollback" => WebhookType::Rollback,
        other => {
            return Err(format!(
                "unknown webhook type {other:?}: one of confirm-rollout, pre-rollout, rollout, confirm-promotion, post-rollout, rollback"
            ));
        }
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "webhook {name}: {url:?} is not an http:// or https:// URL"
        ));
    }
    Ok(WebhookArg {
        name: name.to_owned(),
        kind,
        url: url.to_owned(),
    })
}

/// `NAME:KEY=VALUE`.
pub fn parse_webhook_metadata(value: &str) -> Result<(String, String, String), String> {
    let usage = || format!("expected NAME:KEY=VALUE (load-test:cmd=hey -z 1m), got {value:?}");
    let (name, entry) = value.split_once(':').ok_or_else(usage)?;
    let (key, val) = entry.split_once('=').ok_or_else(usage)?;
    if name.is_empty() || key.is_empty() {
        return Err(usage());
    }
    Ok((name.to_owned(), key.to_owned(), val.to_owned()))
}

pub fn parse_id(value: &str) -> Result<String, String> {
    let id = value.trim();
    if id.is_empty() {
        return Err("the rollout id must not be empty".into());
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{value:?} is not a rollout id"));
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_target_needs_a_namespace_and_a_valid_name() {
        assert_eq!(
            parse_target("shop/checkout"),
            Ok(Target {
                namespace: "shop".into(),
                name: "checkout".into()
            })
        );
        let err = parse_target("checkout").unwrap_err();
        assert!(err.contains("NAMESPACE/TARGET"), "{err}");
        let err = parse_target("shop/Bad_Name").unwrap_err();
        assert!(err.contains("\"Bad_Name\""), "{err}");
        assert!(parse_target("-shop/checkout").is_err());
        assert!(parse_target("shop/").is_err());
        assert!(parse_target("shop/a/b").is_err());
        assert!(parse_target(&format!("shop/{}", "a".repeat(64))).is_err());
    }

    #[test]
    fn a_route_is_kind_slash_name_in_any_letter_case() {
        assert_eq!(
            parse_route("httproute/cart"),
            Ok(RouteArg {
                kind: "HTTPRoute",
                name: "cart".into()
            })
        );
        assert_eq!(
            parse_route("GRPCRoute/cart").map(|r| r.kind),
            Ok("GRPCRoute")
        );
        assert_eq!(
            parse_route("virtualservice/cart").map(|r| r.kind),
            Ok("VirtualService")
        );
        let err = parse_route("ingress/cart").unwrap_err();
        assert!(err.contains("\"ingress\" is not supported"), "{err}");
        assert!(err.contains("grpcroute/NAME"), "{err}");
        assert!(parse_route("cart").unwrap_err().contains("KIND/NAME"));
        assert!(parse_route("httproute/Bad_Name").is_err());
    }

    #[test]
    fn route_and_virtual_service_flags_exclude_each_other() {
        let parsed = Cli::try_parse_from([
            "steerer",
            "start",
            "shop/cart",
            "--route",
            "httproute/cart",
            "--virtual-service",
            "cart",
        ]);
        assert!(parsed.is_err());
    }

    #[test]
    fn images_are_container_equals_image() {
        assert_eq!(
            parse_image("app=registry.example/app:1.2@sha256:ab"),
            Ok(("app".into(), "registry.example/app:1.2@sha256:ab".into()))
        );
        assert!(parse_image("registry.example/app:1.2").is_err());
        assert!(parse_image("app=").is_err());
        assert!(parse_image("App=x").is_err());
    }

    #[test]
    fn durations_percentages_and_rates_are_checked() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_percent("99.5"), Ok(99.5));
        assert_eq!(parse_percent("99%"), Ok(99.0));
        assert!(parse_percent("101").is_err());
        assert!(parse_percent("NaN").is_err());
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert!(parse_rate("-1").is_err());
        assert_eq!(parse_millis("200"), Ok(200.0));
        assert!(parse_millis("0").is_err());
        assert!(parse_millis("NaN").is_err());
    }

    #[test]
    fn start_parses_every_flag() {
        let cli = Cli::try_parse_from([
            "steerer",
            "start",
            "shop/checkout",
            "--canary",
            "checkout-next",
            "--virtual-service",
            "checkout",
            "--image",
            "app=img:2",
            "--image",
            "sidecar=side:1",
            "--step-weight",
            "20",
            "--max-weight",
            "60",
            "--interval",
            "1s",
            "--threshold",
            "99.5",
            "--max-failed-checks",
            "2",
            "--progress-deadline",
            "5m",
            "--min-request-rate",
            "0.5",
            "--canary-replicas",
            "3",
            "--request-id",
            "ci-42",
            "--wait",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        let Command::Start(start) = cli.command else {
            panic!("not start")
        };
        assert_eq!(start.target.name, "checkout");
        assert_eq!(start.images.len(), 2);
        assert_eq!(start.step_weight, Some(20));
        assert_eq!(start.interval, Some(Duration::from_secs(1)));
        assert_eq!(start.progress_deadline, Some(Duration::from_secs(300)));
        assert_eq!(start.threshold, Some(99.5));
        assert!(start.wait);
    }

    #[test]
    fn start_takes_an_observer_by_name() {
        let start = |extra: &[&str]| {
            let mut args = vec!["steerer", "start", "shop/checkout"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Start(start) => start.observer,
                _ => panic!("not start"),
            })
        };
        assert_eq!(
            start(&["--observer", "linkerd"]).unwrap().as_deref(),
            Some("linkerd")
        );
        assert_eq!(start(&[]).unwrap(), None);
        assert!(start(&["--observer", "Linkerd!"]).is_err());
    }

    #[test]
    fn metrics_take_a_template_and_one_or_two_bounds() {
        assert_eq!(
            parse_metric("request-rate:1.."),
            Ok(MetricArg {
                template: "request-rate".into(),
                min: Some(1.0),
                max: None
            })
        );
        assert_eq!(parse_metric("error-ratio:..0.01").unwrap().max, Some(0.01));
        assert_eq!(parse_metric("x:0.5..2").unwrap().min, Some(0.5));
        for bad in [
            "request-rate",
            "request-rate:..",
            "x:2..1",
            "X:1..",
            "x:a..",
            "x:1",
        ] {
            assert!(parse_metric(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn webhooks_take_a_name_a_type_and_a_url() {
        let hook = parse_webhook("load=pre-rollout:http://loadtester.test:8080/run").unwrap();
        assert_eq!(hook.name, "load");
        assert_eq!(hook.kind, steerer::v1::WebhookType::PreRollout);
        assert_eq!(hook.url, "http://loadtester.test:8080/run");
        assert_eq!(
            parse_webhook("gate=CONFIRM_PROMOTION:https://gate/")
                .unwrap()
                .kind,
            steerer::v1::WebhookType::ConfirmPromotion
        );
        for bad in [
            "load",
            "load=pre-rollout",
            "load=later:http://x/",
            "load=rollout:ftp://x/",
            "Load=rollout:http://x/",
        ] {
            assert!(parse_webhook(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_webhook_metadata("load:cmd=hey -z 1m"),
            Ok(("load".into(), "cmd".into(), "hey -z 1m".into()))
        );
        assert!(parse_webhook_metadata("load=cmd").is_err());
    }

    #[test]
    fn out_of_range_weights_and_unknown_flags_are_usage_errors() {
        for argv in [
            vec!["steerer", "start", "shop/checkout", "--step-weight", "0"],
            vec!["steerer", "start", "shop/checkout", "--max-weight", "101"],
            vec!["steerer", "start", "shop/checkout", "--bogus"],
            vec!["steerer", "start", "shop"],
            vec!["steerer", "list", "-n", "Bad_NS"],
            vec!["steerer", "get"],
        ] {
            let err = Cli::try_parse_from(&argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn matches_name_a_header_or_cookie_and_one_comparison() {
        let m = parse_match("header:x-cohort=beta").unwrap();
        assert_eq!((m.header.as_str(), m.exact.as_str()), ("x-cohort", "beta"));
        assert!(m.cookie.is_empty() && m.prefix.is_empty() && m.regex.is_empty());
        let m = parse_match("cookie:plan^=gold").unwrap();
        assert_eq!((m.cookie.as_str(), m.prefix.as_str()), ("plan", "gold"));
        assert!(m.exact.is_empty());
        let m = parse_match("Header:user-agent=~.*Mobile=.*").unwrap();
        assert_eq!(
            (m.header.as_str(), m.regex.as_str()),
            ("user-agent", ".*Mobile=.*")
        );
        for bad in [
            "x-cohort=beta",
            "query:x=1",
            "header:x-cohort",
            "header:=beta",
            "header:x cohort=beta",
            "header:x-cohort=",
            "header:x-cohort=~",
            "cookie:plan^=",
        ] {
            assert!(parse_match(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sticky_takes_a_cookie_and_an_optional_lifetime() {
        assert_eq!(
            parse_sticky("canary-user"),
            Ok(StickyArg {
                cookie: "canary-user".into(),
                max_age: None
            })
        );
        assert_eq!(
            parse_sticky("canary-user:1h").map(|s| s.max_age),
            Ok(Some(Duration::from_secs(3600)))
        );
        assert!(parse_sticky("bad cookie").is_err());
        assert!(parse_sticky("c:soon").is_err());
        assert!(parse_sticky(":1h").is_err());
    }

    #[test]
    fn start_takes_a_strategy_and_its_settings() {
        let cli = Cli::try_parse_from([
            "steerer",
            "start",
            "shop/checkout",
            "--strategy",
            "ab",
            "--match",
            "header:x-cohort=beta",
            "--match",
            "cookie:plan=gold",
            "--iterations",
            "5",
        ])
        .unwrap();
        let Command::Start(start) = cli.command else {
            panic!("not start")
        };
        assert_eq!(start.strategy, Some(StrategyArg::Ab));
        assert_eq!(start.matches.len(), 2);
        assert_eq!(start.iterations, Some(5));
        for argv in [
            vec!["--strategy", "linear"],
            vec!["--iterations", "0"],
            vec!["--iterations", "1001"],
            vec!["--mirror-weight", "0"],
            vec!["--mirror-weight", "101"],
        ] {
            let mut args = vec!["steerer", "start", "shop/checkout"];
            args.extend(argv.iter().copied());
            let err = Cli::try_parse_from(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn token_and_token_file_are_exclusive() {
        let err =
            Cli::try_parse_from(["steerer", "--token", "a", "--token-file", "/tmp/t", "list"])
                .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("3  the server is unreachable"), "{help}");
    }
}
