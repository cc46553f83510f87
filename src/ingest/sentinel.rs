//! Microsoft Sentinel incident as posted by a Logic App (incident ARM resource, or the
//! automation-trigger wrapper `{"object": {incident}}`).
//!
//! Owns: the mapping from `IncidentProperties` and its related entities (`Account`, `Host`,
//! `Ip`, `Url`, `FileHash`, `DnsResolution`, `AzureResource`) to [`AlertFields`]. Junk entity
//! values are skipped.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::IngestError;
use super::value::{
    Epoch, Required, add_entities, get, get_text, get_texts, invalid, list, percent, tactic_name,
    techniques, text, time_at,
};
use crate::alert::{AlertFields, Entity, EntityKind, Rule, Severity};

pub(super) fn parse(body: &Value, received_at: DateTime<Utc>) -> Result<AlertFields, IngestError> {
    let (incident, prefix) = match body.get("object") {
        Some(obj) if obj.is_object() => (obj, "object."),
        _ => (body, ""),
    };
    super::value::one_spelling(incident, prefix)?;
    let mut req = Required::new(incident, prefix);
    let name = req.text("name");
    let title = req.text("properties.title");
    let severity = req.text("properties.severity");
    req.finish()?;
    let severity = Severity::parse(&severity).ok_or_else(|| {
        invalid(
            format!("{prefix}properties.severity"),
            "expected high, medium, low or informational",
        )
    })?;

    let p = get(incident, "properties").unwrap_or(incident);
    let rule_id = list(p, "relatedAnalyticRuleIds")
        .iter()
        .filter_map(text)
        .find_map(|id| {
            let last = id.trim_end_matches('/').rsplit('/').next()?;
            (!last.is_empty()).then(|| last.to_string())
        })
        .unwrap_or_else(|| title.clone());

    let mut entities = Vec::new();
    let entity_lists = [
        list(p, "relatedEntities"),
        list(incident, "entities"),
        if prefix.is_empty() {
            &[]
        } else {
            list(body, "entities")
        },
    ];
    for e in entity_lists.into_iter().flatten() {
        entities.extend(entity(e));
    }

    Ok(AlertFields {
        source_alert_id: name,
        time: time_at(
            incident,
            prefix,
            &[
                "properties.firstActivityTimeUtc",
                "properties.createdTimeUtc",
            ],
            Epoch::Millis,
            received_at,
        )?,
        title: title.clone(),
        description: get_text(p, "description"),
        rule: Rule {
            id: rule_id,
            name: title,
            version: None,
        },
        severity,
        confidence: get(p, "confidence").and_then(percent).unwrap_or(50),
        techniques: techniques(get_texts(p, &["additionalData.techniques"])),
        tactics: get_texts(p, &["additionalData.tactics"])
            .iter()
            .map(|t| tactic_name(t))
            .collect(),
        intel_source: None,
        tags: list(p, "labels")
            .iter()
            .filter_map(|l| text(l).or_else(|| get_text(l, "labelName")))
            .collect(),
        entities,
        attributes: Default::default(),
        source_url: get_text(p, "incidentUrl"),
    })
}

/// One Sentinel entity `{kind, properties: {...}}` (properties may also sit on the entity
/// itself, PascalCase as in the alert trigger's `Entities` list).
fn entity(e: &Value) -> Option<Entity> {
    let kind = get_text(e, "kind").or_else(|| get_text(e, "Type"))?;
    let props = get(e, "properties").filter(|p| p.is_object()).unwrap_or(e);
    let prop = |name: &str| {
        let mut pascal = name.to_string();
        pascal[..1].make_ascii_uppercase();
        get_text(props, name).or_else(|| get_text(props, &pascal))
    };
    let (kind, raw) = match kind.to_ascii_lowercase().as_str() {
        "host" => {
            let host = prop("hostName")?;
            match prop("dnsDomain") {
                Some(domain) if !host.contains('.') => {
                    (EntityKind::Host, format!("{host}.{domain}"))
                }
                _ => (EntityKind::Host, host),
            }
        }
        "account" => {
            let account = prop("accountName")?;
            match prop("upnSuffix") {
                Some(suffix) if !account.contains('@') => {
                    (EntityKind::User, format!("{account}@{suffix}"))
                }
                _ => (EntityKind::User, account),
            }
        }
        "ip" => (EntityKind::Ip, prop("address")?),
        "url" => (EntityKind::Url, prop("url")?),
        "filehash" => (EntityKind::FileHash, prop("hashValue")?),
        "dnsresolution" | "dns" => (EntityKind::Domain, prop("domainName")?),
        "azureresource" => (EntityKind::CloudResource, prop("resourceId")?),
        _ => return None,
    };
    let mut out = Vec::new();
    add_entities(&mut out, kind, [raw]);
    out.pop()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::value::testing::{Want, check, missing, now, parse, survives};
    use crate::alert::Severity;
    use crate::ingest::{IngestError, IngestFormat};

    const FIXTURE: &str = include_str!("../../tests/fixtures/sentinel.json");

    #[test]
    fn parses_the_fixture() {
        let got = parse(IngestFormat::Sentinel, FIXTURE).unwrap();
        check(
            &got,
            &Want {
                source_alert_id: "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
                time: "2024-06-11T08:41:07.247109500+00:00",
                title: "Suspicious cloud admin activity: run command on production VM by carol@example.com",
                rule: (
                    "8f3c2b1a-7d6e-4f5a-9b8c-1d2e3f4a5b6c",
                    "Suspicious cloud admin activity: run command on production VM by carol@example.com",
                    None,
                ),
                severity: Severity::High,
                confidence: 50,
                techniques: &["T1078.004", "T1651"],
                tactics: &["execution", "initial-access", "privilege-escalation"],
                tags: &["Fusion", "cloud", "prod"],
                intel_source: None,
                entities: &[
                    "user:carol@example.com",
                    "ip:203.0.113.150",
                    "cloud_resource:/subscriptions/3f2b8c1d-6e4a-4b7f-9c2d-8e1f0a3b5c7d/resourceGroups/rg-prod-web/providers/Microsoft.Compute/virtualMachines/prod-web-01",
                ],
                attributes: &[],
                source_url: Some(
                    "https://portal.azure.com/#asset/Microsoft_Azure_Security_Insights/Incident/subscriptions/3f2b8c1d-6e4a-4b7f-9c2d-8e1f0a3b5c7d/resourceGroups/rg-soc/providers/Microsoft.OperationalInsights/workspaces/law-sentinel-prod/providers/Microsoft.SecurityInsights/Incidents/a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
                ),
            },
        );
        assert!(got.description.as_deref().unwrap().contains("Run Command"));
    }

    #[test]
    fn accepts_the_bare_incident_and_every_entity_kind() {
        let body = json!({
            "name": "inc-1",
            "properties": {
                "title": "Malware on host",
                "severity": "Medium",
                "confidence": 85,
                "createdTimeUtc": "2024-06-11T09:10:14Z",
                "labels": [{"labelName": "edr"}, "raw-label"]
            },
            "entities": [
                {"kind": "Host", "properties": {"hostName": "WS-042", "dnsDomain": "corp.example"}},
                {"kind": "Account", "properties": {"accountName": "alice"}},
                {"kind": "Url", "properties": {"url": "https://Evil.Example/a"}},
                {"kind": "FileHash", "properties": {"algorithm": "SHA256", "hashValue": "86F51B17077AEE2D7885528286A00AA632489CFEE188CC99FBEC881FEB06DCA7"}},
                {"kind": "DnsResolution", "properties": {"domainName": "evil.example"}},
                {"kind": "Ip", "properties": {"address": "not-an-ip"}},
                {"kind": "Mailbox", "properties": {"mailboxPrimaryAddress": "a@example.com"}},
                {"Type": "ip", "Address": "10.0.0.5"}
            ]
        });
        let got = parse(IngestFormat::Sentinel, &body.to_string()).unwrap();
        assert_eq!(got.rule.id, "Malware on host");
        assert_eq!(got.severity, Severity::Medium);
        assert_eq!(got.confidence, 85);
        assert_eq!(got.time.to_rfc3339(), "2024-06-11T09:10:14+00:00");
        assert_eq!(got.tags, ["edr", "raw-label"]);
        let keys: Vec<String> = got.entities.iter().map(|e| e.key()).collect();
        assert_eq!(
            keys,
            [
                "host:ws-042.corp.example",
                "user:alice",
                "ip:10.0.0.5",
                "domain:evil.example",
                "url:https://evil.example/a",
                "file_hash:86f51b17077aee2d7885528286a00aa632489cfee188cc99fbec881feb06dca7",
            ]
        );
    }

    #[test]
    fn missing_and_invalid_fields() {
        let check = |body: serde_json::Value, want: &[&str]| {
            assert_eq!(
                missing(parse(IngestFormat::Sentinel, &body.to_string())),
                want
            );
        };
        check(
            json!({}),
            &["name", "properties.title", "properties.severity"],
        );
        check(
            json!({"object": {"properties": {"severity": "High"}}}),
            &["object.name", "object.properties.title"],
        );
        let bad = json!({"name": "n", "properties": {"title": "t", "severity": "Urgent"}});
        assert!(matches!(
            parse(IngestFormat::Sentinel, &bad.to_string()),
            Err(IngestError::InvalidField { field, .. }) if field == "properties.severity"
        ));
        let ok = json!({"name": "n", "properties": {"title": "t", "severity": "Informational"}});
        let got = parse(IngestFormat::Sentinel, &ok.to_string()).unwrap();
        assert_eq!((got.severity, got.time), (Severity::Informational, now()));
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        survives(
            IngestFormat::Sentinel,
            FIXTURE,
            &[
                r#"{"object": []}"#,
                r#"{"object": {"name": 1, "properties": []}}"#,
                r#"{"name": "n", "properties": {"title": "t", "severity": "High", "relatedAnalyticRuleIds": ["/", "", null, 5]}}"#,
                r#"{"name": "n", "properties": {"title": "t", "severity": "High", "relatedEntities": [{"kind": "Host", "properties": {"hostName": ""}}, {"kind": "", "": 1}, {"kind": 1}]}}"#,
            ],
        );
    }
}
