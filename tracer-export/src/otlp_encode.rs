//! OTLP trace requests encoded straight from span records.
//!
//! [`build_request`](crate::otlp::build_request) makes `opentelemetry-proto`'s message structs
//! (every id a `Vec`, every name and attribute key a `String`) only for prost to walk them once
//! and free them. For an HTTP body the daemon writes the same bytes itself: each resource and
//! scope once per request through its proto message, each span field by field with prost's
//! encoding primitives, without intermediate structs. Attribute lengths are worked out before
//! they are written; a span's body is written once into a buffer of its resource and copied
//! once into the request when the lengths of its scope and resource are known. The bytes are
//! those prost writes for `build_request`'s output (a unit test compares them).

use opentelemetry::{
    InstrumentationScope, Value,
    trace::{Link, SpanId, Status},
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
    encoding::{WireType, encoded_len_varint},
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
    pub const LINK_TRACE_ID: u32 = 1;
    pub const LINK_SPAN_ID: u32 = 2;
    pub const LINK_TRACE_STATE: u32 = 3;
    pub const LINK_ATTRIBUTES: u32 = 4;
    pub const LINK_DROPPED_ATTRIBUTES: u32 = 5;
    pub const LINK_FLAGS: u32 = 6;
    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;
    pub const KEY_VALUE_KEY: u32 = 1;
    pub const KEY_VALUE_VALUE: u32 = 2;
    pub const ANY_STRING: u32 = 1;
    pub const ANY_BOOL: u32 = 2;
    pub const ANY_INT: u32 = 3;
    pub const ANY_DOUBLE: u32 = 4;
}

/// The buffers of an encoder, kept between requests, so that encoding allocates nothing per
/// span once they have grown.
#[derive(Default)]
pub struct Encoder {
    /// The spans of the resource being written, each a `Span` message's body, back to back:
    /// a span's length is known only once it is written, and its enclosing messages' lengths
    /// only once all of their spans are.
    bodies: Vec<u8>,
    /// Where each span of `bodies` ends.
    ends: Vec<usize>,
}

/// The encoded `ExportTraceServiceRequest` of `records`: one `ResourceSpans` per distinct
/// resource (in order of first appearance) and, inside it, one `ScopeSpans` per scope, as
/// [`build_request`](crate::otlp::build_request) makes them.
pub fn encode_request(records: &[SpanRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::default().encode(records, &mut out);
    out
}

impl Encoder {
    /// Appends the encoded request of `records` to `out` (see [`encode_request`]).
    pub fn encode(&mut self, records: &[SpanRecord], out: &mut Vec<u8>) {
        let groups =
            crate::otlp::group_by_resource(records.iter().map(|record| (&record.resource, &record.data)));
        out.reserve(records.len() * 320);
        for (resource, spans) in groups {
            // A process's spans share one scope: comparing with the few seen beats hashing.
            let mut scopes: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
            for span in spans {
                let scope = &span.instrumentation_scope;
                match scopes.iter_mut().find(|(s, _)| same_scope(s, scope)) {
                    Some((_, list)) => list.push(span),
                    None => scopes.push((scope, vec![span])),
                }
            }
            self.bodies.clear();
            self.ends.clear();
            // The spans were made on another thread a while ago and are out of the cache: their
            // attribute tables are fetched a few spans ahead, their texts one span ahead.
            let mut tables = scopes.iter().flat_map(|(_, spans)| spans).skip(TABLES_AHEAD);
            let mut texts = scopes.iter().flat_map(|(_, spans)| spans).skip(1);
            for span in scopes.iter().flat_map(|(_, spans)| spans) {
                if let Some(ahead) = tables.next() {
                    prefetch_slice(&ahead.attributes);
                }
                if let Some(ahead) = texts.next() {
                    prefetch_texts(ahead);
                }
                encode_span(span, &mut self.bodies);
                self.ends.push(self.bodies.len());
            }
            // Each scope's message and length, then the resource's, before anything is written.
            let mut written = Vec::with_capacity(scopes.len());
            let mut ends = self.ends.iter();
            let mut start = 0;
            let mut scopes_len = 0;
            for (scope, spans) in &scopes {
                let mut head = Vec::new();
                let proto: ProtoScope = (*scope, None).into();
                prost::encoding::message::encode(field::SCOPE_SPANS_SCOPE, &proto, &mut head);
                let schema_url = scope.schema_url().unwrap_or_default();
                let mut len = head.len() + string_field_len(field::SCOPE_SPANS_SCHEMA_URL, schema_url);
                for end in ends.by_ref().take(spans.len()) {
                    len += bytes_field_len(field::SCOPE_SPANS_SPANS, end - start);
                    start = *end;
                }
                scopes_len += bytes_field_len(field::RESOURCE_SPANS_SCOPE_SPANS, len);
                written.push((head, len, schema_url, spans.len()));
            }
            let resource = ResourceAttributesWithSchema::from(resource);
            let mut head = Vec::new();
            let proto = ProtoResource {
                attributes: resource.attributes.0,
                dropped_attributes_count: 0,
                entity_refs: vec![],
            };
            prost::encoding::message::encode(field::RESOURCE_SPANS_RESOURCE, &proto, &mut head);
            let schema_url = resource.schema_url.unwrap_or_default();
            let length =
                head.len() + scopes_len + string_field_len(field::RESOURCE_SPANS_SCHEMA_URL, &schema_url);
            encode_key(field::REQUEST_RESOURCE_SPANS, WireType::LengthDelimited, out);
            encode_varint(length as u64, out);
            out.extend_from_slice(&head);
            let mut ends = self.ends.iter();
            let mut start = 0;
            for (head, len, schema_url, count) in written {
                encode_key(field::RESOURCE_SPANS_SCOPE_SPANS, WireType::LengthDelimited, out);
                encode_varint(len as u64, out);
                out.extend_from_slice(&head);
                for &end in ends.by_ref().take(count) {
                    bytes_field(
                        field::SCOPE_SPANS_SPANS,
                        self.bodies.get(start..end).unwrap_or_default(),
                        out,
                    );
                    start = end;
                }
                string_field(field::SCOPE_SPANS_SCHEMA_URL, schema_url, out);
            }
            string_field(field::RESOURCE_SPANS_SCHEMA_URL, &schema_url, out);
        }
    }
}

/// How many spans ahead of the one being written its attribute table is fetched.
const TABLES_AHEAD: usize = 3;

/// Asks the CPU to bring the memory of `items` into its cache.
fn prefetch_slice<T>(items: &[T]) {
    let bytes = size_of_val(items);
    let start = items.as_ptr().cast::<u8>();
    for offset in (0..bytes).step_by(64) {
        prefetch(start.wrapping_add(offset));
    }
}

/// Asks the CPU to bring the texts of a span's name and attribute values into its cache.
fn prefetch_texts(span: &SpanData) {
    prefetch(span.name.as_ptr());
    for attribute in &span.attributes {
        if let Value::String(text) = &attribute.value {
            prefetch(text.as_str().as_ptr());
        }
    }
}

/// A hint to load the cache line of `address`; it reads nothing and cannot fault.
fn prefetch(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints the cache; any address is allowed, none is dereferenced.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Whether two scopes are equal; the scopes of one process's spans are clones of one, whose
/// texts share their (static) storage, so the addresses almost always decide.
fn same_scope(a: &InstrumentationScope, b: &InstrumentationScope) -> bool {
    let same = |x: Option<&str>, y: Option<&str>| match (x, y) {
        (Some(x), Some(y)) => std::ptr::eq(x, y),
        (None, None) => true,
        _ => false,
    };
    (same(Some(a.name()), Some(b.name()))
        && same(a.version(), b.version())
        && same(a.schema_url(), b.schema_url())
        && a.attributes().next().is_none()
        && b.attributes().next().is_none())
        || a == b
}

/// One span's fields, in field-number order as prost writes them; defaults left out.
fn encode_span(span: &SpanData, out: &mut Vec<u8>) {
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
        encode_key_value(attribute.key.as_str(), &attribute.value, out);
    }
    varint_field(field::SPAN_DROPPED_ATTRIBUTES, u64::from(span.dropped_attributes_count), out);
    // Events are rare: they go through their proto messages.
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
    // Every delivery of an event links its push: links are written field by field.
    for link in span.links.iter() {
        encode_link(link, out);
    }
    varint_field(field::SPAN_DROPPED_LINKS, u64::from(span.links.dropped_count), out);
    // The status is always present, even when empty.
    let (code, message) = match &span.status {
        Status::Ok => (StatusCode::Ok, ""),
        Status::Unset => (StatusCode::Unset, ""),
        Status::Error { description } => (StatusCode::Error, description.as_ref()),
    };
    let code = code as i32;
    let message_len = string_field_len(field::STATUS_MESSAGE, message);
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

/// One link as a `Link` message (field 13 of a span), as prost writes `span::Link::from(link)`:
/// its length worked out first, then its fields in field-number order, defaults left out.
fn encode_link(link: &Link, out: &mut Vec<u8>) {
    let context = &link.span_context;
    let trace_state = context.trace_state().header();
    let mut flags = u32::from(context.trace_flags().to_u8()) | SpanFlags::ContextHasIsRemoteMask as u32;
    if context.is_remote() {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    let dropped = u64::from(link.dropped_attributes_count);
    let mut len = bytes_field_len(field::LINK_TRACE_ID, 16)
        + bytes_field_len(field::LINK_SPAN_ID, 8)
        + string_field_len(field::LINK_TRACE_STATE, &trace_state);
    for attribute in &link.attributes {
        len +=
            bytes_field_len(field::LINK_ATTRIBUTES, key_value_len(attribute.key.as_str(), &attribute.value));
    }
    if dropped != 0 {
        len += key_len(field::LINK_DROPPED_ATTRIBUTES) + encoded_len_varint(dropped);
    }
    if flags != 0 {
        len += key_len(field::LINK_FLAGS) + 4;
    }
    encode_key(field::SPAN_LINKS, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    bytes_field(field::LINK_TRACE_ID, &context.trace_id().to_bytes(), out);
    bytes_field(field::LINK_SPAN_ID, &context.span_id().to_bytes(), out);
    string_field(field::LINK_TRACE_STATE, &trace_state, out);
    for attribute in &link.attributes {
        encode_attribute(field::LINK_ATTRIBUTES, attribute.key.as_str(), &attribute.value, out);
    }
    varint_field(field::LINK_DROPPED_ATTRIBUTES, dropped, out);
    if flags != 0 {
        encode_key(field::LINK_FLAGS, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&flags.to_le_bytes());
    }
}

/// The length of an attribute's `KeyValue` message.
fn key_value_len(key: &str, attribute: &Value) -> usize {
    let value_len = match attribute {
        Value::String(text) => bytes_field_len(field::ANY_STRING, text.as_str().len()),
        Value::Bool(_) => key_len(field::ANY_BOOL) + 1,
        Value::I64(i) => key_len(field::ANY_INT) + encoded_len_varint(*i as u64),
        Value::F64(_) => key_len(field::ANY_DOUBLE) + 8,
        other => AnyValue::from(other.clone()).encoded_len(),
    };
    string_field_len(field::KEY_VALUE_KEY, key) + bytes_field_len(field::KEY_VALUE_VALUE, value_len)
}

/// One attribute as a `KeyValue` message (field 9 of a span).
fn encode_key_value(key: &str, attribute: &Value, out: &mut Vec<u8>) {
    encode_attribute(field::SPAN_ATTRIBUTES, key, attribute, out);
}

/// One attribute as a `KeyValue` message in field `tag`, its lengths worked out first so that
/// every byte is written once.
fn encode_attribute(tag: u32, key: &str, attribute: &Value, out: &mut Vec<u8>) {
    // Arrays (and kinds added later) are rare: their proto message is written.
    let rare = match attribute {
        Value::String(_) | Value::Bool(_) | Value::I64(_) | Value::F64(_) => None,
        other => Some(AnyValue::from(other.clone())),
    };
    // Oneof members are written even when they hold their default.
    let value_len = match (attribute, &rare) {
        (_, Some(proto)) => proto.encoded_len(),
        (Value::String(text), None) => bytes_field_len(field::ANY_STRING, text.as_str().len()),
        (Value::Bool(_), None) => key_len(field::ANY_BOOL) + 1,
        (Value::I64(i), None) => key_len(field::ANY_INT) + encoded_len_varint(*i as u64),
        (_, None) => key_len(field::ANY_DOUBLE) + 8,
    };
    // The value is always present (the conversion makes `Some`), so written even when empty.
    let len =
        string_field_len(field::KEY_VALUE_KEY, key) + bytes_field_len(field::KEY_VALUE_VALUE, value_len);
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    string_field(field::KEY_VALUE_KEY, key, out);
    encode_key(field::KEY_VALUE_VALUE, WireType::LengthDelimited, out);
    encode_varint(value_len as u64, out);
    match (attribute, rare) {
        (_, Some(proto)) => proto.encode_raw(out),
        (Value::String(text), None) => bytes_field(field::ANY_STRING, text.as_str().as_bytes(), out),
        (Value::Bool(b), None) => {
            encode_key(field::ANY_BOOL, WireType::Varint, out);
            encode_varint(u64::from(*b), out);
        }
        (Value::I64(i), None) => {
            encode_key(field::ANY_INT, WireType::Varint, out);
            encode_varint(*i as u64, out);
        }
        (Value::F64(f), None) => {
            encode_key(field::ANY_DOUBLE, WireType::SixtyFourBit, out);
            out.extend_from_slice(&f.to_le_bytes());
        }
        // Written above.
        _ => {}
    }
}

/// A field's key, as prost's `encode_key` writes it.
fn encode_key(tag: u32, wire_type: WireType, out: &mut Vec<u8>) {
    encode_varint(u64::from((tag << 3) | wire_type as u32), out);
}

/// A varint, as prost's `encode_varint` writes it, pushed byte by byte: prost writes through
/// `BufMut`, whose `put_u8` on a `Vec` appends a one-byte slice, a call per byte that showed
/// in the daemon's profile.
fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The length of a length-delimited field of `len` bytes, written even when empty.
fn bytes_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The length of a proto3 string field: nothing when empty.
fn string_field_len(tag: u32, text: &str) -> usize {
    if text.is_empty() { 0 } else { bytes_field_len(tag, text.len()) }
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
            // A local link with a trace state, an array attribute and dropped attributes.
            links.links.push(Link::new(
                SpanContext::new(
                    TraceId::from(10u128),
                    SpanId::from(6u64),
                    TraceFlags::default(),
                    false,
                    TraceState::from_key_value([("tango", "y")]).unwrap(),
                ),
                vec![KeyValue::new("names", Value::Array(Array::String(vec![StringValue::from("a")])))],
                3,
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
