//! Fake generic cloud-containment automation (Bearer token): `POST /v1/contain` and
//! `POST /v1/release`, idempotent by the `Idempotency-Key` header (a repeated key replays the
//! first answer with `Idempotent-Replayed: true` and no new effect; the same key on a different
//! request is `422`; a missing key is `400`), a no-op `changed:false` answer when the resource is
//! already in the target state, and `GET /v1/resources/{id}`. Answers carry `X-Request-Id`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::{
    Effects, FakeServer, Faults, Req, RequestLog, default_header, json_response, lock, uuidish,
};
use crate::support::auth::{AuthMode, Refusal};

pub const RUNNING: &str = "running";
pub const CONTAINED: &str = "contained";

struct Stored {
    fingerprint: String,
    status: u16,
    body: Value,
}

#[derive(Default)]
struct WState {
    mode: AuthMode,
    resources: BTreeMap<String, String>,
    keys: HashMap<String, Stored>,
}

struct Inner {
    token: String,
    st: Mutex<WState>,
    effects: Effects,
}

/// A stateful fake containment webhook. Effect keys: `contain:<id>`, `release:<id>`.
pub struct FakeWebhook {
    pub server: FakeServer,
    pub effects: Effects,
    inner: Arc<Inner>,
}

impl FakeWebhook {
    pub async fn start(bearer_token: &str) -> FakeWebhook {
        let effects = Effects::default();
        let inner = Arc::new(Inner {
            token: bearer_token.into(),
            st: Mutex::new(WState::default()),
            effects: effects.clone(),
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let server = FakeServer::start_decorated(
            router,
            Arc::new(|r: &mut Response| {
                default_header(
                    r,
                    "x-request-id",
                    &format!("req_{}", uuidish().replace('-', "")),
                );
            }),
        )
        .await;
        FakeWebhook {
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

    /// Adds a resource in state `running`.
    pub fn add_resource(&self, id: &str) {
        lock(&self.inner.st)
            .resources
            .insert(id.into(), RUNNING.into());
    }
    /// `running` or `contained`; panics for an unknown id.
    pub fn state(&self, id: &str) -> String {
        lock(&self.inner.st)
            .resources
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("unknown resource {id}"))
    }
    pub fn set_state(&self, id: &str, state: &str) {
        lock(&self.inner.st)
            .resources
            .insert(id.into(), state.into());
    }
    /// How many distinct idempotency keys were stored.
    pub fn keys_seen(&self) -> usize {
        lock(&self.inner.st).keys.len()
    }
    /// When on, every call answers 401.
    pub fn fail_auth(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Unauthorized);
    }
    /// When on, every call answers 403.
    pub fn forbid(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Forbidden);
    }
}

fn werr(status: u16, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": code, "message": message}))
}

async fn handle(State(f): State<Arc<Inner>>, req: Request) -> Response {
    let r = Req::read(req).await;
    f.handle(r)
}

impl Inner {
    fn handle(&self, r: Req) -> Response {
        let mut st = lock(&self.st);
        match st.mode.check(r.bearer() == Some(self.token.as_str())) {
            Err(Refusal::Unauthorized) => {
                return werr(401, "unauthorized", "missing or invalid bearer token");
            }
            Err(Refusal::Forbidden) => {
                return werr(403, "forbidden", "token lacks the containment scope");
            }
            Ok(()) => {}
        }
        let segs = r.segs();
        match (r.method.as_str(), segs.as_slice()) {
            ("GET", ["v1", "resources", id]) => match st.resources.get(*id) {
                Some(s) => json_response(200, json!({"id": id, "state": s})),
                None => werr(404, "not_found", &format!("resource {id} not found")),
            },
            ("POST", ["v1", verb @ ("contain" | "release")]) => self.act(&mut st, &r, verb),
            _ => werr(
                404,
                "not_found",
                &format!("no route for {} {}", r.method, r.path),
            ),
        }
    }

    fn act(&self, st: &mut WState, r: &Req, verb: &str) -> Response {
        let Some(key) = r
            .header("idempotency-key")
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(String::from)
        else {
            return werr(
                400,
                "missing_idempotency_key",
                "the Idempotency-Key header is required",
            );
        };
        let Some(body) = r.json().filter(Value::is_object) else {
            return werr(400, "invalid_body", "the body must be a JSON object");
        };
        let Some(id) = body["resource_id"].as_str().map(String::from) else {
            return werr(400, "invalid_body", "resource_id is required");
        };
        let fingerprint = format!("{verb} {body}");
        if let Some(prev) = st.keys.get(&key) {
            if prev.fingerprint != fingerprint {
                return werr(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                );
            }
            let mut resp = json_response(prev.status, prev.body.clone());
            default_header(&mut resp, "idempotent-replayed", "true");
            return resp;
        }
        let (status, answer) = match st.resources.get_mut(&id) {
            None => (
                404,
                json!({"error": "not_found", "message": format!("resource {id} not found")}),
            ),
            Some(state) => {
                let target = if verb == "contain" {
                    CONTAINED
                } else {
                    RUNNING
                };
                let changed = state != target;
                if changed {
                    *state = target.into();
                    self.effects.effect(format!("{verb}:{id}"));
                }
                (
                    200,
                    json!({"state": target, "changed": changed, "request_id": format!("act_{}", uuidish())}),
                )
            }
        };
        st.keys.insert(
            key,
            Stored {
                fingerprint,
                status,
                body: answer.clone(),
            },
        );
        json_response(status, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Fault, FaultKind};
    use super::*;

    #[tokio::test]
    async fn idempotency_key_replays_and_state_noop() {
        let w = FakeWebhook::start("tok").await;
        w.add_resource("i-1");
        let c = reqwest::Client::new();
        let url = w.url();
        let send = |path: &str, key: Option<&str>, id: &str| {
            let mut rb = c
                .post(format!("{url}{path}"))
                .bearer_auth("tok")
                .json(&json!({"resource_id": id, "reason": "cordon"}));
            if let Some(k) = key {
                rb = rb.header("Idempotency-Key", k);
            }
            rb.send()
        };
        let r = send("/v1/contain", None, "i-1").await.unwrap();
        assert_eq!(r.status().as_u16(), 400);

        // The first attempt's answer is lost, but the effect happened; the retry with the same key
        // replays it.
        w.faults()
            .arm(Fault::on("POST", "/v1/contain", FaultKind::DropAfterEffect));
        assert!(send("/v1/contain", Some("k1"), "i-1").await.is_err());
        assert_eq!(w.state("i-1"), CONTAINED);
        let r = send("/v1/contain", Some("k1"), "i-1").await.unwrap();
        assert_eq!(r.headers()["idempotent-replayed"], "true");
        assert!(r.headers().contains_key("x-request-id"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (v["state"].as_str(), v["changed"].as_bool()),
            (Some("contained"), Some(true))
        );
        assert_eq!(w.effects.count("contain:i-1"), 1);

        // A new key on a contained resource: no change.
        let v: Value = send("/v1/contain", Some("k2"), "i-1")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (v["state"].as_str(), v["changed"].as_bool()),
            (Some("contained"), Some(false))
        );
        // Same key, different request.
        let r = send("/v1/release", Some("k2"), "i-1").await.unwrap();
        assert_eq!(r.status().as_u16(), 422);
        assert_eq!(w.effects.count("contain:i-1"), 1);

        let v: Value = send("/v1/release", Some("k3"), "i-1")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["changed"], true);
        let v: Value = c
            .get(format!("{url}/v1/resources/i-1"))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v, json!({"id": "i-1", "state": "running"}));
        let r = c
            .get(format!("{url}/v1/resources/i-404"))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        let r = c
            .get(format!("{url}/v1/resources/i-1"))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(
            w.effects.snapshot(),
            [("contain:i-1".to_owned(), 1), ("release:i-1".to_owned(), 1)]
                .into_iter()
                .collect()
        );
    }
}
