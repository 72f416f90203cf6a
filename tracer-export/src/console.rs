//! The console exporter: one compact line of text per span, as it finishes, and one per log
//! record (time, severity, device, span, source location, then the message).
//!
//! ```text
//! CLIENT Tango::Connection::command_inout trace=b2a1…9fde span=5d5c121137108f77 parent=- dur=503.861us svc=tango.telemetry.default client:17915 {"tango.operation.argument": "Increment", …}
//! 2026-11-21T08:03:46.536048Z INFO svc=LogDev/test/logdev/1 server:15342 trace=1c7e…14f8 span=45d2abbade956bf8 at=pydev2.py:20 hello 0
//! ```
//! Lines are built from the same OTLP conversion as every other exporter ([`crate::json`]).

use tokio::io::AsyncWriteExt as _;

use crate::{
    destination::ConsoleStream,
    json::{LogJson, SpanJson, utc_timestamp, value_text},
    record::Exportable,
};

/// Why the console could not be written to.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Writing to the stream failed (closed pipe, full disk behind a redirect).
    #[error("writing to {stream:?} failed: {source}")]
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

/// Formats one log record as one line, without the newline. The message comes last, as it
/// is (a line break in it is shown as `\n`, so that one record stays one line).
pub(crate) fn format_log_line(log: &LogJson) -> String {
    let process = |key| log.resource.get(key).map(value_text).unwrap_or_default();
    let id = |id: &str| if id.is_empty() { "-".to_owned() } else { id.to_owned() };
    let mut line = format!(
        "{} {} svc={} {}:{} trace={} span={}",
        utc_timestamp(log.time_ns),
        log.severity_text,
        log.service(),
        process("tango.process.kind"),
        process("tango.process.id"),
        id(&log.trace_id),
        id(&log.span_id),
    );
    if let Some(at) = log.code_location() {
        line.push_str(" at=");
        line.push_str(&at);
    }
    line.push(' ');
    line.push_str(&one_line(&log.body_text()));
    line
}

/// `text` with line breaks escaped.
pub(crate) fn one_line(text: &str) -> String {
    text.replace('\n', "\\n").replace('\r', "\\r")
}

/// Writes finished spans and log records to standard output or standard error.
pub(crate) struct ConsoleWriter {
    stream: ConsoleStream,
}

impl ConsoleWriter {
    pub(crate) fn new(stream: ConsoleStream) -> Self {
        ConsoleWriter { stream }
    }

    pub(crate) async fn write<R: Exportable>(&mut self, batch: Vec<R>) -> Result<(), ConsoleError> {
        let text = R::console_text(batch);
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
    use crate::LogRecord;

    #[test]
    fn one_line_per_log_record() {
        let text = LogRecord::console_text(crate::testing::reference_device_logs());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "2026-11-21T08:03:42.411517Z WARN svc=LogDev/test/logdev/1 server:15342 trace=- span=- \
                 at=pydev2.py:15 background thread log tid=15370",
                "2026-11-21T08:03:46.536048Z INFO svc=LogDev/test/logdev/1 server:15342 \
                 trace=1c7ec4378c562421f9fc46412b5514f8 span=45d2abbade956bf8 at=pydev2.py:20 hello 0",
                "2026-11-21T08:03:46.536117Z FATAL svc=LogDev/test/logdev/1 server:15342 \
                 trace=1c7ec4378c562421f9fc46412b5514f8 span=45d2abbade956bf8 at=pydev2.py:23 fatal hello 0",
            ]
        );
        // A message of many lines stays one line; a record without a location has no `at=`.
        let mut record = crate::testing::reference_device_logs().remove(0);
        record.body = "first\nsecond\r\n".into();
        record.attributes.clear();
        let text = LogRecord::console_text(vec![record]);
        assert!(text.ends_with("trace=- span=- first\\nsecond\\r\\n\n"), "{text:?}");
    }

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
