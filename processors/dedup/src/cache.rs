//! A bounded cache of ids known to be claimed, in front of the ledger. It only answers
//! "claimed by another record, within the window" (a duplicate) — a fact the ledger cannot
//! take back before the row's TTL — so it saves a round trip and never lets one through.
//!
//! Entries are fingerprints, not strings (32 bytes instead of ~150), so the default two
//! generations of 100,000 ids take about 8 MB. A 128-bit id fingerprint colliding would be
//! needed to call a new id a duplicate (about 1 in 10^28 for 200,000 ids); an owner
//! fingerprint colliding only sends the record on to the ledger, which decides exactly.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

/// Two generations: when the young one is full it becomes the old one (the oldest is
/// dropped), so memory stays bounded without per-entry bookkeeping.
pub struct ClaimCache {
    per_generation: usize,
    window_ms: i64,
    /// Two independent keyed hashes make the 128-bit id fingerprint; keys are per process,
    /// like the cache itself.
    id_hashes: (RandomState, RandomState),
    inner: Mutex<[HashMap<u128, Holder>; 2]>,
}

#[derive(Clone, Copy)]
struct Holder {
    owner: u64,
    at_ms: i64,
}

impl ClaimCache {
    pub fn new(per_generation: usize, window_ms: i64) -> ClaimCache {
        ClaimCache {
            per_generation,
            window_ms,
            id_hashes: (RandomState::new(), RandomState::new()),
            inner: Mutex::new([HashMap::new(), HashMap::new()]),
        }
    }

    fn id_key(&self, event_id: &str) -> u128 {
        let high = self.id_hashes.0.hash_one(event_id);
        let low = self.id_hashes.1.hash_one(event_id);
        (u128::from(high) << 64) | u128::from(low)
    }

    fn owner_key(&self, owner: &str) -> u64 {
        self.id_hashes.0.hash_one(owner)
    }

    /// Remembers that `owner` claimed `event_id` at `at_ms`.
    pub fn insert(&self, event_id: &str, owner: &str, at_ms: i64) {
        if self.per_generation == 0 {
            return;
        }
        let key = self.id_key(event_id);
        let holder = Holder {
            owner: self.owner_key(owner),
            at_ms,
        };
        if let Ok(mut g) = self.inner.lock() {
            if g[0].len() >= self.per_generation {
                g[1] = std::mem::replace(&mut g[0], HashMap::with_capacity(self.per_generation));
            }
            g[0].insert(key, holder);
        }
    }

    /// True when another record than `owner` is known to hold `event_id` at `now_ms`.
    pub fn is_duplicate(&self, event_id: &str, owner: &str, now_ms: i64) -> bool {
        if self.per_generation == 0 {
            return false;
        }
        let key = self.id_key(event_id);
        let owner = self.owner_key(owner);
        let Ok(g) = self.inner.lock() else {
            return false;
        };
        g.iter()
            .find_map(|m| m.get(&key))
            .is_some_and(|h| h.owner != owner && h.at_ms + self.window_ms > now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_for_other_owners_within_the_window_and_stays_bounded() {
        let c = ClaimCache::new(2, 1_000);
        c.insert("a", "t/0/1", 100);
        assert!(c.is_duplicate("a", "t/1/7", 500));
        assert!(
            !c.is_duplicate("a", "t/0/1", 500),
            "its own claimer is not a duplicate"
        );
        assert!(
            !c.is_duplicate("a", "t/1/7", 1_100),
            "expired with the window"
        );
        assert!(!c.is_duplicate("b", "t/1/7", 500));
        c.insert("b", "x", 100);
        c.insert("c", "x", 100);
        c.insert("d", "x", 100);
        c.insert("e", "x", 100);
        assert!(!c.is_duplicate("a", "y", 500), "oldest generation dropped");
        assert!(c.is_duplicate("d", "y", 500));
    }

    #[test]
    fn a_disabled_cache_never_answers() {
        let c = ClaimCache::new(0, 1_000);
        c.insert("a", "t/0/1", 100);
        assert!(!c.is_duplicate("a", "t/1/7", 500));
    }

    #[test]
    fn many_ids_are_told_apart() {
        let c = ClaimCache::new(50_000, 1_000);
        for i in 0..50_000 {
            c.insert(&format!("event-{i}"), "t/0/1", 100);
        }
        for i in 0..50_000 {
            assert!(c.is_duplicate(&format!("event-{i}"), "t/0/2", 500), "{i}");
            assert!(!c.is_duplicate(&format!("other-{i}"), "t/0/2", 500), "{i}");
        }
    }
}
