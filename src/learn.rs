//! Learning proposals: what closed cases teach, proposed for review and never applied.
//!
//! Owns: the proposal model ([`Proposal`], its kinds and states) and generating proposals from
//! closed cases and the store's history:
//! - repeated false positives of one rule on the same entity → a **tuning** proposal: a Sigma
//!   filter document (pySigma's filter format, referencing the rule id) and the equivalent
//!   cordon `[[suppressions]]` entry, the narrowest single-entity filter that covers the false
//!   positives, checked against every alert in the store: a filter that would have hidden a
//!   true positive is never proposed;
//! - a true positive → a **regression test**: `policies/tests/*.toml` entries pinning the tier
//!   cordon decided for each of the case's steps, built from the recorded Cedar requests;
//! - a true positive credited to intelligence → an **intel credit** record;
//! - a miss named at closure → a **detection backlog** item.
//!
//! Pure: the engine feeds it typed reads, stores what it returns and decides (through Cedar) who
//! may accept or dismiss. Accepting writes the proposal's files to the configured proposals
//! directory for review; nothing here, and nothing the engine does with it, edits the live
//! configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::action::Tier;
use crate::alert::{Entity, EntityKind};

/// What a proposal would change, once a person has reviewed and applied its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    /// A detection tuning: Sigma filter + cordon suppression for repeated false positives.
    Tuning,
    /// Policy tests pinning the tiers decided for a true positive.
    RegressionTest,
    /// A true positive credited to an intelligence finding.
    IntelCredit,
    /// Something the detections missed, for the detection backlog.
    DetectionBacklog,
}

impl ProposalKind {
    pub const ALL: [ProposalKind; 4] = [
        ProposalKind::Tuning,
        ProposalKind::RegressionTest,
        ProposalKind::IntelCredit,
        ProposalKind::DetectionBacklog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProposalKind::Tuning => "tuning",
            ProposalKind::RegressionTest => "regression_test",
            ProposalKind::IntelCredit => "intel_credit",
            ProposalKind::DetectionBacklog => "detection_backlog",
        }
    }

    pub fn parse(s: &str) -> Option<ProposalKind> {
        ProposalKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a proposal stands. Only `Open` proposals may be accepted or dismissed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    Open,
    Accepted,
    Dismissed,
}

impl ProposalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Open => "open",
            ProposalState::Accepted => "accepted",
            ProposalState::Dismissed => "dismissed",
        }
    }

    pub fn parse(s: &str) -> Option<ProposalState> {
        [
            ProposalState::Open,
            ProposalState::Accepted,
            ProposalState::Dismissed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One file a proposal would add, relative to the proposals directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalFile {
    /// A plain relative name (`[a-z0-9._-]`, one level of directory at most): never absolute,
    /// never `..`.
    pub name: String,
    pub contents: String,
}

/// Who resolved a proposal, how and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub accepted: bool,
    pub by: String,
    pub channel: String,
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Where the files were written (accepted only).
    #[serde(default)]
    pub written: Vec<String>,
}

/// A learning proposal. Its id is derived from what it proposes (kind + subject), so the same
/// lesson learned again updates one proposal instead of adding another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: String,
    pub kind: ProposalKind,
    pub state: ProposalState,
    /// The closed cases it was learned from, oldest first.
    pub cases: Vec<String>,
    #[serde(default)]
    pub rule_id: Option<String>,
    pub title: String,
    /// Why cordon proposes it, in a sentence or two.
    pub rationale: String,
    pub files: Vec<ProposalFile>,
    /// What the proposal was checked against (for tuning: the alerts the filter would have
    /// suppressed, and that it matches no true positive).
    pub evidence: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub resolution: Option<Resolution>,
}

/// How a closed case was judged, as far as learning cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    TruePositive,
    BenignTruePositive,
    FalsePositive,
    Duplicate,
    /// Not closed (open, or never judged).
    Open,
}

/// One alert of the store's history with the verdict of its case.
#[derive(Debug, Clone, PartialEq)]
pub struct HistAlert {
    pub alert_id: String,
    pub case_id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub entities: Vec<Entity>,
    pub time: DateTime<Utc>,
    pub verdict: Verdict,
}

/// A decided step of a case, as its decision record keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDecision {
    /// The Cedar request in the record's JSON shape (`principal`, `action`, `resource`,
    /// `context`, `entities`).
    pub request: Value,
    pub tier: Tier,
}

/// A case at closure, as learning needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedCase {
    pub case_id: String,
    pub verdict: Verdict,
    pub closed_at: DateTime<Utc>,
    pub closed_by: String,
    pub reason: String,
    pub rule_ids: Vec<String>,
    pub helped_intel: Option<String>,
    pub helped_rule: Option<String>,
    pub missed: Option<String>,
    pub steps: Vec<StepDecision>,
}

/// Knobs for tuning proposals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TuningParams {
    /// False positives of one rule on one entity before a tuning is proposed.
    pub min_false_positives: usize,
    /// How far back false positives count.
    pub window: Duration,
    /// The proposed suppression expires this long after the proposal.
    pub suppression_days: i64,
}

impl Default for TuningParams {
    fn default() -> Self {
        TuningParams {
            min_false_positives: 3,
            window: Duration::days(14),
            suppression_days: 90,
        }
    }
}

fn proposal_id(kind: ProposalKind, subject: &str) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_str().as_bytes());
    h.update([0]);
    h.update(subject.as_bytes());
    format!("lp-{}", &hex::encode(h.finalize())[..16])
}

/// A file-name-safe slug of an outside value (rule ids, entity values): `[a-z0-9_]`, bounded.
fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if out.is_empty() {
        out.push('x');
    }
    out
}

/// A YAML/TOML double-quoted scalar: JSON string syntax is valid in both.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The Sigma field an entity kind is matched on in the filter's selection (Sigma's generic
/// taxonomy names; a SIEM's pySigma pipeline maps them to its own fields).
pub fn sigma_field(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Host => "Computer",
        EntityKind::User => "User",
        EntityKind::Ip => "IpAddress",
        EntityKind::Domain => "DestinationHostname",
        EntityKind::Url => "Url",
        EntityKind::FileHash => "Hashes|contains",
        EntityKind::CloudResource => "ResourceId",
    }
}

/// A filter: one rule, one entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TuningFilter {
    pub rule_id: String,
    pub entity: Entity,
}

impl TuningFilter {
    pub fn matches(&self, a: &HistAlert) -> bool {
        a.rule_id == self.rule_id && a.entities.contains(&self.entity)
    }
}

/// The Sigma filter document (pySigma's filter format: `title`, `id`, `description`,
/// `logsource`, and `filter` with `rules`, a `selection` and `condition: not selection`).
pub fn sigma_filter_yaml(
    id: &str,
    f: &TuningFilter,
    rule_name: &str,
    fps: usize,
    date: DateTime<Utc>,
) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "title: {}",
        quoted(&format!(
            "cordon tuning: {rule_name} on {} {}",
            f.entity.kind, f.entity.value
        ))
    );
    let _ = writeln!(y, "id: {}", quoted(&uuid_like(id)));
    let _ = writeln!(y, "status: experimental");
    let _ = writeln!(
        y,
        "description: {}",
        quoted(&format!(
            "Proposed by cordon after {fps} false-positive closures of rule {} on {}:{}. \
             Checked against the store: it matches no true positive.",
            f.rule_id, f.entity.kind, f.entity.value
        ))
    );
    let _ = writeln!(y, "author: cordon");
    let _ = writeln!(y, "date: {}", quoted(&date.format("%Y-%m-%d").to_string()));
    let _ = writeln!(y, "logsource:");
    let _ = writeln!(y, "    product: {}", quoted("any"));
    let _ = writeln!(y, "filter:");
    let _ = writeln!(y, "    rules:");
    let _ = writeln!(y, "        - {}", quoted(&f.rule_id));
    let _ = writeln!(y, "    selection:");
    let _ = writeln!(
        y,
        "        {}: {}",
        sigma_field(f.entity.kind),
        quoted(&f.entity.value)
    );
    let _ = writeln!(y, "    condition: not selection");
    y
}

/// A UUID-shaped rendering of a proposal id (Sigma ids are UUIDs).
fn uuid_like(id: &str) -> String {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    let x = hex::encode(h.finalize());
    format!(
        "{}-{}-4{}-8{}-{}",
        &x[0..8],
        &x[8..12],
        &x[13..16],
        &x[17..20],
        &x[20..32]
    )
}

/// The equivalent cordon suppression entry (`[[suppressions]]` in the config).
pub fn suppression_toml(
    id: &str,
    f: &TuningFilter,
    fps: usize,
    owner: &str,
    expires: DateTime<Utc>,
) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "[[suppressions]]");
    let _ = writeln!(t, "id = {}", quoted(id));
    let _ = writeln!(
        t,
        "reason = {}",
        quoted(&format!(
            "{fps} false positives of rule {} on {}:{} (cordon learning proposal {id})",
            f.rule_id, f.entity.kind, f.entity.value
        ))
    );
    let _ = writeln!(t, "owner = {}", quoted(owner));
    let _ = writeln!(t, "rule = {}", quoted(&f.rule_id));
    let _ = writeln!(
        t,
        "entity = {}",
        quoted(&format!("{}:{}", f.entity.kind, f.entity.value))
    );
    let _ = writeln!(
        t,
        "expires = {}",
        quoted(&expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );
    t
}

/// Tuning proposals for `rule_id` from the store's `history` at `now`.
///
/// Candidates are the entities named by at least `min_false_positives` of the rule's
/// false-positive alerts inside the window. A candidate that matches any true positive (of any
/// time) is dropped. The rest are taken greedily: the one covering the most false positives
/// first, ties to the narrowest (fewest alerts matched in all of history), then by kind and
/// value; false positives it covers are not counted again. So one cluster of false positives
/// gives one proposal, on its narrowest common entity.
pub fn tuning(
    rule_id: &str,
    history: &[HistAlert],
    p: TuningParams,
    owner: &str,
    now: DateTime<Utc>,
) -> Vec<Proposal> {
    let since = now - p.window;
    let of_rule: Vec<&HistAlert> = history.iter().filter(|a| a.rule_id == rule_id).collect();
    let rule_name = of_rule
        .first()
        .map(|a| a.rule_name.clone())
        .unwrap_or_else(|| rule_id.to_string());
    let fps: Vec<&HistAlert> = of_rule
        .iter()
        .copied()
        .filter(|a| a.verdict == Verdict::FalsePositive && a.time >= since)
        .collect();
    let mut counts: BTreeMap<&Entity, usize> = BTreeMap::new();
    for a in &fps {
        let uniq: BTreeSet<&Entity> = a.entities.iter().collect();
        for e in uniq {
            *counts.entry(e).or_default() += 1;
        }
    }
    struct Cand<'a> {
        filter: TuningFilter,
        fps: Vec<&'a HistAlert>,
        matched: Vec<&'a HistAlert>,
    }
    let mut cands: Vec<Cand<'_>> = counts
        .into_iter()
        .filter(|(_, n)| *n >= p.min_false_positives)
        .map(|(e, _)| {
            let filter = TuningFilter {
                rule_id: rule_id.to_string(),
                entity: e.clone(),
            };
            let matched: Vec<&HistAlert> = of_rule
                .iter()
                .copied()
                .filter(|a| filter.matches(a))
                .collect();
            let fps: Vec<&HistAlert> = fps.iter().copied().filter(|a| filter.matches(a)).collect();
            Cand {
                filter,
                fps,
                matched,
            }
        })
        .filter(|c| !c.matched.iter().any(|a| a.verdict == Verdict::TruePositive))
        .collect();
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    loop {
        cands.retain(|c| {
            c.fps
                .iter()
                .filter(|a| !covered.contains(a.alert_id.as_str()))
                .count()
                >= p.min_false_positives
        });
        let best = cands
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| {
                let new = |c: &Cand<'_>| {
                    c.fps
                        .iter()
                        .filter(|x| !covered.contains(x.alert_id.as_str()))
                        .count()
                };
                new(b)
                    .cmp(&new(a))
                    .then(a.matched.len().cmp(&b.matched.len()))
                    .then(a.filter.entity.cmp(&b.filter.entity))
            })
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let c = cands.swap_remove(i);
        for a in &c.fps {
            covered.insert(a.alert_id.as_str());
        }
        let subject = format!(
            "{rule_id}\u{0}{}:{}",
            c.filter.entity.kind, c.filter.entity.value
        );
        let id = proposal_id(ProposalKind::Tuning, &subject);
        let n = c.fps.len();
        let expires = now + Duration::days(p.suppression_days);
        let base = format!(
            "tuning/{}-{}-{}",
            slug(rule_id),
            c.filter.entity.kind,
            slug(&c.filter.entity.value)
        );
        let mut cases: Vec<String> = Vec::new();
        for a in &c.fps {
            if !cases.contains(&a.case_id) {
                cases.push(a.case_id.clone());
            }
        }
        let not_fp: Vec<&str> = c
            .matched
            .iter()
            .filter(|a| a.verdict != Verdict::FalsePositive)
            .map(|a| a.alert_id.as_str())
            .collect();
        out.push(Proposal {
            id: id.clone(),
            kind: ProposalKind::Tuning,
            state: ProposalState::Open,
            cases,
            rule_id: Some(rule_id.to_string()),
            title: format!(
                "Tune rule {rule_name}: filter out {}:{} ({n} false positives)",
                c.filter.entity.kind, c.filter.entity.value
            ),
            rationale: format!(
                "{n} alerts of rule {rule_id} on {}:{} were closed as false positives within {} \
                 days; the filter matches {} alert(s) in the store and no true positive.",
                c.filter.entity.kind,
                c.filter.entity.value,
                p.window.num_days(),
                c.matched.len()
            ),
            files: vec![
                ProposalFile {
                    name: format!("{base}.sigma.yml"),
                    contents: sigma_filter_yaml(&id, &c.filter, &rule_name, n, now),
                },
                ProposalFile {
                    name: format!("{base}.suppression.toml"),
                    contents: suppression_toml(&id, &c.filter, n, owner, expires),
                },
            ],
            evidence: json!({
                "filter": {"rule_id": rule_id, "entity": format!("{}:{}", c.filter.entity.kind, c.filter.entity.value)},
                "false_positives": c.fps.iter().map(|a| a.alert_id.as_str()).collect::<Vec<_>>(),
                "would_suppress": c.matched.iter().map(|a| a.alert_id.as_str()).collect::<Vec<_>>(),
                "true_positives_matched": 0,
                "matched_not_false_positive": not_fp,
            }),
            created_at: now,
            updated_at: now,
            resolution: None,
        });
    }
    out
}

/// What the policy test file can pin of a recorded step request: the step test's keys.
fn step_test_entry(name: &str, s: &StepDecision) -> Option<toml::Table> {
    let r = &s.request;
    let action = r.pointer("/action/id")?.as_str()?;
    let target = r.pointer("/resource/id")?.as_str()?;
    let playbook = r.pointer("/principal/id")?.as_str()?;
    let ctx = r.get("context")?.as_object()?;
    let mut t = toml::Table::new();
    t.insert("name".into(), name.into());
    t.insert("playbook".into(), playbook.into());
    // The family is an attribute of the principal entity.
    if let Some(family) = r
        .get("entities")
        .and_then(Value::as_array)
        .and_then(|es| {
            es.iter()
                .find(|e| e.pointer("/uid/id").and_then(Value::as_str) == Some(playbook))
        })
        .and_then(|e| e.pointer("/attrs/family"))
        .and_then(Value::as_str)
    {
        t.insert("family".into(), family.into());
    }
    if let Some(step) = ctx.get("step").and_then(Value::as_str) {
        t.insert("step".into(), step.into());
    }
    t.insert("action".into(), action.into());
    t.insert("target".into(), target.into());
    let resource_uid = r.get("resource")?;
    if let Some(attrs) = r
        .get("entities")
        .and_then(Value::as_array)
        .and_then(|es| es.iter().find(|e| e.get("uid") == Some(resource_uid)))
        .and_then(|e| e.get("attrs"))
        .and_then(Value::as_object)
    {
        let mut res = toml::Table::new();
        for (k, v) in attrs {
            if let Some(v) = json_to_toml(v) {
                res.insert(k.clone(), v);
            }
        }
        t.insert("resource".into(), toml::Value::Table(res));
    }
    if let Some(alert) = ctx.get("alert").and_then(Value::as_object) {
        let mut a = toml::Table::new();
        for (k, v) in alert {
            // `severity_id` follows from `severity` in the test file.
            if k == "severity_id" {
                continue;
            }
            if let Some(v) = json_to_toml(v) {
                a.insert(k.clone(), v);
            }
        }
        t.insert("alert".into(), toml::Value::Table(a));
    }
    if let Some(case) = ctx.get("case").and_then(Value::as_object) {
        let mut c = toml::Table::new();
        for k in ["alert_count", "entity_count"] {
            if let Some(v) = case.get(k).and_then(json_to_toml) {
                c.insert(k.into(), v);
            }
        }
        t.insert("case".into(), toml::Value::Table(c));
    }
    if let Some(n) = ctx.get("intel_matches").and_then(Value::as_i64) {
        t.insert("intel_matches".into(), n.into());
    }
    if let Some(epoch) = ctx
        .get("time")
        .and_then(|t| t.get("epoch"))
        .and_then(Value::as_i64)
        && let Some(at) = DateTime::<Utc>::from_timestamp(epoch, 0)
    {
        t.insert(
            "time".into(),
            toml::Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
    }
    t.insert("expect_tier".into(), s.tier.as_str().into());
    Some(t)
}

fn json_to_toml(v: &Value) -> Option<toml::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().filter_map(json_to_toml).collect()),
        Value::Object(o) => toml::Value::Table(
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect(),
        ),
    })
}

/// The regression-test proposal of a true positive: one step test per decided step, pinning
/// the tier cordon decided. `None` when the case is not a true positive or decided no step.
pub fn regression_test(case: &ClosedCase) -> Option<Proposal> {
    if case.verdict != Verdict::TruePositive {
        return None;
    }
    let mut tests = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, s) in case.steps.iter().enumerate() {
        let action = s.request.pointer("/action/id").and_then(Value::as_str);
        let target = s.request.pointer("/resource/id").and_then(Value::as_str);
        let name = format!(
            "case {} step {}: {} on {} is {}",
            case.case_id,
            i + 1,
            action.unwrap_or("?"),
            target.unwrap_or("?"),
            s.tier
        );
        // One test per distinct request: a step re-decided the same way pins nothing new.
        if !seen.insert((s.request.clone().to_string(), s.tier)) {
            continue;
        }
        if let Some(t) = step_test_entry(&name, s) {
            tests.push(toml::Value::Table(t));
        }
    }
    if tests.is_empty() {
        return None;
    }
    let n = tests.len();
    let mut file = toml::Table::new();
    file.insert("test".into(), toml::Value::Array(tests));
    let body = toml::to_string(&file).ok()?;
    let contents = format!(
        "# Regression tests from case {} (closed true_positive by {} at {}): the tiers cordon\n\
         # decided for its steps. Proposed by cordon; review, then copy into policies/tests/.\n\n{body}",
        case.case_id,
        case.closed_by,
        case.closed_at.to_rfc3339()
    );
    let id = proposal_id(ProposalKind::RegressionTest, &case.case_id);
    Some(Proposal {
        id,
        kind: ProposalKind::RegressionTest,
        state: ProposalState::Open,
        cases: vec![case.case_id.clone()],
        rule_id: case.rule_ids.first().cloned(),
        title: format!(
            "Pin the {n} decision(s) of true positive {} as policy tests",
            case.case_id
        ),
        rationale: "A true positive's decisions become automation test cases, so a later policy \
                    change that would decide them differently fails `cordon policy test`."
            .into(),
        files: vec![ProposalFile {
            name: format!("tests/case-{}.toml", slug(&case.case_id)),
            contents,
        }],
        evidence: json!({"tests": n}),
        created_at: case.closed_at,
        updated_at: case.closed_at,
        resolution: None,
    })
}

/// An intel-credit record for a true positive whose closure credits an intelligence finding.
pub fn intel_credit(case: &ClosedCase) -> Option<Proposal> {
    let intel = case.helped_intel.as_deref()?;
    if case.verdict != Verdict::TruePositive {
        return None;
    }
    let record = json!({
        "case_id": case.case_id,
        "intel_ref": intel,
        "rule": case.helped_rule.clone().or_else(|| case.rule_ids.first().cloned()),
        "rules": case.rule_ids,
        "closed_at": case.closed_at,
        "closed_by": case.closed_by,
        "reason": case.reason,
    });
    let contents = serde_json::to_string_pretty(&record).ok()? + "\n";
    Some(Proposal {
        id: proposal_id(ProposalKind::IntelCredit, &case.case_id),
        kind: ProposalKind::IntelCredit,
        state: ProposalState::Open,
        cases: vec![case.case_id.clone()],
        rule_id: case.rule_ids.first().cloned(),
        title: format!("Credit intel {intel} for true positive {}", case.case_id),
        rationale: "The closing analyst credited an intelligence finding: the CTI team's \
                    after-action record."
            .into(),
        files: vec![ProposalFile {
            name: format!("intel/credit-{}.json", slug(&case.case_id)),
            contents,
        }],
        evidence: record,
        created_at: case.closed_at,
        updated_at: case.closed_at,
        resolution: None,
    })
}

/// A detection backlog item for a miss named at closure.
pub fn detection_backlog(case: &ClosedCase) -> Option<Proposal> {
    let missed = case.missed.as_deref().filter(|m| !m.trim().is_empty())?;
    let mut md = String::new();
    let _ = writeln!(md, "# Detection backlog: missed in case {}\n", case.case_id);
    let _ = writeln!(md, "- **What was missed:** {missed}");
    let _ = writeln!(
        md,
        "- **Case:** {} (closed {:?})",
        case.case_id, case.verdict
    );
    let _ = writeln!(md, "- **Rules that fired:** {}", case.rule_ids.join(", "));
    let _ = writeln!(
        md,
        "- **Closed by:** {} at {}",
        case.closed_by,
        case.closed_at.to_rfc3339()
    );
    let _ = writeln!(md, "- **Closure reason:** {}", case.reason);
    Some(Proposal {
        id: proposal_id(ProposalKind::DetectionBacklog, &case.case_id),
        kind: ProposalKind::DetectionBacklog,
        state: ProposalState::Open,
        cases: vec![case.case_id.clone()],
        rule_id: case.rule_ids.first().cloned(),
        title: format!("Detection backlog: {}", clip(missed, 80)),
        rationale: "The closing analyst named something the detections missed.".into(),
        files: vec![ProposalFile {
            name: format!("backlog/case-{}.md", slug(&case.case_id)),
            contents: md,
        }],
        evidence: json!({"missed": missed}),
        created_at: case.closed_at,
        updated_at: case.closed_at,
        resolution: None,
    })
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

/// Every per-case proposal of a closed case (regression test, intel credit, backlog item).
/// Tuning proposals span cases: see [`tuning`].
pub fn for_case(case: &ClosedCase) -> Vec<Proposal> {
    [
        regression_test(case),
        intel_credit(case),
        detection_backlog(case),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Merges a freshly generated proposal into the stored one with the same id: an open proposal
/// takes the new files and evidence (more cases learned the same lesson); a resolved one stays
/// as it was resolved (a dismissed tuning is not proposed again by the next false positive).
/// `None` when nothing changes.
pub fn merge(stored: Option<&Proposal>, fresh: Proposal) -> Option<Proposal> {
    match stored {
        None => Some(fresh),
        Some(old) if old.state != ProposalState::Open => None,
        Some(old) => {
            if old.files == fresh.files
                && old.evidence == fresh.evidence
                && old.cases == fresh.cases
            {
                return None;
            }
            let mut p = fresh;
            p.created_at = old.created_at;
            Some(p)
        }
    }
}

/// A proposal file name is safe to join under the proposals directory: relative, plain
/// components of `[A-Za-z0-9._-]`, no `..`, at most two components.
pub fn safe_file_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

#[cfg(test)]
#[path = "learn_tests.rs"]
mod tests;
