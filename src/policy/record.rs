//! The decision record's request: what a decision was made on, as it is stored.
//!
//! Owns: keeping a step's request typed until its record is serialized, and writing and reading
//! it back in Cedar's JSON shapes (`principal`, `action`, `resource`, `context`, `entities`).

use super::*;

/// The Cedar request a decision was made on, as the decision record keeps it: `principal`,
/// `action`, `resource`, `context` and the `entities` used, in Cedar's JSON shapes. A step's
/// request keeps its parts typed and is written out as that JSON when the record is serialized
/// (building the JSON tree per step, then copying it again to store it, was a fifth of a
/// decision); a record read back is plain JSON.
// Built once per decision and moved into its record; boxing the step would cost an allocation
// per decision for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RequestRecord {
    Step(TypedStep),
    Json(Value),
}

struct Uid<'a>(&'a str, &'a str);
impl Serialize for Uid<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = ser.serialize_map(Some(2))?;
        m.serialize_entry("type", &format_args!("{NS}::{}", self.0))?;
        m.serialize_entry("id", self.1)?;
        m.end()
    }
}

/// An entity in Cedar's JSON shape: `uid`, `attrs`, no `parents`.
struct Ent<'a, A: Serialize>(Uid<'a>, A);
impl<A: Serialize> Serialize for Ent<'_, A> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = ser.serialize_map(Some(3))?;
        m.serialize_entry("uid", &self.0)?;
        m.serialize_entry("attrs", &self.1)?;
        m.serialize_entry("parents", &[(); 0])?;
        m.end()
    }
}

impl Serialize for RequestRecord {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        /// The context, less what the shared part holds (same key, same value).
        struct Ctx<'a>(&'a Map<String, Value>, u8, Option<&'a Map<String, Value>>);
        impl Serialize for Ctx<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut m = ser.serialize_map(None)?;
                let shared = |k: &String, v: &Value| self.2.is_some_and(|s| s.get(k) == Some(v));
                for (k, v) in self.0.iter().filter(|(k, _)| *k != "approvals") {
                    if !shared(k, v) {
                        m.serialize_entry(k, v)?;
                    }
                }
                m.serialize_entry("approvals", &self.1)?;
                m.end()
            }
        }
        struct Ents<'a>(&'a TypedStep);
        impl Serialize for Ents<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let s = self.0;
                let resource_shared = s.shared.as_ref().is_some_and(|r| r.resource.is_some());
                let mut q = ser.serialize_seq(Some(2))?;
                let family = [("family", &s.family)];
                match s.principal() {
                    ("Agent", name) => q.serialize_element(&Ent(
                        Uid("Agent", name),
                        BTreeMap::<&str, &String>::new(),
                    ))?,
                    (ty, name) => q.serialize_element(&Ent(
                        Uid(ty, name),
                        family.into_iter().collect::<BTreeMap<_, _>>(),
                    ))?,
                }
                if !resource_shared {
                    q.serialize_element(&Ent(
                        Uid(target_type(s.target.kind), &s.target.id),
                        &s.resource_attrs,
                    ))?;
                }
                q.end()
            }
        }
        match self {
            RequestRecord::Json(v) => v.serialize(ser),
            RequestRecord::Step(s) => {
                let mut m = ser.serialize_map(None)?;
                let (p_type, p_id) = s.principal();
                let shared = s.shared.as_ref();
                let shared_ctx = shared.and_then(|r| r.context.as_ref());
                m.serialize_entry("principal", &Uid(p_type, p_id))?;
                m.serialize_entry("action", &Uid("Action", s.kind.as_str()))?;
                m.serialize_entry("resource", &Uid(target_type(s.target.kind), &s.target.id))?;
                m.serialize_entry(
                    "context",
                    &Ctx(&s.context, s.approvals, shared_ctx.map(|(_, c)| &**c)),
                )?;
                if let Some((hash, _)) = shared_ctx {
                    m.serialize_entry(CONTEXT_REF, hash)?;
                }
                m.serialize_entry("entities", &Ents(s))?;
                if let Some(hash) = shared.and_then(|r| r.resource.as_ref()) {
                    m.serialize_entry(ENTITY_REFS, &[hash])?;
                }
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for RequestRecord {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Value::deserialize(de).map(RequestRecord::Json)
    }
}

/// One step's request, typed: what the decision record keeps (see `RequestRecord`).
#[derive(Debug, Clone, PartialEq)]
pub struct TypedStep {
    pub(super) playbook: String,
    pub(super) family: String,
    pub(super) kind: ActionKind,
    pub(super) target: Target,
    pub(super) resource_attrs: Map<String, Value>,
    /// `approvals` is left out here and written as `approvals` below.
    pub(super) context: Map<String, Value>,
    /// `approvals` of the probe the record shows (the last one).
    pub(super) approvals: u8,
    /// What the record leaves to `decision_input` records (see [`SharedRefs`]).
    pub(super) shared: Option<SharedRefs>,
}

/// A policy set as the audit store keeps it, content-addressed by its hash
/// ([`PolicyEngine::hash`]): every file it was loaded from, verbatim, the directory they were in
/// (so a reloaded record names the same `file:line`) and the Cedar version that evaluated it.
/// [`super::load_recorded`] turns it back into the same engine, with the same hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySource {
    pub dir: String,
    pub cedar_version: String,
    /// The schema, every `.cedar` file and every entity file, by file name.
    pub files: Vec<SourceFile>,
}

/// One file of a [`PolicySource`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

impl PolicySource {
    /// The text of the policy that starts at `line` of `file` (a path as recorded in a
    /// decision's determining policies): from that line to the `;` that ends the statement.
    pub fn policy_text(&self, file: &str, line: usize) -> Option<String> {
        let name = std::path::Path::new(file).file_name()?.to_string_lossy();
        let f = self.files.iter().find(|f| f.name == name)?;
        let mut out = String::new();
        for l in f.text.lines().skip(line.checked_sub(1)?) {
            out.push_str(l);
            out.push('\n');
            let code = l.split("//").next().unwrap_or_default();
            if code.trim_end().ends_with(';') {
                break;
            }
        }
        (!out.is_empty()).then_some(out)
    }
}
impl TypedStep {
    /// The principal's entity type and id: `Agent` for an agent's proposal (`agent:<name>`),
    /// else `Playbook`.
    pub(super) fn principal(&self) -> (&'static str, &str) {
        match crate::agent::agent_of(&self.playbook) {
            Some(name) => ("Agent", name),
            None => ("Playbook", &self.playbook),
        }
    }
}

/// Key of a stored step request naming its shared context part.
const CONTEXT_REF: &str = "context_ref";
/// Key of a stored step request naming its shared entities.
const ENTITY_REFS: &str = "entity_refs";

/// What a step decision's request shares with the other steps of its alert: the context that
/// comes from the alert and its case (everything but the step's own keys), and the resource
/// entity's attributes. Each is written once per alert as a `decision_input` audit record
/// ([`SharedPart`]) and the decision record names it by hash instead of repeating it; readers put
/// the request back together with [`SharedInputs`].
#[derive(Debug, Clone, PartialEq)]
pub struct SharedRefs {
    /// The shared context part's hash and its keys and values.
    pub context: Option<(String, std::sync::Arc<Map<String, Value>>)>,
    /// The resource entity's hash.
    pub resource: Option<String>,
}

/// A shared part of step requests as its `decision_input` record holds it, and its hash
/// (SHA-256 of the part's JSON, as written).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedPart {
    pub hash: String,
    /// Bytes of the part's JSON.
    pub size: usize,
    /// The `decision_input` record's data: `{"hash", "context"}` or `{"hash", "entity"}`.
    pub data: Value,
}

impl SharedPart {
    /// The shared context part `context` (without any step's own keys).
    pub fn context(context: &Map<String, Value>) -> SharedPart {
        Self::of(
            "context",
            serde_json::to_value(context).unwrap_or(Value::Null),
        )
    }

    /// The resource entity of a step on `target` with (complete) attributes `attrs`, exactly as
    /// a request's `entities` would hold it.
    pub fn entity(target: &Target, attrs: &Map<String, Value>) -> SharedPart {
        let e = Ent(Uid(target_type(target.kind), &target.id), attrs);
        Self::of("entity", serde_json::to_value(&e).unwrap_or(Value::Null))
    }

    fn of(key: &str, part: Value) -> SharedPart {
        use sha2::Digest;
        let bytes = serde_json::to_vec(&part).unwrap_or_default();
        let hash = hex::encode(sha2::Sha256::digest(&bytes));
        let mut data = Map::new();
        data.insert("hash".into(), Value::String(hash.clone()));
        data.insert(key.into(), part);
        SharedPart {
            hash,
            size: bytes.len(),
            data: Value::Object(data),
        }
    }
}

impl DecisionRecord {
    /// Leaves the parts of this step decision's request named in `refs` to their
    /// `decision_input` records. Only a step's own decision shares; others are unchanged.
    pub fn share(&mut self, refs: SharedRefs) {
        if let RequestRecord::Step(s) = &mut self.request {
            s.shared = Some(refs);
        }
    }
}

/// Most shared parts [`SharedInputs`] keeps while a chain is read: the decisions that name a
/// part follow it in the same commit, so only the newest are ever needed.
const SHARED_KEPT: usize = 16_384;

/// The shared parts of step requests (`decision_input` records) seen so far while a chain is
/// read in order, by hash; puts stored requests back together.
#[derive(Debug, Default)]
pub struct SharedInputs {
    parts: std::collections::HashMap<String, Value>,
    order: std::collections::VecDeque<String>,
}

impl SharedInputs {
    /// Keeps the part a `decision_input` record holds; any other record is ignored.
    pub fn note(&mut self, kind: &str, data: &Value) {
        if kind != crate::audit::AuditKind::DecisionInput.as_str() {
            return;
        }
        let Some(hash) = data.get("hash").and_then(Value::as_str) else {
            return;
        };
        let part = data.get("context").or_else(|| data.get("entity"));
        if let Some(part) = part
            && self.parts.insert(hash.to_string(), part.clone()).is_none()
        {
            self.order.push_back(hash.to_string());
            while self.order.len() > SHARED_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.parts.remove(&old);
                }
            }
        }
    }

    /// Puts a stored request back together: the shared context first, then the request's own
    /// keys; the shared entities after its own. A request that names no shared part is left as
    /// it is; one whose part was not seen is an error.
    pub fn expand(&self, record: &mut DecisionRecord) -> Result<(), String> {
        let RequestRecord::Json(req) = &mut record.request else {
            return Ok(());
        };
        let Some(obj) = req.as_object_mut() else {
            return Ok(());
        };
        let missing = |h: &str| format!("shared decision input {h} is not in the records read");
        if let Some(h) = obj.remove(CONTEXT_REF) {
            let h = h.as_str().unwrap_or_default().to_string();
            let Some(Value::Object(shared)) = self.parts.get(&h) else {
                return Err(missing(&h));
            };
            let mut ctx = shared.clone();
            if let Some(Value::Object(own)) = obj.get("context") {
                for (k, v) in own {
                    ctx.insert(k.clone(), v.clone());
                }
            }
            obj.insert("context".into(), Value::Object(ctx));
        }
        if let Some(refs) = obj.remove(ENTITY_REFS) {
            let mut extra = Vec::new();
            for h in refs.as_array().map(Vec::as_slice).unwrap_or_default() {
                let h = h.as_str().unwrap_or_default();
                extra.push(self.parts.get(h).cloned().ok_or_else(|| missing(h))?);
            }
            match obj.get_mut("entities") {
                Some(Value::Array(es)) => es.extend(extra),
                _ => {
                    obj.insert("entities".into(), Value::Array(extra));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A decision that leaves its shared context and resource entity to `decision_input`
    /// records stores less, and reads back (through the parts) as exactly the full request.
    #[test]
    fn a_shared_step_request_is_stored_by_reference_and_reads_back_whole() {
        let shared: Map<String, Value> = json!({
            "alert": {"severity": "high", "techniques": ["T1059"], "rule_name": "r"},
            "case": {"id": "c1", "alert_count": 1, "entity_count": 2},
            "intel_matches": 0,
        })
        .as_object()
        .unwrap()
        .clone();
        let step = |kind, id: &str| StepRequest {
            playbook: "malware_execution".into(),
            family: "malware_execution".into(),
            step: "isolate".into(),
            kind,
            target: Target {
                kind: TargetKind::Host,
                id: id.into(),
            },
            resource_attrs: default_attrs(TargetKind::Host, id),
            context: with_step(
                &shared,
                StepInfo {
                    playbook: "malware_execution",
                    step: "isolate",
                    kind,
                },
            ),
        };
        let engine =
            load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap();
        let req = step(ActionKind::IsolateHost, "ws-1");
        let full = engine.decide_step(req.clone());
        let full_json = serde_json::to_value(&full).unwrap();
        let ctx = SharedPart::context(&shared);
        let ent = SharedPart::entity(&req.target, &req.resource_attrs);
        let mut lean = engine.decide_step(req);
        lean.share(SharedRefs {
            context: Some((ctx.hash.clone(), Arc::new(shared.clone()))),
            resource: Some(ent.hash.clone()),
        });
        let lean_json = serde_json::to_value(&lean).unwrap();
        let stored = serde_json::to_string(&lean_json).unwrap();
        assert!(stored.len() < serde_json::to_string(&full_json).unwrap().len());
        assert!(!stored.contains("rule_name"), "{stored}");
        assert_eq!(lean_json["request"]["context_ref"], json!(ctx.hash));
        assert_eq!(
            lean_json["request"]["context"],
            json!({"playbook": "malware_execution", "step": "isolate", "reversible": true, "approvals": 1})
        );
        // Read back through the parts: the full request, key order included.
        let mut parts = SharedInputs::default();
        parts.note("decision_input", &ctx.data);
        parts.note("decision_input", &ent.data);
        let mut back: DecisionRecord = serde_json::from_value(lean_json.clone()).unwrap();
        parts.expand(&mut back).unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&full_json).unwrap()
        );
        // Without the parts it is an error, not a different request.
        let mut orphan: DecisionRecord = serde_json::from_value(lean_json).unwrap();
        let e = SharedInputs::default().expand(&mut orphan).unwrap_err();
        assert!(e.contains(&ctx.hash), "{e}");
        // A record that names no part (older stores, re-checks) reads as it is.
        let mut old: DecisionRecord = serde_json::from_value(full_json.clone()).unwrap();
        SharedInputs::default().expand(&mut old).unwrap();
        assert_eq!(serde_json::to_value(&old).unwrap(), full_json);
    }
}
