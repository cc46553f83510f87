//! A commit on its way to disk: the writes handed to the store's writing thread, the durable
//! write itself (one atomic batch, flush, `fdatasync`), and the future that resolves to its
//! outcome.
//!
//! One thread of the store's own (`cordon-store-writer`, started with the first commit) writes
//! every commit, in the order they are handed over. It is not one of the runtime's blocking
//! threads: waking an idle one and getting it scheduled took ~0.4 ms of a ~2.5 ms commit under
//! ingest (BENCHMARKS.md), and this one asks for a higher scheduling priority than the rest of
//! the process ([`crate::nice`]), since every answer waits for it. It holds the store only while
//! it writes, and ends once the last handle to the store is gone.

use std::sync::Arc;

use super::{
    AUDIT_CHUNK_BYTES, Committed, Head, Inner, KEY_HEAD, Store, StoreError, audit_key, codec,
    encode, lock, txn::Writes,
};

/// A commit for the writing thread to run.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// Hands `job` to the store's writing thread, starting the thread with the first job; or, for
/// a store opened without one ([`super::StoreOptions::own_writer`]), to the runtime's blocking
/// pool.
pub(super) fn to_writer(inner: &Inner, job: Job) -> std::io::Result<()> {
    if !inner.own_writer {
        tokio::task::spawn_blocking(job);
        return Ok(());
    }
    let mut writer = lock(&inner.writer);
    let tx = match &mut *writer {
        Some(tx) => tx,
        empty => {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let nice = inner.writer_nice;
            std::thread::Builder::new()
                .name("cordon-store-writer".into())
                .spawn(move || {
                    crate::nice::raise_critical("cordon-store-writer", nice);
                    let mut io = IoThreads::new(nice);
                    // Ends when every sender is gone: the store's last handle was dropped.
                    while let Ok(job) = rx.recv() {
                        job();
                        io.after_commit();
                    }
                })?;
            empty.insert(tx)
        }
    };
    tx.send(job)
        .map_err(|_| std::io::Error::other("the store's writing thread has stopped"))
}

/// sled's I/O threads (`sled-io-N`), kept at the writing thread's priority.
///
/// sled writes a commit's log buffer (`pwrite` and `sync_file_range`) on a thread of its own
/// process-wide pool while the thread that called `flush` waits for it. The pool's threads are
/// started by whichever thread first needs one, at that thread's `nice` (usually the process's),
/// so under load the writing thread, and every answer behind it, waited for a thread that
/// queued for a core behind HTTP parsing: a priority inversion on every commit. The writing
/// thread gives them its own value after its first commit (the pool exists by then) and looks
/// again every [`IoThreads::RESCAN`] for threads sled started since. It only ever lowers a
/// value (a store opened with a higher one, as tests do, changes nothing), and stops asking
/// after a refusal (the writing thread's own refusal was already said, by [`crate::nice`]).
struct IoThreads {
    /// The writing thread's `nice`; nothing is done unless it is below zero.
    nice: i32,
    next: Option<std::time::Instant>,
}

impl IoThreads {
    const RESCAN: std::time::Duration = std::time::Duration::from_secs(5);
    /// How sled 0.34 names its I/O threads.
    const PREFIX: &'static str = "sled-io-";

    fn new(nice: i32) -> IoThreads {
        IoThreads { nice, next: None }
    }

    fn after_commit(&mut self) {
        if self.nice >= 0 {
            return;
        }
        let now = std::time::Instant::now();
        if self.next.is_some_and(|at| now < at) {
            return;
        }
        self.next = Some(now + Self::RESCAN);
        if let Err(e) = crate::nice::lower_threads_named(Self::PREFIX, self.nice) {
            tracing::debug!(error = %e, "sled's I/O threads keep their priority");
            self.nice = 0;
        }
    }
}

/// The writes of a transaction handed to [`Store::start_commit`].
pub(super) struct Pending {
    /// The chain head the transaction was begun on.
    pub(super) base: Head,
    pub(super) head: Head,
    pub(super) puts: Writes,
    pub(super) audit: Vec<(u64, Vec<u8>)>,
}

/// Where a commit's time went on the writing thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stages {
    /// Building the batch: packing values and audit chunks.
    pub pack: std::time::Duration,
    /// sled's `apply_batch`.
    pub apply: std::time::Duration,
    /// sled's `flush`.
    pub flush: std::time::Duration,
    /// `fdatasync` of the data file (zero when not configured).
    pub sync: std::time::Duration,
}

/// One atomic `apply_batch` of `w` plus the head, then flush and (when configured)
/// `fdatasync`. Runs on the writing thread.
pub(super) fn write_durably(inner: &Inner, w: &Pending) -> Result<Stages, StoreError> {
    let at = lock(&inner.head).clone();
    if at != w.base {
        return Err(StoreError::OutOfOrder {
            prepared_on: w.base.seq,
            at: at.seq,
        });
    }
    {
        let mut held = lock(&inner.hold);
        if *held {
            inner.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            while *held {
                held = inner
                    .hold_released
                    .wait(held)
                    .unwrap_or_else(|e| e.into_inner());
            }
            inner.held.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    if inner
        .fail_next_write
        .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        return Err(StoreError::Io(sled::Error::Io(std::io::Error::other(
            "injected write failure (test hook)",
        ))));
    }
    let t0 = std::time::Instant::now();
    let mut batch = sled::Batch::default();
    let mut chunk: Option<(u64, Vec<u8>)> = None;
    for (seq, bytes) in &w.audit {
        match &mut chunk {
            Some((_, c)) if c.len() + 1 + bytes.len() <= AUDIT_CHUNK_BYTES => {
                c.push(b'\n');
                c.extend_from_slice(bytes);
            }
            _ => {
                if let Some((first, c)) = chunk.take() {
                    batch.insert(audit_key(first), &*codec::pack(&c));
                }
                let mut c = Vec::with_capacity(AUDIT_CHUNK_BYTES.max(bytes.len()));
                c.extend_from_slice(bytes);
                chunk = Some((*seq, c));
            }
        }
    }
    if let Some((first, c)) = chunk {
        batch.insert(audit_key(first), &*codec::pack(&c));
    }
    for (k, v) in &w.puts {
        match v {
            Some(v) => batch.insert(k.as_slice(), &*codec::pack(v)),
            None => batch.remove(k.as_slice()),
        }
    }
    batch.insert(KEY_HEAD, encode(&w.head)?);
    let t1 = std::time::Instant::now();
    inner.db.apply_batch(batch)?;
    let t2 = std::time::Instant::now();
    inner.db.flush()?;
    let t3 = std::time::Instant::now();
    if let Some(f) = &inner.data_file {
        f.sync_data().map_err(StoreError::Fsync)?;
    }
    Ok(Stages {
        pack: t1 - t0,
        apply: t2 - t1,
        flush: t3 - t2,
        sync: t3.elapsed(),
    })
}

/// A commit under way (see [`Store::start_commit`]); resolves to its outcome. Dropping it does
/// not cancel the write.
pub struct InFlight {
    /// `None` when there was nothing to write (or the store had already failed).
    pub(super) writes: Option<Arc<Pending>>,
    pub(super) rx: tokio::sync::oneshot::Receiver<Result<Committed, StoreError>>,
    pub(super) store: Store,
}

impl InFlight {
    /// The outcome, if the commit has already resolved (without waiting).
    pub fn try_result(&mut self) -> Option<Result<Committed, StoreError>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                self.store
                    .inner
                    .failed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Some(Err(StoreError::FailedClosed))
            }
        }
    }
}

impl std::future::Future for InFlight {
    type Output = Result<Committed, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                // The writing thread died without an answer (a panic inside sled): what is on
                // disk is unknown, so the store fails closed.
                self.store
                    .inner
                    .failed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Err(StoreError::FailedClosed)
            })
        })
    }
}
