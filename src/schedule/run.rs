//! The scheduler task: asks the engine to fire what is due, delivers what the fires owe.
//!
//! Owns: the once-a-second scheduler pass (off in tests that drive time by hand: they call
//! [`Scheduler::run_once`]), writing reports and digests to their `output_dir` (temporary file,
//! then rename) and posting them through `chat`, reporting each delivery back to the engine
//! (it is owed in the store until then, so a crash delivers it after the restart), and
//! refreshing the `cordon_loop_*` gauges from the store.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::engine::{Clock, Delivery, EngineError, EngineHandle, ScheduleOp, ScheduleReply};
use crate::metrics::Metrics;
use crate::report::{self, Catalog, Input};
use crate::schedule::{Schedule, ScheduleKind};
use crate::store::Store;

/// How often, at most, the loop gauges are recomputed from the store by the running scheduler.
const METRICS_EVERY: Duration = Duration::from_secs(60);

/// A recomputation reads every alert, case and action of the store: the next one waits at
/// least this many times as long as the last took, so it costs at most ~1/20 of one core
/// however large the store grows (a 3.9 GiB store of 225,000 alerts took ~30 s).
const METRICS_SPACING: u32 = 20;

/// Fires schedules and delivers their reports. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    engine: EngineHandle,
    store: Store,
    schedules: Arc<Vec<Schedule>>,
    catalog: Arc<Catalog>,
    metrics: Metrics,
    chat: Option<Arc<crate::chat::Chat>>,
    clock: Clock,
    /// When the loop gauges are due again (`None`: now).
    metrics_due: Arc<Mutex<Option<Instant>>>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Deliveries made (reports and digests written or posted).
    pub delivered: usize,
    /// Deliveries that failed (recorded and escalated).
    pub failed: usize,
}

impl Scheduler {
    pub fn new(
        engine: EngineHandle,
        store: Store,
        schedules: Vec<Schedule>,
        catalog: Catalog,
        metrics: Metrics,
        chat: Option<Arc<crate::chat::Chat>>,
        clock: Clock,
    ) -> Scheduler {
        Scheduler {
            engine,
            store,
            schedules: Arc::new(schedules),
            catalog: Arc::new(catalog),
            metrics,
            chat,
            clock,
            metrics_due: Arc::new(Mutex::new(None)),
        }
    }

    /// One pass: the engine fires what is due (durably), then every owed delivery is made and
    /// recorded. Passes must not overlap (the daemon's loop runs them one after another).
    pub async fn run_once(&self) -> Result<Pass, EngineError> {
        let owed = match self
            .engine
            .schedule(ScheduleOp::Run {
                schedules: self.schedules.clone(),
            })
            .await?
        {
            ScheduleReply::Owed(d) => d,
            ScheduleReply::Recorded => Vec::new(),
        };
        let mut pass = Pass::default();
        if !owed.is_empty() {
            let store = self.store.clone();
            let input = background(move || Input::read(&store)).await?;
            for d in owed {
                let outcome = self.deliver(&input, &d).await;
                match &outcome {
                    Ok(_) => pass.delivered += 1,
                    Err(why) => {
                        pass.failed += 1;
                        tracing::warn!(schedule = %d.schedule, error = %why, "A scheduled report could not be delivered.");
                    }
                }
                self.engine
                    .schedule(ScheduleOp::Delivered { id: d.id, outcome })
                    .await?;
            }
        }
        Ok(pass)
    }

    /// Recomputes the `cordon_loop_*` gauges from the whole store (up to now), on a
    /// low-priority thread, and sets when they are due next.
    pub async fn refresh_metrics(&self) -> Result<(), EngineError> {
        self.refresh_metrics_unless(&CancellationToken::new()).await
    }

    /// [`Scheduler::refresh_metrics`], given up (gauges unchanged) within one page of the
    /// store's records once `stop` is cancelled: shutdown does not wait for a whole read.
    async fn refresh_metrics_unless(&self, stop: &CancellationToken) -> Result<(), EngineError> {
        let stop = stop.clone();
        let store = self.store.clone();
        let catalog = self.catalog.clone();
        let metrics = self.metrics.clone();
        let now = (self.clock)();
        let started = Instant::now();
        let outcome = background(move || {
            let Some(input) = Input::read_unless(&store, &|| stop.is_cancelled())? else {
                return Ok(());
            };
            let m = report::metrics(
                &input,
                &catalog,
                chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                now + chrono::Duration::seconds(1),
            );
            report::publish(&m, &metrics, now);
            Ok::<(), crate::store::StoreError>(())
        })
        .await;
        // A failed pass waits too: the store is not read whole again every second.
        let took = started.elapsed();
        let next_in = METRICS_EVERY.max(took * METRICS_SPACING);
        if let Ok(mut due) = self.metrics_due.lock() {
            *due = Some(Instant::now() + next_in);
        }
        if took > METRICS_EVERY / 4 {
            tracing::info!(
                seconds = took.as_secs_f64(),
                next_in_seconds = next_in.as_secs(),
                "The loop metrics took long to compute; they are recomputed less often."
            );
        }
        outcome
    }

    async fn deliver(&self, input: &Input, d: &Delivery) -> Result<Vec<String>, String> {
        let (markdown, json) = match d.kind {
            ScheduleKind::CtiDigest => {
                let g = report::digest(input, &self.catalog, d.since, d.until);
                (g.to_markdown(), serde_json::to_string_pretty(&g))
            }
            _ => {
                let b = report::board(input, &self.catalog, d.since, d.until);
                (b.to_markdown(), serde_json::to_string_pretty(&b))
            }
        };
        let json = json.map_err(|e| format!("cannot serialize the report: {e}"))?;
        let mut to = Vec::new();
        if let Some(dir) = &d.output_dir {
            let stem = format!("{}-{}", d.schedule, d.due.format("%Y%m%dT%H%M%SZ"));
            for (ext, body) in [("md", &markdown), ("json", &json)] {
                let path = dir.join(format!("{stem}.{ext}"));
                write_file(&path, body)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                to.push(path.display().to_string());
            }
        }
        if let Some(c) = &d.chat {
            let chat = self
                .chat
                .as_ref()
                .ok_or_else(|| "chat is not configured".to_string())?;
            chat.post_text(&c.platform, &c.channel, &markdown)
                .await
                .map_err(|e| format!("cannot post to {} {}: {e}", c.platform, c.channel))?;
            to.push(format!("{}:{}", c.platform, c.channel));
        }
        Ok(to)
    }

    fn metrics_stale(&self) -> bool {
        self.metrics_due
            .lock()
            .map(|due| due.is_none_or(|t| Instant::now() >= t))
            .unwrap_or(true)
    }
}

/// [`crate::report::in_background`], its failure as the engine's.
async fn background<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, EngineError> {
    crate::report::in_background(work)
        .await
        .map_err(|e| EngineError::Store(e.to_string()))
}

/// Writes `body` to `path` whole or not at all (temporary file, sync, rename).
fn write_file(path: &Path, body: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The daemon's scheduler loop: a pass every second, the loop gauges every minute.
pub async fn run(s: Scheduler, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every.tick() => {
                if let Err(e) = s.run_once().await {
                    if e == EngineError::ShuttingDown {
                        break;
                    }
                    tracing::error!(error = %e, "The scheduler pass failed; it is tried again in a second.");
                }
                if s.metrics_stale() && let Err(e) = s.refresh_metrics_unless(&shutdown).await {
                    tracing::error!(error = %e, "The loop metrics could not be computed.");
                }
            }
        }
    }
}
