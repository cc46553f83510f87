//! Unit tests of `learn`: tuning proposals, regression tests, intel credits and backlog items
//! made from closed cases, and the checks that keep a proposal from filtering a true positive.
use super::*;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn host(v: &str) -> Entity {
    Entity::new(EntityKind::Host, v).unwrap()
}
fn user(v: &str) -> Entity {
    Entity::new(EntityKind::User, v).unwrap()
}

fn alert(id: usize, rule: &str, ents: Vec<Entity>, verdict: Verdict) -> HistAlert {
    HistAlert {
        alert_id: format!("a{id}"),
        case_id: format!("c{id}"),
        rule_id: rule.into(),
        rule_name: format!("{rule} name"),
        entities: ents,
        time: at("2026-12-01T10:00:00Z") + Duration::minutes(id as i64),
        verdict,
    }
}

/// Ten false positives of one rule on one host (each also naming a different user), one
/// true positive of the same rule on another host sharing a user, and noise: one proposal,
/// on the host, that would have suppressed exactly the ten.
#[test]
fn ten_false_positives_on_one_host_give_one_narrow_tuning_proposal() {
    let mut h = Vec::new();
    for i in 0..10 {
        h.push(alert(
            i,
            "r1",
            vec![host("ws-1"), user(&format!("u{i}@x.com"))],
            Verdict::FalsePositive,
        ));
    }
    h.push(alert(
        10,
        "r1",
        vec![host("ws-2"), user("u1@x.com")],
        Verdict::TruePositive,
    ));
    h.push(alert(11, "r2", vec![host("ws-1")], Verdict::TruePositive));
    let now = at("2026-12-05T00:00:00Z");
    let ps = tuning("r1", &h, TuningParams::default(), "soc", now);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    let p = &ps[0];
    let f = TuningFilter {
        rule_id: "r1".into(),
        entity: host("ws-1"),
    };
    let suppressed: Vec<&str> = h
        .iter()
        .filter(|a| f.matches(a))
        .map(|a| a.alert_id.as_str())
        .collect();
    assert_eq!(
        suppressed,
        (0..10).map(|i| format!("a{i}")).collect::<Vec<_>>()
    );
    assert_eq!(p.evidence["would_suppress"], json!(suppressed));
    assert_eq!(p.evidence["filter"]["entity"], json!("host:ws-1"));
    assert_eq!(p.cases.len(), 10);
    assert!(p.files[1].contents.contains("entity = \"host:ws-1\""));
    // The same lesson learned again is the same proposal.
    assert_eq!(
        tuning("r1", &h, TuningParams::default(), "soc", now)[0].id,
        p.id
    );
}

#[test]
fn a_filter_that_would_hide_a_true_positive_is_never_proposed() {
    let mut h: Vec<HistAlert> = (0..5)
        .map(|i| alert(i, "r1", vec![host("ws-1")], Verdict::FalsePositive))
        .collect();
    h.push(alert(9, "r1", vec![host("ws-1")], Verdict::TruePositive));
    let ps = tuning(
        "r1",
        &h,
        TuningParams::default(),
        "soc",
        at("2026-12-05T00:00:00Z"),
    );
    assert!(ps.is_empty(), "{ps:#?}");
}

#[test]
fn false_positives_below_the_threshold_or_outside_the_window_propose_nothing() {
    let h: Vec<HistAlert> = (0..2)
        .map(|i| alert(i, "r1", vec![host("ws-1")], Verdict::FalsePositive))
        .collect();
    let now = at("2026-12-05T00:00:00Z");
    assert!(tuning("r1", &h, TuningParams::default(), "soc", now).is_empty());
    let h: Vec<HistAlert> = (0..5)
        .map(|i| alert(i, "r1", vec![host("ws-1")], Verdict::FalsePositive))
        .collect();
    let later = now + Duration::days(30);
    assert!(tuning("r1", &h, TuningParams::default(), "soc", later).is_empty());
}

/// The Sigma filter parses as YAML with the fields pySigma's filter loader reads.
#[test]
fn the_sigma_filter_document_parses_as_yaml_with_the_fields_pysigma_expects() {
    let f = TuningFilter {
        rule_id: "rule: \"odd\" #1".into(),
        entity: host("ws-1.corp.example"),
    };
    let y = sigma_filter_yaml("lp-1", &f, "Odd: rule", 10, at("2026-12-05T00:00:00Z"));
    let docs = yaml_rust2::YamlLoader::load_from_str(&y).expect("valid YAML");
    assert_eq!(docs.len(), 1);
    let d = &docs[0];
    assert!(
        d["title"]
            .as_str()
            .unwrap()
            .starts_with("cordon tuning: Odd: rule")
    );
    let id = d["id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(id.matches('-').count(), 4);
    assert_eq!(d["logsource"]["product"].as_str(), Some("any"));
    let filter = &d["filter"];
    assert_eq!(
        filter["rules"][0].as_str(),
        Some("rule: \"odd\" #1"),
        "the rule id survives quoting"
    );
    assert_eq!(
        filter["selection"]["Computer"].as_str(),
        Some("ws-1.corp.example")
    );
    assert_eq!(filter["condition"].as_str(), Some("not selection"));
    assert!(d["date"].as_str().is_some());
    assert!(d["description"].as_str().is_some());
}

#[test]
fn the_suppression_entry_is_a_valid_config_suppression() {
    let f = TuningFilter {
        rule_id: "r1".into(),
        entity: host("ws-1"),
    };
    let t = suppression_toml("lp-1", &f, 10, "soc", at("2027-03-05T00:00:00Z"));
    #[derive(serde::Deserialize)]
    struct File {
        suppressions: Vec<crate::config::Suppression>,
    }
    let file: File = toml::from_str(&t).unwrap();
    let s = &file.suppressions[0];
    assert_eq!(s.rule.as_deref(), Some("r1"));
    assert_eq!(s.entity.as_deref(), Some("host:ws-1"));
    assert_eq!(s.expires, at("2027-03-05T00:00:00Z"));
}

fn closed(verdict: Verdict) -> ClosedCase {
    ClosedCase {
        case_id: "case-1".into(),
        verdict,
        closed_at: at("2026-12-05T00:00:00Z"),
        closed_by: "alice".into(),
        reason: "confirmed".into(),
        rule_ids: vec!["r1".into()],
        helped_intel: Some("intel-42".into()),
        helped_rule: None,
        missed: Some("lateral movement to ws-9".into()),
        steps: vec![StepDecision {
            request: json!({
                "principal": {"type": "Cordon::Playbook", "id": "pb"},
                "action": {"type": "Cordon::Action", "id": "isolate_host"},
                "resource": {"type": "Cordon::Host", "id": "ws-1"},
                "context": {"alert": {"severity": "high", "severity_id": 4, "confidence": 90,
                    "rule_id": "r1", "rule_name": "r", "source": "native", "techniques": ["T1059"],
                    "tactics": [], "intel_source": "", "tags": []},
                    "case": {"id": "case-1", "alert_count": 2, "entity_count": 1},
                    "time": {"epoch": 1764892800, "hour_utc": 0, "weekday": "Fri"},
                    "intel_matches": 1, "playbook": "pb", "step": "isolate", "reversible": true,
                    "approvals": 1},
                "entities": [
                    {"uid": {"type": "Cordon::Playbook", "id": "pb"}, "attrs": {"family": "fam"}, "parents": []},
                    {"uid": {"type": "Cordon::Host", "id": "ws-1"}, "attrs": {"environment": "production", "owner": null}, "parents": []}
                ]
            }),
            tier: Tier::OneApprover,
        }],
    }
}

#[test]
fn a_true_positive_gives_a_regression_test_an_intel_credit_and_a_backlog_item() {
    let ps = for_case(&closed(Verdict::TruePositive));
    let kinds: Vec<ProposalKind> = ps.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ProposalKind::RegressionTest,
            ProposalKind::IntelCredit,
            ProposalKind::DetectionBacklog
        ]
    );
    let t: toml::Table = toml::from_str(&ps[0].files[0].contents).unwrap();
    let test = &t["test"][0];
    assert_eq!(test["action"].as_str(), Some("isolate_host"));
    assert_eq!(test["expect_tier"].as_str(), Some("one_approver"));
    assert_eq!(test["family"].as_str(), Some("fam"));
    assert_eq!(test["resource"]["environment"].as_str(), Some("production"));
    assert!(test["resource"].get("owner").is_none(), "null is left out");
    assert!(test["alert"].get("severity_id").is_none());
    assert_eq!(test["time"].as_str(), Some("2025-12-05T00:00:00Z"));
    for p in &ps {
        for f in &p.files {
            assert!(safe_file_name(&f.name), "{}", f.name);
        }
    }
    // A false positive teaches only what was missed.
    let ps = for_case(&closed(Verdict::FalsePositive));
    assert_eq!(
        ps.iter().map(|p| p.kind).collect::<Vec<_>>(),
        vec![ProposalKind::DetectionBacklog]
    );
}

#[test]
fn resolved_proposals_are_not_reopened_by_the_same_lesson() {
    let p = for_case(&closed(Verdict::TruePositive)).remove(0);
    assert!(merge(Some(&p), p.clone()).is_none(), "unchanged");
    let mut d = p.clone();
    d.state = ProposalState::Dismissed;
    let mut fresh = p.clone();
    fresh.evidence = json!({"tests": 9});
    assert!(merge(Some(&d), fresh.clone()).is_none());
    assert_eq!(
        merge(Some(&p), fresh.clone()).unwrap().evidence,
        fresh.evidence
    );
}

#[test]
fn file_names_from_outside_values_stay_inside_the_proposals_directory() {
    assert!(!safe_file_name("../x"));
    assert!(!safe_file_name("/etc/passwd"));
    assert!(!safe_file_name("a/b/c"));
    assert!(!safe_file_name("a//b"));
    assert!(safe_file_name("tuning/r1-host-ws_1.sigma.yml"));
    assert_eq!(slug("../../etc"), "______etc");
}
