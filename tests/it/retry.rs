//! The retry ladder against the real stack, with steps of 1–3 s: the retry processor alone
//! (records come back to their origin when due, with the right headers), a SIGKILL while
//! records wait, `notify dlq inspect|redrive`, and, with the delivery processors and the
//! provider sandbox, the failure scenarios end to end.

mod crash;
mod dlq_cli;
mod e2e;
mod ladder;

use std::collections::HashMap;
use std::time::Duration;

use notify_runtime::dlq::{self, retry as h};
use notify_runtime::records::{ChannelMessage, DeliveryChannel, Priority};
use notify_runtime::runner::Running;
use notify_runtime::{CancellationToken, Config, now_ms};
use notify_tests::TestEnv;

/// A test's ladder: three steps of 1, 2 and 3 s, a deferral topic, an origin channel topic,
/// dead letters and status events, all private.
pub struct Ladder {
    pub env: TestEnv,
    pub steps: Vec<String>,
    pub deferred: String,
    pub origin: String,
    pub dlq: String,
    pub status: String,
    pub config: Config,
}

pub const DELAYS_MS: [i64; 3] = [1_000, 2_000, 3_000];

impl Ladder {
    pub async fn new(name: &str, delays_ms: &[i64]) -> Ladder {
        let mut env = TestEnv::new(name).await;
        let mut wanted: Vec<(String, i32)> = (0..delays_ms.len())
            .map(|i| (format!("step{i}"), 2))
            .collect();
        for base in ["deferred", "origin", "dlq", "status"] {
            wanted.push((base.to_string(), 1));
        }
        let refs: Vec<(&str, i32)> = wanted.iter().map(|(b, p)| (b.as_str(), *p)).collect();
        let mut topics = env.create_topics(&refs).await;
        let status = topics.pop().unwrap();
        let dlq_topic = topics.pop().unwrap();
        let origin = topics.pop().unwrap();
        let deferred = topics.pop().unwrap();
        env.config.runtime.status_topic = status.clone();
        env.config.runtime.dlq_topic = dlq_topic.clone();
        let mut config = env.config.clone();
        let mut retry = settings(&topics, delays_ms, &deferred);
        if let toml::Value::Table(t) = &mut retry {
            t.insert(
                "origins".into(),
                toml::Value::Array(vec![origin.clone().into()]),
            );
        }
        config.processors.insert(notify_retry::NAME.into(), retry);
        Ladder {
            env,
            steps: topics,
            deferred,
            origin,
            dlq: dlq_topic,
            status,
            config,
        }
    }

    /// Starts the retry processor in this process.
    pub async fn start(&self) -> (CancellationToken, Running) {
        let token = CancellationToken::new();
        let running = notify_retry::start(self.config.clone(), token.clone())
            .await
            .expect("retry processor starts");
        (token, running)
    }
}

/// `[processors.retry]` as TOML: no jitter on deferrals (exact expectations), 20 % on steps.
pub fn settings(steps: &[String], delays_ms: &[i64], deferred: &str) -> toml::Value {
    let steps: Vec<toml::Value> = steps
        .iter()
        .zip(delays_ms)
        .map(|(topic, delay)| {
            toml::Value::Table(toml::toml! {
                name = (format!("{}s", delay / 1000))
                delay_ms = (*delay)
                topic = (topic.clone())
            })
        })
        .collect();
    toml::Value::Table(toml::toml! {
        steps = steps
        deferred_topic = deferred
        jitter = 0.2
        deferred_jitter_ms = 0
    })
}

pub async fn stop(token: CancellationToken, running: Running) {
    token.cancel();
    let done = tokio::time::timeout(Duration::from_secs(30), running.done)
        .await
        .expect("stops within 30 s");
    done.expect("no panic").expect("clean stop");
}

pub fn message(event_id: &str) -> ChannelMessage {
    ChannelMessage {
        event_id: event_id.into(),
        user_id: "user-1".into(),
        category: "billing".into(),
        priority: Priority::Normal,
        channel: DeliveryChannel::Sms,
        recipient: "+4915112345678".into(),
        title: None,
        body: "Your invoice is due".into(),
        html_body: None,
        data: Default::default(),
        created_at: now_ms(),
        expires_at: None,
    }
}

/// The headers delivery writes on a failed attempt `attempts`, failed at `failed_at`.
pub fn failure_headers(origin: &str, attempts: u32, failed_at: i64) -> Vec<(String, String)> {
    vec![
        (dlq::ATTEMPTS.into(), attempts.to_string()),
        (dlq::FIRST_FAILURE_AT.into(), failed_at.to_string()),
        (h::LAST_FAILURE_AT.into(), failed_at.to_string()),
        (dlq::REASON.into(), "503 Service Unavailable".into()),
        (h::ORIGIN_TOPIC.into(), origin.into()),
        ("trace".into(), "t-1".into()),
    ]
}

/// Produces an Avro record with headers.
pub async fn produce_with<T: notify_runtime::records::AvroRecord>(
    env: &TestEnv,
    topic: &str,
    key: &str,
    value: &T,
    headers: &[(String, String)],
) {
    let bytes = env.codec.encode(topic, value).await.expect("encode");
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.produce_bytes(topic, Some(key), Some(&bytes), None, &refs)
        .await;
}

pub fn number(headers: &HashMap<String, String>, key: &str) -> i64 {
    headers
        .get(key)
        .unwrap_or_else(|| panic!("header {key} missing in {headers:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("header {key} is not a number in {headers:?}"))
}
