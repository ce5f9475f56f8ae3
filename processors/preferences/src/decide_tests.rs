use chrono::TimeZone;
use notify_runtime::records::{Device, QuietHours};

use super::*;

fn request() -> NotificationRequest {
    NotificationRequest {
        event_id: "e1".into(),
        user_id: "u1".into(),
        category: "billing".into(),
        template_id: "t".into(),
        data: BTreeMap::new(),
        channels: vec![],
        priority: Priority::Normal,
        created_at: 1,
        expires_at: None,
        source: String::new(),
        email: None,
        phone: None,
    }
}

fn profile() -> UserProfile {
    UserProfile {
        user_id: "u1".into(),
        email: Some("a@example.com".into()),
        phone: Some("+4915100000000".into()),
        devices: vec![
            Device {
                token: "ios-1".into(),
                platform: Platform::Ios,
                enabled: true,
            },
            Device {
                token: "and-1".into(),
                platform: Platform::Android,
                enabled: true,
            },
        ],
        locale: "de".into(),
        timezone: "Europe/Berlin".into(),
        opt_out_channels: vec![],
        opt_out_categories: vec![],
        quiet_hours: None,
    }
}

/// 12:00 Berlin on 10 Jan 2025 (outside 22–07 quiet hours), and 23:30 (inside).
fn noon() -> i64 {
    berlin(10, 12, 0)
}
fn berlin(day: u32, h: u32, m: u32) -> i64 {
    chrono_tz::Europe::Berlin
        .with_ymd_and_hms(2025, 1, day, h, m, 0)
        .unwrap()
        .timestamp_millis()
}

fn run(r: &NotificationRequest, p: Option<&UserProfile>, now_ms: i64) -> Decision {
    run_with(r, p, now_ms, None, &|_| false)
}

fn run_with(
    r: &NotificationRequest,
    p: Option<&UserProfile>,
    now_ms: i64,
    not_before_ms: Option<i64>,
    token_invalid: &dyn Fn(&str) -> bool,
) -> Decision {
    decide(
        r,
        &Context {
            profile: p,
            token_invalid,
            now_ms,
            not_before_ms,
        },
    )
}

fn channels(d: &Decision) -> Vec<(DeliveryChannel, String)> {
    match d {
        Decision::Route(r) => r
            .targets
            .iter()
            .map(|t| (t.channel, t.address.clone()))
            .collect(),
        other => panic!("expected a route, got {other:?}"),
    }
}

#[test]
fn routes_to_every_contact_point_with_user_variables() {
    let p = profile();
    let d = run(&request(), Some(&p), noon());
    assert_eq!(
        channels(&d),
        vec![
            (DeliveryChannel::Apns, "ios-1".into()),
            (DeliveryChannel::Fcm, "and-1".into()),
            (DeliveryChannel::Sms, "+4915100000000".into()),
            (DeliveryChannel::Email, "a@example.com".into()),
        ]
    );
    let Decision::Route(r) = d else {
        unreachable!()
    };
    assert_eq!(r.locale, "de");
    assert_eq!(r.timezone, "Europe/Berlin");
    assert_eq!(r.user["user_id"], "u1");
    assert_eq!(r.user["email"], "a@example.com");
}

#[test]
fn opt_outs_and_requested_channels() {
    let mut p = profile();
    p.opt_out_channels = vec![Channel::Sms];
    let mut r = request();
    r.channels = vec![Channel::Sms];
    assert_eq!(
        run(&r, Some(&p), noon()),
        Decision::Filtered(reason::OPT_OUT_CHANNEL)
    );
    r.channels = vec![Channel::Sms, Channel::Email];
    assert_eq!(
        channels(&run(&r, Some(&p), noon())),
        vec![(DeliveryChannel::Email, "a@example.com".into())]
    );
    p.opt_out_categories = vec!["billing".into()];
    r.priority = Priority::Critical;
    assert_eq!(
        run(&r, Some(&p), noon()),
        Decision::Filtered(reason::OPT_OUT_CATEGORY),
        "CRITICAL is never an opt-out bypass"
    );
}

#[test]
fn disabled_and_invalid_devices_are_skipped() {
    let mut p = profile();
    p.devices[0].enabled = false;
    let mut r = request();
    r.channels = vec![Channel::Push];
    assert_eq!(
        channels(&run(&r, Some(&p), noon())),
        vec![(DeliveryChannel::Fcm, "and-1".into())]
    );
    let invalid = |t: &str| t == "and-1";
    assert_eq!(
        run_with(&r, Some(&p), noon(), None, &invalid),
        Decision::Filtered(reason::NO_ENABLED_DEVICE)
    );
    p.devices.clear();
    assert_eq!(
        run(&r, Some(&p), noon()),
        Decision::Filtered(reason::NO_CONTACT_POINT)
    );
}

#[test]
fn unknown_user_unless_addressed_directly() {
    let mut r = request();
    assert_eq!(
        run(&r, None, noon()),
        Decision::Filtered(reason::UNKNOWN_USER)
    );
    r.email = Some("direct@example.com".into());
    let d = run(&r, None, noon());
    assert_eq!(
        channels(&d),
        vec![(DeliveryChannel::Email, "direct@example.com".into())]
    );
    r.channels = vec![Channel::Push];
    assert_eq!(
        run(&r, None, noon()),
        Decision::Filtered(reason::NO_CONTACT_POINT)
    );
}

#[test]
fn expiry_comes_first() {
    let mut r = request();
    r.expires_at = Some(noon());
    assert_eq!(
        run(&r, Some(&profile()), noon()),
        Decision::Expired(reason::EXPIRED)
    );
    assert_eq!(run(&r, None, noon()), Decision::Expired(reason::EXPIRED));
}

#[test]
fn quiet_hours_defer_below_critical_and_pass_after_the_window() {
    let mut p = profile();
    p.quiet_hours = Some(QuietHours {
        start: "22:00".into(),
        end: "07:00".into(),
    });
    let late = berlin(10, 23, 30);
    let morning = berlin(11, 7, 0);
    let mut r = request();
    assert_eq!(
        run(&r, Some(&p), late),
        Decision::Deferred { until_ms: morning }
    );
    // Back from the delay stage after the window: passes.
    assert!(matches!(
        run_with(&r, Some(&p), morning, Some(morning), &|_| false),
        Decision::Route(_)
    ));
    // Back too early: waits for the same end again.
    assert_eq!(
        run_with(&r, Some(&p), late, Some(morning), &|_| false),
        Decision::Deferred { until_ms: morning }
    );
    // Would expire before the window ends.
    r.expires_at = Some(berlin(11, 1, 0));
    assert_eq!(
        run(&r, Some(&p), late),
        Decision::Expired(reason::EXPIRES_IN_QUIET_HOURS)
    );
    r.expires_at = None;
    r.priority = Priority::Critical;
    assert!(matches!(run(&r, Some(&p), late), Decision::Route(_)));
    // Outside the window nothing waits.
    r.priority = Priority::Low;
    assert!(matches!(run(&r, Some(&p), noon()), Decision::Route(_)));
}

#[test]
fn bad_profile_data_never_blocks() {
    let mut p = profile();
    p.timezone = "Mars/Olympus".into();
    p.quiet_hours = Some(QuietHours {
        start: "25:00".into(),
        end: "07:00".into(),
    });
    let Decision::Route(r) = run(&request(), Some(&p), berlin(10, 23, 30)) else {
        panic!("a malformed window is ignored")
    };
    assert_eq!(r.timezone, "UTC", "an unknown zone falls back to UTC");
}
