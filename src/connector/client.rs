//! One vendor exchange: rendering a request template, authenticating, sending it without
//! following redirects, and turning the answer (or its absence) into an [`Outcome`] plus a
//! redacted evidence record.
//!
//! Owns: template rendering and its injection guards (placeholder values are percent-encoded
//! in paths, filled only inside JSON strings in bodies, and the final URL must keep the
//! configured scheme, host and port), OAuth2 token caching, the circuit breaker, rate-limit
//! header parsing (`Retry-After`, epoch headers), backoff with full jitter, and redaction of
//! secrets from everything recorded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::secret::Secret;

use super::error::{AuthError, RenderError, RuntimeError, ValueError};
use super::query::FilterLanguage;
use super::spec::{AuthSpec, BreakerSpec, RequestSpec, RetrySpec};

pub use super::answer::{ProbeState, WriteClass, capture, classify_write, read_probe};

/// Values for a request's placeholders.
#[derive(Debug, Clone, Default)]
pub struct Vars(pub BTreeMap<String, String>);

impl Vars {
    pub fn set(&mut self, k: impl Into<String>, v: impl Into<String>) {
        self.0.insert(k.into(), v.into());
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(|s| s.as_str())
    }
}

/// A rendered request, ready to send or to record in dry-run.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Body>,
}

#[derive(Debug, Clone)]
pub enum Body {
    Json(Value),
    Form(Vec<(String, String)>),
}

impl Rendered {
    /// What is recorded about the request (never the auth header, which is added at send).
    pub fn describe(&self) -> Value {
        let path = match self.url.query() {
            Some(q) => format!("{}?{}", self.url.path(), q),
            None => self.url.path().to_string(),
        };
        json!({
            "method": self.method.as_str(),
            "host": self.url.host_str(),
            "port": self.url.port_or_known_default(),
            "path": path,
            "headers": self.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "body": match &self.body {
                None => Value::Null,
                Some(Body::Json(v)) => v.clone(),
                Some(Body::Form(f)) => Value::Object(f.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()),
            },
        })
    }
}

/// Bytes that stay literal in a rendered path value (RFC 3986 unreserved).
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Fills `{name}` placeholders; `encode` is applied to every value.
fn fill(
    template: &str,
    vars: &Vars,
    encode: &dyn Fn(&str) -> Result<String, ValueError>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after
            .find('}')
            .ok_or_else(|| RenderError::Unclosed(template.to_string()))?;
        let name = &after[..j];
        let v = vars
            .get(name)
            .ok_or_else(|| RenderError::NoValue(name.to_string()))?;
        out.push_str(&encode(v)?);
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// How values may enter a connector's URLs: its filter language and the values its vendor
/// reads as something other than a name.
#[derive(Debug, Clone, Copy)]
pub struct UrlRules<'a> {
    pub language: FilterLanguage,
    pub reserved: &'a [String],
}

impl UrlRules<'_> {
    fn reserved(&self, v: &str) -> Result<(), ValueError> {
        if self.reserved.iter().any(|r| r.eq_ignore_ascii_case(v)) {
            return Err(ValueError::Reserved(v.to_string()));
        }
        Ok(())
    }

    /// A path segment or a plain query value, percent-encoded.
    fn plain(&self, v: &str) -> Result<String, ValueError> {
        self.language.plain(v)?;
        self.reserved(v)?;
        Ok(encode_component(v))
    }

    /// A value inside a filter expression's string literal, escaped for the language (or
    /// refused), then percent-encoded.
    fn literal(&self, v: &str) -> Result<String, ValueError> {
        self.reserved(v)?;
        Ok(encode_component(&self.language.literal(v)?))
    }

    /// The path template filled: plain values in the path, filter parameters' values as
    /// literals of the language.
    fn fill_path(&self, template: &str, vars: &Vars) -> Result<String, RenderError> {
        let plain = |v: &str| self.plain(v);
        let Some((path, query)) = template.split_once('?') else {
            return fill(template, vars, &plain);
        };
        let mut out = fill(path, vars, &plain)?;
        out.push('?');
        for (i, kv) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match kv.split_once('=') {
                Some((k, v)) => {
                    out.push_str(&fill(k, vars, &plain)?);
                    out.push('=');
                    if self.language.params().contains(&k) {
                        out.push_str(&fill(v, vars, &|x| self.literal(x))?);
                    } else {
                        out.push_str(&fill(v, vars, &plain)?);
                    }
                }
                None => out.push_str(&fill(kv, vars, &plain)?),
            }
        }
        Ok(out)
    }
}

fn header_value(v: &str) -> Result<String, ValueError> {
    if v.chars().any(|c| c.is_control()) {
        return Err(ValueError::HeaderControl);
    }
    Ok(v.to_string())
}

fn fill_json(v: &Value, vars: &Vars) -> Result<Value, RenderError> {
    Ok(match v {
        Value::String(s) => Value::String(fill(s, vars, &verbatim)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| fill_json(x, vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => {
            let mut m = serde_json::Map::new();
            for (k, x) in o {
                m.insert(fill(k, vars, &verbatim)?, fill_json(x, vars)?);
            }
            Value::Object(m)
        }
        other => other.clone(),
    })
}

/// A value as it is (inside a JSON string or a form field, where it cannot become syntax).
fn verbatim(v: &str) -> Result<String, ValueError> {
    Ok(v.to_string())
}

/// Renders `r` against `base`. The result's origin is checked against `base`: no placeholder
/// value can change where the request goes, and none can leave a filter's string literal.
pub fn render(
    base: &reqwest::Url,
    rules: UrlRules<'_>,
    r: &RequestSpec,
    vars: &Vars,
) -> Result<Rendered, RenderError> {
    let method = reqwest::Method::from_bytes(r.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| RenderError::Method(r.method.clone()))?;
    let path = rules.fill_path(&r.path, vars)?;
    let text = format!("{}{}", base.as_str().trim_end_matches('/'), path);
    let url = reqwest::Url::parse(&text).map_err(RenderError::Url)?;
    // The path must come out exactly as rendered: no dot segment resolved, nothing rewritten.
    let rendered_path = path.split(['?', '#']).next().unwrap_or("");
    let expected = format!("{}{}", base.path().trim_end_matches('/'), rendered_path);
    if url.path() != expected {
        return Err(RenderError::Rewritten {
            actual: url.path().to_string(),
            expected,
        });
    }
    if url.scheme() != base.scheme()
        || url.host_str() != base.host_str()
        || url.port_or_known_default() != base.port_or_known_default()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(RenderError::LeavesDestination {
            scheme: base.scheme().to_string(),
            host: base.host_str().unwrap_or("").to_string(),
        });
    }
    let mut headers = Vec::new();
    for (k, v) in &r.headers {
        headers.push((k.clone(), fill(v, vars, &header_value)?));
    }
    let body = if let Some(b) = &r.body {
        let json = serde_json::to_value(b).map_err(RenderError::Body)?;
        Some(Body::Json(fill_json(&json, vars)?))
    } else if !r.form.is_empty() {
        let mut f = Vec::new();
        for (k, v) in &r.form {
            f.push((k.clone(), fill(v, vars, &verbatim)?));
        }
        Some(Body::Form(f))
    } else {
        None
    };
    Ok(Rendered {
        method,
        url,
        headers,
        body,
    })
}

/// A vendor answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What one exchange came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    Answer(Answer),
    /// Nothing reached the vendor (connection refused, circuit open): safe to try again.
    NotSent(String),
    /// The request may have reached the vendor and no answer came (timeout, reset, a body cut
    /// off): the outcome is unknown and only a probe may resolve it.
    Uncertain(String),
    /// The vendor answered with a redirect; cordon does not follow it.
    Redirect {
        status: u16,
        location: String,
    },
    /// Credentials refused or missing permissions: fail closed.
    AuthFailed(String),
}

/// One exchange: its outcome, a redacted evidence record, and how long the vendor asked us to
/// wait (429/503).
#[derive(Debug, Clone)]
pub struct Exchange {
    pub outcome: Outcome,
    pub evidence: Value,
    pub wait: Option<Duration>,
}

/// The live side of a connector: HTTP client, secrets, token cache, breaker.
pub struct Runtime {
    client: reqwest::Client,
    auth: AuthSpec,
    secrets: BTreeMap<&'static str, Secret>,
    token: tokio::sync::Mutex<Option<(Secret, Instant)>>,
    breaker: Mutex<BreakerState>,
    breaker_spec: BreakerSpec,
    request_id_headers: Vec<String>,
    epoch_headers: Vec<String>,
}

#[derive(Default)]
struct BreakerState {
    consecutive: u32,
    open_until: Option<Instant>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

const MAX_EVIDENCE_BODY: usize = 16 * 1024;

/// The largest vendor answer read (vendor APIs answer in kilobytes; a page of search results is
/// well under this). A longer one is not read to the end: its request's outcome is uncertain,
/// and nothing is concluded from it, so a vendor or proxy streaming without end cannot exhaust
/// the daemon's memory.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Why an answer's body was not read whole.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the answer is larger than {0} bytes; not read")]
    TooLarge(usize),
    #[error("the answer was cut off ({0})")]
    CutOff(String),
}

/// Reads an answer's body, at most `max` bytes.
async fn body_within(mut res: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    if res.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge(max));
    }
    let mut out = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > max {
                    return Err(BodyError::TooLarge(max));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(BodyError::CutOff(transport_error(&e))),
        }
    }
}

impl Runtime {
    pub fn new(
        timeout: Duration,
        proxy: Option<&str>,
        auth: AuthSpec,
        secrets: BTreeMap<&'static str, Secret>,
        breaker_spec: BreakerSpec,
        request_id_headers: Vec<String>,
        retry: &RetrySpec,
    ) -> Result<Runtime, RuntimeError> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("cordon/", env!("CARGO_PKG_VERSION")));
        b = match proxy {
            Some(p) => b.proxy(reqwest::Proxy::all(p).map_err(RuntimeError::Proxy)?),
            None => b.no_proxy(),
        };
        Ok(Runtime {
            client: b.build().map_err(RuntimeError::Client)?,
            auth,
            secrets,
            token: tokio::sync::Mutex::new(None),
            breaker: Mutex::new(BreakerState::default()),
            breaker_spec,
            request_id_headers,
            epoch_headers: retry.epoch_headers.clone(),
        })
    }

    fn secret(&self, key: &str) -> &str {
        self.secrets.get(key).map(|s| s.expose()).unwrap_or("")
    }

    /// Every secret value, for redaction.
    fn secret_values(&self) -> Vec<&str> {
        self.secrets
            .values()
            .map(|s| s.expose())
            .filter(|s| s.len() >= 4)
            .collect()
    }

    /// Scrubs secrets from a JSON value: sensitive keys are replaced, and any string holding a
    /// configured secret has it cut out.
    pub fn redact(&self, v: &mut Value) {
        let secrets = self.secret_values();
        redact_value(v, &secrets);
    }

    fn breaker_open(&self) -> Option<Duration> {
        let b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        b.open_until
            .and_then(|t| t.checked_duration_since(Instant::now()))
    }

    fn breaker_result(&self, failed: bool) {
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            b.consecutive = b.consecutive.saturating_add(1);
            if b.consecutive >= self.breaker_spec.failures {
                b.open_until =
                    Some(Instant::now() + Duration::from_secs(self.breaker_spec.open_secs));
            }
        } else {
            b.consecutive = 0;
            b.open_until = None;
        }
    }

    /// A bearer token from the cache or the token endpoint.
    async fn oauth_token(
        &self,
        force: bool,
        evidence: &mut Vec<Value>,
    ) -> Result<String, AuthError> {
        let AuthSpec::Oauth2ClientCredentials {
            token_url, scope, ..
        } = &self.auth
        else {
            return Err(AuthError::NotOauth);
        };
        let mut cache = self.token.lock().await;
        if !force
            && let Some((t, until)) = cache.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.expose().to_string());
        }
        *cache = None;
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", self.secret("auth.client_id").to_string()),
            (
                "client_secret",
                self.secret("auth.client_secret").to_string(),
            ),
        ];
        if let Some(s) = scope {
            form.push(("scope", s.clone()));
        }
        let url = reqwest::Url::parse(token_url)?;
        let started = Instant::now();
        let res = self.client.post(url.clone()).form(&form).send().await;
        let mut ev = json!({"phase": "token", "method": "POST", "host": url.host_str(), "path": url.path(), "elapsed_ms": started.elapsed().as_millis() as u64});
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                ev["error"] = Value::String(transport_error(&e));
                evidence.push(ev);
                return Err(AuthError::Unreachable(transport_error(&e)));
            }
        };
        let status = res.status().as_u16();
        ev["status"] = json!(status);
        evidence.push(ev);
        if !(200..300).contains(&status) {
            return Err(AuthError::Status(status));
        }
        let body: Value = res.json().await.map_err(|_| AuthError::NotJson)?;
        let token = body["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::NoToken)?
            .to_string();
        let ttl = body["expires_in"].as_u64().unwrap_or(300);
        // Refresh a minute early (or at half-life for short tokens).
        let keep = Duration::from_secs(ttl.saturating_sub(60).max(ttl / 2));
        *cache = Some((Secret::new(token.clone()), Instant::now() + keep));
        Ok(token)
    }

    async fn auth_header(
        &self,
        force: bool,
        evidence: &mut Vec<Value>,
    ) -> Result<Option<(String, String)>, AuthError> {
        Ok(match &self.auth {
            AuthSpec::None => None,
            AuthSpec::Bearer { .. } => Some((
                "Authorization".into(),
                format!("Bearer {}", self.secret("auth.token")),
            )),
            AuthSpec::Header { name, prefix, .. } => Some((
                name.clone(),
                format!("{prefix}{}", self.secret("auth.value")),
            )),
            AuthSpec::Basic { username, .. } => Some((
                "Authorization".into(),
                format!(
                    "Basic {}",
                    basic_credentials(username, self.secret("auth.password"))
                ),
            )),
            AuthSpec::Oauth2ClientCredentials { .. } => Some((
                "Authorization".into(),
                format!("Bearer {}", self.oauth_token(force, evidence).await?),
            )),
        })
    }

    /// Sends one request (plus one token refresh and resend after a 401 on OAuth2).
    pub async fn send(&self, phase: &str, r: &Rendered) -> Exchange {
        let mut trail = Vec::new();
        if let Some(left) = self.breaker_open() {
            let mut ev = r.describe();
            ev["phase"] = json!(phase);
            ev["outcome"] = json!("circuit_open");
            self.redact(&mut ev);
            return Exchange {
                outcome: Outcome::NotSent(format!(
                    "circuit breaker open for {}s after repeated failures",
                    left.as_secs() + 1
                )),
                evidence: ev,
                wait: Some(left),
            };
        }
        let mut force = false;
        loop {
            let auth = match self.auth_header(force, &mut trail).await {
                Ok(a) => a,
                Err(e) => {
                    let mut ev = r.describe();
                    ev["phase"] = json!(phase);
                    ev["outcome"] = json!("auth_failed");
                    ev["error"] = json!(e.to_string());
                    ev["token_exchanges"] = json!(trail);
                    self.redact(&mut ev);
                    return Exchange {
                        outcome: Outcome::AuthFailed(e.to_string()),
                        evidence: ev,
                        wait: None,
                    };
                }
            };
            let (ex, status) = self.send_once(phase, r, auth, &trail).await;
            let oauth = matches!(self.auth, AuthSpec::Oauth2ClientCredentials { .. });
            if status == Some(401) && oauth && !force {
                // A revoked or expired token: fetch a new one and resend once. A 401 means the
                // request was not processed, so this is not a blind resend.
                force = true;
                trail.push(ex.evidence);
                continue;
            }
            return ex;
        }
    }

    async fn send_once(
        &self,
        phase: &str,
        r: &Rendered,
        auth: Option<(String, String)>,
        trail: &[Value],
    ) -> (Exchange, Option<u16>) {
        let mut req = self.client.request(r.method.clone(), r.url.clone());
        for (k, v) in &r.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some((k, v)) = auth {
            req = req.header(k.as_str(), v.as_str());
        }
        match &r.body {
            Some(Body::Json(v)) => req = req.json(v),
            Some(Body::Form(f)) => req = req.form(f),
            None => {}
        }
        let started = Instant::now();
        let mut ev = r.describe();
        ev["phase"] = json!(phase);
        if !trail.is_empty() {
            ev["earlier"] = json!(trail);
        }
        let res = req.send().await;
        let outcome = match res {
            Err(e) => {
                ev["error"] = json!(transport_error(&e));
                // Connection never established: nothing was sent.
                if e.is_connect() {
                    Outcome::NotSent(transport_error(&e))
                } else {
                    Outcome::Uncertain(transport_error(&e))
                }
            }
            Ok(res) => {
                let status = res.status().as_u16();
                let headers: Vec<(String, String)> = res
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                ev["status"] = json!(status);
                let ids: serde_json::Map<String, Value> = self
                    .request_id_headers
                    .iter()
                    .filter_map(|h| {
                        headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(h))
                            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    })
                    .collect();
                if !ids.is_empty() {
                    ev["vendor_request_ids"] = Value::Object(ids);
                }
                match body_within(res, MAX_ANSWER_BYTES).await {
                    Err(why) => {
                        ev["error"] = json!(why.to_string());
                        Outcome::Uncertain(why.to_string())
                    }
                    Ok(bytes) => {
                        let json: Value = if bytes.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                                Value::String(String::from_utf8_lossy(&bytes).into_owned())
                            })
                        };
                        ev["response"] = if bytes.len() > MAX_EVIDENCE_BODY {
                            json!({"truncated": true, "bytes": bytes.len(), "head": String::from_utf8_lossy(&bytes[..MAX_EVIDENCE_BODY])})
                        } else {
                            json.clone()
                        };
                        let ans = Answer {
                            status,
                            json,
                            headers,
                        };
                        if (300..400).contains(&status) {
                            Outcome::Redirect {
                                status,
                                location: ans.header("location").unwrap_or("").to_string(),
                            }
                        } else if status == 401 || status == 403 {
                            Outcome::AuthFailed(format!(
                                "the vendor answered {status} ({})",
                                if status == 401 {
                                    "credentials refused"
                                } else {
                                    "missing permission"
                                }
                            ))
                        } else {
                            Outcome::Answer(ans)
                        }
                    }
                }
            }
        };
        ev["elapsed_ms"] = json!(started.elapsed().as_millis() as u64);
        let (failed, status, wait) = match &outcome {
            Outcome::Answer(a) => (
                a.status >= 500,
                Some(a.status),
                (a.status == 429 || a.status == 503)
                    .then(|| self.vendor_wait(a))
                    .flatten(),
            ),
            Outcome::NotSent(_) | Outcome::Uncertain(_) => (true, None, None),
            Outcome::AuthFailed(_) => (false, ev["status"].as_u64().map(|s| s as u16), None),
            Outcome::Redirect { status, .. } => (false, Some(*status), None),
        };
        self.breaker_result(failed);
        if let Some(w) = wait {
            ev["vendor_wait_ms"] = json!(w.as_millis() as u64);
        }
        self.redact(&mut ev);
        (
            Exchange {
                outcome,
                evidence: ev,
                wait,
            },
            status,
        )
    }

    /// How long the vendor asked us to wait: `Retry-After` (seconds or an HTTP date), or an
    /// epoch header (seconds; milliseconds are recognised by size).
    fn vendor_wait(&self, a: &Answer) -> Option<Duration> {
        let now = Utc::now();
        if let Some(v) = a.header("retry-after") {
            let v = v.trim();
            if let Ok(s) = v.parse::<u64>() {
                return Some(Duration::from_secs(s));
            }
            if let Ok(t) = DateTime::parse_from_rfc2822(v) {
                return Some(
                    (t.with_timezone(&Utc) - now)
                        .to_std()
                        .unwrap_or(Duration::ZERO),
                );
            }
        }
        for h in &self.epoch_headers {
            if let Some(v) = a.header(h).and_then(|v| v.trim().parse::<f64>().ok()) {
                let secs = if v > 1e12 { v / 1000.0 } else { v };
                let until = DateTime::<Utc>::from_timestamp(secs as i64, 0)?;
                return Some((until - now).to_std().unwrap_or(Duration::ZERO));
            }
        }
        None
    }
}

fn transport_error(e: &reqwest::Error) -> String {
    // reqwest errors print the URL; ours never carries secrets (auth goes in headers), but the
    // message is kept to its kind to be safe.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "answer body failed"
    } else if e.is_request() {
        "request failed (connection reset or closed)"
    } else {
        "transport error"
    };
    let mut src = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

fn is_sensitive_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "authorization",
        "api_key",
        "apikey",
        "api-key",
        "credential",
        "cookie",
    ]
    .iter()
    .any(|s| k.contains(s))
}

fn redact_value(v: &mut Value, secrets: &[&str]) {
    match v {
        Value::String(s) => {
            for sec in secrets {
                if s.contains(sec) {
                    *s = s.replace(sec, "**REDACTED**");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact_value(x, secrets)),
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if is_sensitive_key(k) && !matches!(x, Value::Null | Value::Bool(_)) {
                    *x = Value::String("**REDACTED**".into());
                } else {
                    redact_value(x, secrets);
                }
            }
        }
        _ => {}
    }
}

/// Exponential backoff with full jitter: a uniform delay in `[0, min(max, base·2^n)]`, but
/// never less than what the vendor asked for.
pub fn backoff(r: &RetrySpec, attempt: u32, vendor: Option<Duration>) -> Duration {
    let cap = r
        .base_delay_ms
        .saturating_mul(1u64 << attempt.min(20))
        .min(r.max_delay_ms);
    let jitter = Duration::from_millis(fastrand::u64(0..=cap));
    match vendor {
        Some(v) => v.max(jitter.min(Duration::from_millis(r.base_delay_ms))),
        None => jitter,
    }
}

/// `user:password` in standard base64, as HTTP basic authentication sends it.
fn basic_credentials(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
