//! `/mcp`: the MCP endpoint (streamable HTTP) on the daemon's HTTP listener.
//!
//! Owns: mounting rmcp's streamable-HTTP service (stateless, JSON answers: no session is held
//! between requests) and the agent's authentication in front of it — exactly one
//! `Authorization: Bearer <agent token>`, else a 401 JSON error before rmcp sees the request.
//! The authenticated [`crate::agent::Agent`] rides in the request's extensions to the tool
//! handlers in `mcp`. Guards: `Host` must be one of `[mcp] allowed_hosts` and a request
//! carrying `Origin` must come from one of `[mcp] allowed_origins` (none by default), both
//! enforced by rmcp; a body that is not JSON, or not a JSON-RPC message, is answered `400` with
//! a JSON-RPC error (`-32700` parse error, `-32600` invalid request) instead of rmcp's plain
//! text. Without `[[agents]]` there is no `/mcp`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};

use super::HttpState;
use crate::mcp::CordonMcp;

pub(super) fn routes(st: &HttpState) -> Router<HttpState> {
    let Some(front) = st.agents.clone() else {
        return Router::new();
    };
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_allowed_hosts(st.mcp.allowed_hosts.clone())
        .with_allowed_origins(st.mcp.allowed_origins.clone())
        .enforce_origin_validation()
        .with_max_request_body_bytes(st.max_body_bytes)
        .with_cancellation_token(st.shutdown.child_token());
    let service = StreamableHttpService::new(
        move || Ok(CordonMcp::new(front.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    // Layers run outside in: authentication first, then the JSON-RPC shape of the body.
    Router::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn_with_state(st.clone(), jsonrpc_errors))
        .layer(middleware::from_fn_with_state(st.clone(), authenticate))
}

/// A JSON-RPC error answer with no result (HTTP 400, as the MCP transport asks for input the
/// server cannot accept).
fn rpc_error(id: Value, code: i64, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
        ),
    )
        .into_response()
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
}

/// Reads a JSON POST's body and answers one that is not JSON (`-32700`) or that rmcp cannot
/// read as a JSON-RPC message (`-32600`, with the request's id when it has one) as JSON-RPC
/// errors. rmcp answers both with a plain-text `415`, which an MCP client cannot relate to its
/// request. Other requests (GET, DELETE, a wrong content type) go to rmcp unchanged.
async fn jsonrpc_errors(State(st): State<HttpState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !is_json(req.headers()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match super::read_body(body, st.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let id = match serde_json::from_slice::<Value>(&bytes) {
        Err(e) => {
            return rpc_error(
                Value::Null,
                -32700,
                &format!("Parse error: the body is not JSON ({e})"),
            );
        }
        Ok(v) => v
            .get("id")
            .filter(|id| id.is_string() || id.is_number())
            .cloned()
            .unwrap_or(Value::Null),
    };
    let answer = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if answer.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return rpc_error(
            id,
            -32600,
            "Invalid Request: not a JSON-RPC 2.0 request or notification (jsonrpc \"2.0\", a method, an id of a string or number for a request, params an object)",
        );
    }
    answer
}

/// Lets only an agent's request through, with the agent in its extensions.
async fn authenticate(State(st): State<HttpState>, mut req: Request, next: Next) -> Response {
    let query = req.uri().query().map(str::to_string);
    match super::agents::agent_of(&st, req.headers(), query.as_deref()) {
        Ok((agent, _)) => {
            req.extensions_mut().insert(agent);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}
