//! Processors SIGKILLed under load: at random moments (the chain and every delivery
//! processor, restarted at once as a supervisor would), and at the named crash points a random
//! kill rarely hits (`NOTIFY_FAULT`: between the provider call and the ledger write, between
//! the ledger write and the commit, between the offsets sent to a transaction and its commit).
//! Nothing lost, nothing sent twice, no status event twice. A kill of a deliverer between its
//! claim and its outcome leaves those messages in doubt (FAILED "in doubt" and a dead letter
//! under the default policy, never resent): the random kills may land there, so they are
//! allowed, but only as in-doubt dead letters and only after a deliverer was killed.

use std::time::Duration;

use notify_runtime::now_ms;
use rand::Rng;

use super::chaos::{DELIVERY, Run, assert_clean, scaled};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_chain_and_delivery_at_random_moments() {
    let run = Run::start("chaos_sigkill", 4, scaled(30)).await;
    let requests = scaled(240);
    let kills = scaled(6);
    let start = now_ms();
    let mut delivery_kills = 0;
    let faults = async {
        for _ in 0..kills {
            let pause = rand::rng().random_range(1_000..3_000);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let mut fleet = run.fleet();
            let mut candidates = fleet.of(notify_chain::NAME);
            for d in DELIVERY {
                candidates.extend(fleet.of(d));
            }
            let victim = candidates[rand::rng().random_range(0..candidates.len())];
            let name = fleet.kill(victim);
            eprintln!("SIGKILL {name}");
            if name != notify_chain::NAME {
                delivery_kills += 1;
            }
            fleet.spawn(&name, &[]);
        }
    };
    let (produced, ()) = tokio::join!(run.load(0, requests, 20.0), faults);
    let window = Some((start, now_ms()));
    let report = run.settle(produced, window, Duration::from_secs(240)).await;
    assert_clean("sigkill", &report);
    let in_doubt = report.dead_letters.get("in_doubt").copied().unwrap_or(0);
    let others: Vec<_> = report
        .dead_letters
        .keys()
        .filter(|class| *class != "in_doubt")
        .collect();
    assert!(
        others.is_empty(),
        "dead letters other than in doubt: {report:#?}"
    );
    assert!(
        report.missing_sent <= in_doubt,
        "a delivered message without SENT that was not declared in doubt: {report:#?}"
    );
    assert!(
        in_doubt == 0 || delivery_kills > 0,
        "in doubt without a deliverer killed: {report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashes_inside_the_delivery_and_commit_windows() {
    let run = Run::start("chaos_crash_points", 4, scaled(30)).await;
    // Re-arm the processors with their crash points (the first instances ran clean so the
    // run became ready).
    {
        let mut fleet = run.fleet();
        // Ledger rows and commits go in batches, so the per-batch points get higher odds.
        let arm = [
            (notify_chain::NAME, "txn.before_commit:0.05"),
            ("deliver-apns", "delivery.after_call:0.03"),
            ("deliver-fcm", "delivery.after_ledger:0.05"),
            ("deliver-sms", "txn.before_commit:0.05"),
            ("deliver-email", "delivery.after_ledger:0.05"),
        ];
        for (processor, fault) in arm {
            for i in fleet.of(processor) {
                fleet.kill(i);
            }
            fleet.spawn(processor, &[("NOTIFY_FAULT", fault)]);
        }
    }
    let requests = scaled(240);
    let start = now_ms();
    let supervise = async {
        let mut t = tokio::time::interval(Duration::from_millis(300));
        let end = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < end {
            t.tick().await;
            run.supervise();
        }
    };
    let (produced, ()) = tokio::join!(run.load(0, requests, 20.0), supervise);
    let crashes: usize = run.fleet().exits.values().sum();
    let window = Some((start, now_ms()));
    // Disarm and let the pipeline finish (an armed processor keeps crashing while it drains).
    {
        let mut fleet = run.fleet();
        for i in 0..fleet.instances.len() {
            if fleet.instances[i].pid().is_some() {
                let name = fleet.kill(i);
                fleet.spawn(&name, &[]);
            }
        }
    }
    let report = run.settle(produced, window, Duration::from_secs(240)).await;
    eprintln!("{crashes} crashes at fault points");
    assert!(crashes >= 3, "the fault points fired only {crashes} times");
    assert_clean("crash points", &report);
}
