//! Device log messages as export records, the way cppTango 10.3 exports its own: body, severity
//! number and text, `code.filepath` (base name) and `code.lineno` when the call carried them,
//! scope `cppTango` with the traced libtango's version, the device's resource, and the request's
//! SERVER span when the message was logged inside one.

use std::sync::Arc;

use opentelemetry::{InstrumentationScope, KeyValue, StringValue, logs::Severity, trace::TraceFlags};
use opentelemetry_sdk::Resource;
use tracer_export::{LogRecord, LogTraceContext};

use super::spandata::ClockOffset;
use crate::{discover::procinfo::ProcessInfo, logs::AssembledLog};

/// cppTango's instrumentation scope of log records.
pub const LOG_SCOPE_NAME: &str = "cppTango";

/// The trace flags cppTango 10.3.3 gives a record logged inside a request (sampled, random).
const IN_REQUEST_FLAGS: TraceFlags = TraceFlags::new(0x03);

/// The log records' scope of a process: cppTango's, versioned by its libtango.
pub fn log_scope_for(process: Option<&ProcessInfo>) -> Arc<InstrumentationScope> {
    let version = process.and_then(|p| p.tango_version()).unwrap_or("unknown").to_string();
    Arc::new(InstrumentationScope::builder(LOG_SCOPE_NAME).with_version(version).build())
}

/// The exportable form of `log`.
pub fn to_log_record(
    log: AssembledLog,
    resource: Resource,
    scope: Arc<InstrumentationScope>,
    clock: &ClockOffset,
) -> LogRecord {
    let mut attributes = Vec::with_capacity(2);
    if let Some(file) = log.file {
        // Shared with every record of the file: no copy per record.
        attributes.push(KeyValue::new("code.filepath", StringValue::from(file)));
    }
    if let Some(line) = log.line {
        attributes.push(KeyValue::new("code.lineno", line));
    }
    // The probe read it as it was logged: both times are the same.
    let timestamp = clock.to_system(log.ts_ns);
    LogRecord {
        resource,
        scope,
        timestamp,
        observed_timestamp: timestamp,
        severity: severity(log.severity),
        severity_text: log.severity.text().into(),
        body: log.body,
        attributes,
        trace: log.context.map(|context| LogTraceContext {
            trace_id: context.trace_id,
            span_id: context.span_id,
            flags: IN_REQUEST_FLAGS,
        }),
    }
}

fn severity(severity: crate::logs::Severity) -> Severity {
    use crate::logs::Severity as Level;
    match severity {
        Level::Fatal => Severity::Fatal,
        Level::Error => Severity::Error,
        Level::Warn => Severity::Warn,
        Level::Info => Severity::Info,
        Level::Debug => Severity::Debug,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use opentelemetry::trace::{SpanId, TraceId};

    use super::*;
    use crate::{assemble::SpanContextLite, logs::Severity as Level};

    #[test]
    fn records_carry_what_cpptango_exports() {
        let clock = ClockOffset::now();
        let context = SpanContextLite { trace_id: TraceId::from(7u128), span_id: SpanId::from(9u64) };
        let log = AssembledLog {
            pid: 1,
            tid: 2,
            ts_ns: 1_000,
            severity: Level::Warn,
            body: "hello 0".into(),
            file: Some("pydev2.py".into()),
            line: Some(20),
            context: Some(context),
            logger: "test/logdev/1".into(),
        };
        let scope = log_scope_for(None);
        let record = to_log_record(log.clone(), Resource::builder_empty().build(), scope, &clock);
        assert_eq!((record.severity as i32, record.severity_text.as_ref()), (13, "WARN"));
        assert_eq!(record.body, "hello 0");
        assert_eq!(
            record.attributes,
            vec![KeyValue::new("code.filepath", "pydev2.py"), KeyValue::new("code.lineno", 20i64)]
        );
        let trace = record.trace.unwrap();
        assert_eq!(
            (trace.trace_id, trace.span_id, trace.flags.to_u8()),
            (context.trace_id, context.span_id, 3)
        );
        assert_eq!(record.scope.name(), "cppTango");
        let outside = AssembledLog { context: None, file: None, line: None, ..log };
        let record = to_log_record(outside, Resource::builder_empty().build(), log_scope_for(None), &clock);
        assert!(record.trace.is_none() && record.attributes.is_empty());
    }
}
