//! Loading a policy directory: parse every file, check the annotation vocabulary, validate the
//! whole set strictly against the schema, load entity files, and hash it all. Every problem is
//! reported with `file:line:column`, all at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Authorizer, Entities, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{ANNOTATIONS, NS, PolicyEngine, PolicyMeta, PolicySource, SourceFile};
use crate::action::ActionKind;
use crate::config::line_col;

/// One problem in a policy directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyProblem {
    pub file: String,
    /// 1-based; 0 when the problem is about the file as a whole.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

/// A directory that could not become a policy set.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in the policy set", .0.len())]
pub struct LoadError(pub Vec<PolicyProblem>);

pub const SCHEMA_FILE: &str = "cordon.cedarschema";

fn problem(
    file: &str,
    text: Option<&str>,
    offset: Option<usize>,
    message: impl Into<String>,
) -> PolicyProblem {
    let (line, column) = match (text, offset) {
        (Some(t), Some(o)) => line_col(t, o),
        _ => (0, 0),
    };
    PolicyProblem {
        file: file.to_string(),
        line,
        column,
        message: message.into(),
    }
}

/// First labelled offset of a diagnostic (or of its related diagnostics).
fn offset_of(d: &dyn Diagnostic) -> Option<usize> {
    if let Some(mut labels) = d.labels()
        && let Some(l) = labels.next()
    {
        return Some(l.offset());
    }
    if let Some(mut related) = d.related() {
        return related.find_map(offset_of);
    }
    None
}

fn message_of(d: &dyn Diagnostic) -> String {
    let mut m = d.to_string();
    if let Some(help) = d.help() {
        m.push_str(&format!(" (help: {help})"));
    }
    m
}

/// Byte offsets where each top-level statement (policy) starts: the first significant character
/// after the previous `;`, skipping whitespace, `//` comments and string literals.
fn statement_starts(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    let mut in_stmt = false;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                if !in_stmt {
                    starts.push(i);
                    in_stmt = true;
                }
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b';' => in_stmt = false,
            c if c.is_ascii_whitespace() => {}
            _ => {
                if !in_stmt {
                    starts.push(i);
                    in_stmt = true;
                }
            }
        }
        i += 1;
    }
    starts
}

/// Loads `dir` into a [`PolicyEngine`], or every problem found.
pub fn load_dir(dir: &Path) -> Result<PolicyEngine, Vec<PolicyProblem>> {
    let list = || -> std::io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
    };
    load_with(dir, list, |p: &Path| std::fs::read_to_string(p))
}

/// Loads a policy set as it was recorded (see [`PolicySource`]): the same checks as
/// [`load_dir`], on the recorded texts, with the recorded directory in every `file:line`.
pub fn load_recorded(src: &PolicySource) -> Result<PolicyEngine, Vec<PolicyProblem>> {
    let dir = Path::new(&src.dir);
    let list = || Ok(src.files.iter().map(|f| dir.join(&f.name)).collect());
    let read = |p: &Path| {
        let name = p.file_name().map(|n| n.to_string_lossy().to_string());
        src.files
            .iter()
            .find(|f| Some(&f.name) == name.as_ref())
            .map(|f| f.text.clone())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    };
    load_with(dir, list, read)
}

fn load_with(
    dir: &Path,
    list: impl Fn() -> std::io::Result<Vec<PathBuf>>,
    read: impl Fn(&Path) -> std::io::Result<String>,
) -> Result<PolicyEngine, Vec<PolicyProblem>> {
    let mut problems = Vec::new();
    let mut recorded: Vec<SourceFile> = Vec::new();
    let mut keep = |path: &Path, text: &str| {
        recorded.push(SourceFile {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            text: text.to_string(),
        })
    };
    let mut hasher = Sha256::new();
    let mut files_used = Vec::new();
    let dir_s = dir.display().to_string();

    // Schema.
    let schema_path = dir.join(SCHEMA_FILE);
    let schema_file = schema_path.display().to_string();
    let schema = match read(&schema_path) {
        Err(e) => {
            problems.push(problem(
                &schema_file,
                None,
                None,
                format!("cannot read schema: {e}"),
            ));
            None
        }
        Ok(text) => {
            keep(&schema_path, &text);
            hash_file(&mut hasher, SCHEMA_FILE, &text);
            files_used.push(schema_file.clone());
            match Schema::from_cedarschema_str(&text) {
                Ok((schema, _warnings)) => Some(schema),
                Err(e) => {
                    problems.push(problem(
                        &schema_file,
                        Some(&text),
                        offset_of(&e),
                        message_of(&e),
                    ));
                    None
                }
            }
        }
    };
    if let Some(schema) = &schema {
        let actions: BTreeSet<String> = schema
            .actions()
            .map(|a| a.id().unescaped().to_string())
            .collect();
        // Probes evaluate per-action policy subsets and build no action hierarchy: an action
        // group would make `action in Group` policies skip their members. Refuse it.
        for g in schema.action_groups() {
            problems.push(problem(
                &schema_file,
                None,
                None,
                format!("action groups are not supported: {g} has member actions; list the actions in each policy instead"),
            ));
        }
        for kind in ActionKind::ALL
            .iter()
            .map(|k| k.as_str())
            .chain(["approve"])
            .chain(super::CASE_ACTIONS)
        {
            if !actions.contains(kind) {
                problems.push(problem(
                    &schema_file,
                    None,
                    None,
                    format!("the schema declares no action {kind:?}; every action kind needs one"),
                ));
            }
        }
    }

    // Policies.
    let mut entries: Vec<_> = match list() {
        Ok(paths) => paths,
        Err(e) => {
            return Err(vec![problem(
                &dir_s,
                None,
                None,
                format!("cannot read policy directory: {e}"),
            )]);
        }
    };
    entries.sort();
    let mut combined = PolicySet::new();
    let mut meta: BTreeMap<String, PolicyMeta> = BTreeMap::new();
    let mut sources: BTreeMap<String, (String, String)> = BTreeMap::new(); // policy id -> (file, text)
    for path in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
    {
        let file = path.display().to_string();
        let text = match read(path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(problem(&file, None, None, format!("cannot read: {e}")));
                continue;
            }
        };
        keep(path, &text);
        hash_file(
            &mut hasher,
            &path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            &text,
        );
        files_used.push(file.clone());
        let set = match PolicySet::from_str(&text) {
            Ok(s) => s,
            Err(errs) => {
                for e in errs.iter() {
                    problems.push(problem(&file, Some(&text), offset_of(e), message_of(e)));
                }
                continue;
            }
        };
        if set.templates().next().is_some() {
            problems.push(problem(
                &file,
                None,
                None,
                "policy templates (?principal/?resource slots) are not supported",
            ));
        }
        let starts = statement_starts(&text);
        let mut policies: Vec<_> = set.policies().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        for (idx, policy) in policies.into_iter().enumerate() {
            let at = starts.get(idx).copied();
            let (line, _) = at.map(|o| line_col(&text, o)).unwrap_or((0, 0));
            let mut ok = true;
            for (k, _) in policy.annotations() {
                if !ANNOTATIONS.contains(&k) {
                    problems.push(problem(&file, Some(&text), at, format!("unknown annotation @{k} (allowed: @id, @reason, @approval_timeout_mins)")));
                    ok = false;
                }
            }
            let id = match policy.annotation("id") {
                Some(id) if valid_id(id) => id.to_string(),
                Some(id) => {
                    problems.push(problem(
                        &file,
                        Some(&text),
                        at,
                        format!("@id({id:?}) must be lower-case letters, digits, '-', '_' or '.'"),
                    ));
                    continue;
                }
                None => {
                    problems.push(problem(
                        &file,
                        Some(&text),
                        at,
                        "policy has no @id(\"...\") annotation",
                    ));
                    continue;
                }
            };
            let reason = policy
                .annotation("reason")
                .unwrap_or_default()
                .trim()
                .to_string();
            if reason.is_empty() {
                problems.push(problem(
                    &file,
                    Some(&text),
                    at,
                    format!(
                        "policy {id:?} has no @reason(\"...\"): approvers are shown the reason"
                    ),
                ));
                ok = false;
            }
            let timeout = match policy.annotation("approval_timeout_mins") {
                None => None,
                Some(t) => match t.parse::<u64>() {
                    Ok(n) if n > 0 && n <= crate::config::MAX_TIMEOUT_MINS => Some(n),
                    _ => {
                        problems.push(problem(
                            &file,
                            Some(&text),
                            at,
                            format!("@approval_timeout_mins({t:?}) must be a whole number of minutes from 1 to {}", crate::config::MAX_TIMEOUT_MINS),
                        ));
                        ok = false;
                        None
                    }
                },
            };
            if let Some(prev) = meta.get(&id) {
                problems.push(problem(
                    &file,
                    Some(&text),
                    at,
                    format!("duplicate @id({id:?}); also at {}:{}", prev.file, prev.line),
                ));
                continue;
            }
            let effect = match policy.effect() {
                cedar_policy::Effect::Permit => "permit",
                cedar_policy::Effect::Forbid => "forbid",
            };
            meta.insert(
                id.clone(),
                PolicyMeta {
                    id: id.clone(),
                    reason,
                    effect: effect.into(),
                    file: file.clone(),
                    line,
                    approval_timeout_mins: timeout,
                    uses_approvals: policy.to_string().contains("approvals"),
                },
            );
            sources.insert(id.clone(), (file.clone(), text.clone()));
            if ok && let Err(e) = combined.add(policy.new_id(PolicyId::new(&id))) {
                problems.push(problem(
                    &file,
                    Some(&text),
                    at,
                    format!("cannot add policy {id:?}: {e}"),
                ));
            }
        }
    }
    if meta.is_empty() && problems.is_empty() {
        problems.push(problem(
            &dir_s,
            None,
            None,
            "no policies (*.cedar): cordon will not run without a policy set",
        ));
    }

    // Strict validation of the whole set.
    if let Some(schema) = &schema {
        let result = Validator::new(schema.clone()).validate(&combined, ValidationMode::Strict);
        for e in result.validation_errors() {
            let id = e.policy_id().to_string();
            let (file, text) = sources.get(&id).cloned().unwrap_or_default();
            problems.push(problem(
                &file,
                Some(&text),
                offset_of(e),
                format!("policy {id:?}: {}", message_of(e)),
            ));
        }
    }

    // Entity files.
    let mut static_json = Vec::new();
    let mut static_attrs = BTreeMap::new();
    let mut users = BTreeSet::new();
    let mut chat_ids: BTreeMap<(String, String), String> = BTreeMap::new();
    for path in entries.iter().filter(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".entities.json"))
    }) {
        let file = path.display().to_string();
        let text = match read(path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(problem(&file, None, None, format!("cannot read: {e}")));
                continue;
            }
        };
        keep(path, &text);
        hash_file(
            &mut hasher,
            &path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            &text,
        );
        files_used.push(file.clone());
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(PolicyProblem {
                    file: file.clone(),
                    line: e.line(),
                    column: e.column(),
                    message: format!("not JSON: {e}"),
                });
                continue;
            }
        };
        let Some(items) = value.as_array() else {
            problems.push(problem(
                &file,
                None,
                None,
                "an entity file is a JSON array of entities",
            ));
            continue;
        };
        if let Some(schema) = &schema
            && let Err(e) = Entities::from_json_value(value.clone(), Some(schema))
        {
            problems.push(problem(&file, None, None, message_of(&e)));
            continue;
        }
        for item in items {
            let ty = item["uid"]["type"].as_str().unwrap_or_default();
            let id = item["uid"]["id"].as_str().unwrap_or_default();
            match ty.strip_prefix(&format!("{NS}::")) {
                Some("User") => {
                    for (platform, attr) in CHAT_ID_ATTRS {
                        let Some(pid) = item["attrs"][attr].as_str() else {
                            continue;
                        };
                        let key = (platform.to_string(), id_key(platform, pid));
                        if let Some(other) = chat_ids.insert(key, id.to_string())
                            && other != id
                        {
                            problems.push(problem(&file, None, None, format!("users {other:?} and {id:?} both have {attr} {pid:?}; a chat identity must name one user")));
                        }
                    }
                    users.insert(id.to_string());
                    static_json.push(item.clone());
                }
                Some("Group") => static_json.push(item.clone()),
                Some("Host" | "Account" | "CloudResource" | "Indicator" | "Case") => {
                    let key = format!("{ty}::{}", serde_json::to_string(id).unwrap_or_default());
                    static_attrs.insert(key, item["attrs"].as_object().cloned().unwrap_or_default());
                }
                _ => problems.push(problem(&file, None, None, format!("entity {ty}::{id:?}: entity files hold users, groups and static asset attributes; {ty} entities are built by cordon"))),
            }
        }
    }

    let Some(schema) = schema else {
        return Err(problems);
    };
    // Per-action subsets: a probe for action X evaluates only the policies whose action scope
    // can match X (the schema declares no action groups, so `in [...]` is list membership; a
    // policy naming an action uid cordon does not know in `in` is kept everywhere, to stay exact).
    let actions: Vec<String> = ActionKind::ALL
        .iter()
        .map(|k| k.as_str().to_string())
        .chain(["approve".to_string()])
        .chain(super::CASE_ACTIONS.map(String::from))
        .collect();
    let mut by_action = BTreeMap::new();
    for a in &actions {
        let mut set = PolicySet::new();
        for p in combined.policies() {
            let matches = match p.action_constraint() {
                cedar_policy::ActionConstraint::Any => true,
                cedar_policy::ActionConstraint::Eq(uid) => uid.id().unescaped() == a,
                cedar_policy::ActionConstraint::In(uids) => uids.iter().any(|u| {
                    u.id().unescaped() == a || !actions.iter().any(|x| x == u.id().unescaped())
                }),
            };
            if matches && let Err(e) = set.add(p.clone()) {
                problems.push(problem(
                    &dir_s,
                    None,
                    None,
                    format!("cannot index policy {}: {e}", p.id()),
                ));
            }
        }
        by_action.insert(a.clone(), set);
    }
    let static_entities = match Entities::from_json_value(Value::Array(static_json), Some(&schema))
    {
        Ok(e) => e,
        Err(e) => {
            problems.push(problem(
                &dir_s,
                None,
                None,
                format!("entities: {}", message_of(&e)),
            ));
            return Err(problems);
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(PolicyEngine {
        hash: hex::encode(hasher.finalize()),
        source: Arc::new(PolicySource {
            dir: dir_s,
            cedar_version: cedar_policy::get_sdk_version().to_string(),
            files: recorded,
        }),
        files: files_used,
        loaded_at: chrono::Utc::now(),
        schema,
        policies: combined,
        by_action,
        static_entities,
        static_attrs,
        users,
        chat_ids,
        meta,
        authorizer: Authorizer::new(),
    })
}

/// Chat platform → the user attribute that maps its user ids to cordon users (`oidc`: the
/// console's OpenID Connect sign-in, whose configured claim is matched against `email`).
pub const CHAT_ID_ATTRS: [(&str, &str); 4] = [
    ("slack", "slack_id"),
    ("mattermost", "mattermost_id"),
    ("teams", "teams_id"),
    ("oidc", "email"),
];

/// How a platform's user id is looked up: email addresses (`oidc`) in ASCII lowercase, since
/// providers do not keep the case the entity files wrote; chat ids as they are.
pub(crate) fn id_key(platform: &str, id: &str) -> String {
    if platform == "oidc" {
        id.to_ascii_lowercase()
    } else {
        id.to_string()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

fn hash_file(h: &mut Sha256, name: &str, text: &str) {
    h.update(name.as_bytes());
    h.update([0]);
    h.update((text.len() as u64).to_be_bytes());
    h.update(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_starts_skip_comments_and_strings() {
        let t = "// c; c\n@id(\"a;b\")\npermit(principal, action, resource);\n\n  forbid(principal, action, resource) when { \"x;\" == \"y\" };\n";
        let s = statement_starts(t);
        assert_eq!(s.len(), 2);
        assert_eq!(line_col(t, s[0]).0, 2);
        assert_eq!(line_col(t, s[1]).0, 5);
    }
}
