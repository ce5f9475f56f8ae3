//! The CQL database frozen for 30 s in the middle of a run: the stage holds the records that
//! arrive meanwhile (no ledger decision, no output), then resumes by itself; afterwards every
//! distinct id is downstream exactly once.

use std::time::{Duration, Instant};

use notify_tests::{TestEnv, eventually};

use super::private_cql::PrivateCassandra;
use super::{assert_exactly_once, copies_per_id, count, produce, status_counts, topics, workload};

const OUTAGE: Duration = Duration::from_secs(30);

fn transient_errors(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("notify_transient_errors_total{") && l.contains("stage=\"dedup\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cql_down_30s_holds_records_then_passes_each_id_once() {
    let mut env = TestEnv::new("dedup_outage").await;
    let starting = tokio::task::spawn_blocking(|| PrivateCassandra::start("outage"));
    let t = topics(&env).await;
    let cql = starting.await.expect("private Cassandra starts");
    env.config.cql.nodes = vec![format!("127.0.0.1:{}", cql.port)];
    env.keyspace().await;
    let mut config = env.config.clone();
    config.runtime.status_topic = t.status.clone();
    config.runtime.dlq_topic = t.dlq.clone();
    let settings: toml::Table = [
        ("input", toml::Value::String(t.input.clone())),
        ("output", toml::Value::String(t.output.clone())),
        ("cql_timeout_ms", toml::Value::Integer(1_000)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    config
        .processors
        .insert("dedup".into(), toml::Value::Table(settings));
    let token = notify_runtime::CancellationToken::new();
    let metrics = notify_runtime::Metrics::new("dedup");
    let stage = notify_dedup::build(&config, &metrics, &token)
        .await
        .expect("dedup builds");
    let config = notify_dedup::with_lanes(config, notify_dedup::LANES);
    let running = env
        .start_stage(stage, "dedup", &[&t.input], config, metrics)
        .await;

    // Before: a normal run.
    let (before, mut distinct) = workload("before", 1_000, 20);
    produce(&env, &t.input, &before).await;
    let all_out = eventually(Duration::from_secs(60), async || {
        (count(&env, &t.output) >= distinct.len() as i64).then_some(())
    })
    .await;
    assert!(all_out.is_some(), "the first requests did not all pass");
    let out_before = count(&env, &t.output);

    // During: new ids, their duplicates, and copies of requests from before.
    cql.pause();
    let paused_at = Instant::now();
    let (mut during, during_ids) = workload("during", 1_000, 20);
    during.extend(before.iter().take(100).cloned());
    produce(&env, &t.input, &during).await;
    let held = eventually(OUTAGE, async || {
        (transient_errors(&running.metrics_text()) > 0.0).then_some(())
    })
    .await;
    // The outage itself lasts its full time; the stage is watched, not waited for.
    tokio::time::sleep(OUTAGE.saturating_sub(paused_at.elapsed())).await;
    let out_during = count(&env, &t.output);
    let errors = transient_errors(&running.metrics_text());
    cql.resume();
    assert!(
        held.is_some(),
        "no transient error while the database was down"
    );
    assert_eq!(
        out_during, out_before,
        "records went downstream without a ledger decision"
    );

    // After: everything held goes out, once.
    distinct.extend(during_ids);
    let resumed = eventually(Duration::from_secs(60), async || {
        (count(&env, &t.output) >= distinct.len() as i64).then_some(())
    })
    .await;
    let per_id = copies_per_id(&env, &t.output).await;
    let statuses = status_counts(&env, &t.status).await;
    eprintln!(
        "dedup_outage: {errors} transient errors during {OUTAGE:?}, {} distinct ids, statuses {statuses:?}, resumed after {:?}",
        distinct.len(),
        paused_at.elapsed()
    );
    assert!(
        resumed.is_some(),
        "the stage did not resume by itself: {} of {} ids downstream",
        count(&env, &t.output),
        distinct.len()
    );
    assert_exactly_once(&per_id, &distinct);
    running.stop().await.expect("dedup stops");
}
