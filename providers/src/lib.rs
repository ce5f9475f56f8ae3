//! Delivery-side provider clients: APNs, FCM HTTP v1, Twilio, SendGrid and SMTP.
//!
//! Each client takes a [`ChannelMessage`] and returns a [`SendOutcome`] that tells sent,
//! retryable, permanent and invalid-token apart. Clients know their provider only by base
//! URL, so the same code talks to the real APIs and to `notify-sandbox`. Concurrency limits
//! and rate limiting belong to the delivery processor; each client only bounds a request's
//! time.

mod apns;
mod apns_token;
mod email;
mod fcm;
mod fcm_auth;
mod outcome;
mod sendgrid;
mod smtp;
mod twilio;

pub use apns::{ApnsClient, ApnsConfig, TOKEN_BREAKER_AT, apns_id};
pub use email::EmailClient;
pub use fcm::{FcmClient, FcmConfig};
pub use fcm_auth::ServiceAccount;
pub use notify_runtime::records::ChannelMessage;
pub use outcome::{SendError, SendOutcome};
pub use sendgrid::{SendGridClient, SendGridConfig};
pub use smtp::{SmtpClient, SmtpConfig, SmtpSecurity};
pub use twilio::{TwilioClient, TwilioConfig, TwilioSender};

/// Key in [`ChannelMessage::data`] whose value becomes `apns-collapse-id` (APNs) and
/// `android.collapse_key` (FCM); it is not forwarded as custom data.
pub const COLLAPSE_ID_KEY: &str = "collapse_id";

/// Subject of an e-mail whose message has no title.
pub const DEFAULT_SUBJECT: &str = "Notification";
