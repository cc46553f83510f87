//! The crash loop (issue 7): the real binary, executor on and every connector live against the
//! stateful fakes, fed a seeded mix of alerts (HTTP and gRPC `SubmitAlert`) whose actions are
//! automatic, one-approver and two-person, approved over gRPC by distinct approvers, and
//! `kill -9`ed at seeded moments (right after an ack, right after a vote, in the middle of a
//! vendor exchange, after a random delay, or once idle), then restarted on the same data dir.
//!
//! The test keeps its own ground truth: every alert answered 202 / OK (with its alert id), every
//! vote answered OK, the fakes' effect counters, and snapshots of `cordon audit export` taken
//! between kills. After the last restart it checks the guarantees of PRODUCT.md: no acknowledged
//! alert is missing; the audit chain verifies, its sequence numbers are contiguous and every
//! record seen in a snapshot is still there, unchanged, at the same position; every OK vote is
//! in its action's votes exactly once and nobody is counted twice; no action ran below its tier;
//! the vendors applied at most one effect per idempotency key (exactly one for a succeeded
//! action, none for one that did not); and every action is over within 60 s of the last restart.
//!
//! Acknowledged alerts are also read back after the next restart, so a lost one fails the test
//! at the kill that lost it.
//!
//! Size and replay: `CORDON_CRASH_KILLS` (default 25), `CORDON_CRASH_ALERTS` (default 250) and
//! `CORDON_CRASH_SEED` (default: from the clock); `CORDON_CRASH_KEEP=1` keeps the data dir and
//! the daemons' logs. The seed fixes the alerts, the kill plan and the voters' choices and is
//! printed first; each kill is printed with when and where it hit, so a failure can be replayed
//! (the exact moments still depend on timing). Every per-kill step costs time proportional to
//! that run's work, not to the history (full audit exports happen only at a bounded number of
//! snapshot points; action states and acks are read incrementally), so the long run (1,000 kills
//! over 10,000 alerts, in release) scales linearly. `.ci/broken-build-check` shows that builds
//! acknowledging before the durable write (`tests/broken/*.patch`) fail it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cordon::api::client::Clients;
use cordon::api::pb;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::{JoinError, JoinSet};
use tonic::Code;

use crate::support;
use crate::support::fakes::{Fault, FaultKind, lock};
use crate::support::live::{Vendors, idempotency_label};
use crate::support::{
    Daemon, cordon, get_json_with, http_client, post_json, run_within, serve_args, text,
    write_config,
};
use crate::support::{USERS, token_of};

/// Action states nothing moves on from (in this test: no rollbacks are requested).
const DONE: [&str; 7] = [
    "succeeded",
    "failed",
    "denied",
    "rejected",
    "expired",
    "rolled_back",
    "dry_run",
];

/// States in which an action has been let past its approvals.
const PAST_APPROVAL: [&str; 7] = [
    "approved",
    "executing",
    "succeeded",
    "failed",
    "unknown",
    "rolled_back",
    "dry_run",
];

/// How long after the last restart every action must be over.
const SETTLE: Duration = Duration::from_secs(60);

/// The longest a run waits for its kill trigger before killing anyway.
const TRIGGER_WAIT: Duration = Duration::from_secs(4);

/// At most this many runs in a row without an idle kill, so the backlog stays bounded.
const MAX_BUSY_RUNS: usize = 5;

/// The most a `cordon audit verify|export` run may take (the store of a 10,000-alert run holds
/// close to a million records).
const AUDIT_TOOL_SECS: u64 = 300;

/// Snapshots of the audit export taken between kills (at most; always one after the last
/// kill). Each is a full export, so their number is bounded whatever the number of kills.
const SNAPSHOTS: usize = 5;

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

struct Settings {
    seed: u64,
    kills: usize,
    alerts: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let num = |k: &str, default: u64| -> u64 {
            match std::env::var(k) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{k}={v:?} is not a whole number")),
                _ => default,
            }
        };
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let s = Settings {
            seed: num("CORDON_CRASH_SEED", clock),
            kills: num("CORDON_CRASH_KILLS", 25) as usize,
            alerts: num("CORDON_CRASH_ALERTS", 250) as usize,
        };
        assert!(s.kills >= 1, "CORDON_CRASH_KILLS must be at least 1");
        assert!(
            (1..=100_000).contains(&s.alerts),
            "CORDON_CRASH_ALERTS must be 1..=100000"
        );
        s
    }

    fn replay(&self) -> String {
        format!(
            "CORDON_CRASH_SEED={} CORDON_CRASH_KILLS={} CORDON_CRASH_ALERTS={}",
            self.seed, self.kills, self.alerts
        )
    }

    /// The generator of run `run`'s random choices (its own, so one run's choices do not shift
    /// with how many numbers an earlier run drew).
    fn rng(&self, run: usize) -> fastrand::Rng {
        fastrand::Rng::with_seed(self.seed ^ (run as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

// ---------------------------------------------------------------------------------------------
// The alerts
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    /// Password spray on a user and IP that intel marks compromised: ticket (Jira), session
    /// revocation (Okta) and IP block (CrowdStrike), all automatic.
    AutoCredential,
    /// The same without intel: the revocation and the IP block need one approver each.
    Credential,
    /// Malware on a host: ticket (TheHive), isolation (CrowdStrike, one approver), hash block
    /// (CrowdStrike, automatic on intel), C2 block (Defender, one approver).
    Malware,
    /// Cloud admin abuse on a production resource: ticket (Jira), containment (webhook,
    /// two-person), the admin's session revocation (Entra, one approver).
    Cloud,
    /// Exfiltration: ticket (Jira), domain block, IP block and host isolation (Defender, one
    /// approver each).
    Exfil,
}

impl Family {
    fn pick(rng: &mut fastrand::Rng) -> Family {
        match rng.u32(0..100) {
            0..35 => Family::AutoCredential,
            35..50 => Family::Credential,
            50..68 => Family::Malware,
            68..90 => Family::Cloud,
            _ => Family::Exfil,
        }
    }
}

/// Entities of alert `n`: unique per alert, so every action has its own target (and idempotency
/// key), and an effect at a vendor names the one action it belongs to.
fn login(n: usize) -> String {
    format!("cl-user-{n}@example.com")
}
fn host(n: usize) -> String {
    format!("cl-host-{n}")
}
fn ip(n: usize) -> String {
    format!(
        "198.{}.{}.{}",
        18 + n / 62_500,
        (n / 250) % 250,
        n % 250 + 1
    )
}
fn file_hash(n: usize) -> String {
    format!("{:064x}", 0xc1a5_0000_0000_u128 + n as u128)
}
fn domain(n: usize) -> String {
    format!("cl-exfil-{n}.example")
}
fn resource(n: usize) -> String {
    format!("i-cl{n:07}")
}

#[derive(Clone, Debug)]
struct Planned {
    n: usize,
    family: Family,
    /// Sent over gRPC `SubmitAlert` instead of `POST /v1/alerts`.
    grpc: bool,
    /// Deliveries tried so far (a delivery without an ack is retried, as a SIEM does).
    attempts: usize,
}

impl Planned {
    fn tag(&self) -> String {
        format!("crash-loop-{}", self.n)
    }

    fn body(&self) -> Vec<u8> {
        let n = self.n;
        let (rule, technique, entities) = match self.family {
            Family::AutoCredential | Family::Credential => (
                "Password spray",
                "T1110",
                vec![("user", login(n)), ("ip", ip(n))],
            ),
            Family::Malware => (
                "Malware EncodedCommand",
                "T1059",
                vec![
                    ("host", host(n)),
                    ("file_hash", file_hash(n)),
                    ("ip", ip(n)),
                ],
            ),
            Family::Cloud => (
                "Cloud admin role grant",
                "T1098",
                vec![("user", login(n)), ("cloud_resource", resource(n))],
            ),
            Family::Exfil => (
                "Exfil to paste site",
                "T1048",
                vec![("host", host(n)), ("domain", domain(n)), ("ip", ip(n))],
            ),
        };
        serde_json::to_vec(&json!({
            "source_alert_id": self.tag(),
            "title": format!("{rule} #{n}"),
            "rule": {"id": format!("rule-{rule}"), "name": rule},
            "severity": "high",
            "techniques": [technique],
            "entities": entities.iter().map(|(k, v)| json!({"kind": k, "value": v})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    /// Makes the alert's targets exist at the fakes, and returns the effect each vendor action
    /// of the alert leaves, keyed by (connector, target value) (tickets are keyed by label).
    fn register(&self, v: &Vendors) -> Vec<((String, String), String)> {
        let n = self.n;
        let e = |connector: &str, value: String, effect: String| {
            (
                (connector.to_string(), value),
                format!("{connector}|{effect}"),
            )
        };
        match self.family {
            Family::AutoCredential | Family::Credential => {
                let id = format!("00ucl{n:07}");
                v.okta.add_user(&login(n), &id);
                vec![
                    e("okta", login(n), format!("clear_sessions:{id}")),
                    e("crowdstrike", ip(n), format!("ioc_create:ipv4:{}", ip(n))),
                ]
            }
            Family::Malware => {
                let aid = format!("aid-cl-{n}");
                v.cs.add_host(&host(n), &aid);
                vec![
                    e("crowdstrike", host(n), format!("contain:{aid}")),
                    e(
                        "crowdstrike",
                        file_hash(n),
                        format!("ioc_create:sha256:{}", file_hash(n)),
                    ),
                    e("defender", ip(n), format!("indicator_create:{}", ip(n))),
                ]
            }
            Family::Cloud => {
                let id = format!("obj-cl-{n}");
                v.entra.add_user(&login(n), &id);
                v.hook.add_resource(&resource(n));
                vec![
                    e("entra", login(n), format!("revoke:{id}")),
                    e(
                        "cloud-webhook",
                        resource(n),
                        format!("contain:{}", resource(n)),
                    ),
                ]
            }
            Family::Exfil => {
                let id = format!("m-cl-{n}");
                v.mde.add_machine(&host(n), &id);
                vec![
                    e("defender", host(n), format!("isolate:{id}")),
                    e(
                        "defender",
                        domain(n),
                        format!("indicator_create:{}", domain(n)),
                    ),
                    e("defender", ip(n), format!("indicator_create:{}", ip(n))),
                ]
            }
        }
    }

    /// The alert's lines in the intel and asset files.
    fn enrichment(&self, intel: &mut String, assets: &mut String) {
        let n = self.n;
        let mut ind = |value: &str, kind: &str, confidence: u32| {
            intel.push_str(&format!(
                "[[indicator]]\nvalue = \"{value}\"\ntype = \"{kind}\"\nconfidence = {confidence}\n\
                 source = \"crash-loop\"\nexpires = \"2099-01-01T00:00:00Z\"\n\n"
            ));
        };
        match self.family {
            Family::AutoCredential => {
                ind(&login(n), "user", 95);
                ind(&ip(n), "ip", 90);
            }
            Family::Malware => ind(&file_hash(n), "file_hash", 90),
            Family::Cloud => assets.push_str(&format!(
                "[[asset]]\ncloud_resource = \"{}\"\ncriticality = \"high\"\nenvironment = \"production\"\n\
                 owner = \"crash-loop\"\nprovider = \"aws\"\ntags = []\n\n",
                resource(n)
            )),
            Family::Credential | Family::Exfil => {}
        }
    }
}

/// What the daemon answered for a delivered alert.
#[derive(Clone, Debug)]
struct Ack {
    alert_id: String,
    case_id: String,
    duplicate: bool,
    run: usize,
    via: &'static str,
}

// ---------------------------------------------------------------------------------------------
// One run: alerts and votes flowing until the kill
// ---------------------------------------------------------------------------------------------

/// Where a run is killed.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// Right after the n-th alert of the run is acknowledged, with more in flight.
    Ack(usize),
    /// Right after the n-th vote of the run is answered OK.
    Vote(usize),
    /// As soon as the fakes have received n more requests: a vendor exchange in flight.
    VendorRequest(usize),
    /// This many milliseconds after the daemon answered `/readyz` (0: during recovery).
    After(u64),
    /// Once the run's alerts are in and every action known so far is over.
    Idle,
}

/// What the run's tasks report to the kill trigger.
#[derive(Default)]
struct RunCtl {
    sent: AtomicUsize,
    acks: AtomicUsize,
    votes: AtomicUsize,
    posting_done: AtomicBool,
    stop: AtomicBool,
    progress: Notify,
    stopping: Notify,
    /// Cases of this run's acks, for the tracker.
    new_cases: Mutex<Vec<String>>,
}

impl RunCtl {
    fn acked(&self, case_id: &str) {
        lock(&self.new_cases).push(case_id.to_string());
        self.acks.fetch_add(1, Ordering::SeqCst);
        self.progress.notify_one();
    }
    fn voted(&self) {
        self.votes.fetch_add(1, Ordering::SeqCst);
        self.progress.notify_one();
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.stopping.notify_waiters();
    }
}

fn rethrow(e: JoinError) -> ! {
    match e.try_into_panic() {
        Ok(p) => std::panic::resume_unwind(p),
        Err(e) => panic!("task failed: {e}"),
    }
}

/// Delivers one alert; the ack if the daemon gave one.
async fn deliver(
    http: &reqwest::Client,
    alerts: &mut Option<Clients>,
    base: &str,
    grpc: &str,
    p: &Planned,
    run: usize,
) -> Option<Ack> {
    if p.grpc {
        if alerts.is_none() {
            *alerts = support::try_grpc(grpc, None).await.ok();
        }
        let c = alerts.as_mut()?;
        let r = c
            .alerts
            .submit_alert(pb::SubmitAlertRequest {
                format: String::new(),
                payload: p.body(),
            })
            .await;
        match r {
            Ok(r) => {
                let r = r.into_inner();
                Some(Ack {
                    alert_id: r.alert_id,
                    case_id: r.case_id,
                    duplicate: r.duplicate,
                    run,
                    via: "grpc",
                })
            }
            Err(s)
                if matches!(
                    s.code(),
                    Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated
                ) =>
            {
                panic!("SubmitAlert of {} was refused: {s:?}", p.tag())
            }
            // Not acknowledged (the daemon died under it): delivered again later.
            Err(_) => None,
        }
    } else {
        match post_json(http, &format!("{base}/v1/alerts"), p.body()).await {
            Ok((202, b)) => {
                let s = |k: &str| {
                    b[k].as_str()
                        .unwrap_or_else(|| panic!("{}: no {k} in the 202 answer {b}", p.tag()))
                        .to_string()
                };
                Some(Ack {
                    alert_id: s("alert_id"),
                    case_id: s("case_id"),
                    duplicate: b["duplicate"] == json!(true),
                    run,
                    via: "http",
                })
            }
            Ok((status, _)) if status >= 500 => None,
            Ok((status, b)) => panic!("POST /v1/alerts of {}: {status} {b}", p.tag()),
            Err(_) => None,
        }
    }
}

/// Delivers `batch` with `workers` deliveries in flight until the batch is done or the run is
/// stopped; returns every alert with its ack (or none: never sent, or no answer).
async fn deliver_all(
    http: reqwest::Client,
    base: String,
    grpc: String,
    batch: Vec<Planned>,
    workers: usize,
    ctl: Arc<RunCtl>,
    run: usize,
) -> Vec<(Planned, Option<Ack>)> {
    let queue = Arc::new(Mutex::new(VecDeque::from(batch)));
    let mut set = JoinSet::new();
    for _ in 0..workers.max(1) {
        let (queue, ctl, base, grpc, http) = (
            queue.clone(),
            ctl.clone(),
            base.clone(),
            grpc.clone(),
            http.clone(),
        );
        set.spawn(async move {
            let mut alerts = None;
            let mut out = Vec::new();
            while !ctl.stopped() {
                let Some(mut p) = lock(&queue).pop_front() else {
                    break;
                };
                p.attempts += 1;
                ctl.sent.fetch_add(1, Ordering::SeqCst);
                let ack = deliver(&http, &mut alerts, &base, &grpc, &p, run).await;
                if let Some(a) = &ack {
                    ctl.acked(&a.case_id);
                }
                out.push((p, ack));
            }
            out
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.extend(r.unwrap_or_else(|e| rethrow(e)));
    }
    ctl.posting_done.store(true, Ordering::SeqCst);
    out.extend(lock(&queue).drain(..).map(|p| (p, None)));
    out
}

/// A vote that was answered OK.
#[derive(Clone, Debug)]
struct VoteOk {
    action_id: String,
    user: String,
    approve: bool,
    outcome: String,
    run: usize,
}

#[derive(Default)]
struct Votes {
    ok: Vec<VoteOk>,
    /// Refusals by gRPC code (not pending any more, not authorised, ...).
    refused: BTreeMap<String, usize>,
    /// Votes that got no answer (the daemon died under them).
    lost: usize,
    violations: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum VoteKind {
    /// An authorised approver who has not voted on the request yet.
    Fresh,
    /// Someone whose vote is already recorded, again: answered `already_counted`.
    Repeat,
    /// mallory, in no approver group: refused.
    Outsider,
}

/// A vote and its answer: (approval id, user, approve?, kind, outcome or gRPC code).
type Cast = (String, &'static str, bool, VoteKind, Result<String, Code>);

/// Approvers who may vote on `kind` (policies/approvers.cedar).
fn approvers_for(kind: &str) -> [&'static str; 3] {
    if kind.contains("cloud_resource") {
        ["bob", "dave", "carol"]
    } else {
        ["alice", "bob", "carol"]
    }
}

/// Votes on every pending request until the run is stopped: fresh approvers (seeded order, now
/// and then a deny), plus, once per request and run at most, a repeat vote by someone already
/// recorded and a vote by an outsider, neither of which may count.
///
/// The pending requests come from WatchApprovals (each event carries the request as it is now),
/// with ListPending on (re)subscribing, on a resync and every 2 s: listing builds every pending
/// request's view, so it is not repeated per change.
async fn vote_all(grpc: String, mut rng: fastrand::Rng, ctl: Arc<RunCtl>, run: usize) -> Votes {
    let mut out = Votes::default();
    let mut clients: BTreeMap<&'static str, Clients> = BTreeMap::new();
    let mut pending: BTreeMap<String, pb::Approval> = BTreeMap::new();
    let mut in_flight: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    // (request, user) answered OK in this run: recorded, whatever the last view says.
    let mut answered: BTreeSet<(String, &'static str)> = BTreeSet::new();
    let mut extras: BTreeSet<(String, VoteKind)> = BTreeSet::new();
    let mut set: JoinSet<Cast> = JoinSet::new();
    let mut watch: Option<tonic::Streaming<pb::ApprovalEvent>> = None;
    let mut relist = true;
    let mut listed = Instant::now();
    let record = |out: &mut Votes,
                  in_flight: &mut BTreeMap<String, BTreeSet<&'static str>>,
                  answered: &mut BTreeSet<(String, &'static str)>,
                  r: Result<Cast, JoinError>| {
        let (id, user, approve, kind, res) = r.unwrap_or_else(|e| rethrow(e));
        if let Some(s) = in_flight.get_mut(&id) {
            s.remove(user);
        }
        match res {
            Ok(outcome) => {
                ctl.voted();
                if kind == VoteKind::Outsider {
                    out.violations.push(format!(
                        "{user}, who may approve nothing, had a vote on {id} accepted ({outcome})"
                    ));
                }
                if kind == VoteKind::Repeat && outcome != "already_counted" {
                    out.violations.push(format!(
                        "{user} voted on {id} a second time and it was answered {outcome:?}, not \
                         already_counted"
                    ));
                }
                answered.insert((id.clone(), user));
                out.ok.push(VoteOk {
                    action_id: id,
                    user: user.to_string(),
                    approve,
                    outcome,
                    run,
                });
            }
            Err(Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal) => {
                out.lost += 1
            }
            Err(code) => *out.refused.entry(format!("{code:?}")).or_default() += 1,
        }
    };
    while !ctl.stopped() {
        while let Some(r) = set.try_join_next() {
            record(&mut out, &mut in_flight, &mut answered, r);
        }
        if clients.len() < USERS.len() {
            for u in USERS {
                if clients.contains_key(u) {
                    continue;
                }
                if let Ok(c) = support::try_grpc(&grpc, Some(&token_of(u))).await {
                    clients.insert(u, c);
                }
            }
        }
        let Some(carol) = clients.get_mut("carol") else {
            // Not up (or already gone): try again shortly.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = ctl.stopping.notified() => {}
            }
            continue;
        };
        if watch.is_none() {
            watch = carol
                .approvals
                .watch_approvals(pb::WatchApprovalsRequest {})
                .await
                .ok()
                .map(|r| r.into_inner());
            relist = true;
        }
        if relist || listed.elapsed() >= Duration::from_secs(2) {
            if let Ok(r) = carol
                .approvals
                .list_pending(pb::ListPendingRequest {
                    limit: 1000,
                    after: String::new(),
                })
                .await
            {
                pending = r
                    .into_inner()
                    .approvals
                    .into_iter()
                    .map(|a| (a.approval_id.clone(), a))
                    .collect();
                relist = false;
            }
            listed = Instant::now();
        }
        for a in pending.values() {
            if set.len() >= 16 {
                break;
            }
            let busy = in_flight.entry(a.approval_id.clone()).or_default();
            let recorded: BTreeSet<&str> = a
                .votes
                .iter()
                .map(|v| v.user.as_str())
                .chain(
                    USERS
                        .into_iter()
                        .filter(|u| answered.contains(&(a.approval_id.clone(), *u))),
                )
                .collect();
            let missing = a.approvals_needed.saturating_sub(a.approvals_given).max(1) as usize;
            if busy.len() >= missing {
                continue;
            }
            let roll = rng.u32(0..100);
            let repeat = USERS.into_iter().find(|u| {
                a.votes
                    .iter()
                    .any(|v| v.user == *u && v.decision == "approve")
                    && !busy.contains(u)
            });
            let extra = |k: VoteKind| !extras.contains(&(a.approval_id.clone(), k));
            let (user, approve, kind) = if roll < 3 && extra(VoteKind::Outsider) {
                ("mallory", true, VoteKind::Outsider)
            } else if roll < 10
                && extra(VoteKind::Repeat)
                && let Some(u) = repeat
            {
                (u, true, VoteKind::Repeat)
            } else {
                let mut order = approvers_for(&a.action);
                rng.shuffle(&mut order);
                let Some(u) = order
                    .into_iter()
                    .find(|u| !recorded.contains(u) && !busy.contains(u))
                else {
                    continue;
                };
                let deny = recorded.is_empty() && busy.is_empty() && rng.u32(0..100) < 3;
                (u, !deny, VoteKind::Fresh)
            };
            let Some(c) = clients.get(user) else {
                continue;
            };
            if kind != VoteKind::Fresh {
                extras.insert((a.approval_id.clone(), kind));
            }
            busy.insert(user);
            let mut approvals = c.approvals.clone();
            let req = pb::VoteRequest {
                approval_id: a.approval_id.clone(),
                request_hash: a.request_hash.clone(),
                comment: format!("crash loop run {run}"),
            };
            let id = a.approval_id.clone();
            set.spawn(async move {
                let r = if approve {
                    approvals.approve(req).await
                } else {
                    approvals.deny(req).await
                };
                let res = r.map(|r| r.into_inner().outcome).map_err(|s| s.code());
                (id, user, approve, kind, res)
            });
        }
        in_flight.retain(|_, s| !s.is_empty());
        let relist_in = Duration::from_secs(2).saturating_sub(listed.elapsed());
        tokio::select! {
            Some(r) = set.join_next(), if !set.is_empty() => {
                record(&mut out, &mut in_flight, &mut answered, r);
            }
            ev = async {
                match watch.as_mut() {
                    Some(w) => w.message().await,
                    None => std::future::pending().await,
                }
            } => match ev {
                Ok(Some(pb::ApprovalEvent { event: Some(pb::approval_event::Event::Approval(a)) })) => {
                    if a.state == "awaiting_approval" {
                        pending.insert(a.approval_id.clone(), a);
                    } else {
                        pending.remove(&a.approval_id);
                    }
                }
                Ok(Some(pb::ApprovalEvent { event: Some(pb::approval_event::Event::Resync(_)) })) => {
                    relist = true;
                }
                Ok(Some(_)) => {}
                // The stream ended or broke: subscribe again (and list).
                _ => watch = None,
            },
            _ = tokio::time::sleep(relist_in) => {}
            _ = ctl.stopping.notified() => {}
        }
    }
    // Answers that arrived before the daemon died are real answers.
    while let Some(r) = set.join_next().await {
        record(&mut out, &mut in_flight, &mut answered, r);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reading action states incrementally
// ---------------------------------------------------------------------------------------------

/// GETs every path with a few requests in flight; (key, status, body) in any order.
async fn fetch_all(
    http: &reqwest::Client,
    base: &str,
    items: Vec<(String, String)>,
) -> Vec<(String, u16, Value)> {
    let queue = Arc::new(Mutex::new(VecDeque::from(items)));
    let mut set = JoinSet::new();
    for _ in 0..8 {
        let (queue, base, http) = (queue.clone(), base.to_string(), http.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let Some((key, path)) = lock(&queue).pop_front() else {
                    break;
                };
                let (s, v) = get_json_with(&http, &base, &path).await;
                out.push((key, s, v));
            }
            out
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.extend(r.unwrap_or_else(|e| rethrow(e)));
    }
    out
}

/// Reads back, after a restart, alerts acknowledged before it: the ones found as acknowledged,
/// and the ones the daemon says it does not have (with what it answered). An alert that could
/// not be read (the run was killed meanwhile) is in neither list and is read back next time.
async fn read_back(
    http: reqwest::Client,
    base: String,
    acks: Vec<(usize, Ack)>,
) -> (Vec<usize>, Vec<(usize, Ack, String)>) {
    let (mut present, mut missing) = (Vec::new(), Vec::new());
    for (n, a) in acks {
        let Ok(r) = http
            .get(format!("{base}/v1/alerts/{}", a.alert_id))
            .send()
            .await
        else {
            break;
        };
        let status = r.status().as_u16();
        let Ok(body) = r.text().await else {
            break;
        };
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 200 && v["case_id"] == json!(a.case_id) {
            present.push(n);
        } else if status == 200 || status == 404 {
            missing.push((n, a, format!("{status} {body}")));
        }
    }
    (present, missing)
}

fn is_done(state: &str) -> bool {
    DONE.contains(&state)
}

/// The actions that were not over when last read, and the cases not read yet: each case is read
/// once and each action until it is over, so keeping track costs what the runs add, not what the
/// store holds.
struct Tracker {
    http: reqwest::Client,
    unread: BTreeSet<String>,
    read: BTreeSet<String>,
    /// Cases of acknowledged alerts that the daemon does not have (the final checks name them).
    missing: BTreeSet<String>,
    /// action id → state when last read
    open: BTreeMap<String, String>,
}

impl Tracker {
    fn new(http: reqwest::Client) -> Tracker {
        Tracker {
            http,
            unread: BTreeSet::new(),
            read: BTreeSet::new(),
            missing: BTreeSet::new(),
            open: BTreeMap::new(),
        }
    }

    fn add_case(&mut self, id: &str) {
        if !self.read.contains(id) && !self.missing.contains(id) {
            self.unread.insert(id.to_string());
        }
    }

    /// Reads the new cases, then the open actions oldest first until one is still open (or,
    /// with `all`, every one); true when nothing known is open.
    async fn refresh(&mut self, base: &str, all: bool) -> bool {
        let cases: Vec<(String, String)> = std::mem::take(&mut self.unread)
            .into_iter()
            .map(|c| (c.clone(), format!("/v1/cases/{c}")))
            .collect();
        for (case, s, body) in fetch_all(&self.http, base, cases).await {
            if s == 404 {
                self.missing.insert(case);
                continue;
            }
            if s != 200 {
                self.unread.insert(case);
                continue;
            }
            self.read.insert(case);
            for a in body["actions"].as_array().into_iter().flatten() {
                let state = a["state"].as_str().unwrap_or("");
                if !is_done(state) {
                    self.open.insert(
                        a["action_id"].as_str().unwrap_or("").to_string(),
                        state.to_string(),
                    );
                }
            }
        }
        let open: Vec<String> = self.open.keys().cloned().collect();
        for id in open {
            let (s, a) = get_json_with(&self.http, base, &format!("/v1/actions/{id}")).await;
            let state = a["state"].as_str().unwrap_or("");
            if s == 200 && is_done(state) {
                self.open.remove(&id);
            } else {
                self.open.insert(id, state.to_string());
                if !all {
                    break;
                }
            }
        }
        self.open.is_empty() && self.unread.is_empty()
    }
}

/// Waits for the run's kill trigger (at most `TRIGGER_WAIT`, or 30 s for an idle kill);
/// returns a note when it gave up waiting.
async fn trigger(
    kill_at: KillAt,
    ctl: &RunCtl,
    v: &Vendors,
    ready: Instant,
    tracker: &mut Tracker,
    base: &str,
) -> Option<String> {
    let requests0 = v.requests();
    if let KillAt::After(ms) = kill_at {
        tokio::time::sleep_until((ready + Duration::from_millis(ms)).into()).await;
        return None;
    }
    let wait = if matches!(kill_at, KillAt::Idle) {
        Duration::from_secs(30)
    } else {
        TRIGGER_WAIT
    };
    let deadline = Instant::now() + wait;
    loop {
        let hit = match kill_at {
            KillAt::Ack(n) => ctl.acks.load(Ordering::SeqCst) >= n,
            KillAt::Vote(n) => ctl.votes.load(Ordering::SeqCst) >= n,
            KillAt::VendorRequest(n) => v.requests() - requests0 >= n,
            KillAt::Idle => {
                for c in std::mem::take(&mut *lock(&ctl.new_cases)) {
                    tracker.add_case(&c);
                }
                ctl.posting_done.load(Ordering::SeqCst) && tracker.refresh(base, false).await
            }
            KillAt::After(_) => unreachable!(),
        };
        if hit {
            return None;
        }
        if Instant::now() > deadline {
            return Some(format!("trigger not reached within {wait:?}"));
        }
        // Acks and votes wake this up at once; vendor requests are polled.
        let poll = match kill_at {
            KillAt::VendorRequest(_) => Duration::from_millis(1),
            _ => Duration::from_millis(100),
        };
        tokio::select! {
            _ = ctl.progress.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The audit export
// ---------------------------------------------------------------------------------------------

/// `cordon audit verify` on the (stopped or killed) daemon's data dir.
fn verify_audit(data: &Path) -> Result<String, String> {
    let mut c = cordon();
    c.args(["audit", "verify", "--data-dir"]).arg(data);
    let out = run_within(c, AUDIT_TOOL_SECS);
    let stdout = text(&out.stdout);
    if out.status.code() == Some(0) && stdout.starts_with("ok: ") {
        Ok(stdout.trim().to_string())
    } else {
        Err(format!("{stdout}{}", text(&out.stderr)))
    }
}

/// Exports the audit log to `file` and returns the hash of every record line by position,
/// checking that sequence numbers run 1, 2, 3, ...; `visit` sees every line (records are only
/// parsed where a check needs them: the export of a long run is large).
fn export_audit(data: &Path, file: &Path, mut visit: impl FnMut(&str)) -> Result<Vec<u64>, String> {
    let mut c = cordon();
    c.args(["audit", "export", "--data-dir"])
        .arg(data)
        .arg("--output")
        .arg(file);
    let out = run_within(c, AUDIT_TOOL_SECS);
    if out.status.code() != Some(0) {
        return Err(format!("cordon audit export failed: {}", text(&out.stderr)));
    }
    let mut hashes = Vec::new();
    let f = std::io::BufReader::new(std::fs::File::open(file).unwrap());
    for line in f.lines() {
        let line = line.unwrap();
        let want = hashes.len() as u64 + 1;
        // `{"hash":"<hex>","seq":N,...}`: the first "seq" is the record's.
        let seq = line.split_once("\"seq\":").and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        });
        if seq != Some(want) {
            return Err(format!(
                "audit sequence numbers are not contiguous: record {want} of the export has seq \
                 {seq:?}"
            ));
        }
        let mut h = std::hash::DefaultHasher::new();
        line.hash(&mut h);
        hashes.push(h.finish());
        visit(&line);
    }
    Ok(hashes)
}

/// Every record of the earlier snapshot is still there, unchanged, at the same position.
fn same_prefix(earlier: &[u64], now: &[u64], when: &str) -> Result<(), String> {
    if now.len() < earlier.len() {
        return Err(format!(
            "the audit log lost records: {} after {when}, {} before",
            now.len(),
            earlier.len()
        ));
    }
    match (0..earlier.len()).find(|&i| earlier[i] != now[i]) {
        Some(i) => Err(format!(
            "audit record {} changed or moved between the snapshot before {when} and now",
            i + 1
        )),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// The final read of every case
// ---------------------------------------------------------------------------------------------

/// An action as the checks need it.
#[derive(Debug, Clone)]
struct Act {
    id: String,
    kind: String,
    connector: String,
    target: String,
    state: String,
    tier: String,
    label: String,
    requester: String,
    /// (user, decision) in order
    votes: Vec<(String, String)>,
}

impl Act {
    fn from(a: &Value) -> Act {
        let s = |v: &Value| v.as_str().unwrap_or("").to_string();
        Act {
            id: s(&a["action_id"]),
            kind: s(&a["kind"]),
            connector: s(&a["connector"]),
            target: s(&a["target"]["id"]),
            state: s(&a["state"]),
            tier: s(&a["tier"]),
            label: idempotency_label(a),
            requester: s(&a["requester"]),
            votes: a["approval"]["votes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| (s(&v["user"]), s(&v["decision"])))
                .collect(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} {} on {} via {} ({}, {})",
            self.id, self.kind, self.target, self.connector, self.tier, self.state
        )
    }

    /// The target value as the vendor knows it (an indicator without its `type:` prefix).
    fn value(&self) -> &str {
        if self.kind.ends_with("_ioc") {
            self.target.split_once(':').map_or(&self.target, |(_, v)| v)
        } else {
            &self.target
        }
    }
}

/// Every case in the store (paged) with its alert ids, and every action.
async fn read_everything(
    http: &reqwest::Client,
    base: &str,
) -> (BTreeMap<String, Vec<String>>, Vec<Act>) {
    let mut cases = BTreeMap::new();
    let mut after = String::new();
    loop {
        let page_after = if after.is_empty() {
            String::new()
        } else {
            format!("&after={after}")
        };
        let (s, list) =
            get_json_with(http, base, &format!("/v1/cases?limit=1000{page_after}")).await;
        assert_eq!(s, 200, "{list}");
        let page = list["cases"].as_array().unwrap();
        for c in page {
            let ids = c["alert_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            cases.insert(c["case_id"].as_str().unwrap().to_string(), ids);
        }
        match page.last() {
            Some(c) if page.len() == 1000 => after = c["case_id"].as_str().unwrap().to_string(),
            _ => break,
        }
    }
    let items = cases
        .keys()
        .map(|c| (c.clone(), format!("/v1/cases/{c}")))
        .collect();
    let mut acts = Vec::new();
    for (case, s, body) in fetch_all(http, base, items).await {
        assert_eq!(s, 200, "case {case}: {body}");
        acts.extend(body["actions"].as_array().unwrap().iter().map(Act::from));
    }
    (cases, acts)
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// The message for acknowledged alerts that a restart does not have.
fn lost_acks(missing: &[(usize, Ack, String)], run: usize) -> String {
    let lines: Vec<String> = missing
        .iter()
        .map(|(n, a, got)| {
            format!(
                "crash-loop-{n}: alert {} in case {}, acknowledged ({}) over {} in run {}; GET \
                 /v1/alerts/{} now answers {got}",
                a.alert_id,
                a.case_id,
                if a.duplicate {
                    "as a redelivery"
                } else {
                    "new"
                },
                a.via,
                a.run + 1,
                a.alert_id,
            )
        })
        .collect();
    format!(
        "{} acknowledged alert(s) missing after kill -9 (read back in run {}, after kill {run}):\n{}",
        missing.len(),
        run + 1,
        lines.join("\n")
    )
}

/// Fails the test with the replay settings and the kills so far.
fn fail(what: &str, replay: &str, kills: &[String]) -> ! {
    panic!(
        "{what}\nreplay with {replay}\nkills so far:\n{}",
        kills.join("\n")
    )
}

/// The last `n` lines of a daemon's logs.
fn tail(logs: &str, n: usize) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// CPU seconds used so far by this process and by its reaped children (the daemons and the
/// `cordon` tools), from /proc; zeros where that is not readable.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0.0))
                .collect()
        })
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0.0) / 100.0;
    (ticks(11) + ticks(12), ticks(13) + ticks(14))
}

fn config(root: &Path) -> PathBuf {
    let extra = format!(
        "[policy]\nwatch = false\n[executor]\nenabled = true\nconcurrency = 64\n\
         reconcile_interval_secs = 1\n{}{}",
        support::enrichment_toml(root),
        support::approvers_toml(&USERS),
    );
    write_config(root, &extra)
}

/// Slows the next few writes at one vendor (effect applied, answer held below cordon's
/// timeout), so a kill is more likely to find a write whose answer is not recorded yet.
fn slow_some_writes(v: &Vendors, rng: &mut fastrand::Rng) -> String {
    let hold = Duration::from_millis(rng.u64(200..1000));
    let times = rng.usize(1..=3);
    let (name, faults, method, path) = [
        ("okta", v.okta.faults(), "DELETE", "/sessions"),
        ("jira", v.jira.faults(), "POST", "/rest/api/3/issue"),
        ("thehive", v.hive.faults(), "POST", "/api/v1/alert"),
        (
            "crowdstrike",
            v.cs.faults(),
            "POST",
            "/iocs/entities/indicators/v1",
        ),
        ("crowdstrike", v.cs.faults(), "POST", "action_name=contain"),
        ("defender", v.mde.faults(), "POST", "/api/indicators"),
        ("defender", v.mde.faults(), "POST", "/isolate"),
        ("entra", v.entra.faults(), "POST", "revokeSignInSessions"),
        ("cloud-webhook", v.hook.faults(), "POST", "/v1/contain"),
    ][rng.usize(0..9)];
    faults.arm(Fault::on(method, path, FaultKind::TimeoutAfterEffect(hold)).times(times));
    format!(", {times} {name} write(s) held {} ms", hold.as_millis())
}

/// No acknowledged alert is missing (its case lists it and its `alert_received` record is in the
/// audit log), and no redelivery was taken in a second time (every case is an acknowledged one).
fn check_alerts(
    acks: &BTreeMap<usize, Ack>,
    planned: usize,
    cases: &BTreeMap<String, Vec<String>>,
    received: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if acks.len() != planned {
        problems.push(format!("{} of {planned} alerts acknowledged", acks.len()));
    }
    let mut acked_cases: BTreeSet<&str> = BTreeSet::new();
    for (n, a) in acks {
        acked_cases.insert(&a.case_id);
        let listed = cases.get(&a.case_id);
        if !listed.is_some_and(|ids| ids.contains(&a.alert_id)) || !received.contains(&a.alert_id) {
            problems.push(format!(
                "acknowledged alert crash-loop-{n} (alert {}, case {}, acknowledged over {} in \
                 run {}) is missing after kill -9: its case {} and its alert_received audit record {}",
                a.alert_id,
                a.case_id,
                a.via,
                a.run + 1,
                if listed.is_some() { "does not list it" } else { "is gone" },
                if received.contains(&a.alert_id) { "is there" } else { "is gone too" },
            ));
        }
    }
    for (case, ids) in cases {
        if !acked_cases.contains(case.as_str()) {
            problems.push(format!(
                "case {case} (alerts {ids:?}) belongs to no acknowledged alert: a redelivery was \
                 taken in a second time"
            ));
        }
    }
    problems
}

/// No approval lost or double-counted: every vote answered OK is in its action's votes exactly
/// once (and counted once in the audit log), nobody is counted twice, nothing from the requester
/// or an outsider counts, and no action got past its approvals with fewer than its tier needs.
fn check_votes(
    votes: &Votes,
    acts: &[Act],
    counted_in_audit: &BTreeMap<(String, String), usize>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let by_id: BTreeMap<&str, &Act> = acts.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut ok_by: BTreeMap<(&str, &str), Vec<&VoteOk>> = BTreeMap::new();
    for o in &votes.ok {
        ok_by.entry((&o.action_id, &o.user)).or_default().push(o);
    }
    for ((id, user), oks) in &ok_by {
        let Some(a) = by_id.get(id) else {
            problems.push(format!("{user}'s OK vote on {id}: the action is gone"));
            continue;
        };
        let mine: Vec<&(String, String)> = a.votes.iter().filter(|(u, _)| u == user).collect();
        let decision = if oks[0].approve { "approve" } else { "deny" };
        // Only a vote not recorded yet is answered anything but `already_counted`: a second
        // such answer means the first one was lost.
        let first_answers = oks
            .iter()
            .filter(|o| o.outcome != "already_counted")
            .count();
        if mine.len() != 1 || mine[0].1 != decision || first_answers > 1 {
            problems.push(format!(
                "{user}'s vote ({decision}) on {} was answered OK {} time(s) ((outcome, run): \
                 {:?}) but the action holds {} vote(s) by {user}; all its votes: {:?}",
                a.describe(),
                oks.len(),
                oks.iter()
                    .map(|o| (&o.outcome, o.run + 1))
                    .collect::<Vec<_>>(),
                mine.len(),
                a.votes
            ));
        }
        let in_audit = counted_in_audit
            .get(&(id.to_string(), user.to_string()))
            .copied();
        if in_audit != Some(1) {
            problems.push(format!(
                "{user}'s OK vote on {} is recorded as counted {} time(s) in the audit log",
                a.describe(),
                in_audit.unwrap_or(0)
            ));
        }
    }
    for ((id, user), n) in counted_in_audit {
        if *n > 1 {
            problems.push(format!(
                "the audit log counts {user}'s vote on {id} {n} times"
            ));
        }
    }
    for a in acts {
        let users: BTreeSet<&str> = a.votes.iter().map(|(u, _)| u.as_str()).collect();
        if users.len() != a.votes.len() {
            problems.push(format!(
                "{} counts a user twice: {:?}",
                a.describe(),
                a.votes
            ));
        }
        for (u, _) in &a.votes {
            if *u == a.requester || u == "mallory" {
                problems.push(format!("{} holds a vote by {u}", a.describe()));
            }
        }
        let needed = match a.tier.as_str() {
            "one_approver" => 1,
            "two_person" => 2,
            _ => 0,
        };
        let approvers = a.votes.iter().filter(|(_, d)| d == "approve").count();
        if PAST_APPROVAL.contains(&a.state.as_str()) && approvers < needed {
            problems.push(format!(
                "{} ran with {approvers} approval(s): {:?}",
                a.describe(),
                a.votes
            ));
        }
    }
    problems.extend(votes.violations.iter().cloned());
    problems
}

/// At most one effect per idempotency key at the vendors: every effect belongs to exactly one
/// action, a succeeded action left exactly one and one that did not run or failed left none.
/// Returns the problems and the number of effects.
fn check_effects(
    v: &Vendors,
    acts: &[Act],
    effect_of: &BTreeMap<(String, String), String>,
) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut effects: BTreeMap<String, usize> = BTreeMap::new();
    for (vendor, snap) in [
        ("okta", v.okta.effects().snapshot()),
        ("entra", v.entra.effects().snapshot()),
        ("crowdstrike", v.cs.effects().snapshot()),
        ("defender", v.mde.effects().snapshot()),
        ("cloud-webhook", v.hook.effects().snapshot()),
        ("thehive", v.hive.effects().snapshot()),
    ] {
        for (k, n) in snap {
            effects.insert(format!("{vendor}|{k}"), n);
        }
    }
    for issue in v.jira.issues() {
        for l in issue["fields"]["labels"].as_array().into_iter().flatten() {
            if let Some(l) = l.as_str().filter(|l| l.starts_with("cordon-")) {
                *effects.entry(format!("jira|{l}")).or_default() += 1;
            }
        }
    }
    let mut claimed: BTreeMap<String, &Act> = BTreeMap::new();
    for a in acts.iter().filter(|a| a.connector != "cordon") {
        let key = match (a.connector.as_str(), a.kind.as_str()) {
            ("jira", "create_ticket") => Some(format!("jira|{}", a.label)),
            ("thehive", "create_ticket") => Some(format!("thehive|alert:{}", a.label)),
            (c, _) => effect_of
                .get(&(c.to_string(), a.value().to_string()))
                .cloned(),
        };
        let Some(key) = key else {
            problems.push(format!(
                "{} is not an action this test planned",
                a.describe()
            ));
            continue;
        };
        if let Some(other) = claimed.insert(key.clone(), a) {
            problems.push(format!(
                "{} and {} share the effect {key}",
                a.describe(),
                other.describe()
            ));
        }
        let n = effects.get(&key).copied().unwrap_or(0);
        let want = match a.state.as_str() {
            "succeeded" => 1..=1,
            "failed" | "denied" | "rejected" | "expired" => 0..=0,
            _ => 0..=1,
        };
        if n > 1 || !want.contains(&n) {
            problems.push(format!(
                "{} left {n} effect(s) at the vendor ({key})",
                a.describe()
            ));
        }
    }
    for (k, n) in &effects {
        if !claimed.contains_key(k) {
            problems.push(format!("the vendor applied {k} {n} time(s) for no action"));
        }
    }
    (problems, effects.values().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_loses_no_ack_vote_or_audit_record_and_never_repeats_an_effect() {
    let s = Settings::from_env();
    let replay = s.replay();
    eprintln!("crash_loop: replay with {replay}");
    let started = Instant::now();
    let v = Vendors::start().await;
    let (dir, _) = support::workspace();
    let root = &dir.path().to_path_buf();
    // CORDON_CRASH_KEEP=1 keeps the data dir, the exports and the daemons' logs for a
    // post-mortem.
    let _dir = if std::env::var_os("CORDON_CRASH_KEEP").is_some() {
        eprintln!("crash_loop: keeping {}", dir.keep().display());
        None
    } else {
        Some(dir)
    };
    let data = root.join("data");
    v.wire(root, true);

    // The alerts, their targets at the fakes, and the enrichment that sets their tiers.
    let mut rng = fastrand::Rng::with_seed(s.seed);
    let plan: Vec<Planned> = (0..s.alerts)
        .map(|n| Planned {
            n,
            family: Family::pick(&mut rng),
            grpc: rng.u32(0..100) < 20,
            attempts: 0,
        })
        .collect();
    let mut effect_of: BTreeMap<(String, String), String> = BTreeMap::new();
    let (mut intel, mut assets) = (String::new(), String::new());
    for p in &plan {
        effect_of.extend(p.register(&v));
        p.enrichment(&mut intel, &mut assets);
    }
    std::fs::write(root.join("enrichment/intel.toml"), intel).unwrap();
    std::fs::write(root.join("enrichment/assets.toml"), assets).unwrap();
    let cfg = config(root);
    let mut snapshot_after: BTreeSet<usize> = BTreeSet::new();
    snapshot_after.insert(s.kills - 1);
    while snapshot_after.len() < SNAPSHOTS.min(s.kills) {
        snapshot_after.insert(rng.usize(0..s.kills));
    }

    let mut queue: VecDeque<Planned> = plan.iter().cloned().collect();
    let mut acks: BTreeMap<usize, Ack> = BTreeMap::new();
    // Acknowledged alerts not read back after a restart yet.
    let mut unverified: BTreeMap<usize, Ack> = BTreeMap::new();
    let mut votes = Votes::default();
    let mut kills: Vec<String> = Vec::new();
    let mut snapshot: Vec<u64> = Vec::new();
    let mut snapshots = 0;
    // One HTTP client for the whole test (building one reads the system's root certificates).
    let http = http_client();
    let mut tracker = Tracker::new(http.clone());
    let mut busy_runs = 0;
    let mut problems: Vec<String> = Vec::new();

    let merge = |posted: Vec<(Planned, Option<Ack>)>,
                 acks: &mut BTreeMap<usize, Ack>,
                 unverified: &mut BTreeMap<usize, Ack>,
                 queue: &mut VecDeque<Planned>,
                 tracker: &mut Tracker,
                 problems: &mut Vec<String>| {
        let mut again = Vec::new();
        for (p, ack) in posted {
            match ack {
                Some(a) => {
                    if a.duplicate && p.attempts == 1 {
                        problems.push(format!(
                            "{} was answered duplicate on its first delivery: {a:?}",
                            p.tag()
                        ));
                    }
                    tracker.add_case(&a.case_id);
                    unverified.insert(p.n, a.clone());
                    acks.insert(p.n, a);
                }
                None => again.push(p),
            }
        }
        for p in again.into_iter().rev() {
            queue.push_front(p);
        }
    };

    for run in 0..s.kills {
        let mut rr = s.rng(run);
        v.disarm_all();
        let slowed = if rr.u32(0..100) < 25 {
            slow_some_writes(&v, &mut rr)
        } else {
            String::new()
        };
        let runs_left = s.kills - run;
        let mean = queue.len().div_ceil(runs_left);
        let size = rr.usize(mean / 2..=mean + mean / 2).min(queue.len());
        let batch: Vec<Planned> = queue.drain(..size).collect();
        let workers = rr.usize(1..=8);
        let kill_at = if busy_runs >= MAX_BUSY_RUNS {
            KillAt::Idle
        } else {
            match rr.u32(0..100) {
                0..35 if !batch.is_empty() => KillAt::Ack(rr.usize(1..=batch.len())),
                0..65 => KillAt::After(rr.u64(0..=1500)),
                65..80 => KillAt::VendorRequest(rr.usize(1..=20)),
                80..92 => KillAt::Vote(rr.usize(1..=3)),
                _ => KillAt::Idle,
            }
        };
        busy_runs = if matches!(kill_at, KillAt::Idle) {
            0
        } else {
            busy_runs + 1
        };

        let mut d = Daemon::start(root, &format!("run{run}"), serve_args(&cfg)).await;
        let ready = Instant::now();
        let ctl = Arc::new(RunCtl::default());
        let unread: Vec<(usize, Ack)> = unverified.iter().map(|(n, a)| (*n, a.clone())).collect();
        let reader = tokio::spawn(read_back(http.clone(), d.base.clone(), unread));
        let poster = tokio::spawn(deliver_all(
            http.clone(),
            d.base.clone(),
            d.grpc.clone(),
            batch,
            workers,
            ctl.clone(),
            run,
        ));
        let voter = tokio::spawn(vote_all(
            d.grpc.clone(),
            s.rng(run + 1_000_000),
            ctl.clone(),
            run,
        ));
        let gave_up = trigger(kill_at, &ctl, &v, ready, &mut tracker, &d.base).await;
        if let Some(status) = d.exited() {
            fail(
                &format!(
                    "the daemon exited on its own in run {run} ({status}):\n{}",
                    tail(&d.logs(), 100)
                ),
                &replay,
                &kills,
            );
        }
        let (acked, voted, requests) = (
            ctl.acks.load(Ordering::SeqCst),
            ctl.votes.load(Ordering::SeqCst),
            v.requests(),
        );
        d.kill9();
        let at = ready.elapsed();
        ctl.stop();
        let posted = poster.await.unwrap_or_else(|e| rethrow(e));
        let cast = voter.await.unwrap_or_else(|e| rethrow(e));
        let (present, missing) = reader.await.unwrap_or_else(|e| rethrow(e));
        for n in present {
            unverified.remove(&n);
        }
        for c in std::mem::take(&mut *lock(&ctl.new_cases)) {
            tracker.add_case(&c);
        }
        let sent = ctl.sent.load(Ordering::SeqCst);
        merge(
            posted,
            &mut acks,
            &mut unverified,
            &mut queue,
            &mut tracker,
            &mut problems,
        );
        votes.ok.extend(cast.ok);
        votes.lost += cast.lost;
        votes.violations.extend(cast.violations);
        for (k, n) in cast.refused {
            *votes.refused.entry(k).or_default() += n;
        }
        let line = format!(
            "kill {}/{}: {kill_at:?}{} -> SIGKILL {} ms after ready (t+{:.1} s): {acked} ack(s) of \
             {sent} sent ({workers} in flight), {voted} OK vote(s), vendor requests so far \
             {requests}{slowed}",
            run + 1,
            s.kills,
            gave_up.map(|g| format!(" ({g})")).unwrap_or_default(),
            at.as_millis(),
            started.elapsed().as_secs_f64(),
        );
        eprintln!("crash_loop: {line}");
        kills.push(line);
        if !missing.is_empty() {
            fail(&lost_acks(&missing, run), &replay, &kills);
        }

        // Between kills: the chain verifies as the kill left it, and nothing recorded before
        // an earlier snapshot changed.
        if snapshot_after.contains(&run) {
            // `verify` is a full pass too: once, on the chain exactly as the last kill left it.
            if run + 1 == s.kills
                && let Err(e) = verify_audit(&data)
            {
                fail(
                    &format!(
                        "the audit chain does not verify after kill {}: {e}",
                        run + 1
                    ),
                    &replay,
                    &kills,
                );
            }
            let now = export_audit(&data, &root.join("audit-snapshot.jsonl"), |_| {})
                .and_then(|now| {
                    same_prefix(&snapshot, &now, &format!("kill {}", run + 1)).map(|()| now)
                })
                .unwrap_or_else(|e| fail(&e, &replay, &kills));
            eprintln!(
                "crash_loop: snapshot after kill {}: {} audit records, the {} of the previous \
                 snapshot unchanged",
                run + 1,
                now.len(),
                snapshot.len()
            );
            snapshot = now;
            snapshots += 1;
        }
    }

    // The last restart: deliver what is left, vote on everything, and wait (bounded) until
    // every action is over.
    v.disarm_all();
    let last_restart = Instant::now();
    let mut d = Daemon::start(root, "final", serve_args(&cfg)).await;
    let unread: Vec<(usize, Ack)> = unverified.iter().map(|(n, a)| (*n, a.clone())).collect();
    let (_, missing) = read_back(http.clone(), d.base.clone(), unread).await;
    if !missing.is_empty() {
        fail(&lost_acks(&missing, s.kills), &replay, &kills);
    }
    let ctl = Arc::new(RunCtl::default());
    let voter = tokio::spawn(vote_all(
        d.grpc.clone(),
        s.rng(usize::MAX / 2),
        ctl.clone(),
        s.kills,
    ));
    while !queue.is_empty() {
        let batch: Vec<Planned> = queue.drain(..).collect();
        let posted = deliver_all(
            http.clone(),
            d.base.clone(),
            d.grpc.clone(),
            batch,
            4,
            Arc::new(RunCtl::default()),
            s.kills,
        )
        .await;
        merge(
            posted,
            &mut acks,
            &mut unverified,
            &mut queue,
            &mut tracker,
            &mut problems,
        );
        if !queue.is_empty() && last_restart.elapsed() > SETTLE {
            fail(
                &format!(
                    "{} alert(s) still not acknowledged {SETTLE:?} after the last restart",
                    queue.len()
                ),
                &replay,
                &kills,
            );
        }
    }
    let (cases, acts) = loop {
        if tracker.refresh(&d.base, false).await {
            let (cases, acts) = read_everything(&http, &d.base).await;
            let open: Vec<&Act> = acts.iter().filter(|a| !is_done(&a.state)).collect();
            if open.is_empty() {
                break (cases, acts);
            }
            for a in open {
                tracker.open.insert(a.id.clone(), a.state.clone());
            }
        }
        if last_restart.elapsed() > SETTLE {
            tracker.refresh(&d.base, true).await;
            let open: Vec<String> = tracker
                .open
                .iter()
                .take(30)
                .map(|(id, st)| format!("{id} {st}"))
                .collect();
            fail(
                &format!(
                    "{} action(s) (and {} case(s) unread) not over {SETTLE:?} after the last \
                     restart: {open:#?}\n{}",
                    tracker.open.len(),
                    tracker.unread.len(),
                    tail(&d.logs(), 100)
                ),
                &replay,
                &kills,
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let settled_in = last_restart.elapsed();
    if settled_in > SETTLE {
        fail(
            &format!(
                "the actions took {settled_in:?} to be over after the last restart (at most {SETTLE:?})"
            ),
            &replay,
            &kills,
        );
    }
    ctl.stop();
    let cast = voter.await.unwrap_or_else(|e| rethrow(e));
    votes.ok.extend(cast.ok);
    votes.lost += cast.lost;
    votes.violations.extend(cast.violations);
    for (k, n) in cast.refused {
        *votes.refused.entry(k).or_default() += n;
    }
    let status = d.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", d.logs());

    // ---- The audit chain: verifies, contiguous, and every snapshotted record in place.
    if let Err(e) = verify_audit(&data) {
        fail(
            &format!("the audit chain does not verify after the last restart: {e}"),
            &replay,
            &kills,
        );
    }
    let mut received: BTreeSet<String> = BTreeSet::new();
    // (action, user) → votes recorded as counted (or rejecting)
    let mut counted_in_audit: BTreeMap<(String, String), usize> = BTreeMap::new();
    let audit = export_audit(&data, &root.join("audit-final.jsonl"), |line| {
        if !line.contains("\"kind\":\"alert_received\"") && !line.contains("\"kind\":\"vote\"") {
            return;
        }
        let r: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match r["kind"].as_str() {
            Some("alert_received") if r["data"]["duplicate_of"].is_null() => {
                received.insert(r["alert_id"].as_str().unwrap_or("").to_string());
            }
            Some("vote")
                if matches!(r["data"]["outcome"].as_str(), Some("counted" | "rejected")) =>
            {
                *counted_in_audit
                    .entry((
                        r["action_id"].as_str().unwrap_or("").to_string(),
                        r["data"]["user"].as_str().unwrap_or("").to_string(),
                    ))
                    .or_default() += 1;
            }
            _ => {}
        }
    })
    .and_then(|now| same_prefix(&snapshot, &now, "the last restart").map(|()| now))
    .unwrap_or_else(|e| fail(&e, &replay, &kills));

    problems.extend(check_alerts(&acks, plan.len(), &cases, &received));
    problems.extend(check_votes(&votes, &acts, &counted_in_audit));
    let (effect_problems, effects) = check_effects(&v, &acts, &effect_of);
    problems.extend(effect_problems);

    // ---- The mix really had every tier, and each one ran.
    let mut tiers: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for a in &acts {
        *tiers
            .entry((a.tier.as_str(), a.state.as_str()))
            .or_default() += 1;
    }
    if s.alerts >= 50 {
        for t in ["auto", "one_approver", "two_person"] {
            if tiers.get(&(t, "succeeded")).copied().unwrap_or(0) == 0 {
                problems.push(format!("no {t} action succeeded: {tiers:?}"));
            }
        }
    }

    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &votes.ok {
        *outcomes.entry(o.outcome.as_str()).or_default() += 1;
    }
    let via: BTreeMap<&str, usize> = acks.values().fold(BTreeMap::new(), |mut m, a| {
        *m.entry(a.via).or_default() += 1;
        m
    });
    let redelivered = acks.values().filter(|a| a.duplicate).count();
    let (cpu_test, cpu_daemons) = cpu_seconds();
    let summary = format!(
        "{} alerts ({via:?}, {redelivered} answered as redeliveries), {} kills, {} actions by \
         (tier, state) {tiers:?}, OK votes {outcomes:?}, refused votes {:?}, {} votes unanswered, \
         {} vendor effects, {} audit records ({snapshots} snapshots), settled {:.1} s after the \
         last restart, {:.1} s in all (CPU: test process {cpu_test:.0} s, daemons and tools \
         {cpu_daemons:.0} s)",
        acks.len(),
        s.kills,
        acts.len(),
        votes.refused,
        votes.lost,
        effects,
        audit.len(),
        settled_in.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    eprintln!("crash_loop: {summary}");
    if !problems.is_empty() {
        let shown: Vec<&String> = problems.iter().take(40).collect();
        fail(
            &format!(
                "{} problem(s) after {} kills:\n{shown:#?}\n{summary}",
                problems.len(),
                s.kills
            ),
            &replay,
            &kills,
        );
    }
}
