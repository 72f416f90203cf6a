//! What the assembly and events stages produce: a finished span without its resource.

use std::{borrow::Cow, sync::Arc};

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
    /// Borrowed for the names of the operations clients call most (no allocation per span).
    pub name: Cow<'static, str>,
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
    /// Why the end of the call was not seen, when it was not: the span keeps what is known,
    /// ends when it started and is not an error.
    pub incomplete: Option<Incomplete>,
    /// The process the span belongs to.
    pub pid: u32,
    /// Object key of the device whose resource the span carries: the served device for server
    /// spans and for calls made while serving; `None` for plain client processes. Shared with
    /// the connection's other calls to the device (no copy per span).
    pub device_key: Option<Arc<[u8]>>,
    /// Object key of the device a client span calls.
    pub target_key: Option<Arc<[u8]>>,
    /// What kind of operation this is, for topic filtering.
    pub operation: OperationClass,
    /// The attribute a SERVER span's request names when the span itself does not say it
    /// (cppTango's server spans name only commands): for the metrics, never exported.
    pub request_argument: Option<Arc<str>>,
}

/// Why a span's end was not seen. Such a span is exported with status unset, its start as its
/// end (no invented duration) and `tango_tracer.incomplete` = [`Incomplete::reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Incomplete {
    /// The process ended before the reply.
    ProcessExited,
    /// The connection closed before the reply.
    ConnectionClosed,
    /// The daemon stopped before the reply.
    TracerStopped,
    /// No reply within the pending-call limit (600 s).
    NoReply,
    /// Probe records were lost while the call was pending, and its reply did not come.
    RecordsLost,
    /// Too many calls were pending: this one was not followed to its end.
    TableFull,
    /// A `DeviceProxy` construction whose last step was not seen (the thread went on).
    EndNotSeen,
}

impl Incomplete {
    /// Every reason, in the order the stage stats list them.
    pub const ALL: [Incomplete; 7] = [
        Incomplete::ProcessExited,
        Incomplete::ConnectionClosed,
        Incomplete::TracerStopped,
        Incomplete::NoReply,
        Incomplete::RecordsLost,
        Incomplete::TableFull,
        Incomplete::EndNotSeen,
    ];

    /// The value of `tango_tracer.incomplete`.
    pub fn reason(self) -> &'static str {
        match self {
            Incomplete::ProcessExited => "process exited",
            Incomplete::ConnectionClosed => "connection closed",
            Incomplete::TracerStopped => "tracer stopped",
            Incomplete::NoReply => "no reply within 600 s",
            Incomplete::RecordsLost => "probe records lost",
            Incomplete::TableFull => "too many calls in flight",
            Incomplete::EndNotSeen => "end not seen",
        }
    }

    /// The name of its counter in the stage stats.
    pub fn counter(self) -> &'static str {
        match self {
            Incomplete::ProcessExited => "incomplete_process_exited",
            Incomplete::ConnectionClosed => "incomplete_connection_closed",
            Incomplete::TracerStopped => "incomplete_tracer_stopped",
            Incomplete::NoReply => "incomplete_no_reply",
            Incomplete::RecordsLost => "incomplete_records_lost",
            Incomplete::TableFull => "incomplete_table_full",
            Incomplete::EndNotSeen => "incomplete_end_not_seen",
        }
    }

    fn index(self) -> usize {
        match self {
            Incomplete::ProcessExited => 0,
            Incomplete::ConnectionClosed => 1,
            Incomplete::TracerStopped => 2,
            Incomplete::NoReply => 3,
            Incomplete::RecordsLost => 4,
            Incomplete::TableFull => 5,
            Incomplete::EndNotSeen => 6,
        }
    }
}

/// Incomplete spans counted by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IncompleteCounts([u64; Incomplete::ALL.len()]);

impl IncompleteCounts {
    pub fn add(&mut self, why: Incomplete) {
        if let Some(count) = self.0.get_mut(why.index()) {
            *count += 1;
        }
    }

    pub fn get(&self, why: Incomplete) -> u64 {
        self.0.get(why.index()).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}
