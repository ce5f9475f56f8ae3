//! Failure injection: status codes, Retry-After, latency and dropped connections, per provider
//! and optionally per recipient token, for the next N requests or until cleared.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::record::{Provider, ProviderFilter};
use crate::server::DropConnection;
use crate::state::{AppState, lock};

/// One injected fault, as posted to `POST /sandbox/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub provider: Provider,
    /// Only requests for this device token / phone number / e-mail address.
    #[serde(default)]
    pub token: Option<String>,
    /// Answer with this status (and `body`, or the provider's usual error body for it).
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// Wait this long before answering (or before handling normally when no status is set).
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// How many matching requests get the fault; absent means until cleared.
    #[serde(default)]
    pub times: Option<u32>,
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Close the connection (HTTP/1) or reset the stream (HTTP/2) instead of answering.
    #[serde(default)]
    pub drop_connection: bool,
    /// The share of matching requests that get the fault (a storm of 50% 503s); absent: all.
    #[serde(default)]
    pub ratio: Option<f64>,
    /// Accept the message (it counts as delivered), then wait `latency_ms` before answering:
    /// a provider that accepts and then times out.
    #[serde(default)]
    pub after_accept: bool,
}

impl FaultSpec {
    pub fn new(provider: Provider) -> Self {
        Self {
            provider,
            token: None,
            status: None,
            retry_after_secs: None,
            latency_ms: None,
            times: None,
            body: None,
            drop_connection: false,
            ratio: None,
            after_accept: false,
        }
    }
    pub fn after_accept(mut self) -> Self {
        self.after_accept = true;
        self
    }
    pub fn ratio(mut self, share: f64) -> Self {
        self.ratio = Some(share);
        self
    }
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    pub fn retry_after_secs(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
    pub fn latency_ms(mut self, ms: u64) -> Self {
        self.latency_ms = Some(ms);
        self
    }
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
    pub fn body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }
    pub fn drop_connection(mut self) -> Self {
        self.drop_connection = true;
        self
    }
}

#[derive(Debug, Clone, Serialize)]
struct Entry {
    id: u64,
    #[serde(flatten)]
    spec: FaultSpec,
}

#[derive(Default)]
pub(crate) struct FaultTable {
    inner: Mutex<(u64, Vec<Entry>)>,
}

impl FaultTable {
    pub fn add(&self, spec: FaultSpec) -> u64 {
        let mut inner = lock(&self.inner);
        inner.0 += 1;
        let id = inner.0;
        inner.1.push(Entry { id, spec });
        id
    }

    pub fn clear(&self, provider: Option<Provider>) {
        lock(&self.inner)
            .1
            .retain(|e| provider.is_some_and(|p| e.spec.provider != p));
    }

    /// The fault for this request, if any, consuming one of its `times`. A fault aimed at
    /// the token wins over a provider-wide one, so a test can single out one device.
    fn take(&self, provider: Provider, token: &str, after_accept: bool) -> Option<FaultSpec> {
        let mut inner = lock(&self.inner);
        let entries = &mut inner.1;
        let kind = |e: &Entry| e.spec.provider == provider && e.spec.after_accept == after_accept;
        let pos = entries
            .iter()
            .position(|e| kind(e) && e.spec.token.as_deref() == Some(token))
            .or_else(|| {
                entries
                    .iter()
                    .position(|e| kind(e) && e.spec.token.is_none())
            })?;
        let spec = entries[pos].spec.clone();
        if spec
            .ratio
            .is_some_and(|share| rand::random::<f64>() >= share)
        {
            return None;
        }
        if let Some(times) = entries[pos].spec.times.as_mut() {
            *times = times.saturating_sub(1);
            if *times == 0 {
                entries.remove(pos);
            }
        }
        Some(spec)
    }
}

/// Applies a matching fault: sleeps, then returns the response to send instead of handling
/// the request, or `None` when the request should be handled normally.
pub(crate) async fn apply(
    state: &AppState,
    provider: Provider,
    token: &str,
    default_body: fn(StatusCode) -> serde_json::Value,
) -> Option<Response> {
    let spec = state.faults.take(provider, token, false)?;
    if let Some(ms) = spec.latency_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if spec.drop_connection {
        let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
        resp.extensions_mut().insert(DropConnection);
        return Some(resp);
    }
    let status = StatusCode::from_u16(spec.status?).ok()?;
    let body = spec.body.unwrap_or_else(|| default_body(status));
    let mut resp = (status, Json(body)).into_response();
    if let Some(secs) = spec.retry_after_secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Some(resp)
}

/// After a message was recorded as accepted: waits out a matching `after_accept` fault.
pub(crate) async fn hold_after_accept(state: &AppState, provider: Provider, token: &str) {
    if let Some(ms) = state
        .faults
        .take(provider, token, true)
        .and_then(|s| s.latency_ms)
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

pub(crate) async fn add_fault(
    State(state): State<Arc<AppState>>,
    Json(spec): Json<FaultSpec>,
) -> Response {
    if spec
        .status
        .is_some_and(|s| StatusCode::from_u16(s).is_err())
    {
        return (StatusCode::BAD_REQUEST, "status is not an HTTP status code").into_response();
    }
    let id = state.faults.add(spec);
    (StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response()
}

pub(crate) async fn list_faults(State(state): State<Arc<AppState>>) -> Response {
    let entries = lock(&state.faults.inner).1.clone();
    Json(entries).into_response()
}

pub(crate) async fn clear_faults(
    State(state): State<Arc<AppState>>,
    Query(filter): Query<ProviderFilter>,
) -> StatusCode {
    state.faults.clear(filter.provider);
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    impl FaultTable {
        fn take_any(&self, provider: Provider, token: &str) -> Option<FaultSpec> {
            self.take(provider, token, false)
        }
    }

    #[test]
    fn after_accept_faults_are_taken_only_after_accepting() {
        let table = FaultTable::default();
        table.add(
            FaultSpec::new(Provider::Fcm)
                .latency_ms(9)
                .after_accept()
                .times(1),
        );
        assert!(table.take(Provider::Fcm, "t", false).is_none());
        assert_eq!(
            table
                .take(Provider::Fcm, "t", true)
                .and_then(|s| s.latency_ms),
            Some(9)
        );
        assert!(table.take(Provider::Fcm, "t", true).is_none());
    }

    #[test]
    fn token_fault_wins_and_times_run_out() {
        let table = FaultTable::default();
        table.add(FaultSpec::new(Provider::Apns).status(503).times(1));
        table.add(FaultSpec::new(Provider::Apns).token("dead").status(410));
        let first = table.take_any(Provider::Apns, "dead").map(|s| s.status);
        assert_eq!(first, Some(Some(410)));
        assert_eq!(
            table.take_any(Provider::Apns, "other").map(|s| s.status),
            Some(Some(503))
        );
        assert!(table.take_any(Provider::Apns, "other").is_none());
        assert!(table.take_any(Provider::Fcm, "dead").is_none());
        assert!(table.take_any(Provider::Apns, "dead").is_some());
        table.clear(Some(Provider::Apns));
        assert!(table.take_any(Provider::Apns, "dead").is_none());
    }
}
