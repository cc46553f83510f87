//! Engine tests of what a vote's caller and an operator see of it: each vote timed by stage,
//! each commit timed by stage, and the case a vote's outcome carries (no daemon, no sockets).

use super::*;

/// The value of the sample `name` (with its labels) in the engine's metrics, 0 if absent.
fn metric(h: &Harness, name: &str) -> f64 {
    let needle = format!("{name} ");
    h.metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(needle.as_str()).map(|n| n.parse().unwrap()))
        .unwrap_or(0.0)
}

/// Each vote is timed in three stages (`cordon_vote_seconds`), refusals included: queued for
/// the engine, deciding, and until durable and answered.
#[tokio::test]
async fn every_vote_is_timed_queued_deciding_and_durable() {
    let h = Harness::new(|_| {}).await;
    let count = |stage: &str| {
        metric(
            &h,
            &format!("cordon_vote_seconds_count{{stage=\"{stage}\"}}"),
        ) as u64
    };
    assert_eq!(count("queued"), 0);
    h.run(&Ev::Alert("t-1", MALWARE, &["T1059"], &[("host", "ws-1")]))
        .await;
    let mut outcomes = Vec::new();
    for user in ["mallory", "alice", "alice"] {
        outcomes.push(
            h.run(&Ev::Vote("isolate_host", "ws-1", user, true, None))
                .await,
        );
    }
    // A refused voter, an approval and a repeat vote: all three are timed.
    assert!(outcomes[0].contains("refused"), "{outcomes:?}");
    assert!(outcomes[1].ends_with("-> approved"), "{outcomes:?}");
    assert!(outcomes[2].contains("not pending"), "{outcomes:?}");
    for stage in ["queued", "deciding", "durable"] {
        assert_eq!(count(stage), 3, "{stage}:\n{}", h.metrics.render());
    }
    // A chat callback that becomes a vote is timed like one; a callback refused before any
    // vote (here: an unmapped chat user) is not a vote and is not timed.
    h.run(&Ev::Alert("t-2", MALWARE, &["T1059"], &[("host", "ws-2")]))
        .await;
    let a = h
        .action_of("isolate_host", "ws-2")
        .expect("a request for ws-2");
    let callback = |verdict| {
        ChatOp::Callback(crate::engine::ChatCallback {
            platform: "slack",
            replay_key: None,
            replay_ttl: Duration::minutes(5),
            platform_user: "U1".into(),
            approval_id: a.action_id.clone(),
            decision: "approve".into(),
            verdict,
            detail: json!({}),
        })
    };
    let refused = h
        .handle
        .chat(callback(Err(("unmapped_user", "no such user".into()))))
        .await
        .unwrap();
    assert!(matches!(refused, ChatReply::Refused(..)), "{refused:?}");
    for stage in ["queued", "deciding", "durable"] {
        assert_eq!(count(stage), 3, "{stage}: a refused callback is no vote");
    }
    let voted = h
        .handle
        .chat(callback(Ok(VoteCast {
            approval_id: a.action_id.clone(),
            user: "alice".into(),
            channel: "slack".into(),
            identity: "slack".into(),
            approve: true,
            request_hash: None,
            comment: String::new(),
        })))
        .await
        .unwrap();
    assert!(
        matches!(&voted, ChatReply::Voted(r) if r.as_ref().as_ref().is_ok_and(|o| o.outcome == "approved")),
        "{voted:?}"
    );
    for stage in ["queued", "deciding", "durable"] {
        assert_eq!(count(stage), 4, "{stage}:\n{}", h.metrics.render());
    }
    let Harness { handle, task, .. } = h;
    drop(handle);
    task.await.unwrap();
}

/// A vote's outcome carries the case as the vote left it, the same as the store holds once the
/// vote is durable: here the case's first human action is stamped by the vote.
#[tokio::test]
async fn a_vote_outcome_carries_its_case_as_committed() {
    let h = Harness::new(|_| {}).await;
    h.run(&Ev::Alert("t-1", MALWARE, &["T1059"], &[("host", "ws-1")]))
        .await;
    let a = h.action_of("isolate_host", "ws-1").expect("a request");
    let before = read::case(&h.store, &a.case_id).unwrap().unwrap();
    assert!(before.handoffs.first_human_action.is_none());
    let out = h.handle.vote(vote_on(&a.action_id)).await.unwrap();
    let case = out.case.expect("the case");
    assert!(case.handoffs.first_human_action.is_some());
    assert_eq!(Some(case), read::case(&h.store, &a.case_id).unwrap());
    let Harness { handle, task, .. } = h;
    drop(handle);
    task.await.unwrap();
}

/// Every durable commit of the engine's batches is timed by stage (start, pack, apply, flush,
/// sync), once each, and the stages add up to no more than the whole commit, so an operator can
/// see where commit time goes.
#[tokio::test]
async fn every_commit_is_timed_by_stage() {
    let h = Harness::new(|_| {}).await;
    let value = |name: &str| metric(&h, name);
    let stage = |what: &str, stage: &str| {
        value(&format!(
            "cordon_store_commit_stage_seconds_{what}{{stage=\"{stage}\"}}"
        ))
    };
    const STAGES: [&str; 5] = ["start", "pack", "apply", "flush", "sync"];
    for s in STAGES {
        assert_eq!(stage("count", s), 0.0);
    }
    h.run(&Ev::Alert("t-1", MALWARE, &["T1059"], &[("host", "ws-1")]))
        .await;
    h.run(&Ev::Vote("isolate_host", "ws-1", "alice", true, None))
        .await;
    // The alert's commit and the vote's at least; at most every durable commit (the queue
    // index built at start commits outside the engine's batches).
    let commits = stage("count", "start");
    assert!(
        (2.0..=h.store.durable_commits() as f64).contains(&commits),
        "{commits}"
    );
    for s in STAGES {
        assert_eq!(stage("count", s), commits, "{s}:\n{}", h.metrics.render());
    }
    let stages: f64 = STAGES.iter().map(|s| stage("sum", s)).sum();
    let whole = value("cordon_store_write_seconds_sum");
    assert!(
        stages > 0.0 && stages <= whole + 1e-9,
        "{stages} of {whole}"
    );
    let Harness { handle, task, .. } = h;
    drop(handle);
    task.await.unwrap();
}
