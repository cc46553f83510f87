//! What a Cedar request is made of: entity types for targets, resource attributes (defaults,
//! then what enrichment knows), and the step and time context.
//!
//! Owns: turning cordon's alert, case, enrichment and playbook step into the attributes and
//! context a policy reads. Pure: nothing here calls Cedar.

use super::*;

/// The Cedar entity type for a target.
pub fn target_type(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Case => "Case",
        TargetKind::Host => "Host",
        TargetKind::Account => "Account",
        TargetKind::Indicator => "Indicator",
        TargetKind::CloudResource => "CloudResource",
    }
}

/// Complete attributes for a target type with every value unknown.
pub fn default_attrs(kind: TargetKind, target_id: &str) -> Map<String, Value> {
    let v = match kind {
        TargetKind::Case => json!({"severity_id": 0, "alert_count": 0}),
        TargetKind::Host => {
            json!({"criticality": "unknown", "environment": "unknown", "owner": "", "tags": [], "known": false})
        }
        TargetKind::Account => {
            json!({"role": "unknown", "privileged": false, "groups": [], "known": false, "compromised_intel_confidence": 0})
        }
        TargetKind::Indicator => {
            let (k, val) = target_id.split_once(':').unwrap_or(("unknown", target_id));
            json!({"kind": k, "value": val, "intel_match": false, "intel_confidence": 0, "intel_source": ""})
        }
        TargetKind::CloudResource => {
            json!({"environment": "unknown", "criticality": "unknown", "owner": "", "provider": "unknown", "tags": [], "known": false})
        }
    };
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Resource attributes for a target that enrichment actually knows (no defaults): the policy
/// engine layers them over static entity-file attributes and defaults
/// ([`PolicyEngine::complete_attrs`]).
pub fn enriched_attrs(
    target: &Target,
    report: &EnrichmentReport,
    case_alerts: u64,
    severity_id: i64,
) -> Map<String, Value> {
    let mut m = Map::new();
    match target.kind {
        TargetKind::Case => {
            m.insert("severity_id".into(), json!(severity_id));
            m.insert("alert_count".into(), json!(case_alerts));
        }
        TargetKind::Host | TargetKind::CloudResource => {
            let ek = if target.kind == TargetKind::Host {
                EntityKind::Host
            } else {
                EntityKind::CloudResource
            };
            if let Some(a) = AlertEntity::new(ek, &target.id).and_then(|e| report.asset(&e)) {
                m.insert("criticality".into(), json!(a.criticality));
                m.insert("environment".into(), json!(a.environment));
                m.insert("owner".into(), json!(a.owner));
                m.insert("tags".into(), json!(a.tags));
                m.insert("known".into(), json!(true));
                if target.kind == TargetKind::CloudResource {
                    m.insert(
                        "provider".into(),
                        json!(a.provider.unwrap_or_else(|| "unknown".into())),
                    );
                }
            }
        }
        TargetKind::Account => {
            if let Some(e) = AlertEntity::new(EntityKind::User, &target.id) {
                if let Some(i) = report.identity(&e) {
                    m.insert("role".into(), json!(i.role));
                    m.insert("privileged".into(), json!(i.privileged));
                    m.insert("groups".into(), json!(i.groups));
                    m.insert("known".into(), json!(true));
                }
                if let Some(best) = report.intel(&e).first() {
                    m.insert(
                        "compromised_intel_confidence".into(),
                        json!(best.confidence),
                    );
                }
            }
        }
        TargetKind::Indicator => {
            if let Some((k, v)) = target.id.split_once(':') {
                m.insert("kind".into(), json!(k));
                m.insert("value".into(), json!(v));
            }
            let entity = target
                .id
                .split_once(':')
                .and_then(|(k, v)| AlertEntity::new(EntityKind::parse(k)?, v));
            if let Some(best) = entity
                .as_ref()
                .and_then(|e| report.intel(e).into_iter().next())
            {
                m.insert("intel_match".into(), json!(true));
                m.insert("intel_confidence".into(), json!(best.confidence));
                m.insert("intel_source".into(), json!(best.source));
            }
        }
    }
    m
}

/// The step context (without `approvals`) for an alert in a case.
/// The case a step belongs to, as the context shows it.
#[derive(Debug, Clone, Copy)]
pub struct CaseInfo<'a> {
    pub id: &'a str,
    pub alert_count: u64,
    pub entity_count: usize,
}

/// The step being decided, as the context shows it.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo<'a> {
    pub playbook: &'a str,
    pub step: &'a str,
    pub kind: ActionKind,
}

pub fn step_context(
    alert: &AlertFields,
    source: &str,
    case: CaseInfo<'_>,
    report: &EnrichmentReport,
    step: StepInfo<'_>,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    with_step(&alert_context(alert, source, case, report, now), step)
}

/// The part of the step context every step of an alert shares: the alert, its case, the time
/// and the intel matches (the step's own keys are added by [`with_step`]).
pub fn alert_context(
    alert: &AlertFields,
    source: &str,
    case: CaseInfo<'_>,
    report: &EnrichmentReport,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    let intel_matches = report
        .facts
        .iter()
        .filter(|f| f.source.starts_with("intel"))
        .count();
    let v = json!({
        "alert": {
            "severity": alert.severity.as_str(),
            "severity_id": alert.severity.id(),
            "confidence": alert.confidence,
            "rule_id": alert.rule.id,
            "rule_name": alert.rule.name,
            "source": source,
            "techniques": alert.techniques,
            "tactics": alert.tactics,
            "intel_source": alert.intel_source.clone().unwrap_or_default(),
            "tags": alert.tags,
        },
        "case": {"id": case.id, "alert_count": case.alert_count, "entity_count": case.entity_count},
        "time": time_context(now),
        "intel_matches": intel_matches,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The step context: `shared` ([`alert_context`]) and the step's own keys.
pub fn with_step(shared: &Map<String, Value>, step: StepInfo<'_>) -> Map<String, Value> {
    let mut m = shared.clone();
    m.insert("playbook".into(), json!(step.playbook));
    m.insert("step".into(), json!(step.step));
    m.insert("reversible".into(), json!(step.kind.inverse().is_some()));
    m
}

pub fn time_context(now: DateTime<Utc>) -> Value {
    json!({
        "epoch": now.timestamp(),
        "hour_utc": now.hour(),
        "weekday": now.weekday().to_string(),
    })
}
