//! APNs provider API client: HTTP/2, token-based auth, one pooled connection for all streams.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify_runtime::records::{ChannelMessage, Priority};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::apns_token::ProviderToken;
use crate::outcome::{SendOutcome, classify_status, transport_outcome};
use crate::{COLLAPSE_ID_KEY, SendError};

/// Namespace for apns-id: a resend of the same event to the same device carries the same id,
/// so Apple's and our logs line up across retries.
const APNS_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f0c_5a8e_4d1b_4c57_9a2e_0b7d_3f1e_a9c4);

/// Apple's reasons that mean the device token will never work again.
const TOKEN_REASONS: &[&str] = &["BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"];

/// Reasons Apple also gives for every token when our side is wrong: a wrong `apns-topic`
/// (DeviceTokenNotForTopic) or production tokens sent to the development endpoint and back
/// (BadDeviceToken).
const CONFIG_SUSPECT_REASONS: &[&str] = &["BadDeviceToken", "DeviceTokenNotForTopic"];

/// This many suspect rejections in a row, with no message accepted in between, is taken as a
/// configuration error, not as that many dead tokens: the messages are held (Unavailable)
/// instead of erasing the user base through token feedback. One accepted message resets it.
pub const TOKEN_BREAKER_AT: u32 = 20;

#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// `https://api.push.apple.com`, `https://api.sandbox.push.apple.com`, or the local sandbox.
    pub base_url: String,
    pub team_id: String,
    pub key_id: String,
    /// Content of the `AuthKey_<KEYID>.p8` file (PKCS#8 PEM).
    pub private_key_pem: String,
    /// The app's bundle id (apns-topic).
    pub topic: String,
    /// Whole-request timeout.
    pub timeout: Duration,
}

pub struct ApnsClient {
    http: reqwest::Client,
    config: ApnsConfig,
    token: Mutex<ProviderToken>,
    /// Suspect token rejections since the last accepted message.
    suspect_in_a_row: AtomicU32,
}

impl ApnsClient {
    pub fn new(config: ApnsConfig) -> Result<Self, SendError> {
        let token = ProviderToken::new(&config.private_key_pem, &config.key_id, &config.team_id)?;
        // APNs speaks only HTTP/2, so prior knowledge is right for TLS (ALPN still offers
        // h2) and for the h2c sandbox. One host means one connection, multiplexing streams;
        // the pings keep it open between bursts as Apple asks.
        let http = reqwest::Client::builder()
            .http2_prior_knowledge()
            .http2_keep_alive_interval(Duration::from_secs(60))
            .http2_keep_alive_while_idle(true)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| SendError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            config,
            token: Mutex::new(token),
            suspect_in_a_row: AtomicU32::new(0),
        })
    }

    /// Sends one notification to the device token in `msg.recipient`.
    pub async fn send(&self, msg: &ChannelMessage) -> SendOutcome {
        match self.try_send(msg).await {
            Ok(outcome) => outcome,
            Err(e) => e.into(),
        }
    }

    async fn try_send(&self, msg: &ChannelMessage) -> Result<SendOutcome, SendError> {
        let device = &msg.recipient;
        if device.is_empty() || !device.bytes().all(|b| b.is_ascii_alphanumeric()) {
            // Not even a path segment: Apple would say BadDeviceToken.
            return Ok(SendOutcome::TokenInvalid {
                reason: "BadDeviceToken: not a hex device token".into(),
            });
        }
        let jwt = self.provider_token()?;
        let apns_id = apns_id(&msg.event_id, device);
        let url = format!(
            "{}/3/device/{device}",
            self.config.base_url.trim_end_matches('/')
        );
        let mut req = self
            .http
            .post(url)
            .bearer_auth(jwt)
            .header("apns-topic", &self.config.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", priority(msg.priority))
            .header("apns-id", apns_id.to_string())
            .json(&payload(msg));
        if let Some(expires_at) = msg.expires_at {
            // Seconds since the epoch; an already-past time means "try once, do not store".
            req = req.header("apns-expiration", (expires_at.max(0) / 1000).to_string());
        }
        if let Some(collapse) = msg.data.get(COLLAPSE_ID_KEY) {
            req = req.header("apns-collapse-id", collapse);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return Ok(transport_outcome(&e)),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        if status.is_success() {
            let provider_id = headers
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| apns_id.to_string(), str::to_string);
            self.suspect_in_a_row.store(0, Ordering::Relaxed);
            return Ok(SendOutcome::Sent { provider_id });
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let reason = body
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let detail = format!("APNs {}: {reason}", status.as_u16());
        if CONFIG_SUSPECT_REASONS.contains(&reason.as_str()) {
            let in_a_row = self.suspect_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
            if in_a_row >= TOKEN_BREAKER_AT {
                return Ok(SendOutcome::Unavailable {
                    reason: format!(
                        "{detail}, {in_a_row} tokens in a row and none accepted: the apns-topic \
                         ({}) or the endpoint is likely wrong; holding messages, no token marked \
                         invalid",
                        self.config.topic
                    ),
                });
            }
        }
        if status == StatusCode::GONE || TOKEN_REASONS.contains(&reason.as_str()) {
            return Ok(SendOutcome::TokenInvalid { reason: detail });
        }
        if status == StatusCode::FORBIDDEN && reason == "InvalidProviderToken" {
            // Our key, team or key id is wrong: no message can go, none is at fault.
            return Ok(SendOutcome::Unavailable { reason: detail });
        }
        if status == StatusCode::FORBIDDEN && reason == "ExpiredProviderToken" {
            self.lock_token().mark_stale();
            return Ok(SendOutcome::retryable(detail));
        }
        Ok(classify_status(status, &headers, detail))
    }

    fn provider_token(&self) -> Result<String, SendError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.lock_token().get(now)
    }

    fn lock_token(&self) -> std::sync::MutexGuard<'_, ProviderToken> {
        // Signing cannot leave the cache half-updated, so a poisoned lock is still usable.
        self.token.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The apns-id for an event and device: stable across resends.
pub fn apns_id(event_id: &str, device_token: &str) -> Uuid {
    let name = format!("{event_id}\n{device_token}");
    Uuid::new_v5(&APNS_ID_NAMESPACE, name.as_bytes())
}

fn priority(p: Priority) -> &'static str {
    // 5 lets the device batch delivery to save power; everything else is immediate.
    match p {
        Priority::Low => "5",
        Priority::Normal | Priority::High | Priority::Critical => "10",
    }
}

/// `{"aps":{"alert":{...}}}` plus the message's data as custom top-level keys.
fn payload(msg: &ChannelMessage) -> Value {
    let mut alert = Map::new();
    if let Some(title) = &msg.title {
        alert.insert("title".into(), json!(title));
    }
    alert.insert("body".into(), json!(msg.body));
    let mut root = Map::new();
    root.insert("aps".into(), json!({ "alert": alert, "sound": "default" }));
    for (k, v) in &msg.data {
        if k != "aps" && k != COLLAPSE_ID_KEY {
            root.insert(k.clone(), json!(v));
        }
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_id_is_stable_per_event_and_device() {
        assert_eq!(apns_id("e1", "aa"), apns_id("e1", "aa"));
        assert_ne!(apns_id("e1", "aa"), apns_id("e1", "ab"));
        assert_ne!(apns_id("e1", "aa"), apns_id("e2", "aa"));
        // "e1\nx" must not collide with a differently split pair.
        assert_ne!(apns_id("e", "1aa"), apns_id("e1", "aa"));
    }
}
