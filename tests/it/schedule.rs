//! The scheduler under a test clock: an indicator block with a one-hour expiry is proposed for
//! unblocking at expiry across a restart; a weekly report missed three times over downtime runs
//! once; the SOC→CTI digest lists the shift's intel-driven alerts; bad schedules are refused.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::live::{self, Vendors};
use crate::support::{self, TestClock, TestDaemon};

/// Stops `d` and starts it again on the same data directory and clock.
async fn restart(mut d: TestDaemon, clock: &TestClock) -> TestDaemon {
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    support::restart_when_unlocked(d.dir, d.config, clock.start_options()).await
}

fn records(d: &TestDaemon, kind: &str) -> Vec<Value> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == kind)
        .map(|r| r.body.data)
        .collect()
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_with_a_one_hour_expiry_is_proposed_for_unblocking_at_expiry_across_a_restart() {
    let v = Vendors::start().await;
    let (dir, mut cfg) = support::workspace();
    v.wire(dir.path(), true);
    cfg.executor.enabled = true;
    edit(
        &dir.path().join("playbooks/malware_execution.toml"),
        "target = \"file_hash\"\n",
        "target = \"file_hash\"\nparameters = { expires_after_mins = 60 }\n",
    );
    let clock = TestClock::new();
    let d = support::start_in(dir, cfg, Some(clock.clone())).await;
    let hash = "c0ffee11".repeat(8);
    let case_id = live::post_alert(
        &d,
        live::alert(
            "exp-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("file_hash", &hash)],
        ),
    )
    .await;
    let block = live::find_action(&d, &case_id, "block_ioc", None).await;
    let block_id = block["action_id"].as_str().unwrap().to_string();
    if block["state"] == json!("awaiting_approval") {
        live::approve_any(&d, &block_id).await;
    }
    let done = live::settled(&d, &block_id).await;
    assert_eq!(done["state"], json!("succeeded"), "{done}");
    assert_eq!(
        v.cs.effects().count(&format!("ioc_create:sha256:{hash}")),
        1
    );

    // One second short of the hour: nothing expires, before or after a restart.
    clock.advance_secs(3599);
    d.running().scheduler.run_once().await.unwrap();
    assert!(records(&d, "block_expired").is_empty());
    let d = restart(d, &clock).await;
    d.running().scheduler.run_once().await.unwrap();
    assert!(records(&d, "block_expired").is_empty());

    // At the hour: the unblock is proposed through the policies, once.
    clock.advance_secs(1);
    d.running().scheduler.run_once().await.unwrap();
    d.running().scheduler.run_once().await.unwrap();
    let expired = live::records(&d, "block_expired", &block_id);
    assert_eq!(expired.len(), 1, "{expired:?}");
    let case = d.case(&case_id).await;
    let unblocks: Vec<&Value> = case["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == json!("unblock_ioc"))
        .collect();
    assert_eq!(unblocks.len(), 1, "{case}");
    let unblock = unblocks[0];
    assert_eq!(unblock["rollback_of"], json!(block_id));
    assert_eq!(
        unblock["requester"],
        json!(cordon::engine::EXPIRY_REQUESTER)
    );
    assert_eq!(unblock["target"]["id"], block["target"]["id"]);
    let unblock_id = unblock["action_id"].as_str().unwrap().to_string();
    assert_eq!(
        live::records(&d, "policy_decision", &unblock_id).len(),
        1,
        "the unblock is decided by the policies like any other step"
    );
    // Approved by whoever the policies ask for, it runs and lifts the block.
    if unblock["state"] == json!("awaiting_approval") {
        live::approve_any(&d, &unblock_id).await;
    }
    let done = live::settled(&d, &unblock_id).await;
    assert_eq!(done["state"], json!("succeeded"), "{done}");
    assert_eq!(
        v.cs.effects().count(&format!("ioc_delete:sha256:{hash}")),
        1
    );
    let block = live::settled(&d, &block_id).await;
    assert_eq!(block["state"], json!("rolled_back"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_down_over_three_weekly_fires_runs_the_report_once() {
    let (dir, mut cfg) = support::workspace();
    let out = dir.path().join("reports");
    let (config, unknown) = cordon::config::Config::parse(
        "test",
        &format!(
            "[[schedules]]\nname = \"weekly\"\ncron = \"0 0 8 * * Mon\"\nkind = \"report\"\noutput_dir = {}\n\
             [[schedules]]\nname = \"shift\"\ncron = \"0 0 6,14,22 * * *\"\nkind = \"cti_digest\"\noutput_dir = {}\n",
            crate::support::toml_path(&out),
            crate::support::toml_path(&out),
        ),
    )
    .unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    cfg.schedules = config.schedules;
    let pb = dir.path().join("playbooks/malware_execution.toml");
    let text = std::fs::read_to_string(&pb).unwrap()
        + "\n[[rules]]\nid = \"rule-Malware EncodedCommand\"\nintel_ref = \"CTI-7\"\nintel_finding_at = \"2026-01-05T00:00:00Z\"\nintel_priority = \"high\"\n";
    std::fs::write(&pb, text).unwrap();

    // Wednesday 2026-11-04 12:00: the next weekly fire is Monday 2026-11-09 08:00.
    let clock = TestClock::new();
    let start: chrono::DateTime<chrono::Utc> = "2026-11-04T12:00:00Z".parse().unwrap();
    clock.advance_secs((start - clock.now()).num_seconds());
    let d = support::start_in(dir, cfg, Some(clock.clone())).await;
    let pass = d.running().scheduler.run_once().await.unwrap();
    assert_eq!(pass.delivered, 0);
    assert!(records(&d, "schedule_fired").is_empty());
    // The 14:00 shift sees one intel-driven alert, closed or not.
    clock.advance_secs(3600);
    // Received at the test clock's time (the HTTP listener stamps wall-clock time).
    let raw = live::alert(
        "dig-1",
        "Malware EncodedCommand",
        &["T1059"],
        &[("host", "ws-dig")],
    );
    let format = cordon::ingest::IngestFormat::Cordon;
    let fields = format.parse(raw.as_bytes(), clock.now()).unwrap();
    let ack = d
        .running()
        .engine
        .ingest(format, fields, raw, clock.now())
        .await
        .unwrap();
    let case_id = ack.case_id;
    clock.advance_secs(3600);
    let pass = d.running().scheduler.run_once().await.unwrap();
    assert_eq!(pass.delivered, 1, "the 14:00 digest");
    let digest = std::fs::read_to_string(out.join("shift-20261104T140000Z.md")).unwrap();
    assert!(
        digest.contains("1 alert(s) from intel-driven rules"),
        "{digest}"
    );
    assert!(
        digest.contains(&case_id) && digest.contains("CTI-7"),
        "{digest}"
    );

    // Down from Wednesday until Tuesday 2026-11-24 12:00: Mondays 9, 16 and 23 passed.
    let mut d = d;
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    let back: chrono::DateTime<chrono::Utc> = "2026-11-24T12:00:00Z".parse().unwrap();
    clock.advance_secs((back - clock.now()).num_seconds());
    let d = support::restart_when_unlocked(d.dir, d.config, clock.start_options()).await;
    let pass = d.running().scheduler.run_once().await.unwrap();
    assert_eq!(
        pass.delivered, 2,
        "the weekly report once and the digest once"
    );
    let pass = d.running().scheduler.run_once().await.unwrap();
    assert_eq!(pass.delivered, 0, "nothing more is due");

    let fired: Vec<Value> = records(&d, "schedule_fired")
        .into_iter()
        .filter(|r| r["schedule"] == json!("weekly"))
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["due_at"], json!("2026-11-09T08:00:00Z"));
    assert_eq!(fired[0]["missed_periods"], json!(2));
    assert_eq!(fired[0]["next_due"], json!("2026-11-30T08:00:00Z"));
    let reports: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("weekly-"))
        .collect();
    assert_eq!(reports.len(), 2, "one report, .md and .json: {reports:?}");
    let md = std::fs::read_to_string(out.join("weekly-20261109T080000Z.md")).unwrap();
    assert!(md.contains("# Active threats board"), "{md}");
    assert!(
        md.lines().any(|l| l.starts_with("- Rules in production:")
            && l.contains("rule-Malware EncodedCommand")),
        "{md}"
    );
    let delivered = records(&d, "schedule_delivered");
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    assert!(delivered.iter().all(|r| r["outcome"] == json!("delivered")));
    d.stop().await;
}

#[test]
fn bad_schedules_are_refused_with_every_problem() {
    let (dir, cfg) = support::workspace();
    let (parsed, unknown) = cordon::config::Config::parse(
        "cordon.toml",
        "[[schedules]]\nname = \"nightly\"\ncron = \"0 0 2 * * *\"\nkind = \"playbook\"\nplaybook = \"no_such_playbook\"\n\
         [[schedules]]\nname = \"board\"\ncron = \"not cron\"\nkind = \"report\"\nchat = \"slack\"\nchannel = \"C1\"\nfile = \"x\"\n",
    )
    .unwrap();
    let unknown: Vec<String> = unknown.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        unknown,
        ["cordon.toml: line 12: schedules.1.file: unknown field"]
    );
    let cfg = cordon::config::Config {
        schedules: parsed.schedules,
        ..cfg
    };
    let problems = cordon::daemon::validate(cfg, "cordon.toml").err().unwrap();
    let problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    for want in [
        "cordon.toml: schedules[0].playbook: no playbook \"no_such_playbook\" is loaded",
        "cordon.toml: schedules[1].cron: not a cron expression",
        "cordon.toml: schedules[1].chat: no chat platform \"slack\" is configured",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{want:?} not in {problems:#?}"
        );
    }
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nightly_playbook_runs_against_the_contained_hosts() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-night", "aid-night");
    let (dir, mut cfg) = support::workspace();
    v.wire(dir.path(), true);
    cfg.executor.enabled = true;
    std::fs::write(
        dir.path().join("playbooks/reprobe_contained.toml"),
        "description = \"Probe every contained host again.\"\nfamily = \"malware_execution\"\n\
         [match]\nrule_ids = [\"cordon:scheduled\"]\n\
         [[steps]]\nid = \"reisolate\"\naction = \"isolate_host\"\nconnector = \"crowdstrike\"\ntarget = \"host\"\n",
    )
    .unwrap();
    let (parsed, unknown) = cordon::config::Config::parse(
        "test",
        "[[schedules]]\nname = \"nightly\"\ncron = \"0 30 2 * * *\"\nkind = \"playbook\"\nplaybook = \"reprobe_contained\"\n",
    )
    .unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    cfg.schedules = parsed.schedules;
    let clock = TestClock::new();
    let start: chrono::DateTime<chrono::Utc> = "2026-11-04T12:00:00Z".parse().unwrap();
    clock.advance_secs((start - clock.now()).num_seconds());
    let d = support::start_in(dir, cfg, Some(clock.clone())).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "night-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-night")],
        ),
    )
    .await;
    let isolate = live::find_action(&d, &case_id, "isolate_host", Some("ws-night")).await;
    let isolate_id = isolate["action_id"].as_str().unwrap().to_string();
    live::approve_any(&d, &isolate_id).await;
    assert_eq!(
        live::settled(&d, &isolate_id).await["state"],
        json!("succeeded")
    );
    assert_eq!(v.cs.effects().count("contain:aid-night"), 1);

    d.running().scheduler.run_once().await.unwrap();
    let before = d.case(&case_id).await["actions"].as_array().unwrap().len();
    // 02:30 the next night.
    clock.advance_secs(14 * 3600 + 30 * 60);
    d.running().scheduler.run_once().await.unwrap();
    d.running().scheduler.run_once().await.unwrap();
    let case = d.case(&case_id).await;
    let runs: Vec<&Value> = case["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["requester"] == json!("schedule:nightly"))
        .collect();
    assert_eq!(runs.len(), 1, "{case}");
    assert_eq!(case["actions"].as_array().unwrap().len(), before + 1);
    let run = runs[0];
    assert_eq!(run["kind"], json!("isolate_host"));
    assert_eq!(run["target"]["id"], json!("ws-night"));
    assert!(
        run["step"]
            .as_str()
            .unwrap()
            .starts_with("reisolate@nightly/2026-11-05T02:30:00"),
        "{run}"
    );
    let run_id = run["action_id"].as_str().unwrap().to_string();
    assert_eq!(live::records(&d, "policy_decision", &run_id).len(), 1);
    if run["state"] == json!("awaiting_approval") {
        live::approve_any(&d, &run_id).await;
    }
    // The probe finds the host contained: nothing is sent again.
    assert_eq!(
        live::settled(&d, &run_id).await["state"],
        json!("succeeded")
    );
    assert_eq!(v.cs.effects().count("contain:aid-night"), 1);
    let fired = records(&d, "schedule_fired");
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["kind"], json!("playbook"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shift_digest_is_posted_to_the_cti_channel() {
    use crate::support::fakes::chat::FakeSlack;
    let slack = FakeSlack::start(crate::chat::SLACK_TOKEN).await;
    let (dir, mut cfg) = support::workspace();
    crate::chat::configure_chat(
        &mut cfg,
        dir.path(),
        &crate::chat::Chat {
            slack: Some(&slack),
            ..Default::default()
        },
    );
    let (parsed, unknown) = cordon::config::Config::parse(
        "test",
        "[[schedules]]\nname = \"shift\"\ncron = \"0 0 6,14,22 * * *\"\nkind = \"cti_digest\"\nchat = \"slack\"\nchannel = \"C0CTI\"\n",
    )
    .unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    cfg.schedules = parsed.schedules;
    let pb = dir.path().join("playbooks/malware_execution.toml");
    let text = std::fs::read_to_string(&pb).unwrap()
        + "\n[[rules]]\nid = \"rule-Malware EncodedCommand\"\nintel_ref = \"CTI-9\"\nintel_finding_at = \"2026-01-05T00:00:00Z\"\n";
    std::fs::write(&pb, text).unwrap();
    let clock = TestClock::new();
    let start: chrono::DateTime<chrono::Utc> = "2026-11-04T12:00:00Z".parse().unwrap();
    clock.advance_secs((start - clock.now()).num_seconds());
    let d = support::start_in(dir, cfg, Some(clock.clone())).await;
    d.running().scheduler.run_once().await.unwrap();
    let raw = live::alert(
        "cti-1",
        "Malware EncodedCommand",
        &["T1059"],
        &[("host", "ws-cti")],
    );
    let format = cordon::ingest::IngestFormat::Cordon;
    let fields = format.parse(raw.as_bytes(), clock.now()).unwrap();
    let ack = d
        .running()
        .engine
        .ingest(format, fields, raw, clock.now())
        .await
        .unwrap();
    // An alert whose rule id and intel source carry Slack markup: the digest shows them as text.
    let hostile = json!({
        "source_alert_id": "cti-2",
        "title": "hostile",
        "rule": {"id": "rule-<!channel>", "name": "hostile"},
        "severity": "high",
        "intel_source": "<https://evil.example|CTI-approved> @all",
        "entities": [{"kind": "host", "value": "ws-cti-2"}],
    })
    .to_string();
    let fields = format.parse(hostile.as_bytes(), clock.now()).unwrap();
    d.running()
        .engine
        .ingest(format, fields, hostile, clock.now())
        .await
        .unwrap();
    clock.advance_secs(2 * 3600);
    let pass = d.running().scheduler.run_once().await.unwrap();
    assert_eq!(pass.delivered, 1);
    let posts: Vec<_> = slack
        .posts()
        .into_iter()
        .filter(|m| m.channel == "C0CTI")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(
        posts[0].text.contains("# SOC → CTI digest"),
        "{}",
        posts[0].text
    );
    assert!(
        posts[0].text.contains(&ack.case_id) && posts[0].text.contains("CTI-9"),
        "{}",
        posts[0].text
    );
    for active in ["<!channel>", "<https://evil"] {
        assert!(!posts[0].text.contains(active), "{}", posts[0].text);
    }
    // Shown as text (the digest is Markdown: its cells are escaped for it too).
    assert!(
        posts[0].text.contains("rule-\\&lt;\\!channel\\&gt;")
            && posts[0].text.contains("&lt;https://evil.example"),
        "{}",
        posts[0].text
    );
    let delivered = records(&d, "schedule_delivered");
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["to"], json!(["slack:C0CTI"]));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_expires_when_the_intel_that_named_the_indicator_does() {
    let v = Vendors::start().await;
    let (dir, mut cfg) = support::workspace();
    v.wire(dir.path(), true);
    cfg.executor.enabled = true;
    let clock = TestClock::new();
    let hash = "d00dfeed".repeat(8);
    let expires = clock.now() + chrono::Duration::hours(2);
    let intel = dir.path().join("enrichment/intel.toml");
    let text = std::fs::read_to_string(&intel).unwrap()
        + &format!(
            "\n[[indicator]]\nvalue = \"{hash}\"\ntype = \"file_hash\"\nconfidence = 90\nsource = \"cti-feed-x\"\nexpires = \"{}\"\n",
            expires.to_rfc3339()
        );
    std::fs::write(&intel, text).unwrap();
    let d = support::start_in(dir, cfg, Some(clock.clone())).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "exp-intel",
            "Malware EncodedCommand",
            &["T1059"],
            &[("file_hash", &hash)],
        ),
    )
    .await;
    let block = live::find_action(&d, &case_id, "block_ioc", None).await;
    let block_id = block["action_id"].as_str().unwrap().to_string();
    if block["state"] == json!("awaiting_approval") {
        live::approve_any(&d, &block_id).await;
    }
    assert_eq!(
        live::settled(&d, &block_id).await["state"],
        json!("succeeded")
    );
    clock.advance_secs(2 * 3600 - 1);
    d.running().scheduler.run_once().await.unwrap();
    assert!(live::records(&d, "block_expired", &block_id).is_empty());
    clock.advance_secs(1);
    d.running().scheduler.run_once().await.unwrap();
    assert_eq!(live::records(&d, "block_expired", &block_id).len(), 1);
    let case = d.case(&case_id).await;
    assert!(
        case["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == json!("unblock_ioc") && a["rollback_of"] == json!(block_id)),
        "{case}"
    );
    d.stop().await;
}
