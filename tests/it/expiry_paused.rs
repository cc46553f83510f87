//! Approval expiry with paused tokio time: the daemon's own once-a-second timer, a clock that
//! follows tokio time, and an hour that passes without waiting for it.

use std::sync::Arc;
use std::time::Duration;

use cordon::action::ActionState;
use cordon::daemon::StartOptions;
use cordon::ingest::IngestFormat;

#[tokio::test(start_paused = true)]
async fn an_unanswered_request_expires_when_its_deadline_passes() {
    let (dir, mut cfg) = crate::support::workspace();
    cfg.policy.watch = false;
    let base = chrono::Utc::now();
    let start = tokio::time::Instant::now();
    let opts = StartOptions {
        clock: Arc::new(move || base + (tokio::time::Instant::now() - start)),
        expiry_timer: true,
        // The engine on this (paused) runtime, so its clock follows the paused time.
        engine_thread: false,
    };
    let d = crate::support::start_opts(dir, cfg, opts).await;
    let running = d.running();
    let payload =
        std::fs::read(crate::support::repo().join("tests/fixtures/elastic.json")).unwrap();
    let fields = IngestFormat::Elastic.parse(&payload, base).unwrap();
    let ack = running
        .engine
        .ingest(
            IngestFormat::Elastic,
            fields,
            String::from_utf8(payload).unwrap(),
            base,
        )
        .await
        .unwrap();
    let case = cordon::engine::read::case(&running.store, &ack.case_id)
        .unwrap()
        .unwrap();
    let isolate = cordon::engine::read::actions_of(&running.store, &case)
        .unwrap()
        .into_iter()
        .find(|a| a.kind == cordon::action::ActionKind::IsolateHost)
        .unwrap();
    assert_eq!(isolate.state, ActionState::AwaitingApproval);
    let deadline = isolate.approval.as_ref().unwrap().deadline;
    assert_eq!(
        (deadline - base).num_minutes(),
        60,
        "a high-severity alert gets the 60-minute default"
    );

    // Three quarters of the way it is escalated but still pending. (Paused time also jumps ahead
    // while the runtime waits on the store's disk thread, one timer tick at a time, so the
    // checkpoints keep a wide margin from the deadline.)
    tokio::time::sleep(Duration::from_secs(45 * 60)).await;
    running.engine.tick().await;
    let a = cordon::engine::read::action(&running.store, &isolate.action_id)
        .unwrap()
        .unwrap();
    assert_eq!(a.state, ActionState::AwaitingApproval);
    assert!(
        a.approval.as_ref().unwrap().escalated,
        "escalated at half the deadline"
    );

    // Past it, the timer expires it: it will never run, and a late vote is refused.
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    running.engine.tick().await;
    let a = cordon::engine::read::action(&running.store, &isolate.action_id)
        .unwrap()
        .unwrap();
    assert_eq!(a.state, ActionState::Expired);
    let late = running
        .engine
        .vote(cordon::engine::VoteCast {
            approval_id: a.action_id.clone(),
            user: "alice".into(),
            channel: "grpc".into(),
            identity: "token".into(),
            approve: true,
            request_hash: None,
            comment: String::new(),
        })
        .await;
    assert!(
        matches!(late, Err(cordon::engine::VoteError::Expired(_))),
        "{late:?}"
    );
    assert_eq!(d.stop().await, 0);
}
