//! Validation of the config's own values: every problem at once, as [`Problem`]s (file, key,
//! reason). Pure.

use super::*;

impl Config {
    /// Pure checks of the config's own values; every problem at once.
    pub fn validate(&self, file: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut p = |key: &str, reason: String| out.push(Problem::new(file, key, reason));
        if let Err(e) = self.http.addr.parse::<SocketAddr>() {
            p("http.addr", format!("not a socket address: {e}"));
        }
        if let Err(e) = self.grpc.addr.parse::<SocketAddr>() {
            p("grpc.addr", format!("not a socket address: {e}"));
        }
        if self.grpc.max_message_bytes < 1024 {
            p("grpc.max_message_bytes", "must be at least 1024".into());
        }
        if let Some(tls) = &self.grpc.tls {
            for (k, f) in [
                ("grpc.tls.cert", Some(&tls.cert)),
                ("grpc.tls.key", Some(&tls.key)),
                ("grpc.tls.client_ca", tls.client_ca.as_ref()),
            ] {
                if let Some(f) = f
                    && !f.is_file()
                {
                    p(k, format!("{} does not exist", f.display()));
                }
            }
        }
        if !self.grpc.cert_users.is_empty()
            && self.grpc.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
        {
            p(
                "grpc.cert_users",
                "certificate identities need grpc.tls.client_ca to verify client certificates"
                    .into(),
            );
        }
        for (i, a) in self.grpc.approvers.iter().enumerate() {
            if a.user.trim().is_empty() || a.user.starts_with("playbook:") {
                p(
                    &format!("grpc.approvers[{i}].user"),
                    "must be a user id (not empty, not playbook:...)".into(),
                );
            }
            if let Err(e) = crate::secret::TokenHash::from_ref(&a.token) {
                p(&format!("grpc.approvers[{i}].token"), e.to_string());
            }
        }
        let approver_tokens: Vec<_> = self
            .grpc
            .approvers
            .iter()
            .map(|a| a.token.clone())
            .collect();
        let mut other_tokens: Vec<(String, &crate::secret::SecretRef)> = Vec::new();
        for (source, r) in &self.ingest.tokens {
            other_tokens.push((format!("ingest.tokens.{source}"), r));
        }
        for (name, r) in &self.grpc.ingest_tokens {
            other_tokens.push((format!("grpc.ingest_tokens.{name}"), r));
        }
        if let Some(r) = &self.http.admin_token {
            other_tokens.push(("http.admin_token".into(), r));
        }
        for problem in crate::agent::validate(file, &self.agents, &approver_tokens, &other_tokens) {
            p(&problem.key, problem.reason);
        }
        for problem in crate::agent::validate_mcp(file, &self.mcp) {
            p(&problem.key, problem.reason);
        }
        for (name, r) in &self.grpc.ingest_tokens {
            if let Err(e) = crate::secret::TokenHash::from_ref(r) {
                p(&format!("grpc.ingest_tokens.{name}"), e.to_string());
            }
        }
        if self.http.max_body_bytes < 1024 {
            p("http.max_body_bytes", "must be at least 1024".into());
        }
        let mut range = |key: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                p(key, format!("must be between {lo} and {hi}"));
            }
        };
        let (h, g) = (&self.http, &self.grpc);
        range(
            "http.header_read_timeout_secs",
            h.header_read_timeout_secs,
            1,
            300,
        );
        range("http.idle_timeout_secs", h.idle_timeout_secs, 1, 3600);
        range(
            "http.body_read_timeout_secs",
            h.body_read_timeout_secs,
            1,
            3600,
        );
        range("http.max_connections", h.max_connections as u64, 8, 1 << 20);
        range("grpc.max_connections", g.max_connections as u64, 4, 1 << 16);
        range(
            "grpc.keepalive_interval_secs",
            g.keepalive_interval_secs,
            1,
            3600,
        );
        range(
            "grpc.keepalive_timeout_secs",
            g.keepalive_timeout_secs,
            1,
            600,
        );
        range("grpc.tcp_keepalive_secs", g.tcp_keepalive_secs, 1, 7200);
        range(
            "grpc.max_concurrent_streams",
            g.max_concurrent_streams.into(),
            1,
            10_000,
        );
        range(
            "grpc.concurrency_limit_per_connection",
            g.concurrency_limit_per_connection as u64,
            1,
            10_000,
        );
        range("grpc.idle_timeout_secs", g.idle_timeout_secs, 1, 86_400);
        if g.idle_timeout_secs <= g.keepalive_interval_secs + g.keepalive_timeout_secs {
            p(
                "grpc.idle_timeout_secs",
                "must exceed grpc.keepalive_interval_secs + grpc.keepalive_timeout_secs, or idle clients are cut off"
                    .into(),
            );
        }
        // Whether a name is a mapped source is known once `sources_dir` is loaded: the daemon
        // checks that (`daemon::validate`); here only the spelling.
        let known = |source: &str| {
            IngestFormat::parse_name(source).is_some()
                || crate::ingest::mapped::check_name(source).is_ok()
        };
        for (source, r) in &self.ingest.tokens {
            if !known(source) {
                p(
                    &format!("ingest.tokens.{source}"),
                    "unknown source (expected cordon, splunk, elastic, sentinel, ocsf or a mapped source name)".into(),
                );
            }
            if let Err(e) = crate::secret::TokenHash::from_ref(r) {
                p(&format!("ingest.tokens.{source}"), e.to_string());
            }
        }
        for (i, source) in self.ingest.query_token_sources.iter().enumerate() {
            if !known(source) {
                p(
                    &format!("ingest.query_token_sources[{i}]"),
                    "unknown source (expected cordon, splunk, elastic, sentinel, ocsf or a mapped source name)".into(),
                );
            }
        }
        if !(1..=100_000).contains(&self.ingest.max_alerts_per_body) {
            p(
                "ingest.max_alerts_per_body",
                "must be from 1 to 100000".into(),
            );
        }
        if let Some(r) = &self.http.admin_token
            && let Err(e) = crate::secret::TokenHash::from_ref(r)
        {
            p("http.admin_token", e.to_string());
        }
        if self.cases.correlation_window_secs == 0 {
            p("cases.correlation_window_secs", "must be positive".into());
        }
        if !(1..=100_000).contains(&self.correlation.max_alerts_per_case) {
            p(
                "correlation.max_alerts_per_case",
                "must be between 1 and 100000".into(),
            );
        }
        if !(1..=10_000).contains(&self.correlation.max_open_cases_per_entity) {
            p(
                "correlation.max_open_cases_per_entity",
                "must be between 1 and 10000".into(),
            );
        }
        if self.correlation.mode == CorrelationMode::SharedEntity
            && self.correlation.kinds.is_empty()
        {
            p(
                "correlation.kinds",
                "shared_entity correlation needs at least one entity kind".into(),
            );
        }
        for (k, v) in [
            (
                "cases.max_entities_per_alert",
                self.cases.max_entities_per_alert,
            ),
            (
                "cases.max_actions_per_case",
                self.cases.max_actions_per_case,
            ),
            (
                "cases.max_chat_requests_per_case",
                self.cases.max_chat_requests_per_case,
            ),
        ] {
            if !(1..=100_000).contains(&v) {
                p(k, "must be between 1 and 100000".into());
            }
        }
        if !(-20..=19).contains(&self.store.critical_nice) {
            p(
                "store.critical_nice",
                format!(
                    "must be a nice value from -20 to 19, not {}",
                    self.store.critical_nice
                ),
            );
        }
        if self.store.max_batch == 0 {
            p("store.max_batch", "must be positive".into());
        }
        if self.store.cache_capacity_bytes < (1 << 20) {
            p(
                "store.cache_capacity_bytes",
                "must be at least 1 MiB".into(),
            );
        }
        if !(1..=MAX_TIMEOUT_MINS).contains(&self.approvals.default_timeout_mins) {
            p(
                "approvals.default_timeout_mins",
                format!("must be from 1 to {MAX_TIMEOUT_MINS}"),
            );
        }
        for (k, v) in [
            ("cases.dedup_window_secs", self.cases.dedup_window_secs),
            (
                "cases.correlation_window_secs",
                self.cases.correlation_window_secs,
            ),
        ] {
            if v > MAX_WINDOW_SECS {
                p(k, format!("must be at most {MAX_WINDOW_SECS}"));
            }
        }
        self.cases.sla.validate(&mut p);
        self.chat.validate(&mut p);
        self.learning.validate(&mut p);
        if self.retention.closed_case_days == 0 || self.retention.closed_case_days > 36_500 {
            p(
                "retention.closed_case_days",
                "must be between 1 and 36500 days".into(),
            );
        }

        crate::schedule::validate(&self.schedules, &self.chat, &mut p);
        if let Some(c) = &self.audit.checkpoints {
            c.validate(&self.data_dir, &mut p);
        }
        if !(1..=1024).contains(&self.executor.concurrency) {
            p("executor.concurrency", "must be between 1 and 1024".into());
        }
        if !(1..=86_400).contains(&self.executor.reconcile_interval_secs) {
            p(
                "executor.reconcile_interval_secs",
                "must be between 1 and 86400".into(),
            );
        }
        if !(self.approvals.escalate_at_fraction > 0.0 && self.approvals.escalate_at_fraction < 1.0)
        {
            p(
                "approvals.escalate_at_fraction",
                "must be between 0 and 1".into(),
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            p("log.format", "must be `text` or `json`".into());
        }
        if let Err(why) = log_level(&self.log.level) {
            p("log.level", why);
        }
        for (field, path) in [
            ("enrichment.assets", &self.enrichment.assets),
            ("enrichment.identities", &self.enrichment.identities),
            ("enrichment.intel", &self.enrichment.intel),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                p(field, format!("{} does not exist", path.display()));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, s) in self.suppressions.iter().enumerate() {
            let key = |k: &str| format!("suppressions[{i}].{k}");
            if !ids.insert(s.id.clone()) {
                p(&key("id"), format!("duplicate suppression id {:?}", s.id));
            }
            for (k, v) in [("id", &s.id), ("reason", &s.reason), ("owner", &s.owner)] {
                if v.trim().is_empty() {
                    p(&key(k), "must not be empty".into());
                }
            }
            if s.rule.is_none() && s.entity.is_none() {
                p(
                    &key("rule"),
                    "set rule, entity or both: a suppression matching everything would hide every alert"
                        .into(),
                );
            }
            if let Some(e) = &s.entity
                && parse_entity_ref(e).is_none()
            {
                p(
                    &key("entity"),
                    format!("{e:?} is not `kind:value` with a known kind and a valid value"),
                );
            }
            if let (Some(a), Some(b)) = (s.start, s.end)
                && a >= b
            {
                p(&key("end"), "must be after start".into());
            }
            if s.start.is_some() != s.end.is_some() {
                p(&key("start"), "start and end go together".into());
            }
            if let Some(expr) = &s.schedule
                && let Err(e) = expr.parse::<cron::Schedule>()
            {
                p(&key("schedule"), format!("not a cron expression: {e}"));
            }
            match (&s.schedule, s.duration_mins) {
                (Some(_), Some(d)) => {
                    if d == 0 {
                        p(&key("duration_mins"), "must be positive".into());
                    }
                }
                (Some(_), None) => p(&key("duration_mins"), "a schedule needs a duration".into()),
                (None, Some(_)) => p(&key("schedule"), "a duration needs a schedule".into()),
                (None, None) => {}
            }
            if s.schedule.is_some() && s.start.is_some() {
                p(
                    &key("schedule"),
                    "use either start/end or schedule, not both".into(),
                );
            }
        }
        out.extend(self.console.validate(file));
        out
    }
}

/// `[log] level`: a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or a list of
/// `target=level` directives with at most one bare level. A bare word is a target to the
/// filter, so a misspelt level (`verbose`) would otherwise leave the daemon logging nothing.
pub(super) fn log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |w: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(w.trim()));
    let directives: Vec<&str> = level.split(',').map(str::trim).collect();
    if directives.iter().any(|d| d.is_empty()) {
        return Err(format!("{level:?} has an empty directive"));
    }
    for d in &directives {
        let wanted = d.rsplit_once('=').map_or(*d, |(_, l)| l);
        if !is_level(wanted) {
            return Err(format!(
                "{:?} is not a level ({}) or target=level",
                crate::ingest::clip(d, 64),
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(drop)
        .map_err(|e| format!("{level:?} is not a filter directive: {e}"))
}
