//! `/metrics` (Prometheus), `/healthz` (the process is alive) and `/readyz` (it has joined its
//! group and is not shutting down or stuck on a dependency).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What `/healthz` and `/readyz` report.
///
/// Liveness means the consume loop is alive: it beats at least every few seconds, and it is
/// not stuck assigned, behind and receiving nothing (a stall the loop could not clear by
/// itself). A Kubernetes liveness probe on `/healthz` then restarts a processor that stopped
/// consuming, which a plain "ok" never would.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    degraded: Arc<AtomicBool>,
    /// Epoch ms of the consume loop's last beat (0: no loop yet, e.g. a tool).
    beat_ms: Arc<AtomicI64>,
    /// Epoch ms since when the loop has been stalled (0: not stalled).
    stalled_since_ms: Arc<AtomicI64>,
}

/// A loop that has not beaten for this long is dead.
const BEAT_LIMIT_MS: i64 = 60_000;

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    /// A dependency is failing (the stage holds records and retries).
    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.store(degraded, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.degraded.load(Ordering::Relaxed)
    }
    /// The consume loop is alive.
    pub fn beat(&self) {
        self.beat_ms.store(crate::now_ms(), Ordering::Relaxed);
    }
    /// The loop is stalled (assigned, behind, nothing received), or no longer.
    pub fn set_stalled(&self, stalled: bool) {
        if !stalled {
            self.stalled_since_ms.store(0, Ordering::Relaxed);
        } else if self.stalled_since_ms.load(Ordering::Relaxed) == 0 {
            self.stalled_since_ms
                .store(crate::now_ms(), Ordering::Relaxed);
        }
    }
    /// Whether the process should be restarted: its loop stopped beating, or it has been
    /// stalled for longer than `stall_limit_ms`.
    pub fn is_alive(&self, stall_limit_ms: i64) -> bool {
        let now = crate::now_ms();
        let beat = self.beat_ms.load(Ordering::Relaxed);
        let stalled = self.stalled_since_ms.load(Ordering::Relaxed);
        (beat == 0 || now - beat < BEAT_LIMIT_MS)
            && (stalled == 0 || now - stalled < stall_limit_ms)
    }
}

/// Binds `listen` and serves until `shutdown`. Returns the bound address (port 0 picks one).
pub async fn serve(
    listen: &str,
    metrics: Metrics,
    health: Health,
    stall_limit_ms: i64,
    shutdown: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        )
        .route(
            "/healthz",
            get({
                let h = health.clone();
                move || {
                    let h = h.clone();
                    async move {
                        if h.is_alive(stall_limit_ms) {
                            (StatusCode::OK, "ok")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "consume loop stalled")
                        }
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let h = health.clone();
                async move {
                    if h.is_ready() {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(addr)
}

/// Serves on `config.http.listen`, or not at all when it is empty. Returns the bound address.
pub async fn serve_configured(
    config: &crate::config::Config,
    metrics: Metrics,
    health: Health,
    shutdown: CancellationToken,
) -> Result<Option<std::net::SocketAddr>, crate::runner::RuntimeError> {
    if config.http.listen.is_empty() {
        return Ok(None);
    }
    let stall_limit_ms =
        i64::try_from(config.runtime.stall_after_ms.saturating_mul(2)).unwrap_or(i64::MAX);
    serve(
        &config.http.listen,
        metrics,
        health,
        stall_limit_ms,
        shutdown,
    )
    .await
    .map(Some)
    .map_err(|source| crate::runner::RuntimeError::Http {
        listen: config.http.listen.clone(),
        source,
    })
}

/// A loopback port nobody listens on now, for a process to be started with
/// `http.listen = 127.0.0.1:<port>` (harnesses and tests that then read its `/metrics`).
///
/// Chosen below the kernel's ephemeral range on purpose: a port picked by binding port 0 comes
/// from that range, and between releasing it and the child binding it, any outgoing
/// connection (Kafka, CQL, other processors starting) may take it as its local port. Ports
/// outside the range are only ever taken by an explicit bind, which the check here sees.
pub fn unused_loopback_port() -> std::io::Result<u16> {
    use std::sync::atomic::AtomicU32;
    // Successive calls in one process never return the same port; the random start keeps
    // concurrent processes apart.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    // Above the stack's fixed ports (12525, 18081, 19042, 19092, ...).
    let low = 20_000u32;
    let span = ephemeral_low.saturating_sub(low).max(1000);
    let start = rand::random::<u32>() % span;
    for _ in 0..span.min(2000) {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(low + offset) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no unused loopback port below the ephemeral range",
    ))
}

#[cfg(test)]
mod tests {
    use super::unused_loopback_port;

    #[test]
    fn unused_ports_differ_and_can_be_bound() {
        let a = unused_loopback_port().expect("a port");
        let b = unused_loopback_port().expect("a port");
        assert_ne!(a, b);
        assert!(a >= 20_000 && b >= 20_000);
        let _held = std::net::TcpListener::bind(("127.0.0.1", a)).expect("port a is free");
        std::net::TcpListener::bind(("127.0.0.1", b)).expect("port b is free");
    }
}
