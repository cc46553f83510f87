//! The durability guarantee: every alert answered `202` survives `kill -9` of the real binary
//! (with more requests in flight), across repeated kill/restart cycles on the same data dir,
//! and the audit chain still verifies after a clean SIGTERM.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support;
use crate::support::{Daemon, cordon, http_client, post_json, run, serve_args, text, write_config};

#[derive(Debug, Clone, PartialEq)]
struct Ack {
    alert_id: String,
    case_id: String,
    what: String,
}

/// The vendor fixtures (and cordon's own) at their routes.
const FIXTURES: [(&str, &str); 5] = [
    ("/v1/alerts/splunk", "splunk.json"),
    ("/v1/alerts/elastic", "elastic.json"),
    ("/v1/alerts/sentinel", "sentinel.json"),
    ("/v1/alerts/ocsf", "ocsf.json"),
    ("/v1/alerts", "cordon.json"),
];

/// A cordon-format alert with a unique source alert id and host.
fn generated(tag: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "source_alert_id": format!("crash-{tag}"),
        "title": format!("crash test alert {tag}"),
        "rule": {"id": "crash-test-rule", "name": "Crash test"},
        "severity": "medium",
        "entities": [{"kind": "host", "value": format!("crash-{tag}.corp.example")}],
    }))
    .unwrap()
}

fn ack(body: &Value, what: &str) -> Ack {
    Ack {
        alert_id: body["alert_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no alert_id in {body}"))
            .to_string(),
        case_id: body["case_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no case_id in {body}"))
            .to_string(),
        what: what.to_string(),
    }
}

/// Posts 40 alerts concurrently and collects their 202s; then fires 12 more and SIGKILLs the
/// daemon as soon as the first of those is answered, while the rest are in flight. Returns every
/// ack that reached the client, before or after the kill.
async fn burst_then_kill(d: &mut Daemon, cycle: usize) -> Vec<Ack> {
    let c = http_client();
    let mut set = JoinSet::new();
    for (path, file) in FIXTURES {
        let (c, url, body) = (
            c.clone(),
            format!("{}{path}", d.base),
            support::fixture(file),
        );
        set.spawn(async move { (file.to_string(), post_json(&c, &url, body).await) });
    }
    for i in 0..35 {
        let tag = format!("{cycle}-{i}");
        let (c, url, body) = (c.clone(), format!("{}/v1/alerts", d.base), generated(&tag));
        set.spawn(async move { (tag, post_json(&c, &url, body).await) });
    }
    let mut acks = Vec::new();
    while let Some(r) = set.join_next().await {
        let (what, res) = r.unwrap();
        let (status, body) = res.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(status, 202, "{what}: {body}");
        acks.push(ack(&body, &what));
    }
    assert_eq!(acks.len(), 40);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..12 {
        let tag = format!("{cycle}-inflight-{i}");
        let (c, url, body, tx) = (
            c.clone(),
            format!("{}/v1/alerts", d.base),
            generated(&tag),
            tx.clone(),
        );
        tokio::spawn(async move {
            let _ = tx.send((tag, post_json(&c, &url, body).await));
        });
    }
    drop(tx);
    let first = rx.recv().await.unwrap();
    d.kill9();
    let mut late = vec![first];
    while let Some(r) = rx.recv().await {
        late.push(r);
    }
    for (what, res) in late {
        if let Ok((202, body)) = res {
            acks.push(ack(&body, &what));
        }
    }
    acks
}

/// Every acknowledged alert is readable with its case, and the case lists it.
async fn assert_all_present(d: &Daemon, acks: &[Ack]) {
    let c = http_client();
    let mut cases: BTreeMap<String, Value> = BTreeMap::new();
    for a in acks {
        let r = c
            .get(format!("{}/v1/alerts/{}", d.base, a.alert_id))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status, 200,
            "acknowledged alert {a:?} is gone after kill -9: {body}"
        );
        assert_eq!(body["alert_id"], a.alert_id.as_str(), "{body}");
        assert_eq!(body["case_id"], a.case_id.as_str(), "{a:?}: {body}");
        if !cases.contains_key(&a.case_id) {
            let r = c
                .get(format!("{}/v1/cases/{}", d.base, a.case_id))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(
                status, 200,
                "the case of acknowledged alert {a:?} is gone after kill -9: {body}"
            );
            cases.insert(a.case_id.clone(), body);
        }
        let case = &cases[&a.case_id]["case"];
        assert_eq!(case["case_id"], a.case_id.as_str(), "{case}");
        assert!(
            case["alert_ids"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == a.alert_id.as_str()),
            "case {} does not list acknowledged alert {a:?}: {case}",
            a.case_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_alerts_survive_kill_9_and_the_chain_verifies() {
    let (dir, _) = support::workspace();
    let root = dir.path();
    let cfg = write_config(
        root,
        &format!(
            "[policy]\nwatch = false\n{}",
            crate::support::enrichment_toml(root)
        ),
    );
    let mut acked: Vec<Ack> = Vec::new();
    for cycle in 0..3 {
        let mut d = Daemon::start(root, &format!("cycle{cycle}"), serve_args(&cfg)).await;
        assert_all_present(&d, &acked).await;
        let new = burst_then_kill(&mut d, cycle).await;
        assert!(new.len() >= 40);
        acked.extend(new);
    }

    let mut d = Daemon::start(root, "final", serve_args(&cfg)).await;
    assert_all_present(&d, &acked).await;
    let status = d.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert!(d.logs().contains("drained and flushed"), "{}", d.logs());

    let mut c = cordon();
    c.args(["audit", "verify", "--data-dir"])
        .arg(root.join("data"));
    let out = run(c);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("ok: "), "{stdout}");
    let records: usize = stdout
        .trim_start_matches("ok: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        records >= acked.len(),
        "{records} audit records for {} acknowledged alerts: {stdout}",
        acked.len()
    );
}
