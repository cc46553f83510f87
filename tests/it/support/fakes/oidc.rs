//! A small OpenID Connect provider on loopback: discovery, JWKS, an authorization endpoint that
//! signs in whoever the test names (no login form) and a token endpoint that checks the PKCE
//! verifier and answers with an ID token signed ES256 or RS256. Tests can make it misbehave
//! (another audience, another nonce, an expired token, an unknown key, an email address it
//! has not verified).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawForm, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::Digest;

use super::lock;

pub const CLIENT_ID: &str = "cordon-console";

/// How the next ID token goes wrong, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    None,
    Audience,
    Nonce,
    Expired,
    UnknownKey,
    /// `email_verified: false`.
    EmailUnverified,
    /// No `email_verified` claim.
    EmailVerifiedAbsent,
}

#[derive(Clone)]
struct Who {
    email: String,
    amr: Vec<String>,
    alg: Algorithm,
    tamper: Tamper,
}

struct Grant {
    who: Who,
    nonce: String,
    challenge: String,
    redirect: String,
}

struct Inner {
    issuer: String,
    es: (EncodingKey, Value),
    rs: (EncodingKey, Value),
    next: Mutex<Who>,
    grants: Mutex<HashMap<String, Grant>>,
    tokens_issued: Mutex<usize>,
}

pub struct FakeIdp {
    pub issuer: String,
    inner: Arc<Inner>,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn es256() -> (EncodingKey, Value) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    assert_eq!(raw.len(), 65, "uncompressed P-256 point");
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "es-1", "use": "sig", "alg": "ES256",
                     "x": b64(&raw[1..33]), "y": b64(&raw[33..])});
    (
        EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        jwk,
    )
}

fn rs256() -> (EncodingKey, Value) {
    use rcgen::PublicKeyData;
    use x509_parser::prelude::FromDer;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let spki = kp.subject_public_key_info();
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let x509_parser::public_key::PublicKey::RSA(rsa) = info.parsed().unwrap() else {
        panic!("not an RSA key")
    };
    let trim = |b: &[u8]| {
        let i = b.iter().position(|x| *x != 0).unwrap_or(0);
        b[i..].to_vec()
    };
    let jwk = json!({"kty": "RSA", "kid": "rs-1", "use": "sig", "alg": "RS256",
                     "n": b64(&trim(rsa.modulus)), "e": b64(&trim(rsa.exponent))});
    (
        EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap(),
        jwk,
    )
}

impl FakeIdp {
    pub async fn start() -> FakeIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            es: es256(),
            rs: rs256(),
            next: Mutex::new(Who {
                email: String::new(),
                amr: vec![],
                alg: Algorithm::ES256,
                tamper: Tamper::None,
            }),
            grants: Mutex::new(HashMap::new()),
            tokens_issued: Mutex::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeIdp { issuer, inner }
    }

    /// Who the next sign-in is, with which `amr`, signed how, and what goes wrong.
    pub fn next(&self, email: &str, amr: &[&str], alg: Algorithm, tamper: Tamper) {
        *lock(&self.inner.next) = Who {
            email: email.into(),
            amr: amr.iter().map(|s| s.to_string()).collect(),
            alg,
            tamper,
        };
    }

    pub fn tokens_issued(&self) -> usize {
        *lock(&self.inner.tokens_issued)
    }

    /// `[console.oidc]` for this provider.
    pub fn config(&self, console_base: &str) -> cordon::console::OidcConfig {
        cordon::console::OidcConfig {
            issuer: self.issuer.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: None,
            redirect_url: format!("{console_base}/ui/oidc/callback"),
            user_claim: "email".into(),
            scopes: vec!["openid".into(), "email".into()],
            timeout_secs: 5,
        }
    }
}

fn pairs(q: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(q)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn discovery(State(st): State<Arc<Inner>>) -> Response {
    axum::Json(json!({
        "issuer": st.issuer,
        "authorization_endpoint": format!("{}/authorize", st.issuer),
        "token_endpoint": format!("{}/token", st.issuer),
        "jwks_uri": format!("{}/jwks", st.issuer),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
    .into_response()
}

async fn jwks(State(st): State<Arc<Inner>>) -> Response {
    axum::Json(json!({"keys": [st.es.1, st.rs.1]})).into_response()
}

async fn authorize(State(st): State<Arc<Inner>>, RawQuery(q): RawQuery) -> Response {
    let q = pairs(q.unwrap_or_default().as_bytes());
    let g = |k: &str| q.get(k).cloned().unwrap_or_default();
    if g("response_type") != "code"
        || g("client_id") != CLIENT_ID
        || g("code_challenge_method") != "S256"
        || g("code_challenge").is_empty()
        || !g("scope").split(' ').any(|s| s == "openid")
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let code = format!("code-{}", ulid::Ulid::generate());
    let redirect = g("redirect_uri");
    lock(&st.grants).insert(
        code.clone(),
        Grant {
            who: lock(&st.next).clone(),
            nonce: g("nonce"),
            challenge: g("code_challenge"),
            redirect: redirect.clone(),
        },
    );
    let mut to = url::Url::parse(&redirect).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &g("state"));
    Redirect::to(to.as_str()).into_response()
}

async fn token(State(st): State<Arc<Inner>>, RawForm(body): RawForm) -> Response {
    let f = pairs(&body);
    let g = |k: &str| f.get(k).cloned().unwrap_or_default();
    let Some(grant) = lock(&st.grants).remove(&g("code")) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let verifier_ok = b64(&sha2::Sha256::digest(g("code_verifier").as_bytes())) == grant.challenge;
    if g("grant_type") != "authorization_code"
        || g("client_id") != CLIENT_ID
        || g("redirect_uri") != grant.redirect
        || !verifier_ok
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let now = chrono::Utc::now().timestamp();
    let w = &grant.who;
    let mut claims = json!({
        "iss": st.issuer,
        "sub": format!("sub-{}", w.email),
        "aud": if w.tamper == Tamper::Audience { "someone-else" } else { CLIENT_ID },
        "email": w.email,
        "nonce": if w.tamper == Tamper::Nonce { "another-nonce".to_string() } else { grant.nonce.clone() },
        "amr": w.amr,
        "iat": now,
        "exp": if w.tamper == Tamper::Expired { now - 3600 } else { now + 300 },
    });
    match w.tamper {
        Tamper::EmailVerifiedAbsent => {}
        t => claims["email_verified"] = json!(t != Tamper::EmailUnverified),
    }
    let (key, kid) = match w.alg {
        Algorithm::RS256 => (&st.rs.0, "rs-1"),
        _ => (&st.es.0, "es-1"),
    };
    let mut header = Header::new(w.alg);
    header.kid = Some(if w.tamper == Tamper::UnknownKey {
        "nobody".into()
    } else {
        kid.into()
    });
    let id_token = jsonwebtoken::encode(&header, &claims, key).unwrap();
    *lock(&st.tokens_issued) += 1;
    axum::Json(json!({"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": id_token}))
        .into_response()
}
