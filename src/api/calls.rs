//! The approver's and the agent's calls for the command line (`cordon approvals …`, `cordon
//! agents …`), in plain Rust types.
//!
//! Owns: the request and answer types those commands use (an approval request as the daemon
//! shows it, a vote's outcome, an action's summary, an agent's proposal), their conversion from
//! and to protobuf, and [`Refused`], the daemon's refusal of a call with the exit status the
//! command ends with. `cli` sees none of `pb` or `tonic`: this is where the CLI meets gRPC.

use tonic::{Code, Status};

use super::client::Clients;
use super::pb;

/// The daemon refused a call (or could not be reached during it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Refused {
    code: Code,
    pub message: String,
}

impl Refused {
    /// The gRPC code's name (`NotFound`, `PermissionDenied`, ...), as the CLI prints it.
    pub fn code_name(&self) -> String {
        format!("{:?}", self.code)
    }

    /// The exit status of `cordon agents` for this refusal: 77 not allowed (credentials), 69
    /// the daemon is unavailable, 65 the call was refused.
    pub fn agent_exit_status(&self) -> i32 {
        super::agents::exit_status(&Status::new(self.code, ""))
    }
}

impl From<Status> for Refused {
    fn from(s: Status) -> Refused {
        Refused {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// What an action is aimed at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    pub kind: String,
    pub id: String,
}

/// How much one execution can affect.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlastRadius {
    pub targets: u32,
    pub reversible: bool,
    pub criticality: String,
    pub environment: String,
}

/// The case an approval request belongs to, for context.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseBrief {
    pub case_id: String,
    pub title: String,
    pub state: String,
    pub severity: String,
    pub entities: Vec<String>,
}

/// One vote on a request, counted or not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vote {
    pub user: String,
    pub channel: String,
    pub identity: String,
    pub decision: String,
    pub at_unix_ms: i64,
    pub counted: bool,
}

/// An AI agent's proposal, as approvers are shown it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentProposal {
    pub agent: String,
    pub hypothesis: String,
    pub confidence: u32,
    pub citations: Vec<String>,
    pub ai_generated: bool,
}

/// One piece of evidence: where it came from and what it says (JSON text).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    pub source: String,
    pub data_json: String,
}

/// An approval request as the daemon shows it to approvers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Approval {
    pub approval_id: String,
    pub case_id: String,
    pub action: String,
    pub target: Option<Target>,
    /// The parameters the action runs with, as JSON (an object; `{}` when none).
    pub parameters_json: String,
    pub tier: String,
    pub state: String,
    pub reasons: Vec<String>,
    pub determining_policies: Vec<String>,
    pub blast_radius: Option<BlastRadius>,
    pub case: Option<CaseBrief>,
    pub evidence: Vec<Evidence>,
    pub votes: Vec<Vote>,
    pub deadline_unix_ms: i64,
    pub request_hash: String,
    pub requester: String,
    pub playbook: String,
    pub step: String,
    pub approvals_needed: u32,
    pub approvals_given: u32,
    pub agent_proposal: Option<AgentProposal>,
}

/// A vote's outcome (`counted`, `already_counted`, `approved`, `rejected`) and the request
/// after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Voted {
    pub outcome: String,
    pub approval: Option<Approval>,
}

/// An action request in brief.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionSummary {
    pub action_id: String,
    pub action: String,
    pub state: String,
    pub tier: String,
    pub reasons: Vec<String>,
    pub rollback_of: String,
}

/// What an agent's proposal became; `duplicate` when the same proposal was already made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Proposed {
    pub action: ActionSummary,
    pub duplicate: bool,
}

/// An agent's proposal of an action on a case.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Proposal {
    pub case_id: String,
    pub action: String,
    pub target: String,
    pub connector: String,
    /// A JSON object; empty means none.
    pub parameters_json: String,
    pub hypothesis: String,
    pub confidence: u32,
    pub citations: Vec<String>,
}

/// An agent's finding on a case.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Finding {
    pub case_id: String,
    pub kind: String,
    pub text: String,
    pub techniques: Vec<String>,
    pub confidence: u32,
    pub citations: Vec<String>,
}

impl From<pb::Approval> for Approval {
    fn from(a: pb::Approval) -> Approval {
        Approval {
            approval_id: a.approval_id,
            case_id: a.case_id,
            action: a.action,
            target: a.target.map(|t| Target {
                kind: t.kind,
                id: t.id,
            }),
            parameters_json: a.parameters_json,
            tier: a.tier,
            state: a.state,
            reasons: a.reasons,
            determining_policies: a.determining_policies,
            blast_radius: a.blast_radius.map(|b| BlastRadius {
                targets: b.targets,
                reversible: b.reversible,
                criticality: b.criticality,
                environment: b.environment,
            }),
            case: a.case.map(|c| CaseBrief {
                case_id: c.case_id,
                title: c.title,
                state: c.state,
                severity: c.severity,
                entities: c.entities,
            }),
            evidence: a
                .evidence
                .into_iter()
                .map(|e| Evidence {
                    source: e.source,
                    data_json: e.data_json,
                })
                .collect(),
            votes: a
                .votes
                .into_iter()
                .map(|v| Vote {
                    user: v.user,
                    channel: v.channel,
                    identity: v.identity,
                    decision: v.decision,
                    at_unix_ms: v.at_unix_ms,
                    counted: v.counted,
                })
                .collect(),
            deadline_unix_ms: a.deadline_unix_ms,
            request_hash: a.request_hash,
            requester: a.requester,
            playbook: a.playbook,
            step: a.step,
            approvals_needed: a.approvals_needed,
            approvals_given: a.approvals_given,
            agent_proposal: a.agent_proposal.map(|p| AgentProposal {
                agent: p.agent,
                hypothesis: p.hypothesis,
                confidence: p.confidence,
                citations: p.citations,
                ai_generated: p.ai_generated,
            }),
        }
    }
}

impl From<pb::ActionRequest> for ActionSummary {
    fn from(a: pb::ActionRequest) -> ActionSummary {
        ActionSummary {
            action_id: a.action_id,
            action: a.action,
            state: a.state,
            tier: a.tier,
            reasons: a.reasons,
            rollback_of: a.rollback_of,
        }
    }
}

impl From<pb::VoteResponse> for Voted {
    fn from(r: pb::VoteResponse) -> Voted {
        Voted {
            outcome: r.outcome,
            approval: r.approval.map(Approval::from),
        }
    }
}

/// Requests awaiting approval, oldest first: at most `limit`, after the approval id `after`.
pub async fn list_pending(
    c: &mut Clients,
    limit: u32,
    after: Option<String>,
) -> Result<Vec<Approval>, Refused> {
    let r = c
        .approvals
        .list_pending(pb::ListPendingRequest {
            limit,
            after: after.unwrap_or_default(),
        })
        .await?;
    Ok(r.into_inner()
        .approvals
        .into_iter()
        .map(Approval::from)
        .collect())
}

/// One approval request.
pub async fn get_approval(c: &mut Clients, approval_id: String) -> Result<Approval, Refused> {
    let r = c
        .approvals
        .get_approval(pb::GetApprovalRequest { approval_id })
        .await?;
    Ok(r.into_inner().into())
}

/// An approve (`approve` true) or deny vote, bound to `request_hash` when one is given.
pub async fn vote(
    c: &mut Clients,
    approve: bool,
    approval_id: String,
    request_hash: Option<String>,
    comment: String,
) -> Result<Voted, Refused> {
    let req = pb::VoteRequest {
        approval_id,
        request_hash: request_hash.unwrap_or_default(),
        comment,
    };
    let r = if approve {
        c.approvals.approve(req).await?
    } else {
        c.approvals.deny(req).await?
    };
    Ok(r.into_inner().into())
}

/// Proposes the rollback of a succeeded action; the rollback request as it stands.
pub async fn request_rollback(
    c: &mut Clients,
    action_id: String,
    reason: String,
) -> Result<ActionSummary, Refused> {
    let r = c
        .approvals
        .request_rollback(pb::RollbackRequest { action_id, reason })
        .await?;
    Ok(r.into_inner().rollback.unwrap_or_default().into())
}

/// An agent proposes an action.
pub async fn propose_action(c: &mut Clients, p: Proposal) -> Result<Proposed, Refused> {
    let r = c
        .agents
        .propose_action(pb::ProposeActionRequest {
            case_id: p.case_id,
            action: p.action,
            target: p.target,
            connector: p.connector,
            parameters_json: p.parameters_json,
            hypothesis: p.hypothesis,
            confidence: p.confidence,
            citations: p.citations,
        })
        .await?
        .into_inner();
    Ok(Proposed {
        action: r.action.unwrap_or_default().into(),
        duplicate: r.duplicate,
    })
}

/// An agent adds a finding; the sequence number of the audit record that holds it.
pub async fn add_finding(c: &mut Clients, f: Finding) -> Result<u64, Refused> {
    let r = c
        .agents
        .add_finding(pb::AddFindingRequest {
            case_id: f.case_id,
            kind: f.kind,
            text: f.text,
            techniques: f.techniques,
            confidence: f.confidence,
            citations: f.citations,
        })
        .await?;
    Ok(r.into_inner().seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_the_code_name_the_cli_prints_and_its_exit_status() {
        // (code, name printed, `cordon agents` exit status)
        let table: &[(Code, &str, i32)] = &[
            (Code::NotFound, "NotFound", 65),
            (Code::InvalidArgument, "InvalidArgument", 65),
            (Code::FailedPrecondition, "FailedPrecondition", 65),
            (Code::PermissionDenied, "PermissionDenied", 77),
            (Code::Unauthenticated, "Unauthenticated", 77),
            (Code::Unavailable, "Unavailable", 69),
        ];
        for (code, name, exit) in table {
            let r = Refused::from(Status::new(*code, "why"));
            assert_eq!(r.code_name(), *name);
            assert_eq!(r.to_string(), format!("{name}: why"));
            assert_eq!(r.agent_exit_status(), *exit, "{name}");
        }
    }
}
