//! Event `Tick`: time passing.
//!
//! Owns: expiring approval requests past their deadline and raising due escalations (both
//! indexed by time in the store, so a restart keeps them), SLA breaches of open cases (the
//! `sl/` index, see `cases`), and pruning chat replay memory.

use super::*;

impl Engine {
    /// Expires requests past their deadline and raises due escalations.
    pub(super) fn tick(&mut self, txn: &mut Txn) -> Result<(), StoreError> {
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
                    AuditKind::ApprovalEscalated,
                    Self::links(&a),
                    now,
                    json!({"deadline": deadline, "approvals_missing": missing}),
                )?;
                txn.put_json(keys::action(&a.action_id), &a)?;
                let why =
                    format!("half the approval deadline passed; {missing} approval(s) missing");
                self.route_action_escalation(txn, &a, "approval_half_deadline", &why, now)?;
                self.escalations.push(Escalated {
                    action_id: a.action_id.clone(),
                    deadline,
                    missing,
                });
            }
        }
        self.sla_tick(txn, now)?;
        Ok(())
    }
}
