//! Declarative source mappings (`sources/<name>.toml`): alerts from any JSON-speaking tool,
//! without Rust.
//!
//! Owns: the mapping file format (every key it may hold; unknown keys are errors, each named
//! with its file and path), the path syntax, the transforms, the check of a mapping against its
//! sample payload, and applying a mapping to one payload to get the same [`AlertFields`] the
//! built-in formats produce. Pure, except [`load_dir`] and [`load_file`], which read the files.
//!
//! Paths are dotted (`rule.mitre.id`), with `[N]` for one array element, `[*]` for each
//! element (`Resources[*].Id`) and `[key=value]` for each element whose `key` holds `value`
//! (`ruleLabels[key=severity].value`). A dotted run of keys also matches one flat key holding dots
//! (`"kibana.alert.uuid": ...`), as the built-in formats do. A scalar field takes the first of
//! its paths that yields a value; a list field (techniques, tactics, tags, entities) takes every
//! value of every path; an array met at the end of a path counts as its elements.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::IngestError;
use super::value::{percent, tactic_name, techniques as technique_ids};
use crate::alert::{AlertFields, Entity, EntityKind, Rule, Severity};
use crate::config::Problem;

mod body;
mod path;
pub use body::{BodyError, Part, split_body};
use path::{Step, eval, parse_path, texts_of};

/// A validated mapping, ready to apply.
#[derive(Debug, Clone)]
pub struct SourceMapping {
    /// The file stem: the endpoint is `POST /v1/alerts/<name>`.
    pub name: String,
    pub description: String,
    alert: AlertSpec,
    entities: Vec<(EntityKind, Field)>,
    attributes: Vec<(String, Field)>,
}

/// One `sources/<name>.toml`, as written.
#[derive(Debug, Clone, Deserialize)]
struct MappingFile {
    #[serde(default)]
    description: String,
    /// A sample payload (relative to the mapping file): every path must match something in it.
    #[serde(default)]
    sample: Option<String>,
    alert: AlertSpec,
    #[serde(default)]
    entities: EntitySpec,
    #[serde(default)]
    attributes: BTreeMap<String, Field>,
}

#[derive(Debug, Clone, Deserialize)]
struct AlertSpec {
    id: Field,
    title: Field,
    #[serde(default)]
    description: Option<Field>,
    #[serde(default)]
    time: Option<Field>,
    rule_id: Field,
    rule_name: Field,
    #[serde(default)]
    rule_version: Option<Field>,
    severity: Field,
    #[serde(default)]
    confidence: Option<Field>,
    #[serde(default)]
    techniques: Option<Field>,
    #[serde(default)]
    tactics: Option<Field>,
    #[serde(default)]
    intel_source: Option<Field>,
    #[serde(default)]
    tags: Option<Field>,
    #[serde(default)]
    source_url: Option<Field>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct EntitySpec {
    host: Option<Field>,
    user: Option<Field>,
    ip: Option<Field>,
    domain: Option<Field>,
    url: Option<Field>,
    file_hash: Option<Field>,
    cloud_resource: Option<Field>,
}

/// Where one field comes from and how its values are transformed. Written as a path string,
/// a list of paths, or a table ([`FieldTable`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "FieldRepr")]
struct Field {
    path: Option<String>,
    paths: Vec<String>,
    split: Option<String>,
    strip_domain: bool,
    basename: bool,
    lowercase: bool,
    uppercase: bool,
    map: BTreeMap<String, String>,
    at_least: BTreeMap<String, f64>,
    template: Option<String>,
    default: Option<String>,
    unit: Option<String>,
    capture: Option<String>,
    join: Option<String>,
    /// Parsed from `path` + `paths` at validation.
    parsed: Vec<(String, Vec<Step>)>,
    /// `capture`, compiled at validation.
    regex: Option<regex::Regex>,
}

/// A field written as a table: every key it may hold.
#[derive(Debug, Clone, Default, Deserialize)]
struct FieldTable {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
    /// Splits each value on this separator (before the other transforms).
    #[serde(default)]
    split: Option<String>,
    /// `DOMAIN\user` → `user`, `user@domain` → `user`.
    #[serde(default)]
    strip_domain: bool,
    /// The last component of a `/` or `\` path.
    #[serde(default)]
    basename: bool,
    #[serde(default)]
    lowercase: bool,
    #[serde(default)]
    uppercase: bool,
    /// Replaces a value found here (exact, after the transforms above); others pass unchanged.
    #[serde(default)]
    map: BTreeMap<String, String>,
    /// Severity only: a number becomes the highest severity whose threshold it reaches
    /// (`informational` below every threshold).
    #[serde(default)]
    at_least: BTreeMap<String, f64>,
    /// Wraps the value: `{}` is replaced by it (`https://console.example/alerts/{}`).
    #[serde(default)]
    template: Option<String>,
    /// Used when no path yields a value (with no path: a constant).
    #[serde(default)]
    default: Option<String>,
    /// Time only: the unit of numeric timestamps, `seconds` (default) or `millis`.
    #[serde(default)]
    unit: Option<String>,
    /// A regular expression: keeps its first capture group (else the whole match); a value
    /// that does not match is dropped. Applied right after `split`.
    #[serde(default)]
    capture: Option<String>,
    /// Scalar fields only: the first value of every path that has one, joined with this
    /// separator (`flow_id` + `alert.signature_id` → one id).
    #[serde(default)]
    join: Option<String>,
}

/// `Field`'s three spellings.
struct FieldRepr(FieldTable);

impl From<FieldRepr> for Field {
    fn from(FieldRepr(t): FieldRepr) -> Field {
        Field {
            path: t.path,
            paths: t.paths,
            split: t.split,
            strip_domain: t.strip_domain,
            basename: t.basename,
            lowercase: t.lowercase,
            uppercase: t.uppercase,
            map: t.map,
            at_least: t.at_least,
            template: t.template,
            default: t.default,
            unit: t.unit,
            capture: t.capture,
            join: t.join,
            parsed: Vec::new(),
            regex: None,
        }
    }
}

impl<'de> Deserialize<'de> for FieldRepr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor).map(FieldRepr)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = FieldTable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a path, a list of paths, or a table with path/paths and transforms")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<FieldTable, E> {
        Ok(FieldTable {
            path: Some(s.to_string()),
            ..FieldTable::default()
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FieldTable, A::Error> {
        let mut paths = Vec::new();
        while let Some(p) = seq.next_element::<String>()? {
            paths.push(p);
        }
        Ok(FieldTable {
            paths,
            ..FieldTable::default()
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldTable, A::Error> {
        FieldTable::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

impl Field {
    fn all_paths(&self) -> impl Iterator<Item = &String> {
        self.path.iter().chain(self.paths.iter())
    }

    /// The values at one path, transformed.
    fn values_at(&self, root: &Value, steps: &[Step]) -> Vec<String> {
        let mut found = Vec::new();
        eval(root, steps, &mut found);
        let mut raw = Vec::new();
        for v in found {
            texts_of(v, &mut raw);
        }
        raw.into_iter()
            .flat_map(|s| match &self.split {
                Some(sep) => s
                    .split(sep.as_str())
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect(),
                None => vec![s],
            })
            .filter_map(|s| match &self.regex {
                Some(re) => re.captures(&s).and_then(|c| {
                    c.get(1)
                        .or_else(|| c.get(0))
                        .map(|m| m.as_str().to_string())
                }),
                None => Some(s),
            })
            .filter_map(|s| self.transform(s))
            .collect()
    }

    fn transform(&self, mut s: String) -> Option<String> {
        if self.strip_domain {
            if let Some((_, user)) = s.rsplit_once('\\') {
                s = user.to_string();
            }
            if let Some((user, _)) = s.split_once('@') {
                s = user.to_string();
            }
        }
        if self.basename {
            s = s.rsplit(['\\', '/']).next().unwrap_or(&s).to_string();
        }
        if self.lowercase {
            s = s.to_lowercase();
        }
        if self.uppercase {
            s = s.to_uppercase();
        }
        if let Some(m) = self.map.get(&s) {
            s = m.clone();
        }
        if !self.at_least.is_empty()
            && let Ok(n) = s.parse::<f64>()
        {
            s = self
                .at_least
                .iter()
                .filter(|(_, t)| n >= **t)
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or("informational".to_string(), |(label, _)| label.clone());
        }
        if let Some(t) = &self.template {
            s = t.replace("{}", &s);
        }
        let s = s.trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    /// The first value of the first path that yields one, with that path; else the default.
    fn first(&self, root: &Value) -> Option<(String, String)> {
        if let Some(sep) = &self.join {
            let parts: Vec<String> = self
                .parsed
                .iter()
                .filter_map(|(_, steps)| self.values_at(root, steps).into_iter().next())
                .collect();
            if !parts.is_empty() {
                return Some((self.describe(), parts.join(sep)));
            }
            return self
                .default
                .as_ref()
                .map(|d| ("default".to_string(), d.clone()));
        }
        self.parsed
            .iter()
            .find_map(|(p, steps)| {
                self.values_at(root, steps)
                    .into_iter()
                    .next()
                    .map(|v| (p.clone(), v))
            })
            .or_else(|| {
                self.default
                    .as_ref()
                    .map(|d| ("default".to_string(), d.clone()))
            })
    }

    /// Every value of every path; the default when there is none.
    fn all(&self, root: &Value) -> Vec<String> {
        let out: Vec<String> = self
            .parsed
            .iter()
            .flat_map(|(_, steps)| self.values_at(root, steps))
            .collect();
        if out.is_empty() {
            return self.default.iter().cloned().collect();
        }
        out
    }

    /// What an error names when this field yields nothing: its paths.
    fn describe(&self) -> String {
        let paths: Vec<&str> = self.all_paths().map(String::as_str).collect();
        paths.join(" | ")
    }
}

/// What kind of value a field holds, for validation.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    /// Takes every value (techniques, tactics, tags, entities).
    List,
    Severity,
    Time,
}

/// Parses and validates one mapping file's text. `file` names it in problems; `dir` is where
/// a relative `sample` is looked up.
pub fn parse(
    file: &str,
    name: &str,
    text: &str,
    dir: &Path,
) -> Result<SourceMapping, Vec<Problem>> {
    let mut problems = Vec::new();
    if let Err(reason) = check_name(name) {
        problems.push(Problem::new(file, "", reason));
    }
    let de = match toml::Deserializer::parse(text) {
        Ok(d) => d,
        Err(e) => return Err(vec![crate::config::toml_problem(file, text, &e)]),
    };
    let mut unknown = Vec::new();
    let parsed: Result<MappingFile, _> = serde_ignored::deserialize(de, |path| {
        unknown.push(path.to_string());
    });
    for key in unknown {
        let reason = if key.starts_with("entities.") {
            "unknown field (entity kinds: host, user, ip, domain, url, file_hash, cloud_resource)"
        } else {
            "unknown field"
        };
        let key = match crate::config::key_line(text, &key) {
            Some(line) => format!("line {line}: {key}"),
            None => key,
        };
        problems.push(Problem::new(file, key, reason));
    }
    let mf = match parsed {
        Ok(m) => m,
        Err(e) => {
            problems.push(crate::config::toml_problem(file, text, &e));
            return Err(problems);
        }
    };
    let mut m = SourceMapping {
        name: name.to_string(),
        description: mf.description.clone(),
        alert: mf.alert.clone(),
        entities: Vec::new(),
        attributes: Vec::new(),
    };
    {
        let a = &mut m.alert;
        let mut check = |key: &str, f: &mut Field, kind: Kind| {
            check_field(file, key, f, kind, &mut problems);
        };
        check("alert.id", &mut a.id, Kind::Text);
        check("alert.title", &mut a.title, Kind::Text);
        check("alert.rule_id", &mut a.rule_id, Kind::Text);
        check("alert.rule_name", &mut a.rule_name, Kind::Text);
        check("alert.severity", &mut a.severity, Kind::Severity);
        for (key, f, kind) in [
            ("alert.description", &mut a.description, Kind::Text),
            ("alert.time", &mut a.time, Kind::Time),
            ("alert.rule_version", &mut a.rule_version, Kind::Text),
            ("alert.confidence", &mut a.confidence, Kind::Text),
            ("alert.techniques", &mut a.techniques, Kind::List),
            ("alert.tactics", &mut a.tactics, Kind::List),
            ("alert.intel_source", &mut a.intel_source, Kind::Text),
            ("alert.tags", &mut a.tags, Kind::List),
            ("alert.source_url", &mut a.source_url, Kind::Text),
        ] {
            if let Some(f) = f {
                check(key, f, kind);
            }
        }
    }
    let e = mf.entities;
    for (kind, f) in [
        (EntityKind::Host, e.host),
        (EntityKind::User, e.user),
        (EntityKind::Ip, e.ip),
        (EntityKind::Domain, e.domain),
        (EntityKind::Url, e.url),
        (EntityKind::FileHash, e.file_hash),
        (EntityKind::CloudResource, e.cloud_resource),
    ] {
        if let Some(mut f) = f {
            check_field(
                file,
                &format!("entities.{kind}"),
                &mut f,
                Kind::List,
                &mut problems,
            );
            m.entities.push((kind, f));
        }
    }
    for (name, mut f) in mf.attributes {
        check_field(
            file,
            &format!("attributes.{name}"),
            &mut f,
            Kind::Text,
            &mut problems,
        );
        m.attributes.push((name, f));
    }
    if problems.is_empty()
        && let Some(sample) = &mf.sample
    {
        check_sample(file, &m, &dir.join(sample), &mut problems);
    }
    if problems.is_empty() {
        Ok(m)
    } else {
        Err(problems)
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if super::IngestFormat::ALL.iter().any(|f| f.as_str() == name) {
        return Err(format!(
            "the source name {name:?} is a built-in format; name the file otherwise"
        ));
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the source name {name:?} (the file stem) must be 1 to 64 of a-z, 0-9, _ and -"
        ))
    }
}

fn check_field(file: &str, key: &str, f: &mut Field, kind: Kind, problems: &mut Vec<Problem>) {
    let mut p = |reason: String| problems.push(Problem::new(file, key, reason));
    if f.path.is_none() && f.paths.is_empty() && f.default.is_none() {
        p("names no path (path, paths) and no default".into());
    }
    f.parsed.clear();
    let all: Vec<String> = f.all_paths().cloned().collect();
    for path in all {
        match parse_path(&path) {
            Ok(steps) => f.parsed.push((path, steps)),
            Err(e) => p(e),
        }
    }
    f.regex = None;
    if let Some(c) = &f.capture {
        match regex::Regex::new(c) {
            Ok(re) => f.regex = Some(re),
            Err(e) => p(format!("capture: not a regular expression: {e}")),
        }
    }
    if f.join.is_some() && kind == Kind::List {
        p("join is for fields that hold one value".into());
    }
    if f.lowercase && f.uppercase {
        p("lowercase and uppercase exclude each other".into());
    }
    if matches!(&f.split, Some(s) if s.is_empty()) {
        p("split: the separator is empty".into());
    }
    if let Some(t) = &f.template
        && !t.contains("{}")
    {
        p("template: must contain {} where the value goes".into());
    }
    if kind != Kind::Severity && !f.at_least.is_empty() {
        p("at_least is for alert.severity only".into());
    }
    if kind != Kind::Time && f.unit.is_some() {
        p("unit is for alert.time only".into());
    }
    if kind == Kind::Severity {
        for (label, t) in &f.at_least {
            if Severity::parse(label).is_none() {
                p(format!("at_least.{label}: not a severity"));
            }
            if !t.is_finite() {
                p(format!("at_least.{label}: not a finite number"));
            }
        }
        for (from, to) in &f.map {
            if Severity::parse(to).is_none() {
                p(format!(
                    "map.{from}: {to:?} is not a severity (informational, low, medium, high, critical)"
                ));
            }
        }
        if let Some(d) = &f.default
            && Severity::parse(d).is_none()
        {
            p(format!("default: {d:?} is not a severity"));
        }
    }
    if let Some(u) = &f.unit
        && !matches!(u.as_str(), "seconds" | "millis")
    {
        p(format!("unit: {u:?} (expected seconds or millis)"));
    }
}

/// Applies the mapping to its sample: every path must match something, and the sample must map.
fn check_sample(file: &str, m: &SourceMapping, sample: &Path, problems: &mut Vec<Problem>) {
    let shown = sample.display().to_string();
    let value = match std::fs::read(sample) {
        Err(e) => {
            problems.push(Problem::new(
                file,
                "sample",
                format!("cannot read {shown}: {e}"),
            ));
            return;
        }
        Ok(bytes) => match super::json::parse(&bytes) {
            Ok(v) if v.is_object() => v,
            Ok(_) => {
                problems.push(Problem::new(
                    file,
                    "sample",
                    format!("{shown} is not a JSON object"),
                ));
                return;
            }
            Err(e) => {
                problems.push(Problem::new(file, "sample", format!("{shown}: {e}")));
                return;
            }
        },
    };
    for (key, f) in m.fields() {
        if f.parsed.is_empty() {
            continue;
        }
        let matched = f
            .parsed
            .iter()
            .any(|(_, steps)| !f.values_at(&value, steps).is_empty());
        if !matched {
            problems.push(Problem::new(
                file,
                key,
                format!("{} matches nothing in the sample {shown}", f.describe()),
            ));
        }
    }
    if problems.is_empty()
        && let Err(e) = m.apply(&value, Utc::now())
    {
        problems.push(Problem::new(
            file,
            "sample",
            format!("{shown} does not map: {e}"),
        ));
    }
}

impl SourceMapping {
    /// Every field with the key it is written under.
    fn fields(&self) -> Vec<(String, &Field)> {
        let a = &self.alert;
        let mut out: Vec<(String, &Field)> = vec![
            ("alert.id".into(), &a.id),
            ("alert.title".into(), &a.title),
            ("alert.rule_id".into(), &a.rule_id),
            ("alert.rule_name".into(), &a.rule_name),
            ("alert.severity".into(), &a.severity),
        ];
        for (k, f) in [
            ("alert.description", &a.description),
            ("alert.time", &a.time),
            ("alert.rule_version", &a.rule_version),
            ("alert.confidence", &a.confidence),
            ("alert.techniques", &a.techniques),
            ("alert.tactics", &a.tactics),
            ("alert.intel_source", &a.intel_source),
            ("alert.tags", &a.tags),
            ("alert.source_url", &a.source_url),
        ] {
            if let Some(f) = f {
                out.push((k.into(), f));
            }
        }
        out.extend(
            self.entities
                .iter()
                .map(|(k, f)| (format!("entities.{k}"), f)),
        );
        out.extend(
            self.attributes
                .iter()
                .map(|(k, f)| (format!("attributes.{k}"), f)),
        );
        out
    }

    /// Maps one payload object (not yet canonicalized; [`super::finish`] does that).
    pub(super) fn apply(
        &self,
        v: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<AlertFields, IngestError> {
        let a = &self.alert;
        let mut missing = Vec::new();
        let mut required = |name: &str, f: &Field| match f.first(v) {
            Some((_, s)) => s,
            None => {
                missing.push(format!("{} ({name})", f.describe()));
                String::new()
            }
        };
        let source_alert_id = required("id", &a.id);
        let title = required("title", &a.title);
        let rule_id = required("rule_id", &a.rule_id);
        let rule_name = required("rule_name", &a.rule_name);
        let severity = a.severity.first(v);
        if severity.is_none() {
            missing.push(format!("{} (severity)", a.severity.describe()));
        }
        if !missing.is_empty() {
            return Err(IngestError::MissingFields(missing));
        }
        let severity = match severity {
            Some((path, s)) => Severity::parse(&s).ok_or_else(|| IngestError::InvalidField {
                field: path,
                reason: format!(
                    "{:?} is not a severity (map it with alert.severity.map or at_least)",
                    super::clip(&s, 64)
                ),
            })?,
            None => Severity::Informational,
        };
        let opt = |f: &Option<Field>| f.as_ref().and_then(|f| f.first(v)).map(|(_, s)| s);
        let list = |f: &Option<Field>| f.as_ref().map(|f| f.all(v)).unwrap_or_default();
        let confidence = match a.confidence.as_ref().and_then(|f| f.first(v)) {
            None => 50,
            Some((path, s)) => {
                percent(&Value::String(s)).ok_or_else(|| IngestError::InvalidField {
                    field: path,
                    reason: "expected a number from 0 to 100".into(),
                })?
            }
        };
        let time = match a.time.as_ref().and_then(|f| f.first(v).map(|x| (f, x))) {
            None => received_at,
            Some((f, (path, s))) => {
                let millis = f.unit.as_deref() == Some("millis");
                parse_time(&s, millis).ok_or_else(|| IngestError::InvalidField {
                    field: path,
                    reason: format!(
                        "expected an rfc3339 timestamp or epoch {}",
                        if millis { "milliseconds" } else { "seconds" }
                    ),
                })?
            }
        };
        let mut entities = Vec::new();
        for (kind, f) in &self.entities {
            entities.extend(f.all(v).iter().filter_map(|r| Entity::new(*kind, r)));
        }
        let attributes = self
            .attributes
            .iter()
            .filter_map(|(k, f)| f.first(v).map(|(_, s)| (k.clone(), s)))
            .collect();
        Ok(AlertFields {
            source_alert_id,
            time,
            title,
            description: opt(&a.description),
            rule: Rule {
                id: rule_id,
                name: rule_name,
                version: opt(&a.rule_version),
            },
            severity,
            confidence,
            techniques: technique_ids(list(&a.techniques)),
            tactics: list(&a.tactics).iter().map(|t| tactic_name(t)).collect(),
            intel_source: opt(&a.intel_source),
            tags: list(&a.tags),
            entities,
            attributes,
            source_url: opt(&a.source_url),
        })
    }

    /// Parses one payload (a JSON object) into normalized fields, as the built-in formats do.
    pub fn parse(
        &self,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<AlertFields, IngestError> {
        let value = super::strict_object(body)?;
        self.parse_value(&value, received_at)
    }

    /// [`SourceMapping::parse`] on an already parsed value.
    pub fn parse_value(
        &self,
        value: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<AlertFields, IngestError> {
        if !value.is_object() {
            return Err(IngestError::MalformedJson(
                "each alert must be a JSON object".to_string(),
            ));
        }
        super::value::one_spelling(value, "")?;
        super::finish(self.apply(value, received_at)?)
    }
}

/// RFC 3339; ISO 8601 with a `+0000` offset (Wazuh, Suricata); or an epoch number.
fn parse_time(s: &str, millis: bool) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    let n: f64 = s.parse().ok().filter(|n: &f64| n.is_finite())?;
    let ms = if millis { n } else { n * 1000.0 }.round();
    if ms.abs() > 1.0e16 {
        return None;
    }
    DateTime::from_timestamp_millis(ms as i64)
}

/// Reads and validates one mapping file.
pub fn load_file(path: &Path) -> Result<SourceMapping, Vec<Problem>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![Problem::new(&file, "", format!("cannot read: {e}"))])?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&file, &name, &text, &dir)
}

/// Loads every `*.toml` in `dir`: the valid mappings by name, and every problem with the
/// others. A directory that does not exist holds no mappings.
pub fn load_dir(dir: &Path) -> (BTreeMap<String, SourceMapping>, Vec<Problem>) {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (out, problems),
        Err(e) => {
            let p = Problem::new(
                dir.display().to_string(),
                "",
                format!("cannot read directory: {e}"),
            );
            return (out, vec![p]);
        }
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    for path in files {
        match load_file(&path) {
            Ok(m) => {
                out.insert(m.name.clone(), m);
            }
            Err(mut ps) => problems.append(&mut ps),
        }
    }
    (out, problems)
}

/// The normalized alert as `cordon source test` prints it.
#[derive(Debug, Serialize)]
pub struct Printed<'a> {
    pub source: &'a str,
    #[serde(flatten)]
    pub fields: &'a AlertFields,
}

#[cfg(test)]
mod tests;
