//! The one interface a stage implements: a record in, zero or more outputs out.
//!
//! An empty output list means "filtered" (the offset still advances). The error says what the
//! runtime does next: `Reject` dead-letters the record and goes on, `Transient` tries the same
//! record again after a backoff and holds the lane meanwhile (backpressure).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::codec::{AvroCodec, DecodeError, EncodeError};
use crate::dlq::ErrorClass;
use crate::records::{AvroRecord, DeliveryStatus};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stage's business rule.
pub trait Processor: Send + Sync + 'static {
    /// What the input topics carry.
    type Input: Decode;

    /// Handles one record. Records with the same key arrive one at a time, in offset order.
    fn process(
        &self,
        input: Self::Input,
        meta: &RecordMeta,
    ) -> impl Future<Output = Result<Vec<Output>, ProcessError>> + Send;

    /// Called when the group assigns input partitions `(topic, partition)`, before any of
    /// their records is processed (e.g. to load a co-partitioned table). Must return quickly.
    fn assigned(&self, _partitions: &[(String, i32)]) {}

    /// Called when input partitions are taken away, after their in-flight records finished.
    fn revoked(&self, _partitions: &[(String, i32)]) {}
}

/// The rebalance hooks of a processor, object-safe so the consumer context can hold them.
pub(crate) trait RebalanceHooks: Send + Sync {
    fn assigned(&self, partitions: &[(String, i32)]);
    fn revoked(&self, partitions: &[(String, i32)]);
}

impl<P: Processor> RebalanceHooks for P {
    fn assigned(&self, partitions: &[(String, i32)]) {
        Processor::assigned(self, partitions)
    }
    fn revoked(&self, partitions: &[(String, i32)]) {
        Processor::revoked(self, partitions)
    }
}

/// One input record: where it came from and what it carries.
#[derive(Debug, Clone, Default)]
pub struct RecordMeta {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// The Kafka timestamp; the runtime carries it from input to output, so it is event time.
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The value as it arrived (dead letters and forwarding copy it untouched).
    pub payload: Option<Vec<u8>>,
}

impl RecordMeta {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// `topic/partition/offset`: the identity of this record in the log.
    pub fn position(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    /// A record for unit tests of a stage.
    pub fn for_test(topic: &str, partition: i32, offset: i64, key: &str) -> RecordMeta {
        RecordMeta {
            topic: topic.into(),
            partition,
            offset,
            key: Some(key.into()),
            timestamp_ms: Some(now_ms()),
            ..RecordMeta::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The record can never succeed: dead-letter it with this class and reason. `outputs`
    /// (typically a status event) are produced with it. `stage` names the stage that refused
    /// it when several run in one processor (None: the processor itself).
    #[error("{class:?}: {reason}")]
    Reject {
        class: ErrorClass,
        reason: String,
        outputs: Vec<Output>,
        stage: Option<&'static str>,
    },
    /// A dependency is unavailable: try the same record again later, never skip it.
    #[error("transient: {0}")]
    Transient(String),
}

impl ProcessError {
    pub fn reject(class: ErrorClass, reason: impl Into<String>) -> Self {
        ProcessError::Reject {
            class,
            reason: reason.into(),
            outputs: Vec::new(),
            stage: None,
        }
    }

    /// A rejection that still produces `outputs` (e.g. the status saying why).
    pub fn reject_with(class: ErrorClass, reason: impl Into<String>, outputs: Vec<Output>) -> Self {
        ProcessError::Reject {
            class,
            reason: reason.into(),
            outputs,
            stage: None,
        }
    }

    pub fn transient(reason: impl std::fmt::Display) -> Self {
        ProcessError::Transient(reason.to_string())
    }
}

/// How an input type is read from bytes.
pub trait Decode: Sized + Send + 'static {
    fn decode<'a>(
        codec: &'a AvroCodec,
        bytes: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Self, DecodeError>>;
}

impl<T: AvroRecord> Decode for T {
    fn decode<'a>(
        codec: &'a AvroCodec,
        bytes: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Self, DecodeError>> {
        Box::pin(codec.decode::<T>(bytes))
    }
}

/// The record's value as it is, for stages that move bytes (retry ladder, pass-through).
#[derive(Debug, Clone)]
pub struct Raw(pub Option<Vec<u8>>);

impl Decode for Raw {
    fn decode<'a>(
        _: &'a AvroCodec,
        bytes: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Self, DecodeError>> {
        Box::pin(async move { Ok(Raw(bytes.map(<[u8]>::to_vec))) })
    }
}

/// One record to produce.
#[derive(Clone)]
pub struct Output {
    pub topic: String,
    pub key: Option<String>,
    pub value: Value,
    pub headers: Vec<(String, Vec<u8>)>,
    /// An explicit partition (a record forwarded to its user's partition); None lets the
    /// producer's partitioner choose from the key.
    pub partition: Option<i32>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("topic", &self.topic)
            .field("key", &self.key)
            .finish()
    }
}

#[derive(Clone)]
pub enum Value {
    /// Encoded by the runtime against the registry under `<topic>-value`.
    Record(Arc<dyn EncodeRecord>),
    Bytes(Vec<u8>),
    Tombstone,
}

/// A record whose type is erased so outputs of different types share one list.
pub trait EncodeRecord: Send + Sync {
    fn encode<'a>(
        &'a self,
        codec: &'a AvroCodec,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, EncodeError>>;
    /// The record itself, for tests that look at outputs without a registry.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: AvroRecord> EncodeRecord for T {
    fn encode<'a>(
        &'a self,
        codec: &'a AvroCodec,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, EncodeError>> {
        Box::pin(codec.encode(topic, self))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Output {
    pub fn record<T: AvroRecord>(
        topic: impl Into<String>,
        key: impl Into<String>,
        value: T,
    ) -> Output {
        Output {
            topic: topic.into(),
            key: Some(key.into()),
            value: Value::Record(Arc::new(value)),
            headers: Vec::new(),
            partition: None,
        }
    }

    pub fn bytes(topic: impl Into<String>, key: Option<String>, value: Vec<u8>) -> Output {
        Output {
            topic: topic.into(),
            key,
            value: Value::Bytes(value),
            headers: Vec::new(),
            partition: None,
        }
    }

    /// A status event, keyed by event id.
    /// Its reason is scrubbed here too (whoever built it): no address, number or token.
    pub fn status(topic: impl Into<String>, mut status: DeliveryStatus) -> Output {
        status.reason = status.reason.map(|r| crate::records::scrub(&r));
        let key = status.event_id.clone();
        Output::record(topic, key, status)
    }

    pub fn to_partition(mut self, partition: i32) -> Output {
        self.partition = Some(partition);
        self
    }

    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Output {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// The record of type `T` this output carries, if it carries one (tests).
    pub fn downcast<T: AvroRecord>(&self) -> Option<&T> {
        match &self.value {
            Value::Record(r) => r.as_any().downcast_ref::<T>(),
            _ => None,
        }
    }
}

pub use crate::records::now_ms;
