//! RED metrics of every traced operation and the daemon's self-metrics: aggregated in the
//! pipeline ([`aggregate`]), published as a snapshot every second, served as Prometheus text at
//! `--metrics-listen` ([`prometheus`], [`serve`]) and pushed over OTLP to `/v1/metrics`
//! ([`otlp`]) every `--metrics-interval`.

pub mod aggregate;
pub mod otlp;
pub mod prometheus;
pub mod serve;

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use tracer_export::{Destination, ExportStats, Signal};

pub use self::aggregate::{DEFAULT_MAX_SERIES, OwnMetric, Snapshot, SpanMetrics};
use crate::{run::losses::Loss, stats::StageStats};

/// Where the metrics go; they are aggregated only when they go somewhere.
#[derive(Clone, Debug, Default)]
pub struct MetricsOptions {
    pub listen: Option<SocketAddr>,
    /// OTLP destinations of the metrics.
    pub destinations: Vec<Destination>,
    pub interval: Duration,
    pub max_series: usize,
}

impl MetricsOptions {
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || !self.destinations.is_empty()
    }
}

/// The OTLP destinations of the metrics, by the OpenTelemetry variables of the metrics signal:
/// `OTEL_METRICS_EXPORTER` (`otlp`, `none`), `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (used as
/// given), else `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/metrics` for OTLP/HTTP), and
/// `OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL`. The rules are the spans' ones, read under the
/// metrics' names; the console takes no metrics.
pub fn otel_env_metrics_destinations(
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<Destination>> {
    let metrics_endpoint = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").filter(|v| !v.trim().is_empty());
    let renamed = |name: &str| match name {
        "OTEL_TRACES_EXPORTER" => env("OTEL_METRICS_EXPORTER"),
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => metrics_endpoint.clone(),
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" => env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"),
        other => env(other),
    };
    let destinations = tracer_export::otel_env_destinations(Signal::Traces, renamed)
        .context("reading the OTEL_METRICS_EXPORTER and OTEL_EXPORTER_OTLP_* environment")?
        .unwrap_or_default();
    Ok(destinations
        .into_iter()
        .filter_map(|destination| match destination {
            // From the base endpoint the spans' path was appended: the metrics have their own.
            Destination::OtlpHttp { endpoint } if metrics_endpoint.is_none() => {
                let base = endpoint.strip_suffix(Signal::Traces.http_path()).unwrap_or(&endpoint);
                Some(Destination::OtlpHttp { endpoint: format!("{base}/v1/metrics") })
            }
            d @ (Destination::OtlpHttp { .. } | Destination::OtlpGrpc { .. }) => Some(d),
            Destination::Console { .. } | Destination::Store { .. } => None,
        })
        .collect())
}

/// Counters of the OTLP metrics export, shared with the task that sends.
#[derive(Debug, Default)]
pub struct ExportCounters {
    pub requests: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
}

/// The daemon's self-metrics from what `ctl stats` shows: every stage's counters and table
/// sizes, every loss by stage and cause, the span and log export per destination, the traced
/// processes, and the metrics' own export and overflow.
pub fn own_metrics(
    stats: &StageStats,
    losses: &[Loss],
    export: &ExportStats,
    processes: usize,
    metrics_export: &ExportCounters,
) -> Vec<OwnMetric> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = Vec::new();
    let mut push = |name, description, counter, attributes: Vec<(&'static str, String)>, value| {
        out.push(OwnMetric { name, description, counter, attributes, value });
    };
    push("tango_tracer.processes", "Processes traced now", false, Vec::new(), processes as u64);
    for (stage, name, value) in stats.iter().filter(|(_, name, _)| !name.ends_with("_entries")) {
        let attributes = vec![("stage", stage.to_owned()), ("name", name.to_owned())];
        push("tango_tracer.stage.events", "Work counted by each stage (ctl stats)", true, attributes, value);
    }
    for (stage, name, value) in stats.tables() {
        let attributes = vec![("stage", stage.to_owned()), ("table", name.to_owned())];
        push(
            "tango_tracer.state.entries",
            "Entries of each state table (ctl stats)",
            false,
            attributes,
            value,
        );
    }
    for loss in losses {
        let attributes = vec![("stage", loss.stage.to_string()), ("cause", loss.cause.to_string())];
        push(
            "tango_tracer.lost",
            "Records, spans, logs and state lost, by stage and cause",
            true,
            attributes,
            loss.total,
        );
    }
    for (signal, list) in [("spans", &export.destinations), ("logs", &export.logs)] {
        for (destination, stats) in list {
            let attributes = || vec![("signal", signal.to_owned()), ("destination", destination.to_string())];
            push(
                "tango_tracer.export.delivered",
                "Spans and logs delivered",
                true,
                attributes(),
                stats.spans_delivered,
            );
            push(
                "tango_tracer.export.dropped",
                "Spans and logs dropped by the export",
                true,
                attributes(),
                stats.dropped.total(),
            );
            push(
                "tango_tracer.export.errors",
                "Export requests that failed",
                true,
                attributes(),
                stats.requests_failed,
            );
        }
    }
    let attributes = || vec![("signal", "metrics".to_owned())];
    push(
        "tango_tracer.export.errors",
        "Export requests that failed",
        true,
        attributes(),
        metrics_export.failed.load(Relaxed),
    );
    push(
        "tango_tracer.metrics.requests",
        "OTLP metrics requests sent",
        true,
        Vec::new(),
        metrics_export.requests.load(Relaxed),
    );
    // Grouped by name for OTLP (the Prometheus text wants each family together too).
    out.sort_by_key(|m| m.name);
    out
}
