//! cordon's own alert JSON (`POST /v1/alerts`, gRPC `SubmitAlert`).
//!
//! Owns: the strict native schema (unknown fields refused, every missing required field named,
//! every invalid value named by its path) and its mapping to [`AlertFields`]. Unlike the vendor
//! formats, an entity or technique that does not normalize is an error, not skipped.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::IngestError;
use super::value::{Required, invalid};
use crate::alert::{AlertFields, Entity, EntityKind, Rule, Severity, technique_id};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeAlert {
    source_alert_id: String,
    time: Option<String>,
    title: String,
    description: Option<String>,
    rule: NativeRule,
    severity: String,
    confidence: Option<i64>,
    techniques: Option<Vec<String>>,
    tactics: Option<Vec<String>>,
    intel_source: Option<String>,
    tags: Option<Vec<String>>,
    entities: Option<Vec<NativeEntity>>,
    attributes: Option<BTreeMap<String, String>>,
    source_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeRule {
    id: String,
    name: String,
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeEntity {
    kind: String,
    value: String,
}

const SEVERITIES: [Severity; 5] = [
    Severity::Informational,
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];

pub(super) fn parse(value: Value, received_at: DateTime<Utc>) -> Result<AlertFields, IngestError> {
    let required = check_required(&value);
    let parsed = NativeAlert::deserialize(&value);
    // A typo'd field name is reported as such, before the missing field it was meant to be.
    if let Err(e) = &parsed
        && let Some(name) = unknown_field(&e.to_string())
    {
        return Err(IngestError::UnknownField(unknown_field_path(&value, name)));
    }
    required?;
    let a = parsed.map_err(|e| invalid(type_error_field(&value), e.to_string()))?;

    let severity = SEVERITIES
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(a.severity.trim()))
        .ok_or_else(|| {
            invalid(
                "severity",
                "expected one of informational, low, medium, high, critical",
            )
        })?;
    let confidence = match a.confidence {
        None => 50,
        Some(c) => u8::try_from(c)
            .ok()
            .filter(|c| *c <= 100)
            .ok_or_else(|| invalid("confidence", "expected an integer from 0 to 100"))?,
    };
    let time = match a.time.as_deref() {
        None => received_at,
        Some(t) => DateTime::parse_from_rfc3339(t.trim())
            .map_err(|_| invalid("time", "expected an rfc3339 timestamp"))?
            .with_timezone(&Utc),
    };
    let techniques = a
        .techniques
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            technique_id(t).ok_or_else(|| {
                invalid(
                    format!("techniques[{i}]"),
                    "expected an att&ck technique id like T1059.001",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let entities = a
        .entities
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let kind = EntityKind::parse(e.kind.trim()).ok_or_else(|| {
                invalid(
                    format!("entities[{i}].kind"),
                    "expected one of host, user, ip, domain, url, file_hash, cloud_resource",
                )
            })?;
            Entity::new(kind, &e.value).ok_or_else(|| {
                invalid(
                    format!("entities[{i}].value"),
                    format!("not a valid {kind} identifier"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(AlertFields {
        source_alert_id: a.source_alert_id.trim().to_string(),
        time,
        title: a.title.trim().to_string(),
        description: non_empty(a.description),
        rule: Rule {
            id: a.rule.id.trim().to_string(),
            name: a.rule.name.trim().to_string(),
            version: non_empty(a.rule.version),
        },
        severity,
        confidence,
        techniques,
        tactics: a.tactics.unwrap_or_default(),
        intel_source: non_empty(a.intel_source),
        tags: a.tags.unwrap_or_default(),
        entities,
        attributes: a.attributes.unwrap_or_default(),
        source_url: non_empty(a.source_url),
    })
}

/// Checks the required fields on the raw value so all missing ones are named at once.
fn check_required(value: &Value) -> Result<(), IngestError> {
    let mut req = Required::new(value, "");
    req.text("source_alert_id");
    req.text("title");
    if req.object("rule").is_object() {
        req.text("rule.id");
        req.text("rule.name");
    }
    req.text("severity");
    req.finish()
}

/// The field name in serde's "unknown field `foo`, expected one of ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

/// Where an unknown field sits: top level, `rule.<name>` or `entities[i].<name>`.
fn unknown_field_path(value: &Value, name: &str) -> String {
    if value.get(name).is_some() {
        return name.to_string();
    }
    if value.get("rule").and_then(|r| r.get(name)).is_some() {
        return format!("rule.{name}");
    }
    if let Some(Value::Array(entities)) = value.get("entities")
        && let Some(i) = entities.iter().position(|e| e.get(name).is_some())
    {
        return format!("entities[{i}].{name}");
    }
    name.to_string()
}

/// The path of the field whose JSON type serde refused (serde's message does not say).
fn type_error_field(value: &Value) -> String {
    fn bad<'a, T: Deserialize<'a>>(v: Option<&'a Value>) -> bool {
        v.is_some_and(|v| T::deserialize(v).is_err())
    }
    macro_rules! probe {
        ($($path:literal => $ty:ty),* $(,)?) => {
            $(if bad::<$ty>(value.pointer($path)) {
                return $path[1..].replace('/', ".");
            })*
        };
    }
    probe!(
        "/source_alert_id" => String,
        "/time" => Option<String>,
        "/title" => String,
        "/description" => Option<String>,
        "/rule/id" => String,
        "/rule/name" => String,
        "/rule/version" => Option<String>,
        "/rule" => NativeRule,
        "/severity" => String,
        "/confidence" => Option<i64>,
        "/techniques" => Option<Vec<String>>,
        "/tactics" => Option<Vec<String>>,
        "/intel_source" => Option<String>,
        "/tags" => Option<Vec<String>>,
        "/attributes" => Option<BTreeMap<String, String>>,
        "/source_url" => Option<String>,
    );
    if let Some(Value::Array(entities)) = value.get("entities") {
        for (i, e) in entities.iter().enumerate() {
            if bad::<NativeEntity>(Some(e)) {
                return format!("entities[{i}]");
            }
        }
    }
    if bad::<Option<Vec<NativeEntity>>>(value.get("entities")) {
        return "entities".to_string();
    }
    "body".to_string()
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::value::testing::{Want, check, missing, now, parse, survives};
    use crate::alert::Severity;
    use crate::ingest::{IngestError, IngestFormat};

    const FIXTURE: &str = include_str!("../../tests/fixtures/cordon.json");

    fn with(change: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        change(&mut v);
        v.to_string()
    }

    fn invalid_field(body: &str) -> String {
        match parse(IngestFormat::Cordon, body) {
            Err(IngestError::InvalidField { field, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_fixture() {
        let got = parse(IngestFormat::Cordon, FIXTURE).unwrap();
        check(
            &got,
            &Want {
                source_alert_id: "edr-7f3a9c21-4b8e-4d2f-a1c6-90e5d7b3f812",
                time: "2024-06-11T10:02:33+00:00",
                title: "Credential dumping: LSASS memory read via comsvcs.dll MiniDump",
                rule: (
                    "0f2c6b1e-8d4a-4c3b-9e7f-5a1d2c3b4e6f",
                    "LSASS Memory Dump via Comsvcs DLL",
                    Some("3"),
                ),
                severity: Severity::Critical,
                confidence: 90,
                techniques: &["T1003.001", "T1218.011"],
                tactics: &["credential-access", "defense-evasion"],
                tags: &["edr", "tlp.amber", "windows"],
                intel_source: Some("sigma-community"),
                entities: &[
                    "host:fin-lt-013.corp.example",
                    "user:erin",
                    "ip:10.20.44.13",
                    "domain:files.evil.example",
                    "url:https://files.evil.example/upload/lsass.dmp",
                    "file_hash:4cdbc4ad4b558745a694a0f3f0d55209314e1edfdbe96a3f14d266831728a941",
                ],
                attributes: &[
                    (
                        "process.command_line",
                        r"rundll32.exe C:\Windows\System32\comsvcs.dll, MiniDump 684 C:\Users\Public\lsass.dmp full",
                    ),
                    ("process.name", "rundll32.exe"),
                    ("process.parent.name", "cmd.exe"),
                ],
                source_url: Some(
                    "https://edr.corp.example/alerts/7f3a9c21-4b8e-4d2f-a1c6-90e5d7b3f812",
                ),
            },
        );
        assert!(got.description.as_deref().unwrap().contains("MiniDump"));
    }

    #[test]
    fn optional_fields_default() {
        let body = json!({
            "source_alert_id": "a-1",
            "title": "t",
            "rule": {"id": "r", "name": "n"},
            "severity": "High"
        });
        let got = parse(IngestFormat::Cordon, &body.to_string()).unwrap();
        assert_eq!(got.time, now());
        assert_eq!(got.confidence, 50);
        assert_eq!(got.severity, Severity::High);
        assert!(got.entities.is_empty() && got.techniques.is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let bad = include_str!("../../tests/fixtures/bad/cordon_unknown_field.json");
        assert_eq!(
            parse(IngestFormat::Cordon, bad),
            Err(IngestError::UnknownField("severty".into()))
        );
        let nested = with(|v| v["rule"]["owner"] = json!("soc"));
        assert_eq!(
            parse(IngestFormat::Cordon, &nested),
            Err(IngestError::UnknownField("rule.owner".into()))
        );
        let entity = with(|v| v["entities"][1]["type"] = json!("user"));
        assert_eq!(
            parse(IngestFormat::Cordon, &entity),
            Err(IngestError::UnknownField("entities[1].type".into()))
        );
    }

    #[test]
    fn missing_fields_are_all_named() {
        let check = |body: serde_json::Value, want: &[&str]| {
            assert_eq!(
                missing(parse(IngestFormat::Cordon, &body.to_string())),
                want
            );
        };
        check(json!({}), &["source_alert_id", "title", "rule", "severity"]);
        check(
            json!({"title": "t", "rule": {"name": "n"}, "severity": "low"}),
            &["source_alert_id", "rule.id"],
        );
        check(
            json!({"source_alert_id": " ", "title": "t", "rule": {"id": "", "name": "n"}, "severity": "low"}),
            &["source_alert_id", "rule.id"],
        );
    }

    #[test]
    fn invalid_values_are_named_by_path() {
        let check = |change: fn(&mut serde_json::Value), want: &str| {
            assert_eq!(invalid_field(&with(change)), want);
        };
        check(|v| v["severity"] = json!("urgent"), "severity");
        check(|v| v["confidence"] = json!(101), "confidence");
        check(|v| v["confidence"] = json!(-1), "confidence");
        check(|v| v["confidence"] = json!(50.5), "confidence");
        check(|v| v["time"] = json!("yesterday"), "time");
        check(|v| v["techniques"][1] = json!("execution"), "techniques[1]");
        check(
            |v| v["entities"][2]["kind"] = json!("mac"),
            "entities[2].kind",
        );
        check(
            |v| v["entities"][2]["value"] = json!("10.0.0.999"),
            "entities[2].value",
        );
        check(|v| v["entities"][1] = json!("erin"), "entities[1]");
        check(|v| v["title"] = json!(5), "title");
        check(|v| v["rule"]["version"] = json!(3), "rule.version");
        check(|v| v["rule"] = json!("r"), "rule");
        check(|v| v["tags"] = json!("edr"), "tags");
        check(|v| v["attributes"]["pid"] = json!(684), "attributes");
    }

    #[test]
    fn malformed_json_is_refused() {
        let bad = include_str!("../../tests/fixtures/bad/malformed.json");
        assert!(matches!(
            parse(IngestFormat::Cordon, bad),
            Err(IngestError::MalformedJson(_))
        ));
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        survives(
            IngestFormat::Cordon,
            FIXTURE,
            &[
                "{}",
                r#"{"source_alert_id": [], "title": {}, "rule": [], "severity": null}"#,
                r#"{"source_alert_id": 1, "title": 2, "rule": {"id": 3, "name": 4}, "severity": 5}"#,
                r#"{"source_alert_id": "a", "title": "t", "rule": {"id": "r", "name": "n"}, "severity": "low", "entities": [null, 1, []]}"#,
                r#"{"unknown field `x`": 1}"#,
            ],
        );
    }
}
