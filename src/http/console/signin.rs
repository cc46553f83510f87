//! The console's sign-in: the sign-in page and form (an approver's `grpc.approvers` token,
//! checked in constant time), OpenID Connect (start and callback, through `oidc`), starting a
//! session (its cookie) and signing out.

use super::*;

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

pub(super) async fn login(State(st): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let c = console(&st);
    if !c.cfg.token_sign_in {
        return login_form(
            c,
            StatusCode::FORBIDDEN,
            Some("sign-in with a token is not enabled"),
        );
    }
    let f = match form(body, st.max_body_bytes).await {
        Ok(f) => f,
        Err(e) => return login_form(c, StatusCode::BAD_REQUEST, Some(&e)),
    };
    let expected = cookie(&headers, PRESESSION_COOKIE).unwrap_or_default();
    let sent = f.get("csrf").map(String::as_str).unwrap_or_default();
    if c.cross_site(&headers) {
        return login_form(c, StatusCode::FORBIDDEN, Some(OTHER_ORIGIN));
    }
    if expected.is_empty() || !same(&expected, sent) {
        return login_form(
            c,
            StatusCode::FORBIDDEN,
            Some("the sign-in form expired or did not come from this page; try again"),
        );
    }
    let token = f.get("token").map(|t| t.trim()).unwrap_or_default();
    let user = c
        .approver_tokens
        .iter()
        .find(|(h, _)| !token.is_empty() && h.matches(token))
        .map(|(_, u)| u.clone());
    let Some(user) = user else {
        tracing::info!("A console sign-in with a token was refused: not an approver's token.");
        return login_form(
            c,
            StatusCode::UNAUTHORIZED,
            Some("that is not an approver's token"),
        );
    };
    if !c.policies.current().has_user(&user) {
        tracing::info!(user = %user, "A console sign-in with a token was refused: the user is not in the entity files.");
        return login_form(
            c,
            StatusCode::FORBIDDEN,
            Some("that token's user is not a user of the policy entity files"),
        );
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
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
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
        return login_form(
            c,
            StatusCode::UNAUTHORIZED,
            Some("the identity provider refused the sign-in"),
        );
    }
    let (Some(code), Some(state)) = (one("code"), one("state")) else {
        return login_form(
            c,
            StatusCode::BAD_REQUEST,
            Some("the sign-in answer lacks its code or state"),
        );
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
        return login_form(
            c,
            StatusCode::BAD_REQUEST,
            Some("this sign-in is unknown, expired or belongs to another browser; start again"),
        );
    };
    let who = match oidc.finish(&code, &p.verifier, &p.nonce).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "An OpenID Connect sign-in was refused.");
            return login_form(c, StatusCode::UNAUTHORIZED, Some(&e.to_string()));
        }
    };
    let Some(user) = st
        .policies
        .current()
        .chat_user("oidc", &who.claim)
        .map(String::from)
    else {
        tracing::info!("An OpenID Connect sign-in names no user of the entity files.");
        return login_form(
            c,
            StatusCode::FORBIDDEN,
            Some(
                "you signed in, but no cordon user has your address (the email attribute in the entity files)",
            ),
        );
    };
    let identity = if who.mfa { "oidc_mfa" } else { "oidc" };
    tracing::info!(user = %user, identity, "A user signed in to the console with OpenID Connect.");
    let id = c.new_session(user, identity);
    let mut resp = signed_in(c, &id, html(StatusCode::OK, page::signed_in()));
    resp.headers_mut().append(
        header::SET_COOKIE,
        c.set_cookie(OIDC_COOKIE, "", "/ui/oidc", "Lax", 0),
    );
    resp
}
