//! Where each measured process spent its CPU (perf samples while it drained), so that a
//! missed target names what limits it.

use std::fmt::Write as _;

use super::Report;
use crate::profile::Profile;

/// The components shown as columns, in this order; the rest are summed as "other".
const SHOWN: [&str; 7] = [
    "Avro and serde",
    "Kafka client (librdkafka)",
    "kernel (syscalls, network)",
    "allocator",
    "CQL driver (scylla)",
    "templates (minijinja)",
    "project code",
];

pub fn section(md: &mut String, r: &Report) -> std::fmt::Result {
    let mut rows: Vec<(String, f64, &Profile)> = Vec::new();
    for h in &r.hops {
        if let Some(p) = &h.profile {
            rows.push((h.label.clone(), h.drain.cpu_us_per_record, p));
        }
    }
    for (name, s) in &r.stages {
        if let Ok(s) = s
            && let Some(p) = &s.profile
        {
            rows.push((name.clone(), s.drain.cpu_us_per_record, p));
        }
    }
    if let Some(c) = &r.dedup
        && let Ok(n) = &c.naive
        && let Some(p) = &n.profile
    {
        rows.push(("dedup-naive".into(), n.drain.cpu_us_per_record, p));
    }
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(md, "\n## Where the CPU goes (perf)\n")?;
    writeln!(
        md,
        "Each process above was sampled by `perf record -e cpu-clock -F 499` while it drained \
         its pre-filled input (`--no-profile` turns this off). Each cell is that component's \
         CPU µs per input record (its share of the samples times the process's CPU µs/record); \
         shares come from the leaf function of each sample, so the allocator and the kernel \
         are counted where they run, not where they are called from. The samples are kept in \
         `target/bench-profiles/<process>.perf` for `perf report -i`.\n"
    )?;
    write!(md, "| process | samples | CPU µs/record |")?;
    for c in SHOWN {
        write!(md, " {c} |")?;
    }
    writeln!(md, " other | hottest symbols |")?;
    write!(md, "|---|---:|---:|")?;
    for _ in SHOWN {
        write!(md, "---:|")?;
    }
    writeln!(md, "---:|---|")?;
    for (name, us, p) in rows {
        write!(md, "| {name} | {} | {us:.1} |", p.samples)?;
        let mut shown = 0.0;
        for c in SHOWN {
            let share = p
                .components
                .iter()
                .find(|(n, _)| *n == c)
                .map(|(_, s)| *s)
                .unwrap_or(0.0);
            shown += share;
            write!(md, " {:.1} |", us * share / 100.0)?;
        }
        let all: f64 = p.components.iter().map(|(_, s)| s).sum();
        let hottest: Vec<String> = p
            .top
            .iter()
            .take(3)
            .map(|(s, pct)| format!("`{s}` {pct:.0}%"))
            .collect();
        writeln!(
            md,
            " {:.1} | {} |",
            us * (all - shown).max(0.0) / 100.0,
            hottest.join(", ")
        )?;
    }
    Ok(())
}
