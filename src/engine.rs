//! The engine: the one task that owns case and action state.
//!
//! Owns: the pipeline from a parsed alert to a durable case with decided action requests
//! (dedup → correlate → suppress → enrich → propose → decide), policy reloads, the key layout
//! of engine state in the store, and group commit. Everything changes in response to a closed
//! [`Event`] enum read from one channel; each batch of events is one store transaction, one
//! flush, and only then are the callers answered (pipelined: the next batch is decided while
//! the previous one is written, see [`Engine::run`]). Nothing is acknowledged before it is durable,
//! and a failed commit acknowledges nothing.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::action::{ActionRequest, ActionState, Tier, idempotency_key};
use crate::alert::{Alert, AlertFields};
use crate::case::{Case, CaseState, Suppressed, Transition};
use crate::config::{CasesConfig, Suppression};
use crate::enrich::{Enricher, EnrichmentReport};
use crate::ingest::IngestFormat;
use crate::metrics::{Metrics, OutcomeLabels, TierLabels};
use crate::playbook::Playbook;
use crate::policy::{self, Policies, PolicyProblem, StepRequest};
use crate::store::{Links, Store, StoreError, Txn};

/// Key layout of engine state.
pub mod keys {
    pub fn alert(id: &str) -> Vec<u8> {
        format!("al/{id}").into_bytes()
    }
    pub fn source_id(source: &str, source_alert_id: &str) -> Vec<u8> {
        format!("as/{source}/{source_alert_id}").into_bytes()
    }
    pub fn fingerprint(fp: &str) -> Vec<u8> {
        format!("fp/{fp}").into_bytes()
    }
    pub fn correlation(key: &str) -> Vec<u8> {
        format!("ck/{key}").into_bytes()
    }
    pub fn case(id: &str) -> Vec<u8> {
        format!("c/{id}").into_bytes()
    }
    pub const CASE_PREFIX: &[u8] = b"c/";
    pub fn action(id: &str) -> Vec<u8> {
        format!("x/{id}").into_bytes()
    }
    pub fn action_index(case_id: &str, idem: &str) -> Vec<u8> {
        format!("xi/{case_id}/{idem}").into_bytes()
    }
    pub const CASES_OPEN: &[u8] = b"s/cases_open";
    /// Requests awaiting approval, in creation order.
    pub fn pending(action_id: &str) -> Vec<u8> {
        format!("pa/{action_id}").into_bytes()
    }
    pub const PENDING_PREFIX: &[u8] = b"pa/";
    /// Deadlines and escalation points, ordered by time.
    pub fn deadline(at: chrono::DateTime<chrono::Utc>, action_id: &str) -> Vec<u8> {
        format!("pd/{:020}/{action_id}", at.timestamp_millis().max(0)).into_bytes()
    }
    pub const DEADLINE_PREFIX: &[u8] = b"pd/";
    pub fn escalation(at: chrono::DateTime<chrono::Utc>, action_id: &str) -> Vec<u8> {
        format!("pe/{:020}/{action_id}", at.timestamp_millis().max(0)).into_bytes()
    }
    pub const ESCALATION_PREFIX: &[u8] = b"pe/";
    /// Actions the executor has to drive: approved, executing, or left unknown.
    pub fn runnable(action_id: &str) -> Vec<u8> {
        format!("xq/{action_id}").into_bytes()
    }
    pub const RUNNABLE_PREFIX: &[u8] = b"xq/";
    /// The per-target lease: one action with a write in flight per connector and target.
    pub fn lease(connector: &str, target: &crate::action::Target) -> Vec<u8> {
        format!("tl/{connector}/{}:{}", target.kind.as_str(), target.id).into_bytes()
    }
    /// Actions whose chat messages are behind their state (value: a generation id).
    pub fn chat_owed(action_id: &str) -> Vec<u8> {
        format!("co/{action_id}").into_bytes()
    }
    pub const CHAT_OWED_PREFIX: &[u8] = b"co/";
    /// Chat callbacks already seen (value: when the memory may be dropped), by a hash of the
    /// platform's unique callback id.
    pub fn chat_replay(platform: &str, key: &str) -> Vec<u8> {
        use sha2::Digest;
        let h = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        format!("cr/{platform}/{h}").into_bytes()
    }
    pub const CHAT_REPLAY_PREFIX: &[u8] = b"cr/";
}

/// An alert as stored: the normalized alert plus what cordon made of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredAlert {
    #[serde(flatten)]
    pub alert: Alert,
    pub case_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<EnrichmentReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FingerprintEntry {
    alert_id: String,
    case_id: String,
    at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CorrelationEntry {
    case_id: String,
    last_seen: DateTime<Utc>,
}

/// The answer to an accepted alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IngestAck {
    pub alert_id: String,
    pub case_id: String,
    pub duplicate: bool,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// The store could not make the batch durable; nothing was acknowledged or kept.
    #[error("store unavailable: {0}")]
    Store(String),
    /// The daemon is shutting down and takes no new work.
    #[error("shutting down")]
    ShuttingDown,
}

/// Result of a policy reload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReloadOutcome {
    pub ok: bool,
    /// The hash now in force.
    pub policy_hash: String,
    pub problems: Vec<PolicyProblem>,
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
    },
}

/// What the chat side asks the engine to record. Each is durable before the reply.
#[derive(Debug, Clone)]
pub enum ChatOp {
    /// A message was posted, updated, or a thread notice sent.
    Delivered(ChatDelivery),
    /// A post or update failed (it will be retried while it matters).
    Failed {
        action_id: String,
        platform: &'static str,
        purpose: &'static str,
        channel: String,
        attempt: u32,
        error: String,
    },
    /// Every platform shows the action as it was at generation `generation`.
    Synced {
        action_id: String,
        generation: String,
    },
    /// An inbound callback, after the platform's verification.
    Callback(ChatCallback),
}

#[derive(Debug, Clone)]
pub struct ChatDelivery {
    pub action_id: String,
    pub platform: &'static str,
    /// request | update | thread
    pub purpose: &'static str,
    pub channel: String,
    /// The message's reference (Slack ts, Mattermost post id, Teams activity id).
    pub reference: String,
    pub attempt: u32,
    /// Hash of what the message now shows (request and update).
    pub rendered: Option<String>,
    /// The thread notice sent (thread).
    pub notice: Option<String>,
}

/// A chat callback as the HTTP side hands it over.
#[derive(Debug, Clone)]
pub struct ChatCallback {
    pub platform: &'static str,
    /// The platform's unique id of this callback (signature, trigger id, activity id), when the
    /// request was authentic: seen twice → refused as a replay.
    pub replay_key: Option<String>,
    /// How long to remember `replay_key`.
    pub replay_ttl: chrono::Duration,
    pub platform_user: String,
    pub approval_id: String,
    /// approve | deny
    pub decision: String,
    /// The vote to cast, or why the callback is refused (code, message).
    pub verdict: Result<VoteCast, (&'static str, String)>,
    /// Extra evidence for the audit record (request ids, team, channel...).
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone)]
pub enum ChatReply {
    Recorded,
    /// The callback was refused before any vote (code, message).
    Refused(&'static str, String),
    /// The callback became a vote; this is what the vote did.
    Voted(Box<Result<VoteOutcome, VoteError>>),
}

/// What the executor asks the engine to record. Each is durable before the reply.
#[derive(Debug, Clone)]
pub enum ExecOp {
    /// Claim an approved action (or resume one after a restart): check the recorded Allow,
    /// re-check the policy, take the target lease, write the intent record.
    Claim { action_id: String, mode: String },
    /// Record evidence (a vendor exchange, a probe, a retry) and update the intent record.
    Record {
        action_id: String,
        kind: &'static str,
        body: serde_json::Value,
        update: ExecUpdate,
    },
    /// Move the action to its final (or `unknown`) state.
    Finish {
        action_id: String,
        to: ActionState,
        outcome: String,
        escalate: Option<String>,
    },
    /// Propose the inverse of a succeeded, reversible action for `user`.
    Rollback {
        action_id: String,
        user: String,
        reason: String,
    },
}

/// Changes to the intent record that go with a [`ExecOp::Record`].
#[derive(Debug, Clone, Default)]
pub struct ExecUpdate {
    pub phase: Option<crate::action::ExecPhase>,
    pub write_sent: bool,
    pub retry: bool,
    pub vendor: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum ExecReply {
    Claimed(Box<ActionRequest>),
    /// Another action holds the target's lease.
    Busy(String),
    Refused(String),
    Recorded(Box<ActionRequest>),
    Finished,
    RollbackProposed(Box<ActionRequest>),
}

/// A vote as the API hands it to the engine.
#[derive(Debug, Clone)]
pub struct VoteCast {
    pub approval_id: String,
    pub user: String,
    /// grpc | slack | mattermost | teams
    pub channel: String,
    /// mtls | token | chat
    pub identity: String,
    pub approve: bool,
    /// The request hash the approver reviewed, if they sent it.
    pub request_hash: Option<String>,
    pub comment: String,
}

/// What a vote did.
#[derive(Debug, Clone, PartialEq)]
pub struct VoteOutcome {
    pub action: ActionRequest,
    /// counted | already_counted | approved | rejected
    pub outcome: &'static str,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum VoteError {
    #[error("no approval request {0}")]
    NotFound(String),
    #[error("approval request {id} is {state}; it takes no more votes")]
    NotPending { id: String, state: ActionState },
    #[error("approval request {0} expired; it will never run")]
    Expired(String),
    #[error("the request changed since it was reviewed (now {current}); review it again")]
    RequestChanged { current: String },
    #[error("vote refused: {0}")]
    Refused(String),
    #[error("store unavailable: {0}")]
    Store(String),
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
}

#[derive(Debug, Clone, Copy)]
enum Tally {
    Decision(Tier),
    EnrichmentFailures(u64),
    Execution(ActionState),
    Escalation,
}

/// A fan-out bound (`[cases]`): what one alert or case may set in motion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    EntitiesPerAlert,
    ActionsPerCase,
    ChatRequestsPerCase,
}

impl Limit {
    fn as_str(self) -> &'static str {
        match self {
            Limit::EntitiesPerAlert => "entities_per_alert",
            Limit::ActionsPerCase => "actions_per_case",
            Limit::ChatRequestsPerCase => "chat_requests_per_case",
        }
    }

    fn reason(self, d: &serde_json::Value) -> String {
        match self {
            Limit::EntitiesPerAlert => format!(
                "an alert named {} entities; playbooks acted on the first {} (cases.max_entities_per_alert)",
                d["given"], d["max"]
            ),
            Limit::ActionsPerCase => format!(
                "the case reached {} action requests; {} more were not proposed (cases.max_actions_per_case)",
                d["max"], d["not_proposed"]
            ),
            Limit::ChatRequestsPerCase => format!(
                "the case has {} approval requests in chat; {} more wait in `cordon approvals list` (cases.max_chat_requests_per_case)",
                d["max"], d["not_posted"]
            ),
        }
    }
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
    watch: tokio::sync::broadcast::Sender<ApprovalUpdate>,
}

impl EngineHandle {
    pub async fn ingest(
        &self,
        format: IngestFormat,
        fields: AlertFields,
        raw: String,
        received_at: DateTime<Utc>,
    ) -> Result<IngestAck, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Ingest {
                format,
                fields: Box::new(fields),
                raw,
                received_at,
                reply,
            })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    pub async fn reload_policies(&self, trigger: &str) -> Option<ReloadOutcome> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::ReloadPolicies {
                trigger: trigger.to_string(),
                reply: Some(reply),
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    pub async fn vote(&self, vote: VoteCast) -> Result<VoteOutcome, VoteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Vote { vote, reply })
            .await
            .map_err(|_| VoteError::Store("shutting down".into()))?;
        rx.await
            .map_err(|_| VoteError::Store("shutting down".into()))?
    }

    /// Runs expiry and escalation now and waits until the result is durable.
    pub async fn tick(&self) {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Event::Tick { reply: Some(reply) })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Asks for an expiry pass without waiting (the daemon's timer).
    pub fn request_tick(&self) {
        let _ = self.tx.try_send(Event::Tick { reply: None });
    }

    /// Records an executor step; answers once it is durable.
    pub async fn exec(&self, op: ExecOp) -> Result<ExecReply, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Exec { op, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Records a chat step or handles a chat callback; answers once it is durable.
    pub async fn chat(&self, op: ChatOp) -> Result<ChatReply, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Chat { op, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Approval changes, as they become durable.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ApprovalUpdate> {
        self.watch.subscribe()
    }

    /// Asks for a reload without waiting for it (signal and file-watch triggers).
    pub fn request_reload(&self, trigger: &str) {
        let _ = self.tx.try_send(Event::ReloadPolicies {
            trigger: trigger.to_string(),
            reply: None,
        });
    }
}

/// A source of "now", injectable for tests of windows and expiry.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// Announces durably approved actions to the executor. The queue itself is durable (`xq/`), so
/// the channel is bounded: an announcement that does not fit is dropped and flagged, and the
/// executor reads the queue from the store instead. Memory stays bounded however far ingest
/// runs ahead of the vendors.
#[derive(Clone)]
pub struct RunnableTx {
    tx: mpsc::Sender<String>,
    missed: Arc<std::sync::atomic::AtomicBool>,
}

impl RunnableTx {
    pub fn announce(&self, action_id: String) {
        if self.tx.try_send(action_id).is_err() {
            self.missed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// The executor's end of `RunnableTx`.
pub struct RunnableRx {
    rx: mpsc::Receiver<String>,
    missed: Arc<std::sync::atomic::AtomicBool>,
}

impl RunnableRx {
    /// The next announced action id; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<String> {
        self.rx.recv().await
    }

    /// No announcement is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Announcements were dropped since `clear_missed` (the store holds them).
    pub fn missed(&self) -> bool {
        self.missed.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn clear_missed(&self) {
        self.missed
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A bounded announcement channel holding up to `capacity` action ids.
pub fn runnable_channel(capacity: usize) -> (RunnableTx, RunnableRx) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let missed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    (
        RunnableTx {
            tx,
            missed: missed.clone(),
        },
        RunnableRx { rx, missed },
    )
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
}

pub struct Engine {
    parts: EngineParts,
    rx: mpsc::Receiver<Event>,
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
}

/// Builds the engine and its handle. `queue` bounds how many events may wait (backpressure
/// reaches HTTP clients as latency, never as unbounded memory).
pub fn new(parts: EngineParts, queue: usize) -> (Engine, EngineHandle) {
    let (tx, rx) = mpsc::channel(queue);
    // Bounded: a slow watcher lags (and is told to resync) instead of growing memory.
    let (watch, _) = tokio::sync::broadcast::channel(1024);
    let handle = EngineHandle {
        tx,
        watch: watch.clone(),
    };
    (
        Engine {
            parts,
            rx,
            ids: ulid::Generator::new(),
            changed: vec![],
            escalations: vec![],
            tallies: vec![],
            reloaded: None,
            watch,
        },
        handle,
    )
}

type Reply = Box<dyn FnOnce(Result<(), EngineError>) + Send>;

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

    /// Runs one event's work; if it fails, undoes its writes, announcements and metric
    /// increments (the rest of the batch still commits).
    fn undoable<R>(
        &mut self,
        txn: &mut Txn,
        what: &str,
        f: impl FnOnce(&mut Self, &mut Txn) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let sp = txn.savepoint();
        let changed_before = self.changed.len();
        let tallies_before = self.tallies.len();
        let r = f(self, txn);
        if let Err(e) = &r {
            txn.rollback_to(sp);
            self.changed.truncate(changed_before);
            self.tallies.truncate(tallies_before);
            tracing::error!(error = %e, "{what} could not be recorded");
        }
        r
    }

    /// Runs until every [`EngineHandle`] is dropped and the queue is drained.
    ///
    /// Pipelined group commit: while batch N is written durably on a blocking thread, the engine
    /// takes and decides batch N+1 on top of N's writes; N+1's commit starts only once N's has
    /// finished (and N's callers have been answered), so commits stay in order and nothing is
    /// answered before it is durable. If N fails, the store is failed closed and N+1 fails too.
    pub async fn run(mut self) {
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
                    ev = self.rx.recv() => ev,
                },
                None => self.rx.recv().await,
            };
            let Some(first) = next else {
                break;
            };
            batch.push(first);
            while batch.len() < self.parts.max_batch {
                match self.rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
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
            let (txn, prepared) = self.prepare(
                std::mem::take(&mut batch),
                inflight.as_ref().map(|(c, _)| c),
            );
            if let Some(f) = inflight.take() {
                self.settle(f).await;
            }
            inflight = Some((self.parts.store.start_commit(txn), prepared));
        }
        if let Some(f) = inflight.take() {
            self.settle(f).await;
        }
        tracing::info!("engine drained its queue and stopped");
    }

    /// Decides one batch into a transaction on top of `after` (the commit in flight, if any).
    /// What is to happen once it is durable (answers, announcements, metrics, a policy reload)
    /// is returned with it and done by [`Engine::finish`].
    fn prepare(
        &mut self,
        batch: Vec<Event>,
        after: Option<&crate::store::InFlight>,
    ) -> (Txn, Prepared) {
        self.parts.enricher.refresh();
        let mut txn = self.parts.store.begin_after(after);
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        let events = batch.len();
        for ev in batch {
            match ev {
                Event::Ingest {
                    format,
                    fields,
                    raw,
                    received_at,
                    reply,
                } => {
                    let sp = txn.savepoint();
                    let changed_before = self.changed.len();
                    let tallies_before = self.tallies.len();
                    match self.ingest(&mut txn, format, &fields, raw, received_at) {
                        Ok(ack) => {
                            let source = format.as_str();
                            let outcome = if ack.duplicate {
                                "duplicate"
                            } else {
                                "accepted"
                            };
                            let metrics = self.parts.metrics.clone();
                            replies.push(Box::new(move |r| {
                                match &r {
                                    Ok(()) => metrics.alert(source, outcome),
                                    Err(_) => metrics.alert(source, "store_unavailable"),
                                }
                                let _ = reply.send(r.map(|()| ack));
                            }));
                        }
                        Err(e) => {
                            txn.rollback_to(sp);
                            self.changed.truncate(changed_before);
                            self.tallies.truncate(tallies_before);
                            tracing::error!(error = %e, "alert could not be recorded");
                            let _ = reply.send(Err(EngineError::Store(e.to_string())));
                        }
                    }
                }
                Event::Vote { vote, reply } => {
                    let sp = txn.savepoint();
                    let changed_before = self.changed.len();
                    match self.vote(&mut txn, &vote) {
                        Ok(Ok(outcome)) => replies.push(Box::new(move |r| {
                            let _ = reply.send(
                                r.map(|()| outcome)
                                    .map_err(|e| VoteError::Store(e.to_string())),
                            );
                        })),
                        Ok(Err(refusal)) => {
                            // Refusals are recorded too (the audit entry stays in the batch),
                            // but the caller hears the refusal only once it is durable.
                            replies.push(Box::new(move |r| {
                                let _ = reply.send(match r {
                                    Ok(()) => Err(refusal),
                                    Err(e) => Err(VoteError::Store(e.to_string())),
                                });
                            }));
                        }
                        Err(e) => {
                            txn.rollback_to(sp);
                            self.changed.truncate(changed_before);
                            let _ = reply.send(Err(VoteError::Store(e.to_string())));
                        }
                    }
                }
                Event::Tick { reply } => {
                    let sp = txn.savepoint();
                    let changed_before = self.changed.len();
                    let esc_before = self.escalations.len();
                    if let Err(e) = self.tick(&mut txn) {
                        txn.rollback_to(sp);
                        self.changed.truncate(changed_before);
                        self.escalations.truncate(esc_before);
                        tracing::error!(error = %e, "expiry pass could not be recorded");
                    }
                    if let Some(reply) = reply {
                        replies.push(Box::new(move |_| {
                            let _ = reply.send(());
                        }));
                    }
                }
                Event::Exec { op, reply } => {
                    match self.undoable(&mut txn, "executor step", |e, t| e.exec(t, op)) {
                        Ok(r) => replies.push(Box::new(move |c| {
                            let _ = reply.send(c.map(|()| r));
                        })),
                        Err(e) => {
                            let _ = reply.send(Err(EngineError::Store(e.to_string())));
                        }
                    }
                }
                Event::Chat { op, reply } => {
                    match self.undoable(&mut txn, "chat step", |e, t| e.chat(t, op)) {
                        Ok(r) => replies.push(Box::new(move |c| {
                            let _ = reply.send(c.map(|()| r));
                        })),
                        Err(e) => {
                            let _ = reply.send(Err(EngineError::Store(e.to_string())));
                        }
                    }
                }
                Event::ReloadPolicies { trigger, reply } => {
                    let sp = txn.savepoint();
                    match self.reload(&mut txn, &trigger) {
                        Ok(outcome) => replies.push(Box::new(move |r| {
                            if let Some(reply) = reply {
                                let _ = reply.send(match r {
                                    Ok(()) => outcome,
                                    Err(e) => ReloadOutcome {
                                        ok: false,
                                        policy_hash: outcome.policy_hash,
                                        problems: vec![PolicyProblem {
                                            file: "store".into(),
                                            line: 0,
                                            column: 0,
                                            message: e.to_string(),
                                        }],
                                    },
                                });
                            }
                        })),
                        Err(e) => {
                            txn.rollback_to(sp);
                            tracing::error!(error = %e, "policy reload could not be recorded");
                        }
                    }
                }
            }
        }
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
        } = prepared;
        match &result {
            Ok(c) => {
                self.parts
                    .metrics
                    .store_write_seconds
                    .observe(c.elapsed.as_secs_f64());
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
            self.reloaded = reloaded;
            self.apply_reload();
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
        }
        let r = result
            .map(|_| ())
            .map_err(|e| EngineError::Store(e.to_string()));
        for reply in replies {
            reply(r.clone());
        }
    }

    /// Loads the policy directory and records the outcome; the new set (or the failure) takes
    /// effect only after the batch commits, so what is in force always matches the audit log.
    fn reload(&mut self, txn: &mut Txn, trigger: &str) -> Result<ReloadOutcome, StoreError> {
        let now = (self.parts.clock)();
        let before = self.parts.policies.current().hash.clone();
        let outcome = match policy::load_dir(&self.parts.policies_dir) {
            Ok(engine) => {
                txn.audit(
                    "policy_reloaded",
                    Links::default(),
                    now,
                    json!({"trigger": trigger, "previous_hash": before, "policy_hash": engine.hash, "files": engine.files, "policies": engine.policy_count()}),
                )?;
                let outcome = ReloadOutcome {
                    ok: true,
                    policy_hash: engine.hash.clone(),
                    problems: vec![],
                };
                self.reloaded = Some(Ok((Arc::new(engine), trigger.to_string())));
                outcome
            }
            Err(problems) => {
                txn.audit(
                    "policy_reload_failed",
                    Links::default(),
                    now,
                    json!({"trigger": trigger, "policy_hash_in_force": before, "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>()}),
                )?;
                self.reloaded = Some(Err((problems.clone(), trigger.to_string())));
                ReloadOutcome {
                    ok: false,
                    policy_hash: before,
                    problems,
                }
            }
        };
        Ok(outcome)
    }

    /// Applies a recorded reload: after the commit that recorded it succeeded.
    fn apply_reload(&mut self) {
        let m = &self.parts.metrics;
        match self.reloaded.take() {
            Some(Ok((engine, trigger))) => {
                tracing::info!(trigger, policy_hash = %engine.hash, policies = engine.policy_count(), "policy set reloaded");
                m.policy_reloads
                    .get_or_create(&OutcomeLabels {
                        outcome: "ok".into(),
                    })
                    .inc();
                m.policy_reload_failed.set(0);
                self.parts.policies.install(engine);
            }
            Some(Err((problems, trigger))) => {
                for p in &problems {
                    tracing::error!(trigger, problem = %p, "policy reload failed; the previous policy set stays in force");
                }
                m.policy_reloads
                    .get_or_create(&OutcomeLabels {
                        outcome: "failed".into(),
                    })
                    .inc();
                m.policy_reload_failed.set(1);
                self.parts.policies.record_failure(problems);
            }
            None => {}
        }
    }

    fn ingest(
        &mut self,
        txn: &mut Txn,
        format: IngestFormat,
        fields: &AlertFields,
        raw: String,
        received_at: DateTime<Utc>,
    ) -> Result<IngestAck, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let source = format.as_str();

        // 1. The same alert again (a SIEM retry): answer with the original ids.
        let sk = keys::source_id(source, &fields.source_alert_id);
        if let Some(orig) = txn.get(&store, &sk)? {
            let orig_id = String::from_utf8_lossy(&orig).to_string();
            if let Some(orig_alert) = txn.get_json::<StoredAlert>(&store, &keys::alert(&orig_id))? {
                let case_id = orig_alert.case_id.clone();
                txn.audit(
                    "alert_received",
                    Links { case_id: Some(case_id.clone()), alert_id: Some(orig_id.clone()), action_id: None },
                    now,
                    json!({"source": source, "received_at": received_at, "raw": raw, "duplicate_of": orig_id, "why": "same source and source alert id"}),
                )?;
                if let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(&case_id))? {
                    case.duplicate_count += 1;
                    case.updated_at = now;
                    txn.put_json(keys::case(&case_id), &case)?;
                }
                return Ok(IngestAck {
                    alert_id: orig_id,
                    case_id,
                    duplicate: true,
                });
            }
        }

        // Fan-out bound: playbooks act on at most `max_entities_per_alert` entities. The raw
        // payload keeps them all; the excess is recorded and escalated below.
        let max_entities = self.parts.cases.max_entities_per_alert;
        let capped;
        let (fields, entities_over) = if fields.entities.len() > max_entities {
            let mut f = fields.clone();
            let over: Vec<String> = f.entities.split_off(max_entities).iter().map(|e| e.key()).collect();
            capped = f;
            (&capped, over)
        } else {
            (fields, Vec::new())
        };

        let alert_id = self.next_id();
        let alert = Alert {
            alert_id: alert_id.clone(),
            received_at,
            source: source.to_string(),
            fields: fields.clone(),
            raw_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(raw.as_bytes())),
        };
        let links = |case_id: &str| Links {
            case_id: Some(case_id.to_string()),
            alert_id: Some(alert_id.clone()),
            action_id: None,
        };

        // 2. Same content within the dedup window: a duplicate in the same case.
        let fp = fields.fingerprint();
        let fpk = keys::fingerprint(&fp);
        if let Some(entry) = txn.get_json::<FingerprintEntry>(&store, &fpk)?
            && now - entry.at <= Duration::seconds(secs(self.parts.cases.dedup_window_secs))
            && let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(&entry.case_id))?
            && case.state != CaseState::Closed
        {
            txn.audit(
                "alert_received",
                links(&case.case_id),
                now,
                json!({"source": source, "received_at": received_at, "raw": raw, "alert": alert, "duplicate_of": entry.alert_id, "why": "same fingerprint within the dedup window"}),
            )?;
            case.alert_ids.push(alert_id.clone());
            case.duplicate_count += 1;
            case.updated_at = now;
            txn.put_json(keys::case(&case.case_id), &case)?;
            txn.put(sk, alert_id.clone().into_bytes());
            let stored = StoredAlert {
                alert,
                case_id: case.case_id.clone(),
                duplicate_of: Some(entry.alert_id),
                suppressed_by: None,
                enrichment: None,
            };
            txn.put_json(keys::alert(&alert_id), &stored)?;
            return Ok(IngestAck {
                alert_id,
                case_id: case.case_id,
                duplicate: true,
            });
        }

        // 3. Correlate: same rule and primary entity within the window joins the open case.
        let corr_key = fields.correlation_key();
        let mut joined = None;
        if let Some(ck) = &corr_key
            && let Some(entry) = txn.get_json::<CorrelationEntry>(&store, &keys::correlation(ck))?
            && now - entry.last_seen
                <= Duration::seconds(secs(self.parts.cases.correlation_window_secs))
            && let Some(case) = txn.get_json::<Case>(&store, &keys::case(&entry.case_id))?
            && case.state.accepts_alerts()
        {
            joined = Some(case);
        }
        let is_new = joined.is_none();
        let mut case = match joined {
            Some(c) => c,
            None => {
                let case_id = self.next_id();
                Case {
                    case_id: case_id.clone(),
                    state: CaseState::Normalized,
                    title: fields.title.clone(),
                    rule_id: fields.rule.id.clone(),
                    primary_entity: fields.primary_entity().map(|e| e.key()),
                    severity: fields.severity,
                    alert_ids: vec![],
                    duplicate_count: 0,
                    entities: vec![],
                    suppressed_by: None,
                    action_ids: vec![],
                    history: vec![Transition {
                        from: None,
                        to: CaseState::Normalized,
                        at: now,
                        reason: "case opened for a new alert".into(),
                    }],
                    created_at: now,
                    updated_at: now,
                    chat_requests: 0,
                    limits_hit: Vec::new(),
                }
            }
        };
        let case_id = case.case_id.clone();
        txn.audit(
            "alert_received",
            links(&case_id),
            now,
            json!({"source": source, "received_at": received_at, "raw": raw, "alert": alert}),
        )?;
        if is_new {
            txn.audit(
                "case_transition",
                links(&case_id),
                now,
                json!({"from": null, "to": "normalized", "reason": "case opened for a new alert"}),
            )?;
            self.bump_open(txn, 1)?;
        } else {
            txn.audit(
                "alert_correlated",
                links(&case_id),
                now,
                json!({"correlation_key": corr_key, "case_state": case.state}),
            )?;
        }
        if !entities_over.is_empty() {
            let detail = json!({
                "max": max_entities,
                "given": max_entities + entities_over.len(),
                "not_acted_on": entities_over.len(),
                "first_not_acted_on": entities_over.iter().take(20).collect::<Vec<_>>(),
                "note": "the raw alert (alert_received) keeps every entity",
            });
            self.limit_hit(txn, &mut case, Limit::EntitiesPerAlert, &alert_id, now, detail)?;
        }
        case.alert_ids.push(alert_id.clone());
        case.severity = case.severity.max(fields.severity);
        for e in &fields.entities {
            if !case.entities.contains(e) {
                case.entities.push(e.clone());
            }
        }
        case.updated_at = now;
        txn.put(sk, alert_id.clone().into_bytes());
        txn.put_json(
            fpk,
            &FingerprintEntry {
                alert_id: alert_id.clone(),
                case_id: case_id.clone(),
                at: now,
            },
        )?;
        if let Some(ck) = &corr_key {
            txn.put_json(
                keys::correlation(ck),
                &CorrelationEntry {
                    case_id: case_id.clone(),
                    last_seen: now,
                },
            )?;
        }
        let mut stored = StoredAlert {
            alert,
            case_id: case_id.clone(),
            duplicate_of: None,
            suppressed_by: None,
            enrichment: None,
        };

        // 4. Suppression.
        if let Some(s) = crate::suppress::find(&self.parts.suppressions, fields, now) {
            txn.audit(
                "alert_suppressed",
                links(&case_id),
                now,
                json!({"suppression": s.id, "reason": s.reason, "owner": s.owner, "expires": s.expires}),
            )?;
            stored.suppressed_by = Some(s.id.clone());
            if is_new {
                case.suppressed_by = Some(Suppressed {
                    id: s.id.clone(),
                    reason: s.reason.clone(),
                    owner: s.owner.clone(),
                });
                let reason = format!("suppressed by {} ({}; owner {})", s.id, s.reason, s.owner);
                self.transition(
                    txn,
                    &mut case,
                    CaseState::Suppressed,
                    now,
                    &reason,
                    &alert_id,
                )?;
                self.bump_open(txn, -1)?;
            }
            txn.put_json(keys::alert(&alert_id), &stored)?;
            txn.put_json(keys::case(&case_id), &case)?;
            return Ok(IngestAck {
                alert_id,
                case_id,
                duplicate: false,
            });
        }

        // 5. Enrichment: its failure is recorded on its own and never drops the alert.
        let report = self.parts.enricher.enrich(fields, now);
        txn.audit("enrichment", links(&case_id), now, &report)?;
        if !report.failures.is_empty() {
            self.tallies
                .push(Tally::EnrichmentFailures(report.failures.len() as u64));
            txn.audit(
                "enrichment_failed",
                links(&case_id),
                now,
                json!({"failures": report.failures}),
            )?;
        }
        if is_new {
            self.transition(
                txn,
                &mut case,
                CaseState::Enriched,
                now,
                "asset, identity and intel context attached",
                &alert_id,
            )?;
            let why = match &corr_key {
                Some(k) => format!("new case keyed on {k}"),
                None => "new case (the alert names no entity to correlate on)".to_string(),
            };
            self.transition(txn, &mut case, CaseState::Correlated, now, &why, &alert_id)?;
        }

        // 6. Playbooks propose; 7. policy decides each step.
        let policy_engine = self.parts.policies.current();
        let mut new_actions = 0;
        let (mut not_proposed, mut chat_held) = (0usize, 0usize);
        let max_actions = self.parts.cases.max_actions_per_case;
        let max_chat = self.parts.cases.max_chat_requests_per_case;
        let playbooks = self.parts.playbooks.clone();
        for pb in playbooks
            .iter()
            .filter(|pb| pb.matcher.matches(format, fields))
        {
            for prop in pb.propose(&case_id, fields) {
                let idem = idempotency_key(
                    &case_id,
                    prop.playbook,
                    &prop.step.id,
                    prop.step.action,
                    &prop.target,
                );
                let xi = keys::action_index(&case_id, &idem);
                if txn.get(&store, &xi)?.is_some() {
                    continue; // already proposed for this case
                }
                if case.action_ids.len() >= max_actions {
                    not_proposed += 1;
                    continue;
                }
                let action_id = self
                    .ids
                    .generate()
                    .unwrap_or_else(|_| ulid::Ulid::generate())
                    .to_string();
                let mut req = ActionRequest {
                    action_id: action_id.clone(),
                    case_id: case_id.clone(),
                    alert_id: alert_id.clone(),
                    playbook: pb.name.clone(),
                    step: prop.step.id.clone(),
                    kind: prop.step.action,
                    connector: prop.step.connector.clone(),
                    target: prop.target.clone(),
                    parameters: prop.step.parameters.clone(),
                    on_failure: prop.step.on_failure,
                    state: ActionState::Proposed,
                    tier: None,
                    determining_policies: vec![],
                    reasons: vec![],
                    decision_seq: None,
                    policy_hash: None,
                    idempotency_key: idem,
                    created_at: now,
                    updated_at: now,
                    requester: format!("playbook:{}", pb.name),
                    approval: None,
                    decision_input: None,
                    execution: None,
                    rollback_of: None,
                    rolled_back_by: None,
                    chat: Vec::new(),
                    chat_held: false,
                };
                let alinks = Links {
                    case_id: Some(case_id.clone()),
                    alert_id: Some(alert_id.clone()),
                    action_id: Some(action_id.clone()),
                };
                txn.audit("action_proposed", alinks.clone(), now, &req)?;
                let step_req = StepRequest {
                    playbook: pb.name.clone(),
                    family: pb.family.clone(),
                    step: prop.step.id.clone(),
                    kind: prop.step.action,
                    target: prop.target.clone(),
                    resource_attrs: policy_engine.complete_attrs(
                        &prop.target,
                        policy::enriched_attrs(
                            &prop.target,
                            &report,
                            case.alert_ids.len() as u64,
                            case.severity.id(),
                        ),
                    ),
                    context: policy::step_context(
                        fields,
                        source,
                        policy::CaseInfo {
                            id: &case_id,
                            alert_count: case.alert_ids.len() as u64,
                            entity_count: case.entities.len(),
                        },
                        &report,
                        policy::StepInfo {
                            playbook: &pb.name,
                            step: &prop.step.id,
                            kind: prop.step.action,
                        },
                        now,
                    ),
                };
                self.decide_new(
                    txn,
                    &mut req,
                    step_req,
                    prop.step.approval_timeout_mins,
                    fields.severity,
                    now,
                )?;
                if self.parts.chat && req.state == ActionState::AwaitingApproval {
                    if case.chat_requests as usize >= max_chat {
                        req.chat_held = true;
                        chat_held += 1;
                    } else {
                        case.chat_requests += 1;
                    }
                }
                txn.put(xi, action_id.clone().into_bytes());
                txn.put_json(keys::action(&action_id), &req)?;
                case.action_ids.push(action_id);
                new_actions += 1;
            }
        }
        if not_proposed > 0 {
            let detail = json!({"max": max_actions, "not_proposed": not_proposed});
            self.limit_hit(txn, &mut case, Limit::ActionsPerCase, &alert_id, now, detail)?;
        }
        if chat_held > 0 {
            let detail = json!({"max": max_chat, "not_posted": chat_held, "note": "these requests are listed by `cordon approvals list` and can be voted on over gRPC"});
            self.limit_hit(txn, &mut case, Limit::ChatRequestsPerCase, &alert_id, now, detail)?;
        }
        if new_actions > 0 && matches!(case.state, CaseState::Correlated | CaseState::Approved) {
            self.transition(
                txn,
                &mut case,
                CaseState::Recommended,
                now,
                &format!("{new_actions} action(s) proposed by playbooks"),
                &alert_id,
            )?;
        }
        self.approve_case_if_decided(txn, &mut case, now, &alert_id)?;
        stored.enrichment = Some(report);
        txn.put_json(keys::alert(&alert_id), &stored)?;
        txn.put_json(keys::case(&case_id), &case)?;
        Ok(IngestAck {
            alert_id,
            case_id,
            duplicate: false,
        })
    }

    fn transition(
        &self,
        txn: &mut Txn,
        case: &mut Case,
        to: CaseState,
        now: DateTime<Utc>,
        reason: &str,
        alert_id: &str,
    ) -> Result<(), StoreError> {
        let from = case.state;
        if case.transition(to, now, reason) {
            txn.audit(
                "case_transition",
                Links {
                    case_id: Some(case.case_id.clone()),
                    alert_id: Some(alert_id.to_string()),
                    action_id: None,
                },
                now,
                json!({"from": from, "to": to, "reason": reason}),
            )?;
        }
        Ok(())
    }

    /// Decides a freshly proposed action: records the decision, moves it to `approved`,
    /// `awaiting_approval` (with its deadline and escalation) or `denied`, and queues it for the
    /// executor when it may run. The caller stores it.
    fn decide_new(
        &mut self,
        txn: &mut Txn,
        req: &mut ActionRequest,
        step_req: StepRequest,
        step_timeout_mins: Option<u64>,
        severity: crate::alert::Severity,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let policy_engine = self.parts.policies.current();
        let alinks = Self::links(req);
        let action_id = req.action_id.clone();
        req.decision_input = Some(crate::action::DecisionInput {
            family: step_req.family.clone(),
            resource_attrs: step_req.resource_attrs.clone(),
            context: step_req.context.clone(),
        });
        let record = policy_engine.decide_step(step_req);
        let seq = txn.audit("policy_decision", alinks.clone(), now, &record)?;
        self.tallies.push(Tally::Decision(record.tier));
        let next = match record.tier {
            Tier::Auto => ActionState::Approved,
            Tier::OneApprover | Tier::TwoPerson => ActionState::AwaitingApproval,
            Tier::Denied => ActionState::Denied,
        };
        req.tier = Some(record.tier);
        req.determining_policies = record.determining.iter().map(|d| d.id.clone()).collect();
        req.reasons = record.reasons.clone();
        req.decision_seq = Some(seq);
        req.policy_hash = Some(record.policy_hash.clone());
        txn.audit(
            "action_transition",
            alinks,
            now,
            json!({"from": req.state, "to": next, "tier": record.tier, "reasons": record.reasons, "decision_seq": seq}),
        )?;
        req.state = next;
        if next == ActionState::Approved {
            txn.put(keys::runnable(&action_id), vec![]);
        }
        if next == ActionState::AwaitingApproval {
            let needed = record.tier.approvals_needed().unwrap_or(1);
            let from_policy_or_playbook = match (record.approval_timeout_mins, step_timeout_mins) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let mins = self.timeout_mins(from_policy_or_playbook, severity);
            let deadline = now + Duration::minutes(mins);
            let escalate_at = now
                + Duration::milliseconds(
                    ((mins * 60_000) as f64 * self.parts.approvals.escalate_at_fraction) as i64,
                );
            req.approval = Some(crate::action::ApprovalState {
                needed,
                deadline,
                escalate_at,
                escalated: false,
                votes: vec![],
                decided_hash: None,
            });
            txn.put(keys::pending(&action_id), vec![]);
            txn.put(keys::deadline(deadline, &action_id), vec![]);
            txn.put(keys::escalation(escalate_at, &action_id), vec![]);
        }
        self.changed.push(req.clone());
        Ok(())
    }

    fn bump_open(&self, txn: &mut Txn, delta: i64) -> Result<(), StoreError> {
        let n = txn
            .get_json::<i64>(&self.parts.store, keys::CASES_OPEN)?
            .unwrap_or(0)
            + delta;
        txn.put_json(keys::CASES_OPEN.to_vec(), &n.max(0))
    }
}

/// Approval votes, expiry and escalation.
impl Engine {
    /// Deadline length in minutes: the stricter of the determining policies'
    /// `@approval_timeout_mins` and the playbook step's `approval_timeout_mins`, else the
    /// configured default scaled by severity (critical ½, high 1, medium 2,
    /// low and informational 4).
    fn timeout_mins(&self, from_policy: Option<u64>, severity: crate::alert::Severity) -> i64 {
        use crate::alert::Severity::*;
        let base = self.parts.approvals.default_timeout_mins as f64;
        let mins = from_policy.map(|m| m as f64).unwrap_or(match severity {
            Critical => base / 2.0,
            High => base,
            Medium => base * 2.0,
            Low | Informational => base * 4.0,
        });
        (mins.max(1.0)) as i64
    }

    fn links(a: &ActionRequest) -> Links {
        Links {
            case_id: Some(a.case_id.clone()),
            alert_id: Some(a.alert_id.clone()),
            action_id: Some(a.action_id.clone()),
        }
    }

    /// Moves `a` out of `awaiting_approval`: removes its indexes, records the transition.
    fn leave_pending(
        &mut self,
        txn: &mut Txn,
        a: &mut ActionRequest,
        to: ActionState,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<(), StoreError> {
        let hash = a.request_hash(&self.parts.policies.current().hash);
        if let Some(ap) = a.approval.as_mut() {
            ap.decided_hash = Some(hash);
        }
        if let Some(ap) = &a.approval {
            txn.delete(keys::pending(&a.action_id));
            txn.delete(keys::deadline(ap.deadline, &a.action_id));
            txn.delete(keys::escalation(ap.escalate_at, &a.action_id));
        }
        txn.audit(
            "action_transition",
            Self::links(a),
            now,
            json!({"from": a.state, "to": to, "reason": why}),
        )?;
        a.state = to;
        a.updated_at = now;
        if to == ActionState::Approved {
            txn.put(keys::runnable(&a.action_id), vec![]);
        }
        txn.put_json(keys::action(&a.action_id), a)?;
        self.changed.push(a.clone());
        self.refresh_case(txn, &a.case_id.clone(), &a.alert_id.clone(), now)
    }

    /// Re-derives the case state from its actions: `approved` once nothing awaits a human and
    /// something may run.
    fn refresh_case(
        &mut self,
        txn: &mut Txn,
        case_id: &str,
        alert_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(case_id))? else {
            return Ok(());
        };
        if self.approve_case_if_decided(txn, &mut case, now, alert_id)? {
            txn.put_json(keys::case(case_id), &case)?;
        }
        Ok(())
    }

    /// A `recommended` case becomes `approved` once nothing awaits a human and at least one of
    /// its actions may run. Returns whether it moved.
    fn approve_case_if_decided(
        &self,
        txn: &mut Txn,
        case: &mut Case,
        now: DateTime<Utc>,
        alert_id: &str,
    ) -> Result<bool, StoreError> {
        if case.state != CaseState::Recommended {
            return Ok(false);
        }
        let store = &self.parts.store;
        let (mut awaiting, mut approved) = (false, false);
        /// Only the state of a stored action request: reading it skips the rest of the record.
        #[derive(Deserialize)]
        struct StateOf {
            state: ActionState,
        }
        for id in &case.action_ids {
            if let Some(a) = txn.get_json::<StateOf>(store, &keys::action(id))? {
                awaiting |= a.state == ActionState::AwaitingApproval;
                approved |= a.state == ActionState::Approved;
            }
        }
        if approved && !awaiting {
            self.transition(
                txn,
                case,
                CaseState::Approved,
                now,
                "every proposed action is decided and at least one may run",
                alert_id,
            )?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Handles one vote. `Ok(Err(..))` is a refusal that was recorded; `Err` a store failure.
    fn vote(
        &mut self,
        txn: &mut Txn,
        v: &VoteCast,
    ) -> Result<Result<VoteOutcome, VoteError>, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let Some(mut a) = txn.get_json::<ActionRequest>(&store, &keys::action(&v.approval_id))?
        else {
            return Ok(Err(VoteError::NotFound(v.approval_id.clone())));
        };
        let policy = self.parts.policies.current();
        let current_hash = a.request_hash(&policy.hash);
        let record = |txn: &mut Txn, a: &ActionRequest, outcome: &str, extra: serde_json::Value| {
            txn.audit(
                "vote",
                Self::links(a),
                now,
                json!({
                    "approval_id": a.action_id, "user": v.user, "channel": v.channel, "identity": v.identity,
                    "decision": if v.approve { "approve" } else { "deny" }, "request_hash": current_hash,
                    "reviewed_hash": v.request_hash, "comment": v.comment, "outcome": outcome, "detail": extra,
                }),
            )
        };
        // Past its deadline: expire it now (the timer may not have run yet).
        if a.state == ActionState::AwaitingApproval
            && a.approval.as_ref().is_some_and(|ap| now >= ap.deadline)
        {
            self.leave_pending(
                txn,
                &mut a,
                ActionState::Expired,
                now,
                "the approval deadline passed",
            )?;
            record(txn, &a, "refused_expired", json!(null))?;
            return Ok(Err(VoteError::Expired(a.action_id)));
        }
        if a.state != ActionState::AwaitingApproval {
            record(txn, &a, "refused_not_pending", json!({"state": a.state}))?;
            return Ok(Err(match a.state {
                ActionState::Expired => VoteError::Expired(a.action_id),
                state => VoteError::NotPending {
                    id: a.action_id,
                    state,
                },
            }));
        }
        if let Some(seen) = &v.request_hash
            && !seen.is_empty()
            && *seen != current_hash
        {
            record(txn, &a, "refused_request_changed", json!(null))?;
            return Ok(Err(VoteError::RequestChanged {
                current: current_hash,
            }));
        }
        let Some(ap) = a.approval.clone() else {
            return Ok(Err(VoteError::NotPending {
                id: a.action_id,
                state: a.state,
            }));
        };
        let counted = ap.approvals_for(&current_hash);
        if counted.contains(&v.user.as_str()) && v.approve {
            record(txn, &a, "already_counted", json!(null))?;
            return Ok(Ok(VoteOutcome {
                action: a,
                outcome: "already_counted",
            }));
        }
        let input = a.decision_input.clone();
        let (environment, criticality) = input
            .as_ref()
            .map(|i| {
                let s = |k: &str| {
                    i.resource_attrs
                        .get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or("unknown")
                        .to_string()
                };
                (s("environment"), s("criticality"))
            })
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        let check = policy.authorize_vote(&policy::VoteRequest {
            user: v.user.clone(),
            channel: v.channel.clone(),
            identity: v.identity.clone(),
            approvals: counted.len() as u8,
            approval: policy::ApprovalInfo {
                approval_id: a.action_id.clone(),
                action_kind: a.kind,
                target: a.target.clone(),
                requester: a.requester.clone(),
                case_id: a.case_id.clone(),
                tier: a.tier.unwrap_or(Tier::Denied),
                environment,
                criticality,
            },
        });
        let check_json = serde_json::to_value(&check.record).unwrap_or_default();
        if !check.allowed {
            let why = check.refusal.clone().unwrap_or_default();
            record(
                txn,
                &a,
                "refused",
                json!({"reason": why, "decision": check_json}),
            )?;
            return Ok(Err(VoteError::Refused(why)));
        }
        let mut ap = ap;
        ap.votes.push(crate::action::VoteRecord {
            user: v.user.clone(),
            channel: v.channel.clone(),
            identity: v.identity.clone(),
            decision: if v.approve { "approve" } else { "deny" }.into(),
            at: now,
            request_hash: current_hash.clone(),
            comment: v.comment.clone(),
        });
        a.approval = Some(ap.clone());
        a.updated_at = now;
        if !v.approve {
            record(txn, &a, "rejected", json!({"decision": check_json}))?;
            self.leave_pending(
                txn,
                &mut a,
                ActionState::Rejected,
                now,
                &format!("denied by {} over {}", v.user, v.channel),
            )?;
            return Ok(Ok(VoteOutcome {
                action: a,
                outcome: "rejected",
            }));
        }
        let given = ap.approvals_for(&current_hash).len() as u8;
        if given < ap.needed {
            record(
                txn,
                &a,
                "counted",
                json!({"decision": check_json, "approvals": given, "needed": ap.needed}),
            )?;
            txn.put_json(keys::action(&a.action_id), &a)?;
            self.changed.push(a.clone());
            return Ok(Ok(VoteOutcome {
                action: a,
                outcome: "counted",
            }));
        }
        record(
            txn,
            &a,
            "counted",
            json!({"decision": check_json, "approvals": given, "needed": ap.needed}),
        )?;
        // Enough votes: re-evaluate the step with the real approvals; only an Allow counts.
        let Some(input) = input else {
            self.leave_pending(
                txn,
                &mut a,
                ActionState::Denied,
                now,
                "no stored decision input to re-check (fail closed)",
            )?;
            return Ok(Ok(VoteOutcome {
                action: a,
                outcome: "counted",
            }));
        };
        let step = || StepRequest {
            playbook: a.playbook.clone(),
            family: input.family.clone(),
            step: a.step.clone(),
            kind: a.kind,
            target: a.target.clone(),
            resource_attrs: input.resource_attrs.clone(),
            context: input.context.clone(),
        };
        let (allowed, rec) = policy.recheck(step(), given);
        let seq = txn.audit(
            "policy_decision",
            Self::links(&a),
            now,
            json!({"phase": "approvals_reached", "approvals": given, "allowed": allowed, "record": rec}),
        )?;
        a.decision_seq = Some(seq);
        if allowed {
            self.leave_pending(
                txn,
                &mut a,
                ActionState::Approved,
                now,
                &format!("{given} distinct authorised approval(s); policy re-check allowed"),
            )?;
            Ok(Ok(VoteOutcome {
                action: a,
                outcome: "approved",
            }))
        } else {
            // The policy in force now wants more (or denies): keep waiting if more votes could
            // still satisfy it, else deny.
            let fresh = policy.decide_step(step());
            match fresh.tier.approvals_needed() {
                Some(n) if n > given => {
                    if let Some(ap) = a.approval.as_mut() {
                        ap.needed = n;
                    }
                    a.tier = Some(fresh.tier);
                    txn.put_json(keys::action(&a.action_id), &a)?;
                    self.changed.push(a.clone());
                    Ok(Ok(VoteOutcome {
                        action: a,
                        outcome: "counted",
                    }))
                }
                _ => {
                    self.leave_pending(
                        txn,
                        &mut a,
                        ActionState::Denied,
                        now,
                        "the policy re-check with the real approvals denied it",
                    )?;
                    Ok(Ok(VoteOutcome {
                        action: a,
                        outcome: "counted",
                    }))
                }
            }
        }
    }

    /// Expires requests past their deadline and raises due escalations.
    fn tick(&mut self, txn: &mut Txn) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        self.prune_chat_replays(txn, now)?;
        let due = |key: &[u8], prefix: &[u8]| -> Option<String> {
            let rest = std::str::from_utf8(key.strip_prefix(prefix)?).ok()?;
            let (ms, id) = rest.split_once('/')?;
            (ms.parse::<i64>().ok()? <= now.timestamp_millis()).then(|| id.to_string())
        };
        // These scans see sled, not the commit in flight; each hit is re-read through the
        // transaction (state, escalated flag) before anything is decided on it.
        for id in store.keys_while(keys::DEADLINE_PREFIX, |k| {
            due(k, keys::DEADLINE_PREFIX).is_some()
        })? {
            let Some(id) = due(&id, keys::DEADLINE_PREFIX) else {
                continue;
            };
            if let Some(mut a) = txn.get_json::<ActionRequest>(&store, &keys::action(&id))?
                && a.state == ActionState::AwaitingApproval
            {
                self.leave_pending(
                    txn,
                    &mut a,
                    ActionState::Expired,
                    now,
                    "the approval deadline passed; it will never run",
                )?;
            }
        }
        for key in store.keys_while(keys::ESCALATION_PREFIX, |k| {
            due(k, keys::ESCALATION_PREFIX).is_some()
        })? {
            let Some(id) = due(&key, keys::ESCALATION_PREFIX) else {
                continue;
            };
            txn.delete(key);
            if let Some(mut a) = txn.get_json::<ActionRequest>(&store, &keys::action(&id))?
                && a.state == ActionState::AwaitingApproval
                && let Some(ap) = a.approval.as_mut()
                && !ap.escalated
            {
                ap.escalated = true;
                let hash = a.request_hash(&self.parts.policies.current().hash);
                let missing = a.approval.as_ref().map_or(0, |ap| {
                    ap.needed
                        .saturating_sub(ap.approvals_for(&hash).len() as u8)
                });
                let deadline = a.approval.as_ref().map_or(now, |ap| ap.deadline);
                txn.audit(
                    "approval_escalated",
                    Self::links(&a),
                    now,
                    json!({"deadline": deadline, "approvals_missing": missing}),
                )?;
                txn.put_json(keys::action(&a.action_id), &a)?;
                self.escalations.push(Escalated {
                    action_id: a.action_id.clone(),
                    deadline,
                    missing,
                });
            }
        }
        Ok(())
    }
}

/// Chat: what is owed to chat, what was posted, and callbacks turned into votes.
impl Engine {
    /// Marks every action changed in this batch whose chat messages may now be behind: a new
    /// request to post, or a posted one whose votes, state or escalation changed.
    fn mark_chat_owed(&mut self, txn: &mut Txn) {
        let mut ids: Vec<String> = self
            .changed
            .iter()
            .filter(|a| a.owes_chat())
            .map(|a| a.action_id.clone())
            .chain(self.escalations.iter().map(|e| e.action_id.clone()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return;
        }
        let generation = self.next_id();
        for id in ids {
            txn.put(keys::chat_owed(&id), generation.clone().into_bytes());
        }
    }

    fn chat(&mut self, txn: &mut Txn, op: ChatOp) -> Result<ChatReply, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        match op {
            ChatOp::Delivered(d) => {
                let Some(mut a) =
                    txn.get_json::<ActionRequest>(&store, &keys::action(&d.action_id))?
                else {
                    return Ok(ChatReply::Recorded);
                };
                match a.chat.iter_mut().find(|p| p.platform == d.platform) {
                    Some(post) => {
                        if let Some(r) = &d.rendered {
                            post.rendered = r.clone();
                        }
                        if let Some(n) = &d.notice
                            && !post.notices.contains(n)
                        {
                            post.notices.push(n.clone());
                        }
                    }
                    None => a.chat.push(crate::action::ChatPost {
                        platform: d.platform.to_string(),
                        channel: d.channel.clone(),
                        reference: d.reference.clone(),
                        posted_at: now,
                        rendered: d.rendered.clone().unwrap_or_default(),
                        notices: d.notice.iter().cloned().collect(),
                    }),
                }
                txn.audit(
                    "chat_post",
                    Self::links(&a),
                    now,
                    json!({
                        "platform": d.platform, "purpose": d.purpose, "action_id": a.action_id,
                        "channel": d.channel, "ref": d.reference, "attempt": d.attempt,
                        "outcome": "posted", "error": null, "notice": d.notice,
                    }),
                )?;
                txn.put_json(keys::action(&a.action_id), &a)?;
                Ok(ChatReply::Recorded)
            }
            ChatOp::Failed {
                action_id,
                platform,
                purpose,
                channel,
                attempt,
                error,
            } => {
                let links = txn
                    .get_json::<ActionRequest>(&store, &keys::action(&action_id))?
                    .map(|a| Self::links(&a))
                    .unwrap_or_default();
                txn.audit(
                    "chat_post",
                    links,
                    now,
                    json!({
                        "platform": platform, "purpose": purpose, "action_id": action_id,
                        "channel": channel, "ref": null, "attempt": attempt,
                        "outcome": "failed", "error": error,
                    }),
                )?;
                Ok(ChatReply::Recorded)
            }
            ChatOp::Synced {
                action_id,
                generation,
            } => {
                let key = keys::chat_owed(&action_id);
                if txn.get(&store, &key)?.as_deref() == Some(generation.as_bytes()) {
                    txn.delete(key);
                }
                Ok(ChatReply::Recorded)
            }
            ChatOp::Callback(cb) => self.chat_callback(txn, cb, now),
        }
    }

    fn chat_callback(
        &mut self,
        txn: &mut Txn,
        cb: ChatCallback,
        now: DateTime<Utc>,
    ) -> Result<ChatReply, StoreError> {
        let store = self.parts.store.clone();
        let links = txn
            .get_json::<ActionRequest>(&store, &keys::action(&cb.approval_id))?
            .map(|a| Self::links(&a))
            .unwrap_or_default();
        let user = cb.verdict.as_ref().ok().map(|v| v.user.clone());
        let record = |txn: &mut Txn, outcome: &str, reason: Option<&str>, message: &str| {
            txn.audit(
                "chat_callback",
                links.clone(),
                now,
                json!({
                    "platform": cb.platform, "outcome": outcome, "reason": reason,
                    "message": message, "platform_user": cb.platform_user, "user": user,
                    "approval_id": cb.approval_id, "decision": cb.decision, "detail": cb.detail,
                }),
            )
        };
        if let Some(k) = &cb.replay_key {
            let key = keys::chat_replay(cb.platform, k);
            if txn.get(&store, &key)?.is_some() {
                let msg = "this callback was already received; a replay changes nothing";
                record(txn, "refused", Some("replayed"), msg)?;
                return Ok(ChatReply::Refused("replayed", msg.into()));
            }
            txn.put_json(key, &(now + cb.replay_ttl))?;
        }
        match &cb.verdict {
            Err((code, msg)) => {
                record(txn, "refused", Some(code), msg)?;
                Ok(ChatReply::Refused(code, msg.clone()))
            }
            Ok(vote) => {
                // The vote record comes first; the callback record then says how it ended.
                let result = self.vote(txn, vote)?;
                match &result {
                    Ok(_) => record(txn, "accepted", None, "")?,
                    Err(e) => record(txn, "refused", Some("vote_refused"), &e.to_string())?,
                };
                Ok(ChatReply::Voted(Box::new(result)))
            }
        }
    }

    /// Forgets chat callback ids whose replay window is over.
    fn prune_chat_replays(&mut self, txn: &mut Txn, now: DateTime<Utc>) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        for (key, until) in
            store.scan_json::<DateTime<Utc>>(keys::CHAT_REPLAY_PREFIX, None, 100_000)?
        {
            // The scan sees sled; the commit in flight (or this batch) may have renewed the
            // guard since, so the decision is taken on the value read through the transaction.
            if until <= now
                && txn
                    .get_json::<DateTime<Utc>>(&store, &key)?
                    .is_some_and(|until| until <= now)
            {
                txn.delete(key);
            }
        }
        Ok(())
    }
}

/// The executor's records: claims, evidence, outcomes, rollbacks.
impl Engine {
    fn exec(&mut self, txn: &mut Txn, op: ExecOp) -> Result<ExecReply, StoreError> {
        match op {
            ExecOp::Claim { action_id, mode } => self.exec_claim(txn, &action_id, &mode),
            ExecOp::Record {
                action_id,
                kind,
                body,
                update,
            } => self.exec_record(txn, &action_id, kind, body, update),
            ExecOp::Finish {
                action_id,
                to,
                outcome,
                escalate,
            } => self.exec_finish(txn, &action_id, to, &outcome, escalate),
            ExecOp::Rollback {
                action_id,
                user,
                reason,
            } => self.exec_rollback(txn, &action_id, &user, &reason),
        }
    }

    /// Records that a fan-out bound held back part of what an alert would set in motion, and
    /// escalates the case the first time it hits that bound.
    fn limit_hit(
        &mut self,
        txn: &mut Txn,
        case: &mut Case,
        limit: Limit,
        alert_id: &str,
        now: DateTime<Utc>,
        mut detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let links = Links {
            case_id: Some(case.case_id.clone()),
            alert_id: Some(alert_id.to_string()),
            action_id: None,
        };
        detail["limit"] = json!(limit.as_str());
        txn.audit("fanout_limited", links.clone(), now, &detail)?;
        if case.limits_hit.iter().any(|l| l == limit.as_str()) {
            return Ok(());
        }
        case.limits_hit.push(limit.as_str().to_string());
        let why = limit.reason(&detail);
        tracing::warn!(case_id = %case.case_id, limit = limit.as_str(), reason = %why, "escalation: a person has to look at this case");
        self.tallies.push(Tally::Escalation);
        txn.audit(
            "escalation",
            links,
            now,
            json!({"reason": why, "limit": limit.as_str(), "case_state": case.state}),
        )?;
        Ok(())
    }

    fn escalate(
        &mut self,
        txn: &mut Txn,
        a: &ActionRequest,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<(), StoreError> {
        tracing::warn!(action_id = %a.action_id, case_id = %a.case_id, kind = %a.kind, target = %a.target.id, reason = why, "escalation: a person has to look at this action");
        self.tallies.push(Tally::Escalation);
        txn.audit(
            "escalation",
            Self::links(a),
            now,
            json!({"reason": why, "kind": a.kind, "target": a.target, "state": a.state, "connector": a.connector}),
        )?;
        Ok(())
    }

    /// Distinct approvals recorded for the request as it was decided.
    fn approvals_given(a: &ActionRequest) -> u8 {
        a.approval.as_ref().map_or(0, |ap| {
            ap.decided_hash
                .as_deref()
                .map_or(0, |h| ap.approvals_for(h).len() as u8)
        })
    }

    fn exec_claim(&mut self, txn: &mut Txn, id: &str, mode: &str) -> Result<ExecReply, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let Some(mut a) = txn.get_json::<ActionRequest>(&store, &keys::action(id))? else {
            txn.delete(keys::runnable(id));
            return Ok(ExecReply::Refused(format!("no action {id}")));
        };
        let resuming = matches!(a.state, ActionState::Executing | ActionState::Unknown);
        if !resuming && a.state != ActionState::Approved {
            txn.delete(keys::runnable(id));
            return Ok(ExecReply::Refused(format!("action is {}", a.state)));
        }
        let sent = a.execution.as_ref().is_some_and(|e| e.writes_sent > 0);
        if resuming {
            txn.audit(
                "execution_resumed",
                Self::links(&a),
                now,
                json!({"state": a.state, "execution": a.execution}),
            )?;
            if sent || a.state == ActionState::Unknown {
                // A write may have reached the vendor: it is reconciled by probe whatever the
                // policy says now, never abandoned half-done.
                return Ok(ExecReply::Claimed(Box::new(a)));
            }
        }
        // Nothing runs without a recorded Allow, and the policy in force now must still allow
        // it with the approvals actually given.
        let approvals = Self::approvals_given(&a);
        let recorded = a.decision_seq.is_some()
            && match a.tier {
                Some(Tier::Auto) => true,
                Some(t) => t.approvals_needed().is_some_and(|n| approvals >= n),
                None => false,
            };
        let check = match (&a.decision_input, recorded) {
            (Some(input), true) => {
                let step = StepRequest {
                    playbook: a.playbook.clone(),
                    family: input.family.clone(),
                    step: a.step.clone(),
                    kind: a.kind,
                    target: a.target.clone(),
                    resource_attrs: input.resource_attrs.clone(),
                    context: input.context.clone(),
                };
                let (allowed, rec) = self.parts.policies.current().recheck(step, approvals);
                let seq = txn.audit(
                    "policy_decision",
                    Self::links(&a),
                    now,
                    json!({"phase": "pre_execution", "approvals": approvals, "allowed": allowed, "record": rec}),
                )?;
                Ok(seq).and_then(|seq| {
                    if allowed {
                        Ok(seq)
                    } else {
                        Err("the policy re-check right before execution denied it".to_string())
                    }
                })
            }
            (None, _) => Err("no stored decision input to re-check".to_string()),
            (_, false) => Err("no recorded Allow with enough approvals".to_string()),
        };
        let seq = match check {
            Ok(seq) => seq,
            Err(why) => {
                let from = a.state;
                let to = if from == ActionState::Approved {
                    ActionState::Denied
                } else {
                    ActionState::Failed
                };
                txn.audit(
                    "action_transition",
                    Self::links(&a),
                    now,
                    json!({"from": from, "to": to, "reason": why}),
                )?;
                a.state = to;
                a.updated_at = now;
                self.escalate(txn, &a, now, &format!("not run: {why}"))?;
                txn.delete(keys::runnable(id));
                txn.delete(keys::lease(&a.connector, &a.target));
                txn.put_json(keys::action(id), &a)?;
                self.changed.push(a.clone());
                self.refresh_after_execution(txn, &a, now)?;
                return Ok(ExecReply::Refused(why));
            }
        };
        if resuming {
            return Ok(ExecReply::Claimed(Box::new(a)));
        }
        let lease = keys::lease(&a.connector, &a.target);
        if let Some(holder) = txn.get(&store, &lease)? {
            let holder = String::from_utf8_lossy(&holder).to_string();
            if holder != a.action_id
                && txn
                    .get_json::<ActionRequest>(&store, &keys::action(&holder))?
                    .is_some_and(|h| !h.state.is_terminal())
            {
                return Ok(ExecReply::Busy(holder));
            }
        }
        txn.put(lease, a.action_id.clone().into_bytes());
        a.execution = Some(crate::action::Execution {
            connector: a.connector.clone(),
            mode: mode.to_string(),
            intent_at: now,
            phase: crate::action::ExecPhase::Claimed,
            writes_sent: 0,
            retries: 0,
            vendor: Default::default(),
            outcome: None,
            escalation: None,
            finished_at: None,
        });
        txn.audit(
            "execution_intent",
            Self::links(&a),
            now,
            json!({"idempotency_key": a.idempotency_key, "connector": a.connector, "mode": mode, "kind": a.kind, "target": a.target, "approvals": approvals, "pre_execution_decision_seq": seq}),
        )?;
        txn.audit(
            "action_transition",
            Self::links(&a),
            now,
            json!({"from": a.state, "to": ActionState::Executing, "reason": "claimed by the executor"}),
        )?;
        a.state = ActionState::Executing;
        a.updated_at = now;
        txn.put_json(keys::action(id), &a)?;
        self.changed.push(a.clone());
        Ok(ExecReply::Claimed(Box::new(a)))
    }

    fn exec_record(
        &mut self,
        txn: &mut Txn,
        id: &str,
        kind: &'static str,
        body: serde_json::Value,
        update: ExecUpdate,
    ) -> Result<ExecReply, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let Some(mut a) = txn.get_json::<ActionRequest>(&store, &keys::action(id))? else {
            return Ok(ExecReply::Refused(format!("no action {id}")));
        };
        if !matches!(a.state, ActionState::Executing | ActionState::Unknown) {
            return Ok(ExecReply::Refused(format!("action is {}", a.state)));
        }
        let mut body = body;
        if let Some(o) = body.as_object_mut() {
            o.insert("idempotency_key".into(), json!(a.idempotency_key));
            o.insert("connector".into(), json!(a.connector));
        }
        txn.audit(kind, Self::links(&a), now, body)?;
        if let Some(e) = a.execution.as_mut() {
            if let Some(p) = update.phase {
                e.phase = p;
            }
            if update.write_sent {
                e.writes_sent += 1;
            }
            if update.retry {
                e.retries += 1;
            }
            e.vendor.extend(update.vendor);
        }
        a.updated_at = now;
        txn.put_json(keys::action(id), &a)?;
        Ok(ExecReply::Recorded(Box::new(a)))
    }

    fn exec_finish(
        &mut self,
        txn: &mut Txn,
        id: &str,
        to: ActionState,
        outcome: &str,
        escalate: Option<String>,
    ) -> Result<ExecReply, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let Some(mut a) = txn.get_json::<ActionRequest>(&store, &keys::action(id))? else {
            return Ok(ExecReply::Refused(format!("no action {id}")));
        };
        if a.state == to && to == ActionState::Unknown {
            // Still unknown after another reconciliation: note it, change nothing else.
            txn.audit(
                "reconcile_unresolved",
                Self::links(&a),
                now,
                json!({"outcome": outcome}),
            )?;
            return Ok(ExecReply::Finished);
        }
        if !a.state.can_become(to) {
            return Ok(ExecReply::Refused(format!(
                "action is {}; it cannot become {to}",
                a.state
            )));
        }
        txn.audit(
            "action_transition",
            Self::links(&a),
            now,
            json!({"from": a.state, "to": to, "reason": outcome}),
        )?;
        a.state = to;
        a.updated_at = now;
        if let Some(e) = a.execution.as_mut() {
            e.phase = if to == ActionState::Unknown {
                crate::action::ExecPhase::Unknown
            } else {
                crate::action::ExecPhase::Finished
            };
            e.outcome = Some(outcome.to_string());
            e.escalation = escalate.clone();
            if to.is_terminal() {
                e.finished_at = Some(now);
            }
        }
        if let Some(why) = &escalate {
            self.escalate(txn, &a, now, why)?;
        }
        if to.is_terminal() {
            txn.delete(keys::runnable(id));
            txn.delete(keys::lease(&a.connector, &a.target));
            self.tallies.push(Tally::Execution(to));
        }
        txn.put_json(keys::action(id), &a)?;
        self.changed.push(a.clone());
        // A rollback that succeeded marks what it undid.
        if to == ActionState::Succeeded
            && let Some(orig_id) = a.rollback_of.clone()
            && let Some(mut orig) =
                txn.get_json::<ActionRequest>(&store, &keys::action(&orig_id))?
            && orig.state.can_become(ActionState::RolledBack)
        {
            txn.audit(
                "action_transition",
                Self::links(&orig),
                now,
                json!({"from": orig.state, "to": ActionState::RolledBack, "reason": format!("undone by {}", a.action_id)}),
            )?;
            orig.state = ActionState::RolledBack;
            orig.updated_at = now;
            txn.put_json(keys::action(&orig_id), &orig)?;
            self.changed.push(orig);
        }
        self.refresh_after_execution(txn, &a, now)?;
        Ok(ExecReply::Finished)
    }

    /// An `approved` case becomes `executed` once none of its actions waits or runs.
    fn refresh_after_execution(
        &mut self,
        txn: &mut Txn,
        a: &ActionRequest,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(&a.case_id))? else {
            return Ok(());
        };
        if case.state != CaseState::Approved {
            return Ok(());
        }
        let mut counts: std::collections::BTreeMap<&'static str, usize> = Default::default();
        for id in &case.action_ids {
            let Some(x) = txn.get_json::<ActionRequest>(&store, &keys::action(id))? else {
                continue;
            };
            if matches!(
                x.state,
                ActionState::Approved
                    | ActionState::AwaitingApproval
                    | ActionState::Executing
                    | ActionState::Unknown
                    | ActionState::Proposed
            ) {
                return Ok(());
            }
            *counts.entry(x.state.as_str()).or_default() += 1;
        }
        let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let reason = format!("every action is finished: {}", summary.join(", "));
        self.transition(
            txn,
            &mut case,
            CaseState::Executed,
            now,
            &reason,
            &a.alert_id,
        )?;
        txn.put_json(keys::case(&case.case_id), &case)?;
        Ok(())
    }

    fn exec_rollback(
        &mut self,
        txn: &mut Txn,
        id: &str,
        user: &str,
        reason: &str,
    ) -> Result<ExecReply, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let Some(mut orig) = txn.get_json::<ActionRequest>(&store, &keys::action(id))? else {
            return Ok(ExecReply::Refused(format!("no action {id}")));
        };
        let refuse = |why: String| Ok(ExecReply::Refused(why));
        if orig.state != ActionState::Succeeded {
            return refuse(format!(
                "only a succeeded action can be rolled back; {id} is {}",
                orig.state
            ));
        }
        let Some(inverse) = orig.kind.inverse() else {
            return refuse(format!("{} cannot be undone", orig.kind));
        };
        let reversible = self
            .parts
            .connectors
            .connectors
            .get(&orig.connector)
            .is_some_and(|c| c.reversible(orig.kind) && c.supports(inverse));
        if !reversible {
            return refuse(format!(
                "connector {:?} declares {} irreversible (or lacks {inverse})",
                orig.connector, orig.kind
            ));
        }
        if let Some(existing) = &orig.rolled_back_by
            && let Some(r) = txn.get_json::<ActionRequest>(&store, &keys::action(existing))?
        {
            return Ok(ExecReply::RollbackProposed(Box::new(r)));
        }
        let Some(input) = orig.decision_input.clone() else {
            return refuse("the original decision input is missing; nothing to re-decide".into());
        };
        let step = format!("{}#rollback", orig.step);
        let idem = idempotency_key(&orig.case_id, &orig.playbook, &step, inverse, &orig.target);
        let action_id = self.next_id();
        let mut context = input.context.clone();
        context.insert("step".into(), json!(step));
        context.insert("reversible".into(), json!(true));
        let mut req = ActionRequest {
            action_id: action_id.clone(),
            case_id: orig.case_id.clone(),
            alert_id: orig.alert_id.clone(),
            playbook: orig.playbook.clone(),
            step: step.clone(),
            kind: inverse,
            connector: orig.connector.clone(),
            target: orig.target.clone(),
            parameters: orig.parameters.clone(),
            on_failure: orig.on_failure,
            state: ActionState::Proposed,
            tier: None,
            determining_policies: vec![],
            reasons: vec![],
            decision_seq: None,
            policy_hash: None,
            idempotency_key: idem.clone(),
            created_at: now,
            updated_at: now,
            requester: user.to_string(),
            approval: None,
            decision_input: None,
            execution: None,
            rollback_of: Some(orig.action_id.clone()),
            rolled_back_by: None,
            chat: Vec::new(),
            chat_held: false,
        };
        txn.audit(
            "rollback_requested",
            Self::links(&orig),
            now,
            json!({"by": user, "reason": reason, "rollback_action_id": action_id, "kind": inverse}),
        )?;
        txn.audit("action_proposed", Self::links(&req), now, &req)?;
        let step_req = StepRequest {
            playbook: orig.playbook.clone(),
            family: input.family.clone(),
            step,
            kind: inverse,
            target: orig.target.clone(),
            resource_attrs: input.resource_attrs.clone(),
            context,
        };
        let severity = txn
            .get_json::<Case>(&store, &keys::case(&orig.case_id))?
            .map(|c| c.severity)
            .unwrap_or(crate::alert::Severity::High);
        self.decide_new(txn, &mut req, step_req, None, severity, now)?;
        txn.put(
            keys::action_index(&orig.case_id, &idem),
            action_id.clone().into_bytes(),
        );
        txn.put_json(keys::action(&action_id), &req)?;
        orig.rolled_back_by = Some(action_id.clone());
        orig.updated_at = now;
        txn.put_json(keys::action(&orig.action_id), &orig)?;
        if let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(&orig.case_id))? {
            case.action_ids.push(action_id);
            case.updated_at = now;
            txn.put_json(keys::case(&case.case_id), &case)?;
        }
        Ok(ExecReply::RollbackProposed(Box::new(req)))
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 1000)
}

/// Read-only queries on committed engine state (for the HTTP and gRPC read APIs).
pub mod read {
    use super::*;

    pub fn case(store: &Store, id: &str) -> Result<Option<Case>, StoreError> {
        store.get_json(&keys::case(id))
    }

    pub fn alert(store: &Store, id: &str) -> Result<Option<StoredAlert>, StoreError> {
        store.get_json(&keys::alert(id))
    }

    pub fn action(store: &Store, id: &str) -> Result<Option<ActionRequest>, StoreError> {
        store.get_json(&keys::action(id))
    }

    /// Cases in creation order after `after` (a case id), at most `limit`.
    pub fn cases(
        store: &Store,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Case>, StoreError> {
        let after = after.map(keys::case);
        Ok(store
            .scan_json::<Case>(keys::CASE_PREFIX, after.as_deref(), limit)?
            .into_iter()
            .map(|(_, c)| c)
            .collect())
    }

    /// Requests awaiting approval, oldest first, after `after` (an action id), at most `limit`.
    pub fn pending(
        store: &Store,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ActionRequest>, StoreError> {
        let after = after.map(keys::pending);
        let mut out = Vec::new();
        for key in store.keys_after(keys::PENDING_PREFIX, after.as_deref(), limit)? {
            let id = String::from_utf8_lossy(&key[keys::PENDING_PREFIX.len()..]).to_string();
            if let Some(a) = action(store, &id)? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Ids of the actions whose chat messages are behind.
    pub fn chat_owed(store: &Store) -> Result<Vec<String>, StoreError> {
        Ok(store
            .keys_after(keys::CHAT_OWED_PREFIX, None, usize::MAX)?
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k[keys::CHAT_OWED_PREFIX.len()..]).to_string())
            .collect())
    }

    /// Ids of the actions the executor has to drive, in key order: up to `limit` after `after`.
    pub fn runnable(
        store: &Store,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let after = after.map(keys::runnable);
        Ok(store
            .keys_after(keys::RUNNABLE_PREFIX, after.as_deref(), limit)?
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k[keys::RUNNABLE_PREFIX.len()..]).to_string())
            .collect())
    }

    pub fn actions_of(store: &Store, case: &Case) -> Result<Vec<ActionRequest>, StoreError> {
        let mut out = Vec::new();
        for id in &case.action_ids {
            if let Some(a) = action(store, id)? {
                out.push(a);
            }
        }
        Ok(out)
    }
}
