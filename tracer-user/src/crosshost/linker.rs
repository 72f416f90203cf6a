//! Which trace a request from another host belongs to, decided without touching the traffic.
//!
//! A server span of a request from another host is the child of the client span the request's
//! [`LinkKey`] names, in the provisional trace the key names too: right when the client's call
//! started its trace, the common case, which then costs no message. The spans of that provisional
//! trace (the server span and whatever it calls) are held until the client host's daemon has
//! spoken: a `Call` renames the trace (the call was made inside a trace), a `Progress` past the
//! request settles it as it is, and an absent daemon or a silent one (after the wait) makes the
//! server span a root, so no parent dangles. Trace ids this daemon gave out to other hosts while
//! they were provisional are settled with them (`Settled`), so chains over several hosts end as
//! one trace.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use opentelemetry::trace::{SpanId, SpanKind, TraceId};

use super::{Absence, Incoming, LinkKey, Outgoing};
use crate::{
    assemble::{AssembledSpan, Crossing},
    stats::{StageStats, has_room},
};

/// Most provisional traces followed at once, and most announcements or orphans remembered.
const MAX_ENTRIES: usize = 65_536;
/// Most connections whose progress is remembered.
const MAX_CONNECTIONS: usize = 65_536;
/// How long a call announced by a peer waits for its request to be read here.
const ANNOUNCED_TTL: Duration = Duration::from_secs(30);
/// How long a connection's progress is kept without news.
const PROGRESS_TTL: Duration = Duration::from_secs(60);
/// How long a settled rename or orphan is kept for spans of the trace still to come: the
/// longest a call is followed (its server span ends last).
const SETTLED_TTL: Duration = Duration::from_secs(600);
/// After the server span of a settled trace went out, how long its stragglers may still come.
const AFTER_ROUTED: Duration = Duration::from_secs(5);
/// How often a peer is asked for again while its requests wait.
const WANT_EVERY: Duration = Duration::from_secs(1);

/// What became of a provisional trace (the trace id a request's key names).
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Waiting for the client host's daemon.
    Waiting { key: LinkKey, since: Instant, deadline: Instant },
    /// The client's daemon named the trace, but that name is itself provisional there: waiting
    /// for its `Settled`.
    Renamed { to: TraceId, deadline: Instant },
    /// Final: the trace's spans go out as `to`.
    Settled { to: TraceId, until: Instant },
}

/// Counters of the cross-host linker (`ctl stats`, stage `crosshost`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkerStats {
    /// Requests read from clients on other hosts.
    pub received: u64,
    /// Requests sent to servers on other hosts.
    pub sent: u64,
    /// Of those, announced to the server's daemon (made inside a trace).
    pub announced: u64,
    /// Requests whose client daemon answered: by a `Call` or by its progress.
    pub answered: u64,
    /// Requests the client's daemon did not answer within the wait: roots.
    pub unanswered: u64,
    /// Requests whose client host has no daemon (or it broke off): roots.
    pub no_daemon: u64,
    /// Requests whose client host's daemon failed the key: roots.
    pub refused: u64,
    /// Answers that came after the request had been settled without them (ignored).
    pub late: u64,
    /// Entries not kept because a table was full.
    pub refused_full: u64,
    /// Requests answered, and the time from reading each to its answer (what a server span of a
    /// call shorter than that waits before export): total and longest, in microseconds.
    pub answer_wait_total_us: u64,
    pub answer_wait_max_us: u64,
}

/// The cross-host linking state of the pipeline: per provisional trace (freed once its spans
/// went out), per announced call and connection (expired), per peer host.
pub struct Linker {
    wait: Duration,
    fates: HashMap<TraceId, Fate>,
    /// Deadlines of waiting fates, in the order they fall.
    deadlines: VecDeque<(Instant, TraceId)>,
    /// Waiting requests per connection, for progress to settle.
    waiting_by_connection: HashMap<(SocketAddrV4, SocketAddrV4), Vec<LinkKey>>,
    /// Peer trace ids we were renamed to, with our provisional traces that wait for them.
    awaiting: HashMap<TraceId, Vec<TraceId>>,
    /// Peer trace ids settled by their daemon, kept a while: a `Settled` can come before the
    /// request it settles is read here (the peer's stream is ahead of this host's probes).
    settled_remote: HashMap<TraceId, (TraceId, Instant)>,
    /// Calls announced by peers whose request was not read here yet.
    announced: HashMap<LinkKey, (TraceId, bool, Instant)>,
    /// Per connection from another host: the announced progress, and when it came.
    progress: HashMap<(SocketAddrV4, SocketAddrV4), (u32, Instant)>,
    /// Peer hosts with no daemon to ask, until one links.
    absent: HashMap<Ipv4Addr, Absence>,
    /// When each peer host was last asked for.
    wanted: HashMap<Ipv4Addr, Instant>,
    /// Derived client span ids whose client span nobody will export: a server span with such a
    /// parent goes out as a root.
    orphaned: HashMap<SpanId, Instant>,
    /// Our provisional traces named to other hosts' daemons: settled there when settled here.
    given_out: HashSet<TraceId>,
    outgoing: Vec<Outgoing>,
    last_expiry: Option<Instant>,
    stats: LinkerStats,
}

/// `a` comes before `b` in sequence space (wrapping).
fn seq_before(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

impl Linker {
    /// `wait`: how long a server span waits for the client host's daemon.
    pub fn new(wait: Duration) -> Self {
        Linker {
            wait,
            fates: HashMap::new(),
            deadlines: VecDeque::new(),
            waiting_by_connection: HashMap::new(),
            awaiting: HashMap::new(),
            settled_remote: HashMap::new(),
            announced: HashMap::new(),
            progress: HashMap::new(),
            absent: HashMap::new(),
            wanted: HashMap::new(),
            orphaned: HashMap::new(),
            given_out: HashSet::new(),
            outgoing: Vec::new(),
            last_expiry: None,
            stats: LinkerStats::default(),
        }
    }

    pub fn stats(&self) -> LinkerStats {
        self.stats
    }

    /// A request crossed hosts (from the assembler, in the order it was seen).
    pub fn on_crossing(&mut self, crossing: Crossing, now: Instant) {
        match crossing {
            Crossing::Sent { key, trace_id, continues_trace, len } => {
                self.on_sent(key, trace_id, continues_trace, len)
            }
            Crossing::Received { key } => self.on_received(key, now),
        }
    }

    fn on_sent(&mut self, key: LinkKey, trace_id: TraceId, continues_trace: bool, len: u32) {
        self.stats.sent += 1;
        if continues_trace {
            let settled = match self.fates.get(&trace_id) {
                Some(Fate::Waiting { .. } | Fate::Renamed { .. }) => false,
                Some(Fate::Settled { .. }) | None => true,
            };
            // A provisional trace is given out under our own provisional id, settled later.
            let named = match self.fates.get(&trace_id) {
                Some(Fate::Settled { to, .. }) => *to,
                _ => trace_id,
            };
            if !settled {
                self.given_out.insert(trace_id);
            }
            self.stats.announced += 1;
            self.outgoing.push(Outgoing::Call { key, trace_id: named, settled });
        }
        let next_seq = key.seq.wrapping_add(len);
        self.outgoing.push(Outgoing::Progress { client: key.client, server: key.server, next_seq });
    }

    fn on_received(&mut self, key: LinkKey, now: Instant) {
        self.stats.received += 1;
        let provisional = key.trace_id();
        if let Some((to, settled, _)) = self.announced.remove(&key) {
            self.stats.answered += 1;
            self.rename(provisional, to, settled, now);
            return;
        }
        let connection = (key.client, key.server);
        if self.progress.get(&connection).is_some_and(|(next, _)| seq_before(key.seq, *next)) {
            // The client's daemon saw this call go and announced nothing: it started its trace.
            self.stats.answered += 1;
            return;
        }
        let peer = *key.client.ip();
        if let Some(why) = self.absent.get(&peer).copied() {
            self.count_absence(why);
            self.orphan(key, now);
            // Still asked for: the peer link tries again once its pause is over.
            self.want(peer, now);
            return;
        }
        if !has_room(self.fates.len(), MAX_ENTRIES, &mut self.stats.refused_full) {
            // Not followed: it goes out as a root at once rather than under a dangling parent.
            self.orphan(key, now);
            return;
        }
        let deadline = now + self.wait;
        self.fates.insert(provisional, Fate::Waiting { key, since: now, deadline });
        self.deadlines.push_back((deadline, provisional));
        self.waiting_by_connection.entry(connection).or_default().push(key);
        self.want(peer, now);
    }

    fn want(&mut self, peer: Ipv4Addr, now: Instant) {
        let due = self.wanted.get(&peer).is_none_or(|last| now.duration_since(*last) >= WANT_EVERY);
        if due {
            self.wanted.insert(peer, now);
            self.outgoing.push(Outgoing::Want { ip: peer });
        }
    }

    /// What a peer daemon said.
    pub fn on_incoming(&mut self, message: Incoming, now: Instant) {
        match message {
            Incoming::Call { key, trace_id, settled } => {
                let provisional = key.trace_id();
                match self.fates.get(&provisional).copied() {
                    Some(Fate::Waiting { since, .. }) => {
                        self.answered(since, now);
                        self.unwait(key);
                        self.rename(provisional, trace_id, settled, now);
                    }
                    Some(_) => self.stats.late += 1,
                    // Settled as a root already (its wait ended, or the peer was absent).
                    None if self.orphaned.contains_key(&key.span_id()) => self.stats.late += 1,
                    None if has_room(self.announced.len(), MAX_ENTRIES, &mut self.stats.refused_full) => {
                        self.announced.insert(key, (trace_id, settled, now));
                    }
                    None => {}
                }
            }
            Incoming::Progress { client, server, next_seq } => {
                let connection = (client, server);
                if self.progress.contains_key(&connection)
                    || has_room(self.progress.len(), MAX_CONNECTIONS, &mut self.stats.refused_full)
                {
                    self.progress.insert(connection, (next_seq, now));
                }
                let Some(keys) = self.waiting_by_connection.get_mut(&connection) else {
                    return;
                };
                let (covered, rest): (Vec<LinkKey>, Vec<LinkKey>) =
                    keys.drain(..).partition(|key| seq_before(key.seq, next_seq));
                *keys = rest;
                if keys.is_empty() {
                    self.waiting_by_connection.remove(&connection);
                }
                for key in covered {
                    if let Some(Fate::Waiting { since, .. }) = self.fates.get(&key.trace_id()).copied() {
                        self.answered(since, now);
                        self.settle(key.trace_id(), key.trace_id(), now);
                    }
                }
            }
            Incoming::Settled { provisional, trace_id } => {
                if self.settled_remote.contains_key(&provisional)
                    || has_room(self.settled_remote.len(), MAX_ENTRIES, &mut self.stats.refused_full)
                {
                    self.settled_remote.insert(provisional, (trace_id, now));
                }
                for ours in self.awaiting.remove(&provisional).unwrap_or_default() {
                    if matches!(self.fates.get(&ours), Some(Fate::Renamed { to, .. }) if *to == provisional) {
                        self.settle(ours, trace_id, now);
                    }
                }
            }
            Incoming::Up { ip } => {
                self.absent.remove(&ip);
            }
            Incoming::Absent { ip, why } => {
                self.absent.insert(ip, why);
                self.wanted.remove(&ip);
                let waiting: Vec<LinkKey> = self
                    .fates
                    .values()
                    .filter_map(|fate| match fate {
                        Fate::Waiting { key, .. } if *key.client.ip() == ip => Some(*key),
                        _ => None,
                    })
                    .collect();
                for key in waiting {
                    self.count_absence(why);
                    self.unwait(key);
                    self.orphan(key, now);
                }
            }
        }
    }

    fn answered(&mut self, since: Instant, now: Instant) {
        self.stats.answered += 1;
        let waited = u64::try_from(now.duration_since(since).as_micros()).unwrap_or(u64::MAX);
        self.stats.answer_wait_total_us = self.stats.answer_wait_total_us.saturating_add(waited);
        self.stats.answer_wait_max_us = self.stats.answer_wait_max_us.max(waited);
    }

    fn count_absence(&mut self, why: Absence) {
        match why {
            Absence::Refused => self.stats.refused += 1,
            Absence::NoDaemon | Absence::Lost => self.stats.no_daemon += 1,
        }
    }

    /// Forgets `key` among the requests waiting for progress on its connection.
    fn unwait(&mut self, key: LinkKey) {
        let connection = (key.client, key.server);
        if let Some(keys) = self.waiting_by_connection.get_mut(&connection) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.waiting_by_connection.remove(&connection);
            }
        }
    }

    fn rename(&mut self, provisional: TraceId, to: TraceId, settled: bool, now: Instant) {
        if settled {
            self.settle(provisional, to, now);
            return;
        }
        // Its daemon may have settled it already.
        if let Some(&(final_id, _)) = self.settled_remote.get(&to) {
            self.settle(provisional, final_id, now);
            return;
        }
        // The chain above is still deciding: wait for it, once more the usual wait.
        let deadline = now + self.wait;
        self.fates.insert(provisional, Fate::Renamed { to, deadline });
        self.deadlines.push_back((deadline, provisional));
        self.awaiting.entry(to).or_default().push(provisional);
    }

    /// The trace's spans go out as `to` (which may be `provisional` itself).
    fn settle(&mut self, provisional: TraceId, to: TraceId, now: Instant) {
        if to == provisional {
            self.fates.remove(&provisional);
        } else {
            self.fates.insert(provisional, Fate::Settled { to, until: now + SETTLED_TTL });
        }
        if self.given_out.remove(&provisional) {
            self.outgoing.push(Outgoing::Settled { provisional, trace_id: to });
        }
    }

    /// No client span will exist for `key`: its server span goes out as a root of the trace.
    fn orphan(&mut self, key: LinkKey, now: Instant) {
        if has_room(self.orphaned.len(), MAX_ENTRIES, &mut self.stats.refused_full) {
            self.orphaned.insert(key.span_id(), now + SETTLED_TTL);
        }
        self.settle(key.trace_id(), key.trace_id(), now);
    }

    /// Whether spans of `trace_id` must wait (their trace is still being decided).
    pub fn holds(&self, trace_id: TraceId) -> bool {
        matches!(self.fates.get(&trace_id), Some(Fate::Waiting { .. } | Fate::Renamed { .. }))
    }

    /// Settles what waited past its deadline: silent peers make roots; a chain still deciding
    /// keeps the name it was given.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, trace_id)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            match self.fates.get(&trace_id).copied() {
                Some(Fate::Waiting { key, deadline: due, .. }) if due <= now => {
                    self.stats.unanswered += 1;
                    self.unwait(key);
                    self.orphan(key, now);
                }
                Some(Fate::Renamed { to, deadline: due, .. }) if due <= now => {
                    self.settle(trace_id, to, now);
                }
                _ => {}
            }
        }
        // Tables of expiring entries: swept at most once a second.
        if self.last_expiry.is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
            return;
        }
        self.last_expiry = Some(now);
        self.fates.retain(|_, fate| !matches!(fate, Fate::Settled { until, .. } if *until <= now));
        self.orphaned.retain(|_, until| *until > now);
        self.announced.retain(|_, (_, _, at)| now.duration_since(*at) < ANNOUNCED_TTL);
        self.settled_remote.retain(|_, (_, at)| now.duration_since(*at) < ANNOUNCED_TTL);
        self.progress.retain(|_, (_, at)| now.duration_since(*at) < PROGRESS_TTL);
        self.wanted.retain(|_, at| now.duration_since(*at) < PROGRESS_TTL);
        let fates = &self.fates;
        self.awaiting.retain(|_, ours| {
            ours.retain(|t| matches!(fates.get(t), Some(Fate::Renamed { .. })));
            !ours.is_empty()
        });
    }

    /// Settles everything still waiting with what is known (at shutdown).
    pub fn settle_all(&mut self, now: Instant) {
        let open: Vec<(TraceId, Fate)> = self
            .fates
            .iter()
            .filter(|(_, fate)| !matches!(fate, Fate::Settled { .. }))
            .map(|(t, f)| (*t, *f))
            .collect();
        for (trace_id, fate) in open {
            match fate {
                Fate::Waiting { key, .. } => {
                    self.stats.unanswered += 1;
                    self.unwait(key);
                    self.orphan(key, now);
                }
                Fate::Renamed { to, .. } => self.settle(trace_id, to, now),
                Fate::Settled { .. } => {}
            }
        }
    }

    /// The id spans of `trace_id` go out with (itself unless it was renamed).
    pub fn final_trace(&self, trace_id: TraceId) -> TraceId {
        match self.fates.get(&trace_id) {
            Some(Fate::Settled { to, .. }) => *to,
            _ => trace_id,
        }
    }

    /// Gives a span its settled trace id, and makes a server span whose client span nobody will
    /// export a root.
    pub fn rewrite(&mut self, span: &mut AssembledSpan, now: Instant) {
        if let Some(Fate::Settled { to, until }) = self.fates.get_mut(&span.context.trace_id) {
            let to = *to;
            if span.kind == SpanKind::Server && span.parent_is_remote {
                // The request's own span ends last: what is left of the trace comes soon.
                *until = (*until).min(now + AFTER_ROUTED);
            }
            span.context.trace_id = to;
            if let Some(parent) = span.parent.as_mut() {
                parent.trace_id = to;
            }
        }
        if span.kind == SpanKind::Server
            && let Some(parent) = span.parent
            && self.orphaned.remove(&parent.span_id).is_some()
        {
            span.parent = None;
            span.parent_is_remote = false;
        }
    }

    /// What the peer daemons are to be told, in order.
    pub fn take_outgoing(&mut self, out: &mut Vec<Outgoing>) {
        out.append(&mut self.outgoing);
    }

    pub fn report(&self, out: &mut StageStats) {
        const STAGE: &str = "crosshost";
        let s = self.stats;
        out.push(STAGE, "requests_received", s.received);
        out.push(STAGE, "requests_sent", s.sent);
        out.push(STAGE, "calls_announced", s.announced);
        out.push(STAGE, "answered", s.answered);
        out.push(STAGE, "unanswered", s.unanswered);
        out.push(STAGE, "no_daemon", s.no_daemon);
        out.push(STAGE, "refused", s.refused);
        out.push(STAGE, "late", s.late);
        out.push(STAGE, "answer_wait_total_us", s.answer_wait_total_us);
        out.push(STAGE, "answer_wait_max_us", s.answer_wait_max_us);
        out.loss(STAGE, "refused_table_full", s.refused_full);
        out.size(STAGE, "provisional_trace_entries", self.fates.len());
        out.size(STAGE, "announced_call_entries", self.announced.len());
        out.size(STAGE, "settled_remote_entries", self.settled_remote.len());
        out.size(STAGE, "connection_progress_entries", self.progress.len());
        out.size(STAGE, "orphan_entries", self.orphaned.len());
        out.size(STAGE, "absent_peer_entries", self.absent.len());
    }
}

#[cfg(test)]
mod tests {
    //! Two or three hosts, each an assembler fed the real GIOP messages captured from PyTango
    //! 10.3.1 as its probes would report them, and a linker; the daemons' messages are handed
    //! from one linker to the other as the peer link would.
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "tests"
    )]

    use std::{borrow::Cow, net::Ipv4Addr};

    use super::*;
    use crate::{
        assemble::{Assembler, LINK_KEY_ATTRIBUTE},
        probe::record::{Direction, Peer, Record, TcpPosition},
    };

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../tracer-wire/tests/fixtures/giop/{name}.bin", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// GIOP 1.0 messages with an empty service-context list keep their request id at offset 16.
    fn with_request_id(mut bytes: Vec<u8>, id: u32) -> Vec<u8> {
        bytes[16..20].copy_from_slice(&id.to_le_bytes());
        bytes
    }

    const WAIT: Duration = Duration::from_millis(1_500);

    struct Host {
        ip: Ipv4Addr,
        assembler: Assembler,
        linker: Linker,
        spans: Vec<AssembledSpan>,
    }

    impl Host {
        fn new(last: u8) -> Host {
            let ip = Ipv4Addr::new(10, 9, 0, last);
            let mut assembler = Assembler::new(4096);
            assembler.set_local_addresses([ip]);
            Host { ip, assembler, linker: Linker::new(WAIT), spans: Vec::new() }
        }

        #[allow(clippy::too_many_arguments, reason = "a record's fields")]
        fn push(
            &mut self,
            pid: u32,
            direction: Direction,
            local: SocketAddrV4,
            remote: SocketAddrV4,
            seq: u32,
            bytes: &[u8],
            now: Instant,
        ) {
            let record = Record::Data {
                pid,
                tid: pid,
                fd: 9,
                ts_ns: 1_000,
                direction,
                total_len: bytes.len() as u32,
                bytes: Cow::Owned(bytes.to_vec()),
                peer: Peer::Inet(*remote.ip(), remote.port()),
                tcp: Some(TcpPosition { local, remote, seq }),
            };
            self.assembler.push(&record);
            let mut crossings = Vec::new();
            self.assembler.drain_crossings(&mut crossings);
            for crossing in crossings {
                self.linker.on_crossing(crossing, now);
            }
            self.spans.extend(self.assembler.drain());
        }

        /// The spans the pipeline would let go now, rewritten.
        fn release(&mut self, now: Instant) -> Vec<AssembledSpan> {
            self.linker.expire(now);
            let (held, mut out): (Vec<_>, Vec<_>) = std::mem::take(&mut self.spans)
                .into_iter()
                .partition(|s| self.linker.holds(s.context.trace_id));
            self.spans = held;
            for span in &mut out {
                self.linker.rewrite(span, now);
            }
            out
        }

        fn tell(&mut self, other: &mut Host, now: Instant) {
            let mut out = Vec::new();
            self.linker.take_outgoing(&mut out);
            for message in out {
                let incoming = match message {
                    Outgoing::Call { key, trace_id, settled } => Incoming::Call { key, trace_id, settled },
                    Outgoing::Progress { client, server, next_seq } => {
                        Incoming::Progress { client, server, next_seq }
                    }
                    Outgoing::Settled { provisional, trace_id } => {
                        Incoming::Settled { provisional, trace_id }
                    }
                    Outgoing::Want { .. } => continue,
                };
                other.linker.on_incoming(incoming, now);
            }
        }
    }

    fn attribute<'a>(span: &'a AssembledSpan, key: &str) -> Option<&'a opentelemetry::Value> {
        span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
    }

    /// One read_attributes call from `client` (pid 1) to `server` (pid 2) over a connection
    /// between them; `before` runs on the server host between the request and the reply.
    fn call(
        client: &mut Host,
        server: &mut Host,
        (cport, sport, seq, id): (u16, u16, u32, u32),
        now: Instant,
        mut before_reply: impl FnMut(&mut Host, &mut Host),
    ) {
        let request = with_request_id(fixture("demo-req-read_attributes_5"), id);
        let reply = with_request_id(fixture("demo-rep-read_attributes_5"), id);
        let c = SocketAddrV4::new(client.ip, cport);
        let s = SocketAddrV4::new(server.ip, sport);
        client.push(1, Direction::Send, c, s, seq, &request, now);
        server.push(2, Direction::Recv, s, c, seq, &request, now);
        before_reply(client, server);
        server.push(2, Direction::Send, s, c, 77, &reply, now);
        client.push(1, Direction::Recv, c, s, 77, &reply, now);
    }

    #[test]
    fn a_call_that_starts_a_trace_is_linked_by_progress_alone() {
        let (mut a, mut b) = (Host::new(1), Host::new(2));
        let now = Instant::now();
        call(&mut a, &mut b, (40_000, 10_000, 5_000, 3), now, |_, _| {});
        let client = a.release(now).pop().expect("client span");
        assert!(b.release(now).is_empty(), "the server span waits for the client's daemon");
        let mut sent = Vec::new();
        a.linker.take_outgoing(&mut sent);
        assert!(
            matches!(sent.as_slice(), [Outgoing::Progress { .. }]),
            "a call starting a trace is announced by progress only: {sent:?}"
        );
        for message in sent {
            if let Outgoing::Progress { client, server, next_seq } = message {
                b.linker.on_incoming(Incoming::Progress { client, server, next_seq }, now);
            }
        }
        let server = b.release(now).pop().expect("server span released by progress");
        assert_eq!(server.parent, Some(client.context));
        assert_eq!(server.context.trace_id, client.context.trace_id);
        assert!(client.parent.is_none());
        assert_eq!(
            attribute(&server, "client.address").map(|v| v.as_str().to_string()),
            Some("10.9.0.1".into())
        );
        assert_eq!(attribute(&server, LINK_KEY_ATTRIBUTE), attribute(&client, LINK_KEY_ATTRIBUTE));
        assert_eq!(b.linker.stats().answered, 1);
    }

    #[test]
    fn no_daemon_or_no_answer_makes_the_server_span_a_root_and_a_late_answer_no_duplicate() {
        let (mut a, mut b) = (Host::new(1), Host::new(2));
        let now = Instant::now();
        call(&mut a, &mut b, (40_000, 10_000, 9, 3), now, |_, _| {});
        assert!(b.release(now + WAIT / 2).is_empty());
        let server = b.release(now + WAIT).pop().expect("released at the deadline");
        assert!(server.parent.is_none(), "no dangling parent");
        assert!(attribute(&server, LINK_KEY_ATTRIBUTE).is_some());
        assert_eq!(b.linker.stats().unanswered, 1);
        a.tell(&mut b, now + WAIT);
        // An absent peer: later requests go out at once, as roots.
        b.linker.on_incoming(Incoming::Absent { ip: a.ip, why: Absence::Refused }, now);
        call(&mut a, &mut b, (40_000, 10_000, 5_000, 4), now, |_, _| {});
        let server = b.release(now).pop().expect("no wait for an absent peer");
        assert!(server.parent.is_none());
        assert_eq!(b.linker.stats().refused, 1);
    }

    #[test]
    fn a_rename_settled_before_its_request_is_read_does_not_wait() {
        let mut b = Linker::new(WAIT);
        let now = Instant::now();
        let key = LinkKey {
            client: SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 2), 41_000),
            server: SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 3), 20_000),
            seq: 900,
        };
        let theirs = TraceId::from_bytes([7; 16]);
        // The peer's stream is ahead of this host's probes: its Call and its Settled come first.
        b.on_incoming(Incoming::Call { key, trace_id: theirs, settled: false }, now);
        b.on_incoming(Incoming::Settled { provisional: theirs, trace_id: theirs }, now);
        b.on_crossing(Crossing::Received { key }, now);
        assert!(!b.holds(key.trace_id()), "settled already: nothing to wait for");
        assert_eq!(b.final_trace(key.trace_id()), theirs);
    }

    #[test]
    fn a_chain_over_three_hosts_and_back_is_one_trace() {
        // A → B; while serving it, B → C and B → A.
        let (mut a, mut b, mut c) = (Host::new(1), Host::new(2), Host::new(3));
        let now = Instant::now();
        call(&mut a, &mut b, (40_000, 10_000, 100, 1), now, |a, b| {
            let mut c_host = std::mem::replace(&mut c, Host::new(3));
            // B's nested calls run on the thread serving A's request (pid 2's tid 2 = pid 1 of b
            // as a client would be another pid; here the server process itself calls).
            let request = with_request_id(fixture("demo-req-read_attributes_5"), 11);
            let reply = with_request_id(fixture("demo-rep-read_attributes_5"), 11);
            let (bc, cs) = (SocketAddrV4::new(b.ip, 41_000), SocketAddrV4::new(c_host.ip, 20_000));
            b.push(2, Direction::Send, bc, cs, 900, &request, now);
            c_host.push(5, Direction::Recv, cs, bc, 900, &request, now);
            c_host.push(5, Direction::Send, cs, bc, 1, &reply, now);
            b.push(2, Direction::Recv, bc, cs, 1, &reply, now);
            let (ba, as_) = (SocketAddrV4::new(b.ip, 42_000), SocketAddrV4::new(a.ip, 30_000));
            let request = with_request_id(fixture("demo-req-read_attributes_5"), 12);
            let reply = with_request_id(fixture("demo-rep-read_attributes_5"), 12);
            b.push(2, Direction::Send, ba, as_, 5_000, &request, now);
            a.push(6, Direction::Recv, as_, ba, 5_000, &request, now);
            a.push(6, Direction::Send, as_, ba, 1, &reply, now);
            b.push(2, Direction::Recv, ba, as_, 1, &reply, now);
            c = c_host;
        });
        // The daemons talk (each one's messages reach the others; a daemon ignores what is not
        // about its requests): B's nested calls are announced unsettled, A's progress settles
        // B's trace, and B's `Settled` then settles C's and A's server spans.
        for _ in 0..2 {
            for from in 0..3 {
                let mut out = Vec::new();
                [&mut a, &mut b, &mut c][from].linker.take_outgoing(&mut out);
                for message in out {
                    let incoming = match message {
                        Outgoing::Call { key, trace_id, settled } => {
                            Incoming::Call { key, trace_id, settled }
                        }
                        Outgoing::Progress { client, server, next_seq } => {
                            Incoming::Progress { client, server, next_seq }
                        }
                        Outgoing::Settled { provisional, trace_id } => {
                            Incoming::Settled { provisional, trace_id }
                        }
                        Outgoing::Want { .. } => continue,
                    };
                    for (to, host) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
                        if to != from {
                            host.linker.on_incoming(incoming.clone(), now);
                        }
                    }
                }
            }
        }
        let spans: Vec<AssembledSpan> =
            [a.release(now), b.release(now), c.release(now)].into_iter().flatten().collect();
        assert_eq!(
            spans.len(),
            6,
            "3 calls, client and server side each: {:#?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        let trace = spans[0].context.trace_id;
        assert!(spans.iter().all(|s| s.context.trace_id == trace), "one trace");
        let roots: Vec<_> = spans.iter().filter(|s| s.parent.is_none()).collect();
        assert_eq!(roots.len(), 1, "one root: A's first client span");
        let ids: HashSet<SpanId> = spans.iter().map(|s| s.context.span_id).collect();
        assert!(
            spans.iter().filter_map(|s| s.parent).all(|p| ids.contains(&p.span_id)),
            "no dangling parent"
        );
    }
}
