//! The threads of the daemon's own that every answer, a vote's above all, waits for: the
//! engine's (`cordon-engine`) and the gRPC server's runtime (`cordon-grpc`).
//!
//! Owns: starting each on threads of its own at `store.critical_nice` and the future that
//! resolves when it has ended. (The store's writing thread is the store's, see `store::commit`.)

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio_util::sync::CancellationToken;

/// Runs the engine on a thread of its own, in a single-threaded runtime; the returned future
/// resolves when the engine has stopped. Deciding a batch is synchronous CPU work: on the shared
/// runtime it would hold one of its workers for the batch, and HTTP and gRPC requests (a vote
/// among them) would wait behind it there; on its own thread the operating system shares the
/// cores between them, and the thread asks for the priority `nice` (`store.critical_nice`),
/// since every answer waits for it.
pub(super) fn engine_thread(
    eng: crate::engine::Engine,
    nice: i32,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let (done, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("cordon-engine".into())
        .spawn(move || {
            crate::nice::raise_critical("cordon-engine", nice);
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(eng.run()),
                Err(e) => {
                    tracing::error!(error = %e, "the engine's runtime could not be built; nothing can be decided");
                }
            }
            let _ = done.send(());
        })?;
    Ok(async move {
        let _ = stopped.await;
    })
}

/// Serves gRPC (approvals, alerts, cases) on a runtime of its own, on threads named
/// `cordon-grpc`; the returned future resolves with the server's end. On the runtime that
/// serves HTTP, a vote's connection and handler waited for a worker behind the tasks of an
/// HTTP alert storm, twice per vote (the request, then the engine's answer: p99 ~2.7 ms of a
/// vote's time under 800 alerts/s, BENCHMARKS.md); on threads of their own the operating system
/// wakes them like any other thread that has slept, and they ask for `store.critical_nice` as
/// the engine's and the writer's do. What they spend per alert ingested over gRPC is bounded by
/// the engine's queue (a handler waits for its place, without CPU), so a gRPC storm cannot take
/// more of the cores from HTTP than the engine's rate allows.
pub(super) fn grpc_runtime(
    listener: tokio::net::TcpListener,
    state: crate::api::ApiState,
    cfg: crate::config::GrpcConfig,
    metrics: crate::metrics::ListenerMetrics,
    shutdown: CancellationToken,
    nice: i32,
) -> std::io::Result<impl std::future::Future<Output = Result<(), crate::api::ServeError>>> {
    let listener = listener.into_std()?;
    let (done, ended) = tokio::sync::oneshot::channel();
    // The runtime is built (and dropped) on its own thread: a runtime dropped inside the
    // caller's async context, were the thread not to start, would panic there. Whether it
    // could be built is known before this returns, so a daemon without it does not start.
    let (built, ready) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
    std::thread::Builder::new()
        .name("cordon-grpc".into())
        .spawn(move || {
            let told = Arc::new(AtomicBool::new(false));
            let told_pool = told.clone();
            crate::nice::raise_critical_once("cordon-grpc", nice, &told);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(
                    std::thread::available_parallelism()
                        .map(|n| n.get().min(4))
                        .unwrap_or(2),
                )
                .thread_name("cordon-grpc")
                .on_thread_start(move || {
                    crate::nice::raise_critical_once("cordon-grpc", nice, &told_pool)
                })
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = built.send(Err(e));
                    return;
                }
            };
            let _ = built.send(Ok(()));
            let served = rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .map_err(|e| crate::api::ServeError::Io(e.to_string()))?;
                crate::api::serve(listener, state, &cfg, metrics, async move {
                    shutdown.cancelled().await
                })
                .await
            });
            let _ = done.send(served);
        })?;
    ready.recv().map_err(|_| {
        std::io::Error::other("the gRPC server's thread ended before its runtime")
    })??;
    Ok(async move {
        ended.await.unwrap_or_else(|_| {
            Err(crate::api::ServeError::Io(
                "the gRPC server's thread ended without an answer".into(),
            ))
        })
    })
}
