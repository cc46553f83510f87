//! The gRPC `Agents` service: AI agents propose actions and add findings.
//!
//! Owns: `ProposeAction` and `AddFinding` (agent bearer tokens only; an approver or ingest
//! credential is refused), the protobuf view of an agent's proposal shown to approvers, and the
//! mapping of agent refusals to gRPC status codes. The checks and the record of every call are
//! `engine::AgentFront`'s.

use tonic::{Code, Request, Response, Status};

use super::{ApiState, Caller, action_view, pb, status};
use crate::agent::{Agent, AgentError, FindingInput, ProposalInput, ProposalNote};
use crate::engine::{EngineError, FrontError};

/// What approvers are shown of an agent's proposal.
pub fn proposal_view(p: &ProposalNote) -> pb::AgentProposal {
    pb::AgentProposal {
        agent: p.agent.clone(),
        hypothesis: p.hypothesis.clone(),
        confidence: u32::from(p.confidence),
        citations: p.citations.clone(),
        ai_generated: p.ai_generated,
    }
}

/// The exit status of `cordon agents` for a failed call: 77 not allowed (credentials), 69 the
/// daemon is unavailable, 65 the call was refused.
pub fn exit_status(s: &Status) -> i32 {
    match s.code() {
        Code::Unauthenticated | Code::PermissionDenied => 77,
        Code::Unavailable => 69,
        _ => 65,
    }
}

/// The one mapping of agent refusals to gRPC codes.
pub fn front_status(e: FrontError) -> Status {
    match e {
        FrontError::Refused(e) => {
            let code = match &e {
                AgentError::CaseNotFound(_) => Code::NotFound,
                // Quotas (HTTP 429): the call rate and the open proposals per case.
                AgentError::RateLimited { .. } | AgentError::TooManyOpen { .. } => {
                    Code::ResourceExhausted
                }
                AgentError::CaseNotOpen(_) => Code::FailedPrecondition,
                AgentError::NotForAgents(_) => Code::PermissionDenied,
                _ => Code::InvalidArgument,
            };
            status(code, e.to_string())
        }
        FrontError::Engine(EngineError::Store(m)) => {
            status(Code::Unavailable, format!("not recorded: {m}"))
        }
        FrontError::Engine(EngineError::ShuttingDown) => status(Code::Unavailable, "shutting down"),
    }
}

impl ApiState {
    fn agent<T>(&self, req: &Request<T>) -> Result<(Agent, crate::engine::AgentFront), Status> {
        let front = self.auth.agents.clone().ok_or_else(|| {
            status(
                Code::Unauthenticated,
                "no agents are configured ([[agents]])",
            )
        })?;
        match self.auth.identify(req)? {
            Some(Caller::Agent(a)) => Ok((a, front)),
            Some(_) => Err(status(
                Code::PermissionDenied,
                "only agent credentials may call Agents: an approver or ingest token is not an agent token",
            )),
            None => Err(status(
                Code::Unauthenticated,
                "authenticate with an agent bearer token",
            )),
        }
    }
}

#[tonic::async_trait]
impl pb::agents_server::Agents for ApiState {
    async fn propose_action(
        &self,
        req: Request<pb::ProposeActionRequest>,
    ) -> Result<Response<pb::ProposeActionResponse>, Status> {
        let (agent, front) = self.agent(&req)?;
        let r = req.into_inner();
        let parameters = if r.parameters_json.trim().is_empty() {
            serde_json::Map::new()
        } else {
            match crate::ingest::json::parse(r.parameters_json.as_bytes()) {
                Ok(serde_json::Value::Object(m)) => m,
                Ok(_) => {
                    let why = "parameters_json is not a JSON object".to_string();
                    return Err(front_status(
                        front
                            .refuse_input(&agent, "grpc", "propose_action", Some(&r.case_id), why)
                            .await,
                    ));
                }
                Err(e) => {
                    let why = format!("parameters_json: {e}");
                    return Err(front_status(
                        front
                            .refuse_input(&agent, "grpc", "propose_action", Some(&r.case_id), why)
                            .await,
                    ));
                }
            }
        };
        let input = ProposalInput {
            action: r.action,
            target: r.target,
            connector: r.connector,
            parameters,
            hypothesis: r.hypothesis,
            confidence: r.confidence,
            citations: r.citations,
        };
        let (a, duplicate) = front
            .propose(&agent, "grpc", &r.case_id, input)
            .await
            .map_err(front_status)?;
        Ok(Response::new(pb::ProposeActionResponse {
            action: Some(action_view(&a)),
            duplicate,
            proposal: a.proposal.as_ref().map(proposal_view),
        }))
    }

    async fn add_finding(
        &self,
        req: Request<pb::AddFindingRequest>,
    ) -> Result<Response<pb::AddFindingResponse>, Status> {
        let (agent, front) = self.agent(&req)?;
        let r = req.into_inner();
        let input = FindingInput {
            kind: r.kind,
            text: r.text,
            techniques: r.techniques,
            confidence: r.confidence,
            citations: r.citations,
        };
        let seq = front
            .add_finding(&agent, "grpc", &r.case_id, input)
            .await
            .map_err(front_status)?;
        Ok(Response::new(pb::AddFindingResponse { seq }))
    }
}
