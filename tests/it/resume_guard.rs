//! A stored action that cannot be resumed safely is refused and escalated, never driven and
//! never a panic: an `unknown` action whose intent record is gone says nothing about what was
//! sent, so it must not be probed into a resend.

use serde_json::{Value, json};

use crate::support;
use crate::support::live::{self, Vendors};

/// Opens the store at `data` once sled has let go of the directory lock (it does so from its
/// flusher thread a moment after the last handle drops): waits for that condition.
async fn open_when_unlocked(data: &std::path::Path) -> cordon::store::Store {
    let opts = cordon::store::StoreOptions::default();
    support::eventually(10, || {
        let r = cordon::store::Store::open(data, &opts);
        async move { r.ok() }
    })
    .await
}

/// Stops the daemon, rewrites action `id`'s stored record with `edit` and queues it for the
/// executor, then starts the daemon again on the same data directory.
async fn restart_with_action(
    mut d: support::TestDaemon,
    id: &str,
    edit: impl FnOnce(&mut Value),
) -> support::TestDaemon {
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    let store = open_when_unlocked(&d.config.data_dir).await;
    let key = cordon::engine::keys::action(id);
    let mut rec: Value = store.get_json(&key).unwrap().unwrap();
    edit(&mut rec);
    let mut t = store.begin();
    t.put_json(key, &rec).unwrap();
    t.put(cordon::engine::keys::runnable(id), vec![]);
    store.commit(t).await.unwrap();
    drop(store);
    support::restart_when_unlocked(d.dir, d.config, Default::default()).await
}

/// Waits for the first escalation of action `id`; returns them all.
async fn escalations(d: &support::TestDaemon, id: &str) -> Vec<Value> {
    support::eventually(20, || async {
        let e = live::records(d, "escalation", id);
        (!e.is_empty()).then_some(e)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_action_without_its_intent_record_is_refused_and_escalated() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-corrupt", "aid-corrupt");
    let d = live::start_live(&v, |_, _| {}).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "corrupt-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-corrupt")],
        ),
    )
    .await;
    let a = live::find_action(&d, &case_id, "isolate_host", Some("ws-corrupt")).await;
    let id = a["action_id"].as_str().unwrap().to_string();

    // The record now says a run ended in `unknown`, but its intent record is gone.
    let d = restart_with_action(d, &id, |rec| {
        rec["state"] = json!("unknown");
        rec.as_object_mut().unwrap().remove("execution");
    })
    .await;
    let esc = escalations(&d, &id).await;
    assert!(
        esc[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no intent record"),
        "{esc:?}"
    );
    let (_, got) = d.get(&format!("/v1/actions/{id}")).await;
    assert_eq!(got["state"], json!("unknown"), "{got}");
    // Never driven: nothing about it reached the vendor, and it left the queue.
    assert_eq!(v.cs.log().count_matching("*", "devices"), 0);
    assert!(
        !cordon::engine::read::runnable(&d.running().store, None, usize::MAX)
            .unwrap()
            .contains(&id)
    );
    let (s, _) = d.get("/readyz").await;
    assert_eq!(s, 200);
}

/// The write budget is counted on record, so it holds across restarts and reconcile passes:
/// an `unknown` action whose record shows `retry.max_attempts` writes already sent is probed
/// when it resumes, and never written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_budget_of_an_unknown_action_holds_across_restarts() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-flaky", "aid-flaky");
    let d = live::start_live(&v, |_, _| {}).await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "flaky-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-flaky")],
        ),
    )
    .await;
    let a = live::find_action(&d, &case_id, "isolate_host", Some("ws-flaky")).await;
    let id = a["action_id"].as_str().unwrap().to_string();

    // On record: five writes went out (the test wiring's retry.max_attempts) and the last
    // one's outcome is unknown.
    let d = restart_with_action(d, &id, |rec| {
        rec["state"] = json!("unknown");
        rec["execution"] = json!({
            "connector": "crowdstrike", "mode": "live", "intent_at": rec["created_at"],
            "phase": "unknown", "writes_sent": 5, "retries": 0, "vendor": {"aid": "aid-flaky"},
        });
    })
    .await;
    let esc = escalations(&d, &id).await;
    assert!(
        esc.iter()
            .any(|e| e["reason"] == json!("5 write attempts without a definite answer")),
        "{esc:?}"
    );
    let (_, got) = d.get(&format!("/v1/actions/{id}")).await;
    assert_eq!(got["state"], json!("failed"), "{got}");
    // It was probed (the probe shows no effect) and never written again.
    assert!(
        v.cs.log()
            .count_matching("GET", "devices/entities/devices/v2")
            >= 1
    );
    assert_eq!(v.cs.log().count_matching("POST", "action_name=contain"), 0);
}

/// Shutdown does not wait for a slow vendor: a call in flight is dropped, and that exception is
/// written down before the daemon stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_at_shutdown_is_written_down() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-slow", "aid-slow");
    v.cs.faults().arm(crate::support::fakes::Fault {
        method: Some(axum::http::Method::POST),
        path_contains: "action_name=contain".into(),
        kind: crate::support::fakes::FaultKind::TimeoutAfterEffect(std::time::Duration::from_secs(
            120,
        )),
        times: 1,
    });
    let mut d = live::start_live(&v, |_, root| {
        let p = root.join("connectors/crowdstrike.toml");
        let t = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, t.replace("timeout_ms = 1500", "timeout_ms = 60000")).unwrap();
    })
    .await;
    let case_id = live::post_alert(
        &d,
        live::alert(
            "slow-1",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "ws-slow")],
        ),
    )
    .await;
    let a = live::find_action(&d, &case_id, "isolate_host", Some("ws-slow")).await;
    let id = a["action_id"].as_str().unwrap().to_string();
    live::approve(&d, &id, &["alice"]).await;
    // The write is out and its answer is held back.
    support::eventually(30, || async {
        (v.cs.effects().count("contain:aid-slow") == 1).then_some(())
    })
    .await;
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    let store = open_when_unlocked(&d.config.data_dir).await;
    let recs: Vec<_> = store
        .audit_records(1, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|r| r.body.kind == "call_interrupted" && r.body.action_id.as_deref() == Some(&id))
        .collect();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].body.data["phase"], json!("write"));
}
