//! Cases over real HTTP: deduplication (SIEM retries and same-content re-fires inside the dedup
//! window), correlation (same rule and primary entity inside the correlation window), suppression
//! (maintenance windows, and that expired ones do not apply), and enrichment with its facts and
//! its failures.

use chrono::{DateTime, Utc};
use cordon::config::Suppression;
use cordon::store::AuditRecord;
use serde_json::{Value, json};

use crate::support::{self, TestClock, TestDaemon};

async fn start_with_clock() -> (TestDaemon, TestClock) {
    start_with_clock_in(cordon::config::CorrelationMode::SharedEntity).await
}

async fn start_with_clock_in(mode: cordon::config::CorrelationMode) -> (TestDaemon, TestClock) {
    let clock = TestClock::new();
    let (dir, mut cfg) = support::workspace();
    cfg.correlation.mode = mode;
    let d = support::start_in(dir, cfg, Some(clock.clone())).await;
    (d, clock)
}

fn elastic_with_uuid(uuid: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&support::fixture("elastic.json")).unwrap();
    v["kibana.alert.uuid"] = json!(uuid);
    serde_json::to_vec(&v).unwrap()
}

async fn post_ok(
    d: &TestDaemon,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (String, String, bool) {
    let (s, ack) = d.post(path, body).await;
    assert_eq!(s, 202, "{path}: {ack}");
    (
        ack["alert_id"].as_str().unwrap().to_string(),
        ack["case_id"].as_str().unwrap().to_string(),
        ack["duplicate"].as_bool().unwrap(),
    )
}

async fn cases(d: &TestDaemon) -> Vec<Value> {
    let (s, v) = d.get("/v1/cases").await;
    assert_eq!(s, 200, "{v}");
    v["cases"].as_array().unwrap().clone()
}

async fn alert(d: &TestDaemon, id: &str) -> Value {
    let (s, v) = d.get(&format!("/v1/alerts/{id}")).await;
    assert_eq!(s, 200, "{v}");
    v
}

fn records(d: &TestDaemon, kind: &str, alert_id: &str) -> Vec<AuditRecord> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == kind && r.body.alert_id.as_deref() == Some(alert_id))
        .collect()
}

fn entity_keys(v: &Value) -> Vec<String> {
    v["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["kind"].as_str().unwrap(),
                e["value"].as_str().unwrap()
            )
        })
        .collect()
}

/// A cordon-format alert on `host` naming `ips`, for a rule no playbook matches.
fn native(source_alert_id: &str, rule_id: &str, host: &str, ips: &[&str]) -> String {
    let mut entities = vec![json!({"kind": "host", "value": host})];
    entities.extend(ips.iter().map(|ip| json!({"kind": "ip", "value": ip})));
    json!({
        "source_alert_id": source_alert_id,
        "title": format!("Beaconing from {host}"),
        "rule": {"id": rule_id, "name": "Beaconing to rare destination"},
        "severity": "medium",
        "entities": entities,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_alert_twice_is_a_duplicate_with_the_original_ids() {
    let (d, clock) = start_with_clock().await;
    let (a1, c1, dup) = post_ok(&d, "/v1/alerts/elastic", support::fixture("elastic.json")).await;
    assert!(!dup);
    let actions_before = support::actions(&d.case(&c1).await).len();
    assert_eq!(actions_before, 7);

    let (a2, c2, dup) = post_ok(&d, "/v1/alerts/elastic", support::fixture("elastic.json")).await;
    assert!(dup, "a SIEM retry is a duplicate");
    assert_eq!(
        (a2.as_str(), c2.as_str()),
        (a1.as_str(), c1.as_str()),
        "a retry is answered with the original ids"
    );
    assert_eq!(cases(&d).await.len(), 1);
    let case = d.case(&c1).await;
    assert_eq!(
        case["case"]["alert_ids"],
        json!([a1]),
        "no second alert is stored"
    );
    assert_eq!(case["case"]["duplicate_count"], json!(1));
    assert_eq!(
        support::actions(&case).len(),
        actions_before,
        "a retry proposes nothing new"
    );
    // Both deliveries are in the audit log, the second marked as a duplicate of the first.
    let recv = records(&d, "alert_received", &a1);
    assert_eq!(recv.len(), 2);
    assert!(recv[0].body.data.get("duplicate_of").is_none());
    assert_eq!(recv[1].body.data["duplicate_of"], json!(a1));
    assert_eq!(
        recv[1].body.data["raw"].as_str().unwrap().as_bytes(),
        support::fixture("elastic.json").as_slice()
    );

    // A retry long after every window is still the same alert.
    clock.advance_secs(2 * 86_400);
    let (a3, c3, dup) = post_ok(&d, "/v1/alerts/elastic", support::fixture("elastic.json")).await;
    assert!(dup);
    assert_eq!((a3, c3), (a1.clone(), c1.clone()));
    assert_eq!(d.case(&c1).await["case"]["duplicate_count"], json!(2));

    // The same source alert id from another source is another alert.
    let other = native(
        "6f3e2b1c9d8a7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f",
        "r-x",
        "ws-777",
        &[],
    );
    let (a4, c4, dup) = post_ok(&d, "/v1/alerts", other).await;
    assert!(!dup);
    assert_ne!(a4, a1);
    assert_ne!(c4, c1);
    assert_eq!(cases(&d).await.len(), 2);
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_content_within_the_dedup_window_is_a_duplicate_in_the_same_case() {
    let (d, clock) = start_with_clock().await;
    let window = d.config.cases.dedup_window_secs as i64;
    assert!(window < d.config.cases.correlation_window_secs as i64);
    let (a1, c1, dup) = post_ok(&d, "/v1/alerts/elastic", elastic_with_uuid("uuid-1")).await;
    assert!(!dup);

    clock.advance_secs(window - 1);
    let (a2, c2, dup) = post_ok(&d, "/v1/alerts/elastic", elastic_with_uuid("uuid-2")).await;
    assert!(
        dup,
        "same rule, severity and entities within the dedup window"
    );
    assert_ne!(a2, a1, "a re-fire is a new alert");
    assert_eq!(c2, c1, "in the same case");
    let case = d.case(&c1).await;
    assert_eq!(case["case"]["duplicate_count"], json!(1));
    assert_eq!(case["case"]["alert_ids"], json!([a1, a2]));
    assert_eq!(support::actions(&case).len(), 7);
    let stored = alert(&d, &a2).await;
    assert_eq!(stored["duplicate_of"], json!(a1));
    assert_eq!(stored["case_id"], json!(c1));
    assert_eq!(stored["source_alert_id"], json!("uuid-2"));
    let recv = records(&d, "alert_received", &a2);
    assert_eq!(recv.len(), 1);
    assert_eq!(recv[0].body.data["duplicate_of"], json!(a1));
    assert!(
        records(&d, "policy_decision", &a2).is_empty(),
        "a duplicate is not decided again"
    );

    // Past the dedup window (measured from the first alert) but inside the correlation window:
    // a new alert, not a duplicate, correlated into the same open case.
    clock.advance_secs(2);
    let (a3, c3, dup) = post_ok(&d, "/v1/alerts/elastic", elastic_with_uuid("uuid-3")).await;
    assert!(!dup, "past the dedup window it is not a duplicate");
    assert_ne!(a3, a1);
    assert_eq!(
        c3, c1,
        "it correlates into the open case (same rule and host)"
    );
    let case = d.case(&c1).await;
    assert_eq!(case["case"]["alert_ids"], json!([a1, a2, a3]));
    assert_eq!(case["case"]["duplicate_count"], json!(1));
    assert_eq!(
        support::actions(&case).len(),
        7,
        "the same targets are not proposed twice in a case"
    );
    assert!(alert(&d, &a3).await.get("duplicate_of").is_none());
    let corr = records(&d, "alert_correlated", &a3);
    assert_eq!(corr.len(), 1);
    assert_eq!(
        corr[0].body.data["correlation_key"],
        json!("b7f1c2d3-4e5a-46b7-8c9d-0e1f2a3b4c5d|host:ws-042")
    );
    assert_eq!(cases(&d).await.len(), 1);

    // The dedup window restarts at the last new alert.
    let (a4, c4, dup) = post_ok(&d, "/v1/alerts/elastic", elastic_with_uuid("uuid-4")).await;
    assert!(dup);
    assert_eq!(c4, c1);
    assert_eq!(alert(&d, &a4).await["duplicate_of"], json!(a3));
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_rule_and_entity_mode_same_rule_and_host_correlate_within_the_window() {
    let (d, clock) = start_with_clock_in(cordon::config::CorrelationMode::RuleAndEntity).await;
    let (a1, c1, dup) = post_ok(
        &d,
        "/v1/alerts",
        native("n-1", "beacon-rule", "ws-100", &["192.0.2.1"]),
    )
    .await;
    assert!(!dup);
    // Same rule, same host (spelled differently), another IP: joins the case.
    let (a2, c2, dup) = post_ok(
        &d,
        "/v1/alerts",
        native("n-2", "beacon-rule", "WS-100.", &["192.0.2.2"]),
    )
    .await;
    assert!(!dup, "different entities: not a duplicate");
    assert_eq!(c2, c1);
    let case = d.case(&c1).await;
    assert_eq!(case["case"]["alert_ids"], json!([a1, a2]));
    assert_eq!(case["case"]["duplicate_count"], json!(0));
    assert_eq!(case["case"]["primary_entity"], json!("host:ws-100"));
    assert_eq!(
        entity_keys(&case["case"]),
        ["host:ws-100", "ip:192.0.2.1", "ip:192.0.2.2"],
        "the case holds the union of entities"
    );
    let corr = records(&d, "alert_correlated", &a2);
    assert_eq!(corr.len(), 1);
    assert_eq!(
        corr[0].body.data["correlation_key"],
        json!("beacon-rule|host:ws-100")
    );
    assert_eq!(corr[0].body.case_id.as_deref(), Some(c1.as_str()));
    assert_eq!(alert(&d, &a2).await["case_id"], json!(c1));

    // Same rule, another host: another case.
    let (_, c3, dup) = post_ok(
        &d,
        "/v1/alerts",
        native("n-3", "beacon-rule", "ws-101", &["192.0.2.1"]),
    )
    .await;
    assert!(!dup);
    assert_ne!(c3, c1);
    // Same host, another rule: another case.
    let (_, c4, dup) = post_ok(
        &d,
        "/v1/alerts",
        native("n-4", "other-rule", "ws-100", &["192.0.2.1"]),
    )
    .await;
    assert!(!dup);
    assert!(c4 != c1 && c4 != c3);

    // Same rule and host after the correlation window: a new case.
    clock.advance_secs(d.config.cases.correlation_window_secs as i64 + 1);
    let (a5, c5, dup) = post_ok(
        &d,
        "/v1/alerts",
        native("n-5", "beacon-rule", "ws-100", &["192.0.2.5"]),
    )
    .await;
    assert!(!dup);
    assert!(
        ![&c1, &c3, &c4].contains(&&c5),
        "past the correlation window a new case opens"
    );
    assert!(records(&d, "alert_correlated", &a5).is_empty());
    assert_eq!(d.case(&c5).await["case"]["alert_ids"], json!([a5]));
    assert_eq!(
        d.case(&c1).await["case"]["alert_ids"],
        json!([a1, a2]),
        "the old case is unchanged"
    );
    assert_eq!(cases(&d).await.len(), 4);
    assert_eq!(d.stop().await, 0);
}

/// A correlated alert that adds an action awaiting a human must not leave the case `approved`
/// (the engine's own rule: "approved once nothing awaits a human").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlated_alert_with_a_pending_action_does_not_leave_the_case_approved() {
    let d = support::start().await;
    let dc = |id: &str, ips: &[&str]| {
        let mut entities = vec![json!({"kind": "host", "value": "dc-01"})];
        entities.extend(ips.iter().map(|ip| json!({"kind": "ip", "value": ip})));
        json!({
            "source_alert_id": id,
            "title": "PowerShell download cradle on a domain controller",
            "rule": {"id": "ps-cradle", "name": "PowerShell download cradle"},
            "severity": "critical",
            "techniques": ["T1059.001"],
            "entities": entities,
        })
        .to_string()
    };
    let (_, c1, _) = post_ok(&d, "/v1/alerts", dc("dc-1", &[])).await;
    let case = d.case(&c1).await;
    // isolate is denied (never-isolate), everything else is automatic: approved.
    assert_eq!(case["case"]["state"], json!("approved"), "{case}");
    assert!(
        support::actions(&case)
            .iter()
            .all(|(_, _, s, _)| s != "awaiting_approval")
    );

    let (_, c2, dup) = post_ok(&d, "/v1/alerts", dc("dc-2", &["192.0.2.99"])).await;
    assert!(!dup);
    assert_eq!(c2, c1, "correlates into the case");
    let case = d.case(&c1).await;
    let acts = support::actions(&case);
    assert!(
        acts.contains(&(
            "block_ioc".into(),
            "ip:192.0.2.99".into(),
            "awaiting_approval".into(),
            "one_approver".into()
        )),
        "{acts:?}"
    );
    assert_ne!(
        case["case"]["state"],
        json!("approved"),
        "the case says approved while block_ioc ip:192.0.2.99 awaits an approver: {}",
        case["case"]
    );
    assert_eq!(d.stop().await, 0);
}

fn suppression(expires: DateTime<Utc>) -> Suppression {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppression_makes_the_case_suppressed_without_actions() {
    let d = support::start_with(|cfg, _| {
        cfg.suppressions
            .push(suppression(Utc::now() + chrono::Duration::days(1)))
    })
    .await;
    let (a1, c1, dup) = post_ok(&d, "/v1/alerts/elastic", support::fixture("elastic.json")).await;
    assert!(!dup);
    let case = d.case(&c1).await;
    assert_eq!(case["case"]["state"], json!("suppressed"), "{case}");
    assert_eq!(
        case["case"]["suppressed_by"],
        json!({"id": "maint-ws-042", "reason": "reimaging ws-042", "owner": "it-endpoint"})
    );
    assert_eq!(
        case["actions"],
        json!([]),
        "a suppressed case proposes nothing"
    );
    assert_eq!(case["case"]["alert_ids"], json!([a1]));
    let last = case["case"]["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["to"], json!("suppressed"));
    assert!(
        last["reason"].as_str().unwrap().contains("maint-ws-042"),
        "{last}"
    );
    assert_eq!(alert(&d, &a1).await["suppressed_by"], json!("maint-ws-042"));

    let sup = records(&d, "alert_suppressed", &a1);
    assert_eq!(sup.len(), 1);
    assert_eq!(sup[0].body.case_id.as_deref(), Some(c1.as_str()));
    assert_eq!(sup[0].body.data["suppression"], json!("maint-ws-042"));
    assert_eq!(sup[0].body.data["reason"], json!("reimaging ws-042"));
    assert_eq!(sup[0].body.data["owner"], json!("it-endpoint"));
    assert!(
        d.audit()
            .iter()
            .all(|r| r.body.kind != "action_proposed" && r.body.kind != "policy_decision")
    );
    assert_eq!(
        records(&d, "alert_received", &a1).len(),
        1,
        "the suppressed alert is still recorded"
    );

    // An alert that does not name ws-042 is not suppressed.
    let (_, c2, _) = post_ok(&d, "/v1/alerts/sentinel", support::fixture("sentinel.json")).await;
    let other = d.case(&c2).await;
    assert_eq!(other["case"]["state"], json!("recommended"));
    assert!(
        other["case"]
            .get("suppressed_by")
            .is_none_or(Value::is_null),
        "{other}"
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_suppression_does_not_apply() {
    let d = support::start_with(|cfg, _| {
        cfg.suppressions
            .push(suppression(Utc::now() - chrono::Duration::hours(1)))
    })
    .await;
    let (a1, c1, _) = post_ok(&d, "/v1/alerts/elastic", support::fixture("elastic.json")).await;
    let case = d.case(&c1).await;
    assert_eq!(case["case"]["state"], json!("recommended"), "{case}");
    assert!(case["case"].get("suppressed_by").is_none_or(Value::is_null));
    assert_eq!(support::actions(&case).len(), 7);
    assert!(alert(&d, &a1).await.get("suppressed_by").is_none());
    assert!(records(&d, "alert_suppressed", &a1).is_empty());
    assert_eq!(d.stop().await, 0);

    // Expiry is judged at the daemon's "now": suppressed before, not after.
    let clock = TestClock::new();
    let (dir, mut cfg) = support::workspace();
    cfg.suppressions
        .push(suppression(clock.now() + chrono::Duration::hours(1)));
    let d = support::start_in(dir, cfg, Some(clock.clone())).await;
    let (_, c1, _) = post_ok(&d, "/v1/alerts/elastic", elastic_with_uuid("before")).await;
    assert_eq!(d.case(&c1).await["case"]["state"], json!("suppressed"));
    clock.advance_secs(2 * 3600);
    let (a2, c2, dup) = post_ok(&d, "/v1/alerts/elastic", elastic_with_uuid("after")).await;
    assert!(!dup);
    assert_ne!(c2, c1, "a suppressed case is not joined");
    let case = d.case(&c2).await;
    assert_eq!(case["case"]["state"], json!("recommended"), "{case}");
    assert!(records(&d, "alert_suppressed", &a2).is_empty());
    assert_eq!(d.stop().await, 0);
}

fn fact<'a>(alert: &'a Value, source_prefix: &str, key: &str) -> Option<&'a Value> {
    alert["enrichment"]["facts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["source"].as_str().unwrap().starts_with(source_prefix)
                && format!(
                    "{}:{}",
                    f["entity"]["kind"].as_str().unwrap(),
                    f["entity"]["value"].as_str().unwrap()
                ) == key
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_facts_say_where_and_when() {
    let d = support::start().await;
    let (a1, _, _) = post_ok(&d, "/v1/alerts/elastic", support::fixture("elastic.json")).await;
    let al = alert(&d, &a1).await;
    let assets = d.dir.path().join("enrichment/assets.toml");
    let host = fact(&al, "assets", "host:ws-042")
        .unwrap_or_else(|| panic!("no asset fact for ws-042: {}", al["enrichment"]));
    assert_eq!(
        host["source"],
        json!(format!("assets:{}", assets.display()))
    );
    let loaded_at: DateTime<Utc> = host["loaded_at"].as_str().unwrap().parse().unwrap();
    let at: DateTime<Utc> = al["enrichment"]["at"].as_str().unwrap().parse().unwrap();
    assert!(
        loaded_at <= at,
        "loaded {loaded_at} after the enrichment at {at}"
    );
    assert_eq!(host["stale"], json!(false));
    assert_eq!(host["data"]["criticality"], json!("medium"));
    assert_eq!(host["data"]["environment"], json!("corporate"));
    assert_eq!(host["data"]["owner"], json!("it-endpoint"));
    let user = fact(&al, "identities", "user:alice").expect("identity fact for alice");
    assert_eq!(user["data"]["role"], json!("finance-analyst"));
    let intel = fact(&al, "intel", "ip:203.0.113.77").expect("intel fact for 203.0.113.77");
    assert_eq!(intel["data"]["confidence"], json!(90));
    assert!(
        fact(&al, "intel", "ip:10.20.30.42").is_none(),
        "no intel for 10.20.30.42"
    );
    assert_eq!(al["enrichment"]["failures"], json!([]));
    // The enrichment is also in the audit log, linked to the alert.
    let rec = records(&d, "enrichment", &a1);
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].body.data["facts"], al["enrichment"]["facts"]);
    assert!(records(&d, "enrichment_failed", &a1).is_empty());
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_failure_is_recorded_and_the_alert_is_kept() {
    let d = support::start().await;
    let intel = d.dir.path().join("enrichment/intel.toml");
    let good = std::fs::read(&intel).unwrap();
    std::fs::write(&intel, "[[indicator]\nvalue = \"203.0.113.77\"\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&intel)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();

    let (a1, c1, dup) = post_ok(&d, "/v1/alerts/elastic", support::fixture("elastic.json")).await;
    assert!(!dup);
    let failed = records(&d, "enrichment_failed", &a1);
    assert_eq!(failed.len(), 1, "one enrichment_failed record");
    let received = records(&d, "alert_received", &a1);
    assert_eq!(received.len(), 1, "the detection itself is recorded");
    assert!(failed[0].body.seq > received[0].body.seq);
    assert_eq!(failed[0].body.case_id.as_deref(), Some(c1.as_str()));
    let failures = failed[0].body.data["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(
        failures[0]["source"],
        json!(format!("intel:{}", intel.display()))
    );
    assert!(!failures[0]["error"].as_str().unwrap().is_empty());

    // The alert and its case are stored, with the last good intel marked stale.
    let al = alert(&d, &a1).await;
    assert_eq!(
        al["enrichment"]["failures"],
        failed[0].body.data["failures"]
    );
    assert_eq!(
        fact(&al, "intel", "ip:203.0.113.77").expect("last good intel")["stale"],
        json!(true)
    );
    assert_eq!(
        fact(&al, "assets", "host:ws-042").expect("assets still consulted")["stale"],
        json!(false)
    );
    let case = d.case(&c1).await;
    assert_eq!(case["case"]["alert_ids"], json!([a1]));
    assert_eq!(support::actions(&case).len(), 7);

    // Fixed: the next alert enriches cleanly.
    std::fs::write(&intel, good).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&intel)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(10))
        .unwrap();
    let (a2, _, _) = post_ok(&d, "/v1/alerts/sentinel", support::fixture("sentinel.json")).await;
    assert!(records(&d, "enrichment_failed", &a2).is_empty());
    assert_eq!(alert(&d, &a2).await["enrichment"]["failures"], json!([]));
    assert_eq!(d.stop().await, 0);
}

/// `GET /v1/cases` lists cases in creation order (what an `after=<case id>` poller relies on),
/// also when many cases open within the same millisecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_list_is_in_creation_order() {
    let d = support::start().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (url, client) = (format!("{}/v1/alerts", d.base), d.client.clone());
        let body = native(
            &format!("order-{i}"),
            &format!("rule-{i}"),
            &format!("host-{i}"),
            &[],
        );
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 202);
    }
    let (_, listed) = d.get("/v1/cases?limit=1000").await;
    let listed = listed["cases"].as_array().unwrap();
    assert_eq!(listed.len(), 200);
    // The engine opens cases one at a time, so creation order is `created_at` order.
    let created: Vec<DateTime<Utc>> = listed
        .iter()
        .map(|c| c["created_at"].as_str().unwrap().parse().unwrap())
        .collect();
    let out_of_order: Vec<(usize, &Value)> = created
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] > w[1])
        .map(|(i, _)| (i + 1, &listed[i + 1]["case_id"]))
        .collect();
    assert!(
        out_of_order.is_empty(),
        "{} case(s) listed before older ones (position, case id): {out_of_order:?}",
        out_of_order.len()
    );
    assert_eq!(d.stop().await, 0);
}

/// The default correlation: alerts of different rules that share a strong entity join one open
/// case within the window, and the case says why each one joined; a weak entity (an IP) does not
/// join, and past the window a new case opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_rules_on_one_host_make_one_case() {
    let (d, clock) = start_with_clock().await;
    let (a1, c1, _) = post_ok(
        &d,
        "/v1/alerts",
        native("s-1", "beacon-rule", "ws-200", &["192.0.2.9"]),
    )
    .await;
    clock.advance_secs(60);
    let (a2, c2, _) = post_ok(
        &d,
        "/v1/alerts",
        native("s-2", "other-rule", "WS-200.", &[]),
    )
    .await;
    clock.advance_secs(60);
    let (a3, c3, _) = post_ok(&d, "/v1/alerts", native("s-3", "third-rule", "ws-200", &[])).await;
    assert_eq!((c2.as_str(), c3.as_str()), (c1.as_str(), c1.as_str()));
    let case = d.case(&c1).await;
    assert_eq!(case["case"]["alert_ids"], json!([a1, a2, a3]));
    let why: Vec<&str> = case["case"]["correlation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["why"].as_str().unwrap())
        .collect();
    assert!(why[0].starts_with("new case"), "{why:?}");
    assert!(why[1].starts_with("shares host:ws-200"), "{why:?}");
    assert!(why[2].starts_with("shares host:ws-200"), "{why:?}");
    assert_eq!(
        records(&d, "alert_correlated", &a3)[0].body.data["why"],
        json!(why[2])
    );
    // Sharing only an IP does not join.
    let (_, c4, _) = post_ok(
        &d,
        "/v1/alerts",
        native("s-4", "beacon-rule", "ws-201", &["192.0.2.9"]),
    )
    .await;
    assert_ne!(c4, c1);
    // Past the window, the same host opens a new case.
    clock.advance_secs(d.config.cases.correlation_window_secs as i64 + 1);
    let (_, c5, _) = post_ok(&d, "/v1/alerts", native("s-5", "other-rule", "ws-200", &[])).await;
    assert!(c5 != c1 && c5 != c4);
}
