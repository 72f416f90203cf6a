//! Span and log export: where finished spans and device log records go once assembly has
//! built them.
//!
//! The tracer sees many Tango processes and devices at once, and each of them is its own
//! OpenTelemetry [`Resource`](opentelemetry_sdk::Resource). The SDK's exporters fix one resource
//! per tracer provider, so this crate does not use them: it keeps the SDK's [`SpanData`] and the
//! `opentelemetry-proto` transforms, but groups spans of *all* resources that go to one endpoint
//! into a single `ExportTraceServiceRequest` (one `ResourceSpans` per resource) and sends that
//! itself, over OTLP/HTTP (protobuf POST) or OTLP/gRPC (`TraceServiceClient`).
//!
//! - [`ExportHub`] owns one backlog and one worker task per [`Destination`], created on first
//!   use. [`ExportHub::submit`] never blocks; each backlog is bounded by a memory budget that,
//!   when full, drops the oldest spans; each worker batches across resources, retries with
//!   capped, jittered exponential backoff without ever stalling new spans, drains its backlog
//!   at full speed when the backend is back, and ends within a set time at shutdown.
//! - [`ExportStats`] counts, per destination, every span delivered, held, or dropped (by
//!   cause): nothing is lost without being counted.
//! - [`Destination`] says where spans go: OTLP/HTTP, OTLP/gRPC, the console, or the embedded
//!   store (a JSON-lines file in the same [`json`] form that OTLP would carry).
//! - [`json`] and [`tree`] turn spans into the readable forms used by the store, by test
//!   receivers and by humans.
//! - Device log messages ([`LogRecord`]) take the same way beside spans
//!   ([`ExportHub::submit_log`]): one `ExportLogsServiceRequest` per batch across devices
//!   (`/v1/logs`, `LogsService`), the console, and a file beside the store's; with backlogs,
//!   budgets and counters of their own ([`ExportStats::logs`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use tracer_export::{Destination, ExportConfig, ExportHub};
//!
//! # async fn example(span: tracer_export::SpanRecord) -> Result<(), tracer_export::Error> {
//! let hub = ExportHub::start(ExportConfig { shutdown_timeout: Duration::from_secs(5), ..ExportConfig::default() });
//! let otlp = Destination::parse("http", "http://127.0.0.1:4318")?;
//! hub.submit(span, std::slice::from_ref(&otlp));
//! let stats = hub.shutdown().await;
//! let otlp_stats = stats.get(&otlp).cloned().unwrap_or_default();
//! println!("delivered {}, dropped {}", otlp_stats.spans_delivered, otlp_stats.dropped.total());
//! # Ok(()) }
//! ```
//!
//! [`SpanData`]: opentelemetry_sdk::trace::SpanData

mod backlog;
mod console;
pub mod db;
mod destination;
mod hub;
pub mod json;
pub mod metrics;
pub mod otlp;
pub mod otlp_encode;
mod record;
mod stats;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tree;
mod worker;

pub use backlog::{log_bytes, span_bytes};
pub use console::ConsoleError;
pub use db::{DEFAULT_STORE_MAX_BYTES, DbReader, SessionInfo, is_json_lines};
pub use destination::{
    ConsoleStream, Destination, DestinationError, Signal, destinations_from_otel_env, otel_env_destinations,
};
pub use hub::{ExportConfig, ExportHub};
pub use otlp::OtlpError;
pub use stats::{DestinationStats, DropCounts, ExportStats};
pub use store::{
    MAX_STORE_BYTES, StoreError, check_store, logs_path, read_log_store, read_store, rotated_path,
};

/// One finished span together with the resource (Tango process or device) it belongs to.
///
/// The instrumentation scope travels inside [`SpanData`](opentelemetry_sdk::trace::SpanData)
/// (`tango.cpp`, with the traced libtango's version).
#[derive(Clone, Debug)]
pub struct SpanRecord {
    /// The process or device that produced the span.
    pub resource: opentelemetry_sdk::Resource,
    /// The span itself, in the SDK's form.
    pub data: opentelemetry_sdk::trace::SpanData,
}

/// One device log message, as an OpenTelemetry log record, with the resource and scope it
/// belongs to.
///
/// Shaped like cppTango's own log records: `body` is the message, `severity` and
/// `severity_text` the level (`DEBUG` 5, `INFO` 9, `WARN` 13, `ERROR` 17, `FATAL` 21),
/// `attributes` the source location (`code.filepath`, `code.lineno`) when it is known, and
/// `trace` the request's SERVER span when the message was logged inside one.
///
/// The resource is the device's, the same value its spans carry (the SDK's [`Resource`] is
/// reference-counted, so a clone per record costs no allocation); the scope (`cppTango` with the
/// traced libtango's version) is shared the same way, built once per process.
///
/// [`Resource`]: opentelemetry_sdk::Resource
#[derive(Clone, Debug)]
pub struct LogRecord {
    /// The device (or process) that logged the message.
    pub resource: opentelemetry_sdk::Resource,
    /// The instrumentation scope, shared by every record of a process.
    pub scope: std::sync::Arc<opentelemetry::InstrumentationScope>,
    /// When the message was logged.
    pub timestamp: std::time::SystemTime,
    /// When the tracer saw it.
    pub observed_timestamp: std::time::SystemTime,
    /// The normalised severity (its number is what OTLP carries).
    pub severity: Severity,
    /// The level as the logger names it (`WARN`, not `WARNING`).
    pub severity_text: std::borrow::Cow<'static, str>,
    /// The message.
    pub body: String,
    /// Attributes of the record (`code.filepath`, `code.lineno`).
    pub attributes: Vec<opentelemetry::KeyValue>,
    /// The span the message was logged under; `None` outside any request.
    pub trace: Option<LogTraceContext>,
}

/// The span a log record was logged under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTraceContext {
    /// The span's trace.
    pub trace_id: opentelemetry::trace::TraceId,
    /// The span.
    pub span_id: opentelemetry::trace::SpanId,
    /// The record's trace flags (OTLP `LogRecord.flags`, the low 8 bits).
    pub flags: opentelemetry::trace::TraceFlags,
}

pub use opentelemetry::logs::Severity;

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A destination could not be parsed from its configuration.
    #[error(transparent)]
    Destination(#[from] DestinationError),
    /// Sending to an OTLP endpoint failed.
    #[error(transparent)]
    Otlp(#[from] OtlpError),
    /// Writing to or reading the embedded store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing to the console failed.
    #[error(transparent)]
    Console(#[from] ConsoleError),
}
