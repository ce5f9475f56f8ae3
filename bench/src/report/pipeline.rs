//! Report section for the whole pipeline: maximum rate, the open-loop loads, every process's
//! memory and CPU, the targets, and what limits it.

mod processes;

use std::fmt::Write as _;

use anyhow::bail;

use super::Report;
use super::sections::quantile;
use crate::cql_ceiling::CqlWorkload;
use crate::pipeline::{CALLS_PER_REQUEST, LOADS, Mode, PipelineResult};

pub const RSS_LIMIT_MIB: f64 = 100.0;

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// The quick mode's assertion: the pipeline ran in every mode and produced every number.
pub fn check_complete(runs: &[(Mode, Result<PipelineResult, String>)]) -> anyhow::Result<()> {
    if runs.is_empty() {
        bail!("pipeline not measured");
    }
    for (mode, run) in runs {
        check_one(run.as_ref()).map_err(|e| anyhow::anyhow!("pipeline ({}): {e}", mode.label()))?;
    }
    Ok(())
}

fn check_one(p: Result<&PipelineResult, &String>) -> anyhow::Result<()> {
    let p = match p {
        Ok(p) => p,
        Err(e) => bail!("{e}"),
    };
    if let Some(why) = &p.skipped {
        bail!("open-loop phases skipped: {why}");
    }
    for (what, v) in [
        ("statuses/s", p.status_rate),
        ("requests/s", p.request_rate),
        ("Kafka records per request", p.records_per_request()),
        ("CPU ms per request", p.cpu_ms_per_request()),
    ] {
        if !(v.is_finite() && v > 0.0) {
            bail!("{what} is {v}, expected a positive number");
        }
    }
    if p.loads.len() != LOADS.len() {
        bail!("{} of {} loads measured", p.loads.len(), LOADS.len());
    }
    for l in &p.loads {
        if l.latencies_ms.is_empty() {
            bail!("at {:.0}%: no latency samples", 100.0 * l.fraction);
        }
    }
    for pr in p.processes.iter().filter(|pr| pr.processor) {
        if !pr.peak_rss_mib.is_finite() || pr.peak_rss_mib <= 0.0 {
            bail!("no peak RSS for {}", pr.name);
        }
    }
    Ok(())
}

/// Rows of the targets table (issue 12) for the whole pipeline, from the chain's run.
pub fn target_rows(md: &mut String, r: &Report) -> std::fmt::Result {
    let Some((_, run)) = r.pipelines.iter().find(|(m, _)| *m == Mode::Chain) else {
        return writeln!(
            md,
            "| whole pipeline (chain) | not measured in this run | open |"
        );
    };
    let p = match run {
        Ok(p) => p,
        Err(e) => return writeln!(md, "| whole pipeline (chain) | failed: {e} | **missed** |"),
    };
    let sustained_s = if p.complete { p.seconds } else { 0.0 };
    writeln!(
        md,
        "| ≥ 2,000 requests/s (6,000 provider calls/s) sustained 5 min | {:.0} requests/s over \
         {:.0} s ({} requests drained) | {} |",
        p.request_rate,
        p.seconds,
        p.requests,
        verdict(p.request_rate >= 2_000.0 && sustained_s >= 300.0)
    )?;
    let lost = p.lost();
    writeln!(
        md,
        "| 0 lost, 0 duplicate sends | {lost} without an outcome; {} duplicate provider \
         calls | {} |",
        p.duplicate_sends,
        verdict(lost == 0 && p.duplicate_sends == 0)
    )?;
    let half = p.at_half().map(|l| quantile(&l.latencies_ms, 0.99));
    writeln!(
        md,
        "| p99 intake to SENT ≤ 500 ms at 50% | {} | {} |",
        half.map_or("no 50% phase".into(), |v| format!("{v:.0} ms")),
        verdict(half.is_some_and(|v| v <= 500.0))
    )?;
    let cpu = p.cpu_ms_per_request();
    writeln!(
        md,
        "| ≤ 0.8 ms machine CPU per request | {cpu:.2} ms | {} |",
        verdict(cpu <= 0.8)
    )?;
    let records = p.records_per_request();
    let forwarded = p.forwarded_share();
    writeln!(
        md,
        "| ≤ 8 Kafka records written per request (+1 when forwarded) | {records:.2} \
         ({:.0}% of requests forwarded, {:.0}% written with CRC32) | {} |",
        100.0 * forwarded,
        100.0 * p.crc32_requests as f64 / p.requests.max(1) as f64,
        verdict(records <= 8.0 + forwarded + 1e-9)
    )?;
    let lwt_per_100 = 100.0 * p.per_request(p.counters.cql.get("lwt").copied().unwrap_or(0.0));
    writeln!(
        md,
        "| no Paxos round per record (≤ 1 per 100 requests) | {lwt_per_100:.3} per 100 \
         requests | {} |",
        verdict(lwt_per_100 <= 1.0)
    )?;
    let over: Vec<String> = p
        .processes
        .iter()
        .filter(|pr| pr.processor && pr.peak_rss_mib >= RSS_LIMIT_MIB)
        .map(|pr| format!("{} {:.0} MiB", pr.name, pr.peak_rss_mib))
        .collect();
    let top = p
        .processes
        .iter()
        .filter(|pr| pr.processor)
        .max_by(|a, b| a.peak_rss_mib.total_cmp(&b.peak_rss_mib));
    let measured = if over.is_empty() {
        top.map_or(String::new(), |t| {
            format!("largest {} {:.0} MiB", t.name, t.peak_rss_mib)
        })
    } else {
        over.join(", ")
    };
    writeln!(
        md,
        "| every processor < 100 MiB RSS | {measured} | {} |",
        verdict(over.is_empty())
    )
}

pub fn section(md: &mut String, r: &Report) -> std::fmt::Result {
    writeln!(
        md,
        "\n## Whole pipeline: maximum rate, then open loop at 25/50/75/90% of it, to the provider sandbox\n"
    )?;
    if r.pipelines.is_empty() {
        return writeln!(md, "Not measured in this run (`--only`).");
    }
    writeln!(
        md,
        "Two deployments of the same stages, each on topics and a CQL keyspace private to its \
         run: **chain** (the default: `notify run chain` runs forwarding, preferences, dedup, \
         templates, rate limits and fan-out in one process, in Kafka transactions) and \
         **split** (one process per stage, a topic between each two, as `NOTIFY_SPLIT=1 make \
         dev`). Both with deliver-apns, deliver-fcm, deliver-sms, deliver-email and retry, \
         delivering to a `notify sandbox` process (credentials generated as `make dev` does; \
         no injected faults; no provider rate limit; no per-user rate limit rule, as in issue \
         12's measurement). Workload: users with an iOS and an Android device and a phone \
         number, every request to push and SMS, so each request is {CALLS_PER_REQUEST} \
         provider calls; half the requests written with the murmur2 partitioner (as Java \
         clients) and half with librdkafka's default CRC32 (as Python and Go clients), so \
         about half arrive off their user's partition and are forwarded once. Duplicate sends \
         are counted by the sandbox (a message with the same provider, recipient and body \
         as an earlier one).\n"
    )?;
    for (mode, run) in &r.pipelines {
        writeln!(md, "\n### {}\n", mode.label())?;
        match run {
            Err(e) => writeln!(md, "**Failed**: {e}")?,
            Ok(p) => one(md, p, r.cql_ceiling.as_ref().and_then(|c| c.as_ref().ok()))?,
        }
    }
    writeln!(md, "\n### Targets (chain)\n")?;
    writeln!(md, "| target | measured | verdict |")?;
    writeln!(md, "|---|---|---|")?;
    target_rows(md, r)
}

fn one(md: &mut String, p: &PipelineResult, cql: Option<&Vec<CqlWorkload>>) -> std::fmt::Result {
    writeln!(
        md,
        "**Maximum rate**: {} requests ({} users) pre-filled, drained by the running pipeline; \
         rate = terminal statuses (every outcome but ACCEPTED, DEFERRED and RETRY_SCHEDULED) \
         per second from the first to the last, by the broker's append time on the status \
         topic.\n",
        p.requests, p.users
    )?;
    writeln!(
        md,
        "| requests | terminal statuses | messages with an outcome | lost | provider calls | duplicate sends | seconds | requests/s | drained |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} | {:.1} | {:.0} | {} |",
        p.requests,
        p.terminal,
        p.terminal_messages,
        p.lost(),
        p.provider_calls,
        p.duplicate_sends,
        p.seconds,
        p.request_rate,
        if p.complete {
            "yes"
        } else {
            "**no (time cap)**"
        }
    )?;
    let outcomes: Vec<String> = p.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    writeln!(md, "\nOutcomes of the drain: {}.", outcomes.join(", "))?;
    work(md, p)?;
    if let Some(cql) = cql {
        cql_share(md, p, cql)?;
    }
    loads(md, p)?;
    processes::processes(md, p)?;
    processes::limits(md, p)
}

/// What a request cost: Kafka records, CQL statements, CPU by process.
fn work(md: &mut String, p: &PipelineResult) -> std::fmt::Result {
    writeln!(
        md,
        "\n**Work per request** (counters of every process at the end of the drain, over the \
         {} requests; CPU over the drain window, every process on the machine):\n",
        p.requests
    )?;
    writeln!(md, "| what | per request |")?;
    writeln!(md, "|---|---:|")?;
    writeln!(
        md,
        "| Kafka records written (intake included) | {:.2} |",
        p.records_per_request()
    )?;
    for (topic, n) in &p.counters.produced {
        if *n > 0.0 {
            writeln!(md, "| … to `{topic}` | {:.2} |", p.per_request(*n))?;
        }
    }
    writeln!(
        md,
        "| requests forwarded to their user's partition | {:.2} |",
        p.forwarded_share()
    )?;
    for (kind, n) in &p.counters.cql {
        writeln!(md, "| CQL {kind} statements | {:.3} |", p.per_request(*n))?;
    }
    writeln!(
        md,
        "| CQL rows written inside batches | {:.2} |",
        p.per_request(p.counters.cql_batched_rows)
    )?;
    writeln!(md, "| machine CPU, ms | {:.3} |", p.cpu_ms_per_request())?;
    for pr in &p.processes {
        if pr.cores.is_finite() {
            writeln!(
                md,
                "| … {} CPU, ms | {:.3} |",
                pr.name,
                1_000.0 * pr.cores * p.seconds / p.requests.max(1) as f64
            )?;
        }
    }
    Ok(())
}

/// The pipeline's CQL work per request against the CQL ceiling of the same run: what the
/// database would spend on it at the ceiling's cost per row, and the share of the ceiling's
/// rate the drain used.
fn cql_share(md: &mut String, p: &PipelineResult, cql: &[CqlWorkload]) -> std::fmt::Result {
    let cost = |label: &str| cql.iter().find(|w| w.label.starts_with(label));
    let (Some(batch), Some(write), Some(read)) = (cost("unlogged"), cost("one row"), cost("point"))
    else {
        return Ok(());
    };
    let count = |kind: &str| p.per_request(p.counters.cql.get(kind).copied().unwrap_or(0.0));
    let work = [
        (p.per_request(p.counters.cql_batched_rows), batch),
        (count("write"), write),
        (count("read"), read),
    ];
    let predicted_ms: f64 = work.iter().map(|(n, w)| n * w.db_us_per_row).sum::<f64>() / 1e3;
    let share: f64 = work
        .iter()
        .map(|(n, w)| n * p.request_rate / w.rows_per_s())
        .sum();
    let measured_ms = p
        .processes
        .iter()
        .find(|pr| pr.name == "Cassandra" && pr.cores.is_finite())
        .map(|pr| 1_000.0 * pr.cores * p.seconds / p.requests.max(1) as f64);
    writeln!(
        md,
        "
**CQL work against the CQL ceiling** (same run, see the ceiling section): at the \
         ceiling's cost per row, a request's batched rows, writes and reads ({:.2}, {:.3}, \
         {:.3}) would take the database {predicted_ms:.3} ms of CPU; it took {} (Paxos rounds, \
         flushes and compaction, and waiting for CPU on a saturated box are the difference). \
         At the drained rate the pipeline used {:.0}% of the ceiling's rate for that mix.",
        work[0].0,
        work[1].0,
        work[2].0,
        measured_ms.map_or("-".into(), |m| format!("{m:.3} ms")),
        100.0 * share
    )
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
