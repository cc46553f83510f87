//! Fake CrowdStrike Falcon API: OAuth2 client-credentials tokens, host search and details, host
//! containment (`contain` / `lift_containment`, async `*_pending` states, the per-host 409
//! "already in desired state" answer) and IOC Management custom indicators (create with the
//! duplicate type+value rejection, FQL search, update, delete). Every answer carries
//! `X-Cs-Traceid` and the `X-Ratelimit-*` headers and uses the Falcon `{meta, resources, errors}`
//! envelope.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use chrono::Utc;
use regex::Regex;
use serde_json::{Value, json};

use super::{
    Effects, FakeServer, Faults, Req, RequestLog, default_header, json_response, lock, rand_hex,
    rfc3339_ms, uuidish,
};
use crate::support::auth::{AuthMode, Refusal, Tokens};

pub const CONTAIN: &str = "contain";
pub const LIFT: &str = "lift_containment";

const IOC_TYPES: &[&str] = &["sha256", "md5", "domain", "ipv4", "ipv6"];
const IOC_ACTIONS: &[&str] = &["no_action", "allow", "prevent_no_ui", "detect", "prevent"];

struct Host {
    hostname: String,
    status: String,
    /// GETs of the device entity seen while in the current pending state.
    polls: usize,
}

#[derive(Default)]
struct CsState {
    tokens: Tokens,
    mode: AuthMode,
    hosts: BTreeMap<String, Host>,
    pending_polls: usize,
    iocs: Vec<Value>,
}

struct Inner {
    client_id: String,
    client_secret: String,
    st: Mutex<CsState>,
    effects: Effects,
}

/// A stateful fake of the Falcon API. Effect keys: `contain:<aid>`, `lift:<aid>`,
/// `ioc_create:<type>:<value>`, `ioc_update:<type>:<value>`, `ioc_delete:<type>:<value>`.
pub struct FakeCrowdStrike {
    pub server: FakeServer,
    pub effects: Effects,
    inner: Arc<Inner>,
}

impl FakeCrowdStrike {
    pub async fn start(client_id: &str, client_secret: &str) -> FakeCrowdStrike {
        let effects = Effects::default();
        let inner = Arc::new(Inner {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            st: Mutex::new(CsState {
                pending_polls: 1,
                ..CsState::default()
            }),
            effects: effects.clone(),
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let remaining = Arc::new(AtomicU64::new(6000));
        let server = FakeServer::start_decorated(
            router,
            Arc::new(move |r: &mut Response| {
                let left = remaining.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
                default_header(r, "x-cs-traceid", &uuidish());
                default_header(r, "x-ratelimit-limit", "6000");
                let left = if r.status().as_u16() == 429 { 0 } else { left };
                default_header(r, "x-ratelimit-remaining", &left.to_string());
            }),
        )
        .await;
        FakeCrowdStrike {
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

    /// Registers a host (status `normal`).
    pub fn add_host(&self, hostname: &str, aid: &str) {
        lock(&self.inner.st).hosts.insert(
            aid.into(),
            Host {
                hostname: hostname.into(),
                status: "normal".into(),
                polls: 0,
            },
        );
    }
    /// The host's current status (`normal`, `containment_pending`, `contained`,
    /// `lift_containment_pending`); panics for an unknown aid.
    pub fn host_status(&self, aid: &str) -> String {
        lock(&self.inner.st)
            .hosts
            .get(aid)
            .unwrap_or_else(|| panic!("unknown aid {aid}"))
            .status
            .clone()
    }
    /// Forces a host's status (e.g. start out `contained`, or stuck `containment_pending`).
    pub fn set_host_status(&self, aid: &str, status: &str) {
        let mut st = lock(&self.inner.st);
        let h = st
            .hosts
            .get_mut(aid)
            .unwrap_or_else(|| panic!("unknown aid {aid}"));
        h.status = status.into();
        h.polls = 0;
    }
    /// How many device-entity GETs a pending state survives before it completes (default 1: the
    /// first GET after the action still shows `*_pending`, the next shows the final state).
    /// `usize::MAX` models an offline sensor that never checks in.
    pub fn set_pending_polls(&self, n: usize) {
        lock(&self.inner.st).pending_polls = n;
    }
    /// All IOCs, as the API would return them.
    pub fn iocs(&self) -> Vec<Value> {
        lock(&self.inner.st).iocs.clone()
    }
    /// Seeds an IOC (no effect counted); returns its id.
    pub fn seed_ioc(&self, ioc_type: &str, value: &str, action: &str) -> String {
        let id = rand_hex(64);
        let now = rfc3339_ms(Utc::now());
        lock(&self.inner.st).iocs.push(json!({
            "id": id, "type": ioc_type, "value": value, "action": action, "severity": "high",
            "platforms": ["windows", "mac", "linux"], "applied_globally": true, "source": "seed",
            "description": "", "tags": [], "created_on": now, "modified_on": now,
            "created_by": "seed", "modified_by": "seed", "deleted": false, "expired": false,
        }));
        id
    }
    pub fn tokens_issued(&self) -> usize {
        lock(&self.inner.st).tokens.issued
    }
    /// Invalidates every issued token (the next API call answers 401).
    pub fn expire_tokens(&self) {
        lock(&self.inner.st).tokens.expire_all();
    }
    /// When on, the token endpoint and every API call answer 401.
    pub fn fail_auth(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Unauthorized);
    }
    /// When on, tokens are issued but every API call answers 403 (missing API scope).
    pub fn forbid(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Forbidden);
    }
}

/// Answers in the Falcon envelope, with a matching `X-Cs-Traceid`.
struct Ctx {
    trace: String,
}

impl Ctx {
    fn body(&self, resources: Value, errors: Value, extra_meta: Option<Value>) -> Value {
        let mut meta =
            json!({"query_time": 0.004, "powered_by": "fake-falcon", "trace_id": self.trace});
        if let Some(Value::Object(m)) = extra_meta {
            meta.as_object_mut().expect("object").extend(m);
        }
        json!({"meta": meta, "resources": resources, "errors": errors})
    }
    fn reply(&self, status: u16, body: Value) -> Response {
        let mut r = json_response(status, body);
        default_header(&mut r, "x-cs-traceid", &self.trace);
        r
    }
    fn ok(&self, status: u16, resources: Value) -> Response {
        self.reply(status, self.body(resources, json!([]), None))
    }
    fn err(&self, status: u16, message: &str) -> Response {
        self.reply(
            status,
            self.body(
                json!([]),
                json!([{"code": status, "message": message}]),
                None,
            ),
        )
    }
    fn paged(&self, resources: Vec<Value>) -> Response {
        let total = resources.len();
        let meta = json!({"pagination": {"offset": 0, "limit": 100, "total": total}});
        self.reply(
            200,
            self.body(Value::Array(resources), json!([]), Some(meta)),
        )
    }
}

/// Extracts `field:'value'` clauses from an FQL filter. Clauses may be joined by '+' (literal,
/// `%2B`, or a '+' that form-decoding turned into a space). Returns None for an unusable filter.
fn fql(filter: &str) -> Option<Vec<(String, String)>> {
    let re = Regex::new(r#"([A-Za-z_][\w.]*)\s*:\s*(?:'([^']*)'|"([^"]*)")"#).expect("regex");
    let clauses: Vec<(String, String)> = re
        .captures_iter(filter)
        .map(|c| {
            let v = c
                .get(2)
                .or_else(|| c.get(3))
                .map(|m| m.as_str())
                .unwrap_or("");
            (c[1].to_owned(), v.to_owned())
        })
        .collect();
    let leftover = re.replace_all(filter, "");
    let junk = leftover
        .chars()
        .any(|ch| !(ch == '+' || ch.is_whitespace()));
    (!clauses.is_empty() && !junk).then_some(clauses)
}

/// FQL string comparison as Falcon does it: case-insensitive, `*` matches any run of
/// characters (so `hostname:'*'` matches every device).
fn fql_eq(s: &str, want: &str) -> bool {
    if !want.contains('*') {
        return s.eq_ignore_ascii_case(want);
    }
    let pattern = format!(
        "(?i)^{}$",
        want.split('*')
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(".*")
    );
    Regex::new(&pattern).is_ok_and(|re| re.is_match(s))
}

fn field_matches(obj: &Value, field: &str, want: &str) -> bool {
    match obj.get(field) {
        Some(Value::String(s)) => fql_eq(s, want),
        Some(Value::Array(a)) => a
            .iter()
            .any(|x| x.as_str().is_some_and(|s| fql_eq(s, want))),
        Some(Value::Bool(b)) => b.to_string() == want,
        Some(Value::Number(n)) => n.to_string() == want,
        _ => false,
    }
}

/// `ids` from the query: repeated and/or comma-separated.
fn query_ids(r: &Req) -> Vec<String> {
    r.query
        .all("ids")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

async fn handle(State(f): State<Arc<Inner>>, req: Request) -> Response {
    let r = Req::read(req).await;
    f.handle(r)
}

impl Inner {
    fn handle(&self, r: Req) -> Response {
        let cx = Ctx { trace: uuidish() };
        let mut st = lock(&self.st);
        let segs = r.segs();
        if r.method == "POST" && segs == ["oauth2", "token"] {
            return self.token(&mut st, &cx, &r);
        }
        match st.mode.check(st.tokens.is_valid(r.bearer())) {
            Err(Refusal::Unauthorized) => {
                return cx.err(401, "access denied, invalid bearer token");
            }
            Err(Refusal::Forbidden) => return cx.err(403, "access denied, authorization failed"),
            Ok(()) => {}
        }
        match (r.method.as_str(), segs.as_slice()) {
            ("GET", ["devices", "queries", "devices", "v1"]) => query_devices(&st, &cx, &r),
            ("GET", ["devices", "entities", "devices", "v2"]) => {
                let ids = query_ids(&r);
                get_devices(&mut st, &cx, ids)
            }
            ("POST", ["devices", "entities", "devices", "v2"]) => {
                let ids = body_ids(&r);
                get_devices(&mut st, &cx, ids)
            }
            ("POST", ["devices", "entities", "devices-actions", "v2"]) => {
                self.device_action(&mut st, &cx, &r)
            }
            ("POST", ["iocs", "entities", "indicators", "v1"]) => self.ioc_create(&mut st, &cx, &r),
            ("PATCH", ["iocs", "entities", "indicators", "v1"]) => {
                self.ioc_update(&mut st, &cx, &r)
            }
            ("DELETE", ["iocs", "entities", "indicators", "v1"]) => {
                self.ioc_delete(&mut st, &cx, &r)
            }
            ("GET", ["iocs", "entities", "indicators", "v1"]) => {
                let ids = query_ids(&r);
                let found: Vec<Value> = st
                    .iocs
                    .iter()
                    .filter(|i| ids.iter().any(|id| i["id"] == id.as_str()))
                    .cloned()
                    .collect();
                if found.is_empty() && !ids.is_empty() {
                    return cx.err(
                        404,
                        &format!("Could not find indicators: {}", ids.join(",")),
                    );
                }
                cx.ok(200, Value::Array(found))
            }
            ("GET", ["iocs", "combined", "indicator", "v1"]) => match search_iocs(&st, &r) {
                Ok(found) => cx.paged(found),
                Err(e) => cx.err(400, &e),
            },
            ("GET", ["iocs", "queries", "indicators", "v1"]) => match search_iocs(&st, &r) {
                Ok(found) => cx.paged(found.into_iter().map(|i| i["id"].clone()).collect()),
                Err(e) => cx.err(400, &e),
            },
            _ => cx.err(404, "Not Found"),
        }
    }

    fn token(&self, st: &mut CsState, cx: &Ctx, r: &Req) -> Response {
        let form = r.form();
        let good = form.get("client_id") == Some(self.client_id.as_str())
            && form.get("client_secret") == Some(self.client_secret.as_str());
        if st.mode.check(good) == Err(Refusal::Unauthorized) {
            return cx.err(401, "access denied, invalid bearer token");
        }
        let token = st.tokens.issue("", "falcon");
        cx.reply(
            201,
            json!({"access_token": token, "token_type": "bearer", "expires_in": 1799}),
        )
    }

    fn device_action(&self, st: &mut CsState, cx: &Ctx, r: &Req) -> Response {
        let action = r.query.get("action_name").unwrap_or("");
        let (pending, done, effect) = match action {
            CONTAIN => ("containment_pending", "contained", "contain"),
            LIFT => ("lift_containment_pending", "normal", "lift"),
            "" => return cx.err(400, "action_name is required"),
            "hide_host"
            | "unhide_host"
            | "detection_suppress"
            | "detection_unsuppress"
            | "lift_filesystem_containment_all" => {
                return cx.err(
                    400,
                    &format!("action_name '{action}' is not modelled by the fake"),
                );
            }
            other => return cx.err(400, &format!("invalid action_name '{other}'")),
        };
        let ids = body_ids(r);
        if ids.is_empty() {
            return cx.err(400, "ids is required in the request body");
        }
        let mut resources = vec![];
        let mut errors = vec![];
        for aid in ids {
            match st.hosts.get_mut(&aid) {
                None => errors.push(json!({"code": 404, "message": format!("No matching device found for ID {aid}")})),
                Some(h) if h.status == pending || h.status == done => {
                    errors.push(json!({"code": 409, "message": format!("Host {aid} already in desired state")}))
                }
                Some(h) => {
                    h.status = pending.into();
                    h.polls = 0;
                    self.effects.effect(format!("{effect}:{aid}"));
                    resources.push(json!({"id": aid, "path": format!("/devices/entities/devices/v2?ids={aid}")}));
                }
            }
        }
        let status = if !resources.is_empty() {
            202
        } else {
            errors
                .first()
                .and_then(|e| e["code"].as_u64())
                .unwrap_or(400) as u16
        };
        cx.reply(
            status,
            cx.body(Value::Array(resources), Value::Array(errors), None),
        )
    }

    fn ioc_create(&self, st: &mut CsState, cx: &Ctx, r: &Req) -> Response {
        let Some(body) = r.json() else {
            return cx.err(400, "invalid JSON body");
        };
        let Some(inds) = body.get("indicators").and_then(Value::as_array) else {
            return cx.err(400, "indicators is required");
        };
        if inds.is_empty() {
            return cx.err(400, "indicators is required");
        }
        let mut resources = vec![];
        let mut errors = vec![];
        for ind in inds {
            let t = ind.get("type").and_then(Value::as_str).unwrap_or("");
            let v = ind.get("value").and_then(Value::as_str).unwrap_or("");
            let a = ind.get("action").and_then(Value::as_str).unwrap_or("");
            if !IOC_TYPES.contains(&t) {
                errors.push(json!({"code": 400, "message": format!("Invalid type: '{t}'")}));
                continue;
            }
            if v.is_empty() {
                errors.push(json!({"code": 400, "message": "value is required"}));
                continue;
            }
            if !IOC_ACTIONS.contains(&a) {
                errors.push(json!({"code": 400, "message": format!("Invalid action: '{a}'")}));
                continue;
            }
            if st.iocs.iter().any(|i| {
                i["type"] == t
                    && i["value"]
                        .as_str()
                        .is_some_and(|x| x.eq_ignore_ascii_case(v))
            }) {
                errors.push(json!({"code": 400, "message": format!("Duplicate type: '{t}' and value: '{v}' combination.")}));
                continue;
            }
            let now = rfc3339_ms(Utc::now());
            let mut ioc = ind.clone();
            let o = ioc.as_object_mut().expect("indicator object");
            o.insert("id".into(), json!(rand_hex(64)));
            for (k, d) in [
                ("tags", json!([])),
                ("platforms", json!([])),
                ("applied_globally", json!(false)),
            ] {
                o.entry(k).or_insert(d);
            }
            let who = format!("api-client-id:{}", self.client_id);
            o.insert("created_on".into(), json!(now));
            o.insert("modified_on".into(), json!(now));
            o.insert("created_by".into(), json!(who));
            o.insert("modified_by".into(), json!(who));
            o.insert("deleted".into(), json!(false));
            o.insert("expired".into(), json!(false));
            st.iocs.push(ioc.clone());
            self.effects.effect(format!("ioc_create:{t}:{v}"));
            resources.push(ioc);
        }
        let status = if resources.is_empty() { 400 } else { 201 };
        cx.reply(
            status,
            cx.body(Value::Array(resources), Value::Array(errors), None),
        )
    }

    fn ioc_update(&self, st: &mut CsState, cx: &Ctx, r: &Req) -> Response {
        let Some(inds) = r
            .json()
            .and_then(|b| b.get("indicators").and_then(Value::as_array).cloned())
        else {
            return cx.err(400, "indicators is required");
        };
        let mut resources = vec![];
        let mut errors = vec![];
        for ind in inds {
            let id = ind.get("id").and_then(Value::as_str).unwrap_or("");
            let Some(ioc) = st.iocs.iter_mut().find(|i| i["id"] == id) else {
                errors.push(
                    json!({"code": 404, "message": format!("Could not find indicator: {id}")}),
                );
                continue;
            };
            if let Some(a) = ind.get("action").and_then(Value::as_str)
                && !IOC_ACTIONS.contains(&a)
            {
                errors.push(json!({"code": 400, "message": format!("Invalid action: '{a}'")}));
                continue;
            }
            let o = ioc.as_object_mut().expect("object");
            for (k, v) in ind.as_object().into_iter().flatten() {
                if !matches!(k.as_str(), "id" | "type" | "value") {
                    o.insert(k.clone(), v.clone());
                }
            }
            o.insert("modified_on".into(), json!(rfc3339_ms(Utc::now())));
            self.effects.effect(format!(
                "ioc_update:{}:{}",
                ioc["type"].as_str().unwrap_or(""),
                ioc["value"].as_str().unwrap_or("")
            ));
            resources.push(ioc.clone());
        }
        let status = if resources.is_empty() {
            errors
                .first()
                .and_then(|e| e["code"].as_u64())
                .unwrap_or(400) as u16
        } else {
            200
        };
        cx.reply(
            status,
            cx.body(Value::Array(resources), Value::Array(errors), None),
        )
    }

    fn ioc_delete(&self, st: &mut CsState, cx: &Ctx, r: &Req) -> Response {
        let ids = query_ids(r);
        if ids.is_empty() {
            return cx.err(400, "ids is required");
        }
        let mut resources = vec![];
        let mut errors = vec![];
        for id in ids {
            match st.iocs.iter().position(|i| i["id"] == id.as_str()) {
                Some(pos) => {
                    let ioc = st.iocs.remove(pos);
                    self.effects.effect(format!(
                        "ioc_delete:{}:{}",
                        ioc["type"].as_str().unwrap_or(""),
                        ioc["value"].as_str().unwrap_or("")
                    ));
                    resources.push(json!(id));
                }
                None => errors.push(
                    json!({"code": 404, "message": format!("Could not find indicator: {id}")}),
                ),
            }
        }
        let status = if resources.is_empty() { 404 } else { 200 };
        cx.reply(
            status,
            cx.body(Value::Array(resources), Value::Array(errors), None),
        )
    }
}

fn search_iocs(st: &CsState, r: &Req) -> Result<Vec<Value>, String> {
    let clauses = match r.query.get("filter") {
        None | Some("") => vec![],
        Some(f) => fql(f).ok_or_else(|| format!("Invalid filter: {f}"))?,
    };
    Ok(st
        .iocs
        .iter()
        .filter(|i| clauses.iter().all(|(k, v)| field_matches(i, k, v)))
        .cloned()
        .collect())
}

fn body_ids(r: &Req) -> Vec<String> {
    r.json()
        .and_then(|b| b.get("ids").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

fn device_json(aid: &str, h: &Host) -> Value {
    json!({
        "device_id": aid, "cid": "0123456789abcdef0123456789abcdef", "hostname": h.hostname,
        "status": h.status, "platform_name": "Windows", "product_type_desc": "Workstation",
        "last_seen": rfc3339_ms(Utc::now()),
    })
}

fn query_devices(st: &CsState, cx: &Ctx, r: &Req) -> Response {
    let clauses = match r.query.get("filter") {
        None | Some("") => vec![],
        Some(f) => match fql(f) {
            Some(c) => c,
            None => return cx.err(400, &format!("Invalid filter: {f}")),
        },
    };
    let ids = st
        .hosts
        .iter()
        .filter(|(aid, h)| {
            let dev = device_json(aid, h);
            clauses.iter().all(|(k, v)| field_matches(&dev, k, v))
        })
        .map(|(aid, _)| json!(aid))
        .collect();
    cx.paged(ids)
}

fn get_devices(st: &mut CsState, cx: &Ctx, ids: Vec<String>) -> Response {
    if ids.is_empty() {
        return cx.err(400, "ids is required");
    }
    let polls_needed = st.pending_polls;
    let mut resources = vec![];
    let mut errors = vec![];
    for aid in ids {
        let Some(h) = st.hosts.get_mut(&aid) else {
            errors.push(
                json!({"code": 404, "message": format!("No matching device found for ID {aid}")}),
            );
            continue;
        };
        let target = match h.status.as_str() {
            "containment_pending" => Some("contained"),
            "lift_containment_pending" => Some("normal"),
            _ => None,
        };
        if let Some(t) = target {
            if h.polls >= polls_needed {
                h.status = t.into();
                h.polls = 0;
            } else {
                h.polls += 1;
            }
        }
        resources.push(device_json(&aid, h));
    }
    let status = if resources.is_empty() { 404 } else { 200 };
    cx.reply(
        status,
        cx.body(Value::Array(resources), Value::Array(errors), None),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Fault, FaultKind, enc};
    use super::*;
    use crate::support::auth::{access_token, request_token};

    async fn token(c: &reqwest::Client, url: &str) -> String {
        let form = [("client_id", "cid"), ("client_secret", "sek/ret")];
        let (st, v) = request_token(c, &format!("{url}/oauth2/token"), &form).await;
        assert_eq!(st, 201);
        assert_eq!(v["token_type"], "bearer");
        assert_eq!(v["expires_in"], 1799);
        access_token(&v)
    }

    async fn call(
        c: &reqwest::Client,
        m: reqwest::Method,
        url: String,
        tok: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = c.request(m, url).bearer_auth(tok);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        assert!(r.headers().contains_key("x-cs-traceid"));
        assert_eq!(r.headers()["x-ratelimit-limit"], "6000");
        let st = r.status().as_u16();
        (st, r.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn contain_is_async_and_a_repeat_is_409_without_effect() {
        let cs = FakeCrowdStrike::start("cid", "sek/ret").await;
        cs.add_host("web-01", "aid1");
        let c = reqwest::Client::new();
        let url = cs.url();

        // Bad credentials and missing token.
        let form = [("client_id", "cid"), ("client_secret", "nope")];
        let (st, v) = request_token(&c, &format!("{url}/oauth2/token"), &form).await;
        assert_eq!(st, 401);
        assert_eq!(
            v["errors"][0]["message"],
            "access denied, invalid bearer token"
        );
        let (st, _) = call(
            &c,
            reqwest::Method::GET,
            format!("{url}/devices/queries/devices/v1"),
            "bogus",
            None,
        )
        .await;
        assert_eq!(st, 401);

        let tok = token(&c, &url).await;
        assert_eq!(cs.tokens_issued(), 1);
        let q = enc("hostname:'web-01'");
        let (st, v) = call(
            &c,
            reqwest::Method::GET,
            format!("{url}/devices/queries/devices/v1?filter={q}"),
            &tok,
            None,
        )
        .await;
        assert_eq!((st, v["resources"].clone()), (200, json!(["aid1"])));
        let q = enc("hostname:'nope'");
        let (_, v) = call(
            &c,
            reqwest::Method::GET,
            format!("{url}/devices/queries/devices/v1?filter={q}"),
            &tok,
            None,
        )
        .await;
        assert_eq!(v["resources"], json!([]));

        let act = |a: &str| format!("{url}/devices/entities/devices-actions/v2?action_name={a}");
        let (st, v) = call(
            &c,
            reqwest::Method::POST,
            act("contain"),
            &tok,
            Some(json!({"ids": ["aid1"]})),
        )
        .await;
        assert_eq!(st, 202);
        assert_eq!(v["resources"][0]["id"], "aid1");
        assert_eq!(cs.host_status("aid1"), "containment_pending");

        // A repeat while pending: 409 in errors[], no second effect.
        let (st, v) = call(
            &c,
            reqwest::Method::POST,
            act("contain"),
            &tok,
            Some(json!({"ids": ["aid1"]})),
        )
        .await;
        assert_eq!(st, 409);
        assert_eq!(v["errors"][0]["code"], 409);
        assert_eq!(
            v["errors"][0]["message"],
            "Host aid1 already in desired state"
        );
        assert_eq!(cs.effects.count("contain:aid1"), 1);

        // Pending survives one poll, then completes.
        let dev = format!("{url}/devices/entities/devices/v2?ids=aid1");
        let (_, v) = call(&c, reqwest::Method::GET, dev.clone(), &tok, None).await;
        assert_eq!(v["resources"][0]["status"], "containment_pending");
        let (_, v) = call(&c, reqwest::Method::GET, dev.clone(), &tok, None).await;
        assert_eq!(v["resources"][0]["status"], "contained");

        // Contained: still 409; unknown host 404.
        let (st, _) = call(
            &c,
            reqwest::Method::POST,
            act("contain"),
            &tok,
            Some(json!({"ids": ["aid1"]})),
        )
        .await;
        assert_eq!(st, 409);
        let (st, v) = call(
            &c,
            reqwest::Method::POST,
            act("contain"),
            &tok,
            Some(json!({"ids": ["zzz"]})),
        )
        .await;
        assert_eq!((st, v["errors"][0]["code"].clone()), (404, json!(404)));
        assert_eq!(cs.effects.count("contain:aid1"), 1);

        // Lift, and lift again.
        let (st, _) = call(
            &c,
            reqwest::Method::POST,
            act("lift_containment"),
            &tok,
            Some(json!({"ids": ["aid1"]})),
        )
        .await;
        assert_eq!(st, 202);
        let (st, _) = call(
            &c,
            reqwest::Method::POST,
            act("lift_containment"),
            &tok,
            Some(json!({"ids": ["aid1"]})),
        )
        .await;
        assert_eq!(st, 409);
        assert_eq!(cs.host_status("aid1"), "lift_containment_pending");
        assert_eq!(cs.effects.count("lift:aid1"), 1);
        assert_eq!(cs.effects.total(), 2);

        // Expired token: 401, a new one works.
        cs.expire_tokens();
        let (st, _) = call(&c, reqwest::Method::GET, dev.clone(), &tok, None).await;
        assert_eq!(st, 401);
        let tok = token(&c, &url).await;
        let (st, _) = call(&c, reqwest::Method::GET, dev, &tok, None).await;
        assert_eq!(st, 200);
        assert_eq!(cs.tokens_issued(), 2);
    }

    #[tokio::test]
    async fn ioc_duplicate_is_400_and_search_accepts_all_separators() {
        let cs = FakeCrowdStrike::start("cid", "sek/ret").await;
        let c = reqwest::Client::new();
        let url = cs.url();
        let tok = token(&c, &url).await;
        let ioc = json!({"comment": "SOAR run 1", "indicators": [{
            "type": "ipv4", "value": "198.51.100.7", "action": "prevent", "severity": "high",
            "platforms": ["windows", "mac", "linux"], "applied_globally": true,
            "expiration": "2030-01-31T00:00:00Z", "source": "cordon", "description": "idem:k1", "tags": ["soar"]}]});
        let ep = format!("{url}/iocs/entities/indicators/v1");
        let (st, v) = call(
            &c,
            reqwest::Method::POST,
            ep.clone(),
            &tok,
            Some(ioc.clone()),
        )
        .await;
        assert_eq!(st, 201);
        let id = v["resources"][0]["id"].as_str().unwrap().to_owned();
        assert_eq!(v["resources"][0]["description"], "idem:k1");
        let (st, v) = call(&c, reqwest::Method::POST, ep.clone(), &tok, Some(ioc)).await;
        assert_eq!(st, 400);
        assert_eq!(
            v["errors"][0]["message"],
            "Duplicate type: 'ipv4' and value: '198.51.100.7' combination."
        );
        assert_eq!(cs.effects.count("ioc_create:ipv4:198.51.100.7"), 1);

        for q in [
            "type:'ipv4'+value:'198.51.100.7'".to_owned(),
            "type:'ipv4'%2Bvalue:'198.51.100.7'".to_owned(),
            "type:'ipv4'%20value:'198.51.100.7'".to_owned(),
            enc("type:'ipv4'+value:'198.51.100.7'"),
        ] {
            let (st, v) = call(
                &c,
                reqwest::Method::GET,
                format!("{url}/iocs/combined/indicator/v1?filter={q}"),
                &tok,
                None,
            )
            .await;
            assert_eq!(st, 200, "{q}");
            assert_eq!(v["resources"].as_array().unwrap().len(), 1, "{q}");
            assert_eq!(v["resources"][0]["id"], id.as_str());
        }
        let q = enc("type:'ipv4'+value:'203.0.113.1'");
        let (_, v) = call(
            &c,
            reqwest::Method::GET,
            format!("{url}/iocs/combined/indicator/v1?filter={q}"),
            &tok,
            None,
        )
        .await;
        assert_eq!(v["resources"], json!([]));

        let (st, v) = call(
            &c,
            reqwest::Method::DELETE,
            format!("{ep}?ids={id}"),
            &tok,
            None,
        )
        .await;
        assert_eq!((st, v["resources"].clone()), (200, json!([id])));
        let (st, _) = call(
            &c,
            reqwest::Method::DELETE,
            format!("{ep}?ids={id}"),
            &tok,
            None,
        )
        .await;
        assert_eq!(st, 404);
        assert_eq!(cs.effects.count("ioc_delete:ipv4:198.51.100.7"), 1);
        assert!(cs.iocs().is_empty());
    }

    #[tokio::test]
    async fn rate_limit_fault_uses_epoch_retryafter() {
        let cs = FakeCrowdStrike::start("cid", "sek/ret").await;
        cs.add_host("web-01", "aid1");
        let c = reqwest::Client::new();
        let tok = token(&c, &cs.url()).await;
        cs.faults().arm(Fault::on(
            "POST",
            "action_name=contain",
            FaultKind::EpochHeader {
                header: "X-Ratelimit-Retryafter",
                secs_from_now: 5,
            },
        ));
        let r = c
            .post(format!(
                "{}/devices/entities/devices-actions/v2?action_name=contain",
                cs.url()
            ))
            .bearer_auth(&tok)
            .json(&json!({"ids": ["aid1"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
        assert!(r.headers().contains_key("x-cs-traceid"));
        let at: i64 = r.headers()["x-ratelimit-retryafter"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(at > Utc::now().timestamp());
        assert_eq!(cs.effects.total(), 0);
        assert_eq!(cs.host_status("aid1"), "normal");
    }
}
