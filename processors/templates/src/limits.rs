//! Channel limits, checked on the rendered text: over the limit is a failure with the reason,
//! unless the template opted into truncation (`truncate = true`).

use std::collections::BTreeMap;

use notify_runtime::records::{Channel, Rendered};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::RenderError;
use crate::sms;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// APNs and FCM both refuse payloads over 4 KB.
    pub push_max_bytes: usize,
    /// Concatenated SMS parts allowed (each part is billed).
    pub sms_max_segments: usize,
    /// Characters in an e-mail subject.
    pub email_subject_max_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            push_max_bytes: 4096,
            sms_max_segments: 3,
            email_subject_max_chars: 200,
        }
    }
}

/// The size of the JSON a push provider receives: the larger of the APNs payload and the FCM
/// notification + data, built the way the delivery clients build them.
pub fn push_payload_bytes(
    title: Option<&str>,
    body: &str,
    data: &BTreeMap<String, String>,
) -> usize {
    let mut alert = Map::new();
    if let Some(t) = title {
        alert.insert("title".into(), json!(t));
    }
    alert.insert("body".into(), json!(body));
    let mut apns = Map::new();
    apns.insert(
        "aps".into(),
        json!({ "alert": alert.clone(), "sound": "default" }),
    );
    for (k, v) in data {
        apns.insert(k.clone(), json!(v));
    }
    let fcm = json!({ "notification": alert, "data": data });
    let size = |v: &Value| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    size(&Value::Object(apns)).max(size(&fcm))
}

impl Limits {
    /// Checks (or truncates) `rendered`; `data` travels with a push and counts to its size.
    pub fn enforce(
        &self,
        mut rendered: Rendered,
        truncate: bool,
        data: &BTreeMap<String, String>,
    ) -> Result<Rendered, RenderError> {
        match rendered.channel {
            Channel::Push => {
                let size = |r: &Rendered| push_payload_bytes(r.title.as_deref(), &r.body, data);
                let bytes = size(&rendered);
                if bytes > self.push_max_bytes {
                    if !truncate {
                        return Err(over(
                            Channel::Push,
                            format!("payload {bytes} bytes > {} bytes", self.push_max_bytes),
                        ));
                    }
                    rendered.body = self.fit_push_body(&rendered, data);
                    let bytes = size(&rendered);
                    if bytes > self.push_max_bytes {
                        return Err(over(
                            Channel::Push,
                            format!(
                                "payload {bytes} bytes > {} bytes even with an empty body (title and data too large)",
                                self.push_max_bytes
                            ),
                        ));
                    }
                }
            }
            Channel::Sms => {
                let s = sms::segments(&rendered.body);
                if s.segments > self.sms_max_segments {
                    if !truncate {
                        return Err(over(
                            Channel::Sms,
                            format!(
                                "{} segments ({:?}, {} units) > {} allowed",
                                s.segments, s.encoding, s.units, self.sms_max_segments
                            ),
                        ));
                    }
                    rendered.body = sms::truncate(&rendered.body, self.sms_max_segments).into();
                }
            }
            Channel::Email => {
                if let Some(subject) = &rendered.title {
                    let chars = subject.chars().count();
                    if chars > self.email_subject_max_chars {
                        if !truncate {
                            return Err(over(
                                Channel::Email,
                                format!(
                                    "subject {chars} characters > {}",
                                    self.email_subject_max_chars
                                ),
                            ));
                        }
                        rendered.title =
                            Some(subject.chars().take(self.email_subject_max_chars).collect());
                    }
                }
            }
        }
        Ok(rendered)
    }

    /// The longest prefix of the body (in characters) whose payload fits: binary search, since
    /// JSON escaping makes the byte size of a prefix only monotonic, not computable.
    fn fit_push_body(&self, rendered: &Rendered, data: &BTreeMap<String, String>) -> String {
        let chars: Vec<(usize, char)> = rendered.body.char_indices().collect();
        let prefix = |n: usize| -> &str {
            match chars.get(n) {
                Some((at, _)) => &rendered.body[..*at],
                None => &rendered.body,
            }
        };
        let fits = |n: usize| {
            push_payload_bytes(rendered.title.as_deref(), prefix(n), data) <= self.push_max_bytes
        };
        let (mut lo, mut hi) = (0usize, chars.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        prefix(lo).to_string()
    }
}

fn over(channel: Channel, detail: String) -> RenderError {
    RenderError::OverLimit {
        channel: channel.as_str(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(channel: Channel, title: Option<&str>, body: &str) -> Rendered {
        Rendered {
            channel,
            title: title.map(Into::into),
            body: body.into(),
            html_body: None,
        }
    }

    #[test]
    fn push_payload_counts_title_body_and_data() {
        let empty = BTreeMap::new();
        let base = push_payload_bytes(Some("t"), "b", &empty);
        let data: BTreeMap<String, String> = [("order".to_string(), "x".repeat(100))].into();
        assert!(push_payload_bytes(Some("t"), "b", &data) >= base + 100);
        // A quote costs two bytes once escaped in JSON.
        assert_eq!(push_payload_bytes(Some("t"), "\"", &empty), base + 1);
    }

    #[test]
    fn push_over_4k_fails_or_truncates_to_fit() {
        let limits = Limits::default();
        let data = BTreeMap::new();
        let big = rendered(Channel::Push, Some("Hello"), &"é\"".repeat(2000));
        let err = limits.enforce(big.clone(), false, &data).unwrap_err();
        assert!(err.to_string().contains("> 4096 bytes"), "{err}");
        let cut = limits.enforce(big, true, &data).unwrap();
        let size = push_payload_bytes(cut.title.as_deref(), &cut.body, &data);
        assert!(size <= 4096 && size > 4090, "{size}");
    }

    #[test]
    fn push_whose_data_alone_is_too_large_fails_even_with_truncation() {
        let data: BTreeMap<String, String> = [("blob".to_string(), "x".repeat(5000))].into();
        let r = rendered(Channel::Push, None, "hi");
        assert!(Limits::default().enforce(r, true, &data).is_err());
    }

    #[test]
    fn sms_segments_are_limited() {
        let limits = Limits {
            sms_max_segments: 2,
            ..Limits::default()
        };
        let data = BTreeMap::new();
        let ok = rendered(Channel::Sms, None, &"a".repeat(306));
        assert!(limits.enforce(ok, false, &data).is_ok());
        let err = limits
            .enforce(rendered(Channel::Sms, None, &"ã".repeat(135)), false, &data)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "SMS over limit: 3 segments (Ucs2, 135 units) > 2 allowed"
        );
        let cut = limits
            .enforce(rendered(Channel::Sms, None, &"ã".repeat(135)), true, &data)
            .unwrap();
        assert_eq!(cut.body.chars().count(), 134);
    }

    #[test]
    fn email_subject_length() {
        let limits = Limits {
            email_subject_max_chars: 5,
            ..Limits::default()
        };
        let data = BTreeMap::new();
        let r = rendered(Channel::Email, Some("Olá mundo"), "body");
        assert!(limits.enforce(r.clone(), false, &data).is_err());
        let cut = limits.enforce(r, true, &data).unwrap();
        assert_eq!(cut.title.as_deref(), Some("Olá m"));
    }
}
