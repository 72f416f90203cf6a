//! RED aggregation: one latency histogram per instrument, device, operation, argument and
//! outcome, fed with every finished span before the configuration or any sampling drops it.
//!
//! Label strings are interned once (a series costs its strings once, a span costs a few hash
//! lookups); the number of series is capped and what does not fit is folded into one overflow
//! series per instrument (`otel.metric.overflow=true`), counted.

use std::{sync::Arc, time::SystemTime};

use hashbrown::HashMap;
use opentelemetry::{Value, trace::SpanKind};

use crate::assemble::AssembledSpan;

/// Default most series kept (all instruments together) before new ones fold into the overflow.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// Upper bounds (seconds) of the latency buckets: the OpenTelemetry advice for RPC durations
/// (5 ms to 10 s), preceded by sub-millisecond bounds where most Tango calls fall.
pub const BUCKET_BOUNDS: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
    5.0, 7.5, 10.0,
];
/// Buckets, the last one above every bound.
const BUCKETS: usize = BUCKET_BOUNDS.len() + 1;

/// What a histogram measures, named by the OpenTelemetry semantic conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Instrument {
    /// SERVER spans: `rpc.server.call.duration`.
    ServerCall,
    /// CLIENT spans: `rpc.client.call.duration`.
    ClientCall,
    /// Event pushes (PRODUCER spans): `messaging.client.operation.duration`.
    EventPush,
    /// Event deliveries (CONSUMER spans): `messaging.process.duration`.
    EventDelivery,
}

impl Instrument {
    pub const ALL: [Instrument; 4] =
        [Instrument::ServerCall, Instrument::ClientCall, Instrument::EventPush, Instrument::EventDelivery];

    /// The OpenTelemetry metric name.
    pub fn name(self) -> &'static str {
        match self {
            Instrument::ServerCall => "rpc.server.call.duration",
            Instrument::ClientCall => "rpc.client.call.duration",
            Instrument::EventPush => "messaging.client.operation.duration",
            Instrument::EventDelivery => "messaging.process.duration",
        }
    }

    /// The counter of messages derived from an event histogram's counts, if any.
    pub fn message_counter(self) -> Option<&'static str> {
        match self {
            Instrument::EventPush => Some("messaging.client.sent.messages"),
            Instrument::EventDelivery => Some("messaging.client.consumed.messages"),
            Instrument::ServerCall | Instrument::ClientCall => None,
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Instrument::ServerCall => "Duration of Tango calls served (SERVER spans)",
            Instrument::ClientCall => "Duration of Tango calls made (CLIENT spans)",
            Instrument::EventPush => "Duration of Tango event pushes (PRODUCER spans)",
            Instrument::EventDelivery => "Duration of Tango event deliveries (CONSUMER spans)",
        }
    }

    /// The `side` label: which end of the call or event the series measures.
    pub fn side(self) -> &'static str {
        match self {
            Instrument::ServerCall => "server",
            Instrument::ClientCall => "client",
            Instrument::EventPush => "producer",
            Instrument::EventDelivery => "consumer",
        }
    }

    fn of(kind: &SpanKind) -> Option<Instrument> {
        match kind {
            SpanKind::Server => Some(Instrument::ServerCall),
            SpanKind::Client => Some(Instrument::ClientCall),
            SpanKind::Producer => Some(Instrument::EventPush),
            SpanKind::Consumer => Some(Instrument::EventDelivery),
            SpanKind::Internal => None,
        }
    }
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    /// A Tango or CORBA exception in the reply.
    Error,
    /// The end was not seen (the span is exported with `tango_tracer.incomplete`): its duration
    /// is zero.
    Incomplete,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Incomplete => "incomplete",
        }
    }
}

/// One histogram.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Per bucket (not cumulative), the last above every bound.
    pub buckets: [u64; BUCKETS],
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: [0; BUCKETS], count: 0, sum: 0.0, min: f64::INFINITY, max: 0.0 }
    }
}

impl Histogram {
    pub fn record(&mut self, seconds: f64) {
        let bucket = BUCKET_BOUNDS.partition_point(|&bound| bound < seconds);
        if let Some(slot) = self.buckets.get_mut(bucket) {
            *slot += 1;
        }
        self.count += 1;
        self.sum += seconds;
        self.min = self.min.min(seconds);
        self.max = self.max.max(seconds);
    }
}

/// The labels of one series, as interned ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    instrument: Instrument,
    device: u32,
    operation: u32,
    argument: u32,
    outcome: Outcome,
}

/// Strings interned once, referred to by id.
#[derive(Default)]
struct Interner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Interner {
    /// The id of `text`, interned when new and the table has room.
    fn id(&mut self, text: &str, cap: usize) -> Option<u32> {
        if let Some(&id) = self.ids.get(text) {
            return Some(id);
        }
        if self.names.len() >= cap {
            return None;
        }
        let id = u32::try_from(self.names.len()).ok()?;
        let name: Arc<str> = Arc::from(text);
        self.names.push(Arc::clone(&name));
        self.ids.insert(name, id);
        Some(id)
    }

    fn name(&self, id: u32) -> Arc<str> {
        self.names.get(id as usize).cloned().unwrap_or_else(|| Arc::from(""))
    }

    /// The string of `id` (empty when there is none).
    fn text(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |name| name)
    }
}

/// The hash of one series' labels, as strings: a span finds its series by its labels without
/// interning them first.
fn labels_hash(
    seed: &hashbrown::DefaultHashBuilder,
    instrument: Instrument,
    device: &str,
    operation: &str,
    argument: &str,
    outcome: Outcome,
) -> u64 {
    use std::hash::BuildHasher as _;
    seed.hash_one((instrument, device, operation, argument, outcome))
}

/// One series of a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesView {
    pub instrument: Instrument,
    pub device: Arc<str>,
    pub operation: Arc<str>,
    pub argument: Arc<str>,
    pub outcome: Outcome,
    /// The overflow series of its instrument: labels are empty, `otel.metric.overflow=true`.
    pub overflow: bool,
    pub histogram: Histogram,
}

/// Everything aggregated so far, cumulative since `start`.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub start: SystemTime,
    pub time: SystemTime,
    /// Sorted by instrument, then labels; overflow series last of their instrument.
    pub series: Vec<SeriesView>,
    /// Spans folded into an overflow series because the cap was reached.
    pub folded: u64,
    pub max_series: usize,
    /// The daemon's own counters and gauges.
    pub own: Vec<OwnMetric>,
}

/// One of the daemon's self-metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnMetric {
    /// OpenTelemetry name (`tango_tracer.…`).
    pub name: &'static str,
    pub description: &'static str,
    /// A monotonic counter (else a gauge).
    pub counter: bool,
    pub attributes: Vec<(&'static str, String)>,
    pub value: u64,
}

/// RED aggregation of finished spans (see the module's documentation).
pub struct SpanMetrics {
    max_series: usize,
    start: SystemTime,
    strings: Interner,
    /// Index in `series` by the hash of the label strings ([`labels_hash`]): one hash and one
    /// comparison per span.
    index: hashbrown::HashTable<usize>,
    /// The seed of those hashes (labels come from the wire).
    seed: hashbrown::DefaultHashBuilder,
    series: Vec<(SeriesKey, Histogram)>,
    /// The overflow series, per instrument.
    overflow: [Histogram; 4],
    folded: u64,
    /// Spans observed per instrument.
    observed: u64,
}

/// Id of the empty string, interned first.
const EMPTY: u32 = 0;

impl SpanMetrics {
    /// At most `max_series` series (and three times as many distinct label strings).
    pub fn new(max_series: usize) -> Self {
        let mut strings = Interner::default();
        let _ = strings.id("", 1);
        SpanMetrics {
            max_series,
            start: SystemTime::now(),
            strings,
            index: hashbrown::HashTable::new(),
            seed: hashbrown::DefaultHashBuilder::default(),
            series: Vec::new(),
            overflow: Default::default(),
            folded: 0,
            observed: 0,
        }
    }

    /// A finished span: `device` is the served device's name (SERVER spans), `target` the called
    /// device's (CLIENT spans). INTERNAL spans (proxy construction, user code) are not counted.
    pub fn observe(&mut self, span: &AssembledSpan, device: Option<&str>, target: Option<&str>) {
        let Some(instrument) = Instrument::of(&span.kind) else {
            return;
        };
        self.observed += 1;
        let (device, operation, argument) = match instrument {
            Instrument::ServerCall => {
                let argument =
                    string_attribute(span, "tango.operation.argument").or(span.request_argument.as_deref());
                (device, method(&span.name), argument)
            }
            Instrument::ClientCall => {
                (target, method(&span.name), string_attribute(span, "tango.operation.argument"))
            }
            Instrument::EventPush | Instrument::EventDelivery => (
                string_attribute(span, "tango.event.device"),
                string_attribute(span, "tango.event.type").unwrap_or(""),
                string_attribute(span, "tango.event.attribute"),
            ),
        };
        let outcome = if span.exception.is_some() {
            Outcome::Error
        } else if span.incomplete.is_some() {
            Outcome::Incomplete
        } else {
            Outcome::Ok
        };
        let seconds = span.end_ns.saturating_sub(span.start_ns) as f64 / 1e9;
        self.record(instrument, device.unwrap_or(""), operation, argument.unwrap_or(""), outcome, seconds);
    }

    /// One measurement of one series.
    pub fn record(
        &mut self,
        instrument: Instrument,
        device: &str,
        operation: &str,
        argument: &str,
        outcome: Outcome,
        seconds: f64,
    ) {
        let hash = labels_hash(&self.seed, instrument, device, operation, argument, outcome);
        let Self { index, series, strings, .. } = self;
        let is_series = |key: &SeriesKey| {
            key.instrument == instrument
                && key.outcome == outcome
                && strings.text(key.device) == device
                && strings.text(key.operation) == operation
                && strings.text(key.argument) == argument
        };
        let found = index.find(hash, |&i| series.get(i).is_some_and(|(key, _)| is_series(key))).copied();
        if let Some((_, histogram)) = found.and_then(|i| series.get_mut(i)) {
            histogram.record(seconds);
            return;
        }
        let cap = self.max_series.saturating_mul(3).saturating_add(1);
        let key = (|| {
            Some(SeriesKey {
                instrument,
                device: self.strings.id(device, cap)?,
                operation: self.strings.id(operation, cap)?,
                argument: self.strings.id(argument, cap)?,
                outcome,
            })
        })();
        // A new series, when there is room (its labels were not found above).
        let Self { index, series, strings, seed, .. } = self;
        let slot = match key {
            Some(key) if series.len() < self.max_series => {
                let rehash = |&i: &usize| {
                    series.get(i).map_or(0, |(k, _)| {
                        let (device, operation, argument) =
                            (strings.text(k.device), strings.text(k.operation), strings.text(k.argument));
                        labels_hash(seed, k.instrument, device, operation, argument, k.outcome)
                    })
                };
                index.insert_unique(hash, series.len(), rehash);
                series.push((key, Histogram::default()));
                series.last_mut().map(|(_, h)| h)
            }
            _ => None,
        };
        match slot {
            Some(histogram) => histogram.record(seconds),
            None => {
                self.folded += 1;
                if let Some(overflow) = self.overflow.get_mut(instrument as usize) {
                    overflow.record(seconds);
                }
            }
        }
    }

    /// Spans folded into an overflow series so far.
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// Every series, cumulative; `own` are the daemon's self-metrics of this moment.
    pub fn snapshot(&self, own: Vec<OwnMetric>) -> Snapshot {
        let mut series: Vec<SeriesView> = self
            .series
            .iter()
            .map(|(key, histogram)| SeriesView {
                instrument: key.instrument,
                device: self.strings.name(key.device),
                operation: self.strings.name(key.operation),
                argument: self.strings.name(key.argument),
                outcome: key.outcome,
                overflow: false,
                histogram: histogram.clone(),
            })
            .collect();
        let empty = self.strings.name(EMPTY);
        for (instrument, histogram) in Instrument::ALL.iter().zip(&self.overflow) {
            if histogram.count > 0 {
                series.push(SeriesView {
                    instrument: *instrument,
                    device: Arc::clone(&empty),
                    operation: Arc::clone(&empty),
                    argument: Arc::clone(&empty),
                    outcome: Outcome::Ok,
                    overflow: true,
                    histogram: histogram.clone(),
                });
            }
        }
        series.sort_by(|a, b| {
            (a.instrument, a.overflow, &a.device, &a.operation, &a.argument, a.outcome).cmp(&(
                b.instrument,
                b.overflow,
                &b.device,
                &b.operation,
                &b.argument,
                b.outcome,
            ))
        });
        Snapshot {
            start: self.start,
            time: SystemTime::now(),
            series,
            folded: self.folded,
            max_series: self.max_series,
            own,
        }
    }

    /// The aggregation's own counters, for `ctl stats`.
    pub fn report(&self, out: &mut crate::stats::StageStats) {
        const STAGE: &str = "metrics";
        out.push(STAGE, "spans_observed", self.observed);
        out.push(STAGE, "points_folded_into_overflow", self.folded);
        out.size(STAGE, "series_held", self.series.len());
        out.size(STAGE, "label_strings_held", self.strings.names.len());
    }
}

/// The method a span's name ends with: `Tango::Device_5Impl::read_attributes_5` →
/// `read_attributes_5`, `Tango::DeviceProxy::read_attribute` → `read_attribute`.
fn method(name: &str) -> &str {
    crate::live::short_operation(name)
}

fn string_attribute<'a>(span: &'a AssembledSpan, key: &str) -> Option<&'a str> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).and_then(|kv| match &kv.value {
        Value::String(s) => Some(s.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    fn count(snapshot: &Snapshot, instrument: Instrument, device: &str, argument: &str) -> u64 {
        snapshot
            .series
            .iter()
            .filter(|s| s.instrument == instrument && &*s.device == device && &*s.argument == argument)
            .map(|s| s.histogram.count)
            .sum()
    }

    #[test]
    fn buckets_take_values_up_to_their_bound() {
        let mut histogram = Histogram::default();
        for seconds in [0.00005, 0.0001, 0.0002, 0.02, 11.0] {
            histogram.record(seconds);
        }
        assert_eq!(histogram.buckets[0], 2, "0.05 ms and exactly 0.1 ms");
        assert_eq!(histogram.buckets[1], 1);
        assert_eq!(histogram.buckets[7], 1, "20 ms in (10 ms, 25 ms]");
        assert_eq!(histogram.buckets[BUCKETS - 1], 1, "above 10 s");
        assert_eq!(histogram.count, 5);
        assert_eq!((histogram.min, histogram.max), (0.00005, 11.0));
        assert!((histogram.sum - 11.02035).abs() < 1e-9);
    }

    #[test]
    fn series_are_kept_apart_by_every_label() {
        let mut metrics = SpanMetrics::new(100);
        for _ in 0..3 {
            metrics.record(Instrument::ServerCall, "a/b/c", "read_attributes_5", "x", Outcome::Ok, 0.001);
        }
        metrics.record(Instrument::ServerCall, "a/b/c", "read_attributes_5", "x", Outcome::Error, 0.001);
        metrics.record(Instrument::ServerCall, "a/b/c", "read_attributes_5", "y", Outcome::Ok, 0.001);
        metrics.record(Instrument::ClientCall, "a/b/c", "read_attribute", "x", Outcome::Ok, 0.002);
        let snapshot = metrics.snapshot(Vec::new());
        assert_eq!(snapshot.series.len(), 4);
        assert_eq!(count(&snapshot, Instrument::ServerCall, "a/b/c", "x"), 4);
        assert_eq!(count(&snapshot, Instrument::ClientCall, "a/b/c", "x"), 1);
        assert_eq!(snapshot.folded, 0);
        let error = snapshot.series.iter().find(|s| s.outcome == Outcome::Error).unwrap();
        assert_eq!(error.histogram.count, 1);
    }

    #[test]
    fn beyond_the_cap_points_fold_into_the_overflow_series_and_are_counted() {
        let mut metrics = SpanMetrics::new(2);
        for argument in ["a", "b", "c", "d", "a"] {
            metrics.record(Instrument::ServerCall, "dev", "command_inout_4", argument, Outcome::Ok, 0.001);
        }
        metrics.record(Instrument::ClientCall, "dev", "command_inout", "e", Outcome::Ok, 0.001);
        let snapshot = metrics.snapshot(Vec::new());
        assert_eq!(snapshot.folded, 3, "c, d and the client call");
        let overflow: Vec<_> = snapshot.series.iter().filter(|s| s.overflow).collect();
        assert_eq!(overflow.len(), 2, "one per instrument that overflowed");
        assert_eq!(overflow[0].histogram.count, 2);
        assert_eq!(overflow[1].histogram.count, 1);
        assert_eq!(count(&snapshot, Instrument::ServerCall, "dev", "a"), 2, "a known series still counts");
        let total: u64 = snapshot.series.iter().map(|s| s.histogram.count).sum();
        assert_eq!(total, 6, "nothing lost");
    }

    #[test]
    fn label_strings_are_bounded_too() {
        let mut metrics = SpanMetrics::new(1);
        // Three strings per series at most (plus the empty one): a fourth distinct one folds.
        metrics.record(Instrument::ServerCall, "d1", "o1", "a1", Outcome::Ok, 0.0);
        for i in 0..100 {
            metrics.record(Instrument::ServerCall, &format!("d{i}"), "o", "a", Outcome::Ok, 0.0);
        }
        assert!(metrics.strings.names.len() <= 4);
        assert_eq!(metrics.folded(), 100);
    }

    #[test]
    fn span_names_give_the_operation() {
        assert_eq!(method("Tango::Device_5Impl::read_attributes_5"), "read_attributes_5");
        assert_eq!(
            method("std::vector<Tango::DeviceAttribute>* Tango::DeviceProxy::read_attributes"),
            "read_attributes"
        );
        assert_eq!(method("Tango::ZmqEventConsumer::push_zmq_event"), "push_zmq_event");
    }
}
