//! The HTTP side: SIEM ingest, health, readiness, metrics and the operator endpoints.
//!
//! Owns: routes, per-source bearer-token checks (header or `?token=` for Splunk's header-less
//! webhook; no token configured = loopback clients only), body limits, and the single mapping
//! from errors to HTTP status + stable JSON error codes. Parsing belongs to `ingest`, state to
//! the engine: a request is answered `202` only after the engine reports a durable commit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;

use crate::engine::{self, EngineError, EngineHandle};
use crate::ingest::{IngestError, IngestFormat};
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::secret::TokenHash;
use crate::store::Store;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    pub engine: EngineHandle,
    pub store: Store,
    pub policies: Policies,
    pub metrics: Metrics,
    pub tokens: Arc<BTreeMap<IngestFormat, TokenHash>>,
    pub admin_token: Option<Arc<TokenHash>>,
    pub max_body_bytes: usize,
    pub playbooks: usize,
    pub connectors: usize,
    pub draining: Arc<AtomicBool>,
    /// Chat callbacks, when a chat platform is configured.
    pub chat: Option<crate::chat::Inbound>,
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
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

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/alerts", post(ingest_native))
        .route("/v1/alerts/{format}", post(ingest_format).get(get_alert))
        .route("/v1/cases", get(list_cases))
        .route("/v1/cases/{id}", get(get_case))
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
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .with_state(state)
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
                    req
                },
            )
        },
        shutdown,
    )
    .await
}

async fn chat_callback_at(
    st: State<HttpState>,
    Path((platform, endpoint)): Path<(String, String)>,
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
    chat_callback(st, Path(platform), headers, body).await
}

/// Chat platforms' callbacks: verified by `chat` (signature, button secret or JWT) over the
/// raw body before anything is parsed.
async fn chat_callback(
    State(st): State<HttpState>,
    Path(platform): Path<String>,
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
    let raw = match axum::body::to_bytes(body, st.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body is larger than http.max_body_bytes",
            )
            .into_response();
        }
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
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(answer.body)).into_response()
}

async fn ingest_native(
    state: State<HttpState>,
    peer: ConnectInfo<SocketAddr>,
    q: Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    ingest(state, peer, q, headers, IngestFormat::Cordon, body).await
}

async fn ingest_format(
    state: State<HttpState>,
    peer: ConnectInfo<SocketAddr>,
    q: Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    Path(format): Path<String>,
    body: Body,
) -> Response {
    let Some(f) = IngestFormat::parse_name(&format).filter(|f| *f != IngestFormat::Cordon) else {
        state.metrics.alert("unknown", "unknown_format");
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_format",
            format!("unknown alert format {format:?}; use /v1/alerts, /v1/alerts/splunk, /v1/alerts/elastic, /v1/alerts/sentinel or /v1/alerts/ocsf"),
        )
        .into_response();
    };
    ingest(state, peer, q, headers, f, body).await
}

async fn ingest(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    format: IngestFormat,
    body: Body,
) -> Response {
    let source = format.as_str();
    let fail = |e: ApiError| {
        st.metrics.alert(source, e.code);
        tracing::info!(source, code = e.code, message = %e.message, "alert refused");
        e.into_response()
    };
    if st.draining.load(Ordering::SeqCst) {
        return fail(EngineError::ShuttingDown.into());
    }
    if let Err(e) = authorize(
        st.tokens.get(&format),
        &headers,
        &q,
        peer,
        &format!("source {source}"),
    ) {
        return fail(e);
    }
    let bytes = match axum::body::to_bytes(body, st.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return fail(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the body is larger than {} bytes (http.max_body_bytes)",
                    st.max_body_bytes
                ),
            ));
        }
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

/// Checks a bearer token (header, or `?token=`) against `expected`; with no token configured,
/// only loopback peers are let in.
fn authorize(
    expected: Option<&TokenHash>,
    headers: &HeaderMap,
    q: &BTreeMap<String, String>,
    peer: SocketAddr,
    what: &str,
) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or_else(|| q.get("token").map(String::as_str));
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
            format!(
                "{what} needs a bearer token (Authorization: Bearer <token>, or ?token=<token>)"
            ),
        )),
        (None, _) if peer.ip().is_loopback() => Ok(()),
        (None, _) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("no token is configured for {what}, so only loopback clients are accepted"),
        )),
    }
}

fn admin(
    st: &HttpState,
    headers: &HeaderMap,
    q: &BTreeMap<String, String>,
    peer: SocketAddr,
) -> Result<(), ApiError> {
    authorize(
        st.admin_token.as_deref(),
        headers,
        q,
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
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
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
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&st, &headers, &q, peer)?;
    let case = engine::read::case(&st.store, &id)?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no case {id}"))
    })?;
    let actions = engine::read::actions_of(&st.store, &case)?;
    Ok(axum::Json(json!({"case": case, "actions": actions})).into_response())
}

async fn list_cases(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&st, &headers, &q, peer)?;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100usize)
        .min(1000);
    let cases = engine::read::cases(&st.store, q.get("after").map(String::as_str), limit)?;
    Ok(axum::Json(json!({"cases": cases})).into_response())
}

async fn get_alert(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&st, &headers, &q, peer)?;
    let a = engine::read::alert(&st.store, &id)?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no alert {id}"))
    })?;
    Ok(axum::Json(a).into_response())
}

async fn get_action(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&st, &headers, &q, peer)?;
    let a = engine::read::action(&st.store, &id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no action {id}"),
        )
    })?;
    Ok(axum::Json(a).into_response())
}
