//! `notify replay --dry-run` writes nothing and reports what the run then does: records by
//! filter reason, and messages by what the delivery ledger would do; `--force` needs `--yes`
//! without a terminal and makes new event ids.

use std::time::Duration;

use notify_runtime::records::NotificationRequest;
use notify_tests::{TestEnv, decode_all};

use super::{notify, produce_requests, records_in, request_lines, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_dry_run_writes_nothing_and_counts_what_the_run_then_does() {
    let env = TestEnv::new("replay_dry").await;
    let [source, target, forced] = env
        .create_topics(&[("requests", 2), ("replayed", 2), ("forced", 2)])
        .await
        .try_into()
        .expect("three topics");
    let session = env.keyspace().await;
    // 200 requests: every fourth is marketing, ten others expired an hour ago.
    let mut lines = request_lines(&env.id, 200, 40);
    let expired: Vec<usize> = (0..200).filter(|i| i % 4 != 0).take(10).collect();
    for (i, line) in lines.iter_mut().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(line).expect("json");
        if i % 4 == 0 {
            v["category"] = "marketing".into();
        }
        if expired.contains(&i) {
            v["expires_at"] = (notify_runtime::now_ms() - 3_600_000).into();
        }
        *line = v.to_string();
    }
    produce_requests(&env, &source, &lines).await;
    // Ledger rows of kept requests: 20 sent, 5 failed, 3 in doubt; plus a row of another
    // user under a sent event id, which is not this request's.
    let kept: Vec<usize> = (0..200)
        .filter(|i| i % 4 != 0 && !expired.contains(i))
        .collect();
    assert_eq!(kept.len(), 140);
    let insert = format!(
        "INSERT INTO {}.delivery_messages (event_id, user_id, channel, recipient, state, updated_at) \
         VALUES (?, ?, 'APNS', 'device-token-0001', ?, toTimestamp(now()))",
        env.config.cql.keyspace
    );
    let states = [("sent", 20), ("failed", 5), ("in_doubt", 3)];
    let mut next = kept.iter();
    for (state, n) in states {
        for &i in next.by_ref().take(n) {
            let (event, user) = (format!("{}-{i}", env.id), format!("user-{}", i % 40));
            session
                .query_unpaged(insert.clone(), (&event, &user, state))
                .await
                .expect("row");
            if state == "sent" {
                session
                    .query_unpaged(insert.clone(), (&event, "someone-else", "failed"))
                    .await
                    .expect("row");
            }
        }
    }

    let state = std::env::temp_dir().join(format!("notify-dry-{}", env.id));
    let state_dir = state.to_string_lossy().to_string();
    let common = [
        "replay",
        "--source",
        &source,
        "--category",
        "billing",
        "--state-dir",
        &state_dir,
    ];
    let dry = [&common[..], &["--target", &target, "--dry-run"]].concat();
    let (code, out, err) = run(notify(&env, &dry));
    assert_eq!(code, Some(0), "{out}\n{err}");
    for expected in [
        "read 200, would write 140, filtered 60",
        "filtered (category): 50",
        "filtered (expired): 10",
        "delivery ledger: 117 would be sent",
        "send: no ledger row: 112",
        "send: failed before: 5",
        "skip: already sent: 20",
        "skip: in doubt (use --force to resend): 3",
    ] {
        assert!(out.contains(expected), "{expected:?} missing in\n{out}");
    }
    assert_eq!(records_in(&env, &target), 0, "a dry run writes nothing");
    assert!(!state.exists(), "a dry run leaves no checkpoint");

    let real = [&common[..], &["--target", &target]].concat();
    let (code, out, err) = run(notify(&env, &real));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("read 200, written 140, filtered 60"), "{out}");
    let copies = env
        .reader(&target)
        .raw_until_quiet(Duration::from_secs(2), Duration::from_secs(60));
    assert_eq!(copies.len(), 140, "the run wrote what the dry run said");

    // --force without a terminal and without --yes is refused before anything is copied.
    let force = [
        &common[..],
        &["--target", &forced, "--force", "--ignore-expiry"],
    ]
    .concat();
    let (code, _, err) = run(notify(&env, &force));
    assert_eq!(code, Some(1));
    assert!(err.contains("confirm with --yes"), "{err}");
    assert_eq!(records_in(&env, &forced), 0);
    let (code, out, err) = run(notify(&env, &[&force[..], &["--yes"]].concat()));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("written 150, filtered 50"),
        "expired ones too: {out}"
    );
    let raw = env
        .reader(&forced)
        .raw_until_quiet(Duration::from_secs(2), Duration::from_secs(60));
    let copies = decode_all::<NotificationRequest>(&env.codec, raw).await;
    assert_eq!(copies.len(), 150);
    assert!(
        copies
            .iter()
            .all(|c| c.value.event_id.contains("/replay-") && c.value.expires_at.is_none())
    );
    let _ = std::fs::remove_dir_all(state);
}
