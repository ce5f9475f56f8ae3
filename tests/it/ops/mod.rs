//! The operator commands of issue 14 against the real stack: backfill, replay, offsets and
//! trace, run as the `notify` binary (target/debug/notify) the way an operator runs them.

mod backfill;
mod dry_run;
mod offsets;
mod pipeline;
mod redelivery;
mod replay;
mod trace;

use std::process::{Command, Output, Stdio};

use notify_runtime::records::NotificationRequest;
use notify_tests::{TestEnv, notify_bin};

/// `notify` with this test's stack, keyspace and prefix; topics are passed as flags.
pub fn notify(env: &TestEnv, args: &[&str]) -> Command {
    let mut c = Command::new(notify_bin());
    c.args(args)
        .env(
            "NOTIFY_KAFKA__BOOTSTRAP_SERVERS",
            &env.config.kafka.bootstrap_servers,
        )
        .env("NOTIFY_KAFKA__GROUP_PREFIX", &env.config.kafka.group_prefix)
        .env("NOTIFY_REGISTRY__URL", &env.config.registry.url)
        .env("NOTIFY_CQL__NODES", format!("{:?}", env.config.cql.nodes))
        .env("NOTIFY_CQL__KEYSPACE", &env.config.cql.keyspace)
        .env("NOTIFY_HTTP__LISTEN", "127.0.0.1:0")
        .env("NOTIFY_LOG", "warn")
        .stdin(Stdio::null());
    c
}

/// Runs to the end; returns the exit code and what it printed (stdout, stderr).
pub fn run(mut command: Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("notify runs");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// `n` requests as JSON lines for `notify produce`/`backfill`, event ids `<prefix>-<i>`.
pub fn request_lines(prefix: &str, n: usize, users: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut r: NotificationRequest = crate::foundation::request(
                &format!("{prefix}-{i}"),
                &format!("user-{}", i % users),
            );
            r.created_at = notify_runtime::now_ms();
            serde_json::to_string(&r).expect("request is JSON")
        })
        .collect()
}

/// Produces JSON lines of requests to `topic` (through `notify produce`'s library function).
pub async fn produce_requests(env: &TestEnv, topic: &str, lines: &[String]) {
    let input = std::io::Cursor::new(lines.join("\n"));
    let report = notify_cli::produce::produce(
        &env.config,
        notify_cli::produce::Kind::Request,
        topic,
        input,
        |_| {},
    )
    .await
    .expect("requests produced");
    assert!(report.bad.is_empty(), "{:?}", report.bad);
    assert_eq!(report.produced, lines.len());
}

/// How many records a topic holds (for topics written without transactions).
pub fn records_in(env: &TestEnv, topic: &str) -> i64 {
    let consumer = notify_cli::scan::reader(&env.config, "ops-count").expect("reader");
    let partitions = notify_cli::scan::partitions(&consumer, topic).expect("topic exists");
    let marks = notify_cli::scan::watermarks(&consumer, topic, &partitions).expect("watermarks");
    marks.values().map(|(low, high)| high - low).sum()
}
