//! Layered configuration: built-in defaults, then one TOML file, then `NOTIFY_` environment
//! variables (`NOTIFY_KAFKA__BOOTSTRAP_SERVERS=…`; `__` separates levels). Unknown fields are
//! rejected and every validation error is reported at once.
//!
//! librdkafka properties pass through untouched under `[kafka.properties]` (both clients),
//! `[kafka.consumer]` and `[kafka.producer]`, so SASL, TLS and tuning work as operators know
//! them. From the environment, `_` in a property name stands for `.`
//! (`NOTIFY_KAFKA__PROPERTIES__SASL_MECHANISM=PLAIN`).

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Read(String),
    #[error("configuration is invalid:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub cql: CqlConfig,
    pub http: HttpConfig,
    pub runtime: RuntimeConfig,
    /// One table per processor (`[processors.dedup]`); each processor reads only its own.
    pub processors: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Consumer group of processor `p` is `<group_prefix>-<p>`.
    pub group_prefix: String,
    /// Kafka transactions for Kafka-to-Kafka stages (exactly-once); off means at-least-once.
    pub transactional: bool,
    /// How often the open transaction is committed (exactly-once mode). Each commit costs the
    /// broker requests and a marker per partition touched: at 250 ms rather than 100 the chain
    /// drained 1,473 instead of 1,255 requests/s at 1.12 instead of 1.24 ms of machine CPU per
    /// request (BENCHMARKS.md), for about 150 ms more latency at low load.
    pub transaction_interval_ms: u64,
    /// Stable per instance (pod name, host name): the transactional.id is
    /// `<group>-<instance_id>`, so a restarted instance fences its predecessor at once.
    pub instance_id: String,
    /// librdkafka properties; numbers and booleans are taken as written (`linger.ms = 5`, or
    /// `NOTIFY_KAFKA__PRODUCER__linger.ms=5`).
    #[serde(deserialize_with = "scalars_as_strings")]
    pub properties: BTreeMap<String, String>,
    #[serde(deserialize_with = "scalars_as_strings")]
    pub consumer: BTreeMap<String, String>,
    #[serde(deserialize_with = "scalars_as_strings")]
    pub producer: BTreeMap<String, String>,
}

/// A map of librdkafka properties, whose values librdkafka takes as strings anyway.
fn scalars_as_strings<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Text(s) => s,
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible API (Apicurio: `…/apis/ccompat/v7`).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Read the password from this file (mounted secret) when set.
    pub password_file: Option<String>,
    /// An `https://` registry's certificate is checked against this CA (PEM) as well as the
    /// system's roots (a private CA, as a cluster's own registry often has).
    pub ca_file: Option<String>,
    pub timeout_ms: u64,
    /// Register the built-in schema for a subject that lacks it when producing.
    pub auto_register: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CqlConfig {
    pub nodes: Vec<String>,
    pub keyspace: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    /// TLS to the CQL nodes (client_encryption_options); the server's certificate is checked
    /// against `ca_file` (or the system's roots when not set).
    pub tls: bool,
    pub ca_file: Option<String>,
    /// Replication used by `notify db migrate` when it creates the keyspace.
    pub replication_factor: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served; empty disables the server.
    pub listen: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Records processed at once; records with the same key always share a lane (order).
    pub lanes: usize,
    /// Records consumed but not yet acknowledged downstream, at most (bounded memory).
    pub max_in_flight: usize,
    /// How long SIGTERM waits for in-flight records before exiting.
    pub shutdown_grace_ms: u64,
    pub status_topic: String,
    pub dlq_topic: String,
    /// A record value larger than this is dead-lettered unread (class `validation`), and no
    /// decoded field may claim more (Avro's allocation limit). Below the broker's default
    /// message size, so the dead letter itself fits on the dead-letter topic.
    pub max_record_bytes: usize,
    /// Assigned, behind, and no record received for this long: the loop resumes its
    /// partitions by itself; still so after twice this, `/healthz` fails (restart).
    pub stall_after_ms: u64,
    /// Status events beyond ACCEPTED and one terminal outcome per message (e.g. a message
    /// queued for delivery). Off by default: they cost a record each and answer nothing the
    /// others do not.
    pub intermediate_status: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:19092".into(),
            group_prefix: "notify".into(),
            transactional: false,
            transaction_interval_ms: 250,
            instance_id: std::env::var("HOSTNAME")
                .ok()
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_string())
                })
                .unwrap_or_else(|| "local".into()),
            properties: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: "http://127.0.0.1:18081/apis/ccompat/v7".into(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            timeout_ms: 5_000,
            auto_register: true,
        }
    }
}

impl Default for CqlConfig {
    fn default() -> Self {
        CqlConfig {
            nodes: vec!["127.0.0.1:19042".into()],
            keyspace: "notify".into(),
            username: None,
            password: None,
            password_file: None,
            tls: false,
            ca_file: None,
            replication_factor: 1,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9100".into(),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            lanes: 8,
            max_in_flight: 2_000,
            shutdown_grace_ms: 30_000,
            status_topic: "notify.status.v1".into(),
            dlq_topic: "notify.dlq.v1".into(),
            max_record_bytes: 900_000,
            stall_after_ms: 30_000,
            intermediate_status: false,
        }
    }
}

impl Config {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`] with an explicit environment, so tests pass a map.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Read(format!(
                    "{} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        let mut config: Config = figment
            .merge(env_provider(env))
            // Lossy: an environment value is a string, turned into a number or boolean only
            // where the field asks for one, so a string setting arrives exactly as written.
            .extract_lossy()
            .map_err(|e| ConfigError::Read(e.to_string()))?;
        config.normalise_env_property_names();
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// The processor's own table, with its defaults and unknown fields rejected.
    pub fn processor<P: DeserializeOwned + Default>(&self, name: &str) -> Result<P, ConfigError> {
        match self.processors.get(name) {
            None => Ok(P::default()),
            // Through figment again, lossily: values from the environment are strings, and
            // only the processor's own types say which of them are numbers.
            Some(value) => Figment::from(Serialized::defaults(value))
                .extract_lossy()
                .map_err(|e| ConfigError::Invalid(vec![format!("processors.{name}: {e}")])),
        }
    }

    pub fn group_id(&self, processor: &str) -> String {
        format!("{}-{}", self.kafka.group_prefix, processor)
    }

    fn normalise_env_property_names(&mut self) {
        for map in [
            &mut self.kafka.properties,
            &mut self.kafka.consumer,
            &mut self.kafka.producer,
        ] {
            let renamed: BTreeMap<String, String> = std::mem::take(map)
                .into_iter()
                .map(|(k, v)| {
                    if k.contains('.') {
                        (k, v)
                    } else {
                        (k.replace('_', "."), v)
                    }
                })
                .collect();
            *map = renamed;
        }
    }

    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end().to_string())
                .map_err(|e| ConfigError::Read(format!("secret file {path}: {e}")))
        };
        if let Some(path) = &self.registry.password_file {
            self.registry.password = Some(read(path)?);
        }
        if let Some(path) = &self.cql.password_file {
            self.cql.password = Some(read(path)?);
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        if self.kafka.bootstrap_servers.trim().is_empty() {
            errors.push("kafka.bootstrap_servers is empty".to_string());
        }
        if self.kafka.group_prefix.trim().is_empty() {
            errors.push("kafka.group_prefix is empty".to_string());
        }
        if !(self.registry.url.starts_with("http://") || self.registry.url.starts_with("https://"))
        {
            errors.push(format!(
                "registry.url {:?} is not an http(s) URL",
                self.registry.url
            ));
        }
        if self.cql.nodes.is_empty() {
            errors.push("cql.nodes is empty".to_string());
        }
        if !is_cql_identifier(&self.cql.keyspace) {
            errors.push(format!(
                "cql.keyspace {:?} is not a CQL identifier",
                self.cql.keyspace
            ));
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            errors.push(format!(
                "http.listen {:?} is not host:port",
                self.http.listen
            ));
        }
        // A user name alone would silently connect without authentication.
        match (&self.cql.username, &self.cql.password) {
            (Some(_), None) => errors
                .push("cql.username is set but no cql.password (or cql.password_file)".to_string()),
            (None, Some(_)) => errors.push("cql.password is set but no cql.username".to_string()),
            _ => {}
        }
        match (&self.registry.username, &self.registry.password) {
            (Some(_), None) => errors.push(
                "registry.username is set but no registry.password (or registry.password_file)"
                    .to_string(),
            ),
            (None, Some(_)) => {
                errors.push("registry.password is set but no registry.username".to_string())
            }
            _ => {}
        }
        if self.registry.ca_file.is_some() && !self.registry.url.starts_with("https://") {
            errors.push("registry.ca_file is set but registry.url is not https://".to_string());
        }
        if self.cql.ca_file.is_some() && !self.cql.tls {
            errors.push("cql.ca_file is set but cql.tls is false".to_string());
        }
        if self.runtime.lanes == 0 {
            errors.push("runtime.lanes must be at least 1".to_string());
        }
        if self.runtime.max_record_bytes < 1024 {
            errors.push("runtime.max_record_bytes must be at least 1024".to_string());
        }
        if self.runtime.max_in_flight < self.runtime.lanes {
            errors.push("runtime.max_in_flight must be at least runtime.lanes".to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }
}

/// For a settings check: `"<key> is empty"` for each named value that is blank.
pub fn blank(values: &[(&str, &str)]) -> Vec<String> {
    values
        .iter()
        .filter(|(_, v)| v.trim().is_empty())
        .map(|(k, _)| format!("{k} is empty"))
        .collect()
}

pub fn is_cql_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `NOTIFY_A__B=v` becomes `a.b = v`. Only names with `__` are configuration, so variables
/// like `NOTIFY_KAFKA_PORT` (used by the dev stack scripts) are not mistaken for fields.
fn env_provider(env: impl IntoIterator<Item = (String, String)>) -> Serialized<toml::Table> {
    let mut root = toml::Table::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("NOTIFY_") else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        insert_path(&mut root, &path, parse_env_value(&value));
    }
    Serialized::defaults(root)
}

fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Environment values are strings as written (a password `1e5` or `0x1F` stays that), except
/// a TOML array (`["a:9042","b:9042"]`, for list settings such as `cql.nodes`). Numbers and
/// booleans are read from the string where the field is one (`extract_lossy`).
fn parse_env_value(raw: &str) -> toml::Value {
    if raw.trim_start().starts_with('[')
        && let Ok(mut t) = format!("v = {raw}").parse::<toml::Table>()
        && let Some(v @ toml::Value::Array(_)) = t.remove("v")
    {
        return v;
    }
    toml::Value::String(raw.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_properties_accept_numbers_and_booleans() {
        let c = Config::load_with_env(
            None,
            [
                (
                    "NOTIFY_KAFKA__PRODUCER__linger.ms".to_string(),
                    "7".to_string(),
                ),
                (
                    "NOTIFY_KAFKA__CONSUMER__check.crcs".to_string(),
                    "true".to_string(),
                ),
            ],
        )
        .expect("numbers and booleans are fine for librdkafka properties");
        assert_eq!(
            c.kafka.producer.get("linger.ms").map(String::as_str),
            Some("7")
        );
        assert_eq!(
            c.kafka.consumer.get("check.crcs").map(String::as_str),
            Some("true")
        );
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_defaults() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("NOTIFY_KAFKA__BOOTSTRAP_SERVERS", "broker:9092"),
                ("NOTIFY_RUNTIME__LANES", "3"),
                ("NOTIFY_KAFKA__PROPERTIES__SASL_MECHANISM", "PLAIN"),
                ("NOTIFY_KAFKA_PORT", "19092"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "broker:9092");
        assert_eq!(c.runtime.lanes, 3);
        assert_eq!(
            c.kafka.properties.get("sasl.mechanism").map(String::as_str),
            Some("PLAIN")
        );
    }

    #[test]
    fn string_settings_from_the_environment_arrive_unchanged() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("NOTIFY_CQL__USERNAME", "007"),
                ("NOTIFY_CQL__PASSWORD", "1e5"),
                ("NOTIFY_REGISTRY__USERNAME", "registry"),
                ("NOTIFY_REGISTRY__PASSWORD", "0x1F"),
                ("NOTIFY_KAFKA__PROPERTIES__SASL_PASSWORD", "true"),
                ("NOTIFY_KAFKA__GROUP_PREFIX", "1_000"),
                ("NOTIFY_PROCESSORS__DELIVER_SMS__AUTH_TOKEN", "+1.5e3"),
                ("NOTIFY_CQL__NODES", r#"["a:9042","b:9042"]"#),
                ("NOTIFY_RUNTIME__LANES", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(c.cql.username.as_deref(), Some("007"));
        assert_eq!(c.cql.password.as_deref(), Some("1e5"));
        assert_eq!(c.registry.password.as_deref(), Some("0x1F"));
        assert_eq!(
            c.kafka.properties.get("sasl.password").map(String::as_str),
            Some("true")
        );
        assert_eq!(c.kafka.group_prefix, "1_000");
        assert_eq!(c.cql.nodes, vec!["a:9042", "b:9042"]);
        assert_eq!(c.runtime.lanes, 3);
        #[derive(Debug, Default, Deserialize)]
        #[serde(default)]
        struct Sms {
            auth_token: String,
        }
        assert_eq!(
            c.processor::<Sms>("deliver_sms").unwrap().auth_token,
            "+1.5e3"
        );
    }

    #[test]
    fn a_cql_user_without_a_password_is_an_error() {
        let err = Config::load_with_env(None, env(&[("NOTIFY_CQL__USERNAME", "notify")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cql.username is set but no cql.password"),
            "{err}"
        );
        let err = Config::load_with_env(None, env(&[("NOTIFY_CQL__PASSWORD", "pw")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no cql.username"), "{err}");
        Config::load_with_env(
            None,
            env(&[("NOTIFY_CQL__USERNAME", "u"), ("NOTIFY_CQL__PASSWORD", "p")]),
        )
        .expect("both set is fine");
    }

    #[test]
    fn registry_credentials_go_together_and_a_ca_needs_https() {
        let err = Config::load_with_env(None, env(&[("NOTIFY_REGISTRY__USERNAME", "notify")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("registry.username is set but no registry.password"),
            "{err}"
        );
        let err = Config::load_with_env(None, env(&[("NOTIFY_REGISTRY__CA_FILE", "/ca.crt")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("registry.url is not https://"), "{err}");
        let c = Config::load_with_env(
            None,
            env(&[
                ("NOTIFY_REGISTRY__URL", "https://registry:8081"),
                ("NOTIFY_REGISTRY__CA_FILE", "/ca.crt"),
                ("NOTIFY_REGISTRY__USERNAME", "u"),
                ("NOTIFY_REGISTRY__PASSWORD", "p"),
            ]),
        )
        .expect("a secured registry's settings");
        // A CA file that is not there is reported by name when a client is built.
        let err = crate::codec::http_client(&c.registry)
            .unwrap_err()
            .to_string();
        assert!(err.contains("registry.ca_file /ca.crt"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err =
            Config::load_with_env(None, env(&[("NOTIFY_KAFKA__BOOTSTRAP", "x")])).unwrap_err();
        assert!(err.to_string().contains("bootstrap"), "{err}");
    }

    #[test]
    fn every_validation_error_is_reported() {
        let err = Config::load_with_env(
            None,
            env(&[
                ("NOTIFY_KAFKA__BOOTSTRAP_SERVERS", ""),
                ("NOTIFY_RUNTIME__LANES", "0"),
                ("NOTIFY_CQL__KEYSPACE", "bad-name"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bootstrap_servers")
                && text.contains("lanes")
                && text.contains("keyspace"),
            "{text}"
        );
    }

    #[test]
    fn processor_tables_reject_unknown_fields() {
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct P {
            window_days: u32,
        }
        let c = Config::load_with_env(None, env(&[("NOTIFY_PROCESSORS__DEDUP__WINDOW_DAYS", "3")]))
            .unwrap();
        assert_eq!(c.processor::<P>("dedup").unwrap().window_days, 3);
        let c =
            Config::load_with_env(None, env(&[("NOTIFY_PROCESSORS__DEDUP__WINDOW", "3")])).unwrap();
        assert!(c.processor::<P>("dedup").is_err());
    }
}
