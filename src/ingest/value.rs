//! Shared helpers for reading loosely typed vendor JSON (`serde_json::Value`).
//!
//! Owns: dotted-path lookup over nested, flat-dotted or mixed documents; lenient string, list,
//! number and time extraction; the required-field collector that reports every missing field
//! at once; and the small normalizers the format parsers share (entities, technique ids,
//! tactic names). Pure: no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::IngestError;
use crate::alert::{Entity, EntityKind, technique_id};

/// Returned for an absent required object so later lookups on it simply find nothing.
static NULL: Value = Value::Null;

/// Looks up a dotted path (`kibana.alert.uuid`) whether the document stores it nested, as one
/// flat dotted key (Kibana `_source`) or mixed. `null` counts as absent. Does not descend into
/// arrays (see [`list`]).
pub(super) fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    if let Some(found) = obj.get(path).filter(|f| !f.is_null()) {
        return Some(found);
    }
    path.match_indices('.').find_map(|(i, _)| {
        obj.get(&path[..i])
            .and_then(|inner| get(inner, &path[i + 1..]))
    })
}

/// Refuses a document that gives one field two different values under two spellings: as a
/// dotted key (`"kibana.alert.severity"`) and nested (`"kibana": {"alert": {"severity"}}`), or
/// any mix of the two. [`get`] reads either spelling, so which one wins would be a guess, and
/// the SIEM may have meant the other (a `low` over a `critical`). The same value under both
/// spellings is accepted. `prefix` is put before the field name in the error.
pub(super) fn one_spelling(doc: &Value, prefix: &str) -> Result<(), IngestError> {
    fn walk<'a>(
        v: &'a Value,
        path: &mut String,
        seen: &mut BTreeMap<String, &'a Value>,
    ) -> Result<(), String> {
        let Some(obj) = v.as_object() else {
            return Ok(());
        };
        for (k, child) in obj {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k);
            if child.is_object() {
                walk(child, path, seen)?;
            } else if !child.is_null() {
                match seen.get(path.as_str()) {
                    Some(other) if *other != child => return Err(path.clone()),
                    Some(_) => {}
                    None => {
                        seen.insert(path.clone(), child);
                    }
                }
            }
            path.truncate(len);
        }
        Ok(())
    }
    walk(doc, &mut String::new(), &mut BTreeMap::new()).map_err(|field| {
        invalid(
            format!("{prefix}{field}"),
            "given twice with different values: as a dotted key and nested",
        )
    })
}

/// A string (trimmed, non-empty) or a number rendered as text.
pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// [`text`] at a dotted path.
pub(super) fn get_text(v: &Value, path: &str) -> Option<String> {
    get(v, path).and_then(text)
}

/// The first path among `paths` that holds a [`text`].
pub(super) fn first_text(v: &Value, paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| get_text(v, p))
}

/// A string or number, or an array of them (other elements skipped), as texts.
pub(super) fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(text).collect(),
        other => text(other).into_iter().collect(),
    }
}

/// [`texts`] at each of `paths`, in order.
pub(super) fn get_texts(v: &Value, paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|p| get(v, p))
        .flat_map(texts)
        .collect()
}

/// Splits comma- or newline-separated lists (Splunk multivalue fields rendered as one string).
pub(super) fn split_list(items: Vec<String>) -> Vec<String> {
    items
        .iter()
        .flat_map(|s| s.split([',', '\n']))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The elements of an array at `path`; a lone object counts as a one-element list.
pub(super) fn list<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    match get(v, path) {
        Some(Value::Array(items)) => items,
        Some(obj @ Value::Object(_)) => std::slice::from_ref(obj),
        _ => &[],
    }
}

/// A finite number, from a JSON number or a numeric string.
pub(super) fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    n.filter(|n| n.is_finite())
}

/// A 0..=100 score rounded to an integer; `None` when absent, not a number or out of range.
pub(super) fn percent(v: &Value) -> Option<u8> {
    number(v)
        .filter(|n| (0.0..=100.0).contains(n))
        .map(|n| n.round() as u8)
}

/// The unit of a numeric timestamp.
#[derive(Debug, Clone, Copy)]
pub(super) enum Epoch {
    Seconds,
    Millis,
}

/// Parses an RFC 3339 string, or an epoch number (JSON number or numeric string) in `unit`.
pub(super) fn time(v: &Value, unit: Epoch) -> Option<DateTime<Utc>> {
    if let Value::String(s) = v
        && let Ok(t) = DateTime::parse_from_rfc3339(s.trim())
    {
        return Some(t.with_timezone(&Utc));
    }
    let n = number(v)?;
    let millis = match unit {
        Epoch::Seconds => n * 1000.0,
        Epoch::Millis => n,
    }
    .round();
    if millis.abs() > 1.0e16 {
        return None;
    }
    DateTime::from_timestamp_millis(millis as i64)
}

/// The first of `paths` that is present, parsed as a time; `default` when none is present; an
/// `InvalidField` naming `prefix` + path when the first present value does not parse.
pub(super) fn time_at(
    v: &Value,
    prefix: &str,
    paths: &[&str],
    unit: Epoch,
    default: DateTime<Utc>,
) -> Result<DateTime<Utc>, IngestError> {
    let present = paths.iter().find_map(|p| {
        get(v, p)
            .filter(|x| !matches!(x, Value::String(s) if s.trim().is_empty()))
            .map(|x| (p, x))
    });
    let Some((path, raw)) = present else {
        return Ok(default);
    };
    time(raw, unit).ok_or_else(|| {
        let reason = match unit {
            Epoch::Seconds => "expected an rfc3339 timestamp or epoch seconds",
            Epoch::Millis => "expected an rfc3339 timestamp or epoch milliseconds",
        };
        invalid(format!("{prefix}{path}"), reason)
    })
}

pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> IngestError {
    IngestError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Collects required fields so one error names every missing one. Paths are reported with
/// `prefix` (e.g. `object.` for a wrapped Sentinel incident).
pub(super) struct Required<'a> {
    root: &'a Value,
    prefix: &'a str,
    missing: Vec<String>,
    invalid: Option<IngestError>,
}

impl<'a> Required<'a> {
    pub(super) fn new(root: &'a Value, prefix: &'a str) -> Required<'a> {
        Required {
            root,
            prefix,
            missing: Vec::new(),
            invalid: None,
        }
    }

    /// A required string (numbers accepted); empty when missing (the error is recorded).
    pub(super) fn text(&mut self, path: &str) -> String {
        match get(self.root, path) {
            Some(v) => match text(v) {
                Some(s) => s,
                None if matches!(v, Value::String(_)) => self.record_missing(path),
                None => self.record_invalid(path, "expected a string"),
            },
            None => self.record_missing(path),
        }
    }

    /// A required object; `null` when missing or not an object (the error is recorded).
    pub(super) fn object(&mut self, path: &str) -> &'a Value {
        match get(self.root, path) {
            Some(v) if v.is_object() => v,
            Some(_) => {
                self.record_invalid(path, "expected an object");
                &NULL
            }
            None => {
                self.record_missing(path);
                &NULL
            }
        }
    }

    /// `MissingFields` naming every missing field, else the first invalid one, else `Ok`.
    pub(super) fn finish(self) -> Result<(), IngestError> {
        if !self.missing.is_empty() {
            return Err(IngestError::MissingFields(self.missing));
        }
        self.invalid.map_or(Ok(()), Err)
    }

    fn record_missing(&mut self, path: &str) -> String {
        self.missing.push(format!("{}{path}", self.prefix));
        String::new()
    }

    fn record_invalid(&mut self, path: &str, reason: &str) -> String {
        if self.invalid.is_none() {
            self.invalid = Some(invalid(format!("{}{path}", self.prefix), reason));
        }
        String::new()
    }
}

/// Appends the entities of `kind` that normalize; junk values are skipped silently.
pub(super) fn add_entities<I, S>(out: &mut Vec<Entity>, kind: EntityKind, raws: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    out.extend(
        raws.into_iter()
            .filter_map(|r| Entity::new(kind, r.as_ref())),
    );
}

/// Whether `raw` is an IP address (used to keep IPs out of host fields).
pub(super) fn is_ip(raw: &str) -> bool {
    raw.trim().parse::<IpAddr>().is_ok()
}

/// The valid ATT&CK technique ids among `raws`, upper-cased; junk is skipped.
pub(super) fn techniques(raws: impl IntoIterator<Item = String>) -> Vec<String> {
    raws.into_iter().filter_map(|r| technique_id(&r)).collect()
}

/// Splits PascalCase tactic names (Sentinel's `InitialAccess`) into words so
/// `AlertFields::canonicalize` turns them into kebab case (`initial-access`).
pub(super) fn tactic_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 4);
    let mut prev_lower = false;
    for c in raw.trim().chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('-');
        }
        prev_lower = c.is_ascii_lowercase();
        out.push(c);
    }
    out
}

/// The last component of a Windows or POSIX path (`C:\...\powershell.exe` → `powershell.exe`).
pub(super) fn basename(path: &str) -> String {
    path.rsplit(['\\', '/']).next().unwrap_or(path).to_string()
}

#[cfg(test)]
pub(super) mod testing {
    //! Shared test helpers for the format parsers.

    use chrono::{DateTime, Utc};
    use serde_json::Value;

    use crate::alert::{AlertFields, Severity};
    use crate::ingest::{IngestError, IngestFormat};

    pub(crate) fn now() -> DateTime<Utc> {
        "2024-06-11T12:00:00Z".parse().unwrap()
    }

    pub(crate) fn parse(format: IngestFormat, body: &str) -> Result<AlertFields, IngestError> {
        format.parse(body.as_bytes(), now())
    }

    /// The expected normalized fields of a fixture.
    pub(crate) struct Want<'a> {
        pub source_alert_id: &'a str,
        pub time: &'a str,
        pub title: &'a str,
        pub rule: (&'a str, &'a str, Option<&'a str>),
        pub severity: Severity,
        pub confidence: u8,
        pub techniques: &'a [&'a str],
        pub tactics: &'a [&'a str],
        pub tags: &'a [&'a str],
        pub intel_source: Option<&'a str>,
        /// `kind:value` keys, in canonical order.
        pub entities: &'a [&'a str],
        pub attributes: &'a [(&'a str, &'a str)],
        pub source_url: Option<&'a str>,
    }

    pub(crate) fn check(got: &AlertFields, want: &Want) {
        assert_eq!(got.source_alert_id, want.source_alert_id, "source_alert_id");
        assert_eq!(got.time.to_rfc3339(), want.time, "time");
        assert_eq!(got.title, want.title, "title");
        assert_eq!(got.rule.id, want.rule.0, "rule.id");
        assert_eq!(got.rule.name, want.rule.1, "rule.name");
        assert_eq!(got.rule.version.as_deref(), want.rule.2, "rule.version");
        assert_eq!(got.severity, want.severity, "severity");
        assert_eq!(got.confidence, want.confidence, "confidence");
        assert_eq!(got.techniques, want.techniques, "techniques");
        assert_eq!(got.tactics, want.tactics, "tactics");
        assert_eq!(got.tags, want.tags, "tags");
        assert_eq!(
            got.intel_source.as_deref(),
            want.intel_source,
            "intel_source"
        );
        let keys: Vec<String> = got.entities.iter().map(|e| e.key()).collect();
        assert_eq!(keys, want.entities, "entities");
        let attrs: Vec<(&str, &str)> = got
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(attrs, want.attributes, "attributes");
        assert_eq!(got.source_url.as_deref(), want.source_url, "source_url");
    }

    /// The field list of a `MissingFields` error (panics on any other result).
    pub(crate) fn missing(result: Result<AlertFields, IngestError>) -> Vec<String> {
        match result {
            Err(IngestError::MissingFields(fields)) => fields,
            other => panic!("expected MissingFields, got {other:?}"),
        }
    }

    /// Parses each odd body, then every mutation of `fixture` where one node at a time is
    /// replaced by null, an array, an object, a number, a string or a bool. Nothing may panic.
    pub(crate) fn survives(format: IngestFormat, fixture: &str, odd: &[&str]) {
        for body in odd {
            let _ = parse(format, body);
        }
        let doc: Value = serde_json::from_str(fixture).unwrap();
        let replacements = [
            Value::Null,
            serde_json::json!([]),
            serde_json::json!([1, "x", null, {}]),
            serde_json::json!({}),
            serde_json::json!(-1.5e300),
            serde_json::json!(""),
            serde_json::json!("-"),
            serde_json::json!(true),
        ];
        let mut pointers = Vec::new();
        collect_pointers(&doc, String::new(), &mut pointers);
        for p in &pointers {
            for r in &replacements {
                let mut mutated = doc.clone();
                if let Some(slot) = mutated.pointer_mut(p) {
                    *slot = r.clone();
                }
                let _ = format.parse(mutated.to_string().as_bytes(), now());
            }
        }
    }

    fn collect_pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let key = k.replace('~', "~0").replace('/', "~1");
                    collect_pointers(child, format!("{at}/{key}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    collect_pointers(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        if !at.is_empty() {
            out.push(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Every spelling `get` reads is compared: flat, nested and mixed; nulls are absent;
    /// arrays are values; the same value twice is one field.
    #[test]
    fn a_field_spelled_twice_with_two_values_is_refused() {
        let field = |doc: Value| match one_spelling(&doc, "p.") {
            Ok(()) => None,
            Err(IngestError::InvalidField { field, .. }) => Some(field),
            Err(e) => panic!("{e:?}"),
        };
        for (doc, want) in [
            (json!({"a.b.c": 1, "a": {"b": {"c": 2}}}), Some("p.a.b.c")),
            (json!({"a.b.c": 1, "a.b": {"c": 2}}), Some("p.a.b.c")),
            (
                json!({"a": {"b.c": "x"}, "a.b": {"c": "y"}}),
                Some("p.a.b.c"),
            ),
            (json!({"a.b": [1, 2], "a": {"b": [1]}}), Some("p.a.b")),
            (json!({"a.b.c": 1, "a": {"b": {"c": 1}}}), None),
            (json!({"a.b": null, "a": {"b": 2}}), None),
            (json!({"a.b": 1, "a": {"c": 2}}), None),
            (json!({"a": "x", "a.b": 1}), None),
            (json!(["not", "an", "object"]), None),
        ] {
            assert_eq!(field(doc.clone()).as_deref(), want, "{doc}");
        }
    }

    #[test]
    fn get_finds_nested_flat_and_mixed_paths() {
        let nested = json!({"kibana": {"alert": {"uuid": "n"}}});
        let flat = json!({"kibana.alert.uuid": "f"});
        let mixed = json!({"kibana.alert": {"uuid": "m"}, "kibana": {"alert.rule": {"name": "r"}}});
        assert_eq!(get_text(&nested, "kibana.alert.uuid").as_deref(), Some("n"));
        assert_eq!(get_text(&flat, "kibana.alert.uuid").as_deref(), Some("f"));
        assert_eq!(get_text(&mixed, "kibana.alert.uuid").as_deref(), Some("m"));
        assert_eq!(
            get_text(&mixed, "kibana.alert.rule.name").as_deref(),
            Some("r")
        );
        assert_eq!(get(&nested, "kibana.alert.missing"), None);
        assert_eq!(get(&json!({"a": null}), "a"), None);
        assert_eq!(get(&json!([1]), "a"), None);
    }

    #[test]
    fn texts_and_lists() {
        assert_eq!(text(&json!(42)).as_deref(), Some("42"));
        assert_eq!(text(&json!("  ")), None);
        assert_eq!(texts(&json!(["a", 1, null, {}, " b "])), ["a", "1", "b"]);
        assert_eq!(split_list(vec!["T1, T2\nT3".into()]), ["T1", "T2", "T3"]);
        assert_eq!(percent(&json!("73.4")), Some(73));
        assert_eq!(percent(&json!(101)), None);
        assert_eq!(percent(&json!("NaN")), None);
        assert_eq!(list(&json!({"a": {"b": 1}}), "a").len(), 1);
    }

    #[test]
    fn times() {
        let t = |v: Value, unit| time(&v, unit).map(|t| t.to_rfc3339());
        let want = Some("2024-06-11T09:14:01+00:00".to_string());
        assert_eq!(t(json!("2024-06-11T11:14:01+02:00"), Epoch::Seconds), want);
        assert_eq!(t(json!("1718097241"), Epoch::Seconds), want);
        assert_eq!(t(json!(1718097241000_i64), Epoch::Millis), want);
        assert_eq!(
            t(json!("2024-06-11T09:14:01.1234567Z"), Epoch::Millis).as_deref(),
            Some("2024-06-11T09:14:01.123456700+00:00")
        );
        assert_eq!(t(json!(1.0e300), Epoch::Seconds), None);
        assert_eq!(t(json!("yesterday"), Epoch::Seconds), None);
    }

    #[test]
    fn required_names_every_missing_field() {
        let doc = json!({"a": "x", "b": "", "c": {"d": 1}});
        let mut req = Required::new(&doc, "object.");
        req.text("a");
        req.text("b");
        req.text("c.e");
        req.object("c");
        req.object("z");
        assert_eq!(
            req.finish(),
            Err(IngestError::MissingFields(vec![
                "object.b".into(),
                "object.c.e".into(),
                "object.z".into()
            ]))
        );
        let mut req = Required::new(&doc, "");
        req.object("a");
        assert!(
            matches!(req.finish(), Err(IngestError::InvalidField { field, .. }) if field == "a")
        );
    }

    #[test]
    fn tactic_names_and_basenames() {
        assert_eq!(tactic_name("InitialAccess"), "Initial-Access");
        assert_eq!(tactic_name("Command and Control"), "Command and Control");
        assert_eq!(basename(r"C:\Windows\System32\cmd.exe"), "cmd.exe");
        assert_eq!(basename("/usr/bin/curl"), "curl");
    }
}
