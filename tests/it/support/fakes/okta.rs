//! Fake Okta management API (SSWS API-token auth): users by id, login, or a login's short name
//! when only one user has it (as Okta does), `DELETE /api/v1/users/{id}/sessions` (repeatable;
//! every call clears and writes a `user.session.clear` System Log event), and the System Log
//! query used to verify it. Errors use Okta's
//! `{errorCode, errorSummary, errorLink, errorId, errorCauses}` shape; every answer carries
//! `X-Okta-Request-Id` and the `X-Rate-Limit-*` headers (reset as UTC epoch seconds).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use regex::Regex;
use serde_json::{Value, json};

use super::{
    Effects, FakeServer, Faults, Req, RequestLog, default_header, empty_response, json_response,
    lock, rand_alnum, rfc3339_ms, uuidish,
};
use crate::support::auth::{AuthMode, Refusal};

const RATE_LIMIT: u64 = 600;

struct User {
    id: String,
    login: String,
    status: String,
}

#[derive(Clone)]
struct Event {
    published: DateTime<Utc>,
    v: Value,
}

#[derive(Default)]
struct OState {
    mode: AuthMode,
    users: Vec<User>,
    events: Vec<Event>,
}

struct Inner {
    api_token: String,
    st: Mutex<OState>,
    effects: Effects,
}

/// A stateful fake of the Okta API. Effect key: `clear_sessions:<userId>` (once per DELETE call,
/// every call counts).
pub struct FakeOkta {
    pub server: FakeServer,
    pub effects: Effects,
    inner: Arc<Inner>,
}

impl FakeOkta {
    pub async fn start(api_token: &str) -> FakeOkta {
        let effects = Effects::default();
        let inner = Arc::new(Inner {
            api_token: api_token.into(),
            st: Mutex::new(OState::default()),
            effects: effects.clone(),
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let used = Arc::new(AtomicU64::new(0));
        let server = FakeServer::start_decorated(
            router,
            Arc::new(move |r: &mut Response| {
                let n = used.fetch_add(1, Ordering::SeqCst) + 1;
                let left = if r.status().as_u16() == 429 {
                    0
                } else {
                    RATE_LIMIT.saturating_sub(n)
                };
                default_header(r, "x-okta-request-id", &rand_alnum(27));
                default_header(r, "x-rate-limit-limit", &RATE_LIMIT.to_string());
                default_header(r, "x-rate-limit-remaining", &left.to_string());
                default_header(
                    r,
                    "x-rate-limit-reset",
                    &(Utc::now().timestamp() + 60).to_string(),
                );
            }),
        )
        .await;
        FakeOkta {
            server,
            effects,
            inner,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
    pub fn faults(&self) -> &Faults {
        &self.server.faults
    }
    pub fn log(&self) -> &RequestLog {
        &self.server.log
    }
    pub fn effects(&self) -> &Effects {
        &self.effects
    }

    /// Adds an ACTIVE user. Okta user ids look like "00u1a2b3c4D5e6F7g8h9".
    pub fn add_user(&self, login: &str, id: &str) {
        lock(&self.inner.st).users.push(User {
            id: id.into(),
            login: login.into(),
            status: "ACTIVE".into(),
        });
    }
    /// Sets a user's status (ACTIVE, SUSPENDED, DEPROVISIONED, ...).
    pub fn set_user_status(&self, id: &str, status: &str) {
        if let Some(u) = lock(&self.inner.st).users.iter_mut().find(|u| u.id == id) {
            u.status = status.into();
        }
    }
    /// System Log events, oldest first.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.inner.st)
            .events
            .iter()
            .map(|e| e.v.clone())
            .collect()
    }
    /// How many `user.session.clear` events exist for the user.
    pub fn session_clears(&self, user_id: &str) -> usize {
        lock(&self.inner.st)
            .events
            .iter()
            .filter(|e| {
                e.v["eventType"] == "user.session.clear" && e.v["target"][0]["id"] == user_id
            })
            .count()
    }
    /// When on, every call answers 401 E0000011 (revoked / invalid API token).
    pub fn fail_auth(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Unauthorized);
    }
    /// When on, every call answers 403 E0000006 (token's admin lacks the permission).
    pub fn forbid(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Forbidden);
    }
}

fn okta_err(status: u16, code: &str, summary: &str) -> Response {
    json_response(
        status,
        json!({"errorCode": code, "errorSummary": summary, "errorLink": code,
               "errorId": format!("oae{}", rand_alnum(19)), "errorCauses": []}),
    )
}

fn not_found(x: &str) -> Response {
    okta_err(
        404,
        "E0000007",
        &format!("Not found: Resource not found: {x} (User)"),
    )
}

async fn handle(State(f): State<Arc<Inner>>, req: Request) -> Response {
    let r = Req::read(req).await;
    f.handle(r)
}

impl Inner {
    fn user_json(&self, u: &User) -> Value {
        json!({
            "id": u.id, "status": u.status, "created": "2020-01-01T00:00:00.000Z",
            "activated": "2020-01-01T00:00:00.000Z", "statusChanged": "2020-01-01T00:00:00.000Z",
            "lastLogin": rfc3339_ms(Utc::now()), "lastUpdated": "2020-01-01T00:00:00.000Z",
            "passwordChanged": "2020-01-01T00:00:00.000Z", "type": {"id": "oty1default"},
            "profile": {"login": u.login, "email": u.login, "firstName": "Test", "lastName": "User"},
            "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
            "_links": {"self": {"href": format!("/api/v1/users/{}", u.id)}},
        })
    }

    fn handle(&self, r: Req) -> Response {
        let mut st = lock(&self.st);
        match st
            .mode
            .check(r.auth_param("SSWS") == Some(self.api_token.as_str()))
        {
            Err(Refusal::Unauthorized) => {
                return okta_err(401, "E0000011", "Invalid token provided");
            }
            Err(Refusal::Forbidden) => {
                return okta_err(
                    403,
                    "E0000006",
                    "You do not have permission to perform the requested action",
                );
            }
            Ok(()) => {}
        }
        let segs = r.segs();
        match (r.method.as_str(), segs.as_slice()) {
            ("GET", ["api", "v1", "users", x]) => {
                // As Okta: an id, a login, or a login's short name (the part before `@`)
                // when only one user has it.
                let exact = st
                    .users
                    .iter()
                    .find(|u| u.id == *x || u.login.eq_ignore_ascii_case(x));
                let short: Vec<&User> = st
                    .users
                    .iter()
                    .filter(|u| {
                        u.login
                            .split_once('@')
                            .is_some_and(|(name, _)| name.eq_ignore_ascii_case(x))
                    })
                    .collect();
                let found = exact.or(match short.as_slice() {
                    [one] => Some(*one),
                    _ => None,
                });
                match found {
                    Some(u) => json_response(200, self.user_json(u)),
                    None => not_found(x),
                }
            }
            // Sessions are addressed by user id only.
            ("DELETE", ["api", "v1", "users", id, "sessions"]) => {
                let Some(u) = st.users.iter().find(|u| u.id == *id) else {
                    return not_found(id);
                };
                let oauth = r.query.get("oauthTokens").unwrap_or("false").to_owned();
                let forget = r.query.get("forgetDevices").unwrap_or("true").to_owned();
                let now = Utc::now();
                let v = json!({
                    "uuid": uuidish(), "published": rfc3339_ms(now), "eventType": "user.session.clear",
                    "version": "0", "severity": "INFO", "displayMessage": "Clear user session",
                    "actor": {"id": "00uapiadmin", "type": "User", "alternateId": "api-admin@example.com", "displayName": "API Admin"},
                    "client": {"ipAddress": "127.0.0.1", "userAgent": {"rawUserAgent": r.header("user-agent").unwrap_or("")}},
                    "outcome": {"result": "SUCCESS", "reason": null},
                    "target": [{"id": u.id, "type": "User", "alternateId": u.login, "displayName": "Test User"}],
                    "debugContext": {"debugData": {"requestUri": r.path, "oauthTokens": oauth, "forgetDevices": forget}},
                });
                let key = format!("clear_sessions:{}", u.id);
                st.events.push(Event { published: now, v });
                self.effects.effect(key);
                empty_response(204)
            }
            ("GET", ["api", "v1", "logs"]) => logs(&st, &r),
            _ => okta_err(
                404,
                "E0000022",
                "The endpoint does not support the provided HTTP method",
            ),
        }
    }
}

/// `filter` (clauses `field eq "value"` joined by `and`), `since`/`until` (RFC 3339), `limit`,
/// `sortOrder`.
fn logs(st: &OState, r: &Req) -> Response {
    let time = |k: &str| -> Result<Option<DateTime<Utc>>, String> {
        match r.query.get(k) {
            None | Some("") => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| format!("Api validation failed: {k}")),
        }
    };
    let (since, until) = match (time("since"), time("until")) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return okta_err(400, "E0000001", &e),
    };
    let clauses = match r.query.get("filter") {
        None | Some("") => vec![],
        Some(f) => match parse_filter(f) {
            Some(c) => c,
            None => return okta_err(400, "E0000031", "Invalid search criteria."),
        },
    };
    let limit = r
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    let mut out: Vec<&Event> = st
        .events
        .iter()
        .filter(|e| since.is_none_or(|s| e.published >= s))
        .filter(|e| until.is_none_or(|u| e.published < u))
        .filter(|e| {
            clauses
                .iter()
                .all(|(f, v)| event_field(&e.v, f).iter().any(|x| x == v))
        })
        .collect();
    if r.query.get("sortOrder") == Some("DESCENDING") {
        out.reverse();
    }
    let body: Vec<Value> = out.into_iter().take(limit).map(|e| e.v.clone()).collect();
    let mut resp = json_response(200, Value::Array(body));
    default_header(
        &mut resp,
        "link",
        &format!("<{}?{}>; rel=\"self\"", r.path, r.raw_query),
    );
    resp
}

fn parse_filter(f: &str) -> Option<Vec<(String, String)>> {
    let clause = Regex::new(r#"^\s*([A-Za-z][\w.]*)\s+eq\s+"([^"]*)"\s*$"#).expect("regex");
    let splitter = Regex::new(r"(?i)\s+and\s+").expect("regex");
    splitter
        .split(f)
        .map(|c| {
            let m = clause.captures(c)?;
            let field = m[1].to_owned();
            [
                "eventType",
                "target.id",
                "target.type",
                "target.alternateId",
                "actor.id",
                "outcome.result",
                "uuid",
            ]
            .contains(&field.as_str())
            .then(|| (field, m[2].to_owned()))
        })
        .collect()
}

/// Values of a dotted field; `target.*` looks at every target.
fn event_field(v: &Value, field: &str) -> Vec<String> {
    let s = |x: &Value| x.as_str().map(String::from);
    match field.split_once('.') {
        Some(("target", k)) => v["target"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| s(&t[k]))
            .collect(),
        Some((a, b)) => s(&v[a][b]).into_iter().collect(),
        None => s(&v[field]).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Fault, FaultKind, enc};
    use super::*;

    #[tokio::test]
    async fn every_clear_sessions_call_is_an_effect_and_a_log_event() {
        let okta = FakeOkta::start("00TOKEN").await;
        okta.add_user("alice@example.com", "00u1alice");
        let c = reqwest::Client::new();
        let url = okta.url();
        let get = |p: String| {
            c.get(format!("{url}{p}"))
                .header("Authorization", "SSWS 00TOKEN")
                .send()
        };

        let r = get("/api/v1/users/alice@example.com".into()).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers().contains_key("x-okta-request-id"));
        assert!(r.headers().contains_key("x-rate-limit-reset"));
        let u: Value = r.json().await.unwrap();
        assert_eq!(
            (u["id"].as_str(), u["status"].as_str()),
            (Some("00u1alice"), Some("ACTIVE"))
        );
        assert_eq!(u["profile"]["login"], "alice@example.com");
        let r = get("/api/v1/users/bob@example.com".into()).await.unwrap();
        assert_eq!(r.status().as_u16(), 404);
        assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "E0000007");

        let before = Utc::now();
        for _ in 0..2 {
            let r = c
                .delete(format!(
                    "{url}/api/v1/users/00u1alice/sessions?oauthTokens=true"
                ))
                .header("Authorization", "SSWS 00TOKEN")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 204);
            assert!(r.bytes().await.unwrap().is_empty());
        }
        assert_eq!(okta.effects.count("clear_sessions:00u1alice"), 2);
        assert_eq!(okta.session_clears("00u1alice"), 2);

        let filter = enc(r#"eventType eq "user.session.clear" and target.id eq "00u1alice""#);
        let since = enc(&rfc3339_ms(before - chrono::Duration::seconds(1)));
        let r = get(format!("/api/v1/logs?filter={filter}&since={since}"))
            .await
            .unwrap();
        let ev: Value = r.json().await.unwrap();
        assert_eq!(ev.as_array().unwrap().len(), 2);
        assert_eq!(ev[0]["target"][0]["type"], "User");
        let later = enc(&rfc3339_ms(Utc::now() + chrono::Duration::seconds(5)));
        let r = get(format!("/api/v1/logs?filter={filter}&since={later}"))
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
        let other = enc(r#"eventType eq "user.session.clear" and target.id eq "00u1bob""#);
        let r = get(format!("/api/v1/logs?filter={other}")).await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    }

    #[tokio::test]
    async fn bad_token_and_rate_limit() {
        let okta = FakeOkta::start("00TOKEN").await;
        okta.add_user("alice@example.com", "00u1alice");
        let c = reqwest::Client::new();
        let r = c
            .get(format!("{}/api/v1/users/00u1alice", okta.url()))
            .bearer_auth("00TOKEN")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(
            r.json::<Value>().await.unwrap()["errorSummary"],
            "Invalid token provided"
        );

        okta.faults().arm(Fault::on(
            "DELETE",
            "/sessions",
            FaultKind::EpochHeader {
                header: "X-Rate-Limit-Reset",
                secs_from_now: 3,
            },
        ));
        let r = c
            .delete(format!("{}/api/v1/users/00u1alice/sessions", okta.url()))
            .header("Authorization", "SSWS 00TOKEN")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["x-rate-limit-remaining"], "0");
        let reset: i64 = r.headers()["x-rate-limit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((Utc::now().timestamp()..=Utc::now().timestamp() + 3).contains(&reset));
        assert_eq!(okta.effects.total(), 0);
        assert!(okta.events().is_empty());
    }
}
