//! The `Learning` service: learning proposals made when cases close.
//!
//! Owns: `ListProposals`, `GetProposal`, `AcceptProposal`, `DismissProposal` and the protobuf
//! view of a proposal. Accept and dismiss are case operations (`accept_proposal` /
//! `dismiss_proposal` on the first case the proposal was learned from), identified exactly as
//! votes are (an approver token's or certificate's user) and checked before anything reaches the
//! engine (INVALID_ARGUMENT, nothing changes); refusals map as for every case operation.

use super::*;
use crate::engine::learn as stored;
use crate::engine::{CaseOp, CaseOpError, CaseOpKind, check_case_id, check_proposal_id};
use crate::learn::{Proposal, ProposalKind, ProposalState};

fn invalid(msg: impl AsRef<str>) -> Status {
    status(Code::InvalidArgument, msg)
}

fn op_status(e: CaseOpError) -> Status {
    match &e {
        CaseOpError::NotFound(_) => status(Code::NotFound, e.to_string()),
        CaseOpError::Invalid(_) => status(Code::InvalidArgument, e.to_string()),
        CaseOpError::Refused(_) => status(Code::PermissionDenied, e.to_string()),
        CaseOpError::Conflict(_) => status(Code::FailedPrecondition, e.to_string()),
        CaseOpError::Store(_) => status(Code::Unavailable, e.to_string()),
    }
}

/// The protobuf view of a proposal.
pub fn view(p: &Proposal) -> pb::Proposal {
    let r = p.resolution.clone();
    pb::Proposal {
        proposal_id: p.id.clone(),
        kind: p.kind.as_str().into(),
        state: p.state.as_str().into(),
        case_ids: p.cases.clone(),
        rule_id: p.rule_id.clone().unwrap_or_default(),
        title: p.title.clone(),
        rationale: p.rationale.clone(),
        files: p
            .files
            .iter()
            .map(|f| pb::ProposalFile {
                name: f.name.clone(),
                contents: f.contents.clone(),
            })
            .collect(),
        evidence_json: p.evidence.to_string(),
        created_unix_ms: ms(p.created_at),
        updated_unix_ms: ms(p.updated_at),
        resolved_by: r.as_ref().map(|r| r.by.clone()).unwrap_or_default(),
        resolved_unix_ms: r.as_ref().map_or(0, |r| ms(r.at)),
        resolution_reason: r
            .as_ref()
            .and_then(|r| r.reason.clone())
            .unwrap_or_default(),
        written: r.map(|r| r.written).unwrap_or_default(),
    }
}

impl ApiState {
    async fn resolve(
        &self,
        req: Request<pb::ResolveProposalRequest>,
        accept: bool,
    ) -> Result<Response<pb::ResolveProposalResponse>, Status> {
        let (user, identity) = self.auth.approver(&req)?;
        let r = req.into_inner();
        check_proposal_id(&r.proposal_id).map_err(invalid)?;
        let kind = if accept {
            CaseOpKind::AcceptProposal {
                proposal_id: r.proposal_id.clone(),
                reason: (!r.reason.is_empty()).then(|| r.reason.clone()),
            }
        } else {
            if r.reason.is_empty() {
                return Err(invalid("reason is required to dismiss a proposal"));
            }
            CaseOpKind::DismissProposal {
                proposal_id: r.proposal_id.clone(),
                reason: r.reason.clone(),
            }
        };
        kind.validate().map_err(invalid)?;
        let p = stored::proposal(&self.store, &r.proposal_id)
            .map_err(store_status)?
            .ok_or_else(|| {
                status(
                    Code::NotFound,
                    format!("no learning proposal {}", r.proposal_id),
                )
            })?;
        let case_id = p.cases.first().cloned().unwrap_or_default();
        check_case_id("case_id", &case_id).map_err(invalid)?;
        let out = self
            .engine
            .case_op(CaseOp {
                case_id,
                user,
                channel: "grpc".into(),
                identity: identity.into(),
                kind,
            })
            .await
            .map_err(op_status)?;
        let p = stored::proposal(&self.store, &r.proposal_id)
            .map_err(store_status)?
            .unwrap_or(p);
        Ok(Response::new(pb::ResolveProposalResponse {
            proposal: Some(view(&p)),
            case: Some(case_view(&self.store, &out.case)?),
        }))
    }
}

#[tonic::async_trait]
impl pb::learning_server::Learning for ApiState {
    async fn list_proposals(
        &self,
        req: Request<pb::ListProposalsRequest>,
    ) -> Result<Response<pb::ListProposalsResponse>, Status> {
        self.auth.approver(&req)?;
        let r = req.into_inner();
        let case = (!r.case_id.is_empty()).then_some(r.case_id.as_str());
        if let Some(c) = case {
            check_case_id("case_id", c).map_err(invalid)?;
        }
        let state = match r.state.as_str() {
            "" => None,
            s => Some(ProposalState::parse(s).ok_or_else(|| {
                invalid(format!(
                    "state {:?} is not open, accepted or dismissed",
                    clip(s, 64)
                ))
            })?),
        };
        let kind = match r.kind.as_str() {
            "" => None,
            k => Some(ProposalKind::parse(k).ok_or_else(|| {
                invalid(format!(
                    "kind {:?} is not tuning, regression_test, intel_credit or detection_backlog",
                    clip(k, 64)
                ))
            })?),
        };
        let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) } as usize;
        let ps = stored::proposals(
            &self.store,
            case,
            |p| state.is_none_or(|s| p.state == s) && kind.is_none_or(|k| p.kind == k),
            limit,
        )
        .map_err(store_status)?;
        Ok(Response::new(pb::ListProposalsResponse {
            proposals: ps.iter().map(view).collect(),
        }))
    }

    async fn get_proposal(
        &self,
        req: Request<pb::GetProposalRequest>,
    ) -> Result<Response<pb::Proposal>, Status> {
        self.auth.approver(&req)?;
        let id = req.into_inner().proposal_id;
        check_proposal_id(&id).map_err(invalid)?;
        let p = stored::proposal(&self.store, &id)
            .map_err(store_status)?
            .ok_or_else(|| status(Code::NotFound, format!("no learning proposal {id}")))?;
        Ok(Response::new(view(&p)))
    }

    async fn accept_proposal(
        &self,
        req: Request<pb::ResolveProposalRequest>,
    ) -> Result<Response<pb::ResolveProposalResponse>, Status> {
        self.resolve(req, true).await
    }

    async fn dismiss_proposal(
        &self,
        req: Request<pb::ResolveProposalRequest>,
    ) -> Result<Response<pb::ResolveProposalResponse>, Status> {
        self.resolve(req, false).await
    }
}

/// A call of `cordon learn …`.
#[derive(Debug, Clone)]
pub enum LearnCall {
    List {
        case_id: Option<String>,
        state: Option<String>,
        kind: Option<String>,
        limit: u32,
    },
    Show {
        proposal_id: String,
    },
    Accept {
        proposal_id: String,
        reason: Option<String>,
    },
    Dismiss {
        proposal_id: String,
        reason: String,
    },
}

fn proposal_json(p: &pb::Proposal) -> serde_json::Value {
    let when = |t: i64| chrono::DateTime::from_timestamp_millis(t).filter(|_| t > 0);
    serde_json::json!({
        "proposal_id": p.proposal_id, "kind": p.kind, "state": p.state, "case_ids": p.case_ids,
        "rule_id": p.rule_id, "title": p.title, "rationale": p.rationale,
        "files": p.files.iter().map(|f| serde_json::json!({"name": f.name, "contents": f.contents})).collect::<Vec<_>>(),
        "evidence": serde_json::from_str::<serde_json::Value>(&p.evidence_json).unwrap_or_default(),
        "created_at": when(p.created_unix_ms), "updated_at": when(p.updated_unix_ms),
        "resolved_by": p.resolved_by, "resolved_at": when(p.resolved_unix_ms),
        "resolution_reason": p.resolution_reason, "written": p.written,
    })
}

/// Runs a `cordon learn` call; the answer as JSON for the CLI to print.
pub async fn call(
    c: &mut super::client::Clients,
    call: LearnCall,
) -> Result<serde_json::Value, Status> {
    Ok(match call {
        LearnCall::List {
            case_id,
            state,
            kind,
            limit,
        } => {
            let r = c
                .learning
                .list_proposals(pb::ListProposalsRequest {
                    case_id: case_id.unwrap_or_default(),
                    state: state.unwrap_or_default(),
                    kind: kind.unwrap_or_default(),
                    limit,
                })
                .await?
                .into_inner();
            serde_json::json!({"proposals": r.proposals.iter().map(proposal_json).collect::<Vec<_>>()})
        }
        LearnCall::Show { proposal_id } => {
            let p = c
                .learning
                .get_proposal(pb::GetProposalRequest { proposal_id })
                .await?
                .into_inner();
            proposal_json(&p)
        }
        LearnCall::Accept {
            proposal_id,
            reason,
        } => {
            let r = c
                .learning
                .accept_proposal(pb::ResolveProposalRequest {
                    proposal_id,
                    reason: reason.unwrap_or_default(),
                })
                .await?
                .into_inner();
            resolved_json(&r)
        }
        LearnCall::Dismiss {
            proposal_id,
            reason,
        } => {
            let r = c
                .learning
                .dismiss_proposal(pb::ResolveProposalRequest {
                    proposal_id,
                    reason,
                })
                .await?
                .into_inner();
            resolved_json(&r)
        }
    })
}

fn resolved_json(r: &pb::ResolveProposalResponse) -> serde_json::Value {
    serde_json::json!({
        "proposal": r.proposal.as_ref().map(proposal_json),
        "case": r.case.as_ref().and_then(|c| c.summary.as_ref()).map(|s| serde_json::json!({"case_id": s.case_id, "state": s.state})),
    })
}
