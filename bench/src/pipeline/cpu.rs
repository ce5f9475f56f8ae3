//! Where the two cores went while the pipeline ran: CPU time of each pipeline process, of the
//! stack's own processes (broker, CQL database, registry) found by their command line, and of
//! the whole machine (/proc/stat), sampled so a window can be cut out afterwards.

use crate::procfs;

/// Kernel ticks per second of /proc/stat (USER_HZ, 100 on every target; see procfs.rs).
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone)]
pub struct Tracked {
    pub label: String,
    pub pid: u32,
    /// A pipeline processor (the 100 MiB target applies), not the sandbox or the stack.
    pub processor: bool,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub at_ms: i64,
    /// CPU seconds of each tracked process so far (NaN once gone).
    pub per_process: Vec<f64>,
    /// Busy CPU seconds of the whole machine so far.
    pub machine_busy_s: f64,
}

/// The stack's long-running processes on this machine, when /proc shows them.
pub fn stack_processes() -> Vec<Tracked> {
    const KNOWN: [(&str, &str); 3] = [
        ("kafka.Kafka", "Kafka broker"),
        ("CassandraDaemon", "Cassandra"),
        ("apicurio", "Apicurio registry"),
    ];
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    // Lowest pid first: the shared stack started before any test's private copy.
    pids.sort_unstable();
    for pid in pids {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if let Some((_, label)) = KNOWN.iter().find(|(k, _)| cmdline.contains(k))
            && !found.iter().any(|t: &Tracked| t.label == *label)
        {
            found.push(Tracked {
                label: label.to_string(),
                pid,
                processor: false,
            });
        }
    }
    found.sort_by(|a, b| a.label.cmp(&b.label));
    found
}

fn machine_busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    let v: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle) / TICKS_PER_SEC
}

pub fn sample(tracked: &[Tracked]) -> Sample {
    Sample {
        at_ms: notify_runtime::now_ms(),
        per_process: tracked
            .iter()
            .map(|t| procfs::cpu_seconds(t.pid).unwrap_or(f64::NAN))
            .collect(),
        machine_busy_s: machine_busy_s(),
    }
}

/// CPU over `[from, to]` (ms), from the samples closest inside it: (cores used by each
/// tracked process, cores busy on the machine). None without two samples in the window.
pub fn window(samples: &[Sample], from: i64, to: i64) -> Option<(Vec<f64>, f64)> {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at_ms >= from && s.at_ms <= to)
        .collect();
    let (a, b) = (inside.first()?, inside.last()?);
    let secs = (b.at_ms - a.at_ms) as f64 / 1_000.0;
    if secs <= 0.0 {
        return None;
    }
    let per = a
        .per_process
        .iter()
        .zip(&b.per_process)
        .map(|(x, y)| (y - x) / secs)
        .collect();
    Some((per, (b.machine_busy_s - a.machine_busy_s) / secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_divides_by_its_own_length() {
        let s = |at_ms, cpu, busy| Sample {
            at_ms,
            per_process: vec![cpu],
            machine_busy_s: busy,
        };
        let samples = [s(0, 0.0, 0.0), s(1_000, 0.5, 1.0), s(3_000, 1.5, 4.0)];
        let (per, busy) = window(&samples, 500, 3_000).expect("two samples");
        assert_eq!(per, vec![0.5]);
        assert_eq!(busy, 1.5);
        assert!(window(&samples, 2_000, 2_500).is_none());
        assert!(machine_busy_s() > 0.0);
    }
}
