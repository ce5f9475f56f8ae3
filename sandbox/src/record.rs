//! What the sandbox accepted, and the `/sandbox/messages` and `/sandbox/stats` endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::state::{AppState, lock, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Apns,
    Fcm,
    Twilio,
    Sendgrid,
}

/// One message a provider stand-in accepted (answered 2xx).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedMessage {
    pub id: u64,
    pub provider: Provider,
    pub path: String,
    /// The device token, phone number or e-mail address the message is for.
    pub recipient: String,
    /// Only the headers a provider gives meaning to (never credentials).
    pub headers: BTreeMap<String, String>,
    /// JSON bodies as sent; form bodies as an object of their fields.
    pub body: serde_json::Value,
    /// The id the sandbox answered with (apns-id, FCM name, Twilio sid, SendGrid message id).
    pub provider_id: String,
    pub received_at: i64,
}

/// Counts of requests per provider, accepted or not, and of FCM token exchanges; messages
/// accepted, and how many of them repeated an earlier one exactly (same provider, recipient
/// and body: a second send of the same notification).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxStats {
    pub requests: BTreeMap<Provider, u64>,
    pub fcm_token_requests: u64,
    #[serde(default)]
    pub accepted: u64,
    #[serde(default)]
    pub repeated: u64,
}

pub(crate) struct Recorder {
    inner: Mutex<Inner>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            inner: Mutex::new(Inner {
                keep: usize::MAX,
                ..Inner::default()
            }),
        }
    }
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    messages: std::collections::VecDeque<RecordedMessage>,
    /// Messages kept for `/sandbox/messages` at most (the oldest go first); counts and
    /// fingerprints cover every message regardless.
    keep: usize,
    fingerprints: std::collections::HashSet<u64>,
    stats: SandboxStats,
}

fn fingerprint(m: &Accepted) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (m.provider, &m.recipient, m.body.to_string()).hash(&mut h);
    h.finish()
}

/// Fields of a recorded message that the provider handler fills in.
pub(crate) struct Accepted {
    pub provider: Provider,
    pub path: String,
    pub recipient: String,
    pub headers: BTreeMap<String, String>,
    pub body: serde_json::Value,
    pub provider_id: String,
}

impl Recorder {
    pub fn record(&self, m: Accepted) {
        let print = fingerprint(&m);
        let mut inner = lock(&self.inner);
        inner.next_id += 1;
        inner.stats.accepted += 1;
        if !inner.fingerprints.insert(print) {
            inner.stats.repeated += 1;
        }
        if inner.messages.len() >= inner.keep {
            inner.messages.pop_front();
        }
        if inner.keep == 0 {
            return;
        }
        let id = inner.next_id;
        inner.messages.push_back(RecordedMessage {
            id,
            provider: m.provider,
            path: m.path,
            recipient: m.recipient,
            headers: m.headers,
            body: m.body,
            provider_id: m.provider_id,
            received_at: now_ms(),
        });
    }

    pub fn count_request(&self, provider: Provider) {
        *lock(&self.inner)
            .stats
            .requests
            .entry(provider)
            .or_insert(0) += 1;
    }

    pub fn count_token_request(&self) {
        lock(&self.inner).stats.fcm_token_requests += 1;
    }

    pub fn list(&self, provider: Option<Provider>) -> Vec<RecordedMessage> {
        lock(&self.inner)
            .messages
            .iter()
            .filter(|m| provider.is_none_or(|p| m.provider == p))
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        let mut inner = lock(&self.inner);
        inner.messages.clear();
        inner.fingerprints.clear();
        inner.stats = SandboxStats::default();
    }

    pub fn keep_messages(&self, n: usize) {
        let mut inner = lock(&self.inner);
        inner.keep = n;
        while inner.messages.len() > n {
            inner.messages.pop_front();
        }
    }

    pub fn stats(&self) -> SandboxStats {
        lock(&self.inner).stats.clone()
    }
}

#[derive(Deserialize)]
pub(crate) struct ProviderFilter {
    pub provider: Option<Provider>,
}

pub(crate) async fn list_messages(
    State(state): State<Arc<AppState>>,
    Query(filter): Query<ProviderFilter>,
) -> Json<Vec<RecordedMessage>> {
    Json(state.records.list(filter.provider))
}

pub(crate) async fn clear_messages(State(state): State<Arc<AppState>>) -> StatusCode {
    state.records.clear();
    StatusCode::NO_CONTENT
}

pub(crate) async fn stats(State(state): State<Arc<AppState>>) -> Json<SandboxStats> {
    Json(state.records.stats())
}
