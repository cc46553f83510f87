//! The audit vocabulary: every kind of record cordon writes to the audit store.
//!
//! Owns: the closed set of record kinds and their stored names. A record's kind is one of
//! these, never a free string, so a typo cannot invent a kind that `explain`, `replay` or an
//! auditor's query would miss. The names are what stores have always held (`audit export`
//! keeps its shape; older stores read the same).

use std::fmt;

macro_rules! kinds {
    ($($(#[$doc:meta])* $v:ident = $s:literal,)*) => {
        /// The kind of an audit record.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AuditKind {
            $($(#[$doc])* $v,)*
        }

        impl AuditKind {
            /// Every kind, in the order declared.
            pub const ALL: &'static [AuditKind] = &[$(AuditKind::$v,)*];

            /// The name stored in the record.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditKind::$v => $s,)*
                }
            }

            /// The kind a stored name stands for.
            pub fn parse(s: &str) -> Option<AuditKind> {
                match s {
                    $($s => Some(AuditKind::$v),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    /// An alert as it arrived (raw payload verbatim) and what it was normalized to.
    AlertReceived = "alert_received",
    /// An alert joined an open case.
    AlertCorrelated = "alert_correlated",
    /// An alert matched a suppression.
    AlertSuppressed = "alert_suppressed",
    /// What enrichment knew about an alert's entities.
    Enrichment = "enrichment",
    /// Enrichment sources that failed (the alert is kept).
    EnrichmentFailed = "enrichment_failed",
    /// A case moved from one state to another (or was opened).
    CaseTransition = "case_transition",
    /// A fan-out bound held back part of what an alert would set in motion.
    FanoutLimited = "fanout_limited",
    /// A playbook step proposed an action request.
    ActionProposed = "action_proposed",
    /// An action request moved from one state to another.
    ActionTransition = "action_transition",
    /// A Cedar decision: a step's tier, a vote, a re-check.
    PolicyDecision = "policy_decision",
    /// A policy set was put in force.
    PolicyReloaded = "policy_reloaded",
    /// A policy set did not load; the last good one stays in force.
    PolicyReloadFailed = "policy_reload_failed",
    /// An approval vote, counted or refused.
    Vote = "vote",
    /// An approval request passed half its deadline.
    ApprovalEscalated = "approval_escalated",
    /// A person has to look at an action or a case.
    Escalation = "escalation",
    /// A rollback (the inverse action) was requested.
    RollbackRequested = "rollback_requested",
    /// The executor claimed an action: the durable intent record.
    ExecutionIntent = "execution_intent",
    /// A run was taken up again after a restart or for reconciliation.
    ExecutionResumed = "execution_resumed",
    /// The target resolved to exactly one vendor object.
    TargetResolved = "target_resolved",
    /// The target did not resolve to exactly one vendor object: refused.
    TargetAmbiguous = "target_ambiguous",
    /// One exchange with a vendor (redacted).
    VendorExchange = "vendor_exchange",
    /// What a probe or poll read.
    ProbeResult = "probe_result",
    /// A vendor write is about to leave (durable before it does).
    WriteIntent = "write_intent",
    /// How the vendor answered a write.
    WriteResult = "write_result",
    /// A write's answer never came: the outcome is unknown until a probe decides.
    OutcomeUnknown = "outcome_unknown",
    /// A probe showed an earlier uncertain write had no effect.
    Reconciled = "reconciled",
    /// An unknown action is still unknown after another reconciliation.
    ReconcileUnresolved = "reconcile_unresolved",
    /// A pause before a retry.
    Retry = "retry",
    /// A vendor call in flight was dropped at shutdown.
    CallInterrupted = "call_interrupted",
    /// A dry run: every request rendered, none sent.
    DryRun = "dry_run",
    /// cordon's own case summary.
    CaseSummary = "case_summary",
    /// A chat post, update or thread notice, and how it went.
    ChatPost = "chat_post",
    /// A chat callback, accepted or refused.
    ChatCallback = "chat_callback",
    /// A signed checkpoint of the chain head ending at this record was taken.
    AuditCheckpoint = "audit_checkpoint",
    /// A console sign-in (token or OpenID Connect), accepted or refused.
    ConsoleSignIn = "console_sign_in",
    /// A console sign-out.
    ConsoleSignOut = "console_sign_out",
    /// A schedule fired (once, however many periods passed while the daemon was down).
    ScheduleFired = "schedule_fired",
    /// What a schedule's fire produced (a report, a digest) was delivered, or could not be.
    ScheduleDelivered = "schedule_delivered",
    /// An indicator block reached its expiry; its unblock is proposed through the policies.
    BlockExpired = "block_expired",
    /// A case's owner was set (`assign_case`).
    CaseAssigned = "case_assigned",
    /// An analyst's note on a case (`note_case`).
    CaseNote = "case_note",
    /// A case was closed with a disposition, reason, credit and misses (`close_case`).
    CaseClosed = "case_closed",
    /// A closed case was reopened (`reopen_case`); the closure it undid is in the record.
    CaseReopened = "case_reopened",
    /// A case was recovered: every containment released, or an analyst said so (`recover_case`).
    CaseRecovered = "case_recovered",
    /// An analyst's case operation was refused (Cedar, or the case's state); nothing changed.
    CaseOpRefused = "case_op_refused",
    /// Action requests cancelled by the closure of their case (`cancel_pending`).
    CaseRequestsCancelled = "case_requests_cancelled",
    /// Where an escalation was routed: the owner's chat route or approver group.
    EscalationRouted = "escalation_routed",
    /// A learning proposal was made (or updated) from a closed case.
    LearningProposed = "learning_proposed",
    /// A learning proposal was accepted (its files written for review).
    LearningAccepted = "learning_accepted",
    /// A learning proposal was dismissed.
    LearningDismissed = "learning_dismissed",
    /// The Cedar decision that allowed an analyst's case operation (a refused one is in
    /// `case_op_refused`): replayable like every other decision.
    CaseOpDecision = "case_op_decision",

    /// `cordon simulate` ran: who, which candidate set, the summary (changes nothing else).
    Simulation = "simulation",
    /// A step decided by the shadow policy set (`[policy.shadow]`): never acted on.
    ShadowDecision = "shadow_decision",

    /// A call by an AI agent (proposal, finding, MCP tool call), accepted or refused, with
    /// the agent's identity.
    AgentCall = "agent_call",
    /// An AI-generated finding on a case (summary, hypothesis, ATT&CK mapping, blast radius).
    AgentFinding = "agent_finding",

    /// What an alert's step decisions share (the alert's and case's context, a resource
    /// entity), stored once and named by hash from each `policy_decision`.
    DecisionInput = "decision_input",
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_name_and_reads_back() {
        let mut names = std::collections::BTreeSet::new();
        for k in AuditKind::ALL {
            assert!(names.insert(k.as_str()), "{k:?} shares its name");
            assert_eq!(AuditKind::parse(k.as_str()), Some(*k));
            assert!(
                k.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{k:?}"
            );
        }
        assert_eq!(AuditKind::parse("no_such_kind"), None);
    }
}
