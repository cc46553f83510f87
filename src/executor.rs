//! The executor: runs approved actions through their connectors, the same loop for every
//! vendor, and fails closed.
//!
//! Owns: the order of an execution — claim (recorded Allow, policy re-check, target lease,
//! durable intent) → resolve → probe → plan (already done = success without a write; busy or
//! ambiguous = refuse and escalate) → write (after recording that it is about to go out) →
//! poll → verify by probe → record — plus retries with backoff, the unknown-outcome rule
//! (resolved by probe, never by a blind resend), per-target serialisation, resumption after a
//! restart, and periodic reconciliation of `unknown` actions. Every step it takes is recorded
//! by the engine before the next one starts; it holds no state of its own that a crash could
//! lose. It never calls a vendor itself: `connector` does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::action::{ActionKind, ActionRequest, ActionState, ExecPhase, TargetKind};
use crate::connector::client::{
    self, Answer, Outcome, ProbeState, Rendered, Vars, WriteClass, backoff, classify_write,
    read_probe,
};
use crate::connector::resolve::{self, Resolution};
use crate::connector::spec::{ActionSpec, Probe, RequestSpec};
use crate::connector::{BUILTIN, Connector, Mode, Registry};
use crate::engine::{self, EngineError, EngineHandle, ExecOp, ExecReply, ExecUpdate, RunnableRx};
use crate::store::Store;

/// What the executor needs.
pub struct ExecutorParts {
    pub engine: EngineHandle,
    pub store: Store,
    pub connectors: Registry,
    pub concurrency: usize,
    pub reconcile_every: Duration,
}

struct Shared {
    parts: ExecutorParts,
    cancel: CancellationToken,
    /// Actions being driven now (an id is driven by one task at a time).
    active: Mutex<HashSet<String>>,
    /// One lock per connector and target: one in-flight write per target.
    targets: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    permits: Semaphore,
}

/// Actions in hand at once (driving, or waiting for their target or a permit): a few per
/// permit. The rest stay in the durable queue, not in memory: one task per queued action grew
/// the daemon by ~1 KiB per stored record when ingest ran ahead of the vendors.
fn in_hand_cap(concurrency: usize) -> usize {
    (concurrency.max(1) * 8).max(16)
}

/// Announcements the engine may have outstanding before they are dropped (the executor then
/// reads the durable queue instead).
pub fn announce_capacity(concurrency: usize) -> usize {
    in_hand_cap(concurrency) * 4
}

/// Runs until `cancel`: drives everything queued in the store, then what the engine announces,
/// and re-probes `unknown` actions periodically.
pub async fn run(parts: ExecutorParts, mut rx: RunnableRx, cancel: CancellationToken) {
    let every = parts.reconcile_every;
    let permits = Semaphore::new(parts.concurrency.max(1));
    let slots = Arc::new(Semaphore::new(in_hand_cap(parts.concurrency)));
    let shared = Arc::new(Shared {
        parts,
        cancel: cancel.clone(),
        active: Mutex::new(HashSet::new()),
        targets: Mutex::new(HashMap::new()),
        permits,
    });
    let tasks = tokio_util::task::TaskTracker::new();
    // Resume what a previous run left (approved, executing, unknown).
    rescan(&shared, &tasks, &slots).await;
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await;
    loop {
        // A slot first: nothing is taken from the channel that could not start.
        let slot = tokio::select! {
            _ = cancel.cancelled() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            id = rx.recv() => match id {
                Some(id) => spawn(&shared, &tasks, id, slot),
                None => break,
            },
            // Announcements were dropped while the channel was full: read the durable queue
            // once the channel has drained.
            _ = std::future::ready(()), if rx.is_empty() && rx.missed() => {
                drop(slot);
                rx.clear_missed();
                rescan(&shared, &tasks, &slots).await;
            }
            _ = timer.tick() => {
                drop(slot);
                rescan(&shared, &tasks, &slots).await;
            }
        }
    }
    tasks.close();
    tasks.wait().await;
    tracing::info!("executor stopped; unfinished actions resume on the next start");
}

/// Takes up everything in the durable queue that is not in hand yet, a page at a time, as
/// slots free up.
async fn rescan(
    shared: &Arc<Shared>,
    tasks: &tokio_util::task::TaskTracker,
    slots: &Arc<Semaphore>,
) {
    let mut after: Option<String> = None;
    loop {
        let page = match engine::read::runnable(&shared.parts.store, after.as_deref(), 256) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the executor queue");
                return;
            }
        };
        let Some(last) = page.last().cloned() else {
            return;
        };
        for id in page {
            if shared
                .active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&id)
            {
                continue;
            }
            let slot = tokio::select! {
                _ = shared.cancel.cancelled() => return,
                s = slots.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => return,
                },
            };
            spawn(shared, tasks, id, slot);
        }
        after = Some(last);
    }
}

fn spawn(
    shared: &Arc<Shared>,
    tasks: &tokio_util::task::TaskTracker,
    id: String,
    slot: OwnedSemaphorePermit,
) {
    if !shared
        .active
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone())
    {
        return;
    }
    let s = shared.clone();
    tasks.spawn(async move {
        // Waiting for a permit or for the target is abandoned at shutdown: the action stays
        // queued (`xq/`) and resumes on the next start, so a drain waits only for actions
        // already talking to a vendor.
        // The target first, then a permit: actions queued behind one target do not hold
        // permits other targets could use.
        let lock = action_lock(&s, &id);
        let ready = async {
            let guard = match &lock {
                Some((_, l)) => Some(l.clone().lock_owned().await),
                None => None,
            };
            (s.permits.acquire().await.ok(), guard)
        };
        let (permit, guard) = tokio::select! {
            r = ready => r,
            _ = s.cancel.cancelled() => (None, None),
        };
        if permit.is_some()
            && let Drive::Busy(holder) = drive(&s, &id).await
        {
                // Another action holds the target (an unknown outcome still being reconciled,
                // or a lease left by a previous run). Nothing is held while waiting: the
                // periodic rescan tries again.
                tracing::info!(action_id = %id, holder = %holder, "target is leased by another action; retrying at the next rescan");
        }
        drop(guard);
        drop(permit);
        if let Some((key, l)) = lock {
            // Forget the lock once nobody else waits on it (the map would otherwise grow by one
            // entry per target ever acted on).
            let mut m = s.targets.lock().unwrap_or_else(|p| p.into_inner());
            if Arc::strong_count(&l) == 2 {
                m.remove(&key);
            }
        }
        s.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        drop(slot);
    });
}

/// The per-target lock for an action, keyed like the engine's durable lease (connector and
/// target), so actions on one target wait for each other here instead of finding the lease
/// taken (case-level steps of one connector, such as enrich and summarize, share a target).
fn action_lock(s: &Shared, id: &str) -> Option<(String, Arc<tokio::sync::Mutex<()>>)> {
    let a = engine::read::action(&s.parts.store, id).ok().flatten()?;
    let key = format!("{}/{}:{}", a.connector, a.target.kind.as_str(), a.target.id);
    let l = s
        .targets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.clone())
        .or_default()
        .clone();
    Some((key, l))
}

/// Sleeps unless shutdown comes first; `false` on shutdown.
async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

enum Drive {
    Done,
    Busy(String),
}

/// Why a drive stopped early: shutdown (resume later) or the store failing (fail closed).
#[derive(Debug)]
enum Halt {
    Shutdown,
    Store(String),
}

impl From<EngineError> for Halt {
    fn from(e: EngineError) -> Halt {
        match e {
            EngineError::ShuttingDown => Halt::Shutdown,
            EngineError::Store(s) => Halt::Store(s),
        }
    }
}

async fn drive(s: &Arc<Shared>, id: &str) -> Drive {
    let Ok(Some(peek)) = engine::read::action(&s.parts.store, id) else {
        return Drive::Done;
    };
    let conn = s.parts.connectors.connectors.get(&peek.connector);
    let mode = if peek.connector == BUILTIN {
        "builtin"
    } else {
        match conn.map(|c| c.mode) {
            Some(Mode::Live) => "live",
            _ => "dry_run",
        }
    };
    let claimed = s
        .parts
        .engine
        .exec(ExecOp::Claim {
            action_id: id.to_string(),
            mode: mode.to_string(),
        })
        .await;
    let a = match claimed {
        Ok(ExecReply::Claimed(a)) => *a,
        Ok(ExecReply::Busy(holder)) => return Drive::Busy(holder),
        Ok(ExecReply::Refused(why)) => {
            tracing::info!(action_id = %id, reason = %why, "not executed");
            return Drive::Done;
        }
        Ok(_) => return Drive::Done,
        Err(e) => {
            tracing::error!(action_id = %id, error = %e, "could not record the execution intent; not executing");
            return Drive::Done;
        }
    };
    let mut run = Run {
        s: s.clone(),
        a,
        vars: Vars::default(),
    };
    let result = match (run.a.connector == BUILTIN, conn) {
        (true, _) => run.builtin().await,
        (false, None) => {
            run.finish(
                ActionState::Failed,
                "no such connector",
                Some(format!(
                    "connector {:?} is not configured; nothing was sent",
                    run.a.connector
                )),
            )
            .await
        }
        (false, Some(c)) => {
            let c = c.clone();
            run.connector(&c).await
        }
    };
    match result {
        Ok(()) | Err(Halt::Shutdown) => {}
        Err(Halt::Store(e)) => {
            tracing::error!(action_id = %id, error = %e, "the store failed mid-execution; stopping (it resumes from its intent record)")
        }
    }
    Drive::Done
}

struct Run {
    s: Arc<Shared>,
    a: ActionRequest,
    vars: Vars,
}

/// How the attempt loop continues.
enum Next {
    /// Probe again (after a retryable failure or an unknown outcome).
    Again,
    Stop,
}

impl Run {
    fn id(&self) -> String {
        self.a.action_id.clone()
    }

    fn exec(&self) -> &crate::action::Execution {
        self.a
            .execution
            .as_ref()
            .expect("claimed actions carry an intent record")
    }

    async fn record(
        &mut self,
        kind: &'static str,
        body: Value,
        update: ExecUpdate,
    ) -> Result<(), Halt> {
        match self
            .s
            .parts
            .engine
            .exec(ExecOp::Record {
                action_id: self.id(),
                kind,
                body,
                update,
            })
            .await?
        {
            ExecReply::Recorded(a) => {
                self.a = *a;
                Ok(())
            }
            ExecReply::Refused(why) => Err(Halt::Store(format!("record refused: {why}"))),
            _ => Ok(()),
        }
    }

    async fn finish(
        &mut self,
        to: ActionState,
        outcome: &str,
        escalate: Option<String>,
    ) -> Result<(), Halt> {
        tracing::info!(action_id = %self.a.action_id, kind = %self.a.kind, target = %self.a.target.id, state = %to, outcome, "action finished");
        self.s
            .parts
            .engine
            .exec(ExecOp::Finish {
                action_id: self.id(),
                to,
                outcome: outcome.to_string(),
                escalate,
            })
            .await?;
        Ok(())
    }

    /// Enrichment and case summaries: cordon's own actions.
    async fn builtin(&mut self) -> Result<(), Halt> {
        match self.a.kind {
            ActionKind::SummarizeCase => {
                let case = engine::read::case(&self.s.parts.store, &self.a.case_id)
                    .map_err(|e| Halt::Store(e.to_string()))?;
                let actions = case
                    .as_ref()
                    .map(|c| engine::read::actions_of(&self.s.parts.store, c))
                    .transpose()
                    .map_err(|e| Halt::Store(e.to_string()))?
                    .unwrap_or_default();
                let summary = case.map(|c| {
                    json!({
                        "title": c.title, "severity": c.severity, "rule_id": c.rule_id,
                        "alerts": c.alert_ids.len(), "duplicates": c.duplicate_count,
                        "entities": c.entities, "timeline": c.history,
                        "actions": actions.iter().map(|x| json!({"id": x.action_id, "kind": x.kind, "target": x.target.id, "state": x.state, "tier": x.tier})).collect::<Vec<_>>(),
                    })
                });
                self.record(
                    "case_summary",
                    json!({"summary": summary}),
                    ExecUpdate::default(),
                )
                .await?;
                self.finish(ActionState::Succeeded, "case summary written", None)
                    .await
            }
            ActionKind::Enrich => {
                self.finish(
                    ActionState::Succeeded,
                    "enrichment attached at ingest (see the case's enrichment records)",
                    None,
                )
                .await
            }
            k => {
                self.finish(
                    ActionState::Failed,
                    "not a built-in action",
                    Some(format!("the built-in connector does not perform {k}")),
                )
                .await
            }
        }
    }

    async fn connector(&mut self, c: &Connector) -> Result<(), Halt> {
        let Some(spec) = c.action(self.a.kind).cloned() else {
            return self
                .finish(
                    ActionState::Failed,
                    "connector lacks this action",
                    Some(format!(
                        "connector {} does not perform {}",
                        c.name, self.a.kind
                    )),
                )
                .await;
        };
        match build_vars(&self.s.parts.store, &self.a, c) {
            Ok(v) => self.vars = v,
            Err(e) => {
                let uncertain = self.uncertain();
                return self
                    .finish(
                        if uncertain {
                            ActionState::Unknown
                        } else {
                            ActionState::Failed
                        },
                        "cannot build the request",
                        Some(format!("{e}; nothing was sent")),
                    )
                    .await;
            }
        }
        match (c.mode, c.runtime.clone()) {
            (Mode::Live, Some(rt)) => self.live(c, &spec, &rt).await,
            _ => self.dry_run(c, &spec).await,
        }
    }

    /// Whether a write may already have reached the vendor.
    fn uncertain(&self) -> bool {
        self.a.state == ActionState::Unknown
            || matches!(self.exec().phase, ExecPhase::Writing | ExecPhase::Unknown)
    }

    /// Renders every request the action would send and records them; sends nothing.
    async fn dry_run(&mut self, c: &Connector, spec: &ActionSpec) -> Result<(), Halt> {
        let mut vars = self.vars.clone();
        let mut placeholders: Vec<String> = c
            .spec
            .resolve
            .values()
            .flat_map(|l| l.capture.keys().cloned())
            .collect();
        if let Some(p) = &spec.probe {
            placeholders.extend(p.capture.keys().cloned());
        }
        for n in placeholders {
            vars.set(format!("vendor.{n}"), format!("<vendor.{n}>"));
        }
        for n in spec.request.capture.keys() {
            vars.set(format!("write.{n}"), format!("<write.{n}>"));
        }
        let mut requests = Vec::new();
        let mut problems = Vec::new();
        let mut add = |phase: &str, r: &RequestSpec| match c.render(r, &vars) {
            Ok(x) => {
                let mut d = x.describe();
                d["phase"] = json!(phase);
                requests.push(d);
            }
            Err(e) => problems.push(format!("{phase}: {e}")),
        };
        if let Some(l) = c.spec.resolve.get(self.a.target.kind.as_str()) {
            add("resolve", &l.request);
        }
        if let Some(p) = &spec.probe {
            add("probe", &p.request);
        }
        add("write", &spec.request.request);
        if let Some(p) = &spec.poll {
            add("poll", &p.request);
        }
        let body = json!({"mode": "dry_run", "requests": requests, "problems": problems, "note": "rendered and recorded; nothing was sent"});
        self.record("dry_run", body, ExecUpdate::default()).await?;
        if problems.is_empty() {
            self.finish(
                ActionState::DryRun,
                "dry run: every request rendered and recorded, none sent",
                None,
            )
            .await
        } else {
            self.finish(
                ActionState::Failed,
                "dry run: a request could not be rendered",
                Some(problems.join("; ")),
            )
            .await
        }
    }

    /// One exchange, with its evidence recorded.
    async fn exchange(
        &mut self,
        rt: &client::Runtime,
        phase: &'static str,
        r: &Rendered,
        update: ExecUpdate,
    ) -> Result<client::Exchange, Halt> {
        // Shutdown does not wait for a slow vendor: the phase on record says whether a write
        // may be out, and the next start resolves it by probe.
        let ex = tokio::select! {
            _ = self.s.cancel.cancelled() => return Err(Halt::Shutdown),
            ex = rt.send(phase, r) => ex,
        };
        let mut ev = ex.evidence.clone();
        ev["kind"] = json!(self.a.kind);
        ev["target"] = json!(self.a.target);
        ev["outcome"] = json!(match &ex.outcome {
            Outcome::Answer(_) => "answered",
            Outcome::NotSent(_) => "not_sent",
            Outcome::Uncertain(_) => "unknown",
            Outcome::Redirect { .. } => "redirect_refused",
            Outcome::AuthFailed(_) => "auth_failed",
        });
        self.record("vendor_exchange", ev, update).await?;
        Ok(ex)
    }

    async fn retry_pause(
        &mut self,
        c: &Connector,
        phase: &str,
        reason: &str,
        vendor_wait: Option<Duration>,
    ) -> Result<bool, Halt> {
        let r = &c.spec.retry;
        let retries = self.exec().retries;
        let budget = r.max_attempts.saturating_mul(3);
        if retries >= budget {
            return Ok(false);
        }
        if vendor_wait.is_some_and(|w| w > Duration::from_secs(r.max_wait_secs)) {
            return Ok(false);
        }
        let wait = backoff(r, retries, vendor_wait);
        self.record(
            "retry",
            json!({"phase": phase, "reason": reason, "retry": retries + 1, "budget": budget, "wait_ms": wait.as_millis() as u64, "vendor_asked_ms": vendor_wait.map(|w| w.as_millis() as u64)}),
            ExecUpdate {
                retry: true,
                ..Default::default()
            },
        )
        .await?;
        if !pause(&self.s.cancel, wait).await {
            return Err(Halt::Shutdown);
        }
        Ok(true)
    }

    /// A read-only call (resolve, probe, poll) with retries; `Err(reason)` when it cannot get
    /// an answer.
    async fn read(
        &mut self,
        c: &Connector,
        rt: &client::Runtime,
        phase: &'static str,
        r: &RequestSpec,
    ) -> Result<Result<Answer, String>, Halt> {
        let rendered = match c.render(r, &self.vars) {
            Ok(x) => x,
            Err(e) => return Ok(Err(e)),
        };
        loop {
            let ex = self
                .exchange(rt, phase, &rendered, ExecUpdate::default())
                .await?;
            let (reason, wait) = match ex.outcome {
                Outcome::Answer(a) if a.status == 429 || a.status >= 500 => {
                    (format!("{phase} answered {}", a.status), ex.wait)
                }
                Outcome::Answer(a) => return Ok(Ok(a)),
                Outcome::NotSent(r) | Outcome::Uncertain(r) => (format!("{phase}: {r}"), ex.wait),
                Outcome::AuthFailed(r) => return Ok(Err(format!("authentication failed: {r}"))),
                Outcome::Redirect { status, location } => {
                    return Ok(Err(format!(
                        "the vendor redirected ({status}) to {location:?}; redirects are never followed"
                    )));
                }
            };
            if !self.retry_pause(c, phase, &reason, wait).await? {
                return Ok(Err(format!("gave up: {reason}")));
            }
        }
    }

    async fn probe(
        &mut self,
        c: &Connector,
        rt: &client::Runtime,
        phase: &'static str,
        p: &Probe,
    ) -> Result<Result<ProbeState, String>, Halt> {
        let ans = match self.read(c, rt, phase, &p.request).await? {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let (state, observed, caps) = read_probe(p, &ans.json, self.exec().intent_at);
        let vendor: BTreeMap<String, String> = caps
            .into_iter()
            .filter(|(k, v)| self.exec().vendor.get(k) != Some(v))
            .collect();
        for (k, v) in &vendor {
            self.vars.set(format!("vendor.{k}"), v.clone());
        }
        self.record(
            "probe_result",
            json!({"phase": phase, "state": state, "observed": observed, "status": ans.status}),
            ExecUpdate {
                vendor,
                ..Default::default()
            },
        )
        .await?;
        Ok(Ok(state))
    }

    async fn fail_closed(&mut self, outcome: &str, why: String) -> Result<(), Halt> {
        let to = if self.uncertain() {
            ActionState::Unknown
        } else {
            ActionState::Failed
        };
        self.finish(to, outcome, Some(why)).await
    }

    async fn live(
        &mut self,
        c: &Connector,
        spec: &ActionSpec,
        rt: &client::Runtime,
    ) -> Result<(), Halt> {
        // Resolve the vendor's id for the target once; it is kept in the intent record.
        if let Some(l) = c.spec.resolve.get(self.a.target.kind.as_str()) {
            let missing = l
                .capture
                .keys()
                .any(|k| !self.exec().vendor.contains_key(k));
            if missing {
                let ans = match self.read(c, rt, "resolve", &l.request).await? {
                    Ok(a) => a,
                    Err(e) => return self.fail_closed("target lookup failed", e).await,
                };
                match resolve::pick(l, &ans.json) {
                    Resolution::One { vendor, candidates } => {
                        for (k, v) in &vendor {
                            self.vars.set(format!("vendor.{k}"), v.clone());
                        }
                        let mut body = json!({"target": self.a.target, "vendor": vendor});
                        if let (Some(mut c), Some(tb)) = (candidates, &l.tie_break) {
                            rt.redact(&mut c);
                            body["candidates"] = c;
                            body["tie_break"] = json!({"newest": tb.newest});
                        }
                        self.record(
                            "target_resolved",
                            body,
                            ExecUpdate {
                                vendor,
                                ..Default::default()
                            },
                        )
                        .await?;
                    }
                    Resolution::NotFound => {
                        return self
                            .fail_closed(
                                "target unknown to the vendor",
                                format!(
                                    "{} {:?} was not found at {} (status {}); nothing was sent",
                                    self.a.target.kind.as_str(),
                                    self.a.target.id,
                                    c.name,
                                    ans.status
                                ),
                            )
                            .await;
                    }
                    Resolution::Ambiguous {
                        mut candidates,
                        why,
                    } => {
                        rt.redact(&mut candidates);
                        let n = candidates["count"].as_u64().unwrap_or(0);
                        self.record(
                            "target_ambiguous",
                            json!({"target": self.a.target, "connector": c.name, "reason": why, "candidates": candidates}),
                            ExecUpdate::default(),
                        )
                        .await?;
                        return self
                            .fail_closed(
                                "target ambiguous",
                                format!(
                                    "{} {:?} does not resolve to exactly one object at {} ({why}; {n} candidates recorded); nothing was sent",
                                    self.a.target.kind.as_str(),
                                    self.a.target.id,
                                    c.name,
                                ),
                            )
                            .await;
                    }
                }
            }
        }
        let mut attempts = 0u32;
        loop {
            let uncertain = self.uncertain();
            if uncertain {
                let settle = Duration::from_millis(c.spec.retry.unknown_settle_ms);
                if !pause(&self.s.cancel, settle).await {
                    return Err(Halt::Shutdown);
                }
            }
            // Probe and plan.
            let state = match &spec.probe {
                Some(p) => match self.probe(c, rt, "probe", p).await? {
                    Ok(s) => Some(s),
                    Err(e) => {
                        return self
                            .fail_closed(
                                "probe failed",
                                format!("cannot read the target's state: {e}"),
                            )
                            .await;
                    }
                },
                None => None,
            };
            match state {
                Some(ProbeState::Done) => {
                    let outcome = if self.exec().writes_sent > 0 {
                        "done; confirmed by probe"
                    } else {
                        "already in the desired state; nothing was sent"
                    };
                    return self.finish(ActionState::Succeeded, outcome, None).await;
                }
                Some(ProbeState::Pending) => return self.complete(c, spec, rt).await,
                Some(ProbeState::Busy) => {
                    return self
                        .fail_closed(
                            "target busy",
                            "another operation on the target is in flight; refusing to act".into(),
                        )
                        .await;
                }
                Some(ProbeState::Failed) => {
                    return self
                        .fail_closed(
                            "vendor reports failure",
                            "the vendor reports the operation failed".into(),
                        )
                        .await;
                }
                Some(ProbeState::Ambiguous) => {
                    return self
                        .fail_closed(
                            "ambiguous state",
                            "the probe's answer matches no known state; refusing to act".into(),
                        )
                        .await;
                }
                Some(ProbeState::NotDone) | None => {}
            }
            if uncertain {
                if state.is_none() && !spec.resend_safe {
                    return self
                        .finish(
                            ActionState::Unknown,
                            "outcome unknown",
                            Some("an earlier write may have reached the vendor and nothing can probe it; not resending".into()),
                        )
                        .await;
                }
                self.record(
                    "reconciled",
                    json!({"finding": if state.is_some() { "the probe shows the earlier request had no effect" } else { "the vendor deduplicates this write; it is safe to repeat" }}),
                    ExecUpdate {
                        phase: Some(ExecPhase::Claimed),
                        ..Default::default()
                    },
                )
                .await?;
            }
            if attempts >= c.spec.retry.max_attempts {
                return self
                    .fail_closed(
                        "gave up",
                        format!("{attempts} write attempts without a definite answer"),
                    )
                    .await;
            }
            attempts += 1;
            match self.write(c, spec, rt).await? {
                Next::Stop => return Ok(()),
                Next::Again => continue,
            }
        }
    }

    /// Sends the write once and reads its answer.
    async fn write(
        &mut self,
        c: &Connector,
        spec: &ActionSpec,
        rt: &client::Runtime,
    ) -> Result<Next, Halt> {
        let rendered = match c.render(&spec.request.request, &self.vars) {
            Ok(r) => r,
            Err(e) => {
                self.fail_closed("cannot render the write", format!("{e}; nothing was sent"))
                    .await?;
                return Ok(Next::Stop);
            }
        };
        // Durable before it goes out: a crash from here on means "may have been sent".
        self.record(
            "write_intent",
            json!({"request": rendered.describe(), "write": self.exec().writes_sent + 1}),
            ExecUpdate {
                phase: Some(ExecPhase::Writing),
                write_sent: true,
                ..Default::default()
            },
        )
        .await?;
        let ex = self
            .exchange(rt, "write", &rendered, ExecUpdate::default())
            .await?;
        match ex.outcome {
            Outcome::Answer(ans) => {
                let class = classify_write(&spec.request, &ans);
                match class {
                    WriteClass::Accepted | WriteClass::AlreadyDone => {
                        let caps =
                            client::capture(&spec.request.capture, &ans.json).unwrap_or_default();
                        for (k, v) in &caps {
                            self.vars.set(format!("write.{k}"), v.clone());
                        }
                        self.record(
                            "write_result",
                            json!({"class": class, "status": ans.status, "captured": caps}),
                            ExecUpdate {
                                phase: Some(ExecPhase::Polling),
                                vendor: caps
                                    .iter()
                                    .map(|(k, v)| (format!("write.{k}"), v.clone()))
                                    .collect(),
                                ..Default::default()
                            },
                        )
                        .await?;
                        self.complete(c, spec, rt).await?;
                        Ok(Next::Stop)
                    }
                    WriteClass::Busy => {
                        self.write_without_effect(json!({"class": class, "status": ans.status}))
                            .await?;
                        self.finish(
                            ActionState::Failed,
                            "vendor busy",
                            Some(format!(
                                "the vendor answered {} (another operation in flight); refusing to resend",
                                ans.status
                            )),
                        )
                        .await?;
                        Ok(Next::Stop)
                    }
                    WriteClass::Throttled => {
                        // A 429 was not processed: back to "nothing sent".
                        self.write_without_effect(json!({"class": class, "status": ans.status}))
                            .await?;
                        if self
                            .retry_pause(c, "write", "rate limited (429)", ex.wait)
                            .await?
                        {
                            Ok(Next::Again)
                        } else {
                            self.fail_closed(
                                "rate limited",
                                "the vendor kept rate-limiting (or asked for a wait longer than retry.max_wait_secs)".into(),
                            )
                            .await?;
                            Ok(Next::Stop)
                        }
                    }
                    WriteClass::ServerError => {
                        // A 5xx may or may not have been applied: the probe decides.
                        self.record(
                            "outcome_unknown",
                            json!({"reason": format!("the vendor answered {}", ans.status)}),
                            ExecUpdate {
                                phase: Some(ExecPhase::Unknown),
                                ..Default::default()
                            },
                        )
                        .await?;
                        if self
                            .retry_pause(
                                c,
                                "write",
                                &format!("server error {}", ans.status),
                                ex.wait,
                            )
                            .await?
                        {
                            Ok(Next::Again)
                        } else {
                            self.fail_closed(
                                "vendor failing",
                                format!("the vendor kept failing ({})", ans.status),
                            )
                            .await?;
                            Ok(Next::Stop)
                        }
                    }
                    WriteClass::Rejected => {
                        self.write_without_effect(json!({"class": class, "status": ans.status}))
                            .await?;
                        self.finish(
                            ActionState::Failed,
                            "vendor rejected the request",
                            Some(format!("the vendor rejected the request ({})", ans.status)),
                        )
                        .await?;
                        Ok(Next::Stop)
                    }
                }
            }
            Outcome::NotSent(reason) => {
                self.write_without_effect(json!({"class": "not_sent", "reason": reason}))
                    .await?;
                if self.retry_pause(c, "write", &reason, ex.wait).await? {
                    Ok(Next::Again)
                } else {
                    self.fail_closed("vendor unreachable", reason).await?;
                    Ok(Next::Stop)
                }
            }
            Outcome::Uncertain(reason) => {
                self.record(
                    "outcome_unknown",
                    json!({"reason": reason, "resolution": "probe the target; never resend blindly"}),
                    ExecUpdate {
                        phase: Some(ExecPhase::Unknown),
                        ..Default::default()
                    },
                )
                .await?;
                Ok(Next::Again)
            }
            Outcome::Redirect { status, location } => {
                self.fail_closed(
                    "redirect refused",
                    format!("the vendor redirected ({status}) to {location:?}; redirects are never followed"),
                )
                .await?;
                Ok(Next::Stop)
            }
            Outcome::AuthFailed(reason) => {
                self.write_without_effect(json!({"class": "auth_failed"}))
                    .await?;
                self.finish(
                    ActionState::Failed,
                    "authentication failed",
                    Some(format!("{reason}; nothing was changed")),
                )
                .await?;
                Ok(Next::Stop)
            }
        }
    }

    /// Records a write answer that proves nothing took effect (429, busy, rejected, refused
    /// credentials, not sent): the intent goes back to "nothing sent".
    async fn write_without_effect(&mut self, body: Value) -> Result<(), Halt> {
        self.record(
            "write_result",
            body,
            ExecUpdate {
                phase: Some(ExecPhase::Claimed),
                ..Default::default()
            },
        )
        .await
    }

    /// Waits for the vendor to complete (poll request or probe), then verifies by probe.
    async fn complete(
        &mut self,
        c: &Connector,
        spec: &ActionSpec,
        rt: &client::Runtime,
    ) -> Result<(), Halt> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(spec.completion.max_wait_secs);
        let interval = Duration::from_millis(spec.completion.poll_interval_ms);
        // With a handle from the write, poll it; otherwise re-run the probe.
        let has_handle = spec
            .request
            .capture
            .keys()
            .all(|k| self.vars.get(&format!("write.{k}")).is_some())
            && !spec.request.capture.is_empty();
        let poller = match (&spec.poll, has_handle) {
            (Some(p), true) => Some(p.clone()),
            _ => spec.probe.clone(),
        };
        let Some(poller) = poller else {
            return self
                .finish(
                    ActionState::Succeeded,
                    "accepted by the vendor (this action has no probe to verify it)",
                    None,
                )
                .await;
        };
        loop {
            match self.probe(c, rt, "poll", &poller).await? {
                Ok(ProbeState::Done) => break,
                Ok(ProbeState::Pending) | Ok(ProbeState::NotDone) => {}
                Ok(ProbeState::Failed) => {
                    return self
                        .finish(
                            ActionState::Failed,
                            "vendor reports failure",
                            Some("the vendor reports the operation failed".into()),
                        )
                        .await;
                }
                Ok(s) => {
                    return self
                        .finish(
                            ActionState::Unknown,
                            "completion unclear",
                            Some(format!(
                                "while waiting for completion the vendor reported {s:?}"
                            )),
                        )
                        .await;
                }
                Err(e) => {
                    return self
                        .finish(
                            ActionState::Unknown,
                            "completion unclear",
                            Some(format!("cannot poll for completion: {e}")),
                        )
                        .await;
                }
            }
            if tokio::time::Instant::now() + interval > deadline {
                return self
                    .finish(
                        ActionState::Unknown,
                        "not completed in time",
                        Some(format!(
                            "the vendor did not complete it within {}s (an offline host stays pending); it is re-checked later",
                            spec.completion.max_wait_secs
                        )),
                    )
                    .await;
            }
            if !pause(&self.s.cancel, interval).await {
                return Err(Halt::Shutdown);
            }
        }
        // Verify the postcondition with the probe.
        if let Some(p) = &spec.probe {
            match self.probe(c, rt, "verify", p).await? {
                Ok(ProbeState::Done) => {}
                Ok(s) => {
                    return self
                        .finish(
                            ActionState::Failed,
                            "verification failed",
                            Some(format!("the vendor accepted it but the probe reads {s:?}")),
                        )
                        .await;
                }
                Err(e) => {
                    return self
                        .finish(
                            ActionState::Unknown,
                            "verification failed",
                            Some(format!("cannot verify: {e}")),
                        )
                        .await;
                }
            }
        }
        self.finish(ActionState::Succeeded, "done; verified by probe", None)
            .await
    }
}

/// Placeholder values for one action on one connector.
pub fn build_vars(store: &Store, a: &ActionRequest, c: &Connector) -> Result<Vars, String> {
    let mut v = Vars::default();
    let exec = a.execution.as_ref();
    let intent_at: DateTime<Utc> = exec.map(|e| e.intent_at).unwrap_or(a.updated_at);
    v.set("target.kind", a.target.kind.as_str());
    if a.target.kind == TargetKind::Indicator {
        let (kind, value) = a
            .target
            .id
            .split_once(':')
            .ok_or_else(|| format!("indicator {:?} has no kind", a.target.id))?;
        let ioc_kind = match kind {
            "ip" if value.contains(':') => "ip6",
            "ip" => "ip",
            "domain" => "domain",
            "url" => "url",
            "file_hash" => match value.len() {
                32 => "md5",
                40 => "sha1",
                _ => "sha256",
            },
            other => return Err(format!("indicator kind {other:?} cannot be blocked")),
        };
        v.set("target", value);
        v.set("ioc.kind", ioc_kind);
        v.set("ioc.value", value);
        // Without an entry, a template naming {ioc.type} fails to render: the connector
        // cannot block this kind of indicator, and nothing is sent.
        if let Some(t) = c.spec.ioc_types.get(ioc_kind) {
            v.set("ioc.type", t.clone());
        }
    } else {
        v.set("target", a.target.id.clone());
    }
    v.set("idempotency_key", a.idempotency_key.clone());
    v.set(
        "idempotency_label",
        format!(
            "cordon-{}",
            &a.idempotency_key[..a.idempotency_key.len().min(24)]
        ),
    );
    v.set("case_id", a.case_id.clone());
    v.set("action_id", a.action_id.clone());
    v.set("alert_id", a.alert_id.clone());
    v.set("playbook", a.playbook.clone());
    v.set("step", a.step.clone());
    let title = engine::read::case(store, &a.case_id)
        .ok()
        .flatten()
        .map(|c| c.title)
        .unwrap_or_default();
    v.set("summary", title);
    v.set(
        "reason",
        if a.reasons.is_empty() {
            format!("{} by cordon playbook {}", a.kind, a.playbook)
        } else {
            a.reasons.join("; ")
        },
    );
    v.set(
        "intent_time",
        intent_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    let mut params: BTreeMap<String, String> = c.spec.params.clone();
    for (k, x) in &a.parameters {
        params.insert(
            k.clone(),
            match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        );
    }
    let days: i64 = params
        .get("expiry_days")
        .and_then(|d| d.parse().ok())
        .unwrap_or(30)
        .clamp(1, 3650);
    v.set(
        "expires_at",
        (intent_at + chrono::Duration::days(days))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    for (k, x) in params {
        v.set(format!("param.{k}"), x);
    }
    if let Some(e) = exec {
        for (k, x) in &e.vendor {
            if let Some(w) = k.strip_prefix("write.") {
                v.set(format!("write.{w}"), x.clone());
            } else {
                v.set(format!("vendor.{k}"), x.clone());
            }
        }
    }
    Ok(v)
}
