//! The fault suite's oracle: what was produced against what reached the providers (the
//! sandbox's record of APNs, FCM, Twilio and SendGrid, the SMTP server's Maildir) and what the
//! status topic says (read committed). It knows nothing of the pipeline's insides: a scenario
//! hands it plain facts and gets the counts the suite asserts on and RELIABILITY.md shows.

use std::collections::{BTreeMap, HashMap, HashSet};

use notify_runtime::records::{DeliveryStatus, Outcome};

/// One message a request should cause: a channel (`APNS`, `FCM`, `SMS`, `EMAIL`, as status
/// events name them) and the full contact point.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Message {
    pub channel: String,
    pub recipient: String,
}

/// A request as its producers sent it.
#[derive(Debug, Clone)]
pub struct Produced {
    pub event_id: String,
    pub user_id: String,
    /// How many producers sent this (user, event id): 1 unless the scenario resends it.
    pub copies: usize,
    pub expected: Vec<Message>,
}

/// A message a provider accepted.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub event_id: String,
    pub message: Message,
    pub at_ms: i64,
}

/// Everything the checker needs from one run.
#[derive(Debug, Default)]
pub struct Facts {
    pub produced: Vec<Produced>,
    pub delivered: Vec<Delivered>,
    pub statuses: Vec<DeliveryStatus>,
    /// Dead letters by their `notify.error.class` header.
    pub dead_letters: Vec<String>,
    /// At most this many pushes per device over the run (the rate rule), when one applies.
    pub push_limit: Option<usize>,
    /// Peak resident memory per processor, in KiB.
    pub peak_rss_kib: BTreeMap<String, u64>,
    /// Processes that exited by themselves (and were restarted), per processor.
    pub exits: BTreeMap<String, usize>,
    /// When the faults began and ended (ms since the epoch), for the recovery time.
    pub fault_window: Option<(i64, i64)>,
}

/// The counts per scenario.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub requests: usize,
    pub messages_expected: usize,
    pub delivered: usize,
    /// Expected messages neither delivered nor given a terminal outcome.
    pub lost: usize,
    /// Extra copies a provider received of one (event, channel, recipient).
    pub duplicate_sends: usize,
    /// Extra copies of one terminal status event of one message (or one request).
    pub duplicate_statuses: usize,
    /// DUPLICATE status events beyond the copies producers really sent.
    pub spurious_duplicates: usize,
    /// Delivered messages with no SENT status event.
    pub missing_sent: usize,
    /// Expected messages with no terminal status event yet (delivered or not).
    pub unsettled: usize,
    pub dead_letters: BTreeMap<String, usize>,
    /// Pushes to one device beyond the rate rule.
    pub rate_limit_violations: usize,
    /// Seconds from the end of the faults until deliveries run at 80% of the rate before them.
    pub recovery_secs: Option<f64>,
    pub peak_rss_mib: BTreeMap<String, f64>,
    pub exits: BTreeMap<String, usize>,
}

impl Report {
    /// Nothing lost, nothing sent or said twice, no rate rule broken.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicate_sends == 0
            && self.duplicate_statuses == 0
            && self.spurious_duplicates == 0
            && self.rate_limit_violations == 0
    }
}

/// The channel a request names for a delivery channel (a rate rule limits `PUSH`).
fn requested_as(channel: &str) -> &str {
    match channel {
        "APNS" | "FCM" => "PUSH",
        other => other,
    }
}

/// A status event that ends a message (or, without a channel, a whole request).
fn terminal(outcome: Outcome) -> bool {
    !matches!(
        outcome,
        Outcome::Accepted | Outcome::Deferred | Outcome::RetryScheduled
    )
}

pub fn check(facts: &Facts) -> Report {
    let mask = notify_runtime::records::mask;
    let mut report = Report {
        requests: facts.produced.len(),
        messages_expected: facts.produced.iter().map(|p| p.expected.len()).sum(),
        delivered: facts.delivered.len(),
        ..Report::default()
    };
    let mut sends: HashMap<(&str, &Message), usize> = HashMap::new();
    for d in &facts.delivered {
        *sends.entry((&d.event_id, &d.message)).or_default() += 1;
    }
    report.duplicate_sends = sends.values().map(|n| n - 1).sum();

    // Terminal statuses per (event, channel, masked recipient, outcome); request-level ones
    // (no channel) per (event, outcome).
    let mut per_message: HashMap<(&str, &str, &str, Outcome), usize> = HashMap::new();
    let mut per_channel: HashMap<(&str, &str, Outcome), usize> = HashMap::new();
    let mut per_request: HashMap<(&str, Outcome), usize> = HashMap::new();
    for s in facts.statuses.iter().filter(|s| terminal(s.outcome)) {
        match (&s.channel, &s.recipient) {
            (Some(c), Some(r)) => {
                *per_message
                    .entry((&s.event_id, c, r, s.outcome))
                    .or_default() += 1
            }
            (Some(c), None) => *per_channel.entry((&s.event_id, c, s.outcome)).or_default() += 1,
            _ => *per_request.entry((&s.event_id, s.outcome)).or_default() += 1,
        }
    }
    report.duplicate_statuses = per_message.values().map(|n| n - 1).sum::<usize>()
        + per_channel.values().map(|n| n - 1).sum::<usize>()
        + per_request
            .iter()
            .filter(|((_, o), _)| *o != Outcome::Duplicate)
            .map(|(_, n)| n - 1)
            .sum::<usize>();
    let copies: HashMap<&str, usize> = facts
        .produced
        .iter()
        .map(|p| (p.event_id.as_str(), p.copies))
        .collect();
    report.spurious_duplicates = per_request
        .iter()
        .filter(|((_, o), _)| *o == Outcome::Duplicate)
        .map(|((e, _), n)| n.saturating_sub(copies.get(e).copied().unwrap_or(1) - 1))
        .sum();

    let settled_requests: HashSet<&str> = per_request
        .keys()
        .filter(|(_, o)| *o != Outcome::Duplicate)
        .map(|(e, _)| *e)
        .collect();
    let settled_messages: HashSet<(&str, &str, &str)> = per_message
        .keys()
        .map(|(e, c, r, _)| (*e, *c, *r))
        .collect();
    let settled_channels: HashSet<(&str, &str)> =
        per_channel.keys().map(|(e, c, _)| (*e, *c)).collect();
    for p in &facts.produced {
        for m in &p.expected {
            let masked = mask(&m.recipient);
            let key = (p.event_id.as_str(), m.channel.as_str(), masked.as_str());
            let sent = sends.contains_key(&(p.event_id.as_str(), m));
            if sent && !per_message.contains_key(&(key.0, key.1, key.2, Outcome::Sent)) {
                report.missing_sent += 1;
            }
            let settled = settled_messages.contains(&key)
                || settled_channels.contains(&(key.0, requested_as(&m.channel)))
                || settled_requests.contains(p.event_id.as_str());
            if !settled {
                report.unsettled += 1;
                if !sent {
                    report.lost += 1;
                }
            }
        }
    }
    for class in &facts.dead_letters {
        *report.dead_letters.entry(class.clone()).or_default() += 1;
    }
    if let Some(limit) = facts.push_limit {
        let mut per_device: HashMap<&Message, usize> = HashMap::new();
        for d in &facts.delivered {
            if matches!(d.message.channel.as_str(), "APNS" | "FCM") {
                *per_device.entry(&d.message).or_default() += 1;
            }
        }
        report.rate_limit_violations = per_device.values().map(|n| n.saturating_sub(limit)).sum();
    }
    report.recovery_secs = facts
        .fault_window
        .and_then(|w| recovery_secs(&facts.delivered, w));
    report.exits = facts.exits.clone();
    report.peak_rss_mib = facts
        .peak_rss_kib
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64 / 1024.0))
        .collect();
    report
}

/// Seconds after the faults end until a 5 s window of deliveries runs at 80% of the rate of
/// the 10 s before they began; if the load ended before that, until the last delivery.
pub fn recovery_secs(delivered: &[Delivered], (start, end): (i64, i64)) -> Option<f64> {
    let mut at: Vec<i64> = delivered.iter().map(|d| d.at_ms).collect();
    at.sort_unstable();
    let count =
        |from: i64, to: i64| at.partition_point(|t| *t < to) - at.partition_point(|t| *t < from);
    let steady = count(start - 10_000, start) as f64 / 10.0;
    let last = *at.last()?;
    let mut t = end;
    while t + 5_000 <= last {
        if steady > 0.0 && count(t, t + 5_000) as f64 / 5.0 >= 0.8 * steady {
            return Some((t - end).max(0) as f64 / 1000.0);
        }
        t += 1_000;
    }
    Some((last - end).max(0) as f64 / 1000.0)
}

/// The event id of the run's form `<prefix><digits>` found in a provider's message text (the
/// scenarios render it into every message).
pub fn event_in(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)?;
    let rest = &text[start + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then(|| format!("{prefix}{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(c: &str, r: &str) -> Message {
        Message {
            channel: c.into(),
            recipient: r.into(),
        }
    }

    fn status(e: &str, c: Option<&str>, r: Option<&str>, o: Outcome) -> DeliveryStatus {
        let mut s = DeliveryStatus::new(e, "u", "test", o);
        s.channel = c.map(String::from);
        s.recipient = r.map(notify_runtime::records::mask);
        s
    }

    #[test]
    fn counts_losses_duplicates_and_spurious_duplicate_statuses() {
        let tok = "a".repeat(64);
        let produced = ["e1", "e2", "e3"].map(|e| Produced {
            event_id: e.into(),
            user_id: "u".into(),
            copies: 1,
            expected: vec![msg("APNS", &tok)],
        });
        let d = |e: &str, at| Delivered {
            event_id: e.into(),
            message: msg("APNS", &tok),
            at_ms: at,
        };
        let facts = Facts {
            produced: produced.to_vec(),
            // e1 twice, e2 never and no outcome, e3 never but FAILED.
            delivered: vec![d("e1", 1), d("e1", 2)],
            statuses: vec![
                status("e1", Some("APNS"), Some(&tok), Outcome::Sent),
                status("e1", Some("APNS"), Some(&tok), Outcome::Sent),
                status("e3", Some("APNS"), Some(&tok), Outcome::Failed),
                status("e2", None, None, Outcome::Duplicate),
            ],
            push_limit: Some(1),
            ..Facts::default()
        };
        let r = check(&facts);
        assert_eq!(r.duplicate_sends, 1);
        assert_eq!(r.lost, 1, "e2");
        assert_eq!(r.duplicate_statuses, 1);
        assert_eq!(r.spurious_duplicates, 1);
        assert_eq!(r.rate_limit_violations, 1);
        assert!(!r.clean());
    }

    #[test]
    fn finds_the_event_id_in_a_rendered_message() {
        assert_eq!(
            event_in("Invoice of EV-x-0042 due", "EV-x-").as_deref(),
            Some("EV-x-0042")
        );
        assert_eq!(event_in("nothing", "EV-x-"), None);
    }
}
