//! The Cedar control plane end to end: alerts of each detection family produce action requests
//! whose tiers match the blast-radius table (including the emergency revocation exception and the
//! never-isolate denial), and every decision is stored as a replayable decision record linked
//! from its action.

use cordon::store::AuditRecord;
use serde_json::{Value, json};

use crate::support::{self, TestDaemon};

async fn post_ok(d: &TestDaemon, path: &str, body: impl Into<reqwest::Body>) -> (String, String) {
    let (s, ack) = d.post(path, body).await;
    assert_eq!(s, 202, "{path}: {ack}");
    assert_eq!(ack["duplicate"], json!(false), "{ack}");
    (
        ack["alert_id"].as_str().unwrap().to_string(),
        ack["case_id"].as_str().unwrap().to_string(),
    )
}

/// The one action of `kind` on `target` in the case.
fn action<'a>(case: &'a Value, kind: &str, target: &str) -> &'a Value {
    let found: Vec<&Value> = case["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == json!(kind) && a["target"]["id"] == json!(target))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} on {target}, got {}: {:?}",
        found.len(),
        support::actions(case)
    );
    found[0]
}

/// The `@reason` of policy `id`, read from the daemon's copy of the policy files.
fn policy_reason(d: &TestDaemon, id: &str) -> String {
    let dir = d.dir.path().join("policies");
    for e in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if let Some(i) = lines
            .iter()
            .position(|l| l.trim() == format!("@id(\"{id}\")"))
        {
            let r = lines[i + 1].trim();
            return r
                .strip_prefix("@reason(\"")
                .and_then(|r| r.strip_suffix("\")"))
                .unwrap_or_else(|| panic!("no @reason after @id({id}): {r}"))
                .to_string();
        }
    }
    panic!("no policy {id} in {}", dir.display())
}

/// Checks an action's tier, state, determining policies, and that its reasons are exactly the
/// determining policies' `@reason`s.
fn check(
    d: &TestDaemon,
    case: &Value,
    kind: &str,
    target: &str,
    tier: &str,
    state: &str,
    determining: &[&str],
) {
    let a = action(case, kind, target);
    assert_eq!(a["tier"], json!(tier), "{kind} {target}: {a}");
    assert_eq!(a["state"], json!(state), "{kind} {target}: {a}");
    assert_eq!(
        a["determining_policies"],
        json!(determining),
        "{kind} {target}: {a}"
    );
    let reasons: Vec<String> = determining.iter().map(|id| policy_reason(d, id)).collect();
    assert_eq!(
        a["reasons"],
        json!(reasons),
        "{kind} {target}: reasons come from @reason"
    );
}

/// The audit record an action's `decision_seq` points at.
fn decision_of(d: &TestDaemon, action: &Value) -> AuditRecord {
    let seq = action["decision_seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no decision_seq: {action}"));
    whole(d, seq)
}

/// Audit record `seq` with its decision's request put back together from the shared inputs
/// (`decision_input`) recorded before it, as `replay` reads it.
fn whole(d: &TestDaemon, seq: u64) -> AuditRecord {
    let mut shared = cordon::policy::SharedInputs::default();
    let mut rec = d
        .audit()
        .into_iter()
        .inspect(|r| shared.note(&r.body.kind, &r.body.data))
        .find(|r| r.body.seq == seq)
        .unwrap_or_else(|| panic!("no audit record {seq}"));
    if rec.body.kind == "policy_decision" && rec.body.data.get("request").is_some() {
        let mut record: cordon::policy::DecisionRecord =
            serde_json::from_value(rec.body.data.clone()).unwrap();
        shared.expand(&mut record).unwrap();
        rec.body.data = serde_json::to_value(&record).unwrap();
    }
    rec
}

/// Every action of the case links to a `policy_decision` record about it that agrees with it.
fn check_decisions_linked(d: &TestDaemon, case: &Value) {
    for a in case["actions"].as_array().unwrap() {
        let r = decision_of(d, a);
        assert_eq!(r.body.kind, "policy_decision", "{a}");
        assert_eq!(
            r.body.action_id.as_ref(),
            a["action_id"].as_str().map(String::from).as_ref()
        );
        assert_eq!(
            r.body.case_id.as_ref(),
            a["case_id"].as_str().map(String::from).as_ref()
        );
        assert_eq!(r.body.data["tier"], a["tier"], "{a}");
        assert_eq!(r.body.data["policy_hash"], a["policy_hash"], "{a}");
        assert_eq!(r.body.data["reasons"], a["reasons"], "{a}");
        let ids: Vec<Value> = r.body.data["determining"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].clone())
            .collect();
        assert_eq!(json!(ids), a["determining_policies"], "{a}");
        assert_eq!(r.body.data["request"]["action"]["id"], a["kind"], "{a}");
        assert_eq!(
            r.body.data["request"]["resource"]["id"], a["target"]["id"],
            "{a}"
        );
    }
}

/// The resource entity (with its attributes) in a decision record's request.
fn resource_entity(rec: &AuditRecord) -> Value {
    let req = &rec.body.data["request"];
    req["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["uid"] == req["resource"])
        .cloned()
        .unwrap_or_else(|| panic!("resource entity missing: {req}"))
}

fn native(
    id: &str,
    rule: (&str, &str),
    severity: &str,
    techniques: &[&str],
    entities: &[(&str, &str)],
) -> String {
    json!({
        "source_alert_id": id,
        "title": rule.1,
        "rule": {"id": rule.0, "name": rule.1},
        "severity": severity,
        "techniques": techniques,
        "entities": entities.iter().map(|(k, v)| json!({"kind": k, "value": v})).collect::<Vec<_>>(),
    })
    .to_string()
}

const HASH_A: &str = "file_hash:0c7202275ade61aaec5b13be2ce37e640352ad0346e34322d1086980fa6c975c";
const HASH_B: &str = "file_hash:86f51b17077aee2d7885528286a00aa632489cfee188cc99fbec881feb06dca7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malware_execution_tiers() {
    let d = support::start().await;
    let (_, case_id) = post_ok(&d, "/v1/alerts/elastic", support::fixture("elastic.json")).await;
    let case = d.case(&case_id).await;
    for kind in ["enrich", "summarize_case", "create_ticket"] {
        check(
            &d,
            &case,
            kind,
            &case_id,
            "auto",
            "approved",
            &["auto-enrich-summarize-ticket"],
        );
    }
    check(
        &d,
        &case,
        "isolate_host",
        "ws-042",
        "one_approver",
        "awaiting_approval",
        &["isolate-host-one-approver"],
    );
    check(
        &d,
        &case,
        "block_ioc",
        "ip:203.0.113.77",
        "auto",
        "approved",
        &["block-ioc-high-confidence-intel"],
    );
    for hash in [HASH_A, HASH_B] {
        check(
            &d,
            &case,
            "block_ioc",
            hash,
            "one_approver",
            "awaiting_approval",
            &["block-ioc-one-approver"],
        );
    }
    // The host's own internal address is not an indicator: nothing proposes to block it.
    assert!(
        !support::actions(&case)
            .iter()
            .any(|a| a.1 == "ip:10.20.30.42"),
        "internal IPs are never block_ioc targets"
    );
    assert_eq!(
        case["case"]["state"],
        json!("recommended"),
        "isolation awaits an approver"
    );
    let ip = resource_entity(&decision_of(
        &d,
        action(&case, "block_ioc", "ip:203.0.113.77"),
    ));
    assert_eq!(ip["attrs"]["intel_match"], json!(true));
    assert_eq!(ip["attrs"]["intel_confidence"], json!(90));
    let hash = resource_entity(&decision_of(&d, action(&case, "block_ioc", HASH_A)));
    assert_eq!(hash["attrs"]["intel_match"], json!(false));
    check_decisions_linked(&d, &case);
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_abuse_emergency_revocation_and_expired_intel() {
    let d = support::start().await;
    let (alert_id, case_id) =
        post_ok(&d, "/v1/alerts/splunk", support::fixture("splunk.json")).await;
    let case = d.case(&case_id).await;
    check(
        &d,
        &case,
        "revoke_sessions",
        "bob@example.com",
        "auto",
        "approved",
        &["revoke-sessions-emergency"],
    );
    check(
        &d,
        &case,
        "block_ioc",
        "ip:198.51.100.23",
        "one_approver",
        "awaiting_approval",
        &["block-ioc-one-approver"],
    );
    check(
        &d,
        &case,
        "enrich",
        &case_id,
        "auto",
        "approved",
        &["auto-enrich-summarize-ticket"],
    );
    check(
        &d,
        &case,
        "create_ticket",
        &case_id,
        "auto",
        "approved",
        &["auto-enrich-summarize-ticket"],
    );

    // Why: bob's credential is named by intel with confidence 95 on a high-severity alert...
    let revoke = decision_of(&d, action(&case, "revoke_sessions", "bob@example.com"));
    assert_eq!(
        resource_entity(&revoke)["attrs"]["compromised_intel_confidence"],
        json!(95)
    );
    assert_eq!(
        revoke.body.data["request"]["context"]["alert"]["severity_id"],
        json!(4)
    );
    assert_eq!(
        revoke.body.data["probes"].as_array().unwrap().len(),
        1,
        "allowed at zero approvals"
    );
    // ...while the intel on 198.51.100.23 has expired, so it does not count.
    let block = decision_of(&d, action(&case, "block_ioc", "ip:198.51.100.23"));
    assert_eq!(
        resource_entity(&block)["attrs"]["intel_match"],
        json!(false)
    );
    let (_, alert) = d.get(&format!("/v1/alerts/{alert_id}")).await;
    let intel_ip = alert["enrichment"]["facts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["entity"] == json!({"kind": "ip", "value": "198.51.100.23"}));
    assert!(
        !intel_ip,
        "expired intel is not a fact: {}",
        alert["enrichment"]
    );
    check_decisions_linked(&d, &case);
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_abuse_without_the_emergency_needs_an_approver() {
    let d = support::start().await;
    // A user no intel names.
    let body = native(
        "frank-1",
        ("spray-1", "Password spray against frank"),
        "high",
        &["T1110.003"],
        &[("user", "frank")],
    );
    let (_, case_id) = post_ok(&d, "/v1/alerts", body).await;
    let case = d.case(&case_id).await;
    check(
        &d,
        &case,
        "revoke_sessions",
        "frank",
        "one_approver",
        "awaiting_approval",
        &["revoke-sessions-one-approver"],
    );
    assert_eq!(
        resource_entity(&decision_of(&d, action(&case, "revoke_sessions", "frank")))["attrs"]["compromised_intel_confidence"],
        json!(0)
    );
    check_decisions_linked(&d, &case);

    // The compromised credential, but on a medium-severity alert: not the emergency either.
    let body = native(
        "bob-medium",
        ("spray-2", "Password spray against bob"),
        "medium",
        &["T1110.003"],
        &[("user", "Bob@Example.com")],
    );
    let (_, case_id) = post_ok(&d, "/v1/alerts", body).await;
    let case = d.case(&case_id).await;
    check(
        &d,
        &case,
        "revoke_sessions",
        "bob@example.com",
        "one_approver",
        "awaiting_approval",
        &["revoke-sessions-one-approver"],
    );
    assert_eq!(
        resource_entity(&decision_of(
            &d,
            action(&case, "revoke_sessions", "bob@example.com")
        ))["attrs"]["compromised_intel_confidence"],
        json!(95)
    );
    check_decisions_linked(&d, &case);
    assert_eq!(d.stop().await, 0);
}

const PROD_VM: &str = "/subscriptions/3f2b8c1d-6e4a-4b7f-9c2d-8e1f0a3b5c7d/resourceGroups/rg-prod-web/providers/Microsoft.Compute/virtualMachines/prod-web-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_admin_production_containment_needs_two_people() {
    let d = support::start().await;
    let (_, case_id) = post_ok(&d, "/v1/alerts/sentinel", support::fixture("sentinel.json")).await;
    let case = d.case(&case_id).await;
    let contain = action(&case, "contain_cloud_resource", PROD_VM);
    assert_eq!(contain["tier"], json!("two_person"), "{contain}");
    assert_eq!(contain["state"], json!("awaiting_approval"));
    let det = contain["determining_policies"].as_array().unwrap();
    assert!(
        det.contains(&json!("cloud-containment-production-two-person")),
        "{det:?}"
    );
    assert!(
        det.contains(&json!("cloud-containment-one-approver")),
        "{det:?}"
    );
    let reasons = contain["reasons"].as_array().unwrap();
    assert!(
        reasons.contains(&json!(policy_reason(
            &d,
            "cloud-containment-production-two-person"
        ))),
        "{reasons:?}"
    );
    let rec = decision_of(&d, contain);
    let probes: Vec<(Value, Value)> = rec.body.data["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["approvals"].clone(), p["decision"].clone()))
        .collect();
    assert_eq!(
        probes,
        [
            (json!(0), json!("deny")),
            (json!(1), json!("deny")),
            (json!(2), json!("allow"))
        ]
    );
    let vm = resource_entity(&rec);
    assert_eq!(vm["attrs"]["environment"], json!("production"));
    assert_eq!(vm["attrs"]["provider"], json!("azure"));
    check(
        &d,
        &case,
        "revoke_sessions",
        "carol@example.com",
        "one_approver",
        "awaiting_approval",
        &["revoke-sessions-one-approver"],
    );
    check_decisions_linked(&d, &case);
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_isolate_host_is_denied() {
    let d = support::start().await;
    let body = native(
        "dc-1",
        ("ps-dc", "Suspicious PowerShell on a server"),
        "critical",
        &["T1059.001"],
        &[("host", "DC-01")],
    );
    let (_, case_id) = post_ok(&d, "/v1/alerts", body).await;
    let case = d.case(&case_id).await;
    check(
        &d,
        &case,
        "isolate_host",
        "dc-01",
        "denied",
        "denied",
        &["never-isolate-tagged-hosts"],
    );
    for kind in ["enrich", "summarize_case", "create_ticket"] {
        check(
            &d,
            &case,
            kind,
            &case_id,
            "auto",
            "approved",
            &["auto-enrich-summarize-ticket"],
        );
    }
    let rec = decision_of(&d, action(&case, "isolate_host", "dc-01"));
    let probes = rec.body.data["probes"].as_array().unwrap();
    // The forbid does not mention approvals, so no number of approvals can lift it: one probe
    // is enough and the record says which policy made it final.
    assert_eq!(
        probes.len(),
        1,
        "a forbid independent of approvals is final at the first probe: {probes:?}"
    );
    assert!(
        cordon::policy::load_dir(&support::repo().join("policies"))
            .unwrap_or_else(|p| panic!("{p:?}"))
            .meta("never-isolate-tagged-hosts")
            .is_some_and(|m| !m.uses_approvals)
    );
    assert!(
        probes.iter().all(|p| p["decision"] == json!("deny")
            && p["determining"] == json!(["never-isolate-tagged-hosts"])),
        "{probes:?}"
    );
    let host = resource_entity(&rec);
    assert!(
        host["attrs"]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("never-isolate")),
        "{host}"
    );
    assert_eq!(rec.body.data["determining"][0]["effect"], json!("forbid"));
    check_decisions_linked(&d, &case);

    // The same alert on an untagged host is isolated with one approver.
    let body = native(
        "ws-1",
        ("ps-dc", "Suspicious PowerShell on a server"),
        "critical",
        &["T1059.001"],
        &[("host", "ws-042")],
    );
    let (_, other) = post_ok(&d, "/v1/alerts", body).await;
    check(
        &d,
        &d.case(&other).await,
        "isolate_host",
        "ws-042",
        "one_approver",
        "awaiting_approval",
        &["isolate-host-one-approver"],
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_exfiltration_tiers() {
    let d = support::start().await;
    let (_, case_id) = post_ok(&d, "/v1/alerts/ocsf", support::fixture("ocsf.json")).await;
    let case = d.case(&case_id).await;
    check(
        &d,
        &case,
        "block_ioc",
        "domain:exfil.example",
        "one_approver",
        "awaiting_approval",
        &["block-ioc-one-approver"],
    );
    check(
        &d,
        &case,
        "isolate_host",
        "db-07",
        "one_approver",
        "awaiting_approval",
        &["isolate-host-one-approver"],
    );
    // The domain is in intel, but below the automatic threshold.
    let domain = resource_entity(&decision_of(
        &d,
        action(&case, "block_ioc", "domain:exfil.example"),
    ));
    assert_eq!(domain["attrs"]["intel_match"], json!(true));
    assert_eq!(domain["attrs"]["intel_confidence"], json!(60));
    let db = resource_entity(&decision_of(&d, action(&case, "isolate_host", "db-07")));
    assert_eq!(
        (
            db["attrs"]["criticality"].clone(),
            db["attrs"]["environment"].clone()
        ),
        (json!("critical"), json!("production"))
    );
    check_decisions_linked(&d, &case);
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_record_holds_everything_needed_to_replay() {
    let d = support::start().await;
    let (alert_id, case_id) =
        post_ok(&d, "/v1/alerts/elastic", support::fixture("elastic.json")).await;
    let case = d.case(&case_id).await;
    let isolate = action(&case, "isolate_host", "ws-042").clone();
    let action_id = isolate["action_id"].as_str().unwrap();

    // Found by its link to the action, and it is the one the action points at.
    let recs: Vec<AuditRecord> = d
        .audit()
        .into_iter()
        .filter(|r| {
            r.body.kind == "policy_decision" && r.body.action_id.as_deref() == Some(action_id)
        })
        .collect();
    assert_eq!(recs.len(), 1);
    // As stored, the request names the context its alert's steps share by hash: a
    // `decision_input` record of the same case, before it, holds it.
    let stored = &recs[0].body.data["request"];
    let context_ref = stored["context_ref"].as_str().expect("a shared context");
    assert!(stored["context"].get("alert").is_none(), "{stored}");
    let input = d
        .audit()
        .into_iter()
        .find(|r| r.body.kind == "decision_input" && r.body.data["hash"] == json!(context_ref))
        .expect("the shared context is recorded");
    assert!(input.body.seq < recs[0].body.seq);
    assert_eq!(input.body.case_id, recs[0].body.case_id);
    // Put back together, it is the whole request.
    let rec = &whole(&d, recs[0].body.seq);
    assert_eq!(isolate["decision_seq"], json!(rec.body.seq));
    assert_eq!(rec.body.case_id.as_deref(), Some(case_id.as_str()));
    assert_eq!(rec.body.alert_id.as_deref(), Some(alert_id.as_str()));
    let (s, by_id) = d.get(&format!("/v1/actions/{action_id}")).await;
    assert_eq!(s, 200);
    assert_eq!(by_id["decision_seq"], json!(rec.body.seq));
    let data = &rec.body.data;

    // The policy set that decided.
    let (_, ready) = d.get("/readyz").await;
    let hash = ready["policies"]["hash"].as_str().unwrap();
    assert_eq!(hash.len(), 64);
    assert_eq!(data["policy_hash"], json!(hash));
    assert_eq!(isolate["policy_hash"], json!(hash));

    // The request: principal, action, resource, context, entities.
    let req = &data["request"];
    assert_eq!(
        req["principal"],
        json!({"type": "Cordon::Playbook", "id": "malware_execution"})
    );
    assert_eq!(
        req["action"],
        json!({"type": "Cordon::Action", "id": "isolate_host"})
    );
    assert_eq!(
        req["resource"],
        json!({"type": "Cordon::Host", "id": "ws-042"})
    );
    let ctx = &req["context"];
    assert_eq!(ctx["alert"]["severity"], json!("high"));
    assert_eq!(ctx["alert"]["severity_id"], json!(4));
    assert_eq!(
        ctx["alert"]["rule_id"],
        json!("b7f1c2d3-4e5a-46b7-8c9d-0e1f2a3b4c5d")
    );
    assert_eq!(ctx["alert"]["source"], json!("elastic"));
    assert_eq!(ctx["case"]["id"], json!(case_id));
    assert_eq!(ctx["playbook"], json!("malware_execution"));
    assert_eq!(ctx["step"], json!("isolate"));
    assert_eq!(ctx["approvals"], json!(1), "the context as last probed");
    let entities = req["entities"].as_array().unwrap();
    assert!(!entities.is_empty());
    assert!(
        entities.iter().any(|e| e["uid"] == req["principal"]),
        "the principal entity is included: {entities:?}"
    );
    let host = resource_entity(rec);
    assert_eq!(host["attrs"]["criticality"], json!("medium"));
    assert_eq!(host["attrs"]["environment"], json!("corporate"));
    assert_eq!(host["attrs"]["owner"], json!("it-endpoint"));
    assert_eq!(host["attrs"]["tags"], json!(["workstation", "finance"]));
    assert_eq!(host["attrs"]["known"], json!(true));

    // One probe per approval count tried, each with its decision.
    let probes = data["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 2, "{probes:?}");
    assert_eq!(probes[0]["approvals"], json!(0));
    assert_eq!(probes[0]["decision"], json!("deny"));
    assert_eq!(probes[1]["approvals"], json!(1));
    assert_eq!(probes[1]["decision"], json!("allow"));
    assert_eq!(
        probes[1]["determining"],
        json!(["isolate-host-one-approver"])
    );
    assert!(
        probes.iter().all(|p| p["errors"] == json!([])),
        "{probes:?}"
    );

    // The outcome and why, traceable to the policy source.
    assert_eq!(data["tier"], json!("one_approver"));
    let det = data["determining"].as_array().unwrap();
    assert_eq!(det.len(), 1, "{det:?}");
    let reason = policy_reason(&d, "isolate-host-one-approver");
    assert_eq!(det[0]["id"], json!("isolate-host-one-approver"));
    assert_eq!(det[0]["effect"], json!("permit"));
    assert_eq!(det[0]["reason"], json!(reason));
    let file = det[0]["file"].as_str().unwrap();
    let line = det[0]["line"].as_u64().unwrap() as usize;
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("determining file {file}: {e}"));
    assert_eq!(
        text.lines().nth(line - 1).map(str::trim),
        Some("@id(\"isolate-host-one-approver\")"),
        "{file}:{line}"
    );
    assert_eq!(data["errors"], json!([]));
    assert_eq!(data["reasons"], json!([reason]));
    assert_eq!(data["approval_timeout_mins"], json!(60));

    // The action's transition cites the same record.
    let transition: Vec<AuditRecord> = d
        .audit()
        .into_iter()
        .filter(|r| {
            r.body.kind == "action_transition" && r.body.action_id.as_deref() == Some(action_id)
        })
        .collect();
    assert_eq!(transition.len(), 1);
    assert_eq!(transition[0].body.data["decision_seq"], json!(rec.body.seq));
    assert_eq!(transition[0].body.data["to"], json!("awaiting_approval"));
    assert!(transition[0].body.seq > rec.body.seq);
    check_decisions_linked(&d, &case);
    assert_eq!(d.stop().await, 0);
}
