//! The `steerer` commands: turns parsed arguments into SDK calls, prints the results and
//! decides the exit code.

pub mod args;
pub mod exit;
pub mod output;

/// `--version`: the release and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("STEERER_COMMIT"),
    ")"
);

use std::io::IsTerminal;
use std::time::Duration;

use steerer_client::proto::{Analysis, ListRolloutsRequest, Rollout, StartRolloutRequest};
use steerer_client::{Client, ClientError};

use args::{BaselineArg, Cli, Command, GlobalArgs, OutputFormat, StartArgs};
use exit::{CliError, Exit};
use output::{JsonError, Printer};

/// Runs one command and returns the exit code to end with.
pub async fn run(cli: Cli) -> Exit {
    let json = cli.global.output == OutputFormat::Json;
    let endpoint = cli.global.server.clone();
    match execute(cli).await {
        Ok(exit) => exit,
        Err(err) => {
            report(&err, json);
            tracing::debug!(server = %endpoint, error = ?err, "command failed");
            err.exit()
        }
    }
}

/// Prints a failure: a sentence on stderr, and with `-o json` also a `{"kind":"error"}` line
/// on stdout so a machine reading stdout learns why.
fn report(err: &CliError, json: bool) {
    eprintln!("error: {err}");
    if json {
        let record = JsonError {
            kind: "error",
            code: err.code_name(),
            message: err.to_string(),
            exit_code: err.exit().code(),
        };
        // The sentence is already on stderr; a closed stdout has nothing more to lose.
        let _ = Printer::json(&record);
    }
}

async fn execute(cli: Cli) -> Result<Exit, CliError> {
    let json = cli.global.output == OutputFormat::Json;
    if matches!(cli.command, Command::Version) {
        // The client's own version comes first: it is printed even when the server is
        // unreachable or the credentials are unusable.
        match json {
            true => Printer::json(&output::JsonVersion::client())?,
            false => output::write_line(&output::client_version())?,
        }
    }
    let client = connect(&cli.global).await?;
    let endpoint = client.endpoint().to_string();
    let wrap = |err: ClientError| CliError::from_client(err, &endpoint);
    let terminal = std::io::stdout().is_terminal();
    let printer = || Printer::new(json, terminal);

    match cli.command {
        Command::Start(start) => {
            let wait = start.wait;
            let rollout = client.start(start_request(*start)).await.map_err(wrap)?;
            let printer = printer();
            if !wait {
                printer.rollout(&output::rollout_summary("started", &rollout), &rollout)?;
                return Ok(Exit::Success);
            }
            match &printer {
                Printer::Json => Printer::json(&output::JsonRollout::from(&rollout))?,
                _ => output::write_line(&output::rollout_summary("started", &rollout))?,
            }
            follow(&client, &rollout, 0, printer).await.map_err(wrap)
        }
        Command::Watch(watch) => {
            let rollout = client.get(&watch.id).await.map_err(wrap)?;
            follow(&client, &rollout, watch.from_sequence, printer())
                .await
                .map_err(wrap)
        }
        Command::Get(get) => {
            let rollout = client.get(&get.id).await.map_err(wrap)?;
            Printer::new(json, false).rollout(&output::rollout_details(&rollout), &rollout)?;
            Ok(Exit::Success)
        }
        Command::List(list) => {
            let rollouts = client
                .list(
                    ListRolloutsRequest {
                        namespace: list.namespace.unwrap_or_default(),
                        active_only: list.active,
                        target: list.target.unwrap_or_default(),
                        phases: list.phases,
                        page_size: list.page_size,
                        page_token: String::new(),
                    },
                    list.limit,
                )
                .await
                .map_err(wrap)?;
            if json {
                for rollout in &rollouts {
                    Printer::json(&output::JsonRollout::from(rollout))?;
                }
            } else if rollouts.is_empty() {
                output::write_line("no rollouts")?;
            } else {
                output::write_line(output::rollout_table(&rollouts).trim_end())?;
            }
            Ok(Exit::Success)
        }
        Command::Abort(abort) => {
            let rollout = client.abort(&abort.id, abort.reason).await.map_err(wrap)?;
            control_result("aborted", &rollout, json)
        }
        Command::Pause(pause) => {
            let rollout = client.pause(&pause.id, pause.reason).await.map_err(wrap)?;
            control_result("paused", &rollout, json)
        }
        Command::Resume(resume) => {
            let rollout = client.resume(&resume.id).await.map_err(wrap)?;
            control_result("resumed", &rollout, json)
        }
        Command::Promote(promote) => {
            let rollout = client.promote(&promote.id).await.map_err(wrap)?;
            control_result("promoting", &rollout, json)
        }
        Command::Version => {
            let info = client.server_info().await.map_err(wrap)?;
            match json {
                true => Printer::json(&output::JsonServerInfo::from(&info))?,
                false => output::write_line(output::server_info(&info).trim_end())?,
            }
            Ok(Exit::Success)
        }
    }
}

fn control_result(verb: &str, rollout: &Rollout, json: bool) -> Result<Exit, CliError> {
    Printer::new(json, false).rollout(&output::rollout_summary(verb, rollout), rollout)?;
    Ok(Exit::Success)
}

/// Follows `rollout` to its end, printing each event, and returns 0 if it was promoted and 1
/// otherwise.
async fn follow(
    client: &Client,
    rollout: &Rollout,
    from_sequence: u64,
    mut printer: Printer,
) -> Result<Exit, ClientError> {
    printer.begin(rollout);
    let mut output_error = None;
    let result = client
        .wait_with(&rollout.id, from_sequence, |event| {
            if output_error.is_none()
                && let Err(err) = printer.event(event)
            {
                output_error = Some(err);
            }
        })
        .await;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err) => {
            printer.abandon();
            return Err(err);
        }
    };
    if let Some(err) = output_error {
        tracing::warn!(error = %err, "some events could not be printed");
    }
    let exit = Exit::for_phase(outcome.phase);
    if let Err(err) = printer.outcome(&outcome, exit.code()) {
        tracing::warn!(error = %err, "the outcome could not be printed");
    }
    Ok(exit)
}

fn start_request(start: StartArgs) -> StartRolloutRequest {
    // Durations parsed from flags are far inside protobuf's range.
    let duration = |d: Duration| prost_types::Duration::try_from(d).unwrap_or_default();
    StartRolloutRequest {
        namespace: start.target.namespace,
        target: start.target.name,
        canary: start.canary.unwrap_or_default(),
        // The alias every server reads; `route` only servers that know route kinds.
        virtual_service: match &start.route {
            Some(route) if route.kind == "VirtualService" => route.name.clone(),
            _ => start.virtual_service.unwrap_or_default(),
        },
        route: start.route.map(|route| steerer::v1::RouteRef {
            kind: route.kind.to_owned(),
            name: route.name,
        }),
        observer: start.observer.unwrap_or_default(),
        images: start.images.into_iter().collect(),
        analysis: Some(Analysis {
            step_weight: start.step_weight,
            max_weight: start.max_weight,
            interval: start.interval.map(duration),
            success_rate_threshold: start.threshold,
            max_failed_checks: start.max_failed_checks,
            progress_deadline: start.progress_deadline.map(duration),
            min_request_rate: start.min_request_rate,
            max_latency_p99_ms: start.max_latency_p99_ms,
            metrics: start
                .metrics
                .into_iter()
                .map(|m| steerer::v1::MetricCheck {
                    template: m.template,
                    min: m.min,
                    max: m.max,
                })
                .collect(),
            webhooks: start
                .webhooks
                .into_iter()
                .map(|w| steerer::v1::Webhook {
                    metadata: start
                        .webhook_metadata
                        .iter()
                        .filter(|(name, _, _)| *name == w.name)
                        .map(|(_, key, value)| (key.clone(), value.clone()))
                        .collect(),
                    name: w.name,
                    r#type: w.kind as i32,
                    url: w.url,
                    timeout: start.webhook_timeout.map(duration),
                })
                .collect(),
            require_approval: start.require_approval,
            baseline: start.baseline.map(|mode| steerer::v1::Baseline {
                mode: match mode {
                    BaselineArg::Ga => steerer::v1::BaselineMode::Ga,
                    BaselineArg::Deployment => steerer::v1::BaselineMode::Deployment,
                } as i32,
                confidence: start.confidence,
                max_error_rate_increase: start.max_error_increase,
                max_latency_increase: start.max_latency_increase,
                min_requests: None,
            }),
            strategy: start
                .strategy
                .map_or(steerer::v1::Strategy::Unspecified, |s| s.proto())
                as i32,
            iterations: start.iterations,
            r#match: start.matches,
            mirror_weight: start.mirror_weight,
            session_affinity: start.sticky.map(|sticky| steerer::v1::SessionAffinity {
                cookie_name: sticky.cookie,
                max_age: sticky.max_age.map(duration),
            }),
        }),
        request_id: start.request_id.unwrap_or_default(),
        canary_replicas: start.canary_replicas,
    }
}

/// Builds the client from the global flags. Local problems (unreadable token file, TLS flags
/// on an http:// address) are usage errors; an unreachable server is reported on the first
/// call, so it gets the same message as one that goes away later.
async fn connect(global: &GlobalArgs) -> Result<Client, CliError> {
    let mut builder = Client::builder(global.server.clone())
        .timeout(global.timeout)
        .connect_timeout(global.timeout.min(Duration::from_secs(10)))
        .lazy(true);
    let token = match (&global.token, &global.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?),
        (None, None) => None,
    };
    if let Some(token) = token {
        if token.trim().is_empty() {
            return Err(CliError::Usage("the token is empty".into()));
        }
        builder = builder.bearer_token(token);
    }
    if let Some(ca) = &global.ca_cert {
        builder = builder.ca_certificate_file(ca);
    }
    if let (Some(cert), Some(key)) = (&global.client_cert, &global.client_key) {
        builder = builder.client_identity_files(cert, key);
    }
    if let Some(name) = &global.tls_server_name {
        builder = builder.tls_server_name(name);
    }
    builder.connect().await.map_err(|err| match err {
        ClientError::Config { message } => CliError::Usage(message),
        other => CliError::from_client(other, &global.server),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn start_flags_become_the_request() {
        let cli = Cli::try_parse_from([
            "steerer",
            "start",
            "shop/checkout",
            "--image",
            "app=img:2",
            "--interval",
            "1500ms",
            "--threshold",
            "95",
            "--request-id",
            "ci-7",
            "--max-latency-p99-ms",
            "250",
            "--metric",
            "request-rate:1..",
            "--webhook",
            "load=pre-rollout:http://loadtester.test/",
            "--webhook-metadata",
            "load:cmd=hey -z 1m",
            "--webhook-timeout",
            "2m",
            "--require-approval",
        ])
        .unwrap();
        let Command::Start(start) = cli.command else {
            panic!("not start")
        };
        let request = start_request(*start);
        assert_eq!(request.namespace, "shop");
        assert_eq!(request.target, "checkout");
        assert_eq!(request.images.get("app").map(String::as_str), Some("img:2"));
        assert_eq!(request.request_id, "ci-7");
        let analysis = request.analysis.unwrap();
        assert_eq!(analysis.max_latency_p99_ms, Some(250.0));
        assert_eq!(analysis.metrics[0].template, "request-rate");
        assert_eq!(analysis.metrics[0].min, Some(1.0));
        let hook = &analysis.webhooks[0];
        assert_eq!(hook.r#type(), steerer::v1::WebhookType::PreRollout);
        assert_eq!(hook.metadata["cmd"], "hey -z 1m");
        assert_eq!(hook.timeout.unwrap().seconds, 120);
        assert!(analysis.require_approval);
        assert_eq!(
            analysis.interval,
            Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        assert_eq!(analysis.success_rate_threshold, Some(95.0));
        assert_eq!(analysis.step_weight, None);
        assert_eq!(request.canary, "");
    }

    #[test]
    fn baseline_flags_become_the_requests_baseline() {
        let cli = Cli::try_parse_from([
            "steerer",
            "start",
            "shop/checkout",
            "--max-weight",
            "50",
            "--baseline",
            "ga",
            "--confidence",
            "95%",
            "--max-error-increase",
            "1",
            "--max-latency-increase",
            "30%",
        ])
        .unwrap();
        let Command::Start(start) = cli.command else {
            panic!("not start")
        };
        let analysis = start_request(*start).analysis.unwrap();
        let baseline = analysis.baseline.unwrap();
        assert_eq!(baseline.mode(), steerer::v1::BaselineMode::Ga);
        assert_eq!(baseline.confidence, Some(0.95));
        assert_eq!(baseline.max_error_rate_increase, Some(1.0));
        assert!((baseline.max_latency_increase.unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(analysis.success_rate_threshold, None);
        // The baseline's settings need a baseline, and take only sensible values.
        for args in [
            vec!["steerer", "start", "shop/checkout", "--confidence", "0.9"],
            vec![
                "steerer",
                "start",
                "shop/checkout",
                "--baseline",
                "ga",
                "--confidence",
                "1",
            ],
            vec!["steerer", "start", "shop/checkout", "--baseline", "nope"],
            vec![
                "steerer",
                "start",
                "shop/checkout",
                "--baseline",
                "ga",
                "--max-latency-increase",
                "-0.1",
            ],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn strategy_flags_fill_the_analysis_and_default_to_the_servers_choice() {
        let request = |extra: &[&str]| {
            let mut args = vec!["steerer", "start", "shop/checkout"];
            args.extend_from_slice(extra);
            let Command::Start(start) = Cli::try_parse_from(args).unwrap().command else {
                panic!("not start")
            };
            start_request(*start).analysis.unwrap()
        };
        let plain = request(&[]);
        assert_eq!(plain.strategy(), steerer::v1::Strategy::Unspecified);
        assert!(plain.r#match.is_empty() && plain.session_affinity.is_none());
        let bg = request(&[
            "--strategy",
            "blue-green",
            "--iterations",
            "3",
            "--mirror-weight",
            "20",
        ]);
        assert_eq!(bg.strategy(), steerer::v1::Strategy::BlueGreen);
        assert_eq!((bg.iterations, bg.mirror_weight), (Some(3), Some(20)));
        let ab = request(&["--strategy", "ab", "--match", "cookie:plan=~gold|silver"]);
        assert_eq!(ab.strategy(), steerer::v1::Strategy::AbTest);
        assert_eq!(ab.r#match[0].cookie, "plan");
        assert_eq!(ab.r#match[0].regex, "gold|silver");
        let sticky = request(&["--sticky", "canary-user:1h"]);
        let affinity = sticky.session_affinity.unwrap();
        assert_eq!(affinity.cookie_name, "canary-user");
        assert_eq!(affinity.max_age.unwrap().seconds, 3600);
    }

    #[tokio::test]
    async fn an_unreadable_token_file_is_a_usage_error() {
        let cli =
            Cli::try_parse_from(["steerer", "--token-file", "/nonexistent/token", "list"]).unwrap();
        let err = connect(&cli.global).await.unwrap_err();
        assert_eq!(err.exit(), Exit::Usage);
        assert!(err.to_string().contains("/nonexistent/token"), "{err}");
    }

    #[tokio::test]
    async fn tls_flags_on_an_http_server_are_a_usage_error() {
        let cli = Cli::try_parse_from([
            "steerer",
            "--server",
            "http://127.0.0.1:1",
            "--ca-cert",
            "/tmp/ca.pem",
            "list",
        ])
        .unwrap();
        let err = connect(&cli.global).await.unwrap_err();
        assert_eq!(err.exit(), Exit::Usage);
    }
}
