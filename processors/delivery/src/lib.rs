//! Delivery processors: one per channel topic (`deliver-apns`, `deliver-fcm`, `deliver-sms`,
//! `deliver-email`), each its own consumer group, so a slow provider holds only its own lanes.
//!
//! Per record: expired → EXPIRED; otherwise wait for the provider's token bucket, claim the
//! delivery ledger row, call the provider, and map the outcome: SENT; retryable → the same
//! ChannelMessage to the retry ladder ([`headers`]) and RETRY_SCHEDULED; permanent → FAILED
//! and a dead letter of class `permanent`; invalid token → TOKEN_INVALID and a TokenFeedback
//! record keyed by user id, never retried; in doubt → the channel's policy; our credentials
//! refused → the record waits. See README "Delivery guarantees" for the ledger.

pub mod channels;
pub mod clients;
pub mod deliver;
pub mod ledger;
pub mod ledger_cql;
pub mod metrics;
mod outputs;
pub mod ownership;
pub mod rate;
pub mod settings;

pub use channels::{apns, email, fcm, sms};
pub use deliver::{Deliverer, LogEnd, Taken, Topics};

/// `text` with every occurrence of the full contact point masked, and anything else that looks
/// like an address, a number or a token ([`scrub`](notify_runtime::records::scrub)):
/// providers echo what they were sent in their error text, which goes into status events,
/// dead-letter headers and logs.
pub fn redact(text: &str, contact_point: &str) -> String {
    let text = if contact_point.len() < 4 || !text.contains(contact_point) {
        text.to_string()
    } else {
        text.replace(contact_point, &notify_runtime::records::mask(contact_point))
    };
    notify_runtime::records::scrub(&text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn provider_text_loses_the_recipient_and_whatever_else_it_echoes() {
        let out = super::redact(
            "invalid device fcm-token-ana-pixel; also saw ana@example.com and +5511987654321",
            "fcm-token-ana-pixel",
        );
        assert_eq!(
            out,
            "invalid device ***ixel; also saw a***@example.com and ***4321"
        );
    }
}

/// Headers of a record sent to the retry ladder (names shared with the retry processor
/// through `notify_runtime::dlq`). The retry processor moves the record along the ladder
/// unchanged and finally produces it back to `ORIGIN_TOPIC`; other headers (e.g.
/// `notify.retry.step`) are carried through untouched.
pub mod headers {
    use notify_runtime::dlq;

    /// Provider attempts made so far (1 after the first failure). A record arriving with
    /// `n` here is attempt `n + 1`.
    pub const ATTEMPTS: &str = dlq::ATTEMPTS;
    /// Epoch ms of the first failed attempt (kept across attempts).
    pub const FIRST_FAILURE_AT: &str = dlq::FIRST_FAILURE_AT;
    /// Epoch ms of this attempt's failure.
    pub const LAST_FAILURE_AT: &str = dlq::retry::LAST_FAILURE_AT;
    /// Why the last attempt failed (at most 1 KiB).
    pub const ERROR_REASON: &str = dlq::REASON;
    /// The channel topic to produce the record back to (kept across attempts).
    pub const ORIGIN_TOPIC: &str = dlq::retry::ORIGIN_TOPIC;
    /// The provider's Retry-After in ms, when it sent one: wait at least this long.
    pub const RETRY_AFTER_MS: &str = dlq::retry::RETRY_AFTER_MS;

    /// Every header delivery writes on a retry record (replacing older values).
    pub const RETRY_HEADERS: [&str; 6] = [
        ATTEMPTS,
        FIRST_FAILURE_AT,
        LAST_FAILURE_AT,
        ERROR_REASON,
        ORIGIN_TOPIC,
        RETRY_AFTER_MS,
    ];
}
