//! Credentials, written once for every test: the approver tokens the tests sign in with, the
//! fakes' side of vendor auth (issued bearer tokens with their audience, the auth test switch,
//! the Microsoft identity platform client-credentials token endpoint), the client side of a
//! token request, and the HMAC and base64 helpers of signed callbacks and Basic auth.

use std::collections::HashMap;

use ::base64::Engine as _;
use axum::response::Response;
use chrono::Utc;
use cordon::config::ApproverToken;
use cordon::secret::SecretRef;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::fakes::{Req, json_response, rand_alnum, uuidish};

// ---------------------------------------------------------------------------------------------
// Signing in to cordon
// ---------------------------------------------------------------------------------------------

/// Everyone in `policies/people.entities.json`; each gets the bearer token `<user>-token`.
pub const USERS: [&str; 5] = ["alice", "bob", "carol", "dave", "mallory"];

/// `hex(SHA-256(t))`: how the config stores a token.
pub fn sha(t: &str) -> String {
    hex::encode(Sha256::digest(t.as_bytes()))
}

/// A token as the config holds it: its SHA-256 only.
pub fn sha_ref(t: &str) -> SecretRef {
    SecretRef::Sha256(sha(t))
}

/// The approver token of `user`.
pub fn token_of(user: &str) -> String {
    format!("{user}-token")
}

/// `cfg.grpc.approvers` for `users`, each with [`token_of`] stored as its SHA-256 hash only.
pub fn approvers(users: &[&str]) -> Vec<ApproverToken> {
    users
        .iter()
        .map(|u| ApproverToken {
            user: u.to_string(),
            token: sha_ref(&token_of(u)),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

/// `hex(HMAC_SHA256(key, msg))`.
pub fn hmac_hex(key: &str, msg: &str) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("hmac key");
    m.update(msg.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

// ---------------------------------------------------------------------------------------------
// The fakes' side of vendor auth
// ---------------------------------------------------------------------------------------------

/// Standard base64 (with padding), for Basic auth.
pub fn base64(input: &str) -> String {
    ::base64::engine::general_purpose::STANDARD.encode(input)
}

/// Issued bearer tokens, each with the audience it was minted for.
#[derive(Default, Debug)]
pub struct Tokens {
    valid: HashMap<String, String>,
    pub issued: usize,
}

impl Tokens {
    pub fn issue(&mut self, prefix: &str, audience: &str) -> String {
        let t = format!("{prefix}{}", rand_alnum(48));
        self.valid.insert(t.clone(), audience.to_owned());
        self.issued += 1;
        t
    }
    /// The audience of a valid token.
    pub fn audience(&self, token: &str) -> Option<&str> {
        self.valid.get(token).map(String::as_str)
    }
    /// True if `token` was issued and has not expired.
    pub fn is_valid(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| self.valid.contains_key(t))
    }
    /// Expires every issued token (the next API call with one gets a 401).
    pub fn expire_all(&mut self) {
        self.valid.clear();
    }
}

/// How an API credential check should answer (test switches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMode {
    #[default]
    Ok,
    /// Token endpoint and every API call answer 401.
    Unauthorized,
    /// Credentials are accepted but the API answers 403 (missing permission / scope).
    Forbidden,
}

/// Why a fake refuses a call; each fake answers it in its vendor's shape (status 401 or 403).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Unauthorized,
    Forbidden,
}

impl AuthMode {
    /// A fake's test switch: `on` puts the credential check into `failure`, off back to `Ok`.
    pub fn switch(&mut self, on: bool, failure: AuthMode) {
        *self = if on { failure } else { AuthMode::Ok };
    }

    /// The check every fake makes before it serves a call: a wrong credential, or the 401
    /// switch, is `Unauthorized` (checked first, as vendors do); the 403 switch `Forbidden`.
    pub fn check(self, credential_ok: bool) -> Result<(), Refusal> {
        match self {
            _ if !credential_ok => Err(Refusal::Unauthorized),
            AuthMode::Unauthorized => Err(Refusal::Unauthorized),
            AuthMode::Forbidden => Err(Refusal::Forbidden),
            AuthMode::Ok => Ok(()),
        }
    }
}

/// The Microsoft identity platform (Entra ID) client-credentials token endpoint,
/// `POST /{tenant}/oauth2/v2.0/token`, as the Defender and Graph fakes share it.
pub struct AadApp {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
}

fn aad_error(status: u16, error: &str, code: u32, description: &str) -> Response {
    let trace = uuidish();
    let corr = uuidish();
    let ts = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    json_response(
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"),
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

impl AadApp {
    /// Answers `r` if it is a token request (`POST /{tenant}/oauth2/v2.0/token`); `None` for
    /// every other request.
    pub fn serve_token(&self, tokens: &mut Tokens, mode: AuthMode, r: &Req) -> Option<Response> {
        match (r.method.as_str(), r.segs().as_slice()) {
            ("POST", [tenant, "oauth2", "v2.0", "token"]) => {
                Some(self.token(tokens, mode, tenant, r))
            }
            _ => None,
        }
    }

    /// Handles a token request for `tenant` (from the path). The audience recorded with the token
    /// is the scope without its "/.default" suffix.
    pub fn token(&self, tokens: &mut Tokens, mode: AuthMode, tenant: &str, req: &Req) -> Response {
        if tenant != self.tenant {
            return aad_error(
                400,
                "invalid_request",
                90002,
                &format!("Tenant '{tenant}' not found."),
            );
        }
        let ct = req.header("content-type").unwrap_or("");
        if !ct.starts_with("application/x-www-form-urlencoded") {
            return aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
        let form = req.form();
        let Some(grant) = form.get("grant_type") else {
            return aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        };
        if grant != "client_credentials" {
            return aad_error(
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{grant}'."),
            );
        }
        let client_id = form.get("client_id").unwrap_or("");
        if client_id != self.client_id {
            return aad_error(
                400,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
                ),
            );
        }
        if form.get("client_secret") != Some(self.client_secret.as_str())
            || mode == AuthMode::Unauthorized
        {
            return aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            );
        }
        let Some(scope) = form.get("scope") else {
            return aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            );
        };
        let Some(audience) = scope.strip_suffix("/.default") else {
            return aad_error(
                400,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            );
        };
        let token = tokens.issue("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.", audience);
        json_response(
            200,
            json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The client side of a token request
// ---------------------------------------------------------------------------------------------

/// POSTs `form` (urlencoded) to a token endpoint; the status and the answer (JSON, or the text
/// as a string).
pub async fn request_token(c: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = c.post(url).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The client-credentials form of the Microsoft identity platform.
pub fn aad_form<'a>(
    client_id: &'a str,
    secret: &'a str,
    scope: &'a str,
) -> [(&'a str, &'a str); 4] {
    [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
        ("scope", scope),
    ]
}

/// The `access_token` of a token answer.
pub fn access_token(answer: &Value) -> String {
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {answer}"))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_credential_is_refused_before_the_switches() {
        let cases = [
            (AuthMode::Ok, true, Ok(())),
            (AuthMode::Ok, false, Err(Refusal::Unauthorized)),
            (AuthMode::Unauthorized, true, Err(Refusal::Unauthorized)),
            (AuthMode::Forbidden, true, Err(Refusal::Forbidden)),
            (AuthMode::Forbidden, false, Err(Refusal::Unauthorized)),
        ];
        for (mode, credential_ok, want) in cases {
            assert_eq!(mode.check(credential_ok), want, "{mode:?} {credential_ok}");
        }
        let mut mode = AuthMode::Ok;
        mode.switch(true, AuthMode::Forbidden);
        assert_eq!(mode, AuthMode::Forbidden);
        mode.switch(false, AuthMode::Forbidden);
        assert_eq!(mode, AuthMode::Ok);
    }

    #[test]
    fn encodings() {
        assert_eq!(
            base64("Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64("ab"), "YWI=");
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            sha("alice-token"),
            "9c220f200955d76c0a38d308225e0ef10c5f971acaf2f8d1d8f732affa5bd1dc"
        );
        assert_eq!(token_of("alice"), "alice-token");
        let a = approvers(&["alice"]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].user, "alice");
        assert!(matches!(&a[0].token, SecretRef::Sha256(h) if *h == sha("alice-token")));
        assert_eq!(
            access_token(&json!({"access_token": "t", "token_type": "Bearer"})),
            "t"
        );
    }
}
