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

pub mod mattermost;
pub mod slack;
pub mod teams;
pub mod view;

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

/// An answer for the platform's HTTP callback.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
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
    ) -> Result<Delivered, String> {
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
    ) -> Result<(), String> {
        match &self.kind {
            Kind::Slack(s) => s.update(http, channel, reference, v).await,
            Kind::Mattermost(m) => m.update(http, reference, v).await,
            Kind::Teams(t) => t.update(http, channel, reference, v).await,
        }
    }

    async fn thread(
        &self,
        http: &reqwest::Client,
        channel: &str,
        reference: &str,
        text: &str,
    ) -> Result<(), String> {
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
// Outbound: keeping the messages in step with the requests.

/// Posts and updates messages for every action the engine marks as owed, until shutdown.
pub async fn run(
    chat: Arc<Chat>,
    engine: EngineHandle,
    store: Store,
    policies: Policies,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    for p in &chat.platforms {
        if let Kind::Teams(t) = &p.kind
            && let Err(e) = t.refresh_keys(&chat.http).await
        {
            tracing::warn!(error = %e, "Bot Framework signing keys could not be fetched; Teams callbacks are refused until they are");
        }
    }
    let mut rx = engine.subscribe();
    let n = Notifier {
        chat,
        metrics,
        engine,
        store,
        policies,
        cancel: cancel.clone(),
        inflight: Arc::new(Mutex::new(HashMap::new())),
        missed: Arc::new(AtomicBool::new(false)),
        permits: Arc::new(Semaphore::new(CONCURRENCY)),
    };
    n.rescan();
    let mut every = tokio::time::interval(RESCAN_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = every.tick() => n.rescan(),
            u = rx.recv() => match u {
                Ok(ApprovalUpdate::Changed(a)) => {
                    if a.owes_chat() {
                        n.kick(a.action_id.clone());
                    }
                }
                Ok(ApprovalUpdate::Escalation { action_id, .. }) => n.kick(action_id),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => n.rescan(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

#[derive(Clone)]
struct Notifier {
    chat: Arc<Chat>,
    metrics: Metrics,
    engine: EngineHandle,
    store: Store,
    policies: Policies,
    cancel: CancellationToken,
    /// Actions being synced, and whether they changed again meanwhile.
    inflight: Arc<Mutex<HashMap<String, bool>>>,
    /// A kick found no room: rescan the store once room frees up.
    missed: Arc<AtomicBool>,
    permits: Arc<Semaphore>,
}

impl Notifier {
    fn rescan(&self) {
        match engine::read::chat_owed(&self.store) {
            Ok(ids) => ids.into_iter().for_each(|id| self.kick(id)),
            Err(e) => tracing::error!(error = %e, "cannot read what is owed to chat"),
        }
    }

    /// Brings `id`'s messages up to date, now or right after the sync already running. At
    /// most [`IN_HAND`] actions are in hand; the rest stay owed in the store (`co/`) and the
    /// next rescan takes them up, so a backlog costs no memory and holds nothing at shutdown.
    fn kick(&self, id: String) {
        {
            let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(dirty) = m.get_mut(&id) {
                *dirty = true;
                return;
            }
            if self.cancel.is_cancelled() {
                return;
            }
            if m.len() >= IN_HAND {
                self.missed.store(true, Ordering::Relaxed);
                return;
            }
            m.insert(id.clone(), false);
        }
        let n = self.clone();
        tokio::spawn(async move {
            // Shutdown does not wait for chat: what is still owed is posted after the restart.
            let permit = tokio::select! {
                _ = n.cancel.cancelled() => None,
                p = n.permits.clone().acquire_owned() => p.ok(),
            };
            let Some(_permit) = permit else {
                n.inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                return;
            };
            loop {
                tokio::select! {
                    _ = n.cancel.cancelled() => {}
                    _ = n.sync(&id) => {}
                }
                {
                    let mut m = n.inflight.lock().unwrap_or_else(|e| e.into_inner());
                    match m.get_mut(&id) {
                        Some(dirty) if *dirty && !n.cancel.is_cancelled() => {
                            *dirty = false;
                            continue;
                        }
                        _ => {
                            m.remove(&id);
                        }
                    }
                }
                if n.missed.swap(false, Ordering::Relaxed) && !n.cancel.is_cancelled() {
                    n.rescan();
                }
                return;
            }
        });
    }

    /// Retries until every platform shows the action as stored, or shutdown.
    async fn sync(&self, id: &str) {
        let mut attempt: u32 = 0;
        loop {
            let generation = match self.store.get(&engine::keys::chat_owed(id)) {
                Ok(Some(g)) => String::from_utf8_lossy(&g).to_string(),
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read what is owed to chat");
                    String::new()
                }
            };
            attempt += 1;
            let ok = !generation.is_empty() && self.sync_once(id, attempt).await;
            if ok {
                let op = ChatOp::Synced {
                    action_id: id.to_string(),
                    generation,
                };
                if self.engine.chat(op).await.is_ok() {
                    return;
                }
            }
            let wait = self.chat.backoff(attempt);
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass over every platform; whether all of them are up to date.
    async fn sync_once(&self, id: &str, attempt: u32) -> bool {
        let Ok(Some(a)) = engine::read::action(&self.store, id) else {
            return false;
        };
        let case = engine::read::case(&self.store, &a.case_id).ok().flatten();
        // Votes count on the request as the policy set in force hashes it (the engine's rule).
        let v = View::of(&a, case.as_ref(), &self.policies.current().hash);
        let rendered = v.hash();
        let severity = case.as_ref().map_or(0, |c| c.severity.id());
        let mut all = true;
        for p in &self.chat.platforms {
            let post = a.chat.iter().find(|x| x.platform == p.name);
            let deliver = |purpose: &'static str,
                           d: Result<Delivered, String>,
                           notice: Option<String>| match d {
                Ok(d) => ChatOp::Delivered(ChatDelivery {
                    action_id: id.to_string(),
                    platform: p.name,
                    purpose,
                    channel: d.channel,
                    reference: d.reference,
                    attempt,
                    rendered: (purpose != "thread").then(|| rendered.clone()),
                    notice,
                }),
                Err(error) => {
                    tracing::warn!(platform = p.name, purpose, action_id = id, attempt, error = %error, "chat post failed; it will be retried");
                    ChatOp::Failed {
                        action_id: id.to_string(),
                        platform: p.name,
                        purpose,
                        channel: p.channel_for(&a, severity).to_string(),
                        attempt,
                        error,
                    }
                }
            };
            let mut ops = Vec::new();
            match post {
                None if a.owes_chat() => {
                    let channel = p.channel_for(&a, severity);
                    let r = p.post(&self.chat.http, channel, &v).await;
                    ops.push(deliver("request", r, None));
                }
                None => {}
                Some(post) => {
                    if post.rendered != rendered {
                        let r = p
                            .update(&self.chat.http, &post.channel, &post.reference, &v)
                            .await
                            .map(|()| Delivered {
                                channel: post.channel.clone(),
                                reference: post.reference.clone(),
                            });
                        ops.push(deliver("update", r, None));
                    }
                    for notice in v.notices.iter().filter(|n| !post.notices.contains(n)) {
                        let r = p
                            .thread(
                                &self.chat.http,
                                &post.channel,
                                &post.reference,
                                &v.notice_text(notice),
                            )
                            .await
                            .map(|()| Delivered {
                                channel: post.channel.clone(),
                                reference: post.reference.clone(),
                            });
                        ops.push(deliver("thread", r, Some(notice.clone())));
                    }
                }
            }
            for op in ops {
                let failed = matches!(op, ChatOp::Failed { .. });
                all &= !failed;
                let outcome = if failed { "failed" } else { "posted" };
                Metrics::chat(&self.metrics.chat_posts, p.name, outcome);
                if self.engine.chat(op).await.is_err() {
                    all = false;
                }
            }
        }
        all
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound: callbacks.

/// Turns verified callbacks into votes; refuses the rest, recording each.
#[derive(Clone)]
pub struct Inbound {
    chat: Arc<Chat>,
    engine: EngineHandle,
    policies: Policies,
    metrics: Metrics,
    unverified: Arc<Mutex<Window>>,
}

/// Callbacks that fail verification are recorded in the audit store, but anyone can send them:
/// at most [`UNVERIFIED_RECORDS_PER_MIN`] per minute are recorded; the rest are counted (metric
/// and log) and their number is added to the next record.
const UNVERIFIED_RECORDS_PER_MIN: u32 = 60;

struct Window {
    started: std::time::Instant,
    recorded: u32,
    suppressed: u64,
}

fn refused_answer(r: &Refusal) -> Answer {
    let status = match r.code {
        "malformed" => 400,
        // A verified callback from another workspace is refused like an unverified one.
        "bad_signature" | "stale_timestamp" | "replayed" | "bad_token" | "bad_jwt"
        | "wrong_team" => 401,
        _ => 200,
    };
    Answer {
        status,
        body: json!({"ok": false, "code": r.code, "message": r.message}),
    }
}

/// What one callback amounts to once verified and parsed.
struct Parsed {
    platform: &'static str,
    replay_key: Option<String>,
    replay_ttl: chrono::Duration,
    platform_user: String,
    approval_id: String,
    decision: String,
    identity: &'static str,
    detail: Value,
}

impl Inbound {
    pub fn new(
        chat: Arc<Chat>,
        engine: EngineHandle,
        policies: Policies,
        metrics: Metrics,
    ) -> Inbound {
        Inbound {
            chat,
            engine,
            policies,
            metrics,
            unverified: Arc::new(Mutex::new(Window {
                started: std::time::Instant::now(),
                recorded: 0,
                suppressed: 0,
            })),
        }
    }

    /// Whether an unverified refusal may be recorded now; `Some(n)` = yes, `n` were dropped
    /// since the last one recorded.
    fn may_record_unverified(&self) -> Option<u64> {
        let mut w = self.unverified.lock().unwrap_or_else(|e| e.into_inner());
        if w.started.elapsed() >= Duration::from_secs(60) {
            w.started = std::time::Instant::now();
            w.recorded = 0;
        }
        if w.recorded >= UNVERIFIED_RECORDS_PER_MIN {
            w.suppressed += 1;
            return None;
        }
        w.recorded += 1;
        Some(std::mem::take(&mut w.suppressed))
    }

    fn not_configured(platform: &str) -> Answer {
        Answer {
            status: 404,
            body: json!({"ok": false, "code": "not_configured", "message": format!("{platform} approvals are not configured")}),
        }
    }

    /// Records a callback refused before it could be attributed to anyone.
    async fn refuse(
        &self,
        platform: &'static str,
        r: Refusal,
        replay_key: Option<String>,
        mut detail: Value,
    ) -> Answer {
        Metrics::chat(&self.metrics.chat_callbacks, platform, r.code);
        if replay_key.is_none() {
            // Not authenticated: bounded recording.
            match self.may_record_unverified() {
                None => {
                    tracing::warn!(
                        platform,
                        code = r.code,
                        "chat callback refused (not recorded: too many unverified callbacks this minute)"
                    );
                    return refused_answer(&r);
                }
                Some(0) => {}
                Some(n) => {
                    if !detail.is_object() {
                        detail = json!({});
                    }
                    detail["unrecorded_refusals_before"] = json!(n);
                }
            }
        }
        tracing::warn!(platform, code = r.code, reason = %r.message, "chat callback refused");
        let cb = ChatCallback {
            platform,
            replay_key,
            replay_ttl: chrono::Duration::hours(OTHER_REPLAY_TTL_HOURS),
            platform_user: String::new(),
            approval_id: String::new(),
            decision: String::new(),
            verdict: Err((r.code, r.message.clone())),
            detail,
        };
        match self.engine.chat(ChatOp::Callback(cb)).await {
            Ok(ChatReply::Refused(code, message)) => refused_answer(&Refusal::new(code, message)),
            Ok(_) => refused_answer(&r),
            Err(e) => store_down(&e.to_string()),
        }
    }

    /// Maps the platform user, then hands the vote (or the refusal) to the engine.
    async fn decide(&self, p: Parsed, team_refusal: Option<Refusal>) -> Result<String, Refusal> {
        let user = self
            .policies
            .current()
            .chat_user(p.platform, &p.platform_user)
            .map(str::to_string);
        let verdict = match (team_refusal, user) {
            (Some(r), _) => Err((r.code, r.message)),
            (None, None) => Err((
                "unknown_user",
                format!(
                    "{} user {:?} is not mapped to a cordon user",
                    p.platform, p.platform_user
                ),
            )),
            (None, Some(user)) => Ok(VoteCast {
                approval_id: p.approval_id.clone(),
                user,
                channel: p.platform.to_string(),
                identity: p.identity.to_string(),
                approve: p.decision == "approve",
                request_hash: None,
                comment: String::new(),
            }),
        };
        let cb = ChatCallback {
            platform: p.platform,
            replay_key: p.replay_key,
            replay_ttl: p.replay_ttl,
            platform_user: p.platform_user,
            approval_id: p.approval_id,
            decision: p.decision,
            verdict,
            detail: p.detail,
        };
        let platform = cb.platform;
        let r = match self.engine.chat(ChatOp::Callback(cb)).await {
            Ok(ChatReply::Voted(v)) => match *v {
                Ok(o) => Ok(o.outcome.to_string()),
                Err(VoteError::Store(e)) => Err(Refusal::new("store_unavailable", e)),
                Err(e) => Err(Refusal::new("vote_refused", e.to_string())),
            },
            Ok(ChatReply::Refused(code, message)) => Err(Refusal::new(code, message)),
            Ok(ChatReply::Recorded) => Err(Refusal::new("vote_refused", "not counted")),
            Err(e) => Err(Refusal::new("store_unavailable", e.to_string())),
        };
        let outcome = match &r {
            Ok(_) => "accepted",
            Err(refusal) => refusal.code,
        };
        Metrics::chat(&self.metrics.chat_callbacks, platform, outcome);
        r
    }

    fn answer(r: &Result<String, Refusal>) -> Answer {
        match r {
            Ok(outcome) => Answer {
                status: 200,
                body: json!({"ok": true, "outcome": outcome}),
            },
            Err(r) if r.code == "store_unavailable" => store_down(&r.message),
            Err(r) => refused_answer(r),
        }
    }

    /// `POST /v1/chat/slack/interactions`.
    pub async fn slack(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        raw: &[u8],
    ) -> Answer {
        let Some(Platform {
            kind: Kind::Slack(s),
            ..
        }) = self.chat.platform("slack")
        else {
            return Self::not_configured("slack");
        };
        let sig = match s.verify(timestamp, signature, raw, chrono::Utc::now().timestamp()) {
            Ok(sig) => sig,
            Err(r) => {
                return self
                    .refuse("slack", r, None, json!({"timestamp": timestamp}))
                    .await;
            }
        };
        let i = match slack::parse_interaction(raw) {
            Ok(i) => i,
            Err(r) => return self.refuse("slack", r, Some(sig), Value::Null).await,
        };
        let team_refusal = match (&s.team_id, &i.team) {
            (Some(want), got) if got.as_deref() != Some(want.as_str()) => Some(Refusal::new(
                "wrong_team",
                format!("callbacks are accepted from workspace {want} only"),
            )),
            _ => None,
        };
        let response_url = i.response_url.clone();
        let r = self
            .decide(
                Parsed {
                    platform: "slack",
                    replay_key: Some(sig),
                    replay_ttl: chrono::Duration::minutes(SLACK_REPLAY_TTL_MINS),
                    platform_user: i.user,
                    approval_id: i.approval_id,
                    decision: i.decision,
                    identity: "chat",
                    detail: i.detail,
                },
                team_refusal,
            )
            .await;
        if let (Err(refusal), Some(url)) = (&r, response_url)
            && response_url_allowed(&s.api_base, &url)
        {
            // Tell the person who clicked, without holding up Slack's 3-second deadline.
            let http = self.chat.http.clone();
            let text = format!("Your vote was not counted: {}", refusal.message);
            tokio::spawn(async move {
                let body =
                    json!({"response_type": "ephemeral", "replace_original": false, "text": text});
                if let Err(e) = post_json(http.post(url), &body).await {
                    tracing::warn!(error = %e, "could not tell the Slack user why their vote was refused");
                }
            });
        }
        Self::answer(&r)
    }

    /// `POST /v1/chat/mattermost/actions`.
    pub async fn mattermost(&self, raw: &[u8]) -> Answer {
        let Some(Platform {
            kind: Kind::Mattermost(m),
            ..
        }) = self.chat.platform("mattermost")
        else {
            return Self::not_configured("mattermost");
        };
        let c = match mattermost::parse_click(raw) {
            Ok(c) => c,
            Err(r) => return self.refuse("mattermost", r, None, Value::Null).await,
        };
        if let Err(r) = m.verify_token(&c.approval_id, &c.token) {
            let detail = json!({"approval_id": c.approval_id, "user_id": c.user});
            return self.refuse("mattermost", r, None, detail).await;
        }
        let r = self
            .decide(
                Parsed {
                    platform: "mattermost",
                    replay_key: c.trigger_id.clone(),
                    replay_ttl: chrono::Duration::hours(OTHER_REPLAY_TTL_HOURS),
                    platform_user: c.user,
                    approval_id: c.approval_id,
                    decision: c.decision,
                    identity: "chat",
                    detail: c.detail,
                },
                None,
            )
            .await;
        let mut a = Self::answer(&r);
        if a.status == 200 {
            let text = match &r {
                Ok(outcome) => format!("Your vote was recorded: {outcome}"),
                Err(refusal) => format!("Your vote was not counted: {}", refusal.message),
            };
            a.body["ephemeral_text"] = json!(text);
        }
        a
    }

    /// `POST /v1/chat/teams/messages`.
    pub async fn teams(&self, authorization: Option<&str>, raw: &[u8]) -> Answer {
        let Some(Platform {
            kind: Kind::Teams(t),
            ..
        }) = self.chat.platform("teams")
        else {
            return Self::not_configured("teams");
        };
        let activity: Value = match crate::ingest::json::parse(raw) {
            Ok(v) => v,
            Err(e) => {
                // Authenticate first even when the body is broken, so garbage from anyone is
                // not audited as a Teams callback with a verified origin.
                let r = t
                    .verify(&self.chat.http, authorization, &Value::Null)
                    .await
                    .err();
                let r = r.unwrap_or_else(|| Refusal::new("malformed", format!("not JSON: {e}")));
                return self.refuse("teams", r, None, Value::Null).await;
            }
        };
        if let Err(r) = t.verify(&self.chat.http, authorization, &activity).await {
            return self.refuse("teams", r, None, Value::Null).await;
        }
        let inv = match teams::parse_invoke(&activity) {
            Ok(i) => i,
            Err(r) => return self.refuse("teams", r, None, Value::Null).await,
        };
        let r = self
            .decide(
                Parsed {
                    platform: "teams",
                    replay_key: inv.activity_id.clone(),
                    replay_ttl: chrono::Duration::hours(OTHER_REPLAY_TTL_HOURS),
                    platform_user: inv.user,
                    approval_id: inv.approval_id,
                    decision: inv.decision,
                    identity: "entra",
                    detail: inv.detail,
                },
                None,
            )
            .await;
        let mut a = Self::answer(&r);
        if a.status == 200 {
            let text = match &r {
                Ok(outcome) => format!("Your vote was recorded: {outcome}"),
                Err(refusal) => format!("Your vote was not counted: {}", refusal.message),
            };
            a.body = json!({"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": text});
        }
        a
    }
}

fn store_down(message: &str) -> Answer {
    Answer {
        status: 503,
        body: json!({"ok": false, "code": "store_unavailable", "message": format!("the vote was not recorded: {message}; try again")}),
    }
}

/// Slack's `response_url` is followed only to Slack itself (or the configured API's origin).
fn response_url_allowed(api_base: &str, url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let origin = u.origin();
    reqwest::Url::parse(api_base).is_ok_and(|b| b.origin() == origin)
        || (u.scheme() == "https" && u.host_str() == Some("hooks.slack.com"))
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers shared by the platforms.

/// A transport error in words, without the URL (which may carry a token in a query).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

/// Sends `body` as JSON and returns the JSON answer of a 2xx; anything else is an error that
/// names the status and the platform's error field, never the request.
async fn send_json(req: reqwest::RequestBuilder, body: &Value) -> Result<Value, String> {
    let resp = req.json(body).send().await.map_err(|e| describe(&e))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let why = v["error"]
            .as_str()
            .or_else(|| v["message"].as_str())
            .map(|s| format!(": {}", view::clip(s, 200)))
            .unwrap_or_default();
        return Err(format!("HTTP {}{why}", status.as_u16()));
    }
    Ok(v)
}

async fn post_json(req: reqwest::RequestBuilder, body: &Value) -> Result<Value, String> {
    send_json(req, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
