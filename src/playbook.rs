//! Playbooks (`playbooks/*.toml`): which alerts they match and which steps they propose.
//!
//! Owns: the playbook file format (unknown keys are errors), validation against the action kinds
//! and the connector registry, matching an alert, and expanding matched steps into (step,
//! target) proposals. Pure after loading.

use std::path::Path;

use regex::Regex;
use serde::Deserialize;

use crate::action::{ActionKind, OnFailure, Target, TargetKind};
use crate::alert::{AlertFields, EntityKind, Severity, technique_id};
use crate::config::{Problem, parse_toml_str};
use crate::connector::{Registry, stem, toml_files};
use crate::ingest::IngestFormat;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaybookFile {
    #[serde(default)]
    description: String,
    /// The detection family, for reports (`credential_abuse`, ...).
    #[serde(default)]
    family: String,
    #[serde(rename = "match")]
    matcher: MatchFile,
    #[serde(default)]
    steps: Vec<StepFile>,
    /// The detection rules this playbook answers, with their intel metadata (for reports).
    #[serde(default)]
    rules: Vec<crate::report::RuleMeta>,
    /// The team that owns this workflow (the service catalog's owner).
    #[serde(default)]
    owner_team: String,
    /// Where its escalations go: `chat:<channel>` or `group:<approver group>`.
    #[serde(default)]
    escalation_route: String,
    /// What this playbook is known not to handle (shown with its cases).
    #[serde(default)]
    known_limitations: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MatchFile {
    rule_ids: Vec<String>,
    rule_name_patterns: Vec<String>,
    min_severity: Option<String>,
    sources: Vec<String>,
    techniques: Vec<String>,
    tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    id: String,
    action: String,
    connector: String,
    /// Entity kind the targets come from (`host`, `user`, `ip`, ...), or `case`.
    target: String,
    #[serde(default)]
    parameters: toml::Table,
    #[serde(default)]
    on_failure: Option<OnFailure>,
    /// How long an approval request for this step may wait (minutes); a determining policy's
    /// `@approval_timeout_mins` may make it shorter.
    #[serde(default)]
    approval_timeout_mins: Option<u64>,
}

/// A validated playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub name: String,
    pub description: String,
    pub family: String,
    pub matcher: Matcher,
    pub steps: Vec<Step>,
    /// The detection rules this playbook answers, with their intel metadata (for reports).
    pub rules: Vec<crate::report::RuleMeta>,
    /// The team that owns this workflow; "" when the file names none.
    pub owner_team: String,
    /// Where its escalations are routed; `None` when the file names none (they are recorded
    /// only, as before).
    pub escalation_route: Option<EscalationRoute>,
    /// What this playbook is known not to handle.
    pub known_limitations: Vec<String>,
}

/// Where a playbook's escalations go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EscalationRoute {
    /// A chat channel of the configured chat platform (`chat:<channel>`).
    Chat(String),
    /// An approver group of the entity files (`group:<id>`): recorded as routed to it.
    Group(String),
}

impl EscalationRoute {
    /// Parses `chat:<channel>` or `group:<id>`.
    pub fn parse(s: &str) -> Result<EscalationRoute, String> {
        let bad = |v: &str| v.trim().is_empty() || v.trim() != v || v.chars().any(char::is_control);
        match s.split_once(':') {
            Some(("chat", c)) if !bad(c) => Ok(EscalationRoute::Chat(c.to_string())),
            Some(("group", g)) if !bad(g) => Ok(EscalationRoute::Group(g.to_string())),
            _ => Err(format!(
                "{s:?} is not chat:<channel> or group:<approver group>"
            )),
        }
    }

    /// The route as written in the playbook.
    pub fn as_string(&self) -> String {
        match self {
            EscalationRoute::Chat(c) => format!("chat:{c}"),
            EscalationRoute::Group(g) => format!("group:{g}"),
        }
    }
}

/// Which alerts a playbook is for: any selector matching, and every filter holding.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub rule_ids: Vec<String>,
    pub rule_name_patterns: Vec<Regex>,
    pub min_severity: Option<Severity>,
    pub sources: Vec<IngestFormat>,
    /// Technique ids; `T1059` also matches its sub-techniques (`T1059.001`).
    pub techniques: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub action: ActionKind,
    pub connector: String,
    /// `None` targets the case itself.
    pub target: Option<EntityKind>,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub on_failure: OnFailure,
    pub approval_timeout_mins: Option<u64>,
}

/// One step for one target, ready to become an action request.
#[derive(Debug, Clone)]
pub struct Proposal<'a> {
    pub playbook: &'a str,
    pub step: &'a Step,
    pub target: Target,
}

impl Matcher {
    /// The selectors (rule ids, rule name patterns, techniques, tags) say which detections the
    /// playbook is for: any one of them matching is enough. The filters (minimum severity,
    /// sources) must all hold.
    pub fn matches(&self, source: IngestFormat, a: &AlertFields) -> bool {
        let selected = self.rule_ids.contains(&a.rule.id)
            || self
                .rule_name_patterns
                .iter()
                .any(|re| re.is_match(&a.rule.name))
            || self.techniques.iter().any(|want| {
                a.techniques.iter().any(|t| {
                    t == want
                        || t.strip_prefix(want.as_str())
                            .is_some_and(|r| r.starts_with('.'))
                })
            })
            || self.tags.iter().any(|t| a.tags.contains(t));
        selected
            && self.min_severity.is_none_or(|m| a.severity >= m)
            && (self.sources.is_empty() || self.sources.contains(&source))
    }
}

impl Playbook {
    /// Expands the steps over the alert's entities: one proposal per step and target.
    pub fn propose<'a>(&'a self, case_id: &str, a: &AlertFields) -> Vec<Proposal<'a>> {
        let mut out = Vec::new();
        for step in &self.steps {
            match step.target {
                None => out.push(Proposal {
                    playbook: &self.name,
                    step,
                    target: Target {
                        kind: TargetKind::Case,
                        id: case_id.to_string(),
                    },
                }),
                Some(kind) => {
                    for e in a.entities_of(kind).filter(|e| !is_internal_ip(e)) {
                        let id = match step.action.target_kind() {
                            TargetKind::Indicator => e.key(),
                            _ => e.value.clone(),
                        };
                        out.push(Proposal {
                            playbook: &self.name,
                            step,
                            target: Target {
                                kind: step.action.target_kind(),
                                id,
                            },
                        });
                    }
                }
            }
        }
        out
    }
}

/// Internal addresses (RFC 1918, loopback, link-local, unique-local, CGNAT) are the
/// organisation's own hosts, never indicators to block at the EDR or the edge.
fn is_internal_ip(e: &crate::alert::Entity) -> bool {
    if e.kind != EntityKind::Ip {
        return false;
    }
    match e.value.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v)) => {
            v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || (v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64)
        }
        Ok(std::net::IpAddr::V6(v)) => {
            v.is_loopback()
                || v.is_unspecified()
                || (v.segments()[0] & 0xfe00) == 0xfc00
                || (v.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => false,
    }
}

/// Checks each playbook's escalation route against the rest of the configuration: a chat
/// route needs a configured chat platform, a group route a group of the entity files.
pub fn check_routes(
    dir: &Path,
    playbooks: &[Playbook],
    chat_configured: bool,
    knows_group: impl Fn(&str) -> bool,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for pb in playbooks {
        let file = dir.join(format!("{}.toml", pb.name)).display().to_string();
        match &pb.escalation_route {
            Some(EscalationRoute::Chat(c)) if !chat_configured => out.push(Problem::new(
                &file,
                "escalation_route",
                format!(
                    "routes escalations to chat channel {c:?} but no chat platform is configured"
                ),
            )),
            Some(EscalationRoute::Group(g)) if !knows_group(g) => out.push(Problem::new(
                &file,
                "escalation_route",
                format!("no group {g:?} in the policies' entity files"),
            )),
            _ => {}
        }
    }
    out
}

/// Loads and validates every playbook in `dir` against `connectors`; all problems at once.
pub fn load_dir(dir: &Path, connectors: &Registry) -> Result<Vec<Playbook>, Vec<Problem>> {
    let files = toml_files(dir).map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for path in files {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem::new(&file, "", format!("cannot read: {e}")));
                continue;
            }
        };
        match parse(&file, stem(&path), &text, connectors) {
            Ok(pb) => out.push(pb),
            Err(mut ps) => problems.append(&mut ps),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Parses and validates the text of one playbook file named `file` (the playbook is `name`).
/// [`load_dir`] calls this for each file; the fuzz target `playbook` calls it directly.
pub fn parse(
    file: &str,
    name: String,
    text: &str,
    connectors: &Registry,
) -> Result<Playbook, Vec<Problem>> {
    let pf = parse_toml_str::<PlaybookFile>(file, text).map_err(|p| vec![p])?;
    validate(file, name, pf, connectors)
}

fn validate(
    file: &str,
    name: String,
    pf: PlaybookFile,
    connectors: &Registry,
) -> Result<Playbook, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut p = |key: String, reason: String| problems.push(Problem::new(file, key, reason));
    let m = pf.matcher;
    let mut patterns = Vec::new();
    for (i, pat) in m.rule_name_patterns.iter().enumerate() {
        match Regex::new(pat) {
            Ok(re) => patterns.push(re),
            Err(e) => p(
                format!("match.rule_name_patterns[{i}]"),
                format!("not a regex: {e}"),
            ),
        }
    }
    let min_severity = match &m.min_severity {
        None => None,
        Some(s) => match Severity::parse(s) {
            Some(s) => Some(s),
            None => {
                p(
                    "match.min_severity".into(),
                    format!("unknown severity {s:?}"),
                );
                None
            }
        },
    };
    let mut sources = Vec::new();
    for (i, s) in m.sources.iter().enumerate() {
        match IngestFormat::parse_name(s) {
            Some(f) => sources.push(f),
            None => p(
                format!("match.sources[{i}]"),
                format!("unknown source {s:?}"),
            ),
        }
    }
    let mut techniques = Vec::new();
    for (i, t) in m.techniques.iter().enumerate() {
        match technique_id(t) {
            Some(t) => techniques.push(t),
            None => p(
                format!("match.techniques[{i}]"),
                format!("{t:?} is not an ATT&CK technique id"),
            ),
        }
    }
    if m.rule_ids.is_empty()
        && m.rule_name_patterns.is_empty()
        && m.techniques.is_empty()
        && m.tags.is_empty()
    {
        p(
            "match".into(),
            "needs at least one of rule_ids, rule_name_patterns, techniques or tags: a playbook matching every alert is a mistake".into(),
        );
    }
    if pf.steps.is_empty() {
        p("steps".into(), "a playbook needs at least one step".into());
    }
    for (key, why) in crate::report::check_rules(&pf.rules) {
        p(key, why);
    }
    let escalation_route = if pf.escalation_route.is_empty() {
        None
    } else {
        match EscalationRoute::parse(&pf.escalation_route) {
            Ok(r) => Some(r),
            Err(e) => {
                p("escalation_route".into(), e);
                None
            }
        }
    };
    for (i, l) in pf.known_limitations.iter().enumerate() {
        if l.trim().is_empty() {
            p(
                format!("known_limitations[{i}]"),
                "must not be empty".into(),
            );
        }
    }
    let mut steps = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for (i, s) in pf.steps.into_iter().enumerate() {
        let key = |k: &str| format!("steps[{i}].{k}");
        if s.approval_timeout_mins
            .is_some_and(|m| !(1..=crate::config::MAX_TIMEOUT_MINS).contains(&m))
        {
            p(
                key("approval_timeout_mins"),
                format!("must be from 1 to {}", crate::config::MAX_TIMEOUT_MINS),
            );
        }
        if s.id.trim().is_empty() {
            p(key("id"), "must not be empty".into());
        } else if !ids.insert(s.id.clone()) {
            p(key("id"), format!("duplicate step id {:?}", s.id));
        }
        let Some(action) = ActionKind::parse(&s.action) else {
            p(key("action"), format!("unknown action kind {:?}", s.action));
            continue;
        };
        if let Err(e) = connectors.check(&s.connector, action) {
            p(key("connector"), e.to_string());
        }
        let target = if s.target == "case" {
            if action.target_kind() != TargetKind::Case {
                p(
                    key("target"),
                    format!(
                        "{action} acts on a {}, not the case",
                        action.target_kind().as_str()
                    ),
                );
            }
            None
        } else {
            match EntityKind::parse(&s.target) {
                Some(k) if action.target_entities().contains(&k) => Some(k),
                Some(k) => {
                    let allowed: Vec<&str> = if action.target_kind() == TargetKind::Case {
                        vec!["case"]
                    } else {
                        action
                            .target_entities()
                            .iter()
                            .map(|k| k.as_str())
                            .collect()
                    };
                    p(
                        key("target"),
                        format!("{action} cannot target a {k}; use one of {allowed:?}"),
                    );
                    None
                }
                None => {
                    p(key("target"), format!("unknown target {:?}", s.target));
                    None
                }
            }
        };
        let parameters = match serde_json::to_value(&s.parameters) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        if let Err(why) = crate::schedule::block_expiry(action, &parameters) {
            let k = format!("parameters.{}", crate::schedule::EXPIRY_PARAMETER);
            p(key(&k), why);
        }
        steps.push(Step {
            id: s.id,
            action,
            connector: s.connector,
            target,
            parameters,
            on_failure: s.on_failure.unwrap_or_default(),
            approval_timeout_mins: s.approval_timeout_mins,
        });
    }
    if problems.is_empty() {
        Ok(Playbook {
            name,
            description: pf.description,
            family: pf.family,
            matcher: Matcher {
                rule_ids: m.rule_ids,
                rule_name_patterns: patterns,
                min_severity,
                sources,
                techniques,
                tags: m.tags,
            },
            steps,
            rules: pf.rules,
            owner_team: pf.owner_team,
            escalation_route,
            known_limitations: pf.known_limitations,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
        let (reg, problems) = Registry::load(&dir);
        assert!(problems.is_empty(), "{problems:?}");
        reg
    }

    fn load(text: &str) -> Result<Vec<Playbook>, Vec<Problem>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pb.toml"), text).unwrap();
        load_dir(dir.path(), &registry())
    }

    #[test]
    fn ownership_is_read_and_a_bad_route_is_a_problem() {
        let body = |route: &str| {
            format!(
                "owner_team = \"ir\"\nescalation_route = \"{route}\"\nknown_limitations = [\"no macOS\"]\n[match]\ntechniques = [\"T1059\"]\n[[steps]]\nid = \"a\"\naction = \"enrich\"\nconnector = \"cordon\"\ntarget = \"case\"\n"
            )
        };
        let pbs = load(&body("chat:C0IR")).unwrap();
        assert_eq!(pbs[0].owner_team, "ir");
        assert_eq!(
            pbs[0].escalation_route,
            Some(EscalationRoute::Chat("C0IR".into()))
        );
        assert_eq!(pbs[0].known_limitations, vec!["no macOS".to_string()]);
        for bad in ["pager:ir", "chat:", "group: ir", "ir"] {
            let errs = load(&body(bad)).unwrap_err();
            assert!(
                errs.iter()
                    .any(|e| e.to_string().contains("escalation_route")),
                "{bad}: {errs:?}"
            );
        }
        // Against the rest of the configuration: chat needs a platform, a group must exist.
        let dir = std::path::Path::new("playbooks");
        assert_eq!(check_routes(dir, &pbs, false, |_| true).len(), 1);
        assert!(check_routes(dir, &pbs, true, |_| true).is_empty());
        let grp = load(&body("group:soc")).unwrap();
        let errs = check_routes(dir, &grp, true, |g| g == "oncall");
        assert!(errs[0].to_string().contains("no group \"soc\""), "{errs:?}");
    }

    #[test]
    fn rejects_unknown_connector_action_and_target() {
        let errs = load(
            r#"
            [match]
            techniques = ["T1059"]
            [[steps]]
            id = "a"
            action = "isolate_host"
            connector = "sentinelone"
            target = "host"
            [[steps]]
            id = "b"
            action = "nuke_host"
            connector = "crowdstrike"
            target = "host"
            [[steps]]
            id = "c"
            action = "isolate_host"
            connector = "crowdstrike"
            target = "user"
            "#,
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("steps[0].connector: unknown connector \"sentinelone\"")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("steps[1].action: unknown action kind \"nuke_host\"")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("steps[2].target")),
            "{text:?}"
        );
    }

    #[test]
    fn typo_in_a_key_is_an_error() {
        let errs = load("[match]\ntechniques = [\"T1059\"]\n[[steps]]\nid = \"a\"\naction = \"enrich\"\nconnector = \"cordon\"\ntarget = \"case\"\nrequire_aproval = true\n").unwrap_err();
        assert!(
            errs[0].to_string().contains("require_aproval"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn technique_parent_matches_sub_technique() {
        let pbs = load("[match]\ntechniques = [\"T1059\"]\n[[steps]]\nid = \"a\"\naction = \"enrich\"\nconnector = \"cordon\"\ntarget = \"case\"\n").unwrap();
        let mut a = crate::alert::AlertFields {
            source_alert_id: "1".into(),
            time: chrono::Utc::now(),
            title: "t".into(),
            description: None,
            rule: crate::alert::Rule {
                id: "r".into(),
                name: "r".into(),
                version: None,
            },
            severity: Severity::High,
            confidence: 50,
            techniques: vec!["T1059.001".into()],
            tactics: vec![],
            intel_source: None,
            tags: vec![],
            entities: vec![],
            attributes: Default::default(),
            source_url: None,
        };
        assert!(pbs[0].matcher.matches(IngestFormat::Elastic, &a));
        a.techniques = vec!["T10590".into()];
        assert!(!pbs[0].matcher.matches(IngestFormat::Elastic, &a));
    }
}
