//! The dedup decision for one record: cache, ledger claim, forward or DUPLICATE.

use std::future::Future;

use notify_runtime::dlq::ErrorClass;
use notify_runtime::records::{DeliveryStatus, Outcome, RoutedNotification};
use notify_runtime::{Output, ProcessError, Processor, RecordMeta, now_ms};

use crate::cache::ClaimCache;
use crate::ledger::{Claim, Claimed, Ledger};

/// Where accepted records go: the Kafka topic in production, a list in unit tests.
pub trait Sink: Send + Sync + 'static {
    fn partition_for(&self, key: &str) -> i32;
    /// An offset at or below where the next record to `partition` lands.
    fn floor(&self, partition: i32) -> i64;
    /// Writes the record and waits for its acknowledgement.
    fn send(
        &self,
        partition: i32,
        key: &str,
        record: &RoutedNotification,
        owner: &str,
        timestamp_ms: Option<i64>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether `owner`'s copy of `event_id` is in `partition` at or after `from`.
    fn was_forwarded(
        &self,
        partition: i32,
        from: i64,
        event_id: &str,
        owner: &str,
    ) -> impl Future<Output = Result<bool, String>> + Send;
}

pub struct Dedup<L, S> {
    pub ledger: L,
    pub sink: S,
    pub cache: ClaimCache,
    pub status_topic: String,
    pub stage: String,
}

impl<L: Ledger, S: Sink> Dedup<L, S> {
    fn status(
        &self,
        routed: &RoutedNotification,
        outcome: Outcome,
        reason: Option<&str>,
    ) -> Output {
        Output::status(
            &self.status_topic,
            DeliveryStatus {
                event_id: routed.request.event_id.clone(),
                user_id: routed.request.user_id.clone(),
                channel: None,
                recipient: None,
                outcome,
                reason: reason.map(str::to_string),
                attempt: 0,
                stage: self.stage.clone(),
                at: now_ms(),
            },
        )
    }

    async fn forward(
        &self,
        routed: &RoutedNotification,
        partition: i32,
        key: &str,
        owner: &str,
        meta: &RecordMeta,
    ) -> Result<Vec<Output>, ProcessError> {
        self.sink
            .send(partition, key, routed, owner, meta.timestamp_ms)
            .await
            .map_err(ProcessError::transient)?;
        Ok(vec![self.status(routed, Outcome::Accepted, None)])
    }
}

impl<L: Ledger, S: Sink> Processor for Dedup<L, S> {
    type Input = RoutedNotification;

    async fn process(
        &self,
        routed: RoutedNotification,
        meta: &RecordMeta,
    ) -> Result<Vec<Output>, ProcessError> {
        let request = &routed.request;
        if let Err(reason) = request.validate() {
            return Err(ProcessError::reject(ErrorClass::Validation, reason));
        }
        let now = now_ms();
        if request.is_expired(now) {
            return Ok(vec![self.status(
                &routed,
                Outcome::Expired,
                Some("expired"),
            )]);
        }
        let event_id = request.event_id.as_str();
        // The input record itself: the same one read again is the same owner.
        let owner = format!("{}/{}/{}", meta.topic, meta.partition, meta.offset);
        if self.cache.is_duplicate(event_id, &owner, now) {
            return Ok(vec![self.status(&routed, Outcome::Duplicate, None)]);
        }
        let key = meta.key.clone().unwrap_or_else(|| request.user_id.clone());
        let partition = self.sink.partition_for(&key);
        let claim = Claim {
            event_id: event_id.to_string(),
            owner: owner.clone(),
            out_partition: partition,
            scan_from: self.sink.floor(partition),
            at_ms: now,
        };
        let claimed = self
            .ledger
            .claim(&claim)
            .await
            .map_err(ProcessError::transient)?;
        match claimed {
            Claimed::New => {
                self.cache.insert(event_id, &owner, now);
                self.forward(&routed, partition, &key, &owner, meta).await
            }
            Claimed::Taken {
                owner: holder,
                at_ms,
            } => {
                self.cache.insert(event_id, &holder, at_ms);
                Ok(vec![self.status(&routed, Outcome::Duplicate, None)])
            }
            Claimed::Mine {
                out_partition,
                scan_from,
            } => {
                // Claimed by this record before: it went out unless a crash came in between.
                let sent = self
                    .sink
                    .was_forwarded(out_partition, scan_from, event_id, &owner)
                    .await
                    .map_err(ProcessError::transient)?;
                if sent {
                    // Its status may have been lost with the crash: say it again.
                    Ok(vec![self.status(&routed, Outcome::Accepted, None)])
                } else {
                    self.forward(&routed, out_partition, &key, &owner, meta)
                        .await
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
