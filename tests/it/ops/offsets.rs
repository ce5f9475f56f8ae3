//! `notify offsets`: a reset is refused while the group has members; `--dry-run` prints the
//! move and changes nothing; a reset to a time moves the group, and the processor started
//! again re-reads from there.

use std::collections::HashSet;
use std::time::Duration;

use notify_passthrough::AvroPassThrough;
use notify_runtime::records::NotificationRequest;
use notify_tests::{TestEnv, eventually};

use super::{notify, produce_requests, request_lines, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_reset_to_a_time_moves_the_group_and_the_processor_rereads_from_there() {
    let env = TestEnv::new("offsets").await;
    let [input, output] = env
        .create_topics(&[("in", 2), ("out", 2)])
        .await
        .try_into()
        .expect("two topics");
    produce_requests(
        &env,
        &input,
        &request_lines(&format!("{}-a", env.id), 50, 10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cut = chrono::Utc::now().to_rfc3339();
    tokio::time::sleep(Duration::from_millis(500)).await;
    produce_requests(
        &env,
        &input,
        &request_lines(&format!("{}-b", env.id), 30, 10),
    )
    .await;

    let group = env.config.group_id("passthrough");
    let inputs = [input.as_str()];
    let start = || {
        env.start(
            AvroPassThrough {
                output: output.clone(),
            },
            "passthrough",
            &inputs,
        )
    };
    let reader = env.reader(&output);
    let running = start().await;
    // At least once: a rebalance on a loaded box may redo records, so wait for what the
    // group committed (auto-commit, every second) rather than count outputs.
    eventually(Duration::from_secs(60), async || {
        let (_, out, _) = run(notify(&env, &["offsets", "show", &group]));
        (committed_sum(&out, &input) == 80).then_some(())
    })
    .await
    .expect("the processor commits all 80 records while it runs");
    let reset = [
        "offsets",
        "reset",
        &group,
        "--to-time",
        &cut,
        "--topic",
        &input,
    ];
    let (code, _, err) = run(notify(&env, &reset));
    assert_eq!(code, Some(1), "refused while the processor runs: {err}");
    assert!(err.contains("members"), "{err}");
    running.stop().await.expect("processor stops");
    // Everything the first run wrote (a redo may have written some twice).
    let first = reader.raw_until_quiet(Duration::from_secs(3), Duration::from_secs(60));
    let first = notify_tests::decode_all::<NotificationRequest>(&env.codec, first).await;
    let first: HashSet<String> = first.into_iter().map(|r| r.value.event_id).collect();
    assert_eq!(first.len(), 80, "the first run passed every record through");

    // The group is empty once the member has left, and its commits stand.
    let show = eventually(Duration::from_secs(30), async || {
        let (code, out, _) = run(notify(&env, &["offsets", "show", &group]));
        (code == Some(0) && out.contains(", 0 members") && out.contains(&input)).then_some(out)
    })
    .await
    .expect("group shows with its offsets and no member");
    let committed: i64 = committed_sum(&show, &input);
    assert_eq!(committed, 80, "{show}");

    let (code, out, err) = run(notify(&env, &[&reset[..], &["--dry-run"]].concat()));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("would move 2 partitions"), "{out}");
    let (_, after_dry, _) = run(notify(&env, &["offsets", "show", &group]));
    assert_eq!(
        committed_sum(&after_dry, &input),
        80,
        "--dry-run changed nothing"
    );

    let (code, out, err) = run(notify(&env, &reset));
    assert_eq!(code, Some(0), "{out}\n{err}");
    let (_, moved, _) = run(notify(&env, &["offsets", "show", &group]));
    assert_eq!(
        committed_sum(&moved, &input),
        50,
        "moved to the first record after the cut:\n{moved}"
    );

    let running = start().await;
    let expected: HashSet<String> = (0..30).map(|i| format!("{}-b-{i}", env.id)).collect();
    let mut ids = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ids.len() < expected.len() && tokio::time::Instant::now() < deadline {
        let batch = reader
            .records::<NotificationRequest>(&env.codec, 30, Duration::from_secs(2))
            .await;
        ids.extend(batch.into_iter().map(|r| r.value.event_id));
    }
    // Anything more within a few seconds would be a record from before the cut.
    let extra = reader
        .records::<NotificationRequest>(&env.codec, 1, Duration::from_secs(3))
        .await;
    running.stop().await.expect("processor stops");
    ids.extend(extra.into_iter().map(|r| r.value.event_id));
    assert_eq!(ids, expected, "re-read exactly the records after the cut");
}

/// The sum of the COMMITTED column of `offsets show` for `topic`.
fn committed_sum(show: &str, topic: &str) -> i64 {
    show.lines()
        .filter(|l| l.starts_with(topic))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<i64>().ok())
        .sum()
}
