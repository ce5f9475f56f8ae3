//! `notify run deliver-apns` as a child process, SIGKILLed during the provider call (the
//! message is in doubt: FAILED and dead-lettered, never resent) and between the ledger write
//! and the commit (answered from the ledger): no device gets a second message.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use notify_delivery::ledger::State;
use notify_runtime::records::{DeliveryChannel, Outcome};
use notify_sandbox::{FaultSpec, Provider};
use notify_tests::{eventually, notify_bin};

use super::{Mail, Stack, device_token, is, message};

fn spawn(config_file: &std::path::Path) -> Child {
    Command::new(notify_bin())
        .args(["run", "deliver-apns", "--config"])
        .arg(config_file)
        .env("NOTIFY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("notify starts")
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_call_and_before_commit_sends_once() {
    let stack = Stack::new("deliver_kill", Mail::SendGrid).await;
    let id = stack.env.id.clone();
    let config_file = std::env::temp_dir().join(format!("notify-delivery-{id}.toml"));
    // The held call (5 s) ends before the lease (6 s): whatever the killed call did, it is
    // over by the time the next owner settles the message.
    let mut config = stack.config.clone();
    if let Some(toml::Value::Table(t)) = config.processors.get_mut("deliver-apns") {
        t.insert("lease_ms".into(), toml::Value::Integer(6_000));
        if let Some(toml::Value::Table(p)) = t.get_mut("provider") {
            p.insert("timeout_ms".into(), toml::Value::Integer(5_500));
        }
    }
    let text = toml::to_string(&config).expect("config serialises");
    std::fs::write(&config_file, text).expect("config written");
    let user = format!("user-{id}");

    // 1. Killed while the provider is answering (the sandbox holds the call for 5 s).
    let (e1, t1) = (format!("evt1-{id}"), device_token(&format!("{id}-1")));
    stack.sandbox.add_fault(
        FaultSpec::new(Provider::Apns)
            .token(&t1)
            .latency_ms(5_000)
            .times(1),
    );
    let first = spawn(&config_file);
    stack
        .send(&message(&e1, &user, DeliveryChannel::Apns, &t1))
        .await;
    // The claim is the partition's range claim (taken before any call), so the call itself is
    // the sign that the message was claimed: no per-message row exists until an outcome.
    eventually(Duration::from_secs(60), async || {
        let calls = stack
            .sandbox
            .stats()
            .requests
            .get(&Provider::Apns)
            .copied()
            .unwrap_or(0);
        (calls >= 1).then_some(())
    })
    .await
    .expect("the first attempt claims the message and calls APNs");
    kill(first);

    // The next owner finds the claim of an earlier epoch without an outcome: it waits out the
    // lease (the earlier owner might still finish it), then the message is in doubt: FAILED
    // with the reason, a dead letter of class in_doubt, and no second call.
    let second = spawn(&config_file);
    let failed = stack
        .wait_statuses(1, is(&e1, "APNS", Outcome::Failed))
        .await;
    let reason = failed
        .iter()
        .find(|s| s.event_id == e1)
        .and_then(|s| s.reason.clone())
        .unwrap_or_default();
    assert!(reason.starts_with("in doubt"), "{reason}");
    let row = stack
        .ledger_row(&e1, &user, "APNS", &t1)
        .await
        .expect("row");
    assert_eq!(row.state, State::InDoubt, "{row:?}");
    let calls = stack
        .sandbox
        .stats()
        .requests
        .get(&Provider::Apns)
        .copied()
        .unwrap_or(0);
    assert_eq!(calls, 1, "the provider was called once, never again");
    let dead = stack.env.reader(&stack.dlq).raw(1, Duration::from_secs(30));
    assert_eq!(
        dead.first()
            .and_then(|m| notify_tests::headers_of(m)
                .get("notify.error.class")
                .cloned())
            .as_deref(),
        Some("in_doubt")
    );
    kill(second);

    // 2. Killed after the ledger says `sent`, before the outputs commit: this run's status
    // topic does not exist yet (the broker does not create topics), so its transaction cannot
    // commit before the kill.
    let late_status = stack.env.topic("status-late");
    let mut late = config.clone();
    late.runtime.status_topic = late_status.clone();
    let late_file = std::env::temp_dir().join(format!("notify-delivery-{id}-late.toml"));
    let text = toml::to_string(&late).expect("config serialises");
    std::fs::write(&late_file, text).expect("config written");
    let third = spawn(&late_file);
    let (e2, t2) = (format!("evt2-{id}"), device_token(&format!("{id}-2")));
    stack
        .send(&message(&e2, &user, DeliveryChannel::Apns, &t2))
        .await;
    eventually(Duration::from_secs(60), async || {
        let row = stack.ledger_row(&e2, &user, "APNS", &t2).await?;
        (row.state == State::Sent).then_some(())
    })
    .await
    .expect("the second message is sent");
    kill(third);
    assert_eq!(stack.delivered(Provider::Apns, &t2), 1);

    // The restart redoes e2 (its offset was not committed) and answers it from the ledger:
    // one SENT, read committed, and no second message.
    let fourth = spawn(&config_file);
    let redo = |s: &notify_runtime::records::DeliveryStatus| {
        is(&e2, "APNS", Outcome::Sent)(s) && s.reason.as_deref() == Some("already sent")
    };
    let all = stack.wait_statuses(1, redo).await;
    kill(fourth);
    assert_eq!(
        all.iter()
            .filter(|s| is(&e2, "APNS", Outcome::Sent)(s))
            .count(),
        1,
        "one SENT for e2"
    );
    assert_eq!(stack.delivered(Provider::Apns, &t2), 1, "e2 once");
    assert!(stack.delivered(Provider::Apns, &t1) <= 1, "e1 at most once");
    let _ = std::fs::remove_file(&config_file);
    let _ = std::fs::remove_file(&late_file);
}
