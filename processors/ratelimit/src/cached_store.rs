//! A write-through cache of the windows of the users this instance serves, in front of the
//! CQL store: the window of a user is read once, then kept up to date by this instance's own
//! writes, so a check costs one write instead of a read of the whole window and a write.
//!
//! Sound for the same reason check-then-record is: the input is keyed by user id, so while
//! this instance holds a partition no other instance writes the windows of its users. On any
//! rebalance the cache is dropped and windows are read again, since a partition that comes
//! back may have been served (and written) elsewhere meanwhile. Bounded by two generations of
//! `(user, scope)` keys; an evicted key is simply read again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{RateStore, Sent, StoreError, expires_at};

/// One cached window: event id, sent at, expires at (ms).
type Window = Vec<(Sent, i64)>;
type Generation = HashMap<(String, String), Window>;

pub struct CachedStore<S> {
    inner: S,
    per_generation: usize,
    cache: Mutex<[Generation; 2]>,
    /// Counts reads answered here and reads that went to the store (tests look at them).
    pub stats: Arc<CacheStats>,
}

#[derive(Default, Debug)]
pub struct CacheStats {
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
}

impl<S: RateStore> CachedStore<S> {
    /// `per_generation` (user, scope) windows per generation; 0 turns the cache off.
    pub fn new(inner: S, per_generation: usize) -> CachedStore<S> {
        CachedStore {
            inner,
            per_generation,
            cache: Mutex::new([HashMap::new(), HashMap::new()]),
            stats: Arc::default(),
        }
    }

    fn lookup(&self, key: &(String, String)) -> Option<Vec<Sent>> {
        let mut g = self.cache.lock().ok()?;
        // A hit in the old generation moves up, so active users stay cached.
        if !g[0].contains_key(key) {
            let old = g[1].remove(key)?;
            self.put(&mut g, key.clone(), old);
        }
        let now = notify_runtime::now_ms();
        let window = g[0].get_mut(key)?;
        window.retain(|(_, expires)| *expires > now);
        Some(window.iter().map(|(s, _)| s.clone()).collect())
    }

    fn put(&self, g: &mut [Generation; 2], key: (String, String), window: Window) {
        if g[0].len() >= self.per_generation {
            g[1] = std::mem::take(&mut g[0]);
        }
        g[0].insert(key, window);
    }
}

impl<S: RateStore> RateStore for CachedStore<S> {
    async fn sent(&self, user_id: &str, scope: &str) -> Result<Vec<Sent>, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.per_generation == 0 {
            return self.inner.sent(user_id, scope).await;
        }
        let key = (user_id.to_string(), scope.to_string());
        if let Some(window) = self.lookup(&key) {
            self.stats.hits.fetch_add(1, Relaxed);
            return Ok(window);
        }
        self.stats.misses.fetch_add(1, Relaxed);
        let read = self.inner.sent(user_id, scope).await?;
        // The store does not say when a row expires; a row read back lives at most as long
        // as the scope's longest window, which the next record() prunes by (see below).
        let window = read.iter().map(|s| (s.clone(), i64::MAX)).collect();
        if let Ok(mut g) = self.cache.lock() {
            self.put(&mut g, key, window);
        }
        Ok(read)
    }

    async fn record(
        &self,
        user_id: &str,
        scope: &str,
        sent: &Sent,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        // The store first: the cache never holds what the database does not.
        self.inner.record(user_id, scope, sent, ttl_secs).await?;
        if self.per_generation == 0 {
            return Ok(());
        }
        let key = (user_id.to_string(), scope.to_string());
        let Ok(mut g) = self.cache.lock() else {
            return Ok(());
        };
        // Only a window read from the store is extended: one that was never read (or was
        // evicted) would look emptier than it is.
        let window = match g.iter_mut().find_map(|gen_| gen_.get_mut(&key)) {
            Some(w) => w,
            None => return Ok(()),
        };
        // Drop what has expired (rows read back carry no expiry: judge them by this scope's
        // TTL) and the event's own earlier row, which this write replaces.
        window.retain(|(s, exp)| {
            *exp > sent.at_ms && expires_at(s, ttl_secs) > sent.at_ms && s.event_id != sent.event_id
        });
        window.push((sent.clone(), expires_at(sent, ttl_secs)));
        Ok(())
    }

    fn rebalanced(&self) {
        if let Ok(mut g) = self.cache.lock() {
            g[0].clear();
            g[1].clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::limiter_contract;
    use crate::store::{MemoryStore, store_contract};
    use std::sync::atomic::Ordering::Relaxed;

    #[tokio::test]
    async fn keeps_the_store_contract() {
        store_contract(&CachedStore::new(MemoryStore::default(), 1_000), "u1").await;
    }

    #[tokio::test]
    async fn keeps_the_limiter_contract_even_when_tiny() {
        limiter_contract(CachedStore::new(MemoryStore::default(), 1_000), "u1").await;
        limiter_contract(CachedStore::new(MemoryStore::default(), 1), "u2").await;
        limiter_contract(CachedStore::new(MemoryStore::default(), 0), "u3").await;
    }

    #[tokio::test]
    async fn reads_a_window_once_then_answers_from_memory() {
        let store = CachedStore::new(MemoryStore::default(), 1_000);
        let s = |id: &str| Sent {
            event_id: id.into(),
            at_ms: notify_runtime::now_ms(),
        };
        assert!(store.sent("u", "s").await.unwrap().is_empty());
        store.record("u", "s", &s("a"), 60).await.unwrap();
        store.record("u", "s", &s("b"), 60).await.unwrap();
        assert_eq!(store.sent("u", "s").await.unwrap().len(), 2);
        assert_eq!(store.stats.misses.load(Relaxed), 1);
        assert_eq!(store.stats.hits.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_rebalance_reads_windows_again_with_what_others_wrote() {
        let shared = MemoryStore::default();
        let here = CachedStore::new(shared.clone(), 1_000);
        let at = notify_runtime::now_ms();
        let s = |id: &str| Sent {
            event_id: id.into(),
            at_ms: at,
        };
        here.record("u", "s", &s("a"), 60).await.unwrap();
        assert_eq!(here.sent("u", "s").await.unwrap().len(), 1);
        // Another instance served the partition meanwhile.
        shared.record("u", "s", &s("elsewhere"), 60).await.unwrap();
        here.rebalanced();
        assert_eq!(here.sent("u", "s").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_failed_write_leaves_the_cache_as_the_store() {
        struct Failing(MemoryStore);
        impl RateStore for Failing {
            async fn sent(&self, u: &str, s: &str) -> Result<Vec<Sent>, StoreError> {
                self.0.sent(u, s).await
            }
            async fn record(&self, _: &str, _: &str, _: &Sent, _: u64) -> Result<(), StoreError> {
                Err(StoreError("down".into()))
            }
        }
        let store = CachedStore::new(Failing(MemoryStore::default()), 1_000);
        assert!(store.sent("u", "s").await.unwrap().is_empty());
        let sent = Sent {
            event_id: "a".into(),
            at_ms: notify_runtime::now_ms(),
        };
        assert!(store.record("u", "s", &sent, 60).await.is_err());
        assert!(store.sent("u", "s").await.unwrap().is_empty());
    }
}
