//! What happens to one record read from a ladder step or the deferral topic: pure rules,
//! unit-tested without Kafka.

use notify_runtime::dlq::{self, ErrorClass, retry as h};

use crate::settings::RetrySettings;

/// Where a record was read, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Ladder step `i` (index into `steps`).
    Step(usize),
    Deferred,
}

/// The decision for one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Wait until `due_ms`, then return the record to `origin`.
    Hold {
        due_ms: i64,
        origin: String,
        /// The ladder step waited on (None for a deferral).
        step: Option<usize>,
    },
    /// A later step is needed (attempt count or Retry-After): produce there at once, with
    /// `notify.not_before = not_before_ms`.
    Move { step: usize, not_before_ms: i64 },
    /// Dead-letter it.
    DeadLetter {
        class: ErrorClass,
        reason: String,
        origin: Option<String>,
    },
}

/// The inputs of a decision besides the settings.
pub struct Facts<'a> {
    pub source: Source,
    /// Header lookup (last value wins).
    pub header: &'a dyn Fn(&str) -> Option<String>,
    pub now_ms: i64,
    /// A uniform random number in 0..1 (jitter); a parameter so tests are exact.
    pub random: f64,
}

fn number(facts: &Facts<'_>, key: &str) -> Option<i64> {
    (facts.header)(key).and_then(|v| v.trim().parse::<i64>().ok())
}

pub fn plan(settings: &RetrySettings, facts: &Facts<'_>) -> Plan {
    let origin = (facts.header)(h::ORIGIN_TOPIC).filter(|o| !o.trim().is_empty());
    let Some(origin) = origin else {
        return Plan::DeadLetter {
            class: ErrorClass::Validation,
            reason: format!(
                "no {} header: nowhere to return the record",
                h::ORIGIN_TOPIC
            ),
            origin: None,
        };
    };
    if !settings.origins.is_empty() && !settings.origins.contains(&origin) {
        // Not sent back, and not named as the dead letter's source: a redrive must not send
        // it there either.
        return Plan::DeadLetter {
            class: ErrorClass::Validation,
            reason: format!(
                "{} {origin:?} is not one of the pipeline's topics",
                h::ORIGIN_TOPIC
            ),
            origin: None,
        };
    }
    match facts.source {
        Source::Deferred => match number(facts, h::NOT_BEFORE) {
            Some(not_before) => Plan::Hold {
                due_ms: not_before + jitter(settings.deferred_jitter_ms as f64, facts.random),
                origin,
                step: None,
            },
            None => Plan::DeadLetter {
                class: ErrorClass::Validation,
                reason: format!("deferred record without a numeric {} header", h::NOT_BEFORE),
                origin: Some(origin),
            },
        },
        Source::Step(here) => ladder(settings, facts, here, origin),
    }
}

fn ladder(settings: &RetrySettings, facts: &Facts<'_>, here: usize, origin: String) -> Plan {
    let attempts = number(facts, dlq::ATTEMPTS).unwrap_or(1).max(1);
    let last_error = (facts.header)(dlq::REASON).unwrap_or_else(|| "unknown".into());
    let exhausted = |why: String| Plan::DeadLetter {
        class: ErrorClass::RetriesExhausted,
        reason: format!("{why}; last error: {last_error}"),
        origin: Some(origin.clone()),
    };
    if attempts >= i64::from(settings.attempts_limit()) {
        return exhausted(format!("{attempts} attempts made"));
    }
    // The step this attempt calls for: one per failed attempt, never below the step that
    // served the previous attempt (a Retry-After may have skipped ahead), never below here.
    let mut step = (attempts - 1) as usize;
    if let Some(previous) = number(facts, h::STEP) {
        step = step.max(previous.max(-1).saturating_add(1) as usize);
    }
    step = step.max(here);
    let retry_after = number(facts, h::RETRY_AFTER_MS).unwrap_or(0).max(0);
    while step + 1 < settings.steps.len() && (settings.steps[step].delay_ms as i64) < retry_after {
        step += 1;
    }
    if step >= settings.steps.len() {
        return exhausted(format!(
            "{attempts} attempts made and the last step ({}) is passed",
            settings
                .steps
                .last()
                .map(|s| s.name.as_str())
                .unwrap_or("-")
        ));
    }
    let delay = settings.steps[step].delay_ms as i64;
    let due_ms = match number(facts, h::NOT_BEFORE) {
        // Set when this record was moved here: the due time was fixed then.
        Some(not_before) => not_before,
        None => {
            let failed_at = number(facts, h::LAST_FAILURE_AT)
                .or_else(|| (attempts == 1).then(|| number(facts, dlq::FIRST_FAILURE_AT))?)
                // Unknown failure time: counting from now is late, never early.
                .unwrap_or(facts.now_ms);
            failed_at
                + delay.max(retry_after)
                + jitter(delay as f64 * settings.jitter, facts.random)
        }
    };
    if step > here {
        return Plan::Move {
            step,
            not_before_ms: due_ms,
        };
    }
    Plan::Hold {
        due_ms,
        origin,
        step: Some(step),
    }
}

/// Only ever added: a record never comes back earlier than its step's delay.
fn jitter(max_ms: f64, random: f64) -> i64 {
    (max_ms * random.clamp(0.0, 1.0)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Step;

    fn settings() -> RetrySettings {
        let step = |name: &str, delay_ms| Step {
            name: name.into(),
            delay_ms,
            topic: format!("r.{name}"),
        };
        RetrySettings {
            steps: vec![step("1s", 1_000), step("2s", 2_000), step("3s", 3_000)],
            jitter: 0.5,
            deferred_jitter_ms: 100,
            origins: vec!["chan".into()],
            ..RetrySettings::default()
        }
    }

    fn decide(source: Source, headers: &[(&str, &str)], random: f64) -> Plan {
        let owned: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |key: &str| {
            owned
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        plan(
            &settings(),
            &Facts {
                source,
                header: &lookup,
                now_ms: 50_000,
                random,
            },
        )
    }

    const ORIGIN: (&str, &str) = (h::ORIGIN_TOPIC, "chan");

    #[test]
    fn first_failure_waits_the_first_step_plus_jitter() {
        let p = decide(
            Source::Step(0),
            &[ORIGIN, (dlq::ATTEMPTS, "1"), (h::LAST_FAILURE_AT, "10000")],
            0.5,
        );
        assert_eq!(
            p,
            Plan::Hold {
                due_ms: 10_000 + 1_000 + 250,
                origin: "chan".into(),
                step: Some(0)
            }
        );
    }

    #[test]
    fn later_attempts_move_up_the_ladder() {
        let p = decide(
            Source::Step(0),
            &[ORIGIN, (dlq::ATTEMPTS, "3"), (h::LAST_FAILURE_AT, "10000")],
            0.0,
        );
        assert_eq!(
            p,
            Plan::Move {
                step: 2,
                not_before_ms: 13_000
            }
        );
        // Arriving there with the not-before it was given, it waits for exactly that.
        let p = decide(
            Source::Step(2),
            &[ORIGIN, (dlq::ATTEMPTS, "3"), (h::NOT_BEFORE, "13000")],
            0.9,
        );
        assert!(
            matches!(
                p,
                Plan::Hold {
                    due_ms: 13_000,
                    step: Some(2),
                    ..
                }
            ),
            "{p:?}"
        );
    }

    #[test]
    fn retry_after_longer_than_the_step_skips_shorter_steps() {
        let p = decide(
            Source::Step(0),
            &[
                ORIGIN,
                (dlq::ATTEMPTS, "1"),
                (h::LAST_FAILURE_AT, "10000"),
                (h::RETRY_AFTER_MS, "1500"),
            ],
            0.0,
        );
        assert_eq!(
            p,
            Plan::Move {
                step: 1,
                not_before_ms: 12_000
            }
        );
        // Longer than every step: the last step, waiting the full Retry-After.
        let p = decide(
            Source::Step(0),
            &[
                ORIGIN,
                (dlq::ATTEMPTS, "1"),
                (h::LAST_FAILURE_AT, "10000"),
                (h::RETRY_AFTER_MS, "120000"),
            ],
            0.0,
        );
        assert_eq!(
            p,
            Plan::Move {
                step: 2,
                not_before_ms: 130_000
            }
        );
    }

    #[test]
    fn the_step_after_a_skip_is_further_still() {
        // Attempt 2 after being served by step 2 (a skip): nothing is left.
        let p = decide(
            Source::Step(0),
            &[ORIGIN, (dlq::ATTEMPTS, "2"), (h::STEP, "2")],
            0.0,
        );
        assert!(
            matches!(
                &p,
                Plan::DeadLetter {
                    class: ErrorClass::RetriesExhausted,
                    ..
                }
            ),
            "{p:?}"
        );
    }

    #[test]
    fn exhausted_attempts_are_dead_lettered_with_the_last_error() {
        let p = decide(
            Source::Step(0),
            &[
                ORIGIN,
                (dlq::ATTEMPTS, "4"),
                (dlq::REASON, "503 from provider"),
            ],
            0.0,
        );
        match p {
            Plan::DeadLetter {
                class,
                reason,
                origin,
            } => {
                assert_eq!(class, ErrorClass::RetriesExhausted);
                assert!(reason.contains("503 from provider"), "{reason}");
                assert_eq!(origin.as_deref(), Some("chan"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_failure_time_counts_from_now() {
        let p = decide(Source::Step(1), &[ORIGIN, (dlq::ATTEMPTS, "2")], 0.0);
        assert!(matches!(p, Plan::Hold { due_ms: 52_000, .. }), "{p:?}");
    }

    #[test]
    fn deferrals_wait_for_not_before() {
        let p = decide(Source::Deferred, &[ORIGIN, (h::NOT_BEFORE, "70000")], 1.0);
        assert!(
            matches!(
                p,
                Plan::Hold {
                    due_ms: 70_100,
                    step: None,
                    ..
                }
            ),
            "{p:?}"
        );
        let p = decide(Source::Deferred, &[ORIGIN], 0.0);
        assert!(matches!(
            p,
            Plan::DeadLetter {
                class: ErrorClass::Validation,
                ..
            }
        ));
    }

    #[test]
    fn no_origin_is_a_dead_letter() {
        let p = decide(Source::Step(0), &[(dlq::ATTEMPTS, "1")], 0.0);
        assert!(matches!(
            p,
            Plan::DeadLetter {
                class: ErrorClass::Validation,
                origin: None,
                ..
            }
        ));
    }

    #[test]
    fn an_origin_outside_the_pipeline_is_a_dead_letter_not_a_destination() {
        for source in [Source::Step(0), Source::Deferred] {
            let p = decide(
                source,
                &[
                    (h::ORIGIN_TOPIC, "notify.users.v1"),
                    (dlq::ATTEMPTS, "1"),
                    (h::NOT_BEFORE, "1"),
                ],
                0.0,
            );
            match p {
                Plan::DeadLetter {
                    class: ErrorClass::Validation,
                    origin: None,
                    reason,
                } => assert!(reason.contains("notify.users.v1"), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_pipeline_origins_follow_the_config() {
        let mut config = notify_runtime::Config::default();
        config.processors.insert(
            "deliver-sms".into(),
            toml::Value::Table(toml::toml! { input = "t.sms" }),
        );
        let origins = crate::pipeline_origins(&config);
        assert!(origins.contains(&"t.sms".to_string()), "{origins:?}");
        assert!(origins.contains(&"notify.channel.apns.v1".to_string()));
        assert!(origins.contains(&"notify.requests.v1".to_string()));
        assert!(!origins.contains(&"notify.channel.sms.v1".to_string()));
    }
}
