//! Fake Microsoft Defender for Endpoint API (plus its Entra ID client-credentials token
//! endpoint): machines, isolate / unisolate machine actions with async `Pending → Succeeded`
//! completion, the `400 ActiveRequestAlreadyExists` answer while an action is in flight, the
//! "duplicate isolate on an already isolated machine sticks in Pending" trap, cancel, and
//! custom indicators (upsert keyed by value+type, OData `$filter` search, delete). Errors use the
//! `{"error":{"code","message","target"}}` shape; every answer carries `request-id`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};

use super::{
    Effects, FakeServer, Faults, Req, RequestLog, default_header, empty_response, json_response,
    lock, rfc3339_micros, uuidish,
};
use crate::support::auth::{AadApp, AuthMode, Refusal, Tokens};

const INDICATOR_TYPES: &[&str] = &[
    "FileSha1",
    "FileMd5",
    "FileSha256",
    "CertificateThumbprint",
    "IpAddress",
    "DomainName",
    "Url",
];
const INDICATOR_ACTIONS: &[&str] = &[
    "Alert",
    "Warn",
    "Block",
    "Audit",
    "BlockAndRemediate",
    "AlertAndBlock",
    "Allowed",
];
const SEVERITIES: &[&str] = &["Informational", "Low", "Medium", "High"];
const ISOLATION_TYPES: &[&str] = &["Full", "Selective", "UnManagedDevice"];
const API: &str = "https://api.securitycenter.microsoft.com/api";

struct Machine {
    id: String,
    dns: String,
    /// `lastSeen`; now when not set.
    last_seen: Option<chrono::DateTime<Utc>>,
}

struct Action {
    v: Value,
    /// Created while the machine was already in the requested state: never completes by itself.
    stuck: bool,
    polls: usize,
    seq: u64,
    /// Completion order (0 = not completed).
    done_seq: u64,
}

impl Action {
    fn status(&self) -> &str {
        self.v["status"].as_str().unwrap_or("")
    }
    fn kind(&self) -> &str {
        self.v["type"].as_str().unwrap_or("")
    }
    fn machine(&self) -> &str {
        self.v["machineId"].as_str().unwrap_or("")
    }
    fn active(&self) -> bool {
        matches!(self.status(), "Pending" | "InProgress")
    }
}

#[derive(Default)]
struct DState {
    tokens: Tokens,
    mode: AuthMode,
    machines: Vec<Machine>,
    actions: Vec<Action>,
    indicators: Vec<Value>,
    pending_polls: usize,
    seq: u64,
    next_indicator: u64,
}

impl DState {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
    fn is_isolated(&self, machine_id: &str) -> bool {
        self.actions
            .iter()
            .filter(|a| {
                a.machine() == machine_id
                    && a.status() == "Succeeded"
                    && matches!(a.kind(), "Isolate" | "Unisolate")
            })
            .max_by_key(|a| a.done_seq)
            .is_some_and(|a| a.kind() == "Isolate")
    }
    fn complete(&mut self, i: usize) {
        let seq = self.next_seq();
        let a = &mut self.actions[i];
        a.v["status"] = json!("Succeeded");
        a.v["lastUpdateDateTimeUtc"] = json!(rfc3339_micros(Utc::now()));
        a.done_seq = seq;
    }
    /// A GET returned action `i`: count it, and complete it once it has been seen enough.
    fn observe(&mut self, i: usize) -> Value {
        let needed = self.pending_polls;
        let a = &self.actions[i];
        if a.active() && !a.stuck && a.polls >= needed {
            self.complete(i);
        }
        let shown = self.actions[i].v.clone();
        let a = &mut self.actions[i];
        if a.active() && !a.stuck {
            a.polls += 1;
            if a.polls >= needed {
                self.complete(i);
            }
        }
        shown
    }
}

struct Inner {
    app: AadApp,
    st: Mutex<DState>,
    effects: Effects,
}

/// A stateful fake of the Defender for Endpoint API. Effect keys: `isolate:<machineId>`,
/// `unisolate:<machineId>`, `cancel:<actionId>`, `indicator_create:<value>`,
/// `indicator_update:<value>`, `indicator_delete:<value>`.
pub struct FakeDefender {
    pub server: FakeServer,
    pub effects: Effects,
    inner: Arc<Inner>,
}

impl FakeDefender {
    pub async fn start(tenant: &str, client_id: &str, client_secret: &str) -> FakeDefender {
        let effects = Effects::default();
        let inner = Arc::new(Inner {
            app: AadApp {
                tenant: tenant.into(),
                client_id: client_id.into(),
                client_secret: client_secret.into(),
            },
            st: Mutex::new(DState {
                pending_polls: 1,
                next_indicator: 995,
                ..DState::default()
            }),
            effects: effects.clone(),
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let server = FakeServer::start_decorated(
            router,
            Arc::new(|r: &mut Response| {
                default_header(r, "request-id", &uuidish());
            }),
        )
        .await;
        FakeDefender {
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

    /// Seeds an indicator someone else made (no effect counted); returns its id.
    pub fn seed_indicator(&self, value: &str, itype: &str, action: &str) -> String {
        let mut st = lock(&self.inner.st);
        st.next_indicator += 1;
        let id = st.next_indicator.to_string();
        let now = rfc3339_micros(Utc::now());
        st.indicators.push(json!({
            "id": id, "indicatorValue": value, "indicatorType": itype, "action": action,
            "title": "allow-listed by an admin", "description": "seeded",
            "createdBy": "admin@example.com", "createdBySource": "Portal",
            "creationTimeDateTimeUtc": now, "lastUpdateTime": now, "expirationTime": null,
            "severity": "Informational", "rbacGroupNames": [], "generateAlert": false,
        }));
        id
    }

    pub fn add_machine(&self, dns_name: &str, machine_id: &str) {
        lock(&self.inner.st).machines.push(Machine {
            id: machine_id.into(),
            dns: dns_name.into(),
            last_seen: None,
        });
    }
    /// A machine record last seen at `last_seen` (an old record of a re-imaged device).
    pub fn add_machine_seen(
        &self,
        dns_name: &str,
        machine_id: &str,
        last_seen: chrono::DateTime<Utc>,
    ) {
        lock(&self.inner.st).machines.push(Machine {
            id: machine_id.into(),
            dns: dns_name.into(),
            last_seen: Some(last_seen),
        });
    }
    /// Isolated = the latest completed Isolate/Unisolate action for the machine is an Isolate.
    pub fn is_isolated(&self, machine_id: &str) -> bool {
        lock(&self.inner.st).is_isolated(machine_id)
    }
    /// Puts the machine in a state as if an isolate (or unisolate) had completed long ago; no
    /// effect counted.
    pub fn set_isolated(&self, machine_id: &str, isolated: bool) {
        let mut st = lock(&self.inner.st);
        let t = "2020-01-01T00:00:00.000000Z";
        let seq = st.next_seq();
        st.actions.push(Action {
            v: json!({
                "id": uuidish(), "type": if isolated { "Isolate" } else { "Unisolate" },
                "scope": if isolated { json!("Full") } else { Value::Null }, "requestor": "seed",
                "requestorComment": "seed", "status": "Succeeded", "machineId": machine_id,
                "computerDnsName": null, "creationDateTimeUtc": t, "lastUpdateDateTimeUtc": t,
            }),
            stuck: false,
            polls: 0,
            seq,
            done_seq: seq,
        });
    }
    /// All machine actions, oldest first, as the API would show them (does not count as a poll).
    pub fn actions(&self) -> Vec<Value> {
        lock(&self.inner.st)
            .actions
            .iter()
            .map(|a| a.v.clone())
            .collect()
    }
    /// One machine action by id (does not count as a poll).
    pub fn action(&self, id: &str) -> Option<Value> {
        lock(&self.inner.st)
            .actions
            .iter()
            .find(|a| a.v["id"] == id)
            .map(|a| a.v.clone())
    }
    /// How many GETs returning a Pending action it takes to complete it (default 1: the first GET
    /// shows `Pending`, the next `Succeeded`). `usize::MAX` = never completes (offline device).
    pub fn set_pending_polls(&self, n: usize) {
        lock(&self.inner.st).pending_polls = n;
    }
    /// The known-issue tail: stuck actions eventually fire. Completes every stuck Pending action
    /// now, in creation order (so a stuck duplicate isolate re-isolates the machine).
    pub fn complete_stuck_actions(&self) {
        let mut st = lock(&self.inner.st);
        let stuck: Vec<usize> = (0..st.actions.len())
            .filter(|&i| st.actions[i].stuck && st.actions[i].active())
            .collect();
        for i in stuck {
            st.complete(i);
        }
    }
    pub fn indicators(&self) -> Vec<Value> {
        lock(&self.inner.st).indicators.clone()
    }
    pub fn tokens_issued(&self) -> usize {
        lock(&self.inner.st).tokens.issued
    }
    pub fn expire_tokens(&self) {
        lock(&self.inner.st).tokens.expire_all();
    }
    /// When on, the token endpoint answers 401 invalid_client and every API call 401.
    pub fn fail_auth(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Unauthorized);
    }
    /// When on, tokens are issued but every API call answers 403 (missing application role).
    pub fn forbid(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Forbidden);
    }
}

/// Answers with a `request-id` header that matches the error `target`.
struct Ctx {
    rid: String,
}

impl Ctx {
    fn reply(&self, status: u16, v: Value) -> Response {
        let mut r = json_response(status, v);
        default_header(&mut r, "request-id", &self.rid);
        default_header(&mut r, "odata-version", "4.0");
        r
    }
    fn err(&self, status: u16, code: &str, message: &str) -> Response {
        self.reply(
            status,
            json!({"error": {"code": code, "message": message, "target": self.rid}}),
        )
    }
    fn list(&self, entity: &str, value: Vec<Value>) -> Response {
        self.reply(
            200,
            json!({"@odata.context": format!("{API}/$metadata#{entity}"), "value": value}),
        )
    }
}

async fn handle(State(f): State<Arc<Inner>>, req: Request) -> Response {
    let r = Req::read(req).await;
    f.handle(r)
}

fn audience_ok(aud: &str) -> bool {
    [
        "api.securitycenter.microsoft.com",
        "api.security.microsoft.com",
        "api.securitycenter.windows.com",
    ]
    .iter()
    .any(|h| aud.contains(h))
        || aud == "fc780465-2017-40d4-a0c5-307022471b92"
}

impl Inner {
    fn handle(&self, r: Req) -> Response {
        let cx = Ctx { rid: uuidish() };
        let mut st = lock(&self.st);
        let segs = r.segs();
        let mode = st.mode;
        if let Some(mut resp) = self.app.serve_token(&mut st.tokens, mode, &r) {
            default_header(&mut resp, "x-ms-request-id", &cx.rid);
            return resp;
        }
        if segs.first() != Some(&"api") {
            return cx.err(404, "ResourceNotFound", &format!("No route for {}", r.path));
        }
        let aud = r.bearer().and_then(|t| st.tokens.audience(t));
        match aud {
            None => {
                return cx.err(
                    401,
                    "Unauthorized",
                    "Authorization has been denied for this request.",
                );
            }
            Some(a) if !audience_ok(a) => {
                return cx.err(
                    401,
                    "Unauthorized",
                    "The access token audience is not valid for this API.",
                );
            }
            _ => {}
        }
        match st.mode.check(true) {
            Err(Refusal::Unauthorized) => {
                return cx.err(
                    401,
                    "Unauthorized",
                    "Authorization has been denied for this request.",
                );
            }
            Err(Refusal::Forbidden) => {
                return cx.err(
                    403,
                    "Forbidden",
                    "The application does not have any of the required application roles to access the resource.",
                );
            }
            Ok(()) => {}
        }
        match (r.method.as_str(), &segs[1..]) {
            ("GET", ["machines"]) => {
                let all: Vec<Value> = st.machines.iter().map(machine_json).collect();
                match odata(&r, all, |_| 0) {
                    Ok(v) => cx.list("Machines", v),
                    Err(e) => cx.err(400, "BadRequest", &e),
                }
            }
            ("GET", ["machines", id]) => match st.machines.iter().find(|m| m.id == *id) {
                Some(m) => cx.reply(200, machine_json(m)),
                None => cx.err(
                    404,
                    "ResourceNotFound",
                    &format!("Machine {id} was not found"),
                ),
            },
            ("POST", ["machines", id, verb @ ("isolate" | "unisolate")]) => {
                self.isolate(&mut st, &cx, &r, id, verb)
            }
            ("GET", ["machineactions"]) => {
                let seqs: Vec<(Value, u64)> =
                    st.actions.iter().map(|a| (a.v.clone(), a.seq)).collect();
                let all: Vec<Value> = seqs.iter().map(|(v, _)| v.clone()).collect();
                let seq_of = |v: &Value| {
                    seqs.iter()
                        .find(|(x, _)| x["id"] == v["id"])
                        .map(|(_, s)| *s)
                        .unwrap_or(0)
                };
                match odata(&r, all, seq_of) {
                    Ok(found) => {
                        let shown = found
                            .iter()
                            .filter_map(|v| st.actions.iter().position(|a| a.v["id"] == v["id"]))
                            .collect::<Vec<_>>()
                            .into_iter()
                            .map(|i| st.observe(i))
                            .collect();
                        cx.list("MachineActions", shown)
                    }
                    Err(e) => cx.err(400, "BadRequest", &e),
                }
            }
            ("GET", ["machineactions", id]) => {
                match st.actions.iter().position(|a| a.v["id"] == *id) {
                    Some(i) => {
                        let v = st.observe(i);
                        cx.reply(200, v)
                    }
                    None => cx.err(
                        404,
                        "ResourceNotFound",
                        &format!("Machine action {id} was not found"),
                    ),
                }
            }
            ("POST", ["machineactions", id, "cancel"]) => self.cancel(&mut st, &cx, &r, id),
            ("POST", ["indicators"]) => self.upsert_indicator(&mut st, &cx, &r),
            ("GET", ["indicators"]) => match odata(&r, st.indicators.clone(), |_| 0) {
                Ok(v) => cx.list("Indicators", v),
                Err(e) => cx.err(400, "BadRequest", &e),
            },
            ("GET", ["indicators", id]) => match st.indicators.iter().find(|i| i["id"] == *id) {
                Some(i) => cx.reply(200, i.clone()),
                None => cx.err(
                    404,
                    "ResourceNotFound",
                    &format!("Indicator {id} was not found"),
                ),
            },
            ("DELETE", ["indicators", id]) => {
                match st.indicators.iter().position(|i| i["id"] == *id) {
                    Some(p) => {
                        let ind = st.indicators.remove(p);
                        self.effects.effect(format!(
                            "indicator_delete:{}",
                            ind["indicatorValue"].as_str().unwrap_or("")
                        ));
                        let mut resp = empty_response(204);
                        default_header(&mut resp, "request-id", &cx.rid);
                        resp
                    }
                    None => cx.err(
                        404,
                        "ResourceNotFound",
                        &format!("Indicator {id} was not found"),
                    ),
                }
            }
            _ => cx.err(
                404,
                "ResourceNotFound",
                &format!("No route for {} {}", r.method, r.path),
            ),
        }
    }

    fn isolate(&self, st: &mut DState, cx: &Ctx, r: &Req, id: &str, verb: &str) -> Response {
        let Some(dns) = st
            .machines
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.dns.clone())
        else {
            return cx.err(
                404,
                "ResourceNotFound",
                &format!("Machine {id} was not found"),
            );
        };
        let Some(body) = r.json().filter(Value::is_object) else {
            return cx.err(400, "InvalidRequestBody", "Request body is not valid JSON");
        };
        // Parameters are case-sensitive: "comment" is not "Comment".
        let Some(comment) = body
            .get("Comment")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
        else {
            return cx.err(400, "MissingRequiredParameter", "Comment is missing");
        };
        let kind = if verb == "isolate" {
            "Isolate"
        } else {
            "Unisolate"
        };
        let scope = if kind == "Isolate" {
            let t = body
                .get("IsolationType")
                .and_then(Value::as_str)
                .unwrap_or("Full");
            if !ISOLATION_TYPES.contains(&t) {
                return cx.err(
                    400,
                    "InvalidRequestBody",
                    &format!("IsolationType '{t}' is not valid"),
                );
            }
            json!(t)
        } else {
            Value::Null
        };
        if let Some(busy) = st.actions.iter().find(|a| {
            a.machine() == id && a.active() && matches!(a.kind(), "Isolate" | "Unisolate")
        }) {
            let target = busy.v["id"].as_str().unwrap_or("").to_owned();
            return cx.reply(
                400,
                json!({"error": {"code": "ActiveRequestAlreadyExists", "message": "Action is already in progress", "target": target}}),
            );
        }
        let already = st.is_isolated(id) == (kind == "Isolate");
        let now = rfc3339_micros(Utc::now());
        let v = json!({
            "id": uuidish(), "type": kind, "title": null, "scope": scope, "requestor": self.app.client_id,
            "requestorComment": comment, "status": "Pending", "machineId": id, "computerDnsName": dns,
            "creationDateTimeUtc": now, "lastUpdateDateTimeUtc": now, "cancellationRequestor": null,
            "cancellationComment": null, "cancellationDateTimeUtc": null, "errorHResult": 0,
            "externalID": null, "requestSource": "PublicApi", "relatedFileInfo": null, "commands": [],
            "troubleshootInfo": null,
        });
        let seq = st.next_seq();
        st.actions.push(Action {
            v: v.clone(),
            stuck: already,
            polls: 0,
            seq,
            done_seq: 0,
        });
        self.effects.effect(format!("{verb}:{id}"));
        let mut v = v;
        v.as_object_mut().expect("object").insert(
            "@odata.context".into(),
            json!(format!("{API}/$metadata#MachineActions/$entity")),
        );
        cx.reply(201, v)
    }

    fn cancel(&self, st: &mut DState, cx: &Ctx, r: &Req, id: &str) -> Response {
        let Some(i) = st.actions.iter().position(|a| a.v["id"] == id) else {
            return cx.err(
                404,
                "ResourceNotFound",
                &format!("Machine action {id} was not found"),
            );
        };
        let Some(comment) = r
            .json()
            .and_then(|b| b.get("Comment").and_then(Value::as_str).map(String::from))
        else {
            return cx.err(400, "MissingRequiredParameter", "Comment is missing");
        };
        if !st.actions[i].active() {
            return cx.err(
                400,
                "BadRequest",
                "Machine action is not in a cancellable state",
            );
        }
        let now = rfc3339_micros(Utc::now());
        let a = &mut st.actions[i];
        a.v["status"] = json!("Cancelled");
        a.v["cancellationRequestor"] = json!(self.app.client_id);
        a.v["cancellationComment"] = json!(comment);
        a.v["cancellationDateTimeUtc"] = json!(now);
        a.v["lastUpdateDateTimeUtc"] = json!(now);
        self.effects.effect(format!("cancel:{id}"));
        cx.reply(200, a.v.clone())
    }

    fn upsert_indicator(&self, st: &mut DState, cx: &Ctx, r: &Req) -> Response {
        let Some(body) = r.json().filter(Value::is_object) else {
            return cx.err(400, "InvalidRequestBody", "Request body is not valid JSON");
        };
        let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        for k in [
            "indicatorValue",
            "indicatorType",
            "action",
            "title",
            "description",
        ] {
            if s(k).is_empty() {
                return cx.err(400, "MissingRequiredParameter", &format!("{k} is missing"));
            }
        }
        let (value, itype, action) = (s("indicatorValue"), s("indicatorType"), s("action"));
        if !INDICATOR_TYPES.contains(&itype.as_str()) {
            return cx.err(
                400,
                "InvalidRequestBody",
                &format!("indicatorType '{itype}' is not valid"),
            );
        }
        if !INDICATOR_ACTIONS.contains(&action.as_str()) {
            return cx.err(
                400,
                "InvalidRequestBody",
                &format!("action '{action}' is not valid"),
            );
        }
        if let Some(sev) = body.get("severity").and_then(Value::as_str)
            && !SEVERITIES.contains(&sev)
        {
            return cx.err(
                400,
                "InvalidRequestBody",
                &format!("severity '{sev}' is not valid"),
            );
        }
        if itype == "IpAddress" && value.contains('/') {
            return cx.err(
                400,
                "InvalidRequestBody",
                "CIDR notation is not supported for IpAddress indicators",
            );
        }
        if action == "Audit" && body.get("generateAlert") != Some(&json!(true)) {
            return cx.err(
                400,
                "InvalidRequestBody",
                "generateAlert must be true for Audit indicators",
            );
        }
        let now = rfc3339_micros(Utc::now());
        let who = self.app.client_id.clone();
        let existing = st.indicators.iter().position(|i| {
            i["indicatorType"] == itype.as_str()
                && i["indicatorValue"]
                    .as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case(&value))
        });
        let fields = [
            "action",
            "title",
            "description",
            "expirationTime",
            "severity",
            "recommendedActions",
            "rbacGroupNames",
            "generateAlert",
        ];
        let out = match existing {
            Some(p) => {
                let ind = &mut st.indicators[p];
                for k in fields {
                    if let Some(v) = body.get(k) {
                        ind[k] = v.clone();
                    }
                }
                ind["lastUpdateTime"] = json!(now);
                ind["lastUpdatedBy"] = json!(who);
                self.effects.effect(format!("indicator_update:{value}"));
                ind.clone()
            }
            None => {
                st.next_indicator += 1;
                let mut ind = json!({
                    "id": st.next_indicator.to_string(), "indicatorValue": value, "indicatorType": itype,
                    "application": body.get("application").cloned().unwrap_or(Value::Null),
                    "createdBy": who, "createdByDisplayName": who, "createdBySource": "PublicApi",
                    "creationTimeDateTimeUtc": now, "lastUpdateTime": now, "lastUpdatedBy": who,
                    "expirationTime": null, "severity": "Informational", "recommendedActions": null,
                    "rbacGroupNames": [], "generateAlert": false,
                });
                for k in fields {
                    if let Some(v) = body.get(k) {
                        ind[k] = v.clone();
                    }
                }
                st.indicators.push(ind.clone());
                self.effects.effect(format!("indicator_create:{value}"));
                ind
            }
        };
        let mut out = out;
        out.as_object_mut().expect("object").insert(
            "@odata.context".into(),
            json!(format!("{API}/$metadata#Indicators/$entity")),
        );
        cx.reply(200, out)
    }
}

fn machine_json(m: &Machine) -> Value {
    json!({
        "id": m.id, "computerDnsName": m.dns, "healthStatus": "Active", "osPlatform": "Windows11",
        "onboardingStatus": "Onboarded", "riskScore": "Low", "exposureLevel": "Low",
        "lastSeen": rfc3339_micros(m.last_seen.unwrap_or_else(Utc::now)), "machineTags": [],
    })
}

/// Applies `$filter`, `$orderby` (one key, asc|desc; ties broken by creation order), `$skip` and
/// `$top` to a collection.
fn odata(r: &Req, items: Vec<Value>, seq_of: impl Fn(&Value) -> u64) -> Result<Vec<Value>, String> {
    let mut items = match r.query.get("$filter") {
        Some(f) if !f.trim().is_empty() => {
            let expr = odata_filter::parse(f)?;
            items.into_iter().filter(|v| expr.eval(v)).collect()
        }
        _ => items,
    };
    if let Some(ob) = r.query.get("$orderby") {
        let mut parts = ob.split_whitespace();
        let field = parts.next().ok_or("empty $orderby")?.to_owned();
        let desc = match parts.next() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(o) => return Err(format!("Invalid $orderby direction '{o}'")),
        };
        items.sort_by(|a, b| {
            let key = |v: &Value| (odata_filter::scalar(v.get(&field)), seq_of(v));
            if desc {
                key(b).cmp(&key(a))
            } else {
                key(a).cmp(&key(b))
            }
        });
    }
    let num = |k: &str| -> Result<Option<usize>, String> {
        r.query
            .get(k)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| format!("Invalid {k} value '{v}'"))
            })
            .transpose()
    };
    let skip = num("$skip")?.unwrap_or(0);
    let top = num("$top")?.unwrap_or(10_000);
    Ok(items.into_iter().skip(skip).take(top).collect())
}

/// A small OData `$filter` subset: `field eq|ne|gt|ge|lt|le literal`, `and`, `or`, `not`, parens.
/// String comparisons are case-insensitive. Datetime literals may be quoted or bare.
mod odata_filter {
    use serde_json::Value;

    pub enum Expr {
        And(Box<Expr>, Box<Expr>),
        Or(Box<Expr>, Box<Expr>),
        Not(Box<Expr>),
        Cmp(String, String, String),
    }

    #[derive(Debug, PartialEq)]
    enum Tok {
        Open,
        Close,
        Str(String),
        Word(String),
    }

    pub fn scalar(v: Option<&Value>) -> String {
        match v {
            Some(Value::String(s)) => s.to_lowercase(),
            Some(Value::Null) | None => "null".into(),
            Some(other) => other.to_string(),
        }
    }

    impl Expr {
        pub fn eval(&self, v: &Value) -> bool {
            match self {
                Expr::And(a, b) => a.eval(v) && b.eval(v),
                Expr::Or(a, b) => a.eval(v) || b.eval(v),
                Expr::Not(a) => !a.eval(v),
                Expr::Cmp(field, op, lit) => {
                    let got = scalar(v.get(field));
                    let lit = lit.to_lowercase();
                    match op.as_str() {
                        "eq" => got == lit,
                        "ne" => got != lit,
                        "gt" => got > lit,
                        "ge" => got >= lit,
                        "lt" => got < lit,
                        _ => got <= lit,
                    }
                }
            }
        }
    }

    fn lex(s: &str) -> Result<Vec<Tok>, String> {
        let c: Vec<char> = s.chars().collect();
        let mut out = vec![];
        let mut i = 0;
        while i < c.len() {
            match c[i] {
                ' ' | '\t' => i += 1,
                '(' => {
                    out.push(Tok::Open);
                    i += 1;
                }
                ')' => {
                    out.push(Tok::Close);
                    i += 1;
                }
                '\'' => {
                    let mut lit = String::new();
                    i += 1;
                    loop {
                        match c.get(i) {
                            None => return Err("Unterminated string literal in $filter".into()),
                            Some('\'') if c.get(i + 1) == Some(&'\'') => {
                                lit.push('\'');
                                i += 2;
                            }
                            Some('\'') => {
                                i += 1;
                                break;
                            }
                            Some(&ch) => {
                                lit.push(ch);
                                i += 1;
                            }
                        }
                    }
                    out.push(Tok::Str(lit));
                }
                _ => {
                    let start = i;
                    while i < c.len() && !matches!(c[i], ' ' | '\t' | '(' | ')' | '\'') {
                        i += 1;
                    }
                    out.push(Tok::Word(c[start..i].iter().collect()));
                }
            }
        }
        Ok(out)
    }

    struct P {
        t: Vec<Tok>,
        i: usize,
    }

    impl P {
        fn kw(&mut self, k: &str) -> bool {
            if matches!(self.t.get(self.i), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k)) {
                self.i += 1;
                true
            } else {
                false
            }
        }
        fn or(&mut self) -> Result<Expr, String> {
            let mut e = self.and()?;
            while self.kw("or") {
                e = Expr::Or(Box::new(e), Box::new(self.and()?));
            }
            Ok(e)
        }
        fn and(&mut self) -> Result<Expr, String> {
            let mut e = self.unary()?;
            while self.kw("and") {
                e = Expr::And(Box::new(e), Box::new(self.unary()?));
            }
            Ok(e)
        }
        fn unary(&mut self) -> Result<Expr, String> {
            if self.kw("not") {
                return Ok(Expr::Not(Box::new(self.unary()?)));
            }
            if self.t.get(self.i) == Some(&Tok::Open) {
                self.i += 1;
                let e = self.or()?;
                if self.t.get(self.i) != Some(&Tok::Close) {
                    return Err("Missing ')' in $filter".into());
                }
                self.i += 1;
                return Ok(e);
            }
            let field = match self.t.get(self.i) {
                Some(Tok::Word(w)) => w.clone(),
                other => {
                    return Err(format!(
                        "Expected a property name in $filter, got {other:?}"
                    ));
                }
            };
            let op = match self.t.get(self.i + 1) {
                Some(Tok::Word(w))
                    if ["eq", "ne", "gt", "ge", "lt", "le"]
                        .contains(&w.to_lowercase().as_str()) =>
                {
                    w.to_lowercase()
                }
                other => return Err(format!("Unsupported operator in $filter: {other:?}")),
            };
            let lit = match self.t.get(self.i + 2) {
                Some(Tok::Str(s)) | Some(Tok::Word(s)) => s.clone(),
                other => return Err(format!("Expected a literal in $filter, got {other:?}")),
            };
            self.i += 3;
            Ok(Expr::Cmp(field, op, lit))
        }
    }

    pub fn parse(s: &str) -> Result<Expr, String> {
        let mut p = P { t: lex(s)?, i: 0 };
        let e = p.or()?;
        if p.i != p.t.len() {
            return Err(format!("Invalid filter clause near token {}", p.i));
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::super::enc;
    use super::*;
    use crate::support::auth::{aad_form, access_token, request_token};

    const SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

    async fn token(c: &reqwest::Client, url: &str) -> String {
        let url = format!("{url}/tid/oauth2/v2.0/token");
        let (st, v) = request_token(c, &url, &aad_form("app", "s3cret", SCOPE)).await;
        assert_eq!(st, 200);
        assert_eq!(
            (v["token_type"].as_str(), v["expires_in"].as_u64()),
            (Some("Bearer"), Some(3599))
        );
        access_token(&v)
    }

    struct Api {
        c: reqwest::Client,
        url: String,
        tok: String,
    }

    impl Api {
        async fn call(&self, m: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
            let mut rb = self
                .c
                .request(m, format!("{}{path}", self.url))
                .bearer_auth(&self.tok);
            if let Some(b) = body {
                rb = rb.json(&b);
            }
            let r = rb.send().await.unwrap();
            assert!(r.headers().contains_key("request-id"));
            let st = r.status().as_u16();
            (st, r.json().await.unwrap_or(Value::Null))
        }
        async fn isolate(&self, verb: &str, comment: &str) -> (u16, Value) {
            self.call(
                reqwest::Method::POST,
                &format!("/api/machines/m1/{verb}"),
                Some(json!({"Comment": comment, "IsolationType": "Full"})),
            )
            .await
        }
        async fn action(&self, id: &str) -> Value {
            self.call(
                reqwest::Method::GET,
                &format!("/api/machineactions/{id}"),
                None,
            )
            .await
            .1
        }
    }

    async fn setup() -> (FakeDefender, Api) {
        let d = FakeDefender::start("tid", "app", "s3cret").await;
        d.add_machine("web-01.corp.example", "m1");
        let c = reqwest::Client::new();
        let tok = token(&c, &d.url()).await;
        let url = d.url();
        (d, Api { c, url, tok })
    }

    #[tokio::test]
    async fn duplicate_isolate_on_isolated_machine_sticks_pending() {
        let (d, api) = setup().await;
        let q = enc("computerDnsName eq 'web-01.corp.example'");
        let (st, v) = api
            .call(
                reqwest::Method::GET,
                &format!("/api/machines?$filter={q}"),
                None,
            )
            .await;
        assert_eq!((st, v["value"][0]["id"].as_str()), (200, Some("m1")));

        let (st, a1) = api.isolate("isolate", "cordon idem:k1").await;
        assert_eq!(
            (st, a1["status"].as_str(), a1["type"].as_str()),
            (201, Some("Pending"), Some("Isolate"))
        );
        let id1 = a1["id"].as_str().unwrap();
        assert_eq!(api.action(id1).await["status"], "Pending");
        assert_eq!(api.action(id1).await["status"], "Succeeded");
        assert!(d.is_isolated("m1"));

        // The trap: a second isolate is accepted (201, effect) but never completes.
        let (st, a2) = api.isolate("isolate", "cordon idem:k1 retry").await;
        assert_eq!(st, 201);
        let id2 = a2["id"].as_str().unwrap();
        for _ in 0..5 {
            assert_eq!(api.action(id2).await["status"], "Pending");
        }
        assert_eq!(d.effects.count("isolate:m1"), 2);

        // While it is stuck, everything else is refused with ActiveRequestAlreadyExists.
        let (st, e) = api.isolate("unisolate", "release").await;
        assert_eq!(st, 400);
        assert_eq!(e["error"]["code"], "ActiveRequestAlreadyExists");
        assert_eq!(e["error"]["message"], "Action is already in progress");
        assert_eq!(d.effects.count("unisolate:m1"), 0);

        // The probe shows the stuck action first.
        let f = enc("machineId eq 'm1' and (type eq 'Isolate' or type eq 'Unisolate')");
        let (_, v) = api
            .call(
                reqwest::Method::GET,
                &format!(
                    "/api/machineactions?$filter={f}&$orderby=creationDateTimeUtc%20desc&$top=1"
                ),
                None,
            )
            .await;
        assert_eq!(v["value"].as_array().unwrap().len(), 1);
        assert_eq!(v["value"][0]["id"], id2);

        // Cancelling it unblocks the machine.
        let (st, c) = api
            .call(
                reqwest::Method::POST,
                &format!("/api/machineactions/{id2}/cancel"),
                Some(json!({"Comment": "stuck"})),
            )
            .await;
        assert_eq!((st, c["status"].as_str()), (200, Some("Cancelled")));
        let (st, a3) = api.isolate("unisolate", "release").await;
        assert_eq!((st, a3["type"].as_str()), (201, Some("Unisolate")));
        let id3 = a3["id"].as_str().unwrap();
        api.action(id3).await;
        assert_eq!(api.action(id3).await["status"], "Succeeded");
        assert!(!d.is_isolated("m1"));
    }

    #[tokio::test]
    async fn busy_and_bad_requests_have_no_effect() {
        let (d, api) = setup().await;
        let (st, e) = api
            .call(
                reqwest::Method::POST,
                "/api/machines/m1/isolate",
                Some(json!({"comment": "lowercase"})),
            )
            .await;
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (400, Some("MissingRequiredParameter"))
        );
        let (st, e) = api.isolate_unknown().await;
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (404, Some("ResourceNotFound"))
        );
        let (st, _) = api.isolate("isolate", "first").await;
        assert_eq!(st, 201);
        let (st, e) = api.isolate("isolate", "second").await;
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (400, Some("ActiveRequestAlreadyExists"))
        );
        assert_eq!(d.effects.count("isolate:m1"), 1);
        assert_eq!(d.actions().len(), 1);

        // Wrong audience: a Graph token is refused.
        let token_url = format!("{}/tid/oauth2/v2.0/token", api.url);
        let graph = aad_form("app", "s3cret", "https://graph.microsoft.com/.default");
        let graph_tok = access_token(&request_token(&api.c, &token_url, &graph).await.1);
        let r = api
            .c
            .get(format!("{}/api/machines", api.url))
            .bearer_auth(graph_tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        // Bad secret.
        let bad = aad_form("app", "bad", "x/.default");
        let (st, v) = request_token(&api.c, &token_url, &bad).await;
        assert_eq!(st, 401);
        assert_eq!(v["error"], "invalid_client");
        assert_eq!(d.tokens_issued(), 2);
    }

    impl Api {
        async fn isolate_unknown(&self) -> (u16, Value) {
            self.call(
                reqwest::Method::POST,
                "/api/machines/nope/isolate",
                Some(json!({"Comment": "x"})),
            )
            .await
        }
    }

    #[tokio::test]
    async fn indicators_upsert_and_delete() {
        let (d, api) = setup().await;
        let mut ind = json!({"indicatorValue": "198.51.100.7", "indicatorType": "IpAddress", "action": "AlertAndBlock",
            "title": "cordon", "description": "idem:k1", "severity": "High", "expirationTime": "2030-01-01T00:00:00Z"});
        let (st, a) = api
            .call(reqwest::Method::POST, "/api/indicators", Some(ind.clone()))
            .await;
        assert_eq!(st, 200);
        ind["title"] = json!("cordon again");
        let (st, b) = api
            .call(reqwest::Method::POST, "/api/indicators", Some(ind))
            .await;
        assert_eq!(st, 200);
        assert_eq!(a["id"], b["id"]);
        assert_eq!(b["title"], "cordon again");
        assert_eq!(d.effects.count("indicator_create:198.51.100.7"), 1);
        assert_eq!(d.effects.count("indicator_update:198.51.100.7"), 1);
        assert_eq!(d.indicators().len(), 1);

        let f = enc("indicatorValue eq '198.51.100.7'");
        let (_, v) = api
            .call(
                reqwest::Method::GET,
                &format!("/api/indicators?$filter={f}"),
                None,
            )
            .await;
        assert_eq!(v["value"].as_array().unwrap().len(), 1);
        let (st, e) = api.call(reqwest::Method::POST, "/api/indicators", Some(json!({"indicatorValue": "10.0.0.0/8", "indicatorType": "IpAddress", "action": "Block", "title": "t", "description": "d"}))).await;
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (400, Some("InvalidRequestBody"))
        );

        let id = a["id"].as_str().unwrap();
        let (st, _) = api
            .call(
                reqwest::Method::DELETE,
                &format!("/api/indicators/{id}"),
                None,
            )
            .await;
        assert_eq!(st, 204);
        let (st, e) = api
            .call(
                reqwest::Method::DELETE,
                &format!("/api/indicators/{id}"),
                None,
            )
            .await;
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (404, Some("ResourceNotFound"))
        );
        assert_eq!(d.effects.count("indicator_delete:198.51.100.7"), 1);
        let (_, v) = api
            .call(
                reqwest::Method::GET,
                &format!("/api/indicators?$filter={f}"),
                None,
            )
            .await;
        assert_eq!(v["value"], json!([]));
    }
}
