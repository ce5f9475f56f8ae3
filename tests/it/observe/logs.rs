//! `notify --log-format json run chain`: one JSON object a line, a line per status event with
//! the event id, user id, stage and outcome as fields, and never a contact point.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use notify_runtime::records::{Outcome, Platform, UserProfile};
use notify_tests::records::{device, profile};

use crate::delivery::{Mail, Stack, device_token};
use crate::ops::notify;
use crate::pipeline::{Pipeline, stage_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_log_has_a_line_per_outcome_with_its_fields() {
    let stack = Stack::new("observe_logs", Mail::Smtp).await;
    let env = &stack.env;
    let names = [
        "requests",
        "users",
        "preferences",
        "deduped",
        "rendered",
        "limited",
        "deferred",
        "templates",
    ];
    let spec: Vec<(&str, i32)> = names.iter().map(|n| (*n, 1)).collect();
    let topics: BTreeMap<&str, String> = names
        .into_iter()
        .zip(env.create_topics(&spec).await)
        .collect();
    let config = stage_config(&stack, &topics);
    let templates =
        notify_cli::templates::load_dir(&notify_tests::repo_root().join("dev/templates"))
            .expect("demo templates");
    notify_cli::templates::push(&config, &topics["templates"], &templates)
        .await
        .expect("templates pushed");
    let dir = std::env::temp_dir().join(format!("notify-logs-{}", env.id));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (config_file, log_file) = (dir.join("notify.toml"), dir.join("chain.log"));
    let toml = toml::to_string(&config).expect("configuration as TOML");
    std::fs::write(&config_file, toml).expect("config written");

    let user = format!("{}-ana", env.id);
    let (email, phone, token) = (
        format!("{}@example.com", env.id.to_ascii_lowercase()),
        "+4915112345678".to_string(),
        device_token(&user),
    );
    let ana = UserProfile {
        email: Some(email.clone()),
        phone: Some(phone.clone()),
        ..profile(&user, vec![device(token.clone(), Platform::Ios)])
    };
    env.produce(&topics["users"], &user, &ana).await;

    let mut child = notify(env, &["--log-format", "json", "run", "chain"])
        .env("NOTIFY_CONFIG", &config_file)
        .env("NOTIFY_LOG", "info,notify::outcome=debug")
        .stderr(Stdio::from(
            std::fs::File::create(&log_file).expect("log file"),
        ))
        .spawn()
        .expect("chain starts");
    let mut delivered = Pipeline::request("j1", &user);
    delivered.channels = vec![];
    env.produce(&topics["requests"], &user, &delivered).await;
    env.produce(
        &topics["requests"],
        "nobody",
        &Pipeline::request("j2", "nobody"),
    )
    .await;
    stack
        .wait_statuses(1, |s| s.event_id == "j2" && s.outcome == Outcome::Filtered)
        .await;
    stack
        .wait_statuses(1, |s| s.event_id == "j1" && s.outcome == Outcome::Accepted)
        .await;
    // Past fan-out (which writes no status per message by default): the push message exists.
    let pushed = env
        .reader(&stack.apns)
        .raw(1, notify_tests::patient(Duration::from_secs(60)));
    assert_eq!(pushed.len(), 1, "the push message of j1");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    assert!(child.wait().expect("chain exits").success(), "clean stop");

    let log = std::fs::read_to_string(&log_file).expect("log readable");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "started"),
        "a start line: {log}"
    );
    let outcome = |event: &str, stage: &str, outcome: &str| {
        lines.iter().any(|l| {
            l["event_id"] == event
                && l["stage"] == stage
                && l["outcome"] == outcome
                && l["user_id"].is_string()
                && l["level"] == "DEBUG"
        })
    };
    assert!(outcome("j2", "preferences", "FILTERED"), "{log}");
    assert!(outcome("j1", "dedup", "ACCEPTED"), "{log}");
    for secret in [&email, &phone, &token] {
        assert!(!log.contains(secret.as_str()), "a contact point in the log");
    }
    if let Some(line) = log.lines().find(|l| l.contains("\"FILTERED\"")) {
        eprintln!("an outcome line: {line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
