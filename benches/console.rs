//! Console: the queue's first page (`GET /ui`, signed in) with 100,000 open cases, a page deep
//! in the queue (`after=`), and a filtered page no case matches (the bounded index read).
//!
//! Run: `cargo bench --bench console` (env: BENCH_CASES=100000 BENCH_PAGES=200)

use std::time::{Duration, Instant};

use cordon::config::{ApproverToken, Config};
use cordon::daemon::{self, StartOptions};
use cordon::secret::SecretRef;
use sha2::{Digest, Sha256};

// The same allocator as the `cordon` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let cases = env("BENCH_CASES", if quick { 60 } else { 100_000 });
    let pages = env("BENCH_PAGES", if quick { 5 } else { 200 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(cases, pages));
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
}

/// The value of the first hidden `csrf` field of a page.
fn csrf(page: &str) -> String {
    let field = "name=\"csrf\" value=\"";
    let at = page.find(field).expect("a CSRF field") + field.len();
    page[at..].split('"').next().unwrap_or_default().to_string()
}

fn cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .map(String::from)
}

async fn run(cases: usize, pages: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = Config {
        data_dir: dir.path().join("data"),
        policies_dir: repo.join("policies"),
        playbooks_dir: repo.join("playbooks"),
        connectors_dir: repo.join("connectors"),
        ..Config::default()
    };
    cfg.policy.watch = false;
    cfg.executor.enabled = false;
    cfg.grpc.approvers.push(ApproverToken {
        user: "alice".into(),
        token: SecretRef::Sha256(hex::encode(Sha256::digest(b"alice-token"))),
    });
    let v = daemon::validate(cfg, "bench").expect("valid config");
    let listeners = daemon::Listeners::loopback().await.expect("bind");
    let running = daemon::start(v, listeners, StartOptions::default())
        .await
        .expect("start");
    let base = format!("http://{}", running.http_addr);

    // Fill: one case per alert (distinct rule and host, so correlation folds nothing), each with
    // an isolate_host request awaiting approval.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..32 {
        let (http, url) = (http.clone(), format!("{base}/v1/alerts"));
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < cases {
                let body = serde_json::json!({
                    "source_alert_id": format!("q-{i}"), "title": "Encoded PowerShell",
                    "rule": {"id": format!("r-{i}"), "name": "Suspicious PowerShell EncodedCommand"},
                    "severity": "high", "confidence": 80, "techniques": ["T1059.001"],
                    "entities": [{"kind": "host", "value": format!("bench-{i}")}]
                });
                let r = http.post(&url).body(body.to_string()).send().await.expect("post");
                assert_eq!(r.status().as_u16(), 202);
                i += 32;
            }
        }));
    }
    for t in tasks {
        t.await.expect("fill task");
    }
    let fill = t.elapsed();

    // Sign in with the approver token, as the form does.
    let login = http
        .get(format!("{base}/ui/login"))
        .send()
        .await
        .expect("login page");
    let pre = cookie(&login, "cordon_signin").expect("sign-in cookie");
    let form_csrf = csrf(&login.text().await.expect("login body"));
    let r = http
        .post(format!("{base}/ui/login"))
        .header("cookie", format!("cordon_signin={pre}"))
        .form(&[("csrf", form_csrf.as_str()), ("token", "alice-token")])
        .send()
        .await
        .expect("sign in");
    let session = cookie(&r, "cordon_session").expect("session cookie");
    let jar = format!("cordon_session={session}");

    let measure = |path: String| {
        let (http, jar, base) = (http.clone(), jar.clone(), base.clone());
        async move {
            let mut lat = Vec::new();
            for _ in 0..pages {
                let t = Instant::now();
                let r = http
                    .get(format!("{base}{path}"))
                    .header("cookie", &jar)
                    .send()
                    .await
                    .expect("page");
                assert_eq!(r.status().as_u16(), 200);
                let _ = r.text().await.expect("body");
                lat.push(t.elapsed());
            }
            lat
        }
    };
    let mut first = measure("/ui".into()).await;
    let middle = cordon::engine::read::queue(&running.store, None, cases / 2, cases, |_| true)
        .expect("index")
        .0
        .last()
        .map(|e| e.case_id.clone())
        .unwrap_or_default();
    let mut deep = measure(format!("/ui?after={middle}")).await;
    let mut none = measure("/ui?severity=critical".into()).await;
    println!(
        "console queue, {cases} open cases (filled in {:.1} s)",
        fill.as_secs_f64()
    );
    println!(
        "  first page:          p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut first, 0.5),
        pct(&mut first, 0.99)
    );
    println!(
        "  page after {}:  p50 {:.2} ms, p99 {:.2} ms",
        cases / 2,
        pct(&mut deep, 0.5),
        pct(&mut deep, 0.99)
    );
    println!(
        "  filter matching none: p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut none, 0.5),
        pct(&mut none, 0.99)
    );
    running.shutdown().await;
}
