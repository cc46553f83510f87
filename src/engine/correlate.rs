//! Correlation: which open case a new alert joins, and why.
//!
//! Owns: the two modes (`[correlation] mode`). `shared_entity`: the alert joins an open case
//! that shares one of its strong entities (`correlation.kinds`: host, user, cloud resource)
//! within `cases.correlation_window_secs`, across rules: the case of the rarest shared entity
//! (then the alert's own entity order), its most recently active one.
//! `rule_and_entity`: the same rule and the same first entity (the behaviour before). The
//! guard rails: a case stops growing at `correlation.max_alerts_per_case`, and an entity
//! named by more than `correlation.max_open_cases_per_entity` cases within the window (a
//! domain controller, a scanner) is not joined on, so one noisy entity cannot swallow the
//! queue. The indexes: `ck/<rule|entity>` (rule and entity) and `ec/<kind:value>` (the
//! recent cases naming an entity, bounded). Every decision comes with the reason the case
//! records.

use super::*;
use crate::config::CorrelationMode;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CorrelationEntry {
    case_id: String,
    last_seen: DateTime<Utc>,
}

/// The recent cases that name one entity, most recent first (bounded).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct EntityCases {
    cases: Vec<CorrelationEntry>,
}

/// Where a new alert goes.
pub(super) struct Correlation {
    /// The open case it joins; `None` opens a new case.
    pub joined: Option<Case>,
    /// Why, in words the case keeps.
    pub why: String,
}

impl Engine {
    /// Decides which open case `fields` joins (nothing is written).
    pub(super) fn correlate(
        &self,
        txn: &mut Txn,
        fields: &AlertFields,
        now: DateTime<Utc>,
    ) -> Result<Correlation, StoreError> {
        let store = self.parts.store.clone();
        let window = Duration::seconds(secs(self.parts.cases.correlation_window_secs));
        let c = &self.parts.correlation;
        if c.mode == CorrelationMode::RuleAndEntity {
            let Some(ck) = fields.correlation_key() else {
                return Ok(Correlation {
                    joined: None,
                    why: "new case (the alert names no entity to correlate on)".into(),
                });
            };
            if let Some(entry) =
                txn.get_json::<CorrelationEntry>(&store, &keys::correlation(&ck))?
                && now - entry.last_seen <= window
                && let Some(case) = txn.get_json::<Case>(&store, &keys::case(&entry.case_id))?
                && case.state.accepts_alerts()
                && case.alert_ids.len() < c.max_alerts_per_case
            {
                return Ok(Correlation {
                    joined: Some(case),
                    why: format!("same rule and first entity ({ck})"),
                });
            }
            return Ok(Correlation {
                joined: None,
                why: format!("new case keyed on {ck}"),
            });
        }
        // Each strong entity's most recently active joinable case; the rarest entity wins (it
        // says more than one that many cases share), then the alert's own order (its subject
        // first).
        let mut notes: Vec<String> = Vec::new();
        let mut best: Option<(usize, Case, String)> = None;
        for e in fields.entities.iter().filter(|e| c.kinds.contains(&e.kind)) {
            let key = e.key();
            let Some(entry) = txn.get_json::<EntityCases>(&store, &keys::entity_cases(&key))?
            else {
                continue;
            };
            let recent: Vec<&CorrelationEntry> = entry
                .cases
                .iter()
                .filter(|x| now - x.last_seen <= window)
                .collect();
            if recent.len() > c.max_open_cases_per_entity {
                notes.push(format!(
                    "{key} is named by {} recent cases (more than {}): too common to join on",
                    recent.len(),
                    c.max_open_cases_per_entity
                ));
                continue;
            }
            if best.as_ref().is_some_and(|(n, ..)| *n <= recent.len()) {
                continue;
            }
            for x in &recent {
                let Some(case) = txn.get_json::<Case>(&store, &keys::case(&x.case_id))? else {
                    continue;
                };
                if !case.state.accepts_alerts() {
                    continue;
                }
                if case.alert_ids.len() >= c.max_alerts_per_case {
                    notes.push(format!(
                        "case {} shares {key} but is full ({} alerts)",
                        case.case_id,
                        case.alert_ids.len()
                    ));
                    continue;
                }
                best = Some((recent.len(), case, key.clone()));
                break;
            }
        }
        let suffix = if notes.is_empty() {
            String::new()
        } else {
            format!("; {}", notes.join("; "))
        };
        Ok(match best {
            Some((_, case, key)) => Correlation {
                joined: Some(case),
                why: format!("shares {key} with this case within the window{suffix}"),
            },
            None => Correlation {
                joined: None,
                why: format!("new case: no open case shares a strong entity{suffix}"),
            },
        })
    }

    /// Records that `case_id` now holds an alert with `fields`' entities (the indexes the next
    /// alert is correlated by).
    pub(super) fn index_correlation(
        &self,
        txn: &mut Txn,
        fields: &AlertFields,
        case_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let c = &self.parts.correlation;
        if c.mode == CorrelationMode::RuleAndEntity {
            if let Some(ck) = fields.correlation_key() {
                txn.put_json(
                    keys::correlation(&ck),
                    &CorrelationEntry {
                        case_id: case_id.to_string(),
                        last_seen: now,
                    },
                )?;
            }
            return Ok(());
        }
        let window = Duration::seconds(secs(self.parts.cases.correlation_window_secs));
        // One more than the limit is enough to tell that an entity is too common.
        let keep = c.max_open_cases_per_entity + 1;
        let mut seen = std::collections::BTreeSet::new();
        for e in fields.entities.iter().filter(|e| c.kinds.contains(&e.kind)) {
            let key = e.key();
            if !seen.insert(key.clone()) {
                continue;
            }
            let k = keys::entity_cases(&key);
            let mut entry = txn.get_json::<EntityCases>(&store, &k)?.unwrap_or_default();
            entry
                .cases
                .retain(|x| x.case_id != case_id && now - x.last_seen <= window);
            entry.cases.insert(
                0,
                CorrelationEntry {
                    case_id: case_id.to_string(),
                    last_seen: now,
                },
            );
            entry.cases.truncate(keep);
            txn.put_json(k, &entry)?;
        }
        Ok(())
    }
}
