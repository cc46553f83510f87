//! The executor fails closed against the fake vendors: refused credentials, a policy that
//! no longer allows an approved action, an outcome nobody can read back, alert data that tries to
//! move a request elsewhere, a vendor redirect — each ends without a (second) write and with an
//! escalation. Connector credentials never reach logs, the audit export or HTTP answers, and
//! every shipped connector file validates while broken ones are refused with file, key and
//! reason.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::fakes::crowdstrike::FakeCrowdStrike;
use crate::support::fakes::defender::FakeDefender;
use crate::support::fakes::entra::FakeEntra;
use crate::support::fakes::jira::FakeJira;
use crate::support::fakes::okta::FakeOkta;
use crate::support::fakes::thehive::FakeTheHive;
use crate::support::fakes::webhook::FakeWebhook;
use crate::support::fakes::{FakeServer, Fault, FaultKind};
use crate::support::live::{self, Vendors};
use crate::support::{self, TestDaemon};
use crate::support::{Daemon, cordon, run, text, write_config};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const MALWARE: &str = "Malware EncodedCommand";
const SPRAY: &str = "Password spray";

/// The CrowdStrike write (contain / lift) as the fake logs it.
const CS_WRITE: &str = "devices-actions";
/// The CrowdStrike state probe path.
const CS_PROBE: &str = "devices/entities/devices/v2";

/// Posts a malware alert on `host` and approves its isolation; returns the action id.
async fn approved_isolation(d: &TestDaemon, tag: &str, host: &str) -> String {
    let case_id =
        live::post_alert(d, live::alert(tag, MALWARE, &["T1059"], &[("host", host)])).await;
    let a = live::find_action(d, &case_id, "isolate_host", Some(&normalized("host", host))).await;
    let id = a["action_id"].as_str().unwrap().to_string();
    assert_eq!(a["state"], json!("awaiting_approval"), "{a}");
    live::approve_any(d, &id).await;
    id
}

/// Posts a password-spray alert on `user` and approves the session revocation (if it needs
/// approval); returns the action id.
async fn approved_revocation(d: &TestDaemon, tag: &str, user: &str) -> String {
    let case_id = live::post_alert(d, live::alert(tag, SPRAY, &["T1110"], &[("user", user)])).await;
    let a = live::find_action(
        d,
        &case_id,
        "revoke_sessions",
        Some(&normalized("user", user)),
    )
    .await;
    let id = a["action_id"].as_str().unwrap().to_string();
    if a["state"] == json!("awaiting_approval") {
        live::approve_any(d, &id).await;
    }
    id
}

/// Every audit record of `kind` (whatever the action), as (action id, data).
fn all_records(d: &TestDaemon, kind: &str) -> Vec<(String, Value)> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == kind)
        .map(|r| (r.body.action_id.clone().unwrap_or_default(), r.body.data))
        .collect()
}

/// The action's escalation records; asserts there is at least one.
fn escalations(d: &TestDaemon, id: &str) -> Vec<Value> {
    let e = live::records(d, "escalation", id);
    assert!(
        !e.is_empty(),
        "no escalation record for {id}; records: {:#?}",
        audit_trail(d, id)
    );
    e
}

/// The action's audit trail as (kind, data), for failure messages.
fn audit_trail(d: &TestDaemon, id: &str) -> Vec<(String, Value)> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.action_id.as_deref() == Some(id))
        .map(|r| (r.body.kind.clone(), r.body.data))
        .collect()
}

/// Appends TOML to a connector file of the workspace.
fn append_connector(root: &Path, name: &str, extra: &str) {
    let p = root.join("connectors").join(format!("{name}.toml"));
    let mut t = std::fs::read_to_string(&p).unwrap();
    t.push_str(extra);
    std::fs::write(&p, t).unwrap();
}

/// A loopback server that answers 404 to everything and logs what it gets: where a request
/// must never arrive.
async fn evil_server() -> FakeServer {
    FakeServer::start(axum::Router::new()).await
}

// ---------------------------------------------------------------------------------------------
// 1. Fail closed: authentication failures
// ---------------------------------------------------------------------------------------------

/// An approved isolation against a CrowdStrike that refuses the credentials (`forbid = false`:
/// the token endpoint answers 401) or the permission (`forbid = true`: 403 on the API).
async fn crowdstrike_auth_failure(forbid: bool) {
    let v = Vendors::start().await;
    v.cs.add_host("ws-auth", "aid-auth");
    if forbid {
        v.cs.forbid(true);
    } else {
        v.cs.fail_auth(true);
    }
    let d = live::start_live(&v, |_, _| {}).await;
    let id = approved_isolation(&d, "auth-cs", "ws-auth").await;
    let done = live::settled(&d, &id).await;
    assert_eq!(done["state"], json!("failed"), "{done:#}");
    let esc = escalations(&d, &id);
    let code = if forbid { "403" } else { "401" };
    assert!(
        esc.iter()
            .any(|e| e["reason"].as_str().is_some_and(|r| r.contains(code))),
        "the escalation does not say the vendor answered {code}: {esc:#?}"
    );
    // The failure path was really taken: cordon asked for a token.
    assert!(v.cs.log().count_matching("POST", "/oauth2/token") >= 1);
    assert_eq!(v.cs.effects().count_prefix("contain:"), 0);
    assert_eq!(v.cs.host_status("aid-auth"), "normal");
    assert_eq!(
        v.cs.log().count_matching("POST", CS_WRITE),
        0,
        "a write went out"
    );
    assert!(live::records(&d, "write_intent", &id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowdstrike_token_refused_fails_closed_without_a_write() {
    crowdstrike_auth_failure(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowdstrike_forbidden_fails_closed_without_a_write() {
    crowdstrike_auth_failure(true).await;
}

/// An approved session revocation against an Okta that answers 401 (`forbid = false`) or 403.
async fn okta_auth_failure(forbid: bool) {
    let v = Vendors::start().await;
    v.okta.add_user("carol@example.com", "00u-carol");
    if forbid {
        v.okta.forbid(true);
    } else {
        v.okta.fail_auth(true);
    }
    let d = live::start_live(&v, |_, _| {}).await;
    let id = approved_revocation(&d, "auth-okta", "carol@example.com").await;
    let done = live::settled(&d, &id).await;
    assert_eq!(done["state"], json!("failed"), "{done:#}");
    let esc = escalations(&d, &id);
    let code = if forbid { "403" } else { "401" };
    assert!(
        esc.iter()
            .any(|e| e["reason"].as_str().is_some_and(|r| r.contains(code))),
        "the escalation does not say the vendor answered {code}: {esc:#?}"
    );
    assert!(v.okta.log().count() >= 1, "Okta was never called");
    assert_eq!(v.okta.effects().total(), 0);
    assert_eq!(v.okta.session_clears("00u-carol"), 0);
    assert_eq!(
        v.okta.log().count_matching("DELETE", "/sessions"),
        0,
        "a write went out"
    );
    assert!(live::records(&d, "write_intent", &id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_unauthorized_fails_closed_without_a_write() {
    okta_auth_failure(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_forbidden_fails_closed_without_a_write() {
    okta_auth_failure(true).await;
}

/// A 401 on the write itself: one token refresh and one resend (a 401 was not processed), then
/// the action fails with an escalation; nothing was contained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowdstrike_write_refused_after_one_token_refresh_fails_closed() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-401", "aid-401");
    v.cs.faults()
        .arm(Fault::on("POST", CS_WRITE, FaultKind::Status(401)).times(10));
    let d = live::start_live(&v, |_, _| {}).await;
    let id = approved_isolation(&d, "auth-w", "ws-401").await;
    let done = live::settled(&d, &id).await;
    assert_eq!(done["state"], json!("failed"), "{done:#}");
    escalations(&d, &id);
    assert_eq!(
        v.cs.log().count_matching("POST", CS_WRITE),
        2,
        "expected the write, one token refresh and exactly one resend"
    );
    assert_eq!(v.cs.tokens_issued(), 2, "exactly one token refresh");
    assert_eq!(v.cs.effects().count_prefix("contain:"), 0);
    let results = live::records(&d, "write_result", &id);
    assert!(
        results.iter().any(|r| r["class"] == json!("auth_failed")),
        "{results:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Fail closed: the policy re-check right before execution
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_action_is_denied_when_the_policy_changed_before_execution() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-recheck", "aid-recheck");
    let root = tempfile::tempdir().unwrap();
    let mut cfg = support::workspace_at(root.path());
    v.wire(root.path(), true);

    // Decide and approve with the executor off: the action waits, approved.
    cfg.executor.enabled = false;
    let d = support::start_in(tempfile::tempdir().unwrap(), cfg.clone(), None).await;
    let id = approved_isolation(&d, "recheck-1", "ws-recheck").await;
    let (s, a) = d.get(&format!("/v1/actions/{id}")).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["state"], json!("approved"), "{a:#}");
    d.stop().await;

    // The policy changes: host isolation is now forbidden outright.
    let schema = std::fs::read_to_string(root.path().join("policies/cordon.cedarschema")).unwrap();
    assert!(
        schema.contains("namespace Cordon"),
        "schema namespace changed"
    );
    std::fs::write(
        root.path().join("policies/zz_forbid_isolation.cedar"),
        "@id(\"test-forbid-isolation\")\n\
         @reason(\"host isolation is suspended (test)\")\n\
         forbid (principal, action == Cordon::Action::\"isolate_host\", resource);\n",
    )
    .unwrap();

    // Restart on the same data dir with the executor on.
    cfg.executor.enabled = true;
    let d = support::start_in(tempfile::tempdir().unwrap(), cfg, None).await;
    let done = live::settled(&d, &id).await;
    assert_eq!(
        done["state"],
        json!("denied"),
        "{done:#}\n{:#?}",
        audit_trail(&d, &id)
    );
    let checks: Vec<Value> = live::records(&d, "policy_decision", &id)
        .into_iter()
        .filter(|r| r["phase"] == json!("pre_execution"))
        .collect();
    assert!(
        checks.iter().any(|r| r["allowed"] == json!(false)),
        "no pre-execution policy decision with allowed=false: {checks:#?}"
    );
    assert!(
        checks.iter().all(|r| r["allowed"] != json!(true)),
        "{checks:#?}"
    );
    escalations(&d, &id);
    assert!(live::records(&d, "execution_intent", &id).is_empty());
    assert!(live::records(&d, "write_intent", &id).is_empty());
    assert_eq!(
        v.cs.log().count(),
        0,
        "CrowdStrike was called: {:?}",
        v.cs.log().all()
    );
    assert_eq!(v.cs.effects().total(), 0);
    assert_eq!(v.cs.host_status("aid-recheck"), "normal");
    drop(root);
}

/// CrowdStrike faults that leave a contain's outcome unreadable: the first probe (before the
/// write) passes through untouched, the write meets `write_fault`, and every probe after it
/// answers 500.
fn arm_unreadable_outcome(v: &Vendors, write_fault: FaultKind) {
    v.cs.faults().arm(Fault::on(
        "GET",
        CS_PROBE,
        FaultKind::TimeoutAfterEffect(Duration::ZERO),
    ));
    v.cs.faults()
        .arm(Fault::on("GET", CS_PROBE, FaultKind::Status(500)).times(1000));
    v.cs.faults().arm(Fault::on("POST", CS_WRITE, write_fault));
}

/// A write is sent again only after a probe showed the earlier one had no effect, and only if
/// the policy in force still allows it. An isolation whose contain answered 503 and whose
/// probes then failed is left `unknown`; host isolation is then forbidden and the daemon restarted: the resumed run probes,
/// finds no effect, re-checks the policy (`pre_resend`), and ends `failed` with an escalation
/// instead of sending the contain again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_not_sent_again_once_the_policy_forbids_it() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-resend", "aid-resend");
    let root = tempfile::tempdir().unwrap();
    let mut cfg = support::workspace_at(root.path());
    v.wire(root.path(), true);
    append_connector(
        root.path(),
        "crowdstrike",
        "\n[circuit_breaker]\nfailures = 1000\nopen_secs = 1\n",
    );
    cfg.executor.enabled = true;
    // The contain answers 503 (it may or may not have landed): the outcome stays unknown.
    arm_unreadable_outcome(&v, FaultKind::Status(503));
    let d = support::start_in(tempfile::tempdir().unwrap(), cfg.clone(), None).await;
    let id = approved_isolation(&d, "resend-1", "ws-resend").await;
    let first = live::settled(&d, &id).await;
    assert_eq!(first["state"], json!("unknown"), "{first:#}");
    d.stop().await;
    v.cs.faults().disarm_all();
    let sent = v.cs.log().count_matching("POST", CS_WRITE);
    assert_eq!(sent, 1);

    std::fs::write(
        root.path().join("policies/zz_forbid_isolation.cedar"),
        "@id(\"test-forbid-isolation\")\n\
         @reason(\"host isolation is suspended (test)\")\n\
         forbid (principal, action == Cordon::Action::\"isolate_host\", resource);\n",
    )
    .unwrap();
    let d = support::start_in(tempfile::tempdir().unwrap(), cfg, None).await;
    let done = support::eventually(30, || async {
        let (_, a) = d.get(&format!("/v1/actions/{id}")).await;
        (a["state"] == json!("failed")).then_some(a)
    })
    .await;
    assert!(
        done["execution"]["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("not sent again")),
        "{done:#}"
    );
    let resend_checks: Vec<Value> = live::records(&d, "policy_decision", &id)
        .into_iter()
        .filter(|r| r["phase"] == json!("pre_resend"))
        .collect();
    assert!(
        resend_checks.iter().any(|r| r["allowed"] == json!(false)),
        "{resend_checks:#?}"
    );
    assert!(!escalations(&d, &id).is_empty());
    assert_eq!(
        v.cs.log().count_matching("POST", CS_WRITE),
        sent,
        "the contain was sent again"
    );
    assert_eq!(v.cs.host_status("aid-resend"), "normal");
    drop(root);
}

// ---------------------------------------------------------------------------------------------
// 3. Fail closed: an unknown outcome the probe cannot resolve
// ---------------------------------------------------------------------------------------------

/// A daemon whose CrowdStrike breaker does not open during a burst of failures (so the retry
/// budget, not a 30 s breaker pause, bounds the test) and which reconciles `unknown` actions
/// every second.
async fn start_for_unknown(v: &Vendors) -> TestDaemon {
    live::start_live(v, |cfg, root| {
        cfg.executor.reconcile_interval_secs = 1;
        append_connector(
            root,
            "crowdstrike",
            "\n[circuit_breaker]\nfailures = 1000\nopen_secs = 1\n",
        );
    })
    .await
}

/// After the action is `unknown`, waits for the periodic reconciliation to look at it again
/// (and give up again), so "no resend" also covers reconciliation.
async fn wait_for_reconciliation(d: &TestDaemon, id: &str) {
    support::eventually(20, || async {
        (!live::records(d, "reconcile_unresolved", id).is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_write_outcome_with_a_failing_probe_ends_unknown_without_a_resend() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-unk", "aid-unk");
    // The write's effect happens, then the connection is reset.
    arm_unreadable_outcome(&v, FaultKind::DropAfterEffect);
    let d = start_for_unknown(&v).await;
    let id = approved_isolation(&d, "unk-1", "ws-unk").await;
    let done = live::settled(&d, &id).await;
    assert_eq!(
        done["state"],
        json!("unknown"),
        "{done:#}\n{:#?}",
        audit_trail(&d, &id)
    );
    escalations(&d, &id);
    assert!(!live::records(&d, "outcome_unknown", &id).is_empty());
    // The pre-write probe read `normal`; the failing probes were really exercised afterwards.
    let probes = live::records(&d, "probe_result", &id);
    assert_eq!(probes.len(), 1, "{probes:#?}");
    assert_eq!(probes[0]["state"], json!("not_done"), "{probes:#?}");
    assert!(v.cs.log().count_matching("GET", CS_PROBE) > 2);
    assert_eq!(v.cs.effects().count("contain:aid-unk"), 1);
    assert_eq!(
        v.cs.log().count_matching("POST", CS_WRITE),
        1,
        "blind resend"
    );
    assert_eq!(live::records(&d, "write_intent", &id).len(), 1);

    // Reconciliation re-probes later; it must not resend either.
    wait_for_reconciliation(&d, &id).await;
    let (_, a) = d.get(&format!("/v1/actions/{id}")).await;
    assert_eq!(a["state"], json!("unknown"), "{a:#}");
    assert_eq!(
        v.cs.log().count_matching("POST", CS_WRITE),
        1,
        "resent on reconcile"
    );
    assert_eq!(v.cs.effects().count("contain:aid-unk"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_write_outcome_with_an_unmapped_state_ends_unknown_without_a_resend() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-weird", "aid-weird");
    // The write takes effect, but its answer is held back past cordon's 1.5 s timeout.
    v.cs.faults().arm(Fault::on(
        "POST",
        CS_WRITE,
        FaultKind::TimeoutAfterEffect(Duration::from_secs(6)),
    ));
    let d = start_for_unknown(&v).await;
    let id = approved_isolation(&d, "weird-1", "ws-weird").await;
    // While cordon waits for the answer, the host's state becomes one no probe list maps.
    support::eventually(20, || async {
        (v.cs.effects().count("contain:aid-weird") == 1).then_some(())
    })
    .await;
    v.cs.set_host_status("aid-weird", "weird");
    let done = live::settled(&d, &id).await;
    assert_eq!(
        done["state"],
        json!("unknown"),
        "{done:#}\n{:#?}",
        audit_trail(&d, &id)
    );
    escalations(&d, &id);
    assert!(!live::records(&d, "outcome_unknown", &id).is_empty());
    let probes = live::records(&d, "probe_result", &id);
    assert!(
        probes
            .iter()
            .any(|p| p["state"] == json!("ambiguous") && p["observed"] == json!("weird")),
        "{probes:#?}"
    );
    assert_eq!(
        v.cs.log().count_matching("POST", CS_WRITE),
        1,
        "blind resend"
    );
    assert_eq!(live::records(&d, "write_intent", &id).len(), 1);

    wait_for_reconciliation(&d, &id).await;
    assert_eq!(
        v.cs.log().count_matching("POST", CS_WRITE),
        1,
        "resent on reconcile"
    );
    assert_eq!(v.cs.effects().count("contain:aid-weird"), 1);
    assert_eq!(v.cs.host_status("aid-weird"), "weird");
}

// ---------------------------------------------------------------------------------------------
// 5. Connector credentials never leak
// ---------------------------------------------------------------------------------------------

const CANARY: &str = "CANARY-7f3a9c-SECRET";

fn canary(which: &str) -> String {
    format!("{CANARY}-{which}")
}

fn find(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_credentials_never_reach_logs_audit_or_http_answers() {
    let cs_secret = canary("cs");
    let okta_token = canary("okta");
    let jira_token = canary("jira");
    let hive_key = canary("hive");
    let jira_basic = support::auth::base64(&format!("{}:{jira_token}", live::JIRA_EMAIL));
    // Succeeds: CrowdStrike (OAuth2 client secret) and Jira (basic auth). Refused: Okta (SSWS
    // token) and TheHive (bearer key).
    let v = Vendors {
        cs: FakeCrowdStrike::start(live::CS_ID, &cs_secret).await,
        mde: FakeDefender::start(live::TENANT, live::MDE_ID, live::MDE_SECRET).await,
        okta: FakeOkta::start(&okta_token).await,
        entra: FakeEntra::start(live::TENANT, live::ENTRA_ID, live::ENTRA_SECRET).await,
        jira: FakeJira::start(live::JIRA_EMAIL, &jira_token).await,
        hive: FakeTheHive::start(&hive_key).await,
        hook: FakeWebhook::start(live::HOOK_TOKEN).await,
    };
    v.jira.add_project("SEC");
    v.okta.add_user("bob@example.com", "00u-bob");
    v.okta.fail_auth(true);
    v.hive.fail_auth(true);

    let (dir, _) = support::workspace();
    let root = dir.path();
    v.wire(root, true);
    for (var, value) in [
        ("CORDON_CROWDSTRIKE_CLIENT_SECRET", &cs_secret),
        ("CORDON_OKTA_API_TOKEN", &okta_token),
        ("CORDON_JIRA_API_TOKEN", &jira_token),
        ("CORDON_THEHIVE_API_KEY", &hive_key),
    ] {
        std::fs::write(root.join("secrets").join(var), value).unwrap();
    }
    let cfg = write_config(
        root,
        &format!(
            "[executor]\nenabled = true\n\n{}",
            support::enrichment_toml(root),
        ),
    );
    let mut d = Daemon::start(root, "canary", |c| {
        c.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "debug");
    })
    .await;
    let c = support::http_client();
    let mut bodies: Vec<(String, String)> = Vec::new();
    async fn call(
        bodies: &mut Vec<(String, String)>,
        what: String,
        rb: reqwest::RequestBuilder,
    ) -> (u16, Value) {
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let t = r.text().await.unwrap();
        bodies.push((what, t.clone()));
        (status, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    // Credential abuse on bob (intel-confirmed, so revocation is pre-approved) from a C2 IP
    // with high-confidence intel (so the block is automatic); malware on a host (TheHive
    // ticket, automatic).
    let spray = live::alert(
        "canary-1",
        SPRAY,
        &["T1110"],
        &[("user", "bob@example.com"), ("ip", "203.0.113.77")],
    );
    let malware = live::alert("canary-2", MALWARE, &["T1059"], &[("host", "ws-canary")]);
    let mut case_ids = Vec::new();
    for (i, body) in [spray, malware].into_iter().enumerate() {
        let (s, ack) = call(
            &mut bodies,
            format!("ingest {i}"),
            c.post(format!("{}/v1/alerts", d.base)).body(body),
        )
        .await;
        assert_eq!(s, 202, "{ack}");
        case_ids.push(ack["case_id"].as_str().unwrap().to_string());
    }
    let mut actions = Vec::new();
    for case_id in &case_ids {
        let (s, case) = call(
            &mut bodies,
            format!("case {case_id}"),
            c.get(format!("{}/v1/cases/{case_id}", d.base)),
        )
        .await;
        assert_eq!(s, 200, "{case}");
        for a in case["actions"].as_array().unwrap() {
            actions.push((
                a["action_id"].as_str().unwrap().to_string(),
                a["kind"].as_str().unwrap().to_string(),
                a["connector"].as_str().unwrap().to_string(),
            ));
        }
    }
    let expected = [
        ("create_ticket", "jira", "succeeded"),
        ("block_ioc", "crowdstrike", "succeeded"),
        ("revoke_sessions", "okta", "failed"),
        ("create_ticket", "thehive", "failed"),
    ];
    for (kind, connector, want) in expected {
        let (id, _, _) = actions
            .iter()
            .find(|(_, k, c)| k == kind && c == connector)
            .unwrap_or_else(|| panic!("no {kind} on {connector}: {actions:?}"));
        let url = format!("{}/v1/actions/{id}", d.base);
        let a = support::eventually(30, || async {
            let r = c.get(&url).send().await.ok()?;
            let a: Value = r.json().await.ok()?;
            live::TERMINAL
                .contains(&a["state"].as_str().unwrap_or(""))
                .then_some(a)
        })
        .await;
        let (_, a2) = call(&mut bodies, format!("action {id}"), c.get(&url)).await;
        assert_eq!(a["state"], json!(want), "{kind} on {connector}: {a:#}");
        assert_eq!(a2["state"], a["state"]);
    }
    // Some refusals, for their error bodies.
    for (what, rb) in [
        (
            "unknown action",
            c.get(format!("{}/v1/actions/no-such-action", d.base)),
        ),
        (
            "unknown case",
            c.get(format!("{}/v1/cases/no-such-case", d.base)),
        ),
        (
            "malformed alert",
            c.post(format!("{}/v1/alerts", d.base)).body("{not json"),
        ),
    ] {
        let (s, b) = call(&mut bodies, what.to_string(), rb).await;
        assert!(s >= 400, "{what}: {s} {b}");
    }

    let status = d.terminate().await;
    let logs = d.logs();
    assert_eq!(status.code(), Some(0), "{logs}");

    // The fakes did receive the credentials: the check below is not vacuous.
    assert!(
        v.cs.log().contains_text(&cs_secret),
        "CrowdStrike never got the secret"
    );
    assert!(
        v.okta.log().contains_text(&okta_token),
        "Okta never got the token"
    );
    assert!(
        v.jira.log().contains_text(&jira_basic),
        "Jira never got basic auth"
    );
    assert!(
        v.hive.log().contains_text(&hive_key),
        "TheHive never got the key"
    );
    assert_eq!(v.cs.effects().count_prefix("ioc_create:"), 1);
    assert_eq!(v.jira.issues().len(), 1);

    let needles = [
        CANARY.to_string(),
        cs_secret.clone(),
        okta_token.clone(),
        jira_token.clone(),
        hive_key.clone(),
        jira_basic.clone(),
    ];
    let clean = |what: &str, hay: &[u8]| {
        for n in &needles {
            assert!(!find(hay, n), "{what} contains the credential {n:?}");
        }
    };
    assert!(
        logs.contains("DEBUG"),
        "RUST_LOG=debug did not take effect:\n{logs}"
    );
    assert!(
        logs.contains("escalation"),
        "the auth failures were not logged, the log check proves little:\n{logs}"
    );
    clean("the daemon's stdout/stderr", logs.as_bytes());
    for (what, body) in &bodies {
        clean(&format!("the HTTP answer to {what}"), body.as_bytes());
    }

    let mut ex = cordon();
    ex.args(["audit", "export", "--data-dir"])
        .arg(root.join("data"));
    let out = run(ex);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let export = text(&out.stdout);
    assert!(
        export.contains("vendor_exchange") && export.contains("auth_failed"),
        "the export lacks the exchanges, the check proves little"
    );
    clean("the audit export", export.as_bytes());
    clean("the audit export's stderr", &out.stderr);
    let mut raw = Vec::new();
    for f in files(&root.join("data")) {
        let bytes = std::fs::read(&f).unwrap();
        clean(&format!("store file {}", f.display()), &bytes);
        raw.extend(bytes);
    }
    assert!(
        find(&raw, "ws-canary"),
        "the raw store scan cannot see stored strings"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Alert data cannot change where a request goes
// ---------------------------------------------------------------------------------------------

/// The entity value as cordon normalizes it (host: lower-case, no trailing dot; user:
/// lower-case after the last backslash).
fn normalized(kind: &str, raw: &str) -> String {
    match kind {
        "host" => raw.trim_end_matches('.').to_ascii_lowercase(),
        _ => raw.rsplit('\\').next().unwrap().to_lowercase(),
    }
}

fn has_forbidden(v: &str) -> bool {
    v.chars()
        .any(|c| c.is_control() || matches!(c, '\'' | '"' | '\\'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_data_cannot_move_requests_to_another_destination() {
    let v = Vendors::start().await;
    let evil = evil_server().await;
    let ep = evil.addr.port();
    let cs_port = v.cs.server.addr.port();
    let okta_port = v.okta.server.addr.port();
    let d = live::start_live(&v, |_, _| {}).await;

    // (entity kind, raw value); every one is unknown to the vendor or refused.
    let hosts = [
        "evil.example/..".to_string(),
        format!("127.0.0.1:{ep}"),
        format!("x@127.0.0.1:{ep}/devices"),
        format!("http://127.0.0.1:{ep}/"),
        "a'b".to_string(),
        "../../admin".to_string(),
    ];
    let users = [
        format!("x@127.0.0.1:{ep}"),
        "../../admin".to_string(),
        "..".to_string(),
        "a'b".to_string(),
        "x?y=1#frag".to_string(),
        "%2e%2e%2fadmin".to_string(),
        "a\"b".to_string(),
    ];
    let mut cases: Vec<(&str, String, String)> = Vec::new(); // (connector, value, action id)
    for (i, h) in hosts.iter().enumerate() {
        let id = approved_isolation(&d, &format!("dest-h{i}"), h).await;
        cases.push(("crowdstrike", normalized("host", h), id));
    }
    for (i, u) in users.iter().enumerate() {
        let id = approved_revocation(&d, &format!("dest-u{i}"), u).await;
        cases.push(("okta", normalized("user", u), id));
    }

    let mut problems = Vec::new();
    for (connector, value, id) in &cases {
        let done = live::settled(&d, id).await;
        let what = format!("{connector} target {value:?} ({id})");
        if done["state"] != json!("failed") {
            problems.push(format!("{what}: ended {} not failed", done["state"]));
        }
        assert_eq!(done["target"]["id"], json!(value), "{done}");
        if live::records(&d, "escalation", id).is_empty() {
            problems.push(format!("{what}: no escalation"));
        }
        if !live::records(&d, "write_intent", id).is_empty() {
            problems.push(format!("{what}: a write was attempted"));
        }
        let ex = live::records(&d, "vendor_exchange", id);
        if has_forbidden(value) && !ex.is_empty() {
            problems.push(format!(
                "{what}: a value with a quote was sent instead of refused: {ex:#?}"
            ));
        }
        let prefix = match *connector {
            "crowdstrike" => "/devices/queries/devices/v1?filter=hostname:",
            _ => "/api/v1/users/",
        };
        for e in &ex {
            if e["host"] != json!("127.0.0.1") {
                problems.push(format!("{what}: exchange to host {}", e["host"]));
            }
            let path = e["path"].as_str().unwrap_or("");
            if e["phase"] == json!("resolve") {
                let expected = match *connector {
                    "crowdstrike" => format!("{prefix}%27{}%27", support::fakes::enc(value)),
                    _ => format!("{prefix}{}", support::fakes::enc(value)),
                };
                if path != expected {
                    problems.push(format!(
                        "{what}: resolve went to path {path:?}, expected {expected:?} (the value confined to its place, percent-encoded)"
                    ));
                }
            } else if !path.starts_with(prefix) {
                problems.push(format!("{what}: {} exchange to path {path:?}", e["phase"]));
            }
        }
    }
    // Every exchange cordon recorded for a connector arrived at that connector's fake, on its
    // configured port (token requests are not exchanges of their own).
    for (connector, fake_port, log) in [
        ("crowdstrike", cs_port, v.cs.log()),
        ("okta", okta_port, v.okta.log()),
    ] {
        let recorded = all_records(&d, "vendor_exchange")
            .into_iter()
            .filter(|(_, r)| r["connector"] == json!(connector))
            .count();
        let received = log.count() - log.count_matching("POST", "/oauth2/token");
        if recorded != received {
            problems.push(format!(
                "{connector}: {recorded} exchanges recorded, but the fake on 127.0.0.1:{fake_port} received {received}"
            ));
        }
    }
    assert_eq!(
        evil.log.count(),
        0,
        "the evil server was reached: {:#?}",
        evil.log.all()
    );
    assert_eq!(v.cs.log().count_matching("POST", CS_WRITE), 0);
    assert_eq!(v.cs.effects().total(), 0);
    assert_eq!(v.okta.log().count_matching("DELETE", ""), 0);
    assert_eq!(v.okta.effects().total(), 0);
    for q in ["a'b", "a%27b", "a\"b", "a%22b"] {
        assert!(
            !v.cs.log().contains_text(q) && !v.okta.log().contains_text(q),
            "a value with a quote reached a vendor: {q}"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_redirects_are_never_followed() {
    let v = Vendors::start().await;
    let evil = evil_server().await;
    v.cs.add_host("ws-redir-write", "aid-redir-write");
    v.cs.add_host("ws-redir-resolve", "aid-redir-resolve");
    // A 307 on the write (which would repeat the POST with its body at the new place) and a 302
    // on the host lookup.
    v.cs.faults().arm(Fault::on(
        "POST",
        CS_WRITE,
        FaultKind::Redirect {
            status: 307,
            location: format!(
                "{}/devices/entities/devices-actions/v2?action_name=contain",
                evil.url()
            ),
        },
    ));
    v.cs.faults().arm(Fault::on(
        "GET",
        "ws-redir-resolve",
        FaultKind::Redirect {
            status: 302,
            location: format!("{}/devices/queries/devices/v1", evil.url()),
        },
    ));
    let d = live::start_live(&v, |_, _| {}).await;

    let write = approved_isolation(&d, "redir-w", "ws-redir-write").await;
    let done = live::settled(&d, &write).await;
    assert!(
        ["unknown", "failed"].contains(&done["state"].as_str().unwrap()),
        "{done:#}"
    );
    escalations(&d, &write);
    let ex = live::records(&d, "vendor_exchange", &write);
    assert!(
        ex.iter().any(|e| e["phase"] == json!("write")
            && e["outcome"] == json!("redirect_refused")
            && e["status"] == json!(307)),
        "{ex:#?}"
    );
    assert_eq!(v.cs.log().count_matching("POST", CS_WRITE), 1, "resent");

    let resolve = approved_isolation(&d, "redir-r", "ws-redir-resolve").await;
    let done = live::settled(&d, &resolve).await;
    assert_eq!(done["state"], json!("failed"), "{done:#}");
    escalations(&d, &resolve);
    let ex = live::records(&d, "vendor_exchange", &resolve);
    assert!(
        ex.iter().any(|e| e["phase"] == json!("resolve")
            && e["outcome"] == json!("redirect_refused")
            && e["status"] == json!(302)),
        "{ex:#?}"
    );
    assert!(live::records(&d, "write_intent", &resolve).is_empty());

    assert_eq!(
        evil.log.count(),
        0,
        "a redirect was followed: {:#?}",
        evil.log.all()
    );
    assert_eq!(v.cs.effects().total(), 0);
    assert_eq!(v.cs.log().count_matching("POST", CS_WRITE), 1);
}

// ---------------------------------------------------------------------------------------------
// 7. Connector files
// ---------------------------------------------------------------------------------------------

fn check(root: &Path, cfg: &Path, env: &[(String, String)]) -> std::process::Output {
    let mut c = cordon();
    c.arg("check").arg("--config").arg(cfg).current_dir(root);
    for (k, v) in env {
        c.env(k, v);
    }
    run(c)
}

/// Every `{ env = "NAME" }` in `text`.
fn env_refs(text: &str) -> Vec<String> {
    text.match_indices("{ env = \"")
        .map(|(i, m)| {
            let rest = &text[i + m.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

#[test]
fn every_shipped_connector_file_validates_dry_run_and_live() {
    let shipped: Vec<_> = std::fs::read_dir(support::repo().join("connectors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    assert!(shipped.len() >= 7, "{shipped:?}");

    // As shipped (dry run).
    let (dir, _) = support::workspace();
    let cfg = write_config(dir.path(), "");
    let out = check(dir.path(), &cfg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{} connector(s)", shipped.len())),
        "{stdout}"
    );

    // Live, with every secret reference resolvable: the runtime side validates too.
    let (dir, _) = support::workspace();
    let mut env = Vec::new();
    for p in &shipped {
        let name = p.file_name().unwrap();
        let t = std::fs::read_to_string(p).unwrap();
        assert!(t.contains("\nmode = \"dry_run\""), "{}", p.display());
        for var in env_refs(&t) {
            env.push((var.clone(), format!("test-value-for-{var}")));
        }
        std::fs::write(
            dir.path().join("connectors").join(name),
            t.replace("\nmode = \"dry_run\"", "\nmode = \"live\""),
        )
        .unwrap();
    }
    assert!(!env.is_empty());
    let cfg = write_config(dir.path(), "");
    let out = check(dir.path(), &cfg, &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{} connector(s)", shipped.len())),
        "{}",
        text(&out.stdout)
    );
    // And the secrets are required in live mode: without them, check refuses.
    let out = check(dir.path(), &cfg, &[]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("auth."), "{stderr}");
}

#[test]
fn broken_connector_files_are_refused_with_file_key_and_reason() {
    let (dir, _) = support::workspace();
    let root = dir.path();
    let conn = root.join("connectors");
    let okta = std::fs::read_to_string(conn.join("okta.toml")).unwrap();
    let jira = std::fs::read_to_string(conn.join("jira.toml")).unwrap();

    // An unknown key in an action table.
    let anchor = "[actions.revoke_sessions]\n";
    assert!(okta.contains(anchor));
    let unknown = okta.replace(anchor, &format!("{anchor}resend_saf = true\n"));
    let unknown_line = unknown
        .lines()
        .position(|l| l.starts_with("resend_saf"))
        .unwrap()
        + 1;
    let unknown_file = conn.join("zz_unknown_key.toml");
    std::fs::write(&unknown_file, &unknown).unwrap();

    // An unknown key inside a request table.
    let anchor = "[actions.revoke_sessions.request]\n";
    assert!(okta.contains(anchor));
    let file = conn.join("zz_unknown_request_key.toml");
    std::fs::write(
        &file,
        okta.replace(anchor, &format!("{anchor}header = {{ X-A = \"b\" }}\n")),
    )
    .unwrap();
    let unknown_req_file = file;

    // A base_url with a template: the destination would depend on data.
    let templated = okta
        .lines()
        .map(|l| {
            if l.starts_with("base_url = ") {
                "base_url = \"https://{param.tenant}.okta.com\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let template_file = conn.join("zz_templated_base.toml");
    std::fs::write(&template_file, templated).unwrap();

    // A non-idempotent create whose declared idempotency slot never receives the key.
    let old = "labels = [\"cordon\", \"{idempotency_label}\"]";
    assert!(jira.contains(old));
    let slot_file = conn.join("zz_no_slot.toml");
    std::fs::write(&slot_file, jira.replace(old, "labels = [\"cordon\"]")).unwrap();

    let cfg = write_config(root, "");
    let out = check(root, &cfg, &[]);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{}{stderr}", text(&out.stdout));
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(!root.join("data").exists(), "check opened the store");
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    let named = |file: &Path, parts: &[&str]| {
        lines.iter().any(|l| {
            l.starts_with(&format!("{}:", file.display())) && parts.iter().all(|p| l.contains(p))
        })
    };
    assert!(
        named(
            &unknown_file,
            &[
                &format!("line {unknown_line}"),
                "resend_saf",
                "unknown field"
            ]
        ),
        "unknown key not reported with file, line and reason:\n{stderr}"
    );
    assert!(
        named(&unknown_req_file, &["header", "unknown field"]),
        "unknown key in a request table not reported:\n{stderr}"
    );
    assert!(
        named(&template_file, &["base_url", "template"]),
        "templated base_url not reported:\n{stderr}"
    );
    assert!(
        named(
            &slot_file,
            &[
                "actions.create_ticket.idempotency_slot",
                "body:/fields/labels",
                "does not receive"
            ]
        ),
        "idempotency slot not reported:\n{stderr}"
    );
    // The shipped files beside them are fine and not reported.
    for shipped in ["okta.toml", "jira.toml", "crowdstrike.toml"] {
        let p = conn.join(shipped);
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with(&format!("{}:", p.display()))),
            "{shipped} reported:\n{stderr}"
        );
    }
}

/// Posts a malware alert naming `entity`, approves its `block_ioc` if it waits, and waits for
/// it to settle: its id and the settled action.
async fn settled_block(d: &TestDaemon, tag: &str, entity: (&str, &str)) -> (String, Value) {
    let case_id = live::post_alert(d, live::alert(tag, MALWARE, &["T1059"], &[entity])).await;
    let block = live::find_action(d, &case_id, "block_ioc", None).await;
    let id = block["action_id"].as_str().unwrap().to_string();
    if block["state"] == json!("awaiting_approval") {
        live::approve_any(d, &id).await;
    }
    let done = live::settled(d, &id).await;
    (id, done)
}

/// Someone else's indicator is never overwritten or deleted. A Defender indicator of the value
/// with another action (an admin's `Allowed`) makes a block refuse and escalate with nothing
/// sent (the block is an upsert and would overwrite it). A CrowdStrike `prevent` indicator
/// someone else made counts as blocked (nothing sent), and that block cannot be undone: cordon
/// sent nothing, so there is nothing of its own to undo (the engine refuses the rollback; the
/// connector's unblock would also refuse to delete an indicator that is not cordon's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_indicator_is_never_overwritten_or_deleted() {
    use cordon::engine::{ExecOp, ExecReply};
    let v = Vendors::start().await;
    let ip = "192.0.2.77";
    v.mde.seed_indicator(ip, "IpAddress", "Allowed");
    let hash = "ab".repeat(32);
    v.cs.seed_ioc("sha256", &hash, "prevent");
    let d = live::start_live(&v, |_, _| {}).await;

    let (_, done) = settled_block(&d, "own-mde", ("ip", ip)).await;
    assert_eq!(done["state"], json!("failed"), "{done}");
    assert!(
        done["execution"]["escalation"]
            .as_str()
            .is_some_and(|e| e.contains("Allowed")),
        "{done}"
    );
    assert_eq!(v.mde.log().count_matching("POST", "/api/indicators"), 0);
    let ind = v.mde.indicators();
    assert_eq!(ind.len(), 1, "{ind:?}");
    assert_eq!(ind[0]["action"], json!("Allowed"), "{ind:?}");

    let (block_id, done) = settled_block(&d, "own-cs", ("file_hash", &hash)).await;
    assert_eq!(done["state"], json!("succeeded"), "{done}");
    assert_eq!(
        v.cs.log()
            .count_matching("POST", "/iocs/entities/indicators/v1"),
        0
    );
    let reply = d
        .running()
        .engine
        .exec(ExecOp::Rollback {
            action_id: block_id.clone(),
            user: "carol".into(),
            reason: "false positive".into(),
        })
        .await
        .unwrap();
    let ExecReply::Refused(why) = reply else {
        panic!("the rollback of a block cordon did not make was not refused: {reply:?}")
    };
    assert!(why.contains("sent nothing"), "{why}");
    let block = live::settled(&d, &block_id).await;
    assert_eq!(block["rolled_back_by"], json!(null), "{block}");
    assert_eq!(
        v.cs.log()
            .count_matching("DELETE", "/iocs/entities/indicators/v1"),
        0
    );
    assert!(
        v.cs.iocs().iter().any(|i| i["value"] == json!(hash)),
        "the analyst's indicator was deleted"
    );
    assert_eq!(d.stop().await, 0);
}
