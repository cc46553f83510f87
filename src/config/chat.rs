//! `[chat]`: the chat platforms approval requests are posted to (Slack, Mattermost, Teams),
//! their routes and how their callbacks are verified.

use super::*;

/// Chat approvals: where approval requests are posted and how callbacks are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ChatConfig {
    /// How chat platforms reach cordon's HTTP listener (Mattermost button integration URL).
    pub public_url: String,
    /// Posting backoff: full jitter, doubling from this...
    pub retry_initial_ms: u64,
    /// ...up to this.
    pub retry_max_ms: u64,
    /// Per HTTP call to a platform.
    pub timeout_ms: u64,
    pub slack: Option<SlackConfig>,
    pub mattermost: Option<MattermostConfig>,
    pub teams: Option<TeamsConfig>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            public_url: "http://127.0.0.1:8080".into(),
            retry_initial_ms: 500,
            retry_max_ms: 60_000,
            timeout_ms: 5_000,
            slack: None,
            mattermost: None,
            teams: None,
        }
    }
}

impl ChatConfig {
    pub fn enabled(&self) -> bool {
        self.slack.is_some() || self.mattermost.is_some() || self.teams.is_some()
    }
}

impl ChatConfig {
    pub(super) fn validate(&self, p: &mut impl FnMut(&str, String)) {
        let http_url =
            |p: &mut dyn FnMut(&str, String), key: &str, v: &str| match reqwest::Url::parse(v) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(_) => p(key, format!("{v:?} must be an http(s) URL with a host")),
                Err(e) => p(key, format!("{v:?} is not a URL: {e}")),
            };
        if self.enabled() {
            http_url(p, "chat.public_url", &self.public_url);
        }
        if self.retry_initial_ms == 0 || self.retry_initial_ms > self.retry_max_ms {
            p(
                "chat.retry_initial_ms",
                "must be at least 1 and at most chat.retry_max_ms".into(),
            );
        }
        if !(100..=120_000).contains(&self.timeout_ms) {
            p("chat.timeout_ms", "must be between 100 and 120000".into());
        }
        let routes =
            |p: &mut dyn FnMut(&str, String), key: &str, default: &str, routes: &[ChatRoute]| {
                if default.trim().is_empty() {
                    p(&format!("{key}.channel"), "must not be empty".into());
                }
                for (i, r) in routes.iter().enumerate() {
                    if r.channel.trim().is_empty() {
                        p(
                            &format!("{key}.routes.{i}.channel"),
                            "must not be empty".into(),
                        );
                    }
                    if r.min_severity_id.is_some_and(|s| !(1..=6).contains(&s)) {
                        p(
                            &format!("{key}.routes.{i}.min_severity_id"),
                            "must be between 1 and 6".into(),
                        );
                    }
                }
            };
        if let Some(s) = &self.slack {
            http_url(p, "chat.slack.api_base", &s.api_base);
            routes(p, "chat.slack", &s.channel, &s.routes);
        }
        if let Some(m) = &self.mattermost {
            http_url(p, "chat.mattermost.url", &m.url);
            routes(p, "chat.mattermost", &m.channel, &m.routes);
        }
        if let Some(t) = &self.teams {
            http_url(p, "chat.teams.token_url", &t.token_url);
            http_url(p, "chat.teams.service_url", &t.service_url);
            if t.app_id.trim().is_empty() {
                p("chat.teams.app_id", "must not be empty".into());
            }
            if t.tenant_id.as_deref().is_some_and(|x| x.trim().is_empty()) {
                p(
                    "chat.teams.tenant_id",
                    "must not be empty (leave it out to accept any tenant)".into(),
                );
            }
            match (&t.jwks_url, &t.jwks_file) {
                (Some(u), None) => http_url(p, "chat.teams.jwks_url", u),
                (None, Some(_)) => {}
                _ => p(
                    "chat.teams",
                    "set exactly one of jwks_url and jwks_file (the keys callbacks are verified with)".into(),
                ),
            }
            routes(p, "chat.teams", &t.channel, &t.routes);
        }
    }
}

/// Where a request is posted: the first route whose conditions all match, else the default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ChatRoute {
    #[serde(default)]
    pub playbook: Option<String>,
    /// OCSF severity id of the case (1 informational … 5 critical) at or above which it applies.
    #[serde(default)]
    pub min_severity_id: Option<u8>,
    pub channel: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SlackConfig {
    #[serde(default = "slack_api_base")]
    pub api_base: String,
    pub bot_token: SecretRef,
    pub signing_secret: SecretRef,
    /// When set, callbacks from other workspaces are refused.
    #[serde(default)]
    pub team_id: Option<String>,
    pub channel: String,
    #[serde(default)]
    pub routes: Vec<ChatRoute>,
}

fn slack_api_base() -> String {
    "https://slack.com/api".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct MattermostConfig {
    pub url: String,
    pub bot_token: SecretRef,
    /// Key of the per-request button secret (HMAC-SHA256 of the approval id).
    pub callback_secret: SecretRef,
    pub channel: String,
    #[serde(default)]
    pub routes: Vec<ChatRoute>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TeamsConfig {
    /// The bot's Microsoft App ID: the audience of inbound tokens, the client id of outbound.
    pub app_id: String,
    pub app_password: SecretRef,
    #[serde(default = "teams_token_url")]
    pub token_url: String,
    pub service_url: String,
    /// Conversation id.
    pub channel: String,
    #[serde(default = "teams_issuer")]
    pub issuer: String,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The Entra tenant callbacks must come from (`channelData.tenant.id`); any when unset.
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub routes: Vec<ChatRoute>,
}

fn teams_token_url() -> String {
    "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token".into()
}

fn teams_issuer() -> String {
    "https://api.botframework.com".into()
}
