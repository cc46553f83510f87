//! Ingest formats: turning a SIEM's JSON payload into normalized [`AlertFields`].
//!
//! Owns: the closed set of ingest formats (one file each), the per-format field mapping, and the
//! classification of bad input (malformed JSON, missing fields, invalid fields). Pure: no I/O,
//! no clock except the receive time passed in. Adding a format is one file, one variant, one
//! match arm and one fixture test; adding a source without Rust is one mapping file (`mapped`).

mod elastic;
pub mod json;
pub mod mapped;
mod native;
mod ocsf;
mod sentinel;
mod splunk;
mod value;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::alert::AlertFields;

/// The ingest formats cordon accepts, one per HTTP route `/v1/alerts[/<format>]`: the five
/// built-in ones, and every source mapping file (`sources/<name>.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IngestFormat {
    /// cordon's own JSON (`POST /v1/alerts`, gRPC `SubmitAlert`).
    Cordon,
    /// Splunk webhook alert action body.
    Splunk,
    /// Elastic Security detection alert document (ECS + `kibana.alert.*`).
    Elastic,
    /// Microsoft Sentinel incident as posted by a Logic App / automation rule.
    Sentinel,
    /// OCSF Detection Finding (class_uid 2004).
    Ocsf,
    /// A source mapping file, by name (interned by [`IngestFormat::mapped`], so the type stays
    /// `Copy` and the engine records the name as the alert's `source` like any other).
    Mapped(&'static str),
}

impl Serialize for IngestFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Names of the mapped sources loaded in this process. Mappings are loaded once at start (and
/// by `cordon check`), so this holds a handful of short names: each is leaked once.
fn mapped_names() -> &'static Mutex<BTreeSet<&'static str>> {
    static NAMES: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    NAMES.get_or_init(|| Mutex::new(BTreeSet::new()))
}

impl IngestFormat {
    pub const ALL: [IngestFormat; 5] = [
        IngestFormat::Cordon,
        IngestFormat::Splunk,
        IngestFormat::Elastic,
        IngestFormat::Sentinel,
        IngestFormat::Ocsf,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IngestFormat::Mapped(name) => name,
            IngestFormat::Cordon => "cordon",
            IngestFormat::Splunk => "splunk",
            IngestFormat::Elastic => "elastic",
            IngestFormat::Sentinel => "sentinel",
            IngestFormat::Ocsf => "ocsf",
        }
    }

    /// A built-in format, or a mapped source this process has loaded (so playbooks may name
    /// mapped sources in `match.sources`).
    pub fn parse_name(s: &str) -> Option<IngestFormat> {
        IngestFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .or_else(|| {
                let names = mapped_names().lock().unwrap_or_else(|e| e.into_inner());
                names.get(s).map(|n| IngestFormat::Mapped(n))
            })
    }

    /// The format of the mapped source `name` (registering the name on first use).
    pub fn mapped(name: &str) -> IngestFormat {
        let mut names = mapped_names().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = names.get(name) {
            return IngestFormat::Mapped(n);
        }
        let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
        names.insert(leaked);
        IngestFormat::Mapped(leaked)
    }

    /// Parses one payload. `received_at` is used when the payload carries no event time.
    pub fn parse(
        self,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<AlertFields, IngestError> {
        let value = strict_object(body)?;
        let fields = match self {
            IngestFormat::Cordon => native::parse(value, received_at)?,
            IngestFormat::Splunk => splunk::parse(&value, received_at)?,
            IngestFormat::Elastic => elastic::parse(&value, received_at)?,
            IngestFormat::Sentinel => sentinel::parse(&value, received_at)?,
            IngestFormat::Ocsf => ocsf::parse(&value, received_at)?,
            IngestFormat::Mapped(name) => {
                return Err(IngestError::InvalidField {
                    field: "format".into(),
                    reason: format!(
                        "the mapped source {name} is accepted on POST /v1/alerts/{name} only"
                    ),
                });
            }
        };
        finish(fields)
    }
}

/// Parses strict JSON that must be one object.
pub(crate) fn strict_object(body: &[u8]) -> Result<serde_json::Value, IngestError> {
    let value = strict(body)?;
    if !value.is_object() {
        return Err(IngestError::MalformedJson(
            "the body must be a JSON object".to_string(),
        ));
    }
    Ok(value)
}

/// Parses strict JSON (duplicate keys refused), classifying the error.
pub(crate) fn strict(body: &[u8]) -> Result<serde_json::Value, IngestError> {
    json::parse(body).map_err(|e| match e {
        json::JsonError::Syntax(m) => IngestError::MalformedJson(m),
        json::JsonError::DuplicateKey(m) => IngestError::DuplicateKey(m),
    })
}

/// The checks every format's result passes, then canonical order.
fn finish(fields: AlertFields) -> Result<AlertFields, IngestError> {
    // Times outside 1970..=9999 are typos or attacks, and arithmetic on them can overflow.
    let year = chrono::Datelike::year(&fields.time);
    if !(1970..=9999).contains(&year) {
        return Err(IngestError::InvalidField {
            field: "time".into(),
            reason: format!("year {year} is outside 1970..=9999"),
        });
    }
    Ok(fields.canonicalize())
}

impl fmt::Display for IngestFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a payload was refused. Each variant maps to one stable HTTP status and error code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IngestError {
    /// Not JSON, or not a JSON object.
    #[error("malformed json: {0}")]
    MalformedJson(String),
    /// An object names the same key twice (a parser differential with the sender: refused).
    #[error("malformed json: {0}")]
    DuplicateKey(String),
    /// Required fields are absent or empty; names them with their JSON paths.
    #[error("missing required fields: {}", .0.join(", "))]
    MissingFields(Vec<String>),
    /// A field is present but has a value cordon cannot use.
    #[error("invalid field {field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// cordon's own format refuses fields it does not define (a typo is not silently ignored).
    #[error("unknown field {0}")]
    UnknownField(String),
}

/// How many bytes of an outside value an error message or log line repeats.
pub const ECHO_MAX: usize = 256;

/// `text` cut to at most `max` bytes (on a character boundary), with an ellipsis and the
/// original length when cut: errors name what they refuse without echoing 100 KB back (a gRPC
/// status larger than 16 KiB is not even delivered).
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_names_are_interned_once_and_known_by_name() {
        assert_eq!(IngestFormat::parse_name("interned_test_source"), None);
        let f = IngestFormat::mapped("interned_test_source");
        assert_eq!(f, IngestFormat::mapped("interned_test_source"));
        assert_eq!(f.as_str(), "interned_test_source");
        // Playbooks name sources through `parse_name`.
        assert_eq!(IngestFormat::parse_name("interned_test_source"), Some(f));
        assert_eq!(serde_json::to_value(f).unwrap(), "interned_test_source");
        assert_eq!(
            serde_json::to_value(IngestFormat::Splunk).unwrap(),
            "splunk"
        );
        // Built-in parsing refuses a mapped format (it needs its mapping).
        assert!(matches!(
            f.parse(b"{}", chrono::Utc::now()),
            Err(IngestError::InvalidField { .. })
        ));
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc… (4 bytes)");
        assert_eq!(clip("ééé", 3), "é… (6 bytes)");
        assert!(clip(&"x".repeat(100_000), ECHO_MAX).len() < ECHO_MAX + 32);
    }
}
