//! Fake TheHive 5 API (Bearer API key): alert creation with the unique
//! (`type`, `source`, `sourceRef`) constraint (a duplicate is refused with `400 CreateError`),
//! alert fetch, and the `POST /api/v1/query` query DSL subset used to find an alert by
//! `sourceRef` (`listAlert`, `filter` with `_eq`/`_and`/`_or`/`_not`/`_in`, `sort`, `page`).
//! Errors use TheHive's `{"type","message"}` shape; answers carry `X-Request-Id`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};

use super::{
    Effects, FakeServer, Faults, Req, RequestLog, default_header, json_response, lock, rand_hex,
};
use crate::support::auth::{AuthMode, Refusal};

const TLP: &[&str] = &["WHITE", "GREEN", "AMBER", "AMBER+STRICT", "RED"];
const PAP: &[&str] = &["WHITE", "GREEN", "AMBER", "RED"];
const SEVERITY: &[&str] = &["", "LOW", "MEDIUM", "HIGH", "CRITICAL"];

#[derive(Default)]
struct HState {
    mode: AuthMode,
    alerts: Vec<Value>,
    next: u64,
}

struct Inner {
    api_key: String,
    st: Mutex<HState>,
    effects: Effects,
}

/// A stateful fake of TheHive 5. Effect key: `alert:<sourceRef>`.
pub struct FakeTheHive {
    pub server: FakeServer,
    pub effects: Effects,
    inner: Arc<Inner>,
}

impl FakeTheHive {
    pub async fn start(api_key: &str) -> FakeTheHive {
        let effects = Effects::default();
        let inner = Arc::new(Inner {
            api_key: api_key.into(),
            st: Mutex::new(HState {
                next: 4096,
                ..HState::default()
            }),
            effects: effects.clone(),
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let server = FakeServer::start_decorated(
            router,
            Arc::new(|r: &mut Response| {
                default_header(
                    r,
                    "x-request-id",
                    &format!("{}:{}", rand_hex(8), rand_hex(8)),
                );
            }),
        )
        .await;
        FakeTheHive {
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

    /// Every alert, oldest first, as the API returns it.
    pub fn alerts(&self) -> Vec<Value> {
        lock(&self.inner.st).alerts.clone()
    }
    /// When on, every call answers 401 AuthenticationError.
    pub fn fail_auth(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Unauthorized);
    }
    /// When on, every call answers 403 AuthorizationError.
    pub fn forbid(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Forbidden);
    }
}

fn herr(status: u16, kind: &str, message: &str) -> Response {
    json_response(status, json!({"type": kind, "message": message}))
}

async fn handle(State(f): State<Arc<Inner>>, req: Request) -> Response {
    let r = Req::read(req).await;
    f.handle(r)
}

impl Inner {
    fn handle(&self, r: Req) -> Response {
        let mut st = lock(&self.st);
        match st.mode.check(r.bearer() == Some(self.api_key.as_str())) {
            Err(Refusal::Unauthorized) => {
                return herr(401, "AuthenticationError", "Authentication failure");
            }
            Err(Refusal::Forbidden) => {
                return herr(
                    403,
                    "AuthorizationError",
                    "Your are not authorized to perform this operation",
                );
            }
            Ok(()) => {}
        }
        let segs = r.segs();
        match (r.method.as_str(), segs.as_slice()) {
            ("POST", ["api", "v1", "alert"]) => self.create(&mut st, &r),
            ("GET", ["api", "v1", "alert", id]) => match st.alerts.iter().find(|a| a["_id"] == *id)
            {
                Some(a) => json_response(200, a.clone()),
                None => herr(404, "NotFoundError", &format!("Alert {id} not found")),
            },
            ("POST", ["api", "v1", "query"]) => query(&st, &r),
            _ => herr(
                404,
                "NotFoundError",
                &format!("{} {} not found", r.method, r.path),
            ),
        }
    }

    fn create(&self, st: &mut HState, r: &Req) -> Response {
        let Some(b) = r.json().filter(Value::is_object) else {
            return herr(400, "BadRequest", "Invalid json");
        };
        for k in ["type", "source", "sourceRef", "title", "description"] {
            if b[k].as_str().is_none_or(|s| s.trim().is_empty()) {
                return herr(
                    400,
                    "AttributeCheckError",
                    &format!("Attribute {k} is missing or invalid"),
                );
            }
        }
        let int = |k: &str, default: u64, max: u64| -> Result<u64, String> {
            match b.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n <= max && (k != "severity" || *n >= 1))
                    .ok_or_else(|| format!("Invalid value for attribute {k}: {v}")),
            }
        };
        let (severity, tlp, pap) = match (int("severity", 2, 4), int("tlp", 2, 4), int("pap", 2, 3))
        {
            (Ok(s), Ok(t), Ok(p)) => (s, t, p),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                return herr(400, "AttributeCheckError", &e);
            }
        };
        let s = |k: &str| b[k].as_str().unwrap_or("").to_owned();
        let (typ, source, source_ref) = (s("type"), s("source"), s("sourceRef"));
        if st.alerts.iter().any(|a| {
            a["type"] == typ.as_str()
                && a["source"] == source.as_str()
                && a["sourceRef"] == source_ref.as_str()
        }) {
            return herr(
                400,
                "CreateError",
                "Alert with type/source/sourceRef already exists",
            );
        }
        let observables = b["observables"].as_array().cloned().unwrap_or_default();
        for o in &observables {
            if o["dataType"].as_str().is_none()
                || (o["data"].is_null() && o["attachment"].is_null())
            {
                return herr(
                    400,
                    "AttributeCheckError",
                    "Observable must have dataType and data",
                );
            }
        }
        st.next += 8;
        let now = Utc::now().timestamp_millis();
        let alert = json!({
            "_id": format!("~{}", st.next), "_type": "Alert", "_createdBy": "cordon@thehive.local", "_createdAt": now,
            "type": typ, "source": source, "sourceRef": source_ref, "externalLink": b.get("externalLink").cloned().unwrap_or(Value::Null),
            "title": s("title"), "description": s("description"), "severity": severity,
            "severityLabel": SEVERITY[severity as usize], "date": b.get("date").cloned().unwrap_or(json!(now)),
            "tags": b.get("tags").cloned().unwrap_or(json!([])), "tlp": tlp, "tlpLabel": TLP[tlp as usize],
            "pap": pap, "papLabel": PAP[pap as usize], "follow": true, "customFields": [],
            "observableCount": observables.len(), "status": "New", "stage": "New", "caseId": null,
            "extraData": {},
        });
        st.alerts.push(alert.clone());
        self.effects.effect(format!("alert:{source_ref}"));
        json_response(201, alert)
    }
}

/// Evaluates a TheHive query filter. Accepts both `{"_eq":{"_field":f,"_value":v}}` and the
/// short `{"_eq":{f:v}}`.
fn eval(f: &Value, a: &Value) -> Result<bool, String> {
    let obj = f.as_object().ok_or("filter must be an object")?;
    let (op, arg) = obj
        .iter()
        .find(|(k, _)| k.starts_with('_') && k.as_str() != "_name")
        .ok_or("empty filter")?;
    let field_value = |arg: &Value| -> Result<(String, Value), String> {
        if let (Some(f), Some(v)) = (arg.get("_field").and_then(Value::as_str), arg.get("_value")) {
            return Ok((f.to_owned(), v.clone()));
        }
        let o = arg
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or("expected {_field, _value}")?;
        let (k, v) = o.iter().next().expect("one entry");
        Ok((k.clone(), v.clone()))
    };
    match op.as_str() {
        "_and" | "_or" => {
            let parts = arg.as_array().ok_or("_and/_or need an array")?;
            let results = parts
                .iter()
                .map(|p| eval(p, a))
                .collect::<Result<Vec<bool>, String>>()?;
            Ok(if op == "_and" {
                results.iter().all(|x| *x)
            } else {
                results.iter().any(|x| *x)
            })
        }
        "_not" => Ok(!eval(arg, a)?),
        "_eq" | "_ne" => {
            let (k, v) = field_value(arg)?;
            let eq = a.get(&k) == Some(&v)
                || a.get(&k)
                    .and_then(Value::as_array)
                    .is_some_and(|arr| arr.contains(&v));
            Ok(if op == "_eq" { eq } else { !eq })
        }
        "_in" => {
            let k = arg["_field"].as_str().ok_or("_in needs _field")?;
            let vals = arg["_values"].as_array().ok_or("_in needs _values")?;
            Ok(a.get(k).is_some_and(|x| vals.contains(x)))
        }
        other => Err(format!("Unsupported filter operator {other}")),
    }
}

fn query(st: &HState, r: &Req) -> Response {
    let Some(ops) = r
        .json()
        .and_then(|b| b.get("query").and_then(Value::as_array).cloned())
    else {
        return herr(400, "BadRequest", "Invalid query: missing 'query' array");
    };
    let mut items: Vec<Value> = vec![];
    for (i, op) in ops.iter().enumerate() {
        let name = op["_name"].as_str().unwrap_or("");
        match (i, name) {
            (0, "listAlert") => items = st.alerts.clone(),
            (0, "getAlert") => {
                let id = op["idOrName"].as_str().unwrap_or("");
                items = st
                    .alerts
                    .iter()
                    .filter(|a| a["_id"] == id)
                    .cloned()
                    .collect();
                if items.is_empty() {
                    return herr(404, "NotFoundError", &format!("Alert {id} not found"));
                }
            }
            (0, other) => {
                return herr(
                    400,
                    "BadRequest",
                    &format!("Operation {other} is not supported by the fake"),
                );
            }
            (_, "filter") => {
                let mut kept = vec![];
                for a in items {
                    match eval(op, &a) {
                        Ok(true) => kept.push(a),
                        Ok(false) => {}
                        Err(e) => return herr(400, "BadRequest", &e),
                    }
                }
                items = kept;
            }
            (_, "sort") => {
                for spec in op["_fields"].as_array().into_iter().flatten().rev() {
                    if let Some((k, dir)) = spec.as_object().and_then(|o| o.iter().next()) {
                        let desc = dir == "desc";
                        let key = |v: &Value| v.get(k).map(|x| x.to_string()).unwrap_or_default();
                        items.sort_by(|x, y| {
                            if desc {
                                key(y).cmp(&key(x))
                            } else {
                                key(x).cmp(&key(y))
                            }
                        });
                    }
                }
            }
            (_, "page") => {
                let from = op["from"].as_u64().unwrap_or(0) as usize;
                let to = op["to"].as_u64().map(|t| t as usize).unwrap_or(usize::MAX);
                items = items
                    .into_iter()
                    .skip(from)
                    .take(to.saturating_sub(from))
                    .collect();
            }
            (_, other) => {
                return herr(
                    400,
                    "BadRequest",
                    &format!("Operation {other} is not supported by the fake"),
                );
            }
        }
    }
    json_response(200, Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(source_ref: &str) -> Value {
        json!({"type": "soar", "source": "cordon", "sourceRef": source_ref, "title": "Host contained",
               "description": "details", "severity": 2, "tlp": 2, "pap": 2, "tags": ["cordon"],
               "observables": [{"dataType": "ip", "data": "198.51.100.7"}]})
    }

    #[tokio::test]
    async fn duplicate_source_ref_is_refused_and_query_finds_it() {
        let h = FakeTheHive::start("key").await;
        let c = reqwest::Client::new();
        let url = h.url();
        let r = c
            .post(format!("{url}/api/v1/alert"))
            .bearer_auth("key")
            .json(&alert("idem-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        assert!(r.headers().contains_key("x-request-id"));
        let a: Value = r.json().await.unwrap();
        assert!(a["_id"].as_str().unwrap().starts_with('~'));
        assert_eq!(
            (a["_type"].as_str(), a["observableCount"].as_u64()),
            (Some("Alert"), Some(1))
        );

        let r = c
            .post(format!("{url}/api/v1/alert"))
            .bearer_auth("key")
            .json(&alert("idem-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["type"], "CreateError");
        assert_eq!(h.effects.count("alert:idem-1"), 1);
        assert_eq!(h.alerts().len(), 1);

        let q = |r: &str| json!({"query": [{"_name": "listAlert"}, {"_name": "filter", "_eq": {"_field": "sourceRef", "_value": r}}]});
        let v: Value = c
            .post(format!("{url}/api/v1/query"))
            .bearer_auth("key")
            .json(&q("idem-1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(v[0]["_id"], a["_id"]);
        let v: Value = c
            .post(format!("{url}/api/v1/query"))
            .bearer_auth("key")
            .json(&q("idem-2"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v, json!([]));

        let r = c
            .post(format!("{url}/api/v1/alert"))
            .bearer_auth("wrong")
            .json(&alert("idem-3"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(h.effects.total(), 1);
    }
}
