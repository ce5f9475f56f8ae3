//! Rebalance churn (instances of the chain and of the delivery processors added and removed
//! under load) and Cassandra taken away (frozen, then slowed by a stop/continue duty cycle):
//! the pipeline waits, recovers by itself, dead-letters nothing valid, loses and repeats
//! nothing.

use std::time::Duration;

use notify_runtime::now_ms;
use notify_tests::TestEnv;
use rand::Rng;

use super::chaos::{DELIVERY, Run, assert_clean, scaled};
use crate::dedup::private_cql::PrivateCassandra;
use crate::delivery::{Mail, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalance_churn_loses_and_repeats_nothing() {
    let run = Run::start("chaos_churn", 4, scaled(30)).await;
    let requests = scaled(300);
    let period = Duration::from_secs(6);
    let start = now_ms();
    let churn = async {
        let mut processors: Vec<&str> = vec![notify_chain::NAME];
        processors.extend(DELIVERY);
        for round in 0..scaled(5) {
            tokio::time::sleep(period).await;
            let p = processors[rand::rng().random_range(0..processors.len())];
            let mut fleet = run.fleet();
            let live = fleet.of(p);
            if live.len() > 1 && round % 2 == 1 {
                fleet.stop(live[0]);
                eprintln!("scaled {p} in");
            } else {
                fleet.spawn(p, &[]);
                eprintln!("scaled {p} out");
            }
        }
    };
    let (produced, ()) = tokio::join!(run.load(0, requests, 10.0), churn);
    let window = Some((start, now_ms()));
    let report = run.settle(produced, window, Duration::from_secs(240)).await;
    assert_clean("churn", &report);
    assert_eq!(report.missing_sent, 0, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cassandra_frozen_then_slowed_holds_records_and_dead_letters_none() {
    let starting = tokio::task::spawn_blocking(|| PrivateCassandra::start("chaos"));
    let mut env = TestEnv::new("chaos_cql").await;
    let cql = starting.await.expect("private Cassandra starts");
    env.config.cql.nodes = vec![format!("127.0.0.1:{}", cql.port)];
    let stack = Stack::in_env(env, Mail::SendGrid).await;
    let run = Run::start_on(stack, 4, scaled(30), |_| {}).await;
    let requests = scaled(200);
    let frozen = Duration::from_secs(scaled(12) as u64);
    let start = now_ms();
    let fault = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        cql.pause();
        eprintln!("Cassandra frozen");
        tokio::time::sleep(frozen).await;
        cql.resume();
        eprintln!("Cassandra back, slowed");
        // Slowed: runs a quarter of the time for as long again.
        let end = tokio::time::Instant::now() + frozen;
        while tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cql.pause();
            tokio::time::sleep(Duration::from_millis(300)).await;
            cql.resume();
        }
        eprintln!("Cassandra at full speed");
    };
    let (produced, ()) = tokio::join!(run.load(0, requests, 10.0), fault);
    let window = Some((start, now_ms()));
    let report = run.settle(produced, window, Duration::from_secs(300)).await;
    assert_clean("cassandra", &report);
    assert!(
        report.dead_letters.is_empty(),
        "valid records dead-lettered: {report:#?}"
    );
    assert!(
        run.fleet().exits.is_empty(),
        "a processor exited while Cassandra was away"
    );
}
