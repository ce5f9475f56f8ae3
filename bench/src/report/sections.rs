//! The report's measured sections and the targets of issue 7.

use std::fmt::Write as _;

use super::Report;

/// The `q` quantile (0..=1) of `values`, nearest rank; NaN when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

pub fn ceiling_and_hops(md: &mut String, r: &Report) -> std::fmt::Result {
    let Some(c) = &r.ceiling else {
        writeln!(md, "\n## Ceiling\n\nNot measured in this run (`--only`).")?;
        return hops(md, r, None);
    };
    writeln!(
        md,
        "\n## Ceiling: Kafka's own tools, same broker, same run\n"
    )?;
    writeln!(md, "| tool | records | records/s | MB/s | latency |")?;
    writeln!(md, "|---|---:|---:|---:|---|")?;
    writeln!(
        md,
        "| ProducerPerformance (acks=all, {} B) | {} | {:.0} | {:.1} | p50 {:.0} ms, p99 {:.0} ms |",
        crate::ceiling::RECORD_SIZE,
        c.records,
        c.producer_rate,
        c.producer_mb_s,
        c.producer_p50_ms,
        c.producer_p99_ms
    )?;
    writeln!(
        md,
        "| ConsumerPerformance (fetch time, group join excluded) | {} | {:.0} | {:.1} | |",
        c.records, c.consumer_rate, c.consumer_mb_s
    )?;
    writeln!(
        md,
        "\nRaw summary lines:\n\n```\n{}\n{}\n```",
        c.producer_line, c.consumer_line
    )?;
    cql_ceiling(md, r)?;
    hops(md, r, Some(c))
}

/// The CQL database's ceiling on the pipeline's rows (cql_ceiling.rs).
fn cql_ceiling(md: &mut String, r: &Report) -> std::fmt::Result {
    let cql = match &r.cql_ceiling {
        None => return Ok(()),
        Some(Err(e)) => return writeln!(md, "\n## Ceiling: the CQL database\n\n**Failed**: {e}"),
        Some(Ok(cql)) => cql,
    };
    writeln!(
        md,
        "\n## Ceiling: the CQL database, same run\n\n`cassandra-stress` is not served by Maven \
         Central (no `org.apache.cassandra:cassandra-stress` artifact of 5.0.6, 5.0.5, 4.1.10 or \
         4.0.17: \"Could not find artifact\"), so the harness loads the database itself with the \
         delivery ledger's table and row shape, {} statements in flight, each row its own \
         partition (bench/src/cql_ceiling.rs). CPU is the database process's, and the whole \
         machine's (the load generator included), per row.\n",
        crate::cql_ceiling::CONCURRENCY
    )?;
    writeln!(
        md,
        "| workload | rows | statements | rows/s | database CPU µs/row | machine CPU µs/row |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    for w in cql {
        writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} |",
            w.label,
            w.rows,
            w.statements,
            w.rows_per_s(),
            w.db_us_per_row,
            w.machine_us_per_row
        )?;
    }
    Ok(())
}

/// The hop table; ratios to the ceiling when it was measured.
fn hops(md: &mut String, r: &Report, c: Option<&crate::ceiling::Ceiling>) -> std::fmt::Result {
    if r.hops.is_empty() {
        return Ok(());
    }
    let vs_ceiling = |rate: f64| match c {
        Some(c) => format!("{:.0}%", 100.0 * rate / c.producer_rate),
        None => "-".into(),
    };

    writeln!(
        md,
        "\n## No-op hop on the runtime (processors/passthrough), at-least-once\n"
    )?;
    writeln!(
        md,
        "Each mode runs as its own process (`notify run passthrough`) on the pre-filled input \
         (throughput: from the first output record to the last, sampled from offsets; CPU: \
         user+system time of that process over the same window), then at 50% of the rate it \
         reached with an open-loop producer (latency: broker append time of the output record, \
         `LogAppendTime`, minus the request's `created_at`, stamped when sent).\n"
    )?;
    writeln!(
        md,
        "| mode | records in | records out | active s | records/s | vs ProducerPerformance | CPU µs/record | peak RSS MiB | latency load/s | p50 ms | p99 ms | samples |"
    )?;
    writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for h in &r.hops {
        let txn_missing = h.label.ends_with("txn") && h.markers <= 0;
        if txn_missing {
            continue;
        }
        writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.0} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            h.label,
            h.drain.records_in,
            h.drain.records_out,
            h.drain.seconds,
            h.drain.rate,
            vs_ceiling(h.drain.rate),
            h.drain.cpu_us_per_record,
            h.peak_rss_mib,
            h.latency_rate,
            quantile(&h.latencies_ms, 0.5),
            quantile(&h.latencies_ms, 0.99),
            h.latencies_ms.len()
        )?;
    }
    if let Some(t) = r.hops.iter().find(|h| h.label.ends_with("txn")) {
        if t.markers <= 0 {
            writeln!(
                md,
                "\nTransactional: **not implemented** in the runtime that ran: with \
                 `kafka.transactional = true` the output carried no transaction markers, so it \
                 ran at-least-once ({:.0} records/s, not reported as a transactional figure).",
                t.drain.rate
            )?;
        } else {
            writeln!(
                md,
                "\n`hop-raw-txn` ran with `kafka.transactional = true`: its output holds {} \
                 transaction markers (offsets beyond its records), so it really committed in \
                 transactions; it is read back with `isolation.level=read_committed`, so its \
                 latency includes waiting for the commit.",
                t.markers
            )?;
        }
    }
    if let (Some(h), Some(c)) = (r.hops.iter().find(|h| h.label == "hop-raw"), c) {
        let cpu_bound = 1e6 / h.drain.cpu_us_per_record.max(0.001);
        writeln!(
            md,
            "\nWhat limits the hop: its own CPU would allow about {cpu_bound:.0} records/s on one \
             core ({:.1} µs/record); it reached {:.0} records/s, {:.0}% of ProducerPerformance, \
             which writes to the same broker on the same two cores without reading anything. \
             The rest is the broker's: every record is fetched once and appended once, with \
             acks=all and an idempotent producer. (Before commit de41d2d the hop paused its \
             partitions whenever 512 records waited for the in-flight bound, and librdkafka \
             refetched after a one-second backoff on every resume: 6,007 records/s, 8%.)",
            h.drain.cpu_us_per_record,
            h.drain.rate,
            100.0 * h.drain.rate / c.producer_rate,
        )?;
    }
    targets(md, r)
}

fn targets(md: &mut String, r: &Report) -> std::fmt::Result {
    let Some(c) = &r.ceiling else { return Ok(()) };
    writeln!(md, "\n## Targets (issue 7)\n")?;
    writeln!(md, "| target | measured | verdict |")?;
    writeln!(md, "|---|---|---|")?;
    if let Some(h) = r.hops.iter().find(|h| h.label == "hop-raw") {
        let ratio = h.drain.rate / c.producer_rate;
        writeln!(
            md,
            "| no-op hop ≥ 50% of ProducerPerformance | raw {:.0}% ({:.0} vs {:.0}/s) | {} |",
            100.0 * ratio,
            h.drain.rate,
            c.producer_rate,
            verdict(ratio >= 0.5)
        )?;
    }
    for h in r.hops.iter().filter(|h| !h.label.ends_with("txn")) {
        writeln!(
            md,
            "| every processor < 100 MiB RSS | {} peak {:.0} MiB | {} |",
            h.label,
            h.peak_rss_mib,
            verdict(h.peak_rss_mib < 100.0)
        )?;
    }
    super::dedup::targets(md, r)?;
    super::pipeline::target_rows(md, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
