//! What the assembly and events stages produce: a finished span without its resource.

use opentelemetry::{
    KeyValue,
    trace::{SpanId, SpanKind, TraceId},
};

use super::naming::OperationClass;

/// Context of a span, enough to parent another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContextLite {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

/// An exception recorded on a span, as cppTango records it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExceptionEvent {
    pub ts_ns: u64,
    pub exception_type: String,
    pub message: String,
}

/// A finished span without its resource; timestamps are kernel monotonic nanoseconds.
#[derive(Clone, Debug)]
pub struct AssembledSpan {
    pub name: String,
    pub kind: SpanKind,
    pub context: SpanContextLite,
    pub parent: Option<SpanContextLite>,
    pub parent_is_remote: bool,
    pub trace_state: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<KeyValue>,
    pub exception: Option<ExceptionEvent>,
    /// Spans this one is causally linked to (an event delivery links its push).
    pub links: Vec<SpanContextLite>,
    /// Error status without a Tango exception (connection lost, process exited, CORBA error).
    pub error: Option<String>,
    /// The process the span belongs to.
    pub pid: u32,
    /// Object key of the device whose resource the span carries: the served device for server
    /// spans and for calls made while serving; `None` for plain client processes.
    pub device_key: Option<Vec<u8>>,
    /// Object key of the device a client span calls.
    pub target_key: Option<Vec<u8>>,
    /// What kind of operation this is, for topic filtering.
    pub operation: OperationClass,
}
