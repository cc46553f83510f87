//! Slack: Block Kit approval messages through the Web API (`chat.postMessage`, `chat.update`,
//! thread replies) and verification of interaction callbacks (`X-Slack-Signature` `v0`
//! HMAC-SHA256 over the raw body, 5-minute replay window).

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::view::{SECTION_LIMIT, TEXT_LIMIT, View, clip};
use super::{ChatError, Delivered, Refusal, post_json};
use crate::secret::Secret;

/// How far a callback's timestamp may be from now, either way.
pub const REPLAY_WINDOW_SECS: i64 = 300;

pub struct Slack {
    pub api_base: String,
    pub bot_token: Secret,
    pub signing_secret: Secret,
    pub team_id: Option<String>,
}

fn blocks(v: &View) -> Value {
    let body = v
        .lines()
        .into_iter()
        .map(|(k, val)| format!("*{k}:* {}", escape(&val)))
        .collect::<Vec<_>>()
        .join("\n");
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn",
            "text": clip(&format!("*{}* `{}`", escape(&v.action), escape(&v.target)), SECTION_LIMIT)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&body, SECTION_LIMIT)}}),
    ];
    if v.pending {
        blocks.push(json!({
            "type": "actions",
            "block_id": format!("approval:{}", v.action_id),
            "elements": [
                {"type": "button", "action_id": "approve", "style": "primary",
                 "text": {"type": "plain_text", "text": "Approve"}, "value": v.action_id},
                {"type": "button", "action_id": "deny", "style": "danger",
                 "text": {"type": "plain_text", "text": "Deny"}, "value": v.action_id},
            ]
        }));
    }
    Value::Array(blocks)
}

/// Slack's mrkdwn control characters: with `&`, `<` and `>` escaped no outside value can make
/// a mention (`<!channel>`, `<@U…>`) or a link with a label of its own (`<url|label>`).
pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Slack {
    async fn call(
        &self,
        http: &reqwest::Client,
        method: &str,
        body: Value,
    ) -> Result<Value, ChatError> {
        let url = format!("{}/{method}", self.api_base.trim_end_matches('/'));
        let answer = post_json(http.post(url).bearer_auth(self.bot_token.expose()), &body).await?;
        if answer["ok"].as_bool() != Some(true) {
            return Err(ChatError::Slack {
                method: method.to_string(),
                error: answer["error"]
                    .as_str()
                    .unwrap_or("ok is not true")
                    .to_string(),
            });
        }
        Ok(answer)
    }

    pub async fn post(
        &self,
        http: &reqwest::Client,
        channel: &str,
        v: &View,
    ) -> Result<Delivered, ChatError> {
        let a = self
            .call(http, "chat.postMessage", json!({"channel": channel, "text": clip(&escape(&v.headline()), TEXT_LIMIT), "blocks": blocks(v)}))
            .await?;
        let ts = a["ts"].as_str().ok_or(ChatError::NoReference {
            platform: "slack chat.postMessage",
            what: "no ts",
        })?;
        Ok(Delivered {
            channel: a["channel"].as_str().unwrap_or(channel).to_string(),
            reference: ts.to_string(),
        })
    }

    /// Posts a message (a report, an escalation) to `channel`, `&`, `<` and `>` escaped: nothing
    /// cordon posts as text means a Slack mention or link.
    pub async fn post_text(
        &self,
        http: &reqwest::Client,
        channel: &str,
        text: &str,
    ) -> Result<String, ChatError> {
        let a = self
            .call(
                http,
                "chat.postMessage",
                json!({"channel": channel, "text": clip(&escape(text), TEXT_LIMIT)}),
            )
            .await?;
        Ok(a["ts"].as_str().unwrap_or_default().to_string())
    }

    pub async fn update(
        &self,
        http: &reqwest::Client,
        channel: &str,
        ts: &str,
        v: &View,
    ) -> Result<(), ChatError> {
        self.call(http, "chat.update", json!({"channel": channel, "ts": ts, "text": clip(&escape(&v.headline()), TEXT_LIMIT), "blocks": blocks(v)}))
            .await
            .map(|_| ())
    }

    pub async fn thread(
        &self,
        http: &reqwest::Client,
        channel: &str,
        ts: &str,
        text: &str,
    ) -> Result<(), ChatError> {
        self.call(
            http,
            "chat.postMessage",
            json!({"channel": channel, "thread_ts": ts, "text": clip(&escape(text), TEXT_LIMIT)}),
        )
        .await
        .map(|_| ())
    }

    /// Checks the signature and timestamp over the raw body. `Ok` carries the replay key (the
    /// signature itself: unique per timestamp and body).
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        raw: &[u8],
        now: i64,
    ) -> Result<String, Refusal> {
        let (Some(ts), Some(sig)) = (timestamp, signature) else {
            return Err(Refusal::new(
                "bad_signature",
                "X-Slack-Request-Timestamp and X-Slack-Signature are required",
            ));
        };
        let Ok(ts_n) = ts.trim().parse::<i64>() else {
            return Err(Refusal::new(
                "bad_signature",
                "X-Slack-Request-Timestamp is not a number",
            ));
        };
        let Some(hex_sig) = sig.trim().strip_prefix("v0=") else {
            return Err(Refusal::new(
                "bad_signature",
                "X-Slack-Signature is not a v0 signature",
            ));
        };
        let Ok(given) = hex::decode(hex_sig) else {
            return Err(Refusal::new(
                "bad_signature",
                "X-Slack-Signature is not hex",
            ));
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(self.signing_secret.expose().as_bytes())
            .map_err(|_| Refusal::new("bad_signature", "signing secret unusable"))?;
        mac.update(b"v0:");
        mac.update(ts.trim().as_bytes());
        mac.update(b":");
        mac.update(raw);
        // Constant-time comparison.
        mac.verify_slice(&given)
            .map_err(|_| Refusal::new("bad_signature", "the signature does not match the body"))?;
        // Checked after the signature, so an unsigned request cannot learn about the clock.
        if (now - ts_n).abs() > REPLAY_WINDOW_SECS {
            return Err(Refusal::new(
                "stale_timestamp",
                format!(
                    "the request is {}s from now; more than {REPLAY_WINDOW_SECS}s is refused",
                    now - ts_n
                ),
            ));
        }
        Ok(hex_sig.to_ascii_lowercase())
    }
}

/// What a Slack interaction payload says: who clicked what on which request.
#[derive(Debug, Clone)]
pub struct Interaction {
    pub user: String,
    pub team: Option<String>,
    pub approval_id: String,
    pub decision: String,
    pub response_url: Option<String>,
    pub detail: Value,
}

/// Parses the form body (`payload=<JSON>`) of a verified callback.
pub fn parse_interaction(raw: &[u8]) -> Result<Interaction, Refusal> {
    let bad = |m: &str| Refusal::new("malformed", m.to_string());
    let payload = url::form_urlencoded::parse(raw)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| bad("the form has no payload field"))?;
    // Strict: a payload naming a key twice could mean one thing to Slack and another here.
    let p: Value = crate::ingest::json::parse(payload.as_bytes())
        .map_err(|e| bad(&format!("payload is not JSON: {e}")))?;
    if p["type"].as_str() != Some("block_actions") {
        return Err(bad("only block_actions interactions are handled"));
    }
    let actions = p["actions"].as_array().ok_or_else(|| bad("no actions"))?;
    let [action] = actions.as_slice() else {
        return Err(bad("exactly one action is expected"));
    };
    let decision = match action["action_id"].as_str() {
        Some(d @ ("approve" | "deny")) => d.to_string(),
        _ => return Err(bad("action_id must be approve or deny")),
    };
    let approval_id = action["value"]
        .as_str()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad("the button carries no request id"))?;
    if let Some(block) = action["block_id"].as_str()
        && block
            .strip_prefix("approval:")
            .is_some_and(|b| b != approval_id)
    {
        return Err(bad("block_id and value name different requests"));
    }
    let user = p["user"]["id"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("no user.id"))?;
    let team = p["team"]["id"]
        .as_str()
        .or_else(|| p["user"]["team_id"].as_str())
        .map(str::to_string);
    Ok(Interaction {
        user: user.to_string(),
        team: team.clone(),
        approval_id: approval_id.to_string(),
        decision,
        response_url: p["response_url"].as_str().map(str::to_string),
        detail: json!({
            "team": team, "channel": p["channel"]["id"], "message_ts": p["message"]["ts"],
            "username": p["user"]["username"], "trigger_id": p["trigger_id"],
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack() -> Slack {
        Slack {
            api_base: "http://127.0.0.1:1/api".into(),
            bot_token: Secret::new("xoxb-test".into()),
            signing_secret: Secret::new("8f742231b10e8888abcd99yyyzzz85a5".into()),
            team_id: None,
        }
    }

    fn sign(secret: &str, ts: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("v0:{ts}:").as_bytes());
        mac.update(body);
        format!("v0={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn slack_documented_example_verifies() {
        // The example from Slack's "Verifying requests from Slack" documentation.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let s = slack();
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert!(
            s.verify(Some("1531420618"), Some(sig), body, 1531420618 + 10)
                .is_ok()
        );
    }

    #[test]
    fn wrong_signature_stale_and_missing_headers_are_refused() {
        let s = slack();
        let body = b"payload=%7B%7D";
        let good = sign("8f742231b10e8888abcd99yyyzzz85a5", "1000", body);
        assert!(s.verify(Some("1000"), Some(&good), body, 1000).is_ok());
        assert!(
            s.verify(Some("1000"), Some(&good), body, 1000 + 299)
                .is_ok()
        );
        assert_eq!(
            s.verify(Some("1000"), Some(&good), body, 1000 + 301)
                .unwrap_err()
                .code,
            "stale_timestamp"
        );
        assert_eq!(
            s.verify(Some("1000"), Some(&good), body, 1000 - 301)
                .unwrap_err()
                .code,
            "stale_timestamp"
        );
        let wrong = sign("another secret", "1000", body);
        assert_eq!(
            s.verify(Some("1000"), Some(&wrong), body, 1000)
                .unwrap_err()
                .code,
            "bad_signature"
        );
        assert_eq!(
            s.verify(Some("1001"), Some(&good), body, 1000)
                .unwrap_err()
                .code,
            "bad_signature"
        );
        assert_eq!(
            s.verify(Some("1000"), Some(&good), b"payload=x", 1000)
                .unwrap_err()
                .code,
            "bad_signature"
        );
        assert_eq!(
            s.verify(None, Some(&good), body, 1000).unwrap_err().code,
            "bad_signature"
        );
        assert_eq!(
            s.verify(Some("1000"), None, body, 1000).unwrap_err().code,
            "bad_signature"
        );
    }

    #[test]
    fn interactions_need_one_approve_or_deny_action_on_a_named_request() {
        let form = |p: Value| {
            format!(
                "payload={}",
                url::form_urlencoded::byte_serialize(p.to_string().as_bytes()).collect::<String>()
            )
        };
        let ok = json!({"type": "block_actions", "user": {"id": "U1"}, "team": {"id": "T1"},
            "actions": [{"action_id": "approve", "block_id": "approval:X1", "value": "X1"}]});
        let i = parse_interaction(form(ok.clone()).as_bytes()).unwrap();
        assert_eq!(
            (i.user.as_str(), i.approval_id.as_str(), i.decision.as_str()),
            ("U1", "X1", "approve")
        );
        let mut two = ok.clone();
        two["actions"] = json!([ok["actions"][0], ok["actions"][0]]);
        let mut other = ok.clone();
        other["actions"][0]["action_id"] = json!("escalate");
        let mut mismatch = ok.clone();
        mismatch["actions"][0]["block_id"] = json!("approval:X2");
        for bad in [two, other, mismatch, json!({"type": "view_submission"})] {
            assert_eq!(
                parse_interaction(form(bad).as_bytes()).unwrap_err().code,
                "malformed"
            );
        }
        assert_eq!(
            parse_interaction(b"nothing=here").unwrap_err().code,
            "malformed"
        );
    }
}
