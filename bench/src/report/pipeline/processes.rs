//! Every process of the pipeline run: memory, CPU share, and what that says limits it.

use std::fmt::Write as _;

use super::RSS_LIMIT_MIB;
use crate::pipeline::{PipelineResult, Process};

fn role(p: &Process) -> &'static str {
    match (p.processor, p.name.as_str()) {
        (true, _) => "processor",
        (false, "sandbox") => "provider sandbox",
        _ => "stack (shared)",
    }
}

pub fn processes(md: &mut String, p: &PipelineResult) -> std::fmt::Result {
    writeln!(
        md,
        "\n**Processes**: peak RSS (`VmHWM`) at the end of the run; CPU as cores used (1.0 = \
         one core, user+system from /proc) from the first terminal status of the drain to the \
         last. The whole machine was {:.2} of {} cores busy over the same window. Lanes \
         busy = time records spent in `process()` (waiting for the CQL database or the \
         provider included) over lanes × drain seconds; lanes = `runtime.lanes` ({}; 64 for \
         the chain and ratelimit, {} for deliver-*, which wait on round trips per record) \
         except dedup's own 256: near 100% the stage is bound by its concurrency, not by CPU. The \
         sandbox keeps every accepted message in memory (for `GET /sandbox/messages`; the \
         harness clears it after the drain and each phase), so its RSS follows the drain's \
         message count.\n",
        p.machine_cores,
        cores(),
        notify_runtime::config::RuntimeConfig::default().lanes,
        crate::pipeline::IO_BOUND_LANES
    )?;
    writeln!(
        md,
        "| process | role | peak RSS MiB | cores during the drain | records processed | mean ms in process() | lanes busy | < 100 MiB |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---|")?;
    for pr in &p.processes {
        let rss = if pr.peak_rss_mib.is_finite() {
            format!("{:.0}", pr.peak_rss_mib)
        } else {
            "-".into()
        };
        let target = match (pr.processor, pr.name.as_str()) {
            (false, _) => "-",
            (true, "preferences") => "exempt (preference table)",
            (true, _) if pr.peak_rss_mib < RSS_LIMIT_MIB => "met",
            _ => "**missed**",
        };
        let (processed, mean, busy) = match lane_use(pr, p.seconds) {
            Some((mean_ms, busy)) => (
                format!("{:.0}", pr.processed),
                format!("{mean_ms:.1}"),
                busy.map_or("-".into(), |b| format!("{:.0}%", 100.0 * b)),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        writeln!(
            md,
            "| {} | {} | {rss} | {:.2} | {processed} | {mean} | {busy} | {target} |",
            pr.name,
            role(pr),
            pr.cores
        )?;
    }
    Ok(())
}

/// Lanes of a processor as the pipeline ran it; retry has its own consume loop.
fn lanes(name: &str) -> Option<f64> {
    crate::pipeline::lanes_of(name).map(|l| l as f64)
}

/// (mean ms a record spends in `process()`, share of lane time so spent over the drain).
fn lane_use(pr: &Process, seconds: f64) -> Option<(f64, Option<f64>)> {
    if !pr.processor || pr.processed.is_nan() || pr.processed <= 0.0 {
        return None;
    }
    let mean_ms = 1_000.0 * pr.process_s / pr.processed;
    Some((
        mean_ms,
        lanes(&pr.name).map(|l| pr.process_s / (l * seconds)),
    ))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// What limits the pipeline, from where the CPU and the lanes' time went during the drain.
pub fn limits(md: &mut String, p: &PipelineResult) -> std::fmt::Result {
    let sum = |f: &dyn Fn(&Process) -> bool| -> f64 {
        p.processes
            .iter()
            .filter(|pr| f(pr) && pr.cores.is_finite())
            .map(|pr| pr.cores)
            .sum()
    };
    let processors = sum(&|pr| pr.processor);
    let stack = sum(&|pr| role(pr) == "stack (shared)");
    let cassandra = sum(&|pr| pr.name == "Cassandra");
    let sandbox = sum(&|pr| pr.name == "sandbox");
    let Some(top) = p
        .processes
        .iter()
        .filter(|pr| pr.cores.is_finite())
        .max_by(|a, b| a.cores.total_cmp(&b.cores))
    else {
        return Ok(());
    };
    let n = cores() as f64;
    let ours = processors + stack + sandbox;
    let cpu_ms = 1_000.0 * ours / p.request_rate;
    write!(
        md,
        "\n**What limits it**: during the drain the machine was {:.2} of {n:.0} cores busy{}. \
         The ten processors used {processors:.2} cores together, the stack (Kafka broker, \
         Cassandra, registry; including whatever else they served meanwhile) {stack:.2}, of \
         which Cassandra {cassandra:.2}, the sandbox {sandbox:.2}; the busiest process was {} ({:.2} cores). That is {cpu_ms:.1} ms of CPU \
         per request over all of them, so 10,000 requests/s would take about {:.0} cores at \
         this cost. ",
        p.machine_cores,
        if p.machine_cores >= 0.9 * n {
            " (saturated: the rest went to other work on the shared box and the harness)"
        } else {
            ""
        },
        top.name,
        top.cores,
        10_000.0 * cpu_ms / 1_000.0,
    )?;
    let busiest_lanes = p
        .processes
        .iter()
        .filter_map(|pr| lane_use(pr, p.seconds).and_then(|(m, b)| Some((pr, m, b?))))
        .max_by(|a, b| a.2.total_cmp(&b.2));
    if let Some((pr, mean_ms, busy)) = busiest_lanes {
        write!(
            md,
            "The processor with the busiest lanes was {} ({:.0}% of its lane time in \
             `process()`, {mean_ms:.1} ms per record){}. ",
            pr.name,
            100.0 * busy,
            if busy >= 0.8 {
                ": it is bound by its concurrency (lanes × round-trip time), more lanes or \
                 shorter round trips would lift it"
            } else {
                ""
            }
        )?;
    }
    writeln!(
        md,
        "Cassandra's share comes from dedup's conditional batches, ratelimit's write per \
         record (a window is read only when it is not in the instance's cache) and the \
         delivery ledger: each delivery claims its row with a lightweight transaction (one \
         Paxos round per message) and finishes it with a plain write \
         (processors/delivery/src/ledger_cql.rs)."
    )
}
