//! A demo run of the default deployment (the chain, retry, the four delivery processors), then
//! every processor's `/metrics`: the shared families with the processor as a label, each
//! stage's own decisions with the stage as a label, librdkafka's statistics, process metrics,
//! and the dashboard's queries resolving against what was scraped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use notify_runtime::records::Outcome;
use notify_tests::{eventually, metric};

use crate::pipeline::{Mode, Pipeline};

/// Families (`# TYPE` names) of a scrape.
pub fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// `/metrics` of every processor of `p`, by name.
pub async fn scrape_all(p: &Pipeline) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, url) in &p.metrics {
        let text = reqwest::get(url)
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("{name}: {url}: {e}"))
            .text()
            .await
            .expect("metrics text");
        out.insert(name.clone(), text);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_processor_exports_the_families_and_the_dashboard_resolves() {
    // Statistics every second instead of five, so the librdkafka gauges come quickly.
    let p = Pipeline::start_configured("observe_metrics", Mode::Chain, 2, |c| {
        for m in [&mut c.kafka.consumer, &mut c.kafka.producer] {
            m.insert("statistics.interval.ms".into(), "1000".into());
        }
    })
    .await;
    let env = &p.stack.env;
    let (ana, ben) = (format!("{}-ana", env.id), format!("{}-ben", env.id));
    p.add_user(&ana, None).await;
    p.add_user(&ben, Some("billing")).await;
    // The demo's mix: delivered, a duplicate, an opted-out category, an unknown user.
    for (event, user) in [
        ("m1", ana.as_str()),
        ("m1", ana.as_str()),
        ("m2", ben.as_str()),
        ("m3", "nobody"),
    ] {
        p.send(&Pipeline::request(event, user)).await;
    }
    p.stack
        .wait_statuses(1, |s| s.event_id == "m1" && s.outcome == Outcome::Sent)
        .await;
    p.stack
        .wait_statuses(3, |s| {
            matches!(s.outcome, Outcome::Duplicate | Outcome::Filtered)
        })
        .await;
    // The gauges of librdkafka's statistics and the lag arrive with the next statistics.
    let lacking = |s: &BTreeMap<String, String>| -> Vec<String> {
        s.iter()
            .filter(|(_, t)| {
                metric(t, "notify_kafka_broker_up", &[("client", "consumer")]).is_none()
                    || metric(t, "notify_consumer_lag_records", &[]).is_none()
            })
            .map(|(n, _)| n.clone())
            .collect()
    };
    let mut last = BTreeMap::new();
    let scrapes = eventually(Duration::from_secs(30), async || {
        last = scrape_all(&p).await;
        lacking(&last).is_empty().then(|| last.clone())
    })
    .await
    .unwrap_or_else(|| {
        let names = lacking(&last);
        panic!("no broker state or lag from {names:?}: {}", last[&names[0]])
    });

    let (chain, apns) = (&scrapes["chain"], &scrapes["deliver-apns"]);
    for (name, text) in &scrapes {
        let have = families(text);
        for family in notify_runtime::metrics::REQUIRED {
            assert!(have.contains(family), "{name} lacks {family}");
        }
        let processor = [("processor", name.as_str())];
        assert_eq!(
            metric(text, "notify_build_info", &processor),
            Some(1.0),
            "{name}"
        );
        assert!(metric(text, "process_resident_memory_bytes", &processor) > Some(0.0));
        assert!(metric(text, "process_open_fds", &processor) > Some(0.0));
        assert!(have.contains("process_cpu_seconds_total"), "{name}");
        assert!(have.contains("notify_kafka_broker_rtt_seconds"), "{name}");
    }
    let count =
        |text: &str, name: &str, labels: &[(&str, &str)]| metric(text, name, labels).unwrap_or(0.0);
    let consumed = [
        ("processor", "chain"),
        ("topic", p.topics["requests"].as_str()),
    ];
    assert_eq!(
        count(chain, "notify_records_consumed_total", &consumed),
        4.0
    );
    assert!(count(chain, "notify_records_produced_total", &[]) > 0.0);
    assert!(count(chain, "notify_end_to_end_latency_seconds_count", &[]) > 0.0);
    let decided = |stage: &str, decision: &str| {
        count(
            chain,
            "notify_stage_decisions_total",
            &[("stage", stage), ("decision", decision)],
        )
    };
    assert_eq!(decided("preferences", "routed"), 2.0, "{chain}");
    assert_eq!(decided("dedup", "accepted"), 1.0);
    assert_eq!(decided("dedup", "duplicate"), 1.0);
    assert_eq!(decided("preferences", "opt_out_category"), 1.0, "{chain}");
    assert_eq!(decided("preferences", "unknown_user"), 1.0);
    // Decisions about one channel of a request carry the channel.
    let decided_on = |stage: &str, decision: &str, channel: &str| {
        count(
            chain,
            "notify_stage_decisions_total",
            &[
                ("stage", stage),
                ("decision", decision),
                ("channel", channel),
            ],
        )
    };
    assert_eq!(decided_on("templates", "rendered", "PUSH"), 1.0, "{chain}");
    assert_eq!(decided_on("templates", "failed", "PUSH"), 0.0);
    assert_eq!(decided_on("ratelimit", "passed", "PUSH"), 1.0, "{chain}");
    assert_eq!(decided_on("fanout", "fanned_out", "APNS"), 1.0, "{chain}");
    assert_eq!(decided_on("fanout", "fanned_out", "FCM"), 0.0);
    assert!(count(chain, "notify_dedup_lookups_total", &[]) >= 2.0);
    assert!(count(chain, "notify_dedup_ledger_seconds_count", &[]) > 0.0);
    assert!(metric(chain, "notify_consumer_lag_records", &consumed[..1]).is_some());
    assert!(count(chain, "notify_kafka_broker_up", &[("client", "producer")]) >= 1.0);
    let sent = [("channel", "APNS"), ("outcome", "sent")];
    assert_eq!(count(apns, "notify_provider_requests_total", &sent), 1.0);
    assert!(count(apns, "notify_provider_latency_seconds_count", &[]) > 0.0);
    let sent = [("outcome", "SENT")];
    assert_eq!(count(apns, "notify_delivery_outcomes_total", &sent), 1.0);
    assert!(count(apns, "notify_end_to_end_latency_seconds_count", &[]) > 0.0);

    // The dashboard names only metrics some processor exports.
    let exported: BTreeSet<String> = scrapes.values().flat_map(|t| families(t)).collect();
    let missing = super::dashboard::unresolved(&exported);
    assert!(missing.is_empty(), "dashboard queries name {missing:?}");
    // Labels stay bounded: no user id in any series.
    for text in scrapes.values() {
        assert!(!text.contains(&ana), "a user id in the metrics");
    }
    p.stop().await;
}
