//! Inbound chat callbacks: verified, then turned into votes.
//!
//! Owns: verifying each platform's callback (Slack signature and window, Mattermost
//! per-request secret, Bot Framework JWT), replay protection, the rate-limited record of
//! refused callbacks, and handing a verified click to the engine's vote path.

use super::*;

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
    let kind = match r.code {
        "malformed" => AnswerKind::Malformed,
        // A verified callback from another workspace is refused like an unverified one.
        "bad_signature" | "stale_timestamp" | "replayed" | "bad_token" | "bad_jwt"
        | "wrong_team" => AnswerKind::Unauthenticated,
        _ => AnswerKind::Handled,
    };
    Answer {
        kind,
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
            kind: AnswerKind::NotConfigured,
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
                kind: AnswerKind::Handled,
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
            // The refusal can quote what the callback carried (an unmapped user's id).
            let text = format!(
                "Your vote was not counted: {}",
                slack::escape(&refusal.message)
            );
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
        if a.kind == AnswerKind::Handled {
            let text = match &r {
                Ok(outcome) => format!("Your vote was recorded: {outcome}"),
                Err(refusal) => format!(
                    "Your vote was not counted: {}",
                    view::markdown_text(&refusal.message)
                ),
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
        if let Err(r) = t.check_origin(&activity) {
            let said = |v: &Value| v.as_str().map(|s| super::view::clip(s, 200));
            let detail = json!({"channel_id": said(&activity["channelId"]),
                                "service_url": said(&activity["serviceUrl"]),
                                "tenant": said(&activity["channelData"]["tenant"]["id"])});
            return self.refuse("teams", r, None, detail).await;
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
        if a.kind == AnswerKind::Handled {
            let text = match &r {
                Ok(outcome) => format!("Your vote was recorded: {outcome}"),
                Err(refusal) => format!(
                    "Your vote was not counted: {}",
                    view::markdown_text(&refusal.message)
                ),
            };
            a.body = json!({"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": text});
        }
        a
    }
}

fn store_down(message: &str) -> Answer {
    Answer {
        kind: AnswerKind::Unavailable,
        body: json!({"ok": false, "code": "store_unavailable", "message": format!("the vote was not recorded: {message}; try again")}),
    }
}

/// Slack's `response_url` is followed only to Slack itself (or the configured API's origin).
pub(super) fn response_url_allowed(api_base: &str, url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let origin = u.origin();
    reqwest::Url::parse(api_base).is_ok_and(|b| b.origin() == origin)
        || (u.scheme() == "https" && u.host_str() == Some("hooks.slack.com"))
}
