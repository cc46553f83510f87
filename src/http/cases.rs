//! HTTP routes of cases: listing with filters and paging, and the analysts' operations.
//!
//! Owns: `GET /v1/cases` (filters `state`, `owner`, `severity`, `disposition`, `open`; paging
//! `after`, `limit`, answered with `next_after`) and `POST /v1/cases/{id}/assign | notes |
//! close | reopen | recover`. An operation's caller is identified exactly as over gRPC: one
//! `Authorization: Bearer` approver token (`grpc.approvers`) names the user; its body is strict
//! JSON (a key named twice, an unknown key or a wrong type is a 400) and checked before the
//! engine sees it, so bad input changes nothing. Refusals: 401 `unauthenticated`, 403
//! `forbidden` (policy, recorded), 404 `not_found`, 409 `case_state_conflict` (recorded).

use super::*;
use serde::Deserialize;

use crate::case::{CaseState, Disposition, Helped};
use crate::engine::read::CaseFilter;
use crate::engine::{CaseOp, CaseOpError, CaseOpKind, CloseCase, check_case_id};

/// Most cases one list reads (matching or not) before it answers with `next_after`.
const MAX_SCAN: usize = 10_000;

/// The case routes, merged into the main router.
pub(super) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/cases", get(list_cases))
        .route("/v1/cases/{id}/assign", post(assign))
        .route("/v1/cases/{id}/notes", post(note))
        .route("/v1/cases/{id}/close", post(close))
        .route("/v1/cases/{id}/reopen", post(reopen))
        .route("/v1/cases/{id}/recover", post(recover))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

async fn list_cases(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query_pairs(q.as_deref());
    admin(&st, &headers, &q, peer)?;
    let mut f = CaseFilter::default();
    let (mut limit, mut after) = (100usize, None);
    for (k, v) in &q {
        let wrong = |what: &str| bad(format!("{k}={:?} is not {what}", clip(v, 64)));
        match k.as_str() {
            "token" => {}
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| wrong("a number from 1 to 1000"))?
            }
            "after" => {
                check_case_id("after", v).map_err(bad)?;
                after = Some(v.clone());
            }
            "state" => f.state = Some(CaseState::parse(v).ok_or_else(|| wrong("a case state"))?),
            "owner" => f.owner = Some(v.clone()),
            "severity" => {
                f.severity = Some(
                    crate::alert::Severity::parse(v)
                        .filter(|s| s.as_str() == v)
                        .ok_or_else(|| wrong("a severity"))?,
                )
            }
            "disposition" => {
                f.disposition = Some(Disposition::parse(v).ok_or_else(|| wrong("a disposition"))?)
            }
            "open" => {
                f.open = Some(match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(wrong("true or false")),
                })
            }
            other => {
                return Err(bad(format!(
                    "unknown query parameter {:?} (known: limit, after, state, owner, severity, disposition, open)",
                    clip(other, 64)
                )));
            }
        }
    }
    let (cases, next) =
        engine::read::cases_filtered(&st.store, &f, after.as_deref(), limit, MAX_SCAN)?;
    Ok(axum::Json(json!({"cases": cases, "next_after": next})).into_response())
}

/// The user of the request's one approver bearer token.
fn caller(st: &HttpState, headers: &HeaderMap) -> Result<String, ApiError> {
    let unauth = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m);
    let mut all = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return Err(unauth(
            "send exactly one Authorization: Bearer header with an approver token",
        ));
    };
    let token = v
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| unauth("the Authorization header is not a bearer token"))?;
    st.approvers
        .approver_by_token(token.trim())
        .ok_or_else(|| unauth("the token is not an approver token"))
}

/// Reads a strict JSON body into `T` (unknown keys refused by `T`).
async fn body_of<T: serde::de::DeserializeOwned>(
    st: &HttpState,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(body, st.max_body_bytes).await?;
    let v = crate::ingest::json::parse(&bytes)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(v).map_err(|e| {
        let at = e.path().to_string();
        let e = e.into_inner();
        if at == "." {
            bad(format!("the body does not fit: {e}"))
        } else {
            bad(format!("the body does not fit: {at}: {e}"))
        }
    })
}

async fn run(
    st: &HttpState,
    headers: &HeaderMap,
    case_id: String,
    kind: CaseOpKind,
) -> Result<Response, ApiError> {
    let user = caller(st, headers)?;
    check_case_id("case id", &case_id).map_err(bad)?;
    kind.validate().map_err(bad)?;
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
    Ok(axum::Json(json!({"case": out.case, "cancelled": out.cancelled})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    owner: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HelpedBody {
    intel_ref: Option<String>,
    rule: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    disposition: String,
    reason: String,
    #[serde(default)]
    helped: Option<HelpedBody>,
    #[serde(default)]
    missed: Option<String>,
    #[serde(default)]
    duplicate_of: Option<String>,
    #[serde(default)]
    cancel_pending: bool,
}

async fn assign(
    State(st): State<HttpState>,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller(&st, &headers)?;
    let b: AssignBody = body_of(&st, body).await?;
    run(&st, &headers, id, CaseOpKind::Assign { owner: b.owner }).await
}

async fn note(
    State(st): State<HttpState>,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller(&st, &headers)?;
    let b: NoteBody = body_of(&st, body).await?;
    run(&st, &headers, id, CaseOpKind::Note { text: b.text }).await
}

async fn close(
    State(st): State<HttpState>,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller(&st, &headers)?;
    let b: CloseBody = body_of(&st, body).await?;
    let disposition = Disposition::parse(&b.disposition).ok_or_else(|| {
        bad(format!(
            "disposition {:?} is not true_positive, benign_true_positive, false_positive or duplicate",
            clip(&b.disposition, 64)
        ))
    })?;
    let helped = b.helped.unwrap_or_default();
    let kind = CaseOpKind::Close(CloseCase {
        disposition,
        reason: b.reason,
        helped: Helped {
            intel_ref: helped.intel_ref,
            rule: helped.rule,
        },
        missed: b.missed,
        duplicate_of: b.duplicate_of,
        cancel_pending: b.cancel_pending,
    });
    run(&st, &headers, id, kind).await
}

async fn reopen(
    State(st): State<HttpState>,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller(&st, &headers)?;
    let b: ReasonBody = body_of(&st, body).await?;
    run(&st, &headers, id, CaseOpKind::Reopen { reason: b.reason }).await
}

async fn recover(
    State(st): State<HttpState>,
    headers: HeaderMap,
    PathOf(id): PathOf<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller(&st, &headers)?;
    let b: ReasonBody = body_of(&st, body).await?;
    run(&st, &headers, id, CaseOpKind::Recover { reason: b.reason }).await
}
