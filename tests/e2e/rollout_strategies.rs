//! Rollout strategies beside the weighted canary (A/B by header or cookie, blue/green,
//! mirroring, sticky canaries): every malformed or misplaced strategy setting is refused with
//! INVALID_ARGUMENT, and a well-formed one this server cannot route yet with UNIMPLEMENTED;
//! either way nothing in the cluster changes and no rollout is recorded, through the generated
//! client and through the CLI's strategy flags. Runs for the route
//! kind of `STEERER_ROUTE`, on the simulator or (`STEERER_SUBSTRATE=real`) a real cluster.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};
use serde_json::Value;
use steerer::v1::{Analysis, RequestMatch, SessionAffinity, Strategy};
use tonic::Code;

use crate::common::{Harness, NS};
use crate::rollout_bad_input::assert_no_rollouts;

/// The route as stored (resourceVersion included) and every Deployment's resourceVersion.
async fn cluster_state(h: &Harness) -> (Value, Vec<Option<String>>) {
    let deployments = Api::<Deployment>::namespaced(h.kube.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.metadata.resource_version)
        .collect();
    (h.route_object().await, deployments)
}

fn header(name: &str, exact: &str) -> RequestMatch {
    RequestMatch {
        header: name.into(),
        exact: exact.into(),
        ..Default::default()
    }
}

fn ab(matches: Vec<RequestMatch>) -> Analysis {
    Analysis {
        strategy: Strategy::AbTest as i32,
        r#match: matches,
        ..Default::default()
    }
}

fn blue_green() -> Analysis {
    Analysis {
        strategy: Strategy::BlueGreen as i32,
        ..Default::default()
    }
}

fn sticky(cookie: &str, max_age_seconds: i64) -> Option<SessionAffinity> {
    Some(SessionAffinity {
        cookie_name: cookie.into(),
        max_age: Some(prost_types::Duration {
            seconds: max_age_seconds,
            nanos: 0,
        }),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_or_not_yet_routable_strategies_are_refused_and_change_nothing() {
    let mut h = Harness::start().await;
    let before = cluster_state(&h).await;
    let regex = |regex: &str| RequestMatch {
        header: "x-cohort".into(),
        regex: regex.into(),
        ..Default::default()
    };
    let cookie = |name: &str, exact: &str| RequestMatch {
        cookie: name.into(),
        exact: exact.into(),
        ..Default::default()
    };
    let long = "b".repeat(257);
    let invalid: Vec<(&str, Analysis, &str)> = vec![
        (
            "A/B without match",
            ab(vec![]),
            "needs at least one analysis.match",
        ),
        (
            "match with blue/green",
            Analysis {
                r#match: vec![header("x-cohort", "beta")],
                ..blue_green()
            },
            "analysis.match cannot be used with STRATEGY_BLUE_GREEN",
        ),
        (
            "session affinity with blue/green",
            Analysis {
                session_affinity: sticky("canary-user", 3600),
                ..blue_green()
            },
            "analysis.session_affinity cannot be used with STRATEGY_BLUE_GREEN",
        ),
        (
            "session affinity with A/B",
            Analysis {
                session_affinity: sticky("canary-user", 3600),
                ..ab(vec![header("x-cohort", "beta")])
            },
            "analysis.session_affinity cannot be used with STRATEGY_AB_TEST",
        ),
        (
            "header name not a token",
            ab(vec![header("x cohort", "beta")]),
            "is not an RFC 7230 token",
        ),
        (
            "cookie name not a token",
            ab(vec![cookie("plan;", "gold")]),
            "analysis.match[0].cookie",
        ),
        (
            "regex RE2 rejects",
            ab(vec![regex("(beta")]),
            "is not an RE2 regular expression",
        ),
        (
            "regex with a backreference",
            ab(vec![regex(r"(a)\1")]),
            "is not an RE2 regular expression",
        ),
        (
            "regex over 256 bytes",
            ab(vec![regex(&long)]),
            "analysis.match[0].regex is 257 bytes long",
        ),
        (
            "value over 256 bytes",
            ab(vec![header("x-cohort", &long)]),
            "analysis.match[0].exact is 257 bytes long",
        ),
        (
            "mirror weight 0",
            Analysis {
                mirror_weight: Some(0),
                ..Default::default()
            },
            "analysis.mirror_weight 0",
        ),
        (
            "mirror weight 101",
            Analysis {
                mirror_weight: Some(101),
                ..blue_green()
            },
            "analysis.mirror_weight 101",
        ),
        (
            "mirroring with A/B",
            Analysis {
                mirror_weight: Some(50),
                ..ab(vec![header("x-cohort", "beta")])
            },
            "analysis.mirror_weight cannot be used with STRATEGY_AB_TEST",
        ),
        (
            "iterations over 1000",
            Analysis {
                iterations: Some(1001),
                ..blue_green()
            },
            "analysis.iterations 1001",
        ),
    ];
    for (name, analysis, says) in invalid {
        let status = h
            .client
            .start_rollout(h.request(analysis))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().contains(says),
            "{name}: {:?} does not say {says:?}",
            status.message()
        );
    }

    let not_yet: Vec<(&str, Analysis, &str)> = vec![
        (
            "A/B test",
            ab(vec![header("x-cohort", "beta"), cookie("plan", "gold")]),
            "STRATEGY_AB_TEST is not implemented",
        ),
        (
            "blue/green",
            blue_green(),
            "STRATEGY_BLUE_GREEN is not implemented",
        ),
        (
            "mirroring during a canary",
            Analysis {
                mirror_weight: Some(50),
                ..Default::default()
            },
            "mirroring (analysis.mirror_weight) is not implemented",
        ),
        (
            "sticky canary",
            Analysis {
                session_affinity: sticky("canary-user", 3600),
                ..Default::default()
            },
            "a sticky canary (analysis.session_affinity) is not implemented",
        ),
    ];
    for (name, analysis, says) in not_yet {
        let status = h
            .client
            .start_rollout(h.request(analysis))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{name}: {status:?}");
        assert!(
            status.message().contains(says),
            "{name}: {:?} does not say {says:?}",
            status.message()
        );
    }

    assert_eq!(
        cluster_state(&h).await,
        before,
        "a refused request changed the cluster"
    );
    assert_no_rollouts(&mut h).await;
}

/// The CLI's strategy flags reach the server as the contract says: a bad flag exits 2 before
/// any call, a request the server finds invalid exits 2 saying why, and one it cannot route
/// yet exits 1 with its UNIMPLEMENTED sentence; nothing changes either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clis_strategy_flags_get_the_servers_answers_and_change_nothing() {
    use crate::cli_support::{run, stderr};
    let mut h = Harness::start().await;
    let addr = h.addr();
    let before = cluster_state(&h).await;
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &["--match", "header:x cohort=beta"],
            2,
            "is not a header or cookie name",
        ),
        (&["--sticky", "canary user"], 2, "is not a cookie name"),
        (&["--mirror-weight", "0"], 2, "0 is not in 1..=100"),
        (
            &["--strategy", "ab"],
            2,
            "needs at least one analysis.match",
        ),
        (
            &["--strategy", "blue-green", "--match", "cookie:plan=gold"],
            2,
            "analysis.match cannot be used with STRATEGY_BLUE_GREEN",
        ),
        (
            &[
                "--strategy",
                "ab",
                "--match",
                "header:x-cohort=beta",
                "--match",
                "cookie:plan^=gold",
                "--iterations",
                "5",
            ],
            1,
            "analysis.strategy STRATEGY_AB_TEST is not implemented by this server yet",
        ),
    ];
    for (flags, code, says) in cases {
        let mut args = vec!["start", "test/podinfo"];
        args.extend_from_slice(flags);
        let out = run(addr, &args).await;
        assert_eq!(out.status.code(), Some(code), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{flags:?}: {}", stderr(&out));
    }
    assert_eq!(cluster_state(&h).await, before);
    assert_no_rollouts(&mut h).await;
}
