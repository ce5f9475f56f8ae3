//! One processor as its own process (`notify run <name>`), so its CPU time and memory are its
//! own, with a sampler that follows its progress through offsets only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::kafka::Kafka;
use crate::procfs;

/// One sample every this often while a processor runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the process started.
    pub t: f64,
    /// Records in the output topics so far.
    pub out: i64,
    pub cpu_s: f64,
}

/// What one drain (input consumed up to a target count) measured.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    pub records_in: u64,
    pub records_out: i64,
    /// From the first output record to the last one.
    pub seconds: f64,
    pub rate: f64,
    pub cpu_us_per_record: f64,
    /// False when the time cap ended the drain first: the figures cover what was done.
    pub complete: bool,
}

pub struct Running {
    child: Child,
    pub group: String,
    processor: String,
    metrics_url: String,
    outputs: Vec<String>,
    log_path: PathBuf,
    started: Instant,
    pub samples: Vec<Sample>,
}

/// Starts `notify run <processor>` with configuration from `env` (`NOTIFY_…__…` variables).
pub fn spawn(
    notify_bin: &Path,
    processor: &str,
    group_prefix: &str,
    env: &[(String, String)],
    outputs: &[String],
) -> anyhow::Result<Running> {
    let port = free_port()?;
    let log_path = log_path(group_prefix, processor);
    let mut cmd = Command::new(notify_bin);
    cmd.arg("run")
        .arg(processor)
        .env_remove("NOTIFY_CONFIG")
        .env("NOTIFY_KAFKA__GROUP_PREFIX", group_prefix)
        .env("NOTIFY_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("NOTIFY_RUNTIME__SHUTDOWN_GRACE_MS", "5000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?,
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} run {processor}", notify_bin.display()))?;
    Ok(Running {
        child,
        group: format!("{group_prefix}-{processor}"),
        metrics_url: format!("http://127.0.0.1:{port}/metrics"),
        processor: processor.to_string(),
        outputs: outputs.to_vec(),
        log_path,
        started: Instant::now(),
        samples: Vec::new(),
    })
}

/// The processor's own log, kept out of the harness's output (and there to read on failure);
/// one per processor, as the pipeline runs many under one group prefix.
fn log_path(group_prefix: &str, processor: &str) -> PathBuf {
    std::env::temp_dir().join(format!("notify-bench-{group_prefix}-{processor}.log"))
}

/// The last lines of a child's log, for an error that says why it stopped.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    format!("last lines of {}:\n{tail}", path.display())
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn processor(&self) -> &str {
        &self.processor
    }

    /// The processor's Prometheus endpoint.
    pub fn metrics_url(&self) -> &str {
        &self.metrics_url
    }

    /// True once the processor answers on its /metrics (its runtime is up), false when it
    /// does not within `timeout` or exits first.
    pub async fn serves_metrics(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if reqwest::get(&self.metrics_url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// An error once the process has exited (it should run until stopped).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!(
                "{} exited early: {status}\n{}",
                self.group,
                log_tail(&self.log_path)
            ),
            None => Ok(()),
        }
    }

    fn sample(&mut self, kafka: &Kafka) -> anyhow::Result<Sample> {
        let mut out = 0;
        for t in &self.outputs {
            out += kafka.end_offsets(t)?;
        }
        let pid = self.pid();
        let s = Sample {
            t: self.started.elapsed().as_secs_f64(),
            out,
            cpu_s: procfs::cpu_seconds(pid).unwrap_or(f64::NAN),
        };
        self.samples.push(s);
        Ok(s)
    }

    /// (records consumed, records in flight) from the processor's own /metrics.
    async fn progress(&self) -> Option<(f64, f64)> {
        let text = reqwest::get(&self.metrics_url)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let c = notify_runtime::metrics::sample_sum(&text, "notify_records_consumed_total", &[])
            .unwrap_or(0.0);
        let f = notify_runtime::metrics::sample_sum(&text, "notify_in_flight_records", &[])?;
        Some((c, f))
    }

    /// Samples until the processor has consumed `target` records in all and has none in
    /// flight, i.e. every one is processed and its outputs acknowledged by Kafka. (Its own
    /// metrics, not committed offsets: commits trail by the auto-commit interval.)
    pub async fn drain(
        &mut self,
        kafka: &Kafka,
        target: i64,
        records_in: u64,
        timeout: Duration,
    ) -> anyhow::Result<Drain> {
        let begin = self.samples.len();
        let base = self.sample(kafka)?;
        let deadline = Instant::now() + timeout;
        let mut last_progress_check = Instant::now();
        let mut records_in = records_in;
        let mut complete = true;
        loop {
            self.check_alive()?;
            tokio::time::sleep(SAMPLE_EVERY).await;
            self.sample(kafka)?;
            if last_progress_check.elapsed() >= Duration::from_millis(300) {
                last_progress_check = Instant::now();
                if let Some((consumed, in_flight)) = self.progress().await
                    && consumed >= target as f64
                    && in_flight == 0.0
                {
                    // The outputs are acknowledged now: one more sample sees them all.
                    self.sample(kafka)?;
                    break;
                }
            }
            if Instant::now() > deadline {
                // Report what was done in the time allowed rather than nothing.
                let (consumed, in_flight) = self.progress().await.unwrap_or((0.0, 0.0));
                tracing::warn!(group = %self.group, consumed, in_flight, target, "time cap reached");
                records_in = (consumed - in_flight).max(0.0) as u64;
                complete = false;
                self.sample(kafka)?;
                break;
            }
        }
        let window = &self.samples[begin..];
        let last = window.last().copied().unwrap_or(base);
        let (first_i, end_i) = if complete {
            active_window(window, base.out, last.out)
        } else {
            (0, window.len() - 1)
        };
        let (a, b) = (window[first_i], window[end_i.max(first_i)]);
        let seconds = (b.t - a.t).max(SAMPLE_EVERY.as_secs_f64());
        Ok(Drain {
            records_in,
            records_out: last.out - base.out,
            seconds,
            rate: records_in as f64 / seconds,
            cpu_us_per_record: (b.cpu_s - a.cpu_s) * 1e6 / records_in.max(1) as f64,
            complete,
        })
    }

    /// Peak resident memory so far.
    pub fn peak_rss_mib(&self) -> f64 {
        procfs::rss_mib(self.pid()).map(|r| r.1).unwrap_or(f64::NAN)
    }

    /// SIGTERM (graceful drain and commit), then waits for the exit.
    pub async fn stop(mut self) -> anyhow::Result<Vec<Sample>> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    tracing::warn!(group = %self.group, %status, "processor exit status");
                }
                return Ok(self.samples);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} did not stop within 40 s of SIGTERM", self.group);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// From the sample before the first new output to the first sample showing the final count
/// (startup and the completion check's delay would dilute the rate).
fn active_window(window: &[Sample], base_out: i64, last_out: i64) -> (usize, usize) {
    let first = window
        .iter()
        .position(|s| s.out > base_out)
        .unwrap_or(0)
        .saturating_sub(1);
    let end = window
        .iter()
        .position(|s| s.out >= last_out)
        .unwrap_or(window.len() - 1);
    (first, end)
}

/// A loopback port for a child's listener (its /metrics, the sandbox), outside the range
/// outgoing connections take their ports from (see `unused_loopback_port`).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(notify_runtime::http::unused_loopback_port()?)
}

/// Records/s per sampling interval, for the throughput-over-time plot.
pub fn timeline(samples: &[Sample]) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter(|w| w[1].t > w[0].t)
        .map(|w| (w[1].t, (w[1].out - w[0].out) as f64 / (w[1].t - w[0].t)))
        .collect()
}
