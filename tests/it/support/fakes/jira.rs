//! Fake Jira Cloud REST API v3 (Basic `email:api_token` auth): issue creation, which is NOT
//! idempotent (every POST creates an issue), with v3's Atlassian Document Format requirement for
//! `description` and Jira's field validation; JQL search on the enhanced `/rest/api/3/search/jql`
//! endpoint (the retired `/rest/api/3/search` answers 410); issue fetch. Errors use Jira's
//! `{"errorMessages":[],"errors":{}}` shape; answers carry `X-AREQUESTID` and `atl-traceid`.

use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use chrono::Utc;
use regex::Regex;
use serde_json::{Value, json};

use super::{
    Effects, FakeServer, Faults, Req, RequestLog, default_header, json_response, lock, rand_hex,
};
use crate::support::auth::{AuthMode, Refusal, base64};

#[derive(Clone)]
struct Issue {
    id: u64,
    key: String,
    project: String,
    fields: Value,
}

struct JState {
    mode: AuthMode,
    projects: Vec<(String, u64)>,
    issues: Vec<Issue>,
    next_id: u64,
}

struct Inner {
    basic: String,
    base: OnceLock<String>,
    st: Mutex<JState>,
    effects: Effects,
}

/// A stateful fake of Jira Cloud. Effect key: `issue:<first label>` (`issue:` when unlabelled).
pub struct FakeJira {
    pub server: FakeServer,
    pub effects: Effects,
    inner: Arc<Inner>,
}

impl FakeJira {
    /// Starts with one project, `SEC`.
    pub async fn start(email: &str, api_token: &str) -> FakeJira {
        let effects = Effects::default();
        let inner = Arc::new(Inner {
            basic: base64(&format!("{email}:{api_token}")),
            base: OnceLock::new(),
            st: Mutex::new(JState {
                mode: AuthMode::Ok,
                projects: vec![("SEC".into(), 0)],
                issues: vec![],
                next_id: 10000,
            }),
            effects: effects.clone(),
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let server = FakeServer::start_decorated(
            router,
            Arc::new(|r: &mut Response| {
                default_header(r, "x-arequestid", &rand_hex(16));
                default_header(r, "atl-traceid", &rand_hex(32));
            }),
        )
        .await;
        let _ = inner.base.set(server.url());
        FakeJira {
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

    pub fn add_project(&self, key: &str) {
        lock(&self.inner.st).projects.push((key.into(), 0));
    }
    /// Every issue, oldest first: `{"id","key","fields":{project,issuetype,summary,description,labels,created,status}}`.
    pub fn issues(&self) -> Vec<Value> {
        lock(&self.inner.st)
            .issues
            .iter()
            .map(|i| json!({"id": i.id.to_string(), "key": i.key, "fields": i.fields}))
            .collect()
    }
    /// Issues carrying `label`.
    pub fn issues_with_label(&self, label: &str) -> usize {
        lock(&self.inner.st)
            .issues
            .iter()
            .filter(|i| has_label(i, label))
            .count()
    }
    /// When on, every call answers 401 (bad or revoked API token).
    pub fn fail_auth(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Unauthorized);
    }
    /// When on, every call answers 403 (no permission in the project).
    pub fn forbid(&self, on: bool) {
        lock(&self.inner.st).mode.switch(on, AuthMode::Forbidden);
    }
}

fn has_label(i: &Issue, label: &str) -> bool {
    i.fields["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|l| l.as_str().is_some_and(|s| s.eq_ignore_ascii_case(label)))
}

fn jerr(status: u16, messages: &[&str], errors: Value) -> Response {
    json_response(status, json!({"errorMessages": messages, "errors": errors}))
}

fn field_err(field: &str, msg: &str) -> Response {
    jerr(400, &[], json!({ field: msg }))
}

async fn handle(State(f): State<Arc<Inner>>, req: Request) -> Response {
    let r = Req::read(req).await;
    f.handle(r)
}

impl Inner {
    fn base(&self) -> &str {
        self.base.get().map(String::as_str).unwrap_or("")
    }

    fn render(&self, i: &Issue) -> Value {
        json!({"id": i.id.to_string(), "key": i.key, "self": format!("{}/rest/api/3/issue/{}", self.base(), i.id), "fields": i.fields})
    }

    fn handle(&self, r: Req) -> Response {
        let mut st = lock(&self.st);
        let refusal = st
            .mode
            .check(r.auth_param("Basic") == Some(self.basic.as_str()));
        if refusal == Err(Refusal::Unauthorized) {
            let mut resp = jerr(
                401,
                &["Client must be authenticated to access this resource."],
                json!({}),
            );
            default_header(&mut resp, "x-seraph-loginreason", "AUTHENTICATED_FAILED");
            default_header(
                &mut resp,
                "www-authenticate",
                "Basic realm=\"protected-area\"",
            );
            return resp;
        }
        if refusal == Err(Refusal::Forbidden) {
            return jerr(
                403,
                &["You do not have permission to perform this operation."],
                json!({}),
            );
        }
        let segs = r.segs();
        match (r.method.as_str(), segs.as_slice()) {
            ("POST", ["rest", "api", "3", "issue"]) => self.create(&mut st, &r),
            ("GET", ["rest", "api", "3", "issue", x]) => {
                match st
                    .issues
                    .iter()
                    .find(|i| i.key.eq_ignore_ascii_case(x) || i.id.to_string() == *x)
                {
                    Some(i) => json_response(200, self.render(i)),
                    None => jerr(
                        404,
                        &["Issue does not exist or you do not have permission to see it."],
                        json!({}),
                    ),
                }
            }
            ("GET", ["rest", "api", "3", "search", "jql"]) => {
                let jql = r.query.get("jql").unwrap_or("").to_owned();
                let max = r
                    .query
                    .get("maxResults")
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(50);
                self.search(&st, &jql, max)
            }
            ("POST", ["rest", "api", "3", "search", "jql"]) => {
                let b = r.json().unwrap_or(Value::Null);
                let jql = b["jql"].as_str().unwrap_or("").to_owned();
                let max = b["maxResults"].as_u64().unwrap_or(50) as usize;
                self.search(&st, &jql, max)
            }
            (_, ["rest", "api", "3" | "2", "search"]) => jerr(
                410,
                &[
                    "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API.",
                ],
                json!({}),
            ),
            _ => jerr(
                404,
                &[format!("null for uri: {}", r.path).as_str()],
                json!({}),
            ),
        }
    }

    fn create(&self, st: &mut JState, r: &Req) -> Response {
        let Some(body) = r.json() else {
            return jerr(
                400,
                &["Unexpected character in the request body: not valid JSON."],
                json!({}),
            );
        };
        let Some(fields) = body.get("fields").filter(|f| f.is_object()) else {
            return jerr(400, &["No 'fields' in the request."], json!({}));
        };
        let project = fields["project"]["key"].as_str().unwrap_or("");
        let Some(pi) = st.projects.iter().position(|(k, _)| k == project) else {
            return field_err("project", "Specify a valid project ID or key");
        };
        if fields["issuetype"]["name"]
            .as_str()
            .is_none_or(str::is_empty)
            && fields["issuetype"]["id"].as_str().is_none()
        {
            return field_err("issuetype", "Specify an issue type");
        }
        let summary = fields["summary"].as_str().unwrap_or("");
        if summary.trim().is_empty() {
            return field_err("summary", "You must specify a summary of the issue.");
        }
        if summary.chars().count() > 255 {
            return field_err("summary", "Summary must be less than 255 characters.");
        }
        if summary.contains('\n') {
            return field_err(
                "summary",
                "The summary is invalid because it contains newline characters.",
            );
        }
        if let Some(d) = fields.get("description").filter(|d| !d.is_null()) {
            let adf =
                d.is_object() && d["type"] == "doc" && d["version"] == 1 && d["content"].is_array();
            if !adf {
                return field_err(
                    "description",
                    "Operation value must be an Atlassian Document (see the Atlassian Document Format)",
                );
            }
        }
        let labels: Vec<String> = match fields.get("labels") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => {
                let mut out = vec![];
                for l in a {
                    let Some(s) = l.as_str() else {
                        return field_err("labels", "Labels must be strings.");
                    };
                    if s.contains(' ') {
                        return field_err(
                            "labels",
                            &format!("The label '{s}' contains spaces which is invalid."),
                        );
                    }
                    if s.chars().count() > 255 {
                        return field_err("labels", "The label must not exceed 255 characters.");
                    }
                    out.push(s.to_owned());
                }
                out
            }
            Some(_) => return field_err("labels", "data was not an array"),
        };
        st.next_id += 1;
        st.projects[pi].1 += 1;
        let key = format!("{project}-{}", st.projects[pi].1);
        let mut f = fields.clone();
        f["labels"] = json!(labels);
        f["created"] = json!(Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string());
        f["status"] = json!({"name": "To Do"});
        let issue = Issue {
            id: st.next_id,
            key: key.clone(),
            project: project.into(),
            fields: f,
        };
        st.issues.push(issue.clone());
        self.effects.effect(format!(
            "issue:{}",
            labels.first().map(String::as_str).unwrap_or("")
        ));
        json_response(
            201,
            json!({"id": issue.id.to_string(), "key": key, "self": format!("{}/rest/api/3/issue/{}", self.base(), issue.id)}),
        )
    }

    fn search(&self, st: &JState, jql: &str, max: usize) -> Response {
        let clauses = match parse_jql(jql) {
            Ok(c) => c,
            Err(e) => return jerr(400, &[&format!("Error in the JQL Query: {e}")], json!({})),
        };
        let mut found: Vec<&Issue> = st
            .issues
            .iter()
            .filter(|i| clauses.iter().all(|c| c.matches(i)))
            .collect();
        found.sort_by_key(|i| i.id);
        let issues: Vec<Value> = found
            .iter()
            .take(max)
            .map(|i| {
                json!({"id": i.id.to_string(), "key": i.key, "self": format!("{}/rest/api/3/issue/{}", self.base(), i.id),
                       "fields": {"summary": i.fields["summary"], "labels": i.fields["labels"], "created": i.fields["created"]}})
            })
            .collect();
        json_response(200, json!({"issues": issues, "isLast": true}))
    }
}

enum Clause {
    Labels(Vec<String>),
    Project(String),
    Key(String),
    SummaryContains(String),
}

impl Clause {
    fn matches(&self, i: &Issue) -> bool {
        match self {
            Clause::Labels(ls) => ls.iter().any(|l| has_label(i, l)),
            Clause::Project(p) => i.project.eq_ignore_ascii_case(p),
            Clause::Key(k) => i.key.eq_ignore_ascii_case(k),
            Clause::SummaryContains(s) => i.fields["summary"]
                .as_str()
                .is_some_and(|x| x.to_lowercase().contains(&s.to_lowercase())),
        }
    }
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].replace("\\\"", "\"");
        }
    }
    s.to_owned()
}

/// A JQL subset: clauses joined by AND — `labels = x`, `labels = "x"`, `labels in (a, "b")`,
/// `project = KEY`, `key = KEY-1`, `summary ~ "text"` — and an ignored `ORDER BY ...` tail.
fn parse_jql(jql: &str) -> Result<Vec<Clause>, String> {
    let order = Regex::new(r"(?i)\s+order\s+by\s+.*$|^\s*order\s+by\s+.*$").expect("regex");
    let jql = order.replace(jql, "");
    if jql.trim().is_empty() {
        return Ok(vec![]);
    }
    let and = Regex::new(r"(?i)\s+and\s+").expect("regex");
    let clause = Regex::new(r#"(?is)^\s*(\w+)\s*(=|~|in\b)\s*(.+?)\s*$"#).expect("regex");
    and.split(&jql)
        .map(|c| {
            let m = clause
                .captures(c)
                .ok_or_else(|| format!("could not parse '{}'", c.trim()))?;
            let (field, op, val) = (m[1].to_lowercase(), m[2].to_lowercase(), m[3].to_owned());
            match (field.as_str(), op.as_str()) {
                ("labels", "=") => Ok(Clause::Labels(vec![unquote(&val)])),
                ("labels", "in") => {
                    let inner = val
                        .trim()
                        .strip_prefix('(')
                        .and_then(|v| v.strip_suffix(')'))
                        .ok_or("expected '(' after 'in'")?;
                    Ok(Clause::Labels(inner.split(',').map(unquote).collect()))
                }
                ("project", "=") => Ok(Clause::Project(unquote(&val))),
                ("key" | "issuekey", "=") => Ok(Clause::Key(unquote(&val))),
                ("summary", "~") => Ok(Clause::SummaryContains(unquote(&val))),
                _ => Err(format!(
                    "Field '{field}' with operator '{op}' is not supported by the fake."
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Fault, FaultKind, enc};
    use super::*;

    fn issue(label: &str) -> Value {
        json!({"fields": {"project": {"key": "SEC"}, "issuetype": {"name": "Incident"}, "summary": "cordon: host contained",
            "description": {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": "hi"}]}]},
            "labels": [label, "cordon"]}})
    }

    #[tokio::test]
    async fn every_post_creates_an_issue() {
        let j = FakeJira::start("bot@example.com", "tok").await;
        let c = reqwest::Client::new();
        let url = j.url();
        let post = |b: Value| {
            c.post(format!("{url}/rest/api/3/issue"))
                .basic_auth("bot@example.com", Some("tok"))
                .json(&b)
                .send()
        };
        let r1 = post(issue("soar-idem-k1")).await.unwrap();
        assert_eq!(r1.status().as_u16(), 201);
        assert!(r1.headers().contains_key("x-arequestid"));
        let v1: Value = r1.json().await.unwrap();
        assert_eq!(v1["key"], "SEC-1");
        assert!(v1["self"].as_str().unwrap().starts_with(&url));
        let v2: Value = post(issue("soar-idem-k1"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v2["key"], "SEC-2");
        assert_eq!(j.effects.count("issue:soar-idem-k1"), 2);
        assert_eq!(j.issues().len(), 2);

        for jql in [
            r#"labels = "soar-idem-k1""#,
            "labels = soar-idem-k1",
            "project = SEC AND labels in (soar-idem-k1) ORDER BY created DESC",
        ] {
            let r = c
                .get(format!(
                    "{url}/rest/api/3/search/jql?jql={}&fields=summary,labels",
                    enc(jql)
                ))
                .basic_auth("bot@example.com", Some("tok"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{jql}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["issues"].as_array().unwrap().len(), 2, "{jql}");
            assert_eq!(v["issues"][0]["fields"]["labels"][0], "soar-idem-k1");
            assert_eq!(v["isLast"], true);
        }
        let r = c
            .get(format!("{url}/rest/api/3/search?jql=x"))
            .basic_auth("bot@example.com", Some("tok"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 410);
    }

    #[tokio::test]
    async fn validation_auth_and_retry_after() {
        let j = FakeJira::start("bot@example.com", "tok").await;
        let c = reqwest::Client::new();
        let url = j.url();
        let mut plain = issue("k");
        plain["fields"]["description"] = json!("plain text");
        let r = c
            .post(format!("{url}/rest/api/3/issue"))
            .basic_auth("bot@example.com", Some("tok"))
            .json(&plain)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let v: Value = r.json().await.unwrap();
        assert!(
            v["errors"]["description"]
                .as_str()
                .unwrap()
                .starts_with("Operation value must be an Atlassian Document")
        );
        let r = c
            .post(format!("{url}/rest/api/3/issue"))
            .basic_auth("bot@example.com", Some("bad"))
            .json(&issue("k"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);

        j.faults().arm(Fault::on(
            "POST",
            "/rest/api/3/issue",
            FaultKind::RetryAfter(2),
        ));
        let r = c
            .post(format!("{url}/rest/api/3/issue"))
            .basic_auth("bot@example.com", Some("tok"))
            .json(&issue("k"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(j.effects.total(), 0);
        assert!(j.issues().is_empty());
    }
}
