//! The delivery rule shared by the four channels: expiry, the ledger, the rate limit, the
//! provider call, and the mapping of the provider's outcome to status events, the retry
//! ladder, dead letters and token feedback.
//!
//! Per message: the owner of the channel partition reads the ledger only when an earlier
//! owner may have handled the record (an earlier epoch claimed its offset, or it is a retry,
//! a replay, or a message not written exactly once); it claims the offset and confirms it
//! still owns the partition (one shared round for every record waiting, see `ownership`),
//! calls the provider, and writes the outcome. A row that is final gets the same outputs
//! again without a call (a redo after a crash: its first outputs were never committed). A
//! record an earlier owner claimed without an outcome is in doubt: it is waited for (the
//! earlier owner may still finish it) and then settled by the channel's in-doubt policy. See
//! README "Delivery guarantees".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify_providers::SendOutcome;
use notify_runtime::dlq::ErrorClass;
use notify_runtime::headers::{EXACTLY_ONCE, REPLAY_RUN};
use notify_runtime::records::{ChannelMessage, DeliveryChannel, Outcome};
use notify_runtime::{Output, ProcessError, Processor, RecordMeta, now_ms};
use tokio::sync::watch;

use crate::clients::Provider;
use crate::headers;
use crate::ledger::{DeliveryLedger, MessageKey, Row, State};
use crate::metrics::DeliveryMetrics;
use crate::ownership::Ownership;
use crate::rate::TokenBucket;
use crate::settings::InDoubtPolicy;

/// Where the outputs go.
#[derive(Debug, Clone)]
pub struct Topics {
    pub status: String,
    pub retry: String,
    pub token_feedback: String,
}

/// The log end of an input partition (to know which records predate a takeover).
pub trait LogEnd: Send + Sync + 'static {
    fn log_end(&self, partition: i32) -> Option<i64>;
}

/// This owner's hold on one input partition.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub epoch: i64,
    /// Records below this offset may have been handled by an earlier owner (it claimed them,
    /// or which it handled is unknown and this is the log end at the takeover).
    pub takeover_end: i64,
    /// An earlier owner may be in a call for a claimed record until a lease after this (ms).
    pub claimed_at_ms: i64,
}

impl Taken {
    fn from(t: crate::ownership::Takeover, log_end: impl FnOnce() -> Option<i64>) -> Taken {
        let takeover_end = if t.unknown_earlier {
            // Unknown: read the ledger for every record up to the log end (safe, slower).
            log_end().unwrap_or(i64::MAX)
        } else {
            t.claimed_through.map_or(0, |c| c.saturating_add(1))
        };
        Taken {
            epoch: t.epoch,
            takeover_end,
            claimed_at_ms: if t.unknown_earlier {
                notify_runtime::now_ms()
            } else {
                t.claimed_at_ms
            },
        }
    }
}

pub struct Deliverer<P, L, O> {
    pub channel: DeliveryChannel,
    /// The processor's name: the `stage` of status events.
    pub stage: String,
    pub input: String,
    pub provider: P,
    pub ledger: L,
    pub ownership: Arc<O>,
    pub log_end: Arc<dyn LogEnd>,
    pub rate: TokenBucket,
    pub topics: Topics,
    /// How long a claim of an earlier owner is waited for before it counts as in doubt.
    pub lease_ms: i64,
    pub in_doubt: InDoubtPolicy,
    pub metrics: DeliveryMetrics,
    pub owned: Arc<Mutex<HashMap<i32, watch::Receiver<Option<Taken>>>>>,
}

/// The attempt a record carries: 1 on the channel topic, n+1 after n failed attempts.
fn attempt_of(meta: &RecordMeta) -> i32 {
    meta.header(headers::ATTEMPTS)
        .and_then(|a| a.parse::<i32>().ok())
        .map_or(1, |a| a.saturating_add(1).max(1))
}

/// What a row found in the ledger means for this record.
enum Settled {
    /// Its outputs (or none): no provider call.
    Done(Result<Vec<Output>, ProcessError>),
    /// Not sent and not in doubt: claim it and call the provider.
    Send,
    /// An earlier owner's claim past its lease, under the `fail` policy: write it in doubt.
    DeclareInDoubt,
}

impl<P: Provider, L: DeliveryLedger, O: Ownership> Deliverer<P, L, O> {
    /// This owner's epoch for `partition`, once the takeover is done.
    async fn taken(&self, partition: i32) -> Result<Taken, ProcessError> {
        let rx = self
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .cloned();
        let Some(mut rx) = rx else {
            // Assigned outside a rebalance callback (tests driving the stage directly).
            let takeover = self
                .ownership
                .take(partition)
                .await
                .map_err(ProcessError::transient)?;
            let taken = Taken::from(takeover, || self.log_end.log_end(partition));
            let (tx, rx) = watch::channel(Some(taken));
            drop(tx);
            self.owned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(partition, rx);
            return Ok(taken);
        };
        let waited = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|t| t.is_some()))
            .await
            .map_err(|_| ProcessError::transient("taking the partition over is not done yet"))?
            .map_err(|_| ProcessError::transient("the partition was revoked"))?;
        Ok(waited.expect("waited for Some"))
    }

    fn row(&self, state: State, taken: &Taken, record: &RecordMeta, attempt: i32) -> Row {
        Row {
            state,
            epoch: taken.epoch,
            partition: record.partition,
            offset: record.offset,
            attempt,
            provider_id: String::new(),
            reason: String::new(),
            updated_at_ms: now_ms(),
        }
    }

    /// Writes the outcome of a call, retrying a failing database for up to one lease: the
    /// message is out, so only a redo inside that time could see the claim and doubt it.
    async fn finish(&self, key: &MessageKey, row: Row) {
        let deadline = Instant::now() + Duration::from_millis(self.lease_ms.max(0) as u64);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.ledger.write(key, row.clone()).await {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    self.metrics.error(self.channel, "ledger");
                    tracing::warn!(error = %e, "ledger write after the provider call failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(error = %e, event_id = %key.event_id, "ledger write failed for a whole lease; a redo will find the message in doubt");
                    return;
                }
            }
        }
    }

    /// What the ledger's `row` says about this record.
    fn settle(
        &self,
        row: &Row,
        msg: &ChannelMessage,
        meta: &RecordMeta,
        taken: &Taken,
        attempt: i32,
    ) -> Settled {
        let replay = meta.header(REPLAY_RUN).is_some();
        match row.state {
            // A replay sends only what never arrived: nothing to say about the rest.
            State::Sent | State::TokenInvalid | State::InDoubt if replay => {
                self.metrics.replay_skipped(self.channel, row.state);
                Settled::Done(Ok(Vec::new()))
            }
            State::Failed | State::Retrying => {
                if replay || row.state == State::Retrying {
                    Settled::Send
                } else {
                    Settled::Done(self.failed(
                        msg,
                        attempt,
                        ErrorClass::Permanent,
                        "already failed",
                    ))
                }
            }
            State::Sent => Settled::Done(Ok(vec![self.status(
                msg,
                Outcome::Sent,
                Some("already sent".into()),
                attempt,
            )])),
            State::TokenInvalid => {
                let reason = "already token_invalid";
                Settled::Done(Ok(vec![
                    self.status(msg, Outcome::TokenInvalid, Some(reason.into()), attempt),
                    self.token_feedback(msg, reason),
                ]))
            }
            State::InDoubt => {
                Settled::Done(self.failed(msg, attempt, ErrorClass::InDoubt, &row.reason))
            }
            // Our own claim (an attempt of this record that never reached the call).
            State::Claimed if row.epoch == taken.epoch => Settled::Send,
            State::Claimed => {
                let waited = now_ms() - row.updated_at_ms;
                if waited < self.lease_ms {
                    // The earlier owner may still be in the call and write its outcome.
                    return Settled::Done(Err(ProcessError::transient(format!(
                        "claimed by an earlier owner (epoch {}); waiting {} ms more for its outcome",
                        row.epoch,
                        self.lease_ms - waited
                    ))));
                }
                match self.in_doubt {
                    InDoubtPolicy::Resend => Settled::Send,
                    InDoubtPolicy::Fail => Settled::DeclareInDoubt,
                }
            }
        }
    }

    /// FAILED with `reason`, and the record dead-lettered with `class`.
    fn failed(
        &self,
        msg: &ChannelMessage,
        attempt: i32,
        class: ErrorClass,
        reason: &str,
    ) -> Result<Vec<Output>, ProcessError> {
        let status = self.status(msg, Outcome::Failed, Some(reason.into()), attempt);
        Err(ProcessError::reject_with(class, reason, vec![status]))
    }

    /// An earlier owner's claim past its lease under the `fail` policy: written in doubt,
    /// then settled like any in-doubt row.
    async fn declare_in_doubt(
        &self,
        key: &MessageKey,
        old: &Row,
        msg: &ChannelMessage,
        attempt: i32,
    ) -> Result<Vec<Output>, ProcessError> {
        let reason = format!(
            "in doubt: the owner of epoch {} claimed it and recorded no outcome; not resent",
            old.epoch
        );
        let row = Row {
            state: State::InDoubt,
            reason: reason.clone(),
            updated_at_ms: now_ms(),
            ..old.clone()
        };
        self.ledger
            .write(key, row)
            .await
            .map_err(ProcessError::transient)?;
        self.metrics.in_doubt(self.channel);
        self.failed(msg, attempt, ErrorClass::InDoubt, &reason)
    }
}

impl<P: Provider, L: DeliveryLedger, O: Ownership> Processor for Deliverer<P, L, O> {
    type Input = ChannelMessage;

    async fn process(
        &self,
        msg: ChannelMessage,
        meta: &RecordMeta,
    ) -> Result<Vec<Output>, ProcessError> {
        if msg.channel != self.channel {
            return Err(ProcessError::reject(
                ErrorClass::Validation,
                format!(
                    "a {} message on the {} topic",
                    msg.channel.as_str(),
                    self.channel.as_str()
                ),
            ));
        }
        if msg.event_id.trim().is_empty() || msg.recipient.trim().is_empty() {
            return Err(ProcessError::reject(
                ErrorClass::Validation,
                "empty event_id or recipient",
            ));
        }
        let attempt = attempt_of(meta);
        if msg.expires_at.is_some_and(|t| t <= now_ms()) {
            return Ok(vec![self.status(
                &msg,
                Outcome::Expired,
                Some("expired before delivery".into()),
                attempt,
            )]);
        }
        let taken = self.taken(meta.partition).await?;
        let key = MessageKey {
            event_id: msg.event_id.clone(),
            user_id: msg.user_id.clone(),
            channel: self.channel.as_str().into(),
            recipient: msg.recipient.clone(),
        };
        let may_have_been_handled = meta.offset < taken.takeover_end
            || meta.header(EXACTLY_ONCE).is_none()
            || meta.header(headers::ATTEMPTS).is_some()
            || meta.header(REPLAY_RUN).is_some();
        if may_have_been_handled {
            let found = self.ledger.read(&key).await.map_err(|e| {
                self.metrics.error(self.channel, "ledger");
                ProcessError::transient(e)
            })?;
            let found = match found {
                Some(row) => Some(row),
                // Claimed by an earlier owner, no outcome: it may be in the call, or have
                // called and crashed before writing one.
                None if meta.offset < taken.takeover_end => Some(Row {
                    epoch: taken.epoch - 1,
                    updated_at_ms: taken.claimed_at_ms,
                    ..self.row(State::Claimed, &taken, meta, attempt)
                }),
                None => None,
            };
            if let Some(row) = found {
                match self.settle(&row, &msg, meta, &taken, attempt) {
                    Settled::Send => {}
                    Settled::DeclareInDoubt => {
                        return self.declare_in_doubt(&key, &row, &msg, attempt).await;
                    }
                    Settled::Done(done) => return done,
                }
            }
        }
        // Wait for the rate before claiming, so the claim covers only the call itself.
        self.rate.acquire().await;
        let current = self
            .ownership
            .claim(meta.partition, taken.epoch, meta.offset)
            .await
            .map_err(|e| {
                self.metrics.error(self.channel, "ledger");
                ProcessError::transient(e)
            })?;
        if !current {
            // Another instance took the partition over: it decides this message.
            return Err(ProcessError::transient(
                "partition taken over by another instance; not calling the provider",
            ));
        }
        let started = Instant::now();
        let outcome = self.provider.send(&msg).await;
        notify_runtime::fault::point("delivery.after_call");
        self.metrics
            .observe(self.channel, &outcome, started.elapsed());
        let done = |state: State, provider_id: String, reason: &str| Row {
            provider_id,
            reason: crate::redact(reason, &msg.recipient),
            ..self.row(state, &taken, meta, attempt)
        };
        match outcome {
            SendOutcome::Sent { provider_id } => {
                self.finish(&key, done(State::Sent, provider_id, "")).await;
                notify_runtime::fault::point("delivery.after_ledger");
                Ok(vec![self.status(&msg, Outcome::Sent, None, attempt)])
            }
            SendOutcome::Retryable {
                reason,
                retry_after,
            } => {
                let reason = crate::redact(&reason, &msg.recipient);
                self.finish(&key, done(State::Retrying, String::new(), &reason))
                    .await;
                Ok(vec![
                    self.retry(&msg, meta, attempt, &reason, retry_after),
                    self.status(&msg, Outcome::RetryScheduled, Some(reason), attempt),
                ])
            }
            SendOutcome::Permanent { reason } => {
                let reason = crate::redact(&reason, &msg.recipient);
                self.finish(&key, done(State::Failed, String::new(), &reason))
                    .await;
                self.failed(&msg, attempt, ErrorClass::Permanent, &reason)
            }
            SendOutcome::TokenInvalid { reason } => {
                let reason = crate::redact(&reason, &msg.recipient);
                self.finish(&key, done(State::TokenInvalid, String::new(), &reason))
                    .await;
                Ok(vec![
                    self.status(&msg, Outcome::TokenInvalid, Some(reason.clone()), attempt),
                    self.token_feedback(&msg, &reason),
                ])
            }
            SendOutcome::InDoubt { reason } => {
                let reason = format!("in doubt: {}", crate::redact(&reason, &msg.recipient));
                match self.in_doubt {
                    InDoubtPolicy::Fail => {
                        self.finish(&key, done(State::InDoubt, String::new(), &reason))
                            .await;
                        self.metrics.in_doubt(self.channel);
                        self.failed(&msg, attempt, ErrorClass::InDoubt, &reason)
                    }
                    InDoubtPolicy::Resend => {
                        self.finish(&key, done(State::Retrying, String::new(), &reason))
                            .await;
                        Ok(vec![
                            self.retry(&msg, meta, attempt, &reason, None),
                            self.status(&msg, Outcome::RetryScheduled, Some(reason), attempt),
                        ])
                    }
                }
            }
            SendOutcome::Unavailable { reason } => {
                // Nothing is wrong with the message: release it and hold the record.
                let reason = crate::redact(&reason, &msg.recipient);
                self.finish(&key, done(State::Retrying, String::new(), &reason))
                    .await;
                Err(ProcessError::transient(format!(
                    "{} unavailable: {reason}",
                    self.channel.as_str()
                )))
            }
        }
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            if *topic != self.input {
                continue;
            }
            let (tx, rx) = watch::channel(None);
            self.owned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*partition, rx);
            let ownership = self.ownership.clone();
            let log_end = self.log_end.clone();
            let partition = *partition;
            tokio::spawn(async move {
                let mut backoff = Duration::from_millis(200);
                loop {
                    match ownership.take(partition).await {
                        Ok(takeover) => {
                            let end = if takeover.unknown_earlier {
                                tokio::task::spawn_blocking(move || log_end.log_end(partition))
                                    .await
                                    .ok()
                                    .flatten()
                            } else {
                                None
                            };
                            let _ = tx.send(Some(Taken::from(takeover, || end)));
                            return;
                        }
                        Err(e) => {
                            if tx.is_closed() {
                                return;
                            }
                            tracing::warn!(partition, error = %e, "taking the partition over failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            });
        }
    }

    fn revoked(&self, partitions: &[(String, i32)]) {
        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, partition) in partitions {
            if *topic == self.input {
                owned.remove(partition);
            }
        }
    }
}

#[cfg(test)]
#[path = "deliver_tests.rs"]
mod tests;
