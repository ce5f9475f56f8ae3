//! PNG plots drawn by the harness: throughput over time and the latency distribution.
//! Text uses the DejaVu font compiled into the binary, so no system font is looked up.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::report::Report;
use crate::report::sections::quantile;
use crate::stage;

const SIZE: (u32, u32) = (1000, 560);
pub(crate) const COLOURS: [RGBColor; 9] = [
    BLUE,
    RED,
    GREEN,
    MAGENTA,
    CYAN,
    BLACK,
    RGBColor(255, 140, 0),
    RGBColor(128, 0, 128),
    RGBColor(128, 128, 0),
];

pub(crate) fn fonts() -> anyhow::Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow!("embedded DejaVu font is unreadable"))
}

/// Draws every plot the report has data for; returns the files written.
pub fn draw(r: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fonts()?;
    let mut files = Vec::new();
    let series: Vec<(String, Vec<(f64, f64)>)> = r
        .hops
        .iter()
        .map(|h| (h.label.clone(), &h.samples))
        .chain(
            r.stages
                .iter()
                .filter_map(|(n, s)| s.as_ref().ok().map(|s| (n.clone(), &s.samples))),
        )
        .map(|(label, samples)| (label, smooth(&stage::timeline(samples), 5)))
        .collect();
    // A run of other parts only (`--only pipeline`) has nothing to draw here.
    if !series.is_empty() {
        let path = dir.join("throughput.png");
        throughput(
            &path,
            "Output records/s over time (each processor from its start)",
            &series,
        )?;
        files.push(path);
    }
    let lat: Vec<(String, Vec<f64>)> = r
        .hops
        .iter()
        .filter(|h| !h.latencies_ms.is_empty())
        .map(|h| {
            (
                format!("{} at {:.0}/s", h.label, h.latency_rate),
                h.latencies_ms.clone(),
            )
        })
        .collect();
    cdf_if_any(
        dir.join("latency.png"),
        "No-op hop latency (created_at to output append), CDF",
        &lat,
        &mut files,
    )?;
    for (mode, run) in &r.pipelines {
        if let Ok(p) = run {
            pipeline(p, mode.label(), dir, &mut files)?;
        }
    }
    against_load(r, dir, &mut files)?;
    Ok(files)
}

/// The latency CDF of `series` into `path`, unless there is nothing to draw.
fn cdf_if_any(
    path: PathBuf,
    title: &str,
    series: &[(String, Vec<f64>)],
    files: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    if !series.is_empty() {
        latency_cdf(&path, title, series)?;
        files.push(path);
    }
    Ok(())
}

/// The whole pipeline: statuses and requests per second over the run, and the end-to-end
/// latency distribution at each load.
fn pipeline(
    p: &crate::pipeline::PipelineResult,
    mode: &str,
    dir: &Path,
    files: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let path = dir.join(format!("pipeline-{mode}-throughput.png"));
    throughput(
        &path,
        &format!(
            "Whole pipeline ({mode}): terminal statuses/s and open-loop requests/s (1 s buckets)"
        ),
        &[
            ("terminal statuses/s".into(), p.statuses_timeline.clone()),
            ("requests sent/s".into(), p.sent_timeline.clone()),
        ],
    )?;
    files.push(path);
    if !p.dashboard.is_empty() {
        let path = dir.join(format!("dashboard-{mode}.png"));
        crate::dashboard::draw(&p.dashboard, &path)?;
        files.push(path);
    }
    let lat: Vec<(String, Vec<f64>)> = p
        .loads
        .iter()
        .filter(|l| !l.latencies_ms.is_empty())
        .map(|l| {
            (
                format!("{:.0}% ({:.0} requests/s)", 100.0 * l.fraction, l.rate),
                l.latencies_ms.clone(),
            )
        })
        .collect();
    cdf_if_any(
        dir.join(format!("pipeline-{mode}-latency.png")),
        &format!("Whole pipeline ({mode}) latency (created_at to SENT status append), CDF"),
        &lat,
        files,
    )
}

/// Requests completed per second and p99 latency against the offered load, each mode a line.
fn against_load(r: &Report, dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let runs: Vec<(&str, &crate::pipeline::PipelineResult)> = r
        .pipelines
        .iter()
        .filter_map(|(m, run)| run.as_ref().ok().map(|p| (m.label(), p)))
        .filter(|(_, p)| !p.loads.is_empty())
        .collect();
    if runs.is_empty() {
        return Ok(());
    }
    let calls = crate::pipeline::CALLS_PER_REQUEST as f64;
    let done: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(m, p)| {
            let points = p.loads.iter().map(|l| (l.rate, l.statuses_per_s / calls));
            (m.to_string(), points.collect())
        })
        .collect();
    let path = dir.join("pipeline-load-throughput.png");
    lines(
        &path,
        "Whole pipeline: requests completed/s against requests offered/s",
        (
            "requests/s offered",
            "requests/s completed (terminal statuses / 3)",
        ),
        &done,
    )?;
    files.push(path);
    let p99: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(m, p)| {
            let points = p.loads.iter().map(|l| {
                (
                    l.rate,
                    crate::report::sections::quantile(&l.latencies_ms, 0.99),
                )
            });
            (m.to_string(), points.filter(|q| q.1.is_finite()).collect())
        })
        .collect();
    let path = dir.join("pipeline-load-p99.png");
    lines(
        &path,
        "Whole pipeline: p99 latency (created_at to SENT) against requests offered/s",
        ("requests/s offered", "p99 ms"),
        &p99,
    )?;
    files.push(path);
    Ok(())
}

/// Moving average over `k` points: 100 ms samples are too jumpy to read.
fn smooth(points: &[(f64, f64)], k: usize) -> Vec<(f64, f64)> {
    points
        .windows(k.max(1))
        .map(|w| {
            (
                w[w.len() - 1].0,
                w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
            )
        })
        .collect()
}

fn throughput(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    lines(
        path,
        title,
        ("seconds since the processor started", "records/s"),
        series,
    )
}

/// Line series on one chart, axes from zero to the largest value.
fn lines(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let x_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    draw_lines(&mut chart, series, SeriesLabelPosition::UpperRight, 15)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Each series as a line in its own colour, with a legend of their labels at `legend`
/// (text `font_px` high; none when there is no series).
pub(crate) fn draw_lines<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    series: &[(String, Vec<(f64, f64)>)],
    legend: SeriesLabelPosition,
    font_px: u32,
) -> anyhow::Result<()> {
    let stroke = font_px as i32 + 5;
    for (i, (label, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + stroke, y)], colour.stroke_width(2))
            });
    }
    if series.is_empty() {
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font(("sans-serif", font_px))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

pub fn latency_cdf(path: &Path, title: &str, series: &[(String, Vec<f64>)]) -> anyhow::Result<()> {
    let x_max = series
        .iter()
        .map(|s| quantile(&s.1, 0.999))
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.05;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..100.0)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("latency, ms")
        .y_desc("% of records at or below")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let curves: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, values)| {
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            let n = v.len().max(1) as f64;
            let step = (v.len() / 2_000).max(1);
            let points = v
                .iter()
                .enumerate()
                .step_by(step)
                .map(|(j, x)| (x.min(x_max), 100.0 * (j + 1) as f64 / n))
                .collect();
            (label.clone(), points)
        })
        .collect();
    draw_lines(&mut chart, &curves, SeriesLabelPosition::LowerRight, 15)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
