//! The normalized alert model (aligned with OCSF Detection Finding, class 2004).
//!
//! Owns: the `Alert` type every ingest format is translated into, the entity kinds and their
//! canonical identifiers, severity, and the keys derived from an alert (dedup fingerprint,
//! correlation key, primary entity). Pure data and pure functions: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// OCSF severity (`severity_id` 1..=5; 0 unknown and 6 fatal fold into the nearest level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// OCSF `severity_id`.
    pub fn id(self) -> i64 {
        match self {
            Severity::Informational => 1,
            Severity::Low => 2,
            Severity::Medium => 3,
            Severity::High => 4,
            Severity::Critical => 5,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses the severity words SIEMs use (case-insensitive): `info`, `informational`, `low`,
    /// `medium`, `moderate`, `high`, `critical`, `fatal`, and numeric OCSF ids "0".."6".
    pub fn parse(s: &str) -> Option<Severity> {
        let s = s.trim().to_ascii_lowercase();
        Some(match s.as_str() {
            "info" | "informational" | "information" | "0" | "1" | "unknown" => {
                Severity::Informational
            }
            "low" | "2" => Severity::Low,
            "medium" | "moderate" | "3" => Severity::Medium,
            "high" | "4" => Severity::High,
            "critical" | "fatal" | "5" | "6" => Severity::Critical,
            _ => return None,
        })
    }

    /// OCSF `severity_id` to severity; `None` for values outside 0..=6 (99 "other" included).
    pub fn from_id(id: i64) -> Option<Severity> {
        Severity::parse(&id.to_string())
    }

    /// Maps a 0..=100 risk score (Elastic `risk_score`) to a severity.
    pub fn from_risk_score(score: f64) -> Severity {
        match score {
            s if s >= 90.0 => Severity::Critical,
            s if s >= 70.0 => Severity::High,
            s if s >= 40.0 => Severity::Medium,
            s if s >= 20.0 => Severity::Low,
            _ => Severity::Informational,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of entity an alert can name. Closed: adding one is one variant, one
/// `normalize` arm and one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Host,
    User,
    Ip,
    Domain,
    Url,
    FileHash,
    CloudResource,
}

impl EntityKind {
    pub const ALL: [EntityKind; 7] = [
        EntityKind::Host,
        EntityKind::User,
        EntityKind::Ip,
        EntityKind::Domain,
        EntityKind::Url,
        EntityKind::FileHash,
        EntityKind::CloudResource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Host => "host",
            EntityKind::User => "user",
            EntityKind::Ip => "ip",
            EntityKind::Domain => "domain",
            EntityKind::Url => "url",
            EntityKind::FileHash => "file_hash",
            EntityKind::CloudResource => "cloud_resource",
        }
    }

    pub fn parse(s: &str) -> Option<EntityKind> {
        EntityKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entity named by an alert, with its canonical identifier in `value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entity {
    pub kind: EntityKind,
    /// Canonical identifier (see [`normalize`]).
    pub value: String,
}

impl Entity {
    /// Builds an entity from a raw identifier, normalizing it; `None` when the raw value is
    /// empty or not a valid identifier of that kind (an unparsable IP, a hash of the wrong
    /// length).
    pub fn new(kind: EntityKind, raw: &str) -> Option<Entity> {
        normalize(kind, raw).map(|value| Entity { kind, value })
    }

    /// `kind:value`, the key used in indexes and policy entity ids.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind, self.value)
    }
}

/// Canonical identifier for an entity of `kind`:
/// - host: lower-case, trailing dot removed (`WS-042.Corp.Example.` → `ws-042.corp.example`);
/// - user: lower-case, `DOMAIN\user` → `user` (UPNs and emails stay whole, lower-cased);
/// - ip: parsed and printed canonically (`::FFFF:10.0.0.1` stays IPv6; leading zeros rejected);
/// - domain: lower-case, trailing dot removed;
/// - url: trimmed; scheme and host lower-cased, path kept as sent;
/// - file_hash: lower-case hex of 32 (md5), 40 (sha1) or 64 (sha256) digits;
/// - cloud_resource: trimmed, kept as sent (ARNs and Azure ids are case-sensitive in parts).
pub fn normalize(kind: EntityKind, raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw == "-" {
        return None;
    }
    match kind {
        EntityKind::Host | EntityKind::Domain => {
            let v = raw.trim_end_matches('.').to_ascii_lowercase();
            (!v.is_empty() && !v.contains(char::is_whitespace)).then_some(v)
        }
        EntityKind::User => {
            let v = match raw.rsplit_once('\\') {
                Some((_, user)) => user,
                None => raw,
            };
            let v = v.to_lowercase();
            (!v.is_empty()).then_some(v)
        }
        EntityKind::Ip => raw.parse::<IpAddr>().ok().map(|ip| ip.to_string()),
        EntityKind::Url => {
            let (scheme, rest) = raw.split_once("://")?;
            let (host, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            if scheme.is_empty() || host.is_empty() {
                return None;
            }
            Some(format!(
                "{}://{}{}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase(),
                path
            ))
        }
        EntityKind::FileHash => {
            let v = raw.to_ascii_lowercase();
            let ok = matches!(v.len(), 32 | 40 | 64) && v.bytes().all(|b| b.is_ascii_hexdigit());
            ok.then_some(v)
        }
        EntityKind::CloudResource => Some(raw.to_string()),
    }
}

/// The detection rule that produced an alert (Sigma id, saved search, analytic rule id...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// An alert after normalization. `alert_id` and `received_at` are assigned by cordon; the rest
/// comes from the source payload (kept verbatim in the audit record next to this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub received_at: DateTime<Utc>,
    /// The ingest format that delivered it (`cordon`, `splunk`, `elastic`, `sentinel`, `ocsf`).
    pub source: String,
    #[serde(flatten)]
    pub fields: AlertFields,
    /// SHA-256 of the raw payload bytes, hex.
    pub raw_sha256: String,
}

/// The normalized fields a format parser extracts from one payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertFields {
    /// The alert's id at its source (Splunk `sid`, `kibana.alert.uuid`, Sentinel incident name,
    /// OCSF `finding_info.uid`).
    pub source_alert_id: String,
    /// When the detection fired (source time; falls back to receive time when absent).
    pub time: DateTime<Utc>,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub rule: Rule,
    pub severity: Severity,
    /// 0..=100.
    pub confidence: u8,
    /// ATT&CK technique ids, upper-case (`T1059.001`), sorted, deduplicated.
    #[serde(default)]
    pub techniques: Vec<String>,
    /// ATT&CK tactic names, lower-case kebab (`initial-access`).
    #[serde(default)]
    pub tactics: Vec<String>,
    /// The intelligence source that motivated the rule (the SOC↔CTI loop metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_source: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Entities, canonical, sorted, deduplicated; the first host (else user, cloud resource,
    /// ip...) is the primary entity.
    #[serde(default)]
    pub entities: Vec<Entity>,
    /// Extra normalized evidence (`process.command_line`, `process.parent.name`, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
}

impl AlertFields {
    /// Sorts and deduplicates list fields so equal content yields equal fingerprints. Format
    /// parsers call this before returning.
    pub fn canonicalize(mut self) -> AlertFields {
        for t in &mut self.techniques {
            *t = t.trim().to_ascii_uppercase();
        }
        self.techniques.retain(|t| !t.is_empty());
        self.techniques.sort();
        self.techniques.dedup();
        for t in &mut self.tactics {
            *t = t.trim().to_ascii_lowercase().replace([' ', '_'], "-");
        }
        self.tactics.retain(|t| !t.is_empty());
        self.tactics.sort();
        self.tactics.dedup();
        self.tags.retain(|t| !t.trim().is_empty());
        self.tags.sort();
        self.tags.dedup();
        // Keep the first-named entity of each kind first (it is the primary one), then sort the
        // rest, so the primary entity is stable while the list stays canonical.
        let mut seen = std::collections::BTreeSet::new();
        self.entities.retain(|e| seen.insert(e.clone()));
        self.entities.sort_by_key(|e| e.kind);
        self.confidence = self.confidence.min(100);
        self
    }

    /// The entity that correlation groups on: the first host, else user, cloud resource, ip,
    /// domain, url, file hash.
    pub fn primary_entity(&self) -> Option<&Entity> {
        const ORDER: [EntityKind; 7] = [
            EntityKind::Host,
            EntityKind::User,
            EntityKind::CloudResource,
            EntityKind::Ip,
            EntityKind::Domain,
            EntityKind::Url,
            EntityKind::FileHash,
        ];
        ORDER
            .iter()
            .find_map(|k| self.entities.iter().find(|e| e.kind == *k))
    }

    pub fn entities_of(&self, kind: EntityKind) -> impl Iterator<Item = &Entity> {
        self.entities.iter().filter(move |e| e.kind == kind)
    }

    /// Content fingerprint for deduplication: same rule, severity and entity set (whatever the
    /// source alert id) means the same detection fired again.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.rule.id.as_bytes());
        h.update([0]);
        h.update(self.severity.as_str().as_bytes());
        for e in &self.entities {
            h.update([0]);
            h.update(e.key().as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Correlation key: rule id plus primary entity. `None` when the alert names no entity.
    pub fn correlation_key(&self) -> Option<String> {
        self.primary_entity()
            .map(|e| format!("{}|{}", self.rule.id, e.key()))
    }
}

/// Upper-cases and validates an ATT&CK technique id (`t1059.001` → `T1059.001`); accepts Sigma
/// tags (`attack.t1059.001`). `None` for anything that is not a technique id.
pub fn technique_id(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let raw = raw
        .strip_prefix("attack.")
        .or_else(|| raw.strip_prefix("ATTACK."))
        .unwrap_or(raw);
    let up = raw.to_ascii_uppercase();
    let rest = up.strip_prefix('T')?;
    let (main, sub) = match rest.split_once('.') {
        Some((m, s)) => (m, Some(s)),
        None => (rest, None),
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    (digits(main, 4) && sub.is_none_or(|s| digits(s, 3))).then_some(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_identifiers() {
        let check = |k, raw, want: Option<&str>| {
            assert_eq!(normalize(k, raw).as_deref(), want, "{k} {raw:?}");
        };
        check(
            EntityKind::Host,
            " WS-042.Corp.Example. ",
            Some("ws-042.corp.example"),
        );
        check(EntityKind::User, "CORP\\Alice", Some("alice"));
        check(
            EntityKind::User,
            "Alice@Example.com",
            Some("alice@example.com"),
        );
        check(EntityKind::Ip, "10.0.0.1", Some("10.0.0.1"));
        check(EntityKind::Ip, "2001:DB8::1", Some("2001:db8::1"));
        check(EntityKind::Ip, "10.0.0.256", None);
        check(
            EntityKind::Url,
            "HTTPS://Evil.Example/Path?q=1",
            Some("https://evil.example/Path?q=1"),
        );
        check(EntityKind::Url, "not a url", None);
        check(
            EntityKind::FileHash,
            "D41D8CD98F00B204E9800998ECF8427E",
            Some("d41d8cd98f00b204e9800998ecf8427e"),
        );
        check(EntityKind::FileHash, "abc", None);
        check(EntityKind::Domain, "Evil.Example.", Some("evil.example"));
        check(EntityKind::Host, "", None);
        check(EntityKind::Host, "-", None);
    }

    #[test]
    fn technique_ids() {
        assert_eq!(
            technique_id("attack.t1059.001").as_deref(),
            Some("T1059.001")
        );
        assert_eq!(technique_id("T1566").as_deref(), Some("T1566"));
        assert_eq!(technique_id("attack.execution"), None);
        assert_eq!(technique_id("T15"), None);
    }

    #[test]
    fn severity_words_and_ids() {
        assert_eq!(Severity::parse("High"), Some(Severity::High));
        assert_eq!(
            Severity::parse("Informational"),
            Some(Severity::Informational)
        );
        assert_eq!(Severity::parse("bogus"), None);
        assert_eq!(Severity::from_id(5), Some(Severity::Critical));
        assert_eq!(Severity::from_id(99), None);
        assert_eq!(Severity::from_risk_score(73.0), Severity::High);
    }
}
