//! Reading the run back: the requests (event id to `created_at`) and the status topic (each
//! outcome with the broker's append time), after the processes stopped, so no consumer of the
//! harness competed with the pipeline for the two cores while it ran.

use std::collections::{BTreeMap, HashMap};

use notify_runtime::records::{DeliveryStatus, NotificationRequest, Outcome};
use rdkafka::Message;
use rdkafka::message::Timestamp;

use crate::Ctx;

/// One status event as read back.
pub struct Status {
    /// Broker append time (the status topic is `LogAppendTime`).
    pub at: i64,
    pub event_id: String,
    pub outcome: Outcome,
    /// Channel and masked recipient: which of the request's messages it is about.
    pub message: String,
}

/// An outcome that ends a notification's path through the pipeline (ACCEPTED, DEFERRED and
/// RETRY_SCHEDULED are steps on the way).
pub fn terminal(o: Outcome) -> bool {
    !matches!(
        o,
        Outcome::Accepted | Outcome::Deferred | Outcome::RetryScheduled
    )
}

/// Event id to the `created_at` of its first request (a re-sent id keeps the original's: the
/// copy is a DUPLICATE, the original is what gets SENT), and every request's `created_at`.
pub async fn requests(ctx: &Ctx, topic: &str) -> anyhow::Result<(HashMap<String, i64>, Vec<i64>)> {
    let mut payloads = Vec::new();
    ctx.kafka.scan(topic, |m| {
        if let Some(p) = m.payload() {
            payloads.push(p.to_vec());
        }
    })?;
    let mut first = HashMap::with_capacity(payloads.len());
    let mut created = Vec::with_capacity(payloads.len());
    for p in payloads {
        let r: NotificationRequest = ctx.codec.decode(Some(&p)).await?;
        created.push(r.created_at);
        first
            .entry(r.event_id)
            .and_modify(|c: &mut i64| *c = (*c).min(r.created_at))
            .or_insert(r.created_at);
    }
    Ok((first, created))
}

pub async fn statuses(ctx: &Ctx, topic: &str) -> anyhow::Result<Vec<Status>> {
    let mut payloads = Vec::new();
    ctx.kafka.scan(topic, |m| {
        if let (Timestamp::LogAppendTime(at), Some(p)) = (m.timestamp(), m.payload()) {
            payloads.push((at, p.to_vec()));
        }
    })?;
    let mut out = Vec::with_capacity(payloads.len());
    for (at, p) in payloads {
        let s: DeliveryStatus = ctx.codec.decode(Some(&p)).await?;
        out.push(Status {
            at,
            event_id: s.event_id,
            outcome: s.outcome,
            message: format!(
                "{}/{}",
                s.channel.unwrap_or_default(),
                s.recipient.unwrap_or_default()
            ),
        });
    }
    out.sort_by_key(|s| s.at);
    Ok(out)
}

/// The drain of the pre-filled requests (created and answered before `until`): terminal
/// statuses, the first and the last, and the count of every outcome.
pub struct DrainFigures {
    pub terminal: u64,
    /// Distinct messages (event, channel, recipient) with a terminal status.
    pub messages: u64,
    /// Append times of the first and the last terminal status.
    pub first: i64,
    pub last: i64,
    pub outcomes: BTreeMap<String, u64>,
}

impl DrainFigures {
    pub fn seconds(&self) -> f64 {
        if self.terminal > 1 {
            (self.last - self.first) as f64 / 1_000.0
        } else {
            f64::NAN
        }
    }
}

pub fn drain(statuses: &[Status], created: &HashMap<String, i64>, until: i64) -> DrainFigures {
    let mut outcomes = BTreeMap::new();
    let (mut first, mut last, mut count) = (i64::MAX, i64::MIN, 0u64);
    let mut seen = std::collections::HashSet::new();
    for s in statuses {
        // Before the first phase, both made and answered: a phase's re-send of a pre-filled
        // id is answered later (DUPLICATE) and belongs to that phase.
        if s.at >= until || created.get(&s.event_id).is_none_or(|c| *c >= until) {
            continue;
        }
        *outcomes.entry(outcome_name(s.outcome)).or_insert(0) += 1;
        if terminal(s.outcome) {
            count += 1;
            seen.insert((s.event_id.as_str(), s.message.as_str()));
            first = first.min(s.at);
            last = last.max(s.at);
        }
    }
    DrainFigures {
        terminal: count,
        messages: seen.len() as u64,
        first,
        last,
        outcomes,
    }
}

/// The contract's name of an outcome (`SENT`, `TOKEN_INVALID`, …).
fn outcome_name(o: Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{o:?}"))
}

/// SENT append time minus the request's `created_at`, ms, for requests created in
/// `[from, to)`; and terminal statuses appended in that window.
pub fn phase(
    statuses: &[Status],
    created: &HashMap<String, i64>,
    from: i64,
    to: i64,
) -> (Vec<f64>, u64) {
    let mut latencies = Vec::new();
    let mut terminal_in_window = 0;
    for s in statuses {
        if terminal(s.outcome) && (from..to).contains(&s.at) {
            terminal_in_window += 1;
        }
        if s.outcome != Outcome::Sent {
            continue;
        }
        if let Some(c) = created.get(&s.event_id)
            && (from..to).contains(c)
        {
            latencies.push((s.at - c) as f64);
        }
    }
    (latencies, terminal_in_window)
}

/// Per-second counts of `times` (ms) from `zero`, as (seconds, count/s); earlier ones dropped.
pub fn per_second(times: impl Iterator<Item = i64>, zero: i64) -> Vec<(f64, f64)> {
    let mut buckets: BTreeMap<i64, u64> = BTreeMap::new();
    for t in times.filter(|t| *t >= zero) {
        *buckets.entry((t - zero) / 1_000).or_insert(0) += 1;
    }
    let Some(last) = buckets.keys().next_back().copied() else {
        return Vec::new();
    };
    (0..=last)
        .map(|s| (s as f64 + 1.0, buckets.get(&s).copied().unwrap_or(0) as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(at: i64, id: &str, outcome: Outcome) -> Status {
        Status {
            at,
            event_id: id.into(),
            outcome,
            message: "APNS/…abcd".into(),
        }
    }

    #[test]
    fn drain_and_phase_split_by_creation_time() {
        let created: HashMap<String, i64> =
            [("a".into(), 10), ("b".into(), 20), ("c".into(), 1_000)].into();
        let statuses = vec![
            st(100, "a", Outcome::Accepted),
            st(150, "a", Outcome::Sent),
            st(400, "b", Outcome::Duplicate),
            st(1_200, "c", Outcome::Sent),
            // A phase's re-send of a pre-filled id, answered in the phase.
            st(1_300, "a", Outcome::Duplicate),
        ];
        let d = drain(&statuses, &created, 500);
        assert_eq!(d.terminal, 2);
        assert_eq!(d.seconds(), 0.25);
        assert_eq!(d.outcomes.get("ACCEPTED"), Some(&1));
        let (lat, in_window) = phase(&statuses, &created, 500, 2_000);
        // The re-sent id is no latency sample (its SENT was the original's) but is an
        // outcome of the phase.
        assert_eq!(lat, vec![200.0]);
        assert_eq!(in_window, 2);
    }

    #[test]
    fn per_second_fills_gaps() {
        let v = per_second([1_000, 1_500, 3_200, 500].into_iter(), 1_000);
        assert_eq!(v, vec![(1.0, 2.0), (2.0, 0.0), (3.0, 1.0)]);
    }
}
