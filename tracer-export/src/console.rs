//! The console exporter: one compact line of text per span, as it finishes.
//!
//! ```text
//! CLIENT Tango::Connection::command_inout trace=b2a1…9fde span=5d5c121137108f77 parent=- dur=503.861us svc=tango.telemetry.default client:17915 {"tango.operation.argument": "Increment", …}
//! ```
//! Lines are built from the same OTLP conversion as every other exporter ([`crate::json`]).

use tokio::io::AsyncWriteExt as _;

use crate::{
    SpanRecord,
    destination::ConsoleStream,
    json::{SpanJson, request_to_json, value_text},
    otlp::build_request,
};

/// Why the console could not be written to.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Writing to the stream failed (closed pipe, full disk behind a redirect).
    #[error("writing spans to {stream:?} failed: {source}")]
    Write {
        /// The stream.
        stream: ConsoleStream,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Formats one span as one line, without the newline.
pub(crate) fn format_line(span: &SpanJson) -> String {
    let parent = if span.parent_span_id.is_empty() { "-" } else { span.parent_span_id.as_str() };
    let process = |key| span.resource.get(key).map(value_text).unwrap_or_default();
    let mut line = format!(
        "{} {} trace={} span={} parent={} dur={}us svc={} {}:{}",
        span.kind,
        span.name,
        span.trace_id,
        span.span_id,
        parent,
        span.duration_us,
        span.service(),
        process("tango.process.kind"),
        process("tango.process.id"),
    );
    if span.is_error() {
        line.push_str(&format!(" status=ERROR({:?})", span.status.message));
    }
    if !span.events.is_empty() {
        let names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
        line.push_str(&format!(" events={names:?}"));
    }
    line.push(' ');
    line.push_str(&span.attributes.to_compact_json(|_| false));
    line
}

/// Writes finished spans to standard output or standard error.
pub(crate) struct ConsoleWriter {
    stream: ConsoleStream,
}

impl ConsoleWriter {
    pub(crate) fn new(stream: ConsoleStream) -> Self {
        ConsoleWriter { stream }
    }

    pub(crate) async fn write(&mut self, batch: Vec<SpanRecord>) -> Result<(), ConsoleError> {
        let mut text = String::new();
        for span in request_to_json(&build_request(batch)) {
            text.push_str(&format_line(&span));
            text.push('\n');
        }
        // tokio's std streams write on its blocking pool: a slow terminal or a full pipe never
        // stalls the runtime's workers.
        let result = match self.stream {
            ConsoleStream::Stdout => write_all(tokio::io::stdout(), text.as_bytes()).await,
            ConsoleStream::Stderr => write_all(tokio::io::stderr(), text.as_bytes()).await,
        };
        result.map_err(|source| ConsoleError::Write { stream: self.stream, source })
    }
}

async fn write_all(mut stream: impl tokio::io::AsyncWrite + Unpin, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "tests"
    )]

    use super::*;

    #[test]
    fn one_compact_line() {
        let span: SpanJson = serde_json::from_str(
            r#"{"resource": {"service.name": "Demo", "service.instance.id": "test/demo/1", "tango.process.kind": "server", "tango.process.id": 17811}, "scope": {"name": "tango.cpp", "version": "10.3.3"}, "name": "Tango::Device_4Impl::command_inout_4", "kind": "SERVER", "trace_id": "b2a1fcf8dbcb987a87fc0305c3fe9fde", "span_id": "9621b4e802d9b75d", "parent_span_id": "5d5c121137108f77", "trace_state": "", "start_ns": 1, "end_ns": 238206, "duration_us": 238.205, "attributes": {"tango.operation.argument": "Increment"}, "events": [{"name": "exception caught", "t_ns": 2, "attributes": {}}], "links": [], "status": {"code": 2, "message": "boom"}}"#,
        )
        .unwrap();
        assert_eq!(
            format_line(&span),
            "SERVER Tango::Device_4Impl::command_inout_4 trace=b2a1fcf8dbcb987a87fc0305c3fe9fde \
             span=9621b4e802d9b75d parent=5d5c121137108f77 dur=238.205us svc=Demo/test/demo/1 \
             server:17811 status=ERROR(\"boom\") events=[\"exception caught\"] \
             {\"tango.operation.argument\": \"Increment\"}"
        );
    }
}
