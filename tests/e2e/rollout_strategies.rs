//! Rollout strategies beside the weighted canary (A/B by header or cookie, blue/green,
//! mirroring, sticky canaries): every malformed or misplaced strategy setting is refused with
//! INVALID_ARGUMENT, and a well-formed one this server cannot route yet with UNIMPLEMENTED;
//! either way nothing in the cluster changes and no rollout is recorded, through the generated
//! client and through the CLI's strategy flags. A/B tests run: promoted, rolled back on their
//! matched traffic, aborted and resumed after a kill -9, each ending with the route exactly as
//! the user wrote it. Blue/green runs too: dark while its checks pass on load from a preview
//! route, then all traffic in one write, promoted; without load it is no data and never
//! touches the route; aborted or failing in the dark it leaves the route as it was, and a
//! kill -9 resumes its count. Runs for the route kind of `STEERER_ROUTE`, on the simulator or
//! (`STEERER_SUBSTRATE=real`) a real cluster.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};
use steerer::v1::{
    AbortRolloutRequest, Analysis, EventType, Phase, RequestMatch, SessionAffinity, Strategy,
};
use tonic::Code;

use crate::common::{CANARY, GA, Harness, NS, collect_events, events_until, split_pointer};
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
            "a baseline with blue/green",
            Analysis {
                baseline: Some(steerer::v1::Baseline::default()),
                ..blue_green()
            },
            "analysis.baseline cannot be used with STRATEGY_BLUE_GREEN",
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
            "blue/green with mirroring",
            Analysis {
                mirror_weight: Some(50),
                ..blue_green()
            },
            "mirroring (analysis.mirror_weight) is not implemented",
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
            &["--strategy", "blue-green", "--mirror-weight", "50"],
            1,
            "mirroring (analysis.mirror_weight) is not implemented by this server yet",
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

/// The field of the example route's spec holding its rules.
fn rules_key(h: &Harness) -> &'static str {
    match h.route {
        steerer_server::domain::RouteKind::VirtualService => "http",
        _ => "rules",
    }
}

/// The example route's spec as stored.
async fn route_spec(h: &Harness) -> Value {
    h.route_object().await["spec"].clone()
}

/// Makes `share` of the example Service's synthetic requests carry `x-cohort: beta` (0 takes
/// the rule away), through the mesh's `POST /sim/traffic`.
async fn send_cohort(h: &Harness, share: f64) {
    let body = if share > 0.0 {
        json!({"namespace": NS, "service": GA, "share": share, "headers": {"x-cohort": "beta"}})
    } else {
        json!({"namespace": NS, "service": GA, "clear": true})
    };
    let status = reqwest::Client::new()
        .post(format!("http://{}/sim/traffic", h.cluster.traffic_addr()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "POST /sim/traffic {body}");
}

/// Starts an A/B test of `x-cohort: beta` needing `iterations` passing checks, waits until its
/// rule is in the route, and checks the route then: the user's rules as they were, with
/// steerer's rule ahead of the split sending the matching requests to the canary.
async fn start_ab(h: &mut Harness, before: &Value, iterations: u32) -> String {
    let started = h
        .start_rollout(h.request(Analysis {
            iterations: Some(iterations),
            ..ab(vec![header("x-cohort", "beta")])
        }))
        .await;
    let events = events_until(
        &mut h.client,
        &started.id,
        0,
        Duration::from_secs(60),
        |e| e.r#type() == EventType::WeightChanged,
    )
    .await;
    let routed = events.last().unwrap();
    assert!(
        routed
            .message
            .contains("A/B: requests with header x-cohort=beta go to the canary"),
        "{}",
        routed.message
    );
    let key = rules_key(h);
    let during = route_spec(h).await;
    let all = during[key].as_array().unwrap();
    let ours: Vec<&Value> = all.iter().filter(|r| r["name"] == "steerer-ab").collect();
    assert_eq!(ours.len(), 1, "{during}");
    let text = ours[0].to_string();
    assert!(text.contains(CANARY) && text.contains("beta"), "{text}");
    assert!(!text.contains(&format!("\"{GA}\"")), "{text}");
    let mut theirs = during.clone();
    theirs[key] = Value::Array(
        all.iter()
            .filter(|r| r["name"] != "steerer-ab")
            .cloned()
            .collect(),
    );
    assert_eq!(&theirs, before, "steerer changed the user's own rules");
    started.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ab_test_sends_matching_requests_to_the_canary_then_promotes_and_restores_the_route() {
    let mut h = Harness::start().await;
    let before = route_spec(&h).await;
    send_cohort(&h, 0.5).await;
    let id = start_ab(&mut h, &before, 3).await;
    let done = h.wait_for_end(&id, Duration::from_secs(120)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let events = collect_events(&mut h.client, &id, 0, Duration::from_secs(10)).await;
    let passed: Vec<&str> = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckPassed)
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(passed.len(), 3, "{passed:?}");
    assert!(passed[2].starts_with("check 3 of 3 passed"), "{passed:?}");
    assert_eq!(
        route_spec(&h).await,
        before,
        "the route is not as the user wrote it"
    );
    send_cohort(&h, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ab_test_failing_on_its_matched_traffic_is_rolled_back_and_restores_the_route() {
    let mut h = Harness::start().await;
    let before = route_spec(&h).await;
    let ga_image = crate::common::image(&h.deployment(GA).await);
    h.set_error_rate(NS, CANARY, Some(0.5)).await;
    send_cohort(&h, 0.5).await;
    let id = start_ab(&mut h, &before, 5).await;
    let done = h.wait_for_end(&id, Duration::from_secs(120)).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert!(done.message.contains("failed checks"), "{}", done.message);
    // Failed on what the canary served of the matched requests, not for want of data.
    let events = collect_events(&mut h.client, &id, 0, Duration::from_secs(10)).await;
    let failed: Vec<f64> = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckFailed)
        .filter_map(|e| e.success_rate)
        .collect();
    assert!(
        !failed.is_empty() && failed.iter().all(|rate| *rate < 95.0),
        "{failed:?}"
    );
    assert_eq!(
        route_spec(&h).await,
        before,
        "the route is not as the user wrote it"
    );
    assert_eq!(crate::common::image(&h.deployment(GA).await), ga_image);
    h.set_error_rate(NS, CANARY, None).await;
    send_cohort(&h, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_an_ab_test_restores_the_route() {
    let mut h = Harness::start().await;
    let before = route_spec(&h).await;
    send_cohort(&h, 0.5).await;
    let id = start_ab(&mut h, &before, 50).await;
    h.client
        .abort_rollout(AbortRolloutRequest {
            id: id.clone(),
            reason: "wrong cohort".into(),
        })
        .await
        .unwrap();
    let done = h.wait_for_end(&id, Duration::from_secs(60)).await;
    assert_eq!(done.phase(), Phase::Aborted, "{}", done.message);
    assert_eq!(
        route_spec(&h).await,
        before,
        "the route is not as the user wrote it"
    );
    send_cohort(&h, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ab_test_killed_mid_way_resumes_its_count_and_promotes() {
    let mut h = Harness::start().await;
    let before = route_spec(&h).await;
    send_cohort(&h, 0.5).await;
    let id = start_ab(&mut h, &before, 4).await;
    events_until(&mut h.client, &id, 0, Duration::from_secs(60), |e| {
        e.r#type() == EventType::CheckPassed
    })
    .await;
    h.crash_and_restart().await;
    let resumed = h.get(&id).await;
    assert_eq!(resumed.phase(), Phase::Progressing, "{}", resumed.message);
    let done = h.wait_for_end(&id, Duration::from_secs(120)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let events = collect_events(&mut h.client, &id, 0, Duration::from_secs(10)).await;
    let passed = events
        .iter()
        .filter(|e| e.r#type() == EventType::CheckPassed)
        .count();
    assert_eq!(
        passed, 4,
        "the count of passing checks went on from the record"
    );
    assert_eq!(
        route_spec(&h).await,
        before,
        "the route is not as the user wrote it"
    );
    send_cohort(&h, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edit_of_the_ab_rule_pauses_the_test_and_an_abort_restores_the_route() {
    use kube::api::{Patch, PatchParams};
    let mut h = Harness::start().await;
    let before = route_spec(&h).await;
    send_cohort(&h, 0.5).await;
    let id = start_ab(&mut h, &before, 50).await;
    // Someone points steerer's rule at another cohort.
    let key = rules_key(&h);
    let mut spec = route_spec(&h).await;
    let text = spec.to_string().replace("\"beta\"", "\"gamma\"");
    assert_ne!(text, spec.to_string());
    spec = serde_json::from_str(&text).unwrap();
    crate::common::routes(&h.kube, h.route)
        .patch(
            GA,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {key: spec[key].clone()}})),
        )
        .await
        .unwrap();
    let paused = h
        .wait_until(&id, Duration::from_secs(30), |r| r.phase() == Phase::Paused)
        .await;
    assert!(
        paused.message.contains("changed outside steerer"),
        "{}",
        paused.message
    );
    h.client
        .abort_rollout(AbortRolloutRequest {
            id: id.clone(),
            reason: "edited".into(),
        })
        .await
        .unwrap();
    let done = h.wait_for_end(&id, Duration::from_secs(60)).await;
    assert_eq!(done.phase(), Phase::Aborted, "{}", done.message);
    assert_eq!(
        route_spec(&h).await,
        before,
        "the route is not as the user wrote it"
    );
    send_cohort(&h, 0.0).await;
}

/// Creates `podinfo-preview`, a second route of the example's kind sending all of its own
/// traffic to the canary Service: the load a dark blue/green canary gets from elsewhere (a
/// preview host, a load tester). It holds no GA destination, so it is never the rollout's route.
async fn preview_route(h: &Harness) {
    let route = h.route_object().await;
    let mut canary = route
        .pointer(split_pointer(h.route))
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .find(|d| d.to_string().contains(CANARY))
        .unwrap()
        .clone();
    canary["weight"] = json!(100);
    let mut spec = route["spec"].clone();
    match rules_key(h) {
        "http" => spec["http"] = json!([{"route": [canary]}]),
        key => spec[key] = json!([{"backendRefs": [canary]}]),
    }
    let preview: DynamicObject = serde_json::from_value(json!({
        "apiVersion": route["apiVersion"],
        "kind": route["kind"],
        "metadata": {"name": "podinfo-preview", "namespace": NS},
        "spec": spec,
    }))
    .unwrap();
    crate::common::routes(&h.kube, h.route)
        .create(&PostParams::default(), &preview)
        .await
        .unwrap();
}

/// Starts a blue/green rollout needing `iterations` dark checks and waits for its first step:
/// the event saying the canary takes no live traffic.
async fn start_blue_green(h: &mut Harness, analysis: Analysis) -> String {
    let started = h.start_rollout(h.request(analysis)).await;
    let events = events_until(
        &mut h.client,
        &started.id,
        0,
        Duration::from_secs(60),
        |e| e.r#type() == EventType::WeightChanged,
    )
    .await;
    let dark = events.last().unwrap();
    assert!(
        dark.message
            .ends_with("blue/green: no live traffic goes to the canary, all of it to GA"),
        "{}",
        dark.message
    );
    started.id
}

fn blue_green_of(iterations: u32) -> Analysis {
    Analysis {
        iterations: Some(iterations),
        ..blue_green()
    }
}

/// The messages of a rollout's events of one type.
async fn messages(h: &mut Harness, id: &str, kind: EventType) -> Vec<String> {
    collect_events(&mut h.client, id, 0, Duration::from_secs(10))
        .await
        .into_iter()
        .filter(|e| e.r#type() == kind)
        .map(|e| e.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_passes_its_checks_dark_then_moves_all_traffic_at_once_and_promotes() {
    let mut h = Harness::start().await;
    let before = route_spec(&h).await;
    preview_route(&h).await;
    let id = start_blue_green(&mut h, blue_green_of(2)).await;
    events_until(&mut h.client, &id, 0, Duration::from_secs(60), |e| {
        e.r#type() == EventType::CheckPassed
    })
    .await;
    // A passing check in the dark: the user's route still sends nothing to the canary.
    assert_eq!(
        route_spec(&h).await,
        before,
        "the dark canary got live traffic"
    );
    let switched = events_until(&mut h.client, &id, 0, Duration::from_secs(60), |e| {
        e.r#type() == EventType::WeightChanged
            && e.message
                .ends_with("blue/green: all traffic goes to the canary")
    })
    .await;
    assert!(!switched.is_empty());
    let done = h.wait_for_end(&id, Duration::from_secs(120)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let passed = messages(&mut h, &id, EventType::CheckPassed).await;
    assert_eq!(passed.len(), 3, "{passed:?}");
    assert!(
        passed[0].starts_with("check 1 of 2 passed with no live traffic"),
        "{passed:?}"
    );
    assert!(
        passed[1].starts_with("check 2 of 2 passed with no live traffic"),
        "{passed:?}"
    );
    assert!(
        passed[2].starts_with("check passed at weight 100%"),
        "{passed:?}"
    );
    let steps = messages(&mut h, &id, EventType::WeightChanged).await;
    assert!(
        steps
            .iter()
            .any(|m| m.ends_with("blue/green: all traffic goes to the canary")),
        "{steps:?}"
    );
    assert_eq!(
        route_spec(&h).await,
        before,
        "the route is not as the user wrote it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_without_load_is_no_data_and_rolls_back_at_the_deadline_never_writing_the_route()
{
    let mut h = Harness::start().await;
    let before = cluster_state(&h).await.0;
    let id = start_blue_green(
        &mut h,
        Analysis {
            progress_deadline: Some(prost_types::Duration {
                seconds: 8,
                nanos: 0,
            }),
            ..blue_green_of(2)
        },
    )
    .await;
    let done = h.wait_for_end(&id, Duration::from_secs(90)).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert!(
        done.message.contains("progress deadline") && done.message.contains("blue/green"),
        "{}",
        done.message
    );
    let no_data = messages(&mut h, &id, EventType::CheckNoData).await;
    assert!(
        !no_data.is_empty()
            && no_data
                .iter()
                .all(|m| m.contains("the canary takes no live traffic")),
        "{no_data:?}"
    );
    assert!(
        messages(&mut h, &id, EventType::CheckPassed)
            .await
            .is_empty()
    );
    assert_eq!(
        cluster_state(&h).await.0,
        before,
        "the route was written (its resourceVersion moved)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_canary_failing_in_the_dark_is_rolled_back_and_the_route_never_moves() {
    let mut h = Harness::start().await;
    preview_route(&h).await;
    let before = cluster_state(&h).await.0;
    let ga_image = crate::common::image(&h.deployment(GA).await);
    h.set_error_rate(NS, CANARY, Some(0.5)).await;
    let id = start_blue_green(&mut h, blue_green_of(3)).await;
    let done = h.wait_for_end(&id, Duration::from_secs(120)).await;
    assert_eq!(done.phase(), Phase::RolledBack, "{}", done.message);
    assert!(done.message.contains("failed checks"), "{}", done.message);
    assert_eq!(
        cluster_state(&h).await.0,
        before,
        "the route was written (its resourceVersion moved)"
    );
    assert_eq!(crate::common::image(&h.deployment(GA).await), ga_image);
    h.set_error_rate(NS, CANARY, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_dark_blue_green_rollout_leaves_the_route_untouched() {
    let mut h = Harness::start().await;
    preview_route(&h).await;
    let before = cluster_state(&h).await.0;
    let id = start_blue_green(&mut h, blue_green_of(50)).await;
    events_until(&mut h.client, &id, 0, Duration::from_secs(60), |e| {
        e.r#type() == EventType::CheckPassed
    })
    .await;
    h.client
        .abort_rollout(AbortRolloutRequest {
            id: id.clone(),
            reason: "not today".into(),
        })
        .await
        .unwrap();
    let done = h.wait_for_end(&id, Duration::from_secs(60)).await;
    assert_eq!(done.phase(), Phase::Aborted, "{}", done.message);
    assert_eq!(
        cluster_state(&h).await.0,
        before,
        "the route was written (its resourceVersion moved)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_blue_green_after_the_switch_puts_all_traffic_back_on_ga() {
    let mut h = Harness::start().await;
    preview_route(&h).await;
    let before = route_spec(&h).await;
    let id = start_blue_green(&mut h, blue_green_of(1)).await;
    events_until(&mut h.client, &id, 0, Duration::from_secs(60), |e| {
        e.r#type() == EventType::WeightChanged
            && e.message
                .ends_with("blue/green: all traffic goes to the canary")
    })
    .await;
    assert_eq!(h.weights().await, (0, 100));
    h.client
        .abort_rollout(AbortRolloutRequest {
            id: id.clone(),
            reason: "not today".into(),
        })
        .await
        .unwrap();
    let done = h.wait_for_end(&id, Duration::from_secs(60)).await;
    assert_eq!(done.phase(), Phase::Aborted, "{}", done.message);
    assert_eq!(
        route_spec(&h).await,
        before,
        "the route is not as the user wrote it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_rollout_killed_in_the_dark_resumes_its_count_and_promotes() {
    let mut h = Harness::start().await;
    preview_route(&h).await;
    let before = route_spec(&h).await;
    let id = start_blue_green(&mut h, blue_green_of(3)).await;
    events_until(&mut h.client, &id, 0, Duration::from_secs(60), |e| {
        e.r#type() == EventType::CheckPassed
    })
    .await;
    h.crash_and_restart().await;
    let resumed = h.get(&id).await;
    assert_eq!(resumed.phase(), Phase::Progressing, "{}", resumed.message);
    assert_eq!(resumed.canary_weight, 0, "{}", resumed.message);
    let done = h.wait_for_end(&id, Duration::from_secs(120)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let passed = messages(&mut h, &id, EventType::CheckPassed).await;
    assert_eq!(
        passed.len(),
        4,
        "three dark checks counted across the restart, one live: {passed:?}"
    );
    assert_eq!(
        route_spec(&h).await,
        before,
        "the route is not as the user wrote it"
    );
}
