//! The retry processor alone: records on the ladder and the deferral topic come back to
//! their origin when due, with the right headers; the rest is dead-lettered or expired.

use std::collections::HashMap;
use std::time::Duration;

use notify_runtime::dlq::{self, retry as h};
use notify_runtime::now_ms;
use notify_runtime::records::{ChannelMessage, DeliveryStatus, NotificationRequest, Outcome};
use notify_tests::{decode_all, eventually, headers_of};
use rdkafka::Message;

use super::{DELAYS_MS, Ladder, failure_headers, message, number, produce_with, stop};
use crate::foundation::request;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_come_back_to_their_origin_when_due() {
    let l = Ladder::new("retry_ladder", &DELAYS_MS).await;
    let (token, running) = l.start().await;
    let env = &l.env;
    let now = now_ms();
    let first = &l.steps[0];

    // a: first failure; b: second failure (delivery always writes to the first step).
    produce_with(
        env,
        first,
        "a",
        &message("evt-a"),
        &failure_headers(&l.origin, 1, now),
    )
    .await;
    produce_with(
        env,
        first,
        "b",
        &message("evt-b"),
        &failure_headers(&l.origin, 2, now),
    )
    .await;
    // f: a 429 with Retry-After 120 s: skips to the last step and waits there.
    let mut f = failure_headers(&l.origin, 1, now);
    f.push((h::RETRY_AFTER_MS.into(), "120000".into()));
    produce_with(env, first, "f", &message("evt-f"), &f).await;
    // c: a quiet-hours deferral of a request.
    let not_before = now + 1_500;
    let deferral = vec![
        (h::NOT_BEFORE.to_string(), not_before.to_string()),
        (h::ORIGIN_TOPIC.to_string(), l.origin.clone()),
    ];
    produce_with(
        env,
        &l.deferred,
        "c",
        &request("evt-c", "user-1"),
        &deferral,
    )
    .await;
    // d: expired while failing; e: out of attempts; g: no origin.
    let mut expired = message("evt-d");
    expired.expires_at = Some(now - 1_000);
    produce_with(
        env,
        first,
        "d",
        &expired,
        &failure_headers(&l.origin, 1, now),
    )
    .await;
    produce_with(
        env,
        first,
        "e",
        &message("evt-e"),
        &failure_headers(&l.origin, 4, now),
    )
    .await;
    let no_origin: Vec<(String, String)> = failure_headers(&l.origin, 1, now)
        .into_iter()
        .filter(|(k, _)| k != h::ORIGIN_TOPIC)
        .collect();
    produce_with(env, first, "g", &message("evt-g"), &no_origin).await;

    // The record that skipped ahead waits on the last step; a record behind it on the same
    // partition that is due sooner must not wait for it.
    let last = &l.steps[2];
    let moved = eventually(Duration::from_secs(30), async || {
        env.reader(last)
            .raw(1, Duration::from_secs(1))
            .into_iter()
            .next()
    })
    .await
    .expect("f moved to the last step");
    let mh = headers_of(&moved);
    assert!(number(&mh, h::NOT_BEFORE) >= now + 120_000, "{mh:?}");
    produce_with(
        env,
        last,
        "f",
        &message("evt-h"),
        &failure_headers(&l.origin, 3, now_ms()),
    )
    .await;

    let back = env.reader(&l.origin).raw(4, Duration::from_secs(60));
    let by_key: HashMap<String, _> = back
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m,
            )
        })
        .collect();
    assert_eq!(
        back.len(),
        4,
        "a, b, c and h come back: {:?}",
        by_key.keys()
    );
    for (key, step, delay) in [("a", 0, DELAYS_MS[0]), ("b", 1, DELAYS_MS[1])] {
        let hd = headers_of(by_key[key]);
        assert_eq!(number(&hd, h::STEP), step, "{key}: {hd:?}");
        let waited = number(&hd, h::FORWARDED_AT) - now;
        assert!(
            waited >= delay,
            "{key} came back after {waited} ms, step is {delay} ms"
        );
        let due = number(&hd, h::DUE_AT) - now;
        assert!(
            (delay..=delay + delay / 5).contains(&due),
            "{key}: due after {due} ms (jitter ≤ 20 %)"
        );
        assert_eq!(hd["trace"], "t-1", "other headers are kept");
        assert_eq!(hd[dlq::REASON], "503 Service Unavailable");
        assert!(!hd.contains_key(h::NOT_BEFORE) && !hd.contains_key(h::RETRY_AFTER_MS));
    }
    let hh = headers_of(by_key["f"]);
    assert_eq!(number(&hh, h::STEP), 2);
    let c = headers_of(by_key["c"]);
    assert!(number(&c, h::FORWARDED_AT) >= not_before, "{c:?}");
    let values = decode_all::<ChannelMessage>(&env.codec, vec![by_key["a"].clone()]).await;
    assert_eq!(values[0].value.event_id, "evt-a", "bytes unchanged");
    let deferred = decode_all::<NotificationRequest>(&env.codec, vec![by_key["c"].clone()]).await;
    assert_eq!(deferred[0].value.event_id, "evt-c");

    let dead = env.reader(&l.dlq).raw(2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2);
    let exhausted = dead
        .iter()
        .map(headers_of)
        .find(|hd| hd[dlq::CLASS] == "retries_exhausted")
        .expect("e is dead-lettered as retries_exhausted");
    for key in dlq::ALL_HEADERS {
        assert!(exhausted.contains_key(key), "{key} missing: {exhausted:?}");
    }
    assert_eq!(
        exhausted[dlq::SOURCE_TOPIC],
        l.origin,
        "redrive goes to the channel topic"
    );
    assert_eq!(exhausted[dlq::STAGE], "retry");
    assert_eq!(exhausted[dlq::ATTEMPTS], "4");
    assert!(exhausted[dlq::REASON].contains("503"), "{exhausted:?}");
    assert!(
        dead.iter()
            .map(headers_of)
            .any(|hd| hd[dlq::CLASS] == "validation")
    );

    let statuses = env
        .reader(&l.status)
        .records::<DeliveryStatus>(&env.codec, 3, Duration::from_secs(30))
        .await;
    let outcome = |id: &str| {
        statuses
            .iter()
            .find(|s| s.value.event_id == id)
            .map(|s| s.value.outcome)
    };
    assert_eq!(outcome("evt-d"), Some(Outcome::Expired));
    assert_eq!(outcome("evt-e"), Some(Outcome::DeadLettered));
    assert_eq!(outcome("evt-g"), Some(Outcome::DeadLettered));

    // f still waits (120 s), nothing else came back, and the metrics say so.
    let metrics = eventually(Duration::from_secs(10), async || {
        let text = running.metrics.render();
        (notify_tests::metric(&text, "notify_retry_held_records", &[]) == Some(1.0)).then_some(text)
    })
    .await
    .expect("one record held");
    for (name, label, value) in [
        ("notify_retry_scheduled_total", ("step", "1s"), 1.0),
        ("notify_retry_scheduled_total", ("step", "2s"), 1.0),
        ("notify_retry_scheduled_total", ("step", "3s"), 1.0),
        ("notify_retry_scheduled_total", ("step", "deferred"), 1.0),
        ("notify_retry_moved_total", ("step", "2s"), 1.0),
        ("notify_retry_moved_total", ("step", "3s"), 1.0),
        ("notify_retry_expired_total", ("step", "1s"), 1.0),
        (
            "notify_dead_letters_total",
            ("class", "retries_exhausted"),
            1.0,
        ),
        ("notify_dead_letters_total", ("class", "validation"), 1.0),
    ] {
        assert_eq!(
            notify_tests::metric(&metrics, name, &[label]),
            Some(value),
            "{name}{label:?} in\n{metrics}"
        );
    }
    let origin_again = env.reader(&l.origin).raw(5, Duration::from_secs(2));
    assert_eq!(origin_again.len(), 4, "f did not come back early");
    // The runtime's required metric set (lag appears with the first statistics, every 5 s).
    let complete = eventually(Duration::from_secs(20), async || {
        running.metrics.missing_required().is_empty().then_some(())
    })
    .await;
    assert!(
        complete.is_some(),
        "missing {:?}",
        running.metrics.missing_required()
    );
    stop(token, running).await;
}

/// A partition that holds the most records allowed is paused and resumed as they drain;
/// nothing is lost or returned twice on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_holding_too_many_is_paused_and_loses_nothing() {
    const N: usize = 40;
    // Long enough that the processor joins its group and reads the records before they are
    // due even on a loaded machine: a record read after its due time goes straight back
    // without being held, and then nothing would fill the partition up to the pause.
    const DELAY_MS: i64 = 6_000;
    let mut l = Ladder::new("retry_pause", &[DELAY_MS]).await;
    if let Some(toml::Value::Table(t)) = l.config.processors.get_mut(notify_retry::NAME) {
        t.insert("max_held_per_partition".into(), toml::Value::Integer(4));
    }
    let failed_at = now_ms();
    for i in 0..N {
        let headers = failure_headers(&l.origin, 1, failed_at);
        // One key: one partition.
        produce_with(
            &l.env,
            &l.steps[0],
            "same",
            &message(&format!("evt-{i}")),
            &headers,
        )
        .await;
    }
    let (token, running) = l.start().await;
    let reader = l.env.reader(&l.origin);
    let mut back = reader.raw(N, Duration::from_secs(60));
    back.extend(reader.raw_until_quiet(Duration::from_secs(2), Duration::from_secs(5)));
    let values = decode_all::<ChannelMessage>(&l.env.codec, back.clone()).await;
    let mut ids: Vec<String> = values.into_iter().map(|r| r.value.event_id).collect();
    ids.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("evt-{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "each record back exactly once");
    for m in &back {
        let waited = number(&headers_of(m), h::FORWARDED_AT) - failed_at;
        assert!(waited >= DELAY_MS, "back after {waited} ms");
    }
    let metrics = running.metrics.render();
    let pauses = notify_tests::metric(
        &metrics,
        "notify_retry_partition_pauses_total",
        &[("topic", &l.steps[0])],
    );
    assert!(
        pauses.is_some_and(|p| p >= 1.0),
        "the partition was paused: {metrics}"
    );
    stop(token, running).await;
}
