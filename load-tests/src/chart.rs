//! SVG charts of a run (and of several side by side): throughput, latency and resources over
//! time. plotters' SVG backend only: text is measured by its built-in estimate, so no font
//! library (fontconfig, freetype) is needed.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Point, Report};

type Res = anyhow::Result<()>;

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("chart: {e:?}")
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

struct Line<'a> {
    label: String,
    points: Vec<(f64, f64)>,
    color: &'a RGBColor,
}

fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    lines: &[Line],
    x_max: f64,
) -> Res {
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max.max(1.0), 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_desc)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for line in lines {
        let color = *line.color;
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(line.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(err)?;
    Ok(())
}

fn series(points: &[Point], f: impl Fn(&Point) -> Option<f64>) -> Vec<(f64, f64)> {
    points.iter().filter_map(|p| Some((p.t, f(p)?))).collect()
}

/// One run: throughput, delivery latency, connections and server resources over time.
///
/// # Errors
/// The file cannot be written.
pub fn run_chart(report: &Report, path: &Path) -> Res {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let s = &report.series;
    let x_max = s.last().map_or(1.0, |p| p.t);
    let root = SVGBackend::new(path, (960, 960)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            &format!("{} against {}", report.scenario, report.label),
            ("sans-serif", 20),
        )
        .map_err(err)?;
    let areas = root.split_evenly((3, 1));
    panel(
        &areas[0],
        "throughput",
        "per second",
        &[
            Line {
                label: "messages delivered/s".into(),
                points: series(s, |p| Some(p.delivered_per_s)),
                color: &PALETTE[0],
            },
            Line {
                label: "connections/s".into(),
                points: series(s, |p| Some(p.connects_per_s)),
                color: &PALETTE[2],
            },
        ],
        x_max,
    )?;
    panel(
        &areas[1],
        "delivery latency (both directions, per second)",
        "ms",
        &[
            Line {
                label: "p50".into(),
                points: series(s, |p| p.latency_p50_us.map(|v| v as f64 / 1000.0)),
                color: &PALETTE[0],
            },
            Line {
                label: "p99".into(),
                points: series(s, |p| p.latency_p99_us.map(|v| v as f64 / 1000.0)),
                color: &PALETTE[1],
            },
        ],
        x_max,
    )?;
    panel(
        &areas[2],
        "connections and server",
        "",
        &[
            Line {
                label: "open sockets / 100".into(),
                points: series(s, |p| Some(p.open as f64 / 100.0)),
                color: &PALETTE[2],
            },
            Line {
                label: "server RSS MiB".into(),
                points: series(s, |p| Some(p.server_rss_kib as f64 / 1024.0)),
                color: &PALETTE[4],
            },
            Line {
                label: "server CPU %".into(),
                points: series(s, |p| Some(p.server_cpu_percent)),
                color: &PALETTE[3],
            },
            Line {
                label: "generator CPU %".into(),
                points: series(s, |p| Some(p.generator_cpu_percent)),
                color: &PALETTE[5],
            },
        ],
        x_max,
    )?;
    root.present().map_err(err)?;
    Ok(())
}

/// Several runs on the same axes: per label, the round with the median steady throughput.
///
/// # Errors
/// The file cannot be written.
pub fn compare_chart(reports: &[Report], path: &Path) -> Res {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut chosen: Vec<&Report> = Vec::new();
    for r in reports {
        if chosen.iter().any(|c| c.label == r.label) {
            continue;
        }
        let mut rounds: Vec<&Report> = reports.iter().filter(|o| o.label == r.label).collect();
        rounds.sort_by(|a, b| a.messages.steady_per_s.total_cmp(&b.messages.steady_per_s));
        chosen.push(rounds[(rounds.len() - 1) / 2]);
    }
    let x_max = chosen
        .iter()
        .filter_map(|r| r.series.last().map(|p| p.t))
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (960, 960)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let title = format!(
        "{}: {}",
        chosen.first().map_or("", |r| r.scenario.as_str()),
        chosen
            .iter()
            .map(|r| r.label.as_str())
            .collect::<Vec<_>>()
            .join(" vs ")
    );
    let root = root.titled(&title, ("sans-serif", 20)).map_err(err)?;
    let areas = root.split_evenly((3, 1));
    let lines = |f: &dyn Fn(&Point) -> Option<f64>| -> Vec<Line> {
        chosen
            .iter()
            .enumerate()
            .map(|(i, r)| Line {
                label: r.label.clone(),
                points: series(&r.series, f),
                color: &PALETTE[i % PALETTE.len()],
            })
            .collect()
    };
    panel(
        &areas[0],
        "messages delivered per second",
        "msg/s",
        &lines(&|p| Some(p.delivered_per_s)),
        x_max,
    )?;
    panel(
        &areas[1],
        "delivery latency p99 (per second)",
        "ms",
        &lines(&|p| p.latency_p99_us.map(|v| v as f64 / 1000.0)),
        x_max,
    )?;
    panel(
        &areas[2],
        "server CPU",
        "% of one core",
        &lines(&|p| Some(p.server_cpu_percent)),
        x_max,
    )?;
    root.present().map_err(err)?;
    Ok(())
}
