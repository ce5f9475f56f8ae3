//! Rate limiting (exact across restarts and replays, CRITICAL bypass) and fan-out through
//! the chain templates → ratelimit → fanout.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use notify_ratelimit::{CqlStore, MemoryStore, Rule};
use notify_runtime::Config;
use notify_runtime::records::{
    Channel, ChannelMessage, DeliveryChannel, DeliveryStatus, Outcome, Priority, Rendered,
    RoutedNotification,
};
use notify_tests::{RunningProcessor, TestEnv};

use super::{routed, start_templates, statuses, template, wait_for};

async fn cql_store(env: &TestEnv) -> CqlStore {
    let session = Arc::new(env.keyspace().await);
    CqlStore::new(session, &env.config.cql.keyspace, Duration::from_secs(5))
        .await
        .expect("statements prepare")
}

async fn start_ratelimit(
    env: &TestEnv,
    config: &Config,
    input: &str,
    output: &str,
) -> RunningProcessor {
    let settings = notify_ratelimit::Settings {
        input: input.into(),
        output: output.into(),
        rules: vec![Rule {
            channel: Some(Channel::Push),
            category: None,
            max: 3,
            window_secs: 3600,
        }],
        ..Default::default()
    };
    let p = notify_ratelimit::processor(cql_store(env).await, &settings, config);
    env.start_with(p, notify_ratelimit::NAME, &[input], config.clone())
        .await
}

fn push(event_id: &str, priority: Priority) -> RoutedNotification {
    let mut r = routed(
        event_id,
        "u-flood",
        "t",
        "en",
        &[],
        &[(DeliveryChannel::Apns, "tok-1")],
    );
    r.request.priority = priority;
    r.rendered = vec![Rendered {
        channel: Channel::Push,
        title: None,
        body: "hello".into(),
        html_body: None,
    }];
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_and_limiter_contracts_hold_for_cql_and_memory() {
    let env = TestEnv::new("ratelimit_store").await;
    notify_ratelimit::store_contract(&MemoryStore::default(), "u1").await;
    notify_ratelimit::store_contract(&cql_store(&env).await, "u1").await;
    notify_ratelimit::limiter_contract(MemoryStore::default(), "u2").await;
    notify_ratelimit::limiter_contract(cql_store(&env).await, "u2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_pushes_give_exactly_the_limit_across_a_restart_and_a_replay() {
    let env = TestEnv::new("ratelimit_exact").await;
    let [input, output, status] = env
        .create_topics(&[("in", 2), ("out", 2), ("status", 1)])
        .await
        .try_into()
        .unwrap();
    let mut config = env.config.clone();
    config.runtime.status_topic = status.clone();
    let outputs = env.reader(&output);
    let status_reader = env.reader(&status);
    let mut out: Vec<String> = Vec::new();
    let mut limited: Vec<String> = Vec::new();
    let collect = async |out: &mut Vec<String>, limited: &mut Vec<String>| {
        for r in outputs
            .records::<RoutedNotification>(&env.codec, 10, Duration::from_millis(300))
            .await
        {
            out.push(r.value.request.event_id);
        }
        for s in status_reader
            .records::<DeliveryStatus>(&env.codec, 10, Duration::from_millis(300))
            .await
        {
            assert_eq!(s.value.outcome, Outcome::RateLimited);
            limited.push(s.value.event_id);
        }
    };

    // Five records, a graceful restart, five more: one window over both runs.
    let first = start_ratelimit(&env, &config, &input, &output).await;
    for i in 0..5 {
        env.produce(&input, "u-flood", &push(&format!("p{i}"), Priority::Normal))
            .await;
    }
    wait_for("the first five", async || {
        collect(&mut out, &mut limited).await;
        (out.len() + limited.len() >= 5).then_some(())
    })
    .await;
    first.stop().await.expect("clean stop");
    let second = start_ratelimit(&env, &config, &input, &output).await;
    for i in 5..10 {
        env.produce(&input, "u-flood", &push(&format!("p{i}"), Priority::Normal))
            .await;
    }
    wait_for("all ten", async || {
        collect(&mut out, &mut limited).await;
        (out.len() + limited.len() >= 10).then_some(())
    })
    .await;
    second.stop().await.expect("clean stop");
    assert_eq!(
        out,
        ["p0", "p1", "p2"],
        "exactly the configured 3 through, in order"
    );
    assert_eq!(limited.len(), 7);

    // A replay of all ten (a crash before any commit redelivers them): the same three pass,
    // nothing is counted twice.
    let mut replay_config = config.clone();
    replay_config.kafka.group_prefix = format!("{}-replay", config.kafka.group_prefix);
    let replay = start_ratelimit(&env, &replay_config, &input, &output).await;
    let (mut out2, mut limited2) = (Vec::new(), Vec::new());
    wait_for("the replay", async || {
        collect(&mut out2, &mut limited2).await;
        (out2.len() + limited2.len() >= 10).then_some(())
    })
    .await;
    assert_eq!(
        out2,
        ["p0", "p1", "p2"],
        "redelivered records are not counted twice"
    );
    assert_eq!(limited2.len(), 7);

    // CRITICAL always passes, even with the window full.
    for i in 0..4 {
        env.produce(
            &input,
            "u-flood",
            &push(&format!("c{i}"), Priority::Critical),
        )
        .await;
    }
    let (mut out3, mut limited3) = (Vec::new(), Vec::new());
    wait_for("the critical ones", async || {
        collect(&mut out3, &mut limited3).await;
        (out3.len() >= 4).then_some(())
    })
    .await;
    assert_eq!(out3, ["c0", "c1", "c2", "c3"]);
    assert!(limited3.is_empty());
    replay.stop().await.expect("clean stop");
}

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
    let fanout = fanout_processor(&config, &limited, [&apns, &fcm, &sms, &email]);
    let stage3 = env
        .start_with(fanout, notify_fanout::NAME, &[&limited], config.clone())
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
    let st = env
        .reader(&status)
        .records::<DeliveryStatus>(&env.codec, 5, Duration::from_secs(20))
        .await;
    let accepted = statuses(&st, Outcome::Accepted);
    assert_eq!(accepted.len(), 5);
    assert!(accepted.iter().all(|s| {
        s.recipient
            .as_deref()
            .is_some_and(|r| r.starts_with("***") || r.contains("***@"))
    }));
    for p in [stage1, stage2, stage3] {
        p.stop().await.expect("clean stop");
    }
}

fn fanout_processor(
    config: &Config,
    input: &str,
    [apns, fcm, sms, email]: [&String; 4],
) -> notify_fanout::FanoutProcessor {
    notify_fanout::FanoutProcessor {
        topics: notify_fanout::Settings {
            input: input.into(),
            apns_topic: apns.clone(),
            fcm_topic: fcm.clone(),
            sms_topic: sms.clone(),
            email_topic: email.clone(),
        },
        status_topic: config.runtime.status_topic.clone(),
    }
}
