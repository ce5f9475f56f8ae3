//! The Grafana dashboard's main panels (helm/notify/files/grafana-dashboard.json) drawn from
//! the processors' own `/metrics`, scraped every second during a pipeline run: what an
//! operator would see on the dashboard for that run, computed the way its queries compute it
//! (rates of counters, sums of gauges, quantiles of histogram buckets).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use notify_runtime::CancellationToken;
use plotters::prelude::*;

/// One scrape of one processor: the series the panels use, by key.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub t: f64,
    pub processor: String,
    pub values: BTreeMap<String, f64>,
}

/// Keys of [`Scrape::values`] kept from a scrape's text.
fn keep(name: &str, labels: &str) -> Option<String> {
    let label = |k: &str| {
        labels
            .split(',')
            .find_map(|p| p.strip_prefix(&format!("{k}=\"")))
            .map(|v| v.trim_end_matches('"').to_string())
    };
    Some(match name {
        "notify_records_consumed_total" => "consumed".into(),
        "notify_consumer_lag_records" => "lag".into(),
        "process_cpu_seconds_total" => "cpu".into(),
        "process_resident_memory_bytes" => "rss".into(),
        "notify_end_to_end_latency_seconds_bucket" => format!("e2e:{}", label("le")?),
        "notify_delivery_outcomes_total" => format!("outcome:{}", label("outcome")?),
        _ => return None,
    })
}

/// The kept series of a Prometheus text, summed over the labels not kept.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if let (Some(key), Ok(v)) = (keep(name, labels), value.parse::<f64>()) {
            *out.entry(key).or_insert(0.0) += v;
        }
    }
    out
}

/// Scrapes `(processor, url)` every `every` until `stop`; returns every scrape.
pub fn record(
    targets: Vec<(String, String)>,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<Scrape>> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let started = Instant::now();
        let mut out = Vec::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return out,
                _ = tick.tick() => {}
            }
            let t = started.elapsed().as_secs_f64();
            for (processor, url) in &targets {
                let text = match http.get(url).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => continue,
                };
                out.push(Scrape {
                    t,
                    processor: processor.clone(),
                    values: parse(&text),
                });
            }
        }
    })
}

type Series = Vec<(String, Vec<(f64, f64)>)>;

/// Per processor, the per-second rate of a counter over `window` scrape intervals (CPU
/// seconds are exported in whole seconds, so they need a longer window than records).
fn rates(scrapes: &[Scrape], key: &str, window: usize) -> Series {
    let mut by: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for s in scrapes {
        if let Some(v) = s.values.get(key) {
            by.entry(&s.processor).or_default().push((s.t, *v));
        }
    }
    by.into_iter()
        .map(|(p, points)| {
            let r = points
                .windows(window.max(1) + 1)
                .map(|w| {
                    let (first, last) = (w[0], w[w.len() - 1]);
                    (last.0, (last.1 - first.1).max(0.0) / (last.0 - first.0))
                })
                .collect();
            (p.to_string(), r)
        })
        .filter(|(_, r): &(String, Vec<(f64, f64)>)| r.iter().any(|p| p.1 > 0.0))
        .collect()
}

/// Per processor, a gauge's value.
fn gauges(scrapes: &[Scrape], key: &str, scale: f64) -> Series {
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in scrapes {
        if let Some(v) = s.values.get(key) {
            by.entry(s.processor.clone())
                .or_default()
                .push((s.t, v * scale));
        }
    }
    by.into_iter().collect()
}

/// Rates of the keys starting with `prefix`, summed over processors, one series per key.
fn rates_by_key(scrapes: &[Scrape], prefix: &str) -> Series {
    let mut summed: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for s in scrapes {
        for (k, v) in s.values.range(prefix.to_string()..) {
            let Some(kind) = k.strip_prefix(prefix) else {
                break;
            };
            *summed
                .entry(kind.to_string())
                .or_default()
                .entry((s.t * 1000.0) as u64)
                .or_insert(0.0) += v;
        }
    }
    summed
        .into_iter()
        .map(|(kind, points)| {
            let points: Vec<(f64, f64)> = points
                .into_iter()
                .map(|(t, v)| (t as f64 / 1e3, v))
                .collect();
            let r = points
                .windows(2)
                .map(|w| (w[1].0, (w[1].1 - w[0].1).max(0.0) / (w[1].0 - w[0].0)))
                .collect();
            (kind, r)
        })
        .filter(|(_, r): &(String, Vec<(f64, f64)>)| r.iter().any(|p| p.1 > 0.0))
        .collect()
}

/// p50 and p99 of the end-to-end latency of the delivery processors (the last hop, so event
/// time to delivered), over `window` scrapes, as `histogram_quantile` interpolates buckets.
fn e2e_quantiles(scrapes: &[Scrape], window: usize) -> Series {
    let mut at: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
    for s in scrapes
        .iter()
        .filter(|s| s.processor.starts_with("deliver-"))
    {
        let slot = at.entry((s.t * 1000.0) as u64).or_default();
        for (k, v) in s.values.range("e2e:".to_string()..) {
            let Some(le) = k.strip_prefix("e2e:") else {
                break;
            };
            *slot.entry(le.to_string()).or_insert(0.0) += v;
        }
    }
    let points: Vec<(f64, BTreeMap<String, f64>)> =
        at.into_iter().map(|(t, b)| (t as f64 / 1e3, b)).collect();
    let mut out: Series = vec![("p50".into(), Vec::new()), ("p99".into(), Vec::new())];
    for w in points.windows(window.max(2)) {
        let (first, last) = (&w[0].1, &w[w.len() - 1].1);
        let mut buckets: Vec<(f64, f64)> = last
            .iter()
            .map(|(le, v)| {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                (bound, v - first.get(le).copied().unwrap_or(0.0))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (i, q) in [0.5, 0.99].into_iter().enumerate() {
            if let Some(v) = quantile(&buckets, q) {
                out[i].1.push((w[w.len() - 1].0, v));
            }
        }
    }
    out
}

/// `histogram_quantile` over cumulative (upper bound, count) buckets.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(prev.0);
            }
            let share = (rank - prev.1) / (count - prev.1).max(f64::MIN_POSITIVE);
            return Some(prev.0 + (bound - prev.0) * share);
        }
        prev = (bound, count);
    }
    None
}

/// Draws the six main panels into `path`.
pub fn draw(scrapes: &[Scrape], path: &Path) -> anyhow::Result<()> {
    crate::plot::fonts()?;
    let panels: [(&str, &str, Series); 6] = [
        (
            "Records consumed/s per processor",
            "records/s",
            rates(scrapes, "consumed", 1),
        ),
        (
            "Consumer lag per processor",
            "records",
            gauges(scrapes, "lag", 1.0),
        ),
        (
            "End-to-end latency at delivery (5 s windows)",
            "seconds",
            e2e_quantiles(scrapes, 6),
        ),
        (
            "Delivery outcomes/s by kind",
            "statuses/s",
            rates_by_key(scrapes, "outcome:"),
        ),
        (
            "CPU per processor (10 s windows)",
            "cores",
            rates(scrapes, "cpu", 10),
        ),
        (
            "Resident memory per processor",
            "MiB",
            gauges(scrapes, "rss", 1.0 / 1_048_576.0),
        ),
    ];
    let root = BitMapBackend::new(path, (1500, 1260)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let x_max = scrapes.iter().map(|s| s.t).fold(1.0, f64::max);
    for (area, (title, unit, series)) in root.split_evenly((3, 2)).iter().zip(panels) {
        let y_max = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(unit)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        crate::plot::draw_lines(&mut chart, &series, SeriesLabelPosition::UpperRight, 13)?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_buckets_like_promql() {
        let b = [
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 0.5).unwrap() - 0.1).abs() < 1e-9);
        assert!((quantile(&b, 0.99).unwrap() - 0.95).abs() < 1e-9);
        assert_eq!(quantile(&[(1.0, 0.0)], 0.5), None);
    }

    #[test]
    fn scrapes_keep_the_panel_series() {
        let v = parse(
            "# TYPE x counter\nnotify_records_consumed_total{topic=\"a\",processor=\"chain\"} 3\n\
             notify_records_consumed_total{topic=\"b\",processor=\"chain\"} 4\n\
             notify_end_to_end_latency_seconds_bucket{le=\"0.5\",processor=\"chain\"} 2\n\
             notify_other 9\n",
        );
        assert_eq!(v.get("consumed"), Some(&7.0));
        assert_eq!(v.get("e2e:0.5"), Some(&2.0));
        assert_eq!(v.len(), 2);
    }
}
