//! `notify run deliver-apns` as a child process, SIGKILLed during the provider call and
//! again between the ledger write and the offset commit: no device gets a second message.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    // The held call (5 s) ends before the lease (6 s): had the sandbox recorded the killed
    // call, it would have done so before the resend, and the count below would be 2.
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
    let claimed = eventually(Duration::from_secs(60), async || {
        let row = stack.ledger_row(&e1, "APNS", &t1).await?;
        let calls = stack
            .sandbox
            .stats()
            .requests
            .get(&Provider::Apns)
            .copied()
            .unwrap_or(0);
        (row.state == "sending" && calls >= 1).then_some(row)
    })
    .await
    .expect("the first attempt claims the row and calls APNs");
    assert_eq!(claimed.claims, 1);
    kill(first);

    // The restarted processor finds the row in `sending`, waits out the lease (6 s), sends.
    let second = spawn(&config_file);
    stack.wait_statuses(1, is(&e1, "APNS", Outcome::Sent)).await;
    let row = stack.ledger_row(&e1, "APNS", &t1).await.expect("row");
    assert_eq!((row.state.as_str(), row.claims), ("sent", 2), "{row:?}");
    assert_eq!(
        stack.delivered(Provider::Apns, &t1),
        1,
        "killed call plus resend"
    );

    kill(second);

    // 2. Killed after the ledger says `sent`, before the offset is committed: this run's
    // status topic does not exist yet (the broker does not create topics), so the status is
    // never acknowledged and the record's offset cannot be stored before the kill.
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
        let row = stack.ledger_row(&e2, "APNS", &t2).await?;
        (row.state == "sent").then_some(())
    })
    .await
    .expect("the second message is sent");
    kill(third);
    assert_eq!(stack.delivered(Provider::Apns, &t2), 1);

    // The restart redoes e2 (its offset was not committed) and answers it from the ledger.
    let fourth = spawn(&config_file);
    let redo = |s: &notify_runtime::records::DeliveryStatus| {
        is(&e2, "APNS", Outcome::Sent)(s) && s.reason.as_deref() == Some("already sent")
    };
    stack.wait_statuses(1, redo).await;
    kill(fourth);
    for t in [&t1, &t2] {
        assert_eq!(
            stack.delivered(Provider::Apns, t),
            1,
            "device {t} got {} messages",
            stack.delivered(Provider::Apns, t)
        );
    }
    let _ = std::fs::remove_file(&config_file);
    let _ = std::fs::remove_file(&late_file);
}
