//! The accept loop: every connection served by hyper's HTTP/1 with a deadline for its request
//! head, and no more connections at once than the process can hold open.
//!
//! `axum::serve` keeps a connection that never completes its request head open forever
//! (its timer is not set): enough of them use up the process's file descriptors, and then
//! no client connects, and the WAL and the checkpoints cannot open files either. Here a
//! connection that has not sent a complete request head within `server.header_timeout_ms`
//! (a new one, or a kept-alive one between requests) is closed, and a connection past
//! `server.max_connections` is closed as soon as it is accepted.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Files the engine keeps for itself below the descriptor limit (WAL segments, the entity
/// store, checkpoints, the text index).
const RESERVED_FILES: u64 = 1024;

/// How a listener treats its connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more are closed when accepted.
    pub max_connections: usize,
    /// How long a connection may take to send a request head (or wait idle between two).
    pub header_timeout: Duration,
}

impl Limits {
    /// The server's settings, `max_connections` lowered to what the process's descriptor
    /// limit leaves after [`RESERVED_FILES`].
    pub fn of(server: &tidal_core::config::ServerConfig) -> Limits {
        let fd_room = descriptor_limit().map_or(u64::MAX, |n| n.saturating_sub(RESERVED_FILES).max(16));
        let max_connections = (server.max_connections as u64).min(fd_room) as usize;
        if max_connections < server.max_connections {
            tracing::info!(
                max_connections,
                configured = server.max_connections,
                "server.max_connections lowered to fit the process's open-file limit"
            );
        }
        Limits {
            max_connections,
            header_timeout: Duration::from_millis(server.header_timeout_ms),
        }
    }
}

fn descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Serves `router` on `listener` until `stop` completes, then lets the connections finish
/// their requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refused = AtomicU64::new(0);
    // Dropped at the end: every connection is told to finish.
    let (stopping_tx, stopping_rx) = watch::channel(());
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut stop => break,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or memory, or a connection that went away while queued:
                // wait a moment rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let n = refused.fetch_add(1, Ordering::Relaxed);
            if (n + 1).is_power_of_two() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    refused = n + 1,
                    "a connection past server.max_connections was closed"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stopping = stopping_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopping.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    drop(stopping_rx);
    drop(stopping_tx);
    // Every connection holds a slot until it is done.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
    Ok(())
}
