use std::sync::Arc;
use std::sync::atomic::Ordering;

use notify_runtime::records::{NotificationRequest, Outcome, Priority, RoutedNotification};
use notify_runtime::{Metrics, RecordMeta, Stage};

use super::*;
use crate::ledger::MemoryLedger;

fn routed(event: &str, user: &str) -> RoutedNotification {
    RoutedNotification {
        request: NotificationRequest {
            event_id: event.into(),
            user_id: user.into(),
            category: "billing".into(),
            template_id: "t".into(),
            data: Default::default(),
            channels: vec![],
            priority: Priority::Normal,
            created_at: 1,
            expires_at: None,
            source: String::new(),
            email: None,
            phone: None,
        },
        locale: "en".into(),
        timezone: "UTC".into(),
        user: Default::default(),
        targets: vec![],
        rendered: vec![],
    }
}

fn dedup(ledger: Arc<MemoryLedger>) -> Dedup<MemoryLedger> {
    Dedup::new(
        ledger,
        "out".into(),
        "status".into(),
        60_000,
        &Metrics::new("t"),
    )
}

fn outcome(emit: &notify_runtime::Emit<RoutedNotification>) -> Outcome {
    emit.side[0]
        .downcast::<notify_runtime::records::DeliveryStatus>()
        .expect("a status")
        .outcome
}

#[tokio::test]
async fn one_user_and_event_passes_once_and_the_same_record_again() {
    let ledger = Arc::new(MemoryLedger::default());
    let d = dedup(ledger.clone());
    let first = RecordMeta::for_test("in", 0, 10, "u1");
    let e = d.process(routed("e1", "u1"), &first).await.expect("ok");
    assert_eq!((outcome(&e), e.next.len()), (Outcome::Accepted, 1));
    let copy = RecordMeta::for_test("in", 0, 11, "u1");
    let e = d.process(routed("e1", "u1"), &copy).await.expect("ok");
    assert_eq!((outcome(&e), e.next.len()), (Outcome::Duplicate, 0));
    let redo = d.process(routed("e1", "u1"), &first).await.expect("ok");
    assert_eq!(
        outcome(&redo),
        Outcome::Accepted,
        "the record that accepted it, read again"
    );
    let other_user = RecordMeta::for_test("in", 0, 12, "u2");
    let e = d
        .process(routed("e1", "u2"), &other_user)
        .await
        .expect("ok");
    assert_eq!(
        outcome(&e),
        Outcome::Accepted,
        "the same event id for another user"
    );
}

#[tokio::test]
async fn a_new_owner_finds_duplicates_in_the_ledger_and_skips_reads_once_loaded() {
    let ledger = Arc::new(MemoryLedger::default());
    let before = dedup(ledger.clone());
    for n in 0..50 {
        let r = RecordMeta::for_test("in", 3, n, "u");
        before
            .process(routed(&format!("e{n}"), "u"), &r)
            .await
            .expect("ok");
    }
    // Another instance takes the partition over: it reads the ids back, then knows them.
    let after = dedup(ledger.clone());
    after.assigned(&[("in".to_string(), 3)]);
    for _ in 0..100 {
        if after
            .partitions
            .lock()
            .unwrap()
            .get(&3)
            .is_some_and(|p| p.loaded)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let reads = ledger.lookups.load(Ordering::Relaxed);
    let copy = RecordMeta::for_test("in", 3, 100, "u");
    let e = after.process(routed("e7", "u"), &copy).await.expect("ok");
    assert_eq!(outcome(&e), Outcome::Duplicate);
    let redo = RecordMeta::for_test("in", 3, 7, "u");
    let e = after.process(routed("e7", "u"), &redo).await.expect("ok");
    assert_eq!(
        outcome(&e),
        Outcome::Accepted,
        "the accepting record read again passes"
    );
    let fresh: Vec<_> = (200..300).map(|n| format!("new{n}")).collect();
    for (i, id) in fresh.iter().enumerate() {
        let r = RecordMeta::for_test("in", 3, 200 + i as i64, "u");
        let e = after.process(routed(id, "u"), &r).await.expect("ok");
        assert_eq!(outcome(&e), Outcome::Accepted);
    }
    let extra = ledger.lookups.load(Ordering::Relaxed) - reads;
    assert!(
        extra <= 5,
        "{extra} reads for 102 records: the Bloom filters answer for new ids"
    );
}

#[tokio::test]
async fn a_replayed_record_passes_without_touching_the_ledger() {
    let ledger = Arc::new(MemoryLedger::default());
    let d = dedup(ledger.clone());
    let r = RecordMeta::for_test("in", 0, 1, "u1");
    d.process(routed("e1", "u1"), &r).await.expect("ok");
    let mut replay = RecordMeta::for_test("in", 0, 9, "u1");
    replay.headers.push((REPLAY_RUN.into(), b"run-1".to_vec()));
    let e = d.process(routed("e1", "u1"), &replay).await.expect("ok");
    assert_eq!((outcome(&e), e.next.len()), (Outcome::Accepted, 1));
}
