//! The console's sign-in: the sign-in page and form (an approver's `grpc.approvers` token,
//! checked in constant time), OpenID Connect (start and callback, through `oidc`), starting a
//! session (its cookie) and signing out, and the audit record of each (`console_sign_in`,
//! refused ones at most `REFUSED_SIGN_INS_PER_MIN` a minute; `console_sign_out`).

use super::*;
use serde_json::json;

use crate::audit::AuditKind;
use crate::engine::ConsoleNote;

/// How a sign-in went, for its record.
pub(super) enum Attempt<'a> {
    Accepted {
        user: &'a str,
        identity: &'a str,
    },
    Refused {
        reason: &'static str,
        message: &'a str,
    },
}

/// Records a sign-in (`method`: `token` or `oidc`) before its answer. An accepted one must be
/// on record before its session exists (`Err`: it could not be recorded, so no session); a
/// refused one is recorded at most `REFUSED_SIGN_INS_PER_MIN` times a minute, and never holds up
/// the answer. Nothing a person typed (a token) is recorded.
pub(super) async fn record_sign_in(
    st: &HttpState,
    method: &str,
    peer: SocketAddr,
    attempt: Attempt<'_>,
) -> Result<(), ()> {
    let c = console(st);
    let mut data = json!({"method": method, "peer": peer.ip().to_string()});
    match attempt {
        Attempt::Accepted { user, identity } => {
            data["outcome"] = json!("accepted");
            data["user"] = json!(user);
            data["identity"] = json!(identity);
        }
        Attempt::Refused { reason, message } => {
            let Some(unrecorded) = c.may_record_refusal() else {
                return Ok(());
            };
            data["outcome"] = json!("refused");
            data["reason"] = json!(reason);
            data["message"] = json!(crate::ingest::clip(message, 300));
            if unrecorded > 0 {
                data["unrecorded_refusals_before"] = json!(unrecorded);
            }
        }
    }
    let accepted = data["outcome"] == json!("accepted");
    let note = ConsoleNote {
        kind: AuditKind::ConsoleSignIn,
        data,
    };
    match st.engine.console(note).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::error!(error = %e, "A console sign-in could not be recorded.");
            if accepted { Err(()) } else { Ok(()) }
        }
    }
}

/// The answer when an accepted sign-in could not be recorded: no session.
fn not_recorded(c: &Console) -> Response {
    login_form(
        c,
        StatusCode::SERVICE_UNAVAILABLE,
        Some("the sign-in could not be recorded, so it did not happen; try again"),
    )
}

pub(super) async fn login_page(State(st): State<HttpState>, headers: HeaderMap) -> Response {
    let c = console(&st);
    if c.session(&headers).is_some() {
        return Redirect::to("/ui").into_response();
    }
    login_form(c, StatusCode::OK, None)
}

pub(super) fn login_form(c: &Console, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = random_token();
    let mut resp = html(
        status,
        page::login(&csrf, c.cfg.token_sign_in, c.oidc.is_some(), error),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        c.set_cookie(PRESESSION_COOKIE, &csrf, "/ui", "Strict", 3600),
    );
    resp
}

pub(super) fn signed_in(c: &Console, id: &str, resp: Response) -> Response {
    let mut resp = resp;
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        c.set_cookie(SESSION_COOKIE, id, "/ui", "Strict", c.cfg.session_ttl_secs),
    );
    h.append(
        header::SET_COOKIE,
        c.set_cookie(PRESESSION_COOKIE, "", "/ui", "Strict", 0),
    );
    resp
}

pub(super) async fn login(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let c = console(&st);
    let refuse = |reason: &'static str, status: StatusCode, message: &'static str| {
        let st = st.clone();
        async move {
            let _ = record_sign_in(&st, "token", peer, Attempt::Refused { reason, message }).await;
            login_form(console(&st), status, Some(message))
        }
    };
    if !c.cfg.token_sign_in {
        return login_form(
            c,
            StatusCode::FORBIDDEN,
            Some("sign-in with a token is not enabled"),
        );
    }
    let f = match form(body, st.max_body_bytes).await {
        Ok(f) => f,
        Err(e) => {
            let _ = record_sign_in(
                &st,
                "token",
                peer,
                Attempt::Refused {
                    reason: "malformed",
                    message: &e,
                },
            )
            .await;
            return login_form(c, StatusCode::BAD_REQUEST, Some(&e));
        }
    };
    let expected = cookie(&headers, PRESESSION_COOKIE).unwrap_or_default();
    let sent = f.get("csrf").map(String::as_str).unwrap_or_default();
    if c.cross_site(&headers) {
        return refuse("other_origin", StatusCode::FORBIDDEN, OTHER_ORIGIN).await;
    }
    if expected.is_empty() || !same(&expected, sent) {
        return refuse(
            "csrf",
            StatusCode::FORBIDDEN,
            "the sign-in form expired or did not come from this page; try again",
        )
        .await;
    }
    let token = f.get("token").map(|t| t.trim()).unwrap_or_default();
    let user = c
        .approver_tokens
        .iter()
        .find(|(h, _)| !token.is_empty() && h.matches(token))
        .map(|(_, u)| u.clone());
    let Some(user) = user else {
        tracing::info!("A console sign-in with a token was refused: not an approver's token.");
        return refuse(
            "bad_token",
            StatusCode::UNAUTHORIZED,
            "that is not an approver's token",
        )
        .await;
    };
    if !c.policies.current().has_user(&user) {
        tracing::info!(user = %user, "A console sign-in with a token was refused: the user is not in the entity files.");
        return refuse(
            "unknown_user",
            StatusCode::FORBIDDEN,
            "that token's user is not a user of the policy entity files",
        )
        .await;
    }
    let accepted = Attempt::Accepted {
        user: &user,
        identity: "token",
    };
    if record_sign_in(&st, "token", peer, accepted).await.is_err() {
        return not_recorded(c);
    }
    tracing::info!(user = %user, "An approver signed in to the console with a token.");
    let id = c.new_session(user, "token");
    signed_in(c, &id, Redirect::to("/ui").into_response())
}

pub(super) async fn logout(
    State(st): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let c = console(&st);
    let Some((viewer, csrf, key)) = c.session(&headers) else {
        return to_login();
    };
    let f = form(body, st.max_body_bytes).await.unwrap_or_default();
    if c.cross_site(&headers) {
        return refused(
            StatusCode::FORBIDDEN,
            Some((&viewer, &csrf)),
            OTHER_ORIGIN,
            "/ui",
        );
    }
    if !same(&csrf, f.get("csrf").map(String::as_str).unwrap_or_default()) {
        return refused(
            StatusCode::FORBIDDEN,
            Some((&viewer, &csrf)),
            "the form's CSRF token is missing or wrong; reload the page and try again",
            "/ui",
        );
    }
    // Recorded before the session ends; a sign-out that cannot be recorded still signs out.
    let note = ConsoleNote {
        kind: AuditKind::ConsoleSignOut,
        data: json!({"user": viewer.user, "identity": viewer.identity}),
    };
    if let Err(e) = st.engine.console(note).await {
        tracing::error!(error = %e, user = %viewer.user, "A console sign-out could not be recorded.");
    }
    c.end_session(&key);
    let mut resp = to_login();
    resp.headers_mut().append(
        header::SET_COOKIE,
        c.set_cookie(SESSION_COOKIE, "", "/ui", "Strict", 0),
    );
    resp
}

pub(super) async fn oidc_start(State(st): State<HttpState>) -> Response {
    let c = console(&st);
    let Some(oidc) = &c.oidc else {
        return login_form(
            c,
            StatusCode::NOT_FOUND,
            Some("OpenID Connect is not configured"),
        );
    };
    let start = match oidc.start().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "An OpenID Connect sign-in could not start.");
            return login_form(c, StatusCode::BAD_GATEWAY, Some(&e.to_string()));
        }
    };
    {
        let mut p = lock(&c.pending);
        p.retain(|_, v| v.started.elapsed() < Duration::from_secs(OIDC_PENDING_SECS));
        // At the cap the oldest sign-in under way is dropped (its callback is then refused as
        // unknown): anyone can start sign-ins, so refusing new ones would let a stranger lock
        // everyone out; this way a person's fresh start always works.
        while p.len() >= OIDC_PENDING_MAX {
            let Some(oldest) = p
                .iter()
                .min_by_key(|(_, v)| v.started)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            p.remove(&oldest);
        }
        p.insert(
            start.state.clone(),
            Pending {
                nonce: start.nonce,
                verifier: start.verifier,
                started: Instant::now(),
            },
        );
    }
    let mut resp = Redirect::to(&start.url).into_response();
    // Lax: the provider's redirect back is a cross-site navigation.
    resp.headers_mut().append(
        header::SET_COOKIE,
        c.set_cookie(
            OIDC_COOKIE,
            &start.state,
            "/ui/oidc",
            "Lax",
            OIDC_PENDING_SECS,
        ),
    );
    resp
}

pub(super) async fn oidc_callback(
    State(st): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let refuse = |reason: &'static str, status: StatusCode, message: String| {
        let st = st.clone();
        async move {
            let attempt = Attempt::Refused {
                reason,
                message: &message,
            };
            let _ = record_sign_in(&st, "oidc", peer, attempt).await;
            login_form(console(&st), status, Some(&message))
        }
    };
    let c = console(&st);
    let Some(oidc) = &c.oidc else {
        return login_form(
            c,
            StatusCode::NOT_FOUND,
            Some("OpenID Connect is not configured"),
        );
    };
    let q = query_pairs(q.as_deref());
    let one = |name: &str| {
        let mut it = q.iter().filter(|(k, _)| k == name);
        match (it.next(), it.next()) {
            (Some((_, v)), None) => Some(v.clone()),
            _ => None,
        }
    };
    if one("error").is_some() {
        return refuse(
            "provider_refused",
            StatusCode::UNAUTHORIZED,
            "the identity provider refused the sign-in".into(),
        )
        .await;
    }
    let (Some(code), Some(state)) = (one("code"), one("state")) else {
        return refuse(
            "malformed",
            StatusCode::BAD_REQUEST,
            "the sign-in answer lacks its code or state".into(),
        )
        .await;
    };
    // The browser that started this sign-in holds its state in a cookie: a callback carried
    // into another browser (login CSRF) does not match.
    let bound = cookie(&headers, OIDC_COOKIE).is_some_and(|v| same(&v, &state));
    let pending = if bound {
        lock(&c.pending).remove(&state)
    } else {
        None
    };
    let Some(p) = pending.filter(|p| p.started.elapsed() < Duration::from_secs(OIDC_PENDING_SECS))
    else {
        return refuse(
            "unknown_state",
            StatusCode::BAD_REQUEST,
            "this sign-in is unknown, expired or belongs to another browser; start again".into(),
        )
        .await;
    };
    let who = match oidc.finish(&code, &p.verifier, &p.nonce).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "An OpenID Connect sign-in was refused.");
            return refuse("token_refused", StatusCode::UNAUTHORIZED, e.to_string()).await;
        }
    };
    let Some(user) = st
        .policies
        .current()
        .chat_user("oidc", &who.claim)
        .map(String::from)
    else {
        tracing::info!("An OpenID Connect sign-in names no user of the entity files.");
        return refuse(
            "unknown_user",
            StatusCode::FORBIDDEN,
            "you signed in, but no cordon user has your address (the email attribute in the entity files)".into(),
        )
        .await;
    };
    let identity = if who.mfa { "oidc_mfa" } else { "oidc" };
    let accepted = Attempt::Accepted {
        user: &user,
        identity,
    };
    if record_sign_in(&st, "oidc", peer, accepted).await.is_err() {
        return not_recorded(c);
    }
    tracing::info!(user = %user, identity, "A user signed in to the console with OpenID Connect.");
    let id = c.new_session(user, identity);
    let mut resp = signed_in(c, &id, html(StatusCode::OK, page::signed_in()));
    resp.headers_mut().append(
        header::SET_COOKIE,
        c.set_cookie(OIDC_COOKIE, "", "/ui/oidc", "Lax", 0),
    );
    resp
}
