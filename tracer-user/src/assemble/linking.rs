//! Which span is whose parent: client↔server pairing by request bytes, W3C context, the serving
//! stack of each thread.

use std::{collections::VecDeque, hash::Hasher, sync::Arc};

use hashbrown::{HashMap, hash_map::Entry};
use opentelemetry::trace::{SpanId, TraceId};

use super::span::SpanContextLite;

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

/// A 64-bit hash of a request's bytes. FxHash's byte hash (rustc-hash 2) passes SMHasher and takes
/// a fraction of SipHash's time over a whole request, hashed twice per traced call.
fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

/// How long a client request waits for its server side before it stops being a candidate parent.
const MATCH_WINDOW_NS: u64 = 10_000_000_000;
/// How long a server request that found no client waits for one. Sends are reported when they
/// return, so on one host the server's read can be reported a little before the client's write
/// (microseconds; a drain or two of the ring buffer at most).
const LATE_CLIENT_WINDOW_NS: u64 = 200_000_000;
/// How much later than the server's read a client's write may be stamped. Where the probes read
/// sends inside the transfer (`sock:sock_send_length`), a send is stamped once its bytes are
/// queued; on one host the kernel delivers them to the reading socket and wakes the reader inside
/// the send, so the reader can return (and be stamped) first: by microseconds, or by as long as
/// the woken reader runs before the writer gets its CPU back — tens of milliseconds when the
/// cores are busy. The request bytes carry the client's identity and request id, so a wide
/// slack pairs nothing else.
const SEND_STAMP_SLACK_NS: u64 = 100_000_000;
/// Most client requests waiting for their server side; beyond, new ones are not offered.
const MAX_UNMATCHED: usize = 65_536;
/// Most threads serving at once (a stack each).
const MAX_SERVING_THREADS: usize = 65_536;

/// A server call's key: (pid, fd, request id).
type ServerCall = (u32, i32, u32);

/// Server spans open on one thread, with the object key each serves. A thread usually serves
/// one request at a time: the innermost is kept inline, so entering allocates nothing.
struct ServingStack {
    innermost: (SpanContextLite, Arc<[u8]>),
    /// The ones it is nested in, outermost first.
    outer: Vec<(SpanContextLite, Arc<[u8]>)>,
}

impl ServingStack {
    fn push(&mut self, entry: (SpanContextLite, Arc<[u8]>)) {
        self.outer.push(std::mem::replace(&mut self.innermost, entry));
    }

    /// Removes `context`; false when that emptied the stack.
    fn remove(&mut self, context: SpanContextLite) -> bool {
        self.outer.retain(|(ctx, _)| *ctx != context);
        if self.innermost.0 != context {
            return true;
        }
        match self.outer.pop() {
            Some(next) => {
                self.innermost = next;
                true
            }
            None => false,
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut (SpanContextLite, Arc<[u8]>)> {
        self.outer.iter_mut().chain(std::iter::once(&mut self.innermost))
    }
}

/// Entries waiting under one request fingerprint, oldest first. Usually one: it is kept inline,
/// so offering a request allocates nothing.
struct Window<T> {
    oldest: (u64, T),
    newer: VecDeque<(u64, T)>,
}

impl<T> Window<T> {
    fn new(entry: (u64, T)) -> Self {
        Window { oldest: entry, newer: VecDeque::new() }
    }

    fn len(&self) -> usize {
        1 + self.newer.len()
    }

    /// Takes the oldest entry; `None` when it was the last (the window is then empty).
    fn pop_front(&mut self) -> Option<(u64, T)> {
        let next = self.newer.pop_front()?;
        Some(std::mem::replace(&mut self.oldest, next))
    }

    /// Keeps the entries `keep` accepts; false when none is left.
    fn retain(&mut self, mut keep: impl FnMut(&(u64, T)) -> bool) -> bool {
        self.newer.retain(&mut keep);
        if keep(&self.oldest) {
            return true;
        }
        match self.newer.pop_front() {
            Some(next) => {
                self.oldest = next;
                true
            }
            None => false,
        }
    }
}

/// Takes the oldest entry of `key`'s window that `fits`, dropping the older ones that do not;
/// the window goes when emptied. `len` counts the entries of all windows.
fn take_oldest<T: Copy>(
    windows: &mut HashMap<u64, Window<T>>,
    len: &mut usize,
    key: u64,
    fits: impl Fn(u64) -> bool,
) -> Option<T> {
    let window = windows.get_mut(&key)?;
    loop {
        *len -= 1;
        match window.pop_front() {
            Some((at, value)) if fits(at) => return Some(value),
            Some(_) => {}
            None => {
                let (at, value) = window.oldest;
                windows.remove(&key);
                return fits(at).then_some(value);
            }
        }
    }
}

/// Linking state: per request fingerprint (expired after [`MATCH_WINDOW_NS`]), per thread
/// (freed when its last server span ends) and per process (freed at exit).
#[derive(Default)]
pub struct Linking {
    /// Client requests not yet seen arriving at a traced server, by request fingerprint.
    unmatched: HashMap<u64, Window<SpanContextLite>>,
    unmatched_len: usize,
    /// Server requests no client request had been seen for, by request fingerprint: (time read,
    /// the server call's key (pid, fd, request id)). Expired after [`LATE_CLIENT_WINDOW_NS`].
    early_servers: HashMap<u64, Window<ServerCall>>,
    early_servers_len: usize,
    /// Server spans being served, per (pid, tid), innermost last.
    serving: HashMap<(u32, u32), ServingStack>,
    /// Processes whose native telemetry sends W3C context (not traced twice).
    native_clients: HashMap<u32, ()>,
    /// Client requests not offered for pairing, or threads not followed, because a table was full.
    pub refused_full: u64,
}

impl Linking {
    /// The innermost server span `tid` of `pid` is serving, with its object key.
    pub fn serving(&self, pid: u32, tid: u32) -> Option<(SpanContextLite, &Arc<[u8]>)> {
        self.serving.get(&(pid, tid)).map(|stack| (stack.innermost.0, &stack.innermost.1))
    }

    /// `tid` of `pid` starts serving `context` for the device behind `object_key`.
    pub fn enter(&mut self, pid: u32, tid: u32, context: SpanContextLite, object_key: Arc<[u8]>) {
        match self.serving.get_mut(&(pid, tid)) {
            Some(stack) => stack.push((context, object_key)),
            None => {
                if crate::stats::has_room(self.serving.len(), MAX_SERVING_THREADS, &mut self.refused_full) {
                    let stack = ServingStack { innermost: (context, object_key), outer: Vec::new() };
                    self.serving.insert((pid, tid), stack);
                }
            }
        }
    }

    /// `tid` of `pid` ends serving `context`.
    pub fn leave(&mut self, pid: u32, tid: u32, context: SpanContextLite) {
        if let Some(stack) = self.serving.get_mut(&(pid, tid))
            && !stack.remove(context)
        {
            self.serving.remove(&(pid, tid));
        }
    }

    /// A client sent `bytes` at `ts_ns` as `context`: a server reading the same bytes is its child.
    pub fn offer_client(&mut self, bytes: &[u8], ts_ns: u64, context: SpanContextLite) {
        if !crate::stats::has_room(self.unmatched_len, MAX_UNMATCHED, &mut self.refused_full) {
            return;
        }
        match self.unmatched.entry(fingerprint(bytes)) {
            Entry::Occupied(mut window) => window.get_mut().newer.push_back((ts_ns, context)),
            Entry::Vacant(slot) => {
                slot.insert(Window::new((ts_ns, context)));
            }
        }
        self.unmatched_len += 1;
    }

    /// The oldest client request with the same bytes sent within the window, if any.
    pub fn take_client_match(&mut self, bytes: &[u8], ts_ns: u64) -> Option<SpanContextLite> {
        take_oldest(&mut self.unmatched, &mut self.unmatched_len, fingerprint(bytes), |sent| {
            sent <= ts_ns.saturating_add(SEND_STAMP_SLACK_NS) && ts_ns.saturating_sub(sent) <= MATCH_WINDOW_NS
        })
    }

    /// A server read `bytes` at `ts_ns` before any client was seen writing them: a client write
    /// reported just after may still be its parent.
    pub fn offer_server(&mut self, bytes: &[u8], ts_ns: u64, call: ServerCall) {
        if !crate::stats::has_room(self.early_servers_len, MAX_UNMATCHED, &mut self.refused_full) {
            return;
        }
        match self.early_servers.entry(fingerprint(bytes)) {
            Entry::Occupied(mut window) => window.get_mut().newer.push_back((ts_ns, call)),
            Entry::Vacant(slot) => {
                slot.insert(Window::new((ts_ns, call)));
            }
        }
        self.early_servers_len += 1;
    }

    /// The oldest server call that read `bytes`, written at `ts_ns`, before the write was reported.
    pub fn take_early_server(&mut self, bytes: &[u8], ts_ns: u64) -> Option<ServerCall> {
        if self.early_servers.is_empty() {
            return None;
        }
        take_oldest(&mut self.early_servers, &mut self.early_servers_len, fingerprint(bytes), |read| {
            ts_ns <= read.saturating_add(SEND_STAMP_SLACK_NS)
                && read.saturating_sub(ts_ns) <= LATE_CLIENT_WINDOW_NS
        })
    }

    /// `tid` of `pid` serves `old` under a new identity (its client was found late).
    pub fn rename_serving(&mut self, pid: u32, tid: u32, old: SpanContextLite, new: SpanContextLite) {
        if let Some(stack) = self.serving.get_mut(&(pid, tid)) {
            for (ctx, _) in stack.iter_mut().filter(|(ctx, _)| *ctx == old) {
                *ctx = new;
            }
        }
    }

    /// `pid` sends W3C context itself: its native telemetry traces its client calls.
    pub fn mark_native(&mut self, pid: u32) {
        self.native_clients.insert(pid, ());
    }

    pub fn is_native(&self, pid: u32) -> bool {
        self.native_clients.contains_key(&pid)
    }

    /// Forgets client requests that no traced server picked up (their server is elsewhere).
    pub fn expire(&mut self, now_ns: u64) {
        let mut len = 0;
        self.unmatched.retain(|_, window| {
            let kept = window.retain(|(sent, _)| now_ns.saturating_sub(*sent) <= MATCH_WINDOW_NS);
            if kept {
                len += window.len();
            }
            kept
        });
        self.unmatched_len = len;
        let mut len = 0;
        self.early_servers.retain(|_, window| {
            let kept = window.retain(|(read, _)| now_ns.saturating_sub(*read) <= LATE_CLIENT_WINDOW_NS);
            if kept {
                len += window.len();
            }
            kept
        });
        self.early_servers_len = len;
    }

    /// A process ended.
    pub fn on_exit(&mut self, pid: u32) {
        self.serving.retain(|&(p, _), _| p != pid);
        self.native_clients.remove(&pid);
    }

    pub fn report(&self, out: &mut crate::stats::StageStats) {
        out.size("assemble", "unmatched_request_entries", self.unmatched_len);
        out.size("assemble", "early_server_request_entries", self.early_servers_len);
        out.size("assemble", "serving_thread_entries", self.serving.len());
        out.size("assemble", "native_client_entries", self.native_clients.len());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn context(n: u8) -> SpanContextLite {
        SpanContextLite { trace_id: TraceId::from_bytes([n; 16]), span_id: SpanId::from_bytes([n; 8]) }
    }

    #[test]
    fn a_write_stamped_just_after_its_read_is_still_the_reads_parent() {
        let request = b"GIOP request bytes";
        let mut linking = Linking::default();
        // The write is stamped 3 us after the server's read returned (stamped when queued).
        linking.offer_client(request, 1_000_003_000, context(1));
        assert_eq!(linking.take_client_match(request, 1_000_000_000), Some(context(1)));
        // Far later than any delivery: not this read's write.
        linking.offer_client(request, 1_000_000_000 + 2 * SEND_STAMP_SLACK_NS, context(2));
        assert_eq!(linking.take_client_match(request, 1_000_000_000), None);
        // An earlier write still matches as before.
        linking.offer_client(request, 999_000_000, context(3));
        assert_eq!(linking.take_client_match(request, 1_000_000_000), Some(context(3)));
    }

    #[test]
    fn identical_requests_pair_oldest_first_and_stale_ones_are_skipped() {
        let request = b"GIOP same bytes";
        let mut linking = Linking::default();
        let second = 2 * MATCH_WINDOW_NS;
        linking.offer_client(request, 1_000, context(1));
        linking.offer_client(request, second, context(2));
        linking.offer_client(request, second + 10, context(3));
        // The first is too old for this read: dropped, and the next one pairs.
        assert_eq!(linking.take_client_match(request, second + 20), Some(context(2)));
        assert_eq!(linking.unmatched_len, 1);
        assert_eq!(linking.take_client_match(request, second + 30), Some(context(3)));
        assert_eq!(linking.take_client_match(request, second + 40), None);
        assert!(linking.unmatched.is_empty() && linking.unmatched_len == 0);
        // Expiry keeps the recent ones of a window, in order.
        linking.offer_client(request, 1_000, context(4));
        linking.offer_client(request, second, context(5));
        linking.offer_client(request, second + 10, context(6));
        linking.expire(second + 50);
        assert_eq!(linking.unmatched_len, 2);
        assert_eq!(linking.take_client_match(request, second + 60), Some(context(5)));
        assert_eq!(linking.take_client_match(request, second + 70), Some(context(6)));
        assert!(linking.unmatched.is_empty());
    }

    #[test]
    fn nested_serving_unwinds_in_any_order() {
        let mut linking = Linking::default();
        let key = |k: &[u8]| Arc::<[u8]>::from(k);
        linking.enter(1, 2, context(1), key(b"outer"));
        linking.enter(1, 2, context(2), key(b"middle"));
        linking.enter(1, 2, context(3), key(b"inner"));
        assert_eq!(linking.serving(1, 2).map(|(ctx, k)| (ctx, &**k)), Some((context(3), &b"inner"[..])));
        linking.rename_serving(1, 2, context(1), context(9));
        // A middle one ends first: the innermost stays.
        linking.leave(1, 2, context(2));
        assert_eq!(linking.serving(1, 2).map(|(ctx, _)| ctx), Some(context(3)));
        linking.leave(1, 2, context(3));
        assert_eq!(linking.serving(1, 2).map(|(ctx, k)| (ctx, &**k)), Some((context(9), &b"outer"[..])));
        linking.leave(1, 2, context(9));
        assert!(linking.serving(1, 2).is_none() && linking.serving.is_empty());
    }
}
