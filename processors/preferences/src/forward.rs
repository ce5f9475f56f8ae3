//! Forwarding a request to its user's partition, before any keyed stage.
//!
//! Producers in other languages use other default partitioners (librdkafka's CRC32 in Python
//! and Go, murmur2 in Java), so the same user id can arrive on different partitions of the
//! intake. Everything keyed by user (the profile table, dedup entries, rate windows) is owned
//! by the partition the project's partitioner (murmur2, as the Java client) names. A request
//! found on another partition is written once, unchanged, to its owner's partition and goes
//! no further here; its copy is processed there, in offset order with the user's others.

use notify_runtime::dlq::ErrorClass;
use notify_runtime::partitioner::partition_for;
use notify_runtime::records::NotificationRequest;
use notify_runtime::{Emit, Metrics, Output, ProcessError, RecordMeta, Stage};

pub use notify_runtime::headers::FORWARDED_FROM;

pub struct Forward {
    /// The intake topic and its partition count.
    pub topic: String,
    pub partitions: usize,
    pub metrics: Metrics,
}

impl Stage for Forward {
    type In = NotificationRequest;
    type Out = NotificationRequest;

    fn name(&self) -> &'static str {
        "forward"
    }

    async fn process(
        &self,
        request: NotificationRequest,
        record: &RecordMeta,
    ) -> Result<Emit<NotificationRequest>, ProcessError> {
        if request.user_id.trim().is_empty() {
            return Err(ProcessError::reject(
                ErrorClass::Validation,
                "empty required field(s): user_id",
            ));
        }
        let owner = partition_for(&request.user_id, self.partitions);
        // Keyed by the user id on its owner's partition: the user's records share a lane.
        let home = owner == record.partition && record.key.as_deref() == Some(&request.user_id);
        if record.topic != self.topic || home {
            return Ok(Emit::next(request));
        }
        self.metrics.decided(self.name(), "forwarded");
        let mut copy = Output::bytes(
            &self.topic,
            Some(request.user_id.clone()),
            record.payload.clone().unwrap_or_default(),
        )
        .to_partition(owner);
        copy.headers = record
            .headers
            .iter()
            .filter(|(k, _)| k != FORWARDED_FROM)
            .cloned()
            .collect();
        Ok(Emit::end(vec![
            copy.with_header(FORWARDED_FROM, record.position()),
        ]))
    }

    fn output(&self, request: NotificationRequest, record: &RecordMeta) -> Output {
        // Alone, the stage passes records on unchanged (tests).
        Output::record(&self.topic, record.key.clone().unwrap_or_default(), request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(user: &str) -> NotificationRequest {
        NotificationRequest {
            event_id: "e".into(),
            user_id: user.into(),
            category: "c".into(),
            template_id: "t".into(),
            data: Default::default(),
            channels: vec![],
            priority: Default::default(),
            created_at: 1,
            expires_at: None,
            source: String::new(),
            email: None,
            phone: None,
        }
    }

    #[tokio::test]
    async fn a_request_on_another_partition_is_forwarded_once_to_its_owner() {
        let forward = Forward {
            topic: "in".into(),
            partitions: 8,
            metrics: Metrics::new("test"),
        };
        let owner = partition_for("u-42", 8);
        let elsewhere = (owner + 3) % 8;
        let mut record = RecordMeta::for_test("in", elsewhere, 17, "u-42");
        record.payload = Some(b"bytes as written".to_vec());
        let emit = forward.process(request("u-42"), &record).await.expect("ok");
        assert!(
            emit.next.is_empty(),
            "nothing goes on from the wrong partition"
        );
        let copy = &emit.side[0];
        assert_eq!(copy.partition, Some(owner));
        assert_eq!(copy.key.as_deref(), Some("u-42"));
        assert!(
            copy.headers
                .iter()
                .any(|(k, v)| k == FORWARDED_FROM && v == format!("in/{elsewhere}/17").as_bytes())
        );
        let home = RecordMeta::for_test("in", owner, 18, "u-42");
        let emit = forward.process(request("u-42"), &home).await.expect("ok");
        assert_eq!(emit.next.len(), 1, "on its owner's partition it goes on");
        assert!(emit.side.is_empty());
    }
}
