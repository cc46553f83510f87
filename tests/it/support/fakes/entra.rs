//! Fake Microsoft Entra ID: the client-credentials token endpoint and the Microsoft Graph user
//! endpoints cordon uses — `POST /v1.0/users/{id|upn}/revokeSignInSessions` (answering the
//! documented-bug `200 {"value": true}` shape, or `204` when switched) which moves
//! `signInSessionsValidFromDateTime` to now, and `GET /v1.0/users/{id|upn}` honouring `$select`
//! (like Graph, that property is only returned when selected). Errors use Graph's
//! `{"error":{"code","message","innerError"}}` shape; answers carry `request-id` and
//! `client-request-id`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value, json};

use super::{
    Effects, FakeServer, Faults, Req, RequestLog, default_header, empty_response, json_response,
    lock, rfc3339_secs, uuidish,
};
use crate::support::auth::{AadApp, AuthMode, Refusal, Tokens};

const GRAPH: &str = "https://graph.microsoft.com/v1.0";
const DEFAULT_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

struct User {
    id: String,
    upn: String,
    valid_from: DateTime<Utc>,
    revocations: usize,
}

#[derive(Default)]
struct EState {
    tokens: Tokens,
    mode: AuthMode,
    users: Vec<User>,
    revoke_no_content: bool,
    /// Graph only returns signInSessionsValidFromDateTime when `$select`ed (default true).
    select_required: bool,
}

struct Inner {
    app: AadApp,
    st: Mutex<EState>,
    effects: Effects,
}

/// A stateful fake of Entra ID + Graph users. Effect key: `revoke:<objectId>` (every call counts).
pub struct FakeEntra {
    pub server: FakeServer,
    pub effects: Effects,
    inner: Arc<Inner>,
}

impl FakeEntra {
    pub async fn start(tenant: &str, client_id: &str, client_secret: &str) -> FakeEntra {
        let effects = Effects::default();
        let inner = Arc::new(Inner {
            app: AadApp {
                tenant: tenant.into(),
                client_id: client_id.into(),
                client_secret: client_secret.into(),
            },
            st: Mutex::new(EState {
                select_required: true,
                ..EState::default()
            }),
            effects: effects.clone(),
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let server = FakeServer::start_decorated(
            router,
            Arc::new(|r: &mut Response| {
                let rid = uuidish();
                default_header(r, "request-id", &rid);
                default_header(r, "client-request-id", &rid);
            }),
        )
        .await;
        FakeEntra {
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

    /// Adds a user whose sessions are valid from 2020-01-01T00:00:00Z.
    pub fn add_user(&self, upn: &str, object_id: &str) {
        let old = DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        lock(&self.inner.st).users.push(User {
            id: object_id.into(),
            upn: upn.into(),
            valid_from: old,
            revocations: 0,
        });
    }
    /// The user's signInSessionsValidFromDateTime (by object id or UPN).
    pub fn valid_from(&self, id_or_upn: &str) -> DateTime<Utc> {
        let st = lock(&self.inner.st);
        find(&st.users, id_or_upn)
            .map(|i| st.users[i].valid_from)
            .unwrap_or_else(|| panic!("unknown user {id_or_upn}"))
    }
    pub fn revocations(&self, id_or_upn: &str) -> usize {
        let st = lock(&self.inner.st);
        find(&st.users, id_or_upn)
            .map(|i| st.users[i].revocations)
            .unwrap_or(0)
    }
    /// Answer revokeSignInSessions with the documented `204 No Content` instead of the observed
    /// `200 {"value": true}`.
    pub fn revoke_returns_no_content(&self, on: bool) {
        lock(&self.inner.st).revoke_no_content = on;
    }
    /// When false, GET user returns signInSessionsValidFromDateTime even without `$select`
    /// (default true: like Graph, only on `$select`).
    pub fn select_required(&self, on: bool) {
        lock(&self.inner.st).select_required = on;
    }
    pub fn tokens_issued(&self) -> usize {
        lock(&self.inner.st).tokens.issued
    }
    pub fn expire_tokens(&self) {
        lock(&self.inner.st).tokens.expire_all();
    }
    /// When on, the token endpoint answers 401 invalid_client and Graph 401.
    pub fn fail_auth(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Unauthorized);
    }
    /// When on, Graph answers 403 Authorization_RequestDenied (missing User.RevokeSessions.All).
    pub fn forbid(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Forbidden);
    }
}

fn find(users: &[User], x: &str) -> Option<usize> {
    users
        .iter()
        .position(|u| u.id.eq_ignore_ascii_case(x) || u.upn.eq_ignore_ascii_case(x))
}

struct Ctx {
    rid: String,
    crid: String,
}

impl Ctx {
    fn finish(&self, mut r: Response) -> Response {
        default_header(&mut r, "request-id", &self.rid);
        default_header(&mut r, "client-request-id", &self.crid);
        r
    }
    fn reply(&self, status: u16, v: Value) -> Response {
        self.finish(json_response(status, v))
    }
    fn err(&self, status: u16, code: &str, message: &str) -> Response {
        let date = rfc3339_secs(Utc::now());
        self.reply(
            status,
            json!({"error": {"code": code, "message": message,
                   "innerError": {"date": date, "request-id": self.rid, "client-request-id": self.crid}}}),
        )
    }
}

async fn handle(State(f): State<Arc<Inner>>, req: Request) -> Response {
    let r = Req::read(req).await;
    f.handle(r)
}

fn audience_ok(aud: &str) -> bool {
    aud.contains("graph.microsoft.com") || aud == "00000003-0000-0000-c000-000000000000"
}

impl Inner {
    fn handle(&self, r: Req) -> Response {
        let rid = uuidish();
        let crid = r
            .header("client-request-id")
            .map(String::from)
            .unwrap_or_else(|| rid.clone());
        let cx = Ctx { rid, crid };
        let mut st = lock(&self.st);
        let segs = r.segs();
        let mode = st.mode;
        if let Some(resp) = self.app.serve_token(&mut st.tokens, mode, &r) {
            return cx.finish(resp);
        }
        match r.bearer().map(|t| st.tokens.audience(t)) {
            None => return cx.err(401, "InvalidAuthenticationToken", "Access token is empty."),
            Some(None) => {
                return cx.err(
                    401,
                    "InvalidAuthenticationToken",
                    "Lifetime validation failed, the token is expired.",
                );
            }
            Some(Some(a)) if !audience_ok(a) => {
                return cx.err(
                    401,
                    "InvalidAuthenticationToken",
                    "Access token validation failure. Invalid audience.",
                );
            }
            _ => {}
        }
        match st.mode.check(true) {
            Err(Refusal::Unauthorized) => {
                return cx.err(
                    401,
                    "InvalidAuthenticationToken",
                    "Access token validation failure.",
                );
            }
            Err(Refusal::Forbidden) => {
                return cx.err(
                    403,
                    "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.",
                );
            }
            Ok(()) => {}
        }
        let not_found = |x: &str| {
            cx.err(
                404,
                "Request_ResourceNotFound",
                &format!("Resource '{x}' does not exist or one of its queried reference-property objects are not present."),
            )
        };
        match (r.method.as_str(), segs.as_slice()) {
            ("POST", ["v1.0", "users", x, "revokeSignInSessions"]) => {
                let Some(i) = find(&st.users, x) else {
                    return not_found(x);
                };
                let u = &mut st.users[i];
                // Graph keeps whole seconds.
                u.valid_from = Utc::now().trunc_subsecs(0);
                u.revocations += 1;
                self.effects.effect(format!("revoke:{}", u.id));
                if st.revoke_no_content {
                    return cx.finish(empty_response(204));
                }
                cx.reply(200, json!({"@odata.context": format!("{GRAPH}/$metadata#Edm.Boolean"), "value": true}))
            }
            ("GET", ["v1.0", "users", x]) => {
                let Some(i) = find(&st.users, x) else {
                    return not_found(x);
                };
                let u = &st.users[i];
                let all = json!({
                    "id": u.id, "userPrincipalName": u.upn, "displayName": u.upn.split('@').next().unwrap_or(""),
                    "mail": u.upn, "businessPhones": [], "givenName": null, "jobTitle": null, "mobilePhone": null,
                    "officeLocation": null, "preferredLanguage": null, "surname": null, "accountEnabled": true,
                    "signInSessionsValidFromDateTime": rfc3339_secs(u.valid_from),
                });
                let mut out = Map::new();
                match r.query.get("$select").filter(|s| !s.trim().is_empty()) {
                    Some(sel) => {
                        let props: Vec<&str> = sel.split(',').map(str::trim).collect();
                        for p in &props {
                            match all.get(*p) {
                                Some(v) => {
                                    out.insert((*p).to_owned(), v.clone());
                                }
                                None => {
                                    return cx.err(
                                        400,
                                        "BadRequest",
                                        &format!("Could not find a property named '{p}' on type 'microsoft.graph.user'."),
                                    );
                                }
                            }
                        }
                        out.insert(
                            "@odata.context".into(),
                            json!(format!(
                                "{GRAPH}/$metadata#users({})/$entity",
                                props.join(",")
                            )),
                        );
                    }
                    None => {
                        for p in DEFAULT_PROPS {
                            out.insert((*p).to_owned(), all[*p].clone());
                        }
                        if !st.select_required {
                            out.insert(
                                "signInSessionsValidFromDateTime".into(),
                                all["signInSessionsValidFromDateTime"].clone(),
                            );
                        }
                        out.insert(
                            "@odata.context".into(),
                            json!(format!("{GRAPH}/$metadata#users/$entity")),
                        );
                    }
                }
                cx.reply(200, Value::Object(out))
            }
            _ => cx.err(
                400,
                "BadRequest",
                &format!(
                    "Resource not found for the segment '{}'.",
                    segs.last().unwrap_or(&"")
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::auth::{aad_form, access_token, request_token};

    async fn token(c: &reqwest::Client, url: &str, scope: &str) -> (u16, Value) {
        let url = format!("{url}/tid/oauth2/v2.0/token");
        request_token(c, &url, &aad_form("app", "s3cret", scope)).await
    }

    #[tokio::test]
    async fn revoke_moves_the_timestamp_and_answers_the_bug_shape() {
        let e = FakeEntra::start("tid", "app", "s3cret").await;
        e.add_user("alice@contoso.com", "11111111-2222-3333-4444-555555555555");
        let c = reqwest::Client::new();
        let url = e.url();
        let (st, v) = token(&c, &url, "https://graph.microsoft.com/.default").await;
        assert_eq!(st, 200);
        let tok = access_token(&v);
        assert_eq!(e.tokens_issued(), 1);

        let sel = "/v1.0/users/alice@contoso.com?$select=signInSessionsValidFromDateTime";
        let r = c
            .get(format!("{url}{sel}"))
            .bearer_auth(&tok)
            .header("client-request-id", "abc")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["client-request-id"], "abc");
        assert!(r.headers().contains_key("request-id"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["signInSessionsValidFromDateTime"], "2020-01-01T00:00:00Z");

        // Without $select the property is not returned (as in Graph).
        let v: Value = c
            .get(format!("{url}/v1.0/users/alice@contoso.com"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["id"], "11111111-2222-3333-4444-555555555555");
        assert!(v.get("signInSessionsValidFromDateTime").is_none());

        let before = Utc::now().trunc_subsecs(0);
        let r = c
            .post(format!(
                "{url}/v1.0/users/alice@contoso.com/revokeSignInSessions"
            ))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["value"], true);
        assert!(
            v["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("$metadata#Edm.Boolean")
        );
        let v: Value = c
            .get(format!("{url}{sel}"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ts = v["signInSessionsValidFromDateTime"].as_str().unwrap();
        assert!(ts.ends_with('Z'));
        let ts = DateTime::parse_from_rfc3339(ts)
            .unwrap()
            .with_timezone(&Utc);
        assert!(ts >= before, "{ts} < {before}");
        assert_eq!(
            e.effects
                .count("revoke:11111111-2222-3333-4444-555555555555"),
            1
        );

        // By object id too, and the documented 204 variant.
        e.revoke_returns_no_content(true);
        let r = c
            .post(format!(
                "{url}/v1.0/users/11111111-2222-3333-4444-555555555555/revokeSignInSessions"
            ))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        assert_eq!(e.revocations("alice@contoso.com"), 2);
    }

    #[tokio::test]
    async fn unknown_user_wrong_audience_and_bad_secret() {
        let e = FakeEntra::start("tid", "app", "s3cret").await;
        let c = reqwest::Client::new();
        let url = e.url();
        let tok = access_token(
            &token(&c, &url, "https://graph.microsoft.com/.default")
                .await
                .1,
        );
        let r = c
            .post(format!(
                "{url}/v1.0/users/nobody@contoso.com/revokeSignInSessions"
            ))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "Request_ResourceNotFound"
        );

        let mde = token(
            &c,
            &url,
            "https://api.securitycenter.microsoft.com/.default",
        )
        .await;
        let mde = access_token(&mde.1);
        let r = c
            .get(format!("{url}/v1.0/users/x"))
            .bearer_auth(&mde)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "InvalidAuthenticationToken"
        );

        e.fail_auth(true);
        let (st, v) = token(&c, &url, "https://graph.microsoft.com/.default").await;
        assert_eq!(st, 401);
        assert_eq!(v["error"], "invalid_client");
        let (st, _) = token(&c, &url, "https://graph.microsoft.com").await;
        assert_eq!(st, 401, "secret is checked before scope");
        e.fail_auth(false);
        let (st, v) = token(&c, &url, "https://graph.microsoft.com").await;
        assert_eq!(st, 400);
        assert_eq!(v["error"], "invalid_scope");
        assert_eq!(e.effects.total(), 0);
    }
}
