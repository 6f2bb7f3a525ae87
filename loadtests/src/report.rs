//! Printing results: a plain table, or JSON with `--json`.

use serde::Serialize;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) bench: String,
    pub(crate) case: String,
    pub(crate) value: f64,
    pub(crate) unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
}

impl Row {
    pub(crate) fn new(bench: &str, case: impl Into<String>, value: f64, unit: &str) -> Self {
        Row {
            bench: bench.into(),
            case: case.into(),
            value,
            unit: unit.into(),
            note: None,
        }
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

pub(crate) fn print(rows: &[Row], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(rows).expect("rows serialize"));
        return;
    }
    println!(
        "{:<10} {:<46} {:>14} {:<8} NOTE",
        "BENCH", "CASE", "VALUE", "UNIT"
    );
    for r in rows {
        let value = if r.value >= 100.0 {
            format!("{:.0}", r.value)
        } else {
            format!("{:.3}", r.value)
        };
        println!(
            "{:<10} {:<46} {:>14} {:<8} {}",
            r.bench,
            r.case,
            value,
            r.unit,
            r.note.as_deref().unwrap_or("")
        );
    }
}

/// Percentile of sorted samples (nearest rank).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&v, 50.0), 50.0);
        assert_eq!(super::percentile(&v, 99.0), 99.0);
        assert_eq!(super::percentile(&v, 100.0), 100.0);
        assert_eq!(super::percentile(&[7.0], 90.0), 7.0);
    }
}
