//! The executor against stateful fake vendors on loopback: dry run sends nothing, live actions
//! run probe → write → poll → verify with exactly one effect, and every step is evidence in
//! the audit store.

use serde_json::json;

use crate::support;
use crate::support::live::{self, Vendors};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_sends_nothing_and_records_the_rendered_requests() {
    let v = Vendors::start().await;
    let (dir, mut cfg) = support::workspace();
    v.wire(dir.path(), false);
    cfg.executor.enabled = true;
    let d = support::start_in(dir, cfg, None).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "dry-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-dry"), ("ip", "203.0.113.77")],
        ),
    )
    .await;
    let isolate = live::find_action(&d, &case_id, "isolate_host", Some("ws-dry")).await;
    let id = isolate["action_id"].as_str().unwrap().to_string();
    live::approve(&d, &id, &["alice"]).await;
    let done = live::settled(&d, &id).await;
    assert_eq!(done["state"], json!("dry_run"), "{done}");
    let case = d.case(&case_id).await;
    for a in case["actions"].as_array().unwrap() {
        let id = a["action_id"].as_str().unwrap();
        let a = live::settled(&d, id).await;
        let expected = if a["connector"] == json!("cordon") {
            "succeeded"
        } else {
            "dry_run"
        };
        assert_eq!(a["state"], json!(expected), "{a}");
    }
    // Nothing reached any vendor.
    for (name, n) in [
        ("crowdstrike", v.cs.log().count()),
        ("defender", v.mde.log().count()),
        ("thehive", v.hive.log().count()),
        ("okta", v.okta.log().count()),
        ("jira", v.jira.log().count()),
    ] {
        assert_eq!(n, 0, "{name} received requests in dry_run");
    }
    // The rendered request is recorded: the host name is in the resolve path, the body is there.
    let recs = live::records(&d, "dry_run", &id);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let reqs = recs[0]["requests"].as_array().unwrap();
    let resolve = reqs
        .iter()
        .find(|r| r["phase"] == json!("resolve"))
        .unwrap();
    assert!(
        resolve["path"].as_str().unwrap().contains("ws-dry"),
        "{resolve}"
    );
    let write = reqs.iter().find(|r| r["phase"] == json!("write")).unwrap();
    assert_eq!(write["method"], json!("POST"));
    assert_eq!(write["body"]["ids"], json!(["<vendor.aid>"]));
    let case = support::eventually(10, || async {
        let c = d.case(&case_id).await;
        (c["case"]["state"] == json!("executed")).then_some(c)
    })
    .await;
    assert_eq!(case["case"]["state"], json!("executed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowdstrike_isolation_runs_probe_write_poll_verify_once() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-live", "aid-live");
    let d = live::start_live(&v, |_, _| {}).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "cs-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-live")],
        ),
    )
    .await;
    let isolate = live::find_action(&d, &case_id, "isolate_host", Some("ws-live")).await;
    let id = isolate["action_id"].as_str().unwrap().to_string();
    live::approve(&d, &id, &["alice"]).await;
    let done = live::settled(&d, &id).await;
    assert_eq!(done["state"], json!("succeeded"), "{done}");
    assert_eq!(v.cs.host_status("aid-live"), "contained");
    assert_eq!(v.cs.effects().count("contain:aid-live"), 1);
    let phases: Vec<String> = live::records(&d, "vendor_exchange", &id)
        .iter()
        .map(|r| r["phase"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        phases.first().map(String::as_str),
        Some("resolve"),
        "{phases:?}"
    );
    assert!(phases.contains(&"write".to_string()), "{phases:?}");
    assert_eq!(
        phases.last().map(String::as_str),
        Some("verify"),
        "{phases:?}"
    );
    assert_eq!(live::records(&d, "execution_intent", &id).len(), 1);
    // The ticket went to TheHive once, with the idempotency label as sourceRef.
    let ticket = live::find_action(&d, &case_id, "create_ticket", None).await;
    let t = live::settled(&d, ticket["action_id"].as_str().unwrap()).await;
    assert_eq!(t["state"], json!("succeeded"), "{t}");
    assert_eq!(v.hive.alerts().len(), 1);
}

/// Approves whatever of the case awaits approval, then waits for every action to settle.
async fn run_case(d: &support::TestDaemon, case_id: &str) -> Vec<serde_json::Value> {
    let case = d.case(case_id).await;
    let mut out = Vec::new();
    for a in case["actions"].as_array().unwrap() {
        let id = a["action_id"].as_str().unwrap();
        if a["state"] == json!("awaiting_approval") {
            live::approve_any(d, id).await;
        }
    }
    for a in case["actions"].as_array().unwrap() {
        out.push(live::settled(d, a["action_id"].as_str().unwrap()).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_connector_acts_once_live() {
    let v = Vendors::start().await;
    v.okta.add_user("carol@example.com", "00u-carol");
    v.mde.add_machine("db-7", "m-db7");
    v.entra.add_user("dave@example.com", "obj-dave");
    v.hook.add_resource("i-0abc");
    let d = live::start_live(&v, |_, _| {}).await;
    let cred = live::post_alert(
        &d,
        live::alert(
            "s-1",
            "Password spray",
            &["T1110"],
            &[("user", "carol@example.com")],
        ),
    )
    .await;
    let exfil = live::post_alert(
        &d,
        live::alert(
            "s-2",
            "Exfil to paste site",
            &["T1048"],
            &[
                ("host", "db-7"),
                ("domain", "exfil.example"),
                ("ip", "203.0.113.77"),
            ],
        ),
    )
    .await;
    let cloud = live::post_alert(
        &d,
        live::alert(
            "s-3",
            "Cloud admin role grant",
            &["T1098"],
            &[("user", "dave@example.com"), ("cloud_resource", "i-0abc")],
        ),
    )
    .await;
    for case in [&cred, &exfil, &cloud] {
        for a in run_case(&d, case).await {
            assert_eq!(a["state"], json!("succeeded"), "{a:#}");
        }
    }
    assert_eq!(v.okta.effects().count("clear_sessions:00u-carol"), 1);
    assert_eq!(v.mde.effects().count("isolate:m-db7"), 1);
    assert!(v.mde.is_isolated("m-db7"));
    assert_eq!(v.mde.effects().count("indicator_create:exfil.example"), 1);
    assert_eq!(v.mde.effects().count("indicator_create:203.0.113.77"), 1);
    assert_eq!(v.entra.effects().count("revoke:obj-dave"), 1);
    assert_eq!(v.hook.effects().count("contain:i-0abc"), 1);
    assert_eq!(v.jira.issues().len(), 3, "one ticket per case");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_proposes_the_inverse_through_policy_and_approval() {
    use cordon::engine::{ExecOp, ExecReply};
    let v = Vendors::start().await;
    v.cs.add_host("ws-rb", "aid-rb");
    v.okta.add_user("erin@example.com", "00u-erin");
    let d = live::start_live(&v, |_, _| {}).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "rb-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-rb")],
        ),
    )
    .await;
    let iso = live::find_action(&d, &case_id, "isolate_host", Some("ws-rb")).await;
    let iso_id = iso["action_id"].as_str().unwrap().to_string();
    live::approve_any(&d, &iso_id).await;
    assert_eq!(
        live::settled(&d, &iso_id).await["state"],
        json!("succeeded")
    );
    assert_eq!(v.cs.host_status("aid-rb"), "contained");

    let engine = d.running().engine.clone();
    let ask = |id: String| {
        let engine = engine.clone();
        async move {
            engine
                .exec(ExecOp::Rollback {
                    action_id: id,
                    user: "carol".into(),
                    reason: "false positive".into(),
                })
                .await
                .unwrap()
        }
    };
    let ExecReply::RollbackProposed(rb) = ask(iso_id.clone()).await else {
        panic!("rollback not proposed")
    };
    assert_eq!(rb.kind.as_str(), "release_host");
    assert_eq!(rb.rollback_of.as_deref(), Some(iso_id.as_str()));
    assert_eq!(rb.requester, "carol");
    assert!(
        rb.decision_seq.is_some(),
        "decided by policy like any request"
    );
    // Asking again returns the same rollback.
    let ExecReply::RollbackProposed(again) = ask(iso_id.clone()).await else {
        panic!("second ask refused")
    };
    assert_eq!(again.action_id, rb.action_id);
    // The requester cannot approve their own rollback.
    let own = engine
        .vote(cordon::engine::VoteCast {
            approval_id: rb.action_id.clone(),
            user: "carol".into(),
            channel: "grpc".into(),
            identity: "mtls".into(),
            approve: true,
            request_hash: None,
            comment: String::new(),
        })
        .await;
    if rb.state == cordon::action::ActionState::AwaitingApproval {
        assert!(own.is_err(), "requester approved own rollback: {own:?}");
        live::approve_any(&d, &rb.action_id).await;
    }
    assert_eq!(
        live::settled(&d, &rb.action_id).await["state"],
        json!("succeeded")
    );
    assert_eq!(v.cs.host_status("aid-rb"), "normal");
    assert_eq!(v.cs.effects().count("lift:aid-rb"), 1);
    let orig = live::settled(&d, &iso_id).await;
    assert_eq!(orig["state"], json!("rolled_back"), "{orig}");
    assert_eq!(orig["rolled_back_by"], json!(rb.action_id));

    // Irreversible actions and unfinished ones cannot be rolled back; nothing is recorded.
    let cred = live::post_alert(
        &d,
        live::alert(
            "rb-2",
            "Password spray",
            &["T1110"],
            &[("user", "erin@example.com")],
        ),
    )
    .await;
    let rev = live::find_action(&d, &cred, "revoke_sessions", None).await;
    let rev_id = rev["action_id"].as_str().unwrap().to_string();
    match ask(rev_id.clone()).await {
        ExecReply::Refused(why) => assert!(why.contains("only a succeeded action"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        live::records(&d, "rollback_requested", &rev_id).is_empty(),
        "a refused rollback records nothing"
    );
    if rev["state"] == json!("awaiting_approval") {
        live::approve_any(&d, &rev_id).await;
    }
    assert_eq!(
        live::settled(&d, &rev_id).await["state"],
        json!("succeeded")
    );
    match ask(rev_id).await {
        ExecReply::Refused(why) => assert!(why.contains("cannot be undone"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// Steps of one connector on the same target (enrich and summarize both act on the case through
/// the `cordon` connector) wait for each other in the executor instead of finding the target's
/// lease taken and sleeping until the next rescan: with rescans an hour apart, every step of
/// several cases still finishes (found by the load generator: case-level steps sat for 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_on_one_target_run_one_after_another_without_waiting_for_a_rescan() {
    let v = Vendors::start().await;
    let d = live::start_live(&v, |cfg, _| {
        cfg.executor.reconcile_interval_secs = 3600;
    })
    .await;
    let mut cases = Vec::new();
    for i in 0..4 {
        let host = format!("ws-serial-{i}");
        cases.push(
            live::post_alert(
                &d,
                live::alert(
                    &format!("serial-{i}"),
                    "Malware EncodedCommand",
                    &["T1059"],
                    &[("host", host.as_str())],
                ),
            )
            .await,
        );
    }
    for case_id in cases {
        let case = d.case(&case_id).await;
        let on_case: Vec<&serde_json::Value> = case["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["connector"] == json!("cordon"))
            .collect();
        assert!(
            on_case.len() >= 2,
            "enrich and summarize both act on the case: {case}"
        );
        for a in on_case {
            let done = live::settled(&d, a["action_id"].as_str().unwrap()).await;
            assert_eq!(done["state"], json!("succeeded"), "{done}");
        }
    }
}

/// More approved actions than the executor keeps in hand (16 at concurrency 1) and than the
/// engine's announcement channel holds (64): the surplus stays in the durable queue, not in
/// memory (a task per queued action grew the daemon by ~1 KiB per stored record under load),
/// and every action still runs: dropped announcements send the executor to the store, with
/// periodic rescans an hour apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_beyond_what_the_executor_holds_in_memory_all_runs() {
    let v = Vendors::start().await;
    let d = live::start_live(&v, |cfg, _| {
        cfg.executor.reconcile_interval_secs = 3600;
        cfg.executor.concurrency = 1;
    })
    .await;
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..40 {
        let host = format!("ws-backlog-{i}");
        let alert = live::alert(
            &format!("backlog-{i}"),
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", host.as_str())],
        );
        let (c, url) = (d.client.clone(), format!("{}/v1/alerts", d.base));
        posts.spawn(async move {
            let r = c.post(url).body(alert).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 202);
            let ack: serde_json::Value = r.json().await.unwrap();
            ack["case_id"].as_str().unwrap().to_string()
        });
    }
    let mut auto = Vec::new();
    while let Some(case_id) = posts.join_next().await {
        let case = d.case(&case_id.unwrap()).await;
        for a in case["actions"].as_array().unwrap() {
            if a["tier"] == json!("auto") {
                auto.push(a["action_id"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(auto.len() > 64 + 16, "{} automatic actions", auto.len());
    for id in &auto {
        let done = live::settled(&d, id).await;
        assert_eq!(done["state"], json!("succeeded"), "{done}");
    }
}

/// A live action on the common path (claim with the policy re-check → resolve and probe →
/// `write_intent` → write → verify) takes at most four durable commits, with `write_intent`
/// durable before the write leaves: the evidence of reads is recorded with the next durable
/// step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_action_on_the_common_path_commits_at_most_four_times() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-count", "aid-count");
    v.cs.set_pending_polls(0);
    let d = live::start_live(&v, |_, _| {}).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "count-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-count")],
        ),
    )
    .await;
    // Everything else in the case (enrichment, summary, ticket) runs first.
    let case = d.case(&case_id).await;
    for a in case["actions"].as_array().unwrap() {
        if a["state"] != json!("awaiting_approval") {
            live::settled(&d, a["action_id"].as_str().unwrap()).await;
        }
    }
    let isolate = live::find_action(&d, &case_id, "isolate_host", Some("ws-count")).await;
    let id = isolate["action_id"].as_str().unwrap().to_string();
    let store = d.running().store.clone();
    let before = store.durable_commits();
    live::approve(&d, &id, &["alice"]).await;
    let done = live::settled(&d, &id).await;
    assert_eq!(done["state"], json!("succeeded"), "{done}");
    let commits = store.durable_commits() - before;
    // One commit is the vote itself.
    assert!(
        commits <= 1 + 4,
        "the vote and the run took {commits} commits"
    );
    // The order on record is still claim, resolve, probe, intent, write, verify, outcome.
    let kinds: Vec<String> = d
        .audit()
        .into_iter()
        .filter(|r| r.body.action_id.as_deref() == Some(id.as_str()))
        .map(|r| r.body.kind)
        .skip_while(|k| k != "execution_intent")
        .collect();
    let intent = kinds.iter().position(|k| k == "write_intent").unwrap();
    let write = kinds
        .iter()
        .enumerate()
        .position(|(i, k)| i > intent && k == "vendor_exchange")
        .unwrap();
    assert!(intent < write, "{kinds:?}");
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("execution_intent"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("action_transition"),
        "{kinds:?}"
    );
    assert_eq!(v.cs.effects().count("contain:aid-count"), 1);
}

/// Built-in and dry-run actions send nothing to a vendor and take no vendor permit: with the
/// only permit held by a live write whose answer the vendor holds back, a new case's enrichment
/// and summary still finish while that write waits (they used to queue for the permit behind
/// the slowest vendor, which under an alert storm left automatic actions minutes behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_actions_do_not_wait_for_a_vendor_permit() {
    use crate::support::fakes::{Fault, FaultKind};
    let v = Vendors::start().await;
    v.cs.add_host("ws-slow", "aid-slow");
    v.cs.set_pending_polls(0);
    let d = live::start_live(&v, |cfg, root| {
        cfg.executor.concurrency = 1;
        // The client waits for the held answer instead of timing out and probing.
        let p = root.join("connectors/crowdstrike.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("timeout_ms = 1500", "timeout_ms = 60000")).unwrap();
    })
    .await;
    let first = live::post_alert(
        &d,
        live::alert(
            "permit-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-slow")],
        ),
    )
    .await;
    for a in d.case(&first).await["actions"].as_array().unwrap() {
        if a["state"] != json!("awaiting_approval") {
            live::settled(&d, a["action_id"].as_str().unwrap()).await;
        }
    }
    // The isolation's write reaches the vendor, which holds its answer: the permit stays taken.
    v.cs.faults().arm(Fault::on(
        "POST",
        "action_name=contain",
        FaultKind::TimeoutAfterEffect(std::time::Duration::from_secs(10)),
    ));
    let isolate = live::find_action(&d, &first, "isolate_host", Some("ws-slow")).await;
    let isolate = isolate["action_id"].as_str().unwrap().to_string();
    live::approve(&d, &isolate, &["alice"]).await;
    support::eventually(30, || async { (v.cs.faults().fired() == 1).then_some(()) }).await;
    let second = live::post_alert(
        &d,
        live::alert(
            "permit-2",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-other")],
        ),
    )
    .await;
    for a in d.case(&second).await["actions"].as_array().unwrap() {
        if a["connector"] == json!("cordon") {
            let done = live::settled(&d, a["action_id"].as_str().unwrap()).await;
            assert_eq!(done["state"], json!("succeeded"), "{done}");
        }
    }
    let (_, held) = d.get(&format!("/v1/actions/{isolate}")).await;
    assert_eq!(
        held["state"],
        json!("executing"),
        "the built-in actions finished only after the held write: {held}"
    );
    assert_eq!(
        live::settled(&d, &isolate).await["state"],
        json!("succeeded")
    );
}

/// A run that sends nothing (a dry run, a built-in action) is recorded with its claim in one
/// commit: claim with the policy re-check, intent, the rendered requests and the outcome. Under
/// an alert storm every automatic action of the load mix is such a run, and each commit it
/// waits for sits behind a batch of alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_sends_nothing_is_claimed_and_finished_in_one_commit() {
    let v = Vendors::start().await;
    let (dir, mut cfg) = support::workspace();
    v.wire(dir.path(), false);
    cfg.executor.enabled = true;
    let d = support::start_in(dir, cfg, None).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "one-commit-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-one")],
        ),
    )
    .await;
    for a in d.case(&case_id).await["actions"].as_array().unwrap() {
        if a["state"] != json!("awaiting_approval") {
            live::settled(&d, a["action_id"].as_str().unwrap()).await;
        }
    }
    let isolate = live::find_action(&d, &case_id, "isolate_host", Some("ws-one")).await;
    let id = isolate["action_id"].as_str().unwrap().to_string();
    let store = d.running().store.clone();
    let before = store.durable_commits();
    live::approve(&d, &id, &["alice"]).await;
    let done = live::settled(&d, &id).await;
    assert_eq!(done["state"], json!("dry_run"), "{done}");
    // A commit is readable once applied and counted once flushed: wait for the count to reach
    // the two commits there must be (the vote, the run), then check there are no more.
    support::eventually(10, || async {
        (store.durable_commits() - before >= 2).then_some(())
    })
    .await;
    let commits = store.durable_commits() - before;
    assert_eq!(
        commits, 2,
        "the vote and the dry run took {commits} commits"
    );
    let kinds: Vec<String> = d
        .audit()
        .into_iter()
        .filter(|r| r.body.action_id.as_deref() == Some(id.as_str()))
        .map(|r| r.body.kind)
        .collect();
    let at = |k: &str| kinds.iter().rposition(|x| x == k).unwrap();
    assert!(
        at("execution_intent") < at("dry_run") && at("dry_run") < kinds.len() - 1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("action_transition"),
        "{kinds:?}"
    );
    // A claim that comes too late (a periodic rescan that read the queue before the run ended)
    // is refused and costs no commit.
    let before = store.durable_commits();
    let late = d
        .running()
        .engine
        .exec(cordon::engine::ExecOp::Claim {
            action_id: id.clone(),
            mode: "dry_run".into(),
        })
        .await
        .unwrap();
    assert!(
        matches!(late, cordon::engine::ExecReply::Refused(_)),
        "{late:?}"
    );
    assert_eq!(store.durable_commits(), before, "a late claim committed");
}

/// After the vendor accepted a write, "not done" means the effect was reversed or dropped at the
/// vendor, never that the write did not land. A contain accepted for an offline laptop stays
/// pending past the completion wait (`unknown`); an analyst lifts containment in the vendor's
/// console; the next reconcile pass ends the action `failed` ("reversed at the vendor") instead
/// of sending the contain again over the person's release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_vendor_accepted_is_not_sent_again_over_a_persons_reversal() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-rev", "aid-rev");
    v.cs.set_pending_polls(usize::MAX);
    let d = live::start_live(&v, |cfg, root| {
        cfg.executor.reconcile_interval_secs = 1;
        let p = root.join("connectors/crowdstrike.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let short = text.replace("max_wait_secs = 10 }", "max_wait_secs = 1 }");
        assert_ne!(short, text, "the test's completion wait is where it was");
        std::fs::write(&p, short).unwrap();
    })
    .await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "rev-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-rev")],
        ),
    )
    .await;
    let iso = live::find_action(&d, &case_id, "isolate_host", Some("ws-rev")).await;
    let id = iso["action_id"].as_str().unwrap().to_string();
    live::approve_any(&d, &id).await;
    let pending = live::settled(&d, &id).await;
    assert_eq!(pending["state"], json!("unknown"), "{pending}");
    assert_eq!(pending["execution"]["accepted"], json!(true), "{pending}");
    assert_eq!(v.cs.host_status("aid-rev"), "containment_pending");

    // The analyst lifts containment in the Falcon console.
    v.cs.set_host_status("aid-rev", "normal");
    let done = support::eventually(30, || async {
        let (_, a) = d.get(&format!("/v1/actions/{id}")).await;
        (a["state"] == json!("failed")).then_some(a)
    })
    .await;
    assert_eq!(
        done["execution"]["outcome"],
        json!("reversed at the vendor"),
        "{done}"
    );
    assert_eq!(v.cs.effects().count("contain:aid-rev"), 1);
    assert_eq!(v.cs.host_status("aid-rev"), "normal");
    assert_eq!(d.stop().await, 0);
}

/// A run waiting for a vendor to complete lets its permit go between polls: with one permit,
/// a contain accepted for an offline laptop (pending for the whole completion wait) does not
/// hold back the isolation of another host, which succeeds while the first still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_completion_holds_no_vendor_permit() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-offline", "aid-offline");
    v.cs.add_host("ws-online", "aid-online");
    v.cs.set_pending_polls(usize::MAX);
    let d = live::start_live(&v, |cfg, root| {
        cfg.executor.concurrency = 1;
        let p = root.join("connectors/crowdstrike.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        // Long enough that the second isolation could only finish inside it.
        let long = text.replace("max_wait_secs = 10 }", "max_wait_secs = 60 }");
        assert_ne!(long, text, "the test's completion wait is where it was");
        std::fs::write(&p, long).unwrap();
    })
    .await;
    let isolate = |tag: &'static str, host: &'static str| {
        let d = &d;
        async move {
            let case_id = live::post_alert(
                d,
                live::alert(tag, "Malware EncodedCommand", &["T1059"], &[("host", host)]),
            )
            .await;
            let a = live::find_action(d, &case_id, "isolate_host", Some(host)).await;
            let id = a["action_id"].as_str().unwrap().to_string();
            live::approve_any(d, &id).await;
            id
        }
    };
    let first = isolate("permit-off", "ws-offline").await;
    support::eventually(10, || async {
        (v.cs.host_status("aid-offline") == "containment_pending").then_some(())
    })
    .await;
    let second = isolate("permit-on", "ws-online").await;
    // The second host's sensor checks in: its contain completes (it needed the permit to be
    // sent at all).
    support::eventually(30, || async {
        (v.cs.host_status("aid-online") == "containment_pending").then_some(())
    })
    .await;
    v.cs.set_host_status("aid-online", "contained");
    let done = support::eventually(30, || async {
        let (_, a) = d.get(&format!("/v1/actions/{second}")).await;
        (a["state"] == json!("succeeded")).then_some(a)
    })
    .await;
    assert_eq!(done["state"], json!("succeeded"), "{done}");
    let (_, waiting) = d.get(&format!("/v1/actions/{first}")).await;
    assert_eq!(
        waiting["state"],
        json!("executing"),
        "the first is still waiting for its vendor: {waiting}"
    );
    assert_eq!(v.cs.host_status("aid-online"), "contained");
}
