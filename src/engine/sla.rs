//! Case ownership, the SLA clock and escalations: what follows from a case's playbook, actions
//! and clock without an analyst's operation.
//!
//! Owns: the case's ownership from its playbook; the SLA index of open cases (`sl/`) and its
//! breach escalation; routing every escalation to the owner's chat channel or approver group
//! (and the messages owed to chat, `ce/`); automatic recovery once every containment a case
//! caused is undone. State changes themselves go through `lifecycle`.

use super::*;
use crate::case::{Handoffs, Ownership, Recovery};
use crate::playbook::EscalationRoute;
use lifecycle::case_links;

/// Case states in which the SLA clock runs (not closed, recovered, learned or suppressed).
fn sla_runs(case: &Case) -> bool {
    case.closure.is_none()
        && !matches!(
            case.state,
            CaseState::Closed | CaseState::Recovered | CaseState::Learned | CaseState::Suppressed
        )
}

/// Kinds that contain something (their inverse releases it).
fn is_containment(kind: crate::action::ActionKind) -> bool {
    use crate::action::ActionKind::*;
    matches!(kind, IsolateHost | BlockIoc | ContainCloudResource)
}

impl Engine {
    /// The first matching playbook that declares an owner owns the case (once).
    pub(super) fn own_case(case: &mut Case, pb: &crate::playbook::Playbook) {
        if case.ownership.is_some()
            || (pb.owner_team.is_empty()
                && pb.escalation_route.is_none()
                && pb.known_limitations.is_empty())
        {
            return;
        }
        case.ownership = Some(Ownership {
            playbook: pb.name.clone(),
            owner_team: pb.owner_team.clone(),
            escalation_route: pb
                .escalation_route
                .as_ref()
                .map(EscalationRoute::as_string)
                .unwrap_or_default(),
            known_limitations: pb.known_limitations.clone(),
        });
    }

    /// Puts the case on the SLA index: opened + the SLA of its severity; a severity raised by
    /// a later alert only ever brings the deadline forward.
    pub(super) fn index_sla(&self, txn: &mut Txn, case: &mut Case) {
        if case.sla_escalated || !sla_runs(case) {
            return;
        }
        let due = self
            .parts
            .cases
            .sla
            .deadline(case.severity, case.created_at);
        match case.sla_deadline {
            Some(d) if d <= due => {}
            old => {
                if let Some(o) = old {
                    txn.delete(keys::sla(o, &case.case_id));
                }
                case.sla_deadline = Some(due);
                txn.put(keys::sla(due, &case.case_id), vec![]);
            }
        }
    }

    /// Escalates every open case past its SLA deadline, once (the index entry goes with it).
    pub(super) fn sla_tick(&mut self, txn: &mut Txn, now: DateTime<Utc>) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let due = |key: &[u8]| -> Option<String> {
            let rest = std::str::from_utf8(key.strip_prefix(keys::SLA_PREFIX)?).ok()?;
            let (ms, id) = rest.split_once('/')?;
            (ms.parse::<i64>().ok()? <= now.timestamp_millis()).then(|| id.to_string())
        };
        for key in store.keys_while(keys::SLA_PREFIX, |k| due(k).is_some())? {
            let Some(id) = due(&key) else {
                continue;
            };
            txn.delete(key);
            let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(&id))? else {
                continue;
            };
            if case.sla_escalated || !sla_runs(&case) {
                continue;
            }
            case.sla_escalated = true;
            let deadline = case.sla_deadline.unwrap_or(now);
            let why = format!(
                "SLA breached: a {} case open since {} was not closed or recovered by {}",
                case.severity,
                case.created_at.to_rfc3339(),
                deadline.to_rfc3339()
            );
            tracing::warn!(case_id = %case.case_id, severity = %case.severity, "Escalation: a case breached its SLA.");
            self.tallies.push(Tally::Escalation);
            txn.audit(
                AuditKind::Escalation,
                case_links(&case),
                now,
                json!({"reason": why, "escalation": "sla_breach", "deadline": deadline,
                       "severity": case.severity, "owner": case.owner, "case_state": case.state}),
            )?;
            self.route_escalation(txn, &mut case, "sla_breach", &why, now)?;
            queue::put_case(txn, &case)?;
        }
        Ok(())
    }

    /// Routes an escalation of `case` to its owner: a chat channel gets a message (owed in the
    /// store, `ce/`, and posted by the chat notifier), an approver group is recorded as the
    /// recipient. Stamps the IR-escalation handoff. The caller writes the case.
    pub(super) fn route_escalation(
        &mut self,
        txn: &mut Txn,
        case: &mut Case,
        escalation: &str,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Handoffs::stamp(&mut case.handoffs.ir_escalation, now);
        let Some(own) = &case.ownership else {
            return Ok(());
        };
        let Ok(route) = EscalationRoute::parse(&own.escalation_route) else {
            return Ok(());
        };
        let mut body = json!({"escalation": escalation, "route": own.escalation_route,
                              "owner_team": own.owner_team, "playbook": own.playbook, "reason": why});
        match &route {
            EscalationRoute::Group(g) => {
                body["delivery"] = json!("approver_group");
                body["group"] = json!(g);
            }
            EscalationRoute::Chat(channel) if self.parts.chat => {
                let id = self.next_id();
                let text = format!(
                    "Escalation for {}{}: case {} ({} severity, {}): {why}",
                    if own.owner_team.is_empty() {
                        "the case owner"
                    } else {
                        &own.owner_team
                    },
                    case.owner
                        .as_ref()
                        .map(|o| format!(" (assigned to {o})"))
                        .unwrap_or_default(),
                    case.case_id,
                    case.severity,
                    case.title,
                );
                txn.put_json(
                    keys::chat_escalation(&id),
                    &ChatEscalation {
                        id: id.clone(),
                        case_id: case.case_id.clone(),
                        channel: channel.clone(),
                        text: view_clip(&text),
                    },
                )?;
                body["delivery"] = json!("chat");
                body["channel"] = json!(channel);
                body["message_id"] = json!(id);
                self.escalation_owed = true;
            }
            EscalationRoute::Chat(channel) => {
                body["delivery"] = json!("undeliverable");
                body["channel"] = json!(channel);
                body["why"] = json!("no chat platform is configured; recorded only");
            }
        }
        txn.audit(AuditKind::EscalationRouted, case_links(case), now, body)?;
        Ok(())
    }

    /// Routes an escalation of an action to its case's owner.
    pub(super) fn route_action_escalation(
        &mut self,
        txn: &mut Txn,
        a: &ActionRequest,
        escalation: &str,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        if let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(&a.case_id))? {
            let why = format!("{} {} on {}: {why}", a.action_id, a.kind, a.target.id);
            self.route_escalation(txn, &mut case, escalation, &why, now)?;
            queue::put_case(txn, &case)?;
        }
        Ok(())
    }

    /// A case whose every containment has been undone (rolled back, or released by a later
    /// succeeded inverse on the same target) becomes `recovered`, from `executed` or `closed`.
    pub(super) fn refresh_recovery(
        &mut self,
        txn: &mut Txn,
        case_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let Some(mut case) = txn.get_json::<Case>(&store, &keys::case(case_id))? else {
            return Ok(());
        };
        if !case.state.can_become(CaseState::Recovered) {
            return Ok(());
        }
        let mut actions = Vec::new();
        for id in &case.action_ids {
            if let Some(a) = txn.get_json::<ActionRequest>(&store, &keys::action(id))? {
                actions.push(a);
            }
        }
        let contained: Vec<&ActionRequest> = actions
            .iter()
            .filter(|a| {
                is_containment(a.kind)
                    && a.rollback_of.is_none()
                    && matches!(a.state, ActionState::Succeeded | ActionState::RolledBack)
            })
            .collect();
        if contained.is_empty() {
            return Ok(());
        }
        let undone = |c: &ActionRequest| {
            c.state == ActionState::RolledBack
                || actions.iter().any(|r| {
                    r.state == ActionState::Succeeded
                        && Some(r.kind) == c.kind.inverse()
                        && r.target == c.target
                        && r.created_at >= c.created_at
                })
        };
        if !contained.iter().all(|c| undone(c)) {
            return Ok(());
        }
        let reason = format!(
            "every containment was released: {}",
            contained
                .iter()
                .map(|c| format!("{} {} {}", c.action_id, c.kind, c.target.id))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let recovery = Recovery {
            how: "containment_released".into(),
            by: None,
            reason,
            at: now,
        };
        if self.recover_case(txn, &mut case, recovery, now)? {
            queue::put_case(txn, &case)?;
        }
        Ok(())
    }
}

impl Engine {
    /// Records how posting an escalation message went; once posted, it is no longer owed.
    pub(super) fn escalation_posted(
        &mut self,
        txn: &mut Txn,
        id: &str,
        platform: &'static str,
        attempt: u32,
        result: Result<String, String>,
        now: DateTime<Utc>,
    ) -> Result<ChatReply, StoreError> {
        let store = self.parts.store.clone();
        let Some(m) = txn.get_json::<ChatEscalation>(&store, &keys::chat_escalation(id))? else {
            return Ok(ChatReply::Recorded);
        };
        let links = Links {
            case_id: Some(m.case_id.clone()),
            alert_id: None,
            action_id: None,
        };
        let (outcome, reference, error) = match &result {
            Ok(r) => ("posted", Some(r.clone()), None),
            Err(e) => ("failed", None, Some(e.clone())),
        };
        txn.audit(
            AuditKind::ChatPost,
            links,
            now,
            json!({"platform": platform, "purpose": "escalation", "message_id": id,
                   "channel": m.channel, "ref": reference, "attempt": attempt,
                   "outcome": outcome, "error": error}),
        )?;
        if result.is_ok() {
            txn.delete(keys::chat_escalation(id));
        }
        Ok(ChatReply::Recorded)
    }
}

/// A message owed to a chat channel for an escalation (`ce/`), posted by the notifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatEscalation {
    pub id: String,
    pub case_id: String,
    pub channel: String,
    pub text: String,
}

fn view_clip(s: &str) -> String {
    const MAX: usize = 3000;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
