//! `notify dlq inspect|redrive`: look at dead letters and send chosen ones back to where they
//! came from (`notify.source.topic`). Redriven records keep their bytes, so their event id,
//! and the delivery ledger still prevents a second send.

mod read;
mod redrive;

use clap::{Args, Subcommand, ValueEnum};
use notify_runtime::Config;

pub use read::{DeadLetterView, read};
pub use redrive::{RedriveReport, redrive};

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters with their reasons.
    Inspect {
        #[command(flatten)]
        filter: Filter,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Send the selected dead letters back to their source topic.
    Redrive {
        #[command(flatten)]
        filter: Filter,
        /// Show what would move without producing anything.
        #[arg(long)]
        dry_run: bool,
        /// Required when no filter narrows the selection: redrive every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    /// One JSON object a line.
    Json,
}

/// Which dead letters. Every given criterion must hold.
#[derive(Debug, Clone, Default, Args)]
pub struct Filter {
    /// The dead-letter topic (default: runtime.dlq_topic of the configuration).
    #[arg(long)]
    pub topic: Option<String>,
    /// notify.error.class (decode, schema, validation, render, permanent, retries_exhausted); repeatable.
    #[arg(long = "class")]
    pub classes: Vec<String>,
    /// notify.error.stage (the processor that gave up); repeatable.
    #[arg(long = "stage")]
    pub stages: Vec<String>,
    /// Event id (read from the record when it decodes); repeatable.
    #[arg(long = "event-id")]
    pub event_ids: Vec<String>,
    /// Failed at or after: epoch ms, RFC 3339, or an age like 30m, 2h, 7d.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Failed before (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
    /// Exact records, as PARTITION:OFFSET of the dead-letter topic; repeatable.
    #[arg(long = "at", value_parser = parse_position)]
    pub positions: Vec<(i32, i64)>,
    /// At most this many (the oldest first per partition).
    #[arg(long)]
    pub limit: Option<usize>,
}

impl Filter {
    /// True when something narrows the selection (a guard for `redrive`).
    pub fn is_narrowed(&self) -> bool {
        !(self.classes.is_empty()
            && self.stages.is_empty()
            && self.event_ids.is_empty()
            && self.positions.is_empty()
            && self.since.is_none()
            && self.until.is_none())
    }

    pub fn matches(&self, v: &DeadLetterView) -> bool {
        let any =
            |wanted: &[String], got: &str| wanted.is_empty() || wanted.iter().any(|w| w == got);
        let event_ok = self.event_ids.is_empty()
            || v.event_id
                .as_ref()
                .is_some_and(|e| self.event_ids.contains(e));
        let at = v.failed_at_ms;
        any(&self.classes, &v.class)
            && any(&self.stages, &v.stage)
            && event_ok
            && self.since.is_none_or(|s| at.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| at.is_some_and(|t| t < u))
            && (self.positions.is_empty() || self.positions.contains(&(v.partition, v.offset)))
    }
}

pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let unit = |c: char| match c {
        's' => Some(1_000i64),
        'm' => Some(60_000),
        'h' => Some(3_600_000),
        'd' => Some(86_400_000),
        _ => None,
    };
    if let Some(last) = s.chars().last()
        && let Some(ms) = unit(last)
        && let Ok(n) = s[..s.len() - 1].parse::<i64>()
    {
        return Ok(notify_runtime::now_ms() - n * ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("{s:?} is not epoch ms, RFC 3339 or an age like 2h"))
}

fn parse_position(s: &str) -> Result<(i32, i64), String> {
    let (p, o) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not PARTITION:OFFSET"))?;
    Ok((
        p.parse().map_err(|_| format!("bad partition in {s:?}"))?,
        o.parse().map_err(|_| format!("bad offset in {s:?}"))?,
    ))
}

/// Runs one `notify dlq` command.
pub async fn execute(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::Inspect { filter, format } => {
            let found = read(config, &filter).await?;
            match format {
                Format::Json => {
                    for v in &found {
                        println!("{}", serde_json::to_string(v)?);
                    }
                }
                Format::Table => read::print_table(&found),
            }
            eprintln!("{} dead letters", found.len());
            Ok(())
        }
        DlqCommand::Redrive {
            filter,
            dry_run,
            all,
        } => {
            if !filter.is_narrowed() && !all {
                anyhow::bail!(
                    "nothing narrows the selection: give --class, --stage, --event-id, --at, --since/--until, or --all"
                );
            }
            let mut progress: Option<crate::progress::Progress> = None;
            let report = redrive(config, &filter, dry_run, |done, total| {
                progress
                    .get_or_insert_with(|| {
                        crate::progress::Progress::new("redriven", Some(total as u64))
                    })
                    .set(done as u64);
            })
            .await?;
            if let Some(p) = &progress {
                p.finish();
            }
            for skipped in &report.skipped {
                eprintln!("skipped {skipped}");
            }
            let verb = if dry_run { "would move" } else { "moved" };
            println!(
                "{verb} {} of {} selected dead letters; {} skipped",
                report.moved,
                report.selected,
                report.skipped.len()
            );
            for (topic, n) in &report.by_topic {
                println!("  {n} -> {topic}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_positions_parse() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        let two_hours_ago = parse_time("2h").unwrap();
        assert!((notify_runtime::now_ms() - two_hours_ago - 7_200_000).abs() < 60_000);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_position("3:42"), Ok((3, 42)));
        assert!(parse_position("3").is_err());
    }
}
