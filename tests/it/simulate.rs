//! `cordon simulate --policies DIR`: a candidate set that makes `isolate_host` automatic reports
//! exactly the recorded isolate steps as `one_approver → auto`, names their cases, and
//! `--fail-on looser` fails; the set in force reports no change; every run is recorded in the
//! audit store, which still verifies and replays identically.

use std::path::Path;

use serde_json::{Value, json};

use crate::cli::{cordon, run, text};
use crate::replay::{recorded_run, replay_json};

fn simulate(data: &Path, policies: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut c = cordon();
    c.args(["simulate", "--data-dir"])
        .arg(data)
        .arg("--policies")
        .arg(policies)
        .args(extra);
    let out = run(c);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_isolation_candidate_reports_the_isolate_steps_and_fails_the_looser_gate() {
    let r = recorded_run(false).await;
    let cand = tempfile::tempdir().unwrap();
    crate::common::copy_dir(&r.policies, cand.path());
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
