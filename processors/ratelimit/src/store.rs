//! Rate-limit state: the sends accepted per (user, scope), keyed by event id.
//!
//! Keying by event id makes recording idempotent: a record redelivered after a crash writes
//! the same row again instead of a second one, and finds itself when it reads.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

/// One accepted send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub event_id: String,
    pub at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("rate-limit store: {0}")]
pub struct StoreError(pub String);

pub trait RateStore: Send + Sync + 'static {
    /// The sends recorded for `user_id` in `scope` that have not expired.
    fn sent(
        &self,
        user_id: &str,
        scope: &str,
    ) -> impl Future<Output = Result<Vec<Sent>, StoreError>> + Send;

    /// Records a send; it expires `ttl_secs` after `sent.at_ms`. Recording the same event id
    /// again replaces the row.
    fn record(
        &self,
        user_id: &str,
        scope: &str,
        sent: &Sent,
        ttl_secs: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Input partitions were assigned or revoked: anything remembered about the windows of
    /// users may have been changed by another instance.
    fn rebalanced(&self) {}
}

/// When a send recorded with `ttl_secs` expires, in milliseconds.
pub(crate) fn expires_at(sent: &Sent, ttl_secs: u64) -> i64 {
    sent.at_ms
        .saturating_add(ttl_secs.saturating_mul(1000) as i64)
}

/// Sends of one (user, scope): event id → (sent at, expires at), in milliseconds.
type Sends = BTreeMap<String, (i64, i64)>;

/// State in memory (unit tests). Expired rows are dropped when the key is written.
#[derive(Default, Clone)]
pub struct MemoryStore {
    rows: Arc<Mutex<HashMap<(String, String), Sends>>>,
}

impl RateStore for MemoryStore {
    async fn sent(&self, user_id: &str, scope: &str) -> Result<Vec<Sent>, StoreError> {
        let rows = self.rows.lock().map_err(|e| StoreError(e.to_string()))?;
        Ok(rows
            .get(&(user_id.to_string(), scope.to_string()))
            .map(|m| {
                m.iter()
                    .map(|(id, (at, _))| Sent {
                        event_id: id.clone(),
                        at_ms: *at,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn record(
        &self,
        user_id: &str,
        scope: &str,
        sent: &Sent,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let mut rows = self.rows.lock().map_err(|e| StoreError(e.to_string()))?;
        let key = rows
            .entry((user_id.to_string(), scope.to_string()))
            .or_default();
        let expires = expires_at(sent, ttl_secs);
        key.retain(|_, (_, exp)| *exp > sent.at_ms);
        key.insert(sent.event_id.clone(), (sent.at_ms, expires));
        Ok(())
    }
}

/// The behaviour every store must have; run against the in-memory store here and against the
/// CQL store in the integration tests. `user` must be unused in the store.
pub async fn store_contract<S: RateStore>(store: &S, user: &str) {
    let at = |ms: i64, id: &str| Sent {
        event_id: id.into(),
        at_ms: ms,
    };
    let now = notify_runtime::now_ms();
    assert!(store.sent(user, "channel=PUSH").await.unwrap().is_empty());
    store
        .record(user, "channel=PUSH", &at(now, "e1"), 3600)
        .await
        .unwrap();
    store
        .record(user, "channel=PUSH", &at(now + 1, "e2"), 3600)
        .await
        .unwrap();
    // The same event again (a redelivery) does not add a row.
    store
        .record(user, "channel=PUSH", &at(now + 2, "e1"), 3600)
        .await
        .unwrap();
    let mut got = store.sent(user, "channel=PUSH").await.unwrap();
    got.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].event_id, "e1");
    assert_eq!(got[1], at(now + 1, "e2"));
    // Scopes and users are separate counters.
    assert!(store.sent(user, "channel=SMS").await.unwrap().is_empty());
    assert!(
        store
            .sent(&format!("{user}-other"), "channel=PUSH")
            .await
            .unwrap()
            .is_empty()
    );
    store
        .record(user, "channel=SMS", &at(now, "e3"), 60)
        .await
        .unwrap();
    assert_eq!(store.sent(user, "channel=SMS").await.unwrap().len(), 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_keeps_the_contract() {
        store_contract(&MemoryStore::default(), "u1").await;
    }

    #[tokio::test]
    async fn memory_store_drops_expired_rows() {
        let store = MemoryStore::default();
        let s = |id: &str, ms| Sent {
            event_id: id.into(),
            at_ms: ms,
        };
        store.record("u", "s", &s("old", 0), 10).await.unwrap();
        store.record("u", "s", &s("new", 20_000), 10).await.unwrap();
        let got = store.sent("u", "s").await.unwrap();
        assert_eq!(got, vec![s("new", 20_000)]);
    }
}
