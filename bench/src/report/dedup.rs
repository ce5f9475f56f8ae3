//! Report sections for each stage alone and for dedup against the naive LWT scheme.

use std::collections::HashSet;
use std::fmt::Write as _;

use notify_runtime::records::RoutedNotification;
use rdkafka::Message;

use super::Report;
use crate::Ctx;

pub struct Compare {
    pub records: u64,
    /// The dedup stage run with the naive scheme (see `stages::run_naive_dedup`).
    pub naive: Result<crate::stages::StageResult, String>,
    /// Records out minus distinct event ids out: duplicates let through.
    pub project_dups: u64,
    pub naive_dups: Option<u64>,
}

/// Records in `topic` whose event id appeared earlier in it.
pub async fn duplicates(ctx: &Ctx, topic: &str) -> anyhow::Result<u64> {
    let mut payloads = Vec::new();
    ctx.kafka.scan(topic, |m| {
        if let Some(p) = m.payload() {
            payloads.push(p.to_vec());
        }
    })?;
    let mut seen = HashSet::new();
    let mut dups = 0;
    for p in payloads {
        let r: RoutedNotification = ctx.codec.decode(Some(&p)).await?;
        if !seen.insert(r.request.event_id) {
            dups += 1;
        }
    }
    Ok(dups)
}

fn hop_rate(r: &Report) -> Option<f64> {
    r.hops
        .iter()
        .find(|h| h.label == "hop-avro")
        .map(|h| h.drain.rate)
}

pub fn stages(md: &mut String, r: &Report) -> std::fmt::Result {
    writeln!(md, "\n## Each stage alone, on a pre-filled input\n")?;
    if r.stages.is_empty() {
        return writeln!(md, "not measured in this run.");
    }
    writeln!(
        md,
        "The stages run as a chain, each in its own process (`notify run <stage>`) on the \
         complete output of the one before, so each input is realistic (the requests above, \
         {} user profiles, 10% re-sent event ids). records/s counts input records from the \
         first output to the last; the avro no-op hop is the reference (same decode and \
         encode work, no business rule). Dedup and rate limits call the CQL database per \
         record; rate limit rule: 100 per user per hour. Lanes as deployed (the Helm chart and \
         the pipeline below): 256 for dedup, 64 for rate limits, 8 for the others.\n",
        (r.records / 10).max(100)
    )?;
    writeln!(
        md,
        "| stage | records in | records out (all topics) | records/s | vs avro hop | CPU µs/record | peak RSS MiB |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    let hop = hop_rate(r);
    for (name, result) in &r.stages {
        match result {
            Ok(s) => writeln!(
                md,
                "| {name}{}{} | {} | {} | {:.0} | {} | {:.1} | {:.0} |",
                if s.external_io { " (CQL)" } else { "" },
                if s.drain.complete {
                    ""
                } else {
                    " (time cap: partial)"
                },
                s.drain.records_in,
                s.drain.records_out,
                s.drain.rate,
                hop.map(|h| format!("{:.0}%", 100.0 * s.drain.rate / h))
                    .unwrap_or_default(),
                s.drain.cpu_us_per_record,
                s.peak_rss_mib
            )?,
            Err(e) => writeln!(md, "| {name} | failed: {} | | | | | |", e.replace('|', "/"))?,
        }
    }
    Ok(())
}

pub fn compare(md: &mut String, r: &Report) -> std::fmt::Result {
    writeln!(
        md,
        "\n## Dedup: the project's scheme vs one LWT per event\n"
    )?;
    let Some(c) = &r.dedup else {
        return writeln!(
            md,
            "not measured in this run (the dedup stage did not run)."
        );
    };
    let project = r
        .stages
        .iter()
        .find_map(|(n, s)| (n == "dedup").then_some(s.as_ref().ok()).flatten());
    let concurrency =
        notify_dedup::with_lanes(notify_runtime::Config::default(), notify_dedup::LANES);
    writeln!(
        md,
        "Both are the dedup stage (`notify run dedup`) on the same input ({} routed \
         notifications, 10% re-sent event ids), with the same lanes and in-flight bound ({} \
         lanes, {} records) and the same outputs (downstream copy and status). Only the scheme \
         differs: the project's owned scheme (plain batched writes by the partition's owner, \
         a Bloom filter and recent ids in front), against the naive scheme: one \
         `INSERT … IF NOT EXISTS` (one Paxos round) per event, nothing in front \
         (`scheme = \"naive\"`).\n",
        c.records, concurrency.runtime.lanes, concurrency.runtime.max_in_flight
    )?;
    writeln!(
        md,
        "| scheme | records/s | CPU µs/record | peak RSS MiB | duplicates let through |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|")?;
    let row = |md: &mut String, label: &str, s: &crate::stages::StageResult, dups: u64| {
        writeln!(
            md,
            "| {label}{} | {:.0} | {:.1} | {:.0} | {dups} |",
            if s.drain.complete {
                ""
            } else {
                " (time cap: partial)"
            },
            s.drain.rate,
            s.drain.cpu_us_per_record,
            s.peak_rss_mib
        )
    };
    if let Some(p) = project {
        row(md, "project (batched ledger, cache)", p, c.project_dups)?;
    }
    match &c.naive {
        Ok(n) => row(
            md,
            "naive (one LWT per event)",
            n,
            c.naive_dups.unwrap_or_default(),
        )?,
        Err(e) => writeln!(
            md,
            "| naive (one LWT per event) | failed: {} | | | |",
            e.replace('|', "/")
        )?,
    }
    Ok(())
}

pub fn targets(md: &mut String, r: &Report) -> std::fmt::Result {
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    if let Some(hop) = hop_rate(r) {
        for (name, s) in r
            .stages
            .iter()
            .filter_map(|(n, s)| s.as_ref().ok().map(|s| (n, s)))
        {
            if !s.external_io {
                let ratio = s.drain.rate / hop;
                writeln!(
                    md,
                    "| stage without external I/O ≥ 70% of the no-op hop | {name} {:.0}% | {} |",
                    100.0 * ratio,
                    verdict(ratio >= 0.7)
                )?;
            }
            writeln!(
                md,
                "| every processor < 100 MiB RSS (preference table excepted) | {name} peak {:.0} MiB | {} |",
                s.peak_rss_mib,
                if name == "preferences" {
                    "exempt"
                } else {
                    verdict(s.peak_rss_mib < 100.0)
                }
            )?;
        }
    }
    match (&r.dedup, r.stages.iter().find(|(n, _)| n == "dedup")) {
        (Some(c), Some((_, Ok(p)))) => match &c.naive {
            Ok(naive) => {
                let ratio = p.drain.rate / naive.drain.rate;
                writeln!(
                    md,
                    "| dedup ≥ 3× naive LWT, 0 duplicates | {ratio:.1}×, {} duplicates | {} |",
                    c.project_dups,
                    verdict(ratio >= 3.0 && c.project_dups == 0)
                )?;
            }
            Err(_) => writeln!(
                md,
                "| dedup ≥ 3× naive LWT, 0 duplicates | naive run failed | open |"
            )?,
        },
        _ => writeln!(
            md,
            "| dedup ≥ 3× naive LWT, 0 duplicates | not measured | open |"
        )?,
    }
    Ok(())
}
