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

pub fn classify_write(w: &WriteSpec, a: &Answer) -> WriteClass {
    if w.already_done.iter().any(|m| matches(m, a)) {
        WriteClass::AlreadyDone
    } else if w.busy.iter().any(|m| matches(m, a)) {
        WriteClass::Busy
    } else if w.success.contains(&a.status) {
        WriteClass::Accepted
    } else if a.status == 429 {
        WriteClass::Throttled
    } else if a.status >= 500 || a.status == 408 {
        WriteClass::ServerError
    } else {
        WriteClass::Rejected
    }
}
