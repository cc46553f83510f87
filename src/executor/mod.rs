//! The executor: runs approved actions through their connectors, the same loop for every
//! vendor, and fails closed.
//!
//! Owns: the run loop — taking approved actions from the engine's announcements and the durable
//! queue, at most a few per permit in hand, one run per target at a time, resumption after a
//! restart and periodic reconciliation of `unknown` actions — and the order of an execution:
//! claim (recorded Allow, policy re-check, target lease, durable intent) → resolve → probe →
//! plan → write (after recording that it is about to go out) → poll → verify by probe → record.
//! `run` is one execution and the steps every run shares, `live` the live path, `transport`
//! exchanges and retries, `plan` the pure rule table after a probe, `vars` the template values.
//! Every step is recorded by the engine; what must be durable before the run goes on (the claim,
//! `write_intent`, a retry, the outcome) is, and the evidence of reads is recorded with the next
//! such step. The executor holds no state of its own that a crash could lose (a resumed run
//! probes again). It never calls a vendor itself: `connector` does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::action::{ActionKind, ActionRequest, ActionState, ExecPhase, TargetKind};
use crate::audit::AuditKind;
use crate::connector::client::{
    self, Answer, Outcome, ProbeState, Rendered, Vars, WriteClass, backoff, classify_write,
    read_probe,
};
use crate::connector::resolve::{self, Resolution};
use crate::connector::spec::{ActionSpec, Probe, RequestSpec};
use crate::connector::{BUILTIN, Connector, Mode, Registry};
use crate::engine::{
    self, EngineError, EngineHandle, ExecNote, ExecOp, ExecReply, ExecUpdate, RunnableRx,
};
use crate::store::Store;

mod live;
pub mod plan;
mod run;
mod transport;
mod vars;

use plan::Plan;
use run::{Next, Run};
pub use transport::ReadError;
pub use vars::{VarsError, build_vars};

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
    /// Runs talking to vendors at once. A run lets its permit go while it waits between polls
    /// for a vendor to complete (an offline host stays pending for as long as the completion
    /// wait), so such waits cannot hold every permit.
    permits: Arc<Semaphore>,
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
    let permits = Arc::new(Semaphore::new(parts.concurrency.max(1)));
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
        // The action is read once here; the claim reads it again inside the engine.
        let peek = engine::read::action(&s.parts.store, &id).ok().flatten();
        if let Some(peek) = peek {
            // Waiting for a permit or for the target is abandoned at shutdown: the action stays
            // queued (`xq/`) and resumes on the next start, so a drain waits only for actions
            // already talking to a vendor.
            // The target first, then a permit: actions queued behind one target do not hold
            // permits other targets could use.
            let (key, lock) = target_lock(&s, &peek);
            let mode = mode_of(&s, &peek);
            let ready = async {
                let guard = lock.clone().lock_owned().await;
                // Permits bound the runs that talk to vendors; a dry run or a built-in action
                // sends nothing and takes none (the in-hand cap still bounds them), so they do
                // not queue behind slow vendors, nor behind each other's engine round trips.
                let permit = if mode == "live" {
                    match s.permits.clone().acquire_owned().await {
                        Ok(p) => Some(Some(p)),
                        Err(_) => None,
                    }
                } else {
                    Some(None)
                };
                (permit, guard)
            };
            let ready = tokio::select! {
                r = ready => Some(r),
                _ = s.cancel.cancelled() => None,
            };
            if let Some((Some(permit), guard)) = ready {
                if let Drive::Busy(holder) = drive(&s, &peek, mode, permit).await {
                    // Another action holds the target (an unknown outcome still being
                    // reconciled, or a lease left by a previous run). Nothing is held while
                    // waiting: the periodic rescan tries again.
                    tracing::info!(action_id = %id, holder = %holder, "target is leased by another action; retrying at the next rescan");
                }
                drop(guard);
            }
            // Forget the lock once nobody else waits on it (the map would otherwise grow by one
            // entry per target ever acted on).
            let mut m = s.targets.lock().unwrap_or_else(|p| p.into_inner());
            if Arc::strong_count(&lock) == 2 {
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
fn target_lock(s: &Shared, a: &ActionRequest) -> (String, Arc<tokio::sync::Mutex<()>>) {
    let key = format!("{}/{}:{}", a.connector, a.target.kind.as_str(), a.target.id);
    let l = s
        .targets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.clone())
        .or_default()
        .clone();
    (key, l)
}

/// How an action runs: `builtin` (cordon itself), `live` (a connector that talks to its vendor)
/// or `dry_run` (rendered and recorded, nothing sent; also an unknown connector, which fails
/// without sending anything).
fn mode_of(s: &Shared, a: &ActionRequest) -> &'static str {
    if a.connector == BUILTIN {
        return "builtin";
    }
    match s.parts.connectors.connectors.get(&a.connector) {
        Some(c) if c.mode == Mode::Live => "live",
        _ => "dry_run",
    }
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

async fn drive(
    s: &Arc<Shared>,
    peek: &ActionRequest,
    mode: &str,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Drive {
    let id = peek.action_id.as_str();
    let conn = s.parts.connectors.connectors.get(&peek.connector);
    // A run that sends nothing is made whole first and recorded with its claim in one commit.
    match run::unsent(s, peek, mode) {
        Ok(Some(u)) => {
            let finished = s
                .parts
                .engine
                .exec(ExecOp::ClaimAndFinish {
                    action_id: id.to_string(),
                    mode: mode.to_string(),
                    notes: u.notes,
                    to: u.to,
                    outcome: u.outcome.clone(),
                    escalate: u.escalate,
                })
                .await;
            match finished {
                Ok(ExecReply::Finished) => {
                    tracing::info!(action_id = %id, kind = %peek.kind, target = %peek.target.id, state = %u.to, outcome = %u.outcome, "action finished");
                }
                Ok(ExecReply::Busy(holder)) => return Drive::Busy(holder),
                Ok(ExecReply::Refused(why)) => {
                    tracing::info!(action_id = %id, reason = %why, "not executed");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(action_id = %id, error = %e, "could not record the run of an action that sends nothing; it stays queued");
                }
            }
            return Drive::Done;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(action_id = %id, error = ?e, "could not prepare the run of an action that sends nothing; it stays queued");
            return Drive::Done;
        }
    }
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
    let Some(mut run) = Run::new(s.clone(), a) else {
        tracing::error!(action_id = %id, "a claimed action came without an intent record; not executing");
        return Drive::Done;
    };
    run.permit = permit;
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
        Ok(()) => {}
        Err(Halt::Shutdown) => {
            // What the run noted is recorded before it stops (the engine drains first).
            let _ = run.flush().await;
        }
        Err(Halt::Store(e)) => {
            tracing::error!(action_id = %id, error = %e, "the store failed mid-execution; stopping (it resumes from its intent record)")
        }
    }
    Drive::Done
}
