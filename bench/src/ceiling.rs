//! The ceiling: Kafka's own ProducerPerformance and ConsumerPerformance (kafka-tools from
//! Maven Central, fetched by dev/stack.sh) with 300-byte records against the same broker.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

#[derive(Debug, Clone, Default)]
pub struct Ceiling {
    pub records: u64,
    pub producer_rate: f64,
    pub producer_mb_s: f64,
    pub producer_p50_ms: f64,
    pub producer_p99_ms: f64,
    pub producer_line: String,
    /// Records/s over the fetch time (group join excluded).
    pub consumer_rate: f64,
    pub consumer_mb_s: f64,
    pub consumer_line: String,
}

pub const RECORD_SIZE: u32 = 300;

fn java(classpath: &str, class: &str, args: &[String]) -> anyhow::Result<String> {
    let out = Command::new("java")
        .arg("-Xmx512m")
        .arg("-cp")
        .arg(classpath)
        .arg(class)
        .args(args)
        .output()
        .with_context(|| format!("running java {class}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{class} failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Produces `records` to `topic` (created beforehand), then consumes them back.
pub fn measure(repo: &Path, bootstrap: &str, topic: &str, records: u64) -> anyhow::Result<Ceiling> {
    let classpath = format!("{}/*", repo.join(".cache/kafka/lib").display());
    let produced = java(
        &classpath,
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic".into(),
            topic.into(),
            "--num-records".into(),
            records.to_string(),
            "--record-size".into(),
            RECORD_SIZE.to_string(),
            "--throughput".into(),
            "-1".into(),
            "--producer-props".into(),
            format!("bootstrap.servers={bootstrap}"),
            "acks=all".into(),
        ],
    )?;
    let mut c = parse_producer(&produced)?;
    c.records = records;
    let consumed = java(
        &classpath,
        "org.apache.kafka.tools.ConsumerPerformance",
        &[
            "--bootstrap-server".into(),
            bootstrap.into(),
            "--topic".into(),
            topic.into(),
            "--messages".into(),
            records.to_string(),
            "--group".into(),
            format!("{topic}-perf"),
            "--timeout".into(),
            "60000".into(),
        ],
    )?;
    let (rate, mb, line) = parse_consumer(&consumed)?;
    c.consumer_rate = rate;
    c.consumer_mb_s = mb;
    c.consumer_line = line;
    Ok(c)
}

/// The summary line: `N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max
/// latency, P ms 50th, P ms 95th, P ms 99th, P ms 99.9th.`
pub fn parse_producer(out: &str) -> anyhow::Result<Ceiling> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains("records sent") && l.contains("50th"))
        .context("no ProducerPerformance summary line")?;
    let number_before = |suffix: &str| -> anyhow::Result<f64> {
        let at = line
            .find(suffix)
            .with_context(|| format!("{suffix:?} missing in {line:?}"))?;
        let head = line[..at].trim_end().trim_end_matches('(');
        let token = head
            .rsplit([' ', '(', ','])
            .find(|t| !t.is_empty())
            .context("empty")?;
        token
            .parse::<f64>()
            .with_context(|| format!("{token:?} before {suffix:?}"))
    };
    Ok(Ceiling {
        producer_rate: number_before(" records/sec")?,
        producer_mb_s: number_before(" MB/sec")?,
        producer_p50_ms: number_before(" ms 50th")?,
        producer_p99_ms: number_before(" ms 99th")?,
        producer_line: line.trim().to_string(),
        ..Ceiling::default()
    })
}

/// A CSV header (`start.time, end.time, data.consumed.in.MB, MB.sec, …, fetch.MB.sec,
/// fetch.nMsg.sec`) and one data line; returns (fetch records/s, fetch MB/s, the line).
pub fn parse_consumer(out: &str) -> anyhow::Result<(f64, f64, String)> {
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    let header_at = lines
        .iter()
        .position(|l| l.contains("fetch.nMsg.sec"))
        .context("no ConsumerPerformance header")?;
    let header: Vec<&str> = lines[header_at].split(',').map(str::trim).collect();
    let data_line = lines
        .get(header_at + 1)
        .context("no ConsumerPerformance data line")?;
    let data: Vec<&str> = data_line.split(',').map(str::trim).collect();
    let column = |name: &str| -> anyhow::Result<f64> {
        let i = header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("column {name}"))?;
        let v = data.get(i).with_context(|| format!("value of {name}"))?;
        v.parse::<f64>().with_context(|| format!("{name} = {v:?}"))
    };
    Ok((
        column("fetch.nMsg.sec")?,
        column("fetch.MB.sec")?,
        format!("{}\n{}", lines[header_at].trim(), data_line.trim()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_producer_summary() {
        let out = "5000 records sent, 4990.0 records/sec (1.43 MB/sec), 12.1 ms avg latency, 300.0 ms max latency.\n\
                   100000 records sent, 98765.4 records/sec (28.26 MB/sec), 150.31 ms avg latency, 420.00 ms max latency, 140 ms 50th, 300 ms 95th, 390 ms 99th, 410 ms 99.9th.\n";
        let c = parse_producer(out).unwrap();
        assert_eq!(c.producer_rate, 98765.4);
        assert_eq!(c.producer_mb_s, 28.26);
        assert_eq!(c.producer_p50_ms, 140.0);
        assert_eq!(c.producer_p99_ms, 390.0);
    }

    #[test]
    fn parses_the_consumer_csv() {
        let out = "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n\
                   2026-11-25 01:00:00:000, 2026-11-25 01:00:05:000, 28.6102, 5.7220, 100000, 20000.0000, 3000, 2000, 14.3051, 50000.0000\n";
        let (rate, mb, _) = parse_consumer(out).unwrap();
        assert_eq!(rate, 50000.0);
        assert_eq!(mb, 14.3051);
        assert!(parse_consumer("nothing").is_err());
    }
}
