//! Dependencies away under load: the schema registry answering 503 (with the chain and a
//! delivery processor restarted meanwhile, so their schema caches are cold), the provider
//! sandbox storming (half its answers 503, 429 with Retry-After, a slow p99, calls accepted
//! and then left without an answer): the pipeline
//! waits and retries, dead-letters nothing that is valid, loses nothing and sends nothing twice.

use std::time::Duration;

use notify_runtime::now_ms;
use notify_sandbox::{FaultSpec, Provider};
use notify_tests::registry_proxy::RegistryProxy;

use super::chaos::{Run, assert_clean, scaled};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_registry_down_holds_records_and_dead_letters_none() {
    let upstream = notify_tests::TestEnv::new("chaos_registry_probe")
        .await
        .config
        .registry
        .url;
    let proxy = RegistryProxy::start(&upstream).await;
    let url = proxy.url.clone();
    let run = Run::start_with("chaos_registry", 4, scaled(30), |c| c.registry.url = url).await;
    let requests = scaled(200);
    let outage = Duration::from_secs(scaled(10) as u64);
    let start = now_ms();
    let fault = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.fail_with(Some(503));
        // A clean restart (a rolling upgrade during the outage): the new instances start
        // with cold schema caches. SIGKILL is the kill scenarios' business; here it could
        // leave a claimed, uncalled message in doubt, which is not what this test is about.
        for p in [notify_chain::NAME, "deliver-sms"] {
            let mut fleet = run.fleet();
            let i = fleet.of(p)[0];
            fleet.stop(i);
            fleet.spawn(p, &[]);
        }
        eprintln!("registry down, chain and deliver-sms restarted");
        tokio::time::sleep(outage).await;
        proxy.fail_with(None);
        eprintln!("registry back");
    };
    let (produced, ()) = tokio::join!(run.load(0, requests, 10.0), fault);
    let window = Some((start, now_ms()));
    let report = run.settle(produced, window, Duration::from_secs(240)).await;
    assert!(proxy.failed_requests() > 0, "nothing asked the registry");
    assert_clean("registry down", &report);
    assert!(report.dead_letters.is_empty(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_storms_delay_but_lose_and_repeat_nothing() {
    let run = Run::start("chaos_storm", 4, scaled(30)).await;
    let sandbox = &run.p.stack.sandbox;
    let requests = scaled(200);
    let storm = Duration::from_secs(scaled(15) as u64);
    let start = now_ms();
    let fault = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        sandbox.add_fault(FaultSpec::new(Provider::Apns).status(503).ratio(0.5));
        sandbox.add_fault(
            FaultSpec::new(Provider::Twilio)
                .status(429)
                .retry_after_secs(1),
        );
        sandbox.add_fault(FaultSpec::new(Provider::Fcm).latency_ms(5_000).ratio(0.02));
        sandbox.add_fault(FaultSpec::new(Provider::Sendgrid).status(503).ratio(0.5));
        // Accepted, then no answer within the client's timeout (8 s): in doubt, not resent.
        sandbox.add_fault(
            FaultSpec::new(Provider::Apns)
                .after_accept()
                .latency_ms(9_000)
                .times(3),
        );
        eprintln!("storm");
        tokio::time::sleep(storm).await;
        sandbox.clear_faults();
        eprintln!("calm");
    };
    let (produced, ()) = tokio::join!(run.load(0, requests, 10.0), fault);
    let window = Some((start, now_ms()));
    let report = run.settle(produced, window, Duration::from_secs(300)).await;
    assert_clean("provider storm", &report);
}
