//! A bounded cache of ids known to be claimed, in front of the ledger. It only answers
//! "claimed by another record, within the window" (a duplicate) — a fact the ledger cannot
//! take back before the row's TTL — so it saves a round trip and never lets one through.

use std::collections::HashMap;
use std::sync::Mutex;

/// Two generations: when the young one is full it becomes the old one (the oldest is
/// dropped), so memory stays bounded without per-entry bookkeeping.
pub struct ClaimCache {
    per_generation: usize,
    window_ms: i64,
    inner: Mutex<[HashMap<String, (String, i64)>; 2]>,
}

impl ClaimCache {
    pub fn new(per_generation: usize, window_ms: i64) -> ClaimCache {
        ClaimCache {
            per_generation,
            window_ms,
            inner: Mutex::new([HashMap::new(), HashMap::new()]),
        }
    }

    /// Remembers that `owner` claimed `event_id` at `at_ms`.
    pub fn insert(&self, event_id: &str, owner: &str, at_ms: i64) {
        if self.per_generation == 0 {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            if g[0].len() >= self.per_generation {
                g[1] = std::mem::take(&mut g[0]);
            }
            g[0].insert(event_id.to_string(), (owner.to_string(), at_ms));
        }
    }

    /// True when another record than `owner` is known to hold `event_id` at `now_ms`.
    pub fn is_duplicate(&self, event_id: &str, owner: &str, now_ms: i64) -> bool {
        let Ok(g) = self.inner.lock() else {
            return false;
        };
        g.iter()
            .find_map(|m| m.get(event_id))
            .is_some_and(|(o, at)| o != owner && at + self.window_ms > now_ms)
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
}
