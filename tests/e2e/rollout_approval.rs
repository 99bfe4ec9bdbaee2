//! Manual approval without a webhook server: a rollout started with `--require-approval`
//! holds at its maximum weight, its checks going on, saying it waits for approval (in `get`,
//! `-o json` and a HALTED event), until PromoteRollout; then it is promoted.

use std::time::Duration;

use steerer::v1::{EventType, Phase, PromoteRolloutRequest};

use crate::cli_support::{json_lines, run, stderr, stdout};
use crate::common::{Harness, types};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_requires_approval_holds_at_its_maximum_weight_until_promoted() {
    let mut h = Harness::start().await;
    let out = run(
        h.addr(),
        &[
            "start",
            "test/podinfo",
            "--step-weight",
            "50",
            "--interval",
            "1s",
            "--require-approval",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let started = &json_lines(&out)[0];
    assert_eq!(started["analysis"]["require_approval"], true);
    let id = started["id"].as_str().unwrap().to_owned();

    let held = h
        .wait_until(&id, Duration::from_secs(60), |r| !r.waiting_for.is_empty())
        .await;
    assert_eq!(held.waiting_for, "approval: call PromoteRollout");
    assert_eq!(held.phase(), Phase::Progressing);
    assert_eq!(held.canary_weight, 100);
    assert_eq!(
        held.message,
        "halted: waiting for approval: call PromoteRollout"
    );
    assert_eq!(h.weights().await, (0, 100));

    let get = run(h.addr(), &["get", &id]).await;
    assert_eq!(get.status.code(), Some(0), "{}", stderr(&get));
    let text = stdout(&get);
    assert!(
        text.contains(&format!(
            "waiting for:    approval: call PromoteRollout (steerer promote {id})"
        )) && text.contains("promotion needs approval"),
        "{text}"
    );
    assert!(text.contains("  success_rate: "), "{text}");
    let json = run(h.addr(), &["get", &id, "-o", "json"]).await;
    assert_eq!(
        json_lines(&json)[0]["waiting_for"],
        "approval: call PromoteRollout"
    );

    // Checks go on while it waits: the last analysis moves on.
    let first_check = held.last_analysis.unwrap().time.unwrap();
    h.wait_until(&id, Duration::from_secs(30), |r| {
        r.last_analysis
            .as_ref()
            .and_then(|a| a.time)
            .is_some_and(|t| t != first_check)
    })
    .await;
    assert_eq!(h.get(&id).await.phase(), Phase::Progressing);

    let promoted = h
        .client
        .promote_rollout(PromoteRolloutRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoted.phase(), Phase::Promoting);
    assert_eq!(promoted.waiting_for, "");
    let events = h.watch_to_end(&id, 0, Duration::from_secs(60)).await;
    let done = h.get(&id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let halted: Vec<_> = events
        .iter()
        .filter(|e| e.r#type() == EventType::Halted && e.message.contains("approval"))
        .collect();
    assert_eq!(halted.len(), 1, "announced once: {:#?}", types(&events));
    assert_eq!(
        halted[0].message,
        "halted: waiting for approval: call PromoteRollout"
    );
    assert!(
        events.iter().any(
            |e| e.r#type() == EventType::Promoting && e.message.contains("promoted by request")
        ),
        "{:#?}",
        types(&events)
    );
    assert_eq!(h.weights().await, (100, 0));
}
