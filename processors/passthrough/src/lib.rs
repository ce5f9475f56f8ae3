//! Forwards every record from its input topic to its output topic.
//!
//! `mode = "avro"` decodes each value as a NotificationRequest (so bad input is
//! dead-lettered) and encodes it again; `mode = "raw"` moves bytes untouched (the no-op hop
//! that measures the runtime itself).

use notify_runtime::dlq::ErrorClass;
use notify_runtime::records::NotificationRequest;
use notify_runtime::{Output, ProcessError, Processor, Raw, RecordMeta};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassThroughConfig {
    pub input: String,
    pub output: String,
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Avro,
    Raw,
}

impl Default for PassThroughConfig {
    fn default() -> Self {
        PassThroughConfig {
            input: "notify.requests.v1".into(),
            output: "notify.passthrough.v1".into(),
            mode: Mode::Avro,
        }
    }
}

/// Decodes, validates and re-encodes requests.
pub struct AvroPassThrough {
    pub output: String,
}

impl Processor for AvroPassThrough {
    type Input = NotificationRequest;

    async fn process(
        &self,
        request: NotificationRequest,
        meta: &RecordMeta,
    ) -> Result<Vec<Output>, ProcessError> {
        if let Err(reason) = request.validate() {
            return Err(ProcessError::reject(ErrorClass::Validation, reason));
        }
        let key = meta.key.clone().unwrap_or_else(|| request.user_id.clone());
        Ok(vec![Output::record(&self.output, key, request)])
    }
}

/// Moves bytes, keys and headers untouched.
pub struct RawPassThrough {
    pub output: String,
}

impl Processor for RawPassThrough {
    type Input = Raw;

    async fn process(&self, raw: Raw, meta: &RecordMeta) -> Result<Vec<Output>, ProcessError> {
        let mut out = Output::bytes(&self.output, meta.key.clone(), raw.0.unwrap_or_default());
        out.headers = meta.headers.clone();
        Ok(vec![out])
    }
}

pub const NAME: &str = "passthrough";
pub type Settings = PassThroughConfig;

impl Settings {
    /// What start-up checks before it connects (`--check-config`).
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.input.trim().is_empty() || self.output.trim().is_empty() {
            errors.push("input and output must be set".to_string());
        }
        if self.input == self.output {
            errors.push("output must differ from input".to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Runs the pass-through with `[processors.passthrough]` of `config` until `shutdown`.
pub async fn run(
    config: notify_runtime::Config,
    shutdown: notify_runtime::CancellationToken,
) -> Result<(), notify_runtime::runner::RuntimeError> {
    let settings: Settings = config.processor(NAME)?;
    let spec = notify_runtime::RunSpec {
        name: NAME.into(),
        input_topics: vec![settings.input.clone()],
    };
    match settings.mode {
        Mode::Avro => {
            notify_runtime::run(
                AvroPassThrough {
                    output: settings.output,
                },
                spec,
                config,
                notify_runtime::Metrics::new(NAME),
                shutdown,
            )
            .await
        }
        Mode::Raw => {
            notify_runtime::run(
                RawPassThrough {
                    output: settings.output,
                },
                spec,
                config,
                notify_runtime::Metrics::new(NAME),
                shutdown,
            )
            .await
        }
    }
}
