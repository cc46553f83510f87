//! Reading a vendor's answer: a probe's or poll's state and captures, and a write's class.
//!
//! Owns: the desired-state reading (`ProbeState`: done, pending, busy, not done, failed,
//! ambiguous — more than one match of a `unique` list is ambiguous), captures from an answer,
//! and write classification (`WriteClass`: accepted, already done, busy, throttled, server
//! error, rejected). Pure: the executor plans on these, nothing here sends anything.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::client::Answer;
use super::spec::{Matcher, Probe, WriteSpec};

/// The desired-state reading of a probe or poll answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeState {
    Done,
    Pending,
    Busy,
    NotDone,
    Failed,
    Ambiguous,
}

/// Reads an answer through a probe: its state, the observed value, and captures.
pub fn read_probe(
    p: &Probe,
    json: &Value,
    intent_time: DateTime<Utc>,
) -> (ProbeState, String, BTreeMap<String, String>) {
    let mut caps = BTreeMap::new();
    if let Some(u) = &p.unique {
        match json.pointer(u) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.len() <= 1 => {}
            Some(Value::Array(a)) => {
                return (
                    ProbeState::Ambiguous,
                    format!("{} matches at {u}; refusing to pick one", a.len()),
                    caps,
                );
            }
            Some(_) => return (ProbeState::Ambiguous, format!("no list at {u}"), caps),
        }
    }
    for (n, ptr) in &p.capture {
        if let Some(v) = json.pointer(ptr).and_then(scalar) {
            caps.insert(n.clone(), v);
        }
    }
    if let Some(t) = &p.state {
        let observed = state_value(t, json);
        let in_ = |list: &[String]| list.contains(&observed);
        let state = if in_(&p.done) {
            ProbeState::Done
        } else if in_(&p.pending) {
            ProbeState::Pending
        } else if in_(&p.busy) {
            ProbeState::Busy
        } else if in_(&p.failed) {
            ProbeState::Failed
        } else if in_(&p.not_done) {
            ProbeState::NotDone
        } else {
            ProbeState::Ambiguous
        };
        return (state, observed, caps);
    }
    if let Some(ptr) = p.exists.as_ref().or(p.absent.as_ref()) {
        let v = json.pointer(ptr);
        let present = match v {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        let state = if !json.is_array() && !json.is_object() {
            // Not a structured answer at all: nothing can be concluded.
            ProbeState::Ambiguous
        } else if present == p.exists.is_some() {
            ProbeState::Done
        } else {
            ProbeState::NotDone
        };
        return (state, format!("exists={present}"), caps);
    }
    if let Some(ptr) = &p.after_intent {
        let Some(s) = json.pointer(ptr).and_then(|v| v.as_str()) else {
            return (ProbeState::Ambiguous, "no timestamp".into(), caps);
        };
        return match DateTime::parse_from_rfc3339(s) {
            // Vendors keep whole seconds (Graph does): compare at that granularity.
            Ok(t) if t.with_timezone(&Utc).timestamp() >= intent_time.timestamp() => {
                (ProbeState::Done, s.into(), caps)
            }
            Ok(_) => (ProbeState::NotDone, s.into(), caps),
            Err(_) => (ProbeState::Ambiguous, s.into(), caps),
        };
    }
    (ProbeState::Ambiguous, String::new(), caps)
}

/// A state template with each `{/pointer}` replaced by the scalar there (`""` when absent).
fn state_value(t: &str, json: &Value) -> String {
    let mut out = String::new();
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after.find('}').unwrap_or(after.len());
        out.push_str(
            &json
                .pointer(&after[..j])
                .and_then(scalar)
                .unwrap_or_default(),
        );
        rest = after.get(j + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Captures from an answer; `None` if any is missing.
pub fn capture(caps: &BTreeMap<String, String>, json: &Value) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (n, ptr) in caps {
        out.insert(n.clone(), json.pointer(ptr).and_then(scalar)?);
    }
    Some(out)
}

/// How a write's answer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteClass {
    Accepted,
    AlreadyDone,
    Busy,
    Throttled,
    /// A server error: the write may or may not have been applied.
    ServerError,
    /// The vendor refused the request itself (4xx): terminal.
    Rejected,
}

fn matches(m: &Matcher, a: &Answer) -> bool {
    if m.status.is_some_and(|s| s != a.status) {
        return false;
    }
    if let Some(ptr) = &m.pointer {
        let Some(v) = a.json.pointer(ptr) else {
            return false;
        };
        if let Some(eq) = &m.equals {
            let want = serde_json::to_value(eq).unwrap_or_default();
            if *v != want && scalar(v) != scalar(&want) {
                return false;
            }
        }
        if let Some(c) = &m.contains
            && !scalar(v).is_some_and(|s| s.contains(c.as_str()))
        {
            return false;
        }
    }
    true
}

/// A success status whose body reports errors and no result: Falcon's
/// `{"resources": [], "errors": [{"code": 404, ...}]}` answers a contain of an unknown device
/// with 200 and nothing done.
fn errors_without_result(json: &Value) -> bool {
    let errors = json
        .get("errors")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty());
    let result = match json.get("resources") {
        None | Some(Value::Null) => false,
        Some(Value::Array(r)) => !r.is_empty(),
        Some(_) => true,
    };
    errors && !result
}

/// How a write's answer reads. A success status is `Accepted` only when the body is the
/// vendor's: errors with no result are `Rejected` (nothing was done), and a body that is not JSON
/// (a proxy's or firewall's HTML page) is a `ServerError` (whether the write reached the vendor
/// is unknown: the probe decides). An empty body is accepted (204).
pub fn classify_write(w: &WriteSpec, a: &Answer) -> WriteClass {
    if w.already_done.iter().any(|m| matches(m, a)) {
        WriteClass::AlreadyDone
    } else if w.busy.iter().any(|m| matches(m, a)) {
        WriteClass::Busy
    } else if w.success.contains(&a.status) {
        if errors_without_result(&a.json) {
            WriteClass::Rejected
        } else if a.json.is_string() {
            WriteClass::ServerError
        } else {
            WriteClass::Accepted
        }
    } else if a.status == 429 {
        WriteClass::Throttled
    } else if a.status >= 500 || a.status == 408 {
        WriteClass::ServerError
    } else {
        WriteClass::Rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::spec::RequestSpec;

    fn spec() -> WriteSpec {
        WriteSpec {
            request: RequestSpec {
                method: "POST".into(),
                path: "/x".into(),
                body: None,
                form: Default::default(),
                headers: Default::default(),
            },
            success: vec![200, 202, 204],
            already_done: vec![Matcher {
                status: Some(400),
                pointer: Some("/errors/0/message".into()),
                equals: None,
                contains: Some("Duplicate".into()),
            }],
            busy: vec![],
            capture: Default::default(),
        }
    }

    #[test]
    fn a_success_status_is_accepted_only_with_the_vendors_answer() {
        let answer = |status, json: Value| Answer {
            status,
            json,
            headers: vec![],
        };
        let table: &[(u16, Value, WriteClass)] = &[
            (
                202,
                serde_json::json!({"resources": [{"id": "a"}], "errors": []}),
                WriteClass::Accepted,
            ),
            (204, Value::Null, WriteClass::Accepted),
            (200, serde_json::json!({"id": "x"}), WriteClass::Accepted),
            (
                200,
                serde_json::json!({"resources": [], "errors": [{"code": 404, "message": "No matching device"}]}),
                WriteClass::Rejected,
            ),
            (
                200,
                serde_json::json!({"errors": [{"code": 500}]}),
                WriteClass::Rejected,
            ),
            (
                200,
                Value::String("<html>blocked by policy</html>".into()),
                WriteClass::ServerError,
            ),
            (
                400,
                serde_json::json!({"resources": [], "errors": [{"message": "Duplicate type"}]}),
                WriteClass::AlreadyDone,
            ),
            (400, serde_json::json!({"errors": []}), WriteClass::Rejected),
            (503, Value::Null, WriteClass::ServerError),
            (429, Value::Null, WriteClass::Throttled),
        ];
        for (status, json, want) in table {
            assert_eq!(
                classify_write(&spec(), &answer(*status, json.clone())),
                *want,
                "{status} {json}"
            );
        }
    }
}
