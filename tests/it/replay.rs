//! `cordon replay`: every decision a run recorded (step tiers, votes, re-checks), across a
//! policy reload, re-decides identically from the store alone after the daemon stopped; a
//! tampered decision is reported as diverged with exit 1; a running daemon's store is refused
//! with a clear message. Also hosts the recorded run that `explain` and `simulate` share.
//! The command line around them: an id no record names is refused (exit 1, nothing recorded);
//! `--since`/`--until` take a plain date as midnight UTC; `simulate` names who ran it without
//! `USER`; `audit verify|export|archive` on a held store say it is in use, as replay does.

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

/// A stopped daemon's store holding one ingested alert (its case, its step decisions); returns
/// the daemon's workspace, the data directory, the policy directory, and the alert's ack.
async fn one_alert_store() -> (tempfile::TempDir, PathBuf, PathBuf, Value) {
    let mut d = support::start().await;
    let ack = d.ingest_fixture("cordon", "cordon.json").await;
    let (data, policies) = (d.config.data_dir.clone(), d.config.policies_dir.clone());
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    (d.dir, data, policies, ack)
}

/// The audit records `cordon audit export` prints for `data`.
fn exported(data: &Path) -> Vec<Value> {
    crate::support::audit_export(&["--data-dir".as_ref(), data.as_os_str()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_no_record_names_is_refused_by_replay_and_simulate_and_nothing_is_recorded() {
    let (_dir, data, policies, ack) = one_alert_store().await;
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let alert_id = ack["alert_id"].as_str().unwrap().to_string();

    // A typo, or an id of another kind, is not "0 decisions replayed".
    for (flag, id, what) in [
        ("--case", "NOPE", "case"),
        ("--action", "NOPE", "action"),
        ("--alert", "NOPE", "alert"),
        ("--action", case_id.as_str(), "action"),
    ] {
        let mut c = cordon();
        c.args(["replay", "--data-dir"]).arg(&data).args([flag, id]);
        let out = run(c);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{flag} {id}: {stdout}\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("no {what} {id:?} in the audit store")),
            "{flag} {id}: {stderr}"
        );
        assert!(!stdout.contains("replayed"), "{flag} {id}: {stdout}");
    }
    // The ids that are there still replay.
    let (code, report, err) = replay_json(&data, &["--case", &case_id]);
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert!(report["replayed"].as_u64().unwrap() >= 1, "{report:#}");
    let (code, report, err) = replay_json(&data, &["--alert", &alert_id]);
    assert_eq!(code, 0, "{report:#}\n{err}");

    // simulate --case NOPE: refused, and no `simulation` record appended.
    let before = exported(&data).len();
    let (code, out, err) = crate::support::simulate(&data, &policies, &["--case", "NOPE"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("no case \"NOPE\" in the audit store"), "{err}");
    let (code, out, err) =
        crate::support::simulate(&data, &policies, &["--case", &alert_id, "--json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.is_empty(), "{out}");
    let mut c = cordon();
    c.args(["simulate", "--shadow", "--case", "NOPE", "--data-dir"])
        .arg(&data);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no case \"NOPE\" in the audit store"),
        "{}",
        text(&out.stderr)
    );
    let after = exported(&data);
    assert_eq!(after.len(), before, "nothing is recorded");
    assert!(!after.iter().any(|r| r["kind"] == json!("simulation")));
    // The case that is there is simulated, and recorded.
    let (code, out, err) = crate::support::simulate(&data, &policies, &["--case", &case_id]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(exported(&data).len(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_date_bounds_replay_and_simulate_at_midnight_utc() {
    let (_dir, data, policies, _) = one_alert_store().await;
    let (code, all, err) = replay_json(&data, &[]);
    assert_eq!(code, 0, "{all:#}\n{err}");
    let n = all["replayed"].as_u64().unwrap();
    assert!(n >= 1, "{all:#}");
    // Every decision was made before 2030 and after 2020.
    let (code, later, err) = replay_json(&data, &["--since", "2030-01-01"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(later["replayed"], json!(0), "{later:#}");
    let (code, earlier, err) =
        replay_json(&data, &["--since", "2020-01-01", "--until", "2030-01-01"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(earlier["replayed"], json!(n), "{earlier:#}");
    // RFC 3339 still reads; a date that is not one is a usage error naming both forms.
    let (code, _, err) = replay_json(&data, &["--until", "2030-01-01T00:00:00Z"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = replay_json(&data, &["--since", "2030-13-01"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("YYYY-MM-DD"), "{err}");
    let mut c = cordon();
    c.args(["replay", "--help"]);
    let help = text(&run(c).stdout);
    assert!(help.contains("YYYY-MM-DD"), "{help}");

    // simulate takes dates too, and records the bounds as midnight UTC.
    let (code, out, err) = crate::support::simulate(
        &data,
        &policies,
        &["--json", "--since", "2020-01-01", "--until", "2030-01-01"],
    );
    assert_eq!(code, 0, "{err}");
    let rep: Value = serde_json::from_str(&out).unwrap();
    assert!(rep["decisions"].as_u64().unwrap() >= 1, "{rep:#}");
    let sim = simulation_record(&data);
    assert_eq!(sim["since"], json!("2020-01-01T00:00:00Z"), "{sim:#}");
    assert_eq!(sim["until"], json!("2030-01-01T00:00:00Z"), "{sim:#}");
}

/// The data of the one `simulation` record in `data`.
fn simulation_record(data: &Path) -> Value {
    let sims: Vec<Value> = exported(data)
        .into_iter()
        .filter(|r| r["kind"] == json!("simulation"))
        .collect();
    assert_eq!(sims.len(), 1, "{sims:#?}");
    sims[0]["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_run_without_user_or_logname_records_the_uids_user_not_unknown() {
    let (_dir, data, policies, _) = one_alert_store().await;
    // As root from cron or a container: neither USER nor LOGNAME is set.
    let mut c = cordon();
    c.args(["simulate", "--data-dir"])
        .arg(&data)
        .arg("--policies")
        .arg(&policies)
        .env_remove("USER")
        .env_remove("LOGNAME");
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sim = simulation_record(&data);
    let user = sim["user"].as_str().unwrap_or_default();
    assert!(!user.is_empty() && user != "unknown", "{sim:#}");
    // The name the user database gives this uid (else `uid N`).
    let id = std::process::Command::new("id").arg("-un").output();
    match id.ok().filter(|o| o.status.success()) {
        Some(id) => assert_eq!(user, text(&id.stdout).trim(), "{sim:#}"),
        None => assert!(user.starts_with("uid "), "{sim:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_export_archive_and_report_say_a_held_store_is_in_use() {
    let (dir, data, _, _) = one_alert_store().await;
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let mut c = cordon();
    c.args(["audit", "keygen", "--out"])
        .arg(keys.join("checkpoint.pem"))
        .arg("--public-out")
        .arg(keys.join("checkpoint.pub"));
    assert_eq!(run(c).status.code(), Some(0));
    let config = dir.path().join("archive.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\n[audit.checkpoints]\ndir = {}\nsigning_key = {{ file = {} }}\norigin = \"test/cordon\"\n",
            support::toml_path(&data),
            support::toml_path(&keys.join("checkpoints")),
            support::toml_path(&keys.join("checkpoint.pem")),
        ),
    )
    .unwrap();

    // Another process (this test) holds the store, as a running daemon does.
    let held = cordon::store::Store::open(&data, &cordon::store::StoreOptions::default()).unwrap();
    let archive = dir.path().join("a.jsonl");
    let commands: [Vec<std::ffi::OsString>; 4] = [
        vec![
            "audit".into(),
            "verify".into(),
            "--data-dir".into(),
            data.clone().into(),
        ],
        vec![
            "audit".into(),
            "export".into(),
            "--data-dir".into(),
            data.clone().into(),
        ],
        vec![
            "audit".into(),
            "archive".into(),
            "--config".into(),
            config.clone().into(),
            "--before".into(),
            "2020-01-01".into(),
            "--output".into(),
            archive.clone().into(),
        ],
        vec!["report".into(), "--config".into(), config.clone().into()],
    ];
    for args in &commands {
        let mut c = cordon();
        c.args(args);
        let out = run(c);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(74), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "data directory {} is in use by a running cordon",
                data.display()
            )) && err.contains("stop the daemon, or point the command at a copy"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("WouldBlock") && !err.contains("could not acquire lock"),
            "{args:?}: {err}"
        );
        assert!(text(&out.stdout).is_empty(), "{args:?}");
    }
    assert!(!archive.exists());
    // As replay says it.
    let (code, _, err) = replay_json(&data, &[]);
    assert_eq!(code, 74, "{err}");
    assert!(err.contains("is in use by a running cordon"), "{err}");
    drop(held);
    let mut c = cordon();
    c.args(["audit", "verify", "--data-dir"]).arg(&data);
    assert_eq!(run(c).status.code(), Some(0));
}
