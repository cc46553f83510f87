//! Case and action lifecycle: the only place a case or an action request changes state.
//!
//! Owns: opening a case, case transitions and action moves (each checked against its state
//! machine, recorded with its reason in the same batch), leaving the pending-approval indexes,
//! and the case states that follow from its actions (approved once every request is decided,
//! executed once every run is over), closure and reopening, `recovered` and `learned` (with
//! their handoff timestamps). No other code assigns a state.

use super::*;
use crate::case::{Closure, Handoffs, Recovery};

/// Why a case starts in `normalized`.
const OPENED: &str = "case opened for a new alert";

impl Engine {
    /// A new case for an alert's fields, in `normalized`.
    pub(super) fn new_case(case_id: String, fields: &AlertFields, now: DateTime<Utc>) -> Case {
        Case {
            case_id,
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
                reason: OPENED.into(),
            }],
            created_at: now,
            updated_at: now,
            chat_requests: 0,
            correlation: Vec::new(),
            limits_hit: Vec::new(),
            owner: None,
            sla_deadline: None,
            sla_escalated: false,
            ownership: None,
            notes: Vec::new(),
            closure: None,
            reopened: Vec::new(),
            recovery: None,
            handoffs: Default::default(),
        }
    }

    /// Records that `case` was opened (after the alert that opened it).
    pub(super) fn record_opened(
        txn: &mut Txn,
        case: &Case,
        alert_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        txn.audit(
            AuditKind::CaseTransition,
            Links {
                case_id: Some(case.case_id.clone()),
                alert_id: Some(alert_id.to_string()),
                action_id: None,
            },
            now,
            json!({"from": null, "to": CaseState::Normalized, "reason": OPENED}),
        )?;
        Ok(())
    }

    /// Moves a case to `to` if its state machine allows it, recorded with the reason.
    pub(super) fn transition(
        &self,
        txn: &mut Txn,
        case: &mut Case,
        to: CaseState,
        now: DateTime<Utc>,
        reason: &str,
        alert_id: &str,
    ) -> Result<(), StoreError> {
        let from = case.state;
        if from.can_become(to) {
            case.history.push(Transition {
                from: Some(from),
                to,
                at: now,
                reason: reason.to_string(),
            });
            case.state = to;
            case.updated_at = now;
            txn.audit(
                AuditKind::CaseTransition,
                Links {
                    case_id: Some(case.case_id.clone()),
                    // Analyst operations move a case without an alert.
                    alert_id: (!alert_id.is_empty()).then(|| alert_id.to_string()),
                    action_id: None,
                },
                now,
                json!({"from": from, "to": to, "reason": reason}),
            )?;
        }
        Ok(())
    }

    /// Moves an action request to `to`: the one place an action's state is assigned. The move
    /// must be allowed by the state machine (`ActionState::can_become`; a claim may re-enter
    /// `executing` when a run resumes), is recorded as `action_transition` (from, to, the
    /// reason when given, and `detail`'s fields) and stamps `updated_at`. A move the machine
    /// does not allow changes nothing and is an error (a bug, never a silent overwrite).
    pub(super) fn move_action(
        txn: &mut Txn,
        a: &mut ActionRequest,
        to: ActionState,
        now: DateTime<Utc>,
        reason: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let reentry = a.state == to && to == ActionState::Executing;
        if !(a.state.can_become(to) || reentry) {
            return Err(StoreError::Corrupt {
                key: format!("ac/{}", a.action_id),
                reason: format!("an action cannot move from {} to {to}", a.state),
            });
        }
        let mut body = json!({"from": a.state, "to": to});
        if let Some(r) = reason {
            body["reason"] = json!(r);
        }
        if let serde_json::Value::Object(extra) = detail {
            for (k, v) in extra {
                body[k] = v;
            }
        }
        txn.audit(AuditKind::ActionTransition, Self::links(a), now, body)?;
        a.state = to;
        a.updated_at = now;
        Ok(())
    }

    /// Moves `a` out of `awaiting_approval`: removes its indexes, records the transition.
    pub(super) fn leave_pending(
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
        Self::move_action(txn, a, to, now, Some(why), json!({}))?;
        if to == ActionState::Approved {
            txn.put(keys::runnable(&a.action_id), vec![]);
        }
        txn.put_json(keys::action(&a.action_id), a)?;
        self.changed.push(a.clone());
        self.refresh_case(txn, &a.case_id.clone(), &a.alert_id.clone(), now)
    }

    /// Re-derives the case state from its actions: `approved` once nothing awaits a human and
    /// something may run.
    pub(super) fn refresh_case(
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
            queue::put_case(txn, &case)?;
        }
        Ok(())
    }

    /// A `recommended` case becomes `approved` once nothing awaits a human and at least one of
    /// its actions may run. Returns whether it moved.
    pub(super) fn approve_case_if_decided(
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
        // Newest first, and no further than the first request awaiting a human: that one
        // decides it, and the newest are the likeliest to await (a case that keeps its
        // requests pending would otherwise read every one of them on each alert it takes).
        for id in case.action_ids.iter().rev() {
            if let Some(a) = txn.get_json::<StateOf>(store, &keys::action(id))? {
                if a.state == ActionState::AwaitingApproval {
                    awaiting = true;
                    break;
                }
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

    /// An `approved` case becomes `executed` once none of its actions waits or runs.
    pub(super) fn refresh_after_execution(
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
        // Newest first: an action still to finish is likelier among them.
        for id in case.action_ids.iter().rev() {
            let Some(x) = txn.get_json::<StateOf>(&store, &keys::action(id))? else {
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
        queue::put_case(txn, &case)?;
        Ok(())
    }

    /// Closes a case with `closure` (the caller checked policy and preconditions): records the
    /// transition and `case_closed`, stamps the closure handoff, takes it off the SLA index and
    /// the open-case gauge. Returns false (and changes nothing) if the state machine refuses.
    pub(super) fn close_case(
        &mut self,
        txn: &mut Txn,
        case: &mut Case,
        closure: Closure,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if case.closure.is_some() || !case.state.can_become(CaseState::Closed) {
            return Ok(false);
        }
        let was_open = case.state != CaseState::Suppressed;
        let reason = format!(
            "closed {} by {}: {}",
            closure.disposition, closure.by, closure.reason
        );
        self.transition(txn, case, CaseState::Closed, now, &reason, "")?;
        txn.audit(
            AuditKind::CaseClosed,
            case_links(case),
            now,
            json!({"closure": closure}),
        )?;
        case.closure = Some(closure);
        case.handoffs.closed = Some(now);
        Handoffs::stamp(&mut case.handoffs.first_human_action, now);
        if let Some(at) = case.sla_deadline {
            txn.delete(keys::sla(at, &case.case_id));
        }
        if was_open {
            self.bump_open(txn, -1)?;
        }
        Ok(true)
    }

    /// Reopens a closed case: back to the state it was closed from (a case that became
    /// `recovered` after closure stays `recovered`), the closure kept in `reopened`, recorded as
    /// `case_reopened` (and a transition when the state changes). Returns false if there is no
    /// closure to undo or the case is `learned`.
    pub(super) fn reopen_case(
        &mut self,
        txn: &mut Txn,
        case: &mut Case,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let Some(closure) = case.closure.clone() else {
            return Ok(false);
        };
        if case.state == CaseState::Learned {
            return Ok(false);
        }
        let from = case.state;
        if from == CaseState::Closed {
            if !from.can_reopen_to(closure.from) {
                return Ok(false);
            }
            let why = format!("reopened by {by}: {reason}");
            case.history.push(Transition {
                from: Some(from),
                to: closure.from,
                at: now,
                reason: why.clone(),
            });
            case.state = closure.from;
            txn.audit(
                AuditKind::CaseTransition,
                case_links(case),
                now,
                json!({"from": from, "to": closure.from, "reason": why}),
            )?;
        }
        txn.audit(
            AuditKind::CaseReopened,
            case_links(case),
            now,
            json!({"by": by, "reason": reason, "undone": closure, "state": case.state}),
        )?;
        case.reopened.push(crate::case::Reopened {
            closure,
            by: by.to_string(),
            at: now,
            reason: reason.to_string(),
        });
        case.closure = None;
        case.handoffs.closed = None;
        case.updated_at = now;
        if case.state != CaseState::Suppressed {
            self.bump_open(txn, 1)?;
        }
        if let Some(at) = case.sla_deadline
            && !case.sla_escalated
            && case.state.can_become(CaseState::Closed)
        {
            txn.put(keys::sla(at, &case.case_id), vec![]);
        }
        Ok(true)
    }

    /// Marks a case `recovered` (from `executed`, or from `closed`: a closed case keeps its
    /// closure), recorded as a transition and `case_recovered`, stamping the handoff. Returns
    /// false if the state machine refuses.
    pub(super) fn recover_case(
        &mut self,
        txn: &mut Txn,
        case: &mut Case,
        recovery: Recovery,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if !case.state.can_become(CaseState::Recovered) {
            return Ok(false);
        }
        let reason = match &recovery.by {
            Some(by) => format!("recovered (analyst {by}): {}", recovery.reason),
            None => format!("recovered: {}", recovery.reason),
        };
        self.transition(txn, case, CaseState::Recovered, now, &reason, "")?;
        txn.audit(
            AuditKind::CaseRecovered,
            case_links(case),
            now,
            json!({"recovery": recovery}),
        )?;
        if recovery.by.is_some() {
            Handoffs::stamp(&mut case.handoffs.first_human_action, now);
        }
        case.recovery = Some(recovery);
        case.handoffs.recovered = Some(now);
        if let Some(at) = case.sla_deadline {
            txn.delete(keys::sla(at, &case.case_id));
        }
        Ok(true)
    }

    /// The learning code's entry point: every learning proposal of `case_id` has been accepted
    /// or dismissed, so the case becomes `learned` (from `executed`, `recovered` or `closed`),
    /// stamping the "learning done" handoff. Writes the case. Returns whether it moved (false:
    /// no such case, or its state does not allow it, e.g. still awaiting approval).
    // Called by the learning code once a case's proposals are all decided (issue 17 item 3).
    #[allow(dead_code)]
    pub(crate) fn mark_learned(
        &mut self,
        txn: &mut Txn,
        case_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let store = self.parts.store.clone();
        let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(case_id))? else {
            return Ok(false);
        };
        if !case.state.can_become(CaseState::Learned) {
            return Ok(false);
        }
        self.transition(txn, &mut case, CaseState::Learned, now, reason, "")?;
        case.handoffs.learning_done = Some(now);
        if let Some(at) = case.sla_deadline {
            txn.delete(keys::sla(at, &case.case_id));
        }
        queue::put_case(txn, &case)?;
        Ok(true)
    }
}

/// Audit links of a case-level record.
pub(super) fn case_links(case: &Case) -> Links {
    Links {
        case_id: Some(case.case_id.clone()),
        alert_id: None,
        action_id: None,
    }
}

/// Only the state of a stored action request: reading it skips the rest of the record.
#[derive(Deserialize)]
struct StateOf {
    state: ActionState,
}
