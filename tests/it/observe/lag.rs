//! `notify lag`: a group's lag per partition from its committed offsets, and its trend.

use notify_cli::lag::{compare, sample};
use notify_tests::TestEnv;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::ops::{notify, run};

fn commit(env: &TestEnv, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let consumer = notify_cli::scan::reader(&env.config, group).expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .expect("offset");
    }
    // On a fresh broker the group's coordinator may still be loading: retry for a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        assert!(std::time::Instant::now() < deadline, "commit: {e}");
        eprintln!("commit failed, retrying: {e}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[tokio::test]
async fn lag_per_partition_and_whether_it_shrinks() {
    let env = TestEnv::new("observe_lag").await;
    let [topic]: [String; 1] = env
        .create_topics(&[("in", 2)])
        .await
        .try_into()
        .expect("one topic");
    for (partition, n) in [(0, 10), (1, 4)] {
        for _ in 0..n {
            env.produce_bytes(&topic, None, Some(b"x"), Some(partition), &[])
                .await;
        }
    }
    let group = format!("{}-lagtest", env.config.kafka.group_prefix);
    let (groups, topics) = (vec![group.clone()], vec![topic.clone()]);
    commit(&env, &group, &topic, &[(0, 3), (1, 4)]);
    let before = sample(&env.config, &groups, &topics).expect("sample");
    commit(&env, &group, &topic, &[(0, 8)]);
    let after = sample(&env.config, &groups, &topics).expect("sample");
    let rows: Vec<_> = compare(&before, &after)
        .into_iter()
        .map(|r| (r.partition, r.lag, r.change, r.trend()))
        .collect();
    assert_eq!(rows, [(0, 2, -5, "shrinking"), (1, 0, 0, "caught up")]);

    let (code, stdout, stderr) = run(notify(
        &env,
        &[
            "lag",
            "--group",
            &group,
            "--topic",
            &topic,
            "--interval",
            "200ms",
        ],
    ));
    assert_eq!(code, Some(0), "{stderr}");
    eprintln!("{stdout}");
    let line = |p: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(p))
            .unwrap_or_else(|| panic!("no row for partition {p}: {stdout}"))
            .split_whitespace()
            .skip(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("0"), "2 +0 steady", "{stdout}");
    assert_eq!(line("1"), "0 +0 caught up", "{stdout}");
    assert!(
        stdout.contains("2 partitions, 2 records behind"),
        "{stdout}"
    );
}
