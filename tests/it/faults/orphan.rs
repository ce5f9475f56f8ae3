//! A processor whose consumer lost its assignment while the group still counts it as the
//! owner (what a broker outage left three deliverers in: in the group, owning nothing, reading
//! nothing, healthy by every probe). The watchdog notices that the group gave it partitions it
//! does not have, stops it with the reason, and a restart reads everything.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use notify_tests::{TestEnv, patient};
use rdkafka::Message;

use super::broker::passthrough;

const RECORDS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_left_without_its_partitions_stops_and_its_restart_reads_them() {
    let env = TestEnv::new("faults_orphan").await;
    let [input, output, dlq] = env
        .create_topics(&[("in", 2), ("out", 2), ("dlq", 1)])
        .await
        .try_into()
        .expect("three topics");
    for i in 0..RECORDS {
        let id = format!("r-{i}");
        env.produce_bytes(&input, Some(&id), Some(id.as_bytes()), None, &[])
            .await;
    }

    // Every assignment it gets is dropped at once (NOTIFY_FAULT): an orphan from the start.
    let log_path = std::env::temp_dir().join(format!("notify-{}-orphan.log", env.id));
    let log = std::fs::File::create(&log_path).expect("log file");
    let port = notify_runtime::http::unused_loopback_port().expect("port");
    let mut orphan = passthrough(&env, &input, &output, &dlq, port)
        .env("NOTIFY_FAULT", "rebalance.lose_assignment")
        .env("NOTIFY_RUNTIME__STALL_AFTER_MS", "3000")
        .stderr(Stdio::from(log))
        .spawn()
        .expect("notify starts");
    let deadline = Instant::now() + patient(Duration::from_secs(90));
    let status = loop {
        if let Some(status) = orphan.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = orphan.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("the orphaned processor kept running without consuming; its log:\n{text}")
    });
    assert!(!status.success(), "an orphan stops with an error: {status}");
    assert!(
        text.contains("NOTIFY_FAULT: rebalance.lose_assignment"),
        "the fault was acted out:\n{text}"
    );
    assert!(
        text.contains("owns no partition although its group")
            && text.contains("assigned it 2 partitions"),
        "the reason names the group's view:\n{text}"
    );
    let reader = env.reader(&output);
    assert!(
        reader.raw(RECORDS, Duration::from_secs(2)).is_empty(),
        "an orphan reads nothing, so nothing came through before the restart"
    );

    // Its supervisor restarts it (without the fault): the group's records all come through.
    let mut restarted = passthrough(&env, &input, &output, &dlq, port)
        .spawn()
        .expect("notify starts");
    let mut seen = HashSet::new();
    let deadline = Instant::now() + patient(Duration::from_secs(60));
    while seen.len() < RECORDS && Instant::now() < deadline {
        for m in reader.raw(RECORDS, Duration::from_secs(1)) {
            if let Some(p) = m.payload() {
                seen.insert(String::from_utf8_lossy(p).into_owned());
            }
        }
    }
    let _ = restarted.kill();
    let _ = restarted.wait();
    assert_eq!(seen.len(), RECORDS, "every record after the restart");
}
