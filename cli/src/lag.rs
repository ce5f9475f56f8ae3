//! `notify lag`: how far each processor's consumer group is behind, per topic and partition,
//! and whether that is shrinking, from two looks at the committed offsets an interval apart.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use notify_runtime::Config;
use rdkafka::consumer::Consumer;

use crate::offsets::positions;
use crate::scan;

#[derive(Debug, Clone, Args)]
pub struct LagArgs {
    /// Consumer groups (repeatable; default: the group of every processor that has one).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Only these topics (repeatable; default: every topic a group has offsets for).
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Time between the two looks that tell whether lag shrinks (`5s`, `500ms`, `2`).
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    pub interval: Duration,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    match n.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!("{s:?} is not an interval like 5s or 500ms")),
    }
}

/// (group, topic, partition) → records behind the log end.
pub type Sample = BTreeMap<(String, String, i32), i64>;

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagRow {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub lag: i64,
    /// Lag now minus lag an interval ago.
    pub change: i64,
}

impl LagRow {
    pub fn trend(&self) -> &'static str {
        match (self.lag, self.change) {
            (0, _) => "caught up",
            (_, c) if c < 0 => "shrinking",
            (_, c) if c > 0 => "growing",
            _ => "steady",
        }
    }
}

/// The groups of every processor this binary runs that the cluster knows.
pub fn processor_groups(config: &Config) -> anyhow::Result<Vec<String>> {
    let consumer = scan::reader(config, &format!("{}-lag", config.kafka.group_prefix))?;
    let listed = consumer.fetch_group_list(None, Duration::from_secs(10))?;
    let known: Vec<String> = crate::run::PROCESSORS
        .iter()
        .map(|p| config.group_id(p))
        .filter(|g| listed.groups().iter().any(|l| l.name() == g))
        .collect();
    Ok(known)
}

/// The lag of each group's committed offsets (a partition without one: all it holds).
pub fn sample(config: &Config, groups: &[String], topics: &[String]) -> anyhow::Result<Sample> {
    let mut out = Sample::new();
    for group in groups {
        let consumer = scan::reader(config, group)?;
        for p in positions(&consumer, topics)? {
            let lag = p.high - p.committed.unwrap_or(p.low).max(p.low);
            out.insert((group.clone(), p.topic, p.partition), lag.max(0));
        }
    }
    Ok(out)
}

/// Rows of the later sample, each with its change since the earlier one.
pub fn compare(before: &Sample, after: &Sample) -> Vec<LagRow> {
    after
        .iter()
        .map(|((group, topic, partition), lag)| LagRow {
            group: group.clone(),
            topic: topic.clone(),
            partition: *partition,
            lag: *lag,
            change: lag
                - before
                    .get(&(group.clone(), topic.clone(), *partition))
                    .copied()
                    .unwrap_or(*lag),
        })
        .collect()
}

pub fn table(rows: &[LagRow], interval: Duration) -> String {
    let mut out = format!(
        "{:<28} {:<36} {:>4} {:>10} {:>9} trend (over {}s)\n",
        "GROUP",
        "TOPIC",
        "PART",
        "LAG",
        "CHANGE",
        interval.as_secs_f64()
    );
    for r in rows {
        out.push_str(&format!(
            "{:<28} {:<36} {:>4} {:>10} {:>+9} {}\n",
            r.group,
            r.topic,
            r.partition,
            r.lag,
            r.change,
            r.trend()
        ));
    }
    let total: i64 = rows.iter().map(|r| r.lag).sum();
    out.push_str(&format!(
        "{} partitions, {total} records behind\n",
        rows.len()
    ));
    out
}

pub async fn execute(config: &Config, args: &LagArgs) -> anyhow::Result<()> {
    let groups = if args.groups.is_empty() {
        processor_groups(config)?
    } else {
        args.groups.clone()
    };
    anyhow::ensure!(
        !groups.is_empty(),
        "no processor group exists yet (prefix {}); name one with --group",
        config.kafka.group_prefix
    );
    let before = sample(config, &groups, &args.topics)?;
    tokio::time::sleep(args.interval).await;
    let after = sample(config, &groups, &args.topics)?;
    print!("{}", table(&compare(&before, &after), args.interval));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn trends_follow_the_change() {
        let key = |p: i32| ("g".to_string(), "t".to_string(), p);
        let before = Sample::from([(key(0), 10), (key(1), 10), (key(2), 5), (key(3), 4)]);
        let after = Sample::from([(key(0), 4), (key(1), 12), (key(2), 0), (key(3), 4)]);
        let trends: Vec<_> = compare(&before, &after)
            .iter()
            .map(|r| (r.change, r.trend()))
            .collect();
        assert_eq!(
            trends,
            [
                (-6, "shrinking"),
                (2, "growing"),
                (-5, "caught up"),
                (0, "steady")
            ]
        );
    }
}
