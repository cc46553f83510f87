//! The gRPC API (`proto/cordon/v1`): the only module that knows protobuf and tonic.
//!
//! Owns: the `Alerts`, `Approvals` and `Cases` services, standard health and reflection,
//! authentication from the channel (mTLS client certificate subject/SAN or bearer token mapped
//! to a user; ingest callers are a separate role), message size limits, the mapping of engine
//! results to gRPC status codes, and the conversion of stored state to protobuf messages. Votes
//! are handed to the engine; nothing here changes state itself.

pub mod cases;

pub mod agents;
pub mod calls;
pub mod client;
pub mod learning;

mod explain;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

use crate::action::ActionRequest;
use crate::config::GrpcConfig;
use crate::engine::{self, ApprovalUpdate, EngineError, EngineHandle, VoteCast, VoteError};
use crate::ingest::{IngestFormat, clip};
use crate::policy::Policies;
use crate::secret::TokenHash;
use crate::store::Store;

/// Generated protobuf types and service stubs.
#[allow(clippy::large_enum_variant)]
pub mod pb {
    tonic::include_proto!("cordon.v1");
    /// Encoded descriptor set for server reflection.
    pub const DESCRIPTOR: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/cordon_descriptor.bin"));
}

/// Who is calling, as established by the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An approver: user id and how they were identified (`mtls` or `token`).
    Approver {
        user: String,
        identity: &'static str,
    },
    /// A SIEM or script allowed to submit alerts.
    Ingest { name: String },
    /// An AI agent (`[[agents]]`): proposes and adds findings through `Agents` only.
    Agent(crate::agent::Agent),
}

/// Credentials the server accepts, resolved from config (tokens held as hashes only).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    approver_tokens: Vec<(TokenHash, String)>,
    ingest_tokens: Vec<(TokenHash, String)>,
    cert_users: BTreeMap<String, String>,
    /// Agents' tokens, and where their refusals are recorded.
    agents: Option<crate::engine::AgentFront>,
}

impl Auth {
    pub fn from_config(cfg: &GrpcConfig) -> Auth {
        Auth {
            approver_tokens: cfg
                .approvers
                .iter()
                .filter_map(|a| Some((TokenHash::from_ref(&a.token).ok()?, a.user.clone())))
                .collect(),
            ingest_tokens: cfg
                .ingest_tokens
                .iter()
                .filter_map(|(n, r)| Some((TokenHash::from_ref(r).ok()?, n.clone())))
                .collect(),
            cert_users: cfg
                .cert_users
                .iter()
                .map(|c| (c.subject.clone(), c.user.clone()))
                .collect(),
            agents: None,
        }
    }

    /// Recognises agent tokens (a role of their own: never an approver).
    pub fn with_agents(mut self, front: crate::engine::AgentFront) -> Auth {
        self.agents = Some(front);
        self
    }

    /// Identifies the caller: a bearer token first, else a verified client certificate. More
    /// than one `authorization` entry is refused whatever they hold.
    pub fn identify<T>(&self, req: &Request<T>) -> Result<Option<Caller>, Status> {
        Ok(self.identify_one(req, one_authorization(req)?))
    }

    fn identify_one<T>(
        &self,
        req: &Request<T>,
        authorization: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) -> Option<Caller> {
        if let Some(token) = authorization.and_then(|v| v.to_str().ok()).and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        }) {
            let token = token.trim();
            if let Some((_, user)) = self.approver_tokens.iter().find(|(h, _)| h.matches(token)) {
                return Some(Caller::Approver {
                    user: user.clone(),
                    identity: "token",
                });
            }
            if let Some((_, name)) = self.ingest_tokens.iter().find(|(h, _)| h.matches(token)) {
                return Some(Caller::Ingest { name: name.clone() });
            }
            if let Some(a) = self.agents.as_ref().and_then(|f| f.agents.identify(token)) {
                return Some(Caller::Agent(a.clone()));
            }
            return None;
        }
        let certs = req.peer_certs()?;
        let der = certs.first()?;
        cert_names(der.as_ref())
            .into_iter()
            .find_map(|n| self.cert_users.get(&n))
            .map(|user| Caller::Approver {
                user: user.clone(),
                identity: "mtls",
            })
    }

    fn approver<T>(&self, req: &Request<T>) -> Result<(String, &'static str), Status> {
        match self.identify(req)? {
            Some(Caller::Approver { user, identity }) => Ok((user, identity)),
            Some(Caller::Ingest { .. }) => Err(status(
                Code::PermissionDenied,
                "ingest credentials cannot act as an approver",
            )),
            Some(Caller::Agent(a)) => {
                // Refused, and recorded with the agent's name (the record is written by the
                // engine; the answer does not wait for it).
                let what = req
                    .extensions()
                    .get::<CalledPath>()
                    .map(|p| p.0.trim_start_matches('/').replace('/', "."))
                    .unwrap_or_else(|| "approver call".into());
                if let Some(front) = self.agents.clone() {
                    tokio::spawn(async move {
                        let _ = front.refuse_role(&a, "grpc", &what).await;
                    });
                }
                Err(status(
                    Code::PermissionDenied,
                    "agent credentials cannot vote, approve or close: agents propose, people decide",
                ))
            }
            None => Err(status(
                Code::Unauthenticated,
                "authenticate with a client certificate or an approver bearer token",
            )),
        }
    }
}

/// The request's one `authorization` entry, if any; two or more are ambiguous (one checker
/// could judge the first and another act on the second).
fn one_authorization<T>(
    req: &Request<T>,
) -> Result<Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>, Status> {
    let mut all = req.metadata().get_all("authorization").iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(status(
            Code::Unauthenticated,
            "ambiguous credentials: more than one authorization entry; send exactly one",
        ));
    }
    Ok(first)
}

/// How many bytes of a status message are sent: messages name outside values (ids, formats),
/// and gRPC clients refuse a status trailer over 16 KiB (they would report
/// `RESOURCE_EXHAUSTED` instead of the real error).
const MESSAGE_MAX: usize = 1024;

/// Every status this module answers is built here, with its message clipped.
fn status(code: Code, message: impl AsRef<str>) -> Status {
    Status::new(code, clip(message.as_ref(), MESSAGE_MAX))
}

/// Subject CN and DNS/email SANs of a DER certificate.
fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return vec![];
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) | GeneralName::RFC822Name(d) => names.push(d.to_string()),
                _ => {}
            }
        }
    }
    names
}

/// The gRPC path a request was sent to (`/cordon.v1.Approvals/Approve`), put in its
/// extensions by the server so a refusal can name what was refused.
#[derive(Debug, Clone)]
struct CalledPath(String);

/// Shared state of the services.
#[derive(Clone)]
pub struct ApiState {
    pub engine: EngineHandle,
    pub store: Store,
    pub policies: Policies,
    pub auth: Arc<Auth>,
    pub ingest_open_to_loopback: bool,
    /// `grpc.max_message_bytes`: list pages stop short of it.
    pub max_message_bytes: usize,
    /// Cancelled at shutdown: open watch streams end so the drain is not held up.
    pub shutdown: tokio_util::sync::CancellationToken,
}

fn store_status(e: crate::store::StoreError) -> Status {
    status(Code::Unavailable, format!("store unavailable: {e}"))
}

fn ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

/// The protobuf view of an approval request, with its case and evidence.
pub fn approval_view(
    store: &Store,
    a: &ActionRequest,
    policy_hash: &str,
) -> Result<pb::Approval, Status> {
    let case = engine::read::case(store, &a.case_id).map_err(store_status)?;
    let alert = engine::read::alert(store, &a.alert_id).map_err(store_status)?;
    Ok(approval_view_of(
        a,
        policy_hash,
        case.as_ref(),
        alert.as_ref(),
    ))
}

/// [`approval_view`] from its case and alert, already read.
fn approval_view_of(
    a: &ActionRequest,
    policy_hash: &str,
    case: Option<&crate::case::Case>,
    alert: Option<&engine::StoredAlert>,
) -> pb::Approval {
    // A decided request keeps the hash it was decided on; a pending one binds to the current.
    let hash = a
        .approval
        .as_ref()
        .and_then(|ap| ap.decided_hash.clone())
        .unwrap_or_else(|| a.request_hash(policy_hash));
    let input = a.decision_input.as_ref();
    let attr = |k: &str| {
        input
            .and_then(|i| i.resource_attrs.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string()
    };
    let mut evidence = Vec::new();
    if let Some(al) = &alert {
        evidence.push(pb::Evidence {
            source: format!("alert:{}", al.alert.source),
            data_json: serde_json::to_string(&al.alert.fields).unwrap_or_default(),
            at_unix_ms: 0,
        });
        if let Some(report) = &al.enrichment {
            for f in &report.facts {
                evidence.push(pb::Evidence {
                    source: f.source.clone(),
                    data_json: serde_json::json!({"entity": f.entity.key(), "data": f.data, "stale": f.stale}).to_string(),
                    at_unix_ms: ms(f.loaded_at),
                });
            }
        }
    }
    let (votes, deadline, needed, given) = match &a.approval {
        Some(ap) => (
            ap.votes
                .iter()
                .map(|v| pb::Vote {
                    user: v.user.clone(),
                    channel: v.channel.clone(),
                    identity: v.identity.clone(),
                    decision: v.decision.clone(),
                    at_unix_ms: ms(v.at),
                    counted: v.decision == "approve" && v.request_hash == hash,
                    request_hash: v.request_hash.clone(),
                })
                .collect(),
            ms(ap.deadline),
            u32::from(ap.needed),
            ap.approvals_for(&hash).len() as u32,
        ),
        None => (vec![], 0, 0, 0),
    };
    pb::Approval {
        approval_id: a.action_id.clone(),
        case_id: a.case_id.clone(),
        action: a.kind.as_str().to_string(),
        target: Some(pb::Target {
            kind: a.target.kind.as_str().to_string(),
            id: a.target.id.clone(),
        }),
        tier: a.tier.map(|t| t.as_str().to_string()).unwrap_or_default(),
        state: a.state.as_str().to_string(),
        reasons: a.reasons.clone(),
        determining_policies: a.determining_policies.clone(),
        blast_radius: Some(pb::BlastRadius {
            targets: 1,
            reversible: a.kind.inverse().is_some(),
            criticality: attr("criticality"),
            environment: attr("environment"),
        }),
        case: case.map(case_summary),
        evidence,
        votes,
        deadline_unix_ms: deadline,
        request_hash: hash,
        requester: a.requester.clone(),
        playbook: a.playbook.clone(),
        step: a.step.clone(),
        parameters_json: serde_json::to_string(&a.parameters).unwrap_or_default(),
        approvals_needed: needed,
        approvals_given: given,
        policy_hash: a.policy_hash.clone().unwrap_or_default(),
        created_unix_ms: ms(a.created_at),
        agent_proposal: a.proposal.as_ref().map(agents::proposal_view),
    }
}

fn case_summary(c: &crate::case::Case) -> pb::CaseSummary {
    pb::CaseSummary {
        case_id: c.case_id.clone(),
        title: c.title.clone(),
        state: c.state.as_str().to_string(),
        severity: c.severity.as_str().to_string(),
        rule_id: c.rule_id.clone(),
        alert_count: c.alert_ids.len() as u32,
        entities: c.entities.iter().map(|e| e.key()).collect(),
    }
}

pub(crate) fn action_view(a: &crate::action::ActionRequest) -> pb::ActionRequest {
    let exec = a.execution.as_ref();
    pb::ActionRequest {
        action_id: a.action_id.clone(),
        action: a.kind.as_str().to_string(),
        target: Some(pb::Target {
            kind: a.target.kind.as_str().to_string(),
            id: a.target.id.clone(),
        }),
        state: a.state.as_str().to_string(),
        tier: a.tier.map(|t| t.as_str().to_string()).unwrap_or_default(),
        reasons: a.reasons.clone(),
        playbook: a.playbook.clone(),
        step: a.step.clone(),
        connector: a.connector.clone(),
        outcome: exec.and_then(|e| e.outcome.clone()).unwrap_or_default(),
        escalation: exec.and_then(|e| e.escalation.clone()).unwrap_or_default(),
        rollback_of: a.rollback_of.clone().unwrap_or_default(),
        rolled_back_by: a.rolled_back_by.clone().unwrap_or_default(),
    }
}

fn case_view(store: &Store, c: &crate::case::Case) -> Result<pb::Case, Status> {
    let actions = engine::read::actions_of(store, c).map_err(store_status)?;
    Ok(pb::Case {
        summary: Some(case_summary(c)),
        actions: actions.iter().map(action_view).collect(),
        alert_ids: c.alert_ids.clone(),
        created_unix_ms: ms(c.created_at),
        updated_unix_ms: ms(c.updated_at),
        detail: Some(cases::detail(c)),
    })
}

#[tonic::async_trait]
impl pb::alerts_server::Alerts for ApiState {
    async fn submit_alert(
        &self,
        req: Request<pb::SubmitAlertRequest>,
    ) -> Result<Response<pb::SubmitAlertResponse>, Status> {
        match self.auth.identify(&req)? {
            Some(Caller::Ingest { .. }) => {}
            Some(Caller::Approver { .. }) => {
                return Err(status(
                    Code::PermissionDenied,
                    "approver credentials cannot submit alerts",
                ));
            }
            Some(Caller::Agent(_)) => {
                return Err(status(
                    Code::PermissionDenied,
                    "agent credentials cannot submit alerts",
                ));
            }
            None => {
                let loopback = req
                    .remote_addr()
                    .is_some_and(|a: SocketAddr| a.ip().is_loopback());
                if !(self.ingest_open_to_loopback && loopback) {
                    return Err(status(
                        Code::Unauthenticated,
                        "submit alerts with an ingest token",
                    ));
                }
            }
        }
        let r = req.into_inner();
        let name = if r.format.is_empty() {
            "cordon"
        } else {
            r.format.as_str()
        };
        let format = IngestFormat::parse_name(name)
            .ok_or_else(|| status(Code::InvalidArgument, format!("unknown format {name:?}")))?;
        let received_at = chrono::Utc::now();
        let fields = format
            .parse(&r.payload, received_at)
            .map_err(|e| status(Code::InvalidArgument, e.to_string()))?;
        let raw = String::from_utf8_lossy(&r.payload).into_owned();
        let ack = self
            .engine
            .ingest(format, fields, raw, received_at)
            .await
            .map_err(|e| match e {
                EngineError::Store(m) => status(Code::Unavailable, format!("not recorded: {m}")),
                EngineError::ShuttingDown => status(Code::Unavailable, "shutting down"),
            })?;
        Ok(Response::new(pb::SubmitAlertResponse {
            alert_id: ack.alert_id,
            case_id: ack.case_id,
            duplicate: ack.duplicate,
        }))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::ApprovalEvent, Status>> + Send>>;

impl ApiState {
    async fn cast(
        &self,
        req: Request<pb::VoteRequest>,
        approve: bool,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let (user, identity) = self.auth.approver(&req)?;
        let r = req.into_inner();
        let vote = VoteCast {
            approval_id: r.approval_id,
            user,
            channel: "grpc".into(),
            identity: identity.into(),
            approve,
            request_hash: (!r.request_hash.is_empty()).then_some(r.request_hash),
            comment: r.comment,
        };
        // The answer shows the request's alert: read it while the vote is in the engine, not
        // after its commit (when the next commit may hold the store's lock). An alert never
        // changes once stored; the case comes with the vote's outcome.
        let store = self.store.clone();
        let id = vote.approval_id.clone();
        let alert = tokio::task::spawn_blocking(move || {
            let a = engine::read::action(&store, &id).ok().flatten()?;
            let alert = engine::read::alert(&store, &a.alert_id).ok().flatten()?;
            Some((a.alert_id, alert))
        });
        let out = self.engine.vote(vote).await.map_err(|e| match e {
            VoteError::NotFound(_) => status(Code::NotFound, e.to_string()),
            VoteError::NotPending { .. }
            | VoteError::Expired(_)
            | VoteError::RequestChanged { .. } => status(Code::FailedPrecondition, e.to_string()),
            VoteError::Refused(_) => status(Code::PermissionDenied, e.to_string()),
            VoteError::Store(_) => status(Code::Unavailable, e.to_string()),
        })?;
        let hash = self.policies.current().hash.clone();
        let approval = match (alert.await.ok().flatten(), &out.case) {
            (Some((id, alert)), Some(case)) if id == out.action.alert_id => {
                approval_view_of(&out.action, &hash, Some(case), Some(&alert))
            }
            _ => approval_view(&self.store, &out.action, &hash)?,
        };
        Ok(Response::new(pb::VoteResponse {
            approval: Some(approval),
            outcome: out.outcome.to_string(),
        }))
    }
}

#[tonic::async_trait]
impl pb::approvals_server::Approvals for ApiState {
    async fn list_pending(
        &self,
        req: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        self.auth.approver(&req)?;
        let r = req.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) } as usize;
        let after = (!r.after.is_empty()).then_some(r.after.as_str());
        let hash = self.policies.current().hash.clone();
        let pending = engine::read::pending(&self.store, after, limit).map_err(store_status)?;
        // A page ends early rather than exceed the message limit (requests carry their evidence,
        // so 1,000 of them can be larger than a message); the client continues with `after` =
        // the last id it got, as for any page.
        let budget = self
            .max_message_bytes
            .saturating_sub(self.max_message_bytes / 8);
        let mut approvals = Vec::with_capacity(pending.len());
        let mut size = 0usize;
        for a in &pending {
            let view = approval_view(&self.store, a, &hash)?;
            let len = prost::Message::encoded_len(&view) + 8;
            if !approvals.is_empty() && size + len > budget {
                break;
            }
            size += len;
            approvals.push(view);
        }
        Ok(Response::new(pb::ListPendingResponse { approvals }))
    }

    async fn get_approval(
        &self,
        req: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        self.auth.approver(&req)?;
        let id = req.into_inner().approval_id;
        let a = engine::read::action(&self.store, &id)
            .map_err(store_status)?
            .filter(|a| a.approval.is_some())
            .ok_or_else(|| status(Code::NotFound, format!("no approval request {id}")))?;
        let hash = self.policies.current().hash.clone();
        Ok(Response::new(approval_view(&self.store, &a, &hash)?))
    }

    async fn approve(
        &self,
        req: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.cast(req, true).await
    }

    async fn deny(
        &self,
        req: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.cast(req, false).await
    }

    async fn request_rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let (user, _) = self.auth.approver(&req)?;
        let r = req.into_inner();
        if r.action_id.is_empty() {
            return Err(status(Code::InvalidArgument, "action_id is required"));
        }
        let reply = self
            .engine
            .exec(engine::ExecOp::Rollback {
                action_id: r.action_id.clone(),
                user,
                reason: r.reason,
            })
            .await
            .map_err(|e| status(Code::Unavailable, e.to_string()))?;
        match reply {
            engine::ExecReply::RollbackProposed(a) => Ok(Response::new(pb::RollbackResponse {
                rollback: Some(action_view(&a)),
            })),
            engine::ExecReply::NotFound(id) => {
                Err(status(Code::NotFound, format!("no action {id}")))
            }
            engine::ExecReply::Refused(why) => Err(status(Code::FailedPrecondition, why)),
            _ => Err(status(Code::Internal, "unexpected engine reply")),
        }
    }

    type WatchApprovalsStream = WatchStream;

    async fn watch_approvals(
        &self,
        req: Request<pb::WatchApprovalsRequest>,
    ) -> Result<Response<Self::WatchApprovalsStream>, Status> {
        self.auth.approver(&req)?;
        let mut rx = self.engine.subscribe();
        let store = self.store.clone();
        let policies = self.policies.clone();
        let (tx, out) = tokio::sync::mpsc::channel::<Result<pb::ApprovalEvent, Status>>(64);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = rx.recv() => next,
                };
                let event = match next {
                    Ok(ApprovalUpdate::Changed(a)) => {
                        if a.approval.is_none() {
                            continue;
                        }
                        match approval_view(&store, &a, &policies.current().hash) {
                            Ok(v) => pb::approval_event::Event::Approval(v),
                            Err(_) => continue,
                        }
                    }
                    Ok(ApprovalUpdate::Escalation {
                        action_id,
                        deadline,
                        missing,
                    }) => pb::approval_event::Event::Escalation(pb::Escalation {
                        approval_id: action_id,
                        deadline_unix_ms: ms(deadline),
                        approvals_missing: u32::from(missing),
                    }),
                    Ok(ApprovalUpdate::ChatEscalationOwed) => continue,
                    // Too slow: events were dropped. Tell the client to resync; never buffer
                    // without bound.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        pb::approval_event::Event::Resync(pb::Resync { missed: n })
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                if tx
                    .send(Ok(pb::ApprovalEvent { event: Some(event) }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("grpc tls: {0}")]
    Tls(String),
    #[error("grpc: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("grpc reflection: {0}")]
    Reflection(String),
    #[error("grpc runtime: {0}")]
    Io(String),
}

/// Peer addresses for `Request::remote_addr` (loopback checks), as for a plain `TcpStream`.
impl tonic::transport::server::Connected for crate::listener::GrpcConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}

/// Serves the gRPC API on `listener` until `shutdown` completes: at most
/// `grpc.max_connections` sockets (see `listener`), HTTP/2 keepalive pings, and per-connection
/// stream and concurrency limits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    cfg: &GrpcConfig,
    metrics: crate::metrics::ListenerMetrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    use std::time::Duration;
    let max = cfg.max_message_bytes;
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(cfg.keepalive_interval_secs)))
        .http2_keepalive_timeout(Some(Duration::from_secs(cfg.keepalive_timeout_secs)))
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .concurrency_limit_per_connection(cfg.concurrency_limit_per_connection);
    if let Some(tls) = &cfg.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| ServeError::Tls(format!("{}: {e}", p.display())))
        };
        let identity = tonic::transport::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        let mut t = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &tls.client_ca {
            // Certificates are verified when presented; token-only approvers may connect over
            // TLS without one.
            t = t
                .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?))
                .client_auth_optional(true);
        }
        builder = builder
            .tls_config(t)
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    let incoming = crate::listener::GrpcIncoming::new(
        listener,
        crate::listener::GrpcLimits {
            max_connections: cfg.max_connections,
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
            tcp_keepalive: Duration::from_secs(cfg.tcp_keepalive_secs),
        },
        metrics,
    );
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::alerts_server::AlertsServer<ApiState>>()
        .await;
    health
        .set_serving::<pb::approvals_server::ApprovalsServer<ApiState>>()
        .await;
    health
        .set_serving::<pb::cases_server::CasesServer<ApiState>>()
        .await;
    health
        .set_serving::<pb::explanations_server::ExplanationsServer<ApiState>>()
        .await;
    health
        .set_serving::<pb::agents_server::AgentsServer<ApiState>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::DESCRIPTOR)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::DESCRIPTOR)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    builder
        .layer(tower::util::MapRequestLayer::new(
            |mut req: http::Request<tonic::body::Body>| {
                let path = CalledPath(req.uri().path().to_string());
                req.extensions_mut().insert(path);
                req
            },
        ))
        .add_service(health_svc)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            pb::alerts_server::AlertsServer::new(state.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            pb::approvals_server::ApprovalsServer::new(state.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            pb::learning_server::LearningServer::new(state.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            pb::explanations_server::ExplanationsServer::new(state.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            pb::agents_server::AgentsServer::new(state.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            pb::cases_server::CasesServer::new(state)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
