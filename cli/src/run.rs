//! `notify run <processor>`: the table of processors this binary can run.

use notify_runtime::{CancellationToken, Config};

/// Declares each processor once: its name, its settings type and its `run` function.
macro_rules! processors {
    ($($krate:ident),* $(,)?) => {
        /// Names accepted by `notify run`.
        pub const PROCESSORS: &[&str] = &[$($krate::NAME),*];

        /// Checks the processor's own table of `config` (unknown fields, invalid values) and
        /// what its start-up checks besides, without connecting anywhere.
        pub fn check(name: &str, config: &Config) -> anyhow::Result<()> {
            $(if name == $krate::NAME {
                config.processor::<$krate::Settings>(name)?;
                return crate::check::extra(name, config);
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
