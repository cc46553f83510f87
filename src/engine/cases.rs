//! Event `CaseOp`: an analyst's operation on a case.
//!
//! Owns: the case operations (`assign`, `note`, `close`, `reopen`, `recover`): their pure input
//! checks, the Cedar request each one is (identity from the channel), the preconditions (a case
//! with an action executing cannot be closed; one with requests awaiting approval or execution
//! only with `cancel_pending`, which cancels them), and their records (success or refusal); a
//! vote as the case's first human action. What follows from a case's playbook, actions and clock
//! without an operation (ownership, SLA, escalation routing, automatic recovery) is `sla.rs`.
//! State changes themselves go through `lifecycle`.

use super::*;
use crate::case::{Closure, Disposition, Handoffs, Helped, Note, Recovery};
use lifecycle::case_links;

/// Longest note, reason or "missed" text accepted (bytes).
pub const MAX_TEXT_BYTES: usize = 4096;
/// Longest user id, case id, intel reference or rule id accepted (bytes).
pub const MAX_REF_BYTES: usize = 256;

/// An analyst's operation as the API hands it to the engine (identity from the channel).
#[derive(Debug, Clone, PartialEq)]
pub struct CaseOp {
    pub case_id: String,
    pub user: String,
    /// grpc | http
    pub channel: String,
    /// mtls | token
    pub identity: String,
    pub kind: CaseOpKind,
}

/// What the analyst asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseOpKind {
    Assign {
        owner: String,
    },
    Note {
        text: String,
    },
    Close(CloseCase),
    Reopen {
        reason: String,
    },
    Recover {
        reason: String,
    },
    /// Accept a learning proposal learned from the case (its files are written for review).
    AcceptProposal {
        proposal_id: String,
        reason: Option<String>,
    },
    /// Dismiss a learning proposal learned from the case.
    DismissProposal {
        proposal_id: String,
        reason: String,
    },
}

/// A closure request.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseCase {
    pub disposition: Disposition,
    pub reason: String,
    /// True positives only.
    pub helped: Helped,
    /// True positives only.
    pub missed: Option<String>,
    /// Duplicates only (and required for them).
    pub duplicate_of: Option<String>,
    /// Cancel the case's requests awaiting approval or execution instead of refusing.
    pub cancel_pending: bool,
}

/// What an operation did.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseOpOutcome {
    pub case: Case,
    /// Requests cancelled by a closure with `cancel_pending`.
    pub cancelled: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CaseOpError {
    #[error("no case {0}")]
    NotFound(String),
    /// Bad input only the store could tell (an unknown assignee or duplicate); nothing recorded.
    #[error("{0}")]
    Invalid(String),
    /// The policies refuse it (recorded as `case_op_refused`).
    #[error("case operation refused: {0}")]
    Refused(String),
    /// The case's state does not allow it (recorded as `case_op_refused`).
    #[error("{0}")]
    Conflict(String),
    #[error("store unavailable: {0}")]
    Store(String),
}

impl CaseOpKind {
    /// The Cedar action of the operation.
    pub fn action(&self) -> &'static str {
        match self {
            CaseOpKind::Assign { .. } => "assign_case",
            CaseOpKind::Note { .. } => "note_case",
            CaseOpKind::Close(_) => "close_case",
            CaseOpKind::Reopen { .. } => "reopen_case",
            CaseOpKind::Recover { .. } => "recover_case",
            CaseOpKind::AcceptProposal { .. } => "accept_proposal",
            CaseOpKind::DismissProposal { .. } => "dismiss_proposal",
        }
    }

    /// Pure checks of the operation's input: the first problem as an error fragment that
    /// names the field. Run by the API before anything reaches the engine.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            CaseOpKind::Assign { owner } => check_ref("owner", owner),
            CaseOpKind::Note { text } => check_text("text", text),
            CaseOpKind::Reopen { reason } | CaseOpKind::Recover { reason } => {
                check_text("reason", reason)
            }
            CaseOpKind::AcceptProposal {
                proposal_id,
                reason,
            } => {
                check_proposal_id(proposal_id)?;
                match reason {
                    Some(r) => check_text("reason", r),
                    None => Ok(()),
                }
            }
            CaseOpKind::DismissProposal {
                proposal_id,
                reason,
            } => {
                check_proposal_id(proposal_id)?;
                check_text("reason", reason)
            }
            CaseOpKind::Close(c) => {
                check_text("reason", &c.reason)?;
                let tp = c.disposition == Disposition::TruePositive;
                for (field, v) in [
                    ("helped.intel_ref", &c.helped.intel_ref),
                    ("helped.rule", &c.helped.rule),
                ] {
                    if let Some(v) = v {
                        if !tp {
                            return Err(format!(
                                "{field} is for true positives; this closure is {}",
                                c.disposition
                            ));
                        }
                        check_ref(field, v)?;
                    }
                }
                if let Some(m) = &c.missed {
                    if !tp {
                        return Err(format!(
                            "missed is for true positives; this closure is {}",
                            c.disposition
                        ));
                    }
                    check_text("missed", m)?;
                }
                match (&c.duplicate_of, c.disposition) {
                    (None, Disposition::Duplicate) => {
                        Err("a duplicate needs duplicate_of (the case it duplicates)".into())
                    }
                    (Some(_), d) if d != Disposition::Duplicate => Err(format!(
                        "duplicate_of is for duplicates; this closure is {d}"
                    )),
                    (Some(id), _) => check_case_id("duplicate_of", id),
                    (None, _) => Ok(()),
                }
            }
        }
    }
}

/// A case id as the API accepts it: 1 to 64 ASCII letters, digits, `-` or `_`.
pub fn check_case_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{field} is required"));
    }
    if id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{field} is not a case id (1 to 64 letters, digits, - or _)"
        ));
    }
    Ok(())
}

fn check_text(field: &str, v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(format!("{field} is required"));
    }
    if v.len() > MAX_TEXT_BYTES {
        return Err(format!("{field} is longer than {MAX_TEXT_BYTES} bytes"));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(format!("{field} holds control characters"));
    }
    Ok(())
}

/// A learning proposal id: `lp-` and 16 hex digits.
pub fn check_proposal_id(v: &str) -> Result<(), String> {
    let ok = v
        .strip_prefix("lp-")
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "proposal_id {:?} is not a learning proposal id (lp- and 16 hex digits)",
            crate::ingest::clip(v, 64)
        ))
    }
}

fn check_ref(field: &str, v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if v.len() > MAX_REF_BYTES {
        return Err(format!("{field} is longer than {MAX_REF_BYTES} bytes"));
    }
    if v.trim() != v || v.chars().any(char::is_control) {
        return Err(format!(
            "{field} has surrounding spaces or control characters"
        ));
    }
    Ok(())
}

impl Engine {
    /// Handles one case operation. `Ok(Err(..))` is a refusal (recorded when it is a policy or
    /// state refusal; not found and invalid input write nothing); `Err` a store failure.
    pub(super) fn case_op(
        &mut self,
        txn: &mut Txn,
        op: &CaseOp,
    ) -> Result<Result<CaseOpOutcome, CaseOpError>, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let Some(case) = txn.get_json::<Case>(&store, &keys::case(&op.case_id))? else {
            return Ok(Err(CaseOpError::NotFound(op.case_id.clone())));
        };
        let policy = self.parts.policies.current();
        // Input only the store can judge: still bad input, so nothing is recorded.
        match &op.kind {
            CaseOpKind::Assign { owner } if !policy.knows_user(owner) => {
                return Ok(Err(CaseOpError::Invalid(format!(
                    "owner {owner:?} is not a known user"
                ))));
            }
            CaseOpKind::Close(c) => {
                if let Some(d) = &c.duplicate_of {
                    if *d == case.case_id {
                        return Ok(Err(CaseOpError::Invalid(
                            "duplicate_of names the case itself".into(),
                        )));
                    }
                    if txn.get(&store, &keys::case(d))?.is_none() {
                        return Ok(Err(CaseOpError::Invalid(format!(
                            "duplicate_of: no case {d}"
                        ))));
                    }
                }
            }
            _ => {}
        }
        // The case's requests: running (cannot be cancelled) and pending (can).
        let (mut running, mut pending) = (Vec::new(), Vec::new());
        for id in &case.action_ids {
            if let Some(a) = txn.get_json::<ActionRequest>(&store, &keys::action(id))? {
                match a.state {
                    ActionState::Executing | ActionState::Unknown => running.push(a),
                    ActionState::Proposed
                    | ActionState::AwaitingApproval
                    | ActionState::Approved => pending.push(a),
                    _ => {}
                }
            }
        }
        let (disposition, cancel_pending, assignee) = match &op.kind {
            CaseOpKind::Close(c) => (c.disposition.as_str(), c.cancel_pending, ""),
            CaseOpKind::Assign { owner } => ("", false, owner.as_str()),
            _ => ("", false, ""),
        };
        let decision = policy.authorize_case_op(&policy::CaseOpRequest {
            user: op.user.clone(),
            action: op.kind.action().into(),
            channel: op.channel.clone(),
            identity: op.identity.clone(),
            case_id: case.case_id.clone(),
            severity_id: case.severity.id(),
            alert_count: case.alert_ids.len() as i64,
            state: case.state.as_str().into(),
            severity: case.severity.as_str().into(),
            owner: case.owner.clone().unwrap_or_default(),
            closed: case.closure.is_some(),
            disposition: disposition.into(),
            cancel_pending,
            pending_actions: pending.len() as i64,
            assignee: assignee.into(),
            proposal_kind: self.proposal_kind_of(txn, &op.kind),
        });
        let decision_json = serde_json::to_value(&decision.record).unwrap_or_default();
        let links = case_links(&case);
        let refuse = |txn: &mut Txn, by: &str, reason: &str| {
            tracing::info!(case_id = ?links.case_id, user = %op.user, operation = op.kind.action(), reason, "A case operation was refused.");
            txn.audit(
                AuditKind::CaseOpRefused,
                links.clone(),
                now,
                json!({"operation": op.kind.action(), "user": op.user, "channel": op.channel,
                       "identity": op.identity, "refused_by": by, "reason": reason,
                       "decision": decision_json}),
            )
        };
        if !decision.allowed {
            let why = decision.refusal.clone().unwrap_or_default();
            refuse(txn, "policy", &why)?;
            return Ok(Err(CaseOpError::Refused(why)));
        }
        txn.audit(
            AuditKind::CaseOpDecision,
            links.clone(),
            now,
            json!({"operation": op.kind.action(), "user": op.user, "channel": op.channel,
                   "identity": op.identity, "record": decision_json}),
        )?;
        let who = json!({"user": op.user, "channel": op.channel, "identity": op.identity});
        let mut case = case;
        let mut cancelled = Vec::new();
        match &op.kind {
            CaseOpKind::Assign { owner } => {
                let from = case.owner.replace(owner.clone());
                txn.audit(
                    AuditKind::CaseAssigned,
                    case_links(&case),
                    now,
                    json!({"by": who, "from": from, "to": owner, "decision": decision_json}),
                )?;
            }
            CaseOpKind::Note { text } => {
                txn.audit(
                    AuditKind::CaseNote,
                    case_links(&case),
                    now,
                    json!({"by": who, "text": text, "decision": decision_json}),
                )?;
                case.notes.push(Note {
                    by: op.user.clone(),
                    at: now,
                    text: text.clone(),
                });
            }
            CaseOpKind::Close(c) => {
                let conflict = if let Some(cl) = &case.closure {
                    Some(format!(
                        "case {} is already closed ({}); reopen it first",
                        case.case_id, cl.disposition
                    ))
                } else if !case.state.can_become(CaseState::Closed) {
                    Some(format!(
                        "case {} is {}; it cannot be closed",
                        case.case_id, case.state
                    ))
                } else if !running.is_empty() {
                    Some(format!(
                        "case {} has {} action(s) executing ({}); a running action cannot be cancelled: wait for it to finish",
                        case.case_id,
                        running.len(),
                        running
                            .iter()
                            .map(|a| format!("{} {}", a.action_id, a.kind))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                } else if !pending.is_empty() && !c.cancel_pending {
                    Some(format!(
                        "case {} has {} action request(s) awaiting approval or execution ({}); close with cancel_pending to cancel them",
                        case.case_id,
                        pending.len(),
                        pending
                            .iter()
                            .map(|a| format!("{} {}", a.action_id, a.kind))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                } else {
                    None
                };
                if let Some(why) = conflict {
                    refuse(txn, "state", &why)?;
                    return Ok(Err(CaseOpError::Conflict(why)));
                }
                let why = format!("cancelled: case closed by {}", op.user);
                for mut a in pending {
                    match a.state {
                        ActionState::AwaitingApproval => {
                            self.leave_pending(txn, &mut a, ActionState::Rejected, now, &why)?;
                        }
                        _ => {
                            Self::move_action(
                                txn,
                                &mut a,
                                ActionState::Denied,
                                now,
                                Some(&why),
                                json!({}),
                            )?;
                            txn.delete(keys::runnable(&a.action_id));
                            txn.put_json(keys::action(&a.action_id), &a)?;
                            self.changed.push(a.clone());
                        }
                    }
                    cancelled.push(a.action_id.clone());
                }
                if !cancelled.is_empty() {
                    txn.audit(
                        AuditKind::CaseRequestsCancelled,
                        case_links(&case),
                        now,
                        json!({"by": who, "cancelled": cancelled, "reason": why}),
                    )?;
                    // Leaving `awaiting_approval` may have rewritten the case.
                    if let Some(fresh) = txn.get_json::<Case>(&store, &keys::case(&case.case_id))? {
                        case = fresh;
                    }
                }
                let closure = Closure {
                    disposition: c.disposition,
                    reason: c.reason.clone(),
                    by: op.user.clone(),
                    at: now,
                    from: case.state,
                    helped: (c.helped != Helped::default()).then(|| c.helped.clone()),
                    missed: c.missed.clone(),
                    duplicate_of: c.duplicate_of.clone(),
                    cancelled: cancelled.clone(),
                };
                self.close_case(txn, &mut case, closure, now)?;
            }
            CaseOpKind::Reopen { reason } => {
                if case.closure.is_none() || case.state == CaseState::Learned {
                    let why = if case.closure.is_none() {
                        format!("case {} is not closed", case.case_id)
                    } else {
                        format!(
                            "case {} is learned; its closure is final (open a new case)",
                            case.case_id
                        )
                    };
                    refuse(txn, "state", &why)?;
                    return Ok(Err(CaseOpError::Conflict(why)));
                }
                self.reopen_case(txn, &mut case, &op.user, reason, now)?;
            }
            CaseOpKind::AcceptProposal { .. } | CaseOpKind::DismissProposal { .. } => {
                let r = self.resolve_proposal(txn, &case, op, now)?;
                if let Err(e) = r {
                    if matches!(e, CaseOpError::Conflict(_)) {
                        refuse(txn, "state", &e.to_string())?;
                    }
                    return Ok(Err(e));
                }
                // Resolving may have moved the case on to `learned`.
                if let Some(fresh) = txn.get_json::<Case>(&store, &keys::case(&case.case_id))? {
                    case = fresh;
                }
            }
            CaseOpKind::Recover { reason } => {
                if !case.state.can_become(CaseState::Recovered) {
                    let why = format!(
                        "case {} is {}; only an executed or closed case can be recovered",
                        case.case_id, case.state
                    );
                    refuse(txn, "state", &why)?;
                    return Ok(Err(CaseOpError::Conflict(why)));
                }
                self.recover_case(
                    txn,
                    &mut case,
                    Recovery {
                        how: "analyst".into(),
                        by: Some(op.user.clone()),
                        reason: reason.clone(),
                        at: now,
                    },
                    now,
                )?;
            }
        }
        Handoffs::stamp(&mut case.handoffs.first_human_action, now);
        case.updated_at = now;
        queue::put_case(txn, &case)?;
        // What a closure teaches (which may move the case on to `learned`).
        if matches!(op.kind, CaseOpKind::Close(_)) {
            self.learn_from_closure(txn, &case.case_id, now)?;
            if let Some(fresh) = txn.get_json::<Case>(&store, &keys::case(&case.case_id))? {
                case = fresh;
            }
        }
        Ok(Ok(CaseOpOutcome { case, cancelled }))
    }

    /// A vote on one of the case's requests is a human action on the case.
    pub(super) fn note_human_action(
        &mut self,
        txn: &mut Txn,
        case_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        if let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(case_id))?
            && Handoffs::stamp(&mut case.handoffs.first_human_action, now)
        {
            queue::put_case(txn, &case)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "cases_tests.rs"]
mod rule_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn close(d: Disposition) -> CloseCase {
        CloseCase {
            disposition: d,
            reason: "seen it".into(),
            helped: Helped::default(),
            missed: None,
            duplicate_of: None,
            cancel_pending: false,
        }
    }

    #[test]
    fn input_checks_name_the_field() {
        let ok = CaseOpKind::Close(close(Disposition::FalsePositive));
        assert_eq!(ok.validate(), Ok(()));
        let mut c = close(Disposition::FalsePositive);
        c.helped.intel_ref = Some("CTI-1".into());
        assert!(
            CaseOpKind::Close(c)
                .validate()
                .unwrap_err()
                .contains("helped.intel_ref")
        );
        let mut c = close(Disposition::BenignTruePositive);
        c.missed = Some("x".into());
        assert!(
            CaseOpKind::Close(c)
                .validate()
                .unwrap_err()
                .contains("missed")
        );
        let c = close(Disposition::Duplicate);
        assert!(
            CaseOpKind::Close(c)
                .validate()
                .unwrap_err()
                .contains("duplicate_of")
        );
        let mut c = close(Disposition::TruePositive);
        c.reason = " ".into();
        assert!(
            CaseOpKind::Close(c)
                .validate()
                .unwrap_err()
                .contains("reason")
        );
        let mut c = close(Disposition::TruePositive);
        c.helped.rule = Some("r".repeat(MAX_REF_BYTES + 1));
        assert!(
            CaseOpKind::Close(c)
                .validate()
                .unwrap_err()
                .contains("helped.rule")
        );
        assert!(
            CaseOpKind::Note {
                text: "a\u{7}".into()
            }
            .validate()
            .is_err()
        );
        assert!(
            CaseOpKind::Assign {
                owner: " bob".into()
            }
            .validate()
            .is_err()
        );
        assert!(check_case_id("case_id", "01J/../x").is_err());
        assert!(check_case_id("case_id", "01JABC").is_ok());
    }
}
