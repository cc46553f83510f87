//! The daemon under test, in-process: a private workspace (copies of the shipped policies,
//! playbooks, connectors and source mappings, and the example enrichment files), a settable
//! clock, and starting, restarting and stopping `cordon::daemon` on 127.0.0.1:0.

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
    let cfg = workspace_at(dir.path());
    (dir, cfg)
}

/// [`workspace`] in a directory the caller owns (so two daemons can run one after the other on
/// the same files, each with its own data dir).
pub fn workspace_at(root: &Path) -> Config {
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
    cfg
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
    /// Start options on this clock. Time is driven by hand: expiry runs when the test calls
    /// `tick`.
    pub fn start_options(&self) -> StartOptions {
        let c = self.clone();
        StartOptions {
            clock: Arc::new(move || c.now()),
            expiry_timer: false,
            ..Default::default()
        }
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
    let opts = clock.map(|c| c.start_options()).unwrap_or_default();
    start_opts(dir, cfg, opts).await
}

/// Starts the daemon on `dir` with `cfg` and the given start options.
pub async fn start_opts(dir: tempfile::TempDir, cfg: Config, opts: StartOptions) -> TestDaemon {
    start_bound(dir, cfg, opts, |_, _, _| {}).await
}

/// Binds the loopback listeners first, lets `f` see the config, the workspace and the HTTP base
/// URL the daemon will answer on (for settings that name cordon's own address), then starts.
pub async fn start_bound(
    dir: tempfile::TempDir,
    mut cfg: Config,
    opts: StartOptions,
    f: impl FnOnce(&mut Config, &Path, &str),
) -> TestDaemon {
    let listeners = daemon::Listeners::loopback().await.unwrap();
    let base = format!("http://{}", listeners.http.local_addr().unwrap());
    f(&mut cfg, dir.path(), &base);
    let v = daemon::validate(cfg.clone(), "test config")
        .unwrap_or_else(|p| panic!("config does not validate: {p:#?}"));
    let running = daemon::start(v, listeners, opts).await.unwrap();
    TestDaemon::new(running, dir, cfg)
}

/// Starts the daemon on `dir` again once sled has let go of the data directory (it does so from
/// its flusher thread a moment after the last handle of a stopped daemon drops): retries the
/// start for up to 10 s.
pub async fn restart_when_unlocked(
    dir: tempfile::TempDir,
    cfg: Config,
    opts: StartOptions,
) -> TestDaemon {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = daemon::validate(cfg.clone(), "test config").unwrap();
        let listeners = daemon::Listeners::loopback().await.unwrap();
        let o = StartOptions {
            clock: opts.clock.clone(),
            expiry_timer: opts.expiry_timer,
            engine_thread: opts.engine_thread,
        };
        match daemon::start(v, listeners, o).await {
            Ok(running) => return TestDaemon::new(running, dir, cfg),
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "the daemon did not start again: {e}"
            ),
        }
        tokio::task::yield_now().await;
    }
}

impl TestDaemon {
    fn new(running: Running, dir: tempfile::TempDir, config: Config) -> TestDaemon {
        TestDaemon {
            base: format!("http://{}", running.http_addr),
            running: Some(running),
            dir,
            config,
            client: reqwest::Client::new(),
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
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
