//! The chain: every stage from the intake to the channel topics in one process.
//!
//! Forwarding, the preference filter, dedup, templates, rate limits and fan-out share the
//! user as their key, so (as in a Kafka Streams sub-topology) they need no topic between
//! them: one consumer of `notify.requests.v1`, records passed from stage to stage in memory,
//! decoded once and encoded once. Each stage is its own crate and rule, built from its own
//! `[processors.<stage>]` table exactly as when it runs alone (`notify run <stage>`).
//!
//! Outputs (channel messages, status events, deferred requests, dead letters) and input
//! offsets commit together in Kafka transactions; state the stages keep in CQL (accepted ids,
//! rate windows) is written before the outputs it explains, as plain idempotent rows. A
//! stale instance (paused past its session timeout while another took its partitions) is
//! fenced by the group generation: none of its outputs commit.
//!
//! Split the chain into its stages only to scale or isolate one of them (e.g. templates with
//! heavy rendering on their own pods); every hop then costs a topic write and read.

use notify_runtime::runner::RuntimeError;
use notify_runtime::{CancellationToken, Config, Metrics, RunSpec, StageProcessor};
use serde::Deserialize;

pub const NAME: &str = "chain";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSettings {
    /// Records in process at once. Most stages are CPU only; dedup (and rate limits with
    /// rules) wait for a batched CQL write per record, so concurrency, not cores, bounds them.
    pub lanes: usize,
    /// Outputs and offsets in Kafka transactions (no output twice, statuses exactly once).
    /// Off: at-least-once, as every other processor without `kafka.transactional`.
    pub exactly_once: bool,
}

impl Default for ChainSettings {
    fn default() -> Self {
        ChainSettings {
            lanes: 64,
            exactly_once: true,
        }
    }
}

pub type Settings = ChainSettings;

/// `config` as the chain runs it: its lanes and room in flight, transactions on.
pub fn configured(mut config: Config) -> Result<Config, RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    if settings.lanes > config.runtime.lanes {
        config.runtime.lanes = settings.lanes;
        config.runtime.max_in_flight = config.runtime.max_in_flight.max(settings.lanes * 16);
    }
    config.kafka.transactional |= settings.exactly_once;
    Ok(config)
}

/// Starts the chain; returns once it is consuming (tests, embedding).
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<notify_runtime::runner::Running, RuntimeError> {
    let config = configured(config)?;
    let metrics = Metrics::new(NAME);
    let preferences = notify_preferences::build(&config, &metrics).await?;
    let intake = preferences.settings.requests_topic.clone();
    let fanout_settings: notify_fanout::Settings = config.processor(notify_fanout::NAME)?;
    let stages = notify_runtime::chain!(
        notify_preferences::forward(&config, &metrics)?,
        preferences,
        notify_dedup::build(&config, &metrics, &shutdown).await?,
        notify_templates::build(&config, &metrics).await?,
        notify_ratelimit::build(&config, &metrics).await?,
        notify_fanout::FanoutProcessor::new(fanout_settings, &config, &metrics),
    );
    let spec = RunSpec {
        name: NAME.into(),
        input_topics: vec![intake],
    };
    notify_runtime::start(StageProcessor(stages), spec, config, metrics, shutdown).await
}

/// Runs the chain until `shutdown`, then drains and commits.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RuntimeError> {
    notify_runtime::wait(start(config, shutdown).await?).await
}

impl Settings {
    /// What start-up checks of `[processors.chain]` (the stages' own tables are checked by
    /// their crates: `notify run chain --check-config` runs them all).
    pub fn check(&self) -> Result<(), Vec<String>> {
        if self.lanes == 0 {
            return Err(vec!["lanes must be at least 1".into()]);
        }
        Ok(())
    }
}
