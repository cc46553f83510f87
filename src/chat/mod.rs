//! Chat approvals: approval requests posted to Slack, Mattermost and Microsoft Teams, kept in
//! step with the request, and the platforms' callbacks turned into votes.
//!
//! Owns: every call to a chat platform (post, update, thread notice; retried with full-jitter
//! backoff), the layout of a request in each platform ([`view`]), and callback verification:
//! Slack's `v0` signature with its 5-minute window ([`slack`]), Mattermost's per-request
//! button secret ([`mattermost`]), the Bot Framework JWT ([`teams`]). Chat decides nothing: a
//! verified callback becomes a vote the engine checks exactly like a gRPC vote (same Cedar
//! `approve` request, with `channel` and `identity` in its context; same two-person rule,
//! expiry and per-user dedup across channels). What is owed to chat is durable (`co/` markers
//! the engine writes with each change), so an outage or a restart delays a post but never loses
//! it, and the gRPC path never waits for chat. Every post, failure and callback is audited
//! through the engine.

pub mod error;
pub mod mattermost;
pub mod slack;
pub mod teams;
pub mod view;

mod escalate;
mod inbound;
mod notify;

pub use error::ChatError;
pub use inbound::Inbound;
pub use notify::run;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::action::ActionRequest;
use crate::config::{ChatConfig, ChatRoute, Problem};
use crate::engine::{
    self, ApprovalUpdate, ChatCallback, ChatDelivery, ChatOp, ChatReply, EngineHandle, VoteCast,
    VoteError,
};
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::secret::{Secret, SecretRef};
use crate::store::Store;
use view::View;

/// How long a Slack callback id is remembered (its window is 5 minutes either way).
const SLACK_REPLAY_TTL_MINS: i64 = 15;
/// Mattermost trigger ids and Teams activity ids carry no timestamp of their own.
const OTHER_REPLAY_TTL_HOURS: i64 = 24;
/// Messages being brought up to date at once.
const CONCURRENCY: usize = 8;
/// Actions the notifier holds in memory at once (syncing, or waiting for a permit).
const IN_HAND: usize = 64;
/// How often every owed message is looked at again, whatever the notifications said.
const RESCAN_EVERY: Duration = Duration::from_secs(30);

/// A refused callback: a stable code and a message for the person who clicked.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// A message the platform accepted.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub channel: String,
    pub reference: String,
}

/// What a callback came to, for the platform's HTTP answer. `http` chooses the status from
/// the kind; chat never picks HTTP statuses.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub kind: AnswerKind,
    pub body: Value,
}

/// The kinds of callback outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// Handled: the vote was counted, or refused in a way the clicker is shown (the platform
    /// shows a message only on a success answer).
    Handled,
    /// The body could not be read as the platform's callback.
    Malformed,
    /// Its origin was not proven: a bad signature, token or JWT, stale, replayed, or from
    /// another workspace.
    Unauthenticated,
    /// That platform's approvals are not configured.
    NotConfigured,
    /// Nothing could be recorded now; the platform should retry.
    Unavailable,
}

enum Kind {
    Slack(slack::Slack),
    Mattermost(mattermost::Mattermost),
    Teams(teams::Teams),
}

struct Platform {
    name: &'static str,
    channel: String,
    routes: Vec<ChatRoute>,
    kind: Kind,
}

impl Platform {
    fn channel_for(&self, a: &ActionRequest, severity_id: i64) -> &str {
        self.routes
            .iter()
            .find(|r| {
                r.playbook.as_ref().is_none_or(|p| *p == a.playbook)
                    && r.min_severity_id
                        .is_none_or(|min| severity_id >= i64::from(min))
            })
            .map_or(&self.channel, |r| &r.channel)
    }

    async fn post(
        &self,
        http: &reqwest::Client,
        channel: &str,
        v: &View,
    ) -> Result<Delivered, ChatError> {
        match &self.kind {
            Kind::Slack(s) => s.post(http, channel, v).await,
            Kind::Mattermost(m) => m.post(http, channel, v).await,
            Kind::Teams(t) => t.post(http, channel, v).await,
        }
    }

    async fn update(
        &self,
        http: &reqwest::Client,
        channel: &str,
        reference: &str,
        v: &View,
    ) -> Result<(), ChatError> {
        match &self.kind {
            Kind::Slack(s) => s.update(http, channel, reference, v).await,
            Kind::Mattermost(m) => m.update(http, reference, v).await,
            Kind::Teams(t) => t.update(http, channel, reference, v).await,
        }
    }

    async fn post_text(
        &self,
        http: &reqwest::Client,
        channel: &str,
        text: &str,
    ) -> Result<String, ChatError> {
        match &self.kind {
            Kind::Slack(s) => s.post_text(http, channel, text).await,
            Kind::Mattermost(m) => m.post_text(http, channel, text).await,
            Kind::Teams(t) => t.post_text(http, channel, text).await,
        }
    }

    /// Posts plain text (an escalation) to `channel`, made inert in the platform's markup
    /// first: it carries outside values (a case title) that must not mention, link or format.
    async fn post_plain(
        &self,
        http: &reqwest::Client,
        channel: &str,
        text: &str,
    ) -> Result<String, ChatError> {
        let text = match &self.kind {
            // Slack escapes every text it posts.
            Kind::Slack(_) => text.to_string(),
            Kind::Mattermost(_) | Kind::Teams(_) => view::markdown_text(text),
        };
        self.post_text(http, channel, &text).await
    }

    /// Posts a notice (plain text, escaped by each platform) to the thread of `reference`.
    async fn thread(
        &self,
        http: &reqwest::Client,
        channel: &str,
        reference: &str,
        text: &str,
    ) -> Result<(), ChatError> {
        match &self.kind {
            Kind::Slack(s) => s.thread(http, channel, reference, text).await,
            Kind::Mattermost(m) => m.thread(http, channel, reference, text).await,
            Kind::Teams(t) => t.thread(http, channel, reference, text).await,
        }
    }
}

/// The configured chat platforms, their secrets resolved.
pub struct Chat {
    platforms: Vec<Platform>,
    http: reqwest::Client,
    retry_initial: Duration,
    retry_max: Duration,
}

fn resolve(r: &SecretRef, key: &str, problems: &mut Vec<Problem>) -> Option<Secret> {
    match r.resolve() {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(Problem::new("config", key, e.to_string()));
            None
        }
    }
}

impl Chat {
    /// Resolves secrets and loads the Teams keys; `None` when no platform is configured.
    pub fn build(cfg: &ChatConfig) -> Result<Option<Arc<Chat>>, Vec<Problem>> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let mut problems = Vec::new();
        let mut platforms = Vec::new();
        if let Some(s) = &cfg.slack {
            let bot = resolve(&s.bot_token, "chat.slack.bot_token", &mut problems);
            let signing = resolve(
                &s.signing_secret,
                "chat.slack.signing_secret",
                &mut problems,
            );
            if let (Some(bot_token), Some(signing_secret)) = (bot, signing) {
                platforms.push(Platform {
                    name: "slack",
                    channel: s.channel.clone(),
                    routes: s.routes.clone(),
                    kind: Kind::Slack(slack::Slack {
                        api_base: s.api_base.clone(),
                        bot_token,
                        signing_secret,
                        team_id: s.team_id.clone(),
                    }),
                });
            }
        }
        if let Some(m) = &cfg.mattermost {
            let bot = resolve(&m.bot_token, "chat.mattermost.bot_token", &mut problems);
            let key = resolve(
                &m.callback_secret,
                "chat.mattermost.callback_secret",
                &mut problems,
            );
            if let (Some(bot_token), Some(callback_secret)) = (bot, key) {
                platforms.push(Platform {
                    name: "mattermost",
                    channel: m.channel.clone(),
                    routes: m.routes.clone(),
                    kind: Kind::Mattermost(mattermost::Mattermost {
                        url: m.url.clone(),
                        bot_token,
                        callback_secret,
                        action_url: format!(
                            "{}/v1/chat/mattermost/actions",
                            cfg.public_url.trim_end_matches('/')
                        ),
                    }),
                });
            }
        }
        if let Some(t) = &cfg.teams {
            let password = resolve(&t.app_password, "chat.teams.app_password", &mut problems);
            let keys = match &t.jwks_file {
                Some(f) => match std::fs::read_to_string(f)
                    .map_err(|e| e.to_string())
                    .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
                {
                    Ok(k) => Some(k),
                    Err(e) => {
                        problems.push(Problem::new(
                            "config",
                            "chat.teams.jwks_file",
                            format!("{}: not a readable JWKS document: {e}", f.display()),
                        ));
                        None
                    }
                },
                None => Some(jsonwebtoken::jwk::JwkSet { keys: vec![] }),
            };
            if let (Some(pw), Some(keys)) = (password, keys) {
                platforms.push(Platform {
                    name: "teams",
                    channel: t.channel.clone(),
                    routes: t.routes.clone(),
                    kind: Kind::Teams(teams::Teams::new(
                        t.app_id.clone(),
                        pw,
                        t.token_url.clone(),
                        t.service_url.clone(),
                        t.issuer.clone(),
                        t.jwks_url.clone(),
                        t.tenant_id.clone(),
                        keys,
                    )),
                });
            }
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.min(10_000)))
            .user_agent(concat!("cordon/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| vec![Problem::new("config", "chat", format!("HTTP client: {e}"))])?;
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Some(Arc::new(Chat {
            platforms,
            http,
            retry_initial: Duration::from_millis(cfg.retry_initial_ms),
            retry_max: Duration::from_millis(cfg.retry_max_ms),
        })))
    }

    /// Posts a plain message (a scheduled report or digest) to `channel` on `platform`.
    pub async fn post_text(
        &self,
        platform: &str,
        channel: &str,
        text: &str,
    ) -> Result<(), ChatError> {
        let p = self
            .platform(platform)
            .ok_or_else(|| ChatError::NoPlatform(platform.to_string()))?;
        p.post_text(&self.http, channel, text).await.map(|_| ())
    }

    /// Platform names, for logs and `/readyz`.
    pub fn platform_names(&self) -> Vec<&'static str> {
        self.platforms.iter().map(|p| p.name).collect()
    }

    fn platform(&self, name: &str) -> Option<&Platform> {
        self.platforms.iter().find(|p| p.name == name)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .retry_initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.retry_max);
        let ms = fastrand::u64(self.retry_initial.as_millis() as u64 / 2..=cap.as_millis() as u64);
        Duration::from_millis(ms)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers shared by the platforms.

/// A transport error in words, without the URL (which may carry a token in a query).
fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

/// Sends `body` as JSON and returns the JSON answer of a 2xx; anything else is an error that
/// names the status and the platform's error field, never the request.
async fn send_json(req: reqwest::RequestBuilder, body: &Value) -> Result<Value, ChatError> {
    let resp = req
        .json(body)
        .send()
        .await
        .map_err(|e| ChatError::Transport(describe(&e)))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let why = v["error"]
            .as_str()
            .or_else(|| v["message"].as_str())
            .map(|s| view::clip(s, 200));
        return Err(ChatError::Status {
            status: status.as_u16(),
            why,
        });
    }
    Ok(v)
}

async fn post_json(req: reqwest::RequestBuilder, body: &Value) -> Result<Value, ChatError> {
    send_json(req, body).await
}

#[cfg(test)]
mod tests {
    use super::inbound::response_url_allowed;

    #[test]
    fn response_urls_go_only_to_slack() {
        assert!(response_url_allowed(
            "https://slack.com/api",
            "https://hooks.slack.com/actions/T/1/x"
        ));
        assert!(response_url_allowed(
            "http://127.0.0.1:9/api",
            "http://127.0.0.1:9/_response/1"
        ));
        assert!(!response_url_allowed(
            "http://127.0.0.1:9/api",
            "http://127.0.0.1:10/_response/1"
        ));
        assert!(!response_url_allowed(
            "https://slack.com/api",
            "http://hooks.slack.com/x"
        ));
        assert!(!response_url_allowed(
            "https://slack.com/api",
            "https://evil.example/x"
        ));
    }
}
