//! One lane: decode, process, produce, and acknowledge, one record at a time in arrival order.
//! Production is pipelined: the lane moves on once its outputs are queued in the producer;
//! a separate task waits for their acknowledgement and then advances the committable offset.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::dlq::{DeadLetter, ErrorClass};
use crate::processor::{Decode, Output, ProcessError, Processor, RecordMeta, Value, now_ms};
use crate::runner::Shared;

pub(crate) struct Job {
    pub msg: OwnedMessage,
    pub permit: OwnedSemaphorePermit,
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
            if self.shared.shutdown.is_cancelled()
                && self
                    .shared
                    .fatal
                    .lock()
                    .map(|f| f.is_some())
                    .unwrap_or(true)
            {
                // After a fatal error nothing more is produced; the records are redone on restart.
                continue;
            }
            self.handle(job).await;
        }
    }

    async fn handle(&self, job: Job) {
        let Job { msg, permit } = job;
        let meta = meta_of(&msg);
        let started = Instant::now();
        let Some(outputs) = self.outputs_for(&msg, &meta).await else {
            // Shut down while a dependency was failing: not acknowledged, so redone on restart.
            self.shared.metrics.in_flight.dec();
            return;
        };
        self.shared
            .metrics
            .process_seconds
            .observe(started.elapsed().as_secs_f64());
        let Some(encoded) = self.encode_all(outputs).await else {
            self.shared.metrics.in_flight.dec();
            return;
        };
        let Some(pending) = self.send_all(encoded, &meta) else {
            self.shared.metrics.in_flight.dec();
            return;
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            for (topic, delivery) in pending {
                match delivery.await {
                    Ok(Ok(_)) => shared
                        .metrics
                        .records_produced
                        .with_label_values(&[topic.as_str()])
                        .inc(),
                    Ok(Err((e, _))) => return shared.fail(format!("produce to {topic}: {e}")),
                    Err(_) => return shared.fail(format!("produce to {topic}: producer gone")),
                }
            }
            if let Some(ts) = meta.timestamp_ms {
                let age = (now_ms() - ts).max(0) as f64 / 1000.0;
                shared.metrics.end_to_end_seconds.observe(age);
            }
            // With transactions the offset went into the transaction when the outputs did.
            let next = match shared.txn {
                Some(_) => None,
                None => shared
                    .tracker
                    .lock()
                    .ok()
                    .and_then(|mut t| t.complete(&meta.topic, meta.partition, meta.offset)),
            };
            if let Some(next) = next {
                // `store_offsets` takes the next offset to read, as committed (the older
                // `store_offset` adds one itself, which would skip a record).
                let mut tpl = TopicPartitionList::new();
                let stored = tpl
                    .add_partition_offset(&meta.topic, meta.partition, Offset::Offset(next))
                    .and_then(|()| shared.consumer.store_offsets(&tpl));
                if let Err(e) = stored {
                    tracing::debug!(error = %e, "store offset (partition likely revoked)");
                }
            }
            shared.metrics.in_flight.dec();
            drop(permit);
            shared.capacity.notify_one();
        });
    }

    /// Decodes and processes until there is an answer: outputs, or a dead letter. Transient
    /// failures are retried with backoff; None means shutdown came first.
    async fn outputs_for(&self, msg: &OwnedMessage, meta: &RecordMeta) -> Option<Vec<Output>> {
        let mut backoff = Duration::from_millis(100);
        let mut first_failure = None;
        loop {
            let result = match P::Input::decode(&self.shared.codec, msg.payload()).await {
                Ok(input) => self.processor.process(input, meta).await,
                Err(e) => match e.dead_letter_class() {
                    Some(class) => Err(ProcessError::reject(class, e.to_string())),
                    None => Err(ProcessError::Transient(e.to_string())),
                },
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
                }) => {
                    if first_failure.is_some() {
                        self.shared.health.set_degraded(false);
                    }
                    tracing::debug!(class = class.as_str(), %reason, topic = %meta.topic, offset = meta.offset, "dead letter");
                    self.shared
                        .metrics
                        .dead_letters
                        .with_label_values(&[class.as_str()])
                        .inc();
                    outputs.push(self.dead_letter(
                        msg,
                        class,
                        reason,
                        first_failure.unwrap_or_else(now_ms),
                    ));
                    return Some(outputs);
                }
                Err(ProcessError::Transient(reason)) => {
                    first_failure.get_or_insert_with(now_ms);
                    self.shared.metrics.transient_errors.inc();
                    self.shared.health.set_degraded(true);
                    tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "transient failure; holding the record");
                    tokio::select! {
                        _ = self.shared.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn dead_letter(
        &self,
        msg: &OwnedMessage,
        class: ErrorClass,
        reason: String,
        first_failure_at_ms: i64,
    ) -> Output {
        let dl = DeadLetter {
            stage: self.shared.spec.name.clone(),
            class,
            reason,
            source_topic: msg.topic().to_string(),
            source_partition: msg.partition(),
            source_offset: msg.offset(),
            attempts: 1,
            first_failure_at_ms,
        };
        let headers = dl.headers(msg.headers());
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        let mut out = Output::bytes(
            &self.shared.config.runtime.dlq_topic,
            key,
            msg.payload().unwrap_or_default().to_vec(),
        );
        out.headers = headers
            .iter()
            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
            .collect();
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
                        self.shared.metrics.transient_errors.inc();
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
            });
        }
        Some(encoded)
    }

    /// Queues a record's outputs in the producer, in order. With transactions this happens
    /// under the shared gate together with noting the record's offset, so a commit sees both
    /// or neither. None means a fatal error.
    fn send_all(
        &self,
        encoded: Vec<Encoded>,
        meta: &RecordMeta,
    ) -> Option<Vec<(String, DeliveryFuture)>> {
        let txn = self.shared.txn.as_deref();
        let _shared_gate = txn.map(|t| t.gate.read().unwrap_or_else(|e| e.into_inner()));
        if txn.is_some() {
            let ours = self
                .shared
                .tracker
                .lock()
                .map(|t| t.is_pending(&meta.topic, meta.partition, meta.offset))
                .unwrap_or(false);
            if !ours {
                // Revoked (and committed) while we worked: its new owner produces it.
                return Some(Vec::new());
            }
        }
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
                if let Some(ts) = meta.timestamp_ms {
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
        if let Some(t) = txn {
            let next = self
                .shared
                .tracker
                .lock()
                .ok()
                .and_then(|mut tr| tr.complete(&meta.topic, meta.partition, meta.offset));
            t.record_produced(&meta.topic, meta.partition, next);
        }
        Some(deliveries)
    }
}

/// An output ready for the producer.
struct Encoded {
    topic: String,
    key: Option<String>,
    payload: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

fn meta_of(msg: &OwnedMessage) -> RecordMeta {
    RecordMeta {
        topic: msg.topic().to_string(),
        partition: msg.partition(),
        offset: msg.offset(),
        key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        timestamp_ms: msg.timestamp().to_millis(),
        headers: msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
