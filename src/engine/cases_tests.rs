//! Rule tests of the closing half of the case state machine: no daemon, no sockets; the engine
//! is driven directly, one committed transaction per step, with a clock set by hand.

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::TimeZone;

use super::*;
use crate::case::{Disposition, Helped};
use crate::config::Config;
use crate::store::StoreOptions;

struct Rig {
    _dir: tempfile::TempDir,
    eng: Engine,
    store: Store,
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl Rig {
    fn new() -> Rig {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            data_dir: dir.path().join("data"),
            policies_dir: repo.join("policies"),
            playbooks_dir: repo.join("playbooks"),
            connectors_dir: repo.join("connectors"),
            ..Config::default()
        };
        cfg.enrichment.assets = Some(repo.join("deploy/enrichment/assets.toml"));
        cfg.cases.sla.high_mins = 30;
        let v = crate::daemon::validate(cfg.clone(), "rule test").unwrap();
        let store = Store::open(&cfg.data_dir, &StoreOptions::default()).unwrap();
        let now = Arc::new(Mutex::new(
            Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap(),
        ));
        let clock_now = now.clone();
        let (eng, _handle) = new(
            EngineParts {
                store: store.clone(),
                policies: Policies::new(v.policies),
                policies_dir: cfg.policies_dir.clone(),
                playbooks: Arc::new(v.playbooks),
                enricher: v.enricher,
                suppressions: vec![],
                cases: cfg.cases.clone(),
                correlation: cfg.correlation.clone(),
                metrics: Metrics::new(),
                max_batch: 64,
                clock: Arc::new(move || *clock_now.lock().unwrap()),
                approvals: cfg.approvals.clone(),
                connectors: v.connectors,
                runnable: None,
                chat: false,
                learning: cfg.learning.clone(),
                shadow: None,
            },
            64,
        );
        Rig {
            _dir: dir,
            eng,
            store,
            now,
        }
    }

    /// Runs `f` in one transaction and commits it.
    async fn step<R>(&mut self, f: impl FnOnce(&mut Engine, &mut Txn) -> R) -> R {
        let mut txn = self.store.begin();
        let r = f(&mut self.eng, &mut txn);
        self.store.commit(txn).await.unwrap();
        r
    }

    async fn alert(&mut self, id: &str, host: &str) -> String {
        let body = json!({
            "source_alert_id": id, "title": "Malware EncodedCommand",
            "rule": {"id": "rule-malware", "name": "Malware EncodedCommand"},
            "severity": "high", "techniques": ["T1059"],
            "entities": [{"kind": "host", "value": host}],
        })
        .to_string();
        let now = *self.now.lock().unwrap();
        let fields = IngestFormat::Cordon.parse(body.as_bytes(), now).unwrap();
        self.step(|e, t| e.ingest(t, IngestFormat::Cordon, &fields, body, now))
            .await
            .unwrap()
            .case_id
    }

    fn case(&self, id: &str) -> Case {
        read::case(&self.store, id).unwrap().unwrap()
    }

    fn action(&self, case_id: &str, kind: &str) -> ActionRequest {
        read::actions_of(&self.store, &self.case(case_id))
            .unwrap()
            .into_iter()
            .rfind(|a| a.kind.as_str() == kind)
            .unwrap()
    }

    async fn op(
        &mut self,
        case_id: &str,
        user: &str,
        kind: CaseOpKind,
    ) -> Result<Case, CaseOpError> {
        let op = CaseOp {
            case_id: case_id.into(),
            user: user.into(),
            channel: "grpc".into(),
            identity: "token".into(),
            kind,
        };
        self.step(|e, t| e.case_op(t, &op))
            .await
            .unwrap()
            .map(|o| o.case)
    }

    async fn approve(&mut self, action_id: &str, user: &str) {
        let v = VoteCast {
            approval_id: action_id.into(),
            user: user.into(),
            channel: "grpc".into(),
            identity: "token".into(),
            approve: true,
            request_hash: None,
            comment: String::new(),
        };
        self.step(|e, t| e.vote(t, &v)).await.unwrap().unwrap();
    }

    /// An alert on `host` whose isolation `alice` approves and the executor runs (`sent`: see
    /// [`Rig::run_approved_sending`]); returns the case and the isolation's id.
    async fn isolated(&mut self, alert: &str, host: &str, sent: bool) -> (String, String) {
        let c = self.alert(alert, host).await;
        let iso = self.action(&c, "isolate_host").action_id;
        self.approve(&iso, "alice").await;
        self.run_approved_sending(&c, sent).await;
        (c, iso)
    }

    /// `carol` asks to undo `action_id`.
    async fn rollback(&mut self, action_id: &str) -> ExecReply {
        let op = ExecOp::Rollback {
            action_id: action_id.into(),
            user: "carol".into(),
            reason: "cleaned".into(),
        };
        self.step(|e, t| e.exec(t, op)).await.unwrap()
    }

    /// Claims and finishes every approved action of the case as succeeded, after a write
    /// (the executor's records, without a vendor).
    async fn run_approved(&mut self, case_id: &str) {
        self.run_approved_sending(case_id, true).await
    }

    /// [`Rig::run_approved`]; with `sent` false the probe found the target already in the
    /// desired state and nothing was sent.
    async fn run_approved_sending(&mut self, case_id: &str, sent: bool) {
        for a in read::actions_of(&self.store, &self.case(case_id)).unwrap() {
            if a.state != ActionState::Approved {
                continue;
            }
            let id = a.action_id.clone();
            self.step(|e, t| {
                e.exec(
                    t,
                    ExecOp::Claim {
                        action_id: id.clone(),
                        mode: "live".into(),
                    },
                )
            })
            .await
            .unwrap();
            if sent {
                let intent = ExecNote {
                    kind: AuditKind::WriteIntent,
                    body: json!({"write": 1}),
                    update: ExecUpdate {
                        write_sent: true,
                        ..ExecUpdate::default()
                    },
                };
                self.step(|e, t| {
                    e.exec(
                        t,
                        ExecOp::Record {
                            action_id: id.clone(),
                            notes: vec![intent],
                        },
                    )
                })
                .await
                .unwrap();
            }
            let outcome = if sent {
                "done; confirmed by probe"
            } else {
                "already in the desired state; nothing was sent"
            };
            self.step(|e, t| {
                e.exec(
                    t,
                    ExecOp::Finish {
                        action_id: id.clone(),
                        notes: vec![],
                        to: ActionState::Succeeded,
                        outcome: outcome.into(),
                        escalate: None,
                    },
                )
            })
            .await
            .unwrap();
        }
    }

    fn audit_kinds(&self, case_id: &str) -> Vec<String> {
        self.store
            .audit_records(1, usize::MAX)
            .unwrap()
            .into_iter()
            .filter(|r| r.body.case_id.as_deref() == Some(case_id))
            .map(|r| r.body.kind)
            .collect()
    }
}

fn close(d: Disposition, cancel_pending: bool) -> CaseOpKind {
    CaseOpKind::Close(CloseCase {
        disposition: d,
        reason: "checked".into(),
        helped: Helped::default(),
        missed: None,
        duplicate_of: None,
        cancel_pending,
    })
}

#[tokio::test]
async fn a_closed_case_recovers_when_its_host_is_released_then_learns_and_stays_closed() {
    let mut r = Rig::new();
    let (c, iso) = r.isolated("l-1", "ws-1", true).await;
    assert_eq!(r.case(&c).state, CaseState::Executed);

    // Closed from executed; reopened, it goes back there; closed again.
    let closed = r
        .op(&c, "alice", close(Disposition::FalsePositive, false))
        .await
        .unwrap();
    assert_eq!(closed.state, CaseState::Closed);
    assert_eq!(closed.closure.as_ref().unwrap().from, CaseState::Executed);
    let reopened = r
        .op(
            &c,
            "bob",
            CaseOpKind::Reopen {
                reason: "not benign".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (reopened.state, reopened.closure.is_none()),
        (CaseState::Executed, true)
    );
    assert_eq!(reopened.reopened.len(), 1);
    r.op(&c, "alice", close(Disposition::TruePositive, false))
        .await
        .unwrap();

    // The host is released after closure: the closed case becomes recovered, closure kept.
    let rb = r.rollback(&iso).await;
    let ExecReply::RollbackProposed(rb) = rb else {
        panic!("{rb:?}")
    };
    r.approve(&rb.action_id, "alice").await;
    r.run_approved(&c).await;
    let case = r.case(&c);
    assert_eq!(case.state, CaseState::Recovered);
    assert_eq!(
        case.closure.as_ref().unwrap().disposition,
        Disposition::TruePositive
    );
    assert_eq!(case.recovery.as_ref().unwrap().how, "containment_released");
    assert!(case.handoffs.recovered.is_some() && case.handoffs.closed.is_some());

    // The learning code marks it learned; a learned case cannot be reopened.
    let now = *r.now.lock().unwrap();
    let moved = r
        .step(|e, t| e.mark_learned(t, &c, "every proposal decided", now))
        .await
        .unwrap();
    assert!(moved);
    let case = r.case(&c);
    assert_eq!(case.state, CaseState::Learned);
    assert_eq!(case.handoffs.learning_done, Some(now));
    let err = r
        .op(
            &c,
            "carol",
            CaseOpKind::Reopen {
                reason: "again".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CaseOpError::Conflict(ref m) if m.contains("learned")),
        "{err:?}"
    );
    let kinds = r.audit_kinds(&c);
    for k in [
        "case_closed",
        "case_reopened",
        "case_recovered",
        "case_op_refused",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing: {kinds:?}");
    }
}

#[tokio::test]
async fn an_open_case_breaches_its_sla_once_and_a_closed_one_never() {
    let mut r = Rig::new();
    let open = r.alert("s-1", "ws-1").await;
    let done = r.alert("s-2", "ws-2").await;
    assert!(r.case(&open).sla_deadline.is_some());
    r.op(&done, "alice", close(Disposition::FalsePositive, true))
        .await
        .unwrap();
    // Not yet due.
    r.step(|e, t| e.tick(t)).await.unwrap();
    *r.now.lock().unwrap() += Duration::minutes(31);
    r.step(|e, t| e.tick(t)).await.unwrap();
    r.step(|e, t| e.tick(t)).await.unwrap();
    let breaches = |case_id: &str| {
        r.store
            .audit_records(1, usize::MAX)
            .unwrap()
            .into_iter()
            .filter(|x| {
                x.body.kind == "escalation"
                    && x.body.case_id.as_deref() == Some(case_id)
                    && x.body.data["escalation"] == json!("sla_breach")
            })
            .count()
    };
    assert_eq!(breaches(&open), 1);
    assert_eq!(breaches(&done), 0);
    let case = r.case(&open);
    assert!(case.sla_escalated);
    assert!(case.handoffs.ir_escalation.is_some());
}

#[tokio::test]
async fn recover_needs_an_executed_or_closed_case_and_a_permitted_user() {
    let mut r = Rig::new();
    let c = r.alert("r-1", "ws-1").await;
    let err = r
        .op(
            &c,
            "alice",
            CaseOpKind::Recover {
                reason: "fine".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CaseOpError::Conflict(ref m) if m.contains("recommended")),
        "{err:?}"
    );
    let err = r
        .op(&c, "mallory", CaseOpKind::Note { text: "hi".into() })
        .await
        .unwrap_err();
    assert!(matches!(err, CaseOpError::Refused(_)), "{err:?}");
    r.op(&c, "alice", close(Disposition::FalsePositive, true))
        .await
        .unwrap();
    let case = r
        .op(
            &c,
            "bob",
            CaseOpKind::Recover {
                reason: "reimaged".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(case.state, CaseState::Recovered);
    assert_eq!(case.recovery.as_ref().unwrap().by.as_deref(), Some("bob"));
}

/// What cordon found already done, it did not do: an action whose probe found the target in
/// the desired state (nothing sent) cannot be rolled back, and a block found in place gets no
/// expiry, so cordon never undoes someone else's isolation or block. An action that sent its
/// write can be, and does.
#[tokio::test]
async fn what_cordon_found_already_done_it_never_undoes() {
    let mut r = Rig::new();
    let (_, iso) = r.isolated("f-1", "ws-1", false).await;
    let a = read::action(&r.store, &iso).unwrap().unwrap();
    assert_eq!(a.state, ActionState::Succeeded);
    assert_eq!(a.execution.as_ref().unwrap().writes_sent, 0);
    let refused = r.rollback(&iso).await;
    let ExecReply::Refused(why) = refused else {
        panic!("{refused:?}")
    };
    assert!(
        why.contains("sent nothing") && why.contains("ws-1"),
        "{why}"
    );
    assert!(
        read::action(&r.store, &iso)
            .unwrap()
            .unwrap()
            .rolled_back_by
            .is_none()
    );

    let (_, iso2) = r.isolated("f-2", "ws-2", true).await;
    let proposed = r.rollback(&iso2).await;
    assert!(
        matches!(proposed, ExecReply::RollbackProposed(_)),
        "{proposed:?}"
    );

    // A block with an expiry: indexed only when cordon sent it.
    let expiries = |r: &Rig| {
        r.store
            .keys_while(keys::BLOCK_EXPIRY_PREFIX, |_| true)
            .unwrap()
            .len()
    };
    let now = *r.now.lock().unwrap();
    for (action_id, indexed) in [(iso, 0), (iso2, 1)] {
        let mut block = read::action(&r.store, &action_id).unwrap().unwrap();
        block.kind = crate::action::ActionKind::BlockIoc;
        block
            .parameters
            .insert(crate::schedule::EXPIRY_PARAMETER.into(), json!(60));
        r.step(|e, t| e.index_block_expiry(t, &block, now))
            .await
            .unwrap();
        assert_eq!(expiries(&r), indexed, "{action_id}");
    }
}

/// Two cases block one indicator at one connector: the first sent the block (expiring after 60
/// minutes), the second found it in place half an hour later (expiring after 120 minutes from
/// then). At the first one's expiry its unblock is not proposed, since the second case still
/// relies on the indicator being blocked: it is postponed to the second one's expiry, and
/// proposed then.
#[tokio::test]
async fn a_block_another_case_relies_on_is_not_undone_at_its_expiry() {
    let mut r = Rig::new();
    let (case_a, a) = r.isolated("f-1", "ws-1", true).await;
    let (_, b) = r.isolated("f-2", "ws-2", false).await;
    let start = *r.now.lock().unwrap();
    for (id, mins, finished) in [(&a, 60, start), (&b, 120, start + Duration::minutes(30))] {
        let block = as_block(&r, id, mins, finished);
        r.step(|e, t| {
            t.put_json(keys::action(id), &block).unwrap();
            e.index_block_expiry(t, &block, finished)
        })
        .await
        .unwrap();
    }
    let expiries = |r: &Rig| {
        r.store
            .keys_while(keys::BLOCK_EXPIRY_PREFIX, |_| true)
            .unwrap()
    };
    // Only the block cordon sent has an expiry of its own.
    assert_eq!(
        expiries(&r),
        [keys::block_expiry(start + Duration::minutes(60), &a)]
    );
    let expired = |r: &Rig| block_expired(r, &case_a);

    let at = start + Duration::minutes(61);
    r.step(|e, t| e.expire_blocks(t, at)).await.unwrap();
    let seen = expired(&r);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["unblock"], json!("postponed"), "{seen:?}");
    assert_eq!(seen[0]["relied_on_by"], json!([b]), "{seen:?}");
    let due = start + Duration::minutes(150);
    assert_eq!(expiries(&r), [keys::block_expiry(due, &a)]);
    assert_eq!(
        undoing(&r, &case_a, &a),
        0,
        "the unblock was proposed while case B relies on it"
    );

    // Once the second block is due too, nothing relies on the first: its unblock goes ahead.
    let later = due + Duration::minutes(1);
    r.step(|e, t| e.expire_blocks(t, later)).await.unwrap();
    let seen = expired(&r);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].get("unblock").is_none(), "{seen:?}");
    assert!(expiries(&r).is_empty());
}

/// `id`'s action as a block of one indicator (the same for every call) that succeeded at
/// `finished` and expires `mins` after it.
fn as_block(r: &Rig, id: &str, mins: i64, finished: DateTime<Utc>) -> ActionRequest {
    let mut block = read::action(&r.store, id).unwrap().unwrap();
    block.kind = crate::action::ActionKind::BlockIoc;
    block.target = crate::action::Target {
        kind: crate::action::TargetKind::Indicator,
        id: "sha256:".to_string() + &"ab".repeat(32),
    };
    block
        .parameters
        .insert(crate::schedule::EXPIRY_PARAMETER.into(), json!(mins));
    if let Some(e) = block.execution.as_mut() {
        e.finished_at = Some(finished);
    }
    block
}

/// How many actions of `case_id` undo `action_id`.
fn undoing(r: &Rig, case_id: &str, action_id: &str) -> usize {
    read::actions_of(&r.store, &r.case(case_id))
        .unwrap()
        .into_iter()
        .filter(|x| x.rollback_of.as_deref() == Some(action_id))
        .count()
}

/// The `block_expired` records of `case_id`, oldest first.
fn block_expired(r: &Rig, case_id: &str) -> Vec<serde_json::Value> {
    r.store
        .audit_records(1, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|x| x.body.kind == "block_expired" && x.body.case_id.as_deref() == Some(case_id))
        .map(|x| x.body.data)
        .collect()
}

/// The other case's block may succeed in the very batch in which the first one expires (or in
/// the commit still being written): the expiry reads the standing blocks through the batch, so
/// it sees that one too and postpones the unblock.
#[tokio::test]
async fn a_block_that_succeeded_in_the_same_batch_is_relied_on_too() {
    let mut r = Rig::new();
    let (case_a, a) = r.isolated("f-1", "ws-1", true).await;
    let (_, b) = r.isolated("f-2", "ws-2", false).await;
    let start = *r.now.lock().unwrap();
    let block_a = as_block(&r, &a, 60, start);
    r.step(|e, t| {
        t.put_json(keys::action(&a), &block_a).unwrap();
        e.index_block_expiry(t, &block_a, start)
    })
    .await
    .unwrap();
    let at = start + Duration::minutes(61);
    let block_b = as_block(&r, &b, 120, at);
    r.step(|e, t| {
        t.put_json(keys::action(&b), &block_b).unwrap();
        e.index_block_expiry(t, &block_b, at).unwrap();
        e.expire_blocks(t, at)
    })
    .await
    .unwrap();
    let seen = block_expired(&r, &case_a);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["unblock"], json!("postponed"), "{seen:?}");
    assert_eq!(seen[0]["relied_on_by"], json!([b]), "{seen:?}");
    assert_eq!(
        undoing(&r, &case_a, &a),
        0,
        "the unblock was proposed while case B relies on it"
    );
}

/// A store from before the index of standing blocks gets it once, at start: every block that
/// succeeded and was not undone, so an expiry sees them as well.
#[tokio::test]
async fn blocks_from_before_the_index_are_indexed_once_at_start() {
    let mut r = Rig::new();
    let (_, a) = r.isolated("f-1", "ws-1", true).await;
    let (_, b) = r.isolated("f-2", "ws-2", true).await;
    for (id, undone) in [(&a, false), (&b, true)] {
        let mut block = read::action(&r.store, id).unwrap().unwrap();
        block.kind = crate::action::ActionKind::BlockIoc;
        if undone {
            block.rolled_back_by = Some("someone".into());
        }
        // Written as an earlier version did: the record only.
        r.step(|_, t| t.put_json(keys::action(id), &block).unwrap())
            .await;
    }
    let standing = |r: &Rig| r.store.keys_while(b"ib/", |_| true).unwrap();
    assert!(standing(&r).is_empty());
    r.eng.build_block_index().await.unwrap();
    let block = read::action(&r.store, &a).unwrap().unwrap();
    assert_eq!(
        standing(&r),
        [keys::block_standing(&block.connector, &block.target, &a)]
    );
    assert!(r.store.get(keys::BLOCKS_INDEXED).unwrap().is_some());
    // Once: a later start leaves the index as the engine keeps it.
    r.step(|_, t| t.delete(keys::block_standing(&block.connector, &block.target, &a)))
        .await;
    r.eng.build_block_index().await.unwrap();
    assert!(standing(&r).is_empty());
}
