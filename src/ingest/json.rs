//! Strict JSON for payloads from outside: one pass that builds a `serde_json::Value` and refuses
//! an object naming the same key twice, at any depth.
//!
//! serde_json's own `Value` keeps the last of duplicate keys; a SIEM (or whoever sits between it
//! and cordon) may keep the first, so the same bytes would mean two different alerts — a parser
//! differential an attacker can use (`"class_uid": 9999, "class_uid": 2004`). Pure.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why strict JSON was refused.
#[derive(Debug)]
pub enum JsonError {
    /// Not JSON (syntax, truncation, trailing data, nesting too deep).
    Syntax(String),
    /// An object names the key twice; the message names the key (clipped) and the position.
    DuplicateKey(String),
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax(m) | JsonError::DuplicateKey(m) => f.write_str(m),
        }
    }
}

/// Parses `bytes` as one JSON document (trailing whitespace only), refusing duplicate keys.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let classify = |e: serde_json::Error| {
        // The only data error this visitor raises is a duplicate key; everything else serde_json
        // reports is about the text itself.
        if e.classify() == serde_json::error::Category::Data {
            JsonError::DuplicateKey(e.to_string())
        } else {
            JsonError::Syntax(e.to_string())
        }
    };
    let Strict(v) = Strict::deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(v)
}

/// A `Value` deserialized by [`StrictVisitor`].
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        // As serde_json's own `Value`: JSON text cannot hold a non-finite number.
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|Strict(v)| v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if m.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {:?}",
                    super::clip(&key, super::ECHO_MAX)
                )));
            }
            let Strict(v) = map.next_value()?;
            m.insert(key, v);
        }
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_as_serde_json_without_duplicates() {
        let text = r#"{"a": [1, -2, 3.5, 1e400, true, null, "x\u0000"], "b": {"c": {}}, "d": 18446744073709551615}"#;
        // 1e400 overflows: serde_json refuses it, and so does the strict parser.
        assert!(serde_json::from_str::<Value>(text).is_err());
        assert!(matches!(parse(text.as_bytes()), Err(JsonError::Syntax(_))));
        let text = text.replace("1e400", "1e300");
        let want: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parse(text.as_bytes()).unwrap(), want);
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for text in [
            r#"{"class_uid": 9999, "class_uid": 2004}"#,
            r#"{"a": {"b": 1, "b": 1}}"#,
            r#"{"a": [{"x": 1}, {"k": 1, "k": 2}]}"#,
            // The same key once escaped and once not is still the same key.
            r#"{"k": 1, "\u006b": 2}"#,
        ] {
            match parse(text.as_bytes()) {
                Err(JsonError::DuplicateKey(m)) => assert!(m.starts_with("duplicate key"), "{m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // Equal keys in different objects are fine.
        assert!(parse(br#"{"a": {"k": 1}, "b": {"k": 1}, "k": 0}"#).is_ok());
        // A long key is named, clipped.
        let long = "k".repeat(100_000);
        let text = format!(r#"{{"{long}": 1, "{long}": 2}}"#);
        let m = parse(text.as_bytes()).unwrap_err().to_string();
        assert!(m.len() < 400, "{}", m.len());
    }

    #[test]
    fn syntax_errors_and_trailing_data_are_refused() {
        for text in ["", "{", "{} {}", "{\"a\": 1,}", "[1] x"] {
            assert!(
                matches!(parse(text.as_bytes()), Err(JsonError::Syntax(_))),
                "{text:?}"
            );
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(parse(deep.as_bytes()), Err(JsonError::Syntax(_))));
    }
}
