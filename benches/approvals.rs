//! Approval API: `Approve` RPC latency (each answer after the durable write of the vote, the
//! re-check and the transition) and `ListPending` with 10,000 pending requests.
//!
//! Run: `cargo bench --bench approvals` (env: BENCH_PENDING=10000 BENCH_APPROVES=1000)

use std::time::{Duration, Instant};

use cordon::api::client::{ClientOptions, connect};
use cordon::api::pb;
use cordon::config::{ApproverToken, Config};
use cordon::daemon::{self, StartOptions};
use cordon::secret::{Secret, SecretRef};
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
    let pending = env("BENCH_PENDING", if quick { 50 } else { 10_000 });
    let approves = env("BENCH_APPROVES", if quick { 10 } else { 1_000 }).min(pending);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(pending, approves));
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
}

async fn run(pending: usize, approves: usize) {
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
    cfg.grpc.approvers.push(ApproverToken {
        user: "alice".into(),
        token: SecretRef::Sha256(hex::encode(Sha256::digest(b"alice-token"))),
    });
    let v = daemon::validate(cfg, "bench").expect("valid config");
    let listeners = daemon::Listeners::loopback().await.expect("bind");
    let running = daemon::start(v, listeners, StartOptions::default())
        .await
        .expect("start");
    let url = format!("http://{}/v1/alerts", running.http_addr);

    // Fill: one isolate_host request awaiting approval per alert (distinct rule and host, so no
    // correlation folds them together).
    let http = reqwest::Client::new();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..32 {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < pending {
                let body = serde_json::json!({
                    "source_alert_id": format!("b-{i}"), "title": "Encoded PowerShell",
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

    let opts = ClientOptions {
        addr: format!("http://{}", running.grpc_addr),
        token: Some(Secret::new("alice-token".into())),
        ..Default::default()
    };
    let mut c = connect(&opts).await.expect("connect");
    // ListPending: first page (100) and a full walk of every page, with 10k pending.
    let mut page = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = c
            .approvals
            .list_pending(pb::ListPendingRequest {
                limit: 100,
                after: String::new(),
            })
            .await
            .expect("list");
        page.push(t.elapsed());
        assert_eq!(r.into_inner().approvals.len(), 100.min(pending));
    }
    let t = Instant::now();
    let (mut after, mut seen, mut ids) = (String::new(), 0, Vec::new());
    loop {
        let r = c
            .approvals
            .list_pending(pb::ListPendingRequest {
                limit: 1000,
                after: after.clone(),
            })
            .await
            .expect("list");
        let list = r.into_inner().approvals;
        if list.is_empty() {
            break;
        }
        seen += list.len();
        after = list
            .last()
            .map(|a| a.approval_id.clone())
            .unwrap_or_default();
        ids.extend(
            list.into_iter()
                .filter(|a| a.action == "isolate_host")
                .map(|a| a.approval_id),
        );
    }
    let walk = t.elapsed();

    // Approve: one approver, sequential calls, each answered after its durable commit.
    let mut lat = Vec::new();
    for id in ids.iter().take(approves) {
        let t = Instant::now();
        let r = c
            .approvals
            .approve(pb::VoteRequest {
                approval_id: id.clone(),
                request_hash: String::new(),
                comment: String::new(),
            })
            .await
            .expect("approve");
        lat.push(t.elapsed());
        assert_eq!(r.into_inner().outcome, "approved");
    }
    println!(
        "approvals API, {pending} pending requests (filled in {:.1} s over HTTP)",
        fill.as_secs_f64()
    );
    println!(
        "  ListPending, first page of 100: p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut page, 0.5),
        pct(&mut page, 0.99)
    );
    println!(
        "  ListPending, walking all {seen} pending in pages of 1000: {:.0} ms",
        walk.as_secs_f64() * 1e3
    );
    println!(
        "  Approve (durable; one approver, sequential, {} calls): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    assert_eq!(running.shutdown().await, 0);
}
