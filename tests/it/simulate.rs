//! `cordon simulate --policies DIR`: a candidate set that makes `isolate_host` automatic reports
//! exactly the recorded isolate steps as `one_approver → auto`, names their cases, and
//! `--fail-on looser` fails; the set in force reports no change; every run is recorded in the
//! audit store, which still verifies and replays identically.

use serde_json::{Value, json};

use crate::replay::{recorded_run, replay_json};
use crate::support::{cordon, run, simulate, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_isolation_candidate_reports_the_isolate_steps_and_fails_the_looser_gate() {
    let r = recorded_run(false).await;
    let cand = tempfile::tempdir().unwrap();
    crate::support::copy_dir(&r.policies, cand.path());
    let f = cand.path().join("blast_radius.cedar");
    let t = std::fs::read_to_string(&f).unwrap();
    let t = t.replace(
        "permit (principal, action == Cordon::Action::\"isolate_host\", resource)\nwhen { context.approvals >= 1 };",
        "permit (principal, action == Cordon::Action::\"isolate_host\", resource);",
    );
    std::fs::write(&f, &t).unwrap();
    assert!(t.contains("\"isolate_host\", resource);"));

    let (code, out, err) = simulate(&r.data, cand.path(), &["--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let rep: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rep["by_transition"],
        json!({"isolate_host: one_approver → auto": 2}),
        "{rep:#}"
    );
    let changes = rep["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{rep:#}");
    assert!(
        changes
            .iter()
            .all(|c| c["action"] == json!("isolate_host") && c["direction"] == json!("looser"))
    );
    let mut cases = vec![r.first_case.clone(), r.second_case.clone()];
    cases.sort();
    assert_eq!(rep["cases"], json!(cases));
    assert_eq!(rep["looser"], json!(2));
    assert_eq!(rep["stricter"], json!(0));
    assert_eq!(rep["new_errors"], json!(0));
    assert!(rep["decisions"].as_u64().unwrap() > 2, "{rep:#}");

    let (code, out, _) = simulate(&r.data, cand.path(), &["--fail-on", "looser"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("isolate_host: one_approver → auto: 2"),
        "{out}"
    );
    assert!(
        out.contains(&r.first_case) && out.contains(&r.second_case),
        "{out}"
    );
    let (code, _, _) = simulate(&r.data, cand.path(), &["--fail-on", "stricter"]);
    assert_eq!(code, 0);
    let (code, md, _) = simulate(&r.data, cand.path(), &["--markdown"]);
    assert_eq!(code, 0);
    assert!(
        md.contains("| isolate_host: one_approver → auto | 2 |"),
        "{md}"
    );

    // The set in force changes nothing.
    let (code, out, err) = simulate(&r.data, &r.policies, &["--json", "--fail-on", "any"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let rep: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rep["changes"], json!([]));
    assert_eq!(rep["by_transition"], json!({}));

    // Each run is recorded; nothing else changed: the chain verifies, decisions replay.
    let mut c = cordon();
    c.args(["audit", "export", "--data-dir"]).arg(&r.data);
    let export = text(&run(c).stdout);
    let sims: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == json!("simulation"))
        .collect();
    assert_eq!(sims.len(), 5, "{sims:#?}");
    assert_eq!(sims[0]["data"]["looser"], json!(2));
    assert!(sims[0]["data"]["user"].is_string());
    let mut c = cordon();
    c.args(["audit", "verify", "--data-dir"]).arg(&r.data);
    assert!(run(c).status.success());
    let (code, rep, _) = replay_json(&r.data, &[]);
    assert_eq!(code, 0, "{rep:#}");

    // A candidate that does not load is refused before anything is read.
    std::fs::write(cand.path().join("bad.cedar"), "permit (").unwrap();
    let (code, _, err) = simulate(&r.data, cand.path(), &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("bad.cedar"), "{err}");
    drop(r.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_set_is_decided_beside_the_set_in_force_and_read_back_by_simulate_shadow() {
    let (dir, mut cfg) = crate::support::workspace();
    let shadow = dir.path().join("shadow-policies");
    crate::support::copy_dir(&cfg.policies_dir, &shadow);
    let f = shadow.join("blast_radius.cedar");
    let t = std::fs::read_to_string(&f).unwrap().replace(
        "permit (principal, action == Cordon::Action::\"isolate_host\", resource)\nwhen { context.approvals >= 1 };",
        "permit (principal, action == Cordon::Action::\"isolate_host\", resource);",
    );
    std::fs::write(&f, t).unwrap();
    cfg.policy.shadow = Some(cordon::policy::shadow::ShadowConfig { dir: shadow });
    let mut d = crate::support::start_in(dir, cfg, None).await;
    let case_id = crate::support::live::post_alert(
        &d,
        crate::support::live::alert(
            "sh-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-sh1")],
        ),
    )
    .await;
    // What runs is decided by the set in force only.
    let iso = crate::support::live::find_action(&d, &case_id, "isolate_host", Some("ws-sh1")).await;
    assert_eq!(iso["state"], json!("awaiting_approval"), "{iso}");
    assert_eq!(iso["tier"], json!("one_approver"));
    let shadows: Vec<Value> = d
        .audit()
        .into_iter()
        .filter(|r| r.body.kind == "shadow_decision")
        .map(|r| r.body.data)
        .collect();
    let steps = d
        .audit()
        .into_iter()
        .filter(|r| r.body.kind == "policy_decision" && r.body.data["phase"].is_null())
        .count();
    assert_eq!(shadows.len(), steps, "one shadow decision per step");
    let iso_shadow = shadows
        .iter()
        .find(|s| s["record"]["request"]["action"]["id"] == json!("isolate_host"))
        .unwrap();
    assert_eq!(iso_shadow["agrees"], json!(false));
    assert_eq!(iso_shadow["record"]["tier"], json!("auto"));
    let (s, metrics) = d.get("/metrics").await;
    assert_eq!(s, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(
            "cordon_shadow_decisions_total{action=\"isolate_host\",outcome=\"diverge\"} 1"
        ),
        "{metrics}"
    );
    let data = d.config.data_dir.clone();
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);

    let mut c = cordon();
    c.args(["simulate", "--shadow", "--json", "--data-dir"])
        .arg(&data);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rep["by_transition"],
        json!({"isolate_host: one_approver → auto": 1}),
        "{rep:#}"
    );
    assert_eq!(rep["cases"], json!([case_id]));
    let mut c = cordon();
    c.args(["simulate", "--shadow", "--fail-on", "looser", "--data-dir"])
        .arg(&data);
    assert_eq!(run(c).status.code(), Some(1));
    let (code, rep, _) = replay_json(&data, &[]);
    assert_eq!(code, 0, "{rep:#}");
    drop(d.dir);
}
