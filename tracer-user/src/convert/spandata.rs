//! Assembled spans as the OpenTelemetry SDK's `SpanData`, on the wall clock.

use std::time::{Duration, SystemTime};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{SpanContext, Status, TraceFlags, TraceState},
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::assemble::AssembledSpan;

/// The attribute of a span whose end was not seen: why, in a few words.
pub const INCOMPLETE_ATTRIBUTE: &str = "tango_tracer.incomplete";

/// The exportable form of `span`; `target` is the called device's name (CLIENT spans).
pub fn to_span_data(
    span: AssembledSpan,
    target: Option<String>,
    scope: InstrumentationScope,
    clock: &ClockOffset,
) -> SpanData {
    // The span's own list, grown in place: the target goes first.
    let mut attributes = span.attributes;
    if let Some(name) = target {
        attributes.insert(0, KeyValue::new("tango.operation.target", name));
    }
    if let Some(why) = span.incomplete {
        attributes.push(KeyValue::new(INCOMPLETE_ATTRIBUTE, why.reason()));
    }

    let mut events = SpanEvents::default();
    // Only a Tango or CORBA exception in the reply is an error; a call whose end was not seen
    // is not (it carries `tango_tracer.incomplete`).
    let status = match &span.exception {
        Some(exception) => {
            events.events.push(opentelemetry::trace::Event::new(
                "exception caught",
                clock.to_system(exception.ts_ns),
                vec![
                    KeyValue::new("exception.type", exception.exception_type.clone()),
                    KeyValue::new("exception.message", exception.message.clone()),
                ],
                0,
            ));
            Status::error("exception caught (see associated event)")
        }
        None => Status::Unset,
    };
    // Most calls carry none: nothing to parse.
    let trace_state = if span.trace_state.is_empty() {
        TraceState::default()
    } else {
        TraceState::from_key_value(
            span.trace_state
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim())),
        )
        .unwrap_or_default()
    };
    let mut links = SpanLinks::default();
    links.links = span
        .links
        .iter()
        .map(|l| {
            let context =
                SpanContext::new(l.trace_id, l.span_id, TraceFlags::SAMPLED, true, TraceState::default());
            opentelemetry::trace::Link::with_context(context)
        })
        .collect();
    SpanData {
        span_context: SpanContext::new(
            span.context.trace_id,
            span.context.span_id,
            TraceFlags::SAMPLED,
            false,
            trace_state,
        ),
        parent_span_id: span.parent.map(|p| p.span_id).unwrap_or(opentelemetry::trace::SpanId::INVALID),
        parent_span_is_remote: span.parent_is_remote,
        span_kind: span.kind,
        name: span.name,
        start_time: clock.to_system(span.start_ns),
        end_time: clock.to_system(span.end_ns),
        attributes,
        dropped_attributes_count: 0,
        events,
        links,
        status,
        instrumentation_scope: scope,
    }
}

/// `CLOCK_MONOTONIC` now, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Converts kernel monotonic timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct ClockOffset {
    realtime_minus_monotonic_ns: i128,
}

impl ClockOffset {
    pub fn now() -> Self {
        let mono = monotonic_ns() as i128;
        let real = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        ClockOffset { realtime_minus_monotonic_ns: real - mono }
    }

    pub fn to_system(&self, monotonic_ns: u64) -> SystemTime {
        let real = (monotonic_ns as i128 + self.realtime_minus_monotonic_ns).max(0) as u64;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(real)
    }
}
