//! OpenID Connect sign-in for the console: authorization code with PKCE against one issuer.
//!
//! Owns: discovery (`/.well-known/openid-configuration`, read at the first sign-in and kept),
//! the issuer's signing keys (JWKS, fetched again once when a token names a key not seen yet),
//! the authorization URL (state, nonce, S256 code challenge), the token exchange and the ID
//! token's verification (RS256 or ES256 only; issuer, audience, expiry, nonce), and reading who
//! signed in (the configured claim; `email` only with `email_verified: true`) and whether `amr`
//! shows MFA. The one outbound HTTP client
//! outside `connector` and `chat`, and it only talks to the configured issuer's endpoints.
//! Sessions and cookies are `http::console`'s.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::console::OidcConfig;
use crate::secret::Secret;

/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 60;
/// Largest answer read from the provider.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("identity provider unreachable: {0}")]
    Unreachable(String),
    #[error("identity provider answered badly: {0}")]
    BadAnswer(String),
    #[error("id token refused: {0}")]
    TokenRefused(String),
    #[error("no user is mapped to this sign-in: {0}")]
    NotMapped(String),
}

/// The provider's endpoints, from discovery.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// A sign-in under way: what the browser is sent to, and what the callback must match.
#[derive(Debug, Clone)]
pub struct Start {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: Secret,
}

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The value of the configured claim.
    pub claim: String,
    /// `amr` contains `mfa`.
    pub mfa: bool,
}

pub struct Oidc {
    cfg: OidcConfig,
    secret: Option<Secret>,
    http: reqwest::Client,
    discovery: tokio::sync::OnceCell<Discovery>,
    keys: Mutex<JwkSet>,
}

/// 32 random bytes, base64url without padding.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // The operating system's generator fails only if the OS has none; a sign-in then fails.
    if getrandom::fill(&mut b).is_err() {
        b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = fastrand::u8(..) ^ (i as u8);
        }
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The S256 code challenge of a PKCE verifier.
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: String,
}

impl Oidc {
    /// Builds the client; the secret was resolved at validation.
    pub fn new(cfg: OidcConfig) -> Result<Oidc, OidcError> {
        let secret = match &cfg.client_secret {
            Some(r) => Some(
                r.resolve()
                    .map_err(|e| OidcError::BadAnswer(format!("client secret: {e}")))?,
            ),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        Ok(Oidc {
            cfg,
            secret,
            http,
            discovery: tokio::sync::OnceCell::new(),
            keys: Mutex::new(JwkSet { keys: vec![] }),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(format!("{url}: {e}")))?;
        read_json(url, resp).await
    }

    async fn discovery(&self) -> Result<&Discovery, OidcError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.cfg.issuer.trim_end_matches('/')
                );
                let d: Discovery = self.get_json(&url).await?;
                if d.issuer.trim_end_matches('/') != self.cfg.issuer.trim_end_matches('/') {
                    return Err(OidcError::BadAnswer(
                        "discovery names another issuer".into(),
                    ));
                }
                for (what, u) in [
                    ("authorization_endpoint", &d.authorization_endpoint),
                    ("token_endpoint", &d.token_endpoint),
                    ("jwks_uri", &d.jwks_uri),
                ] {
                    let mut problems = Vec::new();
                    crate::console::check_url(what, u, &mut problems);
                    if let Some((_, why)) = problems.first() {
                        return Err(OidcError::BadAnswer(format!("discovery {what} {why}")));
                    }
                }
                Ok(d)
            })
            .await
    }

    /// Starts a sign-in: the URL to send the browser to, with fresh state, nonce and verifier.
    pub async fn start(&self) -> Result<Start, OidcError> {
        let d = self.discovery().await?;
        let state = random_token();
        let nonce = random_token();
        let verifier = random_token();
        let mut url = url::Url::parse(&d.authorization_endpoint)
            .map_err(|e| OidcError::BadAnswer(format!("authorization_endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("redirect_uri", &self.cfg.redirect_url)
            .append_pair("scope", &self.cfg.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(Start {
            url: url.to_string(),
            state,
            nonce,
            verifier: Secret::new(verifier),
        })
    }

    /// Exchanges the code and verifies the ID token it brings.
    pub async fn finish(
        &self,
        code: &str,
        verifier: &Secret,
        nonce: &str,
    ) -> Result<SignedIn, OidcError> {
        let d = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.cfg.redirect_url.as_str()),
            ("client_id", self.cfg.client_id.as_str()),
            ("code_verifier", verifier.expose()),
        ];
        if let Some(s) = &self.secret {
            form.push(("client_secret", s.expose()));
        }
        let resp = self
            .http
            .post(&d.token_endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(format!("token endpoint: {e}")))?;
        let answer: TokenAnswer = read_json("token endpoint", resp).await?;
        self.verify(&answer.id_token, nonce).await
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        let k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        k.find(kid).and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
    }

    async fn verify(&self, token: &str, nonce: &str) -> Result<SignedIn, OidcError> {
        let refused = |m: String| OidcError::TokenRefused(m);
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| refused(format!("not a JWT: {e}")))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(refused(format!(
                "algorithm {:?} is not accepted (RS256 or ES256)",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| refused("the token names no key (kid)".into()))?;
        let key = match self.key(&kid) {
            Some(k) => k,
            None => {
                let d = self.discovery().await?;
                let set: JwkSet = self.get_json(&d.jwks_uri).await?;
                *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = set;
                self.key(&kid).ok_or_else(|| {
                    refused("the token's key is not among the issuer's keys".into())
                })?
            }
        };
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[
            self.cfg.issuer.as_str(),
            self.cfg.issuer.trim_end_matches('/'),
        ]);
        v.set_audience(&[&self.cfg.client_id]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .map_err(|e| refused(e.to_string()))?;
        let claims = data.claims;
        if claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce) {
            return Err(refused("the nonce does not match this sign-in".into()));
        }
        let claim = claims
            .get(&self.cfg.user_claim)
            .and_then(|c| c.as_str())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| refused(format!("no {} claim", self.cfg.user_claim)))?
            .to_string();
        // An address the provider has not verified may be anyone's (many providers let a
        // person type any address into a profile): it names no one.
        if self.cfg.user_claim == "email" && claims.get("email_verified") != Some(&true.into()) {
            return Err(refused(
                "the identity provider has not verified this email address (email_verified is not true)".into(),
            ));
        }
        let mfa = claims
            .get("amr")
            .and_then(|a| a.as_array())
            .is_some_and(|a| a.iter().any(|m| m.as_str() == Some("mfa")));
        Ok(SignedIn { claim, mfa })
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    what: &str,
    resp: reqwest::Response,
) -> Result<T, OidcError> {
    let status = resp.status();
    if resp
        .content_length()
        .is_some_and(|n| n as usize > MAX_ANSWER_BYTES)
    {
        return Err(OidcError::BadAnswer(format!("{what}: answer too large")));
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| OidcError::Unreachable(format!("{what}: {e}")))?;
    if bytes.len() > MAX_ANSWER_BYTES {
        return Err(OidcError::BadAnswer(format!("{what}: answer too large")));
    }
    if !status.is_success() {
        return Err(OidcError::BadAnswer(format!("{what}: HTTP {status}")));
    }
    serde_json::from_slice(&bytes).map_err(|e| OidcError::BadAnswer(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_challenge_is_the_unpadded_base64url_sha256_of_the_verifier() {
        // Expected value from `printf %s VERIFIER | openssl dgst -sha256 -binary | base64`,
        // made URL-safe and unpadded.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r2wW1gJZ8W5G0k"),
            "JdswoYKJST3rrd2H10o63vGrjepYOGJf-4cICGyG42Y"
        );
    }
}
