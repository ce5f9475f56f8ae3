//! SIGKILL of `notify run retry` while records wait: after a restart every record comes back
//! exactly once, and none earlier than its step's delay.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use notify_runtime::dlq::retry as h;
use notify_runtime::now_ms;
use notify_tests::{eventually, headers_of, notify_bin};
use rdkafka::Message;

use super::{Ladder, failure_headers, message, number, produce_with};

/// Starts `notify run retry` with `config`; returns it and its metrics URL.
pub fn spawn_retry(config: &notify_runtime::Config, dir: &std::path::Path) -> (Child, String) {
    let port = notify_runtime::http::unused_loopback_port().expect("a free port");
    let mut config = config.clone();
    config.http.listen = format!("127.0.0.1:{port}");
    let path = dir.join(format!("retry-{port}.toml"));
    std::fs::write(&path, toml::to_string(&config).expect("config as TOML")).expect("write config");
    let child = Command::new(notify_bin())
        .args(["run", "retry", "--config"])
        .arg(&path)
        .env("NOTIFY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("notify starts");
    (child, format!("http://127.0.0.1:{port}/metrics"))
}

/// The value of metric `name` (any labels) at `url`.
pub async fn metric(url: &str, name: &str) -> Option<f64> {
    notify_tests::scrape(url, name, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_records_wait_loses_none_and_sends_none_twice() {
    const N: usize = 30;
    const DELAY: i64 = 6_000;
    let l = Ladder::new("retry_sigkill", &[DELAY, 2 * DELAY]).await;
    let dir = std::env::temp_dir().join(format!("notify-{}", l.env.id));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let failed_at = now_ms();
    for i in 0..N {
        let headers = failure_headers(&l.origin, 1, failed_at);
        produce_with(
            &l.env,
            &l.steps[0],
            &format!("user-{i}"),
            &message(&format!("evt-{i}")),
            &headers,
        )
        .await;
    }
    let (mut first, url) = spawn_retry(&l.config, &dir);
    let held = eventually(Duration::from_secs(30), async || {
        metric(&url, "notify_retry_held_records")
            .await
            .filter(|n| *n as usize == N)
    })
    .await;
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    assert_eq!(
        held,
        Some(N as f64),
        "every record was held before the kill"
    );
    let killed_at = now_ms();
    assert!(
        killed_at < failed_at + DELAY,
        "the kill came while the records waited"
    );
    let reader = l.env.reader(&l.origin);
    assert!(
        reader.raw(1, Duration::from_millis(500)).is_empty(),
        "nothing came back before the kill"
    );

    let (mut second, _) = spawn_retry(&l.config, &dir);
    let mut back = reader.raw(N, Duration::from_secs(90));
    back.extend(reader.raw_until_quiet(Duration::from_secs(3), Duration::from_secs(10)));
    second.kill().ok();
    let _ = second.wait();

    let mut count: HashMap<String, usize> = HashMap::new();
    for m in &back {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        *count.entry(key).or_default() += 1;
        let hd = headers_of(m);
        let waited = number(&hd, h::FORWARDED_AT) - failed_at;
        assert!(
            waited >= DELAY,
            "came back after {waited} ms, the step is {DELAY} ms"
        );
    }
    let missing: Vec<usize> = (0..N)
        .filter(|i| !count.contains_key(&format!("user-{i}")))
        .collect();
    let twice: Vec<&String> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    eprintln!(
        "retry sigkill: {} back, {} missing, {} twice",
        back.len(),
        missing.len(),
        twice.len()
    );
    assert!(missing.is_empty(), "lost {missing:?}");
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
