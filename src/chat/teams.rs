//! Microsoft Teams: Adaptive Cards with `Action.Execute` posted through the Bot Connector REST
//! API (client-credentials token, post, update, reply), and verification of the Bot Framework
//! JWT on inbound invoke activities: RS256 signature against the configured keys (a JWKS file,
//! or a JWKS URL refreshed when an unknown key id appears), issuer, audience (the bot's App
//! ID), expiry and not-before with 5 minutes of leeway, and the `serviceUrl` claim matching the
//! activity; then the activity's origin: channel `msteams`, the configured `service_url`, and
//! the configured tenant when one is set.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::view::{View, markdown_text as escape};
use super::{ChatError, Delivered, Refusal, post_json, send_json};
use crate::secret::Secret;

/// Clock skew tolerated on `exp` and `nbf`, as the Bot Framework SDKs do.
const LEEWAY_SECS: u64 = 300;
/// An unknown key id triggers at most one JWKS refetch per this interval.
const REFETCH_EVERY: Duration = Duration::from_secs(60);

pub struct Teams {
    pub app_id: String,
    pub app_password: Secret,
    pub token_url: String,
    pub service_url: String,
    pub issuer: String,
    pub jwks_url: Option<String>,
    /// The Entra tenant callbacks must come from, when configured.
    pub tenant_id: Option<String>,
    keys: Mutex<(JwkSet, Option<Instant>)>,
    token: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

#[derive(Debug, serde::Deserialize)]
struct Claims {
    #[serde(rename = "serviceUrl", default)]
    service_url: Option<String>,
}

impl Teams {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app_id: String,
        app_password: Secret,
        token_url: String,
        service_url: String,
        issuer: String,
        jwks_url: Option<String>,
        tenant_id: Option<String>,
        keys: JwkSet,
    ) -> Teams {
        Teams {
            app_id,
            app_password,
            token_url,
            service_url,
            issuer,
            jwks_url,
            tenant_id,
            keys: Mutex::new((keys, None)),
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// Fetches the JWKS from `jwks_url` (at start, and when a token names an unknown key).
    pub async fn refresh_keys(&self, http: &reqwest::Client) -> Result<(), ChatError> {
        let Some(url) = &self.jwks_url else {
            return Ok(());
        };
        {
            let mut k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            if k.1.is_some_and(|at| at.elapsed() < REFETCH_EVERY) {
                return Ok(());
            }
            k.1 = Some(Instant::now());
        }
        let resp = http
            .get(url)
            .send()
            .await
            .map_err(|source| ChatError::JwksFetch {
                url: url.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(ChatError::JwksStatus {
                url: url.clone(),
                status: resp.status(),
            });
        }
        let set: JwkSet = resp.json().await.map_err(|source| ChatError::JwksFetch {
            url: url.clone(),
            source,
        })?;
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).0 = set;
        Ok(())
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        let k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        k.0.find(kid)
            .and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
    }

    /// Checks that a verified activity comes from this bot's Teams: channel `msteams`, the
    /// configured `service_url` (a token the Bot Framework issued for another service, or for
    /// Web Chat or the emulator, is not one of ours) and the configured tenant, if any. Refused
    /// as `wrong_team`, like a Slack callback from another workspace.
    pub fn check_origin(&self, activity: &Value) -> Result<(), Refusal> {
        let wrong = |m: String| Refusal::new("wrong_team", m);
        if activity["channelId"].as_str() != Some("msteams") {
            return Err(wrong(
                "only Microsoft Teams activities (channelId msteams) are accepted".into(),
            ));
        }
        let trim = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
        if activity["serviceUrl"].as_str().map(trim) != Some(trim(&self.service_url)) {
            return Err(wrong(
                "the activity's serviceUrl is not the configured service_url".into(),
            ));
        }
        if let Some(want) = &self.tenant_id {
            let got = activity["channelData"]["tenant"]["id"].as_str();
            if !got.is_some_and(|g| g.eq_ignore_ascii_case(want)) {
                return Err(wrong(format!(
                    "callbacks are accepted from tenant {want} only"
                )));
            }
        }
        Ok(())
    }

    /// Verifies the bearer token of an inbound activity.
    pub async fn verify(
        &self,
        http: &reqwest::Client,
        authorization: Option<&str>,
        activity: &Value,
    ) -> Result<(), Refusal> {
        let bad = |m: String| Refusal::new("bad_jwt", m);
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("no bearer token".into()))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| bad(format!("not a JWT: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(bad(format!(
                "algorithm {:?} is not accepted (RS256 only)",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| bad("the token names no key (kid)".into()))?;
        let key = match self.key(&kid) {
            Some(k) => k,
            None => {
                if let Err(e) = self.refresh_keys(http).await {
                    tracing::warn!(error = %e, "Bot Framework signing keys could not be fetched");
                }
                self.key(&kid).ok_or_else(|| {
                    bad(format!(
                        "key {kid:?} is not among the configured signing keys"
                    ))
                })?
            }
        };
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.app_id]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map_err(|e| bad(format!("token refused: {e}")))?;
        let trim = |s: &str| s.trim_end_matches('/').to_string();
        let claimed = data.claims.service_url.as_deref().map(trim);
        let activity_url = activity["serviceUrl"].as_str().map(trim);
        if claimed.is_none() || claimed != activity_url {
            return Err(bad(
                "the token's serviceUrl does not match the activity's".into()
            ));
        }
        Ok(())
    }

    async fn bearer(&self, http: &reqwest::Client) -> Result<Secret, ChatError> {
        let mut cached = self.token.lock().await;
        if let Some((t, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(Secret::new(t.expose().to_string()));
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.app_id.as_str()),
            ("client_secret", self.app_password.expose()),
            ("scope", "https://api.botframework.com/.default"),
        ];
        let resp = http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| ChatError::TokenTransport(super::describe(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ChatError::TokenStatus(status));
        }
        let body: Value = resp.json().await.map_err(|_| ChatError::TokenNotJson)?;
        let token = body["access_token"]
            .as_str()
            .ok_or(ChatError::TokenMissing)?
            .to_string();
        let life = body["expires_in"]
            .as_u64()
            .unwrap_or(3600)
            .saturating_sub(300)
            .max(60);
        *cached = Some((
            Secret::new(token.clone()),
            Instant::now() + Duration::from_secs(life),
        ));
        Ok(Secret::new(token))
    }

    fn activities(&self, conversation: &str) -> String {
        let base = self.service_url.trim_end_matches('/');
        let conv: String = url::form_urlencoded::byte_serialize(conversation.as_bytes()).collect();
        format!("{base}/v3/conversations/{conv}/activities")
    }

    fn card(v: &View) -> Value {
        let facts: Vec<Value> = v
            .lines()
            .into_iter()
            .map(|(k, val)| json!({"title": k, "value": escape(&val)}))
            .collect();
        let mut card = json!({
            "type": "AdaptiveCard",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": "1.5",
            "body": [
                {"type": "TextBlock", "text": format!("{} {}", escape(&v.action), escape(&v.target)), "weight": "Bolder", "size": "Medium", "wrap": true},
                {"type": "FactSet", "facts": facts},
            ],
        });
        if v.pending {
            card["actions"] = json!([
                {"type": "Action.Execute", "title": "Approve", "verb": "approve", "style": "positive", "data": {"approval_id": v.action_id}},
                {"type": "Action.Execute", "title": "Deny", "verb": "deny", "style": "destructive", "data": {"approval_id": v.action_id}},
            ]);
        }
        json!({"type": "message", "summary": escape(&v.headline()), "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ]})
    }

    pub async fn post(
        &self,
        http: &reqwest::Client,
        conversation: &str,
        v: &View,
    ) -> Result<Delivered, ChatError> {
        let t = self.bearer(http).await?;
        let a = post_json(
            http.post(self.activities(conversation))
                .bearer_auth(t.expose()),
            &Self::card(v),
        )
        .await?;
        let id = a["id"].as_str().ok_or(ChatError::NoReference {
            platform: "teams",
            what: "the created activity has no id",
        })?;
        Ok(Delivered {
            channel: conversation.to_string(),
            reference: id.to_string(),
        })
    }

    pub async fn update(
        &self,
        http: &reqwest::Client,
        conversation: &str,
        id: &str,
        v: &View,
    ) -> Result<(), ChatError> {
        let t = self.bearer(http).await?;
        let url = format!("{}/{}", self.activities(conversation), urlenc(id));
        send_json(http.put(url).bearer_auth(t.expose()), &Self::card(v))
            .await
            .map(|_| ())
    }

    /// Posts a message to `conversation` as it is written (Markdown: a report; plain text is
    /// escaped by `Platform::post_plain` first).
    pub async fn post_text(
        &self,
        http: &reqwest::Client,
        conversation: &str,
        text: &str,
    ) -> Result<String, ChatError> {
        let t = self.bearer(http).await?;
        let a = post_json(
            http.post(self.activities(conversation))
                .bearer_auth(t.expose()),
            &json!({"type": "message", "text": text}),
        )
        .await?;
        Ok(a["id"].as_str().unwrap_or_default().to_string())
    }

    pub async fn thread(
        &self,
        http: &reqwest::Client,
        conversation: &str,
        id: &str,
        text: &str,
    ) -> Result<(), ChatError> {
        let t = self.bearer(http).await?;
        let url = format!("{}/{}", self.activities(conversation), urlenc(id));
        post_json(
            http.post(url).bearer_auth(t.expose()),
            &json!({"type": "message", "text": escape(text), "replyToId": id}),
        )
        .await
        .map(|_| ())
    }
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// What a Teams `adaptiveCard/action` invoke says.
#[derive(Debug, Clone)]
pub struct Invoke {
    pub user: String,
    pub approval_id: String,
    pub decision: String,
    pub activity_id: Option<String>,
    pub detail: Value,
}

pub fn parse_invoke(a: &Value) -> Result<Invoke, Refusal> {
    let bad = |m: &str| Refusal::new("malformed", m.to_string());
    if a["type"].as_str() != Some("invoke") || a["name"].as_str() != Some("adaptiveCard/action") {
        return Err(bad(
            "only adaptiveCard/action invoke activities are handled",
        ));
    }
    let action = &a["value"]["action"];
    if action["type"].as_str() != Some("Action.Execute") {
        return Err(bad("only Action.Execute is handled"));
    }
    let decision = match action["verb"].as_str() {
        Some(d @ ("approve" | "deny")) => d.to_string(),
        _ => return Err(bad("verb must be approve or deny")),
    };
    let approval_id = action["data"]["approval_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("data.approval_id is missing"))?;
    let user = a["from"]["aadObjectId"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("from.aadObjectId is missing"))?;
    Ok(Invoke {
        user: user.to_string(),
        approval_id: approval_id.to_string(),
        decision,
        activity_id: a["id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        detail: json!({"from": a["from"]["id"], "conversation": a["conversation"]["id"], "service_url": a["serviceUrl"]}),
    })
}
