//! Engine rule tests: batches of events on a temporary store with a fixed clock, the shipped
//! policies and playbooks, and no daemon and no sockets.
//!
//! `check(events, expect)` runs the events in order and compares what they did (each event's
//! answer, then every case with its actions) with `expect`. Ids are shown as ordinals (`case 1`,
//! `a1`), so expectations do not depend on generated ids.

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::config::Config;
use crate::store::StoreOptions;

/// One thing that happens to the engine.
enum Ev {
    /// A native alert: source id, rule name (also its title), ATT&CK techniques, entities.
    Alert(
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
    ),
    /// A vote on the request of (action kind, target id): user, approve?, the request hash
    /// the approver saw (`None`: none sent; `Some("stale")`: a hash that is not the request's).
    Vote(
        &'static str,
        &'static str,
        &'static str,
        bool,
        Option<&'static str>,
    ),
    /// The clock moves forward this many seconds.
    Advance(i64),
    /// The engine's timer fires (expiry and escalation).
    Tick,
}

struct Harness {
    _dir: tempfile::TempDir,
    handle: EngineHandle,
    store: Store,
    now: Arc<Mutex<DateTime<Utc>>>,
    task: tokio::task::JoinHandle<()>,
    metrics: Metrics,
}

type Built = (
    tempfile::TempDir,
    Engine,
    EngineHandle,
    Store,
    Arc<Mutex<DateTime<Utc>>>,
);

/// An engine on a temporary store with the shipped policies, playbooks and enrichment, and a
/// clock set by hand.
fn engine(f: impl FnOnce(&mut Config)) -> Built {
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
    cfg.enrichment.identities = Some(repo.join("deploy/enrichment/identities.toml"));
    cfg.enrichment.intel = Some(repo.join("deploy/enrichment/intel.toml"));
    f(&mut cfg);
    let v = crate::daemon::validate(cfg.clone(), "rule test").unwrap_or_else(|p| panic!("{p:#?}"));
    let store = Store::open(&cfg.data_dir, &StoreOptions::default()).unwrap();
    let now = Arc::new(Mutex::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap(),
    ));
    let clock_now = now.clone();
    let (eng, handle) = new(
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
            max_batch: 64,
            clock: Arc::new(move || *clock_now.lock().unwrap()),
            approvals: cfg.approvals.clone(),
            connectors: v.connectors,
            runnable: None,
            chat: false,
            learning: cfg.learning.clone(),
        },
        64,
    );
    (dir, eng, handle, store, now)
}

impl Harness {
    async fn new(f: impl FnOnce(&mut Config)) -> Harness {
        let (dir, eng, handle, store, now) = engine(f);
        let metrics = eng.parts.metrics.clone();
        let task = tokio::spawn(eng.run());
        Harness {
            _dir: dir,
            handle,
            store,
            now,
            task,
            metrics,
        }
    }

    fn action_of(&self, kind: &str, target: &str) -> Option<ActionRequest> {
        read::cases(&self.store, None, usize::MAX)
            .unwrap()
            .iter()
            .flat_map(|c| read::actions_of(&self.store, c).unwrap())
            .find(|a| a.kind.as_str() == kind && a.target.id == target)
    }

    /// Runs one event; returns what it did, as a line.
    async fn run(&self, ev: &Ev) -> String {
        match ev {
            Ev::Alert(id, rule, techniques, entities) => {
                let body = json!({
                    "source_alert_id": id,
                    "title": rule,
                    "rule": {"id": format!("rule-{rule}"), "name": rule},
                    "severity": "high",
                    "techniques": techniques,
                    "entities": entities.iter().map(|(k, v)| json!({"kind": k, "value": v})).collect::<Vec<_>>(),
                })
                .to_string();
                let now = *self.now.lock().unwrap();
                let fields = IngestFormat::Cordon.parse(body.as_bytes(), now).unwrap();
                let ack = self
                    .handle
                    .ingest(IngestFormat::Cordon, fields, body, now)
                    .await
                    .unwrap();
                let case = self.case_ordinal(&ack.case_id);
                format!(
                    "alert {id} -> case {case}{}",
                    if ack.duplicate { " (duplicate)" } else { "" }
                )
            }
            Ev::Vote(kind, target, user, approve, hash) => {
                let Some(a) = self.action_of(kind, target) else {
                    return format!("vote {user} {kind} {target} -> no such request");
                };
                let request_hash = hash.map(|h| match h {
                    "current" => a.request_hash(&self.policy_hash()),
                    other => other.to_string(),
                });
                let r = self
                    .handle
                    .vote(VoteCast {
                        approval_id: a.action_id.clone(),
                        user: user.to_string(),
                        channel: "grpc".into(),
                        identity: "mtls".into(),
                        approve: *approve,
                        request_hash,
                        comment: String::new(),
                    })
                    .await;
                let verb = if *approve { "approve" } else { "deny" };
                match r {
                    Ok(o) => format!("{verb} {user} {kind} {target} -> {}", o.outcome),
                    Err(e) => format!("{verb} {user} {kind} {target} -> {}", refusal(&e)),
                }
            }
            Ev::Advance(s) => {
                *self.now.lock().unwrap() += Duration::seconds(*s);
                format!("+{s}s")
            }
            Ev::Tick => {
                self.handle.tick().await;
                "tick".into()
            }
        }
    }

    fn policy_hash(&self) -> String {
        // The hash of the set in force, as votes bind to it.
        read::cases(&self.store, None, 1)
            .ok()
            .and_then(|c| c.first().cloned())
            .and_then(|c| read::actions_of(&self.store, &c).ok())
            .and_then(|a| a.into_iter().find_map(|a| a.policy_hash))
            .unwrap_or_default()
    }

    fn case_ordinal(&self, case_id: &str) -> usize {
        read::cases(&self.store, None, usize::MAX)
            .unwrap()
            .iter()
            .position(|c| c.case_id == case_id)
            .map_or(0, |i| i + 1)
    }

    /// Every case and its actions, in creation order, plus the audit kinds that mark rules
    /// (escalations and expiries).
    fn summary(&self) -> String {
        let mut out = String::new();
        for (i, c) in read::cases(&self.store, None, usize::MAX)
            .unwrap()
            .iter()
            .enumerate()
        {
            out.push_str(&format!(
                "case {} {} alerts={} duplicates={}\n",
                i + 1,
                c.state,
                c.alert_ids.len(),
                c.duplicate_count
            ));
            for a in read::actions_of(&self.store, c).unwrap() {
                let tier = a.tier.map_or("-".to_string(), |t| t.to_string());
                let target = if a.target.kind == crate::action::TargetKind::Case {
                    "case"
                } else {
                    &a.target.id
                };
                out.push_str(&format!("  {} {target} {tier} {}\n", a.kind, a.state));
            }
        }
        let recs = self.store.audit_records(0, usize::MAX).unwrap();
        for kind in ["approval_escalated", "alert_suppressed"] {
            let n = recs.iter().filter(|r| r.body.kind == kind).count();
            if n > 0 {
                out.push_str(&format!("{kind}: {n}\n"));
            }
        }
        out
    }
}

/// alice approves `id` over gRPC (mTLS), having reviewed no particular request hash.
pub(super) fn vote_on(id: &str) -> VoteCast {
    VoteCast {
        approval_id: id.to_string(),
        user: "alice".into(),
        channel: "grpc".into(),
        identity: "mtls".into(),
        approve: true,
        request_hash: None,
        comment: String::new(),
    }
}

fn refusal(e: &VoteError) -> String {
    match e {
        VoteError::NotFound(_) => "not found".into(),
        VoteError::NotPending { state, .. } => format!("not pending ({state})"),
        VoteError::Expired(_) => "expired".into(),
        VoteError::RequestChanged { .. } => "request changed".into(),
        VoteError::Refused(why) => format!("refused ({why})"),
        VoteError::Store(_) => "store unavailable".into(),
    }
}

/// Runs `events` on a fresh engine (configured by `f`) and compares what happened with
/// `expect` (leading and trailing whitespace of each line ignored).
async fn check_with(f: impl FnOnce(&mut Config), events: &[Ev], expect: &str) {
    let h = Harness::new(f).await;
    let mut got = String::new();
    for ev in events {
        got.push_str(&h.run(ev).await);
        got.push('\n');
    }
    got.push_str(&h.summary());
    let norm = |s: &str| {
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(norm(&got), norm(expect), "\n--- got ---\n{got}");
    let Harness { handle, task, .. } = h;
    drop(handle);
    task.await.unwrap();
}

async fn check(events: &[Ev], expect: &str) {
    check_with(|_| {}, events, expect).await
}

const MALWARE: &str = "Malware EncodedCommand";

#[tokio::test]
async fn dedup_by_source_id_and_fingerprint_then_correlation() {
    check(
        &[
            Ev::Alert("a-1", MALWARE, &["T1059"], &[("host", "ws-1")]),
            // The SIEM retries: same source id.
            Ev::Alert("a-1", MALWARE, &["T1059"], &[("host", "ws-1")]),
            // Same content under another id within the dedup window.
            Ev::Alert("a-2", MALWARE, &["T1059"], &[("host", "ws-1")]),
            // After the dedup window, within the correlation window: joins the open case.
            Ev::Advance(601),
            Ev::Alert("a-3", MALWARE, &["T1059"], &[("host", "ws-1")]),
            // Another host: a case of its own.
            Ev::Alert("a-4", MALWARE, &["T1059"], &[("host", "ws-2")]),
        ],
        "
        alert a-1 -> case 1
        alert a-1 -> case 1 (duplicate)
        alert a-2 -> case 1 (duplicate)
        +601s
        alert a-3 -> case 1
        alert a-4 -> case 2
        case 1 recommended alerts=3 duplicates=2
          enrich case auto approved
          summarize_case case auto approved
          create_ticket case auto approved
          isolate_host ws-1 one_approver awaiting_approval
        case 2 recommended alerts=1 duplicates=0
          enrich case auto approved
          summarize_case case auto approved
          create_ticket case auto approved
          isolate_host ws-2 one_approver awaiting_approval
        ",
    )
    .await;
}

#[tokio::test]
async fn a_suppressed_alert_opens_a_suppressed_case_and_proposes_nothing() {
    check_with(
        |cfg| {
            cfg.suppressions.push(
                toml::from_str(
                    "id = \"maint-ws-9\"\nreason = \"patching\"\nowner = \"it-ops\"\nentity = \"host:ws-9\"\nexpires = \"2026-12-31T00:00:00Z\"\n",
                )
                .unwrap(),
            )
        },
        &[
            Ev::Alert("s-1", MALWARE, &["T1059"], &[("host", "ws-9")]),
            Ev::Alert("s-2", MALWARE, &["T1059"], &[("host", "ws-1")]),
        ],
        "
        alert s-1 -> case 1
        alert s-2 -> case 2
        case 1 suppressed alerts=1 duplicates=0
        case 2 recommended alerts=1 duplicates=0
          enrich case auto approved
          summarize_case case auto approved
          create_ticket case auto approved
          isolate_host ws-1 one_approver awaiting_approval
        alert_suppressed: 1
        ",
    )
    .await;
}

#[tokio::test]
async fn votes_count_once_bind_to_the_request_hash_and_one_deny_rejects() {
    check(
        &[
            Ev::Alert("v-1", MALWARE, &["T1059"], &[("host", "ws-1"), ("host", "ws-2")]),
            // A hash that is not the request's: the approver reviewed something else.
            Ev::Vote("isolate_host", "ws-1", "alice", true, Some("stale")),
            // Someone the approver policy does not know.
            Ev::Vote("isolate_host", "ws-1", "mallory", true, None),
            Ev::Vote("isolate_host", "ws-1", "alice", true, Some("current")),
            // Decided: no more votes.
            Ev::Vote("isolate_host", "ws-1", "alice", true, None),
            Ev::Vote("isolate_host", "ws-2", "bob", false, None),
            Ev::Vote("isolate_host", "ws-2", "alice", true, None),
        ],
        "
        alert v-1 -> case 1
        approve alice isolate_host ws-1 -> request changed
        approve mallory isolate_host ws-1 -> refused (denied: no policy permits this action at any approval tier)
        approve alice isolate_host ws-1 -> approved
        approve alice isolate_host ws-1 -> not pending (approved)
        deny bob isolate_host ws-2 -> rejected
        approve alice isolate_host ws-2 -> not pending (rejected)
        case 1 approved alerts=1 duplicates=0
          enrich case auto approved
          summarize_case case auto approved
          create_ticket case auto approved
          isolate_host ws-1 one_approver approved
          isolate_host ws-2 one_approver rejected
        ",
    )
    .await;
}

#[tokio::test]
async fn requests_escalate_at_half_their_deadline_and_expire_at_it() {
    check(
        &[
            Ev::Alert("e-1", MALWARE, &["T1059"], &[("host", "ws-1")]),
            Ev::Tick,
            // A high-severity request waits `default_timeout_mins` (60): half of it escalates.
            Ev::Advance(31 * 60),
            Ev::Tick,
            Ev::Tick,
            Ev::Advance(30 * 60),
            Ev::Tick,
            Ev::Vote("isolate_host", "ws-1", "alice", true, None),
        ],
        "
        alert e-1 -> case 1
        tick
        +1860s
        tick
        tick
        +1800s
        tick
        approve alice isolate_host ws-1 -> expired
        case 1 approved alerts=1 duplicates=0
          enrich case auto approved
          summarize_case case auto approved
          create_ticket case auto approved
          isolate_host ws-1 one_approver expired
        approval_escalated: 1
        ",
    )
    .await;
}

/// One undo covers every side effect an event can have on the batch: a failing event leaves
/// no write, audit record, changed action, escalation, metric increment or policy reload.
#[tokio::test]
async fn a_failed_event_leaves_nothing_in_the_batch() {
    let (_dir, mut eng, _handle, store, now) = engine(|_| {});
    let mut txn = store.begin();
    let at = *now.lock().unwrap();
    let r: Result<(), StoreError> =
        eng.undoable(&mut txn, "test event", |e, t| {
            t.put(b"zz/test".to_vec(), b"x".to_vec());
            t.audit(
                crate::audit::AuditKind::Vote,
                Links::default(),
                at,
                json!({}),
            )?;
            e.changed.push(serde_json::from_value(json!({
            "action_id": "a", "case_id": "c", "alert_id": "al", "playbook": "p", "step": "s",
            "kind": "isolate_host", "connector": "crowdstrike",
            "target": {"kind": "host", "id": "ws-1"}, "on_failure": "stop",
            "state": "approved", "idempotency_key": "k", "created_at": at, "updated_at": at,
            "requester": "playbook:p"
        })).unwrap());
            e.escalations.push(Escalated {
                action_id: "a".into(),
                deadline: at,
                missing: 1,
            });
            e.tallies.push(Tally::Escalation);
            e.reloaded = Some(Err((vec![], "hash".into())));
            Err(StoreError::Corrupt {
                key: "zz/test".into(),
                reason: "injected".into(),
            })
        });
    assert!(r.is_err());
    assert!(eng.changed.is_empty() && eng.escalations.is_empty() && eng.tallies.is_empty());
    assert!(eng.reloaded.is_none());
    assert_eq!(txn.get(&store, b"zz/test").unwrap(), None);
    let head = store.head();
    store.commit(txn).await.unwrap();
    assert_eq!(store.head(), head, "no audit record survived the undo");
}

/// The `why` each alert of case `n` (1-based) joined with.
async fn joins(events: &[Ev], f: impl FnOnce(&mut Config)) -> (String, Vec<Vec<String>>) {
    let h = Harness::new(f).await;
    let mut got = String::new();
    for ev in events {
        got.push_str(&h.run(ev).await);
        got.push('\n');
    }
    let why = read::cases(&h.store, None, usize::MAX)
        .unwrap()
        .iter()
        .map(|c| c.correlation.iter().map(|j| j.why.clone()).collect())
        .collect();
    let Harness { handle, task, .. } = h;
    drop(handle);
    task.await.unwrap();
    (got, why)
}

#[tokio::test]
async fn alerts_of_different_rules_on_one_host_join_one_case_and_say_why() {
    let (got, why) = joins(
        &[
            Ev::Alert(
                "r-1",
                "Malware EncodedCommand",
                &["T1059"],
                &[("host", "ws-7")],
            ),
            Ev::Advance(120),
            Ev::Alert("r-2", "Malware dropper", &["T1204"], &[("host", "ws-7")]),
            Ev::Advance(300),
            Ev::Alert(
                "r-3",
                "Ransomware note",
                &["T1486"],
                &[("user", "alice@corp.example"), ("host", "ws-7")],
            ),
            // Past the window: a new case.
            Ev::Advance(3_601),
            Ev::Alert(
                "r-4",
                "Malware EncodedCommand",
                &["T1059"],
                &[("host", "ws-7")],
            ),
        ],
        |_| {},
    )
    .await;
    assert_eq!(
        got,
        "alert r-1 -> case 1\n+120s\nalert r-2 -> case 1\n+300s\nalert r-3 -> case 1\n+3601s\nalert r-4 -> case 2\n"
    );
    assert_eq!(why[0].len(), 3, "{why:?}");
    assert!(why[0][0].starts_with("new case"), "{why:?}");
    assert!(why[0][1].starts_with("shares host:ws-7"), "{why:?}");
    assert!(why[0][2].starts_with("shares host:ws-7"), "{why:?}");
    // Today's behaviour stays available: different rules make different cases.
    let (got, _) = joins(
        &[
            Ev::Alert(
                "r-1",
                "Malware EncodedCommand",
                &["T1059"],
                &[("host", "ws-7")],
            ),
            Ev::Alert("r-2", "Malware dropper", &["T1204"], &[("host", "ws-7")]),
        ],
        |cfg| cfg.correlation.mode = crate::config::CorrelationMode::RuleAndEntity,
    )
    .await;
    assert_eq!(got, "alert r-1 -> case 1\nalert r-2 -> case 2\n");
}

#[tokio::test]
async fn an_entity_in_too_many_cases_is_not_joined_on_and_a_full_case_stops_growing() {
    let (got, why) = joins(
        &[
            Ev::Alert("c-1", MALWARE, &["T1059"], &[("host", "ws-1")]),
            Ev::Alert("c-2", MALWARE, &["T1059"], &[("host", "ws-2")]),
            Ev::Alert("c-3", MALWARE, &["T1059"], &[("host", "ws-3")]),
            // The domain controller shows up next to each workstation.
            Ev::Alert(
                "c-4",
                "Malware lateral",
                &["T1059"],
                &[("host", "ws-1"), ("host", "dc-1")],
            ),
            Ev::Alert(
                "c-5",
                "Malware lateral",
                &["T1059"],
                &[("host", "ws-2"), ("host", "dc-1")],
            ),
            Ev::Alert(
                "c-6",
                "Malware lateral",
                &["T1059"],
                &[("host", "ws-3"), ("host", "dc-1")],
            ),
            // dc-1 is now named by three cases, above the threshold of two.
            Ev::Alert("c-7", "Malware on the DC", &["T1059"], &[("host", "dc-1")]),
        ],
        |cfg| cfg.correlation.max_open_cases_per_entity = 2,
    )
    .await;
    assert_eq!(
        got,
        "alert c-1 -> case 1\nalert c-2 -> case 2\nalert c-3 -> case 3\nalert c-4 -> case 1\nalert c-5 -> case 2\nalert c-6 -> case 3\nalert c-7 -> case 4\n"
    );
    assert!(
        why[3][0].contains("host:dc-1 is named by 3 recent cases (more than 2): too common"),
        "{why:?}"
    );
    // With the default threshold the same alert joins a case that shares dc-1.
    let (got, _) = joins(
        &[
            Ev::Alert(
                "c-1",
                MALWARE,
                &["T1059"],
                &[("host", "ws-1"), ("host", "dc-1")],
            ),
            Ev::Alert("c-7", "Malware on the DC", &["T1059"], &[("host", "dc-1")]),
        ],
        |_| {},
    )
    .await;
    assert_eq!(got, "alert c-1 -> case 1\nalert c-7 -> case 1\n");
    // A full case stops growing.
    let (got, why) = joins(
        &[
            Ev::Alert("f-1", MALWARE, &["T1059"], &[("host", "ws-9")]),
            Ev::Alert("f-2", "Malware dropper", &["T1204"], &[("host", "ws-9")]),
            Ev::Alert("f-3", "Ransomware note", &["T1486"], &[("host", "ws-9")]),
        ],
        |cfg| cfg.correlation.max_alerts_per_case = 2,
    )
    .await;
    assert_eq!(
        got,
        "alert f-1 -> case 1\nalert f-2 -> case 1\nalert f-3 -> case 2\n"
    );
    assert!(why[1][0].contains("is full (2 alerts)"), "{why:?}");
}

#[path = "vote_tests.rs"]
mod vote_tests;
