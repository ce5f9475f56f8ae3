//! End to end with the SMS delivery processor, the provider sandbox (fault injection) and the
//! retry processor: steps of 1, 2 and 3 s.

use std::collections::HashMap;
use std::time::Duration;

use notify_cli::dlq::{Filter, redrive};
use notify_runtime::dlq::{self, retry as h};
use notify_runtime::records::{DeliveryChannel, DeliveryStatus, Outcome};
use notify_runtime::{CancellationToken, Config};
use notify_sandbox::{FaultSpec, Provider};
use notify_tests::{eventually, headers_of};
use rdkafka::message::OwnedMessage;

use super::crash::{metric, spawn_retry};
use super::{DELAYS_MS, number, settings};
use crate::delivery::{Mail, Stack, Started, is, message};

/// The delivery stack plus the retry processor's configuration: its first step is the
/// delivery processors' retry topic.
async fn stack(name: &str) -> (Stack, Config) {
    let stack = Stack::new(name, Mail::Smtp).await;
    let mut steps = vec![stack.retry.clone()];
    steps.extend(
        stack
            .env
            .create_topics(&[("rstep1", 1), ("rstep2", 1), ("rdeferred", 1)])
            .await,
    );
    let deferred = steps.pop().unwrap();
    let mut config = stack.config.clone();
    config.processors.insert(
        notify_retry::NAME.into(),
        settings(&steps, &DELAYS_MS, &deferred),
    );
    (stack, config)
}

async fn start_retry(config: &Config) -> Started {
    let token = CancellationToken::new();
    let running = notify_retry::start(config.clone(), token.clone())
        .await
        .expect("retry processor starts");
    Started { token, running }
}

/// The records the retry processor returned to the channel topic, in order.
fn returned(stack: &Stack, n: usize) -> Vec<OwnedMessage> {
    stack
        .env
        .reader(&stack.sms)
        .raw(n + 1, Duration::from_secs(5))
        .into_iter()
        .filter(|m| headers_of(m).contains_key(h::FORWARDED_AT))
        .collect()
}

fn phone(stack: &Stack, n: u32) -> String {
    let digits: u32 = stack.env.id.bytes().map(u32::from).sum::<u32>() % 10_000;
    format!("+49151{digits:04}{n:04}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_three_times_then_succeeding_arrives_once_after_three_steps() {
    let (stack, retry_config) = stack("retry_e2e_three").await;
    let phone = phone(&stack, 1);
    let event = format!("evt-3x-{}", stack.env.id);
    stack.sandbox.add_fault(
        FaultSpec::new(Provider::Twilio)
            .token(&phone)
            .status(503)
            .times(3),
    );
    let sms = stack
        .start(DeliveryChannel::Sms, stack.config.clone())
        .await;
    let retry = start_retry(&retry_config).await;
    stack
        .send(&message(&event, "user-1", DeliveryChannel::Sms, &phone))
        .await;

    let statuses = stack
        .wait_statuses(1, is(&event, "SMS", Outcome::Sent))
        .await;
    let mine: Vec<&DeliveryStatus> = statuses.iter().filter(|s| s.event_id == event).collect();
    let scheduled: Vec<i32> = mine
        .iter()
        .filter(|s| s.outcome == Outcome::RetryScheduled)
        .map(|s| s.attempt)
        .collect();
    assert_eq!(scheduled, vec![1, 2, 3], "{mine:#?}");
    let sent = mine.iter().find(|s| s.outcome == Outcome::Sent).unwrap();
    assert_eq!(sent.attempt, 4);

    // Back on the channel topic three times, once per step, never before the step's delay.
    let back = returned(&stack, 3);
    assert_eq!(back.len(), 3);
    for (step, m) in back.iter().enumerate() {
        let hd = headers_of(m);
        assert_eq!(number(&hd, h::STEP), step as i64, "{hd:?}");
        assert_eq!(number(&hd, dlq::ATTEMPTS), step as i64 + 1);
        let waited = number(&hd, h::FORWARDED_AT) - number(&hd, h::LAST_FAILURE_AT);
        assert!(
            waited >= DELAYS_MS[step],
            "step {step}: back after {waited} ms"
        );
    }
    let last_return = number(&headers_of(&back[2]), h::FORWARDED_AT);
    tokio::time::sleep(Duration::from_secs(2)).await; // a late duplicate would show by now
    let delivered = stack.sandbox.messages(Some(Provider::Twilio));
    let delivered: Vec<_> = delivered.iter().filter(|m| m.recipient == phone).collect();
    assert_eq!(delivered.len(), 1, "arrives once");
    assert!(
        delivered[0].received_at >= last_return,
        "not before the third step"
    );
    retry.stop().await;
    sms.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn always_failing_is_dead_lettered_and_a_redrive_delivers_once() {
    let (stack, retry_config) = stack("retry_e2e_dead").await;
    let phone = phone(&stack, 2);
    let event = format!("evt-dead-{}", stack.env.id);
    stack
        .sandbox
        .add_fault(FaultSpec::new(Provider::Twilio).token(&phone).status(503));
    let sms = stack
        .start(DeliveryChannel::Sms, stack.config.clone())
        .await;
    let retry = start_retry(&retry_config).await;
    stack
        .send(&message(&event, "user-1", DeliveryChannel::Sms, &phone))
        .await;

    stack
        .wait_statuses(1, is(&event, "SMS", Outcome::DeadLettered))
        .await;
    let dead = stack.env.reader(&stack.dlq).raw(1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1);
    let hd = headers_of(&dead[0]);
    for key in dlq::ALL_HEADERS {
        assert!(hd.contains_key(key), "{key} missing: {hd:?}");
    }
    assert_eq!(hd[dlq::CLASS], "retries_exhausted");
    assert_eq!(hd[dlq::STAGE], "retry");
    assert_eq!(hd[dlq::SOURCE_TOPIC], stack.sms);
    assert_eq!(
        hd[dlq::ATTEMPTS],
        "4",
        "the configured attempts: one per step plus the first"
    );
    assert!(hd[dlq::REASON].contains("503"), "{hd:?}");
    assert!(number(&hd, dlq::FIRST_FAILURE_AT) > 0);
    assert_eq!(stack.delivered(Provider::Twilio, &phone), 0);
    let metrics = retry.running.metrics.render();
    assert_eq!(
        notify_tests::metric(
            &metrics,
            "notify_dead_letters_total",
            &[("class", "retries_exhausted")]
        ),
        Some(1.0),
        "{metrics}"
    );

    // The provider recovers; the dead letter goes back to the channel topic.
    stack.sandbox.clear_faults();
    let filter = Filter {
        topic: Some(stack.dlq.clone()),
        classes: vec!["retries_exhausted".into()],
        event_ids: vec![event.clone()],
        ..Filter::default()
    };
    let report = redrive(&stack.config, &filter, false, |_, _| {})
        .await
        .expect("redrive");
    assert_eq!(report.moved, 1);
    stack
        .wait_statuses(1, is(&event, "SMS", Outcome::Sent))
        .await;
    assert_eq!(stack.delivered(Provider::Twilio, &phone), 1);

    // A second redrive of the same dead letter: the ledger knows it was sent.
    redrive(&stack.config, &filter, false, |_, _| {})
        .await
        .expect("redrive");
    let statuses = stack
        .wait_statuses(2, is(&event, "SMS", Outcome::Sent))
        .await;
    assert!(
        statuses
            .iter()
            .any(|s| s.event_id == event && s.reason.as_deref() == Some("already sent")),
        "{statuses:#?}"
    );
    assert_eq!(
        stack.delivered(Provider::Twilio, &phone),
        1,
        "delivered exactly once"
    );
    retry.stop().await;
    sms.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_with_retry_after_120s_skips_the_shorter_steps() {
    let (stack, retry_config) = stack("retry_e2e_429").await;
    let phone = phone(&stack, 3);
    let event = format!("evt-429-{}", stack.env.id);
    stack.sandbox.add_fault(
        FaultSpec::new(Provider::Twilio)
            .token(&phone)
            .status(429)
            .retry_after_secs(120)
            .times(1),
    );
    let sms = stack
        .start(DeliveryChannel::Sms, stack.config.clone())
        .await;
    let retry = start_retry(&retry_config).await;
    stack
        .send(&message(&event, "user-1", DeliveryChannel::Sms, &phone))
        .await;

    let steps = match retry_config.processor::<notify_retry::Settings>(notify_retry::NAME) {
        Ok(s) => s.steps,
        Err(e) => panic!("{e}"),
    };
    let moved = eventually(Duration::from_secs(60), async || {
        stack
            .env
            .reader(&steps[2].topic)
            .raw(1, Duration::from_millis(500))
            .into_iter()
            .next()
    })
    .await
    .expect("moved to the last step");
    let hd = headers_of(&moved);
    assert_eq!(number(&hd, h::RETRY_AFTER_MS), 120_000);
    let not_before = number(&hd, h::NOT_BEFORE);
    assert!(
        not_before - number(&hd, h::LAST_FAILURE_AT) >= 120_000,
        "{hd:?}"
    );
    assert!(
        stack
            .env
            .reader(&steps[1].topic)
            .raw(1, Duration::from_secs(1))
            .is_empty(),
        "the 2 s step is skipped"
    );
    let held = eventually(Duration::from_secs(10), async || {
        let text = retry.running.metrics.render();
        (notify_tests::metric(&text, "notify_retry_held_records", &[]) == Some(1.0)).then_some(text)
    })
    .await
    .expect("held on the last step");
    let m = |name: &str, step: &str| notify_tests::metric(&held, name, &[("step", step)]);
    assert_eq!(m("notify_retry_moved_total", "3s"), Some(1.0), "{held}");
    assert_eq!(m("notify_retry_scheduled_total", "1s"), Some(0.0), "{held}");
    // Longer than every short step: nothing came back and nothing was sent.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(returned(&stack, 1).is_empty());
    assert_eq!(stack.delivered(Provider::Twilio, &phone), 0);
    retry.stop().await;
    sms.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_retry_processor_while_records_wait_loses_none_and_sends_none_twice() {
    const N: u32 = 12;
    let (stack, mut retry_config) = stack("retry_e2e_kill").await;
    // A first step long enough to kill the processor while every record waits on it.
    let steps: Vec<String> = {
        let s: notify_retry::Settings = retry_config.processor(notify_retry::NAME).unwrap();
        s.steps.into_iter().map(|s| s.topic).collect()
    };
    let delays = [6_000, 7_000, 8_000];
    retry_config
        .processors
        .insert(notify_retry::NAME.into(), settings(&steps, &delays, ""));
    let dir = std::env::temp_dir().join(format!("notify-{}", stack.env.id));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let phones: Vec<String> = (0..N).map(|i| phone(&stack, 100 + i)).collect();
    for p in &phones {
        stack.sandbox.add_fault(
            FaultSpec::new(Provider::Twilio)
                .token(p)
                .status(503)
                .times(1),
        );
    }
    let sms = stack
        .start(DeliveryChannel::Sms, stack.config.clone())
        .await;
    let (mut first, url) = spawn_retry(&retry_config, &dir);
    for (i, p) in phones.iter().enumerate() {
        let event = format!("evt-kill-{i}-{}", stack.env.id);
        stack
            .send(&message(&event, "user-1", DeliveryChannel::Sms, p))
            .await;
    }
    let held = eventually(Duration::from_secs(60), async || {
        metric(&url, "notify_retry_held_records")
            .await
            .filter(|n| *n as u32 == N)
    })
    .await;
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    assert_eq!(
        held,
        Some(N as f64),
        "all records waited when the processor was killed"
    );
    assert!(
        returned(&stack, N as usize).is_empty(),
        "none had come back before the kill"
    );

    let (mut second, _) = spawn_retry(&retry_config, &dir);
    let sent = eventually(Duration::from_secs(90), async || {
        let n = phones
            .iter()
            .filter(|p| stack.delivered(Provider::Twilio, p) > 0)
            .count();
        (n == N as usize).then_some(n)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // a late duplicate would show by now
    second.kill().ok();
    let _ = second.wait();
    let counts: HashMap<&String, usize> = phones
        .iter()
        .map(|p| (p, stack.delivered(Provider::Twilio, p)))
        .collect();
    eprintln!("retry kill e2e: {counts:?}");
    assert_eq!(sent, Some(N as usize), "every message arrived: {counts:?}");
    assert!(counts.values().all(|n| *n == 1), "none twice: {counts:?}");
    sms.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
