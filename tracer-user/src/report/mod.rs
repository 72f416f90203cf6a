//! `tango-tracer report` and `compare`: what a session recorded in the database store, per
//! device, operation and argument, and what changed between two sessions.

pub mod compare;
mod html;
pub mod stats;

use std::{collections::HashMap, fmt::Write as _, path::Path};

use anyhow::{Context as _, bail};
pub use html::render_html;
use serde::Serialize;
use stats::percentile;
use tracer_export::{
    DbReader,
    db::{CallRow, SpanKey},
    is_json_lines,
    json::SpanJson,
};

/// One row of a report: the calls of one device, operation and argument on one side.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The device called (client) or serving (server).
    pub device: String,
    /// The operation (`read_attribute`, `read_attributes_5`, `command_inout`, `Slow.slow`).
    pub operation: String,
    /// The attribute or command; empty when the call names none.
    pub argument: String,
    /// `server` or `client`.
    pub side: &'static str,
    /// Calls.
    pub count: u64,
    /// Calls per second over the session.
    pub rate_per_s: f64,
    /// Calls that ended in an error.
    pub errors: u64,
    /// Sum of the calls' durations.
    pub total_ms: f64,
    /// Median duration.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Longest.
    pub max_ms: f64,
    /// The durations, sorted (ns): for histograms and comparisons, not printed.
    #[serde(skip)]
    pub durations_ns: Vec<u64>,
}

/// One of the slowest traces with its critical path.
#[derive(Clone, Debug, Serialize)]
pub struct SlowTrace {
    /// 32 hex digits.
    pub trace_id: String,
    /// The root's duration.
    pub duration_ms: f64,
    /// From the root down, each step the longest child: (span name and device, duration ms,
    /// own time ms: its duration less its children's).
    pub path: Vec<PathStep>,
    /// The step whose own time is largest: where the time goes.
    pub dominant: usize,
}

/// One span of a critical path.
#[derive(Clone, Debug, Serialize)]
pub struct PathStep {
    /// `[KIND] name (device)`.
    pub span: String,
    /// Its duration.
    pub duration_ms: f64,
    /// Its duration less its children's.
    pub self_ms: f64,
}

/// Event delivery delays of one device and attribute.
#[derive(Clone, Debug, Serialize)]
pub struct EventDelays {
    /// The event's device.
    pub device: String,
    /// The event's attribute.
    pub attribute: String,
    /// Deliveries.
    pub count: u64,
    /// Median delay.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Longest.
    pub max_ms: f64,
}

/// A session's report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The session's name.
    pub session: String,
    /// Its spans.
    pub spans: u64,
    /// Spans deleted to keep the store within its size (the report misses them).
    pub evicted_spans: u64,
    /// Seconds from the first call's start to the last one's.
    pub seconds: f64,
    /// Rows, slowest total time first.
    pub rows: Vec<Row>,
    /// The slowest traces.
    pub slowest: Vec<SlowTrace>,
    /// Event delivery delays.
    pub events: Vec<EventDelays>,
}

/// How many slowest traces a report shows.
const SLOWEST_TRACES: usize = 5;

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Opens the database store for reading; a JSON-lines store has no sessions.
pub fn open_store(store: &Path) -> anyhow::Result<DbReader> {
    if is_json_lines(store) {
        bail!(
            "{} is a JSON-lines store, which has no sessions; run the daemon with --store FILE.db (an SQLite \
             store) to record sessions for report and compare (`show` still reads JSON-lines stores)",
            store.display()
        );
    }
    DbReader::open(store).with_context(|| format!("opening the store {}", store.display()))
}

/// The session named `name`, or the newest one.
pub fn pick_session(reader: &DbReader, name: Option<&str>) -> anyhow::Result<tracer_export::SessionInfo> {
    let sessions = reader.sessions()?;
    let names = || sessions.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
    match name {
        Some(name) => sessions
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .with_context(|| format!("no session {name:?} in the store (sessions: {})", names())),
        None => sessions.last().cloned().context("the store has no session yet"),
    }
}

/// Builds the report of session `name` (the newest without one).
pub fn build(reader: &DbReader, name: Option<&str>) -> anyhow::Result<Report> {
    let session = pick_session(reader, name)?;
    let calls = reader.session_calls(&session.name)?;
    let mut report = summarize(&session.name, &calls);
    report.evicted_spans = session.evicted_spans;
    report.slowest = slowest_traces(reader, &calls)?;
    Ok(report)
}

/// Rows and event delays of a session's calls.
pub fn summarize(session: &str, calls: &[CallRow]) -> Report {
    let first = calls.iter().map(|c| c.start_ns).min().unwrap_or(0);
    let last = calls.iter().map(|c| c.start_ns + c.duration_ns).max().unwrap_or(0);
    let seconds = (last.saturating_sub(first) as f64 / 1e9).max(1e-9);
    // A server span without an argument (`read_attributes_5`) takes its client's, when the
    // client is in the store: the attribute the request named.
    let client_arguments: HashMap<i64, &str> = calls
        .iter()
        .filter(|c| c.key.side == "client" && !c.key.argument.is_empty())
        .map(|c| (c.span_id, c.key.argument.as_str()))
        .collect();
    let mut groups: HashMap<SpanKey, (Vec<u64>, u64)> = HashMap::new();
    let mut delays: HashMap<(String, String), Vec<u64>> = HashMap::new();
    for call in calls {
        if let Some(delay_us) = call.event_delay_us {
            let key = (call.key.device.clone(), call.key.argument.clone());
            delays.entry(key).or_default().push(u64::try_from(delay_us).unwrap_or(0) * 1000);
        }
        let mut key = call.key.clone();
        if key.side == "server"
            && key.argument.is_empty()
            && let Some(argument) = client_arguments.get(&call.parent_span_id)
        {
            key.argument = (*argument).to_owned();
        }
        let entry = groups.entry(key).or_default();
        entry.0.push(call.duration_ns);
        entry.1 += u64::from(call.error);
    }
    let mut rows: Vec<Row> = groups
        .into_iter()
        .map(|(key, (mut durations, errors))| {
            durations.sort_unstable();
            let total: u64 = durations.iter().sum();
            Row {
                device: key.device,
                operation: key.operation,
                argument: key.argument,
                side: key.side,
                count: durations.len() as u64,
                rate_per_s: durations.len() as f64 / seconds,
                errors,
                total_ms: ms(total),
                p50_ms: ms(percentile(&durations, 0.5)),
                p90_ms: ms(percentile(&durations, 0.9)),
                p99_ms: ms(percentile(&durations, 0.99)),
                max_ms: ms(durations.last().copied().unwrap_or(0)),
                durations_ns: durations,
            }
        })
        .collect();
    sort_rows(&mut rows);
    let mut events: Vec<EventDelays> = delays
        .into_iter()
        .map(|((device, attribute), mut d)| {
            d.sort_unstable();
            EventDelays {
                device,
                attribute,
                count: d.len() as u64,
                p50_ms: ms(percentile(&d, 0.5)),
                p99_ms: ms(percentile(&d, 0.99)),
                max_ms: ms(d.last().copied().unwrap_or(0)),
            }
        })
        .collect();
    events.sort_by(|a, b| b.p99_ms.total_cmp(&a.p99_ms));
    Report {
        session: session.to_owned(),
        spans: calls.len() as u64,
        evicted_spans: 0,
        seconds,
        rows,
        slowest: Vec::new(),
        events,
    }
}

/// Slowest total time first; ties in a fixed order.
fn sort_rows(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        b.total_ms.total_cmp(&a.total_ms).then_with(|| {
            (a.side, &a.device, &a.operation, &a.argument).cmp(&(
                b.side,
                &b.device,
                &b.operation,
                &b.argument,
            ))
        })
    });
}

/// The slowest root spans' traces, read by the trace index, with their critical paths.
fn slowest_traces(reader: &DbReader, calls: &[CallRow]) -> anyhow::Result<Vec<SlowTrace>> {
    let mut roots: Vec<&CallRow> = calls.iter().filter(|c| c.parent_span_id == 0).collect();
    roots.sort_by_key(|c| std::cmp::Reverse(c.duration_ns));
    let mut traces = Vec::new();
    for root in roots.into_iter().take(SLOWEST_TRACES) {
        let spans = reader.trace_spans(&root.trace_id)?;
        traces.push(critical_path(&root.trace_id, &spans, root.span_id));
    }
    Ok(traces)
}

/// From the root down, each step the child that took longest; the step whose own time is
/// largest is where the time goes.
pub fn critical_path(trace_id: &str, spans: &[SpanJson], root_id: i64) -> SlowTrace {
    let id = |hex: &str| u64::from_str_radix(hex, 16).map_or(0, |v| v as i64);
    let duration = |s: &SpanJson| s.end_ns.saturating_sub(s.start_ns);
    let mut path = Vec::new();
    let mut current = spans.iter().find(|s| id(&s.span_id) == root_id);
    let mut seen = 0;
    while let Some(span) = current {
        let children: Vec<&SpanJson> = spans.iter().filter(|c| c.parent_span_id == span.span_id).collect();
        let children_ns: u64 = children.iter().map(|c| duration(c)).sum();
        let device = span
            .attributes
            .get_str("tango.operation.target")
            .or_else(|| span.resource.get_str("service.instance.id"))
            .unwrap_or_default();
        let mut name = format!("[{}] {}", span.kind, span.name);
        if let Some(argument) = span.attributes.get_str("tango.operation.argument") {
            let _ = write!(name, " {argument}");
        }
        if !device.is_empty() {
            let _ = write!(name, " ({device})");
        }
        path.push(PathStep {
            span: name,
            duration_ms: ms(duration(span)),
            self_ms: ms(duration(span).saturating_sub(children_ns)),
        });
        current = children.into_iter().max_by_key(|c| duration(c));
        seen += 1;
        if seen > 64 {
            break; // A cycle of ids cannot make the path endless.
        }
    }
    let dominant =
        path.iter().enumerate().max_by(|a, b| a.1.self_ms.total_cmp(&b.1.self_ms)).map_or(0, |(i, _)| i);
    SlowTrace {
        trace_id: trace_id.to_owned(),
        duration_ms: path.first().map_or(0.0, |p| p.duration_ms),
        path,
        dominant,
    }
}

/// The report as text: the rows, then the slowest traces, then event delays.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "session {}: {} spans over {:.1} s{}",
        report.session,
        report.spans,
        report.seconds,
        if report.evicted_spans > 0 {
            format!(" ({} older spans were deleted to keep the store within its size)", report.evicted_spans)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "{:<6} {:<24} {:<22} {:<18} {:>7} {:>8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "side",
        "device",
        "operation",
        "argument",
        "count",
        "rate/s",
        "errors",
        "total ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms"
    );
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{:<6} {:<24} {:<22} {:<18} {:>7} {:>8.1} {:>6} {:>9.1} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            r.side,
            r.device,
            r.operation,
            r.argument,
            r.count,
            r.rate_per_s,
            r.errors,
            r.total_ms,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms
        );
    }
    if !report.slowest.is_empty() {
        let _ = writeln!(
            out,
            "\nslowest traces (critical path: the longest child at each level; << where the time goes)"
        );
        for trace in &report.slowest {
            let _ = writeln!(out, "  trace {} {:.3} ms", trace.trace_id, trace.duration_ms);
            for (depth, step) in trace.path.iter().enumerate() {
                let mark = if depth == trace.dominant { "  << own time dominates" } else { "" };
                let _ = writeln!(
                    out,
                    "    {:indent$}{} {:.3} ms (own {:.3} ms){mark}",
                    "",
                    step.span,
                    step.duration_ms,
                    step.self_ms,
                    indent = depth * 2
                );
            }
        }
    }
    if !report.events.is_empty() {
        let _ = writeln!(out, "\nevent delivery delays (push to delivery)");
        for e in &report.events {
            let _ = writeln!(
                out,
                "  {} {}: {} events, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                e.device, e.attribute, e.count, e.p50_ms, e.p99_ms, e.max_ms
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
