//! The real clients against the real-protocol sandbox (and the real SMTP server): one test
//! binary so librdkafka, which the runtime crate links, is linked once.

mod apns;
mod common;
mod fcm;
mod sms_email;
mod smtp;
mod smtp_tls;
