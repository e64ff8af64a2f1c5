//! Results: named metrics (units in the name), a human table, JSON, and medians for compare.

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub scenario: String,
    /// e.g. "rate=10000"; empty when the scenario has one point.
    pub label: String,
    pub metrics: Vec<(String, f64)>,
}

/// The percentiles every latency report carries, as (metric suffix, quantile).
pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p99", 0.99),
    ("p99_9", 0.999),
    ("p99_99", 0.9999),
    ("max", 1.0),
];

impl Report {
    pub fn new(scenario: &str, label: impl Into<String>) -> Report {
        Report {
            scenario: scenario.to_string(),
            label: label.into(),
            metrics: Vec::new(),
        }
    }

    pub fn push(&mut self, name: &str, value: f64) {
        self.metrics.push((name.to_string(), value));
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }

    /// latency_us_p50 … latency_us_max from a nanosecond histogram (nothing when empty).
    pub fn push_latency(&mut self, histogram: &Histogram<u64>) {
        self.push_latency_as("latency", histogram);
    }

    /// `<prefix>_us_p50` … `<prefix>_us_max` and `<prefix>_samples` (nothing when empty).
    pub fn push_latency_as(&mut self, prefix: &str, histogram: &Histogram<u64>) {
        if histogram.is_empty() {
            return;
        }
        for (name, quantile) in PERCENTILES {
            let ns = if quantile >= 1.0 {
                histogram.max()
            } else {
                histogram.value_at_quantile(quantile)
            };
            self.push(&format!("{prefix}_us_{name}"), ns as f64 / 1000.0);
        }
        self.push(&format!("{prefix}_samples"), histogram.len() as f64);
    }

    pub fn title(&self) -> String {
        if self.label.is_empty() {
            self.scenario.clone()
        } else {
            format!("{} {}", self.scenario, self.label)
        }
    }

    pub fn to_json(&self) -> Value {
        let mut metrics = Map::new();
        for (name, value) in &self.metrics {
            metrics.insert(name.clone(), json!(value));
        }
        json!({ "scenario": self.scenario, "label": self.label, "metrics": metrics })
    }

    pub fn from_json(value: &Value) -> Option<Report> {
        let metrics = value
            .get("metrics")?
            .as_object()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect();
        Some(Report {
            scenario: value.get("scenario")?.as_str()?.to_string(),
            label: value.get("label")?.as_str()?.to_string(),
            metrics,
        })
    }

    pub fn table(&self) -> String {
        let mut out = format!("== {}\n", self.title());
        for (name, value) in &self.metrics {
            out.push_str(&format!("  {name:<28} {}\n", format_value(*value)));
        }
        out
    }
}

/// Human numbers: integers with thousands separators, small values with two decimals.
pub fn format_value(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_string();
    }
    if value.abs() >= 1000.0 || value.fract() == 0.0 {
        let rounded = value.round() as i128;
        let digits = rounded.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if rounded < 0 {
            grouped.insert(0, '-');
        }
        grouped
    } else {
        format!("{value:.2}")
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Per report position and metric, the median over runs. Runs should have the same shape;
/// a metric missing from some runs takes the median of the runs that have it.
pub fn median_reports(runs: &[Vec<Report>]) -> Vec<Report> {
    let Some(first) = runs.iter().max_by_key(|r| r.len()) else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(index, shape)| {
            let mut out = Report::new(&shape.scenario, shape.label.clone());
            for (name, _) in &shape.metrics {
                let mut values: Vec<f64> = runs
                    .iter()
                    .filter_map(|run| run.get(index)?.get(name))
                    .collect();
                out.push(name, median(&mut values));
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
        let run = |v: f64| {
            let mut r = Report::new("t", "");
            r.push("x", v);
            vec![r]
        };
        let m = median_reports(&[run(5.0), run(1.0), run(3.0)]);
        assert_eq!(m[0].get("x"), Some(3.0));
    }

    #[test]
    fn json_round_trip_and_format() {
        let mut r = Report::new("latency", "rate=10");
        r.push("latency_us_p99", 12.5);
        let back = Report::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert_eq!(format_value(1234567.0), "1,234,567");
        assert_eq!(format_value(-1000.0), "-1,000");
        assert_eq!(format_value(12.345), "12.35");
        assert_eq!(format_value(f64::NAN), "n/a");
    }

    #[test]
    fn latency_percentiles() {
        let mut h = crate::workers::new_histogram();
        for us in 1..=100u64 {
            h.record(us * 1000).unwrap();
        }
        let mut r = Report::new("l", "");
        r.push_latency(&h);
        let p50 = r.get("latency_us_p50").unwrap();
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        assert!(r.get("latency_us_max").unwrap() >= 99.9);
    }
}
