//! One lane: decode, process, produce, and acknowledge, one record at a time in arrival order.
//!
//! At-least-once: the lane moves on once a record's outputs are queued in the producer; a
//! separate task waits for their acknowledgement and then advances the committable offset.
//! Exactly-once: a finished record's outputs wait in the offset tracker until every record
//! before it in its partition has finished, then go into the open transaction in offset
//! order with their offsets (see txn.rs), so lanes may still be chosen by key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::dlq::{DeadLetter, ErrorClass};
use crate::processor::{Decode, Output, ProcessError, Processor, RecordMeta, Value, now_ms};
use crate::runner::Shared;

pub(crate) struct Job {
    pub record: RecordMeta,
    /// The partition's assignment epoch the record was read under.
    pub epoch: u64,
    pub permit: InFlight,
}

/// A record's place in the in-flight bound: dropped (whichever way the record ends: produced,
/// abandoned, or forgotten with a revoked partition) it frees the place and wakes the loop.
/// (It holds no `Shared`: held outputs live in the tracker inside it, which would make a cycle.)
pub(crate) struct InFlight {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
    capacity: Arc<tokio::sync::Notify>,
}

impl InFlight {
    pub fn new(permit: OwnedSemaphorePermit, shared: &Shared) -> InFlight {
        shared.metrics.in_flight.inc();
        InFlight {
            _permit: permit,
            gauge: shared.metrics.in_flight.clone(),
            capacity: shared.capacity.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
        self.capacity.notify_one();
    }
}

/// The outputs of one finished record, waiting for their turn (exactly-once mode). It keeps
/// the record's in-flight permit, so outputs held behind a slow record count towards the
/// in-flight bound and memory stays bounded.
pub(crate) struct Release {
    encoded: Vec<Encoded>,
    timestamp_ms: Option<i64>,
    permit: InFlight,
}

pub(crate) struct Lane<P> {
    pub processor: Arc<P>,
    pub shared: Arc<Shared>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl<P: Processor> Lane<P> {
    pub async fn run(self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            self.shared.capacity.notify_one();
            if self.shared.shutdown.is_cancelled() && self.shared.has_failed() {
                // After a fatal error nothing more is produced; the records are redone on restart.
                continue;
            }
            self.handle(job).await;
        }
    }

    fn stage(&self) -> &str {
        &self.shared.spec.name
    }

    async fn handle(&self, job: Job) {
        let Job {
            record,
            epoch,
            permit,
        } = job;
        let started = Instant::now();
        let outputs = self.outputs_for(&record, epoch).await;
        let encoded = match outputs {
            Some(outputs) => {
                log_outcomes(&outputs);
                self.shared
                    .metrics
                    .process_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.encode_all(outputs).await
            }
            None => None,
        };
        let Some(encoded) = encoded else {
            // Shut down, revoked, or a fatal error: not finished, so redone by whoever owns
            // the partition next.
            return;
        };
        let Some(encoded) = self.within_limit(&record, encoded).await else {
            return;
        };
        if self.shared.txn.is_some() {
            self.release_in_order(&record, epoch, encoded, permit);
            return;
        }
        let Some(pending) = self.send_all(encoded, record.timestamp_ms) else {
            return;
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if !acknowledged(&shared, pending, record.timestamp_ms).await {
                return;
            }
            let next = shared.tracker.lock().ok().and_then(|mut t| {
                t.finish(&record.topic, record.partition, record.offset, epoch, None)
                    .next_offset
            });
            if let Some(next) = next {
                // `store_offsets` takes the next offset to read, as committed (the older
                // `store_offset` adds one itself, which would skip a record).
                let mut tpl = TopicPartitionList::new();
                let stored = tpl
                    .add_partition_offset(&record.topic, record.partition, Offset::Offset(next))
                    .and_then(|()| shared.consumer.store_offsets(&tpl));
                if let Err(e) = stored {
                    tracing::debug!(error = %e, "store offset (partition likely revoked)");
                }
            }
            drop(permit);
        });
    }

    /// Decodes and processes until there is an answer: outputs, or a dead letter. Transient
    /// failures are retried with backoff; None means shutdown came first, or the partition
    /// was taken away meanwhile (its new owner redoes the record).
    async fn outputs_for(&self, record: &RecordMeta, epoch: u64) -> Option<Vec<Output>> {
        let mut backoff = Duration::from_millis(100);
        let mut first_failure = None;
        let limit = self.shared.config.runtime.max_record_bytes;
        let size = record.payload.as_ref().map_or(0, |p| p.len());
        loop {
            // Every attempt, the first too: a record handed out before its partition was
            // revoked (and maybe assigned here again) is the current assignment's to do. Done
            // here as well, a delivery would be decided twice under the new owner's epoch, and
            // its provider called twice.
            let ours = self
                .shared
                .tracker
                .lock()
                .map(|t| t.is_current(&record.topic, record.partition, epoch))
                .unwrap_or(false);
            if !ours {
                tracing::info!(topic = %record.topic, partition = record.partition, offset = record.offset, "partition revoked before the record was done; leaving it to the new owner");
                if first_failure.is_some() {
                    self.shared.health.set_degraded(false);
                }
                return None;
            }
            let result = if size > limit {
                // Not even decoded: whatever it holds, it is more than any valid record.
                Err(ProcessError::reject(
                    ErrorClass::Validation,
                    format!("record of {size} bytes is over runtime.max_record_bytes ({limit})"),
                ))
            } else {
                match P::Input::decode(&self.shared.codec, record.payload.as_deref()).await {
                    Ok(input) => self.processor.process(input, record).await,
                    Err(e) => match e.dead_letter_class() {
                        Some(class) => Err(ProcessError::reject(class, e.to_string())),
                        None => Err(ProcessError::Transient(e.to_string())),
                    },
                }
            };
            match result {
                Ok(outputs) => {
                    if first_failure.is_some() {
                        self.shared.health.set_degraded(false);
                    }
                    return Some(outputs);
                }
                Err(ProcessError::Reject {
                    class,
                    reason,
                    mut outputs,
                    stage,
                }) => {
                    if first_failure.is_some() {
                        self.shared.health.set_degraded(false);
                    }
                    let stage = stage.unwrap_or(self.stage());
                    tracing::debug!(class = class.as_str(), stage, reason = %crate::records::scrub(&reason), topic = %record.topic, offset = record.offset, "dead letter");
                    self.shared
                        .metrics
                        .dead_letters
                        .with_label_values(&[stage, class.as_str()])
                        .inc();
                    outputs.push(self.dead_letter(
                        record,
                        stage,
                        class,
                        reason,
                        first_failure.unwrap_or_else(now_ms),
                    ));
                    return Some(outputs);
                }
                Err(ProcessError::Transient(reason)) => {
                    first_failure.get_or_insert_with(now_ms);
                    self.shared
                        .metrics
                        .transient_errors
                        .with_label_values(&[self.stage()])
                        .inc();
                    self.shared.health.set_degraded(true);
                    tracing::warn!(reason = %crate::records::scrub(&reason), retry_in_ms = backoff.as_millis() as u64, "transient failure; holding the record");
                    tokio::select! {
                        _ = self.shared.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// `encoded`, or, when one output is larger than the producer takes, the record's dead
    /// letter instead of all its outputs (sending would fail the processor, and a restart would
    /// fail on the same record again). A dead letter too large itself goes without the payload;
    /// its headers still say where the record is.
    async fn within_limit(
        &self,
        record: &RecordMeta,
        encoded: Vec<Encoded>,
    ) -> Option<Vec<Encoded>> {
        let limit = self.shared.max_record_bytes;
        let Some(big) = encoded.iter().find(|e| e.size() > limit) else {
            return Some(encoded);
        };
        let reason = format!(
            "an output to {} would be {} bytes, over the producer's limit of {limit} (message.max.bytes)",
            big.topic,
            big.size()
        );
        tracing::warn!(topic = %record.topic, offset = record.offset, %reason, "dead letter");
        self.shared
            .metrics
            .dead_letters
            .with_label_values(&[self.stage(), ErrorClass::Validation.as_str()])
            .inc();
        let mut dl = self.dead_letter(
            record,
            self.stage(),
            ErrorClass::Validation,
            reason,
            now_ms(),
        );
        let payload_len = record.payload.as_ref().map_or(0, Vec::len);
        if payload_len + 4096 > limit {
            dl.value = Value::Bytes(Vec::new());
            dl.headers.push((
                "notify.error.payload_dropped".into(),
                payload_len.to_string().into_bytes(),
            ));
        }
        self.encode_all(vec![dl]).await
    }

    fn dead_letter(
        &self,
        record: &RecordMeta,
        stage: &str,
        class: ErrorClass,
        reason: String,
        first_failure_at_ms: i64,
    ) -> Output {
        let dl = DeadLetter {
            stage: stage.to_string(),
            class,
            reason,
            source_topic: record.topic.clone(),
            source_partition: record.partition,
            source_offset: record.offset,
            attempts: 1,
            first_failure_at_ms,
        };
        let mut out = Output::bytes(
            &self.shared.config.runtime.dlq_topic,
            record.key.clone(),
            record.payload.clone().unwrap_or_default(),
        );
        out.headers = dl.headers_after(&record.headers);
        out
    }

    /// Encodes every output (the registry may be asked). None means shutdown or a fatal
    /// error came first.
    async fn encode_all(&self, outputs: Vec<Output>) -> Option<Vec<Encoded>> {
        let mut encoded = Vec::with_capacity(outputs.len());
        for output in outputs {
            let payload = loop {
                let attempt = match &output.value {
                    Value::Record(r) => r.encode(&self.shared.codec, &output.topic).await.map(Some),
                    Value::Bytes(b) => Ok(Some(b.clone())),
                    Value::Tombstone => Ok(None),
                };
                match attempt {
                    Ok(p) => break p,
                    Err(e) if e.is_retriable() => {
                        self.shared
                            .metrics
                            .transient_errors
                            .with_label_values(&[self.stage()])
                            .inc();
                        tracing::warn!(error = %e, "registry unavailable while encoding; retrying");
                        tokio::select! {
                            _ = self.shared.shutdown.cancelled() => return None,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                    }
                    Err(e) => {
                        // A schema the registry refuses is a deployment error, not bad input.
                        self.shared.fail(e.to_string());
                        return None;
                    }
                }
            };
            let mut headers = OwnedHeaders::new_with_capacity(output.headers.len());
            for (k, v) in &output.headers {
                headers = headers.insert(Header {
                    key: k.as_str(),
                    value: Some(v.as_slice()),
                });
            }
            encoded.push(Encoded {
                topic: output.topic,
                key: output.key,
                payload,
                headers,
                partition: output.partition,
            });
        }
        Some(encoded)
    }

    /// Exactly-once: notes the record finished and sends, under the shared transaction gate,
    /// the outputs of every record this completes the prefix of, in offset order, together
    /// with the next offset to commit.
    fn release_in_order(
        &self,
        record: &RecordMeta,
        epoch: u64,
        encoded: Vec<Encoded>,
        permit: InFlight,
    ) {
        let Some(txn) = self.shared.txn.as_deref() else {
            return;
        };
        let _gate = txn.gate.read().unwrap_or_else(|e| e.into_inner());
        let mut tracker = self
            .shared
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let released = tracker.finish(
            &record.topic,
            record.partition,
            record.offset,
            epoch,
            Some(Release {
                encoded,
                timestamp_ms: record.timestamp_ms,
                permit,
            }),
        );
        let Some(next) = released.next_offset else {
            return;
        };
        for release in released.outputs {
            let sent = self.send_all(release.encoded, release.timestamp_ms);
            drop(release.permit);
            let Some(pending) = sent else {
                return;
            };
            let shared = self.shared.clone();
            let timestamp_ms = release.timestamp_ms;
            tokio::spawn(async move {
                acknowledged(&shared, pending, timestamp_ms).await;
            });
        }
        txn.record_produced(&record.topic, record.partition, Some(next));
    }

    /// Queues outputs in the producer, in order. None means a fatal error.
    fn send_all(
        &self,
        encoded: Vec<Encoded>,
        timestamp_ms: Option<i64>,
    ) -> Option<Vec<(String, DeliveryFuture)>> {
        let mut deliveries = Vec::with_capacity(encoded.len());
        for e in encoded {
            loop {
                let mut record: FutureRecord<'_, str, [u8]> =
                    FutureRecord::to(&e.topic).headers(e.headers.clone());
                if let Some(k) = &e.key {
                    record = record.key(k.as_str());
                }
                if let Some(p) = &e.payload {
                    record = record.payload(p.as_slice());
                }
                if let Some(p) = e.partition {
                    record = record.partition(p);
                }
                if let Some(ts) = timestamp_ms {
                    record = record.timestamp(ts);
                }
                match self.shared.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push((e.topic, delivery));
                        break;
                    }
                    // Rare (the queue is sized for many lanes); a short blocking wait keeps
                    // the transaction gate free of await points.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((err, _)) => {
                        self.shared.fail(format!("produce to {}: {err}", e.topic));
                        return None;
                    }
                }
            }
        }
        Some(deliveries)
    }
}

/// Waits for every delivery; counts them and the end-to-end latency. False (and the
/// processor stops) when one failed.
async fn acknowledged(
    shared: &Shared,
    pending: Vec<(String, DeliveryFuture)>,
    timestamp_ms: Option<i64>,
) -> bool {
    for (topic, delivery) in pending {
        match delivery.await {
            Ok(Ok(_)) => shared
                .metrics
                .records_produced
                .with_label_values(&[topic.as_str()])
                .inc(),
            Ok(Err((e, _))) => {
                shared.fail(format!("produce to {topic}: {e}"));
                return false;
            }
            Err(_) => {
                shared.fail(format!("produce to {topic}: producer gone"));
                return false;
            }
        }
    }
    if let Some(ts) = timestamp_ms {
        let age = (now_ms() - ts).max(0) as f64 / 1000.0;
        shared.metrics.end_to_end_seconds.observe(age);
    }
    true
}

/// One line per status event at debug level under the target `notify::outcome`
/// (`NOTIFY_LOG=info,notify::outcome=debug`): event, user, stage, outcome, channel and reason
/// as fields, never the contact point (not even masked).
fn log_outcomes(outputs: &[Output]) {
    if !tracing::enabled!(target: "notify::outcome", tracing::Level::DEBUG) {
        return;
    }
    for s in outputs
        .iter()
        .filter_map(|o| o.downcast::<crate::records::DeliveryStatus>())
    {
        // The status topic's spelling (SENT, RATE_LIMITED, ...).
        let outcome = serde_json::to_value(s.outcome).unwrap_or_default();
        tracing::debug!(
            target: "notify::outcome",
            event_id = %s.event_id,
            user_id = %s.user_id,
            stage = %s.stage,
            outcome = outcome.as_str().unwrap_or(""),
            channel = s.channel.as_deref().unwrap_or(""),
            reason = s.reason.as_deref().unwrap_or(""),
            "outcome"
        );
    }
}

/// An output ready for the producer.
pub(crate) struct Encoded {
    topic: String,
    key: Option<String>,
    payload: Option<Vec<u8>>,
    headers: OwnedHeaders,
    partition: Option<i32>,
}

impl Encoded {
    /// Bytes as librdkafka counts them against `message.max.bytes` (before compression).
    fn size(&self) -> usize {
        let headers: usize = (0..self.headers.count())
            .map(|i| {
                let h = self.headers.get(i);
                h.key.len() + h.value.map_or(0, <[u8]>::len)
            })
            .sum();
        self.key.as_ref().map_or(0, String::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + headers
    }
}
