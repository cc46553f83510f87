//! The SOC console over plain HTTP: sessions and their cookies, CSRF on every form, security
//! headers, escaping of hostile alert data, the queue's paging and filters, votes (a console
//! vote is an ordinary, Cedar-checked, recorded vote), and OpenID Connect sign-in against a
//! fake provider on loopback.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use cordon::config::Config;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::support::fakes::oidc::{FakeIdp, Tamper};
use crate::support::{self, TestDaemon};
use crate::support::{USERS, token_of};

/// Starts the daemon with every shipped user as a token approver; `f` sees the config and the
/// console's base URL (known before start: the listener is bound first).
pub async fn start_console(f: impl FnOnce(&mut Config, &Path, &str)) -> TestDaemon {
    start_console_with(Default::default(), f).await
}

/// `start_console` with the daemon's start options (a clock, for SLA breaches).
pub async fn start_console_with(
    opts: cordon::daemon::StartOptions,
    f: impl FnOnce(&mut Config, &Path, &str),
) -> TestDaemon {
    let (dir, mut cfg) = support::workspace();
    cfg.grpc.approvers = support::approvers(&USERS);
    cfg.policy.watch = false;
    support::start_bound(dir, cfg, opts, f).await
}

/// A browser without JavaScript: follows no redirect by itself, keeps cookies.
pub struct Web {
    pub base: String,
    http: reqwest::Client,
    pub cookies: Mutex<BTreeMap<String, String>>,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    }
    /// The value of the first hidden `csrf` field.
    pub fn csrf(&self) -> String {
        let field = "name=\"csrf\" value=\"";
        let at = self.body.find(field).expect("a CSRF field") + field.len();
        self.body[at..].split('"').next().unwrap().to_string()
    }
}

impl Web {
    /// Whether the browser holds a session cookie.
    pub fn has_session(&self) -> bool {
        self.cookies.lock().unwrap().contains_key("cordon_session")
    }

    pub fn new(base: &str) -> Web {
        Web {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Mutex::new(BTreeMap::new()),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        let a = Answer {
            status,
            headers,
            body,
        };
        for c in a.set_cookies() {
            let first = c.split(';').next().unwrap();
            let (k, v) = first.split_once('=').unwrap();
            if c.contains("Max-Age=0") {
                self.cookies.lock().unwrap().remove(k);
            } else {
                self.cookies.lock().unwrap().insert(k.into(), v.into());
            }
        }
        a
    }

    pub async fn get(&self, path: &str) -> Answer {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.send(self.http.get(url)).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(form)
                        .finish(),
                ),
        )
        .await
    }

    /// `post` as a browser at `origin` sends it (its `Origin` header).
    pub async fn post_from(&self, origin: &str, path: &str, form: &[(&str, &str)]) -> Answer {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("origin", origin)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(form)
                        .finish(),
                ),
        )
        .await
    }

    /// Signs in with `user`'s approver token; returns the session's CSRF token.
    pub async fn sign_in(&self, user: &str) -> String {
        let page = self.get("/ui/login").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let r = self
            .post(
                "/ui/login",
                &[("csrf", &page.csrf()), ("token", &token_of(user))],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.header("location"), "/ui");
        let q = self.get("/ui").await;
        assert_eq!(q.status, 200, "{}", q.body);
        q.csrf()
    }
}

/// Posts a native alert that proposes a one-approver `isolate_host`; returns (case, action).
pub async fn isolate_case(d: &TestDaemon, id: &str, title: &str, host: &str) -> (String, Value) {
    let body = json!({
        "source_alert_id": id,
        "title": title,
        "description": title,
        "rule": {"id": "rule-console", "name": "Malware EncodedCommand"},
        "severity": "high",
        "techniques": ["T1059"],
        "entities": [{"kind": "host", "value": host}],
    });
    let (s, ack) = d.post("/v1/alerts", body.to_string()).await;
    assert_eq!(s, 202, "{ack}");
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let case = d.case(&case_id).await;
    let a = case["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == json!("isolate_host"))
        .cloned()
        .unwrap_or_else(|| panic!("no isolate_host in {case}"));
    assert_eq!(a["state"], json!("awaiting_approval"), "{a}");
    assert_eq!(a["tier"], json!("one_approver"), "{a}");
    (case_id, a)
}

/// The request hash shown on the case page for `action_id`.
fn shown_hash(page: &str, action_id: &str) -> String {
    let at = page
        .find(&format!("id=\"action-{action_id}\""))
        .expect("the action's section");
    let rest = &page[at..];
    let field = "name=\"request_hash\" value=\"";
    let h = rest.find(field).expect("a vote form") + field.len();
    rest[h..h + 64].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_out_browser_reads_nothing_and_every_answer_carries_the_security_headers() {
    let d = start_console(|_, _, _| {}).await;
    let (case_id, _) = isolate_case(&d, "h-1", "Encoded PowerShell", "ws-042").await;
    let web = Web::new(&d.base);
    for path in [
        "/ui".to_string(),
        format!("/ui/cases/{case_id}"),
        "/ui/approvals".into(),
        "/ui/audit".into(),
    ] {
        let r = web.get(&path).await;
        assert_eq!(r.status, 303, "{path}: {}", r.body);
        assert_eq!(r.header("location"), "/ui/login", "{path}");
        assert!(!r.body.contains(&case_id), "{path} leaked the case");
    }
    assert_eq!(web.get("/ui/events").await.status, 401);
    // A made-up session cookie is no session.
    web.cookies
        .lock()
        .unwrap()
        .insert("cordon_session".into(), "forged".into());
    assert_eq!(web.get("/ui").await.status, 303);
    let login = web.get("/ui/login").await;
    assert_eq!(login.status, 200);
    let csp = login.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(login.header("x-frame-options"), "DENY");
    assert_eq!(login.header("x-content-type-options"), "nosniff");
    assert_eq!(login.header("cache-control"), "no-store");
    assert!(!login.body.contains("<script>"), "no inline script");
    let js = web.get("/ui/assets/app.js").await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").starts_with("text/javascript"));
    assert_eq!(js.header("x-content-type-options"), "nosniff");
    // An unknown path under /ui is the console's page, with the console's headers, for any
    // method (not the JSON API's answer).
    for path in [
        "/ui/nonexistent",
        "/ui/cases/x/y/z",
        "/ui/assets/nope/deeper",
    ] {
        let r = web.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.header("content-type").starts_with("text/html"), "{path}");
        assert_eq!(r.header("x-frame-options"), "DENY", "{path}");
        assert_eq!(r.header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(r.header("cache-control"), "no-store", "{path}");
        assert!(
            r.header("content-security-policy")
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_sign_in_gives_a_strict_http_only_session_that_sign_out_ends() {
    let d = start_console(|_, _, _| {}).await;
    let web = Web::new(&d.base);
    let page = web.get("/ui/login").await;
    let form_csrf = page.csrf();
    // Not an approver's token: refused, no session.
    let r = web
        .post(
            "/ui/login",
            &[("csrf", &form_csrf), ("token", "not-a-token")],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(
        r.body.contains("not an approver&#39;s token")
            || r.body.contains("not an approver's token"),
        "{}",
        r.body
    );
    assert!(!web.has_session());
    // The right token without the form's CSRF token: refused.
    web.get("/ui/login").await;
    let r = web
        .post("/ui/login", &[("token", &token_of("alice"))])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!web.has_session());
    // The refusal's form carries a fresh token (and cookie).
    let fresh = r.csrf();
    let r = web
        .post(
            "/ui/login",
            &[("csrf", &fresh), ("token", &token_of("alice"))],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("cordon_session="))
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let q = web.get("/ui").await;
    assert_eq!(q.status, 200);
    assert!(q.body.contains("alice (token)"), "{}", q.body);
    let csrf = q.csrf();
    // Sign-out needs the CSRF token too.
    let r = web.post("/ui/logout", &[("csrf", "wrong")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(web.get("/ui").await.status, 200, "still signed in");
    let session = web.cookies.lock().unwrap()["cordon_session"].clone();
    let r = web.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert!(!web.has_session());
    // The old cookie, replayed, is no session any more.
    web.cookies
        .lock()
        .unwrap()
        .insert("cordon_session".into(), session);
    assert_eq!(web.get("/ui").await.status, 303);
    d.stop().await;

    // Behind TLS the cookie is `Secure`.
    let d = start_console(|cfg, _, _| cfg.console.secure_cookies = true).await;
    let web = Web::new(&d.base);
    let csrf = web.get("/ui/login").await.csrf();
    let r = web
        .post("/ui/login", &[("csrf", &csrf), ("token", &token_of("bob"))])
        .await;
    assert!(
        r.set_cookies()
            .iter()
            .any(|c| c.starts_with("cordon_session=") && c.contains("; Secure")),
        "{:?}",
        r.set_cookies()
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_needs_the_csrf_token_and_is_an_ordinary_recorded_vote() {
    let d = start_console(|_, _, _| {}).await;
    let (case_id, a) = isolate_case(&d, "v-1", "Encoded PowerShell", "ws-042").await;
    let id = a["action_id"].as_str().unwrap();
    let web = Web::new(&d.base);
    let csrf = web.sign_in("alice").await;
    let page = web.get(&format!("/ui/cases/{case_id}")).await;
    assert_eq!(page.status, 200);
    let hash = shown_hash(&page.body, id);
    let head = d.head();
    let path = format!("/ui/actions/{id}/vote");
    for bad in [None, Some("wrong"), Some("")] {
        let mut form = vec![("decision", "approve"), ("request_hash", hash.as_str())];
        if let Some(b) = bad {
            form.push(("csrf", b));
        }
        let r = web.post(&path, &form).await;
        assert_eq!(r.status, 403, "{bad:?}: {}", r.body);
        assert!(r.body.contains("CSRF"), "{}", r.body);
    }
    // A POST from another site (its Origin) is refused even with the token.
    let r = web
        .send(
            web.http
                .post(format!("{}{path}", web.base))
                .header("origin", "https://evil.example")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("csrf={csrf}&decision=approve&request_hash={hash}")),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(d.head(), head, "a refused form records nothing");
    let (_, now) = d.get(&format!("/v1/actions/{id}")).await;
    assert_eq!(now["state"], json!("awaiting_approval"));
    // A vote on another hash than the one shown is refused by the engine (recorded).
    let other = "0".repeat(64);
    let r = web
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("request_hash", &other),
            ],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = web
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("request_hash", &hash),
                ("from", "case"),
                ("comment", "contained per runbook"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), format!("/ui/cases/{case_id}"));
    let (_, now) = d.get(&format!("/v1/actions/{id}")).await;
    assert_eq!(now["state"], json!("approved"), "{now}");
    let votes: Vec<Value> = d
        .audit()
        .into_iter()
        .filter(|r| r.body.kind == "vote" && r.body.action_id.as_deref() == Some(id))
        .map(|r| r.body.data)
        .collect();
    let last = votes.last().unwrap();
    assert_eq!(last["user"], json!("alice"));
    assert_eq!(last["channel"], json!("web"));
    assert_eq!(last["identity"], json!("token"));
    assert_eq!(last["reviewed_hash"], json!(hash));
    assert_eq!(last["comment"], json!("contained per runbook"));
    // The case page's timeline is `explain`'s story of the case: every event, in order, with
    // its sentence (the vote just cast among them).
    let page = web.get(&format!("/ui/cases/{case_id}")).await;
    let (_, story) = d.get(&format!("/v1/cases/{case_id}/explain")).await;
    let events = story["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["kind"] == json!("vote")), "{story}");
    let timeline = &page.body[page.body.find("<ol class=\"timeline\">").unwrap()..];
    let mut at = 0;
    for e in events {
        let line = format!("#{} {}", e["seq"], e["kind"].as_str().unwrap());
        let what = html_escape(e["what"].as_str().unwrap());
        let found = timeline[at..]
            .find(&line)
            .unwrap_or_else(|| panic!("{line} not in order in {timeline}"));
        at += found;
        let li_end = at + timeline[at..].find("</li>").unwrap();
        assert!(
            timeline[at..li_end].contains(&what),
            "{what} not in {}",
            &timeline[at..li_end]
        );
    }
    d.stop().await;
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_may_not_vote_sees_no_buttons_and_a_hand_made_vote_is_refused() {
    let d = start_console(|_, _, _| {}).await;
    let (case_id, a) = isolate_case(&d, "m-1", "Encoded PowerShell", "ws-042").await;
    let id = a["action_id"].as_str().unwrap();
    let alice = Web::new(&d.base);
    alice.sign_in("alice").await;
    let hash = shown_hash(&alice.get(&format!("/ui/cases/{case_id}")).await.body, id);
    let web = Web::new(&d.base);
    let csrf = web.sign_in("mallory").await;
    let page = web.get(&format!("/ui/cases/{case_id}")).await;
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("Approve</button>"),
        "no buttons for mallory"
    );
    assert!(
        page.body.contains("You cannot vote on this request"),
        "{}",
        page.body
    );
    let inbox = web.get("/ui/approvals").await;
    assert!(
        inbox.body.contains("Nothing awaits your vote"),
        "{}",
        inbox.body
    );
    let r = web
        .post(
            &format!("/ui/actions/{id}/vote"),
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("request_hash", &hash),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("vote refused"), "{}", r.body);
    let (_, now) = d.get(&format!("/v1/actions/{id}")).await;
    assert_eq!(now["state"], json!("awaiting_approval"), "{now}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_alert_fields_render_as_text_on_every_page() {
    let d = start_console(|_, _, _| {}).await;
    let title = "<script>alert(1)</script>\"onmouseover=\"alert(2)";
    let (case_id, _) =
        isolate_case(&d, "x-1\"><img src=x onerror=alert(3)>", title, "ws-042").await;
    let web = Web::new(&d.base);
    web.sign_in("alice").await;
    for path in [
        "/ui".to_string(),
        format!("/ui/cases/{case_id}"),
        "/ui/approvals".into(),
    ] {
        let page = web.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        for raw in ["<script>alert", "\"onmouseover=", "<img src=x"] {
            assert!(!page.body.contains(raw), "{path} carries {raw} unescaped");
        }
    }
    let page = web.get(&format!("/ui/cases/{case_id}")).await;
    assert!(
        page.body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;onmouseover=&quot;alert(2)"),
        "the title as text"
    );
    // The raw payload is shown, escaped.
    assert!(page.body.contains("<pre class=\"raw\">"), "{}", page.body);
    assert!(page.body.contains("&lt;img src=x onerror=alert(3)&gt;"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_pages_through_an_index_of_open_cases_and_refuses_unknown_filters() {
    let d = start_console(|_, _, _| {}).await;
    let mut cases = Vec::new();
    for (i, host) in ["ws-042", "db-07", "ws-100"].iter().enumerate() {
        let body = json!({
            "source_alert_id": format!("q-{i}"),
            "title": format!("queue case {i}"),
            "rule": {"id": format!("rule-q{i}"), "name": "Malware EncodedCommand"},
            "severity": if i == 1 { "critical" } else { "low" },
            "techniques": ["T1059"],
            "entities": [{"kind": "host", "value": host}],
        });
        let (s, ack) = d.post("/v1/alerts", body.to_string()).await;
        assert_eq!(s, 202, "{ack}");
        cases.push(ack["case_id"].as_str().unwrap().to_string());
    }
    let store = &d.running().store;
    let (first, next) = cordon::engine::read::queue(store, None, 2, 100, |_| true).unwrap();
    assert_eq!(
        first.iter().map(|e| e.case_id.clone()).collect::<Vec<_>>(),
        cases[..2]
    );
    let next = next.expect("a next page");
    let (second, end) = cordon::engine::read::queue(store, Some(&next), 2, 100, |_| true).unwrap();
    assert_eq!(
        second.iter().map(|e| e.case_id.clone()).collect::<Vec<_>>(),
        cases[2..]
    );
    assert_eq!(end, None);
    // A read bound stops a narrow filter early and says where to go on.
    let (none, cont) =
        cordon::engine::read::queue(store, None, 2, 1, |e| e.severity.as_str() == "critical")
            .unwrap();
    assert!(none.is_empty());
    assert_eq!(cont.as_deref(), Some(cases[0].as_str()));

    let web = Web::new(&d.base);
    web.sign_in("alice").await;
    let all = web.get("/ui").await;
    for c in &cases {
        assert!(all.body.contains(c.as_str()), "queue lacks {c}");
    }
    assert!(all.body.contains("Open cases (3)"), "{}", all.body);
    let critical = web.get("/ui?severity=critical").await;
    assert!(critical.body.contains(&cases[1]));
    assert!(!critical.body.contains(&cases[0]) && !critical.body.contains(&cases[2]));
    // ws-100 is in no inventory: its entity lacks context.
    assert!(all.body.contains("host:ws-100"), "{}", all.body);
    for bad in [
        "/ui?severity=apocalyptic",
        "/ui?sort=x",
        "/ui?after=../../etc",
    ] {
        let r = web.get(bad).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    d.stop().await;
}

/// A console with OpenID Connect against the fake provider.
async fn oidc_console(idp: &FakeIdp) -> TestDaemon {
    start_console(|cfg, _, base| {
        cfg.console.oidc = Some(idp.config(base));
    })
    .await
}

/// Runs an OIDC sign-in as the browser would: start → provider → callback.
async fn oidc_sign_in(web: &Web) -> Answer {
    let start = web.get("/ui/oidc/start").await;
    assert_eq!(start.status, 303, "{}", start.body);
    let at_idp = web.get(&start.header("location")).await;
    assert_eq!(at_idp.status, 303, "{}", at_idp.body);
    web.get(&at_idp.header("location")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_connect_signs_in_mapped_users_with_their_mfa_and_refuses_bad_tokens() {
    let idp = FakeIdp::start().await;
    let d = oidc_console(&idp).await;
    let (case_id, a) = isolate_case(&d, "o-1", "Encoded PowerShell", "ws-042").await;
    let id = a["action_id"].as_str().unwrap();

    // ES256 with MFA: signed in as alice (mapped by email), identity oidc_mfa.
    idp.next(
        "alice@example.com",
        &["pwd", "mfa"],
        Algorithm::ES256,
        Tamper::None,
    );
    let web = Web::new(&d.base);
    let back = oidc_sign_in(&web).await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert!(
        back.body.contains("http-equiv=\"refresh\""),
        "{}",
        back.body
    );
    let q = web.get("/ui").await;
    assert_eq!(q.status, 200);
    assert!(q.body.contains("alice (oidc_mfa)"), "{}", q.body);
    // Her vote carries the identity she signed in with.
    let page = web.get(&format!("/ui/cases/{case_id}")).await;
    let hash = shown_hash(&page.body, id);
    let r = web
        .post(
            &format!("/ui/actions/{id}/vote"),
            &[
                ("csrf", &q.csrf()),
                ("decision", "approve"),
                ("request_hash", &hash),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let vote = d
        .audit()
        .into_iter()
        .rfind(|r| r.body.kind == "vote")
        .unwrap()
        .body
        .data;
    assert_eq!(
        (vote["channel"].as_str(), vote["identity"].as_str()),
        (Some("web"), Some("oidc_mfa"))
    );

    // RS256 without MFA: identity oidc.
    idp.next("bob@example.com", &["pwd"], Algorithm::RS256, Tamper::None);
    let web = Web::new(&d.base);
    assert_eq!(oidc_sign_in(&web).await.status, 200);
    assert!(web.get("/ui").await.body.contains("bob (oidc)"));

    // Tokens that must not sign anyone in.
    for (email, tamper, why) in [
        ("alice@example.com", Tamper::Audience, "audience"),
        ("alice@example.com", Tamper::Nonce, "nonce"),
        ("alice@example.com", Tamper::Expired, "expired"),
        ("alice@example.com", Tamper::UnknownKey, "key"),
        ("stranger@example.com", Tamper::None, "no cordon user"),
    ] {
        idp.next(email, &["mfa"], Algorithm::ES256, tamper);
        let web = Web::new(&d.base);
        let r = oidc_sign_in(&web).await;
        assert!(
            r.status == 401 || r.status == 403,
            "{why}: {} {}",
            r.status,
            r.body
        );
        assert!(!web.has_session(), "{why}");
        assert_eq!(web.get("/ui").await.status, 303, "{why}");
    }

    // A callback carried into another browser (no state cookie) is refused, and so is a state
    // this daemon never issued.
    idp.next(
        "alice@example.com",
        &["mfa"],
        Algorithm::ES256,
        Tamper::None,
    );
    let web = Web::new(&d.base);
    let start = web.get("/ui/oidc/start").await;
    let at_idp = web.get(&start.header("location")).await;
    let other = Web::new(&d.base);
    let r = other.get(&at_idp.header("location")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!other.has_session());
    let r = web.get("/ui/oidc/callback?code=x&state=never-issued").await;
    assert_eq!(r.status, 400);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_connect_trusts_only_a_verified_email_and_compares_it_in_any_case() {
    let idp = FakeIdp::start().await;
    let d = oidc_console(&idp).await;
    // An address the provider has not verified (false, or not said) signs no one in.
    for (tamper, why) in [
        (Tamper::EmailUnverified, "email_verified false"),
        (Tamper::EmailVerifiedAbsent, "email_verified absent"),
    ] {
        idp.next("alice@example.com", &["mfa"], Algorithm::ES256, tamper);
        let web = Web::new(&d.base);
        let r = oidc_sign_in(&web).await;
        assert_eq!(r.status, 401, "{why}: {}", r.body);
        assert!(
            r.body
                .contains("the identity provider has not verified this email address"),
            "{why}: {}",
            r.body
        );
        assert!(!web.has_session(), "{why}");
        assert_eq!(web.get("/ui").await.status, 303, "{why}");
    }
    // A verified address is the entity file's in another case: the same person.
    idp.next(
        "Alice@EXAMPLE.com",
        &["pwd"],
        Algorithm::RS256,
        Tamper::None,
    );
    let web = Web::new(&d.base);
    let r = oidc_sign_in(&web).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(web.get("/ui").await.body.contains("alice (oidc)"));
    assert_eq!(idp.tokens_issued(), 3);
    // Each attempt is on record, with why the refused ones were refused.
    let records = sign_in_records(&d, "console_sign_in");
    let seen: Vec<(&Value, &Value, &Value)> = records
        .iter()
        .map(|r| (&r["method"], &r["outcome"], &r["reason"]))
        .collect();
    let (oidc, refused, accepted, why) = (
        json!("oidc"),
        json!("refused"),
        json!("accepted"),
        json!("token_refused"),
    );
    assert_eq!(
        seen,
        vec![
            (&oidc, &refused, &why),
            (&oidc, &refused, &why),
            (&oidc, &accepted, &Value::Null)
        ],
        "{records:?}"
    );
    assert!(
        records[0]["message"]
            .as_str()
            .unwrap()
            .contains("has not verified this email address")
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_started_sign_ins_cannot_lock_a_person_out() {
    let idp = FakeIdp::start().await;
    let d = oidc_console(&idp).await;
    idp.next(
        "alice@example.com",
        &["mfa"],
        Algorithm::ES256,
        Tamper::None,
    );
    // A sign-in started before the flood...
    let early = Web::new(&d.base);
    let start = early.get("/ui/oidc/start").await;
    assert_eq!(start.status, 303, "{}", start.body);
    let early_at_idp = early.get(&start.header("location")).await;
    // ...then as many unauthenticated starts as there is room for.
    let flood = Web::new(&d.base);
    for _ in 0..cordon::http::console::OIDC_PENDING_MAX {
        assert_eq!(flood.get("/ui/oidc/start").await.status, 303);
    }
    // A fresh start still works, through to a session.
    let web = Web::new(&d.base);
    let back = oidc_sign_in(&web).await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert!(web.get("/ui").await.body.contains("alice (oidc_mfa)"));
    // The oldest one under way made room: its callback is refused and signs no one in.
    let r = early.get(&early_at_idp.header("location")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("unknown, expired"), "{}", r.body);
    assert!(!early.has_session());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_before_the_queue_index_gets_it_at_start_and_the_audit_page_shows_the_head()
{
    let mut d = start_console(|_, _, _| {}).await;
    let (case_id, _) = isolate_case(&d, "i-1", "Encoded PowerShell", "ws-042").await;
    let cfg = d.config.clone();
    assert_eq!(d.running.take().unwrap().shutdown().await, 0);
    // What an older build left: cases without their `q/` entries and without the marker.
    {
        let store =
            cordon::store::Store::open(&cfg.data_dir, &cordon::store::StoreOptions::default())
                .unwrap();
        let mut txn = store.begin();
        let keys = store
            .keys_after(cordon::engine::keys::QUEUE_PREFIX, None, usize::MAX)
            .unwrap();
        assert_eq!(keys.len(), 1, "one open case");
        for k in keys {
            txn.delete(k);
        }
        txn.delete(cordon::engine::keys::QUEUE_BUILT.to_vec());
        store.commit(txn).await.unwrap();
        assert!(
            cordon::engine::read::queue(&store, None, 10, 10, |_| true)
                .unwrap()
                .0
                .is_empty()
        );
        store.flush().unwrap();
    }
    let d = support::start_in(d.dir, cfg, None).await;
    let web = Web::new(&d.base);
    web.sign_in("alice").await;
    let q = web.get("/ui").await;
    assert!(q.body.contains(&case_id), "{}", q.body);
    let audit = web.get("/ui/audit").await;
    assert_eq!(audit.status, 200);
    let head = d.running().store.head();
    assert!(
        audit.body.contains(&format!("#{} ", head.seq)) && audit.body.contains(&head.hash),
        "{}",
        audit.body
    );
    assert!(audit.body.contains("signed checkpoints are not configured"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_announces_durable_changes_and_ends_at_sign_out_and_shutdown() {
    let mut d = start_console(|_, _, _| {}).await;
    let web = Web::new(&d.base);
    let csrf = web.sign_in("alice").await;
    let open = |web: &Web| {
        web.http
            .get(format!("{}/ui/events", web.base))
            .header("cookie", web.cookie_header())
            .send()
    };
    let mut events = open(&web).await.unwrap();
    assert_eq!(events.status().as_u16(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (_, a) = isolate_case(&d, "e-1", "Encoded PowerShell", "ws-042").await;
    let id = a["action_id"].as_str().unwrap();
    let mut seen = String::new();
    while !seen.contains(&format!("event: change\ndata: {id}")) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), events.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream is open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Sign-out ends the stream at its next event.
    assert_eq!(web.post("/ui/logout", &[("csrf", &csrf)]).await.status, 303);
    isolate_case(&d, "e-2", "Encoded PowerShell", "ws-100").await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ended after sign-out");
    // At shutdown the daemon ends an open stream itself (a clean end of the body, not a
    // connection cut when the drain gives up).
    let web = Web::new(&d.base);
    web.sign_in("bob").await;
    let mut open = open(&web).await.unwrap();
    let stop = tokio::spawn(d.running.take().unwrap().shutdown());
    let end = loop {
        match open.chunk().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(matches!(end, Ok(None)), "the stream was cut: {end:?}");
    assert_eq!(stop.await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_user_is_removed_from_the_entity_files_and_policies_reload() {
    let d = start_console(|_, _, _| {}).await;
    let mallory = Web::new(&d.base);
    mallory.sign_in("mallory").await;
    let alice = Web::new(&d.base);
    alice.sign_in("alice").await;
    let stream = open_events(&mallory).await;
    assert_eq!(stream.status().as_u16(), 200);

    // Mallory leaves the entity files; the reload puts that in force.
    let people = d.config.policies_dir.join("people.entities.json");
    let mut entities: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&people).unwrap()).unwrap();
    let before = entities.len();
    entities.retain(|e| e["uid"]["id"] != json!("mallory"));
    assert_eq!(entities.len(), before - 1);
    std::fs::write(&people, serde_json::to_string(&entities).unwrap()).unwrap();
    let (s, body) = d.post("/v1/policies/reload", "").await;
    assert_eq!(s, 200, "{body}");

    // Her next request finds no session: sent to sign in, and the session is gone for good.
    let q = mallory.get("/ui").await;
    assert_eq!(q.status, 303);
    assert_eq!(q.header("location"), "/ui/login");
    assert_eq!(
        mallory.get("/ui/approvals").await.header("location"),
        "/ui/login"
    );
    // Her token no longer signs her in.
    let page = mallory.get("/ui/login").await;
    let r = mallory
        .post(
            "/ui/login",
            &[("csrf", &page.csrf()), ("token", &token_of("mallory"))],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("not a user of the policy entity files"),
        "{}",
        r.body
    );
    assert_eq!(mallory.get("/ui").await.status, 303);
    // Her live-update stream ends at the next change.
    isolate_case(&d, "gone-1", "Encoded PowerShell", "ws-042").await;
    ends(stream).await;
    // Alice, still a user, is still signed in.
    assert_eq!(alice.get("/ui").await.status, 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_that_rewrites_host_the_public_origin_is_the_one_forms_may_come_from() {
    const PUBLIC: &str = "https://cordon.example.org";
    let d = start_console(|cfg, _, _| cfg.console.public_origin = Some(format!("{PUBLIC}/"))).await;
    let web = Web::new(&d.base);
    // The browser is at the public origin; the proxy sent the request on to 127.0.0.1.
    let page = web.get("/ui/login").await;
    let r = web
        .post_from(
            PUBLIC,
            "/ui/login",
            &[("csrf", &page.csrf()), ("token", &token_of("alice"))],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let csrf = web.get("/ui").await.csrf();
    // An Origin naming the listener itself is not the console's origin any more.
    let r = web
        .post_from(&d.base, "/ui/logout", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("the request came from another origin"),
        "{}",
        r.body
    );
    assert_eq!(web.get("/ui").await.status, 200, "still signed in");
    let r = web
        .post_from(PUBLIC, "/ui/logout", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(web.get("/ui").await.status, 303, "signed out");
    d.stop().await;

    // Without it, the Origin's host must be the request's Host; another site is told so.
    let d = start_console(|_, _, _| {}).await;
    let web = Web::new(&d.base);
    let page = web.get("/ui/login").await;
    let r = web
        .post_from(
            "https://evil.example",
            "/ui/login",
            &[("csrf", &page.csrf()), ("token", &token_of("alice"))],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("the request came from another origin"),
        "{}",
        r.body
    );
    assert!(!web.has_session());
    // The refusal came with a fresh form; from the console's own origin it signs in.
    let r = web
        .post_from(
            &d.base,
            "/ui/login",
            &[("csrf", &r.csrf()), ("token", &token_of("alice"))],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    d.stop().await;
}

/// The `console_sign_in` / `console_sign_out` records, in order.
fn sign_in_records(d: &TestDaemon, kind: &str) -> Vec<Value> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == kind)
        .map(|r| r.body.data)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_and_sign_outs_are_recorded_and_refused_sign_ins_at_a_bounded_rate() {
    let d = start_console(|_, _, _| {}).await;
    let web = Web::new(&d.base);
    let csrf = web.sign_in("alice").await;
    let r = web.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    let ins = sign_in_records(&d, "console_sign_in");
    assert_eq!(ins.len(), 1, "{ins:?}");
    assert_eq!(
        (
            &ins[0]["outcome"],
            &ins[0]["method"],
            &ins[0]["user"],
            &ins[0]["identity"]
        ),
        (
            &json!("accepted"),
            &json!("token"),
            &json!("alice"),
            &json!("token")
        ),
        "{ins:?}"
    );
    assert_eq!(ins[0]["peer"], json!("127.0.0.1"));
    let outs = sign_in_records(&d, "console_sign_out");
    assert_eq!(outs.len(), 1, "{outs:?}");
    assert_eq!(outs[0]["user"], json!("alice"));

    // Refused sign-ins are recorded with why, never with what was typed; anyone can send them,
    // so at most 60 a minute are.
    const TYPED: &str = "not-a-token-but-a-canary-7f3a";
    let mut page = web.get("/ui/login").await;
    for _ in 0..70 {
        let r = web
            .post("/ui/login", &[("csrf", &page.csrf()), ("token", TYPED)])
            .await;
        assert_eq!(r.status, 401, "{}", r.body);
        page = r;
    }
    let refused: Vec<Value> = sign_in_records(&d, "console_sign_in")
        .into_iter()
        .filter(|r| r["outcome"] == json!("refused"))
        .collect();
    assert_eq!(refused.len(), 60);
    assert!(
        refused.iter().all(|r| r["reason"] == json!("bad_token")),
        "{refused:?}"
    );
    assert!(
        d.audit()
            .iter()
            .all(|r| !serde_json::to_string(&r.body.data).unwrap().contains(TYPED)),
        "the typed token reached the audit store"
    );
    // An accepted sign-in is recorded whatever the rate of refusals.
    let web = Web::new(&d.base);
    web.sign_in("bob").await;
    let last = sign_in_records(&d, "console_sign_in").pop().unwrap();
    assert_eq!(
        (&last["outcome"], &last["user"]),
        (&json!("accepted"), &json!("bob"))
    );
    d.stop().await;
}

/// Opens `/ui/events` for `web`'s session; the answer is left unread.
async fn open_events(web: &Web) -> reqwest::Response {
    web.http
        .get(format!("{}/ui/events", web.base))
        .header("cookie", web.cookie_header())
        .send()
        .await
        .unwrap()
}

/// Tries `n` live-update streams for `web`'s session: the ones opened; each refused one must be
/// a 429 saying `refusal`.
async fn open_streams(web: &Web, n: usize, refusal: &str) -> Vec<reqwest::Response> {
    let mut open = Vec::new();
    for _ in 0..n {
        let r = open_events(web).await;
        match r.status().as_u16() {
            200 => open.push(r),
            429 => {
                let why = r.text().await.unwrap();
                assert!(why.contains(refusal), "{why}");
            }
            s => panic!("unexpected {s}"),
        }
    }
    open
}

/// Reads a live-update stream until the daemon ends it (within 10 s, or the test fails).
async fn ends(mut events: reqwest::Response) {
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream was not ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_update_streams_are_capped_per_session_and_in_all_so_ingest_keeps_connections() {
    // 24 connections: at most 6 streams in all (a quarter), 4 per session.
    let d = start_console(|cfg, _, _| cfg.http.max_connections = 24).await;
    let alice = Web::new(&d.base);
    let alice_csrf = alice.sign_in("alice").await;
    let bob = Web::new(&d.base);
    bob.sign_in("bob").await;

    // One session trying to hold every connection gets 4 streams; the rest are refused.
    let alice_streams = open_streams(&alice, 24, "already has 4 live-update streams").await;
    assert_eq!(alice_streams.len(), 4);
    // Another session gets what is left of the share of all connections.
    let mut bob_streams = open_streams(&bob, 24, "too many live-update streams").await;
    assert_eq!(bob_streams.len(), 2);

    // Ingest and the health check still get through, on connections of their own.
    let (s, ack) = d
        .post(
            "/v1/alerts",
            json!({
                "source_alert_id": "sse-1",
                "title": "Encoded PowerShell",
                "rule": {"id": "rule-console", "name": "Malware EncodedCommand"},
                "severity": "high",
                "entities": [{"kind": "host", "value": "ws-042"}],
            })
            .to_string(),
        )
        .await;
    assert_eq!(s, 202, "{ack}");
    let health = reqwest::get(format!("{}/healthz", d.base)).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // Sign-out ends the session's streams at once (no event needed) and gives their places back.
    assert_eq!(
        alice
            .post("/ui/logout", &[("csrf", &alice_csrf)])
            .await
            .status,
        303
    );
    for s in alice_streams {
        ends(s).await;
    }
    for _ in 0..2 {
        let r = open_events(&bob).await;
        assert_eq!(r.status().as_u16(), 200);
        bob_streams.push(r);
    }
    assert_eq!(open_events(&bob).await.status().as_u16(), 429);
    d.stop().await;
}

/// The `<tr>` of `case_id` in a queue page, if it is there.
fn queue_row<'a>(page: &'a str, case_id: &str) -> Option<&'a str> {
    let at = page.find(&format!("data-case=\"{case_id}\""))?;
    let rest = &page[at..];
    Some(&rest[..rest.find("</tr>").unwrap_or(rest.len())])
}

const HOSTILE: &str = "<script>alert(1)</script>\"onmouseover=alert(2)";
const HOSTILE_SHOWN: &str = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;onmouseover=alert(2)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_operations_from_the_console_are_cedar_checked_recorded_and_shown_in_the_queue() {
    // The engine's clock runs five hours behind: the high case opened "five hours ago" (its SLA
    // is four hours), so the console, which judges SLAs against the real time, shows it breached.
    let clock: cordon::engine::Clock =
        std::sync::Arc::new(|| chrono::Utc::now() - chrono::Duration::hours(5));
    let d = start_console_with(
        cordon::daemon::StartOptions {
            clock,
            ..Default::default()
        },
        |cfg, dir, _| cfg.learning.proposals_dir = dir.join("proposals"),
    )
    .await;
    let (case_id, _) = isolate_case(&d, "op-1", "Encoded PowerShell", "ws-077").await;
    let op = format!("/ui/cases/{case_id}/op");
    let before = d.case(&case_id).await["case"].clone();

    // A form without the session's CSRF token is refused and records nothing.
    let mallory = Web::new(&d.base);
    let m_csrf = mallory.sign_in("mallory").await;
    let head = d.head();
    for bad in [None, Some("wrong")] {
        let mut form = vec![
            ("op", "close"),
            ("disposition", "false_positive"),
            ("reason", "noise"),
        ];
        if let Some(b) = bad {
            form.push(("csrf", b));
        }
        let r = mallory.post(&op, &form).await;
        assert_eq!(r.status, 403, "{bad:?}: {}", r.body);
        assert!(r.body.contains("CSRF"), "{}", r.body);
    }
    assert_eq!(
        d.head(),
        head,
        "a form without its CSRF token records nothing"
    );

    // A user the policies refuse sees why; the case is unchanged and the refusal is recorded
    // as a web case operation.
    let r = mallory
        .post(
            &op,
            &[
                ("csrf", &m_csrf),
                ("op", "close"),
                ("disposition", "false_positive"),
                ("reason", "noise"),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("case operation refused"), "{}", r.body);
    assert_eq!(
        d.case(&case_id).await["case"],
        before,
        "a refused close changes nothing"
    );
    let refusal = d.audit().into_iter().last().unwrap();
    assert_eq!(refusal.body.kind, "case_op_refused");
    assert_eq!(refusal.body.data["channel"], json!("web"));
    assert_eq!(refusal.body.data["user"], json!("mallory"));
    assert_eq!(refusal.body.data["identity"], json!("token"));

    // Bad input is refused with the reason, before the engine: nothing recorded.
    let alice = Web::new(&d.base);
    let csrf = alice.sign_in("alice").await;
    let head = d.head();
    let r = alice
        .post(
            &op,
            &[
                ("csrf", &csrf),
                ("op", "close"),
                ("disposition", "maybe"),
                ("reason", "x"),
            ],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("disposition"), "{}", r.body);
    assert_eq!(d.head(), head);

    // Assign and note; the queue row shows the owner and the SLA breach; the owner filter works.
    for form in [
        vec![
            ("csrf", csrf.as_str()),
            ("op", "assign"),
            ("owner", "alice"),
        ],
        vec![("csrf", csrf.as_str()), ("op", "note"), ("text", HOSTILE)],
    ] {
        let r = alice.post(&op, &form).await;
        assert_eq!(r.status, 303, "{form:?}: {}", r.body);
        assert_eq!(r.header("location"), format!("/ui/cases/{case_id}"));
    }
    let q = alice.get("/ui?owner=alice").await;
    assert_eq!(q.status, 200, "{}", q.body);
    let row = queue_row(&q.body, &case_id).expect("the case in alice's queue");
    assert!(row.contains("<td class=\"owner\">alice</td>"), "{row}");
    assert!(row.contains("BREACHED"), "{row}");
    let q = alice.get("/ui?owner=bob").await;
    assert!(queue_row(&q.body, &case_id).is_none(), "{}", q.body);
    let q = alice.get("/ui?breached=1").await;
    assert!(queue_row(&q.body, &case_id).is_some(), "{}", q.body);

    // The case page shows the owner and the note, escaped.
    let page = alice.get(&format!("/ui/cases/{case_id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(HOSTILE_SHOWN), "{}", page.body);
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(page.body.contains("id=\"close-form\""), "{}", page.body);

    // Close as a true positive from the form: a recorded web case operation.
    let r = alice
        .post(
            &op,
            &[
                ("csrf", &csrf),
                ("op", "close"),
                ("disposition", "true_positive"),
                ("reason", "confirmed loader"),
                ("intel_ref", "intel-2026-077"),
                ("missed", HOSTILE),
                ("cancel_pending", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let c = d.case(&case_id).await;
    assert_eq!(c["case"]["state"], json!("closed"), "{c}");
    let of_case = |kind: &str| {
        d.audit()
            .into_iter()
            .find(|r| r.body.kind == kind && r.body.case_id.as_deref() == Some(&case_id))
            .unwrap_or_else(|| panic!("no {kind} record"))
            .body
            .data
    };
    assert_eq!(of_case("case_closed")["closure"]["by"], json!("alice"));
    let cancelled = of_case("case_requests_cancelled");
    assert_eq!(cancelled["by"]["channel"], json!("web"), "{cancelled}");
    let assigned = of_case("case_assigned");
    assert_eq!(assigned["by"]["channel"], json!("web"), "{assigned}");
    assert_eq!(assigned["by"]["identity"], json!("token"), "{assigned}");
    let page = alice.get(&format!("/ui/cases/{case_id}")).await;
    assert!(page.body.contains("id=\"closure\""), "{}", page.body);
    assert!(page.body.contains("id=\"reopen-form\""), "{}", page.body);

    // The learning board lists the case's proposals, their files escaped, and the charts.
    let board = alice.get("/ui/learning").await;
    assert_eq!(board.status, 200, "{}", board.body);
    let (_, v) = d
        .get(&format!("/v1/learning/proposals?case={case_id}"))
        .await;
    let ps = v["proposals"].as_array().unwrap().clone();
    assert!(!ps.is_empty(), "{v}");
    for p in &ps {
        let id = p["id"].as_str().unwrap();
        assert!(
            board.body.contains(&format!("id=\"proposal-{id}\"")),
            "{id} not on the board"
        );
    }
    assert!(!board.body.contains("<script>alert"), "{}", board.body);
    assert!(
        board.body.contains(HOSTILE_SHOWN),
        "the missed text, escaped: {}",
        board.body
    );
    for chart in ["chart-heat", "chart-intel", "chart-lead"] {
        assert!(
            board.body.contains(&format!("<svg id=\"{chart}\"")),
            "{chart}: {}",
            board.body
        );
    }
    assert!(board.body.contains("<rect"), "{}", board.body);
    assert!(board.body.contains("id=\"audit-head\""));

    // Accept one from the board: its files are written and `learning_accepted` recorded.
    let backlog = ps
        .iter()
        .find(|p| p["kind"] == json!("detection_backlog"))
        .expect("a detection backlog proposal");
    let id = backlog["id"].as_str().unwrap();
    let path = format!("/ui/learning/{id}/op");
    let r = mallory
        .post(&path, &[("csrf", &m_csrf), ("op", "accept")])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = alice.post(&path, &[("op", "accept")]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = alice
        .post(&path, &[("csrf", &csrf), ("op", "dismiss")])
        .await;
    assert_eq!(r.status, 400, "a dismissal needs a reason: {}", r.body);
    let r = alice
        .post(
            &path,
            &[("csrf", &csrf), ("op", "accept"), ("reason", "on the list")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), "/ui/learning");
    let (_, p) = d.get(&format!("/v1/learning/proposals/{id}")).await;
    assert_eq!(p["state"], json!("accepted"), "{p}");
    let written = p["resolution"]["written"][0].as_str().unwrap();
    assert!(std::path::Path::new(written).is_file(), "{p}");
    let accepted = d
        .audit()
        .into_iter()
        .filter(|r| r.body.kind == "learning_accepted")
        .count();
    assert_eq!(accepted, 1);
    let board = alice.get("/ui/learning").await;
    assert!(!board.body.contains(&format!("id=\"proposal-{id}\"")));
    d.stop().await;
}
