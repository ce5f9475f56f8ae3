//! `notify dlq inspect|redrive` on a private dead-letter topic.

use std::time::Duration;

use notify_cli::dlq::{Filter, read, redrive};
use notify_runtime::dlq::{self, retry as h};
use notify_runtime::now_ms;
use notify_runtime::records::ChannelMessage;
use notify_tests::{decode_all, headers_of, notify_bin};

use super::{Ladder, failure_headers, message, produce_with};

/// Dead letters as the retry processor and an earlier stage write them.
async fn seed(l: &Ladder) -> i64 {
    let failed_at = now_ms() - 60_000;
    let mut exhausted = failure_headers(&l.origin, 4, failed_at);
    for (k, v) in [
        (dlq::STAGE, "retry"),
        (dlq::CLASS, "retries_exhausted"),
        (dlq::SOURCE_TOPIC, l.origin.as_str()),
        (dlq::SOURCE_PARTITION, "0"),
        (dlq::SOURCE_OFFSET, "7"),
    ] {
        exhausted.push((k.to_string(), v.to_string()));
    }
    exhausted.push((h::STEP.into(), "2".into()));
    produce_with(&l.env, &l.dlq, "user-1", &message("evt-dead"), &exhausted).await;
    let poison = [
        (dlq::STAGE, "dedup"),
        (dlq::CLASS, "decode"),
        (dlq::REASON, "not Confluent wire format"),
        (dlq::SOURCE_TOPIC, "elsewhere"),
        (dlq::SOURCE_PARTITION, "1"),
        (dlq::SOURCE_OFFSET, "9"),
        (dlq::ATTEMPTS, "1"),
    ];
    l.env
        .produce_bytes(&l.dlq, Some("k"), Some(b"noise"), None, &poison)
        .await;
    failed_at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inspect_filters_and_redrive_returns_records_to_their_source() {
    let l = Ladder::new("retry_dlq_cli", &[1_000]).await;
    let failed_at = seed(&l).await;
    let filter = |f: Filter| Filter {
        topic: Some(l.dlq.clone()),
        ..f
    };

    let all = read(&l.config, &filter(Filter::default()))
        .await
        .expect("read");
    assert_eq!(all.len(), 2);
    let by_class = read(
        &l.config,
        &filter(Filter {
            classes: vec!["retries_exhausted".into()],
            ..Filter::default()
        }),
    )
    .await
    .expect("read");
    assert_eq!(by_class.len(), 1);
    assert_eq!(
        by_class[0].event_id.as_deref(),
        Some("evt-dead"),
        "decoded event id"
    );
    assert_eq!(by_class[0].attempts, Some(4));
    assert_eq!(by_class[0].failed_at_ms, Some(failed_at));
    let by_event = read(
        &l.config,
        &filter(Filter {
            event_ids: vec!["evt-dead".into()],
            stages: vec!["retry".into()],
            since: Some(failed_at - 1),
            until: Some(failed_at + 1),
            ..Filter::default()
        }),
    )
    .await
    .expect("read");
    assert_eq!(by_event.len(), 1);
    let none = read(
        &l.config,
        &filter(Filter {
            stages: vec!["dedup".into()],
            classes: vec!["retries_exhausted".into()],
            ..Filter::default()
        }),
    )
    .await
    .expect("read");
    assert!(none.is_empty());

    // The binary prints JSON lines.
    let out = std::process::Command::new(notify_bin())
        .args([
            "dlq", "inspect", "--format", "json", "--class", "decode", "--topic", &l.dlq,
        ])
        .env(
            "NOTIFY_KAFKA__BOOTSTRAP_SERVERS",
            &l.config.kafka.bootstrap_servers,
        )
        .env("NOTIFY_REGISTRY__URL", &l.config.registry.url)
        .output()
        .expect("notify dlq inspect runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["stage"], "dedup");
    assert_eq!(lines[0]["source_topic"], "elsewhere");

    let exhausted = filter(Filter {
        classes: vec!["retries_exhausted".into()],
        ..Filter::default()
    });
    let dry = redrive(&l.config, &exhausted, true, |_, _| {})
        .await
        .expect("dry run");
    assert_eq!((dry.selected, dry.moved), (1, 1));
    let origin = l.env.reader(&l.origin);
    assert!(
        origin.raw(1, Duration::from_secs(2)).is_empty(),
        "a dry run moves nothing"
    );

    let mut progress = Vec::new();
    let report = redrive(&l.config, &exhausted, false, |done, total| {
        progress.push((done, total))
    })
    .await
    .expect("redrive");
    assert_eq!(report.moved, 1);
    assert_eq!(report.by_topic.get(&l.origin), Some(&1));
    assert_eq!(progress, vec![(1, 1)]);
    let back = origin.raw(1, Duration::from_secs(30));
    assert_eq!(back.len(), 1);
    let hd = headers_of(&back[0]);
    for gone in dlq::ALL_HEADERS
        .into_iter()
        .chain([h::STEP, h::ORIGIN_TOPIC])
    {
        assert!(
            !hd.contains_key(gone),
            "{gone} left on the redriven record: {hd:?}"
        );
    }
    assert!(hd.contains_key(h::REDRIVEN_AT));
    assert_eq!(hd["trace"], "t-1");
    let value = decode_all::<ChannelMessage>(&l.env.codec, back).await;
    assert_eq!(value[0].value.event_id, "evt-dead", "the event id is kept");
}
