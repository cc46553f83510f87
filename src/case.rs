//! Cases: what groups alerts, and the case state machine from the seed.
//!
//! Owns: [`Case`], [`CaseState`] and its legal transitions. A case moves
//! `normalized → enriched → correlated → recommended → approved → executed → recovered → learned`;
//! `suppressed` and `closed` are side exits. Pure data: the engine persists it.

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
    /// decision); other skips are not allowed; any open state may be
    /// `suppressed` (a maintenance window or known exception matched before action was taken)
    /// or `closed`; a suppressed case may be closed.
    pub fn can_become(self, next: CaseState) -> bool {
        if self == CaseState::Closed {
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
            assert!(!Closed.can_become(s));
            assert_eq!(CaseState::parse(s.as_str()), Some(s));
        }
    }
}
