//! How results are printed: an aligned table with a header line (the default), or with
//! `--formatter json` a JSON array of objects keyed by the requested columns, as rabbitmqctl's.

use serde_json::{Map, Value};

use super::error::CtlError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Formatter {
    Table,
    Json,
}

impl Formatter {
    pub fn parse(name: &str) -> Result<Formatter, CtlError> {
        match name {
            "table" | "pretty_table" | "tsv" => Ok(Formatter::Table),
            "json" => Ok(Formatter::Json),
            other => Err(CtlError::Usage(format!(
                "unknown formatter '{other}' (table or json)"
            ))),
        }
    }
}

/// Rows of one listing: every row holds one value per column, in column order.
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    /// `header`: the column names' line of a table (`--silent` drops it; json always names).
    pub fn render(&self, formatter: Formatter, header: bool) -> String {
        match formatter {
            Formatter::Table => self.render_aligned(header),
            Formatter::Json => self.render_json(),
        }
    }

    fn render_aligned(&self, header: bool) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(cell_text).collect())
            .collect();
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = if header {
            aligned_line(&self.columns, &widths)
        } else {
            String::new()
        };
        for row in &cells {
            out.push_str(&aligned_line(row, &widths));
        }
        out
    }

    fn render_json(&self) -> String {
        let objects: Vec<String> = self
            .rows
            .iter()
            .map(|row| {
                let object: Map<String, Value> = self
                    .columns
                    .iter()
                    .cloned()
                    .zip(row.iter().cloned())
                    .collect();
                Value::Object(object).to_string()
            })
            .collect();
        if objects.is_empty() {
            return "[]\n".to_owned();
        }
        format!("[\n{}\n]\n", objects.join(",\n"))
    }
}

fn aligned_line(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if index + 1 == cells.len() {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<width$}  "));
        }
    }
    line.push('\n');
    line
}

/// A value as rabbitmqctl shows it in a table: strings bare, lists of strings as `[a, b]`.
pub fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let names: Vec<String> = items.iter().map(cell_text).collect();
            format!("[{}]", names.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aligns_columns_and_renders_json() {
        let table = Table {
            columns: vec!["name".into(), "messages".into()],
            rows: vec![
                vec![json!("a-long-name"), json!(3)],
                vec![json!("b"), json!(0)],
            ],
        };
        assert_eq!(
            table.render(Formatter::Table, true),
            "name         messages\na-long-name  3\nb            0\n"
        );
        let parsed: Value = serde_json::from_str(&table.render(Formatter::Json, true)).unwrap();
        assert_eq!(
            parsed,
            json!([{"name": "a-long-name", "messages": 3}, {"name": "b", "messages": 0}])
        );
        assert_eq!(
            cell_text(&json!(["administrator", "monitoring"])),
            "[administrator, monitoring]"
        );
    }
}
