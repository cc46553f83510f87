//! Shared harness: starts the daemon in-process on 127.0.0.1:0 with a private copy of the
//! shipped policies, playbooks, connectors and source mappings, and the example enrichment files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use cordon::config::Config;
use cordon::daemon::{self, Running, StartOptions};
use cordon::store::AuditRecord;
use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/fixtures").join(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Copies a directory's files (not recursive into `target`).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            copy_dir(&p, &to.join(p.file_name().unwrap()));
        } else {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// A workspace with copies of everything the daemon reads, and a config pointing at it.
pub fn workspace() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["policies", "playbooks", "connectors", "sources"] {
        copy_dir(&repo().join(d), &root.join(d));
    }
    copy_dir(&repo().join("deploy/enrichment"), &root.join("enrichment"));
    let mut cfg = Config {
        data_dir: root.join("data"),
        policies_dir: root.join("policies"),
        playbooks_dir: root.join("playbooks"),
        connectors_dir: root.join("connectors"),
        sources_dir: root.join("sources"),
        ..Config::default()
    };
    cfg.http.addr = "127.0.0.1:0".into();
    cfg.grpc.addr = "127.0.0.1:0".into();
    // Decision-path tests look at actions as decided; executor tests turn it on.
    cfg.executor.enabled = false;
    cfg.enrichment.assets = Some(root.join("enrichment/assets.toml"));
    cfg.enrichment.identities = Some(root.join("enrichment/identities.toml"));
    cfg.enrichment.intel = Some(root.join("enrichment/intel.toml"));
    (dir, cfg)
}

/// A settable clock for window and expiry tests.
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    pub fn new() -> TestClock {
        TestClock(Arc::new(Mutex::new(Utc::now())))
    }
    pub fn advance_secs(&self, s: i64) {
        let mut t = self.0.lock().unwrap();
        *t += chrono::Duration::seconds(s);
    }
    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

pub struct TestDaemon {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub base: String,
    pub client: reqwest::Client,
}

pub async fn start() -> TestDaemon {
    let (dir, cfg) = workspace();
    start_in(dir, cfg, None).await
}

pub async fn start_with(f: impl FnOnce(&mut Config, &Path)) -> TestDaemon {
    let (dir, mut cfg) = workspace();
    f(&mut cfg, dir.path());
    start_in(dir, cfg, None).await
}

pub async fn start_in(dir: tempfile::TempDir, cfg: Config, clock: Option<TestClock>) -> TestDaemon {
    let v = daemon::validate(cfg.clone(), "test config")
        .unwrap_or_else(|p| panic!("config does not validate: {p:#?}"));
    let mut opts = StartOptions::default();
    if let Some(c) = clock {
        opts.clock = Arc::new(move || c.now());
        // Time is driven by hand: expiry runs when the test calls `tick`.
        opts.expiry_timer = false;
    }
    let listeners = daemon::Listeners::loopback().await.unwrap();
    let running = daemon::start(v, listeners, opts).await.unwrap();
    let base = format!("http://{}", running.http_addr);
    TestDaemon {
        running: Some(running),
        dir,
        config: cfg,
        base,
        client: reqwest::Client::new(),
    }
}

impl TestDaemon {
    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.post_with(path, body, |b| b).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> (u16, Value) {
        let r = f(self.client.post(format!("{}{path}", self.base)).body(body))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Posts a fixture and asserts it was accepted; returns the ack.
    pub async fn ingest_fixture(&self, format: &str, file: &str) -> Value {
        let path = if format == "cordon" {
            "/v1/alerts".to_string()
        } else {
            format!("/v1/alerts/{format}")
        };
        let (status, body) = self.post(&path, fixture(file)).await;
        assert_eq!(status, 202, "{format}: {body}");
        body
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The case and its actions.
    pub async fn case(&self, id: &str) -> Value {
        let (s, v) = self.get(&format!("/v1/cases/{id}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub fn head(&self) -> u64 {
        self.running().store.head().seq
    }

    pub fn audit(&self) -> Vec<AuditRecord> {
        self.running().store.audit_records(1, usize::MAX).unwrap()
    }

    pub async fn stop(mut self) -> i32 {
        self.running.take().unwrap().shutdown().await
    }
}

/// The actions of a case as (kind, target id, state, tier).
pub fn actions(case: &Value) -> Vec<(String, String, String, String)> {
    case["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_string(),
                a["target"]["id"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
                a["tier"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Polls `f` until it returns `Some`, up to `secs` seconds (waits for a condition, not a time).
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {secs}s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
