//! The live view behind `tango-tracer top`: every finished span, before the configuration
//! decides whether it is exported, counted over a sliding window of [`WINDOW_S`] one-second
//! buckets, per device and operation, per process, and for events.
//!
//! Memory is bounded: at most [`MAX_ROWS`] operation rows and [`MAX_PROCESSES`] process rows
//! (each a fixed-size ring of buckets); spans of rows beyond go to one overflow row, counted.
//! Rows idle for a whole window are forgotten. The per-span cost is one hash of the row's key,
//! one lookup and a few additions; names are resolved only when a snapshot is taken.

pub mod histogram;

use std::time::Instant;

use hashbrown::HashMap;
use opentelemetry::{Value, trace::SpanKind};
use serde::{Deserialize, Serialize};

use self::histogram::Histogram;
use crate::{assemble::AssembledSpan, stats::StageStats};

/// Seconds the window spans.
pub const WINDOW_S: usize = 10;
/// Most operation rows; the spans of further rows are counted in the overflow row.
pub const MAX_ROWS: usize = 512;
/// Most process rows; spans of further processes are counted apart.
pub const MAX_PROCESSES: usize = 1024;
/// The device of the overflow row.
pub const OVERFLOW_DEVICE: &str = "(other rows)";

/// Whose device a row is about: a served or called device by object key (named when a
/// snapshot is taken), an event's device by name, or none (a process's own calls).
#[derive(Clone, Debug, PartialEq, Eq)]
enum DeviceId {
    Key(Vec<u8>),
    Name(String),
    None,
}

/// [`DeviceId`] borrowed from a span.
#[derive(Clone, Copy)]
enum DeviceRef<'a> {
    Key(&'a [u8]),
    Name(&'a str),
    None,
}

impl DeviceRef<'_> {
    fn to_owned_id(self) -> DeviceId {
        match self {
            DeviceRef::Key(k) => DeviceId::Key(k.to_vec()),
            DeviceRef::Name(n) => DeviceId::Name(n.to_string()),
            DeviceRef::None => DeviceId::None,
        }
    }
}

/// One second of one operation row.
#[derive(Clone, Debug, Default)]
struct OpBucket {
    /// The second (since the view started) this bucket holds; older contents are stale.
    second: u64,
    calls: u32,
    errors: u32,
    total_us: u64,
    latency: Histogram,
}

/// One device, operation, argument and side.
struct OpRow {
    /// The row's key as [`write_key`] writes it.
    key: Box<[u8]>,
    device: DeviceId,
    operation: String,
    argument: String,
    server: bool,
    buckets: Box<[OpBucket; WINDOW_S]>,
    last_second: u64,
}

/// One second of one process.
#[derive(Clone, Copy, Debug, Default)]
struct ProcessBucket {
    second: u64,
    calls: u32,
    spans: u32,
    errors: u32,
}

struct ProcessRow {
    buckets: [ProcessBucket; WINDOW_S],
    last_second: u64,
}

/// One second of events.
#[derive(Clone, Debug, Default)]
struct EventBucket {
    second: u64,
    pushes: u32,
    deliveries: u32,
    lost: u64,
    delay: Histogram,
}

/// The sliding window, owned by the pipeline.
pub struct LiveView {
    started: Instant,
    rows: Vec<OpRow>,
    /// Row index by the hash of its key.
    index: HashMap<u64, usize>,
    /// The seed of those hashes.
    seed: hashbrown::DefaultHashBuilder,
    /// The key of the span being counted, kept for its capacity.
    key: Vec<u8>,
    overflow: Option<OpRow>,
    processes: HashMap<u32, ProcessRow>,
    events: Box<[EventBucket; WINDOW_S]>,
    /// Spans counted in the overflow row because the table was full.
    rows_overflowed: u64,
    /// Spans of processes the process table had no room for.
    processes_refused: u64,
}

impl Default for LiveView {
    fn default() -> Self {
        LiveView::new(Instant::now())
    }
}

/// The bucket of `second` in a ring, emptied when it held an older second.
fn slot<B: Default>(buckets: &mut [B; WINDOW_S], second: u64, held: impl Fn(&B) -> u64) -> Option<&mut B> {
    let bucket = buckets.get_mut((second % WINDOW_S as u64) as usize)?;
    if held(bucket) != second {
        *bucket = B::default();
    }
    Some(bucket)
}

/// Whether a bucket of `held` is inside the window ending at `now`.
fn in_window(held: u64, now: u64) -> bool {
    held <= now && now - held < WINDOW_S as u64
}

/// The string attributes a span's row is keyed by, read in one pass over its attributes.
struct RowAttributes<'a> {
    event_device: Option<&'a str>,
    argument: Option<&'a str>,
    event_attribute: Option<&'a str>,
}

impl<'a> RowAttributes<'a> {
    fn of(span: &'a AssembledSpan) -> Self {
        // The first attribute of each key counts, as a search from the front would find it.
        let (mut event_device, mut argument, mut event_attribute) = (None, None, None);
        for kv in &span.attributes {
            let slot = match kv.key.as_str() {
                "tango.event.device" => &mut event_device,
                "tango.operation.argument" => &mut argument,
                "tango.event.attribute" => &mut event_attribute,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(match &kv.value {
                    Value::String(s) => Some(s.as_str()),
                    _ => None,
                });
            }
        }
        RowAttributes {
            event_device: event_device.flatten(),
            argument: argument.flatten(),
            event_attribute: event_attribute.flatten(),
        }
    }
}

fn int_attribute(span: &AssembledSpan, key: &str) -> Option<i64> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).and_then(|kv| match &kv.value {
        Value::I64(v) => Some(*v),
        _ => None,
    })
}

/// The method a span is named after (`Tango::Device_6Impl::read_attributes_5` → `read_attributes_5`).
pub fn short_operation(name: &str) -> &str {
    // The last "::" found by a byte scan from the end: a substring search costs more than
    // these few bytes (it runs once per span). The byte after a ':' is a char boundary.
    let bytes = name.as_bytes();
    let mut i = bytes.len();
    while i >= 2 {
        if bytes.get(i - 1) == Some(&b':') && bytes.get(i - 2) == Some(&b':') {
            return name.get(i..).unwrap_or(name);
        }
        i -= 1;
    }
    name
}

/// Writes a row's key into `out` as one run of bytes: each part after its length, so no two keys
/// write the same bytes. A row keeps its key so, and a span's key is written into a reused buffer,
/// so that finding its row hashes one slice and compares it with one slice the row holds, rather
/// than comparing three texts that each live elsewhere on the heap.
fn write_key(out: &mut Vec<u8>, device: DeviceRef<'_>, operation: &str, argument: &str, server: bool) {
    out.clear();
    let part = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    match device {
        DeviceRef::Key(k) => {
            out.push(1);
            part(out, k);
        }
        DeviceRef::Name(n) => {
            out.push(2);
            part(out, n.as_bytes());
        }
        DeviceRef::None => out.push(3),
    }
    part(out, operation.as_bytes());
    part(out, argument.as_bytes());
    out.push(u8::from(server));
}

/// The hash of a row's key (as [`write_key`] writes it), seeded per process (the key comes from
/// the wire). Foldhash: one span's few dozen bytes cost a few ns.
fn row_hash(seed: &hashbrown::DefaultHashBuilder, key: &[u8]) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = seed.build_hasher();
    h.write(key);
    h.finish()
}

impl LiveView {
    pub fn new(started: Instant) -> Self {
        LiveView {
            started,
            rows: Vec::new(),
            index: HashMap::new(),
            seed: hashbrown::DefaultHashBuilder::default(),
            key: Vec::new(),
            overflow: None,
            processes: HashMap::new(),
            events: Box::default(),
            rows_overflowed: 0,
            processes_refused: 0,
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs()
    }

    /// Counts one finished span at `now`.
    pub fn observe(&mut self, span: &AssembledSpan, now: Instant) {
        let second = self.second(now);
        let server = !matches!(span.kind, SpanKind::Client | SpanKind::Consumer);
        let error = span.exception.is_some();
        let timed = span.incomplete.is_none();
        let latency_us = span.end_ns.saturating_sub(span.start_ns) / 1_000;
        let keys = RowAttributes::of(span);
        let device = match (keys.event_device, &span.kind, &span.target_key, &span.device_key) {
            (Some(name), ..) => DeviceRef::Name(name),
            (None, SpanKind::Client, Some(target), _) => DeviceRef::Key(target),
            (None, _, _, Some(key)) => DeviceRef::Key(key),
            _ => DeviceRef::None,
        };
        let argument = keys.argument.or(keys.event_attribute).unwrap_or("");
        let operation = short_operation(&span.name);
        if let Some(row) = self.row(device, operation, argument, server, second) {
            row.last_second = second;
            if let Some(bucket) = slot(&mut row.buckets, second, |b| b.second) {
                bucket.second = second;
                bucket.calls = bucket.calls.saturating_add(1);
                bucket.errors = bucket.errors.saturating_add(u32::from(error));
                if timed {
                    bucket.total_us += latency_us;
                    bucket.latency.record(latency_us);
                }
            }
        }
        self.observe_process(span, second, error);
        if matches!(span.kind, SpanKind::Producer | SpanKind::Consumer)
            && let Some(bucket) = slot(&mut self.events, second, |b| b.second)
        {
            bucket.second = second;
            if span.kind == SpanKind::Producer {
                bucket.pushes = bucket.pushes.saturating_add(1);
            } else {
                bucket.deliveries = bucket.deliveries.saturating_add(1);
                if let Some(delay) = int_attribute(span, "tango.event.delay_us") {
                    bucket.delay.record(delay.max(0) as u64);
                }
                bucket.lost += int_attribute(span, "tango.event.lost").unwrap_or(0).max(0) as u64;
            }
        }
    }

    fn observe_process(&mut self, span: &AssembledSpan, second: u64, error: bool) {
        if self.processes.len() >= MAX_PROCESSES && !self.processes.contains_key(&span.pid) {
            self.prune(second);
            if self.processes.len() >= MAX_PROCESSES {
                self.processes_refused += 1;
                return;
            }
        }
        let row = self.processes.entry(span.pid).or_insert_with(|| ProcessRow {
            buckets: [ProcessBucket::default(); WINDOW_S],
            last_second: second,
        });
        row.last_second = second;
        if let Some(bucket) = slot(&mut row.buckets, second, |b| b.second) {
            bucket.second = second;
            bucket.spans = bucket.spans.saturating_add(1);
            bucket.calls = bucket
                .calls
                .saturating_add(u32::from(matches!(span.kind, SpanKind::Server | SpanKind::Client)));
            bucket.errors = bucket.errors.saturating_add(u32::from(error));
        }
    }

    /// The row of this key, made when there is room, else the overflow row.
    fn row(
        &mut self,
        device: DeviceRef<'_>,
        operation: &str,
        argument: &str,
        server: bool,
        second: u64,
    ) -> Option<&mut OpRow> {
        write_key(&mut self.key, device, operation, argument, server);
        let hash = row_hash(&self.seed, &self.key);
        let found =
            self.index.get(&hash).copied().filter(|&i| self.rows.get(i).is_some_and(|r| *r.key == *self.key));
        if let Some(i) = found {
            return self.rows.get_mut(i);
        }
        if self.rows.len() >= MAX_ROWS {
            self.prune(second);
        }
        // A hash taken by another key (vanishingly rare) also goes to the overflow row.
        if self.rows.len() >= MAX_ROWS || self.index.contains_key(&hash) {
            self.rows_overflowed += 1;
            return Some(self.overflow.get_or_insert_with(|| OpRow {
                key: Box::default(),
                device: DeviceId::Name(OVERFLOW_DEVICE.to_string()),
                operation: String::new(),
                argument: String::new(),
                server,
                buckets: Box::default(),
                last_second: second,
            }));
        }
        self.index.insert(hash, self.rows.len());
        self.rows.push(OpRow {
            key: self.key.as_slice().into(),
            device: device.to_owned_id(),
            operation: operation.to_string(),
            argument: argument.to_string(),
            server,
            buckets: Box::default(),
            last_second: second,
        });
        self.rows.last_mut()
    }

    /// Forgets rows idle for a whole window.
    fn prune(&mut self, now: u64) {
        let before = self.rows.len();
        self.rows.retain(|r| in_window(r.last_second, now));
        if self.rows.len() != before {
            self.index.clear();
            for (i, r) in self.rows.iter().enumerate() {
                self.index.insert(row_hash(&self.seed, &r.key), i);
            }
        }
        self.processes.retain(|_, p| in_window(p.last_second, now));
        if self.overflow.as_ref().is_some_and(|r| !in_window(r.last_second, now)) {
            self.overflow = None;
        }
    }

    /// The window at `now`: `device_name` names object keys, `process_name` pids.
    pub fn snapshot(
        &mut self,
        now: Instant,
        device_name: impl Fn(&[u8]) -> Option<String>,
        process_name: impl Fn(u32) -> Option<String>,
    ) -> LiveSnapshot {
        let second = self.second(now);
        self.prune(second);
        // The current second is partial: rates are over the seconds the window covers so far.
        let covered = (second + 1).min(WINDOW_S as u64).max(1) as f64;
        let mut rows: Vec<OperationRow> =
            self.rows.iter().filter_map(|r| r.summary(second, covered, &device_name)).collect();
        if let Some(overflow) = self.overflow.as_ref().and_then(|r| r.summary(second, covered, &device_name))
        {
            rows.push(overflow);
        }
        let mut processes: Vec<ProcessView> = self
            .processes
            .iter()
            .filter_map(|(&pid, row)| {
                let (mut calls, mut spans, mut errors) = (0u64, 0u64, 0u64);
                for b in row.buckets.iter().filter(|b| in_window(b.second, second)) {
                    calls += u64::from(b.calls);
                    spans += u64::from(b.spans);
                    errors += u64::from(b.errors);
                }
                (spans > 0).then(|| ProcessView {
                    pid,
                    process: process_name(pid).unwrap_or_default(),
                    calls_per_s: calls as f64 / covered,
                    spans_per_s: spans as f64 / covered,
                    errors_per_s: errors as f64 / covered,
                    spans,
                    errors,
                })
            })
            .collect();
        processes.sort_by(|a, b| b.spans.cmp(&a.spans).then(a.pid.cmp(&b.pid)));
        let (mut pushes, mut deliveries, mut lost, mut delay) = (0u64, 0u64, 0u64, Histogram::default());
        for b in self.events.iter().filter(|b| in_window(b.second, second)) {
            pushes += u64::from(b.pushes);
            deliveries += u64::from(b.deliveries);
            lost += b.lost;
            delay.merge(&b.delay);
        }
        LiveSnapshot {
            window_s: covered,
            rows,
            processes,
            events: EventsView {
                pushes_per_s: pushes as f64 / covered,
                deliveries_per_s: deliveries as f64 / covered,
                pushes,
                deliveries,
                lost,
                delay_p50_ms: ms(delay.quantile_us(0.5)),
                delay_p99_ms: ms(delay.quantile_us(0.99)),
                delay_max_ms: ms(delay.max_us()),
            },
            rows_overflowed: self.rows_overflowed,
            processes_refused: self.processes_refused,
            health: HealthView::default(),
        }
    }

    /// Counters for `ctl stats`: rows held (they go once idle for a window) and what overflowed.
    pub fn report(&self, out: &mut StageStats) {
        const STAGE: &str = "live";
        out.size(STAGE, "rows_held", self.rows.len());
        out.size(STAGE, "processes_held", self.processes.len());
        out.push(STAGE, "rows_overflowed", self.rows_overflowed);
        out.push(STAGE, "processes_refused", self.processes_refused);
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl OpRow {
    fn summary(
        &self,
        second: u64,
        covered: f64,
        device_name: &impl Fn(&[u8]) -> Option<String>,
    ) -> Option<OperationRow> {
        let (mut count, mut errors, mut total_us, mut latency) = (0u64, 0u64, 0u64, Histogram::default());
        for b in self.buckets.iter().filter(|b| in_window(b.second, second)) {
            count += u64::from(b.calls);
            errors += u64::from(b.errors);
            total_us += b.total_us;
            latency.merge(&b.latency);
        }
        if count == 0 {
            return None;
        }
        let device = match &self.device {
            DeviceId::Key(k) => device_name(k).unwrap_or_else(|| hex::encode(k)),
            DeviceId::Name(n) => n.clone(),
            DeviceId::None => String::new(),
        };
        Some(OperationRow {
            device,
            operation: self.operation.clone(),
            argument: self.argument.clone(),
            side: if self.server { "server" } else { "client" }.to_string(),
            count,
            errors,
            calls_per_s: count as f64 / covered,
            errors_per_s: errors as f64 / covered,
            p50_ms: ms(latency.quantile_us(0.5)),
            p99_ms: ms(latency.quantile_us(0.99)),
            max_ms: ms(latency.max_us()),
            total_ms: ms(total_us),
        })
    }
}

/// `ctl live` / `top`: the window as the daemon sees it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LiveSnapshot {
    /// Seconds the rates are over (the window, or less just after the daemon started).
    pub window_s: f64,
    pub rows: Vec<OperationRow>,
    pub processes: Vec<ProcessView>,
    pub events: EventsView,
    /// Spans counted in the overflow row since the daemon started (the row table was full).
    pub rows_overflowed: u64,
    /// Spans of processes the process table had no room for, since the daemon started.
    pub processes_refused: u64,
    pub health: HealthView,
}

/// One device, operation, argument and side over the window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct OperationRow {
    pub device: String,
    pub operation: String,
    /// The attribute, command or event attribute, when the span names one.
    pub argument: String,
    /// `server` or `client`.
    pub side: String,
    pub count: u64,
    pub errors: u64,
    pub calls_per_s: f64,
    pub errors_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Time spent in these calls over the window.
    pub total_ms: f64,
}

/// One traced process over the window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessView {
    pub pid: u32,
    pub process: String,
    /// Calls made or served (client and server spans).
    pub calls_per_s: f64,
    pub spans_per_s: f64,
    pub errors_per_s: f64,
    pub spans: u64,
    pub errors: u64,
}

/// Events over the window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EventsView {
    pub pushes_per_s: f64,
    pub deliveries_per_s: f64,
    pub pushes: u64,
    pub deliveries: u64,
    /// Events a subscriber missed (gaps in the counters).
    pub lost: u64,
    /// Delay from push to delivery.
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
}

/// The daemon's own health since it started.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HealthView {
    pub traced_processes: u64,
    pub records_lost: u64,
    /// Everything lost, every stage and cause (as `ctl stats` lists it).
    pub lost_total: u64,
    /// Spans the exporters dropped.
    pub spans_dropped: u64,
    pub spans_exported: u64,
    /// Destinations failing now, with their last error.
    pub export_errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
    use std::time::Duration;

    use opentelemetry::KeyValue;

    use super::*;
    use crate::assemble::{naming::OperationClass, span::SpanContextLite};

    fn span(kind: SpanKind, name: &str, argument: &str, target: &[u8], latency_ms: u64) -> AssembledSpan {
        AssembledSpan {
            name: name.to_string().into(),
            kind,
            context: SpanContextLite {
                trace_id: opentelemetry::trace::TraceId::from(1),
                span_id: opentelemetry::trace::SpanId::from(2),
            },
            parent: None,
            parent_is_remote: false,
            trace_state: String::new(),
            start_ns: 1_000_000,
            end_ns: 1_000_000 + latency_ms * 1_000_000,
            attributes: vec![KeyValue::new("tango.operation.argument", argument.to_string())],
            exception: None,
            links: Vec::new(),
            incomplete: None,
            pid: 42,
            device_key: None,
            target_key: Some(target.into()),
            operation: OperationClass::User,
            request_argument: None,
        }
    }

    #[test]
    fn rows_summarise_the_window_and_forget_what_left_it() {
        let t0 = Instant::now();
        let mut view = LiveView::new(t0);
        for s in 0..5u64 {
            let now = t0 + Duration::from_secs(s);
            for _ in 0..10 {
                view.observe(
                    &span(SpanKind::Client, "Tango::DeviceProxy::read_attribute", "fast", b"k1", 1),
                    now,
                );
            }
            view.observe(
                &span(SpanKind::Client, "Tango::DeviceProxy::read_attribute", "slow", b"k1", 20),
                now,
            );
        }
        let snap = view.snapshot(t0 + Duration::from_millis(4_500), |_| Some("test/top/1".into()), |_| None);
        assert_eq!(snap.window_s, 5.0);
        let slow = snap.rows.iter().find(|r| r.argument == "slow").unwrap();
        assert_eq!((slow.count, slow.side.as_str(), slow.device.as_str()), (5, "client", "test/top/1"));
        assert!((19.0..=20.0).contains(&slow.p99_ms), "{slow:?}");
        assert_eq!(slow.operation, "read_attribute");
        let fast = snap.rows.iter().find(|r| r.argument == "fast").unwrap();
        assert_eq!(fast.count, 50);
        assert!((fast.calls_per_s - 10.0).abs() < 1e-9);
        assert_eq!(snap.processes.len(), 1);
        assert_eq!(snap.processes[0].spans, 55);
        // Ten seconds later every bucket left the window: rows are forgotten.
        let later = view.snapshot(t0 + Duration::from_secs(20), |_| None, |_| None);
        assert!(later.rows.is_empty() && later.processes.is_empty());
        assert!(view.rows.is_empty() && view.index.is_empty() && view.processes.is_empty());
    }

    #[test]
    fn short_operation_is_what_follows_the_last_double_colon() {
        for name in [
            "Tango::Device_6Impl::read_attributes_5",
            "read_attribute",
            "",
            ":",
            "::",
            ":::",
            "a::",
            "::b",
            "a:::b",
            "a::b:c",
            "Ä::ö::ü",
        ] {
            assert_eq!(short_operation(name), name.rsplit("::").next().unwrap_or(name), "{name:?}");
        }
    }

    #[test]
    fn keys_whose_parts_run_together_are_rows_apart() {
        let t0 = Instant::now();
        let mut view = LiveView::new(t0);
        for (name, argument, target) in [
            ("X::ab", "c", &b"k"[..]),
            ("X::a", "bc", b"k"),
            ("X::a", "c", b"kb"),
            ("X::ba", "c", b"k"),
            ("X::ab", "c", b"k"),
        ] {
            view.observe(&span(SpanKind::Client, name, argument, target, 1), t0);
        }
        view.observe(&span(SpanKind::Server, "X::ab", "c", b"k", 1), t0);
        let snap = view.snapshot(t0, |k| Some(String::from_utf8_lossy(k).into_owned()), |_| None);
        let mut rows: Vec<_> = snap
            .rows
            .iter()
            .map(|r| (r.device.as_str(), r.operation.as_str(), r.argument.as_str(), r.side.as_str(), r.count))
            .collect();
        rows.sort_unstable();
        assert_eq!(
            rows,
            [
                ("", "ab", "c", "server", 1),
                ("k", "a", "bc", "client", 1),
                ("k", "ab", "c", "client", 2),
                ("k", "ba", "c", "client", 1),
                ("kb", "a", "c", "client", 1),
            ]
        );
    }

    #[test]
    fn rows_beyond_the_cap_go_to_one_overflow_row_counted() {
        let t0 = Instant::now();
        let mut view = LiveView::new(t0);
        for i in 0..MAX_ROWS + 10 {
            view.observe(&span(SpanKind::Client, "read_attribute", &format!("a{i}"), b"k", 1), t0);
        }
        assert_eq!(view.rows.len(), MAX_ROWS);
        assert_eq!(view.rows_overflowed, 10);
        let snap = view.snapshot(t0, |_| None, |_| None);
        let overflow = snap.rows.iter().find(|r| r.device == OVERFLOW_DEVICE).unwrap();
        assert_eq!(overflow.count, 10);
        assert_eq!(snap.rows.len(), MAX_ROWS + 1);
    }
}
