//! Preference filter: joins each request with the recipient's profile (a local table of the
//! compacted users topic, co-partitioned by user id), applies expiry, opt-outs, contact points
//! and quiet hours, and routes what passes to dedup. It writes FILTERED, EXPIRED and DEFERRED
//! statuses; ACCEPTED is written by dedup once the id is in its ledger (one ACCEPTED per id).

pub mod decide;
pub mod feedback;
pub mod quiet;

use std::time::Duration;

use notify_runtime::dlq::{ErrorClass, retry};
use notify_runtime::records::{DeliveryStatus, NotificationRequest, Outcome, UserProfile};
use notify_runtime::runner::RuntimeError;
use notify_runtime::table::Table;
use notify_runtime::{Output, ProcessError, Processor, RecordMeta, now_ms};
use serde::Deserialize;

use decide::{Context, Decision, decide};

pub const NAME: &str = "preferences";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreferencesSettings {
    pub requests_topic: String,
    pub users_topic: String,
    pub token_feedback_topic: String,
    pub output: String,
    pub deferred_topic: String,
    /// How long a request waits for the profile table to catch up before it is retried.
    pub table_sync_timeout_ms: u64,
}

impl Default for PreferencesSettings {
    fn default() -> Self {
        PreferencesSettings {
            requests_topic: "notify.requests.v1".into(),
            users_topic: "notify.users.v1".into(),
            token_feedback_topic: "notify.token-feedback.v1".into(),
            output: "notify.stage.preferences.v1".into(),
            deferred_topic: "notify.deferred.v1".into(),
            table_sync_timeout_ms: 10_000,
        }
    }
}

pub type Settings = PreferencesSettings;

impl Settings {
    /// What start-up checks before it connects, every problem at once (`--check-config`).
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut errors = notify_runtime::config::blank(&[
            ("requests_topic", self.requests_topic.as_str()),
            ("users_topic", self.users_topic.as_str()),
            ("token_feedback_topic", self.token_feedback_topic.as_str()),
            ("output", self.output.as_str()),
            ("deferred_topic", self.deferred_topic.as_str()),
        ]);
        if self.output == self.requests_topic {
            errors.push("output must differ from requests_topic".into());
        }
        if self.table_sync_timeout_ms == 0 {
            errors.push("table_sync_timeout_ms must be at least 1".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

pub struct Preferences {
    pub profiles: Table<UserProfile>,
    /// Tokens providers reported invalid, one row per user and token.
    pub invalid_tokens: Table<notify_runtime::records::TokenFeedback>,
    pub settings: Settings,
    pub status_topic: String,
    /// Requests and profiles have the same partition count: load only our partitions.
    pub co_partitioned: bool,
}

impl Preferences {
    fn status(&self, r: &NotificationRequest, outcome: Outcome, reason: &str) -> Output {
        Output::status(
            &self.status_topic,
            DeliveryStatus {
                event_id: r.event_id.clone(),
                user_id: r.user_id.clone(),
                channel: None,
                recipient: None,
                outcome,
                reason: Some(reason.to_string()),
                attempt: 0,
                stage: NAME.into(),
                at: now_ms(),
            },
        )
    }
}

impl Processor for Preferences {
    type Input = NotificationRequest;

    async fn process(
        &self,
        request: NotificationRequest,
        meta: &RecordMeta,
    ) -> Result<Vec<Output>, ProcessError> {
        if let Err(reason) = request.validate() {
            return Err(ProcessError::reject(ErrorClass::Validation, reason));
        }
        // Every profile update written before this moment must be visible to this request.
        let timeout = Duration::from_millis(self.settings.table_sync_timeout_ms);
        // Every profile update written before this request must be visible to it.
        let now = notify_runtime::table::since_event(meta.timestamp_ms);
        let synced = if self.co_partitioned {
            let (profiles, tokens) = tokio::join!(
                self.profiles.sync_partition(meta.partition, now, timeout),
                self.invalid_tokens
                    .sync_partition(meta.partition, now, timeout),
            );
            profiles && tokens
        } else {
            let (profiles, tokens) = tokio::join!(
                self.profiles.sync(now, timeout),
                self.invalid_tokens.sync(now, timeout),
            );
            profiles && tokens
        };
        if !synced {
            return Err(ProcessError::transient("profile table not caught up"));
        }
        let profile = self.profiles.get(&request.user_id);
        let user_id = request.user_id.clone();
        let user = user_id.as_str();
        let not_before_ms = match meta.header(retry::NOT_BEFORE) {
            None => None,
            Some(v) => match v.trim().parse::<i64>() {
                Ok(t) => Some(t),
                Err(_) => {
                    return Err(ProcessError::reject(
                        ErrorClass::Validation,
                        format!("header {} is not epoch millis: {v:?}", retry::NOT_BEFORE),
                    ));
                }
            },
        };
        let invalid = |token: &str| feedback::is_invalid(&self.invalid_tokens, user, token);
        let cx = Context {
            profile: profile.as_deref(),
            token_invalid: &invalid,
            now_ms: now_ms(),
            not_before_ms,
        };
        Ok(match decide(&request, &cx) {
            Decision::Route(routed) => {
                vec![Output::record(&self.settings.output, user, *routed)]
            }
            Decision::Filtered(reason) => vec![self.status(&request, Outcome::Filtered, reason)],
            Decision::Expired(reason) => vec![self.status(&request, Outcome::Expired, reason)],
            Decision::Deferred { until_ms } => {
                let status = self.status(&request, Outcome::Deferred, decide::reason::QUIET_HOURS);
                let mut held = Output::record(&self.settings.deferred_topic, user, request.clone());
                // Keep the producer's headers (tracing), replace ours.
                held.headers = meta
                    .headers
                    .iter()
                    .filter(|(k, _)| k != retry::NOT_BEFORE && k != retry::ORIGIN_TOPIC)
                    .cloned()
                    .collect();
                let held = held
                    .with_header(retry::NOT_BEFORE, until_ms.to_string())
                    .with_header(retry::ORIGIN_TOPIC, meta.topic.clone());
                vec![held, status]
            }
        })
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        if self.co_partitioned {
            let ps: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
            self.profiles.assign(&ps);
            self.invalid_tokens.assign(&ps);
        }
    }

    fn revoked(&self, partitions: &[(String, i32)]) {
        if self.co_partitioned {
            let ps: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
            self.profiles.revoke(&ps);
            self.invalid_tokens.revoke(&ps);
        }
    }
}

/// Builds the stage from `config`: the profile table and the invalid-token reader.
pub async fn build(config: &notify_runtime::Config) -> Result<Preferences, RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let profiles = Table::<UserProfile>::new(config, &settings.users_topic).await?;
    let invalid_tokens = feedback::table(config, &settings.token_feedback_topic).await?;
    let requests = partition_count(config, &settings.requests_topic)?;
    let co_partitioned = requests == partition_count(config, &settings.users_topic)?
        && requests == partition_count(config, &settings.token_feedback_topic)?;
    if !co_partitioned {
        tracing::warn!(
            "{}, {} and {} differ in partitions: loading every profile on every instance",
            settings.requests_topic,
            settings.users_topic,
            settings.token_feedback_topic
        );
        profiles.assign_all();
        invalid_tokens.assign_all();
    }
    Ok(Preferences {
        profiles,
        invalid_tokens,
        status_topic: config.runtime.status_topic.clone(),
        co_partitioned,
        settings,
    })
}

fn partition_count(config: &notify_runtime::Config, topic: &str) -> Result<usize, RuntimeError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let probe: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .create()?;
    let md = probe
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| RuntimeError::Setup(format!("{topic}: {e}")))?;
    Ok(md.topics().first().map_or(0, |t| t.partitions().len()))
}

/// Runs the preference filter with `[processors.preferences]` of `config` until `shutdown`.
pub async fn run(
    config: notify_runtime::Config,
    shutdown: notify_runtime::CancellationToken,
) -> Result<(), RuntimeError> {
    let stage = build(&config).await?;
    let spec = notify_runtime::RunSpec {
        name: NAME.into(),
        input_topics: vec![stage.settings.requests_topic.clone()],
    };
    notify_runtime::run(stage, spec, config, shutdown).await
}
