//! HTTP routes of learning proposals.
//!
//! Owns: `GET /v1/learning/proposals` (filters `case`, `state`, `kind`, `limit`; strict query),
//! `GET /v1/learning/proposals/{id}` and `POST /v1/learning/proposals/{id}/accept | dismiss`
//! (strict JSON bodies `{"reason": …}`, required to dismiss). Accept and dismiss are case
//! operations identified exactly as the case routes' (one approver bearer token); refusals:
//! 401 `unauthenticated`, 400 `invalid_request` (nothing changes), 403 `forbidden` (policy,
//! recorded), 404 `not_found`, 409 `case_state_conflict` (already resolved; recorded).

use super::*;
use serde::Deserialize;

use super::cases::{body_of, caller};
use crate::engine::learn as stored;
use crate::engine::{CaseOp, CaseOpError, CaseOpKind, check_case_id, check_proposal_id};
use crate::learn::{ProposalKind, ProposalState};

pub(super) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/learning/proposals", get(list))
        .route("/v1/learning/proposals/{id}", get(show))
        .route("/v1/learning/proposals/{id}/accept", post(accept))
        .route("/v1/learning/proposals/{id}/dismiss", post(dismiss))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

async fn list(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query_pairs(q.as_deref());
    admin(&st, &headers, &q, peer)?;
    let (mut case, mut state, mut kind, mut limit) = (None, None, None, 100usize);
    for (k, v) in &q {
        let wrong = |what: &str| bad(format!("{k}={:?} is not {what}", clip(v, 64)));
        match k.as_str() {
            "token" => {}
            "case" => {
                check_case_id("case", v).map_err(bad)?;
                case = Some(v.clone());
            }
            "state" => {
                state = Some(
                    ProposalState::parse(v).ok_or_else(|| wrong("open, accepted or dismissed"))?,
                )
            }
            "kind" => {
                kind = Some(ProposalKind::parse(v).ok_or_else(|| {
                    wrong("tuning, regression_test, intel_credit or detection_backlog")
                })?)
            }
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| wrong("a number from 1 to 1000"))?
            }
            other => {
                return Err(bad(format!(
                    "unknown query parameter {:?} (known: case, state, kind, limit)",
                    clip(other, 64)
                )));
            }
        }
    }
    let ps = stored::proposals(
        &st.store,
        case.as_deref(),
        |p| state.is_none_or(|s| p.state == s) && kind.is_none_or(|k| p.kind == k),
        limit,
    )?;
    Ok(axum::Json(json!({"proposals": ps})).into_response())
}

async fn show(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
) -> Result<Response, ApiError> {
    let q = query_pairs(q.as_deref());
    admin(&st, &headers, &q, peer)?;
    check_proposal_id(&id).map_err(bad)?;
    let p = stored::proposal(&st.store, &id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no learning proposal {id}"),
        )
    })?;
    Ok(axum::Json(p).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn accept(
    State(st): State<HttpState>,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller(&st, &headers)?;
    let b: ReasonBody = body_of(&st, body).await?;
    resolve(&st, &headers, id, true, b.reason).await
}

async fn dismiss(
    State(st): State<HttpState>,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller(&st, &headers)?;
    let b: ReasonBody = body_of(&st, body).await?;
    resolve(&st, &headers, id, false, b.reason).await
}

async fn resolve(
    st: &HttpState,
    headers: &HeaderMap,
    id: String,
    accept: bool,
    reason: Option<String>,
) -> Result<Response, ApiError> {
    let user = caller(st, headers)?;
    check_proposal_id(&id).map_err(bad)?;
    let kind = if accept {
        CaseOpKind::AcceptProposal {
            proposal_id: id.clone(),
            reason,
        }
    } else {
        CaseOpKind::DismissProposal {
            proposal_id: id.clone(),
            reason: reason.ok_or_else(|| bad("reason is required to dismiss a proposal"))?,
        }
    };
    kind.validate().map_err(bad)?;
    let p = stored::proposal(&st.store, &id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no learning proposal {id}"),
        )
    })?;
    let case_id = p.cases.first().cloned().unwrap_or_default();
    check_case_id("case id", &case_id).map_err(bad)?;
    let out = st
        .engine
        .case_op(CaseOp {
            case_id,
            user,
            channel: "http".into(),
            identity: "token".into(),
            kind,
        })
        .await
        .map_err(|e| match &e {
            CaseOpError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            CaseOpError::Invalid(_) => bad(e.to_string()),
            CaseOpError::Refused(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            CaseOpError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "case_state_conflict", e.to_string())
            }
            CaseOpError::Store(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                e.to_string(),
            ),
        })?;
    let p = stored::proposal(&st.store, &id)?.unwrap_or(p);
    Ok(axum::Json(json!({"proposal": p, "case": out.case})).into_response())
}
