//! The SOC console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `.ci/setup`) driven over WebDriver with `fantoccini`.
//! Nothing here downloads a browser. Each test polls for what the user would see, with a
//! deadline; none sleeps. The queue and case page screenshots in README.md are taken here
//! (written to `target/console-screenshots/`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::console::start_console;
use crate::support::fakes::oidc::{FakeIdp, Tamper};
use crate::support::live::{self, Vendors};
use crate::support::{TestDaemon, eventually};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver child process and one browser session; the driver is killed on drop.
struct Browser {
    c: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn browser() -> Browser {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{CHROMEDRIVER} (run .ci/setup): {e}"));
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(30, || async {
        http.get(format!("{url}/status"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("a Chromium session");
    Browser {
        c,
        driver,
        _profile: profile,
    }
}

impl Browser {
    async fn js(&self, script: &str) -> Value {
        self.c.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `script` returns something other than null/false; returns it. On timeout
    /// the failure names the script, the page's address and what it showed.
    async fn until(&self, secs: u64, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Ok(v) = self.c.execute(script, vec![]).await
                && !v.is_null()
                && v != json!(false)
            {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                let url = self.c.current_url().await.map(|u| u.to_string());
                let text = self
                    .c
                    .execute(
                        "return document.body ? document.body.innerText : ''",
                        vec![],
                    )
                    .await;
                panic!("not within {secs}s: {script}\nat {url:?}\npage: {text:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_string()
    }

    /// Clicks the element `css` finds; finds it again if a live update replaced it between
    /// the find and the click.
    async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let r = match self.c.find(Locator::Css(css)).await {
                Ok(e) => e.click().await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() >= deadline => panic!("{css}: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }

    async fn goto(&self, url: &str) {
        self.c.goto(url).await.unwrap();
    }

    async fn screenshot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(mut self) {
        let c = self.c.clone();
        c.close().await.unwrap();
        let _ = self.driver.kill();
    }
}

/// The state the page shows for an action (`data-state` of its section).
fn state_of(action_id: &str) -> String {
    format!(
        "const e = document.getElementById('action-{action_id}'); return e ? e.dataset.state : null;"
    )
}

async fn api_state(d: &TestDaemon, id: &str) -> String {
    let (_, a) = d.get(&format!("/v1/actions/{id}")).await;
    a["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_signs_in_over_oidc_approves_an_isolation_and_sees_it_run_live() {
    let v = Vendors::start().await;
    v.cs.add_host("ws-live", "aid-live");
    let idp = FakeIdp::start().await;
    let d = start_console(|cfg, root, base| {
        v.wire(root, true);
        cfg.executor.enabled = true;
        cfg.console.oidc = Some(idp.config(base));
    })
    .await;
    let (case_id, a) =
        crate::console::isolate_case(&d, "b-1", "Encoded PowerShell on ws-live", "ws-live").await;
    let id = a["action_id"].as_str().unwrap().to_string();
    let hostile = "<script>window.__xss=1</script>\"onmouseover=\"window.__xss=2";
    let (evil_case, _) = crate::console::isolate_case(&d, "b-2", hostile, "ws-042").await;
    // A freshly posted Splunk alert (password spray then impossible travel).
    let splunk = d.ingest_fixture("splunk", "splunk.json").await;
    let splunk_case = splunk["case_id"].as_str().unwrap().to_string();
    idp.next(
        "alice@example.com",
        &["pwd", "mfa"],
        Algorithm::ES256,
        Tamper::None,
    );

    let b = browser().await;
    b.goto(&format!("{}/ui", d.base)).await;
    assert_eq!(b.path().await, "/ui/login", "signed out: the sign-in page");
    b.click("#oidc-sign-in").await;
    b.until(
        20,
        &format!("return document.querySelector('tr[data-case=\"{case_id}\"]') !== null"),
    )
    .await;
    assert_eq!(b.path().await, "/ui");
    assert_eq!(
        b.js(&format!(
            "return document.querySelector('tr[data-case=\"{splunk_case}\"] a').textContent"
        ))
        .await,
        json!("Password spray then impossible travel for bob@example.com")
    );
    assert_eq!(
        b.js("return document.querySelector('.who').textContent")
            .await,
        json!("alice (oidc_mfa)")
    );
    b.screenshot("queue").await;

    // Hostile alert data is text on the queue and the case page; no script of it ran.
    let link = b
        .js(&format!(
            "return document.querySelector('tr[data-case=\"{evil_case}\"] a').textContent"
        ))
        .await;
    assert_eq!(link, json!(hostile));
    b.goto(&format!("{}/ui/cases/{evil_case}", d.base)).await;
    b.until(
        10,
        "return document.querySelector('h1.alert-title, h3.alert-title') !== null",
    )
    .await;
    assert_eq!(
        b.js("return document.querySelector('h1').textContent")
            .await,
        json!(hostile)
    );
    assert_eq!(
        b.js("return document.querySelectorAll('script').length")
            .await,
        json!(1),
        "only the console's own script"
    );
    assert_eq!(
        b.js("return document.querySelectorAll('[onmouseover],[onerror]').length")
            .await,
        json!(0)
    );
    assert_eq!(b.js("return window.__xss === undefined").await, json!(true));

    // The isolation: open it from the queue, approve with a click, watch it run.
    b.goto(&format!("{}/ui", d.base)).await;
    b.click(&format!("tr[data-case=\"{case_id}\"] a")).await;
    b.until(
        10,
        &format!("return document.querySelector('#action-{id} button.approve') !== null"),
    )
    .await;
    assert_eq!(b.path().await, format!("/ui/cases/{case_id}"));
    b.screenshot("case").await;
    b.click(&format!("#action-{id} button.approve")).await;
    // Back on the case page after the vote; from here on the page is not reloaded.
    b.until(10, &format!(
        "return document.readyState === 'complete' && document.querySelector('#action-{id} button.approve') === null && document.getElementById('action-{id}') !== null"
    ))
    .await;
    b.js("window.__mark = 'same page'; return true").await;
    let shown = b
        .until(
            30,
            &format!(
                "const s = (function(){{ {} }})(); return s === 'succeeded' ? s : null;",
                state_of(&id)
            ),
        )
        .await;
    assert_eq!(shown, json!("succeeded"));
    assert_eq!(
        b.js("return window.__mark").await,
        json!("same page"),
        "updated without a reload"
    );
    assert_eq!(api_state(&d, &id).await, "succeeded");
    assert_eq!(v.cs.effects().count("contain:aid-live"), 1);
    let vote = d
        .audit()
        .into_iter()
        .rfind(|r| r.body.kind == "vote" && r.body.action_id.as_deref() == Some(&id))
        .unwrap()
        .body
        .data;
    assert_eq!(
        (
            vote["user"].as_str(),
            vote["channel"].as_str(),
            vote["identity"].as_str()
        ),
        (Some("alice"), Some("web"), Some("oidc_mfa"))
    );

    // Sign out: no page is readable any more.
    b.click("#sign-out").await;
    b.until(10, "return location.pathname === '/ui/login'")
        .await;
    b.goto(&format!("{}/ui/cases/{case_id}", d.base)).await;
    assert_eq!(b.path().await, "/ui/login");
    b.close().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_approver_completes_a_two_person_request_from_the_live_inbox() {
    const PROD_VM: &str = "/subscriptions/3f2b8c1d-6e4a-4b7f-9c2d-8e1f0a3b5c7d/resourceGroups/rg-prod-web/providers/Microsoft.Compute/virtualMachines/prod-web-01";
    let v = Vendors::start().await;
    let d = start_console(|cfg, root, _| {
        v.wire(root, true);
        cfg.executor.enabled = true;
    })
    .await;
    let b = browser().await;
    // dave signs in with his approver token; nothing awaits him yet.
    b.goto(&format!("{}/ui/login", d.base)).await;
    b.c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(&crate::support::token_of("dave"))
        .await
        .unwrap();
    b.click("#token-sign-in").await;
    b.until(10, "return location.pathname === '/ui'").await;
    b.goto(&format!("{}/ui/approvals", d.base)).await;
    b.until(10, "return document.getElementById('inbox-empty') !== null")
        .await;
    b.js("window.__mark = 'same page'; return true").await;

    // A production containment (two people); bob casts the first vote over gRPC.
    let case_id = live::post_alert(
        &d,
        live::alert(
            "tp-1",
            "Cloud admin role grant",
            &["T1098"],
            &[("cloud_resource", PROD_VM)],
        ),
    )
    .await;
    let a = live::find_action(&d, &case_id, "contain_cloud_resource", None).await;
    assert_eq!(a["tier"], json!("two_person"), "{a}");
    let id = a["action_id"].as_str().unwrap().to_string();
    live::approve(&d, &id, &["bob"]).await;
    assert_eq!(api_state(&d, &id).await, "awaiting_approval");
    // It appears in dave's inbox without a reload.
    b.until(
        20,
        &format!("return document.querySelector('#action-{id} button.approve') !== null"),
    )
    .await;
    assert_eq!(b.js("return window.__mark").await, json!("same page"));

    // A form whose CSRF token was tampered with is refused and changes nothing (changed and
    // sent in one script, so no live update can replace the form in between).
    b.js(&format!(
        "const f = document.querySelector('#action-{id} form.vote'); \
         f.querySelector('input[name=csrf]').value = 'forged'; \
         f.requestSubmit(f.querySelector('button.approve')); return true"
    ))
    .await;
    let msg = b
        .until(
            10,
            "const m = document.getElementById('message'); return m ? m.textContent : null;",
        )
        .await;
    assert!(msg.as_str().unwrap().contains("CSRF"), "{msg}");
    assert_eq!(api_state(&d, &id).await, "awaiting_approval");

    // With the page's own token, dave's vote completes the request.
    b.goto(&format!("{}/ui/approvals", d.base)).await;
    b.until(
        10,
        &format!("return document.querySelector('#action-{id} button.approve') !== null"),
    )
    .await;
    b.click(&format!("#action-{id} button.approve")).await;
    eventually(30, || async {
        let s = api_state(&d, &id).await;
        (s != "awaiting_approval").then_some(s)
    })
    .await;
    let (_, done) = d.get(&format!("/v1/actions/{id}")).await;
    let votes = done["approval"]["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 2, "{done}");
    assert_eq!(
        (votes[1]["user"].as_str(), votes[1]["channel"].as_str()),
        (Some("dave"), Some("web"))
    );

    // mallory may not vote: she sees why, and no button.
    b.click("#sign-out").await;
    b.until(10, "return location.pathname === '/ui/login'")
        .await;
    let (pending, _) =
        crate::console::isolate_case(&d, "tp-2", "Encoded PowerShell", "ws-042").await;
    b.c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(&crate::support::token_of("mallory"))
        .await
        .unwrap();
    b.click("#token-sign-in").await;
    b.until(10, "return location.pathname === '/ui'").await;
    b.goto(&format!("{}/ui/cases/{pending}", d.base)).await;
    let refusal = b
        .until(
            10,
            "const r = document.querySelector('.refusal'); return r ? r.textContent : null;",
        )
        .await;
    assert!(
        refusal.as_str().unwrap().contains("You cannot vote"),
        "{refusal}"
    );
    assert_eq!(
        b.js("return document.querySelectorAll('button.approve').length")
            .await,
        json!(0)
    );
    b.close().await;
    d.stop().await;
}
