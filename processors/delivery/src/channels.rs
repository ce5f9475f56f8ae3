//! The four processors `notify run` knows: `deliver-apns`, `deliver-fcm`, `deliver-sms`,
//! `deliver-email`. Each module has the `NAME`, `Settings`, `start` and `run` of a processor
//! crate; they differ only in the channel and in how the provider client is built.

use std::sync::Arc;
use std::time::Duration;

use notify_providers::SendError;
use notify_runtime::records::DeliveryChannel;
use notify_runtime::runner::{Running, RuntimeError};
use notify_runtime::{CancellationToken, Config, Metrics, RunSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::clients::Provider;
use crate::deliver::{Deliverer, LogEnd, Topics};
use crate::ledger_cql::CqlLedger;
use crate::metrics::DeliveryMetrics;
use crate::ownership::CqlOwnership;
use crate::rate::TokenBucket;
use crate::settings::{ChannelProvider, DeliverySettings};

/// The high watermark of a partition of the input topic.
struct Watermarks {
    consumer: BaseConsumer,
    topic: String,
}

impl LogEnd for Watermarks {
    fn log_end(&self, partition: i32) -> Option<i64> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, Duration::from_secs(10))
            .ok()
            .map(|(_, high)| high)
    }
}

/// `[processors.<name>]`, refused as `--check-config` would refuse it.
fn checked<S: ChannelProvider + serde::de::DeserializeOwned>(
    name: &str,
    config: &Config,
) -> Result<DeliverySettings<S>, RuntimeError> {
    let settings: DeliverySettings<S> = config.processor(name)?;
    settings.check().map_err(|errors| {
        notify_runtime::config::ConfigError::Invalid(
            errors
                .into_iter()
                .map(|e| format!("processors.{name}: {e}"))
                .collect(),
        )
    })?;
    Ok(settings)
}

/// Builds the client, ledger and ownership, and starts consuming.
async fn start_channel<S, P>(
    name: &str,
    channel: DeliveryChannel,
    build: fn(&S) -> Result<P, SendError>,
    config: Config,
    shutdown: CancellationToken,
) -> Result<Running, RuntimeError>
where
    S: ChannelProvider + serde::de::DeserializeOwned,
    P: Provider,
{
    let settings: DeliverySettings<S> = checked(name, &config)?;
    let mut config = config;
    config.kafka.transactional |= settings.exactly_once;
    let provider = build(&settings.provider)
        .map_err(|e| RuntimeError::Setup(format!("processors.{name}: {e}")))?;
    let metrics = Metrics::new(name);
    let session = Arc::new(
        notify_runtime::cql::connect(&config.cql)
            .await
            .map_err(|e| RuntimeError::Setup(e.to_string()))?,
    );
    let ledger = CqlLedger::new(
        session.clone(),
        &config.cql.keyspace,
        Duration::from_secs(5),
        &metrics,
    )
    .await
    .map_err(|e| RuntimeError::Setup(e.to_string()))?;
    let group = config.group_id(name);
    let ownership = CqlOwnership::new(
        session,
        &config.cql.keyspace,
        &group,
        &settings.input,
        &format!("{}-{}", config.kafka.instance_id, std::process::id()),
        Duration::from_millis(settings.confirm_interval_ms),
        &metrics,
    )
    .await
    .map_err(|e| RuntimeError::Setup(e.to_string()))?;
    let watermarks = Watermarks {
        consumer: notify_runtime::kafka::client_config(&config).create()?,
        topic: settings.input.clone(),
    };
    let deliverer = Deliverer {
        channel,
        stage: name.into(),
        input: settings.input.clone(),
        provider,
        ledger,
        ownership: Arc::new(ownership),
        log_end: Arc::new(watermarks),
        rate: TokenBucket::new(settings.rate_per_sec, settings.burst),
        topics: Topics {
            status: config.runtime.status_topic.clone(),
            retry: settings.retry_topic.clone(),
            token_feedback: settings.token_feedback_topic.clone(),
        },
        lease_ms: settings.lease_ms as i64,
        in_doubt: settings.in_doubt,
        metrics: DeliveryMetrics::register(&metrics, channel),
        owned: Arc::default(),
    };
    let spec = RunSpec {
        name: name.into(),
        input_topics: vec![settings.input.clone()],
    };
    notify_runtime::start(deliverer, spec, config, metrics, shutdown).await
}

/// Lanes each delivery processor runs with: a provider call is a round trip, so
/// concurrency, not cores, bounds it.
pub const LANES: usize = 128;

fn with_lanes(mut config: Config) -> Config {
    if config.runtime.lanes < LANES {
        config.runtime.lanes = LANES;
        config.runtime.max_in_flight = config.runtime.max_in_flight.max(LANES * 8);
    }
    config
}

macro_rules! channel {
    ($module:ident, $name:literal, $channel:expr, $settings:ty, $build:path) => {
        pub mod $module {
            use super::*;

            pub const NAME: &str = $name;
            pub type Settings = DeliverySettings<$settings>;

            /// Starts the processor and returns once it is consuming (tests, embedding).
            pub async fn start(
                config: Config,
                shutdown: CancellationToken,
            ) -> Result<Running, RuntimeError> {
                start_channel(NAME, $channel, $build, with_lanes(config), shutdown).await
            }

            /// Runs until `shutdown`, then drains and commits.
            pub async fn run(
                config: Config,
                shutdown: CancellationToken,
            ) -> Result<(), RuntimeError> {
                notify_runtime::wait(start(config, shutdown).await?).await
            }
        }
    };
}

channel!(
    apns,
    "deliver-apns",
    DeliveryChannel::Apns,
    crate::settings::ApnsSettings,
    crate::clients::apns
);
channel!(
    fcm,
    "deliver-fcm",
    DeliveryChannel::Fcm,
    crate::settings::FcmSettings,
    crate::clients::fcm
);
channel!(
    sms,
    "deliver-sms",
    DeliveryChannel::Sms,
    crate::settings::SmsSettings,
    crate::clients::sms
);
channel!(
    email,
    "deliver-email",
    DeliveryChannel::Email,
    crate::settings::EmailSettings,
    crate::clients::email
);
