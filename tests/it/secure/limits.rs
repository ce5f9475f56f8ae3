//! Input limits: a record over `runtime.max_record_bytes` and one whose length prefix claims
//! a terabyte are dead-lettered (the processor goes on); a JSON line nested ten thousand deep
//! is refused by `notify produce` with its line number. HTML and script in template variables:
//! processors/templates/src/render.rs (`variables_with_script_or_template_syntax_stay_inert_in_html`)
//! and tests/it/stages_render/table.rs ("escape").

use std::collections::HashMap;
use std::time::Duration;

use notify_passthrough::AvroPassThrough;
use notify_runtime::dlq;
use notify_runtime::records::NotificationRequest;
use notify_tests::{TestEnv, headers_of};
use rdkafka::Message;

use crate::foundation::request;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversize_and_malformed_records_are_dead_lettered() {
    let env = TestEnv::new("limits").await;
    let [input, output, dlq_topic] = env
        .create_topics(&[("in", 1), ("out", 1), ("dlq", 1)])
        .await
        .try_into()
        .unwrap();
    let mut config = env.config.clone();
    config.runtime.dlq_topic = dlq_topic.clone();
    config.runtime.max_record_bytes = 4096;
    let running = env
        .start_with(
            AvroPassThrough {
                output: output.clone(),
            },
            "passthrough",
            &[&input],
            config,
        )
        .await;

    // 1. A valid request, but 10 KB of template data: over the limit, not even decoded.
    let mut big = request("evt-big", "user-big");
    big.data = [("blob".to_string(), "x".repeat(10_000))].into();
    env.produce(&input, "user-big", &big).await;
    // 2. The request schema's wire header, then an event id claiming 2^40 bytes.
    let good = request("evt-good", "user-good");
    let valid = env.codec.encode(&input, &good).await.expect("encode");
    let mut claim = valid[..5].to_vec();
    let mut n: u64 = (1u64 << 40) << 1; // zigzag
    while n >= 0x80 {
        claim.push((n as u8) | 0x80);
        n >>= 7;
    }
    claim.push(n as u8);
    claim.extend_from_slice(b"short");
    env.produce_bytes(&input, Some("k-claim"), Some(&claim), None, &[])
        .await;
    // 3. A good record after both.
    env.produce(&input, "user-good", &good).await;

    let out = env
        .reader(&output)
        .records::<NotificationRequest>(&env.codec, 1, Duration::from_secs(30))
        .await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value, good, "the processor went on");
    let dead = env.reader(&dlq_topic).raw(2, Duration::from_secs(30));
    let by_key: HashMap<String, _> = dead
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m,
            )
        })
        .collect();
    let big_dl = headers_of(by_key["user-big"]);
    assert_eq!(big_dl[dlq::CLASS], "validation", "{big_dl:?}");
    assert!(
        big_dl[dlq::REASON].contains("max_record_bytes"),
        "{big_dl:?}"
    );
    assert!(
        by_key["user-big"]
            .payload()
            .is_some_and(|p| p.len() > 10_000)
    );
    let claim_dl = headers_of(by_key["k-claim"]);
    assert!(
        ["decode", "schema"].contains(&claim_dl[dlq::CLASS].as_str()),
        "{claim_dl:?}"
    );
    running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_by_its_line() {
    let env = TestEnv::new("nested").await;
    let [topic] = env
        .create_topics(&[("requests", 1)])
        .await
        .try_into()
        .unwrap();
    let deep = format!(
        "{{\"event_id\":{}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let good = serde_json::to_string(&serde_json::json!({
        "event_id": "evt-1", "user_id": "u1", "category": "billing", "template_id": "invoice_due",
        "data": {}, "channels": [], "priority": "NORMAL", "source": "test"
    }))
    .unwrap();
    let input = format!("{deep}\n{good}\n");
    let report = notify_cli::produce::produce(
        &env.config,
        notify_cli::produce::Kind::Request,
        &topic,
        input.as_bytes(),
        |_| {},
    )
    .await
    .expect("produce runs");
    assert_eq!(report.bad.len(), 1, "{:?}", report.bad);
    assert_eq!(report.bad[0].line, 1);
    assert!(
        report.bad[0].reason.contains("recursion"),
        "{:?}",
        report.bad
    );
    let on_topic = env
        .reader(&topic)
        .raw_until_quiet(Duration::from_secs(2), Duration::from_secs(20));
    assert_eq!(
        on_topic.len(),
        report.produced,
        "only the good line is on the topic"
    );
}
