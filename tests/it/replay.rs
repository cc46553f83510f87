//! `cordon replay`: every decision a run recorded (step tiers, votes, re-checks), across a
//! policy reload, re-decides identically from the store alone after the daemon stopped; a
//! tampered decision is reported as diverged with exit 1; a running daemon's store is refused
//! with a clear message. Also hosts the recorded run that `explain` and `simulate` share.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support;
use crate::support::live::{self, Vendors};
use crate::support::{cordon, run, text};

/// A stopped daemon's data directory after a recorded run.
pub(crate) struct Run {
    pub dir: tempfile::TempDir,
    pub config: cordon::config::Config,
    /// The fake vendors (kept so a restarted daemon finds them).
    pub vendors: Vendors,
    pub data: PathBuf,
    pub policies: PathBuf,
    /// The isolate action decided and run under the first policy set.
    pub first_isolate: String,
    pub first_case: String,
    pub second_case: String,
    /// The policy hash before and after the reload.
    pub hashes: (String, String),
}

/// The first set's `@reason` of `isolate-host-one-approver` (the reload changes it).
pub(crate) const OLD_REASON: &str = "host isolation cuts a machine off the network: one approver checks EDR evidence and business criticality";

/// Ingests an alert, approves and executes its isolation; changes the policy file and reloads
/// it (the isolate policy moves down by two lines and gets a new `@reason`); ingests, approves
/// and executes a second; stops the daemon. `two_person` makes isolation a two-person step in
/// the first set (alice over gRPC first, then bob).
pub(crate) async fn recorded_run(two_person: bool) -> Run {
    let v = Vendors::start().await;
    v.cs.add_host("ws-042", "aid-042");
    v.cs.add_host("ws-r2", "aid-r2");
    let mut d = live::start_live(&v, |cfg, _| {
        cfg.policy.watch = false;
        cfg.grpc.approvers = support::approvers(&support::USERS);
        if two_person {
            let f = cfg.policies_dir.join("blast_radius.cedar");
            let t = std::fs::read_to_string(&f).unwrap();
            let t = t.replace(
                "permit (principal, action == Cordon::Action::\"isolate_host\", resource)\nwhen { context.approvals >= 1 };",
                "permit (principal, action == Cordon::Action::\"isolate_host\", resource)\nwhen { context.approvals >= 2 };",
            );
            assert!(t.contains("approvals >= 2 };"));
            std::fs::write(&f, t).unwrap();
        }
    })
    .await;
    let approvers: &[&str] = if two_person {
        &["alice", "bob"]
    } else {
        &["alice"]
    };
    let first_case = live::post_alert(
        &d,
        live::alert(
            "r-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-042")],
        ),
    )
    .await;
    let iso = live::find_action(&d, &first_case, "isolate_host", Some("ws-042")).await;
    let first_isolate = iso["action_id"].as_str().unwrap().to_string();
    live::approve(&d, &first_isolate, approvers).await;
    let done = live::settled(&d, &first_isolate).await;
    assert_eq!(done["state"], json!("succeeded"), "{done}");

    let f = d.config.policies_dir.join("blast_radius.cedar");
    let t = std::fs::read_to_string(&f).unwrap();
    let t = t
        .replace(
            "// Row: host isolation — one human approver.\n",
            "// Row: host isolation — one human approver.\n// (reviewed)\n// (reviewed again)\n",
        )
        .replace(
            OLD_REASON,
            "isolation, as reviewed: one approver checks the evidence",
        );
    std::fs::write(&f, t).unwrap();
    let (s, body) = d.post("/v1/policies/reload", "").await;
    assert_eq!(s, 200, "{body}");
    let reloads: Vec<Value> = d
        .audit()
        .into_iter()
        .filter(|r| r.body.kind == "policy_reloaded")
        .map(|r| r.body.data)
        .collect();
    let last = reloads.last().expect("the reload is recorded");
    let hashes = (
        last["previous_hash"].as_str().unwrap().to_string(),
        last["policy_hash"].as_str().unwrap().to_string(),
    );
    assert_ne!(hashes.0, hashes.1);

    let second_case = live::post_alert(
        &d,
        live::alert(
            "r-2",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-r2")],
        ),
    )
    .await;
    let iso2 = live::find_action(&d, &second_case, "isolate_host", Some("ws-r2")).await;
    let id2 = iso2["action_id"].as_str().unwrap().to_string();
    live::approve_any(&d, &id2).await;
    let done = live::settled(&d, &id2).await;
    assert_eq!(done["state"], json!("succeeded"), "{done}");
    let data = d.config.data_dir.clone();
    let policies = d.config.policies_dir.clone();
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    Run {
        dir: d.dir,
        config: d.config,
        vendors: v,
        data,
        policies,
        first_isolate,
        first_case,
        second_case,
        hashes,
    }
}

pub(crate) fn replay_json(data: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut c = cordon();
    c.args(["replay", "--json", "--data-dir"])
        .arg(data)
        .args(extra);
    let out = run(c);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, text(&out.stderr))
}

/// A copy of `src` in which the first step decision on `isolate_host` says `auto` instead of
/// what was decided; returns the copy and the record's seq.
fn with_tampered_decision(src: &Path) -> (tempfile::TempDir, u64) {
    let dst = tempfile::tempdir().unwrap();
    support::copy_dir(src, dst.path());
    let db = cordon::store::sled_config(dst.path()).open().unwrap();
    let mut hit = None;
    for item in db.scan_prefix(b"a/") {
        let (k, v) = item.unwrap();
        let v = cordon::store::unpack_value(&k, &v).unwrap();
        let lines: Vec<&[u8]> = v.split(|b| *b == b'\n').collect();
        let mut out: Vec<Vec<u8>> = Vec::new();
        for pair in lines.chunks(2) {
            let mut body: Value = serde_json::from_slice(pair[1]).unwrap();
            if hit.is_none()
                && body["kind"] == json!("policy_decision")
                && body["data"]["phase"].is_null()
                && body["data"]["request"]["action"]["id"] == json!("isolate_host")
            {
                assert_ne!(body["data"]["tier"], json!("auto"));
                body["data"]["tier"] = json!("auto");
                hit = Some(body["seq"].as_u64().unwrap());
            }
            out.push(pair[0].to_vec());
            out.push(serde_json::to_vec(&body).unwrap());
        }
        if hit.is_some() {
            db.insert(&k, cordon::store::pack_value(&out.join(&b'\n')))
                .unwrap();
            break;
        }
    }
    db.flush().unwrap();
    drop(db);
    (dst, hit.expect("a step decision on isolate_host"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_replays_identically_across_a_reload_and_a_tampered_one_diverges() {
    let r = recorded_run(false).await;
    let (code, report, err) = replay_json(&r.data, &[]);
    assert_eq!(code, 0, "{report:#}\n{err}");
    let replayed = report["replayed"].as_u64().unwrap();
    // Two isolations and the other steps of two cases, two votes, two re-checks each.
    assert!(replayed >= 10, "{report:#}");
    assert_eq!(report["identical"].as_u64(), Some(replayed), "{report:#}");
    assert_eq!(report["diverged"], json!([]));
    assert_eq!(report["not_recorded"], json!(0));
    assert_eq!(report["failed"], json!([]));

    // Decisions under both sets were replayed with their own set.
    let mut c = cordon();
    c.args(["audit", "export", "--data-dir"]).arg(&r.data);
    let export = text(&run(c).stdout);
    for h in [&r.hashes.0, &r.hashes.1] {
        assert!(
            export.contains(&format!("\"policy_hash\":\"{h}\"")),
            "no decision under {h}"
        );
    }
    // One action's decisions only.
    let (code, one, _) = replay_json(&r.data, &["--action", &r.first_isolate]);
    assert_eq!(code, 0);
    let n = one["replayed"].as_u64().unwrap();
    assert!(n >= 3 && n < replayed, "{one:#}");

    // The store still verifies.
    let mut c = cordon();
    c.args(["audit", "verify", "--data-dir"]).arg(&r.data);
    assert!(run(c).status.success());

    let (tampered, seq) = with_tampered_decision(&r.data);
    let (code, report, err) = replay_json(tampered.path(), &[]);
    assert_eq!(code, 1, "{report:#}\n{err}");
    let diverged = report["diverged"].as_array().unwrap();
    assert_eq!(diverged.len(), 1, "{report:#}");
    assert_eq!(diverged[0]["seq"], json!(seq));
    assert_eq!(diverged[0]["differences"][0]["field"], json!("tier"));
    assert_eq!(diverged[0]["differences"][0]["recorded"], json!("auto"));
    // Text names it too.
    let mut c = cordon();
    c.args(["replay", "--data-dir"]).arg(tampered.path());
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out.stdout);
    assert!(t.contains("1 diverged"), "{t}");
    assert!(t.contains(&format!("diverged: seq {seq} ")), "{t}");
    drop(r.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_kept_policy_texts_says_so_and_a_running_store_is_refused() {
    let d = support::start().await;
    d.ingest_fixture("cordon", "cordon.json").await;
    // The daemon holds the store: replay says why it cannot open it.
    let (code, _, err) = replay_json(&d.config.data_dir, &[]);
    assert_eq!(code, 74, "{err}");
    assert!(err.contains("in use by a running cordon"), "{err}");
    let data = d.config.data_dir.clone();
    let mut d = d;
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    // As a store written before policy sets were kept: remove them.
    let db = cordon::store::sled_config(&data).open().unwrap();
    let keys: Vec<_> = db.scan_prefix(b"ps/").map(|i| i.unwrap().0).collect();
    assert!(!keys.is_empty(), "the policy set in force is kept");
    for k in keys {
        db.remove(k).unwrap();
    }
    db.flush().unwrap();
    drop(db);
    let (code, report, err) = replay_json(&data, &[]);
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert_eq!(report["replayed"], json!(0));
    assert!(report["not_recorded"].as_u64().unwrap() >= 1, "{report:#}");
    let mut c = cordon();
    c.args(["replay", "--data-dir"]).arg(&data);
    let t = text(&run(c).stdout);
    assert!(t.contains("policy text not recorded"), "{t}");
    drop(d.dir);
}
