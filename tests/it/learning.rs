//! Learning proposals: a true positive driven from alert to `learned` (isolate approved and
//! executed, the host released, the case recovered and closed with intel credited, the
//! generated regression test accepted and passing `cordon policy test`, the other proposals
//! resolved), ten false-positive closures of one rule on one host giving one tuning proposal
//! whose filter covers exactly those ten alerts and no true positive, and the proposal
//! operations refusing bad input (nothing changes) and users the policies refuse (recorded).

use std::path::{Path, PathBuf};

use cordon::config::Config;
use serde_json::{Value, json};

use crate::support::live::{self, Vendors};
use crate::support::{self, TestDaemon};
use crate::support::{USERS, token_of};
use crate::support::{cordon, run, text};

fn approvers(cfg: &mut Config, dir: &Path) {
    cfg.grpc.approvers = support::approvers(&USERS);
    cfg.learning.proposals_dir = dir.join("proposals");
}

async fn post_as(d: &TestDaemon, user: &str, path: &str, body: Value) -> (u16, Value) {
    d.post_with(path, body.to_string(), |r| {
        r.bearer_auth(token_of(user))
            .header("content-type", "application/json")
    })
    .await
}

async fn proposals(d: &TestDaemon, query: &str) -> Vec<Value> {
    let (s, v) = d.get(&format!("/v1/learning/proposals?{query}")).await;
    assert_eq!(s, 200, "{v}");
    v["proposals"].as_array().unwrap().clone()
}

fn kinds(d: &TestDaemon) -> Vec<String> {
    d.audit().into_iter().map(|r| r.body.kind).collect()
}

async fn close(d: &TestDaemon, user: &str, case_id: &str, body: Value) -> Value {
    let (s, v) = post_as(d, user, &format!("/v1/cases/{case_id}/close"), body).await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_true_positive_goes_from_alert_to_learned() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-lrn", "aid-lrn");
    let d = live::start_live(&v, approvers).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "lrn-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-lrn")],
        ),
    )
    .await;
    let iso = live::find_action(&d, &case_id, "isolate_host", Some("ws-lrn")).await;
    let iso_id = iso["action_id"].as_str().unwrap().to_string();
    live::approve_any(&d, &iso_id).await;
    assert_eq!(
        live::settled(&d, &iso_id).await["state"],
        json!("succeeded")
    );
    assert_eq!(v.cs.host_status("aid-lrn"), "contained");
    // The host is released (the rollback of the isolation, approved like any request).
    let cordon::engine::ExecReply::RollbackProposed(rb) = d
        .running()
        .engine
        .exec(cordon::engine::ExecOp::Rollback {
            action_id: iso_id.clone(),
            user: "carol".into(),
            reason: "reimaged".into(),
        })
        .await
        .unwrap()
    else {
        panic!("rollback not proposed")
    };
    if rb.state == cordon::action::ActionState::AwaitingApproval {
        live::approve_any(&d, &rb.action_id).await;
    }
    assert_eq!(
        live::settled(&d, &rb.action_id).await["state"],
        json!("succeeded")
    );
    assert_eq!(v.cs.host_status("aid-lrn"), "normal");

    let (s, v) = post_as(
        &d,
        "alice",
        &format!("/v1/cases/{case_id}/notes"),
        json!({"text": "loader confirmed on ws-lrn; host reimaged"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let closed = close(
        &d,
        "alice",
        &case_id,
        json!({"disposition": "true_positive", "reason": "confirmed loader",
               "helped": {"intel_ref": "intel-2026-042"}, "missed": "no rule for the staging share",
               "cancel_pending": true}),
    )
    .await;
    assert_eq!(closed["case"]["state"], json!("closed"), "{closed}");

    let ps = proposals(&d, &format!("case={case_id}")).await;
    let mut got: Vec<&str> = ps.iter().map(|p| p["kind"].as_str().unwrap()).collect();
    got.sort();
    assert_eq!(
        got,
        ["detection_backlog", "intel_credit", "regression_test"],
        "{ps:#?}"
    );
    let of = |k: &str| ps.iter().find(|p| p["kind"] == json!(k)).unwrap().clone();
    let reg = of("regression_test");
    let reg_id = reg["id"].as_str().unwrap().to_string();
    assert!(
        reg["files"][0]["contents"]
            .as_str()
            .unwrap()
            .contains("isolate_host"),
        "{reg}"
    );

    // Bad input changes nothing; a user the policies refuse is refused and recorded.
    let before = d.head();
    for (path, body, code) in [
        (
            "/v1/learning/proposals/not-an-id/accept".to_string(),
            json!({}),
            400,
        ),
        (
            format!("/v1/learning/proposals/{reg_id}/dismiss"),
            json!({}),
            400,
        ),
        (
            format!("/v1/learning/proposals/{reg_id}/accept"),
            json!({"reason": "ok", "extra": 1}),
            400,
        ),
        (
            "/v1/learning/proposals/lp-0000000000000000/accept".to_string(),
            json!({}),
            404,
        ),
    ] {
        let (s, v) = post_as(&d, "alice", &path, body).await;
        assert_eq!(s, code, "{path}: {v}");
    }
    assert_eq!(d.head(), before, "bad input was recorded");
    let (s, v) = post_as(
        &d,
        "mallory",
        &format!("/v1/learning/proposals/{reg_id}/accept"),
        json!({}),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        kinds(&d).last().map(String::as_str),
        Some("case_op_refused")
    );

    // Accepting writes the regression test for review; it passes against the policies.
    let (s, v) = post_as(
        &d,
        "alice",
        &format!("/v1/learning/proposals/{reg_id}/accept"),
        json!({"reason": "pin it"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["proposal"]["state"], json!("accepted"));
    let written = PathBuf::from(v["proposal"]["resolution"]["written"][0].as_str().unwrap());
    assert!(written.starts_with(d.config.learning.proposals_dir.clone()));
    let policies = tempfile::tempdir().unwrap();
    support::copy_dir(&d.config.policies_dir, policies.path());
    std::fs::copy(&written, policies.path().join("tests/regression.toml")).unwrap();
    let mut c = cordon();
    c.args(["policy", "test"]).arg(policies.path());
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("regression.toml"),
        "{}",
        text(&out.stdout)
    );
    let (s, v) = post_as(
        &d,
        "alice",
        &format!("/v1/learning/proposals/{reg_id}/accept"),
        json!({}),
    )
    .await;
    assert_eq!(s, 409, "accepted twice: {v}");
    assert_eq!(d.case(&case_id).await["case"]["state"], json!("closed"));

    let intel = of("intel_credit")["id"].as_str().unwrap().to_string();
    let (s, v) = post_as(
        &d,
        "alice",
        &format!("/v1/learning/proposals/{intel}/accept"),
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let backlog = of("detection_backlog")["id"].as_str().unwrap().to_string();
    let (s, v) = post_as(
        &d,
        "alice",
        &format!("/v1/learning/proposals/{backlog}/dismiss"),
        json!({"reason": "already on the backlog"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["case"]["state"], json!("learned"), "{v}");

    // Every step is in the audit store, in order.
    let case_kinds: Vec<(String, Value)> = d
        .audit()
        .into_iter()
        .filter(|r| r.body.case_id.as_deref() == Some(case_id.as_str()))
        .map(|r| (r.body.kind, r.body.data))
        .collect();
    let to: Vec<&str> = case_kinds
        .iter()
        .filter(|(k, _)| k == "case_transition")
        .filter_map(|(_, d)| d["to"].as_str())
        .collect();
    let tail: Vec<&str> = to.iter().rev().take(3).rev().copied().collect();
    assert_eq!(tail, ["recovered", "closed", "learned"], "{to:?}");
    let count = |k: &str| case_kinds.iter().filter(|(x, _)| x == k).count();
    assert_eq!(count("learning_proposed"), 3);
    assert_eq!(count("learning_accepted"), 2);
    assert_eq!(count("learning_dismissed"), 1);
    assert_eq!(count("case_closed"), 1);
    assert_eq!(count("case_note"), 1);
    // Allowed by Cedar: the note, the close, three accepts (the second of the same proposal then
    // refused for its state) and the dismissal; refused: mallory's accept and that second accept.
    assert_eq!(count("case_op_decision"), 6);
    assert_eq!(count("case_op_refused"), 2);

    // And it replays: every decision of the case, the analyst's operations included.
    let decisions = count("policy_decision") + count("case_op_decision") + count("case_op_refused");
    let data = d.config.data_dir.clone();
    let mut d = d;
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    let _workspace = d.dir;
    let mut c = cordon();
    c.args(["replay", "--json", "--case", &case_id, "--data-dir"])
        .arg(&data);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let r: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(r["replayed"], r["identical"], "{r}");
    assert!(
        r["replayed"].as_u64().unwrap() >= decisions as u64,
        "{r} < {decisions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_false_positives_on_one_host_give_one_tuning_that_hides_only_them() {
    let (dir, mut cfg) = support::workspace();
    approvers(&mut cfg, dir.path());
    let d = support::start_in(dir, cfg, None).await;
    let rule = "Odd admin logon";
    let mut fps = Vec::new();
    let mut fp_cases = Vec::new();
    for i in 0..10 {
        let (s, ack) = d
            .post(
                "/v1/alerts",
                live::alert(
                    &format!("fp-{i}"),
                    rule,
                    &["T1078"],
                    &[("host", "ws-fp"), ("user", &format!("u{i}@example.com"))],
                ),
            )
            .await;
        assert_eq!(s, 202, "{ack}");
        fps.push(ack["alert_id"].as_str().unwrap().to_string());
        let case_id = ack["case_id"].as_str().unwrap().to_string();
        assert!(!fp_cases.contains(&case_id), "a closed case was joined");
        close(
            &d,
            "alice",
            &case_id,
            json!({"disposition": "false_positive", "reason": "backup job", "cancel_pending": true}),
        )
        .await;
        fp_cases.push(case_id);
    }
    // A true positive of the same rule elsewhere, sharing a user with one false positive.
    let (s, ack) = d
        .post(
            "/v1/alerts",
            live::alert(
                "tp-1",
                rule,
                &["T1078"],
                &[("host", "ws-tp"), ("user", "u3@example.com")],
            ),
        )
        .await;
    assert_eq!(s, 202, "{ack}");
    let tp_case = ack["case_id"].as_str().unwrap().to_string();
    close(
        &d,
        "alice",
        &tp_case,
        json!({"disposition": "true_positive", "reason": "stolen creds", "cancel_pending": true}),
    )
    .await;

    let tunings = proposals(&d, "kind=tuning").await;
    assert_eq!(tunings.len(), 1, "{tunings:#?}");
    let t = &tunings[0];
    let mut suppressed: Vec<String> = t["evidence"]["would_suppress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    suppressed.sort();
    let mut want = fps.clone();
    want.sort();
    assert_eq!(suppressed, want, "{t}");
    assert_eq!(t["evidence"]["filter"]["entity"], json!("host:ws-fp"));
    assert_eq!(t["evidence"]["true_positives_matched"], json!(0));
    assert_eq!(t["cases"].as_array().unwrap().len(), 10);
    let sigma = t["files"][0]["contents"].as_str().unwrap();
    assert!(sigma.contains("rule-Odd admin logon") && sigma.contains("condition: not selection"));

    // The CLI lists the same proposal over gRPC, and says why it refuses.
    let id = t["id"].as_str().unwrap();
    let learn = |user: &str, args: &[&str]| {
        let mut c = cordon();
        c.arg("learn")
            .args(args)
            .env("CORDON_GRPC_URL", d.grpc_url())
            .env("CORDON_TOKEN", token_of(user));
        run(c)
    };
    let out = learn("alice", &["list", "--kind", "tuning", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(listed["proposals"][0]["proposal_id"], json!(id), "{listed}");
    assert_eq!(
        listed["proposals"][0]["evidence"]["would_suppress"],
        t["evidence"]["would_suppress"]
    );
    let out = learn("alice", &["accept", id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("only an incident commander accepts one"),
        "{}",
        text(&out.stderr)
    );
    let out = learn("alice", &["dismiss", "lp-12", "--reason", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a learning proposal id"),
        "{}",
        text(&out.stderr)
    );

    // Only an incident commander accepts a tuning; then every case it came from is learned.
    let (s, v) = post_as(
        &d,
        "alice",
        &format!("/v1/learning/proposals/{id}/accept"),
        json!({}),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = post_as(
        &d,
        "carol",
        &format!("/v1/learning/proposals/{id}/accept"),
        json!({"reason": "backup host"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["proposal"]["resolution"]["written"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for c in &fp_cases {
        assert_eq!(d.case(c).await["case"]["state"], json!("learned"), "{c}");
    }
    assert_eq!(d.stop().await, 0);
}
