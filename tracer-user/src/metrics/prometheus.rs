//! The Prometheus text format (version 0.0.4) of a [`Snapshot`], named as OpenTelemetry's
//! Prometheus exporters name OTLP metrics: dots become underscores, the unit is a suffix
//! (`rpc.server.call.duration` in seconds → `rpc_server_call_duration_seconds`), counters end
//! in `_total`.

use std::fmt::Write as _;

use super::aggregate::{BUCKET_BOUNDS, Instrument, SeriesView, Snapshot};

/// The `Content-Type` of the text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The whole snapshot as Prometheus text.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(256 + snapshot.series.len() * 2048);
    for instrument in Instrument::ALL {
        let series: Vec<&SeriesView> =
            snapshot.series.iter().filter(|s| s.instrument == instrument).collect();
        let name = format!("{}_seconds", prometheus_name(instrument.name()));
        let _ = writeln!(out, "# HELP {name} {}", instrument.description());
        let _ = writeln!(out, "# TYPE {name} histogram");
        for view in &series {
            let labels = labels(view);
            let mut cumulative = 0;
            for (bound, count) in BUCKET_BOUNDS.iter().zip(&view.histogram.buckets) {
                cumulative += count;
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", view.histogram.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", view.histogram.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", view.histogram.count);
        }
        if let Some(counter) = instrument.message_counter() {
            let name = format!("{}_total", prometheus_name(counter));
            let _ = writeln!(out, "# HELP {name} Tango events, counted from {}", instrument.name());
            let _ = writeln!(out, "# TYPE {name} counter");
            for view in &series {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(view), view.histogram.count);
            }
        }
    }
    let mut last = "";
    for metric in &snapshot.own {
        let name = match metric.counter {
            true => format!("{}_total", prometheus_name(metric.name)),
            false => prometheus_name(metric.name),
        };
        if metric.name != last {
            let kind = if metric.counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {}", metric.description);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            last = metric.name;
        }
        let labels: Vec<String> = metric
            .attributes
            .iter()
            .map(|(k, v)| format!("{}=\"{}\"", prometheus_name(k), escape(v)))
            .collect();
        let _ = match labels.is_empty() {
            true => writeln!(out, "{name} {}", metric.value),
            false => writeln!(out, "{name}{{{}}} {}", labels.join(","), metric.value),
        };
    }
    out
}

/// The labels of one series: the overflow series carries only its side and the overflow flag.
fn labels(view: &SeriesView) -> String {
    let side = view.instrument.side();
    if view.overflow {
        return format!("side=\"{side}\",otel_metric_overflow=\"true\"");
    }
    format!(
        "device=\"{}\",operation=\"{}\",argument=\"{}\",side=\"{side}\",outcome=\"{}\"",
        escape(&view.device),
        escape(&view.operation),
        escape(&view.argument),
        view.outcome.label()
    )
}

/// Dots (and anything else a metric or label name may not hold) become underscores.
pub fn prometheus_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// A label value with `\`, `"` and line feeds escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::metrics::aggregate::{Outcome, OwnMetric, SpanMetrics};

    #[test]
    fn histograms_are_cumulative_with_sum_count_and_escaped_labels() {
        let mut metrics = SpanMetrics::new(1);
        metrics.record(Instrument::ServerCall, "a/b/c", "command_inout_4", "Say\"hi\"", Outcome::Ok, 0.0002);
        metrics.record(Instrument::ServerCall, "a/b/c", "command_inout_4", "Say\"hi\"", Outcome::Ok, 0.02);
        metrics.record(Instrument::ServerCall, "a/b/c", "command_inout_4", "Other", Outcome::Ok, 0.02);
        let own = vec![OwnMetric {
            name: "tango_tracer.processes",
            description: "Processes traced now",
            counter: false,
            attributes: Vec::new(),
            value: 3,
        }];
        let text = render(&metrics.snapshot(own));
        let labels =
            r#"device="a/b/c",operation="command_inout_4",argument="Say\"hi\"",side="server",outcome="ok""#;
        assert!(text.contains("# TYPE rpc_server_call_duration_seconds histogram"));
        assert!(
            text.contains(&format!("rpc_server_call_duration_seconds_bucket{{{labels},le=\"0.0001\"}} 0"))
        );
        assert!(
            text.contains(&format!("rpc_server_call_duration_seconds_bucket{{{labels},le=\"0.00025\"}} 1"))
        );
        assert!(
            text.contains(&format!("rpc_server_call_duration_seconds_bucket{{{labels},le=\"0.025\"}} 2"))
        );
        assert!(text.contains(&format!("rpc_server_call_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 2")));
        assert!(text.contains(&format!("rpc_server_call_duration_seconds_count{{{labels}}} 2")));
        assert!(text.contains(
            "rpc_server_call_duration_seconds_count{side=\"server\",otel_metric_overflow=\"true\"} 1"
        ));
        assert!(text.contains("# TYPE tango_tracer_processes gauge\ntango_tracer_processes 3\n"));
    }
}
