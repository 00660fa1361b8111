//! Summaries of repeated runs: medians, ranges, ratios, and the Markdown the
//! runner writes into `BENCHMARKS.md`.

use std::fmt::Write as _;

/// The median of `xs` (mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if !v.len().is_multiple_of(2) {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Smallest and largest of `xs`.
pub fn range(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The ratio of each pair (`b[i] / a[i]`), so that drift between pairs
/// cancels; the median of these is what the tables quote.
pub fn pair_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| b / a).collect()
}

/// One row of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub workload: String,
    /// The measured value, formatted.
    pub measured: String,
    /// The target, formatted.
    pub target: String,
    /// Whether the target is met (`None`: no target, reference only).
    pub met: Option<bool>,
    /// For the chart: the ratio, the target ratio, and whether higher is
    /// better (throughput) or lower (latency), if this row is a ratio.
    pub ratio: Option<(f64, f64, bool)>,
}

/// The results table in Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| workload | measured (median of pairs; min–max) | target | met |\n|---|---|---|---|\n",
    );
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {met} |",
            r.workload, r.measured, r.target
        );
    }
    s
}

/// `12,345`.
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn ratios_are_per_pair() {
        assert_eq!(pair_ratios(&[100.0, 200.0], &[90.0, 200.0]), vec![0.9, 1.0]);
        assert_eq!(range(&[0.9, 1.0, 0.95]), (0.9, 1.0));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
    }
}
