//! Avro in the Confluent wire format (magic byte 0, 4-byte schema id, Avro body) through a
//! Confluent-compatible schema registry. Schemas are cached by id (decoding) and by subject
//! (encoding) inside schema_registry_converter, so the registry is asked once per schema.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::get_supplied_schema;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;

use crate::config::RegistryConfig;
use crate::records::AvroRecord;

/// Why bytes could not become a record. The class decides where the record goes.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not the wire format at all (no magic byte, too short, a null value).
    #[error("not Confluent wire format: {0}")]
    NotWireFormat(String),
    /// The schema id is not known to the registry.
    #[error("unknown schema id: {0}")]
    UnknownSchema(String),
    /// The bytes do not match the writer schema they claim.
    #[error("malformed Avro body: {0}")]
    Malformed(String),
    /// The writer's record cannot be read as this record type (e.g. a required field is missing).
    #[error("record does not fit {expected}: {reason}")]
    Incompatible {
        expected: &'static str,
        reason: String,
    },
    /// The registry could not be asked (down, timeout): try the same record again later.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
}

impl DecodeError {
    /// The dead-letter class of CONTRACT.md, or None when the record should be retried.
    pub fn dead_letter_class(&self) -> Option<crate::dlq::ErrorClass> {
        use crate::dlq::ErrorClass;
        match self {
            DecodeError::NotWireFormat(_) | DecodeError::Malformed(_) => Some(ErrorClass::Decode),
            DecodeError::UnknownSchema(_) | DecodeError::Incompatible { .. } => {
                Some(ErrorClass::Schema)
            }
            DecodeError::RegistryUnavailable(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    #[error("cannot encode {record} for {topic}: {reason}")]
    Rejected {
        record: &'static str,
        topic: String,
        reason: String,
    },
}

impl EncodeError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, EncodeError::RegistryUnavailable(_))
    }
}

/// Encodes and decodes the project's records against the registry.
pub struct AvroCodec {
    decoder: AvroDecoder,
    encoder: AvroEncoder,
    auto_register: bool,
    reader_schemas: Mutex<HashMap<&'static str, Arc<Schema>>>,
    /// The subject strategy per (topic, record): building one with the supplied schema
    /// serialises the schema to JSON, too costly to repeat for every record.
    strategies: Mutex<HashMap<(String, &'static str), Arc<SubjectNameStrategy>>>,
    /// Per (writer schema id, record): whether the writer's schema is the record's own, so
    /// the decoded value needs no resolution (rebuilding the schema's name table per record
    /// would otherwise dominate decoding). Almost every record is written by this project.
    same_schema: Mutex<HashMap<(u32, &'static str), bool>>,
}

impl AvroCodec {
    pub fn new(config: &RegistryConfig) -> Result<Self, SRCError> {
        let settings = || -> Result<SrSettings, SRCError> {
            let mut builder = SrSettings::new_builder(config.url.clone());
            builder.set_timeout(Duration::from_millis(config.timeout_ms));
            if let Some(user) = &config.username {
                builder.set_basic_authorization(user, config.password.as_deref());
            }
            builder.build()
        };
        Ok(AvroCodec {
            decoder: AvroDecoder::new(settings()?),
            encoder: AvroEncoder::new(settings()?),
            auto_register: config.auto_register,
            reader_schemas: Mutex::new(HashMap::new()),
            strategies: Mutex::new(HashMap::new()),
            same_schema: Mutex::new(HashMap::new()),
        })
    }

    fn reader_schema<T: AvroRecord>(&self) -> Arc<Schema> {
        let mut cache = self
            .reader_schemas
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cache
            .entry(T::FULL_NAME)
            .or_insert_with(|| {
                // The schema text is compiled in and checked by a unit test.
                Arc::new(Schema::parse_str(T::SCHEMA).expect("built-in schema parses"))
            })
            .clone()
    }

    fn is_own_schema<T: AvroRecord>(&self, id: u32, writer: &Schema, reader: &Schema) -> bool {
        let mut known = self.same_schema.lock().unwrap_or_else(|e| e.into_inner());
        *known
            .entry((id, T::FULL_NAME))
            .or_insert_with(|| writer.canonical_form() == reader.canonical_form())
    }

    fn strategy<T: AvroRecord>(&self, topic: &str) -> Arc<SubjectNameStrategy> {
        let mut cache = self.strategies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.get(&(topic.to_string(), T::FULL_NAME)) {
            return s.clone();
        }
        let strategy = if self.auto_register {
            let schema = self.reader_schema::<T>();
            SubjectNameStrategy::TopicNameStrategyWithSchema(
                topic.to_string(),
                false,
                get_supplied_schema(&schema),
            )
        } else {
            SubjectNameStrategy::TopicNameStrategy(topic.to_string(), false)
        };
        let strategy = Arc::new(strategy);
        cache.insert((topic.to_string(), T::FULL_NAME), strategy.clone());
        strategy
    }

    /// Decodes a value written with any registered schema into `T`, resolving the writer's
    /// schema against `T`'s (defaults fill added fields; a missing required field fails).
    pub async fn decode<T: AvroRecord>(&self, bytes: Option<&[u8]>) -> Result<T, DecodeError> {
        let bytes = bytes.ok_or_else(|| DecodeError::NotWireFormat("null value".into()))?;
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err(DecodeError::NotWireFormat(format!(
                "{} bytes, first byte {:#04x}",
                bytes.len(),
                bytes.first().copied().unwrap_or(0)
            )));
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        // Asking for the schema first tells an unknown id apart from a malformed body.
        let writer = self.decoder.get_schema(id).await.map_err(|e| {
            if e.retriable {
                DecodeError::RegistryUnavailable(e.to_string())
            } else {
                DecodeError::UnknownSchema(format!("{id}: {e}"))
            }
        })?;
        let decoded = self.decoder.decode(Some(bytes)).await.map_err(|e| {
            if e.retriable {
                DecodeError::RegistryUnavailable(e.to_string())
            } else {
                DecodeError::Malformed(e.to_string())
            }
        })?;
        let reader = self.reader_schema::<T>();
        let value = if self.is_own_schema::<T>(id, &writer.parsed, &reader) {
            decoded.value
        } else {
            decoded
                .value
                .resolve(&reader)
                .map_err(|e| DecodeError::Incompatible {
                    expected: T::FULL_NAME,
                    reason: e.to_string(),
                })?
        };
        apache_avro::from_value::<T>(&value).map_err(|e| DecodeError::Incompatible {
            expected: T::FULL_NAME,
            reason: e.to_string(),
        })
    }

    /// Encodes `value` for `topic` under the subject `<topic>-value`. With `auto_register`
    /// the built-in schema is registered when missing (the registry rejects an incompatible
    /// one); without it the subject's latest registered schema is used.
    pub async fn encode<T: AvroRecord>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, EncodeError> {
        let strategy = self.strategy::<T>(topic);
        self.encoder
            .encode_struct(value, &strategy)
            .await
            .map_err(|e| {
                if e.retriable {
                    EncodeError::RegistryUnavailable(e.to_string())
                } else {
                    EncodeError::Rejected {
                        record: T::FULL_NAME,
                        topic: topic.to_string(),
                        reason: e.to_string(),
                    }
                }
            })
    }
}
