//! The export hub: one backlog and one worker per destination.
//!
//! [`ExportHub::submit`] is called from the assembly's hot path. Under one lock for all
//! destinations of the span, it puts the span (cloned per extra destination) into each
//! destination's [`Backlog`] and, when a full batch waits, wakes that destination's worker. It
//! never waits for a backend and never fails loudly: what cannot be kept is counted.
//!
//! Memory is bounded per destination by a byte budget ([`ExportConfig::max_backlog_bytes`]);
//! when it is full the oldest spans make room for the new ones (the policy and why:
//! [`crate::backlog`]). Sending, retries and shutdown are the worker's ([`crate::worker`]).
//! Every span submitted is, at any time, delivered, dropped for a counted cause, or held
//! ([`crate::DestinationStats`]).
//!
//! Log records ([`ExportHub::submit_log`]) take the same path in parallel: each signal has its
//! own table of destinations, so a destination of logs has its own backlog (with the same
//! budget), worker and counters even when it is spelled like a destination of spans.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use hashbrown::HashMap;
use log::debug;
use tokio::{
    runtime::Handle,
    sync::{Notify, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    LogRecord, SpanRecord,
    backlog::Backlog,
    destination::Destination,
    otlp::Prepared,
    record::Exportable,
    stats::ExportStats,
    worker::{Worker, at_shutdown},
};

/// Time a worker that missed the shutdown's deadline gets before it is stopped; workers end by
/// the deadline themselves, this only bounds a bug.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// How the hub batches, holds, retries and shuts down.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// How often a worker sends what waits (default 1 s).
    pub flush_interval: Duration,
    /// A worker sends as soon as this many spans wait; also the most spans per request
    /// (default 2048).
    pub max_batch: usize,
    /// Memory budget of each destination: the most bytes of spans (estimated by
    /// [`crate::span_bytes`]) it holds while they wait, wait for a retry, or are being sent.
    /// When full, the oldest spans are dropped (default 64 MiB). A destination of log records
    /// has a budget of this size of its own (estimated by [`crate::log_bytes`]).
    pub max_backlog_bytes: u64,
    /// Time limit of one OTLP request, connection included (default 10 s).
    pub request_timeout: Duration,
    /// Wait before the first retry of a failed batch; doubled for each further one, with
    /// jitter (default 100 ms).
    pub initial_backoff: Duration,
    /// Longest wait between retries: while a backend is down, it is probed by one request per
    /// this period (default 5 s).
    pub max_backoff: Duration,
    /// Compress OTLP requests with gzip (default on).
    pub gzip: bool,
    /// Longest time [`ExportHub::shutdown`] takes: what is not delivered by then is counted
    /// and given up (default 5 s).
    pub shutdown_timeout: Duration,
    /// The session a database store records into (default `default`).
    pub store_session: String,
    /// Size limit of a database store; past it the oldest records are deleted (default 1 GiB).
    pub store_max_bytes: u64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            flush_interval: Duration::from_secs(1),
            max_batch: 2048,
            max_backlog_bytes: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            gzip: true,
            shutdown_timeout: Duration::from_secs(5),
            store_session: "default".to_owned(),
            store_max_bytes: crate::db::DEFAULT_STORE_MAX_BYTES,
        }
    }
}

impl ExportConfig {
    /// The wait before retry number `attempt` (0 for the first): doubling from
    /// `initial_backoff`, capped at `max_backoff`, then "equal jitter": a point of its upper
    /// half chosen by `jitter` (uniform over `u64`), so that many tracers whose backend went
    /// down together do not probe it in step, yet none comes sooner than half the backoff.
    pub(crate) fn backoff(&self, attempt: u32, jitter: u64) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let full = self.initial_backoff.saturating_mul(factor).min(self.max_backoff);
        let half = full / 2;
        half + half.mul_f64(jitter as f64 / u64::MAX as f64)
    }
}

/// A clonable handle to the export workers. Cheap to clone; all clones share the workers.
#[derive(Clone)]
pub struct ExportHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ExportHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportHub").field("config", &self.inner.shared.config).finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    runtime: Handle,
    /// The shutdown's deadline, for the workers. Dropped with the last handle, which ends them.
    closing: watch::Sender<Option<Instant>>,
}

/// What the hub and its workers share.
pub(crate) struct Shared {
    pub(crate) config: ExportConfig,
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    /// Set by shutdown: no new workers, every submit is a counted drop.
    closed: bool,
    pub(crate) spans: Table<SpanRecord>,
    pub(crate) logs: Table<LogRecord>,
}

/// How many destinations of a signal a submit compares before it looks its destination up.
const SCANNED_DESTINATIONS: usize = 4;

/// The most spans [`ExportHub::submit_all`] pushes under one lock, so that a worker on another
/// thread waits for it no longer than a few tens of µs.
const SUBMITTED_UNDER_ONE_LOCK: usize = 256;

/// The destinations of one signal.
pub(crate) struct Table<R> {
    index: HashMap<Destination, usize>,
    /// In order of first use; never removed, so that counters stay complete.
    entries: Vec<DestinationEntry<R>>,
}

impl<R> Default for Table<R> {
    fn default() -> Self {
        Table { index: HashMap::new(), entries: Vec::new() }
    }
}

struct DestinationEntry<R> {
    destination: Destination,
    backlog: Backlog<R, Prepared>,
    wake: Arc<Notify>,
    /// The console writes each record as it comes.
    immediate: bool,
    task: Option<JoinHandle<()>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the backlog of the destination of `R`'s signal at `index`, under the lock.
    pub(crate) fn backlog<R: Exportable, T>(
        &self,
        index: usize,
        f: impl FnOnce(&mut Backlog<R, Prepared>) -> T,
    ) -> Option<T> {
        R::table(&mut self.lock()).entries.get_mut(index).map(|entry| f(&mut entry.backlog))
    }
}

impl ExportHub {
    /// Starts a hub whose workers run on the current tokio runtime.
    ///
    /// # Panics
    /// When called outside a tokio runtime (use [`ExportHub::start_on`] from other threads).
    pub fn start(config: ExportConfig) -> Self {
        Self::start_on(config, Handle::current())
    }

    /// Starts a hub whose workers run on `runtime`; callable from any thread.
    pub fn start_on(mut config: ExportConfig, runtime: Handle) -> Self {
        // Zero would make a worker spin or never take a span.
        config.max_batch = config.max_batch.max(1);
        if config.flush_interval.is_zero() {
            config.flush_interval = Duration::from_millis(1);
        }
        let shared = Arc::new(Shared { config, state: Mutex::new(State::default()) });
        let (closing, _) = watch::channel(None);
        ExportHub { inner: Arc::new(Inner { shared, runtime, closing }) }
    }

    /// Puts `span` into each destination's backlog. Never blocks and never panics: what the
    /// memory budget cannot keep (or what comes after shutdown) is counted.
    pub fn submit(&self, span: SpanRecord, destinations: &[Destination]) {
        self.submit_record(span, destinations);
    }

    /// Puts `log` into the backlog of each destination of logs, as [`ExportHub::submit`] does
    /// for spans. The destinations of logs are apart from those of spans: a destination given
    /// here has its own backlog, worker and counters ([`ExportStats::logs`]).
    pub fn submit_log(&self, log: LogRecord, destinations: &[Destination]) {
        self.submit_record(log, destinations);
    }

    /// Puts each span of `spans` into the backlogs of its destinations, as [`ExportHub::submit`]
    /// does for one, under one lock for up to [`SUBMITTED_UNDER_ONE_LOCK`] spans: a release
    /// hands over its spans together, and a lock per span cost more than its push.
    pub fn submit_all<D: AsRef<[Destination]>>(&self, spans: impl IntoIterator<Item = (SpanRecord, D)>) {
        let mut spans = spans.into_iter().peekable();
        while spans.peek().is_some() {
            let mut state = self.inner.shared.lock();
            for (span, destinations) in spans.by_ref().take(SUBMITTED_UNDER_ONE_LOCK) {
                self.submit_locked(&mut state, span, destinations.as_ref());
            }
        }
    }

    fn submit_record<R: Exportable>(&self, record: R, destinations: &[Destination]) {
        if destinations.is_empty() {
            return;
        }
        let mut state = self.inner.shared.lock();
        self.submit_locked(&mut state, record, destinations);
    }

    fn submit_locked<R: Exportable>(&self, state: &mut State, record: R, destinations: &[Destination]) {
        let Some((last, others)) = destinations.split_last() else {
            return;
        };
        let bytes = record.bytes();
        for destination in others {
            self.push(state, destination, record.clone(), bytes);
        }
        self.push(state, last, record, bytes);
    }

    fn push<R: Exportable>(&self, state: &mut State, destination: &Destination, record: R, bytes: u64) {
        let closed = state.closed;
        let table = R::table(state);
        // A daemon has a destination or two: comparing with the first few beats hashing the
        // endpoint for every span.
        let first =
            table.entries.iter().take(SCANNED_DESTINATIONS).position(|e| e.destination == *destination);
        let index = match first.or_else(|| table.index.get(destination).copied()) {
            Some(index) => index,
            None => self.add_destination(closed, table, destination),
        };
        let Some(entry) = table.entries.get_mut(index) else {
            return;
        };
        if closed {
            entry.backlog.refuse_after_shutdown();
            return;
        }
        let waiting = entry.backlog.push(record, bytes);
        // Only the span that completes a batch wakes the worker; after each batch the worker
        // looks for more by itself.
        if entry.immediate || waiting == self.inner.shared.config.max_batch {
            entry.wake.notify_one();
        }
    }

    fn add_destination<R: Exportable>(
        &self,
        closed: bool,
        table: &mut Table<R>,
        destination: &Destination,
    ) -> usize {
        let index = table.entries.len();
        let wake = Arc::new(Notify::new());
        let task = (!closed).then(|| {
            let worker = Worker::<R>::new(
                self.inner.shared.clone(),
                index,
                destination.clone(),
                wake.clone(),
                self.inner.closing.subscribe(),
            );
            debug!("export of {} to {destination}: worker started", R::SIGNAL);
            self.inner.runtime.spawn(worker.run())
        });
        table.entries.push(DestinationEntry {
            destination: destination.clone(),
            backlog: Backlog::new(
                self.inner.shared.config.max_backlog_bytes,
                self.inner.shared.config.max_batch,
            ),
            wake,
            immediate: matches!(destination, Destination::Console { .. }),
            task,
        });
        table.index.insert(destination.clone(), index);
        index
    }

    /// Sends everything held, then stops the workers, within
    /// [`ExportConfig::shutdown_timeout`]. What could not be delivered by then (a backend that
    /// stays down) is counted as dropped at shutdown, and later submits as dropped after it.
    /// Returns the final statistics.
    pub async fn shutdown(&self) -> ExportStats {
        let deadline = Instant::now() + self.inner.shared.config.shutdown_timeout;
        let tasks: Vec<(String, JoinHandle<()>)> = {
            let mut state = self.inner.shared.lock();
            state.closed = true;
            let mut tasks = take_tasks(&mut state.spans);
            tasks.extend(take_tasks(&mut state.logs));
            tasks
        };
        self.inner.closing.send_replace(Some(deadline));
        for (export, mut task) in tasks {
            match tokio::time::timeout_at(deadline + SHUTDOWN_GRACE, &mut task).await {
                Ok(Ok(())) => debug!("{export}: stopped"),
                Ok(Err(join)) => debug!("{export}: worker ended abnormally: {join}"),
                Err(_) => {
                    task.abort();
                    let _ = task.await;
                    debug!("{export}: worker stopped at the deadline");
                }
            }
        }
        // What a stopped worker could not settle.
        let mut state = self.inner.shared.lock();
        for entry in &mut state.spans.entries {
            entry.backlog.drop_all(at_shutdown);
        }
        for entry in &mut state.logs.entries {
            entry.backlog.drop_all(at_shutdown);
        }
        drop(state);
        self.stats()
    }

    /// A snapshot of every destination's counters, spans and logs.
    pub fn stats(&self) -> ExportStats {
        let state = self.inner.shared.lock();
        ExportStats { destinations: table_stats(&state.spans), logs: table_stats(&state.logs) }
    }
}

/// The workers of a table, to be awaited at shutdown, each with what it exports.
fn take_tasks<R: Exportable>(table: &mut Table<R>) -> Vec<(String, JoinHandle<()>)> {
    table
        .entries
        .iter_mut()
        .filter_map(|entry| {
            let task = entry.task.take()?;
            Some((format!("export of {} to {}", R::SIGNAL, entry.destination), task))
        })
        .collect()
}

fn table_stats<R>(table: &Table<R>) -> Vec<(Destination, crate::DestinationStats)> {
    table.entries.iter().map(|e| (e.destination.clone(), e.backlog.stats())).collect()
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

    use std::{
        collections::VecDeque,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    use prost::Message as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::{
        DestinationStats, log_bytes, logs_path, read_log_store, read_store, span_bytes,
        testing::{
            TempDir, device_resource, many_logs, many_spans, reference_command_inout, reference_device_logs,
            reference_logged_span,
        },
        tree::{render_logs, render_trees, render_trees_with_logs},
    };

    fn fast_config() -> ExportConfig {
        ExportConfig {
            flush_interval: Duration::from_millis(50),
            request_timeout: Duration::from_secs(2),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            shutdown_timeout: Duration::from_secs(5),
            ..ExportConfig::default()
        }
    }

    fn spans(n: u64, first: u64) -> Vec<SpanRecord> {
        many_spans(&device_resource("Demo", "test/demo/1", "Demo/Demo", 1), n, first)
    }

    fn submit_all(hub: &ExportHub, spans: Vec<SpanRecord>, destination: &Destination) {
        for span in spans {
            hub.submit(span, std::slice::from_ref(destination));
        }
    }

    fn stats_of(hub: &ExportHub, destination: &Destination) -> DestinationStats {
        hub.stats().get(destination).cloned().unwrap()
    }

    async fn wait_stats(
        hub: &ExportHub,
        destination: &Destination,
        done: impl Fn(&DestinationStats) -> bool,
    ) -> DestinationStats {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let stats = hub.stats().get(destination).cloned().unwrap_or_default();
            if done(&stats) {
                return stats;
            }
            assert!(std::time::Instant::now() < deadline, "stats never got there: {stats:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// What the scripted backend answers to one request.
    #[derive(Clone, Copy)]
    enum Reply {
        Status(u16),
        /// 200 with an OTLP partial success rejecting this many spans.
        Rejecting(i64),
        /// Never answers.
        Hang,
    }

    /// A minimal OTLP/HTTP backend answering from a script (then 200), for the causes a real
    /// receiver is not asked to produce.
    struct Backend {
        endpoint: Destination,
        received: Arc<AtomicUsize>,
        script: Arc<Mutex<VecDeque<Reply>>>,
    }

    impl Backend {
        async fn start(script: impl IntoIterator<Item = Reply>) -> Backend {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = Destination::OtlpHttp {
                endpoint: format!("http://{}/v1/traces", listener.local_addr().unwrap()),
            };
            let received = Arc::new(AtomicUsize::new(0));
            let script = Arc::new(Mutex::new(script.into_iter().collect::<VecDeque<_>>()));
            let (r, sc) = (received.clone(), script.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, r.clone(), sc.clone()));
                }
            });
            Backend { endpoint, received, script }
        }

        fn received(&self) -> usize {
            self.received.load(Ordering::SeqCst)
        }

        /// The same backend, as an endpoint of logs.
        fn logs_endpoint(&self) -> Destination {
            let Destination::OtlpHttp { endpoint } = &self.endpoint else { panic!("an HTTP backend") };
            Destination::OtlpHttp { endpoint: endpoint.replace("/v1/traces", "/v1/logs") }
        }

        fn then(&self, reply: Reply) {
            self.script.lock().unwrap().push_back(reply);
        }
    }

    async fn serve(
        mut stream: tokio::net::TcpStream,
        received: Arc<AtomicUsize>,
        script: Arc<Mutex<VecDeque<Reply>>>,
    ) {
        let mut buf = Vec::new();
        loop {
            // Headers, then a body of Content-Length bytes.
            let end = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + length {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..end + length);
            received.fetch_add(1, Ordering::SeqCst);
            let reply = script.lock().unwrap().pop_front().unwrap_or(Reply::Status(200));
            let (status, body) = match reply {
                Reply::Hang => return std::future::pending().await,
                Reply::Status(200) => (200, ExportTraceServiceResponse::default().encode_to_vec()),
                Reply::Status(status) => (status, b"scripted".to_vec()),
                Reply::Rejecting(n) => {
                    let partial =
                        ExportTracePartialSuccess { rejected_spans: n, error_message: "too old".into() };
                    (200, ExportTraceServiceResponse { partial_success: Some(partial) }.encode_to_vec())
                }
            };
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(&body).await.is_err() {
                return;
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let config = ExportConfig::default();
        // Without jitter: the lower half; with the most: the full backoff.
        assert_eq!(config.backoff(0, 0), Duration::from_millis(50));
        assert_eq!(config.backoff(0, u64::MAX), Duration::from_millis(100));
        assert_eq!(config.backoff(3, u64::MAX), Duration::from_millis(800));
        assert_eq!(config.backoff(10, u64::MAX), Duration::from_secs(5));
        assert_eq!(config.backoff(u32::MAX, 0), Duration::from_millis(2500));
        let middle = config.backoff(10, u64::MAX / 2);
        assert!(middle > Duration::from_millis(3700) && middle < Duration::from_millis(3800), "{middle:?}");
    }

    fn logs(n: u64, first: u64) -> Vec<LogRecord> {
        many_logs(&device_resource("Demo", "test/demo/1", "Demo/Demo", 1), n, first)
    }

    fn submit_logs(hub: &ExportHub, logs: Vec<LogRecord>, destination: &Destination) {
        for log in logs {
            hub.submit_log(log, std::slice::from_ref(destination));
        }
    }

    fn log_seq(log: &crate::json::LogJson) -> i64 {
        log.attributes.get_i64("seq").unwrap()
    }

    async fn wait_log_stats(
        hub: &ExportHub,
        destination: &Destination,
        done: impl Fn(&DestinationStats) -> bool,
    ) -> DestinationStats {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let stats = hub.stats().get_logs(destination).cloned().unwrap_or_default();
            if done(&stats) {
                return stats;
            }
            assert!(std::time::Instant::now() < deadline, "stats never got there: {stats:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Spans and logs given one store destination: each in its own file, counted apart, and
    /// shown together (`tango-tracer show`).
    #[tokio::test]
    async fn logs_and_spans_of_one_store_are_kept_apart_and_shown_together() {
        let dir = TempDir::new("hub-logs-store");
        let path = dir.path().join("spans.jsonl");
        let store = Destination::Store { path: path.clone() };
        let hub = ExportHub::start(fast_config());
        hub.submit(reference_logged_span(), std::slice::from_ref(&store));
        submit_logs(&hub, reference_device_logs(), &store);
        let stats = hub.shutdown().await;

        let spans = read_store(&path).unwrap();
        let logs = read_log_store(logs_path(&path)).unwrap();
        assert_eq!((spans.len(), logs.len()), (1, 3));
        let s = stats.get(&store).unwrap();
        let l = stats.get_logs(&store).unwrap();
        assert_eq!((s.spans_submitted, s.spans_delivered, s.unaccounted()), (1, 1, 0));
        assert_eq!((l.spans_submitted, l.spans_delivered, l.dropped.total(), l.unaccounted()), (3, 3, 0, 0));
        assert_eq!(stats.logs_total().spans_delivered, 3);
        assert_eq!(stats.total().spans_delivered, 1);

        assert_eq!(
            render_trees_with_logs(&spans, &logs),
            "  - [SERVER] Tango::Device_4Impl::command_inout_4  trace=1c7ec437 span=45d2abba parent=- \
             svc=LogDev/test/logdev/1 server:15342 scope=tango.cpp {\"tango.client_ident.lang\": \"CPP\", \
             \"tango.client_ident.location\": \"giop:tcp:127.0.0.1:44850\", \"tango.client_ident.pid\": 15381, \
             \"tango.operation.argument\": \"Hello\"} dur=366.293us\n\
             \x20   > 08:03:46.536048Z INFO hello 0 [pydev2.py:20]\n\
             \x20   > 08:03:46.536117Z FATAL fatal hello 0 [pydev2.py:23]\n"
        );
        assert_eq!(
            render_logs(&logs).lines().next().unwrap(),
            "2026-11-21T08:03:42.411517Z WARN svc=LogDev/test/logdev/1 trace=- span=- \
             background thread log tid=15370 [pydev2.py:15]"
        );
    }

    #[tokio::test]
    async fn a_full_budget_keeps_the_newest_logs_and_spans_keep_theirs() {
        let dir = TempDir::new("hub-logs-budget");
        let path = dir.path().join("spans.jsonl");
        let store = Destination::Store { path: path.clone() };
        let one = log_bytes(&logs(1, 1)[0]);
        let hub = ExportHub::start(ExportConfig {
            flush_interval: Duration::from_secs(60),
            max_batch: 100_000,
            max_backlog_bytes: 10 * one,
            ..fast_config()
        });
        submit_logs(&hub, logs(25, 1), &store);
        // The spans' budget is their own: a full logs backlog takes nothing from it.
        submit_all(&hub, spans(2, 1), &store);
        let stats = hub.stats();
        let l = stats.get_logs(&store).unwrap();
        assert_eq!((l.dropped.budget_oldest, l.spans_held, l.bytes_held), (15, 10, 10 * one), "{l:?}");
        assert!(l.peak_bytes_held <= 10 * one);
        let s = stats.get(&store).unwrap();
        assert_eq!((s.spans_held, s.dropped.total()), (2, 0));

        let stats = hub.shutdown().await;
        let l = stats.get_logs(&store).unwrap();
        assert_eq!(
            (l.spans_delivered, l.dropped.budget_oldest, l.spans_held, l.unaccounted()),
            (10, 15, 0, 0)
        );
        let mut seqs: Vec<i64> = read_log_store(logs_path(&path)).unwrap().iter().map(log_seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (16..=25).collect::<Vec<_>>(), "the newest ten");
        assert_eq!(read_store(&path).unwrap().len(), 2);
        // After shutdown, counted as for spans.
        submit_logs(&hub, logs(2, 30), &store);
        let l = hub.stats().get_logs(&store).cloned().unwrap();
        assert_eq!((l.spans_submitted, l.dropped.after_shutdown, l.unaccounted()), (27, 2, 0));
    }

    /// Logs are retried with backoff like spans, to their own endpoint, and counted apart.
    #[tokio::test]
    async fn logs_are_retried_until_delivered() {
        let backend = Backend::start([Reply::Status(503); 3]).await;
        let destination = backend.logs_endpoint();
        let hub = ExportHub::start(ExportConfig { max_batch: 10, ..fast_config() });
        submit_logs(&hub, logs(25, 1), &destination);
        let l = wait_log_stats(&hub, &destination, |s| s.spans_delivered == 25).await;
        assert_eq!((l.requests_failed, l.dropped.total(), l.spans_held, l.failing), (3, 0, 0, false));
        assert_eq!(backend.received(), 3 + 3, "three refusals, then three batches");
        assert!(hub.stats().get(&destination).is_none(), "no destination of spans was made");
        hub.shutdown().await;
    }

    #[tokio::test]
    async fn store_round_trip_through_the_hub() {
        let dir = TempDir::new("hub-store");
        let path = dir.path().join("a/b/spans.jsonl");
        let store = Destination::Store { path: path.clone() };
        let hub = ExportHub::start(fast_config());
        submit_all(&hub, reference_command_inout(), &store);
        hub.submit(crate::testing::reference_command_inout_error(), std::slice::from_ref(&store));
        let stats = hub.shutdown().await;

        let spans = read_store(&path).unwrap();
        assert_eq!(spans.len(), 3);
        let tree = render_trees(&spans);
        let lines: Vec<&str> = tree.lines().collect();
        assert_eq!(
            lines[0],
            "  - [CLIENT] Tango::Connection::command_inout  trace=b2a1fcf8 span=5d5c1211 parent=- \
             svc=tango.telemetry.default client:17915 scope=tango.cpp \
             {\"tango.operation.argument\": \"Increment\", \"tango.operation.target\": \"test/demo/1\", \
             \"thread.id\": \"139831653333888\"} dur=503.861us"
        );
        assert_eq!(
            lines[1],
            "    - [SERVER] Tango::Device_4Impl::command_inout_4  trace=b2a1fcf8 span=9621b4e8 \
             parent=5d5c1211 svc=Demo/test/demo/1 server:17811 scope=tango.cpp \
             {\"tango.client_ident.lang\": \"CPP\", \"tango.client_ident.location\": \
             \"giop:tcp:127.0.0.1:58618\", \"tango.client_ident.pid\": 17915, \
             \"tango.operation.argument\": \"Increment\"} dur=238.205us"
        );
        assert!(lines[2].ends_with("status=ERROR(\"exception caught (see associated event)\")"), "{tree}");
        let s = stats.get(&store).unwrap();
        assert_eq!((s.spans_submitted, s.spans_delivered, s.dropped.total(), s.spans_held), (3, 3, 0, 0));
        assert_eq!((s.last_error.as_deref(), s.failing), (None, false));
    }

    #[tokio::test]
    async fn a_full_budget_keeps_the_newest_spans() {
        let dir = TempDir::new("hub-budget");
        let store = Destination::Store { path: dir.path().join("spans.jsonl") };
        let one = span_bytes(&spans(1, 1)[0]);
        // A long interval and a big batch: nothing leaves while we submit.
        let hub = ExportHub::start(ExportConfig {
            flush_interval: Duration::from_secs(60),
            max_batch: 100_000,
            max_backlog_bytes: 10 * one,
            ..fast_config()
        });
        let started = std::time::Instant::now();
        submit_all(&hub, spans(25, 1), &store);
        assert!(started.elapsed() < Duration::from_secs(1), "submit never waits");
        let s = stats_of(&hub, &store);
        assert_eq!((s.dropped.budget_oldest, s.spans_held, s.bytes_held), (15, 10, 10 * one));
        assert!(s.peak_bytes_held <= 10 * one);

        let s = hub.shutdown().await.get(&store).cloned().unwrap();
        assert_eq!(
            (s.spans_delivered, s.dropped.budget_oldest, s.spans_held, s.unaccounted()),
            (10, 15, 0, 0)
        );
        let mut seqs: Vec<i64> = read_store(dir.path().join("spans.jsonl"))
            .unwrap()
            .iter()
            .filter_map(|s| s.attributes.get_i64("seq"))
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (16..=25).collect::<Vec<_>>(), "the newest ten");
    }

    #[tokio::test]
    async fn after_shutdown_submits_are_counted() {
        let dir = TempDir::new("hub-after");
        let store = Destination::Store { path: dir.path().join("spans.jsonl") };
        let hub = ExportHub::start(fast_config());
        submit_all(&hub, spans(3, 1), &store);
        hub.shutdown().await;
        // Known and new destinations alike.
        submit_all(&hub, spans(2, 10), &store);
        let console = Destination::Console { stream: crate::ConsoleStream::Stderr };
        submit_all(&hub, spans(1, 20), &console);
        let stats = hub.stats();
        let s = stats.get(&store).unwrap();
        assert_eq!(
            (s.spans_submitted, s.spans_delivered, s.dropped.after_shutdown, s.unaccounted()),
            (5, 3, 2, 0)
        );
        assert_eq!(stats.get(&console).unwrap().dropped.after_shutdown, 1);
        assert_eq!(read_store(dir.path().join("spans.jsonl")).unwrap().len(), 3);
    }

    #[tokio::test]
    async fn shutdown_flushes_everything_in_many_batches() {
        let dir = TempDir::new("hub-flush");
        let path = dir.path().join("spans.jsonl");
        let store = Destination::Store { path: path.clone() };
        let hub = ExportHub::start(ExportConfig {
            flush_interval: Duration::from_secs(60),
            max_batch: 64,
            ..fast_config()
        });
        let a = device_resource("Demo", "test/demo/1", "Demo/Demo", 1);
        let b = device_resource("Demo", "test/demo/2", "Demo/Demo", 2);
        for (x, y) in many_spans(&a, 500, 1).into_iter().zip(many_spans(&b, 500, 1001)) {
            hub.submit(x, std::slice::from_ref(&store));
            hub.submit(y, std::slice::from_ref(&store));
        }
        let s = hub.shutdown().await.total();
        let spans = read_store(&path).unwrap();
        assert_eq!(spans.len(), 1000);
        let mut seqs: Vec<i64> = spans.iter().filter_map(|s| s.attributes.get_i64("seq")).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 1000);
        assert_eq!((s.spans_delivered, s.dropped.total(), s.spans_held), (1000, 0, 0));
    }

    /// Spans submitted together, more than go under one lock, each to its own destinations:
    /// every destination gets exactly its spans, in order.
    #[tokio::test]
    async fn spans_submitted_together_reach_each_their_destinations_in_order() {
        let dir = TempDir::new("hub-submit-all");
        let (first, second) = (dir.path().join("first.jsonl"), dir.path().join("second.jsonl"));
        let first_store = Destination::Store { path: first.clone() };
        let second_store = Destination::Store { path: second.clone() };
        let both: Arc<[Destination]> = Arc::from(vec![first_store.clone(), second_store.clone()]);
        let only_second: Arc<[Destination]> = Arc::from(vec![second_store.clone()]);
        let nowhere: Arc<[Destination]> = Arc::from(Vec::new());
        let hub = ExportHub::start(ExportConfig { max_batch: 64, ..fast_config() });
        let resource = device_resource("Demo", "test/demo/1", "Demo/Demo", 1);
        let n = 3 * SUBMITTED_UNDER_ONE_LOCK as u64 + 7;
        hub.submit_all(many_spans(&resource, n, 1).into_iter().zip(0u64..).map(|(span, i)| {
            let destinations = match i % 3 {
                0 => both.clone(),
                1 => only_second.clone(),
                _ => nowhere.clone(),
            };
            (span, destinations)
        }));
        let stats = hub.shutdown().await;
        let seqs = |path| -> Vec<i64> {
            read_store(path).unwrap().iter().filter_map(|s| s.attributes.get_i64("seq")).collect()
        };
        let expected = |keep: fn(u64) -> bool| -> Vec<i64> {
            (0..n).filter(|&i| keep(i)).map(|i| i as i64 + 1).collect()
        };
        assert_eq!(seqs(&first), expected(|i| i % 3 == 0));
        assert_eq!(seqs(&second), expected(|i| i % 3 != 2));
        let first_stats = stats.get(&first_store).unwrap();
        assert_eq!(
            (first_stats.spans_submitted, first_stats.spans_delivered),
            (n.div_ceil(3), n.div_ceil(3))
        );
    }

    #[tokio::test]
    async fn an_unwritable_store_counts_and_never_claims_to_work_again() {
        let dir = TempDir::new("hub-unwritable");
        // A directory where the file should be: every write fails.
        let path = dir.path().join("spans.jsonl");
        std::fs::create_dir_all(&path).unwrap();
        let store = Destination::Store { path: path.clone() };
        let hub = ExportHub::start(fast_config());
        submit_all(&hub, reference_command_inout(), &store);
        let s = wait_stats(&hub, &store, |s| s.dropped.write_failed == 2).await;
        assert!(s.failing);
        // Ticks with nothing to write are no proof of recovery.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = stats_of(&hub, &store);
        assert!(s.failing, "{s:?}");
        assert!(s.last_error.unwrap().contains("cannot open span store"));
        let s = hub.shutdown().await.get(&store).cloned().unwrap();
        assert_eq!((s.spans_delivered, s.dropped.write_failed, s.unaccounted()), (0, 2, 0));
    }

    #[tokio::test]
    async fn an_unusable_endpoint_is_a_non_retryable_error() {
        let destination = Destination::OtlpGrpc { endpoint: "not a uri at all".into() };
        let hub = ExportHub::start(fast_config());
        submit_all(&hub, reference_command_inout(), &destination);
        let s = hub.shutdown().await.get(&destination).cloned().unwrap();
        assert_eq!((s.spans_delivered, s.dropped.non_retryable, s.spans_held, s.unaccounted()), (0, 2, 0, 0));
        assert!(s.last_error.unwrap().contains("not a uri at all"));
    }

    /// Retryable failures keep the batch at the head, however many attempts it takes, while new
    /// spans keep coming in; then everything is delivered.
    #[tokio::test]
    async fn retries_never_give_up_and_never_stall_new_spans() {
        let backend = Backend::start([Reply::Status(503); 8]).await;
        let destination = backend.endpoint.clone();
        let hub = ExportHub::start(ExportConfig { max_batch: 10, ..fast_config() });
        submit_all(&hub, spans(10, 1), &destination);
        wait_stats(&hub, &destination, |s| s.requests_failed >= 3).await;
        // Accepted while the first batch is retried.
        let started = std::time::Instant::now();
        submit_all(&hub, spans(35, 11), &destination);
        assert!(started.elapsed() < Duration::from_secs(1));
        let s = wait_stats(&hub, &destination, |s| s.spans_delivered == 45).await;
        assert_eq!((s.requests_failed, s.dropped.total(), s.spans_held, s.failing), (8, 0, 0, false));
        // 8 refusals, then the retried batch and the 35 others in four batches.
        assert_eq!(backend.received(), 8 + 5);
        hub.shutdown().await;
    }

    #[tokio::test]
    async fn non_retryable_statuses_drop_the_batch_only() {
        let backend = Backend::start([Reply::Status(400)]).await;
        let destination = backend.endpoint.clone();
        let hub = ExportHub::start(fast_config());
        submit_all(&hub, spans(3, 1), &destination);
        let s = wait_stats(&hub, &destination, |s| s.dropped.non_retryable == 3).await;
        assert!(s.last_error.unwrap().contains("400"));
        assert_eq!(backend.received(), 1, "not retried");
        submit_all(&hub, spans(2, 4), &destination);
        let s = wait_stats(&hub, &destination, |s| s.spans_delivered == 2).await;
        assert!(!s.failing);
        let s = hub.shutdown().await.get(&destination).cloned().unwrap();
        assert_eq!((s.requests_sent, s.requests_failed, s.unaccounted()), (2, 1, 0));
    }

    #[tokio::test]
    async fn spans_rejected_by_the_backend_are_counted() {
        let backend = Backend::start([Reply::Rejecting(2)]).await;
        let destination = backend.endpoint.clone();
        let hub = ExportHub::start(fast_config());
        submit_all(&hub, spans(5, 1), &destination);
        let s = wait_stats(&hub, &destination, |s| s.spans_held == 0).await;
        assert_eq!((s.spans_delivered, s.dropped.rejected, s.requests_failed), (3, 2, 0));
        hub.shutdown().await;
    }

    /// The batch whose request is out is never dropped; when it fills the budget, new spans are.
    #[tokio::test]
    async fn the_batch_out_fills_the_budget_and_new_spans_are_dropped() {
        let backend = Backend::start([Reply::Hang]).await;
        let destination = backend.endpoint.clone();
        let one = span_bytes(&spans(1, 1)[0]);
        let hub = ExportHub::start(ExportConfig {
            max_batch: 10,
            max_backlog_bytes: 10 * one,
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_millis(300),
            ..fast_config()
        });
        submit_all(&hub, spans(10, 1), &destination);
        while backend.received() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        submit_all(&hub, spans(5, 11), &destination);
        let s = stats_of(&hub, &destination);
        assert_eq!((s.spans_held, s.dropped.budget_newest, s.dropped.budget_oldest), (10, 5, 0), "{s:?}");
        assert!(s.peak_bytes_held <= 10 * one);
        let started = std::time::Instant::now();
        let s = hub.shutdown().await.get(&destination).cloned().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        // The hanging request was cut off at the deadline.
        assert_eq!((s.dropped.at_shutdown, s.spans_held, s.unaccounted()), (10, 0, 0), "{s:?}");
    }

    /// Shutdown with the backend down ends at its deadline and counts what it held.
    #[tokio::test]
    async fn shutdown_with_the_backend_down_is_bounded_and_counted() {
        let backend = Backend::start([Reply::Status(503); 1000]).await;
        let destination = backend.endpoint.clone();
        let hub = ExportHub::start(ExportConfig {
            shutdown_timeout: Duration::from_millis(400),
            max_backoff: Duration::from_secs(30),
            ..fast_config()
        });
        submit_all(&hub, spans(7, 1), &destination);
        wait_stats(&hub, &destination, |s| s.requests_failed >= 1).await;
        let started = std::time::Instant::now();
        let s = hub.shutdown().await.get(&destination).cloned().unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(2), "{took:?}");
        assert_eq!((s.spans_delivered, s.dropped.at_shutdown, s.unaccounted()), (0, 7, 0), "{s:?}");
        // Shutdown tries once more at once, whatever the backoff says.
        assert!(s.requests_failed >= 2, "{s:?}");
    }

    /// A backend that comes back while shutdown waits gets everything.
    #[tokio::test]
    async fn shutdown_with_the_backend_up_delivers_everything() {
        let backend = Backend::start([Reply::Status(503); 2]).await;
        let destination = backend.endpoint.clone();
        let hub = ExportHub::start(ExportConfig {
            flush_interval: Duration::from_secs(60),
            max_batch: 50,
            ..fast_config()
        });
        submit_all(&hub, spans(120, 1), &destination);
        let s = hub.shutdown().await.get(&destination).cloned().unwrap();
        assert_eq!((s.spans_delivered, s.dropped.total(), s.spans_held), (120, 0, 0), "{s:?}");
        backend.then(Reply::Status(200));
    }

    #[test]
    fn runs_on_a_runtime_from_a_plain_thread() {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = TempDir::new("hub-plain");
        let store = Destination::Store { path: dir.path().join("s.jsonl") };
        let hub = ExportHub::start_on(fast_config(), runtime.handle().clone());
        for span in reference_command_inout() {
            hub.submit(span, &[store.clone(), store.clone()]);
        }
        runtime.block_on(hub.shutdown());
        assert_eq!(read_store(dir.path().join("s.jsonl")).unwrap().len(), 4);
    }
}
