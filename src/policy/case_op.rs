//! Analyst case operations as Cedar requests.
//!
//! Owns: the case actions (`assign_case`, `note_case`, `close_case`, `reopen_case`,
//! `recover_case`), the request one operation is made of (principal = the authenticated user,
//! resource = the case, context = what the case is and what is asked), and its authorisation
//! with a replayable [`DecisionRecord`]. Fails closed: an evaluation error refuses.

use serde_json::{Value, json};

use super::{DecisionRecord, NS, PolicyEngine, Probe, action_uid, uid};
use crate::action::Tier;
use cedar_policy::{Context, Entity, Request};

/// The Cedar actions of case operations, in the order the schema declares them.
pub const CASE_ACTIONS: [&str; 7] = [
    "assign_case",
    "note_case",
    "close_case",
    "reopen_case",
    "recover_case",
    "accept_proposal",
    "dismiss_proposal",
];

/// One case operation to authorise.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseOpRequest {
    pub user: String,
    /// One of [`CASE_ACTIONS`].
    pub action: String,
    /// grpc | http
    pub channel: String,
    /// mtls | token
    pub identity: String,
    pub case_id: String,
    /// The case's severity id (OCSF 1..5) and alert count (the `Case` entity's attributes).
    pub severity_id: i64,
    pub alert_count: i64,
    pub state: String,
    pub severity: String,
    /// "" when unassigned.
    pub owner: String,
    pub closed: bool,
    /// close_case only ("" otherwise).
    pub disposition: String,
    pub cancel_pending: bool,
    pub pending_actions: i64,
    /// assign_case only ("" otherwise).
    pub assignee: String,
    /// accept_proposal / dismiss_proposal only: the proposal's kind ("" otherwise).
    pub proposal_kind: String,
}

/// Outcome of a case-operation check.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseOpDecision {
    pub allowed: bool,
    /// Why not, when refused before or by Cedar.
    pub refusal: Option<String>,
    pub record: DecisionRecord,
}

impl CaseOpRequest {
    /// The request a decision record holds (`request_json`'s shape), read back for replay.
    pub fn from_request_json(v: &Value) -> Result<CaseOpRequest, String> {
        let s = |p: &str| -> Result<String, String> {
            v.pointer(p)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("the recorded case operation has no {p}"))
        };
        let c = |k: &str| v.pointer(&format!("/context/{k}"));
        let cs = |k: &str| {
            c(k).and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("the recorded case operation has no context.{k}"))
        };
        let attr = |k: &str| {
            v.pointer("/entities/0/attrs")
                .and_then(|a| a.get(k))
                .and_then(Value::as_i64)
                .ok_or_else(|| format!("the recorded case has no {k}"))
        };
        Ok(CaseOpRequest {
            user: s("/principal/id")?,
            action: s("/action/id")?,
            channel: cs("channel")?,
            identity: cs("identity")?,
            case_id: s("/resource/id")?,
            severity_id: attr("severity_id")?,
            alert_count: attr("alert_count")?,
            state: cs("state")?,
            severity: cs("severity")?,
            owner: cs("owner")?,
            closed: c("closed").and_then(Value::as_bool).unwrap_or(false),
            disposition: cs("disposition")?,
            cancel_pending: c("cancel_pending")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            pending_actions: c("pending_actions").and_then(Value::as_i64).unwrap_or(0),
            assignee: cs("assignee")?,
            // Records written before proposals existed have no proposal_kind.
            proposal_kind: cs("proposal_kind").unwrap_or_default(),
        })
    }

    fn context(&self) -> Value {
        json!({
            "channel": self.channel,
            "identity": self.identity,
            "state": self.state,
            "severity": self.severity,
            "owner": self.owner,
            "is_owner": !self.owner.is_empty() && self.owner == self.user,
            "closed": self.closed,
            "disposition": self.disposition,
            "cancel_pending": self.cancel_pending,
            "pending_actions": self.pending_actions,
            "assignee": self.assignee,
            "proposal_kind": self.proposal_kind,
        })
    }

    fn resource(&self) -> Value {
        json!({
            "uid": {"type": format!("{NS}::Case"), "id": self.case_id},
            "attrs": {"severity_id": self.severity_id, "alert_count": self.alert_count},
            "parents": [],
        })
    }

    fn request_json(&self) -> Value {
        json!({
            "principal": {"type": format!("{NS}::User"), "id": self.user},
            "action": {"type": format!("{NS}::Action"), "id": self.action},
            "resource": {"type": format!("{NS}::Case"), "id": self.case_id},
            "context": self.context(),
            "entities": [self.resource()],
        })
    }
}

impl PolicyEngine {
    /// Whether `id` is a group of the entity files (a playbook's `group:` escalation route).
    pub fn knows_group(&self, id: &str) -> bool {
        uid("Group", id).is_ok_and(|u| self.static_entities.get(&u).is_some())
    }

    /// Whether `id` is a user of the entity files (an assignee must be one).
    pub fn knows_user(&self, id: &str) -> bool {
        self.users.contains(id)
    }

    /// Whether `r.user` may perform `r.action` on the case. Users unknown to the entity files
    /// are refused before Cedar is asked; an evaluation error refuses.
    pub fn authorize_case_op(&self, r: &CaseOpRequest) -> CaseOpDecision {
        let request = super::RequestRecord::Json(r.request_json());
        if !CASE_ACTIONS.contains(&r.action.as_str()) {
            let rec = self.record(request, vec![], Tier::Denied, vec![], vec![]);
            return CaseOpDecision {
                allowed: false,
                refusal: Some(format!("{:?} is not a case operation", r.action)),
                record: rec,
            };
        }
        if !self.users.contains(&r.user) {
            let rec = self.record(request, vec![], Tier::Denied, vec![], vec![]);
            return CaseOpDecision {
                allowed: false,
                refusal: Some(format!("{:?} is not a known user", r.user)),
                record: rec,
            };
        }
        let probe = self.eval_case_op(r).unwrap_or_else(|e| Probe {
            approvals: 0,
            decision: "deny".into(),
            determining: vec![],
            errors: vec![e],
        });
        let allowed = probe.decision == "allow" && probe.errors.is_empty();
        let (det, errors) = (probe.determining.clone(), probe.errors.clone());
        let rec = self.record(
            request,
            vec![probe],
            if allowed { Tier::Auto } else { Tier::Denied },
            det,
            errors,
        );
        let refusal = (!allowed).then(|| {
            let forbids: Vec<String> = rec
                .determining
                .iter()
                .filter(|d| d.effect == "forbid")
                .map(|d| d.reason.clone())
                .collect();
            if !forbids.is_empty() {
                forbids.join("; ")
            } else if !rec.errors.is_empty() {
                "policy evaluation failed (fail closed)".to_string()
            } else {
                format!("no policy permits {} to {}", r.user, r.action)
            }
        });
        CaseOpDecision {
            allowed,
            refusal,
            record: rec,
        }
    }

    fn eval_case_op(&self, r: &CaseOpRequest) -> Result<Probe, String> {
        let principal = uid("User", &r.user)?;
        let action = action_uid(&r.action)?;
        let res_entity = Entity::from_json_value(r.resource(), Some(&self.schema))
            .map_err(|e| format!("case entity: {e}"))?;
        let res_uid = res_entity.uid();
        let entities = self
            .static_entities
            .clone()
            .add_entities([res_entity], Some(&self.schema))
            .map_err(|e| format!("entities: {e}"))?;
        let ctx = Context::from_json_value(r.context(), Some((&self.schema, &action)))
            .map_err(|e| format!("context: {e}"))?;
        let request = Request::new(principal, action, res_uid, ctx, Some(&self.schema))
            .map_err(|e| format!("request: {e}"))?;
        Ok(self.to_probe(&r.action, &request, &entities, 0))
    }
}
