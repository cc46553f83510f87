//! Learning in the engine: proposals made when a case closes, and accepting or dismissing them.
//!
//! Owns: the closure index by rule (`lr/`), building `learn`'s inputs from stored cases, alerts
//! and action requests, storing proposals (`lp/`, indexed by case under `lq/`) with a
//! `learning_proposed` record each time one is made or updated, the accept / dismiss operations
//! (case operations `accept_proposal` / `dismiss_proposal`, so the same Cedar check, identity and
//! refusal records as every other case operation; accepting writes the proposal's files into
//! `[learning] proposals_dir` before the acceptance is recorded), and moving a closed case to
//! `learned` once every proposal learned from it is resolved (a closure that taught nothing
//! stays `closed`, and so can still be reopened). Nothing here edits the live configuration.

use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::case::Disposition;
use crate::learn::{
    self, ClosedCase, HistAlert, Proposal, ProposalState, Resolution, StepDecision, Verdict,
};
use lifecycle::case_links;

/// `[learning]`: where accepted proposals are written and how tuning is judged.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LearningConfig {
    /// Accepted proposals' files are written here, for review (never into the live config).
    pub proposals_dir: std::path::PathBuf,
    /// False-positive closures of one rule on one entity before a tuning is proposed.
    pub min_false_positives: usize,
    /// How far back those false positives count (days).
    pub window_days: i64,
    /// The proposed suppression's lifetime (days).
    pub suppression_days: i64,
    /// The `owner` of proposed suppressions.
    pub suppression_owner: String,
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig {
            proposals_dir: "./proposals".into(),
            min_false_positives: 3,
            window_days: 14,
            suppression_days: 90,
            suppression_owner: "soc".into(),
        }
    }
}

impl LearningConfig {
    pub fn validate(&self, p: &mut impl FnMut(&str, String)) {
        if !(2..=1000).contains(&self.min_false_positives) {
            p(
                "learning.min_false_positives",
                "must be between 2 and 1000".into(),
            );
        }
        if !(1..=365).contains(&self.window_days) {
            p("learning.window_days", "must be between 1 and 365".into());
        }
        if !(1..=3650).contains(&self.suppression_days) {
            p(
                "learning.suppression_days",
                "must be between 1 and 3650".into(),
            );
        }
        if self.suppression_owner.trim().is_empty() {
            p("learning.suppression_owner", "must not be empty".into());
        }
        if self.proposals_dir.as_os_str().is_empty() {
            p("learning.proposals_dir", "must not be empty".into());
        }
    }

    fn tuning(&self) -> learn::TuningParams {
        learn::TuningParams {
            min_false_positives: self.min_false_positives,
            window: chrono::Duration::days(self.window_days),
            suppression_days: self.suppression_days,
        }
    }
}

/// What the closure index keeps per closed case.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ClosureMark {
    disposition: Disposition,
    at: DateTime<Utc>,
}

pub fn verdict(d: Disposition) -> Verdict {
    match d {
        Disposition::TruePositive => Verdict::TruePositive,
        Disposition::BenignTruePositive => Verdict::BenignTruePositive,
        Disposition::FalsePositive => Verdict::FalsePositive,
        Disposition::Duplicate => Verdict::Duplicate,
    }
}

/// The Cedar request a step was decided on, in the decision record's JSON shape, rebuilt from
/// what the action request keeps (`decision_input`).
fn step_request(a: &ActionRequest) -> Option<StepDecision> {
    let input = a.decision_input.as_ref()?;
    let tier = a.tier?;
    let principal = json!({"type": format!("{}::Playbook", policy::NS), "id": a.playbook});
    let resource = json!({
        "type": format!("{}::{}", policy::NS, policy::target_type(a.target.kind)),
        "id": a.target.id,
    });
    Some(StepDecision {
        request: json!({
            "principal": principal,
            "action": {"type": format!("{}::Action", policy::NS), "id": a.kind.as_str()},
            "resource": resource,
            "context": input.context,
            "entities": [
                {"uid": principal, "attrs": {"family": input.family}, "parents": []},
                {"uid": resource, "attrs": input.resource_attrs, "parents": []},
            ],
        }),
        tier,
    })
}

impl Engine {
    /// After a case closed in `txn`: index the closure by rule, make the case's proposals (and,
    /// for a false positive, the tuning proposals of its rules), and move the case to `learned`
    /// if nothing was learned from it.
    pub(super) fn learn_from_closure(
        &mut self,
        txn: &mut Txn,
        case_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let Some(case) = txn.get_json::<Case>(&store, &keys::case(case_id))? else {
            return Ok(());
        };
        let Some(closure) = case.closure.clone() else {
            return Ok(());
        };
        let mut rules = BTreeSet::new();
        rules.insert(case.rule_id.clone());
        for id in &case.alert_ids {
            if let Some(a) = txn.get_json::<StoredAlert>(&store, &keys::alert(id))? {
                rules.insert(a.alert.fields.rule.id.clone());
            }
        }
        for r in &rules {
            txn.put_json(
                keys::rule_closure(r, case_id),
                &ClosureMark {
                    disposition: closure.disposition,
                    at: now,
                },
            )?;
        }
        let mut steps = Vec::new();
        for id in &case.action_ids {
            if let Some(a) = txn.get_json::<ActionRequest>(&store, &keys::action(id))?
                && a.rollback_of.is_none()
                && let Some(s) = step_request(&a)
            {
                steps.push(s);
            }
        }
        let v = verdict(closure.disposition);
        let helped = closure.helped.clone().unwrap_or_default();
        let closed = ClosedCase {
            case_id: case.case_id.clone(),
            verdict: v,
            closed_at: now,
            closed_by: closure.by.clone(),
            reason: closure.reason.clone(),
            rule_ids: rules.iter().cloned().collect(),
            helped_intel: helped.intel_ref,
            helped_rule: helped.rule,
            missed: closure.missed.clone(),
            steps,
        };
        let mut fresh = learn::for_case(&closed);
        if v == Verdict::FalsePositive {
            let cfg = self.parts.learning.clone();
            for r in &rules {
                let history = self.rule_history(txn, r, &case)?;
                fresh.extend(learn::tuning(
                    r,
                    &history,
                    cfg.tuning(),
                    &cfg.suppression_owner,
                    now,
                ));
            }
        }
        let mut ours = self.case_proposal_ids(txn, case_id)?;
        for p in fresh {
            let stored = txn.get_json::<Proposal>(&store, &keys::proposal(&p.id))?;
            let Some(p) = learn::merge(stored.as_ref(), p) else {
                continue;
            };
            txn.put_json(keys::proposal(&p.id), &p)?;
            for c in &p.cases {
                txn.put(keys::case_proposal(c, &p.id), Vec::new());
            }
            if p.cases.iter().any(|c| c == case_id) {
                ours.insert(p.id.clone());
            }
            txn.audit(
                AuditKind::LearningProposed,
                Links {
                    case_id: Some(case_id.to_string()),
                    ..Links::default()
                },
                now,
                json!({"proposal": p, "updated": stored.is_some()}),
            )?;
        }
        self.learned_if_done(txn, case_id, &ours, now)
    }

    /// Every alert of the closed cases indexed under `rule` (each judged by its case's
    /// current closure: a reopened case no longer counts), plus `current`'s.
    fn rule_history(
        &self,
        txn: &Txn,
        rule: &str,
        current: &Case,
    ) -> Result<Vec<HistAlert>, StoreError> {
        let store = &self.parts.store;
        let prefix = keys::rule_closures_prefix(rule);
        // Through the transaction: a case of this rule closed in this batch, or in the commit
        // in flight, is history too.
        let mut case_ids: BTreeSet<String> = txn
            .keys_under(store, &prefix)?
            .into_iter()
            .filter_map(|k| {
                std::str::from_utf8(&k[prefix.len()..])
                    .ok()
                    .map(str::to_string)
            })
            .collect();
        case_ids.insert(current.case_id.clone());
        let mut out = Vec::new();
        for id in case_ids {
            let case = if id == current.case_id {
                current.clone()
            } else {
                match txn.get_json::<Case>(store, &keys::case(&id))? {
                    Some(c) => c,
                    None => continue,
                }
            };
            let Some(cl) = &case.closure else { continue };
            for aid in &case.alert_ids {
                let Some(a) = txn.get_json::<StoredAlert>(store, &keys::alert(aid))? else {
                    continue;
                };
                let f = &a.alert.fields;
                if f.rule.id != rule {
                    continue;
                }
                out.push(HistAlert {
                    alert_id: a.alert.alert_id.clone(),
                    case_id: case.case_id.clone(),
                    rule_id: f.rule.id.clone(),
                    rule_name: f.rule.name.clone(),
                    entities: f.entities.clone(),
                    time: f.time,
                    verdict: verdict(cl.disposition),
                });
            }
        }
        Ok(out)
    }

    /// The proposals of `case_id` as `txn` sees them (one made in this batch, or in the commit
    /// in flight, is still open, and keeps the case from `learned`).
    fn case_proposal_ids(&self, txn: &Txn, case_id: &str) -> Result<BTreeSet<String>, StoreError> {
        let prefix = keys::case_proposals_prefix(case_id);
        Ok(txn
            .keys_under(&self.parts.store, &prefix)?
            .into_iter()
            .filter_map(|k| {
                std::str::from_utf8(&k[prefix.len()..])
                    .ok()
                    .map(str::to_string)
            })
            .collect())
    }

    /// Moves a closed case to `learned` when it has proposals and none of them is open. A
    /// closure that taught nothing leaves the case `closed` (and so still reopenable).
    fn learned_if_done(
        &mut self,
        txn: &mut Txn,
        case_id: &str,
        proposals: &BTreeSet<String>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        let mut open = 0;
        for id in proposals {
            if let Some(p) = txn.get_json::<Proposal>(&store, &keys::proposal(id))?
                && p.state == ProposalState::Open
            {
                open += 1;
            }
        }
        if open > 0 || proposals.is_empty() {
            return Ok(());
        }
        let Some(case) = txn.get_json::<Case>(&store, &keys::case(case_id))? else {
            return Ok(());
        };
        if case.closure.is_none() {
            return Ok(());
        }
        let reason = format!(
            "every learning proposal resolved ({})",
            proposals.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        self.mark_learned(txn, case_id, &reason, now)?;
        Ok(())
    }

    /// The kind of the proposal an `accept_proposal` / `dismiss_proposal` operation names, for
    /// its Cedar request ("" for other operations or an unknown proposal).
    pub(super) fn proposal_kind_of(&self, txn: &Txn, kind: &CaseOpKind) -> String {
        match kind {
            CaseOpKind::AcceptProposal { proposal_id, .. }
            | CaseOpKind::DismissProposal { proposal_id, .. } => txn
                .get_json::<Proposal>(&self.parts.store, &keys::proposal(proposal_id))
                .ok()
                .flatten()
                .map(|p| p.kind.as_str().to_string())
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// Accepts or dismisses a proposal of `case` (the operation was authorised). Accepting
    /// writes its files first; a proposal already resolved, or not learned from this case, is a
    /// conflict. Then every case it was learned from that has nothing open left is `learned`.
    pub(super) fn resolve_proposal(
        &mut self,
        txn: &mut Txn,
        case: &Case,
        op: &CaseOp,
        now: DateTime<Utc>,
    ) -> Result<Result<(), CaseOpError>, StoreError> {
        let (proposal_id, accept, reason) = match &op.kind {
            CaseOpKind::AcceptProposal {
                proposal_id,
                reason,
            } => (proposal_id.as_str(), true, reason.as_deref()),
            CaseOpKind::DismissProposal {
                proposal_id,
                reason,
            } => (proposal_id.as_str(), false, Some(reason.as_str())),
            _ => return Ok(Ok(())),
        };
        let store = self.parts.store.clone();
        let Some(mut p) = txn.get_json::<Proposal>(&store, &keys::proposal(proposal_id))? else {
            return Ok(Err(CaseOpError::NotFound(format!(
                "learning proposal {proposal_id}"
            ))));
        };
        if !p.cases.contains(&case.case_id) {
            return Ok(Err(CaseOpError::Invalid(format!(
                "learning proposal {proposal_id} was not learned from case {}",
                case.case_id
            ))));
        }
        if p.state != ProposalState::Open {
            return Ok(Err(CaseOpError::Conflict(format!(
                "learning proposal {proposal_id} is already {}",
                p.state.as_str()
            ))));
        }
        let mut written = Vec::new();
        if accept {
            match write_files(&self.parts.learning.proposals_dir, &p) {
                Ok(w) => written = w,
                Err(e) => {
                    return Ok(Err(CaseOpError::Conflict(format!(
                        "cannot write learning proposal {proposal_id}'s files: {e}"
                    ))));
                }
            }
        }
        p.state = if accept {
            ProposalState::Accepted
        } else {
            ProposalState::Dismissed
        };
        p.updated_at = now;
        p.resolution = Some(Resolution {
            accepted: accept,
            by: op.user.clone(),
            channel: op.channel.clone(),
            at: now,
            reason: reason.map(str::to_string),
            written: written.clone(),
        });
        txn.put_json(keys::proposal(proposal_id), &p)?;
        txn.audit(
            if accept {
                AuditKind::LearningAccepted
            } else {
                AuditKind::LearningDismissed
            },
            case_links(case),
            now,
            json!({"proposal_id": proposal_id, "kind": p.kind.as_str(), "by": op.user,
                   "channel": op.channel, "identity": op.identity, "reason": reason,
                   "written": written}),
        )?;
        for c in p.cases.clone() {
            let ids = self.case_proposal_ids(txn, &c)?;
            self.learned_if_done(txn, &c, &ids, now)?;
        }
        Ok(Ok(()))
    }
}

/// Writes a proposal's files under `dir` (each through a temporary file, synced, renamed). A
/// file that exists with the same contents is left alone; with other contents it is refused
/// (never overwritten). Returns the paths written.
fn write_files(dir: &Path, p: &Proposal) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for f in &p.files {
        if !learn::safe_file_name(&f.name) {
            return Err(format!("unsafe file name {:?}", f.name));
        }
        let path = dir.join(&f.name);
        if let Ok(existing) = std::fs::read(&path) {
            if existing == f.contents.as_bytes() {
                out.push(path.display().to_string());
                continue;
            }
            return Err(format!(
                "{} exists with other contents; it is never overwritten",
                path.display()
            ));
        }
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let tmp = parent.join(format!(".{}.tmp", p.id));
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut fh = std::fs::File::create(&tmp)?;
            fh.write_all(f.contents.as_bytes())?;
            fh.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(parent)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot write {}: {e}", path.display()));
        }
        out.push(path.display().to_string());
    }
    Ok(out)
}

/// One stored proposal.
pub fn proposal(store: &Store, id: &str) -> Result<Option<Proposal>, StoreError> {
    store.get_json(&keys::proposal(id))
}

/// Stored proposals, newest first: those learned from `case_id` when given, else all; at most
/// `limit` of those that pass `keep`.
pub fn proposals(
    store: &Store,
    case_id: Option<&str>,
    keep: impl Fn(&Proposal) -> bool,
    limit: usize,
) -> Result<Vec<Proposal>, StoreError> {
    let mut all: Vec<Proposal> = match case_id {
        Some(c) => {
            let prefix = keys::case_proposals_prefix(c);
            let mut v = Vec::new();
            for k in store.keys_while(&prefix, |_| true)? {
                if let Ok(id) = std::str::from_utf8(&k[prefix.len()..])
                    && let Some(p) = proposal(store, id)?
                {
                    v.push(p);
                }
            }
            v
        }
        None => store
            .scan_json::<Proposal>(keys::PROPOSAL_PREFIX, None, usize::MAX)?
            .into_iter()
            .map(|(_, p)| p)
            .collect(),
    };
    all.retain(|p| keep(p));
    all.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
    all.truncate(limit);
    Ok(all)
}
