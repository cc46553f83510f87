//! Every shipped connector under injected faults: a 500, a 429 with `Retry-After`, a 429 with the
//! vendor's epoch rate-limit header, a timeout after the effect was applied, a connection reset
//! before the effect, and a connection reset after it. Each scenario runs against the
//! connector's main write with a fresh target, and must end `succeeded` with exactly one effect
//! for its idempotency key, the fault having fired, and the audit trail showing the path cordon
//! took (retry after the vendor's wait, probe-resolved unknown outcome, resend only when the
//! probe shows nothing happened). Also: completion polling of the asynchronous connectors, and
//! the circuit breaker holding requests back from a failing vendor.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::fakes::{Fault, FaultKind, Faults, RequestLog};
use crate::support::live::{self, Vendors};
use crate::support::{self, TestDaemon};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// The six faults, in the order they run. `epoch_header` is the vendor's own epoch header.
fn six_faults(epoch_header: &'static str) -> Vec<FaultKind> {
    vec![
        FaultKind::Status(500),
        FaultKind::RetryAfter(1),
        FaultKind::EpochHeader {
            header: epoch_header,
            secs_from_now: 1,
        },
        FaultKind::TimeoutAfterEffect(Duration::from_secs(3)),
        FaultKind::DropBeforeEffect,
        FaultKind::DropAfterEffect,
    ]
}

fn fault_name(f: &FaultKind) -> String {
    match f {
        FaultKind::Status(s) => format!("status {s}"),
        FaultKind::RetryAfter(s) => format!("429 Retry-After {s}"),
        FaultKind::EpochHeader { header, .. } => format!("429 {header}"),
        FaultKind::TimeoutAfterEffect(_) => "timeout after effect".into(),
        FaultKind::DropBeforeEffect => "reset before effect".into(),
        FaultKind::DropAfterEffect => "reset after effect".into(),
        other => format!("{other:?}"),
    }
}

/// Collects failed expectations so every scenario of a test runs and all failures are reported
/// together.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }
    fn eq<T: PartialEq + std::fmt::Debug>(
        &mut self,
        got: T,
        want: T,
        what: impl FnOnce() -> String,
    ) {
        if got != want {
            self.0
                .push(format!("{}: got {got:?}, want {want:?}", what()));
        }
    }
    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} failed expectation(s):\n\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}

/// Every audit record about the action, one line each (vendor exchanges condensed).
fn evidence(d: &TestDaemon, id: &str) -> String {
    let mut out = Vec::new();
    for r in d.audit() {
        // The decision records are long and not about the execution path.
        if r.body.action_id.as_deref() != Some(id)
            || ["action_proposed", "policy_decision", "vote"].contains(&r.body.kind.as_str())
        {
            continue;
        }
        let x = &r.body.data;
        let line = if r.body.kind == "vendor_exchange" {
            format!(
                "vendor_exchange phase={} {} {} status={} outcome={} error={}",
                x["phase"], x["method"], x["path"], x["status"], x["outcome"], x["error"]
            )
        } else {
            let mut s = x.to_string();
            if s.len() > 400 {
                s.truncate(400);
                s.push('…');
            }
            format!("{} {s}", r.body.kind)
        };
        out.push(format!("    {line}"));
    }
    out.join("\n")
}

/// The action of `kind` in the case (on `target`: the target id itself or `<kind>:<target>`),
/// once the policy decided it.
async fn action_in_case(d: &TestDaemon, case_id: &str, kind: &str, target: Option<&str>) -> Value {
    support::eventually(10, || async {
        let case = d.case(case_id).await;
        case["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| {
                a["kind"] == json!(kind)
                    && target.is_none_or(|t| {
                        let id = a["target"]["id"].as_str().unwrap_or("");
                        id == t || id.ends_with(&format!(":{t}"))
                    })
                    && a["state"] != json!("proposed")
            })
            .cloned()
    })
    .await
}

/// Posts the alert, approves the action if it waits for a person, and waits until it settles.
async fn drive(d: &TestDaemon, alert: String, kind: &str, target: Option<&str>) -> (String, Value) {
    let case_id = live::post_alert(d, alert).await;
    let a = action_in_case(d, &case_id, kind, target).await;
    let id = a["action_id"].as_str().unwrap().to_string();
    if a["state"] == json!("awaiting_approval") {
        live::approve_any(d, &id).await;
    }
    let done = live::settled(d, &id).await;
    (id, done)
}

/// One fault scenario against a connector's write.
struct Scenario {
    /// For messages: connector, action and fault.
    label: String,
    fault: FaultKind,
    /// The write request: method and a fragment of "path?query" unique to it.
    method: &'static str,
    path: String,
    alert: String,
    kind: &'static str,
    target: Option<String>,
}

/// Runs one scenario: arms the fault on the write, drives the alert to a settled action, and
/// checks the final state, that the fault fired, and the evidence of the path taken. Returns the
/// action id and the settled action for the caller's effect checks.
async fn run(
    d: &TestDaemon,
    faults: &Faults,
    log: &RequestLog,
    s: Scenario,
    c: &mut Checks,
) -> (String, Value) {
    let fired = faults.fired();
    let sent_before = log.count_matching(s.method, &s.path);
    faults.arm(Fault::on(s.method, &s.path, s.fault.clone()));
    let (id, done) = drive(d, s.alert.clone(), s.kind, s.target.as_deref()).await;
    let label = &s.label;
    let trail = || evidence(d, &id);
    c.check(done["state"] == json!("succeeded"), || {
        format!(
            "[{label}] final state {} (outcome {}, escalation {}), want succeeded; evidence:\n{}",
            done["state"],
            done["execution"]["outcome"],
            done["execution"]["escalation"],
            trail()
        )
    });
    c.eq(faults.fired(), fired + 1, || {
        format!("[{label}] the fault must have fired exactly once")
    });
    c.eq(faults.armed(), 0, || {
        format!("[{label}] the armed fault was not consumed")
    });
    faults.disarm_all();
    let at_vendor = (log.count_matching(s.method, &s.path) - sent_before) as u64;
    // Shown only when the test fails (or with --nocapture).
    eprintln!("[{label}] {}:\n{}", done["state"], trail());
    check_path(d, &id, &s, &done, at_vendor, c);
    (id, done)
}

/// The evidence each fault must leave.
fn check_path(
    d: &TestDaemon,
    id: &str,
    s: &Scenario,
    done: &Value,
    at_vendor: u64,
    c: &mut Checks,
) {
    let label = &s.label;
    let trail = || evidence(d, id);
    let writes_sent = done["execution"]["writes_sent"].as_u64();
    let unknown = live::records(d, "outcome_unknown", id);
    let reconciled = live::records(d, "reconciled", id);
    let retries: Vec<Value> = live::records(d, "retry", id)
        .into_iter()
        .filter(|r| r["phase"] == json!("write"))
        .collect();
    let writes: Vec<Value> = live::records(d, "vendor_exchange", id)
        .into_iter()
        .filter(|r| r["phase"] == json!("write"))
        .collect();
    let write_intents = live::records(d, "write_intent", id).len() as u64;
    c.eq(writes_sent, Some(at_vendor), || {
        format!("[{label}] execution.writes_sent vs write requests the vendor received")
    });
    c.eq(write_intents, at_vendor, || {
        format!("[{label}] write_intent records vs write requests the vendor received")
    });
    c.eq(writes.len() as u64, at_vendor, || {
        format!("[{label}] write vendor_exchange records vs write requests the vendor received")
    });
    let first = writes.first().cloned().unwrap_or(Value::Null);
    // (writes sent, outcome_unknown records, reconciled records)
    let (want_writes, want_unknown, want_reconciled) = match &s.fault {
        FaultKind::Status(code) => {
            c.check(
                first["status"] == json!(code) && first["outcome"] == json!("answered"),
                || format!("[{label}] first write should be answered {code}: {first}"),
            );
            (2, 1, 1)
        }
        FaultKind::RetryAfter(secs) => {
            c.check(first["status"] == json!(429), || {
                format!("[{label}] first write should be answered 429: {first}")
            });
            c.eq(retries.len(), 1, || {
                format!("[{label}] write retries; evidence:\n{}", trail())
            });
            if let Some(r) = retries.first() {
                let asked = r["vendor_asked_ms"].as_u64().unwrap_or(0);
                let waited = r["wait_ms"].as_u64().unwrap_or(0);
                c.check(asked >= secs * 1000 - 100, || {
                    format!("[{label}] Retry-After {secs} not honoured: retry record {r}")
                });
                c.check(waited >= asked, || {
                    format!("[{label}] waited less than the vendor asked: {r}")
                });
                c.check(
                    r["reason"].as_str().is_some_and(|x| x.contains("429")),
                    || format!("[{label}] retry reason should name the 429: {r}"),
                );
            }
            (2, 0, 0)
        }
        FaultKind::EpochHeader {
            header,
            secs_from_now,
        } => {
            c.check(first["status"] == json!(429), || {
                format!("[{label}] first write should be answered 429: {first}")
            });
            c.eq(retries.len(), 1, || {
                format!("[{label}] write retries; evidence:\n{}", trail())
            });
            if let Some(r) = retries.first() {
                // The header holds a whole epoch second `now + secs_from_now`, so the wait is at
                // most that long; without reading the header there is no vendor wait at all.
                let asked = r["vendor_asked_ms"].as_u64();
                let waited = r["wait_ms"].as_u64().unwrap_or(0);
                c.check(
                    asked.is_some_and(|a| a <= secs_from_now * 1000 + 100),
                    || format!("[{label}] {header} (epoch) not read as the wait: retry record {r}"),
                );
                c.check(waited >= asked.unwrap_or(u64::MAX), || {
                    format!("[{label}] waited less than the vendor asked: {r}")
                });
            }
            (2, 0, 0)
        }
        FaultKind::TimeoutAfterEffect(_) => {
            c.check(
                first["outcome"] == json!("unknown")
                    && first["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("timed out")),
                || format!("[{label}] first write should have timed out: {first}"),
            );
            (1, 1, 0)
        }
        FaultKind::DropBeforeEffect => {
            c.check(first["outcome"] == json!("unknown"), || {
                format!("[{label}] a reset after sending should make the outcome unknown: {first}")
            });
            (2, 1, 1)
        }
        FaultKind::DropAfterEffect => {
            c.check(first["outcome"] == json!("unknown"), || {
                format!("[{label}] a reset after sending should make the outcome unknown: {first}")
            });
            (1, 1, 0)
        }
        other => panic!("[{label}] no expectations written for {other:?}"),
    };
    c.eq(writes_sent, Some(want_writes), || {
        format!("[{label}] execution.writes_sent; evidence:\n{}", trail())
    });
    c.eq(unknown.len(), want_unknown, || {
        format!("[{label}] outcome_unknown records; evidence:\n{}", trail())
    });
    c.eq(reconciled.len(), want_reconciled, || {
        format!("[{label}] reconciled records; evidence:\n{}", trail())
    });
    if want_unknown > 0 {
        // The unknown outcome was resolved by a probe taken after it, not by a blind resend.
        let after_unknown = d
            .audit()
            .into_iter()
            .filter(|r| r.body.action_id.as_deref() == Some(id))
            .map(|r| r.body.kind)
            .skip_while(|k| k != "outcome_unknown")
            .any(|k| k == "probe_result");
        c.check(after_unknown, || {
            format!(
                "[{label}] no probe after the unknown outcome; evidence:\n{}",
                trail()
            )
        });
    }
}

// ---------------------------------------------------------------------------------------------
// One test per shipped connector
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowdstrike_containment_and_ioc_survive_every_fault() {
    let v = Vendors::start().await;
    let d = live::start_live(&v, |_, _| {}).await;
    let mut c = Checks::default();
    for (i, fault) in six_faults("X-Ratelimit-Retryafter").into_iter().enumerate() {
        let host = format!("cf-cs-{i}");
        let aid = format!("aid-cf-cs-{i}");
        v.cs.add_host(&host, &aid);
        let s = Scenario {
            label: format!("crowdstrike isolate_host, {}", fault_name(&fault)),
            fault,
            method: "POST",
            path: "action_name=contain".into(),
            alert: live::alert(
                &format!("cf-cs-alert-{i}"),
                "Malware EncodedCommand",
                &["T1059"],
                &[("host", &host)],
            ),
            kind: "isolate_host",
            target: Some(host.clone()),
        };
        let label = s.label.clone();
        run(&d, v.cs.faults(), v.cs.log(), s, &mut c).await;
        c.eq(v.cs.effects().count(&format!("contain:{aid}")), 1, || {
            format!("[{label}] contain effects on {aid}")
        });
        c.eq(v.cs.host_status(&aid), "contained".to_string(), || {
            format!("[{label}] host status")
        });
    }

    // The IOC write: the probe searches by type and value, so a create whose answer was lost is
    // found and not sent again (a second create would be a duplicate).
    let hash = "c0ffee00".repeat(8);
    let s = Scenario {
        label: "crowdstrike block_ioc, reset after effect".into(),
        fault: FaultKind::DropAfterEffect,
        method: "POST",
        path: "/iocs/entities/indicators/v1".into(),
        alert: live::alert(
            "cf-cs-ioc",
            "Malware EncodedCommand",
            &["T1059"],
            &[("file_hash", &hash)],
        ),
        kind: "block_ioc",
        target: Some(hash.clone()),
    };
    let label = s.label.clone();
    run(&d, v.cs.faults(), v.cs.log(), s, &mut c).await;
    c.eq(
        v.cs.effects().count(&format!("ioc_create:sha256:{hash}")),
        1,
        || format!("[{label}] ioc_create effects"),
    );
    c.eq(
        v.cs.effects().count(&format!("ioc_update:sha256:{hash}")),
        0,
        || format!("[{label}] ioc_update effects"),
    );
    let iocs = v.cs.iocs();
    c.eq(
        iocs.iter().filter(|i| i["value"] == json!(hash)).count(),
        1,
        || format!("[{label}] indicators for the hash: {iocs:?}"),
    );
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defender_indicators_and_isolation_survive_every_fault() {
    let v = Vendors::start().await;
    let d = live::start_live(&v, |_, _| {}).await;
    let mut c = Checks::default();
    for (i, fault) in six_faults("X-Rate-Limit-Reset").into_iter().enumerate() {
        let ip = format!("192.0.2.{}", 10 + i);
        let s = Scenario {
            label: format!("defender block_ioc, {}", fault_name(&fault)),
            fault,
            method: "POST",
            path: "/api/indicators".into(),
            alert: live::alert(
                &format!("cf-mde-alert-{i}"),
                "Malware EncodedCommand",
                &["T1059"],
                &[("ip", &ip)],
            ),
            kind: "block_ioc",
            target: Some(ip.clone()),
        };
        let label = s.label.clone();
        run(&d, v.mde.faults(), v.mde.log(), s, &mut c).await;
        let created = v.mde.effects().count(&format!("indicator_create:{ip}"));
        let updated = v.mde.effects().count(&format!("indicator_update:{ip}"));
        c.eq((created, updated), (1, 0), || {
            format!("[{label}] (indicator_create, indicator_update) effects for {ip}")
        });
    }

    // Isolation: the answer to the isolate is lost after Defender queued it. A second isolate
    // would be the duplicate-isolate trap (a stuck Pending action and a second effect).
    v.mde.add_machine("cf-mde-host", "m-cf-mde");
    let s = Scenario {
        label: "defender isolate_host, reset after effect".into(),
        fault: FaultKind::DropAfterEffect,
        method: "POST",
        path: "/m-cf-mde/isolate".into(),
        alert: live::alert(
            "cf-mde-iso",
            "Exfil to paste site",
            &["T1048"],
            &[("host", "cf-mde-host")],
        ),
        kind: "isolate_host",
        target: Some("cf-mde-host".into()),
    };
    let label = s.label.clone();
    run(&d, v.mde.faults(), v.mde.log(), s, &mut c).await;
    c.eq(v.mde.effects().count("isolate:m-cf-mde"), 1, || {
        format!("[{label}] isolate effects")
    });
    let actions: Vec<Value> = v
        .mde
        .actions()
        .into_iter()
        .filter(|a| a["machineId"] == json!("m-cf-mde"))
        .collect();
    c.eq(actions.len(), 1, || {
        format!("[{label}] machine actions on the machine: {actions:?}")
    });
    c.check(
        actions.iter().all(|a| a["status"] == json!("Succeeded")),
        || format!("[{label}] a machine action is not Succeeded: {actions:?}"),
    );
    c.check(v.mde.is_isolated("m-cf-mde"), || {
        format!("[{label}] machine not isolated")
    });
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_session_clear_survives_every_fault() {
    let v = Vendors::start().await;
    let d = live::start_live(&v, |_, _| {}).await;
    let mut c = Checks::default();
    for (i, fault) in six_faults("X-Rate-Limit-Reset").into_iter().enumerate() {
        let login = format!("cf-okta-{i}@example.com");
        let uid = format!("00ucfokta{i}");
        v.okta.add_user(&login, &uid);
        let s = Scenario {
            label: format!("okta revoke_sessions, {}", fault_name(&fault)),
            fault,
            method: "DELETE",
            path: format!("/api/v1/users/{uid}/sessions"),
            alert: live::alert(
                &format!("cf-okta-alert-{i}"),
                "Password spray",
                &["T1110"],
                &[("user", &login)],
            ),
            kind: "revoke_sessions",
            target: Some(login.clone()),
        };
        let label = s.label.clone();
        run(&d, v.okta.faults(), v.okta.log(), s, &mut c).await;
        c.eq(
            v.okta.effects().count(&format!("clear_sessions:{uid}")),
            1,
            || format!("[{label}] clear_sessions effects on {uid}"),
        );
        c.eq(v.okta.session_clears(&uid), 1, || {
            format!("[{label}] user.session.clear events for {uid}")
        });
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_session_revocation_survives_every_fault() {
    let v = Vendors::start().await;
    let d = live::start_live(&v, |_, _| {}).await;
    let mut c = Checks::default();
    for (i, fault) in six_faults("X-Ratelimit-Retryafter").into_iter().enumerate() {
        let upn = format!("cf-entra-{i}@example.com");
        let oid = format!("obj-cf-entra-{i}");
        v.entra.add_user(&upn, &oid);
        let s = Scenario {
            label: format!("entra revoke_sessions, {}", fault_name(&fault)),
            fault,
            method: "POST",
            path: "/revokeSignInSessions".into(),
            alert: live::alert(
                &format!("cf-entra-alert-{i}"),
                "Cloud admin role grant",
                &["T1098"],
                &[("user", &upn)],
            ),
            kind: "revoke_sessions",
            target: Some(upn.clone()),
        };
        let label = s.label.clone();
        run(&d, v.entra.faults(), v.entra.log(), s, &mut c).await;
        c.eq(v.entra.effects().count(&format!("revoke:{oid}")), 1, || {
            format!("[{label}] revoke effects on {oid}")
        });
        c.eq(v.entra.revocations(&oid), 1, || {
            format!("[{label}] revocations of {oid}")
        });
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_ticket_survives_every_fault() {
    let v = Vendors::start().await;
    let d = live::start_live(&v, |_, _| {}).await;
    let mut c = Checks::default();
    for (i, fault) in six_faults("X-Rate-Limit-Reset").into_iter().enumerate() {
        let issues_before = v.jira.issues().len();
        // A user unknown to Okta: only the ticket runs (the revocation waits for approval).
        let s = Scenario {
            label: format!("jira create_ticket, {}", fault_name(&fault)),
            fault,
            method: "POST",
            path: "/rest/api/3/issue".into(),
            alert: live::alert(
                &format!("cf-jira-alert-{i}"),
                "Password spray",
                &["T1110"],
                &[("user", &format!("cf-jira-{i}@example.com"))],
            ),
            kind: "create_ticket",
            target: None,
        };
        let label = s.label.clone();
        let (_, done) = run(&d, v.jira.faults(), v.jira.log(), s, &mut c).await;
        let l = live::idempotency_label(&done);
        c.eq(v.jira.issues_with_label(&l), 1, || {
            format!("[{label}] issues labelled {l}")
        });
        c.eq(v.jira.issues().len(), issues_before + 1, || {
            format!("[{label}] issues created in the scenario")
        });
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thehive_alert_survives_every_fault() {
    let v = Vendors::start().await;
    let d = live::start_live(&v, |_, _| {}).await;
    let mut c = Checks::default();
    for (i, fault) in six_faults("X-Ratelimit-Retryafter").into_iter().enumerate() {
        let alerts_before = v.hive.alerts().len();
        // A host unknown to CrowdStrike whose isolation waits for approval: only the ticket runs.
        let s = Scenario {
            label: format!("thehive create_ticket, {}", fault_name(&fault)),
            fault,
            method: "POST",
            path: "/api/v1/alert".into(),
            alert: live::alert(
                &format!("cf-hive-alert-{i}"),
                "Malware EncodedCommand",
                &["T1059"],
                &[("host", &format!("cf-hive-{i}"))],
            ),
            kind: "create_ticket",
            target: None,
        };
        let label = s.label.clone();
        let (_, done) = run(&d, v.hive.faults(), v.hive.log(), s, &mut c).await;
        let l = live::idempotency_label(&done);
        c.eq(v.hive.effects().count(&format!("alert:{l}")), 1, || {
            format!("[{label}] alert effects for sourceRef {l}")
        });
        c.eq(v.hive.alerts().len(), alerts_before + 1, || {
            format!("[{label}] alerts created in the scenario")
        });
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_webhook_containment_survives_every_fault() {
    let v = Vendors::start().await;
    let d = live::start_live(&v, |_, _| {}).await;
    let mut c = Checks::default();
    for (i, fault) in six_faults("X-Rate-Limit-Reset").into_iter().enumerate() {
        let res = format!("i-cf-hook-{i}");
        v.hook.add_resource(&res);
        let s = Scenario {
            label: format!(
                "cloud-webhook contain_cloud_resource, {}",
                fault_name(&fault)
            ),
            fault,
            method: "POST",
            path: "/v1/contain".into(),
            alert: live::alert(
                &format!("cf-hook-alert-{i}"),
                "Cloud admin role grant",
                &["T1098"],
                &[("cloud_resource", &res)],
            ),
            kind: "contain_cloud_resource",
            target: Some(res.clone()),
        };
        let label = s.label.clone();
        run(&d, v.hook.faults(), v.hook.log(), s, &mut c).await;
        c.eq(v.hook.effects().count(&format!("contain:{res}")), 1, || {
            format!("[{label}] contain effects on {res}")
        });
        c.eq(v.hook.state(&res), "contained".to_string(), || {
            format!("[{label}] resource state")
        });
    }
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// Completion polling of the asynchronous connectors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowdstrike_containment_is_polled_until_contained_then_verified() {
    let v = Vendors::start().await;
    v.cs.add_host("cf-cs-poll", "aid-cf-poll");
    v.cs.set_pending_polls(3);
    let d = live::start_live(&v, |_, _| {}).await;
    let (id, done) = drive(
        &d,
        live::alert(
            "cf-cs-poll-alert",
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", "cf-cs-poll")],
        ),
        "isolate_host",
        Some("cf-cs-poll"),
    )
    .await;
    assert_eq!(done["state"], json!("succeeded"), "{}", evidence(&d, &id));
    assert_eq!(done["execution"]["writes_sent"], json!(1), "{done}");
    assert_eq!(v.cs.effects().count("contain:aid-cf-poll"), 1);
    assert_eq!(v.cs.host_status("aid-cf-poll"), "contained");
    let polls = live::records(&d, "vendor_exchange", &id)
        .into_iter()
        .filter(|r| r["phase"] == json!("poll"))
        .count();
    assert!(
        polls >= 3,
        "three pending reads before completion, got {polls} polls:\n{}",
        evidence(&d, &id)
    );
    let probes = live::records(&d, "probe_result", &id);
    assert!(
        probes
            .iter()
            .any(|p| p["phase"] == json!("poll") && p["state"] == json!("pending")),
        "no pending poll: {probes:?}"
    );
    let last = probes.last().unwrap();
    assert_eq!(
        (&last["phase"], &last["state"]),
        (&json!("verify"), &json!("done")),
        "the final state must be verified by probe: {probes:?}"
    );
    // Nothing was declared done before the fake reported the host contained.
    let seen_pending = probes
        .iter()
        .filter(|p| p["observed"] == json!("containment_pending"))
        .count();
    assert!(seen_pending >= 3, "{probes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defender_isolation_is_polled_until_succeeded_then_verified() {
    let v = Vendors::start().await;
    v.mde.add_machine("cf-mde-poll", "m-cf-poll");
    v.mde.set_pending_polls(3);
    let d = live::start_live(&v, |_, _| {}).await;
    let (id, done) = drive(
        &d,
        live::alert(
            "cf-mde-poll-alert",
            "Exfil to paste site",
            &["T1048"],
            &[("host", "cf-mde-poll")],
        ),
        "isolate_host",
        Some("cf-mde-poll"),
    )
    .await;
    assert_eq!(done["state"], json!("succeeded"), "{}", evidence(&d, &id));
    assert_eq!(done["execution"]["writes_sent"], json!(1), "{done}");
    assert_eq!(v.mde.effects().count("isolate:m-cf-poll"), 1);
    assert!(v.mde.is_isolated("m-cf-poll"));
    let ma = done["execution"]["vendor"]["write.machine_action_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no machine action id captured: {done}"))
        .to_string();
    assert_eq!(v.mde.action(&ma).unwrap()["status"], json!("Succeeded"));
    let polls: Vec<Value> = live::records(&d, "vendor_exchange", &id)
        .into_iter()
        .filter(|r| r["phase"] == json!("poll"))
        .collect();
    assert!(
        polls.len() >= 3,
        "three pending reads before completion, got {}:\n{}",
        polls.len(),
        evidence(&d, &id)
    );
    assert!(
        polls
            .iter()
            .all(|p| p["path"].as_str().is_some_and(|x| x.contains(&ma))),
        "polls should read the machine action: {polls:?}"
    );
    let probes = live::records(&d, "probe_result", &id);
    assert!(
        probes
            .iter()
            .filter(|p| p["phase"] == json!("poll") && p["state"] == json!("pending"))
            .count()
            >= 3,
        "{probes:?}"
    );
    let last = probes.last().unwrap();
    assert_eq!(
        (&last["phase"], &last["state"]),
        (&json!("verify"), &json!("done")),
        "the final state must be verified by probe: {probes:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_stops_hammering_a_failing_vendor() {
    let v = Vendors::start().await;
    v.hook.add_resource("i-cf-breaker");
    let d = live::start_live(&v, |_, root| {
        let path = root.join("connectors/cloud-webhook.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("[circuit_breaker]"), "{text}");
        text.push_str("\n[circuit_breaker]\nfailures = 2\nopen_secs = 1\n");
        std::fs::write(&path, text).unwrap();
    })
    .await;
    let probe_path = "/v1/resources/i-cf-breaker";
    v.hook
        .faults()
        .arm(Fault::on("GET", probe_path, FaultKind::Status(500)).times(50));
    let (id, done) = drive(
        &d,
        live::alert(
            "cf-breaker-alert",
            "Cloud admin role grant",
            &["T1098"],
            &[("cloud_resource", "i-cf-breaker")],
        ),
        "contain_cloud_resource",
        Some("i-cf-breaker"),
    )
    .await;
    let trail = evidence(&d, &id);
    let state = done["state"].as_str().unwrap_or("");
    assert!(
        state == "failed" || state == "unknown",
        "state {state}:\n{trail}"
    );
    let received = v.hook.log().count_matching("GET", probe_path);
    let attempts = live::records(&d, "vendor_exchange", &id)
        .into_iter()
        .filter(|r| r["phase"] == json!("probe"))
        .count();
    let held_back = live::records(&d, "retry", &id)
        .into_iter()
        .filter(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|x| x.contains("circuit breaker open"))
        })
        .count();
    assert!(
        received >= 2,
        "the breaker opens after 2 failures:\n{trail}"
    );
    assert!(
        received <= 12,
        "the vendor got {received} requests (50 faults armed):\n{trail}"
    );
    assert!(
        held_back >= 1 && received < attempts,
        "the open breaker must hold attempts back: {received} reached the vendor of {attempts} \
         attempts, {held_back} retries name the open breaker:\n{trail}"
    );
    assert_eq!(v.hook.faults().fired(), received);
    assert_eq!(done["execution"]["writes_sent"], json!(0), "{done}");
    assert_eq!(v.hook.effects().count("contain:i-cf-breaker"), 0);
    assert_eq!(v.hook.log().count_matching("POST", "/v1/contain"), 0);
    let esc = live::records(&d, "escalation", &id);
    assert_eq!(esc.len(), 1, "one escalation:\n{trail}");
    assert!(done["execution"]["escalation"].is_string(), "{done}");
}

/// A probe answer that is not a state — a vendor error (404, 400), a proxy's HTML page with a
/// 200 — is never read as one: the action fails closed with nothing sent (Defender's probe
/// template renders such answers as ":", which its `not_done` list would otherwise read as
/// "never isolated" and send an isolate). An answer that never ends is not read to its end:
/// the read is retried, the daemon stays up, and the action then runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_answer_that_is_not_a_state_is_never_read_as_one() {
    let v = Vendors::start().await;
    let d = live::start_live(&v, |_, _| {}).await;
    let mut c = Checks::default();
    let raw = |status, content_type, body: &str| FaultKind::Raw {
        status,
        content_type,
        body: body.into(),
    };
    let refusals = [
        raw(
            404,
            "application/json",
            r#"{"error":{"code":"NotFound","message":"no such machine"}}"#,
        ),
        raw(
            400,
            "application/json",
            r#"{"error":{"code":"InvalidRequest","message":"bad $orderby"}}"#,
        ),
        raw(
            200,
            "text/html",
            "<html><body>Access denied by WAF</body></html>",
        ),
        raw(200, "application/json", ""),
    ];
    for (i, fault) in refusals.into_iter().enumerate() {
        let (host, machine) = (format!("nf-mde-host-{i}"), format!("m-nf-{i}"));
        v.mde.add_machine(&host, &machine);
        let label = format!("defender isolate_host, probe answers {fault:?}");
        let isolates = v
            .mde
            .log()
            .count_matching("POST", &format!("/{machine}/isolate"));
        v.mde
            .faults()
            .arm(Fault::on("GET", "/api/machineactions", fault));
        let alert = live::alert(
            &format!("nf-mde-{i}"),
            "Exfil to paste site",
            &["T1048"],
            &[("host", &host)],
        );
        let (id, done) = drive(&d, alert, "isolate_host", Some(&host)).await;
        c.eq(done["state"].clone(), json!("failed"), || {
            format!("[{label}] final state; evidence:\n{}", evidence(&d, &id))
        });
        c.check(
            done["execution"]["escalation"]
                .as_str()
                .is_some_and(|e| e.contains("nothing is concluded")),
            || format!("[{label}] escalation: {}", done["execution"]["escalation"]),
        );
        c.eq(
            v.mde
                .log()
                .count_matching("POST", &format!("/{machine}/isolate")),
            isolates,
            || format!("[{label}] isolate requests sent"),
        );
        c.check(!v.mde.is_isolated(&machine), || {
            format!("[{label}] the machine was isolated")
        });
        v.mde.faults().disarm_all();
    }

    v.mde.add_machine("nf-mde-endless", "m-nf-endless");
    v.mde
        .faults()
        .arm(Fault::on("GET", "/api/machineactions", FaultKind::Endless));
    let alert = live::alert(
        "nf-mde-endless",
        "Exfil to paste site",
        &["T1048"],
        &[("host", "nf-mde-endless")],
    );
    let (id, done) = drive(&d, alert, "isolate_host", Some("nf-mde-endless")).await;
    c.eq(done["state"].clone(), json!("succeeded"), || {
        format!(
            "[endless probe] final state; evidence:\n{}",
            evidence(&d, &id)
        )
    });
    c.check(evidence(&d, &id).contains("larger than"), || {
        format!(
            "[endless probe] no record of the answer left unread:\n{}",
            evidence(&d, &id)
        )
    });
    c.eq(v.mde.effects().count("isolate:m-nf-endless"), 1, || {
        "[endless probe] isolate effects".into()
    });
    let (s, _) = d.get("/healthz").await;
    c.eq(s, 200, || "[endless probe] the daemon answers".into());
    c.finish();
}
