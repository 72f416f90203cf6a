//! Tango events: push (PRODUCER) and delivery (CONSUMER) spans, beyond what cppTango emits.
//!
//! A push starts on an application thread (libtango's `ZmqEventSupplier::push_event`, or the last
//! part's `zmq_msg_send`, seen by a uprobe) and leaves on the
//! ZMQ I/O thread (`sendto` of ZMTP frames). The uprobe tells which thread pushed: when that
//! thread was serving a request (a command that pushes), the push span is that request's child;
//! pushed by polling or a device thread, it is a root. A PUB socket sends the same message to
//! every subscriber, so one push is one span however many connections carry it. Each subscriber's
//! receive of the message is a delivery span, linked to (and, when seen, the child of) the push.
//!
//! What a topic says (device, attribute, event type, its span attributes) is worked out once per
//! topic: a push or a delivery only looks its topic up and counts.

use std::{borrow::Cow, collections::VecDeque, sync::Arc};

use hashbrown::{HashMap, hash_map::EntryRef};
use opentelemetry::{KeyValue, Value, trace::SpanKind};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use rustc_hash::FxHashMap;
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
/// How long a delivery whose push is not known yet waits for it. The push's record can come
/// after its delivery's: the server's send is reported when its system call ends, and by then
/// the subscriber, woken on the other core, may have received the message already.
const DELIVERY_WAIT_NS: u64 = 50_000_000;

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

/// Pushes of one topic still remembered, in the order they were seen. A server numbers the
/// events of a topic consecutively, so they are kept in runs of consecutive counters: a push is
/// found by arithmetic, and a new run starts only where counters jump (a restarted server,
/// lost records).
#[derive(Default)]
struct TopicPushes {
    pushes: VecDeque<Push>,
    /// Where each run starts: its first counter and the position of its first push, counted
    /// from the first push this topic ever remembered. Oldest first.
    runs: VecDeque<(u32, u64)>,
    /// Pushes forgotten from the front since this topic was first seen.
    forgotten: u64,
}

impl TopicPushes {
    fn len(&self) -> usize {
        self.pushes.len()
    }

    /// The last push remembered with `counter` (a later run wins, as a newer push does).
    fn get(&self, counter: u32) -> Option<&Push> {
        self.pushes.get(self.index(counter)?)
    }

    /// Where the last push remembered with `counter` is in `pushes`.
    fn index(&self, counter: u32) -> Option<usize> {
        let mut run_end = self.forgotten + self.pushes.len() as u64;
        for &(first, start) in self.runs.iter().rev() {
            let at = start + u64::from(counter.wrapping_sub(first));
            if at < run_end && at >= self.forgotten {
                return usize::try_from(at - self.forgotten).ok();
            }
            run_end = start;
        }
        None
    }

    /// Remembers a push, the newest. One with a counter already remembered (a restarted
    /// server) starts a run, and is the one found by that counter from now on.
    fn push(&mut self, counter: u32, push: Push) {
        let end = self.forgotten + self.pushes.len() as u64;
        let continues = self
            .runs
            .back()
            .is_some_and(|&(first, start)| u64::from(counter.wrapping_sub(first)) == end - start);
        if !continues {
            self.runs.push_back((counter, end));
        }
        self.pushes.push_back(push);
    }

    /// Forgets the pushes at the front older than `fresh` allows.
    fn forget_old(&mut self, fresh: impl Fn(u64) -> bool) {
        while self.pushes.front().is_some_and(|p| !fresh(p.ts_ns)) {
            self.pushes.pop_front();
            self.forgotten += 1;
        }
        self.drop_forgotten_runs();
    }

    /// Forgets the oldest push.
    fn forget_oldest(&mut self) {
        if self.pushes.pop_front().is_some() {
            self.forgotten += 1;
        }
        self.drop_forgotten_runs();
    }

    fn drop_forgotten_runs(&mut self) {
        // A run whose successor starts at or before the first remembered push is gone.
        while self.runs.len() > 1 && self.runs.get(1).is_some_and(|&(_, start)| start <= self.forgotten) {
            self.runs.pop_front();
        }
        if self.pushes.is_empty() {
            self.runs.clear();
        }
    }
}

/// One event topic (`tango://host:port/device[/attribute].event`): its span attributes, worked
/// out when it is first seen, and its pushes.
struct Topic {
    name: Arc<str>,
    /// `tango.event.attribute`, `tango.event.device`, `tango.event.type`: those the topic has.
    parts: Vec<KeyValue>,
    /// The pushing device's object key (its name in lower case), when the topic names one.
    device_key: Option<Arc<[u8]>>,
    pushes: TopicPushes,
    /// When a push or delivery of it was last seen.
    last_seen_ns: u64,
}

impl Topic {
    fn new(name: &str, ts_ns: u64) -> Topic {
        let parsed = zmtp::parse_topic(name);
        let mut parts = Vec::with_capacity(3);
        if let Some(attribute) = parsed.as_ref().and_then(|t| t.attribute) {
            parts.push(KeyValue::new("tango.event.attribute", Arc::<str>::from(attribute)));
        }
        if let Some(t) = &parsed {
            parts.push(KeyValue::new("tango.event.device", Arc::<str>::from(t.device)));
            parts.push(KeyValue::new("tango.event.type", Arc::<str>::from(event_type(t.event))));
        }
        Topic {
            name: Arc::from(name),
            parts,
            device_key: parsed.map(|t| Arc::from(t.device.to_ascii_lowercase().into_bytes())),
            pushes: TopicPushes::default(),
            last_seen_ns: ts_ns,
        }
    }
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
    /// Pushes forgotten before their minute because the table was full: a delivery of one that
    /// comes later is not linked to it.
    pub pushes_forgotten_early: u64,
}

/// The events stage: ZMTP streams in, push and delivery spans out. Its state is per process
/// (freed at exit) and per socket (freed at close); pushes are forgotten after a minute, and
/// topics a minute after their last push or delivery.
#[derive(Default)]
pub struct Events {
    ids: RandomIdGenerator,
    app_sends: FxHashMap<u32, VecDeque<AppSend>>,
    /// Topics by name, with their pushes, for deliveries in other processes and for the copies
    /// a PUB socket sends to its other subscribers. Looked up once per message by the bytes it
    /// carries, without allocating a key, with hashbrown's seeded hasher (several times faster
    /// than SipHash on a topic's ~60 bytes, still keyed per daemon against crafted names).
    topics: HashMap<Arc<str>, Topic>,
    /// Pushes remembered, all topics together.
    push_entries: usize,
    /// Last counter each subscriber process saw per topic.
    last_counter: FxHashMap<u32, HashMap<Arc<str>, u32>>,
    /// Entries of `last_counter`, all processes together.
    counter_entries: usize,
    /// The start of a ZMTP message a call left unfinished, per (pid, fd, direction).
    partial: FxHashMap<(u32, i32, Direction), Vec<u8>>,
    /// Deliveries waiting for their push, by topic and counter, oldest first per key, each with
    /// its place in the order deliveries came.
    unlinked: HashMap<(Arc<str>, u32), Vec<WaitingDelivery>>,
    /// Deliveries that ever waited: the place of the next one.
    unlinked_seq: u64,
    /// Deliveries in `unlinked`, all keys together.
    unlinked_entries: usize,
    stats: EventStats,
}

/// A delivery waiting for its push, with its place in the order deliveries came.
type WaitingDelivery = (u64, AssembledSpan);

/// A ZMTP stream that keeps more than this without completing a message is not followed.
const MAX_PARTIAL: usize = 1 << 20;

/// What one ZMTP message says, borrowed from the stream.
enum Seen<'a> {
    Heartbeat,
    Cancel(&'a [u8]),
    Event { topic: &'a str, counter: u32 },
    Unparsable,
}

/// `idl5_change` → `change`.
pub fn event_type(event: &str) -> &str {
    match event.split_once('_') {
        Some((prefix, kind)) if prefix.starts_with("idl") => kind,
        _ => event,
    }
}

/// The length of the whole messages at the start of `bytes` (the rest is an unfinished
/// message), or None when the frames make no sense.
fn whole_messages_len(bytes: &[u8]) -> Option<usize> {
    let mut rest = bytes;
    let mut whole = 0;
    while !rest.is_empty() {
        let (frame, after) = match zmtp::parse_frame(rest) {
            Ok(v) => v,
            Err(tracer_wire::WireError::Incomplete) => break,
            Err(_) => return None,
        };
        rest = after;
        if !frame.more || frame.command {
            whole = bytes.len() - rest.len();
        }
    }
    Some(whole)
}

/// Calls `each` with every message of `bytes`, which hold whole messages only.
fn for_each_message<'a>(mut bytes: &'a [u8], mut each: impl FnMut(Seen<'a>)) {
    const NO_FRAME: zmtp::Frame<'static> = zmtp::Frame { more: false, command: false, body: &[] };
    // A Tango event has four frames; more than that is not one.
    let mut frames = [NO_FRAME; 4];
    let mut count = 0;
    while let Ok((frame, after)) = zmtp::parse_frame(bytes) {
        bytes = after;
        if let Some(slot) = frames.get_mut(count) {
            *slot = frame;
        }
        count += 1;
        if !frame.more || frame.command {
            each(describe(frames.get(..count).unwrap_or(&frames), count));
            count = 0;
        }
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
        out.push(STAGE, "pushes_forgotten_early", self.stats.pushes_forgotten_early);
        out.size(STAGE, "app_send_entries", self.app_sends.len());
        out.size(STAGE, "push_entries", self.push_entries);
        out.size(STAGE, "topic_entries", self.topics.len());
        out.size(STAGE, "counter_entries", self.counter_entries);
        out.size(STAGE, "stream_entries", self.partial.len());
        out.size(STAGE, "unlinked_delivery_entries", self.unlinked_entries);
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
        // Most calls start on a message boundary: their bytes are parsed where they are. The
        // unfinished start of a message waits in a buffer kept (with its capacity) per stream.
        let mut held = match self.partial.get_mut(&key) {
            Some(held) if !held.is_empty() => {
                held.extend_from_slice(bytes);
                Some(std::mem::take(held))
            }
            _ => None,
        };
        let stream = held.as_deref().unwrap_or(bytes);
        let whole = whole_messages_len(stream);
        let rest = whole.and_then(|w| stream.get(w..)).unwrap_or_default();
        if complete && rest.len() <= MAX_PARTIAL {
            if let Some(kept) = self.partial.get_mut(&key) {
                kept.clear();
                kept.extend_from_slice(rest);
            } else if has_room(self.partial.len(), MAX_ENTRIES, &mut self.stats.refused_full) {
                self.partial.insert(key, rest.to_vec());
            }
        } else {
            self.partial.remove(&key);
        }
        match whole {
            Some(whole) => {
                let messages = stream.get(..whole).unwrap_or_default();
                for_each_message(messages, |message| self.on_message(pid, ts_ns, direction, message, out));
            }
            // Lost track of the frames: start again at the next call.
            None => self.stats.unparsable += 1,
        }
        // The buffer goes back to its stream (emptied) for the next unfinished message.
        if let Some(mut buffer) = held.take()
            && let Some(kept) = self.partial.get_mut(&key)
            && kept.capacity() < buffer.capacity()
        {
            buffer.clear();
            buffer.extend_from_slice(kept);
            *kept = buffer;
        }
        if !complete && direction == Direction::Recv {
            // Messages in the uncaptured tail were delivered unseen: a counter jump after this
            // is no evidence of loss.
            self.forget_counters(pid);
        }
    }

    fn on_message(
        &mut self,
        pid: u32,
        ts_ns: u64,
        direction: Direction,
        message: Seen<'_>,
        out: &mut Vec<AssembledSpan>,
    ) {
        match message {
            Seen::Heartbeat => self.stats.heartbeats += 1,
            Seen::Unparsable => self.stats.unparsable += 1,
            Seen::Cancel(topic) if direction == Direction::Send => self.on_cancel(pid, ts_ns, topic, out),
            Seen::Cancel(_) => {}
            Seen::Event { topic, counter } => match direction {
                Direction::Send => self.on_push(pid, ts_ns, topic, counter, out),
                Direction::Recv => self.on_delivery(pid, ts_ns, topic, counter, out),
            },
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

    /// The topic named `name`, followed from now on when the table has room; None when it is
    /// new and the table is full (the caller works it out for this message only).
    fn topic<'t>(
        topics: &'t mut HashMap<Arc<str>, Topic>,
        refused_full: &mut u64,
        name: &str,
        ts_ns: u64,
    ) -> Option<&'t mut Topic> {
        let room = topics.len() < MAX_ENTRIES;
        let topic = match topics.entry_ref(name) {
            EntryRef::Occupied(entry) => entry.into_mut(),
            EntryRef::Vacant(_) if !room => {
                *refused_full += 1;
                return None;
            }
            EntryRef::Vacant(entry) => {
                let topic = Topic::new(name, ts_ns);
                entry.insert_entry_with_key(Arc::clone(&topic.name), topic).into_mut()
            }
        };
        topic.last_seen_ns = ts_ns;
        Some(topic)
    }

    fn on_push(&mut self, pid: u32, ts_ns: u64, name: &str, counter: u32, out: &mut Vec<AssembledSpan>) {
        let mut unfollowed = None;
        let followed = Self::topic(&mut self.topics, &mut self.stats.refused_full, name, ts_ns);
        let is_followed = followed.is_some();
        let topic = match followed {
            Some(topic) => topic,
            None => unfollowed.insert(Topic::new(name, ts_ns)),
        };
        if topic.pushes.get(counter).is_some_and(|p| p.pid == pid) {
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
            topic,
            counter,
            pid,
            true,
            0,
        );
        out.push(span);
        let push = Push { context, ts_ns: start_ns, pid };
        if self.unlinked_entries > 0
            && let Some(waiting) = self.unlinked.remove(&(Arc::clone(&topic.name), counter))
        {
            self.unlinked_entries -= waiting.len();
            for (_, mut delivery) in waiting {
                link_delivery(&mut delivery, &push);
                out.push(delivery);
            }
        }
        if !is_followed {
            // A topic the full topic table refused: counted there.
        } else if self.push_entries < MAX_ENTRIES {
            topic.pushes.push(counter, push);
            self.push_entries += 1;
        } else if topic.pushes.len() > 0 {
            // Full: the topic's own oldest push makes room, the one of its pushes least likely
            // to be delivered still. Refusing instead would leave every later push of a busy
            // topic unlinked until the oldest expire, a minute on.
            topic.pushes.forget_oldest();
            topic.pushes.push(counter, push);
            self.stats.pushes_forgotten_early += 1;
        } else {
            self.stats.refused_full += 1;
        }
    }

    fn on_delivery(&mut self, pid: u32, ts_ns: u64, name: &str, counter: u32, out: &mut Vec<AssembledSpan>) {
        // cppTango's consumer drops a message whose counter it has already seen.
        let last = self.last_counter.get_mut(&pid).and_then(|t| t.get_mut(name));
        let previous = last.as_deref().copied();
        if previous == Some(counter) {
            return;
        }
        if let Some(last) = last {
            *last = counter;
        }
        let mut unfollowed = None;
        let followed = Self::topic(&mut self.topics, &mut self.stats.refused_full, name, ts_ns);
        let topic = match followed {
            Some(topic) => topic,
            None => unfollowed.insert(Topic::new(name, ts_ns)),
        };
        let push = topic.pushes.get(counter).copied();
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
            topic,
            counter,
            pid,
            false,
            // The delay, once the push is known; a lost count is rare enough to grow for.
            1,
        );
        if let Some(push) = &push {
            link_delivery(&mut span, push);
        }
        if previous.is_none() && has_room(self.counter_entries, MAX_ENTRIES, &mut self.stats.refused_full) {
            let name = Arc::clone(&topic.name);
            self.last_counter.entry(pid).or_default().insert(name, counter);
            self.counter_entries += 1;
        }
        if let Some(previous) = previous
            && counter > previous + 1
        {
            span.attributes.push(KeyValue::new("tango.event.lost", i64::from(counter - previous - 1)));
        }
        self.stats.delivered += 1;
        if push.is_none() && self.unlinked_entries < MAX_ENTRIES {
            // Its push may still come (see DELIVERY_WAIT_NS).
            self.unlinked
                .entry((Arc::clone(&topic.name), counter))
                .or_default()
                .push((self.unlinked_seq, span));
            self.unlinked_seq += 1;
            self.unlinked_entries += 1;
        } else {
            out.push(span);
        }
    }

    /// Deliveries that waited long enough for their push, or all with `force` (at stop), go
    /// out unlinked.
    pub fn release_unlinked(&mut self, now_ns: u64, force: bool, out: &mut Vec<AssembledSpan>) {
        if self.unlinked_entries == 0 {
            return;
        }
        let mut due = Vec::new();
        self.unlinked.retain(|_, waiting| {
            let is_due = force
                || waiting.first().is_some_and(|(_, d)| now_ns.saturating_sub(d.end_ns) >= DELIVERY_WAIT_NS);
            if is_due {
                due.append(waiting);
            }
            !is_due
        });
        self.unlinked_entries -= due.len();
        // In the order they came, whatever the table's.
        due.sort_unstable_by_key(|(seq, _)| *seq);
        out.extend(due.into_iter().map(|(_, span)| span));
    }

    /// A client's ZMQ socket cancels a subscription: cppTango's `unsubscribe_event` sends nothing
    /// else, so this is the unsubscribe's own client span.
    fn on_cancel(&mut self, pid: u32, ts_ns: u64, topic: &[u8], out: &mut Vec<AssembledSpan>) {
        let topic = String::from_utf8_lossy(topic);
        // Counters restart mattering when a subscription starts again.
        if let Some(topics) = self.last_counter.get_mut(&pid)
            && topics.remove(&*topic).is_some()
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
            &Topic::new(&topic, ts_ns),
            0,
            pid,
            false,
            1,
        );
        span.attributes.retain(|kv| kv.key.as_str() != "tango.event.counter");
        span.attributes.push(KeyValue::new("tango.event.action", "unsubscribe"));
        out.push(span);
    }

    /// Forgets pushes too old to be linked to a delivery, and topics not seen for as long.
    pub fn expire(&mut self, now_ns: u64) {
        let fresh = |ts_ns: u64| now_ns.saturating_sub(ts_ns) <= PUSH_MEMORY_NS;
        let mut entries = 0;
        self.topics.retain(|_, topic| {
            topic.pushes.forget_old(fresh);
            entries += topic.pushes.len();
            topic.pushes.len() > 0 || fresh(topic.last_seen_ns)
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

/// What a message of `count` frames says; `frames` holds its first four.
fn describe<'a>(frames: &[zmtp::Frame<'a>], count: usize) -> Seen<'a> {
    if let ([frame], 1) = (frames, count)
        && let Some(command) = frame.as_command()
    {
        return match command.name {
            "CANCEL" => Seen::Cancel(command.data),
            _ => Seen::Unparsable,
        };
    }
    let topic = frames.first().and_then(|f| std::str::from_utf8(f.body).ok());
    if topic.is_some_and(|t| t.ends_with(".heartbeat")) {
        return Seen::Heartbeat;
    }
    if count != frames.len() {
        // More than the four frames of an event.
        return Seen::Unparsable;
    }
    match zmtp::parse_event(frames) {
        Ok(event) => Seen::Event { topic: event.topic, counter: event.call_info.ctr },
        Err(_) => Seen::Unparsable,
    }
}

/// Makes `delivery` the child of `push`, in its trace, linked to it, with the delay between.
fn link_delivery(delivery: &mut AssembledSpan, push: &Push) {
    delivery.context.trace_id = push.context.trace_id;
    delivery.parent = Some(push.context);
    delivery.links = vec![push.context];
    let delay_us = delivery.end_ns.saturating_sub(push.ts_ns) / 1_000;
    delivery.attributes.push(KeyValue::new("tango.event.delay_us", delay_us as i64));
}

#[expect(clippy::too_many_arguments, reason = "the fields of one event span")]
fn event_span(
    name: &'static str,
    kind: SpanKind,
    context: SpanContextLite,
    parent: Option<SpanContextLite>,
    (start_ns, end_ns): (u64, u64),
    topic: &Topic,
    counter: u32,
    pid: u32,
    with_device_key: bool,
    room: usize,
) -> AssembledSpan {
    // Exactly what the span holds: in a burst, thousands of these are in flight at once.
    let mut attributes = Vec::with_capacity(topic.parts.len() + 3 + room);
    attributes.extend(topic.parts.iter().cloned());
    attributes.push(KeyValue::new("tango.event.counter", i64::from(counter)));
    attributes.push(KeyValue::new("messaging.system", "zeromq"));
    attributes.push(KeyValue::new("messaging.destination.name", Value::from(Arc::clone(&topic.name))));
    AssembledSpan {
        name: Cow::Borrowed(name),
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
        device_key: topic.device_key.clone().filter(|_| with_device_key),
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
    use opentelemetry::trace::{SpanId, TraceId};

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

        /// The spans so far, deliveries still waiting for their push included.
        fn drain(&mut self) -> Vec<AssembledSpan> {
            self.events.release_unlinked(0, true, &mut self.spans);
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

    /// Pushes are found by counter across runs of consecutive counters, a newer push of a
    /// counter wins, and old pushes are forgotten from the front.
    #[test]
    fn pushes_are_found_by_counter_across_runs() {
        let push = |pid: u32, ts_ns: u64| Push {
            context: SpanContextLite { trace_id: TraceId::INVALID, span_id: SpanId::INVALID },
            ts_ns,
            pid,
        };
        let mut pushes = TopicPushes::default();
        for counter in 1..=5 {
            pushes.push(counter, push(10, u64::from(counter)));
        }
        // The server restarted: its counters start again.
        for counter in 1..=3 {
            pushes.push(counter, push(20, 10 + u64::from(counter)));
        }
        // A jump (lost records).
        pushes.push(9, push(20, 20));
        assert_eq!(pushes.runs.len(), 3);
        assert_eq!(pushes.get(2).map(|p| p.pid), Some(20), "the newer push of a counter wins");
        assert_eq!(pushes.get(5).map(|p| (p.pid, p.ts_ns)), Some((10, 5)));
        assert_eq!(pushes.get(9).map(|p| p.ts_ns), Some(20));
        for missing in [0, 6, 8, 10, u32::MAX] {
            assert!(pushes.get(missing).is_none(), "{missing}");
        }
        pushes.forget_old(|ts_ns| ts_ns >= 4);
        assert_eq!(pushes.len(), 6);
        assert!(pushes.get(3).is_some_and(|p| p.pid == 20) && pushes.get(4).is_some_and(|p| p.pid == 10));
        pushes.forget_old(|ts_ns| ts_ns >= 12);
        assert_eq!(pushes.runs.len(), 2, "the first run is gone");
        assert!(pushes.get(1).is_none() && pushes.get(5).is_none());
        assert_eq!(pushes.get(2).map(|p| p.ts_ns), Some(12));
        pushes.push(10, push(20, 22));
        assert_eq!(pushes.runs.len(), 2, "10 continues the last run");
        pushes.forget_old(|_| false);
        assert!(pushes.runs.is_empty() && pushes.get(10).is_none());
        pushes.push(11, push(20, 30));
        assert_eq!(pushes.get(11).map(|p| p.ts_ns), Some(30));
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
        let keys =
            |span: &AssembledSpan| span.attributes.iter().map(|kv| kv.key.to_string()).collect::<Vec<_>>();
        let common = [
            "tango.event.attribute",
            "tango.event.device",
            "tango.event.type",
            "tango.event.counter",
            "messaging.system",
            "messaging.destination.name",
        ];
        assert_eq!(keys(push), common);
        assert_eq!(keys(delivery), [&common[..], &["tango.event.delay_us"]].concat());
    }

    /// The server's send is reported when its system call ends, and the subscriber may have
    /// received the message by then: a delivery whose record comes before its push's still
    /// becomes the push's child. One whose push never comes goes out unlinked after a wait.
    #[test]
    fn a_delivery_seen_before_its_push_waits_for_it() {
        let mut a = Harness::default();
        a.push(&data(100, 1_500, Direction::Recv, &fixture("client-recv-event-temperature")));
        a.events.release_unlinked(1_500 + DELIVERY_WAIT_NS - 1, false, &mut a.spans);
        assert!(a.spans.is_empty(), "waits for its push: {:#?}", a.spans);
        a.push(&Record::ZmqSend { pid: 200, tid: 201, ts_ns: 900 });
        a.push(&data(200, 1_600, Direction::Send, &fixture("srv-send-event-temperature-x2")));
        let spans = a.drain();
        let kinds: Vec<_> = spans.iter().map(|s| s.kind.clone()).collect();
        assert_eq!(kinds, [SpanKind::Producer, SpanKind::Consumer], "{spans:#?}");
        let (push, delivery) = (&spans[0], &spans[1]);
        assert_eq!(delivery.parent, Some(push.context));
        assert_eq!(delivery.context.trace_id, push.context.trace_id);
        assert_eq!(delivery.links, vec![push.context]);
        assert!(delivery.attributes.contains(&KeyValue::new("tango.event.delay_us", 0i64)));
        assert_eq!(a.events.unlinked_entries, 0);

        // No push: out unlinked once it waited long enough, not before.
        let mut a = Harness::default();
        a.push(&data(100, 1_500, Direction::Recv, &fixture("client-recv-event-temperature")));
        a.events.release_unlinked(1_500 + DELIVERY_WAIT_NS - 1, false, &mut a.spans);
        assert!(a.spans.is_empty());
        a.events.release_unlinked(1_500 + DELIVERY_WAIT_NS, false, &mut a.spans);
        assert_eq!(a.spans.len(), 1, "the capture holds one message twice: one delivery");
        assert!(a.spans.iter().all(|s| s.parent.is_none() && s.links.is_empty()));
        assert_eq!(a.events.unlinked_entries, 0);
    }

    /// A busy topic that fills the push table keeps linking: its oldest pushes make room for
    /// new ones, counted, instead of every new push being refused until the oldest expire.
    #[test]
    fn a_full_push_table_forgets_the_topics_oldest_pushes_first() {
        let mut a = Harness::default();
        let sent = fixture("srv-send-event-temperature-x2");
        let one = &sent[..sent.len() / 2];
        let received = fixture("client-recv-event-temperature");
        let counter_at = 2 + usize::from(one[1]) + 3 + 2 + 4;
        let with_counter = |bytes: &[u8], counter: u32| {
            let mut bytes = bytes.to_vec();
            bytes[counter_at..counter_at + 4].copy_from_slice(&counter.to_le_bytes());
            bytes
        };
        let pushes = MAX_ENTRIES as u32 + 10;
        for counter in 1..=pushes {
            a.push(&data(200, u64::from(counter), Direction::Send, &with_counter(one, counter)));
        }
        assert_eq!(a.events.push_entries, MAX_ENTRIES);
        assert_eq!(a.events.stats.pushes_forgotten_early, 10);
        assert_eq!(a.events.stats.refused_full, 0);
        let spans = a.drain();
        let newest = spans.last().unwrap().context;
        // The newest push is linked; one of the ten forgotten is not.
        let delivery = &received[..received.len() / 2];
        a.push(&data(100, u64::from(pushes) + 5, Direction::Recv, &with_counter(delivery, pushes)));
        a.push(&data(101, u64::from(pushes) + 6, Direction::Recv, &with_counter(delivery, 3)));
        let spans = a.drain();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].parent, Some(newest));
        assert_eq!(spans[1].parent, None);
        assert!(a.events.topics.values().all(|t| t.pushes.get(10).is_none() && t.pushes.get(11).is_some()));
    }

    /// With the topic table full, a new topic's push and delivery still get their spans, with
    /// the attributes a followed topic gets; only the link between them is lost, and counted.
    #[test]
    fn a_full_topic_table_refuses_new_topics_but_keeps_their_spans() {
        let mut a = Harness::default();
        for n in 0..MAX_ENTRIES {
            let name = format!("tango://host:1/test/full/{n}/a.idl5_change");
            let topic = Topic::new(&name, 0);
            a.events.topics.insert(Arc::clone(&topic.name), topic);
        }
        // One subscriber's copy of the message: without the topic's pushes remembered, the
        // copy to a second subscriber could not be told from another push.
        let sent = fixture("srv-send-event-temperature-x2");
        a.push(&Record::ZmqSend { pid: 200, tid: 201, ts_ns: 900 });
        a.push(&data(200, 1_000, Direction::Send, &sent[..sent.len() / 2]));
        a.push(&data(100, 1_500, Direction::Recv, &fixture("client-recv-event-temperature")));
        let spans = a.drain();
        let kinds: Vec<_> = spans.iter().map(|s| s.kind.clone()).collect();
        assert_eq!(kinds, [SpanKind::Producer, SpanKind::Consumer], "{spans:#?}");
        let (push, delivery) = (&spans[0], &spans[1]);
        assert!(push.attributes.contains(&KeyValue::new("tango.event.attribute", "temperature")));
        assert_eq!(push.device_key.as_deref(), Some(&b"test/demo/1"[..]));
        assert!(delivery.attributes.contains(&KeyValue::new("tango.event.type", "change")));
        assert_eq!((delivery.parent, delivery.links.len()), (None, 0), "the push was not remembered");
        assert_eq!(a.events.topics.len(), MAX_ENTRIES);
        assert_eq!(a.events.stats.refused_full, 2, "the push's topic and the delivery's");
        // A topic already followed is still found.
        let followed = "tango://host:1/test/full/7/a.idl5_change";
        let mut refused = 0;
        assert!(
            Events::topic(&mut a.events.topics, &mut refused, followed, 5)
                .is_some_and(|t| t.last_seen_ns == 5)
        );
        assert_eq!(refused, 0);
    }
}
