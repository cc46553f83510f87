//! Durable ingest: alerts/s and ack latency (p50/p99) over real HTTP against the real daemon,
//! with every ack after a durable group commit (flush + fdatasync). Also measures the data
//! disk's raw fdatasync rate so the figures mean something on another machine.
//!
//! Run: `cargo bench --bench ingest` (env: BENCH_ALERTS=20000 BENCH_CLIENTS=64)

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cordon::config::Config;
use cordon::daemon::{self, StartOptions};

// The same allocator as the `cordon` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // `cargo test --all-targets` runs benches once in test mode: keep that quick.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    let alerts: usize = std::env::var("BENCH_ALERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 200 } else { 20_000 });
    let clients: usize = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(alerts, clients));
}

fn fdatasync_rate(dir: &std::path::Path) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let n = 300;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&[0u8; 300]).expect("write");
        f.sync_data().expect("fdatasync");
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    rate
}

async fn run(alerts: usize, clients: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = Config {
        data_dir: dir.path().join("data"),
        policies_dir: repo.join("policies"),
        playbooks_dir: repo.join("playbooks"),
        connectors_dir: repo.join("connectors"),
        ..Config::default()
    };
    cfg.enrichment.assets = Some(repo.join("deploy/enrichment/assets.toml"));
    cfg.enrichment.identities = Some(repo.join("deploy/enrichment/identities.toml"));
    cfg.enrichment.intel = Some(repo.join("deploy/enrichment/intel.toml"));
    cfg.policy.watch = false;
    let raw_rate = fdatasync_rate(dir.path());
    let v = daemon::validate(cfg, "bench").expect("valid config");
    let listeners = daemon::Listeners::loopback().await.expect("bind");
    let running = daemon::start(v, listeners, StartOptions::default())
        .await
        .expect("start");
    let url = format!("http://{}/v1/alerts", running.http_addr);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= alerts {
                    break;
                }
                // Realistic: a malware alert on one of 500 hosts; most open a case with six steps.
                let body = serde_json::json!({
                    "source_alert_id": format!("bench-{i}"),
                    "title": "Encoded PowerShell from Office",
                    "rule": {"id": format!("rule-{}", i % 50), "name": "Suspicious PowerShell EncodedCommand from Office"},
                    "severity": "high", "confidence": 80, "techniques": ["T1059.001"],
                    "entities": [{"kind": "host", "value": format!("ws-{}", i % 500)}, {"kind": "ip", "value": format!("203.0.113.{}", i % 250)}]
                })
                .to_string();
                let t = Instant::now();
                let r = client.post(&url).body(body).send().await.expect("post");
                assert_eq!(r.status().as_u16(), 202);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    let records = running.store.head().seq;
    let size = dir_size(&dir.path().join("data"));
    println!(
        "durable ingest over HTTP: {alerts} alerts, {clients} concurrent clients, {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput: {:.0} alerts/s (acked after flush + fdatasync)",
        alerts as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  ack latency: p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
        p(0.5),
        p(0.99),
        p(0.999),
        p(1.0)
    );
    println!(
        "  audit records: {records} ({:.1} per alert); store size {:.1} MiB ({:.0} bytes/alert)",
        records as f64 / alerts as f64,
        size as f64 / (1 << 20) as f64,
        size as f64 / alerts as f64
    );
    println!(
        "  raw fdatasync rate of the data disk: {raw_rate:.0}/s (one flush per alert would cap ingest there)"
    );
    let code = running.shutdown().await;
    assert_eq!(code, 0);
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    if e.path().is_dir() {
                        dir_size(&e.path())
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
