//! The consume loop: read, decide, hold until due, return; store offsets after
//! acknowledgement.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use notify_runtime::codec::AvroCodec;
use notify_runtime::dlq::ErrorClass;
use notify_runtime::http::{self, Health};
use notify_runtime::kafka::{consumer_config, producer_config};
use notify_runtime::offsets::{OffsetTracker, PartitionKey};
use notify_runtime::records::{ChannelMessage, NotificationRequest};
use notify_runtime::runner::{Running, RuntimeError};
use notify_runtime::watchdog::{Verdict, Watchdog};
use notify_runtime::{CancellationToken, Config, now_ms};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, Producer};

use crate::held::{Held, Waiting};
use crate::metrics::{DEFERRED, RetryMetrics};
use crate::outgoing::{self, Outgoing, Subject};
use crate::plan::{self, Facts, Plan, Source};
use crate::settings::RetrySettings;

mod context;
mod holding;
mod outcomes;
mod send;

use context::RetryContext;

/// A waiting record and where it goes.
pub(crate) struct Pending {
    msg: OwnedMessage,
    origin: String,
    step: Option<usize>,
    subject: Subject,
}

pub(crate) struct Worker {
    settings: RetrySettings,
    sources: HashMap<String, Source>,
    config: Config,
    /// Shared with the watchdog's blocking probes.
    consumer: Arc<StreamConsumer<RetryContext>>,
    producer: FutureProducer,
    codec: AvroCodec,
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: RetryMetrics,
    health: Health,
    held: Held<Pending>,
    paused: HashSet<PartitionKey>,
    acks: FuturesUnordered<send::AckFuture>,
    shutdown: CancellationToken,
}

pub(crate) async fn start(
    settings: RetrySettings,
    config: Config,
    shutdown: CancellationToken,
) -> Result<Running, RuntimeError> {
    let metrics = RetryMetrics::new(&settings);
    // Statuses and dead letters: series that exist from the start, as in every processor.
    for topic in [&config.runtime.status_topic, &config.runtime.dlq_topic] {
        metrics
            .base
            .records_produced
            .with_label_values(&[topic.as_str()]);
    }
    let health = Health::default();
    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let context = RetryContext {
        tracker: tracker.clone(),
        metrics: metrics.base.clone(),
        health: health.clone(),
    };
    let consumer: StreamConsumer<RetryContext> =
        consumer_config(&config, &config.group_id(crate::NAME)).create_with_context(context)?;
    let inputs = settings.input_topics();
    let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let producer: FutureProducer = producer_config(&config).create()?;
    let codec =
        AvroCodec::new(&config.registry).map_err(|e| RuntimeError::Registry(e.to_string()))?;
    let http_addr = http::serve_configured(
        &config,
        metrics.base.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let mut sources: HashMap<String, Source> = settings
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.topic.clone(), Source::Step(i)))
        .collect();
    if !settings.deferred_topic.is_empty() {
        sources.insert(settings.deferred_topic.clone(), Source::Deferred);
    }
    tracing::info!(inputs = ?inputs, "retry processor started");
    let worker = Worker {
        settings,
        sources,
        config,
        consumer: Arc::new(consumer),
        producer,
        codec,
        tracker,
        metrics: metrics.clone(),
        health,
        held: Held::default(),
        paused: HashSet::new(),
        acks: FuturesUnordered::new(),
        shutdown,
    };
    Ok(Running {
        metrics: metrics.base,
        http_addr,
        done: tokio::spawn(worker.run()),
    })
}

impl Worker {
    async fn run(mut self) -> Result<(), RuntimeError> {
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        let mut fatal: Option<String> = None;
        let mut watchdog = Watchdog::new(Duration::from_millis(self.config.runtime.stall_after_ms));
        loop {
            let wake = self.held.next_due().map(|due| {
                let wait = (due - now_ms()).max(0) as u64;
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            let step = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                Some(ack) = self.acks.next(), if !self.acks.is_empty() => self.acknowledged(ack),
                _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {
                    self.release_due().await
                }
                received = self.consumer.recv() => match received {
                    Ok(msg) => {
                        watchdog.received(&self.health);
                        self.received(msg.detach()).await
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                        Ok(())
                    }
                },
                _ = sweep.tick() => {
                    self.forget_revoked();
                    // Paused partitions are behind on purpose (too many held).
                    if watchdog.quiet() && self.paused.is_empty() {
                        self.watch(&mut watchdog).await
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(reason) = step {
                tracing::error!(%reason, "stopping");
                fatal = Some(reason);
                break;
            }
        }
        self.stop(fatal).await
    }

    /// Nothing received for a while: asks the watchdog, and resumes the assignment or stops
    /// (to be restarted) as it says.
    async fn watch(&mut self, watchdog: &mut Watchdog) -> Result<(), String> {
        let group_id = self.config.group_id(crate::NAME);
        let verdict = watchdog
            .look(&self.consumer, &group_id, &self.metrics.base, &self.health)
            .await;
        match verdict {
            Verdict::Resume { .. } => {
                if let Ok(assignment) = self.consumer.assignment()
                    && let Err(e) = self.consumer.resume(&assignment)
                {
                    tracing::warn!(error = %e, "resume failed");
                }
                Ok(())
            }
            Verdict::Fail { reason } => Err(reason),
            Verdict::Fine | Verdict::NoEvidence | Verdict::Wait { .. } => Ok(()),
        }
    }

    /// Graceful stop: no more fetching; wait (bounded) for acknowledgements; commit. Held
    /// records are not committed, so they are read again after a restart.
    async fn stop(mut self, fatal: Option<String>) -> Result<(), RuntimeError> {
        self.health.set_ready(false);
        tracing::info!(
            held = self.held.len(),
            pending = self.acks.len(),
            "shutting down"
        );
        let grace = Duration::from_millis(self.config.runtime.shutdown_grace_ms);
        let mut fatal = fatal;
        let _ = tokio::time::timeout(grace, async {
            while let Some(ack) = self.acks.next().await {
                if let Err(e) = self.acknowledged(ack) {
                    fatal.get_or_insert(e);
                }
            }
        })
        .await;
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit");
        }
        let _ = self.producer.flush(Duration::from_secs(5));
        self.consumer.unsubscribe();
        match fatal {
            Some(reason) => Err(RuntimeError::Stopped(reason)),
            None => Ok(()),
        }
    }

    async fn received(&mut self, msg: OwnedMessage) -> Result<(), String> {
        let begun = self
            .tracker
            .lock()
            .map(|mut t| t.begin_current(msg.topic(), msg.partition(), msg.offset()))
            .unwrap_or(false);
        if !begun {
            return Ok(());
        }
        self.metrics
            .base
            .records_consumed
            .with_label_values(&[msg.topic()])
            .inc();
        let Some(&source) = self.sources.get(msg.topic()) else {
            return self.complete_without_output(&msg);
        };
        let subject = match self.decode(source, &msg).await {
            Decoded::Subject(s) => s,
            Decoded::Poison(class, reason) => {
                return self.dead_letter(msg, class, reason, None, None).await;
            }
            Decoded::ShuttingDown => return Ok(()),
        };
        let now = now_ms();
        if subject.expires_at.is_some_and(|t| t <= now) {
            return self.expire(msg, source, &subject).await;
        }
        let headers = outgoing::headers_of(&msg);
        let lookup = |key: &str| outgoing::header(&headers, key);
        let decision = plan::plan(
            &self.settings,
            &Facts {
                source,
                header: &lookup,
                now_ms: now,
                random: rand::random::<f64>(),
            },
        );
        match decision {
            Plan::Hold {
                due_ms,
                origin,
                step,
            } => {
                let pending = Pending {
                    msg,
                    origin,
                    step,
                    subject,
                };
                if due_ms <= now {
                    return self.send_back(pending, due_ms).await;
                }
                self.hold(pending, due_ms);
                Ok(())
            }
            Plan::Move {
                step,
                not_before_ms,
            } => {
                let target = &self.settings.steps[step];
                self.metrics.moved.with_label_values(&[&target.name]).inc();
                let out = outgoing::moved(&msg, &target.topic, not_before_ms);
                self.send(&msg, vec![out]).await
            }
            Plan::DeadLetter {
                class,
                reason,
                origin,
            } => {
                self.dead_letter(msg, class, reason, origin, Some(&subject))
                    .await
            }
        }
    }
}

enum Decoded {
    Subject(Subject),
    Poison(ErrorClass, String),
    ShuttingDown,
}
