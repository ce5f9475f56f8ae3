//! Progress and pacing for the long operator commands (replay, backfill, trace scans).
//!
//! On a terminal (stderr) an indicatif bar with rate and ETA; otherwise a plain line every few
//! seconds, so logs of a CI job or a `kubectl exec` stay readable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl Progress {
    /// `total` is the number of units expected, when known (for the ETA).
    pub fn new(label: &str, total: Option<u64>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let template = if total.is_some() {
                "{msg} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})"
            } else {
                "{msg} {spinner} {pos} ({per_sec})"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            label: label.to_string(),
            total,
            done: 0,
            started: Instant::now(),
            bar,
            last_line: Instant::now(),
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.set(self.done + n);
    }

    pub fn set(&mut self, done: u64) {
        self.done = done;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    /// The plain progress line: done, total, rate and ETA.
    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        match self.total {
            Some(total) if rate > 0.0 => {
                let left = total.saturating_sub(self.done) as f64 / rate;
                format!(
                    "{}: {}/{} ({rate:.0}/s, ETA {left:.0}s)",
                    self.label, self.done, total
                )
            }
            Some(total) => format!("{}: {}/{}", self.label, self.done, total),
            None => format!("{}: {} ({rate:.0}/s)", self.label, self.done),
        }
    }

    pub fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.done > 0 => eprintln!("{}", self.line()),
            None => {}
        }
    }
}

/// Spaces work out to at most `rate` units per second (no limit when None). Sleeps until the
/// moment the next unit is due, so a burst after a pause is not let through at once.
pub struct Pacer {
    rate: Option<f64>,
    started: Instant,
    granted: u64,
}

impl Pacer {
    pub fn new(rate: Option<f64>) -> Pacer {
        Pacer {
            rate: rate.filter(|r| r.is_finite() && *r > 0.0),
            started: Instant::now(),
            granted: 0,
        }
    }

    /// When the next unit may go, or None when it may go now.
    fn delay(&self) -> Option<Duration> {
        let rate = self.rate?;
        let due = Duration::from_secs_f64(self.granted as f64 / rate);
        due.checked_sub(self.started.elapsed())
            .filter(|d| !d.is_zero())
    }

    pub async fn wait(&mut self) {
        if let Some(d) = self.delay() {
            tokio::time::sleep(d).await;
        }
        self.granted += 1;
    }
}

/// `--rate` values: a number of records per second, `/s` optional (`500`, `500/s`).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.trim().trim_end_matches("/s");
    match n.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a rate like 500 or 500/s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("500"), Ok(500.0));
        assert_eq!(parse_rate("2.5/s"), Ok(2.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[tokio::test]
    async fn pacer_spaces_units_out() {
        let mut pacer = Pacer::new(Some(100.0));
        let start = Instant::now();
        for _ in 0..21 {
            pacer.wait().await;
        }
        // 21 units at 100/s: the last is due 200 ms after the first.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(195), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        let mut unlimited = Pacer::new(None);
        assert!(unlimited.delay().is_none());
        unlimited.wait().await;
    }

    #[test]
    fn plain_line_has_rate_and_eta() {
        let mut p = Progress::new("copied", Some(100));
        p.done = 50;
        let line = p.line();
        assert!(line.starts_with("copied: 50/100 ("), "{line}");
        assert!(line.contains("ETA"), "{line}");
    }
}
