//! Which records a replay copies: field filters, an event-id file, the outcome in the status
//! trail, and expiry. Resolved once at the start and saved in the run's plan, so a resumed run
//! selects exactly what the interrupted one did.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use notify_runtime::Config;
use notify_runtime::codec::AvroCodec;
use notify_runtime::records::{ChannelMessage, DeliveryStatus, NotificationRequest, Outcome};
use serde::{Deserialize, Serialize};

use crate::progress::Progress;
use crate::scan::{self, Range};

/// A source record, decoded: requests, or channel messages when a channel topic is replayed.
#[derive(Debug, Clone)]
pub enum Payload {
    Request(NotificationRequest),
    Message(ChannelMessage),
}

impl Payload {
    /// Decodes either record; a channel topic's records are tried as messages first.
    pub async fn decode(
        codec: &AvroCodec,
        bytes: Option<&[u8]>,
        channel_first: bool,
    ) -> Option<Self> {
        if channel_first && let Ok(m) = codec.decode::<ChannelMessage>(bytes).await {
            return Some(Payload::Message(m));
        }
        if let Ok(r) = codec.decode::<NotificationRequest>(bytes).await {
            return Some(Payload::Request(r));
        }
        codec
            .decode::<ChannelMessage>(bytes)
            .await
            .ok()
            .map(Payload::Message)
    }

    pub fn event_id(&self) -> &str {
        match self {
            Payload::Request(r) => &r.event_id,
            Payload::Message(m) => &m.event_id,
        }
    }

    pub fn user_id(&self) -> &str {
        match self {
            Payload::Request(r) => &r.user_id,
            Payload::Message(m) => &m.user_id,
        }
    }

    fn category(&self) -> &str {
        match self {
            Payload::Request(r) => &r.category,
            Payload::Message(m) => &m.category,
        }
    }

    fn expires_at(&self) -> Option<i64> {
        match self {
            Payload::Request(r) => r.expires_at,
            Payload::Message(m) => m.expires_at,
        }
    }

    /// `--force`: a new notification with a derived event id, so no ledger row matches it.
    pub fn derive_event_id(&mut self, run: &str) {
        let id = match self {
            Payload::Request(r) => &mut r.event_id,
            Payload::Message(m) => &mut m.event_id,
        };
        *id = format!("{id}/replay-{run}");
    }

    /// `--ignore-expiry`: the copy never expires.
    pub fn clear_expiry(&mut self) {
        match self {
            Payload::Request(r) => r.expires_at = None,
            Payload::Message(m) => m.expires_at = None,
        }
    }

    pub async fn encode(&self, codec: &AvroCodec, topic: &str) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Payload::Request(r) => codec.encode(topic, r).await?,
            Payload::Message(m) => codec.encode(topic, m).await?,
        })
    }
}

/// The selection of a run; every given criterion must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Selection {
    pub categories: Vec<String>,
    pub users: Vec<String>,
    pub templates: Vec<String>,
    /// From `--event-ids FILE`.
    pub event_ids: Option<BTreeSet<String>>,
    /// From `--outcome`: the (event id, user id) pairs whose trail ends in a wanted outcome.
    pub outcome_matches: Option<BTreeSet<(String, String)>>,
    pub ignore_expiry: bool,
}

impl Selection {
    /// Ok when the record is copied, else the reason it is filtered (a summary key).
    pub fn decide(&self, p: &Payload, now_ms: i64) -> Result<(), &'static str> {
        let listed =
            |wanted: &[String], got: &str| wanted.is_empty() || wanted.iter().any(|w| w == got);
        if !listed(&self.categories, p.category()) {
            return Err("category");
        }
        if !listed(&self.users, p.user_id()) {
            return Err("user");
        }
        if !self.templates.is_empty() {
            match p {
                Payload::Request(r) if listed(&self.templates, &r.template_id) => {}
                _ => return Err("template"),
            }
        }
        if self
            .event_ids
            .as_ref()
            .is_some_and(|ids| !ids.contains(p.event_id()))
        {
            return Err("event id not listed");
        }
        if let Some(matches) = &self.outcome_matches
            && !matches.contains(&(p.event_id().to_string(), p.user_id().to_string()))
        {
            return Err("outcome");
        }
        if !self.ignore_expiry && p.expires_at().is_some_and(|e| e <= now_ms) {
            return Err("expired");
        }
        Ok(())
    }
}

/// Event ids from a file: one a line, blank lines and `#` comments ignored.
pub fn read_event_ids(path: &Path) -> anyhow::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// `--outcome` values: outcome names as on the status topic (`FAILED`, `dead_lettered`).
pub fn parse_outcome(s: &str) -> Result<Outcome, String> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_uppercase()))
        .map_err(|_| format!("{s:?} is not an outcome (FAILED, DEAD_LETTERED, SENT, ...)"))
}

/// Reads the status topic from `since_ms` (or its beginning) and returns the (event, user)
/// pairs for which some message's latest outcome is one of `wanted`. ACCEPTED is per request,
/// not a message's outcome, so it never hides the one that came after it.
pub async fn outcome_matches(
    config: &Config,
    status_topic: &str,
    since_ms: Option<i64>,
    wanted: &[Outcome],
) -> anyhow::Result<BTreeSet<(String, String)>> {
    let consumer = scan::reader(
        config,
        &format!("{}-replay-status", config.kafka.group_prefix),
    )?;
    let partitions = scan::partitions(&consumer, status_topic)?;
    let marks = scan::watermarks(&consumer, status_topic, &partitions)?;
    let starts = match since_ms {
        Some(ms) => scan::offsets_for_time(&consumer, status_topic, &partitions, ms)?,
        None => marks.iter().map(|(p, (low, _))| (*p, *low)).collect(),
    };
    let ranges: Vec<Range> = marks
        .iter()
        .map(|(p, (low, high))| Range {
            partition: *p,
            start: starts.get(p).copied().unwrap_or(*low),
            end: *high,
        })
        .collect();
    let mut progress = Progress::new(
        "reading outcomes",
        Some(ranges.iter().map(Range::len).sum()),
    );
    let codec = AvroCodec::new(&config.registry)?;
    let mut latest: BTreeMap<(String, String, String, String), (i64, Outcome)> = BTreeMap::new();
    let mut scan = scan::Scan::new(&consumer, status_topic, &ranges)?;
    while let Some(m) = scan.next_record()? {
        progress.inc(1);
        let Ok(s) = codec
            .decode::<DeliveryStatus>(rdkafka::Message::payload(&m))
            .await
        else {
            continue;
        };
        if s.outcome == Outcome::Accepted {
            continue;
        }
        let key = (
            s.event_id,
            s.user_id,
            s.channel.unwrap_or_default(),
            s.recipient.unwrap_or_default(),
        );
        let entry = latest.entry(key).or_insert((s.at, s.outcome));
        if s.at >= entry.0 {
            *entry = (s.at, s.outcome);
        }
    }
    progress.finish();
    Ok(latest
        .into_iter()
        .filter(|(_, (_, o))| wanted.contains(o))
        .map(|((event, user, _, _), _)| (event, user))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify_runtime::records::Priority;

    fn request(event: &str, user: &str) -> Payload {
        Payload::Request(NotificationRequest {
            event_id: event.into(),
            user_id: user.into(),
            category: "billing".into(),
            template_id: "invoice_due".into(),
            data: Default::default(),
            channels: vec![],
            priority: Priority::Normal,
            created_at: 1,
            expires_at: Some(1_000),
            source: String::new(),
            email: None,
            phone: None,
        })
    }

    #[test]
    fn every_criterion_must_hold_and_says_why_not() {
        let p = request("e1", "u1");
        let mut s = Selection {
            ignore_expiry: true,
            ..Selection::default()
        };
        assert_eq!(s.decide(&p, 2_000), Ok(()));
        s.categories = vec!["shipping".into()];
        assert_eq!(s.decide(&p, 0), Err("category"));
        s.categories = vec!["shipping".into(), "billing".into()];
        s.templates = vec!["other".into()];
        assert_eq!(s.decide(&p, 0), Err("template"));
        s.templates.clear();
        s.event_ids = Some(["e2".to_string()].into());
        assert_eq!(s.decide(&p, 0), Err("event id not listed"));
        s.event_ids = None;
        s.outcome_matches = Some([("e1".to_string(), "u2".to_string())].into());
        assert_eq!(s.decide(&p, 0), Err("outcome"));
        s.outcome_matches = Some([("e1".to_string(), "u1".to_string())].into());
        assert_eq!(s.decide(&p, 2_000), Ok(()));
        s.ignore_expiry = false;
        assert_eq!(
            s.decide(&p, 2_000),
            Err("expired"),
            "expired requests stay expired"
        );
        assert_eq!(s.decide(&p, 500), Ok(()));
    }

    #[test]
    fn force_derives_an_event_id_and_expiry_can_be_cleared() {
        let mut p = request("e1", "u1");
        p.derive_event_id("ab12cd34");
        p.clear_expiry();
        assert_eq!(p.event_id(), "e1/replay-ab12cd34");
        assert_eq!(p.expires_at(), None);
    }

    #[test]
    fn outcomes_parse_in_any_case() {
        assert_eq!(parse_outcome("failed"), Ok(Outcome::Failed));
        assert_eq!(parse_outcome("DEAD_LETTERED"), Ok(Outcome::DeadLettered));
        assert!(parse_outcome("lost").is_err());
    }
}
