//! Tango events: push (PRODUCER) and delivery (CONSUMER) spans, beyond what cppTango emits.
//!
//! A push starts on an application thread (libtango's `ZmqEventSupplier::push_event`, or the last
//! part's `zmq_msg_send`, seen by a uprobe) and leaves on the
//! ZMQ I/O thread (`sendto` of ZMTP frames). The uprobe tells which thread pushed: when that
//! thread was serving a request (a command that pushes), the push span is that request's child;
//! pushed by polling or a device thread, it is a root. A PUB socket sends the same message to
//! every subscriber, so one push is one span however many connections carry it. Each subscriber's
//! receive of the message is a delivery span, linked to (and, when seen, the child of) the push.

use std::collections::{HashMap, VecDeque};

use opentelemetry::{KeyValue, trace::SpanKind};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tracer_wire::zmtp;

use crate::{
    assemble::{AssembledSpan, SpanContextLite, naming::OperationClass},
    probe::record::Direction,
    stats::{StageStats, has_room},
};

/// How long a push is remembered for linking its deliveries.
const PUSH_MEMORY_NS: u64 = 60_000_000_000;
/// How long an application-thread send waits for the I/O thread to put it on the wire.
const APP_SEND_WINDOW_NS: u64 = 5_000_000_000;

#[derive(Clone, Copy, Debug)]
struct AppSend {
    ts_ns: u64,
    /// The server span the pushing thread was serving, if any.
    serving: Option<SpanContextLite>,
}

#[derive(Clone, Copy, Debug)]
struct Push {
    context: SpanContextLite,
    ts_ns: u64,
    /// The server that pushed (a PUB socket sends the message once per subscriber).
    pid: u32,
}

/// Most processes, topics or streams each event table follows; beyond, new ones are refused
/// and counted.
const MAX_ENTRIES: usize = 65_536;
/// Most application sends remembered per process (older ones are dropped first).
const MAX_APP_SENDS: usize = 1_024;

/// Counters of the events stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventStats {
    /// Tango event messages seen leaving servers and reaching clients.
    pub pushed: u64,
    pub delivered: u64,
    /// ZMQ heartbeats (not spans).
    pub heartbeats: u64,
    pub unparsable: u64,
    /// New entries refused because a table was full.
    pub refused_full: u64,
    /// Application sends dropped because a process queued more than [`MAX_APP_SENDS`].
    pub app_sends_dropped: u64,
    /// Bytes of unfinished messages dropped because probe records were lost.
    pub discarded_bytes: u64,
}

/// The events stage: ZMTP streams in, push and delivery spans out. Its state is per process
/// (freed at exit) and per socket (freed at close); pushes are forgotten after a minute.
#[derive(Default)]
pub struct Events {
    ids: RandomIdGenerator,
    app_sends: HashMap<u32, VecDeque<AppSend>>,
    /// Pushes by topic, then counter, for deliveries in other processes and for the copies a
    /// PUB socket sends to its other subscribers. Nested so that a push or a delivery looks its
    /// topic up by the bytes it parsed, without allocating a key.
    pushes: HashMap<String, HashMap<u32, Push>>,
    /// Entries of `pushes`, all topics together.
    push_entries: usize,
    /// Last counter each subscriber process saw per topic.
    last_counter: HashMap<u32, HashMap<String, u32>>,
    /// Entries of `last_counter`, all processes together.
    counter_entries: usize,
    /// The start of a ZMTP message a call left unfinished, per (pid, fd, direction).
    partial: HashMap<(u32, i32, Direction), Vec<u8>>,
    stats: EventStats,
}

/// A ZMTP stream that keeps more than this without completing a message is not followed.
const MAX_PARTIAL: usize = 1 << 20;

/// What one ZMTP message says, owned (the stream buffer moves on).
enum Seen {
    Heartbeat,
    Cancel(String),
    Event { topic: String, counter: u32 },
    Unparsable,
}

/// `idl5_change` → `change`.
pub fn event_type(event: &str) -> &str {
    match event.split_once('_') {
        Some((prefix, kind)) if prefix.starts_with("idl") => kind,
        _ => event,
    }
}

impl Events {
    pub fn stats(&self) -> EventStats {
        self.stats
    }

    /// Counters and table sizes.
    pub fn report(&self, out: &mut StageStats) {
        const STAGE: &str = "events";
        out.push(STAGE, "pushed", self.stats.pushed);
        out.push(STAGE, "delivered", self.stats.delivered);
        out.push(STAGE, "heartbeats", self.stats.heartbeats);
        out.push(STAGE, "unparsable", self.stats.unparsable);
        out.loss(STAGE, "refused_table_full", self.stats.refused_full);
        out.loss(STAGE, "app_sends_dropped", self.stats.app_sends_dropped);
        out.push(STAGE, "discarded_bytes", self.stats.discarded_bytes);
        out.size(STAGE, "app_send_entries", self.app_sends.len());
        out.size(STAGE, "push_entries", self.push_entries);
        out.size(STAGE, "push_topic_entries", self.pushes.len());
        out.size(STAGE, "counter_entries", self.counter_entries);
        out.size(STAGE, "stream_entries", self.partial.len());
    }

    /// An application thread queued the last part of a ZMQ message; `serving` is the server
    /// span that thread was serving, if any (from the assembly stage).
    pub fn on_zmq_send(&mut self, pid: u32, ts_ns: u64, serving: Option<SpanContextLite>) {
        if !self.app_sends.contains_key(&pid)
            && !has_room(self.app_sends.len(), MAX_ENTRIES, &mut self.stats.refused_full)
        {
            return;
        }
        let queue = self.app_sends.entry(pid).or_default();
        queue.push_back(AppSend { ts_ns, serving });
        while queue.front().is_some_and(|s| ts_ns.saturating_sub(s.ts_ns) > APP_SEND_WINDOW_NS) {
            queue.pop_front();
        }
        while queue.len() > MAX_APP_SENDS {
            queue.pop_front();
            self.stats.app_sends_dropped += 1;
        }
    }

    /// ZMTP bytes of a target: event messages leaving a server or reaching a client. Messages
    /// continue across calls; `complete` is false when the probe copied only a prefix. Spans
    /// go to `out`.
    #[expect(clippy::too_many_arguments, reason = "where and when the bytes were seen, and the bytes")]
    pub fn on_zmtp(
        &mut self,
        pid: u32,
        fd: i32,
        ts_ns: u64,
        direction: Direction,
        bytes: &[u8],
        complete: bool,
        out: &mut Vec<AssembledSpan>,
    ) {
        let key = (pid, fd, direction);
        // Most calls start on a message boundary: their bytes are parsed where they are.
        let stream: std::borrow::Cow<'_, [u8]> = match self.partial.remove(&key) {
            Some(mut held) if !held.is_empty() => {
                held.extend_from_slice(bytes);
                held.into()
            }
            _ => bytes.into(),
        };
        let (seen, rest) = match zmtp::split_messages(&stream) {
            Ok((messages, rest)) => {
                (messages.iter().map(|frames| describe(frames)).collect::<Vec<_>>(), rest.to_vec())
            }
            // Lost track of the frames: start again at the next call.
            Err(_) => (vec![Seen::Unparsable], Vec::new()),
        };
        if complete
            && rest.len() <= MAX_PARTIAL
            && has_room(self.partial.len(), MAX_ENTRIES, &mut self.stats.refused_full)
        {
            self.partial.insert(key, rest);
        }
        for message in seen {
            match message {
                Seen::Heartbeat => self.stats.heartbeats += 1,
                Seen::Unparsable => self.stats.unparsable += 1,
                Seen::Cancel(topic) if direction == Direction::Send => {
                    self.on_cancel(pid, ts_ns, topic.as_bytes(), out)
                }
                Seen::Cancel(_) => {}
                Seen::Event { topic, counter } => match direction {
                    Direction::Send => self.on_push(pid, ts_ns, topic, counter, out),
                    Direction::Recv => self.on_delivery(pid, ts_ns, topic, counter, out),
                },
            }
        }
        if !complete && direction == Direction::Recv {
            // Messages in the uncaptured tail were delivered unseen: a counter jump after this
            // is no evidence of loss.
            self.forget_counters(pid);
        }
    }

    /// Forgets the counters a process saw.
    fn forget_counters(&mut self, pid: u32) {
        if let Some(topics) = self.last_counter.remove(&pid) {
            self.counter_entries -= topics.len();
        }
    }

    /// Probe records were lost: an unfinished message may miss its middle, and a counter gap
    /// is no evidence of lost events. Streams start again with the next call.
    pub fn records_lost(&mut self) {
        self.stats.discarded_bytes += self.partial.values().map(|p| p.len() as u64).sum::<u64>();
        self.partial.clear();
        self.last_counter.clear();
        self.counter_entries = 0;
    }

    /// A socket closed: its unfinished message goes with it.
    pub fn on_close(&mut self, pid: u32, fd: i32) {
        for direction in [Direction::Send, Direction::Recv] {
            self.partial.remove(&(pid, fd, direction));
        }
    }

    fn on_push(&mut self, pid: u32, ts_ns: u64, topic: String, counter: u32, out: &mut Vec<AssembledSpan>) {
        if self.pushes.get(topic.as_str()).and_then(|c| c.get(&counter)).is_some_and(|p| p.pid == pid) {
            // The same message to another subscriber.
            return;
        }
        // The newest application send before this one left: one push may queue several
        // messages (cppTango sends some twice), and older sends belong to earlier pushes.
        let app = self.app_sends.get_mut(&pid).and_then(|q| {
            let at = q.iter().rposition(|s| s.ts_ns <= ts_ns)?;
            let chosen = q.get(at).copied();
            q.drain(..=at);
            chosen
        });
        let parent = app.and_then(|a| a.serving);
        let context = SpanContextLite {
            trace_id: parent.map(|p| p.trace_id).unwrap_or_else(|| self.ids.new_trace_id()),
            span_id: self.ids.new_span_id(),
        };
        let start_ns = app.map(|a| a.ts_ns).unwrap_or(ts_ns);
        self.stats.pushed += 1;
        let span = event_span(
            "Tango::ZmqEventSupplier::push_event",
            SpanKind::Producer,
            context,
            parent,
            (start_ns, ts_ns),
            &topic,
            counter,
            pid,
            true,
        );
        out.push(span);
        let push = Push { context, ts_ns: start_ns, pid };
        // Every topic holds at least one push: the cap on pushes caps the topics too.
        if has_room(self.push_entries, MAX_ENTRIES, &mut self.stats.refused_full) {
            // Moved, not copied: the topic's first push keeps its bytes as the key.
            let counters = self.pushes.entry(topic).or_default();
            if counters.insert(counter, push).is_none() {
                self.push_entries += 1;
            }
        }
    }

    fn on_delivery(
        &mut self,
        pid: u32,
        ts_ns: u64,
        topic: String,
        counter: u32,
        out: &mut Vec<AssembledSpan>,
    ) {
        // cppTango's consumer drops a message whose counter it has already seen.
        let previous = self.last_counter.get(&pid).and_then(|t| t.get(topic.as_str())).copied();
        if previous == Some(counter) {
            return;
        }
        let push = self.pushes.get(topic.as_str()).and_then(|c| c.get(&counter)).copied();
        let context = SpanContextLite {
            trace_id: push.as_ref().map(|p| p.context.trace_id).unwrap_or_else(|| self.ids.new_trace_id()),
            span_id: self.ids.new_span_id(),
        };
        let mut span = event_span(
            "Tango::ZmqEventConsumer::push_zmq_event",
            SpanKind::Consumer,
            context,
            push.as_ref().map(|p| p.context),
            (ts_ns, ts_ns),
            &topic,
            counter,
            pid,
            false,
        );
        if let Some(push) = &push {
            span.links.push(push.context);
            let delay_us = ts_ns.saturating_sub(push.ts_ns) / 1_000;
            span.attributes.push(KeyValue::new("tango.event.delay_us", delay_us as i64));
        }
        if previous.is_some() {
            if let Some(last) = self.last_counter.get_mut(&pid).and_then(|t| t.get_mut(topic.as_str())) {
                *last = counter;
            }
        } else if has_room(self.counter_entries, MAX_ENTRIES, &mut self.stats.refused_full) {
            self.last_counter.entry(pid).or_default().insert(topic, counter);
            self.counter_entries += 1;
        }
        if let Some(previous) = previous
            && counter > previous + 1
        {
            span.attributes.push(KeyValue::new("tango.event.lost", i64::from(counter - previous - 1)));
        }
        self.stats.delivered += 1;
        out.push(span);
    }

    /// A client's ZMQ socket cancels a subscription: cppTango's `unsubscribe_event` sends nothing
    /// else, so this is the unsubscribe's own client span.
    fn on_cancel(&mut self, pid: u32, ts_ns: u64, topic: &[u8], out: &mut Vec<AssembledSpan>) {
        let Ok(topic) = std::str::from_utf8(topic) else {
            return;
        };
        // Counters restart mattering when a subscription starts again.
        if let Some(topics) = self.last_counter.get_mut(&pid)
            && topics.remove(topic).is_some()
        {
            self.counter_entries -= 1;
        }
        let context = SpanContextLite { trace_id: self.ids.new_trace_id(), span_id: self.ids.new_span_id() };
        let mut span = event_span(
            "Tango::DeviceProxy::unsubscribe_event",
            SpanKind::Client,
            context,
            None,
            (ts_ns, ts_ns),
            topic,
            0,
            pid,
            false,
        );
        span.attributes.retain(|kv| kv.key.as_str() != "tango.event.counter");
        span.attributes.push(KeyValue::new("tango.event.action", "unsubscribe"));
        out.push(span);
    }

    /// Forgets pushes too old to be linked to a delivery.
    pub fn expire(&mut self, now_ns: u64) {
        let fresh = |p: &Push| now_ns.saturating_sub(p.ts_ns) <= PUSH_MEMORY_NS;
        let mut entries = 0;
        self.pushes.retain(|_, counters| {
            counters.retain(|_, p| fresh(p));
            entries += counters.len();
            !counters.is_empty()
        });
        self.push_entries = entries;
    }

    /// Forgets the event state of an exited process.
    pub fn on_exit(&mut self, pid: u32) {
        self.app_sends.remove(&pid);
        // Its pushes stay (for deliveries still on their way) until they expire.
        self.forget_counters(pid);
        self.partial.retain(|(p, _, _), _| *p != pid);
    }
}

fn describe(frames: &[zmtp::Frame<'_>]) -> Seen {
    if let [frame] = frames
        && let Some(command) = frame.as_command()
    {
        return match command.name {
            "CANCEL" => Seen::Cancel(String::from_utf8_lossy(command.data).into_owned()),
            _ => Seen::Unparsable,
        };
    }
    let topic = frames.first().and_then(|f| std::str::from_utf8(f.body).ok());
    if topic.is_some_and(|t| t.ends_with(".heartbeat")) {
        return Seen::Heartbeat;
    }
    match zmtp::parse_event(frames) {
        Ok(event) => Seen::Event { topic: event.topic.to_string(), counter: event.call_info.ctr },
        Err(_) => Seen::Unparsable,
    }
}

#[expect(clippy::too_many_arguments, reason = "the fields of one event span")]
fn event_span(
    name: &str,
    kind: SpanKind,
    context: SpanContextLite,
    parent: Option<SpanContextLite>,
    (start_ns, end_ns): (u64, u64),
    topic: &str,
    counter: u32,
    pid: u32,
    with_device_key: bool,
) -> AssembledSpan {
    let parsed = zmtp::parse_topic(topic);
    let device_key =
        parsed.as_ref().filter(|_| with_device_key).map(|t| t.device.to_ascii_lowercase().into_bytes());
    let mut attributes = Vec::new();
    if let Some(attribute) = parsed.as_ref().and_then(|t| t.attribute) {
        attributes.push(KeyValue::new("tango.event.attribute", attribute.to_string()));
    }
    if let Some(t) = &parsed {
        attributes.push(KeyValue::new("tango.event.device", t.device.to_string()));
        attributes.push(KeyValue::new("tango.event.type", event_type(t.event).to_string()));
    }
    attributes.push(KeyValue::new("tango.event.counter", i64::from(counter)));
    attributes.push(KeyValue::new("messaging.system", "zeromq"));
    attributes.push(KeyValue::new("messaging.destination.name", topic.to_string()));
    AssembledSpan {
        name: name.to_string(),
        kind,
        context,
        parent,
        parent_is_remote: false,
        trace_state: String::new(),
        start_ns,
        end_ns: end_ns.max(start_ns),
        attributes,
        exception: None,
        links: Vec::new(),
        incomplete: None,
        pid,
        device_key,
        target_key: None,
        operation: OperationClass::Event,
        request_argument: None,
    }
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
    use crate::probe::record::Record;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../tracer-wire/tests/fixtures/zmtp/{name}.bin", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Feeds records as the pipeline does and collects the spans.
    #[derive(Default)]
    struct Harness {
        events: Events,
        spans: Vec<AssembledSpan>,
    }

    impl Harness {
        fn push(&mut self, record: &Record) {
            match record {
                Record::Data { pid, fd, ts_ns, direction, total_len, bytes, .. } => {
                    let complete = bytes.len() >= *total_len as usize;
                    self.events.on_zmtp(*pid, *fd, *ts_ns, *direction, bytes, complete, &mut self.spans)
                }
                Record::ZmqSend { pid, ts_ns, .. } => self.events.on_zmq_send(*pid, *ts_ns, None),
                _ => {}
            }
        }

        fn drain(&mut self) -> Vec<AssembledSpan> {
            std::mem::take(&mut self.spans)
        }
    }

    fn data(pid: u32, ts_ns: u64, direction: Direction, bytes: &[u8]) -> Record<'static> {
        Record::Data {
            pid,
            tid: pid,
            fd: 30,
            ts_ns,
            direction,
            total_len: bytes.len() as u32,
            bytes: bytes.to_vec().into(),
            peer: Default::default(),
            tcp: None,
        }
    }

    #[test]
    fn each_push_takes_the_newest_application_send_before_it() {
        let mut a = Harness::default();
        let event = fixture("srv-send-event-temperature-x2");
        // Two application sends for one push, then the I/O thread sends.
        a.push(&Record::ZmqSend { pid: 200, tid: 201, ts_ns: 100 });
        a.push(&Record::ZmqSend { pid: 200, tid: 201, ts_ns: 110 });
        a.push(&data(200, 120, Direction::Send, &event));
        let spans = a.drain();
        assert_eq!(spans[0].start_ns, 110);
        assert!(a.events.app_sends.get(&200).is_none_or(|q| q.is_empty()), "older sends are consumed");
    }

    /// The real delivery carries the same message twice (counter 1); renumbering the second to 3
    /// stands for a subscriber that never received event 2.
    #[test]
    fn a_counter_gap_is_reported_as_lost_events() {
        let mut bytes = fixture("client-recv-event-temperature");
        let message_len = bytes.len() / 2;
        // topic frame (flags, size, topic) | byte-order frame (3 bytes) | call info frame (flags,
        // size, then version i32 and the counter u32)
        let counter_at = 2 + usize::from(bytes[1]) + 3 + 2 + 4;
        bytes[message_len + counter_at..message_len + counter_at + 4].copy_from_slice(&3u32.to_le_bytes());
        let mut a = Harness::default();
        a.push(&data(100, 1_500, Direction::Recv, &bytes));
        let spans = a.drain();
        let counters: Vec<_> = spans.iter().map(|s| s.attributes.clone()).collect();
        assert_eq!(spans.len(), 2, "{counters:?}");
        assert!(!spans[0].attributes.iter().any(|kv| kv.key.as_str() == "tango.event.lost"));
        assert!(spans[1].attributes.contains(&KeyValue::new("tango.event.lost", 1i64)), "{counters:?}");
        // A capture that missed part of a receive proves nothing about what was between.
        let mut a = Harness::default();
        let mut cut = Record::Data {
            pid: 100,
            tid: 100,
            fd: 30,
            ts_ns: 1,
            direction: Direction::Recv,
            total_len: 9_000,
            bytes: bytes[..message_len].to_vec().into(),
            peer: Default::default(),
            tcp: None,
        };
        a.push(&cut);
        if let Record::Data { bytes: b, total_len, .. } = &mut cut {
            *b = bytes[message_len..].to_vec().into();
            *total_len = b.len() as u32;
        }
        a.push(&cut);
        assert!(
            a.drain().iter().all(|s| !s.attributes.iter().any(|kv| kv.key.as_str() == "tango.event.lost"))
        );
    }

    /// ZMQ batches messages into calls without regard to message boundaries.
    #[test]
    fn messages_split_across_calls_are_followed() {
        let mut bytes = fixture("client-recv-event-temperature");
        let message_len = bytes.len() / 2;
        let counter_at = 2 + usize::from(bytes[1]) + 3 + 2 + 4;
        bytes[message_len + counter_at..message_len + counter_at + 4].copy_from_slice(&2u32.to_le_bytes());
        let mut a = Harness::default();
        let cut = message_len + 37;
        a.push(&data(100, 1_000, Direction::Recv, &bytes[..cut]));
        a.push(&data(100, 1_010, Direction::Recv, &bytes[cut..]));
        let spans = a.drain();
        let counters: Vec<_> = spans
            .iter()
            .filter_map(|s| s.attributes.iter().find(|kv| kv.key.as_str() == "tango.event.counter"))
            .map(|kv| kv.value.to_string())
            .collect();
        assert_eq!(counters, ["1", "2"]);
        assert!(spans.iter().all(|s| !s.attributes.iter().any(|kv| kv.key.as_str() == "tango.event.lost")));
        assert_eq!(spans[1].start_ns, 1_010, "delivered when its last byte arrived");
    }

    #[test]
    fn event_types() {
        assert_eq!(event_type("idl5_change"), "change");
        assert_eq!(event_type("idl5_periodic"), "periodic");
        assert_eq!(event_type("intr_change"), "intr_change");
    }

    #[test]
    fn a_real_push_and_its_delivery_are_linked() {
        let mut a = Harness::default();
        a.push(&Record::ZmqSend { pid: 200, tid: 201, ts_ns: 900 });
        // One send carrying the message twice (two subscribers' worth) is one push.
        a.push(&data(200, 1_000, Direction::Send, &fixture("srv-send-event-temperature-x2")));
        a.push(&data(100, 1_500, Direction::Recv, &fixture("client-recv-event-temperature")));
        let spans = a.drain();
        let push: Vec<_> = spans.iter().filter(|s| s.kind == SpanKind::Producer).collect();
        let delivery: Vec<_> = spans.iter().filter(|s| s.kind == SpanKind::Consumer).collect();
        assert_eq!((push.len(), delivery.len()), (1, 1), "{spans:#?}");
        let (push, delivery) = (push[0], delivery[0]);
        assert_eq!(push.name, "Tango::ZmqEventSupplier::push_event");
        assert_eq!(push.parent, None, "pushed outside any request: a root");
        assert_eq!(push.start_ns, 900, "starts when the application thread pushed");
        assert_eq!(push.device_key.as_deref(), Some(&b"test/demo/1"[..]));
        assert!(push.attributes.contains(&KeyValue::new("tango.event.attribute", "temperature")));
        assert!(push.attributes.contains(&KeyValue::new("tango.event.type", "change")));
        assert!(push.attributes.contains(&KeyValue::new("messaging.system", "zeromq")));
        assert_eq!(delivery.name, "Tango::ZmqEventConsumer::push_zmq_event");
        assert_eq!(delivery.parent, Some(push.context));
        assert_eq!(delivery.links, vec![push.context]);
        assert!(delivery.attributes.contains(&KeyValue::new("tango.event.delay_us", 0i64)));
    }
}
