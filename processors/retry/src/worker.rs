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
use notify_runtime::records::{ChannelMessage, NotificationRequest, Outcome};
use notify_runtime::runner::{Running, RuntimeError};
use notify_runtime::{CancellationToken, Config, now_ms};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::held::{Held, Waiting};
use crate::metrics::{DEFERRED, RetryMetrics};
use crate::outgoing::{self, Outgoing, Subject};
use crate::plan::{self, Facts, Plan, Source};
use crate::settings::RetrySettings;

mod context;
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
    consumer: StreamConsumer<RetryContext>,
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
    let http_addr = if config.http.listen.is_empty() {
        None
    } else {
        let addr = http::serve(
            &config.http.listen,
            metrics.base.clone(),
            health.clone(),
            shutdown.clone(),
        )
        .await
        .map_err(|source| RuntimeError::Http {
            listen: config.http.listen.clone(),
            source,
        })?;
        Some(addr)
    };
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
        consumer,
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
                    Ok(msg) => self.received(msg.detach()).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                        Ok(())
                    }
                },
                _ = sweep.tick() => {
                    self.forget_revoked();
                    Ok(())
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
            Some(reason) => Err(RuntimeError::ProduceFailed(reason)),
            None => Ok(()),
        }
    }

    async fn received(&mut self, msg: OwnedMessage) -> Result<(), String> {
        let begun = self
            .tracker
            .lock()
            .map(|mut t| t.begin(msg.topic(), msg.partition(), msg.offset()))
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

    fn hold(&mut self, pending: Pending, due_ms: i64) {
        let partition: PartitionKey = (pending.msg.topic().to_string(), pending.msg.partition());
        let offset = pending.msg.offset();
        let count = self.held.insert(Waiting {
            partition: partition.clone(),
            offset,
            due_ms,
            item: pending,
        });
        self.metrics.held.set(self.held.len() as i64);
        if count >= self.settings.max_held_per_partition {
            // Idempotent: a partition that was revoked and assigned again is paused anew.
            self.set_paused(&partition, true);
        }
    }

    async fn release_due(&mut self) -> Result<(), String> {
        let now = now_ms();
        let due = self.held.take_due(now);
        self.metrics.held.set(self.held.len() as i64);
        for waiting in due {
            let ours = self
                .tracker
                .lock()
                .map(|t| t.is_assigned(&waiting.partition.0, waiting.partition.1))
                .unwrap_or(false);
            if !ours {
                continue;
            }
            let pending = waiting.item;
            if pending.subject.expires_at.is_some_and(|t| t <= now) {
                let source = self.sources.get(pending.msg.topic()).copied();
                let source = source.unwrap_or(Source::Deferred);
                self.expire(pending.msg, source, &pending.subject).await?;
            } else {
                self.send_back(pending, waiting.due_ms).await?;
            }
        }
        let resume: Vec<PartitionKey> = self
            .paused
            .iter()
            .filter(|p| self.held.count(p) < self.settings.max_held_per_partition.div_ceil(2))
            .cloned()
            .collect();
        for p in resume {
            self.set_paused(&p, false);
        }
        Ok(())
    }

    async fn send_back(&mut self, pending: Pending, due_ms: i64) -> Result<(), String> {
        let now = now_ms();
        let label = self.step_label(pending.step);
        self.metrics.retries.with_label_values(&[&label]).inc();
        let waited_from = match pending.step {
            Some(step) => due_ms - self.settings.steps[step].delay_ms as i64,
            None => due_ms,
        };
        self.metrics
            .wait
            .with_label_values(&[&label])
            .observe((now - waited_from).max(0) as f64 / 1000.0);
        let out = outgoing::returned(&pending.msg, &pending.origin, pending.step, due_ms, now);
        self.send(&pending.msg, vec![out]).await
    }

    async fn expire(
        &mut self,
        msg: OwnedMessage,
        source: Source,
        subject: &Subject,
    ) -> Result<(), String> {
        let label = match source {
            Source::Step(i) => self.step_label(Some(i)),
            Source::Deferred => DEFERRED.to_string(),
        };
        self.metrics.expired.with_label_values(&[&label]).inc();
        let attempt = self.attempts(&msg);
        let status = outgoing::status(
            subject,
            Outcome::Expired,
            "expired while waiting to be retried".into(),
            attempt,
            now_ms(),
        );
        let out = self.status_record(&status).await?;
        self.send(&msg, out.into_iter().collect()).await
    }

    async fn dead_letter(
        &mut self,
        msg: OwnedMessage,
        class: ErrorClass,
        reason: String,
        origin: Option<String>,
        subject: Option<&Subject>,
    ) -> Result<(), String> {
        tracing::debug!(class = class.as_str(), %reason, topic = msg.topic(), offset = msg.offset(), "dead letter");
        self.metrics
            .base
            .dead_letters
            .with_label_values(&[class.as_str()])
            .inc();
        let now = now_ms();
        let mut outs = vec![outgoing::dead_letter(
            &msg,
            &self.config.runtime.dlq_topic,
            class,
            reason.clone(),
            origin.as_deref(),
            now,
        )];
        if let Some(subject) = subject {
            let status = outgoing::status(
                subject,
                Outcome::DeadLettered,
                reason,
                self.attempts(&msg),
                now,
            );
            outs.extend(self.status_record(&status).await?);
        }
        self.send(&msg, outs).await
    }

    fn attempts(&self, msg: &OwnedMessage) -> i32 {
        outgoing::header(&outgoing::headers_of(msg), notify_runtime::dlq::ATTEMPTS)
            .and_then(|v| v.trim().parse::<i32>().ok())
            .unwrap_or(1)
    }

    fn step_label(&self, step: Option<usize>) -> String {
        step.and_then(|i| self.settings.steps.get(i))
            .map(|s| s.name.clone())
            .unwrap_or_else(|| DEFERRED.to_string())
    }

    fn forget_revoked(&mut self) {
        let tracker = self.tracker.clone();
        let Ok(t) = tracker.lock() else { return };
        let dropped = self.held.retain_partitions(|p| t.is_assigned(&p.0, p.1));
        self.paused.retain(|p| t.is_assigned(&p.0, p.1));
        if dropped > 0 {
            tracing::info!(dropped, "forgot held records of revoked partitions");
            self.metrics.held.set(self.held.len() as i64);
        }
    }

    fn set_paused(&mut self, p: &PartitionKey, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&p.0, p.1, Offset::Invalid)
            .is_err()
        {
            return;
        }
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        match result {
            Ok(()) if pause => {
                self.paused.insert(p.clone());
            }
            Ok(()) => {
                self.paused.remove(p);
            }
            Err(e) => tracing::warn!(error = %e, pause, "pause/resume failed"),
        }
    }
}

enum Decoded {
    Subject(Subject),
    Poison(ErrorClass, String),
    ShuttingDown,
}
