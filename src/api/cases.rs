//! The `Cases` service: reading cases and the analysts' operations on them.
//!
//! Owns: `GetCase`, `ListCases` (filters and paging) and the operations `AssignCase`,
//! `NoteCase`, `CloseCase`, `ReopenCase`, `RecoverCase`: identity from the channel exactly as
//! votes take it (an approver token's or certificate's user), input checked before anything
//! reaches the engine (INVALID_ARGUMENT, nothing changes), engine refusals mapped to
//! PERMISSION_DENIED (policy) and FAILED_PRECONDITION (the case's state); the protobuf view of
//! a case's closure model.

use super::*;
use crate::case::{Case, CaseState, Disposition, Helped};
use crate::engine::read::CaseFilter;
use crate::engine::{CaseOp, CaseOpError, CaseOpKind, CloseCase, check_case_id};

/// Most cases one list reads (matching or not) before it answers with `next_after`.
const MAX_SCAN: usize = 10_000;

fn ms_opt(t: Option<chrono::DateTime<chrono::Utc>>) -> i64 {
    t.map_or(0, ms)
}

impl Auth {
    /// The user of an approver bearer token (for HTTP case operations), if it is one.
    pub fn approver_by_token(&self, token: &str) -> Option<String> {
        self.approver_tokens
            .iter()
            .find(|(h, _)| h.matches(token))
            .map(|(_, u)| u.clone())
    }
}

/// The closure-model fields of a case.
pub(super) fn detail(c: &Case) -> pb::CaseDetail {
    let own = c.ownership.clone().unwrap_or_default();
    pb::CaseDetail {
        owner: c.owner.clone().unwrap_or_default(),
        sla_deadline_unix_ms: ms_opt(c.sla_deadline),
        sla_escalated: c.sla_escalated,
        owner_team: own.owner_team,
        escalation_route: own.escalation_route,
        known_limitations: own.known_limitations,
        notes: c
            .notes
            .iter()
            .map(|n| pb::CaseNote {
                by: n.by.clone(),
                at_unix_ms: ms(n.at),
                text: n.text.clone(),
            })
            .collect(),
        closure: c.closure.as_ref().map(|x| {
            let helped = x.helped.clone().unwrap_or_default();
            pb::CaseClosure {
                disposition: x.disposition.as_str().into(),
                reason: x.reason.clone(),
                by: x.by.clone(),
                at_unix_ms: ms(x.at),
                helped_intel_ref: helped.intel_ref.unwrap_or_default(),
                helped_rule: helped.rule.unwrap_or_default(),
                missed: x.missed.clone().unwrap_or_default(),
                duplicate_of: x.duplicate_of.clone().unwrap_or_default(),
                cancelled: x.cancelled.clone(),
            }
        }),
        recovered_how: c
            .recovery
            .as_ref()
            .map(|r| r.how.clone())
            .unwrap_or_default(),
        recovered_reason: c
            .recovery
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default(),
        first_human_action_unix_ms: ms_opt(c.handoffs.first_human_action),
        ir_escalation_unix_ms: ms_opt(c.handoffs.ir_escalation),
        closed_unix_ms: ms_opt(c.handoffs.closed),
        recovered_unix_ms: ms_opt(c.handoffs.recovered),
        learning_done_unix_ms: ms_opt(c.handoffs.learning_done),
    }
}

fn invalid(msg: impl AsRef<str>) -> Status {
    status(Code::InvalidArgument, msg)
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The list filter from a request's fields; an unknown value is bad input.
fn filter(r: &pb::ListCasesRequest) -> Result<CaseFilter, Status> {
    Ok(CaseFilter {
        state: match r.state.as_str() {
            "" => None,
            s => {
                Some(CaseState::parse(s).ok_or_else(|| {
                    invalid(format!("state {:?} is not a case state", clip(s, 64)))
                })?)
            }
        },
        owner: some(r.owner.clone()),
        severity: match r.severity.as_str() {
            "" => None,
            s => Some(
                crate::alert::Severity::parse(s)
                    .filter(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        invalid(format!("severity {:?} is not a severity", clip(s, 64)))
                    })?,
            ),
        },
        disposition: match r.disposition.as_str() {
            "" => None,
            s => Some(Disposition::parse(s).ok_or_else(|| {
                invalid(format!(
                    "disposition {:?} is not a disposition",
                    clip(s, 64)
                ))
            })?),
        },
        open: match r.open.as_str() {
            "" => None,
            "true" => Some(true),
            "false" => Some(false),
            s => {
                return Err(invalid(format!(
                    "open {:?} is not true or false",
                    clip(s, 16)
                )));
            }
        },
    })
}

/// A close request's input as the engine takes it (pure checks included).
pub fn close_kind(r: &pb::CloseCaseRequest) -> Result<CaseOpKind, String> {
    let disposition = Disposition::parse(&r.disposition).ok_or_else(|| {
        if r.disposition.is_empty() {
            "disposition is required (true_positive, benign_true_positive, false_positive or duplicate)".to_string()
        } else {
            format!(
                "disposition {:?} is not true_positive, benign_true_positive, false_positive or duplicate",
                clip(&r.disposition, 64)
            )
        }
    })?;
    let kind = CaseOpKind::Close(CloseCase {
        disposition,
        reason: r.reason.clone(),
        helped: Helped {
            intel_ref: some(r.helped_intel_ref.clone()),
            rule: some(r.helped_rule.clone()),
        },
        missed: some(r.missed.clone()),
        duplicate_of: some(r.duplicate_of.clone()),
        cancel_pending: r.cancel_pending,
    });
    kind.validate()?;
    Ok(kind)
}

/// Engine refusals as gRPC statuses.
fn op_status(e: CaseOpError) -> Status {
    match &e {
        CaseOpError::NotFound(_) => status(Code::NotFound, e.to_string()),
        CaseOpError::Invalid(_) => status(Code::InvalidArgument, e.to_string()),
        CaseOpError::Refused(_) => status(Code::PermissionDenied, e.to_string()),
        CaseOpError::Conflict(_) => status(Code::FailedPrecondition, e.to_string()),
        CaseOpError::Store(_) => status(Code::Unavailable, e.to_string()),
    }
}

impl ApiState {
    /// Authenticates, checks the input, runs the operation and answers with the case.
    async fn case_op<T>(
        &self,
        req: Request<T>,
        build: impl FnOnce(&T) -> Result<(String, CaseOpKind), String>,
    ) -> Result<Response<pb::CaseOpResponse>, Status> {
        let (user, identity) = self.auth.approver(&req)?;
        let r = req.into_inner();
        let (case_id, kind) = build(&r).map_err(invalid)?;
        check_case_id("case_id", &case_id).map_err(invalid)?;
        kind.validate().map_err(invalid)?;
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
        Ok(Response::new(pb::CaseOpResponse {
            case: Some(case_view(&self.store, &out.case)?),
            cancelled: out.cancelled,
        }))
    }
}

#[tonic::async_trait]
impl pb::cases_server::Cases for ApiState {
    async fn get_case(
        &self,
        req: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        self.auth.approver(&req)?;
        let id = req.into_inner().case_id;
        let c = engine::read::case(&self.store, &id)
            .map_err(store_status)?
            .ok_or_else(|| status(Code::NotFound, format!("no case {id}")))?;
        Ok(Response::new(case_view(&self.store, &c)?))
    }

    async fn list_cases(
        &self,
        req: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        self.auth.approver(&req)?;
        let r = req.into_inner();
        let f = filter(&r)?;
        let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) } as usize;
        let after = (!r.after.is_empty()).then_some(r.after.as_str());
        if let Some(a) = after {
            check_case_id("after", a).map_err(invalid)?;
        }
        let (cases, next) = engine::read::cases_filtered(&self.store, &f, after, limit, MAX_SCAN)
            .map_err(store_status)?;
        let cases = cases
            .iter()
            .map(|c| case_view(&self.store, c))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListCasesResponse {
            cases,
            next_after: next.unwrap_or_default(),
        }))
    }

    async fn assign_case(
        &self,
        req: Request<pb::AssignCaseRequest>,
    ) -> Result<Response<pb::CaseOpResponse>, Status> {
        self.case_op(req, |r| {
            Ok((
                r.case_id.clone(),
                CaseOpKind::Assign {
                    owner: r.owner.clone(),
                },
            ))
        })
        .await
    }

    async fn note_case(
        &self,
        req: Request<pb::NoteCaseRequest>,
    ) -> Result<Response<pb::CaseOpResponse>, Status> {
        self.case_op(req, |r| {
            Ok((
                r.case_id.clone(),
                CaseOpKind::Note {
                    text: r.text.clone(),
                },
            ))
        })
        .await
    }

    async fn close_case(
        &self,
        req: Request<pb::CloseCaseRequest>,
    ) -> Result<Response<pb::CaseOpResponse>, Status> {
        self.case_op(req, |r| Ok((r.case_id.clone(), close_kind(r)?)))
            .await
    }

    async fn reopen_case(
        &self,
        req: Request<pb::ReopenCaseRequest>,
    ) -> Result<Response<pb::CaseOpResponse>, Status> {
        self.case_op(req, |r| {
            Ok((
                r.case_id.clone(),
                CaseOpKind::Reopen {
                    reason: r.reason.clone(),
                },
            ))
        })
        .await
    }

    async fn recover_case(
        &self,
        req: Request<pb::RecoverCaseRequest>,
    ) -> Result<Response<pb::CaseOpResponse>, Status> {
        self.case_op(req, |r| {
            Ok((
                r.case_id.clone(),
                CaseOpKind::Recover {
                    reason: r.reason.clone(),
                },
            ))
        })
        .await
    }
}

/// A `cordon cases …` call, in the CLI's terms (no protobuf).
#[derive(Debug, Clone)]
pub enum CasesCall {
    List {
        limit: u32,
        after: Option<String>,
        state: Option<String>,
        owner: Option<String>,
        severity: Option<String>,
        disposition: Option<String>,
        open: Option<bool>,
    },
    Show {
        case_id: String,
    },
    Assign {
        case_id: String,
        owner: String,
    },
    Note {
        case_id: String,
        text: String,
    },
    Close {
        case_id: String,
        disposition: String,
        reason: String,
        intel_ref: Option<String>,
        rule: Option<String>,
        missed: Option<String>,
        duplicate_of: Option<String>,
        cancel_pending: bool,
    },
    Reopen {
        case_id: String,
        reason: String,
    },
    Recover {
        case_id: String,
        reason: String,
    },
}

/// The daemon's refusal of a call: the gRPC code's name and its message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CallError {
    pub code: String,
    pub message: String,
}

impl From<Status> for CallError {
    fn from(s: Status) -> CallError {
        CallError {
            code: format!("{:?}", s.code()),
            message: s.message().to_string(),
        }
    }
}

/// A case as JSON (what `cordon cases show --json` prints).
pub fn case_json(c: &pb::Case) -> serde_json::Value {
    let s = c.summary.clone().unwrap_or_default();
    let d = c.detail.clone().unwrap_or_default();
    let when = |v: i64| {
        (v != 0)
            .then(|| chrono::DateTime::from_timestamp_millis(v).map(|t| t.to_rfc3339()))
            .flatten()
    };
    serde_json::json!({
        "case_id": s.case_id, "title": s.title, "state": s.state, "severity": s.severity,
        "rule_id": s.rule_id, "alert_count": s.alert_count, "entities": s.entities,
        "owner": d.owner, "sla_deadline": when(d.sla_deadline_unix_ms), "sla_escalated": d.sla_escalated,
        "owner_team": d.owner_team, "escalation_route": d.escalation_route,
        "known_limitations": d.known_limitations,
        "notes": d.notes.iter().map(|n| serde_json::json!({"by": n.by, "at": when(n.at_unix_ms), "text": n.text})).collect::<Vec<_>>(),
        "closure": d.closure.as_ref().map(|x| serde_json::json!({
            "disposition": x.disposition, "reason": x.reason, "by": x.by, "at": when(x.at_unix_ms),
            "helped_intel_ref": x.helped_intel_ref, "helped_rule": x.helped_rule, "missed": x.missed,
            "duplicate_of": x.duplicate_of, "cancelled": x.cancelled,
        })),
        "recovered_how": d.recovered_how, "recovered_reason": d.recovered_reason,
        "handoffs": {
            "opened": when(c.created_unix_ms),
            "first_human_action": when(d.first_human_action_unix_ms),
            "ir_escalation": when(d.ir_escalation_unix_ms),
            "closed": when(d.closed_unix_ms),
            "recovered": when(d.recovered_unix_ms),
            "learning_done": when(d.learning_done_unix_ms),
        },
        "actions": c.actions.iter().map(|a| serde_json::json!({
            "action_id": a.action_id, "action": a.action, "state": a.state, "tier": a.tier,
            "target": a.target.as_ref().map(|t| format!("{}:{}", t.kind, t.id)),
        })).collect::<Vec<_>>(),
    })
}

/// Makes one `cordon cases` call; the answer as JSON: `{"cases": [...], "next_after": …}` for
/// a list, the case for `show`, `{"case": …, "cancelled": [...]}` for an operation.
pub async fn call(
    c: &mut super::client::Clients,
    call: CasesCall,
) -> Result<serde_json::Value, CallError> {
    let op = |r: pb::CaseOpResponse| {
        serde_json::json!({
            "case": r.case.as_ref().map(case_json),
            "cancelled": r.cancelled,
        })
    };
    Ok(match call {
        CasesCall::List {
            limit,
            after,
            state,
            owner,
            severity,
            disposition,
            open,
        } => {
            let r = c
                .cases
                .list_cases(pb::ListCasesRequest {
                    limit,
                    after: after.unwrap_or_default(),
                    state: state.unwrap_or_default(),
                    owner: owner.unwrap_or_default(),
                    severity: severity.unwrap_or_default(),
                    disposition: disposition.unwrap_or_default(),
                    open: open.map(|o| o.to_string()).unwrap_or_default(),
                })
                .await?
                .into_inner();
            serde_json::json!({
                "cases": r.cases.iter().map(case_json).collect::<Vec<_>>(),
                "next_after": r.next_after,
            })
        }
        CasesCall::Show { case_id } => case_json(
            &c.cases
                .get_case(pb::GetCaseRequest { case_id })
                .await?
                .into_inner(),
        ),
        CasesCall::Assign { case_id, owner } => op(c
            .cases
            .assign_case(pb::AssignCaseRequest { case_id, owner })
            .await?
            .into_inner()),
        CasesCall::Note { case_id, text } => op(c
            .cases
            .note_case(pb::NoteCaseRequest { case_id, text })
            .await?
            .into_inner()),
        CasesCall::Close {
            case_id,
            disposition,
            reason,
            intel_ref,
            rule,
            missed,
            duplicate_of,
            cancel_pending,
        } => op(c
            .cases
            .close_case(pb::CloseCaseRequest {
                case_id,
                disposition,
                reason,
                helped_intel_ref: intel_ref.unwrap_or_default(),
                helped_rule: rule.unwrap_or_default(),
                missed: missed.unwrap_or_default(),
                duplicate_of: duplicate_of.unwrap_or_default(),
                cancel_pending,
            })
            .await?
            .into_inner()),
        CasesCall::Reopen { case_id, reason } => op(c
            .cases
            .reopen_case(pb::ReopenCaseRequest { case_id, reason })
            .await?
            .into_inner()),
        CasesCall::Recover { case_id, reason } => op(c
            .cases
            .recover_case(pb::RecoverCaseRequest { case_id, reason })
            .await?
            .into_inner()),
    })
}
