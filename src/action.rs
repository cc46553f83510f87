//! Response actions: the closed set of action kinds and the action-request state machine.
//!
//! Owns: [`ActionKind`] (verbs; each is one Cedar action in the schema), what each kind targets
//! and whether it can be undone, [`ActionRequest`] (one step of one playbook for one target in
//! one case) and the legal transitions of its [`ActionState`]. Pure data: persistence is the
//! engine's, decisions are `policy`'s.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::alert::EntityKind;

/// What a response step does. Adding one: a variant here, its Cedar action in
/// `policies/cordon.cedarschema`, a connector that implements it, a policy test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Attach asset, identity and intel context to the case.
    Enrich,
    /// Write the case summary (timeline, ATT&CK mapping, entities).
    SummarizeCase,
    /// Open a ticket in the case system.
    CreateTicket,
    /// Revoke a user's sessions and tokens at the identity provider. Irreversible.
    RevokeSessions,
    /// Network-contain a host through the EDR.
    IsolateHost,
    /// Lift host containment (the inverse of `isolate_host`).
    ReleaseHost,
    /// Block an indicator (IP, domain, URL, hash) at the EDR or edge.
    BlockIoc,
    /// Remove an indicator block (the inverse of `block_ioc`).
    UnblockIoc,
    /// Contain a cloud resource (quarantine security group, stop instance).
    ContainCloudResource,
    /// Undo cloud containment.
    ReleaseCloudResource,
}

/// What an action is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// The case itself (enrichment, summary, ticket).
    Case,
    Host,
    Account,
    Indicator,
    CloudResource,
}

impl ActionKind {
    pub const ALL: [ActionKind; 10] = [
        ActionKind::Enrich,
        ActionKind::SummarizeCase,
        ActionKind::CreateTicket,
        ActionKind::RevokeSessions,
        ActionKind::IsolateHost,
        ActionKind::ReleaseHost,
        ActionKind::BlockIoc,
        ActionKind::UnblockIoc,
        ActionKind::ContainCloudResource,
        ActionKind::ReleaseCloudResource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Enrich => "enrich",
            ActionKind::SummarizeCase => "summarize_case",
            ActionKind::CreateTicket => "create_ticket",
            ActionKind::RevokeSessions => "revoke_sessions",
            ActionKind::IsolateHost => "isolate_host",
            ActionKind::ReleaseHost => "release_host",
            ActionKind::BlockIoc => "block_ioc",
            ActionKind::UnblockIoc => "unblock_ioc",
            ActionKind::ContainCloudResource => "contain_cloud_resource",
            ActionKind::ReleaseCloudResource => "release_cloud_resource",
        }
    }

    pub fn parse(s: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn target_kind(self) -> TargetKind {
        match self {
            ActionKind::Enrich | ActionKind::SummarizeCase | ActionKind::CreateTicket => {
                TargetKind::Case
            }
            ActionKind::RevokeSessions => TargetKind::Account,
            ActionKind::IsolateHost | ActionKind::ReleaseHost => TargetKind::Host,
            ActionKind::BlockIoc | ActionKind::UnblockIoc => TargetKind::Indicator,
            ActionKind::ContainCloudResource | ActionKind::ReleaseCloudResource => {
                TargetKind::CloudResource
            }
        }
    }

    /// The entity kinds a playbook step of this kind may take its target from.
    pub fn target_entities(self) -> &'static [EntityKind] {
        match self.target_kind() {
            TargetKind::Case => &[],
            TargetKind::Host => &[EntityKind::Host],
            TargetKind::Account => &[EntityKind::User],
            TargetKind::Indicator => &[
                EntityKind::Ip,
                EntityKind::Domain,
                EntityKind::Url,
                EntityKind::FileHash,
            ],
            TargetKind::CloudResource => &[EntityKind::CloudResource],
        }
    }

    /// The action that undoes this one, if any.
    pub fn inverse(self) -> Option<ActionKind> {
        match self {
            ActionKind::IsolateHost => Some(ActionKind::ReleaseHost),
            ActionKind::ReleaseHost => Some(ActionKind::IsolateHost),
            ActionKind::BlockIoc => Some(ActionKind::UnblockIoc),
            ActionKind::UnblockIoc => Some(ActionKind::BlockIoc),
            ActionKind::ContainCloudResource => Some(ActionKind::ReleaseCloudResource),
            ActionKind::ReleaseCloudResource => Some(ActionKind::ContainCloudResource),
            _ => None,
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Case => "case",
            TargetKind::Host => "host",
            TargetKind::Account => "account",
            TargetKind::Indicator => "indicator",
            TargetKind::CloudResource => "cloud_resource",
        }
    }
}

/// The approval tier a policy demands: the fewest approvals for which Cedar allows the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Auto,
    OneApprover,
    TwoPerson,
    Denied,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Auto => "auto",
            Tier::OneApprover => "one_approver",
            Tier::TwoPerson => "two_person",
            Tier::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        [Tier::Auto, Tier::OneApprover, Tier::TwoPerson, Tier::Denied]
            .into_iter()
            .find(|t| t.as_str() == s)
    }

    /// Tier for "allowed with k approvals", `None` → denied.
    pub fn from_approvals(k: Option<u8>) -> Tier {
        match k {
            Some(0) => Tier::Auto,
            Some(1) => Tier::OneApprover,
            Some(2) => Tier::TwoPerson,
            _ => Tier::Denied,
        }
    }

    /// Approvals needed; `None` for denied.
    pub fn approvals_needed(self) -> Option<u8> {
        match self {
            Tier::Auto => Some(0),
            Tier::OneApprover => Some(1),
            Tier::TwoPerson => Some(2),
            Tier::Denied => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an action request is in its life (PRODUCT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    Proposed,
    Denied,
    AwaitingApproval,
    Approved,
    Expired,
    Rejected,
    Executing,
    Succeeded,
    Failed,
    Unknown,
    RolledBack,
    /// The connector is in `dry_run`: every request was rendered and recorded, none was sent.
    DryRun,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Proposed => "proposed",
            ActionState::Denied => "denied",
            ActionState::AwaitingApproval => "awaiting_approval",
            ActionState::Approved => "approved",
            ActionState::Expired => "expired",
            ActionState::Rejected => "rejected",
            ActionState::Executing => "executing",
            ActionState::Succeeded => "succeeded",
            ActionState::Failed => "failed",
            ActionState::Unknown => "unknown",
            ActionState::RolledBack => "rolled_back",
            ActionState::DryRun => "dry_run",
        }
    }

    /// The transitions PRODUCT.md allows. `unknown` is resolved by probing the target, so it may
    /// become `succeeded` or `failed` (never back to `executing` by a blind resend).
    pub fn can_become(self, next: ActionState) -> bool {
        use ActionState::*;
        matches!(
            (self, next),
            (Proposed, Denied | AwaitingApproval | Approved)
                | (AwaitingApproval, Approved | Expired | Rejected)
                | (Approved, Executing | Denied)
                | (Executing, Succeeded | Failed | Unknown | DryRun)
                | (Unknown, Succeeded | Failed)
                | (Succeeded, RolledBack)
        )
    }

    pub fn is_terminal(self) -> bool {
        use ActionState::*;
        matches!(
            self,
            Denied | Expired | Rejected | Succeeded | Failed | RolledBack | DryRun
        )
    }
}

impl fmt::Display for ActionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The target of one action request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub kind: TargetKind,
    /// Canonical id: the case id, a host name, a user, an indicator `type:value`, a resource id.
    pub id: String,
}

/// What a step does if its action fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Raise it to a human (the default: fail closed).
    #[default]
    Escalate,
    /// Carry on with the next step.
    Continue,
    /// Stop the playbook's remaining steps for this case.
    Stop,
}

/// One proposed response action: one step of one playbook for one target in one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub action_id: String,
    pub case_id: String,
    /// The alert whose arrival proposed it.
    pub alert_id: String,
    pub playbook: String,
    pub step: String,
    pub kind: ActionKind,
    pub connector: String,
    pub target: Target,
    #[serde(default)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub on_failure: OnFailure,
    pub state: ActionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Policy ids that determined the tier, and the reasons from their `@reason` annotations.
    #[serde(default)]
    pub determining_policies: Vec<String>,
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Audit sequence of the decision record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_seq: Option<u64>,
    /// Hash of the policy set that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// Stable across retries and restarts: sha256(case, step, action, target).
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Who asked for it: `playbook:<name>` for playbook proposals, or a user id.
    #[serde(default)]
    pub requester: String,
    /// Approval bookkeeping while (and after) it awaits votes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalState>,
    /// What the policy decided on (resource attributes and context without approvals), kept
    /// so votes and the pre-execution re-check evaluate the same request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_input: Option<DecisionInput>,
    /// The durable intent and outcome of running it (from the moment the executor claims it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<Execution>,
    /// For a rollback: the action it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    /// The rollback proposed for this action, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_by: Option<String>,
    /// Where the request was posted in chat, and what each post shows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chat: Vec<ChatPost>,
    /// Not posted to chat: its case already had `cases.max_chat_requests_per_case` requests
    /// there (it is approved over gRPC or the console; the case was escalated).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chat_held: bool,
    /// Proposed by an AI agent: its hypothesis, confidence and citations, shown to approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<crate::agent::ProposalNote>,
}

/// One chat message that carries an approval request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatPost {
    /// slack | mattermost | teams
    pub platform: String,
    /// Slack channel id, Mattermost channel id, or Teams conversation id.
    pub channel: String,
    /// Slack `ts`, Mattermost post id, or Teams activity id.
    pub reference: String,
    pub posted_at: DateTime<Utc>,
    /// Hash of the content the message shows now.
    pub rendered: String,
    /// Thread notices already posted (`escalation`, `expired`).
    #[serde(default)]
    pub notices: Vec<String>,
}

/// Where the executor is with an action. Written to the store before each step it takes, so a
/// restart knows whether a vendor write may already have gone out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecPhase {
    /// The intent is recorded; nothing has been sent.
    Claimed,
    /// A write is about to go out or went out and its answer is not recorded yet.
    Writing,
    /// A write was accepted; waiting for the vendor to complete it.
    Polling,
    /// A write may have reached the vendor and its outcome is not known.
    Unknown,
    Finished,
}

/// The durable intent record of an action's execution, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub connector: String,
    /// live | dry_run | builtin
    pub mode: String,
    /// When the intent was recorded (probes look for effects from this moment on).
    pub intent_at: DateTime<Utc>,
    pub phase: ExecPhase,
    /// Vendor writes sent (or about to be sent) for this idempotency key.
    pub writes_sent: u32,
    /// Retries so far, across restarts (bounded).
    pub retries: u32,
    /// Vendor ids learned on the way (agent id, machine action id...).
    #[serde(default)]
    pub vendor: std::collections::BTreeMap<String, String>,
    /// The vendor accepted a write for this idempotency key (its answer arrived and read as
    /// accepted or already done). A later probe reading "not done" then means the effect was
    /// reversed or dropped at the vendor, never that the write did not land: it is not resent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// The inputs of a step decision, as stored with the action request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionInput {
    pub family: String,
    pub resource_attrs: serde_json::Map<String, serde_json::Value>,
    pub context: serde_json::Map<String, serde_json::Value>,
}

/// Votes and deadlines of a request that needs approvers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalState {
    /// Distinct authorised approvals needed (1 or 2).
    pub needed: u8,
    pub deadline: DateTime<Utc>,
    /// When an escalation is raised if the request is still waiting.
    pub escalate_at: DateTime<Utc>,
    #[serde(default)]
    pub escalated: bool,
    /// Every vote, counted or not, in arrival order.
    #[serde(default)]
    pub votes: Vec<VoteRecord>,
    /// The request hash in force when the request left `awaiting_approval`: what was decided
    /// stays what it was, whatever policy sets come later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_hash: Option<String>,
}

/// One vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteRecord {
    pub user: String,
    /// grpc | slack | mattermost | teams
    pub channel: String,
    /// mtls | token | chat
    pub identity: String,
    /// approve | deny
    pub decision: String,
    pub at: DateTime<Utc>,
    /// The request hash the vote was cast on.
    pub request_hash: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

impl ApprovalState {
    /// Distinct users whose approve votes were cast on `request_hash`.
    pub fn approvals_for(&self, request_hash: &str) -> Vec<&str> {
        let mut users: Vec<&str> = Vec::new();
        for v in &self.votes {
            if v.decision == "approve"
                && v.request_hash == request_hash
                && !users.contains(&v.user.as_str())
            {
                users.push(&v.user);
            }
        }
        users
    }
}

impl ActionRequest {
    /// Whether chat owes this request a message: it awaits approval and is not held back by
    /// the case's chat bound, or it was posted and the post must follow its changes.
    pub fn owes_chat(&self) -> bool {
        (self.state == ActionState::AwaitingApproval && !self.chat_held) || !self.chat.is_empty()
    }

    /// SHA-256 over what an approver approves: action kind, target, parameters and the policy
    /// set hash in force. If any of these changes, earlier approvals no longer count.
    pub fn request_hash(&self, policy_hash: &str) -> String {
        let mut h = Sha256::new();
        for part in [
            self.kind.as_str(),
            self.target.kind.as_str(),
            &self.target.id,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(
            serde_json::to_string(&self.parameters)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update([0]);
        h.update(policy_hash.as_bytes());
        hex::encode(h.finalize())
    }
}

/// The idempotency key of (case, playbook step, action, target).
pub fn idempotency_key(
    case_id: &str,
    playbook: &str,
    step: &str,
    kind: ActionKind,
    target: &Target,
) -> String {
    let mut h = Sha256::new();
    for part in [
        case_id,
        playbook,
        step,
        kind.as_str(),
        target.kind.as_str(),
        &target.id,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ActionKind::ALL {
            assert_eq!(ActionKind::parse(k.as_str()), Some(k));
            if let Some(inv) = k.inverse() {
                assert_eq!(inv.inverse(), Some(k));
                assert_eq!(inv.target_kind(), k.target_kind());
            }
        }
        assert_eq!(ActionKind::parse("isolate"), None);
        for t in [Tier::Auto, Tier::OneApprover, Tier::TwoPerson, Tier::Denied] {
            assert_eq!(Tier::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn state_machine() {
        use ActionState::*;
        assert!(Proposed.can_become(AwaitingApproval));
        assert!(AwaitingApproval.can_become(Expired));
        assert!(Executing.can_become(Unknown));
        assert!(Unknown.can_become(Succeeded));
        assert!(
            !Unknown.can_become(Executing),
            "unknown is resolved by probe, not resend"
        );
        assert!(!Denied.can_become(Approved));
        assert!(
            !Proposed.can_become(Executing),
            "nothing runs without a decision"
        );
        assert!(!AwaitingApproval.can_become(Executing));
    }

    #[test]
    fn idempotency_key_is_stable_and_distinct() {
        let t = Target {
            kind: TargetKind::Host,
            id: "ws-042".into(),
        };
        let a = idempotency_key("c1", "pb", "isolate", ActionKind::IsolateHost, &t);
        assert_eq!(
            a,
            idempotency_key("c1", "pb", "isolate", ActionKind::IsolateHost, &t)
        );
        assert_ne!(
            a,
            idempotency_key("c2", "pb", "isolate", ActionKind::IsolateHost, &t)
        );
    }
}
