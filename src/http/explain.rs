//! `GET /v1/actions/{id}/explain` and `GET /v1/cases/{id}/explain`: the story of an action or
//! a case from the audit store, as `cordon explain --json` prints it.
//!
//! Owns: these two routes (admin-authenticated like the other operator endpoints). The story
//! is `explain::read`; it walks the audit chain on a blocking thread.

use axum::Router;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;

use super::{ApiError, HttpState, PathOf, admin, query_pairs};
use crate::engine;

/// The two routes, to be merged into the router.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/actions/{id}/explain", get(explain_action))
        .route("/v1/cases/{id}/explain", get(explain_case))
}

async fn explain_action(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
) -> Result<Response, ApiError> {
    admin(&st, &headers, &query_pairs(q.as_deref()), peer)?;
    if engine::read::action(&st.store, &id)?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no action {id}"),
        ));
    }
    story(st, id).await
}

async fn explain_case(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
) -> Result<Response, ApiError> {
    admin(&st, &headers, &query_pairs(q.as_deref()), peer)?;
    if engine::read::case(&st.store, &id)?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no case {id}"),
        ));
    }
    story(st, id).await
}

async fn story(st: HttpState, id: String) -> Result<Response, ApiError> {
    let store = st.store.clone();
    let found = tokio::task::spawn_blocking(move || crate::explain::read(&store, &id))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("explain: {e}"),
            )
        })??;
    match found {
        Some(s) => Ok(axum::Json(s).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no audit record names it",
        )),
    }
}
