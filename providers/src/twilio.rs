//! Twilio Messages API client: form post with HTTP basic auth.

use std::time::Duration;

use notify_runtime::records::ChannelMessage;
use serde_json::Value;

use crate::SendError;
use crate::outcome::{SendOutcome, classify_status, transport_outcome};

/// Who the SMS comes from: a number of the account, or a messaging service that picks one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioSender {
    From(String),
    MessagingService(String),
}

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// `https://api.twilio.com` or the local sandbox.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    pub sender: TwilioSender,
    pub timeout: Duration,
}

pub struct TwilioClient {
    http: reqwest::Client,
    config: TwilioConfig,
}

impl TwilioClient {
    pub fn new(config: TwilioConfig) -> Result<Self, SendError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| SendError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { http, config })
    }

    /// Sends `msg.body` to the phone number in `msg.recipient`.
    pub async fn send(&self, msg: &ChannelMessage) -> SendOutcome {
        let c = &self.config;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            c.base_url.trim_end_matches('/'),
            c.account_sid
        );
        let (sender_field, sender) = match &c.sender {
            TwilioSender::From(number) => ("From", number.as_str()),
            TwilioSender::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
        };
        let form = [
            ("To", msg.recipient.as_str()),
            (sender_field, sender),
            ("Body", msg.body.as_str()),
        ];
        let sent = self
            .http
            .post(url)
            .basic_auth(&c.account_sid, Some(&c.auth_token))
            .form(&form)
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return transport_outcome(&e),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            // Accepted even if the body is odd: retrying now could send the SMS twice.
            let sid = body["sid"].as_str().unwrap_or("").to_string();
            return SendOutcome::Sent { provider_id: sid };
        }
        let code = body["code"].as_u64().unwrap_or(0);
        let message = body["message"].as_str().unwrap_or("");
        let detail = format!("Twilio {} (code {code}): {message}", status.as_u16());
        classify_status(status, &headers, detail)
    }
}
