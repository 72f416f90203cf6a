//! User code inside a request: an INTERNAL span for each `always_executed_hook`, each attribute
//! read (`<Class>.<attribute>`) and each command execution (`<Class>.<Command>`), under the SERVER
//! span the thread was serving, in the order they ran — the view PyTango's Python telemetry gives,
//! for every device, from the libtango probe points (see `probe::userspans`).
//!
//! A start point opens a span on its thread; the matching end point closes it. A method that
//! throws never reaches its end point: its span ends at the thread's next point, or with the
//! request, as an error — with the exception the reply carries for it when there is one (the
//! command's `DevFailed`, the attribute's error in a `read_attributes` reply). The spans of a
//! request wait here until its SERVER span ends, and take its final trace id (a server span may
//! join its client's trace after its first hits) and device.
//!
//! Points hit while the thread serves no request (the polling thread, a device's own threads)
//! make no span: they are counted (`unserved_hits`). Such reads belong to no request, native
//! telemetry has no polling spans to match, and a root trace per poll would drown the requests.
//!
//! This stage owns the passes (the hits of one request, freed when its SERVER span ends or its
//! process is forgotten) and the span names made per process (interned: a name is
//! made once per process, not once per read).

use std::sync::Arc;

use hashbrown::HashMap;
use opentelemetry::{
    KeyValue, StringValue,
    trace::{SpanId, SpanKind},
};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tracer_common::user_code::point;
use tracer_wire::{cdr::CdrReader, giop, tango};

use crate::{
    assemble::{AssembledSpan, ExceptionEvent, Incomplete, SpanContextLite, naming::OperationClass},
    probe::record::UserCodeHit,
    stats::{StageStats, has_room},
};

/// Most threads with a request in progress and hits; beyond, new ones are refused (counted).
const MAX_PASSES: usize = 65_536;
/// Most spans one request keeps (a `read_attributes` of that many attributes); beyond, counted.
const MAX_SPANS_PER_PASS: usize = 4_096;
/// Most processes with interned names, and names per process (beyond: made per span, not kept).
const MAX_PROCESSES: usize = 65_536;
const MAX_NAMES_PER_PROCESS: usize = 4_096;
/// Largest reply kept to read the error of an attribute whose read threw.
const MAX_REPLY: usize = 64 * 1024;

/// The name of a method's span when the probe could not read the class.
const UNKNOWN_CLASS: &str = "unknown";

/// Counters of the stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct UserSpanStats {
    pub hits: u64,
    pub spans: u64,
    /// Hits on threads serving no request (polling, device threads): no span.
    pub unserved_hits: u64,
    /// End points with no open span of their kind (a lost record, or a start on another path).
    pub unmatched_ends: u64,
    /// Spans whose method did not return (ended at the next point or with the request).
    pub not_returned: u64,
    /// Start points whose class or member name could not be read.
    pub unreadable_names: u64,
    /// Passes or spans refused because a table was full.
    pub refused_full: u64,
}

/// What a span is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Hook,
    Read,
    Command,
}

impl Family {
    fn of_start(point: u8) -> Option<Family> {
        match point {
            point::HOOK_START => Some(Family::Hook),
            point::READ_START => Some(Family::Read),
            point::COMMAND_START => Some(Family::Command),
            _ => None,
        }
    }

    fn of_end(point: u8) -> Option<Family> {
        match point {
            point::HOOK_END => Some(Family::Hook),
            point::READ_END => Some(Family::Read),
            point::COMMAND_END => Some(Family::Command),
            _ => None,
        }
    }
}

/// A span's name and argument, made once per process.
#[derive(Debug)]
struct Member {
    name: String,
    /// The attribute or command (`tango.operation.argument`); none for the hook.
    argument: Option<StringValue>,
}

#[derive(Debug)]
struct Ran {
    family: Family,
    member: Arc<Member>,
    start_ns: u64,
    end_ns: u64,
    /// The end point was reached: the method returned.
    returned: bool,
}

/// The hits of one thread while it serves one request.
#[derive(Debug)]
struct Pass {
    /// (pid, tid) of the serving thread.
    thread: (u32, u32),
    open: Option<(Family, Arc<Member>, u64)>,
    ran: Vec<Ran>,
    /// The first bytes of the request's reply, kept when a method did not return.
    reply: Option<Vec<u8>>,
    /// Probe records were lost meanwhile: a missing end may be a lost record, not an exception.
    records_lost: bool,
}

impl Pass {
    fn close(&mut self, end_ns: u64, returned: bool) -> bool {
        let Some((family, member, start_ns)) = self.open.take() else {
            return false;
        };
        if self.ran.len() < MAX_SPANS_PER_PASS {
            self.ran.push(Ran { family, member, start_ns, end_ns: end_ns.max(start_ns), returned });
            true
        } else {
            false
        }
    }

    fn failed(&self) -> bool {
        self.open.is_some() || self.ran.iter().any(|r| !r.returned)
    }
}

/// The user-code stage.
#[derive(Default)]
pub struct UserSpans {
    ids: RandomIdGenerator,
    /// Passes by the SERVER span they belong to. A request's SERVER span reaches this stage at
    /// the release after its reply, when its thread may already serve the next request: passes
    /// are kept per request, not per thread.
    passes: HashMap<SpanId, Pass>,
    /// (pid, tid) → the request the thread serves now.
    current: HashMap<(u32, u32), SpanId>,
    /// Interned names per process, by (family, class, member) bytes.
    names: HashMap<u32, HashMap<Vec<u8>, Arc<Member>>>,
    /// The class of each device (pid, `DeviceImpl*`), named by its requests' hook points: an
    /// attribute read's point does not read it again.
    classes: HashMap<(u32, u64), Box<[u8]>>,
    /// Reused to build a name key without allocating.
    key: Vec<u8>,
    stats: UserSpanStats,
}

impl UserSpans {
    pub fn stats(&self) -> UserSpanStats {
        self.stats
    }

    /// Counters and table sizes.
    pub fn report(&self, out: &mut StageStats) {
        const STAGE: &str = "userspans";
        let s = self.stats;
        out.push(STAGE, "hits", s.hits);
        out.push(STAGE, "spans", s.spans);
        out.push(STAGE, "unserved_hits", s.unserved_hits);
        out.push(STAGE, "unmatched_ends", s.unmatched_ends);
        out.push(STAGE, "not_returned", s.not_returned);
        out.push(STAGE, "unreadable_names", s.unreadable_names);
        out.loss(STAGE, "refused_table_full", s.refused_full);
        out.size(STAGE, "pass_entries", self.passes.len());
        out.size(STAGE, "serving_thread_entries", self.current.len());
        out.size(STAGE, "name_process_entries", self.names.len());
        out.size(STAGE, "device_class_entries", self.classes.len());
    }

    /// A probe point hit; `serving` is the SERVER span the thread serves (from the assembly).
    pub fn push(&mut self, hit: &UserCodeHit<'_>, serving: Option<SpanContextLite>) {
        self.stats.hits += 1;
        if !hit.class.is_empty() && hit.device != 0 {
            self.learn_class(hit.pid, hit.device, &hit.class);
        }
        let Some(server) = serving else {
            self.stats.unserved_hits += 1;
            return;
        };
        let thread = (hit.pid, hit.tid);
        if !self.passes.contains_key(&server.span_id) {
            if !has_room(self.passes.len(), MAX_PASSES, &mut self.stats.refused_full) {
                return;
            }
            let pass = Pass { thread, open: None, ran: Vec::new(), reply: None, records_lost: false };
            self.passes.insert(server.span_id, pass);
            self.current.insert(thread, server.span_id);
        }
        if hit.point == point::HOOK_START && !hit.taken {
            // Every request passes the hook's branch; the device has no hook of its own.
            return;
        }
        if let Some(family) = Family::of_start(hit.point) {
            if hit.unreadable != 0 {
                self.stats.unreadable_names += 1;
            }
            let class: &[u8] = match &hit.class[..] {
                [] => self.classes.get(&(hit.pid, hit.device)).map_or(&[], |c| &c[..]),
                named => named,
            };
            let member = intern(&mut self.names, &mut self.key, (hit.pid, family), class, &hit.name);
            let Some(pass) = self.passes.get_mut(&server.span_id) else {
                return;
            };
            // An open span here means its method threw: it ends now, not returned.
            if pass.open.is_some() {
                self.stats.not_returned += 1;
                if !pass.close(hit.ts_ns, false) {
                    self.stats.refused_full += 1;
                }
            }
            pass.open = Some((family, member, hit.ts_ns));
        } else if let Some(family) = Family::of_end(hit.point) {
            let Some(pass) = self.passes.get_mut(&server.span_id) else {
                return;
            };
            if pass.open.as_ref().is_some_and(|(open, _, _)| *open == family) {
                if !pass.close(hit.ts_ns, true) {
                    self.stats.refused_full += 1;
                }
            } else {
                self.stats.unmatched_ends += 1;
            }
        }
    }

    /// Whether the thread's request had a method that did not return: its reply may carry the
    /// error (see [`UserSpans::note_reply`]).
    pub fn wants_reply(&self, pid: u32, tid: u32) -> bool {
        !self.current.is_empty()
            && self
                .current
                .get(&(pid, tid))
                .and_then(|id| self.passes.get(id))
                .is_some_and(|p| p.failed() && p.reply.is_none())
    }

    /// The first bytes of a reply the thread sent while its pass wanted one.
    pub fn note_reply(&mut self, pid: u32, tid: u32, bytes: &[u8]) {
        if let Some(pass) = self.current.get(&(pid, tid)).and_then(|id| self.passes.get_mut(id)) {
            pass.reply = Some(bytes.get(..MAX_REPLY.min(bytes.len())).unwrap_or_default().to_vec());
        }
    }

    /// Probe records were lost: a method whose end is missing may have returned.
    pub fn records_lost(&mut self) {
        for pass in self.passes.values_mut() {
            pass.records_lost = true;
        }
    }

    /// A SERVER span ended: the user-code spans of its request go to `out`, its children, in
    /// the order they ran. Cheap when no request has hits.
    pub fn on_server_end(&mut self, server: &AssembledSpan, out: &mut Vec<AssembledSpan>) {
        if self.passes.is_empty() || server.kind != SpanKind::Server {
            return;
        }
        let Some(mut pass) = self.passes.remove(&server.context.span_id) else {
            return;
        };
        let thread = pass.thread;
        if self.current.get(&thread) == Some(&server.context.span_id) {
            self.current.remove(&thread);
        }
        if pass.open.is_some() {
            // Still in the method when the request ended: it threw, or the request was cut short.
            self.stats.not_returned += 1;
            if !pass.close(server.end_ns, false) {
                self.stats.refused_full += 1;
            }
        }
        let errors =
            pass.reply.as_deref().map(|reply| attribute_errors(&server.name, reply)).unwrap_or_default();
        for ran in pass.ran {
            let mut attributes = Vec::with_capacity(2);
            if let Some(argument) = &ran.member.argument {
                attributes.push(KeyValue::new("tango.operation.argument", argument.clone()));
            }
            attributes.push(KeyValue::new("thread.id", thread.1.to_string()));
            let (exception, incomplete) = if ran.returned {
                (None, None)
            } else if let Some(why) = server.incomplete {
                (None, Some(why))
            } else if pass.records_lost {
                (None, Some(Incomplete::RecordsLost))
            } else {
                (Some(exception_of(&ran, server, &errors)), None)
            };
            let end_ns = if incomplete.is_some() { ran.start_ns } else { ran.end_ns };
            self.stats.spans += 1;
            out.push(AssembledSpan {
                name: ran.member.name.clone().into(),
                kind: SpanKind::Internal,
                context: SpanContextLite {
                    trace_id: server.context.trace_id,
                    span_id: self.ids.new_span_id(),
                },
                parent: Some(server.context),
                parent_is_remote: false,
                trace_state: server.trace_state.clone(),
                start_ns: ran.start_ns,
                end_ns,
                attributes,
                exception,
                links: Vec::new(),
                incomplete,
                pid: server.pid,
                device_key: server.device_key.clone(),
                target_key: None,
                operation: OperationClass::UserCode,
                request_argument: None,
            });
        }
    }

    /// A process is gone for good: its passes and names go.
    pub fn forget_process(&mut self, pid: u32) {
        self.passes.retain(|_, pass| pass.thread.0 != pid);
        self.current.retain(|thread, _| thread.0 != pid);
        self.names.remove(&pid);
        self.classes.retain(|(p, _), _| *p != pid);
    }

    fn learn_class(&mut self, pid: u32, device: u64, class: &[u8]) {
        let known = self.classes.get(&(pid, device)).is_some_and(|c| &c[..] == class);
        if !known
            && (self.classes.contains_key(&(pid, device))
                || has_room(self.classes.len(), MAX_PASSES, &mut self.stats.refused_full))
        {
            self.classes.insert((pid, device), class.into());
        }
    }
}

/// The span name and argument of a method, interned per process (`key` is reused scratch).
fn intern(
    names: &mut HashMap<u32, HashMap<Vec<u8>, Arc<Member>>>,
    key: &mut Vec<u8>,
    (pid, family): (u32, Family),
    class: &[u8],
    name: &[u8],
) -> Arc<Member> {
    key.clear();
    key.push(family as u8);
    key.extend_from_slice(class);
    key.push(0);
    key.extend_from_slice(name);
    if let Some(member) = names.get(&pid).and_then(|names| names.get(key.as_slice())) {
        return Arc::clone(member);
    }
    let class = if class.is_empty() { UNKNOWN_CLASS.into() } else { String::from_utf8_lossy(class) };
    let name = String::from_utf8_lossy(name);
    let member = Arc::new(match family {
        Family::Hook => Member { name: format!("{class}.always_executed_hook"), argument: None },
        Family::Read | Family::Command => {
            Member { name: format!("{class}.{name}"), argument: Some(StringValue::from(name.into_owned())) }
        }
    });
    if names.contains_key(&pid) || names.len() < MAX_PROCESSES {
        let names = names.entry(pid).or_default();
        if names.len() < MAX_NAMES_PER_PROCESS {
            names.insert(key.clone(), Arc::clone(&member));
        }
    }
    member
}

/// The error a method that did not return ended with: an attribute's own error in the reply,
/// else the reply's exception, else an unknown `DevFailed` (the span is an error either way).
fn exception_of(ran: &Ran, server: &AssembledSpan, errors: &[(String, String)]) -> ExceptionEvent {
    let attribute = match (&ran.family, &ran.member.argument) {
        (Family::Read, Some(argument)) => errors
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(argument.as_str()))
            .map(|(_, m)| m.clone()),
        _ => None,
    };
    let message = attribute
        .or_else(|| server.exception.as_ref().map(|e| e.message.clone()))
        .unwrap_or_else(|| "REASON:unknown;DESC:unknown;ORIGIN:unknown".to_string());
    ExceptionEvent { ts_ns: ran.end_ns, exception_type: "Tango::DevFailed".to_string(), message }
}

/// (attribute, first error as `REASON:…;DESC:…;ORIGIN:…`) of each attribute a `read_attributes`
/// reply reports failed; nothing for other replies or a reply cut short.
fn attribute_errors(server_span: &str, reply: &[u8]) -> Vec<(String, String)> {
    let Some(operation) = server_span.rsplit("::").next() else {
        return Vec::new();
    };
    if !operation.starts_with("read_attributes") && !operation.starts_with("write_read_attributes") {
        return Vec::new();
    }
    let Ok((_, giop::Message::Reply(reply))) = giop::parse_message(reply) else {
        return Vec::new();
    };
    if reply.status != giop::ReplyStatus::NoException {
        return Vec::new();
    }
    let body: CdrReader<'_> = reply.body;
    let Ok(readings) = tango::parse_attributes_reply(operation, body) else {
        return Vec::new();
    };
    readings
        .into_iter()
        .filter_map(|reading| {
            let error = reading.errors.first()?;
            Some((
                reading.name,
                format!("REASON:{};DESC:{};ORIGIN:{}", error.reason, error.desc, error.origin),
            ))
        })
        .collect()
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
    use std::borrow::Cow;

    use opentelemetry::trace::TraceId;

    use super::*;

    fn hit<'a>(tid: u32, ts_ns: u64, point: u8, class: &'a str, name: &'a str) -> UserCodeHit<'a> {
        UserCodeHit {
            pid: 10,
            tid,
            ts_ns,
            point,
            device: 0x1000,
            class: Cow::Borrowed(class.as_bytes()),
            name: Cow::Borrowed(name.as_bytes()),
            unreadable: 0,
            taken: true,
        }
    }

    fn server(span_id: u64, end_ns: u64) -> AssembledSpan {
        AssembledSpan {
            name: "Tango::Device_5Impl::read_attributes_5".into(),
            kind: SpanKind::Server,
            context: SpanContextLite { trace_id: TraceId::from(7u128), span_id: SpanId::from(span_id) },
            parent: None,
            parent_is_remote: false,
            trace_state: String::new(),
            start_ns: 0,
            end_ns,
            attributes: Vec::new(),
            exception: None,
            links: Vec::new(),
            incomplete: None,
            pid: 10,
            device_key: Some(b"test/demo/1"[..].into()),
            target_key: None,
            operation: OperationClass::User,
            request_argument: None,
        }
    }

    fn context(span_id: u64) -> Option<SpanContextLite> {
        Some(SpanContextLite { trace_id: TraceId::from(1u128), span_id: SpanId::from(span_id) })
    }

    fn argument(span: &AssembledSpan) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == "tango.operation.argument")
            .map(|kv| kv.value.to_string())
    }

    #[test]
    fn a_request_gives_its_hook_and_reads_in_order_under_its_server_span() {
        let mut stage = UserSpans::default();
        let serving = context(5);
        for h in [
            hit(20, 100, point::HOOK_START, "Demo", ""),
            hit(20, 2_100, point::HOOK_END, "", ""),
            // Attribute reads leave the class to the hook point of their request.
            hit(20, 2_200, point::READ_START, "", "fast"),
            hit(20, 3_200, point::READ_END, "", ""),
            hit(20, 3_300, point::READ_START, "", "slow"),
            hit(20, 23_300, point::READ_END, "", ""),
        ] {
            stage.push(&h, serving);
        }
        let mut out = Vec::new();
        // The server span ends with the trace id it took meanwhile: the children follow it.
        stage.on_server_end(&server(5, 30_000), &mut out);
        let names: Vec<_> = out.iter().map(|s| (&*s.name, s.end_ns - s.start_ns)).collect();
        assert_eq!(
            names,
            [("Demo.always_executed_hook", 2_000), ("Demo.fast", 1_000), ("Demo.slow", 20_000)]
        );
        assert!(out.iter().all(|s| s.context.trace_id == TraceId::from(7u128)
            && s.parent.unwrap().span_id == SpanId::from(5u64)
            && s.kind == SpanKind::Internal
            && s.exception.is_none()
            && s.device_key.as_deref() == Some(&b"test/demo/1"[..])));
        assert_eq!(argument(&out[1]).as_deref(), Some("fast"));
        assert_eq!(argument(&out[0]), None);
        assert_eq!(stage.passes.len() + stage.current.len(), 0);
    }

    /// Server spans reach the stage at the release after their reply: the thread has often
    /// served the next request by then.
    #[test]
    fn a_request_keeps_its_spans_while_its_thread_serves_the_next_one() {
        let mut stage = UserSpans::default();
        stage.push(&hit(20, 100, point::READ_START, "Demo", "a"), context(5));
        stage.push(&hit(20, 200, point::READ_END, "", ""), context(5));
        stage.push(&hit(20, 300, point::COMMAND_START, "Demo", "Go"), context(6));
        stage.push(&hit(20, 400, point::COMMAND_END, "", ""), context(6));
        let mut out = Vec::new();
        stage.on_server_end(&server(5, 250), &mut out);
        stage.on_server_end(&server(6, 450), &mut out);
        let names: Vec<_> = out.iter().map(|s| (&*s.name, s.parent.unwrap().span_id)).collect();
        assert_eq!(names, [("Demo.a", SpanId::from(5u64)), ("Demo.Go", SpanId::from(6u64))]);
        assert_eq!(stage.passes.len() + stage.current.len(), 0);
    }

    #[test]
    fn a_method_that_throws_ends_as_an_error_at_the_next_point_or_with_the_request() {
        let mut stage = UserSpans::default();
        let serving = context(6);
        // A device without a hook of its own: its hook point names the class, no span.
        stage.push(&UserCodeHit { taken: false, ..hit(21, 50, point::HOOK_START, "Demo", "") }, serving);
        stage.push(&hit(21, 100, point::COMMAND_START, "Demo", "Fail"), serving);
        assert!(stage.wants_reply(10, 21));
        let mut failed = server(6, 900);
        failed.name = "Tango::Device_4Impl::command_inout_4".into();
        failed.exception = Some(ExceptionEvent {
            ts_ns: 900,
            exception_type: "Tango::DevFailed".into(),
            message: "REASON:PyDs_PythonError;DESC:boom;ORIGIN:Demo.Fail".into(),
        });
        let mut out = Vec::new();
        stage.on_server_end(&failed, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((&*out[0].name, out[0].start_ns, out[0].end_ns), ("Demo.Fail", 100, 900));
        assert_eq!(
            out[0].exception.as_ref().unwrap().message,
            "REASON:PyDs_PythonError;DESC:boom;ORIGIN:Demo.Fail"
        );

        // A read that throws ends at the next read's start.
        let serving = context(8);
        stage.push(&hit(21, 1_000, point::READ_START, "Demo", "bad"), serving);
        stage.push(&hit(21, 1_500, point::READ_START, "Demo", "good"), serving);
        stage.push(&hit(21, 1_700, point::READ_END, "", ""), serving);
        let mut out = Vec::new();
        stage.on_server_end(&server(8, 2_000), &mut out);
        assert_eq!((out[0].end_ns, out[0].exception.is_some()), (1_500, true));
        assert!(out[1].exception.is_none());
        assert_eq!(stage.stats().not_returned, 2);
    }

    #[test]
    fn hits_outside_requests_and_unmatched_ends_are_counted_not_spans() {
        let mut stage = UserSpans::default();
        stage.push(&hit(30, 100, point::READ_START, "Demo", "polled"), None);
        stage.push(&hit(30, 200, point::READ_END, "", ""), None);
        stage.push(&hit(31, 300, point::READ_END, "", ""), context(9));
        let stats = stage.stats();
        assert_eq!((stats.hits, stats.unserved_hits, stats.unmatched_ends), (3, 2, 1));
        stage.forget_process(10);
        assert_eq!(stage.passes.len() + stage.current.len() + stage.names.len(), 0);
    }

    #[test]
    fn a_request_cut_short_leaves_its_open_method_incomplete_not_failed() {
        let mut stage = UserSpans::default();
        stage.push(&hit(22, 100, point::READ_START, "Demo", "slow"), context(11));
        let mut cut = server(11, 100);
        cut.incomplete = Some(Incomplete::ProcessExited);
        let mut out = Vec::new();
        stage.on_server_end(&cut, &mut out);
        assert_eq!(
            (out[0].incomplete, out[0].exception.is_none(), out[0].end_ns),
            (Some(Incomplete::ProcessExited), true, 100)
        );
    }
}
