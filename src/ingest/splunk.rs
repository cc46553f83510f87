//! Splunk webhook alert action body: `{"sid", "search_name", "result": {first row}, ...}`.
//!
//! Owns: the mapping from the saved search and its first result row (CIM field names, Splunk
//! ES annotations, Sysmon-style process fields) to [`AlertFields`]. Result values are strings
//! or multivalue arrays; junk entity values are skipped.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::IngestError;
use super::value::{
    Epoch, Required, add_entities, basename, first_text, get, get_text, get_texts, is_ip, percent,
    split_list, tactic_name, techniques, time_at,
};
use crate::alert::{AlertFields, EntityKind, Rule, Severity};

const HOST_FIELDS: [&str; 6] = [
    "host",
    "dest",
    "dest_host",
    "src_host",
    "dvc",
    "ComputerName",
];
/// `src`/`dest` and the host fields count as IPs only when they parse as one.
const IP_FIELDS: [&str; 10] = [
    "src_ip",
    "src",
    "dest_ip",
    "dest",
    "ip",
    "host",
    "dest_host",
    "src_host",
    "dvc",
    "ComputerName",
];
const TECHNIQUE_FIELDS: [&str; 4] = [
    "mitre_technique_id",
    "annotations.mitre_attack",
    "annotations.mitre_attack.mitre_technique_id",
    "technique",
];
const TACTIC_FIELDS: [&str; 2] = ["mitre_tactic", "annotations.mitre_attack.mitre_tactic"];

pub(super) fn parse(body: &Value, received_at: DateTime<Utc>) -> Result<AlertFields, IngestError> {
    super::value::one_spelling(body, "")?;
    let mut req = Required::new(body, "");
    let sid = req.text("sid");
    let search_name = req.text("search_name");
    let result = req.object("result");
    req.finish()?;

    let severity = ["severity", "urgency"]
        .iter()
        .filter_map(|p| get_text(result, p))
        .find_map(|s| Severity::parse(&s))
        .unwrap_or(Severity::Medium);

    let hosts = get_texts(result, &HOST_FIELDS);
    let mut entities = Vec::new();
    add_entities(
        &mut entities,
        EntityKind::Host,
        hosts.iter().filter(|h| !is_ip(h)),
    );
    add_entities(
        &mut entities,
        EntityKind::User,
        get_texts(result, &["user", "src_user", "user_name"]),
    );
    add_entities(&mut entities, EntityKind::Ip, get_texts(result, &IP_FIELDS));
    add_entities(&mut entities, EntityKind::Url, get_texts(result, &["url"]));
    add_entities(
        &mut entities,
        EntityKind::Domain,
        get_texts(result, &["domain", "query", "dest_domain"]),
    );
    add_entities(
        &mut entities,
        EntityKind::FileHash,
        get_texts(result, &["file_hash", "sha256", "sha1", "md5", "hash"]),
    );
    add_entities(
        &mut entities,
        EntityKind::CloudResource,
        get_texts(result, &["cloud_resource", "resource_arn"]),
    );

    let mut attributes = BTreeMap::new();
    let attrs = [
        (
            "process.command_line",
            ["process", "CommandLine", "cmdline"],
            false,
        ),
        (
            "process.name",
            ["process_name", "Image", "process_exec"],
            true,
        ),
        (
            "process.parent.name",
            ["parent_process_name", "ParentImage", "parent_process_exec"],
            true,
        ),
    ];
    for (key, paths, is_path) in attrs {
        if let Some(v) = first_text(result, &paths) {
            attributes.insert(key.to_string(), if is_path { basename(&v) } else { v });
        }
    }

    Ok(AlertFields {
        source_alert_id: sid,
        time: time_at(result, "result.", &["_time"], Epoch::Seconds, received_at)?,
        title: get_text(result, "title").unwrap_or_else(|| search_name.clone()),
        description: get_text(result, "description"),
        rule: Rule {
            id: get_text(result, "rule_id").unwrap_or_else(|| search_name.clone()),
            name: search_name,
            version: None,
        },
        severity,
        confidence: get(result, "confidence").and_then(percent).unwrap_or(50),
        techniques: techniques(split_list(get_texts(result, &TECHNIQUE_FIELDS))),
        tactics: split_list(get_texts(result, &TACTIC_FIELDS))
            .iter()
            .map(|t| tactic_name(t))
            .collect(),
        intel_source: get_text(result, "intel_source"),
        tags: Vec::new(),
        entities,
        attributes,
        source_url: get_text(body, "results_link"),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::value::testing::{Want, check, missing, now, parse, survives};
    use crate::alert::Severity;
    use crate::ingest::{IngestError, IngestFormat};

    const FIXTURE: &str = include_str!("../../tests/fixtures/splunk.json");

    fn body(result: serde_json::Value) -> String {
        json!({"sid": "s1", "search_name": "Search", "result": result}).to_string()
    }

    #[test]
    fn parses_the_fixture() {
        let got = parse(IngestFormat::Splunk, FIXTURE).unwrap();
        check(
            &got,
            &Want {
                source_alert_id: "scheduler__admin_U0EtQWNjZXNzUHJvdGVjdGlvbg__RMD5c8e2f4a1b3d5e7f9_at_1718097300_4821",
                time: "2024-06-11T09:14:01+00:00",
                title: "Password spray then impossible travel for bob@example.com",
                rule: (
                    "b2f6e0d8-5c3a-4e7b-9f1d-0a2c4e6b8d01",
                    "Access - Password Spray Followed By Impossible Travel - Rule",
                    None,
                ),
                severity: Severity::High,
                confidence: 80,
                techniques: &["T1078.004", "T1110.003"],
                tactics: &["credential-access", "initial-access"],
                tags: &[],
                intel_source: Some("cti-feed-x"),
                entities: &["user:bob@example.com", "ip:198.51.100.23"],
                attributes: &[],
                source_url: Some(
                    "https://splunk.corp.example:8000/app/SA-AccessProtection/@go?sid=scheduler__admin_U0EtQWNjZXNzUHJvdGVjdGlvbg__RMD5c8e2f4a1b3d5e7f9_at_1718097300_4821",
                ),
            },
        );
    }

    #[test]
    fn maps_cim_fields() {
        let got = parse(
            IngestFormat::Splunk,
            &body(json!({
                "_time": "2024-06-11T11:14:01.000+02:00",
                "dest": "10.1.2.3",
                "dvc": "FW-01.corp.example",
                "src": "not-an-ip",
                "user": "CORP\\Frank",
                "query": "Evil.Example.",
                "url": "HTTP://Evil.Example/x",
                "sha256": "86F51B17077AEE2D7885528286A00AA632489CFEE188CC99FBEC881FEB06DCA7",
                "md5": "junk",
                "resource_arn": "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc",
                "urgency": "critical",
                "confidence": "101",
                "technique": "attack.t1059.001, not-a-technique",
                "Image": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                "ParentImage": "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
                "CommandLine": "powershell.exe -enc SQBFAFgA"
            })),
        )
        .unwrap();
        let keys: Vec<String> = got.entities.iter().map(|e| e.key()).collect();
        assert_eq!(
            keys,
            [
                "host:fw-01.corp.example",
                "user:frank",
                "ip:10.1.2.3",
                "domain:evil.example",
                "url:http://evil.example/x",
                "file_hash:86f51b17077aee2d7885528286a00aa632489cfee188cc99fbec881feb06dca7",
                "cloud_resource:arn:aws:ec2:us-east-1:123456789012:instance/i-0abc",
            ]
        );
        assert_eq!(got.title, "Search");
        assert_eq!(got.rule.id, "Search");
        assert_eq!(got.severity, Severity::Critical);
        assert_eq!(got.confidence, 50);
        assert_eq!(got.techniques, ["T1059.001"]);
        assert_eq!(got.time.to_rfc3339(), "2024-06-11T09:14:01+00:00");
        assert_eq!(got.attributes["process.name"], "powershell.exe");
        assert_eq!(got.attributes["process.parent.name"], "WINWORD.EXE");
        assert_eq!(
            got.attributes["process.command_line"],
            "powershell.exe -enc SQBFAFgA"
        );
    }

    #[test]
    fn defaults_when_the_row_is_sparse() {
        let got = parse(IngestFormat::Splunk, &body(json!({}))).unwrap();
        assert_eq!(got.time, now());
        assert_eq!(got.severity, Severity::Medium);
        assert_eq!(got.confidence, 50);
        assert_eq!(got.source_url, None);
        let got = parse(
            IngestFormat::Splunk,
            &body(json!({"severity": "4", "_time": 1718097241.5})),
        )
        .unwrap();
        assert_eq!(got.severity, Severity::High);
        assert_eq!(got.time.to_rfc3339(), "2024-06-11T09:14:01.500+00:00");
    }

    #[test]
    fn missing_and_invalid_fields() {
        let bad = include_str!("../../tests/fixtures/bad/splunk_missing_sid.json");
        assert_eq!(
            missing(parse(IngestFormat::Splunk, bad)),
            ["sid", "search_name"]
        );
        assert_eq!(
            missing(parse(IngestFormat::Splunk, "{}")),
            ["sid", "search_name", "result"]
        );
        assert!(matches!(
            parse(IngestFormat::Splunk, r#"{"sid": "s", "search_name": "n", "result": [{}]}"#),
            Err(IngestError::InvalidField { field, .. }) if field == "result"
        ));
        assert!(matches!(
            parse(IngestFormat::Splunk, &body(json!({"_time": "last tuesday"}))),
            Err(IngestError::InvalidField { field, .. }) if field == "result._time"
        ));
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        survives(
            IngestFormat::Splunk,
            FIXTURE,
            &[
                r#"{"sid": [], "search_name": {}, "result": []}"#,
                r#"{"sid": 1, "search_name": 2, "result": {"user": 5, "_time": null, "severity": [], "annotations": 7}}"#,
                r#"{"sid": "s", "search_name": "n", "result": {"annotations.mitre_attack": [[], {}, null, "T1110"]}}"#,
                r#"{"sid": "s", "search_name": "n", "result": {"_time": 1e300, "confidence": -5}}"#,
            ],
        );
    }
}
