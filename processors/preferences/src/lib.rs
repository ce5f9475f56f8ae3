//! Preference filter: joins each request with the recipient's profile (a local table of the
//! compacted users topic, holding the users this instance's partitions own), applies expiry,
//! opt-outs, contact points and quiet hours, and routes what passes on. It writes FILTERED,
//! EXPIRED and DEFERRED statuses; ACCEPTED is written by dedup once the id is accepted.

pub mod decide;
pub mod feedback;
pub mod forward;
pub mod quiet;

use std::time::Duration;

use notify_runtime::dlq::{ErrorClass, retry};
use notify_runtime::records::{
    DeliveryStatus, NotificationRequest, Outcome, RoutedNotification, TokenFeedback, UserProfile,
};
use notify_runtime::runner::RuntimeError;
use notify_runtime::table::Table;
use notify_runtime::{Emit, Metrics, Output, ProcessError, RecordMeta, Stage, now_ms};
use serde::Deserialize;

use decide::{Context, Decision, decide};
pub use forward::Forward;

pub const NAME: &str = "preferences";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreferencesSettings {
    pub requests_topic: String,
    pub users_topic: String,
    pub token_feedback_topic: String,
    /// Where routed requests go when the stage runs alone (in the chain they stay in memory).
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
    pub invalid_tokens: Table<TokenFeedback>,
    pub settings: Settings,
    pub status_topic: String,
    pub metrics: Metrics,
}

impl Preferences {
    fn status(&self, r: &NotificationRequest, outcome: Outcome, reason: &str) -> Output {
        Output::status(
            &self.status_topic,
            DeliveryStatus::of(r, NAME, outcome).with_reason(reason),
        )
    }

    fn decided(&self, decision: &str) {
        self.metrics.decided(NAME, decision);
    }
}

impl Stage for Preferences {
    type In = NotificationRequest;
    type Out = RoutedNotification;

    fn name(&self) -> &'static str {
        NAME
    }

    async fn process(
        &self,
        request: NotificationRequest,
        record: &RecordMeta,
    ) -> Result<Emit<RoutedNotification>, ProcessError> {
        if let Err(reason) = request.validate() {
            return Err(ProcessError::reject(ErrorClass::Validation, reason));
        }
        // Every profile update written before this request must be visible to it.
        let timeout = Duration::from_millis(self.settings.table_sync_timeout_ms);
        let since = notify_runtime::table::since_event(record.timestamp_ms);
        let (profiles, tokens) = tokio::join!(
            self.profiles.sync(since, timeout),
            self.invalid_tokens.sync(since, timeout),
        );
        if !(profiles && tokens) {
            return Err(ProcessError::transient("profile table not caught up"));
        }
        let profile = self.profiles.get(&request.user_id);
        let user = request.user_id.as_str();
        let not_before_ms = match record.header(retry::NOT_BEFORE) {
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
                self.decided("routed");
                Emit::next(*routed)
            }
            Decision::Filtered(reason) => {
                self.decided(reason);
                Emit::end(vec![self.status(&request, Outcome::Filtered, reason)])
            }
            Decision::Expired(reason) => {
                self.decided("expired");
                Emit::end(vec![self.status(&request, Outcome::Expired, reason)])
            }
            Decision::Deferred { until_ms } => {
                self.decided("deferred");
                let status = self.status(&request, Outcome::Deferred, decide::reason::QUIET_HOURS);
                let mut held = Output::record(&self.settings.deferred_topic, user, request.clone());
                // Keep the producer's headers (tracing), replace ours.
                held.headers = record
                    .headers
                    .iter()
                    .filter(|(k, _)| k != retry::NOT_BEFORE && k != retry::ORIGIN_TOPIC)
                    .cloned()
                    .collect();
                let held = held
                    .with_header(retry::NOT_BEFORE, until_ms.to_string())
                    .with_header(retry::ORIGIN_TOPIC, record.topic.clone());
                Emit::end(vec![held, status])
            }
        })
    }

    fn output(&self, routed: RoutedNotification, _: &RecordMeta) -> Output {
        let user = routed.request.user_id.clone();
        Output::record(&self.settings.output, user, routed)
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        let owners = owners_of(partitions, &self.settings.requests_topic);
        self.profiles.assign(&owners);
        self.invalid_tokens.assign(&owners);
    }

    fn revoked(&self, partitions: &[(String, i32)]) {
        let owners = owners_of(partitions, &self.settings.requests_topic);
        self.profiles.revoke(&owners);
        self.invalid_tokens.revoke(&owners);
    }
}

/// The intake partitions among `partitions`: they own the users the table keeps.
fn owners_of(partitions: &[(String, i32)], requests_topic: &str) -> Vec<i32> {
    partitions
        .iter()
        .filter(|(t, _)| t == requests_topic)
        .map(|(_, p)| *p)
        .collect()
}

/// The partitions of `topic` (a table owned by them is sized from it).
pub fn partition_count(
    config: &notify_runtime::Config,
    topic: &str,
) -> Result<usize, RuntimeError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let probe: BaseConsumer = notify_runtime::kafka::client_config(config).create()?;
    let md = probe
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| RuntimeError::Setup(format!("{topic}: {e}")))?;
    match md.topics().first().map_or(0, |t| t.partitions().len()) {
        0 => Err(RuntimeError::Setup(format!("topic {topic} does not exist"))),
        n => Ok(n),
    }
}

/// Builds the stage from `config`: the profile table and the invalid-token table, each
/// holding the users of the intake partitions assigned.
pub async fn build(
    config: &notify_runtime::Config,
    metrics: &Metrics,
) -> Result<Preferences, RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let partitions = partition_count(config, &settings.requests_topic)?;
    let profiles = Table::owned(config, &settings.users_topic, partitions, |key, _| {
        key.to_string()
    })
    .await?;
    let invalid_tokens =
        feedback::table(config, &settings.token_feedback_topic, partitions).await?;
    Ok(Preferences {
        profiles,
        invalid_tokens,
        status_topic: config.runtime.status_topic.clone(),
        metrics: metrics.clone(),
        settings,
    })
}

/// The forwarding stage in front of the preference filter, for the intake topic.
pub fn forward(
    config: &notify_runtime::Config,
    metrics: &Metrics,
) -> Result<Forward, RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    Ok(Forward {
        partitions: partition_count(config, &settings.requests_topic)?,
        topic: settings.requests_topic,
        metrics: metrics.clone(),
    })
}

/// Runs the preference filter (with forwarding) alone, until `shutdown`.
pub async fn run(
    config: notify_runtime::Config,
    shutdown: notify_runtime::CancellationToken,
) -> Result<(), RuntimeError> {
    let metrics = Metrics::new(NAME);
    let stage =
        notify_runtime::chain!(forward(&config, &metrics)?, build(&config, &metrics).await?);
    let spec = notify_runtime::RunSpec {
        name: NAME.into(),
        input_topics: vec![stage.second.settings.requests_topic.clone()],
    };
    notify_runtime::run(
        notify_runtime::StageProcessor(stage),
        spec,
        config,
        metrics,
        shutdown,
    )
    .await
}
