//! A chain or delivery instance paused with SIGSTOP past its session timeout while another
//! instance takes its partitions over, then resumed: the stale instance sends nothing a second
//! time and its outputs never count (its transaction is fenced, its ledger epoch is old).

use std::time::Duration;

use notify_runtime::now_ms;

use super::chaos::{Run, assert_clean, scaled};

/// Two instances of `processor`; the first is paused for 25 s (the session timeout is 10 s)
/// in the middle of the load, then resumed.
async fn pause_one_of_two(name: &str, processor: &str) {
    let run = Run::start(name, 4, scaled(30)).await;
    run.fleet().spawn(processor, &[]);
    run.ready().await;
    let requests = scaled(300);
    let start = now_ms();
    let fault = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let first = run.fleet().of(processor)[0];
        run.fleet().pause(first);
        eprintln!("SIGSTOP {processor}");
        tokio::time::sleep(Duration::from_secs(25)).await;
        run.fleet().resume(first);
        eprintln!("SIGCONT {processor}");
    };
    let (produced, ()) = tokio::join!(run.load(0, requests, 10.0), fault);
    let window = Some((start, now_ms()));
    let report = run.settle(produced, window, Duration::from_secs(240)).await;
    assert_clean(name, &report);
    assert_eq!(report.missing_sent, 0, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_paused_past_its_session_timeout_causes_no_second_output() {
    pause_one_of_two("chaos_pause_chain", notify_chain::NAME).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_paused_past_its_session_timeout_sends_nothing_twice() {
    pause_one_of_two("chaos_pause_delivery", "deliver-fcm").await;
}
