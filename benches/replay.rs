//! Replay and simulate rates, and what a case costs in the store, on the load bench's alert mix.
//!
//! Ingests BENCH_ALERTS alerts of `benches/load.rs`'s mix (same generator) into a fresh store
//! through the real daemon (in-process, loopback HTTP, executor off: decisions, not vendor
//! calls), stops it, then prints: store bytes per alert and per case, audit records per case,
//! and the rates of `policy::replay::replay` (every recorded decision with its recorded set)
//! and `policy::replay::simulate` (every step decision under the shipped set) over that store,
//! with the time they would take for a million audit records.
//!
//! Run: `cargo bench --bench replay` (env: BENCH_ALERTS=4000, BENCH_DATA=DIR to keep the store, BENCH_COMPRESSION=on for a store
//! with `[store] compression`)

use std::sync::Arc;
use std::time::Instant;

use cordon::config::Config;
use cordon::daemon::{self, StartOptions};
use cordon::policy::replay::{self, Filter};
use cordon::store::Store;

#[allow(dead_code, clippy::all)]
#[path = "load.rs"]
mod load;

fn main() {
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    let alerts: u64 = std::env::var("BENCH_ALERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 40 } else { 4000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    // BENCH_DATA=DIR keeps the store there for a look afterwards (it must not exist yet).
    let data = match std::env::var_os("BENCH_DATA") {
        Some(d) => std::path::PathBuf::from(d),
        None => dir.path().join("data"),
    };
    rt.block_on(ingest(&data, alerts));
    measure(&data, alerts);
}

async fn ingest(data: &std::path::Path, alerts: u64) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = Config {
        data_dir: data.to_path_buf(),
        policies_dir: repo.join("policies"),
        playbooks_dir: repo.join("playbooks"),
        connectors_dir: repo.join("connectors"),
        sources_dir: repo.join("sources"),
        ..Config::default()
    };
    cfg.enrichment.assets = Some(repo.join("deploy/enrichment/assets.toml"));
    cfg.enrichment.identities = Some(repo.join("deploy/enrichment/identities.toml"));
    cfg.enrichment.intel = Some(repo.join("deploy/enrichment/intel.toml"));
    cfg.policy.watch = false;
    cfg.executor.enabled = false;
    cfg.store.compression = std::env::var("BENCH_COMPRESSION").is_ok_and(|v| v == "on");
    let v = daemon::validate(cfg, "bench").expect("valid config");
    let listeners = daemon::Listeners::loopback().await.expect("bind");
    let running = daemon::start(v, listeners, StartOptions::default())
        .await
        .expect("start");
    let url = format!("http://{}/v1/alerts", running.http_addr);
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= alerts {
                    break;
                }
                let r = client
                    .post(&url)
                    .body(load::alert_body(1, i))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status().as_u16(), 202);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    assert_eq!(running.shutdown().await, 0);
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn measure(data: &std::path::Path, alerts: u64) {
    let size = dir_size(data);
    let store = Store::open_read_only(data).expect("open the store");
    let records = store.head().seq;
    let all = store.audit_records(1, usize::MAX).expect("read");
    let cases: std::collections::BTreeSet<&str> = all
        .iter()
        .filter(|r| r.body.kind == "case_transition" && r.body.data["from"].is_null())
        .filter_map(|r| r.body.case_id.as_deref())
        .collect();
    let (cases_n, opened_records) = {
        let ids = &cases;
        let n = all
            .iter()
            .filter(|r| r.body.case_id.as_deref().is_some_and(|c| ids.contains(c)))
            .count();
        (ids.len().max(1) as f64, n as f64)
    };
    let audit_bytes: usize = all
        .iter()
        .map(|r| serde_json::to_vec(&r.body).map_or(0, |b| b.len() + 65))
        .sum();
    let mut by_kind: std::collections::BTreeMap<&str, (u64, usize)> = Default::default();
    for r in &all {
        let e = by_kind.entry(r.body.kind.as_str()).or_default();
        e.0 += 1;
        e.1 += serde_json::to_vec(&r.body).map_or(0, |b| b.len() + 65);
    }
    println!("store for {alerts} alerts of the load mix: {records} audit records");
    for (k, (n, b)) in &by_kind {
        println!(
            "    {k}: {n} records, {:.2} KiB per alert",
            *b as f64 / alerts as f64 / 1024.0
        );
    }
    println!(
        "  store: {:.1} MiB on disk, {:.1} KiB per alert; audit records {:.1} KiB per alert",
        size as f64 / (1 << 20) as f64,
        size as f64 / alerts as f64 / 1024.0,
        audit_bytes as f64 / alerts as f64 / 1024.0
    );
    println!(
        "  cases opened: {}; {:.1} audit records per case; {:.1} KiB of store per case",
        cases.len(),
        opened_records / cases_n,
        size as f64 / cases_n / 1024.0
    );
    println!(
        "  keys and bytes per case by key family (key + value as stored, packed; before sled's own overhead):"
    );
    let usage = store.usage().expect("usage");
    let logical: u64 = usage.values().map(|(_, b)| b).sum();
    for (family, (n, b)) in &usage {
        println!(
            "    {family}: {:.1} keys, {:.2} KiB",
            *n as f64 / cases_n,
            *b as f64 / cases_n / 1024.0
        );
    }
    println!(
        "    all keys: {:.2} KiB per case; sled's files hold {:.2}x that",
        logical as f64 / cases_n / 1024.0,
        size as f64 / logical.max(1) as f64
    );
    let t = Instant::now();
    let r = replay::replay(&store, &Filter::default()).expect("replay");
    let el = t.elapsed().as_secs_f64();
    assert!(
        r.all_identical(),
        "replay diverged: {:?}",
        r.diverged.first()
    );
    println!(
        "  replay: {} decisions identical in {el:.2} s: {:.0} decisions/s, {:.0} audit records/s (a million records: {:.1} min)",
        r.replayed,
        r.replayed as f64 / el,
        records as f64 / el,
        1e6 / (records as f64 / el) / 60.0
    );
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidate = cordon::policy::load_dir(&repo.join("policies")).expect("shipped policies");
    let t = Instant::now();
    let s = replay::simulate(&store, &candidate, &Filter::default()).expect("simulate");
    let el = t.elapsed().as_secs_f64();
    println!(
        "  simulate (shipped set): {} step decisions in {el:.2} s: {:.0} decisions/s, {:.0} audit records/s; {} changed",
        s.decisions,
        s.decisions as f64 / el,
        records as f64 / el,
        s.changes.len()
    );
}
