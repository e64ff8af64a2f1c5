//! Runs one scenario against two brokers alternately (a, b, a, b, ...) so drift on the machine
//! hits both alike, then reports per-metric medians and the ratio a/b.

use serde_json::{json, Value};

use crate::error::Result;
use crate::opts::Opts;
use crate::report::{format_value, median_reports, Report};

pub struct Side {
    pub label: String,
    pub url: String,
    pub pid: Option<u32>,
    /// Replaces the scenario's `--poll-api` for this side's runs.
    pub poll_api: Option<String>,
}

pub struct Comparison {
    pub a_label: String,
    pub b_label: String,
    pub a: Vec<Report>,
    pub b: Vec<Report>,
    pub runs: usize,
    pub failures: Vec<String>,
}

pub fn compare(
    opts: &Opts,
    sides: [&Side; 2],
    runs: usize,
    run: impl Fn(&Opts) -> Result<Vec<Report>>,
) -> Comparison {
    let mut results: [Vec<Vec<Report>>; 2] = [Vec::new(), Vec::new()];
    let mut failures = Vec::new();
    for round in 0..runs {
        for (index, side) in sides.iter().enumerate() {
            let mut side_opts = opts.clone();
            side_opts.url = side.url.clone();
            side_opts.pid = side.pid;
            if side.poll_api.is_some() {
                side_opts.poll_api = side.poll_api.clone();
            }
            eprintln!("compare: run {}/{runs} on {}", round + 1, side.label);
            match run(&side_opts) {
                Ok(reports) => results[index].push(reports),
                Err(error) => {
                    eprintln!("compare: {} run {} failed: {error}", side.label, round + 1);
                    failures.push(format!("{} run {}: {error}", side.label, round + 1));
                }
            }
        }
    }
    let [a_runs, b_runs] = results;
    Comparison {
        a_label: sides[0].label.clone(),
        b_label: sides[1].label.clone(),
        a: median_reports(&a_runs),
        b: median_reports(&b_runs),
        runs,
        failures,
    }
}

impl Comparison {
    /// A markdown table: one row per (report, metric), medians and a/b.
    pub fn table(&self) -> String {
        let mut out = format!(
            "| scenario | metric | {} | {} | {}/{} |\n|---|---|---:|---:|---:|\n",
            self.a_label, self.b_label, self.a_label, self.b_label
        );
        let count = self.a.len().max(self.b.len());
        for index in 0..count {
            let shape = self.a.get(index).or_else(|| self.b.get(index));
            let Some(shape) = shape else { continue };
            // a's metrics, then those only b has (e.g. the poll figures of a polled side).
            let mut names: Vec<&str> = shape.metrics.iter().map(|(n, _)| n.as_str()).collect();
            if let Some(b) = self.b.get(index) {
                for (name, _) in &b.metrics {
                    if !names.contains(&name.as_str()) {
                        names.push(name);
                    }
                }
            }
            for name in names {
                let a = self.a.get(index).and_then(|r| r.get(name));
                let b = self.b.get(index).and_then(|r| r.get(name));
                let ratio = match (a, b) {
                    (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
                    _ => "n/a".to_string(),
                };
                let show = |v: Option<f64>| v.map_or("n/a".to_string(), format_value);
                out.push_str(&format!(
                    "| {} | {name} | {} | {} | {ratio} |\n",
                    shape.title(),
                    show(a),
                    show(b)
                ));
            }
        }
        for failure in &self.failures {
            out.push_str(&format!("\nfailed: {failure}\n"));
        }
        out
    }

    pub fn to_json(&self) -> Value {
        json!({
            "a_label": self.a_label,
            "b_label": self.b_label,
            "runs": self.runs,
            "a": self.a.iter().map(Report::to_json).collect::<Vec<_>>(),
            "b": self.b.iter().map(Report::to_json).collect::<Vec<_>>(),
            "failures": self.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn alternates_and_takes_medians() {
        let opts = test_opts();
        let calls = Cell::new(0);
        let a = Side {
            label: "a".into(),
            url: "amqp://a".into(),
            pid: None,
            poll_api: None,
        };
        let b = Side {
            label: "b".into(),
            url: "amqp://b".into(),
            pid: Some(7),
            poll_api: Some("http://b/api/queues".into()),
        };
        let c = compare(&opts, [&a, &b], 3, |o| {
            let n = calls.get();
            calls.set(n + 1);
            // a, b, a, b, a, b
            assert_eq!(o.url, if n % 2 == 0 { "amqp://a" } else { "amqp://b" });
            let polled = (n % 2 == 1).then_some("http://b/api/queues");
            assert_eq!(o.poll_api.as_deref(), polled);
            let mut r = Report::new("t", "");
            let base = if n % 2 == 0 { 100.0 } else { 10.0 };
            r.push("rate", base + n as f64);
            if n % 2 == 1 {
                r.push("polls", 5.0);
            }
            Ok(vec![r])
        });
        assert_eq!(calls.get(), 6);
        assert_eq!(c.a[0].get("rate"), Some(102.0));
        assert_eq!(c.b[0].get("rate"), Some(13.0));
        assert!(
            c.table().contains("| t | rate | 102 | 13 | 7.85 |"),
            "{}",
            c.table()
        );
        assert!(
            c.table().contains("| t | polls | n/a | 5 | n/a |"),
            "{}",
            c.table()
        );
    }

    fn test_opts() -> Opts {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            opts: Opts,
        }
        P::parse_from(["x"]).opts
    }
}
