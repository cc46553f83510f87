//! The console's routes under `/ui`: sign-in and sessions, CSRF, security headers, the pages
//! and the live-update stream.
//!
//! Owns: sessions (in memory, keyed by the SHA-256 of a random session id that only the
//! browser's `HttpOnly`, `SameSite=Strict` cookie holds; they end at `console.session_ttl_secs`,
//! at sign-out, or when their user is no longer a user of the policy set in force, and a
//! restart signs everyone out), the per-session CSRF token every form carries
//! (and a pre-session one for the sign-in form), the sign-in flows (an approver's
//! `grpc.approvers` token, or OpenID Connect through `oidc`), the security headers of every
//! `/ui` answer (a CSP without inline script, `frame-ancestors 'none'`, `nosniff`, no caching)
//! and the live-update streams. The forms that change state (votes, case operations, learning
//! proposals) are `ops`; the sign-in flows `signin`. Pages read committed state through
//! `console::view`; this module holds no case state.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::{HttpState, PathOf, query_pairs, read_body};
use crate::case::{Disposition, Helped};
use crate::console::page::{self, From};
use crate::console::view::{self, QueueFilter, Viewer};
use crate::console::{ConsoleConfig, assets};
use crate::engine::{
    ApprovalUpdate, CaseOp, CaseOpError, CaseOpKind, CloseCase, VoteCast, VoteError,
    check_proposal_id,
};
use crate::oidc::{Oidc, random_token};
use crate::secret::{Secret, TokenHash};

mod ops;
mod signin;
use ops::{OTHER_ORIGIN, case_op, form, proposal_op, vote};
use signin::{login, login_page, logout, oidc_callback, oidc_start};

const SESSION_COOKIE: &str = "cordon_session";
const PRESESSION_COOKIE: &str = "cordon_signin";
const OIDC_COOKIE: &str = "cordon_oidc";
/// An OpenID Connect sign-in must come back within this long.
const OIDC_PENDING_SECS: u64 = 600;
/// Most OpenID Connect sign-ins under way; beyond it the oldest is dropped.
pub const OIDC_PENDING_MAX: usize = 1_000;
/// Most requests the approvals inbox shows.
const INBOX_MAX: usize = 200;
/// Refused sign-ins recorded per minute at most: anyone can send them (the rest are counted and
/// noted in the next record).
const REFUSED_SIGN_INS_PER_MIN: u32 = 60;
/// Most live-update streams (`/ui/events`) one session holds open at once (a few tabs).
const STREAMS_PER_SESSION: usize = 4;
/// Most live-update streams open at once, as a share of the HTTP connection cap: each holds a
/// connection for as long as its session lives, and the rest must stay free for ingest.
const STREAMS_SHARE_OF_CONNECTIONS: usize = 4;
const COMMENT_MAX: usize = 500;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

struct Session {
    user: String,
    identity: String,
    csrf: String,
    expires: Instant,
    /// Cancelled when the session ends (sign-out, expiry, eviction) or at shutdown: its
    /// live-update streams end with it.
    ended: CancellationToken,
}

/// How many refused sign-ins this minute were recorded, and how many were not.
struct RefusalWindow {
    started: Instant,
    recorded: u32,
    suppressed: u64,
}

/// The live-update streams open now, in all and per session.
#[derive(Default)]
struct Streams {
    total: usize,
    per_session: HashMap<[u8; 32], usize>,
}

/// One open live-update stream's place in the counts; given back when the stream is dropped
/// (it ended, or the browser went away).
struct StreamSlot {
    console: Arc<Console>,
    key: [u8; 32],
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut s = lock(&self.console.streams);
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_session.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_session.remove(&self.key);
            }
        }
    }
}

struct Pending {
    nonce: String,
    verifier: Secret,
    started: Instant,
}

/// The console's sign-in state and settings.
pub struct Console {
    cfg: ConsoleConfig,
    approver_tokens: Vec<(TokenHash, String)>,
    oidc: Option<Oidc>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    refusals: Mutex<RefusalWindow>,
    /// `console.public_origin`, as browsers send it.
    public_origin: Option<String>,
    /// The policy set in force: a session lasts only while its user is one of its users.
    policies: crate::policy::Policies,
    streams: Mutex<Streams>,
    /// Most live-update streams open at once (a share of the HTTP connection cap).
    max_streams: usize,
    pending: Mutex<HashMap<String, Pending>>,
    checkpoints: Option<(PathBuf, crate::checkpoint::PublicKey)>,
    shutdown: CancellationToken,
    /// The rules of the loaded playbooks, for the loop metrics on the board.
    catalog: Arc<crate::report::Catalog>,
    /// The rows the board's loop metrics are computed from, one whole read at a time.
    board_rows: Arc<view::BoardRows>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn session_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Console {
    /// Builds the console from validated config: approver tokens as hashes, the OIDC client.
    pub fn new(
        cfg: ConsoleConfig,
        http_max_connections: usize,
        policies: crate::policy::Policies,
        approvers: &[crate::config::ApproverToken],
        checkpoints: Option<(PathBuf, crate::checkpoint::PublicKey)>,
        shutdown: CancellationToken,
        catalog: crate::report::Catalog,
    ) -> Result<Console, crate::oidc::OidcError> {
        let oidc = match &cfg.oidc {
            Some(o) => Some(Oidc::new(o.clone())?),
            None => None,
        };
        let public_origin = cfg
            .public_origin
            .as_deref()
            .and_then(|o| crate::console::origin_of(o).ok());
        Ok(Console {
            approver_tokens: approvers
                .iter()
                .filter_map(|a| Some((TokenHash::from_ref(&a.token).ok()?, a.user.clone())))
                .collect(),
            cfg,
            oidc,
            sessions: Mutex::new(HashMap::new()),
            refusals: Mutex::new(RefusalWindow {
                started: Instant::now(),
                recorded: 0,
                suppressed: 0,
            }),
            public_origin,
            policies,
            streams: Mutex::default(),
            max_streams: (http_max_connections / STREAMS_SHARE_OF_CONNECTIONS).max(1),
            pending: Mutex::new(HashMap::new()),
            checkpoints,
            shutdown,
            catalog: Arc::new(catalog),
            board_rows: Arc::default(),
        })
    }

    fn new_session(&self, user: String, identity: &str) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut s = lock(&self.sessions);
        s.retain(|_, v| {
            let live = v.expires > now;
            if !live {
                v.ended.cancel();
            }
            live
        });
        while s.len() >= self.cfg.max_sessions {
            let Some(oldest) = s.iter().min_by_key(|(_, v)| v.expires).map(|(k, _)| *k) else {
                break;
            };
            end_session(&mut s, &oldest);
        }
        s.insert(
            session_key(&id),
            Session {
                user,
                identity: identity.to_string(),
                csrf: random_token(),
                expires: now + Duration::from_secs(self.cfg.session_ttl_secs),
                ended: self.shutdown.child_token(),
            },
        );
        id
    }

    /// The viewer and CSRF token of the request's session, if it has a live one.
    fn session(&self, headers: &HeaderMap) -> Option<(Viewer, String, [u8; 32])> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let key = session_key(&id);
        let mut s = lock(&self.sessions);
        if !self.still_live(&mut s, &key) {
            return None;
        }
        let v = s.get(&key)?;
        Some((
            Viewer {
                user: v.user.clone(),
                identity: v.identity.clone(),
            },
            v.csrf.clone(),
            key,
        ))
    }

    /// Whether one more refused sign-in may be recorded this minute; `Some(n)`: yes, and `n`
    /// were not recorded since the last one that was.
    fn may_record_refusal(&self) -> Option<u64> {
        let mut w = lock(&self.refusals);
        if w.started.elapsed() >= Duration::from_secs(60) {
            w.started = Instant::now();
            w.recorded = 0;
        }
        if w.recorded >= REFUSED_SIGN_INS_PER_MIN {
            w.suppressed += 1;
            return None;
        }
        w.recorded += 1;
        Some(std::mem::take(&mut w.suppressed))
    }

    fn session_live(&self, key: &[u8; 32]) -> bool {
        self.still_live(&mut lock(&self.sessions), key)
    }

    /// The session `key` exists, has not expired and its user is still a user of the policy
    /// set in force (one removed from the entity files and reloaded is signed out); a session
    /// that fails this is ended.
    fn still_live(&self, s: &mut HashMap<[u8; 32], Session>, key: &[u8; 32]) -> bool {
        let live = s.get(key).is_some_and(|v| {
            v.expires > Instant::now() && self.policies.current().has_user(&v.user)
        });
        if !live {
            end_session(s, key);
        }
        live
    }

    /// Ends the session `key` (sign-out): its live-update streams end with it.
    fn end_session(&self, key: &[u8; 32]) {
        end_session(&mut lock(&self.sessions), key);
    }

    /// A place for one more live-update stream of the session `key`: the stream's slot, the
    /// token cancelled when the session ends and when it expires; `Err` says why there is none.
    fn open_stream(
        self: &Arc<Self>,
        key: &[u8; 32],
    ) -> Result<(StreamSlot, CancellationToken, Instant), &'static str> {
        let (ended, expires) = {
            let s = lock(&self.sessions);
            let v = s.get(key).ok_or("sign in first")?;
            (v.ended.clone(), v.expires)
        };
        let mut st = lock(&self.streams);
        let mine = st.per_session.get(key).copied().unwrap_or(0);
        if mine >= STREAMS_PER_SESSION {
            return Err(
                "this session already has 4 live-update streams open; close a tab (the pages work without them)",
            );
        }
        if st.total >= self.max_streams {
            return Err(
                "too many live-update streams are open; the pages work without them, reload later",
            );
        }
        st.total += 1;
        *st.per_session.entry(*key).or_insert(0) += 1;
        Ok((
            StreamSlot {
                console: self.clone(),
                key: *key,
            },
            ended,
            expires,
        ))
    }

    fn cookie_attrs(&self, path: &str, same_site: &str, max_age: u64) -> String {
        format!(
            "Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{}",
            if self.cfg.secure_cookies {
                "; Secure"
            } else {
                ""
            }
        )
    }

    fn set_cookie(
        &self,
        name: &str,
        value: &str,
        path: &str,
        same_site: &str,
        max_age: u64,
    ) -> HeaderValue {
        let v = format!(
            "{name}={value}; {}",
            self.cookie_attrs(path, same_site, max_age)
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
    }
}

/// Removes a session and ends its live-update streams.
fn end_session(s: &mut HashMap<[u8; 32], Session>, key: &[u8; 32]) {
    if let Some(v) = s.remove(key) {
        v.ended.cancel();
    }
}

/// The value of the one cookie named `name`; two cookies of that name are ambiguous (none).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for h in headers.get_all(header::COOKIE) {
        let Ok(s) = h.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, v)) = part.trim().split_once('=')
                && k == name
            {
                if found.is_some() {
                    return None;
                }
                found = Some(v.to_string());
            }
        }
    }
    found
}

/// Adds the security headers to every `/ui` answer.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin: null` with
    // a form POST, and the origin check below could not tell the console's own forms.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The console's routes; `None` when the console is off.
pub fn router(state: HttpState) -> Option<Router> {
    state.console.as_ref()?;
    Some(
        Router::new()
            .route("/ui", get(queue))
            .route("/ui/", get(|| async { Redirect::to("/ui") }))
            .route("/ui/login", get(login_page).post(login))
            .route("/ui/logout", post(logout))
            .route("/ui/oidc/start", get(oidc_start))
            .route("/ui/oidc/callback", get(oidc_callback))
            .route("/ui/cases/{id}", get(case_page))
            .route("/ui/approvals", get(inbox))
            .route("/ui/audit", get(audit))
            .route("/ui/actions/{id}/vote", post(vote))
            .route("/ui/cases/{id}/op", post(case_op))
            .route("/ui/learning", get(learning))
            .route("/ui/learning/{id}/op", post(proposal_op))
            .route("/ui/events", get(events))
            .route("/ui/assets/{name}", get(asset))
            // Any other path under `/ui` is the console's own "not found" page, with the
            // console's headers (not the JSON API's answer).
            .route("/ui/{*rest}", axum::routing::any(no_such_page))
            .layer(axum::middleware::map_response(security_headers))
            .with_state(state),
    )
}

fn console(st: &HttpState) -> &Console {
    // `router` is only built with a console.
    st.console
        .as_deref()
        .expect("console routes need a console")
}

fn html(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

fn to_login() -> Response {
    Redirect::to("/ui/login").into_response()
}

fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "A console page could not read the store.");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        page::message(
            "Unavailable",
            None,
            "the store could not be read; retry later",
            "/ui",
        ),
    )
}

/// A refused form: the page says why, nothing changed.
fn refused(
    status: StatusCode,
    viewer: Option<(&Viewer, &str)>,
    text: &str,
    back: &str,
) -> Response {
    html(status, page::message("Refused", viewer, text, back))
}

async fn asset(PathOf(name): PathOf<String>) -> Response {
    match assets::get(&name) {
        Some((ty, bytes)) => (
            [
                (header::CONTENT_TYPE, ty),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            bytes,
        )
            .into_response(),
        None => html(
            StatusCode::NOT_FOUND,
            page::message("Not found", None, "no such file", "/ui"),
        ),
    }
}

async fn no_such_page() -> Response {
    html(
        StatusCode::NOT_FOUND,
        page::message("Not found", None, "no such page", "/ui"),
    )
}

async fn queue(State(st): State<HttpState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let c = console(&st);
    let Some((viewer, csrf, _)) = c.session(&headers) else {
        return to_login();
    };
    let filter = match QueueFilter::parse(&query_pairs(q.as_deref())) {
        Ok(f) => f,
        Err(e) => {
            return refused(StatusCode::BAD_REQUEST, Some((&viewer, &csrf)), &e, "/ui");
        }
    };
    let store = st.store.clone();
    let stale = c.cfg.stale_after_secs;
    let page = tokio::task::spawn_blocking(move || {
        view::queue(&store, &filter, chrono::Utc::now(), stale)
    })
    .await;
    match page {
        Ok(Ok(p)) => html(StatusCode::OK, page::queue(&viewer, &csrf, &p)),
        Ok(Err(e)) => store_error(e),
        Err(e) => store_error(e),
    }
}

fn valid_id(id: &str) -> bool {
    id.len() == 26 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

async fn case_page(
    State(st): State<HttpState>,
    PathOf(id): PathOf<String>,
    headers: HeaderMap,
) -> Response {
    let c = console(&st);
    let Some((viewer, csrf, _)) = c.session(&headers) else {
        return to_login();
    };
    let not_found = || {
        html(
            StatusCode::NOT_FOUND,
            page::message("Not found", Some((&viewer, &csrf)), "no such case", "/ui"),
        )
    };
    if !valid_id(&id) {
        return not_found();
    }
    let store = st.store.clone();
    let policy = st.policies.current();
    let v = viewer.clone();
    let stale = c.cfg.stale_after_secs;
    let r = tokio::task::spawn_blocking(move || {
        view::case(&store, &policy, &v, &id, chrono::Utc::now(), stale)
    })
    .await;
    match r {
        Ok(Ok(Some(cv))) => html(StatusCode::OK, page::case(&viewer, &csrf, &cv)),
        Ok(Ok(None)) => not_found(),
        Ok(Err(e)) => store_error(e),
        Err(e) => store_error(e),
    }
}

async fn inbox(State(st): State<HttpState>, headers: HeaderMap) -> Response {
    let c = console(&st);
    let Some((viewer, csrf, _)) = c.session(&headers) else {
        return to_login();
    };
    let store = st.store.clone();
    let policy = st.policies.current();
    let v = viewer.clone();
    let r = tokio::task::spawn_blocking(move || view::inbox(&store, &policy, &v, INBOX_MAX)).await;
    match r {
        Ok(Ok(items)) => html(StatusCode::OK, page::inbox(&viewer, &csrf, &items)),
        Ok(Err(e)) => store_error(e),
        Err(e) => store_error(e),
    }
}

async fn audit(State(st): State<HttpState>, headers: HeaderMap) -> Response {
    let c = console(&st);
    let Some((viewer, csrf, _)) = c.session(&headers) else {
        return to_login();
    };
    let store = st.store.clone();
    let cps = c.checkpoints.clone();
    let r = tokio::task::spawn_blocking(move || {
        view::audit_state(&store, cps.as_ref().map(|(d, k)| (d.as_path(), k)))
    })
    .await;
    match r {
        Ok(s) => html(StatusCode::OK, page::audit(&viewer, &csrf, &s)),
        Err(e) => store_error(e),
    }
}

/// Server-sent events: `change` (data: the action id) whenever an approval request changes
/// durably, from the same broadcast as gRPC's `WatchApprovals`; `resync` when this stream fell
/// behind. Ends at sign-out, at the session's expiry and at shutdown. Each stream holds an HTTP
/// connection, so a session holds at most `STREAMS_PER_SESSION` and all sessions together a
/// quarter of the connection cap (`429` beyond): ingest always keeps connections.
async fn events(State(st): State<HttpState>, headers: HeaderMap) -> Response {
    let Some(c) = st.console.clone() else {
        return (StatusCode::NOT_FOUND, "the console is off").into_response();
    };
    let Some((_, _, key)) = c.session(&headers) else {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    };
    let (slot, ended, expires) = match c.open_stream(&key) {
        Ok(x) => x,
        Err(why) => {
            tracing::info!("A console live-update stream was refused: {why}.");
            return (StatusCode::TOO_MANY_REQUESTS, why).into_response();
        }
    };
    let rx = st.engine.subscribe();
    let until = tokio::time::Instant::from_std(expires);
    let st2 = st.clone();
    let stream = futures_util::stream::unfold((rx, slot), move |(mut rx, slot)| {
        let ended = ended.clone();
        let st = st2.clone();
        async move {
            let ev = tokio::select! {
                _ = ended.cancelled() => return None,
                _ = tokio::time::sleep_until(until) => return None,
                r = rx.recv() => r,
            };
            if !console(&st).session_live(&key) {
                return None;
            }
            let ev = match ev {
                Ok(ApprovalUpdate::Changed(a)) => SseEvent::default()
                    .event("change")
                    .data(a.action_id.clone()),
                Ok(ApprovalUpdate::Escalation { action_id, .. }) => {
                    SseEvent::default().event("change").data(action_id)
                }
                // Escalation messages owed to chat change no page.
                Ok(ApprovalUpdate::ChatEscalationOwed) => SseEvent::default().comment("escalation"),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    SseEvent::default().event("resync").data("")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            Some((Ok::<_, Infallible>(ev), (rx, slot)))
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The learning and loop board: open proposals, the loop metrics as server-drawn SVG, the
/// audit chain's state.
async fn learning(State(st): State<HttpState>, headers: HeaderMap) -> Response {
    let c = console(&st);
    let Some((viewer, csrf, _)) = c.session(&headers) else {
        return to_login();
    };
    let store = st.store.clone();
    let cps = c.checkpoints.clone();
    let catalog = c.catalog.clone();
    let input = match c.board_rows.current(&store).await {
        Ok(rows) => rows,
        Err(e) => return store_error(e),
    };
    let r = tokio::task::spawn_blocking(move || {
        view::board(
            &store,
            &input,
            &catalog,
            cps.as_ref().map(|(d, k)| (d.as_path(), k)),
            chrono::Utc::now(),
        )
    })
    .await;
    match r {
        Ok(Ok(b)) => html(StatusCode::OK, page::learning(&viewer, &csrf, &b)),
        Ok(Err(e)) => store_error(e),
        Err(e) => store_error(e),
    }
}
