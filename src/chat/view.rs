//! What a chat message about an approval request shows, independent of the platform: the
//! action and target, tier and reasons, blast radius, case summary and evidence, deadline,
//! votes so far and the request's state. Each platform lays the same [`View`] out in its own
//! format; the hash of the view tells whether a posted message is behind.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::action::{ActionRequest, ActionState};
use crate::case::Case;

/// Longest text of one Slack section block (Slack refuses more).
pub const SECTION_LIMIT: usize = 3000;
/// Longest top-level message text.
pub const TEXT_LIMIT: usize = 4000;

#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub action_id: String,
    /// "Isolate host", "Revoke sessions"...
    pub action: String,
    /// The action kind as policies name it (`isolate_host`).
    pub kind: String,
    pub target: String,
    pub connector: String,
    /// auto | one_approver | two_person | denied
    pub tier: String,
    pub reasons: Vec<String>,
    /// "production / critical (owner payments)"
    pub blast_radius: String,
    /// "Case 01H… — Password spray (high, 3 alerts)"
    pub case: String,
    /// Rule, techniques, intel and asset facts the decision saw.
    pub evidence: Vec<String>,
    pub requester: String,
    pub deadline: Option<DateTime<Utc>>,
    /// "alice approve (grpc, mtls)"
    pub votes: Vec<String>,
    /// "Awaiting approval: 1 of 2", "Approved", "Expired: it will never run"...
    pub status: String,
    /// Buttons are shown only while this holds.
    pub pending: bool,
    /// Thread notices this state calls for (`escalation`, `expired`).
    pub notices: Vec<String>,
}

fn label(kind: &str) -> String {
    let mut s = kind.replace('_', " ");
    if let Some(first) = s.get(0..1) {
        let up = first.to_uppercase();
        s.replace_range(0..1, &up);
    }
    s
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() && s != "unknown" => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(a) if !a.is_empty() => Some(
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        _ => None,
    }
}

impl View {
    pub fn of(a: &ActionRequest, case: Option<&Case>, policy_hash: &str) -> View {
        let input = a.decision_input.as_ref();
        let attr = |k: &str| input.and_then(|i| text_of(i.resource_attrs.get(k)));
        let ctx = |path: &[&str]| {
            let mut v = input.and_then(|i| i.context.get(path[0]));
            for p in &path[1..] {
                v = v.and_then(|x| x.get(p));
            }
            text_of(v)
        };
        let mut blast = format!(
            "{} / {}",
            attr("environment").unwrap_or_else(|| "unknown environment".into()),
            attr("criticality").unwrap_or_else(|| "unknown criticality".into()),
        );
        if let Some(owner) = attr("owner") {
            blast.push_str(&format!(" (owner {owner})"));
        }
        if let Some(tags) = attr("tags") {
            blast.push_str(&format!(", tags: {tags}"));
        }
        let mut evidence = Vec::new();
        let mut fact = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                evidence.push(format!("{name}: {v}"));
            }
        };
        fact("rule", ctx(&["alert", "rule_name"]));
        fact("severity", ctx(&["alert", "severity"]));
        fact("confidence", ctx(&["alert", "confidence"]));
        fact("ATT&CK", ctx(&["alert", "techniques"]));
        fact(
            "intel matches",
            ctx(&["intel_matches"]).filter(|n| n != "0"),
        );
        fact(
            "intel confidence",
            attr("intel_confidence").filter(|n| n != "0"),
        );
        fact("intel source", attr("intel_source"));
        fact(
            "compromised-credential intel",
            attr("compromised_intel_confidence").filter(|n| n != "0"),
        );
        fact(
            "privileged account",
            attr("privileged").filter(|b| b == "true"),
        );
        fact("role", attr("role"));
        let case_line = match case {
            Some(c) => format!(
                "Case {} — {} ({}, {} alert{})",
                c.case_id,
                c.title,
                c.severity.as_str(),
                c.alert_ids.len(),
                if c.alert_ids.len() == 1 { "" } else { "s" }
            ),
            None => format!("Case {}", a.case_id),
        };
        let hash = a.request_hash(policy_hash);
        let (votes, counted, needed) = match &a.approval {
            Some(ap) => {
                let counted = ap.decided_hash.as_deref().map_or_else(
                    || ap.approvals_for(&hash).len(),
                    |h| ap.approvals_for(h).len(),
                );
                (
                    ap.votes
                        .iter()
                        .map(|v| {
                            format!("{} {} ({}, {})", v.user, v.decision, v.channel, v.identity)
                        })
                        .collect(),
                    counted,
                    ap.needed,
                )
            }
            None => (vec![], 0, 0),
        };
        let pending = a.state == ActionState::AwaitingApproval;
        let status = match a.state {
            ActionState::AwaitingApproval => {
                format!("Awaiting approval: {counted} of {needed}")
            }
            ActionState::Expired => "Expired: the deadline passed; it will never run".into(),
            ActionState::Rejected => "Rejected".into(),
            s => {
                let mut t = label(s.as_str());
                if let Some(o) = a.execution.as_ref().and_then(|e| e.outcome.as_deref()) {
                    t.push_str(&format!(": {o}"));
                }
                t
            }
        };
        let mut notices = Vec::new();
        if a.approval.as_ref().is_some_and(|ap| ap.escalated) {
            notices.push("escalation".to_string());
        }
        if a.state == ActionState::Expired {
            notices.push("expired".to_string());
        }
        View {
            action_id: a.action_id.clone(),
            action: label(a.kind.as_str()),
            kind: a.kind.as_str().to_string(),
            target: a.target.id.clone(),
            connector: a.connector.clone(),
            tier: a.tier.map_or("undecided", |t| t.as_str()).to_string(),
            reasons: a.reasons.clone(),
            blast_radius: blast,
            case: case_line,
            evidence,
            requester: a.requester.clone(),
            deadline: a.approval.as_ref().map(|ap| ap.deadline),
            votes,
            status,
            pending,
            notices,
        }
    }

    /// Changes whenever anything the message shows changes.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(serde_json::to_vec(self).unwrap_or_default()))
    }

    /// One line for notifications and fallbacks: "Approval needed: Isolate host ws-1 (one_approver)".
    pub fn headline(&self) -> String {
        let lead = if self.pending {
            "Approval needed"
        } else {
            "Approval request"
        };
        clip(
            &format!(
                "{lead}: {} {} ({}) — {}",
                self.action, self.target, self.tier, self.status
            ),
            TEXT_LIMIT,
        )
    }

    /// The request details as plain lines (`bold` marks the label), shared by every layout.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (
                "Action",
                format!(
                    "{} ({}) {} via {}",
                    self.action, self.kind, self.target, self.connector
                ),
            ),
            (
                "Tier",
                if self.reasons.is_empty() {
                    self.tier.clone()
                } else {
                    format!("{} — {}", self.tier, self.reasons.join("; "))
                },
            ),
            ("Blast radius", self.blast_radius.clone()),
            ("Case", self.case.clone()),
        ];
        if !self.evidence.is_empty() {
            out.push(("Evidence", self.evidence.join(" · ")));
        }
        out.push(("Requested by", self.requester.clone()));
        if let Some(d) = self.deadline {
            out.push(("Deadline", d.format("%Y-%m-%d %H:%M UTC").to_string()));
        }
        if !self.votes.is_empty() {
            out.push(("Votes", self.votes.join("; ")));
        }
        out.push(("Status", self.status.clone()));
        out.push(("Request", self.action_id.clone()));
        out
    }

    /// The text of a thread notice.
    pub fn notice_text(&self, notice: &str) -> String {
        match notice {
            "escalation" => format!(
                "Escalation: {} {} still needs approval{}",
                self.action,
                self.target,
                self.deadline
                    .map(|d| format!(" before {}", d.format("%Y-%m-%d %H:%M UTC")))
                    .unwrap_or_default()
            ),
            "expired" => format!(
                "Expired: {} {} was not approved in time and will never run",
                self.action, self.target
            ),
            other => other.to_string(),
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_respects_char_boundaries_and_limits() {
        let s = "é".repeat(5000);
        let c = clip(&s, SECTION_LIMIT);
        assert!(c.len() <= SECTION_LIMIT);
        assert!(c.ends_with("..."));
        assert_eq!(clip("short", 10), "short");
    }

    #[test]
    fn labels_read_as_words() {
        assert_eq!(label("isolate_host"), "Isolate host");
        assert_eq!(label(""), "");
    }
}
