//! A PNG of latency percentiles against the offered rate, for one or two brokers, from the JSON
//! of a sweep (`latency --sweep ... --json`) or of a compare of one.

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use crate::error::{PerfError, Result};
use crate::report::Report;

/// Fonts tried in order; text needs one (Debian: fonts-dejavu-core).
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
const PLOT_WIDTH_PX: u32 = 1000;
const PLOT_HEIGHT_PX: u32 = 650;
/// The percentiles drawn, as (metric, legend text).
const PLOTTED: [(&str, &str); 3] = [
    ("latency_us_p50", "p50"),
    ("latency_us_p99", "p99"),
    ("latency_us_p99_9", "p99.9"),
];

/// One broker's latency points: (rate, metric values in PLOTTED order).
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, [f64; 3])>,
}

/// Reads a JSON file: a compare (two series) or a plain list of reports (one series).
pub fn load_series(path: &Path, label: &str) -> Result<Vec<Series>> {
    let text = std::fs::read_to_string(path)?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| PerfError::Args(format!("{}: {e}", path.display())))?;
    if let (Some(a), Some(b)) = (value.get("a"), value.get("b")) {
        let name = |key: &str, default: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        return Ok(vec![
            series(name("a_label", "a"), a),
            series(name("b_label", "b"), b),
        ]);
    }
    Ok(vec![series(label.to_string(), &value)])
}

fn series(label: String, reports: &Value) -> Series {
    let reports = reports.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut points: Vec<(f64, [f64; 3])> = reports
        .iter()
        .filter_map(Report::from_json)
        .filter_map(|r| {
            let rate = r.get("rate_target")?;
            let mut values = [0.0; 3];
            for (slot, (metric, _)) in values.iter_mut().zip(PLOTTED) {
                *slot = r.get(metric)?;
            }
            Some((rate, values))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Series { label, points }
}

pub fn load_font() -> Result<()> {
    for path in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(path) {
            // plotters keeps fonts for the life of the process; this runs once per plot command.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    Err(PerfError::Args(
        "no TTF font found for plot text (apt-get install fonts-dejavu-core)".into(),
    ))
}

pub fn plot(series: &[Series], out: &Path, title: &str) -> Result<()> {
    load_font()?;
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::MAX, 1.0f64);
    for (rate, values) in points {
        x_max = x_max.max(*rate);
        for v in values {
            y_min = y_min.min(*v);
            y_max = y_max.max(*v);
        }
    }
    if y_min == f64::MAX {
        return Err(PerfError::Args(
            "no latency points with rate_target in input".into(),
        ));
    }
    let y_min = (y_min / 2.0).max(0.1);
    let y_max = y_max * 2.0;
    let draw_error = |e: &dyn std::fmt::Display| PerfError::Unexpected(format!("plot: {e}"));
    let root = BitMapBackend::new(out, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max * 1.05, (y_min..y_max).log_scale())
        .map_err(|e| draw_error(&e))?;
    chart
        .configure_mesh()
        .x_desc("offered rate (msg/s)")
        .y_desc("latency (µs, log)")
        .draw()
        .map_err(|e| draw_error(&e))?;
    let palette = [
        [
            RGBColor(31, 119, 180),
            RGBColor(100, 170, 230),
            RGBColor(10, 60, 110),
        ],
        [
            RGBColor(214, 39, 40),
            RGBColor(240, 120, 110),
            RGBColor(130, 20, 20),
        ],
    ];
    for (s_index, s) in series.iter().enumerate() {
        let colors = palette[s_index % palette.len()];
        for (p_index, (_, name)) in PLOTTED.iter().enumerate() {
            let color = colors[p_index];
            let data: Vec<(f64, f64)> = s.points.iter().map(|(r, v)| (*r, v[p_index])).collect();
            chart
                .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))
                .map_err(|e| draw_error(&e))?
                .label(format!("{} {name}", s.label))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(data.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| draw_error(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| draw_error(&e))?;
    root.present().map_err(|e| draw_error(&e))?;
    Ok(())
}
