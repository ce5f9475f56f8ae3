//! Which offsets may be committed: only the contiguous prefix of records that are finished,
//! even when records finish out of order (lanes run concurrently).
//!
//! Every assignment of a partition gets a new epoch. A record carries the epoch it was read
//! under, so one that was held in memory across a revoke and a re-assignment of its partition
//! is recognised as stale and dropped instead of being handed out ahead of the re-fetch (its
//! new read is the one that counts).
//!
//! In exactly-once mode a finished record's outputs wait here (`R`) until every record before
//! it in its partition has finished too, and leave in offset order, so a transaction always
//! holds the outputs of a contiguous prefix of each partition together with its offsets.

use std::collections::{BTreeMap, HashMap};

/// (topic, partition)
pub type PartitionKey = (String, i32);

enum Slot<R> {
    Running,
    Finished(Option<R>),
}

struct PartitionState<R> {
    epoch: u64,
    /// Offsets dispatched and not yet part of the finished prefix.
    pending: BTreeMap<i64, Slot<R>>,
}

/// Tracks in-flight offsets per assigned partition.
pub struct OffsetTracker<R = ()> {
    partitions: HashMap<PartitionKey, PartitionState<R>>,
    next_epoch: u64,
}

impl<R> Default for OffsetTracker<R> {
    fn default() -> Self {
        OffsetTracker {
            partitions: HashMap::new(),
            next_epoch: 1,
        }
    }
}

/// What finishing a record released: the outputs of the records that left the prefix, in
/// offset order, and the next offset to commit when the prefix moved.
pub struct Released<R> {
    pub outputs: Vec<R>,
    pub next_offset: Option<i64>,
}

impl<R> OffsetTracker<R> {
    /// Starts tracking newly assigned partitions, each under a new epoch.
    pub fn assign(&mut self, keys: impl IntoIterator<Item = PartitionKey>) {
        for key in keys {
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            self.partitions.insert(
                key,
                PartitionState {
                    epoch,
                    pending: BTreeMap::new(),
                },
            );
        }
    }

    /// Forgets revoked partitions (and the outputs held for them).
    pub fn revoke(&mut self, keys: &[PartitionKey]) {
        for key in keys {
            self.partitions.remove(key);
        }
    }

    fn state(&mut self, topic: &str, partition: i32, epoch: u64) -> Option<&mut PartitionState<R>> {
        self.partitions
            .get_mut(&(topic.to_string(), partition))
            .filter(|s| s.epoch == epoch)
    }

    /// The current epoch of an assigned partition.
    pub fn epoch(&self, topic: &str, partition: i32) -> Option<u64> {
        self.partitions
            .get(&(topic.to_string(), partition))
            .map(|s| s.epoch)
    }

    /// True while the partition is still assigned under `epoch`.
    pub fn is_current(&self, topic: &str, partition: i32, epoch: u64) -> bool {
        self.epoch(topic, partition) == Some(epoch)
    }

    /// Records that `offset` was handed to a lane. False if the partition is not ours (any
    /// more) under this epoch: the record must be dropped.
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64, epoch: u64) -> bool {
        match self.state(topic, partition, epoch) {
            Some(state) => {
                state.pending.insert(offset, Slot::Running);
                true
            }
            None => false,
        }
    }

    /// Marks `offset` finished, holding `outputs` until the records before it are finished
    /// too. Nothing is released for a partition revoked (or re-assigned) since.
    pub fn finish(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        epoch: u64,
        outputs: Option<R>,
    ) -> Released<R> {
        let mut released = Released {
            outputs: Vec::new(),
            next_offset: None,
        };
        let Some(state) = self.state(topic, partition, epoch) else {
            return released;
        };
        match state.pending.get_mut(&offset) {
            Some(slot) => *slot = Slot::Finished(outputs),
            None => return released,
        }
        while let Some(entry) = state.pending.first_entry() {
            if matches!(entry.get(), Slot::Running) {
                break;
            }
            let offset = *entry.key();
            if let Slot::Finished(Some(outputs)) = entry.remove() {
                released.outputs.push(outputs);
            }
            released.next_offset = Some(offset + 1);
        }
        released
    }

    pub fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.epoch(topic, partition).is_some()
    }

    /// [`begin`](Self::begin) under the partition's current epoch (a loop that drops what it
    /// holds of a partition when it is revoked).
    pub fn begin_current(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        match self.epoch(topic, partition) {
            Some(epoch) => self.begin(topic, partition, offset, epoch),
            None => false,
        }
    }

    /// [`finish`](Self::finish) under the current epoch, without outputs: the next offset to
    /// commit when the prefix moved. A record begun before a re-assignment moves nothing.
    pub fn complete_current(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let epoch = self.epoch(topic, partition)?;
        self.finish(topic, partition, offset, epoch, None)
            .next_offset
    }

    /// Records dispatched but not yet released on these partitions (all when `keys` is None).
    pub fn in_flight(&self, keys: Option<&[PartitionKey]>) -> usize {
        let count = |s: &PartitionState<R>| s.pending.len();
        match keys {
            None => self.partitions.values().map(count).sum(),
            Some(keys) => keys
                .iter()
                .filter_map(|k| self.partitions.get(k))
                .map(count)
                .sum(),
        }
    }

    /// The partitions assigned now.
    pub fn assigned(&self) -> Vec<PartitionKey> {
        self.partitions.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartitionKey {
        ("t".to_string(), p)
    }

    #[test]
    fn stores_only_the_contiguous_finished_prefix() {
        let mut t = OffsetTracker::<()>::default();
        t.assign([key(0)]);
        let e = t.epoch("t", 0).expect("assigned");
        for o in 10..15 {
            assert!(t.begin("t", 0, o, e));
        }
        assert_eq!(
            t.finish("t", 0, 12, e, None).next_offset,
            None,
            "10 and 11 run"
        );
        assert_eq!(t.finish("t", 0, 11, e, None).next_offset, None);
        assert_eq!(t.finish("t", 0, 10, e, None).next_offset, Some(13));
        assert_eq!(t.in_flight(None), 2);
        assert_eq!(t.finish("t", 0, 14, e, None).next_offset, None);
        assert_eq!(t.finish("t", 0, 13, e, None).next_offset, Some(15));
        assert_eq!(t.in_flight(None), 0);
    }

    #[test]
    fn outputs_leave_in_offset_order() {
        let mut t = OffsetTracker::<&str>::default();
        t.assign([key(0)]);
        let e = t.epoch("t", 0).expect("assigned");
        for o in [3, 5, 9] {
            t.begin("t", 0, o, e);
        }
        assert!(t.finish("t", 0, 9, e, Some("nine")).outputs.is_empty());
        assert!(t.finish("t", 0, 5, e, Some("five")).outputs.is_empty());
        let r = t.finish("t", 0, 3, e, Some("three"));
        assert_eq!(r.outputs, vec!["three", "five", "nine"]);
        assert_eq!(r.next_offset, Some(10));
    }

    #[test]
    fn a_record_read_before_a_reassignment_is_stale() {
        let mut t = OffsetTracker::<()>::default();
        assert!(!t.begin("t", 1, 0, 1), "not assigned");
        t.assign([key(1)]);
        let before = t.epoch("t", 1).expect("assigned");
        assert!(t.begin("t", 1, 0, before));
        t.revoke(&[key(1)]);
        t.assign([key(1)]);
        let after = t.epoch("t", 1).expect("assigned");
        assert_ne!(before, after);
        assert!(!t.is_current("t", 1, before));
        assert!(!t.begin("t", 1, 1, before), "held across the rebalance");
        assert_eq!(
            t.finish("t", 1, 0, before, None).next_offset,
            None,
            "finishing under the old epoch moves nothing"
        );
        assert!(t.begin("t", 1, 0, after));
    }
}
