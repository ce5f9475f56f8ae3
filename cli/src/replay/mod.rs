//! `notify replay`: copy a range of a topic (requests, or a channel topic) back into the
//! pipeline. Copies carry `notify.replay.run`; dedup lets them through and the delivery
//! ledger sends only the messages that were never delivered, so a replay fills gaps and
//! repeats nothing. `--force` makes new notifications instead (derived event ids).

mod checkpoint;
mod copy;
mod range;
mod select;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use notify_runtime::Config;
use notify_runtime::records::Outcome;

pub use checkpoint::{Checkpoint, Counters, Plan, default_state_dir};
pub use copy::{RUN_HEADER, SOURCE_HEADER, run_group};
pub use range::{Bound, parse_bound};
pub use select::{Payload, Selection};

use crate::Exit;

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Topic to copy from: the requests topic or a channel topic (notify.channel.*.v1).
    #[arg(long, default_value = "notify.requests.v1")]
    pub source: String,
    /// Topic to copy into (default: the source topic).
    #[arg(long)]
    pub target: Option<String>,
    /// Start: an offset for every partition (`1200`), `P:OFFSET,...` (only those partitions),
    /// an RFC 3339 time or an age (`2h`), resolved per partition with offsets-for-times.
    /// Default: the beginning.
    #[arg(long, value_parser = parse_bound)]
    pub from: Option<Bound>,
    /// End, exclusive (same forms; unlisted partitions read to the end). Default: the end as
    /// of the start of the run.
    #[arg(long, value_parser = parse_bound)]
    pub to: Option<Bound>,
    /// Only these categories (repeatable).
    #[arg(long = "category")]
    pub categories: Vec<String>,
    /// Only these user ids (repeatable).
    #[arg(long = "user")]
    pub users: Vec<String>,
    /// Only these template ids (repeatable; requests only).
    #[arg(long = "template")]
    pub templates: Vec<String>,
    /// Only notifications one of whose messages last ended in this outcome on the status
    /// topic (FAILED, DEAD_LETTERED, ...; repeatable).
    #[arg(long = "outcome", value_parser = select::parse_outcome)]
    pub outcomes: Vec<Outcome>,
    /// Only the event ids listed in this file (one a line, `#` comments).
    #[arg(long)]
    pub event_ids: Option<PathBuf>,
    /// Status topic read by --outcome (default: runtime.status_topic).
    #[arg(long)]
    pub status_topic: Option<String>,
    /// At most this many records a second (`500` or `500/s`).
    #[arg(long, value_parser = crate::progress::parse_rate)]
    pub rate: Option<f64>,
    /// Read and count, write nothing; say what the delivery ledger would send and skip.
    #[arg(long)]
    pub dry_run: bool,
    /// A deliberate resend: copies get derived event ids (`<id>/replay-<run>`), so nothing is
    /// skipped as already delivered. Asks for confirmation unless --yes.
    #[arg(long)]
    pub force: bool,
    /// Confirm --force without asking (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Copies of expired requests get no expiry (by default they are not copied: they stay
    /// expired).
    #[arg(long)]
    pub ignore_expiry: bool,
    /// Continue an interrupted run from its checkpoint (range and filters come from it).
    #[arg(long, value_name = "RUN_ID", conflicts_with_all = ["from", "to", "categories", "users",
        "templates", "outcomes", "event_ids", "dry_run", "force", "ignore_expiry", "target"])]
    pub resume: Option<String>,
    /// Where checkpoints live (default: $XDG_STATE_HOME/notify/replay or .run/replay).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Runs `notify replay`; prints the summary. Interrupted: exit code 130, resumable.
pub async fn execute(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let mut checkpoint = match &args.resume {
        Some(run) => {
            let mut c = Checkpoint::load(&state_dir, run)?;
            if c.finished {
                println!("replay run {run} has already finished");
                print_summary(&c, None);
                return Ok(());
            }
            let moved = copy::reconcile(config, &mut c)?;
            eprintln!(
                "resuming replay run {run}: {} -> {}, {} records left{}",
                c.plan.source,
                c.plan.target,
                c.remaining(),
                if moved > 0 {
                    " (position taken from Kafka, ahead of the file)"
                } else {
                    ""
                }
            );
            c
        }
        None => Checkpoint::new(plan(config, &args).await?),
    };
    let run = checkpoint.plan.run_id.clone();
    if args.resume.is_none() {
        eprintln!(
            "replay run {run}: {} -> {}, {} partitions, up to {} records{}",
            checkpoint.plan.source,
            checkpoint.plan.target,
            checkpoint.plan.ranges.len(),
            checkpoint.remaining(),
            if args.dry_run {
                " (dry run: nothing is written)"
            } else {
                ""
            }
        );
        if args.force && !args.dry_run {
            confirm_force(&args, checkpoint.remaining(), &run)?;
        }
    }
    let stop = notify_runtime::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: finishing the current transaction and writing the checkpoint");
            on_signal.cancel();
        }
    });
    if args.dry_run {
        let ledger = crate::ledger::Ledger::connect(config).await?;
        let end = copy::copy(config, &mut checkpoint, None, None, stop, Some(&ledger)).await?;
        print_summary(&checkpoint, Some(&end.ledger));
        return if end.interrupted {
            Err(Exit(130).into())
        } else {
            Ok(())
        };
    }
    checkpoint.save(&state_dir)?;
    let end = copy::copy(
        config,
        &mut checkpoint,
        Some(&state_dir),
        args.rate,
        stop,
        None,
    )
    .await?;
    print_summary(&checkpoint, None);
    if end.interrupted {
        eprintln!(
            "replay run {run} interrupted; checkpoint {}; continue with `notify replay --resume {run}`",
            Checkpoint::path(&state_dir, &run).display()
        );
        return Err(Exit(130).into());
    }
    Ok(())
}

/// Resolves ranges and the selection once, for the run and any resume of it.
async fn plan(config: &Config, args: &ReplayArgs) -> anyhow::Result<Plan> {
    anyhow::ensure!(
        args.templates.is_empty() || !args.source.contains(".channel."),
        "--template applies to requests; channel messages carry no template id"
    );
    let run_id = checkpoint::new_run_id();
    let consumer = crate::scan::reader(config, &run_group(config, &run_id))?;
    let ranges = range::resolve(
        &consumer,
        &args.source,
        args.from.as_ref(),
        args.to.as_ref(),
    )?;
    let event_ids = match &args.event_ids {
        Some(path) => Some(select::read_event_ids(path)?),
        None => None,
    };
    let outcome_matches = if args.outcomes.is_empty() {
        None
    } else {
        let topic = args
            .status_topic
            .clone()
            .unwrap_or_else(|| config.runtime.status_topic.clone());
        let since = match &args.from {
            Some(Bound::Time(ms)) => Some(*ms),
            _ => None,
        };
        Some(select::outcome_matches(config, &topic, since, &args.outcomes).await?)
    };
    Ok(Plan {
        run_id,
        source: args.source.clone(),
        target: args.target.clone().unwrap_or_else(|| args.source.clone()),
        ranges,
        selection: Selection {
            categories: args.categories.clone(),
            users: args.users.clone(),
            templates: args.templates.clone(),
            event_ids,
            outcome_matches,
            ignore_expiry: args.ignore_expiry,
        },
        force: args.force,
        created_at_ms: notify_runtime::now_ms(),
    })
}

fn confirm_force(args: &ReplayArgs, records: u64, run: &str) -> anyhow::Result<()> {
    if args.yes {
        return Ok(());
    }
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "--force resends up to {records} notifications as new ones; stdin is not a terminal, so confirm with --yes"
    );
    eprint!(
        "--force: up to {records} records become new notifications (event ids <id>/replay-{run}) and are sent again, delivered or not. Type yes to go on: "
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    anyhow::ensure!(answer.trim() == "yes", "not confirmed; nothing was copied");
    Ok(())
}

fn print_summary(c: &Checkpoint, ledger: Option<&std::collections::BTreeMap<String, u64>>) {
    let t = c.totals();
    let verb = if ledger.is_some() {
        "would write"
    } else {
        "written"
    };
    println!(
        "run {}: read {}, {verb} {}, filtered {}",
        c.plan.run_id,
        t.read,
        t.written,
        t.filtered_total()
    );
    for (reason, n) in &t.filtered {
        println!("  filtered ({reason}): {n}");
    }
    if let Some(ledger) = ledger {
        let messages: u64 = ledger
            .iter()
            .filter(|(k, _)| k.starts_with("send"))
            .map(|(_, n)| n)
            .sum();
        println!("delivery ledger: {messages} would be sent");
        for (decision, n) in ledger {
            println!("  {decision}: {n}");
        }
    }
}
