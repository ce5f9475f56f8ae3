//! Report section for the whole pipeline: maximum rate, the open-loop loads, every process's
//! memory and CPU, the targets, and what limits it.

mod processes;

use std::fmt::Write as _;

use anyhow::bail;

use super::Report;
use super::sections::quantile;
use crate::pipeline::{LOADS, PipelineResult};

pub const RSS_LIMIT_MIB: f64 = 100.0;

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// The quick mode's assertion: the pipeline ran and produced every number.
pub fn check_complete(p: Option<&Result<PipelineResult, String>>) -> anyhow::Result<()> {
    let p = match p {
        Some(Ok(p)) => p,
        Some(Err(e)) => bail!("pipeline: {e}"),
        None => bail!("pipeline not measured"),
    };
    if let Some(why) = &p.skipped {
        bail!("pipeline: open-loop phases skipped: {why}");
    }
    for (what, v) in [
        ("statuses/s", p.status_rate),
        ("requests/s", p.request_rate),
    ] {
        if !(v.is_finite() && v > 0.0) {
            bail!("pipeline {what} is {v}, expected a positive number");
        }
    }
    if p.loads.len() != LOADS.len() {
        bail!(
            "pipeline: {} of {} loads measured",
            p.loads.len(),
            LOADS.len()
        );
    }
    for l in &p.loads {
        if l.latencies_ms.is_empty() {
            bail!("pipeline at {:.0}%: no latency samples", 100.0 * l.fraction);
        }
    }
    for pr in p.processes.iter().filter(|pr| pr.processor) {
        if !pr.peak_rss_mib.is_finite() || pr.peak_rss_mib <= 0.0 {
            bail!("pipeline: no peak RSS for {}", pr.name);
        }
    }
    Ok(())
}

/// Rows of the targets table (issue 7) for the whole pipeline.
pub fn target_rows(md: &mut String, r: &Report) -> std::fmt::Result {
    let target = "pipeline ≥ 10,000/s sustained, p99 ≤ 250 ms at 50%";
    let Some(Ok(p)) = &r.pipeline else {
        return writeln!(md, "| {target} | not measured in this run | open |");
    };
    let sustained = p.max_sustainable().map_or(0.0, |l| l.rate);
    let half = p.at_half().map(|l| quantile(&l.latencies_ms, 0.99));
    let p99 = half.map_or("no 50% phase".into(), |v| format!("{v:.0} ms"));
    writeln!(
        md,
        "| {target} | {sustained:.0} requests/s sustained; p99 {p99} at 50% | {} |",
        verdict(sustained >= 10_000.0 && half.is_some_and(|v| v <= 250.0))
    )?;
    let over: Vec<String> = p
        .processes
        .iter()
        .filter(|pr| pr.processor && pr.name != "preferences" && pr.peak_rss_mib >= RSS_LIMIT_MIB)
        .map(|pr| format!("{} {:.0} MiB", pr.name, pr.peak_rss_mib))
        .collect();
    let measured = if over.is_empty() {
        let top = p
            .processes
            .iter()
            .filter(|pr| pr.processor && pr.name != "preferences")
            .max_by(|a, b| a.peak_rss_mib.total_cmp(&b.peak_rss_mib));
        top.map_or(String::new(), |t| {
            format!("pipeline: largest {} {:.0} MiB", t.name, t.peak_rss_mib)
        })
    } else {
        format!("pipeline: {}", over.join(", "))
    };
    writeln!(
        md,
        "| every processor < 100 MiB RSS (preference table excepted) | {measured} | {} |",
        verdict(over.is_empty())
    )
}

pub fn section(md: &mut String, r: &Report) -> std::fmt::Result {
    writeln!(
        md,
        "\n## Whole pipeline, open loop at 25/50/75/90% of max, to the provider sandbox\n"
    )?;
    let p = match &r.pipeline {
        None => return writeln!(md, "Not measured in this run (`--only`)."),
        Some(Err(e)) => return writeln!(md, "**Failed**: {e}"),
        Some(Ok(p)) => p,
    };
    writeln!(
        md,
        "Every processor runs as its own process (`notify run <name>`, as `make dev` does): \
         preferences, dedup, templates, ratelimit, fanout, deliver-apns, deliver-fcm, \
         deliver-sms, deliver-email and retry, on topics and a CQL keyspace private to this \
         run, delivering to a `notify sandbox` process started by the harness (credentials \
         generated as `make dev` does; no injected faults or latency; no provider rate limit, \
         `rate_per_sec = 0`). Rate limit rule: 1,000,000 per user per hour (a CQL round trip per \
         record, never a limit here). {} user profiles, 10% re-sent event ids. E-mail goes to \
         the sandbox's SendGrid stand-in, not to the stack's SMTP server: aiosmtpd is one Python \
         process writing every message into the shared Maildir that other tests scan, so tens \
         of thousands of bench mails would slow their tests and measure Python's Maildir writes \
         rather than the pipeline (its own rate was not measured here).\n",
        p.users
    )?;
    writeln!(
        md,
        "**Maximum rate**: {} requests pre-filled, drained by the running pipeline; rate = \
         terminal statuses (every outcome but ACCEPTED, DEFERRED and RETRY_SCHEDULED) per \
         second from the first to the last, by the broker's append time on the status topic.\n",
        p.requests
    )?;
    writeln!(
        md,
        "| requests | terminal statuses | seconds | statuses/s | requests/s | drained |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---|")?;
    writeln!(
        md,
        "| {} | {} | {:.1} | {:.0} | {:.0} | {} |",
        p.requests,
        p.terminal,
        p.seconds,
        p.status_rate,
        p.request_rate,
        if p.complete {
            "yes"
        } else {
            "**no (time cap)**"
        }
    )?;
    let outcomes: Vec<String> = p.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    writeln!(md, "\nOutcomes of the drain: {}.", outcomes.join(", "))?;
    loads(md, p)?;
    processes::processes(md, p)?;
    writeln!(md, "\n**Targets**\n")?;
    writeln!(md, "| target | measured | verdict |")?;
    writeln!(md, "|---|---|---|")?;
    target_rows(md, r)?;
    processes::limits(md, p)
}

fn loads(md: &mut String, p: &PipelineResult) -> std::fmt::Result {
    if let Some(why) = &p.skipped {
        return writeln!(md, "\n**Open-loop phases not run**: {why}.");
    }
    writeln!(
        md,
        "\n**Open loop**: a paced producer sends requests at a fraction of the maximum request \
         rate for {:.0} s each, stamping `created_at` as it sends (its producer lingers up to \
         20 ms, which the latency includes). Latency = append time of \
         each SENT status minus its request's `created_at` (requests created in the phase). \
         Backlog = records on every processor's input topics not yet consumed plus records in \
         flight, from the processors' own metrics every 250 ms; growth = its least-squares \
         slope over the phase (after the first fifth) times the phase length. Sustainable = \
         growth under 5% of the requests sent (+10) and the backlog drained after the phase.\n",
        p.loads.first().map_or(0.0, |l| l.seconds)
    )?;
    writeln!(
        md,
        "| load | requests/s offered | sent | statuses/s in phase | SENT samples | p50 ms | p99 ms | peak backlog | backlog growth | drained after s | sustainable |"
    )?;
    writeln!(
        md,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )?;
    for l in &p.loads {
        writeln!(
            md,
            "| {:.0}% | {:.0} | {} | {:.0} | {} | {:.0} | {:.0} | {} | {:.0} | {} | {} |",
            100.0 * l.fraction,
            l.rate,
            l.sent,
            l.statuses_per_s,
            l.latencies_ms.len(),
            quantile(&l.latencies_ms, 0.5),
            quantile(&l.latencies_ms, 0.99),
            l.backlog.iter().map(|b| b.1).max().unwrap_or(0),
            l.growth,
            if l.drained {
                format!("{:.1}", l.drain_s)
            } else {
                format!("not in {:.0}", l.drain_s)
            },
            if l.sustainable { "yes" } else { "**no**" }
        )?;
    }
    match p.max_sustainable() {
        Some(l) => writeln!(
            md,
            "\nMaximum sustainable rate measured: **{:.0} requests/s** ({:.0}% of the maximum; \
             the highest load sustained with every lower load sustained too).",
            l.rate,
            100.0 * l.fraction
        ),
        None => writeln!(
            md,
            "\nNo load was sustained: even the lowest phase's backlog grew, so the \
             sustainable rate is below it."
        ),
    }
}
