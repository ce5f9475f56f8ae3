//! SendGrid v3 mail send client.

use std::time::Duration;

use notify_runtime::records::ChannelMessage;
use serde_json::{Value, json};

use crate::SendError;
use crate::outcome::{SendOutcome, classify_status, transport_outcome};

#[derive(Debug, Clone)]
pub struct SendGridConfig {
    /// `https://api.sendgrid.com` or the local sandbox.
    pub base_url: String,
    pub api_key: String,
    pub from_email: String,
    pub from_name: Option<String>,
    pub timeout: Duration,
}

pub struct SendGridClient {
    http: reqwest::Client,
    config: SendGridConfig,
}

impl SendGridClient {
    pub fn new(config: SendGridConfig) -> Result<Self, SendError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| SendError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { http, config })
    }

    /// Sends an e-mail to `msg.recipient`: subject from `title`, plain text from `body`,
    /// HTML from `html_body` when present.
    pub async fn send(&self, msg: &ChannelMessage) -> SendOutcome {
        let c = &self.config;
        let url = format!("{}/v3/mail/send", c.base_url.trim_end_matches('/'));
        let sent = self
            .http
            .post(url)
            .bearer_auth(&c.api_key)
            .json(&mail(c, msg))
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return transport_outcome(&e),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        if status.is_success() {
            let id = headers
                .get("x-message-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            return SendOutcome::Sent {
                provider_id: id.to_string(),
            };
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let messages: Vec<&str> = body["errors"]
            .as_array()
            .map(|errs| errs.iter().filter_map(|e| e["message"].as_str()).collect())
            .unwrap_or_default();
        let detail = format!("SendGrid {}: {}", status.as_u16(), messages.join("; "));
        classify_status(status, &headers, detail)
    }
}

fn mail(c: &SendGridConfig, msg: &ChannelMessage) -> Value {
    let mut from = json!({ "email": c.from_email });
    if let Some(name) = &c.from_name {
        from["name"] = json!(name);
    }
    // SendGrid wants text/plain before text/html.
    let mut content = vec![json!({ "type": "text/plain", "value": msg.body })];
    if let Some(html) = &msg.html_body {
        content.push(json!({ "type": "text/html", "value": html }));
    }
    json!({
        "personalizations": [{ "to": [{ "email": msg.recipient }] }],
        "from": from,
        "subject": msg.title.as_deref().unwrap_or(crate::DEFAULT_SUBJECT),
        "content": content,
        // Comes back on SendGrid's event webhook, linking its events to ours.
        "custom_args": { "event_id": msg.event_id },
    })
}
