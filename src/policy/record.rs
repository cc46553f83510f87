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
#[derive(Debug, Clone, PartialEq)]
pub enum RequestRecord {
    Step(TypedStep),
    Json(Value),
}

impl Serialize for RequestRecord {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Uid<'a>(&'a str, &'a str);
        impl Serialize for Uid<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut m = ser.serialize_map(Some(2))?;
                m.serialize_entry("type", &format_args!("{NS}::{}", self.0))?;
                m.serialize_entry("id", self.1)?;
                m.end()
            }
        }
        struct Ent<'a, A: Serialize>(Uid<'a>, A);
        impl<A: Serialize> Serialize for Ent<'_, A> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut m = ser.serialize_map(Some(3))?;
                m.serialize_entry("uid", &self.0)?;
                m.serialize_entry("attrs", &self.1)?;
                m.serialize_entry("parents", &[(); 0])?;
                m.end()
            }
        }
        struct Ctx<'a>(&'a Map<String, Value>, u8);
        impl Serialize for Ctx<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut m = ser.serialize_map(None)?;
                for (k, v) in self.0.iter().filter(|(k, _)| *k != "approvals") {
                    m.serialize_entry(k, v)?;
                }
                m.serialize_entry("approvals", &self.1)?;
                m.end()
            }
        }
        struct Ents<'a>(&'a TypedStep);
        impl Serialize for Ents<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let s = self.0;
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
                q.serialize_element(&Ent(
                    Uid(target_type(s.target.kind), &s.target.id),
                    &s.resource_attrs,
                ))?;
                q.end()
            }
        }
        match self {
            RequestRecord::Json(v) => v.serialize(ser),
            RequestRecord::Step(s) => {
                let mut m = ser.serialize_map(Some(5))?;
                let (p_type, p_id) = s.principal();
                m.serialize_entry("principal", &Uid(p_type, p_id))?;
                m.serialize_entry("action", &Uid("Action", s.kind.as_str()))?;
                m.serialize_entry("resource", &Uid(target_type(s.target.kind), &s.target.id))?;
                m.serialize_entry("context", &Ctx(&s.context, s.approvals))?;
                m.serialize_entry("entities", &Ents(s))?;
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
