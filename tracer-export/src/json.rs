//! Spans as flat JSON objects, the form of the embedded store and of test receivers.
//!
//! One [`SpanJson`] is one span with its resource and scope inlined, exactly as the reference
//! captures of cppTango's own telemetry are written:
//!
//! ```json
//! {"resource": {"service.name": "Demo", "tango.process.id": 17811, …},
//!  "scope": {"name": "tango.cpp", "version": "10.3.3"},
//!  "name": "Tango::Device_4Impl::command_inout_4", "kind": "SERVER",
//!  "trace_id": "b2a1…", "span_id": "9621…", "parent_span_id": "5d5c…", "trace_state": "",
//!  "start_ns": 1795245243498110550, "end_ns": 1795245243498348755, "duration_us": 238.205,
//!  "attributes": {"tango.client_ident.pid": 17915, …},
//!  "events": [{"name": "exception caught", "t_ns": …, "attributes": {…}}],
//!  "links": [{"trace_id": "…", "span_id": "…", "attributes": {}}],
//!  "status": {"code": 2, "message": "…"}}
//! ```
//!
//! One [`LogJson`] is one log record, flattened the same way:
//!
//! ```json
//! {"resource": {"service.name": "LogDev", "service.instance.id": "test/logdev/1", …},
//!  "scope": {"name": "cppTango", "version": "10.3.3"},
//!  "time_ns": 1795248226536048691, "observed_ns": 1795248226536058830,
//!  "severity_number": 9, "severity_text": "INFO", "body": "hello 0",
//!  "attributes": {"code.filepath": "pydev2.py", "code.lineno": 20},
//!  "trace_id": "1c7e…14f8", "span_id": "45d2abbade956bf8", "flags": 3}
//! ```
//!
//! (`trace_id` and `span_id` are empty and `flags` 0 for a record logged outside any span.)
//!
//! It is made from the OTLP protobuf types, never from the SDK's, so that what the store shows is
//! what an OTLP backend receives. Attribute values keep their type (string, int, bool, double;
//! arrays and maps nest; bytes become hex). Attribute order is kept.

use std::fmt::Write as _;

use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    logs::v1::LogRecord,
    resource::v1::Resource,
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One span, flattened with its resource and scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpanJson {
    /// How the span reached a test receiver (`http` or `grpc`); absent in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Attributes of the resource (the Tango process or device).
    pub resource: Attributes,
    /// The instrumentation scope.
    pub scope: ScopeJson,
    /// The span's name.
    pub name: String,
    /// `CLIENT`, `SERVER`, `INTERNAL`, `PRODUCER`, `CONSUMER` (or `UNSPECIFIED`).
    pub kind: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, empty for a root span.
    pub parent_span_id: String,
    /// The W3C `tracestate` header value.
    pub trace_state: String,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_ns: u64,
    /// `end_ns - start_ns` in microseconds.
    pub duration_us: f64,
    /// The span's attributes.
    pub attributes: Attributes,
    /// The span's events.
    pub events: Vec<EventJson>,
    /// The span's links.
    pub links: Vec<LinkJson>,
    /// The span's status.
    pub status: StatusJson,
}

/// One log record, flattened with its resource and scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogJson {
    /// How the record reached a test receiver (`http` or `grpc`); absent in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Attributes of the resource (the device or process).
    pub resource: Attributes,
    /// The instrumentation scope.
    pub scope: ScopeJson,
    /// When the message was logged, in nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// When it was observed, in nanoseconds since the Unix epoch.
    pub observed_ns: u64,
    /// OpenTelemetry's severity number (`DEBUG` 5, `INFO` 9, `WARN` 13, `ERROR` 17, `FATAL` 21).
    pub severity_number: i32,
    /// The level as the logger names it.
    pub severity_text: String,
    /// The message (a string; other kinds of body keep their JSON form).
    pub body: Value,
    /// The record's attributes (`code.filepath`, `code.lineno`).
    pub attributes: Attributes,
    /// 32 lowercase hex digits, empty outside any span.
    pub trace_id: String,
    /// 16 lowercase hex digits, empty outside any span.
    pub span_id: String,
    /// The trace flags (0 outside any span).
    pub flags: u32,
}

/// An instrumentation scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeJson {
    /// The scope's name (`tango.cpp`).
    pub name: String,
    /// The scope's version (the traced libtango's).
    pub version: String,
}

/// A span event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventJson {
    /// The event's name (`exception caught`).
    pub name: String,
    /// When it happened, in nanoseconds since the Unix epoch.
    pub t_ns: u64,
    /// The event's attributes.
    pub attributes: Attributes,
}

/// A link to another span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkJson {
    /// The linked span's trace, 32 hex digits.
    pub trace_id: String,
    /// The linked span, 16 hex digits.
    pub span_id: String,
    /// The link's attributes.
    pub attributes: Attributes,
}

/// A span's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusJson {
    /// 0 unset, 1 ok, 2 error.
    pub code: i32,
    /// The error's description.
    pub message: String,
}

/// Attributes in their original order, written as one JSON object.
///
/// An ordered list rather than a map, so that a store line reads like the span was built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes(pub Vec<(String, Value)>);

impl Attributes {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// The value of `key` if it is an integer.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(Value::as_i64)
    }

    /// The attributes in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many attributes there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the attributes as one JSON object with `", "` and `": "` separators (the
    /// reference summaries' style), leaving out keys for which `skip` is true.
    pub fn to_compact_json(&self, skip: impl Fn(&str) -> bool) -> String {
        let mut out = String::from("{");
        let mut first = true;
        for (key, value) in self.0.iter().filter(|(k, _)| !skip(k)) {
            if !first {
                out.push_str(", ");
            }
            first = false;
            let _ = write!(out, "{}: {}", Value::String(key.clone()), value);
        }
        out.push('}');
        out
    }
}

impl<K: Into<String>> FromIterator<(K, Value)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Attributes(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Attributes;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of attributes")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Attributes(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl SpanJson {
    /// Flattens one OTLP span with the resource and scope it was sent under.
    pub fn from_proto(
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        span: &Span,
    ) -> SpanJson {
        let status = span.status.as_ref();
        SpanJson {
            transport: None,
            resource: resource.map(|r| attributes(&r.attributes)).unwrap_or_default(),
            scope: scope
                .map(|s| ScopeJson { name: s.name.clone(), version: s.version.clone() })
                .unwrap_or_default(),
            name: span.name.clone(),
            kind: kind_name(span.kind).to_owned(),
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent_span_id: hex(&span.parent_span_id),
            trace_state: span.trace_state.clone(),
            start_ns: span.start_time_unix_nano,
            end_ns: span.end_time_unix_nano,
            duration_us: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1000.0,
            attributes: attributes(&span.attributes),
            events: span
                .events
                .iter()
                .map(|e| EventJson {
                    name: e.name.clone(),
                    t_ns: e.time_unix_nano,
                    attributes: attributes(&e.attributes),
                })
                .collect(),
            links: span
                .links
                .iter()
                .map(|l| LinkJson {
                    trace_id: hex(&l.trace_id),
                    span_id: hex(&l.span_id),
                    attributes: attributes(&l.attributes),
                })
                .collect(),
            status: StatusJson {
                code: status.map_or(StatusCode::Unset as i32, |s| s.code),
                message: status.map(|s| s.message.clone()).unwrap_or_default(),
            },
        }
    }

    /// `service.name`, then `/service.instance.id` when there is one.
    pub fn service(&self) -> String {
        service(&self.resource)
    }

    /// Whether the span's status is ERROR.
    pub fn is_error(&self) -> bool {
        self.status.code == StatusCode::Error as i32
    }
}

impl LogJson {
    /// Flattens one OTLP log record with the resource and scope it was sent under.
    pub fn from_proto(
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        record: &LogRecord,
    ) -> LogJson {
        LogJson {
            transport: None,
            resource: resource.map(|r| attributes(&r.attributes)).unwrap_or_default(),
            scope: scope
                .map(|s| ScopeJson { name: s.name.clone(), version: s.version.clone() })
                .unwrap_or_default(),
            time_ns: record.time_unix_nano,
            observed_ns: record.observed_time_unix_nano,
            severity_number: record.severity_number,
            severity_text: record.severity_text.clone(),
            body: record.body.as_ref().map_or(Value::Null, any_value_json),
            attributes: attributes(&record.attributes),
            trace_id: hex(&record.trace_id),
            span_id: hex(&record.span_id),
            flags: record.flags,
        }
    }

    /// `service.name`, then `/service.instance.id` when there is one.
    pub fn service(&self) -> String {
        service(&self.resource)
    }

    /// The message as text.
    pub fn body_text(&self) -> String {
        value_text(&self.body)
    }

    /// `file:line` from `code.filepath` and `code.lineno`, or the file alone; `None` without a
    /// file.
    pub fn code_location(&self) -> Option<String> {
        let file = self.attributes.get("code.filepath").map(value_text)?;
        Some(match self.attributes.get("code.lineno") {
            Some(line) => format!("{file}:{}", value_text(line)),
            None => file,
        })
    }
}

/// Every log record of a request, in request order.
pub fn logs_request_to_json(request: &ExportLogsServiceRequest) -> Vec<LogJson> {
    let mut out = Vec::new();
    for resource_logs in &request.resource_logs {
        for scope_logs in &resource_logs.scope_logs {
            for record in &scope_logs.log_records {
                out.push(LogJson::from_proto(
                    resource_logs.resource.as_ref(),
                    scope_logs.scope.as_ref(),
                    record,
                ));
            }
        }
    }
    out
}

/// Every span of a request, in request order.
pub fn request_to_json(request: &ExportTraceServiceRequest) -> Vec<SpanJson> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                out.push(SpanJson::from_proto(
                    resource_spans.resource.as_ref(),
                    scope_spans.scope.as_ref(),
                    span,
                ));
            }
        }
    }
    out
}

/// A JSON value as plain text: strings without quotes, anything else as JSON.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A time in nanoseconds since the Unix epoch as UTC, RFC 3339 with microseconds
/// (`2026-11-21T08:03:46.536048Z`).
pub fn utc_timestamp(ns: u64) -> String {
    let seconds = ns / 1_000_000_000;
    let micros = (ns % 1_000_000_000) / 1000;
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn service(resource: &Attributes) -> String {
    let name = resource.get("service.name").map(value_text).unwrap_or_default();
    match resource.get("service.instance.id") {
        Some(instance) => format!("{name}/{}", value_text(instance)),
        None => name,
    }
}

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Internal) => "INTERNAL",
        Ok(SpanKind::Server) => "SERVER",
        Ok(SpanKind::Client) => "CLIENT",
        Ok(SpanKind::Producer) => "PRODUCER",
        Ok(SpanKind::Consumer) => "CONSUMER",
        Ok(SpanKind::Unspecified) | Err(_) => "UNSPECIFIED",
    }
}

fn attributes(kvs: &[KeyValue]) -> Attributes {
    kvs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any_value_json))).collect()
}

fn any_value_json(value: &AnyValue) -> Value {
    use any_value::Value as V;
    match &value.value {
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => Value::from(*i),
        // JSON has no NaN or infinity: keep them readable as strings.
        Some(V::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or_else(|| Value::String(d.to_string()), Value::Number)
        }
        Some(V::ArrayValue(array)) => Value::Array(array.values.iter().map(any_value_json).collect()),
        Some(V::KvlistValue(list)) => Value::Object(
            list.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any_value_json)))
                .collect(),
        ),
        Some(V::BytesValue(bytes)) => Value::String(hex(bytes)),
        // Only profiles use string-table indexes; other signals treat them as absent.
        Some(V::StringValueStrindex(_)) | None => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
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
    fn reads_and_writes_the_reference_form() {
        // A server span as cppTango 10.3.3 exports it (from the reference captures).
        let line = r#"{"resource": {"service.name": "Demo", "service.instance.id": "test/demo/1", "tango.process.id": 17811}, "scope": {"name": "tango.cpp", "version": "10.3.3"}, "name": "Tango::Device_4Impl::command_inout_4", "kind": "SERVER", "trace_id": "b2a1fcf8dbcb987a87fc0305c3fe9fde", "span_id": "9621b4e802d9b75d", "parent_span_id": "5d5c121137108f77", "trace_state": "", "start_ns": 1795245243498110550, "end_ns": 1795245243498348755, "duration_us": 238.205, "attributes": {"tango.client_ident.pid": 17915, "tango.operation.argument": "Increment"}, "events": [], "links": [], "status": {"code": 0, "message": ""}}"#;
        let span: SpanJson = serde_json::from_str(line).unwrap();
        assert_eq!(span.service(), "Demo/test/demo/1");
        assert_eq!(span.attributes.get_i64("tango.client_ident.pid"), Some(17915));
        assert_eq!(span.transport, None);
        let again: SpanJson = serde_json::from_str(&serde_json::to_string(&span).unwrap()).unwrap();
        assert_eq!(again, span);
        let text = serde_json::to_string(&span).unwrap();
        assert!(text.starts_with(r#"{"resource":{"service.name":"Demo","#), "{text}");
        assert!(!text.contains("transport"), "{text}");
        assert_eq!(
            span.attributes.to_compact_json(|_| false),
            r#"{"tango.client_ident.pid": 17915, "tango.operation.argument": "Increment"}"#
        );
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000000Z");
        // The reference record's time (`date -u -d @1795248226.536048691`).
        assert_eq!(utc_timestamp(1_795_248_226_536_048_691), "2026-11-21T08:03:46.536048Z");
        assert_eq!(utc_timestamp(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(utc_timestamp(4_107_542_399_999_999_999), "2100-02-28T23:59:59.999999Z");
    }

    #[test]
    fn converts_typed_values() {
        use any_value::Value as V;
        let value = |v| AnyValue { value: Some(v) };
        assert_eq!(any_value_json(&value(V::IntValue(-3))), Value::from(-3));
        assert_eq!(any_value_json(&value(V::DoubleValue(1.5))), Value::from(1.5));
        assert_eq!(any_value_json(&value(V::DoubleValue(f64::NAN))), Value::from("NaN"));
        assert_eq!(any_value_json(&value(V::BoolValue(true))), Value::Bool(true));
        assert_eq!(any_value_json(&value(V::BytesValue(vec![0xab, 1]))), Value::from("ab01"));
        assert_eq!(kind_name(3), "CLIENT");
        assert_eq!(kind_name(42), "UNSPECIFIED");
    }
}
