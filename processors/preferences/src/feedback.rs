//! Device tokens providers reported invalid (`notify.token-feedback.v1`), per user. The topic
//! is not compacted and not co-partitioned by any guarantee, so every partition is read from
//! the beginning into a set per user; small (only invalid tokens).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify_runtime::Config;
use notify_runtime::codec::AvroCodec;
use notify_runtime::records::TokenFeedback;
use notify_runtime::runner::RuntimeError;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[derive(Clone, Default)]
pub struct InvalidTokens {
    by_user: Arc<RwLock<HashMap<String, HashSet<String>>>>,
}

impl InvalidTokens {
    pub fn is_invalid(&self, user_id: &str, token: &str) -> bool {
        let map = self.by_user.read().unwrap_or_else(|e| e.into_inner());
        map.get(user_id).is_some_and(|s| s.contains(token))
    }

    pub fn insert(&self, user_id: &str, token: &str) {
        let mut map = self.by_user.write().unwrap_or_else(|e| e.into_inner());
        map.entry(user_id.to_string())
            .or_default()
            .insert(token.to_string());
    }

    /// Starts a background reader of `topic` that adds every reported token.
    pub async fn follow(config: &Config, topic: &str) -> Result<InvalidTokens, RuntimeError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.kafka.bootstrap_servers)
            .set(
                "group.id",
                format!("{}-feedback", config.kafka.group_prefix),
            )
            .set("enable.auto.commit", "false");
        for (k, v) in &config.kafka.properties {
            client.set(k, v);
        }
        let consumer: StreamConsumer = client.create()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| RuntimeError::Setup(format!("token feedback {topic}: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                let _ = tpl.add_partition_offset(topic, p.id(), Offset::Beginning);
            }
        }
        if tpl.count() == 0 {
            return Err(RuntimeError::Setup(format!("topic {topic} does not exist")));
        }
        consumer.assign(&tpl)?;
        let codec =
            AvroCodec::new(&config.registry).map_err(|e| RuntimeError::Registry(e.to_string()))?;
        let tokens = InvalidTokens::default();
        let weak = Arc::downgrade(&tokens.by_user);
        tokio::spawn(async move {
            loop {
                let msg = match consumer.recv().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "token feedback reader");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let Some(map) = weak.upgrade() else { return };
                match codec.decode::<TokenFeedback>(msg.payload()).await {
                    Ok(f) => {
                        let mut m = map.write().unwrap_or_else(|e| e.into_inner());
                        m.entry(f.user_id).or_default().insert(f.token);
                    }
                    // Feedback is advisory: a bad record must not stop the others.
                    Err(e) => {
                        tracing::warn!(offset = msg.offset(), error = %e, "bad token feedback skipped")
                    }
                }
            }
        });
        Ok(tokens)
    }
}
