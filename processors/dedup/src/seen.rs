//! What an owner of an input partition remembers of the ids accepted on it: the recent ones
//! exactly (with the offset that accepted them), all of the window in Bloom filters, so that
//! most records are decided without asking the database.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use fastbloom::BloomFilter;

/// A (user id, event id) pair: the dedup key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Id {
    pub user_id: String,
    pub event_id: String,
}

/// Bloom filters of one window: a new one when the current is full, each dropped once the
/// last id put in it is older than the window (its ids have expired in the ledger too). An id
/// the filters do not contain was never accepted here within the window.
///
/// The first filter of a partition is small and each next one twice the size, up to
/// `capacity`: memory follows the ids a partition really holds (a process owns many
/// partitions, most of them quiet), and a busy one needs only a few more filters to check.
pub struct Blooms {
    filters: Vec<Generation>,
    capacity: usize,
    false_positive: f64,
    window_ms: i64,
}

struct Generation {
    filter: BloomFilter,
    ids: usize,
    capacity: usize,
    last_insert_ms: i64,
}

impl Blooms {
    pub fn new(capacity: usize, false_positive: f64, window_ms: i64) -> Blooms {
        Blooms {
            filters: Vec::new(),
            capacity: capacity.max(1_000),
            false_positive,
            window_ms,
        }
    }

    pub fn insert(&mut self, id: &Id, now_ms: i64) {
        let full = self.filters.last().is_none_or(|g| g.ids >= g.capacity);
        if full {
            let capacity = match self.filters.last() {
                Some(g) => (g.capacity * 2).min(self.capacity),
                None => FIRST_FILTER_IDS.min(self.capacity),
            };
            self.filters.push(Generation {
                filter: BloomFilter::with_false_pos(self.false_positive).expected_items(capacity),
                ids: 0,
                capacity,
                last_insert_ms: now_ms,
            });
        }
        if let Some(g) = self.filters.last_mut() {
            g.filter.insert(id);
            g.ids += 1;
            g.last_insert_ms = now_ms;
        }
        let window = self.window_ms;
        self.filters.retain(|g| now_ms - g.last_insert_ms <= window);
    }

    pub fn may_contain(&self, id: &Id) -> bool {
        self.filters.iter().any(|g| g.filter.contains(id))
    }

    /// The ids each filter is sized for, oldest first.
    pub fn capacities(&self) -> Vec<usize> {
        self.filters.iter().map(|g| g.capacity).collect()
    }
}

/// Ids the first filter of a partition is sized for (about 5 KB at 1%).
const FIRST_FILTER_IDS: usize = 4_096;

/// The ids accepted recently, exactly: a duplicate (a producer's retry, mostly seconds
/// apart) is decided without the database, and so is the same record read again. Two
/// generations bound the memory.
pub struct Recent {
    current: HashMap<u128, i64>,
    previous: HashMap<u128, i64>,
    per_generation: usize,
    hashers: (RandomState, RandomState),
}

/// The offset stored for an id accepted by a record elsewhere (another topic or partition).
pub const ELSEWHERE: i64 = i64::MIN;

impl Recent {
    pub fn new(per_generation: usize) -> Recent {
        Recent {
            current: HashMap::new(),
            previous: HashMap::new(),
            per_generation: per_generation.max(1),
            hashers: (RandomState::new(), RandomState::new()),
        }
    }

    /// 128 bits of two independent hashes: a collision (which would make a new id look like
    /// a duplicate) is out of reach for any number of ids held.
    fn key(&self, id: &Id) -> u128 {
        let a = self.hashers.0.hash_one(id) as u128;
        let b = self.hashers.1.hash_one(id) as u128;
        (a << 64) | b
    }

    /// The offset that accepted `id`, if it was accepted recently.
    pub fn get(&self, id: &Id) -> Option<i64> {
        let k = self.key(id);
        self.current
            .get(&k)
            .or_else(|| self.previous.get(&k))
            .copied()
    }

    pub fn insert(&mut self, id: &Id, offset: i64) {
        if self.current.len() >= self.per_generation {
            self.previous = std::mem::take(&mut self.current);
        }
        let k = self.key(id);
        self.current.insert(k, offset);
    }
}

/// One owned input partition.
pub struct Partition {
    pub blooms: Blooms,
    pub recent: Recent,
    /// The Bloom filters hold every id of the window (read back from the ledger). Until
    /// then an id they lack is looked up in the ledger.
    pub loaded: bool,
    /// Which assignment this state belongs to (a load finishing late for an older one is
    /// dropped).
    pub epoch: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> Id {
        Id {
            user_id: format!("u{}", n % 7),
            event_id: format!("e{n}"),
        }
    }

    #[test]
    fn blooms_hold_every_id_of_the_window_across_generations() {
        let mut b = Blooms::new(1_000, 0.01, 60_000);
        for n in 0..5_000 {
            b.insert(&id(n), 1_000);
        }
        assert!(
            (0..5_000).all(|n| b.may_contain(&id(n))),
            "no false negative"
        );
        let false_pos = (5_000..15_000).filter(|n| b.may_contain(&id(*n))).count();
        assert!(
            false_pos < 600,
            "about 1% per filter, 5 filters: {false_pos}"
        );
        b.insert(&id(99_999), 1_000 + 60_001);
        assert!(
            !b.may_contain(&id(1)),
            "generations older than the window are dropped"
        );
    }

    #[test]
    fn bloom_filters_start_small_and_double_up_to_the_capacity() {
        let mut b = Blooms::new(20_000, 0.01, 60_000);
        for n in 0..40_000 {
            b.insert(&id(n), 1_000);
        }
        assert_eq!(b.capacities(), vec![4_096, 8_192, 16_384, 20_000]);
        assert!(
            (0..40_000).all(|n| b.may_contain(&id(n))),
            "no false negative"
        );
    }

    #[test]
    fn recent_ids_keep_their_offset_for_two_generations() {
        let mut r = Recent::new(2);
        r.insert(&id(1), 10);
        r.insert(&id(2), 11);
        r.insert(&id(3), 12);
        assert_eq!(r.get(&id(1)), Some(10), "previous generation");
        assert_eq!(r.get(&id(3)), Some(12));
        r.insert(&id(4), 13);
        r.insert(&id(5), 14);
        assert_eq!(r.get(&id(1)), None, "two generations ago");
    }
}
