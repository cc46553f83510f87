//! Re-deciding recorded decisions: what `cordon replay` and `cordon simulate` evaluate.
//!
//! Owns: finding the decision an audit record holds (a step's tier, a vote, a re-check when
//! the approvals were reached or right before execution), turning its recorded Cedar request
//! back into the request the engine made, deciding it again with a given policy set through the
//! same code path the daemon uses, and comparing the two decisions (tier, decision, determining
//! policies, errors). Pure apart from Cedar: the records come from the caller.

use super::*;
use crate::store::{AuditRecord, Store};

/// Which decision an audit record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A proposed step's tier (`policy_decision`).
    Step,
    /// An approver's vote (`vote`).
    Vote,
    /// The re-check once enough approvals were given (`policy_decision`, `approvals_reached`).
    ApprovalsReached,
    /// The re-check right before execution (`policy_decision`, `pre_execution`).
    PreExecution,
    /// An analyst's case operation (`case_op_decision`, or `case_op_refused`).
    CaseOp,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Step => "step",
            Phase::Vote => "vote",
            Phase::ApprovalsReached => "approvals_reached",
            Phase::PreExecution => "pre_execution",
            Phase::CaseOp => "case_op",
        }
    }
}

/// A decision as an audit record holds it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub phase: Phase,
    /// The approvals a re-check was made with.
    pub approvals: Option<u8>,
    pub record: DecisionRecord,
}

/// The decision an audit record of `kind` with `data` holds, if it holds one. `Err` when it
/// should hold one and what it holds does not read as a decision record.
pub fn recorded_decision(kind: &str, data: &Value) -> Option<Result<Recorded, String>> {
    let (phase, approvals, rec) = match kind {
        "policy_decision" => match data.get("phase").and_then(Value::as_str) {
            None => (Phase::Step, None, data),
            Some(p) => {
                let phase = match p {
                    "approvals_reached" => Phase::ApprovalsReached,
                    "pre_execution" => Phase::PreExecution,
                    other => return Some(Err(format!("unknown decision phase {other:?}"))),
                };
                let approvals = data
                    .get("approvals")
                    .and_then(Value::as_u64)
                    .map(|n| n.min(u64::from(u8::MAX)) as u8);
                (phase, approvals, data.get("record")?)
            }
        },
        "vote" => (Phase::Vote, None, data.get("detail")?.get("decision")?),
        "case_op_decision" => (Phase::CaseOp, None, data.get("record")?),
        "case_op_refused" => (Phase::CaseOp, None, data.get("decision")?),
        _ => return None,
    };
    Some(
        serde_json::from_value::<DecisionRecord>(rec.clone())
            .map(|record| Recorded {
                phase,
                approvals,
                record,
            })
            .map_err(|e| format!("unreadable decision record: {e}")),
    )
}

/// One field in which two decisions differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub field: &'static str,
    pub recorded: Value,
    pub replayed: Value,
}

/// Decides `r` again with `engine` (the set it was recorded with, for replay; a candidate set,
/// for simulation), through the same calls the engine made.
pub fn redecide(engine: &PolicyEngine, r: &Recorded) -> Result<DecisionRecord, String> {
    let req = serde_json::to_value(&r.record.request).map_err(|e| e.to_string())?;
    Ok(match r.phase {
        Phase::Step => engine.decide_step(step_request(&req)?),
        Phase::ApprovalsReached | Phase::PreExecution => {
            let approvals = r
                .approvals
                .ok_or("the re-check does not record its approvals")?;
            engine.recheck(step_request(&req)?, approvals).1
        }
        Phase::Vote => engine.authorize_vote(&vote_request(&req)?).record,
        Phase::CaseOp => {
            engine
                .authorize_case_op(&super::CaseOpRequest::from_request_json(&req)?)
                .record
        }
    })
}

/// Where `replayed` differs from `recorded` in what a decision is: tier, each probe's decision,
/// determining policies (by `@id`) and errors. Empty when they are identical.
pub fn compare(recorded: &DecisionRecord, replayed: &DecisionRecord) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut check = |field: &'static str, a: Value, b: Value| {
        if a != b {
            out.push(Difference {
                field,
                recorded: a,
                replayed: b,
            });
        }
    };
    check("tier", json!(recorded.tier), json!(replayed.tier));
    let decisions = |d: &DecisionRecord| {
        json!(
            d.probes
                .iter()
                .map(|p| format!("{}:{}", p.approvals, p.decision))
                .collect::<Vec<_>>()
        )
    };
    check("decision", decisions(recorded), decisions(replayed));
    // Determining policies and errors are sets: records written before they were sorted may
    // hold them in any order.
    let ids = |d: &DecisionRecord| {
        let mut ids: Vec<&str> = d.determining.iter().map(|d| d.id.as_str()).collect();
        ids.sort_unstable();
        json!(ids)
    };
    check("determining", ids(recorded), ids(replayed));
    let errors = |d: &DecisionRecord| {
        let mut e: Vec<&String> = d.errors.iter().collect();
        e.sort_unstable();
        json!(e)
    };
    check("errors", errors(recorded), errors(replayed));
    out
}

fn target_kind(cedar_type: &str) -> Option<TargetKind> {
    let ty = cedar_type.strip_prefix(NS)?.strip_prefix("::")?;
    [
        TargetKind::Case,
        TargetKind::Host,
        TargetKind::Account,
        TargetKind::Indicator,
        TargetKind::CloudResource,
    ]
    .into_iter()
    .find(|k| target_type(*k) == ty)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, String> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .ok_or_else(|| format!("the request has no {}", path.join(".")))?;
    }
    cur.as_str()
        .ok_or_else(|| format!("{} is not a string", path.join(".")))
}

/// The step request a recorded step request was made of.
fn step_request(req: &Value) -> Result<StepRequest, String> {
    let kind_s = str_at(req, &["action", "id"])?;
    let kind = ActionKind::parse(kind_s).ok_or_else(|| format!("unknown action {kind_s:?}"))?;
    let rtype = str_at(req, &["resource", "type"])?;
    let target = Target {
        kind: target_kind(rtype).ok_or_else(|| format!("unknown resource type {rtype:?}"))?,
        id: str_at(req, &["resource", "id"])?.to_string(),
    };
    let principal_type = str_at(req, &["principal", "type"])?;
    let principal_id = str_at(req, &["principal", "id"])?;
    let entities = req
        .get("entities")
        .and_then(Value::as_array)
        .ok_or("the request has no entities")?;
    let attrs_of = |ty: &str| {
        entities
            .iter()
            .find(|e| e["uid"]["type"].as_str() == Some(ty))
            .and_then(|e| e["attrs"].as_object().cloned())
    };
    // An agent's proposal has the agent as principal (no attributes), as the engine asked it.
    let (playbook, family) = if principal_type == format!("{NS}::Agent") {
        (
            format!("{}{principal_id}", crate::agent::PRINCIPAL_PREFIX),
            crate::agent::FAMILY.to_string(),
        )
    } else {
        let family = attrs_of(&format!("{NS}::Playbook"))
            .and_then(|a| a.get("family").and_then(Value::as_str).map(str::to_string))
            .ok_or("the request has no playbook family")?;
        (principal_id.to_string(), family)
    };
    let resource_attrs = attrs_of(rtype).ok_or("the request has no resource entity")?;
    let mut context = req
        .get("context")
        .and_then(Value::as_object)
        .cloned()
        .ok_or("the request has no context")?;
    context.remove("approvals");
    let step = context
        .get("step")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(StepRequest {
        playbook,
        family,
        step,
        kind,
        target,
        resource_attrs,
        context,
    })
}

/// The vote request a recorded vote request was made of.
fn vote_request(req: &Value) -> Result<VoteRequest, String> {
    let attrs = req
        .get("entities")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
        .map(|e| &e["attrs"])
        .ok_or("the vote request has no approval entity")?;
    let a = |k: &str| str_at(attrs, &[k]).map(str::to_string);
    let kind_s = a("action_kind")?;
    let target_s = a("target_type")?;
    let tier_s = a("tier")?;
    let target_kind = [
        TargetKind::Case,
        TargetKind::Host,
        TargetKind::Account,
        TargetKind::Indicator,
        TargetKind::CloudResource,
    ]
    .into_iter()
    .find(|k| k.as_str() == target_s)
    .ok_or_else(|| format!("unknown target type {target_s:?}"))?;
    Ok(VoteRequest {
        user: str_at(req, &["principal", "id"])?.to_string(),
        channel: str_at(req, &["context", "channel"])?.to_string(),
        identity: str_at(req, &["context", "identity"])?.to_string(),
        approvals: req["context"]["approvals"]
            .as_u64()
            .map(|n| n.min(u64::from(u8::MAX)) as u8)
            .ok_or("the vote request has no approvals")?,
        approval: ApprovalInfo {
            approval_id: str_at(req, &["resource", "id"])?.to_string(),
            action_kind: ActionKind::parse(&kind_s)
                .ok_or_else(|| format!("unknown action {kind_s:?}"))?,
            target: Target {
                kind: target_kind,
                id: a("target")?,
            },
            requester: a("requester")?,
            case_id: a("case_id")?,
            tier: Tier::parse(&tier_s).ok_or_else(|| format!("unknown tier {tier_s:?}"))?,
            environment: a("environment")?,
            criticality: a("criticality")?,
        },
    })
}

/// Which recorded decisions to take: all of them, or those of one case, action or alert, in a
/// time range (by the record's time).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub case_id: Option<String>,
    pub action_id: Option<String>,
    pub alert_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// Which of a filter's ids (case, action, alert) some audit record names as such, whatever the
/// record's kind or time. An id that no record names is not in the store (a typo, or an id of
/// another kind), which the commands refuse rather than report nothing to replay.
#[derive(Debug, Clone, Copy, Default)]
pub struct Named {
    case: bool,
    action: bool,
    alert: bool,
}

impl Named {
    /// Takes note of the ids of `filter` that `r` names.
    pub fn note(&mut self, filter: &Filter, r: &AuditRecord) {
        let b = &r.body;
        let names = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_some_and(|w| have.as_ref() == Some(w))
        };
        self.case |= names(&filter.case_id, &b.case_id);
        self.action |= names(&filter.action_id, &b.action_id);
        self.alert |= names(&filter.alert_id, &b.alert_id);
    }

    /// The ids `filter` gives that no noted record names, each with what it was given as
    /// (`"case"`, `"action"`, `"alert"`).
    pub fn missing(&self, filter: &Filter) -> Vec<(&'static str, String)> {
        [
            ("case", &filter.case_id, self.case),
            ("action", &filter.action_id, self.action),
            ("alert", &filter.alert_id, self.alert),
        ]
        .into_iter()
        .filter_map(|(what, id, seen)| match id {
            Some(id) if !seen => Some((what, id.clone())),
            _ => None,
        })
        .collect()
    }
}

impl Filter {
    pub fn takes(&self, r: &AuditRecord) -> bool {
        let b = &r.body;
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        eq(&self.case_id, &b.case_id)
            && eq(&self.action_id, &b.action_id)
            && eq(&self.alert_id, &b.alert_id)
            && self.since.is_none_or(|s| b.at >= s)
            && self.until.is_none_or(|u| b.at < u)
    }
}

/// Where a decision is in the store.
#[derive(Debug, Clone, Serialize)]
pub struct Place {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    pub policy_hash: String,
}

/// One decision that did not replay identically.
#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    #[serde(flatten)]
    pub place: Place,
    pub differences: Vec<Difference>,
}

/// What `cordon replay` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub replayed: u64,
    pub identical: u64,
    pub diverged: Vec<Divergence>,
    /// Decisions whose policy set the store does not hold (written before sets were kept):
    /// "policy text not recorded".
    pub not_recorded: u64,
    /// Decisions that could not be replayed (unreadable record, a kept set that does not load
    /// or does not hash to its key), each with why.
    pub failed: Vec<(u64, String)>,
    /// The filter's ids that no audit record names (see [`Named`]), each with what it was
    /// given as: nothing was replayed for them, and the commands refuse the run.
    #[serde(skip)]
    pub unknown: Vec<(&'static str, String)>,
}

impl ReplayReport {
    /// Every replayed decision identical, and none that could not be replayed.
    pub fn all_identical(&self) -> bool {
        self.diverged.is_empty() && self.failed.is_empty()
    }
}

/// The policy sets kept in a store, loaded once each.
pub struct KeptSets<'a> {
    store: Option<&'a Store>,
    /// Sets carried outside the store (an archive file's), by hash.
    carried: BTreeMap<String, PolicySource>,
    loaded: BTreeMap<String, Result<Arc<PolicyEngine>, String>>,
}

/// Why a kept set cannot be used.
pub const NOT_RECORDED: &str = "policy text not recorded";

impl<'a> KeptSets<'a> {
    pub fn new(store: &'a Store) -> KeptSets<'a> {
        KeptSets {
            store: Some(store),
            carried: BTreeMap::new(),
            loaded: BTreeMap::new(),
        }
    }

    /// Sets carried by an archive file (`cordon audit archive` keeps the sets its decisions
    /// were made with), keyed by the hash they were recorded under.
    pub fn carried(sets: BTreeMap<String, PolicySource>) -> KeptSets<'static> {
        KeptSets {
            store: None,
            carried: sets,
            loaded: BTreeMap::new(),
        }
    }

    fn source_of(&self, hash: &str) -> Result<Option<PolicySource>, String> {
        if let Some(s) = self.carried.get(hash) {
            return Ok(Some(s.clone()));
        }
        match self.store {
            Some(store) => store
                .get_json::<PolicySource>(&crate::store::policy_set_key(hash))
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// The set with this hash: `Ok(None)` when the store does not hold it.
    pub fn get(&mut self, hash: &str) -> Result<Option<Arc<PolicyEngine>>, String> {
        if !self.loaded.contains_key(hash) {
            let Some(src) = self.source_of(hash)? else {
                return Ok(None);
            };
            let engine = match load_recorded(&src) {
                Ok(e) if e.hash == hash => Ok(Arc::new(e)),
                Ok(e) => Err(format!(
                    "the kept policy set {hash} hashes to {} (altered in the store)",
                    e.hash
                )),
                Err(p) => Err(format!(
                    "the kept policy set {hash} does not load: {}",
                    p.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            };
            self.loaded.insert(hash.to_string(), engine);
        }
        match self.loaded.get(hash) {
            Some(Ok(e)) => Ok(Some(e.clone())),
            Some(Err(e)) => Err(e.clone()),
            None => Ok(None),
        }
    }

    /// The texts of the set with this hash, if kept.
    pub fn source(&self, hash: &str) -> Option<PolicySource> {
        self.source_of(hash).ok().flatten()
    }
}

/// Calls `f` with every audit record `filter` takes, in chain order, with the decision it holds
/// (if any).
pub fn each_decision(
    store: &Store,
    filter: &Filter,
    f: impl FnMut(&AuditRecord, Result<Recorded, String>),
) -> Result<(), crate::store::StoreError> {
    each_decision_noting(store, filter, &mut Named::default(), f)
}

/// [`each_decision`], also taking note in `named` of the filter's ids the records name.
fn each_decision_noting(
    store: &Store,
    filter: &Filter,
    named: &mut Named,
    mut f: impl FnMut(&AuditRecord, Result<Recorded, String>),
) -> Result<(), crate::store::StoreError> {
    let mut shared = SharedInputs::default();
    let mut from = 1;
    loop {
        let batch = store.audit_records(from, 4096)?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        from = last.body.seq + 1;
        for r in &batch {
            named.note(filter, r);
            if let Some(d) = recorded_in(&mut shared, filter, r) {
                f(r, d);
            }
        }
    }
}

/// The decision record `r` holds, if `filter` takes it, with its request put back together
/// from the shared inputs read before it (which `shared` takes note of, whatever the filter).
pub fn recorded_in(
    shared: &mut SharedInputs,
    filter: &Filter,
    r: &AuditRecord,
) -> Option<Result<Recorded, String>> {
    shared.note(&r.body.kind, &r.body.data);
    if !filter.takes(r) {
        return None;
    }
    let d = recorded_decision(&r.body.kind, &r.body.data)?;
    Some(d.and_then(|mut d| {
        shared.expand(&mut d.record)?;
        Ok(d)
    }))
}

fn place(r: &AuditRecord, d: &Recorded) -> Place {
    Place {
        seq: r.body.seq,
        at: r.body.at,
        phase: d.phase,
        case_id: r.body.case_id.clone(),
        action_id: r.body.action_id.clone(),
        policy_hash: d.record.policy_hash.clone(),
    }
}

/// Re-decides every recorded decision `filter` takes with the policy set it was recorded with.
pub fn replay(store: &Store, filter: &Filter) -> Result<ReplayReport, crate::store::StoreError> {
    let mut sets = KeptSets::new(store);
    let mut out = ReplayReport::default();
    let mut named = Named::default();
    each_decision_noting(store, filter, &mut named, |r, d| {
        replay_one(&mut sets, &mut out, r, d)
    })?;
    out.unknown = named.missing(filter);
    Ok(out)
}

/// Re-decides one recorded decision `d` (of record `r`) with the set it names, into `out`.
pub fn replay_one(
    sets: &mut KeptSets<'_>,
    out: &mut ReplayReport,
    r: &AuditRecord,
    d: Result<Recorded, String>,
) {
    let seq = r.body.seq;
    let d = match d {
        Ok(d) => d,
        Err(e) => return out.failed.push((seq, e)),
    };
    let engine = match sets.get(&d.record.policy_hash) {
        Ok(Some(e)) => e,
        Ok(None) => {
            out.not_recorded += 1;
            return;
        }
        Err(e) => return out.failed.push((seq, e)),
    };
    match redecide(&engine, &d) {
        Ok(again) => {
            out.replayed += 1;
            let differences = compare(&d.record, &again);
            if differences.is_empty() {
                out.identical += 1;
            } else {
                out.diverged.push(Divergence {
                    place: place(r, &d),
                    differences,
                });
            }
        }
        Err(e) => out.failed.push((seq, e)),
    }
}

/// One step decision that a candidate set decides differently.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    #[serde(flatten)]
    pub place: Place,
    pub action: String,
    pub target: String,
    pub from: Tier,
    pub to: Tier,
    /// `looser` (fewer approvals, or allowed where it was denied) or `stricter`.
    pub direction: &'static str,
    /// The candidate's determining policies.
    pub determining: Vec<String>,
    /// What would happen to the action, in words.
    pub outcome: String,
    /// Evaluation errors the candidate has that the recorded decision did not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub new_errors: Vec<String>,
}

/// What `cordon simulate` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimulationReport {
    pub candidate_hash: String,
    pub decisions: u64,
    pub unchanged: u64,
    pub changes: Vec<Change>,
    /// (action kind, old tier → new tier) → count.
    pub by_transition: BTreeMap<String, u64>,
    /// Candidate determining policy → changed decisions it determines.
    pub by_policy: BTreeMap<String, u64>,
    /// Cases with at least one changed decision.
    pub cases: Vec<String>,
    /// Decisions with evaluation errors under the candidate and none as recorded.
    pub new_errors: u64,
    pub looser: u64,
    pub stricter: u64,
    /// Mean evaluation time per decision with the recorded sets (where kept) and with the
    /// candidate, in microseconds, over the same decisions.
    pub recorded_micros_per_decision: Option<f64>,
    pub candidate_micros_per_decision: f64,
    /// Step records that could not be read, with why.
    pub failed: Vec<(u64, String)>,
    /// The filter's ids that no audit record names (see [`Named`]).
    #[serde(skip)]
    pub unknown: Vec<(&'static str, String)>,
}

fn outcome_words(from: Tier, to: Tier) -> String {
    let what = |t: Tier| match t {
        Tier::Auto => "ran automatically",
        Tier::OneApprover => "needed one approver",
        Tier::TwoPerson => "needed two approvers",
        Tier::Denied => "was denied",
    };
    let now = |t: Tier| match t {
        Tier::Auto => "would now run automatically",
        Tier::OneApprover => "would now need one approver",
        Tier::TwoPerson => "would now need two approvers",
        Tier::Denied => "would now be denied",
    };
    format!("an action that {} {}", what(from), now(to))
}

/// Adds one re-decided step to a simulation report.
fn note(
    out: &mut SimulationReport,
    cases: &mut std::collections::BTreeSet<String>,
    r: &AuditRecord,
    d: &Recorded,
    again: &DecisionRecord,
) {
    let new_errors: Vec<String> = again
        .errors
        .iter()
        .filter(|e| !d.record.errors.contains(e))
        .cloned()
        .collect();
    if !new_errors.is_empty() && d.record.errors.is_empty() {
        out.new_errors += 1;
    }
    let (from, to) = (d.record.tier, again.tier);
    if from == to && new_errors.is_empty() {
        out.unchanged += 1;
        return;
    }
    let req = serde_json::to_value(&d.record.request).unwrap_or_default();
    let action = req["action"]["id"].as_str().unwrap_or("?").to_string();
    let target = req["resource"]["id"].as_str().unwrap_or("?").to_string();
    let direction = if to < from { "looser" } else { "stricter" };
    if from != to {
        if to < from {
            out.looser += 1;
        } else {
            out.stricter += 1;
        }
        *out.by_transition
            .entry(format!("{action}: {from} → {to}"))
            .or_default() += 1;
    }
    let determining: Vec<String> = again.determining.iter().map(|d| d.id.clone()).collect();
    for id in &determining {
        *out.by_policy.entry(id.clone()).or_default() += 1;
    }
    if let Some(c) = &r.body.case_id {
        cases.insert(c.clone());
    }
    out.changes.push(Change {
        place: place(r, d),
        action,
        target,
        from,
        to,
        direction: if from == to { "errors" } else { direction },
        determining,
        outcome: if from == to {
            "the same tier, with new evaluation errors".into()
        } else {
            outcome_words(from, to)
        },
        new_errors,
    });
}

/// Reads back the shadow decisions (`[policy.shadow]`) `filter` takes, as a simulation of the
/// shadow set against the decisions in force (`cordon simulate --shadow`).
pub fn shadow_report(
    store: &Store,
    filter: &Filter,
) -> Result<SimulationReport, crate::store::StoreError> {
    let mut out = SimulationReport::default();
    let mut cases = std::collections::BTreeSet::new();
    let mut shared = SharedInputs::default();
    let mut named = Named::default();
    let mut from = 1;
    loop {
        let batch = store.audit_records(from, 4096)?;
        let Some(last) = batch.last() else {
            break;
        };
        from = last.body.seq + 1;
        for r in batch.iter() {
            named.note(filter, r);
            shared.note(&r.body.kind, &r.body.data);
            if r.body.kind != "shadow_decision" || !filter.takes(r) {
                continue;
            }
            let data = &r.body.data;
            let parsed = serde_json::from_value::<DecisionRecord>(data["record"].clone())
                .map_err(|e| e.to_string())
                .and_then(|mut shadow| {
                    shared.expand(&mut shadow)?;
                    let tier: Tier = serde_json::from_value(data["tier_in_force"].clone())
                        .map_err(|e| e.to_string())?;
                    Ok((shadow, tier))
                });
            let (shadow, tier) = match parsed {
                Ok(p) => p,
                Err(e) => {
                    out.failed
                        .push((r.body.seq, format!("unreadable shadow decision: {e}")));
                    continue;
                }
            };
            out.candidate_hash = shadow.policy_hash.clone();
            let in_force = Recorded {
                phase: Phase::Step,
                approvals: None,
                record: DecisionRecord {
                    tier,
                    errors: vec![],
                    ..shadow.clone()
                },
            };
            out.decisions += 1;
            note(&mut out, &mut cases, r, &in_force, &shadow);
        }
    }
    out.cases = cases.into_iter().collect();
    out.unknown = named.missing(filter);
    Ok(out)
}

/// Re-decides every recorded step decision `filter` takes with `candidate` and reports what
/// would change. Changes nothing.
pub fn simulate(
    store: &Store,
    candidate: &PolicyEngine,
    filter: &Filter,
) -> Result<SimulationReport, crate::store::StoreError> {
    let mut sets = KeptSets::new(store);
    let mut out = SimulationReport {
        candidate_hash: candidate.hash.clone(),
        ..SimulationReport::default()
    };
    let mut cases = std::collections::BTreeSet::new();
    let (mut cand_time, mut rec_time) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut rec_n = 0u64;
    let mut named = Named::default();
    each_decision_noting(store, filter, &mut named, |r, d| {
        let d = match d {
            Ok(d) if d.phase == Phase::Step => d,
            Ok(_) => return,
            Err(e) => return out.failed.push((r.body.seq, e)),
        };
        let t0 = std::time::Instant::now();
        let again = match redecide(candidate, &d) {
            Ok(a) => a,
            Err(e) => return out.failed.push((r.body.seq, e)),
        };
        cand_time += t0.elapsed();
        if let Ok(Some(engine)) = sets.get(&d.record.policy_hash) {
            let t0 = std::time::Instant::now();
            let _ = redecide(&engine, &d);
            rec_time += t0.elapsed();
            rec_n += 1;
        }
        out.decisions += 1;
        note(&mut out, &mut cases, r, &d, &again);
    })?;
    out.cases = cases.into_iter().collect();
    out.unknown = named.missing(filter);
    let micros = |t: std::time::Duration, n: u64| t.as_secs_f64() * 1e6 / n.max(1) as f64;
    out.candidate_micros_per_decision = micros(cand_time, out.decisions);
    out.recorded_micros_per_decision = (rec_n > 0).then(|| micros(rec_time, rec_n));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PolicyEngine {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        load_dir(&dir).unwrap_or_else(|p| panic!("{p:#?}"))
    }

    #[test]
    fn a_recorded_set_loads_back_with_the_same_hash_and_file_names() {
        let engine = shipped();
        let again = load_recorded(&engine.source).unwrap_or_else(|p| panic!("{p:#?}"));
        assert_eq!(again.hash, engine.hash);
        assert_eq!(again.files, engine.files);
        assert_eq!(again.meta, engine.meta);
    }

    /// A step request to isolate host `ws-1`.
    fn isolate_ws1(playbook: &str, family: &str, step: &str) -> StepRequest {
        StepRequest {
            playbook: playbook.into(),
            family: family.into(),
            step: step.into(),
            kind: ActionKind::IsolateHost,
            target: Target {
                kind: TargetKind::Host,
                id: "ws-1".into(),
            },
            resource_attrs: default_attrs(TargetKind::Host, "ws-1"),
            context: Map::new(),
        }
    }

    #[test]
    fn a_step_decision_replays_identically_and_a_changed_one_differs() {
        let engine = shipped();
        let rec = engine.decide_step(isolate_ws1(
            "malware_execution",
            "malware_execution",
            "isolate",
        ));
        let data = serde_json::to_value(&rec).unwrap();
        let r = recorded_decision("policy_decision", &data)
            .unwrap()
            .unwrap();
        let again = redecide(&engine, &r).unwrap();
        assert!(compare(&r.record, &again).is_empty());
        let mut tampered = r.clone();
        tampered.record.tier = Tier::Auto;
        let diff = compare(&tampered.record, &again);
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert_eq!(diff[0].field, "tier");
    }

    /// An agent's proposal (the agent as principal, no playbook family) re-decides identically;
    /// determining policies and errors compare as sets (Cedar gives them in no fixed order, and
    /// older records kept that order), but a missing or extra one still differs.
    #[test]
    fn an_agent_decision_replays_and_determining_policies_compare_as_a_set() {
        let engine = shipped();
        let rec = engine.decide_step(isolate_ws1(
            &format!("{}soc-copilot", crate::agent::PRINCIPAL_PREFIX),
            crate::agent::FAMILY,
            "agent",
        ));
        assert!(rec.determining.len() >= 2, "{:?}", rec.determining);
        let data = serde_json::to_value(&rec).unwrap();
        assert_eq!(data["request"]["principal"]["type"], "Cordon::Agent");
        let r = recorded_decision("policy_decision", &data)
            .unwrap()
            .unwrap();
        let again = redecide(&engine, &r).unwrap();
        assert!(compare(&r.record, &again).is_empty());
        assert_eq!(again.tier, rec.tier);
        let mut reordered = r.clone();
        reordered.record.determining.reverse();
        reordered.record.errors = vec!["b".into(), "a".into()];
        let mut errs = again.clone();
        errs.errors = vec!["a".into(), "b".into()];
        assert!(compare(&reordered.record, &errs).is_empty());
        let mut fewer = r.clone();
        fewer.record.determining.pop();
        let diff = compare(&fewer.record, &again);
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert_eq!(diff[0].field, "determining");
    }
}
