//! Dedup as a process against the real stack: SIGKILL at random points while 10,000 requests
//! with 20% re-sent (user, event id) pairs flow (exactly one downstream copy and one status
//! per request, read committed), and the CQL database paused for 30 s in the middle of a run
//! (held, then resumed; nothing lost, nothing twice).

mod outage;
pub(crate) mod private_cql;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use notify_runtime::records::{DeliveryStatus, RoutedNotification};
use notify_tests::{TestEnv, decode_all, notify_bin};
use rand::Rng;
use rand::seq::SliceRandom;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::stages_filter::request;

/// One test's topics for the dedup stage alone.
pub struct Topics {
    pub input: String,
    pub output: String,
    pub status: String,
    pub dlq: String,
}

pub async fn topics(env: &TestEnv) -> Topics {
    let [input, output, status, dlq] = env
        .create_topics(&[("routed", 4), ("deduped", 4), ("status", 2), ("dlq", 1)])
        .await
        .try_into()
        .expect("four topics");
    Topics {
        input,
        output,
        status,
        dlq,
    }
}

/// `n` requests of which `dup_percent` % re-send an earlier (user, event id) pair, shuffled.
/// Returns (key, record) and the distinct `user/event` pairs.
pub fn workload(
    prefix: &str,
    n: usize,
    dup_percent: usize,
) -> (Vec<(String, RoutedNotification)>, HashSet<String>) {
    let mut rng = rand::rng();
    let distinct = n - n * dup_percent / 100;
    let pairs: Vec<(String, String)> = (0..distinct)
        .map(|i| {
            (
                format!("user-{}", rng.random_range(0..500)),
                format!("{prefix}-{i}"),
            )
        })
        .collect();
    let mut records = Vec::with_capacity(n);
    for i in 0..n {
        let (user, id) = if i < distinct {
            pairs[i].clone()
        } else {
            pairs[rng.random_range(0..distinct)].clone()
        };
        let routed = RoutedNotification {
            request: request(&id, &user),
            locale: "en".into(),
            timezone: "UTC".into(),
            user: BTreeMap::new(),
            targets: vec![],
            rendered: vec![],
        };
        records.push((user, routed));
    }
    records.shuffle(&mut rng);
    (
        records,
        pairs.into_iter().map(|(u, e)| format!("{u}/{e}")).collect(),
    )
}

/// Produces the records, up to 500 at a time.
pub async fn produce(env: &TestEnv, topic: &str, records: &[(String, RoutedNotification)]) {
    let mut encoded = Vec::with_capacity(records.len());
    for (key, r) in records {
        encoded.push((key, env.codec.encode(topic, r).await.expect("encode")));
    }
    for chunk in encoded.chunks(500) {
        futures::future::join_all(
            chunk
                .iter()
                .map(|(k, v)| env.produce_bytes(topic, Some(k), Some(v), None, &[])),
        )
        .await;
    }
}

/// `notify run dedup` on this test's topics and keyspace.
pub fn spawn_dedup(env: &TestEnv, t: &Topics) -> Child {
    Command::new(notify_bin())
        .args(["run", "dedup"])
        .env(
            "NOTIFY_KAFKA__BOOTSTRAP_SERVERS",
            &env.config.kafka.bootstrap_servers,
        )
        .env("NOTIFY_KAFKA__GROUP_PREFIX", &env.config.kafka.group_prefix)
        .env("NOTIFY_REGISTRY__URL", &env.config.registry.url)
        .env("NOTIFY_CQL__NODES", format!("{:?}", env.config.cql.nodes))
        .env("NOTIFY_CQL__KEYSPACE", &env.config.cql.keyspace)
        .env("NOTIFY_HTTP__LISTEN", "127.0.0.1:0")
        .env("NOTIFY_RUNTIME__STATUS_TOPIC", &t.status)
        .env("NOTIFY_RUNTIME__DLQ_TOPIC", &t.dlq)
        .env("NOTIFY_PROCESSORS__DEDUP__INPUT", &t.input)
        .env("NOTIFY_PROCESSORS__DEDUP__OUTPUT", &t.output)
        // Alone in a process, dedup is exactly-once only inside Kafka transactions.
        .env("NOTIFY_KAFKA__TRANSACTIONAL", "true")
        .env("NOTIFY_KAFKA__INSTANCE_ID", &env.id)
        .env("NOTIFY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("notify starts")
}

/// Records in `topic` (sum of high watermarks; the stage's producer is not transactional).
pub fn count(env: &TestEnv, topic: &str) -> i64 {
    let probe: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.config.kafka.bootstrap_servers)
        .create()
        .expect("probe");
    let md = probe
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts = md.topics().first().map_or(0, |t| t.partitions().len());
    (0..parts as i32)
        .map(|p| {
            probe
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum()
}

/// Copies per `user/event` downstream, read committed until quiet.
pub async fn copies_per_id(env: &TestEnv, topic: &str) -> HashMap<String, usize> {
    let raw = env
        .reader(topic)
        .raw_until_quiet(Duration::from_secs(3), Duration::from_secs(120));
    let mut per_id = HashMap::new();
    for r in decode_all::<RoutedNotification>(&env.codec, raw).await {
        let key = format!("{}/{}", r.value.request.user_id, r.value.request.event_id);
        *per_id.entry(key).or_insert(0) += 1;
    }
    per_id
}

/// Status events by outcome.
pub async fn status_counts(env: &TestEnv, topic: &str) -> BTreeMap<String, usize> {
    let raw = env
        .reader(topic)
        .raw_until_quiet(Duration::from_secs(2), Duration::from_secs(60));
    let mut counts = BTreeMap::new();
    for s in decode_all::<DeliveryStatus>(&env.codec, raw).await {
        *counts.entry(format!("{:?}", s.value.outcome)).or_insert(0) += 1;
    }
    counts
}

/// Every distinct id exactly once downstream, nothing else.
pub fn assert_exactly_once(per_id: &HashMap<String, usize>, distinct: &HashSet<String>) {
    let missing: Vec<&String> = distinct
        .iter()
        .filter(|id| !per_id.contains_key(*id))
        .collect();
    let twice: Vec<(&String, &usize)> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    let foreign = per_id.keys().filter(|id| !distinct.contains(*id)).count();
    assert!(
        missing.is_empty() && twice.is_empty() && foreign == 0,
        "{} missing (e.g. {:?}), {} more than once (e.g. {:?}), {foreign} unknown",
        missing.len(),
        &missing[..missing.len().min(5)],
        twice.len(),
        &twice[..twice.len().min(5)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_points_leaves_one_copy_per_id() {
    const N: usize = 10_000;
    const KILLS: usize = 4;
    let env = TestEnv::new("dedup_kill").await;
    let t = topics(&env).await;
    env.keyspace().await;
    let (records, distinct) = workload("k", N, 20);
    // The requests keep arriving while the stage is killed and restarted.
    let (first, rest) = records.split_at(N / 10);
    produce(&env, &t.input, first).await;
    let producing = async {
        produce(&env, &t.input, rest).await;
    };
    let killing = async {
        let mut rng = rand::rng();
        let mut points: Vec<f64> = (0..KILLS).map(|_| rng.random_range(0.05..0.9)).collect();
        points.sort_by(f64::total_cmp);
        let mut kills = Vec::new();
        for point in points {
            let mut child = spawn_dedup(&env, &t);
            let target = (point * distinct.len() as f64) as i64;
            let reached = notify_tests::eventually(Duration::from_secs(120), async || {
                (count(&env, &t.output) >= target).then_some(())
            })
            .await;
            assert!(reached.is_some(), "output never reached {target}");
            // Past the threshold, anywhere within a few hundred milliseconds.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            kills.push(count(&env, &t.output));
        }
        kills
    };
    let ((), kills) = tokio::join!(producing, killing);
    eprintln!("dedup_kill: downstream records at each SIGKILL: {kills:?}");
    assert!(
        kills.iter().any(|k| *k < distinct.len() as i64),
        "at least one kill must land mid-stream"
    );

    let mut last = spawn_dedup(&env, &t);
    let done = notify_tests::eventually(Duration::from_secs(180), async || {
        (count(&env, &t.output) >= distinct.len() as i64).then_some(())
    })
    .await;
    let per_id = copies_per_id(&env, &t.output).await;
    last.kill().ok();
    let _ = last.wait();
    let statuses = status_counts(&env, &t.status).await;
    eprintln!(
        "dedup_kill: {} distinct ids, {} downstream records, statuses {statuses:?}",
        distinct.len(),
        per_id.values().sum::<usize>()
    );
    assert!(done.is_some(), "not every id went downstream");
    assert_exactly_once(&per_id, &distinct);
    // Read committed, each request has one status: what a redo wrote again was aborted.
    assert_eq!(
        statuses.get("Accepted").copied(),
        Some(distinct.len()),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.get("Duplicate").copied(),
        Some(N - distinct.len()),
        "{statuses:?}"
    );
}
