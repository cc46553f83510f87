//! Analyst case operations (issue 17): assign, note, close with a disposition, reopen and
//! recover over gRPC and HTTP, each a Cedar request recorded in the audit store; `recovered`
//! once every containment is released; SLA breaches escalated once to the playbook owner's
//! chat channel, across a restart; and bad input to every new endpoint refused with a clear
//! error and no change.

use cordon::api::pb;
use cordon::config::Config;
use cordon::engine::{ExecOp, ExecReply, VoteCast};
use serde_json::{Value, json};
use tonic::Code;

use crate::chat::{Chat, SLACK_TOKEN, configure_chat};
use crate::support::fakes::chat::FakeSlack;
use crate::support::live::{self, Vendors};
use crate::support::{self, TestClock, TestDaemon, eventually};
use crate::support::{USERS, token_of};

/// Every user of the shipped entity files gets the approver token `<user>-token`.
fn configure_tokens(cfg: &mut Config) {
    cfg.grpc.approvers = support::approvers(&USERS);
    cfg.policy.watch = false;
}

fn close_req(case_id: &str, disposition: &str) -> pb::CloseCaseRequest {
    pb::CloseCaseRequest {
        case_id: case_id.into(),
        disposition: disposition.into(),
        reason: "confirmed by EDR timeline".into(),
        ..Default::default()
    }
}

fn expect_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    match r {
        Ok(v) => panic!("expected {code:?}, got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert!(
                s.message().contains(needle),
                "{:?} does not say {needle:?}",
                s.message()
            );
        }
    }
}

/// Audit records of `kind` about `case_id`, as their bodies.
fn case_records(d: &TestDaemon, kind: &str, case_id: &str) -> Vec<Value> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == kind && r.body.case_id.as_deref() == Some(case_id))
        .map(|r| r.body.data)
        .collect()
}

/// Votes as `user` over the engine (the gRPC vote path).
async fn vote(d: &TestDaemon, action_id: &str, user: &str) {
    let r = d
        .running()
        .engine
        .vote(VoteCast {
            approval_id: action_id.into(),
            user: user.into(),
            channel: "grpc".into(),
            identity: "token".into(),
            approve: true,
            request_hash: None,
            comment: String::new(),
        })
        .await;
    assert!(r.is_ok(), "{r:?}");
}

async fn http_op(d: &TestDaemon, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let body = body.to_string();
    d.post_with(path, body, |b| match token {
        Some(t) => b.bearer_auth(t),
        None => b,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_may_not_close_is_refused_and_closing_with_a_running_action_is_refused() {
    let (dir, mut cfg) = support::workspace();
    configure_tokens(&mut cfg);
    let d = support::start_in(dir, cfg, None).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "c-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-c1")],
        ),
    )
    .await;
    let iso = live::find_action(&d, &case_id, "isolate_host", Some("ws-c1")).await;
    let iso_id = iso["action_id"].as_str().unwrap().to_string();
    assert_eq!(iso["state"], json!("awaiting_approval"));

    // A user in no group may not close: PERMISSION_DENIED with the reason, recorded.
    let mut mallory = d.grpc_as("mallory").await;
    expect_code(
        mallory
            .cases
            .close_case(close_req(&case_id, "false_positive"))
            .await,
        Code::PermissionDenied,
        "no policy permits mallory to close_case",
    );
    // Over HTTP: 403 with a stable code.
    let (s, v) = http_op(
        &d,
        &format!("/v1/cases/{case_id}/close"),
        Some(&token_of("mallory")),
        r#"{"disposition": "false_positive", "reason": "noise"}"#,
    )
    .await;
    assert_eq!((s, v["code"].clone()), (403, json!("forbidden")), "{v}");
    let refused = case_records(&d, "case_op_refused", &case_id);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["refused_by"], json!("policy"));
    assert_eq!(refused[0]["user"], json!("mallory"));
    assert_eq!(refused[1]["channel"], json!("http"));

    // A request awaiting approval: refused unless the closer cancels it.
    let mut alice = d.grpc_as("alice").await;
    expect_code(
        alice
            .cases
            .close_case(close_req(&case_id, "false_positive"))
            .await,
        Code::FailedPrecondition,
        "cancel_pending",
    );
    let case = d.case(&case_id).await;
    assert_eq!(
        case["case"]["state"],
        json!("recommended"),
        "nothing changed"
    );
    assert!(case["case"].get("closure").is_none(), "{case}");

    // Approve it and let the "executor" claim it: a running action cannot be cancelled.
    vote(&d, &iso_id, "alice").await;
    match d
        .running()
        .engine
        .exec(ExecOp::Claim {
            action_id: iso_id.clone(),
            mode: "live".into(),
        })
        .await
        .unwrap()
    {
        ExecReply::Claimed(a) => assert_eq!(a.state.as_str(), "executing"),
        other => panic!("{other:?}"),
    }
    let mut req = close_req(&case_id, "false_positive");
    req.cancel_pending = true;
    expect_code(
        alice.cases.close_case(req).await,
        Code::FailedPrecondition,
        "a running action cannot be cancelled",
    );
    let (s, v) = http_op(
        &d,
        &format!("/v1/cases/{case_id}/close"),
        Some(&token_of("alice")),
        r#"{"disposition": "false_positive", "reason": "noise", "cancel_pending": true}"#,
    )
    .await;
    assert_eq!(
        (s, v["code"].clone()),
        (409, json!("case_state_conflict")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains(&iso_id),
        "names the running action: {v}"
    );
    let case = d.case(&case_id).await;
    assert!(case["case"].get("closure").is_none(), "{case}");
    assert_eq!(
        case_records(&d, "case_op_refused", &case_id)
            .iter()
            .filter(|r| r["refused_by"] == json!("state"))
            .count(),
        3
    );
    assert!(case_records(&d, "case_closed", &case_id).is_empty());
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_with_cancel_pending_cancels_requests_and_reopen_and_notes_are_recorded() {
    let (dir, mut cfg) = support::workspace();
    configure_tokens(&mut cfg);
    let d = support::start_in(dir, cfg, None).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "c-2",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-c2")],
        ),
    )
    .await;
    let iso_id = live::find_action(&d, &case_id, "isolate_host", Some("ws-c2")).await["action_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut alice = d.grpc_as("alice").await;
    let mut bob = d.grpc_as("bob").await;

    let r = alice
        .cases
        .assign_case(pb::AssignCaseRequest {
            case_id: case_id.clone(),
            owner: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let detail = r.case.unwrap().detail.unwrap();
    assert_eq!(detail.owner, "bob");
    assert!(detail.first_human_action_unix_ms > 0);
    bob.cases
        .note_case(pb::NoteCaseRequest {
            case_id: case_id.clone(),
            text: "user confirms they ran the installer".into(),
        })
        .await
        .unwrap();
    // Assigned to bob: alice (on call, not a commander) may not close it.
    let mut req = close_req(&case_id, "benign_true_positive");
    req.cancel_pending = true;
    expect_code(
        alice.cases.close_case(req.clone()).await,
        Code::PermissionDenied,
        "closed by its owner",
    );
    let r = bob.cases.close_case(req).await.unwrap().into_inner();
    // The executor is off here: the automatic steps were approved and never ran, so they are
    // cancelled with the isolation that awaited approval.
    assert_eq!(r.cancelled.len(), 4, "{:?}", r.cancelled);
    assert!(r.cancelled.contains(&iso_id), "{:?}", r.cancelled);
    let c = r.case.unwrap();
    assert_eq!(c.summary.as_ref().unwrap().state, "closed");
    let closure = c.detail.as_ref().unwrap().closure.clone().unwrap();
    assert_eq!(
        (closure.disposition.as_str(), closure.by.as_str()),
        ("benign_true_positive", "bob")
    );
    for a in &c.actions {
        let want = if a.action_id == iso_id {
            "rejected"
        } else {
            "denied"
        };
        assert_eq!(a.state, want, "cancelled with the closure: {a:?}");
    }
    let cancelled = case_records(&d, "case_requests_cancelled", &case_id);
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["cancelled"], json!(r.cancelled));

    // Filters: closed benign cases owned by bob.
    let list = alice
        .cases
        .list_cases(pb::ListCasesRequest {
            owner: "bob".into(),
            disposition: "benign_true_positive".into(),
            open: "false".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.cases.len(), 1);
    let (s, v) = d.get("/v1/cases?open=true").await;
    assert_eq!(s, 200, "{v}");
    assert!(v["cases"].as_array().unwrap().is_empty(), "{v}");

    // Reopen returns it to where it was closed from; closing twice is refused.
    expect_code(
        bob.cases
            .close_case(close_req(&case_id, "false_positive"))
            .await,
        Code::FailedPrecondition,
        "already closed",
    );
    let (s, v) = http_op(
        &d,
        &format!("/v1/cases/{case_id}/reopen"),
        Some(&token_of("alice")),
        r#"{"reason": "the installer hash is on a blocklist"}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["case"]["state"], json!("recommended"));
    assert!(v["case"].get("closure").is_none(), "{v}");
    assert_eq!(v["case"]["reopened"][0]["by"], json!("alice"));
    let kinds: Vec<String> = d
        .audit()
        .into_iter()
        .filter(|r| r.body.case_id.as_deref() == Some(case_id.as_str()))
        .map(|r| r.body.kind)
        .filter(|k| k.starts_with("case_"))
        .collect();
    for k in ["case_assigned", "case_note", "case_closed", "case_reopened"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_is_recovered_when_its_host_is_released_then_closed_true_positive_with_intel_credited()
 {
    let v = Vendors::start().await;
    v.cs.add_host("ws-tp", "aid-tp");
    let d = live::start_live(&v, |cfg, _| configure_tokens(cfg)).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "tp-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-tp")],
        ),
    )
    .await;
    let iso_id = live::find_action(&d, &case_id, "isolate_host", Some("ws-tp")).await["action_id"]
        .as_str()
        .unwrap()
        .to_string();
    live::approve_any(&d, &iso_id).await;
    assert_eq!(
        live::settled(&d, &iso_id).await["state"],
        json!("succeeded")
    );
    let case = eventually(30, || async {
        let c = d.case(&case_id).await;
        (c["case"]["state"] == json!("executed")).then_some(c)
    })
    .await;
    assert!(
        case["case"]["handoffs"]["first_human_action"].is_string(),
        "{case}"
    );

    // Release the host: the rollback goes through policy and approval like any request.
    let mut carol = d.grpc_as("carol").await;
    let rb = carol
        .approvals
        .request_rollback(pb::RollbackRequest {
            action_id: iso_id.clone(),
            reason: "contained and cleaned; release".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .rollback
        .unwrap();
    if rb.state == "awaiting_approval" {
        live::approve_any(&d, &rb.action_id).await;
    }
    assert_eq!(
        live::settled(&d, &rb.action_id).await["state"],
        json!("succeeded")
    );
    let case = eventually(30, || async {
        let c = d.case(&case_id).await;
        (c["case"]["state"] == json!("recovered")).then_some(c)
    })
    .await;
    assert_eq!(
        case["case"]["recovery"]["how"],
        json!("containment_released")
    );
    assert!(case["case"]["handoffs"]["recovered"].is_string());

    // Closed as a true positive crediting the intel that motivated the rule.
    let mut alice = d.grpc_as("alice").await;
    let mut req = close_req(&case_id, "true_positive");
    req.helped_intel_ref = "CTI-2026-0142".into();
    req.helped_rule = "rule-Malware EncodedCommand".into();
    req.missed = "no detection on the initial macro document".into();
    let r = alice.cases.close_case(req).await.unwrap().into_inner();
    let detail = r.case.unwrap().detail.unwrap();
    let closure = detail.closure.unwrap();
    assert_eq!(closure.helped_intel_ref, "CTI-2026-0142");
    assert_eq!(closure.missed, "no detection on the initial macro document");
    assert!(detail.closed_unix_ms >= detail.recovered_unix_ms);

    // Every transition is in the audit store, in order, and the closure with its credit.
    let path: Vec<String> = case_records(&d, "case_transition", &case_id)
        .iter()
        .map(|r| r["to"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        path,
        [
            "normalized",
            "enriched",
            "correlated",
            "recommended",
            "approved",
            "executed",
            "recovered",
            "closed"
        ],
        "{path:?}"
    );
    let recovered = case_records(&d, "case_recovered", &case_id);
    assert_eq!(recovered.len(), 1);
    assert!(
        recovered[0]["recovery"]["reason"]
            .as_str()
            .unwrap()
            .contains(&iso_id)
    );
    let closed = case_records(&d, "case_closed", &case_id);
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0]["closure"]["helped"]["intel_ref"],
        json!("CTI-2026-0142")
    );
    assert_eq!(closed[0]["closure"]["from"], json!("recovered"));
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sla_breach_is_escalated_once_to_the_playbook_owners_chat_channel_across_a_restart() {
    let slack = FakeSlack::start(SLACK_TOKEN).await;
    let (dir, mut cfg) = support::workspace();
    configure_tokens(&mut cfg);
    configure_chat(
        &mut cfg,
        dir.path(),
        &Chat {
            slack: Some(&slack),
            ..Default::default()
        },
    );
    cfg.cases.sla.high_mins = 30;
    // The malware playbook's owner and route, as a SOC would declare them.
    let pb = dir.path().join("playbooks/malware_execution.toml");
    let text = std::fs::read_to_string(&pb).unwrap();
    let ours: String = text
        .lines()
        .map(|l| {
            if l.starts_with("escalation_route") {
                "escalation_route = \"chat:C0IRENDPOINT\""
            } else if l.starts_with("known_limitations") {
                "known_limitations = [\"no macOS hosts\"]"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(ours, text, "the shipped playbook declares its route");
    std::fs::write(&pb, ours).unwrap();
    let clock = TestClock::new();
    let mut d = support::start_in(dir, cfg.clone(), Some(clock.clone())).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "sla-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-sla")],
        ),
    )
    .await;
    let case = d.case(&case_id).await;
    assert_eq!(
        case["case"]["ownership"]["owner_team"],
        json!("ir-endpoint")
    );
    assert_eq!(
        case["case"]["ownership"]["known_limitations"],
        json!(["no macOS hosts"])
    );
    assert!(case["case"]["sla_deadline"].is_string(), "{case}");
    d.running().engine.tick().await;
    assert!(case_records(&d, "escalation", &case_id).is_empty());

    // Down across the deadline; the index survives the restart.
    let running = d.running.take().unwrap();
    assert_eq!(running.shutdown().await, 0);
    clock.advance_secs(31 * 60);
    let d = support::start_in(d.dir, cfg, Some(clock.clone())).await;
    d.running().engine.tick().await;
    d.running().engine.tick().await;
    let esc: Vec<Value> = case_records(&d, "escalation", &case_id)
        .into_iter()
        .filter(|r| r["escalation"] == json!("sla_breach"))
        .collect();
    assert_eq!(esc.len(), 1, "escalated once: {esc:?}");
    let routed: Vec<Value> = case_records(&d, "escalation_routed", &case_id)
        .into_iter()
        .filter(|r| r["escalation"] == json!("sla_breach"))
        .collect();
    assert_eq!(routed.len(), 1, "{routed:?}");
    assert_eq!(routed[0]["delivery"], json!("chat"));
    assert_eq!(routed[0]["channel"], json!("C0IRENDPOINT"));
    let post = eventually(20, || async {
        slack
            .posts()
            .into_iter()
            .find(|m| m.channel == "C0IRENDPOINT" && m.text.contains("SLA breached"))
    })
    .await;
    assert!(post.text.contains(&case_id), "{}", post.text);
    assert!(post.text.contains("ir-endpoint"), "{}", post.text);
    // The post is recorded and no longer owed.
    eventually(20, || async {
        case_records(&d, "chat_post", &case_id)
            .iter()
            .any(|r| r["purpose"] == json!("escalation") && r["outcome"] == json!("posted"))
            .then_some(())
    })
    .await;
    let case = d.case(&case_id).await;
    assert_eq!(case["case"]["sla_escalated"], json!(true));
    assert!(case["case"]["handoffs"]["ir_escalation"].is_string());
    assert_eq!(
        slack
            .posts()
            .iter()
            .filter(|m| m.channel == "C0IRENDPOINT" && m.text.contains("SLA breached"))
            .count(),
        1
    );
    // The approval that passed half its deadline meanwhile went to the owner too.
    assert!(
        slack
            .posts()
            .iter()
            .any(|m| m.channel == "C0IRENDPOINT" && m.text.contains("half the approval deadline")),
        "{:?}",
        slack.posts()
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_every_case_endpoint_gets_a_clear_error_and_changes_nothing() {
    let (dir, mut cfg) = support::workspace();
    configure_tokens(&mut cfg);
    let d = support::start_in(dir, cfg, None).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "b-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-b1")],
        ),
    )
    .await;
    let before = d.case(&case_id).await;
    let head = d.head();
    let alice = token_of("alice");
    let c = |op: &str| format!("/v1/cases/{case_id}/{op}");
    /// (path, token, body, status, code, what the message says)
    type Bad<'a> = (String, Option<&'a str>, &'a str, u16, &'a str, &'a str);
    let cases: Vec<Bad> = vec![
        // (path, token, body, status, code, what the message says)
        (
            c("close"),
            None,
            r#"{"disposition":"false_positive","reason":"x"}"#,
            401,
            "unauthenticated",
            "Bearer",
        ),
        (
            c("close"),
            Some("not-a-token"),
            r#"{"disposition":"false_positive","reason":"x"}"#,
            401,
            "unauthenticated",
            "not an approver token",
        ),
        (
            c("close"),
            Some(&alice),
            r#"{"disposition":"false_positive""#,
            400,
            "invalid_request",
            "not valid JSON",
        ),
        (
            c("close"),
            Some(&alice),
            r#"{"disposition":"false_positive","reason":"x","reason":"y"}"#,
            400,
            "invalid_request",
            "reason",
        ),
        (
            c("close"),
            Some(&alice),
            r#"{"disposition":"false_positive","reason":"x","severity":"low"}"#,
            400,
            "invalid_request",
            "unknown field `severity`",
        ),
        (
            c("close"),
            Some(&alice),
            r#"{"disposition":"maybe","reason":"x"}"#,
            400,
            "invalid_request",
            "disposition \"maybe\"",
        ),
        (
            c("close"),
            Some(&alice),
            r#"{"disposition":"false_positive"}"#,
            400,
            "invalid_request",
            "missing field `reason`",
        ),
        (
            c("close"),
            Some(&alice),
            r#"{"disposition":"false_positive","reason":"  "}"#,
            400,
            "invalid_request",
            "reason is required",
        ),
        (
            c("close"),
            Some(&alice),
            r#"{"disposition":"false_positive","reason":"x","helped":{"intel_ref":"CTI-1"}}"#,
            400,
            "invalid_request",
            "helped.intel_ref is for true positives",
        ),
        (
            c("close"),
            Some(&alice),
            r#"{"disposition":"duplicate","reason":"x"}"#,
            400,
            "invalid_request",
            "duplicate_of",
        ),
        (
            c("close"),
            Some(&alice),
            r#"{"disposition":"duplicate","reason":"x","duplicate_of":"01NOSUCHCASE"}"#,
            400,
            "invalid_request",
            "no case 01NOSUCHCASE",
        ),
        (
            c("close"),
            Some(&alice),
            r#"{"disposition":"false_positive","reason":"x","cancel_pending":"yes"}"#,
            400,
            "invalid_request",
            "cancel_pending: invalid type",
        ),
        (
            c("assign"),
            Some(&alice),
            r#"{"owner":"eve"}"#,
            400,
            "invalid_request",
            "not a known user",
        ),
        (
            c("assign"),
            Some(&alice),
            r#"{"owner":""}"#,
            400,
            "invalid_request",
            "owner must not be empty",
        ),
        (
            c("assign"),
            Some(&alice),
            r#"[]"#,
            400,
            "invalid_request",
            "does not fit",
        ),
        (
            c("notes"),
            Some(&alice),
            r#"{"text":""}"#,
            400,
            "invalid_request",
            "text is required",
        ),
        (
            c("notes"),
            Some(&alice),
            "{\"text\":\"a\\u0007b\"}",
            400,
            "invalid_request",
            "control characters",
        ),
        (
            c("reopen"),
            Some(&alice),
            r#"{}"#,
            400,
            "invalid_request",
            "missing field `reason`",
        ),
        (
            c("recover"),
            Some(&alice),
            r#"{"reason":"x","by":"bob"}"#,
            400,
            "invalid_request",
            "unknown field `by`",
        ),
        (
            "/v1/cases/01NOSUCHCASE/notes".into(),
            Some(&alice),
            r#"{"text":"hello"}"#,
            404,
            "not_found",
            "no case 01NOSUCHCASE",
        ),
        (
            "/v1/cases/bad%20id/notes".into(),
            Some(&alice),
            r#"{"text":"hello"}"#,
            400,
            "invalid_request",
            "not a case id",
        ),
    ];
    for (path, token, body, status, code, says) in &cases {
        let (s, v) = http_op(&d, path, *token, body).await;
        assert_eq!(
            (s, v["code"].as_str().unwrap_or("")),
            (*status, *code),
            "{path} {body}: {v}"
        );
        assert!(
            v["message"].as_str().unwrap_or("").contains(says),
            "{path} {body}: {v} does not say {says:?}"
        );
    }
    // Two credentials are ambiguous.
    let (s, v) = d
        .post_with(&c("notes"), r#"{"text":"x"}"#, |b| {
            b.header("authorization", format!("Bearer {alice}"))
                .header("authorization", "Bearer bob-token")
        })
        .await;
    assert_eq!(
        (s, v["code"].clone()),
        (401, json!("unauthenticated")),
        "{v}"
    );
    // The list's filters and paging.
    for (q, says) in [
        ("state=bogus", "a case state"),
        ("severity=sev1", "a severity"),
        ("disposition=fp", "a disposition"),
        ("open=maybe", "true or false"),
        ("limit=0", "from 1 to 1000"),
        ("after=../x", "not a case id"),
        ("owner_of=bob", "unknown query parameter"),
    ] {
        let (s, v) = d.get(&format!("/v1/cases?{q}")).await;
        assert_eq!(
            (s, v["code"].clone()),
            (400, json!("invalid_request")),
            "{q}: {v}"
        );
        assert!(v["message"].as_str().unwrap().contains(says), "{q}: {v}");
    }
    // gRPC: the same checks, INVALID_ARGUMENT.
    let mut a = d.grpc_as("alice").await;
    expect_code(
        a.cases.close_case(close_req(&case_id, "")).await,
        Code::InvalidArgument,
        "disposition is required",
    );
    expect_code(
        a.cases.close_case(close_req("", "false_positive")).await,
        Code::InvalidArgument,
        "case_id is required",
    );
    let mut fp = close_req(&case_id, "false_positive");
    fp.missed = "x".into();
    expect_code(
        a.cases.close_case(fp).await,
        Code::InvalidArgument,
        "missed is for true positives",
    );
    expect_code(
        a.cases
            .note_case(pb::NoteCaseRequest {
                case_id: case_id.clone(),
                text: "x".repeat(5000),
            })
            .await,
        Code::InvalidArgument,
        "longer than 4096",
    );
    expect_code(
        a.cases
            .assign_case(pb::AssignCaseRequest {
                case_id: case_id.clone(),
                owner: "eve".into(),
            })
            .await,
        Code::InvalidArgument,
        "not a known user",
    );
    expect_code(
        a.cases
            .reopen_case(pb::ReopenCaseRequest {
                case_id: case_id.clone(),
                reason: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "reason is required",
    );
    expect_code(
        a.cases
            .recover_case(pb::RecoverCaseRequest {
                case_id: "01NOSUCHCASE".into(),
                reason: "x".into(),
            })
            .await,
        Code::NotFound,
        "no case",
    );
    expect_code(
        a.cases
            .list_cases(pb::ListCasesRequest {
                state: "bogus".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "not a case state",
    );
    // Nothing changed and nothing was recorded.
    assert_eq!(d.head(), head, "bad input wrote audit records");
    assert_eq!(d.case(&case_id).await, before);
    assert_eq!(d.stop().await, 0);
}

/// Runs the real `cordon cases …` binary against the daemon as `user`.
async fn cases_cli(d: &TestDaemon, user: &str, args: &[&str]) -> (i32, String, String) {
    support::cli_as(&d.grpc_url(), &token_of(user), "cases", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cases_cli_assigns_notes_closes_and_shows_refusals() {
    let (dir, mut cfg) = support::workspace();
    configure_tokens(&mut cfg);
    let d = support::start_in(dir, cfg, None).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "cli-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-cli")],
        ),
    )
    .await;
    let (code, out, err) = cases_cli(&d, "alice", &["assign", &case_id, "bob"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("owner bob"), "{out}");
    let (code, _, err) = cases_cli(&d, "bob", &["note", &case_id, "installer confirmed"]).await;
    assert_eq!(code, 0, "{err}");
    // A refusal: the daemon's code and message, exit 1.
    let (code, _, err) = cases_cli(
        &d,
        "mallory",
        &[
            "close",
            &case_id,
            "--disposition",
            "false_positive",
            "--reason",
            "noise",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("PermissionDenied: case operation refused: a case assigned to someone else"),
        "{err}"
    );
    let (code, out, err) = cases_cli(
        &d,
        "bob",
        &[
            "close",
            &case_id,
            "--disposition",
            "benign_true_positive",
            "--reason",
            "admin tool",
            "--cancel-pending",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("closed benign_true_positive by bob: admin tool"),
        "{out}"
    );
    let (code, out, err) = cases_cli(&d, "alice", &["show", &case_id, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], json!("closed"));
    assert_eq!(v["owner"], json!("bob"));
    assert_eq!(v["notes"][0]["text"], json!("installer confirmed"));
    assert!(v["handoffs"]["closed"].is_string(), "{v}");
    // The text form shows the SLA, the actions and the handoffs too.
    let (code, out, err) = cases_cli(&d, "alice", &["show", &case_id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("closed benign_true_positive by bob: admin tool"),
        "{out}"
    );
    assert!(out.contains("note by bob: installer confirmed"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("  SLA: act by ")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("  action ")), "{out}");
    let handoffs = out
        .lines()
        .find(|l| l.starts_with("  handoffs: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        handoffs.contains("opened ")
            && handoffs.contains("first human action ")
            && handoffs.contains("closed "),
        "{handoffs}"
    );
    let (code, out, err) = cases_cli(
        &d,
        "alice",
        &["list", "--json", "--disposition", "benign_true_positive"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cases"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(d.stop().await, 0);
}
