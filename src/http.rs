//! The HTTP side: SIEM ingest, health, readiness, metrics and the operator endpoints.
//!
//! Owns: routes, per-source bearer-token checks (exactly one credential per request: one
//! `Authorization` header, or one `?token=` on the sources `ingest.query_token_sources` names,
//! Splunk's header-less webhook by default; no token configured = loopback clients only), body
//! limits, and the single mapping from errors to HTTP status + stable JSON error codes (every
//! answer, 404 and 405 included, with what it echoes of the request clipped), and splitting a
//! mapped source's body into alerts (one object, a JSON array, or NDJSON; all or nothing).
//! Parsing belongs to `ingest`, state to the engine: a request is answered `202` only after the
//! engine reports a durable commit of every alert it carries.

mod cases;
mod learning;

mod explain;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;

use crate::engine::{self, EngineError, EngineHandle};
use crate::ingest::mapped::{BodyError, SourceMapping, split_body};
use crate::ingest::{ECHO_MAX, IngestError, IngestFormat, clip};
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::secret::TokenHash;
use crate::store::Store;

mod agents;
mod deadline;
mod mcp;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    pub engine: EngineHandle,
    pub store: Store,
    pub policies: Policies,
    pub metrics: Metrics,
    pub tokens: Arc<BTreeMap<IngestFormat, TokenHash>>,
    /// Sources that may send their token as `?token=` (`ingest.query_token_sources`).
    pub query_token_sources: Arc<BTreeSet<IngestFormat>>,
    pub admin_token: Option<Arc<TokenHash>>,
    /// Source mappings by name: `POST /v1/alerts/<name>`.
    pub sources: Arc<BTreeMap<String, Arc<SourceMapping>>>,
    /// Most alerts one request to a mapped source may carry.
    pub max_alerts_per_body: usize,
    pub max_body_bytes: usize,
    pub playbooks: usize,
    pub connectors: usize,
    pub draining: Arc<AtomicBool>,
    /// Chat callbacks, when a chat platform is configured.
    pub chat: Option<crate::chat::Inbound>,
    /// Approver tokens (`grpc.approvers`): who an analyst's case operation comes from.
    pub approvers: Arc<crate::api::Auth>,

    /// AI agents (`[[agents]]`), when configured: proposals, findings and `/mcp`.
    pub agents: Option<crate::engine::AgentFront>,
    pub mcp: crate::agent::McpConfig,
    /// Cancelled at shutdown (ends MCP streams).
    pub shutdown: tokio_util::sync::CancellationToken,

    /// The web console (`/ui`), when enabled.
    pub console: Option<Arc<console::Console>>,
}

/// A JSON error with a stable code.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: vec![],
        }
    }
}

/// How many bytes of an error message are sent back: messages name outside values (ids, keys,
/// formats), and a 100 KB id is not repeated in full.
const MESSAGE_MAX: usize = 1024;

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        if let std::borrow::Cow::Owned(m) = clip(&self.message, MESSAGE_MAX) {
            self.message = m;
        }
        for f in &mut self.fields {
            if let std::borrow::Cow::Owned(c) = clip(f, ECHO_MAX) {
                *f = c;
            }
        }
        (self.status, axum::Json(&self)).into_response()
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> ApiError {
        let message = e.to_string();
        match e {
            IngestError::MalformedJson(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", message)
            }
            IngestError::DuplicateKey(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "duplicate_key", message)
            }
            IngestError::MissingFields(f) => ApiError {
                fields: f,
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "missing_fields", message)
            },
            IngestError::InvalidField { field, .. } => ApiError {
                fields: vec![field],
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
            },
            IngestError::UnknownField(f) => ApiError {
                fields: vec![f],
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_field", message)
            },
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Store(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the alert was not recorded: {m}; retry later"),
            ),
            EngineError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "cordon is shutting down; retry later",
            ),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    }
}

/// axum's `Path`, refusing a segment it cannot decode (not UTF-8 once percent-decoded) with a
/// JSON error like every other answer, instead of axum's plain-text one.
struct PathOf<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<PathOf<T>, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(PathOf(t)),
            Err(e) => Err(ApiError::new(e.status(), "malformed_path", e.body_text())),
        }
    }
}

pub mod console;

pub fn router(state: HttpState) -> Router {
    let mcp = mcp::routes(&state);
    let ui = console::router(state.clone());
    let api = Router::new()
        .merge(agents::routes())
        .merge(mcp)
        .route("/v1/alerts", post(ingest_native))
        .route("/v1/alerts/{format}", post(ingest_format).get(get_alert))
        .route("/v1/cases/{id}", get(get_case))
        .merge(cases::routes())
        .merge(learning::routes())
        .route("/v1/actions/{id}", get(get_action))
        .route("/v1/policies/reload", post(reload_policies))
        .route("/v1/chat/{platform}", post(chat_callback))
        .route("/v1/chat/{platform}/{endpoint}", post(chat_callback_at))
        .route(
            "/healthz",
            get(|| async { (StatusCode::OK, axum::Json(json!({"status": "ok"}))) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(explain::routes())
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        // axum adds the `Allow` header to this answer.
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this endpoint does not take {}", clip(method.as_str(), 32)),
            )
        })
        .with_state(state);
    match ui {
        Some(ui) => api.merge(ui),
        None => api,
    }
}

/// Serves `router` on an already-bound listener under `limits` (header-read and idle
/// timeouts, a connection cap; see `listener`) until `shutdown` completes, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    limits: crate::listener::HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = state.metrics.http_connections.clone();
    let app = router(state);
    crate::listener::serve_http(
        listener,
        limits,
        metrics,
        move |peer: SocketAddr| {
            // What `into_make_service_with_connect_info` does: handlers see the peer address.
            tower::ServiceExt::map_request(
                app.clone(),
                move |mut req: axum::extract::Request<_>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.map(|body| deadline::Deadline::new(body, limits.body_read_timeout))
                },
            )
        },
        shutdown,
    )
    .await
}

async fn chat_callback_at(
    st: State<HttpState>,
    PathOf((platform, endpoint)): PathOf<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let want = match platform.as_str() {
        "slack" => "interactions",
        "mattermost" => "actions",
        "teams" => "messages",
        _ => "",
    };
    if endpoint != want {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
            .into_response();
    }
    chat_callback(st, PathOf(platform), headers, body).await
}

/// Chat platforms' callbacks: verified by `chat` (signature, button secret or JWT) over the
/// raw body before anything is parsed.
async fn chat_callback(
    State(st): State<HttpState>,
    PathOf(platform): PathOf<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(chat) = &st.chat else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "chat approvals are not configured",
        )
        .into_response();
    };
    // A callback carries one credential: two signatures, timestamps or tokens are ambiguous.
    for name in [
        "x-slack-signature",
        "x-slack-request-timestamp",
        header::AUTHORIZATION.as_str(),
    ] {
        if headers.get_all(name).iter().count() > 1 {
            return ambiguous(&format!("the {platform} callback"), name).into_response();
        }
    }
    let raw = match read_body(body, st.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let answer = match platform.as_str() {
        "slack" => {
            chat.slack(h("x-slack-request-timestamp"), h("x-slack-signature"), &raw)
                .await
        }
        "mattermost" => chat.mattermost(&raw).await,
        "teams" => chat.teams(h("authorization"), &raw).await,
        _ => {
            return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such chat platform")
                .into_response();
        }
    };
    let status = match answer.kind {
        crate::chat::AnswerKind::Handled => StatusCode::OK,
        crate::chat::AnswerKind::Malformed => StatusCode::BAD_REQUEST,
        crate::chat::AnswerKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        crate::chat::AnswerKind::NotConfigured => StatusCode::NOT_FOUND,
        crate::chat::AnswerKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut body = answer.body;
    if let Some(serde_json::Value::String(m)) = body.get_mut("message")
        && let std::borrow::Cow::Owned(c) = clip(m, MESSAGE_MAX)
    {
        *m = c;
    }
    (status, axum::Json(body)).into_response()
}

async fn ingest_native(
    state: State<HttpState>,
    peer: ConnectInfo<SocketAddr>,
    q: RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    ingest(state, peer, q, headers, IngestFormat::Cordon, body).await
}

async fn ingest_format(
    state: State<HttpState>,
    peer: ConnectInfo<SocketAddr>,
    q: RawQuery,
    headers: HeaderMap,
    PathOf(format): PathOf<String>,
    body: Body,
) -> Response {
    let builtin = IngestFormat::ALL
        .into_iter()
        .find(|f| f.as_str() == format && *f != IngestFormat::Cordon);
    if let Some(f) = builtin {
        return ingest(state, peer, q, headers, f, body).await;
    }
    if let Some(m) = state.sources.get(&format).cloned() {
        return ingest_mapped(state, peer, q, headers, m, body).await;
    }
    state.metrics.alert("unknown", "unknown_format");
    let mut known = String::from(
        "/v1/alerts, /v1/alerts/splunk, /v1/alerts/elastic, /v1/alerts/sentinel, /v1/alerts/ocsf",
    );
    for name in state.sources.keys() {
        known.push_str(", /v1/alerts/");
        known.push_str(name);
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_format",
        format!("unknown alert format {format:?}; use {known}"),
    )
    .into_response()
}

/// A body that does not split into alerts, as an answer.
fn body_error(e: BodyError, max: usize) -> ApiError {
    match e {
        BodyError::TooMany => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_alerts",
            format!("the body carries more than {max} alerts (ingest.max_alerts_per_body)"),
        ),
        BodyError::Whole(e) => e.into(),
        BodyError::At(at, e) => located(&at, e),
    }
}

/// An ingest error for one part of a body, naming the part in the message and every field.
fn located(at: &str, e: IngestError) -> ApiError {
    let mut api = ApiError::from(e);
    api.message = format!("{at}: {}; nothing in this body was recorded", api.message);
    for f in &mut api.fields {
        *f = format!("{at}: {f}");
    }
    if api.fields.is_empty() {
        api.fields.push(at.to_string());
    }
    api
}

/// A mapped source: every alert in the body is mapped before any is sent to the engine (one
/// bad alert refuses the whole body), then all are sent at once (the engine commits them in
/// group commits) and the answer waits for every acknowledgement.
async fn ingest_mapped(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    mapping: Arc<SourceMapping>,
    body: Body,
) -> Response {
    let format = IngestFormat::mapped(&mapping.name);
    let source = format.as_str();
    let fail = |e: ApiError| {
        st.metrics.alert(source, e.code);
        tracing::info!(source, code = e.code, message = %clip(&e.message, MESSAGE_MAX), "alert refused");
        e.into_response()
    };
    if st.draining.load(Ordering::SeqCst) {
        return fail(EngineError::ShuttingDown.into());
    }
    if let Err(e) = authorize(
        st.tokens.get(&format),
        &headers,
        &query_pairs(q.as_deref()),
        st.query_token_sources.contains(&format),
        peer,
        &format!("source {source}"),
    ) {
        return fail(e);
    }
    let bytes = match read_body(body, st.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim().to_ascii_lowercase();
            v.starts_with("application/x-ndjson") || v.starts_with("application/jsonl")
        });
    let (many, parts) = match split_body(&bytes, ndjson, st.max_alerts_per_body) {
        Ok(p) => p,
        Err(e) => return fail(body_error(e, st.max_alerts_per_body)),
    };
    let received_at = chrono::Utc::now();
    let mut mapped = Vec::with_capacity(parts.len());
    for part in parts {
        match mapping.parse_value(&part.value, received_at) {
            Ok(fields) => mapped.push((fields, part.raw)),
            Err(e) => {
                return fail(match &part.at {
                    Some(at) => located(at, e),
                    None => e.into(),
                });
            }
        }
    }
    let mut pending = tokio::task::JoinSet::new();
    for (i, (fields, raw)) in mapped.into_iter().enumerate() {
        let engine = st.engine.clone();
        pending.spawn(async move { (i, engine.ingest(format, fields, raw, received_at).await) });
    }
    let mut acks = Vec::with_capacity(pending.len());
    let mut failed: Option<EngineError> = None;
    while let Some(done) = pending.join_next().await {
        match done {
            Ok((i, Ok(ack))) => acks.push((i, ack)),
            Ok((_, Err(e))) => {
                failed.get_or_insert(e);
            }
            Err(_) => {
                failed.get_or_insert(EngineError::ShuttingDown);
            }
        }
    }
    if let Some(e) = failed {
        let e: ApiError = e.into();
        tracing::warn!(
            source,
            code = e.code,
            alerts = acks.len(),
            "alerts not all acknowledged"
        );
        return e.into_response();
    }
    acks.sort_by_key(|(i, _)| *i);
    let acks: Vec<_> = acks.into_iter().map(|(_, a)| a).collect();
    if !many && let [ack] = acks.as_slice() {
        return (StatusCode::ACCEPTED, axum::Json(ack)).into_response();
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"accepted": acks.len(), "alerts": acks})),
    )
        .into_response()
}

async fn ingest(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    format: IngestFormat,
    body: Body,
) -> Response {
    let source = format.as_str();
    let fail = |e: ApiError| {
        st.metrics.alert(source, e.code);
        tracing::info!(source, code = e.code, message = %clip(&e.message, MESSAGE_MAX), "alert refused");
        e.into_response()
    };
    if st.draining.load(Ordering::SeqCst) {
        return fail(EngineError::ShuttingDown.into());
    }
    if let Err(e) = authorize(
        st.tokens.get(&format),
        &headers,
        &query_pairs(q.as_deref()),
        st.query_token_sources.contains(&format),
        peer,
        &format!("source {source}"),
    ) {
        return fail(e);
    }
    let bytes = match read_body(body, st.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let received_at = chrono::Utc::now();
    let fields = match format.parse(&bytes, received_at) {
        Ok(f) => f,
        Err(e) => return fail(e.into()),
    };
    // `parse` accepted it as JSON, so it is UTF-8.
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    match st.engine.ingest(format, fields, raw, received_at).await {
        Ok(ack) => (StatusCode::ACCEPTED, axum::Json(ack)).into_response(),
        Err(e) => {
            let e: ApiError = e.into();
            tracing::warn!(source, code = e.code, "alert not acknowledged");
            e.into_response()
        }
    }
}

/// Reads the whole body: over `max` bytes is `413 body_too_large`; one not whole within
/// `http.body_read_timeout_secs` of its header is `408 body_timeout` (see `deadline`); a body
/// that cannot be read (a malformed chunk, a connection cut mid-body) is `400 malformed_body`.
async fn read_body(body: Body, max: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let e = e.into_inner();
        if let Some(t) = deadline::timed_out(&*e) {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", t.to_string())
        } else if e
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {max} bytes (http.max_body_bytes)"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                format!("the body could not be read: {e}"),
            )
        }
    })
}

/// The query string's pairs, every one (a `BTreeMap` would keep only the last `token`).
fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

fn ambiguous(what: &str, carried: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "ambiguous_credentials",
        format!(
            "{what}: the request carries more than one credential ({carried}); send exactly one"
        ),
    )
}

/// Checks the request's one credential against `expected`: an `Authorization: Bearer` header,
/// or a `?token=` where `query_allowed`. More than one credential (two `Authorization` headers,
/// two `?token=`, or one of each) is refused whatever they hold, so no checker downstream can
/// read a different one than was judged. With no token configured, only loopback peers are let
/// in.
fn authorize(
    expected: Option<&TokenHash>,
    headers: &HeaderMap,
    query: &[(String, String)],
    query_allowed: bool,
    peer: SocketAddr,
    what: &str,
) -> Result<(), ApiError> {
    let in_header: Vec<_> = headers.get_all(header::AUTHORIZATION).iter().collect();
    let in_query: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str())
        .collect();
    if in_header.len() + in_query.len() > 1 {
        let carried = format!(
            "{} Authorization header(s) and {} ?token= parameter(s)",
            in_header.len(),
            in_query.len()
        );
        return Err(ambiguous(what, &carried));
    }
    if !in_query.is_empty() && !query_allowed {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "query_token_not_allowed",
            format!(
                "{what} does not take ?token= (see ingest.query_token_sources); send Authorization: Bearer <token>"
            ),
        ));
    }
    let presented = match (in_header.first(), in_query.first()) {
        (Some(h), _) => h
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim),
        (None, q) => q.copied(),
    };
    let how = if query_allowed {
        "Authorization: Bearer <token>, or ?token=<token>"
    } else {
        "Authorization: Bearer <token>"
    };
    match (expected, presented) {
        (Some(t), Some(p)) if t.matches(p) => Ok(()),
        (Some(_), Some(_)) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("wrong token for {what}"),
        )),
        (Some(_), None) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("{what} needs a bearer token ({how})"),
        )),
        (None, _) if peer.ip().is_loopback() => Ok(()),
        (None, _) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("no token is configured for {what}, so only loopback clients are accepted"),
        )),
    }
}

/// The operator endpoints take `http.admin_token` in the `Authorization` header only.
fn admin(
    st: &HttpState,
    headers: &HeaderMap,
    q: &[(String, String)],
    peer: SocketAddr,
) -> Result<(), ApiError> {
    authorize(
        st.admin_token.as_deref(),
        headers,
        q,
        false,
        peer,
        "operator endpoints",
    )
}

async fn readyz(State(st): State<HttpState>) -> Response {
    let engine = st.policies.current();
    let reload_error = st
        .policies
        .last_error()
        .map(|ps| ps.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    let draining = st.draining.load(Ordering::SeqCst);
    let store_failed = st.store.is_failed();
    let body = json!({
        "ready": !draining && !store_failed,
        "store": {"ok": !store_failed, "audit_head": st.store.head().seq},
        "policies": {"loaded": true, "hash": engine.hash, "count": engine.policy_count(), "last_reload_error": reload_error},
        "playbooks": st.playbooks,
        "connectors": st.connectors,
        "draining": draining,
    });
    let status = if draining || store_failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(st): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

async fn reload_policies(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = query_pairs(q.as_deref());
    if let Err(e) = admin(&st, &headers, &q, peer) {
        return e.into_response();
    }
    match st.engine.reload_policies("http").await {
        Some(o) if o.ok => (StatusCode::OK, axum::Json(o)).into_response(),
        Some(o) => (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"code": "policy_invalid", "message": "the new policy set does not load; the previous set stays in force", "outcome": o}))).into_response(),
        None => ApiError::from(EngineError::ShuttingDown).into_response(),
    }
}

async fn get_case(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
) -> Result<Response, ApiError> {
    admin(&st, &headers, &query_pairs(q.as_deref()), peer)?;
    let case = engine::read::case(&st.store, &id)?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no case {id}"))
    })?;
    let actions = engine::read::actions_of(&st.store, &case)?;
    Ok(axum::Json(json!({"case": case, "actions": actions})).into_response())
}

async fn get_alert(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
) -> Result<Response, ApiError> {
    admin(&st, &headers, &query_pairs(q.as_deref()), peer)?;
    let a = engine::read::alert(&st.store, &id)?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no alert {id}"))
    })?;
    Ok(axum::Json(a).into_response())
}

async fn get_action(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
) -> Result<Response, ApiError> {
    admin(&st, &headers, &query_pairs(q.as_deref()), peer)?;
    let a = engine::read::action(&st.store, &id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no action {id}"),
        )
    })?;
    Ok(axum::Json(a).into_response())
}
