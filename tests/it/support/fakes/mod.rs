//! Shared infrastructure for the stateful in-process fake vendor APIs: a loopback-only HTTP server
//! wrapper ([`FakeServer`]) that logs every request ([`RequestLog`]), injects armed faults
//! ([`Faults`]) and decorates every answer with the vendor's headers, plus the effect counter
//! ([`Effects`]) each fake exposes and small helpers (query/form parsing, ids). Vendor auth (issued
//! tokens, the auth switch, the Microsoft identity platform token endpoint) is in `support::auth`.
//!
//! Everything binds `127.0.0.1:0`; no fake ever talks to another host.

#![allow(dead_code)]

pub mod chat;
pub mod crowdstrike;
pub mod defender;
pub mod entra;
pub mod jira;
pub mod oidc;
pub mod okta;
pub mod thehive;
pub mod webhook;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Locks a mutex, ignoring poisoning (a panicking test must not cascade into the fakes).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Effects
// ---------------------------------------------------------------------------------------------

/// Counts side effects a fake applied ("contain:<aid>", "issue:<label>", ...). Cloning shares.
#[derive(Clone, Default, Debug)]
pub struct Effects(Arc<Mutex<BTreeMap<String, usize>>>);

impl Effects {
    /// Records one occurrence of `key`.
    pub fn effect(&self, key: impl Into<String>) {
        *lock(&self.0).entry(key.into()).or_default() += 1;
    }
    /// How many times `key` happened.
    pub fn count(&self, key: &str) -> usize {
        lock(&self.0).get(key).copied().unwrap_or(0)
    }
    /// Sum over all keys.
    pub fn total(&self) -> usize {
        lock(&self.0).values().sum()
    }
    /// Sum over keys starting with `prefix` (e.g. "contain:").
    pub fn count_prefix(&self, prefix: &str) -> usize {
        lock(&self.0)
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
    pub fn snapshot(&self) -> BTreeMap<String, usize> {
        lock(&self.0).clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Request log
// ---------------------------------------------------------------------------------------------

/// One request as the fake received it (before any fault fired).
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    /// Raw (still percent-encoded) query string, "" if none.
    pub query: String,
    /// Every request header, lowercase names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl LoggedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
    /// "path?query" (or just the path).
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
    fn mentions(&self, needle: &str) -> bool {
        self.method.contains(needle)
            || self.path.contains(needle)
            || self.query.contains(needle)
            || percent_decode(&self.query, true).contains(needle)
            || self.body.contains(needle)
            || self
                .headers
                .iter()
                .any(|(k, v)| k.contains(needle) || v.contains(needle))
    }
}

/// Every request a fake received, in order. Cloning shares.
#[derive(Clone, Default, Debug)]
pub struct RequestLog(Arc<Mutex<Vec<LoggedRequest>>>);

impl RequestLog {
    fn push(&self, r: LoggedRequest) {
        lock(&self.0).push(r);
    }
    pub fn all(&self) -> Vec<LoggedRequest> {
        lock(&self.0).clone()
    }
    pub fn last(&self) -> Option<LoggedRequest> {
        lock(&self.0).last().cloned()
    }
    pub fn count(&self) -> usize {
        lock(&self.0).len()
    }
    /// Requests whose method equals `method` (case-insensitive; "" or "*" = any) and whose
    /// "path?query" contains `path_contains`.
    pub fn count_matching(&self, method: &str, path_contains: &str) -> usize {
        self.matching(method, path_contains).len()
    }
    pub fn matching(&self, method: &str, path_contains: &str) -> Vec<LoggedRequest> {
        lock(&self.0)
            .iter()
            .filter(|r| method.is_empty() || method == "*" || r.method.eq_ignore_ascii_case(method))
            .filter(|r| r.target().contains(path_contains))
            .cloned()
            .collect()
    }
    /// True if `needle` appears anywhere in any request: method, path, query (raw or decoded),
    /// header names and values, body. Use it to assert a secret never left cordon.
    pub fn contains_text(&self, needle: &str) -> bool {
        lock(&self.0).iter().any(|r| r.mentions(needle))
    }
    pub fn clear(&self) {
        lock(&self.0).clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// What an armed fault does to a matching request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this status with a vendor-neutral JSON error body; the handler never runs.
    Status(u16),
    /// 429 with `Retry-After: <secs>`; the handler never runs.
    RetryAfter(u64),
    /// 429 with `header` set to the UNIX epoch second `now + secs_from_now` (CrowdStrike
    /// `X-Ratelimit-Retryafter`, Okta `X-Rate-Limit-Reset`); the handler never runs.
    EpochHeader {
        header: &'static str,
        secs_from_now: u64,
    },
    /// The handler runs (the effect happens), then the answer is held back this long.
    TimeoutAfterEffect(Duration),
    /// The connection is reset before the handler runs: no effect, the client gets a transport
    /// error.
    DropBeforeEffect,
    /// The handler runs (the effect happens), then the connection is reset instead of answering.
    DropAfterEffect,
    /// Answer `status` (a 3xx) with a `Location: <location>` header; the handler never runs.
    Redirect { status: u16, location: String },
    /// Answer `status` with this body and content type (a proxy's HTML page, a vendor's JSON
    /// error, plain text); the handler never runs.
    Raw {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// Answer 200 with a JSON-looking body that never ends (chunked, no length); the handler
    /// never runs.
    Endless,
}

/// An armed fault: fires on the next `times` requests matching `method` (None = any) and whose
/// "path?query" contains `path_contains`, then disarms.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Option<Method>,
    pub path_contains: String,
    pub kind: FaultKind,
    pub times: usize,
}

impl Fault {
    /// Fires once on any request.
    pub fn new(kind: FaultKind) -> Fault {
        Fault {
            method: None,
            path_contains: String::new(),
            kind,
            times: 1,
        }
    }
    /// Fires once on `method` requests whose "path?query" contains `path_contains`.
    pub fn on(method: &str, path_contains: &str, kind: FaultKind) -> Fault {
        let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("HTTP method");
        Fault {
            method: Some(m),
            path_contains: path_contains.into(),
            kind,
            times: 1,
        }
    }
    /// Fires once on any method whose "path?query" contains `path_contains`.
    pub fn any(path_contains: &str, kind: FaultKind) -> Fault {
        Fault {
            path_contains: path_contains.into(),
            ..Fault::new(kind)
        }
    }
    pub fn times(mut self, n: usize) -> Fault {
        self.times = n;
        self
    }
    fn matches(&self, method: &Method, target: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && target.contains(&self.path_contains)
    }
}

/// The queue of armed faults. Cloning shares.
#[derive(Clone, Default, Debug)]
pub struct Faults {
    armed: Arc<Mutex<Vec<Fault>>>,
    fired: Arc<AtomicUsize>,
}

impl Faults {
    pub fn arm(&self, f: Fault) {
        if f.times > 0 {
            lock(&self.armed).push(f);
        }
    }
    /// How many times any fault fired so far.
    pub fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }
    /// Faults still armed.
    pub fn armed(&self) -> usize {
        lock(&self.armed).len()
    }
    pub fn disarm_all(&self) {
        lock(&self.armed).clear();
    }
    fn take(&self, method: &Method, target: &str) -> Option<FaultKind> {
        let mut armed = lock(&self.armed);
        let i = armed.iter().position(|f| f.matches(method, target))?;
        let kind = armed[i].kind.clone();
        armed[i].times -= 1;
        if armed[i].times == 0 {
            armed.remove(i);
        }
        self.fired.fetch_add(1, Ordering::SeqCst);
        Some(kind)
    }
}

// ---------------------------------------------------------------------------------------------
// Killable connections (so a fault can reset the TCP connection mid-request)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default, Debug)]
struct KillSwitch(Arc<AtomicBool>);

struct KillableStream {
    stream: Option<TcpStream>,
    kill: KillSwitch,
}

impl KillableStream {
    fn live(&mut self) -> io::Result<&mut TcpStream> {
        if self.kill.0.load(Ordering::SeqCst)
            && let Some(s) = self.stream.take()
        {
            // RST instead of FIN: the client sees "connection reset".
            let _ = s.set_zero_linger();
            drop(s);
        }
        self.stream.as_mut().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionReset,
                "fake: connection reset by fault",
            )
        })
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().live() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().live() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().live() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().live() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().live() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(_) => Poll::Ready(Ok(())),
        }
    }
}

struct KillableListener(TcpListener);

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        KillableStream {
                            stream: Some(stream),
                            kill: KillSwitch::default(),
                        },
                        addr,
                    );
                }
                // Transient accept errors (EMFILE, aborted handshakes): back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[derive(Clone, Debug)]
struct ConnKill(KillSwitch);

impl Connected<IncomingStream<'_, KillableListener>> for ConnKill {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        ConnKill(stream.io().kill.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// Adds vendor headers (request id, rate-limit headers, ...) to every answer, including the
/// answers of injected faults. Implementations should not overwrite headers already present.
pub type Decorator = Arc<dyn Fn(&mut Response) + Send + Sync>;

#[derive(Clone)]
struct Shared {
    log: RequestLog,
    faults: Faults,
    decorate: Decorator,
}

/// A fake HTTP server on 127.0.0.1:<ephemeral>, with request logging and fault injection in
/// front of the vendor router. Shuts down (gracefully) when dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub faults: Faults,
    pub log: RequestLog,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakeServer {
    pub async fn start(router: Router) -> FakeServer {
        FakeServer::start_decorated(router, Arc::new(|_: &mut Response| {})).await
    }

    pub async fn start_decorated(router: Router, decorate: Decorator) -> FakeServer {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        assert!(addr.ip().is_loopback());
        let shared = Shared {
            log: RequestLog::default(),
            faults: Faults::default(),
            decorate,
        };
        let app = Router::new()
            .fallback_service(router)
            .layer(middleware::from_fn_with_state(shared.clone(), intercept));
        let (tx, rx) = oneshot::channel::<()>();
        let serve = axum::serve(
            KillableListener(listener),
            app.into_make_service_with_connect_info::<ConnKill>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        tokio::spawn(async move {
            let _ = serve.await;
        });
        FakeServer {
            addr,
            faults: shared.faults,
            log: shared.log,
            shutdown: Some(tx),
        }
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn fault_body(status: u16, message: &str) -> Value {
    json!({"error": {"code": status, "message": message, "injected": true}})
}

/// A body whose first chunk is an I/O error (belt and braces for the drop faults, in case the
/// connection could not be reset).
fn broken_body() -> Body {
    Body::from_stream(tokio_stream::once(Err::<Bytes, io::Error>(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "fake: connection dropped by fault",
    ))))
}

async fn intercept(State(sh): State<Shared>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let mut headers = BTreeMap::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_owned())
            .and_modify(|e: &mut String| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let logged = LoggedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    let target = logged.target();
    sh.log.push(logged);
    let fault = sh.faults.take(&parts.method, &target);
    let kill = parts
        .extensions
        .get::<ConnectInfo<ConnKill>>()
        .map(|c| c.0.0.clone());
    let req = Request::from_parts(parts, Body::from(bytes));
    let drop_conn = |kill: Option<KillSwitch>| {
        if let Some(k) = kill {
            k.0.store(true, Ordering::SeqCst);
        }
        let mut r = Response::new(broken_body());
        *r.status_mut() = StatusCode::OK;
        r
    };
    let mut resp = match fault {
        None => next.run(req).await,
        Some(FaultKind::Status(code)) => {
            let st = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_response(
                st.as_u16(),
                fault_body(code, st.canonical_reason().unwrap_or("injected fault")),
            )
        }
        Some(FaultKind::RetryAfter(secs)) => {
            let mut r = json_response(429, fault_body(429, "Too Many Requests"));
            set_header(&mut r, "retry-after", &secs.to_string());
            r
        }
        Some(FaultKind::EpochHeader {
            header,
            secs_from_now,
        }) => {
            let mut r = json_response(429, fault_body(429, "Too Many Requests"));
            let at = Utc::now().timestamp() as u64 + secs_from_now;
            set_header(&mut r, header, &at.to_string());
            r
        }
        Some(FaultKind::TimeoutAfterEffect(d)) => {
            let r = next.run(req).await;
            tokio::time::sleep(d).await;
            r
        }
        Some(FaultKind::DropBeforeEffect) => return drop_conn(kill),
        Some(FaultKind::DropAfterEffect) => {
            let _ = next.run(req).await;
            return drop_conn(kill);
        }
        Some(FaultKind::Redirect { status, location }) => {
            let mut r = json_response(status, fault_body(status, "Redirect"));
            set_header(&mut r, "location", &location);
            r
        }
        Some(FaultKind::Raw {
            status,
            content_type,
            body,
        }) => {
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = StatusCode::from_u16(status).expect("status");
            set_header(&mut r, "content-type", content_type);
            r
        }
        Some(FaultKind::Endless) => {
            let chunk = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
            let head = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"resources\": ["))
            });
            let rest = futures_util::stream::repeat_with(move || Ok(chunk.clone()));
            let mut r = Response::new(Body::from_stream(futures_util::StreamExt::chain(
                head, rest,
            )));
            set_header(&mut r, "content-type", "application/json");
            r
        }
    };
    (sh.decorate)(&mut resp);
    resp
}

// ---------------------------------------------------------------------------------------------
// Helpers for the vendor fakes
// ---------------------------------------------------------------------------------------------

pub(crate) fn json_response(status: u16, v: Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(&v).expect("json")));
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

pub(crate) fn empty_response(status: u16) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    r
}

pub(crate) fn set_header(r: &mut Response, name: &str, value: &str) {
    r.headers_mut().insert(
        HeaderName::from_bytes(name.as_bytes()).expect("header name"),
        HeaderValue::from_str(value).expect("header value"),
    );
}

/// Sets the header only if the answer does not carry it yet.
pub(crate) fn default_header(r: &mut Response, name: &str, value: &str) {
    if !r.headers().contains_key(name) {
        set_header(r, name, value);
    }
}

/// Percent-decodes; `plus_space` turns '+' into ' ' (form / query semantics).
pub fn percent_decode(s: &str, plus_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for building test URLs).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Ordered query or form parameters (repeated keys kept).
#[derive(Clone, Debug, Default)]
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(raw: &str) -> Params {
        Params(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (percent_decode(k, true), percent_decode(v, true)),
                    None => (percent_decode(p, true), String::new()),
                })
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    pub fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A request, already buffered, as the vendor handlers want it.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    /// Percent-decoded path segments (empty ones dropped).
    pub segs: Vec<String>,
    pub raw_query: String,
    pub query: Params,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub async fn read(req: Request) -> Req {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 64 << 20)
            .await
            .unwrap_or_default();
        let raw_query = parts.uri.query().unwrap_or("").to_owned();
        Req {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            segs: parts
                .uri
                .path()
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| percent_decode(s, false))
                .collect(),
            query: Params::parse(&raw_query),
            raw_query,
            headers: parts.headers,
            body,
        }
    }
    pub fn segs(&self) -> Vec<&str> {
        self.segs.iter().map(String::as_str).collect()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The token after "Bearer " (scheme case-insensitive).
    pub fn bearer(&self) -> Option<&str> {
        self.auth_param("bearer")
    }
    /// The credentials after "<scheme> " in Authorization (scheme case-insensitive).
    pub fn auth_param(&self, scheme: &str) -> Option<&str> {
        let v = self.header("authorization")?;
        let (s, rest) = v.split_once(' ')?;
        s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
    }
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
    pub fn form(&self) -> Params {
        Params::parse(&String::from_utf8_lossy(&self.body))
    }
}

pub(crate) fn rand_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).expect("hex digit"))
        .collect()
}

/// A random version-4-looking UUID.
pub(crate) fn uuidish() -> String {
    format!(
        "{}-{}-4{}-{}{}-{}",
        rand_hex(8),
        rand_hex(4),
        rand_hex(3),
        ["8", "9", "a", "b"][fastrand::usize(0..4)],
        rand_hex(3),
        rand_hex(12)
    )
}

pub(crate) fn rand_alnum(n: usize) -> String {
    (0..n).map(|_| fastrand::alphanumeric()).collect()
}

pub(crate) fn rfc3339_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn rfc3339_secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn rfc3339_micros(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

// ---------------------------------------------------------------------------------------------
// Self-tests of the infrastructure
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};

    fn counter_router(effects: Effects) -> Router {
        Router::new()
            .route(
                "/act",
                post(move || {
                    let e = effects.clone();
                    async move {
                        e.effect("act");
                        "done"
                    }
                }),
            )
            .route("/ping", get(|| async { "pong" }))
    }

    async fn post_act(
        client: &reqwest::Client,
        url: &str,
    ) -> Result<(u16, HeaderMap, Bytes), reqwest::Error> {
        let resp = client.post(format!("{url}/act")).body("{}").send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        Ok((status, headers, body))
    }

    #[tokio::test]
    async fn each_fault_fires_once_then_disarms() {
        let effects = Effects::default();
        let srv = FakeServer::start(counter_router(effects.clone())).await;
        let url = srv.url();
        assert!(url.starts_with("http://127.0.0.1:"));
        let client = reqwest::Client::new();

        // Status: no effect, then disarmed.
        srv.faults
            .arm(Fault::on("POST", "/act", FaultKind::Status(503)));
        let (st, _, body) = post_act(&client, &url).await.unwrap();
        assert_eq!(st, 503);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], 503);
        assert_eq!(effects.count("act"), 0);
        let (st, _, _) = post_act(&client, &url).await.unwrap();
        assert_eq!(st, 200);
        assert_eq!(effects.count("act"), 1);

        // Method and path matching: a GET does not consume a POST fault.
        srv.faults
            .arm(Fault::on("POST", "/act", FaultKind::RetryAfter(7)));
        let pong = client.get(format!("{url}/ping")).send().await.unwrap();
        assert_eq!(pong.status().as_u16(), 200);
        assert_eq!(srv.faults.armed(), 1);
        let (st, h, _) = post_act(&client, &url).await.unwrap();
        assert_eq!(st, 429);
        assert_eq!(h["retry-after"], "7");
        assert_eq!(effects.count("act"), 1);

        // Epoch header.
        srv.faults.arm(Fault::any(
            "/act",
            FaultKind::EpochHeader {
                header: "x-ratelimit-retryafter",
                secs_from_now: 30,
            },
        ));
        let (st, h, _) = post_act(&client, &url).await.unwrap();
        assert_eq!(st, 429);
        let at: i64 = h["x-ratelimit-retryafter"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let now = Utc::now().timestamp();
        assert!((now + 28..=now + 31).contains(&at), "{at} vs {now}");
        assert_eq!(effects.count("act"), 1);

        // Drop before effect: transport error, no effect.
        srv.faults
            .arm(Fault::on("POST", "/act", FaultKind::DropBeforeEffect));
        let err = post_act(&client, &url).await.expect_err("transport error");
        assert!(!err.is_status(), "{err:?}");
        assert_eq!(effects.count("act"), 1);

        // Times: fires on the next two, then disarms.
        srv.faults
            .arm(Fault::any("/act", FaultKind::Status(500)).times(2));
        assert_eq!(post_act(&client, &url).await.unwrap().0, 500);
        assert_eq!(post_act(&client, &url).await.unwrap().0, 500);
        assert_eq!(post_act(&client, &url).await.unwrap().0, 200);
        assert_eq!(effects.count("act"), 2);

        assert_eq!(srv.faults.fired(), 6);
        assert_eq!(srv.faults.armed(), 0);
        // Every request was logged, faulted or not (the dropped one included), none retried.
        assert_eq!(srv.log.count_matching("POST", "/act"), 8);
        assert_eq!(srv.log.count_matching("GET", "/ping"), 1);
    }

    #[tokio::test]
    async fn drop_after_effect_applies_the_effect_but_the_client_errors() {
        let effects = Effects::default();
        let srv = FakeServer::start(counter_router(effects.clone())).await;
        let client = reqwest::Client::new();
        srv.faults
            .arm(Fault::on("POST", "/act", FaultKind::DropAfterEffect));
        // The connection is reset before any response byte: `send()` itself fails.
        let err = client
            .post(format!("{}/act", srv.url()))
            .send()
            .await
            .expect_err("transport error");
        assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
        assert_eq!(effects.count("act"), 1);
        assert_eq!(
            srv.log.count_matching("POST", "/act"),
            1,
            "the client must not have retried"
        );
        // Disarmed: the next call works (on a fresh connection).
        let (st, _, body) = post_act(&client, &srv.url()).await.unwrap();
        assert_eq!((st, &body[..]), (200, &b"done"[..]));
        assert_eq!(effects.count("act"), 2);
        assert_eq!(srv.faults.fired(), 1);
    }

    #[tokio::test]
    async fn timeout_after_effect_times_out_with_the_effect_applied() {
        let effects = Effects::default();
        let srv = FakeServer::start(counter_router(effects.clone())).await;
        let client = reqwest::Client::new();
        srv.faults.arm(Fault::on(
            "POST",
            "/act",
            FaultKind::TimeoutAfterEffect(Duration::from_secs(30)),
        ));
        let err = client
            .post(format!("{}/act", srv.url()))
            .timeout(Duration::from_millis(300))
            .send()
            .await
            .expect_err("timeout");
        assert!(err.is_timeout(), "{err:?}");
        assert_eq!(effects.count("act"), 1);
        let (st, _, _) = post_act(&client, &srv.url()).await.unwrap();
        assert_eq!(st, 200);
        assert_eq!(effects.snapshot().get("act"), Some(&2));
        assert_eq!(effects.total(), 2);
    }

    #[tokio::test]
    async fn log_records_headers_query_and_body() {
        let srv = FakeServer::start(counter_router(Effects::default())).await;
        let client = reqwest::Client::new();
        client
            .post(format!("{}/act?x=%27a%27", srv.url()))
            .header("Authorization", "Bearer s3cret")
            .header("Idempotency-Key", "k-1")
            .header("Content-Type", "application/json")
            .body(r#"{"hello":"world"}"#)
            .send()
            .await
            .unwrap();
        let all = srv.log.all();
        assert_eq!(all.len(), 1);
        let r = &all[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_str()),
            ("POST", "/act", "x=%27a%27")
        );
        assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(r.header("idempotency-key"), Some("k-1"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json().unwrap()["hello"], "world");
        assert!(srv.log.contains_text("s3cret"));
        assert!(srv.log.contains_text("'a'"));
        assert!(!srv.log.contains_text("nope"));
        srv.log.clear();
        assert_eq!(srv.log.count(), 0);
    }

    #[test]
    fn helpers() {
        assert_eq!(percent_decode("a%20b+c%2B", true), "a b c+");
        assert_eq!(percent_decode("a+b%", false), "a+b%");
        assert_eq!(enc("type:'x'+y"), "type%3A%27x%27%2By");
        let p = Params::parse("ids=a&ids=b&filter=hostname%3A%27h%27");
        assert_eq!(p.all("ids"), vec!["a", "b"]);
        assert_eq!(p.get("filter"), Some("hostname:'h'"));
    }
}
