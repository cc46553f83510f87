//! AI agents as principals, against the real daemon: proposals over HTTP and gRPC become
//! ordinary action requests (agent tier per `policies/agents.cedar`, approvals over gRPC, the
//! executor), the same proposal twice is one request, citations must be the case's own, an
//! agent token can never vote or approve (refused and audited) and an approver token is not an
//! agent token, per-agent limits, findings never change case state, and bad input changes
//! nothing.

use cordon::agent::AgentConfig;
use cordon::api::pb;
use cordon::config::Config;
use cordon::store::AuditRecord;
use serde_json::{Value, json};
use tonic::Code;

use crate::support::{self, TestDaemon};

pub(crate) const COPILOT: &str = "copilot-agent-token";
pub(crate) const TRIAGE: &str = "triage-agent-token";
const BURST: &str = "burst-agent-token";
const NARROW: &str = "narrow-agent-token";

fn agent(name: &str, token: &str, calls: u32, open: u32) -> AgentConfig {
    AgentConfig {
        name: name.into(),
        token: support::sha_ref(token),
        max_calls_per_minute: calls,
        max_open_proposals_per_case: open,
    }
}

/// Approvers alice and bob (on-call), four agents, the executor on (connectors in dry_run).
pub(crate) fn configure(cfg: &mut Config) {
    cfg.grpc.approvers = support::approvers(&["alice", "bob"]);
    cfg.agents = vec![
        agent("soc-copilot", COPILOT, 1000, 5),
        agent("triage-assistant", TRIAGE, 1000, 5),
        agent("burst", BURST, 2, 5),
        agent("narrow", NARROW, 1000, 1),
    ];
    cfg.policy.watch = false;
    cfg.executor.enabled = true;
}

pub(crate) async fn start() -> TestDaemon {
    support::start_with(|cfg, _| configure(cfg)).await
}

async fn propose(d: &TestDaemon, token: &str, case_id: &str, body: Value) -> (u16, Value) {
    d.post_with(
        &format!("/v1/cases/{case_id}/proposals"),
        body.to_string(),
        |b| b.bearer_auth(token),
    )
    .await
}

/// A gRPC proposal to isolate `ws-042` on `case_id`, citing `alert_id`, with `parameters_json`.
fn grpc_isolate(case_id: &str, alert_id: &str, parameters_json: &str) -> pb::ProposeActionRequest {
    pb::ProposeActionRequest {
        case_id: case_id.into(),
        action: "isolate_host".into(),
        target: "ws-042".into(),
        connector: "crowdstrike".into(),
        parameters_json: parameters_json.into(),
        hypothesis: "h".into(),
        confidence: 80,
        citations: vec![format!("alert:{alert_id}")],
    }
}

fn isolate(alert_id: &str) -> Value {
    json!({
        "action": "isolate_host",
        "target": "ws-042",
        "connector": "crowdstrike",
        "hypothesis": "encoded PowerShell from WINWORD on ws-042 is a macro dropper",
        "confidence": 80,
        "citations": [format!("alert:{alert_id}")],
    })
}

pub(crate) fn calls_of(d: &TestDaemon, agent: &str) -> Vec<AuditRecord> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == "agent_call" && r.body.data["agent"] == json!(agent))
        .collect()
}

/// The case's action ids and the number of `action_proposed` records: what a refused call
/// must leave as it was.
fn footprint(d: &TestDaemon, case: &Value) -> (usize, usize) {
    let proposed = d
        .audit()
        .iter()
        .filter(|r| r.body.kind == "action_proposed")
        .count();
    (case["actions"].as_array().unwrap().len(), proposed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_becomes_an_approved_and_executed_request_and_twice_is_one() {
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let (case_id, alert_id) = (
        ack["case_id"].as_str().unwrap().to_string(),
        ack["alert_id"].as_str().unwrap().to_string(),
    );

    let (s, first) = propose(&d, COPILOT, &case_id, isolate(&alert_id)).await;
    assert_eq!(s, 201, "{first}");
    let a = &first["action"];
    let id = a["action_id"].as_str().unwrap().to_string();
    // Agent-proposed containment: one more approver than the playbook's isolation (one).
    assert_eq!(a["tier"], json!("two_person"), "{a}");
    assert_eq!(a["state"], json!("awaiting_approval"));
    assert_eq!(a["requester"], json!("agent:soc-copilot"));
    assert_eq!(a["proposal"]["ai_generated"], json!(true));
    assert!(
        a["determining_policies"]
            .as_array()
            .unwrap()
            .contains(&json!("agent-containment-one-more-approver")),
        "{a}"
    );

    // The same proposal again (over gRPC this time) is the same request.
    let mut agent = d.grpc(Some(COPILOT)).await;
    let again = agent
        .agents
        .propose_action(pb::ProposeActionRequest {
            case_id: case_id.clone(),
            action: "isolate_host".into(),
            target: "host:ws-042".into(),
            connector: "crowdstrike".into(),
            parameters_json: String::new(),
            hypothesis: "asked again".into(),
            confidence: 80,
            citations: vec![format!("alert:{alert_id}")],
        })
        .await
        .expect("ProposeAction")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.action.unwrap().action_id, id);
    let (s, dup) = propose(&d, COPILOT, &case_id, isolate(&alert_id)).await;
    assert_eq!((s, &dup["duplicate"]), (200, &json!(true)), "{dup}");
    let case = d.case(&case_id).await;
    let by_agent: Vec<_> = case["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["requester"] == json!("agent:soc-copilot"))
        .collect();
    assert_eq!(by_agent.len(), 1, "{case}");

    // Approvers see the hypothesis and citations.
    let mut alice = d.grpc_as("alice").await;
    let view = alice
        .approvals
        .get_approval(pb::GetApprovalRequest {
            approval_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let p = view.agent_proposal.clone().expect("agent proposal shown");
    assert_eq!(p.agent, "soc-copilot");
    assert!(p.hypothesis.contains("macro dropper"), "{p:?}");
    assert_eq!(p.citations, vec![format!("alert:{alert_id}")]);
    assert!(p.ai_generated);
    assert_eq!(view.approvals_needed, 2);

    // Two people approve over gRPC; the executor runs it (connectors are in dry_run).
    let vote = |hash: &str| pb::VoteRequest {
        approval_id: id.clone(),
        request_hash: hash.to_string(),
        comment: String::new(),
    };
    let r = alice.approvals.approve(vote(&view.request_hash)).await;
    assert_eq!(r.unwrap().into_inner().outcome, "counted");
    let mut bob = d.grpc_as("bob").await;
    let r = bob.approvals.approve(vote(&view.request_hash)).await;
    assert_eq!(r.unwrap().into_inner().outcome, "approved");
    let done = support::eventually(20, || async {
        let (_, a) = d.get(&format!("/v1/actions/{id}")).await;
        (a["state"] == json!("dry_run")).then_some(a)
    })
    .await;
    assert_eq!(done["kind"], json!("isolate_host"));

    // The record: every call with the agent's name, the decision with the agent as principal.
    let calls = calls_of(&d, "soc-copilot");
    let outcomes: Vec<_> = calls
        .iter()
        .map(|r| r.body.data["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        outcomes,
        ["accepted", "duplicate", "duplicate"],
        "{calls:?}"
    );
    assert_eq!(calls[1].body.data["via"], json!("grpc"));
    let decision = d
        .audit()
        .into_iter()
        .find(|r| r.body.kind == "policy_decision" && r.body.action_id.as_deref() == Some(&id))
        .unwrap();
    assert_eq!(
        decision.body.data["request"]["principal"],
        json!({"type": "Cordon::Agent", "id": "soc-copilot"})
    );
    // The agent's token is never recorded.
    let audit = serde_json::to_string(&d.audit()).unwrap();
    assert!(!audit.contains(COPILOT));
    // `explain` tells the proposal with its hypothesis and citations.
    let (s, story) = d.get(&format!("/v1/actions/{id}/explain")).await;
    assert_eq!(s, 200, "{story}");
    let told = story["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == json!("action_proposed"))
        .cloned()
        .unwrap_or_default();
    assert!(
        told["what"]
            .as_str()
            .unwrap_or_default()
            .contains("agent soc-copilot proposed"),
        "{told}"
    );
    assert_eq!(
        told["facts"]["citations"],
        json!([format!("alert:{alert_id}")])
    );
    assert_eq!(told["facts"]["ai_generated"], json!(true));
    let data = d.config.data_dir.clone();
    let (_dir, code) = (d.dir, {
        let mut d = d.running;
        d.take().unwrap().shutdown().await
    });
    assert_eq!(code, 0);

    // Replay re-decides the agent's decisions from the store alone, the agent as principal:
    // its proposal, the approvals reached, the pre-execution re-check, and this action's alone.
    for filter in [vec![], vec!["--action", id.as_str()]] {
        let (code, report, err) = crate::replay::replay_json(&data, &filter);
        assert_eq!(code, 0, "{filter:?}: {report:#}\n{err}");
        let replayed = report["replayed"].as_u64().unwrap();
        assert!(replayed >= 3, "{filter:?}: {report:#}");
        assert_eq!(report["identical"].as_u64(), Some(replayed), "{report:#}");
        assert_eq!(report["failed"], json!([]), "{report:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citations_must_be_the_cases_own_and_refusals_change_nothing() {
    let d = start().await;
    let one = d.ingest_fixture("elastic", "elastic.json").await;
    let other = d.ingest_fixture("sentinel", "sentinel.json").await;
    let case_id = one["case_id"].as_str().unwrap().to_string();
    assert_ne!(other["case_id"], one["case_id"]);
    let foreign_alert = other["alert_id"].as_str().unwrap();
    let foreign_record = d
        .audit()
        .into_iter()
        .find(|r| r.body.case_id.as_deref() == other["case_id"].as_str())
        .unwrap()
        .body
        .seq;
    let alert_id = one["alert_id"].as_str().unwrap();
    let before = footprint(&d, &d.case(&case_id).await);
    let with = |cites: Value| {
        let mut b = isolate(alert_id);
        b["citations"] = cites;
        b
    };
    let cases = [
        (with(json!([])), 422, "no_citations"),
        (
            with(json!([format!("alert:{foreign_alert}")])),
            422,
            "foreign_citation",
        ),
        (
            with(json!([format!("record:{foreign_record}")])),
            422,
            "foreign_citation",
        ),
        (with(json!(["record:999999"])), 422, "foreign_citation"),
        (
            with(json!(["fact:host:not-in-this-case"])),
            422,
            "foreign_citation",
        ),
        (with(json!(["because I said so"])), 422, "bad_citation"),
    ];
    for (body, status, code) in cases {
        let (s, v) = propose(&d, COPILOT, &case_id, body.clone()).await;
        assert_eq!(
            (s, v["code"].as_str().unwrap()),
            (status, code),
            "{body}: {v}"
        );
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    // A record of this very case is a good citation.
    let own_record = d
        .audit()
        .into_iter()
        .find(|r| r.body.case_id.as_deref() == Some(&case_id))
        .unwrap()
        .body
        .seq;
    let refused_so_far = calls_of(&d, "soc-copilot").len();
    assert_eq!(refused_so_far, 6, "every refusal is recorded");
    assert!(
        calls_of(&d, "soc-copilot")
            .iter()
            .all(|r| r.body.data["outcome"] == json!("refused"))
    );
    assert_eq!(footprint(&d, &d.case(&case_id).await), before);
    let (s, v) = propose(
        &d,
        COPILOT,
        &case_id,
        with(json!([format!("record:{own_record}"), "fact:host:ws-042"])),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_outside_its_action_kinds_is_denied_by_policy() {
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap();
    let alert_id = ack["alert_id"].as_str().unwrap();
    let (s, v) = propose(&d, TRIAGE, case_id, isolate(alert_id)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["action"]["tier"], json!("denied"), "{v}");
    assert_eq!(v["action"]["state"], json!("denied"));
    assert!(
        v["action"]["determining_policies"]
            .as_array()
            .unwrap()
            .contains(&json!("triage-assistant-enrichment-and-tickets-only")),
        "{v}"
    );
    // A ticket is within its kinds: it needs one approver (an agent's proposal is never auto).
    let ticket = json!({"action": "create_ticket", "connector": "thehive",
        "hypothesis": "needs a case in TheHive", "confidence": 60,
        "citations": [format!("alert:{alert_id}")]});
    let (s, v) = propose(&d, TRIAGE, case_id, ticket).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["action"]["tier"], json!("one_approver"), "{v}");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_cannot_vote_or_approve_and_an_approver_token_is_not_an_agent_token() {
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let mut alice = d.grpc_as("alice").await;
    let pending = alice
        .approvals
        .list_pending(pb::ListPendingRequest::default())
        .await
        .unwrap()
        .into_inner()
        .approvals;
    let a = pending
        .iter()
        .find(|a| a.case_id == case_id && a.action == "isolate_host")
        .expect("the playbook's isolation awaits approval")
        .clone();

    let mut agent = d.grpc(Some(COPILOT)).await;
    let vote = pb::VoteRequest {
        approval_id: a.approval_id.clone(),
        request_hash: a.request_hash.clone(),
        comment: String::new(),
    };
    let e = agent.approvals.approve(vote.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("agent credentials cannot"), "{e:?}");
    let e = agent.approvals.deny(vote).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = agent
        .approvals
        .request_rollback(pb::RollbackRequest {
            action_id: a.approval_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Each refusal is recorded with the agent's name.
    let refused = support::eventually(10, || async {
        let r: Vec<String> = calls_of(&d, "soc-copilot")
            .iter()
            .filter(|r| r.body.data["outcome"] == json!("refused"))
            .map(|r| r.body.data["call"].as_str().unwrap_or_default().to_string())
            .collect();
        (r.len() >= 3).then_some(r)
    })
    .await;
    for call in ["Approve", "Deny", "RequestRollback"] {
        assert!(
            refused.iter().any(|r| r.ends_with(call)),
            "{call} not recorded: {refused:?}"
        );
    }
    // Nothing changed: the request is still pending with no votes.
    let still = alice
        .approvals
        .get_approval(pb::GetApprovalRequest {
            approval_id: a.approval_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.state, "awaiting_approval");
    assert!(still.votes.is_empty());

    // An approver's token is not an agent token, on gRPC and on HTTP.
    let e = alice
        .agents
        .propose_action(pb::ProposeActionRequest {
            case_id: case_id.clone(),
            action: "enrich".into(),
            connector: "cordon".into(),
            hypothesis: "h".into(),
            citations: vec!["alert:x".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let (s, v) = propose(&d, "alice-token", &case_id, json!({})).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthorized")), "{v}");

    // Nor can an agent close a case: refused on gRPC (and recorded) and on HTTP.
    let e = agent
        .cases
        .close_case(pb::CloseCaseRequest {
            case_id: case_id.clone(),
            disposition: "false_positive".into(),
            reason: "the agent thinks so".into(),
            cancel_pending: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let (s, v) = d
        .post_with(
            &format!("/v1/cases/{case_id}/close"),
            json!({"disposition": "false_positive", "reason": "r", "cancel_pending": true})
                .to_string(),
            |r| {
                r.bearer_auth(COPILOT)
                    .header("content-type", "application/json")
            },
        )
        .await;
    assert_eq!(s, 401, "{v}");
    support::eventually(10, || async {
        calls_of(&d, "soc-copilot")
            .iter()
            .any(|r| {
                r.body.data["outcome"] == json!("refused")
                    && r.body.data["call"]
                        .as_str()
                        .is_some_and(|c| c.ends_with("CloseCase"))
            })
            .then_some(())
    })
    .await;
    let (_, case) = d.get(&format!("/v1/cases/{case_id}")).await;
    assert!(case["case"]["closure"].is_null(), "{case}");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_agent_rate_and_open_proposal_limits_refuse_and_record() {
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let alert_id = ack["alert_id"].as_str().unwrap();
    let cite = json!([format!("alert:{alert_id}")]);
    let finding = json!({"kind": "summary", "text": "s", "citations": cite});
    for _ in 0..2 {
        let (s, v) = d
            .post_with(
                &format!("/v1/cases/{case_id}/findings"),
                finding.to_string(),
                |b| b.bearer_auth(BURST),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = d
        .post_with(
            &format!("/v1/cases/{case_id}/findings"),
            finding.to_string(),
            |b| b.bearer_auth(BURST),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (429, Some("rate_limited")), "{v}");
    let last = calls_of(&d, "burst").pop().unwrap();
    assert_eq!(last.body.data["outcome"], json!("refused"));

    // One open proposal per case for `narrow`: a second, different one is refused.
    let (s, v) = propose(&d, NARROW, &case_id, isolate(alert_id)).await;
    assert_eq!(s, 201, "{v}");
    let before = footprint(&d, &d.case(&case_id).await);
    let mut second = isolate(alert_id);
    second["parameters"] = json!({"comment": "again, differently"});
    let (s, v) = propose(&d, NARROW, &case_id, second).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (429, Some("too_many_open_proposals")),
        "{v}"
    );
    // The same quota over gRPC is RESOURCE_EXHAUSTED, as HTTP's 429 is.
    let mut narrow = d.grpc(Some(NARROW)).await;
    let e = narrow
        .agents
        .propose_action(grpc_isolate(
            &case_id,
            alert_id,
            r#"{"comment": "a third way"}"#,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert_eq!(footprint(&d, &d.case(&case_id).await), before);
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_are_ai_generated_notes_that_never_change_case_state() {
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let alert_id = ack["alert_id"].as_str().unwrap();
    let before = d.case(&case_id).await;
    let mut agent = d.grpc(Some(COPILOT)).await;
    let r = agent
        .agents
        .add_finding(pb::AddFindingRequest {
            case_id: case_id.clone(),
            kind: "attack_mapping".into(),
            text: "T1059.001 PowerShell via Office macro".into(),
            techniques: vec!["T1059.001".into(), "T1566".into()],
            confidence: 70,
            citations: vec![format!("alert:{alert_id}")],
        })
        .await
        .unwrap()
        .into_inner();
    let rec = d.audit().into_iter().find(|x| x.body.seq == r.seq).unwrap();
    assert_eq!(rec.body.kind, "agent_finding");
    assert_eq!(rec.body.case_id.as_deref(), Some(case_id.as_str()));
    assert_eq!(rec.body.data["ai_generated"], json!(true));
    assert_eq!(rec.body.data["agent"], json!("soc-copilot"));
    let after = d.case(&case_id).await;
    assert_eq!(after["case"]["state"], before["case"]["state"]);
    assert_eq!(after["case"]["history"], before["case"]["history"]);
    // Bad findings are refused with a clear error.
    for (f, want) in [
        (
            json!({"kind": "rumour", "text": "t", "citations": [format!("alert:{alert_id}")]}),
            "rumour",
        ),
        (
            json!({"kind": "attack_mapping", "text": "t", "techniques": ["X1"], "citations": [format!("alert:{alert_id}")]}),
            "ATT&CK",
        ),
        (
            json!({"kind": "summary", "text": "t", "citations": []}),
            "citation",
        ),
    ] {
        let (s, v) = d
            .post_with(
                &format!("/v1/cases/{case_id}/findings"),
                f.to_string(),
                |b| b.bearer_auth(COPILOT),
            )
            .await;
        assert_eq!(s, 422, "{v}");
        assert!(v["message"].as_str().unwrap().contains(want), "{v}");
    }
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_the_agent_endpoints_gets_a_clear_error_and_changes_nothing() {
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let alert_id = ack["alert_id"].as_str().unwrap();
    let before = footprint(&d, &d.case(&case_id).await);
    let path = format!("/v1/cases/{case_id}/proposals");
    let mut unknown_field = isolate(alert_id);
    unknown_field["urgency"] = json!("now");
    let mut bad_action = isolate(alert_id);
    bad_action["action"] = json!("format_disk");
    let mut bad_target = isolate(alert_id);
    bad_target["target"] = json!("ws-999");
    let mut bad_connector = isolate(alert_id);
    bad_connector["connector"] = json!("sentinelone");
    let mut bad_confidence = isolate(alert_id);
    bad_confidence["confidence"] = json!(101);
    // The parameters a playbook step may not have: an expiry out of range, or on another action.
    let mut zero_expiry = isolate(alert_id);
    zero_expiry["action"] = json!("block_ioc");
    zero_expiry["target"] = json!("ip:203.0.113.77");
    zero_expiry["parameters"] = json!({"expires_after_mins": 0});
    let mut huge_expiry = zero_expiry.clone();
    huge_expiry["parameters"] = json!({"expires_after_mins": 99_999_999});
    let mut misplaced_expiry = isolate(alert_id);
    misplaced_expiry["parameters"] = json!({"expires_after_mins": 60});
    let bodies: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "malformed_json"),
        (
            r#"{"action":"a","action":"b"}"#.into(),
            400,
            "duplicate_key",
        ),
        (unknown_field.to_string(), 422, "invalid_field"),
        (bad_action.to_string(), 422, "unknown_action"),
        (bad_target.to_string(), 422, "bad_target"),
        (bad_connector.to_string(), 422, "invalid_field"),
        (bad_confidence.to_string(), 422, "invalid_field"),
        (zero_expiry.to_string(), 422, "invalid_field"),
        (huge_expiry.to_string(), 422, "invalid_field"),
        (misplaced_expiry.to_string(), 422, "invalid_field"),
    ];
    for (body, status, code) in bodies {
        let (s, v) = d
            .post_with(&path, body.clone(), |b| b.bearer_auth(COPILOT))
            .await;
        assert_eq!((s, v["code"].as_str()), (status, Some(code)), "{body}: {v}");
    }
    let (s, v) = propose(&d, COPILOT, "01NOSUCHCASE", isolate(alert_id)).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")), "{v}");
    // Credentials: none, wrong, two, or in the query.
    let (s, v) = d.post(&path, isolate(alert_id).to_string()).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    let (s, v) = propose(&d, "nope", &case_id, isolate(alert_id)).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    let (s, v) = d
        .post_with(&path, isolate(alert_id).to_string(), |b| {
            b.bearer_auth(COPILOT)
                .header("authorization", format!("Bearer {TRIAGE}"))
        })
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (401, Some("ambiguous_credentials")),
        "{v}"
    );
    let (s, v) = d
        .post(
            &format!("{path}?token={COPILOT}"),
            isolate(alert_id).to_string(),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (401, Some("query_token_not_allowed")),
        "{v}"
    );
    // gRPC: parameters that are not a JSON object.
    let mut agent = d.grpc(Some(COPILOT)).await;
    let e = agent
        .agents
        .propose_action(grpc_isolate(&case_id, alert_id, "[1]"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(footprint(&d, &d.case(&case_id).await), before);
    assert!(
        calls_of(&d, "soc-copilot")
            .iter()
            .all(|r| r.body.data["outcome"] == json!("refused"))
    );
    assert_eq!(d.stop().await, 0);
}

/// `cordon agents …` (the real binary) with `token` in CORDON_TOKEN.
async fn cli(d: &TestDaemon, token: &str, args: &[&str]) -> (i32, String, String) {
    support::cli_as(&d.grpc_url(), token, "agents", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_cli_proposes_and_adds_findings_and_shows_refusals() {
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let cite = format!("alert:{}", ack["alert_id"].as_str().unwrap());
    let args = [
        "propose",
        &case_id,
        "--action",
        "create_ticket",
        "--connector",
        "thehive",
        "--hypothesis",
        "needs a ticket",
        "--confidence",
        "70",
        "--cite",
        &cite,
        "--json",
    ];
    let (code, out, err) = cli(&d, TRIAGE, &args).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tier"], json!("one_approver"), "{v}");
    assert_eq!(v["duplicate"], json!(false));
    let (code, out, _) = cli(&d, TRIAGE, &args).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["duplicate"],
        json!(true)
    );
    let (code, out, err) = cli(
        &d,
        COPILOT,
        &[
            "finding",
            &case_id,
            "--kind",
            "summary",
            "--text",
            "macro dropper",
            "--cite",
            &cite,
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("finding recorded"), "{out}");
    // Refusals: no citation (exit 65 with the reason), an approver's token (exit 77).
    let (code, _, err) = cli(
        &d,
        COPILOT,
        &["finding", &case_id, "--kind", "summary", "--text", "t"],
    )
    .await;
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("citation"), "{err}");
    let (code, _, err) = cli(&d, "alice-token", &args).await;
    assert_eq!(code, 77, "{err}");
    assert_eq!(d.stop().await, 0);
}
