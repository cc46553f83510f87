//! The story of one action or case, told from the audit store alone.
//!
//! Owns: choosing the audit records that explain an action (its own, and its alert's arrival
//! and enrichment) or a case (every record of the case), and telling them in chain order: the
//! raw input (which source, when), enrichment facts (source, load time, staleness), the playbook
//! step, each decision with its determining policies' `@id`, `@reason`, `file:line` and text
//! from the policy set of that time, every vote, escalations, vendor exchanges (recorded
//! redacted) and the outcome. One [`Story`] serves `cordon explain` (text and JSON), HTTP and
//! gRPC. Reads only through the store's typed reads; assembling and rendering are pure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::policy::PolicySource;
use crate::policy::replay::{NOT_RECORDED, recorded_decision};
use crate::store::{AuditRecord, Store, StoreError};

/// What a story is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subject {
    /// `action` or `case`.
    pub kind: &'static str,
    pub id: String,
}

/// One thing that happened, from one audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// The audit record's kind.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// One sentence.
    pub what: String,
    /// The facts, as recorded (decisions: tier, determining policies with their text).
    pub facts: Value,
}

/// An action's or a case's story, in the order it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Story {
    pub subject: Subject,
    pub events: Vec<Event>,
}

/// Reads the story of `id` (an action id or a case id) from `store`; `None` when no audit
/// record names it.
pub fn read(store: &Store, id: &str) -> Result<Option<Story>, StoreError> {
    Ok(read_bounded(store, id, usize::MAX)?.map(|(story, _)| story))
}

/// [`read`], reading at most `max_records` audit records; the flag says the read stopped at
/// that bound before the chain's head (the story is then its beginning only).
///
/// When the action or case is on record, one pass from the arrival of its case's first alert
/// (nothing of it can come earlier) collects the records that name it and the records of its
/// alerts (arrival and enrichment, which are about the alert, not the action). Otherwise, two
/// passes over the whole chain: the records that name it, then those of the alerts they name.
pub fn read_bounded(
    store: &Store,
    id: &str,
    max_records: usize,
) -> Result<Option<(Story, bool)>, StoreError> {
    let (chosen, kind, cut) = match start_of(store, id)? {
        Some((kind, start, alerts)) => {
            let (chosen, cut) = one_pass(store, id, start, alerts, max_records)?;
            (chosen, Some(kind), cut)
        }
        None => {
            let (chosen, kind) = two_passes(store, id)?;
            (chosen, kind, false)
        }
    };
    let Some(kind) = kind.filter(|_| !chosen.is_empty()) else {
        return Ok(None);
    };
    let mut sources: BTreeMap<String, Option<PolicySource>> = BTreeMap::new();
    let records: Vec<AuditRecord> = chosen.into_values().collect();
    let story = tell(
        Subject {
            kind,
            id: id.to_string(),
        },
        &records,
        |hash| {
            sources
                .entry(hash.to_string())
                .or_insert_with(|| {
                    store
                        .get_json::<PolicySource>(&crate::store::policy_set_key(hash))
                        .ok()
                        .flatten()
                })
                .clone()
        },
    );
    Ok(Some((story, cut)))
}

/// What a subject is (`action` or `case`), the seq its records can start at, and its alerts.
type Start = (&'static str, u64, BTreeSet<String>);

/// What the subject is, where its records can start (its case's first alert's arrival) and the
/// alerts known to be its, when the action or case is on record.
fn start_of(store: &Store, id: &str) -> Result<Option<Start>, StoreError> {
    use crate::engine::read;
    let (kind, case_id, mut alerts) = if let Some(a) = read::action(store, id)? {
        (
            "action",
            a.case_id.clone(),
            BTreeSet::from([a.alert_id.clone()]),
        )
    } else if read::case(store, id)?.is_some() {
        ("case", id.to_string(), BTreeSet::new())
    } else {
        return Ok(None);
    };
    let Some(case) = read::case(store, &case_id)? else {
        return Ok(None);
    };
    if kind == "case" {
        alerts.extend(case.alert_ids.iter().cloned());
    }
    let first = match case.alert_ids.first() {
        Some(a) => read::alert(store, a)?.and_then(|a| a.received_seq),
        None => None,
    };
    Ok(first.map(|seq| (kind, seq, alerts)))
}

type Chosen = BTreeMap<u64, AuditRecord>;

fn one_pass(
    store: &Store,
    id: &str,
    start: u64,
    mut alerts: BTreeSet<String>,
    max_records: usize,
) -> Result<(Chosen, bool), StoreError> {
    let mut chosen = Chosen::new();
    let head = store.head().seq;
    let mut from = start;
    let mut read_n = 0usize;
    while from <= head && read_n < max_records {
        let batch = store.audit_records(from, 4096.min(max_records - read_n))?;
        let Some(last) = batch.last().map(|r| r.body.seq) else {
            break;
        };
        for r in batch {
            read_n += 1;
            let b = &r.body;
            let names_it = b.action_id.as_deref() == Some(id) || b.case_id.as_deref() == Some(id);
            if names_it {
                if let Some(a) = &b.alert_id {
                    alerts.insert(a.clone());
                }
                chosen.insert(b.seq, r);
            } else if b.action_id.is_none()
                && b.alert_id.as_ref().is_some_and(|a| alerts.contains(a))
            {
                chosen.insert(b.seq, r);
            }
        }
        from = last + 1;
    }
    Ok((chosen, from <= head))
}

fn two_passes(store: &Store, id: &str) -> Result<(Chosen, Option<&'static str>), StoreError> {
    let mut chosen = Chosen::new();
    let mut alerts = BTreeSet::new();
    let mut kind = None;
    each(store, |r| {
        let b = &r.body;
        let is_action = b.action_id.as_deref() == Some(id);
        let is_case = b.case_id.as_deref() == Some(id);
        if is_action || is_case {
            kind.get_or_insert(if is_action { "action" } else { "case" });
            if let Some(a) = &b.alert_id {
                alerts.insert(a.clone());
            }
            chosen.insert(b.seq, r.clone());
        }
    })?;
    if kind.is_none() {
        return Ok((chosen, None));
    }
    each(store, |r| {
        let b = &r.body;
        if b.action_id.is_none() && b.alert_id.as_ref().is_some_and(|a| alerts.contains(a)) {
            chosen.entry(b.seq).or_insert_with(|| r.clone());
        }
    })?;
    Ok((chosen, kind))
}

fn each(store: &Store, mut f: impl FnMut(&AuditRecord)) -> Result<(), StoreError> {
    let mut from = 1;
    loop {
        let batch = store.audit_records(from, 4096)?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        from = last.body.seq + 1;
        batch.iter().for_each(&mut f);
    }
}

/// Tells `records` (chain order) as a story; `source_of` gives the policy texts kept for a
/// policy hash. The shared inputs of step decisions (`decision_input`) are part of those
/// decisions, not events of their own.
pub fn tell(
    subject: Subject,
    records: &[AuditRecord],
    mut source_of: impl FnMut(&str) -> Option<PolicySource>,
) -> Story {
    let events = records
        .iter()
        .filter(|r| r.body.kind != crate::audit::AuditKind::DecisionInput.as_str())
        .map(|r| {
            let b = &r.body;
            let d = &b.data;
            let s = |v: &Value| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                v => v.to_string(),
            };
            let (what, facts) = match b.kind.as_str() {
                "alert_received" => (
                    format!(
                        "alert {} received from {} at {}",
                        b.alert_id.as_deref().unwrap_or("?"),
                        s(&d["source"]),
                        s(&d["received_at"])
                    ),
                    json!({"source": d["source"], "received_at": d["received_at"], "raw": d["raw"], "duplicate_of": d.get("duplicate_of")}),
                ),
                "enrichment" => {
                    let facts: Vec<Value> = d["facts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|f| json!({"entity": f["entity"], "source": f["source"], "loaded_at": f["loaded_at"], "stale": f["stale"], "data": f["data"]}))
                        .collect();
                    let stale = facts.iter().filter(|f| f["stale"] == json!(true)).count();
                    (
                        format!(
                            "enrichment: {} fact(s), {stale} stale, {} source failure(s)",
                            facts.len(),
                            d["failures"].as_array().map_or(0, Vec::len)
                        ),
                        json!({"facts": facts, "failures": d["failures"]}),
                    )
                }
                // An AI agent's proposal: who, its hypothesis, confidence and citations.
                "action_proposed" if d["proposal"].is_object() => {
                    let p = &d["proposal"];
                    (
                        format!(
                            "agent {} proposed {} on {} {} (AI-generated; confidence {}): {}",
                            s(&p["agent"]),
                            s(&d["kind"]),
                            s(&d["target"]["kind"]),
                            s(&d["target"]["id"]),
                            p["confidence"],
                            s(&p["hypothesis"])
                        ),
                        json!({"playbook": d["playbook"], "step": d["step"], "kind": d["kind"], "target": d["target"], "connector": d.get("connector"),
                               "agent": p["agent"], "hypothesis": p["hypothesis"], "confidence": p["confidence"], "citations": p["citations"], "ai_generated": p["ai_generated"]}),
                    )
                }
                "action_proposed" => (
                    format!(
                        "playbook {} step {} proposed {} on {} {}",
                        s(&d["playbook"]),
                        s(&d["step"]),
                        s(&d["kind"]),
                        s(&d["target"]["kind"]),
                        s(&d["target"]["id"])
                    ),
                    json!({"playbook": d["playbook"], "step": d["step"], "kind": d["kind"], "target": d["target"], "connector": d.get("connector")}),
                ),
                "vote" => {
                    let mut facts = json!({"user": d["user"], "channel": d["channel"], "identity": d["identity"], "decision": d["decision"], "outcome": d["outcome"], "request_hash": d["request_hash"], "comment": d.get("comment")});
                    if let Some(Ok(rec)) = recorded_decision(&b.kind, d) {
                        facts["policy"] = decision_facts(&rec.record, &mut source_of);
                    }
                    (
                        format!(
                            "{} voted {} over {} ({} identity): {}",
                            s(&d["user"]),
                            s(&d["decision"]),
                            s(&d["channel"]),
                            s(&d["identity"]),
                            s(&d["outcome"])
                        ),
                        facts,
                    )
                }
                "policy_decision" => match recorded_decision(&b.kind, d) {
                    Some(Ok(rec)) => {
                        let mut facts = decision_facts(&rec.record, &mut source_of);
                        facts["phase"] = json!(rec.phase.as_str());
                        if let Some(a) = rec.approvals {
                            facts["approvals"] = json!(a);
                        }
                        (
                            format!(
                                "policy decision ({}): {}",
                                rec.phase.as_str().replace('_', " "),
                                rec.record.tier
                            ),
                            facts,
                        )
                    }
                    _ => ("policy decision (unreadable)".to_string(), d.clone()),
                },
                "action_transition" => (
                    format!("action {} → {}", s(&d["from"]), s(&d["to"])),
                    d.clone(),
                ),
                "case_transition" => (
                    format!("case {} → {}", s(&d["from"]), s(&d["to"])),
                    d.clone(),
                ),
                "escalation" | "approval_escalated" => (
                    format!(
                        "escalated: {}",
                        match &d["reason"] {
                            Value::Null => format!("{} approval(s) missing", s(&d["approvals_missing"])),
                            r => s(r),
                        }
                    ),
                    d.clone(),
                ),
                "vendor_exchange" => (
                    format!(
                        "vendor exchange ({}): {} {} → {}",
                        s(&d["phase"]),
                        s(&d["request"]["method"]),
                        s(&d["request"]["path"]),
                        match &d["response"]["status"] {
                            Value::Null => s(&d["outcome"]),
                            st => s(st),
                        }
                    ),
                    d.clone(),
                ),
                k => (k.replace('_', " "), d.clone()),
            };
            Event {
                seq: b.seq,
                at: b.at,
                kind: b.kind.clone(),
                action_id: b.action_id.clone(),
                what,
                facts,
            }
        })
        .collect();
    Story { subject, events }
}

/// A decision's facts: tier, each probe, determining policies with `file:line` and their text
/// in the set of that time.
fn decision_facts(
    rec: &crate::policy::DecisionRecord,
    source_of: &mut impl FnMut(&str) -> Option<PolicySource>,
) -> Value {
    let source = source_of(&rec.policy_hash);
    let determining: Vec<Value> = rec
        .determining
        .iter()
        .map(|d| {
            let text = source.as_ref().and_then(|s| s.policy_text(&d.file, d.line));
            json!({
                "id": d.id, "effect": d.effect, "reason": d.reason,
                "file": d.file, "line": d.line, "at": format!("{}:{}", d.file, d.line),
                "text": text.map_or_else(|| json!(NOT_RECORDED), Value::String),
            })
        })
        .collect();
    json!({
        "tier": rec.tier, "policy_hash": rec.policy_hash, "determining": determining,
        "probes": rec.probes, "errors": rec.errors, "reasons": rec.reasons,
        "policy_text_recorded": source.is_some(),
    })
}

/// The story as text for people: one line per event, then its details indented.
pub fn render_text(story: &Story) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} {}", story.subject.kind, story.subject.id);
    for e in &story.events {
        let _ = writeln!(out, "#{} {} {}", e.seq, e.at.to_rfc3339(), e.what);
        let f = &e.facts;
        match e.kind.as_str() {
            "alert_received" => {
                let _ = writeln!(out, "    raw: {}", f["raw"]);
            }
            "enrichment" => {
                for x in f["facts"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "    {}:{} from {} (loaded {}{}): {}",
                        x["entity"]["kind"].as_str().unwrap_or("?"),
                        x["entity"]["value"].as_str().unwrap_or("?"),
                        x["source"].as_str().unwrap_or("?"),
                        x["loaded_at"].as_str().unwrap_or("?"),
                        if x["stale"] == json!(true) {
                            ", stale"
                        } else {
                            ""
                        },
                        x["data"]
                    );
                }
            }
            "policy_decision" => decision_text(&mut out, f),
            "vote" => {
                let _ = writeln!(
                    out,
                    "    request hash {}",
                    f["request_hash"].as_str().unwrap_or("?")
                );
                if !f["policy"].is_null() {
                    decision_text(&mut out, &f["policy"]);
                }
            }
            "vendor_exchange" => {
                let _ = writeln!(out, "    {f}");
            }
            _ => {}
        }
    }
    out
}

fn decision_text(out: &mut String, f: &Value) {
    for d in f["determining"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "    {} @id({:?}) @reason({:?}) at {}",
            d["effect"].as_str().unwrap_or("?"),
            d["id"].as_str().unwrap_or("?"),
            d["reason"].as_str().unwrap_or(""),
            d["at"].as_str().unwrap_or("?"),
        );
        for l in d["text"].as_str().unwrap_or_default().lines() {
            let _ = writeln!(out, "      | {l}");
        }
    }
    for e in f["errors"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "    error: {}", e.as_str().unwrap_or("?"));
    }
}
