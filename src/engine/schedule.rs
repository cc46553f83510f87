//! Event `Schedule`: what the clock sets in motion.
//!
//! Owns: each schedule's durable next fire time (`sn/`; a fire missed over downtime runs once
//! and the missed periods are recorded, not run), the `schedule_fired` and
//! `schedule_delivered` records, what a report or digest fire still owes (`sd/`, delivered by
//! `schedule::run` and then recorded here), scheduled playbook runs against the targets
//! currently contained, and indicator block expiry (`ie/`, indexed by time when a block with
//! `expires_after_mins` succeeds; at expiry its `unblock_ioc` is proposed through the policies
//! like any rollback).

use super::*;

use crate::action::{ActionKind, Target, TargetKind};
use crate::schedule::{ChatTarget, Due, Schedule, ScheduleKind};

/// Who proposes the unblock of an expired indicator block.
pub const EXPIRY_REQUESTER: &str = "cordon:block_expiry";

/// What the scheduler asks of the engine.
pub enum ScheduleOp {
    /// Fires what is due (schedules and block expiries) and answers with every delivery still
    /// owed, this fire's and older ones'.
    Run { schedules: Arc<Vec<Schedule>> },
    /// A delivery was made (where to, in `outcome`) or failed (why): recorded, no longer owed.
    Delivered {
        id: String,
        outcome: Result<Vec<String>, String>,
    },
}

#[derive(Debug)]
pub enum ScheduleReply {
    Owed(Vec<Delivery>),
    Recorded,
}

/// A report or digest a fire owes, durable until it is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `<schedule>/<fire time, ms>`.
    pub id: String,
    pub schedule: String,
    pub kind: ScheduleKind,
    pub due: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatTarget>,
}

/// A schedule's durable state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScheduleState {
    /// The cron expression and kind the state was computed for (a changed schedule starts
    /// over from the next fire time after now).
    cron: String,
    kind: ScheduleKind,
    /// `None`: the expression has no fire time left.
    next_due: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_due: Option<DateTime<Utc>>,
}

fn schedule_links() -> Links {
    Links::default()
}

/// Other blocks of an indicator that still rely on it (see `Engine::blocks_relying`).
struct Relying {
    /// Their action ids.
    by: Vec<String>,
    /// The latest time one of them is due; `None`: one never is.
    until: Option<DateTime<Utc>>,
}

impl Engine {
    pub(super) fn schedule(
        &mut self,
        txn: &mut Txn,
        op: ScheduleOp,
    ) -> Result<ScheduleReply, StoreError> {
        match op {
            ScheduleOp::Run { schedules } => {
                self.schedule_run(txn, &schedules).map(ScheduleReply::Owed)
            }
            ScheduleOp::Delivered { id, outcome } => {
                self.schedule_delivered(txn, &id, outcome)?;
                Ok(ScheduleReply::Recorded)
            }
        }
    }

    fn schedule_run(
        &mut self,
        txn: &mut Txn,
        schedules: &[Schedule],
    ) -> Result<Vec<Delivery>, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        self.expire_blocks(txn, now)?;
        let mut owed = Vec::new();
        for s in schedules {
            let key = keys::schedule(&s.name);
            let state = txn.get_json::<ScheduleState>(&store, &key)?;
            let next_due = match state {
                Some(st) if st.cron == s.expr && st.kind == s.kind => st.next_due,
                _ => {
                    // New (or changed): the first fire is the next one from now.
                    let st = ScheduleState {
                        cron: s.expr.clone(),
                        kind: s.kind,
                        next_due: s.next_after(now),
                        last_due: None,
                    };
                    txn.put_json(key, &st)?;
                    continue;
                }
            };
            let Some(next_due) = next_due else { continue };
            let Due::Fire { due, missed, next } = s.due(next_due, now) else {
                continue;
            };
            let (since, until) = s.window(due);
            txn.audit(
                AuditKind::ScheduleFired,
                schedule_links(),
                now,
                json!({
                    "schedule": s.name, "kind": s.kind, "cron": s.expr, "due_at": due,
                    "missed_periods": missed, "next_due": next,
                    "window": {"since": since, "until": until},
                }),
            )?;
            if missed > 0 {
                tracing::warn!(schedule = %s.name, due = %due, missed, "A schedule's fire was missed while cordon was down; it runs once now.");
            }
            match s.kind {
                ScheduleKind::Playbook => self.run_scheduled_playbook(txn, s, due, now)?,
                ScheduleKind::Report | ScheduleKind::CtiDigest => {
                    let d = Delivery {
                        id: format!("{}/{:020}", s.name, due.timestamp_millis().max(0)),
                        schedule: s.name.clone(),
                        kind: s.kind,
                        due,
                        since,
                        until,
                        output_dir: s.output_dir.clone(),
                        chat: s.chat.clone(),
                    };
                    txn.put_json(keys::schedule_owed(&d.id), &d)?;
                    owed.push(d);
                }
            }
            txn.put_json(
                keys::schedule(&s.name),
                &ScheduleState {
                    cron: s.expr.clone(),
                    kind: s.kind,
                    next_due: next,
                    last_due: Some(due),
                },
            )?;
        }
        // Deliveries owed by earlier fires (a crash or shutdown before they went out).
        for (k, d) in store.scan_json::<Delivery>(keys::SCHEDULE_OWED_PREFIX, None, usize::MAX)? {
            if txn.get(&store, &k)?.is_some() && !owed.iter().any(|o| o.id == d.id) {
                owed.push(d);
            }
        }
        Ok(owed)
    }

    fn schedule_delivered(
        &mut self,
        txn: &mut Txn,
        id: &str,
        outcome: Result<Vec<String>, String>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let key = keys::schedule_owed(id);
        let Some(d) = txn.get_json::<Delivery>(&store, &key)? else {
            return Ok(());
        };
        txn.delete(key);
        let body = match &outcome {
            Ok(to) => {
                json!({"schedule": d.schedule, "kind": d.kind, "due_at": d.due, "outcome": "delivered", "to": to})
            }
            Err(why) => {
                json!({"schedule": d.schedule, "kind": d.kind, "due_at": d.due, "outcome": "failed", "error": why})
            }
        };
        txn.audit(AuditKind::ScheduleDelivered, schedule_links(), now, body)?;
        if let Err(why) = outcome {
            tracing::warn!(schedule = %d.schedule, error = %why, "escalation: a scheduled delivery failed");
            self.tallies.push(Tally::Escalation);
            txn.audit(
                AuditKind::Escalation,
                schedule_links(),
                now,
                json!({"reason": format!("schedule {} could not deliver its {}: {why}", d.schedule, d.kind.as_str()), "schedule": d.schedule}),
            )?;
        }
        Ok(())
    }

    /// Indexes a block that just succeeded by its connector and target (sent or found in place:
    /// either way its case relies on the indicator staying blocked) and by its expiry time, if
    /// it has one (see [`Engine::block_expires_at`]). A block cordon found already in place (it
    /// sent nothing) is someone else's: it never expires by cordon's hand.
    pub(super) fn index_block_expiry(
        &self,
        txn: &mut Txn,
        a: &ActionRequest,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if a.kind != ActionKind::BlockIoc || a.state != ActionState::Succeeded {
            return Ok(());
        }
        txn.put(
            keys::block_standing(&a.connector, &a.target, &a.action_id),
            vec![],
        );
        if !Self::made_its_change(a) {
            return Ok(());
        }
        if let Some(at) = self.block_expires_at(txn, a, now)? {
            txn.put(keys::block_expiry(at, &a.action_id), vec![]);
        }
        Ok(())
    }

    /// Indexes, once per store, the blocks that succeeded before the `ib/` index existed (see
    /// [`Engine::index_block_expiry`]), so an expiry checks them too.
    pub(super) async fn build_block_index(&self) -> Result<(), StoreError> {
        super::queue::index_once(
            &self.parts.store,
            keys::BLOCKS_INDEXED,
            keys::ACTION_PREFIX,
            |txn, a: &ActionRequest| {
                if a.kind == ActionKind::BlockIoc
                    && a.state == ActionState::Succeeded
                    && a.rolled_back_by.is_none()
                {
                    txn.put(
                        keys::block_standing(&a.connector, &a.target, &a.action_id),
                        vec![],
                    );
                }
                Ok(())
            },
        )
        .await
    }

    /// When a block that succeeded at `since` is due to be undone: its step's
    /// `expires_after_mins` after `since`, or the intel that named the indicator when the alert
    /// was enriched (the latest `expires` of its matching indicators; none if one never
    /// expires), whichever comes first; `None`: never.
    fn block_expires_at(
        &self,
        txn: &Txn,
        a: &ActionRequest,
        since: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let by_step = crate::schedule::block_expiry(a.kind, &a.parameters)
            .ok()
            .flatten()
            .map(|d| since + d);
        let by_intel = match (
            crate::config::parse_entity_ref(&a.target.id),
            txn.get_json::<StoredAlert>(&self.parts.store, &keys::alert(&a.alert_id))?,
        ) {
            (Some(entity), Some(alert)) => {
                let intel = alert
                    .enrichment
                    .map(|r| r.intel(&entity))
                    .unwrap_or_default();
                if intel.is_empty() || intel.iter().any(|i| i.expires.is_none()) {
                    None
                } else {
                    intel.iter().filter_map(|i| i.expires).max()
                }
            }
            _ => None,
        };
        Ok(match (by_step, by_intel) {
            (Some(s), Some(i)) => Some(s.min(i)),
            (s, i) => s.or(i),
        })
    }

    /// The other blocks of `a`'s indicator at its connector that still stand at `now` (succeeded,
    /// not undone, their own expiry not reached), and the latest time one of them is due (`None`:
    /// one never is). Undoing `a` now would unblock the indicator they rely on.
    fn blocks_relying(
        &self,
        txn: &Txn,
        a: &ActionRequest,
        now: DateTime<Utc>,
    ) -> Result<Option<Relying>, StoreError> {
        let store = self.parts.store.clone();
        let prefix = keys::block_standing_prefix(&a.connector, &a.target);
        let mut relying = Vec::new();
        let mut until = Some(now);
        // Through the transaction: a block that succeeded in this batch, or in the commit in
        // flight, relies on the indicator too.
        for key in txn.keys_under(&store, &prefix)? {
            let Some(id) = key
                .strip_prefix(prefix.as_slice())
                .and_then(|id| std::str::from_utf8(id).ok())
            else {
                continue;
            };
            if id == a.action_id || id.contains('/') {
                continue;
            }
            let Some(b) = txn.get_json::<ActionRequest>(&store, &keys::action(id))? else {
                continue;
            };
            if b.kind != ActionKind::BlockIoc
                || b.connector != a.connector
                || b.target != a.target
                || b.state != ActionState::Succeeded
                || b.rolled_back_by.is_some()
            {
                continue;
            }
            let since = b
                .execution
                .as_ref()
                .and_then(|e| e.finished_at)
                .unwrap_or(b.updated_at);
            let due = self.block_expires_at(txn, &b, since)?;
            if due.is_some_and(|d| d <= now) {
                continue;
            }
            relying.push(b.action_id);
            until = match (until, due) {
                (Some(u), Some(d)) => Some(u.max(d)),
                _ => None,
            };
        }
        Ok((!relying.is_empty()).then_some(Relying { by: relying, until }))
    }

    /// Proposes the unblock of every block whose expiry has passed.
    pub(super) fn expire_blocks(
        &mut self,
        txn: &mut Txn,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let due = |key: &[u8]| -> Option<String> {
            let rest = std::str::from_utf8(key.strip_prefix(keys::BLOCK_EXPIRY_PREFIX)?).ok()?;
            let (ms, id) = rest.split_once('/')?;
            (ms.parse::<i64>().ok()? <= now.timestamp_millis()).then(|| id.to_string())
        };
        for key in store.keys_while(keys::BLOCK_EXPIRY_PREFIX, |k| due(k).is_some())? {
            let Some(id) = due(&key) else { continue };
            if txn.get(&store, &key)?.is_none() {
                continue;
            }
            txn.delete(key);
            let Some(a) = txn.get_json::<ActionRequest>(&store, &keys::action(&id))? else {
                continue;
            };
            if a.state != ActionState::Succeeded || a.rolled_back_by.is_some() {
                continue; // already released
            }
            // Another case's block of the same indicator stands (it found this one in place, so
            // it relies on it): undoing this one would unblock what that case still needs. The
            // unblock waits until the last of them is due (never, if one never is).
            if let Some(Relying { by, until }) = self.blocks_relying(txn, &a, now)? {
                txn.audit(
                    AuditKind::BlockExpired,
                    Self::links(&a),
                    now,
                    json!({"target": a.target, "expires_after_mins": a.parameters.get(crate::schedule::EXPIRY_PARAMETER),
                           "unblock": "postponed", "relied_on_by": by, "until": until}),
                )?;
                if let Some(until) = until {
                    txn.put(keys::block_expiry(until, &id), vec![]);
                }
                continue;
            }
            txn.audit(
                AuditKind::BlockExpired,
                Self::links(&a),
                now,
                json!({"target": a.target, "expires_after_mins": a.parameters.get(crate::schedule::EXPIRY_PARAMETER)}),
            )?;
            let why = "the block reached its expiry (its step's expires_after_mins, or its intel's expires)";
            if let ExecReply::Refused(r) = self.exec_rollback(txn, &id, EXPIRY_REQUESTER, why)? {
                self.escalate(
                    txn,
                    &a,
                    now,
                    &format!("the block expired but its unblock cannot be proposed: {r}"),
                )?;
            }
        }
        Ok(())
    }

    /// Runs a playbook against the targets currently contained: every host isolated, indicator
    /// blocked or cloud resource contained by a succeeded action not rolled back. Each step
    /// whose target kind matches is proposed in the case that contained the target (a step on
    /// the case runs once per such case), decided by the policies like any other.
    fn run_scheduled_playbook(
        &mut self,
        txn: &mut Txn,
        s: &Schedule,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let Some(pb) = self
            .parts
            .playbooks
            .iter()
            .find(|pb| Some(&pb.name) == s.playbook.as_ref())
            .cloned()
        else {
            return Ok(());
        };
        // The latest containment per (target kind, target id).
        let mut contained: std::collections::BTreeMap<(TargetKind, String), ActionRequest> =
            Default::default();
        for (_, a) in store.scan_json::<ActionRequest>(keys::ACTION_PREFIX, None, usize::MAX)? {
            let Some(a) = txn.get_json::<ActionRequest>(&store, &keys::action(&a.action_id))?
            else {
                continue;
            };
            let containing = matches!(
                a.kind,
                ActionKind::IsolateHost | ActionKind::BlockIoc | ActionKind::ContainCloudResource
            );
            if containing && a.state == ActionState::Succeeded && a.rolled_back_by.is_none() {
                contained.insert((a.target.kind, a.target.id.clone()), a);
            }
        }
        let mut cases_done = std::collections::BTreeSet::new();
        let mut proposed = 0usize;
        for orig in contained.values() {
            for step in &pb.steps {
                let target = match step.action.target_kind() {
                    TargetKind::Case => {
                        if cases_done.contains(&orig.case_id) {
                            continue;
                        }
                        Target {
                            kind: TargetKind::Case,
                            id: orig.case_id.clone(),
                        }
                    }
                    k if k == orig.target.kind => orig.target.clone(),
                    _ => continue,
                };
                self.propose_scheduled(txn, s, &pb, step, orig, target, due, now)?;
                proposed += 1;
            }
            cases_done.insert(orig.case_id.clone());
        }
        tracing::info!(schedule = %s.name, playbook = %pb.name, targets = contained.len(), proposed, "A scheduled playbook ran against the contained targets.");
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn propose_scheduled(
        &mut self,
        txn: &mut Txn,
        s: &Schedule,
        pb: &Playbook,
        step: &crate::playbook::Step,
        orig: &ActionRequest,
        target: Target,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let step_name = format!("{}@{}/{}", step.id, s.name, due.to_rfc3339());
        let idem = idempotency_key(&orig.case_id, &pb.name, &step_name, step.action, &target);
        let xi = keys::action_index(&orig.case_id, &idem);
        if txn.get(&store, &xi)?.is_some() {
            return Ok(());
        }
        let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(&orig.case_id))? else {
            return Ok(());
        };
        let input = orig.decision_input.clone();
        let mut context = input
            .as_ref()
            .map(|i| i.context.clone())
            .unwrap_or_default();
        context.insert("playbook".into(), json!(pb.name));
        context.insert("step".into(), json!(step_name));
        context.insert("reversible".into(), json!(step.action.inverse().is_some()));
        context.insert("time".into(), policy::time_context(now));
        let policy_engine = self.parts.policies.current();
        let resource_attrs = if target == orig.target {
            input.map(|i| i.resource_attrs).unwrap_or_default()
        } else {
            policy_engine.complete_attrs(&target, Default::default())
        };
        let action_id = self.next_id();
        let mut req = ActionRequest {
            action_id: action_id.clone(),
            case_id: orig.case_id.clone(),
            alert_id: orig.alert_id.clone(),
            playbook: pb.name.clone(),
            step: step_name.clone(),
            kind: step.action,
            connector: step.connector.clone(),
            target: target.clone(),
            parameters: step.parameters.clone(),
            on_failure: step.on_failure,
            state: ActionState::Proposed,
            tier: None,
            determining_policies: vec![],
            reasons: vec![],
            decision_seq: None,
            policy_hash: None,
            idempotency_key: idem,
            created_at: now,
            updated_at: now,
            requester: format!("schedule:{}", s.name),
            approval: None,
            decision_input: None,
            execution: None,
            rollback_of: None,
            rolled_back_by: None,
            chat: Vec::new(),
            chat_held: false,
            proposal: None,
        };
        txn.audit(AuditKind::ActionProposed, Self::links(&req), now, &req)?;
        let step_req = StepRequest {
            playbook: pb.name.clone(),
            family: pb.family.clone(),
            step: step_name,
            kind: step.action,
            target,
            resource_attrs,
            context,
        };
        self.decide_new(
            txn,
            &mut req,
            step_req,
            step.approval_timeout_mins,
            case.severity,
            now,
            None,
        )?;
        txn.put(xi, action_id.clone().into_bytes());
        txn.put_json(keys::action(&action_id), &req)?;
        case.action_ids.push(action_id);
        case.updated_at = now;
        queue::put_case(txn, &case)?;
        Ok(())
    }
}
