//! The Avro records of `schemas/avro/`, as Rust types.
//!
//! Field names and enum symbols match the `.avsc` files exactly; the schema text is compiled in
//! so that every processor reads with the schema it was built against (reader schema) whatever
//! schema a producer wrote with (writer schema, looked up in the registry).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Rust type that is one Avro record of `schemas/avro/`.
pub trait AvroRecord: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    /// Full name, e.g. `notify.v1.NotificationRequest`.
    const FULL_NAME: &'static str;
    /// The `.avsc` text.
    const SCHEMA: &'static str;
}

macro_rules! avro_record {
    ($ty:ty, $name:literal) => {
        impl AvroRecord for $ty {
            const FULL_NAME: &'static str = $name;
            const SCHEMA: &'static str =
                include_str!(concat!("../../schemas/avro/", $name, ".avsc"));
        }
    };
}

/// Every `.avsc` of the project with its full name, for `notify schemas register`.
pub const ALL_SCHEMAS: &[(&str, &str)] = &[
    (NotificationRequest::FULL_NAME, NotificationRequest::SCHEMA),
    (UserProfile::FULL_NAME, UserProfile::SCHEMA),
    (Template::FULL_NAME, Template::SCHEMA),
    (DeliveryStatus::FULL_NAME, DeliveryStatus::SCHEMA),
    (RoutedNotification::FULL_NAME, RoutedNotification::SCHEMA),
    (ChannelMessage::FULL_NAME, ChannelMessage::SCHEMA),
    (TokenFeedback::FULL_NAME, TokenFeedback::SCHEMA),
];

/// What a request asks for; PUSH covers both APNs and FCM devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Channel {
    #[serde(rename = "PUSH")]
    Push,
    #[serde(rename = "SMS")]
    Sms,
    #[serde(rename = "EMAIL")]
    Email,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Push, Channel::Sms, Channel::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "PUSH",
            Channel::Sms => "SMS",
            Channel::Email => "EMAIL",
        }
    }
}

/// Where a message is actually sent: one channel topic and one delivery processor each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DeliveryChannel {
    #[serde(rename = "APNS")]
    Apns,
    #[serde(rename = "FCM")]
    Fcm,
    #[serde(rename = "SMS")]
    Sms,
    #[serde(rename = "EMAIL")]
    Email,
}

impl DeliveryChannel {
    pub const ALL: [DeliveryChannel; 4] = [Self::Apns, Self::Fcm, Self::Sms, Self::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apns => "APNS",
            Self::Fcm => "FCM",
            Self::Sms => "SMS",
            Self::Email => "EMAIL",
        }
    }

    /// Lower-case name used in topic names (`notify.channel.apns.v1`).
    pub fn topic_part(self) -> &'static str {
        match self {
            Self::Apns => "apns",
            Self::Fcm => "fcm",
            Self::Sms => "sms",
            Self::Email => "email",
        }
    }

    /// The channel a request asks for that this delivery channel serves.
    pub fn requested_as(self) -> Channel {
        match self {
            Self::Apns | Self::Fcm => Channel::Push,
            Self::Sms => Channel::Sms,
            Self::Email => Channel::Email,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub enum Priority {
    #[serde(rename = "LOW")]
    Low,
    #[default]
    #[serde(rename = "NORMAL")]
    Normal,
    #[serde(rename = "HIGH")]
    High,
    #[serde(rename = "CRITICAL")]
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Platform {
    #[serde(rename = "IOS")]
    Ios,
    #[serde(rename = "ANDROID")]
    Android,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRequest {
    pub event_id: String,
    pub user_id: String,
    pub category: String,
    pub template_id: String,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub priority: Priority,
    pub created_at: i64,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
}
avro_record!(NotificationRequest, "notify.v1.NotificationRequest");

impl NotificationRequest {
    /// The rules of the contract that the schema cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        for (name, value) in [
            ("event_id", &self.event_id),
            ("user_id", &self.user_id),
            ("category", &self.category),
            ("template_id", &self.template_id),
        ] {
            if value.trim().is_empty() {
                missing.push(name);
            }
        }
        if !missing.is_empty() {
            return Err(format!("empty required field(s): {}", missing.join(", ")));
        }
        if self.created_at <= 0 {
            return Err(format!("created_at {} is not a timestamp", self.created_at));
        }
        Ok(())
    }

    /// True when the request carries an expiry that has passed at `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub token: String,
    pub platform: Platform,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserProfile {
    pub user_id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default = "default_locale")]
    pub locale: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default)]
    pub opt_out_channels: Vec<Channel>,
    #[serde(default)]
    pub opt_out_categories: Vec<String>,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
}
avro_record!(UserProfile, "notify.v1.UserProfile");

fn default_locale() -> String {
    "en".into()
}
fn default_timezone() -> String {
    "UTC".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub template_id: String,
    pub channel: Channel,
    pub locale: String,
    #[serde(default)]
    pub title: Option<String>,
    pub body: String,
    #[serde(default)]
    pub html_body: Option<String>,
    #[serde(default)]
    pub truncate: bool,
}
avro_record!(Template, "notify.v1.Template");

impl Template {
    /// The compacted topic's key: `template_id/channel/locale`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.template_id,
            self.channel.as_str(),
            self.locale
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Accepted,
    Filtered,
    Duplicate,
    Expired,
    Deferred,
    RateLimited,
    RenderFailed,
    Sent,
    Failed,
    RetryScheduled,
    DeadLettered,
    TokenInvalid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    pub event_id: String,
    pub user_id: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub recipient: Option<String>,
    pub outcome: Outcome,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub attempt: i32,
    pub stage: String,
    pub at: i64,
}
avro_record!(DeliveryStatus, "notify.v1.DeliveryStatus");

/// Every status event is built here: the stage names itself, and a contact point passes
/// through [`mask`] on its way in, so no caller can put a full token or address in one.
impl DeliveryStatus {
    pub fn new(
        event_id: impl Into<String>,
        user_id: impl Into<String>,
        stage: impl Into<String>,
        outcome: Outcome,
    ) -> DeliveryStatus {
        DeliveryStatus {
            event_id: event_id.into(),
            user_id: user_id.into(),
            channel: None,
            recipient: None,
            outcome,
            reason: None,
            attempt: 0,
            stage: stage.into(),
            at: now_ms(),
        }
    }

    /// The status of a request (no channel yet).
    pub fn of(request: &NotificationRequest, stage: &str, outcome: Outcome) -> DeliveryStatus {
        DeliveryStatus::new(&request.event_id, &request.user_id, stage, outcome)
    }

    /// The status of one message: its delivery channel and masked contact point.
    pub fn of_message(message: &ChannelMessage, stage: &str, outcome: Outcome) -> DeliveryStatus {
        DeliveryStatus::new(&message.event_id, &message.user_id, stage, outcome)
            .with_channel(message.channel.as_str())
            .with_recipient(&message.recipient)
    }

    pub fn with_channel(mut self, channel: &str) -> Self {
        self.channel = Some(channel.to_string());
        self
    }

    /// Masks `contact_point` (see [`mask`]).
    pub fn with_recipient(mut self, contact_point: &str) -> Self {
        self.recipient = Some(mask(contact_point));
        self
    }

    /// The reason with addresses, numbers and tokens masked (see [`scrub`]).
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(scrub(&reason.into()));
        self
    }

    pub fn with_attempt(mut self, attempt: i32) -> Self {
        self.attempt = attempt;
        self
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub channel: DeliveryChannel,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendered {
    pub channel: Channel,
    #[serde(default)]
    pub title: Option<String>,
    pub body: String,
    #[serde(default)]
    pub html_body: Option<String>,
}

/// The internal hand-off between stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutedNotification {
    pub request: NotificationRequest,
    #[serde(default = "default_locale")]
    pub locale: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default)]
    pub user: BTreeMap<String, String>,
    #[serde(default)]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub rendered: Vec<Rendered>,
}
avro_record!(RoutedNotification, "notify.v1.RoutedNotification");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelMessage {
    pub event_id: String,
    pub user_id: String,
    pub category: String,
    #[serde(default)]
    pub priority: Priority,
    pub channel: DeliveryChannel,
    pub recipient: String,
    #[serde(default)]
    pub title: Option<String>,
    pub body: String,
    #[serde(default)]
    pub html_body: Option<String>,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    pub created_at: i64,
    #[serde(default)]
    pub expires_at: Option<i64>,
}
avro_record!(ChannelMessage, "notify.v1.ChannelMessage");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenFeedback {
    pub user_id: String,
    pub token: String,
    pub channel: DeliveryChannel,
    pub reason: String,
    pub at: i64,
}
avro_record!(TokenFeedback, "notify.v1.TokenFeedback");

/// Masks a contact point for status events: never a full token, address or number.
pub fn mask(address: &str) -> String {
    if let Some((local, domain)) = address.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = address.chars().collect();
    if chars.len() <= 4 {
        return "***".into();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("***{tail}")
}

/// `text` with every e-mail address, phone number and token-looking string masked (see
/// [`mask`]): error text from providers and drivers often echoes what was sent, and it goes
/// into status events, dead-letter headers and logs.
pub fn scrub(text: &str) -> String {
    use std::sync::LazyLock;
    static PATTERNS: LazyLock<regex_lite::Regex> = LazyLock::new(|| {
        regex_lite::Regex::new(concat!(
            // e-mail addresses
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            // E.164 phone numbers, also written with spaces or dashes
            r"|\+[0-9](?:[ -]?[0-9]){6,15}",
            // device tokens, API keys, JWT segments: long runs without separators
            r"|[A-Za-z0-9_:+=-]{32,}",
        ))
        .expect("the masking pattern compiles")
    });
    PATTERNS
        .replace_all(text, |c: &regex_lite::Captures<'_>| {
            let found = &c[0];
            if is_uuid(found) {
                found.to_string()
            } else {
                mask(found)
            }
        })
        .into_owned()
}

/// Event ids are commonly UUIDs: they identify, they do not authorise, so they stay readable.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_addresses_numbers_and_tokens_from_free_text() {
        let token = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
        let text = format!(
            "21211: 'To' number +55 11 98765-4321 is not valid; mailbox ana.s+x@mail.example.com \
             full; BadDeviceToken {token}; Bearer eyJhbGciOiJFUzI1NiJ9abcdefghijklmnopqrstu; \
             event 0f8fad5b-d9cb-469f-a165-70867728950e on notify.channel.sms.v1 partition 3"
        );
        let out = scrub(&text);
        for secret in [
            "98765",
            "ana.s+x@",
            &token[..40],
            "eyJhbGciOiJFUzI1NiJ9abcd",
        ] {
            assert!(!out.contains(secret), "{secret} left in {out}");
        }
        assert!(out.contains("***4321"), "{out}");
        assert!(out.contains("a***@mail.example.com"), "{out}");
        assert!(out.contains("***8f90"), "{out}");
        assert!(
            out.contains("0f8fad5b-d9cb-469f-a165-70867728950e"),
            "{out}"
        );
        assert!(out.contains("notify.channel.sms.v1 partition 3"), "{out}");
        assert!(out.starts_with("21211: 'To' number"), "{out}");
    }

    #[test]
    fn every_schema_parses() {
        for (name, text) in ALL_SCHEMAS {
            let schema = apache_avro::Schema::parse_str(text)
                .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
            assert_eq!(
                schema.name().map(|n| n.fullname(None)),
                Some(name.to_string())
            );
        }
    }

    #[test]
    fn masks_contact_points() {
        assert_eq!(mask("alice@example.com"), "a***@example.com");
        assert_eq!(mask("+4915112345678"), "***5678");
        assert_eq!(mask("abc"), "***");
    }
}
