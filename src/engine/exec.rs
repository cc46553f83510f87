//! Event `Exec`: the executor's records (claims, evidence, outcomes, rollbacks).
//!
//! Owns: the claim (recorded Allow, the pre-execution re-check, target lease, durable intent),
//! every record the executor makes before its next step, the outcome, escalations of actions,
//! and rollback requests (the inverse proposed as a new request through the same policies).

use super::*;

/// What the executor asks the engine to record. Each is durable before the reply.
#[derive(Debug, Clone)]
pub enum ExecOp {
    /// Claim an approved action (or resume one after a restart): check the recorded Allow,
    /// re-check the policy, take the target lease, write the intent record.
    Claim { action_id: String, mode: String },
    /// Record evidence (vendor exchanges, probes, a retry, the write intent) in order, and
    /// update the intent record with each: one commit for all of them.
    Record {
        action_id: String,
        notes: Vec<ExecNote>,
    },
    /// Record the evidence not yet recorded, then move the action to its final (or `unknown`)
    /// state, in one commit.
    Finish {
        action_id: String,
        notes: Vec<ExecNote>,
        to: ActionState,
        outcome: String,
        escalate: Option<String>,
    },
    /// Claim an action whose run sends nothing to a vendor (a dry run, a built-in action) and,
    /// if it is claimed, record that run's evidence and outcome in the same commit: one round
    /// trip instead of two. Refused or busy, nothing but the claim's own records is kept.
    ClaimAndFinish {
        action_id: String,
        mode: String,
        notes: Vec<ExecNote>,
        to: ActionState,
        outcome: String,
        escalate: Option<String>,
    },
    /// Before a write is sent again (a probe showed the earlier one had no effect): record
    /// the evidence, then re-check the policy in force with the approvals given, as the claim
    /// did. Denied, the action fails with an escalation and nothing is sent again.
    Recheck {
        action_id: String,
        notes: Vec<ExecNote>,
    },
    /// Propose the inverse of a succeeded, reversible action for `user`.
    Rollback {
        action_id: String,
        user: String,
        reason: String,
    },
}

/// One piece of evidence the executor records: an audit record of `kind` and the change it
/// makes to the intent record.
#[derive(Debug, Clone)]
pub struct ExecNote {
    pub kind: AuditKind,
    pub body: serde_json::Value,
    pub update: ExecUpdate,
}

/// Changes to the intent record that go with an [`ExecNote`].
#[derive(Debug, Clone, Default)]
pub struct ExecUpdate {
    pub phase: Option<crate::action::ExecPhase>,
    pub write_sent: bool,
    pub retry: bool,
    pub vendor: std::collections::BTreeMap<String, String>,
    /// The vendor accepted the write (see `Execution::accepted`).
    pub accepted: bool,
}

impl ExecUpdate {
    /// Applies the change to an intent record (the engine to the stored one, the executor to
    /// its copy while the note waits to be recorded).
    pub fn apply(&self, e: &mut crate::action::Execution) {
        if let Some(p) = self.phase {
            e.phase = p;
        }
        if self.write_sent {
            e.writes_sent += 1;
        }
        if self.retry {
            e.retries += 1;
        }
        if self.accepted {
            e.accepted = true;
        }
        e.vendor
            .extend(self.vendor.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

#[derive(Debug, Clone)]
pub enum ExecReply {
    Claimed(Box<ActionRequest>),
    /// Another action holds the target's lease.
    Busy(String),
    Refused(String),
    /// No such action.
    NotFound(String),
    Recorded(Box<ActionRequest>),
    Finished,
    RollbackProposed(Box<ActionRequest>),
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

impl Engine {
    pub(super) fn exec(&mut self, txn: &mut Txn, op: ExecOp) -> Result<ExecReply, StoreError> {
        match op {
            ExecOp::Claim { action_id, mode } => self.exec_claim(txn, &action_id, &mode),
            ExecOp::Record { action_id, notes } => self.exec_record(txn, &action_id, notes),
            ExecOp::Finish {
                action_id,
                notes,
                to,
                outcome,
                escalate,
            } => match self.exec_record(txn, &action_id, notes)? {
                ExecReply::Recorded(_) => self.exec_finish(txn, &action_id, to, &outcome, escalate),
                refused => Ok(refused),
            },
            ExecOp::ClaimAndFinish {
                action_id,
                mode,
                notes,
                to,
                outcome,
                escalate,
            } => match self.exec_claim(txn, &action_id, &mode)? {
                ExecReply::Claimed(_) => match self.exec_record(txn, &action_id, notes)? {
                    ExecReply::Recorded(_) => {
                        self.exec_finish(txn, &action_id, to, &outcome, escalate)
                    }
                    refused => Ok(refused),
                },
                other => Ok(other),
            },
            ExecOp::Recheck { action_id, notes } => {
                match self.exec_record(txn, &action_id, notes)? {
                    ExecReply::Recorded(a) => self.exec_recheck(txn, *a),
                    refused => Ok(refused),
                }
            }
            ExecOp::Rollback {
                action_id,
                user,
                reason,
            } => self.exec_rollback(txn, &action_id, &user, &reason),
        }
    }

    /// The re-check before a resend ([`ExecOp::Recheck`]).
    fn exec_recheck(
        &mut self,
        txn: &mut Txn,
        mut a: ActionRequest,
    ) -> Result<ExecReply, StoreError> {
        let now = (self.parts.clock)();
        match self.policy_recheck(txn, &a, now, "pre_resend")? {
            Ok(_) => Ok(ExecReply::Recorded(Box::new(a))),
            Err(why) => {
                let why = format!("{why}; the write is not sent again");
                self.refuse_run(txn, &mut a, now, &why)?;
                Ok(ExecReply::Refused(why))
            }
        }
    }

    /// Ends a run the policy no longer allows: `denied` if it had not started, else `failed`;
    /// escalated, out of the queue, its target lease let go.
    fn refuse_run(
        &mut self,
        txn: &mut Txn,
        a: &mut ActionRequest,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<(), StoreError> {
        let to = if a.state == ActionState::Approved {
            ActionState::Denied
        } else {
            ActionState::Failed
        };
        Self::move_action(txn, a, to, now, Some(why), json!({}))?;
        let escalation = format!("not run: {why}");
        if let Some(e) = a.execution.as_mut() {
            e.phase = crate::action::ExecPhase::Finished;
            e.outcome = Some(why.to_string());
            e.escalation = Some(escalation.clone());
            e.finished_at = Some(now);
        }
        self.escalate(txn, a, now, &escalation)?;
        txn.delete(keys::runnable(&a.action_id));
        txn.delete(keys::lease(&a.connector, &a.target));
        txn.put_json(keys::action(&a.action_id), a)?;
        self.changed.push(a.clone());
        self.refresh_after_execution(txn, a, now)
    }

    /// The policy in force, asked again with the approvals actually given, on the action's
    /// stored decision input; recorded (`phase`). `Ok(seq)` of the Allow, or why not.
    fn policy_recheck(
        &mut self,
        txn: &mut Txn,
        a: &ActionRequest,
        now: DateTime<Utc>,
        phase: &str,
    ) -> Result<Result<u64, String>, StoreError> {
        let approvals = Self::approvals_given(a);
        let recorded = a.decision_seq.is_some()
            && match a.tier {
                Some(Tier::Auto) => true,
                Some(t) => t.approvals_needed().is_some_and(|n| approvals >= n),
                None => false,
            };
        Ok(match (&a.decision_input, recorded) {
            (Some(input), true) => {
                let step = super::vote::stored_step(a, input);
                let (allowed, rec) = self.parts.policies.current().recheck(step, approvals);
                let seq = txn.audit(
                    AuditKind::PolicyDecision,
                    Self::links(a),
                    now,
                    json!({"phase": phase, "approvals": approvals, "allowed": allowed, "record": rec}),
                )?;
                if allowed {
                    Ok(seq)
                } else {
                    Err(format!(
                        "the policy re-check right before {} denied it",
                        if phase == "pre_resend" {
                            "sending it again"
                        } else {
                            "execution"
                        }
                    ))
                }
            }
            (None, _) => Err("no stored decision input to re-check".to_string()),
            (_, false) => Err("no recorded Allow with enough approvals".to_string()),
        })
    }

    pub(super) fn escalate(
        &mut self,
        txn: &mut Txn,
        a: &ActionRequest,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<(), StoreError> {
        tracing::warn!(action_id = %a.action_id, case_id = %a.case_id, kind = %a.kind, target = %a.target.id, reason = why, "escalation: a person has to look at this action");
        self.tallies.push(Tally::Escalation);
        txn.audit(
            AuditKind::Escalation,
            Self::links(a),
            now,
            json!({"reason": why, "kind": a.kind, "target": a.target, "state": a.state, "connector": a.connector}),
        )?;
        self.route_action_escalation(txn, a, "action", why, now)?;
        Ok(())
    }

    /// Distinct approvals recorded for the request as it was decided.
    pub(super) fn approvals_given(a: &ActionRequest) -> u8 {
        a.approval.as_ref().map_or(0, |ap| {
            ap.decided_hash
                .as_deref()
                .map_or(0, |h| ap.approvals_for(h).len() as u8)
        })
    }

    /// Drops an action from the executor's queue if it is there (nothing is written if not).
    fn unqueue(txn: &mut Txn, store: &Store, id: &str) -> Result<(), StoreError> {
        if txn.get(store, &keys::runnable(id))?.is_some() {
            txn.delete(keys::runnable(id));
        }
        Ok(())
    }

    pub(super) fn exec_claim(
        &mut self,
        txn: &mut Txn,
        id: &str,
        mode: &str,
    ) -> Result<ExecReply, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        // A claim that comes too late (a rescan that read the queue before the action's run
        // ended) changes nothing: the queue entry is dropped only if it is still there, so the
        // refusal costs no commit.
        let Some(mut a) = txn.get_json::<ActionRequest>(&store, &keys::action(id))? else {
            Self::unqueue(txn, &store, id)?;
            return Ok(ExecReply::NotFound(id.to_string()));
        };
        let resuming = matches!(a.state, ActionState::Executing | ActionState::Unknown);
        if !resuming && a.state != ActionState::Approved {
            Self::unqueue(txn, &store, id)?;
            return Ok(ExecReply::Refused(format!("action is {}", a.state)));
        }
        if resuming && a.execution.is_none() {
            // A run on record without its intent record: nothing says what was sent. It is
            // never driven again (no blind resend); a person has to look.
            txn.delete(keys::runnable(id));
            self.escalate(
                txn,
                &a,
                now,
                "the stored action is executing or unknown but has no intent record; refusing to act on it",
            )?;
            return Ok(ExecReply::Refused(
                "a resumed action without an intent record".into(),
            ));
        }
        let sent = a.execution.as_ref().is_some_and(|e| e.writes_sent > 0);
        if resuming {
            txn.audit(
                AuditKind::ExecutionResumed,
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
        let seq = match self.policy_recheck(txn, &a, now, "pre_execution")? {
            Ok(seq) => seq,
            Err(why) => {
                self.refuse_run(txn, &mut a, now, &why)?;
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
            accepted: false,
            outcome: None,
            escalation: None,
            finished_at: None,
        });
        txn.audit(
            AuditKind::ExecutionIntent,
            Self::links(&a),
            now,
            json!({"idempotency_key": a.idempotency_key, "connector": a.connector, "mode": mode, "kind": a.kind, "target": a.target, "approvals": Self::approvals_given(&a), "pre_execution_decision_seq": seq}),
        )?;
        Self::move_action(
            txn,
            &mut a,
            ActionState::Executing,
            now,
            Some("claimed by the executor"),
            json!({}),
        )?;
        txn.put_json(keys::action(id), &a)?;
        self.changed.push(a.clone());
        Ok(ExecReply::Claimed(Box::new(a)))
    }

    pub(super) fn exec_record(
        &mut self,
        txn: &mut Txn,
        id: &str,
        notes: Vec<ExecNote>,
    ) -> Result<ExecReply, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let Some(mut a) = txn.get_json::<ActionRequest>(&store, &keys::action(id))? else {
            return Ok(ExecReply::NotFound(id.to_string()));
        };
        if !matches!(a.state, ActionState::Executing | ActionState::Unknown) {
            return Ok(ExecReply::Refused(format!("action is {}", a.state)));
        }
        if notes.is_empty() {
            return Ok(ExecReply::Recorded(Box::new(a)));
        }
        for ExecNote {
            kind,
            mut body,
            update,
        } in notes
        {
            if let Some(o) = body.as_object_mut() {
                o.insert("idempotency_key".into(), json!(a.idempotency_key));
                o.insert("connector".into(), json!(a.connector));
            }
            txn.audit(kind, Self::links(&a), now, body)?;
            if let Some(e) = a.execution.as_mut() {
                update.apply(e);
            }
        }
        a.updated_at = now;
        txn.put_json(keys::action(id), &a)?;
        Ok(ExecReply::Recorded(Box::new(a)))
    }

    pub(super) fn exec_finish(
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
            return Ok(ExecReply::NotFound(id.to_string()));
        };
        if a.state == to && to == ActionState::Unknown {
            // Still unknown after another reconciliation: note it, change nothing else.
            txn.audit(
                AuditKind::ReconcileUnresolved,
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
        Self::move_action(txn, &mut a, to, now, Some(outcome), json!({}))?;
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
        self.index_block_expiry(txn, &a, now)?;
        self.changed.push(a.clone());
        // A rollback that succeeded marks what it undid.
        if to == ActionState::Succeeded
            && let Some(orig_id) = a.rollback_of.clone()
            && let Some(mut orig) =
                txn.get_json::<ActionRequest>(&store, &keys::action(&orig_id))?
            && orig.state.can_become(ActionState::RolledBack)
        {
            let why = format!("undone by {}", a.action_id);
            Self::move_action(
                txn,
                &mut orig,
                ActionState::RolledBack,
                now,
                Some(&why),
                json!({}),
            )?;
            txn.put_json(keys::action(&orig_id), &orig)?;
            self.changed.push(orig);
        }
        self.refresh_after_execution(txn, &a, now)?;
        if to == ActionState::Succeeded {
            self.refresh_recovery(txn, &a.case_id, now)?;
        }
        Ok(ExecReply::Finished)
    }

    /// Whether a succeeded action's effect is cordon's own: false for a live action that sent
    /// no write because its probe found the target already in the desired state (someone
    /// else's block or isolation, or another case's). Such an effect is never undone by cordon:
    /// no rollback, no unblock at expiry.
    pub(super) fn made_its_change(a: &ActionRequest) -> bool {
        !a.execution
            .as_ref()
            .is_some_and(|e| e.mode == "live" && e.writes_sent == 0)
    }

    pub(super) fn exec_rollback(
        &mut self,
        txn: &mut Txn,
        id: &str,
        user: &str,
        reason: &str,
    ) -> Result<ExecReply, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let Some(mut orig) = txn.get_json::<ActionRequest>(&store, &keys::action(id))? else {
            return Ok(ExecReply::NotFound(id.to_string()));
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
        if !Self::made_its_change(&orig) {
            return refuse(format!(
                "cordon sent nothing for {id}: {}:{} was already in the desired state when it ran, so undoing it would undo a change someone else made",
                orig.target.kind.as_str(),
                orig.target.id
            ));
        }
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
            proposal: None,
        };
        txn.audit(
            AuditKind::RollbackRequested,
            Self::links(&orig),
            now,
            json!({"by": user, "reason": reason, "rollback_action_id": action_id, "kind": inverse}),
        )?;
        txn.audit(AuditKind::ActionProposed, Self::links(&req), now, &req)?;
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
        self.decide_new(txn, &mut req, step_req, None, severity, now, None)?;
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
            queue::put_case(txn, &case)?;
        }
        Ok(ExecReply::RollbackProposed(Box::new(req)))
    }
}
