//! Policy reload: a bad set keeps the last good one in force (decisions unchanged, error
//! reported in the log, `/readyz`, a metric and the audit store); a good set takes effect
//! without a restart and its hash appears in later decision records. Triggers: HTTP, file
//! change, SIGHUP.

use crate::support::{self, eventually};
use serde_json::Value;

async fn policy_hash(d: &support::TestDaemon) -> String {
    let (s, v) = d.get("/readyz").await;
    assert_eq!(s, 200);
    v["policies"]["hash"].as_str().unwrap().to_string()
}

/// The tier and policy hash of the isolate_host action of the case `ack` names.
async fn isolate_decision(d: &support::TestDaemon, ack: &Value) -> (String, String) {
    let case = d.case(ack["case_id"].as_str().unwrap()).await;
    let a = case["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "isolate_host")
        .unwrap_or_else(|| panic!("no isolate_host in {case}"))
        .clone();
    (
        a["tier"].as_str().unwrap().to_string(),
        a["policy_hash"].as_str().unwrap().to_string(),
    )
}

fn cordon_alert(id: &str, host: &str) -> String {
    serde_json::json!({
        "source_alert_id": id,
        "title": "Encoded PowerShell from Office",
        "rule": {"id": format!("rule-{id}"), "name": "Suspicious PowerShell EncodedCommand"},
        "severity": "high",
        "confidence": 90,
        "techniques": ["T1059.001"],
        "entities": [{"kind": "host", "value": host}]
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policy_keeps_the_last_good_set() {
    let d = support::start_with(|cfg, _| cfg.policy.watch = false).await;
    let h1 = policy_hash(&d).await;
    let ack = d.post("/v1/alerts", cordon_alert("a1", "ws-042")).await.1;
    assert_eq!(
        isolate_decision(&d, &ack).await,
        ("one_approver".to_string(), h1.clone())
    );

    // A file that does not validate: an attribute the schema does not have, on line 4.
    let bad = d.config.policies_dir.join("zz_bad.cedar");
    std::fs::write(&bad, "@id(\"bad\")\n@reason(\"r\")\npermit(principal, action == Cordon::Action::\"isolate_host\", resource)\nwhen { resource.no_such_attribute == 1 };\n").unwrap();
    let (status, body) = d.post("/v1/policies/reload", "").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "policy_invalid");
    let problems = body["outcome"]["problems"].to_string();
    assert!(
        problems.contains("zz_bad.cedar") && problems.contains("no_such_attribute"),
        "{problems}"
    );
    assert_eq!(body["outcome"]["policy_hash"], h1.as_str());

    // Still the old set: same hash, same decisions; the error is visible.
    assert_eq!(policy_hash(&d).await, h1);
    let (_, ready) = d.get("/readyz").await;
    let err = ready["policies"]["last_reload_error"].to_string();
    assert!(
        err.contains("zz_bad.cedar:4:"),
        "readyz must give file:line of the bad attribute, got {err}"
    );
    let ack = d.post("/v1/alerts", cordon_alert("a2", "ws-042")).await.1;
    assert_eq!(
        isolate_decision(&d, &ack).await,
        ("one_approver".to_string(), h1.clone())
    );
    let (_, metrics) = d.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("cordon_policy_reload_failed 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cordon_policy_reloads_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    let failed: Vec<_> = d
        .audit()
        .into_iter()
        .filter(|r| r.body.kind == "policy_reload_failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].body.data["policy_hash_in_force"], h1.as_str());
    assert!(
        failed[0].body.data["problems"]
            .to_string()
            .contains("zz_bad.cedar")
    );

    // Fixing it clears the error.
    std::fs::remove_file(&bad).unwrap();
    let (status, _) = d.post("/v1/policies/reload", "").await;
    assert_eq!(status, 200);
    let (_, ready) = d.get("/readyz").await;
    assert!(ready["policies"]["last_reload_error"].is_null());
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_policy_takes_effect_without_restart() {
    let d = support::start_with(|cfg, _| cfg.policy.watch = false).await;
    let h1 = policy_hash(&d).await;
    // SOC engineers decide isolation of corporate workstations is automatic at critical severity.
    std::fs::write(
        d.config.policies_dir.join("isolate_critical.cedar"),
        "@id(\"isolate-critical-auto\")\n@reason(\"critical-severity malware on a workstation: isolate at once\")\npermit(principal, action == Cordon::Action::\"isolate_host\", resource)\nwhen { context.alert.severity_id >= 5 };\n",
    )
    .unwrap();
    let (status, body) = d.post("/v1/policies/reload", "").await;
    assert_eq!(status, 200, "{body}");
    let h2 = body["policy_hash"].as_str().unwrap().to_string();
    assert_ne!(h1, h2);
    assert_eq!(policy_hash(&d).await, h2);

    let alert = cordon_alert("b1", "ws-042").replace("\"high\"", "\"critical\"");
    let ack = d.post("/v1/alerts", alert).await.1;
    assert_eq!(
        isolate_decision(&d, &ack).await,
        ("auto".to_string(), h2.clone())
    );
    let rec = d
        .audit()
        .into_iter()
        .rev()
        .find(|r| {
            r.body.kind == "policy_decision"
                && r.body.data["request"]["action"]["id"] == "isolate_host"
        })
        .unwrap();
    assert_eq!(rec.body.data["policy_hash"], h2.as_str());
    let reloaded: Vec<_> = d
        .audit()
        .into_iter()
        .filter(|r| r.body.kind == "policy_reloaded")
        .collect();
    assert_eq!(reloaded.len(), 1);
    assert_eq!(reloaded[0].body.data["previous_hash"], h1.as_str());
    assert_eq!(reloaded[0].body.data["policy_hash"], h2.as_str());
    // never-isolate still wins over the new permit.
    let dc = cordon_alert("b2", "dc-01").replace("\"high\"", "\"critical\"");
    let ack = d.post("/v1/alerts", dc).await.1;
    assert_eq!(isolate_decision(&d, &ack).await.0, "denied");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_reloads_by_itself() {
    let d = support::start().await; // watch = true by default
    let h1 = policy_hash(&d).await;
    std::fs::write(
        d.config.policies_dir.join("extra.cedar"),
        "@id(\"extra-release-auto\")\n@reason(\"releasing hosts is routine here\")\npermit(principal, action == Cordon::Action::\"release_host\", resource);\n",
    )
    .unwrap();
    let h2 = eventually(20, || async {
        let h = policy_hash(&d).await;
        (h != h1).then_some(h)
    })
    .await;
    assert!(
        d.audit().iter().any(|r| r.body.kind == "policy_reloaded"
            && r.body.data["trigger"] == "file_change"
            && r.body.data["policy_hash"] == h2.as_str()),
        "no file_change reload record"
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_real_binary() {
    let (dir, _) = support::workspace();
    let root = dir.path();
    let cfg = support::write_config(root, "[policy]\nwatch = false\n");
    let mut d = support::Daemon::start(root, "sighup", support::serve_args(&cfg)).await;
    let pid = d.pid().to_string();
    let client = support::http_client();
    let url = format!("{}/readyz", d.base);
    let ready = |client: reqwest::Client, url: String| async move {
        let r = client.get(&url).send().await.ok()?;
        let v: Value = r.json().await.ok()?;
        v["policies"]["hash"].as_str().map(str::to_string)
    };
    let h1 = eventually(30, || ready(client.clone(), url.clone())).await;
    std::fs::write(
        root.join("policies/extra.cedar"),
        "@id(\"extra\")\n@reason(\"r\")\npermit(principal, action == Cordon::Action::\"release_host\", resource);\n",
    )
    .unwrap();
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    eventually(20, || {
        let (c, u, h1) = (client.clone(), url.clone(), h1.clone());
        async move { ready(c, u).await.filter(|h| *h != h1) }
    })
    .await;
    let status = d.terminate().await;
    assert_eq!(status.code(), Some(0));
    let log = d.logs();
    assert!(log.contains("SIGHUP"), "{log}");
}
