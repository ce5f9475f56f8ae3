//! Which offsets may be committed: only the contiguous prefix of records whose outputs are
//! all acknowledged, even when records finish out of order (lanes run concurrently).

use std::collections::{BTreeMap, HashMap};

/// (topic, partition)
pub type PartitionKey = (String, i32);

#[derive(Default)]
struct PartitionState {
    /// Offsets dispatched and not yet part of the committed prefix: offset -> done.
    pending: BTreeMap<i64, bool>,
}

/// Tracks in-flight offsets per assigned partition.
#[derive(Default)]
pub struct OffsetTracker {
    partitions: HashMap<PartitionKey, PartitionState>,
}

impl OffsetTracker {
    /// Starts tracking newly assigned partitions.
    pub fn assign(&mut self, keys: impl IntoIterator<Item = PartitionKey>) {
        for key in keys {
            self.partitions.entry(key).or_default();
        }
    }

    /// Forgets revoked partitions.
    pub fn revoke(&mut self, keys: &[PartitionKey]) {
        for key in keys {
            self.partitions.remove(key);
        }
    }

    pub fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .contains_key(&(topic.to_string(), partition))
    }

    /// Records that `offset` was handed to a lane. Returns false if the partition is not ours.
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        match self.partitions.get_mut(&(topic.to_string(), partition)) {
            Some(state) => {
                state.pending.insert(offset, false);
                true
            }
            None => false,
        }
    }

    /// True while `offset` was dispatched on a partition we still own and is not done.
    pub fn is_pending(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.partitions
            .get(&(topic.to_string(), partition))
            .and_then(|s| s.pending.get(&offset))
            .is_some_and(|done| !*done)
    }

    /// Marks `offset` done. Returns the next offset to store (last of the contiguous done prefix
    /// + 1) when the prefix moved.
    pub fn complete(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let state = self.partitions.get_mut(&(topic.to_string(), partition))?;
        match state.pending.get_mut(&offset) {
            Some(done) => *done = true,
            None => return None,
        }
        let mut next = None;
        while let Some((&first, &done)) = state.pending.iter().next() {
            if !done {
                break;
            }
            state.pending.remove(&first);
            next = Some(first + 1);
        }
        next
    }

    /// Records dispatched but not yet done on these partitions (all when `keys` is None).
    pub fn in_flight(&self, keys: Option<&[PartitionKey]>) -> usize {
        let count = |s: &PartitionState| s.pending.values().filter(|d| !**d).count();
        match keys {
            None => self.partitions.values().map(count).sum(),
            Some(keys) => keys
                .iter()
                .filter_map(|k| self.partitions.get(k))
                .map(count)
                .sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_only_the_contiguous_done_prefix() {
        let mut t = OffsetTracker::default();
        t.assign([("t".to_string(), 0)]);
        for o in 10..15 {
            assert!(t.begin("t", 0, o));
        }
        assert_eq!(
            t.complete("t", 0, 12),
            None,
            "12 done but 10 and 11 are not"
        );
        assert_eq!(t.complete("t", 0, 11), None);
        assert_eq!(t.complete("t", 0, 10), Some(13), "10..=12 are done");
        assert_eq!(t.in_flight(None), 2);
        assert_eq!(t.complete("t", 0, 14), None);
        assert_eq!(t.complete("t", 0, 13), Some(15));
        assert_eq!(t.in_flight(None), 0);
    }

    #[test]
    fn ignores_partitions_that_are_not_assigned() {
        let mut t = OffsetTracker::default();
        assert!(!t.begin("t", 1, 0));
        t.assign([("t".to_string(), 1)]);
        assert!(t.begin("t", 1, 0));
        t.revoke(&[("t".to_string(), 1)]);
        assert_eq!(t.complete("t", 1, 0), None);
        assert!(!t.is_assigned("t", 1));
    }
}
