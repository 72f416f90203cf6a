//! OTLP trace requests encoded straight from span records.
//!
//! [`build_request`](crate::otlp::build_request) makes `opentelemetry-proto`'s message structs
//! (every id a `Vec`, every name and attribute key a `String`) only for prost to walk them once
//! and free them. For an HTTP body the daemon writes the same bytes itself: each resource and
//! scope once per request through its proto message, each span field by field with prost's
//! encoding primitives, without intermediate structs. The bytes are those prost writes for
//! `build_request`'s output (a unit test compares them).

use opentelemetry::{
    InstrumentationScope, Value,
    trace::{SpanId, Status},
};
use opentelemetry_proto::{
    tonic::{
        common::v1::{AnyValue, InstrumentationScope as ProtoScope},
        resource::v1::Resource as ProtoResource,
        trace::v1::{SpanFlags, span, status::StatusCode},
    },
    transform::common::tonic::ResourceAttributesWithSchema,
};
use opentelemetry_sdk::trace::SpanData;
use prost::{
    Message as _,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint},
};

use crate::SpanRecord;

/// Field numbers of the messages written here (opentelemetry-proto's `.proto` files).
mod field {
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    pub const RESOURCE_SPANS_RESOURCE: u32 = 1;
    pub const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
    pub const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;
    pub const SCOPE_SPANS_SCOPE: u32 = 1;
    pub const SCOPE_SPANS_SPANS: u32 = 2;
    pub const SCOPE_SPANS_SCHEMA_URL: u32 = 3;
    pub const SPAN_TRACE_ID: u32 = 1;
    pub const SPAN_SPAN_ID: u32 = 2;
    pub const SPAN_TRACE_STATE: u32 = 3;
    pub const SPAN_PARENT_SPAN_ID: u32 = 4;
    pub const SPAN_NAME: u32 = 5;
    pub const SPAN_KIND: u32 = 6;
    pub const SPAN_START: u32 = 7;
    pub const SPAN_END: u32 = 8;
    pub const SPAN_ATTRIBUTES: u32 = 9;
    pub const SPAN_DROPPED_ATTRIBUTES: u32 = 10;
    pub const SPAN_EVENTS: u32 = 11;
    pub const SPAN_DROPPED_EVENTS: u32 = 12;
    pub const SPAN_LINKS: u32 = 13;
    pub const SPAN_DROPPED_LINKS: u32 = 14;
    pub const SPAN_STATUS: u32 = 15;
    pub const SPAN_FLAGS: u32 = 16;
    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;
    pub const KEY_VALUE_KEY: u32 = 1;
    pub const KEY_VALUE_VALUE: u32 = 2;
    pub const ANY_STRING: u32 = 1;
    pub const ANY_BOOL: u32 = 2;
    pub const ANY_INT: u32 = 3;
    pub const ANY_DOUBLE: u32 = 4;
}

/// Scratch buffers reused across the spans of one request, so that writing a span allocates
/// nothing once they have grown.
#[derive(Default)]
struct Scratch {
    /// The span being written, before its length is known.
    span: Vec<u8>,
    /// One attribute value (an `AnyValue`), before its length is known.
    value: Vec<u8>,
    /// The spans of the scope being written.
    scope: Vec<u8>,
    /// The scopes of the resource being written.
    resource: Vec<u8>,
}

/// The encoded `ExportTraceServiceRequest` of `records`: one `ResourceSpans` per distinct
/// resource (in order of first appearance) and, inside it, one `ScopeSpans` per scope, as
/// [`build_request`](crate::otlp::build_request) makes them.
pub fn encode_request(records: &[SpanRecord]) -> Vec<u8> {
    let groups =
        crate::otlp::group_by_resource(records.iter().map(|record| (record.resource.clone(), &record.data)));
    let mut out = Vec::with_capacity(records.len() * 320);
    let mut scratch = Scratch::default();
    for (resource, spans) in groups {
        scratch.resource.clear();
        // A process's spans share one scope: comparing with the few seen beats hashing.
        let mut scopes: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
        for span in spans {
            let scope = &span.instrumentation_scope;
            match scopes.iter_mut().find(|(s, _)| *s == scope) {
                Some((_, list)) => list.push(span),
                None => scopes.push((scope, vec![span])),
            }
        }
        for (scope, spans) in scopes {
            scratch.scope.clear();
            let proto: ProtoScope = (scope, None).into();
            prost::encoding::message::encode(field::SCOPE_SPANS_SCOPE, &proto, &mut scratch.scope);
            for span in spans {
                scratch.span.clear();
                encode_span(span, &mut scratch.span, &mut scratch.value);
                bytes_field(field::SCOPE_SPANS_SPANS, &scratch.span, &mut scratch.scope);
            }
            string_field(
                field::SCOPE_SPANS_SCHEMA_URL,
                scope.schema_url().unwrap_or_default(),
                &mut scratch.scope,
            );
            bytes_field(field::RESOURCE_SPANS_SCOPE_SPANS, &scratch.scope, &mut scratch.resource);
        }
        let resource = ResourceAttributesWithSchema::from(&resource);
        let mut head = Vec::new();
        let proto = ProtoResource {
            attributes: resource.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: vec![],
        };
        prost::encoding::message::encode(field::RESOURCE_SPANS_RESOURCE, &proto, &mut head);
        let schema_url = resource.schema_url.unwrap_or_default();
        let schema_len = if schema_url.is_empty() {
            0
        } else {
            key_len(field::RESOURCE_SPANS_SCHEMA_URL)
                + encoded_len_varint(schema_url.len() as u64)
                + schema_url.len()
        };
        let length = head.len() + scratch.resource.len() + schema_len;
        encode_key(field::REQUEST_RESOURCE_SPANS, WireType::LengthDelimited, &mut out);
        encode_varint(length as u64, &mut out);
        out.extend_from_slice(&head);
        out.extend_from_slice(&scratch.resource);
        string_field(field::RESOURCE_SPANS_SCHEMA_URL, &schema_url, &mut out);
    }
    out
}

/// One span's fields, in field-number order as prost writes them; defaults left out.
fn encode_span(span: &SpanData, out: &mut Vec<u8>, value: &mut Vec<u8>) {
    let context = &span.span_context;
    bytes_field(field::SPAN_TRACE_ID, &context.trace_id().to_bytes(), out);
    bytes_field(field::SPAN_SPAN_ID, &context.span_id().to_bytes(), out);
    let trace_state = context.trace_state().header();
    string_field(field::SPAN_TRACE_STATE, &trace_state, out);
    if span.parent_span_id != SpanId::INVALID {
        bytes_field(field::SPAN_PARENT_SPAN_ID, &span.parent_span_id.to_bytes(), out);
    }
    string_field(field::SPAN_NAME, &span.name, out);
    let kind = span::SpanKind::from(span.span_kind.clone()) as i32;
    varint_field(field::SPAN_KIND, i64::from(kind) as u64, out);
    fixed64_field(field::SPAN_START, unix_nanos(span.start_time), out);
    fixed64_field(field::SPAN_END, unix_nanos(span.end_time), out);
    for attribute in &span.attributes {
        encode_key_value(attribute.key.as_str(), &attribute.value, out, value);
    }
    varint_field(field::SPAN_DROPPED_ATTRIBUTES, u64::from(span.dropped_attributes_count), out);
    // Events and links are rare: they go through their proto messages.
    for event in span.events.iter() {
        let proto = span::Event {
            time_unix_nano: unix_nanos(event.timestamp),
            name: event.name.to_string(),
            attributes: opentelemetry_proto::transform::common::tonic::Attributes::from(
                event.attributes.clone(),
            )
            .0,
            dropped_attributes_count: event.dropped_attributes_count,
        };
        prost::encoding::message::encode(field::SPAN_EVENTS, &proto, out);
    }
    varint_field(field::SPAN_DROPPED_EVENTS, u64::from(span.events.dropped_count), out);
    for link in span.links.iter() {
        let proto = span::Link::from(link.clone());
        prost::encoding::message::encode(field::SPAN_LINKS, &proto, out);
    }
    varint_field(field::SPAN_DROPPED_LINKS, u64::from(span.links.dropped_count), out);
    // The status is always present, even when empty.
    let (code, message) = match &span.status {
        Status::Ok => (StatusCode::Ok, ""),
        Status::Unset => (StatusCode::Unset, ""),
        Status::Error { description } => (StatusCode::Error, description.as_ref()),
    };
    let code = code as i32;
    let message_len = if message.is_empty() {
        0
    } else {
        key_len(field::STATUS_MESSAGE) + encoded_len_varint(message.len() as u64) + message.len()
    };
    let code_len =
        if code == 0 { 0 } else { key_len(field::STATUS_CODE) + encoded_len_varint(i64::from(code) as u64) };
    encode_key(field::SPAN_STATUS, WireType::LengthDelimited, out);
    encode_varint((message_len + code_len) as u64, out);
    string_field(field::STATUS_MESSAGE, message, out);
    varint_field(field::STATUS_CODE, i64::from(code) as u64, out);
    let mut flags = span.span_context.trace_flags().to_u8() as u32 | SpanFlags::ContextHasIsRemoteMask as u32;
    if span.parent_span_is_remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    if flags != 0 {
        encode_key(field::SPAN_FLAGS, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&flags.to_le_bytes());
    }
}

/// One attribute as a `KeyValue` message (field 9 of a span).
fn encode_key_value(key: &str, attribute: &Value, out: &mut Vec<u8>, value: &mut Vec<u8>) {
    value.clear();
    match attribute {
        // Oneof members are written even when they hold their default.
        Value::String(text) => {
            encode_key(field::ANY_STRING, WireType::LengthDelimited, value);
            encode_varint(text.as_str().len() as u64, value);
            value.extend_from_slice(text.as_str().as_bytes());
        }
        Value::Bool(b) => {
            encode_key(field::ANY_BOOL, WireType::Varint, value);
            encode_varint(u64::from(*b), value);
        }
        Value::I64(i) => {
            encode_key(field::ANY_INT, WireType::Varint, value);
            encode_varint(*i as u64, value);
        }
        Value::F64(f) => {
            encode_key(field::ANY_DOUBLE, WireType::SixtyFourBit, value);
            value.extend_from_slice(&f.to_le_bytes());
        }
        // Arrays (and kinds added later) are rare: their proto message is written.
        other => AnyValue::from(other.clone()).encode_raw(value),
    }
    let key_field = if key.is_empty() {
        0
    } else {
        key_len(field::KEY_VALUE_KEY) + encoded_len_varint(key.len() as u64) + key.len()
    };
    let value_field = key_len(field::KEY_VALUE_VALUE) + encoded_len_varint(value.len() as u64) + value.len();
    encode_key(field::SPAN_ATTRIBUTES, WireType::LengthDelimited, out);
    encode_varint((key_field + value_field) as u64, out);
    string_field(field::KEY_VALUE_KEY, key, out);
    // The value is always present (the conversion makes `Some`), so written even when empty.
    bytes_field(field::KEY_VALUE_VALUE, value, out);
}

/// The length of a field's key.
fn key_len(tag: u32) -> usize {
    prost::encoding::key_len(tag)
}

/// A length-delimited field, written even when empty (a present message).
fn bytes_field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A proto3 string or bytes field: left out when empty.
fn string_field(tag: u32, text: &str, out: &mut Vec<u8>) {
    if !text.is_empty() {
        bytes_field(tag, text.as_bytes(), out);
    }
}

/// A proto3 varint field: left out when zero.
fn varint_field(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }
}

/// A proto3 fixed64 field: left out when zero.
fn fixed64_field(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Nanoseconds since the Unix epoch as `opentelemetry-proto` counts them (a time before it is
/// the epoch).
fn unix_nanos(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use std::time::{Duration, SystemTime};

    use opentelemetry::{
        Array, KeyValue, StringValue,
        trace::{Event, Link, SpanContext, SpanKind, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_sdk::{
        Resource,
        trace::{SpanEvents, SpanLinks},
    };

    use super::*;
    use crate::otlp::build_request;

    fn device(name: &str, pid: i64) -> Resource {
        Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "Demo"),
                KeyValue::new("service.instance.id", name.to_owned()),
                KeyValue::new("tango.process.id", pid),
            ])
            .build()
    }

    fn scope(name: &'static str, schema: Option<&'static str>) -> InstrumentationScope {
        let builder = InstrumentationScope::builder(name).with_version("10.3.3");
        match schema {
            Some(url) => builder.with_schema_url(url).build(),
            None => builder.build(),
        }
    }

    /// Spans with every field the daemon sets, and the rare ones it may: parents local and
    /// remote, each status, each attribute kind (arrays, empty strings and keys, false, zero,
    /// negatives), events, links, a trace state.
    fn span(id: u64, scope: InstrumentationScope) -> SpanData {
        let mut events = SpanEvents::default();
        let mut links = SpanLinks::default();
        if id.is_multiple_of(3) {
            events.events.push(Event::new(
                "exception",
                SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
                vec![KeyValue::new("exception.message", "boom")],
                1,
            ));
            events.dropped_count = 2;
            links.links.push(Link::new(
                SpanContext::new(
                    TraceId::from(9u128),
                    SpanId::from(5u64),
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::default(),
                ),
                vec![KeyValue::new("linked", true)],
                0,
            ));
            links.dropped_count = 1;
        }
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10u128 + u128::from(id)),
                SpanId::from(id),
                if id.is_multiple_of(2) { TraceFlags::SAMPLED } else { TraceFlags::default() },
                false,
                if id % 4 == 1 {
                    TraceState::from_key_value([("tango", "x")]).unwrap()
                } else {
                    TraceState::default()
                },
            ),
            parent_span_id: if id.is_multiple_of(2) { SpanId::from(id + 100) } else { SpanId::INVALID },
            parent_span_is_remote: id.is_multiple_of(4),
            span_kind: [
                SpanKind::Client,
                SpanKind::Server,
                SpanKind::Internal,
                SpanKind::Producer,
                SpanKind::Consumer,
            ][(id % 5) as usize]
                .clone(),
            name: format!("Demo::read_attribute {id}").into(),
            start_time: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000 + id),
            end_time: if id == 7 {
                SystemTime::UNIX_EPOCH
            } else {
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
            },
            attributes: vec![
                KeyValue::new("tango.operation.target", "test/demo/1"),
                KeyValue::new("empty", ""),
                KeyValue::new("", "no key"),
                KeyValue::new("code.lineno", -(id as i64)),
                KeyValue::new("zero", 0i64),
                KeyValue::new("flag", false),
                KeyValue::new("yes", true),
                KeyValue::new("ratio", 0.5),
                KeyValue::new("nothing", 0.0),
                KeyValue::new(
                    "names",
                    Value::Array(Array::String(vec![StringValue::from("a"), StringValue::from("")])),
                ),
                KeyValue::new("numbers", Value::Array(Array::I64(vec![1, -2, 0]))),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
            ],
            dropped_attributes_count: (id % 2) as u32,
            events,
            links,
            status: match id % 3 {
                0 => Status::error("API_AttrNotFound: no attribute"),
                1 => Status::Ok,
                _ => Status::Unset,
            },
            instrumentation_scope: scope,
        }
    }

    #[test]
    fn bytes_are_those_of_build_request() {
        let a = device("test/demo/1", 1);
        let b = device("test/demo/2", 2);
        let a_again = device("test/demo/1", 1);
        let with_schema = Resource::builder_empty()
            .with_schema_url([KeyValue::new("service.name", "S")], "https://opentelemetry.io/schemas/1.0")
            .build();
        let empty = Resource::builder_empty().build();
        let resources = [&a, &b, &a_again, &with_schema, &empty, &a];
        let scopes = [scope("tango.cpp", None), scope("tango.cpp", Some("https://x")), scope("other", None)];
        let records: Vec<SpanRecord> = (0..24u64)
            .map(|id| SpanRecord {
                resource: resources[(id % 6) as usize].clone(),
                data: span(id, scopes[(id % 7 % 3) as usize].clone()),
            })
            .collect();
        let encoded = encode_request(&records);
        let expected = build_request(records.clone());
        assert_eq!(ExportTraceServiceRequest::decode(&encoded[..]).unwrap(), expected);
        assert_eq!(encoded, expected.encode_to_vec());
        assert_eq!(encode_request(&[]), build_request(vec![]).encode_to_vec());
    }
}
