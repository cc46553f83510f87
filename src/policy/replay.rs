//! Re-deciding recorded decisions: what `cordon replay` and `cordon simulate` evaluate.
//!
//! Owns: finding the decision an audit record holds (a step's tier, a vote, a re-check when
//! the approvals were reached or right before execution), turning its recorded Cedar request
//! back into the request the engine made, deciding it again with a given policy set through the
//! same code path the daemon uses, and comparing the two decisions (tier, decision, determining
//! policies, errors). Pure apart from Cedar: the records come from the caller.

use super::*;

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
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Step => "step",
            Phase::Vote => "vote",
            Phase::ApprovalsReached => "approvals_reached",
            Phase::PreExecution => "pre_execution",
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
    let ids = |d: &DecisionRecord| json!(d.determining.iter().map(|d| &d.id).collect::<Vec<_>>());
    check("determining", ids(recorded), ids(replayed));
    check("errors", json!(recorded.errors), json!(replayed.errors));
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
    let playbook = str_at(req, &["principal", "id"])?.to_string();
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
    let family = attrs_of(&format!("{NS}::Playbook"))
        .and_then(|a| a.get("family").and_then(Value::as_str).map(str::to_string))
        .ok_or("the request has no playbook family")?;
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

    #[test]
    fn a_step_decision_replays_identically_and_a_changed_one_differs() {
        let engine = shipped();
        let rec = engine.decide_step(StepRequest {
            playbook: "malware_execution".into(),
            family: "malware_execution".into(),
            step: "isolate".into(),
            kind: ActionKind::IsolateHost,
            target: Target {
                kind: TargetKind::Host,
                id: "ws-1".into(),
            },
            resource_attrs: default_attrs(TargetKind::Host, "ws-1"),
            context: Map::new(),
        });
        let data = serde_json::to_value(&rec).unwrap();
        let r = recorded_decision("policy_decision", &data).unwrap().unwrap();
        let again = redecide(&engine, &r).unwrap();
        assert!(compare(&r.record, &again).is_empty());
        let mut tampered = r.clone();
        tampered.record.tier = Tier::Auto;
        let diff = compare(&tampered.record, &again);
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert_eq!(diff[0].field, "tier");
    }
}
