//! Local stand-ins for the provider HTTP APIs (APNs, FCM HTTP v1, Twilio, SendGrid).
//!
//! Each stand-in speaks the provider's real wire protocol and checks its real authentication,
//! so the delivery clients are exercised exactly as in production; only the base URL differs.
//! What is accepted is recorded (`GET /sandbox/messages`), and failures can be injected per
//! provider or per recipient token at runtime (`POST /sandbox/faults`).
//!
//! Everything is served on one listener: the providers' paths do not overlap, and the server
//! accepts HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port, which is what the
//! APNs client uses.

mod apns;
mod auth;
mod credentials;
mod faults;
mod fcm;
mod record;
mod sendgrid;
mod server;
mod state;
mod twilio;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};

pub use credentials::{CredentialFiles, TestCredentials, generate_test_credentials};
pub use faults::FaultSpec;
pub use record::{Provider, RecordedMessage, SandboxStats};

/// APNs account as Apple knows it: the team, the key id and the public half of the .p8 key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApnsAccount {
    pub team_id: String,
    pub key_id: String,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`) of the P-256 signing key.
    pub public_key_pem: String,
    /// When set, any other `apns-topic` is answered with 400 TopicDisallowed.
    #[serde(default)]
    pub topic: Option<String>,
}

/// The Firebase project and the service account allowed to send to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FcmAccount {
    pub project_id: String,
    pub client_email: String,
    /// SPKI PEM of the service account's RSA key.
    pub public_key_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TwilioAccount {
    pub account_sid: String,
    pub auth_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendGridAccount {
    pub api_key: String,
}

/// What the sandbox listens on and which credentials it accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// Use port 0 in tests; the bound address is on the handle.
    pub listen: SocketAddr,
    pub apns: ApnsAccount,
    pub fcm: FcmAccount,
    pub twilio: TwilioAccount,
    pub sendgrid: SendGridAccount,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid key: {0}")]
    Key(String),
    #[error("i/o on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A running sandbox. Dropping the handle stops it, as does cancelling its token.
pub struct SandboxHandle {
    addr: SocketAddr,
    state: Arc<state::AppState>,
    cancel: CancellationToken,
    _stop_on_drop: DropGuard,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Binds the listener and serves until the handle is dropped or its token cancelled.
pub async fn serve(config: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
    serve_with_cancel(config, CancellationToken::new()).await
}

/// Like [`serve`], stopping also when `cancel` (e.g. the process's shutdown token) fires.
pub async fn serve_with_cancel(
    config: SandboxConfig,
    cancel: CancellationToken,
) -> Result<SandboxHandle, SandboxError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| SandboxError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
        addr: config.listen,
        source,
    })?;
    let state = Arc::new(state::AppState::new(config, format!("http://{addr}"))?);
    let router = server::router(state.clone());
    let task = tokio::spawn(server::accept_loop(listener, router, cancel.clone()));
    tracing::info!(%addr, "provider sandbox listening");
    Ok(SandboxHandle {
        addr,
        state,
        _stop_on_drop: cancel.clone().drop_guard(),
        cancel,
        task: Some(task),
    })
}

impl SandboxHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`; every provider's API and `/sandbox/*` live under it.
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    /// The OAuth2 token URI to put in a service-account JSON (`{base}/token`).
    pub fn fcm_token_uri(&self) -> String {
        self.state.token_uri()
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Messages accepted so far, oldest first, optionally of one provider.
    pub fn messages(&self, provider: Option<Provider>) -> Vec<RecordedMessage> {
        self.state.records.list(provider)
    }

    pub fn clear_messages(&self) {
        self.state.records.clear();
    }

    /// Keeps at most `n` accepted messages for [`Self::messages`] (oldest dropped first);
    /// the counters in [`Self::stats`] still cover every message.
    pub fn keep_messages(&self, n: usize) {
        self.state.records.keep_messages(n);
    }

    /// Request counters, including how many OAuth2 token exchanges FCM clients made.
    pub fn stats(&self) -> SandboxStats {
        self.state.records.stats()
    }

    pub fn add_fault(&self, fault: FaultSpec) -> u64 {
        self.state.faults.add(fault)
    }

    pub fn clear_faults(&self) {
        self.state.faults.clear(None);
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
