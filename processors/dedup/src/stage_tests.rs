use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use notify_runtime::records::{NotificationRequest, Priority};

use super::*;
use crate::ledger::MemoryLedger;

/// A sink that keeps what it was sent and can be told to fail (a crash before the produce).
#[derive(Default)]
struct ListSink {
    sent: Mutex<Vec<(i32, String, String)>>,
    fail: AtomicBool,
}

impl Sink for ListSink {
    fn partition_for(&self, _key: &str) -> i32 {
        0
    }
    fn floor(&self, _partition: i32) -> i64 {
        self.sent.lock().unwrap().len() as i64
    }
    async fn send(
        &self,
        partition: i32,
        _key: &str,
        record: &RoutedNotification,
        owner: &str,
        _ts: Option<i64>,
    ) -> Result<(), String> {
        if self.fail.load(Ordering::SeqCst) {
            return Err("broker gone".into());
        }
        self.sent.lock().unwrap().push((
            partition,
            record.request.event_id.clone(),
            owner.to_string(),
        ));
        Ok(())
    }
    async fn was_forwarded(
        &self,
        partition: i32,
        from: i64,
        event_id: &str,
        owner: &str,
    ) -> Result<bool, String> {
        let sent = self.sent.lock().unwrap();
        Ok(sent
            .iter()
            .skip(from as usize)
            .any(|(p, e, o)| *p == partition && e == event_id && o == owner))
    }
}

fn dedup() -> Dedup<MemoryLedger, ListSink> {
    Dedup {
        ledger: MemoryLedger::new(7 * 24 * 3_600_000),
        sink: ListSink::default(),
        cache: ClaimCache::new(1_000, 7 * 24 * 3_600_000),
        status_topic: "status".into(),
        stage: "dedup".into(),
    }
}

fn routed(event_id: &str) -> RoutedNotification {
    RoutedNotification {
        request: NotificationRequest {
            event_id: event_id.into(),
            user_id: "u1".into(),
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

fn meta(partition: i32, offset: i64) -> RecordMeta {
    RecordMeta {
        topic: "in".into(),
        partition,
        offset,
        key: Some("u1".into()),
        timestamp_ms: Some(1),
        headers: vec![],
    }
}

fn outcomes(outputs: &[Output]) -> Vec<Outcome> {
    outputs
        .iter()
        .filter_map(|o| o.downcast::<DeliveryStatus>())
        .map(|s| s.outcome)
        .collect()
}

#[tokio::test]
async fn first_passes_later_copies_are_duplicates() {
    let d = dedup();
    let out = d.process(routed("e1"), &meta(0, 1)).await.unwrap();
    assert_eq!(outcomes(&out), vec![Outcome::Accepted]);
    for (p, o) in [(1, 5), (2, 9)] {
        let out = d.process(routed("e1"), &meta(p, o)).await.unwrap();
        assert_eq!(outcomes(&out), vec![Outcome::Duplicate]);
    }
    assert_eq!(d.sink.sent.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_record_read_again_goes_out_once() {
    let d = dedup();
    // Crash between the ledger write and the produce: the retry must still send it.
    d.sink.fail.store(true, Ordering::SeqCst);
    let err = d.process(routed("e2"), &meta(0, 7)).await.unwrap_err();
    assert!(matches!(err, ProcessError::Transient(_)));
    d.sink.fail.store(false, Ordering::SeqCst);
    let out = d.process(routed("e2"), &meta(0, 7)).await.unwrap();
    assert_eq!(outcomes(&out), vec![Outcome::Accepted]);
    assert_eq!(d.sink.sent.lock().unwrap().len(), 1);
    // Crash after the produce (offset not committed): read again, not sent again.
    let out = d.process(routed("e2"), &meta(0, 7)).await.unwrap();
    assert_eq!(outcomes(&out), vec![Outcome::Accepted]);
    assert_eq!(d.sink.sent.lock().unwrap().len(), 1);
    // A different record with the id is still a duplicate.
    let out = d.process(routed("e2"), &meta(3, 1)).await.unwrap();
    assert_eq!(outcomes(&out), vec![Outcome::Duplicate]);
}

#[tokio::test]
async fn ten_concurrent_copies_pass_once() {
    let d = dedup();
    let metas: Vec<RecordMeta> = (0..10).map(|i| meta(i, 100 + i as i64)).collect();
    let outs = futures::future::join_all(metas.iter().map(|m| d.process(routed("e3"), m))).await;
    let accepted = outs
        .iter()
        .map(|o| outcomes(o.as_ref().unwrap()))
        .filter(|o| o == &vec![Outcome::Accepted])
        .count();
    assert_eq!(accepted, 1);
    assert_eq!(d.sink.sent.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_and_expired_requests() {
    let d = dedup();
    let mut r = routed("");
    assert!(matches!(
        d.process(r.clone(), &meta(0, 1)).await,
        Err(ProcessError::Reject { .. })
    ));
    r.request.event_id = "e4".into();
    r.request.expires_at = Some(2);
    let out = d.process(r, &meta(0, 2)).await.unwrap();
    assert_eq!(outcomes(&out), vec![Outcome::Expired]);
    assert!(d.sink.sent.lock().unwrap().is_empty());
}
