//! Properties of tier derivation on the shipped policies: adding approvals never makes the tier
//! stricter, and a `forbid` without an approvals condition always yields `denied`.

use std::sync::OnceLock;

use cordon::action::{ActionKind, Target, Tier};
use cordon::policy::{PolicyEngine, StepRequest, default_attrs, load_dir, time_context};
use proptest::prelude::*;
use serde_json::json;

fn shipped() -> &'static PolicyEngine {
    static E: OnceLock<PolicyEngine> = OnceLock::new();
    E.get_or_init(|| {
        load_dir(&crate::support::repo().join("policies")).unwrap_or_else(|p| panic!("{p:#?}"))
    })
}

#[derive(Debug, Clone)]
struct Req {
    kind: ActionKind,
    severity_id: i64,
    confidence: i64,
    criticality: &'static str,
    environment: &'static str,
    never_isolate: bool,
    intel_match: bool,
    intel_confidence: i64,
    compromised: i64,
    privileged: bool,
}

fn req() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(ActionKind::ALL.to_vec()),
        1i64..=5,
        0i64..=100,
        prop::sample::select(vec!["unknown", "low", "medium", "high", "critical"]),
        prop::sample::select(vec!["unknown", "production", "staging", "corporate"]),
        any::<bool>(),
        any::<bool>(),
        0i64..=100,
        0i64..=100,
        any::<bool>(),
    )
        .prop_map(
            |(
                kind,
                severity_id,
                confidence,
                criticality,
                environment,
                never_isolate,
                intel_match,
                intel_confidence,
                compromised,
                privileged,
            )| Req {
                kind,
                severity_id,
                confidence,
                criticality,
                environment,
                never_isolate,
                intel_match,
                intel_confidence,
                compromised,
                privileged,
            },
        )
}

fn step(r: &Req) -> StepRequest {
    let target_id = match r.kind.target_kind() {
        cordon::action::TargetKind::Indicator => "ip:203.0.113.9".to_string(),
        _ => "target-1".to_string(),
    };
    let target = Target {
        kind: r.kind.target_kind(),
        id: target_id,
    };
    let mut attrs = default_attrs(target.kind, &target.id);
    let mut set = |k: &str, v: serde_json::Value| {
        if attrs.contains_key(k) {
            attrs.insert(k.to_string(), v);
        }
    };
    set("criticality", json!(r.criticality));
    set("environment", json!(r.environment));
    set(
        "tags",
        if r.never_isolate {
            json!(["never-isolate"])
        } else {
            json!([])
        },
    );
    set("intel_match", json!(r.intel_match));
    set(
        "intel_confidence",
        json!(if r.intel_match { r.intel_confidence } else { 0 }),
    );
    set("compromised_intel_confidence", json!(r.compromised));
    set("privileged", json!(r.privileged));
    let sev = ["informational", "low", "medium", "high", "critical"][(r.severity_id - 1) as usize];
    let context = json!({
        "alert": {"severity": sev, "severity_id": r.severity_id, "confidence": r.confidence, "rule_id": "r",
                  "rule_name": "r", "source": "cordon", "techniques": [], "tactics": [], "intel_source": "", "tags": []},
        "case": {"id": "c", "alert_count": 1, "entity_count": 1},
        "time": time_context(chrono::Utc::now()),
        "intel_matches": 0, "playbook": "p", "step": "s", "reversible": r.kind.inverse().is_some(),
    });
    StepRequest {
        playbook: "p".into(),
        family: "f".into(),
        step: "s".into(),
        kind: r.kind,
        target,
        resource_attrs: attrs,
        context: context.as_object().unwrap().clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn more_approvals_never_make_the_tier_stricter(r in req()) {
        let e = shipped();
        let s = step(&r);
        let allowed: Vec<bool> = (0..=3u8).map(|k| e.recheck(s.clone(), k).0).collect();
        for k in 0..3 {
            prop_assert!(!allowed[k] || allowed[k + 1], "allowed with {k} approvals but not with {}: {r:?}", k + 1);
        }
        // The derived tier is exactly the smallest allowed k.
        let tier = e.decide_step(s).tier;
        let smallest = (0..=2u8).find(|k| allowed[*k as usize]);
        prop_assert_eq!(tier, Tier::from_approvals(smallest));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_forbid_without_an_approvals_condition_denies(r in req(), threshold in 1i64..=5, guarded in any::<bool>()) {
        // Shipped policies plus one forbid on this action kind whose condition does not mention
        // approvals (sometimes with a severity guard, sometimes unconditional).
        let dir = tempfile::tempdir().unwrap();
        crate::support::copy_dir(&crate::support::repo().join("policies"), dir.path());
        let cond = if guarded { format!(" when {{ context.alert.severity_id >= {threshold} }}") } else { String::new() };
        std::fs::write(
            dir.path().join("zz_forbid.cedar"),
            format!("@id(\"prop-forbid\")\n@reason(\"property test\")\nforbid(principal, action == Cordon::Action::\"{}\", resource){cond};\n", r.kind),
        ).unwrap();
        let e = load_dir(dir.path()).unwrap_or_else(|p| panic!("{p:#?}"));
        let applies = !guarded || r.severity_id >= threshold;
        let rec = e.decide_step(step(&r));
        if applies {
            prop_assert_eq!(rec.tier, Tier::Denied);
            prop_assert!(rec.determining.iter().any(|d| d.id == "prop-forbid"));
        } else {
            prop_assert_eq!(rec.tier, shipped().decide_step(step(&r)).tier);
        }
    }
}
