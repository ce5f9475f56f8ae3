//! The schema registry answering errors (500, 504, 429, 401, 403) while a processor starts:
//! records wait for it instead of being dead-lettered, and the profile table does not skip
//! the record it could not decode, so an opt-out written before the request still applies.

use std::time::Duration;

use notify_runtime::records::{DeliveryStatus, Outcome};
use notify_tests::registry_proxy::RegistryProxy;
use notify_tests::{TestEnv, eventually};

use crate::stages_filter::{profile, request, stages, start_preferences};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_errors_hold_records_and_an_opt_out_written_before_still_applies() {
    let env = TestEnv::new("faults_registry").await;
    let mut s = stages(&env).await;
    let mut opted_out = profile("u-optout");
    opted_out.opt_out_categories = vec!["marketing".into()];
    env.produce(&s.users, "u-optout", &opted_out).await;
    let mut marketing = request("e-marketing", "u-optout");
    marketing.category = "marketing".into();
    env.produce(&s.requests, "u-optout", &marketing).await;
    // The registry is failing before the processor ever asks it (nothing cached yet).
    let proxy = RegistryProxy::start(&env.config.registry.url).await;
    proxy.fail_with(Some(500));
    s.config.registry.url = proxy.url.clone();
    let preferences = start_preferences(&env, &s).await;
    for status in [500, 504, 429, 401, 403] {
        proxy.fail_with(Some(status));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let refused = proxy.failed_requests();
    assert!(
        refused > 0,
        "the processor never asked the failing registry"
    );
    let early = env.reader(&s.status).raw(1, Duration::from_millis(200));
    assert!(
        early.is_empty(),
        "a status was written while the registry was down: {} records",
        early.len()
    );
    proxy.fail_with(None);
    let statuses = eventually(Duration::from_secs(60), async || {
        let got = env
            .reader(&s.status)
            .records::<DeliveryStatus>(&env.codec, 1, Duration::from_secs(2))
            .await;
        (!got.is_empty()).then_some(got)
    })
    .await
    .expect("the request is decided once the registry is back");
    let decided = &statuses[0].value;
    assert_eq!(decided.outcome, Outcome::Filtered, "{decided:?}");
    assert_eq!(
        decided.reason.as_deref(),
        Some(notify_preferences::decide::reason::OPT_OUT_CATEGORY),
        "the opt-out written before the request was skipped by the profile table: {decided:?}"
    );
    let dead = env
        .reader(&s.config.runtime.dlq_topic)
        .raw(1, Duration::from_secs(1));
    assert!(
        dead.is_empty(),
        "a valid record was dead-lettered while the registry failed"
    );
    let text = preferences.metrics_text();
    preferences.stop().await.expect("stops cleanly");
    assert!(
        text.contains("transient_errors"),
        "no transient errors were counted while the registry failed"
    );
    eprintln!("registry refused {refused} requests during the outage");
}
