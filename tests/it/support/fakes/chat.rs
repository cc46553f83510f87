//! Fake chat platforms for the chat-approval tests, on the shared [`FakeServer`] (request log and
//! armed faults included), plus builders of the callbacks the platforms send to cordon:
//!
//! - [`FakeSlack`]: Web API `chat.postMessage` / `chat.update` (Bearer bot token; Slack's limits
//!   of 4000 characters of `text` and 3000 per section text; `thread_ts` replies kept per parent)
//!   and a `/_response/<id>` endpoint standing in for interaction `response_url`s. It can be
//!   switched down (HTTP 500, 429 `ratelimited`, or HTTP 200 `{"ok":false,...}`) and back up.
//!   [`SlackInteraction`] + [`SlackCallback`] build a correctly signed `block_actions` callback
//!   (`v0=hex(HMAC_SHA256(secret, "v0:" + ts + ":" + body))`) and tamper with it.
//! - [`FakeMattermost`]: `POST /api/v4/posts` (201), `PUT /api/v4/posts/{id}/patch`; [`MmPost`]
//!   reads the button context cordon put in a post and builds the action callback Mattermost's
//!   server would send for a given user.
//! - [`FakeBotFramework`]: the client-credentials token endpoint, the Bot Connector
//!   conversation endpoints (post, update, reply) and a JWKS endpoint (or [`write_jwks`]);
//!   [`mint_jwt`] / [`mint_bad_jwt`] sign RS256 Bot Framework tokens with an RSA key generated in
//!   the test process ([`trusted_key`]; [`rogue_key`] is a second key nobody trusts).
//!
//! Everything binds `127.0.0.1:0`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{
    FakeServer, Faults, Req, RequestLog, enc, json_response, lock, rand_alnum, rand_hex, set_header,
};
use crate::support::auth::{AadApp, AuthMode, Tokens, hmac_hex};

/// How a switched-down platform answers its API calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Down {
    /// HTTP 500.
    Http500,
    /// HTTP 429 with `Retry-After: 1` and Slack's `{"ok":false,"error":"ratelimited"}`.
    RateLimited,
    /// HTTP 200 `{"ok":false,"error":"ratelimited"}` (Slack only; the others answer 503).
    OkFalse,
}

/// Every string value under a `"text"`, `"message"`, `"title"`, `"value"`, `"fallback"` or
/// `"pretext"` key (recursively), and the strings of arrays of `"fields"`: what a person reads.
fn visible_text(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s)
                        if matches!(
                            k.as_str(),
                            "text" | "message" | "title" | "value" | "fallback" | "pretext"
                        ) =>
                    {
                        out.push_str(s);
                        out.push('\n');
                    }
                    _ => visible_text(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| visible_text(x, out)),
        _ => {}
    }
}

// =============================================================================================
// Slack
// =============================================================================================

/// One message as the fake Slack holds it (a top-level post or a thread reply), or one
/// `chat.update` call.
#[derive(Clone, Debug)]
pub struct SlackMessage {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub text: String,
    pub blocks: Value,
}

impl SlackMessage {
    /// `text` and every human-readable string of the blocks, newline-separated.
    pub fn all_text(&self) -> String {
        let mut s = format!("{}\n", self.text);
        visible_text(&self.blocks, &mut s);
        s
    }
    /// The `actions` blocks.
    pub fn actions_blocks(&self) -> Vec<&Value> {
        self.blocks
            .as_array()
            .map(|b| b.iter().filter(|b| b["type"] == "actions").collect())
            .unwrap_or_default()
    }
    /// The button element with `action_id`, in any actions block.
    pub fn button(&self, action_id: &str) -> Option<&Value> {
        self.actions_blocks()
            .into_iter()
            .filter_map(|b| b["elements"].as_array())
            .flatten()
            .find(|e| e["type"] == "button" && e["action_id"] == action_id)
    }
    pub fn has_buttons(&self) -> bool {
        self.button("approve").is_some() || self.button("deny").is_some()
    }
    /// Whether the message is about `approval_id` (block id, a button value, or the text).
    pub fn is_about(&self, approval_id: &str) -> bool {
        self.actions_blocks()
            .iter()
            .any(|b| b["block_id"] == format!("approval:{approval_id}").as_str())
            || self.all_text().contains(approval_id)
            || self.blocks.to_string().contains(approval_id)
    }
}

#[derive(Default)]
struct SlackState {
    down: Option<Down>,
    seq: u64,
    /// Top-level posts and thread replies, as posted (never modified).
    posted: Vec<SlackMessage>,
    /// Every successful chat.update, in order.
    updates: Vec<SlackMessage>,
    /// Bodies POSTed to `/_response/<id>`.
    responses: Vec<(String, Value)>,
    /// Error codes answered to API calls that reached the handler (not faults).
    errors: Vec<String>,
}

struct SlackInner {
    token: String,
    st: Mutex<SlackState>,
}

/// A stateful fake Slack Web API.
pub struct FakeSlack {
    pub server: FakeServer,
    inner: Arc<SlackInner>,
}

impl FakeSlack {
    pub async fn start(bot_token: &str) -> FakeSlack {
        let inner = Arc::new(SlackInner {
            token: bot_token.into(),
            st: Mutex::new(SlackState::default()),
        });
        let router = Router::new()
            .fallback(slack_handle)
            .with_state(inner.clone());
        FakeSlack {
            server: FakeServer::start(router).await,
            inner,
        }
    }
    pub fn url(&self) -> String {
        self.server.url()
    }
    /// What cordon's `chat.slack.api_base` is set to.
    pub fn api_base(&self) -> String {
        format!("{}/api", self.url())
    }
    /// A `response_url` on this fake (same origin as `api_base`).
    pub fn response_url(&self, id: &str) -> String {
        format!("{}/_response/{id}", self.url())
    }
    pub fn faults(&self) -> &Faults {
        &self.server.faults
    }
    pub fn log(&self) -> &RequestLog {
        &self.server.log
    }
    /// Switches the Web API down (`Some`) or back up (`None`). `response_url` posts still work.
    pub fn set_down(&self, down: Option<Down>) {
        lock(&self.inner.st).down = down;
    }
    /// Top-level messages as posted (not threads), in order.
    pub fn posts(&self) -> Vec<SlackMessage> {
        lock(&self.inner.st)
            .posted
            .iter()
            .filter(|m| m.thread_ts.is_none())
            .cloned()
            .collect()
    }
    /// The first top-level message about `approval_id`, as posted.
    pub fn post_for(&self, approval_id: &str) -> Option<SlackMessage> {
        self.posts().into_iter().find(|m| m.is_about(approval_id))
    }
    /// Replies in the thread of `parent_ts`, in order.
    pub fn thread(&self, parent_ts: &str) -> Vec<SlackMessage> {
        lock(&self.inner.st)
            .posted
            .iter()
            .filter(|m| m.thread_ts.as_deref() == Some(parent_ts))
            .cloned()
            .collect()
    }
    /// chat.update calls on `ts`, in order.
    pub fn updates(&self, ts: &str) -> Vec<SlackMessage> {
        lock(&self.inner.st)
            .updates
            .iter()
            .filter(|m| m.ts == ts)
            .cloned()
            .collect()
    }
    /// The message `ts` as it reads now (the last update applied).
    pub fn current(&self, ts: &str) -> Option<SlackMessage> {
        let st = lock(&self.inner.st);
        st.updates
            .iter()
            .rev()
            .find(|m| m.ts == ts)
            .or_else(|| st.posted.iter().find(|m| m.ts == ts))
            .cloned()
    }
    /// Bodies POSTed to `response_url`s, with the id from the URL.
    pub fn responses(&self) -> Vec<(String, Value)> {
        lock(&self.inner.st).responses.clone()
    }
    /// Error codes the API answered (`invalid_auth`, `msg_too_long`, ...).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.inner.st).errors.clone()
    }
}

async fn slack_handle(State(f): State<Arc<SlackInner>>, req: Request) -> Response {
    let r = Req::read(req).await;
    f.handle(r)
}

fn slack_fail(st: &mut SlackState, error: &str) -> Response {
    st.errors.push(error.to_string());
    json_response(200, json!({"ok": false, "error": error}))
}

/// Slack's checks on a message's text and blocks: `Err(error code)`.
fn slack_check_message(body: &Value) -> Result<(String, Value), &'static str> {
    let text = body["text"].as_str().unwrap_or("").to_string();
    let blocks = match &body["blocks"] {
        Value::Null => Value::Array(vec![]),
        Value::String(s) => serde_json::from_str(s).map_err(|_| "invalid_blocks_format")?,
        v => v.clone(),
    };
    let Some(list) = blocks.as_array() else {
        return Err("invalid_blocks_format");
    };
    if text.is_empty() && list.is_empty() {
        return Err("no_text");
    }
    if text.chars().count() > 4000 {
        return Err("msg_too_long");
    }
    if list.len() > 50 {
        return Err("invalid_blocks");
    }
    for b in list {
        if b["type"].as_str().is_none() {
            return Err("invalid_blocks");
        }
        if b["type"] == "section" {
            let t = b["text"]["text"].as_str().unwrap_or("");
            if t.chars().count() > 3000 {
                return Err("invalid_blocks");
            }
        }
    }
    Ok((text, blocks))
}

impl SlackInner {
    fn handle(&self, r: Req) -> Response {
        let mut st = lock(&self.st);
        let segs = r.segs();
        if let ("POST", ["_response", id]) = (r.method.as_str(), segs.as_slice()) {
            let body = r
                .json()
                .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&r.body).into()));
            st.responses.push((id.to_string(), body));
            return json_response(200, json!({"ok": true}));
        }
        let ["api", method] = segs.as_slice() else {
            return json_response(404, json!({"ok": false, "error": "unknown_method"}));
        };
        match st.down {
            Some(Down::Http500) => {
                return json_response(500, json!({"ok": false, "error": "internal_error"}));
            }
            Some(Down::RateLimited) => {
                let mut resp = json_response(429, json!({"ok": false, "error": "ratelimited"}));
                set_header(&mut resp, "retry-after", "1");
                return resp;
            }
            Some(Down::OkFalse) => return slack_fail(&mut st, "ratelimited"),
            None => {}
        }
        match r.bearer() {
            None => return slack_fail(&mut st, "not_authed"),
            Some(t) if t != self.token => return slack_fail(&mut st, "invalid_auth"),
            Some(_) => {}
        }
        let ct = r.header("content-type").unwrap_or("");
        let body = if ct.starts_with("application/json") {
            match r.json() {
                Some(v @ Value::Object(_)) => v,
                _ => return slack_fail(&mut st, "invalid_json"),
            }
        } else if ct.starts_with("application/x-www-form-urlencoded") {
            let mut m = serde_json::Map::new();
            for (k, v) in r.form().0 {
                m.insert(k, Value::String(v));
            }
            Value::Object(m)
        } else {
            return slack_fail(&mut st, "invalid_form_data");
        };
        if r.method != "POST" {
            return slack_fail(&mut st, "method_not_supported_for_channel_type");
        }
        let Some(channel) = body["channel"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(String::from)
        else {
            return slack_fail(&mut st, "channel_not_found");
        };
        let (text, blocks) = match slack_check_message(&body) {
            Ok(x) => x,
            Err(e) => return slack_fail(&mut st, e),
        };
        match *method {
            "chat.postMessage" => {
                let thread_ts = body["thread_ts"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(String::from);
                if let Some(parent) = &thread_ts
                    && !st
                        .posted
                        .iter()
                        .any(|m| &m.ts == parent && m.channel == channel && m.thread_ts.is_none())
                {
                    return slack_fail(&mut st, "thread_not_found");
                }
                st.seq += 1;
                let ts = format!("{}.{:06}", 1_700_000_000 + st.seq, 100);
                let msg = SlackMessage {
                    channel: channel.clone(),
                    ts: ts.clone(),
                    thread_ts: thread_ts.clone(),
                    text: text.clone(),
                    blocks: blocks.clone(),
                };
                st.posted.push(msg);
                let mut message = json!({"type": "message", "subtype": "bot_message", "bot_id": "B0CORDON", "text": text, "ts": ts, "blocks": blocks});
                if let Some(t) = thread_ts {
                    message["thread_ts"] = json!(t);
                }
                json_response(
                    200,
                    json!({"ok": true, "channel": channel, "ts": ts, "message": message}),
                )
            }
            "chat.update" => {
                let Some(ts) = body["ts"].as_str().map(String::from) else {
                    return slack_fail(&mut st, "message_not_found");
                };
                let Some(orig) = st
                    .posted
                    .iter()
                    .find(|m| m.ts == ts && m.channel == channel)
                    .cloned()
                else {
                    return slack_fail(&mut st, "message_not_found");
                };
                st.updates.push(SlackMessage {
                    channel: channel.clone(),
                    ts: ts.clone(),
                    thread_ts: orig.thread_ts,
                    text: text.clone(),
                    blocks,
                });
                json_response(
                    200,
                    json!({"ok": true, "channel": channel, "ts": ts, "text": text}),
                )
            }
            _ => slack_fail(&mut st, "unknown_method"),
        }
    }
}

/// `v0=hex(HMAC_SHA256(signing_secret, "v0:" + timestamp + ":" + body))`.
pub fn slack_signature(signing_secret: &str, timestamp: &str, body: &str) -> String {
    format!(
        "v0={}",
        hmac_hex(signing_secret, &format!("v0:{timestamp}:{body}"))
    )
}

/// A Slack `block_actions` interaction (a click on Approve or Deny).
#[derive(Clone, Debug)]
pub struct SlackInteraction {
    pub user_id: String,
    pub username: String,
    pub team_id: String,
    pub channel: String,
    pub message_ts: String,
    /// "approve" | "deny"
    pub action_id: String,
    pub approval_id: String,
    pub response_url: String,
}

impl SlackInteraction {
    /// `user_id` clicks `decision` ("approve"/"deny") on the request `approval_id`, in team
    /// T0CORDON, channel C0APPROVALS.
    pub fn new(user_id: &str, approval_id: &str, decision: &str) -> SlackInteraction {
        SlackInteraction {
            user_id: user_id.into(),
            username: user_id.trim_start_matches("U0").to_ascii_lowercase(),
            team_id: "T0CORDON".into(),
            channel: "C0APPROVALS".into(),
            message_ts: "1700000001.000100".into(),
            action_id: decision.into(),
            approval_id: approval_id.into(),
            response_url: format!(
                "https://hooks.slack.com/actions/T0CORDON/{}/{}",
                fastrand::u64(1_000_000_000..9_999_999_999),
                rand_alnum(24)
            ),
        }
    }
    /// The message clicked on (so the channel and ts match what cordon posted).
    pub fn on(mut self, m: &SlackMessage) -> Self {
        self.channel = m.channel.clone();
        self.message_ts = m.ts.clone();
        self
    }
    pub fn team(mut self, team_id: &str) -> Self {
        self.team_id = team_id.into();
        self
    }
    pub fn response_url(mut self, url: &str) -> Self {
        self.response_url = url.into();
        self
    }
    /// The `payload` JSON as Slack sends it.
    pub fn payload(&self) -> Value {
        let now = chrono::Utc::now();
        let action_ts = format!("{}.{:06}", now.timestamp(), now.timestamp_subsec_micros());
        json!({
            "type": "block_actions",
            "user": {"id": self.user_id, "username": self.username, "name": self.username, "team_id": self.team_id},
            "api_app_id": "A0CORDON",
            "token": "deprecated-verification-token",
            "container": {"type": "message", "message_ts": self.message_ts, "channel_id": self.channel, "is_ephemeral": false},
            "trigger_id": format!("{}.{}.{}", fastrand::u64(1_000_000..9_999_999), fastrand::u64(1_000_000..9_999_999), rand_hex(32)),
            "team": {"id": self.team_id, "domain": "cordon-soc"},
            "enterprise": null,
            "is_enterprise_install": false,
            "channel": {"id": self.channel, "name": "approvals"},
            "message": {"type": "message", "ts": self.message_ts, "bot_id": "B0CORDON", "text": "approval request"},
            "state": {"values": {}},
            "response_url": self.response_url,
            "actions": [{
                "action_id": self.action_id,
                "block_id": format!("approval:{}", self.approval_id),
                "text": {"type": "plain_text", "text": if self.action_id == "approve" { "Approve" } else { "Deny" }, "emoji": true},
                "value": self.approval_id,
                "style": if self.action_id == "approve" { "primary" } else { "danger" },
                "type": "button",
                "action_ts": action_ts,
            }],
        })
    }
    /// Correctly signed with `signing_secret`, timestamped now.
    pub fn signed(&self, signing_secret: &str) -> SlackCallback {
        SlackCallback::sign(
            signing_secret,
            &self.payload(),
            chrono::Utc::now().timestamp(),
        )
    }
}

/// An interaction callback as it goes over the wire: the form body and the two headers.
#[derive(Clone, Debug)]
pub struct SlackCallback {
    pub body: String,
    pub timestamp: Option<String>,
    pub signature: Option<String>,
}

impl SlackCallback {
    /// `payload=<urlencoded JSON>`, signed for `timestamp` (unix seconds).
    pub fn sign(signing_secret: &str, payload: &Value, timestamp: i64) -> SlackCallback {
        SlackCallback::sign_raw(
            signing_secret,
            format!("payload={}", enc(&payload.to_string())),
            timestamp,
        )
    }
    /// Any body, correctly signed (for malformed payloads).
    pub fn sign_raw(signing_secret: &str, body: String, timestamp: i64) -> SlackCallback {
        let ts = timestamp.to_string();
        SlackCallback {
            signature: Some(slack_signature(signing_secret, &ts, &body)),
            timestamp: Some(ts),
            body,
        }
    }
    /// The body changed after signing (the decision flipped, or one byte appended).
    pub fn tamper_body(mut self) -> Self {
        let flipped = self.body.replacen("%22approve%22", "%22deny%22", 1);
        self.body = if flipped != self.body {
            flipped
        } else {
            format!("{}%20", self.body)
        };
        self
    }
    /// Replaces the signature.
    pub fn with_signature(mut self, s: Option<&str>) -> Self {
        self.signature = s.map(String::from);
        self
    }
    /// Replaces the timestamp header, keeping the (now wrong) signature.
    pub fn with_timestamp(mut self, ts: Option<i64>) -> Self {
        self.timestamp = ts.map(|t| t.to_string());
        self
    }
    /// POSTs it to `{base}/v1/chat/slack/interactions`: (status, JSON or text).
    pub async fn send(&self, client: &reqwest::Client, base: &str) -> (u16, Value) {
        let mut rb = client
            .post(format!("{base}/v1/chat/slack/interactions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
            .body(self.body.clone());
        if let Some(t) = &self.timestamp {
            rb = rb.header("x-slack-request-timestamp", t);
        }
        if let Some(s) = &self.signature {
            rb = rb.header("x-slack-signature", s);
        }
        send(rb).await
    }
}

async fn send(rb: reqwest::RequestBuilder) -> (u16, Value) {
    let r = rb.send().await.expect("send callback");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

// =============================================================================================
// Mattermost
// =============================================================================================

/// A post as cordon created it (or a patch cordon sent).
#[derive(Clone, Debug)]
pub struct MmPost {
    pub id: String,
    pub channel_id: String,
    pub root_id: String,
    pub message: String,
    pub props: Value,
}

impl MmPost {
    /// The message and every human-readable string of the attachments.
    pub fn all_text(&self) -> String {
        let mut s = format!("{}\n", self.message);
        visible_text(&self.props, &mut s);
        s
    }
    /// `all_text` as a reader sees it: Markdown escapes undone.
    pub fn shown(&self) -> String {
        markdown_shown(&self.all_text())
    }
    /// Every attachment action (button).
    pub fn buttons(&self) -> Vec<&Value> {
        self.props["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["actions"].as_array())
            .flatten()
            .collect()
    }
    /// The button with `id` ("approve" / "deny").
    pub fn button(&self, id: &str) -> Option<&Value> {
        self.buttons().into_iter().find(|b| b["id"] == id)
    }
    pub fn has_buttons(&self) -> bool {
        !self.buttons().is_empty()
    }
    /// The integration context of button `id` (what Mattermost hands back on a click).
    pub fn context(&self, id: &str) -> Value {
        self.button(id)
            .map(|b| b["integration"]["context"].clone())
            .unwrap_or_else(|| panic!("no {id} button in {:?}", self.props))
    }
    pub fn is_about(&self, approval_id: &str) -> bool {
        self.buttons()
            .iter()
            .any(|b| b["integration"]["context"]["approval_id"] == approval_id)
            || self.all_text().contains(approval_id)
    }
    /// The callback Mattermost's server POSTs to the button's integration URL when `user_id`
    /// clicks button `id` ("approve"/"deny"), with the context cordon put on it.
    pub fn callback(&self, id: &str, user_id: &str, user_name: &str) -> Value {
        json!({
            "user_id": user_id,
            "user_name": user_name,
            "channel_id": self.channel_id,
            "channel_name": "approvals",
            "team_id": "mmteam0cordon00000000000000",
            "team_domain": "soc",
            "post_id": self.id,
            "trigger_id": format!("{}:{}", rand_alnum(26).to_lowercase(), rand_alnum(40)),
            "type": "",
            "data_source": "",
            "context": self.context(id),
        })
    }
}

#[derive(Default)]
struct MmState {
    down: Option<Down>,
    seq: u64,
    created: Vec<MmPost>,
    patches: Vec<MmPost>,
    current: BTreeMap<String, MmPost>,
}

struct MmInner {
    token: String,
    st: Mutex<MmState>,
}

/// A stateful fake Mattermost REST API (v4).
pub struct FakeMattermost {
    pub server: FakeServer,
    inner: Arc<MmInner>,
}

impl FakeMattermost {
    pub async fn start(bot_token: &str) -> FakeMattermost {
        let inner = Arc::new(MmInner {
            token: bot_token.into(),
            st: Mutex::new(MmState::default()),
        });
        let router = Router::new().fallback(mm_handle).with_state(inner.clone());
        FakeMattermost {
            server: FakeServer::start(router).await,
            inner,
        }
    }
    /// What cordon's `chat.mattermost.url` is set to.
    pub fn url(&self) -> String {
        self.server.url()
    }
    pub fn faults(&self) -> &Faults {
        &self.server.faults
    }
    pub fn log(&self) -> &RequestLog {
        &self.server.log
    }
    pub fn set_down(&self, down: Option<Down>) {
        lock(&self.inner.st).down = down;
    }
    /// Top-level posts as created, in order.
    pub fn posts(&self) -> Vec<MmPost> {
        lock(&self.inner.st)
            .created
            .iter()
            .filter(|p| p.root_id.is_empty())
            .cloned()
            .collect()
    }
    pub fn post_for(&self, approval_id: &str) -> Option<MmPost> {
        self.posts().into_iter().find(|p| p.is_about(approval_id))
    }
    /// Replies whose `root_id` is `root`.
    pub fn thread(&self, root: &str) -> Vec<MmPost> {
        lock(&self.inner.st)
            .created
            .iter()
            .filter(|p| p.root_id == root)
            .cloned()
            .collect()
    }
    /// Patches of post `id`, in order.
    pub fn patches(&self, id: &str) -> Vec<MmPost> {
        lock(&self.inner.st)
            .patches
            .iter()
            .filter(|p| p.id == id)
            .cloned()
            .collect()
    }
    pub fn current(&self, id: &str) -> Option<MmPost> {
        lock(&self.inner.st).current.get(id).cloned()
    }
}

async fn mm_handle(State(f): State<Arc<MmInner>>, req: Request) -> Response {
    let r = Req::read(req).await;
    f.handle(r)
}

fn mm_err(status: u16, id: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"id": id, "message": message, "detailed_error": "", "request_id": rand_alnum(26).to_lowercase(), "status_code": status}),
    )
}

fn mm_post_json(p: &MmPost) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    json!({
        "id": p.id, "create_at": now, "update_at": now, "edit_at": 0, "delete_at": 0,
        "is_pinned": false, "user_id": "cordonbot00000000000000000", "channel_id": p.channel_id,
        "root_id": p.root_id, "original_id": "", "message": p.message, "type": "",
        "props": p.props, "hashtags": "", "pending_post_id": "", "reply_count": 0, "metadata": {},
    })
}

impl MmInner {
    fn handle(&self, r: Req) -> Response {
        let mut st = lock(&self.st);
        match st.down {
            Some(Down::Http500) => {
                return mm_err(500, "api.context.500.app_error", "internal error");
            }
            Some(_) => return mm_err(503, "api.context.503.app_error", "unavailable"),
            None => {}
        }
        if r.bearer() != Some(self.token.as_str()) {
            return mm_err(
                401,
                "api.context.session_expired.app_error",
                "Invalid or expired session, please login again.",
            );
        }
        let Some(body) = r.json().filter(Value::is_object) else {
            return mm_err(
                400,
                "api.context.invalid_body_param.app_error",
                "Invalid or missing post in request body.",
            );
        };
        let message = body["message"].as_str().unwrap_or("").to_string();
        let props = if body["props"].is_null() {
            json!({})
        } else {
            body["props"].clone()
        };
        let segs = r.segs();
        match (r.method.as_str(), segs.as_slice()) {
            ("POST", ["api", "v4", "posts"]) => {
                let Some(channel_id) = body["channel_id"]
                    .as_str()
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                else {
                    return mm_err(
                        400,
                        "api.context.invalid_body_param.app_error",
                        "Invalid or missing channel_id in request body.",
                    );
                };
                let root_id = body["root_id"].as_str().unwrap_or("").to_string();
                if !root_id.is_empty() && !st.current.contains_key(&root_id) {
                    return mm_err(
                        400,
                        "api.post.create_post.root_id.app_error",
                        "Invalid RootId parameter.",
                    );
                }
                if message.is_empty() && props["attachments"].is_null() {
                    return mm_err(400, "model.post.is_valid.msg.app_error", "Invalid Message.");
                }
                if message.chars().count() > 16383 {
                    return mm_err(
                        400,
                        "model.post.is_valid.msg.app_error",
                        "Message too long.",
                    );
                }
                st.seq += 1;
                let id = format!("mmpost{:020}", st.seq);
                let p = MmPost {
                    id: id.clone(),
                    channel_id,
                    root_id,
                    message,
                    props,
                };
                st.created.push(p.clone());
                st.current.insert(id, p.clone());
                json_response(201, mm_post_json(&p))
            }
            ("PUT", ["api", "v4", "posts", id, "patch"]) => {
                let Some(cur) = st.current.get(*id).cloned() else {
                    return mm_err(404, "app.post.get.app_error", "Unable to get the post.");
                };
                let p = MmPost {
                    message: if body["message"].is_string() {
                        message
                    } else {
                        cur.message.clone()
                    },
                    props: if body["props"].is_null() {
                        cur.props.clone()
                    } else {
                        props
                    },
                    ..cur
                };
                st.patches.push(p.clone());
                st.current.insert(p.id.clone(), p.clone());
                json_response(200, mm_post_json(&p))
            }
            _ => mm_err(
                404,
                "api.context.404.app_error",
                "Sorry, we could not find the page.",
            ),
        }
    }
}

/// The button token cordon is expected to put in a Mattermost button's context:
/// `hex(HMAC_SHA256(callback_secret, approval_id))`.
pub fn mm_token(callback_secret: &str, approval_id: &str) -> String {
    hmac_hex(callback_secret, approval_id)
}

/// POSTs a Mattermost action callback to `{base}/v1/chat/mattermost/actions`.
pub async fn send_mm(client: &reqwest::Client, base: &str, callback: &Value) -> (u16, Value) {
    send(
        client
            .post(format!("{base}/v1/chat/mattermost/actions"))
            .header("content-type", "application/json")
            .header("user-agent", "mattermost-9.11.0")
            .body(callback.to_string()),
    )
    .await
}

// =============================================================================================
// Teams (Bot Framework)
// =============================================================================================

/// The Bot Connector token audience (scope without `/.default`).
pub const BOT_API: &str = "https://api.botframework.com";
/// The kid of [`trusted_key`].
pub const TRUSTED_KID: &str = "cordon-test-kid-1";

/// An RSA signing key with its public half as JWK components.
pub struct BotKey {
    pub kid: String,
    key: EncodingKey,
    /// base64url modulus and exponent.
    pub n: String,
    pub e: String,
}

impl BotKey {
    fn generate(kid: &str) -> BotKey {
        // rcgen's aws-lc-rs backend generates RSA keys; jsonwebtoken signs with its PKCS#8 PEM.
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        let key = EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).expect("RSA PEM");
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).expect("JWK");
        let jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
            panic!("not an RSA JWK")
        };
        BotKey {
            kid: kid.into(),
            key,
            n: rsa.n,
            e: rsa.e,
        }
    }
    /// The JWK as the Bot Framework's OpenID metadata lists it.
    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e,
               "endorsements": ["msteams"]})
    }
}

/// The key cordon is configured to trust (through the JWKS).
pub fn trusted_key() -> &'static BotKey {
    static K: OnceLock<BotKey> = OnceLock::new();
    K.get_or_init(|| BotKey::generate(TRUSTED_KID))
}

/// A key nobody trusts; it claims the trusted kid.
pub fn rogue_key() -> &'static BotKey {
    static K: OnceLock<BotKey> = OnceLock::new();
    K.get_or_init(|| BotKey::generate(TRUSTED_KID))
}

/// A JWKS document with the trusted key.
pub fn jwks() -> Value {
    json!({"keys": [trusted_key().jwk()]})
}

/// Writes [`jwks`] to `path` (for `chat.teams.jwks_file`).
pub fn write_jwks(path: &Path) {
    std::fs::write(path, serde_json::to_vec_pretty(&jwks()).unwrap()).unwrap();
}

/// What a Bot Framework token claims.
#[derive(Clone, Debug)]
pub struct BotClaims {
    pub iss: String,
    pub aud: String,
    pub service_url: String,
    pub nbf: i64,
    pub exp: i64,
    pub kid: String,
}

impl BotClaims {
    /// Valid now for `app_id`, issued by `issuer`, for activities from `service_url`.
    pub fn valid(app_id: &str, issuer: &str, service_url: &str) -> BotClaims {
        let now = chrono::Utc::now().timestamp();
        BotClaims {
            iss: issuer.into(),
            aud: app_id.into(),
            service_url: service_url.into(),
            nbf: now - 60,
            exp: now + 3600,
            kid: TRUSTED_KID.into(),
        }
    }
    /// Signs with `key` (RS256, `kid` header from the claims).
    pub fn sign(&self, key: &BotKey) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(self.kid.clone());
        h.typ = Some("JWT".into());
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "serviceurl": self.service_url,
            "serviceUrl": self.service_url,
            "nbf": self.nbf,
            "exp": self.exp,
            "iat": now.min(self.nbf.max(now - 60)),
            "iss": self.iss,
            "aud": self.aud,
        });
        jsonwebtoken::encode(&h, &claims, &key.key).expect("sign JWT")
    }
}

/// A correct Bot Framework JWT, signed with [`trusted_key`].
pub fn mint_jwt(app_id: &str, issuer: &str, service_url: &str) -> String {
    BotClaims::valid(app_id, issuer, service_url).sign(trusted_key())
}

/// Ways a Bot Framework JWT can be wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadJwt {
    /// Signed by a key not in the JWKS (claiming the trusted kid).
    WrongKey,
    /// Expired 10 minutes ago (beyond the 300 s leeway).
    Expired,
    /// Not valid for another 10 minutes.
    NotYetValid,
    /// Audience is another bot.
    WrongAudience,
    WrongIssuer,
    /// Signed by the trusted key but naming a kid the JWKS does not have.
    UnknownKid,
    /// The `serviceUrl` claim differs from the activity's.
    ServiceUrlMismatch,
    /// The signature part is garbled.
    BadSignature,
    /// `alg: none`, no signature.
    AlgNone,
}

impl BadJwt {
    pub const ALL: [BadJwt; 9] = [
        BadJwt::WrongKey,
        BadJwt::Expired,
        BadJwt::NotYetValid,
        BadJwt::WrongAudience,
        BadJwt::WrongIssuer,
        BadJwt::UnknownKid,
        BadJwt::ServiceUrlMismatch,
        BadJwt::BadSignature,
        BadJwt::AlgNone,
    ];
}

/// A JWT that is wrong in exactly the way `bad` says (otherwise like [`mint_jwt`]).
/// Markdown text as a reader sees it: a backslash before ASCII punctuation is dropped (it only
/// keeps the character literal), and so is a zero-width space.
pub fn markdown_shown(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' if it.peek().is_some_and(|n| n.is_ascii_punctuation()) => {
                out.push(it.next().unwrap_or_default());
            }
            '\u{200B}' => {}
            c => out.push(c),
        }
    }
    out
}

pub fn mint_bad_jwt(bad: BadJwt, app_id: &str, issuer: &str, service_url: &str) -> String {
    let mut c = BotClaims::valid(app_id, issuer, service_url);
    let now = chrono::Utc::now().timestamp();
    let mut key = trusted_key();
    match bad {
        BadJwt::WrongKey => key = rogue_key(),
        BadJwt::Expired => {
            c.nbf = now - 7200;
            c.exp = now - 600;
        }
        BadJwt::NotYetValid => {
            c.nbf = now + 600;
            c.exp = now + 4200;
        }
        BadJwt::WrongAudience => c.aud = "99999999-8888-7777-6666-555555555555".into(),
        BadJwt::WrongIssuer => c.iss = "https://sts.windows.net/evil/".into(),
        BadJwt::UnknownKid => c.kid = "some-other-kid".into(),
        BadJwt::ServiceUrlMismatch => c.service_url = "https://smba.evil.example/emea/".into(),
        BadJwt::BadSignature => {
            let t = c.sign(key);
            let (head, sig) = t.rsplit_once('.').unwrap();
            let mut s: Vec<char> = sig.chars().collect();
            s[10] = if s[10] == 'A' { 'B' } else { 'A' };
            return format!("{head}.{}", s.into_iter().collect::<String>());
        }
        BadJwt::AlgNone => {
            let t = c.sign(key);
            let mut parts = t.split('.');
            let _ = parts.next();
            let payload = parts.next().unwrap();
            // {"alg":"none","typ":"JWT","kid":"cordon-test-kid-1"}
            let header =
                b64url(format!(r#"{{"alg":"none","typ":"JWT","kid":"{TRUSTED_KID}"}}"#).as_bytes());
            return format!("{header}.{payload}.");
        }
    }
    c.sign(key)
}

/// Unpadded base64url.
pub fn b64url(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        if chunk.len() > 1 {
            out.push(A[(n >> 6) as usize & 63] as char);
        }
        if chunk.len() > 2 {
            out.push(A[n as usize & 63] as char);
        }
    }
    out
}

/// An `adaptiveCard/action` invoke activity: the Entra user `aad_object_id` clicked `verb`
/// ("approve"/"deny") on the card for `approval_id`. A fresh activity id each time.
pub fn teams_invoke(
    service_url: &str,
    conversation: &str,
    aad_object_id: &str,
    verb: &str,
    approval_id: &str,
) -> Value {
    json!({
        "type": "invoke",
        "name": "adaptiveCard/action",
        "id": format!("f:{}", fastrand::u64(1_000_000_000_000..9_999_999_999_999)),
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "localTimestamp": chrono::Utc::now().to_rfc3339(),
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": {"id": format!("29:1{}", rand_alnum(40)), "name": aad_object_id, "aadObjectId": aad_object_id},
        "conversation": {"isGroup": true, "conversationType": "channel", "tenantId": "tenant-1", "id": conversation},
        "recipient": {"id": "28:11111111-2222-3333-4444-555555555555", "name": "cordon"},
        "entities": [{"locale": "en-US", "country": "US", "platform": "Web", "type": "clientInfo"}],
        "channelData": {"tenant": {"id": "tenant-1"}, "source": {"name": "message"}},
        "replyToId": "1700000000001",
        "value": {"action": {"type": "Action.Execute", "title": if verb == "approve" { "Approve" } else { "Deny" },
                             "verb": verb, "data": {"approval_id": approval_id}},
                  "trigger": "manual"},
        "locale": "en-US",
    })
}

/// POSTs an activity to `{base}/v1/chat/teams/messages` with `Authorization: Bearer <jwt>`.
pub async fn send_teams(
    client: &reqwest::Client,
    base: &str,
    jwt: Option<&str>,
    activity: &Value,
) -> (u16, Value) {
    let mut rb = client
        .post(format!("{base}/v1/chat/teams/messages"))
        .header("content-type", "application/json; charset=utf-8")
        .header(
            "user-agent",
            "Microsoft-SkypeBotApi (Microsoft-BotFramework 3.0)",
        )
        .body(activity.to_string());
    if let Some(j) = jwt {
        rb = rb.bearer_auth(j);
    }
    send(rb).await
}

/// One activity cordon sent to a conversation (a post, an update or a reply).
#[derive(Clone, Debug)]
pub struct BfActivity {
    pub conversation: String,
    pub id: String,
    /// The activity replied to (thread replies).
    pub reply_to: Option<String>,
    pub body: Value,
}

impl BfActivity {
    /// The adaptive card content of the first attachment, if any.
    pub fn card(&self) -> Option<&Value> {
        self.body["attachments"]
            .as_array()?
            .iter()
            .find(|a| a["contentType"] == "application/vnd.microsoft.card.adaptive")
            .map(|a| &a["content"])
    }
    /// The card's `Action.Execute` actions (anywhere in the card).
    pub fn executes(&self) -> Vec<Value> {
        fn walk(v: &Value, out: &mut Vec<Value>) {
            match v {
                Value::Object(m) => {
                    if m.get("type").and_then(Value::as_str) == Some("Action.Execute") {
                        out.push(v.clone());
                    }
                    m.values().for_each(|x| walk(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut out = vec![];
        if let Some(c) = self.card() {
            walk(c, &mut out);
        }
        out
    }
    pub fn execute(&self, verb: &str) -> Option<Value> {
        self.executes().into_iter().find(|a| a["verb"] == verb)
    }
    /// The activity text and every human-readable string of its attachments.
    pub fn all_text(&self) -> String {
        let mut s = String::new();
        visible_text(&self.body, &mut s);
        s
    }
    /// `all_text` as a reader sees it: Markdown escapes undone.
    pub fn shown(&self) -> String {
        markdown_shown(&self.all_text())
    }
    pub fn is_about(&self, approval_id: &str) -> bool {
        self.executes()
            .iter()
            .any(|a| a["data"]["approval_id"] == approval_id)
            || self.all_text().contains(approval_id)
    }
}

#[derive(Default)]
struct BfState {
    tokens: Tokens,
    down: Option<Down>,
    seq: u64,
    posted: Vec<BfActivity>,
    updates: Vec<BfActivity>,
}

struct BfInner {
    app: AadApp,
    st: Mutex<BfState>,
}

/// A stateful fake of the Bot Framework: token endpoint (tenant `botframework.com`), Bot
/// Connector conversations, and the signing keys' JWKS at `/v1/.well-known/keys`.
pub struct FakeBotFramework {
    pub server: FakeServer,
    inner: Arc<BfInner>,
}

impl FakeBotFramework {
    pub async fn start(app_id: &str, app_password: &str) -> FakeBotFramework {
        let inner = Arc::new(BfInner {
            app: AadApp {
                tenant: "botframework.com".into(),
                client_id: app_id.into(),
                client_secret: app_password.into(),
            },
            st: Mutex::new(BfState::default()),
        });
        let router = Router::new().fallback(bf_handle).with_state(inner.clone());
        FakeBotFramework {
            server: FakeServer::start(router).await,
            inner,
        }
    }
    pub fn url(&self) -> String {
        self.server.url()
    }
    /// `chat.teams.token_url`
    pub fn token_url(&self) -> String {
        format!("{}/botframework.com/oauth2/v2.0/token", self.url())
    }
    /// `chat.teams.service_url` (with the trailing slash, as Teams sends it).
    pub fn service_url(&self) -> String {
        format!("{}/", self.url())
    }
    /// `chat.teams.jwks_url`
    pub fn jwks_url(&self) -> String {
        format!("{}/v1/.well-known/keys", self.url())
    }
    pub fn faults(&self) -> &Faults {
        &self.server.faults
    }
    pub fn log(&self) -> &RequestLog {
        &self.server.log
    }
    pub fn set_down(&self, down: Option<Down>) {
        lock(&self.inner.st).down = down;
    }
    pub fn tokens_issued(&self) -> usize {
        lock(&self.inner.st).tokens.issued
    }
    /// New top-level activities (not replies), in order.
    pub fn posts(&self) -> Vec<BfActivity> {
        lock(&self.inner.st)
            .posted
            .iter()
            .filter(|a| a.reply_to.is_none())
            .cloned()
            .collect()
    }
    pub fn post_for(&self, approval_id: &str) -> Option<BfActivity> {
        self.posts().into_iter().find(|a| a.is_about(approval_id))
    }
    /// Replies to activity `id`.
    pub fn replies(&self, id: &str) -> Vec<BfActivity> {
        lock(&self.inner.st)
            .posted
            .iter()
            .filter(|a| a.reply_to.as_deref() == Some(id))
            .cloned()
            .collect()
    }
    /// Updates (PUT) of activity `id`, in order.
    pub fn updates(&self, id: &str) -> Vec<BfActivity> {
        lock(&self.inner.st)
            .updates
            .iter()
            .filter(|a| a.id == id)
            .cloned()
            .collect()
    }
}

async fn bf_handle(State(f): State<Arc<BfInner>>, req: Request) -> Response {
    let r = Req::read(req).await;
    f.handle(r)
}

fn bf_err(status: u16, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": {"code": code, "message": message}}))
}

impl BfInner {
    fn handle(&self, r: Req) -> Response {
        let mut st = lock(&self.st);
        let segs = r.segs();
        if let ("GET", ["v1", ".well-known", "keys"]) = (r.method.as_str(), segs.as_slice()) {
            return json_response(200, jwks());
        }
        if let Some(resp) = self.app.serve_token(&mut st.tokens, AuthMode::Ok, &r) {
            return resp;
        }
        if st.down.is_some() {
            return bf_err(503, "ServiceError", "The service is unavailable.");
        }
        match r.bearer().map(|t| st.tokens.audience(t)) {
            Some(Some(aud)) if aud == BOT_API => {}
            _ => {
                return bf_err(
                    401,
                    "Unauthorized",
                    "Authorization has been denied for this request.",
                );
            }
        }
        let Some(body) = r.json().filter(Value::is_object) else {
            return bf_err(400, "BadArgument", "Invalid activity.");
        };
        let known = |st: &BfState, conv: &str, id: &str| {
            st.posted
                .iter()
                .any(|a| a.conversation == conv && a.id == id)
        };
        match (r.method.as_str(), segs.as_slice()) {
            ("POST", ["v3", "conversations", conv, "activities"]) => {
                st.seq += 1;
                let id = format!("17000000{:05}", st.seq);
                st.posted.push(BfActivity {
                    conversation: conv.to_string(),
                    id: id.clone(),
                    reply_to: None,
                    body,
                });
                json_response(201, json!({"id": id}))
            }
            ("POST", ["v3", "conversations", conv, "activities", parent]) => {
                if !known(&st, conv, parent) {
                    return bf_err(404, "ActivityNotFound", "Activity not found.");
                }
                st.seq += 1;
                let id = format!("17000000{:05}", st.seq);
                st.posted.push(BfActivity {
                    conversation: conv.to_string(),
                    id: id.clone(),
                    reply_to: Some(parent.to_string()),
                    body,
                });
                json_response(201, json!({"id": id}))
            }
            ("PUT", ["v3", "conversations", conv, "activities", id]) => {
                if !known(&st, conv, id) {
                    return bf_err(404, "ActivityNotFound", "Activity not found.");
                }
                st.updates.push(BfActivity {
                    conversation: conv.to_string(),
                    id: id.to_string(),
                    reply_to: None,
                    body,
                });
                json_response(200, json!({"id": id}))
            }
            _ => bf_err(404, "NotFound", "No such endpoint."),
        }
    }
}

// =============================================================================================
// Self-tests
// =============================================================================================

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::auth::{aad_form, access_token, request_token};

    #[test]
    fn slack_signature_matches_slacks_documented_example() {
        // From Slack's "Verifying requests from Slack" guide.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            slack_signature("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
        // A built callback verifies with the spec's formula; tampering breaks it.
        let i = SlackInteraction::new("U0ALICE", "act-1", "approve");
        let cb = i.signed("s3cret");
        let ts = cb.timestamp.clone().unwrap();
        assert_eq!(
            cb.signature.as_deref(),
            Some(slack_signature("s3cret", &ts, &cb.body).as_str())
        );
        let payload = super::super::percent_decode(cb.body.strip_prefix("payload=").unwrap(), true);
        let v: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(v["actions"][0]["value"], "act-1");
        assert_eq!(v["actions"][0]["block_id"], "approval:act-1");
        assert_eq!(v["user"]["id"], "U0ALICE");
        assert_eq!(v["team"]["id"], "T0CORDON");
        let t = cb.clone().tamper_body();
        assert_ne!(t.body, cb.body);
        assert!(t.body.contains("%22deny%22"), "the decision flipped");
        assert_ne!(
            t.signature.as_deref(),
            Some(slack_signature("s3cret", &ts, &t.body).as_str())
        );
    }

    #[tokio::test]
    async fn fake_slack_posts_threads_updates_limits_and_outages() {
        let s = FakeSlack::start("xoxb-1").await;
        let c = reqwest::Client::new();
        let call = |method: &str, token: &str, body: Value| {
            c.post(format!("{}/{method}", s.api_base()))
                .bearer_auth(token)
                .json(&body)
                .send()
        };
        let j = |r: reqwest::Response| async move { r.json::<Value>().await.unwrap() };
        let blocks = json!([
            {"type": "section", "text": {"type": "mrkdwn", "text": "isolate_host ws-1"}},
            {"type": "actions", "block_id": "approval:a1", "elements": [
                {"type": "button", "action_id": "approve", "value": "a1", "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": "deny", "value": "a1", "text": {"type": "plain_text", "text": "Deny"}}]}
        ]);
        let v = j(call(
            "chat.postMessage",
            "nope",
            json!({"channel": "C1", "text": "x"}),
        )
        .await
        .unwrap())
        .await;
        assert_eq!(v, json!({"ok": false, "error": "invalid_auth"}));
        let v = j(call(
            "chat.postMessage",
            "xoxb-1",
            json!({"channel": "C1", "text": "req", "blocks": blocks}),
        )
        .await
        .unwrap())
        .await;
        assert_eq!(v["ok"], true, "{v}");
        let ts = v["ts"].as_str().unwrap().to_string();
        assert_eq!(v["channel"], "C1");
        let m = s.post_for("a1").unwrap();
        assert_eq!(m.ts, ts);
        assert!(m.has_buttons());
        assert_eq!(m.button("approve").unwrap()["value"], "a1");
        assert!(m.all_text().contains("isolate_host ws-1"));

        // Limits.
        let long = "x".repeat(4001);
        let v = j(call(
            "chat.postMessage",
            "xoxb-1",
            json!({"channel": "C1", "text": long}),
        )
        .await
        .unwrap())
        .await;
        assert_eq!(v["error"], "msg_too_long");
        let v = j(call(
            "chat.postMessage",
            "xoxb-1",
            json!({"channel": "C1", "text": "t", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "y".repeat(3001)}}]}),
        )
        .await
        .unwrap())
        .await;
        assert_eq!(v["error"], "invalid_blocks");

        // Thread and update.
        let v = j(call(
            "chat.postMessage",
            "xoxb-1",
            json!({"channel": "C1", "text": "escalated", "thread_ts": ts}),
        )
        .await
        .unwrap())
        .await;
        assert_eq!(v["ok"], true, "{v}");
        let v = j(call(
            "chat.postMessage",
            "xoxb-1",
            json!({"channel": "C1", "text": "x", "thread_ts": "1.2"}),
        )
        .await
        .unwrap())
        .await;
        assert_eq!(v["error"], "thread_not_found");
        assert_eq!(s.thread(&ts).len(), 1);
        assert_eq!(s.posts().len(), 1);
        let v = j(call(
            "chat.update",
            "xoxb-1",
            json!({"channel": "C1", "ts": ts, "text": "approved", "blocks": []}),
        )
        .await
        .unwrap())
        .await;
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(s.updates(&ts).len(), 1);
        assert!(!s.current(&ts).unwrap().has_buttons());
        let v = j(call(
            "chat.update",
            "xoxb-1",
            json!({"channel": "C1", "ts": "9.9", "text": "x"}),
        )
        .await
        .unwrap())
        .await;
        assert_eq!(v["error"], "message_not_found");

        // Down and back up.
        s.set_down(Some(Down::Http500));
        let r = call(
            "chat.postMessage",
            "xoxb-1",
            json!({"channel": "C1", "text": "x"}),
        )
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 500);
        s.set_down(Some(Down::RateLimited));
        let r = call(
            "chat.postMessage",
            "xoxb-1",
            json!({"channel": "C1", "text": "x"}),
        )
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
        s.set_down(Some(Down::OkFalse));
        let v = j(call(
            "chat.postMessage",
            "xoxb-1",
            json!({"channel": "C1", "text": "x"}),
        )
        .await
        .unwrap())
        .await;
        assert_eq!(v, json!({"ok": false, "error": "ratelimited"}));
        s.set_down(None);
        let v = j(call(
            "chat.postMessage",
            "xoxb-1",
            json!({"channel": "C1", "text": "x"}),
        )
        .await
        .unwrap())
        .await;
        assert_eq!(v["ok"], true);
        assert_eq!(s.posts().len(), 2);

        // response_url.
        let r = c
            .post(s.response_url("r1"))
            .json(&json!({"response_type": "ephemeral", "text": "no"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(s.responses()[0].0, "r1");
        assert_eq!(s.responses()[0].1["response_type"], "ephemeral");
        assert!(s.log().count() >= 12);
    }

    #[tokio::test]
    async fn fake_mattermost_posts_patches_and_builds_callbacks() {
        let m = FakeMattermost::start("mm-tok").await;
        let c = reqwest::Client::new();
        let token = mm_token("cb-secret", "a1");
        let post = json!({
            "channel_id": "chan", "message": "isolate_host ws-1",
            "props": {"attachments": [{"text": "tier one_approver", "actions": [
                {"id": "approve", "name": "Approve", "style": "good", "integration": {"url": "http://127.0.0.1:8080/v1/chat/mattermost/actions", "context": {"approval_id": "a1", "decision": "approve", "token": token}}},
                {"id": "deny", "name": "Deny", "style": "danger", "integration": {"url": "http://127.0.0.1:8080/v1/chat/mattermost/actions", "context": {"approval_id": "a1", "decision": "deny", "token": token}}}]}]}
        });
        let r = c
            .post(format!("{}/api/v4/posts", m.url()))
            .bearer_auth("wrong")
            .json(&post)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = c
            .post(format!("{}/api/v4/posts", m.url()))
            .bearer_auth("mm-tok")
            .json(&post)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let v: Value = r.json().await.unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        let p = m.post_for("a1").unwrap();
        assert_eq!(p.id, id);
        assert!(p.all_text().contains("tier one_approver"));
        let cb = p.callback("approve", "mm-alice", "alice");
        assert_eq!(cb["context"]["token"], hmac_hex("cb-secret", "a1"));
        assert_eq!(cb["context"]["decision"], "approve");
        assert_eq!(cb["post_id"], id.as_str());
        assert_ne!(
            cb["trigger_id"],
            p.callback("approve", "mm-alice", "alice")["trigger_id"]
        );
        // Reply and patch.
        let r = c
            .post(format!("{}/api/v4/posts", m.url()))
            .bearer_auth("mm-tok")
            .json(&json!({"channel_id": "chan", "root_id": id, "message": "escalated"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        assert_eq!(m.thread(&id).len(), 1);
        let r = c
            .put(format!("{}/api/v4/posts/{id}/patch", m.url()))
            .bearer_auth("mm-tok")
            .json(&json!({"message": "approved", "props": {"attachments": [{"text": "approved"}]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(m.patches(&id).len(), 1);
        assert!(!m.current(&id).unwrap().has_buttons());
        let r = c
            .put(format!("{}/api/v4/posts/nope/patch", m.url()))
            .bearer_auth("mm-tok")
            .json(&json!({"message": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
    }

    #[tokio::test]
    async fn fake_bot_framework_and_its_jwts_verify_as_the_spec_says() {
        let app = "11111111-2222-3333-4444-555555555555";
        let bf = FakeBotFramework::start(app, "pw").await;
        let c = reqwest::Client::new();

        // The JWKS served and written agree, and carry what a verifier needs.
        let served: Value = c
            .get(bf.jwks_url())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_jwks(&dir.path().join("keys.json"));
        let written: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("keys.json")).unwrap()).unwrap();
        assert_eq!(served, written);
        let k = &served["keys"][0];
        for f in ["kty", "kid", "n", "e", "alg", "use"] {
            assert!(k[f].is_string(), "{f} in {k}");
        }
        assert_eq!(
            (k["kty"].as_str(), k["alg"].as_str(), k["use"].as_str()),
            (Some("RSA"), Some("RS256"), Some("sig"))
        );
        assert_ne!(trusted_key().n, rogue_key().n);

        // Verification as the spec describes: kid → JWKS key, RS256, iss, aud, exp/nbf ± 300 s,
        // serviceUrl claim == activity serviceUrl.
        let iss = "https://api.botframework.com";
        let svc = bf.service_url();
        let verify = |jwt: &str| -> Result<Value, String> {
            let h = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
            if h.alg != Algorithm::RS256 {
                return Err("alg".into());
            }
            let key = served["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| Some(k["kid"].as_str().unwrap()) == h.kid.as_deref())
                .ok_or("kid")?;
            let dk = jsonwebtoken::DecodingKey::from_rsa_components(
                key["n"].as_str().unwrap(),
                key["e"].as_str().unwrap(),
            )
            .map_err(|e| e.to_string())?;
            let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
            v.set_issuer(&[iss]);
            v.set_audience(&[app]);
            v.leeway = 300;
            v.validate_nbf = true;
            let d = jsonwebtoken::decode::<Value>(jwt, &dk, &v).map_err(|e| e.to_string())?;
            if d.claims["serviceUrl"] != svc.as_str() {
                return Err("serviceUrl".into());
            }
            Ok(d.claims)
        };
        let claims = verify(&mint_jwt(app, iss, &svc)).expect("a good token verifies");
        assert_eq!(claims["aud"], app);
        for bad in BadJwt::ALL {
            let t = mint_bad_jwt(bad, app, iss, &svc);
            assert!(verify(&t).is_err(), "{bad:?} verified");
        }

        // Token endpoint, then post, update, reply with the issued token.
        let r = c
            .post(bf.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app),
                ("client_secret", "wrong"),
                ("scope", "https://api.botframework.com/.default"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let form = aad_form(app, "pw", "https://api.botframework.com/.default");
        let at = &access_token(&request_token(&c, &bf.token_url(), &form).await.1);
        assert_eq!(bf.tokens_issued(), 1);
        let conv = "19:abc@thread.tacv2";
        let card = json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
            "content": {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "isolate_host ws-1"}],
            "actions": [{"type": "Action.Execute", "title": "Approve", "verb": "approve", "data": {"approval_id": "a1"}},
                        {"type": "Action.Execute", "title": "Deny", "verb": "deny", "data": {"approval_id": "a1"}}]}}]});
        let url = format!("{svc}v3/conversations/{conv}/activities");
        let r = c.post(&url).json(&card).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "no token");
        let r = c
            .post(&url)
            .bearer_auth(at)
            .json(&card)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let a = bf.post_for("a1").unwrap();
        assert_eq!(
            (a.id.as_str(), a.conversation.as_str()),
            (id.as_str(), conv)
        );
        assert_eq!(a.execute("deny").unwrap()["data"]["approval_id"], "a1");
        assert!(a.all_text().contains("isolate_host ws-1"));
        let r = c
            .put(format!("{url}/{id}"))
            .bearer_auth(at)
            .json(&json!({"type": "message", "text": "approved"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(bf.updates(&id).len(), 1);
        let r = c
            .post(format!("{url}/{id}"))
            .bearer_auth(at)
            .json(&json!({"type": "message", "text": "expired"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        assert_eq!(bf.replies(&id).len(), 1);
        assert_eq!(bf.posts().len(), 1);

        // The invoke activity builder.
        let inv = teams_invoke(&svc, conv, "aad-alice", "approve", "a1");
        assert_eq!(inv["value"]["action"]["data"]["approval_id"], "a1");
        assert_eq!(inv["from"]["aadObjectId"], "aad-alice");
        assert_ne!(
            inv["id"],
            teams_invoke(&svc, conv, "aad-alice", "approve", "a1")["id"]
        );
    }
}
