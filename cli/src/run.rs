//! `notify run <processor>`: the table of processors this binary can run.

use notify_runtime::{CancellationToken, Config};

/// Declares each processor once: its name, its settings type and its `run` function.
macro_rules! processors {
    ($($krate:ident),* $(,)?) => {
        /// Names accepted by `notify run`.
        pub const PROCESSORS: &[&str] = &[$($krate::NAME),*];

        /// Checks what start-up checks without connecting: the processor's own table
        /// (unknown fields, invalid values, credentials) and the shared sections.
        pub fn check(name: &str, config: &Config) -> anyhow::Result<()> {
            $(if name == $krate::NAME {
                let settings: $krate::Settings = config.processor(name)?;
                let mut errors = crate::check::shared(config);
                if let Err(own) = settings.check() {
                    errors.extend(own.into_iter().map(|e| format!("processors.{name}: {e}")));
                }
                errors.extend(crate::check::stages(name, config));
                if errors.is_empty() {
                    return Ok(());
                }
                return Err(notify_runtime::config::ConfigError::Invalid(errors).into());
            })*
            anyhow::bail!("unknown processor {name:?}; known: {}", PROCESSORS.join(", "))
        }

        /// Runs the processor until `shutdown`.
        pub async fn run(name: &str, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
            $(if name == $krate::NAME {
                return Ok($krate::run(config, shutdown).await?);
            })*
            anyhow::bail!("unknown processor {name:?}; known: {}", PROCESSORS.join(", "))
        }
    };
}

// Delivery has four processors in one crate; aliases make each a plain identifier here.
use notify_delivery::{
    apns as deliver_apns, email as deliver_email, fcm as deliver_fcm, sms as deliver_sms,
};

processors!(
    notify_chain,
    notify_passthrough,
    notify_preferences,
    notify_dedup,
    deliver_apns,
    deliver_fcm,
    deliver_sms,
    deliver_email,
    notify_retry,
    notify_templates,
    notify_ratelimit,
    notify_fanout
);
