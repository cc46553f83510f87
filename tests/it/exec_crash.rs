//! The executor's crash guarantee on the real binary: `kill -9` it repeatedly while approved
//! actions are executing against live (fake) vendors, restart it on the same data dir each
//! time, and at the end every action is terminal, no vendor saw a write (or an effect) twice,
//! every recorded outcome agrees with what the vendor actually did, an action left `unknown` was
//! reconciled by probe, and the audit chain verifies after a clean SIGTERM.
//!
//! The fakes live in this test process, so killing the daemon leaves their state and effect
//! counters intact: they are the ground truth a blind resend after restart would double.
//! Writes are slowed down with `TimeoutAfterEffect` (the vendor applies the effect, then holds
//! its answer past cordon's 1.5 s timeout), so a kill catches writes whose effect happened but
//! whose answer cordon never recorded: the case where resending would duplicate.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support;
use crate::support::fakes::{Fault, FaultKind, LoggedRequest};
use crate::support::live::{Vendors, idempotency_label};
use crate::support::{Daemon, cordon, get_json, http_client, run, serve_args, text, write_config};

/// How long a slowed vendor holds its answer after applying the effect (cordon gives up on the
/// answer after `timeout_ms = 1500`, as `Vendors::wire` sets it).
const HOLD: Duration = Duration::from_secs(3);

/// Slowed writes armed per vendor at the start of every killed run.
const SLOW_WRITES: usize = 8;

/// States an action may end in.
const ALLOWED_END: [&str; 4] = ["succeeded", "failed", "dry_run", "denied"];

/// States the executor (or the approval flow) never leaves.
const FINAL: [&str; 8] = [
    "succeeded",
    "failed",
    "dry_run",
    "denied",
    "rejected",
    "expired",
    "rolled_back",
    "awaiting_approval",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Family {
    /// "Password spray": Jira ticket, Okta session revocation, CrowdStrike IP block.
    Credential,
    /// "Malware EncodedCommand" without a host: TheHive ticket, CrowdStrike hash block,
    /// Defender IP block.
    Malware,
}

/// One alert the test sends, with entities of its own (so every action has its own target and
/// idempotency key) that the intel file marks high-confidence (so every step is automatic).
#[derive(Clone, Debug)]
struct Planned {
    tag: String,
    family: Family,
    /// (login, Okta user id)
    user: Option<(String, String)>,
    ip: String,
    hash: Option<String>,
}

impl Planned {
    fn new(i: usize, family: Family) -> Planned {
        match family {
            Family::Credential => Planned {
                tag: format!("xc-cred-{i}"),
                family,
                user: Some((format!("xc-user-{i}@example.com"), format!("00uxc{i:04}"))),
                ip: format!("203.0.113.{i}"),
                hash: None,
            },
            Family::Malware => Planned {
                tag: format!("xc-mal-{i}"),
                family,
                user: None,
                ip: format!("198.51.100.{i}"),
                hash: Some(format!("{:0>64}", format!("c0ffee{i:04}"))),
            },
        }
    }

    /// The credential alert whose Okta write is left `unknown` on purpose in the final run.
    fn limbo() -> Planned {
        Planned {
            tag: "xc-limbo".into(),
            family: Family::Credential,
            user: Some(("xc-limbo@example.com".into(), "00uxclimbo".into())),
            ip: "203.0.113.250".into(),
            hash: None,
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut entities = vec![json!({"kind": "ip", "value": self.ip})];
        if let Some((login, _)) = &self.user {
            entities.push(json!({"kind": "user", "value": login}));
        }
        if let Some(h) = &self.hash {
            entities.push(json!({"kind": "file_hash", "value": h}));
        }
        let (rule, technique) = match self.family {
            Family::Credential => ("Password spray", "T1110"),
            Family::Malware => ("Malware EncodedCommand", "T1059"),
        };
        serde_json::to_vec(&json!({
            "source_alert_id": self.tag,
            "title": format!("{rule} {}", self.tag),
            "rule": {"id": format!("rule-{rule}"), "name": rule},
            "severity": "high",
            "techniques": [technique],
            "entities": entities,
        }))
        .unwrap()
    }

    fn intel(&self) -> String {
        let ind = |value: &str, kind: &str, confidence: u32| {
            format!(
                "[[indicator]]\nvalue = \"{value}\"\ntype = \"{kind}\"\nconfidence = {confidence}\n\
                 source = \"exec-crash-test\"\nexpires = \"2099-01-01T00:00:00Z\"\n\n"
            )
        };
        let mut s = ind(&self.ip, "ip", 90);
        if let Some((login, _)) = &self.user {
            s.push_str(&ind(login, "user", 95));
        }
        if let Some(h) = &self.hash {
            s.push_str(&ind(h, "file_hash", 90));
        }
        s
    }
}

/// Every vendor write the fakes received, as (`vendor:key`, the request). The key names the
/// action's target at that vendor: Okta user id, ticket idempotency label, or IOC value.
fn writes(v: &Vendors) -> Vec<(String, LoggedRequest)> {
    let mut out = Vec::new();
    for r in v.okta.log().matching("DELETE", "/sessions") {
        let id = r.path.split('/').nth(4).unwrap_or("").to_string();
        out.push((format!("okta:{id}"), r));
    }
    for r in v.jira.log().matching("POST", "/rest/api/3/issue") {
        let label = r.json().and_then(|b| {
            b["fields"]["labels"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find(|l| l.starts_with("cordon-"))
                .map(str::to_string)
        });
        out.push((format!("jira:{}", label.unwrap_or_default()), r));
    }
    for r in v.hive.log().matching("POST", "/api/v1/alert") {
        let label = r
            .json()
            .and_then(|b| b["sourceRef"].as_str().map(str::to_string));
        out.push((format!("thehive:{}", label.unwrap_or_default()), r));
    }
    for r in v.cs.log().matching("POST", "/iocs/entities/indicators/v1") {
        let value = r
            .json()
            .and_then(|b| b["indicators"][0]["value"].as_str().map(str::to_string));
        out.push((format!("crowdstrike:{}", value.unwrap_or_default()), r));
    }
    for r in v.mde.log().matching("POST", "/api/indicators") {
        let value = r
            .json()
            .and_then(|b| b["indicatorValue"].as_str().map(str::to_string));
        out.push((format!("defender:{}", value.unwrap_or_default()), r));
    }
    out
}

/// The `vendor:key` of an action's write, as `writes` names it.
fn write_key(a: &Value, okta_ids: &BTreeMap<String, String>) -> String {
    let conn = a["connector"].as_str().unwrap();
    let target = a["target"]["id"].as_str().unwrap();
    match conn {
        "okta" => format!("okta:{}", okta_ids.get(target).map_or("?", String::as_str)),
        "jira" | "thehive" => format!("{conn}:{}", idempotency_label(a)),
        _ => format!(
            "{conn}:{}",
            target.split_once(':').map_or(target, |(_, v)| v)
        ),
    }
}

/// How many times the vendor applied the action's effect.
fn effects_of(v: &Vendors, key: &str) -> usize {
    let (vendor, k) = key.split_once(':').unwrap();
    let ending = |snap: BTreeMap<String, usize>| {
        snap.iter()
            .filter(|(e, _)| e.ends_with(&format!(":{k}")))
            .map(|(_, n)| n)
            .sum()
    };
    match vendor {
        "okta" => ending(v.okta.effects().snapshot()),
        "jira" => v.jira.issues_with_label(k),
        "thehive" => ending(v.hive.effects().snapshot()),
        "crowdstrike" => ending(v.cs.effects().snapshot()),
        "defender" => ending(v.mde.effects().snapshot()),
        other => panic!("unexpected vendor {other}"),
    }
}

/// Slows the next `n` writes at every vendor (effect applied, answer held past the timeout).
fn slow_writes(v: &Vendors, n: usize) {
    let hold = FaultKind::TimeoutAfterEffect(HOLD);
    for (faults, method, path) in [
        (v.okta.faults(), "DELETE", "/sessions"),
        (v.jira.faults(), "POST", "/rest/api/3/issue"),
        (v.hive.faults(), "POST", "/api/v1/alert"),
        (v.cs.faults(), "POST", "/iocs/entities/indicators/v1"),
        (v.mde.faults(), "POST", "/api/indicators"),
    ] {
        faults.disarm_all();
        faults.arm(Fault::on(method, path, hold.clone()).times(n));
    }
}

/// Posts the alerts concurrently; every one must be accepted. Returns case id → alert tag.
async fn post_all(d: &Daemon, alerts: &[Planned]) -> BTreeMap<String, String> {
    let mut set = JoinSet::new();
    for p in alerts {
        let (c, url, body, tag) = (
            http_client(),
            format!("{}/v1/alerts", d.base),
            p.body(),
            p.tag.clone(),
        );
        set.spawn(async move {
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{tag}: {e}"));
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(status, 202, "{tag}: {v}");
            (v["case_id"].as_str().unwrap().to_string(), tag)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let (case, tag) = r.unwrap();
        assert!(
            out.insert(case.clone(), tag.clone()).is_none(),
            "two alerts share case {case}: each alert's entities are its own"
        );
    }
    out
}

/// An action that is `executing` now, looking first at the cases the most recent vendor writes
/// belong to, then at every known case.
async fn executing_action(
    d: &Daemon,
    v: &Vendors,
    cases: &BTreeMap<String, String>,
    okta_case: &BTreeMap<String, String>,
) -> Option<Value> {
    let mut order: Vec<String> = Vec::new();
    for (key, r) in writes(v).iter().rev() {
        let case = cases
            .keys()
            .find(|c| r.body.contains(c.as_str()))
            .cloned()
            .or_else(|| okta_case.get(key).cloned());
        if let Some(c) = case
            && !order.contains(&c)
        {
            order.push(c);
        }
        if order.len() >= 4 {
            break;
        }
    }
    let rest: Vec<String> = cases
        .keys()
        .filter(|c| !order.contains(c))
        .cloned()
        .collect();
    order.extend(rest);
    for case in order {
        let (s, body) = get_json(&d.base, &format!("/v1/cases/{case}")).await;
        if s != 200 {
            continue;
        }
        if let Some(a) = body["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["state"] == json!("executing"))
        {
            return Some(a.clone());
        }
    }
    None
}

fn describe(a: &Value) -> String {
    format!(
        "{} {} on {} via {} (phase {}, writes sent {})",
        a["action_id"].as_str().unwrap_or("?"),
        a["kind"].as_str().unwrap_or("?"),
        a["target"]["id"].as_str().unwrap_or("?"),
        a["connector"].as_str().unwrap_or("?"),
        a["execution"]["phase"].as_str().unwrap_or("-"),
        a["execution"]["writes_sent"],
    )
}

/// Waits until `ready` holds for the vendor traffic of this run (writes and requests counted
/// from the run's start) and an action is `executing`, then SIGKILLs the daemon and records
/// where.
#[allow(clippy::too_many_arguments)]
async fn kill_when(
    d: &mut Daemon,
    v: &Vendors,
    cases: &BTreeMap<String, String>,
    okta_case: &BTreeMap<String, String>,
    (writes0, requests0): (usize, usize),
    ready: impl Fn(usize, usize) -> bool,
    point: &str,
    kills: &mut Vec<String>,
) {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(20);
    loop {
        let (w, r) = (writes(v).len() - writes0, v.requests() - requests0);
        if ready(w, r)
            && let Some(a) = executing_action(d, v, cases, okta_case).await
        {
            let (w, r) = (writes(v).len() - writes0, v.requests() - requests0);
            d.kill9();
            let line = format!(
                "{point}: SIGKILL after {w} vendor write(s) and {r} vendor request(s) in this run \
                 ({} ms after it started waiting); executing at the time: {}",
                t0.elapsed().as_millis(),
                describe(&a)
            );
            eprintln!("exec_crash: {line}");
            kills.push(line);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{point}: no kill point reached within 20 s ({w} writes, {r} requests in this run); \
             earlier kills: {kills:#?}\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every action of every case, read over HTTP.
async fn all_actions(d: &Daemon) -> Vec<Value> {
    let (s, list) = get_json(&d.base, "/v1/cases?limit=1000").await;
    assert_eq!(s, 200, "{list}");
    let mut out = Vec::new();
    for c in list["cases"].as_array().unwrap() {
        let id = c["case_id"].as_str().unwrap();
        let (s, body) = get_json(&d.base, &format!("/v1/cases/{id}")).await;
        assert_eq!(s, 200, "{body}");
        out.extend(body["actions"].as_array().unwrap().iter().cloned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_execution_never_duplicates_a_vendor_effect() {
    let started = Instant::now();
    let v = Vendors::start().await;
    let (dir, _) = support::workspace();
    let root = dir.path();
    v.wire(root, true);
    // The held writes time out by design; cordon's circuit breaker would otherwise stop calling
    // a vendor for 30 s after five of them, which this test is not about.
    for name in ["okta", "jira", "thehive", "crowdstrike", "defender"] {
        let path = root.join(format!("connectors/{name}.toml"));
        let mut text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("[circuit_breaker]"), "{text}");
        text.push_str("\n[circuit_breaker]\nfailures = 1000\nopen_secs = 1\n");
        std::fs::write(&path, text).unwrap();
    }

    // Four batches of alerts over five live connectors, plus the alert left `unknown` on
    // purpose in the final run.
    let mut n = 0;
    let mut batch = |creds: usize, malware: usize| -> Vec<Planned> {
        let families = std::iter::repeat_n(Family::Credential, creds)
            .chain(std::iter::repeat_n(Family::Malware, malware));
        families
            .map(|f| {
                n += 1;
                Planned::new(n, f)
            })
            .collect()
    };
    let batches = [batch(5, 5), batch(5, 5), batch(6, 6), batch(2, 2)];
    let limbo = Planned::limbo();
    let everything: Vec<&Planned> = batches.iter().flatten().chain([&limbo]).collect();
    assert!(
        everything
            .iter()
            .filter(|p| p.family == Family::Credential)
            .count()
            >= 10
            && everything
                .iter()
                .filter(|p| p.family == Family::Malware)
                .count()
                >= 10
    );
    let mut okta_ids = BTreeMap::new();
    for p in &everything {
        if let Some((login, id)) = &p.user {
            v.okta.add_user(login, id);
            okta_ids.insert(login.clone(), id.clone());
        }
    }
    std::fs::write(
        root.join("enrichment/intel.toml"),
        everything.iter().map(|p| p.intel()).collect::<String>(),
    )
    .unwrap();
    let cfg = write_config(
        root,
        &format!(
            "[policy]\nwatch = false\n[executor]\nenabled = true\nconcurrency = 16\n\
             reconcile_interval_secs = 1\n{}",
            support::enrichment_toml(root),
        ),
    );

    let mut cases: BTreeMap<String, String> = BTreeMap::new();
    // okta:<user id> → case, for telling which case an Okta write (no case id in it) is for.
    let mut okta_case: BTreeMap<String, String> = BTreeMap::new();
    let mut kills: Vec<String> = Vec::new();
    let note_cases = |new: BTreeMap<String, String>,
                      cases: &mut BTreeMap<String, String>,
                      okta_case: &mut BTreeMap<String, String>| {
        for (case, tag) in new {
            if let Some((_, id)) = everything
                .iter()
                .find(|p| p.tag == tag)
                .and_then(|p| p.user.as_ref())
            {
                okta_case.insert(format!("okta:{id}"), case.clone());
            }
            cases.insert(case, tag);
        }
    };
    let base = |v: &Vendors| (writes(v).len(), v.requests());

    // Run 0: the first write to reach a vendor (held: effect applied, answer pending).
    slow_writes(&v, SLOW_WRITES);
    let b0 = base(&v);
    let mut d = Daemon::start(root, "run0", serve_args(&cfg)).await;
    let new = post_all(&d, &batches[0]).await;
    note_cases(new, &mut cases, &mut okta_case);
    kill_when(
        &mut d,
        &v,
        &cases,
        &okta_case,
        b0,
        |w, _| w >= 1,
        "run 0 (as soon as a write reaches a vendor)",
        &mut kills,
    )
    .await;

    // Run 1: recovery plus a new batch; killed with many writes in flight.
    slow_writes(&v, SLOW_WRITES);
    let b1 = base(&v);
    let mut d = Daemon::start(root, "run1", serve_args(&cfg)).await;
    let new = post_all(&d, &batches[1]).await;
    note_cases(new, &mut cases, &mut okta_case);
    kill_when(
        &mut d,
        &v,
        &cases,
        &okta_case,
        b1,
        |w, _| w >= 10,
        "run 1 (ten writes in flight or done)",
        &mut kills,
    )
    .await;

    // Run 2: no new alerts; killed as soon as recovery talks to a vendor (probing what the
    // previous run left in doubt).
    slow_writes(&v, SLOW_WRITES);
    let b2 = base(&v);
    let mut d = Daemon::start(root, "run2", serve_args(&cfg)).await;
    kill_when(
        &mut d,
        &v,
        &cases,
        &okta_case,
        b2,
        |_, r| r >= 1,
        "run 2 (recovery, first vendor request)",
        &mut kills,
    )
    .await;

    // Run 3: a bigger batch; killed with the executor's concurrency saturated.
    slow_writes(&v, SLOW_WRITES);
    let b3 = base(&v);
    let mut d = Daemon::start(root, "run3", serve_args(&cfg)).await;
    let new = post_all(&d, &batches[2]).await;
    note_cases(new, &mut cases, &mut okta_case);
    kill_when(
        &mut d,
        &v,
        &cases,
        &okta_case,
        b3,
        |w, _| w >= 16,
        "run 3 (sixteen writes in flight or done)",
        &mut kills,
    )
    .await;

    // Final run: vendors answer normally, except that the limbo user's session clear is held
    // past the timeout and the probes that would settle it fail until cordon gives up, so it
    // goes `unknown` and is reconciled later by probe.
    v.disarm_all();
    let (_, limbo_id) = limbo.user.clone().unwrap();
    v.okta.faults().arm(Fault::on(
        "DELETE",
        &format!("/users/{limbo_id}/sessions"),
        FaultKind::TimeoutAfterEffect(HOLD),
    ));
    let mut d = Daemon::start(root, "final", serve_args(&cfg)).await;
    let mut last = batches[3].clone();
    last.push(limbo.clone());
    let new = post_all(&d, &last).await;
    note_cases(new, &mut cases, &mut okta_case);
    support::eventually(20, || async {
        (v.okta
            .log()
            .count_matching("DELETE", &format!("/users/{limbo_id}/sessions"))
            >= 1)
            .then_some(())
    })
    .await;
    // The probes that follow the timed-out write fail (Okta's 503 names a reset a minute away,
    // longer than cordon waits), so it goes `unknown`; the first reconciliation fails too, the
    // next one reads the session-clear event and settles it.
    v.okta
        .faults()
        .arm(Fault::on("GET", &limbo_id, FaultKind::Status(503)).times(2));

    // Everything settles, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let actions = loop {
        let actions = all_actions(&d).await;
        if actions
            .iter()
            .all(|a| FINAL.contains(&a["state"].as_str().unwrap_or("")))
        {
            break actions;
        }
        if Instant::now() > deadline {
            let open: Vec<String> = actions
                .iter()
                .filter(|a| !FINAL.contains(&a["state"].as_str().unwrap_or("")))
                .map(|a| format!("{} [{}] {:#}", describe(a), a["state"], a["execution"]))
                .collect();
            for r in v.okta.log().matching("", &limbo_id) {
                eprintln!("okta saw {} {}", r.method, r.target());
            }
            panic!(
                "actions not terminal 30 s after the last restart: {open:#?}\nkills: {kills:#?}\n{}",
                d.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = d.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    let kill_log = kills.join("\n");

    // The audit chain verifies, and holds the execution history.
    let data = root.join("data");
    let mut c = cordon();
    c.args(["audit", "verify", "--data-dir"]).arg(&data);
    let out = run(c);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}\nkills:\n{kill_log}",
        text(&out.stderr)
    );
    assert!(stdout.starts_with("ok: "), "{stdout}");
    let mut c = cordon();
    c.args(["audit", "export", "--data-dir"]).arg(&data);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let audit: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut by_action: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in &audit {
        if let Some(id) = r["action_id"].as_str() {
            by_action.entry(id.to_string()).or_default().push(r);
        }
    }
    let of_kind = |id: &str, kind: &str| -> Vec<&Value> {
        by_action
            .get(id)
            .map(|rs| {
                rs.iter()
                    .filter(|r| r["kind"] == json!(kind))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    };

    // Every alert produced its actions, and every one of them is over.
    assert_eq!(cases.len(), everything.len(), "{cases:?}");
    let vendor_actions: Vec<&Value> = actions
        .iter()
        .filter(|a| a["connector"] != json!("cordon"))
        .collect();
    assert_eq!(
        vendor_actions.len(),
        3 * everything.len(),
        "three vendor actions per alert"
    );
    for a in &actions {
        let st = a["state"].as_str().unwrap();
        assert!(
            ALLOWED_END.contains(&st),
            "{} ended {st} (expected one of {ALLOWED_END:?}):\n{a:#}\nkills:\n{kill_log}",
            describe(a)
        );
        // The audit's last word on the action is the state it is in.
        let last_to = of_kind(a["action_id"].as_str().unwrap(), "action_transition")
            .last()
            .map(|r| r["data"]["to"].clone());
        assert_eq!(last_to, Some(json!(st)), "{}", describe(a));
    }
    let connectors: BTreeSet<&str> = vendor_actions
        .iter()
        .map(|a| a["connector"].as_str().unwrap())
        .collect();
    assert!(connectors.len() >= 3, "{connectors:?}");

    // No duplicate writes and no duplicate effects; each outcome matches the vendor.
    let sent = writes(&v);
    let mut write_count: BTreeMap<String, usize> = BTreeMap::new();
    for (k, _) in &sent {
        *write_count.entry(k.clone()).or_default() += 1;
    }
    let mut problems = Vec::new();
    let mut keys = BTreeSet::new();
    for a in &vendor_actions {
        let id = a["action_id"].as_str().unwrap();
        let key = write_key(a, &okta_ids);
        assert!(keys.insert(key.clone()), "two actions write to {key}");
        let w = write_count.get(&key).copied().unwrap_or(0);
        let e = effects_of(&v, &key);
        let intents = of_kind(id, "write_intent").len();
        let resumed = of_kind(id, "execution_resumed").len();
        let st = a["state"].as_str().unwrap();
        let expect_effect = match st {
            "succeeded" => e == 1,
            // A failure must not hide an effect the vendor applied.
            _ => e == 0,
        };
        if w > 1 || e > 1 || !expect_effect || w > intents {
            problems.push(format!(
                "{} is {st}: the vendor received {w} write(s) and applied {e} effect(s); \
                 cordon recorded {intents} write intent(s) and resumed it {resumed} time(s); \
                 outcome {:?}",
                describe(a),
                a["execution"]["outcome"]
            ));
        }
    }
    // Nothing reached a vendor that no action accounts for.
    for k in write_count.keys() {
        if !keys.contains(k) {
            problems.push(format!("a write to {k} belongs to no action"));
        }
    }
    for (vendor, snap) in [
        ("okta", v.okta.effects().snapshot()),
        ("thehive", v.hive.effects().snapshot()),
        ("crowdstrike", v.cs.effects().snapshot()),
        ("defender", v.mde.effects().snapshot()),
    ] {
        for (k, n) in snap {
            if n > 1 {
                problems.push(format!("{vendor} applied {k} {n} times"));
            }
        }
    }
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    for i in v.jira.issues() {
        for l in i["fields"]["labels"].as_array().unwrap() {
            *labels.entry(l.as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    for (l, n) in labels {
        if l != "cordon" && n > 1 {
            problems.push(format!("jira has {n} issues labelled {l}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}\nkills:\n{kill_log}",
        problems.len(),
        problems.join("\n")
    );

    // The kills caught writes in flight: some action was resumed with a write whose answer was
    // never recorded, and it was settled by probe without a second write.
    let in_doubt: Vec<&Value> = vendor_actions
        .iter()
        .copied()
        .filter(|a| {
            of_kind(a["action_id"].as_str().unwrap(), "execution_resumed")
                .iter()
                .any(|r| r["data"]["execution"]["phase"] == json!("writing"))
        })
        .collect();
    eprintln!(
        "exec_crash: {} action(s) resumed with a write in doubt",
        in_doubt.len()
    );
    assert!(
        !in_doubt.is_empty(),
        "no kill caught a write in flight; kills:\n{kill_log}"
    );
    let probed_not_resent = in_doubt.iter().filter(|a| {
        let id = a["action_id"].as_str().unwrap();
        effects_of(&v, &write_key(a, &okta_ids)) == 1 && of_kind(id, "write_intent").len() == 1
    });
    assert!(
        probed_not_resent.count() >= 1,
        "no in-doubt write that had reached the vendor was settled by probe; kills:\n{kill_log}"
    );

    // `unknown` is never where an action stays: each one was reconciled by a later probe, the
    // limbo revocation included.
    let mut reconciled = Vec::new();
    for a in &actions {
        let id = a["action_id"].as_str().unwrap();
        let ts = of_kind(id, "action_transition");
        let Some(i) = ts.iter().position(|r| r["data"]["to"] == json!("unknown")) else {
            continue;
        };
        let later = ts[i + 1..]
            .iter()
            .find(|r| r["data"]["from"] == json!("unknown"));
        assert!(
            later.is_some_and(
                |r| ["succeeded", "failed"].contains(&r["data"]["to"].as_str().unwrap_or(""))
            ),
            "{} went unknown and was never reconciled: {ts:#?}",
            describe(a)
        );
        reconciled.push(a["target"]["id"].as_str().unwrap().to_string());
    }
    let limbo_login = limbo.user.as_ref().unwrap().0.clone();
    assert!(
        reconciled.contains(&limbo_login),
        "the limbo revocation never went unknown: {reconciled:?}"
    );
    let limbo_action = actions
        .iter()
        .find(|a| a["target"]["id"] == json!(limbo_login))
        .unwrap();
    assert_eq!(
        limbo_action["state"],
        json!("succeeded"),
        "{limbo_action:#}"
    );
    assert_eq!(
        v.okta
            .effects()
            .count(&format!("clear_sessions:{limbo_id}")),
        1
    );

    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &actions {
        *states.entry(a["state"].as_str().unwrap()).or_default() += 1;
    }
    eprintln!(
        "exec_crash: {} alerts, {} actions {states:?} ({} at vendors over {:?}), {} vendor writes, \
         {} reconciled from unknown, {} audit records, {:.1} s\nkills:\n{kill_log}",
        everything.len(),
        actions.len(),
        vendor_actions.len(),
        connectors,
        sent.len(),
        reconciled.len(),
        audit.len(),
        started.elapsed().as_secs_f64()
    );
}
