//! Policy test files (`policies/tests/*.toml`), run by `cordon policy test`.
//!
//! Owns: the test-file format and the runner. A test is either a step (playbook, action,
//! target and its attributes, alert context) with the expected tier, a vote (user, channel,
//! the approval request) with the expected outcome, or a case operation (user, operation, the
//! case) with the expected outcome. Requests are built by the same functions
//! the daemon uses, so a passing test means the daemon decides the same way.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApprovalInfo, PolicyEngine, StepRequest, VoteRequest, default_attrs, time_context};
use crate::action::{ActionKind, Target, Tier};
use crate::alert::Severity;
use crate::config::{Problem, parse_toml_file};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    test: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    // Step tests.
    #[serde(default)]
    playbook: Option<String>,
    #[serde(default)]
    family: Option<String>,
    /// An AI agent's proposal instead of a playbook's: the principal is `Cordon::Agent`.
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    resource: Option<toml::Table>,
    #[serde(default)]
    alert: Option<toml::Table>,
    #[serde(default)]
    intel_matches: Option<i64>,
    /// The step's name in the playbook (`context.step`); default `test`.
    #[serde(default)]
    step: Option<String>,
    /// The case as the context shows it: `alert_count`, `entity_count`.
    #[serde(default)]
    case: Option<toml::Table>,
    #[serde(default)]
    time: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    expect_tier: Option<String>,
    // Vote tests.
    #[serde(default)]
    vote: Option<VoteTable>,
    #[serde(default)]
    approval: Option<ApprovalTable>,
    #[serde(default)]
    expect_vote: Option<String>,
    // Case-operation tests.
    #[serde(default)]
    case_op: Option<CaseOpTable>,
    #[serde(default)]
    expect_case_op: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseOpTable {
    user: String,
    /// assign_case | note_case | close_case | reopen_case | recover_case
    action: String,
    #[serde(default = "grpc")]
    channel: String,
    #[serde(default = "token")]
    identity: String,
    #[serde(default = "default_severity")]
    severity: String,
    #[serde(default = "default_state")]
    state: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    disposition: String,
    #[serde(default)]
    cancel_pending: bool,
    #[serde(default)]
    pending_actions: i64,
    #[serde(default)]
    assignee: String,
    /// accept_proposal / dismiss_proposal: the proposal's kind.
    #[serde(default)]
    proposal_kind: String,
}

fn token() -> String {
    "token".into()
}
fn default_severity() -> String {
    "medium".into()
}
fn default_state() -> String {
    "executed".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteTable {
    user: String,
    #[serde(default = "grpc")]
    channel: String,
    #[serde(default = "mtls")]
    identity: String,
    #[serde(default)]
    approvals: u8,
}

fn grpc() -> String {
    "grpc".into()
}
fn mtls() -> String {
    "mtls".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalTable {
    action: String,
    target: String,
    #[serde(default = "default_requester")]
    requester: String,
    #[serde(default = "default_case")]
    case_id: String,
    tier: String,
    #[serde(default = "unknown")]
    environment: String,
    #[serde(default = "unknown")]
    criticality: String,
}

fn default_requester() -> String {
    "playbook:test".into()
}
fn default_case() -> String {
    "case-test".into()
}
fn unknown() -> String {
    "unknown".into()
}

/// Result of one test.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub file: String,
    pub name: String,
    pub passed: bool,
    /// What was expected and what came out, with the determining policies.
    pub detail: String,
}

/// Runs every `*.toml` under `tests_dir` against `engine`. Problems in the test files
/// themselves (unknown keys, unknown actions) come back as `Err`.
pub fn run_dir(engine: &PolicyEngine, tests_dir: &Path) -> Result<Vec<Outcome>, Vec<Problem>> {
    let files = crate::connector::toml_files(tests_dir).map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let mut outcomes = Vec::new();
    for path in files {
        let file = path.display().to_string();
        let tf: TestFile = match parse_toml_file(&path) {
            Ok(t) => t,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        run_file(engine, &file, tf, &mut outcomes, &mut problems);
    }
    if problems.is_empty() {
        Ok(outcomes)
    } else {
        Err(problems)
    }
}

/// Runs one test file given as text (a learning proposal's regression test, before anyone
/// copies it into `policies/tests/`), named `file` in what it reports.
pub fn run_text(
    engine: &PolicyEngine,
    file: &str,
    text: &str,
) -> Result<Vec<Outcome>, Vec<Problem>> {
    let tf: TestFile = toml::from_str(text).map_err(|e| {
        vec![Problem::new(
            file,
            "test",
            crate::ingest::clip(&e.to_string(), 300).into_owned(),
        )]
    })?;
    let mut outcomes = Vec::new();
    let mut problems = Vec::new();
    run_file(engine, file, tf, &mut outcomes, &mut problems);
    if problems.is_empty() {
        Ok(outcomes)
    } else {
        Err(problems)
    }
}

fn run_file(
    engine: &PolicyEngine,
    file: &str,
    tf: TestFile,
    outcomes: &mut Vec<Outcome>,
    problems: &mut Vec<Problem>,
) {
    if tf.test.is_empty() {
        problems.push(Problem::new(file, "test", "no [[test]] entries"));
    }
    for (i, t) in tf.test.into_iter().enumerate() {
        match run_one(engine, &t) {
            Ok((passed, detail)) => outcomes.push(Outcome {
                file: file.to_string(),
                name: t.name,
                passed,
                detail,
            }),
            Err(reason) => problems.push(Problem::new(
                file,
                format!("test[{i}] ({})", t.name),
                reason,
            )),
        }
    }
}

fn to_json(t: &toml::Table) -> Map<String, Value> {
    match serde_json::to_value(t) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn run_one(engine: &PolicyEngine, t: &TestCase) -> Result<(bool, String), String> {
    if let Some(want) = &t.expect_case_op {
        if t.expect_tier.is_some() || t.expect_vote.is_some() {
            return Err("set exactly one of expect_tier, expect_vote or expect_case_op".into());
        }
        return run_case_op(engine, t, want);
    }
    match (&t.expect_tier, &t.expect_vote) {
        (Some(want), None) => {
            let want = Tier::parse(want).ok_or_else(|| {
                format!("expect_tier {want:?} is not auto, one_approver, two_person or denied")
            })?;
            let req = step_request(engine, t)?;
            let rec = engine.decide_step(req);
            let detail = format!(
                "expected tier {want}, got {} (determining: {}){}",
                rec.tier,
                list(
                    &rec.determining
                        .iter()
                        .map(|d| format!("{} [{}:{}]", d.id, d.file, d.line))
                        .collect::<Vec<_>>()
                ),
                if rec.errors.is_empty() {
                    String::new()
                } else {
                    format!("; errors: {}", rec.errors.join("; "))
                }
            );
            Ok((rec.tier == want, detail))
        }
        (None, Some(want)) => {
            let want_allow = match want.as_str() {
                "allow" => true,
                "refuse" => false,
                other => return Err(format!("expect_vote {other:?} is not allow or refuse")),
            };
            let v = t
                .vote
                .as_ref()
                .ok_or("a vote test needs a [test.vote] table")?;
            let a = t
                .approval
                .as_ref()
                .ok_or("a vote test needs a [test.approval] table")?;
            let kind = ActionKind::parse(&a.action)
                .ok_or_else(|| format!("unknown action kind {:?}", a.action))?;
            let tier = Tier::parse(&a.tier).ok_or_else(|| format!("unknown tier {:?}", a.tier))?;
            let req = VoteRequest {
                user: v.user.clone(),
                channel: v.channel.clone(),
                identity: v.identity.clone(),
                approvals: v.approvals,
                approval: ApprovalInfo {
                    approval_id: "approval-test".into(),
                    action_kind: kind,
                    target: Target {
                        kind: kind.target_kind(),
                        id: a.target.clone(),
                    },
                    requester: a.requester.clone(),
                    case_id: a.case_id.clone(),
                    tier,
                    environment: a.environment.clone(),
                    criticality: a.criticality.clone(),
                },
            };
            let d = engine.authorize_vote(&req);
            let got = if d.allowed { "allow" } else { "refuse" };
            let detail = format!(
                "expected vote {want}, got {got}{} (determining: {})",
                d.refusal.map(|r| format!(": {r}")).unwrap_or_default(),
                list(
                    &d.record
                        .determining
                        .iter()
                        .map(|d| d.id.clone())
                        .collect::<Vec<_>>()
                )
            );
            Ok((d.allowed == want_allow, detail))
        }
        _ => Err("set exactly one of expect_tier or expect_vote".into()),
    }
}

fn run_case_op(engine: &PolicyEngine, t: &TestCase, want: &str) -> Result<(bool, String), String> {
    let want_allow = match want {
        "allow" => true,
        "refuse" => false,
        other => return Err(format!("expect_case_op {other:?} is not allow or refuse")),
    };
    let c = t
        .case_op
        .as_ref()
        .ok_or("a case-operation test needs a [test.case_op] table")?;
    if !super::CASE_ACTIONS.contains(&c.action.as_str()) {
        return Err(format!(
            "unknown case operation {:?} (known: {})",
            c.action,
            super::CASE_ACTIONS.join(", ")
        ));
    }
    let severity =
        Severity::parse(&c.severity).ok_or_else(|| format!("unknown severity {:?}", c.severity))?;
    if crate::case::CaseState::parse(&c.state).is_none() {
        return Err(format!("unknown case state {:?}", c.state));
    }
    if !c.disposition.is_empty() && crate::case::Disposition::parse(&c.disposition).is_none() {
        return Err(format!("unknown disposition {:?}", c.disposition));
    }
    let req = super::CaseOpRequest {
        user: c.user.clone(),
        action: c.action.clone(),
        channel: c.channel.clone(),
        identity: c.identity.clone(),
        case_id: "case-test".into(),
        severity_id: severity.id(),
        alert_count: 1,
        state: c.state.clone(),
        severity: severity.as_str().into(),
        owner: c.owner.clone(),
        closed: c.state == "closed",
        disposition: c.disposition.clone(),
        cancel_pending: c.cancel_pending,
        pending_actions: c.pending_actions,
        assignee: c.assignee.clone(),
        proposal_kind: c.proposal_kind.clone(),
    };
    let d = engine.authorize_case_op(&req);
    let got = if d.allowed { "allow" } else { "refuse" };
    let detail = format!(
        "expected case operation {want}, got {got}{} (determining: {})",
        d.refusal.map(|r| format!(": {r}")).unwrap_or_default(),
        list(
            &d.record
                .determining
                .iter()
                .map(|d| d.id.clone())
                .collect::<Vec<_>>()
        )
    );
    Ok((d.allowed == want_allow, detail))
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn step_request(engine: &PolicyEngine, t: &TestCase) -> Result<StepRequest, String> {
    let action = t.action.as_deref().ok_or("a step test needs action")?;
    let kind =
        ActionKind::parse(action).ok_or_else(|| format!("unknown action kind {action:?}"))?;
    let target_id = t.target.clone().unwrap_or_else(|| "case-test".into());
    let target = Target {
        kind: kind.target_kind(),
        id: target_id,
    };
    let defaults = default_attrs(target.kind, &target.id);
    let mut known = Map::new();
    if let Some(r) = &t.resource {
        for (k, v) in to_json(r) {
            if !defaults.contains_key(&k) {
                return Err(format!(
                    "resource attribute {k:?} does not exist for a {} (known: {})",
                    target.kind.as_str(),
                    defaults.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            known.insert(k, v);
        }
    }
    let resource_attrs = engine.complete_attrs(&target, known);
    let mut alert = json!({
        "severity": "medium", "severity_id": 3, "confidence": 50, "rule_id": "test-rule",
        "rule_name": "test rule", "source": "cordon", "techniques": [], "tactics": [],
        "intel_source": "", "tags": [],
    });
    if let Some(a) = &t.alert {
        for (k, v) in to_json(a) {
            if alert.get(&k).is_none() {
                return Err(format!("alert field {k:?} does not exist"));
            }
            if k == "severity" {
                let s = v
                    .as_str()
                    .and_then(Severity::parse)
                    .ok_or_else(|| format!("alert.severity {v} is not a severity"))?;
                alert["severity_id"] = json!(s.id());
                alert["severity"] = json!(s.as_str());
                continue;
            }
            alert[&k] = v;
        }
    }
    let playbook = match (&t.agent, &t.playbook) {
        (Some(_), Some(_)) => return Err("a test names a playbook or an agent, not both".into()),
        (Some(a), None) => format!("{}{a}", crate::agent::PRINCIPAL_PREFIX),
        (None, p) => p.clone().unwrap_or_else(|| "test".into()),
    };
    let now = t
        .time
        .unwrap_or_else(|| "2026-01-05T12:00:00Z".parse().unwrap_or_default());
    let mut case = json!({"id": "case-test", "alert_count": 1, "entity_count": 1});
    if let Some(c) = &t.case {
        for (k, v) in to_json(c) {
            if !matches!(k.as_str(), "alert_count" | "entity_count") || !v.is_u64() {
                return Err(format!(
                    "case.{k} is not one of alert_count, entity_count (non-negative integers)"
                ));
            }
            case[&k] = v;
        }
    }
    let step = t.step.clone().unwrap_or_else(|| "test".into());
    let context = json!({
        "alert": alert,
        "case": case,
        "time": time_context(now),
        "intel_matches": t.intel_matches.unwrap_or(0),
        "playbook": playbook,
        "step": step,
        "reversible": kind.inverse().is_some(),
    });
    Ok(StepRequest {
        family: t.family.clone().unwrap_or_else(|| playbook.clone()),
        playbook,
        step,
        kind,
        target,
        resource_attrs,
        context: context.as_object().cloned().unwrap_or_default(),
    })
}
