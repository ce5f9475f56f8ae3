//! Records handed to a lane before their partition was revoked, still waiting there when the
//! same partition comes back to the same instance, are left to the new assignment: each is
//! processed once, not once per assignment (a deliverer would call its provider twice, the
//! second time under its new ownership epoch without a look at the ledger).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify_runtime::{Output, ProcessError, Processor, Raw, RecordMeta};
use notify_tests::{TestEnv, eventually};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};

const RECORDS: usize = 60;

/// A slow copy that counts how often it was asked for each offset.
struct CountingCopy {
    output: String,
    calls: Arc<Mutex<HashMap<i64, usize>>>,
}

impl Processor for CountingCopy {
    type Input = Raw;

    async fn process(&self, raw: Raw, meta: &RecordMeta) -> Result<Vec<Output>, ProcessError> {
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(meta.offset)
            .or_default() += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let value = raw.0.unwrap_or_default();
        Ok(vec![Output::bytes(&self.output, meta.key.clone(), value)])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_queued_before_a_revoke_are_processed_once_when_the_partition_comes_back() {
    let env = TestEnv::new("requeue").await;
    let [input, output, other] = env
        .create_topics(&[("in", 1), ("out", 1), ("other", 1)])
        .await
        .try_into()
        .expect("three topics");
    for i in 0..RECORDS {
        let id = format!("r-{i}");
        // One key: one lane, so the records queue behind each other.
        env.produce_bytes(&input, Some("k"), Some(id.as_bytes()), None, &[])
            .await;
    }
    let mut config = env.config.clone();
    config.runtime.lanes = 1;
    // A revoke waits half of this for records in flight, then lets the rest go.
    config.runtime.shutdown_grace_ms = 1_000;
    let calls: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let copy = CountingCopy {
        output: output.clone(),
        calls: calls.clone(),
    };
    let running = env
        .start_with(copy, "requeue", &[&input], config.clone())
        .await;
    let count = || calls.lock().unwrap_or_else(|e| e.into_inner()).len();
    let started = eventually(Duration::from_secs(30), async || {
        (count() >= 3).then_some(())
    })
    .await;
    assert!(
        started.is_some(),
        "the processor did not start on its records"
    );

    // Another member of the group, on another topic, joins and leaves: each time the group
    // (eager protocol) revokes the partition and assigns it to the first member again, while
    // most of the records wait in its lane.
    let member: BaseConsumer =
        notify_runtime::kafka::consumer_config(&config, &config.group_id("requeue"))
            .create()
            .expect("second member");
    member.subscribe(&[&other]).expect("subscribe");
    let joined = eventually(Duration::from_secs(30), async || {
        let _ = member.poll(Duration::from_millis(100));
        member
            .assignment()
            .ok()
            .filter(|a| a.count() > 0)
            .map(|_| ())
    })
    .await;
    assert!(
        joined.is_some(),
        "the second member was never assigned its topic"
    );
    drop(member);

    let reader = env.reader(&output);
    let mut seen = HashSet::new();
    let done = eventually(Duration::from_secs(90), async || {
        for m in reader.raw(RECORDS, Duration::from_millis(500)) {
            if let Some(p) = m.payload() {
                seen.insert(String::from_utf8_lossy(p).into_owned());
            }
        }
        (seen.len() == RECORDS).then_some(())
    })
    .await;
    running.stop().await.expect("stops cleanly");
    assert!(
        done.is_some(),
        "{} of {RECORDS} records came through",
        seen.len()
    );
    let calls = calls.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let twice: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    // Only a record in the middle of its processing at a revoke may be done again (its
    // outputs belong to the old assignment): one per rebalance at most, two rebalances.
    assert!(
        twice.len() <= 2,
        "records processed more than once: {twice:?} (of {} offsets)",
        calls.len()
    );
}
