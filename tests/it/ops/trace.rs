//! `notify trace` tells each notification's story: filtered, duplicate, rate-limited,
//! retried-then-sent and dead-lettered, from the status topic, the retry topic, the dead
//! letters and the delivery ledger.
//!
//! Ledger rows of delivered and failed messages are asserted in `redelivery.rs` (it needs
//! issue 12's `delivery_messages` writes); here the ledger must be readable and hold nothing
//! for requests that never reached a sender.

use notify_runtime::records::{DeliveryStatus, Outcome};
use notify_sandbox::{FaultSpec, Provider};
use serde_json::Value;

use super::pipeline::Pipeline;
use super::{notify, run};

/// `notify trace EVENT --format json` for the pipeline's topics.
pub(super) fn trace(p: &Pipeline, event: &str) -> Value {
    let s = &p.stack;
    let args = [
        "trace",
        event,
        "--format",
        "json",
        "--status-topic",
        &s.status,
        "--dlq-topic",
        &s.dlq,
        "--retry-topic",
        &s.retry,
        "--retry-topic",
        &p.topics["deferred"],
    ];
    let (code, out, err) = run(notify(&s.env, &args));
    assert_eq!(code, Some(0), "trace {event}: {out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("trace {event} is not JSON ({e}): {out}"))
}

/// The steps' `what` in time order, e.g. ["ACCEPTED", "RETRY_SCHEDULED", "held", "SENT"].
pub(super) fn story(t: &Value) -> Vec<String> {
    t["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["what"].as_str().unwrap_or("").to_string())
        .collect()
}

pub(super) fn ledger_states(t: &Value) -> Vec<String> {
    assert!(t["ledger_error"].is_null(), "the ledger is readable: {t:#}");
    t["ledger"]
        .as_array()
        .expect("ledger")
        .iter()
        .map(|r| r["state"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trace_tells_the_story_of_filtered_duplicate_limited_retried_and_dead_lettered() {
    let p = Pipeline::start("ops_trace").await;
    p.add_user("opted", Some("billing")).await;
    p.add_user("dup", None).await;
    p.add_user("limited", None).await;
    let retried = p.add_user("retried", None).await;
    let dead = p.add_user("dead", None).await;
    let sandbox = &p.stack.sandbox;
    sandbox.add_fault(
        FaultSpec::new(Provider::Apns)
            .token(retried)
            .status(503)
            .times(1),
    );
    sandbox.add_fault(
        FaultSpec::new(Provider::Apns)
            .token(dead.clone())
            .status(503)
            .times(100),
    );
    let mut requests = vec![
        Pipeline::request("e-filtered", "opted"),
        Pipeline::request("e-dup", "dup"),
        Pipeline::request("e-dup", "dup"),
        Pipeline::request("e-retried", "retried"),
        Pipeline::request("e-dead", "dead"),
    ];
    requests.extend((0..4).map(|i| Pipeline::request(&format!("e-limited-{i}"), "limited")));
    for r in &requests {
        p.send(r).await;
    }
    let ends: [(&str, Outcome); 5] = [
        ("e-filtered", Outcome::Filtered),
        ("e-dup", Outcome::Duplicate),
        ("e-limited-3", Outcome::RateLimited),
        ("e-retried", Outcome::Sent),
        ("e-dead", Outcome::DeadLettered),
    ];
    let done = |s: &DeliveryStatus| {
        ends.iter()
            .any(|(e, o)| s.event_id == *e && s.outcome == *o)
    };
    p.stack.wait_statuses(ends.len(), done).await;

    let filtered = trace(&p, "e-filtered");
    assert!(
        story(&filtered).contains(&"FILTERED".to_string()),
        "{filtered:#}"
    );
    assert!(
        ledger_states(&filtered).is_empty(),
        "a filtered request reaches no sender"
    );

    let dup = trace(&p, "e-dup");
    let s = story(&dup);
    assert!(
        s.contains(&"SENT".into()) && s.contains(&"DUPLICATE".into()),
        "{dup:#}"
    );

    let limited = trace(&p, "e-limited-3");
    assert!(
        story(&limited).contains(&"RATE_LIMITED".to_string()),
        "{limited:#}"
    );
    assert!(ledger_states(&limited).is_empty());

    let retried = trace(&p, "e-retried");
    let s = story(&retried);
    let at = |w: &str| {
        s.iter()
            .position(|x| x == w)
            .unwrap_or_else(|| panic!("no {w} in {s:?}"))
    };
    assert!(
        at("RETRY_SCHEDULED") < at("held") && at("held") < at("SENT"),
        "{retried:#}"
    );

    let dead_trace = trace(&p, "e-dead");
    let s = story(&dead_trace);
    assert!(
        s.contains(&"DEAD_LETTERED".into()) && s.contains(&"retries_exhausted".into()),
        "{dead_trace:#}"
    );
    let letter = dead_trace["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["source"] == "dead letter");
    let letter = letter.expect("the dead letter is in the trail");
    assert!(
        letter["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{letter:#}"
    );
    assert!(
        !dead_trace.to_string().contains(&dead),
        "the device token is masked"
    );

    // The readable form carries the same story.
    let (code, table, _) = run(notify(
        &p.stack.env,
        &[
            "trace",
            "e-dead",
            "--status-topic",
            &p.stack.status,
            "--dlq-topic",
            &p.stack.dlq,
            "--retry-topic",
            &p.stack.retry,
        ],
    ));
    assert_eq!(code, Some(0));
    assert!(
        table.contains("DEAD_LETTERED")
            && table.contains("dead letter")
            && table.contains("delivery ledger"),
        "{table}"
    );
    p.stop().await;
}
