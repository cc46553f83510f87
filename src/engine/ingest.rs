//! Event `Ingest`: from a parsed alert to a durable case with decided action requests.
//!
//! Owns: the ingest pipeline (source-id and fingerprint dedup → correlate → suppress → enrich →
//! playbooks propose → policy decides each step), the stored alert's shape, and the fan-out
//! bounds (entities per alert, actions and chat requests per case: the excess is recorded and
//! the case escalated once per bound).

use super::*;

/// An alert as stored: the normalized alert plus what cordon made of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredAlert {
    #[serde(flatten)]
    pub alert: Alert,
    pub case_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed_by: Option<String>,
    /// Audit sequence of its `alert_received` record (which holds the raw payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<EnrichmentReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FingerprintEntry {
    alert_id: String,
    case_id: String,
    at: DateTime<Utc>,
}

/// The answer to an accepted alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IngestAck {
    pub alert_id: String,
    pub case_id: String,
    pub duplicate: bool,
}

/// A fan-out bound (`[cases]`): what one alert or case may set in motion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    EntitiesPerAlert,
    ActionsPerCase,
    ChatRequestsPerCase,
}

impl Limit {
    fn as_str(self) -> &'static str {
        match self {
            Limit::EntitiesPerAlert => "entities_per_alert",
            Limit::ActionsPerCase => "actions_per_case",
            Limit::ChatRequestsPerCase => "chat_requests_per_case",
        }
    }

    fn reason(self, d: &serde_json::Value) -> String {
        match self {
            Limit::EntitiesPerAlert => format!(
                "an alert named {} entities; playbooks acted on the first {} (cases.max_entities_per_alert)",
                d["given"], d["max"]
            ),
            Limit::ActionsPerCase => format!(
                "the case reached {} action requests; {} more were not proposed (cases.max_actions_per_case)",
                d["max"], d["not_proposed"]
            ),
            Limit::ChatRequestsPerCase => format!(
                "the case has {} approval requests in chat; {} more wait in `cordon approvals list` (cases.max_chat_requests_per_case)",
                d["max"], d["not_posted"]
            ),
        }
    }
}

impl Engine {
    pub(super) fn ingest(
        &mut self,
        txn: &mut Txn,
        format: IngestFormat,
        fields: &AlertFields,
        raw: String,
        received_at: DateTime<Utc>,
    ) -> Result<IngestAck, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        let source = format.as_str();

        // 1. The same alert again (a SIEM retry): answer with the original ids.
        let sk = keys::source_id(source, &fields.source_alert_id);
        if let Some(orig) = txn.get(&store, &sk)? {
            let orig_id = String::from_utf8_lossy(&orig).to_string();
            if let Some(orig_alert) = txn.get_json::<StoredAlert>(&store, &keys::alert(&orig_id))? {
                let case_id = orig_alert.case_id.clone();
                txn.audit(
                    AuditKind::AlertReceived,
                    Links { case_id: Some(case_id.clone()), alert_id: Some(orig_id.clone()), action_id: None },
                    now,
                    json!({"source": source, "received_at": received_at, "raw": raw, "duplicate_of": orig_id, "why": "same source and source alert id"}),
                )?;
                if let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(&case_id))? {
                    case.duplicate_count += 1;
                    case.updated_at = now;
                    queue::put_case(txn, &case)?;
                }
                return Ok(IngestAck {
                    alert_id: orig_id,
                    case_id,
                    duplicate: true,
                });
            }
        }

        // Fan-out bound: playbooks act on at most `max_entities_per_alert` entities. The raw
        // payload keeps them all; the excess is recorded and escalated below.
        let max_entities = self.parts.cases.max_entities_per_alert;
        let capped;
        let (fields, entities_over) = if fields.entities.len() > max_entities {
            let mut f = fields.clone();
            let over: Vec<String> = f
                .entities
                .split_off(max_entities)
                .iter()
                .map(|e| e.key())
                .collect();
            capped = f;
            (&capped, over)
        } else {
            (fields, Vec::new())
        };

        let alert_id = self.next_id();
        let alert = Alert {
            alert_id: alert_id.clone(),
            received_at,
            source: source.to_string(),
            fields: fields.clone(),
            raw_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(raw.as_bytes())),
        };
        let links = |case_id: &str| Links {
            case_id: Some(case_id.to_string()),
            alert_id: Some(alert_id.clone()),
            action_id: None,
        };

        // 2. Same content within the dedup window: a duplicate in the same case.
        let fp = fields.fingerprint();
        let fpk = keys::fingerprint(&fp);
        if let Some(entry) = txn.get_json::<FingerprintEntry>(&store, &fpk)?
            && now - entry.at <= Duration::seconds(secs(self.parts.cases.dedup_window_secs))
            && let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(&entry.case_id))?
            && case.state != CaseState::Closed
        {
            let received_seq = txn.audit(
                AuditKind::AlertReceived,
                links(&case.case_id),
                now,
                json!({"source": source, "received_at": received_at, "raw": raw, "alert": alert, "duplicate_of": entry.alert_id, "why": "same fingerprint within the dedup window"}),
            )?;
            case.alert_ids.push(alert_id.clone());
            case.duplicate_count += 1;
            case.updated_at = now;
            queue::put_case(txn, &case)?;
            txn.put(sk, alert_id.clone().into_bytes());
            let stored = StoredAlert {
                alert,
                case_id: case.case_id.clone(),
                duplicate_of: Some(entry.alert_id),
                suppressed_by: None,
                received_seq: Some(received_seq),
                enrichment: None,
            };
            txn.put_json(keys::alert(&alert_id), &stored)?;
            return Ok(IngestAck {
                alert_id,
                case_id: case.case_id,
                duplicate: true,
            });
        }

        // 3. Correlate: an open case that shares a strong entity (or, in `rule_and_entity`
        //    mode, the same rule and first entity) within the window.
        let super::correlate::Correlation { joined, why } = self.correlate(txn, fields, now)?;
        let is_new = joined.is_none();
        let mut case = match joined {
            Some(c) => c,
            None => {
                let case_id = self.next_id();
                Self::new_case(case_id, fields, now)
            }
        };
        let case_id = case.case_id.clone();
        let received_seq = txn.audit(
            AuditKind::AlertReceived,
            links(&case_id),
            now,
            json!({"source": source, "received_at": received_at, "raw": raw, "alert": alert}),
        )?;
        if is_new {
            Self::record_opened(txn, &case, &alert_id, now)?;
            self.bump_open(txn, 1)?;
        } else {
            txn.audit(
                AuditKind::AlertCorrelated,
                links(&case_id),
                now,
                json!({"mode": self.parts.correlation.mode, "why": why, "correlation_key": fields.correlation_key(), "case_state": case.state}),
            )?;
        }
        case.correlation.push(crate::case::Joined {
            alert_id: alert_id.clone(),
            at: now,
            why: why.clone(),
        });
        if !entities_over.is_empty() {
            let detail = json!({
                "max": max_entities,
                "given": max_entities + entities_over.len(),
                "not_acted_on": entities_over.len(),
                "first_not_acted_on": entities_over.iter().take(20).collect::<Vec<_>>(),
                "note": "the raw alert (alert_received) keeps every entity",
            });
            self.limit_hit(
                txn,
                &mut case,
                Limit::EntitiesPerAlert,
                &alert_id,
                now,
                detail,
            )?;
        }
        case.alert_ids.push(alert_id.clone());
        case.severity = case.severity.max(fields.severity);
        self.index_sla(txn, &mut case);
        for e in &fields.entities {
            if !case.entities.contains(e) {
                case.entities.push(e.clone());
            }
        }
        case.updated_at = now;
        txn.put(sk, alert_id.clone().into_bytes());
        txn.put_json(
            fpk,
            &FingerprintEntry {
                alert_id: alert_id.clone(),
                case_id: case_id.clone(),
                at: now,
            },
        )?;
        self.index_correlation(txn, fields, &case_id, now)?;
        let mut stored = StoredAlert {
            alert,
            case_id: case_id.clone(),
            duplicate_of: None,
            suppressed_by: None,
            received_seq: Some(received_seq),
            enrichment: None,
        };

        // 4. Suppression.
        if let Some(s) = crate::suppress::find(&self.parts.suppressions, fields, now) {
            txn.audit(
                AuditKind::AlertSuppressed,
                links(&case_id),
                now,
                json!({"suppression": s.id, "reason": s.reason, "owner": s.owner, "expires": s.expires}),
            )?;
            stored.suppressed_by = Some(s.id.clone());
            if is_new {
                case.suppressed_by = Some(Suppressed {
                    id: s.id.clone(),
                    reason: s.reason.clone(),
                    owner: s.owner.clone(),
                });
                let reason = format!("suppressed by {} ({}; owner {})", s.id, s.reason, s.owner);
                self.transition(
                    txn,
                    &mut case,
                    CaseState::Suppressed,
                    now,
                    &reason,
                    &alert_id,
                )?;
                self.bump_open(txn, -1)?;
            }
            txn.put_json(keys::alert(&alert_id), &stored)?;
            queue::put_case(txn, &case)?;
            return Ok(IngestAck {
                alert_id,
                case_id,
                duplicate: false,
            });
        }

        // 5. Enrichment: its failure is recorded on its own and never drops the alert.
        let report = self.parts.enricher.enrich(fields, now);
        txn.audit(AuditKind::Enrichment, links(&case_id), now, &report)?;
        if !report.failures.is_empty() {
            self.tallies
                .push(Tally::EnrichmentFailures(report.failures.len() as u64));
            txn.audit(
                AuditKind::EnrichmentFailed,
                links(&case_id),
                now,
                json!({"failures": report.failures}),
            )?;
        }
        if is_new {
            self.transition(
                txn,
                &mut case,
                CaseState::Enriched,
                now,
                "asset, identity and intel context attached",
                &alert_id,
            )?;
            self.transition(txn, &mut case, CaseState::Correlated, now, &why, &alert_id)?;
        }

        // 6. Playbooks propose; 7. policy decides each step.
        let policy_engine = self.parts.policies.current();
        let mut new_actions = 0;
        let (mut not_proposed, mut chat_held) = (0usize, 0usize);
        let max_actions = self.parts.cases.max_actions_per_case;
        let max_chat = self.parts.cases.max_chat_requests_per_case;
        let playbooks = self.parts.playbooks.clone();
        // What every step of this alert shares is recorded once (`decision_input`) and named by
        // hash from each decision.
        let shared_ctx = policy::alert_context(
            fields,
            source,
            policy::CaseInfo {
                id: &case_id,
                alert_count: case.alert_ids.len() as u64,
                entity_count: case.entities.len(),
            },
            &report,
            now,
        );
        let mut share = ShareState::new(shared_ctx, links(&case_id));
        for pb in playbooks
            .iter()
            .filter(|pb| pb.matcher.matches(format, fields))
        {
            Self::own_case(&mut case, pb);
            for prop in pb.propose(&case_id, fields) {
                let idem = idempotency_key(
                    &case_id,
                    prop.playbook,
                    &prop.step.id,
                    prop.step.action,
                    &prop.target,
                );
                let xi = keys::action_index(&case_id, &idem);
                if txn.get(&store, &xi)?.is_some() {
                    continue; // already proposed for this case
                }
                if case.action_ids.len() >= max_actions {
                    not_proposed += 1;
                    continue;
                }
                let action_id = self
                    .ids
                    .generate()
                    .unwrap_or_else(|_| ulid::Ulid::generate())
                    .to_string();
                let mut req = ActionRequest {
                    action_id: action_id.clone(),
                    case_id: case_id.clone(),
                    alert_id: alert_id.clone(),
                    playbook: pb.name.clone(),
                    step: prop.step.id.clone(),
                    kind: prop.step.action,
                    connector: prop.step.connector.clone(),
                    target: prop.target.clone(),
                    parameters: prop.step.parameters.clone(),
                    on_failure: prop.step.on_failure,
                    state: ActionState::Proposed,
                    tier: None,
                    determining_policies: vec![],
                    reasons: vec![],
                    decision_seq: None,
                    policy_hash: None,
                    idempotency_key: idem,
                    created_at: now,
                    updated_at: now,
                    requester: format!("playbook:{}", pb.name),
                    approval: None,
                    decision_input: None,
                    execution: None,
                    rollback_of: None,
                    rolled_back_by: None,
                    chat: Vec::new(),
                    chat_held: false,
                    proposal: None,
                };
                let alinks = Links {
                    case_id: Some(case_id.clone()),
                    alert_id: Some(alert_id.clone()),
                    action_id: Some(action_id.clone()),
                };
                txn.audit(AuditKind::ActionProposed, alinks.clone(), now, &req)?;
                let step_req = StepRequest {
                    playbook: pb.name.clone(),
                    family: pb.family.clone(),
                    step: prop.step.id.clone(),
                    kind: prop.step.action,
                    target: prop.target.clone(),
                    resource_attrs: policy_engine.complete_attrs(
                        &prop.target,
                        policy::enriched_attrs(
                            &prop.target,
                            &report,
                            case.alert_ids.len() as u64,
                            case.severity.id(),
                        ),
                    ),
                    context: policy::with_step(
                        &share.context,
                        policy::StepInfo {
                            playbook: &pb.name,
                            step: &prop.step.id,
                            kind: prop.step.action,
                        },
                    ),
                };
                self.decide_new(
                    txn,
                    &mut req,
                    step_req,
                    prop.step.approval_timeout_mins,
                    fields.severity,
                    now,
                    Some(&mut share),
                )?;
                if self.parts.chat && req.state == ActionState::AwaitingApproval {
                    if case.chat_requests as usize >= max_chat {
                        req.chat_held = true;
                        chat_held += 1;
                    } else {
                        case.chat_requests += 1;
                    }
                }
                txn.put(xi, action_id.clone().into_bytes());
                txn.put_json(keys::action(&action_id), &req)?;
                case.action_ids.push(action_id);
                new_actions += 1;
            }
        }
        if not_proposed > 0 {
            let detail = json!({"max": max_actions, "not_proposed": not_proposed});
            self.limit_hit(
                txn,
                &mut case,
                Limit::ActionsPerCase,
                &alert_id,
                now,
                detail,
            )?;
        }
        if chat_held > 0 {
            let detail = json!({"max": max_chat, "not_posted": chat_held, "note": "these requests are listed by `cordon approvals list` and can be voted on over gRPC"});
            self.limit_hit(
                txn,
                &mut case,
                Limit::ChatRequestsPerCase,
                &alert_id,
                now,
                detail,
            )?;
        }
        if new_actions > 0 && matches!(case.state, CaseState::Correlated | CaseState::Approved) {
            self.transition(
                txn,
                &mut case,
                CaseState::Recommended,
                now,
                &format!("{new_actions} action(s) proposed by playbooks"),
                &alert_id,
            )?;
        }
        self.approve_case_if_decided(txn, &mut case, now, &alert_id)?;
        stored.enrichment = Some(report);
        txn.put_json(keys::alert(&alert_id), &stored)?;
        queue::put_case(txn, &case)?;
        Ok(IngestAck {
            alert_id,
            case_id,
            duplicate: false,
        })
    }

    /// Decides a freshly proposed action: records the decision, moves it to `approved`,
    /// `awaiting_approval` (with its deadline and escalation) or `denied`, and queues it for the
    /// executor when it may run. The caller stores it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decide_new(
        &mut self,
        txn: &mut Txn,
        req: &mut ActionRequest,
        step_req: StepRequest,
        step_timeout_mins: Option<u64>,
        severity: crate::alert::Severity,
        now: DateTime<Utc>,
        share: Option<&mut ShareState>,
    ) -> Result<(), StoreError> {
        let policy_engine = self.parts.policies.current();
        let alinks = Self::links(req);
        let refs = match share {
            Some(sh) => Some(sh.refs(txn, &step_req, now)?),
            None => None,
        };
        let action_id = req.action_id.clone();
        req.decision_input = Some(crate::action::DecisionInput {
            family: step_req.family.clone(),
            resource_attrs: step_req.resource_attrs.clone(),
            context: step_req.context.clone(),
        });
        let shadow_req = self.parts.shadow.as_ref().map(|_| step_req.clone());
        let mut record = policy_engine.decide_step(step_req);
        if let Some(refs) = &refs {
            record.share(refs.clone());
        }
        let seq = txn.audit(AuditKind::PolicyDecision, alinks.clone(), now, &record)?;
        if let (Some(shadow), Some(sreq)) = (self.parts.shadow.clone(), shadow_req) {
            let mut s = shadow.decide_step(sreq);
            if let Some(refs) = refs {
                s.share(refs);
            }
            let agrees = s.tier == record.tier;
            txn.audit(
                AuditKind::ShadowDecision,
                alinks.clone(),
                now,
                json!({"decision_seq": seq, "tier_in_force": record.tier, "agrees": agrees, "record": s}),
            )?;
            self.tallies.push(Tally::Shadow(req.kind.as_str(), agrees));
        }
        self.tallies.push(Tally::Decision(record.tier));
        let next = match record.tier {
            Tier::Auto => ActionState::Approved,
            Tier::OneApprover | Tier::TwoPerson => ActionState::AwaitingApproval,
            Tier::Denied => ActionState::Denied,
        };
        req.tier = Some(record.tier);
        req.determining_policies = record.determining.iter().map(|d| d.id.clone()).collect();
        req.reasons = record.reasons.clone();
        req.decision_seq = Some(seq);
        req.policy_hash = Some(record.policy_hash.clone());
        Self::move_action(
            txn,
            req,
            next,
            now,
            None,
            json!({"tier": record.tier, "reasons": record.reasons, "decision_seq": seq}),
        )?;
        if next == ActionState::Approved {
            txn.put(keys::runnable(&action_id), vec![]);
        }
        if next == ActionState::AwaitingApproval {
            let needed = record.tier.approvals_needed().unwrap_or(1);
            let from_policy_or_playbook = match (record.approval_timeout_mins, step_timeout_mins) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let mins = self.timeout_mins(from_policy_or_playbook, severity);
            let deadline = now + Duration::minutes(mins);
            let escalate_at = now
                + Duration::milliseconds(
                    ((mins * 60_000) as f64 * self.parts.approvals.escalate_at_fraction) as i64,
                );
            req.approval = Some(crate::action::ApprovalState {
                needed,
                deadline,
                escalate_at,
                escalated: false,
                votes: vec![],
                decided_hash: None,
            });
            txn.put(keys::pending(&action_id), vec![]);
            txn.put(keys::deadline(deadline, &action_id), vec![]);
            txn.put(keys::escalation(escalate_at, &action_id), vec![]);
        }
        self.changed.push(req.clone());
        Ok(())
    }

    pub(super) fn bump_open(&self, txn: &mut Txn, delta: i64) -> Result<(), StoreError> {
        let n = txn
            .get_json::<i64>(&self.parts.store, keys::CASES_OPEN)?
            .unwrap_or(0)
            + delta;
        txn.put_json(keys::CASES_OPEN.to_vec(), &n.max(0))
    }

    /// Records that a fan-out bound held back part of what an alert would set in motion, and
    /// escalates the case the first time it hits that bound.
    fn limit_hit(
        &mut self,
        txn: &mut Txn,
        case: &mut Case,
        limit: Limit,
        alert_id: &str,
        now: DateTime<Utc>,
        mut detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let links = Links {
            case_id: Some(case.case_id.clone()),
            alert_id: Some(alert_id.to_string()),
            action_id: None,
        };
        detail["limit"] = json!(limit.as_str());
        txn.audit(AuditKind::FanoutLimited, links.clone(), now, &detail)?;
        if case.limits_hit.iter().any(|l| l == limit.as_str()) {
            return Ok(());
        }
        case.limits_hit.push(limit.as_str().to_string());
        let why = limit.reason(&detail);
        tracing::warn!(case_id = %case.case_id, limit = limit.as_str(), reason = %why, "escalation: a person has to look at this case");
        self.tallies.push(Tally::Escalation);
        txn.audit(
            AuditKind::Escalation,
            links,
            now,
            json!({"reason": why, "limit": limit.as_str(), "case_state": case.state}),
        )?;
        Ok(())
    }
}

/// Smallest shared part worth its own record: below this, a part costs less repeated in each
/// decision than stored once in a record of its own (whose envelope is ~300 bytes).
const SHARE_AT_BYTES: usize = 384;

/// The shared parts of one alert's step requests (see [`policy::SharedRefs`]): each is written
/// as a `decision_input` record before the first decision that names it, once per alert.
pub(super) struct ShareState {
    context: Arc<serde_json::Map<String, serde_json::Value>>,
    context_part: Option<policy::SharedPart>,
    written: std::collections::HashSet<String>,
    links: Links,
}

impl ShareState {
    pub(super) fn new(context: serde_json::Map<String, serde_json::Value>, links: Links) -> Self {
        ShareState {
            context: Arc::new(context),
            context_part: None,
            written: Default::default(),
            links,
        }
    }

    /// The references for `step`, writing the parts this alert has not written yet.
    fn refs(
        &mut self,
        txn: &mut Txn,
        step: &StepRequest,
        now: DateTime<Utc>,
    ) -> Result<policy::SharedRefs, StoreError> {
        let ctx = self
            .context_part
            .get_or_insert_with(|| policy::SharedPart::context(&self.context))
            .clone();
        let entity = policy::SharedPart::entity(&step.target, &step.resource_attrs);
        // A part smaller than the record that would hold it is cheaper repeated.
        let entity = (entity.size >= SHARE_AT_BYTES).then_some(entity);
        for part in std::iter::once(&ctx).chain(entity.as_ref()) {
            if self.written.insert(part.hash.clone()) {
                txn.audit(
                    AuditKind::DecisionInput,
                    self.links.clone(),
                    now,
                    &part.data,
                )?;
            }
        }
        Ok(policy::SharedRefs {
            context: Some((ctx.hash, self.context.clone())),
            resource: entity.map(|e| e.hash),
        })
    }
}
