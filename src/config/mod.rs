//! Daemon configuration: `cordon.toml`, embedded defaults and environment overrides.
//!
//! Owns: the config schema (unknown keys are errors), the defaults from PRODUCT.md, the
//! `CORDON_DATA_DIR` / `CORDON_HTTP_ADDR` / `CORDON_GRPC_ADDR` overrides, and pure validation
//! that reports every problem at once as [`Problem`]s (file, key, reason). Loading the files the
//! config points at (playbooks, connectors, enrichment, policies) belongs to their modules.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::alert::{Entity, EntityKind};
use crate::ingest::IngestFormat;
use crate::secret::SecretRef;

mod chat;
mod validate;
pub use chat::*;

/// Longest approval deadline anywhere (config, policy annotation, playbook step): one year.
pub const MAX_TIMEOUT_MINS: u64 = 365 * 24 * 60;
/// Longest dedup or correlation window: ten years.
pub const MAX_WINDOW_SECS: u64 = 10 * 365 * 24 * 3600;

/// One validation problem: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl Problem {
    pub fn new(file: impl Into<String>, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            file: file.into(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

/// Reads and parses a TOML file into `T`, turning parse errors (including unknown keys) into a
/// [`Problem`] with the line and column.
pub fn parse_toml_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Problem> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problem::new(&file, "", format!("cannot read: {e}")))?;
    parse_toml_str(&file, &text)
}

pub fn parse_toml_str<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, Problem> {
    toml::from_str(text).map_err(|e| toml_problem(file, text, &e))
}

pub(crate) fn toml_problem(file: &str, text: &str, e: &toml::de::Error) -> Problem {
    let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
    let key = if line > 0 {
        format!("line {line}, column {col}")
    } else {
        String::new()
    };
    Problem::new(file, key, e.message().trim().to_string())
}

/// The line where the key at `path` (`http.max_body_byte`, `suppressions.0.rul`) is written:
/// the first `key =` line after its table header (the n-th `[[table]]` for arrays).
pub(crate) fn key_line(text: &str, path: &str) -> Option<usize> {
    let segs: Vec<&str> = path.split('.').collect();
    let (key, parents) = segs.split_last()?;
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    if let Some(table) = parents.first() {
        let nth = parents.get(1).and_then(|n| n.parse::<usize>().ok());
        let header = match nth {
            Some(_) => format!("[[{table}]]"),
            None => format!("[{table}]"),
        };
        let mut seen = 0;
        start = lines.iter().position(|l| {
            let hit = l.trim() == header;
            if hit {
                seen += 1;
            }
            hit && seen > nth.unwrap_or(0)
        })?;
    }
    lines.iter().enumerate().skip(start).find_map(|(i, l)| {
        let rest = l.trim_start().strip_prefix(key)?;
        rest.trim_start().starts_with('=').then_some(i + 1)
    })
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, col)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the store lives.
    pub data_dir: PathBuf,
    pub policies_dir: PathBuf,
    pub playbooks_dir: PathBuf,
    pub connectors_dir: PathBuf,
    /// Source mapping files (`<name>.toml`, one per source; `POST /v1/alerts/<name>`). A
    /// directory that does not exist holds none.
    pub sources_dir: PathBuf,
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    pub ingest: IngestConfig,
    pub cases: CasesConfig,
    pub correlation: CorrelationConfig,
    pub store: StoreConfig,
    pub shutdown: ShutdownConfig,
    pub policy: PolicyConfig,
    pub enrichment: EnrichmentConfig,
    pub suppressions: Vec<Suppression>,
    pub log: LogConfig,
    pub approvals: ApprovalsConfig,
    pub executor: ExecutorConfig,
    pub chat: ChatConfig,
    pub audit: AuditConfig,
    pub retention: RetentionConfig,
    pub learning: crate::engine::LearningConfig,

    /// What runs by the clock (`crate::schedule`).
    pub schedules: Vec<crate::schedule::ScheduleConfig>,

    /// `[[agents]]`: AI assistants that propose actions and add findings (see `agent`).
    pub agents: Vec<crate::agent::AgentConfig>,
    /// `[mcp]`: the MCP endpoint for agents.
    pub mcp: crate::agent::McpConfig,

    pub console: crate::console::ConsoleConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            policies_dir: PathBuf::from("./policies"),
            playbooks_dir: PathBuf::from("./playbooks"),
            connectors_dir: PathBuf::from("./connectors"),
            sources_dir: PathBuf::from("./sources"),
            http: HttpConfig::default(),
            grpc: GrpcConfig::default(),
            ingest: IngestConfig::default(),
            cases: CasesConfig::default(),
            correlation: CorrelationConfig::default(),
            store: StoreConfig::default(),
            shutdown: ShutdownConfig::default(),
            policy: PolicyConfig::default(),
            enrichment: EnrichmentConfig::default(),
            suppressions: Vec::new(),
            log: LogConfig::default(),
            approvals: ApprovalsConfig::default(),
            executor: ExecutorConfig::default(),
            chat: ChatConfig::default(),
            audit: AuditConfig::default(),
            retention: RetentionConfig::default(),
            learning: crate::engine::LearningConfig::default(),

            schedules: Vec::new(),

            agents: Vec::new(),
            mcp: crate::agent::McpConfig::default(),

            console: crate::console::ConsoleConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    pub addr: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Token for operator endpoints (`POST /v1/policies/reload`). Unset: loopback clients only.
    pub admin_token: Option<SecretRef>,
    /// A request's header must be complete within this long of its first byte (slow clients).
    pub header_read_timeout_secs: u64,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout_secs: u64,
    /// A request's body must arrive whole within this long of its header (`408 body_timeout`).
    pub body_read_timeout_secs: u64,
    /// Most connections open at once; lowered at start to fit under the descriptor limit.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:8080".into(),
            max_body_bytes: 1 << 20,
            admin_token: None,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_read_timeout_secs: 30,
            max_connections: 512,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GrpcConfig {
    pub addr: String,
    /// Largest request or response message (not tonic's 4 MiB default).
    pub max_message_bytes: usize,
    /// Server TLS; with `client_ca`, client certificates are verified (mTLS).
    pub tls: Option<GrpcTls>,
    /// Approvers who authenticate with a bearer token.
    pub approvers: Vec<ApproverToken>,
    /// Approvers who authenticate with a client certificate: its subject CN, or a DNS or email
    /// SAN, mapped to a user.
    pub cert_users: Vec<CertUser>,
    /// Callers allowed to `SubmitAlert`, by name. None configured: loopback callers only.
    pub ingest_tokens: BTreeMap<String, SecretRef>,
    /// Most connections open at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// A connection that sends no bytes for this long is closed. Live clients answer the
    /// HTTP/2 keepalive pings, so it must exceed `keepalive_interval_secs + keepalive_timeout_secs`.
    pub idle_timeout_secs: u64,
    /// HTTP/2 PING sent to each connection this often.
    pub keepalive_interval_secs: u64,
    /// A connection whose PING is not answered within this long is closed.
    pub keepalive_timeout_secs: u64,
    /// TCP keepalive idle time on accepted sockets.
    pub tcp_keepalive_secs: u64,
    /// Most HTTP/2 streams (calls, watches included) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Most requests served at once on one connection.
    pub concurrency_limit_per_connection: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            addr: "127.0.0.1:50051".into(),
            max_message_bytes: 1 << 20,
            tls: None,
            approvers: vec![],
            cert_users: vec![],
            ingest_tokens: BTreeMap::new(),
            max_connections: 128,
            idle_timeout_secs: 120,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
            tcp_keepalive_secs: 60,
            max_concurrent_streams: 64,
            concurrency_limit_per_connection: 32,
        }
    }
}

/// How alerts join open cases (`[correlation]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CorrelationConfig {
    pub mode: CorrelationMode,
    /// Entity kinds strong enough to join alerts of different rules (`shared_entity`).
    pub kinds: Vec<crate::alert::EntityKind>,
    /// A case stops growing here: the next alert opens a new case.
    pub max_alerts_per_case: usize,
    /// An entity seen in more than this many open cases within the window (a domain
    /// controller, a scanner) is too common to join on.
    pub max_open_cases_per_entity: usize,
}

/// `shared_entity`: an alert joins the most recent open case that shares one of its strong
/// entities within `cases.correlation_window_secs`, whatever the rule. `rule_and_entity`: the
/// same rule and the same first entity (cordon's behaviour before correlation by entities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrelationMode {
    SharedEntity,
    RuleAndEntity,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        use crate::alert::EntityKind;
        CorrelationConfig {
            mode: CorrelationMode::SharedEntity,
            kinds: vec![
                EntityKind::Host,
                EntityKind::User,
                EntityKind::CloudResource,
            ],
            max_alerts_per_case: 100,
            max_open_cases_per_entity: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct GrpcTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApproverToken {
    pub user: String,
    pub token: SecretRef,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CertUser {
    pub subject: String,
    pub user: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Bearer token per source (`cordon`, `splunk`, `elastic`, `sentinel`, `ocsf`, or a mapped
    /// source's name). A source with no token accepts only loopback clients.
    pub tokens: BTreeMap<String, SecretRef>,
    /// Sources that may send their token as `?token=` instead of `Authorization: Bearer`
    /// (tokens in URLs end up in proxy and access logs). Default: `splunk`, whose webhook alert
    /// action cannot set a header.
    pub query_token_sources: Vec<String>,
    /// Most alerts one request to a mapped source may carry (NDJSON or a JSON array).
    pub max_alerts_per_body: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            tokens: BTreeMap::new(),
            query_token_sources: vec!["splunk".into()],
            max_alerts_per_body: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CasesConfig {
    /// An alert with the same content fingerprint within this window is a duplicate.
    pub dedup_window_secs: u64,
    /// An alert with the same rule and primary entity within this window joins the open case.
    pub correlation_window_secs: u64,
    /// Entities of one alert that playbooks act on; the rest are recorded (the raw alert keeps
    /// them all) and the case is escalated once. Real alerts name a handful.
    pub max_entities_per_alert: usize,
    /// Action requests one case may hold; further proposals are recorded, not made, and the
    /// case is escalated once.
    pub max_actions_per_case: usize,
    /// Approval requests of one case posted to chat; the rest wait in `cordon approvals list`
    /// (and the web console), and the case is escalated once.
    pub max_chat_requests_per_case: usize,
    /// SLA per severity (`[cases.sla]`): an open case past it is escalated once.
    pub sla: crate::case::SlaConfig,
}

impl Default for CasesConfig {
    fn default() -> Self {
        CasesConfig {
            dedup_window_secs: 600,
            correlation_window_secs: 3600,
            max_entities_per_alert: 250,
            max_actions_per_case: 200,
            max_chat_requests_per_case: 25,
            sla: crate::case::SlaConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// sled's page cache. 32 MiB holds the hot records (open cases, pending requests); older ones
    /// are read through the OS page cache. Every MiB here is RSS: the load bench measured the
    /// daemon at ~210 MiB with 32 MiB and ~300 MiB with 128 MiB at a million records, at the
    /// same ingest rate (BENCHMARKS.md).
    pub cache_capacity_bytes: u64,
    /// `fdatasync` after each group commit (power-loss durability, not only process kills).
    pub sync_data: bool,
    /// Most events folded into one group commit.
    pub max_batch: usize,
    /// Scheduling priority (`nice`, -20..=19) the engine's thread, the store's writing thread and
    /// the gRPC server's threads ask for: a vote waits for these, so under an alert storm they
    /// run ahead of HTTP request parsing and connector calls (BENCHMARKS.md). Lowering it below
    /// the process's value needs root, `CAP_SYS_NICE` or systemd's `LimitNICE=`; when refused
    /// they run at the process's priority and the daemon says so once. 0 leaves them as they are.
    pub critical_nice: i32,
    /// A new store also compresses sled's pages with zstd, on top of the per-value packing every
    /// store does (`store::codec`): sled compresses every page it rewrites, about twice the
    /// daemon's CPU per alert (BENCHMARKS.md). Applies when the store is created; an existing
    /// store keeps what it was created with.
    pub compression: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_capacity_bytes: 32 << 20,
            sync_data: true,
            max_batch: 512,
            critical_nice: -10,
            compression: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ShutdownConfig {
    /// How long in-flight work may take to drain after SIGTERM/SIGINT.
    pub drain_timeout_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PolicyConfig {
    /// Reload policies when a file in `policies_dir` changes.
    pub watch: bool,
    /// A candidate set decided beside the set in force for every step (`[policy.shadow]`).
    pub shadow: Option<crate::policy::shadow::ShadowConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            watch: true,
            shadow: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EnrichmentConfig {
    /// Asset inventory (host → criticality, environment, owner, tags).
    pub assets: Option<PathBuf>,
    /// Identity context (user → role, privileged, groups).
    pub identities: Option<PathBuf>,
    /// Threat-intel indicators (value, type, confidence, source, expiry).
    pub intel: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApprovalsConfig {
    /// Deadline of an approval request on a high-severity alert, unless a determining policy's
    /// `@approval_timeout_mins` says otherwise. Critical alerts get half, medium twice, low and
    /// informational four times.
    pub default_timeout_mins: u64,
    /// Fraction of the deadline after which an escalation is raised (0 < f < 1).
    pub escalate_at_fraction: f64,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            default_timeout_mins: 60,
            escalate_at_fraction: 0.5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ExecutorConfig {
    /// Run approved actions through their connectors. With `false`, cordon decides and
    /// records but never acts (actions stay `approved`).
    pub enabled: bool,
    /// Actions executing at once (each target still gets one in-flight write at most).
    pub concurrency: usize,
    /// How often actions left `unknown` are probed again.
    pub reconcile_interval_secs: u64,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            enabled: true,
            concurrency: 16,
            reconcile_interval_secs: 30,
        }
    }
}

/// The audit store beyond the chain itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuditConfig {
    /// Signed checkpoints of the chain head (off unless set).
    pub checkpoints: Option<CheckpointsConfig>,
}

/// Retention (`cordon audit archive`): how long records of settled cases stay in the store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Records of cases closed (or suppressed, or learned) at least this many days ago, and
    /// written before then, are archived by `cordon audit archive` when no `--before` is given.
    pub closed_case_days: u64,
    /// Where `cordon audit archive` writes archive files when no `--output` is given.
    pub dir: Option<PathBuf>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            closed_case_days: 365,
            dir: None,
        }
    }
}

/// Signed audit checkpoints (see `checkpoint`).
#[derive(Debug, Clone, Deserialize)]
pub struct CheckpointsConfig {
    /// Where checkpoint files are written: outside `data_dir`, ideally shipped off the host.
    pub dir: PathBuf,
    /// The Ed25519 private key (PKCS#8 PEM), as a secret reference.
    pub signing_key: SecretRef,
    /// The log's name in every checkpoint (e.g. `soc.example.org/cordon`).
    pub origin: String,
    /// How often the head is signed when the chain has grown (and always at shutdown).
    #[serde(default = "checkpoint_interval_secs")]
    pub interval_secs: u64,
}

fn checkpoint_interval_secs() -> u64 {
    300
}

impl CheckpointsConfig {
    fn validate(&self, data_dir: &Path, p: &mut impl FnMut(&str, String)) {
        if !crate::checkpoint::valid_origin(&self.origin) {
            p(
                "audit.checkpoints.origin",
                "must be a log name: not empty, at most 256 bytes, no spaces or '+'".into(),
            );
        }
        if !(1..=86_400).contains(&self.interval_secs) {
            p(
                "audit.checkpoints.interval_secs",
                "must be between 1 and 86400".into(),
            );
        }
        let (dir, data) = (resolved(&self.dir), resolved(data_dir));
        if dir.starts_with(&data) {
            p(
                "audit.checkpoints.dir",
                format!(
                    "{} is inside data_dir {}: checkpoints must live outside the store they pin",
                    self.dir.display(),
                    data_dir.display()
                ),
            );
        }
    }
}

/// `p` made absolute, `.` and `..` resolved, and symbolic links resolved as far as it exists.
fn resolved(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                lexical.pop();
            }
            std::path::Component::CurDir => {}
            c => lexical.push(c),
        }
    }
    let mut rest = Vec::new();
    let mut base = lexical.as_path();
    loop {
        if let Ok(canon) = base.canonicalize() {
            return rest.iter().rev().fold(canon, |acc, c| acc.join(c));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return lexical,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// A maintenance window or known exception: alerts it matches make their case `suppressed`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Suppression {
    pub id: String,
    pub reason: String,
    pub owner: String,
    /// Rule id (exact) this applies to; unset = any rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// Entity `kind:value` (e.g. `host:ws-042`) this applies to; unset = any entity.
    #[serde(default)]
    pub entity: Option<String>,
    /// One-off window start/end (RFC 3339).
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
    #[serde(default)]
    pub end: Option<DateTime<Utc>>,
    /// Recurring window: a cron expression (seconds first, e.g. `0 0 2 * * Sun`) for the window
    /// start, and its length.
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub duration_mins: Option<u64>,
    /// After this the suppression no longer applies.
    pub expires: DateTime<Utc>,
}

impl Config {
    /// Loads `path`, or the embedded defaults when `None`, then applies environment overrides.
    /// Unknown keys do not stop the parse: every one comes back as a [`Problem`] next to the
    /// config, so they are reported together with every other problem. Only a file that is not
    /// TOML, or a value of the wrong type, makes this fail.
    pub fn load(path: Option<&Path>) -> Result<(Config, Vec<Problem>), Vec<Problem>> {
        let (mut cfg, unknown) = match path {
            Some(p) => {
                let file = p.display().to_string();
                let text = std::fs::read_to_string(p)
                    .map_err(|e| vec![Problem::new(&file, "", format!("cannot read: {e}"))])?;
                Config::parse(&file, &text).map_err(|e| vec![e])?
            }
            None => (Config::default(), vec![]),
        };
        cfg.apply_env(|k| std::env::var(k).ok());
        Ok((cfg, unknown))
    }

    /// Parses config text, collecting unknown keys as problems.
    pub fn parse(file: &str, text: &str) -> Result<(Config, Vec<Problem>), Problem> {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::parse(text).map_err(|e| toml_problem(file, text, &e))?;
        let cfg: Config = serde_ignored::deserialize(de, |path| {
            // An optional table shows as `?` in the path (`audit.checkpoints.?.dir`).
            let path = path.to_string().replace(".?", "");
            let key = match key_line(text, &path) {
                Some(line) => format!("line {line}: {path}"),
                None => path,
            };
            unknown.push(Problem::new(file, key, "unknown field"));
        })
        .map_err(|e| toml_problem(file, text, &e))?;
        Ok((cfg, unknown))
    }

    /// Applies `CORDON_DATA_DIR`, `CORDON_HTTP_ADDR` and `CORDON_GRPC_ADDR`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("CORDON_DATA_DIR").filter(|v| !v.is_empty()) {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("CORDON_HTTP_ADDR").filter(|v| !v.is_empty()) {
            self.http.addr = v;
        }
        if let Some(v) = get("CORDON_GRPC_ADDR").filter(|v| !v.is_empty()) {
            self.grpc.addr = v;
        }
    }

    pub fn http_addr(&self) -> Result<SocketAddr, Problem> {
        self.http
            .addr
            .parse()
            .map_err(|e| Problem::new("config", "http.addr", format!("{e}")))
    }

    pub fn grpc_addr(&self) -> Result<SocketAddr, Problem> {
        self.grpc
            .addr
            .parse()
            .map_err(|e| Problem::new("config", "grpc.addr", format!("{e}")))
    }
}

/// Parses `kind:value` into a normalized entity.
pub fn parse_entity_ref(s: &str) -> Option<Entity> {
    let (kind, value) = s.split_once(':')?;
    Entity::new(EntityKind::parse(kind)?, value)
}

#[cfg(test)]
mod tests;
