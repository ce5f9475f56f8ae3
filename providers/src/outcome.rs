//! The one result every client returns, and the rules that classify provider answers.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// What became of one send. The delivery processor maps these to SENT, the retry ladder,
/// FAILED + dead letter, and TOKEN_INVALID + token feedback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The provider accepted the message; `provider_id` is its id for it (may be empty when
    /// the provider gives none).
    Sent { provider_id: String },
    /// Worth trying again later: timeouts, connection errors, 5xx, 429. `retry_after` is the
    /// provider's Retry-After when it sent one.
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The provider refused this message and would refuse it again.
    Permanent { reason: String },
    /// The device token (or address) is dead; stop sending to it.
    TokenInvalid { reason: String },
    /// The request went out and no answer came back (a timeout, a connection cut after it
    /// was written): the provider may have accepted it. Resending could deliver it twice.
    InDoubt { reason: String },
    /// Our side cannot send anything right now (credentials refused or unobtainable, the
    /// provider answered that this sender is not allowed): nothing is wrong with the message,
    /// so it is held and tried again, never failed for good.
    Unavailable { reason: String },
}

impl SendOutcome {
    pub fn is_sent(&self) -> bool {
        matches!(self, SendOutcome::Sent { .. })
    }

    pub(crate) fn retryable(reason: impl Into<String>) -> Self {
        SendOutcome::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub(crate) fn permanent(reason: impl Into<String>) -> Self {
        SendOutcome::Permanent {
            reason: reason.into(),
        }
    }
}

/// Errors building a client or talking to a provider before there is an answer to classify.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("configuration: {0}")]
    Config(String),
    /// Signing a JWT or obtaining an access token failed for a reason a retry will not fix.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The token endpoint could not be reached or answered 5xx/429.
    #[error("credentials temporarily unavailable: {0}")]
    CredentialsUnavailable(String),
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
}

impl From<SendError> for SendOutcome {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Http(e) => transport_outcome(&e),
            SendError::CredentialsUnavailable(_) | SendError::Credentials(_) => {
                SendOutcome::Unavailable {
                    reason: e.to_string(),
                }
            }
            SendError::Config(_) | SendError::InvalidMessage(_) => {
                SendOutcome::permanent(e.to_string())
            }
        }
    }
}

/// A request that got no HTTP answer. A connection that never opened cannot have delivered
/// anything (retry); a timeout or a connection cut once the request may have been written
/// leaves it in doubt.
pub(crate) fn transport_outcome(e: &reqwest::Error) -> SendOutcome {
    if e.is_connect() {
        return SendOutcome::retryable(format!("connection failed: {e}"));
    }
    let kind = if e.is_timeout() {
        "timeout"
    } else {
        "transport error"
    };
    SendOutcome::InDoubt {
        reason: format!("{kind} after the request was sent: {e}"),
    }
}

/// The generic rule for a non-success answer once provider-specific token checks are done:
/// 408, 429 and 5xx are retryable (honouring Retry-After), every other 4xx is permanent.
pub(crate) fn classify_status(
    status: StatusCode,
    headers: &HeaderMap,
    reason: String,
) -> SendOutcome {
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        SendOutcome::Retryable {
            reason,
            retry_after: retry_after(headers, SystemTime::now()),
        }
    } else if status == StatusCode::UNAUTHORIZED {
        // Our API key or account token was refused (SendGrid 401, Twilio 20003, FCM 401): a
        // configuration fault of the whole channel, so the message waits instead of failing.
        SendOutcome::Unavailable { reason }
    } else {
        SendOutcome::Permanent { reason }
    }
}

/// Retry-After as delay-seconds or an HTTP date (RFC 9110 §10.2.3); a date in the past is 0.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn with_retry_after(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).expect("header value"));
        h
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&with_retry_after("120"), now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            retry_after(&with_retry_after(&later), now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(
            retry_after(&with_retry_after(&earlier), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&with_retry_after("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn status_classes() {
        let h = with_retry_after("7");
        let r = classify_status(StatusCode::SERVICE_UNAVAILABLE, &h, "x".into());
        assert_eq!(
            r,
            SendOutcome::Retryable {
                reason: "x".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let r = classify_status(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), "x".into());
        assert!(matches!(
            r,
            SendOutcome::Retryable {
                retry_after: None,
                ..
            }
        ));
        let r = classify_status(StatusCode::BAD_REQUEST, &h, "x".into());
        assert!(matches!(r, SendOutcome::Permanent { .. }));
        let r = classify_status(StatusCode::FORBIDDEN, &h, "x".into());
        assert!(matches!(r, SendOutcome::Permanent { .. }));
        let r = classify_status(StatusCode::UNAUTHORIZED, &h, "x".into());
        assert!(matches!(r, SendOutcome::Unavailable { .. }));
    }
}
