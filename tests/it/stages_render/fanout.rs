//! Fan-out through the chain templates → ratelimit → fanout: one message per device and
//! contact point, keyed by the contact point.

use std::collections::BTreeSet;
use std::time::Duration;

use notify_runtime::Config;
use notify_runtime::records::{Channel, ChannelMessage, DeliveryChannel, DeliveryStatus, Outcome};
use notify_tests::TestEnv;

use super::limits::start_ratelimit;
use super::{routed, start_templates, statuses, template};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_ios_one_android_email_and_phone_fan_out_to_five_messages() {
    let env = TestEnv::new("fanout_chain").await;
    let names = env
        .create_topics(&[
            ("templates", 1),
            ("deduped", 2),
            ("rendered", 2),
            ("limited", 2),
            ("status", 1),
            ("apns", 2),
            ("fcm", 2),
            ("sms", 2),
            ("email", 2),
        ])
        .await;
    let [
        templates,
        deduped,
        rendered,
        limited,
        status,
        apns,
        fcm,
        sms,
        email,
    ]: [String; 9] = names.try_into().unwrap();
    let mut config = env.config.clone();
    config.runtime.status_topic = status.clone();
    let mut mail = template(
        "new_login",
        Channel::Email,
        "en",
        Some("New sign-in"),
        "From {{ device }}",
    );
    mail.html_body = Some("<p>From {{ device }}</p>".into());
    for t in [
        mail,
        template(
            "new_login",
            Channel::Push,
            "en",
            Some("New sign-in"),
            "From {{ device }}",
        ),
        template(
            "new_login",
            Channel::Sms,
            "en",
            None,
            "New sign-in from {{ device }}",
        ),
    ] {
        env.produce(&templates, &t.key(), &t).await;
    }
    let stage1 = start_templates(&env, &config, &templates, &deduped, &rendered).await;
    let stage2 = start_ratelimit(&env, &config, &rendered, &limited).await;
    let metrics = notify_runtime::Metrics::new(notify_fanout::NAME);
    let fanout = fanout_processor(&config, &limited, [&apns, &fcm, &sms, &email], &metrics);
    let stage3 = env
        .start_stage(
            fanout,
            notify_fanout::NAME,
            &[&limited],
            config.clone(),
            metrics,
        )
        .await;

    let user = [
        (DeliveryChannel::Apns, "ios-token-aaaa1111"),
        (DeliveryChannel::Apns, "ios-token-bbbb2222"),
        (DeliveryChannel::Fcm, "fcm-token-cccc3333"),
        (DeliveryChannel::Email, "alice@example.com"),
        (DeliveryChannel::Sms, "+4915112345678"),
    ];
    let r = routed(
        "login-1",
        "u-alice",
        "new_login",
        "en",
        &[("device", "Firefox")],
        &user,
    );
    assert!(r.request.channels.is_empty());
    env.produce(&deduped, "u-alice", &r).await;

    let readers = [&apns, &fcm, &sms, &email].map(|t| env.reader(t));
    let mut got = Vec::new();
    for (reader, expect) in readers.iter().zip([2, 1, 1, 1]) {
        got.push(
            reader
                .records::<ChannelMessage>(&env.codec, expect, Duration::from_secs(30))
                .await,
        );
    }
    // Nothing more arrives on any channel topic.
    for reader in &readers {
        assert!(
            reader.raw(1, Duration::from_secs(1)).is_empty(),
            "an extra message on {}",
            reader.topic()
        );
    }
    let [a, f, s, e]: [_; 4] = got.try_into().unwrap();
    assert_eq!((a.len(), f.len(), s.len(), e.len()), (2, 1, 1, 1));
    let tokens: BTreeSet<&str> = a.iter().map(|m| m.value.recipient.as_str()).collect();
    assert_eq!(
        tokens,
        BTreeSet::from(["ios-token-aaaa1111", "ios-token-bbbb2222"])
    );
    for m in a.iter().chain(&f).chain(&s).chain(&e) {
        assert_eq!(
            m.key.as_deref(),
            Some(m.value.recipient.as_str()),
            "keyed by contact point"
        );
        assert_eq!(m.value.event_id, "login-1");
    }
    assert_eq!(e[0].value.html_body.as_deref(), Some("<p>From Firefox</p>"));
    assert_eq!(s[0].value.body, "New sign-in from Firefox");
    // No status per message on the way (ACCEPTED came from dedup; delivery says SENT).
    let st = env
        .reader(&status)
        .records::<DeliveryStatus>(&env.codec, 1, Duration::from_secs(3))
        .await;
    assert!(
        statuses(&st, Outcome::Accepted).is_empty(),
        "an intermediate status without runtime.intermediate_status: {st:?}"
    );
    for p in [stage1, stage2, stage3] {
        p.stop().await.expect("clean stop");
    }
}

fn fanout_processor(
    config: &Config,
    input: &str,
    [apns, fcm, sms, email]: [&String; 4],
    metrics: &notify_runtime::Metrics,
) -> notify_fanout::FanoutProcessor {
    let topics = notify_fanout::Settings {
        input: input.into(),
        apns_topic: apns.clone(),
        fcm_topic: fcm.clone(),
        sms_topic: sms.clone(),
        email_topic: email.clone(),
    };
    notify_fanout::FanoutProcessor::new(topics, config, metrics)
}
