//! Decoding the record (for its expiry and its status events), producing, and storing the
//! offset once everything a record produced is acknowledged.

use std::time::Duration;

use futures::future::BoxFuture;
use notify_runtime::codec::DecodeError;
use notify_runtime::records::DeliveryStatus;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use super::{ChannelMessage, Decoded, NotificationRequest, Outgoing, Source, Subject, Worker};

/// Resolves when every record produced for one source record is acknowledged.
pub(crate) type AckFuture = BoxFuture<'static, Result<(String, i32, i64), String>>;

impl Worker {
    /// Decodes until there is an answer; a registry outage holds the loop (backpressure).
    pub(super) async fn decode(&mut self, source: Source, msg: &OwnedMessage) -> Decoded {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result: Result<Subject, DecodeError> = match source {
                Source::Step(_) => self
                    .codec
                    .decode::<ChannelMessage>(msg.payload())
                    .await
                    .map(|m| Subject::from(&m)),
                Source::Deferred => self
                    .codec
                    .decode::<NotificationRequest>(msg.payload())
                    .await
                    .map(|r| Subject::from(&r)),
            };
            match result {
                Ok(subject) => {
                    self.health.set_degraded(false);
                    return Decoded::Subject(subject);
                }
                Err(e) => match e.dead_letter_class() {
                    Some(class) => return Decoded::Poison(class, e.to_string()),
                    None => {
                        self.health.set_degraded(true);
                        self.metrics
                            .base
                            .transient_errors
                            .with_label_values(&[crate::NAME])
                            .inc();
                        tracing::warn!(error = %e, "registry unavailable; holding the record");
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return Decoded::ShuttingDown,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                },
            }
        }
    }

    /// The status event as a record for the status topic.
    pub(super) async fn status_record(
        &mut self,
        status: &DeliveryStatus,
    ) -> Result<Option<Outgoing>, String> {
        let topic = &self.config.runtime.status_topic;
        if topic.is_empty() {
            return Ok(None);
        }
        loop {
            match self.codec.encode(topic, status).await {
                Ok(bytes) => {
                    return Ok(Some(Outgoing {
                        topic: topic.clone(),
                        key: Some(status.event_id.clone().into_bytes()),
                        payload: Some(bytes),
                        headers: Vec::new(),
                        timestamp_ms: None,
                    }));
                }
                Err(e) if e.is_retriable() => {
                    self.metrics
                        .base
                        .transient_errors
                        .with_label_values(&[crate::NAME])
                        .inc();
                    tracing::warn!(error = %e, "registry unavailable while encoding; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err("shutdown while encoding".into()),
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Queues `outs`; the source's offset is stored when all of them are acknowledged.
    pub(super) async fn send(
        &mut self,
        source: &OwnedMessage,
        outs: Vec<Outgoing>,
    ) -> Result<(), String> {
        let mut deliveries = Vec::with_capacity(outs.len());
        for out in outs {
            let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
            for (k, v) in &out.headers {
                headers = headers.insert(Header {
                    key: k.as_str(),
                    value: Some(v.as_slice()),
                });
            }
            let delivery = loop {
                let mut record: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(&out.topic).headers(headers.clone());
                if let Some(k) = &out.key {
                    record = record.key(k.as_slice());
                }
                if let Some(p) = &out.payload {
                    record = record.payload(p.as_slice());
                }
                if let Some(ts) = out.timestamp_ms {
                    record = record.timestamp(ts);
                }
                match self.producer.send_result(record) {
                    Ok(d) => break d,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(format!("produce to {}: {e}", out.topic)),
                }
            };
            deliveries.push((out.topic, delivery));
        }
        let metrics = self.metrics.base.clone();
        let key = (
            source.topic().to_string(),
            source.partition(),
            source.offset(),
        );
        self.acks.push(Box::pin(async move {
            for (topic, delivery) in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => metrics
                        .records_produced
                        .with_label_values(&[topic.as_str()])
                        .inc(),
                    Ok(Err((e, _))) => return Err(format!("produce to {topic}: {e}")),
                    Err(_) => return Err(format!("produce to {topic}: producer gone")),
                }
            }
            Ok(key)
        }));
        Ok(())
    }

    /// A record of a topic this processor does not know (cannot happen with its own
    /// subscription): done, nothing to produce.
    pub(super) fn complete_without_output(&mut self, msg: &OwnedMessage) -> Result<(), String> {
        self.acknowledged(Ok((msg.topic().to_string(), msg.partition(), msg.offset())))
    }

    /// Stores the offset past the contiguous prefix of finished records.
    pub(super) fn acknowledged(
        &mut self,
        ack: Result<(String, i32, i64), String>,
    ) -> Result<(), String> {
        let (topic, partition, offset) = ack?;
        let next = self
            .tracker
            .lock()
            .ok()
            .and_then(|mut t| t.complete_current(&topic, partition, offset));
        if let Some(next) = next {
            let mut tpl = TopicPartitionList::new();
            let stored = tpl
                .add_partition_offset(&topic, partition, Offset::Offset(next))
                .and_then(|()| self.consumer.store_offsets(&tpl));
            if let Err(e) = stored {
                tracing::debug!(error = %e, "store offset (partition likely revoked)");
            }
        }
        Ok(())
    }
}
