//! The contract records tests build again and again, with neutral defaults, so that a test
//! spells out only the fields its case is about (`UserProfile { email, ..profile(id, devices) }`).

use std::collections::BTreeMap;

use notify_runtime::records::{Device, NotificationRequest, Platform, Priority, UserProfile};

/// An enabled device.
pub fn device(token: impl Into<String>, platform: Platform) -> Device {
    Device {
        token: token.into(),
        platform,
        enabled: true,
    }
}

/// A profile with these devices and no e-mail address or phone: locale "en", UTC, no opt-outs,
/// no quiet hours.
pub fn profile(user_id: &str, devices: Vec<Device>) -> UserProfile {
    UserProfile {
        user_id: user_id.into(),
        email: None,
        phone: None,
        devices,
        locale: "en".into(),
        timezone: "UTC".into(),
        opt_out_channels: vec![],
        opt_out_categories: vec![],
        quiet_hours: None,
    }
}

/// A billing request (template `invoice_due`, no data) for every channel of the profile,
/// normal priority, created now, from source "test".
pub fn request(event_id: &str, user_id: &str) -> NotificationRequest {
    NotificationRequest {
        event_id: event_id.into(),
        user_id: user_id.into(),
        category: "billing".into(),
        template_id: "invoice_due".into(),
        data: BTreeMap::new(),
        channels: vec![],
        priority: Priority::Normal,
        created_at: notify_runtime::now_ms(),
        expires_at: None,
        source: "test".into(),
        email: None,
        phone: None,
    }
}
