//! The consume loop's watchdog: when nothing has arrived for `stall_after_ms` with nothing
//! held, it asks the broker whether that is because the processor is caught up, or because it
//! is stuck, in one of two ways a broker outage can leave a consumer:
//!
//! - **Stalled:** it owns partitions that have records past its position, but nothing comes
//!   (e.g. left paused by a rebalance during a broker restart). It resumes every assigned
//!   partition and fails `/healthz`.
//! - **Orphaned:** it owns nothing, but the group, stable, either does not list it as a member
//!   (the session expired during the outage and it never joined again) or says it owns
//!   partitions that the consumer does not have. Its partitions are then read by no one.
//!
//! A stall or an orphan that lasts another `stall_after_ms` stops the processor with an error,
//! so that its supervisor (Kubernetes, the test fleet) restarts it with a fresh consumer and
//! producer: a rolling upgrade of the brokers must never leave a pipeline stage idle for good.
//! Questions the broker cannot answer (it is down) are no evidence either way, and trouble only
//! counts while it answers: a consumer orphaned across a broker restart is normal until the
//! restarted broker expires its old session, so the watchdog waits, as the processor does.

use std::ffi::CStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::{Consumer, ConsumerContext};

use crate::http::Health;
use crate::metrics::Metrics;

/// What a look at the broker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    CaughtUp,
    /// Records past the position of the assigned partitions.
    Behind(i64),
    /// Owns nothing, while its group says otherwise; the reason in words.
    Orphaned(String),
    /// The broker could not be asked, or the group is rebalancing.
    Unknown,
}

/// What the consume loop should do about a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Caught up.
    Fine,
    /// The broker could not say: leave things as they are.
    NoEvidence,
    /// Behind: resume every assigned partition, report unhealthy.
    Resume { behind: i64 },
    /// Orphaned, not for long yet: report unhealthy and wait for the group.
    Wait { reason: String },
    /// It lasted: stop with this reason, so that the supervisor restarts the processor.
    Fail { reason: String },
}

/// When a record last arrived, and since when each kind of trouble has been seen without a
/// break.
pub struct Watchdog {
    patience: Duration,
    last_received: Instant,
    stalled_since: Option<Instant>,
    orphaned_since: Option<Instant>,
}

impl Watchdog {
    /// `patience`: how long trouble may last before the verdict is to fail
    /// (`runtime.stall_after_ms`).
    pub fn new(patience: Duration) -> Watchdog {
        Watchdog {
            patience,
            last_received: Instant::now(),
            stalled_since: None,
            orphaned_since: None,
        }
    }

    /// Something arrived: whatever was wrong is over, `/healthz` included.
    pub fn received(&mut self, health: &Health) {
        self.last_received = Instant::now();
        self.trouble_over();
        health.set_stalled(false);
    }

    /// Nothing has arrived for `patience`: time to [`look`](Self::look) (when the loop holds
    /// nothing it is waiting on).
    pub fn quiet(&self) -> bool {
        self.last_received.elapsed() >= self.patience
    }

    fn trouble_over(&mut self) {
        self.stalled_since = None;
        self.orphaned_since = None;
    }

    /// Judges what [`find`] found while the loop was idle.
    pub fn judge(&mut self, finding: Finding, now: Instant) -> Verdict {
        match finding {
            Finding::Behind(behind) => {
                self.orphaned_since = None;
                let since = *self.stalled_since.get_or_insert(now);
                if now.duration_since(since) >= self.patience {
                    return Verdict::Fail {
                        reason: format!(
                            "consume loop stalled: {behind} records behind on its partitions and \
                             nothing arrives, also after resuming them; restarting gets a fresh consumer"
                        ),
                    };
                }
                Verdict::Resume { behind }
            }
            Finding::Orphaned(reason) => {
                self.stalled_since = None;
                let since = *self.orphaned_since.get_or_insert(now);
                let lasted = now.duration_since(since);
                if lasted >= self.patience {
                    return Verdict::Fail {
                        reason: format!(
                            "consumer owns no partition although {reason}, for {}s; restarting \
                             joins the group afresh",
                            lasted.as_secs()
                        ),
                    };
                }
                Verdict::Wait { reason }
            }
            Finding::CaughtUp => {
                self.trouble_over();
                Verdict::Fine
            }
            // Trouble counts while the broker answers: a look it cannot answer (it is down, or
            // the group is rebalancing) starts the clock again. A consumer orphaned across a
            // broker restart is normal until the restarted broker expires its old session.
            Finding::Unknown => {
                self.trouble_over();
                Verdict::NoEvidence
            }
        }
    }

    /// Asks the broker on a blocking thread, judges, and counts and reports trouble on
    /// `/metrics` and `/healthz`; the caller acts on what is returned (resume, or fail).
    pub async fn look<C, X>(
        &mut self,
        consumer: &Arc<C>,
        group_id: &str,
        metrics: &Metrics,
        health: &Health,
    ) -> Verdict
    where
        C: Consumer<X> + Send + Sync + 'static,
        X: ConsumerContext,
    {
        let (probe, group) = (consumer.clone(), group_id.to_string());
        let finding = tokio::task::spawn_blocking(move || find(&*probe, &group))
            .await
            .unwrap_or(Finding::Unknown);
        let verdict = self.judge(finding, Instant::now());
        match &verdict {
            Verdict::Fine => health.set_stalled(false),
            Verdict::NoEvidence => {}
            Verdict::Resume { behind } => {
                metrics.stalls.inc();
                health.set_stalled(true);
                tracing::warn!(
                    records_behind = behind,
                    "consume loop stalled: assigned and behind but nothing arrives; resuming partitions"
                );
            }
            Verdict::Wait { reason } => {
                metrics.stalls.inc();
                health.set_stalled(true);
                tracing::warn!(%reason, "consumer owns no partition; waiting for the group to assign some");
            }
            Verdict::Fail { .. } => health.set_stalled(true),
        }
        verdict
    }
}

/// Asks the broker about `consumer` of group `group_id` (blocking, a few seconds at most per
/// question: call it from a blocking thread).
pub fn find<C: Consumer<X>, X: ConsumerContext>(consumer: &C, group_id: &str) -> Finding {
    let timeout = Duration::from_secs(5);
    let Ok(assignment) = consumer.assignment() else {
        return Finding::Unknown;
    };
    if assignment.count() == 0 {
        return membership(consumer, group_id, timeout);
    }
    let (Ok(position), Ok(committed)) = (consumer.position(), consumer.committed(timeout)) else {
        return Finding::Unknown;
    };
    let mut behind = 0;
    for element in assignment.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let Ok((low, high)) = consumer.fetch_watermarks(topic, partition, timeout) else {
            return Finding::Unknown;
        };
        let offset_in = |tpl: &rdkafka::TopicPartitionList| match tpl
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        // librdkafka moves the position past transaction markers too, so an idle partition of
        // a transactional input is not mistaken for one behind.
        let at = offset_in(&position)
            .or_else(|| offset_in(&committed))
            .unwrap_or(low);
        behind += (high - at).max(0);
    }
    if behind > 0 {
        Finding::Behind(behind)
    } else {
        Finding::CaughtUp
    }
}

/// Owning nothing is fine when the group gave this member nothing (more members than
/// partitions); it is an orphan when the group, not rebalancing, lacks it or gave it some.
fn membership<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    group_id: &str,
    timeout: Duration,
) -> Finding {
    let Ok(list) = consumer.fetch_group_list(Some(group_id), timeout) else {
        return Finding::Unknown;
    };
    let Some(group) = list.groups().iter().find(|g| g.name() == group_id) else {
        return Finding::Unknown;
    };
    if !matches!(group.state(), "Stable" | "Empty") {
        return Finding::Unknown;
    }
    let me = member_id(consumer);
    let mine = group
        .members()
        .iter()
        .find(|m| !me.is_empty() && m.id() == me);
    match mine {
        None => Finding::Orphaned(format!(
            "its group {group_id} ({}, {} members) does not list it",
            group.state(),
            group.members().len()
        )),
        Some(m) => match m.assignment().and_then(partitions_assigned) {
            Some(n) if n > 0 => {
                Finding::Orphaned(format!("its group {group_id} assigned it {n} partitions"))
            }
            _ => Finding::CaughtUp,
        },
    }
}

/// The member id the group coordinator gave this consumer ("" before it has joined).
fn member_id<C: Consumer<X>, X: ConsumerContext>(consumer: &C) -> String {
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live handle of `consumer`; librdkafka returns a copy of the member
    // id (or null) that the caller frees with `rd_kafka_mem_free`, once, here.
    unsafe {
        let id = rdkafka::bindings::rd_kafka_memberid(rk);
        if id.is_null() {
            return String::new();
        }
        let text = CStr::from_ptr(id).to_string_lossy().into_owned();
        rdkafka::bindings::rd_kafka_mem_free(rk, id.cast());
        text
    }
}

/// Partitions in a consumer protocol assignment (version, then per topic its name and
/// partition numbers; Kafka's `ConsumerProtocolAssignment`). None when it does not parse.
fn partitions_assigned(bytes: &[u8]) -> Option<usize> {
    fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = b.split_first_chunk::<N>()?;
        *b = rest;
        Some(*head)
    }
    let b = &mut &bytes[..];
    take::<2>(b)?;
    let topics = i32::from_be_bytes(take::<4>(b)?);
    let mut partitions = 0usize;
    for _ in 0..topics.max(0) {
        let name_len = i16::from_be_bytes(take::<2>(b)?);
        *b = b.get(usize::try_from(name_len).ok()?..)?;
        let n = i32::from_be_bytes(take::<4>(b)?);
        let n = usize::try_from(n).ok()?;
        *b = b.get(n.checked_mul(4)?..)?;
        partitions += n;
    }
    Some(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_secs(30);

    #[test]
    fn a_stall_is_resumed_first_and_fails_once_it_lasts() {
        let mut dog = Watchdog::new(PATIENCE);
        let t0 = Instant::now();
        assert_eq!(
            dog.judge(Finding::Behind(7), t0),
            Verdict::Resume { behind: 7 }
        );
        let later = t0 + Duration::from_secs(29);
        assert_eq!(
            dog.judge(Finding::Behind(7), later),
            Verdict::Resume { behind: 7 }
        );
        let verdict = dog.judge(Finding::Behind(5), t0 + PATIENCE);
        assert!(matches!(verdict, Verdict::Fail { .. }), "{verdict:?}");
    }

    #[test]
    fn an_orphan_waits_for_the_group_then_fails() {
        let mut dog = Watchdog::new(PATIENCE);
        let t0 = Instant::now();
        let orphan = || Finding::Orphaned("its group g does not list it".into());
        assert!(matches!(dog.judge(orphan(), t0), Verdict::Wait { .. }));
        assert!(matches!(
            dog.judge(orphan(), t0 + Duration::from_secs(10)),
            Verdict::Wait { .. }
        ));
        match dog.judge(orphan(), t0 + PATIENCE) {
            Verdict::Fail { reason } => {
                assert!(reason.contains("does not list it"), "{reason}");
                assert!(reason.contains("for 30s"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn trouble_counts_only_while_the_broker_answers() {
        let mut dog = Watchdog::new(PATIENCE);
        let t0 = Instant::now();
        let orphan = || Finding::Orphaned("its group g does not list it".into());
        dog.judge(orphan(), t0);
        // The broker restarts: no evidence, and the orphan seen after it starts a new wait.
        assert_eq!(
            dog.judge(Finding::Unknown, t0 + Duration::from_secs(20)),
            Verdict::NoEvidence
        );
        let verdict = dog.judge(orphan(), t0 + PATIENCE);
        assert!(matches!(verdict, Verdict::Wait { .. }), "{verdict:?}");
        dog.judge(Finding::Unknown, t0 + PATIENCE);
        dog.judge(Finding::Behind(3), t0 + PATIENCE * 2);
        let verdict = dog.judge(
            Finding::Behind(3),
            t0 + PATIENCE * 2 + Duration::from_secs(5),
        );
        assert_eq!(verdict, Verdict::Resume { behind: 3 });
    }

    #[test]
    fn progress_or_a_caught_up_look_starts_the_clock_again() {
        let mut dog = Watchdog::new(PATIENCE);
        let t0 = Instant::now();
        dog.judge(Finding::Behind(1), t0);
        dog.received(&Health::default());
        assert_eq!(
            dog.judge(Finding::Behind(1), t0 + PATIENCE),
            Verdict::Resume { behind: 1 }
        );
        dog.judge(Finding::Orphaned("x".into()), t0 + PATIENCE);
        assert_eq!(dog.judge(Finding::CaughtUp, t0 + PATIENCE), Verdict::Fine);
        let verdict = dog.judge(Finding::Orphaned("x".into()), t0 + PATIENCE * 2);
        assert!(matches!(verdict, Verdict::Wait { .. }), "{verdict:?}");
        // A stall and an orphan are different troubles: one does not continue the other.
        let verdict = dog.judge(Finding::Behind(1), t0 + PATIENCE * 3);
        assert_eq!(verdict, Verdict::Resume { behind: 1 });
    }

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = vec![0, 1];
        b.extend((topics.len() as i32).to_be_bytes());
        for (name, parts) in topics {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in *parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        b
    }

    #[test]
    fn an_assignment_counts_its_partitions() {
        let two_topics = assignment(&[("notify.channel.apns.v1", &[0, 3]), ("b", &[1])]);
        assert_eq!(partitions_assigned(&two_topics), Some(3));
        assert_eq!(partitions_assigned(&assignment(&[])), Some(0));
        assert_eq!(partitions_assigned(&assignment(&[("t", &[])])), Some(0));
    }

    #[test]
    fn a_truncated_assignment_does_not_parse() {
        let whole = assignment(&[("topic", &[0, 1, 2])]);
        for cut in [1, 5, 9, whole.len() - 9] {
            assert_eq!(partitions_assigned(&whole[..cut]), None, "cut at {cut}");
        }
    }
}
