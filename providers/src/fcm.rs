//! FCM HTTP v1 client: `POST {base}/v1/projects/{project}/messages:send` with an OAuth2
//! access token obtained from a service account.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify_runtime::records::{ChannelMessage, Priority};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fcm_auth::{AccessTokens, ServiceAccount};
use crate::outcome::{SendOutcome, classify_status, transport_outcome};
use crate::{COLLAPSE_ID_KEY, SendError};

#[derive(Debug, Clone)]
pub struct FcmConfig {
    /// `https://fcm.googleapis.com` or the local sandbox.
    pub base_url: String,
    pub service_account: ServiceAccount,
    /// Whole-request timeout (also for the token exchange).
    pub timeout: Duration,
}

pub struct FcmClient {
    http: reqwest::Client,
    base_url: String,
    project_id: String,
    tokens: AccessTokens,
}

impl FcmClient {
    pub fn new(config: FcmConfig) -> Result<Self, SendError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| SendError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            project_id: config.service_account.project_id.clone(),
            tokens: AccessTokens::new(config.service_account)?,
        })
    }

    /// Sends one notification to the registration token in `msg.recipient`.
    pub async fn send(&self, msg: &ChannelMessage) -> SendOutcome {
        match self.try_send(msg).await {
            Ok(outcome) => outcome,
            Err(e) => e.into(),
        }
    }

    async fn try_send(&self, msg: &ChannelMessage) -> Result<SendOutcome, SendError> {
        let access_token = self.tokens.get(&self.http).await?;
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.base_url, self.project_id
        );
        let sent = self
            .http
            .post(url)
            .bearer_auth(access_token)
            .json(&json!({ "message": message(msg, now_ms()) }))
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return Ok(transport_outcome(&e)),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            let name = body.get("name").and_then(Value::as_str).unwrap_or("");
            return Ok(SendOutcome::Sent {
                provider_id: name.to_string(),
            });
        }
        let error = &body["error"];
        let error_code = error["details"]
            .as_array()
            .and_then(|details| {
                details
                    .iter()
                    .find_map(|d| d.get("errorCode").and_then(Value::as_str))
            })
            .unwrap_or("");
        let grpc_status = error["status"].as_str().unwrap_or("");
        let message = error["message"].as_str().unwrap_or("");
        let detail = format!(
            "FCM {}: {} {error_code} {message}",
            status.as_u16(),
            grpc_status
        );
        if error_code == "UNREGISTERED" || status == StatusCode::NOT_FOUND || bad_token(error) {
            return Ok(SendOutcome::TokenInvalid { reason: detail });
        }
        if status == StatusCode::UNAUTHORIZED {
            // The access token was revoked or expired early: get a new one on the retry.
            self.tokens.invalidate().await;
            return Ok(SendOutcome::retryable(detail));
        }
        Ok(classify_status(status, &headers, detail))
    }
}

/// INVALID_ARGUMENT that Google pins on `message.token`: the token is malformed.
fn bad_token(error: &Value) -> bool {
    error["details"].as_array().is_some_and(|details| {
        details.iter().any(|d| {
            d["fieldViolations"].as_array().is_some_and(|v| {
                v.iter()
                    .any(|f| f["field"].as_str() == Some("message.token"))
            })
        })
    })
}

fn message(msg: &ChannelMessage, now_ms: i64) -> Value {
    let mut notification = json!({ "body": msg.body });
    if let Some(title) = &msg.title {
        notification["title"] = json!(title);
    }
    let priority = match msg.priority {
        Priority::Low | Priority::Normal => "NORMAL",
        Priority::High | Priority::Critical => "HIGH",
    };
    let mut android = json!({ "priority": priority });
    if let Some(expires_at) = msg.expires_at {
        // FCM keeps an undeliverable message for `ttl`; past the event's expiry it is useless.
        let secs = (expires_at - now_ms).max(0) / 1000;
        android["ttl"] = json!(format!("{secs}s"));
    }
    if let Some(collapse) = msg.data.get(COLLAPSE_ID_KEY) {
        android["collapse_key"] = json!(collapse);
    }
    let data: serde_json::Map<String, Value> = msg
        .data
        .iter()
        .filter(|(k, _)| k.as_str() != COLLAPSE_ID_KEY)
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "token": msg.recipient,
        "notification": notification,
        "data": data,
        "android": android,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
