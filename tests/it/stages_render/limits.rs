//! Rate limiting: exact across a restart and a replay, CRITICAL bypass, the store contract
//! against CQL.

use std::sync::Arc;
use std::time::Duration;

use notify_ratelimit::{CachedStore, CqlStore, MemoryStore, Rule};
use notify_runtime::records::{
    Channel, DeliveryChannel, DeliveryStatus, Outcome, Priority, Rendered, RoutedNotification,
};
use notify_runtime::{Config, Metrics};
use notify_tests::{RunningProcessor, TestEnv};

use super::{routed, wait_for};

async fn cql_store(env: &TestEnv, metrics: &Metrics) -> CqlStore {
    let session = Arc::new(env.keyspace().await);
    CqlStore::new(
        session,
        &env.config.cql.keyspace,
        Duration::from_secs(5),
        metrics,
    )
    .await
    .expect("statements prepare")
}

pub async fn start_ratelimit(
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
    // As `notify run ratelimit` builds it: the CQL store behind the window cache.
    let metrics = Metrics::new(notify_ratelimit::NAME);
    let store = CachedStore::new(cql_store(env, &metrics).await, settings.cache_windows);
    let p = notify_ratelimit::processor(store, &settings, config, &metrics);
    env.start_stage(p, notify_ratelimit::NAME, &[input], config.clone(), metrics)
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
    notify_ratelimit::store_contract(&cql_store(&env, &Metrics::new("t")).await, "u1").await;
    notify_ratelimit::limiter_contract(MemoryStore::default(), "u2").await;
    notify_ratelimit::limiter_contract(cql_store(&env, &Metrics::new("t")).await, "u2").await;
    let cached = || async { CachedStore::new(cql_store(&env, &Metrics::new("t")).await, 1_000) };
    notify_ratelimit::store_contract(&cached().await, "u3").await;
    notify_ratelimit::limiter_contract(cached().await, "u4").await;
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
