//! Splitting an ingest body into alerts: one JSON object, a JSON array of objects, or NDJSON;
//! any bad part refuses the whole body, naming its line or element.

use super::*;

/// One alert of a body: where it is (`line 3`, `element 2`, or nothing for a lone object), its
/// parsed JSON, and its text as kept in the audit record.
#[derive(Debug)]
pub struct Part {
    pub at: Option<String>,
    pub value: Value,
    pub raw: String,
}

/// Why a body does not split into alerts.
#[derive(Debug)]
pub enum BodyError {
    /// More alerts than allowed.
    TooMany,
    /// The body as a whole is not JSON, an object, an array of objects or NDJSON.
    Whole(IngestError),
    /// One part is bad: where, and why.
    At(String, IngestError),
}

/// Splits a body into alerts: one JSON object; a JSON array of objects (each kept as its
/// compact JSON text, keys in the order sent); or NDJSON (one object per line, kept verbatim;
/// blank lines skipped), as declared by `ndjson` or recognised when the body is not one JSON
/// document, has several non-blank lines, and the first is a whole object. Any bad part refuses the whole body, naming its
/// line or element. Returns whether the body was a list (array or NDJSON).
pub fn split_body(bytes: &[u8], ndjson: bool, max: usize) -> Result<(bool, Vec<Part>), BodyError> {
    if !ndjson {
        match crate::ingest::strict(bytes) {
            Ok(Value::Array(items)) => {
                if items.len() > max {
                    return Err(BodyError::TooMany);
                }
                let mut parts = Vec::with_capacity(items.len());
                for (i, value) in items.into_iter().enumerate() {
                    let at = format!("element {i}");
                    if !value.is_object() {
                        let e = IngestError::MalformedJson("an alert must be a JSON object".into());
                        return Err(BodyError::At(at, e));
                    }
                    let raw = value.to_string();
                    parts.push(Part {
                        at: Some(at),
                        value,
                        raw,
                    });
                }
                if parts.is_empty() {
                    let e = IngestError::MalformedJson("the body holds no alert".into());
                    return Err(BodyError::Whole(e));
                }
                return Ok((true, parts));
            }
            Ok(value @ Value::Object(_)) => {
                // `strict` accepted it as JSON, so it is UTF-8.
                let raw = String::from_utf8_lossy(bytes).into_owned();
                return Ok((
                    false,
                    vec![Part {
                        at: None,
                        value,
                        raw,
                    }],
                ));
            }
            Ok(_) => {
                let e = IngestError::MalformedJson(
                    "the body must be a JSON object, an array of objects, or NDJSON".into(),
                );
                return Err(BodyError::Whole(e));
            }
            Err(e) => {
                // NDJSON when it has several lines and the first is a whole object (a broken
                // pretty-printed object is reported as itself, not as its first line).
                let mut lines = bytes
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.trim_ascii().is_empty());
                let first_is_object = lines
                    .next()
                    .is_some_and(|l| crate::ingest::strict_object(l).is_ok());
                if !first_is_object || lines.next().is_none() {
                    return Err(BodyError::Whole(e));
                }
            }
        }
    }
    let mut parts = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            continue;
        }
        if parts.len() == max {
            return Err(BodyError::TooMany);
        }
        let at = format!("line {}", i + 1);
        let value = crate::ingest::strict_object(line).map_err(|e| BodyError::At(at.clone(), e))?;
        let raw = String::from_utf8_lossy(line).into_owned();
        parts.push(Part {
            at: Some(at),
            value,
            raw,
        });
    }
    if parts.is_empty() {
        let e = IngestError::MalformedJson("the body holds no alert".into());
        return Err(BodyError::Whole(e));
    }
    Ok((true, parts))
}
