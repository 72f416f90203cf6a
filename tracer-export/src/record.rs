//! What the hub carries: spans and log records, behind one trait, so that one backlog, one
//! worker and one set of counters serve both signals and each keeps its own per destination.

use crate::{
    LogRecord, Signal, SpanRecord,
    backlog::{log_bytes, span_bytes},
    console::{format_line, format_log_line},
    hub::{State, Table},
    json::{logs_request_to_json, request_to_json},
    otlp::{OtlpRequest, build_logs_request, build_request},
};

/// A record of one signal, as the hub holds, batches and sends it.
pub(crate) trait Exportable: Clone + Send + 'static {
    /// The signal this record belongs to.
    const SIGNAL: Signal;

    /// What the record is counted for against the memory budget.
    fn bytes(&self) -> u64;

    /// The OTLP request of a batch.
    fn otlp_request(batch: Vec<Self>) -> OtlpRequest;

    /// The console's lines of a batch, each ending in a newline.
    fn console_text(batch: Vec<Self>) -> String;

    /// The store's lines of a batch (JSON, each ending in a newline).
    fn store_lines(batch: Vec<Self>) -> Result<Vec<u8>, serde_json::Error>;

    /// The database store's rows of a batch.
    fn db_rows(batch: Vec<Self>) -> crate::db::DbRows;

    /// The hub's destinations of this signal.
    fn table(state: &mut State) -> &mut Table<Self>;
}

impl Exportable for SpanRecord {
    const SIGNAL: Signal = Signal::Traces;

    fn bytes(&self) -> u64 {
        span_bytes(self)
    }

    fn otlp_request(batch: Vec<Self>) -> OtlpRequest {
        OtlpRequest::Spans(batch)
    }

    fn console_text(batch: Vec<Self>) -> String {
        let mut text = String::new();
        for span in request_to_json(&build_request(batch)) {
            text.push_str(&format_line(&span));
            text.push('\n');
        }
        text
    }

    fn store_lines(batch: Vec<Self>) -> Result<Vec<u8>, serde_json::Error> {
        json_lines(request_to_json(&build_request(batch)))
    }

    fn db_rows(batch: Vec<Self>) -> crate::db::DbRows {
        crate::db::DbRows::Spans(request_to_json(&build_request(batch)))
    }

    fn table(state: &mut State) -> &mut Table<Self> {
        &mut state.spans
    }
}

impl Exportable for LogRecord {
    const SIGNAL: Signal = Signal::Logs;

    fn bytes(&self) -> u64 {
        log_bytes(self)
    }

    fn otlp_request(batch: Vec<Self>) -> OtlpRequest {
        OtlpRequest::Logs(build_logs_request(batch))
    }

    fn console_text(batch: Vec<Self>) -> String {
        let mut text = String::new();
        for log in logs_request_to_json(&build_logs_request(batch)) {
            text.push_str(&format_log_line(&log));
            text.push('\n');
        }
        text
    }

    fn store_lines(batch: Vec<Self>) -> Result<Vec<u8>, serde_json::Error> {
        json_lines(logs_request_to_json(&build_logs_request(batch)))
    }

    fn db_rows(batch: Vec<Self>) -> crate::db::DbRows {
        crate::db::DbRows::Logs(logs_request_to_json(&build_logs_request(batch)))
    }

    fn table(state: &mut State) -> &mut Table<Self> {
        &mut state.logs
    }
}

fn json_lines<T: serde::Serialize>(items: Vec<T>) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = Vec::new();
    for item in items {
        serde_json::to_writer(&mut bytes, &item)?;
        bytes.push(b'\n');
    }
    Ok(bytes)
}
