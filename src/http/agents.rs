//! HTTP for AI agents: `POST /v1/cases/{id}/proposals` and `POST /v1/cases/{id}/findings`.
//!
//! Owns: the agent's one credential (`Authorization: Bearer <agent token>`; an operator,
//! ingest or approver token is not an agent token, `?token=` is refused), reading the strict
//! JSON body, and the HTTP status and stable code of each agent refusal. The checks and the
//! record of every call are `engine::AgentFront`'s.

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::{ApiError, HttpState, PathOf, ambiguous, query_pairs, read_body};
use crate::agent::{Agent, AgentError};
use crate::engine::{AgentFront, FrontError};
use crate::ingest::json::JsonError;

pub(super) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/cases/{id}/proposals", post(propose))
        .route("/v1/cases/{id}/findings", post(add_finding))
}

/// The agent the request's one credential names.
pub(super) fn agent_of(
    st: &HttpState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(Agent, AgentFront), ApiError> {
    let front = st.agents.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no agents are configured ([[agents]] in cordon.toml)",
        )
    })?;
    let q = query_pairs(query);
    let in_header: Vec<_> = headers.get_all(header::AUTHORIZATION).iter().collect();
    let in_query = q.iter().filter(|(k, _)| k == "token").count();
    if in_header.len() + in_query > 1 {
        return Err(ambiguous(
            "agent endpoints",
            &format!(
                "{} Authorization header(s) and {in_query} ?token= parameter(s)",
                in_header.len()
            ),
        ));
    }
    if in_query > 0 {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "query_token_not_allowed",
            "agent endpoints do not take ?token=; send Authorization: Bearer <agent token>",
        ));
    }
    let presented = in_header
        .first()
        .and_then(|h| h.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(token) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "agent endpoints need an agent bearer token (Authorization: Bearer <token>)",
        ));
    };
    match front.agents.identify(token) {
        Some(a) => Ok((a.clone(), front)),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "not an agent token: only [[agents]] credentials may propose or add findings",
        )),
    }
}

/// The one mapping of agent refusals to HTTP statuses and codes.
pub(super) fn front_error(e: FrontError) -> ApiError {
    match e {
        FrontError::Refused(e) => {
            let (status, code) = match &e {
                AgentError::NoCitations => (StatusCode::UNPROCESSABLE_ENTITY, "no_citations"),
                AgentError::BadCitation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_citation"),
                AgentError::ForeignCitation { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "foreign_citation")
                }
                AgentError::UnknownAction(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "unknown_action")
                }
                AgentError::BadTarget(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_target"),
                AgentError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
                AgentError::CaseNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                AgentError::CaseNotOpen(_) => (StatusCode::CONFLICT, "case_not_open"),
                AgentError::TooManyOpen { .. } => {
                    (StatusCode::TOO_MANY_REQUESTS, "too_many_open_proposals")
                }
                AgentError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
                AgentError::NotForAgents(_) => (StatusCode::FORBIDDEN, "not_for_agents"),
            };
            ApiError::new(status, code, e.to_string())
        }
        FrontError::Engine(e) => e.into(),
    }
}

/// Reads the strict JSON body as `T`; a bad body from an identified agent is refused and
/// recorded.
async fn body_as<T: serde::de::DeserializeOwned>(
    st: &HttpState,
    agent: &Agent,
    front: &AgentFront,
    call: &str,
    case_id: &str,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(body, st.max_body_bytes).await?;
    let parsed = crate::ingest::json::parse(&bytes)
        .map_err(|e| match e {
            JsonError::DuplicateKey(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "duplicate_key", m)
            }
            JsonError::Syntax(m) => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", m),
        })
        .and_then(|v| {
            serde_json::from_value::<T>(v).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    e.to_string(),
                )
            })
        });
    match parsed {
        Ok(t) => Ok(t),
        Err(err) => {
            if let FrontError::Engine(e) = front
                .refuse_input(agent, "http", call, Some(case_id), err.message.clone())
                .await
            {
                return Err(e.into());
            }
            Err(err)
        }
    }
}

async fn propose(
    State(st): State<HttpState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    PathOf(case_id): PathOf<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (agent, front) = agent_of(&st, &headers, q.as_deref())?;
    let input = body_as(&st, &agent, &front, "propose_action", &case_id, body).await?;
    let (action, duplicate) = front
        .propose(&agent, "http", &case_id, input)
        .await
        .map_err(front_error)?;
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        axum::Json(json!({"action": action, "duplicate": duplicate})),
    )
        .into_response())
}

async fn add_finding(
    State(st): State<HttpState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    PathOf(case_id): PathOf<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (agent, front) = agent_of(&st, &headers, q.as_deref())?;
    let input = body_as(&st, &agent, &front, "add_finding", &case_id, body).await?;
    let seq = front
        .add_finding(&agent, "http", &case_id, input)
        .await
        .map_err(front_error)?;
    Ok((StatusCode::CREATED, axum::Json(json!({"seq": seq}))).into_response())
}
