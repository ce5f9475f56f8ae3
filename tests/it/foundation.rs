//! The runtime against real Kafka and the registry: pass-through, dead letters, crash safety.

mod requeue;

use std::collections::HashMap;
use std::time::Duration;

use notify_passthrough::AvroPassThrough;
use notify_runtime::dlq;
use notify_runtime::records::{Channel, NotificationRequest, Priority};
use notify_tests::{TestEnv, decode_all, headers_of, notify_bin};
use rdkafka::Message;

pub fn request(event_id: &str, user_id: &str) -> NotificationRequest {
    NotificationRequest {
        event_id: event_id.into(),
        user_id: user_id.into(),
        category: "billing".into(),
        template_id: "invoice_due".into(),
        data: [("amount".to_string(), "12.50".to_string())].into(),
        channels: vec![Channel::Push, Channel::Email],
        priority: Priority::High,
        created_at: 1_700_000_000_000,
        expires_at: Some(1_900_000_000_000),
        source: "billing-service".into(),
        email: None,
        phone: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pass_through_reproduces_the_same_record() {
    let env = TestEnv::new("passthrough").await;
    let [input, output, dlq_topic] = env
        .create_topics(&[("in", 4), ("out", 4), ("dlq", 1)])
        .await
        .try_into()
        .unwrap();
    let mut config = env.config.clone();
    config.runtime.dlq_topic = dlq_topic;
    let running = env
        .start_with(
            AvroPassThrough {
                output: output.clone(),
            },
            "passthrough",
            &[&input],
            config,
        )
        .await;

    let sent = request("evt-1", "user-1");
    env.produce(&input, "user-1", &sent).await;

    let got = env
        .reader(&output)
        .records::<NotificationRequest>(&env.codec, 1, Duration::from_secs(30))
        .await;
    assert_eq!(got.len(), 1, "one record out");
    assert_eq!(got[0].value, sent);
    assert_eq!(got[0].key.as_deref(), Some("user-1"));
    running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_are_dead_lettered_and_the_stream_goes_on() {
    let env = TestEnv::new("poison").await;
    let [input, output, dlq_topic] = env
        .create_topics(&[("in", 1), ("out", 1), ("dlq", 1)])
        .await
        .try_into()
        .unwrap();
    let mut config = env.config.clone();
    config.runtime.dlq_topic = dlq_topic.clone();
    let running = env
        .start_with(
            AvroPassThrough {
                output: output.clone(),
            },
            "passthrough",
            &[&input],
            config,
        )
        .await;

    // 1. Random bytes.
    let noise: Vec<u8> = (0..64)
        .map(|_| rand::random::<u8>())
        .map(|b| b | 1)
        .collect();
    env.produce_bytes(
        &input,
        Some("k-noise"),
        Some(&noise),
        None,
        &[("trace", "abc")],
    )
    .await;
    // 2. Wire format with a schema id the registry does not know.
    let unknown = [0u8, 0x7f, 0xff, 0xff, 0x01, 2, 0x61];
    env.produce_bytes(&input, Some("k-unknown"), Some(&unknown), None, &[])
        .await;
    // 3. A record written with a schema that lacks required fields (event_id, template_id).
    let partial = partial_request_bytes(&env).await;
    env.produce_bytes(&input, Some("k-partial"), Some(&partial), None, &[])
        .await;
    // 4. A record that decodes but breaks the contract (empty event id).
    let mut invalid = request("", "user-2");
    invalid.event_id.clear();
    env.produce(&input, "user-2", &invalid).await;
    // 5. A good record after all of them.
    let good = request("evt-good", "user-3");
    env.produce(&input, "user-3", &good).await;

    let out = env
        .reader(&output)
        .records::<NotificationRequest>(&env.codec, 1, Duration::from_secs(30))
        .await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value, good, "the processor went on past the poison");

    let dead = env.reader(&dlq_topic).raw(4, Duration::from_secs(30));
    assert_eq!(dead.len(), 4, "four dead letters");
    let by_key: HashMap<String, _> = dead
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m,
            )
        })
        .collect();
    let expect = [
        ("k-noise", "decode", 0i64),
        ("k-unknown", "schema", 1),
        ("k-partial", "schema", 2),
        ("user-2", "validation", 3),
    ];
    for (key, class, offset) in expect {
        let m = by_key
            .get(key)
            .unwrap_or_else(|| panic!("no dead letter for {key}"));
        let h = headers_of(m);
        for name in dlq::ALL_HEADERS {
            assert!(
                h.contains_key(name),
                "{key}: header {name} missing in {h:?}"
            );
        }
        assert_eq!(h[dlq::CLASS], class, "{key}: class");
        assert_eq!(h[dlq::STAGE], "passthrough");
        assert_eq!(h[dlq::SOURCE_TOPIC], input);
        assert_eq!(h[dlq::SOURCE_PARTITION], "0");
        assert_eq!(h[dlq::SOURCE_OFFSET], offset.to_string(), "{key}: offset");
        assert!(!h[dlq::REASON].is_empty());
    }
    // The dead letter carries the original bytes and the source's own headers.
    let noise_dl = by_key["k-noise"];
    assert_eq!(noise_dl.payload(), Some(noise.as_slice()));
    assert_eq!(
        headers_of(noise_dl).get("trace").map(String::as_str),
        Some("abc")
    );

    let metrics = running.metrics_text();
    assert_eq!(
        notify_tests::metric(
            &metrics,
            "notify_dead_letters_total",
            &[("processor", "passthrough"), ("class", "schema")]
        ),
        Some(2.0),
        "{metrics}"
    );
    running.stop().await.expect("clean stop");
}

/// A NotificationRequest written with a schema that has no event_id and no template_id,
/// registered under its own subject, in the Confluent wire format.
async fn partial_request_bytes(env: &TestEnv) -> Vec<u8> {
    let schema_text = r#"{"type":"record","name":"NotificationRequest","namespace":"notify.v1","fields":[
        {"name":"user_id","type":"string"},{"name":"category","type":"string"},
        {"name":"created_at","type":"long"}]}"#;
    let subject = format!("{}-partial-value", env.topic("x"));
    let url = format!("{}/subjects/{subject}/versions", env.config.registry.url);
    let body = serde_json::json!({ "schema": schema_text, "schemaType": "AVRO" });
    let response: serde_json::Value = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&body)
        .send()
        .await
        .expect("registry reachable")
        .json()
        .await
        .expect("registry answers JSON");
    let id = response["id"].as_u64().expect("schema id") as u32;
    let schema = apache_avro::Schema::parse_str(schema_text).unwrap();
    let value = apache_avro::types::Value::Record(vec![
        (
            "user_id".into(),
            apache_avro::types::Value::String("user-x".into()),
        ),
        (
            "category".into(),
            apache_avro::types::Value::String("billing".into()),
        ),
        ("created_at".into(), apache_avro::types::Value::Long(1)),
    ]);
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&id.to_be_bytes());
    #[allow(deprecated)] // The replacement writer API is heavier for one datum.
    bytes.extend(apache_avro::to_avro_datum(&schema, value).unwrap());
    bytes
}

/// SIGKILL in the middle of 10,000 records, then a restart: every id arrives downstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_loses_nothing() {
    let (missing, duplicates) = sigkill_run("sigkill", false).await;
    assert_eq!(missing, 0);
    eprintln!("at-least-once: {duplicates} duplicates after SIGKILL");
}

/// The same with `kafka.transactional = true`: nothing lost and, read committed, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_transactional_is_exactly_once() {
    let (missing, duplicates) = sigkill_run("sigkill_txn", true).await;
    assert_eq!(missing, 0);
    assert_eq!(duplicates, 0, "exactly-once mode produced duplicates");
}

/// Returns (missing ids, duplicate records) downstream.
async fn sigkill_run(name: &str, transactional: bool) -> (usize, usize) {
    const N: usize = 10_000;
    let env = TestEnv::new(name).await;
    let [input, output, dlq_topic] = env
        .create_topics(&[("in", 4), ("out", 4), ("dlq", 1)])
        .await
        .try_into()
        .unwrap();

    let spawn = || {
        std::process::Command::new(notify_bin())
            .args(["run", "passthrough"])
            .env(
                "NOTIFY_KAFKA__BOOTSTRAP_SERVERS",
                &env.config.kafka.bootstrap_servers,
            )
            .env("NOTIFY_KAFKA__GROUP_PREFIX", &env.config.kafka.group_prefix)
            .env("NOTIFY_REGISTRY__URL", &env.config.registry.url)
            .env("NOTIFY_HTTP__LISTEN", "127.0.0.1:0")
            .env("NOTIFY_RUNTIME__DLQ_TOPIC", &dlq_topic)
            .env("NOTIFY_PROCESSORS__PASSTHROUGH__INPUT", &input)
            .env("NOTIFY_PROCESSORS__PASSTHROUGH__OUTPUT", &output)
            .env("NOTIFY_LOG", "warn")
            .env("NOTIFY_KAFKA__TRANSACTIONAL", transactional.to_string())
            .env("NOTIFY_KAFKA__INSTANCE_ID", &env.id)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("notify starts")
    };

    // Encode once, then send all records concurrently.
    let template = request("evt-0", "user-0");
    for i in 0..N {
        let mut r = template.clone();
        r.event_id = format!("evt-{i}");
        r.user_id = format!("user-{}", i % 97);
        env.produce(&input, &r.user_id.clone(), &r).await;
        if i == N / 10 {
            // Start consuming while the stream is still being written.
            break;
        }
    }
    let mut first = spawn();
    let reader = env.reader(&output);
    let mut seen: Vec<String> = Vec::new();
    let producer_env = &env;
    let produce_rest = async {
        for i in (N / 10 + 1)..N {
            let mut r = template.clone();
            r.event_id = format!("evt-{i}");
            r.user_id = format!("user-{}", i % 97);
            producer_env.produce(&input, &r.user_id.clone(), &r).await;
        }
    };
    produce_rest.await;
    // Kill once some but not all output exists.
    let early = reader.raw(N / 3, Duration::from_secs(60));
    assert!(
        !early.is_empty(),
        "the processor produced nothing before the kill"
    );
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let before_kill = early.len();
    seen.extend(
        decode_all::<NotificationRequest>(&env.codec, early)
            .await
            .into_iter()
            .map(|r| r.value.event_id),
    );

    let mut second = spawn();
    let rest = reader.raw_until_quiet(Duration::from_secs(15), Duration::from_secs(240));
    seen.extend(
        decode_all::<NotificationRequest>(&env.codec, rest)
            .await
            .into_iter()
            .map(|r| r.value.event_id),
    );
    second.kill().ok();
    let _ = second.wait();

    let distinct: std::collections::HashSet<&String> = seen.iter().collect();
    let missing: Vec<usize> = (0..N)
        .filter(|i| !distinct.contains(&format!("evt-{i}")))
        .collect();
    let duplicates = seen.len() - distinct.len();
    eprintln!(
        "sigkill: {before_kill} records out before the kill, {} total, {duplicates} duplicates, {} missing",
        seen.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "lost {} ids, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(before_kill < N, "the kill must happen mid-stream");
    (missing.len(), duplicates)
}

/// An output larger than the producer takes (`message.max.bytes`, set low here) dead-letters
/// its input instead of stopping the processor (a restart would meet the same record again:
/// a crash loop); the record after it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_output_too_large_for_the_broker_is_dead_lettered_not_a_crash_loop() {
    let env = TestEnv::new("oversized").await;
    let [input, output, dlq_topic] = env
        .create_topics(&[("in", 1), ("out", 1), ("dlq", 1)])
        .await
        .try_into()
        .unwrap();
    let mut config = env.config.clone();
    config.runtime.dlq_topic = dlq_topic.clone();
    config
        .kafka
        .producer
        .insert("message.max.bytes".into(), "4000".into());
    let running = env
        .start_with(
            AvroPassThrough {
                output: output.clone(),
            },
            "passthrough",
            &[&input],
            config,
        )
        .await;
    let mut big = request("evt-big", "user-1");
    big.data.insert("padding".into(), "x".repeat(6_000));
    env.produce(&input, "user-1", &big).await;
    let small = request("evt-small", "user-1");
    env.produce(&input, "user-1", &small).await;

    let got = env
        .reader(&output)
        .records::<NotificationRequest>(&env.codec, 1, Duration::from_secs(30))
        .await;
    assert_eq!(got.len(), 1, "the record after the big one passed");
    assert_eq!(got[0].value.event_id, "evt-small");
    let dead = env.reader(&dlq_topic).raw(1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1);
    let h = headers_of(&dead[0]);
    assert_eq!(
        h.get(dlq::CLASS).map(String::as_str),
        Some("validation"),
        "{h:?}"
    );
    assert!(
        h.get(dlq::REASON)
            .is_some_and(|r| r.contains("message.max.bytes")),
        "{h:?}"
    );
    assert!(h.contains_key("notify.error.payload_dropped"), "{h:?}");
    running.stop().await.expect("the processor never stopped");
}
