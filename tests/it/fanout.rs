//! Fan-out bounds: one alert (or one case) cannot set an unbounded number of entities,
//! action requests or chat posts in motion; the excess is recorded and the case escalated
//! once; and a backlog of chat posts never holds up shutdown.

use std::time::Duration;

use serde_json::{Value, json};

use crate::chat::{Chat, SLACK_TOKEN, configure_chat};
use crate::support::fakes::chat::FakeSlack;
use crate::support::fakes::{Fault, FaultKind};
use crate::support::{self, TestDaemon};

/// A malware alert naming `hosts` (the first one is its primary entity).
fn alert(id: &str, hosts: impl Iterator<Item = String>) -> String {
    json!({
        "source_alert_id": id,
        "title": "Malware EncodedCommand",
        "rule": {"id": "rule-fanout", "name": "Malware EncodedCommand"},
        "severity": "high",
        "techniques": ["T1059"],
        "entities": hosts.map(|h| json!({"kind": "host", "value": h})).collect::<Vec<_>>(),
    })
    .to_string()
}

fn case_records(d: &TestDaemon, kind: &str, case_id: &str) -> Vec<Value> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == kind && r.body.case_id.as_deref() == Some(case_id))
        .filter(|r| r.body.action_id.is_none())
        .map(|r| r.body.data)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_entity_alert_is_bounded_and_escalated_once() {
    let slack = FakeSlack::start(SLACK_TOKEN).await;
    let d = support::start_with(|cfg, root| {
        configure_chat(
            cfg,
            root,
            &Chat {
                slack: Some(&slack),
                ..Default::default()
            },
        )
    })
    .await;
    let defaults = cordon::config::CasesConfig::default();
    let body = alert("storm-1", (0..10_000).map(|i| format!("ws-{i:05}")));
    assert!(body.len() > 300_000, "{}", body.len());
    let (s, ack) = d.post("/v1/alerts", body).await;
    assert_eq!(s, 202, "{ack}");
    let case_id = ack["case_id"].as_str().unwrap().to_string();

    let case = d.case(&case_id).await;
    let actions = case["actions"].as_array().unwrap();
    assert_eq!(
        actions.len(),
        defaults.max_actions_per_case,
        "{}",
        actions.len()
    );
    let limited = case_records(&d, "fanout_limited", &case_id);
    let by = |l: &str| {
        limited
            .iter()
            .find(|r| r["limit"] == json!(l))
            .unwrap_or_else(|| panic!("no {l} record in {limited:?}"))
            .clone()
    };
    assert_eq!(by("entities_per_alert")["given"], json!(10_000));
    assert_eq!(
        by("entities_per_alert")["not_acted_on"],
        json!(10_000 - defaults.max_entities_per_alert)
    );
    assert!(by("actions_per_case")["not_proposed"].as_u64().unwrap() > 0);
    assert!(by("chat_requests_per_case")["not_posted"].as_u64().unwrap() > 0);
    let escalations = case_records(&d, "escalation", &case_id);
    assert_eq!(escalations.len(), 3, "{escalations:?}");

    // Chat gets at most the per-case number of requests, and nothing stays owed.
    support::eventually(30, || async {
        cordon::engine::read::chat_owed(&d.running().store)
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(slack.posts().len(), defaults.max_chat_requests_per_case);

    // A second storm on the same primary entity joins the case: recorded again, not
    // escalated again.
    let body = alert(
        "storm-2",
        std::iter::once("ws-00000".to_string()).chain((0..400).map(|i| format!("db-{i:03}"))),
    );
    let (s, ack) = d.post("/v1/alerts", body).await;
    assert_eq!(s, 202, "{ack}");
    assert_eq!(ack["case_id"], json!(case_id), "{ack}");
    assert!(case_records(&d, "fanout_limited", &case_id).len() > limited.len());
    assert_eq!(case_records(&d, "escalation", &case_id).len(), 3);
    let case = d.case(&case_id).await;
    assert_eq!(
        case["actions"].as_array().unwrap().len(),
        defaults.max_actions_per_case
    );

    assert_eq!(
        d.stop().await,
        0,
        "SIGTERM after the storm must drain cleanly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_backlog_does_not_hold_up_shutdown() {
    let slack = FakeSlack::start(SLACK_TOKEN).await;
    // Slack takes every post and never answers in time.
    slack.faults().arm(Fault {
        method: None,
        path_contains: String::new(),
        kind: FaultKind::TimeoutAfterEffect(Duration::from_secs(30)),
        times: usize::MAX,
    });
    let d = support::start_with(|cfg, root| {
        configure_chat(
            cfg,
            root,
            &Chat {
                slack: Some(&slack),
                ..Default::default()
            },
        );
        cfg.chat.timeout_ms = 3_000;
        cfg.cases.max_chat_requests_per_case = 1_000;
        cfg.shutdown.drain_timeout_secs = 5;
    })
    .await;
    let (s, ack) = d
        .post(
            "/v1/alerts",
            alert("backlog-1", (0..150).map(|i| format!("ws-{i:03}"))),
        )
        .await;
    assert_eq!(s, 202, "{ack}");
    // Posts are in flight (and more are waiting for them).
    support::eventually(30, || async { (slack.log().count() >= 4).then_some(()) }).await;
    assert!(
        cordon::engine::read::chat_owed(&d.running().store)
            .unwrap()
            .len()
            > 100
    );
    assert_eq!(d.stop().await, 0, "the drain waited for chat posts");
}
