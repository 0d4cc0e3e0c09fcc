//! `--plot FILE.svg`: latency over the run (p50, p99 and max per second of arrival) above a
//! histogram of all latencies up to the p99.9.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::ledger::Latencies;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 800;
const BUCKETS: u64 = 60;

pub fn write_svg(path: &Path, title: &str, latencies: &Latencies) -> anyhow::Result<()> {
    let timeline = latencies.timeline_ms();
    let distribution = latencies.distribution_ms(BUCKETS);
    if timeline.is_empty() {
        return Err(anyhow!("no latencies recorded: nothing to plot"));
    }
    let root = white_svg(path, HEIGHT)?;
    let (upper, lower) = root.split_vertically(HEIGHT / 2);

    let last_second = timeline.last().map_or(1, |t| t.0 + 1);
    let top_ms = timeline.iter().map(|t| t.3).fold(1.0, f64::max) * 1.05;
    let mut chart = chart_on(
        &upper,
        format!("{title}: latency per second"),
        Frame(20, 10, 35, 55),
    )
    .build_cartesian_2d(0u32..last_second, 0f64..top_ms)
    .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("second of the run")
        .y_desc("ms")
        .draw()
        .map_err(plot_error)?;
    for (name, color, pick) in [("p50", BLUE, 1usize), ("p99", RED, 2), ("max", BLACK, 3)] {
        let points = timeline.iter().map(move |t| {
            let value = match pick {
                1 => t.1,
                2 => t.2,
                _ => t.3,
            };
            (t.0, value)
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    draw_legend(&mut chart)?;

    let width_ms = distribution.get(1).map_or(1.0, |b| b.0).max(0.001);
    let end_ms = distribution.last().map_or(1.0, |b| b.0) + width_ms;
    let top_count = distribution.iter().map(|b| b.1).max().unwrap_or(1) as f64 * 1.05;
    let mut chart = chart_on(
        &lower,
        "latency histogram (to p99.9)",
        Frame(20, 10, 35, 55),
    )
    .build_cartesian_2d(0f64..end_ms, 0f64..top_count)
    .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("ms")
        .y_desc("deliveries")
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(distribution.iter().map(|(start, count)| {
            Rectangle::new(
                [(*start, 0.0), (*start + width_ms, *count as f64)],
                BLUE.mix(0.6).filled(),
            )
        }))
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// A `WIDTH` × `height` SVG at `path`, filled white.
fn white_svg(
    path: &Path,
    height: u32,
) -> anyhow::Result<DrawingArea<SVGBackend<'_>, plotters::coord::Shift>> {
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    Ok(root)
}

/// A chart's caption font size, margin, and x and y label area sizes, in pixels.
struct Frame(u32, u32, u32, u32);

/// A chart on `area` with `caption`, laid out as `frame` says.
fn chart_on<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: impl AsRef<str>,
    Frame(font, margin, x_labels, y_labels): Frame,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", font))
        .margin(margin)
        .x_label_area_size(x_labels)
        .y_label_area_size(y_labels);
    builder
}

/// The series' labels, boxed on a translucent white.
fn draw_legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

fn plot_error<E: std::fmt::Display>(error: E) -> anyhow::Error {
    anyhow!("plotting: {error}")
}

/// Bars, one chart per group (e.g. a fanout shape) stacked vertically, one bar per (label, value),
/// the value written above it: `compare --plot`.
pub fn write_bars(
    path: &Path,
    what: &str,
    groups: &[(String, Vec<(String, f64)>)],
) -> anyhow::Result<()> {
    if groups.is_empty() {
        return Err(anyhow!("nothing to plot"));
    }
    let height = 360 * groups.len() as u32;
    let root = white_svg(path, height)?;
    for (area, (title, bars)) in root.split_evenly((groups.len(), 1)).iter().zip(groups) {
        let n = bars.len().max(1) as f64;
        let top = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.2;
        let mut chart = chart_on(area, format!("{what}: {title}"), Frame(20, 10, 10, 80))
            .build_cartesian_2d(0f64..n, 0f64..top)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc(what)
            .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
                let x = i as f64;
                Rectangle::new(
                    [(x + 0.15, 0.0), (x + 0.85, *value)],
                    BLUE.mix(0.6).filled(),
                )
            }))
            .map_err(plot_error)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (label, value))| {
                Text::new(
                    format!("{label}: {:.0}k", value / 1000.0),
                    (i as f64 + 0.15, *value + top * 0.04),
                    ("sans-serif", 14),
                )
            }))
            .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

/// One line: (x, y) points.
type Series = Vec<(f64, f64)>;

/// `soak --plot`: over the run, our clients' connections, each server's RSS and open fds,
/// deliveries per second and the p99 latency, one chart each, stacked.
pub fn write_soak(
    path: &Path,
    samples: &[crate::scenario::soak::Sample],
    latencies: &Latencies,
) -> anyhow::Result<()> {
    if samples.len() < 2 {
        return Err(anyhow!("fewer than two samples: nothing to plot"));
    }
    let n_nodes = samples.iter().map(|s| s.nodes.len()).max().unwrap_or(0);
    let per_node = |pick: fn(&crate::scenario::soak::NodeSample) -> f64| -> Vec<Series> {
        (0..n_nodes)
            .map(|k| {
                samples
                    .iter()
                    .filter_map(|s| Some((s.at_s, pick(s.nodes.get(k)?.as_ref()?))))
                    .collect()
            })
            .collect()
    };
    let connections = vec![samples
        .iter()
        .map(|s| (s.at_s, s.connected as f64))
        .collect()];
    let deliveries = vec![samples
        .windows(2)
        .map(|w| {
            let seconds = (w[1].at_s - w[0].at_s).max(0.001);
            (
                w[1].at_s,
                w[1].delivered.saturating_sub(w[0].delivered) as f64 / seconds,
            )
        })
        .collect()];
    let p99 = vec![latencies
        .timeline_ms()
        .into_iter()
        .map(|(second, _, p99, _)| (second as f64, p99))
        .collect()];
    let charts: [(&str, &str, Vec<Series>); 5] = [
        ("connections", "clients connected", connections),
        (
            "server RSS",
            "MiB",
            per_node(|n| n.rss_bytes as f64 / 1048576.0),
        ),
        ("server open fds", "fds", per_node(|n| n.fds as f64)),
        ("deliveries", "per second", deliveries),
        ("latency p99", "ms", p99),
    ];
    let end_s = samples.last().map_or(1.0, |s| s.at_s).max(1.0);
    let height = 260 * charts.len() as u32;
    let root = white_svg(path, height)?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (area, (title, unit, series)) in root.split_evenly((charts.len(), 1)).iter().zip(charts) {
        let top = series.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = chart_on(area, format!("soak: {title}"), Frame(18, 8, 30, 60))
            .build_cartesian_2d(0f64..end_s, 0f64..top)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(unit)
            .draw()
            .map_err(plot_error)?;
        let several = series.len() > 1;
        for (k, points) in series.into_iter().enumerate() {
            let color = colors[k % colors.len()];
            let drawn = chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_error)?;
            if several {
                drawn
                    .label(format!("node {k}"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
        }
        if several {
            draw_legend(&mut chart)?;
        }
    }
    root.present().map_err(plot_error)?;
    Ok(())
}
