//! `notify status` on a status topic of 100,000 records reads only what it needs: the event's
//! own partition for `--event-id`, and from the offsets of a time for `--since`.

use std::time::{Duration, Instant};

use notify_cli::status::{StatusFilter, show};
use notify_runtime::partitioner::partition_for;
use notify_runtime::records::{DeliveryStatus, Outcome};
use notify_tests::TestEnv;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::ops::{notify, run};

const RECORDS: usize = 100_000;
const PARTITIONS: usize = 8;

/// Produces statuses `<prefix>-<i>` keyed by event id with the runtime's producer settings
/// (the partitioner the pipeline writes the status topic with).
async fn produce_statuses(env: &TestEnv, topic: &str, prefix: &str, n: usize) {
    let producer: FutureProducer = notify_runtime::kafka::producer_config(&env.config)
        .set("queue.buffering.max.messages", "1000000")
        .set("linger.ms", "50")
        .create()
        .expect("producer");
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let event = format!("{prefix}-{i}");
        let status = DeliveryStatus::new(&event, format!("u-{}", i % 997), "test", Outcome::Sent);
        let bytes = env.codec.encode(topic, &status).await.expect("encode");
        let record = FutureRecord::<str, [u8]>::to(topic)
            .key(&event)
            .payload(&bytes);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queued"),
        );
    }
    for delivery in pending {
        delivery
            .await
            .expect("delivered")
            .map_err(|(e, _)| e)
            .expect("acknowledged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_only_the_events_partition_and_from_a_time() {
    let env = TestEnv::new("observe_status").await;
    let [topic]: [String; 1] = env
        .create_topics(&[("status", PARTITIONS as i32)])
        .await
        .try_into()
        .expect("one topic");
    produce_statuses(&env, &topic, "e", RECORDS).await;

    // `--event-id`: one partition read, as the command itself reports.
    let started = Instant::now();
    let (code, stdout, stderr) = run(notify(
        &env,
        &[
            "status",
            "--event-id",
            "e-4242",
            "--topic",
            &topic,
            "--json",
        ],
    ));
    assert_eq!(code, Some(0), "{stderr}");
    let took = started.elapsed();
    let partition = partition_for("e-4242", PARTITIONS);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].contains("\"event_id\":\"e-4242\""), "{stdout}");
    let report = stderr.lines().last().unwrap_or_default();
    assert!(
        report.contains(&format!(
            "of the topic's {RECORDS} records (partitions [{partition}])"
        )),
        "{stderr}"
    );
    let read: u64 = report
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of records read in {report:?}"));
    assert!(
        read > 0 && read < (RECORDS / 4) as u64,
        "read {read} of {RECORDS} ({took:?})"
    );
    eprintln!("status --event-id read {read} of {RECORDS} records in {took:?}");

    // `--since`: only what was written after that time is read, from every partition.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since_ms = notify_runtime::now_ms();
    produce_statuses(&env, &topic, "late", 5).await;
    let filter = StatusFilter {
        since_ms: Some(since_ms),
        ..StatusFilter::default()
    };
    let report = show(&env.config, &topic, &filter, false, true)
        .await
        .expect("status since");
    assert_eq!((report.read, report.printed), (5, 5), "{report}");
    assert_eq!(report.partitions.len(), PARTITIONS);
}
