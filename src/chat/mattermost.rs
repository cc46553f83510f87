//! Mattermost: interactive message buttons posted through the REST API (`/api/v4/posts`,
//! patched on every change) and the per-request secret that authenticates their callbacks.
//! Mattermost does not sign callbacks; each button's `context` carries
//! `HMAC-SHA256(callback_secret, approval_id)`, which only cordon can compute and which is
//! bound to the one request it was issued for.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::view::{View, markdown_text as escape};
use super::{ChatError, Delivered, Refusal, post_json, send_json};
use crate::secret::Secret;

pub struct Mattermost {
    pub url: String,
    pub bot_token: Secret,
    pub callback_secret: Secret,
    /// Where Mattermost's server sends button clicks.
    pub action_url: String,
}

impl Mattermost {
    fn mac(&self, approval_id: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.callback_secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(approval_id.as_bytes());
        mac
    }

    /// The per-request secret carried by the buttons of `approval_id`.
    pub fn token(&self, approval_id: &str) -> String {
        hex::encode(self.mac(approval_id).finalize().into_bytes())
    }

    /// Constant-time check of a presented token against the one issued for `approval_id`.
    pub fn verify_token(&self, approval_id: &str, presented: &str) -> Result<(), Refusal> {
        let bytes = hex::decode(presented.trim())
            .map_err(|_| Refusal::new("bad_token", "the button token is not hex"))?;
        self.mac(approval_id).verify_slice(&bytes).map_err(|_| {
            Refusal::new(
                "bad_token",
                "the button token was not issued for this request",
            )
        })
    }

    /// Markdown; every outside value escaped (`view::markdown_text`).
    fn message(v: &View) -> String {
        let mut s = format!("**{}** {}\n", escape(&v.action), escape(&v.target));
        for (k, val) in v.lines() {
            s.push_str(&format!("**{k}:** {}\n", escape(&val)));
        }
        s
    }

    fn props(&self, v: &View) -> Value {
        if !v.pending {
            return json!({"attachments": []});
        }
        let button = |id: &str, name: &str, style: &str| {
            json!({"id": id, "name": name, "style": style, "integration": {
                "url": self.action_url,
                "context": {"approval_id": v.action_id, "decision": id, "token": self.token(&v.action_id)},
            }})
        };
        json!({"attachments": [{
            "fallback": escape(&v.headline()),
            "text": format!("Tier {} — {}", escape(&v.tier), escape(&v.status)),
            "actions": [button("approve", "Approve", "good"), button("deny", "Deny", "danger")],
        }]})
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v4/{path}", self.url.trim_end_matches('/'))
    }

    pub async fn post(
        &self,
        http: &reqwest::Client,
        channel: &str,
        v: &View,
    ) -> Result<Delivered, ChatError> {
        let body =
            json!({"channel_id": channel, "message": Self::message(v), "props": self.props(v)});
        let a = post_json(
            http.post(self.api("posts"))
                .bearer_auth(self.bot_token.expose()),
            &body,
        )
        .await?;
        let id = a["id"].as_str().ok_or(ChatError::NoReference {
            platform: "mattermost",
            what: "the created post has no id",
        })?;
        Ok(Delivered {
            channel: channel.to_string(),
            reference: id.to_string(),
        })
    }

    pub async fn update(
        &self,
        http: &reqwest::Client,
        post_id: &str,
        v: &View,
    ) -> Result<(), ChatError> {
        let body = json!({"message": Self::message(v), "props": self.props(v)});
        let req = http
            .put(self.api(&format!("posts/{}/patch", urlencode(post_id))))
            .bearer_auth(self.bot_token.expose());
        send_json(req, &body).await.map(|_| ())
    }

    /// Posts a message to `channel` as it is written (Markdown: a report; plain text is
    /// escaped by `Platform::post_plain` first).
    pub async fn post_text(
        &self,
        http: &reqwest::Client,
        channel: &str,
        text: &str,
    ) -> Result<String, ChatError> {
        let body = json!({"channel_id": channel, "message": text});
        let a = post_json(
            http.post(self.api("posts"))
                .bearer_auth(self.bot_token.expose()),
            &body,
        )
        .await?;
        Ok(a["id"].as_str().unwrap_or_default().to_string())
    }

    pub async fn thread(
        &self,
        http: &reqwest::Client,
        channel: &str,
        post_id: &str,
        text: &str,
    ) -> Result<(), ChatError> {
        let body = json!({"channel_id": channel, "root_id": post_id, "message": escape(text)});
        post_json(
            http.post(self.api("posts"))
                .bearer_auth(self.bot_token.expose()),
            &body,
        )
        .await
        .map(|_| ())
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// What a Mattermost button callback says.
#[derive(Debug, Clone)]
pub struct Click {
    pub user: String,
    pub approval_id: String,
    pub decision: String,
    pub token: String,
    pub trigger_id: Option<String>,
    pub detail: Value,
}

pub fn parse_click(raw: &[u8]) -> Result<Click, Refusal> {
    let bad = |m: String| Refusal::new("malformed", m);
    let p: Value = crate::ingest::json::parse(raw).map_err(|e| bad(format!("not JSON: {e}")))?;
    let s = |v: &Value, what: &str| {
        v.as_str()
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .ok_or_else(|| bad(format!("{what} is missing")))
    };
    let ctx = &p["context"];
    let decision = s(&ctx["decision"], "context.decision")?;
    if decision != "approve" && decision != "deny" {
        return Err(bad("context.decision must be approve or deny".into()));
    }
    Ok(Click {
        user: s(&p["user_id"], "user_id")?,
        approval_id: s(&ctx["approval_id"], "context.approval_id")?,
        decision,
        token: ctx["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| Refusal::new("bad_token", "the button carries no token"))?,
        trigger_id: p["trigger_id"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        detail: json!({"user_name": p["user_name"], "post_id": p["post_id"], "channel_id": p["channel_id"], "team_id": p["team_id"]}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mm() -> Mattermost {
        Mattermost {
            url: "http://127.0.0.1:1".into(),
            bot_token: Secret::new("t".into()),
            callback_secret: Secret::new("button-key".into()),
            action_url: "http://127.0.0.1:2/v1/chat/mattermost/actions".into(),
        }
    }

    #[test]
    fn tokens_are_bound_to_their_request() {
        let m = mm();
        let t = m.token("A1");
        assert!(m.verify_token("A1", &t).is_ok());
        assert_eq!(m.verify_token("A2", &t).unwrap_err().code, "bad_token");
        let mut tampered = t.clone();
        tampered.replace_range(0..1, if t.starts_with('0') { "1" } else { "0" });
        assert_eq!(
            m.verify_token("A1", &tampered).unwrap_err().code,
            "bad_token"
        );
        assert_eq!(m.verify_token("A1", "zz").unwrap_err().code, "bad_token");
        let other = Mattermost {
            callback_secret: Secret::new("other".into()),
            ..mm()
        };
        assert_ne!(other.token("A1"), t);
    }
}
