//! `tango-tracer compare A B`: per row, faster, slower or unchanged.
//!
//! On a shared machine the median of a sub-millisecond call moves 10–40% between sessions with
//! tiny p-values, so a change needs both: the Mann–Whitney U test on the per-call durations says
//! p < 0.01, and the medians differ by more than the practical threshold (max(20%, 0.2 ms) of A's
//! median by default).

use std::{collections::HashMap, fmt::Write as _};

use serde::Serialize;

use super::{Report, Row, stats::mann_whitney_p};

/// What counts as a change.
#[derive(Clone, Copy, Debug)]
pub struct Threshold {
    /// Relative shift of the median (0.2 = 20%).
    pub relative: f64,
    /// Absolute shift of the median, ms.
    pub absolute_ms: f64,
    /// Significance level of the test.
    pub alpha: f64,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold { relative: 0.2, absolute_ms: 0.2, alpha: 0.01 }
    }
}

/// One row's statistics in one session.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    /// Calls.
    pub count: u64,
    /// Errors.
    pub errors: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Longest.
    pub max_ms: f64,
}

/// One row of a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct CompareRow {
    /// The device.
    pub device: String,
    /// The operation.
    pub operation: String,
    /// The attribute or command.
    pub argument: String,
    /// `server` or `client`.
    pub side: &'static str,
    /// `faster`, `slower` or `unchanged` (B against A).
    pub verdict: &'static str,
    /// The Mann–Whitney U test's two-sided p-value.
    pub p_value: f64,
    /// B's median less A's, ms.
    pub median_shift_ms: f64,
    /// The row in session A (null when A has no such calls).
    pub a: Option<Side>,
    /// The row in session B.
    pub b: Option<Side>,
}

fn side(row: &Row) -> Side {
    Side {
        count: row.count,
        errors: row.errors,
        p50_ms: row.p50_ms,
        p90_ms: row.p90_ms,
        p99_ms: row.p99_ms,
        max_ms: row.max_ms,
    }
}

/// Compares every row of `a` and `b`, in `a`'s order, then the rows only `b` has.
pub fn compare(a: &Report, b: &Report, threshold: Threshold) -> Vec<CompareRow> {
    let key = |r: &'_ Row| -> (&'static str, String, String, String) {
        (r.side, r.device.clone(), r.operation.clone(), r.argument.clone())
    };
    let in_b: HashMap<_, &Row> = b.rows.iter().map(|r| (key(r), r)).collect();
    let in_a: HashMap<_, &Row> = a.rows.iter().map(|r| (key(r), r)).collect();
    let mut rows = Vec::new();
    for row_a in &a.rows {
        rows.push(judge(row_a, Some(row_a), in_b.get(&key(row_a)).copied(), threshold));
    }
    for row_b in b.rows.iter().filter(|r| !in_a.contains_key(&key(r))) {
        rows.push(judge(row_b, None, Some(row_b), threshold));
    }
    rows
}

/// `any` is whichever of `a` and `b` there is: it names the row.
fn judge(any: &Row, a: Option<&Row>, b: Option<&Row>, threshold: Threshold) -> CompareRow {
    let (p_value, shift) = match (a, b) {
        (Some(a), Some(b)) => (mann_whitney_p(&a.durations_ns, &b.durations_ns), b.p50_ms - a.p50_ms),
        _ => (1.0, 0.0),
    };
    let practical = a.map_or(f64::INFINITY, |a| (a.p50_ms * threshold.relative).max(threshold.absolute_ms));
    let verdict = if p_value < threshold.alpha && shift.abs() > practical {
        if shift < 0.0 { "faster" } else { "slower" }
    } else {
        "unchanged"
    };
    CompareRow {
        device: any.device.clone(),
        operation: any.operation.clone(),
        argument: any.argument.clone(),
        side: any.side,
        verdict,
        p_value,
        median_shift_ms: shift,
        a: a.map(side),
        b: b.map(side),
    }
}

/// The comparison as text.
pub fn render_text(a: &str, b: &str, rows: &[CompareRow]) -> String {
    let mut out = format!("{b} against {a}\n");
    let _ = writeln!(
        out,
        "{:<9} {:<6} {:<24} {:<22} {:<18} {:>7} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "verdict",
        "side",
        "device",
        "operation",
        "argument",
        "count A",
        "p50 A ms",
        "count B",
        "p50 B ms",
        "shift ms",
        "p"
    );
    for r in rows {
        let count = |s: &Option<Side>| s.as_ref().map_or(0, |s| s.count);
        let p50 = |s: &Option<Side>| s.as_ref().map_or(f64::NAN, |s| s.p50_ms);
        let _ = writeln!(
            out,
            "{:<9} {:<6} {:<24} {:<22} {:<18} {:>7} {:>9.3} {:>7} {:>9.3} {:>+9.3} {:>9.2e}",
            r.verdict,
            r.side,
            r.device,
            r.operation,
            r.argument,
            count(&r.a),
            p50(&r.a),
            count(&r.b),
            p50(&r.b),
            r.median_shift_ms,
            r.p_value
        );
    }
    out
}
