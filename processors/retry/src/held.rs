//! Records waiting for their due time, ordered by it, counted per partition (so a partition
//! that holds too many is paused) and keyed by offset (so a record read twice after a
//! rebalance is held once).

use std::collections::{BTreeMap, HashMap};

use notify_runtime::offsets::PartitionKey;

/// One waiting record with what is needed to send it on.
#[derive(Debug)]
pub struct Waiting<T> {
    pub partition: PartitionKey,
    pub offset: i64,
    pub due_ms: i64,
    pub item: T,
}

pub struct Held<T> {
    by_due: BTreeMap<(i64, u64), (PartitionKey, i64)>,
    by_offset: HashMap<(PartitionKey, i64), (u64, Waiting<T>)>,
    per_partition: HashMap<PartitionKey, usize>,
    seq: u64,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held {
            by_due: BTreeMap::new(),
            by_offset: HashMap::new(),
            per_partition: HashMap::new(),
            seq: 0,
        }
    }
}

impl<T> Held<T> {
    /// Holds `w`; returns how many records its partition now holds.
    pub fn insert(&mut self, w: Waiting<T>) -> usize {
        let key = (w.partition.clone(), w.offset);
        if let Some((seq, old)) = self.by_offset.remove(&key) {
            self.by_due.remove(&(old.due_ms, seq));
            self.dec(&old.partition);
        }
        self.seq += 1;
        self.by_due.insert((w.due_ms, self.seq), key.clone());
        let count = self.per_partition.entry(w.partition.clone()).or_default();
        *count += 1;
        let count = *count;
        self.by_offset.insert(key, (self.seq, w));
        count
    }

    /// The earliest due time.
    pub fn next_due(&self) -> Option<i64> {
        self.by_due.keys().next().map(|(due, _)| *due)
    }

    /// Removes and returns every record due at `now_ms`, earliest first.
    pub fn take_due(&mut self, now_ms: i64) -> Vec<Waiting<T>> {
        let mut out = Vec::new();
        while let Some(entry) = self.by_due.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let key = entry.remove();
            if let Some((_, w)) = self.by_offset.remove(&key) {
                self.dec(&w.partition);
                out.push(w);
            }
        }
        out
    }

    /// Forgets the records of partitions that are no longer ours (their new owner reads them
    /// again from the committed offset).
    pub fn retain_partitions(&mut self, keep: impl Fn(&PartitionKey) -> bool) -> usize {
        let gone: Vec<(PartitionKey, i64)> = self
            .by_offset
            .keys()
            .filter(|(p, _)| !keep(p))
            .cloned()
            .collect();
        for key in &gone {
            if let Some((seq, w)) = self.by_offset.remove(key) {
                self.by_due.remove(&(w.due_ms, seq));
                self.dec(&w.partition);
            }
        }
        gone.len()
    }

    pub fn count(&self, partition: &PartitionKey) -> usize {
        self.per_partition.get(partition).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.by_offset.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_offset.is_empty()
    }

    fn dec(&mut self, partition: &PartitionKey) {
        if let Some(c) = self.per_partition.get_mut(partition) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.per_partition.remove(partition);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: i32, offset: i64, due_ms: i64) -> Waiting<&'static str> {
        Waiting {
            partition: ("t".into(), p),
            offset,
            due_ms,
            item: "x",
        }
    }

    #[test]
    fn releases_in_due_order_across_partitions() {
        let mut held = Held::default();
        held.insert(w(0, 1, 300));
        held.insert(w(1, 1, 100));
        held.insert(w(0, 2, 200));
        assert_eq!(held.next_due(), Some(100));
        let due: Vec<i64> = held.take_due(250).iter().map(|w| w.due_ms).collect();
        assert_eq!(due, vec![100, 200]);
        assert_eq!(held.count(&("t".into(), 0)), 1);
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn a_record_read_twice_is_held_once() {
        let mut held = Held::default();
        assert_eq!(held.insert(w(0, 7, 100)), 1);
        assert_eq!(held.insert(w(0, 7, 150)), 1);
        assert_eq!(held.take_due(1_000).len(), 1);
        assert!(held.is_empty());
    }

    #[test]
    fn forgets_revoked_partitions() {
        let mut held = Held::default();
        held.insert(w(0, 1, 100));
        held.insert(w(1, 1, 100));
        assert_eq!(held.retain_partitions(|p| p.1 == 1), 1);
        assert_eq!(held.count(&("t".into(), 0)), 0);
        assert_eq!(held.take_due(1_000).len(), 1);
    }
}
