//! `notify backfill`: 10,000 requests with 3 bad lines load 9,997 and name the 3; `--strict`
//! loads nothing.

use std::collections::HashSet;
use std::time::Duration;

use notify_runtime::records::NotificationRequest;
use notify_tests::TestEnv;

use super::{notify, records_in, request_lines, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_reports_bad_lines_by_number_and_loads_the_rest_unless_strict() {
    let env = TestEnv::new("backfill").await;
    let [loose, strict] = env
        .create_topics(&[("requests", 3), ("strict", 3)])
        .await
        .try_into()
        .expect("two topics");
    let mut lines = request_lines(&env.id, 10_000, 500);
    // Line numbers count from 1: lines 17, 4242 and 9999 are bad, each for its own reason.
    lines[16] = "{\"event_id\": \"broken\"".into();
    lines[4241] = lines[4241].replace("\"user_id\"", "\"uid\"");
    lines[9998] = lines[9998].replace("\"HIGH\"", "\"URGENT\"");
    let file = std::env::temp_dir().join(format!("{}.jsonl", env.id));
    std::fs::write(&file, lines.join("\n")).expect("file written");
    let path = file.to_string_lossy().to_string();

    let started = std::time::Instant::now();
    let (code, out, err) = run(notify(&env, &["backfill", &path, "--topic", &loose]));
    eprintln!("backfill of 10,000 lines took {:?}", started.elapsed());
    assert_eq!(
        code,
        Some(1),
        "a rejected line fails the exit code\n{out}\n{err}"
    );
    for line in [17, 4242, 9999] {
        assert!(
            err.contains(&format!("{path}:{line}: ")),
            "line {line} not reported:\n{err}"
        );
    }
    assert_eq!(err.matches(&format!("{path}:")).count(), 3, "{err}");
    assert!(out.contains("9997 written, 3 rejected"), "{out}");
    assert_eq!(records_in(&env, &loose), 9_997);
    let reader = env.reader(&loose);
    let loaded = reader
        .records::<NotificationRequest>(&env.codec, 9_997, Duration::from_secs(60))
        .await;
    let ids: HashSet<&str> = loaded.iter().map(|r| r.value.event_id.as_str()).collect();
    assert_eq!(ids.len(), 9_997, "every good line once");
    assert!(!ids.contains(format!("{}-4241", env.id).as_str()));
    assert!(ids.contains(format!("{}-4240", env.id).as_str()));
    assert!(
        loaded
            .iter()
            .all(|r| r.key.as_deref() == Some(r.value.user_id.as_str())),
        "keyed by user id"
    );

    let (code, out, err) = run(notify(
        &env,
        &["backfill", &path, "--topic", &strict, "--strict"],
    ));
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        out.contains("0 written, 3 rejected (--strict: nothing written)"),
        "{out}"
    );
    assert_eq!(records_in(&env, &strict), 0, "--strict wrote nothing");

    // Without the bad lines, --strict loads everything and exits 0.
    lines.remove(9998);
    lines.remove(4241);
    lines.remove(16);
    std::fs::write(&file, lines.join("\n")).expect("file written");
    let (code, out, err) = run(notify(
        &env,
        &["backfill", &path, "--topic", &strict, "--strict"],
    ));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(records_in(&env, &strict), 9_997);
    let _ = std::fs::remove_file(file);
}
