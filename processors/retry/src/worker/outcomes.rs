//! What the retry processor writes for one record: the record back on its origin, a dead
//! letter with its status event, or an EXPIRED status event.

use notify_runtime::dlq::ErrorClass;
use notify_runtime::now_ms;
use notify_runtime::records::Outcome;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use super::{DEFERRED, Pending, Source, Subject, Worker, outgoing};

impl Worker {
    pub(super) async fn send_back(&mut self, pending: Pending, due_ms: i64) -> Result<(), String> {
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

    pub(super) async fn expire(
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

    pub(super) async fn dead_letter(
        &mut self,
        msg: OwnedMessage,
        class: ErrorClass,
        reason: String,
        origin: Option<String>,
        subject: Option<&Subject>,
    ) -> Result<(), String> {
        tracing::debug!(class = class.as_str(), reason = %notify_runtime::records::scrub(&reason), topic = msg.topic(), offset = msg.offset(), "dead letter");
        self.metrics
            .base
            .dead_letters
            .with_label_values(&[crate::NAME, class.as_str()])
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

    pub(super) fn attempts(&self, msg: &OwnedMessage) -> i32 {
        outgoing::header(&outgoing::headers_of(msg), notify_runtime::dlq::ATTEMPTS)
            .and_then(|v| v.trim().parse::<i32>().ok())
            .unwrap_or(1)
    }

    pub(super) fn step_label(&self, step: Option<usize>) -> String {
        step.and_then(|i| self.settings.steps.get(i))
            .map(|s| s.name.clone())
            .unwrap_or_else(|| DEFERRED.to_string())
    }
}
