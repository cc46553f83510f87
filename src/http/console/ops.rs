//! The console's state-changing forms: votes, case operations and learning proposals.
//!
//! Owns: reading a form (each field once), the origin and CSRF checks every POST passes
//! (`checked_form`), and turning each form into its engine operation with the session's
//! identity: a vote is an `Event::Vote` with `channel = "web"`, a case operation or a
//! proposal's acceptance an `Event::CaseOp`, each decided by Cedar and recorded by the engine.

use super::*;

/// A form body: each field at most once (a field given twice is refused, not guessed at).
pub(super) async fn form(body: Body, max: usize) -> Result<HashMap<String, String>, String> {
    let bytes = read_body(body, max.min(64 * 1024))
        .await
        .map_err(|e| e.message)?;
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("the form field {k:?} was sent twice"));
        }
    }
    Ok(out)
}

/// Why a POST from another origin is refused.
pub(super) const OTHER_ORIGIN: &str = "the request came from another origin; nothing was recorded";

impl Console {
    /// A browser's POST names its origin; one that is not the console's is refused (the cookies
    /// are `SameSite=Strict` already; this holds for browsers that send `Origin` but not
    /// `SameSite`). The console's origin is `console.public_origin` when set (behind a proxy
    /// that rewrites `Host`), else whatever host the request was sent to.
    pub(super) fn cross_site(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let origin = origin.trim_end_matches('/');
        if let Some(public) = &self.public_origin {
            return !origin.eq_ignore_ascii_case(public);
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let o = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or(origin);
        !o.eq_ignore_ascii_case(host)
    }
}

pub(super) async fn vote(
    State(st): State<HttpState>,
    ConnectInfo(_peer): ConnectInfo<SocketAddr>,
    PathOf(id): PathOf<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let c = console(&st);
    let Some((viewer, csrf, _)) = c.session(&headers) else {
        return refused(
            StatusCode::UNAUTHORIZED,
            None,
            "sign in first; nothing was recorded",
            "/ui/login",
        );
    };
    let page_of = |from: Option<&str>| match from {
        Some("inbox") => "/ui/approvals".to_string(),
        _ => "/ui".to_string(),
    };
    let back_default = page_of(None);
    let me = Some((&viewer, csrf.as_str()));
    let f = match form(body, st.max_body_bytes).await {
        Ok(f) => f,
        Err(e) => return refused(StatusCode::BAD_REQUEST, me, &e, &back_default),
    };
    if c.cross_site(&headers) {
        return refused(StatusCode::FORBIDDEN, me, OTHER_ORIGIN, &back_default);
    }
    if !same(&csrf, f.get("csrf").map(String::as_str).unwrap_or_default()) {
        return refused(
            StatusCode::FORBIDDEN,
            me,
            "the form's CSRF token is missing or wrong; reload the page and try again (nothing was recorded)",
            &back_default,
        );
    }
    let from = match f.get("from").map(String::as_str) {
        None | Some("case") => From::Case,
        Some("inbox") => From::Inbox,
        Some(_) => {
            return refused(
                StatusCode::BAD_REQUEST,
                me,
                "unknown form origin",
                &back_default,
            );
        }
    };
    let approve = match f.get("decision").map(String::as_str) {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return refused(
                StatusCode::BAD_REQUEST,
                me,
                "the decision must be approve or deny",
                &back_default,
            );
        }
    };
    let hash = f.get("request_hash").cloned().unwrap_or_default();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return refused(
            StatusCode::BAD_REQUEST,
            me,
            "the vote must carry the request hash it was cast on",
            &back_default,
        );
    }
    let comment = f.get("comment").cloned().unwrap_or_default();
    if comment.chars().count() > COMMENT_MAX || comment.chars().any(|c| c.is_control()) {
        return refused(
            StatusCode::BAD_REQUEST,
            me,
            "the comment must be at most 500 characters of text",
            &back_default,
        );
    }
    if !valid_id(&id) {
        return refused(
            StatusCode::NOT_FOUND,
            me,
            "no such approval request",
            &back_default,
        );
    }
    let case_id = crate::engine::read::action(&st.store, &id)
        .ok()
        .flatten()
        .map(|a| a.case_id);
    let back = match (from, &case_id) {
        (From::Case, Some(cid)) => format!("/ui/cases/{cid}"),
        (From::Inbox, _) => "/ui/approvals".to_string(),
        _ => back_default.clone(),
    };
    let outcome = st
        .engine
        .vote(VoteCast {
            approval_id: id,
            user: viewer.user.clone(),
            channel: view::CHANNEL.into(),
            identity: viewer.identity.clone(),
            approve,
            request_hash: Some(hash),
            comment,
        })
        .await;
    match outcome {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(e) => {
            let status = match &e {
                VoteError::NotFound(_) => StatusCode::NOT_FOUND,
                VoteError::Refused(_) => StatusCode::FORBIDDEN,
                VoteError::NotPending { .. }
                | VoteError::Expired(_)
                | VoteError::RequestChanged { .. } => StatusCode::CONFLICT,
                VoteError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            refused(status, me, &e.to_string(), &back)
        }
    }
}

/// The session and form of a POST, CSRF-checked; `Err` is the answer to send.
async fn checked_form(
    st: &HttpState,
    headers: &HeaderMap,
    body: Body,
    back: &str,
) -> Result<(Viewer, String, HashMap<String, String>), Response> {
    let c = console(st);
    let Some((viewer, csrf, _)) = c.session(headers) else {
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            None,
            "sign in first; nothing was recorded",
            "/ui/login",
        ));
    };
    let f = match form(body, st.max_body_bytes).await {
        Ok(f) => f,
        Err(e) => {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                Some((&viewer, &csrf)),
                &e,
                back,
            ));
        }
    };
    if c.cross_site(headers) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            Some((&viewer, &csrf)),
            OTHER_ORIGIN,
            back,
        ));
    }
    if !same(&csrf, f.get("csrf").map(String::as_str).unwrap_or_default()) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            Some((&viewer, &csrf)),
            "the form's CSRF token is missing or wrong; reload the page and try again (nothing was recorded)",
            back,
        ));
    }
    Ok((viewer, csrf, f))
}

/// A form field, trimmed; empty counts as absent.
fn field(f: &HashMap<String, String>, k: &str) -> Option<String> {
    f.get(k)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The case operation a case-page form asks for.
fn case_op_kind(f: &HashMap<String, String>) -> Result<CaseOpKind, String> {
    let text = |k: &str| field(f, k).unwrap_or_default();
    let kind = match f.get("op").map(String::as_str) {
        Some("assign") => CaseOpKind::Assign {
            owner: text("owner"),
        },
        Some("note") => CaseOpKind::Note { text: text("text") },
        Some("reopen") => CaseOpKind::Reopen {
            reason: text("reason"),
        },
        Some("recover") => CaseOpKind::Recover {
            reason: text("reason"),
        },
        Some("close") => {
            let d = text("disposition");
            let disposition = Disposition::parse(&d).ok_or_else(|| {
                "disposition must be true_positive, benign_true_positive, false_positive or duplicate"
                    .to_string()
            })?;
            CaseOpKind::Close(CloseCase {
                disposition,
                reason: text("reason"),
                helped: Helped {
                    intel_ref: field(f, "intel_ref"),
                    rule: field(f, "helped_rule"),
                },
                missed: field(f, "missed"),
                duplicate_of: field(f, "duplicate_of"),
                cancel_pending: matches!(
                    f.get("cancel_pending").map(String::as_str),
                    Some("1" | "on" | "true")
                ),
            })
        }
        _ => return Err("unknown case operation".into()),
    };
    kind.validate()?;
    Ok(kind)
}

fn case_op_status(e: &CaseOpError) -> StatusCode {
    match e {
        CaseOpError::NotFound(_) => StatusCode::NOT_FOUND,
        CaseOpError::Invalid(_) => StatusCode::BAD_REQUEST,
        CaseOpError::Refused(_) => StatusCode::FORBIDDEN,
        CaseOpError::Conflict(_) => StatusCode::CONFLICT,
        CaseOpError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// An analyst operation from the case page: the same Cedar-checked, recorded `CaseOp` as the
/// gRPC and HTTP APIs', with `channel = "web"` and the session's identity.
pub(super) async fn case_op(
    State(st): State<HttpState>,
    PathOf(id): PathOf<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let back = if valid_id(&id) {
        format!("/ui/cases/{id}")
    } else {
        "/ui".to_string()
    };
    let (viewer, csrf, f) = match checked_form(&st, &headers, body, &back).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let me = Some((&viewer, csrf.as_str()));
    if !valid_id(&id) {
        return refused(StatusCode::NOT_FOUND, me, "no such case", &back);
    }
    let kind = match case_op_kind(&f) {
        Ok(k) => k,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                me,
                &format!("{e} (nothing changed)"),
                &back,
            );
        }
    };
    let out = st
        .engine
        .case_op(CaseOp {
            case_id: id,
            user: viewer.user.clone(),
            channel: view::CHANNEL.into(),
            identity: viewer.identity.clone(),
            kind,
        })
        .await;
    match out {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(e) => refused(case_op_status(&e), me, &e.to_string(), &back),
    }
}

/// Accept or dismiss a learning proposal: a case operation on the proposal's first case.
pub(super) async fn proposal_op(
    State(st): State<HttpState>,
    PathOf(id): PathOf<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let back = "/ui/learning";
    let (viewer, csrf, f) = match checked_form(&st, &headers, body, back).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let me = Some((&viewer, csrf.as_str()));
    if let Err(e) = check_proposal_id(&id) {
        return refused(StatusCode::BAD_REQUEST, me, &e, back);
    }
    let reason = field(&f, "reason");
    let kind = match f.get("op").map(String::as_str) {
        Some("accept") => CaseOpKind::AcceptProposal {
            proposal_id: id.clone(),
            reason,
        },
        Some("dismiss") => match reason {
            Some(reason) => CaseOpKind::DismissProposal {
                proposal_id: id.clone(),
                reason,
            },
            None => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    me,
                    "a reason is required to dismiss a proposal (nothing changed)",
                    back,
                );
            }
        },
        _ => {
            return refused(
                StatusCode::BAD_REQUEST,
                me,
                "unknown proposal operation",
                back,
            );
        }
    };
    if let Err(e) = kind.validate() {
        return refused(
            StatusCode::BAD_REQUEST,
            me,
            &format!("{e} (nothing changed)"),
            back,
        );
    }
    let case_id = match crate::engine::learn::proposal(&st.store, &id) {
        Ok(Some(p)) => p.cases.first().cloned().unwrap_or_default(),
        Ok(None) => return refused(StatusCode::NOT_FOUND, me, "no such learning proposal", back),
        Err(e) => return store_error(e),
    };
    if !valid_id(&case_id) {
        return refused(
            StatusCode::CONFLICT,
            me,
            "the proposal names no case to record it on",
            back,
        );
    }
    let out = st
        .engine
        .case_op(CaseOp {
            case_id,
            user: viewer.user.clone(),
            channel: view::CHANNEL.into(),
            identity: viewer.identity.clone(),
            kind,
        })
        .await;
    match out {
        Ok(_) => Redirect::to(back).into_response(),
        Err(e) => refused(case_op_status(&e), me, &e.to_string(), back),
    }
}
