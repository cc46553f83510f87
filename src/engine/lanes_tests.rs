//! Engine tests of the urgent lane: a vote is decided ahead of queued alerts, and a batch being
//! decided is cut short for it (no daemon, no sockets, no timing).

use std::path::Path;

use super::tests::vote_on;
use super::*;
use crate::config::Config;
use crate::store::StoreOptions;

const MAX_BATCH: usize = 4;

/// An engine on `store` with the shipped policies and playbooks and a small batch cap.
fn engine_on(store: &Store, dir: &Path) -> (Engine, EngineHandle) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = Config {
        data_dir: dir.join("data"),
        policies_dir: repo.join("policies"),
        playbooks_dir: repo.join("playbooks"),
        connectors_dir: repo.join("connectors"),
        ..Config::default()
    };
    cfg.enrichment.assets = Some(repo.join("deploy/enrichment/assets.toml"));
    cfg.enrichment.identities = Some(repo.join("deploy/enrichment/identities.toml"));
    cfg.enrichment.intel = Some(repo.join("deploy/enrichment/intel.toml"));
    let v = crate::daemon::validate(cfg.clone(), "lane test").unwrap_or_else(|p| panic!("{p:#?}"));
    new(
        EngineParts {
            shadow: None,
            store: store.clone(),
            policies: Policies::new(v.policies),
            policies_dir: cfg.policies_dir.clone(),
            playbooks: Arc::new(v.playbooks),
            enricher: v.enricher,
            suppressions: cfg.suppressions.clone(),
            cases: cfg.cases.clone(),
            correlation: cfg.correlation.clone(),
            metrics: Metrics::new(),
            max_batch: MAX_BATCH,
            clock: system_clock(),
            approvals: cfg.approvals.clone(),
            connectors: v.connectors,
            runnable: None,
            chat: false,
            learning: cfg.learning.clone(),
        },
        64,
    )
}

fn alert(id: &str, host: &str) -> (IngestFormat, AlertFields, String) {
    let body = json!({
        "source_alert_id": id,
        "title": "Malware EncodedCommand",
        "rule": {"id": "rule-malware", "name": "Malware EncodedCommand"},
        "severity": "high",
        "techniques": ["T1059"],
        "entities": [{"kind": "host", "value": host}],
    })
    .to_string();
    let fields = IngestFormat::Cordon
        .parse(body.as_bytes(), Utc::now())
        .unwrap();
    (IngestFormat::Cordon, fields, body)
}

/// A store holding one `isolate_host` request awaiting approval; returns its id.
async fn pending_request(store: &Store, dir: &Path) -> String {
    pending_request_on(store, dir, "ws-pending").await
}

/// As [`pending_request`], for an alert on `host`.
async fn pending_request_on(store: &Store, dir: &Path, host: &str) -> String {
    let (eng, handle) = engine_on(store, dir);
    let task = tokio::spawn(eng.run());
    let (format, fields, raw) = alert(&format!("pending-{host}"), host);
    let ack = handle
        .ingest(format, fields, raw, Utc::now())
        .await
        .unwrap();
    drop(handle);
    task.await.unwrap();
    let case = read::case(store, &ack.case_id).unwrap().unwrap();
    read::actions_of(store, &case)
        .unwrap()
        .into_iter()
        .find(|a| a.state == ActionState::AwaitingApproval)
        .expect("a request awaiting approval")
        .action_id
}

/// The audit kinds after `from`, alert records named by their source id's number.
fn kinds_after(store: &Store, from: u64) -> Vec<String> {
    store
        .audit_records(from + 1, usize::MAX)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.body.kind.as_str() {
            "alert_received" => Some("alert".to_string()),
            "vote" => Some("vote".to_string()),
            _ => None,
        })
        .collect()
}

/// Twelve alerts are queued before a vote (three batches' worth): the vote is decided in the
/// first batch, ahead of all of them, and still answered only once durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_queued_behind_alerts_is_decided_in_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data"), &StoreOptions::default()).unwrap();
    let id = pending_request(&store, dir.path()).await;
    let head = store.head().seq;
    let (eng, handle) = engine_on(&store, dir.path());
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..12 {
        let h = handle.clone();
        posts.spawn(async move {
            let (format, fields, raw) = alert(&format!("queued-{i}"), &format!("ws-q{i}"));
            h.ingest(format, fields, raw, Utc::now()).await.unwrap();
        });
    }
    // Wait (bounded) until all twelve wait in the engine's queue, then queue the vote.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while eng.lanes.queued() != (0, 12) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            eng.lanes.queued()
        );
        tokio::task::yield_now().await;
    }
    let h = handle.clone();
    let v = vote_on(&id);
    let vote = tokio::spawn(async move { h.vote(v).await });
    while eng.lanes.queued().0 + eng.lanes.queued().1 != 13 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            eng.lanes.queued()
        );
        tokio::task::yield_now().await;
    }
    let task = tokio::spawn(eng.run());
    assert_eq!(vote.await.unwrap().unwrap().outcome, "approved");
    while posts.join_next().await.is_some() {}
    drop(handle);
    task.await.unwrap();
    let kinds = kinds_after(&store, head);
    assert_eq!(kinds.len(), 13, "{kinds:?}");
    assert_eq!(kinds[0], "vote", "the vote came after alerts: {kinds:?}");
}

/// A vote that arrives while a batch of alerts is being decided joins that batch after the
/// event being decided; the rest of the batch goes back to the front of the queue, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_cut_short_for_a_vote_and_the_rest_decided_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data"), &StoreOptions::default()).unwrap();
    let id = pending_request(&store, dir.path()).await;
    let head = store.head().seq;
    let (mut eng, handle) = engine_on(&store, dir.path());
    let mut acks = Vec::new();
    let mut batch = Vec::new();
    for i in 0..MAX_BATCH {
        let (format, fields, raw) = alert(&format!("cut-{i}"), &format!("ws-c{i}"));
        let (reply, rx) = oneshot::channel();
        batch.push(Event::Ingest {
            format,
            fields: Box::new(fields),
            raw,
            received_at: Utc::now(),
            reply,
        });
        acks.push(rx);
    }
    // The vote is waiting by the time the first alert of the batch has been decided.
    let (reply, vote) = oneshot::channel();
    handle
        .urgent
        .try_send(Event::Vote {
            vote: vote_on(&id),
            reply,
            sent: std::time::Instant::now(),
        })
        .unwrap();
    let (txn, prepared) = eng.prepare(batch, &mut None);
    assert_eq!(prepared.events, 2, "one alert and the vote");
    assert_eq!(eng.lanes.queued(), (0, MAX_BATCH - 1));
    let result = eng.parts.store.start_commit(txn).await;
    eng.finish(prepared, result);
    assert_eq!(vote.await.unwrap().unwrap().outcome, "approved");
    assert_eq!(kinds_after(&store, head), ["alert", "vote"]);
    // The rest of the batch is decided next, first in line.
    let task = tokio::spawn(eng.run());
    for rx in acks {
        rx.await.unwrap().unwrap();
    }
    drop(handle);
    task.await.unwrap();
    assert_eq!(
        kinds_after(&store, head),
        ["alert", "vote", "alert", "alert", "alert"]
    );
}

fn ingest_event(i: usize) -> (Event, oneshot::Receiver<Result<IngestAck, EngineError>>) {
    let (format, fields, raw) = alert(&format!("early-{i}"), &format!("ws-e{i}"));
    let (reply, rx) = oneshot::channel();
    (
        Event::Ingest {
            format,
            fields: Box::new(fields),
            raw,
            received_at: Utc::now(),
            reply,
        },
        rx,
    )
}

/// A batch that starts with a vote ends with it: the alerts behind it go back to the front of
/// the queue, so the vote's commit carries only the vote. The next batch is not ended early even
/// if it starts with a vote too, so votes cannot starve the alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_that_starts_a_batch_ends_it_but_not_two_batches_in_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data"), &StoreOptions::default()).unwrap();
    let first = pending_request_on(&store, dir.path(), "ws-one").await;
    let second = pending_request_on(&store, dir.path(), "ws-two").await;
    let head = store.head().seq;
    let (mut eng, _handle) = engine_on(&store, dir.path());
    let mut batch = Vec::new();
    let (reply, vote1) = oneshot::channel();
    batch.push(Event::Vote {
        vote: vote_on(&first),
        reply,
        sent: std::time::Instant::now(),
    });
    let mut acks = Vec::new();
    for i in 0..MAX_BATCH - 1 {
        let (ev, rx) = ingest_event(i);
        batch.push(ev);
        acks.push(rx);
    }
    let (txn, prepared) = eng.prepare(batch, &mut None);
    assert_eq!(prepared.events, 1, "the vote alone");
    assert_eq!(eng.lanes.queued(), (0, MAX_BATCH - 1));
    let result = eng.parts.store.start_commit(txn).await;
    eng.finish(prepared, result);
    assert_eq!(vote1.await.unwrap().unwrap().outcome, "approved");
    assert_eq!(kinds_after(&store, head), ["vote"]);

    // The next batch: another vote, then the deferred alerts: all of them are decided.
    let (reply, vote2) = oneshot::channel();
    let mut batch = vec![Event::Vote {
        vote: vote_on(&second),
        reply,
        sent: std::time::Instant::now(),
    }];
    batch.extend(std::iter::from_fn(|| eng.lanes.try_next()));
    assert_eq!(batch.len(), MAX_BATCH);
    let (txn, prepared) = eng.prepare(batch, &mut None);
    assert_eq!(prepared.events, MAX_BATCH, "not ended early twice in a row");
    let result = eng.parts.store.start_commit(txn).await;
    eng.finish(prepared, result);
    assert_eq!(vote2.await.unwrap().unwrap().outcome, "approved");
    for rx in acks {
        rx.await.unwrap().unwrap();
    }
    assert_eq!(
        kinds_after(&store, head),
        ["vote", "vote", "alert", "alert", "alert"]
    );
}

/// A vote cast while a commit is being written joins the batch that waits for that commit, and
/// is answered with it: two commits in all, not a third one for the vote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_cast_during_a_commit_joins_the_batch_waiting_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data"), &StoreOptions::default()).unwrap();
    let id = pending_request(&store, dir.path()).await;
    let head = store.head().seq;
    let commits = store.durable_commits();
    let (eng, handle) = engine_on(&store, dir.path());
    let task = tokio::spawn(eng.run());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        assert!(std::time::Instant::now() < deadline, "waiting for {what}");
        !done()
    };
    let hold = store.hold_writes_for_tests();
    // The first alert's commit is written and held there.
    let h = handle.clone();
    let first = tokio::spawn(async move {
        let (format, fields, raw) = alert("during-1", "ws-d1");
        h.ingest(format, fields, raw, Utc::now()).await
    });
    while wait_for("the first commit", &|| store.writes_held_for_tests() == 1) {
        tokio::task::yield_now().await;
    }
    // The second alert is taken and decided; its batch waits for the first commit.
    let (ev, second) = ingest_event(2);
    handle.tx.try_send(ev).unwrap();
    let queued = |tx: &mpsc::Sender<Event>| tx.max_capacity() - tx.capacity();
    while wait_for("the second alert to be taken", &|| queued(&handle.tx) == 0) {
        tokio::task::yield_now().await;
    }
    let (reply, vote) = oneshot::channel();
    handle
        .urgent
        .try_send(Event::Vote {
            vote: vote_on(&id),
            reply,
            sent: std::time::Instant::now(),
        })
        .unwrap();
    while wait_for("the vote to be taken", &|| queued(&handle.urgent) == 0) {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        store.writes_held_for_tests(),
        1,
        "still the first commit only"
    );
    drop(hold);
    assert_eq!(vote.await.unwrap().unwrap().outcome, "approved");
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(
        store.durable_commits() - commits,
        2,
        "the vote rode the second commit"
    );
    drop(handle);
    task.await.unwrap();
    assert_eq!(kinds_after(&store, head), ["alert", "alert", "vote"]);
}
