//! The dedup decision for one record. The input partition's owner processes all records of
//! a user in offset order, so a decision needs no consensus: an id it remembers (or the ledger
//! has) was accepted by the record named there (the same record read again passes; any other
//! copy is a DUPLICATE); an id nobody has is accepted, written to the ledger (durable before
//! the outputs, so before the offset commits) and remembered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use notify_runtime::dlq::ErrorClass;
use notify_runtime::records::{DeliveryStatus, Outcome, RoutedNotification};
use notify_runtime::{Emit, Metrics, Output, ProcessError, RecordMeta, Stage, now_ms};
use prometheus::IntCounterVec;

use crate::ledger::Ledger;
use crate::seen::{Blooms, ELSEWHERE, Id, Partition, Recent};

pub use notify_runtime::headers::REPLAY_RUN;

pub struct Dedup<L> {
    pub ledger: Arc<L>,
    pub output: String,
    pub status_topic: String,
    pub window_ms: i64,
    pub bloom_capacity: usize,
    pub recent_per_generation: usize,
    pub partitions: Arc<Mutex<HashMap<i32, Partition>>>,
    pub metrics: Metrics,
    /// `notify_dedup_lookups_total{answered_by}`: recent, bloom (no read), ledger.
    pub lookups: IntCounterVec,
    next_epoch: std::sync::atomic::AtomicU64,
}

/// What dedup decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accepted,
    /// The record that accepted the id, read again (a redo after a crash or rebalance).
    Again,
    Duplicate,
}

pub const NAME: &str = "dedup";

impl<L: Ledger> Dedup<L> {
    pub fn new(
        ledger: Arc<L>,
        output: String,
        status_topic: String,
        window_ms: i64,
        metrics: &Metrics,
    ) -> Self {
        let lookups = metrics.counter_vec(
            "notify_dedup_lookups_total",
            "How dedup knew an id: recent (memory), bloom (certainly new, no read), ledger (a read)",
            &["answered_by"],
        );
        for by in ["recent", "bloom", "ledger"] {
            lookups.with_label_values(&[by]);
        }
        metrics.expect_decisions(
            NAME,
            &["accepted", "duplicate", "expired", "replayed"],
            &[""],
        );
        Dedup {
            ledger,
            output,
            status_topic,
            window_ms,
            bloom_capacity: 1_000_000,
            recent_per_generation: 50_000,
            partitions: Arc::default(),
            metrics: metrics.clone(),
            lookups,
            next_epoch: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn fresh(&self, loaded: bool) -> Partition {
        Partition {
            blooms: Blooms::new(self.bloom_capacity, 0.01, self.window_ms),
            recent: Recent::new(self.recent_per_generation),
            loaded,
            epoch: self
                .next_epoch
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn status(
        &self,
        routed: &RoutedNotification,
        outcome: Outcome,
        reason: Option<String>,
    ) -> Output {
        let mut s = DeliveryStatus::of(&routed.request, NAME, outcome);
        s.reason = reason;
        Output::status(&self.status_topic, s)
    }

    /// Decides `id` for the record at `record` on its partition.
    pub async fn decide(&self, id: &Id, record: &RecordMeta) -> Result<Decision, ProcessError> {
        let p = record.partition;
        let maybe_seen = {
            let mut parts = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
            let part = parts.entry(p).or_insert_with(|| self.fresh(false));
            if let Some(offset) = part.recent.get(id) {
                self.lookups.with_label_values(&["recent"]).inc();
                return Ok(if offset == record.offset {
                    Decision::Again
                } else {
                    Decision::Duplicate
                });
            }
            !part.loaded || part.blooms.may_contain(id)
        };
        if maybe_seen {
            self.lookups.with_label_values(&["ledger"]).inc();
            let found = self
                .ledger
                .lookup(p, id)
                .await
                .map_err(ProcessError::transient)?;
            if let Some(position) = found {
                let mine = record.position();
                let offset = offset_on(&position, &record.topic, p).unwrap_or(ELSEWHERE);
                self.remember(p, id, offset);
                return Ok(if position == mine {
                    Decision::Again
                } else {
                    Decision::Duplicate
                });
            }
        } else {
            self.lookups.with_label_values(&["bloom"]).inc();
        }
        self.ledger
            .record(p, id, &record.position())
            .await
            .map_err(ProcessError::transient)?;
        self.remember(p, id, record.offset);
        Ok(Decision::Accepted)
    }

    fn remember(&self, partition: i32, id: &Id, offset: i64) {
        let mut parts = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let part = parts.entry(partition).or_insert_with(|| self.fresh(false));
        part.recent.insert(id, offset);
        part.blooms.insert(id, now_ms());
    }
}

/// Reads a partition's accepted ids back into its Bloom filters.
async fn load<L: Ledger>(
    ledger: Arc<L>,
    partitions: Arc<Mutex<HashMap<i32, Partition>>>,
    partition: i32,
    epoch: u64,
) {
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        match ledger.scan(partition).await {
            Ok(ids) => {
                let mut parts = partitions.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(part) = parts.get_mut(&partition).filter(|p| p.epoch == epoch) {
                    let now = now_ms();
                    for id in &ids {
                        part.blooms.insert(id, now);
                    }
                    part.loaded = true;
                    tracing::info!(partition, ids = ids.len(), "dedup ids loaded");
                }
                return;
            }
            Err(e) => {
                let current = partitions
                    .lock()
                    .map(|parts| parts.get(&partition).is_some_and(|p| p.epoch == epoch))
                    .unwrap_or(false);
                if !current {
                    return;
                }
                tracing::warn!(partition, error = %e, "loading dedup ids failed; records are looked up meanwhile");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// The offset of `position` (`topic/partition/offset`) when it is on `topic`/`partition`.
fn offset_on(position: &str, topic: &str, partition: i32) -> Option<i64> {
    let mut parts = position.rsplitn(3, '/');
    let offset = parts.next()?.parse().ok()?;
    let p: i32 = parts.next()?.parse().ok()?;
    (parts.next()? == topic && p == partition).then_some(offset)
}

impl<L: Ledger> Stage for Dedup<L> {
    type In = RoutedNotification;
    type Out = RoutedNotification;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn process(
        &self,
        routed: RoutedNotification,
        record: &RecordMeta,
    ) -> Result<Emit<RoutedNotification>, ProcessError> {
        let request = &routed.request;
        if let Err(reason) = request.validate() {
            return Err(ProcessError::reject(ErrorClass::Validation, reason));
        }
        if request.is_expired(now_ms()) {
            self.metrics.decided(NAME, "expired");
            let s = self.status(&routed, Outcome::Expired, Some("expired".into()));
            return Ok(Emit::end(vec![s]));
        }
        if let Some(run) = record.header(REPLAY_RUN) {
            self.metrics.decided(NAME, "replayed");
            let s = self.status(&routed, Outcome::Accepted, Some(format!("replay {run}")));
            return Ok(Emit::next(routed).with_side(s));
        }
        let id = Id {
            user_id: request.user_id.clone(),
            event_id: request.event_id.clone(),
        };
        match self.decide(&id, record).await? {
            Decision::Accepted | Decision::Again => {
                self.metrics.decided(NAME, "accepted");
                let s = self.status(&routed, Outcome::Accepted, None);
                Ok(Emit::next(routed).with_side(s))
            }
            Decision::Duplicate => {
                self.metrics.decided(NAME, "duplicate");
                Ok(Emit::end(vec![self.status(
                    &routed,
                    Outcome::Duplicate,
                    None,
                )]))
            }
        }
    }

    fn output(&self, routed: RoutedNotification, _: &RecordMeta) -> Output {
        let user = routed.request.user_id.clone();
        Output::record(&self.output, user, routed)
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        for (_, p) in partitions {
            let part = self.fresh(false);
            let epoch = part.epoch;
            self.partitions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*p, part);
            tokio::spawn(load(
                self.ledger.clone(),
                self.partitions.clone(),
                *p,
                epoch,
            ));
        }
    }

    fn revoked(&self, partitions: &[(String, i32)]) {
        let mut parts = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        for (_, p) in partitions {
            parts.remove(p);
        }
    }
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
