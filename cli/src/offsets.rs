//! `notify offsets show|reset GROUP`: a processor's committed positions, and moving them.
//!
//! A reset is refused while the group has members: a running consumer would overwrite the new
//! offsets with its own at its next commit. Stop the processor (scale it to zero), reset,
//! start it again; it then reads from the new positions.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use notify_runtime::Config;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::scan;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Subcommand)]
pub enum OffsetsCommand {
    /// The group's state, members and committed offset, end and lag per partition.
    Show {
        group: String,
        /// Only these topics (repeatable; default: every topic the group has offsets for).
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
    /// Move the group's committed offsets (the group must have no members).
    Reset {
        group: String,
        #[command(flatten)]
        to: ResetTo,
        /// Only these topics (repeatable; default: every topic the group has offsets for).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Print the per-partition move without committing it.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct ResetTo {
    /// The first offset at or after this time (RFC 3339, epoch ms or an age like 2h).
    #[arg(long, value_parser = crate::dlq::parse_time)]
    pub to_time: Option<i64>,
    #[arg(long)]
    pub to_earliest: bool,
    #[arg(long)]
    pub to_latest: bool,
    /// Move by N records (negative: back), within what the partition holds.
    #[arg(long, allow_hyphen_values = true)]
    pub shift: Option<i64>,
}

/// One partition's position: committed (None: nothing committed), the watermarks, and the
/// new offset of a reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub low: i64,
    pub high: i64,
    pub new: Option<i64>,
}

pub async fn execute(config: &Config, command: OffsetsCommand) -> anyhow::Result<()> {
    match command {
        OffsetsCommand::Show { group, topics } => {
            let consumer = scan::reader(config, &group)?;
            let (state, members) = describe(&consumer, &group)?;
            println!("group {group}: {state}, {members} members");
            println!(
                "{:<40} {:>5} {:>12} {:>12} {:>10}",
                "TOPIC", "PART", "COMMITTED", "END", "LAG"
            );
            for p in positions(&consumer, &topics)? {
                let lag = p.committed.map(|c| (p.high - c).max(0).to_string());
                println!(
                    "{:<40} {:>5} {:>12} {:>12} {:>10}",
                    p.topic,
                    p.partition,
                    p.committed.map_or("-".into(), |c| c.to_string()),
                    p.high,
                    lag.unwrap_or("-".into())
                );
            }
            Ok(())
        }
        OffsetsCommand::Reset {
            group,
            to,
            topics,
            dry_run,
        } => {
            let moves = reset(config, &group, &to, &topics, dry_run)?;
            let verb = if dry_run { "would move" } else { "moved" };
            for p in &moves {
                println!(
                    "{} {}: {} -> {}",
                    p.topic,
                    p.partition,
                    p.committed.map_or("-".into(), |c| c.to_string()),
                    p.new.map_or("-".into(), |n| n.to_string())
                );
            }
            println!("{verb} {} partitions of group {group}", moves.len());
            Ok(())
        }
    }
}

/// The group's state and member count, as the broker describes it.
pub fn describe(consumer: &BaseConsumer, group: &str) -> anyhow::Result<(String, usize)> {
    let list = consumer.fetch_group_list(Some(group), TIMEOUT)?;
    Ok(list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .map(|g| (g.state().to_string(), g.members().len()))
        .unwrap_or_else(|| ("Dead".into(), 0)))
}

/// Committed offsets of the group (whose id the consumer carries) on `topics`, or on every
/// topic it has offsets for when none are named.
pub(crate) fn positions(
    consumer: &BaseConsumer,
    topics: &[String],
) -> anyhow::Result<Vec<PartitionOffsets>> {
    // One metadata request names every partition; watermarks are then asked only for the
    // partitions shown (a shared cluster has many topics this group never read).
    let metadata = consumer.fetch_metadata(None, TIMEOUT)?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        let wanted = if topics.is_empty() {
            !t.name().starts_with("__")
        } else {
            topics.iter().any(|n| n == t.name())
        };
        for p in t.partitions().iter().filter(|_| wanted) {
            tpl.add_partition(t.name(), p.id());
        }
    }
    for topic in topics {
        anyhow::ensure!(
            metadata.topics().iter().any(|t| t.name() == topic),
            "topic {topic} does not exist"
        );
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT)?;
    let mut out = Vec::new();
    for e in committed.elements() {
        let committed = match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        // Without named topics, only those the group has consumed are shown.
        if committed.is_none() && topics.is_empty() {
            continue;
        }
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), TIMEOUT)?;
        out.push(PartitionOffsets {
            topic: e.topic().to_string(),
            partition: e.partition(),
            committed,
            low,
            high,
            new: None,
        });
    }
    Ok(out)
}

/// Computes (and unless `dry_run` commits) the new offsets. Refused while the group has
/// members.
pub fn reset(
    config: &Config,
    group: &str,
    to: &ResetTo,
    topics: &[String],
    dry_run: bool,
) -> anyhow::Result<Vec<PartitionOffsets>> {
    let consumer = scan::reader(config, group)?;
    let (state, members) = describe(&consumer, group)?;
    anyhow::ensure!(
        members == 0,
        "group {group} has {members} members ({state}): stop its processor before a reset, or a running consumer overwrites the new offsets"
    );
    let mut moves = positions(&consumer, topics)?;
    anyhow::ensure!(
        !moves.is_empty(),
        "group {group} has no committed offsets; name the topics with --topic"
    );
    let mut by_time: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    if let Some(ms) = to.to_time {
        for topic in moves
            .iter()
            .map(|m| m.topic.clone())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let partitions = scan::partitions(&consumer, &topic)?;
            by_time.insert(
                topic.clone(),
                scan::offsets_for_time(&consumer, &topic, &partitions, ms)?,
            );
        }
    }
    let mut tpl = TopicPartitionList::new();
    for m in &mut moves {
        m.new = target(
            m,
            to,
            by_time
                .get(&m.topic)
                .and_then(|t| t.get(&m.partition))
                .copied(),
        );
        if let Some(new) = m.new {
            tpl.add_partition_offset(&m.topic, m.partition, Offset::Offset(new))?;
        }
    }
    if !dry_run && tpl.count() > 0 {
        consumer.commit(&tpl, CommitMode::Sync)?;
    }
    Ok(moves)
}

/// Where one partition moves (None: it cannot, e.g. a shift with nothing committed).
fn target(p: &PartitionOffsets, to: &ResetTo, at_time: Option<i64>) -> Option<i64> {
    let new = if to.to_earliest {
        p.low
    } else if to.to_latest {
        p.high
    } else if let Some(n) = to.shift {
        p.committed? + n
    } else {
        at_time.unwrap_or(p.high)
    };
    Some(new.clamp(p.low, p.high))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(committed: Option<i64>) -> PartitionOffsets {
        PartitionOffsets {
            topic: "t".into(),
            partition: 0,
            committed,
            low: 10,
            high: 100,
            new: None,
        }
    }

    /// The new offset of a partition at 50 (holding 10..100) for a reset.
    fn moved(to: ResetTo) -> Option<i64> {
        target(&at(Some(50)), &to, None)
    }

    const NONE: ResetTo = ResetTo {
        to_time: None,
        to_earliest: false,
        to_latest: false,
        shift: None,
    };

    #[test]
    fn targets_stay_within_the_partition() {
        let earliest = ResetTo {
            to_earliest: true,
            ..NONE
        };
        let latest = ResetTo {
            to_latest: true,
            ..NONE
        };
        let shifts = [(-20, 30), (-90, 10), (90, 100)];
        assert_eq!(moved(earliest), Some(10));
        assert_eq!(moved(latest), Some(100));
        for (by, to) in shifts {
            assert_eq!(
                moved(ResetTo {
                    shift: Some(by),
                    ..NONE
                }),
                Some(to),
                "shift {by}"
            );
        }
        let shift_one = ResetTo {
            shift: Some(1),
            ..NONE
        };
        assert_eq!(
            target(&at(None), &shift_one, None),
            None,
            "nothing to shift from"
        );
        let by_time = ResetTo {
            to_time: Some(1),
            ..NONE
        };
        assert_eq!(target(&at(None), &by_time, Some(42)), Some(42));
        assert_eq!(target(&at(None), &by_time, Some(500)), Some(100));
    }
}
