//! The daemon's life: config → validate (all problems at once) → build → spawn → wait for a
//! signal → drain under a deadline → flush.
//!
//! Owns: start-up validation of every file the config points at, raising the descriptor limit
//! and fitting the HTTP connection cap under it, binding and spawning the long-lived tasks
//! (engine, HTTP, policy file watcher, signal handlers, audit checkpoints) under one
//! cancellation token and task tracker, and the ordered shutdown: stop intake, let in-flight
//! requests finish, drain the engine's queue, announce the shutdown checkpoint, flush the store,
//! sign the final head.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Problem};
use crate::connector::Registry;
use crate::engine::{self, Clock, EngineHandle, EngineParts};
use crate::enrich::Enricher;
use crate::http::{self, HttpState};
use crate::ingest::IngestFormat;
use crate::ingest::mapped::{self, SourceMapping};
use crate::metrics::Metrics;
use crate::playbook::{self, Playbook};
use crate::policy::{self, Policies};
use crate::secret::TokenHash;
use crate::store::{Store, StoreOptions};

mod threads;
use threads::{engine_thread, grpc_runtime};

/// Exit status for a configuration that does not validate (EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;
/// Exit status when the drain deadline passed (EX_SOFTWARE).
pub const EXIT_DRAIN_TIMEOUT: i32 = 70;
/// Exit status when the store cannot be opened: its data directory is damaged, not a cordon
/// store, of an unknown format, or locked by another process (EX_IOERR). `audit verify|export`
/// use it for the same reasons.
pub const EXIT_STORE: i32 = 74;

/// Everything validated and loaded, before any socket is bound.
pub struct Validated {
    pub config: Config,
    pub connectors: Registry,
    pub playbooks: Vec<Playbook>,
    pub enricher: Enricher,
    pub policies: policy::PolicyEngine,
    pub tokens: BTreeMap<IngestFormat, TokenHash>,
    /// Source mappings (`sources_dir`), by name.
    pub sources: BTreeMap<String, Arc<SourceMapping>>,
    pub admin_token: Option<TokenHash>,
    /// Chat platforms, secrets resolved.
    pub chat: Option<Arc<crate::chat::Chat>>,
    /// The audit checkpoint signing key, when checkpoints are configured.
    pub checkpoints: Option<crate::checkpoint::Signer>,
}

/// Parses and validates the config and every file it names; every problem at once.
pub fn validate(config: Config, config_file: &str) -> Result<Validated, Vec<Problem>> {
    validate_with(config, config_file, vec![])
}

/// Like [`validate`], adding problems already found while parsing the config (unknown keys).
pub fn validate_with(
    config: Config,
    config_file: &str,
    mut problems: Vec<Problem>,
) -> Result<Validated, Vec<Problem>> {
    problems.append(&mut config.validate(config_file));
    // Sources first: their names become ingest formats that playbooks may filter on.
    let (sources, mut p) = mapped::load_dir(&config.sources_dir);
    problems.append(&mut p);
    let sources: BTreeMap<String, Arc<SourceMapping>> = sources
        .into_iter()
        .map(|(name, m)| {
            IngestFormat::mapped(&name);
            (name, Arc::new(m))
        })
        .collect();
    let source_format = |name: &str| {
        IngestFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == name)
            .or_else(|| {
                sources
                    .contains_key(name)
                    .then(|| IngestFormat::mapped(name))
            })
    };
    for (i, name) in config.ingest.query_token_sources.iter().enumerate() {
        if source_format(name).is_none() && mapped::check_name(name).is_ok() {
            problems.push(Problem::new(
                config_file,
                format!("ingest.query_token_sources[{i}]"),
                format!(
                    "no source {name:?}: no such built-in format or file in {}",
                    config.sources_dir.display()
                ),
            ));
        }
    }
    // A broken connector file is reported, but the valid ones still count when checking the
    // playbooks, so one typo does not make every step's connector "unknown".
    let (connectors, mut p) = Registry::load(&config.connectors_dir);
    problems.append(&mut p);
    let playbooks =
        playbook::load_dir(&config.playbooks_dir, &connectors).unwrap_or_else(|mut p| {
            problems.append(&mut p);
            vec![]
        });
    problems.append(&mut crate::schedule::check_playbooks(
        &config.schedules,
        &playbooks,
        config_file,
    ));
    let enricher = Enricher::load(&config.enrichment).unwrap_or_else(|mut p| {
        problems.append(&mut p);
        Enricher::default()
    });
    let policies = match policy::load_dir(&config.policies_dir) {
        Ok(p) => Some(p),
        Err(ps) => {
            problems.extend(ps.into_iter().map(|p| {
                let file = if p.line > 0 {
                    format!("{}:{}:{}", p.file, p.line, p.column)
                } else {
                    p.file
                };
                Problem::new(file, "", p.message)
            }));
            None
        }
    };
    problems.extend(crate::policy::shadow::problems(
        config.policy.shadow.as_ref(),
    ));
    let chat = crate::chat::Chat::build(&config.chat).unwrap_or_else(|mut p| {
        problems.append(&mut p);
        None
    });
    problems.extend(playbook::check_routes(
        &config.playbooks_dir,
        &playbooks,
        config.chat.enabled(),
        |g| policies.as_ref().is_none_or(|p| p.knows_group(g)),
    ));
    let mut tokens = BTreeMap::new();
    for (source, r) in &config.ingest.tokens {
        match (source_format(source), TokenHash::from_ref(r)) {
            (Some(f), Ok(t)) => {
                tokens.insert(f, t);
            }
            (None, _) if mapped::check_name(source).is_ok() => problems.push(Problem::new(
                config_file,
                format!("ingest.tokens.{source}"),
                format!(
                    "no source {source:?}: no such built-in format or file in {}",
                    config.sources_dir.display()
                ),
            )),
            _ => {}
        }
    }
    let admin_token = config
        .http
        .admin_token
        .as_ref()
        .and_then(|r| TokenHash::from_ref(r).ok());
    let checkpoints = config.audit.checkpoints.as_ref().and_then(|c| {
        crate::checkpoint::Signer::from_ref(&c.signing_key, &c.origin)
            .map_err(|e| {
                problems.push(Problem::new(
                    config_file,
                    "audit.checkpoints.signing_key",
                    e.to_string(),
                ))
            })
            .ok()
    });
    match policies {
        Some(policies) if problems.is_empty() => Ok(Validated {
            config,
            connectors,
            playbooks,
            enricher,
            policies,
            tokens,
            sources,
            admin_token,
            chat,
            checkpoints,
        }),
        _ => Err(problems),
    }
}

/// Options the tests (and only the tests) change.
pub struct StartOptions {
    pub clock: Clock,
    /// Run the once-a-second expiry/escalation timer (tests that drive time by hand turn it off
    /// and call `EngineHandle::tick`).
    pub expiry_timer: bool,
    /// Run the engine on a thread of its own (see `engine_thread`), commits on the store's
    /// writing thread and gRPC on a runtime of its own (see `grpc_runtime`). A test whose runtime
    /// pauses time turns it off, so the engine's timers and clock follow that runtime's time and
    /// the clock waits for each commit (the engine and gRPC on the runtime, commits on its
    /// blocking pool).
    pub engine_thread: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            clock: engine::system_clock(),
            expiry_timer: true,
            engine_thread: true,
        }
    }
}

/// A running daemon.
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub store: Store,
    pub policies: Policies,
    pub metrics: Metrics,
    pub engine: EngineHandle,
    /// Fires schedules and block expiries (tests that drive time by hand call `run_once`).
    pub scheduler: crate::schedule::run::Scheduler,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<i32>,
}

impl Running {
    /// A token that stops the daemon when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops intake, drains and flushes; returns the exit status (0 = clean drain).
    pub async fn shutdown(self) -> i32 {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits for the daemon to stop by itself (a signal).
    pub async fn wait(self) -> i32 {
        drop(self.engine);
        drop(self.scheduler);
        self.done.await.unwrap_or(1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("audit checkpoints: {0}")]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("console: {0}")]
    Console(#[from] crate::oidc::OidcError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the engine's thread: {0}")]
    EngineThread(std::io::Error),
    #[error("cannot start the gRPC server's runtime: {0}")]
    GrpcRuntime(std::io::Error),
}

/// The sockets the daemon serves on, already bound (tests bind `127.0.0.1:0`).
pub struct Listeners {
    pub http: tokio::net::TcpListener,
    pub grpc: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(cfg: &Config) -> Result<Listeners, StartError> {
        let http = tokio::net::TcpListener::bind(&cfg.http.addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: cfg.http.addr.clone(),
                source,
            })?;
        let grpc = tokio::net::TcpListener::bind(&cfg.grpc.addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: cfg.grpc.addr.clone(),
                source,
            })?;
        Ok(Listeners { http, grpc })
    }

    /// Both on `127.0.0.1:0` (tests, benchmarks).
    pub async fn loopback() -> std::io::Result<Listeners> {
        Ok(Listeners {
            http: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        })
    }
}

/// Opens the store and spawns every task on the given listeners.
pub async fn start(
    v: Validated,
    listeners: Listeners,
    opts: StartOptions,
) -> Result<Running, StartError> {
    let http_listener = listeners.http;
    let cfg = v.config;
    let store = Store::open(
        &cfg.data_dir,
        &StoreOptions {
            cache_capacity_bytes: cfg.store.cache_capacity_bytes,
            sync_data: cfg.store.sync_data,
            compression: cfg.store.compression,
            writer_nice: cfg.store.critical_nice,
            own_writer: opts.engine_thread,
        },
    )?;
    let checkpoints = match (v.checkpoints, &cfg.audit.checkpoints) {
        (Some(signer), Some(c)) => Some(Arc::new(crate::checkpoint::Writer::new(
            signer,
            c.dir.clone(),
            opts.clock.clone(),
        )?)),
        _ => None,
    };
    let metrics = Metrics::new();
    let policies = Policies::new(v.policies);
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: cfg.http.addr.clone(),
            source,
        })?;
    let grpc_addr = listeners
        .grpc
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: cfg.grpc.addr.clone(),
            source,
        })?;
    let playbook_count = v.playbooks.len();
    let catalog = crate::report::Catalog::from_playbooks(&v.playbooks);
    let console_catalog = catalog.clone();
    let scheduler_clock = opts.clock.clone();
    let (runnable_tx, runnable_rx) = if cfg.executor.enabled {
        let (tx, rx) =
            engine::runnable_channel(crate::executor::announce_capacity(cfg.executor.concurrency));
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (eng, handle) = engine::new(
        EngineParts {
            shadow: crate::policy::shadow::load(cfg.policy.shadow.as_ref()),
            store: store.clone(),
            policies: policies.clone(),
            policies_dir: cfg.policies_dir.clone(),
            playbooks: Arc::new(v.playbooks),
            connectors: v.connectors.clone(),
            runnable: runnable_tx,
            enricher: v.enricher,
            suppressions: cfg.suppressions.clone(),
            cases: cfg.cases.clone(),
            correlation: cfg.correlation.clone(),
            metrics: metrics.clone(),
            max_batch: cfg.store.max_batch,
            clock: opts.clock,
            approvals: cfg.approvals.clone(),
            chat: cfg.chat.enabled(),
            learning: cfg.learning.clone(),
        },
        cfg.store.max_batch * 8,
    );
    let open: Vec<&str> = IngestFormat::ALL
        .into_iter()
        .chain(v.sources.keys().map(|n| IngestFormat::mapped(n)))
        .filter(|f| !v.tokens.contains_key(f))
        .map(|f| f.as_str())
        .collect();
    if !open.is_empty() {
        tracing::warn!(sources = ?open, "no ingest token configured for these sources: they accept alerts from loopback clients only");
    }
    let shutdown = CancellationToken::new();
    let draining = Arc::new(AtomicBool::new(false));
    let tracker = TaskTracker::new();
    let engine_task = if opts.engine_thread {
        tracker
            .spawn(engine_thread(eng, cfg.store.critical_nice).map_err(StartError::EngineThread)?)
    } else {
        tracker.spawn(eng.run())
    };
    if let Some(rx) = runnable_rx {
        let parts = crate::executor::ExecutorParts {
            engine: handle.clone(),
            store: store.clone(),
            connectors: v.connectors.clone(),
            concurrency: cfg.executor.concurrency,
            reconcile_every: Duration::from_secs(cfg.executor.reconcile_interval_secs),
        };
        tracker.spawn(crate::executor::run(parts, rx, shutdown.clone()));
    }

    if let Some(chat) = &v.chat {
        tracing::info!(platforms = ?chat.platform_names(), "chat approvals enabled");
        tracker.spawn(crate::chat::run(
            chat.clone(),
            handle.clone(),
            store.clone(),
            policies.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    // Signed audit checkpoints; this task holds an engine handle until shutdown.
    if let (Some(w), Some(c)) = (&checkpoints, &cfg.audit.checkpoints) {
        if let Err(why) = w.check_store(&store) {
            tracing::error!(dir = %w.dir().display(), problem = %why, "The audit store does not hold the newest signed checkpoint; run `cordon audit verify --checkpoints` to see what changed.");
        }
        tracing::info!(dir = %w.dir().display(), interval_secs = c.interval_secs, "signed audit checkpoints enabled");
        tracker.spawn(crate::checkpoint::run(
            w.clone(),
            store.clone(),
            handle.clone(),
            Duration::from_secs(c.interval_secs),
            shutdown.clone(),
        ));
    }
    // Reload triggers: SIGHUP and file changes. Both hold an engine handle until shutdown.
    spawn_reload_triggers(&tracker, &shutdown, handle.clone(), &cfg);
    let scheduler = crate::schedule::run::Scheduler::new(
        handle.clone(),
        store.clone(),
        crate::schedule::compile(&cfg.schedules),
        catalog,
        metrics.clone(),
        v.chat.clone(),
        scheduler_clock,
    );
    if opts.expiry_timer {
        tracker.spawn(crate::schedule::run::run(
            scheduler.clone(),
            shutdown.clone(),
        ));
    }
    // Approval deadlines and escalations: the engine checks them on every tick. Deadlines are
    // stored, so a restart picks them up.
    if opts.expiry_timer {
        let token = shutdown.clone();
        let h = handle.clone();
        tracker.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = every.tick() => h.request_tick(),
                }
            }
        });
    }

    // AI agents: one front for gRPC, HTTP and MCP (rate windows, checks, the record of calls).
    let agents = (!cfg.agents.is_empty()).then(|| crate::engine::AgentFront {
        engine: handle.clone(),
        store: store.clone(),
        agents: Arc::new(crate::agent::Agents::from_config(&cfg.agents)),
    });

    let http_limits = connection_limits(&cfg);
    let console = if cfg.console.enabled {
        Some(Arc::new(http::console::Console::new(
            cfg.console.clone(),
            http_limits.max_connections,
            policies.clone(),
            &cfg.grpc.approvers,
            checkpoints
                .as_ref()
                .map(|w| (w.dir().to_path_buf(), w.public().clone())),
            shutdown.clone(),
            console_catalog,
        )?))
    } else {
        None
    };
    let state = HttpState {
        agents: agents.clone(),
        mcp: cfg.mcp.clone(),
        shutdown: shutdown.clone(),
        engine: handle.clone(),
        store: store.clone(),
        policies: policies.clone(),
        metrics: metrics.clone(),
        tokens: Arc::new(v.tokens),
        query_token_sources: Arc::new(
            cfg.ingest
                .query_token_sources
                .iter()
                .filter_map(|s| IngestFormat::parse_name(s))
                .collect(),
        ),
        sources: Arc::new(v.sources),
        max_alerts_per_body: cfg.ingest.max_alerts_per_body,
        admin_token: v.admin_token.map(Arc::new),
        max_body_bytes: cfg.http.max_body_bytes,
        playbooks: playbook_count,
        connectors: v.connectors.connectors.len(),
        draining: draining.clone(),
        chat: v.chat.as_ref().map(|c| {
            crate::chat::Inbound::new(c.clone(), handle.clone(), policies.clone(), metrics.clone())
        }),
        approvers: Arc::new(crate::api::Auth::from_config(&cfg.grpc)),

        console,
    };
    let http_shutdown = shutdown.clone();
    let http_task = tracker.spawn(http::serve(http_listener, state, http_limits, async move {
        http_shutdown.cancelled().await
    }));
    let api_state = crate::api::ApiState {
        engine: handle.clone(),
        store: store.clone(),
        policies: policies.clone(),
        auth: Arc::new(match agents {
            Some(front) => crate::api::Auth::from_config(&cfg.grpc).with_agents(front),
            None => crate::api::Auth::from_config(&cfg.grpc),
        }),
        ingest_open_to_loopback: cfg.grpc.ingest_tokens.is_empty(),
        max_message_bytes: cfg.grpc.max_message_bytes,
        shutdown: shutdown.clone(),
    };
    if cfg.grpc.approvers.is_empty() && cfg.grpc.cert_users.is_empty() {
        tracing::warn!(
            "no gRPC approvers configured (grpc.approvers, grpc.cert_users): every approval vote will be refused as unauthenticated"
        );
    }
    let grpc_shutdown = shutdown.clone();
    let grpc_cfg = cfg.grpc.clone();
    let grpc_listener = listeners.grpc;
    let grpc_metrics = metrics.grpc_connections.clone();
    let grpc_task = if opts.engine_thread {
        tracker.spawn(
            grpc_runtime(
                grpc_listener,
                api_state,
                grpc_cfg,
                grpc_metrics,
                grpc_shutdown,
                cfg.store.critical_nice,
            )
            .map_err(StartError::GrpcRuntime)?,
        )
    } else {
        tracker.spawn(async move {
            crate::api::serve(
                grpc_listener,
                api_state,
                &grpc_cfg,
                grpc_metrics,
                async move { grpc_shutdown.cancelled().await },
            )
            .await
        })
    };
    tracker.close();
    tracing::info!(http = %http_addr, grpc = %grpc_addr, data_dir = %cfg.data_dir.display(), "cordon is serving");

    let drain_deadline = Duration::from_secs(cfg.shutdown.drain_timeout_secs);
    let store2 = store.clone();
    let token = shutdown.clone();
    let done = tokio::spawn(async move {
        token.cancelled().await;
        draining.store(true, Ordering::SeqCst);
        tracing::info!("shutting down: intake stopped, draining in-flight work");
        let drained = tokio::time::timeout(drain_deadline, async {
            if let Ok(Err(e)) = http_task.await {
                tracing::error!(error = %e, "http server stopped with an error");
            }
            if let Ok(Err(e)) = grpc_task.await {
                tracing::error!(error = %e, "grpc server stopped with an error");
            }
            // Every engine handle is gone now (HTTP state, reload triggers), so the engine
            // finishes its queue and returns.
            let _ = engine_task.await;
            tracker.wait().await;
        })
        .await;
        // The shutdown checkpoint's announcement: every writer has stopped (only after a
        // complete drain), so it is committed directly, before the final flush.
        let final_head = match (&checkpoints, &drained) {
            (Some(w), Ok(())) => match w.announce_final(&store2).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "The shutdown audit checkpoint could not be recorded.");
                    None
                }
            },
            (Some(_), Err(_)) => {
                tracing::warn!("No audit checkpoint at shutdown: the drain did not finish.");
                None
            }
            _ => None,
        };
        let flushed = store2.flush();
        // Signed only once the head is durable and in the witness.
        if let (Some(w), Some(head), Ok(())) = (&checkpoints, final_head, &flushed) {
            match w.write(&head) {
                Ok(path) => {
                    tracing::info!(file = %path.display(), "Audit checkpoint written at shutdown.")
                }
                Err(e) => {
                    tracing::error!(error = %e, "The shutdown audit checkpoint could not be written.")
                }
            }
        }
        match (drained, flushed) {
            (Ok(()), Ok(())) => {
                tracing::info!("drained and flushed; bye");
                0
            }
            (Err(_), _) => {
                tracing::error!(
                    deadline_secs = drain_deadline.as_secs(),
                    "drain deadline passed; unacknowledged requests were dropped"
                );
                EXIT_DRAIN_TIMEOUT
            }
            (_, Err(e)) => {
                tracing::error!(error = %e, "final store flush failed");
                EXIT_STORE
            }
        }
    });
    Ok(Running {
        scheduler,
        http_addr,
        grpc_addr,
        store,
        policies,
        metrics,
        engine: handle,
        shutdown,
        done,
    })
}

/// The HTTP listener's limits, its connection cap lowered to fit (with the gRPC cap and a
/// reserve for the store and outbound clients) under the soft descriptor limit; logs both.
fn connection_limits(cfg: &Config) -> crate::listener::HttpLimits {
    let configured = cfg.http.max_connections;
    let max_connections = match crate::listener::nofile_limit() {
        Ok((soft, _)) => {
            let cap = crate::listener::http_cap(configured, cfg.grpc.max_connections, soft);
            if cap < configured {
                tracing::warn!(
                    descriptor_limit = soft,
                    http_max_connections = cap,
                    configured,
                    grpc_max_connections = cfg.grpc.max_connections,
                    "the descriptor limit is too low for http.max_connections; the HTTP connection cap is lowered (raise LimitNOFILE)"
                );
            } else {
                tracing::info!(
                    descriptor_limit = soft,
                    http_max_connections = cap,
                    grpc_max_connections = cfg.grpc.max_connections,
                    "connection caps fit under the descriptor limit"
                );
            }
            cap
        }
        Err(e) => {
            tracing::warn!(error = %e, http_max_connections = configured, "cannot read the descriptor limit; the HTTP connection cap is as configured");
            configured
        }
    };
    crate::listener::HttpLimits {
        header_read_timeout: Duration::from_secs(cfg.http.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(cfg.http.idle_timeout_secs),
        body_read_timeout: Duration::from_secs(cfg.http.body_read_timeout_secs),
        max_connections,
    }
}

fn spawn_reload_triggers(
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    handle: EngineHandle,
    cfg: &Config,
) {
    #[cfg(unix)]
    {
        let token = shutdown.clone();
        let h = handle.clone();
        // Registered here, before anything is served: a SIGHUP that arrives once the daemon
        // answers must reload, not hit the default action (terminate).
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        tracker.spawn(async move {
            let Ok(mut hup) = hup else {
                tracing::error!("cannot listen for SIGHUP; reload policies over HTTP instead");
                return;
            };
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    s = hup.recv() => {
                        if s.is_none() { break }
                        tracing::info!("SIGHUP: reloading policies");
                        h.request_reload("sighup");
                    }
                }
            }
        });
    }
    if cfg.policy.watch {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the policy directory; reload with SIGHUP or POST /v1/policies/reload");
                return;
            }
        };
        if let Err(e) = notify::Watcher::watch(
            &mut watcher,
            &cfg.policies_dir,
            notify::RecursiveMode::NonRecursive,
        ) {
            tracing::error!(error = %e, dir = %cfg.policies_dir.display(), "cannot watch the policy directory");
            return;
        }
        let token = shutdown.clone();
        tracker.spawn(async move {
            let _watcher = watcher; // lives as long as this task
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    ev = rx.recv() => {
                        if ev.is_none() { break }
                        // Editors write in several steps: wait until the directory is quiet.
                        loop {
                            tokio::select! {
                                _ = token.cancelled() => return,
                                more = tokio::time::timeout(Duration::from_millis(300), rx.recv()) => match more {
                                    Ok(Some(())) => continue,
                                    Ok(None) => return,
                                    Err(_) => break,
                                },
                            }
                        }
                        tracing::info!("policy files changed: reloading");
                        handle.request_reload("file_change");
                    }
                }
            }
        });
    }
}

/// `cordon serve`: runs until SIGTERM/SIGINT; returns the process exit status.
pub async fn serve(config_path: Option<&std::path::Path>) -> i32 {
    let stop = stop_signal();
    let file = config_path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(embedded defaults)".into());
    let (config, unknown) = match Config::load(config_path) {
        Ok(c) => c,
        Err(problems) => return report(&problems),
    };
    let v = match validate_with(config, &file, unknown) {
        Ok(v) => v,
        Err(problems) => return report(&problems),
    };
    // Every connection, store file and outbound client takes a descriptor; systemd's default
    // soft limit (1,024) is low, and raising it to the hard limit needs no privilege.
    match crate::listener::raise_nofile_limit() {
        Ok((soft, hard)) => tracing::info!(soft, hard, "descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
    }
    let listeners = match Listeners::bind(&v.config).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen");
            eprintln!("cordon: {e}");
            return EXIT_CONFIG;
        }
    };
    let running = match start(v, listeners, StartOptions::default()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cordon cannot start");
            // One plain line as well, whatever the log format: the reason it did not start.
            eprintln!("cordon: not starting: {e}");
            return EXIT_STORE;
        }
    };
    let token = running.shutdown_token();
    tokio::spawn(async move {
        stop.await;
        token.cancel();
    });
    running.wait().await
}

fn report(problems: &[Problem]) -> i32 {
    eprintln!(
        "cordon: the configuration is invalid ({} problem(s)); not starting:",
        problems.len()
    );
    for p in problems {
        eprintln!("  {p}");
    }
    EXIT_CONFIG
}

/// Registers the SIGTERM/SIGINT handlers now (so a signal that arrives as soon as the daemon
/// answers drains it instead of killing it) and returns a future that completes on either.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
