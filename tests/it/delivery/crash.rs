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

    // 2. Killed after the ledger says `sent`, before the offset is committed (1 s cadence).
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
    kill(second);

    // A marker behind it on the same partition: once it is SENT, e2 has been redone or
    // was committed; either way APNs saw e2 once.
    let third = spawn(&config_file);
    let (e3, t3) = (format!("evt3-{id}"), device_token(&format!("{id}-3")));
    stack
        .send(&message(&e3, &user, DeliveryChannel::Apns, &t3))
        .await;
    let statuses = stack.wait_statuses(1, is(&e3, "APNS", Outcome::Sent)).await;
    kill(third);
    for t in [&t1, &t2, &t3] {
        assert_eq!(
            stack.delivered(Provider::Apns, t),
            1,
            "device {t} got {} messages",
            stack.delivered(Provider::Apns, t)
        );
    }
    let redone = statuses
        .iter()
        .filter(|s| s.event_id == e2 && s.reason.as_deref() == Some("already sent"))
        .count();
    eprintln!(
        "deliver_kill: e2 redone after the kill {redone} time(s) (0 = its offset was committed first)"
    );
    let _ = std::fs::remove_file(&config_file);
}
