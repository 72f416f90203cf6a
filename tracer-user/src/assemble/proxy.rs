//! `Tango::DeviceProxy::DeviceProxy`: the INTERNAL span cppTango opens around the construction of
//! a proxy, recognised per client thread from the operations the thread sends.
//!
//! What a construction sends (PyTango 10.3.1, cppTango 10.3.3):
//!
//! - without a database (`tango://host:port/dev#dbase=no`): `_is_a`, `_non_existent`, `info` to
//!   the device's key; the constructor returns with the `info` reply;
//! - through a database: the first proxy of a process connects to the database first (`_is_a`,
//!   `_non_existent`, `info`, `command_query`, … on key `database`), then every proxy imports
//!   the device (`DbImportDevice`, `DbGetProperty`, …, children of the span natively) and ends with
//!   `_non_existent`, `info` to the device's (opaque) key.
//!
//! The state is per (pid, tid), freed when the construction ends, the process exits or the
//! tracer stops. The span's argument is reconstructed: the `DbImportDevice` name, or
//! `tango://<peer address>:<port>/<device>#dbase=no` from the connection and the object key.

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use opentelemetry::{KeyValue, trace::SpanKind};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tracer_wire::tango::{ArgValue, TangoCall};

use super::{
    naming::{DATABASE_KEY, OperationClass},
    span::{AssembledSpan, ExceptionEvent, Incomplete, SpanContextLite},
};
use crate::{
    probe::record::Peer,
    stats::{StageStats, has_room},
};

/// The span's name, as cppTango names it.
pub const SPAN_NAME: &str = "Tango::DeviceProxy::DeviceProxy";
/// Most threads followed at once; beyond, their constructions are not traced (counted).
const MAX_THREADS: usize = 65_536;
/// A construction with no end for this long ends incomplete (its calls expire at the same age).
const CONSTRUCTION_LIMIT_NS: u64 = 600_000_000_000;

/// What a construction is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connecting to the database: the first step of a proxy only if a `DbImportDevice` follows.
    Database,
    /// Importing the device from the database.
    Importing,
    /// Talking to the device itself (`_is_a`, `_non_existent`, `info`).
    Connecting,
}

#[derive(Debug)]
struct Construction {
    phase: Phase,
    start_ns: u64,
    context: SpanContextLite,
    /// The serving span when the proxy is built inside a request.
    parent: Option<SpanContextLite>,
    /// The served device when built inside a request (the span carries its resource).
    device_key: Option<Arc<[u8]>>,
    /// The device name given to `DbImportDevice`.
    imported: Option<String>,
    /// The device's object key as text (or the admin name as the server spells it).
    path: Option<String>,
    target_key: Option<Vec<u8>>,
    /// (fd, request id) of the `DbImportDevice` call: its failure fails the construction.
    import_call: Option<(i32, u32)>,
    /// (fd, request id) of the `info` call whose reply ends the construction.
    awaiting: Option<(i32, u32)>,
    /// Set when probe records were lost: the record time after which it ends incomplete.
    loss_deadline: Option<u64>,
    /// The server's address, from the replies to its calls.
    peer: Peer,
}

impl Construction {
    fn confirmed(&self) -> bool {
        self.phase != Phase::Database
    }
}

#[derive(Debug, Default)]
struct ThreadState {
    construction: Option<Construction>,
    /// The admin device's name as its server spells it (a `_get_adm_name` reply): cppTango builds
    /// the admin proxy of an event subscription from it, starting with the thread's next request.
    admin_name: Option<AdminName>,
}

/// A `_get_adm_name` reply waiting for the construction it names.
#[derive(Debug)]
struct AdminName {
    name: String,
    /// (fd, request id) of the `_get_adm_name` call: the end of any other call forgets the name.
    call: (i32, u32),
    /// When the reply arrived: an unused name expires with the construction age limit.
    noted_ns: u64,
}

impl ThreadState {
    fn is_empty(&self) -> bool {
        self.construction.is_none() && self.admin_name.is_none()
    }
}

/// One request a client thread sent.
pub struct Sent<'a> {
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub request_id: u32,
    pub ts_ns: u64,
    pub object_key: &'a [u8],
    pub operation: &'a str,
    pub call: &'a TangoCall,
}

/// How a call of a construction ended.
pub enum CallEnd<'a> {
    /// Its reply arrived; `exception` when it was a Tango or CORBA exception.
    Reply { ts_ns: u64, peer: Peer, exception: Option<&'a ExceptionEvent> },
    /// Its end was not seen.
    Incomplete(Incomplete),
}

/// What a request means to a construction.
enum Step<'a> {
    /// `_is_a`/`_non_existent` to the database.
    DatabaseProbe,
    /// `DbImportDevice(name)`.
    Import(&'a str),
    /// Any other call to the database.
    DatabaseOther,
    /// `_is_a`/`_non_existent` to a device.
    Probe,
    /// `info` to a device.
    Info,
    Other,
}

impl<'a> Step<'a> {
    fn of(object_key: &[u8], operation: &str, call: &'a TangoCall) -> Step<'a> {
        let probe = operation == "_is_a" || operation == "_non_existent";
        if object_key == DATABASE_KEY {
            return match call {
                _ if probe => Step::DatabaseProbe,
                TangoCall::CommandInout { command, argin: Some(ArgValue::String(name)) }
                    if command.eq_ignore_ascii_case("DbImportDevice") =>
                {
                    Step::Import(name)
                }
                _ => Step::DatabaseOther,
            };
        }
        if probe {
            Step::Probe
        } else if operation.starts_with("info") {
            Step::Info
        } else {
            Step::Other
        }
    }
}

/// DeviceProxy constructions in progress, per client thread.
#[derive(Default)]
pub struct Constructions {
    threads: HashMap<(u32, u32), ThreadState>,
    /// Threads not followed because the table was full.
    pub refused_full: u64,
}

impl Constructions {
    /// A client thread sends a request: advances its construction (ending one the thread left,
    /// into `out`). Returns the span the call is a child of when it belongs to a construction.
    pub fn on_request(
        &mut self,
        sent: &Sent<'_>,
        serving: Option<(SpanContextLite, &Arc<[u8]>)>,
        ids: &RandomIdGenerator,
        out: &mut Vec<AssembledSpan>,
    ) -> Option<SpanContextLite> {
        let step = Step::of(sent.object_key, sent.operation, sent.call);
        let thread = (sent.pid, sent.tid);
        if !self.threads.contains_key(&thread) {
            // Nothing in progress: only the first step of a construction makes state.
            if matches!(step, Step::Info | Step::Other | Step::DatabaseOther)
                || !has_room(self.threads.len(), MAX_THREADS, &mut self.refused_full)
            {
                return None;
            }
        }
        let state = self.threads.entry(thread).or_default();
        let mut current = state.construction.take();
        if let Some(construction) = current.as_mut() {
            let stays = match (&step, construction.phase) {
                (Step::DatabaseProbe | Step::DatabaseOther, Phase::Database | Phase::Importing) => true,
                (Step::Import(name), Phase::Database) => {
                    construction.phase = Phase::Importing;
                    construction.imported = Some(name.to_string());
                    construction.import_call = Some((sent.fd, sent.request_id));
                    true
                }
                (Step::Import(_), Phase::Importing) => true,
                (Step::Probe | Step::Info, Phase::Importing) => {
                    construction.phase = Phase::Connecting;
                    construction.target_key = Some(sent.object_key.to_vec());
                    true
                }
                (Step::Probe | Step::Info, Phase::Connecting) => {
                    construction.target_key.as_deref() == Some(sent.object_key)
                }
                _ => false,
            };
            if !stays {
                // The thread went on: a construction ends unseen, a database connection was
                // not a proxy's.
                if let Some(left) = current.take()
                    && left.confirmed()
                {
                    out.push(finish(sent.pid, sent.tid, left, End::Incomplete(Incomplete::EndNotSeen)));
                }
            }
        }
        if current.is_none() {
            current = start(&step, sent, serving, state.admin_name.take().map(|a| a.name), ids);
        }
        let parent = match current.as_mut() {
            Some(construction) if construction.confirmed() => {
                if matches!(step, Step::Info) && construction.phase == Phase::Connecting {
                    construction.awaiting = Some((sent.fd, sent.request_id));
                }
                Some(construction.context)
            }
            _ => None,
        };
        state.construction = current;
        if state.is_empty() {
            self.threads.remove(&thread);
        }
        parent
    }

    /// A client call of thread `tid` ended; a construction it belongs to (`parent`) may end
    /// with it (into `out`).
    pub fn on_call_end(
        &mut self,
        (pid, tid): (u32, u32),
        call: (i32, u32),
        parent: Option<SpanContextLite>,
        end: CallEnd<'_>,
        out: &mut Vec<AssembledSpan>,
    ) {
        let Some(state) = self.threads.get_mut(&(pid, tid)) else {
            return;
        };
        // A construction takes the name at its first request, before any later call ends.
        if state.admin_name.as_ref().is_some_and(|admin| admin.call != call) {
            state.admin_name = None;
        }
        let ends = match state.construction.as_mut() {
            Some(construction) if parent == Some(construction.context) => {
                construction_end(construction, call, end)
            }
            _ => None,
        };
        if let Some(end) = ends
            && let Some(construction) = state.construction.take()
        {
            out.push(finish(pid, tid, construction, end));
        }
        if state.is_empty() {
            self.threads.remove(&(pid, tid));
        }
    }

    /// A `_get_adm_name` call `call` of thread `tid` answered `name` at `ts_ns`: the admin proxy
    /// cppTango may build next is named so.
    pub fn note_admin_name(&mut self, (pid, tid): (u32, u32), call: (i32, u32), ts_ns: u64, name: String) {
        if self.threads.contains_key(&(pid, tid))
            || has_room(self.threads.len(), MAX_THREADS, &mut self.refused_full)
        {
            self.threads.entry((pid, tid)).or_default().admin_name =
                Some(AdminName { name, call, noted_ns: ts_ns });
        }
    }

    /// Probe records were lost: constructions in progress end incomplete unless they end by
    /// `deadline_ns`.
    pub fn records_lost(&mut self, deadline_ns: u64) {
        for construction in self.threads.values_mut().filter_map(|t| t.construction.as_mut()) {
            construction.loss_deadline.get_or_insert(deadline_ns);
        }
    }

    /// Ends constructions past their loss deadline or the age limit.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<AssembledSpan>) {
        let limit = now_ns.saturating_sub(CONSTRUCTION_LIMIT_NS);
        let why = |_: &(u32, u32), c: &Construction| {
            if c.loss_deadline.is_some_and(|d| d <= now_ns) {
                Some(Incomplete::RecordsLost)
            } else {
                (c.start_ns < limit).then_some(Incomplete::NoReply)
            }
        };
        self.end_where(why, out);
        // A `_get_adm_name` answered on a thread that called nothing since.
        self.threads.retain(|_, state| {
            if state.admin_name.as_ref().is_some_and(|admin| admin.noted_ns < limit) {
                state.admin_name = None;
            }
            !state.is_empty()
        });
    }

    /// A process ended: its constructions end incomplete, its threads are forgotten.
    pub fn on_exit(&mut self, pid: u32, out: &mut Vec<AssembledSpan>) {
        self.end_where(|&(p, _), _| (p == pid).then_some(Incomplete::ProcessExited), out);
        self.threads.retain(|&(p, _), _| p != pid);
    }

    /// The tracer stops: every construction ends incomplete.
    pub fn flush_all(&mut self, out: &mut Vec<AssembledSpan>) {
        self.end_where(|_, _| Some(Incomplete::TracerStopped), out);
        self.threads.clear();
    }

    /// Ends the constructions `why` gives a reason for; a database connection that was not
    /// yet a proxy's is dropped without a span.
    fn end_where(
        &mut self,
        why: impl Fn(&(u32, u32), &Construction) -> Option<Incomplete>,
        out: &mut Vec<AssembledSpan>,
    ) {
        let mut emptied = Vec::new();
        for (&(pid, tid), state) in &mut self.threads {
            let reason = state.construction.as_ref().and_then(|c| why(&(pid, tid), c));
            if let Some(reason) = reason
                && let Some(construction) = state.construction.take()
            {
                if construction.confirmed() {
                    out.push(finish(pid, tid, construction, End::Incomplete(reason)));
                }
                if state.is_empty() {
                    emptied.push((pid, tid));
                }
            }
        }
        for thread in emptied {
            self.threads.remove(&thread);
        }
    }

    pub fn report(&self, out: &mut StageStats) {
        out.size("assemble", "proxy_thread_entries", self.threads.len());
    }
}

/// How a call of `construction` ending (`call`, `end`) ends the construction, if it does.
fn construction_end(construction: &mut Construction, call: (i32, u32), end: CallEnd<'_>) -> Option<End> {
    if let CallEnd::Reply { peer: peer @ (Peer::Inet(..) | Peer::Unix), .. } = &end {
        construction.peer = *peer;
    }
    match end {
        CallEnd::Incomplete(why) => Some(End::Incomplete(why)),
        CallEnd::Reply { ts_ns, exception: Some(exception), .. }
            if construction.phase == Phase::Connecting || construction.import_call == Some(call) =>
        {
            Some(End::Failed(ts_ns, exception.clone()))
        }
        CallEnd::Reply { ts_ns, exception: None, .. } if construction.awaiting == Some(call) => {
            Some(End::Done(ts_ns))
        }
        CallEnd::Reply { .. } => None,
    }
}

/// The construction a first step starts, if it is one.
fn start(
    step: &Step<'_>,
    sent: &Sent<'_>,
    serving: Option<(SpanContextLite, &Arc<[u8]>)>,
    admin_name: Option<String>,
    ids: &RandomIdGenerator,
) -> Option<Construction> {
    let (phase, imported) = match step {
        Step::DatabaseProbe => (Phase::Database, None),
        Step::Import(name) => (Phase::Importing, Some(name.to_string())),
        Step::Probe => (Phase::Connecting, None),
        Step::Info | Step::Other | Step::DatabaseOther => return None,
    };
    let parent = serving.map(|(ctx, _)| ctx);
    let context = SpanContextLite {
        trace_id: parent.map(|p| p.trace_id).unwrap_or_else(|| ids.new_trace_id()),
        span_id: ids.new_span_id(),
    };
    let is_device = phase == Phase::Connecting;
    let key_text = is_device.then(|| std::str::from_utf8(sent.object_key).ok()).flatten();
    // cppTango builds the admin proxy's name from `_get_adm_name`, as the server spells it.
    let path = match (key_text, admin_name) {
        (Some(key), Some(admin)) if admin.eq_ignore_ascii_case(key) => Some(admin),
        (Some(key), _) if key.chars().all(|c| c.is_ascii_graphic()) && !key.is_empty() => {
            Some(key.to_string())
        }
        _ => None,
    };
    Some(Construction {
        phase,
        start_ns: sent.ts_ns,
        context,
        parent,
        device_key: serving.map(|(_, key)| Arc::clone(key)),
        import_call: imported.is_some().then_some((sent.fd, sent.request_id)),
        imported,
        path,
        target_key: is_device.then(|| sent.object_key.to_vec()),
        awaiting: None,
        loss_deadline: None,
        peer: Peer::Unknown,
    })
}

/// How a construction ended.
enum End {
    /// The `info` reply arrived at `ts_ns`.
    Done(u64),
    /// One of its calls failed.
    Failed(u64, ExceptionEvent),
    Incomplete(Incomplete),
}

fn finish(pid: u32, tid: u32, construction: Construction, end: End) -> AssembledSpan {
    let (end_ns, exception, incomplete) = match end {
        End::Done(ts_ns) => (ts_ns, None, None),
        End::Failed(ts_ns, exception) => (ts_ns, Some(exception), None),
        // No invented duration: it ends when it started.
        End::Incomplete(why) => (construction.start_ns, None, Some(why)),
    };
    let argument = match (construction.imported, construction.path, construction.peer) {
        (Some(name), _, _) => Some(name),
        (None, Some(path), Peer::Inet(ip, port)) => Some(format!("tango://{ip}:{port}/{path}#dbase=no")),
        (None, path, _) => path,
    };
    let mut attributes = Vec::with_capacity(2);
    if let Some(argument) = argument {
        attributes.push(KeyValue::new("tango.operation.argument", argument));
    }
    attributes.push(KeyValue::new("thread.id", tid.to_string()));
    AssembledSpan {
        name: Cow::Borrowed(SPAN_NAME),
        kind: SpanKind::Internal,
        context: construction.context,
        parent: construction.parent,
        parent_is_remote: false,
        trace_state: String::new(),
        start_ns: construction.start_ns,
        end_ns: end_ns.max(construction.start_ns),
        attributes,
        exception,
        links: Vec::new(),
        incomplete,
        pid,
        device_key: construction.device_key,
        target_key: None,
        operation: OperationClass::User,
        request_argument: None,
    }
}
