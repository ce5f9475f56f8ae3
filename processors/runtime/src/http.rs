//! `/metrics` (Prometheus), `/healthz` (the process is alive) and `/readyz` (it has joined its
//! group and is not shutting down or stuck on a dependency).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What `/readyz` reports.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    degraded: Arc<AtomicBool>,
}

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
}

/// Binds `listen` and serves until `shutdown`. Returns the bound address (port 0 picks one).
pub async fn serve(
    listen: &str,
    metrics: Metrics,
    health: Health,
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
        .route("/healthz", get(|| async { "ok" }))
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
    serve(&config.http.listen, metrics, health, shutdown)
        .await
        .map(Some)
        .map_err(|source| crate::runner::RuntimeError::Http {
            listen: config.http.listen.clone(),
            source,
        })
}
