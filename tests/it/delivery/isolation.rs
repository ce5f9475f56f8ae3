//! A provider answering slowly (2 s a call) holds only its own channel: the others keep
//! delivering meanwhile. Shown by counts per channel, not by timing.

use std::time::Duration;

use notify_runtime::records::DeliveryChannel;
use notify_sandbox::{FaultSpec, Provider};
use notify_tests::eventually;

use super::{Mail, Stack, device_token, message};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_provider_stalls_only_its_own_channel() {
    const SLOW: usize = 30;
    const FAST: usize = 10;
    let stack = Stack::new("deliver_slow", Mail::SendGrid).await;
    let id = stack.env.id.clone();
    stack
        .sandbox
        .add_fault(FaultSpec::new(Provider::Apns).latency_ms(2_000));
    // APNs gets one lane: in flight at most one call, so 30 messages take a minute.
    let mut apns_config = stack.config.clone();
    apns_config.runtime.lanes = 1;
    apns_config.runtime.max_in_flight = 1;
    let mut running = vec![stack.start(DeliveryChannel::Apns, apns_config).await];
    for channel in [
        DeliveryChannel::Fcm,
        DeliveryChannel::Sms,
        DeliveryChannel::Email,
    ] {
        running.push(stack.start(channel, stack.config.clone()).await);
    }
    for i in 0..SLOW {
        let token = device_token(&format!("{id}-{i}"));
        stack
            .send(&message(
                &format!("a{i}-{id}"),
                "u",
                DeliveryChannel::Apns,
                &token,
            ))
            .await;
    }
    for i in 0..FAST {
        let user = format!("user-{i}");
        stack
            .send(&message(
                &format!("f{i}-{id}"),
                &user,
                DeliveryChannel::Fcm,
                &format!("fcm-{id}-{i}"),
            ))
            .await;
        stack
            .send(&message(
                &format!("s{i}-{id}"),
                &user,
                DeliveryChannel::Sms,
                &format!("+49151{i:08}"),
            ))
            .await;
        stack
            .send(&message(
                &format!("m{i}-{id}"),
                &user,
                DeliveryChannel::Email,
                &format!("u{i}@example.com"),
            ))
            .await;
    }
    let count = |p: Provider| stack.sandbox.messages(Some(p)).len();
    let fast = [Provider::Fcm, Provider::Twilio, Provider::Sendgrid];
    eventually(Duration::from_secs(120), async || {
        fast.iter().all(|p| count(*p) >= FAST).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("fast channels stalled: {:?}", fast.map(count)));
    let apns_meanwhile = count(Provider::Apns);
    eprintln!(
        "deliver_slow: when FCM, SMS and e-mail had {FAST} each, APNs had {apns_meanwhile} of {SLOW}"
    );
    assert!(apns_meanwhile < SLOW, "APNs was not slow at all");
    for p in fast {
        assert_eq!(count(p), FAST, "{p:?}");
    }

    // The slow channel was stalled, not broken: once the provider is fast it catches up.
    stack.sandbox.clear_faults();
    eventually(Duration::from_secs(120), async || {
        (count(Provider::Apns) >= SLOW).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("APNs did not catch up: {}", count(Provider::Apns)));
    assert_eq!(count(Provider::Apns), SLOW);
    let metrics = running[0].running.metrics.render();
    assert!(
        metrics.contains("notify_provider_latency_seconds_bucket{channel=\"APNS\""),
        "{metrics}"
    );
    for r in running {
        r.stop().await;
    }
}
