//! Fail closed: a policy that errors during evaluation, and a store that cannot record the
//! decision, both leave the step not runnable.

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_errors_denies_the_step() {
    let d = support::start_with(|cfg, _| {
        cfg.policy.watch = false;
        // Cedar skips a policy that errors — including a forbid — which would let the permit
        // through. cordon must deny instead. This forbid overflows on every evaluation.
        std::fs::write(
            cfg.policies_dir.join("overflow.cedar"),
            "@id(\"overflowing-forbid\")\n@reason(\"a broken guard\")\nforbid(principal, action == Cordon::Action::\"isolate_host\", resource)\nwhen { context.alert.confidence * 9223372036854775807 > 1 };\n",
        )
        .unwrap();
    })
    .await;
    let alert = serde_json::json!({
        "source_alert_id": "e1", "title": "t", "severity": "high", "confidence": 90,
        "rule": {"id": "r", "name": "Suspicious PowerShell EncodedCommand"},
        "techniques": ["T1059.001"], "entities": [{"kind": "host", "value": "ws-042"}]
    });
    let (s, ack) = d.post("/v1/alerts", alert.to_string()).await;
    assert_eq!(s, 202, "{ack}");
    let case = d.case(ack["case_id"].as_str().unwrap()).await;
    let isolate = support::actions(&case)
        .into_iter()
        .find(|a| a.0 == "isolate_host")
        .unwrap();
    assert_eq!(
        (isolate.2.as_str(), isolate.3.as_str()),
        ("denied", "denied")
    );
    // Steps the broken policy does not touch are decided normally.
    assert!(
        support::actions(&case)
            .iter()
            .any(|a| a.0 == "enrich" && a.3 == "auto")
    );
    let rec = d
        .audit()
        .into_iter()
        .find(|r| {
            r.body.kind == "policy_decision"
                && r.body.data["request"]["action"]["id"] == "isolate_host"
        })
        .unwrap();
    let errors = rec.body.data["errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "the evaluation error must be recorded");
    assert!(
        errors[0].as_str().unwrap().contains("overflowing-forbid"),
        "{errors:?}"
    );
    assert!(rec.body.data["reasons"].to_string().contains("fail closed"));
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_record_leaves_nothing_runnable() {
    let d = support::start().await;
    let head = d.head();
    d.running().store.fail_for_tests();
    let (s, body) = d
        .post("/v1/alerts/elastic", support::fixture("elastic.json"))
        .await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["code"], "store_unavailable");
    // Nothing was recorded, so no action request exists in any state, let alone `approved`.
    assert_eq!(d.head(), head);
    let (_, cases) = d.get("/v1/cases").await;
    assert_eq!(cases["cases"].as_array().unwrap().len(), 0);
    let (_, metrics) = d.get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("outcome=\"store_unavailable\"")
    );
    // And the instance says it is not ready, so traffic goes elsewhere.
    let (status, ready) = d.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["store"]["ok"], false);
    d.stop().await;
}
