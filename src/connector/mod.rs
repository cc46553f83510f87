//! Connectors: the vendors cordon acts through, declared in `connectors/*.toml`.
//!
//! Owns: the closed set of connector kinds and the action kinds each may implement, loading
//! and validating connector files (unknown keys are errors; see [`spec`]), resolving their
//! secrets for live mode, and the only HTTP client that talks to vendors ([`client`]). The
//! executor decides *when* to call; this module decides *how*, and is the only one that does.

pub mod answer;
pub mod client;
pub mod error;
pub mod query;
pub mod resolve;
pub mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::action::ActionKind;
use crate::config::{Problem, parse_toml_file};
use crate::secret::SecretRef;

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

pub use spec::Mode;

/// A validated connector.
#[derive(Debug, Clone)]
pub struct Connector {
    pub name: String,
    pub kind: ConnectorKind,
    pub base_url: reqwest::Url,
    pub mode: Mode,
    pub actions: Vec<ActionKind>,
    pub spec: Arc<spec::ConnectorFile>,
    /// Present in live mode: the HTTP client, secrets, token cache and breaker.
    pub runtime: Option<Arc<client::Runtime>>,
}

impl Connector {
    pub fn supports(&self, kind: ActionKind) -> bool {
        self.actions.contains(&kind)
    }

    pub fn action(&self, kind: ActionKind) -> Option<&spec::ActionSpec> {
        self.spec.actions.get(kind.as_str())
    }

    /// Renders a request template of this connector (its destination, filter language and
    /// reserved values apply).
    pub fn render(
        &self,
        r: &spec::RequestSpec,
        vars: &client::Vars,
    ) -> Result<client::Rendered, error::RenderError> {
        let rules = client::UrlRules {
            language: self.spec.filter_language,
            reserved: &self.spec.reserved_values,
        };
        client::render(&self.base_url, rules, r, vars)
    }

    /// Whether `kind` can be undone through this connector.
    pub fn reversible(&self, kind: ActionKind) -> bool {
        self.action(kind)
            .is_some_and(|a| a.inverse != "irreversible")
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
            match parse_toml_file::<spec::ConnectorFile>(&path) {
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
    pub fn check(&self, connector: &str, kind: ActionKind) -> Result<(), error::LookupError> {
        use error::LookupError;
        if connector == BUILTIN {
            return if matches!(kind, ActionKind::Enrich | ActionKind::SummarizeCase) {
                Ok(())
            } else {
                Err(LookupError::BuiltinLacks(kind))
            };
        }
        match self.connectors.get(connector) {
            None => Err(LookupError::Unknown(connector.to_string())),
            Some(c) if !c.supports(kind) => Err(LookupError::Lacks {
                name: connector.to_string(),
                kind: c.kind,
                action: kind,
            }),
            Some(_) => Ok(()),
        }
    }
}

/// Whether `u` names this machine (`localhost`, `127.0.0.0/8`, `::1`): the only hosts a
/// connector or its token endpoint may be reached over plain `http`.
pub(crate) fn loopback(u: &reqwest::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Validates one parsed connector file (`file` names it in problems, `name` is the connector's
/// name): [`Registry::load`] calls this for each file; the fuzz target `connector` calls it
/// directly.
pub fn validate(
    file: &str,
    name: &str,
    cf: spec::ConnectorFile,
) -> Result<Connector, Vec<Problem>> {
    let mut problems = Vec::new();
    let base_url = match reqwest::Url::parse(&cf.base_url) {
        Ok(u) => {
            if !(u.scheme() == "https" || u.scheme() == "http" && loopback(&u)) {
                problems.push(Problem::new(
                    file,
                    "base_url",
                    "scheme must be https (http only for a loopback host: credentials would cross the network in the clear)",
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
            if u.query().is_some() || u.fragment().is_some() {
                problems.push(Problem::new(
                    file,
                    "base_url",
                    "must not carry a query or fragment",
                ));
            }
            Some(u)
        }
        Err(e) => {
            problems.push(Problem::new(file, "base_url", format!("not a URL: {e}")));
            None
        }
    };
    let (actions, mut ps) = spec::check(file, &cf);
    problems.append(&mut ps);
    let mut runtime = None;
    if cf.mode == Mode::Live {
        if matches!(cf.auth, spec::AuthSpec::None) {
            problems.push(Problem::new(
                file,
                "auth",
                "live mode needs credentials ([auth]); keep mode = \"dry_run\" until they are configured",
            ));
        }
        let mut secrets = BTreeMap::new();
        for (key, r) in cf.auth.secrets() {
            if matches!(r, SecretRef::Sha256(_)) {
                problems.push(Problem::new(
                    file,
                    key,
                    "a connector credential is sent to the vendor, so it must come from env or file, not sha256",
                ));
                continue;
            }
            match r.resolve() {
                Ok(s) => {
                    secrets.insert(key, s);
                }
                Err(e) => problems.push(Problem::new(file, key, e.to_string())),
            }
        }
        if problems.is_empty() {
            match client::Runtime::new(
                std::time::Duration::from_millis(cf.timeout_ms),
                cf.proxy.as_deref(),
                cf.auth.clone(),
                secrets,
                cf.circuit_breaker.clone(),
                cf.request_id_headers.clone(),
                &cf.retry,
            ) {
                Ok(r) => runtime = Some(Arc::new(r)),
                Err(e) => problems.push(Problem::new(file, "proxy", e.to_string())),
            }
        }
    }
    match (base_url, problems.is_empty()) {
        (Some(base_url), true) => Ok(Connector {
            name: name.to_string(),
            kind: cf.kind,
            base_url,
            mode: cf.mode,
            actions,
            spec: Arc::new(cf),
            runtime,
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

    const MIN: &str = "kind = \"crowdstrike\"\nbase_url = \"https://api.crowdstrike.com\"\n[actions.isolate_host]\ninverse = \"irreversible\"\nidempotency_slot = \"none\"\n[actions.isolate_host.probe]\nmethod = \"GET\"\npath = \"/d/{target}\"\nstate = \"{/s}\"\ndone = [\"contained\"]\n[actions.isolate_host.request]\nmethod = \"POST\"\npath = \"/c\"\nsuccess = [202]\n";

    #[test]
    fn shipped_connectors_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
        let (reg, problems) = Registry::load(&dir);
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(reg.connectors.len(), 7);
        for c in reg.connectors.values() {
            assert_eq!(c.mode, Mode::DryRun, "{} ships in dry_run", c.name);
            assert!(!c.actions.is_empty());
        }
        assert!(reg.check("crowdstrike", ActionKind::IsolateHost).is_ok());
        assert!(reg.check("okta", ActionKind::RevokeSessions).is_ok());
        assert!(
            reg.check("cloud-webhook", ActionKind::ContainCloudResource)
                .is_ok()
        );
    }

    #[test]
    fn validates_and_reports_file_key_reason() {
        let reg = load(&[("crowdstrike.toml", MIN)]).unwrap();
        assert!(reg.check("crowdstrike", ActionKind::IsolateHost).is_ok());
        assert!(reg.check("crowdstrike", ActionKind::ReleaseHost).is_err());
        assert!(reg.check("nope", ActionKind::IsolateHost).is_err());
        assert!(reg.check(BUILTIN, ActionKind::Enrich).is_ok());

        let errs = load(&[
            (
                "a.toml",
                &MIN.replace("https://api.crowdstrike.com", "https://{alert.host}/x"),
            ),
            ("b.toml", &format!("timeout = 3\n{MIN}")),
            (
                "c.toml",
                &MIN.replace("https://api.crowdstrike.com", "ftp://x"),
            ),
            ("d.toml", &MIN.replace("/d/{target}", "/d/{alert.host}")),
            (
                "e.toml",
                &MIN.replace("path = \"/c\"", "path = \"//evil.example/c\""),
            ),
            (
                "f.toml",
                &MIN.replace("inverse = \"irreversible\"", "inverse = \"block_ioc\""),
            ),
            (
                "g.toml",
                &MIN.replace(
                    "idempotency_slot = \"none\"",
                    "idempotency_slot = \"header:Idempotency-Key\"",
                ),
            ),
            (
                "h.toml",
                &MIN.replace("isolate_host]", "revoke_sessions]")
                    .replace("isolate_host.", "revoke_sessions."),
            ),
            (
                "i.toml",
                &MIN.replace("mode", "x")
                    .replace("base_url", "mode = \"live\"\nbase_url"),
            ),
            (
                "j.toml",
                &MIN.replace(
                    "[actions.isolate_host.probe]",
                    "[actions.isolate_host.probe]\nexists = \"/x\"",
                ),
            ),
            (
                "k.toml",
                &MIN.replace("https://api.crowdstrike.com", "http://api.crowdstrike.com"),
            ),
            (
                "l.toml",
                &MIN.replace(
                    "base_url",
                    "auth = { type = \"oauth2_client_credentials\", token_url = \"http://auth.example.com/token\", client_id = { env = \"A\" }, client_secret = { env = \"B\" } }\nbase_url",
                ),
            ),
        ])
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str| {
            assert!(
                text.iter().any(|t| t.contains(needle)),
                "{needle:?} not in {text:#?}"
            )
        };
        has("a.toml: base_url: must not contain templates");
        has("b.toml");
        has("unknown field `timeout`");
        has("c.toml: base_url: scheme");
        has("d.toml: actions.isolate_host.probe.path: unknown placeholder {alert.host}");
        has("e.toml: actions.isolate_host.request.path: must start with a single `/`");
        has("f.toml: actions.isolate_host.inverse");
        has("g.toml: actions.isolate_host.idempotency_slot");
        has(
            "h.toml: actions.revoke_sessions: a crowdstrike connector cannot perform revoke_sessions",
        );
        has("i.toml: auth: live mode needs credentials");
        has("j.toml: actions.isolate_host.probe: give exactly one of");
        has("k.toml: base_url: scheme must be https (http only for a loopback host");
        has("l.toml: auth.token_url: must be an absolute https URL");
        // Plain http to this machine (the tests' fake vendors) loads.
        for host in ["127.0.0.1:9", "localhost:9", "[::1]:9"] {
            let text = MIN.replace("https://api.crowdstrike.com", &format!("http://{host}"));
            assert!(load(&[("m.toml", &text)]).is_ok(), "{host}");
        }
    }

    #[test]
    fn take_the_first_and_open_filters_are_refused_at_load() {
        let cs = |extra: &str| format!("filter_language = \"fql\"\n{MIN}\n{extra}");
        let errs = load(&[
            (
                "a.toml",
                &cs("[resolve.host]\nmethod = \"GET\"\npath = \"/q?filter=hostname:'{target}'\"\ncapture = { aid = \"/resources/0\" }"),
            ),
            (
                "b.toml",
                &MIN.replace("state = \"{/s}\"", "state = \"{/resources/0/status}\""),
            ),
            (
                "c.toml",
                &cs("").replace("path = \"/d/{target}\"", "path = \"/d?filter=hostname:{target}\""),
            ),
            (
                "d.toml",
                &MIN.replace("path = \"/d/{target}\"", "path = \"/d?filter=hostname:'{target}'\""),
            ),
            (
                "e.toml",
                &cs("[resolve.host]\nmethod = \"GET\"\npath = \"/q?filter=hostname:'{target}'\"\ncapture = { aid = \"\" }\ntie_break = { newest = \"/last_seen\" }"),
            ),
            (
                "f.toml",
                &MIN.replace(
                    "state = \"{/s}\"",
                    "unique = \"/resources\"\nstate = \"{/resources/1/status}\"",
                ),
            ),
            (
                "g.toml",
                &cs("[resolve.host]\nmethod = \"GET\"\npath = \"/d/{target}\"\ncapture = { aid = \"/id\" }\nnames_target = [\"/id\", \"hostname\"]"),
            ),
        ])
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str| {
            assert!(
                text.iter().any(|t| t.contains(needle)),
                "{needle:?} not in {text:#?}"
            )
        };
        has("a.toml: resolve.host.capture.aid: \"/resources/0\" reads an array element");
        has(
            "b.toml: actions.isolate_host.probe.state: \"/resources/0/status\" reads an array element",
        );
        has("c.toml: actions.isolate_host.probe.path: placeholder {target} in the fql filter");
        has(
            "d.toml: actions.isolate_host.probe.path: the query parameter \"filter\" looks like a filter expression",
        );
        has("e.toml: resolve.host.tie_break: a tie-break needs `list`");
        has(
            "f.toml: actions.isolate_host.probe.state: \"/resources/1/status\" reads an array element: only `/resources/0`",
        );
        has("g.toml: resolve.host.names_target[1]: \"hostname\" is not a JSON pointer");
        // The same with `list`/`unique` and quotes loads.
        load(&[(
            "ok.toml",
            &cs("[resolve.host]\nmethod = \"GET\"\npath = \"/q?filter=hostname:'{target}'\"\nlist = \"/resources\"\ncapture = { aid = \"\" }")
                .replace("state = \"{/s}\"", "unique = \"/resources\"\nstate = \"{/resources/0/s}\""),
        )])
        .unwrap();
    }

    /// String literals of a filter expression, by the language's quoting; `None` if one is
    /// left open.
    fn literals(lang: query::FilterLanguage, s: &str) -> Option<Vec<String>> {
        use query::FilterLanguage as L;
        let q = match lang {
            L::Fql | L::Odata => '\'',
            L::Scim | L::Jql => '"',
            L::None => return Some(vec![]),
        };
        let mut out = Vec::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c != q {
                continue;
            }
            let mut lit = String::new();
            loop {
                let c = chars.next()?;
                match (lang, c) {
                    (L::Odata, c) if c == q && chars.peek() == Some(&q) => {
                        chars.next();
                        lit.push(q);
                    }
                    (L::Scim | L::Jql, '\\') => lit.push(chars.next()?),
                    (_, c) if c == q => break,
                    (_, c) => lit.push(c),
                }
            }
            out.push(lit);
        }
        Some(out)
    }

    #[test]
    fn every_shipped_connector_keeps_hostile_values_out_of_its_filters() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
        let (reg, problems) = Registry::load(&dir);
        assert!(problems.is_empty(), "{problems:#?}");
        let hostile = [
            "*",
            "ws-*",
            "x' or hostname:'*",
            "x\" or id ne \"y",
            "x\\",
            "a\r\nb",
            "nul\0",
            "$count",
            "me",
            "..",
            "a)b(c",
            "o'brien@corp.example",
        ];
        let mut rendered_any = 0;
        for c in reg.connectors.values() {
            let lang = c.spec.filter_language;
            let mut templates: Vec<&spec::RequestSpec> =
                c.spec.resolve.values().map(|l| &l.request).collect();
            for a in c.spec.actions.values() {
                templates.extend(a.probe.iter().map(|p| &p.request));
                templates.push(&a.request.request);
                templates.extend(a.poll.iter().map(|p| &p.request));
            }
            for t in templates {
                let names = spec::placeholders(&t.path).unwrap();
                if !names.iter().any(|n| *n == "target" || *n == "ioc.value") {
                    continue;
                }
                let vars = |v: &str| {
                    let mut vars = client::Vars::default();
                    for n in &names {
                        vars.set(*n, "benign-1");
                    }
                    vars.set("target", v);
                    vars.set("ioc.value", v);
                    vars
                };
                let base = c.render(t, &vars("the-target")).unwrap();
                let shape = |u: &reqwest::Url| {
                    let segs = u.path_segments().map_or(0, |s| s.count());
                    let filters: Vec<Vec<String>> = u
                        .query_pairs()
                        .filter(|(k, _)| lang.params().contains(&k.as_ref()))
                        .map(|(_, v)| literals(lang, &v).expect("a literal left open"))
                        .collect();
                    (segs, filters)
                };
                let (base_segs, base_filters) = shape(&base.url);
                for h in hostile {
                    let Ok(r) = c.render(t, &vars(h)) else {
                        continue; // refused: nothing is sent
                    };
                    rendered_any += 1;
                    let (segs, filters) = shape(&r.url);
                    assert_eq!(
                        segs, base_segs,
                        "{}: {h:?} moved the path: {}",
                        c.name, r.url
                    );
                    assert_eq!(
                        filters.iter().map(Vec::len).collect::<Vec<_>>(),
                        base_filters.iter().map(Vec::len).collect::<Vec<_>>(),
                        "{}: {h:?} broke out of a {} literal: {}",
                        c.name,
                        lang.as_str(),
                        r.url
                    );
                    for l in filters.iter().flatten() {
                        assert!(
                            !(l.contains('*') && lang == query::FilterLanguage::Fql),
                            "{}: a wildcard reached an FQL filter: {}",
                            c.name,
                            r.url
                        );
                    }
                    // Where the template puts the value into a filter, it arrives whole, as
                    // the content of one literal.
                    if base_filters
                        .iter()
                        .flatten()
                        .any(|l| l.contains("the-target"))
                    {
                        assert!(
                            filters.iter().flatten().any(|l| l.contains(h)),
                            "{}: {h:?} is not kept as one literal: {}",
                            c.name,
                            r.url
                        );
                    }
                }
            }
        }
        // The check saw real renderings (escaped values), not only refusals.
        assert!(rendered_any > 0);
    }

    #[test]
    fn live_mode_resolves_secrets_and_never_prints_them() {
        let text = format!(
            "mode = \"live\"\n{MIN}[auth]\ntype = \"bearer\"\ntoken = {{ env = \"CORDON_TEST_UNSET_TOKEN_VAR\" }}\n"
        );
        let errs = load(&[("k.toml", &text)]).unwrap_err();
        let all = format!("{errs:?}");
        assert!(all.contains("auth.token"), "{all}");
        assert!(
            all.contains("CORDON_TEST_UNSET_TOKEN_VAR is not set"),
            "{all}"
        );
    }
}
