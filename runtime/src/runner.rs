//! The consume loop every processor runs.
//!
//! One task reads the input topics and hands each record to a lane chosen by its key (so
//! records with one key stay in order). A lane decodes, calls the processor, and produces the
//! outputs; when every output is acknowledged the record's offset joins the committable
//! prefix. When the in-flight bound is reached the loop stops taking records (librdkafka's
//! bounded prefetch then stops fetching), so a slow stage slows fetching instead of growing
//! memory; a stage stuck for seconds pauses its partitions and keeps polling, so it does not
//! leave the group. A [watchdog](crate::watchdog) notices a loop that receives nothing while it
//! should (behind on its partitions, or left without any by a broker outage) and restarts it.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::producer::Producer;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::codec::AvroCodec;
use crate::config::Config;
use crate::http::{self, Health};
use crate::kafka::{PauseState, RunnerContext, consumer_config, producer_config};
use crate::lane::{InFlight, Job, Lane, Release};
use crate::metrics::Metrics;
use crate::offsets::OffsetTracker;
use crate::processor::{Processor, RecordMeta};
use crate::txn::Transactions;
use crate::watchdog::{Verdict, Watchdog};

/// Records held back (in-flight bound reached) before the loop stops taking more.
const HOLD_AT: usize = 512;
/// How long the loop may stop polling before it pauses its partitions instead. Not polling is
/// free (librdkafka's bounded prefetch queue stops fetching by itself) but also delays
/// rebalance callbacks and counts towards `max.poll.interval.ms`; pausing keeps the group
/// served but costs a refetch after a fetch backoff (about a second) on resume, so it is only
/// worth it for a stage that is really stuck (a dependency down), not for a busy one.
const PAUSE_AFTER: Duration = Duration::from_secs(2);
/// How often the loop beats for `/healthz` and looks for a stall.
const WATCH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("setting up: {0}")]
    Setup(String),
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("schema registry client: {0}")]
    Registry(String),
    #[error("http server on {listen}: {source}")]
    Http {
        listen: String,
        source: std::io::Error,
    },
    /// An error that a restart fixes (a produce or transaction that failed, a consumer the
    /// watchdog found stuck); nothing past it was committed, so its records are redone.
    #[error("stopped: {0}; nothing past it is committed, so a restart redoes its records")]
    Stopped(String),
}

/// What to run: a processor's name (metrics, group id, dead-letter stage) and its inputs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub name: String,
    pub input_topics: Vec<String>,
}

/// Shared by the loop, the lanes and the acknowledgement tasks.
pub(crate) struct Shared {
    /// Shared with the watchdog's blocking probes.
    pub consumer: Arc<StreamConsumer<RunnerContext>>,
    pub producer: crate::kafka::RuntimeProducer,
    pub codec: AvroCodec,
    pub tracker: Arc<Mutex<OffsetTracker<Release>>>,
    pub metrics: Metrics,
    pub health: Health,
    pub pause: Arc<PauseState>,
    pub config: Config,
    pub spec: RunSpec,
    pub in_flight: Arc<Semaphore>,
    pub capacity: Arc<Notify>,
    pub shutdown: CancellationToken,
    /// Shared with the consumer context, whose rebalance callbacks can fail too.
    pub fatal: Arc<Mutex<Option<String>>>,
    /// Set in exactly-once mode.
    pub txn: Option<Arc<Transactions>>,
    /// The producer's `message.max.bytes`: a larger output dead-letters its input.
    pub max_record_bytes: usize,
}

impl Shared {
    /// Stops the processor because of an error that restarting fixes (nothing is committed
    /// past the failed record, so it is redone).
    pub fn fail(&self, reason: String) {
        fail(&self.fatal, &self.shutdown, reason);
    }

    pub fn has_failed(&self) -> bool {
        self.fatal.lock().map(|f| f.is_some()).unwrap_or(true)
    }
}

/// Keeps the first reason and stops the loop (which then exits with it).
pub(crate) fn fail(fatal: &Mutex<Option<String>>, shutdown: &CancellationToken, reason: String) {
    tracing::error!(%reason, "stopping");
    if let Ok(mut f) = fatal.lock() {
        f.get_or_insert(reason);
    }
    shutdown.cancel();
}

/// Handles to a running processor (tests and the CLI).
pub struct Running {
    pub metrics: Metrics,
    pub http_addr: Option<std::net::SocketAddr>,
    pub done: tokio::task::JoinHandle<Result<(), RuntimeError>>,
}

/// Starts `processor` and returns once it is consuming; `shutdown` stops it gracefully.
/// `metrics` are the processor's own (created before it, so its stages registered theirs).
pub async fn start<P: Processor>(
    processor: P,
    spec: RunSpec,
    config: Config,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<Running, RuntimeError> {
    // A malformed record's length prefix may claim any size: no decoded string, byte array
    // or collection may be larger than a whole record (process-wide; the first one sets it).
    apache_avro::util::max_allocation_bytes(config.runtime.max_record_bytes);
    for class in crate::dlq::ErrorClass::ALL {
        metrics
            .dead_letters
            .with_label_values(&[spec.name.as_str(), class.as_str()]);
    }
    metrics
        .transient_errors
        .with_label_values(&[spec.name.as_str()]);
    for topic in &spec.input_topics {
        metrics
            .records_consumed
            .with_label_values(&[topic.as_str()]);
    }
    // Every processor may write statuses and dead letters: their series exist from the start.
    for topic in [&config.runtime.status_topic, &config.runtime.dlq_topic] {
        metrics
            .records_produced
            .with_label_values(&[topic.as_str()]);
    }
    let processor = Arc::new(processor);
    let health = Health::default();
    let pause = Arc::new(PauseState::default());
    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let group_id = config.group_id(&spec.name);
    let txn = config
        .kafka
        .transactional
        .then(|| Arc::new(Transactions::default()));
    let mut producer_settings = producer_config(&config);
    let mut consumer_settings = consumer_config(&config, &group_id);
    if txn.is_some() {
        producer_settings.set(
            "transactional.id",
            format!("{group_id}-{}", config.kafka.instance_id),
        );
        // Offsets travel inside the transactions; nothing is auto-committed.
        consumer_settings.set("enable.auto.commit", "false");
    }
    // Statistics of the producer: broker round trips and the time records wait to be sent.
    if !config.kafka.producer.contains_key("statistics.interval.ms") {
        producer_settings.set("statistics.interval.ms", "5000");
    }
    let producer: crate::kafka::RuntimeProducer =
        producer_settings.create_with_context(crate::kafka::ProducerStats {
            metrics: metrics.clone(),
        })?;
    if txn.is_some() {
        let p = producer.clone();
        tokio::task::spawn_blocking(move || {
            p.init_transactions(Duration::from_secs(30))?;
            p.begin_transaction()
        })
        .await
        .map_err(|e| RuntimeError::Setup(e.to_string()))??;
    }
    let fatal = Arc::new(Mutex::new(None));
    let context = RunnerContext {
        fatal: fatal.clone(),
        tracker: tracker.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        pause: pause.clone(),
        drain_timeout: Duration::from_millis(config.runtime.shutdown_grace_ms / 2),
        shutdown: shutdown.clone(),
        hooks: processor.clone(),
        transactions: txn.clone().map(|t| (t, producer.clone())),
    };
    let consumer: StreamConsumer<RunnerContext> = consumer_settings.create_with_context(context)?;
    let topics: Vec<&str> = spec.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let codec =
        AvroCodec::new(&config.registry).map_err(|e| RuntimeError::Registry(e.to_string()))?;
    let http_addr =
        http::serve_configured(&config, metrics.clone(), health.clone(), shutdown.clone()).await?;
    let shared = Arc::new(Shared {
        consumer: Arc::new(consumer),
        producer,
        codec,
        tracker,
        metrics: metrics.clone(),
        health,
        pause,
        in_flight: Arc::new(Semaphore::new(config.runtime.max_in_flight)),
        capacity: Arc::new(Notify::new()),
        shutdown,
        fatal,
        txn,
        max_record_bytes: crate::kafka::max_record_bytes(&config),
        config,
        spec,
    });
    tracing::info!(processor = %shared.spec.name, inputs = ?shared.spec.input_topics, "started");
    let done = tokio::spawn(run_loop(processor, shared));
    Ok(Running {
        metrics,
        http_addr,
        done,
    })
}

/// Runs until `shutdown` is cancelled, then drains and commits.
pub async fn run<P: Processor>(
    processor: P,
    spec: RunSpec,
    config: Config,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let running = start(processor, spec, config, metrics, shutdown).await?;
    wait(running).await
}

/// Waits for a started processor to stop.
pub async fn wait(running: Running) -> Result<(), RuntimeError> {
    match running.done.await {
        Ok(result) => result,
        Err(join) => Err(RuntimeError::Stopped(format!(
            "consume loop panicked: {join}"
        ))),
    }
}

/// A record read under its partition's current assignment epoch.
struct Held {
    record: RecordMeta,
    epoch: u64,
}

async fn run_loop<P: Processor>(
    processor: Arc<P>,
    shared: Arc<Shared>,
) -> Result<(), RuntimeError> {
    let lanes = shared.config.runtime.lanes;
    // The in-flight semaphore bounds memory; a lane's queue may take all of it, so records
    // of one busy partition (all in one lane) never hold back records bound for other lanes.
    let per_lane = shared.config.runtime.max_in_flight.max(1);
    let mut senders = Vec::with_capacity(lanes);
    let mut lane_tasks = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (tx, rx) = mpsc::channel::<Job>(per_lane);
        senders.push(tx);
        let lane = Lane {
            processor: processor.clone(),
            shared: shared.clone(),
        };
        lane_tasks.push(tokio::spawn(lane.run(rx)));
    }

    let committer = shared.txn.is_some().then(|| {
        let shared = shared.clone();
        std::thread::spawn(move || commit_periodically(&shared))
    });

    let mut backlog: VecDeque<Held> = VecDeque::new();
    let mut paused = false;
    let mut full_since: Option<tokio::time::Instant> = None;
    let mut watch = tokio::time::interval(WATCH_EVERY);
    let mut watchdog = Watchdog::new(Duration::from_millis(shared.config.runtime.stall_after_ms));
    loop {
        // Hand out what we hold, as far as lanes and the in-flight bound allow.
        while dispatch_front(&shared, &senders, &mut backlog) {}
        let full = backlog.len() >= HOLD_AT;
        let pause_at = match (full, full_since) {
            (true, Some(since)) => since + PAUSE_AFTER,
            (true, None) => *full_since.insert(tokio::time::Instant::now()) + PAUSE_AFTER,
            (false, _) => {
                full_since = None;
                tokio::time::Instant::now() + PAUSE_AFTER
            }
        };
        if full && !paused && tokio::time::Instant::now() >= pause_at {
            shared.pause.apply(&*shared.consumer, true);
            paused = true;
        } else if backlog.is_empty() && paused {
            shared.pause.apply(&*shared.consumer, false);
            paused = false;
        }
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break,
            // Paused partitions deliver nothing more, but polling serves rebalances.
            received = shared.consumer.recv(), if !full || paused => match received {
                Ok(msg) => {
                    watchdog.received(&shared.health);
                    if let Some(held) = hold(&shared, &msg) {
                        backlog.push_back(held);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            },
            _ = shared.capacity.notified(), if !backlog.is_empty() => {}
            _ = tokio::time::sleep_until(pause_at), if full && !paused => {}
            _ = watch.tick() => {
                shared.health.beat();
                let idle = backlog.is_empty()
                    && !paused
                    && watchdog.quiet();
                if idle {
                    look_when_idle(&shared, &mut watchdog).await;
                }
            }
        }
    }

    // Graceful stop: no more fetching; lanes finish what they were given; commit.
    tracing::info!(
        held = backlog.len(),
        "shutting down: draining in-flight records"
    );
    shared.health.set_ready(false);
    drop(senders);
    let grace = Duration::from_millis(shared.config.runtime.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async {
        for task in lane_tasks {
            let _ = task.await;
        }
        // Every permit back means every acknowledgement task has finished.
        let all = shared.config.runtime.max_in_flight as u32;
        let _ = shared.in_flight.acquire_many(all).await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "grace period over with records in flight; they will be redone after restart"
        );
    }
    if let Some(handle) = committer {
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
    match &shared.txn {
        Some(txn) => {
            let committed = if shared.has_failed() {
                Ok(0)
            } else {
                txn.commit(
                    &shared.producer,
                    shared.consumer.group_metadata(),
                    TXN_TIMEOUT,
                )
            };
            if let Err(e) = committed {
                tracing::error!(error = %e, "final transaction commit failed; records will be redone");
            }
        }
        None => {
            if let Err(e) = shared.consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "final commit");
            }
        }
    }
    let _ = shared.producer.flush(Duration::from_secs(5));
    shared.consumer.unsubscribe();
    let fatal = shared.fatal.lock().ok().and_then(|f| f.clone());
    match fatal {
        Some(reason) => Err(RuntimeError::Stopped(reason)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// The exactly-once committer: a plain thread, because commits block.
fn commit_periodically(shared: &Shared) {
    let interval = Duration::from_millis(shared.config.kafka.transaction_interval_ms.max(10));
    while !shared.shutdown.is_cancelled() {
        std::thread::sleep(interval);
        let Some(txn) = &shared.txn else { return };
        if let Err(e) = txn.commit(
            &shared.producer,
            shared.consumer.group_metadata(),
            TXN_TIMEOUT,
        ) {
            shared.fail(e);
            return;
        }
    }
}

/// Copies a received message into a record with its partition's epoch; None when the
/// partition is not (or no longer) ours.
fn hold(shared: &Shared, msg: &BorrowedMessage<'_>) -> Option<Held> {
    let epoch = shared
        .tracker
        .lock()
        .ok()?
        .epoch(msg.topic(), msg.partition())?;
    let record = RecordMeta {
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
        payload: msg.payload().map(<[u8]>::to_vec),
    };
    Some(Held { record, epoch })
}

/// Gives the oldest held record to its lane if there is room; false when there is none
/// (nothing held, the in-flight bound reached, or its lane's queue full).
fn dispatch_front(
    shared: &Shared,
    senders: &[mpsc::Sender<Job>],
    backlog: &mut VecDeque<Held>,
) -> bool {
    let Some(front) = backlog.front() else {
        return false;
    };
    let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
        return false;
    };
    let lane = lane_of(&front.record, senders.len());
    let Ok(slot) = senders[lane].try_reserve() else {
        return false;
    };
    let Some(Held { record, epoch }) = backlog.pop_front() else {
        return false;
    };
    let begun = shared
        .tracker
        .lock()
        .map(|mut t| t.begin(&record.topic, record.partition, record.offset, epoch))
        .unwrap_or(false);
    if !begun {
        // The partition was revoked (or re-assigned) while we held the record: the current
        // owner reads it again.
        return true;
    }
    shared
        .metrics
        .records_consumed
        .with_label_values(&[record.topic.as_str()])
        .inc();
    slot.send(Job {
        record,
        epoch,
        permit: InFlight::new(permit, shared),
    });
    true
}

/// Same key, same lane (order per key); keyless records go by partition.
fn lane_of(record: &RecordMeta, lanes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match &record.key {
        Some(key) => key.hash(&mut h),
        None => (&record.topic, record.partition).hash(&mut h),
    }
    (h.finish() % lanes as u64) as usize
}

/// Nothing received for a while with nothing held: asks the watchdog, and resumes the
/// partitions or stops the processor as it says.
async fn look_when_idle(shared: &Arc<Shared>, watchdog: &mut Watchdog) {
    let group_id = shared.config.group_id(&shared.spec.name);
    let verdict = watchdog
        .look(&shared.consumer, &group_id, &shared.metrics, &shared.health)
        .await;
    match verdict {
        Verdict::Resume { .. } => shared.pause.apply(&*shared.consumer, false),
        Verdict::Fail { reason } => shared.fail(reason),
        Verdict::Fine | Verdict::NoEvidence | Verdict::Wait { .. } => {}
    }
}
