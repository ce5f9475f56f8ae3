//! `notify run <processor> --check-config`: what each processor's start-up refuses, checked
//! without connecting to Kafka, the database or a provider.

use notify_runtime::Config;

/// Checks beyond the processor's settings table (which `run::check` parses first).
pub fn extra(name: &str, config: &Config) -> anyhow::Result<()> {
    use notify_delivery::{apns, email, fcm, sms};
    match name {
        n if n == apns::NAME => apns::check(config)?,
        n if n == fcm::NAME => fcm::check(config)?,
        n if n == sms::NAME => sms::check(config)?,
        n if n == email::NAME => email::check(config)?,
        n if n == notify_ratelimit::NAME => {
            notify_ratelimit::check(&config.processor(notify_ratelimit::NAME)?)?
        }
        n if n == notify_chain::NAME => {
            // The chain runs every stage before delivery: each table must be valid.
            config.processor::<notify_chain::Settings>(notify_chain::NAME)?;
            config.processor::<notify_preferences::Settings>(notify_preferences::NAME)?;
            config.processor::<notify_dedup::Settings>(notify_dedup::NAME)?;
            config.processor::<notify_templates::Settings>(notify_templates::NAME)?;
            config.processor::<notify_fanout::Settings>(notify_fanout::NAME)?;
            notify_ratelimit::check(&config.processor(notify_ratelimit::NAME)?)?;
        }
        _ => {}
    }
    Ok(())
}
