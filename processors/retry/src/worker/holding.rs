//! Holding records until due: the timer queue, releasing what is due, and pausing a
//! partition that holds too many (bounded memory) until it drains to half.

use notify_runtime::now_ms;
use notify_runtime::offsets::PartitionKey;
use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{Pending, Source, Waiting, Worker};

impl Worker {
    pub(super) fn hold(&mut self, pending: Pending, due_ms: i64) {
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

    pub(super) async fn release_due(&mut self) -> Result<(), String> {
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

    pub(super) fn forget_revoked(&mut self) {
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
                if self.paused.insert(p.clone()) {
                    self.metrics.pauses.with_label_values(&[&p.0]).inc();
                }
            }
            Ok(()) => {
                self.paused.remove(p);
            }
            Err(e) => tracing::warn!(error = %e, pause, "pause/resume failed"),
        }
    }
}
