//! Templating stage: renders each requested channel from the compacted templates topic.
//!
//! Consumes `notify.stage.deduped.v1`, writes `notify.stage.rendered.v1` with `rendered`
//! filled. Templates live in a local table of `notify.templates.v1` (every partition, read
//! from the beginning and tailed), so an updated template is used by the next request without
//! a restart and no database is called per event.

mod error;
mod limits;
mod processor;
mod render;
pub mod sms;
mod source;

use std::time::Duration;

use notify_runtime::records::Template;
use notify_runtime::runner::RuntimeError;
use notify_runtime::table::Table;
use serde::Deserialize;

pub use error::RenderError;
pub use limits::{Limits, push_payload_bytes};
pub use processor::{RenderOutcome, TemplatesProcessor, decision_metrics, status, wanted_channels};
pub use render::{Renderer, Vars};
pub use source::{MemoryTemplates, TemplateSource, find, locale_chain};

pub const NAME: &str = "templates";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesSettings {
    pub input: String,
    pub output: String,
    /// The compacted topic the templates are read from.
    pub templates_topic: String,
    /// The last locale tried after the request's locale and its language.
    pub default_locale: String,
    /// How long a record waits for the template table to catch up before it is retried.
    pub sync_timeout_ms: u64,
    pub limits: Limits,
}

impl Default for TemplatesSettings {
    fn default() -> Self {
        TemplatesSettings {
            input: "notify.stage.deduped.v1".into(),
            output: "notify.stage.rendered.v1".into(),
            templates_topic: "notify.templates.v1".into(),
            default_locale: "en".into(),
            sync_timeout_ms: 10_000,
            limits: Limits::default(),
        }
    }
}

pub type Settings = TemplatesSettings;

impl Settings {
    /// What start-up checks before it connects, every problem at once (`--check-config`).
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut errors = notify_runtime::config::blank(&[
            ("input", self.input.as_str()),
            ("output", self.output.as_str()),
            ("templates_topic", self.templates_topic.as_str()),
        ]);
        if self.default_locale.trim().is_empty() {
            errors.push("default_locale is empty".into());
        }
        if self.sync_timeout_ms == 0 {
            errors.push("sync_timeout_ms must be at least 1".into());
        }
        for (key, limit) in [
            ("limits.push_max_bytes", self.limits.push_max_bytes),
            ("limits.sms_max_segments", self.limits.sms_max_segments),
            (
                "limits.email_subject_max_chars",
                self.limits.email_subject_max_chars,
            ),
        ] {
            if limit == 0 {
                errors.push(format!("{key} must be at least 1"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The stage over a template source, configured from `settings`.
pub fn processor<S: TemplateSource>(
    source: S,
    settings: &Settings,
    config: &notify_runtime::Config,
    metrics: &notify_runtime::Metrics,
) -> TemplatesProcessor<S> {
    TemplatesProcessor {
        source,
        renderer: Renderer::new(),
        limits: settings.limits.clone(),
        default_locale: settings.default_locale.clone(),
        output: settings.output.clone(),
        status_topic: config.runtime.status_topic.clone(),
        sync_timeout: Duration::from_millis(settings.sync_timeout_ms),
        metrics: processor::decision_metrics(metrics),
    }
}

/// Builds the stage from `config`: the template table (every partition).
pub async fn build(
    config: &notify_runtime::Config,
    metrics: &notify_runtime::Metrics,
) -> Result<TemplatesProcessor<Table<Template>>, RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let table: Table<Template> = Table::global(config, &settings.templates_topic).await?;
    Ok(processor(table, &settings, config, metrics))
}

/// Runs the stage with `[processors.templates]` of `config` until `shutdown`.
pub async fn run(
    config: notify_runtime::Config,
    shutdown: notify_runtime::CancellationToken,
) -> Result<(), RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let metrics = notify_runtime::Metrics::new(NAME);
    let stage = build(&config, &metrics).await?;
    let spec = notify_runtime::RunSpec {
        name: NAME.into(),
        input_topics: vec![settings.input.clone()],
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
