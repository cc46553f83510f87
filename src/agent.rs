//! AI agents: assistants that propose, while policy decides.
//!
//! Owns: the agent model — `[[agents]]` in the config (a name, a token referenced like every
//! other secret, per-agent limits) and its validation; the agent role (an agent token is never
//! an approver token, and the agent principal `Cordon::Agent` is written `agent:<name>` where
//! a playbook's name would stand); what an agent may send (a proposal: action kind, target,
//! connector, parameters, hypothesis, confidence and citations; a finding: summary, hypothesis,
//! ATT&CK mapping or predicted blast radius, always AI-generated, with citations) and the pure
//! checks on it: citation syntax, citations belonging to the case, the target being one of the
//! case's entities; and the per-agent call-rate window. Pure apart from that window's clock
//! reading: state changes are the engine's (`engine::propose`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::action::{ActionKind, Target, TargetKind};
use crate::case::Case;
use crate::config::Problem;
use crate::secret::{SecretRef, TokenHash};

/// How an agent stands where a playbook's name would: the principal `Cordon::Agent::"<name>"`
/// is carried as `agent:<name>` in an action request's `playbook` and `requester`.
pub const PRINCIPAL_PREFIX: &str = "agent:";

/// The playbook family an agent's proposal is decided as (the agent principal itself has no
/// attributes; policies tell agents apart by principal type).
pub const FAMILY: &str = "agent";

/// The agent's name if `playbook` (an action request's proposer) is an agent.
pub fn agent_of(playbook: &str) -> Option<&str> {
    playbook.strip_prefix(PRINCIPAL_PREFIX)
}

/// One `[[agents]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentConfig {
    /// The agent's id: `Cordon::Agent::"<name>"` in policies.
    pub name: String,
    /// Its bearer token (`{ env = … }`, `{ file = … }` or `{ sha256 = … }`).
    pub token: SecretRef,
    /// Calls (proposals, findings, MCP tool calls) per minute; more are refused.
    #[serde(default = "default_calls_per_minute")]
    pub max_calls_per_minute: u32,
    /// Proposals of this agent awaiting a decision in one case; more are refused.
    #[serde(default = "default_open_proposals")]
    pub max_open_proposals_per_case: u32,
}

fn default_calls_per_minute() -> u32 {
    60
}

fn default_open_proposals() -> u32 {
    5
}

/// `[mcp]`: the MCP endpoint on the HTTP listener (`/mcp`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct McpConfig {
    /// `Host` values the endpoint answers (DNS-rebinding guard); loopback names by default.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host:port`, `:*` for any port, or `null`) a request with an
    /// `Origin` header may come from. Empty (the default): any request carrying `Origin` is
    /// refused, so no web page can drive `/mcp` with a token it got hold of; MCP clients
    /// outside a browser send no `Origin`.
    pub allowed_origins: Vec<String>,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: Vec::new(),
        }
    }
}

/// Checks `[mcp]`: every problem at once.
pub fn validate_mcp(file: &str, mcp: &McpConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    if mcp.allowed_hosts.is_empty() {
        out.push(Problem::new(
            file,
            "mcp.allowed_hosts",
            "must name at least one host (an empty list refuses every request)",
        ));
    }
    for (i, h) in mcp.allowed_hosts.iter().enumerate() {
        if !valid_host(h) {
            out.push(Problem::new(
                file,
                format!("mcp.allowed_hosts[{i}]"),
                format!("{h:?} is not a host name or address, with an optional :port"),
            ));
        }
    }
    for (i, o) in mcp.allowed_origins.iter().enumerate() {
        if !valid_origin(o) {
            out.push(Problem::new(
                file,
                format!("mcp.allowed_origins[{i}]"),
                format!("{o:?} is not an origin: http(s)://host:port, http(s)://host:* or null"),
            ));
        }
    }
    out
}

/// A `Host` value: a DNS name, an IPv4 address or an IPv6 address (bare or in brackets),
/// with an optional port; nothing else (no spaces, user info, path or scheme).
fn valid_host(h: &str) -> bool {
    if h.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    let Ok(a) = h.parse::<http::uri::Authority>() else {
        return false;
    };
    if a.as_str() != h || h.contains('@') {
        return false;
    }
    let host = a.host();
    if let Some(v6) = host.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    valid_dns_name(host)
}

fn valid_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An allowed origin: `null`, or `http`/`https` `://` host, then `:port` or `:*` (a port must
/// be given: a bare host would match every port).
fn valid_origin(o: &str) -> bool {
    if o == "null" {
        return true;
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") {
        return false;
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    let port_ok = port == "*" || port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => valid_dns_name(host),
    };
    port_ok && host_ok
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks `[[agents]]` against itself, the approvers' tokens and every other token the daemon
/// takes (`others`: config key and reference — ingest, gRPC ingest, admin): every problem at
/// once. A token shared with another role would let one caller act as the other.
pub fn validate(
    file: &str,
    agents: &[AgentConfig],
    approvers: &[SecretRef],
    others: &[(String, &SecretRef)],
) -> Vec<Problem> {
    let mut out = Vec::new();
    let approver_hashes: Vec<TokenHash> = approvers
        .iter()
        .filter_map(|r| TokenHash::from_ref(r).ok())
        .collect();
    let other_hashes: Vec<(&str, TokenHash)> = others
        .iter()
        .filter_map(|(k, r)| TokenHash::from_ref(r).ok().map(|h| (k.as_str(), h)))
        .collect();
    let mut names = BTreeSet::new();
    let mut hashes: Vec<TokenHash> = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let key = |k: &str| format!("agents[{i}].{k}");
        if !valid_name(&a.name) {
            out.push(Problem::new(
                file,
                key("name"),
                "must be 1 to 64 of a-z, 0-9, - and _",
            ));
        } else if !names.insert(a.name.clone()) {
            out.push(Problem::new(
                file,
                key("name"),
                format!("agent {:?} is configured twice", a.name),
            ));
        }
        match TokenHash::from_ref(&a.token) {
            Err(e) => out.push(Problem::new(file, key("token"), e.to_string())),
            Ok(h) => {
                if approver_hashes.contains(&h) {
                    out.push(Problem::new(
                        file,
                        key("token"),
                        "is also an approver token: an agent token can never approve",
                    ));
                }
                for (other, _) in other_hashes.iter().filter(|(_, o)| *o == h) {
                    out.push(Problem::new(
                        file,
                        key("token"),
                        format!("is also {other}: an agent needs a token of its own"),
                    ));
                }
                if hashes.contains(&h) {
                    out.push(Problem::new(
                        file,
                        key("token"),
                        "is another agent's token: each agent needs its own",
                    ));
                }
                hashes.push(h);
            }
        }
        if !(1..=10_000).contains(&a.max_calls_per_minute) {
            out.push(Problem::new(
                file,
                key("max_calls_per_minute"),
                "must be from 1 to 10000",
            ));
        }
        if !(1..=1000).contains(&a.max_open_proposals_per_case) {
            out.push(Problem::new(
                file,
                key("max_open_proposals_per_case"),
                "must be from 1 to 1000",
            ));
        }
    }
    out
}

/// Why an agent's call is refused. Every refusal changes nothing but its audit record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error(
        "a proposal needs at least one citation of its case (alert:<id>, fact:<kind>:<value> or record:<seq>)"
    )]
    NoCitations,
    #[error("citation {0:?} is not alert:<id>, fact:<kind>:<value> or record:<seq>")]
    BadCitation(String),
    #[error("citation {citation:?} is not part of case {case_id}")]
    ForeignCitation { citation: String, case_id: String },
    #[error("unknown action kind {0:?}")]
    UnknownAction(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    BadTarget(String),
    #[error("no case {0}")]
    CaseNotFound(String),
    #[error("case {0} is closed or suppressed; nothing more can be proposed on it")]
    CaseNotOpen(String),
    #[error(
        "agent {agent} already has {max} open proposal(s) on case {case_id} (max_open_proposals_per_case)"
    )]
    TooManyOpen {
        agent: String,
        case_id: String,
        max: u32,
    },
    #[error("agent {agent} is over its limit of {max} calls per minute; retry later")]
    RateLimited { agent: String, max: u32 },
    #[error("agent credentials cannot {0}: agents propose, people decide")]
    NotForAgents(&'static str),
}

/// A citation: what in the case supports a proposal or finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Citation {
    /// An alert of the case.
    Alert(String),
    /// An enrichment fact about an entity (`kind:value`) of one of the case's alerts.
    Fact(String),
    /// An audit record linked to the case.
    Record(u64),
}

impl Citation {
    pub fn parse(s: &str) -> Result<Citation, AgentError> {
        let bad = || AgentError::BadCitation(crate::ingest::clip(s, 256).into_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "alert" if !rest.is_empty() => Ok(Citation::Alert(rest.to_string())),
            "fact"
                if rest
                    .split_once(':')
                    .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty()) =>
            {
                Ok(Citation::Fact(rest.to_string()))
            }
            "record" => rest.parse().map(Citation::Record).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Citation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Citation::Alert(id) => write!(f, "alert:{id}"),
            Citation::Fact(e) => write!(f, "fact:{e}"),
            Citation::Record(seq) => write!(f, "record:{seq}"),
        }
    }
}

fn citations(list: &[String]) -> Result<Vec<Citation>, AgentError> {
    if list.is_empty() {
        return Err(AgentError::NoCitations);
    }
    if list.len() > 64 {
        return Err(AgentError::Invalid(
            "at most 64 citations per call".to_string(),
        ));
    }
    list.iter().map(|c| Citation::parse(c)).collect()
}

fn text(field: &str, v: &str, max: usize) -> Result<(), AgentError> {
    if v.trim().is_empty() {
        return Err(AgentError::Invalid(format!("{field} is required")));
    }
    if v.len() > max {
        return Err(AgentError::Invalid(format!(
            "{field} is longer than {max} bytes"
        )));
    }
    Ok(())
}

/// A proposal as an agent sends it (HTTP and MCP JSON; the gRPC message has the same fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalInput {
    /// An action kind (`isolate_host`, `create_ticket`, …).
    pub action: String,
    /// One of the case's entities (`ws-042` or `host:ws-042`); empty for case actions.
    #[serde(default)]
    pub target: String,
    /// The connector that would carry it out (`crowdstrike`, `cordon` for the built-ins…).
    pub connector: String,
    #[serde(default)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub hypothesis: String,
    /// 0..100.
    pub confidence: u32,
    pub citations: Vec<String>,
}

/// A proposal that passed the checks that need nothing but itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub kind: ActionKind,
    pub target: String,
    pub connector: String,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub hypothesis: String,
    pub confidence: u8,
    pub citations: Vec<Citation>,
}

fn confidence(c: u32) -> Result<u8, AgentError> {
    u8::try_from(c)
        .ok()
        .filter(|c| *c <= 100)
        .ok_or_else(|| AgentError::Invalid(format!("confidence {c} is not from 0 to 100")))
}

impl ProposalInput {
    pub fn check(self) -> Result<Proposal, AgentError> {
        let kind = ActionKind::parse(&self.action).ok_or_else(|| {
            AgentError::UnknownAction(crate::ingest::clip(&self.action, 64).into_owned())
        })?;
        text("hypothesis", &self.hypothesis, 4096)?;
        text("connector", &self.connector, 128)?;
        if self.target.len() > 512 {
            return Err(AgentError::BadTarget(
                "target is longer than 512 bytes".into(),
            ));
        }
        let size = serde_json::to_string(&self.parameters).map_or(0, |s| s.len());
        if size > 16 * 1024 {
            return Err(AgentError::Invalid(
                "parameters are larger than 16 KiB".into(),
            ));
        }
        // The parameters a playbook step may not have, an agent may not propose either.
        crate::schedule::block_expiry(kind, &self.parameters).map_err(AgentError::Invalid)?;
        Ok(Proposal {
            kind,
            target: self.target,
            connector: self.connector,
            parameters: self.parameters,
            hypothesis: self.hypothesis,
            confidence: confidence(self.confidence)?,
            citations: citations(&self.citations)?,
        })
    }
}

/// What a finding says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Summary,
    Hypothesis,
    AttackMapping,
    BlastRadius,
}

impl FindingKind {
    pub fn parse(s: &str) -> Option<FindingKind> {
        match s {
            "summary" => Some(FindingKind::Summary),
            "hypothesis" => Some(FindingKind::Hypothesis),
            "attack_mapping" => Some(FindingKind::AttackMapping),
            "blast_radius" => Some(FindingKind::BlastRadius),
            _ => None,
        }
    }
}

/// A finding as an agent sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingInput {
    /// `summary`, `hypothesis`, `attack_mapping` or `blast_radius`.
    pub kind: String,
    pub text: String,
    /// ATT&CK technique ids (`T1059`, `T1059.001`), for `attack_mapping`.
    #[serde(default)]
    pub techniques: Vec<String>,
    #[serde(default)]
    pub confidence: u32,
    pub citations: Vec<String>,
}

/// A finding, as stored: always marked AI-generated, with its agent and citations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub agent: String,
    pub kind: FindingKind,
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub techniques: Vec<String>,
    pub confidence: u8,
    pub citations: Vec<String>,
    pub ai_generated: bool,
    pub at: DateTime<Utc>,
}

impl FindingInput {
    /// The finding, and its citations parsed (to be checked against the case).
    pub fn check(
        self,
        agent: &str,
        at: DateTime<Utc>,
    ) -> Result<(Finding, Vec<Citation>), AgentError> {
        let kind = FindingKind::parse(&self.kind).ok_or_else(|| {
            AgentError::Invalid(format!(
                "finding kind {:?} is not summary, hypothesis, attack_mapping or blast_radius",
                crate::ingest::clip(&self.kind, 64)
            ))
        })?;
        text("text", &self.text, 16 * 1024)?;
        for t in &self.techniques {
            let ok = t.len() <= 9
                && t.starts_with('T')
                && t[1..].split_once('.').map_or(
                    t[1..].len() == 4 && t[1..].bytes().all(|b| b.is_ascii_digit()),
                    |(a, b)| {
                        a.len() == 4
                            && b.len() == 3
                            && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
                    },
                );
            if !ok {
                return Err(AgentError::Invalid(format!(
                    "technique {:?} is not an ATT&CK id (T1234 or T1234.001)",
                    crate::ingest::clip(t, 32)
                )));
            }
        }
        if kind == FindingKind::AttackMapping && self.techniques.is_empty() {
            return Err(AgentError::Invalid(
                "an attack_mapping finding names at least one technique".into(),
            ));
        }
        let cites = citations(&self.citations)?;
        Ok((
            Finding {
                agent: agent.to_string(),
                kind,
                text: self.text,
                techniques: self.techniques,
                confidence: confidence(self.confidence)?,
                citations: cites.iter().map(ToString::to_string).collect(),
                ai_generated: true,
                at,
            },
            cites,
        ))
    }
}

/// What approvers are shown of an agent-proposed request (stored with the request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalNote {
    pub agent: String,
    pub hypothesis: String,
    pub confidence: u8,
    pub citations: Vec<String>,
    pub ai_generated: bool,
}

/// What the case holds that citations may name.
pub struct CaseEvidence<'a> {
    pub case: &'a Case,
    /// Entity keys (`host:ws-042`) that enrichment has a fact about, in the case's alerts.
    pub facts: BTreeSet<String>,
}

/// Every citation must be part of the case: one of its alerts, a fact about one of its
/// entities, or an audit record linked to it (`record_case` gives a record's case, `None` for
/// a record that does not exist).
pub fn check_citations(
    ev: &CaseEvidence<'_>,
    cites: &[Citation],
    record_case: &mut dyn FnMut(u64) -> Option<Option<String>>,
) -> Result<(), AgentError> {
    let case_id = &ev.case.case_id;
    for c in cites {
        let ok = match c {
            Citation::Alert(id) => ev.case.alert_ids.iter().any(|a| a == id),
            Citation::Fact(entity) => ev.facts.contains(entity),
            Citation::Record(seq) => {
                record_case(*seq).is_some_and(|rc| rc.as_deref() == Some(case_id.as_str()))
            }
        };
        if !ok {
            return Err(AgentError::ForeignCitation {
                citation: crate::ingest::clip(&c.to_string(), 256).into_owned(),
                case_id: case_id.clone(),
            });
        }
    }
    Ok(())
}

/// The target a proposal names, which must be the case itself (case actions) or one of the
/// case's entities of a kind the action takes; canonical as a playbook would write it.
pub fn resolve_target(kind: ActionKind, hint: &str, case: &Case) -> Result<Target, AgentError> {
    let tk = kind.target_kind();
    if tk == TargetKind::Case {
        if hint.is_empty() || hint == case.case_id || hint == format!("case:{}", case.case_id) {
            return Ok(Target {
                kind: TargetKind::Case,
                id: case.case_id.clone(),
            });
        }
        return Err(AgentError::BadTarget(format!(
            "{kind} acts on the case itself; leave target empty"
        )));
    }
    let allowed = kind.target_entities();
    let found = case
        .entities
        .iter()
        .filter(|e| allowed.contains(&e.kind))
        .find(|e| hint == e.value || hint == e.key());
    match found {
        Some(e) => Ok(Target {
            kind: tk,
            id: if tk == TargetKind::Indicator {
                e.key()
            } else {
                e.value.clone()
            },
        }),
        None => Err(AgentError::BadTarget(format!(
            "target {:?} is not an entity of case {} that {kind} can act on",
            crate::ingest::clip(hint, 256),
            case.case_id
        ))),
    }
}

/// A configured agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub name: String,
    token: TokenHash,
    pub max_calls_per_minute: u32,
    pub max_open_proposals_per_case: u32,
}

/// The configured agents (tokens as hashes only) and their call-rate windows.
#[derive(Debug, Default)]
pub struct Agents {
    list: Vec<Agent>,
    /// Per agent: the minute (epoch minutes) and the calls made in it.
    windows: Mutex<BTreeMap<String, (i64, u32)>>,
}

impl Agents {
    /// From validated config; an entry whose token does not resolve is left out (validation
    /// has already reported it).
    pub fn from_config(agents: &[AgentConfig]) -> Agents {
        Agents {
            list: agents
                .iter()
                .filter_map(|a| {
                    Some(Agent {
                        name: a.name.clone(),
                        token: TokenHash::from_ref(&a.token).ok()?,
                        max_calls_per_minute: a.max_calls_per_minute,
                        max_open_proposals_per_case: a.max_open_proposals_per_case,
                    })
                })
                .collect(),
            windows: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The agent whose token this is (constant-time per token).
    pub fn identify(&self, token: &str) -> Option<&Agent> {
        self.list.iter().find(|a| a.token.matches(token))
    }

    pub fn get(&self, name: &str) -> Option<&Agent> {
        self.list.iter().find(|a| a.name == name)
    }

    /// Counts a call against the agent's per-minute budget; over it, the call is refused.
    pub fn admit(&self, agent: &Agent, now: DateTime<Utc>) -> Result<(), AgentError> {
        let minute = now.timestamp().div_euclid(60);
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let slot = w.entry(agent.name.clone()).or_insert((minute, 0));
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        if slot.1 >= agent.max_calls_per_minute {
            return Err(AgentError::RateLimited {
                agent: agent.name.clone(),
                max: agent.max_calls_per_minute,
            });
        }
        slot.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Entity, EntityKind, Severity};

    fn case() -> Case {
        serde_json::from_value(serde_json::json!({
            "case_id": "C1", "state": "recommended", "title": "t", "rule_id": "r",
            "severity": "high", "alert_ids": ["A1"], "duplicate_count": 0,
            "entities": [{"kind": "host", "value": "ws-1"}, {"kind": "ip", "value": "8.8.8.8"}],
            "action_ids": [], "history": [],
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn citations_parse_and_must_belong_to_the_case() {
        assert_eq!(
            Citation::parse("alert:A1").unwrap(),
            Citation::Alert("A1".into())
        );
        assert_eq!(Citation::parse("record:7").unwrap(), Citation::Record(7));
        for bad in ["", "alert:", "record:x", "fact:host", "note:1", "A1"] {
            assert!(Citation::parse(bad).is_err(), "{bad}");
        }
        let c = case();
        let ev = CaseEvidence {
            case: &c,
            facts: ["host:ws-1".to_string()].into(),
        };
        let mut rc = |seq: u64| match seq {
            1 => Some(Some("C1".to_string())),
            2 => Some(Some("C2".to_string())),
            3 => Some(None),
            _ => None,
        };
        let ok = [
            Citation::Alert("A1".into()),
            Citation::Fact("host:ws-1".into()),
            Citation::Record(1),
        ];
        assert!(check_citations(&ev, &ok, &mut rc).is_ok());
        for bad in [
            Citation::Alert("A2".into()),
            Citation::Fact("host:ws-2".into()),
            Citation::Record(2),
            Citation::Record(3),
            Citation::Record(99),
        ] {
            assert!(
                matches!(
                    check_citations(&ev, std::slice::from_ref(&bad), &mut rc),
                    Err(AgentError::ForeignCitation { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            ProposalInput {
                action: "enrich".into(),
                connector: "cordon".into(),
                hypothesis: "h".into(),
                ..Default::default()
            }
            .check(),
            Err(AgentError::NoCitations)
        );
    }

    #[test]
    fn targets_are_entities_of_the_case() {
        let c = case();
        let t = resolve_target(ActionKind::IsolateHost, "ws-1", &c).unwrap();
        assert_eq!(t.id, "ws-1");
        let t = resolve_target(ActionKind::BlockIoc, "8.8.8.8", &c).unwrap();
        assert_eq!(t.id, "ip:8.8.8.8");
        assert!(resolve_target(ActionKind::IsolateHost, "ws-2", &c).is_err());
        assert!(resolve_target(ActionKind::IsolateHost, "8.8.8.8", &c).is_err());
        assert_eq!(
            resolve_target(ActionKind::CreateTicket, "", &c).unwrap().id,
            "C1"
        );
        let _ = (Entity::new(EntityKind::Host, "x"), Severity::High);
    }

    #[test]
    fn agents_config_is_validated_whole() {
        let text = format!(
            "[[agents]]\nname = \"Bad Name\"\ntoken = {{ sha256 = \"{t}\" }}\nmax_calls_per_minute = 0\nurgency = 1\n\
             [[grpc.approvers]]\nuser = \"alice\"\ntoken = {{ sha256 = \"{t}\" }}\n[mcp]\nallowed_host = []\n",
            t = hex::encode([7u8; 32])
        );
        let (cfg, unknown) = crate::config::Config::parse("cordon.toml", &text).unwrap();
        let keys: Vec<_> = unknown.iter().map(|p| p.key.as_str()).collect();
        assert!(
            keys.iter().any(|k| k.ends_with("agents.0.urgency")),
            "{keys:?}"
        );
        assert!(
            keys.iter().any(|k| k.ends_with("mcp.allowed_host")),
            "{keys:?}"
        );
        let problems: Vec<String> = cfg
            .validate("cordon.toml")
            .iter()
            .map(|p| format!("{}: {}", p.key, p.reason))
            .collect();
        for want in [
            "agents[0].name",
            "agents[0].token: is also an approver token",
            "agents[0].max_calls_per_minute",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{want}: {problems:?}"
            );
        }
    }

    #[test]
    fn an_agent_token_shared_with_any_other_role_and_a_bad_mcp_section_are_problems() {
        let t = |b: u8| hex::encode([b; 32]);
        let text = format!(
            "[http]\nadmin_token = {{ sha256 = \"{c}\" }}\n\
             [ingest.tokens]\nsplunk = {{ sha256 = \"{a}\" }}\n\
             [grpc.ingest_tokens]\nsoar = {{ sha256 = \"{b}\" }}\n\
             [[agents]]\nname = \"one\"\ntoken = {{ sha256 = \"{a}\" }}\n\
             [[agents]]\nname = \"two\"\ntoken = {{ sha256 = \"{b}\" }}\n\
             [[agents]]\nname = \"three\"\ntoken = {{ sha256 = \"{c}\" }}\n\
             [[agents]]\nname = \"four\"\ntoken = {{ sha256 = \"{d}\" }}\n\
             [mcp]\nallowed_hosts = [\"localhost\", \"evil .com\", \"\", \"a@b\", \"[::1]:8080\", \"::1\", \"mcp.example.com:443\"]\n\
             allowed_origins = [\"https://app.example.com:443\", \"http://localhost:*\", \"null\", \"https://app.example.com\", \"ftp://x:1\", \"*\"]\n",
            a = t(1),
            b = t(2),
            c = t(3),
            d = t(4),
        );
        let (cfg, unknown) = crate::config::Config::parse("cordon.toml", &text).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        let problems: Vec<String> = cfg
            .validate("cordon.toml")
            .iter()
            .map(|p| format!("{}: {}", p.key, p.reason))
            .collect();
        let want = [
            "agents[0].token: is also ingest.tokens.splunk",
            "agents[1].token: is also grpc.ingest_tokens.soar",
            "agents[2].token: is also http.admin_token",
            "mcp.allowed_hosts[1]",
            "mcp.allowed_hosts[2]",
            "mcp.allowed_hosts[3]",
            "mcp.allowed_origins[3]",
            "mcp.allowed_origins[4]",
            "mcp.allowed_origins[5]",
        ];
        for w in want {
            assert!(
                problems.iter().any(|p| p.starts_with(w)),
                "{w}: {problems:?}"
            );
        }
        assert_eq!(problems.len(), want.len(), "{problems:?}");

        let (cfg, _) =
            crate::config::Config::parse("cordon.toml", "[mcp]\nallowed_hosts = []\n").unwrap();
        let problems = cfg.validate("cordon.toml");
        assert!(
            problems.iter().any(|p| p.key == "mcp.allowed_hosts"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_rate_window_refuses_past_the_limit() {
        let agents = Agents::from_config(&[AgentConfig {
            name: "a".into(),
            token: SecretRef::Sha256(hex::encode([0u8; 32])),
            max_calls_per_minute: 2,
            max_open_proposals_per_case: 1,
        }]);
        let a = agents.get("a").unwrap().clone();
        let t0 = DateTime::from_timestamp(600, 0).unwrap();
        assert!(agents.admit(&a, t0).is_ok());
        assert!(agents.admit(&a, t0).is_ok());
        assert!(matches!(
            agents.admit(&a, t0),
            Err(AgentError::RateLimited { .. })
        ));
        assert!(agents.admit(&a, t0 + chrono::Duration::seconds(60)).is_ok());
    }
}
