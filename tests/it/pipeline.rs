//! The whole chain in one test: request → preferences → dedup → templates → ratelimit →
//! fanout → the four delivery processors → the provider sandbox and the real SMTP server;
//! then an invalid APNs token fed back so the next request skips that device.

use std::collections::BTreeMap;

use notify_runtime::records::{
    DeliveryChannel, DeliveryStatus, Device, NotificationRequest, Outcome, Platform, Priority,
    UserProfile, mask,
};
use notify_runtime::{CancellationToken, Config};
use notify_sandbox::{FaultSpec, Provider};
use serde_json::json;

use crate::delivery::{Mail, Stack, device_token, mails_to};

/// The stages before delivery, with their topics pointed at this test's.
pub(crate) fn stage_config(stack: &Stack, topics: &BTreeMap<&str, String>) -> Config {
    let mut config = stack.config.clone();
    let mut set = |name: &str, value: serde_json::Value| {
        let v: toml::Value = serde_json::from_value(value).expect("settings");
        config.processors.insert(name.into(), v);
    };
    set(
        "preferences",
        json!({
            "requests_topic": topics["requests"], "users_topic": topics["users"],
            "token_feedback_topic": stack.feedback, "output": topics["preferences"],
            "deferred_topic": topics["deferred"],
        }),
    );
    set(
        "dedup",
        json!({ "input": topics["preferences"], "output": topics["deduped"] }),
    );
    set(
        "templates",
        json!({
            "input": topics["deduped"], "output": topics["rendered"], "templates_topic": topics["templates"],
        }),
    );
    set(
        "ratelimit",
        json!({ "input": topics["rendered"], "output": topics["limited"] }),
    );
    set(
        "fanout",
        json!({
            "input": topics["limited"], "apns_topic": stack.apns, "fcm_topic": stack.fcm,
            "sms_topic": stack.sms, "email_topic": stack.email,
        }),
    );
    config
}

fn request(event_id: &str, user_id: &str) -> NotificationRequest {
    NotificationRequest {
        event_id: event_id.into(),
        user_id: user_id.into(),
        category: "billing".into(),
        template_id: "invoice_due".into(),
        data: [
            ("amount".to_string(), "42.00 EUR".to_string()),
            ("due_date".to_string(), "1 Dec".to_string()),
        ]
        .into(),
        channels: vec![],
        priority: Priority::High,
        created_at: notify_runtime::now_ms(),
        expires_at: None,
        source: "billing".into(),
        email: None,
        phone: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_reaches_every_provider_once_and_an_invalid_token_is_skipped_next_time() {
    let stack = Stack::new("pipeline", Mail::Smtp).await;
    let env = &stack.env;
    let names = [
        "requests",
        "users",
        "preferences",
        "deduped",
        "rendered",
        "limited",
        "deferred",
    ];
    let mut spec: Vec<(&str, i32)> = names.iter().map(|n| (*n, 2)).collect();
    spec.push(("templates", 1));
    let created = env.create_topics(&spec).await;
    let topics: BTreeMap<&str, String> = names
        .iter()
        .copied()
        .chain(["templates"])
        .zip(created)
        .collect();
    let config = stage_config(&stack, &topics);

    let templates =
        notify_cli::templates::load_dir(&notify_tests::repo_root().join("dev/templates"))
            .expect("demo templates");
    notify_cli::templates::push(&config, &topics["templates"], &templates)
        .await
        .expect("templates pushed");
    let user = format!("{}-user", env.id);
    let (ios_a, ios_b) = (
        device_token(&format!("{user}-a")),
        device_token(&format!("{user}-b")),
    );
    let android = format!("fcm-{user}");
    let email = format!("{}@example.com", env.id.to_ascii_lowercase());
    let profile = UserProfile {
        user_id: user.clone(),
        email: Some(email.clone()),
        phone: Some("+4915112345678".into()),
        devices: vec![
            Device {
                token: ios_a.clone(),
                platform: Platform::Ios,
                enabled: true,
            },
            Device {
                token: ios_b.clone(),
                platform: Platform::Ios,
                enabled: true,
            },
            Device {
                token: android.clone(),
                platform: Platform::Android,
                enabled: true,
            },
        ],
        locale: "en".into(),
        timezone: "UTC".into(),
        opt_out_channels: vec![],
        opt_out_categories: vec![],
        quiet_hours: None,
    };
    env.produce(&topics["users"], &user, &profile).await;

    let shutdown = CancellationToken::new();
    let mut stages = Vec::new();
    for name in ["preferences", "dedup", "templates", "ratelimit", "fanout"] {
        let (config, token) = (config.clone(), shutdown.clone());
        stages.push(tokio::spawn(async move {
            notify_cli::run::run(name, config, token).await
        }));
    }
    let mut deliveries = Vec::new();
    for channel in DeliveryChannel::ALL {
        deliveries.push(stack.start(channel, config.clone()).await);
    }

    // 1. One request, every channel: exactly one message per contact point, all SENT.
    env.produce(&topics["requests"], &user, &request("r1", &user))
        .await;
    let sent_r1 = |s: &DeliveryStatus| s.event_id == "r1" && s.outcome == Outcome::Sent;
    let statuses = stack.wait_statuses(5, sent_r1).await;
    let mut channels: Vec<String> = statuses
        .iter()
        .filter(|s| sent_r1(s))
        .filter_map(|s| s.channel.clone())
        .collect();
    channels.sort();
    assert_eq!(channels, ["APNS", "APNS", "EMAIL", "FCM", "SMS"]);
    assert_eq!(stack.delivered(Provider::Apns, &ios_a), 1);
    assert_eq!(stack.delivered(Provider::Apns, &ios_b), 1);
    assert_eq!(stack.delivered(Provider::Fcm, &android), 1);
    assert_eq!(stack.delivered(Provider::Twilio, "+4915112345678"), 1);
    let apns = stack.sandbox.messages(Some(Provider::Apns));
    let push = apns
        .iter()
        .find(|m| m.recipient == ios_a)
        .expect("push to device a");
    assert!(
        push.body.to_string().contains("42.00 EUR"),
        "rendered push: {}",
        push.body
    );
    let mails = mails_to(&email);
    assert_eq!(mails.len(), 1, "one e-mail");
    assert!(mails[0].contains("42.00 EUR"), "rendered e-mail");

    // 2. Device a is now unregistered at Apple: TOKEN_INVALID, fed back to the filter.
    stack.sandbox.add_fault(
        FaultSpec::new(Provider::Apns)
            .token(ios_a.clone())
            .status(410)
            .body(json!({"reason": "Unregistered"})),
    );
    env.produce(&topics["requests"], &user, &request("r2", &user))
        .await;
    let invalid = stack
        .wait_statuses(1, |s| {
            s.event_id == "r2" && s.outcome == Outcome::TokenInvalid
        })
        .await;
    let invalid: Vec<_> = invalid
        .iter()
        .filter(|s| s.event_id == "r2" && s.outcome == Outcome::TokenInvalid)
        .collect();
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0].recipient.as_deref(), Some(mask(&ios_a).as_str()));

    // 3. The next request skips device a: the filter routes device b only.
    env.produce(&topics["requests"], &user, &request("r3", &user))
        .await;
    let r3 = stack
        .wait_statuses(4, |s| s.event_id == "r3" && s.outcome == Outcome::Sent)
        .await;
    let r3: Vec<_> = r3.iter().filter(|s| s.event_id == "r3").collect();
    let apns_r3: Vec<_> = r3
        .iter()
        .filter(|s| s.channel.as_deref() == Some("APNS"))
        .collect();
    assert!(
        apns_r3
            .iter()
            .all(|s| s.recipient.as_deref() == Some(mask(&ios_b).as_str())),
        "{apns_r3:#?}"
    );
    assert!(
        !r3.iter().any(|s| s.outcome == Outcome::TokenInvalid),
        "device a was tried again: {r3:#?}"
    );
    assert_eq!(stack.delivered(Provider::Apns, &ios_b), 3);
    assert_eq!(
        stack.delivered(Provider::Apns, &ios_a),
        1,
        "no new message to the dead token"
    );

    shutdown.cancel();
    for stage in stages {
        stage
            .await
            .expect("stage task")
            .expect("stage stops cleanly");
    }
    for d in deliveries {
        d.stop().await;
    }
}
