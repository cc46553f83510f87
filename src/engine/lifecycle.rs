//! Case and action lifecycle: the only place a case or an action request changes state.
//!
//! Owns: opening a case, case transitions and action moves (each checked against its state
//! machine, recorded with its reason in the same batch), leaving the pending-approval indexes,
//! and the case states that follow from its actions (approved once every request is decided,
//! executed once every run is over). No other code assigns a state.

use super::*;

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
                    alert_id: Some(alert_id.to_string()),
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
        queue::put_case(txn, &case)?;
        Ok(())
    }
}
