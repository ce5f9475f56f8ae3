//! The delivery rule shared by the four channels: expiry, ledger claim, rate limit, provider
//! call, and the mapping of the provider's outcome to status events, the retry ladder, dead
//! letters and token feedback.
//!
//! A record whose ledger row is already final (a replay, or a redo after a crash) gets the
//! same outputs again but no provider call: SENT with reason "already sent", FAILED plus the
//! dead letter, TOKEN_INVALID plus the token feedback. Repeating the outputs keeps them
//! at-least-once when a crash hit between the ledger write and their acknowledgement.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use notify_providers::SendOutcome;
use notify_runtime::dlq::ErrorClass;
use notify_runtime::records::{ChannelMessage, DeliveryChannel, Outcome};
use notify_runtime::{Output, ProcessError, Processor, RecordMeta, now_ms};

use crate::clients::Provider;
use crate::headers;
use crate::ledger::{Claim, DeliveryLedger, FinalState, LedgerKey};
use crate::metrics::DeliveryMetrics;
use crate::rate::TokenBucket;

/// Where the outputs go and how long a claim is respected.
#[derive(Debug, Clone)]
pub struct Topics {
    pub status: String,
    pub retry: String,
    pub token_feedback: String,
}

pub struct Deliverer<P, L> {
    pub channel: DeliveryChannel,
    /// The processor's name: the `stage` of status events.
    pub stage: String,
    pub provider: P,
    pub ledger: L,
    pub rate: TokenBucket,
    pub topics: Topics,
    pub lease_ms: i64,
    /// Set once the runtime has created the registry (see `channels::start`).
    pub metrics: Arc<OnceLock<DeliveryMetrics>>,
}

/// The attempt a record carries: 1 on the channel topic, n+1 after n failed attempts.
fn attempt_of(meta: &RecordMeta) -> i32 {
    meta.header(headers::ATTEMPTS)
        .and_then(|a| a.parse::<i32>().ok())
        .map_or(1, |a| a.saturating_add(1).max(1))
}

impl<P: Provider, L: DeliveryLedger> Deliverer<P, L> {
    /// Records the final state, retrying a failing database for up to one lease: the message
    /// is out, so only a replay inside that time could send it twice.
    async fn finish(&self, key: &LedgerKey, token: &str, state: FinalState, provider_id: &str) {
        let deadline = Instant::now() + Duration::from_millis(self.lease_ms.max(0) as u64);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .ledger
                .finish(key, token, state, provider_id, now_ms())
                .await
            {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(event_id = %key.event_id, channel = %key.channel, "ledger row was taken over during the provider call (lease too short?)");
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    if let Some(m) = self.metrics.get() {
                        m.error("ledger");
                    }
                    tracing::warn!(error = %e, "ledger write after the provider call failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(error = %e, event_id = %key.event_id, "ledger write failed for a whole lease; a replay may send again");
                    return;
                }
            }
        }
    }

    /// Outputs for a row already final: everything but the provider call.
    fn repeat(
        &self,
        msg: &ChannelMessage,
        state: FinalState,
        attempt: i32,
    ) -> Result<Vec<Output>, ProcessError> {
        match state {
            FinalState::Sent => Ok(vec![self.status(
                msg,
                Outcome::Sent,
                Some("already sent".into()),
                attempt,
            )]),
            FinalState::TokenInvalid => {
                let reason = "already token_invalid";
                Ok(vec![
                    self.status(msg, Outcome::TokenInvalid, Some(reason.into()), attempt),
                    self.token_feedback(msg, reason),
                ])
            }
            FinalState::Failed => Err(ProcessError::Reject {
                class: ErrorClass::Permanent,
                reason: "already failed".into(),
                outputs: vec![self.status(
                    msg,
                    Outcome::Failed,
                    Some("already failed".into()),
                    attempt,
                )],
            }),
        }
    }
}

impl<P: Provider, L: DeliveryLedger> Processor for Deliverer<P, L> {
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
        // Wait for the rate before claiming, so the lease covers only the call itself.
        self.rate.acquire().await;
        let key = LedgerKey {
            event_id: msg.event_id.clone(),
            channel: self.channel.as_str().into(),
            recipient: msg.recipient.clone(),
        };
        let token = uuid::Uuid::new_v4().to_string();
        let claim = self
            .ledger
            .claim(&key, &token, now_ms(), self.lease_ms)
            .await;
        let claims = match claim.map_err(|e| {
            if let Some(m) = self.metrics.get() {
                m.error("ledger");
            }
            ProcessError::transient(e)
        })? {
            Claim::Claimed { claims } => claims,
            Claim::Finished { state, .. } => return self.repeat(&msg, state, attempt),
            Claim::Busy { lease_left_ms } => {
                // Another consumer (or a crashed one) holds the row: hold this record until it
                // is finished or its lease runs out, then decide again.
                return Err(ProcessError::transient(format!(
                    "delivery in progress elsewhere; lease ends in {lease_left_ms} ms"
                )));
            }
        };
        if claims > 1 {
            tracing::info!(event_id = %msg.event_id, channel = self.channel.as_str(), claims, "taking over an expired claim: the earlier attempt may or may not have reached the provider");
        }
        let started = Instant::now();
        let outcome = self.provider.send(&msg).await;
        if let Some(m) = self.metrics.get() {
            m.observe(&outcome, started.elapsed());
        }
        match outcome {
            SendOutcome::Sent { provider_id } => {
                self.finish(&key, &token, FinalState::Sent, &provider_id)
                    .await;
                Ok(vec![self.status(&msg, Outcome::Sent, None, attempt)])
            }
            SendOutcome::Retryable {
                reason,
                retry_after,
            } => {
                if let Err(e) = self.ledger.release(&key, &token).await {
                    // The retry then waits for the lease, which is harmless.
                    tracing::warn!(error = %e, "releasing the ledger row failed");
                }
                Ok(vec![
                    self.retry(&msg, meta, attempt, &reason, retry_after),
                    self.status(&msg, Outcome::RetryScheduled, Some(reason), attempt),
                ])
            }
            SendOutcome::Permanent { reason } => {
                self.finish(&key, &token, FinalState::Failed, "").await;
                Err(ProcessError::Reject {
                    class: ErrorClass::Permanent,
                    outputs: vec![self.status(
                        &msg,
                        Outcome::Failed,
                        Some(reason.clone()),
                        attempt,
                    )],
                    reason,
                })
            }
            SendOutcome::TokenInvalid { reason } => {
                self.finish(&key, &token, FinalState::TokenInvalid, "")
                    .await;
                Ok(vec![
                    self.status(&msg, Outcome::TokenInvalid, Some(reason.clone()), attempt),
                    self.token_feedback(&msg, &reason),
                ])
            }
        }
    }
}

#[cfg(test)]
#[path = "deliver_tests.rs"]
mod tests;
