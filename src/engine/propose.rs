//! What AI agents ask of the engine: proposals, findings, and the record of every call.
//!
//! Owns: turning an agent's checked proposal into an ordinary action request (same tiers,
//! approvals, executor and idempotency keys as a playbook's step, with the agent as principal
//! and its hypothesis and citations kept for approvers), adding AI-generated findings to a case
//! (they never change its state), the open-proposal cap per case, and the `agent_call` audit
//! record every call leaves, accepted or refused. A refused call writes that record and nothing
//! else.

use std::collections::BTreeSet;

use super::*;
use crate::action::{OnFailure, Target};
use crate::agent::{self, AgentError, Citation, Finding, Proposal, ProposalNote};
use crate::store::AuditRecord;

/// Key of a finding: `af/<case id>/<audit seq>`.
fn finding_key(case_id: &str, seq: u64) -> Vec<u8> {
    format!("af/{case_id}/{seq:020}").into_bytes()
}

fn findings_prefix(case_id: &str) -> Vec<u8> {
    format!("af/{case_id}/").into_bytes()
}

/// Who is calling, and through what.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    pub agent: String,
    /// `grpc`, `http` or `mcp`.
    pub via: &'static str,
    /// The agent's `max_open_proposals_per_case`.
    pub max_open_proposals_per_case: u32,
}

/// An agent's call, for the engine.
pub enum AgentOp {
    Propose {
        caller: AgentCaller,
        case_id: String,
        proposal: Box<Proposal>,
    },
    Finding {
        caller: AgentCaller,
        case_id: String,
        finding: Box<Finding>,
        citations: Vec<Citation>,
    },
    /// A call that changes no state (a read tool), or one refused before reaching the engine
    /// (wrong role, rate limit, bad input): recorded only.
    Record {
        caller: AgentCaller,
        call: String,
        case_id: Option<String>,
        refused: Option<String>,
    },
}

/// The engine's answer to an [`AgentOp`].
#[derive(Debug)]
pub enum AgentReply {
    Proposed {
        action: Box<ActionRequest>,
        /// The same proposal was already made: this is the request it made.
        duplicate: bool,
    },
    FindingAdded {
        seq: u64,
    },
    Recorded,
    Refused(AgentError),
}

/// The AI-generated findings on a case, oldest first.
pub fn findings(store: &Store, case_id: &str) -> Result<Vec<Finding>, StoreError> {
    Ok(store
        .scan_json::<Finding>(&findings_prefix(case_id), None, 1000)?
        .into_iter()
        .map(|(_, f)| f)
        .collect())
}

impl EngineHandle {
    /// Hands an agent's call to the engine; answers once it (or its refusal) is durable.
    pub async fn agent(&self, op: AgentOp) -> Result<AgentReply, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Agent { op, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }
}

impl Engine {
    pub(super) fn agent(&mut self, txn: &mut Txn, op: AgentOp) -> Result<AgentReply, StoreError> {
        let now = (self.parts.clock)();
        match op {
            AgentOp::Record {
                caller,
                call,
                case_id,
                refused,
            } => {
                let links = Links {
                    case_id,
                    ..Links::default()
                };
                let outcome = if refused.is_some() { "refused" } else { "ok" };
                txn.audit(
                    AuditKind::AgentCall,
                    links,
                    now,
                    json!({"agent": caller.agent, "via": caller.via, "call": call, "outcome": outcome, "reason": refused}),
                )?;
                Ok(AgentReply::Recorded)
            }
            AgentOp::Propose {
                caller,
                case_id,
                proposal,
            } => {
                let r = self.propose(txn, &caller, &case_id, &proposal, now)?;
                let (outcome, detail) = match &r {
                    Ok((a, dup)) => (
                        if *dup { "duplicate" } else { "accepted" },
                        json!({"action_id": a.action_id, "tier": a.tier, "state": a.state}),
                    ),
                    Err(e) => ("refused", json!({"reason": e.to_string()})),
                };
                let action_id = r.as_ref().ok().map(|(a, _)| a.action_id.clone());
                txn.audit(
                    AuditKind::AgentCall,
                    Links {
                        case_id: Some(case_id.clone()),
                        alert_id: None,
                        action_id,
                    },
                    now,
                    json!({
                        "agent": caller.agent, "via": caller.via, "call": "propose_action",
                        "outcome": outcome, "action": proposal.kind, "target": proposal.target,
                        "hypothesis": proposal.hypothesis, "confidence": proposal.confidence,
                        "citations": proposal.citations.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "detail": detail,
                    }),
                )?;
                Ok(match r {
                    Ok((a, duplicate)) => AgentReply::Proposed {
                        action: Box::new(a),
                        duplicate,
                    },
                    Err(e) => AgentReply::Refused(e),
                })
            }
            AgentOp::Finding {
                caller,
                case_id,
                finding,
                citations,
            } => {
                let checked = self
                    .case_evidence(txn, &case_id)?
                    .and_then(|(case, facts)| {
                        self.check_cites(&case, facts, &citations).map(|()| case)
                    });
                let links = Links {
                    case_id: Some(case_id.clone()),
                    ..Links::default()
                };
                match checked {
                    Err(e) => {
                        txn.audit(
                            AuditKind::AgentCall,
                            links,
                            now,
                            json!({"agent": caller.agent, "via": caller.via, "call": "add_finding", "outcome": "refused", "reason": e.to_string()}),
                        )?;
                        Ok(AgentReply::Refused(e))
                    }
                    Ok(_) => {
                        let seq =
                            txn.audit(AuditKind::AgentFinding, links.clone(), now, &finding)?;
                        txn.put_json(finding_key(&case_id, seq), &finding)?;
                        txn.audit(
                            AuditKind::AgentCall,
                            links,
                            now,
                            json!({"agent": caller.agent, "via": caller.via, "call": "add_finding", "outcome": "accepted", "finding_seq": seq}),
                        )?;
                        Ok(AgentReply::FindingAdded { seq })
                    }
                }
            }
        }
    }

    /// The case and the entities enrichment knows facts about in its alerts.
    #[allow(clippy::type_complexity)]
    fn case_evidence(
        &self,
        txn: &Txn,
        case_id: &str,
    ) -> Result<Result<(Case, BTreeSet<String>), AgentError>, StoreError> {
        let store = &self.parts.store;
        let Some(case) = txn.get_json::<Case>(store, &keys::case(case_id))? else {
            return Ok(Err(AgentError::CaseNotFound(
                crate::ingest::clip(case_id, 128).into_owned(),
            )));
        };
        let mut facts = BTreeSet::new();
        for id in &case.alert_ids {
            if let Some(a) = txn.get_json::<StoredAlert>(store, &keys::alert(id))?
                && let Some(r) = &a.enrichment
            {
                facts.extend(r.facts.iter().map(|f| f.entity.key()));
            }
        }
        Ok(Ok((case, facts)))
    }

    fn check_cites(
        &self,
        case: &Case,
        facts: BTreeSet<String>,
        cites: &[Citation],
    ) -> Result<(), AgentError> {
        let store = self.parts.store.clone();
        let mut record_case = |seq: u64| -> Option<Option<String>> {
            let recs: Vec<AuditRecord> = store.audit_records(seq, 1).ok()?;
            let r = recs.into_iter().next().filter(|r| r.body.seq == seq)?;
            Some(r.body.case_id)
        };
        agent::check_citations(
            &agent::CaseEvidence { case, facts },
            cites,
            &mut record_case,
        )
    }

    /// An agent's proposal: `Ok(Err(..))` is a refusal (nothing written here), else the
    /// request it made (or had made before: the same proposal twice is one request).
    fn propose(
        &mut self,
        txn: &mut Txn,
        caller: &AgentCaller,
        case_id: &str,
        p: &Proposal,
        now: DateTime<Utc>,
    ) -> Result<Result<(ActionRequest, bool), AgentError>, StoreError> {
        let store = self.parts.store.clone();
        let (mut case, facts) = match self.case_evidence(txn, case_id)? {
            Ok(x) => x,
            Err(e) => return Ok(Err(e)),
        };
        if matches!(case.state, CaseState::Closed | CaseState::Suppressed) {
            return Ok(Err(AgentError::CaseNotOpen(case.case_id.clone())));
        }
        if let Err(e) = self.check_cites(&case, facts, &p.citations) {
            return Ok(Err(e));
        }
        let target: Target = match agent::resolve_target(p.kind, &p.target, &case) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = self.parts.connectors.check(&p.connector, p.kind) {
            return Ok(Err(AgentError::Invalid(format!("connector: {e}"))));
        }
        let principal = format!("{}{}", agent::PRINCIPAL_PREFIX, caller.agent);
        // The step names what was proposed, so a different set of parameters is a different
        // request and the same proposal again is the same one.
        let params = serde_json::to_string(&p.parameters).unwrap_or_default();
        let digest = crate::action::idempotency_key(&params, "", "", p.kind, &target);
        let step = format!("proposal-{}", &digest[..digest.len().min(12)]);
        let idem = idempotency_key(&case.case_id, &principal, &step, p.kind, &target);
        let xi = keys::action_index(&case.case_id, &idem);
        if let Some(id) = txn.get(&store, &xi)? {
            let id = String::from_utf8_lossy(&id).into_owned();
            if let Some(a) = txn.get_json::<ActionRequest>(&store, &keys::action(&id))? {
                return Ok(Ok((a, true)));
            }
        }
        let mut open = 0u32;
        for id in &case.action_ids {
            if let Some(a) = txn.get_json::<ActionRequest>(&store, &keys::action(id))?
                && a.playbook == principal
                && matches!(
                    a.state,
                    ActionState::Proposed | ActionState::AwaitingApproval
                )
            {
                open += 1;
            }
        }
        if open >= caller.max_open_proposals_per_case {
            return Ok(Err(AgentError::TooManyOpen {
                agent: caller.agent.clone(),
                case_id: case.case_id.clone(),
                max: caller.max_open_proposals_per_case,
            }));
        }
        if case.action_ids.len() >= self.parts.cases.max_actions_per_case {
            return Ok(Err(AgentError::Invalid(format!(
                "case {} already holds {} action requests (cases.max_actions_per_case)",
                case.case_id, self.parts.cases.max_actions_per_case
            ))));
        }
        // The decision context is the case's latest alert, as for a playbook step.
        let Some(alert_id) = case.alert_ids.last().cloned() else {
            return Ok(Err(AgentError::Invalid(format!(
                "case {} has no alert",
                case.case_id
            ))));
        };
        let Some(stored) = txn.get_json::<StoredAlert>(&store, &keys::alert(&alert_id))? else {
            return Ok(Err(AgentError::Invalid(format!(
                "case {} has no stored alert",
                case.case_id
            ))));
        };
        let report = stored
            .enrichment
            .clone()
            .unwrap_or_else(|| EnrichmentReport {
                at: now,
                facts: vec![],
                failures: vec![],
            });
        let action_id = self.next_id();
        let mut req = ActionRequest {
            action_id: action_id.clone(),
            case_id: case.case_id.clone(),
            alert_id: alert_id.clone(),
            playbook: principal.clone(),
            step: step.clone(),
            kind: p.kind,
            connector: p.connector.clone(),
            target: target.clone(),
            parameters: p.parameters.clone(),
            on_failure: OnFailure::Escalate,
            state: ActionState::Proposed,
            tier: None,
            determining_policies: vec![],
            reasons: vec![],
            decision_seq: None,
            policy_hash: None,
            idempotency_key: idem,
            created_at: now,
            updated_at: now,
            requester: principal.clone(),
            approval: None,
            decision_input: None,
            execution: None,
            rollback_of: None,
            rolled_back_by: None,
            chat: Vec::new(),
            chat_held: false,
            proposal: Some(ProposalNote {
                agent: caller.agent.clone(),
                hypothesis: p.hypothesis.clone(),
                confidence: p.confidence,
                citations: p.citations.iter().map(ToString::to_string).collect(),
                ai_generated: true,
            }),
        };
        txn.audit(AuditKind::ActionProposed, Self::links(&req), now, &req)?;
        let policy_engine = self.parts.policies.current();
        let step_req = StepRequest {
            playbook: principal.clone(),
            family: crate::agent::FAMILY.into(),
            step: step.clone(),
            kind: p.kind,
            target: target.clone(),
            resource_attrs: policy_engine.complete_attrs(
                &target,
                policy::enriched_attrs(
                    &target,
                    &report,
                    case.alert_ids.len() as u64,
                    case.severity.id(),
                ),
            ),
            context: policy::step_context(
                &stored.alert.fields,
                &stored.alert.source,
                policy::CaseInfo {
                    id: &case.case_id,
                    alert_count: case.alert_ids.len() as u64,
                    entity_count: case.entities.len(),
                },
                &report,
                policy::StepInfo {
                    playbook: &principal,
                    step: &step,
                    kind: p.kind,
                },
                now,
            ),
        };
        self.decide_new(txn, &mut req, step_req, None, case.severity, now, None)?;
        if self.parts.chat && req.state == ActionState::AwaitingApproval {
            if case.chat_requests as usize >= self.parts.cases.max_chat_requests_per_case {
                req.chat_held = true;
            } else {
                case.chat_requests += 1;
            }
        }
        txn.put(xi, action_id.clone().into_bytes());
        txn.put_json(keys::action(&action_id), &req)?;
        case.action_ids.push(action_id);
        case.updated_at = now;
        if req.state != ActionState::Denied
            && matches!(case.state, CaseState::Correlated | CaseState::Approved)
        {
            self.transition(
                txn,
                &mut case,
                CaseState::Recommended,
                now,
                &format!("an action was proposed by agent {}", caller.agent),
                &alert_id,
            )?;
        }
        self.approve_case_if_decided(txn, &mut case, now, &alert_id)?;
        queue::put_case(txn, &case)?;
        Ok(Ok((req, false)))
    }
}

/// Why a front call failed: a refusal (recorded, nothing else changed) or the engine.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error(transparent)]
    Refused(#[from] AgentError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The one way in for agents, shared by gRPC (`api::agents`), HTTP (`http::agents`) and MCP
/// (`mcp`): the call-rate window, the input checks, and the engine call. Every call an agent
/// makes, accepted or refused, leaves an `agent_call` record with its name.
#[derive(Clone)]
pub struct AgentFront {
    pub engine: EngineHandle,
    pub store: Store,
    pub agents: Arc<agent::Agents>,
}

impl AgentFront {
    fn caller(a: &agent::Agent, via: &'static str) -> AgentCaller {
        AgentCaller {
            agent: a.name.clone(),
            via,
            max_open_proposals_per_case: a.max_open_proposals_per_case,
        }
    }

    /// Records a refusal made before the engine saw the call, and returns it.
    async fn refuse(
        &self,
        caller: AgentCaller,
        call: &str,
        case_id: Option<&str>,
        e: AgentError,
    ) -> FrontError {
        let op = AgentOp::Record {
            caller,
            call: call.to_string(),
            case_id: case_id.map(|c| crate::ingest::clip(c, 128).into_owned()),
            refused: Some(e.to_string()),
        };
        match self.engine.agent(op).await {
            Ok(_) => FrontError::Refused(e),
            Err(err) => FrontError::Engine(err),
        }
    }

    /// Rate window first: an agent over its budget is refused (and that is recorded) before
    /// anything else is looked at.
    async fn admit(
        &self,
        a: &agent::Agent,
        via: &'static str,
        call: &str,
        case_id: Option<&str>,
    ) -> Result<AgentCaller, FrontError> {
        let caller = Self::caller(a, via);
        if let Err(e) = self.agents.admit(a, Utc::now()) {
            return Err(self.refuse(caller, call, case_id, e).await);
        }
        Ok(caller)
    }

    pub async fn propose(
        &self,
        a: &agent::Agent,
        via: &'static str,
        case_id: &str,
        input: agent::ProposalInput,
    ) -> Result<(ActionRequest, bool), FrontError> {
        let caller = self.admit(a, via, "propose_action", Some(case_id)).await?;
        let proposal = match input.check() {
            Ok(p) => p,
            Err(e) => {
                return Err(self
                    .refuse(caller, "propose_action", Some(case_id), e)
                    .await);
            }
        };
        let op = AgentOp::Propose {
            caller,
            case_id: case_id.to_string(),
            proposal: Box::new(proposal),
        };
        match self.engine.agent(op).await? {
            AgentReply::Proposed { action, duplicate } => Ok((*action, duplicate)),
            AgentReply::Refused(e) => Err(FrontError::Refused(e)),
            _ => Err(FrontError::Engine(EngineError::Store(
                "unexpected engine reply".into(),
            ))),
        }
    }

    pub async fn add_finding(
        &self,
        a: &agent::Agent,
        via: &'static str,
        case_id: &str,
        input: agent::FindingInput,
    ) -> Result<u64, FrontError> {
        let caller = self.admit(a, via, "add_finding", Some(case_id)).await?;
        let (finding, citations) = match input.check(&a.name, Utc::now()) {
            Ok(x) => x,
            Err(e) => return Err(self.refuse(caller, "add_finding", Some(case_id), e).await),
        };
        let op = AgentOp::Finding {
            caller,
            case_id: case_id.to_string(),
            finding: Box::new(finding),
            citations,
        };
        match self.engine.agent(op).await? {
            AgentReply::FindingAdded { seq } => Ok(seq),
            AgentReply::Refused(e) => Err(FrontError::Refused(e)),
            _ => Err(FrontError::Engine(EngineError::Store(
                "unexpected engine reply".into(),
            ))),
        }
    }

    /// A call that reads only (MCP `list_cases`, `get_case`, `get_action`): counted against
    /// the rate window and recorded before it is answered.
    pub async fn read(
        &self,
        a: &agent::Agent,
        via: &'static str,
        call: &str,
        case_id: Option<&str>,
    ) -> Result<(), FrontError> {
        let caller = self.admit(a, via, call, case_id).await?;
        let op = AgentOp::Record {
            caller,
            call: call.to_string(),
            case_id: case_id.map(|c| crate::ingest::clip(c, 128).into_owned()),
            refused: None,
        };
        self.engine.agent(op).await?;
        Ok(())
    }

    /// An agent tried what agents may never do (vote, approve, close, read the approval
    /// queue): recorded as refused, with the agent's name.
    pub async fn refuse_role(&self, a: &agent::Agent, via: &'static str, what: &str) -> FrontError {
        let e = AgentError::NotForAgents("vote, approve or close");
        self.refuse(Self::caller(a, via), what, None, e).await
    }

    /// A refusal of bad input seen by the transport (a malformed body, a bad `parameters_json`,
    /// arguments that do not fit a tool's schema, an unknown tool, a case or action that does
    /// not exist). It counts against the rate window like any call, so malformed calls cannot
    /// flood the audit store: over the limit, the rate refusal is what is recorded.
    pub async fn refuse_input(
        &self,
        a: &agent::Agent,
        via: &'static str,
        call: &str,
        case_id: Option<&str>,
        why: String,
    ) -> FrontError {
        let caller = match self.admit(a, via, call, case_id).await {
            Ok(c) => c,
            Err(e) => return e,
        };
        self.refuse(caller, call, case_id, AgentError::Invalid(why))
            .await
    }
}

impl std::fmt::Debug for AgentFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentFront").finish_non_exhaustive()
    }
}

/// The audit records of one action, in chain order (its `explain` until `cordon explain`
/// exists): read from just before its decision record, at most 5,000 records scanned and 200
/// returned.
pub fn action_records(store: &Store, a: &ActionRequest) -> Result<Vec<AuditRecord>, StoreError> {
    let from = a.decision_seq.unwrap_or(1).saturating_sub(8).max(1);
    let mut out = Vec::new();
    let mut next = from;
    let mut scanned = 0usize;
    while scanned < 5000 && out.len() < 200 {
        let page = store.audit_records(next, 500)?;
        let Some(last) = page.last() else {
            break;
        };
        next = last.body.seq + 1;
        scanned += page.len();
        out.extend(
            page.into_iter()
                .filter(|r| r.body.action_id.as_deref() == Some(a.action_id.as_str())),
        );
    }
    out.truncate(200);
    Ok(out)
}
