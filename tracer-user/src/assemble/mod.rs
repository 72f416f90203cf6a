//! Span assembly: GIOP messages of every traced process → Tango client and server spans.
//!
//! Roles come from direction: a process that writes a Request is its client, one that reads it is
//! its server. Request and Reply pair on (pid, fd, request id). The two ends of one call on this
//! host pair by the request's bytes (identical on both sides), so the server span becomes the
//! child of the client span without any instrumentation; a W3C `trace_parent` inside a CPP_6
//! `ClntIdent` wins when present. While a thread serves a request, the requests it sends are
//! children of that server span (omniORB serves a connection on one worker thread).
//!
//! The output is [`AssembledSpan`]s: everything but the resource, which [`crate::convert::resources`]
//! resolves from the process and the device.

pub mod connection;
pub mod linking;
pub mod naming;
pub mod observe;
pub mod proxy;
pub mod request;
pub mod span;

use std::{borrow::Cow, net::Ipv4Addr, sync::Arc};

use hashbrown::{HashMap, HashSet};
use opentelemetry::{
    KeyValue, Value,
    trace::{SpanKind, TraceId},
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracer_wire::{
    cdr::CdrReader,
    giop::{self, Message, ReplyStatus},
    tango::{self, ArgValue, TangoCall},
};

use self::{
    connection::Connections,
    linking::Linking,
    naming::{DATABASE_KEY, Operation, OperationClass, SUBSCRIPTION_COMMAND},
    proxy::{CallEnd, Constructions, Sent},
    request::ParsedRequest,
};
pub use self::{
    linking::parse_traceparent,
    observe::{DeviceFacts, Observation, Properties, parse_property_answer},
    span::{AssembledSpan, ExceptionEvent, Incomplete, IncompleteCounts, SpanContextLite},
};
use crate::{
    crosshost::LinkKey,
    probe::record::{Direction, Peer, Record, TcpPosition},
    stats::{StageStats, has_room},
};

/// Most calls waiting for their reply, per side; beyond, new ones are not traced (counted).
const MAX_PENDING_CALLS: usize = 65_536;
/// A call without a reply for this long ends incomplete and its state is freed.
const PENDING_CALL_LIMIT_NS: u64 = 600_000_000_000;
/// After probe records were lost, how long (record time) a pending call may still get its reply
/// before it ends incomplete: the reply may have been among the lost records.
pub const LOSS_GRACE_NS: u64 = 2_000_000_000;
/// Attribute naming the key of a request between two hosts (see [`LinkKey::attribute`]).
pub const LINK_KEY_ATTRIBUTE: &str = "tango_tracer.link.key";
/// Most processes remembered as servers, or as serving a device.
const MAX_PROCESSES: usize = 65_536;

/// Counters of the assembly stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct AssemblyStats {
    pub messages: u64,
    pub unparsable: u64,
    /// Bytes skipped because they did not start or continue a GIOP message.
    pub discarded_bytes: u64,
    /// Replies to no pending call (its request was not seen, or the call already ended).
    pub orphan_replies: u64,
    pub spans: u64,
    /// Calls not followed, or state not kept, because a table was full.
    pub refused_full: u64,
    /// Calls that waited longer than the limit for their reply.
    pub expired_calls: u64,
    /// Times the run loop reported lost probe records.
    pub record_losses: u64,
    /// Spans whose end was not seen, by reason.
    pub incomplete: IncompleteCounts,
}

#[derive(Debug)]
struct PendingCall {
    fd: i32,
    tid: u32,
    start_ns: u64,
    /// Shared with the connection's other calls to (or of) the same device.
    object_key: Arc<[u8]>,
    /// Borrowed for Tango's own operations (see [`naming::operation_name`]).
    operation: Cow<'static, str>,
    /// Shared with the stream's other calls that sent the same arguments.
    request: Arc<ParsedRequest>,
    context: SpanContextLite,
    parent: Option<SpanContextLite>,
    parent_is_remote: bool,
    trace_state: String,
    /// For server calls: the serving device; for client calls: the device served by the thread.
    device_key: Option<Arc<[u8]>>,
    /// Native telemetry of the client already traces this call: emit no client span.
    suppressed: bool,
    /// Attributes learnt from the reply (event subscription endpoints).
    reply_attributes: Vec<KeyValue>,
    /// Set when probe records were lost while the call was pending: the record time after
    /// which it ends incomplete.
    loss_deadline: Option<u64>,
    /// The request crossed to or from another host: its key, known to both hosts.
    link: Option<LinkKey>,
}

/// A request that crossed between this host and another, for the cross-host linker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crossing {
    /// A client of ours sent a request to a server on another host, as `trace_id`;
    /// `continues_trace` when the call was made inside a trace (its trace id is not derived from
    /// the key); `len` is the request message's length on the wire.
    Sent { key: LinkKey, trace_id: TraceId, continues_trace: bool, len: u32 },
    /// A server of ours read a request from a client on another host. Its span is the child of
    /// the client span the key names, in the provisional trace the key names.
    Received { key: LinkKey },
}

/// Where and when a GIOP message was seen.
#[derive(Clone, Copy)]
struct Seen<'a> {
    pid: u32,
    tid: u32,
    fd: i32,
    ts_ns: u64,
    bytes: &'a [u8],
    /// The other end of the connection, when the probe read it (receives).
    peer: Peer,
    /// The message's first byte in its TCP connection, when the probe read it.
    tcp: Option<TcpPosition>,
    /// The message's length on the wire (`bytes` may hold a prefix).
    wire_len: usize,
}

/// Pending calls by (pid, fd, request id); keys are small integers, hashed by FxHash (SipHash
/// was a tenth of the per-record path). Boxed: a call is a few hundred bytes, moved into and out
/// of the table and through the finishing steps as a pointer.
type Calls = rustc_hash::FxHashMap<(u32, i32, u32), Box<PendingCall>>;

/// Turns GIOP messages into spans and observations. Its state is per connection (freed at
/// close), per call (freed at reply, close, exit or expiry) and per process (freed at exit).
pub struct Assembler {
    ids: RandomIdGenerator,
    connections: Connections,
    linking: Linking,
    constructions: Constructions,
    client_calls: Calls,
    server_calls: Calls,
    /// Processes seen serving requests.
    servers: rustc_hash::FxHashSet<u32>,
    /// Object keys each process was seen serving (each reported once).
    served: HashMap<u32, HashSet<Vec<u8>>>,
    finished: Vec<AssembledSpan>,
    /// DeviceProxy spans just ended, on their way to `finished` (reused).
    proxy_spans: Vec<AssembledSpan>,
    observations: Vec<Observation>,
    /// Addresses of this host: a TCP peer elsewhere is another host. Empty while cross-host
    /// linking is off.
    local_addresses: HashSet<Ipv4Addr>,
    /// Requests that crossed hosts since the last drain.
    crossings: Vec<Crossing>,
    /// `thread.id` of each client thread seen, formatted once: (pid, tid) → decimal tid.
    thread_ids: rustc_hash::FxHashMap<(u32, u32), Value>,
    /// A span's attributes while they are gathered (reused).
    attributes: Vec<KeyValue>,
    stats: AssemblyStats,
}

/// Client threads whose `thread.id` is kept; past it the cache starts over (threads end unseen).
const MAX_THREAD_IDS: usize = 4096;

impl Assembler {
    /// `max_keep` bounds the bytes kept per message (the capture length).
    pub fn new(max_keep: usize) -> Self {
        Assembler {
            ids: RandomIdGenerator::default(),
            connections: Connections::new(max_keep),
            linking: Linking::default(),
            constructions: Constructions::default(),
            client_calls: Calls::default(),
            server_calls: Calls::default(),
            servers: rustc_hash::FxHashSet::default(),
            served: HashMap::new(),
            finished: Vec::new(),
            proxy_spans: Vec::new(),
            observations: Vec::new(),
            local_addresses: HashSet::new(),
            crossings: Vec::new(),
            thread_ids: rustc_hash::FxHashMap::default(),
            attributes: Vec::new(),
            stats: AssemblyStats::default(),
        }
    }

    /// Turns cross-host linking on with this host's addresses (off when empty); called again
    /// when they change.
    pub fn set_local_addresses(&mut self, addresses: impl IntoIterator<Item = Ipv4Addr>) {
        self.local_addresses = addresses.into_iter().collect();
    }

    /// Requests that crossed hosts since the last call, in the order they were seen.
    pub fn drain_crossings(&mut self, out: &mut Vec<Crossing>) {
        out.append(&mut self.crossings);
    }

    /// The request's key when `tcp` joins this host to another one and linking is on.
    /// `client_side`: this process sent the request.
    fn link_key(&self, tcp: Option<TcpPosition>, client_side: bool) -> Option<LinkKey> {
        let at = tcp?;
        let remote = *at.remote.ip();
        if self.local_addresses.is_empty() || remote.is_loopback() || self.local_addresses.contains(&remote) {
            return None;
        }
        Some(if client_side {
            LinkKey { client: at.local, server: at.remote, seq: at.seq }
        } else {
            LinkKey { client: at.remote, server: at.local, seq: at.seq }
        })
    }

    pub fn stats(&self) -> AssemblyStats {
        AssemblyStats {
            discarded_bytes: self.connections.discarded_bytes,
            refused_full: self.stats.refused_full
                + self.connections.refused_full
                + self.linking.refused_full
                + self.constructions.refused_full,
            ..self.stats
        }
    }

    /// Counters and table sizes.
    pub fn report(&self, out: &mut StageStats) {
        const STAGE: &str = "assemble";
        let stats = self.stats();
        out.push(STAGE, "giop_messages", stats.messages);
        out.push(STAGE, "unparsable", stats.unparsable);
        out.push(STAGE, "discarded_bytes", stats.discarded_bytes);
        out.push(STAGE, "orphan_replies", stats.orphan_replies);
        out.push(STAGE, "spans", stats.spans);
        out.loss(STAGE, "refused_table_full", stats.refused_full);
        out.push(STAGE, "expired_calls", stats.expired_calls);
        out.push(STAGE, "record_losses", stats.record_losses);
        out.push(STAGE, "incomplete_spans", stats.incomplete.total());
        for why in Incomplete::ALL {
            out.push(STAGE, why.counter(), stats.incomplete.get(why));
        }
        self.connections.report(out);
        self.linking.report(out);
        self.constructions.report(out);
        out.size(STAGE, "client_call_entries", self.client_calls.len());
        out.size(STAGE, "server_call_entries", self.server_calls.len());
        out.size(STAGE, "server_process_entries", self.servers.len());
        out.size(STAGE, "served_process_entries", self.served.len());
    }

    /// Spans finished since the last call.
    pub fn drain(&mut self) -> Vec<AssembledSpan> {
        std::mem::take(&mut self.finished)
    }

    /// Moves the spans finished since the last call to `out`.
    pub fn drain_into(&mut self, out: &mut Vec<AssembledSpan>) {
        // Swapped when `out` is empty (it usually is): no span is copied.
        if out.is_empty() {
            std::mem::swap(out, &mut self.finished);
        } else {
            out.append(&mut self.finished);
        }
    }

    /// Observations made since the last call.
    pub fn drain_observations(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.observations)
    }

    /// Whether `pid` has served requests.
    pub fn is_server(&self, pid: u32) -> bool {
        self.servers.contains(&pid)
    }

    /// Whether `pid` sends W3C context itself (its native telemetry is on).
    pub fn is_natively_traced(&self, pid: u32) -> bool {
        self.linking.is_native(pid)
    }

    /// The server span thread `tid` of `pid` is serving, if any (events pushed from it are its
    /// children).
    pub fn serving_context(&self, pid: u32, tid: u32) -> Option<SpanContextLite> {
        self.linking.serving(pid, tid).map(|(ctx, _)| ctx)
    }

    /// Whether bytes on `fd` are GIOP (else they are ZMTP, for the events stage).
    pub fn carries_giop(&self, pid: u32, fd: i32, bytes: &[u8]) -> bool {
        self.connections.carries_giop(pid, fd, bytes)
    }

    /// The run loop tells where the client of a server-side connection is (`giop:tcp:…`).
    pub fn set_location(&mut self, pid: u32, fd: i32, location: String) {
        self.connections.set_location(pid, fd, location);
    }

    /// Requests arriving on this server-side connection come from the daemon: no spans.
    pub fn ignore_connection(&mut self, pid: u32, fd: i32) {
        self.connections.ignore(pid, fd);
    }

    /// Whether the run loop still needs to resolve the peer of this server-side connection.
    pub fn needs_location(&self, pid: u32, fd: i32) -> bool {
        self.connections.needs_location(pid, fd)
    }

    /// Feeds one probe record; ZMTP data (see [`Assembler::carries_giop`]) is left alone.
    pub fn push(&mut self, record: &Record) {
        match record {
            Record::Data { pid, tid, fd, ts_ns, direction, total_len, bytes, peer, tcp } => {
                if !self.carries_giop(*pid, *fd, bytes) {
                    return;
                }
                let stream = (*pid, *fd, *direction);
                let Some((mut feed, position)) = self.connections.feed(stream, bytes, *total_len as usize)
                else {
                    return;
                };
                while let Some(message) = self.connections.next_message(stream, &mut feed, bytes) {
                    let seen = Seen {
                        pid: *pid,
                        tid: *tid,
                        fd: *fd,
                        ts_ns: *ts_ns,
                        bytes: &message.bytes,
                        wire_len: message.total_len,
                        peer: *peer,
                        // The message's first byte, in this chunk or an earlier one of the stream.
                        tcp: tcp.map(|at| TcpPosition {
                            seq: at.seq.wrapping_add(message.stream_start.wrapping_sub(position) as u32),
                            ..at
                        }),
                    };
                    self.on_message(seen, *direction);
                }
            }
            Record::Close { pid, fd, ts_ns } => self.on_close(*pid, *fd, *ts_ns),
            Record::Exit { pid, ts_ns } | Record::Exec { pid, ts_ns } => self.on_exit(*pid, *ts_ns),
            Record::ZmqSend { .. }
            | Record::Log(_)
            | Record::UserCode(_)
            | Record::LibOpened { .. }
            | Record::Fork { .. }
            | Record::ProcessFacts(_)
            | Record::LibraryPath { .. } => {}
        }
    }

    fn on_message(&mut self, seen: Seen<'_>, direction: Direction) {
        let Seen { pid, fd, ts_ns, bytes, peer, .. } = seen;
        self.stats.messages += 1;
        let Ok((_, message)) = giop::parse_message(bytes) else {
            self.stats.unparsable += 1;
            return;
        };
        match (message, direction) {
            (Message::Request(request), Direction::Send) => {
                let stream = (pid, fd, direction);
                let parsed = self.connections.parse_request(stream, request.operation, request.body.clone());
                self.on_client_request(seen, &request, parsed);
            }
            (Message::Request(_), Direction::Recv) | (Message::Reply(_), Direction::Send)
                if self.connections.is_ignored(pid, fd) => {}
            (Message::Request(request), Direction::Recv) => {
                let stream = (pid, fd, direction);
                let parsed = self.connections.parse_request(stream, request.operation, request.body.clone());
                self.on_server_request(seen, &request, parsed);
            }
            (Message::Reply(reply), Direction::Recv) => {
                match self.client_calls.remove(&(pid, fd, reply.request_id)) {
                    Some(call) => {
                        let end = Ended { request_id: reply.request_id, ts_ns, peer };
                        self.finish_call(pid, SpanKind::Client, call, end, reply.status, reply.body)
                    }
                    None => self.stats.orphan_replies += 1,
                }
            }
            (Message::Reply(reply), Direction::Send) => {
                match self.server_calls.remove(&(pid, fd, reply.request_id)) {
                    Some(call) => {
                        self.linking.leave(pid, call.tid, call.context);
                        let end = Ended { request_id: reply.request_id, ts_ns, peer };
                        self.finish_call(pid, SpanKind::Server, call, end, reply.status, reply.body);
                    }
                    None => self.stats.orphan_replies += 1,
                }
            }
            _ => {}
        }
    }

    fn on_client_request(&mut self, at: Seen<'_>, wire: &giop::Request<'_>, request: Arc<ParsedRequest>) {
        let Seen { pid, tid, fd, ts_ns, bytes, .. } = at;
        let (request_id, object_key, operation) = (wire.request_id, wire.object_key, wire.operation);
        let response_expected = wire.response_expected;
        let (serving, device_key) = match self.linking.serving(pid, tid) {
            Some((ctx, key)) => (Some(ctx), Some(Arc::clone(key))),
            None => (None, None),
        };
        // A call made while building a DeviceProxy is a child of the proxy's span.
        let sent = Sent { pid, tid, fd, request_id, ts_ns, object_key, operation, call: &request.call };
        let serving_key = serving.zip(device_key.as_ref());
        let proxy = self.constructions.on_request(&sent, serving_key, &self.ids, &mut self.proxy_spans);
        self.collect_proxy_spans();
        let parent = proxy.or(serving);
        let suppressed = match request.client_ident.as_ref().and_then(|c| c.trace_parent.as_deref()) {
            Some(tp) if !tp.is_empty() => {
                self.linking.mark_native(pid);
                true
            }
            _ => false,
        };
        // A call to another host: both hosts derive its span id, and its trace id when it starts
        // a trace, from the key.
        let link = if suppressed { None } else { self.link_key(at.tcp, true) };
        let context = match link {
            Some(key) => SpanContextLite {
                trace_id: parent.map(|p| p.trace_id).unwrap_or_else(|| key.trace_id()),
                span_id: key.span_id(),
            },
            None => SpanContextLite {
                trace_id: parent.map(|p| p.trace_id).unwrap_or_else(|| self.ids.new_trace_id()),
                span_id: self.ids.new_span_id(),
            },
        };
        if let Some(key) = link {
            self.crossings.push(Crossing::Sent {
                key,
                trace_id: context.trace_id,
                continues_trace: parent.is_some(),
                len: at.wire_len as u32,
            });
        }
        // Offered on this host too: an address that looks remote may still reach a traced
        // server here (a container of this host, a NAT).
        if !suppressed {
            match self.linking.take_early_server(bytes, ts_ns) {
                Some(key) => self.adopt_early_server(key, context),
                None => self.linking.offer_client(bytes, ts_ns, context),
            }
        }
        let call = Box::new(PendingCall {
            fd,
            tid,
            start_ns: ts_ns,
            object_key: self.connections.object_key(pid, fd, object_key),
            operation: naming::operation_name(operation),
            request,
            context,
            parent,
            parent_is_remote: false,
            trace_state: String::new(),
            device_key,
            suppressed,
            reply_attributes: Vec::new(),
            loss_deadline: None,
            link,
        });
        let end = Ended { request_id, ts_ns, peer: Peer::Unknown };
        if !response_expected {
            self.finish_call(pid, SpanKind::Client, call, end, ReplyStatus::NoException, no_body());
        } else if has_room(self.client_calls.len(), MAX_PENDING_CALLS, &mut self.stats.refused_full) {
            self.client_calls.insert((pid, fd, request_id), call);
        } else {
            // Not followed to its reply: what is known goes out now.
            self.end_incomplete(pid, SpanKind::Client, call, end, Incomplete::TableFull);
        }
    }

    fn on_server_request(&mut self, at: Seen<'_>, wire: &giop::Request<'_>, request: Arc<ParsedRequest>) {
        let Seen { pid, tid, fd, ts_ns, bytes, .. } = at;
        let (request_id, object_key, operation) = (wire.request_id, wire.object_key, wire.operation);
        let response_expected = wire.response_expected;
        if !self.servers.contains(&pid)
            && has_room(self.servers.len(), MAX_PROCESSES, &mut self.stats.refused_full)
        {
            self.servers.insert(pid);
        }
        self.note_served(pid, object_key);
        if let TangoCall::CommandInout { command, argin } = &request.call {
            self.observations.push(Observation::Command {
                pid,
                object_key: object_key.to_vec(),
                command: command.clone(),
                argin: argin.clone(),
            });
        }
        let w3c =
            request.client_ident.as_ref().and_then(|c| c.trace_parent.as_deref()).and_then(parse_traceparent);
        // A W3C context wins; else a client on another host names its span by the key.
        let link = if w3c.is_none() { self.link_key(at.tcp, false) } else { None };
        let (parent, parent_is_remote) = match (w3c, link) {
            (Some(ctx), _) => (Some(ctx), true),
            (None, Some(key)) => {
                self.crossings.push(Crossing::Received { key });
                (Some(SpanContextLite { trace_id: key.trace_id(), span_id: key.span_id() }), true)
            }
            (None, None) => (self.linking.take_client_match(bytes, ts_ns), false),
        };
        if parent.is_none() && response_expected {
            // Its client's write may be reported just after this read (sends are reported when
            // they return).
            self.linking.offer_server(bytes, ts_ns, (pid, fd, request_id));
        }
        let trace_state =
            request.client_ident.as_ref().and_then(|c| c.trace_state.clone()).unwrap_or_default();
        let context = SpanContextLite {
            trace_id: parent.map(|p| p.trace_id).unwrap_or_else(|| self.ids.new_trace_id()),
            span_id: self.ids.new_span_id(),
        };
        let object_key = self.connections.object_key(pid, fd, object_key);
        let call = Box::new(PendingCall {
            fd,
            tid,
            start_ns: ts_ns,
            object_key: Arc::clone(&object_key),
            operation: naming::operation_name(operation),
            request,
            context,
            parent,
            parent_is_remote,
            trace_state,
            device_key: Some(Arc::clone(&object_key)),
            suppressed: false,
            reply_attributes: Vec::new(),
            loss_deadline: None,
            link,
        });
        let end = Ended { request_id, ts_ns, peer: Peer::Unknown };
        if !response_expected {
            self.finish_call(pid, SpanKind::Server, call, end, ReplyStatus::NoException, no_body());
        } else if has_room(self.server_calls.len(), MAX_PENDING_CALLS, &mut self.stats.refused_full) {
            self.linking.enter(pid, tid, context, object_key);
            self.server_calls.insert((pid, fd, request_id), call);
        } else {
            self.end_incomplete(pid, SpanKind::Server, call, end, Incomplete::TableFull);
        }
    }

    /// A server call read before its client's write was reported becomes that client's child.
    fn adopt_early_server(&mut self, key: (u32, i32, u32), client: SpanContextLite) {
        let Some(call) = self.server_calls.get_mut(&key) else {
            return;
        };
        if call.parent.is_some() {
            return;
        }
        let old = call.context;
        call.parent = Some(client);
        call.context = SpanContextLite { trace_id: client.trace_id, span_id: old.span_id };
        let (pid, tid, new) = (key.0, call.tid, call.context);
        self.linking.rename_serving(pid, tid, old, new);
        self.observations.push(Observation::Renamed { old, new });
    }

    /// Reports once per process that it serves the device behind `object_key`.
    fn note_served(&mut self, pid: u32, object_key: &[u8]) {
        match self.served.get(&pid) {
            // The usual case, a device already noted: no key is copied.
            Some(keys) if keys.contains(object_key) => return,
            Some(_) => {}
            None if has_room(self.served.len(), MAX_PROCESSES, &mut self.stats.refused_full) => {}
            None => return,
        }
        self.served.entry(pid).or_default().insert(object_key.to_vec());
        self.observations.push(Observation::Serves { pid, object_key: object_key.to_vec() });
    }

    fn finish_call(
        &mut self,
        pid: u32,
        kind: SpanKind,
        mut call: Box<PendingCall>,
        end: Ended,
        status: ReplyStatus,
        body: CdrReader<'_>,
    ) {
        let end_ns = end.ts_ns;
        // Replies are parsed for what users see: Tango errors, device facts from `info`.
        let mut exception = None;
        match status {
            ReplyStatus::NoException => {
                if call.operation.starts_with("info")
                    && let Ok(info) = tango::parse_info_reply(&call.operation, body.clone())
                {
                    let facts = DeviceFacts {
                        name: None,
                        dev_class: Some(info.dev_class),
                        server_id: Some(info.server_id),
                    };
                    self.observations
                        .push(Observation::Device { object_key: call.object_key.to_vec(), facts });
                } else if kind == SpanKind::Client
                    && call.operation == "_get_adm_name"
                    && let Ok(name) = body.clone().string()
                {
                    self.constructions.note_admin_name(
                        (pid, call.tid),
                        (call.fd, end.request_id),
                        end_ns,
                        name.to_string(),
                    );
                } else if let TangoCall::CommandInout { command, .. } = &call.request.call
                    && command.eq_ignore_ascii_case(SUBSCRIPTION_COMMAND)
                    && let Ok(
                        ArgValue::StringArray(endpoints)
                        | ArgValue::LongStringArray { strings: endpoints, .. },
                    ) = tango::parse_command_reply(body.clone())
                {
                    // [heartbeat endpoint, event endpoint, …]
                    if let Some(heartbeat) = endpoints.first() {
                        call.reply_attributes
                            .push(KeyValue::new("tango.event.heartbeat_endpoint", heartbeat.clone()));
                    }
                    if let Some(event) = endpoints.get(1) {
                        call.reply_attributes.push(KeyValue::new("tango.event.endpoint", event.clone()));
                    }
                } else if *call.object_key == *DATABASE_KEY
                    && call.operation.starts_with("command_inout")
                    && let TangoCall::CommandInout { command, argin } = &call.request.call
                {
                    let reply = tango::parse_command_reply(body).ok();
                    // The caller: this process on the client side, the ClntIdent's pid on the server side.
                    let caller = match kind {
                        SpanKind::Server => {
                            call.request.client_ident.as_ref().and_then(|c| c.pid).unwrap_or(0)
                        }
                        _ => pid,
                    };
                    observe::database_call(
                        caller,
                        command,
                        argin.as_ref(),
                        reply.as_ref(),
                        &mut self.observations,
                    );
                }
            }
            ReplyStatus::UserException => {
                exception = Some(match tango::parse_user_exception(body) {
                    Ok(user) => ExceptionEvent {
                        ts_ns: end_ns,
                        exception_type: "Tango::DevFailed".to_string(),
                        message: match user.errors.first() {
                            Some(e) => {
                                format!("REASON:{};DESC:{};ORIGIN:{}", e.reason, e.desc, e.origin)
                            }
                            None => "REASON:unknown;DESC:unknown;ORIGIN:unknown".to_string(),
                        },
                    },
                    Err(_) => ExceptionEvent {
                        ts_ns: end_ns,
                        exception_type: "Tango::DevFailed".to_string(),
                        message: "REASON:unknown;DESC:unknown;ORIGIN:unknown".to_string(),
                    },
                });
            }
            ReplyStatus::SystemException => {
                let desc = tango::parse_system_exception(body)
                    .map(|e| format!("{} (minor {:#x})", e.repository_id, e.minor))
                    .unwrap_or_else(|_| "CORBA system exception".to_string());
                exception = Some(ExceptionEvent {
                    ts_ns: end_ns,
                    exception_type: "Tango::DevFailed".to_string(),
                    message: format!("REASON:API_CorbaException;DESC:{desc};ORIGIN:{}", call.operation),
                });
            }
            // Not errors: the ORB follows a forward or retries; the span says what happened.
            ReplyStatus::LocationForward
            | ReplyStatus::LocationForwardPerm
            | ReplyStatus::NeedsAddressingMode
            | ReplyStatus::Unknown(_) => {
                call.reply_attributes
                    .push(KeyValue::new(GIOP_REPLY_STATUS_ATTRIBUTE, reply_status_name(status)));
            }
        }
        if kind == SpanKind::Client {
            let reply = CallEnd::Reply { ts_ns: end_ns, peer: end.peer, exception: exception.as_ref() };
            let thread = (pid, call.tid);
            self.constructions.on_call_end(
                thread,
                (call.fd, end.request_id),
                call.parent,
                reply,
                &mut self.proxy_spans,
            );
            self.collect_proxy_spans();
        }
        self.emit(pid, kind, call, end_ns, exception, None);
    }

    /// Ends a call whose reply was not seen: what is known, no invented duration, not an error.
    fn end_incomplete(
        &mut self,
        pid: u32,
        kind: SpanKind,
        call: Box<PendingCall>,
        end: Ended,
        why: Incomplete,
    ) {
        if kind == SpanKind::Client {
            let thread = (pid, call.tid);
            let ended = CallEnd::Incomplete(why);
            self.constructions.on_call_end(
                thread,
                (call.fd, end.request_id),
                call.parent,
                ended,
                &mut self.proxy_spans,
            );
            self.collect_proxy_spans();
        } else {
            self.linking.leave(pid, call.tid, call.context);
        }
        self.emit(pid, kind, call, end.ts_ns, None, Some(why));
    }

    /// Moves the DeviceProxy spans the constructions ended to the finished spans, counted.
    fn collect_proxy_spans(&mut self) {
        for span in self.proxy_spans.drain(..) {
            // A process whose own telemetry is on traces its proxies itself.
            if self.linking.is_native(span.pid) {
                continue;
            }
            self.stats.spans += 1;
            if let Some(why) = span.incomplete {
                self.stats.incomplete.add(why);
            }
            self.finished.push(span);
        }
    }

    fn emit(
        &mut self,
        pid: u32,
        kind: SpanKind,
        mut call: Box<PendingCall>,
        end_ns: u64,
        exception: Option<ExceptionEvent>,
        incomplete: Option<Incomplete>,
    ) {
        if call.suppressed || (kind == SpanKind::Client && self.linking.is_native(pid)) {
            return;
        }
        let mut operation = Operation::classify(&call.operation, &call.object_key, &call.request.call);
        let is_server = kind == SpanKind::Server;
        if is_server && naming::is_subscription(&call.request.call) {
            // The admin device's side of a subscription belongs to the `events` topic.
            operation.class = OperationClass::Event;
        }
        // Gathered in a reused buffer, then copied to an allocation of the exact size.
        let mut attributes = std::mem::take(&mut self.attributes);
        attributes.clear();
        let subscription = naming::subscription_attributes(&call.request.call);
        let request = &call.request;
        let name = if is_server {
            naming::server_span(&request.call, request.argument.as_ref(), &operation, &mut attributes)
        } else {
            let thread_id = self.thread_id(pid, call.tid);
            naming::client_span(
                &request.call,
                request.argument.as_ref(),
                thread_id,
                &operation,
                &mut attributes,
            )
        };
        // The attribute of a served read or write, for the metrics (the span does not name it).
        let request_argument = match &request.call {
            TangoCall::ReadAttributes { .. } | TangoCall::WriteAttributes { .. } if is_server => {
                request.argument.clone()
            }
            _ => None,
        };
        attributes.extend(subscription);
        attributes.append(&mut call.reply_attributes);
        if is_server {
            if let Some(ident) = &call.request.client_ident {
                naming::add_client_ident_attributes(ident, &mut attributes);
            }
            if let Some(location) = self.connections.location(pid, call.fd) {
                attributes
                    .push(KeyValue::new("tango.client_ident.location", std::sync::Arc::clone(location)));
            }
            if let Some(key) = &call.link {
                attributes.push(KeyValue::new("client.address", key.client.ip().to_string()));
                attributes.push(KeyValue::new("client.port", i64::from(key.client.port())));
            }
        }
        if let Some(key) = &call.link {
            // Both sides carry the key: a backend can join them even when no daemon answered.
            attributes.push(KeyValue::new(LINK_KEY_ATTRIBUTE, key.attribute()));
        }
        // Room for what the conversion adds: a client span's target, the reason it is incomplete.
        let added = usize::from(!is_server) + usize::from(incomplete.is_some());
        let mut exact = Vec::with_capacity(attributes.len() + added);
        exact.append(&mut attributes);
        self.attributes = attributes;
        let attributes = exact;
        self.stats.spans += 1;
        if let Some(why) = incomplete {
            self.stats.incomplete.add(why);
        }
        // A call whose end was not seen ends when it started: no invented duration.
        let end_ns = if incomplete.is_some() { call.start_ns } else { end_ns.max(call.start_ns) };
        self.finished.push(AssembledSpan {
            name,
            kind,
            context: call.context,
            parent: call.parent,
            parent_is_remote: call.parent_is_remote,
            trace_state: call.trace_state,
            start_ns: call.start_ns,
            end_ns,
            attributes,
            exception,
            links: Vec::new(),
            incomplete,
            pid,
            target_key: (!is_server).then_some(call.object_key),
            device_key: call.device_key,
            operation: operation.class,
            request_argument,
        });
    }

    /// The `thread.id` attribute value of a client thread, shared between its spans.
    fn thread_id(&mut self, pid: u32, tid: u32) -> Value {
        if self.thread_ids.len() >= MAX_THREAD_IDS && !self.thread_ids.contains_key(&(pid, tid)) {
            self.thread_ids.clear();
        }
        self.thread_ids
            .entry((pid, tid))
            .or_insert_with(|| Value::from(std::sync::Arc::<str>::from(tid.to_string())))
            .clone()
    }

    /// A connection closed: its calls still waiting for a reply end incomplete.
    fn on_close(&mut self, pid: u32, fd: i32, ts_ns: u64) {
        self.connections.on_close(pid, fd);
        self.end_pending(|&(p, f, _), _| p == pid && f == fd, ts_ns, |_| Incomplete::ConnectionClosed);
    }

    /// A process ended: everything it had in flight ends incomplete and its state is freed.
    fn on_exit(&mut self, pid: u32, ts_ns: u64) {
        self.end_pending(|&(p, _, _), _| p == pid, ts_ns, |_| Incomplete::ProcessExited);
        self.constructions.on_exit(pid, &mut self.proxy_spans);
        self.collect_proxy_spans();
        self.connections.on_exit(pid);
        self.linking.on_exit(pid);
        self.servers.remove(&pid);
        self.served.remove(&pid);
        self.thread_ids.retain(|&(p, _), _| p != pid);
    }

    /// Ends the pending calls `matches` selects as incomplete, for the reason `why` gives;
    /// returns how many.
    fn end_pending(
        &mut self,
        matches: impl Fn(&(u32, i32, u32), &PendingCall) -> bool,
        ts_ns: u64,
        why: impl Fn(&PendingCall) -> Incomplete,
    ) -> u64 {
        let mut ended = 0;
        for kind in [SpanKind::Client, SpanKind::Server] {
            let calls = match kind {
                SpanKind::Client => &self.client_calls,
                _ => &self.server_calls,
            };
            let keys: Vec<_> = calls.iter().filter(|(k, c)| matches(k, c)).map(|(k, _)| *k).collect();
            for key in keys {
                let calls = match kind {
                    SpanKind::Client => &mut self.client_calls,
                    _ => &mut self.server_calls,
                };
                if let Some(call) = calls.remove(&key) {
                    ended += 1;
                    let reason = why(&call);
                    let end = Ended { request_id: key.2, ts_ns, peer: Peer::Unknown };
                    self.end_incomplete(key.0, kind.clone(), call, end, reason);
                }
            }
        }
        ended
    }

    /// Forgets client requests that no traced server picked up (their server is elsewhere) and
    /// ends calls that waited too long for their reply, or whose reply may have been among lost
    /// probe records.
    pub fn expire(&mut self, now_ns: u64) {
        self.linking.expire(now_ns);
        let limit = now_ns.saturating_sub(PENDING_CALL_LIMIT_NS);
        let lost = |call: &PendingCall| call.loss_deadline.is_some_and(|d| d <= now_ns);
        let stale = |_: &(u32, i32, u32), call: &PendingCall| call.start_ns < limit || lost(call);
        if self.client_calls.values().chain(self.server_calls.values()).any(|c| stale(&(0, 0, 0), c)) {
            let why =
                |call: &PendingCall| if lost(call) { Incomplete::RecordsLost } else { Incomplete::NoReply };
            let ended = self.end_pending(stale, now_ns, why);
            self.stats.expired_calls += ended;
        }
        self.constructions.expire(now_ns, &mut self.proxy_spans);
        self.collect_proxy_spans();
    }

    /// Probe records were lost at about `now_ns` (record time): a lost chunk would splice the
    /// wrong bytes into a message, so every connection starts again at its next GIOP header;
    /// calls pending now end incomplete unless their reply arrives within [`LOSS_GRACE_NS`].
    pub fn records_lost(&mut self, now_ns: u64) {
        self.stats.record_losses += 1;
        self.connections.lose_sync();
        let deadline = now_ns.saturating_add(LOSS_GRACE_NS);
        for call in self.client_calls.values_mut().chain(self.server_calls.values_mut()) {
            call.loss_deadline.get_or_insert(deadline);
        }
        self.constructions.records_lost(deadline);
    }

    /// Ends every call still open (daemon shutdown): nothing is lost.
    pub fn flush_all(&mut self, now_ns: u64) {
        self.end_pending(|_, _| true, now_ns, |_| Incomplete::TracerStopped);
        self.constructions.flush_all(&mut self.proxy_spans);
        self.collect_proxy_spans();
    }
}

/// Attribute of a span whose reply had a GIOP status other than a result or an exception.
pub const GIOP_REPLY_STATUS_ATTRIBUTE: &str = "tango_tracer.giop.reply_status";

/// The CORBA name of a reply status.
fn reply_status_name(status: ReplyStatus) -> String {
    match status {
        ReplyStatus::NoException => "NO_EXCEPTION".to_string(),
        ReplyStatus::UserException => "USER_EXCEPTION".to_string(),
        ReplyStatus::SystemException => "SYSTEM_EXCEPTION".to_string(),
        ReplyStatus::LocationForward => "LOCATION_FORWARD".to_string(),
        ReplyStatus::LocationForwardPerm => "LOCATION_FORWARD_PERM".to_string(),
        ReplyStatus::NeedsAddressingMode => "NEEDS_ADDRESSING_MODE".to_string(),
        ReplyStatus::Unknown(code) => format!("unknown ({code})"),
    }
}

/// How a call ended: the request id it had, when, and the peer when the probe read it.
#[derive(Clone, Copy)]
struct Ended {
    request_id: u32,
    ts_ns: u64,
    peer: Peer,
}

/// The empty body of a call that expects no reply.
fn no_body() -> CdrReader<'static> {
    CdrReader::new(&[], true, 0)
}

#[cfg(test)]
mod tests {
    //! Real GIOP messages captured from PyTango 10.3.1 (the parsers' fixtures), replayed as the
    //! probes would report them from a client and a server process.
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "tests"
    )]

    use opentelemetry::trace::SpanId;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../tracer-wire/tests/fixtures/giop/{name}.bin", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// GIOP 1.0 messages with an empty service-context list keep their request id at offset 16.
    fn with_request_id(mut bytes: Vec<u8>, id: u32) -> Vec<u8> {
        assert_eq!(&bytes[..6], b"GIOP\x01\x00");
        assert_eq!(&bytes[12..16], &[0, 0, 0, 0], "no service contexts");
        bytes[16..20].copy_from_slice(&id.to_le_bytes());
        bytes
    }

    fn data(pid: u32, tid: u32, fd: i32, ts_ns: u64, direction: Direction, bytes: &[u8]) -> Record<'static> {
        Record::Data {
            pid,
            tid,
            fd,
            ts_ns,
            direction,
            total_len: bytes.len() as u32,
            bytes: bytes.to_vec().into(),
            peer: Default::default(),
            tcp: None,
        }
    }

    const CLIENT: u32 = 100;
    const SERVER: u32 = 200;
    const PEER: u32 = 300;

    /// Client writes, server reads, server replies, client reads.
    fn call(a: &mut Assembler, request: &[u8], reply: &[u8], t: u64) {
        a.push(&data(CLIENT, CLIENT, 7, t, Direction::Send, request));
        a.push(&data(SERVER, SERVER + 1, 21, t + 10, Direction::Recv, request));
        a.push(&data(SERVER, SERVER + 1, 21, t + 20, Direction::Send, reply));
        a.push(&data(CLIENT, CLIENT, 7, t + 30, Direction::Recv, reply));
    }

    #[test]
    fn read_attribute_gives_a_client_span_and_its_server_child() {
        let mut a = Assembler::new(2048);
        let request = with_request_id(fixture("demo-req-read_attributes_5"), 8);
        let reply = with_request_id(fixture("demo-rep-read_attributes_5"), 8);
        call(&mut a, &request, &reply, 1_000);
        let spans = a.drain();
        assert_eq!(spans.len(), 2);
        let server = spans.iter().find(|s| s.kind == SpanKind::Server).expect("server span");
        let client = spans.iter().find(|s| s.kind == SpanKind::Client).expect("client span");
        assert_eq!(client.name, "Tango::DeviceProxy::read_attribute");
        assert_eq!(server.name, "Tango::Device_5Impl::read_attributes_5");
        assert_eq!(server.parent, Some(client.context));
        assert_eq!(server.context.trace_id, client.context.trace_id);
        assert_eq!(client.parent, None);
        assert_eq!(
            (client.start_ns, client.end_ns, server.start_ns, server.end_ns),
            (1_000, 1_030, 1_010, 1_020)
        );
        assert_eq!(client.target_key.as_deref(), Some(&b"test/demo/1"[..]));
        assert_eq!(server.device_key.as_deref(), Some(&b"test/demo/1"[..]));
        assert!(client.attributes.contains(&KeyValue::new("tango.operation.argument", "temperature")));
        assert!(server.attributes.contains(&KeyValue::new("tango.client_ident.lang", "CPP")));
        assert!(a.is_server(SERVER) && !a.is_server(CLIENT));
    }

    #[test]
    fn a_server_read_reported_before_its_client_write_is_still_its_child() {
        // Sends are reported when they return: on one host the server's read can come first.
        let mut a = Assembler::new(2048);
        let request = with_request_id(fixture("demo-req-read_attributes_5"), 8);
        let reply = with_request_id(fixture("demo-rep-read_attributes_5"), 8);
        a.push(&data(SERVER, SERVER + 1, 21, 1_010, Direction::Recv, &request));
        a.push(&data(CLIENT, CLIENT, 7, 1_000, Direction::Send, &request));
        a.push(&data(SERVER, SERVER + 1, 21, 1_020, Direction::Send, &reply));
        a.push(&data(CLIENT, CLIENT, 7, 1_030, Direction::Recv, &reply));
        let spans = a.drain();
        let server = spans.iter().find(|s| s.kind == SpanKind::Server).expect("server span");
        let client = spans.iter().find(|s| s.kind == SpanKind::Client).expect("client span");
        assert_eq!(server.parent, Some(client.context));
        assert_eq!(server.context.trace_id, client.context.trace_id);
        // Nothing left waiting on either side.
        let mut stats = crate::stats::StageStats::default();
        a.linking.report(&mut stats);
        assert!(stats.tables().any(|(_, name, n)| name == "early_server_request_entries" && n == 0));
        assert!(stats.tables().any(|(_, name, n)| name == "unmatched_request_entries" && n == 0));
    }

    #[test]
    fn devfailed_reply_records_the_first_error_as_cpptango_does() {
        let mut a = Assembler::new(2048);
        let request = with_request_id(fixture("demo-req-command_inout_4-fail"), 4);
        let reply = with_request_id(fixture("demo-rep-devfailed"), 4);
        call(&mut a, &request, &reply, 1_000);
        let spans = a.drain();
        assert_eq!(spans.len(), 2);
        for span in &spans {
            let exception = span.exception.as_ref().expect("exception event");
            assert_eq!(exception.exception_type, "Tango::DevFailed");
            assert!(exception.message.starts_with("REASON:"), "{}", exception.message);
            assert!(exception.message.contains(";DESC:") && exception.message.contains(";ORIGIN:"));
        }
    }

    #[test]
    fn info_reply_teaches_the_device_class() {
        let mut a = Assembler::new(2048);
        let request = with_request_id(fixture("demo-req-info"), 6);
        let reply = with_request_id(fixture("demo-rep-info"), 6);
        call(&mut a, &request, &reply, 1_000);
        let observations = a.drain_observations();
        let facts = observations
            .iter()
            .find_map(|o| match o {
                Observation::Device { object_key, facts } if object_key == b"test/demo/1" => Some(facts),
                _ => None,
            })
            .expect("device facts");
        assert_eq!(facts.dev_class.as_deref(), Some("Demo"));
        // `info` is not a natively traced operation.
        assert!(a.drain().iter().all(|s| s.operation == OperationClass::Extended));
    }

    #[test]
    fn dbimportdevice_reply_names_the_opaque_key_of_a_database_server() {
        let mut a = Assembler::new(4096);
        let request = fixture("dbclient-req-command_inout_4-dbimportdevice");
        let reply = fixture("dbclient-rep-command_inout_4-dbimportdevice");
        call(&mut a, &request, &reply, 1_000);
        let spans = a.drain();
        let client = spans.iter().find(|s| s.kind == SpanKind::Client).expect("client span");
        assert_eq!(client.name, "Tango::Connection::command_inout");
        assert_eq!(client.operation, OperationClass::Database);
        assert!(client.attributes.contains(&KeyValue::new("tango.operation.argument", "DbImportDevice")));
        let observations = a.drain_observations();
        let (key, facts) = observations
            .iter()
            .find_map(|o| match o {
                Observation::Device { object_key, facts } => Some((object_key, facts)),
                _ => None,
            })
            .expect("one device learnt");
        assert_eq!(key.len(), 14, "an opaque POA key");
        assert!(facts.name.is_some() && facts.dev_class.is_some() && facts.server_id.is_some(), "{facts:?}");
    }

    #[test]
    fn calls_made_while_serving_are_children_of_the_server_span() {
        let mut a = Assembler::new(2048);
        let outer = with_request_id(fixture("demo-req-command_inout_4-echo"), 2);
        let outer_reply = with_request_id(fixture("demo-rep-command_inout_4-echo"), 2);
        let inner = with_request_id(fixture("demo-req-read_attributes_5"), 9);
        let inner_reply = with_request_id(fixture("demo-rep-read_attributes_5"), 9);
        a.push(&data(CLIENT, CLIENT, 7, 100, Direction::Send, &outer));
        a.push(&data(SERVER, 201, 21, 110, Direction::Recv, &outer));
        // The serving thread calls a device of another process.
        a.push(&data(SERVER, 201, 30, 120, Direction::Send, &inner));
        a.push(&data(PEER, 301, 5, 130, Direction::Recv, &inner));
        a.push(&data(PEER, 301, 5, 140, Direction::Send, &inner_reply));
        a.push(&data(SERVER, 201, 30, 150, Direction::Recv, &inner_reply));
        a.push(&data(SERVER, 201, 21, 160, Direction::Send, &outer_reply));
        a.push(&data(CLIENT, CLIENT, 7, 170, Direction::Recv, &outer_reply));
        let spans = a.drain();
        assert_eq!(spans.len(), 4);
        let by_pid_kind =
            |pid, kind: SpanKind| spans.iter().find(|s| s.pid == pid && s.kind == kind).expect("span");
        let root = by_pid_kind(CLIENT, SpanKind::Client);
        let serving = by_pid_kind(SERVER, SpanKind::Server);
        let nested = by_pid_kind(SERVER, SpanKind::Client);
        let peer = by_pid_kind(PEER, SpanKind::Server);
        assert_eq!(serving.parent, Some(root.context));
        assert_eq!(nested.parent, Some(serving.context));
        assert_eq!(nested.device_key.as_deref(), Some(&b"test/demo/1"[..]), "carries the served device");
        assert_eq!(peer.parent, Some(nested.context));
        assert!(spans.iter().all(|s| s.context.trace_id == root.context.trace_id));
    }

    #[test]
    fn w3c_context_in_clntident_wins_and_the_native_client_is_not_duplicated() {
        let mut a = Assembler::new(2048);
        let request = fixture("tele-req-command_inout_4-echo");
        let reply = fixture("tele-rep-command_inout_4-echo");
        call(&mut a, &request, &reply, 1_000);
        let spans = a.drain();
        assert_eq!(spans.len(), 1, "only our server span");
        let server = &spans[0];
        assert!(server.parent_is_remote);
        let expected = tango::parse_request(
            "command_inout_4",
            match giop::parse_message(&request) {
                Ok((_, Message::Request(r))) => r.body,
                _ => panic!("fixture is a request"),
            },
        )
        .client_ident
        .and_then(|c| c.trace_parent)
        .and_then(|tp| parse_traceparent(&tp))
        .expect("traceparent");
        assert_eq!(server.parent, Some(expected));
        assert_eq!(server.context.trace_id, expected.trace_id);
        assert!(a.is_natively_traced(CLIENT));
    }

    fn incomplete(span: &AssembledSpan) -> Option<&'static str> {
        span.incomplete.map(Incomplete::reason)
    }

    #[test]
    fn a_client_that_exits_mid_call_gets_an_incomplete_span_without_duration() {
        let mut a = Assembler::new(2048);
        let request = with_request_id(fixture("demo-req-read_attributes_5"), 8);
        a.push(&data(CLIENT, CLIENT, 7, 1_000, Direction::Send, &request));
        a.push(&data(SERVER, SERVER + 1, 21, 1_010, Direction::Recv, &request));
        a.push(&Record::Exit { pid: CLIENT, ts_ns: 5_000 });
        let spans = a.drain();
        assert_eq!(spans.len(), 1);
        assert_eq!(incomplete(&spans[0]), Some("process exited"));
        assert_eq!((spans[0].start_ns, spans[0].end_ns), (1_000, 1_000), "no invented duration");
        assert!(spans[0].exception.is_none(), "not an error");
        // The server's side ends when its connection closes.
        a.push(&Record::Close { pid: SERVER, fd: 21, ts_ns: 6_000 });
        let spans = a.drain();
        assert_eq!(spans.len(), 1);
        assert_eq!(incomplete(&spans[0]), Some("connection closed"));
        assert_eq!(spans[0].end_ns, 1_010);
        let stats = a.stats();
        assert_eq!(stats.incomplete.get(Incomplete::ProcessExited), 1);
        assert_eq!(stats.incomplete.get(Incomplete::ConnectionClosed), 1);
        let mut report = StageStats::default();
        a.report(&mut report);
        assert_eq!(report.get("assemble", "incomplete_spans"), Some(2));
        assert_eq!(report.get("assemble", "incomplete_connection_closed"), Some(1));
    }

    #[test]
    fn calls_open_at_stop_or_past_the_limit_end_incomplete() {
        let mut a = Assembler::new(2048);
        let old = with_request_id(fixture("demo-req-read_attributes_5"), 8);
        let new = with_request_id(fixture("demo-req-command_inout_4-echo"), 9);
        a.push(&data(CLIENT, CLIENT, 7, 1_000, Direction::Send, &old));
        a.push(&data(CLIENT, CLIENT, 7, PENDING_CALL_LIMIT_NS, Direction::Send, &new));
        a.expire(PENDING_CALL_LIMIT_NS + 2_000);
        let spans = a.drain();
        assert_eq!(spans.len(), 1);
        assert_eq!(incomplete(&spans[0]), Some("no reply within 600 s"));
        assert_eq!(spans[0].end_ns, 1_000);
        a.flush_all(PENDING_CALL_LIMIT_NS + 3_000);
        let spans = a.drain();
        assert_eq!(spans.len(), 1);
        assert_eq!(incomplete(&spans[0]), Some("tracer stopped"));
        assert_eq!(a.stats().expired_calls, 1);
        assert_eq!(a.client_calls.len(), 0);
    }

    /// A Reply with status LOCATION_FORWARD (3): the status word follows the request id.
    #[test]
    fn other_reply_statuses_are_attributes_not_errors() {
        let mut a = Assembler::new(2048);
        let request = with_request_id(fixture("demo-req-ping"), 8);
        let mut reply = with_request_id(fixture("demo-rep-ping"), 8);
        reply[20..24].copy_from_slice(&3u32.to_le_bytes());
        call(&mut a, &request, &reply, 1_000);
        let spans = a.drain();
        assert_eq!(spans.len(), 2);
        for span in &spans {
            assert!(span.exception.is_none() && span.incomplete.is_none(), "{span:?}");
            assert!(
                span.attributes.contains(&KeyValue::new(GIOP_REPLY_STATUS_ATTRIBUTE, "LOCATION_FORWARD")),
                "{span:?}"
            );
        }
    }

    #[test]
    fn a_lost_reply_ends_the_call_incomplete_after_the_grace_period_and_a_late_one_is_an_orphan() {
        let mut a = Assembler::new(2048);
        let lost = with_request_id(fixture("demo-req-read_attributes_5"), 8);
        let lost_reply = with_request_id(fixture("demo-rep-read_attributes_5"), 8);
        let kept = with_request_id(fixture("demo-req-command_inout_4-echo"), 9);
        let kept_reply = with_request_id(fixture("demo-rep-command_inout_4-echo"), 9);
        a.push(&data(CLIENT, CLIENT, 7, 1_000, Direction::Send, &lost));
        a.push(&data(SERVER, SERVER + 1, 21, 1_010, Direction::Recv, &lost));
        a.push(&data(CLIENT, CLIENT + 1, 8, 1_020, Direction::Send, &kept));
        a.records_lost(2_000);
        // The second call's reply arrives within the grace period: an ordinary span.
        a.push(&data(CLIENT, CLIENT + 1, 8, 2_000 + LOSS_GRACE_NS - 1, Direction::Recv, &kept_reply));
        a.expire(2_000 + LOSS_GRACE_NS - 1);
        let spans = a.drain();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].incomplete, None);
        assert_eq!(spans[0].end_ns, 2_000 + LOSS_GRACE_NS - 1);
        // The first one's reply was among the lost records.
        a.expire(2_000 + LOSS_GRACE_NS);
        let spans = a.drain();
        assert_eq!(spans.len(), 2, "client and server side");
        for span in &spans {
            assert_eq!(incomplete(span), Some("probe records lost"));
            assert_eq!(span.end_ns, span.start_ns);
            assert!(span.exception.is_none());
        }
        // A reply that turns up after all is counted, not a second span.
        a.push(&data(SERVER, SERVER + 1, 21, 2_000 + LOSS_GRACE_NS + 5, Direction::Send, &lost_reply));
        a.push(&data(CLIENT, CLIENT, 7, 2_000 + LOSS_GRACE_NS + 6, Direction::Recv, &lost_reply));
        assert!(a.drain().is_empty());
        assert_eq!(a.stats().orphan_replies, 2);
        assert_eq!(a.stats().incomplete.get(Incomplete::RecordsLost), 2);
        assert!(a.client_calls.is_empty() && a.server_calls.is_empty());
        assert!(a.linking.serving(SERVER, SERVER + 1).is_none(), "the serving stack is left");
    }

    #[test]
    fn after_lost_records_reassembly_starts_again_at_the_next_giop_header() {
        let mut a = Assembler::new(2048);
        let request = with_request_id(fixture("demo-req-read_attributes_5"), 8);
        let (head, tail) = request.split_at(30);
        // The head of a message, then records were lost (its middle, say): the tail must not be
        // spliced onto the head.
        a.push(&Record::Data {
            pid: CLIENT,
            tid: CLIENT,
            fd: 7,
            ts_ns: 1_000,
            direction: Direction::Send,
            total_len: head.len() as u32,
            bytes: head.to_vec().into(),
            peer: Default::default(),
            tcp: None,
        });
        a.records_lost(1_500);
        a.push(&data(CLIENT, CLIENT, 7, 2_000, Direction::Send, tail));
        assert_eq!(a.stats().discarded_bytes, tail.len() as u64);
        assert_eq!(a.stats().messages, 0);
        // The next whole message is traced.
        let next = with_request_id(fixture("demo-req-read_attributes_5"), 9);
        a.push(&data(CLIENT, CLIENT, 7, 3_000, Direction::Send, &next));
        assert_eq!(a.stats().messages, 1);
        assert_eq!(a.client_calls.len(), 1);
        assert!(a.client_calls.contains_key(&(CLIENT, 7, 9)));
    }

    /// GIOP 1.0 `_is_a("IDL:Tango/Device_6:1.0")` / `_non_existent()` as cppTango sends them
    /// when a DeviceProxy connects (no capture has them for `test/demo/1`); their replies are the
    /// captured `ping` reply (a void result: the body is not read for these operations).
    fn probe(operation: &str, key: &[u8], id: u32) -> (Vec<u8>, Vec<u8>) {
        let request = tracer_wire::encode::request_1_0(id, key, operation, |w| {
            if operation == "_is_a" {
                w.string("IDL:Tango/Device_6:1.0");
            }
        });
        (request, with_request_id(fixture("demo-rep-ping"), id))
    }

    /// Client thread `tid` of `pid` sends `request` on `fd` at `t` and gets `reply` at `t + 5`
    /// from 127.0.0.1:4321.
    fn client_call(a: &mut Assembler, (pid, tid, fd): (u32, u32, i32), request: &[u8], reply: &[u8], t: u64) {
        a.push(&data(pid, tid, fd, t, Direction::Send, request));
        let mut received = data(pid, tid, fd, t + 5, Direction::Recv, reply);
        if let Record::Data { peer, .. } = &mut received {
            *peer = Peer::Inet(std::net::Ipv4Addr::LOCALHOST, 4321);
        }
        a.push(&received);
    }

    /// `DeviceProxy("tango://127.0.0.1:4321/test/demo/1#dbase=no")`, as on the wire.
    fn connect_without_database(a: &mut Assembler, thread: (u32, u32, i32), t: u64) {
        let (is_a, is_a_reply) = probe("_is_a", b"test/demo/1", 1);
        let (non_existent, non_existent_reply) = probe("_non_existent", b"test/demo/1", 2);
        let info = with_request_id(fixture("demo-req-info"), 3);
        let info_reply = with_request_id(fixture("demo-rep-info"), 3);
        client_call(a, thread, &is_a, &is_a_reply, t);
        client_call(a, thread, &non_existent, &non_existent_reply, t + 10);
        client_call(a, thread, &info, &info_reply, t + 20);
    }

    fn proxy_threads(a: &Assembler) -> u64 {
        let mut report = StageStats::default();
        a.report(&mut report);
        report.get("assemble", "proxy_thread_entries").expect("reported")
    }

    fn proxies(spans: &[AssembledSpan]) -> Vec<&AssembledSpan> {
        spans.iter().filter(|s| s.name == proxy::SPAN_NAME).collect()
    }

    #[test]
    fn a_device_proxy_without_database_is_an_internal_span_up_to_the_info_reply() {
        let mut a = Assembler::new(2048);
        connect_without_database(&mut a, (CLIENT, CLIENT, 7), 1_000);
        let read = with_request_id(fixture("demo-req-read_attributes_5"), 4);
        let read_reply = with_request_id(fixture("demo-rep-read_attributes_5"), 4);
        client_call(&mut a, (CLIENT, CLIENT, 7), &read, &read_reply, 2_000);
        let spans = a.drain();
        let proxy = proxies(&spans);
        assert_eq!(proxy.len(), 1, "{spans:#?}");
        let proxy = proxy[0];
        assert_eq!(proxy.kind, SpanKind::Internal);
        assert_eq!((proxy.start_ns, proxy.end_ns), (1_000, 1_025), "from _is_a to the info reply");
        assert_eq!(proxy.parent, None);
        assert_eq!(proxy.device_key, None, "the client process's resource");
        assert_eq!(proxy.operation, OperationClass::User);
        assert!(proxy.attributes.contains(&KeyValue::new(
            "tango.operation.argument",
            "tango://127.0.0.1:4321/test/demo/1#dbase=no"
        )));
        assert!(proxy.attributes.contains(&KeyValue::new("thread.id", CLIENT.to_string())));
        let info = spans.iter().find(|s| s.name == "Tango::DeviceProxy::info").expect("info span");
        assert_eq!(info.parent, Some(proxy.context), "the constructor's calls are its children");
        let read = spans.iter().find(|s| s.name == "Tango::DeviceProxy::read_attribute").expect("read");
        assert_eq!(read.parent, None, "later calls are not");
        // A second proxy of the same device on the same thread is a second span.
        connect_without_database(&mut a, (CLIENT, CLIENT, 7), 3_000);
        assert_eq!(proxies(&a.drain()).len(), 1);
        assert_eq!(proxy_threads(&a), 0, "nothing kept between constructions");
    }

    #[test]
    fn a_device_proxy_built_while_serving_is_a_child_of_the_request_with_the_device_resource() {
        let mut a = Assembler::new(2048);
        let outer = with_request_id(fixture("demo-req-command_inout_4-echo"), 20);
        let outer_reply = with_request_id(fixture("demo-rep-command_inout_4-echo"), 20);
        a.push(&data(SERVER, 201, 21, 100, Direction::Recv, &outer));
        connect_without_database(&mut a, (SERVER, 201, 30), 1_000);
        let read = with_request_id(fixture("demo-req-read_attributes_5"), 4);
        let read_reply = with_request_id(fixture("demo-rep-read_attributes_5"), 4);
        client_call(&mut a, (SERVER, 201, 30), &read, &read_reply, 2_000);
        a.push(&data(SERVER, 201, 21, 3_000, Direction::Send, &outer_reply));
        let spans = a.drain();
        let serving = spans.iter().find(|s| s.kind == SpanKind::Server).expect("serving span");
        let proxy = proxies(&spans)[0];
        assert_eq!(proxy.parent, Some(serving.context));
        assert_eq!(proxy.context.trace_id, serving.context.trace_id);
        assert_eq!(proxy.device_key.as_deref(), Some(&b"test/demo/1"[..]), "the served device");
        let read = spans.iter().find(|s| s.name == "Tango::DeviceProxy::read_attribute").expect("read");
        assert_eq!(read.parent, Some(serving.context));
    }

    /// The captured `DbImportDevice("test/dbdemo/1")` and the GIOP 1.2 calls to the device's
    /// opaque key that follow it.
    #[test]
    fn a_device_proxy_through_the_database_has_the_database_calls_as_children() {
        let mut a = Assembler::new(4096);
        let thread = (CLIENT, CLIENT, 7);
        let device = (CLIENT, CLIENT, 9);
        let import = fixture("dbclient-req-command_inout_4-dbimportdevice");
        let import_reply = fixture("dbclient-rep-command_inout_4-dbimportdevice");
        client_call(&mut a, thread, &import, &import_reply, 1_000);
        client_call(
            &mut a,
            device,
            &fixture("giop12-req-_non_existent"),
            &fixture("giop12-rep-_non_existent"),
            1_100,
        );
        client_call(&mut a, device, &fixture("giop12-req-info_6"), &fixture("giop12-rep-info_6"), 1_200);
        let spans = a.drain();
        let proxy = proxies(&spans);
        assert_eq!(proxy.len(), 1, "{spans:#?}");
        let proxy = proxy[0];
        assert!(proxy.attributes.contains(&KeyValue::new("tango.operation.argument", "test/dbdemo/1")));
        assert_eq!((proxy.start_ns, proxy.end_ns), (1_000, 1_205));
        let import = spans
            .iter()
            .find(|s| s.attributes.contains(&KeyValue::new("tango.operation.argument", "DbImportDevice")))
            .expect("import span");
        assert_eq!(import.parent, Some(proxy.context));
        assert_eq!(import.operation, OperationClass::Database);
    }

    #[test]
    fn a_device_proxy_that_cannot_connect_fails_and_one_left_unfinished_is_incomplete() {
        let mut a = Assembler::new(2048);
        client_call(
            &mut a,
            (CLIENT, CLIENT, 7),
            &fixture("nodev-req-_is_a"),
            &fixture("nodev-rep-object_not_exist"),
            1_000,
        );
        let spans = a.drain();
        let proxy = proxies(&spans)[0];
        let exception = proxy.exception.as_ref().expect("an error");
        assert!(exception.message.contains("OBJECT_NOT_EXIST"), "{}", exception.message);
        assert!(proxy.attributes.contains(&KeyValue::new(
            "tango.operation.argument",
            "tango://127.0.0.1:4321/test/demo/99#dbase=no"
        )));
        // The process exits in the middle of a construction.
        let (is_a, _) = probe("_is_a", b"test/demo/1", 5);
        a.push(&data(CLIENT, CLIENT, 7, 2_000, Direction::Send, &is_a));
        a.push(&Record::Exit { pid: CLIENT, ts_ns: 3_000 });
        let spans = a.drain();
        let proxy = proxies(&spans)[0];
        assert_eq!(incomplete(proxy), Some("process exited"));
        assert_eq!((proxy.start_ns, proxy.end_ns), (2_000, 2_000));
        assert_eq!(proxy_threads(&a), 0);
    }

    /// `_get_adm_name` with request id `id` and its reply, a CORBA string: length 18,
    /// "dserver/Demo/Demo\0".
    fn get_adm_name(id: u32) -> (Vec<u8>, Vec<u8>) {
        let adm_name = tracer_wire::encode::request_1_0(id, b"test/demo/1", "_get_adm_name", |_| {});
        let mut adm_reply = with_request_id(fixture("demo-rep-ping"), id);
        adm_reply.extend_from_slice(&18u32.to_le_bytes());
        adm_reply.extend_from_slice(b"dserver/Demo/Demo\0");
        let len = (adm_reply.len() - 12) as u32;
        adm_reply[8..12].copy_from_slice(&len.to_le_bytes());
        (adm_name, adm_reply)
    }

    #[test]
    fn an_admin_name_no_construction_uses_is_forgotten_when_it_expires() {
        let mut a = Assembler::new(2048);
        let (adm_name, adm_reply) = get_adm_name(1);
        client_call(&mut a, (CLIENT, CLIENT, 7), &adm_name, &adm_reply, 1_000);
        assert_eq!(proxy_threads(&a), 1);
        a.expire(1_005 + 599_000_000_000);
        assert_eq!(proxy_threads(&a), 1, "kept while a construction may still take it");
        a.expire(1_005 + 601_000_000_000);
        assert_eq!(proxy_threads(&a), 0);
    }

    #[test]
    fn an_admin_name_is_forgotten_when_the_threads_next_call_ends() {
        let mut a = Assembler::new(2048);
        let (adm_name, adm_reply) = get_adm_name(1);
        let ping = tracer_wire::encode::request_1_0(2, b"test/demo/1", "ping", |_| {});
        let ping_reply = with_request_id(fixture("demo-rep-ping"), 2);
        // Two calls in flight on one thread: the `_get_adm_name` reply comes first.
        a.push(&data(CLIENT, CLIENT, 7, 1_000, Direction::Send, &adm_name));
        a.push(&data(CLIENT, CLIENT, 8, 1_001, Direction::Send, &ping));
        a.push(&data(CLIENT, CLIENT, 7, 1_002, Direction::Recv, &adm_reply));
        assert_eq!(proxy_threads(&a), 1);
        a.push(&data(CLIENT, CLIENT, 8, 1_003, Direction::Recv, &ping_reply));
        assert_eq!(proxy_threads(&a), 0);
        assert_eq!(a.drain().len(), 2);
    }

    #[test]
    fn the_admin_proxy_of_a_subscription_is_named_as_the_server_spells_its_admin_device() {
        let mut a = Assembler::new(2048);
        let thread = (CLIENT, CLIENT, 7);
        let (adm_name, adm_reply) = get_adm_name(1);
        client_call(&mut a, thread, &adm_name, &adm_reply, 1_000);
        let (is_a, is_a_reply) = probe("_is_a", b"dserver/demo/demo", 2);
        let info = tracer_wire::encode::request_1_0(3, b"dserver/demo/demo", "info", |_| {});
        let info_reply = with_request_id(fixture("demo-rep-info"), 3);
        client_call(&mut a, thread, &is_a, &is_a_reply, 1_100);
        client_call(&mut a, thread, &info, &info_reply, 1_200);
        let spans = a.drain();
        let proxy = proxies(&spans);
        assert_eq!(proxy.len(), 1, "{spans:#?}");
        assert!(proxy[0].attributes.contains(&KeyValue::new(
            "tango.operation.argument",
            "tango://127.0.0.1:4321/dserver/Demo/Demo#dbase=no"
        )));
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let mut a = Assembler::new(2048);
        let mut broken = fixture("demo-req-read_attributes_5");
        broken[7] = 0x55; // unknown message type
        a.push(&data(CLIENT, CLIENT, 7, 1, Direction::Send, &broken));
        a.push(&data(CLIENT, CLIENT, 7, 2, Direction::Recv, b"GIOP\x01\x00\x01\x01\xff\xff\xff\x7f"));
        assert!(a.drain().is_empty());
        assert!(a.stats().unparsable + a.stats().orphan_replies + a.stats().discarded_bytes >= 1);
    }

    #[test]
    fn property_answers() {
        let answer: Vec<String> = [
            "Sys/TG_test/1",
            "2",
            "telemetry_enable",
            "1",
            "true",
            "telemetry_topics",
            "2",
            "user",
            "database",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (device, props) = parse_property_answer(&answer).expect("well formed");
        assert_eq!(device, "sys/tg_test/1");
        assert_eq!(props[0], ("telemetry_enable".to_string(), vec!["true".to_string()]));
        assert_eq!(props[1].1, vec!["user".to_string(), "database".to_string()]);
        assert_eq!(parse_property_answer(&["d".to_string(), "x".to_string()]), None);
        // As DataBaseds answers for properties that are not defined.
        let undefined: Vec<String> =
            ["sys/tg_test/1", "2", "telemetry_enable", "0", " ", "telemetry_types", "0", " "]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let (_, props) = parse_property_answer(&undefined).expect("well formed");
        assert_eq!(
            props,
            vec![("telemetry_enable".to_string(), vec![]), ("telemetry_types".to_string(), vec![])]
        );
    }

    #[test]
    fn subscription_spans_carry_the_event_and_the_returned_endpoints() {
        let mut a = Assembler::new(4096);
        let request = fixture("tele-req-command_inout_4-zmqeventsubscriptionchange");
        let reply = fixture("tele-rep-command_inout_4-zmqeventsubscriptionchange");
        // The fixture's client had native telemetry on; make it look like an ordinary client.
        a.push(&data(SERVER, SERVER + 1, 21, 10, Direction::Recv, &request));
        a.push(&data(SERVER, SERVER + 1, 21, 20, Direction::Send, &reply));
        let spans = a.drain();
        let server = spans.first().expect("the admin device's span");
        for key in ["tango.event.device", "tango.event.attribute", "tango.event.type", "tango.event.endpoint"]
        {
            assert!(
                server.attributes.iter().any(|kv| kv.key.as_str() == key),
                "{key} missing: {:?}",
                server.attributes
            );
        }
    }

    #[test]
    fn traceparent_parsing() {
        let ctx =
            parse_traceparent("00-48e5c3c1b1f0a0a0b0c0d0e0f0a1b2c3-9d36aa00bb11cc22-03").expect("valid");
        assert_eq!(ctx.span_id, SpanId::from_hex("9d36aa00bb11cc22").expect("hex"));
        assert_eq!(parse_traceparent(""), None);
        assert_eq!(parse_traceparent("00-00000000000000000000000000000000-9d36aa00bb11cc22-01"), None);
        assert_eq!(parse_traceparent("garbage"), None);
    }
}
