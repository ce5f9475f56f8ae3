//! Avro in the Confluent wire format (magic byte 0, 4-byte schema id, Avro body) through a
//! Confluent-compatible schema registry.
//!
//! Decoding asks the registry for a writer schema by id once and keeps only answers it got
//! (`GET /schemas/ids/{id}`): a 404 means the id is unknown (the record is dead-lettered),
//! anything else (5xx, 429, 401/403, a timeout, no connection) means the registry is
//! unavailable and the record is tried again later. A failure is never cached, so a registry
//! that comes back serves the very next record. Records written with this project's own
//! schema (almost all of them) are read straight from the bytes into the Rust type; others
//! are resolved against the compiled-in reader schema first.
//!
//! Encoding registers (or, without `auto_register`, looks up) the record's schema under
//! `<topic>-value` once through schema_registry_converter and writes straight from the Rust
//! type with the id it got.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use schema_registry_converter::async_impl::schema_registry::{SrSettings, get_schema_by_subject};
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
    /// The registry could not be asked (down, timeout, an error status): try again later.
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

    pub fn is_retriable(&self) -> bool {
        matches!(self, DecodeError::RegistryUnavailable(_))
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

/// A writer schema from the registry, parsed once and kept for the life of the process
/// (schemas are few and immutable, so they are leaked to get `'static` readers).
struct WriterSchema {
    schema: &'static Schema,
    /// Per record type: the reader for that type (direct when the writer is the type's own).
    readers: RwLock<HashMap<&'static str, Arc<Reading>>>,
}

enum Reading {
    /// The writer schema is the record's own: deserialize straight from the bytes.
    Direct(GenericDatumReader<'static>),
    /// Another schema: decode to a value resolved against the reader schema.
    Resolving(GenericDatumReader<'static>),
}

/// The id to write under and the writer for one (topic, record).
struct Encoding {
    header: [u8; 5],
    writer: Arc<GenericDatumWriter<'static>>,
}

/// Encodes and decodes the project's records against the registry.
pub struct AvroCodec {
    http: reqwest::Client,
    base_url: String,
    username: Option<String>,
    password: Option<String>,
    sr_settings: SrSettings,
    auto_register: bool,
    writers: RwLock<HashMap<u32, Arc<WriterSchema>>>,
    own_schemas: RwLock<HashMap<&'static str, &'static Schema>>,
    own_writers: RwLock<HashMap<&'static str, Arc<GenericDatumWriter<'static>>>>,
    encodings: RwLock<HashMap<(String, &'static str), Arc<Encoding>>>,
}

#[derive(serde::Deserialize)]
struct SchemaById {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

fn read<K: std::hash::Hash + Eq, V: Clone>(map: &RwLock<HashMap<K, V>>, key: &K) -> Option<V> {
    map.read()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned()
}

fn insert<K: std::hash::Hash + Eq, V: Clone>(map: &RwLock<HashMap<K, V>>, key: K, value: V) -> V {
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_insert(value)
        .clone()
}

/// An HTTP client for the registry (the codec's and `notify schemas register`'s): its timeout,
/// and the private CA of an `https://` registry when `registry.ca_file` names one.
pub fn http_client(config: &RegistryConfig) -> Result<reqwest::ClientBuilder, RegistryClientError> {
    Ok(client_with(config, registry_ca(config)?))
}

/// The private CA `registry.ca_file` names, read and parsed once.
fn registry_ca(
    config: &RegistryConfig,
) -> Result<Option<reqwest::Certificate>, RegistryClientError> {
    let Some(path) = &config.ca_file else {
        return Ok(None);
    };
    let invalid = |reason: String| RegistryClientError::CaFile {
        path: path.clone(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    reqwest::Certificate::from_pem(&pem)
        .map(Some)
        .map_err(|e| invalid(e.to_string()))
}

fn client_with(
    config: &RegistryConfig,
    ca: Option<reqwest::Certificate>,
) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder().timeout(Duration::from_millis(config.timeout_ms));
    match ca {
        Some(ca) => builder.add_root_certificate(ca),
        None => builder,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryClientError {
    #[error("registry.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
}

impl AvroCodec {
    pub fn new(config: &RegistryConfig) -> Result<Self, SRCError> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut builder = SrSettings::new_builder(config.url.clone());
        builder.set_timeout(timeout);
        if let Some(user) = &config.username {
            builder.set_basic_authorization(user, config.password.as_deref());
        }
        // The codec's own client and the schema-registry client's share the CA, read once.
        let ca = registry_ca(config)
            .map_err(|e| SRCError::non_retryable_with_cause(e, "building the registry client"))?;
        let http = client_with(config, ca.clone())
            .build()
            .map_err(|e| SRCError::non_retryable_with_cause(e, "building the registry client"))?;
        Ok(AvroCodec {
            http,
            base_url: config.url.trim_end_matches('/').to_string(),
            username: config.username.clone(),
            password: config.password.clone(),
            sr_settings: builder.build_with(client_with(config, ca))?,
            auto_register: config.auto_register,
            writers: RwLock::default(),
            own_schemas: RwLock::default(),
            own_writers: RwLock::default(),
            encodings: RwLock::default(),
        })
    }

    /// The compiled-in schema of `T`.
    fn own_schema<T: AvroRecord>(&self) -> &'static Schema {
        if let Some(s) = read(&self.own_schemas, &T::FULL_NAME) {
            return s;
        }
        // The schema text is compiled in and checked by a unit test of the contract crate.
        let parsed = Schema::parse_str(T::SCHEMA).expect("built-in schema parses");
        insert(&self.own_schemas, T::FULL_NAME, Box::leak(Box::new(parsed)))
    }

    fn own_writer<T: AvroRecord>(&self) -> Arc<GenericDatumWriter<'static>> {
        if let Some(w) = read(&self.own_writers, &T::FULL_NAME) {
            return w;
        }
        let writer = GenericDatumWriter::builder(self.own_schema::<T>())
            .build()
            .expect("a built-in schema resolves");
        insert(&self.own_writers, T::FULL_NAME, Arc::new(writer))
    }

    /// The writer schema with `id`, from the cache or the registry.
    async fn writer_schema(&self, id: u32) -> Result<Arc<WriterSchema>, DecodeError> {
        if let Some(w) = read(&self.writers, &id) {
            return Ok(w);
        }
        let url = format!("{}/schemas/ids/{id}", self.base_url);
        let mut request = self.http.get(&url);
        if let Some(user) = &self.username {
            request = request.basic_auth(user, self.password.as_deref());
        }
        let response = request
            .send()
            .await
            .map_err(|e| DecodeError::RegistryUnavailable(format!("GET {url}: {e}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(DecodeError::UnknownSchema(format!(
                "{id} (the registry answered 404)"
            )));
        }
        if !status.is_success() {
            return Err(DecodeError::RegistryUnavailable(format!(
                "GET {url} answered {status}"
            )));
        }
        let body: SchemaById = response
            .json()
            .await
            .map_err(|e| DecodeError::RegistryUnavailable(format!("GET {url}: {e}")))?;
        if let Some(kind) = body.schema_type.as_deref().filter(|k| *k != "AVRO") {
            return Err(DecodeError::UnknownSchema(format!(
                "{id} is a {kind} schema, not Avro"
            )));
        }
        let schema = Schema::parse_str(&body.schema)
            .map_err(|e| DecodeError::UnknownSchema(format!("{id} does not parse: {e}")))?;
        let writer = WriterSchema {
            schema: Box::leak(Box::new(schema)),
            readers: RwLock::default(),
        };
        Ok(insert(&self.writers, id, Arc::new(writer)))
    }

    fn reading<T: AvroRecord>(&self, writer: &WriterSchema) -> Result<Arc<Reading>, DecodeError> {
        if let Some(r) = read(&writer.readers, &T::FULL_NAME) {
            return Ok(r);
        }
        let own = self.own_schema::<T>();
        let incompatible = |e: apache_avro::Error| DecodeError::Incompatible {
            expected: T::FULL_NAME,
            reason: e.to_string(),
        };
        let reading = if writer.schema.canonical_form() == own.canonical_form() {
            Reading::Direct(
                GenericDatumReader::builder(writer.schema)
                    .build()
                    .map_err(incompatible)?,
            )
        } else {
            Reading::Resolving(
                GenericDatumReader::builder(writer.schema)
                    .reader_schema(own)
                    .build()
                    .map_err(incompatible)?,
            )
        };
        Ok(insert(&writer.readers, T::FULL_NAME, Arc::new(reading)))
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
        let writer = self.writer_schema(id).await?;
        let mut body = &bytes[5..];
        match &*self.reading::<T>(&writer)? {
            Reading::Direct(reader) => reader
                .read_deser::<T>(&mut body)
                .map_err(|e| DecodeError::Malformed(e.to_string())),
            Reading::Resolving(reader) => {
                let value = reader.read_value(&mut body).map_err(|e| {
                    // The body did not decode with its writer schema, or did not resolve.
                    DecodeError::Incompatible {
                        expected: T::FULL_NAME,
                        reason: e.to_string(),
                    }
                })?;
                apache_avro::from_value::<T>(&value).map_err(|e| DecodeError::Incompatible {
                    expected: T::FULL_NAME,
                    reason: e.to_string(),
                })
            }
        }
    }

    /// The registry id `T` is written under on `topic`, from the cache or the registry.
    async fn encoding<T: AvroRecord>(&self, topic: &str) -> Result<Arc<Encoding>, EncodeError> {
        let key = (topic.to_string(), T::FULL_NAME);
        if let Some(e) = read(&self.encodings, &key) {
            return Ok(e);
        }
        let strategy = if self.auto_register {
            SubjectNameStrategy::TopicNameStrategyWithSchema(
                topic.to_string(),
                false,
                get_supplied_schema(self.own_schema::<T>()),
            )
        } else {
            SubjectNameStrategy::TopicNameStrategy(topic.to_string(), false)
        };
        let registered = get_schema_by_subject(&self.sr_settings, &strategy)
            .await
            .map_err(|e| classify_registration(e, T::FULL_NAME, topic))?;
        if !self.auto_register {
            // Writing our record under another schema's id would mislabel it.
            let theirs =
                Schema::parse_str(&registered.schema).map_err(|e| EncodeError::Rejected {
                    record: T::FULL_NAME,
                    topic: topic.to_string(),
                    reason: format!("the registered schema does not parse: {e}"),
                })?;
            if theirs.canonical_form() != self.own_schema::<T>().canonical_form() {
                return Err(EncodeError::Rejected {
                    record: T::FULL_NAME,
                    topic: topic.to_string(),
                    reason: "the latest registered schema of the subject is not this build's \
                             (run `notify schemas register`)"
                        .into(),
                });
            }
        }
        let id = registered.id;
        let mut header = [0u8; 5];
        header[1..].copy_from_slice(&id.to_be_bytes());
        let encoding = Encoding {
            header,
            writer: self.own_writer::<T>(),
        };
        Ok(insert(&self.encodings, key, Arc::new(encoding)))
    }

    /// Encodes `value` for `topic` under the subject `<topic>-value`. With `auto_register`
    /// the built-in schema is registered when missing (the registry rejects an incompatible
    /// one); without it the subject's latest schema must be this build's.
    pub async fn encode<T: AvroRecord>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, EncodeError> {
        let encoding = self.encoding::<T>(topic).await?;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&encoding.header);
        encoding
            .writer
            .write_ser(&mut out, value)
            .map_err(|e| EncodeError::Rejected {
                record: T::FULL_NAME,
                topic: topic.to_string(),
                reason: e.to_string(),
            })?;
        Ok(out)
    }
}

/// schema_registry_converter marks only 502/503 as retriable; here every answer but a refusal
/// of the schema itself (409 incompatible, 422 invalid) means "the registry is not serving":
/// wait for it rather than stop the processor.
fn classify_registration(e: SRCError, record: &'static str, topic: &str) -> EncodeError {
    let text = e.to_string();
    if text.contains("status 409") || text.contains("status 422") {
        EncodeError::Rejected {
            record,
            topic: topic.to_string(),
            reason: text,
        }
    } else {
        EncodeError::RegistryUnavailable(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Channel, DeliveryStatus, NotificationRequest, Outcome, Priority};

    fn codec() -> AvroCodec {
        AvroCodec::new(&RegistryConfig::default()).expect("codec")
    }

    fn request() -> NotificationRequest {
        NotificationRequest {
            event_id: "e1".into(),
            user_id: "u1".into(),
            category: "billing".into(),
            template_id: "invoice_due".into(),
            data: [("amount".to_string(), "4 €".to_string())].into(),
            channels: vec![Channel::Push, Channel::Email],
            priority: Priority::Critical,
            created_at: 1_700_000_000_000,
            expires_at: Some(1_700_000_600_000),
            source: "billing".into(),
            email: None,
            phone: Some("+15550100".into()),
        }
    }

    /// The direct serde path reads what the value-based writer of apache-avro writes, and the
    /// other way round, so records of any producer and of this one are the same bytes.
    #[test]
    fn direct_encoding_matches_the_value_encoding() {
        let codec = codec();
        let schema = codec.own_schema::<NotificationRequest>();
        let r = request();
        let mut direct = Vec::new();
        codec
            .own_writer::<NotificationRequest>()
            .write_ser(&mut direct, &r)
            .expect("write");
        #[allow(deprecated)]
        let via_value = apache_avro::to_avro_datum(
            schema,
            apache_avro::to_value(&r)
                .expect("value")
                .resolve(schema)
                .expect("resolves"),
        )
        .expect("encode");
        assert_eq!(direct, via_value);
        let reader = GenericDatumReader::builder(schema).build().expect("reader");
        let back: NotificationRequest = reader.read_deser(&mut direct.as_slice()).expect("read");
        assert_eq!(back, r);
    }

    #[test]
    fn every_record_round_trips_directly() {
        let codec = codec();
        let status = DeliveryStatus::new("e", "u", "dedup", Outcome::Duplicate)
            .with_reason("seen at 3")
            .with_attempt(2);
        let mut bytes = Vec::new();
        codec
            .own_writer::<DeliveryStatus>()
            .write_ser(&mut bytes, &status)
            .expect("write");
        let reader = GenericDatumReader::builder(codec.own_schema::<DeliveryStatus>())
            .build()
            .expect("reader");
        let back: DeliveryStatus = reader.read_deser(&mut bytes.as_slice()).expect("read");
        assert_eq!(back, status);
    }

    #[test]
    fn registration_errors_other_than_refusals_mean_unavailable() {
        let e = |status: &str| SRCError::new(&format!("failed with status {status}"), None, false);
        for s in ["500", "504", "429", "401", "403"] {
            assert!(classify_registration(e(s), "r", "t").is_retriable(), "{s}");
        }
        for s in ["409", "422"] {
            assert!(!classify_registration(e(s), "r", "t").is_retriable(), "{s}");
        }
    }
}
