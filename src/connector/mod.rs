//! Connectors: the vendors cordon can act through, declared in `connectors/*.toml`.
//!
//! Owns: the closed set of connector kinds and the action kinds each implements, the connector
//! file format (unknown keys are errors), and its validation (a base URL with a static scheme
//! and host: alert data can never choose the destination). This is the only module allowed to
//! call vendors; the executor that does so arrives with the connector issue, so today every
//! connector runs in `dry_run` and `live` is refused at validation rather than silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::action::ActionKind;
use crate::config::{Problem, parse_toml_file};

/// The name of the built-in connector that performs cordon's own actions (enrichment, case
/// summaries). It needs no file.
pub const BUILTIN: &str = "cordon";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    Crowdstrike,
    Defender,
    Okta,
    Entra,
    Jira,
    Thehive,
    Webhook,
}

impl ConnectorKind {
    /// The action kinds this vendor implements. A webhook declares its own.
    pub fn actions(self) -> &'static [ActionKind] {
        use ActionKind::*;
        match self {
            ConnectorKind::Crowdstrike | ConnectorKind::Defender => {
                &[IsolateHost, ReleaseHost, BlockIoc, UnblockIoc]
            }
            ConnectorKind::Okta | ConnectorKind::Entra => &[RevokeSessions],
            ConnectorKind::Jira | ConnectorKind::Thehive => &[CreateTicket],
            ConnectorKind::Webhook => &[],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Crowdstrike => "crowdstrike",
            ConnectorKind::Defender => "defender",
            ConnectorKind::Okta => "okta",
            ConnectorKind::Entra => "entra",
            ConnectorKind::Jira => "jira",
            ConnectorKind::Thehive => "thehive",
            ConnectorKind::Webhook => "webhook",
        }
    }
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Render and record every request; send nothing.
    #[default]
    DryRun,
    /// Send requests to the vendor.
    Live,
}

/// One `connectors/<name>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorFile {
    pub kind: ConnectorKind,
    #[serde(default)]
    pub description: String,
    /// Scheme and host are fixed here; requests can only fill in paths and parameters.
    pub base_url: String,
    #[serde(default)]
    pub mode: Mode,
    /// For `webhook` only: the action kinds it carries.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// A validated connector.
#[derive(Debug, Clone)]
pub struct Connector {
    pub name: String,
    pub kind: ConnectorKind,
    pub base_url: reqwest::Url,
    pub mode: Mode,
    pub actions: Vec<ActionKind>,
}

impl Connector {
    pub fn supports(&self, kind: ActionKind) -> bool {
        self.actions.contains(&kind)
    }
}

/// All connectors by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub connectors: BTreeMap<String, Connector>,
}

impl Registry {
    /// Loads and validates every `*.toml` in `dir`: the connectors that are valid, and every
    /// problem with the others.
    pub fn load(dir: &Path) -> (Registry, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut reg = Registry::default();
        let files = match toml_files(dir) {
            Ok(f) => f,
            Err(p) => return (reg, vec![p]),
        };
        for path in files {
            let file = path.display().to_string();
            let name = stem(&path);
            if name == BUILTIN {
                problems.push(Problem::new(
                    &file,
                    "",
                    format!("the name {BUILTIN:?} is reserved for the built-in connector"),
                ));
                continue;
            }
            match parse_toml_file::<ConnectorFile>(&path) {
                Err(p) => problems.push(p),
                Ok(cf) => match validate(&file, &name, cf) {
                    Ok(c) => {
                        reg.connectors.insert(name, c);
                    }
                    Err(mut ps) => problems.append(&mut ps),
                },
            }
        }
        (reg, problems)
    }

    /// Whether `connector` exists and implements `kind` (the built-in one does enrichment and
    /// summaries).
    pub fn check(&self, connector: &str, kind: ActionKind) -> Result<(), String> {
        if connector == BUILTIN {
            return if matches!(kind, ActionKind::Enrich | ActionKind::SummarizeCase) {
                Ok(())
            } else {
                Err(format!("the built-in connector does not implement {kind}"))
            };
        }
        match self.connectors.get(connector) {
            None => Err(format!("unknown connector {connector:?}")),
            Some(c) if !c.supports(kind) => Err(format!(
                "connector {connector:?} ({}) does not implement {kind}",
                c.kind
            )),
            Some(_) => Ok(()),
        }
    }
}

fn validate(file: &str, name: &str, cf: ConnectorFile) -> Result<Connector, Vec<Problem>> {
    let mut problems = Vec::new();
    let base_url = match reqwest::Url::parse(&cf.base_url) {
        Ok(u) => {
            if !matches!(u.scheme(), "https" | "http") {
                problems.push(Problem::new(
                    file,
                    "base_url",
                    "scheme must be https (or http for loopback tests)",
                ));
            }
            if u.host_str().is_none_or(str::is_empty) {
                problems.push(Problem::new(file, "base_url", "must name a host"));
            }
            if cf.base_url.contains('{') || cf.base_url.contains('}') {
                problems.push(Problem::new(
                    file,
                    "base_url",
                    "must not contain templates: the destination is fixed",
                ));
            }
            if !u.username().is_empty() || u.password().is_some() {
                problems.push(Problem::new(
                    file,
                    "base_url",
                    "must not embed credentials; use a secret reference",
                ));
            }
            Some(u)
        }
        Err(e) => {
            problems.push(Problem::new(file, "base_url", format!("not a URL: {e}")));
            None
        }
    };
    if cf.mode == Mode::Live {
        problems.push(Problem::new(
            file,
            "mode",
            "live mode needs the connector executor, which this build does not have yet; use dry_run",
        ));
    }
    let mut actions = cf.kind.actions().to_vec();
    if cf.kind == ConnectorKind::Webhook {
        if cf.actions.is_empty() {
            problems.push(Problem::new(
                file,
                "actions",
                "a webhook connector must list the action kinds it carries",
            ));
        }
        for (i, a) in cf.actions.iter().enumerate() {
            match ActionKind::parse(a) {
                Some(k) => actions.push(k),
                None => problems.push(Problem::new(
                    file,
                    format!("actions[{i}]"),
                    format!("unknown action kind {a:?}"),
                )),
            }
        }
    } else if !cf.actions.is_empty() {
        problems.push(Problem::new(
            file,
            "actions",
            format!(
                "only webhook connectors list actions; {} implements {:?}",
                cf.kind,
                cf.kind
                    .actions()
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
            ),
        ));
    }
    match (base_url, problems.is_empty()) {
        (Some(base_url), true) => Ok(Connector {
            name: name.to_string(),
            kind: cf.kind,
            base_url,
            mode: cf.mode,
            actions,
        }),
        _ => Err(problems),
    }
}

/// `*.toml` files directly in `dir`, sorted. A missing directory is a problem.
pub fn toml_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, Problem> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        Problem::new(
            dir.display().to_string(),
            "",
            format!("cannot read directory: {e}"),
        )
    })?;
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<Registry, Vec<Problem>> {
        let dir = tempfile::tempdir().unwrap();
        for (n, t) in files {
            std::fs::write(dir.path().join(n), t).unwrap();
        }
        match Registry::load(dir.path()) {
            (r, p) if p.is_empty() => Ok(r),
            (_, p) => Err(p),
        }
    }

    #[test]
    fn validates_and_reports_file_key_reason() {
        let reg = load(&[(
            "crowdstrike.toml",
            "kind = \"crowdstrike\"\nbase_url = \"https://api.crowdstrike.com\"\n",
        )])
        .unwrap();
        assert!(reg.check("crowdstrike", ActionKind::IsolateHost).is_ok());
        assert!(
            reg.check("crowdstrike", ActionKind::RevokeSessions)
                .is_err()
        );
        assert!(reg.check("nope", ActionKind::IsolateHost).is_err());
        assert!(reg.check(BUILTIN, ActionKind::Enrich).is_ok());

        let errs = load(&[
            (
                "a.toml",
                "kind = \"okta\"\nbase_url = \"https://{alert.host}/x\"\n",
            ),
            (
                "b.toml",
                "kind = \"okta\"\nbase_url = \"https://x.okta.com\"\ntimeout = 3\n",
            ),
            (
                "c.toml",
                "kind = \"webhook\"\nbase_url = \"ftp://x\"\nactions = [\"explode\"]\n",
            ),
        ])
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("a.toml: base_url: must not contain templates")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("b.toml") && t.contains("timeout")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("c.toml: base_url: scheme")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("c.toml: actions[0]: unknown action kind")),
            "{text:?}"
        );
    }
}
