//! The engine: the one task that owns case and action state.
//!
//! Owns: the closed [`Event`] enum (sent by `EngineHandle`, in `handle.rs`, on two lanes, see
//! `lanes.rs`), the event loop and group commit: each batch of events is one store transaction, one flush,
//! and only then are the callers answered (pipelined: the next batch is decided while the
//! previous one is written, see [`Engine::run`]). Nothing is acknowledged before it is durable,
//! and a failed commit acknowledges nothing. One file per event kind holds what that event does
//! (`ingest`, `vote`, `tick`, `chat`, `exec`, `reload`, …; `dispatch` routes an event there);
//! `lifecycle` moves cases and actions
//! between states; `queue` indexes open cases; `keys` is the key layout of engine state and `read` the typed reads of it.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::action::{ActionRequest, ActionState, Tier, idempotency_key};
use crate::alert::{Alert, AlertFields};
use crate::audit::AuditKind;
use crate::case::{Case, CaseState, Suppressed, Transition};
use crate::config::{CasesConfig, Suppression};
use crate::enrich::{Enricher, EnrichmentReport};
use crate::ingest::IngestFormat;
use crate::metrics::{Metrics, OutcomeLabels, TierLabels};
use crate::playbook::Playbook;
use crate::policy::{self, Policies, PolicyProblem, StepRequest};
use crate::store::{Links, Store, StoreError, Txn};

pub mod keys;
pub mod learn;

pub mod queue;
pub mod read;
pub mod retention;
pub use learn::LearningConfig;

mod cases;
mod chat;
mod correlate;
mod dispatch;
mod exec;
mod handle;
mod ingest;
mod lanes;
mod lifecycle;
mod propose;
mod reload;
mod schedule;
mod sla;
mod tick;
mod vote;

pub use cases::{
    CaseOp, CaseOpError, CaseOpKind, CaseOpOutcome, CloseCase, MAX_REF_BYTES, MAX_TEXT_BYTES,
    check_case_id, check_proposal_id,
};
pub use chat::{ChatCallback, ChatDelivery, ChatOp, ChatReply};
pub use exec::{ExecNote, ExecOp, ExecReply, ExecUpdate, RunnableRx, RunnableTx, runnable_channel};
pub use ingest::{IngestAck, StoredAlert};
pub use propose::{
    AgentCaller, AgentFront, AgentOp, AgentReply, FrontError, action_records, findings,
};
pub use reload::ReloadOutcome;
pub use schedule::{Delivery, EXPIRY_REQUESTER, ScheduleOp, ScheduleReply};
pub use sla::ChatEscalation;
pub use vote::{VoteCast, VoteError, VoteOutcome};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// The store could not make the batch durable; nothing was acknowledged or kept.
    #[error("store unavailable: {0}")]
    Store(String),
    /// The daemon is shutting down and takes no new work.
    #[error("shutting down")]
    ShuttingDown,
}

/// Everything that changes case or action state.
pub enum Event {
    Ingest {
        format: IngestFormat,
        fields: Box<AlertFields>,
        /// The payload exactly as received.
        raw: String,
        received_at: DateTime<Utc>,
        reply: oneshot::Sender<Result<IngestAck, EngineError>>,
    },
    ReloadPolicies {
        /// `sighup`, `file_change`, `http`...
        trigger: String,
        reply: Option<oneshot::Sender<ReloadOutcome>>,
    },
    /// An approver's vote, identity taken from the authenticated channel.
    Vote {
        vote: VoteCast,
        reply: oneshot::Sender<Result<VoteOutcome, VoteError>>,
        /// When the caller handed it over (`cordon_vote_seconds{stage="queued"}`).
        sent: std::time::Instant,
    },
    /// Expire requests past their deadline and raise due escalations.
    Tick { reply: Option<oneshot::Sender<()>> },
    /// The executor records what it is about to do, what it saw, and how an action ended.
    Exec {
        op: ExecOp,
        reply: oneshot::Sender<Result<ExecReply, EngineError>>,
    },
    /// The chat notifier records posts; chat callbacks arrive as verified (or refused) votes.
    Chat {
        op: ChatOp,
        reply: oneshot::Sender<Result<ChatReply, EngineError>>,
        /// When the caller handed it over (a callback that is a vote is timed like one).
        sent: std::time::Instant,
    },
    /// Records the announcement of a signed audit checkpoint; answers, once it is durable, with
    /// the head that ends at it (the head the checkpoint signs).
    Checkpoint {
        note: crate::checkpoint::Announcement,
        reply: oneshot::Sender<Result<crate::store::Head, EngineError>>,
    },
    /// The scheduler: fire what is due (schedules, block expiries), record deliveries.
    Schedule {
        op: ScheduleOp,
        reply: oneshot::Sender<Result<ScheduleReply, EngineError>>,
    },
    /// An analyst's case operation (assign, note, close, reopen, recover), identity taken from
    /// the authenticated channel.
    CaseOp {
        op: Box<CaseOp>,
        reply: oneshot::Sender<Result<CaseOpOutcome, CaseOpError>>,
    },
    /// An AI agent's proposal, finding or other call (recorded whether accepted or refused).
    Agent {
        op: AgentOp,
        reply: oneshot::Sender<Result<AgentReply, EngineError>>,
    },
    /// A console sign-in (accepted or refused) or sign-out, recorded as it is (no state).
    Console {
        note: ConsoleNote,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
}

/// What the console records: a sign-in (accepted or refused) or a sign-out.
#[derive(Debug, Clone)]
pub struct ConsoleNote {
    /// `ConsoleSignIn` or `ConsoleSignOut`.
    pub kind: crate::audit::AuditKind,
    pub data: serde_json::Value,
}

/// A change announced to watchers after it is durable.
#[derive(Debug, Clone)]
pub enum ApprovalUpdate {
    Changed(Box<ActionRequest>),
    Escalation {
        action_id: String,
        deadline: DateTime<Utc>,
        missing: u8,
    },
    /// Escalation messages are owed to chat (`ce/`): the notifier posts them.
    ChatEscalationOwed,
}

#[derive(Debug, Clone, Copy)]
enum Tally {
    Decision(Tier),
    /// A shadow decision: action kind, agreed with the set in force.
    Shadow(&'static str, bool),
    EnrichmentFailures(u64),
    Execution(ActionState),
    Escalation,
}

#[derive(Debug, Clone)]
struct Escalated {
    action_id: String,
    deadline: DateTime<Utc>,
    missing: u8,
}

/// Sends events to the engine. Dropping every handle lets the engine drain and stop.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Event>,
    /// Votes and chat callbacks: decided ahead of queued alerts (see `lanes`).
    urgent: mpsc::Sender<Event>,
    watch: tokio::sync::broadcast::Sender<ApprovalUpdate>,
}

/// A source of "now", injectable for tests of windows and expiry.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// What the engine is built from.
pub struct EngineParts {
    pub store: Store,
    pub policies: Policies,
    pub policies_dir: PathBuf,
    pub playbooks: Arc<Vec<Playbook>>,
    pub enricher: Enricher,
    pub suppressions: Vec<Suppression>,
    pub cases: CasesConfig,
    pub correlation: crate::config::CorrelationConfig,
    pub metrics: Metrics,
    pub max_batch: usize,
    pub clock: Clock,
    pub approvals: crate::config::ApprovalsConfig,
    /// Connectors (for rollback: which actions can be undone where).
    pub connectors: crate::connector::Registry,
    /// Where action ids go once they are durably approved (the executor), if it runs.
    pub runnable: Option<RunnableTx>,
    /// Chat approvals are configured: requests and their changes are owed to chat.
    pub chat: bool,
    /// Learning proposals (`[learning]`).
    pub learning: LearningConfig,

    /// The shadow policy set (`[policy.shadow]`), decided beside the set in force, never acted on.
    pub shadow: Option<Arc<policy::PolicyEngine>>,
}

pub struct Engine {
    parts: EngineParts,
    lanes: lanes::Lanes,
    /// Action requests changed by the batch being processed, announced after it commits.
    changed: Vec<ActionRequest>,
    escalations: Vec<Escalated>,
    /// Metric increments of the batch being processed, applied only if it commits.
    tallies: Vec<Tally>,
    /// A policy reload recorded in the batch being processed, applied after it commits.
    #[allow(clippy::type_complexity)]
    reloaded: Option<Result<(Arc<policy::PolicyEngine>, String), (Vec<PolicyProblem>, String)>>,
    watch: tokio::sync::broadcast::Sender<ApprovalUpdate>,
    /// Monotonic ids: cases, alerts and actions sort in creation order.
    ids: ulid::Generator,
    /// The batch being processed owes escalation messages to chat (announced after commit).
    escalation_owed: bool,
}

/// Builds the engine and its handle. `queue` bounds how many events may wait (backpressure
/// reaches HTTP clients as latency, never as unbounded memory).
pub fn new(parts: EngineParts, queue: usize) -> (Engine, EngineHandle) {
    let (tx, rx) = mpsc::channel(queue);
    let (urgent, urgent_rx) = mpsc::channel(queue);
    // Bounded: a slow watcher lags (and is told to resync) instead of growing memory.
    let (watch, _) = tokio::sync::broadcast::channel(1024);
    let handle = EngineHandle {
        tx,
        urgent,
        watch: watch.clone(),
    };
    (
        Engine {
            parts,
            lanes: lanes::Lanes::new(urgent_rx, rx),
            ids: ulid::Generator::new(),
            changed: vec![],
            escalations: vec![],
            tallies: vec![],
            reloaded: None,
            watch,
            escalation_owed: false,
        },
        handle,
    )
}

type Reply = Box<dyn FnOnce(Result<(), EngineError>) + Send>;

/// A batch being decided: its transaction and the callers to answer once it is durable.
struct Open {
    txn: Txn,
    replies: Vec<Reply>,
    events: usize,
}

/// A decided batch waiting for its commit: what to do once it is durable (or has failed).
struct Prepared {
    replies: Vec<Reply>,
    events: usize,
    cases_open: Option<i64>,
    changed: Vec<ActionRequest>,
    escalations: Vec<Escalated>,
    tallies: Vec<Tally>,
    #[allow(clippy::type_complexity)]
    reloaded: Option<Result<(Arc<policy::PolicyEngine>, String), (Vec<PolicyProblem>, String)>>,
    escalation_owed: bool,
}

impl Engine {
    fn next_id(&mut self) -> String {
        // `generate` fails only after 2^80 ids in one millisecond; a fresh random id is then
        // still unique, merely out of order.
        self.ids
            .generate()
            .unwrap_or_else(|_| ulid::Ulid::generate())
            .to_string()
    }

    /// Runs one event's work; if it fails, undoes every side effect it had on the batch: its
    /// writes and audit records, the actions it changed (announcements and chat markers are
    /// derived from them), its escalations, metric increments and a policy reload it recorded.
    /// The rest of the batch still commits. Every event kind goes through here, so a new side
    /// effect belongs in this list and nowhere else.
    fn undoable<R>(
        &mut self,
        txn: &mut Txn,
        what: &str,
        f: impl FnOnce(&mut Self, &mut Txn) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let sp = txn.savepoint();
        let changed = self.changed.len();
        let escalations = self.escalations.len();
        let tallies = self.tallies.len();
        let reloaded = self.reloaded.is_some();
        let owed = self.escalation_owed;
        let r = f(self, txn);
        if let Err(e) = &r {
            txn.rollback_to(sp);
            self.escalation_owed = owed;
            self.changed.truncate(changed);
            self.escalations.truncate(escalations);
            self.tallies.truncate(tallies);
            if !reloaded {
                self.reloaded = None;
            }
            tracing::error!(error = %e, "{what} could not be recorded");
        }
        r
    }

    /// Runs until every [`EngineHandle`] is dropped and the queue is drained.
    ///
    /// Pipelined group commit: while batch N is written durably on the store's writing thread,
    /// the engine takes and decides batch N+1 on top of N's writes; N+1's commit starts only once N's has
    /// finished (and N's callers have been answered), so commits stay in order and nothing is
    /// answered before it is durable. If N fails, the store is failed closed and N+1 fails too.
    pub async fn run(mut self) {
        if let Err(e) = self.build_queue_index().await {
            tracing::error!(error = %e, "The queue index of open cases could not be built; the console's queue may miss older cases.");
        }
        if let Err(e) = self.build_block_index().await {
            tracing::error!(error = %e, "The index of standing blocks could not be built; an expiring block may be undone while a block of the same indicator from before this version relies on it.");
        }
        if let Ok(Some(n)) = self.parts.store.get_json::<i64>(keys::CASES_OPEN) {
            self.parts.metrics.cases_open.set(n);
        }
        let mut inflight: Option<(crate::store::InFlight, Prepared)> = None;
        let mut batch = Vec::new();
        loop {
            let next = match inflight.as_mut() {
                Some((commit, _)) => tokio::select! {
                    biased;
                    result = commit => {
                        if let Some((_, prepared)) = inflight.take() {
                            self.finish(prepared, result);
                        }
                        continue;
                    }
                    ev = self.lanes.next() => ev,
                },
                None => self.lanes.next().await,
            };
            let Some(first) = next else {
                break;
            };
            batch.push(first);
            while batch.len() < self.parts.max_batch {
                match self.lanes.try_next() {
                    Some(ev) => batch.push(ev),
                    None => break,
                }
            }
            // A policy reload takes effect only once it is durable: the batch after it is
            // decided with the new set, so it waits for the reload's commit.
            if inflight.as_ref().is_some_and(|(_, p)| p.reloaded.is_some())
                && let Some(f) = inflight.take()
            {
                self.settle(f).await;
            }
            // If the commit in flight has already resolved, answer its callers now rather than
            // after deciding this batch.
            if let Some((commit, _)) = inflight.as_mut()
                && let Some(result) = commit.try_result()
                && let Some((_, prepared)) = inflight.take()
            {
                self.finish(prepared, result);
            }
            let mut open = self.open(&inflight);
            self.decide_batch(&mut open, std::mem::take(&mut batch), &mut inflight);
            if let Some(f) = inflight.take() {
                self.settle_joining(f, &mut open).await;
            }
            let (txn, prepared) = self.seal(open);
            inflight = Some((self.parts.store.start_commit(txn), prepared));
        }
        if let Some(f) = inflight.take() {
            self.settle(f).await;
        }
        tracing::info!("engine drained its queue and stopped");
    }

    /// Decides one batch into a transaction on top of the commit in flight, if any: [`open`],
    /// [`decide_batch`], [`seal`] (what `run` does, minus urgent events joining while the commit
    /// in flight finishes).
    ///
    /// [`open`]: Engine::open
    /// [`decide_batch`]: Engine::decide_batch
    /// [`seal`]: Engine::seal
    #[cfg(test)]
    fn prepare(
        &mut self,
        batch: Vec<Event>,
        inflight: &mut Option<(crate::store::InFlight, Prepared)>,
    ) -> (Txn, Prepared) {
        let mut open = self.open(inflight);
        self.decide_batch(&mut open, batch, inflight);
        self.seal(open)
    }

    /// Starts a batch: a transaction on top of the commit in flight, if any, that holds the
    /// policy sets decisions will name.
    fn open(&mut self, inflight: &Option<(crate::store::InFlight, Prepared)>) -> Open {
        self.parts.enricher.refresh();
        let mut txn = self
            .parts
            .store
            .begin_after(inflight.as_ref().map(|(c, _)| c));
        // The set in force is kept before anything is decided with it (once per hash).
        if let Err(e) =
            Self::keep_policy_set(&self.parts.store, &mut txn, &self.parts.policies.current())
        {
            tracing::error!(error = %e, "the policy set in force could not be kept in the store");
        }
        if let Some(shadow) = &self.parts.shadow
            && let Err(e) = Self::keep_policy_set(&self.parts.store, &mut txn, shadow)
        {
            tracing::error!(error = %e, "the shadow policy set could not be kept in the store");
        }
        Open {
            txn,
            replies: Vec::new(),
            events: 0,
        }
    }

    /// Decides `batch` into the open batch. What is to happen once it is durable (answers,
    /// announcements, metrics, a policy reload) is kept for [`Engine::seal`] and done by
    /// [`Engine::finish`]. Between events it answers the commit in flight as soon as that
    /// resolves. Urgent events (see `lanes`) keep their commit small: when one arrives, the batch
    /// is cut short after the event being decided and the urgent event is decided next; and an
    /// urgent event that starts a batch ends it, the normal events behind it waiting for the next.
    fn decide_batch(
        &mut self,
        open: &mut Open,
        batch: Vec<Event>,
        inflight: &mut Option<(crate::store::InFlight, Prepared)>,
    ) {
        let Open {
            txn,
            replies,
            events,
        } = open;
        let mut pending: std::collections::VecDeque<Event> = batch.into();
        let mut normal_decided = false;
        while let Some(ev) = pending.pop_front() {
            let urgent = lanes::is_urgent(&ev);
            normal_decided |= !urgent;
            self.decide(txn, ev, replies);
            *events += 1;
            // The commit in flight may have resolved meanwhile: answer its callers now, not
            // after the rest of this batch.
            if let Some((commit, _)) = inflight.as_mut()
                && let Some(result) = commit.try_result()
                && let Some((_, prepared)) = inflight.take()
            {
                self.finish(prepared, result);
            }
            // A vote (or chat callback) arrived: it joins this batch and the undecided rest of
            // the batch waits for the next one, so the vote waits for one event, not a batch.
            if normal_decided && self.lanes.cut(&mut pending) {
                while *events + pending.len() < self.parts.max_batch.max(1)
                    && let Some(ev) = self.lanes.try_urgent()
                {
                    pending.push_back(ev);
                }
            } else if urgent {
                self.lanes.end_after_urgent(&mut pending);
            }
        }
    }

    /// Waits for the commit in flight and finishes its batch. Meanwhile an urgent event joins
    /// `open`, the batch that commits next, instead of waiting for the one after it: a vote cast
    /// while a commit is being written is answered with the next commit.
    async fn settle_joining(
        &mut self,
        (mut commit, prepared): (crate::store::InFlight, Prepared),
        open: &mut Open,
    ) {
        let mut prepared = Some(prepared);
        loop {
            let room = open.events < self.parts.max_batch.max(1);
            tokio::select! {
                biased;
                result = &mut commit => {
                    if let Some(p) = prepared.take() {
                        self.finish(p, result);
                    }
                    return;
                }
                ev = self.lanes.next_urgent(), if room => {
                    self.decide_batch(open, vec![ev], &mut None);
                }
            }
        }
    }

    /// Closes the open batch: the transaction to commit and what to do once it has.
    fn seal(&mut self, open: Open) -> (Txn, Prepared) {
        let Open {
            mut txn,
            replies,
            events,
        } = open;
        self.lanes.sealed();
        if self.parts.chat {
            self.mark_chat_owed(&mut txn);
        }
        let cases_open = txn
            .get_json::<i64>(&self.parts.store, keys::CASES_OPEN)
            .ok()
            .flatten();
        let prepared = Prepared {
            replies,
            events,
            cases_open,
            changed: std::mem::take(&mut self.changed),
            escalations: std::mem::take(&mut self.escalations),
            tallies: std::mem::take(&mut self.tallies),
            reloaded: self.reloaded.take(),
            escalation_owed: std::mem::take(&mut self.escalation_owed),
        };
        (txn, prepared)
    }

    /// Waits for a commit in flight and finishes its batch.
    async fn settle(&mut self, (commit, prepared): (crate::store::InFlight, Prepared)) {
        let result = commit.await;
        self.finish(prepared, result);
    }

    /// Once a batch's commit has resolved: on success, puts a recorded policy reload in force,
    /// counts the metrics and announces the changed actions; then answers every caller.
    fn finish(&mut self, prepared: Prepared, result: Result<crate::store::Committed, StoreError>) {
        let Prepared {
            replies,
            events,
            cases_open,
            changed,
            escalations,
            tallies,
            reloaded,
            escalation_owed,
        } = prepared;
        match &result {
            Ok(c) => {
                let m = &self.parts.metrics;
                m.store_write_seconds.observe(c.elapsed.as_secs_f64());
                let st = c.stages;
                let busy = st.pack + st.apply + st.flush + st.sync;
                let start = c.elapsed.saturating_sub(busy);
                let stages = [
                    ("start", start),
                    ("pack", st.pack),
                    ("apply", st.apply),
                    ("flush", st.flush),
                    ("sync", st.sync),
                ];
                // A batch with nothing to write took no commit.
                for (stage, d) in stages.into_iter().filter(|_| !busy.is_zero()) {
                    m.store_commit_stage_seconds
                        .get_or_create(&crate::metrics::StageLabels {
                            stage: stage.into(),
                        })
                        .observe(d.as_secs_f64());
                }
                self.parts.metrics.store_batch_events.observe(events as f64);
                if let Some(n) = cases_open {
                    self.parts.metrics.cases_open.set(n);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events, "group commit failed; nothing in this batch was acknowledged")
            }
        }
        if result.is_ok() {
            // The batch being decided may have recorded a reload of its own (this may run
            // between its events): keep it aside while this batch's reload is put in force.
            let deciding = std::mem::replace(&mut self.reloaded, reloaded);
            self.apply_reload();
            self.reloaded = deciding;
            for t in tallies {
                match t {
                    Tally::Decision(tier) => {
                        self.parts
                            .metrics
                            .decisions
                            .get_or_create(&TierLabels {
                                tier: tier.as_str().into(),
                            })
                            .inc();
                    }
                    Tally::Shadow(action, agreed) => {
                        self.parts
                            .metrics
                            .shadow_decisions
                            .get_or_create(&crate::metrics::ShadowLabels {
                                action: action.into(),
                                outcome: if agreed { "agree" } else { "diverge" }.into(),
                            })
                            .inc();
                    }
                    Tally::EnrichmentFailures(n) => {
                        self.parts.metrics.enrichment_failures.inc_by(n);
                    }
                    Tally::Execution(state) => {
                        self.parts
                            .metrics
                            .executions
                            .get_or_create(&OutcomeLabels {
                                outcome: state.as_str().into(),
                            })
                            .inc();
                    }
                    Tally::Escalation => {
                        self.parts.metrics.escalations.inc();
                    }
                }
            }
            for a in changed {
                if a.state == ActionState::Approved
                    && let Some(tx) = &self.parts.runnable
                {
                    tx.announce(a.action_id.clone());
                }
                let _ = self.watch.send(ApprovalUpdate::Changed(Box::new(a)));
            }
            for e in escalations {
                let _ = self.watch.send(ApprovalUpdate::Escalation {
                    action_id: e.action_id,
                    deadline: e.deadline,
                    missing: e.missing,
                });
            }
            if escalation_owed {
                let _ = self.watch.send(ApprovalUpdate::ChatEscalationOwed);
            }
        }
        let r = result
            .map(|_| ())
            .map_err(|e| EngineError::Store(e.to_string()));
        for reply in replies {
            reply(r.clone());
        }
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 1000)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lanes_tests;
