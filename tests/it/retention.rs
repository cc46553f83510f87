//! Retention (`cordon audit archive`): the records of settled cases leave the store for an
//! archive file with a signed checkpoint of its end; the chain kept in the store verifies from
//! that checkpoint (bare and with `--checkpoints`), the archive verifies on its own and exports
//! a case's records; nothing of an open case is archived; the daemon restarts on the cut store
//! and the chain goes on; an altered archive or another key fails.

use std::path::{Path, PathBuf};

use chrono::Utc;
use cordon::checkpoint::Signer;
use cordon::config::{CheckpointsConfig, Suppression};
use cordon::secret::SecretRef;
use serde_json::{Value, json};

use crate::support::{self, TestClock};
use crate::support::{cordon, run, text};

const ORIGIN: &str = "soc.example/cordon";

fn suppression(expires: chrono::DateTime<Utc>) -> Suppression {
    Suppression {
        id: "maint-ws-042".into(),
        reason: "reimaging ws-042".into(),
        owner: "it-endpoint".into(),
        rule: None,
        entity: Some("host:WS-042".into()),
        start: None,
        end: None,
        schedule: None,
        duration_mins: None,
        expires,
    }
}

fn export(args: &[&str]) -> Vec<Value> {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    crate::support::audit_export(&args)
}

/// Runs `cordon audit …`, retrying while sled's lock of a just-closed store is let go.
fn audit(args: &[&str]) -> (Option<i32>, String, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut c = cordon();
        c.arg("audit").args(args);
        let out = run(c);
        let stderr = text(&out.stderr);
        if stderr.contains("could not acquire lock") && std::time::Instant::now() < deadline {
            continue;
        }
        return (out.status.code(), text(&out.stdout), stderr);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_moves_settled_cases_out_and_both_sides_still_verify() {
    let keys = tempfile::tempdir().unwrap();
    let signer = Signer::generate(ORIGIN).unwrap();
    let private = keys.path().join("signing.pem");
    let public = keys.path().join("public.pem");
    std::fs::write(&private, signer.private_pem().unwrap()).unwrap();
    std::fs::write(&public, signer.public().pem().unwrap()).unwrap();
    let checkpoints = keys.path().join("checkpoints");

    // A month ago: one suppressed case and one closed case with decided actions (settled),
    // then one open case with actions.
    let clock = TestClock::new();
    clock.advance_secs(-30 * 86_400);
    let (dir, mut cfg) = support::workspace();
    cfg.grpc.approvers = support::approvers(&["alice"]);
    cfg.suppressions
        .push(suppression(clock.now() + chrono::Duration::days(1)));
    cfg.audit.checkpoints = Some(CheckpointsConfig {
        dir: checkpoints.clone(),
        signing_key: SecretRef::File(private.clone()),
        origin: ORIGIN.into(),
        interval_secs: 300,
    });
    let d = support::start_in(dir, cfg.clone(), Some(clock.clone())).await;
    let (code, body) = d
        .post("/v1/alerts/elastic", support::fixture("elastic.json"))
        .await;
    assert_eq!(code, 202, "{body}");
    let settled = body["case_id"].as_str().unwrap().to_string();
    assert_eq!(d.case(&settled).await["case"]["state"], json!("suppressed"));
    let (code, body) = d
        .post("/v1/alerts/sentinel", support::fixture("sentinel.json"))
        .await;
    assert_eq!(code, 202, "{body}");
    let closed = body["case_id"].as_str().unwrap().to_string();
    let (code, body) = d
        .post_with(
            &format!("/v1/cases/{closed}/close"),
            json!({"disposition": "false_positive", "reason": "lab", "cancel_pending": true})
                .to_string(),
            |r| {
                r.bearer_auth(crate::support::token_of("alice"))
                    .header("content-type", "application/json")
            },
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = d
        .post("/v1/alerts/ocsf", support::fixture("ocsf.json"))
        .await;
    assert_eq!(code, 202, "{body}");
    let open = body["case_id"].as_str().unwrap().to_string();
    assert_ne!(open, closed);
    assert_eq!(d.case(&open).await["case"]["state"], json!("recommended"));
    let data = cfg.data_dir.clone();
    let mut d = d;
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    let workspace = d.dir;

    let before = export(&["--data-dir", s(&data)]);
    let of = |recs: &[Value], c: &str| {
        recs.iter()
            .filter(|r| r["case_id"] == json!(c))
            .cloned()
            .collect::<Vec<_>>()
    };
    let settled_records = of(&before, &settled);
    let closed_records = of(&before, &closed);
    let open_records = of(&before, &open);
    assert!(!settled_records.is_empty() && !open_records.is_empty());
    assert!(
        closed_records
            .iter()
            .any(|r| r["kind"] == json!("policy_decision")),
        "the closed case has decisions to replay"
    );

    let config = workspace.path().join("archive.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[retention]\nclosed_case_days = 7\n[audit.checkpoints]\ndir = {:?}\nsigning_key = {{ file = {:?} }}\norigin = {ORIGIN:?}\n",
            s(&data),
            s(&checkpoints),
            s(&private)
        ),
    )
    .unwrap();
    let archive = workspace.path().join("2026.jsonl");
    let (code, out, err) = audit(&["archive", "--config", s(&config), "--output", s(&archive)]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("case {open} is recommended")),
        "{out}"
    );

    // The store keeps only what follows the cut: nothing of the settled case, all of the open one.
    let after = export(&["--data-dir", s(&data)]);
    assert!(of(&after, &settled).is_empty(), "settled records kept");
    assert!(of(&after, &closed).is_empty(), "closed case's records kept");
    assert_eq!(of(&after, &open), open_records, "open records changed");
    let first_kept = after[0]["seq"].as_u64().unwrap();
    assert!(first_kept > 1);
    assert_eq!(
        after.last().unwrap()["hash"],
        before.last().unwrap()["hash"]
    );

    // The store verifies from the archived base, bare and against its checkpoints; the archive
    // verifies on its own and gives back the settled case's records.
    let (code, out, err) = audit(&["verify", "--data-dir", s(&data)]);
    assert_eq!(code, Some(0), "{out}{err}");
    let with_cps = [
        "verify",
        "--data-dir",
        s(&data),
        "--checkpoints",
        s(&checkpoints),
        "--public-key",
        s(&public),
    ];
    let (code, out, err) = audit(&with_cps);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = audit(&[
        "verify",
        "--archive",
        s(&archive),
        "--public-key",
        s(&public),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("seq 1 to {}", first_kept - 1)),
        "{out}"
    );
    assert_eq!(
        export(&["--archive", s(&archive), "--case", &settled]),
        settled_records
    );
    // The archive replays on its own (it carries the policy sets of its decisions), and so do
    // the decisions the store kept.
    let mut c = cordon();
    c.args(["replay", "--archive"]).arg(&archive);
    let out = run(c);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let n = closed_records
        .iter()
        .filter(|r| r["kind"] == json!("policy_decision") || r["kind"] == json!("case_op_decision"))
        .count();
    assert!(
        stdout.starts_with(&format!("{n} decision(s) replayed: {n} identical")),
        "{stdout}"
    );
    let mut c = cordon();
    c.args(["replay", "--data-dir"]).arg(&data);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // Nothing more is archivable while the other case is open: exit 0, nothing changes.
    let second = workspace.path().join("second.jsonl");
    let (code, out, err) = audit(&["archive", "--config", s(&config), "--output", s(&second)]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("nothing to archive"), "{out}");
    assert!(!second.exists());
    assert_eq!(export(&["--data-dir", s(&data)]), after);

    // The daemon starts on the cut store and the chain goes on from it.
    let d = support::start_in(workspace, cfg.clone(), Some(clock.clone())).await;
    let (code, body) = d
        .post("/v1/alerts/splunk", support::fixture("splunk.json"))
        .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(d.case(&open).await["case"]["state"], json!("recommended"));
    let mut d = d;
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    let _workspace = d.dir;
    let (code, out, err) = audit(&with_cps);
    assert_eq!(code, Some(0), "{out}{err}");

    // An archive with one record edited, or checked with another key, fails.
    let text_of = std::fs::read_to_string(&archive).unwrap();
    let edited = keys.path().join("edited.jsonl");
    std::fs::write(&edited, text_of.replacen("reimaging", "re-imaging", 1)).unwrap();
    let (code, _, err) = audit(&[
        "verify",
        "--archive",
        s(&edited),
        "--public-key",
        s(&public),
    ]);
    assert_eq!(code, Some(1), "{err}");
    let other = keys.path().join("other.pem");
    std::fs::write(
        &other,
        Signer::generate(ORIGIN).unwrap().public().pem().unwrap(),
    )
    .unwrap();
    let (code, _, err) = audit(&[
        "verify",
        "--archive",
        s(&archive),
        "--public-key",
        s(&other),
    ]);
    assert_eq!(code, Some(1), "{err}");
}

/// Without a signing key there is no archive: the proof would be lost.
#[test]
fn archive_without_checkpoints_configured_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config: PathBuf = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", s(&dir.path().join("data"))),
    )
    .unwrap();
    let out = dir.path().join("a.jsonl");
    let (code, _, err) = audit(&["archive", "--config", s(&config), "-o", s(&out)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("[audit.checkpoints]"), "{err}");
    assert!(!out.exists());
    assert!(!dir.path().join("data").exists(), "a store was created");
}
