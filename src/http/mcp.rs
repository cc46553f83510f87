//! `/mcp`: the MCP endpoint (streamable HTTP) on the daemon's HTTP listener.
//!
//! Owns: mounting rmcp's streamable-HTTP service (stateless, JSON answers: no session is held
//! between requests) and the agent's authentication in front of it — exactly one
//! `Authorization: Bearer <agent token>`, else a 401 JSON error before rmcp sees the request.
//! The authenticated [`crate::agent::Agent`] rides in the request's extensions to the tool
//! handlers in `mcp`. Without `[[agents]]` there is no `/mcp`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

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
        .with_max_request_body_bytes(st.max_body_bytes)
        .with_cancellation_token(st.shutdown.child_token());
    let service = StreamableHttpService::new(
        move || Ok(CordonMcp::new(front.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn_with_state(st.clone(), authenticate))
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
