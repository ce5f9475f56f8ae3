//! The whole point of replay: 1,000 requests, 100 of them failed on purpose at the sandbox
//! (permanent, dead-lettered); `notify replay` over the whole range then delivers exactly
//! those 100, no other message reaches the sandbox twice, and the dry run said so first.
//!
//! Needs the pipeline side of issue 14 on main (issue 12): dedup passing records that carry
//! `notify.replay.run`, and delivery keeping `delivery_messages`. Ignored until then.

use std::collections::HashMap;
use std::time::Duration;

use notify_runtime::records::Outcome;
use notify_sandbox::{FaultSpec, Provider};
use notify_tests::eventually;

use super::pipeline::Pipeline;
use super::{notify, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_delivers_exactly_the_hundred_that_failed_and_nothing_twice() {
    let p = Pipeline::start("ops_redeliver").await;
    let mut tokens = Vec::new();
    for i in 0..1_000 {
        let token = p.add_user(&format!("u{i}"), None).await;
        if i % 10 == 0 {
            p.stack.sandbox.add_fault(
                FaultSpec::new(Provider::Apns)
                    .token(token.clone())
                    .status(400)
                    .body(serde_json::json!({"reason": "PayloadTooLarge"}))
                    .times(1),
            );
        }
        tokens.push(token);
    }
    for i in 0..1_000 {
        p.send(&Pipeline::request(&format!("e{i}"), &format!("u{i}")))
            .await;
    }
    let terminal = |s: &notify_runtime::records::DeliveryStatus| {
        matches!(s.outcome, Outcome::Sent | Outcome::Failed)
    };
    let statuses = p.stack.wait_statuses(1_000, terminal).await;
    let failed = statuses
        .iter()
        .filter(|s| s.outcome == Outcome::Failed)
        .count();
    assert_eq!(failed, 100, "the sandbox failed every tenth");
    let sent_before = p.stack.sandbox.messages(Some(Provider::Apns)).len();
    assert_eq!(sent_before, 900);

    let env = &p.stack.env;
    let source = p.topics["requests"].clone();
    let (code, dry, err) = run(notify(env, &["replay", "--source", &source, "--dry-run"]));
    assert_eq!(code, Some(0), "{dry}\n{err}");
    assert!(dry.contains("delivery ledger: 100 would be sent"), "{dry}");
    assert!(dry.contains("send: failed before: 100"), "{dry}");
    assert!(dry.contains("skip: already sent: 900"), "{dry}");

    let state = std::env::temp_dir().join(format!("notify-redeliver-{}", env.id));
    let state_dir = state.to_string_lossy().to_string();
    let (code, out, err) = run(notify(
        env,
        &["replay", "--source", &source, "--state-dir", &state_dir],
    ));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("read 1000, written 1000"), "{out}");
    let all_once = eventually(Duration::from_secs(120), async || {
        let msgs = p.stack.sandbox.messages(Some(Provider::Apns));
        (msgs.len() >= 1_000).then_some(())
    })
    .await;
    assert!(
        all_once.is_some(),
        "the 100 were not delivered by the replay"
    );
    // Give stragglers a chance to show up before counting exactly.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut per_token: HashMap<String, usize> = HashMap::new();
    for m in p.stack.sandbox.messages(Some(Provider::Apns)) {
        *per_token.entry(m.recipient).or_default() += 1;
    }
    assert_eq!(per_token.len(), 1_000, "every device has its message");
    let twice: Vec<_> = per_token.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    let new = p.stack.sandbox.messages(Some(Provider::Apns)).len() - sent_before;
    assert_eq!(new, 100, "what the dry run said would be sent");
    // The trail of a replayed failure: FAILED first, SENT after the replay; the ledger says sent.
    let replayed = super::trace::trace(&p, "e0");
    let s = super::trace::story(&replayed);
    let at = |w: &str| {
        s.iter()
            .position(|x| x == w)
            .unwrap_or_else(|| panic!("no {w} in {s:?}"))
    };
    assert!(at("FAILED") < at("SENT"), "{replayed:#}");
    assert_eq!(super::trace::ledger_states(&replayed), ["sent"]);
    let untouched = super::trace::trace(&p, "e1");
    assert_eq!(super::trace::ledger_states(&untouched), ["sent"]);
    assert_eq!(
        super::trace::story(&untouched)
            .iter()
            .filter(|w| *w == "SENT")
            .count(),
        1,
        "no second SENT for a message delivered before the replay"
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(state);
}
