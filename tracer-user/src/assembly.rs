//! Span assembly: GIOP messages of every traced process → Tango client and server spans.
//!
//! Roles come from direction: a process that writes a Request is its client, one that reads it is
//! its server. Request and Reply pair on (pid, fd, request id). The two ends of one call on this
//! host pair by the request's bytes (identical on both sides), so the server span becomes the
//! child of the client span without any instrumentation; a W3C `trace_parent` inside a CPP_6
//! `ClntIdent` wins when present. While a thread serves a request, the requests it sends are
//! children of that server span (omniORB serves a connection on one worker thread).
//!
//! The output is [`AssembledSpan`]s: everything but the resource, which [`crate::resources`]
//! resolves from the process and the device.

use std::{
    collections::{HashMap, VecDeque, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
};

use opentelemetry::{
    KeyValue,
    trace::{SpanId, SpanKind, TraceId},
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracer_wire::{
    cdr::CdrReader,
    giop::{self, Message, MessageAssembler, ReplyStatus},
    tango::{self, ArgValue, ClntIdent, LockerLanguage, TangoCall, TangoRequest},
};

use crate::{
    records::{Direction, Record},
    topics::{DATABASE_KEY, Operation, OperationClass},
};

/// How long a client request waits for its server side before it stops being a candidate parent.
const MATCH_WINDOW_NS: u64 = 10_000_000_000;

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

/// What is known of the device behind an object key, from `info` replies and database traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Device name (from the database; without one the key itself is the name).
    pub name: Option<String>,
    pub dev_class: Option<String>,
    /// `Server/instance`.
    pub server_id: Option<String>,
}

impl DeviceFacts {
    /// Keeps what `self` knows and adds what `other` knows besides.
    fn merge(&mut self, other: DeviceFacts) {
        if other.name.is_some() {
            self.name = other.name;
        }
        if other.dev_class.is_some() {
            self.dev_class = other.dev_class;
        }
        if other.server_id.is_some() {
            self.server_id = other.server_id;
        }
    }
}

/// Device properties: (name, values), names lowercased.
pub type Properties = Vec<(String, Vec<String>)>;

/// Configuration-relevant facts seen on the wire, for the daemon's configuration resolution.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// A `DbGetDeviceProperty` answer: the device's properties as the database returned them.
    DeviceProperties { device: String, properties: Properties },
    /// A command arrived at a device of server process `pid` (admin commands change telemetry).
    Command { pid: u32, object_key: Vec<u8>, command: String, argin: Option<ArgValue> },
    /// Process `pid` serves the device behind `object_key`.
    Serves { pid: u32, object_key: Vec<u8> },
    /// Process `pid` exported (started) `device` through the database.
    Exported { pid: u32, device: String },
}

/// Counters the daemon reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct AssemblyStats {
    pub messages: u64,
    pub unparsable: u64,
    /// Bytes skipped because they did not start or continue a GIOP message.
    pub discarded_bytes: u64,
    pub orphan_replies: u64,
    pub spans: u64,
    /// Tango event messages seen leaving servers and reaching clients.
    pub events_pushed: u64,
    pub events_delivered: u64,
    /// ZMQ heartbeats (not spans).
    pub heartbeats: u64,
}

#[derive(Debug)]
struct PendingCall {
    fd: i32,
    tid: u32,
    start_ns: u64,
    object_key: Vec<u8>,
    operation: String,
    request: TangoRequest,
    context: SpanContextLite,
    parent: Option<SpanContextLite>,
    parent_is_remote: bool,
    trace_state: String,
    /// For server calls: the serving device; for client calls: the device served by the thread.
    device_key: Option<Vec<u8>>,
    /// Native telemetry of the client already traces this call: emit no client span.
    suppressed: bool,
    /// Attributes learnt from the reply (event subscription endpoints).
    reply_attributes: Vec<KeyValue>,
}

/// Where and when a GIOP message was seen.
#[derive(Clone, Copy)]
struct Seen<'a> {
    pid: u32,
    tid: u32,
    fd: i32,
    ts_ns: u64,
    bytes: &'a [u8],
}

/// Server spans open on one thread, with the object key each serves; innermost last.
type ServingStack = Vec<(SpanContextLite, Vec<u8>)>;

#[derive(Default)]
struct Connection {
    assemblers: [Option<MessageAssembler>; 2],
}

/// Turns GIOP messages into spans; owns all per-process and per-connection state.
pub struct Assembler {
    max_keep: usize,
    pub(crate) ids: RandomIdGenerator,
    connections: HashMap<(u32, i32), Connection>,
    client_calls: HashMap<(u32, i32, u32), PendingCall>,
    server_calls: HashMap<(u32, i32, u32), PendingCall>,
    /// Server spans being served, per (pid, tid), innermost last.
    pub(crate) serving: HashMap<(u32, u32), ServingStack>,
    /// Client requests not yet seen arriving at a traced server, by request fingerprint.
    unmatched: HashMap<u64, VecDeque<(u64, SpanContextLite)>>,
    /// Processes seen serving requests.
    servers: HashMap<u32, ()>,
    /// Processes whose native telemetry sends W3C context (not traced twice).
    native_clients: HashMap<u32, ()>,
    pub(crate) devices: HashMap<Vec<u8>, DeviceFacts>,
    /// Peer addresses of server-side connections, resolved by the daemon from `/proc`.
    locations: HashMap<(u32, i32), String>,
    /// Server-side connections whose client is the daemon itself (its database queries).
    ignored: std::collections::HashSet<(u32, i32)>,
    pub(crate) finished: Vec<AssembledSpan>,
    observations: Vec<Observation>,
    /// (pid, object key) pairs already reported as served.
    pub(crate) served: std::collections::HashSet<(u32, Vec<u8>)>,
    pub(crate) stats: AssemblyStats,
    pub(crate) events: crate::events::EventState,
}

impl Assembler {
    /// `max_keep` bounds the bytes kept per message (the capture length).
    pub fn new(max_keep: usize) -> Self {
        Assembler {
            max_keep,
            ids: RandomIdGenerator::default(),
            connections: HashMap::new(),
            client_calls: HashMap::new(),
            server_calls: HashMap::new(),
            serving: HashMap::new(),
            unmatched: HashMap::new(),
            servers: HashMap::new(),
            native_clients: HashMap::new(),
            devices: HashMap::new(),
            locations: HashMap::new(),
            ignored: Default::default(),
            finished: Vec::new(),
            observations: Vec::new(),
            served: Default::default(),
            events: Default::default(),
            stats: AssemblyStats::default(),
        }
    }

    pub fn stats(&self) -> AssemblyStats {
        self.stats
    }

    /// Spans finished since the last call.
    pub fn drain(&mut self) -> Vec<AssembledSpan> {
        std::mem::take(&mut self.finished)
    }

    /// Observations made since the last call.
    pub fn drain_observations(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.observations)
    }

    /// Facts about the device behind `object_key`, when an `info` reply has shown them.
    pub fn device(&self, object_key: &[u8]) -> Option<&DeviceFacts> {
        self.devices.get(object_key)
    }

    /// Records facts about a device learnt elsewhere (database, a query of the daemon's own).
    pub fn learn_device(&mut self, object_key: Vec<u8>, facts: DeviceFacts) {
        self.devices.entry(object_key).or_default().merge(facts);
    }

    /// Learns object keys and names from database calls both ends see: `DbImportDevice` replies
    /// (`[name, IOR, version, server, host, class]`) and `DbExportDevice` arguments
    /// (`[name, IOR, host, pid, version]`).
    fn learn_from_database_call(&mut self, caller: u32, call: &PendingCall, reply: Option<&ArgValue>) {
        let TangoCall::CommandInout { command, argin } = &call.request.call else {
            return;
        };
        let from_ior = |ior: &str| tracer_wire::ior::parse_ior(ior).ok().map(|ior| ior.object_key);
        if command.eq_ignore_ascii_case("DbImportDevice")
            && let Some(ArgValue::LongStringArray { strings, .. }) = reply
            && let [name, ior, _version, server, _host, class, ..] = strings.as_slice()
            && let Some(key) = from_ior(ior)
        {
            let facts = DeviceFacts {
                name: Some(name.to_ascii_lowercase()),
                dev_class: Some(class.clone()),
                server_id: Some(server.clone()),
            };
            self.learn_device(key, facts);
        } else if command.eq_ignore_ascii_case("DbGetDeviceProperty")
            && let Some(ArgValue::StringArray(answer)) = reply
            && let Some((device, properties)) = parse_property_answer(answer)
        {
            self.observations.push(Observation::DeviceProperties { device, properties });
        } else if command.eq_ignore_ascii_case("DbExportDevice")
            && let Some(ArgValue::StringArray(args)) = argin
            && let [name, ior, ..] = args.as_slice()
            && let Some(key) = from_ior(ior)
        {
            self.learn_device(
                key,
                DeviceFacts { name: Some(name.to_ascii_lowercase()), ..Default::default() },
            );
            self.observations.push(Observation::Exported { pid: caller, device: name.to_ascii_lowercase() });
        }
    }

    /// Whether `pid` has served requests.
    pub fn is_server(&self, pid: u32) -> bool {
        self.servers.contains_key(&pid)
    }

    /// Whether `pid` sends W3C context itself (its native telemetry is on).
    pub fn is_natively_traced(&self, pid: u32) -> bool {
        self.native_clients.contains_key(&pid)
    }

    /// The daemon tells where the client of a server-side connection is (`giop:tcp:…`).
    pub fn set_location(&mut self, pid: u32, fd: i32, location: String) {
        self.locations.insert((pid, fd), location);
    }

    /// Requests arriving on this server-side connection come from the daemon: no spans.
    pub fn ignore_connection(&mut self, pid: u32, fd: i32) {
        self.ignored.insert((pid, fd));
    }

    /// Whether the daemon still needs to resolve the peer of this server-side connection.
    pub fn needs_location(&self, pid: u32, fd: i32) -> bool {
        !self.locations.contains_key(&(pid, fd))
    }

    /// Feeds one probe record.
    pub fn push(&mut self, record: &Record) {
        match record {
            Record::Data { pid, tid, fd, ts_ns, direction, total_len, bytes, .. } => {
                if !bytes.starts_with(b"GIOP") && !self.connections.contains_key(&(*pid, *fd)) {
                    // Not GIOP and not the rest of a GIOP message: ZMTP event frames.
                    let complete = bytes.len() >= *total_len as usize;
                    self.on_zmtp(*pid, *fd, *ts_ns, *direction, bytes, complete);
                    return;
                }
                let mut messages = Vec::new();
                let connection = self.connections.entry((*pid, *fd)).or_default();
                let slot = match direction {
                    Direction::Send => 0,
                    Direction::Recv => 1,
                };
                let assembler =
                    connection.assemblers[slot].get_or_insert_with(|| MessageAssembler::new(self.max_keep));
                let discarded = assembler.stats().discarded_bytes;
                assembler.push(bytes, *total_len as usize, &mut messages);
                self.stats.discarded_bytes += assembler.stats().discarded_bytes - discarded;
                for message in messages {
                    self.on_message(*pid, *tid, *fd, *ts_ns, *direction, &message.bytes);
                }
            }
            Record::Close { pid, fd, ts_ns } => self.on_close(*pid, *fd, *ts_ns),
            Record::Exit { pid, ts_ns } | Record::Exec { pid, ts_ns } => self.on_exit(*pid, *ts_ns),
            Record::ZmqSend { pid, tid, ts_ns } => self.on_zmq_send(*pid, *tid, *ts_ns),
            Record::LibOpened { .. }
            | Record::Fork { .. }
            | Record::ProcessFacts(_)
            | Record::LibraryPath { .. } => {}
        }
    }

    fn on_message(&mut self, pid: u32, tid: u32, fd: i32, ts_ns: u64, direction: Direction, bytes: &[u8]) {
        self.stats.messages += 1;
        let Ok((_, message)) = giop::parse_message(bytes) else {
            self.stats.unparsable += 1;
            return;
        };
        match (message, direction) {
            (Message::Request(request), Direction::Send) => {
                let parsed = tango::parse_request(request.operation, request.body.clone());
                self.on_client_request(Seen { pid, tid, fd, ts_ns, bytes }, &request, parsed);
            }
            (Message::Request(_), Direction::Recv) | (Message::Reply(_), Direction::Send)
                if self.ignored.contains(&(pid, fd)) => {}
            (Message::Request(request), Direction::Recv) => {
                let parsed = tango::parse_request(request.operation, request.body.clone());
                self.on_server_request(Seen { pid, tid, fd, ts_ns, bytes }, &request, parsed);
            }
            (Message::Reply(reply), Direction::Recv) => {
                match self.client_calls.remove(&(pid, fd, reply.request_id)) {
                    Some(call) => {
                        self.finish_call(pid, SpanKind::Client, call, ts_ns, reply.status, reply.body)
                    }
                    None => self.stats.orphan_replies += 1,
                }
            }
            (Message::Reply(reply), Direction::Send) => {
                match self.server_calls.remove(&(pid, fd, reply.request_id)) {
                    Some(call) => {
                        if let Some(stack) = self.serving.get_mut(&(pid, call.tid)) {
                            stack.retain(|(ctx, _)| *ctx != call.context);
                        }
                        self.finish_call(pid, SpanKind::Server, call, ts_ns, reply.status, reply.body);
                    }
                    None => self.stats.orphan_replies += 1,
                }
            }
            _ => {}
        }
    }

    fn on_client_request(&mut self, at: Seen<'_>, wire: &giop::Request<'_>, request: TangoRequest) {
        let Seen { pid, tid, fd, ts_ns, bytes } = at;
        let (request_id, object_key, operation) = (wire.request_id, wire.object_key, wire.operation);
        let response_expected = wire.response_expected;
        let serving = self.serving.get(&(pid, tid)).and_then(|stack| stack.last()).cloned();
        let (parent, device_key) = match serving {
            Some((ctx, key)) => (Some(ctx), Some(key)),
            None => (None, None),
        };
        let suppressed = match request.client_ident.as_ref().and_then(|c| c.trace_parent.as_deref()) {
            Some(tp) if !tp.is_empty() => {
                self.native_clients.insert(pid, ());
                true
            }
            _ => false,
        };
        let context = SpanContextLite {
            trace_id: parent.map(|p| p.trace_id).unwrap_or_else(|| self.ids.new_trace_id()),
            span_id: self.ids.new_span_id(),
        };
        if !suppressed {
            let window = self.unmatched.entry(fingerprint(bytes)).or_default();
            window.push_back((ts_ns, context));
        }
        let call = PendingCall {
            fd,
            tid,
            start_ns: ts_ns,
            object_key: object_key.to_vec(),
            operation: operation.to_string(),
            request,
            context,
            parent,
            parent_is_remote: false,
            trace_state: String::new(),
            device_key,
            suppressed,
            reply_attributes: Vec::new(),
        };
        if response_expected {
            self.client_calls.insert((pid, fd, request_id), call);
        } else {
            self.finish_call(
                pid,
                SpanKind::Client,
                call,
                ts_ns,
                ReplyStatus::NoException,
                CdrReader::new(&[], true, 0),
            );
        }
    }

    fn on_server_request(&mut self, at: Seen<'_>, wire: &giop::Request<'_>, request: TangoRequest) {
        let Seen { pid, tid, fd, ts_ns, bytes } = at;
        let (request_id, object_key, operation) = (wire.request_id, wire.object_key, wire.operation);
        let response_expected = wire.response_expected;
        self.servers.insert(pid, ());
        if self.served.insert((pid, object_key.to_vec())) {
            self.observations.push(Observation::Serves { pid, object_key: object_key.to_vec() });
        }
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
        let (parent, parent_is_remote) = match w3c {
            Some(ctx) => (Some(ctx), true),
            None => (self.take_client_match(bytes, ts_ns), false),
        };
        let trace_state =
            request.client_ident.as_ref().and_then(|c| c.trace_state.clone()).unwrap_or_default();
        let context = SpanContextLite {
            trace_id: parent.map(|p| p.trace_id).unwrap_or_else(|| self.ids.new_trace_id()),
            span_id: self.ids.new_span_id(),
        };
        self.serving.entry((pid, tid)).or_default().push((context, object_key.to_vec()));
        let call = PendingCall {
            fd,
            tid,
            start_ns: ts_ns,
            object_key: object_key.to_vec(),
            operation: operation.to_string(),
            request,
            context,
            parent,
            parent_is_remote,
            trace_state,
            device_key: Some(object_key.to_vec()),
            suppressed: false,
            reply_attributes: Vec::new(),
        };
        if response_expected {
            self.server_calls.insert((pid, fd, request_id), call);
        } else {
            if let Some(stack) = self.serving.get_mut(&(pid, tid)) {
                stack.retain(|(ctx, _)| *ctx != context);
            }
            self.finish_call(
                pid,
                SpanKind::Server,
                call,
                ts_ns,
                ReplyStatus::NoException,
                CdrReader::new(&[], true, 0),
            );
        }
    }

    /// The oldest client request with the same bytes sent within the window, if any.
    fn take_client_match(&mut self, bytes: &[u8], ts_ns: u64) -> Option<SpanContextLite> {
        let key = fingerprint(bytes);
        let window = self.unmatched.get_mut(&key)?;
        while let Some(&(sent, ctx)) = window.front() {
            window.pop_front();
            if sent <= ts_ns && ts_ns - sent <= MATCH_WINDOW_NS {
                if window.is_empty() {
                    self.unmatched.remove(&key);
                }
                return Some(ctx);
            }
        }
        self.unmatched.remove(&key);
        None
    }

    fn finish_call(
        &mut self,
        pid: u32,
        kind: SpanKind,
        mut call: PendingCall,
        end_ns: u64,
        status: ReplyStatus,
        body: CdrReader<'_>,
    ) {
        // Replies are parsed for what users see: Tango errors, device facts from `info`.
        let mut exception = None;
        let mut error = None;
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
                    self.learn_device(call.object_key.clone(), facts);
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
                } else if call.object_key == DATABASE_KEY && call.operation.starts_with("command_inout") {
                    let reply = tango::parse_command_reply(body).ok();
                    // The caller: this process on the client side, the ClntIdent's pid on the server side.
                    let caller = match kind {
                        SpanKind::Server => {
                            call.request.client_ident.as_ref().and_then(|c| c.pid).unwrap_or(0)
                        }
                        _ => pid,
                    };
                    self.learn_from_database_call(caller, &call, reply.as_ref());
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
            ReplyStatus::LocationForward
            | ReplyStatus::LocationForwardPerm
            | ReplyStatus::NeedsAddressingMode
            | ReplyStatus::Unknown(_) => {
                error = Some(format!("GIOP reply status {status:?}"));
            }
        }
        self.emit(pid, kind, call, end_ns, exception, error);
    }

    fn emit(
        &mut self,
        pid: u32,
        kind: SpanKind,
        mut call: PendingCall,
        end_ns: u64,
        exception: Option<ExceptionEvent>,
        error: Option<String>,
    ) {
        if call.suppressed || (kind == SpanKind::Client && self.native_clients.contains_key(&pid)) {
            return;
        }
        let operation = Operation::classify(&call.operation, &call.object_key, &call.request.call);
        let is_server = kind == SpanKind::Server;
        let (name, mut attributes) =
            if is_server { server_span(&call, &operation) } else { client_span(&call, &operation) };
        attributes.extend(subscription_attributes(&call.request.call));
        attributes.append(&mut call.reply_attributes);
        if is_server {
            if let Some(ident) = &call.request.client_ident {
                attributes.extend(client_ident_attributes(ident));
            }
            if let Some(location) = self.locations.get(&(pid, call.fd)) {
                attributes.push(KeyValue::new("tango.client_ident.location", location.clone()));
            }
        }
        self.stats.spans += 1;
        self.finished.push(AssembledSpan {
            name,
            kind,
            context: call.context,
            parent: call.parent,
            parent_is_remote: call.parent_is_remote,
            trace_state: call.trace_state,
            start_ns: call.start_ns,
            end_ns: end_ns.max(call.start_ns),
            attributes,
            exception,
            links: Vec::new(),
            error,
            pid,
            target_key: (!is_server).then(|| call.object_key.clone()),
            device_key: call.device_key,
            operation: operation.class,
        });
    }

    /// A connection closed: its calls still waiting for a reply end in error.
    fn on_close(&mut self, pid: u32, fd: i32, ts_ns: u64) {
        self.forget_zmtp_stream(pid, fd);
        self.connections.remove(&(pid, fd));
        self.locations.remove(&(pid, fd));
        self.ignored.remove(&(pid, fd));
        self.fail_pending(|&(p, f, _)| p == pid && f == fd, ts_ns, "connection closed before the reply");
    }

    /// A process ended: everything it had in flight ends in error and its state is freed.
    fn on_exit(&mut self, pid: u32, ts_ns: u64) {
        self.fail_pending(|&(p, _, _)| p == pid, ts_ns, "process exited before the reply");
        self.connections.retain(|&(p, _), _| p != pid);
        self.locations.retain(|&(p, _), _| p != pid);
        self.ignored.retain(|&(p, _)| p != pid);
        self.serving.retain(|&(p, _), _| p != pid);
        self.servers.remove(&pid);
        self.native_clients.remove(&pid);
        self.forget_events(pid);
    }

    fn fail_pending(&mut self, matches: impl Fn(&(u32, i32, u32)) -> bool, ts_ns: u64, why: &str) {
        let client_keys: Vec<_> = self.client_calls.keys().filter(|k| matches(k)).copied().collect();
        for key in client_keys {
            if let Some(call) = self.client_calls.remove(&key) {
                self.emit(key.0, SpanKind::Client, call, ts_ns, None, Some(why.to_string()));
            }
        }
        let server_keys: Vec<_> = self.server_calls.keys().filter(|k| matches(k)).copied().collect();
        for key in server_keys {
            if let Some(call) = self.server_calls.remove(&key) {
                if let Some(stack) = self.serving.get_mut(&(key.0, call.tid)) {
                    stack.retain(|(ctx, _)| *ctx != call.context);
                }
                self.emit(key.0, SpanKind::Server, call, ts_ns, None, Some(why.to_string()));
            }
        }
    }

    /// Forgets client requests that no traced server picked up (their server is elsewhere).
    pub fn expire(&mut self, now_ns: u64) {
        self.unmatched.retain(|_, window| {
            window.retain(|(sent, _)| now_ns.saturating_sub(*sent) <= MATCH_WINDOW_NS);
            !window.is_empty()
        });
    }

    /// Ends every call still open (daemon shutdown): nothing is lost.
    pub fn flush_all(&mut self, now_ns: u64) {
        self.fail_pending(|_| true, now_ns, "tracer stopped before the reply");
    }
}

/// `DbGetDeviceProperty` answers `[device, N, name₁, n₁, value…, name₂, n₂, value…, …]`.
pub fn parse_property_answer(answer: &[String]) -> Option<(String, Properties)> {
    let mut items = answer.iter();
    let device = items.next()?.to_ascii_lowercase();
    let count: usize = items.next()?.trim().parse().ok()?;
    let mut properties = Vec::new();
    let mut items = items.peekable();
    for _ in 0..count {
        let name = items.next()?.to_ascii_lowercase();
        let values: usize = items.next()?.trim().parse().ok()?;
        let values: Vec<String> = items.by_ref().take(values).cloned().collect();
        // An undefined property answers a count of 0 and a " " placeholder.
        if values.is_empty() && items.peek().is_some_and(|v| v.as_str() == " ") {
            items.next();
        }
        properties.push((name, values));
    }
    Some((device, properties))
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// The admin-device command a client sends to subscribe to (or unsubscribe from) events.
pub const SUBSCRIPTION_COMMAND: &str = "ZmqEventSubscriptionChange";

/// `ZmqEventSubscriptionChange [device, attribute, action, event type, …]` as span attributes.
fn subscription_attributes(call: &TangoCall) -> Vec<KeyValue> {
    let TangoCall::CommandInout { command, argin: Some(ArgValue::StringArray(args)) } = call else {
        return Vec::new();
    };
    if !command.eq_ignore_ascii_case(SUBSCRIPTION_COMMAND) {
        return Vec::new();
    }
    let mut attributes = Vec::new();
    let names = ["tango.event.device", "tango.event.attribute", "tango.event.action", "tango.event.type"];
    for (name, value) in names.iter().zip(args) {
        attributes.push(KeyValue::new(*name, value.to_ascii_lowercase()));
    }
    attributes
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
pub fn parse_traceparent(text: &str) -> Option<SpanContextLite> {
    let mut parts = text.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let _flags = parts.next()?;
    if version.len() != 2 || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID)
        .then_some(SpanContextLite { trace_id, span_id })
}

fn client_ident_attributes(ident: &ClntIdent) -> Vec<KeyValue> {
    let mut attributes = Vec::new();
    let lang = match ident.lang {
        LockerLanguage::Cpp | LockerLanguage::Cpp6 => "CPP",
        LockerLanguage::Java | LockerLanguage::Java6 => "JAVA",
        LockerLanguage::Unknown(_) => "UNKNOWN",
    };
    if let Some(pid) = ident.pid {
        attributes.push(KeyValue::new("tango.client_ident.pid", i64::from(pid)));
    }
    attributes.push(KeyValue::new("tango.client_ident.lang", lang));
    if let Some(class) = &ident.java_main_class {
        attributes.push(KeyValue::new("tango.client_ident.java_class", class.clone()));
    }
    if let Some(uuid) = ident.java_uuid {
        attributes.push(KeyValue::new(
            "tango.client_ident.java_ident",
            format!("{:016x}{:016x}", uuid[0], uuid[1]),
        ));
    }
    attributes
}

/// Server span name and attributes, as cppTango 10.3 names its servant methods.
fn server_span(call: &PendingCall, operation: &Operation) -> (String, Vec<KeyValue>) {
    let mut attributes = Vec::new();
    if let TangoCall::CommandInout { command, .. } = &call.request.call {
        attributes.push(KeyValue::new("tango.operation.argument", command.clone()));
    }
    (operation.server_span_name(), attributes)
}

/// Client span name and attributes, as cppTango 10.3's DeviceProxy/Connection name them.
/// `tango.operation.target` is added by the resource resolution, which maps object keys to names.
fn client_span(call: &PendingCall, operation: &Operation) -> (String, Vec<KeyValue>) {
    let mut attributes = Vec::new();
    if let Some(argument) = operation.client_argument(&call.request.call) {
        attributes.push(KeyValue::new("tango.operation.argument", argument));
    }
    attributes.push(KeyValue::new("thread.id", call.tid.to_string()));
    (operation.client_span_name(&call.request.call), attributes)
}

#[cfg(test)]
mod tests {
    //! Real GIOP messages captured from PyTango 10.3.1 (the parsers' fixtures), replayed as the
    //! probes would report them from a client and a server process.

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

    fn data(pid: u32, tid: u32, fd: i32, ts_ns: u64, direction: Direction, bytes: &[u8]) -> Record {
        Record::Data {
            pid,
            tid,
            fd,
            ts_ns,
            direction,
            total_len: bytes.len() as u32,
            bytes: bytes.to_vec(),
            peer: Default::default(),
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
        let facts = a.device(b"test/demo/1").expect("device facts");
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
        let (key, facts) = a.devices.iter().next().expect("one device learnt");
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

    #[test]
    fn a_client_that_exits_mid_call_still_gets_its_span() {
        let mut a = Assembler::new(2048);
        let request = with_request_id(fixture("demo-req-read_attributes_5"), 8);
        a.push(&data(CLIENT, CLIENT, 7, 1_000, Direction::Send, &request));
        a.push(&Record::Exit { pid: CLIENT, ts_ns: 5_000 });
        let spans = a.drain();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].error.as_deref(), Some("process exited before the reply"));
        assert_eq!(spans[0].end_ns, 5_000);
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
