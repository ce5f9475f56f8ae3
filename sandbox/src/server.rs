//! The listener: one router for every provider, served over HTTP/1.1 and h2c on one port.
//!
//! The accept loop is ours rather than `axum::serve` because a fault may ask for the
//! connection to be dropped, which only the connection's owner can do: a handler marks its
//! response with [`DropConnection`] and the service turns that into an error, on which hyper
//! closes an HTTP/1 connection or resets the HTTP/2 stream without answering.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::state::AppState;
use crate::{apns, faults, fcm, record, sendgrid, twilio};

/// Response extension: close instead of answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct DroppedByFault;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/3/device/{token}", post(apns::send))
        .route("/token", post(fcm::token))
        .route("/v1/projects/{project}/messages:send", post(fcm::send))
        .route(
            "/2010-04-01/Accounts/{account_sid}/Messages.json",
            post(twilio::send),
        )
        .route("/v3/mail/send", post(sendgrid::send))
        .route(
            "/sandbox/messages",
            get(record::list_messages).delete(record::clear_messages),
        )
        .route("/sandbox/stats", get(record::stats))
        .route(
            "/sandbox/faults",
            get(faults::list_faults)
                .post(faults::add_fault)
                .delete(faults::clear_faults),
        )
        .with_state(state)
}

pub(crate) async fn accept_loop(listener: TcpListener, router: Router, cancel: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set does not grow over a long dev session.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "sandbox accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let cancel = cancel.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let router = router.clone();
                async move {
                    let resp = router
                        .oneshot(req)
                        .await
                        .unwrap_or_else(|never: Infallible| match never {});
                    if resp.extensions().get::<DropConnection>().is_some() {
                        return Err(DroppedByFault);
                    }
                    Ok(resp)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = cancel.cancelled() => {}
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "sandbox connection ended with an error");
                    }
                }
            }
        });
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}
