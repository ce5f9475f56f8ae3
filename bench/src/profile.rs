//! Where a process's CPU goes: `perf record` samples it (software clock, so it works where the
//! machine has no hardware counters) while it drains, and the samples are summed by component
//! (Avro and serde, the Kafka client, the CQL driver, the allocator, the kernel, ...).
//! Optional: without `perf` on the PATH, or with `--no-profile`, the report has no profile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Samples per second per thread: enough for shares to the percent over a few seconds,
/// cheap enough not to slow the process measured (under 1% here).
const FREQUENCY: &str = "499";

pub struct Profiler {
    child: Child,
    data: PathBuf,
}

/// The samples of one process, by component and by hottest symbol (shares of all samples).
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub samples: u64,
    pub components: Vec<(&'static str, f64)>,
    pub top: Vec<(String, f64)>,
}

/// True when `perf` can be run here.
pub fn available() -> bool {
    Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Profiler {
    /// Starts sampling `pid` into `data`; None (with a warning) when perf cannot attach.
    pub fn attach(pid: u32, data: &Path) -> Option<Profiler> {
        let child = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", FREQUENCY, "-q", "-o"])
            .arg(data)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(data.with_extension("perf.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn();
        match child {
            Ok(child) => Some(Profiler {
                child,
                data: data.to_path_buf(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "perf record did not start; no profile");
                None
            }
        }
    }

    /// Stops sampling and summarises what was sampled.
    pub async fn finish(mut self) -> Option<Profile> {
        if let Ok(Some(status)) = self.child.try_wait() {
            tracing::warn!(
                %status,
                log = %self.data.with_extension("perf.log").display(),
                "perf record stopped before the drain ended; the profile is partial"
            );
        }
        // perf writes its file on SIGINT (and then reads it again for build ids: slow on a
        // busy machine, hence the long wait before giving up on it).
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let out = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "-q",
                "--sort",
                "dso,sym",
            ])
            .args(["--percent-limit", "0.05", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let samples = sample_count(&self.data);
        let profile = summarise(&String::from_utf8_lossy(&out.stdout), samples);
        (!profile.top.is_empty()).then_some(profile)
    }
}

fn sample_count(data: &Path) -> u64 {
    let out = Command::new("perf")
        .args(["report", "--stdio", "-i"])
        .arg(data)
        .args(["--sort", "dso", "-q", "--show-nr-samples"])
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return 0 };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The components, in the order a symbol is tested against them (first match wins).
const COMPONENTS: [(&str, &[&str]); 9] = [
    ("kernel (syscalls, network)", &["[k]"]),
    (
        "Kafka client (librdkafka)",
        &["rd_kafka", "rd_", "rdkafka::", "lz4", "ZSTD", "crc32"],
    ),
    (
        "Avro and serde",
        &["apache_avro", "schema_registry_converter", "serde"],
    ),
    ("CQL driver (scylla)", &["scylla"]),
    ("templates (minijinja)", &["minijinja"]),
    (
        "allocator",
        &[
            // jemalloc (the notify binary's allocator) exports its symbols as `_rjem_*`.
            "_rjem_",
            "jemalloc",
            "malloc",
            "free",
            "realloc",
            "calloc",
            "_int_",
            "alloc::",
            "drop_in_place",
        ],
    ),
    ("tokio (scheduling, timers)", &["tokio::", "futures_"]),
    ("project code", &["notify_"]),
    ("memcpy, hashing, strings", &["mem", "str", "hash", "sip"]),
];

fn component_of(line_kind: &str, symbol: &str) -> &'static str {
    for (name, needles) in COMPONENTS {
        let hit = needles.iter().any(|n| {
            if *n == "[k]" {
                line_kind == "[k]"
            } else {
                symbol.contains(n)
            }
        });
        if hit {
            return name;
        }
    }
    "other"
}

/// Parses `perf report --stdio --no-children -q --sort dso,sym` lines:
/// `  12.34%  notify  [.] apache_avro::decode::decode_internal::h0123456789abcdef`.
fn summarise(report: &str, samples: u64) -> Profile {
    let mut components: Vec<(&'static str, f64)> = Vec::new();
    let mut top: Vec<(String, f64)> = Vec::new();
    for line in report.lines() {
        let mut words = line.split_whitespace();
        let Some(pct) = words.next().and_then(|w| w.strip_suffix('%')) else {
            continue;
        };
        let Ok(pct) = pct.parse::<f64>() else {
            continue;
        };
        let _dso = words.next();
        let Some(kind) = words.next() else { continue };
        let symbol = clean(&words.collect::<Vec<_>>().join(" "));
        let component = component_of(kind, &symbol);
        match components.iter_mut().find(|(c, _)| *c == component) {
            Some((_, share)) => *share += pct,
            None => components.push((component, pct)),
        }
        top.push((symbol, pct));
    }
    components.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(5);
    Profile {
        samples,
        components,
        top,
    }
}

/// Drops Rust's legacy symbol hash suffix and shortens long generic symbols for a table.
fn clean(symbol: &str) -> String {
    let s = match symbol.rfind("::h") {
        Some(i) if symbol[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) => &symbol[..i],
        _ => symbol,
    };
    let s = s.replace('|', "/");
    if s.chars().count() > 90 {
        let short: String = s.chars().take(87).collect();
        format!("{short}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_shares_by_component_and_keeps_the_hottest_symbols() {
        let report = "\
    30.00%  notify             [.] apache_avro::decode::decode_internal::h0123456789abcdef
    20.00%  [kernel.kallsyms]  [k] copy_user_enhanced_fast_string
    10.00%  notify             [.] rd_kafka_msg_new
     5.00%  libc.so.6          [.] malloc
     5.00%  libc.so.6          [.] _int_free
     2.00%  notify             [.] _rjem_je_tcache_bin_flush_small
     1.00%  notify             [.] something_else
";
        let p = summarise(report, 1000);
        assert_eq!(p.samples, 1000);
        assert_eq!(p.components[0], ("Avro and serde", 30.0));
        assert_eq!(p.components[1], ("kernel (syscalls, network)", 20.0));
        let alloc = p.components.iter().find(|c| c.0 == "allocator").unwrap();
        assert_eq!(alloc.1, 12.0);
        assert!(p.components.iter().any(|c| c.0 == "other"));
        assert_eq!(p.top[0].0, "apache_avro::decode::decode_internal");
        assert_eq!(p.top.len(), 5);
    }
}
