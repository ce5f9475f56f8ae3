//! The preference decision: a pure function of the request, the recipient's profile, the
//! tokens providers reported invalid, and the current time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use notify_runtime::records::{
    Channel, DeliveryChannel, NotificationRequest, Platform, Priority, RoutedNotification, Target,
    UserProfile,
};

use crate::quiet::Window;

/// Reasons of FILTERED (and EXPIRED) statuses: a bounded set, also used as metric labels.
pub mod reason {
    pub const UNKNOWN_USER: &str = "unknown_user";
    pub const OPT_OUT_CATEGORY: &str = "opt_out_category";
    pub const OPT_OUT_CHANNEL: &str = "opt_out_channel";
    pub const NO_ENABLED_DEVICE: &str = "no_enabled_device";
    pub const NO_CONTACT_POINT: &str = "no_contact_point";
    pub const EXPIRED: &str = "expired";
    pub const EXPIRES_IN_QUIET_HOURS: &str = "expires_during_quiet_hours";
    pub const QUIET_HOURS: &str = "quiet_hours";
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Goes on to dedup with these contact points.
    Route(Box<RoutedNotification>),
    Filtered(&'static str),
    Expired(&'static str),
    /// Held until the quiet-hours window ends (epoch millis).
    Deferred {
        until_ms: i64,
    },
}

/// Everything the decision depends on besides the request.
pub struct Context<'a> {
    pub profile: Option<&'a UserProfile>,
    /// True for a device token a provider reported invalid for this user.
    pub token_invalid: &'a dyn Fn(&str) -> bool,
    pub now_ms: i64,
    /// Set when the request was deferred before and has come back: the end of that window.
    pub not_before_ms: Option<i64>,
}

pub fn decide(request: &NotificationRequest, cx: &Context<'_>) -> Decision {
    if request.is_expired(cx.now_ms) {
        return Decision::Expired(reason::EXPIRED);
    }
    let direct = request.email.is_some() || request.phone.is_some();
    let profile = match cx.profile {
        Some(p) => Some(p),
        None if direct => None,
        None => return Decision::Filtered(reason::UNKNOWN_USER),
    };
    if let Some(p) = profile
        && p.opt_out_categories.iter().any(|c| c == &request.category)
    {
        return Decision::Filtered(reason::OPT_OUT_CATEGORY);
    }
    let asked: Vec<Channel> = if request.channels.is_empty() {
        Channel::ALL.to_vec()
    } else {
        request.channels.clone()
    };
    let allowed: Vec<Channel> = asked
        .iter()
        .copied()
        .filter(|c| profile.is_none_or(|p| !p.opt_out_channels.contains(c)))
        .collect();
    if allowed.is_empty() {
        return Decision::Filtered(reason::OPT_OUT_CHANNEL);
    }
    let (targets, had_devices) = targets(request, profile, &allowed, cx.token_invalid);
    if targets.is_empty() {
        return Decision::Filtered(if had_devices {
            reason::NO_ENABLED_DEVICE
        } else {
            reason::NO_CONTACT_POINT
        });
    }
    let tz = profile
        .and_then(|p| p.timezone.parse::<Tz>().ok())
        .unwrap_or(chrono_tz::UTC);
    if let Some(until_ms) = quiet_until(request, profile, tz, cx) {
        if request.expires_at.is_some_and(|e| e <= until_ms) {
            return Decision::Expired(reason::EXPIRES_IN_QUIET_HOURS);
        }
        return Decision::Deferred { until_ms };
    }
    Decision::Route(Box::new(routed(request, profile, tz, targets)))
}

/// The end of the quiet-hours window the request falls in, if it must wait.
fn quiet_until(
    request: &NotificationRequest,
    profile: Option<&UserProfile>,
    tz: Tz,
    cx: &Context<'_>,
) -> Option<i64> {
    if request.priority == Priority::Critical {
        return None;
    }
    if let Some(not_before) = cx.not_before_ms {
        // Deferred before: it passes once that window is over, and waits again if it came
        // back early (the delay stage's clock may run ahead of ours).
        return (cx.now_ms < not_before).then_some(not_before);
    }
    let q = profile?.quiet_hours.as_ref()?;
    // A malformed window in a profile must not hold notifications back forever: ignore it.
    let window = Window::parse(&q.start, &q.end)?;
    let now = DateTime::<Utc>::from_timestamp_millis(cx.now_ms)?;
    window.deferral_until(tz, now)
}

/// The contact points for the allowed channels; the flag says whether the profile had push
/// devices at all (to tell "all devices disabled" from "no contact point").
fn targets(
    request: &NotificationRequest,
    profile: Option<&UserProfile>,
    allowed: &[Channel],
    token_invalid: &dyn Fn(&str) -> bool,
) -> (Vec<Target>, bool) {
    let mut out: Vec<Target> = Vec::new();
    let mut had_devices = false;
    let mut push = |channel: DeliveryChannel, address: &str| {
        let t = Target {
            channel,
            address: address.to_string(),
        };
        if !address.trim().is_empty() && !out.contains(&t) {
            out.push(t);
        }
    };
    for channel in allowed {
        match channel {
            Channel::Push => {
                for d in profile.map(|p| p.devices.as_slice()).unwrap_or_default() {
                    had_devices = true;
                    if d.enabled && !token_invalid(&d.token) {
                        let via = match d.platform {
                            Platform::Ios => DeliveryChannel::Apns,
                            Platform::Android => DeliveryChannel::Fcm,
                        };
                        push(via, &d.token);
                    }
                }
            }
            Channel::Sms => {
                // An address on the request is where the producer wants this one to go.
                if let Some(a) = request
                    .phone
                    .as_ref()
                    .or(profile.and_then(|p| p.phone.as_ref()))
                {
                    push(DeliveryChannel::Sms, a);
                }
            }
            Channel::Email => {
                if let Some(a) = request
                    .email
                    .as_ref()
                    .or(profile.and_then(|p| p.email.as_ref()))
                {
                    push(DeliveryChannel::Email, a);
                }
            }
        }
    }
    (out, had_devices)
}

fn routed(
    request: &NotificationRequest,
    profile: Option<&UserProfile>,
    tz: Tz,
    targets: Vec<Target>,
) -> RoutedNotification {
    let locale = profile.map_or_else(|| "en".to_string(), |p| p.locale.clone());
    let mut user = BTreeMap::new();
    user.insert("user_id".to_string(), request.user_id.clone());
    user.insert("locale".to_string(), locale.clone());
    user.insert("timezone".to_string(), tz.name().to_string());
    let email = request
        .email
        .as_ref()
        .or(profile.and_then(|p| p.email.as_ref()));
    if let Some(e) = email {
        user.insert("email".to_string(), e.clone());
    }
    let phone = request
        .phone
        .as_ref()
        .or(profile.and_then(|p| p.phone.as_ref()));
    if let Some(p) = phone {
        user.insert("phone".to_string(), p.clone());
    }
    RoutedNotification {
        request: request.clone(),
        locale,
        timezone: tz.name().to_string(),
        user,
        targets,
        rendered: Vec::new(),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
