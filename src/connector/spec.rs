//! The connector file format (`connectors/*.toml`) and its validation.
//!
//! Owns: every key a connector file may hold (unknown keys are errors), the request templates
//! and the closed set of placeholders they may use, and the checks that make a file safe to
//! run: a static destination, one target per call, a declared idempotency slot that the
//! templates really fill, a read-only probe wherever a blind resend would not be harmless, and
//! secrets only by reference.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::action::ActionKind;
use crate::config::Problem;
use crate::secret::SecretRef;

use super::ConnectorKind;
use super::query::FilterLanguage;

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
    /// Scheme, host and port are fixed here; templates fill only paths, queries and bodies.
    pub base_url: String,
    #[serde(default)]
    pub mode: Mode,
    /// The vendor's filter language (`fql`, `odata`, `scim`, `jql`; default `none`): which
    /// query parameters hold filter expressions, and how a value is kept a literal in them
    /// (escaped, or refused when it holds a character the language cannot escape).
    #[serde(default)]
    pub filter_language: FilterLanguage,
    /// Values the vendor reads as something other than a name wherever they appear in a URL
    /// (Okta's `me` is the calling token's own user); compared case-insensitively, refused.
    #[serde(default)]
    pub reserved_values: Vec<String>,
    /// Per-request timeout.
    #[serde(default = "d_timeout_ms")]
    pub timeout_ms: u64,
    /// An explicit HTTP(S) proxy; without one, no proxy is used (environment variables are
    /// ignored, so the destination is exactly what this file says).
    #[serde(default)]
    pub proxy: Option<String>,
    #[serde(default)]
    pub auth: AuthSpec,
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default)]
    pub circuit_breaker: BreakerSpec,
    /// Response headers that carry the vendor's request or trace id (recorded as evidence).
    #[serde(default)]
    pub request_id_headers: Vec<String>,
    /// Vendor names for indicator kinds (`ip`, `ip6`, `domain`, `url`, `md5`, `sha1`,
    /// `sha256`), used as `{ioc.type}`. A kind without an entry cannot be blocked here.
    #[serde(default)]
    pub ioc_types: BTreeMap<String, String>,
    /// Default values for `{param.NAME}`; a playbook step's `parameters` override them.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Lookups that turn cordon's target (a host name, a login) into the vendor's id, by
    /// target kind (`host`, `account`, `indicator`, `cloud_resource`).
    #[serde(default)]
    pub resolve: BTreeMap<String, Lookup>,
    /// One table per action kind this connector performs.
    #[serde(default)]
    pub actions: BTreeMap<String, ActionSpec>,
}

fn d_timeout_ms() -> u64 {
    10_000
}

/// How cordon authenticates to the vendor. Secrets are references (env or file), never values.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSpec {
    #[default]
    None,
    /// OAuth2 client credentials; the token is cached until shortly before it expires and
    /// fetched again after a 401.
    Oauth2ClientCredentials {
        /// A static URL (it may be on another host than `base_url`, as Microsoft's is).
        token_url: String,
        client_id: SecretRef,
        client_secret: SecretRef,
        #[serde(default)]
        scope: Option<String>,
    },
    /// `Authorization: Bearer <token>`.
    Bearer { token: SecretRef },
    /// A header carrying an API key, e.g. Okta's `Authorization: SSWS <token>`.
    Header {
        name: String,
        #[serde(default)]
        prefix: String,
        value: SecretRef,
    },
    /// HTTP basic, e.g. Jira's `email:api_token`.
    Basic {
        username: String,
        password: SecretRef,
    },
}

impl AuthSpec {
    /// `(key, reference)` of every secret, for resolution and error reporting.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        match self {
            AuthSpec::None => vec![],
            AuthSpec::Oauth2ClientCredentials {
                client_id,
                client_secret,
                ..
            } => vec![
                ("auth.client_id", client_id),
                ("auth.client_secret", client_secret),
            ],
            AuthSpec::Bearer { token } => vec![("auth.token", token)],
            AuthSpec::Header { value, .. } => vec![("auth.value", value)],
            AuthSpec::Basic { password, .. } => vec![("auth.password", password)],
        }
    }
}

/// Retries: exponential backoff with full jitter, bounded, honouring the vendor's own signal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySpec {
    /// Calls per request before the step gives up (the first call included).
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// A vendor asking to wait longer than this fails the step instead of parking it.
    pub max_wait_secs: u64,
    /// Headers holding a UNIX epoch (seconds) to wait until, e.g. CrowdStrike's
    /// `X-Ratelimit-Retryafter` or Okta's `X-Rate-Limit-Reset`. `Retry-After` (seconds or an
    /// HTTP date) is always honoured.
    pub epoch_headers: Vec<String>,
    /// After a write whose outcome is unknown, wait this long before probing, so the vendor's
    /// own state has settled.
    pub unknown_settle_ms: u64,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: 5,
            base_delay_ms: 500,
            max_delay_ms: 30_000,
            max_wait_secs: 300,
            epoch_headers: vec![],
            unknown_settle_ms: 2_000,
        }
    }
}

/// Per-connector circuit breaker: after `failures` consecutive failed calls, no call is made
/// for `open_secs`; then one trial call decides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSpec {
    pub failures: u32,
    pub open_secs: u64,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            failures: 5,
            open_secs: 30,
        }
    }
}

/// One HTTP request template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub method: String,
    /// Starts with `/`; appended to `base_url`. Placeholder values are percent-encoded.
    pub path: String,
    /// JSON body; placeholders are filled inside string values only.
    #[serde(default)]
    pub body: Option<toml::Value>,
    /// Form body (`application/x-www-form-urlencoded`).
    #[serde(default)]
    pub form: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A read-only lookup whose answer fills `{vendor.NAME}` placeholders. The target must
/// resolve to exactly one vendor object (see `connector::resolve`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    #[serde(flatten)]
    pub request: RequestSpec,
    /// JSON pointer to the list of matching objects in a search answer. With it, `capture`
    /// pointers are read from the one match; no match fails, several are refused and
    /// escalated unless `tie_break` picks one. Without it the answer is the one object (a
    /// fetch by unique key).
    #[serde(default)]
    pub list: Option<String>,
    /// How to choose among several matches; without it, several matches are refused.
    #[serde(default)]
    pub tie_break: Option<TieBreak>,
    /// Name → JSON pointer into the (matching) object. A missing value means the target is
    /// unknown to the vendor, and the step fails closed.
    pub capture: BTreeMap<String, String>,
    /// JSON pointers into the object found (the one match). When given, the object is taken
    /// only if the value at one of them equals the target (ASCII case-insensitively: logins,
    /// UPNs and host names are); otherwise it is refused like an ambiguous answer. For a lookup
    /// the vendor answers more loosely than the target names it: Okta's `/api/v1/users/{x}`
    /// also finds a user by a login's short name (the part before `@`), so an alert naming
    /// `alice` would otherwise act on `alice@example.com`, whom it did not name.
    #[serde(default)]
    pub names_target: Vec<String>,
}

/// An explicit rule for choosing one of several matches; every candidate is recorded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TieBreak {
    /// JSON pointer (in each match) to an RFC 3339 time: the one match with the strictly
    /// newest time is chosen (the most recently seen device); a tie or a missing time
    /// decides nothing.
    pub newest: String,
}

/// How a probe's answer maps to the desired state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    #[serde(flatten)]
    pub request: RequestSpec,
    /// JSON pointer to the list of matching objects in a search answer: more than one match
    /// makes the answer ambiguous (cordon refuses to act). `state` and `capture` may read the
    /// one match as `<unique>/0/...`; no other array index is allowed there.
    #[serde(default)]
    pub unique: Option<String>,
    /// A template over JSON pointers of the answer (`"{/value/0/type}:{/value/0/status}"`);
    /// the result is looked up in `done`, `pending`, `busy`, `not_done`, `failed`. A value in
    /// none of them is ambiguous: cordon refuses to act.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub done: Vec<String>,
    /// Moving towards the desired state (an earlier request in flight): wait and poll.
    #[serde(default)]
    pub pending: Vec<String>,
    /// Moving elsewhere (another operation in flight): refuse and escalate.
    #[serde(default)]
    pub busy: Vec<String>,
    #[serde(default)]
    pub not_done: Vec<String>,
    /// The vendor reports that the operation failed.
    #[serde(default)]
    pub failed: Vec<String>,
    /// Done when the value at this pointer is a non-empty array or object, or any scalar.
    #[serde(default)]
    pub exists: Option<String>,
    /// Done when nothing is at this pointer (an indicator already removed).
    #[serde(default)]
    pub absent: Option<String>,
    /// Done when the RFC 3339 time at this pointer is at or after the intent was recorded
    /// (revocations that move a "valid from" time).
    #[serde(default)]
    pub after_intent: Option<String>,
    /// Values for later templates (`{vendor.NAME}`).
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
}

/// A response matcher: every given field must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub pointer: Option<String>,
    #[serde(default)]
    pub equals: Option<toml::Value>,
    #[serde(default)]
    pub contains: Option<String>,
}

/// The vendor write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteSpec {
    #[serde(flatten)]
    pub request: RequestSpec,
    /// Statuses meaning "accepted".
    pub success: Vec<u16>,
    /// The vendor's ways of saying "already in that state" (success without an effect).
    #[serde(default)]
    pub already_done: Vec<Matcher>,
    /// The vendor's ways of saying "another operation is in flight" (refuse, escalate).
    #[serde(default)]
    pub busy: Vec<Matcher>,
    /// Values from the answer for the poll request (`{write.NAME}`).
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
}

/// Async completion: how often and how long to poll.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Completion {
    pub poll_interval_ms: u64,
    pub max_wait_secs: u64,
}

impl Default for Completion {
    fn default() -> Self {
        Completion {
            poll_interval_ms: 2_000,
            max_wait_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// The action kind that undoes this one (it must be declared here too), or `irreversible`.
    pub inverse: String,
    /// Blast radius: targets per vendor call. cordon sends exactly one.
    #[serde(default = "one")]
    pub targets_per_call: u32,
    /// Where the idempotency key is written on the vendor side: `header:NAME`,
    /// `body:/json/pointer`, `query:NAME`, or `none` (the probe alone decides).
    pub idempotency_slot: String,
    /// The write may be repeated without a second effect (a DELETE of all sessions, a
    /// vendor-side idempotency key): an unknown outcome may then be retried without a probe.
    #[serde(default)]
    pub resend_safe: bool,
    #[serde(default)]
    pub probe: Option<Probe>,
    pub request: WriteSpec,
    /// Polls a handle from the write (`{write.NAME}`) until done; without it, the probe is
    /// re-run.
    #[serde(default)]
    pub poll: Option<Probe>,
    #[serde(default)]
    pub completion: Completion,
}

fn one() -> u32 {
    1
}

/// Placeholders every template may use (besides `param.*`, `vendor.*` and `write.*`).
pub const VARS: &[&str] = &[
    "target",
    "target.kind",
    "ioc.kind",
    "ioc.type",
    "ioc.value",
    "idempotency_key",
    "idempotency_label",
    "case_id",
    "action_id",
    "alert_id",
    "playbook",
    "step",
    "summary",
    "reason",
    "intent_time",
    "expires_at",
];

/// The placeholders in `s` (`{name}`), or an error for an unclosed brace.
pub fn placeholders(s: &str) -> Result<Vec<&str>, super::error::TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            return Err(super::error::TemplateError::Unclosed(s.to_string()));
        };
        out.push(&after[..j]);
        rest = &after[j + 1..];
    }
    Ok(out)
}

/// Where a template is used, which decides the placeholders it may name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Resolve,
    Probe,
    Write,
    Poll,
}

struct Checker<'a> {
    file: &'a str,
    lang: FilterLanguage,
    problems: Vec<Problem>,
    vendor: Vec<String>,
    write: Vec<String>,
}

impl Checker<'_> {
    fn problem(&mut self, key: &str, reason: impl Into<String>) {
        self.problems.push(Problem::new(self.file, key, reason));
    }

    fn template(&mut self, key: &str, s: &str, scope: Scope) {
        let names = match placeholders(s) {
            Ok(n) => n,
            Err(e) => return self.problem(key, e.to_string()),
        };
        for n in names {
            let ok = if let Some(v) = n.strip_prefix("vendor.") {
                scope != Scope::Resolve && self.vendor.iter().any(|c| c == v)
            } else if let Some(w) = n.strip_prefix("write.") {
                scope == Scope::Poll && self.write.iter().any(|c| c == w)
            } else if let Some(p) = n.strip_prefix("param.") {
                !p.is_empty()
            } else {
                VARS.contains(&n)
            };
            if !ok {
                self.problem(
                    key,
                    format!(
                        "unknown placeholder {{{n}}} (use one of {VARS:?}, param.NAME, vendor.NAME captured by a resolve or probe, or write.NAME in a poll)"
                    ),
                );
            }
        }
    }

    fn request(&mut self, key: &str, r: &RequestSpec, scope: Scope) {
        let m = r.method.to_ascii_uppercase();
        let read_only = matches!(scope, Scope::Resolve | Scope::Probe | Scope::Poll);
        let allowed: &[&str] = if read_only {
            // POST is allowed for search endpoints that take the query in the body.
            &["GET", "POST"]
        } else {
            &["GET", "POST", "PUT", "PATCH", "DELETE"]
        };
        if !allowed.contains(&m.as_str()) {
            self.problem(
                &format!("{key}.method"),
                format!("method must be one of {allowed:?}"),
            );
        }
        if !r.path.starts_with('/') || r.path.starts_with("//") {
            self.problem(
                &format!("{key}.path"),
                "must start with a single `/`: the scheme and host come from base_url alone",
            );
        }
        if r.path.contains('#') || r.path.contains('\\') {
            self.problem(&format!("{key}.path"), "must not contain `#` or `\\`");
        }
        self.template(&format!("{key}.path"), &r.path, scope);
        if let Some((_, qs)) = r.path.split_once('?') {
            for kv in qs.split('&') {
                let (name, value) = kv.split_once('=').unwrap_or((kv, ""));
                if let Err(e) = self.lang.check_param(name, value) {
                    self.problem(&format!("{key}.path"), e.to_string());
                }
            }
        }
        for (h, v) in &r.headers {
            if h.eq_ignore_ascii_case("host") || h.eq_ignore_ascii_case("authorization") {
                self.problem(
                    &format!("{key}.headers.{h}"),
                    "Host and Authorization are set by cordon (use [auth])",
                );
            }
            self.template(&format!("{key}.headers.{h}"), v, scope);
        }
        if let Some(b) = &r.body {
            let mut strings = Vec::new();
            collect_strings(b, &mut strings);
            for s in strings {
                self.template(&format!("{key}.body"), &s, scope);
            }
        }
        for (f, v) in &r.form {
            self.template(&format!("{key}.form.{f}"), v, scope);
        }
        if r.body.is_some() && !r.form.is_empty() {
            self.problem(key, "use either body or form, not both");
        }
    }

    fn pointer(&mut self, key: &str, p: &str) {
        if !(p.is_empty() || p.starts_with('/')) {
            self.problem(
                key,
                format!("{p:?} is not a JSON pointer (it starts with `/`)"),
            );
        }
    }

    fn probe(&mut self, key: &str, p: &Probe, scope: Scope) {
        self.request(key, &p.request, scope);
        let modes = [
            p.state.is_some(),
            p.exists.is_some(),
            p.absent.is_some(),
            p.after_intent.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if modes != 1 {
            self.problem(
                key,
                "give exactly one of state, exists, absent, after_intent",
            );
        }
        if let Some(s) = &p.state {
            match placeholders(s) {
                Ok(ptrs) => {
                    for ptr in ptrs {
                        self.pointer(&format!("{key}.state"), ptr);
                    }
                }
                Err(e) => self.problem(&format!("{key}.state"), e.to_string()),
            }
            if p.done.is_empty() {
                self.problem(&format!("{key}.done"), "a state probe needs `done` values");
            }
        } else if !(p.done.is_empty()
            && p.pending.is_empty()
            && p.busy.is_empty()
            && p.not_done.is_empty()
            && p.failed.is_empty())
        {
            self.problem(key, "done/pending/busy/not_done/failed go with `state`");
        }
        for ptr in p.exists.iter().chain(&p.absent).chain(&p.after_intent) {
            self.pointer(key, ptr);
        }
        for (n, ptr) in &p.capture {
            self.pointer(&format!("{key}.capture.{n}"), ptr);
        }
        if let Some(u) = &p.unique {
            self.pointer(&format!("{key}.unique"), u);
        }
        // A value read from a list is read from its only element: never "take the first".
        let mut reads: Vec<(String, &str)> = p
            .capture
            .iter()
            .map(|(n, ptr)| (format!("{key}.capture.{n}"), ptr.as_str()))
            .collect();
        if let Some(s) = &p.state {
            for ptr in placeholders(s).unwrap_or_default() {
                reads.push((format!("{key}.state"), ptr));
            }
        }
        for (k, ptr) in reads {
            if let Err(e) = indexed_read(ptr, p.unique.as_deref()) {
                self.problem(&k, e.to_string());
            }
        }
    }
}

/// Whether `ptr` indexes into an array other than as the only element of `unique`.
fn indexed_read(ptr: &str, unique: Option<&str>) -> Result<(), super::error::TemplateError> {
    use super::error::TemplateError;
    let numeric = |seg: &str| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
    let rest = match unique {
        Some(u) => match ptr.strip_prefix(&format!("{u}/0")) {
            Some(r) if r.is_empty() || r.starts_with('/') => r,
            _ => ptr,
        },
        None => ptr,
    };
    if rest.split('/').any(numeric) {
        return Err(match unique {
            Some(u) => TemplateError::IndexedUnique {
                ptr: ptr.to_string(),
                unique: u.to_string(),
            },
            None => TemplateError::Indexed(ptr.to_string()),
        });
    }
    Ok(())
}

fn collect_strings(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) => out.push(s.clone()),
        toml::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        toml::Value::Table(t) => {
            for (k, x) in t {
                out.push(k.clone());
                collect_strings(x, out);
            }
        }
        _ => {}
    }
}

/// Static checks of a parsed file: every problem with file, key and reason.
pub fn check(file: &str, cf: &ConnectorFile) -> (Vec<ActionKind>, Vec<Problem>) {
    let mut c = Checker {
        file,
        lang: cf.filter_language,
        problems: vec![],
        vendor: vec![],
        write: vec![],
    };
    if let AuthSpec::Oauth2ClientCredentials { token_url, .. } = &cf.auth {
        match reqwest::Url::parse(token_url) {
            Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {}
            Ok(u) if u.scheme() == "http" && super::loopback(&u) => {}
            _ => c.problem(
                "auth.token_url",
                "must be an absolute https URL (http only for a loopback host)",
            ),
        }
        if token_url.contains('{') {
            c.problem("auth.token_url", "must not contain templates");
        }
    }
    if let AuthSpec::Header { name, .. } = &cf.auth
        && reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
    {
        c.problem("auth.name", "not a valid header name");
    }
    if cf.retry.max_attempts == 0 || cf.retry.max_attempts > 20 {
        c.problem("retry.max_attempts", "must be between 1 and 20");
    }
    if cf.retry.max_delay_ms < cf.retry.base_delay_ms || cf.retry.max_delay_ms > 600_000 {
        c.problem(
            "retry.max_delay_ms",
            "must be at least base_delay_ms and at most 600000",
        );
    }
    if cf.retry.max_wait_secs > 3_600 {
        c.problem("retry.max_wait_secs", "must be at most 3600");
    }
    if cf.timeout_ms == 0 || cf.timeout_ms > 300_000 {
        c.problem("timeout_ms", "must be between 1 and 300000");
    }
    if cf.circuit_breaker.failures == 0 {
        c.problem("circuit_breaker.failures", "must be at least 1");
    }
    for k in cf.ioc_types.keys() {
        if !IOC_KINDS.contains(&k.as_str()) {
            c.problem(
                &format!("ioc_types.{k}"),
                format!("unknown indicator kind; use one of {IOC_KINDS:?}"),
            );
        }
    }
    let mut resolved_kinds = Vec::new();
    for (kind, l) in &cf.resolve {
        if !["host", "account", "indicator", "cloud_resource"].contains(&kind.as_str()) {
            c.problem(
                &format!("resolve.{kind}"),
                "unknown target kind; use host, account, indicator or cloud_resource",
            );
        }
        c.request(&format!("resolve.{kind}"), &l.request, Scope::Resolve);
        if l.capture.is_empty() {
            c.problem(
                &format!("resolve.{kind}.capture"),
                "a resolve must capture at least one value",
            );
        }
        for (n, ptr) in &l.capture {
            c.pointer(&format!("resolve.{kind}.capture.{n}"), ptr);
            if let Err(e) = indexed_read(ptr, None) {
                c.problem(
                    &format!("resolve.{kind}.capture.{n}"),
                    format!("{e}; in a resolve, give `list` and capture from the one match"),
                );
            }
        }
        if let Some(list) = &l.list {
            c.pointer(&format!("resolve.{kind}.list"), list);
        }
        for (i, ptr) in l.names_target.iter().enumerate() {
            c.pointer(&format!("resolve.{kind}.names_target[{i}]"), ptr);
        }
        match (&l.list, &l.tie_break) {
            (None, Some(_)) => c.problem(
                &format!("resolve.{kind}.tie_break"),
                "a tie-break needs `list` (the matches it chooses among)",
            ),
            (_, Some(tb)) => c.pointer(&format!("resolve.{kind}.tie_break.newest"), &tb.newest),
            _ => {}
        }
        resolved_kinds.push((kind.clone(), l.capture.keys().cloned().collect::<Vec<_>>()));
    }

    let mut kinds = Vec::new();
    let declared: Vec<&str> = cf.actions.keys().map(|s| s.as_str()).collect();
    for (name, a) in &cf.actions {
        let key = format!("actions.{name}");
        let Some(kind) = ActionKind::parse(name) else {
            c.problem(&key, format!("unknown action kind {name:?}"));
            continue;
        };
        let allowed = if cf.kind == ConnectorKind::Webhook {
            !matches!(kind, ActionKind::Enrich | ActionKind::SummarizeCase)
        } else {
            cf.kind.actions().contains(&kind)
        };
        if !allowed {
            c.problem(
                &key,
                format!("a {} connector cannot perform {kind}", cf.kind),
            );
            continue;
        }
        kinds.push(kind);
        if a.inverse != "irreversible" {
            match (ActionKind::parse(&a.inverse), kind.inverse()) {
                (Some(i), Some(expected)) if i == expected => {
                    if !declared.contains(&i.as_str()) {
                        c.problem(
                            &format!("{key}.inverse"),
                            format!("{i} is not declared in this connector"),
                        );
                    }
                }
                _ => c.problem(
                    &format!("{key}.inverse"),
                    match kind.inverse() {
                        Some(e) => format!("must be {:?} or \"irreversible\"", e.as_str()),
                        None => format!("{kind} cannot be undone: use \"irreversible\""),
                    },
                ),
            }
        }
        if a.targets_per_call != 1 {
            c.problem(
                &format!("{key}.targets_per_call"),
                "cordon sends exactly one target per vendor call (blast radius guard)",
            );
        }
        // Placeholders available: the resolve for this action's target kind, then the probe's.
        c.vendor = resolved_kinds
            .iter()
            .filter(|(k, _)| *k == kind.target_kind().as_str())
            .flat_map(|(_, v)| v.clone())
            .collect();
        if let Some(p) = &a.probe {
            c.probe(&format!("{key}.probe"), p, Scope::Probe);
            c.vendor.extend(p.capture.keys().cloned());
        }
        c.request(&format!("{key}.request"), &a.request.request, Scope::Write);
        if a.request.success.is_empty() || a.request.success.iter().any(|s| !(200..300).contains(s))
        {
            c.problem(
                &format!("{key}.request.success"),
                "list the 2xx statuses that mean accepted",
            );
        }
        for (n, ptr) in &a.request.capture {
            c.pointer(&format!("{key}.request.capture.{n}"), ptr);
        }
        for m in a.request.already_done.iter().chain(&a.request.busy) {
            if m.status.is_none() && m.pointer.is_none() {
                c.problem(
                    &format!("{key}.request"),
                    "a matcher needs a status or a pointer",
                );
            }
            if m.pointer.is_some() && m.equals.is_none() && m.contains.is_none() {
                c.problem(
                    &format!("{key}.request"),
                    "a matcher with a pointer needs equals or contains",
                );
            }
        }
        c.write = a.request.capture.keys().cloned().collect();
        if let Some(p) = &a.poll {
            c.probe(&format!("{key}.poll"), p, Scope::Poll);
            if p.state.is_none() {
                c.problem(&format!("{key}.poll"), "a poll maps a `state`");
            }
        }
        check_slot(&mut c, &key, a);
        if a.probe.is_none() && !a.resend_safe {
            c.problem(
                &key,
                "without a probe, an unknown outcome could only be resolved by a blind resend: add a probe, or set resend_safe = true if the vendor deduplicates",
            );
        }
    }
    if cf.actions.is_empty() {
        c.problem("actions", "declare at least one [actions.KIND] table");
    }
    (kinds, c.problems)
}

/// Indicator kinds cordon distinguishes (`{ioc.kind}`).
pub const IOC_KINDS: &[&str] = &["ip", "ip6", "domain", "url", "md5", "sha1", "sha256"];

fn check_slot(c: &mut Checker<'_>, key: &str, a: &ActionSpec) {
    let slot = a.idempotency_slot.as_str();
    let has_key = |s: &str| s.contains("{idempotency_key}") || s.contains("{idempotency_label}");
    let r = &a.request.request;
    let ok = if slot == "none" {
        if a.probe.is_none() {
            c.problem(
                &format!("{key}.idempotency_slot"),
                "\"none\" needs a probe that decides whether the action already happened",
            );
        }
        true
    } else if let Some(h) = slot.strip_prefix("header:") {
        r.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(h) && has_key(v))
    } else if let Some(q) = slot.strip_prefix("query:") {
        r.path.split_once('?').is_some_and(|(_, qs)| {
            qs.split('&').any(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, v)| k == q && has_key(v))
            })
        })
    } else if let Some(ptr) = slot.strip_prefix("body:") {
        let json = r
            .body
            .as_ref()
            .and_then(|b| serde_json::to_value(b).ok())
            .unwrap_or_default();
        let at = json.pointer(ptr);
        let mut strings = Vec::new();
        if let Some(v) = at {
            collect_json_strings(v, &mut strings);
        }
        strings.iter().any(|s| has_key(s))
    } else {
        c.problem(
            &format!("{key}.idempotency_slot"),
            "use header:NAME, query:NAME, body:/pointer or none",
        );
        true
    };
    if !ok {
        c.problem(
            &format!("{key}.idempotency_slot"),
            format!(
                "{slot:?} does not receive {{idempotency_key}} or {{idempotency_label}} in the request template"
            ),
        );
    }
}

fn collect_json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_json_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_json_strings(x, out)),
        _ => {}
    }
}
