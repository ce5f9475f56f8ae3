//! Test harness for the integration binary: the stack is started once per run (`make test`
//! runs `dev/stack.sh up`), and every test gets its own topics, consumer groups and keyspace
//! so tests run concurrently without seeing each other.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use notify_runtime::codec::AvroCodec;
use notify_runtime::records::AvroRecord;
use notify_runtime::runner::Running;
use notify_runtime::{
    CancellationToken, Config, Metrics, Processor, RunSpec, Stage, StageProcessor,
};

pub use notify_runtime;

pub mod fleet;
pub mod oracle;
pub mod private_kafka;
pub mod records;
pub mod registry_proxy;

/// One test's private slice of the shared stack.
pub struct TestEnv {
    pub id: String,
    pub config: Config,
    admin: AdminClient<DefaultClientContext>,
    producer: FutureProducer,
    pub codec: AvroCodec,
}

impl TestEnv {
    /// A fresh environment named after the test. Panics with a clear message when the stack
    /// is not running.
    pub async fn new(name: &str) -> TestEnv {
        let kafka = format!("127.0.0.1:{}", port("NOTIFY_KAFKA_PORT", 19092));
        Self::on_broker(name, &kafka).await
    }

    /// As [`TestEnv::new`], against the broker at `bootstrap` (a test's private one).
    pub async fn on_broker(name: &str, bootstrap: &str) -> TestEnv {
        let suffix: u32 = rand::random::<u32>() % 1_000_000;
        let id = format!("{}_{suffix}", name.replace(['-', '.', ' '], "_"));
        let mut config = Config::load_with_env(None, Vec::new()).expect("default config loads");
        config.kafka.bootstrap_servers = bootstrap.to_string();
        config.registry.url = format!(
            "http://127.0.0.1:{}/apis/ccompat/v7",
            port("NOTIFY_REGISTRY_PORT", 18081)
        );
        config.cql.nodes = vec![format!("127.0.0.1:{}", port("NOTIFY_CQL_PORT", 19042))];
        config.cql.keyspace = format!("t_{}", id.to_ascii_lowercase());
        config.cql.keyspace.truncate(48);
        config.kafka.group_prefix = format!("t-{id}");
        config.http.listen = "127.0.0.1:0".into();
        config.runtime.shutdown_grace_ms = 10_000;
        let mut admin_config = ClientConfig::new();
        admin_config.set("bootstrap.servers", &config.kafka.bootstrap_servers);
        let admin: AdminClient<DefaultClientContext> = admin_config.create().expect("admin client");
        if let Err(e) = admin.inner().fetch_metadata(None, Duration::from_secs(10)) {
            panic!(
                "Kafka is not reachable at {} ({e}). Start the stack first: `make stack-up`",
                config.kafka.bootstrap_servers
            );
        }
        let producer = notify_runtime::kafka::producer_config(&config)
            .create()
            .expect("producer");
        let codec = AvroCodec::new(&config.registry).expect("codec");
        TestEnv {
            id,
            config,
            admin,
            producer,
            codec,
        }
    }

    /// This test's name for a topic.
    pub fn topic(&self, base: &str) -> String {
        format!("t.{}.{base}", self.id)
    }

    /// Creates this test's topics (`base`, partitions) and returns their full names.
    pub async fn create_topics(&self, topics: &[(&str, i32)]) -> Vec<String> {
        let names: Vec<String> = topics.iter().map(|(b, _)| self.topic(b)).collect();
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .zip(topics)
            .map(|(n, (_, p))| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
            .collect();
        for result in self
            .admin
            .create_topics(&new, &AdminOptions::new())
            .await
            .expect("create topics")
        {
            result.expect("topic created");
        }
        names
    }

    /// Creates and migrates this test's keyspace; returns a session.
    pub async fn keyspace(&self) -> scylla::client::session::Session {
        let session = notify_runtime::cql::connect(&self.config.cql)
            .await
            .expect("CQL reachable (make stack-up)");
        notify_runtime::cql::migrate(&session, &self.config.cql)
            .await
            .expect("migrations apply");
        session
    }

    /// Produces one Avro record (registered under `<topic>-value`).
    pub async fn produce<T: AvroRecord>(&self, topic: &str, key: &str, value: &T) {
        let bytes = self.codec.encode(topic, value).await.expect("encode");
        self.produce_bytes(topic, Some(key), Some(&bytes), None, &[])
            .await;
    }

    /// Produces raw bytes, optionally to a given partition and with headers.
    pub async fn produce_bytes(
        &self,
        topic: &str,
        key: Option<&str>,
        value: Option<&[u8]>,
        partition: Option<i32>,
        headers: &[(&str, &str)],
    ) {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).headers(h);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }

    /// Produces one Avro record with another partitioner than the project's: `consistent_random`
    /// is librdkafka's default (CRC32, what stock Python and Go producers use), `murmur2_random`
    /// the Java client's.
    pub async fn produce_partitioned<T: AvroRecord>(
        &self,
        partitioner: &str,
        topic: &str,
        key: &str,
        value: &T,
    ) -> i32 {
        let producer: FutureProducer = {
            let mut c = notify_runtime::kafka::client_config(&self.config);
            c.set("partitioner", partitioner);
            c.create().expect("producer")
        };
        let bytes = self.codec.encode(topic, value).await.expect("encode");
        let delivered = producer
            .send(
                FutureRecord::<str, [u8]>::to(topic)
                    .key(key)
                    .payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
        delivered.partition
    }

    /// Reads a topic from the beginning (no consumer group).
    pub fn reader(&self, topic: &str) -> TopicReader {
        TopicReader::new(&self.config, topic)
    }

    /// Starts a processor in this process with this test's configuration.
    pub async fn start<P: Processor>(
        &self,
        processor: P,
        name: &str,
        inputs: &[&str],
    ) -> RunningProcessor {
        self.start_with(processor, name, inputs, self.config.clone())
            .await
    }

    pub async fn start_with<P: Processor>(
        &self,
        processor: P,
        name: &str,
        inputs: &[&str],
        config: Config,
    ) -> RunningProcessor {
        self.start_with_metrics(processor, name, inputs, config, Metrics::new(name))
            .await
    }

    /// Runs a stage (or a chain) as its processor does, with the metrics it was built with.
    pub async fn start_stage<S>(
        &self,
        stage: S,
        name: &str,
        inputs: &[&str],
        config: Config,
        metrics: Metrics,
    ) -> RunningProcessor
    where
        S: Stage,
        S::In: notify_runtime::Decode,
    {
        self.start_with_metrics(StageProcessor(stage), name, inputs, config, metrics)
            .await
    }

    pub async fn start_with_metrics<P: Processor>(
        &self,
        processor: P,
        name: &str,
        inputs: &[&str],
        config: Config,
        metrics: Metrics,
    ) -> RunningProcessor {
        let token = CancellationToken::new();
        let spec = RunSpec {
            name: name.into(),
            input_topics: inputs.iter().map(|s| s.to_string()).collect(),
        };
        let running = notify_runtime::start(processor, spec, config, metrics, token.clone())
            .await
            .expect("processor starts");
        RunningProcessor { token, running }
    }
}

fn port(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A processor running inside the test process.
pub struct RunningProcessor {
    pub token: CancellationToken,
    pub running: Running,
}

impl RunningProcessor {
    /// Graceful stop (what SIGTERM does); returns the runtime's result.
    pub async fn stop(self) -> Result<(), String> {
        self.token.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.running.done).await {
            Ok(Ok(r)) => r.map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("did not stop within 30 s".into()),
        }
    }

    pub fn metrics_text(&self) -> String {
        self.running.metrics.render()
    }
}

/// One record read back, with its key and headers.
#[derive(Debug, Clone)]
pub struct Received<T> {
    pub key: Option<String>,
    pub partition: i32,
    pub offset: i64,
    pub headers: HashMap<String, String>,
    pub value: T,
}

/// Reads every partition of a topic from the beginning.
pub struct TopicReader {
    consumer: BaseConsumer,
    topic: String,
}

impl TopicReader {
    fn new(config: &Config, topic: &str) -> TopicReader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka.bootstrap_servers)
            .set("group.id", format!("reader-{}", rand::random::<u64>()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("reader");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .expect("partition");
            }
        }
        consumer.assign(&tpl).expect("assign");
        TopicReader {
            consumer,
            topic: topic.to_string(),
        }
    }

    /// Raw messages until `n` have arrived or `timeout` passes (whichever first).
    pub fn raw(&self, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                out.push(m.detach());
            }
        }
        out
    }

    /// Every message that arrives within `quiet` of the previous one (reads until silence).
    pub fn raw_until_quiet(&self, quiet: Duration, max: Duration) -> Vec<OwnedMessage> {
        let deadline = Instant::now() + max;
        let mut last = Instant::now();
        let mut out = Vec::new();
        while Instant::now() < deadline && last.elapsed() < quiet {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                out.push(m.detach());
                last = Instant::now();
            }
        }
        out
    }

    /// Decoded records until `n` have arrived or `timeout` passes.
    pub async fn records<T: AvroRecord>(
        &self,
        codec: &AvroCodec,
        n: usize,
        timeout: Duration,
    ) -> Vec<Received<T>> {
        let raw = self.raw(n, timeout);
        decode_all(codec, raw).await
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

pub async fn decode_all<T: AvroRecord>(
    codec: &AvroCodec,
    raw: Vec<OwnedMessage>,
) -> Vec<Received<T>> {
    let mut out = Vec::with_capacity(raw.len());
    for m in raw {
        let value = codec
            .decode::<T>(m.payload())
            .await
            .unwrap_or_else(|e| panic!("{} offset {} does not decode: {e}", m.topic(), m.offset()));
        out.push(Received {
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            partition: m.partition(),
            offset: m.offset(),
            headers: headers_of(&m),
            value,
        });
    }
    out
}

pub fn headers_of(m: &OwnedMessage) -> HashMap<String, String> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `notify` binary built by `cargo build --bin notify` (make test builds it first).
pub fn notify_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NOTIFY_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/notify");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin notify` first",
        bin.display()
    );
    bin
}

/// The repository root (for topics/topics.toml and friends).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `timeout` stretched by `NOTIFY_TEST_PATIENCE` (a factor, default 1). `make test` sets 3:
/// with four tests at once on two cores, next to Kafka and two Cassandras, a step that takes
/// seconds on an idle machine has taken over a minute (a Cassandra resumed from SIGSTOP).
/// Only waits for something expected to happen are stretched, so a passing run is no slower.
pub fn patient(timeout: Duration) -> Duration {
    let factor = std::env::var("NOTIFY_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 1.0)
        .unwrap_or(1.0);
    timeout.mul_f64(factor)
}

/// Polls `check` until it returns Some or `timeout` (made [`patient`]) passes.
pub async fn eventually<T>(
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + patient(timeout);
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub use notify_runtime::metrics::sample_sum as metric;

/// [`metric`] of the processor serving `/metrics` at `url`.
pub async fn scrape(url: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    metric(&text, name, labels)
}
