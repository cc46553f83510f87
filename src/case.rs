//! Cases: what groups alerts, and the case state machine from the seed.
//!
//! Owns: [`Case`], [`CaseState`] and its legal transitions, and the closure model: who owns a
//! case, its SLA, notes, the analyst's disposition when it is closed, how it recovered, the
//! owning team its playbook names, and the handoff timestamps. A case moves
//! `normalized → enriched → correlated → recommended → approved → executed → recovered → learned`;
//! `suppressed` and `closed` are side exits. A closed case keeps its [`Closure`] and may still
//! become `recovered` and then `learned`. Pure data: the engine persists it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{Entity, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    Normalized,
    Enriched,
    Correlated,
    Recommended,
    Approved,
    Executed,
    Recovered,
    Learned,
    Suppressed,
    Closed,
}

impl CaseState {
    pub const ALL: [CaseState; 10] = [
        CaseState::Normalized,
        CaseState::Enriched,
        CaseState::Correlated,
        CaseState::Recommended,
        CaseState::Approved,
        CaseState::Executed,
        CaseState::Recovered,
        CaseState::Learned,
        CaseState::Suppressed,
        CaseState::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CaseState::Normalized => "normalized",
            CaseState::Enriched => "enriched",
            CaseState::Correlated => "correlated",
            CaseState::Recommended => "recommended",
            CaseState::Approved => "approved",
            CaseState::Executed => "executed",
            CaseState::Recovered => "recovered",
            CaseState::Learned => "learned",
            CaseState::Suppressed => "suppressed",
            CaseState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<CaseState> {
        CaseState::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Position on the main line (`None` for the side exits).
    fn rank(self) -> Option<u8> {
        match self {
            CaseState::Normalized => Some(0),
            CaseState::Enriched => Some(1),
            CaseState::Correlated => Some(2),
            CaseState::Recommended => Some(3),
            CaseState::Approved => Some(4),
            CaseState::Executed => Some(5),
            CaseState::Recovered => Some(6),
            CaseState::Learned => Some(7),
            CaseState::Suppressed | CaseState::Closed => None,
        }
    }

    /// Legal moves: forward one step on the main line, `executed → learned` (nothing to
    /// recover), `approved → recommended` (a correlated alert added proposals that await a
    /// decision); other skips are not allowed; any state before `learned` may be
    /// `suppressed` (a maintenance window or known exception matched before action was taken)
    /// or `closed`; a suppressed case may be closed. A closed case may become `recovered` (its
    /// containments were released after closure) or `learned` (its learning is done); it keeps
    /// its closure. Reopening is [`CaseState::can_reopen_to`], not a forward move.
    pub fn can_become(self, next: CaseState) -> bool {
        if self == CaseState::Closed {
            return matches!(next, CaseState::Recovered | CaseState::Learned);
        }
        if self == CaseState::Learned {
            return false;
        }
        match (self.rank(), next.rank()) {
            (Some(a), Some(b)) => {
                b == a + 1
                    || (self == CaseState::Executed && next == CaseState::Learned)
                    // A correlated alert brought new proposals that await a decision.
                    || (self == CaseState::Approved && next == CaseState::Recommended)
            }
            (Some(a), None) => {
                next == CaseState::Closed || (next == CaseState::Suppressed && a <= 3)
            }
            (None, _) => self == CaseState::Suppressed && next == CaseState::Closed,
        }
    }

    /// Reopening: a `closed` case goes back to the state it was closed from (any state before
    /// `learned`; `suppressed` included).
    pub fn can_reopen_to(self, to: CaseState) -> bool {
        self == CaseState::Closed && to != CaseState::Closed && to != CaseState::Learned
    }

    /// Whether a correlated alert may still join the case: once the case's actions have run
    /// (executed and later) a new alert opens a new case instead.
    pub fn accepts_alerts(self) -> bool {
        self.rank().is_some_and(|r| r <= 4)
    }
}

impl fmt::Display for CaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Option<CaseState>,
    pub to: CaseState,
    pub at: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub case_id: String,
    pub state: CaseState,
    pub title: String,
    pub rule_id: String,
    /// The entity correlation groups on (`kind:value`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_entity: Option<String>,
    /// Highest severity among its alerts.
    pub severity: Severity,
    /// Alerts in the case (duplicates included), in arrival order.
    pub alert_ids: Vec<String>,
    pub duplicate_count: u64,
    /// Union of the alerts' entities.
    pub entities: Vec<Entity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed_by: Option<Suppressed>,
    pub action_ids: Vec<String>,
    pub history: Vec<Transition>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Approval requests of this case posted to chat (bounded by
    /// `cases.max_chat_requests_per_case`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chat_requests: u32,
    /// Why each alert joined (or opened) the case, in arrival order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub correlation: Vec<Joined>,
    /// Fan-out limits this case has hit and been escalated for (each escalates once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits_hit: Vec<String>,
    // The closure model (issue 17). Every field defaults, so older stored cases read the same.
    /// The analyst who owns the case (a cordon user id, as `assign_case` set it); `None` until
    /// someone is assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When the case breaches its SLA: opened + `cases.sla.<severity>_mins`. Fixed when the case
    /// opens (from the severity then); `None` for a case stored before SLAs existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_deadline: Option<DateTime<Utc>>,
    /// The SLA breach was escalated (once per case; the `sl/` time index is removed with it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sla_escalated: bool,
    /// Who owns the workflow that acted on the case: the first matching playbook's
    /// `owner_team`, `escalation_route` and `known_limitations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<Ownership>,
    /// Analyst notes, in the order written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// How the case was closed; `Some` from `close_case` until `reopen_case`. A closed case
    /// keeps it through `recovered` and `learned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closure: Option<Closure>,
    /// Closures undone by `reopen_case`, oldest first (replayable closure history).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reopened: Vec<Reopened>,
    /// How the case became `recovered`, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// Handoff timestamps (from the engine's clock) for cycle-time metrics.
    #[serde(default)]
    pub handoffs: Handoffs,
}

/// The analyst's verdict on a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Malicious activity that needed a response.
    TruePositive,
    /// Real activity, correctly detected, but authorised or harmless (a pentest, an admin).
    BenignTruePositive,
    /// The detection was wrong.
    FalsePositive,
    /// Another case covers it (`Closure::duplicate_of`).
    Duplicate,
}

impl Disposition {
    pub const ALL: [Disposition; 4] = [
        Disposition::TruePositive,
        Disposition::BenignTruePositive,
        Disposition::FalsePositive,
        Disposition::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::TruePositive => "true_positive",
            Disposition::BenignTruePositive => "benign_true_positive",
            Disposition::FalsePositive => "false_positive",
            Disposition::Duplicate => "duplicate",
        }
    }

    pub fn parse(s: &str) -> Option<Disposition> {
        Disposition::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What credited a true positive: the intelligence and/or the rule that found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Helped {
    /// An intel reference (report id, finding id, feed entry) that motivated the detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_ref: Option<String>,
    /// The detection rule that found it (defaults to nothing; the case's `rule_id` is separate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// A closure: the disposition and why, who closed it and when, and for true positives what
/// helped and what was missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Closure {
    pub disposition: Disposition,
    /// The closure reason, in the analyst's words.
    pub reason: String,
    /// The user who closed it (identity from the channel).
    pub by: String,
    pub at: DateTime<Utc>,
    /// The state the case was closed from (where `reopen_case` returns it).
    pub from: CaseState,
    /// True positives only: what helped find it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helped: Option<Helped>,
    /// True positives only: what was missed (a detection gap, for the backlog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<String>,
    /// Duplicates only: the case this one duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    /// Action requests the closer cancelled (`cancel_pending`), by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancelled: Vec<String>,
}

/// A closure undone by a reopen, with who reopened it and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reopened {
    pub closure: Closure,
    pub by: String,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// One analyst note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// The author (identity from the channel).
    pub by: String,
    pub at: DateTime<Utc>,
    pub text: String,
}

/// How a case became `recovered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// `containment_released` (every containment undone), or `analyst` (`recover_case`).
    pub how: String,
    /// The analyst who said so; `None` when cordon derived it from the actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// The owner of the workflow that acted on a case, from its playbook (the service catalog).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// The playbook that declared it.
    pub playbook: String,
    /// The team that owns the workflow.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner_team: String,
    /// Where its escalations go: `chat:<route>` (a configured chat route) or `group:<id>`
    /// (an approver group in the entity files).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub escalation_route: String,
    /// What the playbook is known not to handle, shown with the case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_limitations: Vec<String>,
}

/// The handoffs of a case (SOC → IR → CTI), each stamped once, the first time it happens, from
/// the engine's clock. `opened` is `Case::created_at`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Handoffs {
    /// The first human action on the case: a vote on one of its requests, an assignment, a
    /// note, a closure or a recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_human_action: Option<DateTime<Utc>>,
    /// The first escalation to a person or team (SLA breach, approval half-deadline, failed or
    /// unknown action, fan-out bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ir_escalation: Option<DateTime<Utc>>,
    /// The latest closure (a reopen clears it; the next closure stamps it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<DateTime<Utc>>,
    /// When the case became `recovered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<DateTime<Utc>>,
    /// When the case became `learned` (every learning proposal accepted or dismissed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_done: Option<DateTime<Utc>>,
}

impl Handoffs {
    /// Stamps `slot` with `now` unless it already holds a time. Returns whether it stamped.
    pub fn stamp(slot: &mut Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        if slot.is_none() {
            *slot = Some(now);
            true
        } else {
            false
        }
    }
}

/// SLA per severity (`[cases.sla]`): minutes from opening until a case that is still open
/// (not closed, recovered or learned) is escalated as an SLA breach.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct SlaConfig {
    pub critical_mins: u64,
    pub high_mins: u64,
    pub medium_mins: u64,
    pub low_mins: u64,
    pub informational_mins: u64,
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            critical_mins: 60,
            high_mins: 240,
            medium_mins: 1440,
            low_mins: 4320,
            informational_mins: 10080,
        }
    }
}

/// The longest SLA accepted: one year.
pub const MAX_SLA_MINS: u64 = 525_600;

impl SlaConfig {
    /// Minutes allowed for a case of `severity`.
    pub fn mins(&self, severity: Severity) -> u64 {
        match severity {
            Severity::Critical => self.critical_mins,
            Severity::High => self.high_mins,
            Severity::Medium => self.medium_mins,
            Severity::Low => self.low_mins,
            Severity::Informational => self.informational_mins,
        }
    }

    /// When a case of `severity` opened at `opened` breaches its SLA.
    pub fn deadline(&self, severity: Severity, opened: DateTime<Utc>) -> DateTime<Utc> {
        let mins = i64::try_from(self.mins(severity).min(MAX_SLA_MINS)).unwrap_or(0);
        opened + chrono::Duration::minutes(mins)
    }

    /// Pure checks (`cases.sla.*`): every value from 1 to [`MAX_SLA_MINS`].
    pub fn validate(&self, p: &mut impl FnMut(&str, String)) {
        for (k, v) in [
            ("cases.sla.critical_mins", self.critical_mins),
            ("cases.sla.high_mins", self.high_mins),
            ("cases.sla.medium_mins", self.medium_mins),
            ("cases.sla.low_mins", self.low_mins),
            ("cases.sla.informational_mins", self.informational_mins),
        ] {
            if !(1..=MAX_SLA_MINS).contains(&v) {
                p(k, format!("must be from 1 to {MAX_SLA_MINS}"));
            }
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One alert's way into a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    pub alert_id: String,
    pub at: DateTime<Utc>,
    pub why: String,
}

/// Which suppression matched, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppressed {
    pub id: String,
    pub reason: String,
    pub owner: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use CaseState::*;

    #[test]
    fn main_line_moves_one_step_at_a_time() {
        let line = [
            Normalized,
            Enriched,
            Correlated,
            Recommended,
            Approved,
            Executed,
            Recovered,
            Learned,
        ];
        for w in line.windows(2) {
            assert!(w[0].can_become(w[1]), "{} -> {}", w[0], w[1]);
            if w[1] != Approved {
                assert!(
                    !w[1].can_become(w[0]),
                    "{} -> {} must not go back",
                    w[1],
                    w[0]
                );
            }
        }
        assert!(
            Approved.can_become(Recommended),
            "new proposals reopen the decision"
        );
        assert!(!Executed.can_become(Approved));
        assert!(Approved.accepts_alerts() && !Executed.accepts_alerts());
        assert!(!Normalized.can_become(Recommended));
        assert!(Executed.can_become(Learned));
    }

    #[test]
    fn side_exits() {
        assert!(Enriched.can_become(Suppressed));
        assert!(
            !Executed.can_become(Suppressed),
            "too late to suppress once acted on"
        );
        assert!(Suppressed.can_become(Closed));
        assert!(!Suppressed.can_become(Recommended));
        assert!(Recommended.can_become(Closed));
        for s in CaseState::ALL {
            assert_eq!(
                Closed.can_become(s),
                matches!(s, Recovered | Learned),
                "closed -> {s}"
            );
            assert!(!Learned.can_become(s), "learned is final: -> {s}");
            assert_eq!(CaseState::parse(s.as_str()), Some(s));
        }
        assert!(Recovered.can_become(Closed) && Executed.can_become(Closed));
        assert!(Closed.can_reopen_to(Executed) && Closed.can_reopen_to(Suppressed));
        assert!(!Closed.can_reopen_to(Learned) && !Executed.can_reopen_to(Approved));
    }
}
