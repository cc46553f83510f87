//! Event `Vote`: an approval vote from any channel.
//!
//! Owns: the vote rules (identity from the channel, the requester never counts, one person
//! counts once, the vote binds to the request hash, one authorised deny rejects, the re-check at
//! the tier), and approval deadlines.

use super::*;

/// A vote as the API hands it to the engine.
#[derive(Debug, Clone)]
pub struct VoteCast {
    pub approval_id: String,
    pub user: String,
    /// grpc | slack | mattermost | teams
    pub channel: String,
    /// mtls | token | chat
    pub identity: String,
    pub approve: bool,
    /// The request hash the approver reviewed, if they sent it.
    pub request_hash: Option<String>,
    pub comment: String,
}

/// What a vote did.
#[derive(Debug, Clone, PartialEq)]
pub struct VoteOutcome {
    pub action: ActionRequest,
    /// counted | already_counted | approved | rejected
    pub outcome: &'static str,
    /// The action's case as the vote leaves it (read in the vote's own transaction, so a caller
    /// building its answer need not read the store after the commit).
    pub case: Option<crate::case::Case>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum VoteError {
    #[error("no approval request {0}")]
    NotFound(String),
    #[error("approval request {id} is {state}; it takes no more votes")]
    NotPending { id: String, state: ActionState },
    #[error("approval request {0} expired; it will never run")]
    Expired(String),
    #[error("the request changed since it was reviewed (now {current}); review it again")]
    RequestChanged { current: String },
    #[error("vote refused: {0}")]
    Refused(String),
    #[error("store unavailable: {0}")]
    Store(String),
}

impl Engine {
    /// Deadline length in minutes: the stricter of the determining policies'
    /// `@approval_timeout_mins` and the playbook step's `approval_timeout_mins`, else the
    /// configured default scaled by severity (critical ½, high 1, medium 2,
    /// low and informational 4).
    pub(super) fn timeout_mins(
        &self,
        from_policy: Option<u64>,
        severity: crate::alert::Severity,
    ) -> i64 {
        use crate::alert::Severity::*;
        let base = self.parts.approvals.default_timeout_mins as f64;
        let mins = from_policy.map(|m| m as f64).unwrap_or(match severity {
            Critical => base / 2.0,
            High => base,
            Medium => base * 2.0,
            Low | Informational => base * 4.0,
        });
        (mins.max(1.0)) as i64
    }

    pub(super) fn links(a: &ActionRequest) -> Links {
        Links {
            case_id: Some(a.case_id.clone()),
            alert_id: Some(a.alert_id.clone()),
            action_id: Some(a.action_id.clone()),
        }
    }

    /// Handles one vote. `Ok(Err(..))` is a refusal that was recorded; `Err` a store failure.
    /// An outcome carries the case as the vote leaves it.
    pub(super) fn vote(
        &mut self,
        txn: &mut Txn,
        v: &VoteCast,
    ) -> Result<Result<VoteOutcome, VoteError>, StoreError> {
        let mut decided = self.decide_vote(txn, v)?;
        if let Ok(out) = &mut decided {
            // Usually written by this vote (its first human action, or the case approved), so
            // read from the transaction, not the store.
            out.case = txn.get_json(&self.parts.store, &keys::case(&out.action.case_id))?;
        }
        Ok(decided)
    }

    fn decide_vote(
        &mut self,
        txn: &mut Txn,
        v: &VoteCast,
    ) -> Result<Result<VoteOutcome, VoteError>, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let Some(mut a) = txn.get_json::<ActionRequest>(&store, &keys::action(&v.approval_id))?
        else {
            return Ok(Err(VoteError::NotFound(v.approval_id.clone())));
        };
        let policy = self.parts.policies.current();
        let current_hash = a.request_hash(&policy.hash);
        let record = |txn: &mut Txn, a: &ActionRequest, outcome: &str, extra: serde_json::Value| {
            txn.audit(
                AuditKind::Vote,
                Self::links(a),
                now,
                json!({
                    "approval_id": a.action_id, "user": v.user, "channel": v.channel, "identity": v.identity,
                    "decision": if v.approve { "approve" } else { "deny" }, "request_hash": current_hash,
                    "reviewed_hash": v.request_hash, "comment": v.comment, "outcome": outcome, "detail": extra,
                }),
            )
        };
        // Past its deadline: expire it now (the timer may not have run yet).
        if a.state == ActionState::AwaitingApproval
            && a.approval.as_ref().is_some_and(|ap| now >= ap.deadline)
        {
            self.leave_pending(
                txn,
                &mut a,
                ActionState::Expired,
                now,
                "the approval deadline passed",
            )?;
            record(txn, &a, "refused_expired", json!(null))?;
            return Ok(Err(VoteError::Expired(a.action_id)));
        }
        if a.state != ActionState::AwaitingApproval {
            record(txn, &a, "refused_not_pending", json!({"state": a.state}))?;
            return Ok(Err(match a.state {
                ActionState::Expired => VoteError::Expired(a.action_id),
                state => VoteError::NotPending {
                    id: a.action_id,
                    state,
                },
            }));
        }
        if let Some(seen) = &v.request_hash
            && !seen.is_empty()
            && *seen != current_hash
        {
            record(txn, &a, "refused_request_changed", json!(null))?;
            return Ok(Err(VoteError::RequestChanged {
                current: current_hash,
            }));
        }
        let Some(ap) = a.approval.clone() else {
            return Ok(Err(VoteError::NotPending {
                id: a.action_id,
                state: a.state,
            }));
        };
        let counted = ap.approvals_for(&current_hash);
        if counted.contains(&v.user.as_str()) && v.approve {
            record(txn, &a, "already_counted", json!(null))?;
            return Ok(Ok(VoteOutcome {
                case: None,
                action: a,
                outcome: "already_counted",
            }));
        }
        let input = a.decision_input.clone();
        let (environment, criticality) = input
            .as_ref()
            .map(|i| {
                let s = |k: &str| {
                    i.resource_attrs
                        .get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or("unknown")
                        .to_string()
                };
                (s("environment"), s("criticality"))
            })
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        let check = policy.authorize_vote(&policy::VoteRequest {
            user: v.user.clone(),
            channel: v.channel.clone(),
            identity: v.identity.clone(),
            approvals: counted.len() as u8,
            approval: policy::ApprovalInfo {
                approval_id: a.action_id.clone(),
                action_kind: a.kind,
                target: a.target.clone(),
                requester: a.requester.clone(),
                case_id: a.case_id.clone(),
                tier: a.tier.unwrap_or(Tier::Denied),
                environment,
                criticality,
            },
        });
        let check_json = serde_json::to_value(&check.record).unwrap_or_default();
        if check.allowed {
            self.note_human_action(txn, &a.case_id, now)?;
        }
        if !check.allowed {
            let why = check.refusal.clone().unwrap_or_default();
            record(
                txn,
                &a,
                "refused",
                json!({"reason": why, "decision": check_json}),
            )?;
            return Ok(Err(VoteError::Refused(why)));
        }
        let mut ap = ap;
        ap.votes.push(crate::action::VoteRecord {
            user: v.user.clone(),
            channel: v.channel.clone(),
            identity: v.identity.clone(),
            decision: if v.approve { "approve" } else { "deny" }.into(),
            at: now,
            request_hash: current_hash.clone(),
            comment: v.comment.clone(),
        });
        a.approval = Some(ap.clone());
        a.updated_at = now;
        if !v.approve {
            record(txn, &a, "rejected", json!({"decision": check_json}))?;
            self.leave_pending(
                txn,
                &mut a,
                ActionState::Rejected,
                now,
                &format!("denied by {} over {}", v.user, v.channel),
            )?;
            return Ok(Ok(VoteOutcome {
                case: None,
                action: a,
                outcome: "rejected",
            }));
        }
        let given = ap.approvals_for(&current_hash).len() as u8;
        if given < ap.needed {
            record(
                txn,
                &a,
                "counted",
                json!({"decision": check_json, "approvals": given, "needed": ap.needed}),
            )?;
            txn.put_json(keys::action(&a.action_id), &a)?;
            self.changed.push(a.clone());
            return Ok(Ok(VoteOutcome {
                case: None,
                action: a,
                outcome: "counted",
            }));
        }
        record(
            txn,
            &a,
            "counted",
            json!({"decision": check_json, "approvals": given, "needed": ap.needed}),
        )?;
        // Enough votes: re-evaluate the step with the real approvals; only an Allow counts.
        let Some(input) = input else {
            self.leave_pending(
                txn,
                &mut a,
                ActionState::Denied,
                now,
                "no stored decision input to re-check (fail closed)",
            )?;
            return Ok(Ok(VoteOutcome {
                case: None,
                action: a,
                outcome: "counted",
            }));
        };
        let (allowed, rec) = policy.recheck(stored_step(&a, &input), given);
        let seq = txn.audit(
            AuditKind::PolicyDecision,
            Self::links(&a),
            now,
            json!({"phase": "approvals_reached", "approvals": given, "allowed": allowed, "record": rec}),
        )?;
        a.decision_seq = Some(seq);
        if allowed {
            self.leave_pending(
                txn,
                &mut a,
                ActionState::Approved,
                now,
                &format!("{given} distinct authorised approval(s); policy re-check allowed"),
            )?;
            Ok(Ok(VoteOutcome {
                case: None,
                action: a,
                outcome: "approved",
            }))
        } else {
            // The policy in force now wants more (or denies): keep waiting if more votes could
            // still satisfy it, else deny.
            let fresh = policy.decide_step(stored_step(&a, &input));
            match fresh.tier.approvals_needed() {
                Some(n) if n > given => {
                    if let Some(ap) = a.approval.as_mut() {
                        ap.needed = n;
                    }
                    a.tier = Some(fresh.tier);
                    txn.put_json(keys::action(&a.action_id), &a)?;
                    self.changed.push(a.clone());
                    Ok(Ok(VoteOutcome {
                        case: None,
                        action: a,
                        outcome: "counted",
                    }))
                }
                _ => {
                    self.leave_pending(
                        txn,
                        &mut a,
                        ActionState::Denied,
                        now,
                        "the policy re-check with the real approvals denied it",
                    )?;
                    Ok(Ok(VoteOutcome {
                        case: None,
                        action: a,
                        outcome: "counted",
                    }))
                }
            }
        }
    }
}

/// The Cedar step request an action was decided with, rebuilt from what is stored with it: what
/// every re-check (approvals reached, before execution, before a resend) asks again.
pub(super) fn stored_step(a: &ActionRequest, input: &crate::action::DecisionInput) -> StepRequest {
    StepRequest {
        playbook: a.playbook.clone(),
        family: input.family.clone(),
        step: a.step.clone(),
        kind: a.kind,
        target: a.target.clone(),
        resource_attrs: input.resource_attrs.clone(),
        context: input.context.clone(),
    }
}
