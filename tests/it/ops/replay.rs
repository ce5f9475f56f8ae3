//! `notify replay` on the real stack: interrupted (SIGINT) and crashed (SIGKILL) runs resume
//! and copy every record exactly once; `--dry-run` writes nothing and its counts are what the
//! run then does.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use notify_cli::replay::{Checkpoint, RUN_HEADER, SOURCE_HEADER};
use notify_runtime::records::NotificationRequest;
use notify_tests::{TestEnv, decode_all, eventually, headers_of};
use rdkafka::message::OwnedMessage;

use super::{notify, produce_requests, records_in, request_lines, run};

/// Every committed record of `topic` (read until 2 s pass without one).
fn committed(env: &TestEnv, topic: &str) -> Vec<OwnedMessage> {
    env.reader(topic)
        .raw_until_quiet(Duration::from_secs(2), Duration::from_secs(120))
}

/// The one run id whose checkpoint is in `dir`.
fn only_run(dir: &Path) -> String {
    let runs: Vec<String> = std::fs::read_dir(dir)
        .expect("state dir")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(String::from)
        })
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

/// Starts a replay, signals it once `target` holds more than `after` records, waits for it.
async fn interrupt(env: &TestEnv, args: &[&str], target: &str, after: i64, signal: &str) -> i32 {
    let mut child = notify(env, args).spawn().expect("replay starts");
    let grew = eventually(Duration::from_secs(60), async || {
        (records_in(env, target) > after).then_some(())
    })
    .await;
    assert!(grew.is_some(), "the replay copied nothing to {target}");
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("replay exits");
    use std::os::unix::process::ExitStatusExt;
    exit.code().or(exit.signal().map(|s| -s)).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_interrupted_then_crashed_resumes_and_copies_every_record_once() {
    let env = TestEnv::new("replay_resume").await;
    let [source, target] = env
        .create_topics(&[("requests", 3), ("replayed", 3)])
        .await
        .try_into()
        .expect("two topics");
    let total = 3_000;
    produce_requests(&env, &source, &request_lines(&env.id, total, 300)).await;
    let state = std::env::temp_dir().join(format!("notify-replay-{}", env.id));
    let state_dir = state.to_string_lossy().to_string();
    let base = ["replay", "--source", &source, "--state-dir", &state_dir];

    // 1. Ctrl-C at about a fifth: exit 130 with a checkpoint that matches what was committed.
    // The rates leave seconds between the signal's threshold and the end, so a slow poll of
    // the watermarks on a loaded box still signals a run that is going.
    let args = [&base[..], &["--target", &target, "--rate", "500"]].concat();
    let code = interrupt(&env, &args, &target, 600, "-INT").await;
    assert_eq!(code, 130, "an interrupted replay exits 130");
    let run_id = only_run(&state);
    let checkpoint = Checkpoint::load(&state, &run_id).expect("checkpoint written");
    assert!(!checkpoint.finished);
    let first = committed(&env, &target);
    assert!(
        first.len() < total,
        "interrupted before the end: {}",
        first.len()
    );
    assert_eq!(
        checkpoint.totals().written,
        first.len() as u64,
        "checkpoint = what is committed"
    );

    // 2. Resumed, then killed outright (no chance to write its checkpoint).
    let resume = [&base[..], &["--resume", &run_id]].concat();
    let paced = [&resume[..], &["--rate", "250"]].concat();
    let code = interrupt(&env, &paced, &target, first.len() as i64 + 300, "-KILL").await;
    assert_eq!(code, -9);

    // 3. Resumed to the end.
    let (code, out, err) = run(notify(&env, &resume));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains(&format!("read {total}, written {total}, filtered 0")),
        "{out}"
    );
    let copies = committed(&env, &target);
    let sources: HashSet<String> = copies
        .iter()
        .filter_map(|m| headers_of(m).get(SOURCE_HEADER).cloned())
        .collect();
    assert_eq!(copies.len(), total, "every record copied exactly once");
    assert_eq!(sources.len(), total, "no source record copied twice");
    assert!(
        copies
            .iter()
            .all(|m| headers_of(m).get(RUN_HEADER) == Some(&run_id))
    );
    let decoded = decode_all::<NotificationRequest>(&env.codec, copies).await;
    let ids: HashSet<&str> = decoded.iter().map(|r| r.value.event_id.as_str()).collect();
    assert_eq!(ids.len(), total, "copies keep their event ids");
    let (code, out, _) = run(notify(&env, &resume));
    assert_eq!(code, Some(0));
    assert!(out.contains("already finished"), "{out}");
    let _ = std::fs::remove_dir_all(state);
}
