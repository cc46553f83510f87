//! `cordon report` and the `cordon_loop_*` gauges on a seeded store: every metric has the
//! value computed by hand below, and `/metrics` shows the same numbers as the report.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::support;

fn t0() -> DateTime<Utc> {
    "2026-11-02T00:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> String {
    (t0() + Duration::seconds(secs)).to_rfc3339()
}

const H: i64 = 3600;
const D: i64 = 86_400;

/// A stored alert: (id, source, rule, received, detection time, case, duplicate of, intel).
#[allow(clippy::too_many_arguments)]
fn alert(
    id: &str,
    source: &str,
    rule: &str,
    received: i64,
    detected: i64,
    case: &str,
    dup: Option<&str>,
    intel: Option<&str>,
) -> Value {
    let mut a = json!({
        "alert_id": id, "received_at": at(received), "source": source,
        "source_alert_id": format!("src-{id}"), "time": at(detected), "title": format!("alert {id}"),
        "rule": {"id": rule, "name": rule}, "severity": "high", "confidence": 80,
        "entities": [], "raw_sha256": "00", "case_id": case,
    });
    if let Some(d) = dup {
        a["duplicate_of"] = json!(d);
    }
    if let Some(i) = intel {
        a["intel_source"] = json!(i);
    }
    a
}

/// A stored case, opened and enriched at `created`.
fn case(
    id: &str,
    rule: &str,
    host: &str,
    created: i64,
    alerts: &[&str],
    actions: &[&str],
) -> Value {
    json!({
        "case_id": id, "state": "recommended", "title": format!("case {id}"), "rule_id": rule,
        "primary_entity": format!("host:{host}"), "severity": "high",
        "alert_ids": alerts, "duplicate_count": 0, "entities": [], "action_ids": actions,
        "history": [
            {"from": null, "to": "normalized", "at": at(created), "reason": "opened"},
            {"from": "normalized", "to": "enriched", "at": at(created), "reason": "enriched"},
        ],
        "created_at": at(created), "updated_at": at(created),
    })
}

/// The case closed by an analyst (the closure model of `cordon::case::Closure`).
fn closed(mut c: Value, disposition: &str, when: i64, intel: Option<&str>) -> Value {
    c["closure"] = json!({
        "disposition": disposition, "reason": "triaged", "by": "alice", "at": at(when),
        "from": "recommended",
    });
    if let Some(i) = intel {
        c["closure"]["helped"] = json!({"intel_ref": i});
    }
    c
}

/// A stored action request; `votes` are (user, decision, at).
#[allow(clippy::too_many_arguments)]
fn action(
    id: &str,
    case: &str,
    kind: &str,
    tier: &str,
    state: &str,
    created: i64,
    votes: &[(&str, &str, i64)],
    deadline: i64,
) -> Value {
    let mut a = json!({
        "action_id": id, "case_id": case, "alert_id": "a", "playbook": "malware_execution",
        "step": kind, "kind": kind, "connector": "crowdstrike",
        "target": {"kind": "host", "id": "h"}, "parameters": {}, "on_failure": "escalate",
        "state": state, "tier": tier, "idempotency_key": id,
        "created_at": at(created), "updated_at": at(created),
    });
    if tier != "auto" {
        a["approval"] = json!({
            "needed": if tier == "two_person" { 2 } else { 1 },
            "deadline": at(deadline), "escalate_at": at(deadline),
            "votes": votes.iter().map(|(u, d, t)| json!({
                "user": u, "channel": "grpc", "identity": "mtls", "decision": d,
                "at": at(*t), "request_hash": "h",
            })).collect::<Vec<_>>(),
        });
    }
    a
}

/// The seeded store (times from T0 = 2026-11-02T00:00Z; the weekly window is
/// [T0 - 1 d, T0 + 7 d)).
fn seed() -> Vec<(Vec<u8>, Value)> {
    use cordon::engine::keys;
    let mut out = Vec::new();
    let alerts = [
        alert("a1", "cordon", "rule-a", 0, -60, "c1", None, None),
        alert("a2", "cordon", "rule-a", H, H - 20, "c2", None, None),
        alert(
            "a3",
            "splunk",
            "rule-b",
            2 * H,
            2 * H - 30,
            "c3",
            None,
            None,
        ),
        alert("a4", "splunk", "rule-a", 3 * H, 3 * H, "c4", None, None),
        alert(
            "a5",
            "splunk",
            "rule-b",
            3 * H + 1,
            3 * H + 1,
            "c3",
            Some("a3"),
            None,
        ),
        alert("a6", "cordon", "rule-b", -2 * D, -2 * D, "c0", None, None),
        alert(
            "a7",
            "splunk",
            "rule-c",
            4 * H,
            4 * H - 10,
            "c5",
            None,
            Some("isac"),
        ),
    ];
    for a in alerts {
        out.push((keys::alert(a["alert_id"].as_str().unwrap()), a));
    }
    let mut c1 = closed(
        case("c1", "rule-a", "h1", 0, &["a1"], &["x1", "x2"]),
        "true_positive",
        D,
        Some("CTI-1"),
    );
    c1["history"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "recovered", "to": "learned", "at": at(2 * D), "reason": "done"}));
    let cases = [
        c1,
        closed(
            case("c2", "rule-a", "h2", H, &["a2"], &["x3"]),
            "false_positive",
            20 * D,
            None,
        ),
        closed(
            case("c3", "rule-b", "h3", 2 * H, &["a3", "a5"], &["x4", "x5"]),
            "false_positive",
            D,
            None,
        ),
        case("c4", "rule-a", "h4", 3 * H, &["a4"], &["x6"]),
        closed(
            case("c5", "rule-c", "h5", 4 * H, &["a7"], &[]),
            "benign_true_positive",
            2 * D,
            None,
        ),
        closed(
            case("c0", "rule-b", "h3", -2 * D, &["a6"], &["x0"]),
            "false_positive",
            -D - 12 * H,
            None,
        ),
    ];
    for c in cases {
        out.push((keys::case(c["case_id"].as_str().unwrap()), c));
    }
    let actions = [
        action(
            "x1",
            "c1",
            "isolate_host",
            "one_approver",
            "succeeded",
            0,
            &[("alice", "approve", 600)],
            H,
        ),
        action(
            "x2",
            "c1",
            "block_ioc",
            "two_person",
            "failed",
            0,
            &[("alice", "approve", 1200), ("bob", "approve", 1800)],
            H,
        ),
        action(
            "x3",
            "c2",
            "isolate_host",
            "one_approver",
            "rejected",
            H,
            &[("carol", "deny", H + 300)],
            2 * H,
        ),
        action(
            "x4",
            "c3",
            "isolate_host",
            "one_approver",
            "expired",
            2 * H,
            &[],
            3 * H,
        ),
        action("x5", "c3", "enrich", "auto", "succeeded", 2 * H, &[], 0),
        action(
            "x6",
            "c4",
            "create_ticket",
            "auto",
            "unknown",
            3 * H,
            &[],
            0,
        ),
        action("x0", "c0", "enrich", "auto", "succeeded", -2 * D, &[], 0),
    ];
    for a in actions {
        out.push((keys::action(a["action_id"].as_str().unwrap()), a));
    }
    out
}

/// Intel metadata for the seeded rules, appended to the workspace's malware playbook.
const RULES: &str = r#"
[[rules]]
id = "rule-a"
intel_ref = "CTI-1"
intel_finding_at = "2026-10-20T00:00:00Z"
intel_priority = "high"

[[rules]]
id = "rule-d"
intel_ref = "CTI-4"
intel_finding_at = "2026-10-25T00:00:00Z"
intel_priority = "critical"
status = "tuning"
"#;

async fn seed_store(data: &Path) {
    let store = cordon::store::Store::open(data, &cordon::store::StoreOptions::default()).unwrap();
    let mut t = store.begin();
    for (k, v) in seed() {
        t.put_json(k, &v).unwrap();
    }
    store.commit(t).await.unwrap();
}

/// Runs `cordon report` once sled has let go of the store (a moment after its last handle).
async fn report(config: &Path, since: &str, until: &str, json: bool) -> String {
    support::eventually(10, || async {
        let mut c = support::cordon();
        c.args(["report", "--config"])
            .arg(config)
            .args(["--since", since, "--until", until]);
        if json {
            c.arg("--json");
        }
        let out = support::run(c);
        match out.status.code() {
            Some(0) => Some(String::from_utf8(out.stdout).unwrap()),
            Some(74) => None, // the store is still locked by the last handle
            _ => panic!(
                "cordon report failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    })
    .await
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_on_a_seeded_store_has_the_values_computed_by_hand() {
    let (dir, cfg) = support::workspace();
    let root = dir.path();
    let pb = root.join("playbooks/malware_execution.toml");
    let text = std::fs::read_to_string(&pb).unwrap() + RULES;
    std::fs::write(&pb, text).unwrap();
    seed_store(&cfg.data_dir).await;
    let config = crate::support::write_config(root, "");

    let out = report(&config, "2026-11-01", &at(7 * D), true).await;
    let b: Value = serde_json::from_str(&out).unwrap();
    let m = &b["metrics"];
    // Tagged: cordon a1, a2 of a1, a2 (a6 is before the window); splunk a4 (rule-a) and a7
    // (tagged by its source) of a3, a4, a7 (a5 is a duplicate).
    assert_eq!(
        m["intel_tagged"],
        json!([
            {"source": "cordon", "alerts": 2, "tagged": 2, "ratio": 1.0},
            {"source": "splunk", "alerts": 3, "tagged": 2, "ratio": 2.0 / 3.0},
        ])
    );
    assert_eq!(
        m["intel_tagged_overall"],
        json!({"source": "all", "alerts": 5, "tagged": 4, "ratio": 0.8})
    );
    // rule-a: finding 2026-10-20, first alert T0 = 2026-11-02: 13 days; rule-d never fired.
    assert_eq!(m["mean_intel_lead_time_secs"], json!(13.0 * D as f64));
    let lead = |id: &str| {
        m["intel_lead_times"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rule_id"] == json!(id))
            .cloned()
            .unwrap_or_else(|| panic!("no lead time for {id}"))
    };
    assert_eq!(lead("rule-a")["lead_time_secs"], json!(13 * D));
    assert_eq!(lead("rule-d")["first_detection"], json!(null));
    // Enriched at opening; first alerts detected 60, 20, 30, 0, 10 s before: mean 24 s.
    assert_eq!(m["mean_time_to_enriched_case_secs"], json!(24.0));
    // First human actions: c1's first vote after 600 s, c2's after 300 s; c3's closure after
    // 1 d - 2 h, c5's after 2 d - 4 h (c2's closure is after the window); c4 had none.
    assert_eq!(
        m["mean_time_to_first_human_action_secs"],
        json!((600 + 300 + (D - 2 * H) + (2 * D - 4 * H)) as f64 / 4.0)
    );
    // x1, x2 approved; x3 rejected; x4 expired.
    assert_eq!(m["escalations_decided"], json!(4));
    assert_eq!(m["escalations_accepted"], json!(2));
    assert_eq!(m["escalation_acceptance_rate"], json!(0.5));
    // One approver: 600, 300, 3600 (the deadline); two-person: 1800 (the second vote).
    assert_eq!(
        m["approval_wait"],
        json!([
            {"tier": "one_approver", "requests": 3, "mean_secs": 1500.0},
            {"tier": "two_person", "requests": 1, "mean_secs": 1800.0},
        ])
    );
    // x1, x5 succeeded; x2 failed; x6 unknown (x0 is before the window).
    assert_eq!(m["actions_finished"], json!(4));
    assert_eq!(m["actions_succeeded"], json!(2));
    assert_eq!(m["action_success_rate"], json!(0.5));
    assert_eq!(
        m["intel_credited_incidents"],
        json!([{"quarter": "2026-Q4", "incidents": 1}])
    );
    // rule-a's human time: c1 from its first vote (600 s) to its closure (1 d).
    // rule-b's c3 is a false positive on host h3, 1.5 days after c0's on h3: a repeat.
    assert_eq!(
        m["heat_map"],
        json!([
            {"rule_id": "rule-a", "alerts": 3, "cases": 3, "human_handling_secs": D - 600, "closed": 1,
             "false_positives": 0, "false_positive_rate": 0.0, "repeat_false_positives": 0},
            {"rule_id": "rule-b", "alerts": 1, "cases": 1, "human_handling_secs": 0, "closed": 1,
             "false_positives": 1, "false_positive_rate": 1.0, "repeat_false_positives": 1},
            {"rule_id": "rule-c", "alerts": 1, "cases": 1, "human_handling_secs": 0, "closed": 1,
             "false_positives": 0, "false_positive_rate": 0.0, "repeat_false_positives": 0},
        ])
    );
    // The board: high has rule-a in production, c2 (closed only after the window) and c4 open,
    // c1 learned; critical has rule-d in tuning.
    let p = &b["priorities"];
    // (The shipped playbooks declare rules of their own in these sections too.)
    let has = |v: &Value, id: &str| v.as_array().unwrap().contains(&json!(id));
    assert_eq!(p[0]["priority"], json!("critical"));
    assert!(has(&p[0]["rules_in_tuning"], "rule-d"), "{p}");
    assert!(has(&p[1]["rules_in_production"], "rule-a"), "{p}");
    assert!(!has(&p[1]["rules_in_tuning"], "rule-a"), "{p}");
    let open: Vec<&str> = p[1]["open_incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["case_id"].as_str().unwrap())
        .collect();
    assert_eq!(open, ["c2", "c4"]);
    assert_eq!(p[1]["recent_learnings"][0]["case_id"], json!("c1"));

    // Markdown: the same numbers.
    let md = report(&config, "2026-11-01", &at(7 * D), false).await;
    for line in [
        "## Intel priority: high",
        "| alerts tagged with their intel source | 80.0 % (4 of 5) |",
        "| escalation acceptance rate | 50.0 % (2 of 4) |",
        "| approval wait, one_approver | 25.0 min (3 requests) |",
        "| rule-b | 1 | 1 | 0 s | 1 | 100.0 % | 1 |",
    ] {
        assert!(md.contains(line), "{line:?} not in\n{md}");
    }
    let high = &md[md.find("## Intel priority: high").unwrap()..];
    let production = high
        .lines()
        .find(|l| l.starts_with("- Rules in production:"));
    assert!(production.is_some_and(|l| l.contains("rule-a")), "{md}");

    // /metrics: the daemon computes the same numbers from the same store (over all of it, up
    // to its clock), as `cordon report` over that window does.
    let now = t0() + Duration::days(3);
    let opts = cordon::daemon::StartOptions {
        clock: Arc::new(move || now),
        expiry_timer: false,
        ..Default::default()
    };
    let mut d = support::restart_when_unlocked(dir, cfg, opts).await;
    d.running().scheduler.refresh_metrics().await.unwrap();
    let (s, text) = d.get("/metrics").await;
    assert_eq!(s, 200);
    let text = text.as_str().unwrap().to_string();
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    let all: Value = serde_json::from_str(
        &report(
            &config,
            "1970-01-01T00:00:00Z",
            &(now + Duration::seconds(1)).to_rfc3339(),
            true,
        )
        .await,
    )
    .unwrap();
    let am = &all["metrics"];
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    for (name, v) in [
        (
            "cordon_loop_intel_tagged_ratio{source=\"all\"}",
            &am["intel_tagged_overall"]["ratio"],
        ),
        (
            "cordon_loop_intel_tagged_ratio{source=\"splunk\"}",
            &am["intel_tagged"][1]["ratio"],
        ),
        (
            "cordon_loop_intel_lead_time_seconds",
            &am["mean_intel_lead_time_secs"],
        ),
        (
            "cordon_loop_time_to_enriched_case_seconds",
            &am["mean_time_to_enriched_case_secs"],
        ),
        (
            "cordon_loop_time_to_first_human_action_seconds",
            &am["mean_time_to_first_human_action_secs"],
        ),
        (
            "cordon_loop_escalation_acceptance_ratio",
            &am["escalation_acceptance_rate"],
        ),
        (
            "cordon_loop_approval_wait_seconds{tier=\"one_approver\"}",
            &am["approval_wait"][0]["mean_secs"],
        ),
        (
            "cordon_loop_action_success_ratio",
            &am["action_success_rate"],
        ),
    ] {
        assert!(
            close(v, gauge(name)),
            "{name}: /metrics {} vs report {v}",
            gauge(name)
        );
    }
    // Over all of the store: a6 joins (cordon 2 of 3 tagged), x0 succeeded (3 of 5), and the
    // false positives are c3 and c0 of c1, c3, c5, c0 closed by now.
    assert!(close(
        &json!(gauge("cordon_loop_intel_tagged_ratio{source=\"all\"}")),
        4.0 / 6.0
    ));
    assert!(close(
        &json!(gauge("cordon_loop_action_success_ratio")),
        3.0 / 5.0
    ));
    assert!(close(
        &json!(gauge("cordon_loop_false_positive_ratio")),
        0.5
    ));
    assert_eq!(gauge("cordon_loop_repeat_false_positives"), 1.0);
    assert_eq!(gauge("cordon_loop_intel_credited_incidents_quarter"), 1.0);
    drop(d);
}

#[test]
fn bad_time_bounds_are_refused_with_a_clear_error() {
    let (dir, _) = support::workspace();
    let config = crate::support::write_config(dir.path(), "");
    for (args, want) in [
        (
            vec!["--since", "last week"],
            "--since: \"last week\" is neither",
        ),
        (
            vec!["--since", "2026-11-02", "--until", "2026-11-01"],
            "--since must be before --until",
        ),
    ] {
        let mut c = support::cordon();
        c.args(["report", "--config"]).arg(&config).args(&args);
        let out = support::run(c);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Nothing was created: no store appeared.
    assert!(!dir.path().join("data").exists());
}

/// The console board reads the store whole at most once per commit, one read at a time: views
/// with no commit between them reuse the rows, views that arrive together after a commit share
/// one new read, and that read has what the commit wrote (commits here carry no audit record:
/// the chain head alone would not show them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_reads_the_store_once_per_commit_and_one_read_at_a_time() {
    use cordon::console::view::BoardRows;
    use cordon::engine::keys;
    let dir = tempfile::tempdir().unwrap();
    let store =
        cordon::store::Store::open(dir.path(), &cordon::store::StoreOptions::default()).unwrap();
    let write = |i: usize| {
        let mut t = store.begin();
        let (a, c, x) = (format!("a{i:05}"), format!("c{i:05}"), format!("x{i:05}"));
        t.put_json(
            keys::alert(&a),
            &alert(&a, "splunk", "rule-p", 10, 5, &c, None, None),
        )
        .unwrap();
        t.put_json(keys::case(&c), &case(&c, "rule-p", "h", 10, &[&a], &[&x]))
            .unwrap();
        t.put_json(
            keys::action(&x),
            &action(&x, &c, "isolate_host", "auto", "succeeded", 10, &[], 3600),
        )
        .unwrap();
        t
    };
    for i in 0..3 {
        store.commit(write(i)).await.unwrap();
    }
    let rows = Arc::new(BoardRows::default());
    let first = rows.current(&store).await.unwrap();
    assert_eq!(first.cases.len(), 3);
    assert_eq!(rows.reads(), 1);
    let again = rows.current(&store).await.unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "a view with no commit since read again"
    );
    assert_eq!(rows.reads(), 1);

    store.commit(write(3)).await.unwrap();
    let mut views = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (rows, store) = (rows.clone(), store.clone());
        views.spawn(async move { rows.current(&store).await.unwrap() });
    }
    while let Some(seen) = views.join_next().await {
        let seen = seen.unwrap();
        assert_eq!(
            (seen.alerts.len(), seen.cases.len(), seen.actions.len()),
            (4, 4, 4),
            "a view after the commit missed it"
        );
    }
    assert_eq!(
        rows.reads(),
        2,
        "views after one commit read the store more than once"
    );
}

/// The report's input is read a page at a time: every record of a store larger than a page
/// arrives once, as a row with what the report reads; and a read asked to stop gives up before
/// its next page (the daemon's shutdown does not wait for a whole read of a large store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_input_is_read_by_pages_and_stops_when_asked() {
    use cordon::engine::keys;
    use cordon::engine::read::REPORT_PAGE;
    let dir = tempfile::tempdir().unwrap();
    let store =
        cordon::store::Store::open(dir.path(), &cordon::store::StoreOptions::default()).unwrap();
    let n = 2 * REPORT_PAGE + 7;
    let mut t = store.begin();
    for i in 0..n {
        let (a, c, x) = (format!("a{i:05}"), format!("c{i:05}"), format!("x{i:05}"));
        let intel = (i % 3 == 0).then_some("CTI-9");
        t.put_json(
            keys::alert(&a),
            &alert(&a, "splunk", "rule-p", 10, 5, &c, None, intel),
        )
        .unwrap();
        let mut cv = case(&c, "rule-p", &format!("h{}", i % 4), 10, &[&a], &[&x]);
        if i % 2 == 0 {
            cv = closed(cv, "false_positive", 100 + i as i64, None);
        }
        t.put_json(keys::case(&c), &cv).unwrap();
        t.put_json(
            keys::action(&x),
            &action(
                &x,
                &c,
                "isolate_host",
                "one_approver",
                "approved",
                10,
                &[("alice", "approve", 70)],
                3600,
            ),
        )
        .unwrap();
    }
    store.commit(t).await.unwrap();

    let input = cordon::report::Input::read(&store).unwrap();
    assert_eq!(
        (input.alerts.len(), input.cases.len(), input.actions.len()),
        (n, n, n)
    );
    let ids: std::collections::BTreeSet<&str> =
        input.alerts.iter().map(|a| a.alert_id.as_str()).collect();
    assert_eq!(ids.len(), n, "an alert was read twice or skipped");
    let a0 = &input.alerts[0];
    assert_eq!(
        (
            a0.alert_id.as_str(),
            a0.rule_id.as_str(),
            a0.case_id.as_str(),
            a0.intel_source.as_deref(),
            a0.duplicate
        ),
        ("a00000", "rule-p", "c00000", Some("CTI-9"), false)
    );
    assert_eq!(a0.time, t0() + Duration::seconds(5));
    let c0 = &input.cases[0];
    assert_eq!(c0.first_alert.as_deref(), Some("a00000"));
    assert_eq!(c0.enriched_at, Some(t0() + Duration::seconds(10)));
    assert_eq!(
        c0.closure.as_ref().map(|c| c.disposition.as_str()),
        Some("false_positive")
    );
    assert_eq!(
        input.actions[0].approval,
        Some((
            t0() + Duration::seconds(3600),
            vec![t0() + Duration::seconds(70)]
        ))
    );

    // What the metrics count over those rows: every alert, a third tagged, every other case a
    // false positive, and each of those after the first on its host (4 hosts) a repeat.
    let m = cordon::report::metrics(
        &input,
        &cordon::report::Catalog::default(),
        t0(),
        t0() + Duration::days(1),
    );
    assert_eq!(m.intel_tagged_overall.alerts, n as u64);
    assert_eq!(m.intel_tagged_overall.tagged, n.div_ceil(3) as u64);
    let fps = n.div_ceil(2) as u64;
    let row = &m.heat_map[0];
    assert_eq!(
        (row.alerts, row.closed, row.false_positives),
        (n as u64, fps, fps)
    );
    // False positives fall on hosts 0 and 2 only (even i): two first ones, the rest repeats.
    assert_eq!(row.repeat_false_positives, fps - 2);

    // Asked to stop after the first page: no input, and no page beyond the second question.
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let got = cordon::report::Input::read_unless(&store, &|| {
        asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .unwrap();
    assert!(got.is_none());
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
}
