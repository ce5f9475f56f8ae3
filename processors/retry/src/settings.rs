//! `[processors.retry]`: the ladder's steps, the deferral topic, attempts, jitter and how many
//! records a partition may hold in memory.

use serde::Deserialize;

/// One rung of the ladder: records on `topic` wait `delay_ms` after their failure.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Bounded metric label (`10s`, `1m`, …).
    pub name: String,
    pub delay_ms: u64,
    pub topic: String,
}

/// Validated when read (`notify run retry --check-config` reports every error).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct RetrySettings {
    /// Increasing delays; the default is 10 s, 1 min, 10 min, 1 h.
    pub steps: Vec<Step>,
    /// Quiet-hours deferrals (`notify.not_before`); empty disables.
    pub deferred_topic: String,
    /// Delivery attempts in all (the first one included) before a dead letter; 0 means one
    /// more than there are steps (every step used once).
    pub max_attempts: u32,
    /// Up to this fraction of a step's delay is added at random, so that a burst of failures
    /// does not come back as a burst.
    pub jitter: f64,
    /// Up to this many ms are added at random to a deferral (quiet hours end for many users at
    /// the same minute).
    pub deferred_jitter_ms: u64,
    /// Records held in memory per partition before that partition is paused (bounded memory).
    pub max_held_per_partition: usize,
    /// Topics a record may be returned to (its `notify.origin.topic`); a record naming any
    /// other is dead-lettered, never forwarded there. Empty: the pipeline's own, as the same
    /// config names them (every delivery processor's input and the requests topic).
    pub origins: Vec<String>,
}

/// The table as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Unchecked {
    /// Increasing delays; the default is 10 s, 1 min, 10 min, 1 h.
    steps: Vec<Step>,
    /// Quiet-hours deferrals (`notify.not_before`); empty disables.
    deferred_topic: String,
    /// Delivery attempts in all (the first one included) before a dead letter; 0 means one
    /// more than there are steps (every step used once).
    max_attempts: u32,
    /// Up to this fraction of a step's delay is added at random, so that a burst of failures
    /// does not come back as a burst.
    jitter: f64,
    /// Up to this many ms are added at random to a deferral (quiet hours end for many users at
    /// the same minute).
    deferred_jitter_ms: u64,
    /// Records held in memory per partition before that partition is paused (bounded memory).
    max_held_per_partition: usize,
    /// Topics a record may be returned to (its `notify.origin.topic`); a record naming any
    /// other is dead-lettered, never forwarded there. Empty: the pipeline's own, as the same
    /// config names them (every delivery processor's input and the requests topic).
    origins: Vec<String>,
}

impl Default for Unchecked {
    fn default() -> Self {
        let d = RetrySettings::default();
        Unchecked {
            steps: d.steps,
            deferred_topic: d.deferred_topic,
            max_attempts: d.max_attempts,
            jitter: d.jitter,
            deferred_jitter_ms: d.deferred_jitter_ms,
            max_held_per_partition: d.max_held_per_partition,
            origins: d.origins,
        }
    }
}

impl TryFrom<Unchecked> for RetrySettings {
    type Error = String;

    fn try_from(u: Unchecked) -> Result<Self, String> {
        let s = RetrySettings {
            steps: u.steps,
            deferred_topic: u.deferred_topic,
            max_attempts: u.max_attempts,
            jitter: u.jitter,
            deferred_jitter_ms: u.deferred_jitter_ms,
            max_held_per_partition: u.max_held_per_partition,
            origins: u.origins,
        };
        s.validate().map_err(|errors| errors.join("; "))?;
        Ok(s)
    }
}

fn step(name: &str, delay_ms: u64) -> Step {
    Step {
        name: name.into(),
        delay_ms,
        topic: format!("notify.retry.{name}.v1"),
    }
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            steps: vec![
                step("10s", 10_000),
                step("1m", 60_000),
                step("10m", 600_000),
                step("1h", 3_600_000),
            ],
            deferred_topic: "notify.deferred.v1".into(),
            max_attempts: 0,
            jitter: 0.1,
            deferred_jitter_ms: 60_000,
            max_held_per_partition: 2_000,
            origins: Vec::new(),
        }
    }
}

impl RetrySettings {
    /// Attempts in all before a dead letter.
    pub fn attempts_limit(&self) -> u32 {
        if self.max_attempts == 0 {
            self.steps.len() as u32 + 1
        } else {
            self.max_attempts
        }
    }

    /// Every rule serde cannot express, all reported at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.steps.is_empty() {
            errors.push("processors.retry.steps is empty".to_string());
        }
        for pair in self.steps.windows(2) {
            if pair[1].delay_ms <= pair[0].delay_ms {
                errors.push(format!(
                    "processors.retry.steps: {} ({} ms) must wait longer than {} ({} ms)",
                    pair[1].name, pair[1].delay_ms, pair[0].name, pair[0].delay_ms
                ));
            }
        }
        let mut topics: Vec<&str> = self.steps.iter().map(|s| s.topic.as_str()).collect();
        if !self.deferred_topic.is_empty() {
            topics.push(&self.deferred_topic);
        }
        let count = topics.len();
        topics.sort_unstable();
        topics.dedup();
        if topics.len() != count {
            errors
                .push("processors.retry: every step and the deferral need their own topic".into());
        }
        if topics.iter().any(|t| t.trim().is_empty()) {
            errors.push("processors.retry: a step topic is empty".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            errors.push(format!(
                "processors.retry.jitter {} is not in 0..=1",
                self.jitter
            ));
        }
        if self.max_attempts == 1 {
            errors.push("processors.retry.max_attempts 1 leaves nothing to retry".into());
        }
        if self.max_held_per_partition == 0 {
            errors.push("processors.retry.max_held_per_partition must be at least 1".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// What start-up checks before it connects (`--check-config`), paths relative to the
    /// table (the table is also validated while it is read).
    pub fn check(&self) -> Result<(), Vec<String>> {
        self.validate().map_err(|errors| {
            errors
                .into_iter()
                .map(|e| {
                    let relative = e.trim_start_matches("processors.retry");
                    relative.trim_start_matches([':', '.', ' ']).to_string()
                })
                .collect()
        })
    }

    /// Every topic the processor reads.
    pub fn input_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.steps.iter().map(|s| s.topic.clone()).collect();
        if !self.deferred_topic.is_empty() {
            topics.push(self.deferred_topic.clone());
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ladder() {
        let s = RetrySettings::default();
        assert!(s.validate().is_ok());
        let topics = s.input_topics();
        assert_eq!(topics[0], "notify.retry.10s.v1");
        assert_eq!(topics[3], "notify.retry.1h.v1");
        assert_eq!(topics[4], "notify.deferred.v1");
        assert_eq!(s.attempts_limit(), 5);
    }

    #[test]
    fn reports_every_error() {
        let mut s = RetrySettings::default();
        s.steps[1].delay_ms = 5;
        s.steps[2].topic = s.steps[0].topic.clone();
        s.jitter = 2.0;
        let errors = s.validate().unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn reading_the_table_validates_it() {
        let ok: RetrySettings = toml::from_str("max_attempts = 3").unwrap();
        assert_eq!(ok.attempts_limit(), 3);
        assert_eq!(ok.steps.len(), 4, "defaults for the rest");
        let err = toml::from_str::<RetrySettings>("jitter = 3.0").unwrap_err();
        assert!(err.to_string().contains("jitter"), "{err}");
        assert!(
            toml::from_str::<RetrySettings>("step = []").is_err(),
            "unknown field"
        );
    }
}
