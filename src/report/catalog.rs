//! The rule catalog: the detection rules the loaded playbooks declare (`[[rules]]`: which
//! intel finding motivated a rule, when the finding was made, its priority and status), and
//! checking their metadata.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AlertRow, PRIORITIES};

/// One detection rule's metadata, declared in a playbook's `[[rules]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMeta {
    /// The rule id alerts carry (`rule.id`).
    pub id: String,
    /// The intel finding that motivated the rule (a CTI report or finding id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_ref: Option<String>,
    /// When the finding was made (RFC 3339): the start of the finding → detection lead time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_finding_at: Option<DateTime<Utc>>,
    /// `critical`, `high`, `medium` or `low`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_priority: Option<String>,
    /// `production` (the default) or `tuning`.
    #[serde(default = "production")]
    pub status: String,
}

fn production() -> String {
    "production".into()
}

/// Problems in a playbook's `[[rules]]` as (key, reason).
pub fn check_rules(rules: &[RuleMeta]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let key = |k: &str| format!("rules[{i}].{k}");
        if r.id.trim().is_empty() {
            out.push((key("id"), "must not be empty".into()));
        } else if !ids.insert(r.id.clone()) {
            out.push((key("id"), format!("duplicate rule id {:?}", r.id)));
        }
        if r.intel_ref.is_some() != r.intel_finding_at.is_some() {
            out.push((
                key("intel_finding_at"),
                "intel_ref and intel_finding_at go together (the lead time needs both)".into(),
            ));
        }
        if r.intel_ref.as_deref().is_some_and(|s| s.trim().is_empty()) {
            out.push((key("intel_ref"), "must not be empty".into()));
        }
        if let Some(p) = &r.intel_priority {
            if !PRIORITIES.contains(&p.as_str()) {
                out.push((
                    key("intel_priority"),
                    format!("{p:?} is not one of {PRIORITIES:?}"),
                ));
            }
            if r.intel_ref.is_none() {
                out.push((key("intel_priority"), "needs an intel_ref".into()));
            }
        }
        if !matches!(r.status.as_str(), "production" | "tuning") {
            out.push((
                key("status"),
                format!("{:?} is not `production` or `tuning`", r.status),
            ));
        }
    }
    out
}

/// Every rule declared by the loaded playbooks, by id (the first declaration wins).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub rules: BTreeMap<String, RuleMeta>,
}

impl Catalog {
    pub fn from_playbooks(playbooks: &[crate::playbook::Playbook]) -> Catalog {
        let mut rules = BTreeMap::new();
        for pb in playbooks {
            for r in &pb.rules {
                rules.entry(r.id.clone()).or_insert_with(|| r.clone());
            }
        }
        Catalog { rules }
    }

    /// The intel finding behind a rule, if any.
    pub fn intel_ref(&self, rule_id: &str) -> Option<&str> {
        self.rules.get(rule_id).and_then(|r| r.intel_ref.as_deref())
    }

    /// Whether an alert is tagged with the intel that motivated its rule: its rule carries an
    /// `intel_ref`, or the source tagged the alert itself (`intel_source`).
    pub fn intel_tagged(&self, a: &AlertRow) -> bool {
        self.intel_ref(&a.rule_id).is_some() || a.intel_source.is_some()
    }
}
