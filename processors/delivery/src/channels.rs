//! The four processors `notify run` knows: `deliver-apns`, `deliver-fcm`, `deliver-sms`,
//! `deliver-email`. Each module has the `NAME`, `Settings`, `start` and `run` of a processor
//! crate; they differ only in the channel and in how the provider client is built.

use std::sync::{Arc, OnceLock};

use notify_providers::SendError;
use notify_runtime::records::DeliveryChannel;
use notify_runtime::runner::{Running, RuntimeError};
use notify_runtime::{CancellationToken, Config, RunSpec};

use crate::clients::Provider;
use crate::deliver::{Deliverer, Topics};
use crate::ledger_cql::CqlLedger;
use crate::metrics::DeliveryMetrics;
use crate::rate::TokenBucket;
use crate::settings::{ChannelProvider, DeliverySettings};

/// Builds the client and ledger, starts consuming, and registers the delivery metrics.
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
    let settings: DeliverySettings<S> = config.processor(name)?;
    if settings.lease_ms <= settings.provider.timeout_ms() {
        // Otherwise a call still in progress could be taken over and sent a second time.
        return Err(RuntimeError::Setup(format!(
            "processors.{name}.lease_ms ({}) must exceed provider.timeout_ms ({})",
            settings.lease_ms,
            settings.provider.timeout_ms()
        )));
    }
    let provider = build(&settings.provider)
        .map_err(|e| RuntimeError::Setup(format!("processors.{name}: {e}")))?;
    let ledger = CqlLedger::connect(&config.cql)
        .await
        .map_err(|e| RuntimeError::Setup(e.to_string()))?;
    let metrics = Arc::new(OnceLock::new());
    let deliverer = Deliverer {
        channel,
        stage: name.into(),
        provider,
        ledger,
        rate: TokenBucket::new(settings.rate_per_sec, settings.burst),
        topics: Topics {
            status: config.runtime.status_topic.clone(),
            retry: settings.retry_topic.clone(),
            token_feedback: settings.token_feedback_topic.clone(),
        },
        lease_ms: settings.lease_ms as i64,
        metrics: metrics.clone(),
    };
    let spec = RunSpec {
        name: name.into(),
        input_topics: vec![settings.input.clone()],
    };
    let running = notify_runtime::start(deliverer, spec, config, shutdown).await?;
    // The registry exists only once the runtime started; the consumer is still joining its
    // group then, so no record is processed unobserved in practice.
    let _ = metrics.set(DeliveryMetrics::register(&running.metrics));
    Ok(running)
}

async fn wait(running: Running) -> Result<(), RuntimeError> {
    match running.done.await {
        Ok(result) => result,
        Err(join) => Err(RuntimeError::Setup(format!(
            "consume loop panicked: {join}"
        ))),
    }
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
                start_channel(NAME, $channel, $build, config, shutdown).await
            }

            /// Runs until `shutdown`, then drains and commits.
            pub async fn run(
                config: Config,
                shutdown: CancellationToken,
            ) -> Result<(), RuntimeError> {
                wait(start(config, shutdown).await?).await
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
