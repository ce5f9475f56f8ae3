//! Each delivery processor's `[processors.deliver-<channel>]` table: what every channel has
//! (topics, rate, lease) and, under `.provider`, how to reach its provider.
//!
//! ```toml
//! [processors.deliver-apns]
//! rate_per_sec = 500.0
//! [processors.deliver-apns.provider]
//! base_url = "https://api.push.apple.com"
//! key_file = "/secrets/AuthKey_ABC123.p8"
//! key_id = "ABC123"
//! team_id = "TEAM123"
//! topic = "com.example.app"
//! ```

use serde::{Deserialize, Serialize};

/// Settings shared by the four delivery processors; `P` is the provider's own table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    bound(deserialize = "P: ChannelProvider + Deserialize<'de>")
)]
pub struct DeliverySettings<P> {
    /// The channel topic consumed (ChannelMessage, key = recipient).
    pub input: String,
    /// First step of the retry ladder, for retryable outcomes.
    pub retry_topic: String,
    /// Where invalid device tokens are reported (TokenFeedback, key = user id).
    pub token_feedback_topic: String,
    /// Provider calls per second across this processor's lanes; 0 = unlimited.
    pub rate_per_sec: f64,
    /// Calls allowed at once after an idle spell.
    pub burst: u32,
    /// How long a claim of an earlier owner (one that crashed, or was paused and replaced,
    /// maybe mid-call) is waited for before it counts as in doubt. Longer than the provider
    /// timeout.
    pub lease_ms: u64,
    /// What becomes of a message the provider may or may not have (a crash between the call
    /// and its outcome, a timeout after the request went out): `fail` (FAILED with reason
    /// "in doubt" and a dead letter of class `in_doubt`; nothing is sent twice) or `resend`
    /// (through the retry ladder; at least once, e.g. for push with a collapse id).
    pub in_doubt: InDoubtPolicy,
    /// Status events, retries and feedback in Kafka transactions with the offsets: each
    /// outcome is seen once by read-committed consumers.
    pub exactly_once: bool,
    /// Confirmations that this instance still owns a partition are batched: one read per
    /// interval at most answers every claim written before it.
    pub confirm_interval_ms: u64,
    pub provider: P,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InDoubtPolicy {
    Fail,
    Resend,
}

/// A provider table, and the channel topic its processor reads by default.
pub trait ChannelProvider: Default {
    const INPUT: &'static str;
    /// The provider call's timeout; the ledger lease must outlast it.
    fn timeout_ms(&self) -> u64;
    /// Builds the provider's client as start-up does (required settings present, credential
    /// files readable and parseable), without calling the provider.
    fn check_client(&self) -> Result<(), String>;
}

macro_rules! channel_provider {
    ($settings:ty, $input:literal, $build:path) => {
        impl ChannelProvider for $settings {
            const INPUT: &'static str = $input;
            fn timeout_ms(&self) -> u64 {
                self.timeout_ms
            }
            fn check_client(&self) -> Result<(), String> {
                $build(self).map(drop).map_err(|e| e.to_string())
            }
        }
    };
}
channel_provider!(ApnsSettings, "notify.channel.apns.v1", crate::clients::apns);
channel_provider!(FcmSettings, "notify.channel.fcm.v1", crate::clients::fcm);
channel_provider!(SmsSettings, "notify.channel.sms.v1", crate::clients::sms);
channel_provider!(
    EmailSettings,
    "notify.channel.email.v1",
    crate::clients::email
);

impl<P: ChannelProvider> DeliverySettings<P> {
    /// What start-up checks before it connects, every problem at once (`--check-config`);
    /// paths are relative to the processor's table.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.lease_ms <= self.provider.timeout_ms() {
            // Otherwise a call still in progress could be taken over and sent a second time.
            errors.push(format!(
                "lease_ms ({}) must exceed provider.timeout_ms ({})",
                self.lease_ms,
                self.provider.timeout_ms()
            ));
        }
        if self.provider.timeout_ms() == 0 {
            errors.push("provider.timeout_ms must be at least 1".into());
        }
        if !self.rate_per_sec.is_finite() || self.rate_per_sec < 0.0 {
            errors.push(format!(
                "rate_per_sec ({}) must be 0 (unlimited) or more",
                self.rate_per_sec
            ));
        }
        if self.rate_per_sec > 0.0 && self.burst == 0 {
            errors.push("burst must be at least 1 when rate_per_sec is set".into());
        }
        errors.extend(notify_runtime::config::blank(&[
            ("input", self.input.as_str()),
            ("retry_topic", self.retry_topic.as_str()),
            ("token_feedback_topic", self.token_feedback_topic.as_str()),
        ]));
        if let Err(e) = self.provider.check_client() {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl<P: ChannelProvider> Default for DeliverySettings<P> {
    fn default() -> Self {
        Self {
            input: P::INPUT.into(),
            retry_topic: "notify.retry.10s.v1".into(),
            token_feedback_topic: "notify.token-feedback.v1".into(),
            rate_per_sec: 0.0,
            burst: 50,
            lease_ms: 30_000,
            in_doubt: InDoubtPolicy::Fail,
            exactly_once: true,
            confirm_interval_ms: 5,
            provider: P::default(),
        }
    }
}

/// APNs: token-based auth with a .p8 key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApnsSettings {
    pub base_url: String,
    /// `AuthKey_<KEYID>.p8` (PKCS#8 PEM).
    pub key_file: String,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    pub timeout_ms: u64,
}

impl Default for ApnsSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.push.apple.com".into(),
            key_file: String::new(),
            key_id: String::new(),
            team_id: String::new(),
            topic: String::new(),
            timeout_ms: 10_000,
        }
    }
}

/// FCM HTTP v1: a Google service-account JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FcmSettings {
    pub base_url: String,
    pub service_account_file: String,
    pub timeout_ms: u64,
}

impl Default for FcmSettings {
    fn default() -> Self {
        Self {
            base_url: "https://fcm.googleapis.com".into(),
            service_account_file: String::new(),
            timeout_ms: 10_000,
        }
    }
}

/// Twilio: account SID, auth token (from a file) and a sender number or messaging service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsSettings {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token_file: String,
    /// Sender number (E.164); exactly one of `from` and `messaging_service_sid`.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub timeout_ms: u64,
}

impl Default for SmsSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.twilio.com".into(),
            account_sid: String::new(),
            auth_token_file: String::new(),
            from: None,
            messaging_service_sid: None,
            timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailProvider {
    Smtp,
    Sendgrid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    None,
    Starttls,
    Tls,
}

/// E-mail: SMTP (STARTTLS/TLS, AUTH) or SendGrid, chosen by `kind`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    pub kind: EmailProvider,
    /// Sender mailbox, `Name <address>` or `address`.
    pub from: String,
    pub timeout_ms: u64,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_security: Security,
    pub smtp_username: Option<String>,
    pub smtp_password_file: Option<String>,
    /// Extra trusted root certificate (PEM file) for a relay with a private CA.
    pub smtp_root_cert_file: Option<String>,
    pub sendgrid_base_url: String,
    pub sendgrid_api_key_file: String,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            kind: EmailProvider::Smtp,
            from: "Notify <notify@localhost>".into(),
            timeout_ms: 10_000,
            smtp_host: "127.0.0.1".into(),
            smtp_port: 25,
            smtp_security: Security::Starttls,
            smtp_username: None,
            smtp_password_file: None,
            smtp_root_cert_file: None,
            sendgrid_base_url: "https://api.sendgrid.com".into(),
            sendgrid_api_key_file: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reports_the_lease_rate_and_missing_credentials_at_once() {
        let mut s = DeliverySettings::<SmsSettings>::default();
        s.lease_ms = s.provider.timeout_ms;
        s.rate_per_sec = -1.0;
        let errors = s.check().expect_err("three problems");
        let text = errors.join("\n");
        assert_eq!(errors.len(), 3, "{text}");
        assert!(text.contains("lease_ms"), "{text}");
        assert!(text.contains("rate_per_sec"), "{text}");
        assert!(text.contains("from"), "the SMS client's own check: {text}");
    }

    #[test]
    fn check_reads_the_credential_files() {
        let dir = std::env::temp_dir().join(format!("notify-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("auth-token");
        let mut s = DeliverySettings::<SmsSettings>::default();
        s.provider.account_sid = "AC123".into();
        s.provider.from = Some("+15005550006".into());
        s.provider.auth_token_file = token.display().to_string();
        let missing = s.check().expect_err("the token file does not exist yet");
        assert!(missing[0].contains("auth-token"), "{missing:?}");
        std::fs::write(&token, "secret\n").unwrap();
        assert_eq!(s.check(), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
