//! The spans (or log records) one destination holds, within a memory budget, and their
//! accounting. Log records follow exactly the rules written here for spans, in a backlog, a
//! budget and counters of their own.
//!
//! A backlog holds, oldest first: a batch waiting for its retry (*parked*), then the spans
//! waiting to be sent. The batch whose request is out (*sending*) is counted too, but belongs
//! to no queue until its outcome is known.
//!
//! **Policy when the budget is full: keep the newest spans, drop the oldest.** Someone recovering
//! from an outage wants the most recent window (what is happening now, what led to the failure
//! they are looking at); spans from the start of a long outage have aged out of usefulness by
//! the time the backend is back. So a new span always gets in, and the oldest spans held make
//! room for it: the parked batch as a whole (it is the oldest), then waiting spans one by one.
//! The only exception is the batch being sent: its request may already have arrived, so its
//! spans are not dropped while it is out; when it alone leaves no room, the new span is dropped
//! (counted apart, as the newest). If its request then fails after newer spans were dropped to
//! make room meanwhile, it is dropped too rather than parked: it is older than they were. Every
//! drop is counted by cause in [`DestinationStats`].

use std::collections::VecDeque;

use opentelemetry::{Array, KeyValue, Value, trace::Status};

use crate::{
    LogRecord, SpanRecord,
    stats::{DestinationStats, DropCounts},
};

/// The bytes one span is counted for against the budget: what it holds in memory, estimated
/// from the lengths of its parts without walking anything but its attributes, events and links.
///
/// The estimate is the span's own struct plus the heap it owns: name, status message, each
/// attribute (`KeyValue` plus its key and its value's text or array), each event and link with
/// theirs. Keys are counted even when static, and vectors by length, not capacity; the
/// [`Resource`](opentelemetry_sdk::Resource) is shared by all spans of a process or device and
/// is not counted. That is at least what the span takes once encoded for OTLP.
pub fn span_bytes(span: &SpanRecord) -> u64 {
    let data = &span.data;
    let mut bytes = size_of::<SpanRecord>() + data.name.len() + attributes_bytes(&data.attributes);
    if let Status::Error { description } = &data.status {
        bytes += description.len();
    }
    for event in data.events.iter() {
        bytes += size_of::<opentelemetry::trace::Event>() + event.name.len();
        bytes += attributes_bytes(&event.attributes);
    }
    for link in data.links.iter() {
        bytes += size_of::<opentelemetry::trace::Link>() + attributes_bytes(&link.attributes);
    }
    bytes as u64
}

/// The bytes one log record is counted for against the budget, estimated as for spans
/// ([`span_bytes`]): the record's own struct, its message, its severity text and its
/// attributes. The resource and the scope are shared and not counted.
pub fn log_bytes(log: &LogRecord) -> u64 {
    let bytes =
        size_of::<LogRecord>() + log.body.len() + log.severity_text.len() + attributes_bytes(&log.attributes);
    bytes as u64
}

fn attributes_bytes(attributes: &[KeyValue]) -> usize {
    attributes.iter().map(|kv| size_of::<KeyValue>() + kv.key.as_str().len() + value_bytes(&kv.value)).sum()
}

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.as_str().len(),
        Value::Array(Array::Bool(v)) => v.len(),
        Value::Array(Array::I64(v)) => v.len() * size_of::<i64>(),
        Value::Array(Array::F64(v)) => v.len() * size_of::<f64>(),
        Value::Array(Array::String(v)) => {
            v.iter().map(|s| size_of::<opentelemetry::StringValue>() + s.as_str().len()).sum()
        }
        // Scalars live inside the `KeyValue`; kinds added later are counted as scalars.
        _ => 0,
    }
}

/// How many spans, and how many of the budget's bytes, a batch holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) spans: u64,
    pub(crate) bytes: u64,
}

/// A batch that failed and waits for its retry, already in the form it is sent in (`P`).
struct Parked<P> {
    payload: P,
    held: Held,
}

/// What the worker gets to send next.
pub(crate) enum Taken<R, P> {
    /// Nothing is waiting.
    Nothing,
    /// The parked batch, for its retry.
    Retry(P),
    /// The oldest waiting spans.
    Fresh(Vec<R>),
}

/// How the batch that was out ended.
pub(crate) enum Outcome<P> {
    /// The destination took it; `rejected` spans of it were refused (OTLP partial success).
    Delivered { rejected: u64 },
    /// It failed and may succeed later: it waits, at the head of the backlog, for its retry.
    Retry(P),
    /// It is lost, for this cause.
    Dropped(fn(&mut DropCounts) -> &mut u64),
}

/// One destination's spans and counters. Owned by the hub, under its lock; the submitting side
/// pushes, the destination's worker takes batches and settles them.
pub(crate) struct Backlog<R, P> {
    budget: u64,
    /// The spans waiting, oldest first, in chunks of up to `chunk` spans: a batch that is a
    /// whole chunk is handed to the worker as it is, without moving its spans again.
    waiting: VecDeque<VecDeque<R>>,
    /// The bytes of each waiting span, oldest first.
    sizes: VecDeque<u64>,
    waiting_bytes: u64,
    /// The most spans of a chunk: the worker's batch size.
    chunk: usize,
    /// Spans of the last batch taken, to size the next chunk for the traffic.
    last_batch: usize,
    parked: Option<Parked<P>>,
    sending: Option<Held>,
    /// Newer spans were dropped for room while the batch was out.
    evicted_while_sending: bool,
    stats: DestinationStats,
}

impl<R, P> Backlog<R, P> {
    /// An empty backlog holding at most `budget` bytes (as estimated by [`span_bytes`]), whose
    /// spans are taken in batches of up to `batch`.
    pub(crate) fn new(budget: u64, batch: usize) -> Self {
        Backlog {
            budget,
            waiting: VecDeque::new(),
            sizes: VecDeque::new(),
            waiting_bytes: 0,
            chunk: batch.max(1),
            last_batch: 0,
            parked: None,
            sending: None,
            evicted_while_sending: false,
            stats: DestinationStats::default(),
        }
    }

    /// Adds a span of `bytes`, dropping the oldest spans held if the budget needs room. Returns
    /// how many spans wait now.
    pub(crate) fn push(&mut self, span: R, bytes: u64) -> usize {
        self.stats.spans_submitted += 1;
        let sending = self.sending.map_or(0, |s| s.bytes);
        if sending.saturating_add(bytes) > self.budget {
            // Dropping everything that may be dropped would not make room.
            self.stats.dropped.budget_newest += 1;
            return self.sizes.len();
        }
        while self.held_bytes() + bytes > self.budget {
            if let Some(parked) = self.parked.take() {
                self.stats.dropped.budget_oldest += parked.held.spans;
            } else if let Some(oldest) = self.sizes.pop_front() {
                self.drop_oldest_waiting();
                self.waiting_bytes -= oldest;
                self.stats.dropped.budget_oldest += 1;
                self.evicted_while_sending |= self.sending.is_some();
            } else {
                break; // Unreachable: only `sending` is left, and it leaves room (checked above).
            }
        }
        match self.waiting.back_mut() {
            Some(last) if last.len() < self.chunk => last.push_back(span),
            _ => {
                // Sized for what the last batch held, so that a chunk seldom grows (moving its
                // spans) and light traffic does not reserve a whole batch per interval.
                let capacity = self.last_batch.saturating_add(self.last_batch / 4).max(16).min(self.chunk);
                let mut chunk = VecDeque::with_capacity(capacity);
                chunk.push_back(span);
                self.waiting.push_back(chunk);
            }
        }
        self.sizes.push_back(bytes);
        self.waiting_bytes += bytes;
        self.stats.peak_bytes_held = self.stats.peak_bytes_held.max(self.held_bytes());
        self.sizes.len()
    }

    fn drop_oldest_waiting(&mut self) {
        if let Some(front) = self.waiting.front_mut() {
            front.pop_front();
            if front.is_empty() {
                self.waiting.pop_front();
            }
        }
    }

    /// Counts a span that was refused because the hub is shut down.
    pub(crate) fn refuse_after_shutdown(&mut self) {
        self.stats.spans_submitted += 1;
        self.stats.dropped.after_shutdown += 1;
    }

    /// Spans waiting to be sent (the parked batch not included).
    pub(crate) fn waiting(&self) -> usize {
        self.sizes.len()
    }

    /// Takes the next batch to send, oldest first: the parked batch if there is one, else up to
    /// `max` waiting spans. It counts as *sending* until [`Backlog::settle`].
    pub(crate) fn take(&mut self, max: usize) -> Taken<R, P> {
        debug_assert!(self.sending.is_none(), "one batch out at a time");
        if let Some(parked) = self.parked.take() {
            self.sending = Some(parked.held);
            return Taken::Retry(parked.payload);
        }
        if self.sizes.is_empty() {
            return Taken::Nothing;
        }
        let count = max.clamp(1, self.sizes.len());
        let held = Held { spans: count as u64, bytes: self.sizes.drain(..count).sum() };
        let spans = match self.waiting.pop_front() {
            // The usual batch: one whole chunk, handed over as it is.
            Some(chunk) if chunk.len() == count => Vec::from(chunk),
            first => {
                let mut spans = Vec::with_capacity(count);
                let mut chunks = first.into_iter();
                while spans.len() < count {
                    let Some(mut chunk) = chunks.next().or_else(|| self.waiting.pop_front()) else {
                        break; // Unreachable: `sizes` counts the spans of the chunks.
                    };
                    let n = (count - spans.len()).min(chunk.len());
                    spans.extend(chunk.drain(..n));
                    if !chunk.is_empty() {
                        self.waiting.push_front(chunk);
                    }
                }
                spans
            }
        };
        self.last_batch = count;
        self.waiting_bytes -= held.bytes;
        self.sending = Some(held);
        Taken::Fresh(spans)
    }

    /// Records how the batch that was out ended.
    pub(crate) fn settle(&mut self, outcome: Outcome<P>) {
        let held = self.sending.take().unwrap_or_default();
        let evicted_newer = std::mem::take(&mut self.evicted_while_sending);
        match outcome {
            Outcome::Delivered { rejected } => {
                let rejected = rejected.min(held.spans);
                self.stats.spans_delivered += held.spans - rejected;
                self.stats.dropped.rejected += rejected;
            }
            // Oldest first: what was dropped while it was out was newer.
            Outcome::Retry(_) if evicted_newer => self.stats.dropped.budget_oldest += held.spans,
            Outcome::Retry(payload) => self.parked = Some(Parked { payload, held }),
            Outcome::Dropped(cause) => *cause(&mut self.stats.dropped) += held.spans,
        }
    }

    /// Drops everything held, batch out included, for `cause` (the end of shutdown).
    pub(crate) fn drop_all(&mut self, cause: fn(&mut DropCounts) -> &mut u64) {
        let held = self.held_spans();
        *cause(&mut self.stats.dropped) += held;
        self.waiting.clear();
        self.sizes.clear();
        self.waiting_bytes = 0;
        self.parked = None;
        self.sending = None;
        self.evicted_while_sending = false;
    }

    /// Counts one attempt (a request or a write), and the error if it failed.
    pub(crate) fn count_attempt(&mut self, error: Option<String>) {
        self.stats.requests_sent += 1;
        if let Some(error) = error {
            self.stats.requests_failed += 1;
            self.stats.failing = true;
            self.stats.last_error = Some(error);
        } else {
            self.stats.failing = false;
        }
    }

    /// Notes an error outside any attempt (a store sync, a sink that cannot start).
    pub(crate) fn note_error(&mut self, error: String) {
        self.stats.failing = true;
        self.stats.last_error = Some(error);
    }

    /// The counters, with what is held now.
    pub(crate) fn stats(&self) -> DestinationStats {
        DestinationStats {
            spans_held: self.held_spans(),
            bytes_held: self.held_bytes(),
            ..self.stats.clone()
        }
    }

    fn held_bytes(&self) -> u64 {
        self.waiting_bytes
            + self.parked.as_ref().map_or(0, |p| p.held.bytes)
            + self.sending.map_or(0, |s| s.bytes)
    }

    fn held_spans(&self) -> u64 {
        self.sizes.len() as u64
            + self.parked.as_ref().map_or(0, |p| p.held.spans)
            + self.sending.map_or(0, |s| s.spans)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use super::*;
    use crate::testing::{
        device_resource, many_spans, reference_command_inout, reference_command_inout_error,
    };

    fn spans(n: u64, first: u64) -> Vec<(SpanRecord, u64)> {
        let resource = device_resource("Demo", "test/demo/1", "Demo/Demo", 1);
        many_spans(&resource, n, first).into_iter().map(|s| (s, 100)).collect()
    }

    fn seq(span: &SpanRecord) -> i64 {
        span.data.attributes.iter().find(|kv| kv.key.as_str() == "seq").map_or(-1, |kv| match kv.value {
            Value::I64(i) => i,
            _ => -1,
        })
    }

    fn assert_balanced(backlog: &Backlog<SpanRecord, ()>) {
        let stats = backlog.stats();
        assert_eq!(stats.unaccounted(), 0, "{stats:?}");
        assert!(stats.bytes_held <= backlog.budget && stats.peak_bytes_held <= backlog.budget, "{stats:?}");
    }

    #[test]
    fn the_estimate_grows_with_what_a_span_carries() {
        let [client, server] = reference_command_inout().try_into().ok().unwrap();
        let error = reference_command_inout_error();
        let bare = span_bytes(&spans(1, 1).remove(0).0);
        assert!(bare > size_of::<SpanRecord>() as u64);
        // Five attributes with long values, then an event with a long message on top.
        assert!(span_bytes(&client) > bare);
        assert!(span_bytes(&error) > span_bytes(&client) + 300, "the event's message counts");
        assert!(span_bytes(&server) > bare);
    }

    #[test]
    fn the_log_estimate_grows_with_the_message_and_attributes() {
        let warn = crate::testing::reference_device_logs().remove(0);
        let mut bare = warn.clone();
        bare.attributes.clear();
        assert!(log_bytes(&bare) > size_of::<LogRecord>() as u64 + bare.body.len() as u64);
        assert!(log_bytes(&warn) > log_bytes(&bare) + "code.filepath".len() as u64);
        let mut long = warn.clone();
        long.body = "x".repeat(10_000);
        assert!(log_bytes(&long) > log_bytes(&warn) + 9_000);
    }

    #[test]
    fn a_full_budget_drops_the_oldest_and_keeps_the_newest() {
        let mut backlog = Backlog::<SpanRecord, ()>::new(1000, 4); // ten spans of 100 bytes
        for (span, bytes) in spans(25, 1) {
            backlog.push(span, bytes);
            assert_balanced(&backlog);
        }
        let stats = backlog.stats();
        assert_eq!((stats.spans_held, stats.bytes_held, stats.dropped.budget_oldest), (10, 1000, 15));
        let Taken::Fresh(batch) = backlog.take(100) else { panic!("spans wait") };
        assert_eq!(batch.iter().map(seq).collect::<Vec<_>>(), (16..=25).collect::<Vec<_>>());
        backlog.settle(Outcome::Delivered { rejected: 0 });
        assert_eq!(backlog.stats().spans_delivered, 10);
        assert_balanced(&backlog);
    }

    #[test]
    fn a_parked_batch_is_the_oldest_and_goes_first() {
        let mut backlog = Backlog::<SpanRecord, &'static str>::new(1000, 4);
        for (span, bytes) in spans(6, 1) {
            backlog.push(span, bytes);
        }
        assert!(matches!(backlog.take(4), Taken::Fresh(ref b) if b.len() == 4));
        backlog.settle(Outcome::Retry("request of 1..=4"));
        // Retries come before waiting spans.
        assert!(matches!(backlog.take(4), Taken::Retry("request of 1..=4")));
        backlog.settle(Outcome::Retry("request of 1..=4"));
        // Room for five more: the parked batch (4 spans, the oldest) goes as a whole.
        for (span, bytes) in spans(5, 7) {
            backlog.push(span, bytes);
        }
        let stats = backlog.stats();
        assert_eq!((stats.spans_held, stats.dropped.budget_oldest), (7, 4), "{stats:?}");
        let Taken::Fresh(batch) = backlog.take(100) else { panic!("no parked batch left") };
        assert_eq!(batch.iter().map(seq).collect::<Vec<_>>(), (5..=11).collect::<Vec<_>>());
    }

    #[test]
    fn the_batch_out_is_never_dropped_but_leaves_no_room() {
        let mut backlog = Backlog::<SpanRecord, ()>::new(1000, 4);
        for (span, bytes) in spans(10, 1) {
            backlog.push(span, bytes);
        }
        assert!(matches!(backlog.take(8), Taken::Fresh(_)));
        // 8 out, 2 waiting: each new span pushes out the oldest waiting one.
        for (span, bytes) in spans(5, 11) {
            backlog.push(span, bytes);
            assert_balanced(&backlog);
        }
        let stats = backlog.stats();
        assert_eq!((stats.spans_held, stats.dropped.budget_oldest, stats.dropped.budget_newest), (10, 5, 0));
        backlog.settle(Outcome::Delivered { rejected: 1 });
        let stats = backlog.stats();
        assert_eq!((stats.spans_delivered, stats.dropped.rejected, stats.spans_held), (7, 1, 2));
        // All out: nothing may make room, so the new spans are dropped.
        for (span, bytes) in spans(8, 16) {
            backlog.push(span, bytes);
        }
        assert!(matches!(backlog.take(10), Taken::Fresh(ref b) if b.len() == 10));
        for (span, bytes) in spans(3, 24) {
            backlog.push(span, bytes);
            assert_balanced(&backlog);
        }
        let stats = backlog.stats();
        assert_eq!((stats.spans_held, stats.dropped.budget_oldest, stats.dropped.budget_newest), (10, 5, 3));
        // A span larger than the whole budget never gets in.
        backlog.push(spans(1, 99).remove(0).0, 1001);
        assert_eq!(backlog.stats().dropped.budget_newest, 4);
        backlog.settle(Outcome::Delivered { rejected: 0 });
        backlog.push(spans(1, 100).remove(0).0, 1001);
        assert_eq!(backlog.stats().dropped.budget_newest, 5, "larger than the budget even when empty");
        assert_balanced(&backlog);
    }

    #[test]
    fn a_failed_batch_older_than_spans_dropped_meanwhile_goes_too() {
        let mut backlog = Backlog::<SpanRecord, &'static str>::new(1000, 4);
        for (span, bytes) in spans(10, 1) {
            backlog.push(span, bytes);
        }
        assert!(matches!(backlog.take(4), Taken::Fresh(_)));
        // While 1..=4 are out, 5 and 6 make room for 11 and 12.
        for (span, bytes) in spans(2, 11) {
            backlog.push(span, bytes);
        }
        backlog.settle(Outcome::Retry("request of 1..=4"));
        let stats = backlog.stats();
        assert_eq!((stats.spans_held, stats.dropped.budget_oldest, stats.unaccounted()), (6, 6, 0));
        let Taken::Fresh(batch) = backlog.take(100) else { panic!("nothing parked") };
        assert_eq!(batch.iter().map(seq).collect::<Vec<_>>(), (7..=12).collect::<Vec<_>>());
        // Without such drops, a failed batch is parked.
        backlog.settle(Outcome::Retry("request of 7..=12"));
        assert!(matches!(backlog.take(100), Taken::Retry("request of 7..=12")));
    }

    #[test]
    fn batches_keep_the_order_across_chunks_and_evictions() {
        // Chunks of 3, batches of 1, 2, 3 or 7 spans, a budget of 8 spans: whatever the cuts,
        // the spans come out oldest first, each once, and the bytes balance.
        for max in [1, 2, 3, 7] {
            let mut backlog = Backlog::<SpanRecord, ()>::new(800, 3);
            let mut expected = VecDeque::new();
            let mut taken = Vec::new();
            for (i, (span, bytes)) in spans(40, 1).into_iter().enumerate() {
                expected.push_back(seq(&span));
                backlog.push(span, bytes);
                if expected.len() > 8 {
                    expected.pop_front();
                }
                if i % 5 == 4 {
                    let Taken::Fresh(batch) = backlog.take(max) else { panic!("spans wait") };
                    backlog.settle(Outcome::Delivered { rejected: 0 });
                    let want: Vec<i64> = expected.drain(..batch.len()).collect();
                    assert_eq!(batch.iter().map(seq).collect::<Vec<_>>(), want, "batches of {max}");
                    taken.extend(want);
                }
                assert_balanced(&backlog);
                assert_eq!(backlog.waiting(), expected.len());
            }
            let stats = backlog.stats();
            assert_eq!(stats.spans_delivered, taken.len() as u64);
            assert_eq!(stats.bytes_held, 100 * expected.len() as u64);
        }
    }

    #[test]
    fn every_end_is_counted_once() {
        let mut backlog = Backlog::<SpanRecord, ()>::new(10_000, 4);
        for (span, bytes) in spans(10, 1) {
            backlog.push(span, bytes);
        }
        let _ = backlog.take(3);
        backlog.settle(Outcome::Dropped(|d| &mut d.non_retryable));
        let _ = backlog.take(3);
        backlog.settle(Outcome::Dropped(|d| &mut d.write_failed));
        let _ = backlog.take(2);
        backlog.refuse_after_shutdown();
        backlog.drop_all(|d| &mut d.at_shutdown);
        let stats = backlog.stats();
        let d = stats.dropped;
        assert_eq!((d.non_retryable, d.write_failed, d.at_shutdown, d.after_shutdown), (3, 3, 4, 1));
        assert_eq!((stats.spans_submitted, stats.spans_held, stats.bytes_held), (11, 0, 0));
        assert_balanced(&backlog);
        assert!(matches!(backlog.take(3), Taken::Nothing));
    }
}
